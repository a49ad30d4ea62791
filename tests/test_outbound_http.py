"""Outbound HTTP (sync-crl's CA fetch, the HTTP registry): trust is explicit, time is bounded in total."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca import pki
from splitca.cli import cli
from splitca.config import Settings
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.backends.http import HttpRegistry
from splitca.enrollment.enroll import register
from splitca.enrollment.registry import Classification
from splitca.errors import ConfigError, RemoteError, ResponseTooLarge
from splitca.split.client import HTTPClient, system_ca_bundle

from .conftest import make_settings

HOUR = dt.timedelta(hours=1)
WORKER = Classification(("hadoop::worker",), {"rack": "r1"}, "production")


@pytest.fixture(scope="module")
def tls() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_bundle(tls: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "trustme-ca.pem"
    tls.cert_pem.write_to_path(str(path))
    return path


def server_context(tls: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def fresh_crl(tls: trustme.CA) -> bytes:
    """A current CRL from the trustme CA (pinned by sync-crl here), so that a failed fetch
    is exit 6 (CA unreachable) and not 8 (stale)."""
    key = serialization.load_pem_private_key(tls.private_key_pem.bytes(), None)
    cert = x509.load_pem_x509_certificate(tls.cert_pem.bytes())
    now = dt.datetime.now(dt.UTC)
    crl = pki.build_crl(
        ca_key=key,  # type: ignore[arg-type]
        ca_cert=cert,
        entries=[],
        number=1,
        this_update=now - dt.timedelta(minutes=1),
        next_update=now + dt.timedelta(days=7),
    )
    return pki.pem(crl)


def record_for(tmp_path: Path, certname: str) -> bytes:
    """A valid published registration, as `splitca register` writes it."""
    published = DirectoryRegistry(tmp_path / "published")
    register(published, certname, WORKER, ttl=HOUR)
    return (tmp_path / "published" / f"{certname}.json").read_bytes()


# --- a small web server answering whatever the test says ---------------------------------------


Answer = tuple[int, dict[str, str], bytes]


class Web:
    """A real HTTP(S) server on 127.0.0.1: *answer(path)* decides; requests are recorded."""

    def __init__(self, answer: Callable[[str], Answer], ctx: ssl.SSLContext | None = None):
        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append((self.path, dict(self.headers.items())))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            do_CONNECT = do_GET  # a proxy would see CONNECT; record it like anything else

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if ctx is not None:
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def web() -> Iterator[Callable[..., Web]]:
    started: list[Web] = []

    def start(answer: Callable[[str], Answer], ctx: ssl.SSLContext | None = None) -> Web:
        started.append(Web(answer, ctx))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# --- 1. the registry's trust comes from the configuration only --------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://registry.example.com/nodes/",
        "http://10.0.0.5/nodes/",
        "http://localhost:8080/nodes/",  # a name is not an address: it may resolve anywhere
        "http://user:secret@registry.example.com/nodes/",
    ],
)
def test_plain_http_registry_is_refused_by_config(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, registry=url)
    msg = str(info.value)
    assert msg.startswith("registry: ") and "https://" in msg
    assert "secret" not in msg


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/nodes/",
        "http://127.3.4.5/nodes/",
        "http://[::1]:8080/nodes/",
        "https://registry.example.com/nodes/",
    ],
)
def test_https_and_loopback_http_registries_are_accepted(tmp_path: Path, url: str) -> None:
    assert make_settings(tmp_path, registry=url).registry == url


def test_plain_http_registry_is_refused_even_when_built_directly() -> None:
    registry = HttpRegistry("http://registry.example.com/nodes/", timeout=1)
    with pytest.raises(ConfigError, match=r"registry: .*https://"):
        registry.get("h1.example.com")


def test_environment_cannot_change_what_the_registry_trusts(
    web: Callable[..., Web],
    tls: trustme.CA,
    tls_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no registry_ca_file, only the system trust store counts: a private CA named by
    REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE/SSL_CERT_FILE does not make a registry trusted."""
    record = record_for(tmp_path, "h1.example.com")
    server = web(lambda path: (200, {}, record), server_context(tls))
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(var, str(tls_bundle))
    before = system_ca_bundle()
    with pytest.raises(RemoteError, match=r"TLS with .* failed .*registry_ca_file"):
        HttpRegistry(server.url + "/nodes/", timeout=2).get("h1.example.com")
    assert server.seen == []  # the handshake failed before any request was sent
    assert system_ca_bundle() == before  # not taken from SSL_CERT_FILE
    # the configured bundle is what makes it trusted
    found = HttpRegistry(server.url + "/nodes/", timeout=2, ca_file=tls_bundle).get(
        "h1.example.com"
    )
    assert found is not None and found.certname == "h1.example.com"


def test_proxy_and_netrc_in_the_environment_are_ignored(
    web: Callable[..., Web], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that would answer with a forged registration is never asked, and .netrc
    credentials are never sent."""
    forged = record_for(tmp_path, "h1.example.com")
    proxy = web(lambda path: (200, {}, forged))
    real = web(lambda path: (404, {}, b""))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, proxy.url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)

    assert HttpRegistry(real.url + "/nodes/", timeout=2).get("h1.example.com") is None
    assert proxy.seen == []
    assert [path for path, _ in real.seen] == ["/nodes/h1.example.com.json"]
    assert "Authorization" not in real.seen[0][1]


def test_a_redirect_is_refused_not_followed(
    web: Callable[..., Web], tls: trustme.CA, tls_bundle: Path, tmp_path: Path
) -> None:
    """An https registry redirecting to plain http (where anyone on the path could answer)."""
    record = record_for(tmp_path, "h1.example.com")
    plain = web(lambda path: (200, {}, record))
    secure = web(lambda path: (302, {"Location": plain.url + path}, b""), server_context(tls))
    registry = HttpRegistry(secure.url + "/nodes/", timeout=2, ca_file=tls_bundle)
    with pytest.raises(RemoteError, match=r"HTTP 302, a redirect to .*not followed"):
        registry.get("h1.example.com")
    assert plain.seen == []


def test_a_redirecting_registry_leaves_the_csr_pending(
    settings: Settings, web: Callable[..., Web], tmp_path: Path
) -> None:
    from splitca import compose
    from splitca.compose import open_ca

    from .conftest import make_csr

    published = DirectoryRegistry(tmp_path / "published")
    _, token = register(published, "h1.example.com", WORKER, ttl=HOUR)
    record = (tmp_path / "published" / "h1.example.com.json").read_bytes()
    elsewhere = web(lambda path: (200, {}, record))
    registry = web(lambda path: (301, {"Location": elsewhere.url + path}, b""))
    s = settings.replace(
        autosign="registry",
        registry=registry.url + "/nodes/",
        registry_timeout=dt.timedelta(seconds=2),
    )
    compose.setup_ca(s)
    ca = open_ca(s)
    try:
        result = ca.submit_csr(
            "h1.example.com", pki.pem(make_csr("h1.example.com", password=token))
        )
    finally:
        ca.close()
    assert not result.signed
    assert result.reason.startswith("registry unavailable:") and "redirect" in result.reason
    assert elsewhere.seen == []


# --- 2. the timeout is a total: a server trickling bytes cannot hold a fetch ---------------------


class Trickler:
    """Answers every request slowly: the status line, then one byte every 0.5 s, in the
    headers or in the body, for at most *seconds* (so a client without a total deadline
    is not held forever, only long enough to fail the test)."""

    def __init__(self, phase: str, ctx: ssl.SSLContext | None = None, seconds: float = 20):
        self.phase, self.ctx, self.seconds = phase, ctx, seconds
        self.stop_event = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        try:
            raw.settimeout(5)
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if self.phase == "body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            end = time.monotonic() + self.seconds
            while time.monotonic() < end and not self.stop_event.wait(0.5):
                conn.sendall(b"A")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.listener.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def trickler() -> Iterator[Callable[..., Trickler]]:
    started: list[Trickler] = []

    def start(phase: str, ctx: ssl.SSLContext | None = None) -> Trickler:
        started.append(Trickler(phase, ctx))
        return started[-1]

    yield start
    for t in started:
        t.stop()


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_sync_crl_timeout_is_total_against_a_trickling_ca(
    trickler: Callable[..., Trickler],
    tls: trustme.CA,
    tls_bundle: Path,
    tmp_path: Path,
    phase: str,
) -> None:
    """sync-crl --timeout 1 against a CA sending one byte per 0.5 s: exit 6 (CA unreachable,
    installed CRL kept) within a few seconds, not after the server gives up."""
    slow = trickler(phase, server_context(tls))
    dest = tmp_path / "crl.pem"
    installed = fresh_crl(tls)
    dest.write_bytes(installed)
    started = time.monotonic()
    result = CliRunner().invoke(
        cli,
        [
            "sync-crl",
            "--ca-url", f"https://127.0.0.1:{slow.port}",
            "--ca-cert", str(tls_bundle),
            "--dest", str(dest),
            "--no-reload",
            "--timeout", "1",
        ],
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 6, result.output
    assert "did not answer within 1s" in result.output
    assert "Traceback" not in result.output
    assert elapsed < 8, elapsed
    assert dest.read_bytes() == installed
    assert slow.accepted == 1


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_http_registry_timeout_is_total(trickler: Callable[..., Trickler], phase: str) -> None:
    slow = trickler(phase)
    registry = HttpRegistry(f"http://127.0.0.1:{slow.port}/nodes/", timeout=1)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="did not answer within 1s"):
        registry.get("h1.example.com")
    assert time.monotonic() - started < 8


def test_client_is_reusable_after_a_deadline(
    trickler: Callable[..., Trickler], web: Callable[..., Web]
) -> None:
    """The watchdog only ever touches the request it guards: the next request on the same
    client (and its pooled connection) works."""
    slow = trickler("body")
    fast = web(lambda path: (200, {}, b"ok"))
    client = HTTPClient(
        f"http://127.0.0.1:{slow.port}", ca_bundle=None, timeout=1, loopback_http=True
    )
    with client:
        with pytest.raises(RemoteError, match="did not answer within 1s"):
            client.get(f"http://127.0.0.1:{slow.port}/x")
        for _ in range(3):
            got = client.get(fast.url + "/y")
            assert got.status == 200 and got.body == b"ok"


# --- 4. content codings: decoded as sent, bounded as decoded ---------------------------------------


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


def _zlib(data: bytes, wbits: int) -> bytes:
    import zlib

    obj = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return obj.compress(data) + obj.flush()


BODY = b"-----BEGIN X509 CRL-----\n" + b"QUJD" * 5000 + b"\n-----END X509 CRL-----\n"
ENCODED = {
    "gzip": ("gzip", _gzip(BODY)),
    "x-gzip": ("x-gzip", _gzip(BODY)),
    "deflate": ("deflate", _zlib(BODY, 15)),
    "raw-deflate": ("deflate", _zlib(BODY, -15)),  # what some servers send as deflate
    "identity": ("identity", BODY),
    "two-gzip-members": ("gzip", _gzip(BODY[:7000]) + _gzip(BODY[7000:])),
    "gzip-then-deflate": ("gzip, deflate", _zlib(_gzip(BODY), 15)),
}


def test_an_empty_body_is_empty_whatever_its_coding(web: Callable[..., Web]) -> None:
    server = web(lambda path: (200, {"Content-Encoding": "gzip"}, b""))
    with _plain_client(server) as client:
        assert client.get(server.url + "/crl").body == b""


def _plain_client(server: Web, **kw: Any) -> HTTPClient:
    return HTTPClient(server.url, ca_bundle=None, loopback_http=True, timeout=5, **kw)


@pytest.mark.parametrize("case", sorted(ENCODED))
def test_a_content_encoded_answer_is_decoded(web: Callable[..., Web], case: str) -> None:
    """What Apache's mod_deflate (on by default on Debian) does to a text/plain CRL."""
    coding, sent = ENCODED[case]
    server = web(lambda path: (200, {"Content-Encoding": coding}, sent))
    with _plain_client(server) as client:
        got = client.get(server.url + "/crl")
    assert got.body == BODY
    # it asks only for what it decodes, whatever requests would have sent by default
    assert server.seen[0][1]["Accept-Encoding"] == "gzip, deflate"


def test_a_gzip_bomb_fails_at_the_decoded_limit_without_expanding_it(
    web: Callable[..., Web],
) -> None:
    """64 KiB on the wire that gunzip to 64 MiB: refused as too large once 1 MiB is decoded,
    and the client never holds much more than that limit."""
    import tracemalloc
    import zlib

    obj = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1024 * 1024)
    bomb = b"".join(obj.compress(block) for _ in range(64)) + obj.flush()
    assert len(bomb) < 128 * 1024
    server = web(lambda path: (200, {"Content-Encoding": "gzip"}, bomb))
    with _plain_client(server, max_bytes=1024 * 1024) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge, match=r"decodes \(gzip\) to more than 1048576"):
                client.get(server.url + "/crl")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("coding", "sent", "message"),
    [
        ("br", b"\x1b\x03\x00", r"Content-Encoding 'br', which splitca cannot decode"),
        ("gzip", b"this is not gzip", r"gzip body that does not decode"),
        ("gzip", _gzip(BODY)[:-20], r"gzip body that does not decode: .*ends early"),
        ("deflate", _zlib(BODY, 15) + b"trailing", r"data after the end of its deflate body"),
        ("gzip, gzip, gzip, gzip", _gzip(BODY), r"4 content codings; at most 3"),
    ],
    ids=["unknown", "garbage", "truncated", "trailing", "too-many"],
)
def test_a_body_that_does_not_decode_is_a_clear_error(
    web: Callable[..., Web], coding: str, sent: bytes, message: str
) -> None:
    server = web(lambda path: (200, {"Content-Encoding": coding}, sent))
    with _plain_client(server) as client, pytest.raises(RemoteError, match=message) as info:
        client.get(server.url + "/crl")
    assert not isinstance(info.value, ResponseTooLarge)


def test_an_error_answer_that_is_gzipped_is_shown_decoded(web: Callable[..., Web]) -> None:
    server = web(lambda path: (503, {"Content-Encoding": "gzip"}, _gzip(b"busy, try later\n")))
    with _plain_client(server) as client, pytest.raises(RemoteError) as info:
        client.get(server.url + "/crl")
    assert str(info.value).endswith("answered HTTP 503: busy, try later")


def test_text_from_the_server_reaches_messages_without_control_characters(
    web: Callable[..., Web],
) -> None:
    """An error page's first line is shown to help the operator, but a terminal escape
    sequence in it (ESC ... BEL retitles the terminal, ESC [2J clears it) must not reach
    their terminal or the journal as such."""
    page = b"\x1b]0;owned\x07\x1b[2Jbusy\r, try later\n"
    server = web(lambda path: (503, {}, page))
    with _plain_client(server) as client, pytest.raises(RemoteError) as info:
        client.get(server.url + "/crl")
    assert str(info.value).endswith("answered HTTP 503: ?]0;owned??[2Jbusy")


def test_a_name_that_resolves_slowly_is_within_the_total_timeout(
    web: Callable[..., Web],
    tls: trustme.CA,
    tls_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getaddrinfo cannot be interrupted and no socket exists yet, so the deadline's
    watchdog has nothing to shut down: a resolver that hangs (a DNS server dropping
    queries costs the resolver's attempts times its timeout) held the request past its
    total. It fails at the deadline instead; a name that resolves in time works."""
    real = socket.getaddrinfo
    release = threading.Event()
    answered: list[str] = []

    def resolver(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "ca.slow.test":
            release.wait(60)  # a resolver that does not answer (set free at the end)
            answered.append(host)
        return real("127.0.0.1" if str(host).endswith(".test") else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.issue_cert("ca.slow.test", "ca.quick.test").configure_cert(ctx)
    server = web(lambda path: (200, {}, b"ok"), ctx)
    try:
        quick = f"https://ca.quick.test:{server.port}"
        with HTTPClient(quick, ca_bundle=tls_bundle, timeout=1) as client:
            assert client.get(quick + "/x").body == b"ok"
        slow = f"https://ca.slow.test:{server.port}"
        with (
            HTTPClient(slow, ca_bundle=tls_bundle, timeout=1) as client,
            pytest.raises(RemoteError, match="did not answer within 1s"),
        ):
            client.get(slow + "/x")
        assert answered == []  # given up while the resolver still hung
    finally:
        release.set()
