"""The real Puppet 7 agent against `splitca serve`: bootstrap, manual signing, revocation."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import Agent, openssl_verify, setup_ca

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_bootstrap_with_autosign_gets_a_certificate(settings, server_factory, agent_factory):
    """`puppet ssl bootstrap` against an autosigning splitca ends with a verified certificate."""
    setup_ca(settings)
    server = server_factory(settings.replace(autosign=True))
    agent: Agent = agent_factory("agent-auto.example.com")
    result = agent.bootstrap(server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed SSL initialization" in result.stdout
    assert agent.cert_path.exists() and agent.crl_path.exists()
    # The CA cert the agent saved is byte-identical to ca_crt.pem (ca_fingerprint relies on it).
    assert agent.cacert_path.read_bytes() == server.cacert.read_bytes()
    verify = openssl_verify(agent.cert_path, settings.cadir)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_manual_signing_then_revocation(settings, server_factory, agent_factory):
    """Autosign off: the agent waits; `splitca sign` lets the next bootstrap finish;
    after `splitca revoke` the agent's fresh CRL marks its certificate revoked."""
    setup_ca(settings)
    server = server_factory(settings.replace(autosign=False))
    agent = agent_factory("agent-manual.example.com")
    first = agent.bootstrap(server.port)
    assert first.returncode != 0
    assert (
        "has not been signed yet" in first.stdout + first.stderr
        or "waitforcert" in first.stdout + first.stderr
    )
    assert not agent.cert_path.exists()
    listing = server.cli("list", "--pending")
    assert "agent-manual.example.com" in listing.stdout

    signed = server.cli("sign", "agent-manual.example.com")
    assert signed.returncode == 0, signed.stderr
    second = agent.bootstrap(server.port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert agent.cert_path.exists()

    revoked = server.cli("revoke", "agent-manual.example.com")
    assert revoked.returncode == 0, revoked.stderr
    # Puppet 7 keeps its CRL until it is missing; bootstrap then downloads a fresh one
    # and verifies the existing certificate against it.
    agent.crl_path.unlink()
    again = agent.bootstrap(server.port)
    assert again.returncode != 0
    assert "is revoked" in again.stdout + again.stderr
    out = openssl_verify(agent.cert_path, settings.cadir)
    assert out.returncode != 0 and b"revoked" in out.stdout + out.stderr


def test_agent_with_crl_refresh_interval_picks_up_a_new_crl(
    settings, server_factory, agent_factory
):
    """Puppet 7 re-fetches its CRL only with crl_refresh_interval (what `splitca enroll` sets):
    it sends If-Modified-Since, splitca answers 304 or the new CRL, and the agent installs it."""
    import time

    from cryptography import x509

    from splitca import pki

    setup_ca(settings)
    server = server_factory(settings.replace(autosign=True))
    agent = agent_factory("agent-refresh.example.com")
    assert agent.bootstrap(server.port).returncode == 0
    number = pki.crl_number(x509.load_pem_x509_crl(agent.crl_path.read_bytes()))
    time.sleep(1.5)
    unchanged = agent.bootstrap(server.port, "--crl_refresh_interval", "1s")
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert pki.crl_number(x509.load_pem_x509_crl(agent.crl_path.read_bytes())) == number
    assert '"GET /puppet-ca/v1/certificate_revocation_list/ca" 304' in server.log_text()

    assert server.cli("crl", "refresh", "--force").returncode == 0
    time.sleep(1.5)
    refreshed = agent.bootstrap(server.port, "--crl_refresh_interval", "1s")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    assert pki.crl_number(x509.load_pem_x509_crl(agent.crl_path.read_bytes())) == number + 1


def test_bootstrap_against_an_ec_server_identity(settings, server_factory, agent_factory):
    """With ``server_key_type: ec`` (an RSA CA, an EC TLS key for the CA server) a real
    Puppet 7 agent still bootstraps: Ruby's OpenSSL verifies the EC server certificate
    under the RSA CA and the agent's own certificate is RSA, as before."""
    ec_settings = settings.replace(server_key_type="ec")
    setup_ca(ec_settings)
    server = server_factory(ec_settings.replace(autosign=True))
    served = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", server.port)).encode()
    )
    assert isinstance(served.public_key(), ec.EllipticCurvePublicKey)
    agent: Agent = agent_factory("agent-ec-server.example.com")
    result = agent.bootstrap(server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed SSL initialization" in result.stdout
    verify = openssl_verify(agent.cert_path, settings.cadir)
    assert verify.returncode == 0, verify.stdout + verify.stderr
