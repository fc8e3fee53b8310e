"""
Profile relocproxy and relocfs while the plain reader downloads the large
file through them: a py-spy flame graph, a py-spy summary of where the
Python time goes (with native frames), a perf profile of user and kernel
symbols, and an strace count of system calls.  Each tool is used only when
it is installed; bench/profile.sh installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness import BenchError, Process

if TYPE_CHECKING:
    from bench import Bench

MB = 1_000_000

#: Sampling rate of py-spy, per second.
RATE = 250


def profile(bench: Bench, folder: str, seconds: float) -> None:
    """
    Write C{profile-proxy.svg}, C{profile-fs.svg} and C{profile-summary.txt}
    to C{folder}.
    """
    os.makedirs(folder, exist_ok=True)
    processes = bench.processes
    fs = processes.startPlugin("fsA", "relocfs", "--base", bench.folderA)
    bench.writeRoutes(fs)
    proxy = bench.startProxy("proxy")
    report = []
    for label, target, entry in (("proxy", proxy, proxy), ("fs", fs, fs)):
        name = "relocproxy" if label == "proxy" else "relocfs"
        path = "through relocproxy" if label == "proxy" else "straight from relocfs"

        def download(count: int | None = None, entry: Process = entry) -> list[float]:
            return downloads(bench, entry, seconds, count)

        report.append(f"# {name}, while the plain reader downloads {path}\n")
        report.append(f"unprofiled: {rates(download())}\n")
        pyspy = shutil.which("py-spy")
        if pyspy:
            svg = os.path.join(folder, f"profile-{label}.svg")
            command = [pyspy, "record", "--pid", str(target.pid), "--rate", str(RATE)]
            speeds = attached(bench, label + "-svg", command + ["-o", svg], download)
            report.append(f"py-spy flame graph {os.path.basename(svg)}: {speeds}\n")
            raw = os.path.join(bench.work, f"{label}.raw")
            command += ["--native", "--idle", "--format", "raw", "-o", raw]
            speeds = attached(bench, label + "-raw", command, download)
            report.append(f"py-spy --native --idle: {speeds}\n")
            report.append(summarise(raw))
        perf = shutil.which("perf")
        if perf:
            data = os.path.join(bench.work, f"{label}.perf")
            command = [perf, "record", "-e", "cpu-clock", "-F", "999"]
            command += ["-p", str(target.pid), "-o", data]
            speeds = attached(bench, label + "-perf", command, download)
            report.append(f"perf record -e cpu-clock: {speeds}\n")
            report.append(perfReport(perf, data))
        strace = shutil.which("strace")
        if strace:
            out = os.path.join(bench.work, f"{label}.strace")
            command = [strace, "-c", "-f", "-p", str(target.pid), "-o", out]
            speeds = attached(bench, label + "-strace", command, lambda: download(1))
            report.append(f"strace -c over one 1-file download: {speeds}\n")
            with open(out) as f:
                report.append(indent(f.read()))
    summary = os.path.join(folder, "profile-summary.txt")
    with open(summary, "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))


def downloads(
    bench: Bench, entry: Process, seconds: float, count: int | None
) -> list[float]:
    """
    Download the large file again and again for C{seconds} (or C{count}
    times).

    @return: the rate of each download, in MB/s.
    """
    speeds = []
    start = time.monotonic()
    while len(speeds) < (count or 50):
        result = bench.read(entry.port, "big.bin")
        if result["error"]:
            raise BenchError(f"profiled download failed: {result}")
        speeds.append(result["bytes"] / MB / result["seconds"])
        if count is None and time.monotonic() - start >= seconds:
            break
    return speeds


def attached(
    bench: Bench, role: str, command: list[str], work: Callable[[], list[float]]
) -> str:
    """
    Run a profiler attached to a process while C{work} runs, then stop it
    with SIGINT, which makes each of these tools write its output.

    @return: the download rates seen meanwhile, as text.
    """
    tool = bench.processes.start(role, command)
    time.sleep(1.0)
    if tool.popen.poll() is not None:
        raise BenchError(f"{command[0]} failed:\n{tool.logText()}")
    try:
        speeds = work()
    finally:
        tool.popen.send_signal(signal.SIGINT)
        try:
            tool.popen.wait(120)
        except subprocess.TimeoutExpired:
            pass
        bench.processes.stop(tool)
    return rates(speeds)


def rates(speeds: list[float]) -> str:
    ordered = sorted(speeds)
    return (
        f"{len(ordered)} downloads, median {ordered[len(ordered) // 2]:.0f} MB/s "
        f"({ordered[0]:.0f}-{ordered[-1]:.0f})"
    )


def _frame(text: str) -> str:
    """
    A frame without its line number; unnamed native frames by library.
    """
    text = re.sub(r":\d+\)$", ")", text)
    if text.startswith("0x"):
        return "[native] " + text.partition(" ")[2]
    return text


def summarise(raw: str, top: int = 18) -> str:
    """
    Read py-spy's collapsed stacks: where the samples end (self time) and
    which frames they pass through (inclusive time).
    """
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    idle = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            samples = int(count)
            if "Thread._bootstrap" in stack:
                # Idle worker threads (relocfs hashes files in a pool).
                continue
            frames = [_frame(frame) for frame in stack.split(";")]
            total += samples
            if any("epoll_wait" in f or f.startswith("poll (") for f in frames[-3:]):
                idle += samples
            leaves[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    if not total:
        return "  (no samples)\n"
    lines = [
        f"{total} samples of the reactor thread at {RATE}/s, "
        f"{idle / total:.0%} of them waiting in epoll",
        "",
        "self time (the frame a sample ends in):",
    ]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in leaves.most_common(top)]
    lines += ["", "inclusive time (frames below the reactor loop):"]
    shown = 0
    for frame, n in inclusive.most_common():
        if n / total > 0.97:
            continue
        lines.append(f"  {n / total:6.1%}  {frame}")
        shown += 1
        if shown == top + 7:
            break
    return indent("\n".join(lines) + "\n")


def perfReport(perf: str, data: str) -> str:
    done = subprocess.run(
        [perf, "report", "-i", data, "--stdio", "--sort", "dso,sym"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rows = [
        line
        for line in done.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    byDso: Counter[str] = Counter()
    for row in rows:
        parts = row.split()
        if parts and parts[0].endswith("%"):
            byDso[parts[1]] += float(parts[0].rstrip("%"))
    split = ", ".join(f"{dso} {share:.1f}%" for dso, share in byDso.most_common(6))
    return indent(f"by object: {split}\ntop symbols:\n" + "\n".join(rows[:25]) + "\n")


def indent(text: str) -> str:
    return "".join("    " + line + "\n" for line in text.splitlines())
