"""
Tests for L{reloc.routes}: backend addresses and route tables.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from reloc.routes import (
    MAX_ROUTES_FILE,
    Address,
    RoutesError,
    loadRoutes,
    parseAddress,
    parseRoutes,
)


class ParseAddressTests(SynchronousTestCase):
    """
    Tests for L{parseAddress} and L{Address}.
    """

    def test_hostPort(self) -> None:
        """
        C{host:port} gives the host and the port.
        """
        self.assertEqual(parseAddress("10.0.0.11:5000"), Address("10.0.0.11", 5000))

    def test_hostName(self) -> None:
        """
        A host name is taken as it is.
        """
        self.assertEqual(parseAddress("files-b.lan:5001"), Address("files-b.lan", 5001))

    def test_ipv6(self) -> None:
        """
        C{[v6addr]:port} gives the bare IPv6 address and the port.
        """
        self.assertEqual(parseAddress("[::1]:7000"), Address("::1", 7000))
        self.assertEqual(
            parseAddress("[2001:db8::5]:5000"), Address("2001:db8::5", 5000)
        )

    def test_portBounds(self) -> None:
        """
        Ports 1 and 65535 are accepted.
        """
        self.assertEqual(parseAddress("h:1").port, 1)
        self.assertEqual(parseAddress("h:65535").port, 65535)

    def test_badPorts(self) -> None:
        """
        Ports out of range, empty or not plain ASCII digits are refused.
        """
        for port in ["0", "65536", "99999", "abc", "", "-1", "+80", " 80", "８０"]:
            self.assertRaises(ValueError, parseAddress, f"host:{port}")

    def test_badV6Ports(self) -> None:
        """
        Bad ports after a bracketed IPv6 address are refused.
        """
        for port in ["0", "65536", "abc", ""]:
            self.assertRaises(ValueError, parseAddress, f"[::1]:{port}")

    def test_missingColon(self) -> None:
        """
        A host with no port is refused.
        """
        self.assertRaises(ValueError, parseAddress, "localhost")
        self.assertRaises(ValueError, parseAddress, "")

    def test_missingHost(self) -> None:
        """
        A port with no host is refused.
        """
        self.assertRaises(ValueError, parseAddress, ":5000")

    def test_bareIpv6(self) -> None:
        """
        An IPv6 address without brackets is refused as ambiguous.
        """
        self.assertRaises(ValueError, parseAddress, "::1:7000")
        self.assertRaises(ValueError, parseAddress, "2001:db8::5:5000")

    def test_badBrackets(self) -> None:
        """
        Brackets without a port, or around something that is not IPv6, are
        refused.
        """
        for text in ["[::1]", "[::1]7000", "[::1", "[10.0.0.1]:80", "[host]:80"]:
            self.assertRaises(ValueError, parseAddress, text)

    def test_badHost(self) -> None:
        """
        Hosts with spaces, brackets or slashes are refused.
        """
        for text in ["a b:80", "a]:80", "a/b:80", "\tx:80"]:
            self.assertRaises(ValueError, parseAddress, text)

    def test_notString(self) -> None:
        """
        A value that is not a string is refused with L{ValueError}.
        """
        for value in [5000, None, ["h", 1]]:
            self.assertRaises(ValueError, parseAddress, value)

    def test_str(self) -> None:
        """
        An address prints back in the form it is parsed from.
        """
        for text in ["10.0.0.11:5000", "[::1]:7000", "files:1"]:
            self.assertEqual(str(parseAddress(text)), text)


class ParseRoutesTests(SynchronousTestCase):
    """
    Tests for L{parseRoutes}.
    """

    def test_valid(self) -> None:
        """
        A JSON object of names to addresses gives the table.
        """
        raw = b'{"big.bin": "10.0.0.11:5000", "d/x": "[::1]:5001"}'
        self.assertEqual(
            parseRoutes(raw),
            {"big.bin": Address("10.0.0.11", 5000), "d/x": Address("::1", 5001)},
        )

    def test_empty(self) -> None:
        """
        An empty object is an empty table.
        """
        self.assertEqual(parseRoutes(b"{}"), {})

    def test_utf8Name(self) -> None:
        """
        Names in non-ASCII UTF-8 are accepted.
        """
        raw = '{"ação.bin": "h:1"}'.encode()
        self.assertEqual(parseRoutes(raw), {"ação.bin": Address("h", 1)})

    def test_notJson(self) -> None:
        """
        Contents that are not JSON are refused.
        """
        for raw in [b"", b"big.bin = h:1", b'{"a": "h:1"', b"{'a': 'h:1'}"]:
            self.assertRaises(RoutesError, parseRoutes, raw)

    def test_notObject(self) -> None:
        """
        JSON that is not an object is refused.
        """
        for raw in [b"[]", b'[["a", "h:1"]]', b'"h:1"', b"null", b"3"]:
            self.assertRaises(RoutesError, parseRoutes, raw)

    def test_nonStringValue(self) -> None:
        """
        A value that is not a string is refused.
        """
        for value in [b"5000", b"null", b'["h", 1]', b'{"host": "h"}', b"true"]:
            self.assertRaises(RoutesError, parseRoutes, b'{"a": %s}' % value)

    def test_badAddress(self) -> None:
        """
        A value that is not a valid address is refused.
        """
        self.assertRaises(RoutesError, parseRoutes, b'{"a": "h:0"}')

    def test_badName(self) -> None:
        """
        Names the protocol refuses are refused in the table.
        """
        for name in ["../x", "/etc/passwd", "a b", "", "a//b", ".", "a\\u0000b"]:
            raw = b'{"%s": "h:1"}' % name.encode()
            self.assertRaises(RoutesError, parseRoutes, raw)

    def test_oneBadEntryRefusesAll(self) -> None:
        """
        One bad entry refuses the whole table.
        """
        raw = b'{"good": "h:1", "bad": "h"}'
        self.assertRaises(RoutesError, parseRoutes, raw)

    def test_invalidUtf8(self) -> None:
        """
        Contents that are not UTF-8 are refused.
        """
        self.assertRaises(RoutesError, parseRoutes, b'{"\xff": "h:1"}')


class LoadRoutesTests(SynchronousTestCase):
    """
    Tests for L{loadRoutes}.
    """

    def write(self, content: bytes) -> str:
        """
        @return: the path of a new file holding C{content}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_valid(self) -> None:
        """
        A valid file gives its table.
        """
        path = self.write(b'{"big.bin": "127.0.0.1:5000"}\n')
        self.assertEqual(loadRoutes(path), {"big.bin": Address("127.0.0.1", 5000)})

    def test_empty(self) -> None:
        """
        A file holding an empty object gives an empty table.
        """
        self.assertEqual(loadRoutes(self.write(b"{}")), {})

    def test_missing(self) -> None:
        """
        A missing file is refused with L{RoutesError}.
        """
        self.assertRaises(RoutesError, loadRoutes, self.mktemp())

    def test_folder(self) -> None:
        """
        A folder is refused with L{RoutesError}.
        """
        path = self.mktemp()
        os.makedirs(path)
        self.assertRaises(RoutesError, loadRoutes, path)

    def test_notJson(self) -> None:
        """
        A file that is not JSON is refused.
        """
        self.assertRaises(RoutesError, loadRoutes, self.write(b"not json"))

    def test_list(self) -> None:
        """
        A file holding a JSON list is refused.
        """
        self.assertRaises(RoutesError, loadRoutes, self.write(b'["h:1"]'))

    def test_invalidUtf8(self) -> None:
        """
        A file that is not UTF-8 is refused.
        """
        self.assertRaises(RoutesError, loadRoutes, self.write(b'{"a\xc3": "h:1"}'))

    def test_tooLarge(self) -> None:
        """
        A file over L{MAX_ROUTES_FILE} is refused even when it is valid JSON.
        """
        padding = b" " * MAX_ROUTES_FILE
        path = self.write(b"{}" + padding)
        self.assertRaises(RoutesError, loadRoutes, path)
