"""Puppet's CA HTTP API as puppetserver answers it: methods, status codes, bodies, content types, auth."""

from __future__ import annotations

import email.utils
import json
import os
import time
from pathlib import Path

import pytest
from cryptography import x509

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.http import wsgiapp as splitca_wsgi
from splitca.http.routes_ca import App
from splitca.http.wsgiapp import make_app

from .conftest import (
    fast_key,
    make_csr,
    make_settings,
    setup_ca,
    signed,
    write_config,
    wsgi_call,
)

V1 = "/puppet-ca/v1"


def put_csr(app: App, name: str, **kw: object) -> tuple[int, str]:
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_request/{name}",
        pki.pem(make_csr(name, **kw)),  # type: ignore[arg-type]
        headers={"Content-Type": "text/plain"},
    )
    return r.status, r.text


# --- every response --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/puppet-ca/v1/certificate/ca"),
        ("GET", "/puppet-ca/v1/nope"),
        ("GET", "/elsewhere"),
        ("PUT", "/puppet-ca/v1/certificate_request/x"),
        ("GET", "/puppet-ca/v1/certificate_statuses/all"),
    ],
)
def test_every_response_carries_x_puppet_version_and_a_content_type(
    app: App, method: str, path: str
) -> None:
    r = wsgi_call(app, method, path, b"garbage" if method == "PUT" else b"")
    assert r.headers["X-Puppet-Version"] == "7.23.0"
    assert "Content-Type" in r.headers


def test_unknown_paths_are_404_not_found(app: App) -> None:
    r = wsgi_call(app, "GET", f"{V1}/certificate")
    assert (r.status, r.text) == (404, "Not Found")
    r = wsgi_call(app, "GET", f"{V1}/bogus/thing")
    assert (r.status, r.text) == (404, "Not Found")


def test_status_simple_answers_running_like_puppetserver(app: App) -> None:
    """`puppetserver ca` asks GET /status/v1/simple/ca, without a client certificate, whether
    the CA runs; only the body "running" stops it from writing into the cadir offline."""
    for path in ("/status/v1/simple", "/status/v1/simple/", "/status/v1/simple/ca"):
        r = wsgi_call(app, "GET", path)
        assert (r.status, r.text) == (200, "running"), path
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert wsgi_call(app, "HEAD", "/status/v1/simple/ca").status == 200
    r = wsgi_call(app, "GET", "/status/v1/simple/master")  # a compiler service: not here
    assert (r.status, r.text) == (404, "not found: master")
    assert wsgi_call(app, "POST", "/status/v1/simple").status == 405
    assert wsgi_call(app, "GET", "/status/v1/services").status == 404
    # The API prefixes end at a "/": no route answers under a longer first segment.
    assert wsgi_call(app, "GET", "/status/v1simple").status == 404
    assert wsgi_call(app, "GET", f"{V1}x/certificate/ca").status == 404


def test_wrong_method_is_405_with_allow(app: App) -> None:
    r = wsgi_call(app, "POST", f"{V1}/certificate/ca")
    assert r.status == 405 and "GET" in r.headers["Allow"]


# --- certificate and CRL --------------------------------------------------------------------


def test_ca_certificate_is_served_byte_for_byte(app: App, ca: CertificateAuthority) -> None:
    r = wsgi_call(app, "GET", f"{V1}/certificate/ca", headers={"Accept": "text/plain"})
    assert r.status == 200 and r.headers["Content-Type"] == "text/plain"
    assert r.body == ca.store.cadir.cacert.read_bytes()


def test_certificate_404_then_200_once_signed(app: App, ca: CertificateAuthority) -> None:
    r = wsgi_call(app, "GET", f"{V1}/certificate/agent1")
    assert (r.status, r.text, r.headers["Content-Type"]) == (
        404,
        "Could not find certificate agent1",
        "text/plain",
    )
    signed(ca, "agent1")
    r = wsgi_call(app, "GET", f"{V1}/certificate/agent1")
    assert r.status == 200 and r.body == ca.store.cadir.cert_path("agent1").read_bytes()


@pytest.mark.parametrize("path", [f"{V1}/certificate/ca", f"{V1}/certificate_revocation_list/ca"])
def test_if_modified_since_gives_304(app: App, ca: CertificateAuthority, path: str) -> None:
    target = ca.store.cadir.cacert if "certificate/ca" in path else ca.store.cadir.cacrl
    old = time.time() - 3600
    os.utime(target, (old, old))
    later = email.utils.formatdate(old + 60, usegmt=True)
    r = wsgi_call(app, "GET", path, headers={"If-Modified-Since": later})
    assert r.status == 304 and r.body == b""
    earlier = email.utils.formatdate(old - 60, usegmt=True)
    assert wsgi_call(app, "GET", path, headers={"If-Modified-Since": earlier}).status == 200
    assert wsgi_call(app, "GET", path, headers={"If-Modified-Since": "not a date"}).status == 200


def test_a_change_in_the_same_second_as_if_modified_since_is_not_hidden(
    app: App, ca: CertificateAuthority
) -> None:
    """The header has 1 s resolution: a CRL re-issued in the second an agent fetched is sent again."""
    base = int(time.time()) - 100
    os.utime(ca.store.cadir.cacrl, (base + 0.7, base + 0.7))  # re-issued at base+0.7 ...
    same_second = email.utils.formatdate(base + 0.2, usegmt=True)  # ... after a fetch at base+0.2
    r = wsgi_call(
        app,
        "GET",
        f"{V1}/certificate_revocation_list/ca",
        headers={"If-Modified-Since": same_second},
    )
    assert r.status == 200 and r.body == ca.store.cadir.cacrl.read_bytes()
    next_second = email.utils.formatdate(base + 1.1, usegmt=True)
    r = wsgi_call(
        app,
        "GET",
        f"{V1}/certificate_revocation_list/ca",
        headers={"If-Modified-Since": next_second},
    )
    assert r.status == 304


@pytest.mark.parametrize("path", [f"{V1}/certificate/ca", f"{V1}/certificate_revocation_list/ca"])
def test_last_modified_is_formatted_once_per_change_of_the_file(
    app: App, ca: CertificateAuthority, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last-Modified is the file's mtime as formatdate writes it, formatted once per mtime,
    not per GET; once the file changes, the header is its new mtime's."""
    target = ca.store.cadir.cacert if "certificate/ca" in path else ca.store.cadir.cacrl
    real = email.utils.formatdate
    calls: list[float] = []

    def counting(when: float, **kw: bool) -> str:
        calls.append(when)
        return real(when, **kw)

    monkeypatch.setattr(email.utils, "formatdate", counting)
    first = time.time() - 5 * 86400 + 0.123  # mtimes no other test gives a file
    for stamp in (first, first + 3600.25):
        os.utime(target, (stamp, stamp))
        mtime = target.stat().st_mtime
        headers = [wsgi_call(app, "GET", path).headers["Last-Modified"] for _ in range(3)]
        assert headers == [real(mtime, usegmt=True)] * 3
    assert len(calls) == 2  # one per modification time
    r = wsgi_call(app, "GET", path, headers={"If-Modified-Since": real(mtime + 1, usegmt=True)})
    assert r.status == 304


def test_crl_ignores_last_segment_and_is_public(app: App, ca: CertificateAuthority) -> None:
    r = wsgi_call(app, "GET", f"{V1}/certificate_revocation_list/whatever")
    assert r.status == 200 and r.body == ca.store.cadir.cacrl.read_bytes()


# --- CSR submission --------------------------------------------------------------------------


def test_put_csr_200_empty_then_400_duplicate_as_puppet7_expects(app: App) -> None:
    key = fast_key()
    status, body = put_csr(app, "agent2", key=key)
    assert (status, body) == (200, "")
    # The Puppet 7 agent re-submits the identical CSR on every wait loop; it needs 400 here.
    status, body = put_csr(app, "agent2", key=key)
    assert status == 400
    assert body == "agent2 already has a requested certificate; ignoring certificate request"
    r = wsgi_call(app, "GET", f"{V1}/certificate_request/agent2")
    assert r.status == 200 and r.text.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert wsgi_call(app, "GET", f"{V1}/certificate/agent2").status == 404


def test_duplicate_of_signed_and_revoked(app: App, ca: CertificateAuthority) -> None:
    signed(ca, "dup")
    assert put_csr(app, "dup") == (
        400,
        "dup already has a signed certificate; ignoring certificate request",
    )
    ca.revoke(["dup"])
    assert put_csr(app, "dup") == (
        400,
        "dup already has a revoked certificate; ignoring certificate request",
    )
    ca.clean(["dup"])  # a cleaned host can re-register
    assert put_csr(app, "dup")[0] == 200


def test_autosign_signs_on_put(tmp_path, settings) -> None:
    setup_ca(settings)
    app = make_app(ca=open_ca(settings.replace(autosign=True)))
    assert put_csr(app, "auto1") == (200, "")
    r = wsgi_call(app, "GET", f"{V1}/certificate/auto1")
    assert r.status == 200 and b"BEGIN CERTIFICATE" in r.body
    assert wsgi_call(app, "GET", f"{V1}/certificate_request/auto1").status == 404


def test_delete_certificate_request_is_admin_only(
    app: App, admin_cert: x509.Certificate, ca
) -> None:
    put_csr(app, "del1")
    assert wsgi_call(app, "DELETE", f"{V1}/certificate_request/del1").status == 403
    r = wsgi_call(app, "DELETE", f"{V1}/certificate_request/del1", client=admin_cert)
    assert (r.status, r.body) == (204, b"")  # no content in a 204 (test_lifecycle_edges.py)
    r = wsgi_call(app, "DELETE", f"{V1}/certificate_request/del1", client=admin_cert)
    assert r.status == 404 and r.text.startswith("No certificate request for del1 at expected path")


# --- authorization ----------------------------------------------------------------------------


ADMIN_ENDPOINTS = [
    ("GET", f"{V1}/certificate_status/x", b""),
    ("PUT", f"{V1}/certificate_status/x", b'{"desired_state":"signed"}'),
    ("DELETE", f"{V1}/certificate_status/x", b""),
    ("GET", f"{V1}/certificate_statuses/all", b""),
    ("PUT", f"{V1}/clean", b'{"certnames":["x"]}'),
    ("POST", f"{V1}/sign", b'{"certnames":["x"]}'),
    ("POST", f"{V1}/sign/all", b"{}"),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS)
def test_admin_endpoints_refuse_anonymous_and_plain_agents(app, ca, method, path, body) -> None:
    plain = signed(ca, "plain-agent")
    for client in (None, plain):
        r = wsgi_call(app, method, path, body, client=client)
        assert r.status == 403, (client, r.text)
        assert r.text.startswith(f"Forbidden request: {path} (method :{method.lower()}).")


def test_admin_by_certname_list(tmp_path, settings) -> None:
    setup_ca(settings)
    ca = open_ca(settings.replace(admin_certnames=("ops1",)))
    app = make_app(ca=ca)
    ops = signed(ca, "ops1")
    assert wsgi_call(app, "GET", f"{V1}/certificate_statuses/all", client=ops).status == 200


def test_client_certificate_counts_only_when_tls_verified_it(app, ca) -> None:
    """A pp_cli_auth certificate in SSL_CLIENT_CERT is ignored unless SSL_CLIENT_VERIFY is SUCCESS."""
    _, cert = ca.generate("admin3", ca_client=True)
    for verify in ("NONE", "FAILED:unable to get local issuer certificate", "GENEROUS"):
        r = wsgi_call(
            app,
            "GET",
            f"{V1}/certificate_statuses/all",
            client=cert,
            environ_extra={"SSL_CLIENT_VERIFY": verify},
        )
        assert r.status == 403, verify
    assert wsgi_call(app, "GET", f"{V1}/certificate_statuses/all", client=cert).status == 200


def test_expirations_needs_a_certificate(app, ca) -> None:
    assert wsgi_call(app, "GET", f"{V1}/expirations").status == 403
    r = wsgi_call(app, "GET", f"{V1}/expirations", client=signed(ca, "exp-agent"))
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    body = json.loads(r.body)
    assert set(body) == {"ca-certs", "crls"}
    assert list(body["ca-certs"]) == ["Puppet CA: ca.test"]
    assert body["crls"]["Puppet CA: ca.test"].endswith("UTC")


# --- certificate_status ------------------------------------------------------------------------


def test_certificate_status_lifecycle(app, ca, admin_cert) -> None:
    put_csr(app, "life1")
    r = wsgi_call(app, "GET", f"{V1}/certificate_status/life1", client=admin_cert)
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    status = json.loads(r.body)
    assert status["state"] == "requested" and "serial_number" not in status
    assert set(status) >= {
        "name",
        "state",
        "dns_alt_names",
        "subject_alt_names",
        "authorization_extensions",
        "fingerprint",
        "fingerprints",
    }
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_status/life1",
        b'{"desired_state":"signed","cert_ttl":3600}',
        client=admin_cert,
        headers={"Content-Type": "application/json"},
    )
    assert (r.status, r.body) == (204, b"")
    status = json.loads(
        wsgi_call(app, "GET", f"{V1}/certificate_status/life1", client=admin_cert).body
    )
    assert status["state"] == "signed" and isinstance(status["serial_number"], int)
    cert = x509.load_pem_x509_certificate(ca.store.cadir.cert_path("life1").read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 86400 + 3600
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_status/life1",
        b'{"desired_state":"signed"}',
        client=admin_cert,
    )
    assert (r.status, r.text) == (
        409,
        "Cannot sign certificate for host life1 without a certificate request",
    )
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_status/life1",
        b'{"desired_state":"revoked"}',
        client=admin_cert,
    )
    assert r.status == 204
    assert (
        json.loads(wsgi_call(app, "GET", f"{V1}/certificate_status/life1", client=admin_cert).body)[
            "state"
        ]
        == "revoked"
    )
    r = wsgi_call(app, "DELETE", f"{V1}/certificate_status/life1", client=admin_cert)
    assert r.status == 204
    r = wsgi_call(app, "GET", f"{V1}/certificate_status/life1", client=admin_cert)
    assert (r.status, r.text) == (404, "Resource not found.")


@pytest.mark.parametrize(
    ("body", "ctype", "status", "message"),
    [
        (b"", None, 400, "Empty request body."),
        (b"{nope", None, 400, "Request body is not JSON."),
        (b"{}", None, 400, 'Missing required parameter "desired_state"'),
        (
            b'{"desired_state":"bogus"}',
            None,
            400,
            "State bogus invalid; Must specify desired state of 'signed' or 'revoked' for host st1.",
        ),
        (
            b'{"desired_state":"signed","cert_ttl":"astring"}',
            None,
            400,
            'cert_ttl specified for host st1 must be an integer, not "astring"',
        ),
        (b'{"desired_state":"signed"}', "application/xml", 415, "Unsupported media type."),
    ],
)
def test_certificate_status_put_errors(app, admin_cert, body, ctype, status, message) -> None:
    put_csr(app, "st1")
    headers = {"Content-Type": ctype} if ctype else {}
    r = wsgi_call(
        app, "PUT", f"{V1}/certificate_status/st1", body, client=admin_cert, headers=headers
    )
    assert (r.status, r.text) == (status, message)


def test_certificate_status_put_unknown_and_policy_409(tmp_path, settings) -> None:
    setup_ca(settings)
    # SANs allowed at intake but not for this signing -> 409 with puppetserver's message kind
    ca = open_ca(settings.replace(allow_subject_alt_names=True))
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    r = wsgi_call(
        app, "PUT", f"{V1}/certificate_status/ghost", b'{"desired_state":"signed"}', client=admin
    )
    assert (r.status, r.text) == (404, "Invalid certificate subject.")
    r = wsgi_call(
        app, "PUT", f"{V1}/certificate_status/ghost", b'{"desired_state":"revoked"}', client=admin
    )
    assert r.status == 404
    assert put_csr(app, "san1", sans=["DNS:san1", "DNS:other"])[0] == 200
    strict = make_app(ca=open_ca(settings))
    r = wsgi_call(
        strict, "PUT", f"{V1}/certificate_status/san1", b'{"desired_state":"signed"}', client=admin
    )
    assert r.status == 409 and "contains extra subject alternative names (DNS:other)" in r.text


def test_certificate_status_media_types(app, admin_cert) -> None:
    put_csr(app, "mt1")
    for accept, ctype in (
        ("pson", "pson"),
        ("text/pson", "text/pson"),
        ("application/json", "application/json"),
    ):
        r = wsgi_call(
            app,
            "GET",
            f"{V1}/certificate_status/mt1",
            client=admin_cert,
            headers={"Accept": accept},
        )
        assert r.status == 200 and r.headers["Content-Type"] == ctype
    r = wsgi_call(
        app,
        "GET",
        f"{V1}/certificate_status/mt1",
        client=admin_cert,
        headers={"Accept": "text/html"},
    )
    assert r.status == 406


def test_certificate_statuses_order_and_state_filter(app, ca, admin_cert) -> None:
    put_csr(app, "pending1")
    signed(ca, "signed1")
    signed(ca, "revoked1")
    ca.revoke(["revoked1"])

    def names(query: str) -> list[tuple[str, str]]:
        r = wsgi_call(app, "GET", f"{V1}/certificate_statuses/any", client=admin_cert, query=query)
        assert r.status == 200
        return [(s["name"], s["state"]) for s in json.loads(r.body)]

    everything = names("")
    assert everything[0] == ("pending1", "requested")  # CSRs first, as puppetserver
    assert ("signed1", "signed") in everything and ("revoked1", "revoked") in everything
    assert names("state=requested") == [("pending1", "requested")]
    assert names("state=revoked") == [("revoked1", "revoked")]
    assert ("revoked1", "revoked") not in names("state=signed")
    assert names("state=bogus") == everything
    r = wsgi_call(app, "GET", f"{V1}/certificate_statuses/", client=admin_cert)
    assert (r.status, r.text) == (400, "Missing URL Segment")


def test_bulk_sign(app, ca, admin_cert) -> None:
    put_csr(app, "b1")
    r = wsgi_call(app, "POST", f"{V1}/sign", b'{"certnames":["b1","nocsr"]}', client=admin_cert)
    assert r.status == 200 and json.loads(r.body) == {
        "signed": ["b1"],
        "no-csr": ["nocsr"],
        "signing-errors": [],
    }
    r = wsgi_call(app, "POST", f"{V1}/sign", b'{"certnames":"b1"}', client=admin_cert)
    assert r.status == 422 and json.loads(r.body)["kind"] == "schema-violation"
    put_csr(app, "b2")
    put_csr(app, "b3")
    r = wsgi_call(app, "POST", f"{V1}/sign/all", b"{}", client=admin_cert)
    assert json.loads(r.body)["signed"] == ["b2", "b3"]


def test_certificate_renewal_only_for_the_holder(app, ca) -> None:
    old = signed(ca, "renew1")
    assert wsgi_call(app, "POST", f"{V1}/certificate_renewal").status == 403
    r = wsgi_call(app, "POST", f"{V1}/certificate_renewal", client=old)
    assert r.status == 200
    new = x509.load_pem_x509_certificate(r.body)
    assert new.serial_number != old.serial_number and new.public_key() == old.public_key()
    assert new.subject == old.subject
    assert ca.store.cadir.cert_path("renew1").read_bytes() == r.body
    ca.revoke(["renew1"])
    assert wsgi_call(app, "POST", f"{V1}/certificate_renewal", client=new).status == 403


def test_query_parameters_of_old_agents_are_ignored(app, ca) -> None:
    r = wsgi_call(
        app, "GET", f"{V1}/certificate/ca", query="environment=production&fail_on_404=true"
    )
    assert r.status == 200 and r.body == ca.store.cadir.cacert.read_bytes()


# --- names, CSR versions, bulk signing (issue 8) ----------------------------------------------


def _long_cn_csr(name: str) -> bytes:
    """A CSR whose CN is *name* even if it is longer than a certificate's CN may be."""
    import warnings

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        attr = x509.NameAttribute(NameOID.COMMON_NAME, name, _validate=False)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([attr]))
    return pki.pem(builder.sign(fast_key(), hashes.SHA256()))


def _plant_pending(ca: CertificateAuthority, name: str, body: bytes) -> None:
    """A pending CSR as an older splitca (or another tool) left it in requests/."""
    path = ca.store.cadir.csr_path(name)
    path.write_bytes(body)
    os.chmod(path, 0o644)


def test_sign_all_signs_past_a_csr_that_cannot_be_signed_through_the_server(
    settings, server_factory, tmp_path
) -> None:
    """A stored CSR whose name is longer than a CN ends in signing-errors; every other
    CSR is signed; the failure takes no serial (two workers, real HTTPS)."""
    import requests

    from splitca.store.files.cadir import parse_inventory

    setup_ca(settings)
    ca = open_ca(settings)
    long_name = "a" * 70  # sorts first: the old code stopped right there
    _plant_pending(ca, long_name, _long_cn_csr(long_name))
    good = [f"good-{i}" for i in range(3)]
    for name in good:
        ca.submit_csr(name, pki.pem(make_csr(name)))
    serial_before = ca.store.cadir.read_serial()
    lines_before = len(list(parse_inventory(ca.store.cadir.inventory.read_bytes())))
    server = server_factory(settings, workers=2)
    admin = (str(settings.effective_server_cert), str(settings.effective_server_key))
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(server.cacert)
        s.cert = admin
        r = s.post(f"{server.url}{V1}/sign/all", json={}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == {"signed": good, "no-csr": [], "signing-errors": [long_name]}
        r = s.post(f"{server.url}{V1}/sign", json={"certnames": [long_name, "nope"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == {"signed": [], "no-csr": ["nope"], "signing-errors": [long_name]}
    assert "Traceback" not in server.log_text()
    assert ca.store.cadir.read_serial() == serial_before + len(good)
    lines = list(parse_inventory(ca.store.cadir.inventory.read_bytes()))
    assert len(lines) == lines_before + len(good)
    assert long_name not in {ln.certname for ln in lines}
    assert ca.store.cadir.csr_path(long_name).exists()


def test_put_of_a_name_longer_than_a_cn_is_400_with_autosign_and_costs_nothing(
    settings,
) -> None:
    setup_ca(settings)
    ca = open_ca(settings.replace(autosign=True))
    app = make_app(ca=ca)
    from .conftest import snapshot

    before = snapshot(ca.store.cadir.root)
    name = "x" * 65
    r = wsgi_call(app, "PUT", f"{V1}/certificate_request/{name}", _long_cn_csr(name))
    assert (r.status, r.text) == (
        400,
        "Certificate names must be at most 64 characters long "
        "(the limit of a certificate's common name, RFC 5280); this one has 65.",
    )
    assert snapshot(ca.store.cadir.root) == before
    # 64 characters is fine, and signed
    name = "x" * 64
    assert (
        wsgi_call(app, "PUT", f"{V1}/certificate_request/{name}", _long_cn_csr(name)).status == 200
    )
    assert ca.state_of(name) == "signed"


def test_a_refused_issue_takes_no_serial(ca: CertificateAuthority) -> None:
    """Whatever cryptography refuses while building a certificate is refused before a
    serial or an inventory line is taken (here a CN too long, bypassing the name check)."""
    from splitca.core.policy import Approved
    from splitca.core.usecases.common import issue
    from splitca.errors import PolicyViolation

    serial = ca.store.cadir.read_serial()
    inventory = ca.store.cadir.inventory.read_bytes()
    approved = Approved("y" * 65, fast_key().public_key(), (), ())
    with pytest.raises(PolicyViolation, match="Cannot issue a certificate for y"):
        issue(ca.deps, approved, None, drop_csr=True)
    assert ca.store.cadir.read_serial() == serial
    assert ca.store.cadir.inventory.read_bytes() == inventory


def test_bulk_sign_reports_an_unexpected_error_and_goes_on(
    ca: CertificateAuthority, monkeypatch
) -> None:
    for name in ("b1", "b2", "b3"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    real_sign = ca.sign

    def sign(name: str, **kw: object) -> x509.Certificate:
        if name == "b2":
            raise RuntimeError("disk on fire")
        return real_sign(name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ca, "sign", sign)
    result = ca.sign_all()
    assert (result.signed, result.no_csr, result.signing_errors) == (["b1", "b3"], [], ["b2"])
    assert result.messages["b2"] == "internal error (RuntimeError); see the log"


def _puppetserver_ca_csr(name: str) -> bytes:
    """A CSR made by the real `puppetserver ca` tool's code (Host#create_csr: version 2)."""
    import subprocess

    from .conftest import require_program

    ruby = require_program("ruby")
    lib = "/usr/share/rubygems-integration/all/gems/puppetserver-ca-2.4.0/lib"
    if not os.path.isdir(lib):
        pytest.skip("ruby-puppetserver-ca-cli is not installed")
    script = (
        'require "puppetserver/ca/host"; '
        "h = Puppetserver::Ca::Host.new(OpenSSL::Digest::SHA256.new); "
        "k = OpenSSL::PKey::RSA.new(2048); "
        "print h.create_csr(name: ARGV[0], key: k).to_pem"
    )
    out = subprocess.run(
        [ruby, "-I", lib, "-e", script, name], capture_output=True, check=True, timeout=60
    )
    return out.stdout


def test_csr_of_the_puppetserver_ca_tool_version_2_is_accepted_and_signed(
    app: App, ca: CertificateAuthority, admin_cert, tmp_path
) -> None:
    import hashlib
    import subprocess

    body = _puppetserver_ca_csr("tool.example.com")
    text = subprocess.run(
        ["openssl", "req", "-noout", "-text"], input=body, capture_output=True, timeout=30
    ).stdout
    assert b"Version: Unknown (2)" in text  # really version 2
    r = wsgi_call(app, "PUT", f"{V1}/certificate_request/tool.example.com", body)
    assert (r.status, r.text) == (200, "")
    # stored, fingerprinted and served as the bytes that were signed
    stored = ca.csr_pem("tool.example.com")
    assert stored is not None
    der = pki.split_pem(stored, "CERTIFICATE REQUEST")[0]
    assert der.split(b"-----")[2].split() == body.split(b"-----")[2].split()
    r = wsgi_call(app, "GET", f"{V1}/certificate_status/tool.example.com", client=admin_cert)
    import base64

    original = base64.b64decode(b"".join(body.split(b"-----")[2].split()))
    digest = hashlib.sha256(original).hexdigest().upper()
    assert json.loads(r.body)["fingerprint"].replace(":", "") == digest
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_status/tool.example.com",
        b'{"desired_state":"signed"}',
        headers={"Content-Type": "application/json"},
        client=admin_cert,
    )
    assert r.status == 204, r.text
    from .conftest import openssl_verify

    assert (
        openssl_verify(ca.store.cadir.cert_path("tool.example.com"), ca.store.cadir.root).returncode
        == 0
    )


def test_a_version_1_csr_is_accepted_too(app: App, ca: CertificateAuthority) -> None:
    from .test_bad_input import versioned_csr

    r = wsgi_call(app, "PUT", f"{V1}/certificate_request/v1host", versioned_csr("v1host", 1))
    assert (r.status, r.text) == (200, "")
    assert ca.sign("v1host").subject.rfc4514_string() == "CN=v1host"


def test_requested_pp_extensions_are_issued_non_critical_and_openssl_verifies(
    app: App, ca: CertificateAuthority
) -> None:
    from .conftest import openssl_verify

    name = "ext.example.com"
    status, text = put_csr(app, name, extensions=[("1.3.6.1.4.1.34380.1.1.13", "webserver")])
    assert (status, text) == (200, "")
    cert = ca.sign(name)
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.34380.1.1.13"))
    assert not ext.critical
    assert openssl_verify(ca.store.cadir.cert_path(name), ca.store.cadir.root).returncode == 0


def test_a_version_2_csr_left_in_requests_is_listed_and_signable(
    app: App, ca: CertificateAuthority, admin_cert
) -> None:
    """As `puppetserver ca` (offline) or an imported puppetserver cadir leaves one: the
    index reads it (the old code's index refresh raised InvalidVersion: every request 500)."""
    _plant_pending(ca, "left.example.com", _puppetserver_ca_csr("left.example.com"))
    r = wsgi_call(app, "GET", f"{V1}/certificate_statuses/all", client=admin_cert)
    assert r.status == 200, r.text
    assert {"name": "left.example.com", "state": "requested"}.items() <= next(
        s for s in json.loads(r.body) if s["name"] == "left.example.com"
    ).items()
    r = wsgi_call(app, "POST", f"{V1}/sign/all", b"{}", client=admin_cert)
    assert json.loads(r.body)["signed"] == ["left.example.com"]


def test_puppetserver_ca_generate_succeeds_against_splitca_serve(
    settings, server_factory, tmp_path
) -> None:
    """The real `puppetserver ca generate` (version-2 CSRs) against the real server, two
    workers: key, CSR, signing and download all succeed (the old code answered its PUT 500)."""
    import shutil
    import subprocess

    from .conftest import require_program

    ruby = require_program("ruby")
    lib = "/usr/share/rubygems-integration/all/gems/puppetserver-ca-2.4.0/lib"
    if not os.path.isdir(lib):
        pytest.skip("ruby-puppetserver-ca-cli is not installed")
    setup_ca(settings)
    server = server_factory(settings, workers=2)
    ssl = tmp_path / "tool-ssl"
    (ssl / "certs").mkdir(parents=True)
    (ssl / "private_keys").mkdir()
    shutil.copy(settings.effective_server_cert, ssl / "certs" / "ca.test.pem")
    shutil.copy(settings.effective_server_key, ssl / "private_keys" / "ca.test.pem")
    shutil.copy(settings.cadir / "ca_crt.pem", ssl / "certs" / "ca.pem")
    shutil.copy(settings.cadir / "ca_crl.pem", ssl / "crl.pem")
    conf = tmp_path / "puppet.conf"
    conf.write_text(
        f"[main]\ncertname = ca.test\nssldir = {ssl}\nserver = 127.0.0.1\n"
        f"ca_server = 127.0.0.1\nca_port = {server.port}\n"
    )
    script = 'require "puppetserver/ca/cli"; exit Puppetserver::Ca::Cli.run(ARGV, STDOUT, STDERR)'
    args = ["generate", "--certname", "gen1.example.com", "--config", str(conf)]
    proc = subprocess.run(
        [ruby, "-I", lib, "-e", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully signed certificate request for gen1.example.com" in proc.stdout
    issued = (ssl / "certs" / "gen1.example.com.pem").read_bytes()
    assert issued == (settings.cadir / "signed" / "gen1.example.com.pem").read_bytes()
    assert "Traceback" not in server.log_text()


def test_route_specific_error_answers_are_exact(tmp_path, settings, app, ca, admin_cert) -> None:
    """The answers Puppet's wire wants per endpoint (httpapp route ``errors=``), byte for byte."""

    def call(
        method: str, path: str, body: bytes = b"", **kw: dict[str, str]
    ) -> tuple[int, str, str]:
        r = wsgi_call(app, method, f"{V1}/{path}", body, client=admin_cert, **kw)
        return r.status, r.headers.get("Content-Type", ""), r.text

    csr_path = settings.cadir / "requests" / "gone.pem"
    assert call("DELETE", "certificate_request/gone") == (
        404,
        "text/plain",
        f"No certificate request for gone at expected path {csr_path}",
    )
    utf8 = "text/plain; charset=UTF-8"
    assert call("DELETE", "certificate_status/gone") == (404, utf8, "Invalid certificate subject.")
    signed(ca, "twice")
    put_csr(app, "pending1")
    ca.sign("pending1")
    put_csr(app, "pending1")  # a CSR beside a valid certificate: signing it is refused
    status, ctype, text = call("PUT", "certificate_status/pending1", b'{"desired_state":"signed"}')
    assert (status, ctype) == (409, utf8) and text, text
    assert call("GET", "certificate_status/twice", headers={"Accept": "text/html"}) == (
        406,
        "text/plain",
        "No acceptable resource available.",
    )
    assert call("GET", "certificate_statuses/any", headers={"Accept": "text/html"}) == (
        406,
        "text/plain",
        "No acceptable resource available.",
    )
    status, ctype, text = call("POST", "sign", b"not json")
    assert (status, ctype) == (422, "application/json")
    assert json.loads(text) == {
        "kind": "schema-violation",
        "submitted": None,
        "error": "Request body is not JSON.",
    }


def test_mod_wsgi_with_a_bad_autosign_still_serves_the_ca_and_crl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under mod_wsgi (the `application` entry point) an autosign setting that cannot be
    honoured answers CSR submissions 503, while the CA certificate and the CRL, which every
    agent and compile master needs, keep being served."""
    not_a_policy = tmp_path / "policy.d"
    not_a_policy.mkdir()
    settings = make_settings(tmp_path, autosign=str(not_a_policy))
    setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings)
    monkeypatch.setattr(splitca_wsgi, "_lazy_app", None)
    env = {"SPLITCA_CONFIG": str(config)}
    for path in ("/puppet-ca/v1/certificate/ca", "/puppet-ca/v1/certificate_revocation_list/ca"):
        got = wsgi_call(splitca_wsgi.application, "GET", path, environ_extra=env)  # type: ignore[arg-type]
        assert got.status == 200, (path, got.text)
    put = wsgi_call(
        splitca_wsgi.application,  # type: ignore[arg-type]
        "PUT",
        "/puppet-ca/v1/certificate_request/n1",
        pki.pem(make_csr("n1")),
        headers={"Content-Type": "text/plain"},
        environ_extra=env,
    )
    assert put.status == 503 and "autosign" in put.text, put.text
    assert not (settings.cadir / "requests" / "n1.pem").exists()
