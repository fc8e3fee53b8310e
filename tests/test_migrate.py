"""
Tests for C{scripts/migrate.sh}, run as a real process against real files,
a real rsync and a real process standing in for the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "migrate.sh"
RSYNC = shutil.which("rsync")
SKIP_NO_RSYNC = "rsync is not installed; migrate.sh cannot run without it"

#: Exit codes documented at the top of migrate.sh.
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_PIDFILE = 4
EXIT_COPY = 5
EXIT_VERIFY = 6
EXIT_ROUTES = 7
EXIT_SIGNAL = 8

#: A stand-in for the proxy: it appends a line to the marker file named by
#: its first argument on every SIGHUP, and otherwise sleeps.
PROXY_CODE = textwrap.dedent(
    """
    import signal, sys, time

    def onHangup(signum, frame):
        with open(sys.argv[1], "a") as f:
            f.write("HUP\\n")

    signal.signal(signal.SIGHUP, onHangup)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)
    """
)

#: An rsync wrapper put first on PATH.  It runs the real rsync, then, after a
#: real (not --dry-run) transfer: flips one byte of MIGRATE_TEST_DAMAGE while
#: keeping its size and mtime, and kills the pid in MIGRATE_TEST_KILL and
#: waits until it is gone.
WRAPPER_CODE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time

    code = subprocess.call([{rsync!r}] + sys.argv[1:])
    if code == 0 and "--dry-run" not in sys.argv:
        damage = os.environ.get("MIGRATE_TEST_DAMAGE")
        if damage:
            st = os.stat(damage)
            with open(damage, "r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(bytes([first[0] ^ 0xFF]))
            os.utime(damage, ns=(st.st_atime_ns, st.st_mtime_ns))
        victim = os.environ.get("MIGRATE_TEST_KILL")
        if victim:
            os.kill(int(victim), signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(int(victim), 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)
    sys.exit(code)
    """
)

CONTENT = os.urandom(200_000) + b"end of file\n"
OTHER_ROUTES = {"other.bin": "10.0.0.12:5000", "v6.bin": "[::1]:5002"}


class MigrateTestMixin:
    """
    Temporary folders, a routes file, a live stand-in proxy and helpers to run
    migrate.sh against them.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.src = self.base / "filesA"
        self.dest = self.base / "filesB"
        self.routesDir = self.base / "conf"
        self.routes = self.routesDir / "routes.json"
        self.pidfile = self.base / "proxy.pid"
        self.marker = self.base / "hup.marker"
        self.src.mkdir(parents=True)
        self.dest.mkdir()
        self.routesDir.mkdir()
        self.routes.write_text(json.dumps(OTHER_ROUTES, indent=1) + "\n")
        self.routesBefore = self.routes.read_bytes()
        self.env = dict(os.environ)

    def addSource(self, name: str = "big.bin", content: bytes = CONTENT) -> Path:
        """
        Create C{name} under the source folder.
        """
        path = self.src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def startProxy(self) -> subprocess.Popen:
        """
        Start the stand-in proxy, write its pid to the pidfile and make sure
        it is killed when the test ends.
        """
        proc = subprocess.Popen(
            [sys.executable, "-c", PROXY_CODE, str(self.marker)],
            stdout=subprocess.PIPE,
        )

        def stop() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()

        self.addCleanup(stop)
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        self.pidfile.write_text(f"{proc.pid}\n")
        return proc

    def installWrapper(self) -> None:
        """
        Put the rsync wrapper described by L{WRAPPER_CODE} first on PATH.
        """
        binDir = self.base / "bin"
        binDir.mkdir()
        wrapper = binDir / "rsync"
        wrapper.write_text(f"#!{sys.executable}\n" + WRAPPER_CODE.format(rsync=RSYNC))
        wrapper.chmod(0o755)
        self.env["PATH"] = f"{binDir}{os.pathsep}{self.env.get('PATH', '')}"

    def arguments(self, **overrides: str | None) -> list[str]:
        """
        @return: a full migrate.sh command line for C{big.bin}, with the
            options in C{overrides} replaced (or left out when C{None}).
        """
        options = {
            "name": "big.bin",
            "from": str(self.src),
            "to": str(self.dest),
            "backend": "127.0.0.1:5001",
            "routes": str(self.routes),
            "pidfile": str(self.pidfile),
        }
        options.update(overrides)
        argv = [str(SCRIPT)]
        for option, value in options.items():
            if value is not None:
                argv += [f"--{option}", value]
        return argv

    def migrate(
        self, argv: list[str] | None = None, **overrides: str | None
    ) -> subprocess.CompletedProcess:
        """
        Run migrate.sh with C{argv}, or with L{arguments}C{(**overrides)}.
        """
        if argv is None:
            argv = self.arguments(**overrides)
        return subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=120
        )

    def assertExit(self, result: subprocess.CompletedProcess, code: int) -> None:
        """
        Assert that migrate.sh exited with C{code}; on failure, an error exit
        must come with exactly one C{migrate.sh:} line on stderr.
        """
        self.assertEqual(
            result.returncode,
            code,
            f"stdout={result.stdout!r} stderr={result.stderr!r}",
        )
        if code != 0:
            lines = result.stderr.splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertTrue(lines[0].startswith("migrate.sh: "), result.stderr)

    def assertRoutesUntouched(self) -> None:
        """
        Assert that the routes file is byte for byte what it was and that no
        temporary file was left beside it.
        """
        self.assertEqual(self.routes.read_bytes(), self.routesBefore)
        self.assertEqual(os.listdir(self.routesDir), ["routes.json"])

    def assertNotSignalled(self) -> None:
        """
        Assert that the stand-in proxy got no SIGHUP.
        """
        self.assertFalse(self.marker.exists())

    def assertNothingCopied(self) -> None:
        """
        Assert that the destination folder is still empty.
        """
        self.assertEqual(os.listdir(self.dest), [])

    def startDaemon(self) -> Path:
        """
        Start an rsync daemon on a free loopback port, serving a writable
        module C{files}; it is stopped when the test ends.

        @return: the module's folder.
        """
        root = self.base / "daemon"
        root.mkdir()
        config = self.base / "rsyncd.conf"
        owner = (
            f"uid = {os.getuid()}\ngid = {os.getgid()}\n" if os.getuid() == 0 else ""
        )
        config.write_text(
            f"use chroot = no\n{owner}pid file = {self.base / 'rsyncd.pid'}\n"
            f"log file = {self.base / 'rsyncd.log'}\n"
            f"[files]\npath = {root}\nread only = no\n"
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.daemonPort = probe.getsockname()[1]
        daemon = subprocess.Popen(
            [
                RSYNC,
                "--daemon",
                "--no-detach",
                f"--config={config}",
                f"--port={self.daemonPort}",
                "--address=127.0.0.1",
            ]
        )

        def stop() -> None:
            daemon.terminate()
            daemon.wait()

        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.daemonPort), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    self.fail("the rsync daemon did not start")
                time.sleep(0.05)
        return root

    def waitForMarker(self) -> str:
        """
        @return: the marker file's text once the stand-in proxy wrote it.
        """
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.marker.exists() and self.marker.read_text():
                return self.marker.read_text()
            time.sleep(0.02)
        self.fail("the proxy stand-in never received SIGHUP")

    def assertMigrated(self, result: subprocess.CompletedProcess, name: str) -> None:
        """
        Assert a complete migration of C{name}: exit 0, one stdout line per
        step, an identical copy, the new route with the others kept, a SIGHUP.
        """
        self.assertExit(result, 0)
        self.assertEqual(result.stderr, "")
        self.assertEqual(len(result.stdout.splitlines()), 7, result.stdout)
        self.assertEqual(
            (self.dest / name).read_bytes(), (self.src / name).read_bytes()
        )
        expected = dict(OTHER_ROUTES)
        expected[name] = "127.0.0.1:5001"
        self.assertEqual(json.loads(self.routes.read_text()), expected)
        self.assertEqual(os.listdir(self.routesDir), ["routes.json"])
        self.assertEqual(self.waitForMarker(), "HUP\n")


class MigrateSuccessTests(MigrateTestMixin, SynchronousTestCase):
    """
    Complete migrations.
    """

    if RSYNC is None:
        skip = SKIP_NO_RSYNC

    def test_migrates(self) -> None:
        """
        The file is copied byte for byte, routed to the new backend with the
        other routes kept, and the proxy gets SIGHUP.
        """
        self.addSource()
        self.startProxy()
        self.assertMigrated(self.migrate(), "big.bin")

    def test_nameInSubFolder(self) -> None:
        """
        A name in sub-folders is copied to the same sub-folders under the
        destination and routed under its full name.
        """
        self.addSource("sub/deeper/big.bin")
        self.startProxy()
        result = self.migrate(name="sub/deeper/big.bin")
        self.assertMigrated(result, "sub/deeper/big.bin")
        self.assertEqual(os.listdir(self.dest), ["sub"])

    def test_destinationCreated(self) -> None:
        """
        A destination folder that does not exist yet, given without a trailing
        slash, is created and the file lands inside it.
        """
        self.addSource()
        self.startProxy()
        self.dest = self.base / "new-folder"
        result = self.migrate(to=str(self.dest))
        self.assertMigrated(result, "big.bin")

    def test_staleCopyReplaced(self) -> None:
        """
        A different file already at the destination with the same size and
        mtime is replaced, not mistaken for the copy.
        """
        source = self.addSource()
        stale = self.dest / "big.bin"
        stale.write_bytes(bytes(len(CONTENT)))
        st = source.stat()
        os.utime(stale, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.startProxy()
        self.assertMigrated(self.migrate(), "big.bin")

    def test_emptyFile(self) -> None:
        """
        An empty file migrates like any other.
        """
        self.addSource(content=b"")
        self.startProxy()
        self.assertMigrated(self.migrate(), "big.bin")

    def test_nonASCIIName(self) -> None:
        """
        A UTF-8 name is copied and routed under that name even in the C locale,
        where rsync escapes such names in what it prints.
        """
        self.env["LC_ALL"] = "C"
        self.addSource("ção/é.bin")
        self.startProxy()
        self.assertMigrated(self.migrate(name="ção/é.bin"), "ção/é.bin")

    def test_routesPermissionsKept(self) -> None:
        """
        The rewritten routes file keeps the permissions of the one it replaces.
        """
        self.addSource()
        self.routes.chmod(0o640)
        self.startProxy()
        self.assertMigrated(self.migrate(), "big.bin")
        self.assertEqual(self.routes.stat().st_mode & 0o777, 0o640)

    def test_existingRouteReplaced(self) -> None:
        """
        A name that is already routed is pointed at the new backend.
        """
        self.routes.write_text(json.dumps({**OTHER_ROUTES, "big.bin": "h:1"}))
        self.addSource()
        self.startProxy()
        self.assertMigrated(self.migrate(), "big.bin")

    def test_ipv6Backend(self) -> None:
        """
        An C{[v6addr]:port} backend is accepted and written as given.
        """
        self.addSource()
        self.startProxy()
        result = self.migrate(backend="[::1]:5001")
        self.assertExit(result, 0)
        self.assertEqual(json.loads(self.routes.read_text())["big.bin"], "[::1]:5001")

    def test_rsyncDaemonDestination(self) -> None:
        """
        An C{rsync://host:port/module/folder} destination is copied to and
        checked like a local one.
        """
        root = self.startDaemon()
        self.addSource("sub/big.bin")
        self.startProxy()
        url = f"rsync://127.0.0.1:{self.daemonPort}/files/B"
        self.dest = root / "B"
        self.assertMigrated(self.migrate(name="sub/big.bin", to=url), "sub/big.bin")

    def test_help(self) -> None:
        """
        C{--help} prints the usage on stdout and exits 0.
        """
        result = self.migrate([str(SCRIPT), "--help"])
        self.assertExit(result, 0)
        self.assertIn("usage: migrate.sh", result.stdout)
        self.assertIn("--pidfile", result.stdout)


class MigrateUsageTests(MigrateTestMixin, SynchronousTestCase):
    """
    Command lines that are refused with exit code 2 before anything happens.
    """

    if RSYNC is None:
        skip = SKIP_NO_RSYNC

    def setUp(self) -> None:
        super().setUp()
        self.addSource()
        self.addSource("sub/big.bin")
        self.startProxy()

    def assertRefused(self, result: subprocess.CompletedProcess) -> None:
        """
        Assert a usage error that changed nothing.
        """
        self.assertExit(result, EXIT_USAGE)
        self.assertEqual(result.stdout, "")
        self.assertRoutesUntouched()
        self.assertNothingCopied()
        self.assertNotSignalled()

    def test_missingOption(self) -> None:
        """
        Leaving out any one of the six options is a usage error naming it.
        """
        for option in ("name", "from", "to", "backend", "routes", "pidfile"):
            result = self.migrate(**{option: None})
            self.assertRefused(result)
            self.assertIn(f"--{option}", result.stderr)

    def test_optionWithoutValue(self) -> None:
        """
        An option at the end of the command line without its value is a usage
        error.
        """
        self.assertRefused(self.migrate(self.arguments() + ["--name"]))

    def test_unknownOption(self) -> None:
        """
        An unknown option is a usage error.
        """
        self.assertRefused(self.migrate(self.arguments() + ["--force"]))

    def test_strayArgument(self) -> None:
        """
        A positional argument is a usage error.
        """
        self.assertRefused(self.migrate(self.arguments() + ["extra"]))

    def test_repeatedOption(self) -> None:
        """
        An option given twice is a usage error.
        """
        argv = self.arguments() + ["--backend", "127.0.0.1:5002"]
        self.assertRefused(self.migrate(argv))

    def test_badBackend(self) -> None:
        """
        A backend that is not C{host:port} or C{[v6addr]:port} with a port in
        1-65535 is a usage error.
        """
        for backend in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            ":5000",
            "host:0",
            "host:65536",
            "host:99999999999999999999",
            "host:-1",
            "host:50x",
            "host:http",
            "a:b:5000",
            "::1:5000",
            "[::1]",
            "[::1]5000",
            "[not-v6]:5000",
            "[::1]:0",
            "bad host:5000",
            "a/b:5000",
        ]:
            result = self.migrate(backend=backend)
            self.assertRefused(result)
            self.assertIn("--backend", result.stderr)

    def test_badName(self) -> None:
        """
        A name that is absolute, empty, has an empty, C{.} or C{..} component,
        or holds whitespace or control characters is a usage error.
        """
        for name in [
            "",
            "/big.bin",
            "../big.bin",
            "sub/../big.bin",
            "./big.bin",
            "sub/./big.bin",
            "sub//big.bin",
            "sub/",
            "..",
            "big bin",
            "big\tbin",
            "big\x7fbin",
        ]:
            result = self.migrate(name=name)
            self.assertRefused(result)
            self.assertIn("--name", result.stderr)


class MigrateFailureTests(MigrateTestMixin, SynchronousTestCase):
    """
    Migrations that fail at one step: each exits with that step's code and
    leaves the routes file untouched and the proxy unsignalled.
    """

    if RSYNC is None:
        skip = SKIP_NO_RSYNC

    def assertFailed(self, result: subprocess.CompletedProcess, code: int) -> None:
        """
        Assert an exit with C{code} that left the routes and the proxy alone.
        """
        self.assertExit(result, code)
        self.assertRoutesUntouched()
        self.assertNotSignalled()

    def test_missingSource(self) -> None:
        """
        A source file that does not exist fails with code 3 before copying.
        """
        self.startProxy()
        self.assertFailed(self.migrate(), EXIT_SOURCE)
        self.assertNothingCopied()

    def test_missingSourceFolder(self) -> None:
        """
        A source folder that does not exist fails with code 3.
        """
        self.startProxy()
        result = self.migrate(**{"from": str(self.base / "nowhere")})
        self.assertFailed(result, EXIT_SOURCE)
        self.assertNothingCopied()

    def test_sourceNotRegularFile(self) -> None:
        """
        A source that is a folder, or a symbolic link, fails with code 3.
        """
        self.startProxy()
        (self.src / "big.bin").mkdir()
        target = self.addSource("real.bin")
        (self.src / "link.bin").symlink_to(target)
        self.assertFailed(self.migrate(), EXIT_SOURCE)
        self.assertFailed(self.migrate(name="link.bin"), EXIT_SOURCE)
        self.assertNothingCopied()

    def test_stalePidfile(self) -> None:
        """
        A pidfile naming a process that has exited fails with code 4 and
        nothing is copied.
        """
        self.addSource()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        self.pidfile.write_text(f"{dead.pid}\n")
        self.assertFailed(self.migrate(), EXIT_PIDFILE)
        self.assertNothingCopied()

    def test_pidfileOfFileServer(self) -> None:
        """
        A pidfile naming a relocfs file server instead of the proxy fails
        with code 4 and nothing is copied, rather than signal a process that
        has no routes to reload.
        """
        self.addSource()
        server = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "relocfs"]
        )
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        self.pidfile.write_text(f"{server.pid}\n")
        result = self.migrate()
        self.assertFailed(result, EXIT_PIDFILE)
        self.assertIn("relocfs file server", result.stderr)
        self.assertNothingCopied()
        self.assertIsNone(server.poll())

    def test_missingPidfile(self) -> None:
        """
        A pidfile that does not exist fails with code 4 and nothing is copied.
        """
        self.addSource()
        self.assertFailed(self.migrate(), EXIT_PIDFILE)
        self.assertNothingCopied()

    def test_pidfileWithoutPid(self) -> None:
        """
        A pidfile that does not hold a plain process number (including 0,
        which would signal the whole process group) fails with code 4.
        """
        self.addSource()
        for text in ["", "abc\n", "-1\n", "0\n", "12 34\n", "1.5\n"]:
            self.pidfile.write_text(text)
            self.assertFailed(self.migrate(), EXIT_PIDFILE)
        self.assertNothingCopied()

    def test_rsyncFails(self) -> None:
        """
        A destination under a path that cannot be created (a regular file)
        makes rsync fail: code 5.
        """
        self.addSource()
        self.startProxy()
        blocker = self.base / "blocker"
        blocker.write_bytes(b"not a folder")
        result = self.migrate(to=str(blocker / "filesB"))
        self.assertFailed(result, EXIT_COPY)
        self.assertIn("rsync", result.stderr)

    def test_checksumMismatch(self) -> None:
        """
        A copy whose content differs from the source, though its size and mtime
        match, fails the checksum check: code 6.
        """
        self.addSource()
        self.startProxy()
        self.installWrapper()
        copy = self.dest / "big.bin"
        self.env["MIGRATE_TEST_DAMAGE"] = str(copy)
        self.assertFailed(self.migrate(), EXIT_VERIFY)
        self.assertEqual(copy.stat().st_size, len(CONTENT))
        self.assertNotEqual(copy.read_bytes(), CONTENT)

    def test_checksumMismatchNonASCIIName(self) -> None:
        """
        The checksum check catches a damaged copy of a UTF-8 name in the C
        locale too: code 6.
        """
        self.env["LC_ALL"] = "C"
        self.addSource("ção/é.bin")
        self.startProxy()
        self.installWrapper()
        self.env["MIGRATE_TEST_DAMAGE"] = str(self.dest / "ção" / "é.bin")
        self.assertFailed(self.migrate(name="ção/é.bin"), EXIT_VERIFY)

    def test_checksumMismatchOnDaemon(self) -> None:
        """
        The checksum check also catches a damaged copy on an rsync daemon:
        code 6.
        """
        root = self.startDaemon()
        self.addSource("sub/big.bin")
        self.startProxy()
        self.installWrapper()
        self.env["MIGRATE_TEST_DAMAGE"] = str(root / "B" / "sub" / "big.bin")
        url = f"rsync://127.0.0.1:{self.daemonPort}/files/B"
        result = self.migrate(name="sub/big.bin", to=url)
        self.assertFailed(result, EXIT_VERIFY)

    def test_routesNotObject(self) -> None:
        """
        A routes file that holds JSON but not an object fails with code 7 and
        is left byte for byte as it was.
        """
        self.routes.write_text('["big.bin", "127.0.0.1:5000"]\n')
        self.routesBefore = self.routes.read_bytes()
        self.addSource()
        self.startProxy()
        result = self.migrate()
        self.assertFailed(result, EXIT_ROUTES)
        self.assertIn("not a JSON object", result.stderr)

    def test_routesTheProxyWouldRefuse(self) -> None:
        """
        A routes file whose other entries the proxy would refuse fails with
        code 7 and is left as it was, rather than be written and then refused
        by the proxy on SIGHUP.
        """
        self.routes.write_text(json.dumps({"other": "127.0.0.1:99999"}))
        self.routesBefore = self.routes.read_bytes()
        self.addSource()
        self.startProxy()
        result = self.migrate()
        self.assertFailed(result, EXIT_ROUTES)
        self.assertIn("proxy would refuse", result.stderr)

    def test_routesNotJSON(self) -> None:
        """
        A routes file that is not JSON fails with code 7 and is left as it was.
        """
        self.routes.write_bytes(b'{"big.bin": "127.0.0.1:5000",\n')
        self.routesBefore = self.routes.read_bytes()
        self.addSource()
        self.startProxy()
        self.assertFailed(self.migrate(), EXIT_ROUTES)

    def test_routesMissing(self) -> None:
        """
        A routes file that does not exist fails with code 7 and is not created.
        """
        self.routes.unlink()
        self.addSource()
        self.startProxy()
        self.assertExit(self.migrate(), EXIT_ROUTES)
        self.assertEqual(os.listdir(self.routesDir), [])
        self.assertNotSignalled()

    def test_proxyGoneBeforeSignal(self) -> None:
        """
        A proxy that dies after the check but before the signal fails with
        code 8; the routes are already updated by then.
        """
        self.addSource()
        proxy = self.startProxy()
        # Reap the proxy as soon as it dies, so that its pid disappears
        # rather than lingering as a zombie that kill(1) could still signal.
        reaper = threading.Thread(target=proxy.wait, daemon=True)
        reaper.start()
        self.installWrapper()
        self.env["MIGRATE_TEST_KILL"] = str(proxy.pid)
        result = self.migrate()
        self.assertExit(result, EXIT_SIGNAL)
        reaper.join(10)
        self.assertEqual(proxy.returncode, -signal.SIGKILL)
        self.assertEqual(
            json.loads(self.routes.read_text())["big.bin"], "127.0.0.1:5001"
        )
