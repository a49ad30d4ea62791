"""Retention: `splitca purge --expired` removes long-expired certificates' files and CRL entries, once."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings

from .conftest import Server, make_csr, setup_ca, snapshot, write_config

NOW = dt.datetime.now(dt.UTC)


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def issue_at(settings: Settings, name: str, when: dt.datetime, *, revoke: bool) -> int:
    """A certificate issued at *when*, valid for a day (so expired since when + 1 day)."""
    ca = open_ca(settings, autosign_at_start=False, clock=lambda: when)
    ca.submit_csr(name, pki.pem(make_csr(name)))
    cert = ca.sign(name, ttl=dt.timedelta(days=1))
    if revoke:
        ca.revoke([name])
    return cert.serial_number


def crl_serials(settings: Settings) -> set[int]:
    pem = pki.split_pem((settings.cadir / "ca_crl.pem").read_bytes(), "X509 CRL")[0]
    return {e.serial_number for e in x509.load_pem_x509_crl(pem)}


def crl_number(settings: Settings) -> int:
    pem = pki.split_pem((settings.cadir / "ca_crl.pem").read_bytes(), "X509 CRL")[0]
    return pki.crl_number(x509.load_pem_x509_crl(pem))


@pytest.fixture
def site(settings: Settings, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    settings = settings.replace(crl_prune_expired=False)  # only purge removes entries here
    setup_ca(settings)
    serials = {
        "old-revoked": issue_at(settings, "old-revoked", NOW - dt.timedelta(days=200), revoke=True),
        "old-signed": issue_at(settings, "old-signed", NOW - dt.timedelta(days=200), revoke=False),
        "recent-revoked": issue_at(
            settings, "recent-revoked", NOW - dt.timedelta(days=10), revoke=True
        ),
        "valid-revoked": issue_at(settings, "valid-revoked", NOW, revoke=True),
    }
    return write_config(tmp_path / "splitca.yaml", settings), serials


def test_dry_run_reports_and_changes_nothing(
    settings: Settings, site: tuple[Path, dict[str, int]]
) -> None:
    config, serials = site
    before = snapshot(settings.cadir)
    out = run(config, "purge", "--expired", "--older-than", "90d", "--dry-run", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["dry_run"] is True and data["crl_number"] is None
    assert data["certificates"] == {
        "old-revoked": serials["old-revoked"],
        "old-signed": serials["old-signed"],
    }
    assert data["crl_entries"] == [serials["old-revoked"]]
    assert snapshot(settings.cadir) == before
    calls: list[tuple[int, int]] = []
    open_ca(settings, autosign_at_start=False).purge_expired(
        dt.timedelta(days=90),
        dry_run=True,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 2)]  # long runs report progress (the CLI on stderr)
    text = run(config, "purge", "--expired", "--older-than", "90d", "--dry-run")
    assert text.stdout.startswith("Would remove 2 certificate file(s) and 1 CRL entry")


def test_purge_removes_files_and_crl_entries_keeps_inventory_and_audit(
    settings: Settings, site: tuple[Path, dict[str, int]]
) -> None:
    config, serials = site
    number = crl_number(settings)
    inventory = (settings.cadir / "inventory.txt").read_text()
    out = run(config, "purge", "--expired", "--older-than", "90d", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert sorted(data["certificates"]) == ["old-revoked", "old-signed"]
    assert data["crl_number"] == number + 1 == crl_number(settings)  # re-signed once
    signed = settings.cadir / "signed"
    assert not (signed / "old-revoked.pem").exists() and not (signed / "old-signed.pem").exists()
    assert (signed / "recent-revoked.pem").exists() and (signed / "valid-revoked.pem").exists()
    assert crl_serials(settings) == {serials["recent-revoked"], serials["valid-revoked"]}
    assert (settings.cadir / "inventory.txt").read_text() == inventory
    assert run(config, "status", "old-signed").exit_code == 3
    audit = [json.loads(x) for x in settings.effective_audit_log.read_text().splitlines()]
    assert {e["certname"] for e in audit if e["event"] == "purge"} == {"old-revoked", "old-signed"}
    # A serial of a purged certificate is never reused: the next one is above all of them.
    ca = open_ca(settings, autosign_at_start=False)
    ca.submit_csr("next", pki.pem(make_csr("next")))
    assert ca.sign("next").serial_number > max(serials.values())

    again = run(config, "purge", "--expired", "--older-than", "90d")
    assert again.stdout.startswith("Removed 0 certificate file(s) and 0 CRL entries")
    assert crl_number(settings) == number + 1  # nothing to do: no re-sign


def test_purge_needs_what_to_purge(site: tuple[Path, dict[str, int]]) -> None:
    out = run(site[0], "purge")
    assert out.exit_code == 2 and "--expired" in out.output


def test_serve_purges_on_a_schedule(
    settings: Settings, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    setup_ca(settings)
    issue_at(settings, "gone", NOW - dt.timedelta(days=200), revoke=True)
    server = server_factory(settings, purge_expired_after=90 * 86400)
    deadline = time.monotonic() + 30
    # The file goes first; the summary is logged after the CRL's re-sign that follows.
    while "Purged 1 expired certificates" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (settings.cadir / "signed" / "gone.pem").exists(), server.log_text()
    assert "Purged 1 expired certificates" in server.log_text()


def test_purge_runs_beside_a_running_server(
    settings: Settings, site: tuple[Path, dict[str, int]], server_factory: Callable[..., Server]
) -> None:
    import requests

    _, serials = site
    server = server_factory(settings.replace(crl_prune_expired=False))
    out = server.cli("purge", "--expired", "--older-than", "90d", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["crl_entries"] == [serials["old-revoked"]]
    r = requests.get(
        f"{server.url}/puppet-ca/v1/certificate_revocation_list/ca",
        verify=str(server.cacert),
        timeout=30,
    )
    served = x509.load_pem_x509_crl(pki.split_pem(r.content, "X509 CRL")[0])
    assert {e.serial_number for e in served} == {
        serials["recent-revoked"],
        serials["valid-revoked"],
    }
