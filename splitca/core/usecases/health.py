"""Use cases: can this replica serve (the load balancer's health check), and its numbers (metrics)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from splitca.core.usecases.common import Deps
from splitca.core.usecases.fleet import MasterState, crl_header, masters
from splitca.errors import SplitCAError

__all__ = ["Health", "Snapshot", "health", "snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """Whether the CA can serve now; *problem* says why not."""

    ok: bool
    problem: str = ""
    store_seconds: float = 0.0  # how long the store's ping took


def health(d: Deps) -> Health:
    """Ready when the store answers its ping and the signing key loads (both cheap: no scans).

    A replica whose store is unreachable, or whose key or CA certificate is missing or
    unusable, cannot issue or publish a CRL: it is not ready, whatever it still serves.
    """
    started = time.monotonic()
    try:
        d.store.ping()
    except SplitCAError as exc:
        return Health(False, f"store: {exc}", time.monotonic() - started)
    took = time.monotonic() - started
    try:
        d.signer.current()
    except SplitCAError as exc:
        return Health(False, f"signing key: {exc}", took)
    return Health(True, "", took)


@dataclass(frozen=True)
class Snapshot:
    """The CA's numbers at one moment, from the store (the same from every worker and replica).

    Times are POSIX seconds; a field the CA could not read is None (``problem`` says why).
    """

    at: float
    health: Health
    counts: dict[str, int] | None = None
    crl_number: int | None = None
    crl_this_update: float | None = None
    crl_next_update: float | None = None
    ca_not_after: float | None = None
    masters: tuple[MasterState, ...] = ()
    problem: str = ""


def snapshot(d: Deps) -> Snapshot:
    """Every number the metrics endpoint shows. Costs a few indexed counts and a CRL header
    read (no scan of certificates or CRL entries), so the caller may cache it for seconds."""
    now = d.clock()
    h = health(d)
    try:
        ca_cert = d.signer.current().certificate
        header = crl_header(d)
        next_update = header.next_update if header is not None else None
        fleet = masters(d)
        return Snapshot(
            at=now.timestamp(),
            health=h,
            counts=d.store.counts(),
            crl_number=fleet.crl_number,
            crl_this_update=fleet.crl_published,
            crl_next_update=None if next_update is None else next_update.timestamp(),
            ca_not_after=ca_cert.not_valid_after_utc.timestamp(),
            masters=fleet.masters,
        )
    except SplitCAError as exc:
        log.warning("metrics: the CA's numbers could not be read: %s", exc)
        return Snapshot(at=now.timestamp(), health=h, problem=str(exc))
