"""
Tests for L{reloc.fileserver}, driven through an in-memory transport and a
fake clock.
"""

from __future__ import annotations

import os
import random
import signal
from types import FrameType

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from reloc.fileserver import CHUNK_SIZE, FileServerFactory, FileServerProtocol
from reloc.protocol import (
    MAX_REQUEST_LINE,
    End,
    FrameDecoder,
    Payload,
    Refusal,
)

#: Seconds a connection may take to send its request in these tests.
IDLE_TIMEOUT = 30.0


def descriptorsOpenOn(path: str) -> int:
    """
    @return: how many of this process's file descriptors refer to C{path}.
    """
    target = os.path.realpath(path)
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == target:
                count += 1
        except OSError:
            continue
    return count


def decode(data: bytes) -> tuple[bytes, list[object]]:
    """
    @return: the payload of a frame stream and its other events.
    """
    events = FrameDecoder().feed(data)
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    return payload, [e for e in events if not isinstance(e, Payload)]


class FileServerTestCase(SynchronousTestCase):
    """
    Make a served folder and connect protocols to it in memory.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.clock = Clock()
        self.factory = FileServerFactory(self.base, self.clock, IDLE_TIMEOUT)

    def makeFile(self, name: str, content: bytes) -> str:
        """
        Write C{content} to C{name} below the served folder.

        @return: the file's path.
        """
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def connect(self) -> tuple[FileServerProtocol, StringTransport]:
        """
        @return: a connected server protocol and its transport.
        """
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def pump(self, transport: StringTransport) -> None:
        """
        Ask the registered pull producer for data until it unregisters.
        """
        for _ in range(10_000):
            if transport.producer is None:
                return
            transport.producer.resumeProducing()
        raise AssertionError("the producer never unregistered")

    def request(self, line: bytes) -> tuple[FileServerProtocol, StringTransport]:
        """
        Connect, send C{line} and pump the answer out.

        @return: the protocol and its transport.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(line)
        self.pump(transport)
        return protocol, transport

    def assertRefusal(self, transport: StringTransport, code: int) -> None:
        """
        Assert that the connection was answered with one C{ERR code} line and
        is being closed.
        """
        value = transport.value()
        self.assertTrue(value.endswith(b"\n"), value)
        self.assertEqual(value.count(b"\n"), 1, value)
        _, others = decode(value)
        self.assertEqual(len(others), 1, value)
        refusal = others[0]
        self.assertIsInstance(refusal, Refusal)
        self.assertEqual(refusal.code, code, value)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)


class DownloadTests(FileServerTestCase):
    """
    Tests for serving whole and partial files.
    """

    def setUp(self) -> None:
        super().setUp()
        self.content = random.Random(7).randbytes(2 * CHUNK_SIZE + 12345)
        self.path = self.makeFile("big.bin", self.content)

    def test_fullDownload(self) -> None:
        """
        A request from offset 0 streams the whole file, then C{EOF}, then
        closes.
        """
        _, transport = self.request(b"GET big.bin 0\n")
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content)
        self.assertEqual(others, [End()])
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)

    def test_crlfRequest(self) -> None:
        """
        A request ending in CRLF is served like one ending in LF.
        """
        _, transport = self.request(b"GET big.bin 0\r\n")
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content)
        self.assertEqual(others, [End()])

    def test_oneChunkPerResume(self) -> None:
        """
        Nothing is read before the transport asks, and each ask sends at most
        one chunk.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.streaming)
        transport.producer.resumeProducing()
        first = transport.value()
        self.assertEqual(
            first, b"DATA %d\n" % (CHUNK_SIZE,) + self.content[:CHUNK_SIZE]
        )

    def test_middleOffset(self) -> None:
        """
        A request from an offset in the middle streams the rest of the file.
        """
        offset = CHUNK_SIZE + 99
        _, transport = self.request(b"GET big.bin %d\n" % (offset,))
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content[offset:])
        self.assertEqual(others, [End()])

    def test_offsetAtSize(self) -> None:
        """
        An offset equal to the size is answered with C{EOF} alone.
        """
        _, transport = self.request(b"GET big.bin %d\n" % (len(self.content),))
        self.assertEqual(transport.value(), b"EOF\n")
        self.assertTrue(transport.disconnecting)

    def test_offsetBeyondSize(self) -> None:
        """
        An offset past the end is refused with 416 and no descriptor is kept.
        """
        _, transport = self.request(b"GET big.bin %d\n" % (len(self.content) + 1,))
        self.assertRefusal(transport, 416)
        self.assertEqual(descriptorsOpenOn(self.path), 0)

    def test_hugeOffset(self) -> None:
        """
        A 20-digit offset beyond 2**63 is refused with 416, not a crash.
        """
        _, transport = self.request(b"GET big.bin %d\n" % (2**64,))
        self.assertRefusal(transport, 416)

    def test_oneByteAtATime(self) -> None:
        """
        A request fed one byte at a time is answered only once its LF arrives.
        """
        protocol, transport = self.connect()
        line = b"GET big.bin 5\n"
        for i in range(len(line) - 1):
            protocol.dataReceived(line[i : i + 1])
            self.assertEqual(transport.value(), b"")
            self.assertIsNone(transport.producer)
        protocol.dataReceived(b"\n")
        self.pump(transport)
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content[5:])
        self.assertEqual(others, [End()])

    def test_bytesAfterRequestIgnored(self) -> None:
        """
        Bytes after the request line do not disturb the answer.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\nGET other 0\n")
        protocol.dataReceived(b"garbage")
        self.pump(transport)
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content)
        self.assertEqual(others, [End()])

    def test_descriptorClosedAtEnd(self) -> None:
        """
        The file's descriptor is closed once the answer is complete.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        self.assertEqual(descriptorsOpenOn(self.path), 1)
        self.pump(transport)
        self.assertEqual(descriptorsOpenOn(self.path), 0)

    def test_descriptorClosedOnLoss(self) -> None:
        """
        Losing the connection mid-stream closes the file's descriptor.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        transport.producer.resumeProducing()
        self.assertEqual(descriptorsOpenOn(self.path), 1)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(descriptorsOpenOn(self.path), 0)

    def test_lossThenStopProducing(self) -> None:
        """
        A transport that also stops the producer after the loss breaks
        nothing.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        producer = transport.producer
        protocol.connectionLost(Failure(ConnectionLost()))
        producer.stopProducing()
        self.assertEqual(descriptorsOpenOn(self.path), 0)

    def test_fileShrinks(self) -> None:
        """
        A file that shrinks while served ends the connection without C{EOF}.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        transport.producer.resumeProducing()
        os.truncate(self.path, CHUNK_SIZE)
        self.pump(transport)
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content[:CHUNK_SIZE])
        self.assertEqual(others, [])
        self.assertTrue(transport.disconnected)
        self.assertEqual(descriptorsOpenOn(self.path), 0)

    def test_emptyFile(self) -> None:
        """
        An empty file streams as C{EOF} alone.
        """
        self.makeFile("empty", b"")
        _, transport = self.request(b"GET empty 0\n")
        self.assertEqual(transport.value(), b"EOF\n")
        self.assertTrue(transport.disconnecting)

    def test_nestedName(self) -> None:
        """
        A file in a subfolder is served by its relative path.
        """
        os.mkdir(os.path.join(self.base, "sub"))
        self.makeFile("sub/small", b"hello")
        _, transport = self.request(b"GET sub/small 0\n")
        self.assertEqual(transport.value(), b"DATA 5\nhelloEOF\n")

    def test_symlinkInside(self) -> None:
        """
        A symlink to a file inside the served folder is followed.
        """
        os.symlink("big.bin", os.path.join(self.base, "alias"))
        _, transport = self.request(b"GET alias 0\n")
        payload, others = decode(transport.value())
        self.assertEqual(payload, self.content)
        self.assertEqual(others, [End()])


class RefusalTests(FileServerTestCase):
    """
    Tests for the requests the server refuses.
    """

    def test_missing(self) -> None:
        """
        A name with no file is refused with 404.
        """
        _, transport = self.request(b"GET nothing 0\n")
        self.assertRefusal(transport, 404)

    def test_folder(self) -> None:
        """
        A folder is refused with 404 and its descriptor is closed.
        """
        folder = os.path.join(self.base, "sub")
        os.mkdir(folder)
        _, transport = self.request(b"GET sub 0\n")
        self.assertRefusal(transport, 404)
        self.assertEqual(descriptorsOpenOn(folder), 0)

    def test_fifo(self) -> None:
        """
        A FIFO is refused with 404 without waiting for a writer.
        """
        fifo = os.path.join(self.base, "pipe")
        os.mkfifo(fifo)

        def blocked(signum: int, frame: FrameType | None) -> None:
            raise AssertionError("opening the FIFO blocked")

        previous = signal.signal(signal.SIGALRM, blocked)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, 5)
        self.addCleanup(signal.setitimer, signal.ITIMER_REAL, 0)
        _, transport = self.request(b"GET pipe 0\n")
        self.assertRefusal(transport, 404)
        self.assertEqual(descriptorsOpenOn(fifo), 0)

    def test_symlinkOutside(self) -> None:
        """
        A symlink that leads outside the served folder is refused with 403.
        """
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        secret = os.path.join(outside, "secret")
        with open(secret, "wb") as f:
            f.write(b"secret")
        os.symlink(secret, os.path.join(self.base, "leak"))
        _, transport = self.request(b"GET leak 0\n")
        self.assertRefusal(transport, 403)
        self.assertNotIn(b"secret\n", transport.value())

    def test_symlinkedFolderOutside(self) -> None:
        """
        A path through a symlinked folder that leads outside is refused with
        403.
        """
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(outside, os.path.join(self.base, "door"))
        _, transport = self.request(b"GET door/secret 0\n")
        self.assertRefusal(transport, 403)

    def test_siblingPrefix(self) -> None:
        """
        A symlink into a sibling folder whose name extends the base's is
        refused with 403.
        """
        sibling = self.base + "-evil"
        os.makedirs(sibling)
        with open(os.path.join(sibling, "secret"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(sibling, "secret"), os.path.join(self.base, "x"))
        _, transport = self.request(b"GET x 0\n")
        self.assertRefusal(transport, 403)

    def test_dotDot(self) -> None:
        """
        A name starting with C{..} is refused with 403 even when the file
        exists there.
        """
        with open(os.path.join(os.path.dirname(self.base), "x"), "wb") as f:
            f.write(b"outside")
        _, transport = self.request(b"GET ../x 0\n")
        self.assertRefusal(transport, 403)

    def test_absolute(self) -> None:
        """
        An absolute name is refused with 403.
        """
        _, transport = self.request(b"GET /etc/hostname 0\n")
        self.assertRefusal(transport, 403)

    def test_malformed(self) -> None:
        """
        A malformed request is refused with 400.
        """
        _, transport = self.request(b"get big.bin 0\n")
        self.assertRefusal(transport, 400)

    def test_lineTooLong(self) -> None:
        """
        A request line with no LF that reaches the limit is refused with 400
        and the connection closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET " + b"a" * (MAX_REQUEST_LINE - 5))
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"aa")
        self.assertRefusal(transport, 400)

    def test_lineTooLongOneByteAtATime(self) -> None:
        """
        An endless request line fed byte by byte is refused with 400 at the
        limit.
        """
        protocol, transport = self.connect()
        for _ in range(MAX_REQUEST_LINE):
            protocol.dataReceived(b"a")
        self.assertRefusal(transport, 400)

    def test_bytesAfterRefusalIgnored(self) -> None:
        """
        Bytes that arrive after a refusal add nothing to the answer.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"x" * MAX_REQUEST_LINE)
        protocol.dataReceived(b"GET big.bin 0\n")
        self.assertRefusal(transport, 400)

    def test_refusalCancelsIdleTimeout(self) -> None:
        """
        A refused request leaves no idle timer behind.
        """
        _, transport = self.request(b"GET nothing 0\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class IdleTimeoutTests(FileServerTestCase):
    """
    Tests for dropping connections that do not send their request.
    """

    def test_silentClient(self) -> None:
        """
        A connection that sends nothing is aborted after the idle timeout.
        """
        _, transport = self.connect()
        self.clock.advance(IDLE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_partialRequest(self) -> None:
        """
        Trickling part of a request does not extend the idle timeout.
        """
        protocol, transport = self.connect()
        for byte in b"GET big":
            self.clock.advance(IDLE_TIMEOUT / 10)
            protocol.dataReceived(bytes([byte]))
        self.clock.advance(IDLE_TIMEOUT - 7 * IDLE_TIMEOUT / 10)
        self.assertTrue(transport.disconnected)

    def test_requestCancelsTimeout(self) -> None:
        """
        A complete request cancels the idle timer, so a slow download is
        not cut.
        """
        self.makeFile("small", b"abc")
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET small 0\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(IDLE_TIMEOUT * 2)
        self.assertFalse(transport.disconnecting)
        self.pump(transport)
        self.assertEqual(transport.value(), b"DATA 3\nabcEOF\n")

    def test_lossCancelsTimeout(self) -> None:
        """
        A connection lost before its request leaves no idle timer behind.
        """
        protocol, _ = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FileServerFactoryTests(SynchronousTestCase):
    """
    Tests for L{FileServerFactory}.
    """

    def test_baseResolved(self) -> None:
        """
        The served folder is resolved through symlinks when the factory is
        made.
        """
        real = os.path.abspath(self.mktemp())
        os.makedirs(real)
        link = os.path.abspath(self.mktemp())
        os.symlink(real, link)
        factory = FileServerFactory(link, Clock())
        self.assertEqual(factory.base, os.path.realpath(real))

    def test_servesThroughSymlinkedBase(self) -> None:
        """
        Files below a base reached through a symlink are served, not refused.
        """
        real = os.path.abspath(self.mktemp())
        os.makedirs(real)
        with open(os.path.join(real, "f"), "wb") as f:
            f.write(b"ok")
        link = os.path.abspath(self.mktemp())
        os.symlink(real, link)
        protocol = FileServerFactory(link, Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET f 0\n")
        while transport.producer is not None:
            transport.producer.resumeProducing()
        self.assertEqual(transport.value(), b"DATA 2\nokEOF\n")
