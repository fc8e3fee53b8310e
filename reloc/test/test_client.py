"""
Tests for L{reloc.client}: rate parsing, rate limiting and the download
protocol, over an in-memory transport and a fake clock.
"""

from __future__ import annotations

import io

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from reloc.client import DownloadError, DownloadProtocol, RateLimiter, parseRate
from reloc.protocol import Request


class ParseRateTests(SynchronousTestCase):
    """
    Tests for L{parseRate}.
    """

    def test_plain(self) -> None:
        """
        A bare number is bytes per second.
        """
        self.assertEqual(parseRate("100"), 100.0)

    def test_suffixes(self) -> None:
        """
        C{K}, C{M} and C{G} multiply by powers of 1024.
        """
        self.assertEqual(parseRate("10K"), 10 * 1024.0)
        self.assertEqual(parseRate("2M"), 2 * 1024.0**2)
        self.assertEqual(parseRate("1G"), 1024.0**3)

    def test_lowerCaseSuffix(self) -> None:
        """
        Suffixes are taken in lower case too.
        """
        self.assertEqual(parseRate("10k"), 10 * 1024.0)

    def test_fraction(self) -> None:
        """
        A fractional number with a suffix is taken.
        """
        self.assertEqual(parseRate("1.5M"), 1.5 * 1024**2)

    def test_notANumber(self) -> None:
        """
        Text that is not a number is refused with L{ValueError}.
        """
        for text in ["abc", "K", "10X", "M10", "1.5.1M"]:
            self.assertRaises(ValueError, parseRate, text)

    def test_notPositive(self) -> None:
        """
        Zero, negative, infinite and NaN rates are refused with L{ValueError}.
        """
        for text in ["0", "-1", "-5K", "0.0M", "inf", "infK", "1e400", "nan"]:
            self.assertRaises(ValueError, parseRate, text)


class RateLimiterTests(SynchronousTestCase):
    """
    Tests for L{RateLimiter}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.limiter = RateLimiter(100.0, self.clock)

    def test_pausesUntilDue(self) -> None:
        """
        Bytes that arrive ahead of the rate pause the transport until the
        rate catches up.
        """
        self.limiter.received(250, self.transport)
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(2.49)
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(0.01)
        self.assertEqual(self.transport.producerState, "producing")

    def test_noPauseUnderRate(self) -> None:
        """
        Bytes that arrive slower than the rate do not pause the transport.
        """
        self.limiter.received(100, self.transport)
        self.clock.advance(1)
        self.clock.advance(5)
        self.limiter.received(100, self.transport)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_onePauseAtATime(self) -> None:
        """
        More bytes while paused schedule no second resume.
        """
        self.limiter.received(100, self.transport)
        self.limiter.received(100, self.transport)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stop(self) -> None:
        """
        Stopping the limiter cancels a pending resume.
        """
        self.limiter.received(500, self.transport)
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.transport.producerState, "paused")


class DownloadProtocolTests(SynchronousTestCase):
    """
    Tests for L{DownloadProtocol}.
    """

    idleTimeout = 120.0

    def connect(
        self, rate: float | None = None
    ) -> tuple[DownloadProtocol, StringTransport]:
        """
        @return: a connected download protocol and its transport.
        """
        self.clock = Clock()
        self.sink = io.BytesIO()
        self.progress: list[int] = []
        protocol = DownloadProtocol(
            Request("big.bin", 0),
            self.sink,
            self.clock,
            rate=rate,
            idleTimeout=self.idleTimeout,
            progress=self.progress.append,
        )
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_sendsRequest(self) -> None:
        """
        The request line is the first thing written.
        """
        _, transport = self.connect()
        self.assertEqual(transport.value(), b"GET big.bin 0\n")

    def test_writesOnlyPayload(self) -> None:
        """
        Only payload bytes reach the sink, and C{done} fires with their count
        once the connection closes after C{EOF}.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"DATA 3\nabcDATA 4\nEOF\n")
        self.assertNoResult(protocol.done)
        protocol.dataReceived(b"EOF\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(protocol.done), 7)
        self.assertEqual(self.sink.getvalue(), b"abcEOF\n")
        self.assertEqual(sum(self.progress), 7)

    def test_oneByteAtATime(self) -> None:
        """
        An answer fed one byte at a time writes the same payload.
        """
        protocol, _ = self.connect()
        answer = b"DATA 5\nhelloDATA 0\nDATA 1\n!EOF\r\n"
        for i in range(len(answer)):
            protocol.dataReceived(answer[i : i + 1])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(protocol.done), 6)
        self.assertEqual(self.sink.getvalue(), b"hello!")

    def test_emptyFile(self) -> None:
        """
        C{EOF} alone completes with a count of zero.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"EOF\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(protocol.done), 0)
        self.assertEqual(self.sink.getvalue(), b"")

    def test_refusal(self) -> None:
        """
        An C{ERR} line aborts the connection and fails C{done} with
        L{DownloadError} naming the code.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"ERR 404 no such file\n")
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(protocol.done, DownloadError)
        self.assertIn("ERR 404 no such file", str(failure.value))
        self.assertEqual(self.sink.getvalue(), b"")

    def test_refusalAfterPayload(self) -> None:
        """
        An C{ERR} line after some payload fails C{done}.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"DATA 2\nabERR 503 no backend\n")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(protocol.done, DownloadError)
        self.assertEqual(self.sink.getvalue(), b"ab")

    def test_malformed(self) -> None:
        """
        A malformed frame aborts the connection and fails C{done}.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"DATA -1\n")
        self.assertTrue(transport.disconnected)
        protocol.dataReceived(b"DATA 1\nx")
        protocol.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(protocol.done, DownloadError)
        self.assertIn("malformed", str(failure.value))
        self.assertEqual(self.sink.getvalue(), b"")

    def test_bytesAfterEof(self) -> None:
        """
        Bytes after C{EOF} fail the download instead of passing as complete.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"DATA 1\nx")
        protocol.dataReceived(b"EOF\nDATA 1\ny")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(protocol.done, DownloadError)

    def test_earlyClose(self) -> None:
        """
        A connection closed before C{EOF} fails C{done} and says how far it
        got.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"DATA 10\nabc")
        protocol.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(protocol.done, DownloadError)
        self.assertIn("after 3 bytes", str(failure.value))
        self.assertEqual(self.sink.getvalue(), b"abc")

    def test_closeAtBoundary(self) -> None:
        """
        A connection closed between frames but before C{EOF} still fails.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"DATA 3\nabc")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(protocol.done, DownloadError)

    def test_idleTimeout(self) -> None:
        """
        Nothing received for the idle timeout aborts the connection and
        fails C{done}.
        """
        protocol, transport = self.connect()
        self.clock.advance(self.idleTimeout - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(protocol.done, DownloadError)
        self.assertIn("nothing received", str(failure.value))

    def test_dataResetsIdleTimeout(self) -> None:
        """
        Each arrival restarts the idle timeout.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"DATA 10\n")
        for _ in range(5):
            self.clock.advance(self.idleTimeout - 1)
            protocol.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(self.idleTimeout)
        self.assertTrue(transport.disconnected)

    def test_noTimersLeft(self) -> None:
        """
        A finished download leaves no timer behind.
        """
        protocol, _ = self.connect(rate=10.0)
        protocol.dataReceived(b"DATA 50\n" + b"x" * 50)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(protocol.done, DownloadError)

    def test_rateLimitPauses(self) -> None:
        """
        With a rate, data that arrives too fast pauses the transport until
        the clock catches up.
        """
        protocol, transport = self.connect(rate=100.0)
        data = b"DATA 492\n" + b"x" * 491
        self.assertEqual(len(data), 500)
        protocol.dataReceived(data)
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(4.9)
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(0.1)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"x")
        self.assertEqual(self.sink.getvalue(), b"x" * 492)

    def test_noRateNoPause(self) -> None:
        """
        Without a rate the transport is never paused.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"DATA 100000\n" + b"x" * 100000)
        self.assertEqual(transport.producerState, "producing")
