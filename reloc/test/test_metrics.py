"""
Tests for what the servers count and show: L{reloc.metrics}, the proxy's
status view and both servers' drain on shutdown, driven in memory like the
tests in L{reloc.test.test_proxy}.
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from reloc.fileserver import CHUNK_SIZE, FileServerProtocol
from reloc.metrics import JSONResource, MetricsResource, ProxyMetrics, makeRoot
from reloc.protocol import End, Refusal, dataHeader
from reloc.proxy import ProxySession
from reloc.test.test_fileserver import FileServerTestCase
from reloc.test.test_fileserver import decode as decodeServed
from reloc.test.test_proxy import (
    CONTENT,
    IDLINE,
    NAME,
    NEW,
    OLD,
    POLICY,
    ProxyTestCase,
    decode,
    framed,
)

#: The backend's frames after its C{ID} line.
FRAMES = framed(CONTENT)[len(IDLINE) :]

#: How many bytes of L{FRAMES} carry the first 1500 payload bytes.
FIRST_1500 = len(dataHeader(1000)) * 2 + 1500


def sample(
    registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None
) -> float:
    """
    @return: the value of one sample, 0 when it has not been created yet.
    """
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def closed(session: ProxySession | FileServerProtocol) -> None:
    """
    Play the end of C{session}'s connection, as the reactor reports it once
    a transport has really closed.
    """
    transport: Any = session.transport
    transport.disconnected = True
    session.connectionLost(Failure(ConnectionDone()))


class ProxyMetricsTests(ProxyTestCase):
    """
    Tests for the proxy's counters, each moved by its own event.
    """

    def value(self, name: str, **labels: str) -> float:
        """
        @return: the current value of one of the proxy's samples.
        """
        return sample(self.factory.metrics.registry, name, labels)

    def test_streamCounted(self) -> None:
        """
        A routed request counts one stream; the stream is active until it
        ends, and its payload counts as relayed.
        """
        session, transport = self.connectClient()
        self.assertEqual(self.value("reloc_proxy_active_streams"), 1)
        self.assertEqual(self.value("reloc_proxy_streams_total"), 0)
        session.dataReceived(b"GET big.bin 0\n")
        self.assertEqual(self.value("reloc_proxy_streams_total"), 1)
        leg, _ = self.acceptLeg()
        self.feed(leg, framed(CONTENT))
        self.assertComplete(transport)
        self.assertEqual(self.value("reloc_proxy_active_streams"), 0)
        self.assertEqual(self.value("reloc_proxy_relayed_bytes_total"), len(CONTENT))
        self.assertEqual(self.value("reloc_proxy_streams_total"), 1)

    def test_relayedFromOffset(self) -> None:
        """
        Only the payload delivered counts as relayed, not the bytes before
        the client's starting offset.
        """
        session, transport = self.openStream(offset=1234)
        leg, _ = self.acceptLeg()
        self.feed(leg, framed(CONTENT[1234:]))
        self.assertEqual(
            self.value("reloc_proxy_relayed_bytes_total"), len(CONTENT) - 1234
        )

    def test_badRequestCounted(self) -> None:
        """
        A malformed request counts one C{ERR 400} and no stream.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET big.bin -1\n")
        self.assertRefusal(transport, 400)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="400"), 1)
        self.assertEqual(self.value("reloc_proxy_streams_total"), 0)

    def test_noRouteCounted(self) -> None:
        """
        A name without a route counts one C{ERR 404}.
        """
        session, transport = self.connectClient()
        session.dataReceived(b"GET other.bin 0\n")
        self.assertRefusal(transport, 404)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="404"), 1)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="400"), 0)

    def test_backendNotFoundCounted(self) -> None:
        """
        A backend's C{ERR 404} passed on to the client counts as a 404.
        """
        session, transport = self.openStream()
        leg, _ = self.acceptLeg()
        leg.dataReceived(b"ERR 404 no such file\n")
        self.assertRefusal(transport, 404)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="404"), 1)

    def test_gaveUpCounted(self) -> None:
        """
        A stream that finds no backend before the deadline counts one
        C{ERR 503}.
        """
        session, transport = self.openStream()
        self.refuseLeg()
        self.reactor.advance(POLICY.deadline - 0.01)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="503"), 0)
        self.reactor.advance(0.01)
        self.assertRefusal(transport, 503)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="503"), 1)

    def test_retriesCounted(self) -> None:
        """
        Each new attempt after a failed one counts one retry; the first
        connection of a stream is not a retry.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        self.assertEqual(self.value("reloc_proxy_retries_total"), 0)
        leg.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.assertEqual(self.value("reloc_proxy_retries_total"), 1)
        self.refuseLeg()
        self.reactor.advance(POLICY.initialDelay)
        self.assertEqual(self.value("reloc_proxy_retries_total"), 2)
        self.assertEqual(len(self.reactor.tcpClients), 3)

    def test_faultMoveCounted(self) -> None:
        """
        A stream that resumes on a new leg after a break counts one move for
        a fault, and the gap the client saw is observed once, when the first
        new byte arrives.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        leg.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.reactor.advance(1.5)
        second, _ = self.acceptLeg()
        second.dataReceived(IDLINE)
        self.assertEqual(self.value("reloc_proxy_moves_total", reason="fault"), 1)
        self.assertEqual(self.value("reloc_proxy_moves_total", reason="reload"), 0)
        self.assertEqual(self.value("reloc_proxy_switch_stall_seconds_count"), 0)
        self.feed(second, framed(CONTENT[1500:])[len(IDLINE) :])
        self.assertComplete(transport)
        self.assertEqual(self.value("reloc_proxy_switch_stall_seconds_count"), 1)
        self.assertAlmostEqual(
            self.value("reloc_proxy_switch_stall_seconds_sum"), 1.5, places=6
        )

    def test_reloadMoveCounted(self) -> None:
        """
        A planned move counts one accepted reload and one move for a reload,
        and its stall, from the old leg's last byte to the new leg's first,
        is observed once.
        """
        session, transport, old, _ = self.streamingSession(FIRST_1500)
        self.writeRoutes({NAME: str(NEW)})
        self.assertTrue(self.factory.reload())
        self.assertEqual(self.value("reloc_proxy_reloads_total", result="accepted"), 1)
        candidate, _ = self.acceptLeg()
        self.reactor.advance(0.25)
        self.feed(candidate, framed(CONTENT[1500:]))
        self.assertComplete(transport)
        self.assertEqual(self.value("reloc_proxy_moves_total", reason="reload"), 1)
        self.assertEqual(self.value("reloc_proxy_moves_total", reason="fault"), 0)
        self.assertEqual(self.value("reloc_proxy_switch_stall_seconds_count"), 1)
        self.assertAlmostEqual(
            self.value("reloc_proxy_switch_stall_seconds_sum"), 0.25, places=6
        )
        self.assertEqual(
            self.value("reloc_proxy_switch_stall_seconds_bucket", le="0.25"), 1
        )
        self.assertEqual(
            self.value("reloc_proxy_switch_stall_seconds_bucket", le="0.1"), 0
        )

    def test_candidateNotReadyIsNoMove(self) -> None:
        """
        A candidate that refuses moves nothing and counts no move.
        """
        session, transport, old, _ = self.streamingSession(FIRST_1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        candidate, _ = self.acceptLeg()
        candidate.dataReceived(b"ERR 404 no such file\n")
        self.assertIs(session.leg, old)
        self.assertEqual(self.value("reloc_proxy_moves_total", reason="reload"), 0)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="404"), 0)

    def test_reloadRefusedCounted(self) -> None:
        """
        A routes file that cannot be used counts one refused reload and no
        accepted one.
        """
        self.writeRoutesBytes(b"{big.bin")
        self.assertFalse(self.factory.reload())
        self.assertEqual(self.value("reloc_proxy_reloads_total", result="refused"), 1)
        self.assertEqual(self.value("reloc_proxy_reloads_total", result="accepted"), 0)

    def test_connectionLimitCounted(self) -> None:
        """
        A connection over the limit counts one C{ERR 503} and is not active.
        """
        self.factory.maxConnections = 1
        self.connectClient()
        session, transport = self.connectClient()
        self.assertRefusal(transport, 503)
        self.assertEqual(self.value("reloc_proxy_errors_total", code="503"), 1)
        self.assertEqual(self.value("reloc_proxy_active_streams"), 1)

    def test_registriesApart(self) -> None:
        """
        Two metrics objects in one process count apart.
        """
        first = ProxyMetrics(lambda: 0, lambda: 0)
        second = ProxyMetrics(lambda: 0, lambda: 0)
        first.streams.inc()
        self.assertEqual(sample(first.registry, "reloc_proxy_streams_total"), 1)
        self.assertEqual(sample(second.registry, "reloc_proxy_streams_total"), 0)


class ProxyLogTests(ProxyTestCase):
    """
    Tests for the fields of the proxy's log events.
    """

    def test_movedEvent(self) -> None:
        """
        A planned move logs one C{stream.moved} event with both backends, the
        reason and the offset the new leg took over at.
        """
        session, transport, old, _ = self.streamingSession(FIRST_1500)
        self.writeRoutes({NAME: str(NEW)})
        with capturedLogs() as events:
            self.factory.reload()
            candidate, _ = self.acceptLeg()
            self.feed(candidate, framed(CONTENT[1500:]))
        moved = [e for e in events if e.get("event") == "stream.moved"]
        self.assertEqual(len(moved), 1)
        self.assertEqual(
            (moved[0]["old"], moved[0]["new"], moved[0]["offset"]),
            (str(OLD), str(NEW), 1500),
        )
        self.assertEqual(moved[0]["reason"], "reload")
        names = [e.get("event") for e in events if "event" in e]
        self.assertEqual(
            names,
            ["routes.reloaded", "stream.moving", "stream.moved", "stream.closed"],
        )

    def test_closedEvent(self) -> None:
        """
        A finished stream logs its bytes, start offset and outcome.
        """
        with capturedLogs() as events:
            session, transport = self.openStream(offset=100)
            leg, _ = self.acceptLeg()
            self.feed(leg, framed(CONTENT[100:]))
        [event] = [e for e in events if e.get("event") == "stream.closed"]
        self.assertEqual(
            (event["name"], event["start"], event["bytes"], event["outcome"]),
            (NAME, 100, len(CONTENT) - 100, "complete"),
        )


class ResourceTests(SynchronousTestCase):
    """
    Tests for the HTTP resources of the metrics port.
    """

    def test_metricsRendered(self) -> None:
        """
        C{/metrics} is the registry in Prometheus' text format, with its
        content type.
        """
        metrics = ProxyMetrics(lambda: 3, lambda: 12345)
        metrics.errors.labels("404").inc()
        request = DummyRequest([])
        body = MetricsResource(metrics.registry).render_GET(cast(Request, request))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [CONTENT_TYPE_LATEST.encode("ascii")],
        )
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for s in family.samples
        }
        self.assertEqual(values[("reloc_proxy_active_streams", ())], 3)
        self.assertEqual(values[("reloc_proxy_relayed_bytes_total", ())], 12345)
        self.assertEqual(values[("reloc_proxy_errors_total", (("code", "404"),))], 1)

    def test_jsonRendered(self) -> None:
        """
        A JSON resource renders what its function returns at each request.
        """
        state: dict[str, list[object]] = {"streams": []}
        resource = JSONResource(lambda: state)
        request = DummyRequest([])
        self.assertEqual(
            json.loads(resource.render_GET(cast(Request, request))), {"streams": []}
        )
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"application/json"],
        )
        state["streams"] = [{"name": NAME}]
        again = resource.render_GET(cast(Request, DummyRequest([])))
        self.assertEqual(json.loads(again), {"streams": [{"name": NAME}]})

    def test_rootWithStatus(self) -> None:
        """
        The root serves C{/metrics} and, given a status function, C{/status}.
        """
        registry = CollectorRegistry()
        root = makeRoot(registry, lambda: {})
        metrics = getChildForRequest(root, DummyRequest([b"metrics"]))
        status = getChildForRequest(root, DummyRequest([b"status"]))
        self.assertIsInstance(metrics, MetricsResource)
        self.assertIsInstance(status, JSONResource)

    def test_rootWithoutStatus(self) -> None:
        """
        Without a status function, C{/status} is not found.
        """
        root = makeRoot(CollectorRegistry())
        request = DummyRequest([b"status"])
        status = getChildForRequest(root, request)
        self.assertNotIsInstance(status, JSONResource)
        status.render(request)
        self.assertEqual(request.responseCode, 404)


class StatusTests(ProxyTestCase):
    """
    Tests for L{ProxyFactory.status}.
    """

    def streams(self) -> list[dict[str, object]]:
        """
        @return: the streams the status shows, through JSON and back.
        """
        return json.loads(json.dumps(self.factory.status()))["streams"]

    def test_routes(self) -> None:
        """
        The status shows the routes file, the table in force and when it was
        loaded; a reload replaces both.
        """
        self.factory.loadedAt = 0.0
        routes = self.factory.status()["routes"]
        self.assertEqual(
            routes,
            {
                "path": self.routesPath,
                "loadedAt": "1970-01-01T00:00:00+00:00",
                "table": {NAME: str(OLD)},
            },
        )
        self.writeRoutes({NAME: str(NEW), "other.bin": "[::1]:5002"})
        self.factory.reload()
        routes = cast(dict[str, Any], self.factory.status()["routes"])
        self.assertEqual(routes["table"], {NAME: str(NEW), "other.bin": "[::1]:5002"})
        self.assertGreater(datetime.fromisoformat(routes["loadedAt"]).year, 1970)

    def test_refusedReloadKeepsRoutes(self) -> None:
        """
        After a refused reload the status still shows the old table and its
        load time.
        """
        before = self.factory.status()["routes"]
        self.writeRoutesBytes(b"[]")
        self.factory.reload()
        self.assertEqual(self.factory.status()["routes"], before)

    def test_noStreams(self) -> None:
        """
        Without clients the status lists no streams.
        """
        self.assertEqual(self.streams(), [])

    def test_beforeRequest(self) -> None:
        """
        A client that has not asked yet shows without a name or offset.
        """
        self.connectClient()
        [stream] = self.streams()
        self.assertEqual(
            (stream["state"], stream["name"], stream["offset"], stream["backend"]),
            ("request", None, None, None),
        )
        self.assertEqual(stream["client"], "192.168.1.1:54321")

    def test_connecting(self) -> None:
        """
        A stream whose first leg is connecting shows its name, its offset,
        and the backend it is connecting to, with nothing to move to.
        """
        self.openStream(offset=77)
        [stream] = self.streams()
        self.assertEqual(
            (
                stream["state"],
                stream["name"],
                stream["offset"],
                stream["backend"],
                stream["movingTo"],
            ),
            ("connecting", NAME, 77, str(OLD), None),
        )

    def test_streaming(self) -> None:
        """
        A streaming stream shows its backend, the offset it reached, the
        bytes delivered and their rate since it opened.
        """
        self.reactor.advance(10)
        session, transport = self.openStream(offset=100)
        leg, _ = self.acceptLeg()
        self.reactor.advance(2)
        self.feed(leg, framed(CONTENT[100:])[: len(IDLINE) + FIRST_1500])
        [stream] = self.streams()
        self.assertEqual(
            {key: stream[key] for key in ("state", "name", "backend", "movingTo")},
            {"state": "streaming", "name": NAME, "backend": str(OLD), "movingTo": None},
        )
        self.assertEqual(
            (stream["offset"], stream["delivered"], stream["rate"], stream["seconds"]),
            (1600, 1500, 750, 2.0),
        )

    def test_moving(self) -> None:
        """
        During a planned move the stream shows both the backend it still
        reads from and the one it moves to.
        """
        self.streamingSession(FIRST_1500)
        self.writeRoutes({NAME: str(NEW)})
        self.factory.reload()
        [stream] = self.streams()
        self.assertEqual(
            (stream["state"], stream["backend"], stream["movingTo"], stream["offset"]),
            ("moving", str(OLD), str(NEW), 1500),
        )

    def test_retrying(self) -> None:
        """
        A stream whose leg broke shows as retrying, without a backend, at the
        offset it reached.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        leg.connectionLost(Failure(ConnectionLost()))
        [stream] = self.streams()
        self.assertEqual(
            (stream["state"], stream["backend"], stream["offset"]),
            ("retrying", None, 1500),
        )

    def test_finishedGone(self) -> None:
        """
        A stream that ended is no longer listed; the others are, by name.
        """
        self.writeRoutes({NAME: str(OLD), "a.bin": str(NEW)})
        self.factory.reload()
        session, transport = self.openStream()
        leg, _ = self.acceptLeg()
        other, _ = self.connectClient()
        other.dataReceived(b"GET a.bin 0\n")
        self.assertEqual([s["name"] for s in self.streams()], ["a.bin", NAME])
        self.feed(leg, framed(CONTENT))
        self.assertEqual([s["name"] for s in self.streams()], ["a.bin"])


class ProxyDrainTests(ProxyTestCase):
    """
    Tests for L{ProxyFactory.drain}, the proxy's part of a graceful
    shutdown.
    """

    def test_nothingToDrain(self) -> None:
        """
        Without sessions the drain is over at once.
        """
        self.assertIsNone(self.successResultOf(self.factory.drain(30)))

    def test_finishedWithinGrace(self) -> None:
        """
        A stream that ends within the grace period ends normally, without
        C{ERR}, and the drain is over once its connection has closed.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        drained = self.factory.drain(10)
        self.reactor.advance(5)
        self.assertNoResult(drained)
        self.feed(leg, FRAMES[FIRST_1500:])
        self.assertComplete(transport)
        closed(session)
        self.reactor.advance(0.05)
        self.assertIsNone(self.successResultOf(drained))
        self.assertNotIn(b"ERR", transport.value())
        self.assertEqual(self.errors("503"), 0)
        self.assertClean()

    def test_cutAtGrace(self) -> None:
        """
        A stream still running when the grace period ends gets
        C{ERR 503 proxy shutting down} after the whole frames of every byte
        it was sent, and its leg is dropped.
        """
        cut = FIRST_1500 + 300
        session, transport, leg, legTransport = self.streamingSession(cut)
        drained = self.factory.drain(10)
        self.reactor.advance(9.95)
        self.assertNotIn(b"ERR", transport.value())
        self.reactor.advance(0.05)
        payload, others = decode(transport.value())
        self.assertEqual(session.delivered, 1800)
        self.assertEqual(payload, CONTENT[:1800])
        self.assertEqual(others, [Refusal(503, "proxy shutting down")])
        self.assertTrue(transport.disconnecting)
        self.assertTrue(legTransport.disconnected)
        self.assertEqual(self.errors("503"), 1)
        self.assertNoResult(drained)

    def test_overOnceCutStreamsClosed(self) -> None:
        """
        The drain is over only once every stream it cut has really closed.
        """
        first, firstTransport, _, _ = self.streamingSession(FIRST_1500)
        second, secondTransport = self.connectClient()
        drained = self.factory.drain(1)
        self.reactor.advance(1)
        self.assertTrue(secondTransport.value().startswith(b"ERR 503 "))
        self.assertEqual(self.factory.sessions, set())
        closed(first)
        self.reactor.advance(0.05)
        self.assertNoResult(drained)
        closed(second)
        self.reactor.advance(0.05)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.errors("503"), 2)
        self.assertClean()

    def test_retryingCut(self) -> None:
        """
        A stream waiting to retry when the grace period ends gets C{ERR 503},
        and no further backend is tried.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        leg.connectionLost(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.refuseLeg()
        attempts = len(self.reactor.tcpClients)
        drained = self.factory.drain(0.5)
        self.reactor.advance(0.5)
        self.assertEqual(decode(transport.value())[0], CONTENT[:1500])
        self.assertTrue(transport.value().endswith(b"ERR 503 proxy shutting down\n"))
        closed(session)
        self.reactor.advance(POLICY.deadline)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(len(self.reactor.tcpClients), attempts)
        self.assertClean()

    def test_shutdownLogged(self) -> None:
        """
        Cutting streams at the end of the grace period logs how many, and
        each cut stream closes with the outcome C{shutdown}.
        """
        self.streamingSession(FIRST_1500)
        with capturedLogs() as events:
            self.factory.drain(0)
        [shutdown] = [e for e in events if e.get("event") == "proxy.shutdown"]
        [stream] = [e for e in events if e.get("event") == "stream.closed"]
        self.assertEqual(shutdown["count"], 1)
        self.assertEqual((stream["outcome"], stream["bytes"]), ("shutdown", 1500))

    def errors(self, code: str) -> float:
        """
        @return: how many C{ERR} replies with C{code} the proxy counted.
        """
        return sample(
            self.factory.metrics.registry, "reloc_proxy_errors_total", {"code": code}
        )

    def test_waitsForFinishedStreamToClose(self) -> None:
        """
        A stream that completes within the grace period keeps the drain going
        until its connection has really closed, so that its last bytes are
        not lost when the process exits.
        """
        session, transport, leg, _ = self.streamingSession(FIRST_1500)
        drained = self.factory.drain(10)
        self.feed(leg, FRAMES[FIRST_1500:])
        self.assertComplete(transport)
        self.reactor.advance(0.05)
        self.assertNoResult(drained)
        closed(session)
        self.reactor.advance(0.05)
        self.assertIsNone(self.successResultOf(drained))


class FileServerMetricsTests(FileServerTestCase):
    """
    Tests for the file server's counters and its drain.
    """

    def setUp(self) -> None:
        super().setUp()
        self.content = random.Random(5).randbytes(2 * CHUNK_SIZE + 999)
        self.makeFile("big.bin", self.content)

    def value(self, name: str, **labels: str) -> float:
        """
        @return: the current value of one of the file server's samples.
        """
        return sample(self.factory.metrics.registry, name, labels)

    def test_requestCounted(self) -> None:
        """
        A served request counts one request and its payload as sent bytes.
        """
        self.request(b"GET big.bin 1000\n")
        self.assertEqual(self.value("reloc_fs_requests_total"), 1)
        self.assertEqual(
            self.value("reloc_fs_sent_bytes_total"), len(self.content) - 1000
        )

    def test_errorsByCode(self) -> None:
        """
        Refusals count by their code: 400, 404 and 416 each once.
        """
        self.request(b"GET big.bin x\n")
        self.request(b"GET missing.bin 0\n")
        self.request(b"GET big.bin %d\n" % (len(self.content) + 1,))
        for code in ("400", "404", "416"):
            self.assertEqual(self.value("reloc_fs_errors_total", code=code), 1)
        self.assertEqual(self.value("reloc_fs_requests_total"), 3)
        self.assertEqual(self.value("reloc_fs_sent_bytes_total"), 0)

    def test_finishedWithinGrace(self) -> None:
        """
        A transfer that ends within the grace period ends with C{EOF}, and
        the drain is over once its connection has closed, not before.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        drained = self.factory.drain(10)
        self.pump(transport)
        self.clock.advance(0.05)
        self.assertNoResult(drained)
        closed(protocol)
        self.clock.advance(0.05)
        self.assertIsNone(self.successResultOf(drained))
        payload, others = decodeServed(transport.value())
        self.assertEqual((payload, others), (self.content, [End()]))

    def test_cutAtGrace(self) -> None:
        """
        A transfer still running when the grace period ends gets
        C{ERR 503} after its last whole frame; the drain is over once the
        connection has closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET big.bin 0\n")
        producer: Any = transport.producer
        producer.resumeProducing()
        drained = self.factory.drain(2)
        self.clock.advance(2)
        payload, others = decodeServed(transport.value())
        self.assertEqual(payload, self.content[:CHUNK_SIZE])
        self.assertEqual(others, [Refusal(503, "server shutting down")])
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.value("reloc_fs_errors_total", code="503"), 1)
        self.clock.advance(0.05)
        self.assertNoResult(drained)
        closed(protocol)
        self.clock.advance(0.05)
        self.assertIsNone(self.successResultOf(drained))
