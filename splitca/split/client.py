"""The one outbound HTTP client (the CA for sync-crl, a registry): explicit trust, bounded time and size."""
# Over 400 lines because the bounded outbound HTTP client (TLS, size and time limits, redirects) is one mechanism.

from __future__ import annotations

import contextlib
import http.cookiejar
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import HTTPResponse

from splitca.config import is_loopback_address
from splitca.errors import ConfigError, RemoteError, ResponseTooLarge

__all__ = ["Fetched", "HTTPClient", "check_base_url", "printable", "system_ca_bundle"]

USER_AGENT = "splitca"
CRL_V1_PATH = "/puppet-ca/v1/certificate_revocation_list/ca"
_READ_SIZE = 64 * 1024
# The content codings this client decodes, and so the only ones it asks for. Set
# explicitly: requests' default grows with what is installed (br, zstd).
ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True)
class Fetched:
    """One answer. ``body`` is None for 304 Not Modified and for 404/410 when asked for."""

    url: str
    status: int
    body: bytes | None
    last_modified: str | None
    date: str | None


def check_base_url(
    url: str, *, option: str = "--ca-url", loopback_http: bool = False, userinfo: bool = False
) -> str:
    """``https://host[:port][/prefix]`` without query, fragment or credentials; no trailing '/'.

    *loopback_http* also allows ``http://`` to a literal loopback address; *userinfo*
    allows ``user:password@`` (sent as Basic auth, never logged).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{option}: {_shown(url)!r} is not a URL: {exc}") from None
    plain_ok = loopback_http and parts.scheme == "http" and is_loopback_address(parts.hostname)
    if parts.scheme != "https" and not plain_ok:
        raise ConfigError(f"{option}: {_shown(url)!r} must start with https://")
    if (
        not parts.hostname
        or parts.query
        or parts.fragment
        or ("@" in parts.netloc and not userinfo)
    ):
        raise ConfigError(
            f"{option}: {_shown(url)!r} must be https://HOST[:PORT] with no query or credentials"
        )
    return url.rstrip("/")


def system_ca_bundle() -> str:
    """The system's CA bundle, found without consulting the environment.

    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (and requests' ``REQUESTS_CA_BUNDLE``) are ignored:
    OpenSSL's compiled-in file or directory, else certifi's bundle (requests' default).
    """
    paths = ssl.get_default_verify_paths()
    if paths.openssl_cafile and os.path.isfile(paths.openssl_cafile):
        return paths.openssl_cafile
    if paths.openssl_capath and os.path.isdir(paths.openssl_capath):
        return paths.openssl_capath
    import certifi  # a dependency of requests

    return str(certifi.where())


class HTTPClient:
    """HTTPS to one server, trusting only the CA bundle it is given (or the system's).

    Used for the CA (``sync-crl``, with the pinned ``--ca-cert``) and for an HTTP(S)
    registry. ``trust_env`` is off, so nothing in the environment (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``, ``HTTPS_PROXY``, ``.netrc``) changes what is trusted or where the
    request goes. Redirects are not followed: a 3xx is an error. Every request is bounded
    by *timeout*, per connect/read and in total (name lookup, connect, TLS handshake,
    headers and body together: a server that trickles bytes, or a DNS server that drops
    queries, cannot hold it longer), and by *max_bytes* of
    body, read by streaming so an oversized answer is never held in memory. A body sent
    with a ``Content-Encoding`` (Apache's mod_deflate gzips ``text/plain`` by default) is
    decoded while it is read, and *max_bytes* bounds the decoded body too, so a small
    compressed answer cannot expand without limit; a coding it does not know is an error.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_bundle: Path | None,
        client_cert: tuple[Path, Path] | None = None,
        timeout: float = 30.0,
        max_bytes: int = 16 * 1024 * 1024,
        accept: str = "text/plain",
        url_option: str = "--ca-url",
        ca_option: str = "--ca-cert",
        loopback_http: bool = False,
        userinfo: bool = False,
        user_agent: str = USER_AGENT,
    ) -> None:
        """*ca_bundle* None means the system trust store (:func:`system_ca_bundle`).

        *url_option* and *ca_option* name the settings in ConfigErrors; *loopback_http*
        and *userinfo* are passed to :func:`check_base_url`.
        """
        self.base_url = check_base_url(
            base_url, option=url_option, loopback_http=loopback_http, userinfo=userinfo
        )
        if ca_bundle is not None and not ca_bundle.is_file():
            raise ConfigError(f"{ca_option}: {ca_bundle} does not exist")
        for p in client_cert or ():
            if not p.is_file():
                raise ConfigError(f"client certificate or key {p} does not exist")
        self.ca_option = ca_option
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.verify = str(ca_bundle) if ca_bundle is not None else system_ca_bundle()
        # No cookies: one answer must not change what the next request says.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _DeadlineAdapter(pool_maxsize=64)  # a registry is asked from many threads
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        if client_cert is not None:
            self._session.cert = (str(client_cert[0]), str(client_cert[1]))
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def crl_url(self, legacy_environment: str | None = None) -> str:
        if legacy_environment is not None:
            return f"{self.base_url}/{legacy_environment}/certificate_revocation_list/ca"
        return self.base_url + CRL_V1_PATH

    def get(
        self, url: str, *, if_modified_since: str | None = None, missing_ok: bool = False
    ) -> Fetched:
        """GET *url*; 200 and, to an *if_modified_since* request, 304 are answers (and
        404/410 if *missing_ok*), anything else is a RemoteError.

        The body is returned decoded from its ``Content-Encoding`` (gzip, deflate).

        Raises:
          RemoteError: unreachable, TLS failure (including an untrusted server), timeout
            (per operation or in total), an HTTP error status, a redirect, a content
            coding that is unknown or does not decode, or a body over ``max_bytes`` as
            sent or as decoded (ResponseTooLarge).
        """
        shown = _shown(url)
        headers = {"If-Modified-Since": if_modified_since} if if_modified_since else {}
        return self._guarded(
            shown, lambda deadline: self._get(url, shown, headers, deadline, missing_ok)
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: object = None,
        accept: str | None = None,
        max_bytes: int | None = None,
    ) -> Fetched:
        """*method* on *url*, with *json_body* sent as JSON if given; the answer whatever its
        status (an API client maps it), its body always read (bounded by *max_bytes*, by
        default the client's) and decoded as :meth:`get` does.

        Raises:
          RemoteError: as :meth:`get`, but an HTTP error status is an answer, not an error
            (a redirect still is one).
        """
        shown = _shown(url)
        headers = {"Accept": accept} if accept else {}
        data = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        limit = self.max_bytes if max_bytes is None else max_bytes
        return self._guarded(
            shown, lambda deadline: self._send(method, url, shown, headers, data, deadline, limit)
        )

    def _guarded(self, shown: str, work: Callable[[_Deadline], Fetched]) -> Fetched:
        """Run one request under its total deadline, every failure a RemoteError."""
        late = RemoteError(f"{shown} did not answer within {self.timeout:g}s")
        deadline = _Deadline(self.timeout)
        try:
            with deadline:
                fetched = work(deadline)
        except ResponseTooLarge:
            raise
        except RemoteError:
            if deadline.expired:
                raise late from None
            raise
        except requests.exceptions.SSLError as exc:
            if deadline.expired:
                raise late from None
            raise RemoteError(
                f"TLS with {shown} failed (is {self.ca_option} the right CA?): {_root(exc)}"
            ) from None
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
            raise late from None
        except requests.exceptions.ConnectionError as exc:
            if deadline.expired:
                raise late from None
            raise RemoteError(f"cannot reach {shown}: {_root(exc)}") from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.expired:
                raise late from None
            raise RemoteError(f"request to {shown} failed: {_root(exc)}") from None
        if deadline.expired:  # the body may look complete when its socket was shut down
            raise late
        return fetched

    def _send(
        self,
        method: str,
        url: str,
        shown: str,
        headers: dict[str, str],
        data: bytes | None,
        deadline: _Deadline,
        limit: int,
    ) -> Fetched:
        with self._session.request(
            method,
            url,
            headers=headers,
            data=data,
            timeout=(self.timeout, self.timeout),
            stream=True,
            allow_redirects=False,
        ) as resp:
            if resp.is_redirect:
                raise RemoteError(
                    f"{shown} answered HTTP {resp.status_code}, a redirect to "
                    f"{_shown(resp.headers.get('Location', '?'))[:200]!r}; redirects are not "
                    "followed"
                )
            lm, date = resp.headers.get("Last-Modified"), resp.headers.get("Date")
            if resp.status_code in (204, 304):
                # No body by definition (RFC 9110), but puppetserver's DELETE
                # certificate_request sends one with its 204. urllib3 reads none and would
                # hand the connection back with those bytes waiting, the start of the next
                # answer; so such a connection is closed. Otherwise the empty body is read,
                # which frees the connection for the next request.
                if resp.headers.get("Content-Length", "0").strip() != "0":
                    resp.raw.close()
                else:
                    self._read_capped(resp, shown, deadline, limit)
                return Fetched(url, resp.status_code, b"", lm, date)
            body = self._read_capped(resp, shown, deadline, limit)
            return Fetched(url, resp.status_code, body, lm, date)

    def _get(
        self,
        url: str,
        shown: str,
        headers: dict[str, str],
        deadline: _Deadline,
        missing_ok: bool,
    ) -> Fetched:
        with self._session.get(
            url,
            headers=headers,
            timeout=(self.timeout, self.timeout),
            stream=True,
            allow_redirects=False,
        ) as resp:
            lm, date = resp.headers.get("Last-Modified"), resp.headers.get("Date")
            # 304 means "what you have is current" only to a conditional request: to any
            # other it says nothing about what the caller has, and it is an error.
            not_modified = resp.status_code == 304 and "If-Modified-Since" in headers
            if not_modified or (missing_ok and resp.status_code in (404, 410)):
                return Fetched(url, resp.status_code, None, lm, date)
            if resp.is_redirect:
                raise RemoteError(
                    f"{shown} answered HTTP {resp.status_code}, a redirect to "
                    f"{_shown(resp.headers.get('Location', '?'))[:200]!r}; redirects are not "
                    "followed"
                )
            if resp.status_code != 200:
                raw = resp.raw.read(200, decode_content=False)
                try:  # only for the message: its first line, if it decodes
                    raw = _Decoder(resp.headers.get("Content-Encoding"), shown, 4096).feed(
                        raw, final=False
                    )
                except RemoteError:
                    raw = b""
                raise RemoteError(f"{shown} answered HTTP {resp.status_code}{_short(raw)}")
            body = self._read_capped(resp, shown, deadline)
            return Fetched(url, 200, body, lm, date)

    def _read_capped(
        self, resp: requests.Response, shown: str, deadline: _Deadline, limit: int | None = None
    ) -> bytes:
        max_bytes = self.max_bytes if limit is None else limit
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(
                f"{shown} sent {int(declared)} bytes, more than the limit of {max_bytes} bytes"
            )
        decoder = _Decoder(resp.headers.get("Content-Encoding"), shown, max_bytes)
        # One socket read at a time (read1), checking the deadline after each; the
        # deadline's watchdog also interrupts a read that blocks past it. Reads are of the
        # bytes as sent (requests does not decode a raw read); the decoder expands them.
        read = getattr(resp.raw, "read1", None) or resp.raw.read
        chunks: list[bytes] = []
        size = 0
        while True:
            if deadline.passed():
                raise RemoteError(f"{shown} did not answer within {self.timeout:g}s")
            chunk = read(_READ_SIZE)
            if not chunk:
                chunks.append(decoder.feed(b"", final=True))
                return b"".join(chunks)
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"{shown} sent more than {max_bytes} bytes (the limit)")
            chunks.append(decoder.feed(chunk, final=False))


# --- content codings ------------------------------------------------------------------------------

_ZLIB = zlib.MAX_WBITS  # zlib-wrapped deflate (RFC 9110 "deflate")
_GZIP = 16 + zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS  # what some servers send as "deflate"
_CODINGS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}


class _Decoder:
    """Decodes a body's ``Content-Encoding`` as it streams in, never holding more than
    *limit* decoded bytes: every layer is asked for at most what is left of the limit
    (plus one byte, to notice the overflow), so a decompression bomb costs no memory and
    fails as soon as it crosses the limit.

    Codings are listed in the order they were applied and undone in reverse (RFC 9110
    8.4); ``identity`` is no coding. Anything else raises RemoteError before a byte of
    the body is read.
    """

    def __init__(self, header: str | None, shown: str, limit: int) -> None:
        self.shown = shown
        self.limit = limit
        names = []
        for raw_name in (header or "").split(","):
            name = raw_name.strip().lower()
            if not name or name == "identity":
                continue
            if name not in _CODINGS:
                raise RemoteError(
                    f"{shown} sent its answer with Content-Encoding {printable(name, ascii=True)[:40]!r}, which "
                    f"splitca cannot decode (it asks for {ACCEPT_ENCODING})"
                )
            names.append(name)
        if len(names) > _MAX_CODINGS:
            raise RemoteError(
                f"{shown} sent its answer with {len(names)} content codings; at most "
                f"{_MAX_CODINGS} are decoded"
            )
        self.names = names
        # The first to undo is the last one applied.
        self.layers = [_Layer(n, shown, limit) for n in reversed(names)]

    def feed(self, data: bytes, *, final: bool) -> bytes:
        """Decode the next *data* (the body as sent); *final* at its end."""
        for layer in self.layers:
            data = layer.feed(data, final=final)
        return data


_MAX_CODINGS = 3


class _Layer:
    """One content coding being undone; its output is bounded by *limit* in total."""

    def __init__(self, name: str, shown: str, limit: int) -> None:
        self.name, self.shown, self.limit = name, shown, limit
        self.size = 0
        self.pending = b""  # the first bytes, until "deflate" shows whether it is zlib
        self.obj: Any = None

    def _start(self, head: bytes) -> Any:
        wbits = _CODINGS[self.name]
        if self.name == "deflate" and not _looks_zlib(head):
            wbits = _RAW_DEFLATE  # servers that send raw deflate as "deflate"
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes, *, final: bool) -> bytes:
        if self.obj is None:
            data = self.pending + data
            if not data and final:  # an empty body, whatever its coding claims
                return b""
            if len(data) < 2 and not final:
                self.pending = data
                return b""
            self.pending = b""
            self.obj = self._start(data)
        out: list[bytes] = []
        try:
            while data:
                room = self.limit - self.size + 1  # one byte more proves the overflow
                chunk = self.obj.decompress(data, room)
                self._count(chunk)
                out.append(chunk)
                data = self.obj.unconsumed_tail
                if self.obj.eof and self.obj.unused_data:
                    data = self.obj.unused_data
                    if self.name == "deflate":
                        raise RemoteError(
                            f"{self.shown} sent data after the end of its deflate body"
                        )
                    self.obj = zlib.decompressobj(_GZIP)  # gzip may hold several members
            if final:
                chunk = self.obj.flush()
                self._count(chunk)
                out.append(chunk)
                if not self.obj.eof:
                    raise zlib.error("the compressed data ends early")
        except zlib.error as exc:
            raise RemoteError(
                f"{self.shown} sent a {self.name} body that does not decode: {exc}"
            ) from None
        return b"".join(out)

    def _count(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise ResponseTooLarge(
                f"{self.shown} sent an answer that decodes ({self.name}) to more than "
                f"{self.limit} bytes (the limit)"
            )


def _looks_zlib(data: bytes) -> bool:
    """A zlib header (RFC 1950): method deflate, window at most 32K, valid check bits."""
    return (
        len(data) >= 2
        and data[0] & 0x0F == 8
        and data[0] >> 4 <= 7
        and (data[0] * 256 + data[1]) % 31 == 0
    )


# --- the total deadline ---------------------------------------------------------------------------
#
# requests' timeouts bound each socket operation, not the request: a server sending a byte
# every second never trips them. A _Deadline is a watchdog for one request: it holds a dup
# of every socket the request uses (registered by the connection classes below, in the
# calling thread) and shuts them down when the time is up, which ends any blocking read or
# handshake at once. The dups are its own file descriptors, so it can never touch a socket
# that was closed and whose number was reused.

_current = threading.local()


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._done = False
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def __enter__(self) -> _Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _current.deadline = None
        self._timer.cancel()
        with self._lock:
            self._done = True
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return
        with self._lock:
            if not self._done:
                self._socks.append(dup)
                if self.expired:
                    _shutdown(dup)
                return
        dup.close()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch(conn: _WatchedConnection, sock: socket.socket | None) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None and conn.watched_by is not deadline:
        deadline.watch(sock)
        conn.watched_by = deadline


class _WatchedConnection(HTTPConnection):
    """Registers its socket with the calling thread's deadline: when made (before any TLS
    handshake), and when a reused connection waits for a response. Under a deadline the
    host name is resolved within it (:func:`_resolve`) and its addresses tried in turn."""

    watched_by: _Deadline | None = None

    def _new_conn(self) -> socket.socket:
        self.watched_by = None
        deadline: _Deadline | None = getattr(_current, "deadline", None)
        sock = super()._new_conn() if deadline is None else self._connect_within(deadline)
        _watch(self, sock)
        return sock

    def _connect_within(self, deadline: _Deadline) -> socket.socket:
        name = self._dns_host
        addresses = _resolve(self, name, deadline)
        failed: Exception | None = None
        try:
            for address in addresses:  # what create_connection does, per address
                if deadline.passed():
                    break
                self._dns_host = address  # connect to it; TLS still checks self.host
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    failed = exc
        finally:
            self._dns_host = name
        raise failed or ConnectTimeoutError(self, f"connecting to {name} took too long")

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _watch(self, self.sock)
        return super().getresponse()


def _resolve(conn: HTTPConnection, name: str, deadline: _Deadline) -> list[str]:
    """The addresses of *name*, resolved before *deadline*.

    getaddrinfo cannot be interrupted, and before a socket exists the deadline's watchdog
    has nothing to shut down; so it runs in a thread of its own, abandoned (it ends when
    the resolver gives up) if the deadline comes first.
    """
    host = name.strip("[]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return [host]  # a literal address: nothing to look up
    found: list[list[str] | Exception] = []
    done = threading.Event()

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, conn.port, 0, socket.SOCK_STREAM)
            found.append(list(dict.fromkeys(_address(info[4]) for info in infos)))
        except Exception as exc:  # UnicodeError for a name IDNA refuses, too
            found.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name="splitca-resolve", daemon=True).start()
    if not done.wait(max(0.0, deadline.at - time.monotonic())):
        raise ConnectTimeoutError(conn, f"resolving {host} took longer than the deadline")
    result = found[0] if found else RuntimeError("no answer")
    if isinstance(result, socket.gaierror):
        raise NameResolutionError(host, conn, result)
    if isinstance(result, Exception):
        raise NewConnectionError(conn, f"cannot resolve {host}: {result}")
    return result


def _address(sockaddr: tuple[Any, ...]) -> str:
    """The address of a getaddrinfo *sockaddr* as connect takes it (IPv6 with its scope)."""
    if len(sockaddr) == 4 and sockaddr[3]:
        return f"{sockaddr[0]}%{sockaddr[3]}"
    return str(sockaddr[0])


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _shown(url: str) -> str:
    """*url* fit for messages and logs: no ``user:password@``."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


def _short(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return f": {printable(text[0][:160])}" if text else ""


def printable(text: str, *, ascii: bool = False) -> str:
    """*text* (from a server) fit for a terminal or a log: every character that does not
    print (a control, such as the ESC that starts a terminal escape sequence; a newline)
    becomes '?', and with *ascii* so does every non-ASCII one."""
    return "".join(c if c.isprintable() and (c.isascii() or not ascii) else "?" for c in text)


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
    return printable(text.splitlines()[0][:300])
