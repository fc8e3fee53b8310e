"""
Moves of a live stream, with the real proxy, file servers and client in one
reactor on loopback.

Both backends are real file servers.  The old one sits behind a cutter, a
relay that passes its answer on up to a chosen byte and then either stalls
(the planned move: routes change and the proxy reloads) or closes (the
unplanned break: the routes already point elsewhere when the proxy re-reads
them).  Each cut point lands somewhere different in the framing: inside a
header, inside a payload, on a boundary, before any payload, and just before
the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientCreator, ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from reloc import fileserver
from reloc.client import DownloadProtocol
from reloc.fileserver import FileServerFactory
from reloc.protocol import Identity, Request, dataHeader
from reloc.proxy import ProxyFactory, RetryPolicy

FRAME = 1000
CONTENT = os.urandom(3 * FRAME + 123)
IDLINE = Identity(len(CONTENT), hashlib.sha256(CONTENT).hexdigest()).toLine()


def framed(content: bytes, frame: int = FRAME) -> bytes:
    """
    @return: C{content} as a run of C{DATA} frames of C{frame} bytes and EOF.
    """
    pieces = []
    for start in range(0, len(content), frame):
        chunk = content[start : start + frame]
        pieces.append(dataHeader(len(chunk)) + chunk)
    pieces.append(b"EOF\n")
    return b"".join(pieces)


class CutterServer(Protocol):
    """
    The proxy's side of the cutter: passes the request on to the file server
    and its answer back, up to C{factory.cut} bytes of it.
    """

    factory: CutterFactory

    def connectionMade(self) -> None:
        self.upstream: CutterClient | None = None
        self.pending = b""
        self.passed = 0
        client = ClientCreator(reactor, CutterClient)
        d = client.connectTCP("127.0.0.1", self.factory.target)
        d.addCallback(self.upstreamConnected)

    def upstreamConnected(self, upstream: CutterClient) -> None:
        upstream.downstream = self
        self.upstream = upstream
        upstream.transport.write(self.pending)

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending += data
        else:
            self.upstream.transport.write(data)

    def answer(self, data: bytes) -> None:
        room = self.factory.cut - self.passed
        if room <= 0:
            return
        piece = data[:room]
        self.passed += len(piece)
        self.transport.write(piece)
        if self.passed == self.factory.cut:
            assert self.upstream is not None
            self.upstream.transport.abortConnection()
            if self.factory.close:
                self.transport.loseConnection()
            else:
                self.factory.stalled.append(self)

    def connectionLost(self, reason: object = None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class CutterClient(Protocol):
    """
    The file server's side of the cutter.
    """

    downstream: CutterServer

    def dataReceived(self, data: bytes) -> None:
        self.downstream.answer(data)


class CutterFactory(Factory):
    protocol = CutterServer

    def __init__(self, target: int, cut: int, close: bool):
        self.target = target
        self.cut = cut
        self.close = close
        self.stalled: list[CutterServer] = []


class RecordingFileServer(FileServerFactory):
    """
    A file server that remembers the requests it was sent.
    """

    def buildProtocol(self, addr):
        protocol = FileServerFactory.buildProtocol(self, addr)
        original = protocol.dataReceived

        def recording(data: bytes) -> None:
            self.requests.append(data)
            original(data)

        protocol.dataReceived = recording
        return protocol


class _ClientFactory(ClientFactory):
    def __init__(self, protocol: DownloadProtocol):
        self.protocol = protocol

    def buildProtocol(self, addr):
        return self.protocol


class MoveTestsMixin:
    """
    The cut points, run once per kind of move.

    @ivar close: whether the old backend closes at the cut (unplanned) or
        stalls there until the proxy reloads its routes (planned).
    """

    close: bool

    @inlineCallbacks
    def moveAt(self, cut: int, delivered: int):
        """
        Break the old backend's answer after C{cut} bytes of its frames (and
        the C{ID} line before them), by which point the proxy has delivered
        C{delivered} payload bytes, and check that the client still gets the
        whole file on one connection.
        """
        cut += len(IDLINE)
        self.patch(fileserver, "CHUNK_SIZE", FRAME)
        servers = []
        for _ in range(2):
            base = self.mktemp()
            os.makedirs(base)
            with open(os.path.join(base, "f.bin"), "wb") as f:
                f.write(CONTENT)
            server = RecordingFileServer(base, reactor)
            server.requests = []
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            servers.append((server, port))
        (oldServer, oldPort), (newServer, newPort) = servers
        cutter = CutterFactory(oldPort.getHost().port, cut, self.close)
        cutterPort = reactor.listenTCP(0, cutter, interface="127.0.0.1")
        self.addCleanup(cutterPort.stopListening)

        routes = self.mktemp()
        self.writeRoutes(routes, cutterPort.getHost().port)
        proxy = ProxyFactory(
            routes, reactor, reactor, policy=RetryPolicy(deadline=10.0)
        )
        connections = []
        build = proxy.buildProtocol
        proxy.buildProtocol = lambda addr: connections.append(addr) or build(addr)
        proxyPort = reactor.listenTCP(0, proxy, interface="127.0.0.1")
        self.addCleanup(proxyPort.stopListening)

        if self.close:
            # The routes point at the new backend before the old one breaks.
            self.writeRoutes(routes, newPort.getHost().port)
        sink = io.BytesIO()
        client = DownloadProtocol(Request("f.bin", 0), sink, reactor)
        reactor.connectTCP(
            "127.0.0.1", proxyPort.getHost().port, _ClientFactory(client)
        )
        if not self.close:
            yield self.waitFor(lambda: cutter.stalled)
            yield self.waitFor(lambda: self.deliveredBy(proxy) == delivered)
            self.writeRoutes(routes, newPort.getHost().port)
            self.assertTrue(proxy.reload())
        count = yield client.done
        for stalled in cutter.stalled:
            stalled.transport.loseConnection()

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(len(connections), 1)
        self.assertEqual(oldServer.requests, [b"GETID f.bin 0\n"])
        self.assertEqual(newServer.requests, [b"GETID f.bin %d\n" % (delivered,)])
        yield self.waitFor(lambda: not proxy.sessions)

    def writeRoutes(self, path: str, port: int) -> None:
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"f.bin": f"127.0.0.1:{port}"}, f)
        os.replace(temporary, path)

    def deliveredBy(self, proxy: ProxyFactory) -> int:
        (session,) = proxy.sessions
        return session.delivered

    @inlineCallbacks
    def waitFor(self, condition, timeout: float = 5.0):
        """
        Poll C{condition} on the reactor until it holds.
        """
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("condition never held")
            yield deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    def test_insideIdentity(self) -> Deferred[None]:
        """
        A break inside the C{ID} line, before the old backend ever answered,
        moves the stream at offset 0.
        """
        return self.moveAt(-5, 0)

    def test_insideFirstHeader(self) -> Deferred[None]:
        """
        A break inside the first header moves the stream at offset 0.
        """
        return self.moveAt(4, 0)

    def test_afterFirstHeader(self) -> Deferred[None]:
        """
        A break right after the first header, before any payload, moves the
        stream at offset 0.
        """
        return self.moveAt(len(dataHeader(FRAME)), 0)

    def test_insidePayload(self) -> Deferred[None]:
        """
        A break in the middle of a payload moves the stream at the last byte
        the proxy relayed, with no gap and no duplicate.
        """
        return self.moveAt(len(dataHeader(FRAME)) + 517, 517)

    def test_atFrameBoundary(self) -> Deferred[None]:
        """
        A break exactly between two frames moves the stream there.
        """
        return self.moveAt(len(dataHeader(FRAME)) + FRAME, FRAME)

    def test_insideLaterHeader(self) -> Deferred[None]:
        """
        A break inside a header after whole frames moves the stream after
        those frames.
        """
        return self.moveAt(2 * (len(dataHeader(FRAME)) + FRAME) + 3, 2 * FRAME)

    def test_beforeLastByte(self) -> Deferred[None]:
        """
        A break one byte before the end moves the stream for its last byte.
        """
        wire = framed(CONTENT)
        return self.moveAt(len(wire) - len(b"EOF\n") - 1, len(CONTENT) - 1)

    def test_beforeEndMark(self) -> Deferred[None]:
        """
        A break after all the payload but before C{EOF} asks the new backend
        for the offset at the end, which answers with the end mark alone.
        """
        wire = framed(CONTENT)
        return self.moveAt(len(wire) - len(b"EOF\n"), len(CONTENT))


class PlannedMoveTests(MoveTestsMixin, TestCase):
    """
    The routes change while the old backend still holds the stream.
    """

    close = False


class UnplannedMoveTests(MoveTestsMixin, TestCase):
    """
    The old backend closes in the middle of its answer.
    """

    close = True
