"""The HTTP framework under splitca's API: requests, responses, routes, authorization, the error map."""
# Over 400 lines because request parsing, auth, routing and the one error map are one mechanism; split, the error-to-status map would scatter.

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.config import Settings
from splitca.core.audit import Actor
from splitca.errors import (
    BodyTooLarge,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidRequest,
    LockTimeout,
    NotAcceptable,
    NotFound,
    PolicyViolation,
    RemoteError,
    RequestTimeout,
    ServerBusy,
    SplitCAError,
    StoreError,
    UnsupportedMediaType,
)
from splitca.http.metrics import Metrics

__all__ = [
    "ADMIN",
    "AUTHENTICATED",
    "JSON",
    "NAME",
    "OWNER",
    "PUBLIC",
    "STATUS_V1",
    "TEXT",
    "V1",
    "App",
    "Request",
    "Response",
    "Route",
    "answer",
    "error_response",
    "printable",
    "route",
]

log = logging.getLogger("splitca.wsgi")
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
        query = environ.get("QUERY_STRING", "")
        # An agent's requests have no query: skip parse_qs's machinery for them.
        self.query = urllib.parse.parse_qs(query, keep_blank_values=True) if query else {}
        self.max_body = max_body
        self.route = "unmatched"  # the matched route's pattern, for metrics (set by dispatch)
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
    (splitca.http.server), so there only SplitCAErrors come out of the stream.
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
    # The status line's reason phrase, when the standard one hides what happened: a
    # Puppet agent drops a refused CSR's 400 body and logs only this (with --debug).
    reason: str | None = None

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str | None = TEXT) -> Response:
        return cls(status, text.encode("utf-8"), content_type)

    @classmethod
    def json(cls, value: object, status: int = 200, content_type: str = JSON) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), content_type)


# The status lines, made once (the enum lookup per response was most of building one).
_STATUS_LINES = {int(s): f"{int(s)} {s.phrase}" for s in HTTPStatus}


# --- the error map: the ONE place where outcomes become HTTP status codes ----------------

_STATUS: tuple[tuple[type[SplitCAError], int], ...] = (
    (BodyTooLarge, 413),
    (RequestTimeout, 408),
    (UnsupportedMediaType, 415),
    (NotAcceptable, 406),
    (InvalidRequest, 400),
    (PolicyViolation, 400),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (ConfigError, 503),  # the server is misconfigured: not the client's fault, not a crash
    (LockTimeout, 503),
    (ServerBusy, 503),
    (StoreError, 503),
    (RemoteError, 502),
)


# Reading the request went wrong, whatever the route: these InvalidRequests keep their own
# status from _STATUS, never a route's override for InvalidRequest (POST sign's 422).
_OWN_STATUS = (BodyTooLarge, RequestTimeout)


def error_response(exc: BaseException) -> Response:
    """The answer for an error that reached the app: its status from ``_STATUS``, else 500."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            resp = Response.text(str(exc), status)
            if status == 503:
                resp.headers.append(("Retry-After", "10"))
                log.error("%s: %s", type(exc).__name__, exc)
            return resp
    log.exception("unhandled error")
    return Response.text("Internal error; see the CA server's log.", 500)


# A route's own answer for an error class, where Puppet's wire differs from _STATUS for that
# endpoint (409 for a refused certificate_status PUT, 422 for a bad /sign body, ...).
# A renderer gets what the handler got, and the error.
ErrorRender = Callable[["App", "Request", dict[str, str], SplitCAError], "Response"]
ErrorOverride = tuple[type[SplitCAError] | tuple[type[SplitCAError], ...], ErrorRender]


def answer(status: int, text: str | None = None, content_type: str = TEXT) -> ErrorRender:
    """An override answering *status* with *text* (default: the error's message)."""

    def render(app: App, req: Request, params: dict[str, str], exc: SplitCAError) -> Response:
        return Response.text(str(exc) if text is None else text, status, content_type)

    return render


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
    errors: tuple[ErrorOverride, ...] = ()  # checked before _STATUS, for the handler's errors


V1 = "/puppet-ca/v1"
# puppetserver's status service; `puppetserver ca` asks it whether the CA is up.
STATUS_V1 = "/status/v1"


def route(
    methods: str,
    pattern: str,
    access: str,
    handler: Handler,
    *,
    prefix: str = V1,
    errors: Sequence[ErrorOverride] = (),
) -> Route:
    """One entry of a route table: ``route("GET PUT", r"/thing/{NAME}", ADMIN, handler)``.

    Route tables are plain tuples that each area's module exposes (``ROUTES``); the app
    is given the assembled table when it is made (``splitca.wsgi.make_app``).
    """
    return Route(
        tuple(methods.split()), re.compile(pattern), handler, access, prefix, tuple(errors)
    )


NAME = r"(?P<name>[^/]+)"
# Legacy Puppet 2.6-3.x agents: /<environment>/<indirection>/<key>
LEGACY_RE = re.compile(
    r"^/(?P<env>[A-Za-z0-9_]+)/(?P<rest>(?:certificate|certificate_request|certificate_revocation_list"
    r"|certificate_status|certificate_statuses)/.*)$"
)


class App:
    """The CA's WSGI application. One per process; thread-safe."""

    def __init__(self, ca: CertificateAuthority, routes: Sequence[Route]) -> None:
        self.ca = ca
        self.routes = tuple(routes)
        self.settings: Settings = ca.settings
        self.version = self.settings.puppet_version
        self.metrics = Metrics(ca.metrics_snapshot)

    # WSGI entry point
    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        req = Request(environ, max_body=self.settings.max_body_bytes)
        error: BaseException | None = None
        try:
            resp = self.dispatch(req)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            error = exc
            resp = error_response(exc)
        if resp.status == 204:
            # RFC 9110 15.3.5 and 8.6: a 204 ends with its head, without Content-Length,
            # whatever a handler gave it. A body sent after it is read by a keep-alive client
            # (Ruby's Net::HTTP, so Puppet and `puppetserver ca`) as its next answer.
            resp.body, resp.stream = b"", None
        headers = [("X-Puppet-Version", self.version)]
        if resp.content_type is not None:
            headers.append(("Content-Type", resp.content_type))
        if resp.stream is None and resp.status != 204:
            headers.append(("Content-Length", str(len(resp.body))))
        headers.extend(resp.headers)
        status_line = _STATUS_LINES.get(resp.status) if resp.reason is None else None
        if status_line is None:
            status_line = f"{resp.status} {resp.reason or HTTPStatus(resp.status).phrase}"
        start_response(status_line, headers)
        if access_log.isEnabledFor(logging.INFO):  # not the line's arguments for nothing
            access_log.info(
                '%s %s "%s %s" %d %s %.1fms',
                req.client.address or "-",
                req.client.certname or "-",
                req.method,
                printable(environ.get("REQUEST_URI") or req.path),
                resp.status,
                "-" if resp.stream is not None else len(resp.body),
                (time.monotonic() - started) * 1000,
            )
        try:
            self.metrics.observe_request(req.route, req.method, resp.status, error)
        except Exception:  # counting must never cost a request its answer
            log.exception("metrics: could not count a request")
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
        for r in self.routes:
            # Every pattern starts with "/", so "/puppet-ca/v1x/..." matches nothing.
            m = r.pattern.fullmatch(path[len(r.prefix) :]) if path.startswith(r.prefix) else None
            if not m:
                continue
            if req.method not in r.methods and not (req.method == "HEAD" and "GET" in r.methods):
                allowed.extend(r.methods)
                continue
            params = {  # unquote() returns a value without "%" as it is
                k: urllib.parse.unquote(v) if "%" in v else v for k, v in m.groupdict().items()
            }
            req.route = r.prefix + r.pattern.pattern
            self.authorize(req, r.access, params)
            if legacy is not None:
                params["_legacy"] = legacy
            try:
                return r.handler(self, req, params)
            except _OWN_STATUS:
                raise  # a body too large or too slow is that on every route: 413, 408
            except SplitCAError as exc:
                # The route's own answer for this error class, if Puppet's wire has one;
                # everything else goes to the one map (error_response).
                for cls, render in r.errors:
                    if isinstance(exc, cls):
                        return render(self, req, params, exc)
                raise
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
        if self.ca.is_revoked(cert.serial_number):
            log.warning(
                "client %s presented revoked certificate serial %d",
                req.client.certname,
                cert.serial_number,
            )
            return None
        return cert

    def _issued_by_us(self, cert: x509.Certificate) -> bool:
        ca_cert = self.ca.ca_certificate()
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


def printable(text: str) -> str:
    """Keep the access log one line per request whatever the client sent."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:300]
