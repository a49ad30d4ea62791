"""Use cases: read and report (documents served verbatim, statuses, expirations)."""

from __future__ import annotations

from cryptography import x509

from splitca import pki
from splitca.core.ports import Blob, Row
from splitca.core.usecases.common import Deps

__all__ = ["certificate", "csr", "expirations", "status"]


def certificate(d: Deps, certname: str) -> Blob | None:
    """The signed certificate, served verbatim (no parsing), or None."""
    if not pki.is_safe_name(certname):
        return None
    return d.store.cert(certname)


def csr(d: Deps, certname: str) -> Blob | None:
    """The pending request, verbatim, or None."""
    if not pki.is_safe_name(certname):
        return None
    return d.store.csr(certname)


def status(d: Deps, certname: str) -> Row | None:
    if not pki.is_safe_name(certname):
        return None
    return d.store.status(certname)


def expirations(d: Deps) -> dict[str, dict[str, str]]:
    """When the CA certificates and the CRLs expire (puppetserver's ``expirations``)."""
    certs = pki.load_certificates(d.store.ca_cert().data)
    crls = [x509.load_pem_x509_crl(b) for b in pki.split_pem(d.store.crl().data, "X509 CRL")]
    return {
        "ca-certs": {
            pki.first_cn(c.subject) or c.subject.rfc4514_string(): pki.puppet_time(
                c.not_valid_after_utc
            )
            for c in certs
        },
        "crls": {
            pki.first_cn(c.issuer) or c.issuer.rfc4514_string(): pki.puppet_time(c.next_update_utc)
            for c in crls
            if c.next_update_utc is not None
        },
    }
