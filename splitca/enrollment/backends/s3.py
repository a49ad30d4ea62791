"""The registry in an S3 bucket (boto3, optional extra ``splitca[s3]``), with conditional writes."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from splitca.enrollment.registry import (
    MAX_RECORD_BYTES,
    Redemption,
    Registration,
    check_token,
    checked_name,
    parse_record,
)
from splitca.errors import ConfigError, Conflict, InvalidRequest, NotFound, RemoteError

__all__ = ["S3Registry"]

log = logging.getLogger(__name__)


class S3Registry:
    """``s3://bucket/prefix``: one object ``<prefix>/<certname>.json`` per registration.

    Reads and writes, like the classic design, but race-free: a new registration is
    written with ``If-None-Match: *`` (never silently over another) and a token is
    marked used with ``If-Match: <ETag of the record we checked>``, so of two CAs
    or threads redeeming the same token only one write succeeds. Credentials come
    from boto3's usual chain (environment, ``~/.aws``, instance profile).
    """

    def __init__(
        self,
        location: str,
        *,
        timeout: float = 5.0,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        rest = location[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")
        self._location = location
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ConfigError(
                    f"registry {location} needs boto3: pip install 'splitca[s3]'"
                ) from None
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
        self.client = client

    @property
    def location(self) -> str:
        return self._location

    def _key(self, certname: str) -> str:
        name = checked_name(certname) + ".json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """Run one S3 call; turn botocore's errors into ours (a 404 becomes None)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            if code in ("PreconditionFailed", "412") or status == 412:
                raise Conflict(f"{what}: the record changed meanwhile") from None
            raise RemoteError(f"registry {self.location}: {what} failed: {code}") from None
        except BotoCoreError as exc:
            raise RemoteError(
                f"registry {self.location}: {what} failed: {type(exc).__name__}"
            ) from None

    def _get(self, certname: str) -> tuple[Registration, str] | None:
        key = self._key(certname)
        resp = self._call("get", self.client.get_object, Key=key)
        if resp is None:
            return None
        from botocore.exceptions import BotoCoreError

        body = resp["Body"]
        try:
            if int(resp.get("ContentLength") or 0) > MAX_RECORD_BYTES:
                raise RemoteError(f"registry {self.location}: {key} is too large")
            data = body.read(MAX_RECORD_BYTES + 1)
        except BotoCoreError as exc:
            raise RemoteError(
                f"registry {self.location}: reading {key} failed: {type(exc).__name__}"
            ) from None
        finally:
            body.close()
        try:
            return parse_record(data, certname), str(resp.get("ETag", ""))
        except ValueError as exc:
            raise RemoteError(f"registry {self.location}: {key} is invalid: {exc}") from None

    def get(self, certname: str) -> Registration | None:
        try:
            found = self._get(certname)
        except InvalidRequest:
            return None
        return None if found is None else found[0]

    def get_versioned(self, certname: str) -> tuple[Registration, str] | None:
        """The record and its ETag, for a conditional update."""
        return self._get(certname)

    def _put(self, record: Registration, **condition: str) -> None:
        self._call(
            "put",
            self.client.put_object,
            Key=self._key(record.certname),
            Body=record.to_json(),
            ContentType="application/json",
            **condition,
        )

    def add(self, record: Registration, *, replace: bool = False) -> None:
        try:
            self._put(record, **({} if replace else {"IfNoneMatch": "*"}))
        except Conflict:
            raise Conflict(
                f"{record.certname} is already registered; unregister it first "
                "(or replace the registration, which issues a new token)"
            ) from None

    def remove(self, certname: str) -> None:
        key = self._key(certname)
        if self._call("head", self.client.head_object, Key=key) is None:
            raise NotFound(f"{certname} is not registered")
        self._call("delete", self.client.delete_object, Key=key)

    def records(self) -> Iterator[Registration]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", self.client.list_objects_v2, **kwargs) or {}
            for obj in page.get("Contents", []):
                key = str(obj.get("Key", ""))
                name = key[len(prefix) :]
                if "/" in name or not name.endswith(".json"):
                    continue
                try:
                    record = self.get(name[: -len(".json")])
                except RemoteError as exc:
                    log.warning("skipping %s", exc)
                    continue
                if record is not None:
                    yield record
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def redeem(self, certname: str, token: str | None, now: dt.datetime) -> Redemption:
        try:
            found = self._get(certname)
        except InvalidRequest:
            return Redemption(False, "no registration")
        record, etag = found if found else (None, "")
        reason = check_token(record, token, now)
        if reason is not None or record is None:
            return Redemption(False, reason or "no registration", record)
        if not self.mark_redeemed(record, etag, now):
            return Redemption(False, "token already used", record)
        return Redemption(True, "registered; token accepted", record.with_redeemed(now))

    def mark_redeemed(self, record: Registration, etag: str, now: dt.datetime) -> bool:
        """Conditionally mark *record* used; False if it changed since *etag* was read."""
        try:
            self._put(record.with_redeemed(now), IfMatch=etag)
        except Conflict:
            return False
        return True
