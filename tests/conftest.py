"""Shared fixtures: real CAs in tmp dirs, real CSRs, the WSGI app in-process, real servers and agents."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from splitca import compose, pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.http.routes_ca import App
from splitca.http.wsgiapp import make_app

REPO = Path(__file__).resolve().parents[1]
FIXTURE_CADIR = REPO.parent / "shared" / "fixtures" / "puppetserver-7.9.5-cadir"
REQUIRE_INTEROP = os.environ.get("SPLITCA_REQUIRE_INTEROP") == "1"


# --- external programs ------------------------------------------------------------------


def require(ok: bool, why: str) -> None:
    """Go on if *ok*; else, under the README's test command (SPLITCA_REQUIRE_INTEROP=1), FAIL
    the test with *why*, and elsewhere skip it."""
    if not ok:
        if REQUIRE_INTEROP:
            pytest.fail(why)
        pytest.skip(why)


def require_program(name: str) -> str:
    """Path of *name*; under the README's test command (SPLITCA_REQUIRE_INTEROP=1) a missing
    program FAILS the test instead of skipping it."""
    path = shutil.which(name) or next(
        (
            p
            for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/opt/puppetlabs/bin/{name}")
            if os.path.exists(p)
        ),
        None,
    )
    if path is None:
        if REQUIRE_INTEROP:
            pytest.fail(f"{name} is not installed; the test command installs it (scripts/test.sh)")
        pytest.skip(f"{name} not installed (run scripts/test.sh to install it)")
    return path


def require_fixture_cadir() -> Path:
    if not FIXTURE_CADIR.exists():
        if REQUIRE_INTEROP:
            pytest.fail(f"puppetserver fixture missing at {FIXTURE_CADIR}")
        pytest.skip("puppetserver fixture (../shared) not present")
    return FIXTURE_CADIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- keys and CSRs -------------------------------------------------------------------------

# Agent keys, generated once per session and handed out so that no two calls in one test
# get the same key (the cursor is reset before each test; the pool grows on demand).
_KEY_POOL: list[rsa.RSAPrivateKey] = []
_key_cursor = 0


def fast_key() -> rsa.RSAPrivateKey:
    """A real 2048-bit RSA key, distinct from every other one this test got (from a
    session pool: key generation is the slowest part of making a CSR)."""
    global _key_cursor
    if _key_cursor == len(_KEY_POOL):
        _KEY_POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    _key_cursor += 1
    return _KEY_POOL[_key_cursor - 1]


@pytest.fixture(autouse=True)
def _fresh_keys_per_test() -> None:
    global _key_cursor
    _key_cursor = 0


def make_csr(
    name: str,
    *,
    key: Any = None,
    cn: str | None = None,
    sans: Sequence[str] = (),
    extensions: Sequence[tuple[str, str]] = (),
    raw_extensions: Sequence[x509.ExtensionType] = (),
    password: str | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
) -> x509.CertificateSigningRequest:
    """A real CSR as a Puppet agent would make it; *extensions* are (dotted OID, UTF8 value)."""
    key = key or fast_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn if cn is not None else name)])
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(pki.parse_alt_names(sans)), False
        )
    for oid, value in extensions:
        o = x509.ObjectIdentifier(oid)
        builder = builder.add_extension(x509.UnrecognizedExtension(o, pki.der_utf8(value)), False)
    for ext in raw_extensions:
        builder = builder.add_extension(ext, False)
    if password is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, password.encode())
    return builder.sign(key, hash_alg or hashes.SHA256())


def signed(ca: CertificateAuthority, name: str, **csr_kw: Any) -> x509.Certificate:
    """A certificate for *name*: a CSR (make_csr(name, **csr_kw)) submitted, then signed."""
    ca.submit_csr(name, pki.pem(make_csr(name, **csr_kw)))
    return ca.sign(name)


# --- CAs -------------------------------------------------------------------------------------


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    raw: dict[str, Any] = {
        "cadir": str(tmp_path / "ca"),
        "certname": "ca.test",
        "dns_alt_names": ["puppet", "localhost", "IP:127.0.0.1"],
        "key_size": 2048,
        "workers": 1,
        "threads": 8,
    }
    raw.update(overrides)
    return Settings.from_mapping(raw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


# --- pristine CAs: `setup` once per session, a copy per test ------------------------------------

_INDEX_FILES = tuple(f"index.sqlite3{suffix}" for suffix in ("", "-wal", "-shm", "-journal"))


@dataclass
class _Pristine:
    cadir: Path
    digest: dict[str, str]


_PRISTINE: dict[tuple[Any, ...], _Pristine] = {}
_PRISTINE_ROOT: list[Path] = []


def tree_digest(root: Path, *, skip: Sequence[str] = ()) -> dict[str, str]:
    """Mode and content hash of every file and directory under *root* (but names in *skip*)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name in skip:
            continue
        content = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[p.relative_to(root).as_posix()] = f"{p.lstat().st_mode:o} {content}"
    return out


def _pristine_key(settings: Settings) -> tuple[Any, ...]:
    """Settings that are equal but for cadir make the same CA (cadir-relative paths only)."""
    return tuple(
        (f, getattr(settings, f)) for f in sorted(settings.__dataclass_fields__) if f != "cadir"
    )


def setup_ca(settings: Settings) -> None:
    """What ``compose.setup_ca(settings)`` makes, in ``settings.cadir``, but
    copied from a CA set up once per session with the same settings.

    The copy keeps modes and times; splitca's index is not copied (it is rebuilt from the
    files when the CA is opened, as for a cadir restored from a backup). Tests that test
    setup itself, or need a CA made at a given time, call ``compose.setup_ca``.
    """
    if settings.cadir.exists() and any(settings.cadir.iterdir()):
        compose.setup_ca(settings)  # a CA (or part of one) is there: as setup does
        return
    key = _pristine_key(settings)
    pristine = _PRISTINE.get(key)
    if pristine is None:
        root = Path(tempfile.mkdtemp(prefix=f"pristine-{len(_PRISTINE)}-", dir=_PRISTINE_ROOT[0]))
        made = settings.replace(cadir=root / "ca")
        compose.setup_ca(made)
        digest = tree_digest(made.cadir, skip=_INDEX_FILES)
        pristine = _PRISTINE[key] = _Pristine(made.cadir, digest)
    shutil.copytree(
        pristine.cadir,
        settings.cadir,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if n in _INDEX_FILES],
    )


@pytest.fixture(scope="session", autouse=True)
def _pristine_cas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _PRISTINE_ROOT.append(tmp_path_factory.mktemp("pristine"))
    yield
    for p in _PRISTINE.values():
        now = tree_digest(p.cadir, skip=_INDEX_FILES)
        changed = sorted(k for k in now.keys() | p.digest.keys() if now.get(k) != p.digest.get(k))
        assert not changed, f"a test changed the pristine CA {p.cadir}: {changed}"


@pytest.fixture
def ca(settings: Settings) -> CertificateAuthority:
    setup_ca(settings)
    return open_ca(settings)


def snapshot(cadir: Path) -> dict[str, bytes]:
    """Every file under *cadir* except splitca's private index/locks and the audit log."""
    out = {}
    for p in sorted(cadir.rglob("*")):
        rel = p.relative_to(cadir).as_posix()
        if p.is_file() and not rel.startswith(".splitca/") and rel != "audit.log":
            out[rel] = p.read_bytes()
    return out


def copy_fixture_cadir(dest: Path) -> Path:
    src = require_fixture_cadir() / "cadir"
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (dest / "ca_key.pem").chmod(0o640)
    return dest


# --- the WSGI app in-process -------------------------------------------------------------------


@dataclass
class WsgiResult:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def client_environ(cert: x509.Certificate | None) -> dict[str, str]:
    """What mod_ssl/cheroot put in the environ for a verified client certificate."""
    if cert is None:
        return {"SSL_CLIENT_VERIFY": "NONE"}
    return {
        "SSL_CLIENT_VERIFY": "SUCCESS",
        "SSL_CLIENT_S_DN_CN": pki.first_cn(cert.subject) or "",
        "SSL_CLIENT_CERT": pki.pem(cert).decode(),
    }


def wsgi_call(
    app: App,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    client: x509.Certificate | None = None,
    query: str = "",
    environ_extra: dict[str, str] | None = None,
) -> WsgiResult:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "REMOTE_ADDR": "127.0.0.1",
        }
    )
    environ.update(client_environ(client))
    environ.update(environ_extra or {})
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            environ["CONTENT_TYPE"] = v
        else:
            environ["HTTP_" + k.upper().replace("-", "_")] = v
    captured: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]]) -> None:
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(hdrs)

    out = b"".join(app(environ, start_response))
    return WsgiResult(captured["status"], captured["headers"], out)


@pytest.fixture
def app(ca: CertificateAuthority) -> App:
    return make_app(ca=ca)


@pytest.fixture
def admin_cert(ca: CertificateAuthority) -> x509.Certificate:
    """The CA host's own certificate: it carries pp_cli_auth, like puppetserver's."""
    return x509.load_pem_x509_certificate(ca.settings.effective_server_cert.read_bytes())


# --- a real `splitca serve` process -------------------------------------------------------------


@dataclass
class Server:
    url: str
    port: int
    settings: Settings
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cacert(self) -> Path:
        return self.settings.cadir / "ca_crt.pem"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def put_csr(self, name: str, *, timeout: float = 10) -> Any:
        """An agent's PUT of a fresh CSR for *name*, over TLS (a requests.Response)."""
        import requests

        return requests.put(
            f"{self.url}/puppet-ca/v1/certificate_request/{name}",
            data=pki.pem(make_csr(name)),
            headers={"Content-Type": "text/plain"},
            verify=str(self.cacert),
            timeout=timeout,
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `splitca --config <this server's config> ARGS` as an operator would, beside the server."""
        return subprocess.run(
            [sys.executable, "-m", "splitca", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def write_config(path: Path, settings: Settings, **extra: Any) -> Path:
    raw: dict[str, Any] = {}
    for f in settings.__dataclass_fields__:
        v = getattr(settings, f)
        if v is None:
            continue
        if isinstance(v, dt.timedelta):
            v = int(v.total_seconds())
        elif isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        raw[f] = v
    raw.update(extra)
    path.write_text(yaml.safe_dump(raw))
    return path


def start_server(
    tmp_path: Path, settings: Settings, *, workers: int = 1, ready_timeout: float = 30, **extra: Any
) -> Server:
    """Run `python -m splitca serve` as a real process on a free loopback port."""
    port = free_port()
    settings = settings.replace(port=port, workers=workers, listen="127.0.0.1")
    cfg = write_config(tmp_path / f"splitca-{port}.yaml", settings, **extra)
    log = tmp_path / f"serve-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "splitca", "--config", str(cfg), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    server = Server(f"https://127.0.0.1:{port}", port, settings, cfg, proc, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"splitca serve exited early:\n{server.log_text()}")
        if "CA ready at" in server.log_text():
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"splitca serve did not become ready:\n{server.log_text()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def factory(settings: Settings, **kw: Any) -> Server:
        s = start_server(tmp_path, settings, **kw)
        servers.append(s)
        return s

    yield factory
    for s in servers:
        s.stop()


# --- the real Puppet agent ---------------------------------------------------------------------


@dataclass
class Agent:
    """One isolated Puppet agent (its own confdir/ssldir) talking to a CA on loopback."""

    certname: str
    root: Path
    puppet: str

    @property
    def ssldir(self) -> Path:
        return self.root / "ssl"

    @property
    def confdir(self) -> Path:
        return self.root / "conf"

    @property
    def cert_path(self) -> Path:
        return self.ssldir / "certs" / f"{self.certname}.pem"

    @property
    def key_path(self) -> Path:
        return self.ssldir / "private_keys" / f"{self.certname}.pem"

    @property
    def crl_path(self) -> Path:
        return self.ssldir / "crl.pem"

    @property
    def cacert_path(self) -> Path:
        return self.ssldir / "certs" / "ca.pem"

    def args(
        self, port: int, server: str = "127.0.0.1", server_port: int | None = None
    ) -> list[str]:
        return [
            "--certname",
            self.certname,
            "--confdir",
            str(self.confdir),
            "--vardir",
            str(self.root / "var"),
            "--ssldir",
            str(self.ssldir),
            "--logdir",
            str(self.root / "log"),
            "--rundir",
            str(self.root / "run"),
            "--codedir",
            str(self.root / "code"),
            "--server",
            server,
            "--serverport",
            str(server_port or port),
            "--ca_server",
            "127.0.0.1",
            "--ca_port",
            str(port),
            "--keylength",
            "2048",
            "--color",
            "false",
        ]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HOME=str(self.root))
        return subprocess.run(
            [self.puppet, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
        )

    def bootstrap(
        self, port: int, *extra: str, waitforcert: int = 0, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "ssl",
            "bootstrap",
            *self.args(port),
            "--waitforcert",
            str(waitforcert),
            *extra,
            timeout=timeout,
        )


@pytest.fixture
def agent_factory(tmp_path: Path) -> Callable[[str], Agent]:
    puppet = require_program("puppet")

    def factory(certname: str) -> Agent:
        root = tmp_path / f"agent-{certname}"
        for sub in ("conf", "var", "ssl", "log", "run", "code"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return Agent(certname, root, puppet)

    return factory


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    exe = require_program("openssl")
    return subprocess.run([exe, *args], capture_output=True, input=input, timeout=60)


def openssl_verify(cert: Path, cadir: Path) -> subprocess.CompletedProcess[bytes]:
    """`openssl verify -crl_check` of *cert* against the CA and CRL in *cadir*."""
    return openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(cadir / "ca_crt.pem"),
        "-CRLfile",
        str(cadir / "ca_crl.pem"),
        str(cert),
    )


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def io_ready(
    sock: socket.socket, *, read: bool = True, write: bool = False, timeout: float
) -> tuple[bool, bool]:
    """(readable, writable) within *timeout*, via epoll/poll: select() fails past fd 1023,
    which a long test session reaches."""
    events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
    with selectors.DefaultSelector() as sel:
        sel.register(sock, events)
        ready = sel.select(timeout)
    mask = ready[0][1] if ready else 0
    return bool(mask & selectors.EVENT_READ), bool(mask & selectors.EVENT_WRITE)


# A real PostgreSQL for the PostgreSQL store's tests (session server, a database per test).
from .pg_harness import pg_server, pg_template, pg_url  # noqa: E402, F401
