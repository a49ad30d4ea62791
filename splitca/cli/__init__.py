"""The `splitca` command line: the group and every command module that plugs into it."""

from __future__ import annotations

from . import ca as _ca  # noqa: F401 - registers the CA commands
from . import enroll as _enroll  # noqa: F401 - registers the enrollment commands
from . import split as _split  # noqa: F401 - registers apache-config and sync-crl
from ._base import cli, main

__all__ = ["cli", "main"]
