"""
The migration demo, on loopback.

1. Build a large real file: a tar archive of Python's standard library.
2. Start file server A (serving it), file server B (empty) and the proxy,
   each as a real twistd process on a port chosen by the kernel.
3. Start a client slowed with --limit-rate, so that the download takes a
   while.
4. In the middle, run scripts/migrate.sh: rsync the file to B, check it,
   point the route at B, SIGHUP the proxy.  Then stop A.
5. Check that the client's file has the original's SHA-256, on one
   connection, and print what happened.

Run it through scripts/demo.sh, which installs what it needs first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "stdlib.tar"
MiB = 1024 * 1024


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def buildArchive(path: str, least: int, most: int) -> int:
    """
    Write a tar of the standard library to C{path}, repeating it under
    another prefix if one pass is smaller than C{least} bytes, and stopping
    once the archive passes C{most} bytes.

    @return: the archive's size.
    """
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for folder, subfolders, names in os.walk(stdlib):
        subfolders[:] = sorted(
            d for d in subfolders if d not in ("site-packages", "dist-packages")
        )
        files.extend(os.path.join(folder, n) for n in sorted(names))
    total = 0
    copy = 0
    with tarfile.open(path, "w") as archive:
        while total < least:
            copy += 1
            for file in files:
                if total >= most or not os.path.isfile(file):
                    continue
                relative = os.path.relpath(file, stdlib)
                archive.add(file, arcname=f"copy{copy}/{relative}", recursive=False)
                total += os.path.getsize(file) + 512
    return os.path.getsize(path)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


class Demo:
    def __init__(self, work: str, seconds: float):
        self.work = work
        self.seconds = seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.python = sys.executable
        self.twistd = os.path.join(os.path.dirname(sys.executable), "twistd")

    def path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)

    def startTwistd(self, role: str, plugin: str, *arguments: str) -> int:
        """
        Start one twistd plugin in the foreground of a child process.

        @return: the port it bound.
        """
        portFile = self.path(f"{role}.port")
        command = [
            self.twistd,
            "-n",
            "--pidfile",
            self.path(f"{role}.pid"),
            "--logfile",
            self.path(f"{role}.log"),
            plugin,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--portfile",
            portFile,
            *arguments,
        ]
        self.processes[role] = subprocess.Popen(command, cwd=self.work)
        deadline = time.monotonic() + 30
        while not os.path.exists(portFile):
            if self.processes[role].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: {role} did not start; see {role}.log")
            time.sleep(0.05)
        with open(portFile) as f:
            return int(f.read())

    def stop(self, role: str) -> None:
        process = self.processes.pop(role)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stopAll(self) -> None:
        for role in list(self.processes):
            self.stop(role)

    def run(self) -> int:
        os.makedirs(self.path("filesA"))
        os.makedirs(self.path("filesB"))
        original = self.path("filesA", NAME)
        say("building the file: a tar of Python's standard library")
        size = buildArchive(original, 100 * MiB, 160 * MiB)
        digest = sha256(original)
        say(f"{NAME}: {size} bytes, sha256 {digest}")

        portA = self.startTwistd("fsA", "relocfs", "--base", self.path("filesA"))
        portB = self.startTwistd("fsB", "relocfs", "--base", self.path("filesB"))
        routes = self.path("routes.json")
        with open(routes, "w") as f:
            json.dump({NAME: f"127.0.0.1:{portA}"}, f)
        proxyPort = self.startTwistd("proxy", "relocproxy", "--routes", routes)
        say(f"file server A on 127.0.0.1:{portA}, B on 127.0.0.1:{portB}")
        say(f"proxy on 127.0.0.1:{proxyPort}, routing {NAME} to A")

        rate = max(1, int(size / self.seconds))
        output = self.path("downloaded", NAME)
        os.makedirs(os.path.dirname(output))
        say(f"client: downloading through the proxy at {rate // 1024} KiB/s")
        self.processes["client"] = client = subprocess.Popen(
            [
                self.python,
                "-m",
                "reloc.client",
                "--proxy",
                f"127.0.0.1:{proxyPort}",
                "--name",
                NAME,
                "--out",
                output,
                "--limit-rate",
                str(rate),
            ],
            cwd=self.work,
        )
        partial = output + ".part"
        while not os.path.exists(partial) or os.path.getsize(partial) < size // 5:
            if client.poll() is not None:
                say("the client ended before the move")
                return 1
            time.sleep(0.05)

        say(f"client has {os.path.getsize(partial)} bytes; migrating A -> B")
        migrate = subprocess.run(
            [
                os.path.join(ROOT, "scripts", "migrate.sh"),
                "--name",
                NAME,
                "--from",
                self.path("filesA"),
                "--to",
                self.path("filesB"),
                "--backend",
                f"127.0.0.1:{portB}",
                "--routes",
                routes,
                "--pidfile",
                self.path("proxy.pid"),
            ],
        )
        if migrate.returncode != 0:
            say(f"migrate.sh failed with exit code {migrate.returncode}")
            return 1
        move = self.waitForMove()
        if move is None:
            say("the proxy logged no move")
            return 1
        say(f"proxy moved the stream: {move}")
        say("stopping file server A")
        self.stop("fsA")

        status = client.wait()
        self.processes.pop("client")
        if status != 0:
            say(f"client failed with exit status {status}")
            return 1
        received = sha256(output)
        offset = int(re.search(r"at offset (\d+)", move).group(1))
        say(f"switch offset: {offset} of {size} bytes ({100 * offset / size:.1f}%)")
        say(f"original sha256: {digest}")
        say(f"received sha256: {received}")
        if received != digest:
            say("MISMATCH: the downloaded file differs from the original")
            return 1
        if not 0 < offset < size:
            say("the switch did not happen in the middle of the stream")
            return 1
        say("OK: identical file, moved from A to B in mid-stream")
        return 0

    def waitForMove(self) -> str | None:
        pattern = re.compile(r"stream moved: (.*)$", re.M)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.path("proxy.log")) as f:
                found = pattern.search(f.read())
            if found:
                return found.group(1)
            time.sleep(0.05)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="how long the slowed download should take (default 12)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    arguments = parser.parse_args()
    if not 1 <= arguments.seconds <= 3600:
        parser.error("--seconds must be between 1 and 3600")
    work = tempfile.mkdtemp(prefix="reloc-demo-")
    say(f"working in {work}")
    demo = Demo(work, arguments.seconds)
    status = 1
    try:
        status = demo.run()
    finally:
        demo.stopAll()
        if status == 0 and not arguments.keep:
            shutil.rmtree(work)
        else:
            say(f"logs and files kept in {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
