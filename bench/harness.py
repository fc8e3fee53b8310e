"""
Processes for the benchmark: start them on loopback, read their CPU time and
memory from C{/proc}, and stop every one of them on the way out.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """
    A step of the benchmark failed; the message says which and why.
    """


@dataclass
class CpuTimes:
    """
    Seconds of CPU a process has used so far, split as C{/proc} splits them.
    """

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


def cpuTimes(pid: int) -> CpuTimes:
    """
    @return: the user and system time of every thread of C{pid} so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # Fields 14 and 15 of stat(5); the split starts at field 3.
    return CpuTimes(int(fields[11]) / TICKS, int(fields[12]) / TICKS)


def memory(pid: int) -> dict[str, int]:
    """
    @return: C{VmRSS} and C{VmHWM} of C{pid}, in bytes.
    """
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def listenOverflows() -> int:
    """
    @return: the kernel's count of connections dropped because a listen
        queue was full (C{TcpExt ListenOverflows}); the client retries its
        SYN after a second.
    """
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def freePort() -> int:
    """
    @return: a loopback port that was free a moment ago, for programs that
        cannot report the port they bound (HAProxy, the port forwarder).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """
    @return: whether something listens on 127.0.0.1:C{port}, read from
        C{/proc/net/tcp} so that no connection is made to find out.
    """
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == wanted and parts[3] == "0A":
                return True
    return False


@dataclass
class Process:
    """
    One started program.
    """

    role: str
    popen: subprocess.Popen[bytes]
    log: str
    port: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def logText(self, tail: int = 4000) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-tail:]
        except OSError:
            return ""


class Processes:
    """
    Every process the benchmark started, so that all are stopped at the end.
    """

    def __init__(self, work: str, backlog: int = 0) -> None:
        self.work = work
        self.running: list[Process] = []
        #: A listen backlog for the reloc plugins' endpoints; 0 keeps the
        #: default of Twisted's endpoints (50).
        self.backlog = backlog

    def start(self, role: str, command: Sequence[str], piped: bool = False) -> Process:
        """
        Start a program, its output in C{role.out}; with C{piped}, its
        standard input and output are pipes to this process instead.
        """
        log = os.path.join(self.work, role + ".out")
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(command),
                cwd=self.work,
                stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else out,
                stderr=out if piped else subprocess.STDOUT,
            )
        process = Process(role, popen, log)
        self.running.append(process)
        return process

    def startPlugin(self, role: str, plugin: str, *arguments: str) -> Process:
        """
        Run a twistd plugin of reloc on a kernel-chosen loopback port.
        """
        portFile = os.path.join(self.work, role + ".port")
        log = os.path.join(self.work, role + ".log")
        for path in (portFile, log):
            if os.path.exists(path):
                os.remove(path)
        endpoint = "tcp:0:interface=127.0.0.1"
        if self.backlog:
            endpoint += f":backlog={self.backlog}"
        command = [
            TWISTD,
            "-n",
            "--pidfile",
            os.path.join(self.work, role + ".pid"),
            "--logfile",
            log,
            plugin,
            "--port",
            endpoint,
            "--portfile",
            portFile,
            *arguments,
        ]
        process = self.start(role, command)
        process.log = log
        process.port = self.waitFor(process, lambda: readPort(portFile))
        return process

    def startOnPort(self, role: str, command: Sequence[str], port: int) -> Process:
        """
        Run a program told to listen on C{port}; wait until it does.
        """
        process = self.start(role, command)
        process.port = self.waitFor(process, lambda: port if listening(port) else 0)
        return process

    def waitFor(self, process: Process, probe: object, seconds: float = 30.0) -> int:
        deadline = time.monotonic() + seconds
        while True:
            value = probe()  # type: ignore[operator]
            if value:
                return int(value)
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{process.role} did not start:\n{process.logText()}")
            time.sleep(0.02)

    def stop(self, process: Process) -> None:
        if process in self.running:
            self.running.remove(process)
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(10)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        for stream in (process.popen.stdin, process.popen.stdout):
            if stream is not None:
                stream.close()

    def stopAll(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process)


def readPort(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def runJson(command: Sequence[str], timeout: float, cwd: str) -> dict[str, object]:
    """
    Run a helper that prints one JSON line, within C{timeout} seconds.
    """
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[1]} ran past {timeout:.0f}s") from None
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"{command[1]} printed nothing: {done.stderr[-2000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def readLine(popen: subprocess.Popen[bytes], timeout: float) -> str:
    """
    Read one line from a helper's standard output, waiting at most
    C{timeout} seconds for it.
    """
    assert popen.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(popen.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise BenchError(f"no answer from {popen.args[1]} in {timeout:.0f}s")
    return popen.stdout.readline().decode().strip()


def installSignalHandlers() -> None:
    """
    Turn SIGINT, SIGTERM and SIGHUP into an exception, so that cleanup runs.
    SIGINT is set too because a shell starts background jobs with it ignored.
    """

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
