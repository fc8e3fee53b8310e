"""
Content identity across relocation, with the real proxy, file servers and
client in one reactor on loopback.

The old backend, A, sits behind a cutter that ends its answer at a chosen
byte; the routes already point at the new backend, B, whose copy may be
half written, complete, or complete but different.  The proxy may only
splice B's bytes onto the stream when B's identity (size and SHA-256) is the
stream's; otherwise the client gets C{ERR 503}, never a wrong file.  The
last tests run the client's L{Download} against the proxy: resuming a
partial file, checking a digest, and reconnecting after its own connection
drops.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from reloc import fileserver
from reloc.client import Download, DownloadError, DownloadProtocol
from reloc.protocol import Identity, Request, dataHeader
from reloc.proxy import ProxyFactory, RetryPolicy
from reloc.routes import Address
from reloc.test.test_move import (
    CONTENT,
    FRAME,
    IDLINE,
    CutterFactory,
    RecordingFileServer,
    _ClientFactory,
    framed,
)

#: Where A's answer is cut in the middle of a payload: after the C{ID} line,
#: one header and this many payload bytes.
DELIVERED = 517
CUT_IN_PAYLOAD = len(IDLINE) + len(dataHeader(FRAME)) + DELIVERED


def identityOf(content: bytes) -> Identity:
    """
    @return: the identity a file server announces for C{content}.
    """
    return Identity(len(content), hashlib.sha256(content).hexdigest())


class FirstConnectionCutter(CutterFactory):
    """
    A cutter that cuts only its first connection and relays the later ones
    whole.
    """

    built = 0

    def buildProtocol(self, addr):
        protocol = CutterFactory.buildProtocol(self, addr)
        self.built += 1
        if self.built > 1:
            protocol.factory = CutterFactory(self.target, 2**62, self.close)
        return protocol


class LyingServer(Protocol):
    """
    A stand-in for a faulty proxy: it announces C{factory.identity} and
    sends C{factory.content}, whatever it was asked.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.factory.identity.toLine())
        self.transport.write(framed(self.factory.content))
        self.transport.loseConnection()


class RelocationTestCase(TestCase):
    """
    Start file servers, cutters and a proxy on loopback ports chosen by the
    kernel, and stop them after the test.
    """

    def setUp(self) -> None:
        self.patch(fileserver, "CHUNK_SIZE", FRAME)
        self.routes = os.path.abspath(self.mktemp())

    def serve(self, content: bytes) -> tuple[RecordingFileServer, int, str]:
        """
        Start a file server whose folder holds C{content} as C{f.bin}.

        @return: the server, its port and the file's path.
        """
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, "f.bin")
        with open(path, "wb") as f:
            f.write(content)
        server = RecordingFileServer(base, reactor)
        server.requests = []
        return server, self.listen(server), path

    def cutter(self, target: int, cut: int, factory=CutterFactory) -> int:
        """
        Start a cutter in front of port C{target} that closes at C{cut}.

        @return: the cutter's port.
        """
        return self.listen(factory(target, cut, True))

    def listen(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def startProxy(self, backend: int, deadline: float = 10.0) -> int:
        """
        Start a proxy whose route for C{f.bin} is port C{backend}, retrying
        quickly, and check after the test that its sessions all ended.

        @return: the proxy's port.
        """
        self.writeRoutes(backend)
        policy = RetryPolicy(deadline=deadline, maxDelay=0.1)
        self.proxy = ProxyFactory(self.routes, reactor, reactor, policy=policy)
        self.clientConnections = 0
        build = self.proxy.buildProtocol

        def counting(addr):
            self.clientConnections += 1
            return build(addr)

        self.proxy.buildProtocol = counting
        self.addCleanup(self.waitFor, lambda: not self.proxy.sessions)
        return self.listen(self.proxy)

    def writeRoutes(self, port: int) -> None:
        temporary = self.routes + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"f.bin": f"127.0.0.1:{port}"}, f)
        os.replace(temporary, self.routes)

    def delivered(self) -> int:
        """
        @return: the payload bytes the proxy's one session delivered.
        """
        (session,) = self.proxy.sessions
        return session.delivered

    @inlineCallbacks
    def waitFor(self, condition, timeout: float = 5.0):
        """
        Poll C{condition} on the reactor until it holds.
        """
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail("condition never held")
            yield deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    def makeDownload(self, proxyPort: int, **options) -> tuple[Download, str]:
        """
        @return: a L{Download} of C{f.bin} through the proxy, not started,
            and the path it writes.
        """
        out = os.path.join(os.path.abspath(self.mktemp()), "f.bin")
        os.makedirs(os.path.dirname(out))
        proxy = Address("127.0.0.1", proxyPort)
        download = Download(reactor, proxy, "f.bin", out, **options)
        return download, out

    def writePartial(self, out: str, content: bytes, identity: Identity | None) -> None:
        """
        Leave C{out.part} holding C{content}, and C{out.part.id} holding
        C{identity} unless it is L{None}, as an earlier run would.
        """
        with open(out + ".part", "wb") as f:
            f.write(content)
        if identity is not None:
            with open(out + ".part.id", "w") as f:
                json.dump(identity.toJSON(), f)

    def assertNoOutput(self, out: str) -> None:
        self.assertFalse(os.path.exists(out), f"{out} exists")

    def assertOutput(self, out: str, content: bytes) -> None:
        """
        Assert that C{out} holds C{content} and no partial files are left.
        """
        with open(out, "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertFalse(os.path.exists(out + ".part"))
        self.assertFalse(os.path.exists(out + ".part.id"))


class HalfWrittenCopyTests(RelocationTestCase):
    """
    The routes point at B while B's copy is still being written, and A
    breaks in the middle of a payload.
    """

    @inlineCallbacks
    def test_completesOnceCopyIsWhole(self):
        """
        The proxy splices nothing from a half copy, keeps asking, and carries
        the stream on the same client connection to the exact content once
        the copy is whole.
        """
        oldServer, oldPort, _ = self.serve(CONTENT)
        newServer, newPort, newPath = self.serve(CONTENT[: 2 * FRAME])
        proxyPort = self.startProxy(self.cutter(oldPort, CUT_IN_PAYLOAD))
        self.writeRoutes(newPort)
        sink = io.BytesIO()
        client = DownloadProtocol(Request("f.bin", 0), sink, reactor)
        reactor.connectTCP("127.0.0.1", proxyPort, _ClientFactory(client))

        yield self.waitFor(lambda: len(newServer.requests) >= 2)
        self.assertEqual(self.delivered(), DELIVERED)
        with open(newPath, "ab") as f:
            f.write(CONTENT[2 * FRAME : 3 * FRAME])
        requests = len(newServer.requests)
        yield self.waitFor(lambda: len(newServer.requests) > requests)
        self.assertEqual(self.delivered(), DELIVERED)
        with open(newPath, "ab") as f:
            f.write(CONTENT[3 * FRAME :])
        count = yield client.done

        self.assertEqual(count, len(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(self.clientConnections, 1)
        self.assertEqual(oldServer.requests, [b"GETID f.bin 0\n"])
        self.assertGreater(len(newServer.requests), 2)
        self.assertEqual(set(newServer.requests), {b"GETID f.bin %d\n" % (DELIVERED,)})

    @inlineCallbacks
    def test_neverWhole(self):
        """
        When the copy stays half written past the proxy's deadline, the
        client gets C{ERR 503}, the download fails and no output file is
        made; the partial file keeps only the bytes that came from A.
        """
        oldServer, oldPort, _ = self.serve(CONTENT)
        newServer, newPort, _ = self.serve(CONTENT[: 2 * FRAME])
        proxyPort = self.startProxy(self.cutter(oldPort, CUT_IN_PAYLOAD), deadline=1.0)
        self.writeRoutes(newPort)
        download, out = self.makeDownload(proxyPort, retries=0)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("ERR 503", str(error))
        self.assertNoOutput(out)
        with open(out + ".part", "rb") as f:
            self.assertEqual(f.read(), CONTENT[:DELIVERED])
        self.assertEqual(download.connections, 1)
        self.assertGreater(len(newServer.requests), 1)
        self.assertEqual(set(newServer.requests), {b"GETID f.bin %d\n" % (DELIVERED,)})


class DifferentCopyTests(RelocationTestCase):
    """
    B holds a file of the same size as A's, one byte apart.
    """

    def setUp(self) -> None:
        super().setUp()
        different = bytearray(CONTENT)
        different[2 * FRAME + 10] ^= 0xFF
        self.different = bytes(different)

    @inlineCallbacks
    def test_proxyRefusesToSplice(self):
        """
        The proxy delivers nothing from the different copy and ends the
        stream with C{ERR 503} once its deadline passes.
        """
        _, oldPort, _ = self.serve(CONTENT)
        newServer, newPort, _ = self.serve(self.different)
        proxyPort = self.startProxy(self.cutter(oldPort, CUT_IN_PAYLOAD), deadline=1.0)
        self.writeRoutes(newPort)
        sink = io.BytesIO()
        client = DownloadProtocol(Request("f.bin", 0), sink, reactor)
        reactor.connectTCP("127.0.0.1", proxyPort, _ClientFactory(client))

        error = yield self.assertFailure(client.done, DownloadError)

        self.assertEqual(str(error), "refused: ERR 503 no backend could continue")
        self.assertEqual(sink.getvalue(), CONTENT[:DELIVERED])
        self.assertGreater(len(newServer.requests), 1)

    @inlineCallbacks
    def test_clientReportsNoSuccess(self):
        """
        A download that retries after the C{ERR 503} meets the different
        file on the other side, refuses it, and makes no output file.
        """
        _, oldPort, _ = self.serve(CONTENT)
        _, newPort, _ = self.serve(self.different)
        proxyPort = self.startProxy(self.cutter(oldPort, CUT_IN_PAYLOAD), deadline=1.0)
        self.writeRoutes(newPort)
        said: list[str] = []
        download, out = self.makeDownload(proxyPort, retries=3, say=said.append)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("not the one the partial download came from", str(error))
        self.assertIn("ERR 503", said[0])
        self.assertEqual(download.connections, 2)
        self.assertNoOutput(out)


class IdentityNeverSeenTests(RelocationTestCase):
    """
    A dies inside its C{ID} line, before the proxy knew its identity, and
    B holds another version of the file.

    No payload byte was relayed before an identity was known, so the first
    identity the proxy sees, B's, defines the stream; the client checks the
    finished file against that identity, so a stream stitched from two
    versions could not pass as a success.
    """

    def setUp(self) -> None:
        super().setUp()
        self.old = os.urandom(len(CONTENT) + 50)
        cut = len(identityOf(self.old).toLine()) - 5
        self.oldServer, oldPort, _ = self.serve(self.old)
        self.newServer, newPort, _ = self.serve(CONTENT)
        self.proxyPort = self.startProxy(self.cutter(oldPort, cut))
        self.writeRoutes(newPort)

    @inlineCallbacks
    def test_streamTakesNewIdentity(self):
        """
        A client that asks C{GETID} is told B's identity, and gets B's file.
        """
        sink = io.BytesIO()
        client = DownloadProtocol(Request("f.bin", 0, identify=True), sink, reactor)
        reactor.connectTCP("127.0.0.1", self.proxyPort, _ClientFactory(client))

        yield client.done

        self.assertEqual(client.identity, identityOf(CONTENT))
        self.assertEqual(sink.getvalue(), CONTENT)
        self.assertEqual(self.oldServer.requests, [b"GETID f.bin 0\n"])
        self.assertEqual(self.newServer.requests, [b"GETID f.bin 0\n"])

    @inlineCallbacks
    def test_downloadChecksDigest(self):
        """
        The download completes on one connection and its final size and
        digest check, against B's identity, passes.
        """
        digest = identityOf(CONTENT).sha256
        download, out = self.makeDownload(self.proxyPort, sha256=digest)

        size = yield download.start()

        self.assertEqual(size, len(CONTENT))
        self.assertEqual(download.connections, 1)
        self.assertOutput(out, CONTENT)


class ResumeTests(RelocationTestCase):
    """
    L{Download} continuing a partial file left by an earlier run.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server, port, self.path = self.serve(CONTENT)
        self.proxyPort = self.startProxy(port)

    def replaceServed(self, content: bytes) -> None:
        """
        Put another version of C{f.bin} in the served folder.
        """
        with open(self.path + ".tmp", "wb") as f:
            f.write(content)
        os.replace(self.path + ".tmp", self.path)

    @inlineCallbacks
    def test_sameFile(self):
        """
        A partial file from the same file is continued from its length, and
        the finished file is identical.
        """
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT[:1234], identityOf(CONTENT))

        size = yield download.start()

        self.assertEqual(size, len(CONTENT))
        self.assertEqual(self.server.requests, [b"GETID f.bin 1234\n"])
        self.assertOutput(out, CONTENT)

    @inlineCallbacks
    def test_partialLongerThanFile(self):
        """
        A partial file longer than the file it came from is refused before
        any connection is made.
        """
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT + b"more", identityOf(CONTENT))

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("longer than the file", str(error))
        self.assertEqual(self.server.requests, [])
        self.assertNoOutput(out)

    @inlineCallbacks
    def test_nestedIdentityFile(self):
        """
        An identity file of deeply nested JSON is refused like any other
        unusable one, with a DownloadError rather than a crash.
        """
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT[:10], None)
        with open(out + ".part.id", "w") as f:
            f.write("[" * 100000)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("cannot resume", str(error))

    @inlineCallbacks
    def test_expectedDigestDiffersFromServer(self):
        """
        A C{sha256} the server's C{ID} line already contradicts fails the
        download before any payload is written.
        """
        download, out = self.makeDownload(self.proxyPort, sha256="0" * 64)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("not the expected", str(error))
        self.assertFalse(os.path.exists(out + ".part"))
        self.assertNoOutput(out)

    @inlineCallbacks
    def test_changedSameSize(self):
        """
        A partial file from an earlier version of the same size is not
        continued: the download fails, saying so, and makes no output file.
        """
        self.replaceServed(b"x" + CONTENT[1:])
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT[:1234], identityOf(CONTENT))

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("not the one the partial download came from", str(error))
        self.assertNoOutput(out)

    @inlineCallbacks
    def test_changedOtherSize(self):
        """
        A partial file from an earlier version of another size is not
        continued: the download fails, saying so, and makes no output file.
        """
        self.replaceServed(CONTENT + b"appended")
        download, out = self.makeDownload(self.proxyPort, resume=True, retries=3)
        self.writePartial(out, CONTENT[:1234], identityOf(CONTENT))

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("not the one the partial download came from", str(error))
        self.assertEqual(download.connections, 1)
        self.assertNoOutput(out)

    @inlineCallbacks
    def test_noIdentityFile(self):
        """
        A partial file without its identity file is not resumed: the
        download fails with an error that says so, connects nowhere and
        leaves the partial file as it was.
        """
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT[:1234], None)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("cannot resume: no usable identity", str(error))
        self.assertEqual(download.connections, 0)
        self.assertEqual(self.server.requests, [])
        with open(out + ".part", "rb") as f:
            self.assertEqual(f.read(), CONTENT[:1234])
        self.assertNoOutput(out)

    @inlineCallbacks
    def test_damagedIdentityFile(self):
        """
        An identity file that does not parse is refused like a missing one.
        """
        download, out = self.makeDownload(self.proxyPort, resume=True)
        self.writePartial(out, CONTENT[:1234], None)
        with open(out + ".part.id", "w") as f:
            f.write('{"size": 3123')

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn("cannot resume: no usable identity", str(error))
        self.assertEqual(download.connections, 0)

    @inlineCallbacks
    def test_wrongDigest(self):
        """
        A finished file whose digest is not the one asked for with C{sha256}
        fails the download, and neither an output nor a partial file is
        left.
        """
        download, out = self.makeDownload(self.proxyPort, sha256="0" * 64)

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertIn(f"not the expected {'0' * 64}", str(error))
        self.assertNoOutput(out)
        self.assertFalse(os.path.exists(out + ".part"))

    @inlineCallbacks
    def test_rightDigest(self):
        """
        A finished file with the digest asked for with C{sha256} completes.
        """
        digest = identityOf(CONTENT).sha256
        download, out = self.makeDownload(self.proxyPort, sha256=digest)

        yield download.start()

        self.assertOutput(out, CONTENT)


class ClientReconnectTests(RelocationTestCase):
    """
    L{Download} when its own connection to the proxy drops.
    """

    @inlineCallbacks
    def test_droppedConnectionRetried(self):
        """
        A connection to the proxy cut in the middle of a payload is retried
        from the bytes on disk, and the download completes with the exact
        file.
        """
        server, port, _ = self.serve(CONTENT)
        proxyPort = self.startProxy(port)
        front = self.cutter(proxyPort, CUT_IN_PAYLOAD, FirstConnectionCutter)
        download, out = self.makeDownload(front, retries=2)

        size = yield download.start()

        self.assertEqual(size, len(CONTENT))
        self.assertEqual(download.connections, 2)
        self.assertEqual(self.clientConnections, 2)
        self.assertEqual(server.requests[0], b"GETID f.bin 0\n")
        (resumed,) = server.requests[1:]
        offset = int(resumed.split()[2])
        self.assertTrue(0 < offset < len(CONTENT), resumed)
        self.assertOutput(out, CONTENT)


class FinalCheckTests(RelocationTestCase):
    """
    The check L{Download} makes on the finished file against the identity
    its stream announced.
    """

    @inlineCallbacks
    def test_bytesNotMatchingIdentity(self):
        """
        A stream whose bytes are not the file its C{ID} line names fails the
        download, and neither an output nor a partial file is left.
        """
        different = bytearray(CONTENT)
        different[FRAME] ^= 0x01
        liar = Factory.forProtocol(LyingServer)
        liar.identity = identityOf(CONTENT)
        liar.content = bytes(different)
        download, out = self.makeDownload(self.listen(liar))

        error = yield self.assertFailure(download.start(), DownloadError)

        self.assertEqual(
            str(error), "the bytes received do not match the server's sha256"
        )
        self.assertNoOutput(out)
        self.assertFalse(os.path.exists(out + ".part"))
        self.assertFalse(os.path.exists(out + ".part.id"))
