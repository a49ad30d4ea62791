"""Real Puppet 7 agents against two `splitca serve` replicas sharing one PostgreSQL database."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from splitca.compose import setup_ca

from .conftest import Agent, Server, make_settings, openssl
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
