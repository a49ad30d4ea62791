"""The compile-master vhost in a real Apache: who gets through, and what the backend is told."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from splitca import compose, pki
from splitca.compose import open_ca
from splitca.split import apache

from .apache_harness import (
    Identity,
    MasterStack,
    Refused,
    build_master_stack,
    https_get,
    require_module,
    start_apache,
    start_backend,
    stop_apache,
    world_dir,
)
from .conftest import free_port, make_settings

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterStack]:
    root = tmp_path_factory.mktemp("master")
    settings = make_settings(root)
    compose.setup_ca(settings)
    ca = open_ca(settings)
    backend = start_backend()
    try:
        s = build_master_stack(ca, root, backend)
    except BaseException:
        backend.stop()
        raise
    yield s
    stop_apache(s.apache)
    backend.stop()
    ca.close()


@pytest.fixture(scope="module")
def agent1(stack: MasterStack) -> Identity:
    return stack.agent("agent1.example.com")


def test_agent_with_a_certificate_from_our_ca_gets_through(stack, agent1):
    before = len(stack.backend.seen)
    answer = stack.get(agent1, "/echo/status?a=1")
    assert answer.status == 200
    echoed = answer.json()
    assert echoed["x-client-verify"] == "SUCCESS"
    assert echoed["x-client-dn"] == "CN=agent1.example.com"
    # X-Client-Cert is the agent's PEM, URL-encoded the way puppetserver decodes it.
    raw = echoed["x-client-cert"]
    assert raw.startswith("-----BEGIN%20CERTIFICATE-----%0")
    assert " " not in raw and "\n" not in raw
    assert urllib.parse.unquote(raw).strip() == pki.pem(agent1.certificate).decode().strip()
    assert len(stack.backend.seen) == before + 1


def test_no_client_certificate_fails_the_handshake(stack):
    before = len(stack.backend.seen)
    with pytest.raises(Refused):
        stack.get(None)
    assert len(stack.backend.seen) == before


def test_certificate_from_another_ca_fails(stack, tmp_path):
    other = trustme.CA()
    leaf = other.issue_cert("agent1.example.com")
    pem = tmp_path / "other.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    impostor = Identity(
        "agent1.example.com", pem, pem, stack.master.cacert, stack.master.certificate
    )
    before = len(stack.backend.seen)
    assert stack.refuses(impostor)
    assert len(stack.backend.seen) == before


def test_certificate_from_a_lookalike_ca_with_our_name_fails(stack, tmp_path):
    """Same issuer name as our CA, different key: only the signature tells them apart."""
    our_ca = stack.ca.ca_certificate()
    now = dt.datetime.now(dt.UTC)
    fake_key = pki.generate_private_key("rsa", rsa_bits=2048)
    name = our_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert isinstance(name, str)
    fake_ca = pki.build_ca_certificate(fake_key, name, now=now, ttl=dt.timedelta(days=30))
    assert fake_ca.subject == our_ca.subject
    agent_key = pki.generate_private_key("rsa", rsa_bits=2048)
    cert = pki.build_leaf_certificate(
        ca_key=fake_key,
        ca_cert=fake_ca,
        public_key=agent_key.public_key(),
        certname="agent1.example.com",
        serial=2,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    cert_path, key_path = tmp_path / "fake.crt", tmp_path / "fake.key"
    cert_path.write_bytes(pki.pem(cert))
    key_path.write_bytes(pki.private_key_pem(agent_key))
    assert stack.refuses(
        Identity("agent1.example.com", cert_path, key_path, stack.master.cacert, cert)
    )


def test_client_supplied_identity_headers_never_reach_the_backend(stack, agent1):
    forged = {
        "X-Client-DN": "CN=admin.example.com",
        "X-Client-Verify": "SUCCESS",
        "X-Client-Cert": "forged",
        "X_Client_DN": "CN=admin.example.com",
        "X_Client_Verify": "SUCCESS",
    }
    answer = stack.get(agent1, "/echo/forged", headers=forged)
    assert answer.status == 200
    seen = stack.backend.seen[-1]
    assert seen.path == "/echo/forged"
    assert seen.header("X-Client-DN") == "CN=agent1.example.com"
    assert seen.header("X-Client-Verify") == "SUCCESS"
    assert seen.header("X-Client-Cert") != "forged"
    assert "admin.example.com" not in " ".join(f"{k}: {v}" for k, v in seen.headers.items())
    assert not [k for k in seen.headers if "_" in k], seen.headers


def test_puppet_ca_paths_are_refused_on_a_compile_master(stack, agent1):
    before = len(stack.backend.seen)
    answer = stack.get(agent1, "/puppet-ca/v1/certificate/ca")
    assert answer.status == 403
    assert len(stack.backend.seen) == before


def test_apache_logs_why_it_refused(stack):
    """Operators can tell a missing certificate from a bad one in Apache's error log."""
    assert stack.refuses(None)
    text = stack.apache.log_text()
    assert "peer did not return a certificate" in text or "certificate required" in text, text[
        -2000:
    ]


# --- the passenger backend: the Rack app sees the same identity ----------------------------------

RACK_APP = """
require "json"
run lambda { |env|
  seen = env.select { |k, _| k.include?("CLIENT") }
  [200, {"Content-Type" => "application/json"}, [JSON.generate(seen)]]
}
"""


def test_passenger_backend_gives_the_rack_app_the_verified_identity(stack, agent1):
    require_module("passenger")
    locations = Path("/usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini")
    if not locations.exists():
        pytest.fail("libapache2-mod-passenger is installed but its locations.ini is missing")
    rack = world_dir("splitca-rack-")
    (rack / "public").mkdir()
    (rack / "config.ru").write_text(RACK_APP)
    port = free_port()
    site = apache.MasterSite(
        server_name="master1.example.com",
        listen=f"127.0.0.1:{port}",
        cert=stack.master.cert,
        key=stack.master.key,
        ca_cert=stack.master.cacert,
        crl=stack.crl,
        backend="passenger",
        rack_root=rack,
    )
    extra = (
        f"PassengerRoot {locations}",
        "PassengerDefaultRuby /usr/bin/ruby",
        f"PassengerInstanceRegistryDir {rack}",
    )
    httpd = start_apache(apache.render(site), port, site.modules, extra=extra)
    try:
        forged = {"X-Client-DN": "CN=admin.example.com", "X_Client_DN": "CN=admin.example.com"}
        answer = https_get(
            port,
            "/puppet/v3/x",
            cacert=stack.master.cacert,
            cert=agent1.cert,
            key=agent1.key,
            headers=forged,
        )
        assert answer.status == 200, answer.body
        env = answer.json()
        # Puppet's Rack master reads these two (ssl_client_header, ssl_client_verify_header)...
        assert env["HTTP_X_CLIENT_DN"] == "CN=agent1.example.com"
        assert env["HTTP_X_CLIENT_VERIFY"] == "SUCCESS"
        # ...and the certificate from SSL_CLIENT_CERT (SSLOptions +ExportCertData).
        assert env["SSL_CLIENT_CERT"].strip() == pki.pem(agent1.certificate).decode().strip()
        assert "admin.example.com" not in json.dumps(env)
        with pytest.raises(Refused):  # no client certificate
            https_get(port, "/", cacert=stack.master.cacert)
    finally:
        stop_apache(httpd)
        shutil.rmtree(rack, ignore_errors=True)
