"""
Tests for L{reloc.proxy} and the SIGHUP service in L{reloc.proxytap}, driven
through in-memory transports and a fake reactor that is also the clock.

The client side of a session is a L{StringTransport}.  Every backend
connection the proxy asks for is recorded by L{MemoryReactorClock}; a test
accepts one by building its protocol on another L{StringTransport}, or
refuses it through its factory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from reloc import proxy
from reloc.protocol import (
    MAX_HEADER_LINE,
    MAX_REQUEST_LINE,
    End,
    FrameDecoder,
    Identity,
    Payload,
    dataHeader,
)
from reloc.proxy import BackendLeg, ProxyFactory, ProxySession, RetryPolicy
from reloc.proxytap import ReloadOnHangup
from reloc.routes import Address

NAME = "big.bin"
CONTENT = random.Random(11).randbytes(4321)
IDLINE = Identity(len(CONTENT), hashlib.sha256(CONTENT).hexdigest()).toLine()
OLD = Address("10.0.0.11", 5000)
NEW = Address("10.0.0.12", 5001)

#: No jitter, short and distinct timeouts, so that each timer in a test can
#: be reached on its own.
POLICY = RetryPolicy(
    initialDelay=1,
    factor=2,
    maxDelay=4,
    jitter=0,
    deadline=20,
    connectTimeout=5,
    answerTimeout=3,
    stallTimeout=8,
)

#: Seconds a client may take to send its request in these tests.
REQUEST_TIMEOUT = 5.0


def framed(content: bytes, frame: int = 1000) -> bytes:
    """
    @return: C{content} as a backend sends it for C{GETID}: the C{ID} line
        of the whole file, a run of C{DATA} frames of C{frame} bytes and
        C{EOF}.
    """
    chunks = [content[start : start + frame] for start in range(0, len(content), frame)]
    frames = b"".join(dataHeader(len(chunk)) + chunk for chunk in chunks)
    return IDLINE + frames + b"EOF\n"


def pieces(
    data: bytes, sizes: tuple[int, ...] = (1, 7, 3, 1500, 2, 999)
) -> list[bytes]:
    """
    @return: C{data} cut in pieces whose lengths cycle through C{sizes}, so
        that the cuts land inside headers, inside payloads and on boundaries.
    """
    result = []
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        result.append(data[position : position + size])
        position += size
        index += 1
    return result


def decode(data: bytes) -> tuple[bytes, list[object]]:
    """
    Decode a client's whole stream; a malformed one fails the test.

    @return: the payload and the other events, in order.
    """
    events = FrameDecoder().feed(data)
    payload = b"".join(e.data for e in events if isinstance(e, Payload))
    return payload, [e for e in events if not isinstance(e, Payload)]


class ProxyTestCase(SynchronousTestCase):
    """
    A proxy factory on a fake reactor, with helpers to play the client and
    the backends.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.routesPath = self.mktemp()
        self._version = 0
        self.writeRoutes({NAME: str(OLD)})
        self.factory = ProxyFactory(
            self.routesPath,
            self.reactor,
            self.reactor,
            policy=POLICY,
            requestTimeout=REQUEST_TIMEOUT,
            random=lambda: 0.0,
        )

    def writeRoutes(self, table: object) -> None:
        """
        Replace the routes file atomically with C{table} as JSON.
        """
        self.writeRoutesBytes(json.dumps(table).encode("utf-8"))

    def writeRoutesBytes(self, raw: bytes) -> None:
        """
        Replace the routes file atomically with C{raw}.

        Each version gets its own modification time, so that the factory's
        change check sees a new file even if the file system reuses an inode.
        """
        self._version += 1
        temporary = f"{self.routesPath}.{self._version}"
        with open(temporary, "wb") as f:
            f.write(raw)
        stamp = self._version * 1_000_000_000
        os.utime(temporary, ns=(stamp, stamp))
        os.replace(temporary, self.routesPath)

    def connectClient(self) -> tuple[ProxySession, StringTransport]:
        """
        @return: a new client session and its transport, before any request.
        """
        session = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 40000))
        transport = StringTransport()
        session.makeConnection(transport)
        return session, transport

    def openStream(self, offset: int = 0) -> tuple[ProxySession, StringTransport]:
        """
        Connect a client and send its request for L{NAME}.

        @return: the session and its transport.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET %s %d\n" % (NAME.encode("ascii"), offset))
        return session, transport

    def lastAttempt(self) -> tuple[str, int]:
        """
        @return: the host and port of the latest backend connection attempt.
        """
        host, port, _, _, _ = self.reactor.tcpClients[-1]
        return host, port

    def acceptLeg(self) -> tuple[BackendLeg, StringTransport]:
        """
        Complete the latest backend connection attempt.

        @return: the leg and its transport.
        """
        factory = self.reactor.tcpClients[-1][2]
        leg = factory.buildProtocol(None)
        transport = StringTransport()
        leg.makeConnection(transport)
        return leg, transport

    def refuseLeg(self) -> None:
        """
        Fail the latest backend connection attempt as refused.
        """
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[-1], Failure(ConnectionRefusedError())
        )

    def feed(self, leg: BackendLeg, data: bytes) -> None:
        """
        Deliver C{data} to C{leg} in odd-sized pieces.
        """
        for piece in pieces(data):
            leg.dataReceived(piece)

    def streamingSession(
        self, upTo: int
    ) -> tuple[ProxySession, StringTransport, BackendLeg, StringTransport]:
        """
        Open a stream whose first leg has sent its C{ID} line and then its
        frames up to byte C{upTo} of them.

        @return: the session, its transport, the leg and the leg's transport.
        """
        session, transport = self.openStream()
        leg, legTransport = self.acceptLeg()
        self.feed(leg, framed(CONTENT)[: len(IDLINE) + upTo])
        return session, transport, leg, legTransport

    def assertRefusal(self, transport: StringTransport, code: int) -> None:
        """
        Assert that the client got exactly one C{ERR code} line and is being
        closed.
        """
        value = transport.value()
        self.assertTrue(value.startswith(b"ERR %d " % (code,)), value)
        self.assertEqual(value.count(b"\n"), 1, value)
        self.assertTrue(value.endswith(b"\n"), value)
        self.assertTrue(transport.disconnecting)

    def assertComplete(self, transport: StringTransport) -> None:
        """
        Assert that the client got the whole content exactly, then C{EOF}, and
        is being closed.
        """
        payload, others = decode(transport.value())
        self.assertEqual(len(payload), len(CONTENT))
        self.assertEqual(payload, CONTENT)
        self.assertEqual(others, [End()])
        self.assertTrue(transport.disconnecting)

    def assertClean(self) -> None:
        """
        Assert that no session and no timer is left behind.
        """
        self.assertEqual(self.factory.sessions, set())
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class RequestTests(ProxyTestCase):
    """
    Tests for how a session reads and judges the client's request.
    """

    def test_malformedRequest(self) -> None:
        """
        A malformed request is answered with C{ERR 400} and the client is
        closed.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"PUT big.bin 0\n")
        self.assertRefusal(transport, 400)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertClean()

    def test_requestByteByByte(self) -> None:
        """
        A request that arrives one byte at a time is read as one request.
        """
        session, transport = self.connectClient()
        for byte in b"GET big.bin 17\r\n":
            session.dataReceived(bytes([byte]))
        self.assertEqual(self.lastAttempt(), (OLD.host, OLD.port))
        _, legTransport = self.acceptLeg()
        self.assertEqual(legTransport.value(), b"GETID big.bin 17\n")
        self.assertEqual(transport.value(), b"")

    def test_requestLineTooLong(self) -> None:
        """
        A request line that passes the length limit with no LF is answered
        with C{ERR 400} before the LF arrives.
        """
        session, transport = self.connectClient()
        for _ in range(MAX_REQUEST_LINE // 1000 + 1):
            session.dataReceived(b"x" * 1000)
        self.assertRefusal(transport, 400)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertClean()

    def test_requestTimeout(self) -> None:
        """
        A client that sends no request within the request timeout is dropped.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET big")
        self.reactor.advance(REQUEST_TIMEOUT - 0.01)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.01)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        session.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(transport.value(), b"")
        self.assertClean()

    def test_noRoute(self) -> None:
        """
        A name with no route is answered with C{ERR 404} at once, and no
        backend is tried.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET other.bin 0\n")
        self.assertRefusal(transport, 404)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertClean()


class StreamTests(ProxyTestCase):
    """
    Tests for a stream served by its first backend.
    """

    def test_happyPath(self) -> None:
        """
        The backend is asked for the client's offset, and its frames, however
        they are cut, reach the client as whole frames of the same bytes and
        then C{EOF}.
        """
        session, transport = self.openStream()
        host, port, _, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual(
            (host, port, timeout), (OLD.host, OLD.port, POLICY.connectTimeout)
        )
        leg, legTransport = self.acceptLeg()
        self.assertEqual(legTransport.value(), b"GETID big.bin 0\n")
        self.feed(leg, framed(CONTENT))
        self.assertComplete(transport)
        self.assertIsNone(transport.producer)
        self.assertClean()

    def test_startOffset(self) -> None:
        """
        A request from a later offset is passed on with that offset, and the
        backend's answer is relayed.
        """
        session, transport = self.openStream(offset=1234)
        leg, legTransport = self.acceptLeg()
        self.assertEqual(legTransport.value(), b"GETID big.bin 1234\n")
        self.feed(leg, framed(CONTENT[1234:]))
        payload, others = decode(transport.value())
        self.assertEqual(payload, CONTENT[1234:])
        self.assertEqual(others, [End()])
        self.assertClean()

    def test_notFoundRelayed(self) -> None:
        """
        An C{ERR 404} from the first backend is passed on to the client.
        """
        session, transport = self.openStream()
        leg, legTransport = self.acceptLeg()
        leg.dataReceived(b"ERR 404 no such file\n")
        self.assertRefusal(transport, 404)
        self.assertTrue(legTransport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertClean()

    def test_badOffsetRelayed(self) -> None:
        """
        An C{ERR 416} from the first backend is passed on to the client.
        """
        session, transport = self.openStream(offset=99999)
        leg, legTransport = self.acceptLeg()
        leg.dataReceived(b"ERR 416 offset past the end\n")
        self.assertRefusal(transport, 416)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertClean()

    def test_unavailableRetried(self) -> None:
        """
        An C{ERR 503} from the first backend is not passed on: another
        attempt is made, and its answer reaches the client.
        """
        session, transport = self.openStream()
        leg, legTransport = self.acceptLeg()
        leg.dataReceived(b"ERR 503 busy\n")
        self.assertTrue(legTransport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        retry, retryTransport = self.acceptLeg()
        self.assertEqual(retryTransport.value(), b"GETID big.bin 0\n")
        self.feed(retry, framed(CONTENT))
        self.assertComplete(transport)
        self.assertClean()


class UnplannedMoveTests(ProxyTestCase):
    """
    Tests for a stream whose backend breaks.
    """

    def test_connectionLostMidPayload(self) -> None:
        """
        A backend that closes inside a payload is replaced by the backend the
        re-read routes name, asked for the bytes the client is still owed.
        """
        cut = len(dataHeader(1000)) * 2 + 1437
        session, transport, leg, legTransport = self.streamingSession(cut)
        self.assertEqual(session.delivered, 1437)
        self.writeRoutes({NAME: str(NEW)})
        leg.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.lastAttempt(), (NEW.host, NEW.port))
        self.assertEqual(self.factory.routes, {NAME: NEW})
        second, secondTransport = self.acceptLeg()
        self.assertEqual(secondTransport.value(), b"GETID big.bin 1437\n")
        self.feed(second, framed(CONTENT[1437:], frame=700))
        self.assertComplete(transport)
        self.assertClean()

    def test_retryDelaysGrow(self) -> None:
        """
        Refused attempts are retried at once, then with delays that grow up to
        the policy's largest delay.
        """
        self.openStream()
        gaps = []
        while len(gaps) < 5:
            self.refuseLeg()
            count = len(self.reactor.tcpClients)
            failedAt = self.reactor.seconds()
            due = min(call.getTime() for call in self.reactor.getDelayedCalls())
            if due > failedAt:
                self.reactor.advance(due - failedAt - 0.01)
                self.assertEqual(len(self.reactor.tcpClients), count)
                self.reactor.advance(0.02)
            else:
                self.reactor.advance(0)
            self.assertEqual(len(self.reactor.tcpClients), count + 1)
            gaps.append(due - failedAt)
        expected = [0, POLICY.initialDelay, 2 * POLICY.initialDelay, POLICY.maxDelay]
        for gap, delay in zip(gaps, expected + [POLICY.maxDelay], strict=True):
            self.assertAlmostEqual(gap, delay, places=6)

    def test_deadline(self) -> None:
        """
        When no backend answers within the deadline, the client gets
        C{ERR 503} and is closed, and nothing is left behind.
        """
        session, transport = self.openStream()
        while self.reactor.seconds() < POLICY.deadline - 0.01:
            self.refuseLeg()
            due = min(call.getTime() for call in self.reactor.getDelayedCalls())
            self.reactor.advance(
                min(due, POLICY.deadline - 0.01) - self.reactor.seconds()
            )
        self.assertEqual(transport.value(), b"")
        self.assertIn(session, self.factory.sessions)
        self.reactor.advance(0.01)
        self.assertRefusal(transport, 503)
        self.assertClean()

    def test_identityThenDeath(self) -> None:
        """
        A backend that answers its C{ID} line and then closes, every time, is
        retried with growing delays, not at once, and the client gets
        C{ERR 503} at the deadline.
        """
        session, transport = self.openStream()
        accepted = 0
        while session in self.factory.sessions:
            if len(self.reactor.tcpClients) > accepted:
                accepted += 1
                leg, _ = self.acceptLeg()
                leg.dataReceived(IDLINE)
                leg.connectionLost(Failure(ConnectionLost()))
                continue
            due = min(c.getTime() for c in self.reactor.getDelayedCalls())
            self.reactor.advance(due - self.reactor.seconds())
        self.assertRefusal(transport, 503)
        self.assertAlmostEqual(self.reactor.seconds(), POLICY.deadline, places=6)
        # 0, 1, 2, 4, 4, ... seconds apart: a handful, not thousands.
        self.assertLess(len(self.reactor.tcpClients), 10)
        self.assertClean()

    def test_moreBytesThanTheFile(self) -> None:
        """
        Payload past the size the C{ID} line announced is never relayed; the
        leg counts as broken and the stream goes on from a good backend.
        """
        session, transport = self.openStream()
        leg, _ = self.acceptLeg()
        leg.dataReceived(IDLINE + dataHeader(len(CONTENT) + 5) + CONTENT + b"extra")
        payload, others = decode(transport.value())
        self.assertEqual(payload, b"")
        self.reactor.advance(0)
        retry, retryTransport = self.acceptLeg()
        self.assertEqual(retryTransport.value(), b"GETID big.bin 0\n")
        self.feed(retry, framed(CONTENT))
        self.assertComplete(transport)
        self.assertClean()

    def test_negativeLength(self) -> None:
        """
        A C{DATA} header with a negative length counts as a broken backend.
        """
        self.assertBrokenBackend(b"DATA -1\n")

    def test_nonDigitLength(self) -> None:
        """
        A C{DATA} header whose length is not digits counts as a broken
        backend.
        """
        self.assertBrokenBackend(b"DATA abc\n")

    def test_headerTooLong(self) -> None:
        """
        A header line longer than the limit counts as a broken backend before
        its LF arrives.
        """
        self.assertBrokenBackend(b"DATA " + b"1" * MAX_HEADER_LINE)

    def test_unknownHeader(self) -> None:
        """
        A header that is neither C{DATA}, C{EOF} nor C{ERR} counts as a broken
        backend.
        """
        self.assertBrokenBackend(b"HELLO\n")

    def test_bytesAfterEof(self) -> None:
        """
        Bytes after C{EOF} in the same read count as a broken backend, and the
        C{EOF} is not passed on.
        """
        self.assertBrokenBackend(dataHeader(3) + CONTENT[1000:1003] + b"EOF\nmore")

    def assertBrokenBackend(self, garbage: bytes) -> None:
        """
        Assert that C{garbage} after some good frames drops the leg, is not
        passed on, and leads to a new attempt from the right offset.
        """
        cut = len(dataHeader(1000)) + 1000
        session, transport, leg, legTransport = self.streamingSession(cut)
        leg.dataReceived(garbage)
        self.assertTrue(legTransport.disconnected)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        retry, retryTransport = self.acceptLeg()
        self.assertEqual(retryTransport.value(), b"GETID big.bin 1000\n")
        payload, others = decode(transport.value())
        self.assertEqual(payload, CONTENT[:1000])
        self.assertEqual(others, [])
        self.feed(retry, framed(CONTENT[1000:]))
        self.assertComplete(transport)
        self.assertClean()


class PlannedMoveTests(ProxyTestCase):
    """
    Tests for moving a stream after a reload of the routes.
    """

    def test_move(self) -> None:
        """
        A reload that routes the stream elsewhere connects a candidate while
        the old leg keeps streaming; the candidate's answer takes over from
        the byte the client has reached, and the old leg is dropped.
        """
        output = framed(CONTENT)[len(IDLINE) :]
        first = len(dataHeader(1000)) + 600
        second = len(dataHeader(1000)) * 3 + 2100
        session, transport, old, oldTransport = self.streamingSession(first)
        self.writeRoutes({NAME: str(NEW)})
        self.assertTrue(self.factory.reload())
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.lastAttempt(), (NEW.host, NEW.port))
        candidate, candidateTransport = self.acceptLeg()
        self.assertEqual(candidateTransport.value(), b"GETID big.bin 600\n")
        self.feed(old, output[first:second])
        self.assertEqual(decode(transport.value())[0], CONTENT[:2100])
        self.assertFalse(oldTransport.disconnecting)
        self.feed(candidate, framed(CONTENT[600:], frame=900))
        self.assertTrue(oldTransport.disconnected)
        # Bytes the old leg had in flight are not passed on.
        old.dataReceived(output[second:])
        old.connectionLost(Failure(ConnectionLost()))
        self.assertComplete(transport)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertClean()

    def test_slowCandidateAskedAgain(self) -> None:
        """
        A candidate that answers only after the old leg streamed far past the
        offset it asked for is not used to read and drop those bytes: the old
        leg carries on while a second connection asks for the current
        offset, and that one takes over with nothing to drop.
        """
        self.patch(proxy, "MAX_SKIP", 1000)
        output = framed(CONTENT)[len(IDLINE) :]
        first = len(dataHeader(1000)) + 600
        second = len(dataHeader(1000)) * 3 + 2100
        session, transport, old, oldTransport = self.streamingSession(first)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        slow, slowTransport = self.acceptLeg()
        self.assertEqual(slowTransport.value(), b"GETID big.bin 600\n")
        self.feed(old, output[first:second])
        slow.dataReceived(IDLINE)
        self.assertTrue(slowTransport.disconnected)
        self.assertFalse(oldTransport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 3)
        self.assertEqual(self.lastAttempt(), (NEW.host, NEW.port))
        again, againTransport = self.acceptLeg()
        self.assertEqual(againTransport.value(), b"GETID big.bin 2100\n")
        self.feed(again, framed(CONTENT[2100:], frame=700))
        self.assertTrue(oldTransport.disconnected)
        self.assertComplete(transport)
        self.assertClean()

    def test_brokenRoutesNotJson(self) -> None:
        """
        A reload of a file that is not JSON is refused and moves nothing.
        """
        self.assertReloadRefused(lambda: self.writeRoutesBytes(b"{big.bin"))

    def test_brokenRoutesList(self) -> None:
        """
        A reload of a JSON list instead of an object is refused and moves
        nothing.
        """
        self.assertReloadRefused(lambda: self.writeRoutes([NAME, str(NEW)]))

    def test_brokenRoutesAddress(self) -> None:
        """
        A reload of a table with a bad address is refused as a whole and
        moves nothing.
        """
        self.assertReloadRefused(
            lambda: self.writeRoutes({NAME: str(NEW), "b": "10.0.0.12:99999"})
        )

    def test_brokenRoutesMissing(self) -> None:
        """
        A reload when the routes file is gone is refused and moves nothing.
        """
        self.assertReloadRefused(lambda: os.remove(self.routesPath))

    def assertReloadRefused(self, breakRoutes: Callable[[], object]) -> None:
        """
        Assert that a reload after C{breakRoutes} returns C{False}, keeps the
        table in force and leaves the running stream on its leg.
        """
        session, transport, old, oldTransport = self.streamingSession(500)
        breakRoutes()
        self.assertFalse(self.factory.reload())
        self.assertEqual(self.factory.routes, {NAME: OLD})
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertFalse(oldTransport.disconnecting)
        self.assertIs(session.leg, old)
        self.assertIsNone(session.candidate)

    def test_otherRouteChanged(self) -> None:
        """
        A reload that changes only other names leaves the stream where it is.
        """
        session, transport, old, oldTransport = self.streamingSession(500)
        self.writeRoutes({NAME: str(OLD), "other.bin": str(NEW)})
        self.assertTrue(self.factory.reload())
        self.assertEqual(self.factory.routes["other.bin"], NEW)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertIsNone(session.candidate)
        self.feed(old, framed(CONTENT)[len(IDLINE) + 500 :])
        self.assertComplete(transport)
        self.assertClean()

    def test_candidateRefuses(self) -> None:
        """
        A candidate that answers C{ERR 404} is dropped, nothing is relayed,
        and the old leg carries the stream to its end.
        """
        output = framed(CONTENT)[len(IDLINE) :]
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        candidate.dataReceived(b"ERR 404 no such file\n")
        self.assertTrue(candidateTransport.disconnected)
        self.assertFalse(oldTransport.disconnecting)
        self.assertIs(session.leg, old)
        self.feed(old, output[1500:])
        self.assertComplete(transport)
        self.assertClean()

    def candidateWithOtherFile(self, other: bytes) -> None:
        """
        Assert that a candidate holding C{other} instead of the stream's file
        is not ready: none of its bytes reach the client, it is dropped, and
        the old leg carries the stream to its end.
        """
        output = framed(CONTENT)[len(IDLINE) :]
        first = len(dataHeader(1000)) + 600
        second = len(dataHeader(1000)) * 3 + 2100
        session, transport, old, oldTransport = self.streamingSession(first)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        self.assertEqual(candidateTransport.value(), b"GETID big.bin 600\n")
        self.feed(old, output[first:second])
        otherIdentity = Identity(len(other), hashlib.sha256(other).hexdigest())
        candidate.dataReceived(otherIdentity.toLine() + dataHeader(10) + other[:10])
        self.assertTrue(candidateTransport.disconnected)
        self.assertFalse(oldTransport.disconnecting)
        self.assertIs(session.leg, old)
        self.feed(old, output[second:])
        self.assertComplete(transport)
        self.assertClean()

    def test_candidateShorter(self) -> None:
        """
        A candidate whose copy is shorter is not ready, even though it holds
        the bytes from the offset it was asked for.
        """
        self.candidateWithOtherFile(CONTENT[:3000])

    def test_candidateLonger(self) -> None:
        """
        A candidate whose copy is longer is not ready.
        """
        self.candidateWithOtherFile(CONTENT + b"more")

    def test_candidateOneByteDifferent(self) -> None:
        """
        A candidate whose copy has the same size but one different byte is
        not ready.
        """
        other = bytearray(CONTENT)
        other[4000] ^= 1
        self.candidateWithOtherFile(bytes(other))

    def test_candidateWithoutIdentity(self) -> None:
        """
        A candidate that answers with frames and no C{ID} line is a broken
        backend, and the old leg carries on.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        candidate.dataReceived(dataHeader(3) + b"abc")
        self.assertTrue(candidateTransport.disconnected)
        self.assertIs(session.leg, old)
        self.feed(old, framed(CONTENT)[len(IDLINE) + 1500 :])
        self.assertComplete(transport)
        self.assertClean()

    def test_candidateSilent(self) -> None:
        """
        A candidate that does not answer within the answer timeout is dropped
        and the old leg is not disturbed.
        """
        output = framed(CONTENT)[len(IDLINE) :]
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        self.reactor.advance(POLICY.answerTimeout - 0.01)
        self.assertFalse(candidateTransport.disconnecting)
        self.reactor.advance(0.01)
        self.assertTrue(candidateTransport.disconnected)
        self.assertFalse(oldTransport.disconnecting)
        self.assertIs(session.leg, old)
        self.feed(old, output[1500:])
        self.assertComplete(transport)
        self.assertClean()

    def test_candidatePromotedWhilePaused(self) -> None:
        """
        A candidate that takes over while the client is paused starts paused.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        session.pauseProducing()
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        self.assertEqual(candidateTransport.producerState, "producing")
        candidate.dataReceived(framed(CONTENT[session.offset :])[:1200])
        self.assertIs(session.leg, candidate)
        self.assertEqual(candidateTransport.producerState, "paused")
        session.resumeProducing()
        self.assertEqual(candidateTransport.producerState, "producing")


class StallTests(ProxyTestCase):
    """
    Tests for a backend that stops sending.
    """

    def test_stall(self) -> None:
        """
        A leg that sends nothing for the stall timeout while the client reads
        is dropped and another attempt is made.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.reactor.advance(POLICY.stallTimeout - 0.5)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertFalse(oldTransport.disconnecting)
        self.reactor.advance(0.5)
        self.assertTrue(oldTransport.disconnected)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        _, retryTransport = self.acceptLeg()
        self.assertEqual(
            retryTransport.value(), b"GETID big.bin %d\n" % session.delivered
        )

    def test_pausedIsNoStall(self) -> None:
        """
        A leg that sends nothing because the client is paused is not a stall,
        before or just after the client resumes.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        session.pauseProducing()
        self.reactor.advance(POLICY.stallTimeout * 3)
        session.resumeProducing()
        self.reactor.advance(POLICY.stallTimeout - 0.5)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertFalse(oldTransport.disconnecting)
        self.assertIs(session.leg, old)


class FlowControlTests(ProxyTestCase):
    """
    Tests for passing the client's back pressure on to the backend.
    """

    def test_registeredAsProducer(self) -> None:
        """
        The session is the client transport's streaming producer.
        """
        session, transport = self.connectClient()
        self.assertIs(transport.producer, session)
        self.assertTrue(transport.streaming)

    def test_pauseAndResume(self) -> None:
        """
        Pausing the session pauses the active leg's transport, and resuming
        it resumes the leg.
        """
        session, transport, leg, legTransport = self.streamingSession(500)
        session.pauseProducing()
        self.assertEqual(legTransport.producerState, "paused")
        session.resumeProducing()
        self.assertEqual(legTransport.producerState, "producing")


class ClientGoneTests(ProxyTestCase):
    """
    Tests for a client that disconnects, at each phase of its stream.
    """

    def clientLeaves(self, session: ProxySession) -> None:
        """
        Tell C{session} its client connection is gone.
        """
        session.connectionLost(Failure(ConnectionLost()))

    def test_beforeRequest(self) -> None:
        """
        A client that leaves before asking leaves nothing behind.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET bi")
        self.clientLeaves(session)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertClean()

    def test_whileConnecting(self) -> None:
        """
        A client that leaves while the first leg connects stops that
        connection attempt.
        """
        session, transport = self.openStream()
        self.clientLeaves(session)
        self.assertTrue(self.reactor.connectors[-1]._disconnected)
        self.assertClean()
        # A late outcome of the attempt changes nothing.
        self.refuseLeg()
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertClean()

    def test_midStream(self) -> None:
        """
        A client that leaves mid-stream drops the leg.
        """
        session, transport, leg, legTransport = self.streamingSession(1500)
        self.clientLeaves(session)
        self.assertTrue(legTransport.disconnected)
        self.assertClean()
        leg.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertClean()

    def test_duringMove(self) -> None:
        """
        A client that leaves during a planned move drops both legs.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, candidateTransport = self.acceptLeg()
        self.clientLeaves(session)
        self.assertTrue(oldTransport.disconnected)
        self.assertTrue(candidateTransport.disconnected)
        self.assertClean()

    def test_duringMoveConnecting(self) -> None:
        """
        A client that leaves while a planned move's candidate connects drops
        the old leg and stops the attempt.
        """
        session, transport, old, oldTransport = self.streamingSession(1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        self.clientLeaves(session)
        self.assertTrue(oldTransport.disconnected)
        self.assertTrue(self.reactor.connectors[-1]._disconnected)
        self.assertClean()

    def test_duringBackoff(self) -> None:
        """
        A client that leaves while the proxy waits to retry cancels the retry.
        """
        session, transport, leg, legTransport = self.streamingSession(1500)
        leg.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.refuseLeg()
        count = len(self.reactor.tcpClients)
        self.assertNotEqual(self.reactor.getDelayedCalls(), [])
        self.clientLeaves(session)
        self.assertClean()
        self.reactor.advance(POLICY.deadline)
        self.assertEqual(len(self.reactor.tcpClients), count)


class ThreadCallRecorder:
    """
    The part of a reactor L{ReloadOnHangup} uses, recording what it is asked
    to run.

    @ivar calls: the callable, arguments and keywords of each call.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...], dict]] = []

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        self.calls.append((f, args, kw))


class ReloadOnHangupTests(ProxyTestCase):
    """
    Tests for L{ReloadOnHangup}.
    """

    def setUp(self) -> None:
        super().setUp()
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)
        signal.signal(signal.SIGHUP, self.previousHandler)
        self.recorder = ThreadCallRecorder()
        self.service = ReloadOnHangup(self.recorder, self.factory)

    def previousHandler(self, signum: int, frame: FrameType | None) -> None:
        """
        The handler in place before the service starts; it must not run.
        """
        self.fail("the previous SIGHUP handler ran")

    def test_startInstallsHandler(self) -> None:
        """
        Starting the service replaces the SIGHUP handler.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), self.previousHandler)

    def test_hangupSchedulesReload(self) -> None:
        """
        A SIGHUP schedules exactly one reload on the reactor thread and does
        not reload inside the handler.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.writeRoutes({NAME: str(NEW)})
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(self.recorder.calls, [(self.factory.reload, (), {})])
        self.assertEqual(self.factory.routes, {NAME: OLD})
        f, args, kw = self.recorder.calls[0]
        f(*args, **kw)
        self.assertEqual(self.factory.routes, {NAME: NEW})

    def test_stopRestoresHandler(self) -> None:
        """
        Stopping the service puts the previous SIGHUP handler back.
        """
        self.service.startService()
        self.service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.previousHandler)
