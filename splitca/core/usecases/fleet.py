"""Use cases: which CRL each compile master has (recorded when its sync-crl fetches one)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509

from splitca import pki
from splitca.core.usecases.common import Deps, state_of
from splitca.pki.asn1 import CrlHeader

__all__ = ["Fleet", "MasterState", "crl_header", "masters", "record_crl_fetch"]

log = logging.getLogger(__name__)


def record_crl_fetch(d: Deps, certname: str, served: bytes) -> None:
    """Note that *certname* was just served *served* (the CRL file as sent). Never raises.

    The number is read from the CRL that was sent, not from the store's records, so it is
    exactly what the client got, and nothing here waits for the store's index.
    """
    try:
        number = _served_number(d, served)
        if number is not None:
            d.store.record_crl_fetch(certname, number, d.clock().timestamp())
    except Exception as exc:  # best effort: the CRL answer must go out whatever happens here
        log.warning("CRL fetch by %s not recorded: %s", certname, exc)


_numbers: dict[bytes, int] = {}  # the last CRLs' numbers, by their signature (the block's tail)


def _served_number(d: Deps, served: bytes) -> int | None:
    """The CRL number of our CRL in *served* (parsed once per CRL), or None if none is ours."""
    issuer = d.signer.current().certificate.subject.public_bytes()
    for block in pki.split_pem(served, "X509 CRL"):
        try:
            if pki.crl_header(block).issuer != issuer:
                continue
        except ValueError:
            continue
        key = block[-96:]
        number = _numbers.get(key)
        if number is None:
            number = pki.crl_number(x509.load_pem_x509_crl(block))
            if len(_numbers) > 8:
                _numbers.clear()
            _numbers[key] = number
        return number
    return None


@dataclass(frozen=True)
class MasterState:
    """One compile master's last CRL fetch, measured against the CRL in effect."""

    name: str
    crl_number: int  # the CRL number it was served last
    fetched_at: float  # POSIX time of that fetch
    age: float  # seconds since that fetch
    behind: int  # how many CRL numbers it lacks (0: it has the current CRL)
    lag: float  # seconds it has lacked the current CRL (since that CRL's thisUpdate; 0 if not behind)

    def as_dict(self) -> dict[str, object]:
        return {
            "certname": self.name,
            "crl_number": self.crl_number,
            "fetched_at": self.fetched_at,
            "age_seconds": round(self.age, 3),
            "behind": self.behind,
            "lag_seconds": round(self.lag, 3),
        }


@dataclass(frozen=True)
class Fleet:
    """The CRL in effect and every master's state against it."""

    crl_number: int
    crl_published: float | None  # POSIX time the CRL in effect was made (its thisUpdate)
    masters: tuple[MasterState, ...]


def masters(d: Deps) -> Fleet:
    """Every recorded master whose certificate is current (not revoked, not cleaned)
    against the CRL in effect (StoreError if the store cannot say)."""
    now = d.clock().timestamp()
    current = d.store.crl_number()
    header = crl_header(d)
    published = None if header is None else header.this_update.timestamp()
    out = []
    for f in d.store.crl_fetches():
        if state_of(d, f.name) != "signed":
            continue  # revoked or cleaned: out of service, it can fetch no CRL again
        behind = max(0, current - f.number)
        lag = max(0.0, now - published) if behind and published is not None else 0.0
        out.append(MasterState(f.name, f.number, f.at, max(0.0, now - f.at), behind, lag))
    return Fleet(current, published, tuple(out))


def crl_header(d: Deps) -> CrlHeader | None:
    """Issuer and dates of our CRL in effect, read from its header only (no entries parsed)."""
    issuer = d.signer.current().certificate.subject.public_bytes()
    for block in pki.split_pem(d.store.crl().data, "X509 CRL"):
        try:
            header = pki.crl_header(block)
        except ValueError:
            continue
        if header.issuer == issuer:
            return header
    return None
