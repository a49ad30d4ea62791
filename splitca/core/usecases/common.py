"""What every use case is given (store, signer, policy, audit, clock) and the one way to issue."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from splitca import pki
from splitca.config import Settings
from splitca.core.audit import AuditSink
from splitca.core.autosign import Autosigner
from splitca.core.policy import Approved, CsrRules
from splitca.core.ports import CAStore, Signer
from splitca.errors import Conflict, PolicyViolation

__all__ = [
    "RESERVED_PENDING",
    "Deps",
    "cert_fields",
    "issue",
    "refuse_duplicate",
    "refuse_taken",
    "reserved_names",
    "state_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    """The injected collaborators of the use cases. Nothing here is a file or a connection."""

    settings: Settings
    store: CAStore
    signer: Signer
    audit: AuditSink
    clock: Callable[[], dt.datetime]
    rules: CsrRules
    autosigner: Callable[[], Autosigner]


def rules_of(settings: Settings) -> CsrRules:
    return CsrRules(
        allow_subject_alt_names=settings.allow_subject_alt_names,
        allow_authorization_extensions=settings.allow_authorization_extensions,
        allow_legacy_signatures=settings.allow_legacy_signatures,
        min_rsa_bits=settings.min_rsa_bits,
    )


# The pending reason of a CSR for a reserved name (certificate_status ``pending_reason``).
RESERVED_PENDING = "reserved name (CA or admin certname); sign it by hand"


def reserved_names(settings: Settings) -> frozenset[str]:
    """Names never autosigned: their certificates administer the CA."""
    return frozenset((settings.certname, *settings.admin_certnames))


def state_of(d: Deps, certname: str) -> str | None:
    if not pki.is_safe_name(certname):
        return None
    row = d.store.status(certname)
    return None if row is None else row.state


def refuse_taken(d: Deps, certname: str) -> None:
    """Conflict if *certname* already has a certificate or CSR (``generate`` makes new ones)."""
    if (state := state_of(d, certname)) is not None:
        raise Conflict(
            f"{certname} already has a {state} certificate; "
            f"run 'splitca clean {certname}' first to replace it"
        )


def refuse_duplicate(d: Deps, name: str, *, why: str = "") -> None:
    """puppetserver's duplicate-cert rule, unless allow_duplicate_certs.

    *why*: what the autosigner said of a challengePassword that could have replaced the
    certificate (a registration token), added to the message.
    """
    if d.settings.allow_duplicate_certs:
        return
    state = state_of(d, name)
    if state is not None:
        extra = f" (its challengePassword cannot replace it: {why})" if why else ""
        raise PolicyViolation(
            "duplicate-cert",
            name,
            f"{name} already has a {state} certificate; ignoring certificate request{extra}",
        )


def issue(
    d: Deps,
    approved: Approved,
    ttl: dt.timedelta | None,
    *,
    drop_csr: bool,
    before_publish: Callable[[], None] | None = None,
) -> x509.Certificate:
    """Sign *approved* with a fresh serial and publish it; the caller holds the name's lock.

    Everything that can refuse the request is checked before a serial is taken, so a
    request that cannot become a certificate costs no serial. The store records the
    serial before the certificate is built and makes that record durable before the
    certificate is published: a certificate a client has received is always recorded.
    *before_publish* runs once the certificate is signed and before anyone can have it
    (a supersede revokes the name's old certificates there).
    """
    key = d.signer.current()
    now = d.clock().replace(microsecond=0)  # X.509 times have whole seconds
    not_before = now - d.settings.backdate
    not_after = min(
        now + (ttl or d.settings.effective_cert_ttl), key.certificate.not_valid_after_utc
    )
    try:
        tbs = key.prepare_leaf(
            public_key=approved.public_key,
            certname=approved.certname,
            not_before=not_before,
            not_after=not_after,
            alt_names=approved.alt_names,
            extensions=approved.extensions,
        )
    except (ValueError, TypeError) as exc:
        raise PolicyViolation(
            "invalid-csr",
            approved.certname,
            f"Cannot issue a certificate for {approved.certname}: {exc}",
        ) from None
    reservation = d.store.reserve_serial(approved.certname, not_before, not_after)
    cert = key.sign_leaf(tbs, reservation.serial)
    if before_publish is not None:
        before_publish()
    d.store.publish_cert(approved.certname, cert, reservation, drop_csr=drop_csr)
    log.info("Signed certificate for %s (serial %d)", approved.certname, cert.serial_number)
    return cert


def cert_fields(cert: x509.Certificate, certname: str) -> dict[str, object]:
    """What the audit log records of an issued certificate."""
    sans: list[str] = []
    oids: list[str] = []
    for ext in cert.extensions:  # one pass (no search by class, no isinstance per extension)
        oid = ext.oid
        oids.append(oid.dotted_string)
        if oid == pki.SAN_OID:
            sans = [pki.general_name_str(n) for n in ext.value]
    return {
        "certname": certname,
        "serial": cert.serial_number,
        "fingerprint": pki.sha256_fingerprint(pki.der(cert)),
        "sans": sans,
        "extensions": oids,
        "not_after": pki.puppet_time(cert.not_valid_after_utc),
    }
