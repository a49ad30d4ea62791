"""HTTP edge of enrollment: the admin registration endpoints under /puppet-ca/v1/splitca/registrations."""

from __future__ import annotations

import functools
import json
from typing import Any

from splitca.clock import utcnow
from splitca.compose import open_registry
from splitca.config import Settings, parse_duration
from splitca.enrollment import enroll as enrollment
from splitca.enrollment.registry import Classification, Registry
from splitca.errors import ConfigError, InvalidRequest
from splitca.http.app import ADMIN, NAME, App, Request, Response, Route, route

__all__ = ["ROUTES"]

BASE = "/splitca/registrations"
_COMMON = {"classes", "parameters", "environment", "ttl"}
_USER_DATA_KEYS = {"server", "server_port", "ca_server", "ca_port", "install", "run_agent"}


@functools.lru_cache(maxsize=8)
def _registry(settings: Settings) -> Registry:
    return open_registry(settings)


def _body(req: Request, allowed: set[str]) -> dict[str, Any]:
    raw = req.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("Request body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise InvalidRequest(f"Unknown key(s) {', '.join(unknown)}; allowed: {sorted(allowed)}.")
    return body


def _user_data(app: App, certname: str, token: str, options: object) -> str:
    """cloud-init user-data for a POSTed registration, as ``splitca enroll`` prints it."""
    if options is True:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequest("user_data: expected true or an object")
    unknown = sorted(str(k) for k in options if k not in _USER_DATA_KEYS)
    if unknown:
        raise InvalidRequest(f"user_data: unknown key(s) {', '.join(unknown)}")
    s = app.settings
    run_agent = options.get("run_agent", True)
    if not isinstance(run_agent, bool):
        raise InvalidRequest("user_data.run_agent: expected true or false")
    return enrollment.render_user_data(
        enrollment.cloud_config(
            certname=certname,
            token=token,
            ca_cert_pem=app.ca.ca_certificate_pem().decode("ascii"),
            server=options.get("server", s.certname),
            server_port=options.get("server_port", 8140),
            ca_server=options.get("ca_server", s.certname),
            ca_port=options.get("ca_port", s.port),
            install=options.get("install", "packages"),
            run_agent=run_agent,
            crl_refresh_seconds=enrollment.agent_crl_refresh_seconds(
                s.crl_ttl, s.effective_crl_refresh_margin
            ),
        )
    )


def _register(
    app: App, req: Request, certname: str, body: dict[str, Any], user_data: object = None
) -> Response:
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
    answer: dict[str, object] = {**record.public(record.created), "token": token}
    if user_data is not None and user_data is not False:
        answer["user_data"] = _user_data(app, certname, token, user_data)
    resp = Response.json(answer, 201)
    resp.headers.append(("Cache-Control", "no-store"))  # the one place the token is ever sent
    return resp


def registrations(app: App, req: Request, p: dict[str, str]) -> Response:
    """GET: every registration (no tokens). POST: enroll a fresh UUID certname, optionally
    answering with its cloud-init user-data (``"user_data": {"server": ...}``)."""
    if req.method == "POST":
        body = _body(req, _COMMON | {"prefix", "domain", "user_data"})
        prefix, domain = body.pop("prefix", ""), body.pop("domain", "")
        if not isinstance(prefix, str) or not isinstance(domain, str):
            raise InvalidRequest("prefix and domain must be strings")
        user_data = body.pop("user_data", None)
        if user_data is not None:
            _user_data(app, "check.invalid", "0" * 64, user_data)  # refuse bad options first
        name = enrollment.new_certname(prefix=prefix, domain=domain)
        return _register(app, req, name, body, user_data)
    now = utcnow()
    return Response.json([r.public(now) for r in _registry(app.settings).records()])


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
    return Response.json(record.public(utcnow()))


ROUTES: tuple[Route, ...] = (
    route("GET POST", rf"{BASE}/?", ADMIN, registrations),
    route("GET PUT DELETE", rf"{BASE}/{NAME}", ADMIN, registration),
)
