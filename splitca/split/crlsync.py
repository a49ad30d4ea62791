"""CRL sync for compile masters: fetch, verify against the pinned CA, install atomically, reload on change."""
# Over 400 lines because the pure verification and the sync that installs a verified CRL share their types (the reload is split/reload.py).

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from splitca import fs, pki
from splitca.clock import utcnow
from splitca.errors import (
    ConfigError,
    CRLRejected,
    CRLStale,
    RemoteError,
    ResponseTooLarge,
    SplitCAError,
)
from splitca.split.client import HTTPClient
from splitca.split.reload import run_reload

__all__ = [
    "CHECKS",
    "DEFAULT_RELOAD_COMMAND",
    "SyncConfig",
    "SyncResult",
    "check_crl_file",
    "installed_state",
    "sync_once",
    "upper_warnings",
    "verify_crl",
    "watch",
]

log = logging.getLogger(
    "splitca.crlsync"
)  # the name operators filter on, from before the split/ folder

# The system Apache's graceful restart; confirmed through its PidFile (--apache-pidfile).
DEFAULT_RELOAD_COMMAND = ("apachectl", "graceful")

# How the CA tells a compile master's sync from an agent's CRL fetch: it records which CRL
# each master has (``splitca masters``) when the request also carries the master's certificate.
SYNC_USER_AGENT = "splitca-sync-crl"

# Every check a fetched CRL must pass, in the order they run; CRLRejected.check is one.
CHECKS = {
    "size": "the answer is larger than --max-bytes",
    "parse": "the answer is not PEM CRLs and nothing else",
    "issuer": "a CRL's issuer is not a CA in the pinned --ca-cert",
    "signature": "a CRL's signature does not verify with the pinned CA's key",
    "duplicate": "two CRLs from the same issuer",
    "incomplete": "no CRL for a CA in the pinned --ca-cert (Apache's 'chain' check needs one each)",
    "not-yet-valid": "a CRL's thisUpdate is in the future (Apache would refuse every agent)",
    "expired": "a CRL's nextUpdate is missing or in the past",
    "crl-number": "a CRL's number is lower than the installed one's (a replayed or rolled-back CRL)",
}
STRONG_VALIDATOR_AGE = dt.timedelta(seconds=60)  # RFC 9110 8.8.2.2


def _reject(check: str, message: str) -> CRLRejected:
    return CRLRejected(check, f"CRL rejected ({check}): {message}")


# --- pure verification ----------------------------------------------------------------------


def parse_crls(
    data: bytes, *, what: str = "the CA's answer"
) -> list[x509.CertificateRevocationList]:
    """Every CRL in *data*, which must be PEM ``X509 CRL`` blocks and whitespace only.

    Raises:
      CRLRejected: check ``parse``, for anything wrong with *data* (named *what*),
        including any error cryptography raises while parsing it.
    """
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        raise _reject("parse", f"{what} is not PEM text") from None
    spans = pki.pem_spans(data)
    blocks = [(label, data[start:end]) for label, start, end in spans]
    if not blocks:
        raise _reject("parse", f"{what} holds no PEM CRL")
    labels = sorted({label for label, _ in blocks if label != "X509 CRL"})
    if labels:
        raise _reject("parse", f"{what} holds PEM {', '.join(labels)}, not only CRLs")
    if pki.outside_pem(data, spans).strip():
        raise _reject("parse", f"{what} has text outside its PEM CRL blocks")
    crls = []
    for _, block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
            # Force parsing of every lazy field the checks use, now: cryptography raises
            # more than ValueError here (DuplicateExtension, UnsupportedGeneralNameType,
            # ...), and whatever it raises, the CRL is unusable, never a crash.
            crl.issuer  # noqa: B018
            crl.extensions  # noqa: B018
            pki.crl_number(crl)
            crl.last_update_utc  # noqa: B018
            crl.next_update_utc  # noqa: B018
        except Exception as exc:
            raise _reject("parse", f"{what} holds a CRL that does not parse: {_why(exc)}") from None
        crls.append(crl)
    return crls


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _signed_by(crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return True
        except Exception:  # an unsupported key or algorithm: not signed by this CA
            continue
    return False


def _by_subject(cas: Sequence[x509.Certificate]) -> dict[x509.Name, list[x509.Certificate]]:
    out: dict[x509.Name, list[x509.Certificate]] = {}
    for ca in cas:
        out.setdefault(ca.subject, []).append(ca)
    return out


def trusted_crls(
    data: bytes | None, cas: Sequence[x509.Certificate]
) -> dict[x509.Name, x509.CertificateRevocationList]:
    """The CRLs in an *installed* file that verify against the pinned CAs (others ignored).

    A file that does not parse (garbage, a truncated write, a CRL cryptography refuses
    such as one with a duplicated extension) counts as holding no CRL: a verified CRL
    from the CA may replace it, which is what repairs it. Its CRL number is unknown, so
    the rollback check has nothing to compare with; the new CRL still passes every
    other check (pinned issuer and signature, dates). Refusing instead would leave
    Apache with a file it cannot load until someone deletes it by hand.
    """
    if not data:
        return {}
    try:
        crls = parse_crls(data, what="the installed file")
    except CRLRejected:
        return {}
    pinned = _by_subject(cas)
    out: dict[x509.Name, x509.CertificateRevocationList] = {}
    for crl in crls:
        if crl.issuer in pinned and _signed_by(crl, pinned[crl.issuer]):
            best = out.get(crl.issuer)
            if best is None or pki.crl_number(crl) > pki.crl_number(best):
                out[crl.issuer] = crl
    return out


@dataclass(frozen=True)
class VerifiedCRL:
    """A CRL file that passed every check."""

    data: bytes
    numbers: dict[str, int]  # issuer (RFC 4514) -> CRL number
    next_update: dt.datetime  # the earliest nextUpdate of its CRLs
    this_update: dt.datetime  # the latest thisUpdate

    @property
    def number(self) -> int:
        """The CRL number to report: the highest (one issuer for a flat Puppet CA)."""
        return max(self.numbers.values())


def verify_crl(
    data: bytes,
    cas: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    installed: Sequence[bytes | None] = (),
    allow_rollback: bool = False,
) -> VerifiedCRL:
    """Check a CRL file fetched from the CA before anything is installed.

    Args:
      data: the CA's answer, as received (decoded from its content coding).
      cas: the pinned CA certificates (``--ca-cert``), trusted for nothing else.
      now: the current time.
      installed: the contents of the files about to be replaced; a CRL number lower
        than theirs (for the same issuer) is refused unless *allow_rollback*.

    The file returned (``VerifiedCRL.data``) is not *data* but its CRLs written out
    again, in order, as canonical PEM: the armor around the signed DER is not signed,
    and armor cryptography reads but OpenSSL's file loader (mod_ssl's
    SSLCARevocationFile) does not, an indented BEGIN line or a PEM header, would make
    Apache refuse to start on the next reload. Every check runs on the CRLs that file holds.

    Raises:
      CRLRejected: naming the first failed check (see ``CHECKS``).
    """
    crls = parse_crls(data)
    data = b"".join(pki.pem(crl) for crl in crls)  # each CRL's DER as parsed, armored anew
    pinned = _by_subject(cas)
    seen: dict[x509.Name, x509.CertificateRevocationList] = {}
    for crl in crls:
        issuer = crl.issuer.rfc4514_string()
        if crl.issuer not in pinned:
            raise _reject("issuer", f"the CRL from {issuer!r} is not from a pinned CA")
        if not _signed_by(crl, pinned[crl.issuer]):
            raise _reject(
                "signature", f"the CRL claiming issuer {issuer!r} is not signed by the pinned CA"
            )
        if crl.issuer in seen:
            raise _reject("duplicate", f"the answer holds two CRLs from {issuer!r}")
        seen[crl.issuer] = crl
    missing = [name.rfc4514_string() for name in pinned if name not in seen]
    if missing:
        raise _reject("incomplete", f"the answer has no CRL for {', '.join(missing)}")
    for crl in crls:
        issuer = crl.issuer.rfc4514_string()
        # No allowance for clock skew: OpenSSL has none, and Apache refuses every agent
        # while its CRL's thisUpdate is in the future. A later run installs it.
        if crl.last_update_utc > now:
            ahead = crl.last_update_utc - now
            words = f"{ahead.seconds} seconds" if ahead < dt.timedelta(minutes=2) else None
            raise _reject(
                "not-yet-valid",
                f"the CRL from {issuer!r} is dated {crl.last_update_utc:%Y-%m-%d %H:%M:%S}Z, "
                f"{words or pki.time_left_words(ahead)} ahead of this host's clock "
                "(Apache would refuse every agent until then; is this host's clock right?); "
                "a run after that time installs it",
            )
        nxt = crl.next_update_utc
        if nxt is None:
            raise _reject("expired", f"the CRL from {issuer!r} has no nextUpdate")
        if nxt <= now:
            raise _reject("expired", f"the CRL from {issuer!r} expired at {nxt:%Y-%m-%d %H:%M:%S}Z")
    if not allow_rollback:
        for content in installed:
            for name, old in trusted_crls(content, cas).items():
                new = seen.get(name)
                if new is None:
                    continue
                old_n, new_n = pki.crl_number(old), pki.crl_number(new)
                issuer = name.rfc4514_string()
                if new_n < old_n:
                    raise _reject(
                        "crl-number",
                        f"the CA sent CRL number {new_n} from {issuer!r} but number {old_n} is "
                        "installed; refusing to roll back (a replayed old CRL would re-admit "
                        "revoked agents)",
                    )
                if new_n == old_n and pki.der(new) != pki.der(old):
                    raise _reject(
                        "crl-number",
                        f"the CA sent a different CRL with the same number {new_n} as the "
                        f"installed one from {issuer!r}",
                    )
    return VerifiedCRL(
        data=data,
        numbers={n.rfc4514_string(): pki.crl_number(c) for n, c in seen.items()},
        next_update=min(c.next_update_utc for c in crls if c.next_update_utc is not None),
        this_update=max(c.last_update_utc for c in crls),
    )


@dataclass(frozen=True)
class Freshness:
    """How long the installed CRL stays usable, and when to start shouting."""

    number: int | None
    next_update: dt.datetime | None
    warn_at: dt.datetime | None

    def stale(self, now: dt.datetime) -> bool:
        return self.warn_at is None or now >= self.warn_at

    def describe(self, now: dt.datetime) -> str:
        if self.next_update is None:
            return "no valid CRL from the pinned CA is installed"
        left = self.next_update - now
        if left <= dt.timedelta(0):
            return (
                f"the installed CRL (number {self.number}) EXPIRED at "
                f"{self.next_update:%Y-%m-%d %H:%M}Z: Apache now refuses every agent"
            )
        return (
            f"the installed CRL (number {self.number}) expires at "
            f"{self.next_update:%Y-%m-%d %H:%M}Z, in {pki.time_left_words(left)}"
        )


def installed_state(
    data: bytes | None, cas: Sequence[x509.Certificate], *, warn_before: dt.timedelta | None
) -> Freshness:
    """Freshness of an installed CRL file. Without *warn_before*, warn in its last quarter.

    The signing CA re-issues its CRL often, so its CRL going stale means the CA (or this
    sync) is failing. The CRLs of the CAs above it (the root's, re-issued by hand where
    its key is) count only once they expire; before that :func:`upper_warnings` warns.
    """
    trusted = trusted_crls(data, cas)
    crls = list(trusted.values())
    if not crls or any(c.next_update_utc is None for c in crls):
        return Freshness(None, None, None)
    issuing = pki.signing_certificate(cas)
    own = [c for name, c in trusted.items() if issuing is None or name == issuing.subject]
    deadlines = []
    for crl in crls:
        nxt = crl.next_update_utc
        assert nxt is not None
        if crl in own or not own:
            margin = warn_before if warn_before is not None else (nxt - crl.last_update_utc) / 4
            deadlines.append((nxt - margin, nxt))
        else:
            deadlines.append((nxt, nxt))
    warn_at = min(w for w, _ in deadlines)
    return Freshness(max(pki.crl_number(c) for c in crls), min(n for _, n in deadlines), warn_at)


def upper_warnings(
    data: bytes | None,
    cas: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    warn_before: dt.timedelta | None,
) -> list[str]:
    """A line for each CRL of a CA above the signing one (the root's) that nears its nextUpdate.

    Flagged *warn_before* ahead, else a quarter of its lifetime ahead, at most 60 days
    (:func:`splitca.pki.crl_warn_before`): it is re-issued by hand, on the root's machine.
    """
    issuing = pki.signing_certificate(cas)
    out = []
    for name, crl in trusted_crls(data, cas).items():
        nxt = crl.next_update_utc
        if issuing is None or name == issuing.subject or nxt is None:
            continue
        margin = (
            warn_before
            if warn_before is not None
            else pki.crl_warn_before(crl.last_update_utc, nxt)
        )
        if now >= nxt - margin:
            out.append(
                f"the CRL of the CA {name.rfc4514_string()!r} (number {pki.crl_number(crl)}) "
                f"expires at {nxt:%Y-%m-%d %H:%M}Z, in {pki.time_left_words(nxt - now)}; once it does, Apache "
                "refuses every agent. Re-issue it where that CA's key is ('splitca ca root-crl') "
                "and install it on the CA ('splitca crl install-root')"
            )
    return out


def usable_validator(last_modified: str | None, date: str | None) -> str | None:
    """A Last-Modified worth sending back as If-Modified-Since, or None.

    The CA compares whole seconds of the file's mtime, so a CRL re-issued in the same
    second as the copy we got would look unmodified. A Last-Modified at least a minute
    older than the response's Date cannot have that problem (RFC 9110's rule for a
    strong date validator).
    """
    if not last_modified or not date:
        return None
    try:
        lm = email.utils.parsedate_to_datetime(last_modified)
        d = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if lm.tzinfo is None or d.tzinfo is None:
        return None
    return last_modified if d - lm >= STRONG_VALIDATOR_AGE else None


# --- the sync, with its I/O --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """What ``splitca sync-crl`` was told to do."""

    ca_url: str
    ca_cert: Path
    destinations: tuple[Path, ...]
    client_cert: Path | None = None
    client_key: Path | None = None
    legacy_environment: str | None = None
    timeout: float = 30.0
    max_bytes: int = 16 * 1024 * 1024
    reload_command: tuple[str, ...] = DEFAULT_RELOAD_COMMAND
    reload_timeout: float = 120.0
    # The PidFile of the Apache that serves the CRL: reload only while it runs, and count
    # the reload as done only once it re-read its configuration. None: exit 0 is enough.
    apache_pidfile: Path | None = None
    force_reload: bool = False
    warn_before: dt.timedelta | None = None
    state_file: Path | None = None
    conditional: bool = True
    allow_rollback: bool = False

    def __post_init__(self) -> None:
        if not self.destinations:
            raise ConfigError("give at least one --dest")
        if len(set(self.destinations)) != len(self.destinations):
            raise ConfigError("--dest: the same file is named twice")
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError("--client-cert and --client-key go together")
        if not 1 <= self.timeout <= 600:
            raise ConfigError("--timeout: must be 1 to 600 seconds")
        if not 1 <= self.reload_timeout <= 3600:
            raise ConfigError("--reload-timeout: must be 1 to 3600 seconds")
        if self.force_reload and not self.reload_command:
            raise ConfigError("--force-reload: there is no reload command (--no-reload)")
        if not 1024 <= self.max_bytes <= 1024**3:
            raise ConfigError("--max-bytes: must be 1024 to 1073741824")
        if self.legacy_environment is not None and not self.legacy_environment.isidentifier():
            raise ConfigError("--legacy-environment: must be a Puppet environment name")

    @property
    def effective_state_file(self) -> Path:
        first = self.destinations[0]
        return self.state_file or first.with_name(f".{first.name}.sync-state")


@dataclass(frozen=True)
class SyncResult:
    """One sync that did not fail: ``changed`` lists the files rewritten."""

    outcome: str  # "unchanged" | "updated"
    url: str
    number: int | None
    next_update: dt.datetime | None
    changed: tuple[Path, ...]
    reloaded: bool
    forced: bool = False  # reloaded because of --force-reload, not because of a change
    warnings: tuple[str, ...] = ()  # CRLs of the CAs above the signing one nearing nextUpdate

    def describe(self) -> str:
        when = f", next update {self.next_update:%Y-%m-%d %H:%M}Z" if self.next_update else ""
        if self.outcome == "updated" and not self.changed and self.forced:
            return f"CRL number {self.number}{when} was in place; reloaded (--force-reload)"
        if self.outcome == "updated" and not self.changed:
            return f"CRL number {self.number}{when} was in place but not loaded; reloaded"
        if self.outcome == "updated":
            files = ", ".join(str(p) for p in self.changed)
            tail = "; reloaded" if self.reloaded else ""
            return f"Installed CRL number {self.number}{when} to {files}{tail}"
        return f"CRL number {self.number} is current{when}; nothing changed"

    def as_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "url": self.url,
            "crl_number": self.number,
            "next_update": self.next_update.isoformat() if self.next_update else None,
            "changed": [str(p) for p in self.changed],
            "reloaded": self.reloaded,
            "warnings": list(self.warnings),
        }  # `splitca sync-crl --format json` adds its exit_code (cli._base.Outcome)


def load_pinned(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--ca-cert: cannot read {path}: {exc.strerror or exc}") from None
    try:
        certs = pki.load_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"--ca-cert: {path} holds a certificate that does not parse: {exc}"
        ) from None
    if not certs:
        raise ConfigError(f"--ca-cert: {path} holds no PEM certificate")
    return certs


def check_crl_file(crl: Path, ca_cert: Path, *, now: dt.datetime) -> None:
    """Check what ``apache2 -t`` does not: that mod_ssl can use the CRL file *crl* with
    the CAs in *ca_cert* once Apache starts (``apache-config --check``).

    Raises:
      ConfigError: OpenSSL's file loader (mod_ssl's, at every start and reload) cannot read
        *crl*, so Apache would not start; or it holds no current CRL of every CA, so Apache
        would refuse every agent (the message names the failed check, as sync-crl does).
    """
    cas = load_pinned(ca_cert)
    try:
        data = crl.read_bytes()
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(crl))
    except OSError as exc:  # ssl.SSLError is one
        why = (exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror) or exc
        raise ConfigError(
            f"--crl: {crl} cannot be loaded ({why}): Apache would not start; install the "
            "CA's CRL there with 'splitca sync-crl'"
        ) from None
    try:
        verify_crl(data, cas, now=now)
    except CRLRejected as exc:
        raise ConfigError(
            f"--crl: {crl}: {exc}: Apache would refuse every agent; install the CA's current "
            "CRL there with 'splitca sync-crl'"
        ) from None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"--dest: cannot read {path}: {exc.strerror or exc}") from None


def _sha256(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def _load_state(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def _save_state(path: Path, state: dict[str, str]) -> None:
    try:
        fs.atomic_write(path, json.dumps(state, sort_keys=True).encode() + b"\n", mode=0o644)
    except SplitCAError as exc:  # only an optimisation: never fail the sync for it
        log.warning("could not save %s: %s", path, exc)


def sync_once(
    cfg: SyncConfig,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    reload: Callable[[Sequence[str], float, Path | None], None] = run_reload,
) -> SyncResult:
    """Fetch, verify, install where different, reload if anything changed.

    Raises:
      ConfigError: bad arguments or an unreadable --ca-cert (nothing was fetched).
      RemoteError: the CA could not be reached or answered an error (installed CRL kept).
      CRLRejected: the CA's CRL failed a check (installed CRL kept).
      CRLStale: a fresh CRL could not be had and the installed one is expired or close to
        it; also raised after installing a CRL that itself expires soon.
      StoreError: a destination could not be written.
      LockTimeout: another sync of the same files did not finish in time.
      ReloadFailed: the CRL was installed but the reload failed or could not be
        confirmed; it stays pending (the state is not saved) and the next run retries.
    """
    cas = load_pinned(cfg.ca_cert)
    state_path = cfg.effective_state_file
    # One sync at a time per destination set (a timer run and a manual run, say), so
    # files, state and reloads never interleave. The wait is bounded by one whole sync.
    lock = fs.FileLock(
        state_path.with_name(state_path.name + ".lock"),
        timeout=2 * cfg.timeout + cfg.reload_timeout,
    )
    with lock():
        return _sync_locked(cfg, cas, state_path, clock=clock, reload=reload)


def _sync_locked(
    cfg: SyncConfig,
    cas: list[x509.Certificate],
    state_path: Path,
    *,
    clock: Callable[[], dt.datetime],
    reload: Callable[[Sequence[str], float, Path | None], None],
) -> SyncResult:
    installed = [_read(p) for p in cfg.destinations]
    for path, content in zip(cfg.destinations, installed, strict=True):
        if content:
            try:
                parse_crls(content, what=f"the installed file {path}")
            except CRLRejected as exc:  # one line; a verified CRL may replace it
                why = str(exc).split(": ", 1)[-1]  # without "CRL rejected (parse)"
                log.warning("%s; ignoring it (a verified CRL from the CA will replace it)", why)
    current = installed[0]
    state = _load_state(state_path)
    client_cert = (cfg.client_cert, cfg.client_key) if cfg.client_cert and cfg.client_key else None
    with HTTPClient(
        cfg.ca_url,
        ca_bundle=cfg.ca_cert,
        client_cert=client_cert,
        timeout=cfg.timeout,
        max_bytes=cfg.max_bytes,
        user_agent=SYNC_USER_AGENT,
    ) as client:
        url = client.crl_url(cfg.legacy_environment)
        since = None
        if (
            cfg.conditional
            and not cfg.force_reload  # a 304 would leave nothing to reload with
            # nor to roll back to: a CA restored from a backup may keep its CRL's old mtime
            and not cfg.allow_rollback
            and state.get("url") == url
            and current is not None
            and all(c == current for c in installed)
            and state.get("sha256") == _sha256(current)
            # Only while it is fresh: the CA's Last-Modified is its file's mtime, which can
            # go back (its clock stepped back, a restored file, HA nodes' clocks), and a 304
            # then must not keep an expiring CRL in place while the CA has a newer one.
            and not installed_state(current, cas, warn_before=cfg.warn_before).stale(clock())
        ):
            since = state.get("last_modified")
        # --timeout bounds the whole answer: fetched (the client's own deadline), then
        # parsed and verified (checked below; parsing is linear in the bounded size).
        deadline = time.monotonic() + cfg.timeout
        try:
            try:
                fetched = client.get(url, if_modified_since=since)
            except ResponseTooLarge as exc:
                raise _reject("size", str(exc)) from None
            now = clock()
            if fetched.body is None:  # 304: what we have is what the CA has
                fresh = installed_state(current, cas, warn_before=cfg.warn_before)
                if fresh.stale(now):  # it turned stale during the request
                    raise CRLStale(
                        f"{fresh.describe(now)}, and the CA has nothing newer: run "
                        "'splitca crl refresh' on the CA"
                    )
                return SyncResult(
                    "unchanged",
                    url,
                    fresh.number,
                    fresh.next_update,
                    (),
                    False,
                    warnings=_warn(current, cas, now, cfg.warn_before),
                )
            verified = verify_crl(
                fetched.body, cas, now=now, installed=installed, allow_rollback=cfg.allow_rollback
            )
            if time.monotonic() > deadline:
                raise RemoteError(
                    f"{url}: fetching and verifying its CRL took longer than --timeout "
                    f"{cfg.timeout:g}s; nothing was installed"
                )
        except (RemoteError, CRLRejected) as exc:
            now = clock()
            fresh = installed_state(current, cas, warn_before=cfg.warn_before)
            if fresh.stale(now):
                raise CRLStale(
                    f"{fresh.describe(now)}, and no fresh CRL could be had: {exc}"
                ) from exc
            raise
    changed = tuple(
        p for p, c in zip(cfg.destinations, installed, strict=True) if c != verified.data
    )
    for path in changed:
        fs.atomic_write(path, verified.data, mode=0o644)
        log.info("installed CRL number %d to %s", verified.number, path)
    # Reload when we wrote a file, and also when the file already held this CRL but
    # not because of us (the master's own puppet agent refreshes hostcrl, say): the
    # running Apache still has whatever it read at its last (re)start.
    digest = _sha256(verified.data)
    must_reload = bool(changed) or state.get("sha256") != digest or cfg.force_reload
    reloaded = False
    if must_reload and cfg.reload_command:
        # The state records a CRL only once a reload of it is confirmed: on ReloadFailed
        # it is not saved, so the reload stays pending and the next run retries it, even
        # if the CRL did not change (and without a conditional GET, which needs the state).
        reload(cfg.reload_command, cfg.reload_timeout, cfg.apache_pidfile)
        reloaded = True
    new_state = {"url": url, "sha256": digest}
    validator = usable_validator(fetched.last_modified, fetched.date)
    if validator:
        new_state["last_modified"] = validator
    if new_state != state:
        _save_state(state_path, new_state)
    result = SyncResult(
        "updated" if changed or reloaded else "unchanged",
        url,
        verified.number,
        verified.next_update,
        changed,
        reloaded,
        forced=reloaded and not changed and cfg.force_reload and state.get("sha256") == digest,
        warnings=_warn(verified.data, cas, now, cfg.warn_before),
    )
    fresh = installed_state(verified.data, cas, warn_before=cfg.warn_before)
    if fresh.stale(now):
        raise CRLStale(
            f"{result.describe()}, but {fresh.describe(now)}: the CA is not re-issuing its "
            "CRL; run 'splitca crl refresh' on the CA (and check its timer)"
        )
    return result


def _warn(
    data: bytes | None,
    cas: Sequence[x509.Certificate],
    now: dt.datetime,
    warn_before: dt.timedelta | None,
) -> tuple[str, ...]:
    return tuple(upper_warnings(data, cas, now=now, warn_before=warn_before))


def watch(
    cfg: SyncConfig,
    interval: float,
    *,
    stop: threading.Event,
    report: Callable[[SyncResult | SplitCAError], None],
    clock: Callable[[], dt.datetime] = utcnow,
) -> None:
    """Sync every *interval* seconds until *stop* is set; failures are reported, not fatal.

    A ConfigError (bad arguments, unreadable --ca-cert) is raised at once: repeating
    it would only fill the log.
    """
    while not stop.is_set():
        try:
            report(sync_once(cfg, clock=clock))
        except ConfigError:
            raise
        except SplitCAError as exc:
            report(exc)
        stop.wait(interval)
