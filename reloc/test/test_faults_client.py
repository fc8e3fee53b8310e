"""
Client-side and network faults: a client of the proxy that stops reading,
one that reads slowly, one that resets its connection and one that trickles
its request, and a client of the proxy or of a file server that half-closes.

All but the trickle use the real proxy and a real file server in one reactor
on loopback, with raw sockets for the clients whose socket options matter;
the trickle is driven on a fake clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from reloc.protocol import End, FrameDecoder, Payload
from reloc.proxy import ProxyFactory, ProxySession, RetryPolicy
from reloc.test.test_faults_backend import (
    BackendFaultTestCase,
    OneClientFactory,
    TimedFileServer,
    adopt,
    rawClient,
)

#: The size of the file a client stops reading.
LARGE = 64 * 1024 * 1024

#: Seconds a client may go without reading in these tests.
CLIENT_TIMEOUT = 1.0


def buffered(transport: Any) -> int:
    """
    @return: the bytes a Twisted TCP transport holds in user space, waiting
        for its socket to take them.
    """
    pending = len(transport.dataBuffer) - transport.offset
    return pending + transport._tempDataLen


def callsOwnedBy(objects: Iterable[object]) -> list[DelayedCall]:
    """
    @return: the reactor's pending calls made by, or about, any of
        C{objects}, including looping calls of their methods.
    """
    owners = set(map(id, objects))
    found = []
    for call in reactor.getDelayedCalls():
        owner = getattr(call.func, "__self__", None)
        if isinstance(owner, LoopingCall):
            owner = getattr(owner.f, "__self__", None)
        if id(owner) in owners or any(id(arg) in owners for arg in call.args):
            found.append(call)
    return found


@implementer(IHalfCloseableProtocol)
class HalfClosingClient(Protocol):
    """
    Send one request, close the sending side, and collect the whole answer.

    @ivar done: fires with the bytes received once the connection is closed.
    """

    def __init__(self, request: bytes):
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.received)


class ResettingClient(Protocol):
    """
    Send one request and reset the connection once C{after} bytes arrived.
    """

    def __init__(self, request: bytes, after: int):
        self.request = request
        self.after = after
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.after:
            # Twisted's abort sets SO_LINGER to zero: the close is a reset.
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.received)


class SlowReader(Protocol):
    """
    Send one request and read the answer in bursts, pausing a little
    between them, for as long as the connection lasts.
    """

    def __init__(self, request: bytes, burst: int, pause: float):
        self.request = request
        self.burst = burst
        self.pause = pause
        self.received = b""
        self.sinceBreak = 0
        self.resumeCall: Any = None
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.sinceBreak += len(data)
        if self.sinceBreak >= self.burst and self.resumeCall is None:
            self.sinceBreak = 0
            self.transport.pauseProducing()
            self.resumeCall = reactor.callLater(self.pause, self.resume)

    def resume(self) -> None:
        self.resumeCall = None
        self.transport.resumeProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.resumeCall is not None:
            self.resumeCall.cancel()
        self.done.callback(self.received)


def decodeAll(data: bytes) -> tuple[bytes, list[object]]:
    """
    @return: the payload of a frame stream and its other events.
    """
    events = FrameDecoder().feed(data)
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    return payload, [e for e in events if not isinstance(e, Payload)]


class ClientFaultTestCase(BackendFaultTestCase):
    """
    A proxy in front of one real file server.
    """

    def setUp(self) -> None:
        super().setUp()
        self.lost: list[Failure] = []
        original = ProxySession.connectionLost

        def recording(session: ProxySession, reason: Failure = connectionDone) -> None:
            self.lost.append(reason)
            original(session, reason)

        self.patch(ProxySession, "connectionLost", recording)

    def serveLarge(self, size: int) -> TimedFileServer:
        """
        Start a file server whose C{big.bin} is C{size} bytes of a sparse
        file, cheap to make.
        """
        base = self.mktemp()
        os.makedirs(base)
        with open(os.path.join(base, "big.bin"), "wb") as f:
            f.truncate(size)
        server = TimedFileServer(base)
        server.port = self.listen(server)
        return server


class StoppedReaderTests(ClientFaultTestCase):
    """
    A client that sends its request and then reads nothing.
    """

    @inlineCallbacks
    def test_boundedThenDropped(self) -> Any:
        """
        The proxy stops reading the backend when the client stops reading,
        so that neither the bytes it relays nor the bytes it buffers grow
        with the file; after the client timeout it drops the client, and
        the backend connection and the session go with it.
        """
        server = self.serveLarge(LARGE)
        proxyPort = self.startProxy(
            {"big.bin": server.port}, clientTimeout=CLIENT_TIMEOUT
        )
        sock = rawClient(proxyPort, receiveBuffer=4096)
        self.addCleanup(sock.close)
        sock.sendall(b"GET big.bin 0\n")
        yield self.waitFor(lambda: self.proxy.sessions and self.session().clientPaused)
        session = self.session()
        pausedAt = reactor.seconds()

        yield self.waitFor(lambda: reactor.seconds() - pausedAt > CLIENT_TIMEOUT / 2)
        self.assertIn(session, self.proxy.sessions)
        self.assertTrue(session.clientPaused)
        self.assertLess(session.delivered, LARGE // 4)
        self.assertLess(server.sentBytes, LARGE // 2)
        self.assertLess(buffered(session.transport), 1024 * 1024)
        self.assertEqual(server.active, 1)
        transport = session.transport

        yield self.waitFor(lambda: not self.proxy.sessions)
        self.assertLess(session.delivered, LARGE // 4)
        self.assertLess(server.sentBytes, LARGE // 2)
        self.assertTrue(transport.disconnected)
        self.assertGreaterEqual(reactor.seconds() - pausedAt, CLIENT_TIMEOUT)
        yield self.waitFor(lambda: server.active == 0)
        self.assertEqual(callsOwnedBy([session]), [])
        (reason,) = self.lost
        self.assertTrue(reason.check(ConnectionLost), reason)


class SlowReaderTests(ClientFaultTestCase):
    """
    A client that keeps reading, slowly, in bursts.
    """

    timeout = 30

    @inlineCallbacks
    def test_notDropped(self) -> Any:
        """
        A client whose every pause is shorter than the client timeout is
        never dropped, even though the proxy had to stop reading the backend
        for it, and it gets the whole file.
        """
        size = 3 * 1024 * 1024
        server = self.serveLarge(size)
        proxyPort = self.startProxy({"big.bin": server.port}, clientTimeout=0.5)
        paused = []
        original = ProxySession.pauseProducing

        def recording(session: ProxySession) -> None:
            paused.append(reactor.seconds())
            original(session)

        self.patch(ProxySession, "pauseProducing", recording)
        reader = SlowReader(b"GET big.bin 0\n", burst=256 * 1024, pause=0.1)
        adopt(rawClient(proxyPort, receiveBuffer=4096), reader)

        received = yield reader.done

        payload, others = decodeAll(received)
        self.assertEqual(payload, bytes(size))
        self.assertEqual(others, [End()])
        self.assertNotEqual(paused, [])
        self.assertEqual(self.counted("reloc_proxy_errors_total", code="503"), 0)


class HalfCloseTestsMixin:
    """
    A client that closes its sending side, run against the proxy and against
    a file server; a subclass starts the server under test.
    """

    def startServer(self, size: int) -> tuple[int, Callable[[], int]]:
        """
        Start the server under test, serving C{big.bin} of C{size} zero
        bytes, with a request timeout of ten seconds.

        @return: its port, and how many connections it serves now.
        """
        raise NotImplementedError()

    @inlineCallbacks
    def test_afterRequest(self) -> Any:
        """
        A client that closes its sending side right after its request still
        gets the whole file, then C{EOF}, and the server closes.
        """
        size = 2 * 1024 * 1024 + 17
        port, active = self.startServer(size)
        client = HalfClosingClient(b"GET big.bin 0\n")
        reactor.connectTCP("127.0.0.1", port, OneClientFactory(client))

        received = yield client.done

        payload, others = decodeAll(received)
        self.assertEqual(payload, bytes(size))
        self.assertEqual(others, [End()])
        yield self.waitFor(lambda: active() == 0)

    @inlineCallbacks
    def test_insideRequest(self) -> Any:
        """
        A client that closes its sending side in the middle of its request
        can never finish it: it gets nothing and is closed at once, without
        waiting for the request timeout.
        """
        port, active = self.startServer(10)
        client = HalfClosingClient(b"GET big.bin")
        started = reactor.seconds()
        reactor.connectTCP("127.0.0.1", port, OneClientFactory(client))

        received = yield client.done

        self.assertEqual(received, b"")
        self.assertLess(reactor.seconds() - started, 5.0)
        yield self.waitFor(lambda: active() == 0)


class ProxyHalfCloseTests(HalfCloseTestsMixin, ClientFaultTestCase):
    """
    Half-close at the proxy.
    """

    def startServer(self, size: int) -> tuple[int, Callable[[], int]]:
        self.server = self.serveLarge(size)
        port = self.startProxy({"big.bin": self.server.port}, requestTimeout=10.0)
        return port, lambda: len(self.proxy.connections)

    @inlineCallbacks
    def test_insideRequest(self) -> Any:
        """
        No backend is asked for a request that was never finished.
        """
        yield HalfCloseTestsMixin.test_insideRequest(self)
        self.assertEqual(self.server.requests, [])
        self.assertEqual(self.proxy.sessions, set())


class FileServerHalfCloseTests(HalfCloseTestsMixin, ClientFaultTestCase):
    """
    Half-close at a file server.
    """

    def startServer(self, size: int) -> tuple[int, Callable[[], int]]:
        server = self.serveLarge(size)
        server.idleTimeout = 10.0
        return server.port, lambda: server.active


class ResetTests(ClientFaultTestCase):
    """
    A client that resets its connection in the middle of a stream.
    """

    @inlineCallbacks
    def test_resetMidStream(self) -> Any:
        """
        The session, its backend connection and its timers are gone soon
        after the reset.
        """
        server = self.serveLarge(16 * 1024 * 1024)
        proxyPort = self.startProxy({"big.bin": server.port})
        sessions: list[ProxySession] = []
        build = self.proxy.buildProtocol

        def keeping(addr: Any) -> Protocol:
            session = build(addr)
            sessions.append(session)
            return session

        self.proxy.buildProtocol = keeping
        client = ResettingClient(b"GET big.bin 0\n", after=100_000)
        reactor.connectTCP("127.0.0.1", proxyPort, OneClientFactory(client))

        received = yield client.done
        yield self.waitFor(lambda: not self.proxy.sessions)
        yield self.waitFor(lambda: server.active == 0)

        (session,) = sessions
        self.assertGreaterEqual(received, 100_000)
        self.assertLess(session.delivered, 16 * 1024 * 1024)
        self.assertTrue(session.finished)
        self.assertIsNone(session.leg)
        self.assertEqual(callsOwnedBy([session]), [])
        (reason,) = self.lost
        self.assertTrue(reason.check(ConnectionLost), reason)


class SlowlorisTests(SynchronousTestCase):
    """
    A client that sends its request one byte a second, on a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        routes = self.mktemp()
        with open(routes, "w") as f:
            f.write('{"big.bin": "10.0.0.11:5000", "x": "10.0.0.11:5000"}')
        self.factory = ProxyFactory(
            routes,
            self.reactor,
            self.reactor,
            policy=RetryPolicy(),
            requestTimeout=5.0,
        )

    def trickle(
        self, line: bytes, every: float, until: Callable[[StringTransport], bool]
    ) -> tuple[ProxySession, StringTransport, int]:
        """
        Send C{line} one byte each C{every} seconds until it is all sent or
        C{until} holds.

        @return: the session, its transport and the bytes sent.
        """
        session = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 4000))
        transport = StringTransport()
        session.makeConnection(transport)
        sent = 0
        while sent < len(line) and not until(transport):
            session.dataReceived(line[sent : sent + 1])
            sent += 1
            self.reactor.advance(every)
        return session, transport, sent

    def test_droppedAtRequestTimeout(self) -> None:
        """
        A request trickled one byte a second is dropped when the request
        timeout has passed, however much of it arrived, with no answer and
        no backend tried.
        """
        line = b"GET " + b"a" * 100 + b" 0\n"
        session, transport, sent = self.trickle(line, 1, lambda t: t.disconnected)
        self.assertEqual(sent, 5)
        self.assertEqual(self.reactor.seconds(), 5)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.reactor.tcpClients, [])
        session.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.factory.sessions, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_servedInTime(self) -> None:
        """
        A request trickled one byte each half second that is whole before the
        request timeout is served.
        """
        session, transport, sent = self.trickle(b"GET x 0\n", 0.5, lambda t: False)
        self.assertEqual(sent, 8)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 1)
