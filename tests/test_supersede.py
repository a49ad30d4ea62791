"""Supersede: a CSR with a fresh registration token replaces the name's certificate, revoking it first."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
import yaml
from cryptography import x509

from splitca import pki
from splitca.compose import open_ca, open_registry
from splitca.config import Settings
from splitca.enrollment.enroll import register
from splitca.enrollment.registry import Classification
from splitca.errors import PolicyViolation

from .conftest import Agent, Server, make_csr, setup_ca

NAME = "web1.example.com"
CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"


@pytest.fixture
def s(settings: Settings) -> Settings:
    s = settings.replace(autosign="registry")
    setup_ca(s)
    return s


def token_for(s: Settings, name: str = NAME) -> str:
    _, token = register(
        open_registry(s), name, Classification(()), ttl=dt.timedelta(hours=1), replace=True
    )
    return token


def crl_entries(s: Settings) -> dict[int, x509.RevokedCertificate]:
    crl = x509.load_pem_x509_crl(
        pki.split_pem((s.cadir / "ca_crl.pem").read_bytes(), "X509 CRL")[0]
    )
    return {e.serial_number: e for e in crl}


def test_a_fresh_token_replaces_the_certificate_and_revokes_the_old_one(s: Settings) -> None:
    ca = open_ca(s)
    first = ca.submit_csr(NAME, pki.pem(make_csr(NAME, password=token_for(s))))
    assert first.signed and first.serial is not None

    # Without a token, or with a wrong one, the duplicate rule stands.
    with pytest.raises(PolicyViolation) as plain:
        ca.submit_csr(NAME, pki.pem(make_csr(NAME)))
    assert plain.value.kind == "duplicate-cert"
    assert "cannot replace" not in str(plain.value)
    with pytest.raises(PolicyViolation) as wrong:
        ca.submit_csr(NAME, pki.pem(make_csr(NAME, password="f" * 64)))
    assert wrong.value.kind == "duplicate-cert"
    assert "its challengePassword cannot replace it" in str(wrong.value)
    assert ca.status(NAME).serial == first.serial  # type: ignore[union-attr]

    # The rebuilt machine: a new key and a fresh registration token.
    token = token_for(s)
    second = ca.submit_csr(NAME, pki.pem(make_csr(NAME, password=token)))
    assert second.signed and second.serial not in (None, first.serial)
    assert "superseded serial" in second.reason
    row = ca.status(NAME)
    assert row is not None and row.state == "signed" and row.serial == second.serial
    revoked = crl_entries(s)
    assert first.serial in revoked and second.serial not in revoked
    assert (
        revoked[first.serial].extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.superseded
    )

    # The token is spent: replaying it changes nothing.
    with pytest.raises(PolicyViolation, match="already has a signed certificate"):
        ca.submit_csr(NAME, pki.pem(make_csr(NAME, password=token)))
    assert ca.status(NAME).serial == second.serial  # type: ignore[union-attr]

    audit = [json.loads(x) for x in s.effective_audit_log.read_text().splitlines()]
    revoke = [e for e in audit if e["event"] == "revoke"]
    assert revoke[-1]["reason"] == "superseded" and revoke[-1]["serials"] == [first.serial]
    crl_at = max(i for i, e in enumerate(audit) if e["event"] == "crl-published")
    sign_at = max(i for i, e in enumerate(audit) if e["event"] == "sign")
    assert crl_at < sign_at  # the CRL was in effect before the new certificate existed


def test_only_a_registration_token_supersedes(settings: Settings) -> None:
    s = settings.replace(autosign=True)
    setup_ca(s)
    ca = open_ca(s)
    assert ca.submit_csr(NAME, pki.pem(make_csr(NAME))).signed
    with pytest.raises(PolicyViolation) as exc:
        ca.submit_csr(NAME, pki.pem(make_csr(NAME, password="anything")))
    assert "only a registration token (autosign: registry)" in str(exc.value)


def test_a_real_puppet_agent_rebuilt_with_a_fresh_token_gets_a_new_certificate(
    s: Settings,
    server_factory: Callable[..., Server],
    agent_factory: Callable[[str], Agent],
) -> None:
    server = server_factory(s)

    def bootstrap(agent: Agent, token: str) -> None:
        (agent.confdir / "csr_attributes.yaml").write_text(
            yaml.safe_dump({"custom_attributes": {CHALLENGE_PASSWORD: token}})
        )
        res = agent.bootstrap(server.port)
        assert res.returncode == 0, res.stdout + res.stderr

    old = agent_factory(NAME)
    bootstrap(old, token_for(s))
    old_serial = x509.load_pem_x509_certificate(old.cert_path.read_bytes()).serial_number

    rebuilt = agent_factory(NAME)
    rebuilt.root = rebuilt.root.with_name(rebuilt.root.name + "-rebuilt")  # a fresh ssldir
    for sub in ("conf", "var", "ssl", "log", "run", "code"):
        (rebuilt.root / sub).mkdir(parents=True)
    again = rebuilt.bootstrap(server.port)  # no token: refused, as today
    assert again.returncode != 0 and not rebuilt.cert_path.exists()
    bootstrap(rebuilt, token_for(s))
    new = x509.load_pem_x509_certificate(rebuilt.cert_path.read_bytes())
    assert new.serial_number != old_serial
    assert old_serial in crl_entries(s) and new.serial_number not in crl_entries(s)
    status = server.cli("status", NAME, "--format", "json")
    assert json.loads(status.stdout)["serial_number"] == new.serial_number


def test_a_revoked_certificate_is_superseded_too_but_a_pending_csr_is_not(s: Settings) -> None:
    ca = open_ca(s)
    first = ca.submit_csr(NAME, pki.pem(make_csr(NAME, password=token_for(s))))
    ca.revoke([NAME])
    again = ca.submit_csr(NAME, pki.pem(make_csr(NAME, password=token_for(s))))
    assert again.signed and ca.status(NAME).serial == again.serial  # type: ignore[union-attr]
    assert first.serial in crl_entries(s)

    other = "pending.example.com"
    assert not ca.submit_csr(other, pki.pem(make_csr(other))).signed  # no token: pending
    with pytest.raises(PolicyViolation, match="already has a requested certificate"):
        ca.submit_csr(other, pki.pem(make_csr(other, password=token_for(s, other))))


def test_a_token_never_replaces_a_certificate_a_human_issued_beyond_autosign(s: Settings) -> None:
    """Whoever can write the registry can enroll machines, not take over the CA's other
    identities: a certificate with more than autosign could have issued (a compile
    master's dns_alt_names, an admin client's pp_cli_auth) is not superseded by a token.
    The CSR is refused as a duplicate saying why, nothing is revoked, the token is unspent."""
    ca = open_ca(s)
    master = "compile1.example.com"
    _, master_cert = ca.generate(
        master, alt_names=[x509.DNSName("puppet"), x509.DNSName("puppet.example.com")]
    )
    client = "provisioner.example.com"
    _, client_cert = ca.generate(client, ca_client=True)
    for name, cert in ((master, master_cert), (client, client_cert)):
        token = token_for(s, name)
        with pytest.raises(PolicyViolation) as exc:
            ca.submit_csr(name, pki.pem(make_csr(name, password=token)))
        assert exc.value.kind == "duplicate-cert"
        assert "splitca clean" in str(exc.value), exc.value
        row = ca.status(name)
        assert row is not None and row.state == "signed" and row.serial == cert.serial_number
        assert cert.serial_number not in crl_entries(s)
        record = open_registry(s).get(name)
        assert record is not None and record.redeemed is None
    # A new token enrolls the name once a human has cleaned it.
    ca.clean([master])
    assert ca.submit_csr(master, pki.pem(make_csr(master, password=token_for(s, master)))).signed
