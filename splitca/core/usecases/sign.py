"""Use cases: sign pending CSRs (one, or the one bulk path), generate a key and certificate here."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca import pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.policy import Approved, check_subject, vet
from splitca.core.usecases.common import (
    Deps,
    cert_fields,
    issue,
    refuse_taken,
    reserved_names,
)
from splitca.errors import Conflict, InvalidRequest, NotFound, PolicyViolation, SplitCAError

__all__ = ["BulkSignResult", "generate", "reserved_not_bulk", "sign", "sign_all", "sign_many"]

log = logging.getLogger(__name__)


@dataclass
class BulkSignResult:
    signed: list[str] = field(default_factory=list)
    no_csr: list[str] = field(default_factory=list)
    signing_errors: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # why a name was not signed
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every name of the batch, in order


def sign(
    d: Deps,
    certname: str,
    *,
    ttl: dt.timedelta | None = None,
    allow_alt_names: bool = False,
    actor: Actor = SYSTEM,
) -> x509.Certificate:
    """Sign the pending CSR for *certname*.

    Raises:
      NotFound: nothing at all is known about *certname* ("no CSR for X").
      Conflict: no pending CSR but a certificate ("X is already signed"; Puppet's wire says
        "Cannot sign certificate for host X without a certificate request", see routes_ca).
      PolicyViolation: the CSR fails a signing check.
    """
    if not pki.is_safe_name(certname):
        raise NotFound(f"no CSR for {certname}")
    with d.store.names_locked([certname]):
        csr = _pending_csr(d, certname)
        info = pki.inspect_csr(csr)
        check_subject(certname, info.cn)
        approved = vet(csr, certname, d.rules, allow_alt_names=allow_alt_names, info=info)
        cert = issue(d, approved, ttl, drop_csr=True)
    d.audit.event("sign", actor, **cert_fields(cert, certname))
    return cert


def nothing_to_sign(certname: str, state: str | None) -> SplitCAError:
    """What to say when *certname* has no pending CSR: its *state* (signed, revoked, or
    None for nothing known). The same words wherever the CA is administered from."""
    if state == "revoked":
        return Conflict(
            f"{certname}'s certificate is revoked and there is no CSR to sign; "
            f"run 'splitca clean {certname}' so it can enroll again"
        )
    if state is not None:
        return Conflict(f"{certname} is already signed (there is no CSR to sign)")
    return NotFound(f"no CSR for {certname}")


def _pending_csr(d: Deps, certname: str) -> x509.CertificateSigningRequest:
    stored = d.store.csr(certname)
    if stored is None:
        state = None
        if d.store.has_cert(certname):
            row = d.store.status(certname)
            state = row.state if row is not None else "signed"
        raise nothing_to_sign(certname, state)
    try:
        return pki.load_csr(stored.data)
    except InvalidRequest as exc:
        raise PolicyViolation(
            "invalid-csr", certname, f"Stored CSR for {certname} is unreadable: {exc}"
        ) from None


def sign_many(
    sign_one: Callable[[str], x509.Certificate], certnames: Iterable[str]
) -> BulkSignResult:
    """The one bulk path (POST /sign, 'splitca sign'): every name lands in signed, no-csr or
    signing-errors, with the reason in ``messages``. One name's failure, whatever it is,
    never stops the others."""
    result = BulkSignResult()
    for name in certnames:
        result.names.append(name)
        try:
            cert = sign_one(name)
        except (NotFound, Conflict) as exc:
            result.no_csr.append(name)
            result.messages[name] = str(exc)
        except SplitCAError as exc:
            result.signing_errors.append(name)
            result.messages[name] = str(exc)
        except Exception as exc:  # reported, never the end of the batch
            log.exception("signing %s failed", name)
            result.signing_errors.append(name)
            result.messages[name] = f"internal error ({type(exc).__name__}); see the log"
        else:
            result.signed.append(name)
            result.certificates[name] = cert
    return result


def sign_all(d: Deps, sign_one: Callable[[str], x509.Certificate]) -> BulkSignResult:
    """Sign every pending CSR (POST sign/all, 'splitca sign --all') but those of reserved
    names (the CA's own certname, ``admin_certnames``): their certificates administer the
    CA, so, as for autosigning, a human signs them by name. A request for one, which anyone
    may submit before its owner enrolls, never rides along with a routine bulk signing;
    it is reported among the signing errors, with what to do.
    """
    reserved = reserved_names(d.settings)
    pending = d.store.pending_names()
    result = sign_many(sign_one, [n for n in pending if n not in reserved])
    for name in pending:
        if name in reserved:
            result.names.append(name)
            result.signing_errors.append(name)
            result.messages[name] = reserved_not_bulk(name)
    return result


def reserved_not_bulk(certname: str) -> str:
    """Why a bulk signing left *certname* pending (the same words wherever it ran)."""
    return (
        f"{certname} is a reserved name (the CA's own certname or an admin certname): a "
        f"bulk signing never signs it; check who asked for it, then 'splitca sign {certname}'"
    )


def generate(
    d: Deps,
    certname: str,
    *,
    alt_names: Iterable[x509.GeneralName] = (),
    ca_client: bool = False,
    key_type: str = "rsa",
    key_size: int = 4096,
    actor: Actor = SYSTEM,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> tuple[bytes, x509.Certificate]:
    """Make a key and a certificate for *certname* here (trusted: SANs allowed).

    ``ca_client`` adds ``pp_cli_auth`` so the certificate can administer this CA.
    With *key* (one the caller has already saved) no key is made: the certificate
    is for that key, so a failure after issuing cannot lose it.

    Raises:
      Conflict: a certificate or CSR for *certname* already exists.
    """
    if problem := pki.certname_problem(certname):
        raise InvalidRequest(f"{certname!r}: {problem}")
    with d.store.names_locked([certname]):
        refuse_taken(d, certname)
        if key is None:
            key = pki.generate_private_key(key_type, rsa_bits=key_size)
        exts = (pki.cli_auth_extension(),) if ca_client else ()
        approved = Approved(certname, key.public_key(), tuple(alt_names), exts)
        cert = issue(d, approved, None, drop_csr=True)
    d.audit.event("generate", actor, ca_client=ca_client, **cert_fields(cert, certname))
    return pki.private_key_pem(key), cert
