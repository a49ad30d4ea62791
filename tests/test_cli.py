"""The operator CLI: help everywhere, one-line errors with documented exit codes, JSON for scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.store.files.index import Row

from .conftest import make_csr, setup_ca, snapshot, write_config


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def config(settings, tmp_path: Path) -> Path:
    return write_config(tmp_path / "splitca.yaml", settings)


@pytest.fixture
def set_up(config: Path, settings) -> Path:
    """A CA made by `splitca setup` (for the tests of setup itself)."""
    result = run(config, "setup")
    assert result.exit_code == 0, result.output
    return config


@pytest.fixture
def ready(config: Path, settings) -> Path:
    """A CA as `splitca setup` makes it (a copy of one made once per session)."""
    setup_ca(settings)
    return config


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{name} is listed but does not load"
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, (*prefix, name)))
    return out


@pytest.mark.parametrize("path", all_commands(cli), ids=lambda p: " ".join(p))
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    doc_lines = [ln for ln in result.output.splitlines()[2:] if ln.strip()]
    assert (
        doc_lines and len(doc_lines[0].strip()) > 10
    )  # a sentence that teaches, not an empty help


def test_setup_creates_puppetserver_layout_with_safe_modes(set_up: Path, settings) -> None:
    cadir = settings.cadir
    for name in (
        "ca_crt.pem",
        "ca_key.pem",
        "ca_pub.pem",
        "ca_crl.pem",
        "serial",
        "inventory.txt",
        "infra_inventory.txt",
        "infra_serials",
        "infra_crl.pem",
    ):
        assert (cadir / name).is_file(), name
    assert (cadir / "signed").is_dir() and (cadir / "requests").is_dir()
    assert stat.S_IMODE((cadir / "ca_key.pem").stat().st_mode) & 0o037 == 0  # 0640 or stricter
    assert stat.S_IMODE(settings.effective_server_key.stat().st_mode) == 0o600
    assert (cadir / "serial").read_text() == "0003"
    server = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    assert pki.has_cli_auth(server)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_setup_again_changes_nothing_and_says_so(set_up: Path, settings) -> None:
    before = snapshot(settings.cadir)
    result = run(set_up, "setup")
    assert result.exit_code == 0
    assert "already exists" in result.output and "nothing changed" in result.output
    assert snapshot(settings.cadir) == before


def test_setup_refuses_partial_state(set_up: Path, settings) -> None:
    (settings.cadir / "ca_crl.pem").unlink()
    key_before = (settings.cadir / "ca_key.pem").read_bytes()
    result = run(set_up, "setup")
    assert result.exit_code == 5
    assert "partial state" in result.output and "never replaces a CA key" in result.output
    assert (settings.cadir / "ca_key.pem").read_bytes() == key_before


def test_setup_json(config: Path) -> None:
    result = run(config, "setup", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["created"] is True


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cadir: /tmp/x\ncrl_ttl: soon\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "list"])
    assert result.exit_code == 2
    assert "crl_ttl" in result.output and str(cfg) in result.output
    assert "Traceback" not in result.output
    cfg.write_text("cadir: /tmp/x\nautosgn: true\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "list"])
    assert result.exit_code == 2 and "unknown setting(s) autosgn" in result.output


def test_commands_on_a_missing_ca_explain_setup(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--cadir", str(tmp_path / "none"), "list"])
    assert result.exit_code == 5
    assert "splitca setup" in result.output


def test_list_sign_revoke_clean_flow(ready: Path, settings) -> None:
    ca = open_ca(settings)
    for name in ("a1", "a2", "a3"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    result = run(ready, "list")
    assert (
        result.exit_code == 0
        and "Requested Certificates:" in result.output
        and "a1" in result.output
    )
    pending = json.loads(run(ready, "list", "--pending", "--format", "json").stdout)
    assert [p["name"] for p in pending] == ["a1", "a2", "a3"]
    assert all(p["state"] == "requested" and p["pending_reason"] for p in pending)

    result = run(ready, "sign", "a1")
    assert result.exit_code == 0 and "Signed certificate for a1" in result.output
    result = run(ready, "sign", "nope")
    assert result.exit_code == 4 and "could not sign nope" in result.output
    result = run(ready, "sign", "--all", "--format", "json")
    assert result.exit_code == 0
    assert sorted(r["certname"] for r in json.loads(result.stdout)) == ["a2", "a3"]

    result = run(ready, "revoke", "a1,a2", "--format", "json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert sorted(body["revoked"]) == ["a1", "a2"] and body["not_found"] == []
    result = run(ready, "revoke", "ghost")
    assert result.exit_code == 3 and "no certificate to revoke for ghost" in result.output

    states = {
        s["name"]: s["state"]
        for s in json.loads(run(ready, "list", "--all", "--format", "json").stdout)
    }
    assert states == {"ca.test": "signed", "a1": "revoked", "a2": "revoked", "a3": "signed"}
    assert [
        s["name"] for s in json.loads(run(ready, "list", "--revoked", "--format", "json").stdout)
    ] == ["a1", "a2"]

    result = run(ready, "clean", "a3")
    assert result.exit_code == 0 and "Cleaned a3" in result.output
    assert not (settings.cadir / "signed" / "a3.pem").exists()
    assert run(ready, "clean", "ghost").exit_code == 3
    status = json.loads(run(ready, "status", "a1", "--format", "json").stdout)
    assert status["state"] == "revoked"
    assert run(ready, "status", "ghost").exit_code == 3


def test_sign_with_ttl_and_alt_names_override(ready: Path, settings) -> None:
    ca = open_ca(settings)
    ca.submit_csr("plain", pki.pem(make_csr("plain")))
    result = run(ready, "sign", "plain", "--ttl", "30d")
    assert result.exit_code == 0
    cert = x509.load_pem_x509_certificate((settings.cadir / "signed" / "plain.pem").read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 31  # 30d + 1d backdate
    assert run(ready, "sign", "plain", "--ttl", "soon").exit_code == 2


def test_generate_writes_puppet_ssldir_with_private_key_0600(
    ready: Path, settings, tmp_path: Path
) -> None:
    out = tmp_path / "master1-ssl"
    result = run(
        ready,
        "generate",
        "master1.example.com",
        "--dns-alt-names",
        "puppet,master1.example.com",
        "--ssldir",
        str(out),
        "--key-size",
        "2048",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)
    key = Path(paths["key"])
    assert key == out / "private_keys" / "master1.example.com.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(Path(paths["cert"]).read_bytes())
    sans = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert set(sans) == {"puppet", "master1.example.com"}
    assert not pki.has_cli_auth(cert)
    assert Path(paths["ca"]).read_bytes() == (settings.cadir / "ca_crt.pem").read_bytes()
    assert Path(paths["crl"]).read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
    # same name again: refused, nothing overwritten
    again = run(
        ready, "generate", "master1.example.com", "--ssldir", str(out), "--key-size", "2048"
    )
    assert again.exit_code == 4 and "already has a signed certificate" in again.output
    admin = run(
        ready,
        "generate",
        "admin1",
        "--ca-client",
        "--ssldir",
        str(tmp_path / "admin"),
        "--key-size",
        "2048",
    )
    assert admin.exit_code == 0
    assert pki.has_cli_auth(
        x509.load_pem_x509_certificate((tmp_path / "admin/certs/admin1.pem").read_bytes())
    )
    bad = run(
        ready, "generate", "x", "--dns-alt-names", "FTP:nope", "--ssldir", str(tmp_path / "x")
    )
    assert bad.exit_code == 4 and "--dns-alt-names" in bad.output


def test_crl_show_and_refresh(ready: Path) -> None:
    info = json.loads(run(ready, "crl", "show", "--format", "json").stdout)
    assert info["crl_number"] == 0 and info["entries"] == 0 and info["signature_valid"] is True
    result = run(ready, "crl", "refresh")
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = run(ready, "crl", "refresh", "--force", "--format", "json")
    body = json.loads(result.stdout)
    assert body["reissued"] is True and body["crl_number"] == 1


def _populate(settings) -> list[Row]:
    """A CA with a pending CSR, signed and revoked certificates; its statuses, as indexed."""
    ca = open_ca(settings)
    for name in ("pending.test", "signed.test", "revoked.test"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    ca.sign("signed.test")
    ca.sign("revoked.test")
    ca.revoke(["revoked.test"])
    rows = list(ca.statuses())
    states = {r.name: r.state for r in rows}
    assert {k: states[k] for k in ("pending.test", "signed.test", "revoked.test")} == {
        "pending.test": "requested",
        "signed.test": "signed",
        "revoked.test": "revoked",
    }
    return _without_reasons(rows)


def _without_reasons(rows: Iterable[Row]) -> list[Row]:
    # pending_reason is recorded when a CSR arrives, not kept in the cadir: a rebuild
    # cannot know it (everything else of a status comes from the files).
    return [dataclasses.replace(r, reason="") for r in rows]


def test_index_rebuild_restores_what_the_files_say(ready: Path, settings) -> None:
    before = _populate(settings)
    # An index that lies behind the files' back: its stamps still match, so only a
    # rebuild (not the automatic refresh) notices.
    index = settings.cadir / ".splitca" / "index.sqlite3"
    with contextlib.closing(sqlite3.connect(index)) as db, db:
        db.executescript("DELETE FROM certs; DELETE FROM csrs; DELETE FROM revoked;")
    assert list(open_ca(settings).statuses()) == []
    result = run(ready, "index", "rebuild")
    assert result.exit_code == 0 and "Index rebuilt" in result.output, result.output
    assert "{'requested': 1, 'signed': 2, 'revoked': 1}" in result.output
    assert _without_reasons(open_ca(settings).statuses()) == before


def test_index_rebuild_recreates_a_deleted_index(ready: Path, settings) -> None:
    before = _populate(settings)
    index = settings.cadir / ".splitca" / "index.sqlite3"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    result = run(ready, "index", "rebuild")
    assert result.exit_code == 0 and "Index rebuilt" in result.output, result.output
    assert index.is_file()
    with contextlib.closing(sqlite3.connect(index)) as db:
        names = {n for (n,) in db.execute("SELECT name FROM certs UNION SELECT name FROM csrs")}
    assert names == {r.name for r in before}
    assert _without_reasons(open_ca(settings).statuses()) == before


def test_usage_errors_exit_2(ready: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(ready), "sign"])
    assert result.exit_code == 2 and "CERTNAME" in result.output
    result = CliRunner().invoke(cli, ["--config", str(ready), "revoke"])
    assert result.exit_code == 2


# --- global options, before or after the command -------------------------------------------------


@pytest.mark.parametrize("path", all_commands(cli), ids=lambda p: " ".join(p))
def test_every_command_takes_the_global_options_after_it(path: tuple[str, ...]) -> None:
    """`splitca setup --cadir DIR` (README's first command) and the like, for every command."""
    globals_after = ["--config", "c.yaml", "--cadir", "ca", "-v", "-q", "--help"]
    result = CliRunner().invoke(cli, [*path, *globals_after])
    assert result.exit_code == 0, result.output
    # listed once, in their own section after the command's own options
    assert result.output.count("--cadir DIR") == 1, result.output
    own, _, shared = result.output.partition("Global options (before or after the command):")
    assert "--cadir" in shared and "--cadir" not in own


def test_cadir_after_the_command_is_used(tmp_path: Path) -> None:
    cadir = tmp_path / "ca"
    result = CliRunner().invoke(
        cli,
        ["setup", "--cadir", str(cadir), "--certname", "ca.test", "--key-size", "2048"],
        env={"SPLITCA_CONFIG": None},
    )
    assert result.exit_code == 0, result.output
    assert (cadir / "ca_crt.pem").is_file()
    for args in (["crl", "show", "--cadir", str(cadir)], ["crl", "--cadir", str(cadir), "show"]):
        result = CliRunner().invoke(cli, [*args, "--format", "json"], env={"SPLITCA_CONFIG": None})
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["crl_number"] == 0


def test_global_option_given_twice_must_agree(ready: Path, settings, tmp_path: Path) -> None:
    cadir = str(settings.cadir)
    same = run(ready, "--cadir", cadir, "crl", "show", "--cadir", cadir + "/")
    assert same.exit_code == 0, same.output
    before = snapshot(settings.cadir)
    other = CliRunner().invoke(
        cli, ["--cadir", cadir, "revoke", "ca.test", "--cadir", str(tmp_path / "other")]
    )
    assert other.exit_code == 2
    assert "--cadir" in other.output and "give it once" in other.output
    assert "Traceback" not in other.output
    assert snapshot(settings.cadir) == before  # refused before anything ran


def test_config_after_the_command_wins_over_the_environment(
    ready: Path, settings, tmp_path: Path
) -> None:
    elsewhere = write_config(tmp_path / "elsewhere.yaml", settings.replace(cadir=tmp_path / "nope"))
    result = CliRunner().invoke(
        cli, ["list", "--all", "--config", str(ready)], env={"SPLITCA_CONFIG": str(elsewhere)}
    )
    assert result.exit_code == 0, result.output
    assert "ca.test" in result.output
    # ...and the environment alone still works
    result = CliRunner().invoke(cli, ["list", "--all"], env={"SPLITCA_CONFIG": str(ready)})
    assert result.exit_code == 0 and "ca.test" in result.output


def test_verbose_after_the_command_logs_debug(ready: Path) -> None:
    import logging

    root = logging.getLogger()
    old = root.level
    try:
        assert run(ready, "crl", "show", "-v").exit_code == 0
        assert root.level == logging.DEBUG
        assert run(ready, "-q", "crl", "show").exit_code == 0
        assert run(ready, "crl", "show", "-q").exit_code == 0
        assert root.level == logging.ERROR
    finally:
        root.setLevel(old)


def test_sign_all_reports_an_unsignable_csr_and_signs_the_rest(ready: Path, settings) -> None:
    """`splitca sign --all` (the one bulk path, as POST sign/all): a stored CSR whose name
    is longer than a CN gets a one-line error, exit 4, and every other CSR is signed."""
    import os
    import subprocess
    import sys

    from .test_api import _long_cn_csr

    ca = open_ca(settings)
    long_name = "a" * 70  # first in name order
    ca.store.cadir.csr_path(long_name).write_bytes(_long_cn_csr(long_name))
    for name in ("n1", "n2"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    serial = ca.store.cadir.read_serial()
    proc = subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(ready), "sign", "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: could not sign {long_name}: Certificate names must be at most 64 characters "
        "long (the limit of a certificate's common name, RFC 5280); this one has 70."
    ]
    assert [ln.split(" (")[0] for ln in proc.stdout.splitlines()] == [
        "Signed certificate for n1",
        "Signed certificate for n2",
    ]
    assert ca.state_of("n1") == ca.state_of("n2") == "signed"
    assert ca.store.cadir.read_serial() == serial + 2
    result = run(ready, "sign", "n1", "n3", "--format", "json")
    assert result.exit_code == 4
    assert [r["signed"] for r in json.loads(result.stdout)] == [False, False]


def test_pending_reason_is_spliced_the_same_everywhere(ready: Path, settings) -> None:
    """CLI status/list and HTTP certificate_status(es) show one pending_reason, one way."""
    from splitca.http.wsgiapp import make_app

    from .conftest import wsgi_call

    ca = open_ca(settings)
    ca.submit_csr("p1", pki.pem(make_csr("p1")))
    reason = ca.status("p1").reason
    assert reason and "'" in reason
    shown = json.loads(run(ready, "status", "p1", "--format", "json").stdout)
    listed = json.loads(run(ready, "list", "--format", "json").stdout)
    admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
    app = make_app(ca=ca)
    one = json.loads(
        wsgi_call(app, "GET", "/puppet-ca/v1/certificate_status/p1", client=admin).body
    )
    many = json.loads(
        wsgi_call(app, "GET", "/puppet-ca/v1/certificate_statuses/any", client=admin).body
    )
    # `status` adds what an operator asks next (extensions, challengePassword) to the object.
    extras = ("extensions", "challenge_password")
    assert {k: v for k, v in shown.items() if k not in extras} == listed[0] == one == many[0]
    assert shown["pending_reason"] == reason and shown["state"] == "requested"


def test_with_pending_reason_escapes_and_skips_empty() -> None:
    status = '{"state":"requested","name":"x"}'
    assert pki.with_pending_reason(status, "") == status
    spliced = pki.with_pending_reason(status, 'no "match"\n\u00e9')
    assert json.loads(spliced) == {
        "state": "requested",
        "name": "x",
        "pending_reason": 'no "match"\n\u00e9',
    }
