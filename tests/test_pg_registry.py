"""Registrations, the redeemed-token ledger and the audit trail in PostgreSQL, shared by replicas."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.cli import cli
from splitca.compose import open_audit, open_ca, open_registry, setup_ca
from splitca.config import Settings
from splitca.core.audit import Actor, TeeAudit
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.backends.postgres import PgLedger, PgRegistry
from splitca.enrollment.enroll import register
from splitca.enrollment.registry import Classification, Registry, hash_token
from splitca.errors import Conflict, InvalidRequest, NotFound
from splitca.http.wsgiapp import make_app
from splitca.store.files.audit import AuditLog
from splitca.store.postgres.audit import PgAudit
from splitca.store.postgres.database import Database

from .conftest import Server, free_port, make_csr, make_settings, write_config, wsgi_call
from .pg_harness import PgServer
from .test_registry_backends import RegistryServer

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
WORKER = Classification(("hadoop::worker",), {"rack": "r1", "tags": ["a", 1]}, "production")


def run(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _close_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the databases compose opens alive for the test, then close their pools: a pool
    dropped while its worker thread still holds it (connecting) is finalized in that thread,
    which psycopg_pool cannot join."""
    import splitca.compose

    opened: dict[tuple[object, ...], Database] = {}
    monkeypatch.setattr(splitca.compose, "_DATABASES", opened)
    yield
    for db in opened.values():
        db.shutdown()


@pytest.fixture
def databases(pg_url: str, pg_server: PgServer) -> Iterator[Callable[[], Database]]:
    """Open Databases on this test's database: each one is a replica's own pools."""
    opened: list[Database] = []

    def factory() -> Database:
        db = Database(pg_url, password=pg_server.password, timeout=10, pool_size=8)
        opened.append(db)
        return db

    yield factory
    for db in opened:
        db.shutdown()


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str, pg_server: PgServer) -> Settings:
    return make_settings(
        tmp_path,
        store=pg_url,
        database_password_file=str(pg_server.password_file),
        autosign="registry",
    )


def replica(settings: Settings, tmp_path: Path, name: str, **changes: Any) -> Settings:
    """Another host of the same CA: its own cadir holding only its copy of the key."""
    cadir = tmp_path / name
    cadir.mkdir()
    (cadir / "ca_key.pem").write_bytes((settings.cadir / "ca_key.pem").read_bytes())
    return settings.replace(cadir=cadir, **changes)


def submit(ca: CertificateAuthority, name: str, password: str | None) -> Any:
    return ca.submit_csr(name, pki.pem(make_csr(name, password=password)))


# --- the registry contract, for the directory and the database ----------------------------------


@pytest.fixture(params=["directory", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Registry:  # the database one only when asked for: it starts PostgreSQL
    if request.param == "directory":
        return DirectoryRegistry(tmp_path / "reg")
    databases = request.getfixturevalue("databases")
    return PgRegistry(databases())


def test_registry_add_replace_remove_list(registry: Registry) -> None:
    """Every writable backend: a record round-trips exactly, a second add conflicts, replace
    issues a new token (and forgets a redemption), remove needs a record, names are checked."""
    record, token = register(registry, "a.example.com", WORKER, ttl=HOUR, now=NOW)
    assert registry.get("a.example.com") == record
    assert record.token_sha256 == hash_token(token)
    assert registry.get("b.example.com") is None
    with pytest.raises(Conflict, match="already registered"):
        register(registry, "a.example.com", WORKER, ttl=HOUR, now=NOW)
    assert registry.redeem("a.example.com", token, NOW).ok
    other = Classification(("role::db",), {}, "")
    replaced, new = register(registry, "a.example.com", other, ttl=2 * HOUR, now=NOW, replace=True)
    assert new != token and registry.get("a.example.com") == replaced
    assert replaced.redeemed is None and replaced.classification == other
    register(registry, "b.example.com", WORKER, ttl=HOUR, now=NOW)
    assert [r.certname for r in registry.records()] == ["a.example.com", "b.example.com"]
    registry.remove("a.example.com")
    with pytest.raises(NotFound):
        registry.remove("a.example.com")
    assert [r.certname for r in registry.records()] == ["b.example.com"]
    for bad in ("../etc/passwd", "UPPER.example.com", ""):
        with pytest.raises(InvalidRequest):
            register(registry, bad, WORKER, ttl=HOUR)
        assert registry.get(bad) is None
        assert registry.redeem(bad, token, NOW).reason == "no registration"


@pytest.mark.parametrize(
    ("presented", "at", "reason"),
    [
        ("good", NOW, None),
        ("0" * 64, NOW, "bad token"),
        (None, NOW, "no challengePassword"),
        ("", NOW, "no challengePassword"),
        ("good", NOW + HOUR, "registration expired"),
        ("good", NOW + 2 * HOUR, "registration expired"),
    ],
    ids=["ok", "bad-token", "no-password", "empty-password", "expired-at-the-end", "expired"],
)
def test_registry_redeem_reasons(
    registry: Registry, presented: str | None, at: dt.datetime, reason: str | None
) -> None:
    """Every backend tells the same reasons; a refused token stays usable, an accepted one
    is used up (a replay is 'token already used'), an unknown name 'no registration'."""
    _, token = register(registry, "r.example.com", WORKER, ttl=HOUR, now=NOW)
    outcome = registry.redeem("r.example.com", token if presented == "good" else presented, at)
    assert outcome.ok == (reason is None)
    assert outcome.reason == (reason or "registered; token accepted")
    assert outcome.record is not None and outcome.record.certname == "r.example.com"
    stored = registry.get("r.example.com")
    assert stored is not None
    assert stored.redeemed == (at if reason is None else None)
    if reason is None:
        replay = registry.redeem("r.example.com", token, at)
        assert not replay.ok and replay.reason == "token already used"
    assert registry.redeem("nobody.example.com", token, NOW).reason == "no registration"


# --- replicas racing -----------------------------------------------------------------------------


def test_two_replicas_racing_for_one_token_have_exactly_one_winner(
    databases: Callable[[], Database],
) -> None:
    """Sixteen threads over two registries on their own pools (two replicas) present the same
    token at once: one conditional UPDATE wins, fifteen are told the token is used."""
    a, b = PgRegistry(databases()), PgRegistry(databases())
    _, token = register(a, "race.example.com", WORKER, ttl=HOUR, now=NOW)
    start = threading.Barrier(16)
    outcomes: list[tuple[bool, str]] = []
    guard = threading.Lock()

    def redeem(reg: PgRegistry) -> None:
        start.wait(30)
        got = reg.redeem("race.example.com", token, NOW)
        with guard:
            outcomes.append((got.ok, got.reason))

    threads = [threading.Thread(target=redeem, args=((a, b)[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == [(False, "token already used")] * 15 + [
        (True, "registered; token accepted")
    ]
    stored = b.get("race.example.com")
    assert stored is not None and stored.redeemed == NOW


def test_the_database_ledger_is_claimed_once_by_all_replicas(
    databases: Callable[[], Database],
) -> None:
    a, b = PgLedger(databases()), PgLedger(databases())
    assert a.claim("a" * 64, "x.example.com", NOW) is True
    assert b.claim("a" * 64, "y.example.com", NOW) is False
    assert a.claim("a" * 64, "x.example.com", NOW) is False
    assert b.claim("b" * 64, "y.example.com", NOW) is True


# --- composition -------------------------------------------------------------------------------


def test_the_registry_and_audit_default_to_the_database_on_the_postgresql_store(
    pg_settings: Settings, tmp_path: Path
) -> None:
    """`store: postgresql://...` without `registry`: the database's registrations; an explicit
    `registry` still wins. The audit trail: the database, and also `audit_log` when it is set."""
    assert isinstance(open_registry(pg_settings), PgRegistry)
    explicit = pg_settings.replace(registry=str(tmp_path / "shared-reg"))
    assert isinstance(open_registry(explicit), DirectoryRegistry)
    assert isinstance(open_audit(pg_settings), PgAudit)
    both = open_audit(pg_settings.replace(audit_log=tmp_path / "audit.log"))
    assert isinstance(both, TeeAudit)
    files = make_settings(tmp_path / "files")
    assert isinstance(open_registry(files), DirectoryRegistry)
    assert not isinstance(open_audit(files), PgAudit | TeeAudit)


def test_a_read_only_registry_is_single_use_across_replicas(
    pg_settings: Settings, tmp_path: Path
) -> None:
    """With an HTTP registry (which cannot be written) the database's ledger makes a token
    single-use for every replica together, not once per replica."""
    (tmp_path / "www" / "nodes").mkdir(parents=True)
    web = RegistryServer(tmp_path / "www")
    try:
        s = pg_settings.replace(registry=web.url, registry_timeout=dt.timedelta(seconds=2))
        setup_ca(s)
        a = open_ca(s)
        b = open_ca(replica(s, tmp_path, "host-b"))
        _, token = register(
            DirectoryRegistry(web.root / "nodes"), "h1.example.com", WORKER, ttl=HOUR
        )
        assert submit(a, "h1.example.com", token).signed
        a.clean(["h1.example.com"])
        replay = submit(b, "h1.example.com", token)
        assert not replay.signed and replay.reason == "token already used"
        assert not (s.cadir / ".splitca" / "redeemed-tokens").exists()
    finally:
        web.stop()


# --- the audit trail -----------------------------------------------------------------------------


def _keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def audit_rows(pg_server: PgServer, settings: Settings) -> list[dict[str, Any]]:
    db = settings.store.rsplit("/", 1)[1]
    out = pg_server.psql(
        "SELECT json_build_object('event', event, 'certname', certname, 'host', host,"
        " 'record', record) FROM splitca.audit ORDER BY id",
        db,
    )
    return [json.loads(line) for line in out.splitlines()]


def test_audit_rows_for_register_sign_revoke_hold_no_secrets(
    pg_settings: Settings, pg_server: PgServer, tmp_path: Path
) -> None:
    setup_ca(pg_settings)
    config = write_config(tmp_path / "splitca.yaml", pg_settings)
    registered = run(config, "register", "web7.example.com", "--format", "json")
    assert registered.exit_code == 0, registered.output
    token = json.loads(registered.output)["token"]
    ca = open_ca(pg_settings)
    assert submit(ca, "web7.example.com", token).signed
    ca.revoke(["web7.example.com"])
    rows = audit_rows(pg_server, pg_settings)
    db = pg_settings.store.rsplit("/", 1)[1]
    events = [(r["event"], r["certname"]) for r in rows]
    for expected in ("register", "autosign-decision", "sign", "revoke"):
        assert (expected, "web7.example.com") in events, events
    assert ("crl-published", None) in events
    assert all(r["host"] and r["record"]["event"] == r["event"] for r in rows)
    register_row = next(r["record"] for r in rows if r["event"] == "register")
    assert register_row["actor"]["kind"] == "cli"
    assert register_row["registry"].endswith("(registrations)")
    sign_row = next(r["record"] for r in rows if r["event"] == "sign")
    assert (
        sign_row["serial"] and sign_row["fingerprint"] and sign_row["actor"]["kind"] == "autosign"
    )
    text = json.dumps(rows)
    assert token not in text and hash_token(token) not in text
    forbidden = {"token", "password", "challenge_password", "key", "private_key", "secret"}
    assert not forbidden & set(_keys(rows))
    # no audit file on the PostgreSQL store unless audit_log is set
    assert not pg_settings.effective_audit_log.exists()
    # the queries docs/ha.md shows run, and find what they say
    answers = [pg_server.psql(sql, db) for sql in documented_sql()]
    assert len(answers) == 4 and "|register|" in answers[0] and "|sign|" in answers[0]
    assert "|sign|web7.example.com|autosign|" in answers[1] and "|revoke|" in answers[1]
    assert answers[2:] == ["", ""]  # no refused enrollment, no registration still waiting


def documented_sql() -> list[str]:
    """The statements of docs/ha.md's ```sql blocks."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "ha.md").read_text()
    blocks = re.findall(r"^```sql\n(.*?)^```", text, flags=re.M | re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if not ln.lstrip().startswith("--")]
    return [st.strip() for st in " ".join(lines).split(";") if st.strip()]


def test_audit_is_best_effort_and_goes_to_both_when_audit_log_is_set(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A database that cannot be reached records nothing, says so loudly, raises nothing, and
    does not hold the operation for the store's whole timeout; the file still gets the event."""
    down = Database(f"postgresql://splitca@127.0.0.1:{free_port()}/none", timeout=10)
    try:
        sink = PgAudit(down)
        both = TeeAudit(sink, AuditLog(tmp_path / "audit.log"))
        with caplog.at_level(logging.ERROR):
            assert both.event("sign", Actor("cli", "root"), certname="x.example.com") is False
        assert "event 'sign' not recorded" in caplog.text
        assert json.loads((tmp_path / "audit.log").read_text())["certname"] == "x.example.com"
    finally:
        down.shutdown()


def test_an_audit_event_is_one_statement_and_leaves_the_session_synchronous(
    pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip an event (a batch revoke writes one per name): no BEGIN, SET, COMMIT
    around the insert; its asynchronous commit does not leak into the pooled connection, on
    which the next operation's commit must wait for the WAL flush again."""
    db = Database(pg_url, password=pg_server.password)
    calls: list[str] = []

    class Counted:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, query: Any, *args: Any) -> Any:
            calls.append("execute")
            return self.conn.execute(query, *args)

        def transaction(self) -> Any:
            calls.append("transaction")
            return self.conn.transaction()

    real = db.connection

    @contextlib.contextmanager
    def counted(**kw: Any) -> Iterator[Any]:
        with real(**kw) as conn:
            yield Counted(conn)

    try:
        monkeypatch.setattr(db, "connection", counted)
        assert PgAudit(db, host="h1").event("revoke", Actor("cli", "root"), certname="a.example")
        assert calls == ["execute"]
        monkeypatch.setattr(db, "connection", real)
        with db.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            row = conn.execute("SELECT event, certname, host, record->>'certname' FROM audit")
            assert row.fetchall() == [("revoke", "a.example", "h1", "a.example")]
    finally:
        db.shutdown()


# --- end to end: `splitca register`, then a real CSR to `splitca serve` replicas ------------------


@pytest.mark.slow
def test_register_then_enroll_through_one_replica_and_replay_through_another(
    pg_settings: Settings,
    tmp_path: Path,
    server_factory: Callable[..., Server],
) -> None:
    setup_ca(pg_settings)
    b_settings = replica(pg_settings, tmp_path, "replica-b", certname="ca2.test")
    setup_ca(b_settings, server_identity=True)  # B's own TLS identity, from the shared CA
    a, b = server_factory(pg_settings), server_factory(b_settings)
    name = "web7.example.com"
    registered = a.cli("register", name, "--class", "role::web")
    assert registered.returncode == 0, registered.stderr
    token = registered.stdout.strip()
    assert len(token) == 64 and not (pg_settings.cadir / "registry").exists()

    def put_csr(server: Server) -> requests.Response:
        with requests.Session() as s:
            s.trust_env, s.verify = False, str(server.cacert)
            put = s.put(
                f"{server.url}/puppet-ca/v1/certificate_request/{name}",
                data=pki.pem(make_csr(name, password=token)),
                headers={"Content-Type": "text/plain"},
                timeout=30,
            )
            assert put.status_code == 200, put.text
            return s.get(f"{server.url}/puppet-ca/v1/certificate/{name}", timeout=30)

    got = put_csr(a)
    assert got.status_code == 200, got.text
    cert = x509.load_pem_x509_certificate(got.content)
    assert cert.subject.rfc4514_string() == f"CN={name}"
    listed = json.loads(b.cli("registrations", "--format", "json").stdout)
    assert [(r["certname"], r["state"]) for r in listed] == [(name, "enrolled")]
    # the machine is cleaned and its token replayed through the other replica: refused
    assert b.cli("clean", name).returncode == 0
    replay = put_csr(b)
    assert replay.status_code == 404
    status = json.loads(a.cli("status", name, "--format", "json").stdout)
    assert status["state"] == "requested" and status["pending_reason"] == "token already used"
    assert not (b_settings.cadir / ".splitca").exists()


# --- the schema step ---------------------------------------------------------------------------


def test_a_database_of_the_version_before_holding_a_ca_is_upgraded_in_place(
    pg_settings: Settings, pg_server: PgServer, tmp_path: Path
) -> None:
    """The schema step of registrations, ledger and audit is added to a database that a
    splitca one version older made, keeping its CA; the CA then enrolls registered machines."""
    from splitca.store.postgres import schema

    step = next(v for v, sql in schema._STEPS.items() if "splitca.registrations" in sql)
    setup_ca(pg_settings)
    name = pg_settings.store.rsplit("/", 1)[1]
    pg_server.psql(  # what a splitca of the version before left
        "DROP TABLE splitca.registrations, splitca.redeemed_tokens, splitca.audit,"
        " splitca.inventory_also;"  # and what later steps added
        f" UPDATE splitca.meta SET value = '{step - 1}' WHERE key = 'schema_version'",
        name,
    )
    config = write_config(tmp_path / "splitca.yaml", pg_settings)
    migrated = run(config, "db", "migrate", "--format", "json")
    assert json.loads(migrated.output) == {
        "schema_version_before": step - 1,
        "schema_version": schema.LATEST,
    }
    assert pg_server.psql("SELECT name FROM splitca.certs", name) == "ca.test"
    _, token = register(open_registry(pg_settings), "up.example.com", WORKER, ttl=HOUR)
    assert submit(open_ca(pg_settings), "up.example.com", token).signed


def test_a_compile_master_classifies_from_the_database_with_a_read_only_role(
    pg_settings: Settings, pg_server: PgServer, tmp_path: Path
) -> None:
    """docs/ha.md's grants are enough for `splitca classify`, and they let it write nothing."""
    name = pg_settings.store.rsplit("/", 1)[1]
    role = f"classifier_{name}"  # roles are cluster-wide; the database is this test's
    pg_server.psql(
        f"CREATE ROLE {role} LOGIN PASSWORD 'ro-secret';"
        f" GRANT USAGE ON SCHEMA splitca TO {role};"
        f" GRANT SELECT ON splitca.meta, splitca.registrations TO {role}",
        name,
    )
    register(open_registry(pg_settings), "web7.example.com", WORKER, ttl=HOUR)
    (tmp_path / "ro-password").write_text("ro-secret\n")
    master = make_settings(
        tmp_path / "master",
        store=pg_settings.store.replace("//splitca@", f"//{role}@"),
        database_password_file=str(tmp_path / "ro-password"),
    )
    config = write_config(tmp_path / "classify.yaml", master)
    found = run(config, "classify", "web7.example.com")
    assert found.exit_code == 0, found.output
    assert "hadoop::worker" in found.output and "production" in found.output
    assert run(config, "classify", "unknown.example.com").exit_code == 1
    refused = run(config, "unregister", "web7.example.com")
    assert refused.exit_code != 0 and "permission denied" in refused.output
    assert "ro-secret" not in refused.output
    assert "web7.example.com" in pg_server.psql("SELECT certname FROM splitca.registrations", name)


def test_a_database_outage_is_exit_5_for_registrations_and_the_registry_comes_back(
    pg_settings: Settings, pg_server: PgServer, tmp_path: Path
) -> None:
    """Registry commands say the database is unavailable (exit 5, no password, no traceback);
    the audit sink records nothing and raises nothing; both work again once it is back."""
    s = pg_settings.replace(database_timeout=dt.timedelta(seconds=2))
    config = write_config(tmp_path / "splitca.yaml", s)
    registry, audit = open_registry(s), open_audit(s)
    register(registry, "before.example.com", WORKER, ttl=HOUR)
    pg_server.stop()
    try:
        for args in (("register", "during.example.com"), ("registrations",)):
            result = CliRunner().invoke(cli, ["--config", str(config), *args])
            assert result.exit_code == 5, result.output
            assert "unavailable" in result.output and "Traceback" not in result.output
            assert pg_server.password not in result.output
        assert audit.event("sign", Actor("cli"), certname="during.example.com") is False
    finally:
        pg_server.start()
    assert registry.get("before.example.com") is not None  # reconnected by itself
    assert audit.event("sign", Actor("cli"), certname="after.example.com") is True


def test_the_registration_endpoint_of_any_replica_sees_the_same_registrations(
    pg_settings: Settings, tmp_path: Path
) -> None:
    """PUT on replica A's admin endpoint, GET and DELETE on replica B's; the token enrolls
    through B's CA; the 409/404 answers are the same as on the file store."""
    setup_ca(pg_settings)
    a = open_ca(pg_settings)
    b = open_ca(replica(pg_settings, tmp_path, "host-b"))
    admin = x509.load_pem_x509_certificate(pg_settings.effective_server_cert.read_bytes())
    app_a, app_b = make_app(pg_settings, ca=a), make_app(b.settings, ca=b)
    path = "/puppet-ca/v1/splitca/registrations/w1.example.com"
    put = wsgi_call(app_a, "PUT", path, b'{"classes": ["role::web"]}', client=admin)
    assert put.status == 201, put.text
    token = json.loads(put.body)["token"]
    assert wsgi_call(app_b, "PUT", path, b"{}", client=admin).status == 409
    got = wsgi_call(app_b, "GET", path, client=admin)
    assert got.status == 200 and json.loads(got.body)["classes"] == ["role::web"]
    assert submit(b, "w1.example.com", token).signed
    assert json.loads(wsgi_call(app_a, "GET", path, client=admin).body)["state"] == "enrolled"
    assert wsgi_call(app_b, "DELETE", path, client=admin).status == 204
    assert wsgi_call(app_a, "DELETE", path, client=admin).status == 404


def test_a_registration_the_database_cannot_hold_is_a_400_not_a_503(
    pg_settings: Settings,
) -> None:
    """jsonb holds no U+0000 and no lone surrogate (a JSON escape like \\ud800, which is no
    character): a parameter (value or nested key) carrying one is bad input, refused with a
    400 before the database is asked (not a 503 'database failed', which a client retries
    for ever), and nothing is registered."""
    setup_ca(pg_settings)
    ca = open_ca(pg_settings)
    admin = x509.load_pem_x509_certificate(pg_settings.effective_server_cert.read_bytes())
    app = make_app(pg_settings, ca=ca)
    path = "/puppet-ca/v1/splitca/registrations/w1.example.com"
    for body in (
        b'{"parameters": {"note": "a\\u0000b"}}',
        b'{"parameters": {"m": {"\\u0000": 1}}}',
        b'{"parameters": {"note": "a\\ud800b"}}',
        b'{"parameters": {"m": {"\\udfff": 1}}}',
        b'{"parameters": {"l": ["ok", "\\udc80"]}}',
    ):
        put = wsgi_call(app, "PUT", path, body, client=admin)
        assert put.status == 400, put.text
        assert "parameters" in put.text
    assert wsgi_call(app, "GET", path, client=admin).status == 404


def test_an_audit_event_naming_a_hostile_certname_is_recorded(
    databases: Callable[[], Database], pg_server: PgServer, pg_url: str
) -> None:
    """A NUL in any field (the certname too, which has its own text column) is stored as
    U+FFFD: the event, and the rest of its batch, is recorded, not dropped."""
    sink = PgAudit(databases())
    items: list[dict[str, object]] = [{"certname": "evil\x00name"}, {"certname": "good"}]
    assert sink.events("csr-refused", Actor("http", "127.0.0.1"), items) is True
    db = pg_url.rsplit("/", 1)[1]
    stored = pg_server.psql("SELECT certname FROM splitca.audit ORDER BY id", db)
    assert stored.split() == ["evil\ufffdname", "good"]
