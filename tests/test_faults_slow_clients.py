"""Idle and slow clients (no TLS hello, half a handshake, trickled headers or bodies) cannot starve
real agents."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from splitca.authority import CertificateAuthority

from .conftest import Server, make_csr

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
    if not select.select([t], [], [], wait)[0]:
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
