"""The one HTTP client for talking to the CA: pinned trust, optional client cert, bounded time and size."""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests

from .errors import ConfigError, RemoteError, ResponseTooLarge

__all__ = ["CAClient", "Fetched"]

USER_AGENT = "splitca"
CRL_V1_PATH = "/puppet-ca/v1/certificate_revocation_list/ca"


@dataclass(frozen=True)
class Fetched:
    """One answer from the CA. ``body`` is None for 304 Not Modified."""

    url: str
    status: int
    body: bytes | None
    last_modified: str | None
    date: str | None


def check_base_url(url: str) -> str:
    """``https://host[:port][/prefix]`` without query, fragment or credentials; no trailing '/'."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"--ca-url: {url!r} is not a URL: {exc}") from None
    if parts.scheme != "https":
        raise ConfigError(f"--ca-url: {url!r} must start with https://")
    if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            f"--ca-url: {url!r} must be https://HOST[:PORT] with no query or credentials"
        )
    return url.rstrip("/")


class CAClient:
    """HTTPS to one CA, trusting only the pinned CA bundle.

    ``trust_env`` is off, so nothing in the environment (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``, ``HTTPS_PROXY``, ``.netrc``) changes what is trusted or where
    the request goes. Redirects are not followed. Every request is bounded: *timeout*
    per connect/read and in total, and *max_bytes* of body, read by streaming so an
    oversized answer is never held in memory.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_bundle: Path,
        client_cert: tuple[Path, Path] | None = None,
        timeout: float = 30.0,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.base_url = check_base_url(base_url)
        if not ca_bundle.is_file():
            raise ConfigError(f"--ca-cert: {ca_bundle} does not exist")
        for p in client_cert or ():
            if not p.is_file():
                raise ConfigError(f"client certificate or key {p} does not exist")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = str(ca_bundle)
        if client_cert is not None:
            self._session.cert = (str(client_cert[0]), str(client_cert[1]))
        self._session.headers.update({"User-Agent": USER_AGENT, "Accept": "text/plain"})

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CAClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def crl_url(self, legacy_environment: str | None = None) -> str:
        if legacy_environment is not None:
            return f"{self.base_url}/{legacy_environment}/certificate_revocation_list/ca"
        return self.base_url + CRL_V1_PATH

    def get(self, url: str, *, if_modified_since: str | None = None) -> Fetched:
        """GET *url*; 200 and 304 are answers, anything else is a RemoteError.

        Raises:
          RemoteError: unreachable, TLS failure (including an untrusted CA server),
            timeout, an HTTP error status, a redirect, or a body over ``max_bytes``.
        """
        headers = {"If-Modified-Since": if_modified_since} if if_modified_since else {}
        deadline = time.monotonic() + self.timeout
        try:
            with self._session.get(
                url,
                headers=headers,
                timeout=(self.timeout, self.timeout),
                stream=True,
                allow_redirects=False,
            ) as resp:
                if resp.status_code == 304:
                    return Fetched(
                        url, 304, None, resp.headers.get("Last-Modified"), resp.headers.get("Date")
                    )
                if resp.status_code != 200:
                    detail = _short(resp.raw.read(200, decode_content=False))
                    raise RemoteError(f"{url} answered HTTP {resp.status_code}{detail}")
                body = self._read_capped(resp, url, deadline)
                return Fetched(
                    url, 200, body, resp.headers.get("Last-Modified"), resp.headers.get("Date")
                )
        except requests.exceptions.SSLError as exc:
            raise RemoteError(
                f"TLS with {url} failed (is --ca-cert the right CA?): {_root(exc)}"
            ) from None
        except requests.exceptions.Timeout:
            raise RemoteError(f"{url} did not answer within {self.timeout:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            raise RemoteError(f"cannot reach {url}: {_root(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise RemoteError(f"request to {url} failed: {_root(exc)}") from None

    def _read_capped(self, resp: requests.Response, url: str, deadline: float) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise ResponseTooLarge(
                f"{url} sent {int(declared)} bytes, more than the {self.max_bytes}-byte limit"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > self.max_bytes:
                raise ResponseTooLarge(f"{url} sent more than the {self.max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise RemoteError(f"{url} took longer than {self.timeout:g}s to send its answer")
            chunks.append(chunk)
        return b"".join(chunks)


def _short(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return f": {text[0][:160]}" if text else ""


def _root(exc: BaseException) -> str:
    """The innermost cause's message: the useful part of requests' nested errors."""
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    for arg in getattr(seen, "args", ()):
        if isinstance(arg, BaseException):
            seen = arg
    text = str(seen) or type(seen).__name__
    return text.splitlines()[0][:300]
