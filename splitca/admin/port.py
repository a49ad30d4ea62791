"""The Admin port: what the operator commands ask of a CA, wherever it runs (this host's cadir, or HTTPS)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509

from splitca.core.ports import Refusal, Row
from splitca.enrollment.registry import Classification

__all__ = ["Admin", "CleanOutcome", "EnrollOptions", "RemoteTarget", "SignResult"]


@dataclass(frozen=True)
class RemoteTarget:
    """A CA's HTTP API and the admin identity presented to it (None: the agent ssldir's)."""

    url: str
    cert: Path | None = None
    key: Path | None = None
    ca_cert: Path | None = None


@dataclass(frozen=True)
class SignResult:
    """One name of a signing: its certificate's serial and SHA256 fingerprint, or why not."""

    certname: str
    serial: int | None = None
    fingerprint: str = ""
    error: str = ""

    @property
    def signed(self) -> bool:
        return self.serial is not None


@dataclass(frozen=True)
class CleanOutcome:
    cleaned: list[str] = field(default_factory=list)  # revoked and deleted
    csr_deleted: list[str] = field(default_factory=list)  # had only a pending CSR, now gone
    not_found: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EnrollOptions:
    """What ``splitca enroll`` puts in the user-data; None means the CA's own setting."""

    prefix: str = ""
    domain: str = ""
    server: str | None = None
    server_port: int = 8140
    ca_server: str | None = None
    ca_port: int | None = None
    install: str = "packages"
    run_agent: bool = True
    ca_cert: Path | None = None  # local only: the CA certificate to embed


class Admin(Protocol):
    """The operations behind `list`, `status`, `sign`, `revoke`, `clean` and the registration
    commands. Every failure is a SplitCAError of the same class whichever implementation
    answers (NotFound, Conflict, Forbidden, StoreError, RemoteError, ...), so the CLI's one
    exit-code table applies to both."""

    def statuses(self, state: str | None) -> Iterator[Row]:
        """certificate_status rows in the CA's order (CSRs first); *state* None: all."""
        ...

    def statuses_json(self, state: str | None) -> Iterator[str]:
        """The same as one JSON array (with ``pending_reason``), in pieces."""
        ...

    def status(self, certname: str) -> Row | None: ...

    def describe(self, certname: str) -> dict[str, object] | None:
        """``splitca status``'s object: the status plus what the CA knows beyond Puppet's
        API (extensions, challengePassword present, revocation); remotely, the status."""
        ...

    def revocation_details(self, serials: Iterable[int]) -> dict[int, dict[str, object]]:
        """When and why each of *serials* was revoked (remotely: unknown, empty)."""
        ...

    def already_revoked(self, certnames: Sequence[str]) -> set[str]:
        """Those of *certnames* whose every certificate ever issued is revoked already."""
        ...

    def refusals(self) -> list[Refusal]:
        """CSRs refused recently, newest first (InvalidRequest remotely: not in the API)."""
        ...

    def pending_names(self) -> list[str]: ...

    def sign(
        self, certnames: Sequence[str], *, ttl: dt.timedelta | None, allow_alt_names: bool
    ) -> list[SignResult]:
        """Try every name (one failure never stops the others); one result per name."""
        ...

    def sign_all(self, *, ttl: dt.timedelta | None, allow_alt_names: bool) -> list[SignResult]:
        """Sign every pending CSR but those of reserved names (the CA's own certname and
        admin certnames), which get a result with the error saying so; one per name."""
        ...

    def revoke(
        self, certnames: Sequence[str], *, reason: x509.ReasonFlags
    ) -> tuple[dict[str, list[int]], list[str]]:
        """({name: serials revoked}, [names with nothing to revoke])."""
        ...

    def clean(self, certnames: Sequence[str]) -> CleanOutcome: ...

    def register(
        self,
        certname: str,
        classification: Classification,
        *,
        ttl: dt.timedelta | None,
        replace: bool,
    ) -> dict[str, object]:
        """The registration as operators see it, plus its one-time ``token``."""
        ...

    def enroll(
        self, classification: Classification, *, ttl: dt.timedelta | None, options: EnrollOptions
    ) -> dict[str, object]:
        """A fresh UUID certname registered: ``certname``, ``expires``, ``token_id``, ``user_data``."""
        ...

    def registrations(self) -> list[dict[str, object]]: ...

    def unregister(self, certname: str) -> None: ...
