"""Use case: retention, the files and CRL entries of certificates that expired long ago go."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.common import Deps
from splitca.core.usecases.crl import write_crl

__all__ = ["BATCH", "PurgeResult", "purge_expired"]

log = logging.getLogger(__name__)

BATCH = 200  # names per hold of their locks: issuing for other names waits at most that long


@dataclass
class PurgeResult:
    """What a purge removed (or, with dry_run, would remove)."""

    cutoff: dt.datetime
    dry_run: bool
    certificates: dict[str, int] = field(default_factory=dict)  # name -> serial of the file
    crl_entries: list[int] = field(default_factory=list)  # serials dropped from the CRL
    crl_number: int | None = None  # the CRL re-signed without them (None: unchanged)

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(timespec="seconds"),
            "dry_run": self.dry_run,
            "certificates": self.certificates,
            "crl_entries": self.crl_entries,
            "crl_number": self.crl_number,
        }


def purge_expired(
    d: Deps,
    older_than: dt.timedelta,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: Actor = SYSTEM,
) -> PurgeResult:
    """Remove the certificate files of certificates that expired more than *older_than*
    ago, and their serials' CRL entries (an expired certificate is refused by every
    verifier, so it needs no CRL entry); the CRL is re-signed once, if it changed.

    The inventory (so serials are never reused) and the audit log stay. Each file is
    deleted under its name's lock after checking it is still the expired certificate (a
    renewal meanwhile keeps its new one); the CRL is rewritten under the ``crl`` lock,
    so a purge runs while ``serve`` issues and revokes.
    """
    now = d.clock()
    cutoff = now - older_than
    limit = cutoff.timestamp()
    result = PurgeResult(cutoff, dry_run)
    expired = [
        r
        for r in d.store.statuses()
        if r.state != "requested" and r.not_after_ts is not None and r.not_after_ts < limit
    ]
    for start in range(0, len(expired), BATCH):
        batch = expired[start : start + BATCH]
        if dry_run:
            result.certificates.update((r.name, r.serial or 0) for r in batch)
        else:
            with d.store.names_locked(r.name for r in batch):
                for r in batch:
                    now_row = d.store.status(r.name)
                    if now_row is None or now_row.serial != r.serial:
                        continue  # replaced (renewed, re-signed) or removed meanwhile
                    d.store.delete_cert(r.name)
                    result.certificates[r.name] = r.serial or 0
                    d.audit.event(
                        "purge",
                        actor,
                        certname=r.name,
                        serial=r.serial,
                        not_after=pki.puppet_time(
                            dt.datetime.fromtimestamp(r.not_after_ts or 0, dt.UTC)
                        ),
                    )
        if progress is not None:
            progress(min(start + BATCH, len(expired)), len(expired))
    _purge_crl(d, result, cutoff, now, actor)
    if not dry_run and (result.certificates or result.crl_entries):
        d.audit.event(
            "purge-done",
            actor,
            cutoff=result.cutoff.isoformat(),
            certificates=len(result.certificates),
            crl_entries=len(result.crl_entries),
            crl_number=result.crl_number,
        )
        log.info(
            "Purged %d expired certificates and %d CRL entries (expired before %s)",
            len(result.certificates),
            len(result.crl_entries),
            cutoff.isoformat(timespec="seconds"),
        )
    return result


def _purge_crl(
    d: Deps, result: PurgeResult, cutoff: dt.datetime, now: dt.datetime, actor: Actor
) -> None:
    """Drop the CRL entries of serials that expired before *cutoff*; one re-sign."""
    if result.dry_run:
        gone = d.store.expired_serials(cutoff)
        result.crl_entries = sorted(e[0] for e in d.store.revocations() if e[0] in gone)
        return
    with d.store.locked("crl"):
        gone = d.store.expired_serials(cutoff)
        entries = d.store.revocations()
        kept = [e for e in entries if e[0] not in gone]
        if len(kept) == len(entries):
            return
        result.crl_entries = sorted(e[0] for e in entries if e[0] in gone)
        result.crl_number = write_crl(
            d, kept, now, added=None, actor=actor, reason="purge of expired certificates"
        )
