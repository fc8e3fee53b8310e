"""
Tests for the file server's C{GETID} answer and its L{DigestCache}, over an
in-memory transport, a fake clock and a stand-in for the thread pool.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from reloc import fileserver
from reloc.fileserver import FileServerFactory, FileServerProtocol
from reloc.protocol import (
    End,
    FrameDecoder,
    Identified,
    Identity,
    Payload,
)
from reloc.test.test_fileserver import descriptorsOpenOn

CONTENT = bytes(range(256)) * 40 + b"tail"


def identityOf(content: bytes) -> Identity:
    """
    @return: the identity a server should announce for C{content}.
    """
    return Identity(len(content), hashlib.sha256(content).hexdigest())


def decodeIdentified(data: bytes) -> tuple[list[object], bytes]:
    """
    Decode an answer to C{GETID}.

    @return: its events other than payload, in order, and its payload.
    """
    events = FrameDecoder(expectIdentity=True).feed(data)
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    return [e for e in events if not isinstance(e, Payload)], payload


class GetIdentityTestCase(SynchronousTestCase):
    """
    A served folder and a file server whose digests run through
    C{self.runInThread}, which by default hashes at once and counts calls.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.path = os.path.join(self.base, "f.bin")
        self.writeFile(CONTENT)
        self.calls: list[tuple[Callable[..., str], tuple[Any, ...]]] = []
        self.factory = FileServerFactory(
            self.base, Clock(), 30.0, runInThread=self.runInThread
        )

    def runInThread(self, f: Callable[..., str], *args: Any) -> Deferred[str]:
        self.calls.append((f, args))
        return succeed(f(*args))

    def writeFile(self, content: bytes, mtimeNs: int | None = None) -> None:
        """
        Write C{content} over the served file in place, and set its
        modification time when C{mtimeNs} is given.
        """
        with open(self.path, "r+b" if os.path.exists(self.path) else "wb") as f:
            f.write(content)
            f.truncate()
        if mtimeNs is not None:
            os.utime(self.path, ns=(mtimeNs, mtimeNs))

    def connect(self) -> tuple[FileServerProtocol, StringTransport]:
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

    def request(self, line: bytes) -> StringTransport:
        """
        Send C{line} on a new connection and pump the answer out.

        @return: the connection's transport.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(line)
        self.pump(transport)
        return transport

    def assertAnswer(
        self, transport: StringTransport, content: bytes, offset: int = 0
    ) -> None:
        """
        Assert that C{transport} holds the C{ID} line of C{content}, then its
        bytes from C{offset} as frames, then C{EOF}, and is being closed.
        """
        others, payload = decodeIdentified(transport.value())
        self.assertEqual(others, [Identified(identityOf(content)), End()])
        self.assertEqual(payload, content[offset:])
        self.assertTrue(transport.disconnecting)

    def assertRefusal(self, transport: StringTransport, code: int) -> None:
        """
        Assert that C{transport} holds one C{ERR code} line alone.
        """
        value = transport.value()
        self.assertEqual(value.count(b"\n"), 1, value)
        self.assertTrue(value.startswith(b"ERR %d " % (code,)), value)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)


class GetIdentityTests(GetIdentityTestCase):
    """
    Tests for the answer to C{GETID}.
    """

    def test_identityThenFrames(self) -> None:
        """
        C{GETID} is answered with C{ID <size> <sha256>}, then the frames of
        the whole file and C{EOF}.
        """
        transport = self.request(b"GETID f.bin 0\n")
        self.assertAnswer(transport, CONTENT)
        self.assertTrue(
            transport.value().startswith(identityOf(CONTENT).toLine() + b"DATA ")
        )

    def test_identityOfWholeFileFromOffset(self) -> None:
        """
        From an offset, the C{ID} line still names the whole file, and the
        frames carry the bytes from that offset.
        """
        transport = self.request(b"GETID f.bin 1000\n")
        self.assertAnswer(transport, CONTENT, 1000)

    def test_identityAtEnd(self) -> None:
        """
        C{GETID} at the file's size is answered with the C{ID} line and
        C{EOF} alone.
        """
        transport = self.request(b"GETID f.bin %d\n" % (len(CONTENT),))
        self.assertEqual(transport.value(), identityOf(CONTENT).toLine() + b"EOF\n")

    def test_plainGetHashesNothing(self) -> None:
        """
        A plain C{GET} is answered without an C{ID} line and starts no
        digest.
        """
        transport = self.request(b"GET f.bin 0\n")
        events = FrameDecoder().feed(transport.value())
        self.assertTrue(transport.value().startswith(b"DATA "))
        self.assertEqual(
            b"".join(e.data for e in events if isinstance(e, Payload)), CONTENT
        )
        self.assertEqual(self.calls, [])

    def test_missingFile(self) -> None:
        """
        C{GETID} for a missing file is refused with C{ERR 404} and hashes
        nothing.
        """
        self.assertRefusal(self.request(b"GETID nothing.bin 0\n"), 404)
        self.assertEqual(self.calls, [])

    def test_offsetBeyondEnd(self) -> None:
        """
        C{GETID} past the end of the file is refused with C{ERR 416} and
        hashes nothing.
        """
        line = b"GETID f.bin %d\n" % (len(CONTENT) + 1,)
        self.assertRefusal(self.request(line), 416)
        self.assertEqual(self.calls, [])

    def test_hashingFails(self) -> None:
        """
        A digest that fails for a reason other than a change is logged and
        answered with C{ERR 503}.
        """

        def broken(f: Callable[..., str], fd: int, key: object) -> Deferred[str]:
            os.close(fd)
            return fail(OSError("disk gone"))

        self.factory.digests.runInThread = broken
        self.assertRefusal(self.request(b"GETID f.bin 0\n"), 503)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class DigestCacheTests(GetIdentityTestCase):
    """
    Tests for how often, and on which version, a file is hashed.
    """

    def test_hashedOncePerVersion(self) -> None:
        """
        Two requests for the same version of a file compute its digest once
        and announce the same identity.
        """
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT)
        self.assertAnswer(self.request(b"GETID f.bin 17\n"), CONTENT, 17)
        self.assertEqual(len(self.calls), 1)

    def test_newSizeNewDigest(self) -> None:
        """
        A file rewritten with another size is hashed again and announces its
        new identity.
        """
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT)
        changed = CONTENT + b"more"
        self.writeFile(changed)
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), changed)
        self.assertEqual(len(self.calls), 2)

    def test_newModificationTimeNewDigest(self) -> None:
        """
        A file rewritten in place with the same size but a new modification
        time is hashed again and announces its new identity.
        """
        self.writeFile(CONTENT, mtimeNs=1_000_000_000)
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT)
        changed = b"X" + CONTENT[1:]
        self.writeFile(changed, mtimeNs=2_000_000_000)
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), changed)
        self.assertEqual(len(self.calls), 2)

    def test_oldestForgotten(self) -> None:
        """
        Past the cache's size the oldest version is forgotten and hashed
        again when it is asked for.
        """
        self.patch(fileserver, "DIGEST_CACHE_SIZE", 1)
        other = os.path.join(self.base, "g.bin")
        with open(other, "wb") as f:
            f.write(b"other")
        self.request(b"GETID f.bin 0\n")
        self.assertAnswer(self.request(b"GETID g.bin 0\n"), b"other")
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT)
        self.assertEqual(len(self.calls), 3)

    def test_changedWhileHashed(self) -> None:
        """
        A file that changes while its digest is computed is answered with
        C{ERR 503}, not with a digest of bytes it no longer holds, and the
        next request hashes the new version.
        """

        def changing(f: Callable[..., str], *args: Any) -> Deferred[str]:
            self.calls.append((f, args))
            with open(self.path, "ab") as appended:
                appended.write(b"late")
            try:
                return succeed(f(*args))
            except Exception:
                return fail()

        self.factory.digests.runInThread = changing
        self.assertRefusal(self.request(b"GETID f.bin 0\n"), 503)
        self.assertEqual(self.flushLoggedErrors(), [])

        self.factory.digests.runInThread = self.runInThread
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT + b"late")
        self.assertEqual(len(self.calls), 2)

    def test_descriptorsClosed(self) -> None:
        """
        After a C{GETID} answer no descriptor of the file is left open.
        """
        self.request(b"GETID f.bin 0\n")
        self.assertEqual(descriptorsOpenOn(self.path), 0)


class PendingDigestTests(GetIdentityTestCase):
    """
    Tests for requests that arrive or leave while a digest is computed.
    """

    def setUp(self) -> None:
        super().setUp()
        self.pending: list[Deferred[str]] = []
        self.factory.digests.runInThread = self.later

    def later(self, f: Callable[..., str], *args: Any) -> Deferred[str]:
        """
        Record the work and return a L{Deferred} that L{finish} fires.
        """
        self.calls.append((f, args))
        d: Deferred[str] = Deferred()
        self.pending.append(d)
        return d

    def finish(self) -> None:
        """
        Run every recorded piece of work and fire its L{Deferred}.
        """
        for (f, args), d in zip(self.calls, self.pending, strict=True):
            d.callback(f(*args))

    def test_sharedComputation(self) -> None:
        """
        Two requests that arrive while a version is being hashed wait for the
        same computation, and both get the identity once it is done.
        """
        first, firstTransport = self.connect()
        second, secondTransport = self.connect()
        first.dataReceived(b"GETID f.bin 0\n")
        second.dataReceived(b"GETID f.bin 5\n")
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(firstTransport.value(), b"")
        self.assertEqual(secondTransport.value(), b"")

        self.finish()
        self.pump(firstTransport)
        self.pump(secondTransport)
        self.assertAnswer(firstTransport, CONTENT)
        self.assertAnswer(secondTransport, CONTENT, 5)
        self.assertEqual(len(self.calls), 1)

    def test_lostWhileWaiting(self) -> None:
        """
        A connection lost while its digest is computed closes the file's
        descriptor and writes nothing, even once the digest arrives.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GETID f.bin 0\n")
        # The answer's own descriptor, and the copy handed to the hashing.
        self.assertEqual(descriptorsOpenOn(self.path), 2)

        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(descriptorsOpenOn(self.path), 1)
        self.finish()
        self.assertEqual(descriptorsOpenOn(self.path), 0)
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(transport.producer)

    def test_otherWaiterServedAfterLoss(self) -> None:
        """
        When one of two waiting connections is lost, the other still gets
        the identity and the file.
        """
        first, firstTransport = self.connect()
        second, secondTransport = self.connect()
        first.dataReceived(b"GETID f.bin 0\n")
        second.dataReceived(b"GETID f.bin 0\n")
        first.connectionLost(Failure(ConnectionLost()))

        self.finish()
        self.pump(secondTransport)
        self.assertEqual(firstTransport.value(), b"")
        self.assertAnswer(secondTransport, CONTENT)

    def test_resultRemembered(self) -> None:
        """
        A digest computed for waiting requests serves later requests for the
        same version without another computation.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GETID f.bin 0\n")
        self.finish()
        self.pump(transport)
        self.assertAnswer(self.request(b"GETID f.bin 0\n"), CONTENT)
        self.assertEqual(len(self.calls), 1)

    def test_refusalHasNoIdentity(self) -> None:
        """
        A refusal of the request itself is sent with no C{ID} line and
        without waiting for any digest.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GETID ../f.bin 0\n")
        self.assertRefusal(transport, 403)
        self.assertEqual(self.calls, [])
