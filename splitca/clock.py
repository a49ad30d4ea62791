"""The one clock: timezone-aware UTC now. Code that needs time takes a ``clock`` defaulting to this."""

from __future__ import annotations

import datetime as dt

__all__ = ["utcnow"]


def utcnow() -> dt.datetime:
    """Now, in UTC, with microseconds (callers that store whole seconds truncate)."""
    return dt.datetime.now(dt.UTC)
