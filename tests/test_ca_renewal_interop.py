"""`splitca ca renew` with the real Puppet 7 agent, openssl and an Apache compile master: certificates
issued before the renewal keep working with the new CA bundle (docs/ca-lifecycle.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from splitca import pki

from .apache_harness import Apache, stop_apache, wait_until
from .apache_harness import backend as backend
from .conftest import Agent, make_settings, openssl, setup_ca
from .test_split_e2e import generate, start_master

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def agent_run(agent: Agent, ca_port: int, master_port: int) -> str:
    """One `puppet agent --test` through the master; its output, asserted to have applied a catalog."""
    run = agent.run(
        "agent", "--test",
        *agent.args(ca_port, server="127.0.0.1", server_port=master_port),
        "--waitforcert", "0",
        "--no-report",
        timeout=180,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode in (0, 2) and "Applied catalog" in output, output
    return output


def verify(cert: Path, cafile: Path, crl: Path) -> None:
    """`openssl verify -crl_check` of *cert* against *cafile* (the bundle) and *crl*."""
    out = openssl("verify", "-crl_check", "-CAfile", str(cafile), "-CRLfile", str(crl), str(cert))
    assert out.returncode == 0 and b": OK" in out.stdout, out.stdout + out.stderr


def give_master_the_bundle(httpd: Apache, bundle: Path, master_cacert: Path) -> None:
    """What the operator does on a compile master: install the new ca.pem, reload Apache."""
    before = httpd.generations()
    shutil.copyfile(bundle, master_cacert)
    httpd.graceful()
    httpd.wait_generation(before)


def test_agent_issued_before_a_ca_renewal_still_runs_through_an_apache_master(
    tmp_path: Path,
    server_factory,
    agent_factory,
    backend,
) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    server = server_factory(settings.replace(autosign=True))
    master_ssl = tmp_path / "master1-ssl"
    master = generate(server.config, "master1.example.com", master_ssl, "puppet,IP:127.0.0.1")
    httpd = start_master(master, master_ssl / "crl.pem", backend.url)
    try:
        agent = agent_factory("agent-before.example.com")
        agent_run(agent, server.port, httpd.port)
        old_bundle = agent.cacert_path.read_bytes()
        assert old_bundle == server.cacert.read_bytes()

        renewed = server.cli("ca", "renew", "--validity", "15y", "--format", "json")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        new_bundle = server.cacert.read_bytes()
        (old,), (new,) = pki.load_certificates(old_bundle), pki.load_certificates(new_bundle)
        assert new.serial_number != old.serial_number and new.subject == old.subject
        assert new.not_valid_after_utc > old.not_valid_after_utc

        # openssl: the agent's and the master's certificates (issued before) verify against
        # the new bundle alone, with the CRL checked.
        verify(agent.cert_path, server.cacert, settings.cadir / "ca_crl.pem")
        verify(master.cert, server.cacert, settings.cadir / "ca_crl.pem")

        # The master trusts the new bundle only; the agent still holds the old ca.pem
        # (Puppet 7 never re-fetches it): both verify the other, the key being the same.
        give_master_the_bundle(httpd, server.cacert, master.cacert)
        agent_run(agent, server.port, httpd.port)
        assert agent.cacert_path.read_bytes() == old_bundle

        # The operator replaces the agent's ca.pem (docs/ca-lifecycle.md): it still runs.
        shutil.copyfile(server.cacert, agent.cacert_path)
        agent_run(agent, server.port, httpd.port)

        # A new agent bootstraps after the renewal: it gets the new bundle, and runs.
        fresh = agent_factory("agent-after.example.com")
        agent_run(fresh, server.port, httpd.port)
        assert fresh.cacert_path.read_bytes() == new_bundle
        verify(fresh.cert_path, server.cacert, settings.cadir / "ca_crl.pem")

        # Revoking the old agent still reaches the master through sync-crl's CRL.
        revoked = server.cli("revoke", "agent-before.example.com")
        assert revoked.returncode == 0, revoked.stderr
        shutil.copyfile(settings.cadir / "ca_crl.pem", master_ssl / "crl.pem")
        before = httpd.generations()
        httpd.graceful()
        httpd.wait_generation(before)
        run = agent.run(
            "agent", "--test",
            *agent.args(server.port, server="127.0.0.1", server_port=httpd.port),
            "--no-report",
            timeout=180,
        )  # fmt: skip
        assert run.returncode not in (0, 2), run.stdout + run.stderr
        wait_until(lambda: "revoked" in httpd.log_text(), "the master logs the revocation")
    finally:
        stop_apache(httpd)
