"""Use case: renew a certificate (certificate_renewal): same subject, key and extensions."""

from __future__ import annotations

from cryptography import x509

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.policy import Approved
from splitca.core.usecases.common import Deps, cert_fields, issue
from splitca.errors import Conflict, InvalidRequest

__all__ = ["renew"]

# Extensions every leaf gets afresh; the rest are carried over from the old certificate.
_REBUILT = frozenset(
    {
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        pki.NETSCAPE_COMMENT,
    }
)


def renew(d: Deps, cert: x509.Certificate, *, actor: Actor = SYSTEM) -> x509.Certificate:
    """certificate_renewal: same subject, key and extensions; new serial and validity.

    Raises:
      InvalidRequest: the certificate was not issued by this CA ("does not match signature").
      Conflict: it is revoked (checked again under the name lock, see revoke).
    """
    if _authority_key_id(cert) != pki.ca_key_identifier(d.signer.current().certificate):
        raise InvalidRequest("Certificate present, but does not match signature")
    if d.store.is_revoked(cert.serial_number):
        raise Conflict("Certificate is revoked and cannot be renewed")
    certname = pki.first_cn(cert.subject) or ""
    if not pki.is_safe_name(certname):
        raise InvalidRequest("No valid certificate found in renewal request")
    approved = Approved(certname, cert.public_key(), _alt_names(cert), _carried_over(cert))
    with d.store.names_locked([certname]):
        # Again under the name lock: a revoke or clean of this name holds it from reading
        # the name's serials until the CRL is installed, so either this renewal was
        # issued before (and its serial is on that CRL) or it sees the revocation here.
        if d.store.is_revoked(cert.serial_number):
            raise Conflict("Certificate is revoked and cannot be renewed")
        new = issue(d, approved, d.settings.auto_renewal_cert_ttl, drop_csr=False)
    d.audit.event("renew", actor, previous_serial=cert.serial_number, **cert_fields(new, certname))
    return new


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _alt_names(cert: x509.Certificate) -> tuple[x509.GeneralName, ...]:
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return ()


def _carried_over(cert: x509.Certificate) -> tuple[x509.Extension[x509.ExtensionType], ...]:
    return tuple(e for e in cert.extensions if e.oid not in _REBUILT)
