"""PgStore's monitoring records (CRL fetches, refused CSRs): best effort, bounded, never in the way."""

from __future__ import annotations

import logging

from splitca.core.ports import MAX_REFUSALS, CRLFetch, Refusal
from splitca.errors import StoreError
from splitca.store.postgres.database import Database

__all__ = ["PgRecords"]

log = logging.getLogger(__name__)

_WAIT = 1.0  # seconds a record waits for a connection before it is dropped (logged)


class PgRecords:
    """Records no CA decision depends on: a failure is logged and the record dropped."""

    db: Database

    def record_crl_fetch(self, name: str, number: int, at: float) -> None:
        try:
            with self.db.connection(wait=_WAIT) as conn:
                conn.execute(
                    "INSERT INTO crl_fetches (name, number, at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET number = EXCLUDED.number, at = EXCLUDED.at",
                    (name, number, at),
                )
        except StoreError as exc:
            log.warning("CRL fetch by %s not recorded: %s", name, exc)

    def crl_fetches(self) -> list[CRLFetch]:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT name, number, at FROM crl_fetches ORDER BY name")
            return [CRLFetch(n, int(num), float(at)) for n, num, at in rows]

    def record_refusal(self, refusal: Refusal, *, prune_before: float) -> None:
        """One row; older ones and all but the newest MAX_REFUSALS go in the same transaction."""
        r = refusal
        try:
            with self.db.connection(wait=_WAIT) as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO refusals (at, certname, kind, reason, address)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (r.at, r.certname, r.kind, r.reason, r.address),
                )
                conn.execute("DELETE FROM refusals WHERE at < %s", (prune_before,))
                conn.execute(
                    "DELETE FROM refusals WHERE id <= (SELECT max(id) FROM refusals) - %s",
                    (MAX_REFUSALS,),
                )
        except StoreError as exc:
            log.warning("could not record the refusal of %s: %s", r.certname, exc)

    def refusals(self, since: float) -> list[Refusal]:
        try:
            with self.db.connection(wait=_WAIT) as conn:
                rows = conn.execute(
                    "SELECT certname, kind, reason, address, at FROM refusals WHERE at >= %s"
                    " ORDER BY at DESC, id DESC LIMIT %s",
                    (since, MAX_REFUSALS),
                ).fetchall()
        except StoreError as exc:
            log.warning("could not read the recorded refusals: %s", exc)
            return []
        return [Refusal(n, k, reason, a, float(at)) for n, k, reason, a, at in rows]
