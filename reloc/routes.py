"""
The proxy's route table: which backend serves which name.

The table lives in a JSON file, one object from names to C{host:port}
strings (C{[v6addr]:port} for IPv6).  A file that breaks any rule is refused
as a whole, so that a half-written or mistyped table never takes effect.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from dataclasses import dataclass

from reloc.protocol import ProtocolError, validateName

#: Route files larger than this are refused without being parsed.
MAX_ROUTES_FILE = 16 * 1024 * 1024


class RoutesError(Exception):
    """
    A routes file that cannot be used; the message says why.
    """


@dataclass(frozen=True, order=True)
class Address:
    """
    A backend's address.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parseAddress(text: str) -> Address:
    """
    Parse C{host:port} or C{[v6addr]:port}.

    @raise ValueError: with a reason, if C{text} is neither.
    """
    if not isinstance(text, str):
        raise ValueError("address is not a string")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not [v6addr]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{text!r} is not host:port")
        if any(c.isspace() or c in "[]/" or not c.isprintable() for c in host):
            raise ValueError(f"{host!r} is not a host name")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} is not a port number")
    return Address(host, int(port))


def parseRoutes(raw: bytes) -> dict[str, Address]:
    """
    Parse the contents of a routes file.

    @raise RoutesError: if the contents are not a valid table.
    """
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RoutesError(f"not JSON: {e}") from None
    if not isinstance(table, dict):
        raise RoutesError("not a JSON object")
    routes = {}
    for name, target in table.items():
        try:
            validateName(name)
        except ProtocolError as e:
            raise RoutesError(f"bad name {name!r}: {e.reason}") from None
        try:
            routes[name] = parseAddress(target)
        except ValueError as e:
            raise RoutesError(f"bad address for {name!r}: {e}") from None
    return routes


def loadRoutes(path: str) -> dict[str, Address]:
    """
    Read and parse a routes file.

    @raise RoutesError: if it cannot be read or is not a valid table.
    """
    try:
        # O_NONBLOCK keeps a FIFO from blocking the open (and the reactor).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise RoutesError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RoutesError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_ROUTES_FILE + 1)
        except OSError as e:
            raise RoutesError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_ROUTES_FILE:
        raise RoutesError("routes file too large")
    return parseRoutes(raw)
