"""A private key sealed with a passphrase: PKCS#8 PBES2, PBKDF2-HMAC-SHA256 (600,000 rounds), AES-256-CBC."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from splitca.pki.asn1 import integer, tlv

__all__ = ["PBKDF2_ITERATIONS", "seal_private_key"]

# OWASP's 2023 figure for PBKDF2-HMAC-SHA256. cryptography's BestAvailableEncryption
# uses 2048 for PKCS#8, too few for a key that must survive a stolen backup.
PBKDF2_ITERATIONS = 600_000

_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_NULL = b"\x05\x00"


def _seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def seal_private_key(
    key: CertificateIssuerPrivateKeyTypes,
    passphrase: bytes,
    *,
    iterations: int = PBKDF2_ITERATIONS,
) -> bytes:
    """*key* as ``BEGIN ENCRYPTED PRIVATE KEY`` PEM (RFC 5958 / RFC 8018), which OpenSSL,
    Ruby and cryptography read; ValueError for an empty passphrase."""
    if not passphrase:
        raise ValueError("the passphrase is empty")
    inner = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(16)
    kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(inner) + padder.finalize()
    encryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(plain) + encryptor.finalize()
    kdf = _seq(_PBKDF2, _seq(tlv(0x04, salt), integer(iterations), _seq(_HMAC_SHA256, _NULL)))
    scheme = _seq(_AES256_CBC, tlv(0x04, iv))
    der = _seq(_seq(_PBES2, _seq(kdf, scheme)), tlv(0x04, sealed))
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
        + lines
        + b"\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
