"""The certificate lifecycle at its edges, as agents, operators and their scripts drive it:
what names nothing is refused, a 204 carries nothing, and bulk signing never grants the CA."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.errors import PolicyViolation
from splitca.http.wsgiapp import make_app

from .conftest import (
    make_csr,
    make_settings,
    require_program,
    setup_ca,
    signed,
    snapshot,
    start_server,
    write_config,
    wsgi_call,
)
from .test_exchange import running

V1 = "/puppet-ca/v1"


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
    certificate_request a body; sent on the wire after the 204's head, as it was, a
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


# --- bulk signing never grants the CA -----------------------------------------------------------


def _reserved_ca(tmp_path: Path):
    """A CA with an admin certname no one has enrolled yet, and a CSR for it from whoever
    asked first (certificate_request is open to anyone), next to an ordinary one."""
    settings = make_settings(tmp_path, admin_certnames=["boss.test"])
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    for name in ("boss.test", "web.test"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    return settings, ca


RESERVED_LINE = (
    "boss.test is a reserved name (the CA's own certname or an admin certname): a bulk "
    "signing never signs it; check who asked for it, then 'splitca sign boss.test'"
)


def test_sign_all_over_the_api_leaves_a_reserved_name_pending(tmp_path: Path) -> None:
    """POST sign/all signed a CSR for an admin certname along with the rest, and its
    holder could then administer the CA. It is left pending among the signing errors."""
    settings, ca = _reserved_ca(tmp_path)
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    r = wsgi_call(app, "POST", f"{V1}/sign/all", b"{}", client=admin)
    assert r.status == 200
    assert json.loads(r.body) == {
        "signed": ["web.test"],
        "no-csr": [],
        "signing-errors": ["boss.test"],
    }
    assert ca.state_of("boss.test") == "requested"
    # Named, it is signed: that is the operator's deliberate act.
    r = wsgi_call(app, "POST", f"{V1}/sign", b'{"certnames":["boss.test"]}', client=admin)
    assert json.loads(r.body)["signed"] == ["boss.test"]


def test_cli_sign_all_leaves_a_reserved_name_pending_and_says_why(tmp_path: Path) -> None:
    settings, ca = _reserved_ca(tmp_path)
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(cli, ["--config", str(config), "sign", "--all"])
    assert result.exit_code == 4, result.output  # refused: one name could not be signed
    assert result.stderr == f"Error: could not sign boss.test: {RESERVED_LINE}\n"
    assert result.stdout.startswith("Signed certificate for web.test (serial ")
    assert ca.state_of("boss.test") == "requested" and ca.state_of("web.test") == "signed"
    named = CliRunner().invoke(cli, ["--config", str(config), "sign", "boss.test"])
    assert named.exit_code == 0, named.output
    assert ca.state_of("boss.test") == "signed"


def test_remote_sign_all_leaves_a_reserved_name_pending_as_locally(tmp_path: Path) -> None:
    settings, ca = _reserved_ca(tmp_path)
    server = start_server(tmp_path, settings)
    try:
        ssl_dir = tmp_path / "ops-ssl"
        generate = ["generate", "ops.test", "--ca-client", "--ssldir", str(ssl_dir)]
        made = CliRunner().invoke(
            cli, ["--config", str(server.config), *generate, "--key-size", "2048"]
        )
        assert made.exit_code == 0, made.output
        identity = [
            "--cert", str(ssl_dir / "certs" / "ops.test.pem"),
            "--key", str(ssl_dir / "private_keys" / "ops.test.pem"),
            "--ca-cert", str(ssl_dir / "certs" / "ca.pem"),
        ]  # fmt: skip
        remote = ["--ca-url", server.url, *identity]
        result = CliRunner().invoke(
            cli,
            ["--cadir", "/nonexistent", "sign", "--all", "--format", "json", *remote],
        )
    finally:
        server.stop()
    assert result.exit_code == 4, result.output
    done = {r["certname"]: r for r in json.loads(result.stdout)}
    assert done["boss.test"] == {"certname": "boss.test", "signed": False, "error": RESERVED_LINE}
    assert done["web.test"]["signed"] is True
    assert ca.state_of("boss.test") == "requested"


# --- alt names an operator types ------------------------------------------------------------------


@pytest.mark.parametrize(
    "alt",
    ["DNS:", "puppet,DNS: ", "DNS:a b", "DNS:x/../y", "foo..bar", "DNS:-x", "a" * 64, "x.*"],
)
def test_generate_with_an_alt_name_that_is_no_dns_name_issues_nothing(
    settings, tmp_path: Path, alt: str
) -> None:
    """`generate --dns-alt-names 'DNS:'` issued a certificate with an empty dNSName
    (RFC 5280 4.2.1.6 forbids it; TLS stacks refuse or mismatch such names)."""
    setup_ca(settings)
    before = snapshot(settings.cadir)
    config = write_config(tmp_path / "splitca.yaml", settings)
    argv = ["generate", "m1.test", "--dns-alt-names", alt, "--ssldir", str(tmp_path / "m1")]
    result = CliRunner().invoke(cli, ["--config", str(config), *argv, "--key-size", "2048"])
    assert result.exit_code == 4, result.output
    assert result.output.startswith("Error: --dns-alt-names: ") and result.output.count("\n") == 1
    assert snapshot(settings.cadir) == before and not (tmp_path / "m1").exists()


def test_alt_names_that_are_dns_names_are_taken_as_they_are() -> None:
    names = pki.parse_alt_names(["puppet", "DNS:Master1.Example.COM.", "*.ex.org", "IP:::1"])
    assert [pki.general_name_str(n) for n in names] == [
        "DNS:puppet",
        "DNS:master1.example.com.",
        "DNS:*.ex.org",
        "IP:::1",
    ]


# --- what an agent wrote reaches the operator's terminal as text ---------------------------------

_FORGED = "web\x1b]0;pwned\x07\n  pending:             approved by ops\u202e"


def test_status_prints_a_csrs_extension_values_as_one_line_of_text(
    settings, tmp_path: Path
) -> None:
    """Anyone may submit a CSR; its pp_role is the agent's string. 'splitca status NAME',
    what an operator reads before signing, printed it raw: escape sequences reached the
    terminal and a newline forged lines of the report."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    csr = make_csr("forged.test", extensions=[("1.3.6.1.4.1.34380.1.1.13", _FORGED)])
    ca.submit_csr("forged.test", pki.pem(csr))
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(cli, ["--config", str(config), "status", "forged.test"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0].strip() for line in lines[2:]] == [
        "alt names",
        "pp_role",
        "challengePassword",
        "pending",
        "fingerprint SHA256",
        "fingerprint SHA1",
        "fingerprint SHA512",
    ]
    assert r"  pp_role:             web\x1b]0;pwned\x07\n  pending:" in result.output
    assert not any(not c.isprintable() for c in result.output.replace("\n", "").replace("\t", ""))


@pytest.mark.parametrize("bad", ["", "x\ny", "a\x1b]0;pwned\x07", "a b", "foo..bar"])
def test_a_csr_alt_name_that_is_no_dns_name_is_refused_even_when_alt_names_are_allowed(
    tmp_path: Path, bad: str
) -> None:
    """With allow_subject_alt_names, whatever string a CSR carried as a dNSName was signed
    into the certificate (an empty one, a newline for the logs that show it, escapes)."""
    settings = make_settings(tmp_path, allow_subject_alt_names=True, autosign=True)
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    csr = make_csr("agent.test", raw_extensions=[_sans("agent.test", bad)])
    with pytest.raises(PolicyViolation) as refused:
        ca.submit_csr("agent.test", pki.pem(csr))
    assert refused.value.kind == "disallowed-extension"
    assert "is not a DNS name" in str(refused.value)
    assert ca.state_of("agent.test") is None
    # a DNS name (a wildcard too: allow_subject_alt_names trusts agents with them) is signed
    fine = make_csr("ok.test", raw_extensions=[_sans("ok.test", "*.ok.example")])
    assert ca.submit_csr("ok.test", pki.pem(fine)).signed
    # DNS:<certname> passed the certname rules, which allow what DNS does not (a 64-char label)
    long = "a" * 64
    assert ca.submit_csr(long, pki.pem(make_csr(long, raw_extensions=[_sans(long)]))).signed


def _sans(*dns: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName(n) for n in dns])


# --- a body too large or too slow is that, on every route ----------------------------------------


class _Stalled:
    """A request body whose client stopped sending (what a WSGI server's read raises)."""

    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("timed out")


def test_a_sign_body_too_large_or_too_slow_is_413_or_408_not_a_schema_violation(
    settings,
) -> None:
    """POST sign answers a body that is not {"certnames": [...]} with puppetserver's 422;
    that answer also took a body past max_body_bytes (413 everywhere else) and one that
    stopped arriving (408): a client told its JSON is wrong would resend the same."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    big = b'{"certnames":["' + b"a" * settings.max_body_bytes + b'"]}'
    r = wsgi_call(app, "POST", f"{V1}/sign", big, client=admin)
    assert (r.status, r.text) == (
        413,
        f"Request body is larger than {settings.max_body_bytes} bytes.",
    )
    slow = {"wsgi.input": _Stalled(), "CONTENT_LENGTH": "20"}
    r = wsgi_call(app, "POST", f"{V1}/sign", client=admin, environ_extra=slow)  # type: ignore[dict-item]
    assert (r.status, r.text) == (408, "The request body did not arrive in time.")
    r = wsgi_call(app, "POST", f"{V1}/sign", b'{"certnames":"x"}', client=admin)
    assert r.status == 422  # what the route's own answer is for
