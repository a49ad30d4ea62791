"""Use case: import an external CA (its chain, CRL chain and signing key) into an empty store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.chain import parse_crl_file
from splitca.core.usecases.common import Deps
from splitca.core.usecases.setup import SetupResult, ensure_server_identity
from splitca.errors import Conflict, InvalidRequest, StoreError

__all__ = ["ImportInput", "check_import", "import_ca"]


@dataclass(frozen=True)
class ImportInput:
    """What ``splitca import`` was given, read from its files."""

    bundle: bytes  # --cert-bundle: the signing CA's certificate and every CA above it
    crl_chain: bytes  # --crl-chain: one CRL per CA of the bundle
    key: bytes  # --private-key: the signing CA's key (PEM, encrypted or not)
    passphrase: bytes | None = None  # from --passphrase-file


@dataclass(frozen=True)
class CheckedImport:
    chain: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]
    key: CertificateIssuerPrivateKeyTypes
    notes: list[str]


def check_import(given: ImportInput, *, now: dt.datetime) -> CheckedImport:
    """Everything :func:`import_ca` checks before it writes a byte.

    Raises:
      InvalidRequest: one line naming what is wrong (see pki.order_chain, pki.order_crls).
    """
    try:
        certs = pki.load_certificates(given.bundle)
    except ValueError as exc:
        raise InvalidRequest(
            f"--cert-bundle holds a certificate that does not parse: {exc}"
        ) from None
    try:
        key = pki.load_key(given.key, given.passphrase)
        chain, reordered = pki.order_chain(certs, key)
    except pki.ChainError as exc:
        raise InvalidRequest(str(exc)) from None
    for cert in chain:
        name = repr(cert.subject.rfc4514_string())
        if cert.not_valid_after_utc <= now:
            raise InvalidRequest(f"{name} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
        if cert.not_valid_before_utc > now + pki.chain.CRL_CLOCK_SKEW:
            raise InvalidRequest(
                f"{name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
            )
    crls = parse_crl_file(given.crl_chain, "--crl-chain")
    try:
        ordered, crls_reordered = pki.order_crls(crls, chain, now=now)
    except pki.ChainError as exc:
        raise InvalidRequest(str(exc)) from None
    notes = []
    if reordered:
        notes.append(
            "--cert-bundle listed the chain in another order; written signing CA first, "
            "root last: " + " -> ".join(repr(c.subject.rfc4514_string()) for c in chain)
        )
    if crls_reordered:
        notes.append("--crl-chain listed the CRLs in another order; written in the chain's order")
    return CheckedImport(chain, ordered, key, notes)


def import_ca(d: Deps, given: ImportInput, *, actor: Actor = SYSTEM) -> SetupResult:
    """Make the store a CA that signs with an external CA's key, under its chain.

    The store must hold no CA. ``ca_crt.pem`` gets the chain (signing CA first),
    ``ca_crl.pem`` its CRLs in the same order; then the CA server's TLS identity is
    issued, as after ``setup``. Leaf certificates get the signing certificate's own
    subject key identifier as their authority key identifier.

    Raises:
      InvalidRequest: the input fails a check (nothing is written).
      Conflict: the store already holds a CA; StoreError: part of one.
    """
    checked = check_import(given, now=d.clock())
    if not d.store.missing_parts():
        raise Conflict(
            f"{d.settings.cadir} already holds a CA; import into a new, empty cadir "
            "(splitca never replaces a CA)"
        )
    d.store.prepare()
    with d.store.locked("setup"):
        present = d.store.present_parts()
        if present:
            raise StoreError(
                f"{d.settings.cadir} holds part of a CA ({', '.join(present)}); import into a "
                "new, empty cadir"
            )
        d.store.create_ca(
            ca_cert=b"".join(pki.pem(c) for c in checked.chain),
            ca_key=pki.private_key_pem(checked.key),
            ca_pub=pki.public_key_pem(checked.key.public_key()),
            crl=b"".join(pki.pem(c) for c in checked.crls),
        )
        signer = checked.chain[0].subject.rfc4514_string()
        msgs = [
            f"Imported CA {signer!r} into {d.settings.cadir}: a chain of "
            f"{len(checked.chain)} certificates, up to {checked.chain[-1].subject.rfc4514_string()!r}.",
            *checked.notes,
        ]
        msgs += ensure_server_identity(d)
    d.audit.event(
        "import",
        actor,
        ca_name=signer,
        chain=[c.subject.rfc4514_string() for c in checked.chain],
        cadir=str(d.settings.cadir),
    )
    return SetupResult(True, msgs)
