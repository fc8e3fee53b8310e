"""
The relocating proxy.

A client sends one request and keeps its connection for the whole stream.
Behind it the proxy holds one backend connection at a time (a I{leg}), and
re-frames the payload it reads so that the client only ever sees whole
frames of bytes the proxy already has.  The proxy counts the payload bytes it
has delivered; any later leg asks its backend for the file from exactly that
offset, so a stream can move between backends at any byte.

A planned move (the route changed) opens a I{candidate} leg while the old leg
keeps streaming.  The candidate asks for the file from the offset reached at
that moment; its first good answer promotes it, the old leg is dropped, and
the bytes the old leg delivered in the meantime are skipped from the new one.
An unplanned break (the leg failed) re-reads the routes and tries again with
growing delays until a deadline, after which the client gets C{ERR 503}.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from reloc.metrics import ProxyMetrics
from reloc.protocol import (
    BAD_OFFSET,
    BAD_REQUEST,
    EOF_LINE,
    FORBIDDEN,
    NOT_FOUND,
    UNAVAILABLE,
    End,
    Event,
    FrameDecoder,
    Identified,
    Identity,
    LineReceiver,
    Payload,
    ProtocolError,
    Refusal,
    Request,
    dataHeader,
    encodeError,
    parseRequest,
)
from reloc.routes import Address, RoutesError, loadRoutes
from reloc.service import drainConnections

#: The most and the least a stream reads from its backend at a time.
MAX_READ = 128 * 1024
MIN_READ = 16 * 1024

#: Payload bytes a new leg may have to read and drop to catch up with the
#: offset the old leg reached while the new one was being checked; further
#: behind, it is asked again from the current offset instead.
MAX_SKIP = 1024 * 1024

#: Backend refusals about the request itself, passed on to the client when
#: they answer the first leg of a stream.  Any other refusal means the backend
#: is not fit to serve, and another is tried.
_FINAL_REFUSALS = frozenset([BAD_REQUEST, FORBIDDEN, NOT_FOUND, BAD_OFFSET])


@dataclass(frozen=True)
class RetryPolicy:
    """
    How hard the proxy tries to find a backend for a broken stream.

    @ivar initialDelay: seconds before the second attempt.
    @ivar factor: each delay is this many times the one before.
    @ivar maxDelay: the delays stop growing here.
    @ivar jitter: each delay is stretched by up to this fraction, at random,
        so that streams broken together do not retry in lock step.
    @ivar deadline: seconds after a break when the client gets C{ERR 503}.
    @ivar connectTimeout: seconds one connection attempt may take.
    @ivar answerTimeout: seconds from the start of an attempt to the
        backend's first answer.
    @ivar stallTimeout: seconds a streaming backend may send nothing while
        the client is ready for more, before it counts as broken.
    """

    initialDelay: float = 0.05
    factor: float = 2.0
    maxDelay: float = 2.0
    jitter: float = 0.2
    deadline: float = 30.0
    connectTimeout: float = 5.0
    answerTimeout: float = 10.0
    stallTimeout: float = 30.0

    def delay(self, attempt: int, draw: Callable[[], float]) -> float:
        """
        @return: seconds to wait before attempt number C{attempt} (from 1).
        """
        base = min(self.maxDelay, self.initialDelay * self.factor ** (attempt - 1))
        return base * (1 + self.jitter * draw())


class BackendLeg(Protocol):
    """
    One connection to a backend, asking for one file from one offset.

    @ivar address: where it connects.
    @ivar requestOffset: the offset it asked for.
    @ivar skip: payload bytes still to drop before the first new byte, when
        the stream moved on while this leg was being checked.
    @ivar retired: set once the session is done with this leg; nothing it
        reports afterwards counts.
    @ivar exact: whether this leg was asked again for an offset close to the
        current one, and is to be taken however far behind it is.
    """

    def __init__(self, session: ProxySession, address: Address, offset: int):
        self.session = session
        self.address = address
        self.requestOffset = offset
        self.skip = 0
        self.retired = False
        self.exact = False
        self.progressed = False
        self.connector: IConnector | None = None
        self.answerCall: IDelayedCall | None = None
        self.lastActivity = session.factory.clock.seconds()
        self._decoder = FrameDecoder(expectIdentity=True)

    def connectionMade(self) -> None:
        if self.retired:
            self.transport.abortConnection()
            return
        self.session.sizeBuffers()
        name = self.session.request.name
        self.transport.write(Request(name, self.requestOffset, True).toLine())

    def dataReceived(self, data: bytes) -> None:
        if self.retired:
            return
        self.lastActivity = self.session.factory.clock.seconds()
        try:
            events = self._decoder.feed(data)
        except ProtocolError as e:
            self.session.legFailed(self, f"malformed answer: {e.reason}")
            return
        for event in events:
            self.session.legEvent(self, event)
            if self.retired:
                return

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.retired:
            self.session.legFailed(self, "connection closed before EOF")

    def retire(self) -> None:
        """
        Drop this leg, whether it is connecting or connected.
        """
        if self.retired:
            return
        self.retired = True
        self.stopWaiting()
        if self.transport is not None:
            self.transport.abortConnection()
        elif self.connector is not None:
            self.connector.disconnect()

    def stopWaiting(self) -> None:
        """
        Cancel the timeout for this leg's first answer.
        """
        if self.answerCall is not None:
            if self.answerCall.active():
                self.answerCall.cancel()
            self.answerCall = None


class _LegFactory(ClientFactory):
    """
    Connects exactly one L{BackendLeg}.
    """

    noisy = False

    def __init__(self, leg: BackendLeg):
        self.leg = leg

    def buildProtocol(self, addr: object) -> BackendLeg:
        return self.leg

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.leg.retired:
            why = reason.getErrorMessage()
            self.leg.session.legFailed(self.leg, f"cannot connect: {why}")


@implementer(IPushProducer, IHalfCloseableProtocol)
class ProxySession(Protocol):
    """
    One client connection and the stream it asked for.

    It is the client transport's producer: when the client stops draining,
    the backend leg stops being read, so a slow client slows the backend
    instead of filling the proxy's memory.

    @ivar request: the client's request, once it arrived.
    @ivar delivered: payload bytes written to the client.
    @ivar leg: the leg the stream currently comes from, if any.
    @ivar candidate: a leg being connected and checked, if any.
    """

    log = Logger()
    factory: ProxyFactory
    request: Request
    leg: BackendLeg | None = None
    candidate: BackendLeg | None = None
    identity: Identity | None = None
    finished = False

    def connectionMade(self) -> None:
        if len(self.factory.connections) >= self.factory.maxConnections:
            # Refused before anything is set up; connectionLost sees finished.
            self.finished = True
            self.log.warn(
                "connection refused: {count} sessions already open",
                event="connection.refused",
                count=len(self.factory.connections),
            )
            self.factory.metrics.errors.labels(str(UNAVAILABLE)).inc()
            self.transport.write(encodeError(UNAVAILABLE, "too many connections"))
            self.transport.loseConnection()
            return
        self.factory.connections.add(self)
        self.factory.sessions.add(self)
        self.factory.sessionAdded()
        self.delivered = 0
        self.clientPaused = False
        self._pausedAt = 0.0
        self._streaming = False
        self._lines: LineReceiver | None = LineReceiver()
        self._attempts = 0
        self._retryCall: IDelayedCall | None = None
        self._deadlineCall: IDelayedCall | None = None
        self._stallWatch: LoopingCall | None = None
        self._openedAt = self.factory.clock.seconds()
        self._lastDelivery = self._openedAt
        self._movedAt: float | None = None
        self._retryDelay = 0.0
        self._idleCall: IDelayedCall | None = self.factory.clock.callLater(
            self.factory.requestTimeout, self._requestTimedOut
        )
        self.transport.registerProducer(self, True)

    @property
    def offset(self) -> int:
        """
        The file offset of the next byte the client is owed.
        """
        return self.request.offset + self.delivered

    def sizeBuffers(self) -> None:
        """
        Size this stream's reads and buffers from its share of the proxy's
        buffer memory.

        The proxy's cost is per chunk, not per byte, so a few streams read
        large chunks; many streams share the same memory in smaller ones.
        The client transport pauses the backend once a chunk and its header
        are buffered, so a lagging client holds about two chunks here, and
        one that keeps up never pauses the backend at all.
        """
        size = self.factory.chunkSize()
        if self.leg is not None and self.leg.transport is not None:
            self.leg.transport.bufferSize = size
        if self.candidate is not None and self.candidate.transport is not None:
            self.candidate.transport.bufferSize = size
        self.transport.bufferSize = size + 64
        # Twisted sends at most SEND_LIMIT (128 KiB) per call and waits a
        # reactor turn for the rest; a chunk and its header should go in one.
        self.transport.SEND_LIMIT = max(128 * 1024, size + 1024)

    def describe(self, now: float) -> dict[str, object]:
        """
        @return: this stream's state, for the status view.
        """
        requested = self._lines is None and hasattr(self, "request")
        elapsed = max(now - self._openedAt, 1e-9)
        backend, movingTo = self.leg, self.candidate
        if not self._streaming:
            backend, movingTo = self.candidate, None
        if not requested:
            state = "request"
        elif self.leg is None:
            state = "connecting" if not self._streaming else "retrying"
        elif self.candidate is not None:
            state = "moving"
        else:
            state = "streaming"
        return {
            "name": self.request.name if requested else None,
            "client": _peer(self.transport),
            "backend": str(backend.address) if backend else None,
            "movingTo": str(movingTo.address) if movingTo else None,
            "state": state,
            "offset": self.offset if requested else None,
            "delivered": self.delivered,
            "rate": round(self.delivered / elapsed),
            "seconds": round(elapsed, 3),
        }

    # Client side.

    def dataReceived(self, data: bytes) -> None:
        if self._lines is None:
            # One request per connection: later bytes are dropped unread.
            return
        try:
            line = self._lines.feed(data)
            if line is None:
                return
            self._lines = None
            self._cancel("_idleCall")
            self.request = parseRequest(line)
        except ProtocolError as e:
            self._refuse(e.code, e.reason)
            return
        address = self.factory.routes.get(self.request.name)
        if address is None:
            self._refuse(NOT_FOUND, "no route for this name")
            return
        self.factory.metrics.streams.inc()
        self.log.info(
            "stream opened: {name} from offset {offset} for {client}, via {backend}",
            event="stream.opened",
            name=self.request.name,
            offset=self.request.offset,
            client=_peer(self.transport),
            backend=str(address),
        )
        self.candidate = self._connect(address)

    def readConnectionLost(self) -> None:
        # A client may close its sending side after the request and still
        # read the whole answer; before the request, it never will ask.
        if self._lines is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.connections.discard(self)
        if not self.finished:
            outcome = "client left" if self._lines is None else "no request"
            self._finish(outcome)

    def pauseProducing(self) -> None:
        self.clientPaused = True
        self._pausedAt = self.factory.clock.seconds()
        if self.leg is not None and self.leg.transport is not None:
            self.leg.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.clientPaused = False
        if self.leg is not None and self.leg.transport is not None:
            # Time spent paused for the client does not count as a stall.
            self.leg.lastActivity = self.factory.clock.seconds()
            self.leg.transport.resumeProducing()

    def stopProducing(self) -> None:
        # connectionLost follows and cleans up.
        pass

    # Backend side.

    def legEvent(self, leg: BackendLeg, event: Event) -> None:
        """
        A leg decoded one event.
        """
        if leg is self.candidate:
            self._candidateAnswered(leg, event)
            return
        if leg is not self.leg:
            return
        if isinstance(event, Payload):
            self._deliver(leg, event.data)
        elif isinstance(event, End):
            assert self.identity is not None
            if leg.skip or self.offset != self.identity.size:
                self.legFailed(leg, "EOF before the end of the file")
                return
            self.transport.write(EOF_LINE)
            self._finish("complete")
        else:
            self.legFailed(leg, f"backend refused: {event.code} {event.reason}")

    def legFailed(self, leg: BackendLeg, why: str) -> None:
        """
        A leg broke: it could not connect, closed early or sent bad frames.
        """
        leg.retire()
        if self.finished:
            return
        if leg is self.candidate:
            self.candidate = None
            event, verdict = "backend.notready", "not ready"
        elif leg is self.leg:
            self.leg = None
            event, verdict = "backend.failed", "failed"
            if leg.progressed:
                # A leg that delivered bytes was a success: the next break
                # starts the delays again.
                self._attempts = 0
        else:
            return
        self.log.warn(
            "backend {backend} {verdict} for {name} at offset {offset}: {why}",
            event=event,
            verdict=verdict,
            backend=str(leg.address),
            name=self.request.name,
            offset=self.offset,
            why=why,
        )
        if self.leg is None and self._deadlineCall is None:
            self._deadlineCall = self.factory.clock.callLater(
                self.factory.policy.deadline, self._giveUp
            )
        if self.candidate is None:
            self._scheduleRetry()

    def routeUpdated(self) -> None:
        """
        The route table changed: move the stream if its name routes elsewhere.
        """
        if self.finished or self._lines is not None:
            return
        address = self.factory.routes.get(self.request.name)
        if address is None:
            # A removed route leaves a running stream where it is.
            return
        pending = self.candidate or self.leg
        if pending is not None and pending.address == address:
            return
        if self.candidate is not None:
            self.candidate.retire()
            self.candidate = None
        self._cancel("_retryCall")
        self._attempts = 0
        if self.leg is not None and self.leg.address == address:
            return
        if self.leg is not None:
            self.log.info(
                "moving {name} from {old} to {new}, now at offset {offset}",
                event="stream.moving",
                name=self.request.name,
                old=str(self.leg.address),
                new=str(address),
                offset=self.offset,
            )
        self.candidate = self._connect(address)

    def _candidateAnswered(self, leg: BackendLeg, event: Event) -> None:
        """
        Judge a candidate's first answer: its file's identity, or a refusal.

        The first identity a stream sees is the one every later backend must
        match, size and SHA-256, before any of its bytes are used.  A copy
        that is shorter, longer or different is not ready; the old leg, if
        there is one, carries on meanwhile.
        """
        if isinstance(event, Refusal):
            if not self._streaming and event.code in _FINAL_REFUSALS:
                self._refuse(event.code, event.reason)
            else:
                self.legFailed(leg, f"backend refused: {event.code} {event.reason}")
            return
        assert isinstance(event, Identified)
        if self.identity is None:
            self.identity = event.identity
        elif event.identity != self.identity:
            self.legFailed(leg, _difference(self.identity, event.identity))
            return
        behind = self.offset - leg.requestOffset
        if self.leg is not None and behind > MAX_SKIP and not leg.exact:
            # The old leg streamed on while this one was slow to answer (the
            # new backend hashing a fresh copy, say).  Reading and dropping
            # that much would stall the client; the old leg carries on while
            # a second connection asks for the current offset.  Its identity
            # is known now, so it answers at once.
            leg.retire()
            self.candidate = self._connect(leg.address)
            self.candidate.exact = True
            return
        self._promote(leg)

    def _promote(self, leg: BackendLeg) -> None:
        old = self.leg
        self.candidate = None
        self.leg = leg
        leg.stopWaiting()
        leg.skip = self.offset - leg.requestOffset
        # The deadline and the delays stay until the leg delivers a byte: a
        # backend that answers its ID line and then dies must not be retried
        # at once and forever.
        self._cancel("_retryCall")
        if self.clientPaused:
            leg.transport.pauseProducing()
        if not self._streaming:
            self._streaming = True
            self._watchForStalls()
            if self.request.identify:
                assert self.identity is not None
                self.transport.write(self.identity.toLine())
            return
        reason = "fault" if old is None else "reload"
        if old is not None:
            old.retire()
        self._movedAt = self._lastDelivery
        self.factory.metrics.moves.labels(reason).inc()
        self.log.info(
            "stream moved: {name} from {old} to {new} at offset {offset} ({reason})",
            event="stream.moved",
            name=self.request.name,
            old="-" if old is None else str(old.address),
            new=str(leg.address),
            offset=self.offset,
            reason=reason,
        )

    def _watchForStalls(self) -> None:
        timeout = min(self.factory.policy.stallTimeout, self.factory.clientTimeout)
        self._stallWatch = LoopingCall(self._checkStall)
        self._stallWatch.clock = self.factory.clock
        self._stallWatch.start(timeout / 4, now=False)

    def _checkStall(self) -> None:
        self.sizeBuffers()
        now = self.factory.clock.seconds()
        if self.clientPaused:
            if now - self._pausedAt >= self.factory.clientTimeout:
                self.log.warn(
                    "client {client} stopped reading {name} at offset {offset}",
                    event="client.stalled",
                    client=_peer(self.transport),
                    name=self.request.name,
                    offset=self.offset,
                )
                self.transport.abortConnection()
            return
        leg = self.leg
        if leg is None:
            return
        idle = now - leg.lastActivity
        if idle >= self.factory.policy.stallTimeout:
            self.legFailed(leg, f"sent nothing for {idle:.1f}s")

    def _deliver(self, leg: BackendLeg, data: bytes) -> None:
        if leg.skip:
            cut = min(leg.skip, len(data))
            leg.skip -= cut
            data = data[cut:]
            if not data:
                return
        assert self.identity is not None
        if self.offset + len(data) > self.identity.size:
            self.legFailed(leg, "more bytes than the file has")
            return
        if not leg.progressed:
            leg.progressed = True
            self._cancel("_deadlineCall")
        self.delivered += len(data)
        self.factory.relayedBytes += len(data)
        # The leg noted the time when these bytes arrived: one clock read per
        # chunk is enough.
        self._lastDelivery = now = leg.lastActivity
        if self._movedAt is not None:
            self.factory.metrics.switchStall.observe(now - self._movedAt)
            self._movedAt = None
        self.transport.writeSequence([dataHeader(len(data)), data])

    def _connect(self, address: Address) -> BackendLeg:
        leg = BackendLeg(self, address, self.offset)
        leg.connector = self.factory.reactor.connectTCP(
            address.host,
            address.port,
            _LegFactory(leg),
            timeout=self.factory.policy.connectTimeout,
        )
        leg.answerCall = self.factory.clock.callLater(
            self.factory.policy.answerTimeout, self._noAnswer, leg
        )
        return leg

    def _noAnswer(self, leg: BackendLeg) -> None:
        leg.answerCall = None
        self.legFailed(leg, "no answer in time")

    def _scheduleRetry(self) -> None:
        self._attempts += 1
        if self.leg is None:
            # After a break the first attempt is at once; the delays start
            # with the second.
            attempt = self._attempts - 1
        else:
            attempt = self._attempts
        if attempt == 0:
            delay = 0.0
        else:
            delay = self.factory.policy.delay(attempt, self.factory.random)
        self._cancel("_retryCall")
        self._retryDelay = delay
        self._retryCall = self.factory.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        self.factory.refreshRoutes()
        if self.finished or self.candidate is not None:
            # Refreshing the routes may already have started a new leg.
            return
        address = self.factory.routes.get(self.request.name)
        if self.leg is not None and (address is None or address == self.leg.address):
            # A pending move whose route went back or away: nothing to do.
            return
        self.factory.metrics.retries.inc()
        if address is None:
            self.log.warn(
                "retry {attempt} after {delay:.3f}s: no route for {name}",
                event="stream.retry",
                attempt=self._attempts,
                delay=self._retryDelay,
                name=self.request.name,
                backend=None,
                offset=self.offset,
            )
            self._scheduleRetry()
            return
        self.log.info(
            "retry {attempt} after {delay:.3f}s: {name} on {backend} "
            "at offset {offset}",
            event="stream.retry",
            attempt=self._attempts,
            delay=self._retryDelay,
            name=self.request.name,
            backend=str(address),
            offset=self.offset,
        )
        self.candidate = self._connect(address)

    def _giveUp(self) -> None:
        self._deadlineCall = None
        self.log.error(
            "gave up on {name} at offset {offset}: no backend within {deadline}s",
            event="stream.gaveup",
            name=self.request.name,
            offset=self.offset,
            deadline=self.factory.policy.deadline,
        )
        self.closeWithError("no backend could continue", "gave up")

    def closeWithError(self, reason: str, outcome: str) -> None:
        """
        End the stream with C{ERR 503}; the client has only whole frames, so
        the line comes after the last one.
        """
        self.factory.metrics.errors.labels(str(UNAVAILABLE)).inc()
        self.transport.write(encodeError(UNAVAILABLE, reason))
        self._finish(outcome)

    def _requestTimedOut(self) -> None:
        self._idleCall = None
        self.transport.abortConnection()

    def _refuse(self, code: int, reason: str) -> None:
        self._lines = None
        self.log.info(
            "request refused: {code} {reason}",
            event="request.refused",
            code=code,
            reason=reason,
            client=_peer(self.transport),
        )
        self.factory.metrics.errors.labels(str(code)).inc()
        self.transport.write(encodeError(code, reason))
        self._finish(f"refused {code}")

    def _finish(self, outcome: str) -> None:
        """
        End the session: drop every leg and timer, close the client.
        """
        if self.finished:
            return
        self.finished = True
        for name in ("_idleCall", "_retryCall", "_deadlineCall"):
            self._cancel(name)
        for leg in (self.leg, self.candidate):
            if leg is not None:
                leg.retire()
        self.leg = self.candidate = None
        if self._stallWatch is not None:
            self._stallWatch.stop()
            self._stallWatch = None
        self.factory.sessions.discard(self)
        if self._streaming or outcome == "gave up":
            self.log.info(
                "stream closed: {name}, {bytes} bytes in {duration:.3f}s ({outcome})",
                event="stream.closed",
                name=self.request.name,
                client=_peer(self.transport),
                start=self.request.offset,
                bytes=self.delivered,
                duration=self.factory.clock.seconds() - self._openedAt,
                outcome=outcome,
            )
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _cancel(self, attribute: str) -> None:
        call = getattr(self, attribute)
        if call is not None:
            if call.active():
                call.cancel()
            setattr(self, attribute, None)


def _difference(expected: Identity, found: Identity) -> str:
    if expected.size != found.size:
        return f"a different file: {found.size} bytes, not {expected.size}"
    return f"a different file: sha256 {found.sha256[:12]}, not {expected.sha256[:12]}"


def _peer(transport: object) -> str:
    getPeer = getattr(transport, "getPeer", None)
    if getPeer is None:
        return "?"
    peer = getPeer()
    host = getattr(peer, "host", None)
    return f"{host}:{getattr(peer, 'port', '?')}" if host else str(peer)


class ProxyFactory(Factory):
    """
    The proxy's shared state: the route table and the live sessions.

    @ivar routes: the table in force.
    @ivar sessions: every client session not yet finished.
    @ivar connections: every client connection not yet closed, which
        includes finished sessions whose last bytes are still being sent.
    """

    protocol = ProxySession
    log = Logger()

    def __init__(
        self,
        routesPath: str,
        reactor: IReactorTCP,
        clock: IReactorTime,
        policy: RetryPolicy = RetryPolicy(),
        requestTimeout: float = 30.0,
        random: Callable[[], float] = random.random,
        maxConnections: int = 4096,
        clientTimeout: float = 120.0,
        bufferMemory: int = 32 * 1024 * 1024,
    ):
        """
        @param requestTimeout: seconds a client may take to send its request.
        @param maxConnections: client connections served at once; more are
            answered with C{ERR 503} and closed.
        @param clientTimeout: seconds a client may go without reading before
            it is dropped.
        @param bufferMemory: bytes of relay buffers the streams share.
        @raise RoutesError: if the routes file cannot be used at start.
        """
        self.routesPath = routesPath
        self.reactor = reactor
        self.clock = clock
        self.policy = policy
        self.requestTimeout = requestTimeout
        self.random = random
        self.maxConnections = maxConnections
        self.clientTimeout = clientTimeout
        self.bufferMemory = bufferMemory
        self._sizedFor = 1
        self.sessions: set[ProxySession] = set()
        self.connections: set[ProxySession] = set()
        self._fileStamp = _stamp(routesPath)
        self.routes = loadRoutes(routesPath)
        self.loadedAt = time.time()
        self.relayedBytes = 0
        self.metrics = ProxyMetrics(
            lambda: len(self.sessions), lambda: self.relayedBytes
        )

    def reload(self) -> bool:
        """
        Re-read the routes file and move the streams whose route changed.

        A file that cannot be used is refused whole; the table in force stays.

        @return: whether the new table was taken.
        """
        # A refused file is not read again until it changes (or on SIGHUP).
        self._fileStamp = _stamp(self.routesPath)
        try:
            routes = loadRoutes(self.routesPath)
        except RoutesError as e:
            self.metrics.reloads.labels("refused").inc()
            self.log.error(
                "routes reload refused, old table kept: {why}",
                event="routes.refused",
                why=str(e),
            )
            return False
        changed = sorted(
            name
            for name in routes.keys() | self.routes.keys()
            if routes.get(name) != self.routes.get(name)
        )
        self.routes = routes
        self.loadedAt = time.time()
        self.metrics.reloads.labels("accepted").inc()
        self.log.info(
            "routes reloaded: {count} names, {changed} changed",
            event="routes.reloaded",
            count=len(routes),
            changed=", ".join(changed) or "none",
        )
        if changed:
            for session in list(self.sessions):
                session.routeUpdated()
        return True

    def sessionAdded(self) -> None:
        """
        Shrink every stream's buffers each time the number of sessions
        doubles, so that a crowd arriving at once shares the buffer memory
        instead of the first streams keeping large chunks.
        """
        if len(self.sessions) >= 2 * self._sizedFor:
            self._sizedFor = len(self.sessions)
            for session in self.sessions:
                if session.leg is not None or session.candidate is not None:
                    session.sizeBuffers()

    def chunkSize(self) -> int:
        """
        @return: how much one stream reads at a time now: its share of
            L{bufferMemory} (two chunks a stream), within bounds.
        """
        share = self.bufferMemory // (2 * max(1, len(self.sessions)))
        return max(MIN_READ, min(MAX_READ, share))

    def status(self) -> dict[str, object]:
        """
        @return: the route table in force and the live streams, for JSON.
        """
        now = self.clock.seconds()
        streams = [session.describe(now) for session in self.sessions]
        streams.sort(key=lambda stream: (str(stream["name"]), str(stream["client"])))
        return {
            "routes": {
                "path": self.routesPath,
                "loadedAt": _isoTime(self.loadedAt),
                "table": {name: str(a) for name, a in sorted(self.routes.items())},
            },
            "streams": streams,
        }

    def drain(self, grace: float) -> Deferred[None]:
        """
        Let the streams finish for up to C{grace} seconds, then end those
        still running with C{ERR 503}.

        @return: fires once every client connection is closed.
        """

        def cut() -> None:
            if self.sessions:
                self.log.warn(
                    "grace period over: closing {count} streams",
                    event="proxy.shutdown",
                    count=len(self.sessions),
                )
            for session in list(self.sessions):
                session.closeWithError("proxy shutting down", "shutdown")

        return drainConnections(self.clock, grace, self.connections, cut)

    def refreshRoutes(self) -> None:
        """
        Re-read the routes file if it changed since it was last read.
        """
        if _stamp(self.routesPath) != self._fileStamp:
            self.reload()


def _isoTime(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
