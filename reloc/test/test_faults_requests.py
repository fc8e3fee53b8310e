"""
Hostile requests, written once and run against both servers: the file server
on an in-memory transport, and the proxy on a fake reactor with a real file
server behind it, joined in memory by L{twisted.test.iosim}.

Every hostile request gets the C{ERR} code the spec names and a closed
connection, and no answer ever holds a byte of the secret file that lies
just outside the served folder.  The last tests, on real sockets, check the
connection limit of both servers.
"""

from __future__ import annotations

import json
import os
import random
import stat
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from reloc.fileserver import FileServerFactory
from reloc.protocol import MAX_REQUEST_LINE, End, FrameDecoder, Payload, Refusal
from reloc.proxy import ProxyFactory, RetryPolicy
from reloc.test.test_faults_backend import OneClientFactory, TimedFileServer

CONTENT = random.Random(17).randbytes(4321)

#: The secret's bytes, in a file next to the served folder, as C{x}.
SECRET = b"the secret that must never leave: " + random.Random(1).randbytes(64)

#: Seconds a client may take to send its request.
REQUEST_TIMEOUT = 5.0


def runNow(f: Any, *args: Any) -> Deferred[str]:
    """
    Run a digest computation at once, on the calling thread.
    """
    return maybeDeferred(f, *args)


def decodeAll(data: bytes) -> tuple[bytes, list[object]]:
    """
    @return: the payload of a frame stream and its other events.
    """
    events = FrameDecoder().feed(data)
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    return payload, [e for e in events if not isinstance(e, Payload)]


class HostileRequestsMixin:
    """
    Hostile requests; a subclass provides the server under test.

    @ivar base: the served folder; it holds C{f.bin} (L{CONTENT}) and a
        folder C{sub}, and its parent holds C{x} (L{SECRET}).
    """

    base: str

    def makeFolder(self) -> None:
        """
        Make the served folder and the secret beside it.
        """
        parent = os.path.abspath(self.mktemp())
        self.base = os.path.join(parent, "served")
        os.makedirs(os.path.join(self.base, "sub"))
        with open(os.path.join(self.base, "f.bin"), "wb") as f:
            f.write(CONTENT)
        with open(os.path.join(parent, "x"), "wb") as f:
            f.write(SECRET)

    def connect(self) -> tuple[Protocol, StringTransport]:
        """
        @return: a new connection to the server under test, and its client
            side transport.
        """
        raise NotImplementedError()

    def settle(self) -> None:
        """
        Let the server under test (and anything behind it) finish what the
        bytes received so far set off.
        """
        raise NotImplementedError()

    def advance(self, seconds: float) -> None:
        """
        Move the server's clock on by C{seconds}.
        """
        raise NotImplementedError()

    def ask(self, data: bytes, byteByByte: bool = False) -> StringTransport:
        """
        Send C{data} on a new connection, whole or one byte at a time.

        @return: the connection's transport once the server has settled.
        """
        protocol, transport = self.connect()
        pieces = [data[i : i + 1] for i in range(len(data))] if byteByByte else [data]
        for piece in pieces:
            protocol.dataReceived(piece)
            self.settle()
        return transport

    def assertRefused(self, line: bytes, code: int, reason: str | None = None) -> None:
        """
        Assert that C{line}, sent whole and then one byte at a time, gets one
        C{ERR code} line (with C{reason}, when given), nothing else, and a
        closed connection.
        """
        for byteByByte in (False, True):
            transport = self.ask(line, byteByByte)
            value = transport.value()
            self.assertNotIn(SECRET[-32:], value)
            self.assertEqual(value.count(b"\n"), 1, value)
            (refusal,) = FrameDecoder().feed(value)
            self.assertIsInstance(refusal, Refusal)
            self.assertEqual(refusal.code, code, value)
            if reason is not None:
                self.assertEqual(refusal.reason, reason)
            self.assertTrue(transport.disconnecting)

    def assertServed(self, line: bytes, content: bytes) -> None:
        """
        Assert that C{line} gets C{content} in frames, then C{EOF}.
        """
        transport = self.ask(line)
        payload, others = decodeAll(transport.value())
        self.assertEqual(payload, content)
        self.assertEqual(others, [End()])
        self.assertTrue(transport.disconnecting)

    def test_dotDot(self) -> None:
        """
        A name that starts with C{..} is refused with 403.
        """
        self.assertRefused(b"GET ../x 0\n", 403)

    def test_dotDotInside(self) -> None:
        """
        A name that climbs out through C{..} in its middle is refused with 403.
        """
        self.assertRefused(b"GET sub/../../x 0\n", 403)

    def test_dotDotAfterMissingFolder(self) -> None:
        """
        A name that climbs out from a folder that does not exist is refused
        with 403.
        """
        self.assertRefused(b"GET a/../../x 0\n", 403)

    def test_dotComponent(self) -> None:
        """
        A name with a C{.} component is refused with 403.
        """
        self.assertRefused(b"GET ./f.bin 0\n", 403)

    def test_emptyComponents(self) -> None:
        """
        Names with a trailing or a doubled slash are refused with 403.
        """
        self.assertRefused(b"GET f.bin/ 0\n", 403)
        self.assertRefused(b"GET sub//f.bin 0\n", 403)

    def test_absolute(self) -> None:
        """
        An absolute name, even one that names the secret itself, is refused
        with 403.
        """
        secret = os.path.join(os.path.dirname(self.base), "x").encode()
        self.assertRefused(b"GET " + secret + b" 0\n", 403)
        self.assertRefused(b"GET /etc/passwd 0\n", 403)

    def test_encodedDots(self) -> None:
        """
        URL-encoded dots are not decoded: the name is looked up as written,
        and there is no such file.
        """
        self.assertRefused(b"GET %2e%2e/x 0\n", 404, "no such file")
        self.assertRefused(b"GET %2E%2E%2Fx 0\n", 404, "no such file")

    def test_lookalikeDots(self) -> None:
        """
        Full-width dots are not dots: the name is looked up as written.
        """
        self.assertRefused("GET \uff0e\uff0e/x 0\n".encode(), 404, "no such file")

    def test_backslashes(self) -> None:
        """
        Backslashes are not separators: the name is looked up as written.
        """
        self.assertRefused(b"GET ..\\x 0\n", 404, "no such file")

    def test_overlongUtf8Dots(self) -> None:
        """
        Dots and a slash in overlong UTF-8 are not UTF-8, and are refused
        with 400.
        """
        self.assertRefused(b"GET \xc0\xae\xc0\xae\xc0\xafx 0\n", 400)

    def test_negativeOffset(self) -> None:
        """
        A negative offset is refused with 400.
        """
        self.assertRefused(b"GET f.bin -1\n", 400)

    def test_signedOffset(self) -> None:
        """
        An offset with a plus sign is refused with 400.
        """
        self.assertRefused(b"GET f.bin +5\n", 400)

    def test_hexOffset(self) -> None:
        """
        A hexadecimal offset is refused with 400.
        """
        self.assertRefused(b"GET f.bin 0x10\n", 400)

    def test_underscoreOffset(self) -> None:
        """
        An offset with an underscore, which Python's C{int()} takes, is
        refused with 400.
        """
        self.assertRefused(b"GET f.bin 1_000\n", 400)

    def test_otherScriptsDigits(self) -> None:
        """
        Arabic-Indic and full-width digits, which Python's C{int()} takes,
        are refused with 400.
        """
        self.assertRefused("GET f.bin \u0661\u0662\n".encode(), 400)
        self.assertRefused("GET f.bin \uff11\uff12\n".encode(), 400)

    def test_exponentOffset(self) -> None:
        """
        An offset written with an exponent is refused with 400.
        """
        self.assertRefused(b"GET f.bin 1e3\n", 400)

    def test_spaceInsideOffset(self) -> None:
        """
        An offset with a space inside is refused with 400.
        """
        self.assertRefused(b"GET f.bin 1 0\n", 400)

    def test_missingOffset(self) -> None:
        """
        A request with an empty offset is refused with 400.
        """
        self.assertRefused(b"GET f.bin \n", 400)

    def test_offsetBeyondSize(self) -> None:
        """
        An offset one past the end of the file is refused with 416.
        """
        self.assertRefused(b"GET f.bin %d\n" % (len(CONTENT) + 1,), 416)

    def test_offsetBeyondInt64(self) -> None:
        """
        Offsets past 2**63 and 2**64 are refused with 416, not a crash.
        """
        self.assertRefused(b"GET f.bin %d\n" % (2**63,), 416)
        self.assertRefused(b"GET f.bin %d\n" % (2**64 + 1,), 416)

    def test_offsetThousandsOfDigits(self) -> None:
        """
        An offset of 4000 digits, near Python's limit for converting digits
        to an integer, is refused with 416, not a crash.
        """
        self.assertRefused(b"GET f.bin 9" + b"0" * 3999 + b"\n", 416)

    def test_offsetLeadingZeros(self) -> None:
        """
        Leading zeros are plain digits: the offset is read as decimal.
        """
        self.assertServed(b"GET f.bin 0000010\n", CONTENT[10:])

    def test_crlf(self) -> None:
        """
        A request that ends in CRLF is served.
        """
        self.assertServed(b"GET f.bin 0\r\n", CONTENT)

    def test_missingLf(self) -> None:
        """
        A request with no LF is not answered, and is dropped without a word
        once the request timeout passes.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET f.bin 0")
        self.settle()
        self.advance(REQUEST_TIMEOUT - 0.1)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        self.advance(0.1)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)

    def test_megabyteLine(self) -> None:
        """
        A 1 MiB line with no LF is refused with 400 as soon as it passes the
        limit, and the rest of it is read and dropped.
        """
        protocol, transport = self.connect()
        chunk = b"GET " + b"a" * 1020
        sent = 0
        while not transport.value():
            self.assertLessEqual(sent, MAX_REQUEST_LINE)
            protocol.dataReceived(chunk)
            sent += len(chunk)
            self.settle()
        for _ in range(1024 * 1024 // len(chunk)):
            protocol.dataReceived(chunk)
        self.settle()
        value = transport.value()
        self.assertTrue(value.startswith(b"ERR 400 "), value)
        self.assertEqual(value.count(b"\n"), 1, value)
        self.assertTrue(transport.disconnecting)

    def test_nulByte(self) -> None:
        """
        A name with a NUL byte is refused with 400.
        """
        self.assertRefused(b"GET f.bin\x00 0\n", 400)
        self.assertRefused(b"GET \x00 0\n", 400)

    def test_invalidUtf8(self) -> None:
        """
        A name that is not UTF-8 is refused with 400.
        """
        self.assertRefused(b"GET f\xff.bin 0\n", 400)

    def test_controlCharacter(self) -> None:
        """
        A name with a control character is refused with 400.
        """
        self.assertRefused(b"GET f\x1b[2J.bin 0\n", 400)

    def test_extraFields(self) -> None:
        """
        A request with a field too many is refused with 400.
        """
        self.assertRefused(b"GET f.bin 0 0\n", 400)
        self.assertRefused(b"GET f.bin 0 HTTP/1.1\r\n", 400)

    def test_doubleSpace(self) -> None:
        """
        Fields apart by two spaces or a tab are refused with 400.
        """
        self.assertRefused(b"GET  f.bin 0\n", 400)
        self.assertRefused(b"GET\tf.bin\t0\n", 400)

    def test_lowerCaseVerbs(self) -> None:
        """
        Verbs not in upper case are refused with 400.
        """
        for verb in (b"get", b"Get", b"getid", b"GetId"):
            self.assertRefused(verb + b" f.bin 0\n", 400)

    def test_otherVerb(self) -> None:
        """
        A verb of another protocol is refused with 400.
        """
        self.assertRefused(b"PUT f.bin 0\n", 400)

    def test_emptyLine(self) -> None:
        """
        An empty line, with or without a CR, is refused with 400.
        """
        self.assertRefused(b"\n", 400)
        self.assertRefused(b"\r\n", 400)

    def test_onlyCarriageReturns(self) -> None:
        """
        A CR in the middle of the line is not a line end, and a request cut
        by one is refused with 400.
        """
        self.assertRefused(b"GET f.bin\r0\n", 400)

    def test_secondRequestIgnored(self) -> None:
        """
        A second request on the same connection, after a refused one, gets
        no answer of its own.
        """
        transport = self.ask(b"GET ../x 0\nGET f.bin 0\n")
        value = transport.value()
        self.assertTrue(value.startswith(b"ERR 403 "), value)
        self.assertEqual(value.count(b"\n"), 1, value)


class FileServerHostileTests(HostileRequestsMixin, SynchronousTestCase):
    """
    Hostile requests to the file server, and hostile files in its folder.
    """

    def setUp(self) -> None:
        self.makeFolder()
        self.clock = MemoryReactorClock()
        self.factory = FileServerFactory(
            self.base, self.clock, REQUEST_TIMEOUT, runInThread=runNow
        )
        self.transports: list[StringTransport] = []

    def connect(self) -> tuple[Protocol, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return protocol, transport

    def settle(self) -> None:
        for transport in self.transports:
            while transport.producer is not None:
                transport.producer.resumeProducing()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def test_deviceFile(self) -> None:
        """
        A character device in the folder (here one like C{/dev/zero}, which
        would never end) is refused with 404.
        """
        try:
            os.mknod(os.path.join(self.base, "zero"), stat.S_IFCHR | 0o600, 0x105)
        except PermissionError:
            raise SkipTest("making a device file needs CAP_MKNOD") from None
        self.assertRefused(b"GET zero 0\n", 404)

    def test_symlinkLoop(self) -> None:
        """
        A symlink that leads to itself is refused with 404.
        """
        os.symlink("loop", os.path.join(self.base, "loop"))
        self.assertRefused(b"GET loop 0\n", 404)

    def test_danglingSymlink(self) -> None:
        """
        A symlink to nothing is refused with 404.
        """
        os.symlink("nothing", os.path.join(self.base, "dangling"))
        self.assertRefused(b"GET dangling 0\n", 404)

    def test_symlinkChainOutside(self) -> None:
        """
        A symlink to a symlink inside that leads outside is refused with 403.
        """
        os.symlink("../../x", os.path.join(self.base, "sub", "out"))
        os.symlink("sub/out", os.path.join(self.base, "chain"))
        self.assertRefused(b"GET chain 0\n", 403)

    def test_literalPercentFolder(self) -> None:
        """
        A folder really named C{%2e%2e} is served from, as written.
        """
        folder = os.path.join(self.base, "%2e%2e")
        os.makedirs(folder)
        with open(os.path.join(folder, "x"), "wb") as f:
            f.write(b"inside")
        self.assertServed(b"GET %2e%2e/x 0\n", b"inside")


class ProxyHostileTests(HostileRequestsMixin, SynchronousTestCase):
    """
    Hostile requests to the proxy, with a real file server behind it.
    """

    def setUp(self) -> None:
        self.makeFolder()
        self.reactor = MemoryReactorClock()
        self.server = FileServerFactory(
            self.base, self.reactor, REQUEST_TIMEOUT, runInThread=runNow
        )
        names = ["f.bin", "%2e%2e/x", "%2E%2E%2Fx", "\uff0e\uff0e/x", "..\\x"]
        routes = self.mktemp()
        with open(routes, "w") as f:
            json.dump(dict.fromkeys(names, "10.0.0.11:5000"), f)
        self.proxy = ProxyFactory(
            routes,
            self.reactor,
            self.reactor,
            policy=RetryPolicy(deadline=1.0),
            requestTimeout=REQUEST_TIMEOUT,
        )
        self.pumps: list[iosim.IOPump] = []
        self.joined = 0

    def connect(self) -> tuple[Protocol, StringTransport]:
        session = self.proxy.buildProtocol(IPv4Address("TCP", "10.0.0.3", 4000))
        transport = StringTransport()
        session.makeConnection(transport)
        return session, transport

    def settle(self) -> None:
        # Join each backend connection the proxy asked for to the file server.
        while self.joined < len(self.reactor.tcpClients):
            factory = self.reactor.tcpClients[self.joined][2]
            self.joined += 1
            leg = factory.buildProtocol(None)
            server = self.server.buildProtocol(IPv4Address("TCP", "10.0.0.4", 4001))
            self.pumps.append(
                iosim.connect(
                    server,
                    iosim.FakeTransport(server, isServer=True),
                    leg,
                    iosim.FakeTransport(leg, isServer=False),
                    clock=self.reactor,
                )
            )
        for pump in self.pumps:
            pump.flush()

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)


class Collector(Protocol):
    """
    Send C{request} if given, and collect the answer until the connection
    closes.
    """

    def __init__(self, request: bytes = b""):
        self.request = request
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        if self.request:
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(self.received)


class ConnectionLimitMixin:
    """
    The connection limit of a server on a real socket; a subclass starts
    the server under test with a limit of two.
    """

    def startServer(self) -> int:
        """
        @return: the port of the server under test, limited to two
            connections.
        """
        raise NotImplementedError()

    def active(self) -> int:
        """
        @return: how many connections the server under test serves now.
        """
        raise NotImplementedError()

    def open(self, port: int, request: bytes = b"") -> Collector:
        collector = Collector(request)
        reactor.connectTCP("127.0.0.1", port, OneClientFactory(collector))
        return collector

    @inlineCallbacks
    def waitFor(self, condition: Any, timeout: float = 5.0) -> Any:
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("condition never held")
            yield deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    @inlineCallbacks
    def test_excessRefused(self) -> Any:
        """
        A third connection gets C{ERR 503 too many connections} and is
        closed, the first two are kept, and once one of them closes a new
        connection is served again.
        """
        port = self.startServer()
        first, second = self.open(port), self.open(port)
        yield self.waitFor(lambda: self.active() == 2)

        third = yield self.open(port).done
        self.assertEqual(third, b"ERR 503 too many connections\n")
        self.assertEqual(self.active(), 2)
        self.assertFalse(first.done.called or second.done.called)

        # A reset: the proxy reads a plain close as a half-close.
        first.transport.abortConnection()
        yield first.done
        yield self.waitFor(lambda: self.active() == 1)
        answer = yield self.open(port, b"GET f.bin 0\n").done
        payload, others = decodeAll(answer)
        self.assertEqual(payload, CONTENT)
        self.assertEqual(others, [End()])
        second.transport.abortConnection()
        yield second.done
        yield self.waitFor(lambda: self.active() == 0)


class FileServerLimitTests(ConnectionLimitMixin, TestCase):
    """
    The file server's connection limit.
    """

    def startServer(self) -> int:
        base = self.mktemp()
        os.makedirs(base)
        with open(os.path.join(base, "f.bin"), "wb") as f:
            f.write(CONTENT)
        self.server = FileServerFactory(base, reactor, maxConnections=2)
        port = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def active(self) -> int:
        return self.server.active


class ProxyLimitTests(ConnectionLimitMixin, TestCase):
    """
    The proxy's connection limit.
    """

    def startServer(self) -> int:
        base = self.mktemp()
        os.makedirs(base)
        with open(os.path.join(base, "f.bin"), "wb") as f:
            f.write(CONTENT)
        server = TimedFileServer(base)
        backend = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        routes = self.mktemp()
        with open(routes, "w") as f:
            json.dump({"f.bin": f"127.0.0.1:{backend.getHost().port}"}, f)
        self.proxy = ProxyFactory(routes, reactor, reactor, maxConnections=2)
        port = reactor.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def active(self) -> int:
        return len(self.proxy.connections)
