"""PgAudit: the AuditSink of a CA on PostgreSQL, one jsonb row per event in ``splitca.audit``."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Sequence

from splitca.core.audit import SYSTEM, Actor, audit_record
from splitca.errors import LockTimeout, StoreError
from splitca.store.postgres.database import Database

__all__ = ["PgAudit"]

log = logging.getLogger(__name__)

# An event waits at most this long for a connection: the operation it records is done, and
# its answer should not wait out the store's whole timeout for a database that is away.
AUDIT_WAIT = 2.0
# The rows go as one JSON array (encoded in C by json.dumps), not as five text arrays
# (psycopg's array dumper escapes each element in Python: ~100 us per enrollment).
_INSERT = (
    "INSERT INTO audit (at, event, certname, host, record)"
    " SELECT t.at::timestamptz, t.event, t.certname, t.host, t.record"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit,"
    " ROWS FROM (jsonb_to_recordset(%s::jsonb)"
    " AS (at text, event text, certname text, host text, record jsonb))"
    " WITH ORDINALITY AS t(at, event, certname, host, record, i) ORDER BY t.i"
)


class PgAudit:
    """Inserts every event (the record of :func:`audit_record`, secrets dropped) as one row:
    its time, event, certname (when it names one), the host that wrote it, and the record.

    Best effort, like the file log: a database that cannot take the row is logged loudly
    (with the event) and the CA operation, which has already happened, goes on.
    """

    def __init__(self, db: Database, *, host: str | None = None) -> None:
        self.db = db
        self.host = host or socket.gethostname()

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        """Record one event; False (and an error logged) if the database did not take it."""
        return self.events(event, actor, [fields])

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        """One row per item, in one statement: a batch of 10,000 revocations is one round trip."""
        if not items:
            return True
        rows = [self._row(event, actor, f) for f in items]
        try:
            with self.db.connection(wait=min(AUDIT_WAIT, self.db.timeout)) as conn:
                # As durable as the file log's unsynced append, and as cheap: the commit
                # does not wait for the WAL flush (a crash may lose the last events, never
                # tear one); the operations' own commits stay synchronous. One statement,
                # its own transaction (autocommit), so one round trip: set_config(..., true)
                # holds for that transaction only.
                conn.execute(_INSERT, ("[" + ",".join(rows) + "]",))
        except (StoreError, LockTimeout) as exc:
            log.error(
                "could not write the audit trail to %s (event %r not recorded): %s",
                self.db.shown,
                event,
                exc,
            )
            return False
        except Exception:  # never fail the operation it records
            log.exception("could not write the audit trail (event %r not recorded)", event)
            return False
        return True

    def _row(self, event: str, actor: Actor, fields: dict[str, object]) -> str:
        """One row as a JSON object: its columns, and the record itself as ``record``."""
        record = audit_record(event, actor, fields)
        certname = record.get("certname")
        row = {
            "at": record["time"],
            "event": event,
            "certname": certname if isinstance(certname, str) else None,
            "host": self.host,
        }
        # jsonb and text hold no NUL character: a (hostile) one in a field is stored as U+FFFD.
        text = json.dumps(record, separators=(",", ":"), default=str)
        head = json.dumps(row, separators=(",", ":"), default=str)
        return f'{head[:-1]},"record":{text}}}'.replace("\\u0000", "\\ufffd")
