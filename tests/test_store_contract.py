"""The CAStore contract: every store implementation keeps the port's promises (splitca/ports.py).

Parametrized over the implementations in ``IMPLEMENTATIONS``: the file store and the
PostgreSQL store (on a real server, tests/pg_harness.py, a fresh database per test). Each
test uses only the port's methods, plus the implementation's own hooks for what the port cannot express (making its
serial counter lag, opening it in another process).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from splitca import pki
from splitca.core.ports import MAX_REFUSALS, CAStore, Refusal
from splitca.store.files.filestore import FileStore
from splitca.store.files.signer import LoadedKey

from .conftest import make_csr
from .pg_harness import PgServer

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Implementation:
    """How to get instances of one store implementation over one storage location."""

    name: str
    open: Callable[[Path], CAStore]  # a new, independent instance over the storage at *root*
    lag_counter: Callable[[Path], None]  # make its serial counter fall behind (crash, restore)
    open_code: str  # Python source that binds ``store`` over ``root`` in another process
    # Make the storage for *root* exist first (a database); returns a finalizer.
    provision: Callable[[pytest.FixtureRequest, Path], Callable[[], None]] = lambda r, p: (
        lambda: None
    )


def _lag_file_counter(root: Path) -> None:
    (root / "serial").write_bytes(b"0002")  # as after a crash lost the unsynced updates


# --- the PostgreSQL store: root is its key_dir; the database is named in root/../pg.json ----

_PG_OPENED: list[CAStore] = []


def _pg_conninfo(root: Path) -> dict[str, str]:
    info: dict[str, str] = json.loads((root.parent / "pg.json").read_text())
    return info


def _open_pg(root: Path) -> CAStore:
    from splitca.store.postgres.pgstore import PgStore

    info = _pg_conninfo(root)
    store = PgStore(info["url"], key_dir=root, password=info["password"])
    _PG_OPENED.append(store)
    return store


def _lag_pg_counter(root: Path) -> None:
    import psycopg

    info = _pg_conninfo(root)
    with psycopg.connect(info["url"], password=info["password"], autocommit=True) as conn:
        conn.execute("SELECT setval('splitca.serials', 2, false)")  # as after a restore


def _provision_pg(request: pytest.FixtureRequest, root: Path) -> Callable[[], None]:
    server: PgServer = request.getfixturevalue("pg_server")
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    name = server.new_database(template=request.getfixturevalue("pg_template"))
    (root.parent / "pg.json").write_text(
        json.dumps({"url": server.url(name), "password": server.password})
    )

    def finish() -> None:
        while _PG_OPENED:
            _PG_OPENED.pop().shutdown()  # type: ignore[attr-defined]
        server.drop_database(name)

    return finish


IMPLEMENTATIONS = [
    Implementation(
        "file",
        lambda root: FileStore(root),
        _lag_file_counter,
        "from splitca.store.files.filestore import FileStore; store = FileStore(root)",
    ),
    Implementation(
        "postgresql",
        _open_pg,
        _lag_pg_counter,
        "import json; from splitca.store.postgres.pgstore import PgStore; "
        "info = json.loads((root.parent / 'pg.json').read_text()); "
        "store = PgStore(info['url'], key_dir=root, password=info['password'])",
        _provision_pg,
    ),
]


@dataclass
class Backend:
    impl: Implementation
    root: Path
    key: LoadedKey  # the CA's key, to make real certificates and CRLs for the store

    def open(self) -> CAStore:
        return self.impl.open(self.root)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    impl: Implementation = request.param
    root = tmp_path / "ca"
    request.addfinalizer(impl.provision(request, root))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.build_ca_certificate(key, "Contract CA", now=NOW, ttl=dt.timedelta(days=30))
    crl = pki.build_crl(
        ca_key=key,
        ca_cert=cert,
        entries=(),
        number=0,
        this_update=NOW - dt.timedelta(minutes=1),
        next_update=NOW + dt.timedelta(days=1),
    )
    store = impl.open(root)
    assert store.missing_parts()
    store.prepare()
    store.create_ca(
        ca_cert=pki.pem(cert),
        ca_key=pki.private_key_pem(key),
        ca_pub=pki.public_key_pem(key.public_key()),
        crl=pki.pem(crl),
    )
    assert store.missing_parts() == []
    store.close()
    return Backend(impl, root, LoadedKey(key, cert))


@pytest.fixture
def store(backend: Backend) -> CAStore:
    return backend.open()


def issue(backend: Backend, store: CAStore, name: str, **kw: object) -> x509.Certificate:
    """Reserve, sign and publish one certificate for *name*, as the use cases do."""
    not_after = kw.get("not_after", NOW + dt.timedelta(days=1))
    assert isinstance(not_after, dt.datetime)
    reservation = store.reserve_serial(name, NOW - dt.timedelta(days=1), not_after)
    leaf = ec.generate_private_key(ec.SECP256R1())
    tbs = backend.key.prepare_leaf(
        public_key=leaf.public_key(),
        certname=name,
        not_before=NOW - dt.timedelta(days=1),
        not_after=not_after,
        alt_names=(),
        extensions=(),
    )
    cert = backend.key.sign_leaf(tbs, reservation.serial)
    store.publish_cert(name, cert, reservation, drop_csr=bool(kw.get("drop_csr", True)))
    return cert


def publish_revocations(backend: Backend, store: CAStore, serials: list[int]) -> int:
    """Put *serials* on the next CRL, as the CRL use cases do; returns its number."""
    with store.locked("crl"):
        current = store.revocations()
        new = [pki.Revocation(s, NOW, x509.ReasonFlags.key_compromise) for s in serials]
        entries = current + [(e.serial, NOW.timestamp(), 1) for e in new]
        number = store.crl_number() + 1
        der = backend.key.sign_crl(
            entries=entries,
            number=number,
            this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(days=1),
        )
        store.publish_crl(
            pki.pem_crl(der), number=number, entries=entries, added=new, on_installed=lambda: None
        )
    return number


# --- serials ----------------------------------------------------------------------------------


def test_serials_are_unique_across_threads_and_instances(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    got: list[int] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        s = stores[i % 2]
        for n in range(8):
            r = s.reserve_serial(f"t{i}-{n}", NOW, NOW + dt.timedelta(days=1))
            with lock:
                got.append(r.serial)
        s.close()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 48 and len(set(got)) == 48
    assert min(got) > 1  # the CA certificate's serial is issued too


def test_a_lagging_counter_never_hands_out_an_issued_serial(backend: Backend) -> None:
    first = backend.open()
    issued = [issue(backend, first, f"lag{i}").serial_number for i in range(3)]
    backend.impl.lag_counter(backend.root)
    for s in (first, backend.open()):
        serial = s.reserve_serial("after-lag", NOW, NOW + dt.timedelta(days=1)).serial
        assert serial > max(issued)
        issued.append(serial)
    assert len(set(issued)) == len(issued)


def test_repair_serial_moves_a_lagging_counter_past_every_issued_serial(backend: Backend) -> None:
    store = backend.open()
    top = issue(backend, store, "r1").serial_number
    assert store.repair_serial() is False
    backend.impl.lag_counter(backend.root)
    assert backend.open().repair_serial() is True
    assert store.reserve_serial("r2", NOW, NOW + dt.timedelta(days=1)).serial == top + 1


# --- certificates and requests ----------------------------------------------------------------


def test_a_published_certificate_is_visible_to_another_instance(backend: Backend) -> None:
    cert = issue(backend, backend.open(), "pub1")
    other = backend.open()
    stored = other.cert("pub1")
    assert stored is not None and stored.data == pki.pem(cert)
    assert other.has_cert("pub1")
    row = other.status("pub1")
    assert row is not None and (row.state, row.serial) == ("signed", cert.serial_number)
    assert cert.serial_number in other.serials_for("pub1")
    assert other.counts() == {"requested": 0, "signed": 1, "revoked": 0}


def test_save_and_delete_csr(backend: Backend, store: CAStore) -> None:
    csr = make_csr("req1")
    store.save_csr("req1", pki.pem(csr), csr, reason="waiting for a human")
    other = backend.open()
    stored = other.csr("req1")
    assert stored is not None and stored.data == pki.pem(csr)
    assert other.has_csr("req1") and other.pending_names() == ["req1"]
    row = other.status("req1")
    assert row is not None and (row.state, row.reason) == ("requested", "waiting for a human")
    store.delete_csr("req1")
    assert other.csr("req1") is None and other.pending_names() == []
    assert other.status("req1") is None


def test_pending_names_sorted_and_counts(backend: Backend, store: CAStore) -> None:
    for name in ("zeta", "alpha", "mid"):
        csr = make_csr(name)
        store.save_csr(name, pki.pem(csr), csr, reason="")
    issue(backend, store, "signed1")
    revoked = issue(backend, store, "revoked1")
    publish_revocations(backend, store, [revoked.serial_number])
    other = backend.open()
    assert other.pending_names() == ["alpha", "mid", "zeta"]
    assert other.counts() == {"requested": 3, "signed": 1, "revoked": 1}
    assert [r.name for r in other.statuses()] == ["alpha", "mid", "zeta", "revoked1", "signed1"]
    assert [r.name for r in other.statuses("revoked")] == ["revoked1"]


def test_publishing_with_drop_csr_removes_the_request(backend: Backend, store: CAStore) -> None:
    csr = make_csr("drop1")
    store.save_csr("drop1", pki.pem(csr), csr, reason="")
    issue(backend, store, "drop1", drop_csr=True)
    other = backend.open()
    assert other.csr("drop1") is None and other.pending_names() == []
    row = other.status("drop1")
    assert row is not None and row.state == "signed"


def test_status_is_the_certificate_while_a_request_for_the_name_also_waits(
    backend: Backend, store: CAStore
) -> None:
    """puppetserver's rule: a name's status is its certificate's (signed, then revoked) even
    while a new CSR for it is pending; the request's shows once there is no certificate."""
    issue(backend, store, "both1")
    csr = make_csr("both1")
    store.save_csr("both1", pki.pem(csr), csr, reason="a renewal waits")
    other = backend.open()
    row = other.status("both1")
    assert row is not None and row.state == "signed" and row.reason == ""
    publish_revocations(backend, store, [row.serial])
    row = backend.open().status("both1")
    assert row is not None and row.state == "revoked"
    store.delete_cert("both1")
    row = backend.open().status("both1")
    assert row is not None and (row.state, row.reason) == ("requested", "a renewal waits")
    assert backend.open().status("nobody-by-that-name") is None


def test_serials_for_names_is_serials_for_of_each_name_at_once(
    backend: Backend, store: CAStore
) -> None:
    first = issue(backend, store, "many1")
    again = issue(backend, store, "many1")  # a second certificate: both serials are its
    gone = issue(backend, store, "many2")
    store.delete_cert("many2")  # its serial stays issued to it
    other = backend.open()
    got = other.serials_for_names(["many1", "many2", "never"])
    assert got == {
        "many1": sorted([first.serial_number, again.serial_number]),
        "many2": [gone.serial_number],
    }
    assert got == {n: other.serials_for(n) for n in ("many1", "many2")}
    assert other.serials_for_names([]) == {}


def test_revoked_among_is_is_revoked_of_many_serials_at_once(
    backend: Backend, store: CAStore
) -> None:
    certs = [issue(backend, store, f"among{i}") for i in range(3)]
    serials = [c.serial_number for c in certs]
    publish_revocations(backend, store, serials[:2])
    other = backend.open()
    asked = [*serials, 999_999_999]  # one never issued
    assert other.revoked_among(asked) == {s for s in asked if other.is_revoked(s)}
    assert other.revoked_among(asked) == set(serials[:2])
    assert other.revoked_among([]) == set()


def test_delete_cert_keeps_the_serials_issued(backend: Backend, store: CAStore) -> None:
    cert = issue(backend, store, "gone1")
    store.delete_cert("gone1")
    other = backend.open()
    assert other.cert("gone1") is None and not other.has_cert("gone1")
    assert other.serials_for("gone1") == [cert.serial_number]
    assert other.reserve_serial("gone2", NOW, NOW + dt.timedelta(days=1)).serial > (
        cert.serial_number
    )


# --- revocation -------------------------------------------------------------------------------


def test_a_revocation_is_visible_to_another_instance_when_publish_returns(
    backend: Backend, store: CAStore
) -> None:
    cert = issue(backend, store, "rev1")
    other = backend.open()
    assert not other.is_revoked(cert.serial_number)
    before = other.crl_number()
    seen_at_install: list[bool] = []

    with store.locked("crl"):
        number = store.crl_number() + 1
        entries = [(cert.serial_number, NOW.timestamp(), 1)]
        der = backend.key.sign_crl(
            entries=entries,
            number=number,
            this_update=NOW - dt.timedelta(minutes=1),
            next_update=NOW + dt.timedelta(days=1),
        )
        pem = pki.pem_crl(der)

        def installed() -> None:  # the CRL is in effect the moment this runs
            seen_at_install.append(backend.open().crl().data == pem)

        added = [pki.Revocation(cert.serial_number, NOW, x509.ReasonFlags.key_compromise)]
        store.publish_crl(pem, number=number, entries=entries, added=added, on_installed=installed)
    assert seen_at_install == [True]
    assert other.is_revoked(cert.serial_number)
    assert other.crl().data == pem
    assert other.crl_number() == before + 1 == number
    assert [e[0] for e in other.revocations()] == [cert.serial_number]
    assert other.revoked_count() == 1
    row = other.status("rev1")
    assert row is not None and row.state == "revoked"


def test_crl_numbers_strictly_increase_across_threads_and_instances(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    serials = [issue(backend, stores[0], f"n{i}").serial_number for i in range(6)]
    numbers: list[int] = []
    lock = threading.Lock()

    def revoke(i: int) -> None:
        n = publish_revocations(backend, stores[i % 2], [serials[i]])
        with lock:
            numbers.append(n)

    threads = [threading.Thread(target=revoke, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(numbers) == list(range(1, 7))
    final = backend.open()
    assert final.crl_number() == 6
    assert {e[0] for e in final.revocations()} == set(serials)


def test_a_replacing_crl_replaces_the_revocations(backend: Backend, store: CAStore) -> None:
    a, b = (issue(backend, store, n).serial_number for n in ("p1", "p2"))
    publish_revocations(backend, store, [a, b])
    with store.locked("crl"):
        number = store.crl_number() + 1
        entries = [(b, NOW.timestamp(), 1)]
        der = backend.key.sign_crl(
            entries=entries, number=number, this_update=NOW, next_update=NOW + dt.timedelta(1)
        )
        store.publish_crl(
            pki.pem_crl(der), number=number, entries=entries, added=None, on_installed=lambda: None
        )
    other = backend.open()
    assert not other.is_revoked(a) and other.is_revoked(b) and other.crl_number() == number


def test_expired_serials(backend: Backend, store: CAStore) -> None:
    old = issue(backend, store, "old1", not_after=NOW - dt.timedelta(hours=1))
    new = issue(backend, store, "new1")
    expired = backend.open().expired_serials(NOW)
    assert old.serial_number in expired and new.serial_number not in expired


# --- locks ------------------------------------------------------------------------------------


def test_name_locks_serialize_threads_on_two_instances(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    inside = 0
    most = 0
    guard = threading.Lock()
    orders = [["a", "b"], ["b", "a"], ["b"], ["a", "c", "b"]]

    def work(i: int) -> None:
        nonlocal inside, most
        for _ in range(20):
            with stores[i % 2].names_locked(orders[i % len(orders)]):
                with guard:
                    inside += 1
                    most = max(most, inside)
                threading.Event().wait(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "name locks deadlocked"
    assert most == 1  # every order holds "b": never two holders at once


def test_a_name_lock_excludes_another_process(backend: Backend, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        root = Path({str(backend.root)!r})
        {backend.impl.open_code}
        log = Path({str(log)!r})
        with store.names_locked(["shared"]):
            with log.open("a") as f:
                f.write("child-in\\n")
            print("held", flush=True)
            sys.stdin.readline()  # hold it until the parent has tried to take it
            time.sleep(0.2)
            with log.open("a") as f:
                f.write("child-out\\n")
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", child],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "held"
            proc.stdin.write("go\n")
            proc.stdin.flush()
            with backend.open().names_locked(["shared"]), log.open("a") as f:
                f.write("parent-in\n")
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert log.read_text().split() == ["child-in", "child-out", "parent-in"]


def test_named_locks_exclude_each_other_across_instances(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    events: list[str] = []
    with a.locked("crl"):
        t = threading.Thread(target=lambda: _hold(b, events))
        t.start()
        threading.Event().wait(0.05)
        events.append("first-out")
    t.join(30)
    assert events == ["first-out", "second-in"]


def _hold(store: CAStore, events: list[str]) -> None:
    with store.locked("crl"):
        events.append("second-in")


# --- CRL fetch records (monitoring, best effort) ------------------------------------------------


def test_crl_fetches_are_recorded_replaced_and_seen_by_another_instance(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    assert a.crl_fetches() == []
    a.record_crl_fetch("master2.example.com", 3, 1000.0)
    a.record_crl_fetch("master1.example.com", 4, 1001.5)
    b.record_crl_fetch("master2.example.com", 5, 1002.0)  # replaces master2's last
    assert [(f.name, f.number, f.at) for f in a.crl_fetches()] == [
        ("master1.example.com", 4, 1001.5),
        ("master2.example.com", 5, 1002.0),
    ]


def test_crl_fetch_records_survive_a_rebuild(backend: Backend, store: CAStore) -> None:
    store.record_crl_fetch("master1.example.com", 1, 1000.0)
    store.rebuild()
    assert [f.name for f in backend.open().crl_fetches()] == ["master1.example.com"]


# --- refused requests -------------------------------------------------------------------------


def test_refusals_are_shared_newest_first_and_survive_a_rebuild(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    t = NOW.timestamp()
    a.record_refusal(Refusal("one", "weak-key", "too short", "192.0.2.1", t), prune_before=0)
    a.record_refusal(Refusal("two", "duplicate-cert", "taken", "", t + 1), prune_before=0)
    assert [r.certname for r in b.refusals(0)] == ["two", "one"]
    assert b.refusals(t + 1) == [Refusal("two", "duplicate-cert", "taken", "", t + 1)]
    b.rebuild()
    assert [r.certname for r in a.refusals(0)] == ["two", "one"]


def test_refusals_are_pruned_by_age_and_bounded_in_number(store: CAStore) -> None:
    t = NOW.timestamp()
    store.record_refusal(Refusal("old", "weak-key", "x", "", t - 100), prune_before=0)
    store.record_refusal(Refusal("new", "weak-key", "x", "", t), prune_before=t - 50)
    assert [r.certname for r in store.refusals(0)] == ["new"]
    for i in range(MAX_REFUSALS + 3):
        store.record_refusal(Refusal(f"n{i}", "weak-key", "x", "", t + i), prune_before=0)
    kept = store.refusals(0)
    assert len(kept) == MAX_REFUSALS
    assert kept[0].certname == f"n{MAX_REFUSALS + 2}"
