"""
The file server: answers C{GET <name> <offset>} with the file's bytes from
that offset, read in chunks as the connection drains, never the whole file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPullProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from reloc.metrics import FileServerMetrics
from reloc.protocol import (
    BAD_OFFSET,
    EOF_LINE,
    FORBIDDEN,
    NOT_FOUND,
    UNAVAILABLE,
    Identity,
    LineReceiver,
    ProtocolError,
    Request,
    dataHeader,
    encodeError,
    parseRequest,
)
from reloc.service import drainConnections

log = Logger()

#: Bytes read from disk and sent as one frame.
CHUNK_SIZE = 256 * 1024

#: File versions whose digests are remembered; the oldest are forgotten.
DIGEST_CACHE_SIZE = 4096

#: What identifies one version of a file: device, inode, size, mtime.
VersionKey = tuple[int, int, int, int]


class FileChanged(Exception):
    """
    The file changed while its digest was being computed.
    """


def versionKey(info: os.stat_result) -> VersionKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def hashDescriptor(fd: int, key: VersionKey) -> str:
    """
    Compute the SHA-256 of an open file, in a thread, and close it.

    @raise FileChanged: if the file is not the version C{key} names by the
        end, so that a digest never describes bytes it did not cover.
    """
    try:
        digest = hashlib.sha256()
        offset = 0
        while block := os.pread(fd, 1024 * 1024, offset):
            digest.update(block)
            offset += len(block)
        if versionKey(os.fstat(fd)) != key or offset != key[2]:
            raise FileChanged()
        return digest.hexdigest()
    finally:
        os.close(fd)


class DigestCache:
    """
    SHA-256 digests of file versions, each computed once, off the reactor
    thread.

    @ivar runInThread: called as C{runInThread(f, *args)}, returns a
        L{Deferred} that fires with C{f(*args)} run in a thread.
    """

    def __init__(self, runInThread: Callable[..., Deferred[str]]):
        self.runInThread = runInThread
        self._known: dict[VersionKey, str] = {}
        self._waiting: dict[VersionKey, list[Deferred[str]]] = {}

    def digest(self, fd: int, info: os.stat_result) -> Deferred[str]:
        """
        @param fd: an open descriptor of the file; it stays the caller's.
        @return: a L{Deferred} that fires with the hex digest.
        """
        key = versionKey(info)
        if key in self._known:
            return succeed(self._known[key])
        waiter: Deferred[str] = Deferred()
        if key in self._waiting:
            self._waiting[key].append(waiter)
            return waiter
        self._waiting[key] = [waiter]
        work = self.runInThread(hashDescriptor, os.dup(fd), key)
        work.addBoth(self._hashed, key)
        return waiter

    def _hashed(self, result: str | Failure, key: VersionKey) -> None:
        waiters = self._waiting.pop(key)
        if isinstance(result, str):
            self._known[key] = result
            while len(self._known) > DIGEST_CACHE_SIZE:
                del self._known[next(iter(self._known))]
        for waiter in waiters:
            waiter.callback(result)


def openServed(base: str, name: str) -> tuple[int, os.stat_result]:
    """
    Open a file below C{base} for reading.

    @param base: the served folder, already resolved with C{os.path.realpath}.
    @param name: a name that passed L{reloc.protocol.validateName}.
    @return: an open descriptor and the file's status.
    @raise ProtocolError: 403 if the name leads outside C{base}, 404 if
        there is no regular file under it.
    """
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise ProtocolError(FORBIDDEN, "name leads outside the served folder")
    try:
        # O_NONBLOCK keeps a FIFO from blocking the open; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProtocolError(NOT_FOUND, "no such file") from None
    except OSError as e:
        raise ProtocolError(NOT_FOUND, f"cannot open: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ProtocolError(NOT_FOUND, "not a regular file")
    if not _openedBelow(fd, base):
        os.close(fd)
        raise ProtocolError(FORBIDDEN, "name leads outside the served folder")
    return fd, info


def _openedBelow(fd: int, base: str) -> bool:
    """
    Check where an open descriptor really leads, so that a symlink swapped
    in between the path check and the open cannot lead outside C{base}.
    Where C{/proc} is missing the earlier path check stands alone.
    """
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    return os.path.commonpath([base, opened]) == base


@implementer(IPullProducer)
class FileSender:
    """
    Write one file as C{DATA} frames, a chunk each time the transport asks.

    The size is fixed when the file is opened; a file that shrinks under it
    ends the connection without C{EOF}, so the reader knows it is incomplete.
    """

    def __init__(self, protocol: FileServerProtocol, fd: int, offset: int, size: int):
        self._protocol = protocol
        self._fd = fd
        self._offset = offset
        self._size = size

    def resumeProducing(self) -> None:
        transport = self._protocol.transport
        assert transport is not None
        if self._offset >= self._size:
            self.stopProducing()
            transport.write(EOF_LINE)
            transport.unregisterProducer()
            transport.loseConnection()
            return
        want = min(CHUNK_SIZE, self._size - self._offset)
        chunk = os.pread(self._fd, want, self._offset)
        if not chunk:
            self.stopProducing()
            self._protocol.log.warn(
                "file {name} shrank while it was served", name=self._protocol.name
            )
            transport.unregisterProducer()
            transport.abortConnection()
            return
        self._offset += len(chunk)
        self._protocol.factory.sentBytes += len(chunk)
        transport.writeSequence([dataHeader(len(chunk)), chunk])

    def stopProducing(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IHalfCloseableProtocol)
class FileServerProtocol(Protocol):
    """
    One request, then the file or one C{ERR} line.

    A client may close its sending side once it has asked and still read the
    whole answer.
    """

    log = Logger()
    factory: FileServerFactory
    name: str | None = None

    def connectionMade(self) -> None:
        self._sender: FileSender | None = None
        self._idle: IDelayedCall | None = None
        if self.factory.active >= self.factory.maxConnections:
            self._lines = None
            self.log.warn(
                "connection refused: {count} already open",
                event="connection.refused",
                count=self.factory.active,
            )
            self.factory.metrics.errors.labels(str(UNAVAILABLE)).inc()
            assert self.transport is not None
            self.transport.write(encodeError(UNAVAILABLE, "too many connections"))
            self.transport.loseConnection()
            return
        self.factory.connections.add(self)
        self._lines = LineReceiver()
        self._idle = self.factory.clock.callLater(
            self.factory.idleTimeout, self._idleTimedOut
        )

    def dataReceived(self, data: bytes) -> None:
        if self._lines is None:
            # One request per connection: later bytes are dropped unread.
            return
        try:
            line = self._lines.feed(data)
            if line is None:
                return
            self._lines = None
            self._cancelIdle()
            self.factory.metrics.requests.inc()
            self._serve(parseRequest(line))
        except ProtocolError as e:
            self._refuse(e)

    def _serve(self, request: Request) -> None:
        self.name = request.name
        fd, info = openServed(self.factory.base, request.name)
        if request.offset > info.st_size:
            os.close(fd)
            raise ProtocolError(BAD_OFFSET, "offset beyond the end of the file")
        self._sender = FileSender(self, fd, request.offset, info.st_size)
        # One frame, header included, in one send call rather than three
        # (Twisted's default SEND_LIMIT is 128 KiB).
        assert self.transport is not None
        self.transport.SEND_LIMIT = CHUNK_SIZE + 1024
        if not request.identify:
            self._send()
            return
        digest = self.factory.digests.digest(fd, info)
        digest.addCallbacks(
            self._identified, self._notIdentified, callbackArgs=(info.st_size,)
        )

    def _identified(self, digest: str, size: int) -> None:
        if self._sender is None:
            return
        assert self.transport is not None
        self.transport.write(Identity(size, digest).toLine())
        self._send()

    def _notIdentified(self, reason: Failure) -> None:
        if self._sender is None:
            return
        if not reason.check(FileChanged):
            self.log.failure("digest of {name} failed", reason, name=self.name)
        self._sender.stopProducing()
        self._sender = None
        self._refuse(ProtocolError(UNAVAILABLE, "file changed while it was hashed"))

    def _send(self) -> None:
        assert self.transport is not None and self._sender is not None
        self.transport.registerProducer(self._sender, False)

    def _refuse(self, error: ProtocolError) -> None:
        self._lines = None
        self._cancelIdle()
        self.log.info(
            "request refused: {code} {reason}",
            event="request.refused",
            code=error.code,
            reason=error.reason,
        )
        self.factory.metrics.errors.labels(str(error.code)).inc()
        assert self.transport is not None
        self.transport.write(encodeError(error.code, error.reason))
        self.transport.loseConnection()

    def _idleTimedOut(self) -> None:
        self._idle = None
        assert self.transport is not None
        self.transport.abortConnection()

    def _cancelIdle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def readConnectionLost(self) -> None:
        if self._lines is not None:
            # The request will never be completed.
            assert self.transport is not None
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def shutDown(self) -> None:
        """
        End this connection with C{ERR 503} after the last whole frame.
        """
        assert self.transport is not None
        if self._sender is not None:
            self.transport.unregisterProducer()
            self._sender.stopProducing()
            self._sender = None
        self._lines = None
        self._cancelIdle()
        self.factory.metrics.errors.labels(str(UNAVAILABLE)).inc()
        self.transport.write(encodeError(UNAVAILABLE, "server shutting down"))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.connections.discard(self)
        self._cancelIdle()
        if self._sender is not None:
            self._sender.stopProducing()
            self._sender = None


class FileServerFactory(Factory):
    """
    Serve the regular files below one folder.

    @ivar base: the served folder, resolved.
    @ivar clock: schedules the idle timeout.
    @ivar idleTimeout: seconds a connection may take to send its request.
    """

    protocol = FileServerProtocol

    def __init__(
        self,
        base: str,
        clock: IReactorTime,
        idleTimeout: float = 30.0,
        runInThread: Callable[..., Deferred[str]] | None = None,
        maxConnections: int = 4096,
    ):
        """
        @param maxConnections: connections served at once; more are answered
            with C{ERR 503} and closed.
        @param runInThread: how digests are computed off the reactor
            thread; by default in C{clock}'s thread pool (C{clock} is then
            the reactor).
        """
        self.base = os.path.realpath(base)
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.connections: set[FileServerProtocol] = set()
        self.sentBytes = 0
        self.metrics = FileServerMetrics(lambda: self.sentBytes)
        self.digests = DigestCache(runInThread or self._runInPool)

    @property
    def active(self) -> int:
        """
        How many connections are open.
        """
        return len(self.connections)

    def drain(self, grace: float) -> Deferred[None]:
        """
        Let the transfers finish for up to C{grace} seconds, then end those
        still running with C{ERR 503}.

        @return: fires once every connection is closed.
        """

        def cut() -> None:
            if self.connections:
                log.warn(
                    "grace period over: closing {count} connections",
                    event="fs.shutdown",
                    count=len(self.connections),
                )
            for protocol in list(self.connections):
                protocol.shutDown()

        return drainConnections(self.clock, grace, self.connections, cut)

    def _runInPool(self, f: Callable[..., str], *args: object) -> Deferred[str]:
        reactor: Any = self.clock
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
