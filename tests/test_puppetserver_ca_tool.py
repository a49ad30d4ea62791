"""The real `puppetserver ca` tool (Debian's ruby-puppetserver-ca-cli) against `splitca serve`.

Every online action (list, sign, revoke, clean, generate) through the API of a running
splitca with two workers, checking the tool's exit codes and what ends up in the cadir; the
status check that makes the tool refuse its offline actions while the CA runs; and the
CA directories written by the tool's offline `setup` and `import`, served by splitca.

The commands are the ones docs/api.md ("Using `puppetserver ca`") shows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from splitca import compose, pki
from splitca.config import Settings

from .conftest import (
    REPO,
    REQUIRE_INTEROP,
    Agent,
    Server,
    fast_key,
    free_port,
    make_csr,
    openssl,
    require_program,
    snapshot,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

# The package has no binary of its own; this is what puppetserver's `puppetserver ca` runs.
RUBY_CLI = 'require "puppetserver/ca/cli"; exit Puppetserver::Ca::Cli.run(ARGV, $stdout, $stderr)'
ONLINE_REFUSAL = (
    "Puppetserver service is running. Please stop it before attempting to run this command."
)


def require_puppetserver_ca() -> list[str]:
    """argv prefix of the `puppetserver ca` tool; like require_program, a missing library
    FAILS under the README's test command (SPLITCA_REQUIRE_INTEROP=1) instead of skipping."""
    ruby = require_program("ruby")
    probe = subprocess.run(
        [ruby, "-e", 'require "puppetserver/ca/cli"'], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        why = f"the puppetserver-ca ruby library is not installed ({probe.stderr.strip()[:200]})"
        if REQUIRE_INTEROP:
            pytest.fail(f"{why}; the test command installs ruby-puppetserver-ca-cli")
        pytest.skip(f"{why}; run scripts/test.sh to install ruby-puppetserver-ca-cli")
    return [ruby, "-e", RUBY_CLI, "--"]


@dataclass
class Tool:
    """`puppetserver ca ... --config <puppet.conf>` with its own confdir and HOME."""

    argv: list[str]
    root: Path
    conf: Path

    def write_conf(self, **settings: str | int | Path) -> None:
        # confdir: keeps the tool away from /etc/puppet (csr_attributes.yaml, default cadir).
        # keylength: 2048 only to keep the tests quick (the tool's default is 4096).
        values: dict[str, str | int | Path] = {
            "confdir": self.root / "confdir",
            "keylength": 2048,
            **settings,
        }
        lines = ["[main]", *(f"{k} = {v}" for k, v in values.items())]
        self.conf.write_text("\n".join(lines) + "\n")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HOME=str(self.root))
        return subprocess.run(
            [*self.argv, *args, "--config", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.root,
        )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture
def tool_factory(tmp_path: Path) -> Callable[[str], Tool]:
    argv = require_puppetserver_ca()

    def factory(name: str) -> Tool:
        root = tmp_path / f"tool-{name}"
        root.mkdir()
        return Tool(argv, root, root / "puppet.conf")

    return factory


@dataclass
class Online:
    """A running splitca (two workers) and the tool configured as one of its admins."""

    server: Server
    tool: Tool
    ssldir: Path

    @property
    def cadir(self) -> Path:
        return self.server.settings.cadir

    def submit(self, *names: str) -> None:
        """PUT a CSR for each name, as an agent does."""
        with requests.Session() as s:
            s.trust_env = False
            s.verify = str(self.server.cacert)
            for name in names:
                r = s.put(
                    f"{self.server.url}/puppet-ca/v1/certificate_request/{name}",
                    data=pki.pem(make_csr(name)),
                    headers={"Content-Type": "text/plain"},
                    timeout=30,
                )
                assert r.status_code == 200, r.text


def admin_identity(server: Server, certname: str, ssldir: Path) -> None:
    """`splitca generate NAME --ca-client --ssldir DIR`: an admin client in Puppet's ssldir layout."""
    made = server.cli(
        "generate", certname, "--ca-client", "--ssldir", str(ssldir), "--key-size", "2048"
    )
    assert made.returncode == 0, made.stderr


def configure_online(
    tool: Tool, server: Server, certname: str, ssldir: Path, **extra: object
) -> None:
    tool.write_conf(
        certname=certname, ssldir=ssldir, ca_server="127.0.0.1", ca_port=server.port, **extra
    )


@pytest.fixture
def online(
    settings: Settings, server_factory: Callable[..., Server], tool_factory: Callable[[str], Tool]
) -> Online:
    compose.setup_ca(settings)
    server = server_factory(settings, workers=2)
    tool = tool_factory("admin")
    ssldir = tool.root / "ssl"
    admin_identity(server, "admin.test", ssldir)
    configure_online(tool, server, "admin.test", ssldir)
    return Online(server, tool, ssldir)


def signed_serial(cadir: Path, name: str) -> int:
    return x509.load_pem_x509_certificate(
        (cadir / "signed" / f"{name}.pem").read_bytes()
    ).serial_number


def crl_serials(cadir: Path) -> set[int]:
    crls = [
        x509.load_pem_x509_crl(b)
        for b in pki.split_pem((cadir / "ca_crl.pem").read_bytes(), "X509 CRL")
    ]
    return {entry.serial_number for crl in crls for entry in crl}


def verify_chain(cert: Path, cadir: Path) -> subprocess.CompletedProcess[bytes]:
    """`openssl verify -crl_check_all`: every CA of the chain needs its CRL, as agents check."""
    return openssl(
        "verify",
        "-crl_check_all",
        "-CAfile",
        str(cadir / "ca_crt.pem"),
        "-CRLfile",
        str(cadir / "ca_crl.pem"),
        str(cert),
    )


# --- the CA is online: the tool must not write the cadir itself ---------------------------


def test_status_endpoint_answers_running_without_a_client_certificate(online: Online) -> None:
    """What the tool's check_server_online asks (no client certificate), through the real server."""
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(online.server.cacert)
        for path in ("/status/v1/simple", "/status/v1/simple/ca"):
            r = s.get(online.server.url + path, timeout=10)
            assert (r.status_code, r.text) == (200, "running"), path
            assert r.headers["Content-Type"].startswith("text/plain")


def test_tool_sees_the_running_ca_and_refuses_offline_writes(online: Online) -> None:
    """`generate --ca-client` and `prune` sign/write the cadir offline; against a running
    splitca they must stop at the status check and change nothing."""
    before = snapshot(online.cadir)
    ssl_before = sorted(p.relative_to(online.ssldir) for p in online.ssldir.rglob("*"))
    online.tool.write_conf(
        certname="admin.test",
        ssldir=online.ssldir,
        ca_server="127.0.0.1",
        ca_port=online.server.port,
        cadir=online.cadir,
    )
    generated = online.tool.run("generate", "--certname", "admin2.test", "--ca-client")
    assert generated.returncode == 1, output(generated)
    assert ONLINE_REFUSAL in generated.stdout + generated.stderr, output(generated)
    pruned = online.tool.run("prune")
    assert pruned.returncode == 1, output(pruned)
    assert ONLINE_REFUSAL in pruned.stdout + pruned.stderr, output(pruned)
    assert snapshot(online.cadir) == before
    assert sorted(p.relative_to(online.ssldir) for p in online.ssldir.rglob("*")) == ssl_before


# --- online actions ---------------------------------------------------------------------------


def test_list_shows_pending_requests(online: Online) -> None:
    empty = online.tool.run("list")
    assert empty.returncode == 0, output(empty)
    assert "No certificates to list" in empty.stdout
    online.submit("agent1.test", "agent2.test")
    listed = online.tool.run("list")
    assert listed.returncode == 0, output(listed)
    lines = listed.stdout.splitlines()
    assert lines[0] == "Requested Certificates:"
    assert sorted(line.split()[0] for line in lines[1:]) == ["agent1.test", "agent2.test"]
    assert all("(SHA256)" in line for line in lines[1:])


def test_list_all_and_json(online: Online) -> None:
    online.submit("pending.test", "signed.test", "revoked.test")
    assert online.server.cli("sign", "signed.test", "revoked.test").returncode == 0
    assert online.server.cli("revoke", "revoked.test").returncode == 0

    text = online.tool.run("list", "--all")
    assert text.returncode == 0, output(text)
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.stdout.splitlines():
        if line.endswith("Certificates:"):
            current = line
            sections[current] = []
        else:
            sections[current].append(line.split()[0])
    assert sections == {
        "Requested Certificates:": ["pending.test"],
        "Signed Certificates:": ["admin.test", "ca.test", "signed.test"],
        "Revoked Certificates:": ["revoked.test"],
    }
    assert "authorization extensions: [pp_cli_auth: true]" in text.stdout

    as_json = online.tool.run("list", "--all", "--format", "json")
    assert as_json.returncode == 0, output(as_json)
    grouped = json.loads(as_json.stdout)
    assert {k: sorted(c["name"] for c in v) for k, v in grouped.items()} == {
        "requested": ["pending.test"],
        "signed": ["admin.test", "ca.test", "signed.test"],
        "revoked": ["revoked.test"],
    }
    pending_json = online.tool.run("list", "--format", "json")
    assert pending_json.returncode == 0, output(pending_json)
    assert [c["name"] for c in json.loads(pending_json.stdout)["requested"]] == ["pending.test"]

    # --certname: a name the CA does not know is reported and makes the exit code 1.
    some = online.tool.run("list", "--certname", "signed.test,nobody.test")
    assert some.returncode == 1, output(some)
    assert "Missing Certificates:" in some.stdout and "nobody.test" in some.stdout


def test_sign_certname(online: Online) -> None:
    online.submit("web1.test", "short.test")
    signed = online.tool.run("sign", "--certname", "web1.test")
    assert signed.returncode == 0, output(signed)
    assert "Successfully signed certificate request for web1.test" in signed.stdout
    assert (online.cadir / "signed" / "web1.test.pem").exists()
    assert not (online.cadir / "requests" / "web1.test.pem").exists()

    # Alt names beyond DNS:<name> in the CSR are refused (allow_subject_alt_names is off);
    # the tool reports it and nothing is signed.
    alt = online.tool.run("generate", "--certname", "alt.test", "--subject-alt-names", "puppet")
    assert alt.returncode == 1, output(alt)
    assert "code: 400" in alt.stderr, output(alt)
    assert not (online.cadir / "signed" / "alt.test.pem").exists()
    assert not (online.cadir / "requests" / "alt.test.pem").exists()
    check = verify_chain(online.cadir / "signed" / "web1.test.pem", online.cadir)
    assert check.returncode == 0, check.stdout + check.stderr

    # --ttl is converted to seconds by the tool (cert_ttl).
    ttl = online.tool.run("sign", "--certname", "short.test", "--ttl", "2h")
    assert ttl.returncode == 0, output(ttl)
    cert = x509.load_pem_x509_certificate((online.cadir / "signed" / "short.test.pem").read_bytes())
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1) < left <= dt.timedelta(hours=2)

    missing = online.tool.run("sign", "--certname", "nobody.test")
    assert missing.returncode == 1, output(missing)
    assert "Could not find certificate request for nobody.test" in missing.stderr


def test_sign_all(online: Online) -> None:
    names = ["a.test", "b.test", "c.test"]
    online.submit(*names)
    signed = online.tool.run("sign", "--all")
    assert signed.returncode == 0, output(signed)
    for name in names:
        assert f"Successfully signed certificate request for {name}" in signed.stdout
        assert (online.cadir / "signed" / f"{name}.pem").exists()
    assert not list((online.cadir / "requests").iterdir())
    serials = {signed_serial(online.cadir, n) for n in [*names, "admin.test", "ca.test"]}
    assert len(serials) == 5

    again = online.tool.run("sign", "--all")
    assert again.returncode == 24, output(again)
    assert "No waiting certificate requests to sign" in again.stderr


def test_revoke(online: Online) -> None:
    online.submit("gone.test", "pending.test")
    assert online.server.cli("sign", "gone.test").returncode == 0
    serial = signed_serial(online.cadir, "gone.test")

    revoked = online.tool.run("revoke", "--certname", "gone.test")
    assert revoked.returncode == 0, output(revoked)
    assert "Certificate for gone.test has been revoked" in revoked.stdout
    assert serial in crl_serials(online.cadir)
    check = verify_chain(online.cadir / "signed" / "gone.test.pem", online.cadir)
    assert check.returncode != 0 and b"revoked" in check.stdout + check.stderr
    status = online.server.cli("status", "gone.test", "--format", "json")
    assert json.loads(status.stdout)["state"] == "revoked"

    # A CSR without a certificate: 409, which the tool reports with exit code 24.
    unsigned = online.tool.run("revoke", "--certname", "pending.test")
    assert unsigned.returncode == 24, output(unsigned)
    assert "Could not revoke unsigned csr for pending.test" in unsigned.stderr
    assert (online.cadir / "requests" / "pending.test.pem").exists()

    unknown = online.tool.run("revoke", "--certname", "nobody.test")
    assert unknown.returncode == 1, output(unknown)
    assert "Could not find certificate for nobody.test" in unknown.stderr


def test_clean(online: Online) -> None:
    online.submit("old.test", "pending.test")
    assert online.server.cli("sign", "old.test").returncode == 0
    serial = signed_serial(online.cadir, "old.test")

    cleaned = online.tool.run("clean", "--certname", "old.test")
    assert cleaned.returncode == 0, output(cleaned)
    assert "Certificate for old.test has been revoked" in cleaned.stdout
    assert "Cleaned files related to old.test" in cleaned.stdout
    assert not (online.cadir / "signed" / "old.test.pem").exists()
    assert serial in crl_serials(online.cadir)
    assert online.server.cli("status", "old.test").returncode == 3

    # Only a CSR: the revoke half answers 409 (exit 24, as with puppetserver), the CSR is gone.
    csr_only = online.tool.run("clean", "--certname", "pending.test")
    assert csr_only.returncode == 24, output(csr_only)
    assert "Cleaned files related to pending.test" in csr_only.stdout
    assert not (online.cadir / "requests" / "pending.test.pem").exists()

    unknown = online.tool.run("clean", "--certname", "nobody.test")
    assert unknown.returncode == 1, output(unknown)
    assert "Could not find files to clean for nobody.test" in unknown.stderr


# NOTE: `puppetserver ca generate` builds its CSR with version 2 (Ruby `csr.version = 2`);
# splitca's CSR loading rejects those with a 500 until the CSR-version fix of issue 8 (a
# separate change) is merged. This test then passes; it is kept failing, not skipped.
def test_generate_through_the_api(online: Online) -> None:
    """`generate --certname NAME`: the tool makes the key and CSR, PUTs the CSR, signs it
    with PUT certificate_status and downloads the certificate into its ssldir."""
    generated = online.tool.run("generate", "--certname", "web1.test")
    assert generated.returncode == 0, output(generated)
    key_file = online.ssldir / "private_keys" / "web1.test.pem"
    cert_file = online.ssldir / "certs" / "web1.test.pem"
    assert key_file.exists() and cert_file.exists()
    assert cert_file.read_bytes() == (online.cadir / "signed" / "web1.test.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert pki.first_cn(cert.subject) == "web1.test"
    check = verify_chain(cert_file, online.cadir)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (online.cadir / "requests" / "web1.test.pem").exists()

    # Alt names beyond DNS:<name> in the CSR are refused (allow_subject_alt_names is off);
    # the tool reports it and nothing is signed.
    alt = online.tool.run("generate", "--certname", "alt.test", "--subject-alt-names", "puppet")
    assert alt.returncode == 1, output(alt)
    assert "code: 400" in alt.stderr, output(alt)
    assert not (online.cadir / "signed" / "alt.test.pem").exists()
    assert not (online.cadir / "requests" / "alt.test.pem").exists()


def test_generate_ca_client_offline_then_served(
    online: Online, server_factory: Callable[..., Server]
) -> None:
    """With splitca stopped, `generate --ca-client` signs an admin certificate into the cadir
    itself; splitca, started again, serves it, accepts it as an admin and never reuses its serial."""
    online.server.stop()
    online.tool.write_conf(
        certname="admin.test",
        ssldir=online.ssldir,
        ca_server="127.0.0.1",
        ca_port=free_port(),  # nothing listens: the tool's status check says "offline"
        cadir=online.cadir,
    )
    generated = online.tool.run("generate", "--certname", "admin2.test", "--ca-client")
    assert generated.returncode == 0, output(generated)
    admin2 = signed_serial(online.cadir, "admin2.test")

    server = server_factory(online.server.settings, workers=2)
    configure_online(online.tool, server, "admin2.test", online.ssldir)
    listed = online.tool.run("list", "--all", "--format", "json")
    assert listed.returncode == 0, output(listed)
    signed = {c["name"]: c for c in json.loads(listed.stdout)["signed"]}
    assert signed["admin2.test"]["authorization_extensions"] == {"pp_cli_auth": "true"}
    assert signed["admin2.test"]["serial_number"] == admin2

    Online(server, online.tool, online.ssldir).submit("next.test")
    signed_next = online.tool.run("sign", "--certname", "next.test")
    assert signed_next.returncode == 0, output(signed_next)
    assert signed_serial(online.cadir, "next.test") > admin2


# --- the tool's offline setup and import, served by splitca ------------------------------------


def serve_tool_cadir(
    tool: Tool,
    cadir: Path,
    ssldir: Path,
    server_factory: Callable[..., Server],
    **settings: object,
) -> Server:
    """splitca over a cadir the tool made, with the CA host identity the tool made."""
    raw: dict[str, object] = {
        "cadir": str(cadir),
        "certname": "ca.test",
        "server_cert": str(ssldir / "certs" / "ca.test.pem"),
        "server_key": str(ssldir / "private_keys" / "ca.test.pem"),
        "key_size": 2048,
        **settings,
    }
    server = server_factory(Settings.from_mapping(raw), workers=2)
    # From now on the tool administers splitca with the identity it gave itself.
    configure_online(tool, server, "ca.test", ssldir, cadir=cadir)
    return server


def test_setup_output_is_served(
    tool_factory: Callable[[str], Tool],
    server_factory: Callable[..., Server],
    agent_factory: Callable[[str], Agent],
    tmp_path: Path,
) -> None:
    """`puppetserver ca setup` (root + intermediate CA) into an empty cadir; splitca serves it:
    a real agent bootstraps, and the tool lists and revokes through splitca."""
    tool = tool_factory("setup")
    cadir, ssldir = tool.root / "ca", tool.root / "ssl"
    tool.write_conf(certname="ca.test", ssldir=ssldir, cadir=cadir)
    setup = tool.run("setup", "--subject-alt-names", "localhost,IP:127.0.0.1")
    assert setup.returncode == 0, output(setup)
    assert len(pki.load_certificates((cadir / "ca_crt.pem").read_bytes())) == 2
    before = snapshot(cadir)

    server = serve_tool_cadir(tool, cadir, ssldir, server_factory, autosign=True)
    assert snapshot(cadir) == before  # serving changes nothing by itself

    agent = agent_factory("agent1.test")
    boot = agent.bootstrap(server.port)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert agent.cacert_path.read_bytes() == (cadir / "ca_crt.pem").read_bytes()
    check = verify_chain(agent.cert_path, cadir)
    assert check.returncode == 0, check.stdout + check.stderr

    listed = tool.run("list", "--all", "--format", "json")
    assert listed.returncode == 0, output(listed)
    assert sorted(c["name"] for c in json.loads(listed.stdout)["signed"]) == [
        "agent1.test",
        "ca.test",
    ]
    revoked = tool.run("revoke", "--certname", "agent1.test")
    assert revoked.returncode == 0, output(revoked)
    # The new CRL replaces the intermediate's and keeps the root's: the chain still checks.
    assert len(pki.split_pem((cadir / "ca_crl.pem").read_bytes(), "X509 CRL")) == 2
    check = verify_chain(agent.cert_path, cadir)
    assert check.returncode != 0 and b"revoked" in check.stdout + check.stderr


def _ca_cert(
    subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _crl(issuer: str, key: rsa.RSAPrivateKey) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=30))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("root_first", [False, True], ids=["signing-ca-first", "root-first"])
def test_import_output_is_served(
    tool_factory: Callable[[str], Tool],
    server_factory: Callable[..., Server],
    tmp_path: Path,
    root_first: bool,
) -> None:
    """`puppetserver ca import` of an external root + intermediate (bundle and CRL chain in
    either order, which the tool accepts); splitca serves it, signs with the intermediate and
    keeps the chain's CRLs; the tool signs and cleans through splitca."""
    tool = tool_factory("import")
    root_key, inter_key = fast_key(), fast_key()
    root = _ca_cert("External Root CA", root_key, "External Root CA", root_key)
    inter = _ca_cert("External Puppet CA", inter_key, "External Root CA", root_key)
    certs = [pki.pem(root), pki.pem(inter)] if root_first else [pki.pem(inter), pki.pem(root)]
    crls = [
        pki.pem(_crl("External Root CA", root_key)),
        pki.pem(_crl("External Puppet CA", inter_key)),
    ]
    if not root_first:
        crls.reverse()
    bundle, chain, key_file = (
        tool.root / "bundle.pem",
        tool.root / "crls.pem",
        tool.root / "key.pem",
    )
    bundle.write_bytes(b"".join(certs))
    chain.write_bytes(b"".join(crls))
    key_file.write_bytes(
        inter_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cadir, ssldir = tool.root / "ca", tool.root / "ssl"
    tool.write_conf(certname="ca.test", ssldir=ssldir, cadir=cadir)
    imported = tool.run(
        "import",
        "--cert-bundle",
        str(bundle),
        "--private-key",
        str(key_file),
        "--crl-chain",
        str(chain),
        "--subject-alt-names",
        "localhost,IP:127.0.0.1",
    )
    assert imported.returncode == 0, output(imported)

    server = serve_tool_cadir(tool, cadir, ssldir, server_factory)
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(cadir / "ca_crt.pem")
        r = s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10)
        assert r.content == (cadir / "ca_crt.pem").read_bytes()
        r = s.put(
            f"{server.url}/puppet-ca/v1/certificate_request/agent1.test",
            data=pki.pem(make_csr("agent1.test")),
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
        assert r.status_code == 200, r.text

    signed = tool.run("sign", "--certname", "agent1.test")
    assert signed.returncode == 0, output(signed)
    agent_cert = cadir / "signed" / "agent1.test.pem"
    cert = x509.load_pem_x509_certificate(agent_cert.read_bytes())
    assert cert.issuer == inter.subject
    check = verify_chain(agent_cert, cadir)
    assert check.returncode == 0, check.stdout + check.stderr

    kept = tmp_path / "agent1.pem"
    kept.write_bytes(agent_cert.read_bytes())
    cleaned = tool.run("clean", "--certname", "agent1.test")
    assert cleaned.returncode == 0, output(cleaned)
    assert not agent_cert.exists()
    issuers = {
        x509.load_pem_x509_crl(b).issuer
        for b in pki.split_pem((cadir / "ca_crl.pem").read_bytes(), "X509 CRL")
    }
    assert issuers == {root.subject, inter.subject}
    check = verify_chain(kept, cadir)
    assert check.returncode != 0 and b"revoked" in check.stdout + check.stderr


def test_docs_show_these_commands() -> None:
    """docs/api.md ("Using `puppetserver ca`") shows the invocation, settings and actions these
    tests run (with example names where the tests use their own)."""
    doc = (REPO / "docs" / "api.md").read_text()
    assert f"ruby -e '{RUBY_CLI}' --" in doc
    for shown in (
        "splitca generate admin.example.com --ca-client --ssldir",
        # the tests' puppet.conf keys (plus confdir and keylength, for isolation and speed)
        "certname = ",
        "ssldir = ",
        "ca_server = ",
        "ca_port = ",
        "cadir = ",
        "puppetserver-ca list --config",
        "puppetserver-ca list --all --config",
        "puppetserver-ca list --all --format json --config",
        "puppetserver-ca sign --certname agent1.example.com --config",
        "puppetserver-ca sign --all --config",
        "puppetserver-ca revoke --certname agent1.example.com --config",
        "puppetserver-ca clean --certname agent1.example.com --config",
        "puppetserver-ca generate --certname web1.example.com --config",
        "puppetserver-ca setup --subject-alt-names puppet-ca,ca.example.com --config",
        "puppetserver-ca import --cert-bundle bundle.pem --private-key key.pem "
        "--crl-chain crls.pem --subject-alt-names puppet-ca,ca.example.com --config",
        "server_cert: ",
        "server_key: ",
        "/status/v1/simple/ca",
    ):
        assert shown in doc, shown
