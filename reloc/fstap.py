"""
The C{relocfs} twistd plugin: a file server.
"""

from __future__ import annotations

import os

from twisted.application.service import IService, MultiService
from twisted.python import usage

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
    synopsis = "--base FOLDER [--port PORT]"
    longdesc = "Serve the files below FOLDER with the reloc protocol."
    optParameters = [
        ["port", "p", "5000", "Port number or endpoint description."],
        ["base", "b", None, "Folder whose files are served."],
        ["idle-timeout", None, 30.0, "Seconds a client may take to ask.", finiteFloat],
        ["portfile", None, None, "Write the bound port number to this file."],
        ["max-connections", None, 4096, "Connections served at once.", int],
        ["metrics", None, None, "Serve /metrics over HTTP on this port."],
        ["grace", None, 30.0, "Seconds running transfers get on SIGTERM.", finiteFloat],
    ]

    def postOptions(self) -> None:
        checkEndpointOptions(self)
        if self["base"] is None:
            raise usage.UsageError("--base is required")
        if not os.path.isdir(self["base"]):
            raise usage.UsageError(f"--base {self['base']} is not a folder")
        if self["idle-timeout"] <= 0:
            raise usage.UsageError("--idle-timeout must be positive")
        if self["max-connections"] <= 0:
            raise usage.UsageError("--max-connections must be positive")
        if self["grace"] < 0:
            raise usage.UsageError("--grace must not be negative")


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from reloc.fileserver import FileServerFactory
    from reloc.metrics import makeRoot

    factory = FileServerFactory(
        options["base"],
        reactor,
        idleTimeout=options["idle-timeout"],
        maxConnections=options["max-connections"],
    )
    top = MultiService()
    # The metrics port is bound first: if it fails, no --portfile has been
    # written yet for a server that is not going to run.
    if options["metrics"] is not None:
        root = makeRoot(factory.metrics.registry)
        metricsService(reactor, options["metrics"], root).setServiceParent(top)
    ListeningService(
        reactor, endpointDescription(options["port"]), factory, options["portfile"]
    ).setServiceParent(top)
    DrainService(factory.drain, options["grace"]).setServiceParent(top)
    HangupService().setServiceParent(top)
    return top
