"""AuditLog: the AuditSink of a single host, one JSON line per CA event appended to a file."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from splitca.core.audit import SYSTEM, Actor, audit_record
from splitca.errors import UnsafePath
from splitca.fs import open_nofollow

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)


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
        return self.events(event, actor, [fields])

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        """One line per item, appended in one write (lines never interleave with others')."""
        if self.path is None or not items:
            return True
        data = b"".join(
            (
                json.dumps(audit_record(event, actor, f), separators=(",", ":"), default=str) + "\n"
            ).encode()
            for f in items
        )
        try:
            with self._lock:
                fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    if os.write(fd, data) != len(data):
                        raise OSError("short write (disk full?)")
                finally:
                    os.close(fd)
        except (OSError, UnsafePath) as exc:
            log.error(
                "could not write audit log %s (event %r not recorded): %s", self.path, event, exc
            )
            return False
        return True
