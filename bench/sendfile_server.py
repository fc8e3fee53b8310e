"""
A reference server for the loopback ceiling: it answers C{GET <name> 0} with
one C{DATA} frame sent by C{os.sendfile}, one connection at a time.  It is
not a file server for anything but the benchmark: no checks, no limits.

    python bench/sendfile_server.py --base FOLDER --portfile FILE
"""

from __future__ import annotations

import argparse
import os
import socket
import sys


def serve(connection: socket.socket, base: str) -> None:
    request = b""
    while not request.endswith(b"\n") and len(request) < 4096:
        piece = connection.recv(4096)
        if not piece:
            return
        request += piece
    _, name, _ = request.decode().split()
    fd = os.open(os.path.join(base, os.path.basename(name)), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        connection.sendall(b"DATA %d\n" % size)
        offset = 0
        while offset < size:
            sent = os.sendfile(connection.fileno(), fd, offset, size - offset)
            if not sent:
                return
            offset += sent
        connection.sendall(b"EOF\n")
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--portfile", required=True)
    arguments = parser.parse_args(argv)
    listener = socket.create_server(("127.0.0.1", 0))
    temporary = arguments.portfile + ".tmp"
    with open(temporary, "w") as f:
        f.write(f"{listener.getsockname()[1]}\n")
    os.replace(temporary, arguments.portfile)
    while True:
        connection, _ = listener.accept()
        with connection:
            try:
                serve(connection, arguments.base)
            except (OSError, ValueError) as e:
                print(f"sendfile_server: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
