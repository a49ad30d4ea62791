"""The SQLite index (splitca/store/files/index.py) on its own, over a real cadir: its queries,
its orders and filters, and that it always says what the files say (changed behind its back,
rebuilt from scratch, or lost)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pytest
from cryptography import x509

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.store.files.cadir import INDEX_FILE_SUFFIXES, inventory_line
from splitca.store.files.filestore import FileStore
from splitca.store.files.index import Row

from .conftest import make_csr, setup_ca

TTL = dt.timedelta(days=10)


@pytest.fixture
def ca(settings: Settings) -> CertificateAuthority:
    """A CA holding, besides its own certificate (ca.test), pending, signed and revoked
    names whose name order interleaves the groups."""
    setup_ca(settings)
    ca = open_ca(settings.replace(cert_ttl=TTL), autosign_at_start=False)
    for name in ("m-pending", "a-pending", "z-signed", "b-signed", "c-revoked", "y-revoked"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
    for name in ("z-signed", "b-signed", "c-revoked", "y-revoked"):
        ca.sign(name)
    ca.revoke(["y-revoked"])
    ca.revoke(["c-revoked"])
    return ca


def names(rows: Iterable[Row]) -> list[tuple[str, str]]:
    return [(r.name, r.state) for r in rows]


REQUESTED = [("a-pending", "requested"), ("m-pending", "requested")]
CERTS = [
    ("b-signed", "signed"),
    ("c-revoked", "revoked"),
    ("ca.test", "signed"),
    ("y-revoked", "revoked"),
    ("z-signed", "signed"),
]


def test_statuses_lists_requests_first_then_certificates_each_in_name_order(
    ca: CertificateAuthority,
) -> None:
    assert names(ca.store.statuses()) == REQUESTED + CERTS


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("requested", REQUESTED),
        ("signed", [c for c in CERTS if c[1] == "signed"]),
        ("revoked", [c for c in CERTS if c[1] == "revoked"]),
        (None, REQUESTED + CERTS),
        ("bogus", []),  # the HTTP route maps an unknown state to None; the index matches nothing
    ],
)
def test_state_filters(
    ca: CertificateAuthority, state: str | None, expected: list[tuple[str, str]]
) -> None:
    assert names(ca.store.statuses(state)) == expected
    assert [(s["name"], s["state"]) for s in _json(ca, state)] == expected


def _json(ca: CertificateAuthority, state: str | None, **kw: int) -> list[dict[str, object]]:
    chunks = ca.store.index.status_json_chunks(state, **kw)  # what statuses_json streams
    out: list[dict[str, object]] = json.loads("".join(chunks))
    return out


def _expected_json(rows: Iterable[Row]) -> list[dict[str, object]]:
    out = []
    for row in rows:
        status = row.as_dict()
        if row.reason:
            status["pending_reason"] = row.reason
        out.append(status)
    return out


@pytest.mark.parametrize("state", [None, "requested", "signed", "revoked"])
def test_statuses_json_is_the_json_of_statuses_with_pending_reason(
    ca: CertificateAuthority, state: str | None
) -> None:
    rows = list(ca.store.statuses(state))
    expected = _expected_json(rows)
    assert json.loads("".join(ca.store.statuses_json(state))) == expected
    for chunk_rows in (1, 2, 3):  # pieces joined at every possible boundary
        assert _json(ca, state, rows=chunk_rows) == expected
    if state in (None, "requested"):
        reasons = [s.get("pending_reason") for s in expected if s["state"] == "requested"]
        assert reasons and all(isinstance(r, str) and r for r in reasons)
    for status in expected:
        assert ("serial_number" in status) == (status["state"] != "requested")


def test_an_empty_selection_is_an_empty_json_array(settings: Settings) -> None:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    assert "".join(ca.store.statuses_json("requested")) == "[]"
    assert "".join(ca.store.statuses_json("revoked")) == "[]"
    assert [s["name"] for s in json.loads("".join(ca.store.statuses_json()))] == ["ca.test"]


def test_status_of_one_name_prefers_the_certificate(ca: CertificateAuthority) -> None:
    ca.submit_csr("both", pki.pem(make_csr("both")))
    cert = ca.sign("both")
    ca.store.cadir.csr_path("both").write_bytes(pki.pem(make_csr("both")))  # as puppetserver may
    row = ca.store.status("both")
    assert row is not None and (row.state, row.serial) == ("signed", cert.serial_number)
    row = ca.store.status("a-pending")
    assert row is not None and row.state == "requested" and row.serial is None and row.reason
    assert ca.store.status("nobody") is None


def test_pending_names_and_counts(ca: CertificateAuthority) -> None:
    assert ca.store.pending_names() == ["a-pending", "m-pending"]
    assert ca.store.counts() == {"requested": 2, "signed": 3, "revoked": 2}
    ca.sign("m-pending")
    ca.revoke(["b-signed"])
    assert ca.store.pending_names() == ["a-pending"]
    assert ca.store.counts() == {"requested": 1, "signed": 3, "revoked": 3}


def test_serials_for_a_name_keeps_every_serial_it_was_ever_issued(
    ca: CertificateAuthority,
) -> None:
    first = ca.store.serials_for("c-revoked")
    assert len(first) == 1 and ca.store.is_revoked(first[0])
    ca.clean(["c-revoked"])  # the certificate file goes, the inventory keeps the serial
    assert ca.store.serials_for("c-revoked") == first
    ca.submit_csr("c-revoked", pki.pem(make_csr("c-revoked")))
    again = ca.sign("c-revoked")
    assert ca.store.serials_for("c-revoked") == sorted([*first, again.serial_number])
    assert ca.store.serials_for("nobody") == []
    assert ca.store.serials_for("a-pending") == []


def test_revocation_queries_follow_each_crl(ca: CertificateAuthority) -> None:
    store = ca.store
    revoked = {n: store.serials_for(n)[0] for n in ("c-revoked", "y-revoked")}
    signed = store.serials_for("z-signed")[0]
    assert store.crl_number() == 2  # one CRL per revoke above
    assert store.revoked_count() == 2
    assert all(store.is_revoked(s) for s in revoked.values())
    assert not store.is_revoked(signed)
    assert not store.is_revoked(10**30)  # larger than any SQLite integer
    ca.revoke(["z-signed", "b-signed"])
    assert (store.crl_number(), store.revoked_count()) == (3, 4)
    assert store.is_revoked(signed)
    assert ca.refresh_crl(force=True)  # re-signed: a new number, the same entries
    assert (store.crl_number(), store.revoked_count()) == (4, 4)
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert pki.crl_number(crl) == store.crl_number()
    in_file = {e.serial_number: e for e in crl}
    assert {s for s, _, _ in store.revocations()} == set(in_file)
    for serial, when, code in store.revocations():
        entry = in_file[serial]
        assert when == entry.revocation_date_utc.timestamp()
        assert code == 1  # keyCompromise, revoke's default reason


def test_expired_serials_come_from_the_inventory_with_a_strict_boundary(
    ca: CertificateAuthority,
) -> None:
    cert = ca.sign("a-pending")
    not_after = cert.not_valid_after_utc
    assert not_after - cert.not_valid_before_utc > TTL  # backdated, as puppetserver
    assert cert.serial_number not in ca.store.expired_serials(not_after)
    assert cert.serial_number in ca.store.expired_serials(not_after + dt.timedelta(seconds=1))
    later = ca.store.expired_serials(not_after + dt.timedelta(days=1))
    agents = {
        ca.store.serials_for(n)[0] for n in ("b-signed", "c-revoked", "y-revoked", "z-signed")
    }
    assert agents | {cert.serial_number} <= later
    own = x509.load_pem_x509_certificate(ca.ca_certificate_pem()).serial_number
    assert own not in later  # the CA certificate lives years longer
    assert ca.store.expired_serials(dt.datetime.now(dt.UTC)) == set()


# --- in step with the files ------------------------------------------------------------------------


def _state(store: FileStore) -> dict[str, object]:
    """Everything the index answers, but the pending reasons (kept only in the index)."""
    every = [n for n, _ in names(store.statuses())]
    return {
        "statuses": [dataclasses.replace(r, reason="") for r in store.statuses()],
        "json": [
            {k: v for k, v in s.items() if k != "pending_reason"}
            for s in json.loads("".join(store.statuses_json()))
        ],
        "pending": store.pending_names(),
        "counts": store.counts(),
        "serials": {n: store.serials_for(n) for n in every},
        "revocations": sorted(store.revocations()),
        "crl_number": store.crl_number(),
        "expired": store.expired_serials(dt.datetime.now(dt.UTC) + 2 * TTL),
        "max_serial": store.index.max_issued_serial(),
    }


def test_changes_behind_its_back_are_picked_up(ca: CertificateAuthority) -> None:
    """puppetserver (or a restore) changes the cadir: files added, removed, appended."""
    store, cadir = ca.store, ca.store.cadir
    assert names(store.statuses()) == REQUESTED + CERTS  # the index is warm
    shutil.copy(cadir.cert_path("z-signed"), cadir.cert_path("extern"))
    cadir.cert_path("b-signed").unlink()
    cadir.csr_path("m-pending").unlink()
    cadir.csr_path("new-csr").write_bytes(pki.pem(make_csr("new-csr")))
    with open(cadir.inventory, "ab") as f:
        f.write(inventory_line(0x7777, "2026-01-01T00:00:00UTC", "2026-01-02T00:00:00UTC", "gone"))
    assert store.pending_names() == ["a-pending", "new-csr"]
    assert names(store.statuses()) == [
        ("a-pending", "requested"),
        ("new-csr", "requested"),
        ("c-revoked", "revoked"),
        ("ca.test", "signed"),
        ("extern", "signed"),
        ("y-revoked", "revoked"),
        ("z-signed", "signed"),
    ]
    row = store.status("extern")
    assert row is not None and row.serial == store.serials_for("z-signed")[0]
    assert store.status("b-signed") is None
    assert store.serials_for("gone") == [0x7777]
    assert store.index.max_issued_serial() == 0x7777
    assert 0x7777 in store.expired_serials(dt.datetime.now(dt.UTC))
    # What one instance saw is what a new one (another process) reads from scratch.
    assert _state(FileStore(cadir.root)) == _state(store)


def test_a_crl_put_back_behind_its_back_is_what_it_answers(ca: CertificateAuthority) -> None:
    """A restored (older) CRL file is the truth, even though its number is lower."""
    old = ca.crl_pem()
    ca.revoke(["z-signed"])
    assert (ca.store.crl_number(), ca.store.revoked_count()) == (3, 3)
    ca.store.cadir.cacrl.write_bytes(old)
    assert (ca.store.crl_number(), ca.store.revoked_count()) == (2, 2)
    assert not ca.store.is_revoked(ca.store.serials_for("z-signed")[0])
    assert [r.state for r in ca.store.statuses("revoked")] == ["revoked", "revoked"]


def test_a_rebuild_from_scratch_equals_the_incremental_state(ca: CertificateAuthority) -> None:
    ca.clean(["z-signed"])
    ca.sign("m-pending")
    incremental = _state(ca.store)
    ca.store.rebuild()
    assert _state(ca.store) == incremental
    # A database of an older schema is dropped and rebuilt on first use.
    index = ca.store.cadir.index_path
    with sqlite3.connect(index) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        db.execute("DELETE FROM certs")
    db.close()
    assert _state(FileStore(ca.store.cadir.root)) == incremental


def _drop_index(cadir: Path) -> Path:
    index = cadir / ".splitca" / "index.sqlite3"
    for suffix in INDEX_FILE_SUFFIXES:
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    return index


@pytest.mark.parametrize(
    "damage",
    [
        None,  # deleted
        b"",  # truncated to nothing
        b"this is not a database\n" * 200,  # overwritten
        b"SQLite format 3\x00" + b"\xff" * 4080,  # a header, then garbage
    ],
    ids=["missing", "empty", "garbage", "bad-header"],
)
def test_a_missing_or_unusable_index_file_is_rebuilt_not_fatal(
    ca: CertificateAuthority, damage: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    before = _state(ca.store)
    ca.store.close()
    index = _drop_index(ca.store.cadir.root)
    if damage is not None:
        index.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="splitca.store.files.index"):
        store = FileStore(ca.store.cadir.root)
        assert _state(store) == before
    if damage:  # an unusable file is kept aside, and said so, for whoever wants to look
        assert Path(f"{index}.unusable").read_bytes() == damage
        assert "is not a usable database" in caplog.text
    # And the rebuilt index is a working one: writes go on.
    reopened = open_ca(ca.settings, autosign_at_start=False)
    reopened.submit_csr("after", pki.pem(make_csr("after")))
    assert "after" in store.pending_names()


def test_splitcas_own_writes_are_never_taken_for_changes_outside_it(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    # Each signing appends to inventory.txt: that is splitca's own change, indexed with it,
    # not one to re-index (and log, at every signing) as if another program had made it.
    caplog.set_level(logging.INFO, logger="splitca.store.files.index")
    for name in ("n1.test", "n2.test"):
        ca.submit_csr(name, pki.pem(make_csr(name)))
        ca.sign(name)
    ca.revoke(["n1.test"])
    ca.clean(["n2.test"])
    outside = [r.getMessage() for r in caplog.records if "outside splitca" in r.getMessage()]
    assert outside == []
    assert ca.store.serials_for("n1.test") and ca.status("n1.test").state == "revoked"  # type: ignore[union-attr]


def test_the_highest_issued_serial_is_found_without_scanning_the_certificates(
    ca: CertificateAuthority,
) -> None:
    """Taken once per reservation batch under the serial lock: a scan of ``certs`` grew with
    the CA (0.17 ms at 2k certificates, ~8 ms at 100k)."""
    store = ca.store
    assert isinstance(store, FileStore)
    assert store.index.max_issued_serial() == max(
        pki.load_certificates(p.read_bytes())[0].serial_number
        for p in store.cadir.signeddir.glob("*.pem")
    )
    conn = sqlite3.connect(store.cadir.index_path, isolation_level=None)
    try:
        conn.execute("BEGIN")  # rolled back: 2000 more rows, to see whether the query scans them
        conn.executemany(
            "INSERT INTO certs(name, serial, not_after_ts, status, stamp) VALUES (?, ?, 0, '{}', '')",
            [(f"filler-{i}", str(i)) for i in range(2000)],
        )
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        conn.set_progress_handler(step, 1)  # called every VM instruction
        top = conn.execute("SELECT max(CAST(serial AS INTEGER)) FROM certs").fetchone()[0]
        conn.set_progress_handler(None, 1)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert top == max(store.index.max_issued_serial(), 1999)
    assert steps[0] < 500, steps[0]  # a scan takes several instructions per row


def test_queries_inside_a_write_transaction_do_not_check_the_files_again(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write transaction catches up when it begins and excludes other writers, so the
    index's own queries in it (the serial floor, say) need no stat of the watched paths."""
    store = ca.store
    assert isinstance(store, FileStore)
    import splitca.store.files.index as index_module

    stats: list[str] = []
    real = index_module._stamp

    def counting(path: str | Path) -> str:
        stats.append(str(path))
        return real(path)

    monkeypatch.setattr(index_module, "_stamp", counting)
    with store.index.transaction():
        stats.clear()  # the catch-up at its start
        assert store.index.max_issued_serial() > 0
        assert store.index.status("b-signed") is not None
        assert stats == []
    stats.clear()
    assert store.index.status("b-signed") is not None  # outside: one refresh, four stamps
    assert len(stats) == 4


def test_an_issued_serial_is_indexed_once_not_re_read_from_the_inventory(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservation appends its inventory line inside its own index transaction, so the
    transaction's catch-up does not take our own line for a change behind its back."""
    store = ca.store
    assert isinstance(store, FileStore)
    re_read: list[int] = []
    real = store.index._reconcile_inventory

    def counting(conn: sqlite3.Connection) -> None:
        re_read.append(1)
        real(conn)

    monkeypatch.setattr(store.index, "_reconcile_inventory", counting)
    cert = ca.sign("a-pending")
    assert re_read == []
    assert cert.serial_number in store.serials_for("a-pending")
    assert store.index.max_issued_serial() == cert.serial_number
    # a line appended behind the index's back is still picked up
    line = inventory_line(
        cert.serial_number + 5, "2026-01-01T00:00:00UTC", "2027-01-01T00:00:00UTC", "outside"
    )
    with open(store.cadir.inventory, "ab") as f:
        f.write(line)
    assert store.index.max_issued_serial() == cert.serial_number + 5
    assert re_read == [1]


def _touch_dir(directory: Path) -> None:
    """Move *directory*'s mtime on by a second, as a new entry would within a coarser tick:
    the index must see the change (its stamp) whatever the filesystem's clock granularity."""
    import os

    st = os.stat(directory)
    os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("where", ["signed", "requests"])
@pytest.mark.parametrize("planted", ["fifo", "huge", "directory"])
def test_a_hostile_file_in_a_watched_directory_is_skipped_not_waited_on(
    ca: CertificateAuthority, settings: Settings, where: str, planted: str
) -> None:
    """Re-indexing signed/ or requests/ runs holding the index's write lock, which every
    write (signing, revoking, a CSR) waits on. A FIFO planted there by a local user blocked
    the re-index on its open forever (so the whole CA); a huge sparse file was read into
    memory whole. Each is skipped (logged), the others are indexed, and writes go on."""
    import os
    import threading

    path = settings.cadir / where / "planted.example.com.pem"
    if planted == "fifo":
        os.mkfifo(path, 0o600)
    elif planted == "huge":
        with open(path, "wb") as f:
            f.truncate(64 * 1024 * 1024 * 1024)  # sparse: no disk used, 64 GiB to a reader
    else:
        path.mkdir()
    _touch_dir(settings.cadir / where)
    outcome: list[object] = []

    def write() -> None:
        try:
            ca.generate("after-the-plant.example.com")
            outcome.append(ca.status("after-the-plant.example.com"))
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30)
    if writer.is_alive():
        with open(path, "wb"):  # let the blocked re-index go before failing
            pass
        writer.join(10)
        pytest.fail(f"re-indexing {where}/ blocked on a planted {planted}")
    assert len(outcome) == 1 and isinstance(outcome[0], Row), outcome
    assert outcome[0].state == "signed"
    names = {r.name for r in ca.statuses()}
    assert "planted.example.com" not in names
    assert {"z-signed", "m-pending"} <= names
