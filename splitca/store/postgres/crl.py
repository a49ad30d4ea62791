"""PgStore's CRL publication: the crl lock with the CRL version it was taken at, and the install."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

from splitca import pki
from splitca.core.ports import CRLEntry
from splitca.errors import StoreError
from splitca.store.postgres.database import Database, lock_key

__all__ = ["PgCRL"]


class PgCRL:
    """The write side of the CRL over ``self.db``; ``self._local`` holds, per thread, the
    CRL version in effect when that thread took the crl lock (``crl_base``)."""

    db: Database
    _local: threading.local
    _lock_timeout: float

    @contextlib.contextmanager
    def _crl_locked(self) -> Iterator[None]:
        """The crl lock, and the CRL version in effect once it is taken: publish_crl puts a
        CRL in effect only over that version. The lock lives in a database session; if that
        session ends (a dropped connection, pg_terminate_backend), another replica may take
        it and publish, and a CRL built from the revocations read before would leave that
        replica's revocations out. The version check refuses it whatever the lock did."""
        with self.db.advisory([lock_key("ca", "crl")], wait=self._lock_timeout):
            if getattr(self._local, "crl_base", None) is not None:  # nested: the outer's
                yield
                return
            row = self.db.fetchone("SELECT crl_version FROM ca WHERE id = 1")
            self._local.crl_base = [int(row[0])] if row is not None else None
            try:
                yield
            finally:
                self._local.crl_base = None

    def publish_crl(
        self,
        pem: bytes,
        *,
        number: int,
        entries: Sequence[CRLEntry],
        added: Sequence[pki.Revocation] | None,
        on_installed: Callable[[], None],
    ) -> None:
        """The CRL, its number and its revocations in one transaction; in effect at its commit.

        The number must be above the one in effect (checked in the same statement that
        installs it), so CRL numbers strictly increase whatever a caller does; and, under
        the crl lock, the CRL in effect must still be the one in effect when the lock was
        taken (see _crl_locked), so no CRL built from stale revocations is installed.
        *on_installed* runs after the commit: nothing is derived afterwards.
        """
        base: list[int] | None = getattr(self._local, "crl_base", None)
        with self.db.transaction() as conn:
            done = conn.execute(
                # Last-Modified from the database's clock, never back: with each replica's
                # own, one running behind would date a new CRL before the one agents hold,
                # and their If-Modified-Since would get 304 from every replica.
                "UPDATE ca SET crl = %s, crl_number = %s,"
                " crl_modified = greatest(extract(epoch FROM clock_timestamp()), crl_modified),"
                " crl_version = crl_version + 1 WHERE id = 1 AND crl_number < %s"
                + ("" if base is None else " AND crl_version = %s")
                + " RETURNING crl_version",
                (pem, number, number, *([] if base is None else base)),
            )
            installed = done.fetchone()
            if installed is None:
                now = conn.execute("SELECT crl_number, crl_version FROM ca WHERE id = 1")
                row = now.fetchone()
                if base is not None and row is not None and int(row[1]) != base[0]:
                    raise StoreError(
                        f"the CRL in {self.db.shown} changed while this replica held the crl "
                        f"lock (its database session was lost?); CRL number {number} was not "
                        "published: try again"
                    )
                raise StoreError(
                    f"CRL number {number} is not above the one in effect in {self.db.shown}"
                )
            if added is None:
                conn.execute("DELETE FROM revoked")
                with conn.cursor().copy("COPY revoked (serial, date_ts, reason) FROM STDIN") as cp:
                    for serial, ts, reason in entries:
                        cp.write_row((serial, ts, reason))
            elif added:
                conn.cursor().executemany(
                    "INSERT INTO revoked (serial, date_ts, reason) VALUES (%s, %s, %s)"
                    " ON CONFLICT (serial) DO UPDATE SET date_ts = EXCLUDED.date_ts,"
                    " reason = EXCLUDED.reason",
                    [(e.serial, e.date.timestamp(), pki.reason_code(e.reason)) for e in added],
                )
        if base is not None:
            base[0] = int(installed[0])  # a second publish under the same lock builds on this
        on_installed()
