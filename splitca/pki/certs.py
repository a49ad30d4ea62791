"""puppetserver's CA and leaf certificate profiles, the signing certificate, encodings."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from splitca.pki.csr import _ia5, der_utf8, extension_value_text
from splitca.pki.keys import signing_hash
from splitca.pki.names import NETSCAPE_COMMENT, NETSCAPE_COMMENT_TEXT, PP_CLI_AUTH, SAN_OID

# --- building certificates -------------------------------------------------------------


def _ski(public_key: CertificatePublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


@functools.lru_cache(maxsize=16)  # a CA certificate's: looked up for every leaf it signs
def ca_key_identifier(ca_cert: x509.Certificate) -> bytes:
    try:
        return ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return _ski(ca_cert.public_key()).digest


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def build_ca_certificate(
    key: CertificateIssuerPrivateKeyTypes, name: str, *, now: dt.datetime, ttl: dt.timedelta
) -> x509.Certificate:
    """Self-signed CA certificate with puppetserver's profile (section 8.2a)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    ski = _ski(public)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + ttl)
        .add_extension(
            x509.UnrecognizedExtension(NETSCAPE_COMMENT, _ia5(NETSCAPE_COMMENT_TEXT)), False
        )
        .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), False)
        .add_extension(ski, False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(CA_KEY_USAGE, True)
        .sign(key, signing_hash(key))  # type: ignore[arg-type]
    )


_LEAF_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage(
    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
)


def build_leaf_certificate(
    *,
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    certname: str,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    alt_names: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """A Puppet agent/server certificate with puppetserver's profile (section 8.1).

    *extensions* are the already-vetted requested extensions (never SAN, never
    anything policy refused); the SAN always contains ``DNS:<certname>``.
    """
    builder = leaf_builder(
        ca_key=ca_key,
        ca_cert=ca_cert,
        public_key=public_key,
        certname=certname,
        not_before=not_before,
        not_after=not_after,
        alt_names=alt_names,
        extensions=extensions,
    )
    return sign_leaf(builder, ca_key, serial)


def leaf_builder(
    *,
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    certname: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    alt_names: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.CertificateBuilder:
    """Everything of :func:`build_leaf_certificate` but the serial and the signature.

    Every check cryptography makes on the contents (the CN's length, duplicate
    extensions, the key type) happens here, so a caller can build this before it
    takes a serial, and a request that cannot be issued costs none.

    Raises:
      ValueError, TypeError: the contents cannot make a certificate.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)])
    x509.CertificateBuilder().public_key(public_key)  # its type check, before the SKI is derived
    sans = list(alt_names)
    own = x509.DNSName(certname)
    if own not in sans:
        sans.append(own)
    first = (_LEAF_COMMENT, _authority_key_id(ca_cert), _extension(_ski(public_key), False))
    requested = []
    for ext in extensions:
        if not isinstance(ext.value, x509.ExtensionType):
            raise TypeError("extension must be an ExtensionType")
        requested.append(_extension(ext.value, ext.critical))
    san = _extension(x509.SubjectAlternativeName(sans), False)
    # The list is handed to the builder whole (add_extension, once per extension, copies the
    # builder and rescans the list each time); its duplicate check is made here, once. The
    # profile's own extensions differ from each other: only a requested one can repeat.
    if requested:
        oids = {e.oid for e in requested}
        if len(oids) != len(requested) or not oids.isdisjoint(_LEAF_OIDS):
            raise ValueError("This extension has already been set.")
    exts = [*first, *requested, san, *_LEAF_LAST]
    # Names and key go to the constructor too: the setters would only check their types,
    # which are certain (the Names are cryptography's, the key was checked above).
    return (
        x509.CertificateBuilder(
            issuer_name=ca_cert.subject,
            subject_name=subject,
            public_key=public_key,
            extensions=exts,
        )
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _extension(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def _encoded(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    """An extension that is the same in many certificates, encoded once (by cryptography
    itself): signing copies its bytes instead of encoding the object again each time."""
    return _extension(x509.UnrecognizedExtension(value.oid, value.public_bytes()), critical)


@functools.lru_cache(maxsize=16)
def _authority_key_id(ca_cert: x509.Certificate) -> x509.Extension[x509.ExtensionType]:
    return _encoded(x509.AuthorityKeyIdentifier(ca_key_identifier(ca_cert), None, None), False)


# The leaf profile's fixed extensions, made once: the comment first, these last.
_LEAF_COMMENT = _extension(
    x509.UnrecognizedExtension(NETSCAPE_COMMENT, _ia5(NETSCAPE_COMMENT_TEXT)), False
)
_LEAF_LAST = (
    _encoded(x509.BasicConstraints(ca=False, path_length=None), True),
    _encoded(_LEAF_EKU, True),
    _encoded(_LEAF_KU, True),
)
# The OIDs of the profile's own extensions (the comment, AKI, SKI, SAN and the last three).
_LEAF_OIDS = frozenset(
    {
        NETSCAPE_COMMENT,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        SAN_OID,
        *(e.oid for e in _LEAF_LAST),
    }
)


def sign_leaf(
    builder: x509.CertificateBuilder, ca_key: CertificateIssuerPrivateKeyTypes, serial: int
) -> x509.Certificate:
    """Give a :func:`leaf_builder` its serial and sign it."""
    return builder.serial_number(serial).sign(ca_key, signing_hash(ca_key))  # type: ignore[arg-type]


def cli_auth_extension() -> x509.Extension[x509.ExtensionType]:
    """``pp_cli_auth = "true"``: marks a certificate as a CA administrator's."""
    return x509.Extension(
        PP_CLI_AUTH, False, x509.UnrecognizedExtension(PP_CLI_AUTH, der_utf8("true"))
    )


def has_cli_auth(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_oid(PP_CLI_AUTH)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return extension_value_text(ext) == "true"


# --- the CA certificate bundle -------------------------------------------------------------


def signing_certificate(
    certs: Sequence[x509.Certificate], key: CertificateIssuerPrivateKeyTypes | None = None
) -> x509.Certificate | None:
    """The certificate this CA signs with, out of ``ca_crt.pem``'s bundle.

    The bundle may list the chain in any order (``puppetserver ca import`` accepts that and
    writes it as given; puppetserver picks the certificate matching its key). With *key*:
    the certificate holding its public key, None if there is none. Without: the chain's
    lowest CA, the one that issued no other certificate of the bundle.
    """
    if key is not None:
        spki = _spki(key.public_key())
        # A renewed CA (same key, later notAfter) beside its old certificate: the newest signs.
        matching = [c for c in certs if _spki(c.public_key()) == spki]
        return max(matching, key=lambda c: c.not_valid_after_utc, default=None)
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    return next((c for c in certs if c.subject not in issuers), certs[0] if certs else None)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem(
    obj: x509.Certificate | x509.CertificateRevocationList | x509.CertificateSigningRequest,
) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def der(
    obj: x509.Certificate | x509.CertificateRevocationList | x509.CertificateSigningRequest,
) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER)
