"""
Three hosts on one LAN as Linux network namespaces, for the system tests in
L{tests.test_netns}.

Hosts A, B and C each get a namespace with one interface, C{eth0}, holding
their address on a /24.  The other end of each host's veth pair sits in a
fourth namespace that holds the bridge joining them.  Nothing is made in the
root namespace: it gets no interface, address or route towards the hosts, and
the hosts get no route anywhere but their own /24, so no packet leaves them.

Every namespace of one run is named C{reloc-<pid>-<start>-<n><host>}, where
C{pid} and C{start} (the process's start time in clock ticks, which tells a
reused pid apart) identify the test runner that made it.  The first call to
L{unavailableReason} in a process removes the namespaces, and every process
inside them, of runs whose runner no longer exists, so a run that was killed
leaves nothing once the next run starts.

Links are impaired with what the kernel has: random loss with an nftables
rule in each host's output chain, a bandwidth cap with the C{tbf} qdisc, a cut
by setting the host's bridge port down, and, only where the kernel has the
C{netem} qdisc, delay with jitter.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

#: Every namespace this harness makes starts with this.
PREFIX = "reloc-"

#: The hosts and their addresses, as in the product brief.
HOSTS = {"A": "10.0.0.10", "B": "10.0.0.11", "C": "10.0.0.12"}
PREFIX_LENGTH = 24

#: The interface of each host, inside its own namespace.
HOST_INTERFACE = "eth0"
BRIDGE = "br0"

#: The largest TCP send or receive buffer a host's sockets may have.
SOCKET_BUFFER = 128 * 1024

_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-(\d+)-")
_counter = itertools.count(1)
_live: list[Network] = []
_state: dict[str, Any] = {}


def say(line: str) -> None:
    """
    Write one line to the real standard output, where a trial run shows it
    between the test results.
    """
    stream = sys.__stdout__
    if stream is not None:
        stream.write(f"netns: {line}\n")
        stream.flush()


def ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """
    Run C{ip} with C{arguments}.

    @raise RuntimeError: if C{check} and C{ip} fails; the message holds its
        standard error.
    """
    result = subprocess.run(
        ["ip", *arguments], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")
    return result


def startTime(pid: int) -> int | None:
    """
    @return: when process C{pid} started, in clock ticks since boot, or
        C{None} when there is no such process.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: count from after it.
    return int(stat.rsplit(")", 1)[1].split()[19])


def runTag() -> str:
    """
    @return: the prefix of every namespace this process makes.
    """
    pid = os.getpid()
    return f"{PREFIX}{pid}-{startTime(pid)}-"


def namespaces() -> list[str]:
    """
    @return: the names of all named network namespaces.
    """
    listing = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def removeNamespace(name: str) -> None:
    """
    Kill every process inside namespace C{name}, then delete it.  Deleting the
    bridge's namespace deletes the bridge and the veth pairs with it.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = ip("netns", "pids", name, check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    ip("netns", "del", name, check=False)


def sweepLeftovers() -> list[str]:
    """
    Remove the namespaces, and the processes in them, of earlier runs whose
    runner is gone.

    @return: the names removed.
    """
    removed = []
    for name in namespaces():
        match = _OWNED.match(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), int(match.group(2))
        if startTime(pid) == start:
            continue
        removeNamespace(name)
        removed.append(name)
    return removed


def unavailableReason() -> str | None:
    """
    Check once per process whether network namespaces can be made here, and
    sweep the leftovers of killed runs on the way.

    @return: why the system tests cannot run, or C{None} when they can.
    """
    if "reason" not in _state:
        _state["reason"] = _probe()
    return _state["reason"]


def _probe() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    removed = sweepLeftovers()
    if removed:
        say(f"removed leftovers of killed runs: {' '.join(removed)}")
    name = f"{runTag()}probe"
    result = ip("netns", "add", name, check=False)
    if result.returncode != 0:
        return f"cannot make a network namespace: {result.stderr.strip()}"
    try:
        ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        ip("-n", name, "link", "set", "p0", "up")
        netem = f"netns exec {name} tc qdisc add dev p0 root netem delay 1ms"
        added = ip(*netem.split(), check=False)
        _state["netem"] = added.returncode == 0
        _state["netemWhy"] = added.stderr.strip()
        ip("-n", name, "link", "add", BRIDGE, "type", "bridge")
    except RuntimeError as e:
        return f"cannot make veth pairs or a bridge: {e}"
    finally:
        removeNamespace(name)
    return None


def netemAvailable() -> bool:
    """
    @return: whether this kernel has the C{netem} qdisc, as found out by
        L{unavailableReason} in a throwaway namespace.
    """
    return bool(_state.get("netem"))


def netemMissingWhy() -> str:
    """
    @return: what C{tc} said when the C{netem} qdisc could not be added.
    """
    return str(_state.get("netemWhy", ""))


class Network:
    """
    Hosts A, B and C in network namespaces joined by a bridge in a namespace
    of its own; processes started with L{spawn} or L{run} live in a host's
    namespace.
    """

    def __init__(self) -> None:
        self.tag = f"{runTag()}{next(_counter)}"
        self.namespaces = {host: f"{self.tag}{host.lower()}" for host in HOSTS}
        self.bridgeNamespace = f"{self.tag}br"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.impairments: list[str] = []
        self.alive = False
        self.delayed = False

    def build(self) -> None:
        """
        Make the namespaces, the bridge and one veth pair per host.
        """
        self.alive = True
        _live.append(self)
        br = self.bridgeNamespace
        ip("netns", "add", br)
        ip("-n", br, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", br, "link", "set", BRIDGE, "up")
        for host, address in HOSTS.items():
            ns = self.namespaces[host]
            port = self.bridgePort(host)
            ip("netns", "add", ns)
            # Both ends are made inside the bridge's namespace and one is
            # moved straight to the host: no name ever shows in the root one.
            ip(
                *f"-n {br} link add {port} type veth peer name {HOST_INTERFACE} "
                f"netns {ns}".split()
            )
            ip("-n", br, "link", "set", port, "master", BRIDGE, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            cidr = f"{address}/{PREFIX_LENGTH}"
            ip(*f"-n {ns} addr add {cidr} dev {HOST_INTERFACE}".split())
            ip("-n", ns, "link", "set", HOST_INTERFACE, "up")
            self.limitSocketBuffers(host)

    def limitSocketBuffers(self, host: str) -> None:
        """
        Keep TCP socket buffers in C{host} at C{SOCKET_BUFFER} bytes at most.
        By default the kernel lets a receive buffer grow to 32 MiB, which
        would hold a whole test file between a slowed client and the proxy:
        the download would be over, as far as the proxy knows, before a test
        could break it.
        """
        limits = f"4096 65536 {SOCKET_BUFFER}"
        self.hostRun(
            host,
            "sh",
            "-c",
            f'echo "{limits}" >/proc/sys/net/ipv4/tcp_rmem && '
            f'echo "{limits}" >/proc/sys/net/ipv4/tcp_wmem',
        )

    def destroy(self) -> None:
        """
        Stop every process started here, then remove the namespaces.
        """
        if not self.alive:
            return
        self.alive = False
        for process in self.processes:
            stopProcess(process)
        for ns in [*self.namespaces.values(), self.bridgeNamespace]:
            removeNamespace(ns)
        if self in _live:
            _live.remove(self)

    def bridgePort(self, host: str) -> str:
        """
        @return: the name, in the bridge's namespace, of C{host}'s port.
        """
        return f"v{host.lower()}"

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """
        @return: C{argv} wrapped to run inside C{host}'s namespace.
        """
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    def spawn(
        self, host: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """
        Start C{argv} in C{host}'s namespace; L{destroy} stops it.  C{ip netns
        exec} replaces itself with the command, so the pid is the command's.
        """
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.command(host, argv), **kwargs)
        self.processes.append(process)
        return process

    def run(
        self, host: str, argv: Sequence[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{argv} to its end in C{host}'s namespace.
        """
        return subprocess.run(
            self.command(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def hostRun(self, host: str, *argv: str) -> None:
        """
        Run a configuration command in C{host}'s namespace (or the bridge's,
        for C{"bridge"}).

        @raise RuntimeError: if it fails.
        """
        ns = self.bridgeNamespace if host == "bridge" else self.namespaces[host]
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")

    def isListening(self, host: str, port: int) -> bool:
        """
        @return: whether a TCP socket listens on C{port} in C{host}'s
            namespace, as seen by C{ss}, without sending any packet.
        """
        result = self.run(host, ["ss", "-Hltn", f"sport = :{port}"], timeout=30)
        return result.returncode == 0 and bool(result.stdout.strip())

    # Impairments.

    def addLoss(self, permille: int) -> None:
        """
        Drop C{permille} in a thousand of the packets every host sends on its
        link (loopback traffic inside a host is left alone).
        """
        for host in HOSTS:
            # nft reads each argument as part of one command line.
            self.hostRun(host, "nft", "add table inet reloc")
            self.hostRun(
                host,
                "nft",
                "add chain inet reloc out "
                "{ type filter hook output priority 0; policy accept; }",
            )
            self.hostRun(
                host,
                "nft",
                f"add rule inet reloc out oifname {HOST_INTERFACE} "
                f"numgen random mod 1000 < {permille} drop",
            )
        self.impairments.append(
            f"loss {permille / 10:g}% (nftables numgen drop on each host's output)"
        )

    def capBandwidth(self, rate: str) -> None:
        """
        Cap every link at C{rate} (a C{tc} rate such as C{40mbit}) in both
        directions: the C{tbf} qdisc on each bridge port caps what a host
        receives, and on each host's interface what it sends, unless
        L{addDelay} put C{netem} there, in which case C{tbf} goes under it.
        """
        shape = f"tbf rate {rate} burst 64kb latency 100ms"
        under = "parent 1:1 handle 10:" if self.delayed else "root"
        for host in HOSTS:
            port = self.bridgePort(host)
            self.hostRun("bridge", *f"tc qdisc add dev {port} root {shape}".split())
            self.hostRun(
                host, *f"tc qdisc add dev {HOST_INTERFACE} {under} {shape}".split()
            )
        self.impairments.append(f"bandwidth cap {rate} per link and direction (tbf)")

    def addDelay(self, milliseconds: int, jitter: int) -> None:
        """
        Delay what every host sends by C{milliseconds}, give or take
        C{jitter}, with C{netem}; call it before L{capBandwidth}.
        """
        for host in HOSTS:
            netem = f"netem delay {milliseconds}ms {jitter}ms"
            self.hostRun(
                host,
                *f"tc qdisc add dev {HOST_INTERFACE} root handle 1: {netem}".split(),
            )
        self.delayed = True
        self.impairments.append(
            f"delay {milliseconds}ms±{jitter}ms on each host's sending side (netem)"
        )

    def cut(self, host: str) -> None:
        """
        Cut C{host}'s link: its bridge port goes down, and with it the carrier
        of the host's interface.  Its sockets and address stay.
        """
        self.hostRun("bridge", "ip", "link", "set", self.bridgePort(host), "down")

    def restore(self, host: str) -> None:
        """
        Undo L{cut}.
        """
        self.hostRun("bridge", "ip", "link", "set", self.bridgePort(host), "up")

    def describe(self) -> str:
        """
        @return: one line naming the hosts, their addresses and namespaces.
        """
        hosts = ", ".join(
            f"{host} {address} ({self.namespaces[host]})"
            for host, address in HOSTS.items()
        )
        return f"{hosts}; bridge in {self.bridgeNamespace}"

    def describeImpairment(self) -> str:
        """
        @return: the impairments applied so far, or C{none}.
        """
        return "; ".join(self.impairments) or "none"


def stopProcess(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """
    End C{process}: SIGTERM, then SIGKILL after C{grace} seconds.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@atexit.register
def _destroyAll() -> None:
    # A runner that exits without running its cleanups (an interrupt between
    # tests) still removes what it made; one that is killed leaves it to the
    # next run's sweep.
    for network in list(_live):
        network.destroy()
