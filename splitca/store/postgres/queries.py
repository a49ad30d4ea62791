"""PgStore's queries: statuses (in FileStore's order and bytes), serials, counts and revocations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence

from splitca import pki
from splitca.core.ports import CRLEntry, Row
from splitca.store.postgres.database import Database

__all__ = ["PgQueries"]

_PAGE = 2000  # rows per query when listing statuses
_CERT_SELECT = (
    "SELECT c.name, c.status, c.serial, c.not_after_ts, r.serial IS NOT NULL "
    "FROM certs c LEFT JOIN revoked r ON r.serial = c.serial"
)

# A name's certificate, else its request (kind 0 before 1), in one statement.
_STATUS_OF_NAME = (
    "SELECT 0, c.name, c.status, c.serial, c.not_after_ts, r.serial IS NOT NULL, NULL::text "
    "FROM certs c LEFT JOIN revoked r ON r.serial = c.serial WHERE c.name = %s "
    "UNION ALL SELECT 1, name, status, NULL::numeric, NULL::bigint, NULL::boolean, reason "
    "FROM csrs WHERE name = %s ORDER BY 1 LIMIT 1"
)


class PgQueries:
    """The read side of PgStore over ``self.db``; names sort by bytes (``COLLATE "C"``)."""

    db: Database

    def _cert_rows(self, where: str, args: tuple[object, ...]) -> list[Row]:
        with self.db.connection() as conn:
            rows = conn.execute(f"{_CERT_SELECT} {where}", args).fetchall()
        return [
            Row(n, "revoked" if rev else "signed", st, int(s), int(na))
            for n, st, s, na, rev in rows
        ]

    def _csr_rows(self, where: str, args: tuple[object, ...]) -> list[Row]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT name, status, reason FROM csrs {where}", args).fetchall()
        return [Row(n, "requested", st, reason=r) for n, st, r in rows]

    def status(self, name: str) -> Row | None:
        """The certificate if there is one (as puppetserver), else the request: one round
        trip (an enrollment asks twice)."""
        found = self.db.fetchone(_STATUS_OF_NAME, (name, name))
        if found is None:
            return None
        kind, n, st, s, na, rev, reason = found
        if kind == 0:
            return Row(n, "revoked" if rev else "signed", st, int(s), int(na))
        return Row(n, "requested", st, reason=reason)

    def _pages(
        self, fetch: Callable[[str, tuple[object, ...]], list[Row]], col: str
    ) -> Iterator[Row]:
        """Every row in name order, one short query per page (no connection held between)."""
        last = ""
        while True:
            page = fetch(f"WHERE {col} > %s ORDER BY {col} LIMIT {_PAGE}", (last,))
            yield from page
            if len(page) < _PAGE:
                return
            last = page[-1].name

    def statuses(self, state: str | None = None) -> Iterator[Row]:
        """Requests first, then certificates, each in name order (byte order, as FileStore)."""
        if state in (None, "requested"):
            yield from self._pages(self._csr_rows, "name")
        if state in (None, "signed", "revoked"):
            for row in self._pages(self._cert_rows, "c.name"):
                if state is None or row.state == state:
                    yield row

    def statuses_json(self, state: str | None = None) -> Iterator[str]:
        """The JSON array of :meth:`statuses`, in pieces (the same bytes as FileStore's)."""
        sep = "["
        if state in (None, "requested"):
            for row in self._pages(self._csr_rows, "name"):
                yield sep + pki.with_pending_reason(row.json(), row.reason)
                sep = ","
        if state in (None, "signed", "revoked"):
            batch: list[str] = []
            for row in self._pages(self._cert_rows, "c.name"):
                if state is None or row.state == state:
                    batch.append(row.json())
                if len(batch) >= _PAGE:
                    yield sep + ",".join(batch)
                    sep, batch = ",", []
            if batch:
                yield sep + ",".join(batch)
                sep = ","
        yield "[]" if sep == "[" else "]"

    def pending_names(self) -> list[str]:
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM csrs ORDER BY name")]

    def serials_for_names(self, names: Sequence[str]) -> dict[str, list[int]]:
        """:meth:`serials_for` of many names in one query."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT name, serial FROM inventory WHERE name = ANY(%s)"
                " UNION SELECT name, serial FROM inventory_also WHERE name = ANY(%s)"
                " UNION SELECT name, serial FROM certs WHERE name = ANY(%s)",
                (list(names), list(names), list(names)),
            ).fetchall()
        found: dict[str, list[int]] = {}
        for name, serial in rows:
            found.setdefault(str(name), []).append(int(serial))
        return {name: sorted(serials) for name, serials in found.items()}

    def serials_for(self, name: str) -> list[int]:
        """Every serial ever issued to *name*: the inventory plus its current certificate."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT serial FROM inventory WHERE name = %s"
                " UNION SELECT serial FROM inventory_also WHERE name = %s"
                " UNION SELECT serial FROM certs WHERE name = %s",
                (name, name, name),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def counts(self) -> dict[str, int]:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM csrs),"
                " (SELECT count(*) FROM certs c WHERE NOT EXISTS"
                "   (SELECT 1 FROM revoked r WHERE r.serial = c.serial)),"
                " (SELECT count(*) FROM certs c JOIN revoked r ON r.serial = c.serial)"
            ).fetchone()
        assert row is not None
        return {"requested": int(row[0]), "signed": int(row[1]), "revoked": int(row[2])}

    def is_revoked(self, serial: int) -> bool:
        with self.db.connection() as conn:
            return (
                conn.execute("SELECT 1 FROM revoked WHERE serial = %s", (serial,)).fetchone()
                is not None
            )

    def revoked_among(self, serials: Iterable[int]) -> set[int]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT serial FROM revoked WHERE serial = ANY(%s)", (list(set(serials)),)
            ).fetchall()
        return {int(r[0]) for r in rows}

    def revocations(self) -> list[CRLEntry]:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT serial, date_ts, reason FROM revoked ORDER BY pos")
            return [(int(s), float(ts), None if r is None else int(r)) for s, ts, r in rows]

    def revoked_count(self) -> int:
        with self.db.connection() as conn:
            row = conn.execute("SELECT count(*) FROM revoked").fetchone()
        return int(row[0]) if row else 0

    def crl_number(self) -> int:
        with self.db.connection() as conn:
            row = conn.execute("SELECT crl_number FROM ca WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def expired_serials(self, now: dt.datetime) -> set[int]:
        """Serials whose every certificate (a serial issued twice has two) has expired."""
        ts = int(now.timestamp())
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT serial FROM inventory i WHERE not_after_ts < %s AND NOT EXISTS"
                " (SELECT 1 FROM inventory_also a WHERE a.serial = i.serial"
                "  AND (a.not_after_ts IS NULL OR a.not_after_ts >= %s))",
                (ts, ts),
            )
            return {int(r[0]) for r in rows}
