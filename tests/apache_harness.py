"""Test harness for the split-CA tests: real Apache processes, an echo backend, TLS probes, PKI files."""

from __future__ import annotations

import contextlib
import grp
import http.client
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.cli.split import server_modules
from splitca.split import apache

from .conftest import REPO, free_port, require_program

MODULES_DIR = Path("/usr/lib/apache2/modules")
# What Debian's apache2 package enables on a fresh install (enable_default_modules in its
# postinst, with the modules those depend on), loaded with their shipped .conf files: the
# guide's Apache is Debian's as shipped, so every Apache here runs with them (mod_deflate
# gzips text/plain answers, mod_reqtimeout bounds slow requests, ...).
DEBIAN_MODS_AVAILABLE = Path("/etc/apache2/mods-available")
DEBIAN_DEFAULT_MODULES = (
    "mpm_event", "authz_core", "authz_host", "authn_core", "auth_basic", "access_compat",
    "authn_file", "authz_user", "alias", "dir", "autoindex", "env", "mime", "negotiation",
    "setenvif", "filter", "deflate", "status", "reqtimeout",
)  # fmt: skip
IS_ROOT = os.geteuid() == 0
WAIT = 30.0  # upper bound for every wait in these tests


def apache_binary() -> str:
    return require_program("apache2")


def modules_dir() -> Path:
    for d in (MODULES_DIR, Path("/usr/lib64/httpd/modules"), Path("/usr/lib/httpd/modules")):
        if (d / "mod_ssl.so").exists():
            return d
    if os.environ.get("SPLITCA_REQUIRE_INTEROP") == "1":
        pytest.fail("Apache's mod_ssl is not installed; scripts/test.sh installs apache2")
    pytest.skip("Apache's mod_ssl is not installed")


def require_module(name: str) -> None:
    filename = apache.module_file(name)
    if not (modules_dir() / filename).exists():
        if os.environ.get("SPLITCA_REQUIRE_INTEROP") == "1":
            pytest.fail(f"Apache module {filename} is missing; scripts/test.sh installs it")
        pytest.skip(f"Apache module {filename} is not installed")


def debian_default_modules() -> tuple[str, ...]:
    """Directives loading DEBIAN_DEFAULT_MODULES as /etc/apache2/mods-available has them.

    Each LoadModule is guarded like ServerFrame's own, so a module the site also needs is
    loaded once. Empty where there is no Debian Apache (the tests then run without them).
    """
    out: list[str] = []
    for name in DEBIAN_DEFAULT_MODULES:
        load = DEBIAN_MODS_AVAILABLE / f"{name}.load"
        if not load.exists():
            continue
        for line in load.read_text().splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "LoadModule":
                out.append(f"<IfModule !{words[1]}>\n    {line.strip()}\n</IfModule>")
        conf = DEBIAN_MODS_AVAILABLE / f"{name}.conf"
        if conf.exists():
            out.append(f'Include "{conf}"')
    return tuple(out)


def require_debian_defaults() -> None:
    """For a test about Debian's Apache as shipped: its default modules must be there."""
    if not (DEBIAN_MODS_AVAILABLE / "deflate.load").exists():
        if os.environ.get("SPLITCA_REQUIRE_INTEROP") == "1":
            pytest.fail(f"no {DEBIAN_MODS_AVAILABLE}/deflate.load: Debian's apache2 is needed")
        pytest.skip("not Debian's Apache: no mods-available/deflate.load")


def world_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that Apache's unprivileged children can traverse.

    (pytest's tmp_path lives under a 0700 directory; when the tests run as root, Apache's
    children and the mod_wsgi daemon run as nobody and could not reach it.)
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def unprivileged() -> tuple[str, str]:
    """User and group for Apache's children when the tests run as root."""
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name


# --- a real Apache -----------------------------------------------------------------------------


@dataclass
class Apache:
    """One Apache 2.4 in the foreground, with its own config, logs and pid file."""

    root: Path
    conf: Path
    site_conf: Path
    port: int
    binary: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    def log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def generations(self) -> int:
        """How many times Apache finished (re)loading its config: one more per graceful."""
        return self.log_text().count("resuming normal operations")

    @property
    def graceful_command(self) -> list[str]:
        return [self.binary, "-f", str(self.conf), "-k", "graceful"]

    def start(self) -> None:
        out = open(self.root / "stdout.log", "wb")  # noqa: SIM115 - Popen keeps it open
        self.proc = subprocess.Popen(
            [self.binary, "-f", str(self.conf), "-DFOREGROUND"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Apache exited at start:\n{self.output()}")
            if self.generations() >= 1 and _port_open(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Apache did not start within {WAIT:g}s:\n{self.output()}")

    def output(self) -> str:
        stdout = self.root / "stdout.log"
        text = stdout.read_text(errors="replace") if stdout.exists() else ""
        return text + self.log_text()

    def wait_generation(self, previous: int) -> None:
        """Wait (bounded) until a graceful restart after *previous* generations completed."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.generations() > previous and _port_open(self.port):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Apache died during a graceful restart:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"Apache did not finish its graceful restart:\n{self.output()}")

    def graceful(self) -> None:
        before = self.generations()
        subprocess.run(self.graceful_command, check=True, capture_output=True, timeout=WAIT)
        self.wait_generation(before)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_apache(
    site_text: str, port: int, modules: tuple[str, ...], *, extra: tuple[str, ...] = ()
) -> Apache:
    """Start a real Apache (foreground process) around *site_text*; the caller stops it."""
    binary = apache_binary()
    mods = modules_dir()
    for m in modules:
        require_module(m)
    root = world_dir("splitca-apache-")
    site = root / "site.conf"
    site.write_text(site_text)
    user, group = unprivileged() if IS_ROOT else (None, None)
    frame = apache.ServerFrame(
        server_root=root,
        run_dir=root,
        error_log=root / "error.log",
        site_conf=site,
        modules_dir=mods,
        modules=server_modules(modules, mods),
        user=user,
        group=group,
        log_level="notice ssl:info",
        extra=(*debian_default_modules(), *extra),
    )
    conf = root / "httpd.conf"
    conf.write_text(apache.render_server_config(frame))
    server = Apache(root, conf, site, port, binary)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def stop_apache(server: Apache) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def apache_factory() -> Iterator[Callable[..., Apache]]:
    """Start real Apaches around rendered site configs; all are stopped at teardown."""
    started: list[Apache] = []

    def factory(
        site_text: str, port: int, modules: tuple[str, ...], *, extra: tuple[str, ...] = ()
    ) -> Apache:
        server = start_apache(site_text, port, modules, extra=extra)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_apache(server)


# --- a backend that echoes the identity headers it got -------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class Backend:
    """A plain-HTTP backend on loopback standing in for puppetserver behind Apache."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def _catalog(name: str) -> dict[str, Any]:
    return {
        "tags": ["settings"],
        "name": name,
        "version": 1,
        "code_id": None,
        "catalog_uuid": "00000000-0000-4000-8000-000000000000",
        "catalog_format": 1,
        "environment": "production",
        "resources": [],
        "edges": [],
        "classes": [],
    }


def _directory_metadata(relative_path: str | None) -> dict[str, Any]:
    """An empty plugin directory, as puppetserver describes one (for pluginsync)."""
    return {
        "path": "/etc/puppetlabs/code/environments/production/plugins",
        "relative_path": relative_path,
        "links": "follow",
        "owner": 0,
        "group": 0,
        "mode": 0o755,
        "checksum": {"type": "ctime", "value": "{ctime}2024-01-01 00:00:00 +0000"},
        "type": "directory",
        "destination": None,
    }


def _handler(backend: Backend) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            backend.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
            path = urllib.parse.urlsplit(self.path).path
            # Just enough of puppetserver's /puppet/v3 for a Puppet 7 agent run.
            if path.startswith("/puppet/v3/node/"):
                name = path.rsplit("/", 1)[-1]
                body: Any = {
                    "name": name,
                    "environment": "production",
                    "parameters": {},
                    "classes": [],
                }
            elif path.startswith("/puppet/v3/file_metadatas/"):
                body = [_directory_metadata(".")]
            elif path.startswith("/puppet/v3/file_metadata/"):
                body = _directory_metadata(None)
            elif path.startswith("/puppet/v3/catalog/"):
                body = _catalog(path.rsplit("/", 1)[-1])
            elif path.startswith("/puppet/v3/"):
                body = {}
            else:
                body = {
                    "path": self.path,
                    "x-client-verify": self.headers.get("X-Client-Verify"),
                    "x-client-dn": self.headers.get("X-Client-DN"),
                    "x-client-cert": self.headers.get("X-Client-Cert"),
                }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    return Handler


def start_backend() -> Backend:
    b = Backend(free_port())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", b.port), _handler(b))
    server.daemon_threads = True
    b.server = server
    b.thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    b.thread.start()
    return b


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = start_backend()
    yield b
    b.stop()


# --- TLS probes ---------------------------------------------------------------------------------


class Refused(Exception):
    """The server would not talk to us (TLS alert, reset, or closed without an answer)."""


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def https_request(
    method: str,
    port: int,
    path: str,
    *,
    cacert: Path,
    cert: Path | None = None,
    key: Path | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One HTTPS request to 127.0.0.1:*port*, verifying the server against *cacert*.

    Raises:
      Refused: the TLS handshake or the request was rejected by the server.
    """
    ctx = ssl.create_default_context(cafile=str(cacert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), dict(resp.getheaders()))
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as exc:
        raise Refused(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def https_get(port: int, path: str, **kw: Any) -> Answer:
    return https_request("GET", port, path, **kw)


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll *check* until it is true, for at most WAIT seconds (no timing assertions)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def refused(port: int, path: str, **kw: Any) -> bool:
    try:
        https_get(port, path, **kw)
    except Refused:
        return True
    return False


# --- PKI files on disk ---------------------------------------------------------------------------


@dataclass
class Identity:
    """A certificate with its key and CA, written where Apache or a client can read them."""

    name: str
    cert: Path
    key: Path
    cacert: Path
    certificate: x509.Certificate


def issue(
    ca: CertificateAuthority, name: str, where: Path, *, alt_names: tuple[str, ...] = ()
) -> Identity:
    """Issue *name* from the real CA (as 'splitca generate' does) and write key + cert."""
    key_pem, cert = ca.generate(name, alt_names=pki.parse_alt_names(alt_names), key_size=2048)
    where.mkdir(parents=True, exist_ok=True)
    cert_path = where / f"{name}.crt"
    key_path = where / f"{name}.key"
    cert_path.write_bytes(pki.pem(cert))
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    cacert = where / "ca.pem"
    cacert.write_bytes(ca.ca_certificate_pem())
    return Identity(name, cert_path, key_path, cacert, cert)


# --- mod_wsgi: an interpreter environment the daemon (as nobody) can read ----------------------


def _wsgi_import_roots() -> list[Path]:
    """Top-level files and packages outside the stdlib that `splitca.wsgi` imports."""
    code = (
        # prometheus_client is imported on the first request (http/metrics.py), not by
        # splitca.wsgi: named here so that /metrics works under mod_wsgi too.
        "import json, sys, sysconfig, splitca.wsgi, prometheus_client\n"
        "roots = {sysconfig.get_paths()[k] for k in ('purelib', 'platlib')}\n"
        "out = set()\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None) or ''\n"
        "    for r in roots:\n"
        "        if f.startswith(r + '/'):\n"
        "            out.add(r + '/' + f[len(r) + 1:].split('/')[0])\n"
        "print(json.dumps(sorted(out)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    return [Path(p) for p in json.loads(proc.stdout)]


def _link_tree(src: Path, dest: Path) -> None:
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dest, copy_function=link, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        link(str(src), str(dest))
    # Hard links share the original's mode: only widen what nobody could not read.
    for p in [dest, *dest.rglob("*")] if dest.is_dir() else [dest]:
        mode = p.stat().st_mode
        if not mode & 0o004 or (p.is_dir() and not mode & 0o001):
            p.chmod(mode | (0o005 if p.is_dir() else 0o004))


@pytest.fixture(scope="session")
def wsgi_python_home() -> Iterator[Path]:
    """A virtualenv made from the Python mod_wsgi was built for, holding splitca and its
    imports, under /tmp where the mod_wsgi daemon (nobody, when the tests run as root)
    can read it. Debian's dist-packages (an old cryptography) stay out of its sys.path."""
    require_module("wsgi")
    system_python = "/usr/bin/python3"
    if not os.access(system_python, os.X_OK):
        pytest.skip("no /usr/bin/python3 for mod_wsgi")
    home = world_dir("splitca-wsgi-venv-")
    venv = home / "venv"
    subprocess.run(
        [system_python, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    site = Path(version.stdout.strip())
    here = sysconfig.get_paths()["purelib"]
    if Path(here).name != site.parent.name and site.parent.name not in here:
        pytest.skip(f"mod_wsgi's Python ({site.parent.name}) differs from the tests' ({here})")
    for root in _wsgi_import_roots():
        _link_tree(root, site / root.name)
    _link_tree(REPO / "splitca", site / "splitca")
    yield venv
    shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def owned_by_nobody(path: Path) -> Iterator[None]:
    """chown -R *path* to nobody while the block runs (root only); back to root after."""
    if not IS_ROOT:
        yield
        return
    nobody = pwd.getpwnam("nobody")
    for p in [path, *path.rglob("*")]:
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    try:
        yield
    finally:
        for p in [path, *path.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(p, 0, 0)


# --- a compile master: our CA, Apache with the rendered vhost, the echo backend -----------------


@dataclass
class MasterStack:
    """Apache rendered by `splitca apache-config` in front of an echo backend."""

    ca: CertificateAuthority
    apache: Apache
    backend: Backend
    master: Identity
    crl: Path
    files: Path
    site_text: str

    @property
    def port(self) -> int:
        return self.apache.port

    def agent(self, name: str) -> Identity:
        return issue(self.ca, name, self.files / "agents")

    def get(
        self, who: Identity | None, path: str = "/echo", headers: dict[str, str] | None = None
    ) -> Answer:
        return https_get(
            self.port,
            path,
            cacert=self.master.cacert,
            cert=who.cert if who else None,
            key=who.key if who else None,
            headers=headers,
        )

    def refuses(self, who: Identity | None, path: str = "/echo") -> bool:
        try:
            self.get(who, path)
        except Refused:
            return True
        return False


def render_master(
    master: Identity, crl: Path, port: int, backend_url: str, *extra_args: str
) -> str:
    """The compile-master vhost exactly as the CLI renders it."""
    from click.testing import CliRunner

    from splitca.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "apache-config",
            "--server-name", "master1.example.com",
            "--listen", f"127.0.0.1:{port}",
            "--cert", str(master.cert),
            "--key", str(master.key),
            "--ca-cert", str(master.cacert),
            "--crl", str(crl),
            "--backend", "proxy",
            "--backend-url", backend_url,
            *extra_args,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout  # the config; stderr says how sync-crl reloads it


def build_master_stack(ca: CertificateAuthority, where: Path, backend: Backend) -> MasterStack:
    master = issue(ca, "master1.example.com", where / "ssl", alt_names=("puppet", "IP:127.0.0.1"))
    crl = where / "ssl" / "crl.pem"
    crl.write_bytes(ca.crl_pem())
    port = free_port()
    text = render_master(master, crl, port, backend.url)
    server = start_apache(text, port, ("ssl", "headers", "proxy", "proxy_http"))
    return MasterStack(ca, server, backend, master, crl, where, text)
