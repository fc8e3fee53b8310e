"""
Download one file through a reloc proxy.

    python -m reloc.client --proxy HOST:PORT --name NAME --out PATH

The bytes go to C{PATH.part}, which is renamed to C{PATH} once the end mark
arrived; the exit status is 0 only then.  Any failure prints one line on
standard error and exits non-zero, leaving the partial file in place.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from reloc.protocol import (
    End,
    FrameDecoder,
    Payload,
    ProtocolError,
    Refusal,
    Request,
)
from reloc.routes import parseAddress

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class DownloadError(Exception):
    """
    The download did not complete; the message says why, in one line.
    """


def parseRate(text: str) -> float:
    """
    Parse a rate like curl's C{--limit-rate}: bytes per second, with an
    optional C{K}, C{M} or C{G} suffix (powers of 1024).

    @raise ValueError: if C{text} is not such a rate.
    """
    number, unit = text, ""
    if text and text[-1].upper() in "KMG":
        number, unit = text[:-1], text[-1].upper()
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a rate") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a positive rate")
    return value


class RateLimiter:
    """
    Keep a reader at or under a byte rate by pausing its transport.
    """

    def __init__(self, rate: float, clock: IReactorTime):
        self._rate = rate
        self._clock = clock
        self._start: float | None = None
        self._count = 0
        self._call: IDelayedCall | None = None

    def received(self, count: int, transport: object) -> None:
        """
        Account for C{count} bytes; pause C{transport} if they came too soon.
        """
        now = self._clock.seconds()
        if self._start is None:
            self._start = now
        self._count += count
        wait = self._start + self._count / self._rate - now
        if wait > 0 and self._call is None:
            transport.pauseProducing()  # type: ignore[attr-defined]
            self._call = self._clock.callLater(wait, self._resume, transport)

    def _resume(self, transport: object) -> None:
        self._call = None
        transport.resumeProducing()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


class DownloadProtocol(Protocol):
    """
    Send one request and write the payload of the answer to C{sink}.

    @ivar done: fires with the payload byte count after the end mark, or
        fails with L{DownloadError}.
    """

    def __init__(
        self,
        request: Request,
        sink: BinaryIO,
        clock: IReactorTime,
        rate: float | None = None,
        idleTimeout: float = 120.0,
        progress: Callable[[int], object] = lambda count: None,
    ):
        self.request = request
        self.done: Deferred[int] = Deferred()
        self._sink = sink
        self._clock = clock
        self._decoder = FrameDecoder()
        self._limiter = RateLimiter(rate, clock) if rate else None
        self._idleTimeout = idleTimeout
        self._idle: IDelayedCall | None = None
        self._progress = progress
        self._result: Failure | int | None = None

    @property
    def received(self) -> int:
        return self._decoder.offset

    def connectionMade(self) -> None:
        self.transport.write(self.request.toLine())
        self._idle = self._clock.callLater(self._idleTimeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._result is not None:
            return
        if self._idle is not None:
            self._idle.reset(self._idleTimeout)
        try:
            events = self._decoder.feed(data)
        except ProtocolError as e:
            self._fail(f"malformed answer from the proxy: {e.reason}")
            return
        for event in events:
            if isinstance(event, Payload):
                self._sink.write(event.data)
                self._progress(len(event.data))
            elif isinstance(event, End):
                self._result = self.received
                self.transport.loseConnection()
            elif isinstance(event, Refusal):
                self._fail(f"refused: ERR {event.code} {event.reason}")
        if self._limiter is not None and self._result is None:
            self._limiter.received(len(data), self.transport)

    def _timedOut(self) -> None:
        self._idle = None
        self._fail(f"nothing received for {self._idleTimeout:g}s")

    def _fail(self, why: str) -> None:
        if self._result is None:
            self._result = Failure(DownloadError(why))
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self._limiter is not None:
            self._limiter.stop()
        if self._result is None:
            why = reason.getErrorMessage()
            self._result = Failure(
                DownloadError(f"connection closed after {self.received} bytes: {why}")
            )
        self.done.callback(self._result)


class _OneShotFactory(ClientFactory):
    noisy = False

    def __init__(self, protocol: DownloadProtocol):
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> DownloadProtocol:
        return self._protocol

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        why = reason.getErrorMessage()
        self._protocol.done.errback(DownloadError(f"cannot connect: {why}"))


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reloc.client",
        description="Download one file through a reloc proxy.",
    )
    parser.add_argument("--proxy", required=True, help="HOST:PORT of the proxy")
    parser.add_argument("--name", required=True, help="the file's name")
    parser.add_argument("--out", required=True, help="where to write the file")
    parser.add_argument(
        "--limit-rate", type=parseRate, help="most bytes per second (K, M, G)"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=120.0,
        help="give up when nothing arrives for this many seconds",
    )
    parser.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="show a progress bar (auto: on a terminal)",
    )
    arguments = parser.parse_args(argv)
    try:
        arguments.proxy = parseAddress(arguments.proxy)
    except ValueError as e:
        parser.error(f"--proxy: {e}")
    try:
        arguments.request = Request(arguments.name, 0)
        from reloc.protocol import validateName

        validateName(arguments.name)
    except ProtocolError as e:
        parser.error(f"--name: {e.reason}")
    return arguments


def download(reactor: object, arguments: argparse.Namespace) -> Deferred[int]:
    """
    Run one download as the command line asks.
    """
    from tqdm import tqdm

    partial = arguments.out + ".part"
    sink = open(partial, "wb")
    show = arguments.progress == "always" or (
        arguments.progress == "auto" and sys.stderr.isatty()
    )
    bar = tqdm(
        total=None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=arguments.name,
        disable=not show,
        file=sys.stderr,
    )
    protocol = DownloadProtocol(
        arguments.request,
        sink,
        reactor,  # type: ignore[arg-type]
        rate=arguments.limit_rate,
        idleTimeout=arguments.idle_timeout,
        progress=bar.update,
    )
    address = arguments.proxy
    reactor.connectTCP(  # type: ignore[attr-defined]
        address.host, address.port, _OneShotFactory(protocol), timeout=30
    )

    def finished(result: int | Failure) -> int | Failure:
        bar.close()
        try:
            sink.flush()
            os.fsync(sink.fileno())
        finally:
            sink.close()
        if not isinstance(result, Failure):
            os.replace(partial, arguments.out)
        return result

    return protocol.done.addBoth(finished)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parseArguments(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor

    outcome: list[int | Failure] = []
    d = download(reactor, arguments)
    d.addBoth(outcome.append)
    d.addBoth(lambda ignored: reactor.stop())
    if not outcome:
        reactor.run()
    result = outcome[0]
    if isinstance(result, Failure):
        error = result.value
        text = str(error) if isinstance(error, DownloadError) else repr(error)
        sys.stderr.write(f"reloc.client: {arguments.name}: {text}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
