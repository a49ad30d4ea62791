"""CA chains: subordinate CA certificates, ordering and checking a bundle and its CRL chain."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from splitca.pki.certs import CA_KEY_USAGE, ca_key_identifier, signing_certificate
from splitca.pki.csr import _ia5
from splitca.pki.keys import signing_hash
from splitca.pki.names import NETSCAPE_COMMENT, NETSCAPE_COMMENT_TEXT

__all__ = [
    "CRL_CLOCK_SKEW",
    "ChainError",
    "ChainedCRL",
    "build_subordinate_ca",
    "crl_signed_by",
    "crl_warn_before",
    "describe_chain_crls",
    "directly_issued",
    "is_ca",
    "load_key",
    "order_chain",
    "order_crls",
    "time_left_words",
]

CRL_CLOCK_SKEW = dt.timedelta(minutes=5)
_SHA = hashes.SHA256()
# A CRL in the chain is flagged a quarter of its lifetime before its nextUpdate, at most
# this long before: the root's CRL is re-issued by hand on an offline machine.
CHAIN_CRL_WARNING = dt.timedelta(days=60)


class ChainError(ValueError):
    """A bundle, CRL chain or key that cannot make a CA; the message says what and why."""


def _name(n: x509.Name) -> str:
    return repr(n.rfc4514_string())


def build_subordinate_ca(
    public_key: CertificatePublicKeyTypes,
    name: str,
    *,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_cert: x509.Certificate,
    serial: int,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> x509.Certificate:
    """A CA certificate for *name* signed by another CA (puppetserver's intermediate).

    The profile of :func:`splitca.pki.build_ca_certificate`, with the issuer's key
    identifier as AKI; it never outlives its issuer.
    """
    not_after = min(now + ttl, issuer_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.UnrecognizedExtension(NETSCAPE_COMMENT, _ia5(NETSCAPE_COMMENT_TEXT)), False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier(ca_key_identifier(issuer_cert), None, None), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(CA_KEY_USAGE, True)
        .sign(issuer_key, signing_hash(issuer_key))  # type: ignore[arg-type]
    )


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA:TRUE, and keyCertSign and cRLSign if it has a keyUsage."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ku.key_cert_sign and ku.crl_sign


def directly_issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if *issuer*'s name is *cert*'s issuer and its key made *cert*'s signature."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def load_key(data: bytes, passphrase: bytes | None) -> CertificateIssuerPrivateKeyTypes:
    """An imported CA key (PEM, encrypted or not), fully validated: it is outside input.

    Raises:
      ChainError: not a key, encrypted without a passphrase, a wrong passphrase, or a key
        type a CA cannot sign with.
    """
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise ChainError(
                "the private key is encrypted: give its passphrase with --passphrase-file"
            ) from None
        raise ChainError("the private key is not encrypted, but a passphrase was given") from None
    except ValueError as exc:
        if passphrase is not None and "decrypt" in str(exc).lower():
            raise ChainError("the passphrase does not decrypt the private key") from None
        raise ChainError("the private key file holds no PEM private key it can read") from None
    except UnsupportedAlgorithm as exc:
        raise ChainError(f"the private key uses an unsupported algorithm: {exc}") from None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ChainError(f"a CA cannot sign with a {type(key).__name__}")
    return key


def order_chain(
    certs: Sequence[x509.Certificate], key: CertificateIssuerPrivateKeyTypes
) -> tuple[list[x509.Certificate], bool]:
    """The bundle as a chain, the certificate of *key* first and the root last.

    Returns the chain and whether the bundle listed it in another order.

    Raises:
      ChainError: the key matches no certificate, the signing certificate is not a CA,
        a certificate's issuer is missing or did not sign it, the chain does not end at
        a self-signed root, or the bundle holds certificates outside the chain.
    """
    if not certs:
        raise ChainError("the certificate bundle holds no PEM certificate")
    signer = signing_certificate(certs, key)
    if signer is None:
        subjects = ", ".join(_name(c.subject) for c in certs)
        raise ChainError(
            f"the private key does not match any certificate in the bundle ({subjects})"
        )
    chain = [signer]
    rest = [c for c in certs if c is not signer]
    while True:
        top = chain[-1]
        if not is_ca(top):
            raise ChainError(
                f"{_name(top.subject)} is not a CA certificate (it needs basicConstraints "
                "CA:TRUE and, if it has a keyUsage, keyCertSign and cRLSign)"
            )
        if top.issuer == top.subject and directly_issued(top, top):
            break
        parent = next((c for c in rest if directly_issued(top, c)), None)
        if parent is None:
            named = [c for c in rest if c.subject == top.issuer]
            if named:
                raise ChainError(
                    f"the bundle's {_name(top.issuer)} did not sign {_name(top.subject)} "
                    "(its signature does not verify with that certificate's key)"
                )
            raise ChainError(
                f"the bundle lacks the issuer of {_name(top.subject)}, "
                f"{_name(top.issuer)}: give the whole chain up to the self-signed root"
            )
        chain.append(parent)
        rest.remove(parent)
    if rest:
        extra = ", ".join(_name(c.subject) for c in rest)
        raise ChainError(f"the bundle holds certificates outside the signing CA's chain: {extra}")
    _check_usable(chain)
    return chain, [c.fingerprint(_SHA) for c in chain] != [c.fingerprint(_SHA) for c in certs]


# A CA certificate's extendedKeyUsage, if it has one, limits every certificate below it
# (OpenSSL's TLS verification checks each CA's for the peer's purpose): TLS needs both.
_TLS_PURPOSES = {
    x509.oid.ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


def _check_usable(chain: Sequence[x509.Certificate]) -> None:
    """ChainError if verifiers would refuse what the chain's signing CA issues: a CA whose
    pathLenConstraint is below the CAs under it, or whose extendedKeyUsage excludes TLS."""
    below = 0  # CA certificates between chain[i] and a leaf (self-issued ones do not count)
    for i, cert in enumerate(chain):
        if i > 0 and chain[i - 1].issuer != chain[i - 1].subject:
            below += 1
        limit = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        if limit is not None and limit < below:
            raise ChainError(
                f"{_name(cert.subject)} allows no more than {limit} CAs below it "
                f"(pathLenConstraint) and the chain has {below}: no verifier would accept "
                "the certificates issued under it"
            )
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
            continue
        lacking = [name for oid, name in _TLS_PURPOSES.items() if oid not in eku]
        if lacking:
            raise ChainError(
                f"{_name(cert.subject)} is limited by extendedKeyUsage to purposes without "
                f"{' and '.join(lacking)}: agents and servers would refuse the certificates "
                "issued under it in TLS"
            )


def crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """True if *ca*'s key made *crl*'s signature (False for a key it cannot check with)."""
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def order_crls(
    crls: Sequence[x509.CertificateRevocationList],
    chain: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
) -> tuple[list[x509.CertificateRevocationList], bool]:
    """One CRL per CA of *chain*, in the chain's order; and whether they came in another.

    Raises:
      ChainError: a CRL from a CA outside the chain or not signed by its CA's key, two
        from one CA, none for one, one not yet valid or past its nextUpdate, or a CA
        certificate of the chain revoked by its issuer's CRL.
    """
    by_ca: dict[int, x509.CertificateRevocationList] = {}
    for crl in crls:
        where = next((i for i, ca in enumerate(chain) if ca.subject == crl.issuer), None)
        if where is None:
            raise ChainError(f"the CRL from {_name(crl.issuer)} is not from a CA of the chain")
        if not crl_signed_by(crl, chain[where]):
            raise ChainError(
                f"the CRL claiming issuer {_name(crl.issuer)} is not signed by that CA's key"
            )
        if where in by_ca:
            raise ChainError(f"the CRL chain holds two CRLs from {_name(crl.issuer)}")
        by_ca[where] = crl
    missing = [_name(ca.subject) for i, ca in enumerate(chain) if i not in by_ca]
    if missing:
        raise ChainError(
            f"the CRL chain has no CRL for {', '.join(missing)} (agents and Apache check "
            "every CA's CRL)"
        )
    ordered = [by_ca[i] for i in range(len(chain))]
    for crl in ordered:
        if crl.last_update_utc > now + CRL_CLOCK_SKEW:
            raise ChainError(
                f"the CRL from {_name(crl.issuer)} is dated "
                f"{crl.last_update_utc:%Y-%m-%d %H:%M}Z, in the future"
            )
        nxt = crl.next_update_utc
        if nxt is None or nxt <= now:
            when = "has no nextUpdate" if nxt is None else f"expired at {nxt:%Y-%m-%d %H:%M}Z"
            raise ChainError(
                f"the CRL from {_name(crl.issuer)} {when}: have its CA issue a new one"
            )
    for child, parent_crl in zip(chain, ordered[1:], strict=False):
        if parent_crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
            raise ChainError(
                f"{_name(child.subject)} is revoked by the CRL of {_name(parent_crl.issuer)}"
            )
    return ordered, list(crls) != ordered


@dataclass(frozen=True)
class ChainedCRL:
    """One CRL of a served CRL chain, as ``crl show`` and the server's log describe it."""

    issuer: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    own: bool  # issued by the CA that signs here (re-issued automatically)
    signature_valid: bool

    def warn_at(self) -> dt.datetime | None:
        if self.next_update is None:
            return None
        return self.next_update - crl_warn_before(self.this_update, self.next_update)


def crl_warn_before(this_update: dt.datetime, next_update: dt.datetime) -> dt.timedelta:
    """How long before its nextUpdate a CRL is flagged: a quarter of its life, <= 60 days."""
    return min((next_update - this_update) / 4, CHAIN_CRL_WARNING)


def time_left_words(delta: dt.timedelta) -> str:
    """*delta* as a warning says it: days, hours or minutes (never negative)."""
    secs = int(delta.total_seconds())
    if secs >= 2 * 86400:
        return f"{secs // 86400} days"
    if secs >= 2 * 3600:
        return f"{secs // 3600} hours"
    return f"{max(secs // 60, 0)} minutes"


def describe_chain_crls(
    crls: Sequence[x509.CertificateRevocationList],
    cas: Sequence[x509.Certificate],
    signer: x509.Certificate,
) -> list[ChainedCRL]:
    """Every CRL of a CRL chain, with whether a CA of *cas* signed it and whether it is ours."""
    out = []
    for crl in crls:
        ca = next((c for c in cas if c.subject == crl.issuer), None)
        out.append(
            ChainedCRL(
                issuer=crl.issuer.rfc4514_string(),
                number=_crl_number(crl),
                this_update=crl.last_update_utc,
                next_update=crl.next_update_utc,
                own=crl.issuer == signer.subject,
                signature_valid=ca is not None and crl_signed_by(crl, ca),
            )
        )
    return out


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0
