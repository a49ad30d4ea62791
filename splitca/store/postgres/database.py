"""The database connection: a psycopg pool per process, bounded waits, errors as StoreUnavailable."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from splitca.errors import LockTimeout, StoreError, StoreUnavailable

__all__ = ["Database", "lock_key", "redact"]

log = logging.getLogger(__name__)

# Pools left behind in a forked child (``serve``'s workers): never closed there (closing
# would end the parent's sessions over the shared sockets), kept referenced so they are
# never finalized either; the child opens its own.
_INHERITED: list[object] = []
_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for db in list(_LIVE):
        db._forget_pools()


os.register_at_fork(after_in_child=_after_fork_in_child)

# The two-int advisory lock space: (class, key). Names and CA-wide locks never collide.
_NAME_CLASS = 0x5C1A0001
_CA_CLASS = 0x5C1A0002
MIGRATE_LOCK = (0x5C1A0003, 1)
_FRESH = 1.0  # seconds a connection back from a request is used again without a check


class _Connection(psycopg.Connection[Any]):
    """A pooled connection keeping one cursor for the one-statement queries (fetchone,
    execute): a cursor made per query, as ``Connection.execute`` does, is ~20 Python calls."""

    kept: psycopg.Cursor[Any] | None = None


class _Pool(psycopg_pool.ConnectionPool[_Connection]):
    """A pool that remembers why its last connection attempt failed: a wait for a
    connection that times out says so (a wrong user, database or option), not only that
    it timed out."""

    last_error: str | None = None

    def _connect(self, timeout: float | None = None) -> _Connection:
        try:
            conn = super()._connect(timeout)
        except psycopg.Error as exc:
            self.last_error = _first_line(exc)
            raise
        if self.last_error is not None:
            self.last_error = None
            _REPEATS.seen.discard(self.name)
        return conn


class _RepeatedConnectErrors(logging.Filter):
    """The pool logs every failed attempt (a retry every few seconds): a pool's attempts
    failing alike are logged once, until one succeeds (then a new failure is logged)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "error connecting in %r: %s" or not isinstance(record.args, tuple):
            return True
        name = str(record.args[0])
        if name in self.seen:
            return False
        self.seen.add(name)
        return True


_REPEATS = _RepeatedConnectErrors()
logging.getLogger("psycopg.pool").addFilter(_REPEATS)


def lock_key(kind: str, name: str) -> tuple[int, int]:
    """The advisory lock of a certname (kind ``name``) or a CA-wide lock (kind ``ca``)."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)
    return (_NAME_CLASS if kind == "name" else _CA_CLASS, digest)


def redact(url: str) -> str:
    """*url* without any password in it, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://?"
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2 and ":" in netloc[0]:
        user = netloc[0].split(":", 1)[0]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    return urllib.parse.urlunsplit(parts._replace(query=""))


class Database:
    """One database URL: a connection pool per process (made on first use, again after fork)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 10,
    ) -> None:
        self.url = url
        self.shown = redact(url)
        self.timeout = timeout
        self._password = password
        self._pool_size = pool_size
        self._guard = threading.Lock()
        self._pid = -1
        self._pool: _Pool | None = None
        self._locks: _Pool | None = None
        self._local = threading.local()
        self._idle_since: dict[int, float] = {}  # id(connection) -> when it came back
        _LIVE.add(self)

    def _forget_pools(self) -> None:
        """In a forked child: leave the parent's pools alone (see _INHERITED)."""
        _INHERITED.extend(p for p in (self._pool, self._locks) if p is not None)
        self._pool = self._locks = None
        self._pid = -1
        self._guard = threading.Lock()
        self._local = threading.local()

    # --- pools -----------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, int(self.timeout)),
            "application_name": "splitca",
            # Every commit durable whatever the server's default; no statement runs unbounded
            # (lock waits have their own, shorter, lock_timeout). A lock holder's session is
            # idle in its transaction while the work runs on others (Database.advisory): a
            # server's idle_in_transaction_session_timeout would end it, freeing its locks.
            "options": "-c search_path=splitca -c synchronous_commit=on -c statement_timeout=120s"
            " -c idle_in_transaction_session_timeout=0",
            # A database that vanishes without a word (a partition) is noticed in seconds.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": int(max(10.0, self.timeout) * 1000),
        }
        if self._password is not None:
            kw["password"] = self._password
        return kw

    def _make_pool(self, name: str, size: int) -> _Pool:
        pool = _Pool(
            self.url,
            connection_class=_Connection,
            kwargs=self._kwargs(),
            min_size=1,
            max_size=size,
            open=False,
            # No ``reset`` callback: with one the pool hands every returned connection to
            # its worker thread (a queue put and a thread wake-up per query, the connection
            # unusable meanwhile); connection() notes the return time itself.
            check=self._check,
            timeout=self.timeout,
            # Give up a reconnection (backing off 1, 2, 4 s...) after this; the next request
            # starts a new one: a database that is back is found within seconds.
            reconnect_timeout=max(5.0, self.timeout),
            name=name,
            num_workers=1,
        )
        pool.open(wait=False)
        return pool

    def _put_back(self, pool: _Pool, conn: _Connection) -> None:
        """Return *conn* to *pool*, noting when (see _check)."""
        if len(self._idle_since) > 1000:  # entries of connections the pool has dropped
            self._idle_since.clear()  # (each is then checked once more: harmless)
        self._idle_since[id(conn)] = time.monotonic()
        pool.putconn(conn)

    def _check(self, conn: _Connection) -> None:
        """Check a connection that sat idle (a database restarted meanwhile ended it) with
        one round trip; one back from a request a moment ago is used as it is (under load
        that round trip would double the cost of every query)."""
        since = self._idle_since.pop(id(conn), None)
        if since is None or time.monotonic() - since > _FRESH:
            psycopg_pool.ConnectionPool.check_connection(conn)

    def _pools(self) -> tuple[_Pool, _Pool]:
        pid = os.getpid()
        if self._pid != pid or self._pool is None or self._locks is None:
            with self._guard:
                if self._pid != pid or self._pool is None or self._locks is None:
                    if self._pid != pid:  # a fork the hook did not see: never close those
                        _INHERITED.extend(p for p in (self._pool, self._locks) if p is not None)
                    self._local = threading.local()
                    try:
                        self._pool = self._make_pool("splitca", self._pool_size)
                        # Lock holders get their own pool, so they never starve the queries
                        # they run while holding a lock (each thread holds at most one).
                        self._locks = self._make_pool("splitca-locks", self._pool_size)
                    except psycopg.Error as exc:
                        raise self._translate(exc) from exc
                    self._pid = pid
        return self._pool, self._locks

    def _main_pool(self) -> _Pool:
        pool = self._pool
        return pool if pool is not None and self._pid == os.getpid() else self._pools()[0]

    def shutdown(self) -> None:
        """Close both pools of this process (the Database opens new ones if used again)."""
        with self._guard:
            pools, self._pool, self._locks = (self._pool, self._locks), None, None
            if self._pid == os.getpid():
                for pool in pools:
                    if pool is not None:
                        pool.close(timeout=5)

    # --- errors ----------------------------------------------------------------------------
    def _translate(self, exc: BaseException, pool: _Pool | None = None) -> StoreError | LockTimeout:
        if isinstance(exc, psycopg_pool.PoolTimeout):
            why = pool.last_error if pool is not None else None
            return StoreUnavailable(
                f"the database {self.shown} is unavailable: "
                + (why or f"no connection within {self.timeout:g}s")
            )
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return LockTimeout(f"a lock in the database {self.shown} was not free in time")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StoreUnavailable(f"the database {self.shown} is unavailable: {_first_line(exc)}")
        return StoreError(f"the database {self.shown} failed: {_first_line(exc)}")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn psycopg's exceptions into the store's (never a raw driver error at an edge)."""
        try:
            yield
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    # --- connections -----------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(self, *, wait: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode (use ``conn.transaction()`` for more),
        waited for up to *wait* seconds (default: the store's timeout)."""
        # One generator for what errors(), the pool's connection() and the connection's own
        # context did (~40 Python calls per query less): the pool rolls back a connection
        # returned inside a transaction, and an autocommit one has nothing to commit.
        pool = self._main_pool()
        try:
            conn = pool.getconn(timeout=wait)
        except psycopg.Error as exc:
            raise self._translate(exc, pool) from exc
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        finally:
            self._put_back(pool, conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction, committed when the block ends."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def _run(
        self, query: str, args: Sequence[object], wait: float | None, fetch: bool
    ) -> tuple[Any, ...] | None:
        pool = self._main_pool()
        try:
            conn = pool.getconn(timeout=wait)
            try:
                cur = conn.kept
                if cur is None:
                    cur = conn.kept = conn.cursor()
                cur.execute(query, args)
                return cur.fetchone() if fetch else None
            finally:
                self._put_back(pool, conn)
        except psycopg.Error as exc:
            raise self._translate(exc, pool) from exc

    def fetchone(
        self, query: str, args: Sequence[object] = (), *, wait: float | None = None
    ) -> tuple[Any, ...] | None:
        """The first row of one statement (its own transaction) on a pooled connection, as
        :meth:`connection` would run it, with less Python per query."""
        return self._run(query, args, wait, True)

    def execute(
        self, query: str, args: Sequence[object] = (), *, wait: float | None = None
    ) -> None:
        """Run one statement (its own transaction) on a pooled connection (see fetchone)."""
        self._run(query, args, wait, False)

    # --- advisory locks --------------------------------------------------------------------
    @contextlib.contextmanager
    def advisory(self, keys: Iterable[tuple[int, int]], *, wait: float) -> Iterator[None]:
        """Hold transaction-scoped advisory locks on *keys*, taken in sorted order.

        Each thread holds its locks in one transaction on one connection of the lock pool;
        a lock taken while that thread already holds others joins the same transaction and
        is released with the outermost (locks are taken names first, so holding an inner
        lock a little longer never inverts the order). A lost connection releases them all
        on the server; the work done meanwhile is guarded by the database's own
        constraints (unique serials, increasing CRL numbers, a CRL installed only over the
        version in effect when the crl lock was taken: PgStore), so that is logged.
        """
        wanted = sorted(set(keys))
        held: set[tuple[int, int]] | None = getattr(self._local, "held", None)
        if held is not None:
            self._take(self._local.conn, [k for k in wanted if k not in held], wait, nested=True)
            held.update(wanted)
            yield
            return
        _, locks = self._pools()
        try:
            conn = locks.getconn()
        except psycopg.Error as exc:
            raise self._translate(exc, locks) from exc
        try:
            self._take(conn, wanted, wait, nested=False)
            self._local.held, self._local.conn = set(wanted), conn
            try:
                yield
            finally:
                self._local.held = self._local.conn = None
                try:
                    conn.execute("ROLLBACK")  # ends the transaction: every lock is released
                except psycopg.Error as exc:
                    log.warning("lost the database session holding locks: %s", _first_line(exc))
        finally:
            self._put_back(locks, conn)

    def _take(
        self,
        conn: psycopg.Connection[Any],
        keys: list[tuple[int, int]],
        wait: float,
        *,
        nested: bool,
    ) -> None:
        if not keys and nested:
            return
        with self.errors():
            # BEGIN even for no keys: a lock taken inside (nested) joins this transaction.
            # The opening, the lock timeout and the locks (one statement for all of them, in
            # the sorted order of the arrays) as one simple query: one round trip. The keys
            # are our own integers (lock_key), written as literals.
            sql = [
                "SAVEPOINT take" if nested else "BEGIN",
                f"SET LOCAL lock_timeout = '{max(1, int(wait * 1000))}ms'",
            ]
            if keys:
                sql.append(
                    "SELECT count(pg_advisory_xact_lock(k1, k2)) FROM"
                    f" unnest('{{{','.join(str(int(k[0])) for k in keys)}}}'::int4[],"
                    f" '{{{','.join(str(int(k[1])) for k in keys)}}}'::int4[])"
                    " WITH ORDINALITY AS t(k1, k2, i)"
                )
            if nested:
                sql.append("RELEASE SAVEPOINT take")
            try:
                conn.execute("; ".join(sql).encode(), prepare=False)  # text unique per name
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK TO SAVEPOINT take" if nested else "ROLLBACK")
                raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
