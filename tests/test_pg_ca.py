"""The CA on the PostgreSQL store (`store: postgresql://...`): setup, replicas, operator commands, outages."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca, setup_ca
from splitca.config import Settings
from splitca.errors import ConfigError, StoreError
from splitca.http.routes_ca import App
from splitca.http.wsgiapp import make_app
from splitca.store.postgres import schema

from .conftest import WsgiResult, fast_key, make_csr, make_settings, write_config, wsgi_call
from .pg_harness import PgServer


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str, pg_server: PgServer) -> Settings:
    return make_settings(
        tmp_path, store=pg_url, database_password_file=str(pg_server.password_file)
    )


@pytest.fixture
def pg_config(tmp_path: Path, pg_settings: Settings) -> Iterator[Path]:
    yield write_config(tmp_path / "splitca.yaml", pg_settings)


def replica_settings(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """Another host: its own cadir holding only its copy of the CA key."""
    cadir = tmp_path / name
    cadir.mkdir()
    shutil.copy2(settings.cadir / "ca_key.pem", cadir / "ca_key.pem")
    return settings.replace(cadir=cadir)


def _put_csr(app: App, name: str) -> WsgiResult:
    """An agent's PUT of a CSR for *name* through *app*."""
    return wsgi_call(
        app,
        "PUT",
        f"/puppet-ca/v1/certificate_request/{name}",
        pki.pem(make_csr(name)),
        headers={"Content-Type": "text/plain"},
    )


def test_setup_keeps_the_key_on_the_host_and_the_ca_in_the_database(
    pg_config: Path, pg_settings: Settings, pg_server: PgServer
) -> None:
    result = run(pg_config, "setup")
    assert result.exit_code == 0, result.output
    cadir = pg_settings.cadir
    assert (cadir / "ca_key.pem").stat().st_mode & 0o777 == 0o640
    assert (cadir / "ca_crt.pem").exists() and (pg_settings.effective_server_cert).exists()
    # nothing of the file store: the database holds certificates, serials and the CRL
    for name in ("ca_crl.pem", "serial", "inventory.txt", "signed", "requests", ".splitca"):
        assert not (cadir / name).exists(), name
    db = pg_settings.store.rsplit("/", 1)[1]
    assert pg_server.psql("SELECT count(*) FROM splitca.certs", db) == "1"  # the server's
    assert pg_server.psql("SELECT name FROM splitca.certs", db) == "ca.test"
    again = run(pg_config, "setup")
    assert again.exit_code == 0 and "nothing changed" in again.output


def test_a_second_host_with_a_copy_of_the_key_serves_the_same_ca(
    pg_settings: Settings, tmp_path: Path
) -> None:
    setup_ca(pg_settings)
    a = open_ca(pg_settings, autosign_at_start=False)
    b_settings = replica_settings(pg_settings, tmp_path, "host-b")
    b = open_ca(b_settings, autosign_at_start=False)
    # host b got its copy of the CA certificate from the database, for its signer
    assert (b_settings.cadir / "ca_crt.pem").read_bytes() == a.ca_certificate_pem()
    b.submit_csr("agent1", pki.pem(make_csr("agent1")))
    assert a.pending_names() == ["agent1"]
    cert = a.sign("agent1")
    assert b.certificate_pem("agent1") == pki.pem(cert)
    b.revoke(["agent1"])
    assert a.is_revoked(cert.serial_number)
    crl = pki.own_crl(a.crl_pem(), a.ca_certificate_pem())
    assert crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert a.counts() == {"requested": 0, "signed": 1, "revoked": 1}


def test_a_host_without_the_key_is_told_what_is_missing(
    pg_settings: Settings, tmp_path: Path
) -> None:
    setup_ca(pg_settings)
    lacking = pg_settings.replace(cadir=tmp_path / "host-c")
    with pytest.raises(StoreError, match=r"missing ca_key\.pem\)"):
        open_ca(lacking, autosign_at_start=False)


def test_operator_commands_work_against_the_database(
    pg_config: Path, pg_settings: Settings, tmp_path: Path
) -> None:
    setup_ca(pg_settings)
    other = replica_settings(pg_settings, tmp_path, "admin-host")
    other_cfg = write_config(tmp_path / "other.yaml", other)
    ca = open_ca(pg_settings, autosign_at_start=False)
    for name in ("n1", "n2"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    listed = run(other_cfg, "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [r["name"] for r in json.loads(listed.output)] == ["n1", "n2"]
    assert run(other_cfg, "sign", "n1", "n2").exit_code == 0
    assert run(pg_config, "revoke", "n1").exit_code == 0
    shown = run(other_cfg, "crl", "show", "--format", "json")
    assert shown.exit_code == 0 and json.loads(shown.output)["entries"] == 1
    assert run(pg_config, "clean", "n2").exit_code == 0
    everything = json.loads(run(pg_config, "list", "--all", "--format", "json").output)
    assert {r["name"]: r["state"] for r in everything} == {"ca.test": "signed", "n1": "revoked"}


def test_db_migrate_is_idempotent(pg_server: PgServer, tmp_path: Path) -> None:
    db = pg_server.new_database()
    try:
        settings = make_settings(
            tmp_path,
            store=pg_server.url(db),
            database_password_file=str(pg_server.password_file),
        )
        cfg = write_config(tmp_path / "splitca.yaml", settings)
        first = run(cfg, "db", "migrate")
        top = schema.LATEST
        assert first.exit_code == 0 and f"from version 0 to {top}" in first.output
        second = run(cfg, "db", "migrate", "--format", "json")
        assert json.loads(second.output) == {"schema_version_before": top, "schema_version": top}
    finally:
        pg_server.drop_database(db)


def test_db_migrate_on_the_file_store_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "splitca.yaml", make_settings(tmp_path))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "db", "migrate"])
    assert result.exit_code == 2 and "postgresql://" in result.output


def test_a_database_outage_is_exit_5_and_http_503_without_the_password(
    pg_config: Path, pg_settings: Settings, pg_server: PgServer
) -> None:
    setup_ca(pg_settings)
    ca = open_ca(pg_settings.replace(database_timeout=dt.timedelta(seconds=2)))
    app = make_app(pg_settings, ca=ca)
    reads = ("/puppet-ca/v1/certificate/ca", "/puppet-ca/v1/certificate_revocation_list/ca")
    served = {path: wsgi_call(app, "GET", path) for path in reads}
    assert run(pg_config, "list").exit_code == 0
    assert wsgi_call(app, "GET", "/status/v1/simple").text == "running"
    pg_server.stop()
    try:
        health = wsgi_call(app, "GET", "/status/v1/simple")  # the load balancer's probe
        assert (health.status, health.text) == (503, "error")
        result = CliRunner().invoke(cli, ["--config", str(pg_config), "list", "--all"])
        assert result.exit_code == 5, result.output
        assert "unavailable" in result.output and pg_server.password not in result.output
        put = _put_csr(app, "n9")
        assert put.status == 503, put
        assert "Retry-After" in put.headers and pg_server.password.encode() not in put.body
        # the CA certificate and the CRL are still served from this replica's copies
        for path in reads:
            answer = wsgi_call(app, "GET", path)
            assert (answer.status, answer.body) == (200, served[path].body), path
    finally:
        pg_server.start()
    deadline = time.monotonic() + 60  # the pool reconnects by itself (with backoff)
    while wsgi_call(app, "GET", "/status/v1/simple").status != 200:
        assert time.monotonic() < deadline, "the replica did not recover"
        time.sleep(0.2)
    put = _put_csr(app, "n9")
    assert put.status == 200, put


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://splitca:{pw}@db.example.com/ca",
        "postgresql://splitca@db.example.com/ca?password={pw}",
        "postgresql://splitca:{pw}",  # a "port" that is the password
    ],
)
def test_a_password_in_the_store_url_is_refused_and_not_echoed(tmp_path: Path, url: str) -> None:
    secret = "s3cret-Pa55"
    cfg = tmp_path / "splitca.yaml"
    cfg.write_text(f"cadir: {tmp_path / 'ca'}\nstore: {url.format(pw=secret)}\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "list"])
    assert result.exit_code == 2, result.output
    assert "store:" in result.output and secret not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mysql://db/ca", "must be empty"),
        ("postgresql://splitca@db.example.com", "names no database"),
    ],
)
def test_a_store_setting_that_is_no_database_url_is_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^store: .*{message}"):
        make_settings(tmp_path, store=value)


def test_an_unreadable_password_file_is_named_not_shown(pg_settings: Settings) -> None:
    assert pg_settings.database_password_file is not None
    pg_settings.database_password_file.chmod(0o000)
    try:
        if os.access(pg_settings.database_password_file, os.R_OK):  # root reads anyway
            bad = pg_settings.replace(database_password_file=pg_settings.cadir / "no-such-file")
        else:
            bad = pg_settings
        with pytest.raises(StoreError) as failed:
            open_ca(bad, autosign_at_start=False)
        assert str(bad.database_password_file) in str(failed.value)
    finally:
        pg_settings.database_password_file.chmod(0o600)


def test_import_refuses_when_this_host_holds_another_ca_key(
    pg_settings: Settings, tmp_path: Path
) -> None:
    from .conftest import copy_fixture_cadir

    source = copy_fixture_cadir(tmp_path / "puppetserver-ca")
    pg_settings.cadir.mkdir(parents=True)
    (pg_settings.cadir / "ca_key.pem").write_bytes(pki.private_key_pem(fast_key()))
    cfg = write_config(tmp_path / "host.yaml", pg_settings)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "db", "import", str(source)])
    assert result.exit_code == 4 and "another CA key" in result.output
    ca_rows = CliRunner().invoke(cli, ["--config", str(cfg), "db", "migrate", "--format", "json"])
    assert ca_rows.exit_code == 0  # the database was left as it was: usable, empty
    with pytest.raises(StoreError, match="not a CA directory"):
        open_ca(pg_settings, autosign_at_start=False)


def test_an_enrollment_is_ten_statements(pg_settings: Settings, pg_server: PgServer) -> None:
    """An autosigned PUT certificate_request and the GET certificate that follows, on a
    warm replica: ten statements, each one round trip (the status twice, three audit
    events, the name lock's take and release, the serial, the certificate, its read), as
    the server logs them. Each one is database and replica CPU on every enrollment."""
    db = pg_settings.store.rsplit("/", 1)[1]
    pg_server.psql(f"ALTER DATABASE {db} SET log_statement = 'all'")  # its new sessions
    pg_server.psql(f"ALTER DATABASE {db} SET log_min_messages = 'log'")
    try:
        setup_ca(pg_settings)
        settings = pg_settings.replace(autosign=True)
        app = make_app(settings, ca=open_ca(settings))

        def enroll(name: str) -> None:
            put = _put_csr(app, name)
            got = wsgi_call(app, "GET", f"/puppet-ca/v1/certificate/{name}")
            assert (put.status, got.status) == (200, 200), put.body

        enroll("warm.example")  # the pools' connections made
        start = pg_server.log.stat().st_size
        enroll("agent.example")
        with open(pg_server.log, "rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
    finally:
        pg_server.psql(f"ALTER DATABASE {db} RESET ALL")
    # (a pooled connection idle for a second is checked with an empty query: not counted)
    statements = re.findall(r"LOG:  (?:statement|execute [^:]+): \S", text)
    assert len(statements) == 10, text


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("splitca-nobody@{host}/{db}", 'password authentication failed for user "splitca-nobody"'),
        ("splitca@{host}/no_such_db", 'database "no_such_db" does not exist'),
        ("splitca@{host}/{db}?sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ],
    ids=["user", "database", "option"],
)
def test_a_wrong_store_url_says_why_in_one_line(
    pg_settings: Settings, tmp_path: Path, where: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL the database refuses (a wrong user, a database that does not exist, a bad
    option): the error names the database's own reason, once, not only "no connection
    within 2s" after a page of the pool's retries."""
    assert pg_settings.store
    host, db = pg_settings.store.split("@", 1)[1].split("/", 1)
    url = "postgresql://" + where.format(host=host, db=db)
    settings = pg_settings.replace(store=url, database_timeout=dt.timedelta(seconds=2))
    result = CliRunner().invoke(
        cli, ["--config", str(write_config(tmp_path / "wrong.yaml", settings)), "db", "migrate"]
    )
    assert result.exit_code == 5, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and said in errors[0], result.output
    retries = [r for r in caplog.records if "error connecting" in r.getMessage()]
    assert len(retries) <= 2, retries  # once per pool, not once per retry


def test_a_replica_on_a_read_only_database_fails_its_health_check(
    pg_config: Path, pg_settings: Settings, pg_server: PgServer
) -> None:
    """A replica pointed at a database it cannot write (a hot standby, a read-only
    default): every signing and revocation through it fails, so the load balancer's probe
    must take it out rather than send agents to it. Nothing is written meanwhile."""
    setup_ca(pg_settings)
    assert pg_settings.store
    name = pg_settings.store.rsplit("/", 1)[1]
    pg_server.psql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    # another replica (its own sessions, which start read-only)
    replica = pg_settings.replace(database_timeout=dt.timedelta(seconds=3))
    app = make_app(replica, ca=open_ca(replica, autosign_at_start=False))
    health = wsgi_call(app, "GET", "/status/v1/simple")
    assert (health.status, health.text) == (503, "error")
    assert wsgi_call(app, "GET", "/puppet-ca/v1/certificate/ca").status == 200
    put = _put_csr(app, "n9")
    assert put.status == 503, put
    result = run(write_config(pg_config.with_name("replica.yaml"), replica), "generate", "n10")
    assert result.exit_code == 5 and "read-only" in result.output, result.output
    assert pg_server.psql("SELECT count(*) FROM splitca.csrs", name) == "0"


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("UPDATE splitca.meta SET value = 'v5'", "schema version 'v5'"),
        ("DROP TABLE splitca.meta", "no schema version"),
    ],
    ids=["unreadable-version", "no-version"],
)
def test_a_database_whose_schema_version_is_unreadable_is_one_line_and_untouched(
    pg_config: Path, pg_settings: Settings, pg_server: PgServer, damage: str, said: str
) -> None:
    """splitca's tables without a readable schema version (a damaged or hand-edited
    database): a one-line error, never a traceback, and no migration run over them."""
    setup_ca(pg_settings)
    assert pg_settings.store
    name = pg_settings.store.rsplit("/", 1)[1]
    pg_server.psql(damage, name)
    result = CliRunner().invoke(cli, ["--config", str(pg_config), "list", "--all"])
    assert result.exit_code == 5, result.output
    assert result.output.startswith("Error:") and said in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert pg_server.psql("SELECT count(*) FROM splitca.certs", name) == "1"
