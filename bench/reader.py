"""
The plain reader: one connection, one C{GET}, frames decoded and counted,
nothing written anywhere.  It prints one JSON line with what it measured.

    python bench/reader.py --port PORT --name NAME [--rate BYTES_PER_S]
        [--max-seconds S]

With C{--identify} it asks with C{GETID} (the answer starts with the file's
size and SHA-256).  With C{--rate} it reads small pieces and sleeps to stay
at that rate (the slow reader of the memory test); with C{--max-seconds} it
hangs up after that long.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from framing import FrameCounter, FramingError

#: Read size of the unthrottled reader: large, so the reader is not the limit.
BUFFER = 1024 * 1024

#: Read size of a throttled reader, so that it sleeps in small steps.
SLOW_PIECE = 16 * 1024


def read(arguments: argparse.Namespace) -> dict[str, object]:
    """
    Download one answer and measure it.

    @return: what the JSON line reports.
    """
    deadline = time.monotonic() + arguments.timeout
    connection = socket.create_connection(
        (arguments.host, arguments.port), timeout=arguments.timeout
    )
    buffer = bytearray(BUFFER)
    counter = FrameCounter()
    piece = SLOW_PIECE if arguments.rate else BUFFER
    wire = 0
    error = None
    cpuStart = time.process_time()
    start = time.perf_counter()
    firstByte = None
    try:
        verb = b"GETID" if arguments.identify else b"GET"
        name = arguments.name.encode()
        connection.sendall(b"%s %s %d\n" % (verb, name, arguments.offset))
        while not counter.finished:
            count = connection.recv_into(buffer, piece)
            if not count:
                error = "closed before EOF"
                break
            if firstByte is None:
                firstByte = time.perf_counter() - start
            wire += count
            counter.feed(buffer, count)
            elapsed = time.perf_counter() - start
            if arguments.max_seconds and elapsed >= arguments.max_seconds:
                break
            if time.monotonic() > deadline:
                error = "timed out"
                break
            if arguments.rate:
                ahead = counter.payload / arguments.rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
    except (OSError, FramingError) as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        connection.close()
    seconds = time.perf_counter() - start
    if counter.refusal is not None:
        error = f"ERR {counter.refusal}"
    return {
        "bytes": counter.payload,
        "wire": wire,
        "seconds": seconds,
        "firstByte": firstByte,
        "cpu": time.process_time() - cpuStart,
        "eof": counter.finished and counter.refusal is None,
        "error": error,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--identify", action="store_true", help="send GETID")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    result = read(parser.parse_args(argv))
    print(json.dumps(result), flush=True)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
