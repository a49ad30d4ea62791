"""The `splitca` command line: the group and every command module that plugs into it."""

from __future__ import annotations

from ._base import cli, main

__all__ = ["cli", "main"]
