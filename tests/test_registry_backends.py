"""Remote registries for real: a read-only HTTP registry on a local web server, S3 on a local moto server."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.cli import cli
from splitca.compose import open_ca, open_registry
from splitca.config import Settings
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.backends.http import HttpRegistry
from splitca.enrollment.backends.s3 import S3Registry
from splitca.enrollment.enroll import register
from splitca.enrollment.registry import Classification, hash_token
from splitca.errors import Conflict, RemoteError

from .conftest import free_port, make_csr, setup_ca, write_config

WORKER = Classification(("hadoop::worker",), {"rack": "r1"}, "production")
HOUR = dt.timedelta(hours=1)


def submit(ca: CertificateAuthority, name: str, password: str | None) -> Any:
    return ca.submit_csr(name, pki.pem(make_csr(name, password=password)))


def run(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


# --- a real HTTP registry ----------------------------------------------------------------------


class RegistryServer:
    """A static web server over a directory, plus a few misbehaving paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                name = self.path.rsplit("/", 1)[-1]
                if name.startswith("slow."):
                    outer.release.wait(10)
                elif name.startswith("error."):
                    self.send_error(500)
                elif name.startswith("huge."):
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"{" + b" " * 200_000 + b"}")
                else:
                    super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/nodes/"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[RegistryServer]:
    (tmp_path / "www" / "nodes").mkdir(parents=True)
    server = RegistryServer(tmp_path / "www")
    yield server
    server.stop()


@pytest.fixture
def http_ca(settings: Settings, web: RegistryServer) -> CertificateAuthority:
    s = settings.replace(
        autosign="registry", registry=web.url, registry_timeout=dt.timedelta(seconds=1)
    )
    setup_ca(s)
    return open_ca(s)


def test_http_registry_enrolls_once_and_is_read_only(
    http_ca: CertificateAuthority, web: RegistryServer, tmp_path: Path
) -> None:
    """The operator writes records to a directory and publishes it; the CA reads them over HTTP,
    and its own ledger makes each token single-use since it cannot write back."""
    published = DirectoryRegistry(web.root / "nodes")
    _, token = register(published, "h1.example.com", WORKER, ttl=HOUR)
    assert submit(http_ca, "h1.example.com", token).signed
    http_ca.clean(["h1.example.com"])
    replay = submit(http_ca, "h1.example.com", token)
    assert not replay.signed and replay.reason == "token already used"
    _, other = register(published, "h2.example.com", WORKER, ttl=HOUR)
    assert submit(http_ca, "h2.example.com", token).reason == "bad token"
    assert submit(http_ca, "h3.example.com", other).reason == "no registration"

    cfg = write_config(tmp_path / "c.yaml", http_ca.settings)
    r = run(cfg, "classify", "h2.example.com")
    assert r.exit_code == 0 and "hadoop::worker" in r.stdout
    assert run(cfg, "classify", "h9.example.com").exit_code == 1
    r = run(cfg, "register", "h4.example.com", "--class", "a")
    assert r.exit_code == 4 and "read-only" in r.stderr
    assert run(cfg, "registrations").exit_code == 4


def test_http_registry_caches_only_negative_answers(web: RegistryServer) -> None:
    registry = HttpRegistry(web.url, timeout=2, negative_ttl=60)
    assert registry.get("late.example.com") is None
    assert registry.get("late.example.com") is None
    assert web.hits["/nodes/late.example.com.json"] == 1
    published = DirectoryRegistry(web.root / "nodes")
    register(published, "now.example.com", WORKER, ttl=HOUR)
    assert registry.get("now.example.com") is not None
    assert registry.get("now.example.com") is not None
    assert web.hits["/nodes/now.example.com.json"] == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("error.example.com", "HTTP 500"),
        ("huge.example.com", "more than 65536 bytes"),
        ("slow.example.com", "did not answer within 1s"),
        ("liar.example.com", "invalid record"),
    ],
)
def test_http_registry_failures_leave_csrs_pending(
    http_ca: CertificateAuthority, web: RegistryServer, name: str, reason: str
) -> None:
    # a record that claims to be for another machine
    real = DirectoryRegistry(web.root / "nodes")
    register(real, "victim.example.com", WORKER, ttl=HOUR)
    (web.root / "nodes" / "victim.example.com.json").rename(
        web.root / "nodes" / "liar.example.com.json"
    )
    result = submit(http_ca, name, "0" * 64)
    assert not result.signed
    assert result.reason.startswith("registry unavailable:") and reason in result.reason


# --- S3 on a local moto server ------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="splitca-nodes")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_ca(settings: Settings, s3: str) -> CertificateAuthority:
    s = settings.replace(
        autosign="registry", registry="s3://splitca-nodes/fleet", registry_s3_endpoint=s3
    )
    setup_ca(s)
    return open_ca(s)


def s3_object(endpoint: str, key: str) -> dict[str, Any]:
    client = boto3.client("s3", endpoint_url=endpoint)
    body = client.get_object(Bucket="splitca-nodes", Key=key)["Body"].read()
    return dict(json.loads(body))


def test_s3_registry_round_trip(s3_ca: CertificateAuthority, s3: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", s3_ca.settings)
    r = run(cfg, "register", "s1.example.com", "--class", "hadoop::worker", "--param", "rack=r2")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    stored = s3_object(s3, "fleet/s1.example.com.json")
    assert stored["token_sha256"] == hash_token(token) and token not in json.dumps(stored)
    r = run(cfg, "register", "s1.example.com", "--class", "x")
    assert r.exit_code == 4 and "already registered" in r.stderr

    assert submit(s3_ca, "s1.example.com", token).signed
    assert s3_object(s3, "fleet/s1.example.com.json")["redeemed"]
    s3_ca.clean(["s1.example.com"])
    assert submit(s3_ca, "s1.example.com", token).reason == "token already used"

    r = run(cfg, "registrations", "--format", "json")
    assert [(x["certname"], x["state"]) for x in json.loads(r.stdout)] == [
        ("s1.example.com", "enrolled")
    ]
    r = run(cfg, "classify", "s1.example.com")
    assert r.exit_code == 0 and "rack: r2" in r.stdout
    assert run(cfg, "unregister", "s1.example.com").exit_code == 0
    assert run(cfg, "classify", "s1.example.com").exit_code == 1
    assert run(cfg, "unregister", "s1.example.com").exit_code == 3


def test_s3_conditional_write_lets_one_redeemer_win(s3_ca: CertificateAuthority) -> None:
    """Two CAs read the same record; only the first conditional write marks it used."""
    registry = open_registry(s3_ca.settings)
    assert isinstance(registry, S3Registry)
    register(registry, "r.example.com", WORKER, ttl=HOUR)
    first = registry.get_versioned("r.example.com")
    second = registry.get_versioned("r.example.com")
    assert first is not None and second is not None
    now = dt.datetime.now(dt.UTC)
    assert registry.mark_redeemed(first[0], first[1], now) is True
    assert registry.mark_redeemed(second[0], second[1], now) is False
    with pytest.raises(Conflict):
        register(registry, "r.example.com", WORKER, ttl=HOUR)


def test_s3_hostile_or_unreachable_registry_leaves_csrs_pending(
    s3_ca: CertificateAuthority, s3: str, settings: Settings
) -> None:
    boto3.client("s3", endpoint_url=s3).put_object(
        Bucket="splitca-nodes", Key="fleet/bad.example.com.json", Body=b'{"certname": 1}'
    )
    result = submit(s3_ca, "bad.example.com", "0" * 64)
    assert result.reason.startswith("registry unavailable:") and "invalid" in result.reason
    dead = S3Registry(
        "s3://splitca-nodes/fleet", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=1
    )
    with pytest.raises(RemoteError, match=r"^registry s3://splitca-nodes/fleet: get failed: \w+"):
        dead.get("x.example.com")
