"""The embedded HTTPS server: cheroot over TLS, worker processes, clean shutdown, CRL upkeep."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from .compose import open_ca
from .config import Settings
from .errors import ListenError, SplitCAError, StoreError
from .wsgi import App

__all__ = ["build_ssl_context", "serve"]

log = logging.getLogger(__name__)


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
    seconds hold a worker thread forever; the deadline bounds a whole request.
    """

    deadline: float | None = None
    idle_timeout: float | None = None

    @property
    def pre(self) -> bytearray:
        buf: bytearray | None = self.__dict__.get("_pre")
        if buf is None:
            buf = self.__dict__["_pre"] = bytearray()
        return buf

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

    def read_available(self, limit: int) -> bool | None:
        """Non-blocking: move what the client has sent into ``pre``.

        True when a whole request head is buffered (or *limit* bytes), False when more
        is needed, None when the connection is finished (closed or broken).
        """
        while b"\r\n\r\n" not in self.pre and len(self.pre) < limit:
            try:
                chunk = ssl.SSLSocket.recv(self, 65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            self.pre.extend(chunk)
        return True


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

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), {}


class _Connection(cheroot_server.HTTPConnection):
    """An HTTPS connection that never makes a worker thread wait for a slow or idle client.

    The TLS handshake and the request head are read without blocking: while they are
    incomplete the connection goes back to cheroot's selector (returning True keeps
    it open) and the worker serves someone else. Only a complete head is handed to
    cheroot's parser, with a deadline for the rest (the body). A client gets
    ``socket_timeout`` from its first byte to finish the handshake or a request head.
    """

    _handshaken = False
    _started: float | None = None
    HEAD_LIMIT = 65536

    def communicate(self) -> bool:
        sock = self.socket
        adapter = self.server.ssl_adapter
        if not isinstance(sock, _DeadlineSSLSocket) or not isinstance(adapter, _Adapter):
            return bool(super().communicate())
        limit = adapter.request_timeout
        while True:
            ready = self._read_head(sock, adapter, limit)
            if ready is not True:
                return ready is False  # False: wait in the selector; None: close
            self._started = None
            sock.idle_timeout = limit
            sock.deadline = time.monotonic() + limit
            try:
                keep = bool(super().communicate())
            finally:
                sock.deadline = None
            if not keep or self.rfile.has_data():
                return keep
            if not (sock.pre or sock.pending()):
                return True
            # a pipelined request is already here: serve it now, the selector won't wake

    def _read_head(self, sock: _DeadlineSSLSocket, adapter: _Adapter, limit: float) -> bool | None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        elif now - self._started > limit:
            log.debug("closing %s: no complete request within %gs", self.remote_addr, limit)
            return None
        if self.rfile.has_data():
            return True  # cheroot's reader already holds the next request
        sock.setblocking(False)
        try:
            if not self._handshaken:
                try:
                    sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return False
                except (OSError, ValueError) as exc:
                    log.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                    return None
                self.ssl_env = adapter.get_environ(sock)
                self._handshaken = True
            return sock.read_available(self.HEAD_LIMIT)
        finally:
            sock.settimeout(limit)


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
    return server


def _run_worker(
    settings: Settings, *, reuse_port: bool, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and return."""
    ca = open_ca(settings)  # after fork: own index connections
    server = _make_server(settings, App(ca), reuse_port=reuse_port)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.prepare()  # binds and listens
    except OSError as exc:
        ca.index.close()
        raise _listen_error(settings, exc) from None
    if on_ready:
        on_ready()
    try:
        server.serve()
    finally:
        ca.index.close()


def _crl_upkeep(settings: Settings, stop: threading.Event) -> None:
    """Re-issue the CRL well before nextUpdate, forever (one thread in the supervisor)."""
    ca = open_ca(settings)
    interval = max(5.0, min(300.0, settings.effective_crl_refresh_margin.total_seconds() / 10))
    while not stop.is_set():
        try:
            if ca.refresh_crl():
                log.info("CRL re-issued before its nextUpdate")
        except SplitCAError as exc:
            log.error("CRL refresh failed (will retry in %.0fs): %s", interval, exc)
        except Exception:
            log.exception("CRL refresh crashed (will retry)")
        stop.wait(interval)
    ca.index.close()


def serve(settings: Settings, *, ready: Callable[[str], None] | None = None) -> int:
    """Run the CA server in the foreground until SIGTERM/SIGINT. Returns an exit code."""
    ca = open_ca(settings)
    build_ssl_context(settings)  # fail now, in the foreground, on a bad cert or key
    _check_listen(settings)  # and on a port in use, before forking any worker
    log.info("autosign policy: %s", ca.autosigner.description)  # a bad autosign value fails here
    if settings.crl_ttl < dt.timedelta(days=365):
        log.warning(
            "crl_ttl is %s days: Puppet 7 agents keep the CRL they got at bootstrap and stop working "
            "once it expires, unless their puppet.conf sets crl_refresh_interval (Puppet 8 defaults "
            "to 1d). See docs/configuration.md, 'CRL'.",
            settings.crl_ttl.days,
        )
    ca.refresh_crl()  # a CRL past its margin is re-issued before we accept agents
    if ca.repair_serial():  # a crash may have lost the serial file's last (unsynced) update
        log.warning("serial file was behind the inventory; moved it past the last issued serial")
    ca.cadir.clear_stale_staging()
    ca.index.close()
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
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
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

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
