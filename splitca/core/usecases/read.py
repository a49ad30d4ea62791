"""Use cases: read and report (documents served verbatim, statuses, expirations)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable

from cryptography import x509

from splitca import pki
from splitca.core.ports import Blob, CRLEntry, Row
from splitca.core.usecases.common import Deps
from splitca.errors import SplitCAError
from splitca.pki.asn1 import REASON_CODES

__all__ = [
    "already_revoked",
    "certificate",
    "csr",
    "describe",
    "describe_from",
    "expirations",
    "revocation_details",
    "revocation_details_from_crl",
    "status",
]

_REASON_NAMES = {code: name for name, code in REASON_CODES.items()}
_PUPPET_ARCS = (pki.PP_REG_ARC + ".", pki.PP_PRIV_ARC + ".", pki.PP_AUTH_ARC + ".")


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


def describe(d: Deps, certname: str) -> dict[str, object] | None:
    """``splitca status``: the certificate_status object and what an operator asks next
    (see :func:`describe_from`)."""
    row = status(d, certname)
    if row is None:
        return None
    stored = d.store.csr(certname) if row.state == "requested" else d.store.cert(certname)
    revocation = None
    if row.state == "revoked" and row.serial is not None:
        revocation = revocation_details(d, [row.serial]).get(row.serial)
    return describe_from(row, None if stored is None else stored.data, revocation)


def describe_from(
    row: Row, document: bytes | None, revocation: dict[str, object] | None
) -> dict[str, object]:
    """*row* with what its *document* (the pending CSR, else the certificate) and its
    *revocation* add, wherever they were read from (the store, or the CA's HTTP API).

    Added to puppetserver's fields: ``extensions`` (the Puppet extensions requested or
    issued, by their Puppet names: ``pp_role``, ``pp_uuid``, ...; others by OID),
    ``challenge_password`` for a pending CSR (whether one is present, never its value),
    ``pending_reason``, and for a revoked certificate ``revocation`` (date and reason).
    """
    pending = row.reason if row.state == "requested" else ""
    out: dict[str, object] = json.loads(pki.with_pending_reason(row.json(), pending))
    out["extensions"] = {}
    if row.state == "requested":
        if document is not None:
            try:
                info = pki.inspect_csr(pki.load_csr(document))
            except SplitCAError:
                pass  # listed with what the index knows; `sign` says what is wrong with it
            else:
                out["extensions"] = _puppet_extensions(info.extensions)
                out["challenge_password"] = info.challenge_password is not None
    else:
        certs = pki.load_certificates(document) if document is not None else []
        if certs:
            with contextlib.suppress(ValueError, x509.DuplicateExtension):
                out["extensions"] = _puppet_extensions(certs[0].extensions)
    if revocation is not None:
        out["revocation"] = revocation
    return out


def _puppet_extensions(exts: Iterable[x509.Extension[x509.ExtensionType]]) -> dict[str, str]:
    return {
        pki.SHORT_NAMES.get(e.oid.dotted_string, e.oid.dotted_string): pki.extension_value_text(e)
        for e in exts
        if e.oid.dotted_string.startswith(_PUPPET_ARCS)
    }


def already_revoked(d: Deps, certnames: Iterable[str]) -> set[str]:
    """Those of *certnames* whose every serial is on the CRL in effect (two store queries)."""
    known = d.store.serials_for_names([n for n in certnames if pki.is_safe_name(n)])
    revoked = d.store.revoked_among(s for serials in known.values() for s in serials)
    return {name for name, serials in known.items() if revoked.issuperset(serials)}


def revocation_details(d: Deps, serials: Iterable[int]) -> dict[int, dict[str, object]]:
    """When and why each of *serials* was revoked (those on the CRL in effect)."""
    wanted = set(serials)
    return {e[0]: _revocation_dict(e) for e in d.store.revocations() if e[0] in wanted}


def revocation_details_from_crl(
    crl_pem: bytes, serials: Iterable[int]
) -> dict[int, dict[str, object]]:
    """:func:`revocation_details` from a served CRL file (this CA's CRL comes first)."""
    blocks = pki.split_pem(crl_pem, "X509 CRL")
    if not blocks:
        return {}
    wanted = set(serials)
    entries = pki.crl_entries(x509.load_pem_x509_crl(blocks[0]))
    return {
        e.serial: _revocation_dict((e.serial, e.date.timestamp(), pki.reason_code(e.reason)))
        for e in entries
        if e.serial in wanted
    }


def _revocation_dict(entry: CRLEntry) -> dict[str, object]:
    _, when, code = entry
    return {
        "date": dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds"),
        "reason": "unspecified" if code is None else _REASON_NAMES.get(code, str(code)),
    }


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
