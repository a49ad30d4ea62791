"""The pre-registration registry: records, one-time tokens and the backend interface (Registry)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from splitca import pki
from splitca.errors import InvalidRequest

__all__ = [
    "MAX_RECORD_BYTES",
    "Classification",
    "Redemption",
    "Registration",
    "Registry",
    "check_token",
    "hash_token",
    "new_token",
    "parse_record",
]

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 * 1024  # a record is a few hundred bytes; anything bigger is hostile
RECORD_MODE = 0o640
MAX_CLASSES = 100
MAX_PARAMETERS_BYTES = 16 * 1024

_CLASS_RE = re.compile(r"(::)?[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*")
_PARAM_RE = re.compile(r"[a-z_][a-zA-Z0-9_]*")
_ENV_RE = re.compile(r"[a-z0-9_]{1,64}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# --- tokens -------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh one-time token: 256 random bits as 64 hex digits.

    Hex keeps it valid in the PrintableString that Puppet uses for CSR attributes
    (``_`` of URL-safe base64 is not).
    """
    return secrets.token_hex(32)


def hash_token(token: str) -> str:
    """What the registry stores instead of the token: its SHA-256, hex.

    A plain hash is enough: the token has 256 bits of entropy, so there is nothing
    to brute-force (a slow password hash buys nothing here).
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    """What the node classifier tells compile masters: Puppet ENC ``classes``, ``parameters``, ``environment``."""

    classes: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    environment: str = ""

    @classmethod
    def build(cls, classes: object, parameters: object, environment: object) -> Classification:
        """Validate untrusted input (CLI flags, a JSON body, a remote record).

        Raises:
          InvalidRequest: naming the bad class, parameter or environment.
        """
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise InvalidRequest("classes: expected a list of class names")
        if len(classes) > MAX_CLASSES:
            raise InvalidRequest(f"classes: at most {MAX_CLASSES} classes")
        for name in classes:
            if not isinstance(name, str) or not _CLASS_RE.fullmatch(name) or len(name) > 200:
                raise InvalidRequest(
                    f"classes: {name!r} is not a Puppet class name (like hadoop::worker)"
                )
        if not isinstance(parameters, Mapping):
            raise InvalidRequest("parameters: expected a mapping of name to value")
        for key, value in parameters.items():
            if not isinstance(key, str) or not _PARAM_RE.fullmatch(key) or len(key) > 100:
                raise InvalidRequest(
                    f"parameters: {key!r} is not a Puppet variable name (like datacenter)"
                )
            _check_value(key, value, depth=0)
        try:
            size = len(json.dumps(parameters, allow_nan=False))
        except ValueError:
            raise InvalidRequest("parameters: values must be finite numbers") from None
        if size > MAX_PARAMETERS_BYTES:
            raise InvalidRequest(f"parameters: at most {MAX_PARAMETERS_BYTES} bytes of JSON")
        if environment is None:
            environment = ""
        if not isinstance(environment, str) or (environment and not _ENV_RE.fullmatch(environment)):
            raise InvalidRequest(
                f"environment: {environment!r} is not a Puppet environment name "
                "(lowercase letters, digits and underscores)"
            )
        names = tuple(dict.fromkeys(str(c) for c in classes))
        return cls(names, {str(k): v for k, v in parameters.items()}, environment)

    def enc(self) -> dict[str, object]:
        """Puppet's external node classifier document."""
        out: dict[str, object] = {
            "classes": list(self.classes),
            "parameters": dict(self.parameters),
        }
        if self.environment:
            out["environment"] = self.environment
        return out


def _check_value(key: str, value: object, *, depth: int) -> None:
    """Parameter values: JSON data (strings, numbers, booleans, lists, maps), a few levels deep."""
    if depth > 5:
        raise InvalidRequest(f"parameters: {key} is nested too deeply")
    if isinstance(value, str):
        if problem := _text_problem(value):
            raise InvalidRequest(f"parameters: {key} holds {problem}")
        return
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"parameters: {key} must be a finite number")
        return
    if isinstance(value, list):
        for item in value:
            _check_value(key, item, depth=depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRequest(f"parameters: {key} has a non-string key")
            if problem := _text_problem(k):
                raise InvalidRequest(f"parameters: {key} has a key holding {problem}")
            _check_value(key, v, depth=depth + 1)
        return
    raise InvalidRequest(f"parameters: {key} has a value of unsupported type")


def _text_problem(text: str) -> str | None:
    """What makes *text* unstorable, or None: no store holds a NUL (PostgreSQL's jsonb refuses
    it), Puppet neither; a lone surrogate (a JSON ``\\ud800``, or argv bytes that are not
    UTF-8) is no character at all, so nothing can encode it."""
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "text that is not valid Unicode (a lone surrogate)"
    return None


@dataclass(frozen=True)
class Registration:
    """One pre-registered machine. The token itself is never stored, only its hash."""

    certname: str
    created: dt.datetime
    expires: dt.datetime
    token_sha256: str
    classification: Classification = field(default_factory=Classification)
    redeemed: dt.datetime | None = None

    @property
    def token_id(self) -> str:
        """A short, non-secret handle for logs: a prefix of the token's hash."""
        return self.token_sha256[:12]

    def state(self, now: dt.datetime) -> str:
        """``enrolled`` (token used), ``expired`` (never used, too late) or ``waiting``."""
        if self.redeemed is not None:
            return "enrolled"
        return "expired" if now >= self.expires else "waiting"

    def with_redeemed(self, now: dt.datetime) -> Registration:
        return replace(self, redeemed=now)

    def to_json(self) -> bytes:
        """The stored form, one JSON object (see docs/enrollment.md)."""
        record = {
            "certname": self.certname,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "token_sha256": self.token_sha256,
            **self.classification.enc(),
            "environment": self.classification.environment,
            "redeemed": _iso(self.redeemed) if self.redeemed else None,
        }
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()

    def public(self, now: dt.datetime) -> dict[str, object]:
        """What operators see: everything but the hash (only its short id)."""
        return {
            "certname": self.certname,
            "state": self.state(now),
            "created": _iso(self.created),
            "expires": _iso(self.expires),
            "redeemed": _iso(self.redeemed) if self.redeemed else None,
            "token_id": self.token_id,
            **self.classification.enc(),
            "environment": self.classification.environment,
        }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: object, key: str) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{key} is not a timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key} has no time zone")
    return parsed.astimezone(dt.UTC)


def parse_record(data: bytes, certname: str) -> Registration:
    """Parse and validate a stored record for *certname*; treat it as hostile input.

    Raises:
      ValueError: saying what is wrong (the caller names the backend).
    """
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("record is not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("record is not a JSON object")
    if raw.get("certname") != certname:
        raise ValueError(f"record is for {str(raw.get('certname'))[:80]!r}, not {certname!r}")
    digest = raw.get("token_sha256")
    if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
        raise ValueError("token_sha256 is not a lowercase hex SHA-256")
    created = _parse_time(raw.get("created"), "created")
    expires = _parse_time(raw.get("expires"), "expires")
    redeemed_raw = raw.get("redeemed")
    redeemed = None if redeemed_raw is None else _parse_time(redeemed_raw, "redeemed")
    try:
        classification = Classification.build(
            raw.get("classes", []), raw.get("parameters", {}), raw.get("environment", "")
        )
    except InvalidRequest as exc:
        raise ValueError(str(exc)) from None
    return Registration(certname, created, expires, digest, classification, redeemed)


# --- redemption ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Redemption:
    """The outcome of presenting a token: ``ok`` (and now used up), or why not."""

    ok: bool
    reason: str
    record: Registration | None = None


def check_token(record: Registration | None, token: str | None, now: dt.datetime) -> str | None:
    """Why *token* does not enroll *record*'s machine now, or None if it does."""
    if record is None:
        return "no registration"
    if record.redeemed is not None:
        return "token already used"
    if now >= record.expires:
        return "registration expired"
    if not token:
        return "no challengePassword"
    if not hmac.compare_digest(hash_token(token), record.token_sha256):
        return "bad token"
    return None


# --- backends -----------------------------------------------------------------------------


class Registry(Protocol):
    """Where registrations live. Read-only backends raise Conflict on writes."""

    @property
    def location(self) -> str: ...

    def get(self, certname: str) -> Registration | None: ...

    def add(self, record: Registration, *, replace: bool = False) -> None: ...

    def remove(self, certname: str) -> None: ...

    def records(self) -> Iterator[Registration]: ...

    def redeem(self, certname: str, token: str | None, now: dt.datetime) -> Redemption: ...


def checked_name(certname: str) -> str:
    """Refuse names that are not certnames before they reach a path, URL or object key."""
    if problem := pki.certname_problem(certname):
        raise InvalidRequest(f"{certname!r} is not a valid certname: {problem}")
    return certname


def describe_location(location: str) -> str:
    """A registry location fit for logs: no ``user:password@`` in URLs."""
    return re.sub(r"^(https?://)[^/@]*@", r"\1", location)
