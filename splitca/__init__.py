"""splitca: a Puppet-compatible certificate authority and split-CA toolkit."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .authority import CertificateAuthority
    from .config import Settings
    from .errors import SplitCAError

__all__ = ["CertificateAuthority", "Settings", "SplitCAError", "__version__"]
__version__ = "0.1.0"

_LAZY = {"CertificateAuthority": "authority", "Settings": "config", "SplitCAError": "errors"}


def __getattr__(name: str) -> Any:
    # Lazy, so that `import splitca.cli` does not load the whole CA (and its crypto) up front.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'splitca' has no attribute {name!r}")
