"""Use cases: take a CSR (PUT certificate_request), autosign it or keep it pending; delete a CSR."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.autosign import AutosignDecision
from splitca.core.policy import Approved, check_subject, vet
from splitca.core.usecases.common import Deps, cert_fields, issue, refuse_duplicate, reserved_names
from splitca.errors import NotFound, PolicyViolation

__all__ = ["SubmitResult", "delete_csr", "submit_csr"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitResult:
    """What happened to a submitted CSR."""

    certname: str
    signed: bool
    reason: str
    serial: int | None = None


def submit_csr(d: Deps, certname: str, body: bytes, *, actor: Actor = SYSTEM) -> SubmitResult:
    """PUT certificate_request: validate, store as pending, autosign if policy says so.

    Unlike puppetserver, a CSR that could never be signed under this CA's policy
    (weak crypto, bad signature, disallowed SANs or extensions) is refused before
    anything is written, so the cadir holds no junk.

    Raises:
      InvalidRequest: not one PEM CSR.
      PolicyViolation: puppetserver's validation kinds and messages (HTTP 400).
    """
    csr = pki.load_csr(body)
    info = pki.inspect_csr(csr)
    fields = _csr_fields(certname, csr, info)
    with _audit_refusal(d, actor, fields):
        if info.cn is not None and pki.is_safe_name(info.cn):
            refuse_duplicate(d, info.cn)
        check_subject(certname, info.cn)
        approved = vet(csr, certname, d.rules, info=info)
    d.audit.event("csr-received", actor, **fields)
    decision = _decide(d, certname, body, info, actor)
    with d.store.names_locked([certname]):
        # Re-checked under the name lock: concurrent CSRs for one name (say, several
        # keys racing) must not all pass the check above and all be signed or stored.
        with _audit_refusal(d, actor, fields):
            refuse_duplicate(d, certname)
        if decision.sign:
            return _autosign(d, approved, decision, actor)
        d.store.save_csr(certname, pki.pem(csr), csr, reason=decision.reason)
    log.info("Saved CSR for %s (pending: %s)", certname, decision.reason)
    return SubmitResult(certname, False, decision.reason)


def _csr_fields(
    certname: str, csr: x509.CertificateSigningRequest, info: pki.CsrInfo
) -> dict[str, object]:
    return {
        "certname": certname,
        "fingerprint": pki.fingerprints(pki.der(csr))["SHA256"],
        "sans": [pki.general_name_str(n) for n in info.sans],
        "extensions": [e.oid.dotted_string for e in info.extensions],
    }


@contextlib.contextmanager
def _audit_refusal(d: Deps, actor: Actor, fields: dict[str, object]) -> Iterator[None]:
    """Record a PolicyViolation raised inside as a ``csr-refused`` event, and let it go on."""
    try:
        yield
    except PolicyViolation as exc:
        d.audit.event("csr-refused", actor, **fields, kind=exc.kind, message=str(exc))
        raise


def _decide(
    d: Deps, certname: str, body: bytes, info: pki.CsrInfo, actor: Actor
) -> AutosignDecision:
    if certname in reserved_names(d.settings):
        # The CA's own name and the admin names grant CA administration: a human signs those.
        decision = AutosignDecision(False, "reserved name (CA or admin certname); sign it by hand")
    else:
        decision = d.autosigner().decide(certname, body, info)
    d.audit.event(
        "autosign-decision",
        actor,
        certname=certname,
        sign=decision.sign,
        reason=decision.reason,
        **decision.details,
    )
    return decision


def _autosign(
    d: Deps, approved: Approved, decision: AutosignDecision, actor: Actor
) -> SubmitResult:
    cert = issue(d, approved, None, drop_csr=True)
    d.audit.event(
        "sign",
        Actor("autosign", actor.name, actor.address),
        **cert_fields(cert, approved.certname),
        reason=decision.reason,
    )
    return SubmitResult(approved.certname, True, decision.reason, cert.serial_number)


def delete_csr(d: Deps, certname: str, *, actor: Actor = SYSTEM) -> None:
    """DELETE certificate_request. Raises NotFound if there is none."""
    if not pki.is_safe_name(certname) or not d.store.has_csr(certname):
        raise NotFound(f"No certificate request for {certname}")
    with d.store.names_locked([certname]):
        d.store.delete_csr(certname)
    d.audit.event("csr-deleted", actor, certname=certname)
