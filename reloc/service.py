"""
Service pieces shared by the two twistd plugins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site


def endpointDescription(port: str) -> str:
    """
    Turn a C{--port} value into a server endpoint description.

    @param port: a bare port number, or an endpoint description already.
    """
    if port.isascii() and port.isdigit():
        return f"tcp:{port}"
    return port


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
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        # Endpoint errors (a port in use) surface here, before twistd
        # detaches, so the operator sees them on the terminal.
        endpoint = serverFromString(self._reactor, self._description)
        self._listening = endpoint.listen(self._factory)
        self._listening.addCallback(self._listened)
        Service.privilegedStartService(self)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self._port = port
        address = port.getHost()
        self.log.info(
            "listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        if self._portFile is not None:
            temporary = self._portFile + ".tmp"
            with open(temporary, "w") as f:
                f.write(f"{getattr(address, 'port', '')}\n")
            os.replace(temporary, self._portFile)
        return port

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
