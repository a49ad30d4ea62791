"""Certificates and CRLs follow puppetserver's profiles and pass `openssl verify -crl_check`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from splitca import compose, pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.http.server import build_ssl_context

from .conftest import make_settings, openssl, openssl_verify, signed

PP_ROLE = "1.3.6.1.4.1.34380.1.1.13"
FIXED = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_ca_certificate_profile(ca: CertificateAuthority) -> None:
    """Self-signed, CN 'Puppet CA: <certname>', critical CA:TRUE and keyCertSign/cRLSign, SKI = AKI."""
    cert = x509.load_pem_x509_certificate(ca.ca_certificate_pem())
    assert cert.subject == cert.issuer
    assert pki.first_cn(cert.subject) == "Puppet CA: ca.test"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert (
        ku.critical
        and ku.value.key_cert_sign
        and ku.value.crl_sign
        and not ku.value.digital_signature
    )
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert ski == aki
    assert cert.extensions.get_extension_for_oid(pki.NETSCAPE_COMMENT)


def test_agent_certificate_profile(tmp_path: Path) -> None:
    """Serial from the serial file, notBefore backdated a day, SAN with DNS:<certname>, critical
    CA:FALSE/EKU/KU, SKI/AKI, Netscape comment, requested pp_* extensions copied."""
    settings = make_settings(tmp_path)
    compose.setup_ca(settings, clock=lambda: FIXED)
    ca = open_ca(settings, clock=lambda: FIXED)
    serial_before = ca.store.cadir.read_serial()
    cert = signed(ca, "web01.example.com", extensions=[(PP_ROLE, "webserver")])
    assert cert.serial_number == serial_before
    assert ca.store.cadir.read_serial() == serial_before + 1
    assert cert.not_valid_before_utc == FIXED - dt.timedelta(days=1)
    assert pki.first_cn(cert.subject) == "web01.example.com"
    exts = {e.oid: e for e in cert.extensions}
    san = exts[ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    assert not san.critical and san.value.get_values_for_type(x509.DNSName) == ["web01.example.com"]
    assert (
        exts[ExtensionOID.BASIC_CONSTRAINTS].critical
        and not exts[ExtensionOID.BASIC_CONSTRAINTS].value.ca
    )
    eku = exts[ExtensionOID.EXTENDED_KEY_USAGE]
    assert eku.critical and set(eku.value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    ku = exts[ExtensionOID.KEY_USAGE]
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    ca_cert = x509.load_pem_x509_certificate(ca.ca_certificate_pem())
    assert exts[
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER
    ].value.key_identifier == pki.ca_key_identifier(ca_cert)
    assert exts[
        ExtensionOID.SUBJECT_KEY_IDENTIFIER
    ].value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert (
        pki.extension_value_text(exts[pki.NETSCAPE_COMMENT]) == "Puppet Server Internal Certificate"
    )
    assert pki.extension_value_text(exts[x509.ObjectIdentifier(PP_ROLE)]) == "webserver"
    # puppetserver's order: non-critical extensions first, then the critical ones.
    crit = [e.critical for e in cert.extensions]
    assert crit == sorted(crit)
    # Inventory line in puppetserver's format.
    line = ca.store.cadir.inventory.read_text().splitlines()[-1]
    assert (
        line
        == f"0x{cert.serial_number:04X} 2026-05-31T12:00:00UTC {pki.puppet_time(cert.not_valid_after_utc)} /CN=web01.example.com"
    )


def test_every_certificate_and_crl_verifies_with_openssl(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """openssl verify -crl_check accepts issued certs, rejects revoked ones; openssl crl -verify accepts the CRL."""
    good = signed(ca, "good.example.com")
    bad = signed(ca, "bad.example.com")
    ca.revoke(["bad.example.com"])
    cacert = ca.store.cadir.cacert
    crl = ca.store.cadir.cacrl
    for cert, ok in ((good, True), (bad, False)):
        path = tmp_path / "leaf.pem"
        path.write_bytes(pki.pem(cert))
        out = openssl(
            "verify", "-crl_check", "-CAfile", str(cacert), "-CRLfile", str(crl), str(path)
        )
        assert (out.returncode == 0) is ok, out.stdout + out.stderr
        if not ok:
            assert b"certificate revoked" in out.stdout + out.stderr
    server = ca.settings.effective_server_cert
    out = openssl("verify", "-crl_check", "-CAfile", str(cacert), "-CRLfile", str(crl), str(server))
    assert out.returncode == 0, out.stdout + out.stderr
    out = openssl("crl", "-in", str(crl), "-noout", "-verify", "-CAfile", str(cacert))
    assert out.returncode == 0 and b"verify OK" in out.stdout + out.stderr
    text = openssl("crl", "-in", str(crl), "-noout", "-text").stdout.decode()
    assert (
        "Version 2" in text
        and "X509v3 CRL Number" in text
        and "X509v3 Authority Key Identifier" in text
    )
    hexserial = f"{bad.serial_number:X}"
    assert f"Serial Number: {hexserial.zfill(len(hexserial) + len(hexserial) % 2)}" in text
    assert "Key Compromise" in text


def test_crl_next_update_is_short_and_refresh_keeps_it_fresh(tmp_path: Path) -> None:
    """nextUpdate follows crl_ttl (days, not puppetserver's 5 years); refresh re-issues within the margin
    and prunes entries of expired certificates."""
    now = [FIXED]
    settings = make_settings(tmp_path, crl_ttl="7d", cert_ttl="10d")
    compose.setup_ca(settings, clock=lambda: now[0])
    ca = open_ca(settings, clock=lambda: now[0])
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.next_update_utc == FIXED + dt.timedelta(days=7)
    signed(ca, "short-lived")
    ca.revoke(["short-lived"])
    assert not ca.refresh_crl()  # fresh: nothing to do
    now[0] = FIXED + dt.timedelta(days=4)  # inside the default margin (half of 7 days)
    assert ca.refresh_crl()
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.next_update_utc == now[0] + dt.timedelta(days=7)
    assert len(list(crl)) == 1
    now[0] = FIXED + dt.timedelta(days=30)  # the revoked cert has expired: its entry is pruned
    assert ca.refresh_crl()
    assert list(x509.load_pem_x509_crl(ca.crl_pem())) == []


@pytest.mark.parametrize(("key_type", "curve"), [("ec", "P-256"), ("ec", "P-384")])
def test_ec_ca_signs_verifiable_certificates(tmp_path: Path, key_type: str, curve: str) -> None:
    """An EC CA (an option; RSA 4096 is the default) issues certs and CRLs openssl accepts."""
    settings = Settings.from_mapping(
        {
            "cadir": str(tmp_path / "ca"),
            "certname": "ca.test",
            "key_type": key_type,
            "ec_curve": curve,
        }
    )
    compose.setup_ca(settings)
    ca = open_ca(settings)
    cert = signed(ca, "ec-agent")
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.pem(cert))
    out = openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(ca.store.cadir.cacert),
        "-CRLfile",
        str(ca.store.cadir.cacrl),
        str(path),
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("settings_", "expected"),
    [
        ({"key_size": 2048}, ("rsa", 2048)),
        ({"key_type": "ec", "ec_curve": "P-256"}, ("ec", 256)),
        ({"key_type": "ec", "ec_curve": "P-384"}, ("ec", 384)),
    ],
    ids=["rsa-2048", "ec-p256", "ec-p384"],
)
def test_setup_gives_the_server_identity_the_configured_key(
    tmp_path: Path, settings_: dict[str, object], expected: tuple[str, int]
) -> None:
    """The CA server's TLS key follows key_type/key_size/ec_curve, like the CA key (it was
    always RSA-4096)."""
    settings = make_settings(tmp_path, **settings_)
    compose.setup_ca(settings)
    cert = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    key = pki.load_private_key(settings.effective_server_key.read_bytes())
    ca_key = pki.load_private_key((settings.cadir / "ca_key.pem").read_bytes())
    for k in (cert.public_key(), key.public_key(), ca_key.public_key()):
        kind = "ec" if isinstance(k, ec.EllipticCurvePublicKey) else "rsa"
        assert isinstance(k, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        assert (
            kind,
            k.curve.key_size if isinstance(k, ec.EllipticCurvePublicKey) else k.key_size,
        ) == expected
    assert pki.public_key_pem(cert.public_key()) == pki.public_key_pem(key.public_key())
    build_ssl_context(settings)  # splitca serve can use it


def test_server_key_type_gives_an_ec_server_identity_under_an_rsa_ca(tmp_path: Path) -> None:
    """``server_key_type: ec`` makes the CA server's TLS key EC (cheap handshakes for new
    agents) while the CA key stays RSA; the server certificate verifies under the CA."""
    settings = make_settings(tmp_path, server_key_type="ec")
    compose.setup_ca(settings)
    ca_key = pki.load_private_key((settings.cadir / "ca_key.pem").read_bytes())
    key = pki.load_private_key(settings.effective_server_key.read_bytes())
    cert = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    assert isinstance(ca_key, rsa.RSAPrivateKey) and ca_key.key_size == 2048
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.public_key_pem(cert.public_key()) == pki.public_key_pem(key.public_key())
    out = openssl_verify(settings.effective_server_cert, settings.cadir)
    assert out.returncode == 0, out.stdout + out.stderr
    build_ssl_context(settings)  # splitca serve can use it
