"""
The real programs as processes: twistd with both plugins, the client, and
scripts/migrate.sh sending SIGHUP, all on loopback ports chosen by the kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
MIGRATE = os.path.join(ROOT, "scripts", "migrate.sh")
SIZE = 24 * 1024 * 1024


class ProcessHarness:
    """
    Start twistd plugins and clean them up.
    """

    def startPlugin(self, role: str, plugin: str, *arguments: str) -> int:
        """
        Run a plugin with its own pidfile and log, on port 0.

        @return: the port it bound.
        """
        portFile = os.path.join(self.work, role + ".port")
        process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile",
                os.path.join(self.work, role + ".pid"),
                "--logfile",
                os.path.join(self.work, role + ".log"),
                plugin,
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--portfile",
                portFile,
                *arguments,
            ],
            cwd=self.work,
        )
        self.addCleanup(self.stopProcess, process)
        deadline = time.monotonic() + 30
        while not os.path.exists(portFile):
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"{role} did not start:\n{self.log(role)}")
            time.sleep(0.02)
        self.processes[role] = process
        with open(portFile) as f:
            return int(f.read())

    def clientCommand(self, proxyPort: int, output: str, *arguments: str) -> list[str]:
        """
        @return: the command line of C{reloc.client} downloading C{big.bin}
            through the proxy on C{proxyPort} to C{output}.
        """
        return [
            sys.executable,
            "-m",
            "reloc.client",
            "--proxy",
            f"127.0.0.1:{proxyPort}",
            "--name",
            "big.bin",
            "--out",
            output,
            *arguments,
        ]

    def migrateCommand(self, portB: int, routes: str) -> list[str]:
        """
        @return: the command line of C{migrate.sh} moving C{big.bin} from
            C{filesA} to C{filesB}, served on C{portB}, and signalling the
            proxy whose pidfile is C{proxy.pid}.
        """
        return [
            MIGRATE,
            "--name",
            "big.bin",
            "--from",
            os.path.join(self.work, "filesA"),
            "--to",
            os.path.join(self.work, "filesB"),
            "--backend",
            f"127.0.0.1:{portB}",
            "--routes",
            routes,
            "--pidfile",
            os.path.join(self.work, "proxy.pid"),
        ]

    def stopProcess(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self, role: str) -> str:
        try:
            with open(os.path.join(self.work, role + ".log")) as f:
                return f.read()
        except OSError:
            return ""

    def writeRoutes(self, routes: dict[str, str]) -> str:
        path = os.path.join(self.work, "routes.json")
        with open(path, "w") as f:
            json.dump(routes, f)
        return path


class PluginProcessTests(ProcessHarness, SynchronousTestCase):
    """
    The plugins, the client and migrate.sh as an operator runs them.
    """

    def setUp(self) -> None:
        self.work = os.path.abspath(self.mktemp())
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for folder in ("filesA", "filesB", "out"):
            os.makedirs(os.path.join(self.work, folder))
        self.content = os.urandom(SIZE)
        with open(os.path.join(self.work, "filesA", "big.bin"), "wb") as f:
            f.write(self.content)

    def test_pluginsListed(self) -> None:
        """
        twistd lists both plugins in its help.
        """
        result = subprocess.run(
            [TWISTD, "--help"], capture_output=True, text=True, cwd=self.work
        )
        self.assertIn("relocfs", result.stdout)
        self.assertIn("relocproxy", result.stdout)

    def test_migrationWithSighup(self) -> None:
        """
        A slowed download through the real proxy survives migrate.sh moving
        the file from A to B and A being stopped: the client's file is
        byte-identical, and the proxy logged one move in mid-stream.
        """
        portA = self.startPlugin("fsA", "relocfs", "--base", "filesA")
        portB = self.startPlugin("fsB", "relocfs", "--base", "filesB")
        routes = self.writeRoutes({"big.bin": f"127.0.0.1:{portA}"})
        proxyPort = self.startPlugin("proxy", "relocproxy", "--routes", routes)
        output = os.path.join(self.work, "out", "big.bin")
        client = subprocess.Popen(
            self.clientCommand(proxyPort, output, "--limit-rate", str(SIZE // 10)),
            cwd=self.work,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(self.stopProcess, client)
        partial = output + ".part"
        while not os.path.exists(partial) or os.path.getsize(partial) < SIZE // 8:
            self.assertIsNone(client.poll(), "client ended before the move")
            time.sleep(0.02)

        migrate = subprocess.run(
            self.migrateCommand(portB, routes),
            capture_output=True,
            text=True,
        )
        self.assertEqual(migrate.returncode, 0, migrate.stderr)
        deadline = time.monotonic() + 60
        while "stream moved" not in self.log("proxy"):
            self.assertLess(time.monotonic(), deadline, self.log("proxy"))
            time.sleep(0.02)
        self.stopProcess(self.processes["fsA"])

        _, errors = client.communicate(timeout=60)
        self.assertEqual(client.returncode, 0, errors)
        with open(output, "rb") as f:
            received = f.read()
        self.assertEqual(
            hashlib.sha256(received).hexdigest(),
            hashlib.sha256(self.content).hexdigest(),
        )
        log = self.log("proxy")
        self.assertEqual(log.count("stream opened"), 1)
        self.assertEqual(log.count("stream moved"), 1)
        self.assertIn(f"to 127.0.0.1:{portB}", log)
        offset = int(log.split("stream moved")[1].split("at offset ")[1].split()[0])
        self.assertTrue(0 < offset < SIZE, offset)

    def test_rawNetcatClient(self) -> None:
        """
        A raw client that is not ours, netcat, gets a valid frame stream.
        """
        if shutil.which("nc") is None:
            raise self.skipTest("netcat (nc) is not installed")
        portA = self.startPlugin("fsA", "relocfs", "--base", "filesA")
        routes = self.writeRoutes({"big.bin": f"127.0.0.1:{portA}"})
        proxyPort = self.startPlugin("proxy", "relocproxy", "--routes", routes)
        offset = SIZE - 100000
        result = subprocess.run(
            f"printf 'GET big.bin {offset}\\r\\n' | nc -q 5 127.0.0.1 {proxyPort}",
            shell=True,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(decodeFrames(result.stdout), self.content[offset:])

    def test_hangupWithBadRoutesKeepsTable(self) -> None:
        """
        SIGHUP with a routes file that does not parse leaves the proxy
        running on its old table, and the refusal is logged.
        """
        portA = self.startPlugin("fsA", "relocfs", "--base", "filesA")
        routes = self.writeRoutes({"big.bin": f"127.0.0.1:{portA}"})
        proxyPort = self.startPlugin("proxy", "relocproxy", "--routes", routes)
        with open(routes, "w") as f:
            f.write('{"big.bin": ')
        self.processes["proxy"].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "routes reload refused" not in self.log("proxy"):
            self.assertLess(time.monotonic(), deadline, self.log("proxy"))
            time.sleep(0.02)
        self.assertIsNone(self.processes["proxy"].poll())
        with socket.create_connection(("127.0.0.1", proxyPort), timeout=30) as s:
            s.sendall(b"GET big.bin %d\n" % (SIZE - 10,))
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        self.assertEqual(decodeFrames(answer), self.content[-10:])


def decodeFrames(wire: bytes) -> bytes:
    """
    Decode a whole answer independently of reloc's own decoder.

    @raise AssertionError: if the answer is not frames closed by C{EOF}.
    """
    payload = []
    position = 0
    while True:
        end = wire.index(b"\n", position)
        header = wire[position:end]
        position = end + 1
        if header == b"EOF":
            assert position == len(wire), "bytes after EOF"
            return b"".join(payload)
        verb, length = header.split(b" ")
        assert verb == b"DATA", header
        payload.append(wire[position : position + int(length)])
        position += int(length)
