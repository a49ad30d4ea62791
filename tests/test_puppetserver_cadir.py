"""A CA directory written by puppetserver 7.9.5 is served unchanged and answered like puppetserver.

The fixture (../shared/fixtures/puppetserver-7.9.5-cadir) holds puppetserver's own files and
what puppetserver's API answered about them; these tests compare splitca's answers with those.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography import x509

from splitca import compose, pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.http.wsgiapp import make_app
from splitca.store.files.cadir import parse_serial

from .conftest import (
    copy_fixture_cadir,
    make_csr,
    openssl,
    require_fixture_cadir,
    snapshot,
    wsgi_call,
)

V1 = "/puppet-ca/v1"
STATUS_NAMES = [
    "agent1",
    "big-0",
    "big-1",
    "big-2",
    "big-9000",
    "big-9001",
    "ps2-0",
    "ps2-1",
    "ps2-2",
    "pending-san.example.com",
]


@pytest.fixture
def fixture_ca(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    cadir = copy_fixture_cadir(tmp_path / "ca")
    settings = Settings.from_mapping(
        {"cadir": str(cadir), "certname": "localhost", "key_size": 2048}
    )
    # `setup` on an existing CA changes nothing (see test_files_truth.py for every byte).
    before = snapshot(cadir)
    result = compose.setup_ca(settings)
    assert not result.created
    assert snapshot(cadir) == before
    return open_ca(settings), cadir


def admin_of(cadir: Path) -> x509.Certificate:
    """puppetserver's own host certificate: it carries pp_cli_auth."""
    return x509.load_pem_x509_certificate((cadir / "signed" / "localhost.pem").read_bytes())


def expected(name: str) -> str:
    return (require_fixture_cadir() / "expected-status" / name).read_text()


def test_reading_does_not_change_a_single_byte(tmp_path: Path) -> None:
    """Opening, indexing and answering reads leaves puppetserver's files exactly as they were."""
    cadir = copy_fixture_cadir(tmp_path / "ca")
    before = snapshot(cadir)
    settings = Settings.from_mapping({"cadir": str(cadir), "certname": "localhost"})
    ca = open_ca(settings)
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate((cadir / "signed" / "localhost.pem").read_bytes())
    for path in [
        f"{V1}/certificate/ca",
        f"{V1}/certificate/agent1",
        f"{V1}/certificate_revocation_list/ca",
        f"{V1}/certificate_request/pending-san.example.com",
        f"{V1}/certificate_statuses/all",
    ]:
        assert wsgi_call(app, "GET", path, client=admin).status == 200
    assert snapshot(cadir) == before


@pytest.mark.parametrize("name", STATUS_NAMES)
def test_certificate_status_matches_puppetserver(fixture_ca, name: str) -> None:
    ca, cadir = fixture_ca
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate((cadir / "signed" / "localhost.pem").read_bytes())
    r = wsgi_call(app, "GET", f"{V1}/certificate_status/{name}", client=admin)
    assert r.status == 200
    assert json.loads(r.body) == json.loads(expected(f"{name}.json"))


def test_localhost_status_before_setup(tmp_path: Path) -> None:
    """The CA host's own cert (pp_cli_auth) as puppetserver left it; splitca never replaces it."""
    cadir = copy_fixture_cadir(tmp_path / "ca")
    ca = open_ca(Settings.from_mapping({"cadir": str(cadir), "certname": "localhost"}))
    assert ca.status("localhost").as_dict() == json.loads(expected("localhost.json"))  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["big-5000", "no-such-node"])
def test_missing_and_cleaned_nodes_404_like_puppetserver(fixture_ca, name: str) -> None:
    ca, cadir = fixture_ca
    admin = admin_of(cadir)
    r = wsgi_call(make_app(ca=ca), "GET", f"{V1}/certificate_status/{name}", client=admin)
    assert (r.status, r.text) == (404, expected(f"{name}.json").strip())


def test_statuses_requested_matches_puppetserver(fixture_ca) -> None:
    ca, cadir = fixture_ca
    admin = admin_of(cadir)
    r = wsgi_call(
        make_app(ca=ca),
        "GET",
        f"{V1}/certificate_statuses/any",
        client=admin,
        query="state=requested",
    )
    assert json.loads(r.body) == json.loads(expected("_statuses_requested.json"))


@pytest.mark.parametrize(
    "endpoint",
    [
        "certificate/agent1",
        "certificate/no-such-node",
        "certificate_request/pending-san.example.com",
        "certificate_request/no-such-node",
        "expirations",
    ],
)
def test_raw_responses_match_puppetserver(fixture_ca, endpoint: str) -> None:
    ca, cadir = fixture_ca
    admin = admin_of(cadir)
    r = wsgi_call(make_app(ca=ca), "GET", f"{V1}/{endpoint}", client=admin)
    stem = "_" + endpoint.replace("/", "_")
    head = expected(f"{stem}.headers")
    status = int(head.split()[1])
    ctype = re.search(r"^Content-Type: (.*)$", head, re.M).group(1).strip()  # type: ignore[union-attr]
    assert r.status == status
    assert r.headers["Content-Type"] == ctype
    assert r.headers["X-Puppet-Version"] == "7.23.0"
    if endpoint == "expirations":
        assert json.loads(r.body) == json.loads(expected(f"{stem}.body"))
    else:
        assert r.text == expected(f"{stem}.body")


def test_signing_and_revoking_keep_puppetserver_formats(fixture_ca) -> None:
    """After splitca signs and revokes, the files are still what puppetserver writes and reads."""
    ca, cadir = fixture_ca
    serial_before = parse_serial((cadir / "serial").read_bytes())
    ca.submit_csr("newnode", pki.pem(make_csr("newnode")))
    cert = ca.sign("newnode")
    assert cert.serial_number >= serial_before
    serial_text = (cadir / "serial").read_text()
    assert re.fullmatch(r"[0-9A-F]{4,}", serial_text)  # %04X, no newline
    last = (cadir / "inventory.txt").read_text().splitlines()[-1]
    assert re.fullmatch(rf"0x{cert.serial_number:04X} \S+UTC \S+UTC /CN=newnode", last)
    number_before = pki.crl_number(x509.load_pem_x509_crl((cadir / "ca_crl.pem").read_bytes()))
    ca.revoke(["newnode", "agent1"])
    crl = x509.load_pem_x509_crl((cadir / "ca_crl.pem").read_bytes())
    assert pki.crl_number(crl) == number_before + 1
    serials = {r.serial_number for r in crl}
    assert {cert.serial_number, 3} <= serials
    assert len(serials) == 7002  # puppetserver's 7000 entries kept, 2 added
    out = openssl(
        "crl",
        "-in",
        str(cadir / "ca_crl.pem"),
        "-noout",
        "-verify",
        "-CAfile",
        str(cadir / "ca_crt.pem"),
    )
    assert out.returncode == 0
    assert ca.state_of("agent1") == "revoked" and ca.state_of("big-9000") == "signed"
    # revoke-by-name also finds serials of cleaned nodes through the inventory
    found, _ = ca.revoke(["big-6000"])
    assert found["big-6000"]


def test_pending_csr_from_puppetserver_can_be_signed_with_alt_names_override(fixture_ca) -> None:
    """puppetserver left pending-san.example.com pending (alt names not allowed); an operator can
    sign it on purpose with --allow-dns-alt-names."""
    ca, _ = fixture_ca
    from splitca.errors import PolicyViolation

    with pytest.raises(PolicyViolation, match="contains extra subject alternative names"):
        ca.sign("pending-san.example.com")
    cert = ca.sign("pending-san.example.com", allow_alt_names=True)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "extra.example.com",
        "pending-san.example.com",
        "puppet",
    }
