"""
System tests on three hosts: the real programs in Linux network namespaces
built by L{tests.netns}, with real rsync across the network and impaired
links.

Host A (10.0.0.10) runs the proxy on port 7000 and file server A on 5000; B
(10.0.0.11) runs file server B on 5001 and an rsync daemon on 873; C
(10.0.0.12) runs the clients.  The ports are the brief's fixed ones: each
test has namespaces of its own, so nothing else can hold them.

Copies across the network go to the rsync daemon on B: C{migrate.sh} runs on
A with C{--to rsync://10.0.0.11/reloc/files}, the module C{reloc} being B's
folder whose C{files} sub-folder file server B serves.  A daemon needs no
keys, accounts or host-key set-up, which ssh would, and C{migrate.sh} takes
such a URL as it is.

Each test prints, on the real standard output, the hosts and their
addresses, the impairment in force and the offset at which each stream
switched backends.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
MIGRATE = os.path.join(ROOT, "scripts", "migrate.sh")

ADDRESS_A = netns.HOSTS["A"]
ADDRESS_B = netns.HOSTS["B"]
PROXY_PORT = 7000
PORT_A = 5000
PORT_B = 5001
RSYNC_PORT = 873
NAME = "big.bin"
MIB = 1024 * 1024

_MOVED = re.compile(
    r"stream moved: (?P<name>\S+) from (?P<old>\S+) to (?P<new>\S+) "
    r"at offset (?P<offset>\d+) \((?P<reason>\w+)\)"
)
_GAVE_UP = re.compile(r"gave up on \S+ at offset (\d+)")


class HostsTestCase(SynchronousTestCase):
    """
    A fresh three-host network per test, and the real programs on it.
    """

    def setUp(self) -> None:
        reason = netns.unavailableReason()
        if reason is not None:
            netns.say(f"skipped: {reason}")
            raise SkipTest(reason)
        self.network = netns.Network()
        self.addCleanup(self.network.destroy)
        self.network.build()
        self.work = os.path.abspath(self.mktemp())
        self.filesA = os.path.join(self.work, "hostA", "files")
        self.rootB = os.path.join(self.work, "hostB")
        self.filesB = os.path.join(self.rootB, "files")
        self.outputs = os.path.join(self.work, "hostC")
        for folder in (self.filesA, self.filesB, self.outputs):
            os.makedirs(folder)
        self.routes = os.path.join(self.work, "routes.json")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def requireTools(self, *tools: str) -> None:
        """
        Skip the test, saying why, when one of C{tools} is not installed.
        """
        for tool in tools:
            if shutil.which(tool) is None:
                reason = f"{tool} is not installed"
                netns.say(f"skipped: {reason}")
                raise SkipTest(reason)

    def makeFile(self, size: int) -> bytes:
        """
        Put C{size} random bytes on A as L{NAME}.

        @return: the bytes.
        """
        content = os.urandom(size)
        with open(os.path.join(self.filesA, NAME), "wb") as f:
            f.write(content)
        return content

    def writeRoutes(self, address: str) -> None:
        """
        Route L{NAME} to C{address}, replacing the routes file in one rename
        so that the proxy never reads half of it.
        """
        temporary = self.routes + ".new"
        with open(temporary, "w") as f:
            json.dump({NAME: address}, f)
        os.replace(temporary, self.routes)

    def startPlugin(self, host: str, role: str, plugin: str, *arguments: str) -> None:
        """
        Run a twistd plugin in C{host}'s namespace, with its own pidfile and
        log, and wait until it listens.
        """
        portFile = os.path.join(self.work, role + ".port")
        with open(os.path.join(self.work, role + ".out"), "wb") as out:
            process = self.network.spawn(
                host,
                [
                    TWISTD,
                    "-n",
                    "--pidfile",
                    os.path.join(self.work, role + ".pid"),
                    "--logfile",
                    os.path.join(self.work, role + ".log"),
                    plugin,
                    "--portfile",
                    portFile,
                    *arguments,
                ],
                cwd=self.work,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[role] = process
        self.waitFor(
            lambda: os.path.exists(portFile) or process.poll() is not None,
            30,
            f"{role} did not start",
        )
        if process.poll() is not None:
            self.fail(f"{role} exited:\n{self.read(role + '.out')}")

    def startFileServer(self, host: str, folder: str, port: int) -> None:
        """
        Run C{twistd relocfs} on C{host}'s address and C{port}.
        """
        address = netns.HOSTS[host]
        self.startPlugin(
            host,
            "fs" + host,
            "relocfs",
            "--port",
            f"tcp:{port}:interface={address}",
            "--base",
            folder,
        )

    def startProxy(self, *options: str) -> None:
        """
        Run C{twistd relocproxy} on A, with the routes file and C{options}.
        """
        self.startPlugin(
            "A",
            "proxy",
            "relocproxy",
            "--port",
            f"tcp:{PROXY_PORT}:interface={ADDRESS_A}",
            "--routes",
            self.routes,
            *options,
        )

    def startRsyncDaemon(self) -> str:
        """
        Run an rsync daemon on B serving B's folder as the writable module
        C{reloc}.

        @return: the C{--to} destination of B's file server folder.
        """
        config = os.path.join(self.work, "rsyncd.conf")
        with open(config, "w") as f:
            f.write(
                f"uid = 0\ngid = 0\nuse chroot = no\n"
                f"pid file = {self.work}/rsyncd.pid\n"
                f"log file = {self.work}/rsyncd.log\n"
                f"[reloc]\npath = {self.rootB}\nread only = no\n"
            )
        process = self.network.spawn(
            "B",
            [
                "rsync",
                "--daemon",
                "--no-detach",
                f"--config={config}",
                f"--address={ADDRESS_B}",
                f"--port={RSYNC_PORT}",
            ],
        )
        self.processes["rsyncd"] = process
        self.waitFor(
            lambda: (
                self.network.isListening("B", RSYNC_PORT) or process.poll() is not None
            ),
            10,
            "the rsync daemon did not start",
        )
        self.assertIsNone(process.poll(), self.read("rsyncd.log"))
        return f"rsync://{ADDRESS_B}/reloc/files"

    def startClient(self, output: str, rate: str) -> subprocess.Popen[bytes]:
        """
        Start C{python -m reloc.client} on C, slowed to C{rate}, with no
        reconnection of its own.
        """
        return self.network.spawn(
            "C",
            [
                sys.executable,
                "-m",
                "reloc.client",
                "--proxy",
                f"{ADDRESS_A}:{PROXY_PORT}",
                "--name",
                NAME,
                "--out",
                output,
                "--limit-rate",
                rate,
                # One connection: a success is the proxy's doing alone.
                "--retries",
                "0",
            ],
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def migrate(self, destination: str, title: str) -> None:
        """
        Run C{scripts/migrate.sh} on A, moving L{NAME} to B through
        C{destination}, and assert that it succeeded.
        """
        started = time.monotonic()
        result = self.network.run(
            "A",
            [
                MIGRATE,
                "--name",
                NAME,
                "--from",
                self.filesA,
                "--to",
                destination,
                "--backend",
                f"{ADDRESS_B}:{PORT_B}",
                "--routes",
                self.routes,
                "--pidfile",
                os.path.join(self.work, "proxy.pid"),
            ],
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        took = time.monotonic() - started
        netns.say(f"{title}: migrate.sh to {destination} took {took:.1f}s")

    def waitFor(self, condition: Callable[[], bool], timeout: float, why: str) -> None:
        """
        Poll C{condition} until it holds; fail with C{why} after C{timeout}
        seconds.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"{why} within {timeout}s\n{self.read('proxy.log')}")
            time.sleep(0.05)

    def waitForProgress(
        self, outputs: list[str], clients: list[subprocess.Popen[bytes]], size: int
    ) -> None:
        """
        Wait until every client has C{size} bytes of its file on disk, and
        none has ended.
        """

        def reached() -> bool:
            for client in clients:
                if client.poll() is not None:
                    _, errors = client.communicate()
                    self.fail(f"a client ended too early: {errors!r}")
            return all(received(output) >= size for output in outputs)

        self.waitFor(reached, 60, "the downloads did not get going")

    def read(self, name: str) -> str:
        """
        @return: the text of file C{name} in the work folder, or C{""}.
        """
        try:
            with open(os.path.join(self.work, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def moves(self) -> list[re.Match[str]]:
        """
        @return: the proxy's C{stream moved} log lines, parsed.
        """
        return list(_MOVED.finditer(self.read("proxy.log")))

    def announce(self, title: str, services: str) -> None:
        """
        Print the scenario, its hosts and addresses and the impairment.
        """
        netns.say(f"{title}: {self.network.describe()}")
        netns.say(f"{title}: {services}")
        netns.say(f"{title}: impairment: {self.network.describeImpairment()}")

    def reportMoves(self, title: str, size: int) -> None:
        """
        Print the offset of each switch the proxy logged.
        """
        for move in self.moves():
            offset = int(move["offset"])
            netns.say(
                f"{title}: switch offset {offset} of {size} bytes "
                f"({100 * offset / size:.1f}%) from {move['old']} to {move['new']} "
                f"({move['reason']})"
            )

    def assertSameFile(self, path: str, content: bytes) -> None:
        """
        Assert that the file at C{path} holds exactly C{content}.
        """
        with open(path, "rb") as f:
            received = f.read()
        self.assertEqual(len(received), len(content))
        self.assertEqual(
            hashlib.sha256(received).hexdigest(), hashlib.sha256(content).hexdigest()
        )

    def assertRefused(
        self, client: subprocess.Popen[bytes], output: str, content: bytes
    ) -> str:
        """
        Assert that C{client} ended with C{ERR 503}, left no finished file
        and kept only a true prefix of C{content}.

        @return: the client's error line.
        """
        _, errors = client.communicate(timeout=60)
        message = errors.decode(errors="replace").strip()
        self.assertNotEqual(client.returncode, 0, message)
        self.assertIn("503", message)
        self.assertFalse(os.path.exists(output))
        with open(output + ".part", "rb") as f:
            partial = f.read()
        self.assertTrue(content.startswith(partial), "the partial file differs")
        return message


def received(output: str) -> int:
    """
    @return: how many bytes a client has written to C{output} so far.
    """
    for path in (output + ".part", output):
        try:
            return os.path.getsize(path)
        except OSError:
            pass
    return 0


class HarnessTests(HostsTestCase):
    """
    The namespaces themselves: isolated from the root namespace, and swept
    when a run was killed.
    """

    def test_rootNamespaceUntouched(self) -> None:
        """
        The hosts reach each other, yet the root namespace gains no interface,
        address or route, and the hosts have no route beyond their /24.
        """
        rootState = [
            netns.ip("-o", "link", "show").stdout,
            netns.ip("-o", "addr", "show").stdout,
            netns.ip("route", "show", "table", "all").stdout,
        ]
        other = netns.Network()
        self.addCleanup(other.destroy)
        other.build()

        self.assertEqual(
            [
                netns.ip("-o", "link", "show").stdout,
                netns.ip("-o", "addr", "show").stdout,
                netns.ip("route", "show", "table", "all").stdout,
            ],
            rootState,
        )
        for host, address in netns.HOSTS.items():
            routes = other.run(host, ["ip", "-4", "route", "show"]).stdout
            self.assertEqual(
                routes.split(),
                f"10.0.0.0/24 dev eth0 proto kernel scope link src {address}".split(),
            )
        server = other.spawn(
            "B",
            [
                sys.executable,
                "-c",
                "import socket, sys\nsocket.create_server((sys.argv[1], 9)).accept()",
                ADDRESS_B,
            ],
        )
        self.waitFor(lambda: other.isListening("B", 9), 10, "no listener on B")
        reach = other.run(
            "C",
            [
                sys.executable,
                "-c",
                "import socket, sys\n"
                "socket.create_connection((sys.argv[1], 9), 5).close()",
                ADDRESS_B,
            ],
        )
        self.assertEqual(server.wait(10), 0)
        self.assertEqual(reach.returncode, 0, reach.stderr)

    def test_sweepRemovesKilledRuns(self) -> None:
        """
        The sweep deletes the namespaces of a runner that is gone, or whose
        pid now belongs to another process, and kills what runs inside; a
        live runner's namespaces stay.
        """
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = os.getpid()
        start = netns.startTime(pid)
        assert start is not None
        deadRun = f"{netns.PREFIX}{gone.pid}-1-1a"
        reusedPid = f"{netns.PREFIX}{pid}-{start + 1}-1a"
        for name in (deadRun, reusedPid):
            netns.ip("netns", "add", name)
            self.addCleanup(netns.removeNamespace, name)
        sleeper = subprocess.Popen(["ip", "netns", "exec", deadRun, "sleep", "600"])
        self.addCleanup(netns.stopProcess, sleeper)
        self.waitFor(
            lambda: bool(netns.ip("netns", "pids", deadRun).stdout.strip()),
            10,
            "the sleeper did not start",
        )

        removed = netns.sweepLeftovers()

        self.assertEqual(sorted(removed), sorted([deadRun, reusedPid]))
        self.assertEqual(sleeper.wait(10), -signal.SIGKILL)
        left = netns.namespaces()
        self.assertNotIn(deadRun, left)
        self.assertNotIn(reusedPid, left)
        self.assertIn(self.network.namespaces["A"], left)


class PlannedMigrationTests(HostsTestCase):
    """
    Scenario 1: an operator moves the file from A to B across the network
    while C downloads it.
    """

    def test_migrationAcrossHosts(self) -> None:
        """
        migrate.sh on A copies the file to B's rsync daemon and signals the
        proxy, A's file server is stopped, and the file on C is identical.
        """
        self.requireTools("rsync")
        title = "scenario 1 (planned migration)"
        size = 4 * MIB
        content = self.makeFile(size)
        self.writeRoutes(f"{ADDRESS_A}:{PORT_A}")
        self.startFileServer("A", self.filesA, PORT_A)
        self.startFileServer("B", self.filesB, PORT_B)
        destination = self.startRsyncDaemon()
        self.startProxy("--deadline", "10")
        self.announce(
            title,
            f"proxy A:{PROXY_PORT}, relocfs A:{PORT_A}, relocfs B:{PORT_B}, "
            f"rsyncd B:{RSYNC_PORT}, client on C; --to {destination}",
        )
        output = os.path.join(self.outputs, NAME)
        client = self.startClient(output, "512K")
        self.addCleanup(netns.stopProcess, client)
        self.waitForProgress([output], [client], size // 10)

        self.migrate(destination, title)
        self.waitFor(lambda: len(self.moves()) == 1, 30, "no move logged")
        netns.stopProcess(self.processes["fsA"])
        _, errors = client.communicate(timeout=60)

        self.reportMoves(title, size)
        self.assertEqual(client.returncode, 0, errors)
        self.assertSameFile(output, content)
        self.assertSameFile(os.path.join(self.filesB, NAME), content)
        [move] = self.moves()
        self.assertEqual(move["new"], f"{ADDRESS_B}:{PORT_B}")
        self.assertEqual(move["reason"], "reload")
        self.assertEqual(self.read("proxy.log").count("stream opened"), 1)
        self.assertTrue(0 < int(move["offset"]) < size, move["offset"])


class UnplannedFaultTests(HostsTestCase):
    """
    Scenario 2: a file server dies or a link is cut in mid-stream, with no
    operator signalling the proxy.
    """

    deadline = 6.0
    stallTimeout = 2.0
    #: Seconds allowed past a bound for starting and scheduling processes.
    slack = 5.0

    def startProxyForFaults(self) -> None:
        """
        Run the proxy with short timeouts and deadline.
        """
        self.startProxy(
            "--deadline",
            str(self.deadline),
            "--connect-timeout",
            "1",
            "--stall-timeout",
            str(self.stallTimeout),
        )

    def test_serverKilledWhileBIsCut(self) -> None:
        """
        A's file server is killed, B's link is down, the route is pointed at
        B and B's link comes back within the deadline: the stream resumes on
        B and the file on C is identical.
        """
        title = "scenario 2a (A killed, B cut and restored)"
        size = 3 * MIB
        content = self.makeFile(size)
        with open(os.path.join(self.filesB, NAME), "wb") as f:
            f.write(content)
        self.writeRoutes(f"{ADDRESS_A}:{PORT_A}")
        self.startFileServer("A", self.filesA, PORT_A)
        self.startFileServer("B", self.filesB, PORT_B)
        self.startProxyForFaults()
        self.network.impairments.append(
            "relocfs A killed (SIGKILL); B's link down for 2s (bridge port down)"
        )
        self.announce(
            title,
            f"proxy A:{PROXY_PORT} --deadline {self.deadline:g}, relocfs "
            f"A:{PORT_A}, relocfs B:{PORT_B} (holds a copy), client on C",
        )
        output = os.path.join(self.outputs, NAME)
        client = self.startClient(output, "1M")
        self.addCleanup(netns.stopProcess, client)
        self.waitForProgress([output], [client], size // 4)

        self.network.cut("B")
        self.processes["fsA"].kill()
        broken = time.monotonic()
        time.sleep(0.5)
        self.writeRoutes(f"{ADDRESS_B}:{PORT_B}")
        time.sleep(1.5)
        self.network.restore("B")
        _, errors = client.communicate(timeout=self.deadline + 60)
        elapsed = time.monotonic() - broken

        self.reportMoves(title, size)
        netns.say(f"{title}: client done {elapsed:.1f}s after the kill")
        self.assertEqual(client.returncode, 0, errors)
        self.assertSameFile(output, content)
        [move] = self.moves()
        self.assertEqual(move["new"], f"{ADDRESS_B}:{PORT_B}")
        self.assertEqual(move["reason"], "fault")
        self.assertEqual(self.read("proxy.log").count("stream opened"), 1)

    def test_linkCutPastDeadline(self) -> None:
        """
        B's link is cut while B serves the stream and stays down: the client
        gets ERR 503 once the stall timeout and the deadline have passed, and
        keeps only a true prefix of the file.
        """
        title = "scenario 2b (B cut for good)"
        size = 3 * MIB
        with open(os.path.join(self.filesB, NAME), "wb") as f:
            content = os.urandom(size)
            f.write(content)
        self.writeRoutes(f"{ADDRESS_B}:{PORT_B}")
        self.startFileServer("B", self.filesB, PORT_B)
        self.startProxyForFaults()
        self.network.impairments.append("B's link down for good (bridge port down)")
        self.announce(
            title,
            f"proxy A:{PROXY_PORT} --deadline {self.deadline:g} --stall-timeout "
            f"{self.stallTimeout:g}, relocfs B:{PORT_B}, client on C",
        )
        output = os.path.join(self.outputs, NAME)
        client = self.startClient(output, "1M")
        self.addCleanup(netns.stopProcess, client)
        self.waitForProgress([output], [client], size // 4)

        self.network.cut("B")
        broken = time.monotonic()
        message = self.assertRefused(client, output, content)
        elapsed = time.monotonic() - broken

        offsets = _GAVE_UP.findall(self.read("proxy.log"))
        netns.say(
            f"{title}: no switch; proxy gave up at offset {', '.join(offsets)}, "
            f"client ended {elapsed:.1f}s after the cut: {message}"
        )
        self.assertEqual(self.moves(), [])
        # The stall is noticed within a quarter of its timeout after it is
        # due; the deadline runs from then.
        self.assertLess(elapsed, 1.25 * self.stallTimeout + self.deadline + self.slack)

    def killAWithWrongCopyOnB(self, title: str, copy: bytes, content: bytes) -> None:
        """
        Serve C{content} from A and C{copy} from B, kill A's file server in
        mid-stream with the route pointed at B, and assert that the client
        gets ERR 503 within the deadline rather than a file.
        """
        with open(os.path.join(self.filesB, NAME), "wb") as f:
            f.write(copy)
        self.writeRoutes(f"{ADDRESS_A}:{PORT_A}")
        self.startFileServer("A", self.filesA, PORT_A)
        self.startFileServer("B", self.filesB, PORT_B)
        self.startProxyForFaults()
        self.network.impairments.append("relocfs A killed (SIGKILL)")
        self.announce(
            title,
            f"proxy A:{PROXY_PORT} --deadline {self.deadline:g}, relocfs "
            f"A:{PORT_A}, relocfs B:{PORT_B} ({len(copy)} bytes, not A's file), "
            f"client on C",
        )
        output = os.path.join(self.outputs, NAME)
        client = self.startClient(output, "1M")
        self.addCleanup(netns.stopProcess, client)
        self.waitForProgress([output], [client], len(content) // 4)

        self.writeRoutes(f"{ADDRESS_B}:{PORT_B}")
        self.processes["fsA"].kill()
        broken = time.monotonic()
        message = self.assertRefused(client, output, content)
        elapsed = time.monotonic() - broken

        netns.say(
            f"{title}: no switch; client ended {elapsed:.1f}s after the kill: {message}"
        )
        self.assertEqual(self.moves(), [])
        self.assertLess(elapsed, self.deadline + self.slack)

    def test_shorterCopyNeverServed(self) -> None:
        """
        When the route points at a copy on B shorter than what the client
        already has, the client gets ERR 503, not a file.
        """
        content = self.makeFile(3 * MIB)
        self.killAWithWrongCopyOnB(
            "scenario 2c (A killed, B holds a short copy)",
            content[: len(content) // 8],
            content,
        )

    def test_differentCopyNeverServed(self) -> None:
        """
        When the route points at a copy on B of the same size that differs in
        one byte past the client's offset, the client gets ERR 503, not a
        file.
        """
        content = self.makeFile(3 * MIB)
        last = len(content) - 1
        self.killAWithWrongCopyOnB(
            "scenario 2d (A killed, B holds a same-size copy, one byte differs)",
            content[:last] + bytes([content[last] ^ 0xFF]),
            content,
        )


class LossyLinkTests(HostsTestCase):
    """
    Scenario 3: a planned migration on lossy, capped links.
    """

    clients = 10

    def test_tenDownloadsThroughMigration(self) -> None:
        """
        With 1% loss and a bandwidth cap on every link (and delay where netem
        exists), ten concurrent downloads survive a migration in mid-stream,
        each byte-identical.
        """
        self.requireTools("rsync", "nft", "tc")
        title = "scenario 3 (lossy links, ten downloads)"
        if netns.netemAvailable():
            self.network.addDelay(25, 5)
        else:
            netns.say(f"{title}: no netem, so no delay ({netns.netemMissingWhy()})")
        self.network.addLoss(10)
        self.network.capBandwidth("40mbit")
        rate = "256K"
        size = 3 * MIB
        content = self.makeFile(size)
        self.writeRoutes(f"{ADDRESS_A}:{PORT_A}")
        self.startFileServer("A", self.filesA, PORT_A)
        self.startFileServer("B", self.filesB, PORT_B)
        destination = self.startRsyncDaemon()
        self.startProxy("--deadline", "20")
        self.announce(
            title,
            f"proxy A:{PROXY_PORT}, relocfs A:{PORT_A}, relocfs B:{PORT_B}, "
            f"rsyncd B:{RSYNC_PORT}, {self.clients} clients on C at {rate}/s each",
        )
        outputs = [
            os.path.join(self.outputs, f"{NAME}.{index}")
            for index in range(self.clients)
        ]
        clients = []
        for output in outputs:
            client = self.startClient(output, rate)
            self.addCleanup(netns.stopProcess, client)
            clients.append(client)
        self.waitForProgress(outputs, clients, size // 10)

        self.migrate(destination, title)
        self.waitFor(
            lambda: len(self.moves()) == self.clients, 60, "not every stream moved"
        )
        netns.stopProcess(self.processes["fsA"])
        results = [client.communicate(timeout=120) for client in clients]

        self.reportMoves(title, size)
        for client, (_, errors) in zip(clients, results, strict=True):
            self.assertEqual(client.returncode, 0, errors)
        for output in outputs:
            self.assertSameFile(output, content)
        opened = self.read("proxy.log").count("stream opened")
        self.assertEqual(opened, self.clients)
        for move in self.moves():
            self.assertEqual(move["new"], f"{ADDRESS_B}:{PORT_B}")
            self.assertTrue(0 < int(move["offset"]) < size, move["offset"])
