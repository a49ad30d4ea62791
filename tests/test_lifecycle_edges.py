"""The certificate lifecycle at its edges, as agents, operators and their scripts drive it:
what names nothing is refused, a 204 carries nothing, and bulk signing never grants the CA."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.http.wsgiapp import make_app

from .conftest import make_csr, require_program, setup_ca, snapshot, write_config, wsgi_call
from .test_exchange import running

V1 = "/puppet-ca/v1"


def signed(ca, name: str) -> None:
    ca.submit_csr(name, pki.pem(make_csr(name)))
    ca.sign(name)


# --- a command that names nothing -----------------------------------------------------------


@pytest.mark.parametrize("command", ["revoke", "clean"])
@pytest.mark.parametrize("given", ["", ",", " , ,"])
def test_revoke_or_clean_of_no_name_is_a_usage_error_not_success(
    settings, tmp_path: Path, command: str, given: str
) -> None:
    """``splitca revoke "$HOST"`` with an empty variable names nothing: that must not exit 0
    (the script would go on believing the host revoked)."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    signed(ca, "web.test")
    before = snapshot(settings.cadir)
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(cli, ["--config", str(config), command, given])
    assert result.exit_code == 2, result.output
    assert "no CERTNAME given" in result.output
    assert "Traceback" not in result.output
    assert snapshot(settings.cadir) == before


# --- a 204 carries no content ------------------------------------------------------------------

# Two requests on one keep-alive connection, with Ruby's Net::HTTP: the client of Puppet
# agents and of `puppetserver ca`. It reads each answer from one buffered stream.
_NET_HTTP = r"""
require "net/http"
port, ca, cert, key = ARGV
http = Net::HTTP.new("127.0.0.1", port.to_i)
http.use_ssl = true
http.ca_file = ca
http.verify_hostname = false
http.cert = OpenSSL::X509::Certificate.new(File.read(cert))
http.key = OpenSSL::PKey.read(File.read(key))
http.start do |c|
  deleted = c.delete("/puppet-ca/v1/certificate_request/del2.test")
  puts "#{deleted.code} #{deleted.body.inspect}"
  crl = c.get("/puppet-ca/v1/certificate_revocation_list/ca")
  puts "#{crl.code} #{crl.body.lines.first.inspect}"
end
"""


def test_deleting_a_csr_answers_a_204_without_content_and_the_connection_stays_in_step(
    settings,
) -> None:
    """RFC 9110 15.3.5: a 204 ends with its head. puppetserver's handler gives its DELETE
    certificate_request a body (Jetty and Apache drop it on the wire); sent as it was, a
    keep-alive client reads none of it and takes it for the start of the next answer on
    the connection (Net::HTTP: "wrong status line: \"Deleted certificate request ...")."""
    ruby = require_program("ruby")
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    for name in ("del1.test", "del2.test"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    r = wsgi_call(app, "DELETE", f"{V1}/certificate_request/del1.test", client=admin)
    assert (r.status, r.body) == (204, b"")
    assert "Content-Length" not in r.headers  # RFC 9110 8.6: never in a 204
    assert ca.csr_pem("del1.test") is None

    with running(settings, app) as port:
        argv = [ruby, "-e", _NET_HTTP, str(port), str(settings.cadir / "ca_crt.pem")]
        argv += [str(settings.effective_server_cert), str(settings.effective_server_key)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["204 nil", '200 "-----BEGIN X509 CRL-----\\n"']
    assert ca.csr_pem("del2.test") is None
