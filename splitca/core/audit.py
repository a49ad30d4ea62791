"""The audit trail's port: who did what (Actor), the AuditSink every use case records to, its records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SYSTEM", "Actor", "AuditSink", "NullAudit", "TeeAudit", "audit_record"]

# Keys that must never reach the audit log, whatever a caller passes.
_SECRET_KEYS = frozenset(
    {"token", "password", "challenge_password", "key", "private_key", "secret"}
)


@dataclass(frozen=True)
class Actor:
    """Who asked: ``kind`` is cli, http, autosign or system; ``name`` a certname or user."""

    kind: str
    name: str = ""
    address: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"kind": self.kind}
        if self.name:
            out["name"] = self.name
        if self.address:
            out["address"] = self.address
        return out


SYSTEM = Actor("system")


class AuditSink(Protocol):
    """Where CA events go (a JSON-lines file, a database table).

    Recording is best effort: a sink that cannot record logs it loudly and returns
    False; it never fails the CA operation, which has already happened.
    """

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        """Record one event (secret fields dropped, see :func:`audit_record`)."""
        ...

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        """Record one *event* per item of fields at once (a batch: one write, one round trip)."""
        ...


def audit_record(event: str, actor: Actor, fields: dict[str, object]) -> dict[str, object]:
    """The record every sink stores: time, event, actor and *fields* without secrets."""
    record: dict[str, object] = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "actor": actor.as_dict(),
    }
    for k, v in fields.items():  # a plain loop: no generator resumed per field
        if k not in _SECRET_KEYS:
            record[k] = v
    return record


class NullAudit:
    """An AuditSink that records nothing (no audit log configured)."""

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        return True

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        return True


class TeeAudit:
    """An AuditSink that records every event to each of *sinks* (a database and a file).

    Each sink is tried whatever the others did; True only if every one recorded it.
    """

    def __init__(self, *sinks: AuditSink) -> None:
        self.sinks = sinks

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        results = [sink.event(event, actor, **fields) for sink in self.sinks]
        return all(results)

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        results = [sink.events(event, actor, items) for sink in self.sinks]
        return all(results)
