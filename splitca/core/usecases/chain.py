"""Use cases for CA chains: a root with an intermediate, the root's CRL (offline), installing it on the CA."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca import fs, pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.common import Deps
from splitca.core.usecases.crl import write_crl
from splitca.errors import Conflict, InvalidRequest, StoreError

__all__ = [
    "ChainMaterial",
    "Installed",
    "RootSpec",
    "create_chain",
    "install_crl",
    "issue_upper_crl",
    "parse_crl_file",
]

PRIVATE_MODE = 0o600
DEFAULT_ROOT_CRL_TTL = dt.timedelta(days=365)
DEFAULT_ROOT_TTL = dt.timedelta(days=15 * 365)


@dataclass(frozen=True)
class RootSpec:
    """``setup --intermediate``: where the new root's key goes, its name and lifetimes."""

    key_out: Path
    name: str | None = None
    ttl: dt.timedelta = DEFAULT_ROOT_TTL
    crl_ttl: dt.timedelta = DEFAULT_ROOT_CRL_TTL
    passphrase: bytes | None = None  # the root key is written encrypted with it


@dataclass(frozen=True)
class ChainMaterial:
    """What ``create_ca`` stores for a root + intermediate CA (the root key is written apart)."""

    ca_cert: bytes  # the intermediate, then the root
    key: CertificateIssuerPrivateKeyTypes  # the intermediate's
    crl: bytes  # the intermediate's CRL, then the root's
    root: x509.Certificate


def create_chain(d: Deps, spec: RootSpec) -> ChainMaterial:
    """Make a root CA and the intermediate that signs here; write the root key to its file.

    The root key is written first (mode 0600, never over an existing file), so nothing in
    the cadir refers to a root whose key was lost.

    Raises:
      Conflict: the root key file exists.
      StoreError: it could not be written.
    """
    s, now = d.settings, d.clock()
    if os.path.lexists(spec.key_out):
        raise Conflict(f"{spec.key_out} exists; splitca never replaces a key file")
    gen = {"rsa_bits": s.key_size, "curve": s.ec_curve}
    root_key = pki.generate_private_key(s.key_type, **gen)  # type: ignore[arg-type]
    root_name = spec.name or f"Puppet Root CA: {secrets.token_hex(7)}"
    root = pki.build_ca_certificate(root_key, root_name, now=now, ttl=max(spec.ttl, s.ca_ttl))
    key = pki.generate_private_key(s.key_type, **gen)  # type: ignore[arg-type]
    inter = pki.build_subordinate_ca(
        key.public_key(),
        s.effective_ca_name,
        issuer_key=root_key,
        issuer_cert=root,
        serial=2,  # as puppetserver's: the root is 1
        now=now,
        ttl=s.ca_ttl,
    )
    crls = [
        pki.build_crl_der(
            ca_key=k,
            ca_cert=c,
            entries=(),
            number=0,
            this_update=now - dt.timedelta(minutes=1),
            next_update=now + ttl,
        )
        for k, c, ttl in ((key, inter, s.crl_ttl), (root_key, root, spec.crl_ttl))
    ]
    try:
        spec.key_out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {spec.key_out.parent}: {exc.strerror}") from exc
    try:  # exclusively: a file made there while the keys were generated is kept
        fs.create_new(
            spec.key_out, pki.private_key_pem(root_key, spec.passphrase), mode=PRIVATE_MODE
        )
    except FileExistsError:
        raise Conflict(f"{spec.key_out} exists; splitca never replaces a key file") from None
    return ChainMaterial(
        ca_cert=pki.pem(inter) + pki.pem(root),
        key=key,
        crl=b"".join(pki.pem_crl(c) for c in crls),
        root=root,
    )


# --- the CRL of a CA above this one (the root's), issued where its key is ---------------------


def parse_crl_file(data: bytes, what: str) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM file that holds CRLs and nothing else (InvalidRequest otherwise)."""
    spans = pki.pem_spans(data)
    others = sorted({label for label, _, _ in spans if label != "X509 CRL"})
    if others:
        raise InvalidRequest(f"{what} holds PEM {', '.join(others)}, not only CRLs")
    if not spans:
        raise InvalidRequest(f"{what} holds no PEM CRL")
    out = []
    for _, start, end in spans:
        try:
            crl = x509.load_pem_x509_crl(data[start:end])
            crl.issuer  # noqa: B018 (parsed now: a bad one is refused here)
            pki.crl_number(crl)
        except Exception as exc:
            raise InvalidRequest(f"{what} holds a CRL that does not parse: {exc}") from None
        out.append(crl)
    return out


@dataclass(frozen=True)
class UpperCRL:
    """A CRL issued by :func:`issue_upper_crl`."""

    pem: bytes
    issuer: str
    number: int
    next_update: dt.datetime
    entries: int
    revoked: list[int]


def issue_upper_crl(
    *,
    key: CertificateIssuerPrivateKeyTypes,
    certs: Sequence[x509.Certificate],
    previous: Sequence[x509.CertificateRevocationList],
    revoke: Sequence[x509.Certificate] = (),
    reason: x509.ReasonFlags = x509.ReasonFlags.ca_compromise,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> UpperCRL:
    """The next CRL of the CA whose key is *key* (the root), with *revoke* added to it.

    Needs no cadir: it runs where the root key is. *certs* holds that CA's certificate
    (``ca_crt.pem`` will do: the certificate matching *key* is used); *previous* its last
    CRL (``ca_crl.pem`` will do), whose entries are kept and whose number is raised.

    Raises:
      InvalidRequest: no certificate matches the key, *previous* has no CRL of that CA
        signed by it, or a certificate to revoke was not issued by it.
    """
    ca = pki.signing_certificate(certs, key)
    if ca is None:
        raise InvalidRequest("the key matches no certificate in --root-cert")
    if not pki.is_ca(ca):
        raise InvalidRequest(f"{ca.subject.rfc4514_string()!r} is not a CA certificate")
    name = repr(ca.subject.rfc4514_string())
    last = [c for c in previous if c.issuer == ca.subject]
    last = [c for c in last if pki.crl_signed_by(c, ca)]
    if not last:
        raise InvalidRequest(f"--crl holds no CRL of {name} signed by its key")
    base = max(last, key=pki.crl_number)
    rows = {
        e.serial: (e.serial, e.date.timestamp(), pki.reason_code(e.reason))
        for e in pki.crl_entries(base)
    }
    added = []
    for cert in revoke:
        if cert.subject == ca.subject and cert.public_key() == ca.public_key():
            raise InvalidRequest(
                f"--revoke-intermediate: {name} is the root itself, not a CA it issued "
                "(give the intermediate's certificate alone)"
            )
        if not pki.directly_issued(cert, ca):
            raise InvalidRequest(
                f"{cert.subject.rfc4514_string()!r} (serial {cert.serial_number}) was not "
                f"issued by {name}"
            )
        if cert.serial_number not in rows:
            rows[cert.serial_number] = (
                cert.serial_number,
                now.timestamp(),
                pki.reason_code(reason),
            )
            added.append(cert.serial_number)
    number = pki.crl_number(base) + 1
    next_update = now + ttl
    der = pki.build_crl_der(
        ca_key=key,
        ca_cert=ca,
        entries=sorted(rows.values()),
        number=number,
        this_update=now - dt.timedelta(minutes=1),
        next_update=next_update,
    )
    return UpperCRL(
        pki.pem_crl(der), ca.subject.rfc4514_string(), number, next_update, len(rows), added
    )


# --- installing it on the CA -------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """One CRL that install_crl put in the served chain (or found there already)."""

    issuer: str
    number: int
    next_update: dt.datetime | None
    changed: bool


def install_crl(d: Deps, data: bytes, *, actor: Actor = SYSTEM) -> list[Installed]:
    """Put CRLs of the CAs above this one (the root's) into the served CRL chain.

    Each must come from a CA of ``ca_crt.pem`` other than the signing one, verify with its
    key, be current, and have a higher CRL number than the one it replaces (the same
    CRL again changes nothing). The file is re-published atomically with this CA's own CRL
    re-signed first, as a revocation publishes it.

    Raises:
      InvalidRequest: the file holds something else, or a CRL fails a check.
      Conflict: a CRL's number is not above the installed one's (an old CRL).
    """
    new = parse_crl_file(data, "the CRL file")
    cas = pki.load_certificates(d.store.ca_cert().data)
    signer = d.signer.current().certificate
    now = d.clock()
    by_issuer: dict[x509.Name, x509.CertificateRevocationList] = {}
    for crl in new:
        name = repr(crl.issuer.rfc4514_string())
        if crl.issuer == signer.subject:
            raise InvalidRequest(
                f"the CRL of {name} is this CA's own: it re-issues it itself "
                "('splitca crl refresh'); install only the CRLs of the CAs above it"
            )
        ca = next((c for c in cas if c.subject == crl.issuer), None)
        if ca is None:
            raise InvalidRequest(f"the CRL of {name} is not from a CA in {_ca_file(d)}")
        if not pki.crl_signed_by(crl, ca):
            raise InvalidRequest(f"the CRL claiming issuer {name} is not signed by that CA's key")
        if crl.issuer in by_issuer:
            raise InvalidRequest(f"the file holds two CRLs of {name}")
        nxt = crl.next_update_utc
        if nxt is None or nxt <= now:
            raise InvalidRequest(f"the CRL of {name} has expired (nextUpdate {nxt})")
        if crl.last_update_utc > now + pki.chain.CRL_CLOCK_SKEW:
            raise InvalidRequest(f"the CRL of {name} is dated in the future")
        by_issuer[crl.issuer] = crl
    with d.store.locked("crl"):
        served: dict[x509.Name, x509.CertificateRevocationList] = {}
        for block in pki.split_pem(d.store.crl().data, "X509 CRL"):
            try:
                one = x509.load_pem_x509_crl(block)
            except ValueError:  # unreadable: replaced by what is installed now
                continue
            if one.issuer != signer.subject:
                served[one.issuer] = one
        results = []
        for issuer, crl in by_issuer.items():
            old = served.get(issuer)
            same = old is not None and pki.der(old) == pki.der(crl)
            if old is not None and not same and pki.crl_number(crl) <= pki.crl_number(old):
                raise Conflict(
                    f"the CRL of {issuer.rfc4514_string()!r} has number {pki.crl_number(crl)}, "
                    f"but number {pki.crl_number(old)} is installed: issue a newer one "
                    "('splitca ca root-crl')"
                )
            results.append(
                Installed(
                    issuer.rfc4514_string(), pki.crl_number(crl), crl.next_update_utc, not same
                )
            )
        if any(r.changed for r in results):
            merged = {**served, **by_issuer}
            others = b"".join(pki.pem(c) for c in _in_chain_order(list(merged.values()), cas))
            write_crl(d, d.store.revocations(), now, added=[], actor=actor, others=others)
    if any(r.changed for r in results):
        d.audit.event(
            "crl-installed",
            actor,
            crls=[{"issuer": r.issuer, "crl_number": r.number} for r in results],
        )
    return results


def _in_chain_order(
    crls: list[x509.CertificateRevocationList], cas: Sequence[x509.Certificate]
) -> list[x509.CertificateRevocationList]:
    """Other CAs' CRLs, nearest CA first (the order puppetserver writes them)."""
    rank = {c.subject: i for i, c in enumerate(_chain_order(cas))}
    return sorted(crls, key=lambda c: rank.get(c.issuer, len(rank)))


def _chain_order(cas: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """*cas* from the signing CA up (the bundle may list them in any order)."""
    lowest = pki.signing_certificate(cas)
    out = [lowest] if lowest is not None else []
    while out and out[-1].issuer != out[-1].subject:
        parent = next((c for c in cas if c.subject == out[-1].issuer and c not in out), None)
        if parent is None:
            break
        out.append(parent)
    return out + [c for c in cas if c not in out]


def _ca_file(d: Deps) -> str:
    return str(d.settings.cadir / "ca_crt.pem")
