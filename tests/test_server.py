"""`splitca serve` as a process: TLS, access log, clean shutdown, worker supervision, the demo script."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from splitca.authority import CertificateAuthority

from .conftest import REPO, free_port

pytestmark = pytest.mark.slow


def session(cacert: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE must not decide what we trust
    s.verify = str(cacert)
    return s


def test_access_log_and_clean_sigterm(settings, server_factory) -> None:
    CertificateAuthority.setup(settings)
    server = server_factory(settings)
    with session(server.cacert) as s:
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/nobody", timeout=10).status_code == 404
    time.sleep(0.2)
    log = server.log_text()
    assert re.search(r'127\.0\.0\.1 - "GET /puppet-ca/v1/certificate/ca" 200 \d+ [\d.]+ms', log)
    assert re.search(r'"GET /puppet-ca/v1/certificate/nobody" 404', log)
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.log_text()


def test_client_certificate_is_optional_and_verified(
    settings, server_factory, tmp_path: Path
) -> None:
    """Agents connect without a certificate; a certificate from another CA fails the handshake."""
    import trustme

    CertificateAuthority.setup(settings)
    server = server_factory(settings)
    other = trustme.CA()
    stranger = other.issue_cert("stranger")
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    stranger.cert_chain_pems[0].write_to_path(str(cert))
    stranger.private_key_pem.write_to_path(str(key))
    with session(server.cacert) as s:
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
        s.cert = (str(cert), str(key))
        with pytest.raises(requests.exceptions.SSLError):
            s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10)
        s.cert = (str(settings.effective_server_cert), str(settings.effective_server_key))
        assert (
            s.get(f"{server.url}/puppet-ca/v1/certificate_statuses/all", timeout=10).status_code
            == 200
        )


def test_dead_worker_is_replaced(settings, server_factory) -> None:
    CertificateAuthority.setup(settings)
    server = server_factory(settings, workers=2)
    children = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        if len(now) == 2 and children[0] not in now:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"worker not replaced:\n{server.log_text()}")
    with session(server.cacert) as s:
        for _ in range(6):  # whichever worker the kernel picks answers
            assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
    assert server.stop() == 0


def test_readme_serve_command_runs_a_demo_ca(tmp_path: Path) -> None:
    """scripts/serve.sh: creates the demo CA on first run and serves it; SIGTERM stops it."""
    port = free_port()
    env = dict(
        os.environ,
        SPLITCA_VENV=sys.prefix,
        SPLITCA_DEMO_DIR=str(tmp_path / "demo"),
        SPLITCA_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "serve.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 180
        while "CA ready at" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "Created CA 'Puppet CA: localhost'" in text
        assert f"puppet ssl bootstrap --ca_server 127.0.0.1 --ca_port {port}" in text
        cacert = tmp_path / "demo" / "ca" / "ca_crt.pem"
        with session(cacert) as s:
            r = s.get(f"https://127.0.0.1:{port}/puppet-ca/v1/certificate/ca", timeout=10)
            assert r.status_code == 200 and r.content == cacert.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
