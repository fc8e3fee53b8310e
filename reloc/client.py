"""
Download one file through a reloc proxy.

    python -m reloc.client --proxy HOST:PORT --name NAME --out PATH

The bytes go to C{PATH.part}, and the identity of the file they come from
(size and SHA-256, from the C{ID} line that answers C{GETID}) to
C{PATH.part.id}.  Once the end mark arrived and the bytes on disk have that
size and digest, C{PATH.part} is renamed to C{PATH}; the exit status is 0
only then.  A dropped connection is retried from the bytes already on disk,
a bounded number of times, and only with the same file on the other side;
C{--resume} does the same for a partial file left by an earlier run.  Any
failure prints one line on standard error and exits non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from reloc.protocol import (
    UNAVAILABLE,
    End,
    FrameDecoder,
    Identified,
    Identity,
    Payload,
    ProtocolError,
    Request,
    validateName,
)
from reloc.routes import Address, parseAddress

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class DownloadError(Exception):
    """
    The download did not complete; the message says why, in one line.

    @ivar retryable: whether trying again from the bytes on disk may help.
    """

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


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

    def received(self, count: int, transport: object) -> float:
        """
        Account for C{count} bytes; pause C{transport} if they came too soon.

        @return: the seconds until reading resumes (0 if it goes on).
        """
        now = self._clock.seconds()
        if self._start is None:
            self._start = now
        self._count += count
        wait = self._start + self._count / self._rate - now
        if wait > 0 and self._call is None:
            transport.pauseProducing()  # type: ignore[attr-defined]
            self._call = self._clock.callLater(wait, self._resume, transport)
        return max(wait, 0.0)

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

    For a C{GETID} request the answer's identity is checked against
    C{expected} (when given) before any payload is written, and handed to
    C{onIdentity}.

    @ivar done: fires with the payload byte count after the end mark, or
        fails with L{DownloadError}.
    @ivar identity: the identity the answer announced, if any.
    """

    def __init__(
        self,
        request: Request,
        sink: BinaryIO,
        clock: IReactorTime,
        rate: float | None = None,
        idleTimeout: float = 120.0,
        progress: Callable[[int], object] = lambda count: None,
        expected: Identity | None = None,
        onIdentity: Callable[[Identity], object] = lambda identity: None,
    ):
        self.request = request
        self.done: Deferred[int] = Deferred()
        self.identity: Identity | None = None
        self._sink = sink
        self._clock = clock
        self._decoder = FrameDecoder(expectIdentity=request.identify)
        self._limiter = RateLimiter(rate, clock) if rate else None
        self._idleTimeout = idleTimeout
        self._idle: IDelayedCall | None = None
        self._progress = progress
        self._expected = expected
        self._onIdentity = onIdentity
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
            elif isinstance(event, Identified):
                self._identified(event.identity)
            elif isinstance(event, End):
                self._result = self.received
                self.transport.loseConnection()
            else:
                retryable = event.code == UNAVAILABLE
                self._fail(f"refused: ERR {event.code} {event.reason}", retryable)
            if self._result is not None:
                return
        if self._limiter is not None:
            wait = self._limiter.received(len(data), self.transport)
            if wait and self._idle is not None:
                # A pause of our own making is not the server being idle.
                self._idle.reset(self._idleTimeout + wait)

    def _identified(self, identity: Identity) -> None:
        if self._expected is not None and identity != self._expected:
            self._fail(
                "the file on the server is not the one the partial download "
                f"came from ({identity.size} bytes, sha256 {identity.sha256[:12]}, "
                f"not {self._expected.size} bytes, "
                f"sha256 {self._expected.sha256[:12]})"
            )
            return
        self.identity = identity
        try:
            self._onIdentity(identity)
        except DownloadError as e:
            self._fail(str(e))

    def _timedOut(self) -> None:
        self._idle = None
        self._fail(f"nothing received for {self._idleTimeout:g}s", retryable=True)

    def _fail(self, why: str, retryable: bool = False) -> None:
        if self._result is None:
            self._result = Failure(DownloadError(why, retryable))
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self._limiter is not None:
            self._limiter.stop()
        if self._result is None:
            why = reason.getErrorMessage()
            self._result = Failure(
                DownloadError(
                    f"connection closed after {self.received} bytes: {why}",
                    retryable=True,
                )
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
        self._protocol.done.errback(
            DownloadError(f"cannot connect: {why}", retryable=True)
        )


class Download:
    """
    One file downloaded to C{out}, over as many connections as it takes, up
    to a bound, each one resuming where the bytes on disk end.

    @ivar connections: how many connections were opened.
    """

    def __init__(
        self,
        reactor: Any,
        proxy: Address,
        name: str,
        out: str,
        rate: float | None = None,
        idleTimeout: float = 120.0,
        retries: int = 5,
        resume: bool = False,
        sha256: str | None = None,
        progress: Callable[[int], object] = lambda count: None,
        say: Callable[[str], object] = lambda text: None,
        onSize: Callable[[int], object] = lambda size: None,
    ):
        self._reactor = reactor
        self._proxy = proxy
        self._name = name
        self._out = out
        self._partial = out + ".part"
        self._identityFile = self._partial + ".id"
        self._rate = rate
        self._idleTimeout = idleTimeout
        self._retries = retries
        self._resume = resume
        self._sha256 = sha256
        self._progress = progress
        self._say = say
        self._onSize = onSize
        self._identity: Identity | None = None
        self._hasher = hashlib.sha256()
        self._sink: BinaryIO | None = None
        self.connections = 0
        self.done: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        """
        Open the partial file and make the first attempt.

        @return: L{done}, which fires with the file's size once it is in
            place, or fails with L{DownloadError}.
        """
        try:
            self._openPartial()
        except DownloadError as e:
            self._close()
            self.done.errback(e)
            return self.done
        except OSError as e:
            self._close()
            self.done.errback(DownloadError(f"cannot write {self._partial}: {e}"))
            return self.done
        self._attempt()
        return self.done

    def _openPartial(self) -> None:
        if self._resume and os.path.exists(self._partial):
            try:
                with open(self._identityFile) as f:
                    self._identity = Identity.fromJSON(json.load(f))
            except (OSError, ValueError, RecursionError) as e:
                raise DownloadError(
                    f"cannot resume: no usable identity beside {self._partial} "
                    f"({e}); remove it to start over"
                ) from None
            if os.path.getsize(self._partial) > self._identity.size:
                raise DownloadError(
                    f"cannot resume: {self._partial} is longer than the file it "
                    "came from; remove it to start over"
                )
            self._sink = open(self._partial, "r+b")
            while block := self._sink.read(1024 * 1024):
                self._hasher.update(block)
            self._progress(self._sink.tell())
            return
        self._sink = open(self._partial, "wb")
        if os.path.exists(self._identityFile):
            os.remove(self._identityFile)

    def _attempt(self) -> None:
        assert self._sink is not None
        self.connections += 1
        offset = self._sink.tell()
        protocol = DownloadProtocol(
            Request(self._name, offset, identify=True),
            _HashingSink(self._sink, self._hasher),
            self._reactor,
            rate=self._rate,
            idleTimeout=self._idleTimeout,
            progress=self._progress,
            expected=self._identity,
            onIdentity=self._identified,
        )
        self._reactor.connectTCP(
            self._proxy.host, self._proxy.port, _OneShotFactory(protocol), timeout=30
        )
        protocol.done.addCallbacks(self._complete, self._failed)

    def _identified(self, identity: Identity) -> None:
        if self._sha256 is not None and identity.sha256 != self._sha256:
            # Known from the ID line: no need to download the file first.
            raise DownloadError(
                f"the server's file has sha256 {identity.sha256}, "
                f"not the expected {self._sha256}"
            )
        self._onSize(identity.size)
        if self._identity is None:
            self._identity = identity
            temporary = self._identityFile + ".tmp"
            with open(temporary, "w") as f:
                json.dump(identity.toJSON(), f)
            os.replace(temporary, self._identityFile)

    def _failed(self, reason: Failure) -> None:
        error = reason.value
        retryable = isinstance(error, DownloadError) and error.retryable
        if not retryable or self.connections > self._retries:
            self._close()
            if self._identity is None and os.path.getsize(self._partial) == 0:
                # Nothing worth resuming: leave no empty file behind.
                self._discard()
            self.done.errback(reason)
            return
        delay = min(8.0, 0.5 * 2 ** (self.connections - 1))
        self._say(
            f"{error}; trying again in {delay:g}s "
            f"({self.connections} of {self._retries} retries)"
        )
        self._reactor.callLater(delay, self._attempt)

    def _complete(self, ignored: int) -> None:
        assert self._sink is not None and self._identity is not None
        size = self._sink.tell()
        digest = self._hasher.hexdigest()
        problem = None
        if size != self._identity.size:
            problem = f"got {size} bytes, the server's file has {self._identity.size}"
        elif digest != self._identity.sha256:
            problem = "the bytes received do not match the server's sha256"
        elif self._sha256 is not None and digest != self._sha256:
            problem = f"sha256 is {digest}, not the expected {self._sha256}"
        if problem is not None:
            self._close()
            self._discard()
            self.done.errback(DownloadError(problem))
            return
        try:
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._close()
            os.replace(self._partial, self._out)
            os.remove(self._identityFile)
        except OSError as e:
            self.done.errback(DownloadError(f"cannot finish {self._out}: {e}"))
            return
        self.done.callback(size)

    def _close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _discard(self) -> None:
        for path in (self._partial, self._identityFile):
            if os.path.exists(path):
                os.remove(path)


class _HashingSink:
    """
    Write to a file and feed the same bytes to a digest.
    """

    def __init__(self, sink: BinaryIO, hasher: Any):
        self._sink = sink
        self._hasher = hasher

    def write(self, data: bytes) -> None:
        self._sink.write(data)
        self._hasher.update(data)


class _OneLineParser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line, like every other failure.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = _OneLineParser(
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
        help="drop a connection when nothing arrives for this many seconds",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="connections to try again after one drops (default 5)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT.part from an earlier run, if the file is the same",
    )
    parser.add_argument("--sha256", help="the digest the finished file must have")
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
        validateName(arguments.name)
    except ProtocolError as e:
        parser.error(f"--name: {e.reason}")
    if not arguments.out or os.path.isdir(arguments.out):
        parser.error(f"--out {arguments.out!r} must name a file, not a folder")
    if not os.path.isdir(os.path.dirname(os.path.abspath(arguments.out))):
        parser.error(f"--out {arguments.out!r}: its folder does not exist")
    if not 0 < arguments.idle_timeout < float("inf"):
        parser.error("--idle-timeout must be positive")
    if arguments.retries < 0:
        parser.error("--retries must not be negative")
    if arguments.sha256 is not None:
        arguments.sha256 = arguments.sha256.lower()
        if len(arguments.sha256) != 64 or not all(
            c in "0123456789abcdef" for c in arguments.sha256
        ):
            parser.error("--sha256 must be 64 hex digits")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parseArguments(sys.argv[1:] if argv is None else argv)
    from tqdm import tqdm
    from twisted.internet import reactor

    show = arguments.progress == "always" or (
        arguments.progress == "auto" and sys.stderr.isatty()
    )
    bar = tqdm(
        total=None,
        unit="B",
        unit_scale=True,
        desc=arguments.name,
        disable=not show,
        file=sys.stderr,
    )
    download = Download(
        reactor,
        arguments.proxy,
        arguments.name,
        arguments.out,
        rate=arguments.limit_rate,
        idleTimeout=arguments.idle_timeout,
        retries=arguments.retries,
        resume=arguments.resume,
        sha256=arguments.sha256,
        progress=bar.update,
        onSize=lambda size: setattr(bar, "total", size) or bar.refresh(),
        say=lambda text: (
            bar.write(f"reloc.client: {text}", file=sys.stderr) if show else None
        ),
    )
    outcome: list[int | Failure] = []
    d = download.start()
    d.addBoth(outcome.append)
    if not outcome:
        # Failures found before connecting (a bad partial file) need no
        # reactor at all.
        d.addBoth(lambda ignored: reactor.stop())
        reactor.run()
    bar.close()
    if not outcome:
        sys.stderr.write(f"reloc.client: {arguments.name}: interrupted\n")
        return 130
    result = outcome[0]
    if isinstance(result, Failure):
        error = result.value
        text = str(error) if isinstance(error, DownloadError) else repr(error)
        sys.stderr.write(f"reloc.client: {arguments.name}: {text}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
