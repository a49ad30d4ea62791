"""The Admin port over this host's CA (the facade and its use cases) and its registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from splitca import pki
from splitca.clock import utcnow
from splitca.config import Settings
from splitca.core.audit import Actor, AuditSink
from splitca.core.ports import Refusal, Row
from splitca.enrollment import enroll as enrollment
from splitca.enrollment.registry import Classification, Registry
from splitca.errors import ConfigError, StoreError

from .port import CleanOutcome, EnrollOptions, SignResult

if TYPE_CHECKING:
    from splitca.authority import BulkSignResult, CertificateAuthority

__all__ = ["LocalAdmin"]


class LocalAdmin:
    """Each collaborator is made on first use, so `registrations` never opens the CA and
    `list` never opens the registry."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        ca: Callable[[], CertificateAuthority],
        registry: Callable[[], Registry],
        audit: Callable[[], AuditSink],
        actor: Actor,
        registry_actor: Actor,
    ) -> None:
        self._settings, self._ca, self._registry = settings, ca, registry
        self._audit = audit
        self.actor, self.registry_actor = actor, registry_actor

    # --- certificates ----------------------------------------------------------------------
    def statuses(self, state: str | None) -> Iterator[Row]:
        return self._ca().statuses(state)

    def statuses_json(self, state: str | None) -> Iterator[str]:
        return self._ca().statuses_json(state)

    def status(self, certname: str) -> Row | None:
        return self._ca().status(certname)

    def describe(self, certname: str) -> dict[str, object] | None:
        return self._ca().describe(certname)

    def revocation_details(self, serials: Iterable[int]) -> dict[int, dict[str, object]]:
        return self._ca().revocation_details(serials)

    def already_revoked(self, certnames: Sequence[str]) -> set[str]:
        return self._ca().already_revoked(certnames)

    def refusals(self) -> list[Refusal]:
        return self._ca().refusals()

    def pending_names(self) -> list[str]:
        return self._ca().pending_names()

    def sign(
        self, certnames: Sequence[str], *, ttl: dt.timedelta | None, allow_alt_names: bool
    ) -> list[SignResult]:
        # The one bulk path (as POST sign/all): a CSR that cannot be signed is reported and
        # the others are still signed.
        outcome = self._ca().sign_many(
            certnames, ttl=ttl, allow_alt_names=allow_alt_names, actor=self.actor
        )
        return _sign_results(certnames, outcome)

    def sign_all(self, *, ttl: dt.timedelta | None, allow_alt_names: bool) -> list[SignResult]:
        outcome = self._ca().sign_all(ttl=ttl, allow_alt_names=allow_alt_names, actor=self.actor)
        return _sign_results(outcome.names, outcome)

    def revoke(
        self, certnames: Sequence[str], *, reason: x509.ReasonFlags
    ) -> tuple[dict[str, list[int]], list[str]]:
        return self._ca().revoke(certnames, reason=reason, actor=self.actor)

    def clean(self, certnames: Sequence[str]) -> CleanOutcome:
        ca = self._ca()
        cleaned, missing = ca.clean(certnames, actor=self.actor)
        pending = [n for n in missing if ca.csr_pem(n) is not None]
        for name in pending:
            ca.delete_csr(name, actor=self.actor)
        return CleanOutcome(cleaned, pending, [n for n in missing if n not in pending])

    # --- registrations ---------------------------------------------------------------------
    def register(
        self,
        certname: str,
        classification: Classification,
        *,
        ttl: dt.timedelta | None,
        replace: bool,
    ) -> dict[str, object]:
        record, token = enrollment.register(
            self._registry(),
            certname,
            classification,
            ttl=ttl or self._settings().registry_ttl,
            replace=replace,
            audit=self._audit(),
            actor=self.registry_actor,
        )
        return {**record.public(record.created), "token": token}

    def enroll(
        self, classification: Classification, *, ttl: dt.timedelta | None, options: EnrollOptions
    ) -> dict[str, object]:
        s = self._settings()
        ca_pem = _read_ca_cert(options.ca_cert or s.cadir / "ca_crt.pem")
        certname = enrollment.new_certname(prefix=options.prefix, domain=options.domain)
        server, ca_server = options.server or s.certname, options.ca_server or s.certname
        ca_port = options.ca_port or s.port
        enrollment.check_agent_options(  # before registering: refused options register nothing
            server=server,
            server_port=options.server_port,
            ca_server=ca_server,
            ca_port=ca_port,
            install=options.install,
        )
        found = self.register(certname, classification, ttl=ttl, replace=False)
        user_data = enrollment.render_user_data(
            enrollment.cloud_config(
                certname=certname,
                token=str(found["token"]),
                ca_cert_pem=ca_pem,
                server=server,
                server_port=options.server_port,
                ca_server=ca_server,
                ca_port=ca_port,
                install=options.install,
                run_agent=options.run_agent,
                crl_refresh_seconds=enrollment.agent_crl_refresh_seconds(
                    s.crl_ttl, s.effective_crl_refresh_margin
                ),
            )
        )
        return {
            "certname": certname,
            "expires": found["expires"],
            "token_id": found["token_id"],
            "user_data": user_data,
        }

    def registrations(self) -> list[dict[str, object]]:
        now = utcnow()
        return [r.public(now) for r in enrollment.registrations(self._registry())]

    def unregister(self, certname: str) -> None:
        enrollment.unregister(
            self._registry(), certname, audit=self._audit(), actor=self.registry_actor
        )


def _sign_results(certnames: Sequence[str], outcome: BulkSignResult) -> list[SignResult]:
    results = []
    for name in certnames:
        cert = outcome.certificates.get(name)
        if cert is None:
            results.append(SignResult(name, error=outcome.messages.get(name, "")))
        else:
            fingerprint = pki.fingerprints(pki.der(cert))["SHA256"]
            results.append(SignResult(name, cert.serial_number, fingerprint))
    return results


MAX_CA_CERT_BYTES = 1024 * 1024  # a CA bundle is a few KiB


def _read_ca_cert(cert_path: Path) -> str:
    """The CA certificates of *cert_path*, re-encoded, for user-data.

    User-data is readable by every process on the instance, so only certificates are
    taken from the file: one that holds a private key (a combined key and certificate
    PEM) is refused, and anything around the certificates is left out.
    """
    try:
        with open(cert_path, "rb") as f:
            data = f.read(MAX_CA_CERT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"CA certificate {cert_path} does not exist; give --ca-cert or --cadir"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot read the CA certificate {cert_path}: {exc.strerror}") from None
    if len(data) > MAX_CA_CERT_BYTES:
        raise ConfigError(
            f"{cert_path} is larger than {MAX_CA_CERT_BYTES} bytes; give the CA certificate"
        )
    if any("PRIVATE KEY" in label for label, _ in pki.pem_blocks(data)):
        raise ConfigError(
            f"{cert_path} holds a private key, which must never go into user-data; "
            "give the CA certificate alone (<cadir>/ca_crt.pem)"
        )
    try:
        certs = pki.load_certificates(data)
    except ValueError:
        raise ConfigError(f"{cert_path} holds a certificate that cannot be parsed") from None
    if not certs:
        raise ConfigError(f"{cert_path} is not a PEM certificate")
    return "".join(pki.pem(cert).decode("ascii") for cert in certs)
