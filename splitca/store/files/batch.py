"""Group commit: threads hand their items to one leader, which writes them all with one fsync."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Ticket(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Run ``commit(items) -> results`` for items submitted by many threads, in batches.

    The first thread to arrive becomes the leader and commits everything queued so
    far (at most *max_batch* items) in one call, while later arrivals queue for the
    next batch; when the leader finishes, a waiting thread leads the next one. With
    one thread this is a plain call; under load one commit (one lock round, one
    fsync) serves many threads. If ``commit`` raises, every item of that batch gets
    the exception.
    """

    def __init__(self, commit: Callable[[list[T]], Sequence[R]], *, max_batch: int = 64) -> None:
        self._commit = commit
        self._max = max_batch
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Ticket[T, R]] = []
        self._leading = False

    def submit(self, item: T) -> R:
        ticket: _Ticket[T, R] = _Ticket(item)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._leading:
                self._cond.wait()
            if ticket.done:
                return self._outcome(ticket)
            self._leading = True
            if len(self._queue) <= self._max:
                batch, self._queue = self._queue, []
            else:  # a full batch that includes the leader's own item
                rest = [t for t in self._queue if t is not ticket]
                batch, self._queue = [*rest[: self._max - 1], ticket], rest[self._max - 1 :]
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
            with self._cond:
                for t in batch:
                    t.done = True
                self._leading = False
                self._cond.notify_all()
        return self._outcome(ticket)

    @staticmethod
    def _outcome(ticket: _Ticket[T, R]) -> R:
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]
