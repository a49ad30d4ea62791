"""Use cases: take a CSR (PUT certificate_request), autosign it or keep it pending; delete a CSR."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.autosign import AutosignDecision
from splitca.core.policy import (
    Approved,
    check_subject,
    extra_alt_names,
    is_authorization_extension,
    vet,
)
from splitca.core.ports import Refusal
from splitca.core.usecases.common import (
    RESERVED_PENDING,
    Deps,
    cert_fields,
    issue,
    refuse_duplicate,
    reserved_names,
    state_of,
)
from splitca.core.usecases.crl import add_to_crl
from splitca.errors import InvalidRequest, NotFound, PolicyViolation

__all__ = ["SubmitResult", "delete_csr", "one_line", "refusals", "submit_csr"]

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
    with _AuditRefusal(d, actor, {"certname": certname}):
        csr = pki.load_csr(body)
        info = pki.inspect_csr(csr)
    fields = _csr_fields(certname, csr, info)
    # A CSR with a challengePassword for a name that has a certificate may be a rebuilt
    # machine with a fresh registration token: the autosigner decides (see _supersede).
    candidate, guarded = _may_supersede(d, certname, info)
    with _AuditRefusal(d, actor, fields):
        if info.cn is not None and pki.is_safe_name(info.cn) and not candidate:
            refuse_duplicate(d, info.cn, why=guarded)
        check_subject(certname, info.cn)
        approved = vet(csr, certname, d.rules, info=info)
    d.audit.event("csr-received", actor, **fields)
    decision = _decide(d, certname, body, info, actor)
    with d.store.names_locked([certname]):
        # Re-checked under the name lock: concurrent CSRs for one name (say, several
        # keys racing) must not all pass the check above and all be signed or stored.
        with _AuditRefusal(d, actor, fields):
            if (
                candidate
                and decision.sign
                and decision.replaces_certificate
                and (state := state_of(d, certname)) in _SUPERSEDABLE
                and not _beyond_autosign(d, certname, state)  # as it is now, under the lock
            ):
                return _supersede(d, approved, decision, actor)
            refuse_duplicate(d, certname, why=_why_not_superseded(decision) if candidate else "")
        if decision.sign:
            return _autosign(d, approved, decision, actor)
        d.store.save_csr(certname, pki.pem(csr), csr, reason=decision.reason)
    log.info("Saved CSR for %s (pending: %s)", certname, decision.reason)
    return SubmitResult(certname, False, decision.reason)


# A certificate, valid or revoked, may be superseded; a pending CSR is not (clean it).
_SUPERSEDABLE = ("signed", "revoked")


def _may_supersede(d: Deps, certname: str, info: pki.CsrInfo) -> tuple[bool, str]:
    """Whether this CSR could replace *certname*'s certificate, if the autosigner agrees;
    and, if it cannot only because the certificate is guarded, why (else "")."""
    if (
        info.cn != certname
        or info.challenge_password is None
        or d.settings.allow_duplicate_certs
        or certname in reserved_names(d.settings)
    ):
        return False, ""
    state = state_of(d, certname)
    if state not in _SUPERSEDABLE:
        return False, ""
    why = _beyond_autosign(d, certname, state)
    return not why, why


def _beyond_autosign(d: Deps, certname: str, state: str | None) -> str:
    """Why *certname*'s certificate holds more than autosign could have issued (so a human
    issued it, and only a human replaces it), or "".

    A token proves a machine, and whoever writes the registry can enroll machines; that
    must not reach the CA's other identities: a compile master's dns_alt_names, an admin's
    pp_cli_auth. Only a valid (signed) certificate is guarded; a revoked one protects nothing.
    """
    if state != "signed":
        return ""
    blob = d.store.cert(certname)
    if blob is None:
        return ""
    try:
        cert = x509.load_pem_x509_certificate(blob.data)
        extensions = list(cert.extensions)
    except Exception:  # ValueError, DuplicateExtension, ...: fail closed
        return f"its certificate cannot be read; run 'splitca clean {certname}' to replace it"
    what: list[str] = []
    for ext in extensions:
        oid = ext.oid.dotted_string
        if isinstance(ext.value, x509.SubjectAlternativeName):
            extra = extra_alt_names(ext.value, certname)
            if extra and not d.rules.allow_subject_alt_names:
                what.append("alt names " + ", ".join(map(pki.general_name_str, extra)))
        elif oid == pki.PP_CLI_AUTH.dotted_string or (
            is_authorization_extension(oid) and not d.rules.allow_authorization_extensions
        ):
            what.append(f"authorization extension {pki.SHORT_NAMES.get(oid, oid)}")
    if not what:
        return ""
    return (
        f"a registration token replaces only what autosign could issue, and this certificate "
        f"has {'; '.join(what)}; run 'splitca clean {certname}' to replace it"
    )


def _supersede(
    d: Deps, approved: Approved, decision: AutosignDecision, actor: Actor
) -> SubmitResult:
    """Issue the new certificate and revoke every older one of the name; the caller holds
    the name's lock. The new certificate is signed first (if it cannot be, nothing is
    revoked), then the CRL with the old serials is published, and only then is the new
    certificate published: no moment has two valid certificates for the name."""
    name = approved.certname
    old = d.store.serials_for(name)  # before the new serial is recorded for the name
    reason = x509.ReasonFlags.superseded

    def revoke_old() -> None:
        added = add_to_crl(d, set(old), reason, actor=actor) if old else set()
        d.audit.event(
            "revoke",
            actor,
            certname=name,
            serials=old,
            newly_revoked=sorted(added),
            reason=reason.name,
        )

    cert = issue(d, approved, None, drop_csr=True, before_publish=revoke_old)
    why = f"{decision.reason}; superseded serial{'s' if len(old) > 1 else ''} {', '.join(map(str, old))}"
    d.audit.event(
        "sign",
        Actor("autosign", actor.name, actor.address),
        **cert_fields(cert, name),
        reason=why,
        superseded=old,
    )
    log.info("Superseded the certificate of %s (serials %s revoked)", name, old)
    return SubmitResult(name, True, why, cert.serial_number)


def _why_not_superseded(decision: AutosignDecision) -> str:
    if decision.sign:  # autosign true, an allowlist, an executable: they vouch for no machine
        return "only a registration token (autosign: registry) can replace a certificate"
    return decision.reason


def _csr_fields(
    certname: str, csr: x509.CertificateSigningRequest, info: pki.CsrInfo
) -> dict[str, object]:
    return {
        "certname": certname,
        "fingerprint": pki.sha256_fingerprint(pki.der(csr)),
        "sans": [pki.general_name_str(n) for n in info.sans],
        "extensions": [e.oid.dotted_string for e in info.extensions],
    }


class _AuditRefusal:
    """A refusal raised inside (PolicyViolation, or InvalidRequest: not a CSR) is made
    visible, and goes on: a ``csr-refused`` audit event, one log line (name, address,
    reason) and a record in the store for ``splitca list --refused``.

    (A class, not a generator-based context manager: it is entered three times per CSR.)
    """

    __slots__ = ("actor", "d", "fields")

    def __init__(self, d: Deps, actor: Actor, fields: dict[str, object]) -> None:
        self.d, self.actor, self.fields = d, actor, fields

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is not None and isinstance(exc, (PolicyViolation, InvalidRequest)):
            _record_refusal(self.d, self.actor, self.fields, exc)
        # returns None: the exception, if any, goes on


def _record_refusal(
    d: Deps, actor: Actor, fields: dict[str, object], exc: PolicyViolation | InvalidRequest
) -> None:
    kind = exc.kind if isinstance(exc, PolicyViolation) else "invalid-csr"
    d.audit.event("csr-refused", actor, **fields, kind=kind, message=str(exc))
    name, reason = one_line(str(fields["certname"]), 255), one_line(str(exc), 1000)
    log.warning("Refused CSR for %s from %s: %s (%s)", name, actor.address or "-", reason, kind)
    now = d.clock().timestamp()
    d.store.record_refusal(
        Refusal(name, kind, reason, one_line(actor.address, 100), now),
        prune_before=now - d.settings.refusal_retention.total_seconds(),
    )


def one_line(text: str, limit: int) -> str:
    """*text* as one printable line of at most *limit* characters (names come from URLs)."""
    shown = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def refusals(d: Deps) -> list[Refusal]:
    """The CSRs refused within ``refusal_retention``, newest first."""
    since = d.clock().timestamp() - d.settings.refusal_retention.total_seconds()
    return d.store.refusals(since)


def _decide(
    d: Deps, certname: str, body: bytes, info: pki.CsrInfo, actor: Actor
) -> AutosignDecision:
    if certname in reserved_names(d.settings):
        # The CA's own name and the admin names grant CA administration: a human signs those.
        decision = AutosignDecision(False, RESERVED_PENDING)
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
