"""Use cases: put serials on the CRL, keep the CRL fresh (re-issue before nextUpdate), describe it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from cryptography import x509

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.ports import CRLEntry
from splitca.core.usecases.common import Deps
from splitca.errors import StoreError

__all__ = [
    "add_to_crl",
    "chain_crls",
    "chain_warnings",
    "crl_info",
    "crl_needs_refresh",
    "refresh_crl",
]

log = logging.getLogger(__name__)


def add_to_crl(
    d: Deps, serials: set[int], reason: x509.ReasonFlags, *, actor: Actor = SYSTEM
) -> set[int]:
    """Put *serials* on a new CRL (one re-sign for all); returns those that were not on it."""
    with d.store.locked("crl"):
        current = d.store.revocations()
        known = {row[0] for row in current}
        # Whole seconds, as the CRL holds them: the store records what the CRL says.
        now = d.clock().replace(microsecond=0)
        new = [pki.Revocation(s, now, reason) for s in sorted(serials - known)]
        if new:
            when, code = now.timestamp(), pki.reason_code(reason)
            rows = current + [(e.serial, when, code) for e in new]
            write_crl(d, rows, now, added=new, actor=actor, reason=reason.name)
    return {e.serial for e in new}


def write_crl(
    d: Deps,
    entries: Sequence[CRLEntry],
    now: dt.datetime,
    *,
    added: list[pki.Revocation] | None = None,
    actor: Actor = SYSTEM,
    reason: str | None = None,
    others: bytes | None = None,
) -> int:
    """Sign and publish the next CRL (the caller holds the crl lock); returns its number.

    *entries* are (serial, unix time, CRLReason code). With *added*, only those are
    new; otherwise the store's revocations are replaced. A ``crl-published`` audit
    event is written the moment the CRL is in effect (see CAStore.publish_crl).
    The other CAs' CRLs in the file (the root's) follow ours: *others*, else those served.
    """
    key = d.signer.current()
    number = d.store.crl_number() + 1
    der = key.sign_crl(
        entries=entries,
        number=number,
        this_update=now - dt.timedelta(minutes=1),
        next_update=now + d.settings.crl_ttl,
    )
    data = pki.pem_crl(der) + (others if others is not None else _other_crls(d, key.certificate))
    fields: dict[str, object] = {"crl_number": number, "entries": len(entries)}
    if added:
        fields["revoked"] = [e.serial for e in added]
    if reason is not None:
        fields["reason"] = reason

    def audit_it() -> None:
        if not d.audit.event("crl-published", actor, **fields):
            log.error("CRL number %d is in effect but its audit record is lost", number)

    d.store.publish_crl(data, number=number, entries=entries, added=added, on_installed=audit_it)
    log.info("Published CRL number %d with %d entries", number, len(entries))
    return number


def _other_crls(d: Deps, ca_cert: x509.Certificate) -> bytes:
    """Other CAs' CRLs in the file (intermediate-CA setups): kept, after ours."""
    try:
        existing = d.store.crl().data
    except StoreError:
        return b""
    issuer = ca_cert.subject.public_bytes()
    kept = []
    for block in pki.split_pem(existing, "X509 CRL"):
        try:
            if pki.crl_header(block).issuer != issuer:
                kept.append(block + b"\n")
        except ValueError:  # a damaged block is not carried into the new file
            log.warning("dropping a block of %s that is not a CRL", d.store.crl_location())
    return b"".join(kept)


def crl_needs_refresh(d: Deps) -> bool:
    """True if our CRL is missing, unreadable, or within the refresh margin of nextUpdate.

    Reads only the CRL's header, so it costs microseconds at any CRL size.
    """
    issuer = d.signer.current().certificate.subject.public_bytes()
    header = None
    try:
        served = d.store.crl().data
    except StoreError:  # missing (or not a file): re-issued from the store's revocations
        return True
    for block in pki.split_pem(served, "X509 CRL"):
        try:
            candidate = pki.crl_header(block)
        except ValueError:
            continue
        if candidate.issuer == issuer:
            header = candidate
            break
    if header is None or header.next_update is None:
        return True
    return header.next_update - d.clock() < d.settings.effective_crl_refresh_margin


def refresh_crl(d: Deps, *, force: bool = False, actor: Actor = SYSTEM) -> bool:
    """Re-issue the CRL (new number, fresh nextUpdate) if it is due or *force*.

    With ``crl_prune_expired`` the entries of certificates that have expired (per
    the issued records) are dropped, as RFC 5280 allows.
    """
    with d.store.locked("crl"):
        if not force and not crl_needs_refresh(d):
            return False
        now = d.clock()
        entries = d.store.revocations()
        pruned = 0
        if d.settings.crl_prune_expired:
            expired = d.store.expired_serials(now)
            kept = [e for e in entries if e[0] not in expired]
            pruned = len(entries) - len(kept)
            entries = kept
        # Nothing pruned: the store's revocations stay as they are (only the number moves).
        number = write_crl(d, entries, now, added=None if pruned else [], actor=actor)
    d.audit.event("crl-refresh", actor, crl_number=number, entries=len(entries), pruned=pruned)
    return True


def crl_info(d: Deps) -> dict[str, object]:
    """Number, dates, size and entry count of the CRL in effect (``splitca crl show``)."""
    ca_cert = d.signer.current().certificate
    served = d.store.crl().data
    crl = pki.own_crl(served, d.store.ca_cert().data)
    if crl is None:
        raise StoreError(f"{d.store.crl_location()} holds no CRL")
    now = d.clock()
    next_update = crl.next_update_utc
    return {
        "issuer": crl.issuer.rfc4514_string(),
        "crl_number": pki.crl_number(crl),
        "this_update": crl.last_update_utc.isoformat(),
        "next_update": next_update.isoformat() if next_update else None,
        "seconds_to_next_update": int((next_update - now).total_seconds()) if next_update else None,
        "entries": d.store.revoked_count(),
        "bytes": len(served),
        "signature_valid": crl.is_signature_valid(ca_cert.public_key()),  # type: ignore[arg-type]
        "chain": [_chained_dict(c, now) for c in chain_crls(d)],
        "warnings": chain_warnings(d),
    }


def _chained_dict(c: pki.ChainedCRL, now: dt.datetime) -> dict[str, object]:
    left = int((c.next_update - now).total_seconds()) if c.next_update else None
    return {
        "issuer": c.issuer,
        "crl_number": c.number,
        "this_update": c.this_update.isoformat(),
        "next_update": c.next_update.isoformat() if c.next_update else None,
        "seconds_to_next_update": left,
        "own": c.own,
        "signature_valid": c.signature_valid,
    }


def chain_crls(d: Deps) -> list[pki.ChainedCRL]:
    """Every CRL the CA serves, described (this CA's own first)."""
    cas = pki.load_certificates(d.store.ca_cert().data)
    signer = d.signer.current().certificate
    out = []
    for block in pki.split_pem(d.store.crl().data, "X509 CRL"):
        try:
            out += pki.describe_chain_crls([x509.load_pem_x509_crl(block)], cas, signer)
        except Exception:  # a CRL cryptography cannot read (of any kind) is not described
            continue
    return out


def chain_warnings(d: Deps) -> list[str]:
    """One line per CRL of the served chain that expires soon (or has), with what to do.

    A CRL is flagged a quarter of its lifetime before its nextUpdate, at most 60 days
    before (:func:`splitca.pki.crl_warn_before`). This CA re-issues its own CRL well before;
    the CRLs of the CAs above it are re-issued where their keys are.
    """
    now = d.clock()
    out = []
    for c in chain_crls(d):
        warn_at = c.warn_at()
        if c.next_update is None:
            out.append(f"the CRL of {c.issuer!r} has no nextUpdate")
            continue
        if warn_at is None or now < warn_at:
            continue
        left = c.next_update - now
        when = (
            f"EXPIRED at {c.next_update:%Y-%m-%d %H:%M}Z: agents and Apache refuse every certificate"
            if left <= dt.timedelta(0)
            else f"expires at {c.next_update:%Y-%m-%d %H:%M}Z, in {pki.time_left_words(left)}"
        )
        if c.own:
            todo = "this CA re-issues it itself: is 'splitca serve' or the 'splitca crl refresh' timer running?"
        else:
            todo = (
                "re-issue it where that CA's key is ('splitca ca root-crl --root-key KEY "
                "--root-cert ca_crt.pem --crl ca_crl.pem --out root_crl.pem') and install it "
                "here ('splitca crl install-root root_crl.pem')"
            )
        out.append(f"the CRL of {c.issuer!r} (number {c.number}) {when}; {todo}")
    return out
