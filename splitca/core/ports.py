"""The core's ports: what the use cases need from storage (CAStore) and from the CA key (Signer).

The use cases talk only to these Protocols. No connection, path or lock object crosses
them: locks are context managers the store yields, reads return bytes. ``FileStore``
(puppetserver's cadir with the SQLite index) and ``KeyFileSigner`` (``ca_key.pem``)
implement them today; ``tests/test_store_contract.py`` holds every store to the
promises written here.
"""
# Over 400 lines because it is the whole storage and key contract, each method with its
# promise: a store's author reads one file for what to implement.

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from splitca import pki

__all__ = [
    "MAX_REFUSALS",
    "Blob",
    "CAStore",
    "CRLEntry",
    "CRLFetch",
    "Refusal",
    "Reservation",
    "Row",
    "Signer",
    "SigningKey",
]

# A revocation as the CRL encodes it: (serial, unix time, CRLReason code or None).
CRLEntry = tuple[int, float, int | None]


@dataclass(frozen=True)
class Row:
    """One certificate_status, as stored: ``status`` is the JSON object without ``state``."""

    name: str
    state: str  # requested | signed | revoked
    status: str
    serial: int | None = None
    not_after_ts: int | None = None
    reason: str = ""

    def json(self) -> str:
        """The full certificate_status JSON object, state included."""
        return (
            f'{{"state":"{self.state}",{self.status[1:]}'
            if len(self.status) > 2
            else (f'{{"state":"{self.state}"}}')
        )

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.json())
        return out


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored document, verbatim, and when it last changed (POSIX time, for Last-Modified)."""

    data: bytes
    modified: float | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A CSR refused at the door: for whom, why (``kind`` as PolicyViolation's), when, from where."""

    certname: str
    kind: str
    reason: str
    address: str
    at: float  # POSIX time

    def as_dict(self) -> dict[str, object]:
        return {
            "certname": self.certname,
            "kind": self.kind,
            "reason": self.reason,
            "address": self.address,
            "time": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="seconds"),
        }


# The most refusals a store keeps (the oldest go first): unauthenticated clients cause them.
MAX_REFUSALS = 1000


@dataclass(frozen=True, slots=True)
class Reservation:
    """A serial taken for one certname, with the store's own token for making it durable."""

    serial: int
    token: object = None


@dataclass(frozen=True, slots=True)
class CRLFetch:
    """A client (a compile master's sync-crl) that last fetched the CRL: which number, when."""

    name: str
    number: int
    at: float  # POSIX time


class CAStore(Protocol):
    """Where one CA keeps its certificates, requests, serials and revocations.

    Promises every implementation keeps (and the contract suite checks):

    - **Serials are never reused.** :meth:`reserve_serial` hands out each serial once,
      across threads, processes and store instances, never below the highest serial
      ever issued (even if a cached or on-disk counter lags), and its record is durable
      before :meth:`publish_cert` makes a certificate with it visible.
    - **Writes are visible when they return**, to every other instance on the same
      storage: a certificate after :meth:`publish_cert`, a revocation after
      :meth:`publish_crl`, a CSR after :meth:`save_csr`.
    - **CRL numbers strictly increase**: :meth:`crl_number` is the number of the CRL in
      effect; the caller publishes ``crl_number() + 1`` while holding ``locked("crl")``.
    - **Name locks serialize**: :meth:`names_locked` excludes every other holder of any of
      those names' locks (threads and processes). Issuing and revoking a name happen
      under it; it is taken before any other lock, and the store's own internal locking
      (serials, publication) never waits for a name lock.
    - **CRL fetch records are best effort**: :meth:`record_crl_fetch` never raises and
      never waits long (it is called while a CRL is being served); a record it could not
      write is logged and lost. They are a monitoring aid, not CA state.
    """

    # --- lifecycle -----------------------------------------------------------------------
    def missing_parts(self) -> list[str]:
        """What a complete CA needs and is not there (empty once :meth:`create_ca` ran)."""
        ...

    def present_parts(self) -> list[str]:
        """The parts of a CA that are there (all, none, or a partial CA never overwritten)."""
        ...

    def prepare(self) -> None:
        """Make the storage usable (directories, schema), refusing unsafe state (UnsafePath)."""
        ...

    def create_ca(self, *, ca_cert: bytes, ca_key: bytes, ca_pub: bytes, crl: bytes) -> None:
        """Install a new CA (its certificate's serial recorded as issued); the key is written last."""
        ...

    def refresh(self) -> None:
        """Catch up with changes made behind the store's back (cheap when there are none)."""
        ...

    def rebuild(self) -> None:
        """Forget every derived record and re-read the source of truth."""
        ...

    def repair_serial(self) -> bool:
        """Move a lagging serial counter past the highest issued serial; True if it moved."""
        ...

    def maintain(self) -> int:
        """Housekeeping (leftovers of crashed writers); returns how many things were removed."""
        ...

    def close(self) -> None:
        """Release this thread's resources (connections); the store stays usable."""
        ...

    def ping(self) -> None:
        """Return if the store can serve now; raise StoreUnavailable if it cannot (health)."""
        ...

    # --- who has which CRL (monitoring; best effort) ------------------------------------
    def record_crl_fetch(self, name: str, number: int, at: float) -> None:
        """Note that *name* was served CRL *number* at *at* (POSIX time), replacing its last.

        Best effort: never raises, never blocks for more than a fraction of a second
        (log a failure and return); visible to other instances when it returns.
        """
        ...

    def crl_fetches(self) -> list[CRLFetch]:
        """The last CRL fetch of every name recorded, in name order."""
        ...

    # --- locks ---------------------------------------------------------------------------
    def locked(self, name: str) -> AbstractContextManager[None]:
        """Hold a named CA-wide lock (``crl``, ``setup``) across threads and processes."""
        ...

    def names_locked(self, names: Iterable[str]) -> AbstractContextManager[None]:
        """Hold the locks of every name in *names*: the one place issuing and revoking serialize."""
        ...

    # --- reads ---------------------------------------------------------------------------
    def ca_cert(self) -> Blob:
        """The CA certificate bundle (StoreError if missing)."""
        ...

    def crl(self) -> Blob:
        """The CRL file served to clients: ours first, any other CA's after (StoreError if missing)."""
        ...

    def cert(self, name: str) -> Blob | None:
        """The certificate of *name* exactly as issued, or None."""
        ...

    def csr(self, name: str) -> Blob | None:
        """The pending request of *name* exactly as submitted, or None."""
        ...

    def has_cert(self, name: str) -> bool:
        """Whether anything is stored as *name*'s certificate (even something unreadable)."""
        ...

    def has_csr(self, name: str) -> bool:
        """Whether a request of *name* is stored."""
        ...

    def cert_location(self, name: str) -> str:
        """Where *name*'s certificate is (or would be) kept, for messages."""
        ...

    def csr_location(self, name: str) -> str:
        """Where *name*'s request is (or would be) kept, for messages."""
        ...

    def crl_location(self) -> str:
        """Where the CRL is kept, for messages."""
        ...

    # --- writes --------------------------------------------------------------------------
    def save_csr(
        self, name: str, pem: bytes, csr: x509.CertificateSigningRequest, *, reason: str
    ) -> None:
        """Store (or replace) *name*'s pending request, with why it is pending."""
        ...

    def delete_csr(self, name: str) -> None:
        """Remove *name*'s pending request (no error if there is none)."""
        ...

    def delete_cert(self, name: str, *, and_csr: bool = False) -> None:
        """Remove *name*'s current certificate (and request); its serials stay issued."""
        ...

    def reserve_serial(
        self, name: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> Reservation:
        """Take a fresh serial for a certificate of *name* with that validity, and record it."""
        ...

    def publish_cert(
        self, name: str, cert: x509.Certificate, reservation: Reservation, *, drop_csr: bool
    ) -> None:
        """Make *cert* (built with *reservation*'s serial) *name*'s certificate.

        The reservation's record is durable first. With *drop_csr*, *name*'s pending
        request (if any) goes in the same step.
        """
        ...

    # --- the CA's own certificate and key ----------------------------------------------
    def publish_ca_cert(self, pem: bytes, reservation: Reservation | None) -> None:
        """Replace the CA certificate bundle atomically (a renewed CA certificate in it).

        *reservation* (from :meth:`reserve_serial`, for the CA's name; None when the
        renewed certificate keeps the old one's serial) is durable first. Readers see
        the old bundle or the new one, never a torn one.
        """
        ...

    def ca_key(self) -> bytes:
        """The stored CA key exactly as kept (PEM, possibly encrypted); StoreError if missing."""
        ...

    def replace_ca_key(self, data: bytes) -> None:
        """Replace the stored CA key atomically (the same key, re-encoded: encrypted, say)."""
        ...

    # --- queries -------------------------------------------------------------------------
    def status(self, name: str) -> Row | None:
        """*name*'s certificate status (its certificate if any, else its request), or None."""
        ...

    def statuses(self, state: str | None = None) -> Iterator[Row]:
        """Every status, requests first, each group in name order; optionally one state."""
        ...

    def statuses_json(self, state: str | None = None) -> Iterator[str]:
        """:meth:`statuses` as pieces of one JSON array (requests with ``pending_reason``)."""
        ...

    def pending_names(self) -> list[str]:
        """Names with a pending request, sorted."""
        ...

    def serials_for(self, name: str) -> list[int]:
        """Every serial ever issued to *name* (its record and its current certificate), sorted."""
        ...

    def serials_for_names(self, names: Sequence[str]) -> dict[str, list[int]]:
        """:meth:`serials_for` of each of *names* at once (names with none are left out)."""
        ...

    def counts(self) -> dict[str, int]:
        """How many statuses are ``requested``, ``signed`` and ``revoked``."""
        ...

    # --- refused requests ---------------------------------------------------------------
    def record_refusal(self, refusal: Refusal, *, prune_before: float) -> None:
        """Remember a refused CSR, best effort: never raises, never waits long.

        Bounded: records older than *prune_before* (POSIX time) are dropped, and at most
        :data:`MAX_REFUSALS` are kept, the newest. If the store is busy or failing the
        record is dropped (logged): a refusal must never delay or fail the answer.
        Records are visible to other instances and survive :meth:`rebuild` (nothing else
        holds them).
        """
        ...

    def refusals(self, since: float) -> list[Refusal]:
        """Refusals recorded at or after *since* (POSIX time), newest first (empty on error)."""
        ...

    # --- revocation ----------------------------------------------------------------------
    def is_revoked(self, serial: int) -> bool:
        """Whether *serial* is on the CRL in effect."""
        ...

    def revoked_among(self, serials: Iterable[int]) -> set[int]:
        """Those of *serials* on the CRL in effect (one query, whatever the CRL's size)."""
        ...

    def revocations(self) -> list[CRLEntry]:
        """The entries of the CRL in effect, in CRL order."""
        ...

    def revoked_count(self) -> int:
        """How many entries the CRL in effect has."""
        ...

    def crl_number(self) -> int:
        """The number of the CRL in effect (0 for none)."""
        ...

    def expired_serials(self, now: dt.datetime) -> set[int]:
        """Serials whose certificates expired before *now*."""
        ...

    def publish_crl(
        self,
        pem: bytes,
        *,
        number: int,
        entries: Sequence[CRLEntry],
        added: Sequence[pki.Revocation] | None,
        on_installed: Callable[[], None],
    ) -> None:
        """Put CRL *number* in effect; the caller holds ``locked("crl")``.

        *added* are the entries new in it (None: *entries* replace all revocations).
        *on_installed* runs the moment the CRL is in effect, before derived records are
        updated; once it has run the CRL stands, and a failure to update those records
        is logged, not raised (they catch up on the next :meth:`refresh`).
        """
        ...


class SigningKey(Protocol):
    """One loaded version of the CA key: builds and signs leaf certificates and CRLs."""

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate that matches the key."""
        ...

    def prepare_leaf(
        self,
        *,
        public_key: CertificatePublicKeyTypes,
        certname: str,
        not_before: dt.datetime,
        not_after: dt.datetime,
        alt_names: Sequence[x509.GeneralName],
        extensions: Sequence[x509.Extension[x509.ExtensionType]],
    ) -> x509.CertificateBuilder:
        """Everything of a leaf certificate but serial and signature (ValueError/TypeError)."""
        ...

    def sign_leaf(self, tbs: x509.CertificateBuilder, serial: int) -> x509.Certificate:
        """Give *tbs* its serial and sign it."""
        ...

    def sign_crl(
        self,
        *,
        entries: Iterable[CRLEntry],
        number: int,
        this_update: dt.datetime,
        next_update: dt.datetime,
    ) -> bytes:
        """The DER of a signed CRL with *entries*."""
        ...

    def renew_ca(
        self, *, serial: int, not_before: dt.datetime, not_after: dt.datetime
    ) -> x509.Certificate:
        """:attr:`certificate` re-issued by this key with a new serial and validity (same
        subject, key and extensions); ValueError if it is not self-signed."""
        ...


class Signer(Protocol):
    """The CA's signing key, never lent out: an HSM or an encrypted key is another Signer."""

    def current(self) -> SigningKey:
        """The key as it is now: loaded once, reloaded if it changed (StoreError if unusable).

        A use case takes it once and uses it for the whole operation.
        """
        ...
