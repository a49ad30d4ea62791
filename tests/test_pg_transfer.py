"""`splitca db import DIR` / `db export DIR`: a cadir (puppetserver's 10k fixture) into the database and back."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.errors import LockTimeout
from splitca.store.files.cadir import parse_inventory
from splitca.store.files.filestore import FileStore
from splitca.store.files.signer import LoadedKey
from splitca.store.postgres.pgstore import PgStore
from splitca.store.postgres.transfer import import_cadir

from .conftest import copy_fixture_cadir, fast_key, make_csr, make_settings, write_config
from .pg_harness import PgServer


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str, pg_server: PgServer) -> Settings:
    return make_settings(
        tmp_path,
        cadir=str(tmp_path / "host"),
        certname="localhost",
        store=pg_url,
        database_password_file=str(pg_server.password_file),
    )


@pytest.fixture
def pg_config(tmp_path: Path, pg_settings: Settings) -> Path:
    return write_config(tmp_path / "splitca.yaml", pg_settings)


@pytest.fixture
def fixture_cadir(tmp_path: Path) -> Path:
    return copy_fixture_cadir(tmp_path / "puppetserver-ca")


def inventory_of(cadir: Path) -> set[tuple[int, str, str, str]]:
    lines = parse_inventory((cadir / "inventory.txt").read_bytes())
    return {(x.serial, x.not_before, x.not_after, x.certname) for x in lines}


def test_importing_the_puppetserver_cadir_keeps_serials_inventory_revocations_and_crl(
    pg_config: Path, pg_settings: Settings, fixture_cadir: Path
) -> None:
    files = FileStore(fixture_cadir)
    files.prepare()
    files.refresh()
    result = run(pg_config, "db", "import", str(fixture_cadir), "--format", "json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    next_serial = int((fixture_cadir / "serial").read_text(), 16)
    assert counts == {
        "certificates": 10,
        "requests": 1,
        "inventory": len(inventory_of(fixture_cadir)),
        "revocations": 7000,
        "crl_number": files.crl_number(),
        "next_serial": next_serial,
    }
    ca = open_ca(pg_settings, autosign_at_start=False)
    assert "".join(ca.statuses_json()) == "".join(files.statuses_json())
    assert ca.serials_for("big-0") == files.serials_for("big-0")
    assert ca.crl_pem() == (fixture_cadir / "ca_crl.pem").read_bytes()
    assert (pg_settings.cadir / "ca_key.pem").read_bytes() == (
        fixture_cadir / "ca_key.pem"
    ).read_bytes()
    # the CA goes on where puppetserver stopped: the next serial, revocations kept
    ca.submit_csr("after-import", pki.pem(make_csr("after-import")))
    assert ca.sign("after-import").serial_number == next_serial
    ca.revoke(["agent1"])
    assert ca.crl_info()["entries"] == 7001


def test_import_refuses_a_database_that_holds_a_ca_unless_forced(
    pg_config: Path, fixture_cadir: Path
) -> None:
    assert run(pg_config, "db", "import", str(fixture_cadir)).exit_code == 0
    again = run(pg_config, "db", "import", str(fixture_cadir))
    assert again.exit_code == 4 and "--force" in again.output
    forced = run(pg_config, "db", "import", str(fixture_cadir), "--force")
    assert forced.exit_code == 0, forced.output
    assert "10 certificates, 1 pending requests" in forced.output


def test_round_trip_cadir_database_cadir_gives_the_same_ca(
    pg_config: Path, fixture_cadir: Path, tmp_path: Path
) -> None:
    original = FileStore(fixture_cadir)
    original.prepare()
    original.refresh()
    csr = make_csr("waiting")  # a request splitca holds with a reason: kept both ways
    original.save_csr("waiting", pki.pem(csr), csr, reason="registry unavailable")
    assert run(pg_config, "db", "import", str(fixture_cadir)).exit_code == 0
    out = tmp_path / "exported"
    exported = run(pg_config, "db", "export", str(out))
    assert exported.exit_code == 0, exported.output
    back = FileStore(out)
    back.refresh()
    assert "".join(back.statuses_json()) == "".join(original.statuses_json())
    assert inventory_of(out) == inventory_of(fixture_cadir)
    for name in ("serial", "ca_crt.pem", "ca_key.pem", "ca_crl.pem", "ca_pub.pem"):
        assert (out / name).read_bytes() == (fixture_cadir / name).read_bytes(), name
    for sub in ("signed", "requests"):
        assert {p.name: p.read_bytes() for p in (out / sub).iterdir()} == {
            p.name: p.read_bytes() for p in (fixture_cadir / sub).iterdir()
        }
    assert back.revocations() == original.revocations()
    # the exported cadir is a CA splitca's file store opens and signs with
    ca = open_ca(make_settings(tmp_path, cadir=str(out)), autosign_at_start=False)
    ca.submit_csr("next", pki.pem(make_csr("next")))
    assert ca.sign("next").serial_number == int((fixture_cadir / "serial").read_text(), 16)
    refused = run(pg_config, "db", "export", str(out))
    assert refused.exit_code == 4 and "not empty" in refused.output


def test_a_replica_caching_the_crl_serves_the_new_one_after_a_forced_import(
    pg_config: Path, pg_settings: Settings, fixture_cadir: Path
) -> None:
    """A forced import starts a new CRL; the version each replica checks against its
    cached copy must still move forward, or a replica that cached the CRL before the
    import serves that copy again once the version counts back up to it."""
    assert run(pg_config, "db", "import", str(fixture_cadir)).exit_code == 0
    replica = open_ca(pg_settings, autosign_at_start=False)
    other = open_ca(pg_settings, autosign_at_start=False)
    replica.submit_csr("before", pki.pem(make_csr("before")))
    replica.sign("before")
    replica.revoke(["before"])
    cached = replica.crl_pem()  # this replica now holds the CRL and its version
    forced = run(pg_config, "db", "import", str(fixture_cadir), "--force")
    assert forced.exit_code == 0, forced.output
    other.submit_csr("after", pki.pem(make_csr("after")))
    serial = other.sign("after").serial_number
    other.revoke(["after"])
    served = replica.crl_pem()
    assert served != cached
    assert serial in {e.serial_number for e in x509.load_pem_x509_crl(served)}


def test_a_forced_import_of_the_same_ca_never_reuses_a_serial_or_a_crl_number(
    pg_config: Path, pg_settings: Settings, fixture_cadir: Path
) -> None:
    """Replacing the database's CA with (an older copy of) the same CA: the serials and
    CRL numbers the database already used stay used."""
    assert run(pg_config, "db", "import", str(fixture_cadir)).exit_code == 0
    ca = open_ca(pg_settings, autosign_at_start=False)
    ca.submit_csr("before", pki.pem(make_csr("before")))
    used = ca.sign("before").serial_number
    ca.revoke(["before"])
    crl_before = pki.crl_number(x509.load_pem_x509_crl(ca.crl_pem()))
    forced = run(pg_config, "db", "import", str(fixture_cadir), "--force", "--format", "json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["next_serial"] > used
    ca = open_ca(pg_settings, autosign_at_start=False)
    ca.submit_csr("after", pki.pem(make_csr("after")))
    assert ca.sign("after").serial_number > used
    ca.revoke(["after"])
    assert pki.crl_number(x509.load_pem_x509_crl(ca.crl_pem())) > crl_before


def test_an_import_waits_for_a_crl_being_published(
    pg_settings: Settings, pg_server: PgServer, fixture_cadir: Path, tmp_path: Path
) -> None:
    """A replica publishing a CRL (the crl lock held, its revocations read) finishes
    before an import replaces the CA: else its CRL, made from the revocations it read
    before the import, is installed over the imported one (whose revocations it lacks)."""
    assert pg_settings.store
    publisher = PgStore(pg_settings.store, key_dir=tmp_path / "a", password=pg_server.password)
    importer = PgStore(
        pg_settings.store, key_dir=tmp_path / "b", password=pg_server.password, lock_timeout=0.5
    )
    try:
        import_cadir(importer, fixture_cadir)
        with publisher.locked("crl"), pytest.raises(LockTimeout):
            import_cadir(importer, fixture_cadir, force=True)
    finally:
        publisher.shutdown()
        importer.shutdown()


def test_a_revoked_serial_above_the_inventory_and_counter_is_never_issued_again(
    pg_config: Path, pg_settings: Settings, fixture_cadir: Path
) -> None:
    """A cadir whose CRL lists serials its inventory and serial file do not (an inventory
    lost or a serial file restored from a backup): those serials were issued by this CA,
    so after the import none is issued again (a new certificate would be born revoked,
    and two certificates would share a serial)."""
    files = FileStore(fixture_cadir)
    files.prepare()
    files.refresh()
    counter = int((fixture_cadir / "serial").read_text(), 16)
    extra = [counter, counter + 1, 2**64]  # (the last beyond any serial splitca issues)
    key = LoadedKey(
        pki.load_private_key((fixture_cadir / "ca_key.pem").read_bytes()),
        pki.load_certificates((fixture_cadir / "ca_crt.pem").read_bytes())[0],
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    entries = [*files.revocations(), *((s, now.timestamp(), 1) for s in extra)]
    der = key.sign_crl(
        entries=entries,
        number=files.crl_number() + 1,
        this_update=now - dt.timedelta(minutes=1),
        next_update=now + dt.timedelta(days=1),
    )
    (fixture_cadir / "ca_crl.pem").write_bytes(pki.pem_crl(der))
    result = run(pg_config, "db", "import", str(fixture_cadir), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["next_serial"] == counter + 2
    ca = open_ca(pg_settings, autosign_at_start=False)
    ca.submit_csr("after-import", pki.pem(make_csr("after-import")))
    assert ca.sign("after-import").serial_number == counter + 2
    row = ca.status("after-import")
    assert row is not None and row.state == "signed"


def test_a_serial_the_inventory_lists_twice_stays_revocable_under_both_names(
    pg_config: Path, pg_settings: Settings, fixture_cadir: Path, tmp_path: Path
) -> None:
    """puppetserver issued one serial twice (its serial file restored from a backup): the
    inventory lists it under two names. After the import, revoking either name revokes it;
    it is not silently dropped from one name's serials, nor from the exported inventory."""
    inventory = fixture_cadir / "inventory.txt"
    line = next(x for x in parse_inventory(inventory.read_bytes()) if x.certname == "big-9500")
    with inventory.open("ab") as f:
        f.write(f"0x{line.serial:04x} {line.not_before} {line.not_after} /CN=dup-host\n".encode())
    result = run(pg_config, "db", "import", str(fixture_cadir), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["inventory"] == len(inventory_of(fixture_cadir))
    ca = open_ca(pg_settings, autosign_at_start=False)
    assert ca.serials_for("big-9500") == ca.serials_for("dup-host") == [line.serial]
    ca.revoke(["big-9500"])
    assert ca.status("dup-host") is None  # no certificate file: its serial is on the CRL
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.get_revoked_certificate_by_serial_number(line.serial) is not None
    out = tmp_path / "exported"
    assert run(pg_config, "db", "export", str(out)).exit_code == 0
    assert inventory_of(out) == inventory_of(fixture_cadir)


def test_an_import_whose_key_is_not_the_cas_is_refused_and_changes_nothing(
    pg_config: Path, pg_settings: Settings, pg_server: PgServer, fixture_cadir: Path
) -> None:
    """A cadir whose ca_key.pem is another CA's (a wrong copy): the database would hold a
    CA no replica can sign for, and this host a key it would then refuse to replace."""
    (fixture_cadir / "ca_key.pem").write_bytes(pki.private_key_pem(fast_key()))
    result = run(pg_config, "db", "import", str(fixture_cadir))
    assert result.exit_code != 0 and "does not match" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (pg_settings.cadir / "ca_key.pem").exists()
    store = PgStore(pg_settings.store or "", key_dir=pg_settings.cadir, password=pg_server.password)
    try:
        assert "ca_crt.pem" in store.missing_parts()  # no CA in the database
    finally:
        store.shutdown()
