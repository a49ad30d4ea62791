"""The app assembled from every area's route table, and the lazily built mod_wsgi application."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from splitca.authority import CertificateAuthority
from splitca.compose import build_autosigner, open_ca
from splitca.config import Settings
from splitca.core.autosign import Autosigner, Deferred
from splitca.errors import ConfigError, SplitCAError
from splitca.http import routes_metrics as _metrics
from splitca.http import routes_registrations as _registrations
from splitca.http import routes_status as _status
from splitca.http.app import (
    TEXT,
    App,
    Environ,
    Route,
    StartResponse,
)
from splitca.http.routes_ca import ROUTES, log

# --- factories -------------------------------------------------------------------------------


def default_routes() -> tuple[Route, ...]:
    """Every area's routes: Puppet's API and status service, splitca's registrations, metrics."""
    return (*ROUTES, *_status.ROUTES, *_registrations.ROUTES, *_metrics.ROUTES)


def make_app(
    settings: Settings | None = None,
    *,
    ca: CertificateAuthority | None = None,
    routes: Sequence[Route] | None = None,
) -> App:
    """Build the app over an existing CA (``splitca setup`` first), or over *ca*.

    The route table is assembled here, when the app is made: *routes*, or every area's.
    """
    if ca is None:
        if settings is None:
            raise TypeError("make_app needs settings or a ca")
        ca = open_ca(settings)
    return App(ca, default_routes() if routes is None else routes)


def _open_for_wsgi(settings: Settings) -> CertificateAuthority:
    """The CA under mod_wsgi, where a bad ``autosign`` must not take the whole API down:
    it is logged once and CSR submissions answer 503 (the CA certificate, the CRL and
    statuses keep being served), as with ``serve``'s refusal to start but without one."""
    try:
        autosigner: Autosigner = build_autosigner(settings)
    except ConfigError as exc:
        log.error("%s; certificate requests are answered 503 until it is fixed", exc)
        autosigner = Deferred(lambda: build_autosigner(settings))
    return open_ca(settings, autosigner=autosigner)


_lazy_lock = threading.Lock()
_lazy_app: App | None = None


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Entry point for Apache mod_wsgi (``WSGIScriptAlias``) and other WSGI servers.

    The config path comes from ``SPLITCA_CONFIG`` (Apache ``SetEnv`` or the process
    environment). The app is built on the first request.
    """
    global _lazy_app
    if _lazy_app is None:
        with _lazy_lock:
            if _lazy_app is None:
                path = environ.get("SPLITCA_CONFIG") or os.environ.get("SPLITCA_CONFIG")
                try:
                    settings = Settings.load(Path(path) if path else None)
                    _lazy_app = make_app(ca=_open_for_wsgi(settings))
                except SplitCAError as exc:
                    log.error("splitca cannot start: %s", exc)
                    start_response("503 Service Unavailable", [("Content-Type", TEXT)])
                    return [f"splitca is not configured: {exc}\n".encode()]
    return _lazy_app(environ, start_response)
