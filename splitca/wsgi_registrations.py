"""HTTP edge of enrollment: the admin registration endpoints under /puppet-ca/v1/splitca/registrations."""

from __future__ import annotations

import functools
import json
from typing import Any

from . import enrollment
from .config import Settings, parse_duration
from .errors import ConfigError, InvalidRequest
from .registry import Classification, Registry, open_registry
from .wsgi import ADMIN, NAME, App, Request, Response, route

__all__: list[str] = []

BASE = "/splitca/registrations"
_COMMON = {"classes", "parameters", "environment", "ttl"}


@functools.lru_cache(maxsize=8)
def _registry(settings: Settings) -> Registry:
    return open_registry(settings)


def _body(req: Request, allowed: set[str]) -> dict[str, Any]:
    raw = req.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Request body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise InvalidRequest(f"Unknown key(s) {', '.join(unknown)}; allowed: {sorted(allowed)}.")
    return body


def _register(app: App, req: Request, certname: str, body: dict[str, Any]) -> Response:
    try:
        ttl = (
            parse_duration(body["ttl"], key="ttl")
            if body.get("ttl") is not None
            else app.settings.registry_ttl
        )
    except ConfigError as exc:
        raise InvalidRequest(str(exc)) from None
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidRequest("replace: expected true or false")
    classification = Classification.build(
        body.get("classes", []), body.get("parameters", {}), body.get("environment", "")
    )
    record, token = enrollment.register(
        _registry(app.settings),
        certname,
        classification,
        ttl=ttl,
        replace=replace,
        audit=app.ca.audit,
        actor=req.client.actor,
    )
    resp = Response.json({**record.public(record.created), "token": token}, 201)
    resp.headers.append(("Cache-Control", "no-store"))  # the one place the token is ever sent
    return resp


@route("GET POST", rf"{BASE}/?", ADMIN)
def registrations(app: App, req: Request, p: dict[str, str]) -> Response:
    """GET: every registration (no tokens). POST: enroll a fresh UUID certname."""
    if req.method == "POST":
        body = _body(req, _COMMON | {"prefix", "domain"})
        prefix, domain = body.pop("prefix", ""), body.pop("domain", "")
        if not isinstance(prefix, str) or not isinstance(domain, str):
            raise InvalidRequest("prefix and domain must be strings")
        name = enrollment.new_certname(prefix=prefix, domain=domain)
        return _register(app, req, name, body)
    now = enrollment.utcnow()
    return Response.json([r.public(now) for r in _registry(app.settings).records()])


@route("GET PUT DELETE", rf"{BASE}/{NAME}", ADMIN)
def registration(app: App, req: Request, p: dict[str, str]) -> Response:
    """One registration: read it, create (or replace) it, delete it."""
    name = p["name"]
    registry = _registry(app.settings)
    if req.method == "PUT":
        return _register(app, req, name, _body(req, _COMMON | {"replace"}))
    if req.method == "DELETE":
        enrollment.unregister(registry, name, audit=app.ca.audit, actor=req.client.actor)
        return Response(204, b"", None)
    record = registry.get(name)
    if record is None:
        return Response.text(f"{name} is not registered", 404)
    return Response.json(record.public(enrollment.utcnow()))
