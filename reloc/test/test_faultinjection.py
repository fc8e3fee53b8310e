"""
Seeded fault injection: many downloads through the real proxy, each with
one fault struck at a random byte of the old backend's answer.

Each run draws, from its own seed, a file (empty, one byte, around one frame,
or a few frames), a byte of the old backend's answer (in its C{ID} line, a
header, a payload or the end mark), a fault (a reset, a close, a stall,
garbage then a close, or a reset and a restart of the backend a little
later), and where the routes lead by then (a good copy, or nowhere).  Old
backend, copy, relay, proxy and client are real, on loopback, in one
reactor, with short timeouts.

Every run must end with the right file on disk, or with a
L{DownloadError} and no file: never a wrong file, never a hang.  Where the
outcome is certain (a good copy behind a fault the framing shows) it must be
that outcome.  Run C{i} uses seed C{RELOC_FAULT_SEED + i} (the base seed is
fixed unless that variable is set) and C{RELOC_FAULT_RUNS} sets the number of
runs; a failure names each failing run's seed and how to replay it alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from reloc import fileserver
from reloc.client import Download, DownloadError
from reloc.protocol import Identity, dataHeader
from reloc.proxy import ProxyFactory
from reloc.routes import Address
from reloc.test.test_faults_backend import (
    FRAME,
    POLICY,
    Fault,
    FaultyRelay,
    TimedFileServer,
    framed,
)

#: The base seed; run C{i} uses C{BASE_SEED + i}.
BASE_SEED = int(os.environ.get("RELOC_FAULT_SEED", "20251203"))

#: How many runs make the test.
RUNS = int(os.environ.get("RELOC_FAULT_RUNS", "40"))

#: Seconds one run may take before it counts as a hang.
RUN_TIMEOUT = 10.0

#: Garbage a broken backend may send: random bytes, or frames that are
#: wrong in a known way.
GARBAGE = [
    b"DATA -1\n",
    b"DATA abc\n",
    b"DATA 12x\n",
    b"HELLO\n",
    b"EOF\n",
    b"ERR 500 disk failed\n",
    b"DATA " + b"9" * 2000,
    b"\x00" * 16,
]


@dataclass(frozen=True)
class Plan:
    """
    One run's draw.

    @ivar at: bytes of the old backend's answer passed on before the fault.
    @ivar kind: C{kill}, C{close}, C{stall}, C{garbage} or C{restart}.
    @ivar target: C{copy} or C{none}: where the routes lead after the fault;
        a restart keeps them on the restarted backend.
    @ivar restartAfter: seconds the restarted backend is away.
    """

    seed: int
    content: bytes
    at: int
    kind: str
    target: str
    garbage: bytes
    restartAfter: float

    @classmethod
    def draw(cls, seed: int) -> Plan:
        rng = random.Random(seed)
        size = rng.choice(
            [0, 1, FRAME - 1, FRAME, FRAME + 1, rng.randrange(2 * FRAME, 5 * FRAME)]
        )
        content = rng.randbytes(size)
        # Each kind of part is as likely as any other, so that the few bytes
        # of the headers are struck as often as the many of the payloads.
        parts = partsOf(content)
        kind = rng.choice(sorted({name for name, _, _ in parts}))
        _, start, end = rng.choice([part for part in parts if part[0] == kind])
        at = rng.randrange(start, end)
        kind = rng.choice(["kill", "close", "stall", "garbage", "restart"])
        target = "relay" if kind == "restart" else rng.choice(["copy", "none"])
        garbage = b""
        if kind == "garbage":
            garbage = rng.choice(GARBAGE + [rng.randbytes(rng.randint(1, 64))])
        restartAfter = rng.uniform(0.05, 0.25)
        return cls(seed, content, at, kind, target, garbage, restartAfter)

    @property
    def where(self) -> str:
        """
        The part of the answer the fault strikes in.
        """
        return locate(self.content, self.at)

    @property
    def certain(self) -> bool:
        """
        Whether the run must end with the whole file.

        A good copy, or the same backend back before the deadline, always
        completes the stream, except after garbage inside a payload, which
        no framing can tell from the file's bytes.
        """
        if self.kind == "garbage" and self.where == "payload":
            return False
        return self.target in ("copy", "relay")

    def describe(self) -> str:
        return (
            f"seed {self.seed} (replay: RELOC_FAULT_SEED={self.seed} "
            f"RELOC_FAULT_RUNS=1): {self.kind} after "
            f"{self.at} bytes ({self.where}) of a {len(self.content)}-byte file's "
            f"answer, routes to {self.target}, garbage {self.garbage[:20]!r}"
        )


def answerOf(content: bytes) -> bytes:
    """
    @return: what a file server answers C{GETID} for C{content} from 0.
    """
    identity = Identity(len(content), hashlib.sha256(content).hexdigest())
    return identity.toLine() + framed(content)


def partsOf(content: bytes) -> list[tuple[str, int, int]]:
    """
    @return: the parts of C{content}'s answer, in order, each as a name
        (C{ID}, C{header}, C{payload} or C{EOF}) and its first and end byte.
    """
    parts = []
    position = len(answerOf(content)) - len(framed(content))
    parts.append(("ID", 0, position))
    for start in range(0, len(content), FRAME):
        length = min(FRAME, len(content) - start)
        header = len(dataHeader(length))
        parts.append(("header", position, position + header))
        parts.append(("payload", position + header, position + header + length))
        position += header + length
    parts.append(("EOF", position, position + len(b"EOF\n")))
    return parts


def locate(content: bytes, at: int) -> str:
    """
    @return: the name of the part of C{content}'s answer byte C{at} is in.
    """
    for name, start, end in partsOf(content):
        if start <= at < end:
            return name
    raise ValueError(at)


class FaultInjectionTests(TestCase):
    """
    Seeded runs of one fault each.
    """

    timeout = RUN_TIMEOUT * (RUNS + 1)

    def setUp(self) -> None:
        self.patch(fileserver, "CHUNK_SIZE", FRAME)

    @inlineCallbacks
    def test_runs(self) -> Any:
        """
        Every run ends with the right file or a clear failure and no file,
        and every run with a good copy behind a visible fault ends with the
        right file.
        """
        failures = []
        outcomes = {True: 0, False: 0}
        for run in range(RUNS):
            plan = Plan.draw(BASE_SEED + run)
            try:
                completed = yield self.runOne(plan)
            except Exception as e:
                failures.append(f"{plan.describe()}: {type(e).__name__}: {e}")
                continue
            outcomes[completed] += 1
        if failures:
            self.fail(f"{len(failures)} of {RUNS} runs failed:\n" + "\n".join(failures))
        if RUNS >= 20:
            self.assertTrue(all(outcomes.values()), outcomes)

    @inlineCallbacks
    def runOne(self, plan: Plan) -> Any:
        """
        Run one download under C{plan}.

        @return: whether the file was completed.
        """
        work = os.path.abspath(self.mktemp())
        ports = []

        def listen(factory: Any, port: int = 0) -> int:
            listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
            ports.append(listening)
            return listening.getHost().port

        def serve() -> TimedFileServer:
            base = os.path.join(work, f"files{len(ports)}")
            os.makedirs(base)
            with open(os.path.join(base, "f.bin"), "wb") as f:
                f.write(plan.content)
            server = TimedFileServer(base)
            server.port = listen(server)
            return server

        def restart() -> None:
            ports.remove(relayPort)
            relayPort.stopListening()
            reactor.callLater(plan.restartAfter, listen, relay, relayNumber)

        old, copy = serve(), serve()
        fault = Fault(plan.kind, plan.at, plan.garbage)
        if plan.kind == "restart":
            fault = Fault("kill", plan.at)
        relay = FaultyRelay(old.port, [fault])
        relayNumber = listen(relay)
        relayPort = ports[-1]
        if plan.kind == "restart":
            relay.onFault = restart
        routes = os.path.join(work, "routes.json")
        writeRoutes(routes, {"f.bin": relayNumber})
        proxy = ProxyFactory(routes, reactor, reactor, policy=POLICY)
        proxyNumber = listen(proxy)
        # Read again only when a leg breaks: the first leg goes to the relay.
        if plan.target == "copy":
            writeRoutes(routes, {"f.bin": copy.port})
        elif plan.target == "none":
            writeRoutes(routes, {})
        out = os.path.join(work, "out", "f.bin")
        os.makedirs(os.path.dirname(out))
        download = Download(
            reactor, Address("127.0.0.1", proxyNumber), "f.bin", out, retries=0
        )
        try:
            completed = yield self.outcome(plan, download, out)
            yield self.settled(proxy, old, copy, relay)
        finally:
            for port in ports:
                yield port.stopListening()
        return completed

    @inlineCallbacks
    def outcome(self, plan: Plan, download: Download, out: str) -> Any:
        """
        Wait for C{download} and judge its end.

        @return: whether the file was completed.
        """
        result = download.start()
        result.addTimeout(RUN_TIMEOUT, reactor)
        try:
            yield result
        except DownloadError as e:
            self.assertFalse(os.path.exists(out), "a file was left after a failure")
            if plan.certain:
                self.fail(f"expected the whole file, got: {e}")
            partial = out + ".part"
            if os.path.exists(partial) and plan.kind != "garbage":
                with open(partial, "rb") as f:
                    received = f.read()
                self.assertEqual(received, plan.content[: len(received)])
            return False
        with open(out, "rb") as f:
            self.assertEqual(f.read(), plan.content, "a wrong file")
        return True

    @inlineCallbacks
    def settled(self, *factories: Any) -> Any:
        """
        Wait until the proxy has no session, the file servers and the relay
        no open connection.
        """
        proxy, old, copy, relay = factories

        def done() -> bool:
            relays = all(r.gone for r in relay.relays)
            return not proxy.sessions and not old.active and not copy.active and relays

        for _ in range(500):
            if done():
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("connections or sessions were left behind")


def writeRoutes(path: str, table: dict[str, int]) -> None:
    """
    Replace the routes file atomically, with a modification time of its
    own, so that the proxy sees each version as new.
    """
    version = next(_versions)
    temporary = f"{path}.{version}"
    with open(temporary, "w") as f:
        json.dump({name: f"127.0.0.1:{port}" for name, port in table.items()}, f)
    os.utime(temporary, ns=(version * 1_000_000_000, version * 1_000_000_000))
    os.replace(temporary, path)


_versions = itertools.count(1)
