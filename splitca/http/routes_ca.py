"""Puppet's CA HTTP API routes (v1 and legacy paths), assembled by ``wsgiapp.make_app``."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

from splitca import pki
from splitca.config import MAX_TTL
from splitca.core.ports import Row
from splitca.errors import (
    Conflict,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    PolicyViolation,
    SplitCAError,
    UnsupportedMediaType,
)
from splitca.http.app import (
    ADMIN,
    AUTHENTICATED,
    JSON,
    NAME,
    OWNER,
    PUBLIC,
    TEXT,
    App,
    Request,
    Response,
    Route,
    answer,
    error_response,
    printable,
    route,
)

__all__ = ["ROUTES", "App", "Request", "Response", "error_response"]

log = logging.getLogger(__name__)

# --- conditional GETs ----------------------------------------------------------------------


def _not_modified(req: Request, mtime: float | None) -> bool:
    """304 only if the file was last changed in a second before If-Modified-Since."""
    header = req.header("If-Modified-Since")
    if not header or mtime is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False  # malformed: ignored, full answer (as puppetserver)
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    # The header has one-second resolution. puppetserver answers 304 when the file is not
    # after it, so a file changed later in that same second (a CRL re-issued just after an
    # agent's fetch) would be "unmodified" for that agent forever. Only a file from an
    # earlier second is certainly unchanged.
    return int(mtime) < since.timestamp()


@functools.lru_cache(maxsize=256)  # the CA certificate's, the CRL's and recent agents'
def _last_modified(mtime: float) -> str:
    """A file's Last-Modified (RFC 9110 IMF-fixdate), formatted once per modification time."""
    return email.utils.formatdate(mtime, usegmt=True)


def _file_response(req: Request, data: bytes, mtime: float | None) -> Response:
    if _not_modified(req, mtime):
        return Response(304, b"", TEXT)
    resp = Response(200, data, TEXT)
    if mtime is not None:
        resp.headers.append(("Last-Modified", _last_modified(mtime)))
    return resp


# --- v1 handlers ----------------------------------------------------------------------------


def get_certificate(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    found = app.ca.ca_certificate_file() if name == "ca" else app.ca.certificate_file(name)
    if found is None:
        return Response.text(f"Could not find certificate {name}", 404)
    return _file_response(req, found.data, found.modified)


def get_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    data = app.ca.csr_pem(p["name"])
    if data is None:
        return Response.text(f"Could not find certificate_request {p['name']}", 404)
    return Response(200, data, TEXT)


def put_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    app.ca.submit_csr(p["name"], req.body(), actor=req.client.actor)
    if "_legacy" in p:
        # Puppet 2.6 parses the PUT answer by its Content-Type; an empty YAML document
        # satisfies 2.6, 2.7 and 3.x alike (puppet-ca-api.md section 5.2).
        return Response(200, b"--- \n", "text/yaml")
    return Response(200, b"", TEXT)


def _csr_refused(app: App, req: Request, p: dict[str, str], exc: SplitCAError) -> Response:
    """400 with the reason in the body and in the reason phrase (what a Puppet 7 agent logs)."""
    if not isinstance(exc, PolicyViolation):
        return error_response(exc)
    resp = Response.text(str(exc), 400)
    phrase = printable(f"Bad Request: CSR refused ({exc.kind}): {exc}")
    resp.reason = phrase if len(phrase) <= 250 else phrase[:247] + "..."
    return resp


def delete_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    # puppetserver's handler words a body ("Deleted certificate request for X at PATH"),
    # but a 204 has none (see App.__call__). The audit log records the deletion.
    app.ca.delete_csr(p["name"], actor=req.client.actor)
    return Response(204, b"", None)


def _csr_path(app: App, name: str) -> str | None:
    return app.ca.csr_location(name) if pki.is_safe_name(name) else None


def _no_csr(app: App, req: Request, p: dict[str, str], exc: SplitCAError) -> Response:
    name = p["name"]
    return Response.text(
        f"No certificate request for {name} at expected path {_csr_path(app, name)}", 404
    )


# sync-crl's User-Agent (splitca.split.crlsync); Puppet agents fetch the CRL too, but only
# compile masters' syncs are recorded (``splitca masters``).
_SYNC_CRL_AGENT = "splitca-sync-crl"


def get_crl(app: App, req: Request, p: dict[str, str]) -> Response:
    found = app.ca.crl_file()
    resp = _file_response(req, found.data, found.modified)
    synced = (req.header("User-Agent") or "").startswith(_SYNC_CRL_AGENT)
    if synced and req.client.certname and app.client_in_good_standing(req) is not None:
        app.ca.record_crl_fetch(req.client.certname, found.data)  # best effort, never raises
    return resp


_STATUS_TYPES = ("application/json", "text/pson", "pson")


def _status_media_type(req: Request) -> str:
    accept = req.header("Accept")
    if not accept:
        return JSON
    for part in accept.split(","):
        mt = part.split(";")[0].strip().lower()
        if mt in ("*/*", "application/*", "application/json"):
            return JSON
        if mt in ("text/pson", "pson"):
            return mt
    raise NotAcceptable("No acceptable resource available.")


def _check_content_type(req: Request) -> None:
    ct = req.header("Content-Type")
    if ct is None:
        return
    mt = ct.split(";")[0].strip().lower()
    if mt not in _STATUS_TYPES:
        raise UnsupportedMediaType("Unsupported media type.")


def get_certificate_status(app: App, req: Request, p: dict[str, str]) -> Response:
    media = _status_media_type(req)
    row = app.ca.status(p["name"])
    if row is None:
        return Response.text("Resource not found.", 404)
    return Response(200, _status_json(row).encode(), media)


def delete_certificate_status(app: App, req: Request, p: dict[str, str]) -> Response:
    app.ca.delete(p["name"], actor=req.client.actor)  # NotFound: see ROUTES
    return Response(204, b"", TEXT)


_STATUS_CTYPE = "text/plain; charset=UTF-8"  # certificate_status's own text answers


def put_certificate_status(app: App, req: Request, p: dict[str, str]) -> Response:
    """Sign or revoke; liberator's decision order (puppet-ca-api.md section 3.7)."""
    name = p["name"]
    body = req.json_body()
    if not isinstance(body, dict) or "desired_state" not in body:
        raise InvalidRequest('Missing required parameter "desired_state"')
    state = body["desired_state"]
    if state not in ("signed", "revoked"):
        raise InvalidRequest(
            f"State {state} invalid; Must specify desired state of 'signed' or 'revoked' for host {name}."
        )
    ttl = body.get("cert_ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise InvalidRequest(f'cert_ttl specified for host {name} must be an integer, not "{ttl}"')
    if ttl is not None and ttl > MAX_TTL.total_seconds():
        raise InvalidRequest(
            f"cert_ttl specified for host {name} must be at most {int(MAX_TTL.total_seconds())} (50 years)"
        )
    _check_content_type(req)
    if app.ca.status(name) is None and not (
        state == "revoked" and pki.is_safe_name(name) and app.ca.serials_for(name)
    ):
        return Response.text("Invalid certificate subject.", 404, _STATUS_CTYPE)
    if state == "signed":  # PolicyViolation, Conflict: 409, see ROUTES
        app.ca.sign(name, ttl=dt.timedelta(seconds=ttl) if ttl else None, actor=req.client.actor)
        return Response(204, b"", TEXT)
    found, _ = app.ca.revoke([name], actor=req.client.actor)
    if not found:
        return Response.text(
            f"Cannot revoke certificate for host {name} without a signed certificate",
            409,
            _STATUS_CTYPE,
        )
    return Response(204, b"", TEXT)


def _no_csr_to_sign(app: App, req: Request, p: dict[str, str], exc: SplitCAError) -> Response:
    """puppetserver's 409 for signing a name with no CSR (the core's message says more)."""
    return Response.text(
        f"Cannot sign certificate for host {p['name']} without a certificate request",
        409,
        _STATUS_CTYPE,
    )


def certificate_statuses_missing(app: App, req: Request, p: dict[str, str]) -> Response:
    return Response.text("Missing URL Segment", 400, "text/plain; charset=utf-8")


def certificate_statuses(app: App, req: Request, p: dict[str, str]) -> Response:
    media = _status_media_type(req)
    state = (req.query.get("state") or [None])[0]
    if state not in ("requested", "signed", "revoked"):
        state = None
    # Streamed: at 100k certificates the array is ~100 MB, which never sits in memory.
    pieces = app.ca.statuses_json(state)
    first = next(pieces)  # the index is read (and any error raised) before the 200 goes out
    return Response(200, b"", media, stream=_encoded(first, pieces))


def _encoded(first: str, rest: Iterator[str]) -> Iterator[bytes]:
    yield first.encode()
    for piece in rest:
        yield piece.encode()


def _status_json(row: Row) -> str:
    """certificate_status JSON, plus ``pending_reason`` (why not signed) for a pending CSR."""
    return pki.with_pending_reason(row.json(), row.reason if row.state == "requested" else "")


def _json_array(items: Iterator[str]) -> bytes:
    return ("[" + ",".join(items) + "]").encode()


def expirations(app: App, req: Request, p: dict[str, str]) -> Response:
    return Response.json(app.ca.expirations())


def clean(app: App, req: Request, p: dict[str, str]) -> Response:
    body = req.json_body()
    if not isinstance(body, dict) or "certnames" not in body:
        raise InvalidRequest(
            "Missing required key: 'certnames'. Please supply the list of certs you want to clean."
        )
    names = body["certnames"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidRequest("'certnames' must be a list of certnames.")
    if body.get("async"):
        raise InvalidRequest("Async mode is not currently supported.")
    _, missing = app.ca.clean(names, actor=req.client.actor)
    if missing:
        return Response.text(
            f"The following certs do not exist and cannot be revoked: {json.dumps(missing)}"
        )
    return Response.text("Successfully cleaned all certs.")


def _bulk_response(result: Any) -> Response:
    return Response.json(
        {"signed": result.signed, "no-csr": result.no_csr, "signing-errors": result.signing_errors}
    )


def sign(app: App, req: Request, p: dict[str, str]) -> Response:
    body = req.json_body()  # InvalidRequest: 422 schema-violation, see ROUTES
    names = body.get("certnames") if isinstance(body, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return Response.json(
            {
                "kind": "schema-violation",
                "submitted": body,
                "error": "certnames must be a list of strings",
            },
            422,
        )
    return _bulk_response(app.ca.sign_many(names, actor=req.client.actor))


def sign_all(app: App, req: Request, p: dict[str, str]) -> Response:
    req.body()  # drained and ignored, as puppetserver
    return _bulk_response(app.ca.sign_all(actor=req.client.actor))


def certificate_renewal(app: App, req: Request, p: dict[str, str]) -> Response:
    if not app.settings.allow_auto_renewal:
        return Response.text("Not Found", 404)
    cert = app.client_in_good_standing(req)
    if cert is None:
        return Response.text("No valid certificate found in renewal request", 400)
    new = app.ca.renew(cert, actor=req.client.actor)  # InvalidRequest: 403, see ROUTES
    return Response(200, pki.pem(new), TEXT)


def _schema_violation(app: App, req: Request, p: dict[str, str], exc: SplitCAError) -> Response:
    return Response.json({"kind": "schema-violation", "submitted": None, "error": str(exc)}, 422)


# --- the route table -------------------------------------------------------------------------

# Puppet's CA API and the status service, in match order (first match wins). ``errors``
# are a route's own answers where Puppet's wire differs from the one map (httpapp._STATUS).
ROUTES: tuple[Route, ...] = (
    route("GET", rf"/certificate/{NAME}", PUBLIC, get_certificate),
    route("GET", rf"/certificate_request/{NAME}", PUBLIC, get_certificate_request),
    route(
        "PUT",
        rf"/certificate_request/{NAME}",
        PUBLIC,
        put_certificate_request,
        errors=[(PolicyViolation, _csr_refused)],
    ),
    route(
        "DELETE",
        rf"/certificate_request/{NAME}",
        ADMIN,
        delete_certificate_request,
        errors=[(NotFound, _no_csr)],
    ),
    route("GET", r"/certificate_revocation_list/[^/]*", PUBLIC, get_crl),
    route("GET", rf"/certificate_status/{NAME}", ADMIN, get_certificate_status),
    route(
        "PUT",
        rf"/certificate_status/{NAME}",
        ADMIN,
        put_certificate_status,
        errors=[
            (Conflict, _no_csr_to_sign),
            (PolicyViolation, answer(409, None, _STATUS_CTYPE)),
            (NotFound, answer(404, "Invalid certificate subject.", _STATUS_CTYPE)),
        ],
    ),
    route(
        "DELETE",
        rf"/certificate_status/{NAME}",
        ADMIN,
        delete_certificate_status,
        errors=[(NotFound, answer(404, "Invalid certificate subject.", _STATUS_CTYPE))],
    ),
    route("GET", r"/certificate_statuses/?", ADMIN, certificate_statuses_missing),
    route("GET", r"/certificate_statuses/[^/]+", ADMIN, certificate_statuses),
    route("GET", r"/expirations", AUTHENTICATED, expirations),
    route("PUT", r"/clean", ADMIN, clean),
    route("POST", r"/sign", ADMIN, sign, errors=[(InvalidRequest, _schema_violation)]),
    route("POST", r"/sign/all", ADMIN, sign_all),
    route(
        "POST",
        r"/certificate_renewal",
        OWNER,
        certificate_renewal,
        errors=[(InvalidRequest, answer(403))],
    ),
)
