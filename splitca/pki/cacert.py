"""A CA certificate's own lifecycle: what it is (key, validity) and its renewal with the same key."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from splitca.pki.keys import signing_hash

__all__ = ["describe_key", "is_self_issued", "renew_ca_certificate"]


def describe_key(key: CertificatePublicKeyTypes) -> tuple[str, int]:
    """(type, size in bits) of a public key: ("RSA", 4096), ("EC P-256", 256), ("Ed25519", 256)."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


def is_self_issued(cert: x509.Certificate) -> bool:
    """Whether *cert* names itself as its issuer (a root, which its own key can re-issue)."""
    return cert.issuer == cert.subject


def renew_ca_certificate(
    old: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """*old* re-issued by its own *key*: same subject, issuer, key and extensions (SKI and AKI
    included, in their order), a new serial and validity. Every certificate *old* signed
    verifies against the result, since issuer name, key identifier and key are unchanged.

    Raises:
      ValueError: *old* is not self-issued or *key* is not its key.
    """
    if not is_self_issued(old):
        raise ValueError(f"{old.subject.rfc4514_string()} is not self-signed")
    if old.public_key() != key.public_key():
        raise ValueError("the key does not belong to the CA certificate")
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in old.extensions:
        value = ext.value
        if (
            isinstance(value, x509.AuthorityKeyIdentifier)
            and value.authority_cert_serial_number == old.serial_number
        ):  # a self-signed CA naming itself by serial: name the new serial
            value = x509.AuthorityKeyIdentifier(
                value.key_identifier, value.authority_cert_issuer, serial
            )
        builder = builder.add_extension(value, ext.critical)
    return builder.sign(key, signing_hash(key))  # type: ignore[arg-type]
