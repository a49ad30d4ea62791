"""The Prometheus endpoint ``GET /metrics``, for any client with a certificate this CA issued."""

from __future__ import annotations

from splitca.http.app import AUTHENTICATED, App, Request, Response, Route, route

__all__ = ["ROUTES"]


def get_metrics(app: App, req: Request, p: dict[str, str]) -> Response:
    data, content_type = app.metrics.render()
    return Response(200, data, content_type)


# Prometheus scrapes over TLS with a client certificate from this CA (``splitca generate
# prometheus.example.com``), like any agent: the numbers name every compile master.
ROUTES: tuple[Route, ...] = (route("GET", r"/metrics", AUTHENTICATED, get_metrics, prefix=""),)
