"""The embedded HTTPS server: cheroot over TLS, worker processes, clean shutdown, CRL upkeep."""
# Over 400 lines because the non-blocking request reader, the per-worker budget and the pre-fork supervisor share cheroot's plumbing.

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from types import FrameType
from typing import Any, Literal

from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.errors import (
    ListenError,
    MalformedRequestLine,
    RequestTimeout,
    ServerBusy,
    SplitCAError,
    StoreError,
)
from splitca.http.app import App, error_response
from splitca.http.descriptors import Connections, raise_descriptor_limit
from splitca.http.exchange import Gateway, Request
from splitca.http.metrics import MULTIPROC_ENV
from splitca.http.reading import BodyReader, Budget, find_head_end, framing
from splitca.http.wsgiapp import make_app

__all__ = ["build_ssl_context", "serve"]

log = logging.getLogger(
    "splitca.server"
)  # the name operators filter on, from before the http/ folder


def build_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+, the CA server's certificate, client certificates optional and verified against the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    configured = settings.server_cert is not None or settings.server_key is not None
    for path in (settings.effective_server_cert, settings.effective_server_key):
        if not path.exists():
            raise StoreError(
                f"the CA server's TLS certificate or key {path} does not exist; "
                + (
                    "check server_cert and server_key"
                    if configured
                    else "run 'splitca setup --server-identity' to issue them "
                    "(or set server_cert and server_key)"
                )
            )
    try:
        ctx.load_cert_chain(str(settings.effective_server_cert), str(settings.effective_server_key))
        ctx.load_verify_locations(cafile=str(settings.cadir / "ca_crt.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise StoreError(
            f"cannot load the server's TLS certificate {settings.effective_server_cert} or key "
            f"{settings.effective_server_key}: {getattr(exc, 'strerror', None) or exc}. "
            "Run 'splitca setup --server-identity' to issue them, or set server_cert and server_key."
        ) from exc
    ctx.verify_mode = ssl.CERT_OPTIONAL  # agents bootstrap without a certificate
    return ctx


class _DeadlineSSLSocket(ssl.SSLSocket):
    """An SSLSocket that serves pre-read bytes first and whose reads give up at ``deadline``.

    The per-read socket timeout alone lets a client that sends one byte every few
    seconds hold a worker thread forever; the deadline bounds a whole request. A write
    the client does not read times out after the socket timeout and closes the
    connection quietly.
    """

    deadline: float | None = None
    idle_timeout: float | None = None
    pre: bytearray  # what was read from the socket and not yet consumed (set by _Adapter.wrap)

    def _before_read(self) -> None:
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.settimeout(left if self.idle_timeout is None else min(left, self.idle_timeout))

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        pre = self.pre
        if pre:
            out = bytes(pre[:buflen])
            del pre[:buflen]
            return out
        self._before_read()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        pre = self.pre
        if pre:
            view = memoryview(buffer).cast("B")
            n = min(nbytes or len(view), len(view), len(pre))
            view[:n] = pre[:n]
            del pre[:n]
            return n
        self._before_read()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except TimeoutError:
            # the client does not read its answer: an errno cheroot closes on quietly, as
            # for a client that stops sending (its own message it logs with a traceback)
            raise TimeoutError(errno.ETIMEDOUT, "The client did not read the answer") from None

    def recv_nowait(self) -> bytes | Literal[False] | None:
        """Non-blocking: what the client has sent, False if nothing yet, None if the connection is finished."""
        try:
            chunk = ssl.SSLSocket.recv(self, 65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except (OSError, ValueError):
            return None
        return chunk or None


class _Adapter(BuiltinSSLAdapter):
    """cheroot's builtin adapter with our own SSLContext, and no handshake in the accept loop.

    cheroot does the TLS handshake in its single accepting thread, so one client that
    connects and sends nothing stalls every new connection for the whole socket
    timeout. Here ``wrap`` only wraps; :class:`_Connection` does the handshake in a
    worker thread, under a deadline, once the client has sent something.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            str(settings.effective_server_cert),
            str(settings.effective_server_key),
            str(settings.cadir / "ca_crt.pem"),
        )
        self.context = build_ssl_context(settings)
        self.context.sslsocket_class = _DeadlineSSLSocket
        self.request_timeout = settings.socket_timeout.total_seconds()
        self.max_body = settings.max_body_bytes
        self.budget = Budget(settings.effective_max_buffered_bytes)

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.pre = bytearray()
        return tls, {}


class _Connection(cheroot_server.HTTPConnection):
    """An HTTPS connection that never makes a worker thread wait for a slow or idle client.

    The TLS handshake, the request head and the request body are read without
    blocking: while they are incomplete the connection goes back to cheroot's selector
    (returning True keeps it open) and the worker serves someone else. Only a complete
    request is handed to cheroot's parser and the app, which read it from memory. A
    client gets ``socket_timeout`` from its first byte to finish the handshake and a
    request (head and body); the body is bounded by ``max_body_bytes`` while it is
    read. A body that is too large, badly framed or late is handed to the app as an
    error its ``wsgi.input`` raises, so the app's one error map answers 413, 400 or 408.
    What all connections of a worker hold beyond their first ``FREE`` bytes comes from
    one budget (``max_buffered_bytes``); a connection that needs more than is left is
    answered 503 and closed. A request line that is not strictly ``method target
    HTTP/d.d`` is answered 400 and closed, before any body is read. Pipelined requests
    are served one after another for at most ``socket_timeout``, then the connection
    is closed: a client that reads its answers slowly cannot keep the thread.
    """

    RequestHandlerClass = Request
    _handshaken = False
    _started: float | None = None
    _scanned = 0  # how much of the head buffered so far was searched for its end
    _end = -1  # where the head's blank line starts, once _read_head found it
    _skipped = 0  # blank lines skipped before the request line
    _charged = 0  # bytes this connection holds from the worker's budget
    _head = b""  # the request head, once complete, while its body is read
    _reader: BodyReader | None = None  # the body being read
    body: bytes | SplitCAError | None = None  # the request's body, for exchange.Request
    close_after = False  # its framing is uncertain: close once it is answered (exchange.Request)
    _later = b""  # what the client sent after this request (pipelining)
    counted_by: Connections | None = None  # the manager counting this open connection
    HEAD_LIMIT = 65536
    FREE = 16384  # bytes a connection may hold outside the budget: an agent's whole request

    def communicate(self) -> bool:
        sock = self.socket
        adapter = self.server.ssl_adapter
        if not isinstance(sock, _DeadlineSSLSocket) or not isinstance(adapter, _Adapter):
            return bool(super().communicate())
        limit = adapter.request_timeout
        visit = time.monotonic() + limit  # how long this thread serves this connection
        while True:
            ready = self._read_request(sock, adapter, limit)
            if ready is not True:
                return ready is False  # False: wait in the selector; None: close
            self._started = None
            sock.idle_timeout = limit
            sock.deadline = time.monotonic() + limit
            try:
                keep = bool(super().communicate())
            finally:
                sock.deadline = None
                self.body = None
                self.close_after = False
                self._charge(adapter.budget, 0)
                sock.pre.extend(self._later)
                self._later = b""
            if not keep or self.rfile.has_data():
                return keep
            if not (sock.pre or sock.pending()):
                return True
            if time.monotonic() > visit:
                # each answer's write is bounded by socket_timeout, not a client that sends
                # many requests at once and reads the answers just fast enough: close
                log.debug("closing %s: pipelined requests past socket_timeout", self.remote_addr)
                return False
            # a pipelined request is already here: serve it now, the selector won't wake

    def _read_request(
        self, sock: _DeadlineSSLSocket, adapter: _Adapter, limit: float
    ) -> bool | None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        elif now - self._started > limit:
            return self._late(sock)
        if self.rfile.has_data():
            return True  # cheroot's reader already holds the next request
        sock.setblocking(False)
        try:
            if not self._handshaken:
                if self._plain_http(sock):
                    return None
                try:
                    sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return False
                except (OSError, ValueError) as exc:
                    log.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                    return None
                self.ssl_env = adapter.get_environ(sock)
                self._handshaken = True
            return self._read_body(sock, adapter, limit)
        finally:
            sock.settimeout(limit)

    def _plain_http(self, sock: _DeadlineSSLSocket) -> bool:
        """The client speaks plain HTTP to this TLS port (``curl http://``): answered 400 in
        plain text, as cheroot's own accept loop does, instead of a silent close."""
        try:  # what the client sent, left unread for the handshake (a TLS record starts 0x16)
            first = socket.socket.recv(sock, 8, socket.MSG_PEEK)
        except OSError:
            return False
        if not _PLAIN_METHOD.match(first):
            return False
        body = _PLAIN.encode()
        with contextlib.suppress(OSError):
            socket.socket.send(
                sock,
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body),
            )
        log.info("%s: answered 400 and closed: plain HTTP on the HTTPS port", self.remote_addr)
        return True

    def _late(self, sock: _DeadlineSSLSocket) -> bool | None:
        """socket_timeout has passed since the request's first byte."""
        if self._reader is not None:  # the head came, the body is late: 408
            return self._hand_over(sock, self._head, RequestTimeout(_LATE), b"")
        log.debug("closing %s: no complete request within socket_timeout", self.remote_addr)
        return None

    def _charge(self, budget: Budget, held: int) -> bool:
        """This connection now holds *held* bytes; False if the worker's budget has no room."""
        want = max(0, held - self.FREE)
        if want == self._charged:
            return True  # an agent's request: nothing to take from the budget, nor to give back
        if not budget.resize(self._charged, want):
            return False
        self._charged = want
        return True

    def _refuse(self, exc: SplitCAError) -> None:
        """Answer *exc* now, without the app, and give up on the connection."""
        self._reader = None
        self._answer(exc)

    def _read_head(self, sock: _DeadlineSSLSocket, budget: Budget, limit: float) -> bool | None:
        """Move what the client has sent into ``sock.pre``, without blocking.

        True when a whole request head is buffered (or HEAD_LIMIT bytes), False when more
        is needed, None when the connection is finished (closed, broken, refused).
        """
        pre = sock.pre
        while True:
            # empty lines before a request line are ignored (RFC 9112 2.2), within limit
            if not self._scanned and pre and pre[0] in b"\r\n":
                blank = len(pre) - len(pre.lstrip(b"\r\n"))
                self._skipped += blank
                if self._skipped > self.HEAD_LIMIT:
                    return None
                del pre[:blank]
            end = find_head_end(pre, self._scanned) if pre else -1
            if end >= 0 or len(pre) >= self.HEAD_LIMIT:
                self._end = end
                return True
            self._scanned = len(pre)
            if time.monotonic() - (self._started or 0) > limit:
                return self._late(sock)
            chunk = sock.recv_nowait()
            if not chunk:
                return None if chunk is None else False
            pre.extend(chunk)
            if not self._charge(budget, len(pre)):
                self._refuse(ServerBusy(_BUSY))
                return None

    def _read_body(self, sock: _DeadlineSSLSocket, adapter: _Adapter, limit: float) -> bool | None:
        reader = self._reader
        if reader is None:  # first the head
            ready = self._read_head(sock, adapter.budget, limit)
            if ready is not True:
                return ready
            end = self._end
            self._scanned = self._skipped = 0
            if end < 0:
                return True  # a head past HEAD_LIMIT: cheroot's parser takes it from here
            head = bytes(sock.pre[: end + 4])
            data: bytes | Literal[False] | None = bytes(sock.pre[end + 4 :])
            sock.pre.clear()
            try:
                head, length, expect, self.close_after = framing(head, adapter.max_body)
                reader = BodyReader(adapter.max_body, length)
            except SplitCAError as exc:
                if isinstance(exc, MalformedRequestLine):  # cheroot may read it otherwise
                    self._refuse(exc)
                    return None
                return self._hand_over(sock, head, exc, b"")
            self._head, self._reader = head, reader
            if expect and length != 0 and not data:
                try:  # the client waits for this before it sends the body
                    sock.settimeout(limit)
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    sock.setblocking(False)
                except (OSError, ValueError):
                    self._reader = None
                    return None
        else:
            data = sock.recv_nowait()
        while True:
            if data:
                try:
                    later = reader.feed(data)
                except SplitCAError as exc:
                    return self._hand_over(sock, self._head, exc, b"")
                if later is not None:
                    return self._hand_over(sock, self._head, bytes(reader.data), later)
                if not self._charge(adapter.budget, len(self._head) + reader.held):
                    self._refuse(ServerBusy(_BUSY))
                    return None
            elif reader.done:  # no body, or an empty one
                return self._hand_over(sock, self._head, b"", b"")
            elif data is False:
                return False  # wait in the selector for the rest
            elif data is None:  # the client hung up, or the connection broke
                self._reader = None
                return None
            if time.monotonic() - (self._started or 0) > limit:
                return self._late(sock)  # data keeps coming, but not the end of it
            data = sock.recv_nowait()

    def _hand_over(
        self, sock: _DeadlineSSLSocket, head: bytes, body: bytes | SplitCAError, later: bytes
    ) -> Literal[True]:
        """The request is complete (or failed): cheroot parses *head*, the app reads *body*."""
        sock.pre[:] = head
        self.body = body
        self._later = later
        self._head, self._reader = b"", None
        return True

    def evict(self) -> None:
        """Closed to make room for a new connection (http/descriptors.py): a body being
        read is answered 503, as when the worker's budget is spent."""
        if self._reader is not None:
            self._refuse(ServerBusy(_CROWDED))
        self.close()

    def close(self) -> None:
        counter, self.counted_by = self.counted_by, None
        if counter is not None:
            counter.closed()
        adapter = self.server.ssl_adapter
        if isinstance(adapter, _Adapter):
            self._charge(adapter.budget, 0)
        if self._reader is not None and self.server.ready:
            # cheroot's selector expired us: the client stopped sending its body
            self._reader = None
            self._answer(RequestTimeout(_LATE))
        super().close()

    def _answer(self, exc: SplitCAError) -> None:
        """Best effort, never blocking (this may run in cheroot's selector thread)."""
        resp = error_response(exc)
        head = "".join(
            [f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}\r\n"]
            + [f"{name}: {value}\r\n" for name, value in resp.headers]
            + [
                f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\n"
                "Connection: close\r\n\r\n"
            ]
        )
        log.info("%s: answered %d and closed: %s", self.remote_addr, resp.status, exc)
        with contextlib.suppress(OSError, ValueError):
            self.socket.setblocking(False)
            self.socket.send(head.encode("ascii") + resp.body)


_LATE = "The request was not complete within the server's socket timeout."
_PLAIN = "This is an HTTPS port: the client sent a plain HTTP request; use https://.\n"
_PLAIN_METHOD = re.compile(rb"[A-Z]{3,7} ")  # GET, PUT, DELETE...: not a TLS record (0x16)
_BUSY = "The server is reading too many request bodies at once; retry later."
_CROWDED = "The server has too many connections open; retry later."


def _listen_error(settings: Settings, exc: OSError) -> ListenError:
    """The one-line error for an address the server cannot listen on."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    why = cause.strerror or str(cause)
    hint = (
        " (is another server running on it? choose another with --port/--listen)"
        if cause.errno == errno.EADDRINUSE
        else ""
    )
    return ListenError(f"cannot listen on {settings.listen}:{settings.port}: {why}{hint}")


def _check_listen(settings: Settings) -> None:
    """Bind the address once in the foreground, before any worker is forked.

    Raises:
      ListenError: no address for ``listen`` can be bound (port in use, not permitted...).
    """
    try:
        infos = socket.getaddrinfo(
            settings.listen, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise _listen_error(settings, exc) from None
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as cheroot does
                sock.bind(addr)
            return
        except OSError as exc:
            error = exc
    raise _listen_error(settings, error or OSError(errno.EADDRNOTAVAIL, "no address")) from None


KEEP_ALIVE_LIMIT = 1000  # connections a worker keeps open between requests


def _make_server(settings: Settings, app: App, *, reuse_port: bool) -> cheroot_wsgi.Server:
    server = cheroot_wsgi.Server(
        (settings.listen, settings.port),
        app,
        numthreads=settings.threads,
        max=settings.threads,
        request_queue_size=256,
        timeout=int(settings.socket_timeout.total_seconds()),
        shutdown_timeout=5,
        reuse_port=reuse_port,
        server_name=settings.certname,
    )
    server.ssl_adapter = _Adapter(settings)
    server.ConnectionClass = _Connection
    server.gateway = Gateway  # cheroot's WSGI 1.0 gateway, leaner (see http/exchange.py)
    # cheroot answers "Connection: close" once a worker holds 10 connections, so with more
    # agents than that every request paid a new TLS handshake (an RSA signature with an
    # RSA server key). An idle keep-alive connection here costs a descriptor and a selector
    # entry, never a thread (see _Connection), and cheroot still closes it after ``timeout``.
    server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
    # A head longer than the connection pre-reads is refused by cheroot (414/413) while it
    # parses what was pre-read, never read on from the socket (the margin covers cheroot's
    # 256-byte line reads).
    server.max_request_header_size = _Connection.HEAD_LIMIT - 512
    return server


# Each stops the server after its in-flight requests. SIGHUP too (a closed terminal, or an
# operator expecting a reload, which serve does not do): by default it killed the process
# at once, and with workers it killed only the supervisor, leaving its workers serving.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _run_worker(
    settings: Settings, *, reuse_port: bool, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT/SIGHUP, then finish in-flight requests and return."""
    ca = open_ca(settings)  # after fork: own index connections
    server = _make_server(settings, make_app(settings, ca=ca), reuse_port=reuse_port)
    stopper: list[threading.Thread] = []  # the one thread stopping the server, once signalled

    def finish(signum: int) -> None:
        log.info("%s: stopping after the requests in flight", signal.Signals(signum).name)
        server.stop()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopper:  # (signal handlers run in the main thread only: no race)
            stopper.append(threading.Thread(target=finish, args=(signum,), daemon=True))
            stopper[0].start()

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        server.prepare()  # binds and listens
    except OSError as exc:
        ca.close()
        raise _listen_error(settings, exc) from None
    # cheroot's manager, made by prepare(), replaced by one bounded by the open-files limit
    plain = server._connections  # type: ignore[attr-defined]
    server._connections = Connections(server)  # type: ignore[attr-defined]
    plain._selector.close()
    if on_ready:
        on_ready()
    try:
        server.serve()
    finally:
        # serve() returns as soon as stop() begins; stop() then waits (shutdown_timeout) for
        # the requests in flight. A worker process ends with os._exit, which would cut
        # them off, and the CA must stay open for them.
        for thread in stopper:
            thread.join()
        ca.close()


def _crl_upkeep(settings: Settings, stop: threading.Event) -> None:
    """Re-issue the CRL well before nextUpdate, forever (one thread in the supervisor);
    with ``purge_expired_after``, purge long-expired certificates at start and daily."""
    ca = open_ca(settings)
    interval = max(5.0, min(300.0, settings.effective_crl_refresh_margin.total_seconds() / 10))
    warned: dict[str, float] = {}
    next_purge = time.monotonic()
    while not stop.is_set():
        try:
            if ca.refresh_crl():
                log.info("CRL re-issued before its nextUpdate")
            _warn_crl_chain(ca, warned)
            if settings.purge_expired_after is not None and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + 86400
                ca.purge_expired(settings.purge_expired_after)
        except SplitCAError as exc:
            log.error("CRL upkeep failed (will retry in %.0fs): %s", interval, exc)
        except Exception:
            log.exception("CRL upkeep crashed (will retry)")
        stop.wait(interval)
    ca.close()


CRL_WARNING_EVERY = 6 * 3600.0  # seconds between repeats of one CRL chain warning


def _warn_crl_chain(ca: CertificateAuthority, warned: dict[str, float]) -> None:
    """Log each CRL of the chain that nears its nextUpdate, again every few hours."""
    now = time.monotonic()
    for line in ca.crl_warnings():
        key = line.split(" expires at ", 1)[0].split(" EXPIRED at ", 1)[0]
        if now - warned.get(key, -CRL_WARNING_EVERY) >= CRL_WARNING_EVERY:
            log.warning("CRL chain: %s", line)
            warned[key] = now


def serve(settings: Settings, *, ready: Callable[[str], None] | None = None) -> int:
    """Run the CA server in the foreground until SIGTERM/SIGINT/SIGHUP. Returns an exit code."""
    raise_descriptor_limit()  # each connection is a descriptor: as many as the system allows
    ca = open_ca(settings)
    build_ssl_context(settings)  # fail now, in the foreground, on a bad cert or key
    _check_listen(settings)  # and on a port in use, before forking any worker
    log.info("autosign policy: %s", ca.autosigner.description)  # a bad autosign value fails here
    ca.ca_certificate()  # loads (decrypts) the CA key now: no passphrase fails here, not later
    ca.log_ca_status()  # each CA certificate's expiry; a warning if near
    if settings.crl_ttl < dt.timedelta(days=365):
        log.warning(
            "crl_ttl is %s days: Puppet 7 agents keep the CRL they got at bootstrap and stop working "
            "once it expires, unless their puppet.conf sets crl_refresh_interval (Puppet 8 defaults "
            "to 1d). See docs/configuration.md, 'CRL'.",
            settings.crl_ttl.days,
        )
    ca.refresh_crl()  # a CRL past its margin is re-issued before we accept agents
    for line in ca.crl_warnings():  # the root's CRL, re-issued by hand, nearing its nextUpdate
        log.warning("CRL chain: %s", line)
    if ca.repair_serial():  # a crash may have lost the serial file's last (unsynced) update
        log.warning("serial file was behind the inventory; moved it past the last issued serial")
    ca.maintain()  # staged files left by crashed processes
    ca.close()
    if settings.autosign is True:
        log.warning(
            "autosign is TRUE: every CSR that passes validation is signed. Do not use in production."
        )
    workers = settings.workers or (os.cpu_count() or 1)
    url = f"https://{settings.listen}:{settings.port}"
    stop = threading.Event()
    upkeep = threading.Thread(
        target=_crl_upkeep, args=(settings, stop), daemon=True, name="crl-upkeep"
    )

    if workers == 1:
        upkeep.start()

        def announce() -> None:
            log.info("splitca serving %s (1 process, %d threads)", url, settings.threads)
            if ready:
                ready(url)

        try:
            _run_worker(settings, reuse_port=False, on_ready=announce)
        finally:
            stop.set()
        return 0
    return _supervise(settings, workers, url, upkeep, stop, ready)


def _supervise(
    settings: Settings,
    workers: int,
    url: str,
    upkeep: threading.Thread,
    stop: threading.Event,
    ready: Callable[[str], None] | None,
) -> int:
    """Fork *workers* processes that share the port (SO_REUSEPORT); restart any that die."""
    own_metrics_dir = _metrics_dir()
    try:
        return _run_workers(settings, workers, url, upkeep, stop, ready)
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _metrics_dir() -> str | None:
    """Give the workers one prometheus-client multiprocess directory, so that a scrape
    reaching any worker counts every worker's requests (see http/metrics.py). Made here,
    before forking and before any worker imports prometheus_client; an operator's own
    ``PROMETHEUS_MULTIPROC_DIR`` is used as given. Returns the directory made, if any."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    made = tempfile.mkdtemp(prefix="splitca-metrics-")
    os.environ[MULTIPROC_ENV] = made
    return made


def _run_workers(
    settings: Settings,
    workers: int,
    url: str,
    upkeep: threading.Thread,
    stop: threading.Event,
    ready: Callable[[str], None] | None,
) -> int:
    children: dict[int, int] = {}
    ready_r, ready_w = os.pipe()
    stopping = False

    def spawn(slot: int, notify: bool) -> None:
        pid = os.fork()
        if pid == 0:  # child
            if notify:
                os.close(ready_r)
            code = 0
            try:
                # Until the worker installs its own handlers, a SIGTERM must simply end it: the
                # inherited supervisor handler would run in the child and leave it serving.
                for sig in (*STOP_SIGNALS, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)

                def tell() -> None:
                    os.write(ready_w, b"r")

                _run_worker(settings, reuse_port=True, on_ready=tell if notify else None)
            except BaseException as exc:
                log.error("worker %d failed: %s", slot, exc)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = slot

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    for slot in range(workers):
        spawn(slot, True)
    os.close(ready_w)
    got = 0
    deadline = time.monotonic() + 30
    while got < workers and time.monotonic() < deadline and not stopping:
        try:
            chunk = os.read(ready_r, workers)
        except InterruptedError:
            continue
        if not chunk:
            break
        got += len(chunk)
    if got == workers:
        log.info("splitca serving %s (%d processes x %d threads)", url, workers, settings.threads)
        if ready:
            ready(url)
    else:
        log.error("only %d of %d workers started", got, workers)
    os.close(ready_r)
    upkeep.start()
    failures: list[float] = []
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        dead = children.pop(pid, None)
        if dead is None or stopping:
            continue
        failures = [t for t in failures if time.monotonic() - t < 60] + [time.monotonic()]
        if len(failures) > 5:
            log.error("workers keep dying; stopping")
            on_signal(signal.SIGTERM, None)
            code = 1
            continue
        log.error("worker %d (pid %d) exited with status %d; restarting", dead, pid, status)
        spawn(dead, False)
    stop.set()
    return code
