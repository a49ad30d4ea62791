"""The ``autosign: registry`` strategy: sign only pre-registered machines that present their one-time token."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from splitca import fs, pki
from splitca.clock import utcnow
from splitca.config import Settings
from splitca.core.autosign import AutosignDecision
from splitca.enrollment.registry import Registry, describe_location
from splitca.errors import SplitCAError, StoreError

__all__ = ["Ledger", "RedeemedLedger", "RegistryAutosigner"]

log = logging.getLogger(__name__)


class Ledger(Protocol):
    """The CA's record of redeemed tokens (a directory of files, or a database table)."""

    def claim(self, token_sha256: str, certname: str, now: dt.datetime) -> bool:
        """Record the token as used, durably; False if it already was."""
        ...


class RedeemedLedger:
    """The CA's own list of redeemed tokens: one file per token hash, made with ``O_EXCL``.

    Creating a file exclusively is atomic across processes and threads, so a token
    is redeemed at most once by this CA whatever the registry backend can do. It is
    what makes single use hold for a read-only (HTTP) registry, and a second guard
    for the others. Files are tiny; they may be pruned once older than ``registry_ttl``
    (a registration cannot outlive that).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def claim(self, token_sha256: str, certname: str, now: dt.datetime) -> bool:
        """Record the token as used; False if it already was.

        True is returned only once the entry is durable: the file is fsynced and so is
        the directory holding its name (and, the first time, the directory's own entry),
        so a crash or power loss after a signing cannot forget that the token was used.
        If anything fails after the file was created, the token stays claimed (fail
        closed: a re-registration issues a new token).
        """
        entry = self.root / token_sha256
        try:
            created_root = not self.root.is_dir()
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if created_root:
                os.chmod(self.root, 0o700)  # not whatever the umask left
                fs.fsync_dir(self.root.parent)
            fd = os.open(
                entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(
                f"cannot record a redeemed token in {self.root}: {exc.strerror}"
            ) from exc
        try:
            try:
                os.fchmod(fd, 0o600)  # the umask must not change the mode we chose
                os.write(fd, json.dumps({"certname": certname, "time": now.isoformat()}).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            fs.fsync_dir(self.root)  # the new name itself, not only the file's contents
        except OSError as exc:
            raise StoreError(
                f"cannot record a redeemed token in {self.root}: {exc.strerror or exc}"
            ) from exc
        return True


@dataclass
class RegistryAutosigner:
    """Sign a CSR only if its certname is registered, the registration has not expired,
    and its challengePassword is the registration's unused token; then use the token up.

    A registry that cannot be reached (or serves garbage) never signs: the CSR stays
    pending with the reason, and the agent can retry.
    """

    registry_factory: Callable[[], Registry]
    ledger: Ledger
    clock: Callable[[], dt.datetime] = utcnow
    _registry: Registry | None = field(default=None, init=False, repr=False)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self.registry_factory()
        return self._registry

    @property
    def description(self) -> str:
        return "registry (pre-registered certnames with a one-time token)"

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision:
        now = self.clock()
        details: dict[str, object] = {"policy": "registry"}
        try:
            registry = self.registry
            details["registry"] = describe_location(registry.location)
            outcome = registry.redeem(certname, info.challenge_password, now)
            if outcome.record is not None:
                details["token_id"] = outcome.record.token_id
                details["registration_expires"] = outcome.record.expires.isoformat()
            if outcome.ok and outcome.record is not None:
                if not self.ledger.claim(outcome.record.token_sha256, certname, now):
                    return AutosignDecision(False, "token already used", details)
                # A one-time token for this very name: it may replace a rebuilt machine's
                # certificate (the core revokes the old one in the same operation).
                return AutosignDecision(True, outcome.reason, details, replaces_certificate=True)
            return AutosignDecision(False, outcome.reason, details)
        except SplitCAError as exc:
            log.warning("registry autosign for %s: %s", certname, exc)
            return AutosignDecision(False, f"registry unavailable: {exc}", details)
        except Exception:
            log.exception("registry autosign for %s crashed", certname)
            return AutosignDecision(False, "registry policy failed; see the CA log", details)


def make_registry_autosigner(
    *,
    settings: Settings,
    registry_factory: Callable[[], Registry],
    clock: Callable[[], dt.datetime] = utcnow,
    ledger: Ledger | None = None,
) -> RegistryAutosigner:
    """The factory for ``autosign: registry`` (named in splitca.compose's strategy table).

    The ledger is *ledger* (the database's, on the PostgreSQL store), else this host's
    files under ``<cadir>/.splitca/redeemed-tokens``.
    """
    return RegistryAutosigner(
        registry_factory=registry_factory,
        ledger=RedeemedLedger(settings.cadir / ".splitca" / "redeemed-tokens")
        if ledger is None
        else ledger,
        clock=clock,
    )
