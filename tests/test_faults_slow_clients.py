"""Idle and slow clients (no TLS hello, half a handshake, trickled headers or bodies) cannot starve
real agents."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from splitca.authority import CertificateAuthority

from .conftest import Server, io_ready, make_csr

IDLE = 40  # connections that never send a byte
HALF_HELLO = 10  # connections that send part of a ClientHello and stop
TRICKLE = 6  # TLS connections that send their request head one byte at a time
SLOW_BODIES = 24  # TLS connections that send a complete head, then their body one byte at a time
THREADS = 4


@contextlib.contextmanager
def hostile_clients(port: int, stop: threading.Event) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    for _ in range(IDLE):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    for _ in range(HALF_HELLO):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
        socks.append(s)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tricklers = []

    def trickle() -> None:
        try:
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30)) as t:
                for byte in b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: x\r\n":
                    if stop.is_set():
                        return
                    t.sendall(bytes([byte]))
                    time.sleep(0.25)
        except OSError:
            pass  # the server hung up on us: exactly what it should do

    for _ in range(TRICKLE):
        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        tricklers.append(th)
    try:
        yield socks
    finally:
        stop.set()
        for s in socks:
            s.close()
        for th in tricklers:
            th.join(10)


@pytest.mark.slow
def test_idle_and_slow_clients_do_not_starve_agents(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    server = server_factory(ca.settings.replace(threads=THREADS, autosign=True), workers=1)
    url = server.url + "/puppet-ca/v1"
    verify = str(server.cacert)
    stop = threading.Event()
    with hostile_clients(server.port, stop):
        time.sleep(0.5)  # let every hostile connection land in the server
        started = time.monotonic()
        for i in range(5):
            # a fresh connection each time: the handshake must not wait behind the idlers
            name = f"agent{i}.example.com"
            csr = make_csr(name)
            r = requests.put(
                f"{url}/certificate_request/{name}",
                data=csr.public_bytes(serialization.Encoding.PEM),
                headers={"Content-Type": "text/plain"},
                verify=verify,
                timeout=5,
            )
            assert r.status_code == 200, r.text
            r = requests.get(f"{url}/certificate/{name}", verify=verify, timeout=5)
            assert r.status_code == 200
            assert r.text.startswith("-----BEGIN CERTIFICATE")
        served_in = time.monotonic() - started
    assert served_in < 20, served_in  # a bound on the test, not a benchmark
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text()


def answered(t: ssl.SSLSocket, wait: float = 0.5) -> bool:
    """Whether the server answered or hung up within *wait* (TLS session tickets are no answer)."""
    if not io_ready(t, timeout=wait)[0]:
        return False
    t.setblocking(False)
    try:
        t.recv(65536)
    except ssl.SSLWantReadError:
        return False
    except OSError:
        return True
    finally:
        t.settimeout(30)
    return True


@contextlib.contextmanager
def slow_bodies(port: int, stop: threading.Event) -> Iterator[None]:
    """SLOW_BODIES clients that trickle request bodies, reconnecting when the server hangs up."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def send_slowly(i: int) -> None:
        framing = "Content-Length: 2000" if i % 2 else "Transfer-Encoding: chunked"
        head = (
            f"PUT /puppet-ca/v1/certificate_request/slow{i} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: text/plain\r\n{framing}\r\n\r\n"
        ).encode()
        while not stop.is_set():
            try:
                with ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", port), timeout=30)
                ) as t:
                    t.sendall(head + (b"" if i % 2 else b"7d0\r\n"))
                    while not stop.is_set() and not answered(t):
                        t.sendall(b"x")
            except OSError:
                pass

    threads = [
        threading.Thread(target=send_slowly, args=(i,), daemon=True) for i in range(SLOW_BODIES)
    ]
    for th in threads:
        th.start()
    try:
        yield
    finally:
        stop.set()
        for th in threads:
            th.join(10)


@pytest.mark.slow
def test_slow_bodies_do_not_starve_agents(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    """Bodies are read like heads: in the selector, not by a worker thread waiting on the client."""
    server = server_factory(ca.settings.replace(threads=THREADS, autosign=True), workers=1)
    url = server.url + "/puppet-ca/v1"
    verify = str(server.cacert)
    stop = threading.Event()
    with slow_bodies(server.port, stop):
        time.sleep(1)  # every slow client has sent its head and is trickling its body
        started = time.monotonic()
        for i in range(5):
            name = f"agent{i}.example.com"
            r = requests.put(
                f"{url}/certificate_request/{name}",
                data=make_csr(name).public_bytes(serialization.Encoding.PEM),
                headers={"Content-Type": "text/plain"},
                verify=verify,
                timeout=5,
            )
            assert r.status_code == 200, r.text
            r = requests.get(f"{url}/certificate/{name}", verify=verify, timeout=5)
            assert r.status_code == 200
            r = requests.get(f"{url}/certificate_revocation_list/ca", verify=verify, timeout=5)
            assert r.status_code == 200
        served_in = time.monotonic() - started
    assert served_in < 20, served_in  # a bound on the test, not a benchmark
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text()
    assert not list((ca.store.cadir.root / "requests").glob("slow*"))


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_stalled_big_bodies_share_one_budget_per_worker(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    """Many connections each send most of a large body, then stall: what a worker holds for
    them is bounded by max_buffered_bytes, not by the number of connections (the ones past
    the budget get 503), and an agent's small request is still served."""
    from .test_request_bodies import tls, worker_pids

    body_limit, budget, conns = 4 * 1024 * 1024, 8 * 1024 * 1024, 40
    server = server_factory(
        ca.settings.replace(
            socket_timeout=dt.timedelta(seconds=60),
            max_body_bytes=body_limit,
            max_buffered_bytes=budget,
        ),
        workers=2,
    )
    workers = worker_pids(server)
    assert len(workers) == 2
    before = {pid: peak_rss_kb(pid) for pid in workers}
    stalled: list[ssl.SSLSocket] = []
    try:
        for i in range(conns):
            s = tls(server.port, timeout=20)
            stalled.append(s)
            with contextlib.suppress(OSError):  # refused (503) and closed while we sent
                s.sendall(
                    f"PUT /puppet-ca/v1/certificate_request/big{i} HTTP/1.1\r\nHost: ca\r\n"
                    f"Content-Type: text/plain\r\nContent-Length: {body_limit}\r\n\r\n".encode()
                    + b"A" * (body_limit - 1)
                )
        time.sleep(1)  # let the workers read what was sent
        growth = {pid: peak_rss_kb(pid) - before[pid] for pid in workers}
        name = "agent.example.com"
        r = server.put_csr(name)
        assert r.status_code == 200, r.text
    finally:
        for s in stalled:
            s.close()
    # 40 x 4 MiB would be 80 MiB a worker; the budget is 8 MiB (plus copies, TLS, the allocator)
    assert max(growth.values()) < 40 * 1024, growth
    log = server.log_text()
    assert "answered 503 and closed: The server is reading too many request bodies" in log, log
    assert "Traceback" not in log
    assert not list((ca.store.cadir.root / "requests").glob("big*"))


PIPELINED = 3000  # requests a slow reader sends in one go


@pytest.mark.slow
def test_a_client_that_pipelines_and_reads_slowly_does_not_hold_a_worker(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    """Each answer's write is bounded by socket_timeout, but a client that sends many
    requests at once and reads its answers just fast enough had the worker thread serve
    them all, one after another, before anyone else: one such client held a thread for
    minutes. A worker now serves one connection's pipelined requests for at most
    socket_timeout, then closes it."""
    server = server_factory(
        ca.settings.replace(threads=1, socket_timeout=dt.timedelta(seconds=2)), workers=1
    )
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    ctx.check_hostname = False
    stop = threading.Event()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a small window: writes block
    raw.settimeout(30)
    raw.connect(("127.0.0.1", server.port))
    slow = ctx.wrap_socket(raw, server_hostname="ca")
    get = b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: x\r\n\r\n"
    slow.sendall(get * PIPELINED)

    def read_slowly() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set() and slow.recv(1024):
                time.sleep(0.2)  # well within socket_timeout per answer

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        time.sleep(1)  # the slow reader has the worker
        r = requests.get(server.url + "/status/v1/simple", verify=str(server.cacert), timeout=15)
        assert r.status_code == 200 and r.text == "running"
    finally:
        stop.set()
        reader.join(10)
        slow.close()
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
def test_a_client_that_does_not_read_its_answers_is_closed_without_a_traceback(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    """An answer the client does not read times out after socket_timeout: the connection is
    closed, as for a client that stops sending, and no traceback goes to the log (a client
    could fill it so)."""
    server = server_factory(
        ca.settings.replace(threads=1, socket_timeout=dt.timedelta(seconds=2)), workers=1
    )
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    ctx.check_hostname = False
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", server.port))
    with ctx.wrap_socket(raw, server_hostname="ca") as deaf:
        deaf.sendall(b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED)
        time.sleep(4)  # the server's writes fill the buffers, then one times out
        r = requests.get(server.url + "/status/v1/simple", verify=str(server.cacert), timeout=15)
        assert r.status_code == 200
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_text(), server.log_text()[-2000:]


@pytest.mark.slow
def test_idle_connections_past_the_open_files_limit_do_not_lock_agents_out(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    """More idle connections than the worker has file descriptors for: the longest idle
    are closed so that an agent's new connection is served at once, with one warning.
    cheroot's accept loop re-raised EMFILE: it logged a traceback and retried at once,
    tens of thousands of lines a second, and accepted no one until idle ones expired."""
    server = server_factory(
        ca.settings.replace(threads=THREADS, socket_timeout=dt.timedelta(seconds=60)), workers=1
    )
    subprocess.run(["prlimit", "--pid", str(server.proc.pid), "--nofile=128:128"], check=True)
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(200)]
    try:
        for _ in range(3):
            r = requests.get(
                server.url + "/puppet-ca/v1/certificate/ca", verify=str(server.cacert), timeout=10
            )
            assert r.status_code == 200
    finally:
        for s in socks:
            s.close()
    assert server.proc.poll() is None
    log = server.log_text()
    assert "Traceback" not in log, log[-2000:]
    assert len(re.findall("out of connections", log)) == 1, log[-2000:]
