"""Configuration: one frozen Settings object loaded from YAML, validated, with derived cadir paths."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ipaddress
import re
import socket
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["DEFAULT_CONFIG_PATH", "Settings", "is_loopback_address", "parse_duration"]

DEFAULT_CONFIG_PATH = Path("/etc/splitca/splitca.yaml")

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdy]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
MAX_TTL = dt.timedelta(seconds=1576800000)  # puppetserver's 50-year ceiling
SOCKET_TIMEOUT_MAX = dt.timedelta(hours=1)  # a whole request's time, not an idle session's


def parse_duration(value: object, *, key: str = "duration") -> dt.timedelta:
    """Puppet-style durations: ``90`` (seconds), ``30m``, ``12h``, ``7d``, ``5y``.

    Raises:
      ConfigError: naming *key* when the value is not a duration.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 7d, got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(f"{key}: expected a duration like 90, 30m, 12h, 7d or 5y; got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    if seconds > 1000 * 365 * 86400:  # timedelta overflows long before this is useful
        raise ConfigError(f"{key}: {value!r} is longer than 1000 years")
    return dt.timedelta(seconds=seconds)


def _default_certname() -> str:
    name = socket.getfqdn().lower().rstrip(".")
    return name if name and name != "localhost.localdomain" else "localhost"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the CA and its edges. Documented key by key in docs/configuration.md."""

    # --- the CA and its files ---
    cadir: Path = Path("/etc/puppetlabs/puppetserver/ca")
    certname: str = field(default_factory=_default_certname)
    ca_name: str = ""  # "" -> "Puppet CA: <certname>"
    dns_alt_names: tuple[str, ...] = ("puppet",)
    key_type: str = "rsa"
    key_size: int = 4096
    ec_curve: str = "P-256"
    server_key_type: str = ""  # "" -> key_type; the CA server's TLS key (see docs/performance.md)
    ca_ttl: dt.timedelta = dt.timedelta(days=5 * 365)
    cert_ttl: dt.timedelta | None = None  # None -> ca_ttl, as puppetserver
    backdate: dt.timedelta = dt.timedelta(days=1)
    # --- the CA certificate's own lifecycle (docs/ca-lifecycle.md) ---
    ca_expiry_warning: dt.timedelta = dt.timedelta(days=365)  # `ca status` and serve warn
    encrypt_ca_key: bool = False  # setup writes ca_key.pem encrypted (passphrase below)
    ca_key_passphrase_file: Path | None = None  # None -> $CREDENTIALS_DIRECTORY/<credential>
    ca_key_credential: str = "splitca-ca-key"  # systemd LoadCredential= name
    # --- the store ---
    store: str = ""  # "" -> the file store in cadir; postgresql://user@host:port/dbname
    database_password_file: Path | None = None  # None -> libpq's PGPASSWORD / PGPASSFILE
    database_timeout: dt.timedelta = dt.timedelta(seconds=10)
    # --- CSR policy ---
    autosign: bool | str = (
        False  # false | true | /path/to/autosign.conf | /path/to/exe | "registry"
    )
    autosign_timeout: dt.timedelta = dt.timedelta(seconds=5)
    allow_subject_alt_names: bool = False
    allow_authorization_extensions: bool = False
    allow_duplicate_certs: bool = False
    allow_legacy_signatures: bool = False  # MD5/SHA-1 CSRs (Puppet 2.6 agents)
    min_rsa_bits: int = 2048
    refusal_retention: dt.timedelta = dt.timedelta(days=7)  # refused CSRs shown by `list --refused`
    # --- CRL ---
    crl_ttl: dt.timedelta = dt.timedelta(days=7)
    crl_refresh_margin: dt.timedelta | None = None  # None -> half of crl_ttl
    crl_prune_expired: bool = True
    purge_expired_after: dt.timedelta | None = None  # serve purges these daily (`splitca purge`)
    # --- HTTP ---
    listen: str = "127.0.0.1"
    port: int = 8140
    workers: int = 0  # 0 -> one per CPU
    threads: int = 16
    socket_timeout: dt.timedelta = dt.timedelta(seconds=10)
    max_body_bytes: int = 64 * 1024
    max_buffered_bytes: int = 0  # 0 -> 2 * max_body_bytes * threads, per worker
    admin_certnames: tuple[str, ...] = ()
    legacy_routes: bool = True
    puppet_version: str = "7.23.0"
    allow_auto_renewal: bool = True
    auto_renewal_cert_ttl: dt.timedelta = dt.timedelta(days=90)
    server_cert: Path | None = None  # None -> cadir/server/<certname>.pem, made by setup
    server_key: Path | None = None
    # --- enrollment and audit ---
    registry: str = (
        ""  # "" -> <cadir>/registry ; a directory, an https:// prefix, or s3://bucket/prefix
    )
    registry_ttl: dt.timedelta = dt.timedelta(hours=1)
    registry_timeout: dt.timedelta = dt.timedelta(seconds=5)  # HTTP(S)/S3 registry requests
    registry_negative_ttl: dt.timedelta = dt.timedelta(seconds=10)  # cache of "not registered"
    registry_ca_file: Path | None = None  # CA bundle for an https:// registry (default: system)
    registry_s3_endpoint: str = ""  # "" -> AWS; e.g. http://127.0.0.1:9000 for MinIO
    registry_s3_region: str = ""  # "" -> boto3's default chain
    audit_log: Path | None = None  # None -> <cadir>/audit.log
    log_level: str = "INFO"

    # ----------------------------------------------------------------------------------
    @property
    def effective_ca_name(self) -> str:
        return self.ca_name or f"Puppet CA: {self.certname}"

    @property
    def effective_cert_ttl(self) -> dt.timedelta:
        return self.cert_ttl or self.ca_ttl

    @property
    def effective_crl_refresh_margin(self) -> dt.timedelta:
        return self.crl_refresh_margin or self.crl_ttl / 2

    @property
    def effective_max_buffered_bytes(self) -> int:
        return self.max_buffered_bytes or 2 * self.max_body_bytes * self.threads

    @property
    def effective_audit_log(self) -> Path:
        return self.audit_log or self.cadir / "audit.log"

    @property
    def effective_registry(self) -> str:
        return self.registry or str(self.cadir / "registry")

    @property
    def effective_server_cert(self) -> Path:
        return self.server_cert or self.cadir / "server" / "cert.pem"

    @property
    def effective_server_key(self) -> Path:
        return self.server_key or self.cadir / "server" / "key.pem"

    # ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Load *path* (if given), apply *overrides* (CLI flags), validate.

        Raises:
          ConfigError: naming the file and the bad key.
        """
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"config file {path} does not exist") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of settings at the top level")
            raw.update(loaded)
        for key, value in (overrides or {}).items():
            if value is not None:
                raw[key] = value
        try:
            return cls.from_mapping(raw)
        except ConfigError as exc:
            if path is not None:
                raise ConfigError(f"{path}: {exc}") from None
            raise

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Settings:
        known = _field_types()
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            values[key] = _coerce(key, known[key], value)
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Cross-field checks. Raises ConfigError naming the key."""
        from .pki import certname_problem, parse_alt_names

        if problem := certname_problem(self.certname):
            raise ConfigError(f"certname: {self.certname!r} is invalid: {problem}")
        for key, allowed in (("key_type", ("rsa", "ec")), ("server_key_type", ("", "rsa", "ec"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: must be rsa or ec, got {getattr(self, key)!r}")
        if self.key_type == "rsa" and self.key_size not in (2048, 3072, 4096, 8192):
            raise ConfigError(f"key_size: must be 2048, 3072, 4096 or 8192, got {self.key_size}")
        if self.ec_curve not in ("P-256", "P-384"):
            raise ConfigError(f"ec_curve: must be P-256 or P-384, got {self.ec_curve!r}")
        for key in ("ca_ttl", "cert_ttl", "auto_renewal_cert_ttl"):
            value = getattr(self, key)
            if value is not None and value > MAX_TTL:
                raise ConfigError(f"{key}: must be at most 50 years")
        if self.crl_ttl < dt.timedelta(hours=1):
            raise ConfigError("crl_ttl: must be at least 1h")
        if self.effective_crl_refresh_margin >= self.crl_ttl:
            raise ConfigError("crl_refresh_margin: must be shorter than crl_ttl")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port: must be 1-65535, got {self.port}")
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", self.listen):
                raise ConfigError(f"listen: not an address or host name: {self.listen!r}") from None
        if not 0 <= self.workers <= 64:
            raise ConfigError("workers: must be 0 (one per CPU) to 64")
        if not 1 <= self.threads <= 1000:
            raise ConfigError("threads: must be 1 to 1000")
        if self.socket_timeout > SOCKET_TIMEOUT_MAX:
            # the socket's own timeout: 300y overflowed it on every connection, after start
            raise ConfigError(f"socket_timeout: must be at most 1h, got {self.socket_timeout}")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise ConfigError("max_body_bytes: must be 1024 to 16777216")
        if self.max_buffered_bytes and not self.max_body_bytes <= self.max_buffered_bytes:
            raise ConfigError("max_buffered_bytes: must be 0 (derived) or at least max_body_bytes")
        if not 1024 <= self.min_rsa_bits <= 16384:
            raise ConfigError("min_rsa_bits: must be 1024 to 16384")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level: must be DEBUG, INFO, WARNING or ERROR")
        try:
            parse_alt_names(self.dns_alt_names)
        except ValueError as exc:
            raise ConfigError(f"dns_alt_names: {exc}") from None
        for name in self.admin_certnames:
            if certname_problem(name):
                raise ConfigError(f"admin_certnames: {name!r} is not a valid certname")
        if (
            isinstance(self.autosign, str)
            and self.autosign not in ("registry",)
            and not self.autosign.startswith("/")
        ):
            raise ConfigError(
                "autosign: must be true, false, registry, or an absolute path "
                f"to an autosign.conf or policy executable; got {self.autosign!r}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", self.ca_key_credential) or (
            self.ca_key_credential in (".", "..")
        ):
            raise ConfigError(
                "ca_key_credential: must be a credential name (letters, digits, _ . -), "
                f"got {self.ca_key_credential!r}"
            )
        if any(c in self.ca_name for c in "\n\r\x00"):
            raise ConfigError("ca_name: must be one line")
        _validate_registry(self)
        _validate_store(self)


def is_loopback_address(host: str | None) -> bool:
    """True for a literal 127.0.0.0/8 or ::1 address; a name (even ``localhost``) is not trusted."""
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _validate_registry(s: Settings) -> None:
    """The registry location and its knobs (docs/enrollment.md)."""
    reg = s.registry
    if reg.startswith(("http://", "https://")):
        try:
            parts = urllib.parse.urlsplit(reg)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"registry: not a usable URL prefix: {reg!r}: {exc}") from None
        if not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"registry: not a usable URL prefix: {reg!r}")
        # The registry decides which machines are signed: plain HTTP would let anyone on
        # the path enroll machines. Only a loopback address (tests, a local mirror) may.
        if parts.scheme == "http" and not is_loopback_address(parts.hostname):
            shown = re.sub(r"^(http://)[^/@]*@", r"\1", reg)  # no password in the error
            raise ConfigError(
                f"registry: {shown!r} is plain http://; use https:// (plain HTTP "
                "is allowed only to a loopback address such as 127.0.0.1 or [::1])"
            )
    elif reg.startswith("s3://"):
        bucket = reg[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ConfigError(f"registry: {bucket!r} is not a valid S3 bucket name")
    elif reg and not reg.startswith("/"):
        raise ConfigError(
            "registry: must be an absolute directory, an http(s):// URL prefix or "
            f"s3://bucket/prefix; got {reg!r}"
        )
    if s.registry_ttl > dt.timedelta(days=30):
        raise ConfigError("registry_ttl: must be at most 30d (a registration is a short window)")
    if s.registry_timeout > dt.timedelta(seconds=60):
        raise ConfigError("registry_timeout: must be at most 60s (autosign waits for it)")
    if s.registry_negative_ttl > dt.timedelta(minutes=10):
        raise ConfigError("registry_negative_ttl: must be at most 10m")
    if s.registry_s3_endpoint and not s.registry_s3_endpoint.startswith(("http://", "https://")):
        raise ConfigError("registry_s3_endpoint: must be an http:// or https:// URL")
    if s.registry_s3_region and not re.fullmatch(r"[a-z0-9-]{2,32}", s.registry_s3_region):
        raise ConfigError(f"registry_s3_region: not a region name: {s.registry_s3_region!r}")


def _validate_store(s: Settings) -> None:
    """The store location (docs/ha.md): the file store, or a PostgreSQL URL without a password."""
    if not s.store:
        pass
    elif s.store.startswith(("postgresql://", "postgres://")):
        try:
            parts = urllib.parse.urlsplit(s.store)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:  # its text may quote part of the URL: a password, say
            raise ConfigError(
                "store: not a usable URL; expected postgresql://user@host:port/dbname"
            ) from None
        query = urllib.parse.parse_qs(parts.query)
        if parts.password is not None or "password" in query:
            # Never echoed: the URL is in the config file and in error messages.
            raise ConfigError(
                "store: the URL holds a password; put it in database_password_file "
                "(or libpq's PGPASSWORD / PGPASSFILE) instead"
            )
        if not parts.path.strip("/") and "dbname" not in query:
            raise ConfigError(f"store: {s.store!r} names no database (postgresql://user@host/db)")
    else:
        raise ConfigError(
            f"store: must be empty (the file store in cadir) or a postgresql:// URL; got {s.store!r}"
        )
    if s.database_timeout > dt.timedelta(seconds=60):
        raise ConfigError("database_timeout: must be at most 60s (requests wait for it)")


def _optional(hint: object) -> object | None:
    """``X`` for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) == 1 and len(args) == 2:
            return rest[0]
    return None


def _coerce(key: str, hint: object, value: Any) -> Any:
    """Turn a YAML value into the field's type (a real type, from ``typing.get_type_hints``),
    or raise ConfigError naming *key*."""
    inner = _optional(hint)
    if inner is not None:
        return None if value is None else _coerce(key, inner, value)
    if hint is dt.timedelta:
        return parse_duration(value, key=key)
    if hint is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        if "\x00" in str(value):
            raise ConfigError(f"{key}: path contains a NUL byte")
        return Path(value)
    if set(typing.get_args(hint)) == {bool, str} and typing.get_origin(hint) in (
        typing.Union,
        types.UnionType,
    ):
        if isinstance(value, bool | str):
            return value
        raise ConfigError(f"{key}: expected true, false, registry or a path; got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(v.strip() for v in value)
    raise ConfigError(f"{key}: unsupported setting type {hint}")  # pragma: no cover


@functools.cache
def _field_types() -> dict[str, object]:
    """Each Settings field's real type (the annotations are strings: ``from __future__``)."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}
