"""The Puppet 2.6-3.x agent's bootstrap over the legacy /<environment>/... paths, on the wire.

The client below sends what a Puppet 3 agent sends (puppet-ca-api.md section 5.1):
`Accept: s`, `Accept-Encoding: identity`, no X-Puppet-Version, in the same order of
calls, first with certificate verification off (the agent has no CA yet), then
verifying against the CA it downloaded and presenting its certificate.
"""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from splitca import pki
from splitca.compose import open_ca

from .conftest import Server, fast_key, make_csr, openssl, setup_ca

pytestmark = pytest.mark.interop

LEGACY_HEADERS = {"Accept": "s", "Accept-Encoding": "identity", "User-Agent": "Ruby"}


class LegacyAgent:
    def __init__(self, server: Server, certname: str, workdir: Path) -> None:
        self.server = server
        self.certname = certname
        self.workdir = workdir
        self.key = fast_key()
        self.ca_file: Path | None = None
        self.cert_file: Path | None = None
        self.key_file = workdir / "key.pem"
        self.key_file.write_bytes(pki.private_key_pem(self.key))
        self.responses: list[tuple[str, str, int, dict[str, str]]] = []

    def _conn(self) -> http.client.HTTPSConnection:
        if self.ca_file is None:
            ctx = ssl._create_unverified_context()
        else:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.check_hostname = False  # 3.x agents check the chain, not the name, here
            if self.cert_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return http.client.HTTPSConnection("127.0.0.1", self.server.port, context=ctx, timeout=15)

    def call(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        headers = dict(LEGACY_HEADERS)
        if body is not None:
            headers["Content-Type"] = "text/plain"
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        self.responses.append((method, path, resp.status, hdrs))
        return resp.status, data, hdrs


def test_puppet3_agent_bootstrap_over_legacy_paths(
    settings, server_factory, tmp_path: Path
) -> None:
    setup_ca(settings)
    server = server_factory(settings.replace(autosign=False))
    agent = LegacyAgent(server, "legacy01.example.com", tmp_path)
    name = agent.certname

    # 1. CA certificate, insecure, with the query string Puppet 3 adds.
    status, body, hdrs = agent.call("GET", "/production/certificate/ca?fail_on_404=true")
    assert status == 200 and body == server.cacert.read_bytes()
    agent.ca_file = tmp_path / "ca.pem"
    agent.ca_file.write_bytes(body)
    # 2. Own certificate: not there yet.
    status, body, _ = agent.call("GET", f"/production/certificate/{name}")
    assert (status, body) == (404, f"Could not find certificate {name}".encode())
    # 3. A pending CSR on the server? None yet.
    status, _, _ = agent.call("GET", f"/production/certificate_request/{name}")
    assert status == 404
    # 4. Submit the CSR.
    csr_pem = pki.pem(make_csr(name, key=agent.key))
    status, body, hdrs = agent.call("PUT", f"/production/certificate_request/{name}", csr_pem)
    assert status == 200
    # Puppet 2.6 parses this body by its Content-Type; an empty YAML document works for every version.
    assert hdrs["content-type"] == "text/yaml" and body.strip() in (b"---", b"--- ")
    # 5. Wait for the certificate: 404 while pending ...
    status, _, _ = agent.call("GET", f"/production/certificate/{name}")
    assert status == 404
    # (a re-run of the agent finds its pending CSR on the server and adopts it)
    status, body, _ = agent.call("GET", f"/production/certificate_request/{name}")
    assert status == 200 and x509.load_pem_x509_csr(body).public_key() == agent.key.public_key()
    signed = server.cli("sign", name)
    assert signed.returncode == 0, signed.stderr
    # ... then 200.
    status, body, _ = agent.call("GET", f"/production/certificate/{name}")
    assert status == 200
    cert = x509.load_pem_x509_certificate(body)
    assert cert.public_key() == agent.key.public_key()
    agent.cert_file = tmp_path / "cert.pem"
    agent.cert_file.write_bytes(body)
    # 6. CRL, verified TLS with the agent's new client certificate.
    status, crl_pem, _ = agent.call("GET", "/production/certificate_revocation_list/ca")
    assert status == 200 and crl_pem == (settings.cadir / "ca_crl.pem").read_bytes()
    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(crl_pem)
    out = openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        str(agent.ca_file),
        "-CRLfile",
        str(crl_file),
        str(agent.cert_file),
    )
    assert out.returncode == 0, out.stdout + out.stderr

    # Every answer has X-Puppet-Version (3.3+ agents switch to legacy mode without it),
    # and every 2xx a Content-Type (else "No content type in http response; cannot parse").
    for method, path, st, hdrs in agent.responses:
        assert hdrs.get("x-puppet-version"), (method, path)
        if 200 <= st < 300:
            assert hdrs.get("content-type"), (method, path)


def test_legacy_certificate_status_for_puppet3_tools(
    settings, server_factory, tmp_path: Path
) -> None:
    """`puppet cert` (3.x) talks pson to certificate_status(es) with an admin certificate."""
    setup_ca(settings)
    server = server_factory(settings)
    ca = open_ca(settings)
    ca.submit_csr("p3", pki.pem(make_csr("p3")))
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    ctx.load_cert_chain(str(settings.effective_server_cert), str(settings.effective_server_key))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=15)
    conn.request("GET", "/production/certificate_statuses/all", headers={"Accept": "pson"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and resp.getheader("Content-Type") == "pson"
    assert b'"name":"p3"' in body
    conn.request(
        "PUT",
        "/production/certificate_status/p3",
        body=b'{"desired_state":"signed"}',
        headers={"Content-Type": "text/pson", "Accept": "pson"},
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 204
    conn.close()
    assert ca.state_of("p3") == "signed"


def test_legacy_routes_can_be_turned_off(settings, server_factory) -> None:
    setup_ca(settings)
    server = server_factory(settings.replace(legacy_routes=False))
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=15)
    conn.request("GET", "/production/certificate/ca", headers=LEGACY_HEADERS)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404
    conn.close()
