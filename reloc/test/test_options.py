"""
Tests for the plugins' option checking in L{reloc.fstap} and
L{reloc.proxytap}.
"""

from __future__ import annotations

import json
import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from reloc import fstap, proxytap
from reloc.service import endpointDescription


class OptionsTests(SynchronousTestCase):
    """
    Bad option values are usage errors, found before anything starts.
    """

    def setUp(self) -> None:
        self.base = self.mktemp()
        os.makedirs(self.base)
        self.routes = self.mktemp()
        with open(self.routes, "w") as f:
            json.dump({"a": "127.0.0.1:1"}, f)

    def assertRefused(self, options: usage.Options, argv: list[str]) -> str:
        """
        Assert that C{options} refuses C{argv}.

        @return: the usage error's message.
        """
        error = self.assertRaises(usage.UsageError, options.parseOptions, argv)
        return str(error)

    def test_notFiniteTimeouts(self) -> None:
        """
        NaN and infinite timeouts are refused: a NaN deadline would never be
        reached, and would pass a "positive" check.
        """
        for value in ("nan", "inf", "-inf"):
            for name in ("deadline", "grace", "stall-timeout", "client-timeout"):
                argv = ["--routes", self.routes, f"--{name}", value]
                self.assertRefused(proxytap.Options(), argv)
            argv = ["--base", self.base, "--grace", value]
            self.assertRefused(fstap.Options(), argv)

    def test_portOutOfRange(self) -> None:
        """
        A port number over 65535 is refused, bare or in a description, for
        the listening port and the metrics port.
        """
        for argv in (
            ["--port", "99999"],
            ["--port", "tcp:70000:interface=127.0.0.1"],
            ["--metrics", "65536"],
        ):
            message = self.assertRefused(
                proxytap.Options(), ["--routes", self.routes, *argv]
            )
            self.assertIn("not a port number", message)

    def test_unknownEndpoint(self) -> None:
        """
        An endpoint description of an unknown kind is refused with a reason.
        """
        message = self.assertRefused(
            fstap.Options(), ["--base", self.base, "--port", "bogus:1"]
        )
        self.assertIn("bogus", message)

    def test_validOptions(self) -> None:
        """
        Ordinary values pass, and a bare port gets a listen backlog.
        """
        options = proxytap.Options()
        options.parseOptions(
            ["--routes", self.routes, "--port", "7000", "--deadline", "2.5"]
        )
        self.assertEqual(options["deadline"], 2.5)
        self.assertEqual(endpointDescription("7000"), "tcp:7000:backlog=1024")
