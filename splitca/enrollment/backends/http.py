"""A read-only registry behind an HTTP(S) URL prefix (a static web server or a bucket URL)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from splitca.enrollment.registry import (
    MAX_RECORD_BYTES,
    Redemption,
    Registration,
    check_token,
    checked_name,
    describe_location,
    parse_record,
)
from splitca.errors import Conflict, InvalidRequest, RemoteError, ResponseTooLarge

if TYPE_CHECKING:
    from splitca.split.client import HTTPClient

__all__ = ["HttpRegistry"]

_NEGATIVE_CACHE_MAX = 10_000


class HttpRegistry:
    """``GET <prefix>/<certname>.json``: the same files the directory backend writes.

    Read-only: tokens cannot be marked used remotely, so the CA enforces single use
    with its own ledger of redeemed tokens (see ``autosign_registry``). Answers of
    "not registered" (404/410) are cached for *negative_ttl* seconds so a flood of
    unknown CSRs does not become a flood of requests; positive answers are never
    cached, so a registration published a moment ago is seen at once.

    Requests go through the project's one outbound client: TLS verified with *ca_file*
    or the system bundle (never one named by the environment), no proxies or .netrc,
    no redirects (one is "registry unavailable"), *timeout* per operation and in total.
    Plain ``http://`` is accepted only to a loopback address (tests, a local mirror).
    """

    def __init__(
        self,
        prefix: str,
        *,
        timeout: float = 5.0,
        negative_ttl: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.timeout = timeout
        self.negative_ttl = negative_ttl
        self.ca_file = ca_file
        self._client: HTTPClient | None = None
        self._missing: dict[str, float] = {}
        self._lock = threading.Lock()

    def _http(self) -> HTTPClient:
        from splitca.split.client import HTTPClient

        with self._lock:
            if self._client is None:
                self._client = HTTPClient(
                    self.prefix,
                    ca_bundle=self.ca_file,
                    timeout=self.timeout,
                    max_bytes=MAX_RECORD_BYTES,
                    accept="application/json",
                    url_option="registry",
                    ca_option="registry_ca_file",
                    loopback_http=True,
                    userinfo=True,
                )
            return self._client

    @property
    def location(self) -> str:
        return describe_location(self.prefix)

    def _url(self, certname: str) -> str:
        return self.prefix + urllib.parse.quote(checked_name(certname), safe="") + ".json"

    def _cached_missing(self, certname: str) -> bool:
        with self._lock:
            until = self._missing.get(certname)
            if until is None:
                return False
            if until > time.monotonic():
                return True
            del self._missing[certname]
            return False

    def _remember_missing(self, certname: str) -> None:
        with self._lock:
            if len(self._missing) >= _NEGATIVE_CACHE_MAX:
                self._missing.clear()
            self._missing[certname] = time.monotonic() + self.negative_ttl

    def get(self, certname: str) -> Registration | None:
        """Fetch and validate one record.

        Raises:
          RemoteError: the registry failed, timed out, redirected, or served something invalid.
          ConfigError: the prefix is not https:// (or http:// to a loopback address), or
            ``registry_ca_file`` does not exist.
        """
        try:
            url = self._url(certname)
        except InvalidRequest:
            return None
        if self._cached_missing(certname):
            return None
        where = describe_location(url)
        try:
            fetched = self._http().get(url, missing_ok=True)
        except ResponseTooLarge:
            raise RemoteError(f"registry {where} sent more than {MAX_RECORD_BYTES} bytes") from None
        except RemoteError as exc:
            raise RemoteError(f"registry: {exc}") from None
        if fetched.status in (404, 410):
            self._remember_missing(certname)
            return None
        if fetched.body is None:  # a 304 nobody asked for
            raise RemoteError(f"registry {where} answered HTTP {fetched.status}")
        try:
            return parse_record(fetched.body, certname)
        except ValueError as exc:
            raise RemoteError(f"registry {where} sent an invalid record: {exc}") from None

    def _read_only(self) -> Conflict:
        return Conflict(
            f"the registry {self.location} is read-only (HTTP); write registrations where "
            "it is published from (a directory or bucket) and point 'registry' there"
        )

    def add(self, record: Registration, *, replace: bool = False) -> None:
        raise self._read_only()

    def remove(self, certname: str) -> None:
        raise self._read_only()

    def records(self) -> Iterator[Registration]:
        raise Conflict(f"the registry {self.location} (HTTP) cannot be listed")

    def redeem(self, certname: str, token: str | None, now: dt.datetime) -> Redemption:
        """Check the token; the caller's ledger makes it single-use."""
        record = self.get(certname)
        reason = check_token(record, token, now)
        if reason is not None or record is None:
            return Redemption(False, reason or "no registration", record)
        return Redemption(True, "registered; token accepted", record.with_redeemed(now))
