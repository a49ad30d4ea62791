"""AuditLog: the AuditSink of a single host, one JSON line per CA event appended to a file."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from splitca.core.audit import SYSTEM, Actor, audit_record
from splitca.errors import UnsafePath
from splitca.fs import open_nofollow

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)

# What json.dumps(record, separators=(",", ":"), default=str) makes, its encoder built once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


class AuditLog:
    """Appends events as JSON lines with ``O_APPEND`` (one write per event, so lines never interleave).

    The descriptor stays open between events. Before each write the path is ``lstat``-ed
    and compared with the open file's identity: once the log has been rotated (renamed
    away or removed, as logrotate does) or replaced, the next event reopens the path
    (creating a new file, mode 0o640) and the old file gets nothing more; ``copytruncate``
    needs nothing, ``O_APPEND`` writes at the new end. A failed write drops the
    descriptor, so the next event reopens.

    A failure to write the audit log is logged loudly but never fails the CA operation
    that has already happened. The log is never written through a symbolic link.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._where = None if path is None else os.fspath(path)  # a str for each event's lstat
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file _fd is open on
        _instances.add(self)

    def event(self, event: str, actor: Actor = SYSTEM, **fields: object) -> bool:
        """Record one event; False (and an error logged) if it could not be written."""
        return self.events(event, actor, [fields])

    def events(self, event: str, actor: Actor, items: Sequence[dict[str, object]]) -> bool:
        """One line per item, appended in one write (lines never interleave with others')."""
        if self._where is None or not items:
            return True
        data = b"".join(
            [(_ENCODER.encode(audit_record(event, actor, f)) + "\n").encode() for f in items]
        )
        try:
            with self._lock:
                fd = self._current(self._where)
                try:
                    written = os.write(fd, data)
                except OSError as exc:  # EBADF: the number is no longer ours to close
                    self._drop(close=exc.errno != errno.EBADF)
                    raise
                if written != len(data):
                    self._drop()
                    raise OSError("short write (disk full?)")
        except (OSError, UnsafePath) as exc:
            log.error(
                "could not write audit log %s (event %r not recorded): %s", self.path, event, exc
            )
            return False
        return True

    def close(self) -> None:
        """Close the open descriptor (the log stays usable: the next event reopens it)."""
        with self._lock:
            self._drop()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _current(self, path: str) -> int:
        """The descriptor open on the file at *path* now (reopened if it was rotated)."""
        if self._fd is not None:
            try:
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == self._ident:
                    return self._fd
            except OSError:
                pass  # gone: reopen (and create) it below
            self._drop()
        # O_NONBLOCK: opening a FIFO planted there for writing would wait for a reader,
        # for ever, and events are written holding locks (a CRL's, under the index lock).
        # (It changes nothing for a regular file.)
        fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o640)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{path} is not a regular file; refusing to write to it")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        return fd

    def _drop(self, *, close: bool = True) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and close:
            with contextlib.suppress(OSError):
                os.close(fd)


# A thread that holds a log's lock while another forks leaves the child's copy held forever:
# give every log a fresh lock in the child (its descriptor, shared with the parent, is fine
# with O_APPEND; each process reopens on its own after a rotation).
_instances: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for audit in list(_instances):
        audit._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
