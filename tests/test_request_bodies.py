"""Request bodies through the real server: bounded while read, bad framing is the client's 4xx.

Raw TLS sockets against `splitca serve` (two workers): a huge declared chunk, a
malformed or absurd chunk size, a body that stalls or trickles past socket_timeout,
and the ordinary cases (chunked, Expect: 100-continue, keep-alive, pipelining) that
must keep working now that the server reads bodies before a worker thread serves them.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from splitca import compose
from splitca.authority import CertificateAuthority
from splitca.errors import BodyTooLarge, RequestTimeout

from .apache_harness import wsgi_python_home  # noqa: F401 - fixture
from .conftest import Server, io_ready, make_csr, snapshot

V1 = "/puppet-ca/v1"
TIMEOUT = 2  # the server's socket_timeout in the slow-body tests


def tls(port: int, timeout: float = 10) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout))


def put_head(name: str, *headers: str) -> bytes:
    lines = [f"PUT {V1}/certificate_request/{name} HTTP/1.1", "Host: ca", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Responses:
    """Reads the responses on one connection in order (100 Continue skipped)."""

    def __init__(self, s: ssl.SSLSocket) -> None:
        self.s = s
        self.buf = b""

    def _more(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.s.settimeout(left)
        try:
            piece = self.s.recv(65536)
        except (TimeoutError, OSError):
            return False
        self.buf += piece
        return bool(piece)

    def next(self, timeout: float = 15) -> tuple[int, bytes, bytes]:
        """(status, head, body); status 0 if the server closed without an answer."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._more(deadline):
                    return 0, self.buf, b""
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 "):
                return 0, head, b""
            status = int(head.split()[1])
            if status != 100:
                break
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length and self._more(deadline):
            pass
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, head, body


def read_response(s: ssl.SSLSocket, timeout: float = 15) -> tuple[int, bytes, bytes]:
    return Responses(s).next(timeout)


def complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(sep) and match is not None and len(body) >= int(match[1])


def csr_pem(name: str) -> bytes:
    return make_csr(name).public_bytes(serialization.Encoding.PEM)


def chunked(data: bytes, size: int = 100) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def worker_pids(server: Server) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server.proc.pid:
            pids.append(int(entry.name))
    return pids


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def assert_no_traceback(server: Server) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log
    assert " 500 " not in log, log


@pytest.fixture
def serve(ca: CertificateAuthority, server_factory: Callable[..., Server]) -> Callable[..., Server]:
    def start(**overrides: object) -> Server:
        return server_factory(ca.settings.replace(**overrides), workers=2)

    return start


def test_chunked_decoding_does_not_depend_on_how_the_bytes_arrive() -> None:
    """Size lines, CRLFs and trailers split across reads (TLS records) decode the same."""
    from splitca.http.reading import BodyReader

    payload = bytes(range(256)) * 40
    wire = chunked(payload, 77).replace(b"\r\n", b'; ext="x"\r\n', 1)
    wire = wire[:-2] + b"Trailer-A: 1\r\nTrailer-B: 2\r\n\r\nNEXT"
    for step in (1, 2, 3, 7, 64, len(wire)):
        reader = BodyReader(65536, None)
        for i in range(0, len(wire), step):
            rest = reader.feed(wire[i : i + step])
            if rest is not None:
                assert rest + wire[i + step :] == b"NEXT", step
                break
        else:
            raise AssertionError(f"body never complete, fed {step} bytes at a time")
        assert bytes(reader.data) == payload, step
    # the pipelined bytes after the body come back whole when they arrive with it
    reader = BodyReader(65536, None)
    assert reader.feed(wire) == b"NEXT"
    # 16-byte chunks up to the limit: linear work, then the limit holds
    reader = BodyReader(65536, None)
    assert reader.feed(b"10\r\n" + b"x" * 16 + b"\r\n") is None
    assert reader.feed((b"10\r\n" + b"x" * 16 + b"\r\n") * 4095) is None
    assert len(reader.data) == 65536
    with pytest.raises(BodyTooLarge):
        reader.feed(b"1\r\nx\r\n")


def test_chunk_framing_counts_against_the_limit() -> None:
    """Size lines, extensions and CRLFs count too: at most limit + 64 KiB of framing, so a
    body of max_body_bytes is at most 2 * max_body_bytes + 64 KiB on the wire (413 beyond)."""
    from splitca.http.reading import BodyReader

    # the reviewer's case: 4 KiB of chunk extension per data byte
    reader = BodyReader(1024, None)
    piece = b"1;" + b"e" * 4000 + b"\r\nA\r\n"
    with pytest.raises(BodyTooLarge):
        for _ in range(1000):
            assert reader.feed(piece) is None
    assert len(reader.data) < 40
    # one-byte chunks: refused once their framing passes the bound, not at the body's end
    reader = BodyReader(65536, None)
    with pytest.raises(BodyTooLarge):
        reader.feed(b"1\r\nx\r\n" * 65536)
    # a legitimate body in reasonable chunks is read whole
    reader = BodyReader(65536, None)
    assert reader.feed(chunked(b"y" * 65536, 512)) == b""
    assert len(reader.data) == 65536


def test_a_huge_declared_chunk_is_413_without_reading_it(
    ca: CertificateAuthority, serve: Callable[..., Server]
) -> None:
    """One 400 MiB chunk: refused by its size line, the worker's memory stays flat."""
    server = serve()
    workers = worker_pids(server)
    assert len(workers) == 2
    before = {pid: peak_rss_kb(pid) for pid in workers}
    total = 400 * 1024 * 1024
    s = tls(server.port)
    s.sendall(
        put_head("huge", "Transfer-Encoding: chunked", "Content-Type: text/plain")
        + f"{total:x}\r\n".encode()
    )
    # Keep sending the chunk, as a hostile client would, until the server answers or hangs up.
    s.setblocking(False)
    piece = b"A" * 65536
    sent, answer, hung_up = 0, b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not complete(answer):
        readable, writable = io_ready(s, write=sent < total and not hung_up, timeout=1)
        if readable or s.pending():
            try:
                data = s.recv(65536)
            except ssl.SSLWantReadError:
                data = None
            except OSError:
                break
            if data == b"":
                break
            answer += data or b""
        if writable:
            try:
                sent += s.send(piece)
            except (ssl.SSLWantWriteError, BlockingIOError):
                pass
            except OSError:
                hung_up = True  # on the rest of the chunk; its answer may still be unread
    s.close()
    assert answer.startswith(b"HTTP/1.1 413 "), (answer[:200], sent)
    assert b"Request body is larger than 65536 bytes." in answer
    growth = max(peak_rss_kb(pid) - before[pid] for pid in workers)
    assert growth < 200 * 1024, f"a worker's peak RSS grew by {growth} kB"
    assert sent < total  # refused long before the chunk was sent
    assert not (ca.store.cadir.root / "requests" / "huge.pem").exists()
    assert_no_traceback(server)


BAD_CHUNK_SIZES = [
    (b"zz", 400, b"Malformed chunked request body: bad chunk size 'zz'."),
    (b"-5", 400, b"Malformed chunked request body: bad chunk size '-5'."),
    (b"", 400, b"Malformed chunked request body: bad chunk size ''."),
    (b"ffffffffffffffffffff", 413, b"Request body is larger than 65536 bytes."),
    (b"10001", 413, b"Request body is larger than 65536 bytes."),
]


def test_bad_chunk_sizes_are_the_clients_error(
    ca: CertificateAuthority, serve: Callable[..., Server]
) -> None:
    server = serve()
    before = snapshot(ca.store.cadir.root)
    for size_line, status, message in BAD_CHUNK_SIZES:
        with tls(server.port) as s:
            s.sendall(
                put_head("bad", "Transfer-Encoding: chunked", "Content-Type: text/plain")
                + size_line
                + b"\r\nsome bytes\r\n"
            )
            got, head, body = read_response(s)
        assert got == status, (size_line, head, body)
        assert body == message
        assert b"connection: close" in head.lower()  # the rest of the stream cannot be framed
    assert snapshot(ca.store.cadir.root) == before
    assert_no_traceback(server)


def test_a_too_long_content_length_is_413_before_the_body(serve: Callable[..., Server]) -> None:
    server = serve()
    with tls(server.port) as s:
        s.sendall(put_head("big", "Content-Length: 419430400", "Content-Type: text/plain"))
        got, _, body = read_response(s)  # answered without sending a byte of the body
    assert (got, body) == (413, b"Request body is larger than 65536 bytes.")
    assert_no_traceback(server)


def test_a_head_too_long_to_pre_read_is_refused(serve: Callable[..., Server]) -> None:
    """Past 64 KiB the head is not read on (and its chunked body never reaches the app)."""
    server = serve()
    for head in (
        f"PUT {V1}/certificate_request/{'a' * 70000} HTTP/1.1\r\nHost: ca\r\n",
        put_head("long", "X-Padding: " + "a" * 70000, "Transfer-Encoding: chunked")[:-2].decode(),
    ):
        with tls(server.port) as s:
            s.sendall(head.encode() + b"\r\n" + f"{400 * 1024 * 1024:x}\r\n".encode() + b"A" * 1000)
            got, _, body = read_response(s)
        assert got in (413, 414) and b"the maximum allowed bytes" in body, (got, body)
    assert_no_traceback(server)


def test_a_body_that_stalls_is_408(ca: CertificateAuthority, serve: Callable[..., Server]) -> None:
    server = serve(socket_timeout=dt.timedelta(seconds=TIMEOUT))
    before = snapshot(ca.store.cadir.root)
    with tls(server.port, timeout=TIMEOUT * 10) as s:
        s.sendall(put_head("stall", "Content-Length: 1000", "Content-Type: text/plain") + b"x" * 10)
        got, head, body = read_response(s, timeout=TIMEOUT * 10)
    assert got == 408, (head, body)
    assert body == b"The request was not complete within the server's socket timeout."
    assert snapshot(ca.store.cadir.root) == before
    assert server.proc.poll() is None
    assert_no_traceback(server)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_trickles_past_the_timeout_is_408(
    ca: CertificateAuthority, serve: Callable[..., Server], framing: str
) -> None:
    """A byte now and then resets no clock: the whole request has socket_timeout."""
    server = serve(socket_timeout=dt.timedelta(seconds=TIMEOUT))
    header = "Content-Length: 1000" if framing == "content-length" else "Transfer-Encoding: chunked"
    with tls(server.port, timeout=TIMEOUT * 10) as s:
        s.sendall(put_head("trickle", header, "Content-Type: text/plain"))
        if framing == "chunked":
            s.sendall(b"3e8\r\n")
        deadline = time.monotonic() + TIMEOUT * 5
        while time.monotonic() < deadline:
            try:
                s.sendall(b"x")
            except OSError:
                break
            if io_ready(s, timeout=0.4)[0]:
                break
        got, head, body = read_response(s, timeout=TIMEOUT * 5)
    assert got == 408, (head, body)
    assert body == b"The request was not complete within the server's socket timeout."
    assert not (ca.store.cadir.root / "requests" / "trickle.pem").exists()
    assert_no_traceback(server)


def test_ordinary_bodies_keep_working(
    ca: CertificateAuthority, serve: Callable[..., Server]
) -> None:
    """Chunked, Expect: 100-continue, keep-alive and pipelined requests with bodies."""
    server = serve()
    with tls(server.port) as s:
        # chunked in small chunks, with an extension and a trailer
        body = chunked(csr_pem("chunky"), 64).replace(b"\r\n", b";ext=1\r\n", 1)
        s.sendall(
            put_head("chunky", "Transfer-Encoding: chunked", "Content-Type: text/plain")
            + body[:-2]
            + b"X-Trailer: yes\r\n\r\n"
        )
        responses = Responses(s)
        assert responses.next()[0] == 200
        # Expect: 100-continue on the same connection: the body goes only after the 100
        csr = csr_pem("patient")
        s.sendall(
            put_head(
                "patient",
                f"Content-Length: {len(csr)}",
                "Expect: 100-continue",
                "Content-Type: text/plain",
            )
        )
        s.settimeout(10)
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(csr)
        assert responses.next()[0] == 200
        # two requests with bodies in one write (pipelining), then a GET
        one, two = csr_pem("pipe1"), csr_pem("pipe2")
        s.sendall(
            put_head("pipe1", f"Content-Length: {len(one)}", "Content-Type: text/plain")
            + one
            + put_head("pipe2", "Transfer-Encoding: chunked", "Content-Type: text/plain")
            + chunked(two)
            + f"GET {V1}/certificate_request/pipe2 HTTP/1.1\r\nHost: ca\r\n\r\n".encode()
        )
        assert responses.next()[0] == 200
        assert responses.next()[0] == 200
        got, _, pem = responses.next()
        assert (got, pem) == (200, two)
    for name in ("chunky", "patient", "pipe1", "pipe2"):
        assert (ca.store.cadir.root / "requests" / f"{name}.pem").exists(), name
    assert_no_traceback(server)


def test_a_body_of_exactly_max_body_bytes_is_read(serve: Callable[..., Server]) -> None:
    """The limit is inclusive, in both framings (the CSR is then refused as garbage: 400)."""
    server = serve(max_body_bytes=4096)
    for framing in ("content-length", "chunked"):
        payload = b"x" * 4096
        if framing == "chunked":
            data = put_head("edge", "Transfer-Encoding: chunked") + chunked(payload, 1000)
        else:
            data = put_head("edge", "Content-Length: 4096") + payload
        with tls(server.port) as s:
            s.sendall(data)
            got, _, body = read_response(s)
        assert got == 400 and b"not a PEM certificate request" in body, (framing, body)
        over = payload + b"x"
        if framing == "chunked":
            data = put_head("edge", "Transfer-Encoding: chunked") + chunked(over, 1000)
        else:
            data = put_head("edge", "Content-Length: 4097") + over
        with tls(server.port) as s:
            s.sendall(data)
            got, _, body = read_response(s)
        assert (got, body) == (413, b"Request body is larger than 4096 bytes."), framing
    assert_no_traceback(server)


# --- the same bodies with the CA under Apache + mod_wsgi ------------------------------------------


@pytest.mark.interop
@pytest.mark.slow
def test_bodies_under_mod_wsgi_are_bounded_and_bad_ones_are_4xx(wsgi_python_home: Path) -> None:  # noqa: F811
    """With the CA under Apache as apache-config renders it, bodies are bounded too: mod_wsgi
    refuses chunked bodies, LimitRequestBody caps the rest, the app refuses a Content-Length
    over max_body_bytes unread; nothing is a 500 or a traceback in Apache's error log."""
    import shutil

    from .apache_harness import (
        owned_by_nobody,
        start_apache,
        stop_apache,
        world_dir,
        wsgi_ca_site,
    )
    from .conftest import free_port, make_settings, write_config

    root = world_dir("splitca-bodies-")
    settings = make_settings(root)
    compose.setup_ca(settings)
    config = write_config(root / "splitca.yaml", settings)
    port = free_port()
    site = wsgi_ca_site(settings, config, port, wsgi_python_home)
    before = snapshot(settings.cadir)
    bad = put_head("bad", "Transfer-Encoding: chunked") + b"zz\r\nsome bytes\r\n"
    huge = put_head("huge", "Transfer-Encoding: chunked") + b"19000000\r\n" + b"A" * 131072
    # over max_body_bytes, under the vhost's LimitRequestBody: the app refuses it unread
    big = put_head("big", "Content-Length: 100000") + b"A" * 100000
    # As rendered, mod_wsgi refuses chunked bodies itself (411). With WSGIChunkedRequest On,
    # the Apache child decodes the chunks while it passes them to the daemon, and refuses
    # a bad one itself (400); what reaches the app is read in bounded pieces.
    cases = (((), [bad, huge, big], [411, 411, 413]), (("WSGIChunkedRequest On",), [bad], [400]))
    for extra, requests, expected in cases:
        with owned_by_nobody(root):
            httpd = start_apache(site, port, ("ssl", "headers", "env", "wsgi"), extra=extra)
            try:
                answers = []
                for data in requests:
                    with tls(port) as s:
                        s.sendall(data)
                        answers.append(read_response(s, timeout=30))
                log = httpd.log_text()
            finally:
                stop_apache(httpd)
        assert [a[0] for a in answers] == expected, (extra, answers, log[-3000:])
        if not extra:
            assert answers[2][2] == b"Request body is larger than 65536 bytes."
        assert "Traceback" not in log, log[-3000:]
    assert snapshot(settings.cadir) == before
    shutil.rmtree(root, ignore_errors=True)


# --- the head, as cheroot will read it ------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["HTTP/1.1 ", "HTTP/1.1\t", "HTTP/01.1", "HTTP/1.01", "HTTP/+1.1"]
)
def test_a_request_line_cheroot_could_read_otherwise_is_400(
    ca: CertificateAuthority, serve: Callable[..., Server], version: str
) -> None:
    """cheroot strips the request line and int()s the version, so it takes these as HTTP/1.1
    and chunked: a body reader that took them as HTTP/1.0 (no chunked) would leave the body
    to be parsed as the next request (two answers for one request). Refused, nothing read."""
    server = serve()
    before = snapshot(ca.store.cadir.root)
    smuggled = b"GET /status/v1/simple HTTP/1.1\r\nHost: ca\r\n\r\n"
    with tls(server.port) as s:
        s.sendall(
            f"PUT {V1}/certificate_request/smuggle {version}\r\nHost: ca\r\n".encode()
            + b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + smuggled
        )
        responses = Responses(s)
        got, head, body = responses.next()
        assert (got, body) == (400, b"Malformed request line."), (version, head, body)
        assert b"connection: close" in head.lower()
        assert responses.next(5)[0] == 0  # closed: no answer for the "body"
    assert snapshot(ca.store.cadir.root) == before
    assert_no_traceback(server)


def test_http_1_0_expect_100_continue_is_ignored(
    ca: CertificateAuthority, serve: Callable[..., Server]
) -> None:
    """RFC 9110 10.1.1: an Expect from an HTTP/1.0 client is ignored, no interim 100."""
    server = serve()
    csr = csr_pem("old")
    with tls(server.port) as s:
        s.sendall(
            f"PUT {V1}/certificate_request/old HTTP/1.0\r\nHost: ca\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(csr)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        io_ready(s, timeout=0.5)  # what the server sends before the body, if anything
        s.sendall(csr)
        got = b""
        s.settimeout(10)
        while b"\r\n\r\n" not in got:
            piece = s.recv(65536)
            if not piece:
                break
            got += piece
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert (ca.store.cadir.root / "requests" / "old.pem").exists()


# --- bounded work and time, whatever the client sends ---------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts the bytes its searches and strips go over."""

    work = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        self.work += len(self) - (start or 0)
        return super().find(sub, start, end)

    def lstrip(self, chars: Any = None) -> bytearray:  # type: ignore[override]
        self.work += len(self)
        return super().lstrip(chars)


class FakeSocket:
    """What _Connection reads a request from: ``pre`` and non-blocking reads, scripted."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.pre = CountingBuffer()
        self.chunks = chunks
        self.sent = b""

    def recv_nowait(self) -> bytes | bool:
        return next(self.chunks, False)

    def settimeout(self, timeout: float | None) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    sendall = send


def fake_connection(max_body: int = 65536) -> tuple[Any, Any]:
    from types import SimpleNamespace

    from splitca.http.reading import Budget
    from splitca.http.server import _Connection

    conn = object.__new__(_Connection)
    conn.remote_addr = "127.0.0.1"
    conn._started = time.monotonic()
    return conn, SimpleNamespace(max_body=max_body, budget=Budget(16 * max_body))


def test_a_head_in_one_byte_records_is_read_in_linear_work() -> None:
    """Each TLS record resumes the search for the head's end where it stopped: a 60 KB head
    a byte at a time is not 60 KB of searching (and copying) per byte."""
    head = b"GET /status/v1/simple HTTP/1.1\r\nHost: ca\r\nX-Pad: " + b"A" * 60000 + b"\r\n\r\n"
    sock = FakeSocket(head[i : i + 1] for i in range(len(head)))
    conn, adapter = fake_connection()
    ready = None
    for _ in range(len(head)):
        ready = conn._read_body(sock, adapter, 30.0)
        if ready is not False:
            break
    assert ready is True
    assert bytes(sock.pre) == head  # handed to cheroot's parser whole
    assert sock.pre.work < 20 * len(head), sock.pre.work
    # blank lines before the request line are still skipped, but only before it
    sock = FakeSocket(iter([b"\r\n", b"\r\n", b"GET / HTTP/1.1\r\n", b"\r\n"]))
    conn, adapter = fake_connection()
    while (ready := conn._read_body(sock, adapter, 30.0)) is False:
        pass
    assert bytes(sock.pre) == b"GET / HTTP/1.1\r\n\r\n"


def test_a_body_that_keeps_coming_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """socket_timeout is checked while data keeps arriving, not only when the client pauses."""
    from splitca.http import server as server_module
    from splitca.http.reading import BodyReader

    clock = [1000.0]

    def monotonic() -> float:
        clock[0] += 0.01  # every read takes a little time
        return clock[0]

    monkeypatch.setattr(server_module.time, "monotonic", monotonic)
    limit = 16 * 1024 * 1024
    piece = b"400\r\n" + b"x" * 1024 + b"\r\n"
    sock = FakeSocket(piece for _ in range(limit // 1024 + 10))  # always more, right away
    conn, adapter = fake_connection(limit)
    conn._started = clock[0]
    conn._head = put_head("flood", "Transfer-Encoding: chunked")
    conn._reader = BodyReader(limit, None)
    assert conn._read_body(sock, adapter, 1.0) is True
    assert isinstance(conn.body, RequestTimeout), conn.body
    assert clock[0] - 1000.0 < 5  # cut near the 1 s deadline, not at the body's end
