"""CSR loading (any version), signature checks and inspection: subject, SANs, extensions."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AttributeOID, NameOID

from splitca.errors import InvalidRequest
from splitca.pki import asn1
from splitca.pki.pem import outside_pem, pem_spans

CSR_VERSIONS = (0, 1, 2)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a request body that must be exactly one PEM CSR and nothing else.

    Raises:
      InvalidRequest: with a message fit for the client.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not UTF-8 text; expected one PEM CSR.") from None
    if "\x00" in text:
        raise InvalidRequest("Request body contains NUL bytes; expected one PEM CSR.")
    spans = pem_spans(data)
    if not spans:
        raise InvalidRequest("Request body is not a PEM certificate request.")
    if len(spans) > 1:
        raise InvalidRequest(
            f"Request body holds {len(spans)} PEM objects; expected exactly one CSR."
        )
    label, start, end = spans[0]
    if label not in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        raise InvalidRequest(f"Request body holds a PEM {label}, not a CERTIFICATE REQUEST.")
    if outside_pem(data, spans).strip():
        raise InvalidRequest("Request body has text outside the PEM CSR block.")
    return csr_from_pem_block(data[start:end])


def csr_from_pem_block(block: bytes) -> x509.CertificateSigningRequest:
    """One PEM CSR block (``CERTIFICATE REQUEST`` or ``NEW CERTIFICATE REQUEST``) parsed.

    Whatever cryptography raises on hostile input (ValueError, InvalidVersion,
    UnsupportedAlgorithm, ...) becomes InvalidRequest. A CSR with version 1 or 2
    (see :data:`CSR_VERSIONS`) comes back as a :class:`VersionedCsr`.

    Raises:
      InvalidRequest: with a message fit for the client.
    """
    if block.startswith(b"-----BEGIN NEW CERTIFICATE REQUEST-----"):
        block = block.replace(b"NEW CERTIFICATE REQUEST", b"CERTIFICATE REQUEST")
    csr: x509.CertificateSigningRequest
    try:
        csr = x509.load_pem_x509_csr(block)
    except x509.InvalidVersion as exc:
        csr = _versioned_csr(block, exc.parsed_version)
    except Exception as exc:  # cryptography raises several types on hostile input
        raise InvalidRequest(f"Could not parse the certificate request: {exc}") from None
    try:
        csr.subject  # noqa: B018 - force parsing of the lazy fields now
        csr.public_key()
        csr.signature_algorithm_oid  # noqa: B018
    except Exception as exc:
        raise InvalidRequest(f"Could not parse the certificate request: {exc}") from None
    return csr


def _versioned_csr(block: bytes, version: int) -> x509.CertificateSigningRequest:
    if version not in CSR_VERSIONS:
        raise InvalidRequest(
            f"Certificate request version {version} is not supported "
            f"(accepted: {', '.join(map(str, CSR_VERSIONS))})."
        )
    try:
        # cryptography's PEM reader accepted the armour, so this is plain base64.
        b64 = block.split(b"-----", 3)[2]
        der_bytes = base64.b64decode(b"".join(b64.split()), validate=True)
        parts = asn1.read_csr(der_bytes)
        csr = x509.load_der_x509_csr(parts.as_version_0())
    except Exception as exc:
        raise InvalidRequest(f"Could not parse the certificate request: {exc}") from None
    return VersionedCsr(csr, der_bytes, parts.info)  # type: ignore[return-value]


class VersionedCsr:
    """A CSR whose version field is not 0, as cryptography's object for the same request.

    cryptography refuses every version but 0 (``InvalidVersion``), so the request is
    re-encoded with version 0 to read its fields, while the signature is checked, and
    the CSR stored, fingerprinted and served, as the bytes the client signed.
    """

    def __init__(self, inner: x509.CertificateSigningRequest, der_bytes: bytes, info: bytes):
        self._inner = inner
        self._der = der_bytes
        self._info = info

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @property
    def tbs_certrequest_bytes(self) -> bytes:
        return self._info

    def public_bytes(self, encoding: serialization.Encoding) -> bytes:
        if encoding == serialization.Encoding.DER:
            return self._der
        if encoding == serialization.Encoding.PEM:
            b64 = base64.b64encode(self._der)
            lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
            return (
                b"-----BEGIN CERTIFICATE REQUEST-----\n"
                + lines
                + b"\n-----END CERTIFICATE REQUEST-----\n"
            )
        raise ValueError(f"unsupported encoding {encoding}")

    @property
    def is_signature_valid(self) -> bool:
        """The signature verifies over the original request info (RSA PKCS#1 v1.5 or
        ECDSA with a SHA-2 hash, as cryptography checks for version 0)."""
        try:
            algorithm = self._inner.signature_hash_algorithm
        except Exception:
            return False
        if not isinstance(algorithm, hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
            return False
        key = self._inner.public_key()
        # The signature algorithm must be the key's kind: sha256WithRSAEncryption for an RSA
        # key, ecdsa-with-SHA256 for an EC key (no RSA signature labelled as ECDSA).
        oids = _RSA_SIGNATURES if isinstance(key, rsa.RSAPublicKey) else _ECDSA_SIGNATURES
        if self._inner.signature_algorithm_oid not in oids:
            return False
        return verify_signature(key, self._inner.signature, self._info, algorithm)


_SIG = x509.oid.SignatureAlgorithmOID
_RSA_SIGNATURES = frozenset(
    (_SIG.RSA_WITH_SHA224, _SIG.RSA_WITH_SHA256, _SIG.RSA_WITH_SHA384, _SIG.RSA_WITH_SHA512)
)
_ECDSA_SIGNATURES = frozenset(
    (_SIG.ECDSA_WITH_SHA224, _SIG.ECDSA_WITH_SHA256, _SIG.ECDSA_WITH_SHA384, _SIG.ECDSA_WITH_SHA512)
)


def verify_signature(
    key: CertificatePublicKeyTypes,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm,
) -> bool:
    """True if *signature* by *key* (RSA PKCS#1 v1.5 or ECDSA) over *data* verifies."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


# --- CSR inspection --------------------------------------------------------------------


def first_cn(name: x509.Name) -> str | None:
    """The first CN of a name, as puppetserver's getCommonNameFromX500Name takes it."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _der_string(raw: bytes) -> str:
    """Decode a DER string value (UTF8String, PrintableString, IA5String, ...) leniently."""
    if len(raw) >= 2 and raw[0] in (0x0C, 0x13, 0x16, 0x14, 0x1A, 0x1E):
        length = raw[1]
        offset = 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(raw[2 : 2 + n], "big")
            offset = 2 + n
        body = raw[offset : offset + length]
        if raw[0] == 0x1E:
            return body.decode("utf-16-be", "replace")
        return body.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def der_utf8(value: str) -> bytes:
    """DER UTF8String, the encoding Puppet uses for extension request values."""
    body = value.encode("utf-8")
    n = len(body)
    if n < 0x80:
        return bytes([0x0C, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(size)]) + size + body


def _ia5(value: bytes) -> bytes:
    return bytes([0x16, len(value)]) + value


def extension_value_text(ext: x509.Extension[x509.ExtensionType]) -> str:
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension):
        return _der_string(value.value)
    return str(value)


def san_strings(ext_value: x509.SubjectAlternativeName) -> tuple[list[str], list[str]]:
    """(dns_alt_names, subject_alt_names) as puppetserver renders them (IPs first)."""
    dns = [f"DNS:{n}" for n in ext_value.get_values_for_type(x509.DNSName)]
    ips = [f"IP:{ip}" for ip in ext_value.get_values_for_type(x509.IPAddress)]
    return dns, ips + dns


@dataclass(frozen=True)
class CsrInfo:
    """What policy needs to know about a CSR, extracted once."""

    cn: str | None
    sans: tuple[x509.GeneralName, ...]
    extensions: tuple[x509.Extension[x509.ExtensionType], ...]
    challenge_password: str | None


def inspect_csr(csr: x509.CertificateSigningRequest) -> CsrInfo:
    """Extract the CN, SANs, requested extensions and challengePassword of a CSR.

    Raises:
      InvalidRequest: the CSR's extensions or attributes cannot be parsed.
    """
    try:
        exts = tuple(csr.extensions)
    except Exception as exc:  # ValueError, DuplicateExtension, UnsupportedGeneralNameType, ...
        raise InvalidRequest(f"CSR has malformed extension requests: {exc}") from None
    sans: tuple[x509.GeneralName, ...] = ()
    for ext in exts:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            sans = tuple(ext.value)
    password: str | None = None
    try:
        attr = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
        password = attr.value.decode("utf-8", "replace")
    except x509.AttributeNotFound:
        pass
    except Exception as exc:
        raise InvalidRequest(f"CSR has malformed attributes: {exc}") from None
    return CsrInfo(
        cn=first_cn(csr.subject), sans=sans, extensions=exts, challenge_password=password
    )


def general_name_str(name: x509.GeneralName) -> str:
    prefix = _PREFIXES.get(type(name))  # the usual exact types without an ABC isinstance chain
    if prefix is None:  # a subclass of one of them, or another kind of name (no prefix)
        prefix = next((p for kind, p in _PREFIXES.items() if isinstance(name, kind)), "")
    return f"{prefix}{name.value}"


_PREFIXES: dict[type, str] = {
    x509.DNSName: "DNS:",
    x509.IPAddress: "IP:",
    x509.RFC822Name: "email:",
    x509.UniformResourceIdentifier: "URI:",
}


# A DNS alt name: labels of at most 63 letters, digits, '-' and '_' (certnames allow it),
# neither starting nor ending with '-'; an optional leading '*.' and trailing '.'.
_DNS_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_NAME_RE = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")


def is_dns_name(value: str) -> bool:
    """True if *value* (lower case) can be a certificate's dNSName: an empty or malformed
    one (RFC 5280 4.2.1.6), with spaces, controls or newlines, must not reach a certificate."""
    return len(value) <= 253 and _DNS_NAME_RE.fullmatch(value) is not None


def _dns_name(value: str, item: str) -> str:
    """*value* if it is a DNS name, else ValueError naming *item*."""
    if not is_dns_name(value):
        raise ValueError(f"{item!r} is not a DNS name (or an IP address)")
    return value


def parse_alt_names(values: Iterable[str]) -> list[x509.GeneralName]:
    """``puppet,IP:10.0.0.1,DNS:ca.example.com`` style names to GeneralNames."""
    out: list[x509.GeneralName] = []
    for raw in values:
        item = raw.strip()
        if not item:
            continue
        kind, _, value = item.partition(":") if ":" in item else ("", "", item)
        kind = kind.upper()
        if kind == "IP":
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
        elif kind in ("", "DNS"):
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                out.append(x509.DNSName(_dns_name(value.lower(), item)))
        else:
            raise ValueError(f"unsupported alt name type in {item!r}; use DNS: or IP:")
    return out
