"""CertificateAuthority: a thin facade that composes the use cases over one store, signer and policy.

It holds no logic of its own and names no concrete class: its store, signer, audit
sink and autosigner are given to it (by :mod:`splitca.compose`, the composition root),
and every method hands over to a use-case module (``usecases_*``) or to the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca.core.audit import SYSTEM, Actor, AuditSink
from splitca.core.autosign import Autosigner
from splitca.core.ports import Blob, CAStore, Refusal, Row, Signer
from splitca.core.usecases import (
    cacert as usecases_cacert,
)
from splitca.core.usecases import (
    chain as usecases_chain,
)
from splitca.core.usecases import (
    crl as usecases_crl,
)
from splitca.core.usecases import (
    fleet as usecases_fleet,
)
from splitca.core.usecases import (
    health as usecases_health,
)
from splitca.core.usecases import (
    importca as usecases_importca,
)
from splitca.core.usecases import (
    purge as usecases_purge,
)
from splitca.core.usecases import (
    read as usecases_read,
)
from splitca.core.usecases import (
    renew as usecases_renew,
)
from splitca.core.usecases import (
    revoke as usecases_revoke,
)
from splitca.core.usecases import (
    setup as usecases_setup,
)
from splitca.core.usecases import (
    sign as usecases_sign,
)
from splitca.core.usecases import (
    ssldir as usecases_ssldir,
)
from splitca.core.usecases import (
    submit as usecases_submit,
)
from splitca.core.usecases.chain import Installed, RootSpec
from splitca.core.usecases.common import Deps, reserved_names, rules_of, state_of
from splitca.core.usecases.importca import ImportInput
from splitca.core.usecases.setup import SetupResult
from splitca.core.usecases.sign import BulkSignResult
from splitca.core.usecases.submit import SubmitResult

from .clock import utcnow
from .config import Settings

__all__ = ["BulkSignResult", "CertificateAuthority", "SetupResult", "SubmitResult", "utcnow"]


class CertificateAuthority:
    """One CA over one store. Safe to share between threads and to run in several processes.

    ``store``, ``signer`` and ``audit`` are exposed for tests; the core's use cases see
    them only through the ports.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: CAStore,
        signer: Signer,
        audit: AuditSink,
        autosigner: Autosigner,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.audit = audit
        self.autosigner = autosigner
        self.deps = Deps(
            settings=settings,
            store=store,
            signer=signer,
            audit=audit,
            clock=clock,
            rules=rules_of(settings),
            autosigner=lambda: self.autosigner,
        )

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        """The clock the use cases were given (fixed at construction)."""
        return self.deps.clock

    # --- opening and setup ---------------------------------------------------------------
    def require_ca(self) -> None:
        """Raise StoreError unless the store holds a complete CA (and catch up with it)."""
        usecases_setup.open_store(self.store, self.settings)

    def setup(
        self,
        *,
        server_identity: bool = False,
        key_passphrase: bytes | None = None,
        intermediate: RootSpec | None = None,
    ) -> SetupResult:
        """See :func:`usecases_setup.setup`."""
        return usecases_setup.setup(
            self.deps,
            server_identity=server_identity,
            key_passphrase=key_passphrase,
            intermediate=intermediate,
        )

    def import_ca(self, given: ImportInput, *, actor: Actor = SYSTEM) -> SetupResult:
        """See :func:`usecases_importca.import_ca`."""
        return usecases_importca.import_ca(self.deps, given, actor=actor)

    @property
    def reserved_names(self) -> frozenset[str]:
        return reserved_names(self.settings)

    # --- reading -------------------------------------------------------------------------
    def ca_certificate(self) -> x509.Certificate:
        """The CA certificate that signs (matches the key)."""
        return self.signer.current().certificate

    def ca_certificate_file(self) -> Blob:
        return self.store.ca_cert()

    def crl_file(self) -> Blob:
        return self.store.crl()

    def ca_certificate_pem(self) -> bytes:
        return self.store.ca_cert().data

    def crl_pem(self) -> bytes:
        return self.store.crl().data

    def certificate_file(self, certname: str) -> Blob | None:
        return usecases_read.certificate(self.deps, certname)

    def certificate_pem(self, certname: str) -> bytes | None:
        found = usecases_read.certificate(self.deps, certname)
        return None if found is None else found.data

    def csr_pem(self, certname: str) -> bytes | None:
        found = usecases_read.csr(self.deps, certname)
        return None if found is None else found.data

    def csr_location(self, certname: str) -> str:
        return self.store.csr_location(certname)

    def status(self, certname: str) -> Row | None:
        return usecases_read.status(self.deps, certname)

    def state_of(self, certname: str) -> str | None:
        return state_of(self.deps, certname)

    def statuses(self, state: str | None = None) -> Iterator[Row]:
        return self.store.statuses(state)

    def statuses_json(self, state: str | None = None) -> Iterator[str]:
        """:meth:`statuses` as one JSON array in pieces (with ``pending_reason``), for streaming."""
        return self.store.statuses_json(state)

    def pending_names(self) -> list[str]:
        return self.store.pending_names()

    def serials_for(self, certname: str) -> list[int]:
        return self.store.serials_for(certname)

    def is_revoked(self, serial: int) -> bool:
        return self.store.is_revoked(serial)

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def expirations(self) -> dict[str, dict[str, str]]:
        return usecases_read.expirations(self.deps)

    def describe(self, certname: str) -> dict[str, object] | None:
        """``splitca status``: certificate_status plus extensions, challengePassword, revocation."""
        return usecases_read.describe(self.deps, certname)

    def revocation_details(self, serials: Iterable[int]) -> dict[int, dict[str, object]]:
        return usecases_read.revocation_details(self.deps, serials)

    def already_revoked(self, certnames: Iterable[str]) -> set[str]:
        """Those of *certnames* whose every certificate ever issued is on the CRL."""
        return usecases_read.already_revoked(self.deps, certnames)

    def refusals(self) -> list[Refusal]:
        """CSRs refused within ``refusal_retention``, newest first."""
        return usecases_submit.refusals(self.deps)

    # --- requests and issuing ------------------------------------------------------------
    def submit_csr(self, certname: str, body: bytes, *, actor: Actor = SYSTEM) -> SubmitResult:
        return usecases_submit.submit_csr(self.deps, certname, body, actor=actor)

    def delete_csr(self, certname: str, *, actor: Actor = SYSTEM) -> None:
        usecases_submit.delete_csr(self.deps, certname, actor=actor)

    def sign(
        self,
        certname: str,
        *,
        ttl: dt.timedelta | None = None,
        allow_alt_names: bool = False,
        actor: Actor = SYSTEM,
    ) -> x509.Certificate:
        return usecases_sign.sign(
            self.deps, certname, ttl=ttl, allow_alt_names=allow_alt_names, actor=actor
        )

    def sign_many(
        self,
        certnames: Iterable[str],
        *,
        ttl: dt.timedelta | None = None,
        allow_alt_names: bool = False,
        actor: Actor = SYSTEM,
    ) -> BulkSignResult:
        return usecases_sign.sign_many(
            lambda n: self.sign(n, ttl=ttl, allow_alt_names=allow_alt_names, actor=actor),
            certnames,
        )

    def sign_all(
        self,
        *,
        ttl: dt.timedelta | None = None,
        allow_alt_names: bool = False,
        actor: Actor = SYSTEM,
    ) -> BulkSignResult:
        """See :func:`usecases_sign.sign_all` (reserved names are left pending)."""
        return usecases_sign.sign_all(
            self.deps,
            lambda n: self.sign(n, ttl=ttl, allow_alt_names=allow_alt_names, actor=actor),
        )

    def generate(
        self,
        certname: str,
        *,
        alt_names: Iterable[x509.GeneralName] = (),
        ca_client: bool = False,
        key_type: str = "rsa",
        key_size: int = 4096,
        actor: Actor = SYSTEM,
        key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> tuple[bytes, x509.Certificate]:
        return usecases_sign.generate(
            self.deps,
            certname,
            alt_names=alt_names,
            ca_client=ca_client,
            key_type=key_type,
            key_size=key_size,
            actor=actor,
            key=key,
        )

    def generate_ssldir(
        self,
        certname: str,
        ssldir: Path,
        *,
        alt_names: Iterable[x509.GeneralName] = (),
        ca_client: bool = False,
        key_type: str = "rsa",
        key_size: int = 4096,
        actor: Actor = SYSTEM,
    ) -> x509.Certificate:
        return usecases_ssldir.generate_ssldir(
            self.deps,
            certname,
            ssldir,
            alt_names=alt_names,
            ca_client=ca_client,
            key_type=key_type,
            key_size=key_size,
            actor=actor,
        )

    def renew(self, cert: x509.Certificate, *, actor: Actor = SYSTEM) -> x509.Certificate:
        return usecases_renew.renew(self.deps, cert, actor=actor)

    # --- the CA certificate itself --------------------------------------------------------
    def ca_status(self, *, horizon: dt.timedelta | None = None) -> usecases_cacert.CAStatus:
        return usecases_cacert.status(self.deps, horizon=horizon)

    def log_ca_status(self) -> usecases_cacert.CAStatus:
        return usecases_cacert.log_status(self.deps)

    def renew_ca(
        self, *, validity: dt.timedelta | None = None, serial: str = "auto", actor: Actor = SYSTEM
    ) -> usecases_cacert.RenewResult:
        return usecases_cacert.renew(self.deps, validity=validity, serial=serial, actor=actor)

    def encrypt_ca_key(self, passphrase: bytes, *, actor: Actor = SYSTEM) -> None:
        usecases_cacert.encrypt_key(self.deps, passphrase, actor=actor)

    # --- revocation and removal ----------------------------------------------------------
    def revoke(
        self,
        certnames: Iterable[str],
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
        actor: Actor = SYSTEM,
    ) -> tuple[dict[str, list[int]], list[str]]:
        return usecases_revoke.revoke(self.deps, certnames, reason=reason, actor=actor)

    def clean(
        self, certnames: Iterable[str], *, actor: Actor = SYSTEM
    ) -> tuple[list[str], list[str]]:
        return usecases_revoke.clean(self.deps, certnames, actor=actor)

    def delete(self, certname: str, *, actor: Actor = SYSTEM) -> None:
        usecases_revoke.delete(self.deps, certname, actor=actor)

    # --- CRL upkeep ----------------------------------------------------------------------
    def crl_info(self) -> dict[str, object]:
        return usecases_crl.crl_info(self.deps)

    def crl_warnings(self) -> list[str]:
        return usecases_crl.chain_warnings(self.deps)

    def install_crl(self, data: bytes, *, actor: Actor = SYSTEM) -> list[Installed]:
        return usecases_chain.install_crl(self.deps, data, actor=actor)

    def crl_needs_refresh(self) -> bool:
        return usecases_crl.crl_needs_refresh(self.deps)

    def refresh_crl(self, *, force: bool = False, actor: Actor = SYSTEM) -> bool:
        return usecases_crl.refresh_crl(self.deps, force=force, actor=actor)

    # --- health, metrics and the fleet's CRLs -----------------------------------------------
    def health(self) -> usecases_health.Health:
        return usecases_health.health(self.deps)

    def metrics_snapshot(self) -> usecases_health.Snapshot:
        return usecases_health.snapshot(self.deps)

    def record_crl_fetch(self, certname: str, served: bytes) -> None:
        usecases_fleet.record_crl_fetch(self.deps, certname, served)

    def masters(self) -> usecases_fleet.Fleet:
        return usecases_fleet.masters(self.deps)

    def purge_expired(
        self,
        older_than: dt.timedelta,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        actor: Actor = SYSTEM,
    ) -> usecases_purge.PurgeResult:
        return usecases_purge.purge_expired(
            self.deps, older_than, dry_run=dry_run, progress=progress, actor=actor
        )

    # --- store upkeep --------------------------------------------------------------------
    def repair_serial(self) -> bool:
        """Move the serial counter past the highest issued serial if it lags (after a crash)."""
        return self.store.repair_serial()

    def rebuild_index(self) -> dict[str, int]:
        """Re-read everything into the store's derived records; the counts afterwards."""
        self.store.rebuild()
        return self.store.counts()

    def maintain(self) -> int:
        return self.store.maintain()

    def close(self) -> None:
        """Release this thread's store resources (the CA stays usable)."""
        self.store.close()
