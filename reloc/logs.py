"""
JSON logs for twistd: C{twistd --logger reloc.logs.json ...} writes one JSON
object per event, with the stable C{event} field that reloc's own log calls
carry (C{stream.opened}, C{stream.moved}, C{routes.refused}, ...).

The file is named by the C{RELOC_LOG_JSON} environment variable; without it
the events go to standard output.  twistd calls the factory with no
arguments, which is why the file is not an option of its own.
"""

from __future__ import annotations

import os
import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    """
    @return: an observer that writes each event as one line of JSON.
    """
    path = os.environ.get("RELOC_LOG_JSON")
    if path:
        return jsonFileLogObserver(
            open(path, "a", encoding="utf-8"), recordSeparator=""
        )
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
