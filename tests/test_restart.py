"""
The proxy killed and restarted under a running client, with the real
programs as processes on loopback.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.test_processes import ProcessHarness

#: Well above what loopback socket buffers hold, so that the client notices
#: the proxy's death long before the end of the file.
SIZE = 32 * 1024 * 1024

#: Bytes per second the client reads, so that the download takes seconds.
RATE = SIZE // 4


class ProxyRestartTests(ProcessHarness, SynchronousTestCase):
    """
    The client's own connection to the proxy breaks in mid-download.
    """

    def setUp(self) -> None:
        self.work = os.path.abspath(self.mktemp())
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for folder in ("files", "out"):
            os.makedirs(os.path.join(self.work, folder))
        self.content = os.urandom(SIZE)
        with open(os.path.join(self.work, "files", "big.bin"), "wb") as f:
            f.write(self.content)

    def test_clientResumesAfterRestart(self) -> None:
        """
        When the proxy is killed in the middle of a slowed download and
        started again on the same port, the client reconnects, resumes from
        the bytes it has, and exits 0 with the file's SHA-256.

        The proxy is started again only once the client has reported the
        broken connection, so that the bytes the dead proxy left in socket
        buffers cannot carry the download to its end unnoticed.
        """
        serverPort = self.startPlugin("fs", "relocfs", "--base", "files")
        routes = self.writeRoutes({"big.bin": f"127.0.0.1:{serverPort}"})
        proxyPort = self.startPlugin("proxy", "relocproxy", "--routes", routes)
        output = os.path.join(self.work, "out", "big.bin")
        errors = open(os.path.join(self.work, "client.err"), "w+")
        self.addCleanup(errors.close)
        client = subprocess.Popen(
            self.clientCommand(
                proxyPort,
                output,
                "--limit-rate",
                str(RATE),
                "--retries",
                "8",
                "--progress",
                "always",
            ),
            cwd=self.work,
            stderr=errors,
        )
        self.addCleanup(self.stopProcess, client)
        partial = output + ".part"
        while not os.path.exists(partial) or os.path.getsize(partial) < SIZE // 4:
            self.assertIsNone(client.poll(), "client ended before the restart")
            time.sleep(0.02)

        proxy = self.processes["proxy"]
        proxy.send_signal(signal.SIGKILL)
        proxy.wait(10)
        deadline = time.monotonic() + 60
        while "trying again" not in self.read(errors):
            self.assertIsNone(client.poll(), self.read(errors))
            self.assertLess(time.monotonic(), deadline, "the client never retried")
            time.sleep(0.02)
        self.startPlugin(
            "proxy2",
            "relocproxy",
            "--routes",
            routes,
            "--port",
            f"tcp:{proxyPort}:interface=127.0.0.1",
        )

        client.wait(120)
        self.assertEqual(client.returncode, 0, self.read(errors))
        with open(output, "rb") as f:
            received = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(received, hashlib.sha256(self.content).hexdigest())
        self.assertFalse(os.path.exists(partial))
        self.assertFalse(os.path.exists(partial + ".id"))
        log = self.log("proxy2")
        self.assertEqual(log.count("stream opened"), 1, log)
        offset = int(log.split("stream opened: big.bin from offset ")[1].split()[0])
        self.assertTrue(SIZE // 4 <= offset < SIZE, offset)

    def read(self, stream) -> str:
        """
        @return: everything written to C{stream} so far.
        """
        stream.seek(0)
        return stream.read()
