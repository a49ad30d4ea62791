"""Group commit: threads hand their items to one leader, which writes them all with one fsync."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Ticket(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held until this ticket's thread must act
        self.wake.acquire()


class GroupCommit(Generic[T, R]):
    """Run ``commit(items) -> results`` for items submitted by many threads, in batches.

    The first thread to arrive becomes the leader and commits everything queued so
    far (at most *max_batch* items) in one call, while later arrivals queue for the
    next batch; when the leader finishes, the oldest waiting thread leads the next one.
    With one thread this is a plain call; under load one commit (one lock round, one
    fsync) serves many threads. If ``commit`` raises, every item of that batch gets
    the exception. Each waiting thread is woken exactly once, when its item is done or
    when it is to lead (no wake-up of every waiter after every batch).
    """

    def __init__(self, commit: Callable[[list[T]], Sequence[R]], *, max_batch: int = 64) -> None:
        self._commit = commit
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Ticket[T, R]] = []  # waiting, oldest first
        self._leading = False

    def submit(self, item: T) -> R:
        ticket: _Ticket[T, R] = _Ticket(item)
        with self._lock:
            self._queue.append(ticket)
            lead = not self._leading
            self._leading = True
        if not lead:
            ticket.wake.acquire()  # released once: done, or our turn to lead
            if ticket.done:
                return self._outcome(ticket)
        with self._lock:  # we lead: our ticket is the oldest waiting, so it is in the batch
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        try:
            try:
                results = list(self._commit([t.item for t in batch]))
                if len(results) != len(batch):
                    raise RuntimeError("group commit returned the wrong number of results")
            except BaseException as exc:
                for t in batch:
                    t.error = exc
            else:
                for t, r in zip(batch, results, strict=True):
                    t.result = r
        finally:
            with self._lock:
                for t in batch:
                    t.done = True
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for t in batch:
                if t is not ticket:
                    t.wake.release()
            if successor is not None:
                successor.wake.release()
        return self._outcome(ticket)

    @staticmethod
    def _outcome(ticket: _Ticket[T, R]) -> R:
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]
