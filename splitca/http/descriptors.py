"""Connections within the process's file descriptors: past the limit, the longest idle one is closed."""
# cheroot's accept loop re-raises EMFILE: with every descriptor taken (idle connections
# opened faster than socket_timeout expires them: about 1,000 under systemd's default
# soft limit) its selector thread logged a traceback and retried at once, in a loop, tens
# of thousands of lines a second, and accepted no one until some connection expired.

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import threading
import time
from typing import Any

from cheroot import connections as cheroot_connections

__all__ = ["Connections", "raise_descriptor_limit"]

log = logging.getLogger("splitca.server")  # as http/server.py: the name operators filter on

_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESERVE = 64  # descriptors kept for everything but connections (files, databases, logs)
WARN_EVERY = 10.0  # seconds between repeats of the warning


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open files to the hard one, as far as it goes (at most 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(OSError, ValueError):  # else keep the soft limit there is
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connection_limit(threads: int) -> int:
    """How many connections this process may hold: its open-files limit, less a reserve for
    the app (files and a database connection per thread) that never goes to clients."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, soft - RESERVE - 4 * threads)


class Connections(cheroot_connections.ConnectionManager):
    """cheroot's connection manager, bounded by the process's file descriptors.

    It counts the connections it accepted and are not yet closed (waiting in the selector,
    queued or being served). At the limit (:func:`connection_limit`, read at each accept:
    the limit may change under a running process), or when ``accept()`` fails for want of
    a descriptor, it closes the connection that has waited longest in the selector for
    its next request, so a new client is served and an idle one pays; without such a
    connection it waits a moment rather than retrying at once. One warning per 10 s.
    """

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.open = 0
        self._count_lock = threading.Lock()
        self._warned = -WARN_EVERY

    def closed(self) -> None:
        """One accepted connection was closed (called once per connection)."""
        with self._count_lock:
            self.open -= 1

    def _from_server_socket(self, server_socket: Any) -> Any:
        limit = connection_limit(max(1, self.server.requests.max))
        if self.open >= limit and not self._shed(f"{self.open} connections open, the limit"):
            time.sleep(0.05)
            return None
        try:
            conn = super()._from_server_socket(server_socket)  # type: ignore[misc]
        except OSError as exc:
            if exc.errno not in _OUT_OF_DESCRIPTORS:
                raise
            if not self._shed(f"accept() failed: {exc.strerror}"):
                time.sleep(0.05)  # nothing idle to close: the requests being served will end
            return None
        if conn is not None:
            with self._count_lock:
                self.open += 1
            conn.counted_by = self
        return conn

    def _shed(self, why: str) -> bool:
        """Close the connection idle longest in the selector; False if there is none."""
        idle = [
            (c.last_used, fd, c)
            for fd, c in self._selector.connections  # type: ignore[attr-defined]
            if c is not self.server
        ]
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning(
                "out of connections (%s; open files limit %d): closing the longest idle "
                "ones to accept new clients",
                why,
                soft,
            )
        if not idle:
            return False
        _, fd, conn = min(idle, key=lambda t: t[0])
        self._selector.unregister(fd)  # type: ignore[attr-defined]
        getattr(conn, "evict", conn.close)()
        return True
