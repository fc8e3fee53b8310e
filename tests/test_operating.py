"""
Operating the real programs: the metrics and status port of both twistd
plugins, the JSON log of a migration, and graceful shutdown on SIGTERM, all
on loopback ports chosen by the kernel.

The metrics port is not written to a port file; it is read from the
C{listening on HOST:PORT} event that each listening service logs, as the one
that is not the main port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.logger import eventFromJSON, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.test_processes import TWISTD, ProcessHarness, decodeFrames

#: Bytes a reader that plays a slow client takes per second.
SLOW_RATE = 2 * 1024 * 1024

#: Metric samples as scraped: (name, labels) to value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def splitFrames(wire: bytes) -> tuple[bytes, bytes]:
    """
    Read the whole C{DATA} frames at the start of C{wire}, independently of
    reloc's own decoder.

    @return: their payload, and the bytes after the last whole frame.
    """
    payload: list[bytes] = []
    position = 0
    while True:
        end = wire.find(b"\n", position)
        header = wire[position:end]
        if end < 0 or not header.startswith(b"DATA "):
            return b"".join(payload), wire[position:]
        length = int(header[len(b"DATA ") :])
        if end + 1 + length > len(wire):
            return b"".join(payload), wire[position:]
        payload.append(wire[end + 1 : end + 1 + length])
        position = end + 1 + length


def metric(samples: Samples, name: str, **labels: str) -> float:
    """
    @return: one sample's value, 0 when the server has not created it yet.
    """
    return samples.get((name, frozenset(labels.items())), 0.0)


class OperatedHarness(ProcessHarness, SynchronousTestCase):
    """
    Run the plugins with JSON logs and a metrics port, and read both.
    """

    work: str
    output: str
    processes: dict[str, subprocess.Popen[Any]]

    def startOperated(self, role: str, plugin: str, *arguments: str) -> tuple[int, int]:
        """
        Run a plugin on port 0 with C{--metrics} on port 0 and its log as
        JSON lines in C{ROLE.json}.

        @return: the plugin's port and its metrics port.
        """
        portFile = os.path.join(self.work, role + ".port")
        process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile",
                os.path.join(self.work, role + ".pid"),
                "--logger",
                "reloc.logs.json",
                plugin,
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--portfile",
                portFile,
                "--metrics",
                "tcp:0:interface=127.0.0.1",
                *arguments,
            ],
            cwd=self.work,
            env=dict(
                os.environ, RELOC_LOG_JSON=os.path.join(self.work, role + ".json")
            ),
        )
        self.addCleanup(self.stopProcess, process)
        self.processes[role] = process
        deadline = time.monotonic() + 30
        while len(self.listening(role)) < 2 or not os.path.exists(portFile):
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"{role} did not start:\n{self.log(role)}")
            time.sleep(0.02)
        with open(portFile) as f:
            port = int(f.read())
        [metricsPort] = [p for p in self.listening(role) if p != port]
        return port, metricsPort

    def listening(self, role: str) -> list[int]:
        """
        @return: the ports C{role} logged it listens on, in order.
        """
        return [
            event["port"]
            for event in self.events(role)
            if event.get("log_format") == "listening on {host}:{port}"
        ]

    def events(self, role: str) -> list[dict[str, Any]]:
        """
        @return: the events in C{role}'s JSON log so far.
        """
        try:
            with open(os.path.join(self.work, role + ".json")) as f:
                lines = f.readlines()
        except OSError:
            return []
        # A line still being written has no LF yet.
        return [eventFromJSON(line) for line in lines if line.endswith("\n")]

    def named(self, role: str, name: str) -> list[dict[str, Any]]:
        """
        @return: the events of C{role} with the stable name C{name}.
        """
        return [e for e in self.events(role) if e.get("event") == name]

    def log(self, role: str) -> str:
        return "\n".join(formatEvent(event) for event in self.events(role))

    def waitForEvent(self, role: str, name: str) -> None:
        """
        Wait until C{role} logged an event named C{name}.
        """
        deadline = time.monotonic() + 30
        while not self.named(role, name):
            self.assertLess(time.monotonic(), deadline, self.log(role))
            time.sleep(0.02)

    def scrape(self, port: int) -> Samples:
        """
        @return: the samples served at C{/metrics} on C{port}.
        """
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            text = r.read().decode("utf-8")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def status(self, port: int) -> Any:
        """
        @return: the JSON served at C{/status} on C{port}.
        """
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as r:
            self.assertEqual(r.headers["Content-Type"], "application/json")
            return json.load(r)

    def startClient(self, proxyPort: int, *arguments: str) -> subprocess.Popen[str]:
        """
        Start C{reloc.client} downloading C{big.bin} to C{out/big.bin}.
        """
        client = subprocess.Popen(
            self.clientCommand(proxyPort, self.output, *arguments),
            cwd=self.work,
            stderr=subprocess.PIPE,
            text=True,
        )
        # stopProcess is typed for byte pipes; it reads none.
        self.addCleanup(self.stopProcess, cast(Any, client))
        return client

    def waitForBytes(self, client: subprocess.Popen[str], count: int) -> None:
        """
        Wait until the running C{client} has C{count} bytes on disk.
        """
        partial = self.output + ".part"
        deadline = time.monotonic() + 30
        while not os.path.exists(partial) or os.path.getsize(partial) < count:
            self.assertIsNone(client.poll(), "the client ended too early")
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)

    def assertRefusing(self, role: str, port: int) -> None:
        """
        Wait until C{role} logged that it closed C{port}, then assert that a
        new connection to it is refused.
        """
        closed = f"(TCP Port {port} Closed)"
        deadline = time.monotonic() + 10
        while closed not in self.log(role).splitlines():
            self.assertLess(time.monotonic(), deadline, self.log(role))
            time.sleep(0.02)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    def assertShutDownCleanly(self, role: str) -> None:
        """
        Assert that C{role}'s twistd ended through its own shutdown, not by
        being killed half way.
        """
        process = self.processes[role]
        # twistd ends with the signal that stopped it, once it has shut down.
        self.assertIn(process.returncode, (0, -signal.SIGTERM))
        formats = [e.get("log_format") for e in self.events(role)]
        self.assertEqual(formats[-1], "Server Shut Down.", self.log(role))


def readSlowly(sock: socket.socket, seconds: float, into: list[bytes]) -> None:
    """
    Read from C{sock} at about L{SLOW_RATE} for C{seconds}, or until it
    closes, appending what arrives to C{into}.
    """
    start = time.monotonic()
    count = 0
    while time.monotonic() - start < seconds:
        chunk = sock.recv(64 * 1024)
        if not chunk:
            return
        into.append(chunk)
        count += len(chunk)
        ahead = start + count / SLOW_RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def readAll(sock: socket.socket, into: list[bytes]) -> None:
    """
    Read from C{sock} until it closes, appending what arrives to C{into}.
    """
    while chunk := sock.recv(1024 * 1024):
        into.append(chunk)


class MigrationOperatingTests(OperatedHarness):
    """
    What an operator sees of one migration: metrics, status and JSON log.
    """

    size = 12 * 1024 * 1024

    def setUp(self) -> None:
        self.work = os.path.abspath(self.mktemp())
        self.processes = {}
        for folder in ("filesA", "filesB", "out"):
            os.makedirs(os.path.join(self.work, folder))
        self.content = os.urandom(self.size)
        with open(os.path.join(self.work, "filesA", "big.bin"), "wb") as f:
            f.write(self.content)
        self.output = os.path.join(self.work, "out", "big.bin")
        self.portA, self.metricsA = self.startOperated(
            "fsA", "relocfs", "--base", "filesA"
        )
        self.portB, self.metricsB = self.startOperated(
            "fsB", "relocfs", "--base", "filesB"
        )
        self.routes = self.writeRoutes({"big.bin": f"127.0.0.1:{self.portA}"})
        self.proxyPort, self.metricsProxy = self.startOperated(
            "proxy", "relocproxy", "--routes", self.routes
        )

    def startDownload(self) -> subprocess.Popen[str]:
        """
        Start a download slowed enough that it runs well past the migration.
        """
        client = self.startClient(self.proxyPort, "--limit-rate", "3M")
        self.waitForBytes(client, 256 * 1024)
        return client

    def migrateAndFinish(self, client: subprocess.Popen[str]) -> None:
        """
        Move C{big.bin} from A to B with migrate.sh, and check that the
        client then completes with the right bytes.
        """
        migrate = subprocess.run(
            self.migrateCommand(self.portB, self.routes),
            capture_output=True,
            text=True,
        )
        self.assertEqual(migrate.returncode, 0, migrate.stderr)
        self.waitForEvent("proxy", "stream.moved")
        _, errors = client.communicate(timeout=60)
        self.assertEqual(client.returncode, 0, errors)
        with open(self.output, "rb") as f:
            self.assertTrue(f.read() == self.content, "the file differs")

    def test_metricsAcrossMigration(self) -> None:
        """
        The proxy's and both file servers' counters, scraped before, during
        and after a migration, moved by exactly one stream and one move.
        """
        before = self.scrape(self.metricsProxy)
        for name in ("reloc_proxy_streams_total", "reloc_proxy_active_streams"):
            self.assertEqual(metric(before, name), 0)
        self.assertEqual(metric(before, "reloc_proxy_moves_total", reason="reload"), 0)
        self.assertEqual(
            metric(before, "reloc_proxy_reloads_total", result="accepted"), 0
        )
        client = self.startDownload()

        during = self.scrape(self.metricsProxy)
        self.assertEqual(metric(during, "reloc_proxy_active_streams"), 1)
        self.assertEqual(metric(during, "reloc_proxy_streams_total"), 1)
        self.assertEqual(
            metric(self.scrape(self.metricsB), "reloc_fs_requests_total"), 0
        )
        self.migrateAndFinish(client)

        after = self.scrape(self.metricsProxy)
        self.assertEqual(metric(after, "reloc_proxy_moves_total", reason="reload"), 1)
        self.assertEqual(metric(after, "reloc_proxy_moves_total", reason="fault"), 0)
        self.assertEqual(
            metric(after, "reloc_proxy_reloads_total", result="accepted"), 1
        )
        self.assertEqual(metric(after, "reloc_proxy_relayed_bytes_total"), self.size)
        self.assertEqual(metric(after, "reloc_proxy_streams_total"), 1)
        self.assertEqual(metric(after, "reloc_proxy_active_streams"), 0)
        self.assertEqual(metric(after, "reloc_proxy_switch_stall_seconds_count"), 1)
        self.assertEqual(metric(after, "reloc_proxy_retries_total"), 0)
        sent = []
        for port in (self.metricsA, self.metricsB):
            served = self.scrape(port)
            self.assertEqual(metric(served, "reloc_fs_requests_total"), 1)
            sent.append(metric(served, "reloc_fs_sent_bytes_total"))
        self.assertTrue(all(count > 0 for count in sent), sent)
        self.assertGreaterEqual(sum(sent), self.size)

    def test_statusDuringDownload(self) -> None:
        """
        C{/status} during a download shows the stream with its backend and
        offset, and the route table in force; after a migration the table
        and the stream's backend are the new ones.
        """
        client = self.startDownload()
        status = self.status(self.metricsProxy)
        self.assertEqual(
            status["routes"]["table"], {"big.bin": f"127.0.0.1:{self.portA}"}
        )
        self.assertEqual(status["routes"]["path"], self.routes)
        [stream] = status["streams"]
        self.assertEqual(
            (stream["name"], stream["backend"], stream["state"]),
            ("big.bin", f"127.0.0.1:{self.portA}", "streaming"),
        )
        self.assertTrue(256 * 1024 <= stream["offset"] < self.size, stream)
        self.assertEqual(stream["offset"], stream["delivered"])

        self.migrateAndFinish(client)
        status = self.status(self.metricsProxy)
        self.assertEqual(
            status["routes"]["table"], {"big.bin": f"127.0.0.1:{self.portB}"}
        )
        self.assertEqual(status["streams"], [])

    def test_jsonLogOfMigration(self) -> None:
        """
        The proxy's JSON log of a migration holds one C{stream.moved} event
        whose offset field is the offset in its text, inside the file, between
        the stream's opening and its complete close.
        """
        client = self.startDownload()
        self.migrateAndFinish(client)
        names = [e["event"] for e in self.events("proxy") if "event" in e]
        self.assertEqual(
            [n for n in names if n.startswith(("stream.", "routes."))],
            [
                "stream.opened",
                "routes.reloaded",
                "stream.moving",
                "stream.moved",
                "stream.closed",
            ],
        )
        [moved] = self.named("proxy", "stream.moved")
        [offset] = re.findall(r"at offset (\d+)", formatEvent(moved))
        self.assertEqual(moved["offset"], int(offset))
        self.assertTrue(0 < moved["offset"] < self.size, moved["offset"])
        self.assertEqual(
            (moved["old"], moved["new"], moved["reason"]),
            (f"127.0.0.1:{self.portA}", f"127.0.0.1:{self.portB}", "reload"),
        )
        [moving] = self.named("proxy", "stream.moving")
        self.assertLessEqual(moving["offset"], moved["offset"])
        [opened] = self.named("proxy", "stream.opened")
        self.assertEqual(
            (opened["name"], opened["offset"], opened["backend"]),
            ("big.bin", 0, f"127.0.0.1:{self.portA}"),
        )
        [closed] = self.named("proxy", "stream.closed")
        self.assertEqual(
            (closed["bytes"], closed["start"], closed["outcome"]),
            (self.size, 0, "complete"),
        )
        [reloaded] = self.named("proxy", "routes.reloaded")
        self.assertEqual((reloaded["count"], reloaded["changed"]), (1, "big.bin"))


class ShutdownTests(OperatedHarness):
    """
    SIGTERM during a download, for the proxy and for the file server.
    """

    size = 24 * 1024 * 1024

    def setUp(self) -> None:
        self.work = os.path.abspath(self.mktemp())
        self.processes = {}
        for folder in ("filesA", "out"):
            os.makedirs(os.path.join(self.work, folder))
        self.content = os.urandom(self.size)
        with open(os.path.join(self.work, "filesA", "big.bin"), "wb") as f:
            f.write(self.content)
        self.output = os.path.join(self.work, "out", "big.bin")

    def startProxy(self, grace: str) -> int:
        """
        Start a file server and a proxy with C{--grace grace} in front of it.

        @return: the proxy's port.
        """
        portA, _ = self.startOperated("fsA", "relocfs", "--base", "filesA")
        routes = self.writeRoutes({"big.bin": f"127.0.0.1:{portA}"})
        port, _ = self.startOperated(
            "proxy", "relocproxy", "--routes", routes, "--grace", grace
        )
        return port

    def test_proxyStreamFinishesWithinGrace(self) -> None:
        """
        After SIGTERM the proxy refuses new connections, a running stream
        goes on for seconds and completes, and then the proxy exits by itself.
        """
        port = self.startProxy("30")
        wire: list[bytes] = []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET big.bin 0\n")
            readSlowly(sock, 1.0, wire)
            self.processes["proxy"].send_signal(signal.SIGTERM)
            self.assertRefusing("proxy", port)
            readSlowly(sock, 1.5, wire)
            self.assertIsNone(self.processes["proxy"].poll())
            # The tail is read at full speed: the drain ends once the session
            # has finished, before its connection has flushed, so a reader slow
            # to the very end could lose the last bytes when twistd exits.
            readAll(sock, wire)
        self.assertTrue(decodeFrames(b"".join(wire)) == self.content)
        self.processes["proxy"].wait(10)
        self.assertShutDownCleanly("proxy")
        [started] = self.named("proxy", "shutdown.started")
        [closed] = self.named("proxy", "stream.closed")
        self.assertEqual((closed["outcome"], closed["bytes"]), ("complete", self.size))
        self.assertGreater(closed["log_time"], started["log_time"] + 1)
        self.assertEqual(self.named("proxy", "proxy.shutdown"), [])

    def test_proxyStreamCutAfterGrace(self) -> None:
        """
        A download still running when a short grace period ends gets
        C{ERR 503}, which the client reports in one line, and the proxy exits
        within seconds.
        """
        port = self.startProxy("1")
        client = self.startClient(port, "--limit-rate", "2M", "--retries", "0")
        self.waitForBytes(client, 256 * 1024)
        signalled = time.monotonic()
        self.processes["proxy"].send_signal(signal.SIGTERM)
        self.processes["proxy"].wait(10)
        self.assertTrue(1.0 <= time.monotonic() - signalled < 5)
        self.assertShutDownCleanly("proxy")

        _, errors = client.communicate(timeout=60)
        self.assertNotEqual(client.returncode, 0)
        [line] = errors.splitlines()
        self.assertIn("ERR 503", line)
        self.assertFalse(os.path.exists(self.output))
        [closed] = self.named("proxy", "stream.closed")
        self.assertEqual(closed["outcome"], "shutdown")
        self.assertTrue(0 < closed["bytes"] < self.size, closed["bytes"])
        [cut] = self.named("proxy", "proxy.shutdown")
        self.assertEqual(cut["count"], 1)

    def test_fileServerCutAfterGrace(self) -> None:
        """
        A transfer still running when the file server's grace period ends
        gets whole frames of the file's first bytes, then one C{ERR 503} line;
        the server refuses new connections meanwhile and then exits.
        """
        port, _ = self.startOperated(
            "fsA", "relocfs", "--base", "filesA", "--grace", "1"
        )
        wire: list[bytes] = []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET big.bin 0\n")
            readSlowly(sock, 0.5, wire)
            signalled = time.monotonic()
            self.processes["fsA"].send_signal(signal.SIGTERM)
            self.assertRefusing("fsA", port)
            readSlowly(sock, 1.5, wire)
            readAll(sock, wire)
        self.processes["fsA"].wait(10)
        self.assertTrue(1.0 <= time.monotonic() - signalled < 5)
        self.assertShutDownCleanly("fsA")

        payload, tail = splitFrames(b"".join(wire))
        self.assertTrue(0 < len(payload) < self.size, len(payload))
        self.assertTrue(payload == self.content[: len(payload)], "payload differs")
        self.assertTrue(tail.startswith(b"ERR 503 "), tail[:100])
        self.assertEqual(tail.count(b"\n"), 1, tail[:100])
        self.assertTrue(tail.endswith(b"\n"), tail[:100])
        [cut] = self.named("fsA", "fs.shutdown")
        self.assertEqual(cut["count"], 1)

    def test_slowClientFinishesWithinGrace(self) -> None:
        """
        A download slowed to the very end that needs seconds more after
        SIGTERM completes with the right bytes, and the proxy then exits.
        """
        port = self.startProxy("30")
        client = self.startClient(port, "--limit-rate", "3M", "--retries", "0")
        self.waitForBytes(client, 256 * 1024)
        self.processes["proxy"].send_signal(signal.SIGTERM)
        self.assertRefusing("proxy", port)
        self.assertIsNone(self.processes["proxy"].poll())
        _, errors = client.communicate(timeout=60)
        self.assertEqual(client.returncode, 0, errors)
        with open(self.output, "rb") as f:
            self.assertTrue(f.read() == self.content, "the file differs")
        self.processes["proxy"].wait(10)
        self.assertShutDownCleanly("proxy")
