"""Files and operations tell the truth: setup writes nothing it was not asked to, a failed
command leaves nothing behind, no cadir write follows a symlink, a CRL change is audited the
moment it takes effect, and `serve` on a busy port says so in one line."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from splitca import compose, fs, pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.errors import NotDurable, StoreError
from splitca.store.files.audit import AuditLog
from splitca.store.files.cadir import CADir
from splitca.store.files.filestore import FileStore
from splitca.store.files.index import Index

from .conftest import copy_fixture_cadir, free_port, make_csr, make_settings, write_config
from .test_faults_disk import _fill, tiny_fs  # noqa: F401 - tiny_fs is a fixture

FIXTURE_CERTNAME = "localhost"  # puppetserver's own host certificate is signed/localhost.pem


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under *root*: kind, mode and a hash of the bytes (or the link target)."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[str(p.relative_to(root))] = ("dir", st.st_mode, "")
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p.relative_to(root))] = ("file", st.st_mode, digest)
    return out


def splitca(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def generate(config: Path, ssldir: Path) -> Result:
    """`splitca generate node1` (a quick RSA-2048 key) into *ssldir*."""
    args = ["--config", str(config), "generate", "node1", "--key-size", "2048"]
    return CliRunner().invoke(cli, [*args, "--ssldir", str(ssldir)])


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `splitca` command, in its own process (its own stderr logging)."""
    return subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: Result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert "Traceback" not in result.output
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


# --- setup on an existing CA ----------------------------------------------------------------------


def test_setup_on_a_puppetserver_cadir_changes_no_byte(tmp_path: Path) -> None:
    cadir = copy_fixture_cadir(tmp_path / "ca")
    before = tree(cadir)
    for _ in range(2):
        result = splitca("--cadir", str(cadir), "setup", "--certname", FIXTURE_CERTNAME)
        assert result.exit_code == 0, result.output
        assert "CA already exists" in result.output and "nothing changed" in result.output
        assert "splitca setup --server-identity" in result.output  # what to do next
        assert tree(cadir) == before  # not a byte, not a new file, not a directory


def test_server_identity_never_replaces_puppetservers_certificate(tmp_path: Path) -> None:
    cadir = copy_fixture_cadir(tmp_path / "ca")
    before = tree(cadir)
    result = splitca(
        "--cadir", str(cadir), "setup", "--server-identity", "--certname", FIXTURE_CERTNAME
    )
    assert result.exit_code == 4, result.output
    error = one_line_error(result)
    assert f"signed/{FIXTURE_CERTNAME}.pem already exists" in error
    assert "never replaces" in error and "server_cert" in error
    after = tree(cadir)
    # Only splitca's private index and locks were created; puppetserver's files are untouched.
    assert {k: v for k, v in after.items() if not k.startswith(".splitca")} == before


def test_server_identity_for_an_imported_ca_then_serve(tmp_path: Path) -> None:
    cadir = copy_fixture_cadir(tmp_path / "ca")
    config = write_config(
        tmp_path / "splitca.yaml",
        Settings.from_mapping({"cadir": str(cadir), "certname": "ca.example.com"}),
    )
    # Without a server identity, serve says what to run, in one line.
    serve = subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(config), "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 5, serve.stderr
    assert "Traceback" not in serve.stderr
    assert "splitca setup --server-identity" in serve.stderr.strip().splitlines()[-1]

    localhost = (cadir / "signed" / "localhost.pem").read_bytes()
    result = splitca("--config", str(config), "setup", "--server-identity")
    assert result.exit_code == 0, result.output
    assert "Issued the CA server's certificate" in result.output
    server = cadir / "server"
    cert = x509.load_pem_x509_certificate((server / "cert.pem").read_bytes())
    assert pki.first_cn(cert.subject) == "ca.example.com"
    assert (cadir / "signed" / "ca.example.com.pem").read_bytes() == (
        server / "cert.pem"
    ).read_bytes()
    assert stat.S_IMODE((server / "key.pem").stat().st_mode) == 0o600
    assert (cadir / "signed" / "localhost.pem").read_bytes() == localhost

    # Asked again: nothing to do, nothing changed.
    before = tree(cadir)
    again = splitca("--config", str(config), "setup", "--server-identity")
    assert again.exit_code == 0 and "nothing changed" in again.output

    def files(t: dict[str, tuple[str, int, str]]) -> dict[str, tuple[str, int, str]]:
        return {k: v for k, v in t.items() if not k.startswith(".splitca") and k != "audit.log"}

    assert files(tree(cadir)) == files(before)

    # A run that stopped after issuing (cert.pem not yet written) is finished with its key,
    # without issuing again.
    (server / "cert.pem").unlink()
    serial = (cadir / "serial").read_bytes()
    finish = splitca("--config", str(config), "setup", "--server-identity")
    assert finish.exit_code == 0, finish.output
    assert "Installed the CA server's certificate" in finish.output
    assert (server / "cert.pem").read_bytes() == (
        cadir / "signed" / "ca.example.com.pem"
    ).read_bytes()
    assert (cadir / "serial").read_bytes() == serial


def test_first_setup_still_issues_the_server_identity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    result = compose.setup_ca(settings)
    assert result.created
    assert settings.effective_server_cert.exists() and settings.effective_server_key.exists()
    assert settings.cadir.joinpath("signed", "ca.test.pem").read_bytes() == (
        settings.effective_server_cert.read_bytes()
    )


# --- generate --ssldir ----------------------------------------------------------------------------


def test_generate_to_an_unusable_ssldir_issues_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    cadir = settings.cadir
    config = write_config(tmp_path / "splitca.yaml", settings)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    before = {p: (cadir / p).read_bytes() for p in ("serial", "inventory.txt")}
    signed = sorted(os.listdir(cadir / "signed"))
    result = generate(config, blocker / "ssl")
    assert result.exit_code == 5, result.output
    assert "--ssldir" in one_line_error(result)
    assert {p: (cadir / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(cadir / "signed")) == signed
    # The name is not blocked: a good destination works at once.
    ok = generate(config, tmp_path / "ssl")
    assert ok.exit_code == 0, ok.output
    key = pki.load_private_key((tmp_path / "ssl" / "private_keys" / "node1.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "ssl" / "certs" / "node1.pem").read_bytes())
    assert pki.public_key_pem(cert.public_key()) == pki.public_key_pem(key.public_key())
    # Refused (the name is taken): no directories are left behind either.
    again = generate(config, tmp_path / "other" / "ssl")
    assert again.exit_code == 4 and "already has a signed certificate" in one_line_error(again)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("blocked", ["private_keys/node1.pem", "certs/node1.pem", "crl.pem"])
def test_generate_never_issues_a_certificate_it_cannot_deliver(
    tmp_path: Path, blocked: str
) -> None:
    """A destination file that is a directory (or an existing key) fails before issuing, and an
    existing key is never replaced: the name stays free and no key is lost."""
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    cadir = settings.cadir
    config = write_config(tmp_path / "splitca.yaml", settings)
    ssldir = tmp_path / "ssl"
    (ssldir / blocked).mkdir(parents=True)
    before = {p: (cadir / p).read_bytes() for p in ("serial", "inventory.txt")}
    result = generate(config, ssldir)
    assert result.exit_code == 5, result.output
    assert "--ssldir" in one_line_error(result)
    assert {p: (cadir / p).read_bytes() for p in before} == before
    assert not (cadir / "signed" / "node1.pem").exists()
    assert not (ssldir / "private_keys" / "node1.pem").is_file()


def test_generate_never_replaces_an_existing_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings)
    key = tmp_path / "ssl" / "private_keys" / "node1.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"the key in use\n")
    result = generate(config, tmp_path / "ssl")
    assert result.exit_code == 5 and "never replaced" in one_line_error(result)
    assert key.read_bytes() == b"the key in use\n"
    assert not (settings.cadir / "signed" / "node1.pem").exists()


# --- no write through a symlink ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "inventory.txt",
        "audit.log",
        "serial",
        ".splitca/locks/serial.lock",
        ".splitca/index.sqlite3",
    ],
)
def test_cli_refuses_a_planted_symlink_and_leaves_its_target_alone(
    tmp_path: Path, planted: str
) -> None:
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings)
    target = tmp_path / "victim"
    target.write_bytes(b"root's file\n")
    link = settings.cadir / planted
    if link.exists():
        link.unlink()
    link.symlink_to(target)
    result = generate(config, tmp_path / "ssl")
    assert result.exit_code == 5, result.output
    error = one_line_error(result)
    assert "symbolic link" in error and planted in error
    assert target.read_bytes() == b"root's file\n"
    assert link.is_symlink()
    assert not (settings.cadir / "signed" / "node1.pem").exists()
    assert not (tmp_path / "ssl").exists()


@pytest.mark.parametrize(
    ("swapped", "operation"),
    [
        ("signed", "generate"),  # the certificate's rename
        (".splitca/tmp", "generate"),  # staging
        (".splitca/locks", "generate"),  # lock files
        ("requests", "submit"),  # a pending CSR
        ("signed", "clean"),  # deleting signed/NAME.pem
    ],
)
def test_a_directory_swapped_for_a_link_after_the_check_is_never_written_through(
    tmp_path: Path, swapped: str, operation: str
) -> None:
    """Whoever can write the cadir swaps one of its directories for a link after the CA was
    opened (its up-front check passed): nothing may be created, renamed or removed there."""
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    ca = open_ca(settings)
    if operation == "clean":
        ca.generate("node1", key_size=2048)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "node1.pem").write_bytes(b"root's file\n")
    real = settings.cadir / swapped
    os.rename(real, tmp_path / "real-dir")
    real.symlink_to(evil)
    with pytest.raises(StoreError, match="symbolic link"):
        if operation == "generate":
            ca.generate("node2", key_size=2048)
        elif operation == "submit":
            ca.submit_csr("node2", pki.pem(make_csr("node2")))
        else:
            ca.clean(["node1"])
    assert sorted(os.listdir(evil)) == ["node1.pem"]
    assert (evil / "node1.pem").read_bytes() == b"root's file\n"


def test_append_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"keep\n")
    link = tmp_path / "inventory.txt"
    link.symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        fs.append_line(link, b"0x0002 x y /CN=evil\n", mode=0o644)
    assert target.read_bytes() == b"keep\n"


def test_audit_log_never_follows_a_symlink(tmp_path: Path, caplog) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"keep\n")
    link = tmp_path / "audit.log"
    link.symlink_to(target)
    with caplog.at_level(logging.ERROR):
        assert AuditLog(link).event("sign", certname="x") is False
    assert target.read_bytes() == b"keep\n"
    assert "symbolic link" in caplog.text and "'sign' not recorded" in caplog.text


def test_lock_file_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    link = tmp_path / "serial.lock"
    link.symlink_to(target)  # dangling: following it would create the target
    with pytest.raises(StoreError, match="symbolic link"), fs.FileLock(link)():
        pass
    assert not target.exists()


def test_index_database_never_opened_through_a_symlink(tmp_path: Path) -> None:
    cadir = CADir(tmp_path / "ca")
    cadir.private.mkdir(parents=True)
    target = tmp_path / "victim"
    for suffix in ("", "-wal"):
        path = Path(f"{cadir.index_path}{suffix}")
        path.symlink_to(target)
        with pytest.raises(StoreError, match="symbolic link"):
            Index(cadir).refresh()
        assert not target.exists()
        path.unlink()


def test_staging_replaces_a_planted_temp_link_and_rename_replaces_a_link(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "victim"
    target.write_bytes(b"keep\n")
    dest = tmp_path / "ca_crl.pem"
    planted = tmp_path / f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    planted.symlink_to(target)
    dest.symlink_to(target)
    fs.atomic_write(dest, b"new\n", mode=0o644)
    assert target.read_bytes() == b"keep\n"
    assert not dest.is_symlink() and dest.read_bytes() == b"new\n"
    assert not os.path.lexists(planted)


# --- a CRL change is audited when it takes effect -----------------------------------------------


def test_revoke_on_a_full_disk_reports_the_truth_and_audits(tiny_fs: Path) -> None:  # noqa: F811
    settings = make_settings(tiny_fs, autosign=True)
    compose.setup_ca(settings)
    ca = open_ca(settings)
    cert = None
    for name in ("n0", "n1", "n2"):
        result = ca.submit_csr(name, pki.pem(make_csr(name)))
        if name == "n1":
            cert = result.serial
    assert cert is not None
    ca.close()
    # An open connection keeps SQLite's -wal/-shm files in place, so the CLI can open the
    # index on the full disk (creating them needs 32 KiB) and fails only at its commit.
    holder = sqlite3.connect(settings.cadir / ".splitca" / "index.sqlite3")
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    config = write_config(tiny_fs.parent / "splitca.yaml", settings)
    # Fill the disk, then free two pages: room for the new CRL, none for the index.
    spacer = tiny_fs / "spacer"
    spacer.write_bytes(b"\0" * 2 * 4096)
    filler = _fill(tiny_fs, leave=0)
    spacer.unlink()

    result = run_cli(config, "revoke", "n1")
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert f"Revoked n1 (serial {cert})" in result.stdout
    assert "installed and in effect" in result.stderr and "catches up" in result.stderr
    crl = x509.load_pem_x509_crl(settings.cadir.joinpath("ca_crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert) is not None
    events = [json.loads(ln) for ln in settings.effective_audit_log.read_text().splitlines()]
    published = [e for e in events if e["event"] == "crl-published"]
    assert published and published[-1]["revoked"] == [cert]
    assert published[-1]["actor"]["kind"] == "cli"
    assert any(e["event"] == "revoke" and e["certname"] == "n1" for e in events)

    holder.close()
    filler.unlink()  # space comes back: the index catches up from the CRL file
    status = run_cli(config, "status", "n1")
    assert status.returncode == 0 and "n1: revoked" in status.stdout, status.stderr


def test_a_lost_crl_audit_record_is_reported(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = make_settings(tmp_path, audit_log=str(blocker / "audit.log"))
    compose.setup_ca(settings)
    ca = open_ca(settings)
    ca.generate("n1", key_size=2048)
    with caplog.at_level(logging.ERROR):
        ca.revoke(["n1"])
    assert "audit record is lost" in caplog.text


def test_a_crl_renamed_into_place_but_not_synced_is_audited_and_reported_not_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory fsync that fails after the rename (EIO; some filesystems refuse it) leaves
    the new CRL served but not durable: it is audited and recorded, and the revoke fails
    saying what happened and what to run (a crash could undo it; never a silent success)."""
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    ca = open_ca(settings)
    _, cert = ca.generate("n1", key_size=2048)
    real = os.fsync

    def refuse_for_cadir(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")) == settings.cadir.resolve():
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", refuse_for_cadir)
    with pytest.raises(NotDurable, match=r"could not be made durable") as failed:
        ca.revoke(["n1"])
    monkeypatch.undo()
    assert "splitca crl refresh --force" in str(failed.value)
    crl = x509.load_pem_x509_crl(
        pki.split_pem((settings.cadir / "ca_crl.pem").read_bytes(), "X509 CRL")[0]
    )
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    events = [json.loads(line) for line in (settings.cadir / "audit.log").read_text().splitlines()]
    published = [e for e in events if e["event"] == "crl-published"]
    assert published and published[-1]["revoked"] == [cert.serial_number]
    # What the error says to run, once storage is healthy, publishes it durably again.
    number = published[-1]["crl_number"]
    assert ca.refresh_crl(force=True)
    again = x509.load_pem_x509_crl(
        pki.split_pem((settings.cadir / "ca_crl.pem").read_bytes(), "X509 CRL")[0]
    )
    assert pki.crl_number(again) == number + 1
    assert again.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


# --- serve on a busy port ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path, workers: int) -> None:
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    port = free_port()
    config = write_config(tmp_path / "splitca.yaml", settings, listen="127.0.0.1", port=port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        proc = run_cli(config, "serve", "--workers", str(workers))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot listen on 127.0.0.1:{port}: "), proc.stderr
    assert "in use" in last
    assert "CA ready" not in proc.stderr


def test_setup_that_finds_a_ca_made_meanwhile_does_not_wait_on_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `setup --server-identity` at once: the one that finds the CA made by the other,
    under the setup lock, goes on to the server identity instead of waiting for that lock
    (not re-entrant) until LockTimeout."""
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    (settings.cadir / "server" / "cert.pem").unlink()  # a run that stopped half-way
    real = FileStore.missing_parts
    calls = [0]

    def made_meanwhile(self: FileStore) -> list[str]:
        calls[0] += 1  # the first look finds no CA; by the second the other setup made it
        return ["ca_crt.pem"] if calls[0] == 1 else real(self)

    monkeypatch.setattr(FileStore, "missing_parts", made_meanwhile)
    result = compose.setup_ca(settings, server_identity=True)
    assert not result.created
    assert (settings.cadir / "server" / "cert.pem").exists()


def test_crl_show_of_a_file_that_holds_no_crl_names_the_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings)
    (settings.cadir / "ca_crl.pem").write_bytes(b"not a CRL\n")
    result = splitca("--config", str(config), "crl", "show")
    assert result.exit_code == 5, result.output
    assert f"{settings.cadir / 'ca_crl.pem'} holds no CRL" in one_line_error(result)


@pytest.mark.parametrize("where", ["signed", "requests"])
def test_a_certificate_or_request_planted_as_a_link_is_never_served(
    tmp_path: Path, where: str
) -> None:
    """GET certificate/<name> and certificate_request/<name> serve the file verbatim, to
    anyone, without a client certificate. A symbolic link planted as signed/<name>.pem (or
    requests/<name>.pem) by whoever can write the cadir was followed: the CA's private key
    (or any file the server can read) was served to the network. A link there is refused
    (HTTP 503 naming the file; the CLI a one-line error), its target untouched and unread."""
    from splitca.http.wsgiapp import make_app

    from .conftest import wsgi_call

    settings = make_settings(tmp_path)
    compose.setup_ca(settings)
    ca = compose.open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    link = settings.cadir / where / "planted.example.com.pem"
    link.symlink_to(settings.cadir / "ca_key.pem")
    route = "certificate" if where == "signed" else "certificate_request"
    r = wsgi_call(app, "GET", f"/puppet-ca/v1/{route}/planted.example.com")
    assert b"PRIVATE KEY" not in r.body
    assert r.status == 503, (r.status, r.body[:200])
    assert b"symbolic link" in r.body
    # the CA goes on: nothing else is affected
    ca.generate("after-the-plant.example.com")
    r = wsgi_call(app, "GET", "/puppet-ca/v1/certificate/after-the-plant.example.com")
    assert r.status == 200 and r.body.startswith(b"-----BEGIN CERTIFICATE-----")
