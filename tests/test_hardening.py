"""Attacks and races found in review, each pinned: look-alike CAs, racing CSRs, reserved
names, weak curves, absurd numbers and nesting, a misconfigured autosign (clean racing a
signing is in test_revocation.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.errors import PolicyViolation
from splitca.http.routes_ca import App
from splitca.http.wsgiapp import make_app
from splitca.store.files.cadir import parse_inventory

from .conftest import fast_key, make_csr, setup_ca, write_config, wsgi_call

V1 = "/puppet-ca/v1"


def lookalike_admin(ca: CertificateAuthority) -> x509.Certificate:
    """A pp_cli_auth certificate from a CA with *our* CA's name but another key, as a sibling
    intermediate under a shared root (or any CA the TLS layer was made to trust) would issue."""
    ours = x509.load_pem_x509_certificate(ca.ca_certificate_pem())
    key = fast_key()
    other = pki.build_ca_certificate(
        key,
        pki.first_cn(ours.subject) or "",
        now=dt.datetime.now(dt.UTC),
        ttl=dt.timedelta(days=30),
    )
    assert other.subject == ours.subject
    leaf_key = fast_key()
    return pki.build_leaf_certificate(
        ca_key=key,
        ca_cert=other,
        public_key=leaf_key.public_key(),
        certname="evil.example.com",
        serial=999,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        extensions=(pki.cli_auth_extension(),),
    )


def test_certificate_from_a_lookalike_or_sibling_ca_is_not_an_admin(
    app: App, ca: CertificateAuthority
) -> None:
    evil = lookalike_admin(ca)
    assert pki.has_cli_auth(evil)
    for method, path, body in (
        ("GET", f"{V1}/certificate_statuses/all", b""),
        ("PUT", f"{V1}/clean", b'{"certnames":["ca.test"]}'),
        ("PUT", f"{V1}/splitca/registrations/pwn.example.com", b"{}"),
    ):
        r = wsgi_call(app, method, path, body, client=evil)  # as if TLS had verified it
        assert r.status == 403, (path, r.status, r.text)
    assert ca.state_of("ca.test") == "signed"


def test_racing_csrs_for_one_name_sign_exactly_one(settings) -> None:
    """Eight different keys PUT the same name at once with autosign on: one certificate, not eight."""
    setup_ca(settings)
    ca = open_ca(settings.replace(autosign=True))
    app = make_app(ca=ca)
    bodies = [pki.pem(make_csr("race.example.com")) for _ in range(8)]
    statuses: list[int] = []
    start = threading.Barrier(8)

    def put(body: bytes) -> None:
        start.wait()
        statuses.append(
            wsgi_call(app, "PUT", f"{V1}/certificate_request/race.example.com", body).status
        )

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200] + [400] * 7
    issued = [
        ln
        for ln in parse_inventory(ca.store.cadir.inventory.read_bytes())
        if ln.certname == "race.example.com"
    ]
    assert len(issued) == 1


def test_admin_and_ca_names_are_never_autosigned(settings) -> None:
    setup_ca(settings)
    ca = open_ca(settings.replace(autosign=True, admin_certnames=("ops1",)))
    ca.clean(["ca.test"])  # even a cleaned CA name cannot be claimed by whoever asks first
    for name in ("ops1", "ca.test"):
        result = ca.submit_csr(name, pki.pem(make_csr(name)))
        assert not result.signed and "reserved name" in result.reason
        assert ca.state_of(name) == "requested"
    assert ca.submit_csr("ordinary", pki.pem(make_csr("ordinary"))).signed


@pytest.mark.parametrize("curve", [ec.SECP192R1(), ec.SECP256K1()], ids=["P-192", "secp256k1"])
def test_weak_or_unusual_curves_are_refused(
    ca: CertificateAuthority, curve: ec.EllipticCurve
) -> None:
    key = ec.generate_private_key(curve)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "curvy")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(PolicyViolation, match="use P-256, P-384 or P-521"):
        ca.submit_csr("curvy", pki.pem(csr))


def test_p384_keys_are_fine(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    assert (
        ca.submit_csr("p384", pki.pem(make_csr("p384", key=key))).serial is None
    )  # stored, pending


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            f"{V1}/certificate_status/huge",
            b'{"desired_state":"signed","cert_ttl":100000000000000000000}',
        ),
        (f"{V1}/clean", b"[" * 100_000 + b"]" * 100_000),
        (f"{V1}/sign", b'{"certnames":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        (f"{V1}/splitca/registrations/deep.example.com", b"[" * 50_000 + b"]" * 50_000),
    ],
    ids=["huge-cert-ttl", "nested-clean", "nested-sign", "nested-registration"],
)
def test_absurd_numbers_and_nesting_are_4xx_not_500(settings, path: str, body: bytes) -> None:
    setup_ca(settings)
    ca = open_ca(settings.replace(max_body_bytes=16 * 1024 * 1024))
    ca.submit_csr("huge", pki.pem(make_csr("huge")))
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    method = "POST" if path.endswith("/sign") else "PUT"
    r = wsgi_call(make_app(ca=ca), method, path, body, client=admin)
    assert 400 <= r.status < 500, (r.status, r.text)
    assert "Traceback" not in r.text


def test_misconfigured_autosign_fails_at_start_not_on_every_csr(settings, tmp_path: Path) -> None:
    setup_ca(settings)
    bad = settings.replace(autosign=str(tmp_path))  # a directory is neither allowlist nor program
    r = wsgi_call(
        make_app(ca=open_ca(bad, autosign_at_start=False)),
        "PUT",
        f"{V1}/certificate_request/a1",
        pki.pem(make_csr("a1")),
    )
    assert r.status == 503 and "is a directory" in r.text  # the server's fault, said plainly
    cfg = write_config(tmp_path / "bad.yaml", bad)
    proc = subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(cfg), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_enroll_user_data_makes_puppet7_agents_refresh_their_crl(settings) -> None:
    """Puppet 7 never re-fetches its CRL by default; enroll's puppet.conf makes it, before expiry."""
    from splitca.enrollment.enroll import agent_crl_refresh_seconds, cloud_config

    seconds = agent_crl_refresh_seconds(settings.crl_ttl, settings.effective_crl_refresh_margin)
    assert 60 <= seconds <= settings.effective_crl_refresh_margin.total_seconds() / 2
    doc = cloud_config(
        certname="n1",
        token="t",
        ca_cert_pem="x",
        server="m",
        server_port=8140,
        ca_server="c",
        ca_port=8140,
        crl_refresh_seconds=seconds,
    )
    assert doc["puppet"]["conf"]["main"]["crl_refresh_interval"] == f"{seconds}s"
    assert json.dumps(doc)  # plain data, ready for YAML
