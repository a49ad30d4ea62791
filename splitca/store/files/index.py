"""A SQLite index over the cadir files, kept in step with them, so queries never scan or parse PEMs.

puppetserver's files stay the source of truth. Every splitca write updates the index
in the same short transaction that renames the file into place, and records the
directory/file stamps it has seen. Any other change (puppetserver, a restore, a
crash between rename and commit) shows up as a stamp mismatch, and only then is the
changed part rescanned.
"""
# Over 400 lines because the index's schema, its stamp-driven incremental refresh and its queries share one transaction model.

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from cryptography import x509

from splitca import fs, pki
from splitca.core.ports import Row
from splitca.errors import InvalidRequest, StoreError
from splitca.pki import own_crl
from splitca.store.files.cadir import (
    INDEX_FILE_SUFFIXES,
    MAX_PEM_FILE_BYTES,
    CADir,
    parse_inventory,
)

__all__ = ["Index", "Row"]

log = logging.getLogger(__name__)

# 2: certs and csrs are clustered by name (WITHOUT ROWID), so listing in name order reads
# the table sequentially (100k certificates: 0.1 s instead of 0.4 s). A database of an
# older schema is dropped and rebuilt from the files on first use.
SCHEMA_VERSION = "2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certs (
  name TEXT PRIMARY KEY, serial TEXT NOT NULL, not_after_ts INTEGER NOT NULL,
  status TEXT NOT NULL, stamp TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS certs_serial ON certs(serial);
CREATE INDEX IF NOT EXISTS certs_serial_number ON certs(CAST(serial AS INTEGER));
CREATE TABLE IF NOT EXISTS csrs (
  name TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  stamp TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
  serial TEXT PRIMARY KEY, date_ts REAL NOT NULL, reason INTEGER);
CREATE TABLE IF NOT EXISTS inventory (
  serial TEXT PRIMARY KEY, serial_int INTEGER, name TEXT NOT NULL, not_after_ts INTEGER);
CREATE INDEX IF NOT EXISTS inventory_name ON inventory(name);
CREATE INDEX IF NOT EXISTS inventory_serial_int ON inventory(serial_int);
CREATE TABLE IF NOT EXISTS crl_fetches (
  name TEXT PRIMARY KEY, number INTEGER NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refusals (
  at REAL NOT NULL, certname TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL,
  address TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals(at);
"""
# ``refusals`` is not derived from the files (they hold no trace of a refused CSR): a
# rebuild or a schema change keeps it (only the derived tables above it are dropped);
# so does ``crl_fetches``.
# A CRL fetch record waits at most this long for SQLite's write lock, then gives up (logged):
# it is written while a CRL is being served, which it must never hold up.
_FETCH_BUSY_MS = 200

_REASONS = {r.name: i for i, r in enumerate(x509.ReasonFlags)}
# The revoked.reason column holds a ReasonFlags position; CRLs hold RFC 5280 codes.
_CODE_BY_FLAG = {i: pki.reason_code(r) for i, r in enumerate(x509.ReasonFlags)}
_FLAG_BY_CODE = {code: i for i, code in _CODE_BY_FLAG.items()}


def _stamp(path: str | Path) -> str:
    """What identifies a version of a file or directory: inode, size, mtime."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _entry_stamp(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class Index:
    """Thread-safe (one connection per thread) and multi-process-safe (SQLite locking)."""

    WATCHED = ("signed", "requests", "crl", "inventory")

    def __init__(self, cadir: CADir) -> None:
        self.cadir = cadir
        self._local = threading.local()
        self._seen: dict[str, str] = {}
        self._seen_lock = threading.Lock()
        self._write_lock = cadir.lock("index")
        # The watched paths as strings (stat()ed on every query; no pathlib on that path).
        self._watched = {
            "signed": str(cadir.signeddir),
            "requests": str(cadir.csrdir),
            "crl": str(cadir.cacrl),
            "inventory": str(cadir.inventory),
        }

    # --- connections and transactions ----------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # SQLite follows symbolic links when it opens (and creates) its files.
            for suffix in INDEX_FILE_SUFFIXES:
                fs.refuse_symlink(f"{self.cadir.index_path}{suffix}")
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                if not _is_not_a_database(exc):
                    raise StoreError(f"cannot open index {self.cadir.index_path}: {exc}") from exc
                conn = self._replace_unusable(exc)
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.cadir.index_path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()  # an open handle would keep the file locked for the next attempt
            raise
        return conn

    def _replace_unusable(self, first: sqlite3.Error) -> sqlite3.Connection:
        """The index file is not a database (overwritten, truncated, corrupt): it holds
        nothing the cadir files do not, so it is moved aside and rebuilt from them."""
        path = self.cadir.index_path
        with self._write_lock():
            try:
                return self._connect()  # another process replaced it while we waited
            except sqlite3.Error as exc:
                if not _is_not_a_database(exc):
                    raise StoreError(f"cannot open index {path}: {exc}") from exc
            aside = f"{path}.unusable"
            log.warning(
                "index %s is not a usable database (%s); moved to %s, rebuilding it from the files",
                path,
                first,
                aside,
            )
            for suffix in INDEX_FILE_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            with self._seen_lock:
                self._seen.clear()  # what was seen was indexed in the file just moved aside
            try:
                return self._connect()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open index {path}: {exc}") from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def transaction(
        self, timeout: float | None = None, *, changes: Sequence[str] = ()
    ) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): one writer at a time across processes.

        Writers queue on the cadir's ``index`` lock first: threads hand over promptly
        and processes poll briefly, instead of sleeping in SQLite's busy handler
        (which backs off in steps of milliseconds). *timeout* bounds that wait
        (LockTimeout; default: the cadir's lock timeout).

        *changes* are the watched paths (``signed``, ``requests``, ``crl``) the caller
        will change on disk in here. They are marked dirty in a commit of their own
        first, so a writer killed between its rename and its commit leaves a mark that
        makes the next transaction re-index them: a directory's stamp alone may not
        move (its mtime has the kernel's coarse tick), and the next writer's stamps
        would otherwise cover the orphaned file.
        """
        conn = self._conn()
        with self._write_lock(timeout):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"index is busy or unwritable: {exc}") from exc
            # Stamps recorded in here count only if the transaction commits: a failed
            # commit (a full disk) must not make refresh() skip the re-indexing.
            pending: dict[str, str] = {}
            self._local.pending = pending
            try:
                try:
                    # First catch up with what changed behind the index's back (a writer
                    # killed between its rename and its commit, an external tool): the
                    # stamps this transaction records cover those changes too, so they
                    # must be indexed before anything is recorded.
                    self._catch_up(conn)
                    if changes:
                        self._mark_dirty(conn, changes)
                    yield conn
                except BaseException as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error):  # e.g. "database or disk is full"
                        raise StoreError(f"could not update the index: {exc}") from exc
                    raise
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise StoreError(f"could not commit to the index: {exc}") from exc
            finally:
                self._local.pending = None
            with self._seen_lock:
                self._seen.update(pending)

    def _mark_dirty(self, conn: sqlite3.Connection, changes: Sequence[str]) -> None:
        """Commit "dirty" as the stamps of *changes*, then open the transaction again.

        Best effort: where the mark cannot be committed (a full disk), the caller goes on
        without it, as before marks existed (its own commit will likely fail too, and
        the changed stamps then make the next refresh re-index).
        """
        try:
            for w in changes:
                self._set_meta(conn, f"stamp:{w}", "dirty")
            conn.execute("COMMIT")  # no fsync (WAL, synchronous=NORMAL)
        except sqlite3.Error as exc:
            log.warning("index: could not mark %s as changing: %s", ", ".join(changes), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"index is busy or unwritable: {exc}") from exc

    def _set_meta(self, conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _get_meta(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def record(self, conn: sqlite3.Connection, *which: str) -> None:
        """After our own change inside *conn*'s transaction: note the new stamps."""
        paths = self._watched
        for w in which:
            self._note(conn, w, _stamp(paths[w]))

    def _note(self, conn: sqlite3.Connection, which: str, stamp: str) -> None:
        """Record *stamp* as the watched path *which*'s, inside *conn*'s transaction."""
        self._set_meta(conn, f"stamp:{which}", stamp)
        pending: dict[str, str] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending[which] = stamp  # believed only once the transaction commits
        else:
            with self._seen_lock:
                self._seen[which] = stamp

    # --- freshness ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the index in step with the files if anything changed behind our back.

        Costs four ``stat`` calls when nothing changed (the common case), and nothing
        inside this thread's write transaction, which caught up when it began (see
        :meth:`transaction`) and excludes every other writer until it ends.
        """
        if getattr(self._local, "pending", None) is not None:
            return
        paths = self._watched
        now = {w: _stamp(p) for w, p in paths.items()}
        with self._seen_lock:
            if now.items() <= self._seen.items():  # every stamp is the one last seen
                return
        conn = self._conn()
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if stored.get("schema") == SCHEMA_VERSION and all(
            stored.get(f"stamp:{w}") == s for w, s in now.items()
        ):
            with self._seen_lock:
                self._seen.update(now)
            return
        with self.transaction():
            pass  # a write transaction catches up first (see _catch_up)

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: re-index every watched path whose stamp is not the
        one the index recorded (and build the schema if it is not current)."""
        paths = self._watched
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        fresh = stored.get("schema") != SCHEMA_VERSION
        if fresh:
            log.debug("index: building %s", self.cadir.index_path)
            for table in ("certs", "csrs", "revoked", "inventory"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM meta")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            self._set_meta(conn, "schema", SCHEMA_VERSION)
            stored = {}
        for w in self.WATCHED:
            stamp = _stamp(paths[w])
            if stored.get(f"stamp:{w}") != stamp:
                (log.debug if fresh else log.info)(
                    "index: %s changed outside splitca; re-indexing it", paths[w]
                )
                getattr(self, f"_reconcile_{w}")(conn)
                self.record(conn, w)

    def rebuild(self) -> None:
        """Forget everything and re-read all files (``splitca index rebuild``)."""
        with self.transaction() as conn:
            self._set_meta(conn, "schema", "0")
        with self._seen_lock:
            self._seen.clear()
        self.refresh()

    # --- reconcilers (run inside a transaction) ---------------------------------------------
    def _reconcile_dir(
        self,
        conn: sqlite3.Connection,
        table: str,
        directory: Path,
        load: Callable[[str, bytes], tuple[object, ...] | None],
        columns: str,
    ) -> None:
        known = dict(conn.execute(f"SELECT name, stamp FROM {table}").fetchall())
        seen: set[str] = set()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            fname = entry.name
            if not fname.endswith(".pem") or fname.startswith("."):
                continue
            name = fname[:-4]
            if not pki.is_safe_name(name):
                log.warning("index: ignoring %s: not a valid certname", entry.path)
                continue
            try:
                stamp = _entry_stamp(entry.stat())
            except FileNotFoundError:
                continue
            seen.add(name)
            if known.get(name) == stamp:
                continue
            try:
                # Never blocks (a FIFO) nor reads without bound (a huge file): this runs
                # holding the index's write lock, which every write waits on. A link is not
                # followed: what is indexed is what is served (see FileStore.cert).
                data, _ = fs.read_stat(entry.path, limit=MAX_PEM_FILE_BYTES, follow=False)
                values = load(name, data)
            except (OSError, ValueError, StoreError) as exc:
                log.warning("index: ignoring unreadable %s: %s", entry.path, exc)
                values = None
            if values is None:
                seen.discard(name)
                continue
            marks = ",".join("?" * (len(values) + 2))
            conn.execute(
                f"INSERT OR REPLACE INTO {table}(name, {columns}, stamp) VALUES ({marks})",
                (name, *values, stamp),
            )
        gone = [n for n in known if n not in seen]
        conn.executemany(f"DELETE FROM {table} WHERE name = ?", [(n,) for n in gone])

    def _reconcile_signed(self, conn: sqlite3.Connection) -> None:
        self._reconcile_dir(
            conn, "certs", self.cadir.signeddir, _cert_values, "serial, not_after_ts, status"
        )

    def _reconcile_requests(self, conn: sqlite3.Connection) -> None:
        self._reconcile_dir(conn, "csrs", self.cadir.csrdir, _csr_values, "status")

    def _reconcile_crl(self, conn: sqlite3.Connection) -> None:
        """Index the entries of the CRL file, if it holds this CA's CRL.

        If it does not (removed, emptied, damaged), the index keeps the revocations and the
        number of the last CRL it read or wrote: the next CRL is built from what the index
        holds, and from nothing it would drop every revocation (the next revoke, or the
        server's own refresh, would sign it). With nothing to keep (an index built afresh
        over such a file), the revocations are unknown and :meth:`revocation_rows` refuses.
        """
        path = self.cadir.cacrl
        data = self.cadir.read_cached(path)
        crl = None
        if data is not None:
            try:
                crl = own_crl(data, self.cadir.read_cached(self.cadir.cacert) or b"")
            except ValueError as exc:
                log.error("index: %s holds a CRL that cannot be read: %s", path, exc)
        if crl is None:
            known = self._get_meta(conn, "crl_number")
            what = "is missing" if data is None else "holds no CRL of this CA"
            if known is None:
                self._set_meta(conn, "crl_unknown", what)
                log.error(
                    "index: %s %s and the index has no record of its revocations; no CRL "
                    "is signed until it is restored from a backup",
                    path,
                    what,
                )
            else:
                log.error(
                    "index: %s %s; the revocations of CRL number %s are kept, and the next "
                    "CRL signed (the next revoke, or 'splitca crl refresh') carries them",
                    path,
                    what,
                    known,
                )
            return
        conn.execute("DELETE FROM revoked")
        conn.execute("DELETE FROM meta WHERE key = 'crl_unknown'")
        self._set_meta(conn, "crl_number", str(pki.crl_number(crl)))
        conn.executemany(
            "INSERT OR REPLACE INTO revoked(serial, date_ts, reason) VALUES (?, ?, ?)",
            (_revoked_row(e) for e in pki.crl_entries(crl)),
        )

    def _reconcile_inventory(self, conn: sqlite3.Connection) -> None:
        path = self.cadir.inventory
        try:
            st = os.stat(path)
        except FileNotFoundError:
            conn.execute("DELETE FROM inventory")
            self._set_meta(conn, "inventory_offset", "0:0")
            return
        ino, offset = (
            int(x) for x in (self._get_meta(conn, "inventory_offset") or "0:0").split(":")
        )
        if ino != st.st_ino or offset > st.st_size:
            conn.execute("DELETE FROM inventory")
            offset = 0
        with open(fs.open_regular(path), "rb") as f:  # a planted FIFO: refused, not waited on
            f.seek(offset)
            tail = f.read()
        # Only index whole lines; a torn last line is picked up once it is completed.
        end = tail.rfind(b"\n") + 1
        self.add_inventory_lines(conn, tail[:end])
        self._set_meta(conn, "inventory_offset", f"{st.st_ino}:{offset + end}")

    @staticmethod
    def inventory_row(
        serial: int, certname: str, not_after_ts: int | None
    ) -> tuple[str, int | None, str, int | None]:
        """An inventory line's row: (serial, serial as an integer if SQLite can hold it,
        certname, notAfter in whole seconds)."""
        return str(serial), serial if serial < 2**63 else None, certname, not_after_ts

    def add_inventory_lines(
        self,
        conn: sqlite3.Connection,
        data: bytes,
        rows: Sequence[tuple[str, int | None, str, int | None]] | None = None,
    ) -> None:
        """Index the inventory lines *data*; *rows*: theirs, if the caller made the lines."""
        if rows is None:
            rows = []
            for line in parse_inventory(data):
                na = line.not_after_dt
                rows.append(
                    self.inventory_row(
                        line.serial, line.certname, None if na is None else int(na.timestamp())
                    )
                )
        conn.executemany(
            "INSERT OR REPLACE INTO inventory(serial, serial_int, name, not_after_ts) VALUES (?,?,?,?)",
            rows,
        )

    # --- writes that accompany our own file changes -----------------------------------------
    def cert_values(self, name: str, cert: x509.Certificate) -> tuple[str, int, str]:
        """The index row of a certificate; compute it before taking the write lock."""
        return _cert_row(name, cert)

    def put_cert(
        self,
        conn: sqlite3.Connection,
        name: str,
        cert: x509.Certificate,
        *,
        values: tuple[str, int, str] | None = None,
        path: Path | None = None,
    ) -> None:
        """*path*: the certificate's file, if the caller has it (``cadir.cert_path(name)``)."""
        values = values or _cert_row(name, cert)
        conn.execute(
            "INSERT OR REPLACE INTO certs(name, serial, not_after_ts, status, stamp) VALUES (?,?,?,?,?)",
            (name, *values, _stamp(path or self.cadir.cert_path(name))),
        )

    def put_csr(
        self,
        conn: sqlite3.Connection,
        name: str,
        csr: x509.CertificateSigningRequest,
        reason: str = "",
    ) -> None:
        status = json.dumps(pki.csr_status_fields(name, csr), separators=(",", ":"))
        conn.execute(
            "INSERT OR REPLACE INTO csrs(name, status, reason, stamp) VALUES (?,?,?,?)",
            (name, status, reason, _stamp(self.cadir.csr_path(name))),
        )

    def set_csr_reason(self, name: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE csrs SET reason = ? WHERE name = ?", (reason, name))

    def delete_cert(self, conn: sqlite3.Connection, name: str) -> None:
        conn.execute("DELETE FROM certs WHERE name = ?", (name,))

    def delete_csr(self, conn: sqlite3.Connection, name: str) -> None:
        conn.execute("DELETE FROM csrs WHERE name = ?", (name,))

    def add_inventory(
        self,
        conn: sqlite3.Connection,
        line: bytes,
        appended: os.stat_result | None = None,
        *,
        rows: Sequence[tuple[str, int | None, str, int | None]] | None = None,
    ) -> None:
        """Index a line we just appended, and advance the parsed offset past it.

        *rows*: the lines' rows, if the caller has them (see :meth:`inventory_row`).
        *appended*: the ``fstat`` of the inventory right after the append (else it is
        stat()ed here). It names the file appended to: if another file has been renamed
        over the inventory since, the stamp recorded is not the path's, and the next
        refresh re-reads the inventory, as it does after any change behind our back.
        """
        self.add_inventory_lines(conn, line, rows)
        st = os.stat(self.cadir.inventory) if appended is None else appended
        ino, offset = (
            int(x) for x in (self._get_meta(conn, "inventory_offset") or "0:0").split(":")
        )
        if ino == st.st_ino and offset + len(line) == st.st_size:
            self._set_meta(conn, "inventory_offset", f"{ino}:{st.st_size}")
            self._note(conn, "inventory", _entry_stamp(st))
        # else: someone else appended too; the next refresh() parses the gap.

    def add_revoked(
        self, conn: sqlite3.Connection, entries: list[pki.Revocation], crl_number: int
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO revoked(serial, date_ts, reason) VALUES (?, ?, ?)",
            (_revoked_row(e) for e in entries),
        )
        self._set_meta(conn, "crl_number", str(crl_number))

    def replace_revocation_rows(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[int, float, int | None]],
        crl_number: int,
    ) -> None:
        """Replace all revocations with (serial, unix time, CRLReason code) rows."""
        conn.execute("DELETE FROM revoked")
        conn.executemany(
            "INSERT OR REPLACE INTO revoked(serial, date_ts, reason) VALUES (?, ?, ?)",
            ((str(s), ts, None if c is None else _FLAG_BY_CODE[c]) for s, ts, c in rows),
        )
        self._set_meta(conn, "crl_number", str(crl_number))

    # --- queries ------------------------------------------------------------------------------
    def revocation_rows(self) -> list[tuple[int, float, int | None]]:
        """Every revocation as (serial, unix time, CRLReason code), cheap at 100k entries.

        Raises:
          StoreError: they are unknown (see :meth:`_reconcile_crl`): a CRL built from
            none would revoke nothing.
        """
        self.refresh()
        self._refuse_unknown_revocations()
        return [
            (int(serial), ts, None if reason is None else _CODE_BY_FLAG[reason])
            for serial, ts, reason in self._conn().execute(
                "SELECT serial, date_ts, reason FROM revoked ORDER BY rowid"
            )
        ]

    def _refuse_unknown_revocations(self) -> None:
        """Raise StoreError if the revocations are unknown (see :meth:`_reconcile_crl`):
        a CRL built from none would revoke nothing, and no serial can be said not revoked."""
        unknown = self._get_meta(self._conn(), "crl_unknown")
        if unknown is not None:
            raise StoreError(
                f"{self.cadir.cacrl} {unknown} and the index has no record of the certificates "
                "it revoked, so none can be told from a valid one and no new CRL can be "
                "signed: restore it from a backup"
            )

    def crl_number(self) -> int:
        self.refresh()
        value = self._get_meta(self._conn(), "crl_number")
        return int(value) if value else 0

    def revocations(self) -> list[pki.Revocation]:
        self.refresh()
        flags = list(x509.ReasonFlags)
        return [
            pki.Revocation(
                int(serial),
                dt.datetime.fromtimestamp(ts, dt.UTC),
                None if reason is None else flags[reason],
            )
            for serial, ts, reason in self._conn().execute(
                "SELECT serial, date_ts, reason FROM revoked"
            )
        ]

    def is_revoked(self, serial: int) -> bool:
        self.refresh()
        self._refuse_unknown_revocations()
        row = (
            self._conn()
            .execute("SELECT 1 FROM revoked WHERE serial = ?", (str(serial),))
            .fetchone()
        )
        return row is not None

    def revoked_among(self, serials: Iterable[int]) -> set[int]:
        self.refresh()
        self._refuse_unknown_revocations()
        wanted = [str(s) for s in set(serials)]
        found: set[int] = set()
        conn = self._conn()
        for i in range(0, len(wanted), 500):  # SQLite's bound on parameters per statement
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            found.update(
                int(s)
                for (s,) in conn.execute(
                    f"SELECT serial FROM revoked WHERE serial IN ({marks})", part
                )
            )
        return found

    def revoked_count(self) -> int:
        self.refresh()
        return int(self._conn().execute("SELECT count(*) FROM revoked").fetchone()[0])

    _CERT_SELECT = (
        "SELECT c.name, c.status, c.serial, c.not_after_ts, r.serial IS NOT NULL "
        "FROM certs c LEFT JOIN revoked r ON r.serial = c.serial"
    )

    def _cert_rows(self, where: str = "", args: tuple[object, ...] = ()) -> Iterator[Row]:
        for name, status, serial, na, revoked in self._conn().execute(
            f"{self._CERT_SELECT} {where}", args
        ):
            yield Row(name, "revoked" if revoked else "signed", status, int(serial), na)

    def _csr_rows(self, where: str = "", args: tuple[object, ...] = ()) -> Iterator[Row]:
        for name, status, reason in self._conn().execute(
            f"SELECT name, status, reason FROM csrs {where}", args
        ):
            yield Row(name, "requested", status, reason=reason)

    def cert(self, name: str) -> Row | None:
        self.refresh()
        return next(self._cert_rows("WHERE c.name = ?", (name,)), None)

    def csr(self, name: str) -> Row | None:
        self.refresh()
        return next(self._csr_rows("WHERE name = ?", (name,)), None)

    _STATUS_SELECT = (
        "SELECT 0, c.status, c.serial, c.not_after_ts, r.serial IS NOT NULL, '' "
        "FROM certs c LEFT JOIN revoked r ON r.serial = c.serial WHERE c.name = ? "
        "UNION ALL SELECT 1, status, NULL, NULL, 0, reason FROM csrs WHERE name = ? "
        "ORDER BY 1 LIMIT 1"
    )

    def status(self, name: str) -> Row | None:
        """The certificate if there is one (as puppetserver), else the CSR."""
        self.refresh()  # once for both lookups, which are one statement (one read lock)
        found = self._conn().execute(self._STATUS_SELECT, (name, name)).fetchone()
        if found is None:
            return None
        csr, status, serial, na, revoked, reason = found
        if csr:
            return Row(name, "requested", status, reason=reason)
        return Row(name, "revoked" if revoked else "signed", status, int(serial), na)

    def rows(self, state: str | None = None) -> Iterator[Row]:
        """All CSRs first, then all certificates (puppetserver's order), optionally filtered."""
        self.refresh()
        if state in (None, "requested"):
            yield from self._csr_rows("ORDER BY name")
        if state in (None, "signed", "revoked"):
            for row in self._cert_rows("ORDER BY c.name"):
                if state is None or row.state == state:
                    yield row

    def status_json_chunks(self, state: str | None = None, *, rows: int = 2000) -> Iterator[str]:
        """The JSON array of :meth:`rows`, in pieces of about *rows* objects, fast at 100k.

        CSRs carry ``pending_reason`` when they have one. Certificate objects are put
        together by SQLite from the stored fragments, so no Python object is made per
        certificate; the pieces concatenate to one JSON array.
        """
        self.refresh()
        conn = self._conn()
        sep = "["
        if state in (None, "requested"):
            for row in self._csr_rows("ORDER BY name"):
                yield sep + pki.with_pending_reason(row.json(), row.reason)
                sep = ","
        if state in (None, "signed", "revoked"):
            where = {
                None: "",
                "signed": "WHERE r.serial IS NULL",
                "revoked": "WHERE r.serial IS NOT NULL",
            }[state]
            cur = conn.execute(
                "SELECT '{\"state\":\"' || CASE WHEN r.serial IS NULL THEN 'signed' ELSE 'revoked' END"
                " || '\",' || substr(c.status, 2) FROM certs c"
                f" LEFT JOIN revoked r ON r.serial = c.serial {where} ORDER BY c.name"
            )
            while batch := cur.fetchmany(rows):
                yield sep + ",".join([b[0] for b in batch])
                sep = ","
        yield "[]" if sep == "[" else "]"

    def pending_names(self) -> list[str]:
        self.refresh()
        return [r[0] for r in self._conn().execute("SELECT name FROM csrs ORDER BY name")]

    def inventory_serials(self, name: str) -> list[int]:
        self.refresh()
        return [
            int(s)
            for (s,) in self._conn().execute("SELECT serial FROM inventory WHERE name = ?", (name,))
        ]

    def max_issued_serial(self) -> int:
        self.refresh()
        a, b = (
            self._conn()
            .execute(
                "SELECT (SELECT max(serial_int) FROM inventory),"
                " (SELECT max(CAST(serial AS INTEGER)) FROM certs)"
            )
            .fetchone()
        )
        return max(int(a or 0), int(b or 0))

    def expired_serials(self, now: dt.datetime) -> set[int]:
        """Serials whose certificate (per the inventory) expired before *now*."""
        self.refresh()
        ts = int(now.timestamp())
        return {
            int(s)
            for (s,) in self._conn().execute(
                "SELECT serial FROM inventory WHERE not_after_ts IS NOT NULL AND not_after_ts < ?",
                (ts,),
            )
        }

    def record_crl_fetch(self, name: str, number: int, at: float) -> None:
        """Upsert *name*'s last CRL fetch, waiting at most ``_FETCH_BUSY_MS`` (StoreError).

        Outside :meth:`transaction` (no index lock: a long re-index must not hold it up);
        a table splitca's re-indexing never drops, so ``index rebuild`` keeps it.
        """
        conn = self._conn()
        try:
            conn.execute(f"PRAGMA busy_timeout = {_FETCH_BUSY_MS}")
            try:
                conn.execute(
                    "INSERT INTO crl_fetches(name, number, at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET number = excluded.number, at = excluded.at",
                    (name, number, at),
                )
            finally:
                conn.execute("PRAGMA busy_timeout = 60000")
        except sqlite3.Error as exc:
            raise StoreError(f"could not record a CRL fetch in the index: {exc}") from exc

    def crl_fetches(self) -> list[tuple[str, int, float]]:
        rows = self._conn().execute("SELECT name, number, at FROM crl_fetches ORDER BY name")
        return [(str(n), int(num), float(at)) for n, num, at in rows]

    def add_refusal(
        self,
        conn: sqlite3.Connection,
        row: tuple[float, str, str, str, str],
        *,
        prune_before: float,
        keep: int,
    ) -> None:
        """Record one refusal (at, certname, kind, reason, address); prune by age and count."""
        conn.execute(
            "INSERT INTO refusals(at, certname, kind, reason, address) VALUES (?,?,?,?,?)", row
        )
        conn.execute("DELETE FROM refusals WHERE at < ?", (prune_before,))
        # Row ids grow with each insert: all but the last *keep* go, without a scan.
        conn.execute(
            "DELETE FROM refusals WHERE rowid <= (SELECT max(rowid) FROM refusals) - ?", (keep,)
        )

    def refusals(self, since: float, limit: int) -> list[tuple[float, str, str, str, str]]:
        return [
            (float(a), str(n), str(k), str(r), str(ad))
            for a, n, k, r, ad in self._conn().execute(
                "SELECT at, certname, kind, reason, address FROM refusals WHERE at >= ? "
                "ORDER BY at DESC, rowid DESC LIMIT ?",
                (since, limit),
            )
        ]

    def counts(self) -> dict[str, int]:
        self.refresh()
        conn = self._conn()
        signed = conn.execute(
            "SELECT count(*) FROM certs c LEFT JOIN revoked r ON r.serial = c.serial WHERE r.serial IS NULL"
        ).fetchone()[0]
        revoked = conn.execute(
            "SELECT count(*) FROM certs c JOIN revoked r ON r.serial = c.serial"
        ).fetchone()[0]
        requested = conn.execute("SELECT count(*) FROM csrs").fetchone()[0]
        return {"requested": requested, "signed": signed, "revoked": revoked}


def _is_not_a_database(exc: sqlite3.Error) -> bool:
    """SQLite says the file is not a database, or a corrupt one (not: busy, unwritable)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _revoked_row(e: pki.Revocation) -> tuple[str, float, int | None]:
    """A CRL entry as a row of the ``revoked`` table."""
    return (
        str(e.serial),
        e.date.timestamp(),
        None if e.reason is None else _REASONS[e.reason.name],
    )


def _cert_row(name: str, cert: x509.Certificate) -> tuple[str, int, str]:
    status = json.dumps(pki.cert_status_fields(name, cert), separators=(",", ":"))
    return str(cert.serial_number), int(cert.not_valid_after_utc.timestamp()), status


def _cert_values(name: str, data: bytes) -> tuple[object, ...] | None:
    certs = pki.load_certificates(data)
    if not certs:
        return None
    return _cert_row(name, certs[0])


def _csr_values(name: str, data: bytes) -> tuple[object, ...] | None:
    blocks = [b for label, b in pki.pem_blocks(data) if label.endswith("CERTIFICATE REQUEST")]
    if not blocks:
        return None
    try:
        csr = pki.csr_from_pem_block(blocks[0])
    except InvalidRequest as exc:
        raise ValueError(str(exc)) from None
    return (json.dumps(pki.csr_status_fields(name, csr), separators=(",", ":")),)
