"""The Admin port over a CA's HTTP API (Puppet's certificate_status routes, splitca's registrations)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

from cryptography import x509

from splitca import pki
from splitca.core.ports import Refusal, Row
from splitca.core.usecases.common import RESERVED_PENDING
from splitca.core.usecases.read import describe_from, revocation_details_from_crl
from splitca.core.usecases.sign import nothing_to_sign, reserved_not_bulk
from splitca.enrollment.registry import Classification
from splitca.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteError,
    SplitCAError,
    StoreError,
)
from splitca.split.client import Fetched, HTTPClient, printable

from .identity import Identity, resolve
from .port import CleanOutcome, EnrollOptions, RemoteTarget, SignResult

__all__ = ["LIST_MAX_BYTES", "MAX_BYTES", "TIMEOUT", "RemoteAdmin"]

V1 = "/puppet-ca/v1"
JSON = "application/json"
TIMEOUT = 30.0  # each request, in total (connect, TLS, answer)
MAX_BYTES = 1024 * 1024  # any answer but a listing
LIST_MAX_BYTES = 256 * 1024 * 1024  # listings: about 250k certificates or registrations
_STATES = ("requested", "signed", "revoked")
# What an answer's status means, as the CA's one error map (http/app.py _STATUS) made it.
_ERRORS: dict[int, type[SplitCAError]] = {
    400: InvalidRequest,
    404: NotFound,
    406: InvalidRequest,
    408: InvalidRequest,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    502: RemoteError,
    503: StoreError,
}


class RemoteAdmin:
    """One CA's API, trusting only the given CA certificate, presenting one admin certificate."""

    def __init__(self, url: str, identity: Identity) -> None:
        self.identity = identity
        try:
            cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--cert: {identity.cert} is not a PEM certificate: {exc}") from None
        self.certname = pki.first_cn(cert.subject) or str(identity.cert)
        self.client = HTTPClient(
            url,
            ca_bundle=identity.ca_cert,
            client_cert=(identity.cert, identity.key),
            timeout=TIMEOUT,
            max_bytes=MAX_BYTES,
            accept=JSON,
        )
        self.base = self.client.base_url

    @classmethod
    def connect(cls, target: RemoteTarget) -> RemoteAdmin:
        return cls(target.url, resolve(target.cert, target.key, target.ca_cert))

    # --- the wire ------------------------------------------------------------------------
    def _url(self, path: str, *names: str, query: dict[str, str] | None = None) -> str:
        quoted = [urllib.parse.quote(n, safe="") for n in names]
        url = self.base + path.format(*quoted)
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def _call(
        self,
        method: str,
        url: str,
        body: object = None,
        *,
        ok: tuple[int, ...] = (200,),
        answers: tuple[int, ...] = (),
        accept: str = JSON,
        max_bytes: int | None = None,
    ) -> Fetched:
        """The answer if its status is in *ok* or *answers* (the caller reads those), else the
        error the CA's status means."""
        got = self.client.request(method, url, json_body=body, accept=accept, max_bytes=max_bytes)
        if got.status in ok or got.status in answers:
            return got
        self._fail(got)

    def _fail(self, got: Fetched) -> NoReturn:
        if got.status == 403:
            raise Forbidden(
                f"the CA refused {self.certname}: not an admin certificate; "
                "generate one with splitca generate --ca-client NAME"
            )
        text = _text(got.body)
        kind = _ERRORS.get(got.status)
        if kind is None:
            raise RemoteError(f"{got.url} answered HTTP {got.status}{': ' + text if text else ''}")
        raise kind(text or f"the CA answered HTTP {got.status}")

    def _json(self, got: Fetched) -> Any:
        return _decoded(got)[1]

    # --- certificates ----------------------------------------------------------------------
    def _statuses(self, state: str | None) -> tuple[str, list[Any]]:
        query = {"state": state} if state else None
        got = self._call(
            "GET",
            self._url(V1 + "/certificate_statuses/any", query=query),
            max_bytes=LIST_MAX_BYTES,
        )
        text, items = _decoded(got)
        if not isinstance(items, list):
            raise RemoteError(f"{got.url} answered JSON that is not a list")
        return text, items

    def statuses(self, state: str | None) -> Iterator[Row]:
        _, items = self._statuses(state)
        return iter([_row(item) for item in items])

    def statuses_json(self, state: str | None) -> Iterator[str]:
        text, _ = self._statuses(state)
        return iter([text.strip()])  # verbatim: the same array the CA's own list prints

    def status(self, certname: str) -> Row | None:
        got = self._call("GET", self._url(V1 + "/certificate_status/{}", certname), answers=(404,))
        return None if got.status == 404 else _row(self._json(got))

    def describe(self, certname: str) -> dict[str, object] | None:
        row = self.status(certname)
        if row is None:
            return None
        path = "/certificate_request/{}" if row.state == "requested" else "/certificate/{}"
        got = self._call("GET", self._url(V1 + path, certname), answers=(404,), accept="text/plain")
        revocation = None
        if row.state == "revoked" and row.serial is not None:
            revocation = self.revocation_details([row.serial]).get(row.serial)
        return describe_from(row, got.body if got.status == 200 else None, revocation)

    def revocation_details(self, serials: Iterable[int]) -> dict[int, dict[str, object]]:
        # When and why are on the CRL the CA serves (ours first), which any client may read.
        got = self._call(
            "GET",
            self._url(V1 + "/certificate_revocation_list/{}", "ca"),
            accept="text/plain",
            max_bytes=LIST_MAX_BYTES,
        )
        try:
            return revocation_details_from_crl(got.body or b"", serials)
        except ValueError:
            raise RemoteError(f"{got.url} answered something that is not a CRL") from None

    def already_revoked(self, certnames: Sequence[str]) -> set[str]:
        rows = {name: self.status(name) for name in certnames}
        return {name for name, row in rows.items() if row is not None and row.state == "revoked"}

    def refusals(self) -> list[Refusal]:
        raise InvalidRequest(
            "list --refused is not available with --ca-url (Puppet's CA API has no such "
            "listing); run it on the CA host"
        )

    def pending_names(self) -> list[str]:
        return [row.name for row in self.statuses("requested")]

    def sign(
        self, certnames: Sequence[str], *, ttl: dt.timedelta | None, allow_alt_names: bool
    ) -> list[SignResult]:
        if allow_alt_names:
            raise ConfigError(
                "--allow-dns-alt-names cannot be used with --ca-url: Puppet's CA API signs only "
                "what the CA's policy allows; run the command on the CA host"
            )
        body: dict[str, object] = {"desired_state": "signed"}
        if ttl is not None:
            body["cert_ttl"] = int(ttl.total_seconds())
        results = []
        for name in certnames:
            url = self._url(V1 + "/certificate_status/{}", name)
            got = self._call("PUT", url, body, ok=(204,), answers=(400, 404, 409))
            if got.status != 204:
                results.append(SignResult(name, error=self._sign_refusal(name, got)))
                continue
            cert = self._certificate(name)
            fingerprint = pki.fingerprints(pki.der(cert))["SHA256"]
            results.append(SignResult(name, cert.serial_number, fingerprint))
        return results

    def sign_all(self, *, ttl: dt.timedelta | None, allow_alt_names: bool) -> list[SignResult]:
        # The CA says which pending CSRs are for reserved names (their pending_reason, as
        # its own sign --all knows them); those are left pending, as there.
        pending = list(self.statuses("requested"))
        wanted = [row.name for row in pending if row.reason != RESERVED_PENDING]
        results = {
            r.certname: r for r in self.sign(wanted, ttl=ttl, allow_alt_names=allow_alt_names)
        }
        for row in pending:
            if row.reason == RESERVED_PENDING:
                results[row.name] = SignResult(row.name, error=reserved_not_bulk(row.name))
        return [results[row.name] for row in pending]

    def _sign_refusal(self, name: str, got: Fetched) -> str:
        """The local words for a name with nothing to sign (Puppet's wire has its own)."""
        if got.status in (404, 409):
            row = self.status(name)
            if row is None or row.state != "requested":
                return str(nothing_to_sign(name, None if row is None else row.state))
        return _text(got.body)

    def _certificate(self, certname: str) -> x509.Certificate:
        got = self._call("GET", self._url(V1 + "/certificate/{}", certname), accept="text/plain")
        try:
            return x509.load_pem_x509_certificate(got.body or b"")
        except ValueError:
            raise RemoteError(f"{got.url} answered something that is not a certificate") from None

    def revoke(
        self, certnames: Sequence[str], *, reason: x509.ReasonFlags
    ) -> tuple[dict[str, list[int]], list[str]]:
        if reason != x509.ReasonFlags.key_compromise:
            raise ConfigError(
                "--reason cannot be used with --ca-url: Puppet's CA API revokes with "
                "key_compromise; run the command on the CA host for another reason"
            )
        found: dict[str, list[int]] = {}
        missing: list[str] = []
        for name in certnames:
            before = self.status(name)
            serial = before.serial if before is not None else None
            url = self._url(V1 + "/certificate_status/{}", name)
            got = self._call(
                "PUT", url, {"desired_state": "revoked"}, ok=(204,), answers=(404, 409)
            )
            if got.status == 204:
                found[name] = [serial] if serial is not None else []
            else:
                missing.append(name)
        return found, missing

    def clean(self, certnames: Sequence[str]) -> CleanOutcome:
        names = list(dict.fromkeys(certnames))
        got = self._call("PUT", self._url(V1 + "/clean"), {"certnames": names}, accept="text/plain")
        text = (got.body or b"").decode("utf-8", "replace")
        missing: list[str] = []
        if "[" in text:  # "The following certs do not exist and cannot be revoked: [...]"
            try:
                missing = json.loads(text[text.index("[") :])
            except ValueError:
                missing = None  # type: ignore[assignment]
            if not isinstance(missing, list) or not all(isinstance(n, str) for n in missing):
                raise RemoteError(f"{got.url} answered {_text(got.body)!r}")
        pending: list[str] = []
        absent: list[str] = []
        for name in names:
            if name not in missing:
                continue
            url = self._url(V1 + "/certificate_request/{}", name)
            deleted = self._call("DELETE", url, ok=(200, 204), answers=(404,), accept="text/plain")
            (pending if deleted.status != 404 else absent).append(name)
        return CleanOutcome([n for n in names if n not in missing], pending, absent)

    # --- registrations ---------------------------------------------------------------------
    def register(
        self,
        certname: str,
        classification: Classification,
        *,
        ttl: dt.timedelta | None,
        replace: bool,
    ) -> dict[str, object]:
        body = {**_classification(classification, ttl), "replace": replace}
        url = self._url(V1 + "/splitca/registrations/{}", certname)
        return _object(self, self._call("PUT", url, body, ok=(200, 201)), _REGISTERED)

    def enroll(
        self, classification: Classification, *, ttl: dt.timedelta | None, options: EnrollOptions
    ) -> dict[str, object]:
        user_data: dict[str, object] = {
            "server_port": options.server_port,
            "install": options.install,
            "run_agent": options.run_agent,
        }
        for key in ("server", "ca_server", "ca_port"):
            if getattr(options, key) is not None:
                user_data[key] = getattr(options, key)
        body = {
            **_classification(classification, ttl),
            "prefix": options.prefix,
            "domain": options.domain,
            "user_data": user_data,
        }
        got = self._call("POST", self._url(V1 + "/splitca/registrations"), body, ok=(200, 201))
        found = _object(self, got, _ENROLLED)
        return {k: found[k] for k in _ENROLLED}

    def registrations(self) -> list[dict[str, object]]:
        got = self._call("GET", self._url(V1 + "/splitca/registrations"), max_bytes=LIST_MAX_BYTES)
        items = self._json(got)
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and i.keys() >= _LISTED and isinstance(i["classes"], list)
            for i in items
        ):
            raise RemoteError(f"{got.url} answered JSON that is not a list of registrations")
        if not all(pki.is_safe_name(i["certname"]) and _printable(i) for i in items):
            raise RemoteError(
                f"{got.url} answered a registration with a control character (or a name "
                "that is not a certname)"
            )
        return items

    def unregister(self, certname: str) -> None:
        url = self._url(V1 + "/splitca/registrations/{}", certname)
        self._call("DELETE", url, ok=(200, 204))


def _classification(c: Classification, ttl: dt.timedelta | None) -> dict[str, object]:
    body: dict[str, object] = {
        "classes": list(c.classes),
        "parameters": dict(c.parameters),
        "environment": c.environment,
    }
    if ttl is not None:
        body["ttl"] = int(ttl.total_seconds())
    return body


# What the CLI prints of a registration, an enrollment and a listed registration.
_REGISTERED = ("expires", "token_id", "token")
_ENROLLED = ("certname", "expires", "token_id", "user_data")
_LISTED = {"certname", "state", "expires", "classes", "environment"}


def _object(admin: RemoteAdmin, got: Fetched, keys: tuple[str, ...]) -> dict[str, object]:
    found = admin._json(got)
    if not isinstance(found, dict) or not all(isinstance(found.get(k), str) for k in keys):
        raise RemoteError(f"{got.url} answered JSON without {', '.join(keys)}")
    return found


def _row(item: object) -> Row:
    """A certificate_status object as the CA's own index row (``pending_reason`` its reason)."""
    if not isinstance(item, dict):
        raise RemoteError("the CA answered a certificate status that is not a JSON object")
    fields = dict(item)
    state, name = fields.pop("state", None), fields.get("name")
    reason = fields.pop("pending_reason", "")
    if (
        state not in _STATES
        or not isinstance(name, str)
        or not isinstance(reason, str)
        or not isinstance(fields.get("fingerprint"), str)
    ):
        raise RemoteError(
            "the CA answered a certificate status without a name, state or fingerprint"
        )
    if not pki.is_safe_name(name) or not _printable(fields) or not _printable(reason):
        raise RemoteError(
            "the CA answered a certificate status with a control character (or a name "
            "that is not a certname)"
        )
    serial = fields.get("serial_number")
    return Row(
        name=name,
        state=state,
        status=json.dumps(fields, separators=(",", ":")),
        serial=serial if isinstance(serial, int) and not isinstance(serial, bool) else None,
        reason=reason,
    )


def _printable(value: object) -> bool:
    """No string in the JSON *value* holds a control character (what the CLI prints of an
    answer reaches the operator's terminal: an escape sequence must not)."""
    if isinstance(value, str):
        return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)
    if isinstance(value, dict):
        return all(_printable(k) and _printable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_printable(v) for v in value)
    return True


def _decoded(got: Fetched) -> tuple[str, Any]:
    """The answer's body as text and as the one JSON document in UTF-8 it must be."""
    try:
        text = (got.body or b"").decode("utf-8")
        return text, json.loads(text)
    except (ValueError, RecursionError):
        raise RemoteError(f"{got.url} answered something that is not JSON") from None


def _text(body: bytes | None) -> str:
    """An answer's text as one printable line (it ends up on the operator's terminal)."""
    text = (body or b"").decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else ""
    return printable(first)[:500]
