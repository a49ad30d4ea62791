"""Test harness: a real PostgreSQL server (Debian's), run as an unprivileged user on 127.0.0.1."""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

WAIT = 30.0  # upper bound for every wait on the server
# As in conftest (which imports this module: no import back, so either may come first).
REQUIRE_INTEROP = os.environ.get("SPLITCA_REQUIRE_INTEROP") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SUPERUSER = "splitca"
_counter = itertools.count(1)


def postgres_bindir() -> Path:
    """Debian's newest PostgreSQL bin directory; FAILS under SPLITCA_REQUIRE_INTEROP=1."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb") or "").parent
    if REQUIRE_INTEROP:
        pytest.fail("PostgreSQL is not installed; the test command installs it (scripts/test.sh)")
    pytest.skip("PostgreSQL not installed (run scripts/test.sh to install it)")


def _run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run postgres as: root may not run it, so root runs it as nobody."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


@dataclass
class PgServer:
    """One PostgreSQL cluster in a temp dir: started, stopped and restarted by the tests."""

    bindir: Path
    base: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / "sock"

    @property
    def password_file(self) -> Path:
        return self.base / "password"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """The store URL of *dbname* over TCP (password not in it: see password_file)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _user_kwargs(self) -> dict[str, object]:
        ids = _run_as()
        return {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}

    def init(self) -> None:
        self.sockdir.mkdir()
        self.datadir.mkdir(mode=0o700)
        pwfile = self.base / "initdb-pw"
        pwfile.write_text(self.password + "\n")
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        ids = _run_as()
        if ids is not None:
            for p in (self.base, self.sockdir, self.datadir, pwfile):
                os.chown(p, *ids)
        args = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-instructions"]  # fmt: skip
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.base,
            **self._user_kwargs(),  # type: ignore[arg-type]
        )
        pwfile.unlink()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        ids = _run_as()
        if ids is not None:
            os.chown(self.log, *ids)
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-k", str(self.sockdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on",
                "-c", "synchronous_commit=on", "-c", "max_connections=300",
                "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.base,
            start_new_session=True,
            **self._user_kwargs(),  # type: ignore[arg-type]
        )
        logf.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            probe = [str(self.bindir / "pg_isready"), "-q", "-h", str(self.sockdir),
                     "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]  # fmt: skip
            ready = subprocess.run(
                probe,
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not get ready: {self.log.read_text()[-2000:]}")

    def stop(self, *, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the server (SIGINT: fast shutdown, every session cut; SIGKILL: a crash)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(mode)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)
        if mode == signal.SIGKILL:  # a crash: its backends die with it (same process group)
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _psql_args(self, dbname: str) -> list[str]:
        return [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.sockdir), "-p", str(self.port), "-U", SUPERUSER, "-d", dbname]  # fmt: skip

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run *sql* as the superuser over the unix socket; its output."""
        out = subprocess.run(
            [*self._psql_args(dbname), "-c", sql],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout.strip()

    def new_database(self, template: str | None = None) -> str:
        """A fresh, empty database (copied from *template* if given); its name."""
        name = f"t{os.getpid()}_{next(_counter)}"
        tmpl = f" TEMPLATE {template}" if template else ""
        self.psql(f"CREATE DATABASE {name}{tmpl}")
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """A started PgServer in a fresh temp dir, stopped and removed at the end, even on failure."""
    bindir = postgres_bindir()
    # Not under pytest's tmp dirs: those are 0700 root, and postgres runs as nobody.
    base = Path(tempfile.mkdtemp(prefix="splitca-pg-"))
    base.chmod(0o755)
    server = PgServer(bindir, base)
    atexit.register(server.stop)  # also if pytest itself is stopped short of the teardown
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- fixtures (tests/conftest.py makes them available to every test module) -----------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the session, stopped at its end even on failure."""
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database with splitca's schema, copied for each test (CREATE DATABASE ... TEMPLATE)."""
    from splitca.store.postgres.pgstore import PgStore

    name = pg_server.new_database()
    store = PgStore(
        pg_server.url(name), key_dir=pg_server.base / "unused", password=pg_server.password
    )
    try:
        store.migrate()
    finally:
        store.shutdown()
    return name


@pytest.fixture
def pg_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of this test's own (the server running)."""
    if pg_server.proc is None or pg_server.proc.poll() is not None:
        pg_server.start()  # an outage test before this one left it stopped
    name = pg_server.new_database(template=pg_template)
    yield pg_server.url(name)
    if pg_server.proc is not None and pg_server.proc.poll() is None:
        pg_server.drop_database(name)
