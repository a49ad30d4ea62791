"""`--ca-url`: the operator commands against a running `splitca serve`, over real TLS, with an
admin certificate from `splitca generate --ca-client`, answer as they do on the CA host.

Each command runs twice: locally (the served cadir, through --config) and remotely (the CA's
HTTP API, with a --cadir that does not exist, so nothing local can be used). Read-only
commands and refusals are compared byte for byte (stdout, stderr, exit code); commands that
change state run on twin names (l-NAME locally, r-NAME remotely) prepared alike, and are
compared with names, serials, fingerprints, tokens and times masked.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result
from cryptography import x509

from splitca import pki
from splitca.admin import identity
from splitca.admin import remote as remote_admin
from splitca.cli import cli
from splitca.compose import open_ca

from .conftest import Server, make_csr, make_settings, setup_ca, start_server
from .test_outbound_http import Trickler, Web

NOWHERE = "/nonexistent/splitca-remote-test-cadir"
REFUSED = (
    "Error: the CA refused plain.test: not an admin certificate; "
    "generate one with splitca generate --ca-client NAME\n"
)


@dataclass
class Site:
    server: Server
    work: Path

    def local(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(self.server.config), *args])

    def identity(self, name: str = "admin.test") -> list[str]:
        ssl_dir = self.work / f"{name}-ssl"
        return [
            "--cert", str(ssl_dir / "certs" / f"{name}.pem"),
            "--key", str(ssl_dir / "private_keys" / f"{name}.pem"),
            "--ca-cert", str(ssl_dir / "certs" / "ca.pem"),
        ]  # fmt: skip

    def remote(
        self, *args: str, who: str = "admin.test", env: dict[str, str] | None = None
    ) -> Result:
        argv = ["--cadir", NOWHERE, *args, "--ca-url", self.server.url, *self.identity(who)]
        return CliRunner().invoke(cli, argv, env=env)

    def csr(self, *names: str) -> None:
        ca = open_ca(self.server.settings, autosign_at_start=False)
        for name in names:
            ca.submit_csr(name, pki.pem(make_csr(name)))

    def signed(self, *names: str) -> None:
        self.csr(*names)
        assert self.local("sign", *names).exit_code == 0

    def cert(self, name: str) -> x509.Certificate:
        path = self.server.settings.cadir / "signed" / f"{name}.pem"
        return x509.load_pem_x509_certificate(path.read_bytes())


def _identities(run: Callable[..., Result], work: Path) -> None:
    for name, extra in (("admin.test", ["--ca-client"]), ("plain.test", [])):
        ssl_dir = str(work / f"{name}-ssl")
        made = run("generate", name, *extra, "--ssldir", ssl_dir, "--key-size", "2048")
        assert made.exit_code == 0, made.output


def _site(work: Path) -> tuple[Site, Server]:
    # autosign: registry, as a CA that takes registrations is configured (register/enroll
    # warn locally otherwise, which a remote CLI cannot know); token-less CSRs stay pending.
    settings = make_settings(work, autosign="registry")
    setup_ca(settings)
    server = start_server(work, settings)
    site = Site(server, work)
    _identities(site.local, work)
    return site, server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One served CA for the module; every test uses names of its own."""
    made, server = _site(tmp_path_factory.mktemp("remote"))
    yield made
    server.stop()


def same(local: Result, remote: Result) -> None:
    """Byte for byte: stdout, stderr and the exit code, and never a traceback."""
    assert "Traceback" not in local.output + remote.output
    assert (remote.exit_code, remote.stdout, remote.stderr) == (
        local.exit_code,
        local.stdout,
        local.stderr,
    )


_FINGERPRINT = re.compile(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:?\d\d)?")
_HEX = re.compile(r"\b[0-9a-f]{12,}\b")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def masked(text: str, side: str) -> str:
    text = re.sub(rf"\b{side}-", "X-", text)
    text = _FINGERPRINT.sub("FP", text)
    text = re.sub(r'(serials? |"serial":|"serial_number":)\d+', r"\1N", text)
    text = re.sub(r'("revoked":\{[^}]*)', lambda m: re.sub(r"\d+", "N", m.group(1)), text)
    text = _UUID.sub("UUID", _TIME.sub("TIME", text))
    return _HEX.sub("HEX", text)


def twins(local: Result, remote: Result) -> None:
    """The same outcome on twin names: equal once names, serials, fingerprints, tokens and
    times are masked."""
    assert "Traceback" not in local.output + remote.output
    assert remote.exit_code == local.exit_code, (local.output, remote.output)
    assert masked(remote.stdout, "r") == masked(local.stdout, "l")
    assert masked(remote.stderr, "r") == masked(local.stderr, "l")


# --- the same answers -----------------------------------------------------------------------------


READS = [
    ("list",),
    ("list", "--all"),
    ("list", "--signed"),
    ("list", "--revoked"),
    ("list", "--format", "json"),
    ("list", "--all", "--format", "json"),
    ("list", "--revoked", "--format", "json"),
    ("status", "read-signed.test"),
    ("status", "read-signed.test", "--format", "json"),
    ("status", "read-pending.test"),
    ("status", "read-pending.test", "--format", "json"),
    ("status", "read-revoked.test", "--format", "json"),
    ("registrations",),
    ("registrations", "--format", "json"),
    ("registrations", "--state", "waiting"),
]


def test_read_commands_print_the_same_locally_and_remotely(site: Site) -> None:
    site.csr("read-pending.test")
    site.signed("read-signed.test", "read-revoked.test")
    assert site.local("revoke", "read-revoked.test").exit_code == 0
    assert site.local("register", "read-reg.test", "--class", "role::web").exit_code == 0
    for args in READS:
        local = site.local(*args)
        assert local.exit_code == 0, (args, local.output)
        same(local, site.remote(*args))
    listed = json.loads(site.remote("list", "--all", "--format", "json").stdout)
    pending = next(s for s in listed if s["name"] == "read-pending.test")
    assert pending["state"] == "requested" and pending["pending_reason"]  # why: autosign is off


REFUSALS = [
    (("sign", "nobody.test"), 4),
    (("sign", "nobody.test", "--format", "json"), 4),
    (("sign", "refuse-signed.test"), 4),  # already signed
    (("revoke", "nobody.test"), 3),
    (("revoke", "refuse-pending.test"), 3),  # only a CSR: nothing to revoke
    (("revoke", "nobody.test", "--format", "json"), 3),
    (("clean", "nobody.test"), 3),
    (("clean", "nobody.test", "--format", "json"), 3),
    (("status", "nobody.test"), 3),
    (("status", "nobody.test", "--format", "json"), 3),
    (("unregister", "nobody.test"), 3),
    (("register", "refuse-reg.test", "--class", "role::db"), 4),  # already registered
    (("register", "bad..name", "--class", "role::db"), 4),
    (("register", "refuse-bad.test", "--class", "not a class"), 4),
]


def test_refusals_are_the_same_errors_with_the_same_exit_codes(site: Site) -> None:
    site.signed("refuse-signed.test")
    site.csr("refuse-pending.test")
    assert site.local("register", "refuse-reg.test", "--class", "role::db").exit_code == 0
    before = site.local("list", "--all", "--format", "json").stdout
    for args, code in REFUSALS:
        local = site.local(*args)
        assert local.exit_code == code, (args, local.output)
        same(local, site.remote(*args))
    assert site.local("list", "--all", "--format", "json").stdout == before


def test_sign_remotely_as_locally(site: Site) -> None:
    for side in "lr":
        site.csr(f"{side}-web.test", f"{side}-short.test", f"{side}-json.test")
    for args in (("{}-web.test",), ("{}-short.test", "--ttl", "2h"), ("{}-json.test", "--format", "json")):  # fmt: skip
        local = site.local("sign", args[0].format("l"), *args[1:])
        remote = site.remote("sign", args[0].format("r"), *args[1:])
        assert local.exit_code == 0, local.output
        twins(local, remote)
    # what the remote command printed is the certificate the CA issued
    cert = site.cert("r-web.test")
    line = site.local("status", "r-web.test", "--format", "json").stdout
    assert json.loads(line)["serial_number"] == cert.serial_number
    shown = f"SHA256 {pki.fingerprints(pki.der(cert))['SHA256']}"
    assert shown in site.local("status", "r-web.test").stdout.replace("(SHA256)  ", "SHA256 ")
    short = site.cert("r-short.test")
    ttl = short.not_valid_after_utc - short.not_valid_before_utc
    assert ttl.total_seconds() <= 2 * 3600 + 86400  # backdate: one day


def test_sign_all_remotely_as_locally(site: Site) -> None:
    assert site.local("sign", "--all").exit_code == 0  # nothing pending from other tests
    for side in "lr":
        site.csr(f"{side}-all1.test", f"{side}-all2.test")
        local_or_remote = site.local if side == "l" else site.remote
        result = local_or_remote("sign", "--all")
        if side == "l":
            local = result
        else:
            twins(local, result)
    assert local.exit_code == 0, local.output
    assert (site.server.settings.cadir / "signed" / "r-all2.test.pem").exists()


def test_revoke_and_clean_remotely_as_locally(site: Site) -> None:
    for side in "lr":
        site.signed(f"{side}-gone.test", f"{side}-old.test", f"{side}-old2.test")
        site.csr(f"{side}-csr.test")
    cadir = site.server.settings.cadir
    serial = site.cert("r-gone.test").serial_number
    twins(site.local("revoke", "l-gone.test"), site.remote("revoke", "r-gone.test"))
    crl = x509.load_pem_x509_crl((cadir / "ca_crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    twins(
        site.local("revoke", "l-gone.test", "--format", "json"),
        site.remote("revoke", "r-gone.test", "--format", "json"),
    )
    twins(
        site.local("clean", "l-old.test,l-csr.test", "nobody.test"),
        site.remote("clean", "r-old.test,r-csr.test", "nobody.test"),
    )
    assert not (cadir / "signed" / "r-old.test.pem").exists()
    assert not (cadir / "requests" / "r-csr.test.pem").exists()
    local = site.local("clean", "l-old2.test", "--format", "json")
    twins(local, site.remote("clean", "r-old2.test", "--format", "json"))
    assert json.loads(local.stdout) == {
        "cleaned": ["l-old2.test"],
        "csr_deleted": [],
        "not_found": [],
    }


def test_registrations_remotely_as_locally(site: Site) -> None:
    """register, enroll and unregister: the token and the user-data come from the CA, and the
    registration is the CA's (its registry, its audit log, the admin certificate as who)."""
    args = ("--class", "role::web", "--param", "rack=r1", "--environment", "production")
    twins(site.local("register", "l-reg.test", *args), site.remote("register", "r-reg.test", *args))
    twins(
        site.local("register", "l-reg.test", "--replace", "--ttl", "2h", "--format", "json"),
        site.remote("register", "r-reg.test", "--replace", "--ttl", "2h", "--format", "json"),
    )
    shown = json.loads(site.remote("registrations", "--format", "json").stdout)
    assert {r["certname"] for r in shown} >= {"l-reg.test", "r-reg.test"}
    local = site.local("enroll", "--class", "role::worker", "--domain", "fleet.test")
    remote = site.remote("enroll", "--class", "role::worker", "--domain", "fleet.test")
    twins(local, remote)
    assert ".fleet.test" in remote.stdout and "BEGIN CERTIFICATE" in remote.stdout
    local = site.local("enroll", "--prefix", "l-", "--format", "json", "--no-run")
    remote = site.remote("enroll", "--prefix", "r-", "--format", "json", "--no-run")
    twins(local, remote)
    assert sorted(json.loads(remote.stdout)) == ["certname", "expires", "token_id", "user_data"]
    twins(site.local("unregister", "l-reg.test"), site.remote("unregister", "r-reg.test"))
    audit = (site.server.settings.cadir / "audit.log").read_text()
    assert any(
        '"unregister"' in line and "r-reg.test" in line and "admin.test" in line
        for line in audit.splitlines()
    )


# --- who may, and what the remote side trusts -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--all"),
        ("status", "ca.test"),
        ("sign", "nobody.test"),
        ("revoke", "nobody.test"),
        ("clean", "nobody.test"),
        ("registrations",),
        ("register", "who.test"),
        ("unregister", "who.test"),
        ("enroll",),
    ],
)
def test_a_certificate_without_admin_rights_is_refused_clearly(
    site: Site, args: tuple[str, ...]
) -> None:
    before = site.local("list", "--all", "--format", "json").stdout
    result = site.remote(*args, who="plain.test")
    assert (result.exit_code, result.stdout, result.stderr) == (4, "", REFUSED)
    assert site.local("list", "--all", "--format", "json").stdout == before


def test_the_server_is_verified_against_the_given_ca_certificate(
    site: Site, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    argv = ["list", "--ca-url", site.server.url, *site.identity()[:4], "--ca-cert", str(other)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 6, result.output
    assert result.stderr.startswith(f"Error: TLS with {site.server.url}/puppet-ca/v1/")
    assert "failed (is --ca-cert the right CA?)" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_a_ca_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    down, server = _site(tmp_path)
    server.stop()
    for args in (("list",), ("sign", "x.test"), ("registrations",)):
        result = down.remote(*args)
        assert result.exit_code == 6, result.output
        assert result.stderr.startswith(f"Error: cannot reach {server.url}/puppet-ca/v1/")
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--cert", "x.pem"), "--cert only work with --ca-url URL"),
        (("status", "a.test", "--key", "k.pem", "--cert", "c.pem"), "--cert and --key only work"),
        (("list", "--ca-cert", "ca.pem"), "--ca-cert only work with --ca-url"),
    ],
)
def test_remote_options_without_ca_url_are_a_usage_error(
    args: tuple[str, ...], message: str
) -> None:
    result = CliRunner().invoke(cli, ["--cadir", NOWHERE, *args])
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sign", "a.test", "--allow-dns-alt-names"), "--allow-dns-alt-names cannot be used"),
        (("revoke", "a.test", "--reason", "superseded"), "--reason cannot be used with --ca-url"),
    ],
)
def test_what_the_api_cannot_do_is_refused_before_any_change(
    site: Site, args: tuple[str, ...], message: str
) -> None:
    result = site.remote(*args)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_plain_http_is_refused(site: Site) -> None:
    argv = ["list", "--ca-url", f"http://127.0.0.1:{site.server.port}", *site.identity()]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert "--ca-url: 'http://127.0.0.1:" in result.stderr
    assert "must start with https://" in result.stderr


# --- defaults: the agent's ssldir, and SPLITCA_CA_URL ---------------------------------------


def _stub_puppet(bin_dir: Path, script: str) -> dict[str, str]:
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "puppet"
    stub.write_text("#!/bin/sh\n" + script)
    stub.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_the_identity_defaults_to_the_agent_ssldir(site: Site, tmp_path: Path) -> None:
    """As `puppetserver ca`: `puppet config print certname ssldir` names the identity."""
    ssldir = site.work / "admin.test-ssl"
    env = _stub_puppet(
        tmp_path / "bin",
        f'[ "$*" = "config print certname ssldir --section agent" ] || exit 1\n'
        f'echo "certname = admin.test"\necho "ssldir = {ssldir}"\n',
    )
    env["SPLITCA_CA_URL"] = site.server.url
    result = CliRunner().invoke(cli, ["--cadir", NOWHERE, "list", "--all"], env=env)
    same(site.local("list", "--all"), result)


def test_without_puppet_the_fqdn_and_the_default_ssldirs_are_tried(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity, "_puppet", lambda: None)
    ssldir = tmp_path / "debian-ssl"
    monkeypatch.setattr(identity, "FALLBACK_SSLDIRS", (tmp_path / "puppetlabs-ssl", ssldir))
    argv = ["--cadir", NOWHERE, "list", "--all", "--ca-url", site.server.url]
    missing = CliRunner().invoke(cli, argv)
    fqdn = socket.getfqdn().lower().rstrip(".")
    assert missing.exit_code == 2, missing.output
    assert missing.stderr.startswith(
        f"Error: --cert: {tmp_path}/puppetlabs-ssl/certs/{fqdn}.pem does not exist (the agent "
        "ssldir's, from the host name and Puppet's default ssldir)"
    )
    admin = site.work / "admin.test-ssl"
    for sub, name in (
        ("certs", f"{fqdn}.pem"),
        ("private_keys", f"{fqdn}.pem"),
        ("certs", "ca.pem"),
    ):
        (ssldir / sub).mkdir(parents=True, exist_ok=True)
        source = admin / sub / ("ca.pem" if name == "ca.pem" else "admin.test.pem")
        shutil.copy(source, ssldir / sub / name)
    same(site.local("list", "--all"), CliRunner().invoke(cli, argv))


def test_a_missing_default_identity_says_how_to_make_one(tmp_path: Path) -> None:
    env = _stub_puppet(tmp_path / "bin", f'echo "certname = ws.test"\necho "ssldir = {tmp_path}"\n')
    argv = ["list", "--ca-url", "https://127.0.0.1:1"]
    result = CliRunner().invoke(cli, argv, env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: --cert: {tmp_path}/certs/ws.test.pem does not exist (the agent ssldir's, from "
        "puppet config print); give --cert, --key and --ca-cert, or make an admin identity on "
        "the CA host with: splitca generate NAME --ca-client --ssldir DIR\n"
    )


# --- bounded: answers too large or too slow, and what a status means ------------------------


@pytest.fixture
def fake_ca(tmp_path: Path) -> Iterator[Callable[..., tuple[str, list[str]]]]:
    """A TLS server of the test's own (trustme) and an identity trusting it."""
    tls = trustme.CA()
    ca_pem = tmp_path / "fake-ca.pem"
    tls.cert_pem.write_to_path(str(ca_pem))
    client = tls.issue_cert("admin.test")
    cert, key = tmp_path / "admin.pem", tmp_path / "admin.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    ident = ["--cert", str(cert), "--key", str(key), "--ca-cert", str(ca_pem)]
    started: list[Web | Trickler] = []
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.issue_cert("127.0.0.1").configure_cert(ctx)

    def start(
        answer: Callable[[str], Any] | None = None, trickle: str = ""
    ) -> tuple[str, list[str]]:
        server: Web | Trickler = Trickler(trickle, ctx) if trickle else Web(answer, ctx)  # type: ignore[arg-type]
        started.append(server)
        return f"https://127.0.0.1:{server.port}", ident

    yield start
    for server in started:
        server.stop()


def test_a_listing_larger_than_the_bound_is_refused(
    fake_ca: Callable[..., tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_admin, "LIST_MAX_BYTES", 64 * 1024)
    body = json.dumps([{"name": f"n{i}.test", "state": "signed"} for i in range(5000)]).encode()
    url, ident = fake_ca(lambda path: (200, {"Content-Type": "application/json"}, body))
    result = CliRunner().invoke(cli, ["list", "--all", "--ca-url", url, *ident])
    assert result.exit_code == 6, result.output
    assert "more than the limit of 65536 bytes" in result.stderr
    assert "Traceback" not in result.output


def test_a_ca_that_trickles_is_given_up_on_in_time(
    fake_ca: Callable[..., tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_admin, "TIMEOUT", 1.0)
    url, ident = fake_ca(trickle="body")
    result = CliRunner().invoke(cli, ["status", "a.test", "--ca-url", url, *ident])
    assert result.exit_code == 6, result.output
    assert "did not answer within 1s" in result.stderr


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, 5), (502, 6), (500, 6), (404, 3), (409, 4), (400, 4)],
)
def test_an_answer_status_maps_to_the_cli_exit_code(
    fake_ca: Callable[..., tuple[str, list[str]]], status: int, code: int
) -> None:
    url, ident = fake_ca(lambda path: (status, {}, b"the CA says why\x1b[31m\n"))
    result = CliRunner().invoke(cli, ["registrations", "--ca-url", url, *ident])
    assert result.exit_code == code, result.output
    assert "the CA says why?[31m" in result.stderr  # one printable line, no escape sequence
    assert "Traceback" not in result.output


def test_many_pending_csrs_are_cleaned_in_one_command(site: Site) -> None:
    """Each CSR-only name is one DELETE certificate_request on the same connection, each
    answered 204 (puppetserver's handler words a body for it; the client copes with one)."""
    names = [f"many{i}.test" for i in range(25)]
    site.csr(*names)
    result = site.remote("clean", *names, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"cleaned": [], "csr_deleted": names, "not_found": []}
    assert not any((site.server.settings.cadir / "requests" / f"{n}.pem").exists() for n in names)


@pytest.mark.parametrize(
    "body",
    [b"<html>a proxy's page</html>", b"\xff\xfe[]", b'{"not": "a list"}', b'[{"name": 1}]'],
    ids=["html", "utf16", "object", "bad-status"],
)
@pytest.mark.parametrize("args", [("list", "--all"), ("registrations",)])
def test_an_answer_that_is_not_what_the_api_answers_is_a_clear_error(
    fake_ca: Callable[..., tuple[str, list[str]]], body: bytes, args: tuple[str, ...]
) -> None:
    url, ident = fake_ca(lambda path: (200, {"Content-Type": "application/json"}, body))
    result = CliRunner().invoke(cli, [*args, "--ca-url", url, *ident])
    assert result.exit_code == 6, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "body"),
    [
        (("list", "--all"), [{"name": "a\x1b]2;owned\x07.test", "state": "signed", "fingerprint": "AA"}]),
        (("list", "--all"), [{"name": "a.test", "state": "requested", "fingerprint": "AA", "pending_reason": "x\x1b[2Jy"}]),
        (("registrations",), [{"certname": "a\x1b[31m.test", "state": "waiting", "expires": "2030", "classes": [], "environment": ""}]),
        (("registrations",), [{"certname": "a.test", "state": "waiting", "expires": "2030", "classes": ["x\x1b[2J"], "environment": ""}]),
    ],
    ids=["name", "pending-reason", "registration-name", "registration-class"],
)  # fmt: skip
def test_a_ca_cannot_write_control_sequences_to_the_operators_terminal(
    fake_ca: Callable[..., tuple[str, list[str]]], args: tuple[str, ...], body: list[Any]
) -> None:
    # Local names are checked when stored; a listing from --ca-url is outside input.
    data = json.dumps(body).encode()
    url, ident = fake_ca(lambda path: (200, {"Content-Type": "application/json"}, data))
    result = CliRunner().invoke(cli, [*args, "--ca-url", url, *ident])
    assert "\x1b" not in result.output, result.output
    assert result.exit_code == 6, result.output
    assert "control character" in result.stderr and "Traceback" not in result.output
