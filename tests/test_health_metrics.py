"""Health for load balancers (/status/v1/simple) and the Prometheus endpoint (/metrics), on a real
`splitca serve`, and the checks of the app in process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from splitca import pki
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.errors import StoreError, StoreUnavailable
from splitca.http.wsgiapp import make_app

from .conftest import Server, io_ready, make_csr, setup_ca, wsgi_call

STATUS_TYPE = "text/plain; charset=utf-8"


def identity(server: Server, name: str, tmp_path: Path) -> tuple[str, str]:
    """A client certificate from `splitca generate` (Puppet's ssldir layout)."""
    ssl = tmp_path / f"{name}-ssl"
    out = server.cli("generate", name, "--ssldir", str(ssl), "--key-size", "2048")
    assert out.returncode == 0, out.stderr
    return str(ssl / "certs" / f"{name}.pem"), str(ssl / "private_keys" / f"{name}.pem")


def get(server: Server, path: str, cert: tuple[str, str] | None = None) -> requests.Response:
    return requests.get(server.url + path, verify=str(server.cacert), cert=cert, timeout=30)


def scrape(server: Server, cert: tuple[str, str]) -> dict[str, float]:
    """/metrics parsed by prometheus_client's own parser: ``name{label=value,...}`` -> value."""
    r = get(server, "/metrics", cert)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def what_the_files_say(cadir: Path) -> dict[str, float]:
    """The numbers, read from the cadir with cryptography alone (not through splitca)."""
    crl = x509.load_pem_x509_crl((cadir / "ca_crl.pem").read_bytes())
    revoked = {r.serial_number for r in crl}
    serials = [
        x509.load_pem_x509_certificate(p.read_bytes()).serial_number
        for p in (cadir / "signed").glob("*.pem")
    ]
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return {
        "splitca_csr_pending": len(list((cadir / "requests").glob("*.pem"))),
        "splitca_certificates_signed": sum(s not in revoked for s in serials),
        "splitca_certificates_revoked": sum(s in revoked for s in serials),
        "splitca_crl_number": number,
    }


def until(check: Callable[[], object], timeout: float = 30) -> None:
    """Poll *check* until it stops raising AssertionError (the metrics cache lives 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_health_and_metrics_on_a_real_server_with_two_workers(
    settings: Settings, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    setup_ca(settings)
    server = server_factory(settings, workers=2)
    for _ in range(6):  # a load balancer's probes, no client certificate
        r = get(server, "/status/v1/simple")
        assert (r.status_code, r.text, r.headers["Content-Type"]) == (200, "running", STATUS_TYPE)
    assert get(server, "/metrics").status_code == 403  # needs a certificate this CA issued

    prom = identity(server, "prometheus.test", tmp_path)
    for name in ("agent1.test", "agent2.test", "agent3.test"):
        identity(server, name, tmp_path)
    out = server.cli("revoke", "agent2.test")
    assert out.returncode == 0, out.stderr
    csr = pki.pem(make_csr("pending.test"))
    r = requests.put(
        f"{server.url}/puppet-ca/v1/certificate_request/pending.test",
        data=csr,
        headers={"Content-Type": "text/plain"},
        verify=str(server.cacert),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    expected = what_the_files_say(settings.cadir)
    assert expected["splitca_csr_pending"] == 1 and expected["splitca_certificates_revoked"] == 1

    ca_cert = x509.load_pem_x509_certificate(server.cacert.read_bytes())
    crl = x509.load_pem_x509_crl((settings.cadir / "ca_crl.pem").read_bytes())

    def matches() -> None:
        m = scrape(server, prom)
        assert {k: m.get(k) for k in expected} == expected
        assert m["splitca_up"] == 1
        now = time.time()
        # Ages and horizons: the CRL's and the CA certificate's own dates (the scrape's clock).
        assert abs(m["splitca_crl_age_seconds"] - (now - crl.last_update_utc.timestamp())) < 60
        assert crl.next_update_utc is not None
        assert (
            abs(m["splitca_crl_next_update_seconds"] - (crl.next_update_utc.timestamp() - now)) < 60
        )
        assert (
            abs(
                m["splitca_ca_cert_expiry_seconds"]
                - (ca_cert.not_valid_after_utc.timestamp() - now)
            )
            < 60
        )
        # Requests are counted across both workers (prometheus_client's multiprocess mode).
        assert (
            m["splitca_http_requests_total{method=GET,route=/status/v1/simple/?,status=200}"] == 6
        )
        assert m["splitca_store_ping_seconds_count"] >= 6

    until(matches)


def test_health_is_error_when_the_ca_files_are_gone_while_documents_still_serve(
    settings: Settings, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    setup_ca(settings)
    server = server_factory(settings)
    prom = identity(server, "prometheus.test", tmp_path)
    key = settings.cadir / "ca_key.pem"
    shutil.move(key, tmp_path / "ca_key.pem.away")
    try:
        for path in ("/status/v1/simple", "/status/v1/simple/ca"):
            r = get(server, path)
            assert (r.status_code, r.text, r.headers["Content-Type"]) == (503, "error", STATUS_TYPE)
        # What can still be served is: agents keep getting the CA certificate and the CRL.
        assert get(server, "/puppet-ca/v1/certificate/ca").status_code == 200
        assert "BEGIN X509 CRL" in get(server, "/puppet-ca/v1/certificate_revocation_list/ca").text
        # Without the key no client certificate can be checked: /metrics cannot answer either.
        assert get(server, "/metrics", prom).status_code == 503
        assert "health: the CA cannot serve" in server.log_text()
    finally:
        shutil.move(tmp_path / "ca_key.pem.away", key)
    r = get(server, "/status/v1/simple")
    assert (r.status_code, r.text) == (200, "running")


def test_a_store_whose_ping_fails_is_error_503(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    assert wsgi_call(app, "GET", "/status/v1/simple").text == "running"

    def down() -> None:
        raise StoreUnavailable("the database is down")

    monkeypatch.setattr(ca.store, "ping", down)
    for path in ("/status/v1/simple", "/status/v1/simple/ca"):
        r = wsgi_call(app, "GET", path)
        assert (r.status, r.text, r.headers["Content-Type"]) == (503, "error", STATUS_TYPE)
    assert wsgi_call(app, "GET", "/status/v1/simple/status-service").status == 200
    assert wsgi_call(app, "GET", "/puppet-ca/v1/certificate/ca").status == 200
    _, cert = ca.generate("prometheus.test", key_size=2048)
    r = wsgi_call(app, "GET", "/metrics", client=cert)
    up = next(f for f in text_string_to_metric_families(r.text) if f.name == "splitca_up")
    assert (r.status, up.samples[0].value) == (200, 0)


def test_metrics_need_a_certificate_of_this_ca_and_count_methods_boundedly(
    settings: Settings,
) -> None:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    assert wsgi_call(app, "GET", "/metrics").status == 403
    _, cert = ca.generate("prometheus.test", key_size=2048)
    wsgi_call(app, "BREW", "/status/v1/simple")  # a method no route has: not a label of its own
    r = wsgi_call(app, "GET", "/metrics", client=cert)
    assert r.status == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    methods = {s.labels["method"] for s in families["splitca_http_requests"].samples}
    assert "BREW" not in methods and "other" in methods
    assert families["splitca_certificates_signed"].samples[0].value >= 1


@pytest.mark.parametrize(
    ("damaged", "data"),
    [
        ("ca_crt.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ("ca_key.pem", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
    ],
    ids=["certificate", "key"],
)
def test_a_damaged_ca_file_is_error_503_not_a_crash(
    settings: Settings, damaged: str, data: bytes
) -> None:
    # A CA file edited by hand or overwritten by another tool: the load balancer learns the
    # CA cannot serve ('error', 503), as for a missing one; never an internal error (500).
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    ca.signer.current()  # loaded once: the damage is seen when the file changes
    (settings.cadir / damaged).write_bytes(data)
    for path in ("/status/v1/simple", "/status/v1/simple/ca"):
        r = wsgi_call(app, "GET", path)
        assert (r.status, r.text) == (503, "error"), r.text
    with pytest.raises(StoreError, match=damaged):  # one line naming the file, for the CLI
        ca.signer.current()


_MULTIPROC_SCRIPT = """
import json, logging, os, sys
from pathlib import Path
from prometheus_client.parser import text_string_to_metric_families
from splitca.compose import open_ca, setup_ca
from splitca.http.wsgiapp import make_app
from tests.conftest import make_settings, wsgi_call
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
settings = make_settings(Path(sys.argv[1]))
setup_ca(settings)
ca = open_ca(settings, autosign_at_start=False)
app = make_app(ca=ca)
health = [(r.status, r.text) for r in (wsgi_call(app, "GET", "/status/v1/simple") for _ in "ab")]
_, cert = ca.generate("prometheus.test", key_size=2048)
r = wsgi_call(app, "GET", "/metrics", client=cert)
names = [f.name for f in text_string_to_metric_families(r.text)] if r.status == 200 else []
print(json.dumps({"health": health, "metrics": r.status, "names": names}))
"""


@pytest.mark.parametrize("where", ["missing", "unusable"])
def test_a_missing_or_unusable_multiprocess_dir_costs_no_answer(tmp_path: Path, where: str) -> None:
    # PROMETHEUS_MULTIPROC_DIR=/run/splitca-metrics (docs/operations.md) is gone after a
    # reboot (tmpfs) unless remade: health checks and requests must still be answered,
    # and /metrics too; a directory that can be made is made, else each process counts alone.
    # (In a process of its own: prometheus-client's multiprocess mode is process-wide.)
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "run" / "splitca-metrics" if where == "missing" else tmp_path / "a-file" / "m"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", _MULTIPROC_SCRIPT, str(tmp_path / "site")],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["health"] == [[200, "running"], [200, "running"]], done.stderr
    assert got["metrics"] == 200 and "splitca_http_requests" in got["names"], done.stderr
    assert "Traceback" not in done.stderr
    if where == "missing":
        assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700
        assert any(path.iterdir())  # counted in the directory the workers share
    else:
        assert done.stderr.count("is not a usable directory") == 1, done.stderr


def test_a_forked_process_makes_its_own_instruments(settings: Settings) -> None:
    """Instruments made before a fork are the parent's: a forked child (a `serve` worker, a
    mod_wsgi child) makes its own on its first request, even if another thread of the parent
    held the metrics lock when it forked."""
    setup_ca(settings)
    metrics = make_app(ca=open_ca(settings)).metrics
    metrics.observe_request("/r", "GET", 200, None)
    parent = metrics._instruments()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with metrics._lock:  # held at the fork, as by a thread of the parent making them
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child)
                code = 1
                try:
                    metrics.observe_request("/r", "GET", 200, None)
                    code = 0 if metrics._instruments() is not parent else 2
                finally:
                    theirs.send(bytes([code]))
                    os._exit(0)
        answered, _ = io_ready(ours, timeout=30)
        if not answered:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert answered, "the forked child hung on the parent's metrics lock"
        assert ours.recv(1) == b"\0"
    assert metrics._instruments() is parent
