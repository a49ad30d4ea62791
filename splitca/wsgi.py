"""The WSGI app: Puppet's CA HTTP API (v1, legacy paths), authorization, one error-to-status map."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from . import pki
from .audit import Actor
from .authority import CertificateAuthority
from .compose import open_ca
from .config import MAX_TTL, Settings
from .errors import (
    BodyTooLarge,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidRequest,
    LockTimeout,
    NotFound,
    PolicyViolation,
    RemoteError,
    RequestTimeout,
    SplitCAError,
    StoreError,
    UnsupportedMediaType,
)
from .index import Row

__all__ = ["App", "Request", "Response", "application", "make_app"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("splitca.access")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Environ = dict[str, Any]

TEXT = "text/plain"
JSON = "application/json"

# --- requests and responses ------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """Who is calling, from the mod_ssl-style WSGI environ keys (cheroot and Apache fill both)."""

    verified: bool
    certname: str | None
    cert_pem: str | None
    address: str

    _cert: list[x509.Certificate | None] = field(default_factory=list, compare=False, repr=False)

    @property
    def cert(self) -> x509.Certificate | None:
        if not self._cert:
            parsed = None
            if self.cert_pem:
                try:
                    parsed = x509.load_pem_x509_certificate(self.cert_pem.encode())
                except ValueError:
                    parsed = None
            self._cert.append(parsed)
        return self._cert[0]

    @property
    def actor(self) -> Actor:
        return Actor("http", self.certname or "", self.address)


class Request:
    """The non-I/O parts of a request plus a bounded body reader."""

    def __init__(self, environ: Environ, *, max_body: int) -> None:
        self.environ = environ
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        # Mounted anywhere (WSGIScriptAlias /puppet-ca or /): route on the full path.
        self.path: str = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
        self.query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.max_body = max_body
        verified = environ.get("SSL_CLIENT_VERIFY") == "SUCCESS"
        self.client = Client(
            verified=verified,
            certname=environ.get("SSL_CLIENT_S_DN_CN") if verified else None,
            cert_pem=environ.get("SSL_CLIENT_CERT") if verified else None,
            address=str(environ.get("REMOTE_ADDR", "")),
        )

    def header(self, name: str) -> str | None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if name.lower() == "content-type":
            key = "CONTENT_TYPE"
        value = self.environ.get(key)
        return None if value in (None, "") else str(value)

    def body(self) -> bytes:
        """Read the body, at most ``max_body`` bytes; BodyTooLarge past that (HTTP 413)."""
        stream = self.environ.get("wsgi.input")
        if stream is None:
            return b""
        chunked = self.environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        length: int | None = None
        length_header = self.environ.get("CONTENT_LENGTH") or ""
        if length_header and not chunked:  # a chunked body's framing wins (RFC 9112 6.3)
            try:
                length = int(length_header)
            except ValueError:
                raise InvalidRequest("Invalid Content-Length header.") from None
            if length < 0:
                raise InvalidRequest("Invalid Content-Length header.")
            if length > self.max_body:
                raise BodyTooLarge(self.max_body)  # before reading any of it
        elif not (chunked or self.environ.get("wsgi.input_terminated")):
            return b""
        return read_body(stream, length, self.max_body)

    def json_body(self) -> Any:
        raw = self.body()
        if not raw.strip():
            raise InvalidRequest("Empty request body.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("Request body is not JSON.") from None


BODY_PIECE = 65536  # wsgi.input is read in pieces of at most this size


def read_body(stream: Any, length: int | None, limit: int) -> bytes:
    """Read a request body from ``wsgi.input``: *length* bytes, or (None) to its end.

    Bounded while reading: a body without a length stops at ``limit + 1`` bytes
    (BodyTooLarge), whatever its chunks declare. This is also the one place where a
    WSGI server's read errors become client errors: a broken chunked encoding, a
    client that stops sending (timeout) or hangs up are the client's fault (400/408),
    not a crash. The built-in server hands over bodies it already read and checked
    (splitca.server), so there only SplitCAErrors come out of the stream.
    """
    want = limit + 1 if length is None else length
    parts: list[bytes] = []
    got = 0
    try:
        while got < want:
            piece = stream.read(min(BODY_PIECE, want - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
    except SplitCAError:
        raise
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time.") from None
    except ValueError:  # cheroot's chunked reader on a bad chunk size or framing
        raise InvalidRequest("Malformed chunked request body.") from None
    except OSError as exc:  # mod_wsgi: "request data read error" (client gone, timeout, bad chunk)
        if "timed out" in str(exc) or "timeout" in str(exc).lower():
            raise RequestTimeout("The request body did not arrive in time.") from None
        raise InvalidRequest("The request body could not be read.") from None
    if got > limit:
        raise BodyTooLarge(limit)
    if length is not None and got < length:
        raise InvalidRequest("The request body is shorter than its Content-Length.")
    return b"".join(parts)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A large body sent in pieces as it is produced (chunked), instead of ``body``.
    stream: Iterable[bytes] | None = None

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str | None = TEXT) -> Response:
        return cls(status, text.encode("utf-8"), content_type)

    @classmethod
    def json(cls, value: object, status: int = 200, content_type: str = JSON) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), content_type)


# --- the error map: the ONE place where outcomes become HTTP status codes ----------------

_STATUS: tuple[tuple[type[SplitCAError], int], ...] = (
    (BodyTooLarge, 413),
    (RequestTimeout, 408),
    (UnsupportedMediaType, 415),
    (InvalidRequest, 400),
    (PolicyViolation, 400),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (ConfigError, 503),  # the server is misconfigured: not the client's fault, not a crash
    (LockTimeout, 503),
    (StoreError, 503),
    (RemoteError, 502),
)


def error_response(exc: BaseException) -> Response:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            resp = Response.text(str(exc), status)
            if status == 503:
                resp.headers.append(("Retry-After", "10"))
                log.error("%s: %s", type(exc).__name__, exc)
            return resp
    log.exception("unhandled error")
    return Response.text("Internal error; see the CA server's log.", 500)


# --- routing -----------------------------------------------------------------------------

PUBLIC, AUTHENTICATED, ADMIN, OWNER = "public", "authenticated", "admin", "owner"

Handler = Callable[["App", Request, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler
    access: str
    prefix: str  # the API the pattern is relative to: V1 or STATUS_V1


V1 = "/puppet-ca/v1"
# puppetserver's status service; `puppetserver ca` asks it whether the CA is up.
STATUS_V1 = "/status/v1"


def route(
    methods: str, pattern: str, access: str, *, prefix: str = V1
) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(tuple(methods.split()), re.compile(pattern), fn, access, prefix))
        return fn

    return deco


ROUTES: list[Route] = []
NAME = r"(?P<name>[^/]+)"
# Legacy Puppet 2.6-3.x agents: /<environment>/<indirection>/<key>
LEGACY_RE = re.compile(
    r"^/(?P<env>[A-Za-z0-9_]+)/(?P<rest>(?:certificate|certificate_request|certificate_revocation_list"
    r"|certificate_status|certificate_statuses)/.*)$"
)


class App:
    """The CA's WSGI application. One per process; thread-safe."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.settings: Settings = ca.settings
        self.version = self.settings.puppet_version

    # WSGI entry point
    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        req = Request(environ, max_body=self.settings.max_body_bytes)
        try:
            resp = self.dispatch(req)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            resp = error_response(exc)
        headers = [("X-Puppet-Version", self.version)]
        if resp.content_type is not None:
            headers.append(("Content-Type", resp.content_type))
        if resp.stream is None:
            headers.append(("Content-Length", str(len(resp.body))))
        headers.extend(resp.headers)
        reason = HTTPStatus(resp.status).phrase
        start_response(f"{resp.status} {reason}", headers)
        access_log.info(
            '%s %s "%s %s" %d %s %.1fms',
            req.client.address or "-",
            req.client.certname or "-",
            req.method,
            _printable(environ.get("REQUEST_URI") or req.path),
            resp.status,
            "-" if resp.stream is not None else len(resp.body),
            (time.monotonic() - started) * 1000,
        )
        if req.method == "HEAD":
            return [b""]
        return resp.stream if resp.stream is not None else [resp.body]

    def dispatch(self, req: Request) -> Response:
        path = req.path
        legacy = None
        if not path.startswith(V1 + "/") and self.settings.legacy_routes:
            m = LEGACY_RE.match(path)
            if m:
                legacy = m.group("env")
                path = f"{V1}/{m.group('rest')}"
        allowed: list[str] = []
        for r in ROUTES:
            # Every pattern starts with "/", so "/puppet-ca/v1x/..." matches nothing.
            m = r.pattern.fullmatch(path[len(r.prefix) :]) if path.startswith(r.prefix) else None
            if not m:
                continue
            if req.method not in r.methods and not (req.method == "HEAD" and "GET" in r.methods):
                allowed.extend(r.methods)
                continue
            params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            self.authorize(req, r.access, params)
            if legacy is not None:
                params["_legacy"] = legacy
            return r.handler(self, req, params)
        if allowed:
            resp = Response.text(f"Method {req.method} is not allowed on {req.path}", 405)
            resp.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
            return resp
        return Response.text("Not Found", 404)

    # --- authorization ------------------------------------------------------------------------
    def _forbid(self, req: Request, why: str) -> Forbidden:
        uri = req.path
        return Forbidden(f"Forbidden request: {uri} (method :{req.method.lower()}). {why}")

    def client_in_good_standing(self, req: Request) -> x509.Certificate | None:
        """The verified client certificate, unless it is revoked (then: unauthenticated)."""
        if not req.client.verified:
            return None
        cert = req.client.cert
        if cert is None:
            return None
        if not self._issued_by_us(cert):
            # It chained to something in the TLS trust store (say, a sibling intermediate
            # under the same root) but this CA did not issue it: not one of ours.
            log.warning(
                "client %s presented a certificate this CA did not issue", req.client.certname
            )
            return None
        if self.ca.index.is_revoked(cert.serial_number):
            log.warning(
                "client %s presented revoked certificate serial %d",
                req.client.certname,
                cert.serial_number,
            )
            return None
        return cert

    def _issued_by_us(self, cert: x509.Certificate) -> bool:
        _, ca_cert = self.ca.signing_material()
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def is_admin(self, req: Request) -> bool:
        cert = self.client_in_good_standing(req)
        if cert is None:
            return False
        if req.client.certname in self.settings.admin_certnames:
            return True
        return pki.has_cli_auth(cert)

    def authorize(self, req: Request, access: str, params: dict[str, str]) -> None:
        if access == PUBLIC:
            return
        if access == AUTHENTICATED:
            if self.client_in_good_standing(req) is None:
                raise self._forbid(
                    req, "This endpoint needs a valid, unrevoked client certificate."
                )
            return
        if access == OWNER:
            if self.client_in_good_standing(req) is None:
                raise self._forbid(req, "Renewal needs the current, unrevoked client certificate.")
            return
        if access == ADMIN:
            if not self.is_admin(req):
                raise self._forbid(
                    req,
                    "This endpoint needs a client certificate with the pp_cli_auth extension "
                    "(see 'splitca generate --ca-client') or a certname listed in admin_certnames.",
                )
            return
        raise AssertionError(f"unknown access rule {access}")  # pragma: no cover


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


def _file_response(req: Request, data: bytes, mtime: float | None) -> Response:
    if _not_modified(req, mtime):
        return Response(304, b"", TEXT)
    resp = Response(200, data, TEXT)
    if mtime is not None:
        resp.headers.append(("Last-Modified", email.utils.formatdate(mtime, usegmt=True)))
    return resp


# --- v1 handlers ----------------------------------------------------------------------------


@route("GET", rf"/certificate/{NAME}", PUBLIC)
def get_certificate(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    cadir = app.ca.cadir
    if name == "ca":
        return _file_response(req, app.ca.ca_certificate_pem(), cadir.mtime(cadir.cacert))
    data = app.ca.certificate_pem(name)
    if data is None:
        return Response.text(f"Could not find certificate {name}", 404)
    return _file_response(req, data, cadir.mtime(cadir.cert_path(name)))


@route("GET", rf"/certificate_request/{NAME}", PUBLIC)
def get_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    data = app.ca.csr_pem(p["name"])
    if data is None:
        return Response.text(f"Could not find certificate_request {p['name']}", 404)
    return Response(200, data, TEXT)


@route("PUT", rf"/certificate_request/{NAME}", PUBLIC)
def put_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    app.ca.submit_csr(p["name"], req.body(), actor=req.client.actor)
    if "_legacy" in p:
        # Puppet 2.6 parses the PUT answer by its Content-Type; an empty YAML document
        # satisfies 2.6, 2.7 and 3.x alike (puppet-ca-api.md section 5.2).
        return Response(200, b"--- \n", "text/yaml")
    return Response(200, b"", TEXT)


@route("DELETE", rf"/certificate_request/{NAME}", ADMIN)
def delete_certificate_request(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    path = app.ca.cadir.csr_path(name) if pki.is_safe_name(name) else None
    try:
        app.ca.delete_csr(name, actor=req.client.actor)
    except NotFound:
        return Response.text(f"No certificate request for {name} at expected path {path}", 404)
    return Response.text(f"Deleted certificate request for {name} at {path}", 204, None)


@route("GET", r"/certificate_revocation_list/[^/]*", PUBLIC)
def get_crl(app: App, req: Request, p: dict[str, str]) -> Response:
    cadir = app.ca.cadir
    return _file_response(req, app.ca.crl_pem(), cadir.mtime(cadir.cacrl))


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
    raise _NotAcceptable()


class _NotAcceptable(InvalidRequest):
    pass


def _check_content_type(req: Request) -> None:
    ct = req.header("Content-Type")
    if ct is None:
        return
    mt = ct.split(";")[0].strip().lower()
    if mt not in _STATUS_TYPES:
        raise UnsupportedMediaType("Unsupported media type.")


@route("GET PUT DELETE", rf"/certificate_status/{NAME}", ADMIN)
def certificate_status(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    if req.method == "GET":
        try:
            media = _status_media_type(req)
        except _NotAcceptable:
            return Response.text("No acceptable resource available.", 406)
        row = app.ca.status(name)
        if row is None:
            return Response.text("Resource not found.", 404)
        return Response(200, _status_json(row).encode(), media)
    if req.method == "DELETE":
        try:
            app.ca.delete(name, actor=req.client.actor)
        except NotFound:
            return Response.text("Invalid certificate subject.", 404, "text/plain; charset=UTF-8")
        return Response(204, b"", TEXT)
    # PUT: liberator's decision order (puppet-ca-api.md section 3.7)
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
    ctype = "text/plain; charset=UTF-8"
    if app.ca.status(name) is None and not (
        state == "revoked" and pki.is_safe_name(name) and app.ca.serials_for(name)
    ):
        return Response.text("Invalid certificate subject.", 404, ctype)
    try:
        if state == "signed":
            app.ca.sign(
                name, ttl=dt.timedelta(seconds=ttl) if ttl else None, actor=req.client.actor
            )
        else:
            found, _ = app.ca.revoke([name], actor=req.client.actor)
            if not found:
                return Response.text(
                    f"Cannot revoke certificate for host {name} without a signed certificate",
                    409,
                    ctype,
                )
    except (PolicyViolation, Conflict) as exc:
        return Response.text(str(exc), 409, ctype)
    return Response(204, b"", TEXT)


@route("GET", r"/certificate_statuses/?", ADMIN)
def certificate_statuses_missing(app: App, req: Request, p: dict[str, str]) -> Response:
    return Response.text("Missing URL Segment", 400, "text/plain; charset=utf-8")


@route("GET", r"/certificate_statuses/[^/]+", ADMIN)
def certificate_statuses(app: App, req: Request, p: dict[str, str]) -> Response:
    try:
        media = _status_media_type(req)
    except _NotAcceptable:
        return Response.text("No acceptable resource available.", 406)
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


@route("GET", r"/expirations", AUTHENTICATED)
def expirations(app: App, req: Request, p: dict[str, str]) -> Response:
    return Response.json(app.ca.expirations())


@route("PUT", r"/clean", ADMIN)
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


@route("POST", r"/sign", ADMIN)
def sign(app: App, req: Request, p: dict[str, str]) -> Response:
    try:
        body = req.json_body()
    except InvalidRequest as exc:
        return Response.json(
            {"kind": "schema-violation", "submitted": None, "error": str(exc)}, 422
        )
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


@route("POST", r"/sign/all", ADMIN)
def sign_all(app: App, req: Request, p: dict[str, str]) -> Response:
    req.body()  # drained and ignored, as puppetserver
    return _bulk_response(app.ca.sign_all(actor=req.client.actor))


@route("POST", r"/certificate_renewal", OWNER)
def certificate_renewal(app: App, req: Request, p: dict[str, str]) -> Response:
    if not app.settings.allow_auto_renewal:
        return Response.text("Not Found", 404)
    cert = app.client_in_good_standing(req)
    if cert is None:
        return Response.text("No valid certificate found in renewal request", 400)
    try:
        new = app.ca.renew(cert, actor=req.client.actor)
    except InvalidRequest as exc:
        return Response.text(str(exc), 403)
    return Response(200, pki.pem(new), TEXT)


# --- puppetserver's status service (the simple, load-balancer endpoints) -------------------

# What `/status/v1/simple/<service>` knows. puppetserver also lists its compiler's services;
# splitca is only a CA, so a tool asking for those learns that they are not here.
_STATUS_SERVICES = ("ca", "status-service")
_STATUS_TYPE = "text/plain; charset=utf-8"


@route("GET", r"/simple/?", PUBLIC, prefix=STATUS_V1)
def status_simple(app: App, req: Request, p: dict[str, str]) -> Response:
    # Answering at all means the CA opened its cadir and serves: "running", as puppetserver.
    return Response.text("running", 200, _STATUS_TYPE)


@route("GET", rf"/simple/{NAME}", PUBLIC, prefix=STATUS_V1)
def status_simple_service(app: App, req: Request, p: dict[str, str]) -> Response:
    name = p["name"]
    if name not in _STATUS_SERVICES:
        return Response.text(f"not found: {_printable(name)}", 404, _STATUS_TYPE)
    return Response.text("running", 200, _STATUS_TYPE)


# --- factories -------------------------------------------------------------------------------


def make_app(settings: Settings, *, ca: CertificateAuthority | None = None) -> App:
    """Build the app over an existing CA (``splitca setup`` first)."""
    return App(ca or open_ca(settings))


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
                    _lazy_app = make_app(settings)
                except SplitCAError as exc:
                    log.error("splitca cannot start: %s", exc)
                    start_response("503 Service Unavailable", [("Content-Type", TEXT)])
                    return [f"splitca is not configured: {exc}\n".encode()]
    return _lazy_app(environ, start_response)


def _printable(text: str) -> str:
    """Keep the access log one line per request whatever the client sent."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:300]


from . import wsgi_registrations as _wsgi_registrations  # noqa: E402, F401 - /splitca/registrations
