"""The composition root: builds a CertificateAuthority with every optional strategy plugged in."""

from __future__ import annotations

from typing import Any

from . import autosign_registry  # noqa: F401 - registers `autosign: registry` with policy
from .authority import CertificateAuthority
from .config import Settings

__all__ = ["open_ca"]


def open_ca(settings: Settings, **kwargs: Any) -> CertificateAuthority:
    """Open the CA for an edge (server, WSGI app, CLI), with all autosign strategies available.

    The core never imports the enrollment adapters (registry backends pull in requests or
    boto3); edges come through here instead.
    """
    return CertificateAuthority.open(settings, **kwargs)
