"""puppetserver's certificate_status objects and the pending_reason splice."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cryptography import x509

from splitca.pki.certs import der
from splitca.pki.csr import extension_value_text, san_strings
from splitca.pki.names import PP_AUTH_ARC, SAN_OID, SHORT_NAMES, fingerprints, puppet_time

# --- puppetserver's certificate_status object (section 3.9) ----------------------------

_AUTH_PREFIX = PP_AUTH_ARC + "."


def _status_common(
    name: str, extensions: Iterable[x509.Extension[x509.ExtensionType]], der_bytes: bytes
) -> dict[str, object]:
    dns: list[str] = []
    sans: list[str] = []
    auth: dict[str, str] = {}
    for ext in extensions:
        oid = ext.oid
        if oid == SAN_OID:  # (its value is always a SubjectAlternativeName)
            dns, sans = san_strings(ext.value)  # type: ignore[arg-type]
        elif (dotted := oid.dotted_string).startswith(_AUTH_PREFIX):
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


def with_pending_reason(status_json: str, reason: str) -> str:
    """A pending CSR's certificate_status JSON object plus ``pending_reason`` (why it is not
    signed), the one place splitca's extension to puppetserver's object is added.

    *status_json* is one compact JSON object; an empty *reason* leaves it unchanged.
    """
    if not reason:
        return status_json
    return status_json[:-1] + f',"pending_reason":{json.dumps(reason)}}}'
