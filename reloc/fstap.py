"""
The C{relocfs} twistd plugin: a file server.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from reloc.service import ListeningService, endpointDescription


class Options(usage.Options):
    synopsis = "--base FOLDER [--port PORT]"
    longdesc = "Serve the files below FOLDER with the reloc protocol."
    optParameters = [
        ["port", "p", "5000", "Port number or endpoint description."],
        ["base", "b", None, "Folder whose files are served."],
        ["idle-timeout", None, 30.0, "Seconds a client may take to ask.", float],
        ["portfile", None, None, "Write the bound port number to this file."],
        ["max-connections", None, 4096, "Connections served at once.", int],
    ]

    def postOptions(self) -> None:
        if self["base"] is None:
            raise usage.UsageError("--base is required")
        if not os.path.isdir(self["base"]):
            raise usage.UsageError(f"--base {self['base']} is not a folder")
        if self["idle-timeout"] <= 0:
            raise usage.UsageError("--idle-timeout must be positive")
        if self["max-connections"] <= 0:
            raise usage.UsageError("--max-connections must be positive")


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from reloc.fileserver import FileServerFactory

    factory = FileServerFactory(
        options["base"],
        reactor,
        idleTimeout=options["idle-timeout"],
        maxConnections=options["max-connections"],
    )
    return ListeningService(
        reactor, endpointDescription(options["port"]), factory, options["portfile"]
    )
