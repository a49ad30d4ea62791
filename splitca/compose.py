"""The composition root: the one place that names concrete strategies and wires the CA and its app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitca.core.autosign import Autosigner, Deferred, Strategies, make_autosigner
from splitca.core.usecases.importca import ImportInput
from splitca.enrollment.autosign import RegistryAutosigner, make_registry_autosigner
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.registry import Registry

from .authority import CertificateAuthority, SetupResult
from .config import Settings

__all__ = [
    "AUTOSIGN_STRATEGIES",
    "build_autosigner",
    "import_ca",
    "open_ca",
    "open_registry",
    "setup_ca",
]


def open_registry(settings: Settings) -> Registry:
    """The backend named by the ``registry`` setting (remote ones are imported lazily)."""
    location = settings.effective_registry
    timeout = settings.registry_timeout.total_seconds()
    if location.startswith(("http://", "https://")):
        from splitca.enrollment.backends.http import HttpRegistry

        return HttpRegistry(
            location,
            timeout=timeout,
            negative_ttl=settings.registry_negative_ttl.total_seconds(),
            ca_file=settings.registry_ca_file,
        )
    if location.startswith("s3://"):
        from splitca.enrollment.backends.s3 import S3Registry

        return S3Registry(
            location,
            timeout=timeout,
            endpoint_url=settings.registry_s3_endpoint or None,
            region=settings.registry_s3_region or None,
        )
    return DirectoryRegistry(Path(location))


def _registry_autosigner(*, settings: Settings, **_: object) -> RegistryAutosigner:
    return make_registry_autosigner(
        settings=settings, registry_factory=lambda: open_registry(settings)
    )


# `autosign: <name>` strategies; paths and true/false are policy's own (allowlist, executable).
AUTOSIGN_STRATEGIES: Strategies = {"registry": _registry_autosigner}


def build_autosigner(settings: Settings) -> Autosigner:
    """The autosigner for ``settings.autosign``; ConfigError for a value it cannot honour."""
    return make_autosigner(
        settings.autosign,
        timeout=settings.autosign_timeout.total_seconds(),
        strategies=AUTOSIGN_STRATEGIES,
        settings=settings,
    )


def open_ca(
    settings: Settings, *, autosign_at_start: bool = True, **kwargs: Any
) -> CertificateAuthority:
    """Open the CA for an edge (server, WSGI app, CLI) with its autosigner built here.

    Edges that take CSRs build it at start, so a bad ``autosign`` fails before the first
    request (``autosign_at_start``); the CLI, which never autosigns, defers it so an
    unused setting neither warns nor fails its commands. The core never imports the
    enrollment adapters (registry backends pull in requests or boto3): they are named here.
    """
    if "autosigner" not in kwargs:
        kwargs["autosigner"] = (
            build_autosigner(settings)
            if autosign_at_start
            else Deferred(lambda: build_autosigner(settings))
        )
    return CertificateAuthority.open(settings, **kwargs)


def setup_ca(settings: Settings, **kwargs: Any) -> SetupResult:
    """Create the CA named by ``settings`` (see :func:`splitca.core.usecases.setup.setup`)."""
    return CertificateAuthority.setup(settings, **kwargs)


def import_ca(settings: Settings, given: ImportInput, **kwargs: Any) -> SetupResult:
    """Import an external CA into the empty cadir of ``settings`` (see usecases.importca)."""
    return CertificateAuthority.import_ca(settings, given, **kwargs)
