"""
The C{relocproxy} twistd plugin: the relocating proxy.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from reloc.metrics import makeRoot
from reloc.proxy import ProxyFactory, RetryPolicy
from reloc.routes import RoutesError, loadRoutes
from reloc.service import (
    DrainService,
    HangupService,
    ListeningService,
    checkEndpointOptions,
    endpointDescription,
    finiteFloat,
    metricsService,
)


class Options(usage.Options):
    synopsis = "--routes FILE [--port PORT]"
    longdesc = (
        "Relay reloc streams to the backends named in FILE; on SIGHUP re-read "
        "FILE and move the streams whose route changed."
    )
    optParameters = [
        ["port", "p", "7000", "Port number or endpoint description."],
        ["routes", "r", None, "JSON file mapping names to host:port."],
        [
            "deadline",
            None,
            30.0,
            "Seconds to find a new backend after a fault.",
            finiteFloat,
        ],
        [
            "connect-timeout",
            None,
            5.0,
            "Seconds one backend connection may take.",
            finiteFloat,
        ],
        [
            "stall-timeout",
            None,
            30.0,
            "Seconds a backend may stall a stream.",
            finiteFloat,
        ],
        ["idle-timeout", None, 30.0, "Seconds a client may take to ask.", finiteFloat],
        ["portfile", None, None, "Write the bound port number to this file."],
        ["max-connections", None, 4096, "Client connections served at once.", int],
        ["metrics", None, None, "Serve /metrics and /status over HTTP here."],
        ["grace", None, 30.0, "Seconds running streams get on SIGTERM.", finiteFloat],
        ["buffer-memory", None, 32, "MiB of relay buffers streams share.", int],
        [
            "client-timeout",
            None,
            120.0,
            "Seconds a client may go without reading before it is dropped.",
            finiteFloat,
        ],
    ]

    def postOptions(self) -> None:
        checkEndpointOptions(self)
        if self["routes"] is None:
            raise usage.UsageError("--routes is required")
        try:
            loadRoutes(self["routes"])
        except RoutesError as e:
            raise usage.UsageError(f"--routes: {e}") from None
        for name in ("deadline", "connect-timeout", "stall-timeout", "idle-timeout"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        for name in ("max-connections", "client-timeout", "buffer-memory"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        if self["grace"] < 0:
            raise usage.UsageError("--grace must not be negative")


class ReloadOnHangup(HangupService):
    """
    Re-read the routes on SIGHUP.

    The handler only schedules the reload: the reload itself runs on the
    reactor thread, never inside the signal handler.
    """

    def __init__(self, reactor: Any, factory: ProxyFactory):
        super().__init__()
        self._reactor = reactor
        self._factory = factory

    def onHangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._factory.reload)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    policy = RetryPolicy(
        deadline=options["deadline"],
        connectTimeout=options["connect-timeout"],
        answerTimeout=2 * options["connect-timeout"],
        stallTimeout=options["stall-timeout"],
    )
    factory = ProxyFactory(
        options["routes"],
        reactor,
        reactor,
        policy=policy,
        requestTimeout=options["idle-timeout"],
        maxConnections=options["max-connections"],
        clientTimeout=options["client-timeout"],
        bufferMemory=options["buffer-memory"] * 1024 * 1024,
    )
    top = MultiService()
    # The metrics port is bound first: if it fails, no --portfile has been
    # written yet for a proxy that is not going to run.
    if options["metrics"] is not None:
        root = makeRoot(factory.metrics.registry, factory.status)
        metricsService(reactor, options["metrics"], root).setServiceParent(top)
    ListeningService(
        reactor, endpointDescription(options["port"]), factory, options["portfile"]
    ).setServiceParent(top)
    ReloadOnHangup(reactor, factory).setServiceParent(top)
    DrainService(factory.drain, options["grace"]).setServiceParent(top)
    return top
