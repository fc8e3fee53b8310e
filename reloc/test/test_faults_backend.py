"""
Backend faults, with the real proxy and real file servers in one reactor on
loopback.

The old backend is a real file server behind a relay that passes its answer
on up to a chosen byte and then holds it, kills it (a reset, as when the
process dies), closes it, stalls it or follows it with garbage.  Other
backends here accept and never answer, or answer with a scripted stream that
breaks the framing or the file.  Every test checks what the client of the
proxy sees on its one connection: the exact file, or a correct prefix of it
and then C{ERR 503}; never a byte that is not the file's.

The jitter of the retry delays and the refusal of broken routes files are
timed on the fake reactor of L{reloc.test.test_proxy} instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import ClientCreator, ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from reloc import fileserver
from reloc.client import DownloadError, DownloadProtocol
from reloc.fileserver import FileServerFactory
from reloc.protocol import Identity, Request, dataHeader
from reloc.proxy import BackendLeg, ProxyFactory, ProxySession, RetryPolicy
from reloc.test import test_proxy as memory

FRAME = 1000
CONTENT = random.Random(3).randbytes(3 * FRAME + 123)
IDLINE = Identity(len(CONTENT), hashlib.sha256(CONTENT).hexdigest()).toLine()

#: Payload bytes the proxy has relayed when the old backend's answer is cut
#: at L{CUT}: after the C{ID} line, one header and this many payload bytes.
DELIVERED = 517
CUT = len(IDLINE) + len(dataHeader(FRAME)) + DELIVERED

#: Short timeouts, so that every fault is noticed within a fraction of a
#: second and a stream gives up after half a second.
POLICY = RetryPolicy(
    initialDelay=0.01,
    factor=2.0,
    maxDelay=0.05,
    jitter=0.2,
    deadline=0.5,
    connectTimeout=0.5,
    answerTimeout=0.2,
    stallTimeout=0.2,
)


def framed(content: bytes, frame: int = FRAME) -> bytes:
    """
    @return: C{content} as a run of C{DATA} frames of C{frame} bytes and C{EOF}.
    """
    chunks = [content[start : start + frame] for start in range(0, len(content), frame)]
    return b"".join(dataHeader(len(chunk)) + chunk for chunk in chunks) + b"EOF\n"


@dataclass
class Fault:
    """
    What a relay does to one connection's answer.

    @ivar kind: C{"hold"} keeps the rest back until released, C{"kill"}
        resets the connection, C{"close"} closes it, C{"stall"} keeps it open
        and silent, C{"garbage"} sends C{garbage} and closes.
    @ivar at: bytes of the answer passed on before the fault.
    """

    kind: str
    at: int
    garbage: bytes = b""


class RelayServer(Protocol):
    """
    The proxy's side of a relay: passes the request on to the file server
    and its answer back, until the fault.
    """

    factory: FaultyRelay
    upstream: RelayClient | None = None
    gone = False
    faulted = False
    upstreamClosed = False

    def connectionMade(self) -> None:
        self.pending = b""
        self.passed = 0
        self.held = b""
        self.fault = self.factory.takeFault()
        self.factory.relays.append(self)
        client = ClientCreator(reactor, RelayClient)
        d = client.connectTCP("127.0.0.1", self.factory.target)
        d.addCallbacks(self.upstreamConnected, self.upstreamFailed)

    def upstreamConnected(self, upstream: RelayClient) -> None:
        if self.gone:
            upstream.transport.abortConnection()
            return
        upstream.downstream = self
        self.upstream = upstream
        upstream.transport.write(self.pending)

    def upstreamFailed(self, reason: Failure) -> None:
        if not self.gone:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending += data
        else:
            self.upstream.transport.write(data)

    def answer(self, data: bytes) -> None:
        """
        Pass on bytes of the file server's answer, up to the fault.
        """
        if self.faulted:
            if self.fault is not None and self.fault.kind == "hold":
                self.held += data
            return
        if self.fault is None:
            self.transport.write(data)
            return
        piece = data[: self.fault.at - self.passed]
        self.passed += len(piece)
        self.transport.write(piece)
        if self.passed == self.fault.at:
            self.faulted = True
            self.factory.faultTimes.append(reactor.seconds())
            self.strike(data[len(piece) :])
            self.factory.onFault()

    def strike(self, rest: bytes) -> None:
        assert self.fault is not None and self.upstream is not None
        if self.fault.kind == "hold":
            self.held = rest
            self.upstream.transport.pauseProducing()
            return
        self.upstream.transport.abortConnection()
        if self.fault.kind == "kill":
            self.transport.abortConnection()
        elif self.fault.kind == "close":
            self.transport.loseConnection()
        elif self.fault.kind == "garbage":
            self.transport.write(self.fault.garbage)
            self.transport.loseConnection()
        # A stall leaves the connection open and silent.

    def release(self) -> None:
        """
        Pass on what a hold kept back, and the rest of the answer after it.
        """
        assert self.upstream is not None
        self.fault = None
        self.faulted = False
        self.transport.write(self.held)
        self.held = b""
        if self.upstreamClosed:
            self.transport.loseConnection()
        else:
            self.upstream.transport.resumeProducing()

    def kill(self) -> None:
        """
        Reset both sides, as when the backend's process dies.
        """
        self.faulted = True
        if self.upstream is not None:
            self.upstream.transport.abortConnection()
        self.transport.abortConnection()

    def upstreamLost(self) -> None:
        self.upstreamClosed = True
        if not self.faulted:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class RelayClient(Protocol):
    """
    The file server's side of a relay.
    """

    downstream: RelayServer

    def dataReceived(self, data: bytes) -> None:
        self.downstream.answer(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if hasattr(self, "downstream"):
            self.downstream.upstreamLost()


class FaultyRelay(Factory):
    """
    A relay in front of port C{target}; its first connections meet the
    faults in C{faults}, one each, and later ones are passed through whole.

    @ivar relays: every connection made, in order.
    @ivar faultTimes: when each fault struck.
    @ivar onFault: called after each fault struck.
    """

    protocol = RelayServer

    def __init__(
        self,
        target: int,
        faults: list[Fault],
        onFault: Callable[[], object] = lambda: None,
    ):
        self.target = target
        self.faults = list(faults)
        self.onFault = onFault
        self.relays: list[RelayServer] = []
        self.faultTimes: list[float] = []

    def takeFault(self) -> Fault | None:
        return self.faults.pop(0) if self.faults else None


class TimedFileServer(FileServerFactory):
    """
    A file server that remembers the requests it was sent, and when.
    """

    def __init__(self, base: str) -> None:
        super().__init__(base, reactor)
        self.requests: list[bytes] = []
        self.requestTimes: list[float] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = FileServerFactory.buildProtocol(self, addr)
        original = protocol.dataReceived

        def recording(data: bytes) -> None:
            self.requests.append(data)
            self.requestTimes.append(reactor.seconds())
            original(data)

        protocol.dataReceived = recording  # type: ignore[method-assign]
        return protocol


class SilentBackend(Protocol):
    """
    A backend that accepts a connection, reads the request and never answers.
    """

    factory: SilentFactory

    def connectionMade(self) -> None:
        self.factory.opened.append(reactor.seconds())

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.closed.append(reactor.seconds())


class SilentFactory(Factory):
    protocol = SilentBackend

    def __init__(self) -> None:
        self.opened: list[float] = []
        self.closed: list[float] = []


class ScriptedBackend(Protocol):
    """
    A backend that answers its first request with the pieces of
    C{factory.script}, whatever it was asked, a little apart so that each
    arrives in its own read, and closes.
    """

    factory: ScriptedFactory
    pending: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.factory.requests:
            return
        self.factory.requests.append(data)
        self.factory.onRequest()
        self.sendFrom(0)

    def sendFrom(self, index: int) -> None:
        if index == len(self.factory.script):
            self.transport.loseConnection()
            return
        self.transport.write(self.factory.script[index])
        self.pending = reactor.callLater(0.02, self.sendFrom, index + 1)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.pending is not None and self.pending.active():
            self.pending.cancel()


class ScriptedFactory(Factory):
    protocol = ScriptedBackend

    def __init__(self, script: list[bytes], onRequest: Callable[[], object]):
        self.script = script
        self.onRequest = onRequest
        self.requests: list[bytes] = []


class OneClientFactory(ClientFactory):
    def __init__(self, protocol: Protocol):
        self.protocol = protocol  # type: ignore[assignment]

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol  # type: ignore[return-value]


def rawClient(port: int, receiveBuffer: int | None = None) -> socket.socket:
    """
    @return: a blocking socket connected to a loopback port, with its
        receive buffer set before it connects when C{receiveBuffer} is given.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receiveBuffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.connect(("127.0.0.1", port))
    return sock


def adopt(sock: socket.socket, protocol: Protocol) -> None:
    """
    Hand a connected socket over to the reactor, driven by C{protocol}.
    """
    reactor.adoptStreamConnection(
        sock.fileno(), socket.AF_INET, OneClientFactory(protocol)
    )
    sock.close()


class BackendFaultTestCase(TestCase):
    """
    Start file servers, relays and a proxy on loopback ports chosen by the
    kernel, and check after each test that the proxy kept nothing.
    """

    timeout = 20

    def setUp(self) -> None:
        self.patch(fileserver, "CHUNK_SIZE", FRAME)
        self.routes = os.path.abspath(self.mktemp())
        self._version = 0

    def serve(self, content: bytes = CONTENT, name: str = "f.bin") -> TimedFileServer:
        """
        Start a file server whose folder holds C{content} as C{name}.
        """
        base = self.mktemp()
        os.makedirs(base)
        with open(os.path.join(base, name), "wb") as f:
            f.write(content)
        server = TimedFileServer(base)
        server.port = self.listen(server)
        return server

    def listen(self, factory: Factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def closedPort(self) -> int:
        """
        @return: a loopback port nothing listens on.
        """
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        port.stopListening()
        return number

    def relay(self, target: int, *faults: Fault) -> tuple[FaultyRelay, int]:
        """
        Start a relay in front of port C{target} with C{faults}.

        @return: the relay and its port; C{relay.listening} can stop it.
        """
        relay = FaultyRelay(target, list(faults))
        relay.listening = reactor.listenTCP(0, relay, interface="127.0.0.1")
        self.addCleanup(relay.listening.stopListening)
        return relay, relay.listening.getHost().port

    def startProxy(self, table: dict[str, int], **options: Any) -> int:
        """
        Start a proxy with C{table} (names to loopback ports) as its routes,
        and check after the test that its sessions all ended.

        @return: the proxy's port.
        """
        self.writeRoutes(table)
        self.proxy = ProxyFactory(
            self.routes, reactor, reactor, policy=POLICY, **options
        )
        self.clientConnections = 0
        build = self.proxy.buildProtocol

        def counting(addr: Any) -> Protocol:
            self.clientConnections += 1
            return build(addr)

        self.proxy.buildProtocol = counting  # type: ignore[method-assign]
        self.addCleanup(self.waitFor, lambda: not self.proxy.sessions)
        self.proxyPort = self.listen(self.proxy)
        return self.proxyPort

    def writeRoutes(self, table: dict[str, int]) -> None:
        """
        Replace the routes file atomically; each version gets its own
        modification time, so that the proxy sees it as changed.
        """
        self._version += 1
        temporary = f"{self.routes}.{self._version}"
        with open(temporary, "w") as f:
            json.dump({name: f"127.0.0.1:{port}" for name, port in table.items()}, f)
        stamp = self._version * 1_000_000_000
        os.utime(temporary, ns=(stamp, stamp))
        os.replace(temporary, self.routes)

    def download(
        self, proxyPort: int, name: str = "f.bin"
    ) -> tuple[DownloadProtocol, io.BytesIO]:
        """
        Connect a client that asks the proxy for C{name} with a plain C{GET}.

        @return: the client protocol and the sink its payload goes to.
        """
        sink = io.BytesIO()
        client = DownloadProtocol(Request(name, 0), sink, reactor, idleTimeout=10)
        reactor.connectTCP("127.0.0.1", proxyPort, OneClientFactory(client))
        return client, sink

    def counted(self, name: str, **labels: str) -> float:
        """
        @return: the value of one of the proxy's metrics, 0 if not yet made.
        """
        value = self.proxy.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def session(self) -> ProxySession:
        (session,) = self.proxy.sessions
        return session

    def delivered(self) -> int | None:
        """
        @return: the payload bytes the proxy's one session delivered, or
            L{None} before it exists.
        """
        if len(self.proxy.sessions) != 1:
            return None
        return self.session().delivered

    @inlineCallbacks
    def waitFor(self, condition: Callable[[], object], timeout: float = 5.0) -> Any:
        """
        Poll C{condition} on the reactor until it holds.
        """
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("condition never held")
            yield deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    @inlineCallbacks
    def assertGivesUp(
        self, client: DownloadProtocol, sink: io.BytesIO, delivered: int
    ) -> Any:
        """
        Assert that C{client} gets C{delivered} bytes of the file, then
        C{ERR 503}, and that its connection is closed.
        """
        error = yield self.assertFailure(client.done, DownloadError)
        self.assertEqual(str(error), "refused: ERR 503 no backend could continue")
        self.assertEqual(sink.getvalue(), CONTENT[:delivered])
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(self.proxy.sessions, set())


class BackendKilledTests(BackendFaultTestCase):
    """
    The backend dies in the middle of a payload.
    """

    @inlineCallbacks
    def test_killedThenRouted(self) -> Any:
        """
        A backend reset in the middle of a payload, with nothing listening
        where it was, is retried until the routes name a live copy; the
        stream then completes with the exact file on the same connection.
        """
        old = self.serve()
        new = self.serve()
        relay, relayPort = self.relay(old.port, Fault("hold", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: self.delivered() == DELIVERED)

        yield relay.listening.stopListening()
        relay.relays[0].kill()
        yield self.waitFor(lambda: self.counted("reloc_proxy_retries_total") >= 3)
        self.assertEqual(sink.getvalue(), CONTENT[:DELIVERED])
        self.writeRoutes({"f.bin": new.port})
        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(self.clientConnections, 1)
        self.assertEqual(len(relay.relays), 1)
        self.assertEqual(old.requests, [b"GETID f.bin 0\n"])
        self.assertEqual(new.requests, [b"GETID f.bin %d\n" % (DELIVERED,)])

    @inlineCallbacks
    def test_killedNoCopy(self) -> Any:
        """
        A backend reset in the middle of a payload, with no copy anywhere,
        ends the stream after the deadline with the bytes relayed so far and
        C{ERR 503}.
        """
        old = self.serve()
        relay, relayPort = self.relay(old.port, Fault("hold", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: self.delivered() == DELIVERED)
        self.writeRoutes({"f.bin": self.closedPort()})
        killedAt = reactor.seconds()

        relay.relays[0].kill()
        yield self.assertGivesUp(client, sink, DELIVERED)

        self.assertGreaterEqual(reactor.seconds() - killedAt, POLICY.deadline)
        self.assertEqual(len(relay.relays), 1)


class SilentBackendTests(BackendFaultTestCase):
    """
    The backend accepts the connection and never answers.
    """

    @inlineCallbacks
    def test_silentThenRouted(self) -> Any:
        """
        A backend that never answers is dropped after the answer timeout and
        tried again; once the routes name a live copy the stream completes.
        """
        silent = SilentFactory()
        good = self.serve()
        proxyPort = self.startProxy({"f.bin": self.listen(silent)})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: len(silent.closed) >= 2)

        self.writeRoutes({"f.bin": good.port})
        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(good.requests, [b"GETID f.bin 0\n"])
        yield self.waitFor(lambda: len(silent.closed) == len(silent.opened))
        first = silent.closed[0] - silent.opened[0]
        self.assertGreaterEqual(first, POLICY.answerTimeout * 0.9)

    @inlineCallbacks
    def test_silentUntilDeadline(self) -> Any:
        """
        When the only backend never answers, the client gets C{ERR 503} and
        is closed once the deadline has passed, and every connection to the
        silent backend is closed.
        """
        silent = SilentFactory()
        proxyPort = self.startProxy({"f.bin": self.listen(silent)})
        started = reactor.seconds()
        client, sink = self.download(proxyPort)

        yield self.assertGivesUp(client, sink, 0)

        elapsed = reactor.seconds() - started
        self.assertGreaterEqual(elapsed, POLICY.answerTimeout + POLICY.deadline)
        self.assertGreater(len(silent.opened), 1)
        yield self.waitFor(lambda: len(silent.closed) == len(silent.opened))

    @inlineCallbacks
    def test_refusedUntilDeadline(self) -> Any:
        """
        When nothing listens where the route points, the client gets
        C{ERR 503} and is closed once the deadline has passed.
        """
        proxyPort = self.startProxy({"f.bin": self.closedPort()})
        started = reactor.seconds()
        client, sink = self.download(proxyPort)

        yield self.assertGivesUp(client, sink, 0)

        self.assertGreaterEqual(reactor.seconds() - started, POLICY.deadline)
        self.assertGreater(self.counted("reloc_proxy_retries_total"), 2)


class StalledBackendTests(BackendFaultTestCase):
    """
    The backend stops sending in the middle of a payload and keeps its
    connection open.
    """

    @inlineCallbacks
    def test_stallThenRouted(self) -> Any:
        """
        A backend that stalls inside a payload is dropped once the stall
        timeout has passed, the routes are read again, and the stream
        completes from the live copy they name, from the exact byte.
        """
        old = self.serve()
        new = self.serve()
        relay, relayPort = self.relay(old.port, Fault("stall", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: relay.faultTimes)
        self.writeRoutes({"f.bin": new.port})

        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(self.clientConnections, 1)
        self.assertEqual(new.requests, [b"GETID f.bin %d\n" % (DELIVERED,)])
        noticed = new.requestTimes[0] - relay.faultTimes[0]
        self.assertGreaterEqual(noticed, POLICY.stallTimeout * 0.9)
        yield self.waitFor(lambda: relay.relays[0].gone)

    @inlineCallbacks
    def test_stallUntilDeadline(self) -> Any:
        """
        A backend that stalls inside a payload, with no other backend for
        the name, ends the stream with the bytes relayed so far and
        C{ERR 503}, and its connection is closed.
        """
        old = self.serve()
        relay, relayPort = self.relay(old.port, Fault("stall", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: relay.faultTimes)
        self.writeRoutes({"f.bin": self.closedPort()})

        yield self.assertGivesUp(client, sink, DELIVERED)

        elapsed = reactor.seconds() - relay.faultTimes[0]
        self.assertGreaterEqual(elapsed, POLICY.stallTimeout + POLICY.deadline)
        yield self.waitFor(lambda: relay.relays[0].gone)


class MalformedBackendTests(BackendFaultTestCase):
    """
    The backend's answer breaks the framing or the stream in a way the
    deterministic proxy tests do not cover.
    """

    @inlineCallbacks
    def brokenThenRouted(self, script: list[bytes], delivered: int) -> Any:
        """
        Assert that a backend answering with the pieces of C{script} is
        dropped after the proxy relayed C{delivered} bytes, and that the
        client gets exactly the file from the live copy the routes name by
        then.
        """
        good = self.serve()
        scripted = ScriptedFactory(
            script, lambda: self.writeRoutes({"f.bin": good.port})
        )
        proxyPort = self.startProxy({"f.bin": self.listen(scripted)})
        client, sink = self.download(proxyPort)

        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(self.clientConnections, 1)
        self.assertEqual(scripted.requests, [b"GETID f.bin 0\n"])
        self.assertEqual(good.requests, [b"GETID f.bin %d\n" % (delivered,)])

    def test_morePayloadThanAnnounced(self) -> Deferred[None]:
        """
        A frame that carries more bytes than its header announced is broken:
        the announced bytes are relayed, the extra ones are not.
        """
        script = [IDLINE + dataHeader(10) + CONTENT[:10], CONTENT[10:15]]
        script.append(framed(CONTENT[15:]))
        return self.brokenThenRouted(script, 10)

    def test_errorLineMidStream(self) -> Deferred[None]:
        """
        An C{ERR 500} after some frames is not passed on; the stream resumes
        where it was.
        """
        script = [IDLINE + framed(CONTENT[:1500])[:-4], b"ERR 500 disk failed\n"]
        return self.brokenThenRouted(script, 1500)

    def test_notFoundMidStream(self) -> Deferred[None]:
        """
        An C{ERR 404} in the middle of a stream is not passed on, as it would
        be before the first byte; the stream resumes where it was.
        """
        script = [IDLINE + framed(CONTENT[:1500])[:-4], b"ERR 404 no such file\n"]
        return self.brokenThenRouted(script, 1500)

    def test_endBeforeSize(self) -> Deferred[None]:
        """
        An C{EOF} before the size the C{ID} line announced is not passed on;
        the stream resumes where it was.
        """
        script = [IDLINE + framed(CONTENT[:1500])[:-4], b"EOF\n"]
        return self.brokenThenRouted(script, 1500)

    def test_garbageInsideHeader(self) -> Deferred[None]:
        """
        Bytes that are no header, sent where a header is due, are not passed
        on; the stream resumes after the last whole payload byte.
        """
        script = [IDLINE + framed(CONTENT[:FRAME])[:-4], b"DA\x00\xffTA 12\n"]
        return self.brokenThenRouted(script, FRAME)


class RouteRemovedTests(BackendFaultTestCase):
    """
    The stream's route is removed while the stream runs.
    """

    @inlineCallbacks
    def streamHeldWithRouteRemoved(self) -> Any:
        """
        Start a stream held at L{CUT}, then remove its route, leaving a
        route for another name to a server that also holds C{f.bin}.

        @return: the client, its sink, the relay and the other server.
        """
        old = self.serve()
        other = self.serve()
        relay, relayPort = self.relay(old.port, Fault("hold", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: self.delivered() == DELIVERED)
        self.writeRoutes({"g.bin": other.port})
        self.assertTrue(self.proxy.reload())
        return client, sink, relay, other

    @inlineCallbacks
    def test_streamStays(self) -> Any:
        """
        A removed route leaves the running stream on its backend, which
        carries it to the end; nothing else is asked for the file.
        """
        client, sink, relay, other = yield self.streamHeldWithRouteRemoved()
        self.assertIsNone(self.session().candidate)

        relay.relays[0].release()
        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(len(relay.relays), 1)
        self.assertEqual(other.requests, [])

    @inlineCallbacks
    def test_breakWithoutRoute(self) -> Any:
        """
        A stream whose route was removed and whose backend then dies is
        spliced with nothing: after the deadline the client has the bytes
        relayed so far and C{ERR 503}.
        """
        client, sink, relay, other = yield self.streamHeldWithRouteRemoved()

        relay.relays[0].kill()
        yield self.assertGivesUp(client, sink, DELIVERED)

        self.assertEqual(len(relay.relays), 1)
        self.assertEqual(other.requests, [])

    @inlineCallbacks
    def test_routeToServerWithoutFile(self) -> Any:
        """
        A stream whose backend dies while the routes name a server that does
        not have the file is not spliced, and the server's C{ERR 404} is not
        passed on: the client gets C{ERR 503} after the deadline.
        """
        old = self.serve()
        empty = self.serve(name="other.bin")
        relay, relayPort = self.relay(old.port, Fault("hold", CUT))
        proxyPort = self.startProxy({"f.bin": relayPort})
        client, sink = self.download(proxyPort)
        yield self.waitFor(lambda: self.delivered() == DELIVERED)
        self.writeRoutes({"f.bin": empty.port})

        relay.relays[0].kill()
        yield self.assertGivesUp(client, sink, DELIVERED)

        self.assertGreater(len(empty.requests), 1)
        self.assertEqual(set(empty.requests), {b"GETID f.bin %d\n" % (DELIVERED,)})

    @inlineCallbacks
    def test_newRequestRefused(self) -> Any:
        """
        Once the route is gone, a new request for the name gets C{ERR 404}
        at once and is closed, and no backend is asked.
        """
        client, sink, relay, other = yield self.streamHeldWithRouteRemoved()
        started = reactor.seconds()

        second, secondSink = self.download(self.proxyPort)
        error = yield self.assertFailure(second.done, DownloadError)

        self.assertEqual(str(error), "refused: ERR 404 no route for this name")
        self.assertLess(reactor.seconds() - started, POLICY.answerTimeout)
        self.assertEqual(secondSink.getvalue(), b"")
        self.assertEqual(len(relay.relays), 1)
        self.assertEqual(other.requests, [])
        relay.relays[0].release()
        count = yield client.done
        self.assertEqual(count, len(CONTENT))


class ReloadBurstTests(BackendFaultTestCase):
    """
    Many reloads in a burst, flipping the routes between two good backends
    while several streams run.
    """

    timeout = 30

    def setUp(self) -> None:
        super().setUp()
        self.legs: dict[ProxySession, list[BackendLeg]] = {}
        connect = ProxySession._connect

        def recording(session: ProxySession, address: Any) -> BackendLeg:
            leg = connect(session, address)
            self.legs.setdefault(session, []).append(leg)
            return leg

        self.patch(ProxySession, "_connect", recording)
        self.orphans: list[BackendLeg] = []
        receive = BackendLeg.dataReceived

        def watching(leg: BackendLeg, data: bytes) -> None:
            session = leg.session
            if not leg.retired and leg not in (session.leg, session.candidate):
                self.orphans.append(leg)
            receive(leg, data)

        self.patch(BackendLeg, "dataReceived", watching)

    def checkLegs(self) -> None:
        """
        Assert that each session's live legs are its current leg and at most
        one candidate, that the candidate is for the backend the routes name,
        that a finished session has no live leg, and that no leg ever took
        bytes while it was neither.
        """
        self.assertEqual(self.orphans, [])
        for session, legs in self.legs.items():
            live = [leg for leg in legs if not leg.retired]
            if session.finished:
                self.assertEqual(live, [])
                continue
            for leg in live:
                self.assertIn(leg, (session.leg, session.candidate))
            self.assertLessEqual(len(live), 2)
            if session.candidate is not None:
                route = self.proxy.routes["f.bin"]
                self.assertEqual(session.candidate.address, route)

    @inlineCallbacks
    def test_burst(self) -> Any:
        """
        Every stream completes with the exact file on its one connection,
        streams do move, and no stream ever holds more than one candidate,
        or one for a backend the routes no longer name.
        """
        # Big enough, and read slowly enough through small socket buffers,
        # that the proxy streams it for a second or more.
        self.patch(fileserver, "CHUNK_SIZE", 16 * 1024)
        content = random.Random(5).randbytes(6 * 1024 * 1024 + 7)
        identity = Identity(len(content), hashlib.sha256(content).hexdigest())
        servers = [self.serve(content) for _ in range(3)]
        proxyPort = self.startProxy({"f.bin": servers[0].port})
        clients = []
        for _ in range(4):
            sink = io.BytesIO()
            client = DownloadProtocol(
                Request("f.bin", 0, identify=True),
                sink,
                reactor,
                rate=4 * 1024 * 1024,
                idleTimeout=10,
            )
            adopt(rawClient(proxyPort, receiveBuffer=16 * 1024), client)
            clients.append((client, sink))
        yield self.waitFor(
            lambda: (
                len(self.proxy.sessions) == len(clients)
                and all(session.leg for session in self.proxy.sessions)
            )
        )
        draw = random.Random(9)
        reloads = 0

        while not all(client.done.called for client, _ in clients):
            for _ in range(draw.choice([1, 1, 2, 5])):
                self.writeRoutes({"f.bin": draw.choice(servers).port})
                self.assertTrue(self.proxy.reload())
                reloads += 1
                self.checkLegs()
            yield deferLater(reactor, draw.uniform(0, 0.03), lambda: None)
            self.checkLegs()

        for client, sink in clients:
            count = yield client.done
            self.assertEqual(count, len(content))
            self.assertEqual(sink.getvalue(), content)
            self.assertEqual(client.identity, identity)
        self.assertEqual(self.clientConnections, len(clients))
        moves = self.counted("reloc_proxy_moves_total", reason="reload")
        self.assertGreater(moves, 0)
        self.assertGreater(reloads, 20)
        requests = [r for server in servers for r in server.requests]
        resumed = [r for r in requests if r != b"GETID f.bin 0\n"]
        self.assertNotEqual(resumed, [])
        yield self.waitFor(lambda: not self.proxy.sessions)
        self.checkLegs()


class RetryJitterTests(memory.ProxyTestCase):
    """
    The random stretch of the retry delays, on a fake clock.
    """

    def setUp(self) -> None:
        super().setUp()
        self.factory.policy = RetryPolicy(
            initialDelay=1,
            factor=2,
            maxDelay=4,
            jitter=0.5,
            deadline=100,
            connectTimeout=5,
            answerTimeout=3,
            stallTimeout=8,
        )

    def refuseAll(self, handled: int) -> int:
        """
        Refuse every backend connection attempt after the first C{handled}.

        @return: how many attempts have been handled now.
        """
        for _, _, factory, _, _ in self.reactor.tcpClients[handled:]:
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        return len(self.reactor.tcpClients)

    def test_delaysStretched(self) -> None:
        """
        After the immediate first retry, each delay is the policy's delay
        stretched by the jitter fraction of a fresh random draw.
        """
        draws = iter([1.0, 0.5, 0.0, 0.25, 0.75])
        self.factory.random = lambda: next(draws)
        self.openStream()
        handled = 0
        attempts = [self.reactor.seconds()]
        while len(attempts) < 7:
            handled = self.refuseAll(handled)
            due = min(call.getTime() for call in self.reactor.getDelayedCalls())
            self.reactor.advance(due - self.reactor.seconds())
            self.assertEqual(len(self.reactor.tcpClients), handled + 1)
            attempts.append(self.reactor.seconds())
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        expected = [0, 1 * 1.5, 2 * 1.25, 4 * 1.0, 4 * 1.125, 4 * 1.375]
        for gap, delay in zip(gaps, expected, strict=True):
            self.assertAlmostEqual(gap, delay, places=6)

    def test_streamsApart(self) -> None:
        """
        Two streams whose backend refuses them at the same moment do not
        retry in lock step.
        """
        self.factory.random = random.Random(4).random
        self.openStream()
        self.openStream()
        handled = 0
        times: dict[ProxySession, list[float]] = {}
        while self.reactor.seconds() < 20:
            for _, _, factory, _, _ in self.reactor.tcpClients[handled:]:
                times.setdefault(factory.leg.session, []).append(self.reactor.seconds())
            handled = self.refuseAll(handled)
            due = min(call.getTime() for call in self.reactor.getDelayedCalls())
            self.reactor.advance(due - self.reactor.seconds())
        first, second = times.values()
        self.assertEqual(first[:2], second[:2])
        self.assertGreater(len(first), 4)
        self.assertEqual(set(first[2:]) & set(second[2:]), set())


class RoutesRefusedTests(memory.ProxyTestCase):
    """
    Routes files that cannot be used, met by a reload while a stream runs.
    """

    def assertRefusedFor(self, raw: bytes, why: str) -> None:
        """
        Assert that a reload of C{raw} is refused and logged with a reason
        that holds C{why}, that the table in force stays, and that the
        running stream carries on where it was to its end.
        """
        session, transport, old, oldTransport = self.streamingSession(500)
        self.writeRoutesBytes(raw)
        with capturedLogs() as events:
            self.assertFalse(self.factory.reload())
        (refused,) = [e for e in events if e.get("event") == "routes.refused"]
        self.assertIn(why, refused["why"])
        self.assertEqual(self.factory.routes, {memory.NAME: memory.OLD})
        self.assertIs(session.leg, old)
        self.assertIsNone(session.candidate)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.feed(old, memory.framed(memory.CONTENT)[len(memory.IDLINE) + 500 :])
        self.assertComplete(transport)
        self.assertClean()

    def test_empty(self) -> None:
        """
        An empty routes file is refused.
        """
        self.assertRefusedFor(b"", "not JSON")

    def test_halfWritten(self) -> None:
        """
        A routes file cut half-way through its writing is refused.
        """
        table = {memory.NAME: str(memory.NEW), "other.bin": str(memory.NEW)}
        raw = json.dumps(table).encode()
        self.assertRefusedFor(raw[: len(raw) // 2], "not JSON")

    def test_addressWithoutPort(self) -> None:
        """
        A route whose value has no port is refused, and the reason names it.
        """
        self.assertRefusedFor(b'{"big.bin": "10.0.0.12"}', "not host:port")

    def test_addressNotString(self) -> None:
        """
        A route whose value is a number is refused.
        """
        self.assertRefusedFor(b'{"big.bin": 5001}', "bad address for 'big.bin'")

    def test_nameEscapes(self) -> None:
        """
        A route for a name that climbs out of the served folder is refused.
        """
        self.assertRefusedFor(b'{"../big.bin": "10.0.0.12:5001"}', "bad name")

    def test_breakAfterRefusal(self) -> None:
        """
        A stream that breaks after a refused reload is retried on the table
        still in force.
        """
        session, transport, old, oldTransport = self.streamingSession(500)
        self.writeRoutesBytes(b'{"big.bin": ')
        self.assertFalse(self.factory.reload())

        old.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)

        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.lastAttempt(), (memory.OLD.host, memory.OLD.port))

    def test_goodAfterRefusal(self) -> None:
        """
        A good routes file after a refused one is taken, and moves the
        stream.
        """
        session, transport, old, oldTransport = self.streamingSession(500)
        self.writeRoutesBytes(b"")
        self.assertFalse(self.factory.reload())

        self.writeRoutes({memory.NAME: str(memory.NEW)})
        self.assertTrue(self.factory.reload())

        self.assertEqual(self.factory.routes, {memory.NAME: memory.NEW})
        self.assertEqual(self.lastAttempt(), (memory.NEW.host, memory.NEW.port))
        self.assertIsNotNone(session.candidate)
