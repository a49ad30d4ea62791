"""The PostgreSQL store beyond the contract: replicas sharing one database, outages, migration, secrets."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from splitca import pki
from splitca.errors import LockTimeout, StoreError, StoreUnavailable
from splitca.store.files.filestore import FileStore
from splitca.store.files.signer import LoadedKey
from splitca.store.postgres import queries, schema
from splitca.store.postgres.database import Database
from splitca.store.postgres.pgstore import PgStore

from .conftest import make_csr
from .pg_harness import PgServer

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


class Replicas:
    """Several PgStore instances (as on several hosts) over one database, and the CA key."""

    def __init__(self, url: str, server: PgServer, tmp_path: Path) -> None:
        self.url, self.server, self.tmp = url, server, tmp_path
        self.opened: list[PgStore] = []
        key = ec.generate_private_key(ec.SECP256R1())
        cert = pki.build_ca_certificate(key, "PG CA", now=NOW, ttl=dt.timedelta(days=30))
        self.key = LoadedKey(key, cert)
        first = self.open("a")
        first.prepare()
        first.create_ca(
            ca_cert=pki.pem(cert),
            ca_key=pki.private_key_pem(key),
            ca_pub=pki.public_key_pem(key.public_key()),
            crl=pki.pem_crl(self.sign_crl([], 0)),
        )

    def open(self, host: str, **kw: float) -> PgStore:
        store = PgStore(self.url, key_dir=self.tmp / host, password=self.server.password, **kw)
        self.opened.append(store)
        return store

    def sign_crl(self, entries: list[tuple[int, float, int | None]], number: int) -> bytes:
        return self.key.sign_crl(
            entries=entries, number=number, this_update=NOW - DAY, next_update=NOW + DAY
        )

    def issue(self, store: PgStore, name: str) -> x509.Certificate:
        reservation = store.reserve_serial(name, NOW - DAY, NOW + DAY)
        tbs = self.key.prepare_leaf(
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            certname=name,
            not_before=NOW - DAY,
            not_after=NOW + DAY,
            alt_names=(),
            extensions=(),
        )
        cert = self.key.sign_leaf(tbs, reservation.serial)
        store.publish_cert(name, cert, reservation, drop_csr=True)
        return cert

    def revoke(self, store: PgStore, serials: list[int]) -> int:
        with store.locked("crl"):
            added = [pki.Revocation(s, NOW, x509.ReasonFlags.key_compromise) for s in serials]
            entries = store.revocations() + [(s, NOW.timestamp(), 1) for s in serials]
            number = store.crl_number() + 1
            pem = pki.pem_crl(self.sign_crl(entries, number))
            store.publish_crl(
                pem, number=number, entries=entries, added=added, on_installed=lambda: None
            )
        return number


def wait_until_reachable(store: PgStore, limit: float = 60.0) -> None:
    """Until ping() passes (the pool reconnects with backoff), failing after *limit* seconds."""
    deadline = time.monotonic() + limit
    while True:
        try:
            store.ping()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def replicas(pg_url: str, pg_server: PgServer, tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(pg_url, pg_server, tmp_path)
    yield r
    for store in r.opened:
        store.shutdown()


def test_two_replicas_never_hand_out_one_serial_twice(replicas: Replicas) -> None:
    a, b = replicas.open("a"), replicas.open("b")
    got: list[int] = []
    guard = threading.Lock()

    def take(store: PgStore, i: int) -> None:
        for n in range(25):
            serial = store.reserve_serial(f"h{i}-{n}", NOW, NOW + DAY).serial
            with guard:
                got.append(serial)

    threads = [threading.Thread(target=take, args=((a, b)[i % 2], i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 150 and len(set(got)) == 150
    # every serial handed out is recorded (durable) with the name it was taken for
    assert all(a.serials_for(f"h{i}-{n}") for i in range(6) for n in range(0, 25, 8))


def test_a_sequence_behind_the_issued_serials_still_gives_a_serial_above_them(
    replicas: Replicas,
) -> None:
    """A restored database's sequence may lag behind the serials it holds: the reservation
    then comes from above every issued serial (the database function's path), recorded."""
    a = replicas.open("a")
    issued = [replicas.issue(a, f"r{i}").serial_number for i in range(3)]
    replicas.server.psql("SELECT setval('splitca.serials', 1)", replicas.url.rsplit("/", 1)[1])
    got = a.reserve_serial("after-restore", NOW, NOW + DAY).serial
    assert got > max(issued)
    assert a.serials_for("after-restore") == [got]
    assert replicas.issue(a, "next").serial_number > got


def test_a_query_returns_its_connection_in_the_callers_thread(
    pg_url: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hand-off to the pool's worker thread per query: with a ``reset`` callback
    psycopg_pool queues every returned connection for its worker (a queue put and a thread
    wake-up per query, the connection unusable until the worker has run)."""
    db = Database(pg_url, password=pg_server.password)
    try:
        with db.connection() as conn:  # the pools exist
            conn.execute("SELECT 1")
        pool, _ = db._pools()
        tasks: list[str] = []
        real = pool.run_task

        def run_task(task: Any) -> None:
            tasks.append(type(task).__name__)
            real(task)

        monkeypatch.setattr(pool, "run_task", run_task)
        for _ in range(5):
            with db.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert tasks == []
    finally:
        db.shutdown()


def test_a_revocation_through_one_replica_is_in_the_other_replicas_crl_at_once(
    replicas: Replicas,
) -> None:
    a, b = replicas.open("a"), replicas.open("b")
    cert = replicas.issue(a, "victim")
    before = b.crl()  # b caches the CRL it served
    assert not b.is_revoked(cert.serial_number)
    number = replicas.revoke(a, [cert.serial_number])
    assert b.is_revoked(cert.serial_number)
    served = b.crl()
    assert served.data != before.data
    crl = x509.load_pem_x509_crl(served.data)
    assert pki.crl_number(crl) == number == b.crl_number()
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    row = b.status("victim")
    assert row is not None and row.state == "revoked"


def test_crl_numbers_strictly_increase_under_concurrent_publishes_from_two_replicas(
    replicas: Replicas,
) -> None:
    a, b = replicas.open("a"), replicas.open("b")
    serials = [replicas.issue(a, f"n{i}").serial_number for i in range(8)]
    numbers: list[int] = []
    guard = threading.Lock()

    def revoke(i: int) -> None:
        n = replicas.revoke((a, b)[i % 2], [serials[i]])
        with guard:
            numbers.append(n)

    threads = [threading.Thread(target=revoke, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(numbers) == list(range(1, 9))
    assert {e[0] for e in b.revocations()} == set(serials)
    assert pki.crl_number(x509.load_pem_x509_crl(b.crl().data)) == 8


def test_a_crl_number_not_above_the_one_in_effect_is_refused(replicas: Replicas) -> None:
    """The database itself keeps CRL numbers increasing, even for a caller without the lock."""
    a = replicas.open("a")
    serial = replicas.issue(a, "late").serial_number
    replicas.revoke(a, [serial])
    stale = pki.pem_crl(replicas.sign_crl([], 1))
    with pytest.raises(StoreError, match="not above"):
        a.publish_crl(stale, number=1, entries=[], added=None, on_installed=lambda: None)
    assert a.is_revoked(serial) and a.crl_number() == 1


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["restart", "crash"])
def test_a_database_outage_raises_store_unavailable_then_the_same_store_works_again(
    replicas: Replicas, how: signal.Signals
) -> None:
    store = replicas.open("a", timeout=2.0)
    cert = replicas.issue(store, "before")
    reserved = store.reserve_serial("in-flight", NOW, NOW + DAY).serial  # committed: durable
    crl, ca = store.crl(), store.ca_cert()
    replicas.server.stop(mode=how)
    try:
        with pytest.raises(StoreUnavailable):
            store.reserve_serial("during", NOW, NOW + DAY)
        with pytest.raises(StoreUnavailable):
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.status("before")
        # the CA certificate and the CRL keep being served from this replica's copy
        assert store.crl() == crl and store.ca_cert() == ca
    finally:
        replicas.server.start()
    wait_until_reachable(store)  # the pool reconnects by itself: no rebuild, no new store
    assert store.cert("before") is not None and store.cert("before").data == pki.pem(cert)  # type: ignore[union-attr]
    assert reserved in store.serials_for("in-flight")
    after = replicas.issue(store, "after").serial_number
    assert after > reserved > cert.serial_number
    replicas.revoke(store, [after])
    assert replicas.open("b").is_revoked(after)


@pytest.mark.parametrize("page", [2000, 3, 1])
def test_statuses_are_the_same_bytes_as_the_file_stores(
    replicas: Replicas, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    """Same certificates and requests in both stores: the same certificate_statuses answer,
    however the rows fall into the pages the database builds (a revoked one filtered out of
    a full page, a last page that is full, ...)."""
    monkeypatch.setattr(queries, "_PAGE", page)
    pg = replicas.open("a")
    files = FileStore(tmp_path / "filestore")
    files.prepare()
    ca = replicas.key.certificate
    files.create_ca(
        ca_cert=pki.pem(ca),
        ca_key=pki.private_key_pem(replicas.key.key),
        ca_pub=pki.public_key_pem(ca.public_key()),
        crl=pki.pem_crl(replicas.sign_crl([], 0)),
    )
    for name in ("b-req", "a-req", "Upper-req"):
        csr = make_csr(name)
        for s in (pg, files):
            s.save_csr(name, pki.pem(csr), csr, reason="waiting for approval")
    cert_serials = []
    for name in ("zz", "mm", "Aa", "m-m"):
        cert = replicas.issue(pg, name)
        files.publish_cert(name, cert, files.reserve_serial(name, NOW, NOW + DAY), drop_csr=True)
        cert_serials.append(cert.serial_number)
    for s in (pg, files):
        with s.locked("crl"):
            entries = [(cert_serials[1], NOW.timestamp(), 1)]
            s.publish_crl(
                pki.pem_crl(replicas.sign_crl(entries, 1)),
                number=1,
                entries=entries,
                added=[pki.Revocation(cert_serials[1], NOW, x509.ReasonFlags.key_compromise)],
                on_installed=lambda: None,
            )
    for state in (None, "requested", "signed", "revoked"):
        assert "".join(pg.statuses_json(state)) == "".join(files.statuses_json(state)), state
        assert list(pg.statuses(state)) == list(files.statuses(state))
    assert pg.counts() == files.counts()
    assert json.loads("".join(pg.statuses_json()))[0]["pending_reason"] == "waiting for approval"


def test_replicas_migrating_a_fresh_database_at_once_all_succeed(
    pg_server: PgServer, tmp_path: Path
) -> None:
    name = pg_server.new_database()  # no schema at all
    url = pg_server.url(name)
    stores = [
        PgStore(url, key_dir=tmp_path / str(i), password=pg_server.password) for i in range(4)
    ]
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def migrate(s: PgStore) -> None:
        try:
            results.append(s.migrate())
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        top = schema.LATEST
        assert sorted(results) == [(0, top), (top, top), (top, top), (top, top)]  # one did it
        assert pg_server.psql("SELECT value FROM splitca.meta", name) == str(top)
        stores[0].prepare()  # idempotent
        assert stores[0].missing_parts() == ["ca_crt.pem", "ca_crl.pem", "serial", "ca_key.pem"]
    finally:
        for s in stores:
            s.shutdown()
        pg_server.drop_database(name)


def test_the_password_is_in_no_error_message(
    pg_server: PgServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-" + pg_server.password[:6]
    for password, url in ((wrong, pg_url), (None, pg_url.replace("splitca@", f"splitca:{wrong}@"))):
        store = PgStore(url, key_dir=tmp_path, password=password, timeout=2.0)
        try:
            with pytest.raises(StoreUnavailable) as failed:
                store.ping()
        finally:
            store.shutdown()
        assert wrong not in str(failed.value)
        assert "127.0.0.1" in str(failed.value)
        assert wrong not in store.cert_location("x") + store.crl_location()
    assert wrong not in caplog.text
    assert pg_server.password not in caplog.text


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE"])
def test_the_password_may_come_from_libpqs_environment(
    pg_server: PgServer, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", pg_server.password)
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{pg_server.port}:*:splitca:{pg_server.password}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = PgStore(pg_url, key_dir=tmp_path / "host", timeout=2.0)
    try:
        store.prepare()
        assert store.missing_parts()  # reached the database: an empty one
    finally:
        store.shutdown()


def test_a_held_name_lock_outlives_an_idle_in_transaction_timeout(replicas: Replicas) -> None:
    """A lock holder's session sits idle in its transaction while the work runs on other
    connections: a server's idle_in_transaction_session_timeout (a common DBA setting)
    must not end it and so silently free the lock for another replica."""
    dbname = replicas.url.rsplit("/", 1)[1]
    replicas.server.psql(
        f"ALTER DATABASE {dbname} SET idle_in_transaction_session_timeout = '100ms'"
    )
    one, two = replicas.open("one"), replicas.open("two", lock_timeout=0.5)
    with one.names_locked(["web1"]):
        time.sleep(0.5)  # well past the server's timeout, as a slow operation would be
        with pytest.raises(LockTimeout), two.names_locked(["web1"]):
            pass


def test_a_lock_taken_inside_an_empty_set_of_name_locks_is_held(replicas: Replicas) -> None:
    """names_locked of no names (every name refused as unsafe, say) still opens the lock
    transaction, so a CA-wide lock taken inside it is held, not refused or dropped."""
    one, two = replicas.open("one"), replicas.open("two", lock_timeout=0.5)
    with one.names_locked([]), one.locked("crl"), pytest.raises(LockTimeout), two.locked("crl"):
        pass


def test_a_crl_lock_lost_with_its_session_never_lets_a_revocation_escape_the_crl(
    replicas: Replicas,
) -> None:
    """The crl lock's session ends (a DBA's pg_terminate_backend, a dropped connection)
    while its holder builds a CRL from the revocations it read: another replica then takes
    the lock and revokes. The first CRL, numbered above that one but built without its
    revocation, must not be put in effect (the revocation would escape the CRL)."""
    a, b = replicas.open("a"), replicas.open("b")
    first = replicas.issue(a, "first").serial_number
    other = replicas.issue(a, "other").serial_number
    with a.locked("crl"):
        entries = [*a.revocations(), (first, NOW.timestamp(), 1)]
        b.db.execute("SELECT pg_terminate_backend(%s)", (a.db._local.conn.info.backend_pid,))
        replicas.revoke(b, [other])  # b gets the lock: a's went with its session
        number = a.crl_number() + 1
        pem = pki.pem_crl(replicas.sign_crl(entries, number))
        added = [pki.Revocation(first, NOW, x509.ReasonFlags.key_compromise)]
        with pytest.raises(StoreError, match="changed"):
            a.publish_crl(
                pem, number=number, entries=entries, added=added, on_installed=lambda: None
            )
    crl = x509.load_pem_x509_crl(b.crl().data)
    assert crl.get_revoked_certificate_by_serial_number(other) is not None
    assert {e[0] for e in b.revocations()} == {other}
    replicas.revoke(a, [first])  # a retry under a fresh lock has both
    crl = x509.load_pem_x509_crl(b.crl().data)
    assert {r.serial_number for r in crl} == {first, other}


def test_a_crl_published_by_a_replica_whose_clock_is_behind_is_modified_since_the_last(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents and sync-crl fetch the CRL with If-Modified-Since the Last-Modified they got:
    a CRL published after it must never look older, or every replica answers 304 and the
    new revocation escapes them. Replicas' clocks differ: here a's runs 10 minutes ahead."""
    a, b = replicas.open("a"), replicas.open("b")
    one = replicas.issue(a, "one").serial_number
    two = replicas.issue(a, "two").serial_number
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() + 600)
        replicas.revoke(a, [one])
    first = b.crl()
    replicas.revoke(b, [two])
    second = b.crl()
    assert second.data != first.data
    assert second.modified is not None and first.modified is not None
    assert int(second.modified) >= int(first.modified)
    # the CA certificate's too (a renewed bundle, published by one replica)
    a.prepare()
    b.prepare()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() + 600)
        a.publish_ca_cert(a.ca_cert().data, None)
    before = a.ca_cert()
    b.publish_ca_cert(before.data + b"\n", None)
    after = b.ca_cert()
    assert after.modified is not None and before.modified is not None
    assert int(after.modified) >= int(before.modified)
