"""puppetserver's status service: the simple endpoints load balancers check (``/status/v1``)."""

from __future__ import annotations

import logging

from splitca.http.app import (
    NAME,
    PUBLIC,
    STATUS_V1,
    App,
    Request,
    Response,
    Route,
    printable,
    route,
)

__all__ = ["ROUTES"]

log = logging.getLogger(__name__)

# What `/status/v1/simple/<service>` knows. puppetserver also lists its compiler's services;
# splitca is only a CA, so a tool asking for those learns that they are not here.
_STATUS_SERVICES = ("ca", "status-service")
_STATUS_TYPE = "text/plain; charset=utf-8"


# The last readiness each process reported, so a failing check is logged once, not per probe.
_last_ready: list[bool] = [True]


def _readiness(app: App) -> Response:
    """puppetserver's answer: ``running`` (200) when the CA can serve, else ``error`` (503)."""
    h = app.ca.health()
    app.metrics.observe_ping(h.store_seconds)
    if h.ok != _last_ready[0]:
        _last_ready[0] = h.ok
        if h.ok:
            log.info("health: the CA can serve again")
        else:
            log.error("health: the CA cannot serve (answering 'error'): %s", h.problem)
    if h.ok:
        return Response.text("running", 200, _STATUS_TYPE)
    return Response.text("error", 503, _STATUS_TYPE)


def status_simple(app: App, req: Request, p: dict[str, str]) -> Response:
    return _readiness(app)


def status_simple_service(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    if name not in _STATUS_SERVICES:
        return Response.text(f"not found: {printable(name)}", 404, _STATUS_TYPE)
    if name == "ca":
        return _readiness(app)
    return Response.text("running", 200, _STATUS_TYPE)


ROUTES: tuple[Route, ...] = (
    route("GET", r"/simple/?", PUBLIC, status_simple, prefix=STATUS_V1),
    route("GET", rf"/simple/{NAME}", PUBLIC, status_simple_service, prefix=STATUS_V1),
)
