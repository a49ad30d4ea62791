"""DirectoryRegistry: one JSON record per certname in a local directory, atomic writes, locked changes."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from splitca import fs
from splitca.enrollment.registry import (
    MAX_RECORD_BYTES,
    RECORD_MODE,
    Redemption,
    Registration,
    check_token,
    checked_name,
    log,
    parse_record,
)
from splitca.errors import Conflict, InvalidRequest, NotFound, StoreError


class DirectoryRegistry:
    """One JSON file per certname in a local directory; atomic writes, a lock around every change.

    The lock is an ``flock`` on ``<dir>/.lock``, so ``splitca register`` run by hand,
    the CA's worker processes and their threads all serialise their read-modify-writes:
    of two CSRs racing with the same token, exactly one redeems it.
    """

    def __init__(self, root: Path, *, lock_timeout: float = 10.0) -> None:
        self.root = root
        self._lock = fs.FileLock(root / ".lock", timeout=lock_timeout)

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, certname: str) -> Path:
        return self.root / f"{checked_name(certname)}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create registry {self.root}: {exc.strerror}") from exc
        with self._lock():
            yield

    def _read(self, certname: str, path: Path) -> Registration | None:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read registration {path}: {exc.strerror}") from exc
        try:
            return parse_record(data, certname)
        except ValueError as exc:
            raise StoreError(f"registration {path} is invalid: {exc}") from None

    def get(self, certname: str) -> Registration | None:
        try:
            path = self._path(certname)
        except InvalidRequest:
            return None
        return self._read(certname, path)

    def add(self, record: Registration, *, replace: bool = False) -> None:
        path = self._path(record.certname)
        with self._locked():
            if not replace and path.exists():
                raise Conflict(
                    f"{record.certname} is already registered; unregister it first "
                    "(or replace the registration, which issues a new token)"
                )
            fs.atomic_write(path, record.to_json(), mode=RECORD_MODE)

    def remove(self, certname: str) -> None:
        path = self._path(certname)
        with self._locked():
            try:
                path.unlink()
            except FileNotFoundError:
                raise NotFound(f"{certname} is not registered") from None
            except OSError as exc:
                raise StoreError(f"cannot remove {path}: {exc.strerror}") from exc

    def records(self) -> Iterator[Registration]:
        try:
            paths = sorted(self.root.glob("*.json"))
        except OSError as exc:
            raise StoreError(f"cannot list registry {self.root}: {exc.strerror}") from exc
        for path in paths:
            try:
                record = self._read(path.stem, path)
            except StoreError as exc:
                log.warning("skipping %s", exc)
                continue
            if record is not None:
                yield record

    def redeem(self, certname: str, token: str | None, now: dt.datetime) -> Redemption:
        try:
            path = self._path(certname)
        except InvalidRequest:
            return Redemption(False, "no registration")
        with self._locked():
            record = self._read(certname, path)
            reason = check_token(record, token, now)
            if reason is not None or record is None:
                return Redemption(False, reason or "no registration", record)
            used = record.with_redeemed(now)
            fs.atomic_write(path, used.to_json(), mode=RECORD_MODE)
        return Redemption(True, "registered; token accepted", used)
