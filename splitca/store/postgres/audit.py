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
_INSERT = (
    "INSERT INTO audit (at, event, certname, host, record)"
    " SELECT t.at::timestamptz, t.event, t.certname, t.host, t.record::jsonb"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit,"
    " unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
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
                conn.execute(_INSERT, [list(col) for col in zip(*rows, strict=True)])
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

    def _row(self, event: str, actor: Actor, fields: dict[str, object]) -> tuple[object, ...]:
        record = audit_record(event, actor, fields)
        # jsonb and text hold no NUL character: a (hostile) one in a field is stored as U+FFFD.
        text = json.dumps(record, separators=(",", ":"), default=str).replace("\\u0000", "\\ufffd")
        certname = record.get("certname")
        return (
            record["time"],
            event,
            certname.replace("\x00", "\ufffd") if isinstance(certname, str) else None,  # as above
            self.host,
            text,
        )
