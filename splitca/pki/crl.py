"""CRLs: entries, numbers, puppetserver's CRL profile encoded directly, the CA's own CRL."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)

from splitca.pki import asn1
from splitca.pki.certs import ca_key_identifier, signing_certificate
from splitca.pki.keys import signing_hash
from splitca.pki.pem import load_certificates, split_pem

# --- CRLs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    """One CRL entry."""

    serial: int
    date: dt.datetime
    reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise


def crl_entries(crl: x509.CertificateRevocationList) -> list[Revocation]:
    out = []
    for r in crl:
        reason: x509.ReasonFlags | None = None
        with contextlib.suppress(x509.ExtensionNotFound, ValueError):
            reason = r.extensions.get_extension_for_class(x509.CRLReason).value.reason
        out.append(Revocation(r.serial_number, r.revocation_date_utc, reason))
    return out


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def build_crl(
    *,
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    entries: Iterable[Revocation],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A v2 CRL with CRL number and AKI, one entry per revocation (with reason)."""
    der_bytes = build_crl_der(
        ca_key=ca_key,
        ca_cert=ca_cert,
        entries=((e.serial, e.date.timestamp(), reason_code(e.reason)) for e in entries),
        number=number,
        this_update=this_update,
        next_update=next_update,
    )
    return x509.load_der_x509_crl(der_bytes)


def pem_crl(der_bytes: bytes) -> bytes:
    """PEM of a DER CRL, as cryptography writes it."""
    return asn1.pem_crl(der_bytes)


def crl_header(pem_block: bytes) -> asn1.CrlHeader:
    """Issuer (DER) and dates of one PEM CRL block, without parsing its entries.

    Raises:
      ValueError: the block is not a CRL.
    """
    b64 = pem_block.split(b"-----BEGIN X509 CRL-----", 1)[-1].split(b"-----END", 1)[0]
    try:
        der_bytes = base64.b64decode(b64)
    except ValueError as exc:
        raise ValueError(f"CRL is not valid base64: {exc}") from None
    return asn1.read_crl_header(der_bytes)


def reason_code(reason: x509.ReasonFlags | None) -> int | None:
    """The RFC 5280 CRLReason code of *reason* (None stays None)."""
    return None if reason is None else asn1.REASON_CODES[reason.name]


_SIG_ALGORITHMS = {
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha384"): bytes.fromhex("300d06092a864886f70d01010c0500"),
    ("rsa", "sha512"): bytes.fromhex("300d06092a864886f70d01010d0500"),
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", "sha384"): bytes.fromhex("300a06082a8648ce3d040303"),
    ("ec", "sha512"): bytes.fromhex("300a06082a8648ce3d040304"),
    ("ed25519", None): bytes.fromhex("300506032b6570"),
    ("ed448", None): bytes.fromhex("300506032b6571"),
}


def _signature_algorithm(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The DER AlgorithmIdentifier X.509 uses for signatures by *key* (see signing_hash)."""
    digest = signing_hash(key)
    name = None if digest is None else digest.name
    if isinstance(key, rsa.RSAPrivateKey):
        return _SIG_ALGORITHMS["rsa", name]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _SIG_ALGORITHMS["ec", name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _SIG_ALGORITHMS["ed25519", None]
    if isinstance(key, ed448.Ed448PrivateKey):
        return _SIG_ALGORITHMS["ed448", None]
    raise ValueError(f"cannot sign a CRL with a {type(key).__name__}")


def _sign_raw(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """The signature over *data* that goes with :func:`_signature_algorithm`."""
    digest = signing_hash(key)
    if isinstance(key, rsa.RSAPrivateKey):
        assert digest is not None
        return key.sign(data, padding.PKCS1v15(), digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert digest is not None
        return key.sign(data, ec.ECDSA(digest))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    raise ValueError(f"cannot sign a CRL with a {type(key).__name__}")


def build_crl_der(
    *,
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    entries: Iterable[tuple[int, float, int | None]],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    """The DER of a signed v2 CRL, from (serial, unix time, CRLReason code) entries.

    Encoded directly (see :mod:`splitca.pki.asn1`): about ten times faster than
    cryptography's CRL builder at 100k entries, with the same structure (entries in
    the given order, CRLReason unless unspecified, then CRL number and AKI).
    """
    algorithm = _signature_algorithm(ca_key)
    tbs = asn1.encode_tbs_crl(
        algorithm=algorithm,
        issuer=ca_cert.subject.public_bytes(),
        this_update=this_update,
        next_update=next_update,
        entries=entries,
        number=number,
        authority_key_id=ca_key_identifier(ca_cert),
    )
    return asn1.finish_crl(tbs, algorithm, _sign_raw(ca_key, tbs))


def own_crl(crl_pem: bytes, cacert_pem: bytes) -> x509.CertificateRevocationList | None:
    """The CRL in *crl_pem* issued by the signing CA of *cacert_pem* (None if it holds none:
    another CA's CRL is never taken for this one's); without a CA certificate, the first CRL."""
    blocks = split_pem(crl_pem, "X509 CRL")
    if not blocks:
        return None
    crls = [x509.load_pem_x509_crl(b) for b in blocks]
    signer = signing_certificate(load_certificates(cacert_pem) if cacert_pem else [])
    if signer is not None:
        return next((crl for crl in crls if crl.issuer == signer.subject), None)
    return crls[0]
