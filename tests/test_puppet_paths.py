"""Defaults that are Puppet's paths follow the installed agent (`puppet config print`), cached,
bounded in time, else the layout that is there (Puppet's own /etc/puppetlabs or Debian's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitca.split import puppet

from .conftest import require_program


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(puppet, "_memo", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def fake_puppet(tmp_path: Path, body: str) -> Path:
    prog = tmp_path / "bin" / "puppet"
    prog.parent.mkdir(exist_ok=True)
    prog.write_text("#!/bin/sh\n" + body)
    prog.chmod(0o755)
    return prog


@pytest.mark.interop
def test_a_default_follows_the_installed_debian_puppet(tmp_path: Path) -> None:
    """Debian's puppet-agent keeps the ssldir in /var/lib/puppet/ssl; apache-config's
    defaults point there, not at a missing /etc/puppetlabs/puppet/ssl."""
    program = require_program("puppet")
    said = subprocess.run(
        [program, "config", "print", "ssldir", "confdir"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    settings = dict(line.split(" = ", 1) for line in said.splitlines() if " = " in line)
    ssldir = settings["ssldir"]
    if settings["confdir"] == "/etc/puppet":  # Debian's package, as on this machine
        assert ssldir == "/var/lib/puppet/ssl"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop(puppet.PROGRAM_ENV, None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitca",
            "apache-config",
            "--site",
            "master",
            "--server-name",
            "m.test",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert f"SSLCACertificateFile {ssldir}/certs/ca.pem" in out.stdout
    assert f"SSLCARevocationFile {ssldir}/crl.pem" in out.stdout
    assert f"SSLCertificateFile {ssldir}/certs/m.test.pem" in out.stdout
    assert (tmp_path / "cache" / "splitca" / "puppet-paths.json").is_file()  # asked once


def test_the_answer_is_cached_until_the_program_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    prog = fake_puppet(
        tmp_path,
        f"echo x >> {calls}\n"
        "echo 'confdir = /srv/puppet'\necho 'ssldir = /srv/puppet/ssl'\necho 'certname = m1'\n",
    )
    monkeypatch.setenv(puppet.PROGRAM_ENV, str(prog))
    first = puppet.local_puppet()
    assert (first.ssldir, first.localcacert, first.hostcrl, first.certname) == (
        Path("/srv/puppet/ssl"),
        Path("/srv/puppet/ssl/certs/ca.pem"),
        Path("/srv/puppet/ssl/crl.pem"),
        "m1",
    )
    monkeypatch.setattr(puppet, "_memo", {})  # another process: the file cache answers
    assert puppet.local_puppet() == first
    assert calls.read_text().count("x") == 1
    prog.write_text(prog.read_text().replace("/srv/puppet/ssl", "/srv/other/ssl"))
    monkeypatch.setattr(puppet, "_memo", {})
    assert puppet.local_puppet().ssldir == Path("/srv/other/ssl")
    assert calls.read_text().count("x") == 2


def test_without_an_answer_the_layout_that_is_there_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aio = puppet.Layout("puppetlabs", tmp_path / "puppetlabs", tmp_path / "puppetlabs/ssl")
    debian = puppet.Layout("debian", tmp_path / "etc-puppet", tmp_path / "var-lib-puppet/ssl")
    monkeypatch.setattr(puppet, "AIO", aio)
    monkeypatch.setattr(puppet, "DEBIAN", debian)
    # A puppet that hangs is given up after TIMEOUT.
    monkeypatch.setattr(puppet, "TIMEOUT", 0.5)
    monkeypatch.setenv(puppet.PROGRAM_ENV, str(fake_puppet(tmp_path, "exec sleep 30\n")))
    assert puppet.local_puppet().ssldir == aio.ssldir  # neither there: Puppet's own layout
    debian.confdir.mkdir()
    monkeypatch.setattr(puppet, "_memo", {})
    monkeypatch.setenv(puppet.PROGRAM_ENV, "none")
    found = puppet.local_puppet()
    assert (found.ssldir, found.localcacert, found.source) == (
        debian.ssldir,
        debian.ssldir / "certs" / "ca.pem",
        "debian layout",
    )
    monkeypatch.setattr(puppet, "_memo", {})
    monkeypatch.setenv(puppet.PROGRAM_ENV, str(fake_puppet(tmp_path, "exit 1\n")))
    assert puppet.local_puppet().ssldir == debian.ssldir


def test_sync_crl_presents_the_host_certificate_only_if_the_pinned_ca_issued_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host certificate of another CA would fail the TLS handshake: it is not presented."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import ec

    from splitca import pki
    from splitca.cli.split import _host_identity
    from splitca.store.files.signer import LoadedKey

    now = dt.datetime.now(dt.UTC)
    ssl = tmp_path / "ssl"
    (ssl / "certs").mkdir(parents=True)
    (ssl / "private_keys").mkdir()
    cas = []
    for i in (1, 2):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = pki.build_ca_certificate(key, f"CA {i}", now=now, ttl=dt.timedelta(days=1))
        (tmp_path / f"ca{i}.pem").write_bytes(pki.pem(cert))
        cas.append(LoadedKey(key, cert))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    tbs = cas[0].prepare_leaf(
        public_key=leaf_key.public_key(),
        certname="m1.test",
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
        alt_names=(),
        extensions=(),
    )
    (ssl / "certs" / "m1.test.pem").write_bytes(pki.pem(cas[0].sign_leaf(tbs, 7)))
    (ssl / "private_keys" / "m1.test.pem").write_bytes(pki.private_key_pem(leaf_key))
    prog = fake_puppet(
        tmp_path, f"echo 'confdir = {tmp_path}'\necho 'ssldir = {ssl}'\necho 'certname = m1.test'\n"
    )
    monkeypatch.setenv(puppet.PROGRAM_ENV, str(prog))
    mine = (ssl / "certs" / "m1.test.pem", ssl / "private_keys" / "m1.test.pem")
    assert _host_identity(tmp_path / "ca1.pem") == mine
    assert _host_identity(tmp_path / "ca2.pem") == (None, None)
