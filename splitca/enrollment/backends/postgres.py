"""The registry and the redeemed-token ledger in the CA's PostgreSQL database (shared by every replica)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, Protocol

from splitca.enrollment.registry import (
    Classification,
    Redemption,
    Registration,
    check_token,
    checked_name,
    hash_token,
    log,
)
from splitca.errors import Conflict, InvalidRequest, NotFound, StoreError

__all__ = ["Connections", "PgLedger", "PgRegistry"]

_COLUMNS = "certname, created, expires, token_sha256, classes, parameters, environment, redeemed"


class Connections(Protocol):
    """What the backends need of the store's database: pooled connections whose driver errors
    come out as the store's (StoreUnavailable, StoreError). compose hands in the store's one."""

    @property
    def shown(self) -> str: ...

    def connection(
        self, *, wait: float | None = None
    ) -> contextlib.AbstractContextManager[Any]: ...


class PgRegistry:
    """Registrations as rows of ``splitca.registrations``, one per certname.

    A token is redeemed by one conditional ``UPDATE ... WHERE redeemed IS NULL AND
    expires > now AND token_sha256 = ...``: PostgreSQL's row lock makes every other
    replica, process or thread presenting the same token at the same moment find the
    row already used, so exactly one wins. A refused token is then told why with the
    same reasons as every backend (:func:`check_token` on the row as it now is).
    """

    def __init__(self, db: Connections) -> None:
        self.db = db

    @property
    def location(self) -> str:
        return f"{self.db.shown} (registrations)"

    def get(self, certname: str) -> Registration | None:
        try:
            checked_name(certname)
        except InvalidRequest:
            return None
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM registrations WHERE certname = %s", (certname,)
            ).fetchone()
        return None if row is None else self._record(row)

    def add(self, record: Registration, *, replace: bool = False) -> None:
        checked_name(record.certname)
        c = record.classification
        values = (
            record.certname,
            record.created,
            record.expires,
            record.token_sha256,
            json.dumps(list(c.classes)),
            json.dumps(dict(c.parameters), allow_nan=False),
            c.environment,
            record.redeemed,
        )
        upsert = (
            " ON CONFLICT (certname) DO UPDATE SET (created, expires, token_sha256, classes,"
            " parameters, environment, redeemed) = (EXCLUDED.created, EXCLUDED.expires,"
            " EXCLUDED.token_sha256, EXCLUDED.classes, EXCLUDED.parameters,"
            " EXCLUDED.environment, EXCLUDED.redeemed)"
            if replace
            else " ON CONFLICT (certname) DO NOTHING"
        )
        with self.db.connection() as conn:
            written = conn.execute(
                f"INSERT INTO registrations ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s::jsonb,"
                f" %s::jsonb, %s, %s){upsert} RETURNING certname",
                values,
            ).fetchone()
        if written is None:
            raise Conflict(
                f"{record.certname} is already registered; unregister it first "
                "(or replace the registration, which issues a new token)"
            )

    def remove(self, certname: str) -> None:
        checked_name(certname)
        with self.db.connection() as conn:
            gone = conn.execute(
                "DELETE FROM registrations WHERE certname = %s RETURNING certname", (certname,)
            ).fetchone()
        if gone is None:
            raise NotFound(f"{certname} is not registered")

    def records(self) -> Iterator[Registration]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM registrations ORDER BY certname"
            ).fetchall()
        for row in rows:
            try:
                yield self._record(row)
            except StoreError as exc:
                log.warning("skipping %s", exc)

    def redeem(self, certname: str, token: str | None, now: dt.datetime) -> Redemption:
        try:
            checked_name(certname)
        except InvalidRequest:
            return Redemption(False, "no registration")
        if token:
            with self.db.connection() as conn:
                row = conn.execute(
                    f"UPDATE registrations SET redeemed = %(now)s WHERE certname = %(name)s"
                    " AND token_sha256 = %(digest)s AND redeemed IS NULL AND expires > %(now)s"
                    f" RETURNING {_COLUMNS}",
                    {"now": now, "name": certname, "digest": hash_token(token)},
                ).fetchone()
            if row is not None:
                return Redemption(True, "registered; token accepted", self._record(row))
        record = self.get(certname)
        # Nothing was updated, so the token does not enroll this row as it is now (another
        # redeemer may have just won: the row then says "token already used").
        reason = check_token(record, token, now) or "token already used"
        return Redemption(False, reason, record)

    def _record(self, row: tuple[Any, ...]) -> Registration:
        """A row as a Registration, validated like any stored record (hostile until checked)."""
        name, created, expires, digest, classes, parameters, environment, redeemed = row
        try:
            classification = Classification.build(classes, parameters, environment)
        except InvalidRequest as exc:
            raise StoreError(f"registration {name} in {self.db.shown} is invalid: {exc}") from None
        return Registration(
            name,
            _utc(created),
            _utc(expires),
            digest,
            classification,
            None if redeemed is None else _utc(redeemed),
        )


class PgLedger:
    """The ledger of redeemed tokens as rows of ``splitca.redeemed_tokens``: one per token hash.

    The database-wide counterpart of the file ledger (enrollment/autosign.py): a token is
    claimed at most once by every replica together, whatever the registry backend can do
    (a read-only HTTP registry has only this). ``claim`` returns only after the commit.
    """

    def __init__(self, db: Connections) -> None:
        self.db = db

    def claim(self, token_sha256: str, certname: str, now: dt.datetime) -> bool:
        """Record the token as used; False if it already was (by any replica)."""
        with self.db.connection() as conn:
            row = conn.execute(
                "INSERT INTO redeemed_tokens (token_sha256, certname, redeemed)"
                " VALUES (%s, %s, %s) ON CONFLICT (token_sha256) DO NOTHING"
                " RETURNING token_sha256",
                (token_sha256, certname, now),
            ).fetchone()
        return row is not None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)
