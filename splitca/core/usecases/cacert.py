"""Use cases for the CA certificate itself: status and expiry, renewal with the same key, key encryption."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca import pki
from splitca.config import MAX_TTL
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.common import Deps
from splitca.errors import ConfigError, Conflict, InvalidRequest, StoreError

__all__ = [
    "CACertStatus",
    "CAStatus",
    "RenewResult",
    "encrypt_key",
    "log_status",
    "renew",
    "status",
]

log = logging.getLogger(__name__)
DOCS = "docs/ca-lifecycle.md"


@dataclass(frozen=True)
class CACertStatus:
    """One certificate of the CA bundle, as ``splitca ca status`` shows it."""

    subject: str
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    seconds_left: int
    key_type: str
    key_size: int
    self_signed: bool
    signing_key: bool | None  # holds the CA's signing key (None: the key could not be read)
    sha256: str
    warning: str | None = None

    @property
    def days_left(self) -> int:
        return self.seconds_left // 86400

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": pki.puppet_time(self.not_before),
            "not_after": pki.puppet_time(self.not_after),
            "days_left": self.days_left,
            "key_type": self.key_type,
            "key_size": self.key_size,
            "self_signed": self.self_signed,
            "signing_key": self.signing_key,
            "sha256": self.sha256,
            "warning": self.warning,
        }


@dataclass(frozen=True)
class CAStatus:
    """Every certificate of the CA bundle, in bundle order, against a warning horizon."""

    certificates: list[CACertStatus]
    horizon: dt.timedelta
    key_encrypted: bool | None  # None: the key file could not be read
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [c.warning for c in self.certificates if c.warning] + self.notes

    @property
    def expiring(self) -> bool:
        """Whether any certificate expires within the horizon (or has expired)."""
        return any(c.warning for c in self.certificates)

    def as_dict(self) -> dict[str, object]:
        return {
            "horizon_days": self.horizon.days,
            "key_encrypted": self.key_encrypted,
            "expiring": self.expiring,
            "certificates": [c.as_dict() for c in self.certificates],
            "warnings": self.warnings,
        }


def status(d: Deps, *, horizon: dt.timedelta | None = None) -> CAStatus:
    """Each certificate of the CA bundle with its validity and key, warned within *horizon*.

    *horizon* defaults to the ``ca_expiry_warning`` setting. The signing key is looked at
    only to say which certificate holds it: an encrypted key without its passphrase makes
    that unknown (``signing_key`` None), not an error, so monitoring needs no secret.
    """
    horizon = horizon if horizon is not None else d.settings.ca_expiry_warning
    now = d.clock()
    certs = pki.load_certificates(d.store.ca_cert().data)
    if not certs:
        raise StoreError("the CA certificate bundle (ca_crt.pem) holds no certificate")
    notes: list[str] = []
    try:
        encrypted: bool | None = pki.is_encrypted_key(d.store.ca_key())
    except StoreError:  # a monitoring user may read the certificate, not the key
        encrypted = None
    try:
        signing: x509.Certificate | None = d.signer.current().certificate
    except (ConfigError, StoreError) as exc:
        signing = None
        notes.append(f"cannot tell which certificate holds the signing key: {exc}")
    if d.settings.encrypt_ca_key and encrypted is False:
        notes.append(
            "encrypt_ca_key is set but the CA key is stored unencrypted: "
            "run 'splitca ca encrypt-key'"
        )
    spki = None if signing is None else _spki(signing)
    rows = [_row(c, now, horizon, spki) for c in certs]
    ttl = d.settings.cert_ttl
    if signing is not None and ttl is not None and signing.not_valid_after_utc < now + ttl:
        notes.append(
            f"the signing CA certificate ends on {pki.puppet_time(signing.not_valid_after_utc)}, "
            f"sooner than cert_ttl ({ttl.days}d): certificates issued now are cut short to that "
            "date; 'splitca ca renew' extends it"
        )
    return CAStatus(rows, horizon, encrypted, notes)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _row(
    cert: x509.Certificate,
    now: dt.datetime,
    horizon: dt.timedelta,
    spki: bytes | None,
) -> CACertStatus:
    key_type, key_size = pki.describe_key(cert.public_key())
    left = cert.not_valid_after_utc - now
    subject = cert.subject.rfc4514_string()
    when = pki.puppet_time(cert.not_valid_after_utc)
    holds_key = None if spki is None else _spki(cert) == spki
    fix = (
        "run 'splitca ca renew' (same key: every issued certificate stays valid)"
        if pki.is_self_issued(cert)
        else f"have {cert.issuer.rfc4514_string()} re-issue it for the same key"
    )
    warning = None
    if left.total_seconds() <= 0:
        warning = f"CA certificate {subject} EXPIRED on {when}: {fix}; see {DOCS}"
    elif left <= horizon:
        warning = (
            f"CA certificate {subject} expires in {left.days} days (on {when}): {fix}; see {DOCS}"
        )
    return CACertStatus(
        subject=subject,
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        seconds_left=int(left.total_seconds()),
        key_type=key_type,
        key_size=key_size,
        self_signed=pki.is_self_issued(cert),
        signing_key=holds_key,
        sha256=pki.fingerprints(pki.der(cert))["SHA256"],
        warning=warning,
    )


def log_status(d: Deps) -> CAStatus:
    """Log the CA bundle's expiry (``splitca serve`` at start): a warning within the horizon."""
    report = status(d)
    for c in report.certificates:
        log.info(
            "CA certificate %s (serial %d, %s %d) valid until %s (%d days)",
            c.subject,
            c.serial,
            c.key_type,
            c.key_size,
            pki.puppet_time(c.not_after),
            c.days_left,
        )
    for warning in report.warnings:
        log.warning("%s", warning)
    return report


SERIAL_CHOICES = ("auto", "keep", "new")


@dataclass(frozen=True)
class RenewResult:
    old: x509.Certificate
    new: x509.Certificate
    bundle: bytes
    kept_serial: str | None  # why the old serial was kept (None: a new one was taken)


def renew(
    d: Deps,
    *,
    validity: dt.timedelta | None = None,
    serial: str = "auto",
    actor: Actor = SYSTEM,
) -> RenewResult:
    """Re-issue the signing CA certificate with the same key, subject and extensions.

    A validity of *validity* (default ``ca_ttl``) from now (backdated like every
    certificate), installed atomically in place of the old certificate in the served
    bundle (other certificates of the bundle kept, in order). Every certificate the CA
    issued verifies against the new one, and a running server signs with it from its
    next request (the Signer reloads).

    *serial*: ``new`` takes one from the store's serial space; ``keep`` re-uses the old
    certificate's, which certificates naming the CA by issuer and serial in their
    Authority Key Identifier need (puppetserver's and the Ruby CA's do: with another
    serial, OpenSSL no longer finds their issuer); ``auto`` keeps it if any signed
    certificate of the store does that, else takes a new one.

    Raises:
      Conflict: the signing certificate is not self-signed (an intermediate: its issuer
        must re-issue it).
      InvalidRequest: *validity* is over 50 years or would shorten the CA's life.
    """
    if serial not in SERIAL_CHOICES:
        raise InvalidRequest(f"--serial: must be one of {', '.join(SERIAL_CHOICES)}")
    validity = validity if validity is not None else d.settings.ca_ttl
    if validity > MAX_TTL:
        raise InvalidRequest("--validity: must be at most 50 years")
    with d.store.locked("setup"):
        key = d.signer.current()
        old = key.certificate
        if not pki.is_self_issued(old):
            raise Conflict(
                f"the signing CA certificate {old.subject.rfc4514_string()} is issued by "
                f"{old.issuer.rfc4514_string()}: only its issuer can renew it (for the same "
                f"key); install the result with the rest of the chain. See {DOCS}"
            )
        now = d.clock().replace(microsecond=0)
        not_before, not_after = now - d.settings.backdate, now + validity
        if not_after <= old.not_valid_after_utc:
            raise InvalidRequest(
                f"--validity {validity.days}d would end the CA on {pki.puppet_time(not_after)}, "
                f"not after its current end {pki.puppet_time(old.not_valid_after_utc)}"
            )
        kept = _why_keep_serial(d, old, serial)
        reservation = None
        if kept is None:
            name = pki.first_cn(old.subject) or ""
            reservation = d.store.reserve_serial(name, not_before, not_after)
        number = old.serial_number if reservation is None else reservation.serial
        new = key.renew_ca(serial=number, not_before=not_before, not_after=not_after)
        bundle = pki.load_certificates(d.store.ca_cert().data)
        pem = b"".join(pki.pem(new if c == old else c) for c in bundle)
        d.store.publish_ca_cert(pem, reservation)
        d.audit.event(
            "ca-renew",
            actor,
            subject=old.subject.rfc4514_string(),
            old_serial=old.serial_number,
            serial=new.serial_number,
            kept_serial=kept,
            not_after=pki.puppet_time(not_after),
            sha256=pki.fingerprints(pki.der(new))["SHA256"],
        )
    log.info("Renewed the CA certificate (serial %d) until %s", new.serial_number, not_after)
    return RenewResult(old, new, pem, kept)


def _why_keep_serial(d: Deps, old: x509.Certificate, choice: str) -> str | None:
    """Why the renewed certificate keeps *old*'s serial (None: it gets a new one)."""
    if choice == "keep":
        return "--serial keep"
    if choice == "new":
        return None
    for row in d.store.statuses("signed"):
        blob = d.store.cert(row.name)
        if blob is None:
            continue
        try:
            cert = pki.load_certificates(blob.data)[0]
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except (ValueError, IndexError, x509.ExtensionNotFound):
            continue
        if aki.authority_cert_serial_number == old.serial_number:
            return (
                f"{row.name}'s certificate (like every certificate puppetserver issued) names "
                f"the CA by its serial {old.serial_number} in its Authority Key Identifier"
            )
    return None


def encrypt_key(d: Deps, passphrase: bytes, *, actor: Actor = SYSTEM) -> None:
    """Re-encode the stored CA key encrypted with *passphrase* (PKCS#8), atomically.

    The result is decrypted and compared with the key before it replaces the file, so
    a key that cannot be read back never lands.

    Raises:
      Conflict: the key is already encrypted.
    """
    with d.store.locked("setup"):
        data = d.store.ca_key()
        if pki.is_encrypted_key(data):
            raise Conflict("the CA key is already encrypted; nothing changed")
        key = pki.load_private_key(data)
        sealed = pki.private_key_pem(key, passphrase)
        back = pki.load_private_key(sealed, passphrase)
        if pki.public_key_pem(back.public_key()) != pki.public_key_pem(key.public_key()):
            raise Conflict("the encrypted key did not read back as the CA key; nothing changed")
        d.store.replace_ca_key(sealed)
        d.audit.event("ca-encrypt-key", actor)
