"""The audit log: one JSON line per CA event (CSR, decision, sign, revoke, clean, registration)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from splitca.errors import UnsafePath
from splitca.fs import open_nofollow

__all__ = ["Actor", "AuditLog"]

log = logging.getLogger(__name__)

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


class AuditLog:
    """Appends events as JSON lines with ``O_APPEND`` (one write per event, so lines never interleave).

    A failure to write the audit log is logged loudly but never fails the CA operation
    that has already happened. The log is never written through a symbolic link.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        """Record one event; False (and an error logged) if it could not be written."""
        if self.path is None:
            return True
        record: dict[str, object] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "actor": actor.as_dict(),
        }
        for k, v in fields.items():
            if k in _SECRET_KEYS:
                continue
            record[k] = v
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            with self._lock:
                fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError("short write (disk full?)")
                finally:
                    os.close(fd)
        except (OSError, UnsafePath) as exc:
            log.error(
                "could not write audit log %s (event %r not recorded): %s", self.path, event, exc
            )
            return False
        return True
