"""PgStore: the CAStore over one PostgreSQL database, shared safely by any number of replicas.

Certificates, requests, the inventory, revocations and the CRL live in the database;
serials come from a sequence, never at or below an issued serial (one statement, or the
database function of schema.py when the sequence lags); name and CA-wide locks are
advisory locks. The CA key stays a local file (each replica's own copy, beside
a copy of the CA certificate) that ``KeyFileSigner`` reads: the database never holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509

from splitca import pki
from splitca.core.ports import Blob, Reservation
from splitca.errors import StoreError, StoreUnavailable
from splitca.store.postgres import schema
from splitca.store.postgres.crl import PgCRL
from splitca.store.postgres.database import Database, lock_key
from splitca.store.postgres.hostfiles import CERT_FILE, KEY_FILE, HostFiles
from splitca.store.postgres.queries import PgQueries
from splitca.store.postgres.records import PgRecords

__all__ = ["PgStore"]

log = logging.getLogger(__name__)

# How long a read with a cached answer (CA certificate, CRL) waits for the database.
_CACHED_WAIT = 1.0

# splitca.reserve_serial's common case as one statement: the sequence's next value, taken
# only if it is above every issued serial (else no row, and the function handles it).
# The floor is splitca.top_serial()'s (schema.py), inlined: keep the two the same.
_RESERVE = (
    "WITH n AS MATERIALIZED (SELECT nextval('splitca.serials')::numeric AS s)"
    " INSERT INTO inventory (serial, name, not_before, not_after, not_after_ts)"
    " SELECT n.s, %s, %s, %s, %s FROM n"
    " WHERE n.s > coalesce((SELECT max(serial) FROM inventory), 0)"
    " AND n.s > coalesce((SELECT max(serial) FROM certs), 0)"
    " AND n.s > coalesce((SELECT max(serial) FROM revoked"
    " WHERE serial <= 9223372036854775807), 0)"
    " ON CONFLICT (serial) DO NOTHING RETURNING serial"
)
_PUBLISH = (
    "INSERT INTO certs (name, serial, not_after_ts, status, pem, modified)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
    " serial = EXCLUDED.serial, not_after_ts = EXCLUDED.not_after_ts,"
    " status = EXCLUDED.status, pem = EXCLUDED.pem, modified = EXCLUDED.modified"
)
# The same and the name's request dropped, in the same statement (a data-modifying CTE).
_PUBLISH_DROPPING_CSR = "WITH dropped AS (DELETE FROM csrs WHERE name = %s) " + _PUBLISH


class PgStore(PgCRL, PgQueries, PgRecords):
    """One CA in one database; safe to share between threads, processes and hosts.

    *key_dir* is this host's directory for the CA key (``ca_key.pem``) and a copy of the
    CA certificate (``ca_crt.pem``), the files the signer reads.
    """

    def __init__(
        self,
        url: str,
        *,
        key_dir: Path,
        password: str | None = None,
        timeout: float = 10.0,
        lock_timeout: float = 30.0,
        pool_size: int = 10,
        database: Database | None = None,
    ) -> None:
        # *database*: one already open for *url* (compose shares it with the registry and audit)
        self.db = database or Database(url, password=password, timeout=timeout, pool_size=pool_size)
        self.key_dir = key_dir
        self.host = HostFiles(key_dir)
        self._lock_timeout = lock_timeout
        self._cache_guard = threading.Lock()
        self._ca_cache: Blob | None = None
        self._crl_cache: tuple[int, Blob] | None = None
        self._degraded = False  # serving cached copies while the database is unavailable
        self._local = threading.local()  # per thread: PgCRL's crl_base

    @property
    def key_path(self) -> Path:
        return self.host.key

    # --- lifecycle -----------------------------------------------------------------------
    def _db_parts(self) -> bool:
        with self.db.connection() as conn:
            if schema.current_version(conn) == 0:  # (tables of no known version: StoreError)
                return False
            return conn.execute("SELECT 1 FROM ca WHERE id = 1").fetchone() is not None

    def missing_parts(self) -> list[str]:
        missing = [] if self._db_parts() else [CERT_FILE, "ca_crl.pem", "serial"]
        return missing + ([] if self.key_path.exists() else [KEY_FILE])

    def present_parts(self) -> list[str]:
        present = [CERT_FILE, "ca_crl.pem", "serial"] if self._db_parts() else []
        return present + ([KEY_FILE] if self.key_path.exists() else [])

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema (``splitca db migrate``); (version before, after)."""
        with self.db.connection() as conn:
            return schema.migrate(conn)

    def prepare(self) -> None:
        """Migrate the schema if needed and keep this host's copy of the CA certificate."""
        with self.db.connection() as conn:
            if schema.current_version(conn) != schema.LATEST:
                schema.migrate(conn)
        self.host.ensure_dir()
        self._mirror_ca_cert()

    def _mirror_ca_cert(self) -> None:
        """Write the database's CA certificate to key_dir if this host's copy differs."""
        with self.db.connection() as conn:
            if conn.execute("SELECT to_regclass('splitca.ca')").fetchone() == (None,):
                return
            row = conn.execute("SELECT cert FROM ca WHERE id = 1").fetchone()
        if row is not None:
            self.host.write_cert(bytes(row[0]))

    def create_ca(self, *, ca_cert: bytes, ca_key: bytes, ca_pub: bytes, crl: bytes) -> None:
        """Record the CA in the database (its serial issued), then this host's files, key last."""
        cert = pki.load_certificates(ca_cert)[0]
        own = pki.own_crl(crl, ca_cert)
        number = pki.crl_number(own) if own is not None else 0
        now = time.time()
        with self.db.transaction() as conn:
            done = conn.execute(
                "INSERT INTO ca (id, cert, pub, cert_modified, crl, crl_number, crl_modified) "
                "VALUES (1, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (ca_cert, ca_pub, now, crl, number, now),
            )
            if done.rowcount != 1:
                raise StoreError(f"the database {self.db.shown} already holds a CA")
            self._record_issued(conn, cert, pki.first_cn(cert.subject) or "")
        self.host.write_cert(ca_cert)
        self.host.write_key(ca_key)

    def _record_issued(self, conn: Any, cert: x509.Certificate, name: str) -> None:
        """An inventory row for a certificate issued elsewhere, the sequence moved past it."""
        conn.execute(
            "INSERT INTO inventory (serial, name, not_before, not_after, not_after_ts) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (serial) DO NOTHING",
            (
                cert.serial_number,
                name,
                pki.puppet_time(cert.not_valid_before_utc),
                pki.puppet_time(cert.not_valid_after_utc),
                int(cert.not_valid_after_utc.timestamp()),
            ),
        )
        conn.execute("SELECT splitca.serial_at_least(%s)", (cert.serial_number,))

    def refresh(self) -> None:
        """Every read goes to the database; this only fills the copies of the CA certificate
        and the CRL that are served while the database is unavailable (at open, so a
        replica that has served neither yet still has them when the database goes away)."""
        for read in (self.ca_cert, self.crl):
            try:
                read()
            except StoreUnavailable as exc:
                log.warning("%s; the CA certificate and CRL are served from copies", exc)

    def rebuild(self) -> None:
        """Nothing derived to rebuild: the database is the truth."""

    def repair_serial(self) -> bool:
        with self.db.connection() as conn:
            row = conn.execute("SELECT splitca.repair_serial()").fetchone()
        return bool(row and row[0])

    def maintain(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing per thread: connections go back to the pool after each operation."""

    def shutdown(self) -> None:
        """Close this process's connections (the store opens new ones if used again)."""
        self.db.shutdown()

    def ping(self) -> None:
        """A health check: answers within about a second, the database up or not. A database
        this replica cannot write (a hot standby, a read-only default) fails it: every
        signing and revocation through this replica would fail."""
        with self.db.connection(wait=_CACHED_WAIT) as conn:
            found = conn.execute(
                "SELECT to_regclass('splitca.ca') IS NOT NULL,"
                " current_setting('transaction_read_only') = 'on'"
            ).fetchone()
            if found is None or not found[0]:
                raise StoreUnavailable(f"the database {self.db.shown} has no splitca schema")
            if found[1]:
                raise StoreUnavailable(
                    f"the database {self.db.shown} is read-only (a standby?): this replica "
                    "can neither sign nor revoke"
                )
            if conn.execute("SELECT 1 FROM ca WHERE id = 1").fetchone() is None:
                raise StoreUnavailable(f"the database {self.db.shown} holds no CA")

    # --- locks ---------------------------------------------------------------------------
    def locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        if name == "crl":
            return self._crl_locked()  # with the CRL version (PgCRL)
        return self.db.advisory([lock_key("ca", name)], wait=self._lock_timeout)

    def names_locked(self, names: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """Advisory locks of every name, sorted, in one transaction (see Database.advisory)."""
        return self.db.advisory([lock_key("name", n) for n in names], wait=self._lock_timeout)

    # --- reads ---------------------------------------------------------------------------
    def ca_cert(self) -> Blob:
        """From the database; the last copy read if the database is unavailable."""
        try:
            with self.db.connection(wait=_CACHED_WAIT if self._ca_cache else None) as conn:
                row = conn.execute("SELECT cert, cert_modified FROM ca WHERE id = 1").fetchone()
        except StoreUnavailable as exc:
            cached = self._ca_cache or self._host_ca_cert()
            if cached is not None:
                self._note_degraded(exc)
                return cached
            raise
        self._note_recovered()
        if row is None:
            raise StoreError(f"the database {self.db.shown} holds no CA; run 'splitca setup'")
        blob = Blob(bytes(row[0]), float(row[1]))
        self._ca_cache = blob
        return blob

    def _host_ca_cert(self) -> Blob | None:
        """This host's copy of the CA certificate (the signer's), if there is one."""
        try:
            st = os.stat(self.host.cert)
            return Blob(self.host.cert.read_bytes(), st.st_mtime)
        except OSError:
            return None

    def crl(self) -> Blob:
        """The CRL in effect: fetched only when its version changed, cached if the database is down."""
        cached = self._crl_cache
        try:
            with self.db.connection(wait=_CACHED_WAIT if cached else None) as conn:
                row = conn.execute(
                    "SELECT crl_version, CASE WHEN crl_version = %s THEN NULL ELSE crl END,"
                    " crl_modified FROM ca WHERE id = 1",
                    (cached[0] if cached else -1,),
                ).fetchone()
        except StoreUnavailable as exc:
            if cached is not None:
                self._note_degraded(exc)
                return cached[1]
            raise
        self._note_recovered()
        if row is None:
            raise StoreError(f"the database {self.db.shown} holds no CRL; run 'splitca setup'")
        if row[1] is None and cached is not None:
            return cached[1]
        blob = Blob(bytes(row[1]), float(row[2]))
        with self._cache_guard:
            if self._crl_cache is None or self._crl_cache[0] < row[0]:
                self._crl_cache = (int(row[0]), blob)
        return blob

    def _note_degraded(self, exc: StoreUnavailable) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning("%s; serving this replica's last copy of the CA certificate and CRL", exc)

    def _note_recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.warning("the database %s is reachable again", self.db.shown)

    def _blob(self, table: str, name: str) -> Blob | None:
        # table: ours, not input
        row = self.db.fetchone(f"SELECT pem, modified FROM {table} WHERE name = %s", (name,))
        return None if row is None else Blob(bytes(row[0]), float(row[1]))

    def cert(self, name: str) -> Blob | None:
        return self._blob("certs", name)

    def csr(self, name: str) -> Blob | None:
        return self._blob("csrs", name)

    def _exists(self, table: str, name: str) -> bool:
        return self.db.fetchone(f"SELECT 1 FROM {table} WHERE name = %s", (name,)) is not None

    def has_cert(self, name: str) -> bool:
        return self._exists("certs", name)

    def has_csr(self, name: str) -> bool:
        return self._exists("csrs", name)

    def cert_location(self, name: str) -> str:
        return f"the certificate of {name} in {self.db.shown}"

    def csr_location(self, name: str) -> str:
        return f"the request of {name} in {self.db.shown}"

    def crl_location(self) -> str:
        return f"the CRL in {self.db.shown}"

    # --- writes --------------------------------------------------------------------------
    def save_csr(
        self, name: str, pem: bytes, csr: x509.CertificateSigningRequest, *, reason: str
    ) -> None:
        status = json.dumps(pki.csr_status_fields(name, csr), separators=(",", ":"))
        self.db.execute(
            "INSERT INTO csrs (name, status, reason, pem, modified) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status,"
            " reason = EXCLUDED.reason, pem = EXCLUDED.pem, modified = EXCLUDED.modified",
            (name, status, reason, pem, time.time()),
        )

    def delete_csr(self, name: str) -> None:
        self.db.execute("DELETE FROM csrs WHERE name = %s", (name,))

    def delete_cert(self, name: str, *, and_csr: bool = False) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM certs WHERE name = %s", (name,))
            if and_csr:
                conn.execute("DELETE FROM csrs WHERE name = %s", (name,))

    def reserve_serial(
        self, name: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> Reservation:
        """One committed statement: the next serial above every issued one, its inventory row
        durable. The database function of the same rules (``splitca.reserve_serial``) runs
        only when the sequence lags behind an issued serial (after a restore) or a row took
        it: its floor is a SQL function, planned anew on each call (~0.2 ms of the database's
        CPU), where this statement's plan is prepared once per session."""
        args = (
            name,
            pki.puppet_time(not_before),
            pki.puppet_time(not_after),
            int(not_after.timestamp()),
        )
        row = self.db.fetchone(_RESERVE, args)
        if row is None:
            row = self.db.fetchone("SELECT splitca.reserve_serial(%s, %s, %s, %s)", args)
        assert row is not None
        return Reservation(int(row[0]))

    def publish_cert(
        self, name: str, cert: x509.Certificate, reservation: Reservation, *, drop_csr: bool
    ) -> None:
        """The certificate (and the dropped request) in one statement, so one transaction and
        one round trip; its serial was committed by :meth:`reserve_serial`."""
        status = json.dumps(pki.cert_status_fields(name, cert), separators=(",", ":"))
        values = (
            name,
            cert.serial_number,
            int(cert.not_valid_after_utc.timestamp()),
            status,
            pki.pem(cert),
            time.time(),
        )
        if drop_csr:
            self.db.execute(_PUBLISH_DROPPING_CSR, (name, *values))
        else:
            self.db.execute(_PUBLISH, values)

    # --- the CA's own certificate and key -------------------------------------------------
    def publish_ca_cert(self, pem: bytes, reservation: Reservation | None) -> None:
        """The new bundle in the database (its serial was committed by reserve_serial),
        then this host's copy; other hosts take theirs when they next open the store."""
        with self.db.connection() as conn:
            conn.execute(
                # Last-Modified as the CRL's (see PgCRL.publish_crl): the database's clock.
                "UPDATE ca SET cert = %s, cert_modified ="
                " greatest(extract(epoch FROM clock_timestamp()), cert_modified) WHERE id = 1",
                (pem,),
            )
        self._ca_cache = None
        self.host.write_cert(pem)

    def ca_key(self) -> bytes:
        """This host's copy of the key (the database never holds it)."""
        return self.host.read_key()

    def replace_ca_key(self, data: bytes) -> None:
        """Replace this host's copy of the key; each replica re-encodes its own."""
        self.host.write_key(data)
