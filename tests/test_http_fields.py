"""The built-in server reads Connection (RFC 9110 7.6.1) and Host (RFC 9112 3.2) as the RFCs write them."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Iterator

import pytest

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.http.wsgiapp import make_app

from .conftest import make_csr, snapshot
from .test_exchange import exchange, running

GET = b"GET /puppet-ca/v1/certificate/ca "
BOUND = 5  # seconds a test waits for the server to close; its idle timeout is far longer


@contextlib.contextmanager
def served(ca: CertificateAuthority) -> Iterator[tuple[int, ssl.SSLSocket]]:
    """A served CA that keeps an idle connection for 60 s, and one TLS connection to it."""
    settings = ca.settings.replace(socket_timeout=dt.timedelta(seconds=60))
    ctx = ssl.create_default_context(cafile=str(settings.cadir / "ca_crt.pem"))
    ctx.check_hostname = False
    with (
        running(settings, make_app(ca=ca)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw,
        ctx.wrap_socket(raw, server_hostname="ca") as tls,
    ):
        yield port, tls


class Answers:
    """The answers on one connection, one at a time (framed by Content-Length)."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls, self.buf = tls, b""

    def next(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return head, body

    def _more(self) -> None:
        chunk = self.tls.recv(65536)
        assert chunk, f"closed before a whole answer: {self.buf[:200]!r}"
        self.buf += chunk

    def closed(self) -> bool:
        """True once the server closes the connection (the client does not), within BOUND."""
        try:
            while chunk := self.tls.recv(65536):
                self.buf += chunk
        except TimeoutError:
            return False
        return True


@pytest.mark.parametrize(
    "request_",
    [
        b"HTTP/1.1\r\nHost: ca\r\nConnection: Close\r\n",
        b"HTTP/1.1\r\nHost: ca\r\nConnection: TE, close\r\nTE: trailers\r\n",
        b"HTTP/1.1\r\nHost: ca\r\nConnection: te\r\nConnection: CLOSE\r\n",
        b"HTTP/1.0\r\nConnection: Keep-Alive, close\r\n",
        b"HTTP/1.0\r\n",
    ],
)
def test_close_in_any_case_or_list_closes_the_connection_after_the_answer(
    ca: CertificateAuthority, request_: bytes
) -> None:
    """``close`` is an option among the Connection header's case-insensitive list: the
    answer says ``Connection: close`` (HTTP/1.1) and the server closes the connection
    itself; an HTTP/1.0 request without ``keep-alive`` closes it too."""
    with served(ca) as (_, tls):
        tls.sendall(GET + request_ + b"\r\n")
        answers = Answers(tls)
        head, body = answers.next()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"BEGIN CERTIFICATE" in body
        assert answers.closed(), "the server kept the connection open"
        assert answers.buf == b""
    fields = head.lower().split(b"\r\n")
    if b"HTTP/1.1" in request_:
        assert b"connection: close" in fields
    assert b"connection: keep-alive" not in fields


@pytest.mark.parametrize(
    "request_",
    [
        b"HTTP/1.0\r\nConnection: keep-alive\r\n",
        b"HTTP/1.0\r\nConnection: TE, KEEP-ALIVE\r\nTE: trailers\r\n",
        b"HTTP/1.0\r\nHost: ca\r\nConnection: Keep-Alive\r\n",
        b"HTTP/1.1\r\nHost: ca\r\nConnection: keep-alive\r\n",
        b"HTTP/1.1\r\nHost: ca\r\nConnection: TE\r\nTE: trailers\r\n",
    ],
)
def test_keep_alive_in_any_case_or_list_keeps_the_connection(
    ca: CertificateAuthority, request_: bytes
) -> None:
    """HTTP/1.0 keeps the connection when its Connection list holds ``keep-alive`` in any
    case; HTTP/1.1 keeps it unless told ``close``: a second request is answered on it."""
    with served(ca) as (_, tls):
        answers = Answers(tls)
        tls.sendall(GET + request_ + b"\r\n")
        head, _ = answers.next()
        tls.sendall(GET + b"HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n")
        second, body = answers.next()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"BEGIN CERTIFICATE" in body
    fields = head.lower().split(b"\r\n")
    assert b"connection: close" not in fields
    if request_.startswith(b"HTTP/1.0"):
        assert b"connection: keep-alive" in fields


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (b"HTTP/1.1\r\n", "An HTTP/1.1 request needs a Host header."),
        (b"HTTP/1.1\r\nHost: ca\r\nHost: other\r\n", "More than one Host header field."),
        (b"HTTP/1.1\r\nHost: ca\r\nhost: ca\r\n", "More than one Host header field."),
        (b"HTTP/1.0\r\nHost: ca\r\nHost: other\r\n", "More than one Host header field."),
    ],
)
def test_a_request_without_its_host_or_with_two_is_400_changes_nothing_and_closes(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture, fields: bytes, why: str
) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with two Host field
    lines, is answered 400 before the app sees it (the CSR it carries is not stored),
    logged as the server's other refusals, and what follows it is not served."""
    csr = pki.pem(make_csr("nohost"))
    put = b"PUT /puppet-ca/v1/certificate_request/nohost " + fields
    put += b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(csr), csr)
    before = snapshot(ca.settings.cadir)
    with (
        caplog.at_level(logging.INFO, logger="splitca.server"),
        served(ca) as (port, _),
    ):
        got = exchange(ca.settings, port, put + GET + b"HTTP/1.1\r\nHost: ca\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:200]
    assert got.endswith(why.encode()) and b"BEGIN CERTIFICATE" not in got  # one answer
    assert snapshot(ca.settings.cadir) == before
    logged = [r.getMessage() for r in caplog.records if r.name == "splitca.server"]
    assert f"127.0.0.1: answered 400 and closed: {why}" in logged, logged


def test_an_http_1_0_request_without_host_is_served(ca: CertificateAuthority) -> None:
    """Old agents' HTTP/1.0 requests may omit Host (RFC 9112 3.2 asks it of HTTP/1.1)."""
    with served(ca) as (port, _):
        got = exchange(ca.settings, port, GET + b"HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"BEGIN CERTIFICATE" in got
