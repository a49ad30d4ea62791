"""Real Puppet 7 agents against two `splitca serve` replicas sharing one PostgreSQL database."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509

from splitca import pki
from splitca.compose import setup_ca

from .conftest import Agent, Server, make_csr, make_settings, openssl
from .pg_harness import PgServer

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_an_agent_enrolls_and_is_revoked_across_two_replicas(
    tmp_path: Path,
    pg_url: str,
    pg_server: PgServer,
    server_factory: Callable[..., Server],
    agent_factory: Callable[[str], Agent],
) -> None:
    """The agent asks replica A, an operator on B's host signs, the agent gets its
    certificate from B; a revoke on A's host is in the CRL that B serves."""
    a_settings = make_settings(
        tmp_path,
        store=pg_url,
        database_password_file=str(pg_server.password_file),
        autosign=False,
    )
    setup_ca(a_settings)
    b_dir = tmp_path / "replica-b"
    b_dir.mkdir()
    shutil.copy2(a_settings.cadir / "ca_key.pem", b_dir / "ca_key.pem")  # the operator's copy
    b_settings = a_settings.replace(cadir=b_dir, certname="ca2.test")
    setup_ca(b_settings, server_identity=True)  # B's own TLS identity, from the shared CA
    a, b = server_factory(a_settings), server_factory(b_settings)

    name = "agent-ha.example.com"
    agent = agent_factory(name)
    first = agent.bootstrap(a.port)
    assert first.returncode != 0 and not agent.cert_path.exists()
    assert name in b.cli("list", "--pending").stdout
    signed = b.cli("sign", name)
    assert signed.returncode == 0, signed.stderr
    second = agent.bootstrap(b.port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert agent.cacert_path.read_bytes() == (b_dir / "ca_crt.pem").read_bytes()
    status = a.cli("status", name, "--format", "json")
    assert '"state":"signed"' in status.stdout

    revoked = a.cli("revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    agent.crl_path.unlink()  # Puppet 7 fetches a CRL only when it has none
    again = agent.bootstrap(b.port)
    assert again.returncode != 0 and "is revoked" in again.stdout + again.stderr
    # the CRL the agent got from replica B verifies, and lists the certificate
    out = openssl(
        "verify", "-crl_check", "-CAfile", str(agent.cacert_path),
        "-CRLfile", str(agent.crl_path), str(agent.cert_path),
    )  # fmt: skip
    assert out.returncode != 0 and b"revoked" in out.stdout + out.stderr


def test_serve_with_two_workers_on_the_database_enrolls_concurrent_clients(
    tmp_path: Path, pg_url: str, pg_server: PgServer, server_factory: Callable[..., Server]
) -> None:
    """Forked workers each open their own connections; concurrent enrollments through both
    get distinct serials, all recorded; SIGTERM stops it cleanly."""
    settings = make_settings(
        tmp_path, store=pg_url, database_password_file=str(pg_server.password_file), autosign=True
    )
    setup_ca(settings)
    server = server_factory(settings, workers=2)
    names = [f"node{i}.example.com" for i in range(24)]
    certs: dict[str, x509.Certificate] = {}
    guard = threading.Lock()

    def enroll(chunk: list[str]) -> None:
        with requests.Session() as s:
            s.trust_env, s.verify = False, str(server.cacert)
            for name in chunk:
                put = s.put(
                    f"{server.url}/puppet-ca/v1/certificate_request/{name}",
                    data=pki.pem(make_csr(name)),
                    headers={"Content-Type": "text/plain"},
                    timeout=30,
                )
                assert put.status_code == 200, put.text
                got = s.get(f"{server.url}/puppet-ca/v1/certificate/{name}", timeout=30)
                assert got.status_code == 200, got.text
                with guard:
                    certs[name] = x509.load_pem_x509_certificate(got.content)

    threads = [threading.Thread(target=enroll, args=(names[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(certs) == sorted(names)
    serials = {c.serial_number for c in certs.values()}
    assert len(serials) == len(names)
    listed = json.loads(server.cli("list", "--signed", "--format", "json").stdout)
    assert {r["name"] for r in listed} >= set(names)
    assert server.stop() == 0
    assert "Traceback" not in server.log_text()
