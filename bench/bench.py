"""
reloc's benchmark: relocproxy next to direct access, HAProxy and Twisted's
port forwarder, on loopback, with the files on a RAM-backed folder.

    python bench/bench.py [--size 1G] [--runs 5] [--json FILE]

Four parts (C{--only} picks some): C{throughput} (one large download, the
same plain reader on every path, and the full client), C{stall} (the longest
gap each client sees while one SIGHUP moves 1, 100 and 1000 streams),
C{memory} (the proxy's peak RSS with many streams, its growth under one slow
reader) and C{scale} (many simultaneous checked downloads).  It prints one
Markdown table and can write every figure as JSON.  Run it through
C{bench/run.sh}, which installs what it needs.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import harness
from harness import BENCH, TWISTD, BenchError, Process, Processes, cpuTimes, memory
from profiling import profile

MB = 1_000_000
MiB = 1024 * 1024
GiB = 1024 * MiB
PARTS = ("throughput", "stall", "memory", "scale")
MODES = ("steady", "cold", "warm")
_UNITS = {"": 1, "K": 1024, "M": MiB, "G": GiB}


def parseSize(text: str) -> int:
    """
    Read a size such as C{1G}, C{64M} or C{4096} (K, M and G are powers of
    1024).
    """
    unit = text[-1:].upper() if text[-1:].upper() in "KMG" else ""
    number = text[: len(text) - len(unit)]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def parseCounts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N,N,...") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be positive")
    return counts


def parseParts(text: str) -> list[str]:
    parts = [part for part in text.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown parts: {', '.join(unknown)}")
    return parts


def parseModes(text: str) -> list[str]:
    modes = [mode for mode in text.split(",") if mode]
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}")
    return modes


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--size", type=parseSize, default=GiB, help="large file (K/M/G)")
    add("--runs", type=int, default=5, help="runs per throughput path")
    add("--only", type=parseParts, default=list(PARTS), help="parts, comma-separated")
    add("--client-runs", type=int, default=3, help="runs of the full client")
    add("--stall-streams", type=parseCounts, default=[1, 100, 1000])
    add("--stall-size", type=parseSize, default=None, help="default: 2 x --size")
    add("--stall-rate", type=float, default=0.0, help="bytes/s per stream, 0: free")
    add(
        "--stall-modes",
        type=parseModes,
        default=list(MODES),
        help="steady: no switch; cold/warm: B's digest computed during the move "
        "or before it",
    )
    add("--stall-before", type=float, default=1.0, help="seconds before SIGHUP")
    add("--stall-after", type=float, default=1.0, help="seconds after the move")
    add("--slow-rate", type=float, default=1e6, help="slow reader, bytes/s")
    add("--slow-seconds", type=float, default=20.0, help="slow reader duration")
    add("--scale-streams", type=int, default=1000)
    add("--scale-size", type=parseSize, default=10 * MiB)
    add("--shm", default="/dev/shm", help="RAM-backed folder for the files")
    add(
        "--backlog",
        type=int,
        default=0,
        help="listen backlog for relocfs and relocproxy (0: Twisted's 50)",
    )
    add("--json", metavar="FILE", help="also write every figure here")
    add("--keep", action="store_true", help="keep the work folder and logs")
    add("--table", metavar="FILE", help="only print the table of a --json file")
    add("--profile", metavar="DIR", help="only profile the proxy and file server")
    add("--profile-seconds", type=float, default=8.0)
    arguments = parser.parse_args(argv)
    if arguments.stall_size is None:
        arguments.stall_size = 2 * arguments.size
    if arguments.runs < 1 or arguments.size < 1:
        parser.error("--runs and --size must be positive")
    return arguments


class Bench:
    """
    One benchmark run: its files, its processes and its figures.
    """

    def __init__(self, arguments: argparse.Namespace, work: str) -> None:
        self.arguments = arguments
        self.work = work
        self.processes = Processes(work, arguments.backlog)
        self.folderA = os.path.join(work, "filesA")
        self.folderB = os.path.join(work, "filesB")
        self.routesPath = os.path.join(work, "routes.json")
        self.results: dict[str, Any] = {}
        self.scaleDigest = ""

    # Set-up.

    def makeFiles(self, parts: list[str]) -> None:
        arguments = self.arguments
        os.makedirs(self.folderA)
        os.makedirs(self.folderB)
        say(f"writing files in {self.work}")
        if {"throughput", "memory"} & set(parts) or arguments.profile:
            writeFile(os.path.join(self.folderA, "big.bin"), arguments.size)
            writeFile(os.path.join(self.folderA, "empty.bin"), 0)
        if "stall" in parts:
            stall = os.path.join(self.folderA, "stall.bin")
            writeFile(stall, arguments.stall_size)
            # File server B serves a real copy, as after a migration.
            shutil.copyfile(stall, os.path.join(self.folderB, "stall.bin"))
        if "scale" in parts:
            path = os.path.join(self.folderA, "scale.bin")
            writeFile(path, arguments.scale_size, block=arguments.scale_size)
            self.scaleDigest = sha256(path)

    def writeRoutes(self, backend: Process, moved: Process | None = None) -> None:
        """
        Route every name to C{backend}, and the stall file to C{moved} if set.
        """
        address = f"127.0.0.1:{backend.port}"
        routes = {name: address for name in ("big.bin", "empty.bin", "scale.bin")}
        target = moved or backend
        routes["stall.bin"] = f"127.0.0.1:{target.port}"
        temporary = self.routesPath + ".tmp"
        with open(temporary, "w") as f:
            json.dump(routes, f)
        os.replace(temporary, self.routesPath)

    def startProxy(self, role: str) -> Process:
        return self.processes.startPlugin(
            role, "relocproxy", "--routes", self.routesPath
        )

    def startHaproxy(self, backend: Process) -> Process:
        port = harness.freePort()
        config = os.path.join(self.work, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(haproxyConfig(port, backend.port))
        return self.processes.startOnPort(
            "haproxy", [haproxyPath(), "-db", "-f", config], port
        )

    def startPortForward(self, backend: Process) -> Process:
        port = harness.freePort()
        command = [
            TWISTD,
            "-n",
            "--pidfile",
            os.path.join(self.work, "portforward.pid"),
            "--logfile",
            os.path.join(self.work, "portforward.log"),
            "portforward",
            "-p",
            f"tcp:{port}:interface=127.0.0.1",
            "-h",
            "127.0.0.1",
            "-d",
            str(backend.port),
        ]
        return self.processes.startOnPort("portforward", command, port)

    def startSendfileServer(self) -> Process:
        portFile = os.path.join(self.work, "sendfile.port")
        command = [
            sys.executable,
            os.path.join(BENCH, "sendfile_server.py"),
            "--base",
            self.folderA,
            "--portfile",
            portFile,
        ]
        process = self.processes.start("sendfile", command)
        process.port = self.processes.waitFor(
            process, lambda: harness.readPort(portFile)
        )
        return process

    # Helpers.

    def read(self, port: int, name: str, *extra: str) -> dict[str, Any]:
        command = [
            sys.executable,
            os.path.join(BENCH, "reader.py"),
            "--port",
            str(port),
            "--name",
            name,
            *extra,
        ]
        return harness.runJson(command, timeout=600, cwd=self.work)

    # 1. Throughput.

    def throughput(self) -> None:
        arguments = self.arguments
        size = arguments.size
        fs = self.processes.startPlugin("fsA", "relocfs", "--base", self.folderA)
        self.writeRoutes(fs)
        proxy = self.startProxy("proxy")
        paths: list[tuple[str, Process, list[Process]]] = [
            ("direct relocfs", fs, [fs]),
            ("relocproxy", proxy, [fs, proxy]),
            ("HAProxy (mode tcp)", self.startHaproxy(fs), [fs]),
            ("Twisted portforward", self.startPortForward(fs), [fs]),
            ("sendfile server (ceiling)", self.startSendfileServer(), []),
        ]
        # relocfs hashes the file on the proxy's first GETID: time it once,
        # then warm every path up so that no timed run pays a first-use cost.
        self.results["identity"] = self.identify(fs, "big.bin")
        for _, entry, _ in paths:
            self.read(entry.port, "big.bin", "--max-seconds", "0.3")
        samples: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in paths}
        for run in range(arguments.runs):
            for label, entry, behind in paths:
                watched = behind + ([entry] if entry not in behind else [])
                before = {p.role: cpuTimes(p.pid) for p in watched}
                result = self.read(entry.port, "big.bin")
                after = {p.role: cpuTimes(p.pid) for p in watched}
                if result["error"] or result["bytes"] != size:
                    raise BenchError(f"{label}: reader failed: {result}")
                sample = {"MBps": size / MB / result["seconds"]}
                for role, start in before.items():
                    used = after[role] - start
                    sample[f"{role}.user"] = used.user * GiB / size
                    sample[f"{role}.sys"] = used.system * GiB / size
                sample["reader.cpu"] = result["cpu"] * GiB / size
                samples[label].append(sample)
                say(f"run {run + 1}: {label}: {sample['MBps']:.0f} MB/s")
        self.results["throughput"] = {
            label: medians(runs) | {"runsMBps": [r["MBps"] for r in runs]}
            for label, runs in samples.items()
        }
        self.clients(fs, proxy)

    def clients(self, fs: Process, proxy: Process) -> None:
        """
        The full client, writing a file on the RAM-backed folder.
        """
        size = self.arguments.size
        out = os.path.join(self.work, "client.out")
        figures: dict[str, Any] = {}
        runs = self.arguments.client_runs
        cases = [("empty.bin", "client startup (empty file)", fs)] * runs
        for _ in range(runs):
            cases.append(("big.bin", "full client, direct", fs))
            cases.append(("big.bin", "full client, via relocproxy", proxy))
        for name, label, entry in cases:
            seconds, cpu = runClient(entry.port, name, out)
            expected = size if name == "big.bin" else 0
            if os.path.getsize(out) != expected:
                raise BenchError(f"{label}: wrote {os.path.getsize(out)} bytes")
            os.remove(out)
            sample = {"seconds": seconds, "client.cpu": cpu}
            if expected:
                sample["MBps"] = size / MB / seconds
                sample["client.cpu"] = cpu * GiB / size
            figures.setdefault(label, []).append(sample)
            say(f"{label}: {seconds:.2f}s")
        self.results["clients"] = {
            label: medians(runs) for label, runs in figures.items()
        }

    # 2. Switch stall, and the memory of many streams.

    def stall(self) -> None:
        arguments = self.arguments
        fsA = self.processes.startPlugin("fsA-stall", "relocfs", "--base", self.folderA)
        # The proxy asks with GETID: relocfs hashes the file once, before its
        # first answer.  That wait is timed here, not inside a stall case.
        self.results["stallIdentity"] = self.identify(fsA, "stall.bin")
        figures = []
        for count in arguments.stall_streams:
            for mode in arguments.stall_modes:
                figures.append(self.stallCase(fsA, count, mode))
        self.results["stall"] = figures
        self.processes.stop(fsA)

    def identify(self, fs: Process, name: str) -> dict[str, Any]:
        """
        Ask a file server for a file's identity alone (C{GETID} at its end).

        @return: the file's size and how long the answer took.
        """
        size = os.path.getsize(os.path.join(self.folderA, name))
        result = self.read(fs.port, name, "--identify", "--offset", str(size))
        if result["error"]:
            raise BenchError(f"GETID {name} failed: {result}")
        return {"size": size, "seconds": result["seconds"]}

    def stallCase(self, fsA: Process, count: int, mode: str) -> dict[str, Any]:
        """
        Run C{count} streams through a fresh proxy and measure the gaps they
        see: with no switch (C{steady}), or with one SIGHUP moving them to a
        fresh file server B whose digest of the file is C{cold} (computed
        during the move, as after scripts/migrate.sh) or C{warm} (asked for
        beforehand).
        """
        arguments = self.arguments
        self.writeRoutes(fsA)
        role = f"proxy-stall-{count}-{mode}"
        fsB = None
        if mode != "steady":
            fsB = self.processes.startPlugin(
                f"fsB-stall-{count}-{mode}", "relocfs", "--base", self.folderB
            )
            if mode == "warm":
                self.identify(fsB, "stall.bin")
        proxy = self.startProxy(role)
        idle = memory(proxy.pid)["VmRSS"]
        overflows = harness.listenOverflows()
        command = [
            sys.executable,
            os.path.join(BENCH, "streams.py"),
            "--mode",
            "stall",
            "--port",
            str(proxy.port),
            "--name",
            "stall.bin",
            "--streams",
            str(count),
            "--in-flight",
            "40",
            "--rate",
            str(arguments.stall_rate),
            "--max-seconds",
            "400",
            "--drain-seconds",
            "120",
        ]
        helper = self.processes.start(role + "-streams", command, piped=True)
        popen = helper.popen
        if harness.readLine(popen, 150) != "ready":
            raise BenchError(f"{role}: streams did not start:\n{helper.logText()}")
        time.sleep(arguments.stall_before)
        overflowsBefore = harness.listenOverflows()
        moveSeconds = None
        if fsB is not None:
            self.writeRoutes(fsA, moved=fsB)
            signalled = time.monotonic()
            os.kill(proxy.pid, signal.SIGHUP)
            if waitUntil(lambda: movedCount(proxy) >= count, 60) is not None:
                moveSeconds = time.monotonic() - signalled
        time.sleep(arguments.stall_after)
        assert popen.stdin is not None
        popen.stdin.write(b"stop\n")
        popen.stdin.flush()
        result = json.loads(harness.readLine(popen, 180))
        popen.wait(30)
        used = memory(proxy.pid)
        moved = movedCount(proxy)
        overflowsAfter = harness.listenOverflows()
        self.processes.stop(helper)
        self.processes.stop(proxy)
        if fsB is not None:
            self.processes.stop(fsB)
        figure = {
            "streams": count,
            "mode": mode,
            "moved": moved,
            "moveSeconds": moveSeconds,
            "gap": result["gap"],
            "errors": result["errors"],
            "finishedEarly": result["finishedEarly"],
            "measureSeconds": result["measureSeconds"],
            "drainSeconds": result["drainSeconds"],
            "notResumed": result["notResumed"],
            "MBps": result["measuredPayload"] / MB / result["measureSeconds"],
            "proxyIdleRSS": idle,
            "proxyHWM": used["VmHWM"],
            "listenOverflowsOpening": overflowsBefore - overflows,
            "listenOverflowsMoving": overflowsAfter - overflowsBefore,
        }
        gap = result["gap"] or {}
        say(
            f"{role}: gap p50 {ms(gap.get('p50'))} p99 {ms(gap.get('p99'))}, "
            f"moved {moved} in {moveSeconds}, errors {result['errors'] or 'none'}"
        )
        return figure

    # 3. Memory under one slow reader.

    def slowReader(self) -> None:
        arguments = self.arguments
        fs = self.processes.startPlugin("fsA-slow", "relocfs", "--base", self.folderA)
        self.writeRoutes(fs)
        proxy = self.startProxy("proxy-slow")
        idle = memory(proxy.pid)["VmRSS"]
        command = [
            sys.executable,
            os.path.join(BENCH, "reader.py"),
            "--port",
            str(proxy.port),
            "--name",
            "big.bin",
            "--rate",
            str(arguments.slow_rate),
            "--max-seconds",
            str(arguments.slow_seconds),
        ]
        reader = self.processes.start("slow-reader", command, piped=True)
        samples = []
        start = time.monotonic()
        deadline = start + arguments.slow_seconds + 30
        while reader.popen.poll() is None and time.monotonic() < deadline:
            samples.append((time.monotonic() - start, memory(proxy.pid)["VmRSS"]))
            time.sleep(0.25)
        assert reader.popen.stdout is not None
        output = reader.popen.stdout.read().decode().strip().splitlines()
        if not output:
            raise BenchError(f"slow reader printed nothing:\n{reader.logText()}")
        result = json.loads(output[-1])
        hwm = memory(proxy.pid)["VmHWM"]
        self.processes.stop(reader)
        self.processes.stop(proxy)
        self.processes.stop(fs)
        settled = [rss for t, rss in samples if t >= 1.0] or [samples[-1][1]]
        self.results["slowReader"] = {
            "rate": arguments.slow_rate,
            "seconds": result["seconds"],
            "bytes": result["bytes"],
            "error": result["error"],
            "proxyIdleRSS": idle,
            "rssAt1s": settled[0],
            "rssMax": max(settled),
            "rssEnd": settled[-1],
            "growth": max(settled) - settled[0],
            "growthFromIdle": hwm - idle,
            "proxyHWM": hwm,
            "samples": samples,
        }
        say(f"slow reader: RSS growth {kib(max(settled) - settled[0])}")

    # 4. Scale.

    def scale(self) -> None:
        arguments = self.arguments
        fs = self.processes.startPlugin("fsA-scale", "relocfs", "--base", self.folderA)
        self.writeRoutes(fs)
        proxy = self.startProxy("proxy-scale")
        idle = memory(proxy.pid)["VmRSS"]
        command = [
            sys.executable,
            os.path.join(BENCH, "streams.py"),
            "--mode",
            "download",
            "--port",
            str(proxy.port),
            "--name",
            "scale.bin",
            "--streams",
            str(arguments.scale_streams),
            "--size",
            str(arguments.scale_size),
            "--sha256",
            self.scaleDigest,
            "--max-seconds",
            "600",
        ]
        overflows = harness.listenOverflows()
        result = harness.runJson(command, timeout=660, cwd=self.work)
        hwm = memory(proxy.pid)["VmHWM"]
        overflows = harness.listenOverflows() - overflows
        self.processes.stop(proxy)
        self.processes.stop(fs)
        self.results["scale"] = {
            "streams": arguments.scale_streams,
            "size": arguments.scale_size,
            "seconds": result["seconds"],
            "ok": result["ok"],
            "errors": result["errors"],
            "firstByte": result["firstByte"],
            "done": result["done"],
            "MBps": result["payload"] / MB / result["seconds"],
            "proxyIdleRSS": idle,
            "proxyHWM": hwm,
            "listenOverflows": overflows,
        }
        say(
            f"scale: {result['ok']}/{arguments.scale_streams} ok "
            f"in {result['seconds']:.1f}s, errors {result['errors'] or 'none'}"
        )


def haproxyPath() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(found, os.X_OK):
        raise BenchError("haproxy is not installed: run bench/run.sh")
    return found


def haproxyConfig(port: int, backendPort: int) -> str:
    return f"""\
global
    maxconn 4000

defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s

listen relay
    bind 127.0.0.1:{port}
    server fs 127.0.0.1:{backendPort}
"""


def runClient(port: int, name: str, out: str) -> tuple[float, float]:
    """
    Run C{python -m reloc.client} once.

    @return: its wall-clock seconds and CPU seconds.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reloc.client",
            "--proxy",
            f"127.0.0.1:{port}",
            "--name",
            name,
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise BenchError(f"client failed: {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def movedCount(proxy: Process) -> int:
    """
    @return: how many streams the proxy logged as moved by a reload.
    """
    try:
        with open(proxy.log, errors="replace") as f:
            return sum(
                1 for line in f if "stream moved:" in line and "(reload)" in line
            )
    except OSError:
        return 0


def waitUntil(condition: Callable[[], bool], seconds: float) -> float | None:
    """
    Poll C{condition} every 10 ms for at most C{seconds}.

    @return: the seconds it took, or L{None} if it never held.
    """
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def writeFile(path: str, size: int, block: int = 64 * MiB) -> None:
    """
    Write C{size} bytes of random data, one random block repeated.
    """
    pattern = os.urandom(max(1, min(size, block)))
    with open(path, "wb") as f:
        left = size
        while left:
            piece = pattern[: min(left, len(pattern))]
            f.write(piece)
            left -= len(piece)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: statistics.median(run[key] for run in runs) for key in sorted(keys)}


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    try:
        haproxy = subprocess.run(
            [haproxyPath(), "-v"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n")[0]
    except BenchError:
        haproxy = "not installed"
    import twisted

    try:
        commit = subprocess.run(
            ["git", "-C", BENCH, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or "?",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory": total,
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "haproxy": haproxy,
    }


def raiseFileLimit(streams: int) -> None:
    """
    Allow every descriptor the many-stream parts need (the children inherit
    the limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * streams + 256
    if soft < wanted:
        soft = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        raise BenchError(f"need {wanted} open files, ulimit -n allows {soft}")


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def kib(count: float) -> str:
    return f"{count / 1024:,.0f} KiB"


def main(argv: list[str]) -> int:
    arguments = options(argv)
    if arguments.table:
        from report import table

        with open(arguments.table) as f:
            print(table(json.load(f)))
        return 0
    harness.installSignalHandlers()
    parts = [] if arguments.profile else arguments.only
    many = max(
        [1]
        + (arguments.stall_streams if "stall" in parts else [])
        + ([arguments.scale_streams] if "scale" in parts else [])
    )
    work = tempfile.mkdtemp(prefix="reloc-bench-", dir=arguments.shm)
    bench = Bench(arguments, work)
    failed = True
    try:
        raiseFileLimit(many)
        info = machine()
        bench.makeFiles(parts)
        if arguments.profile:
            profile(bench, arguments.profile, arguments.profile_seconds)
            failed = False
            return 0
        started = time.monotonic()
        if "throughput" in parts:
            bench.throughput()
            bench.processes.stopAll()
        if "stall" in parts:
            bench.stall()
        if "memory" in parts:
            bench.slowReader()
        if "scale" in parts:
            bench.scale()
        info["seconds"] = time.monotonic() - started
        info["command"] = "bench/run.sh " + " ".join(argv)
        info["settings"] = {
            key: value for key, value in vars(arguments).items() if key != "json"
        }
        document = {"machine": info, **bench.results}
        from report import table

        print(table(document))
        if arguments.json:
            with open(arguments.json, "w") as f:
                json.dump(document, f, indent=2)
        failed = False
    except BenchError as e:
        say(f"failed: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        failed = False
        return 130
    finally:
        bench.processes.stopAll()
        if arguments.keep or failed:
            say(f"work folder kept: {work}")
            for name in os.listdir(work):
                if name.endswith(".bin"):
                    os.remove(os.path.join(work, name))
            for folder in (bench.folderA, bench.folderB):
                shutil.rmtree(folder, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
