"""CSR vetting: puppetserver's rules, stricter on weak crypto; an Approved record or a refusal."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from splitca import pki
from splitca.errors import PolicyViolation

__all__ = [
    "Approved",
    "CsrRules",
    "check_subject",
    "extra_alt_names",
    "is_authorization_extension",
    "vet",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CsrRules:
    """What this CA accepts in a CSR."""

    allow_subject_alt_names: bool = False
    allow_authorization_extensions: bool = False
    allow_legacy_signatures: bool = False
    min_rsa_bits: int = 2048


@dataclass(frozen=True)
class Approved:
    """A vetted request: the only things a certificate is built from (never the raw CSR)."""

    certname: str
    public_key: CertificatePublicKeyTypes
    alt_names: tuple[x509.GeneralName, ...]
    extensions: tuple[x509.Extension[x509.ExtensionType], ...]


def check_subject(url_name: str, cn: str | None) -> None:
    """puppetserver's validate-subject!: CN equals the URL name, then the name rules."""
    if cn != url_name:
        raise PolicyViolation(
            "hostname-mismatch",
            url_name,
            f'Instance name "{cn}" does not match requested key "{url_name}"',
        )
    if problem := pki.certname_problem(url_name):
        raise PolicyViolation("invalid-subject-name", url_name, problem)


def _is_allowed_extension(oid: str) -> bool:
    """puppetserver's allowed-extension?: SAN, or a strict sub-OID of pp reg/priv/auth arcs."""
    if oid == x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string:
        return True
    if oid == pki.PP_CLI_AUTH.dotted_string:
        return False
    return any(
        oid.startswith(arc + ".") for arc in (pki.PP_REG_ARC, pki.PP_PRIV_ARC, pki.PP_AUTH_ARC)
    )


_STRONG_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def check_crypto(csr: x509.CertificateSigningRequest, certname: str, rules: CsrRules) -> None:
    """Refuse weak keys and weak signature hashes (puppetserver accepts anything)."""
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < rules.min_rsa_bits:
        raise PolicyViolation(
            "weak-key",
            certname,
            f"CSR '{certname}' has a {key.key_size}-bit RSA key; at least {rules.min_rsa_bits} bits are required.",
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _STRONG_CURVES:
        raise PolicyViolation(
            "weak-key",
            certname,
            f"CSR '{certname}' has an EC key on curve {key.curve.name}; use P-256, P-384 or P-521.",
        )
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        # Ed25519/Ed448, DSA, ...: Puppet agents (Ruby OpenSSL, key_type rsa or ec) make
        # only RSA and EC keys, and Puppet's TLS stacks expect nothing else.
        raise PolicyViolation(
            "unsupported-key",
            certname,
            f"CSR '{certname}' has {_key_kind(key)} key, which is not accepted; "
            "use an RSA key or an EC key on P-256, P-384 or P-521.",
        )
    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:
        algorithm = None
        if not rules.allow_legacy_signatures:
            raise PolicyViolation(
                "weak-signature",
                certname,
                f"CSR '{certname}' uses an unsupported signature algorithm.",
            ) from None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1) and not rules.allow_legacy_signatures:
        raise PolicyViolation(
            "weak-signature",
            certname,
            f"CSR '{certname}' is signed with {algorithm.name.upper()}, which is refused. "
            "Set allow_legacy_signatures: true to accept CSRs from Puppet 2.6 agents.",
        )


def _key_kind(key: CertificatePublicKeyTypes) -> str:
    kinds = {
        dsa.DSAPublicKey: "a DSA",
        ed25519.Ed25519PublicKey: "an Ed25519",
        ed448.Ed448PublicKey: "an Ed448",
    }
    for cls, kind in kinds.items():
        if isinstance(key, cls):
            return kind
    return f"a {type(key).__name__}"


_AUTH_PREFIX = pki.PP_AUTH_ARC + "."


def extra_alt_names(sans: Iterable[x509.GeneralName], certname: str) -> list[x509.GeneralName]:
    """The alt names beyond DNS:<certname>, which every leaf carries: what
    ``allow_subject_alt_names`` governs."""
    own = x509.DNSName(certname)
    return [n for n in sans if n != own]


def is_authorization_extension(oid: str) -> bool:
    """Whether the dotted *oid* is in Puppet's pp_auth arc: what
    ``allow_authorization_extensions`` governs."""
    return oid.startswith(_AUTH_PREFIX)


def vet(
    csr: x509.CertificateSigningRequest,
    certname: str,
    rules: CsrRules,
    *,
    allow_alt_names: bool = False,
    info: pki.CsrInfo | None = None,
) -> Approved:
    """Run puppetserver's signing checks (SAN, auth extensions, allowlist, signature) and ours.

    *allow_alt_names* lets a human override the SAN rule for one signing
    (``splitca sign --allow-dns-alt-names``).

    Raises:
      PolicyViolation: with puppetserver's message for the first failed check.
    """
    info = info or pki.inspect_csr(csr)
    check_crypto(csr, certname, rules)
    extra = extra_alt_names(info.sans, certname)
    if extra and not (rules.allow_subject_alt_names or allow_alt_names):
        names = ", ".join(pki.general_name_str(n) for n in extra)
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' contains extra subject alternative names ({names}), which are disallowed. "
            "To allow subject alternative names, set allow_subject_alt_names: true in the splitca "
            "configuration, or issue the certificate with 'splitca generate --dns-alt-names'.",
        )
    for name in info.sans:
        if not isinstance(name, x509.DNSName | x509.IPAddress):
            raise PolicyViolation(
                "disallowed-extension",
                certname,
                f"CSR '{certname}' contains a subject alternative name of an unsupported type "
                f"({pki.general_name_str(name)}); only DNS and IP names are allowed.",
            )
        if (
            name in extra
            and isinstance(name, x509.DNSName)
            and not pki.is_dns_name(name.value.lower())
        ):
            # Allowed alt names are the agent's strings: an empty one, spaces, newlines or
            # escapes would be signed into the certificate and shown wherever it is read.
            # (DNS:<certname>, always allowed, passed the certname rules instead.)
            shown = name.value.encode("unicode_escape", "backslashreplace").decode("ascii")
            raise PolicyViolation(
                "disallowed-extension",
                certname,
                f"CSR '{certname}' contains a subject alternative name that is not a DNS "
                f"name (DNS:{shown[:100]}).",
            )
    auth = [e for e in info.extensions if is_authorization_extension(e.oid.dotted_string)]
    if auth and not rules.allow_authorization_extensions:
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' contains an authorization extension, which is disallowed. "
            "To allow authorization extensions, set allow_authorization_extensions: true in the "
            "splitca configuration.",
        )
    bad = [
        e.oid.dotted_string
        for e in info.extensions
        if not _is_allowed_extension(e.oid.dotted_string)
    ]
    if bad:
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"Found extensions that are not permitted: {', '.join(bad)}",
        )
    critical = [
        e.oid.dotted_string
        for e in info.extensions
        if e.critical and not isinstance(e.value, x509.SubjectAlternativeName)
    ]
    if critical:
        # Requested extensions are copied into the certificate. Marked critical, an
        # extension no verifier knows (every pp_* one) makes OpenSSL, Java and Ruby
        # reject the certificate ("unhandled critical extension"): refused, never issued.
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' marks requested extensions critical ({', '.join(critical)}); "
            "Puppet extensions must be non-critical, or no TLS client accepts the certificate.",
        )
    if not _signature_valid(csr):
        raise PolicyViolation(
            "invalid-signature",
            certname,
            "CSR contains a public key that does not correspond to the signing key",
        )
    copied = tuple(
        e for e in info.extensions if not isinstance(e.value, x509.SubjectAlternativeName)
    )
    return Approved(certname, csr.public_key(), tuple(info.sans), copied)


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """The CSR's self-signature verifies (MD5/SHA-1 too: cryptography's check refuses those
    outright, so legacy signatures, once allowed by policy, are verified by hand)."""
    try:
        if csr.is_signature_valid:
            return True
    except Exception:  # an algorithm cryptography will not verify: only MD5/SHA-1 below
        pass
    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:
        return False
    if not isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        return False
    return pki.verify_signature(
        csr.public_key(), csr.signature, csr.tbs_certrequest_bytes, algorithm
    )
