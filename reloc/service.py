"""
Service pieces shared by the two twistd plugins.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Collection
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site


def endpointDescription(port: str) -> str:
    """
    Turn a C{--port} value into a server endpoint description.

    @param port: a bare port number, or an endpoint description already.
    """
    if port.isascii() and port.isdigit():
        port = f"tcp:{port}"
    if port.startswith("tcp:") and "backlog=" not in port:
        # Twisted's default backlog is 50: a move of hundreds of streams
        # opens that many connections to the new backend at once, and a
        # full queue costs each dropped one a SYN retransmission (1 s).
        port += ":backlog=1024"
    return port


class ListenError(Exception):
    """
    A server could not start listening; the message says why.
    """


def checkEndpoint(description: str) -> None:
    """
    Check that a server endpoint description parses, for option checking.

    @raise ValueError: with a reason, if it does not.
    """
    try:
        serverFromString(None, description)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{description!r} is not a port or endpoint: {e}") from None
    kind, _, rest = description.partition(":")
    if kind == "tcp":
        positional = [f for f in rest.split(":") if "=" not in f]
        port = positional[0] if positional else ""
        if port.isdigit() and int(port) > 65535:
            raise ValueError(f"{port} is not a port number (0-65535)")


def finiteFloat(text: str) -> float:
    """
    Coerce an option to a float that is neither NaN nor infinite: a
    timeout of NaN would compare as neither too small nor ever reached.
    """
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


finiteFloat.coerceDoc = "A finite number."  # type: ignore[attr-defined]


class ListeningService(Service):
    """
    Listen on one endpoint while running, and optionally write the port
    number that was bound to a file (useful with port 0).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        factory: Factory,
        portFile: str | None = None,
    ):
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._portFile = portFile
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # A port that cannot be bound (in use, no such address) must stop
        # twistd here, before it detaches, rather than leave a server that
        # listens on nothing: TCP endpoints report it synchronously.
        endpoint = serverFromString(self._reactor, self._description)
        outcome: list[IListeningPort | Failure] = []
        endpoint.listen(self._factory).addBoth(outcome.append)
        if not outcome:
            raise ListenError(f"{self._description}: listening did not complete")
        if isinstance(outcome[0], Failure):
            why = outcome[0].getErrorMessage()
            raise ListenError(f"cannot listen on {self._description}: {why}")
        self._listened(outcome[0])
        Service.privilegedStartService(self)

    def _listened(self, port: IListeningPort) -> None:
        self._port = port
        address = port.getHost()
        self.log.info(
            "listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        if self._portFile is not None:
            temporary = self._portFile + ".tmp"
            try:
                with open(temporary, "w") as f:
                    f.write(f"{getattr(address, 'port', '')}\n")
                os.replace(temporary, self._portFile)
            except OSError as e:
                port.stopListening()
                self._port = None
                raise ListenError(f"cannot write --portfile: {e}") from None

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None


class DrainService(Service):
    """
    On stop, give running transfers a grace period before they are cut.

    twistd stops its services on SIGTERM and waits for the L{Deferred} this
    returns before the reactor stops; the listening port is closed at the
    same time, so no new connection is accepted meanwhile.
    """

    log = Logger()

    def __init__(self, drain: Callable[[float], Deferred[None]], grace: float):
        self._drain = drain
        self._grace = grace

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self.log.info(
            "stopping: {grace}s for running transfers to finish",
            event="shutdown.started",
            grace=self._grace,
        )
        return self._drain(self._grace)


def metricsService(reactor: Any, port: str, root: Resource) -> ListeningService:
    """
    @return: a service that serves C{root} over HTTP on C{port}.
    """
    site = Site(root)
    site.noisy = False
    return ListeningService(reactor, endpointDescription(port), site)


class HangupService(Service):
    """
    Own SIGHUP while running, and give the previous handler back on stop.

    twistd installs no handler for it, and the default action ends the
    process.  This one ignores it: a file server has nothing to reload, and
    a SIGHUP meant for the proxy (a mixed-up pidfile) should not take a
    backend down.  Subclasses act in L{onHangup}, which runs inside the
    signal handler and so may only schedule work (nothing is logged there).
    """

    def __init__(self) -> None:
        self._previous: Any = None

    def startService(self) -> None:
        Service.startService(self)
        self._previous = signal.signal(signal.SIGHUP, self.onHangup)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def onHangup(self, signum: int, frame: object) -> None:
        pass


def checkEndpointOptions(options: usage.Options) -> None:
    """
    Check the C{--port} and C{--metrics} options of a plugin.

    @raise usage.UsageError: naming the option, if one does not parse.
    """
    for name in ("port", "metrics"):
        if options[name] is not None:
            try:
                checkEndpoint(endpointDescription(options[name]))
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}") from None


#: Seconds after the grace period that peers get to take their last bytes
#: and the C{ERR} line, before their connections are cut.
FLUSH_TIME = 5.0


def drainConnections(
    clock: Any,
    grace: float,
    connections: Collection[Any],
    cut: Callable[[], object],
) -> Deferred[None]:
    """
    Wait for C{connections} (protocols that leave it in C{connectionLost})
    to close by themselves for up to C{grace} seconds, then call C{cut} once
    to end those still running, and abort what is still open
    L{FLUSH_TIME} seconds after that.

    @return: fires once C{connections} is empty.
    """
    deadline = clock.seconds() + grace
    cutAt: list[float] = []

    def check() -> None:
        now = clock.seconds()
        if not cutAt and now >= deadline:
            cutAt.append(now)
            cut()
        elif cutAt and now >= cutAt[0] + FLUSH_TIME:
            # Peers that do not read even their last bytes are cut.
            for protocol in list(connections):
                protocol.transport.abortConnection()
        if not connections:
            loop.stop()

    loop = LoopingCall(check)
    loop.clock = clock
    return loop.start(0.05, now=True).addCallback(lambda ignored: None)
