"""
Many reloc streams in one process, on one selector loop.

    python bench/streams.py --mode download --port P --name N --streams 1000
        --size BYTES --sha256 HEX
    python bench/streams.py --mode stall --port P --name N --streams 1000

C{download} opens every stream at once, reads each answer to its end, checks
its length and SHA-256 and reports the total time and the errors.

C{stall} opens the streams (at most C{--in-flight} connecting at a time),
prints C{ready} once each has its first payload, and from then on measures,
for every stream, the longest time it waited for bytes while it was ready to
read them: the gap a client sees.  When a line C{stop} arrives on standard
input it reads on until every stream still open has received at least one
more byte (at most C{--drain-seconds}), so that a stall in progress at that
moment is measured whole.  With C{--rate} each stream
reads at most that many bytes per second, and time spent held back by that
limit is not a gap.

Either mode prints one JSON line at the end.  Every loop is bounded by
C{--max-seconds}.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import selectors
import socket
import sys
import time
from collections import Counter

from framing import FrameCounter, FramingError

#: One receive buffer shared by every stream.
BUFFER = 256 * 1024

#: Bytes a throttled stream may read ahead of its rate.
BURST = 64 * 1024


class Stream:
    """
    One connection and what was measured on it.
    """

    def __init__(self, index: int, digest: bool) -> None:
        self.index = index
        self.socket: socket.socket | None = None
        self.counter = FrameCounter(hashlib.sha256() if digest else None)
        self.startedAt = 0.0
        self.firstAt: float | None = None
        self.doneAt: float | None = None
        self.error: str | None = None
        self.waitSince: float | None = None
        self.maxGap = 0.0
        self.registered = False

    @property
    def closed(self) -> bool:
        return self.doneAt is not None or self.error is not None


class Load:
    """
    The selector loop and every stream on it.
    """

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.selector = selectors.DefaultSelector()
        self.buffer = bytearray(BUFFER)
        self.request = b"GET %s 0\n" % (arguments.name.encode(),)
        digest = arguments.mode == "download"
        self.streams = [Stream(i, digest) for i in range(arguments.streams)]
        self.unopened = list(reversed(self.streams))
        self.wakes: list[tuple[float, int]] = []
        self.measureFrom: float | None = None
        self.payloadBefore = 0
        #: Set on C{stop}: streams that still owe one read before the end.
        self.draining: set[int] | None = None
        self.drainFrom = 0.0
        #: Streams opened that have neither a first byte nor an end yet.
        self.awaitingFirst = 0
        #: Streams that have not ended (unopened ones included).
        self.live = len(self.streams)

    # Opening.

    def openMore(self, now: float) -> None:
        limit = self.arguments.in_flight or len(self.streams)
        while self.unopened and self.awaitingFirst < limit:
            self.connect(self.unopened.pop(), now)

    def connect(self, stream: Stream, now: float) -> None:
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        stream.socket = connection
        stream.startedAt = now
        self.awaitingFirst += 1
        error = connection.connect_ex((self.arguments.host, self.arguments.port))
        if error not in (0, 115):  # EINPROGRESS
            self.fail(stream, f"connect: {os.strerror(error)}")
            return
        self.selector.register(connection, selectors.EVENT_WRITE, stream)
        stream.registered = True

    def connected(self, stream: Stream) -> None:
        assert stream.socket is not None
        error = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.fail(stream, f"connect: {os.strerror(error)}")
            return
        try:
            stream.socket.send(self.request)
        except OSError as e:
            self.fail(stream, f"send: {e.strerror}")
            return
        self.selector.modify(stream.socket, selectors.EVENT_READ, stream)
        stream.waitSince = time.monotonic()

    # Reading.

    def allowance(self, stream: Stream, now: float) -> int:
        """
        @return: bytes the stream may read now (the whole buffer when the
            rate is not limited).
        """
        rate = self.arguments.rate
        if not rate or stream.firstAt is None:
            return BUFFER
        allowed = BURST + rate * (now - stream.firstAt) - stream.counter.payload
        return max(0, min(BUFFER, int(allowed)))

    def readable(self, stream: Stream, now: float) -> None:
        assert stream.socket is not None
        want = self.allowance(stream, now)
        try:
            count = stream.socket.recv_into(self.buffer, want)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(stream, f"recv: {e.strerror}")
            return
        if not count:
            self.fail(stream, "closed before EOF")
            return
        self.noteGap(stream, now)
        if self.draining is not None:
            self.draining.discard(stream.index)
        if stream.firstAt is None:
            stream.firstAt = now
            self.awaitingFirst -= 1
        try:
            stream.counter.feed(self.buffer, count)
        except FramingError as e:
            self.fail(stream, f"framing: {e}")
            return
        if stream.counter.finished:
            self.finished(stream, now)
            return
        if self.allowance(stream, now) > 0:
            stream.waitSince = time.monotonic()
        else:
            self.holdBack(stream, now)

    def noteGap(self, stream: Stream, now: float) -> None:
        if stream.waitSince is None or self.measureFrom is None:
            return
        gap = now - max(stream.waitSince, self.measureFrom)
        if gap > stream.maxGap:
            stream.maxGap = gap
        stream.waitSince = None

    def holdBack(self, stream: Stream, now: float) -> None:
        """
        Stop reading a stream that is ahead of its rate until it is not.
        """
        assert stream.socket is not None and stream.firstAt is not None
        self.selector.unregister(stream.socket)
        stream.registered = False
        stream.waitSince = None
        due = (stream.counter.payload - BURST + BUFFER // 4) / self.arguments.rate
        heapq.heappush(self.wakes, (stream.firstAt + due, stream.index))

    def wakeDue(self, now: float) -> None:
        while self.wakes and self.wakes[0][0] <= now:
            _, index = heapq.heappop(self.wakes)
            stream = self.streams[index]
            if stream.closed or stream.socket is None:
                continue
            self.selector.register(stream.socket, selectors.EVENT_READ, stream)
            stream.registered = True
            stream.waitSince = now

    # Ending.

    def finished(self, stream: Stream, now: float) -> None:
        counter = stream.counter
        if counter.refusal is not None:
            self.fail(stream, f"ERR {counter.refusal}")
            return
        if self.arguments.size is not None and counter.payload != self.arguments.size:
            self.fail(stream, "wrong length")
            return
        if counter.digest is not None and self.arguments.sha256:
            if counter.digest.hexdigest() != self.arguments.sha256:
                self.fail(stream, "wrong sha256")
                return
        stream.doneAt = now
        self.ended(stream)

    def fail(self, stream: Stream, why: str) -> None:
        if not stream.closed:
            stream.error = why
            self.ended(stream)

    def ended(self, stream: Stream) -> None:
        self.live -= 1
        if self.draining is not None:
            self.draining.discard(stream.index)
        if stream.firstAt is None and stream.socket is not None:
            self.awaitingFirst -= 1
        self.close(stream)

    def close(self, stream: Stream) -> None:
        if stream.socket is None:
            return
        if stream.registered:
            self.selector.unregister(stream.socket)
            stream.registered = False
        stream.socket.close()

    # The loop.

    def run(self) -> dict[str, object]:
        arguments = self.arguments
        start = time.monotonic()
        deadline = start + arguments.max_seconds
        readyBy = start + arguments.setup_timeout
        if arguments.mode == "stall":
            os.set_blocking(sys.stdin.fileno(), False)
            self.selector.register(sys.stdin, selectors.EVENT_READ, None)
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            self.openMore(now)
            timeout = 0.05
            if self.wakes:
                timeout = max(0.0, min(timeout, self.wakes[0][0] - now))
            for key, events in self.selector.select(timeout):
                now = time.monotonic()
                stream = key.data
                if stream is None:
                    self.control()
                elif stream.firstAt is None and events & selectors.EVENT_WRITE:
                    self.connected(stream)
                elif not stream.closed:
                    self.readable(stream, now)
            now = time.monotonic()
            self.wakeDue(now)
            if self.draining is not None:
                late = now - self.drainFrom >= arguments.drain_seconds
                if not self.draining or late:
                    break
            if arguments.mode == "download":
                if not self.live:
                    break
            elif self.measureFrom is None:
                settled = not self.unopened and not self.awaitingFirst
                if settled or now >= readyBy:
                    self.measureFrom = now
                    self.payloadBefore = sum(s.counter.payload for s in self.streams)
                    print("ready", flush=True)
        return self.report(start, time.monotonic())

    def control(self) -> None:
        try:
            text = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        if not text or b"stop" in text:
            self.selector.unregister(sys.stdin)
            self.drainFrom = time.monotonic()
            self.draining = {s.index for s in self.streams if not s.closed}

    def report(self, start: float, end: float) -> dict[str, object]:
        for stream in self.streams:
            if not stream.closed:
                if self.arguments.mode == "download":
                    self.fail(stream, "timed out")
                else:
                    if stream.waitSince is not None and self.measureFrom is not None:
                        self.noteGap(stream, end)
                    self.close(stream)
        errors = Counter(s.error for s in self.streams if s.error is not None)
        payload = sum(s.counter.payload for s in self.streams)
        firsts = [s.firstAt - s.startedAt for s in self.streams if s.firstAt]
        dones = [s.doneAt - start for s in self.streams if s.doneAt is not None]
        result: dict[str, object] = {
            "mode": self.arguments.mode,
            "streams": len(self.streams),
            "ok": sum(1 for s in self.streams if s.error is None),
            "errors": dict(errors),
            "seconds": end - start,
            "payload": payload,
            "firstByte": summary(firsts),
            "done": summary(dones),
            "cpu": time.process_time(),
        }
        if self.arguments.mode == "stall":
            measured = [s for s in self.streams if s.firstAt is not None]
            result["measureSeconds"] = end - (self.measureFrom or end)
            result["measuredPayload"] = payload - self.payloadBefore
            result["drainSeconds"] = end - self.drainFrom if self.drainFrom else None
            result["notResumed"] = len(self.draining or ())
            result["gap"] = summary([s.maxGap for s in measured])
            result["finishedEarly"] = sum(1 for s in measured if s.doneAt is not None)
        return result


def percentile(values: list[float], share: float) -> float:
    """
    @return: the nearest-rank percentile C{share} (0 to 100) of C{values}.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
        "count": len(values),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["download", "stall"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--sha256", default=None)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--in-flight", type=int, default=0)
    parser.add_argument("--setup-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    result = Load(parser.parse_args(argv)).run()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
