"""Pure X.509 helpers over `cryptography`: Puppet's profiles, OIDs, names, fingerprints; no I/O."""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AttributeOID, NameOID

from splitca.errors import InvalidRequest
from splitca.pki import asn1

__all__ = [
    "PP_AUTH_ARC",
    "PP_CLI_AUTH",
    "CsrInfo",
    "Revocation",
    "build_ca_certificate",
    "build_crl",
    "build_leaf_certificate",
    "certname_problem",
    "fingerprints",
    "generate_private_key",
    "load_csr",
    "puppet_time",
]

# --- Puppet's OID arcs (puppet-ca-api.md section 7.6) ---------------------------------
PUPPETLABS = "1.3.6.1.4.1.34380"
PP_REG_ARC = PUPPETLABS + ".1.1"
PP_PRIV_ARC = PUPPETLABS + ".1.2"
PP_AUTH_ARC = PUPPETLABS + ".1.3"
PP_CLI_AUTH = x509.ObjectIdentifier(PP_AUTH_ARC + ".39")
NETSCAPE_COMMENT = x509.ObjectIdentifier("2.16.840.1.113730.1.13")
NETSCAPE_COMMENT_TEXT = b"Puppet Server Internal Certificate"

_REG_NAMES = [
    "pp_uuid",
    "pp_instance_id",
    "pp_image_name",
    "pp_preshared_key",
    "pp_cost_center",
    "pp_product",
    "pp_project",
    "pp_application",
    "pp_service",
    "pp_employee",
    "pp_created_by",
    "pp_environment",
    "pp_role",
    "pp_software_version",
    "pp_department",
    "pp_cluster",
    "pp_provisioner",
    "pp_region",
    "pp_datacenter",
    "pp_zone",
    "pp_network",
    "pp_securitypolicy",
    "pp_cloudplatform",
    "pp_apptier",
    "pp_hostname",
    "pp_owner",
]
SHORT_NAMES: dict[str, str] = {f"{PP_REG_ARC}.{i}": n for i, n in enumerate(_REG_NAMES, 1)}
SHORT_NAMES.update(
    {
        PP_AUTH_ARC + ".1": "pp_authorization",
        PP_AUTH_ARC + ".13": "pp_auth_role",
        PP_AUTH_ARC + ".39": "pp_cli_auth",
    }
)
OIDS_BY_SHORT_NAME = {v: k for k, v in SHORT_NAMES.items()}

MAX_CERTNAME_LENGTH = 250  # "<name>.pem" must fit in a 255-byte file name
# RFC 5280 ub-common-name: a certificate's CN holds at most 64 characters, and the
# certname is the CN, so a longer name could be stored but never signed.
MAX_CN_LENGTH = 64

# Equivalent of puppetserver's validate-subject! (see puppet-ca-api.md section 4.2),
# including its tolerance of trailing dots (Java's String.split drops trailing empties).
_LABELS_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_-]*[a-z0-9_])*\.*")


_BAD_FORMAT = "Subject hostname format is invalid"

# cryptography warns (UserWarning, with a source line on stderr) when it parses a CN
# longer than 64 characters; such a name is refused here with a clear message instead.
warnings.filterwarnings(
    "ignore", message="Attribute's length must be >= 1 and <= 64", category=UserWarning
)


@functools.lru_cache(maxsize=4096)
def _format_problem(name: str) -> str | None:
    """puppetserver's message if *name* breaks the certname format rules, else None."""
    if any(c.isupper() for c in name):
        return "Certificate names must be lower case."
    if "*" in name:
        return f"Subject contains a wildcard, which is not allowed: {name}"
    if (
        not name
        or len(name) > MAX_CERTNAME_LENGTH
        or name.endswith("-")
        or not name.isascii()
        or _LABELS_RE.fullmatch(name) is None
    ):
        return _BAD_FORMAT
    return None


@functools.lru_cache(maxsize=4096)
def certname_problem(name: str) -> str | None:
    """The message for a name that cannot be a new certname, or None if it can be.

    puppetserver's format rules, and the CN length limit: every way a name enters
    the CA (CSR submission, registration, enrollment, generate, configuration)
    checks this, so a name that could never be signed is refused at the door.
    """
    problem = _format_problem(name)
    if problem and (len(name) <= MAX_CN_LENGTH or problem != _BAD_FORMAT):
        return problem
    if len(name) > MAX_CN_LENGTH:
        return (
            f"Certificate names must be at most {MAX_CN_LENGTH} characters long "
            f"(the limit of a certificate's common name, RFC 5280); this one has {len(name)}."
        )
    return None


def is_safe_name(name: str) -> bool:
    """True if *name* can be used as a file name in the cadir (no path tricks at all).

    Looser than :func:`certname_problem` on length only: names stored by older
    versions (or another CA) can still be listed, refused, revoked and deleted.
    """
    return _format_problem(name) is None


def puppet_time(when: dt.datetime) -> str:
    """Format a time the way puppetserver does in JSON and inventory: ``2031-11-23T20:25:45UTC``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SUTC")


def colon_hex(digest: bytes) -> str:
    return digest.hex(":").upper()


def fingerprints(der: bytes) -> dict[str, str]:
    """puppetserver's ``fingerprints`` object for DER bytes (cert or CSR)."""
    sha256 = colon_hex(hashlib.sha256(der).digest())
    return {
        "SHA1": colon_hex(hashlib.sha1(der).digest()),
        "SHA256": sha256,
        "SHA512": colon_hex(hashlib.sha512(der).digest()),
        "default": sha256,
    }


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


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """PEM in the traditional format Puppet writes (``BEGIN RSA PRIVATE KEY``/``EC``)."""
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


def load_private_key(data: bytes) -> CertificateIssuerPrivateKeyTypes:
    """Load the CA's own key. Its file is trusted, so OpenSSL's slow RSA consistency
    check (~0.4 s for RSA-4096, paid by every CLI command) is skipped."""
    key = serialization.load_pem_private_key(
        data, password=None, unsafe_skip_rsa_key_validation=True
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


# --- PEM parsing -----------------------------------------------------------------------
#
# A block is ``-----BEGIN <LABEL>-----``, an optional CR, a LF, anything, and the first
# ``-----END <LABEL>-----`` after it with the same label (LABEL: A-Z, 0-9, space). The
# scan is linear (n log n at worst) on any input: each BEGIN and END marker is read
# once, and the END a BEGIN needs is looked up by label instead of being searched for.
# (A backreferencing regex rescans the rest of the input for every unmatched BEGIN:
# quadratic, 29 s of CPU for 256 KB of ``-----BEGIN A-----`` lines.)

_BEGIN = b"-----BEGIN "
_END = b"-----END "
_DASHES = b"-----"
_LABEL_RUN = re.compile(rb"[A-Z0-9 ]*")


def _marker_label(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """(label, end of the closing dashes) of the marker whose label starts at *pos*."""
    run = _LABEL_RUN.match(data, pos)
    assert run is not None  # a * pattern always matches
    label_end = run.end()
    if label_end == pos or not data.startswith(_DASHES, label_end):
        return None
    return data[pos:label_end], label_end + len(_DASHES)


def _end_markers(data: bytes) -> dict[bytes, list[tuple[int, int]]]:
    """Every ``-----END <LABEL>-----`` in *data*: label -> [(start, end)] in order."""
    out: dict[bytes, list[tuple[int, int]]] = {}
    pos = data.find(_END)
    while pos != -1:
        marker = _marker_label(data, pos + len(_END))
        if marker is not None:
            out.setdefault(marker[0], []).append((pos, marker[1]))
        pos = data.find(_END, pos + len(_END))
    return out


def pem_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(label, start, end) of every PEM block in *data*, left to right, never overlapping."""
    ends = _end_markers(data) if _BEGIN in data else {}
    out: list[tuple[str, int, int]] = []
    pos = data.find(_BEGIN)
    while pos != -1:
        marker = _marker_label(data, pos + len(_BEGIN))
        nxt = pos + len(_BEGIN)
        if marker is not None:
            label, body = marker
            if data.startswith(b"\r\n", body):
                body += 2
            elif data.startswith(b"\n", body):
                body += 1
            else:
                body = -1
            candidates = ends.get(label) if body != -1 else None
            if candidates:
                i = bisect.bisect_left(candidates, (body, -1))
                if i < len(candidates):
                    end = candidates[i][1]
                    out.append((label.decode("ascii"), pos, end))
                    nxt = end
        pos = data.find(_BEGIN, nxt)
    return out


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Return (label, whole block) for every PEM block in *data*."""
    return [(label, data[start:end]) for label, start, end in pem_spans(data)]


def outside_pem(data: bytes, spans: Iterable[tuple[str, int, int]]) -> bytes:
    """The bytes of *data* outside the given blocks (from :func:`pem_spans`)."""
    parts: list[bytes] = []
    pos = 0
    for _, start, end in spans:
        parts.append(data[pos:start])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def split_pem(data: bytes, label: str) -> list[bytes]:
    return [block for lab, block in pem_blocks(data) if lab == label]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(b) for b in split_pem(data, "CERTIFICATE")]


# Puppet tooling writes CSRs with these version values: 0 (the only one PKCS#10
# defines: Puppet agents, openssl, cryptography) and 2 (the puppetserver ca tool,
# ``csr.version = 2`` in Ruby). 1 is accepted as well (the same confusion of X.509's
# v2 with its encoding); anything else is refused.
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
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return str(name.value)


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
                out.append(x509.DNSName(value.lower()))
        else:
            raise ValueError(f"unsupported alt name type in {item!r}; use DNS: or IP:")
    return out


# --- building certificates -------------------------------------------------------------


def _ski(public_key: CertificatePublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def ca_key_identifier(ca_cert: x509.Certificate) -> bytes:
    try:
        return ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return _ski(ca_cert.public_key()).digest


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
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
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
    sans = list(alt_names)
    own = x509.DNSName(certname)
    if own not in sans:
        sans.append(own)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.UnrecognizedExtension(NETSCAPE_COMMENT, _ia5(NETSCAPE_COMMENT_TEXT)), False
        )
        .add_extension(x509.AuthorityKeyIdentifier(ca_key_identifier(ca_cert), None, None), False)
        .add_extension(_ski(public_key), False)
    )
    for ext in extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return (
        builder.add_extension(x509.SubjectAlternativeName(sans), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_LEAF_EKU, True)
        .add_extension(_LEAF_KU, True)
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
        return next((c for c in certs if _spki(c.public_key()) == spki), None)
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


# --- puppetserver's certificate_status object (section 3.9) ----------------------------


def _status_common(
    name: str, extensions: Iterable[x509.Extension[x509.ExtensionType]], der_bytes: bytes
) -> dict[str, object]:
    dns: list[str] = []
    sans: list[str] = []
    auth: dict[str, str] = {}
    for ext in extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            dns, sans = san_strings(ext.value)
        elif ext.oid.dotted_string.startswith(PP_AUTH_ARC + "."):
            dotted = ext.oid.dotted_string
            auth[SHORT_NAMES.get(dotted, dotted)] = extension_value_text(ext)
    fps = fingerprints(der_bytes)
    return {
        "name": name,
        "dns_alt_names": dns,
        "subject_alt_names": sans,
        "authorization_extensions": auth,
        "fingerprint": fps["default"],
        "fingerprints": fps,
    }


def cert_status_fields(name: str, cert: x509.Certificate) -> dict[str, object]:
    """The certificate_status fields of a signed certificate, without ``state``."""
    try:
        exts: Iterable[x509.Extension[x509.ExtensionType]] = cert.extensions
    except (ValueError, x509.DuplicateExtension):
        exts = ()
    out = _status_common(name, exts, der(cert))
    out["not_before"] = puppet_time(cert.not_valid_before_utc)
    out["not_after"] = puppet_time(cert.not_valid_after_utc)
    out["serial_number"] = cert.serial_number
    return out


def csr_status_fields(name: str, csr: x509.CertificateSigningRequest) -> dict[str, object]:
    """The certificate_status fields of a pending CSR, without ``state``."""
    try:
        exts: Iterable[x509.Extension[x509.ExtensionType]] = csr.extensions
    except (ValueError, x509.DuplicateExtension):
        exts = ()
    return _status_common(name, exts, der(csr))


def own_crl(crl_pem: bytes, cacert_pem: bytes) -> x509.CertificateRevocationList | None:
    """The CRL in *crl_pem* issued by the signing CA of *cacert_pem*; else the first CRL."""
    blocks = split_pem(crl_pem, "X509 CRL")
    if not blocks:
        return None
    crls = [x509.load_pem_x509_crl(b) for b in blocks]
    signer = signing_certificate(load_certificates(cacert_pem) if cacert_pem else [])
    if signer is not None:
        for crl in crls:
            if crl.issuer == signer.subject:
                return crl
    return crls[0]


def with_pending_reason(status_json: str, reason: str) -> str:
    """A pending CSR's certificate_status JSON object plus ``pending_reason`` (why it is not
    signed), the one place splitca's extension to puppetserver's object is added.

    *status_json* is one compact JSON object; an empty *reason* leaves it unchanged.
    """
    if not reason:
        return status_json
    return status_json[:-1] + f',"pending_reason":{json.dumps(reason)}}}'
