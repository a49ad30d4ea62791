"""Key generation, PEM encoding and loading of keys, the signing hash for a key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from splitca.pki.keyseal import seal_private_key

# --- keys ------------------------------------------------------------------------------

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "prime256v1": ec.SECP256R1(),
    "secp256r1": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "secp384r1": ec.SECP384R1(),
}


def generate_private_key(
    key_type: str = "rsa", *, rsa_bits: int = 4096, curve: str = "P-256"
) -> CertificateIssuerPrivateKeyTypes:
    """Make a new RSA or EC private key."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if key_type == "ec":
        try:
            return ec.generate_private_key(_CURVES[curve])
        except KeyError:
            raise ValueError(f"unsupported curve {curve!r}; use P-256 or P-384") from None
    raise ValueError(f"unsupported key type {key_type!r}; use rsa or ec")


def private_key_pem(
    key: CertificateIssuerPrivateKeyTypes, passphrase: bytes | None = None
) -> bytes:
    """PEM in the traditional format Puppet writes (``BEGIN RSA PRIVATE KEY``/``EC``).

    With *passphrase*: encrypted PKCS#8 (``BEGIN ENCRYPTED PRIVATE KEY``), see
    :func:`splitca.pki.keyseal.seal_private_key`.
    """
    if passphrase is not None:
        return seal_private_key(key, passphrase)
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def public_key_pem(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


ENCRYPTED_KEY_LABEL = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def is_encrypted_key(data: bytes) -> bool:
    """Whether a PEM private key is encrypted (PKCS#8 or OpenSSL's ``Proc-Type: 4,ENCRYPTED``)."""
    return ENCRYPTED_KEY_LABEL in data or b"Proc-Type: 4,ENCRYPTED" in data


def load_private_key(
    data: bytes, passphrase: bytes | None = None
) -> CertificateIssuerPrivateKeyTypes:
    """Load the CA's own key (decrypted with *passphrase* if it is encrypted).

    Its file is trusted, so OpenSSL's slow RSA consistency check (~0.4 s for RSA-4096,
    paid by every CLI command) is skipped. ValueError for a wrong passphrase, TypeError
    for a missing or unneeded one (cryptography's convention).
    """
    key = serialization.load_pem_private_key(
        data,
        password=passphrase if is_encrypted_key(data) else None,
        unsafe_skip_rsa_key_validation=True,
    )
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    ):
        raise ValueError(f"unsupported CA key type {type(key).__name__}")
    return key


def signing_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    """The hash to sign with: SHA-256 (RSA, P-256), SHA-384 (P-384), none for EdDSA."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()
