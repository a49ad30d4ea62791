"""Use cases: revoke every certificate of some names, clean them (revoke + delete), delete a status."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.common import Deps
from splitca.core.usecases.crl import add_to_crl
from splitca.errors import NotFound

__all__ = ["clean", "delete", "revoke"]


def revoke(
    d: Deps,
    certnames: Iterable[str],
    *,
    reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
    actor: Actor = SYSTEM,
) -> tuple[dict[str, list[int]], list[str]]:
    """Revoke every certificate of each name, with ONE CRL re-sign for the whole batch.

    The names' locks are held from reading their serials until the new CRL is
    installed, so nothing issued to them (a renewal, say) escapes: when this returns,
    every serial ever issued to each name is on the CRL, and no renewal with one of
    those certificates can succeed any more.

    Returns:
      ({name: serials newly revoked or already revoked}, [names with nothing to revoke]).
    """
    names = list(certnames)
    with d.store.names_locked(n for n in names if pki.is_safe_name(n)):
        found, missing, added = _revoke_held(d, names, reason, actor)
    _audit_revoke(d, found, added, reason, actor)
    return found, missing


def clean(
    d: Deps, certnames: Iterable[str], *, actor: Actor = SYSTEM
) -> tuple[list[str], list[str]]:
    """Revoke, then delete the names' certificates (puppetserver's clean). One CRL re-sign.

    Revocation and deletion happen under the same hold of the names' locks (see
    :func:`revoke`), so nothing can be issued to a name in between: a certificate
    that survives a clean would be one issued after it, to a new request.

    Returns (cleaned names, names that had nothing to revoke).
    """
    names = list(dict.fromkeys(certnames))
    reason = x509.ReasonFlags.key_compromise
    with d.store.names_locked(n for n in names if pki.is_safe_name(n)):
        found, missing, added = _revoke_held(d, names, reason, actor)
        _audit_revoke(d, found, added, reason, actor)
        for name in found:
            d.store.delete_cert(name)
        d.audit.events("clean", actor, [{"certname": n, "serials": s} for n, s in found.items()])
    return list(found), missing


def delete(d: Deps, certname: str, *, actor: Actor = SYSTEM) -> None:
    """DELETE certificate_status: remove the certificate and the CSR, without revoking."""
    if not pki.is_safe_name(certname) or d.store.status(certname) is None:
        raise NotFound(f"nothing is known about {certname}")
    with d.store.names_locked([certname]):
        d.store.delete_cert(certname, and_csr=True)
    d.audit.event("delete", actor, certname=certname)


def _revoke_held(
    d: Deps, names: list[str], reason: x509.ReasonFlags, actor: Actor
) -> tuple[dict[str, list[int]], list[str], set[int]]:
    """:func:`revoke`'s work; the caller holds the names' locks. Also returns the serials
    newly put on the CRL."""
    known = d.store.serials_for_names([n for n in names if pki.is_safe_name(n)])
    found = {name: known[name] for name in names if name in known}
    missing = [name for name in names if name not in known]
    all_serials = {s for ss in found.values() for s in ss}
    added = add_to_crl(d, all_serials, reason, actor=actor) if all_serials else set()
    return found, missing, added


def _audit_revoke(
    d: Deps,
    found: dict[str, list[int]],
    added: set[int],
    reason: x509.ReasonFlags,
    actor: Actor,
) -> None:
    d.audit.events(  # one write for the batch, one record per name
        "revoke",
        actor,
        [
            {
                "certname": name,
                "serials": serials,
                "newly_revoked": [s for s in serials if s in added],
                "reason": reason.name,
            }
            for name, serials in found.items()
        ],
    )
