"""splitca: a Puppet-compatible certificate authority and split-CA toolkit."""

from __future__ import annotations

from .authority import CertificateAuthority
from .config import Settings
from .errors import SplitCAError

__all__ = ["CertificateAuthority", "Settings", "SplitCAError", "__version__"]
__version__ = "0.1.0"
