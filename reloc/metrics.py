"""
What the servers count, in Prometheus' text format, and the proxy's status
view.

Each factory owns its own L{CollectorRegistry}, so that several servers can
live in one process (as they do in the tests).  Counters on the hot path
(bytes relayed or served) are plain integers on the factory, read when the
metrics are scraped; the rest are C{prometheus_client} metrics, touched only
on events that happen a few times per stream.

Both the metrics and the status are computed on the reactor thread: the
scrape reads state that only the reactor thread changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

#: Buckets of the switch stall histogram, in seconds.
STALL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _ReadCounter(Collector):
    """
    Expose an integer the server keeps itself as a Prometheus counter.
    """

    def __init__(self, name: str, documentation: str, read: Callable[[], int]):
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


class ProxyMetrics:
    """
    The proxy's metrics.
    """

    def __init__(self, activeStreams: Callable[[], int], relayed: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge(
            "reloc_proxy_active_streams", "Client streams open now.", registry=r
        ).set_function(activeStreams)
        r.register(
            _ReadCounter(
                "reloc_proxy_relayed_bytes",
                "Payload bytes delivered to clients.",
                relayed,
            )
        )
        self.streams = Counter(
            "reloc_proxy_streams", "Client streams opened.", registry=r
        )
        self.moves = Counter(
            "reloc_proxy_moves",
            "Streams moved to another backend, by reason (reload or fault).",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "reloc_proxy_retries", "Attempts to reach a backend again.", registry=r
        )
        self.errors = Counter(
            "reloc_proxy_errors",
            "ERR replies sent to clients, by code.",
            ["code"],
            registry=r,
        )
        self.reloads = Counter(
            "reloc_proxy_reloads",
            "Routes reloads, by result (accepted or refused).",
            ["result"],
            registry=r,
        )
        self.switchStall = Histogram(
            "reloc_proxy_switch_stall_seconds",
            "Gap a client saw between the last byte before a move and the first "
            "byte after it.",
            buckets=STALL_BUCKETS,
            registry=r,
        )


class FileServerMetrics:
    """
    The file server's metrics.
    """

    def __init__(self, served: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_ReadCounter("reloc_fs_sent_bytes", "Payload bytes sent.", served))
        self.requests = Counter("reloc_fs_requests", "Requests received.", registry=r)
        self.errors = Counter(
            "reloc_fs_errors", "ERR replies sent, by code.", ["code"], registry=r
        )


class MetricsResource(Resource):
    """
    Serve one registry in Prometheus' text format.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class JSONResource(Resource):
    """
    Serve what a function returns, as JSON.
    """

    isLeaf = True

    def __init__(self, describe: Callable[[], Any]):
        super().__init__()
        self._describe = describe

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self._describe(), indent=2).encode("utf-8") + b"\n"


def makeRoot(
    registry: CollectorRegistry, status: Callable[[], Any] | None = None
) -> Resource:
    """
    @return: a resource with C{/metrics} and, when given, C{/status}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    if status is not None:
        root.putChild(b"status", JSONResource(status))
    return root
