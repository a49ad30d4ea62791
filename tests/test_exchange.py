"""The built-in server's lean request path (http/exchange.py) answers exactly as cheroot's own."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi

from splitca.authority import CertificateAuthority
from splitca.config import Settings
from splitca.http import app as app_module
from splitca.http import server as server_module
from splitca.http.exchange import Gateway, Request, http_date
from splitca.http.wsgiapp import make_app

from .conftest import free_port, wsgi_call

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


@contextlib.contextmanager
def running(
    settings: Settings,
    app: App,
    *,
    gateway: type[Any] = Gateway,
    connection: type[Any] = server_module._Connection,
) -> Iterator[int]:
    """The worker's cheroot server (as ``serve`` makes it) in this process, on a free port."""
    port = free_port()
    srv = server_module._make_server(
        settings.replace(listen="127.0.0.1", port=port), app, reuse_port=False
    )
    srv.gateway = gateway
    srv.ConnectionClass = connection
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        srv.stop()
        thread.join(10)


def exchange(settings: Settings, port: int, data: bytes, *, cert: bool = False) -> bytes:
    """Send *data* on one TLS connection and read until the server closes it."""
    ctx = ssl.create_default_context(cafile=str(settings.cadir / "ca_crt.pem"))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(settings.effective_server_cert), str(settings.effective_server_key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="ca") as s,
    ):
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answers by path, to reach each of cheroot's ways of framing a response."""
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read()
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one,", b"", b"two"])
    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no length " + body]
    if path == "/empty":
        start_response("204 No Content", [])
        return [b""]
    if path == "/short":  # declares less than it sends: cheroot answers 500
        start_response("200 OK", [("Content-Length", "2")])
        return [b"too long"]
    if path == "/closing":
        start_response("200 OK", [("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]
    fields = sorted((k, v) for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_")))
    reply = b"%s %s %s %s" % (
        environ["REQUEST_METHOD"].encode(),
        path.encode("latin-1"),
        body,
        repr(fields).encode("latin-1"),
    )
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply] if environ["REQUEST_METHOD"] != "HEAD" else [b""]


class _StockRequest(Request):
    """cheroot's own parsing and header writing (the reading from memory is ours)."""

    parse_request = cheroot_server.HTTPRequest.parse_request
    read_request_headers = cheroot_server.HTTPRequest.read_request_headers
    send_headers = cheroot_server.HTTPRequest.send_headers
    header_reader = cheroot_server.HeaderReader()


class _StockConnection(server_module._Connection):
    RequestHandlerClass = _StockRequest


REQUESTS = [
    b"GET /one?x=1 HTTP/1.1\r\nHost: ca\r\n\r\nGET /two HTTP/1.1\r\nHost: ca\r\n"
    b"Connection: close\r\n\r\n",
    b"HEAD /one HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n",
    b"PUT /put%20me HTTP/1.1\r\nHost: ca\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello",
    b"POST /nolength HTTP/1.1\r\nHost: ca\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\nGET /stream HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n",
    b"GET /nolength HTTP/1.0\r\n\r\n",
    b"GET /one HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /two HTTP/1.0\r\n\r\n",
    b"GET /empty HTTP/1.1\r\nHost: ca\r\n\r\n"
    b"GET /short HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n",
    b"GET /closing HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: ca\r\nX-Pad: " + b"a" * 65200 + b"\r\n\r\n",  # 413, in memory
    b"GET http://elsewhere/x HTTP/1.1\r\nHost: ca\r\n\r\n",
    b"get /x HTTP/1.1\r\nHost: ca\r\n\r\n",
    b"GET /x#frag HTTP/1.1\r\nHost: ca\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: ca\r\nBad header line\r\n\r\n",
    b"GET /h HTTP/1.1\r\nhost: ca\r\naccept: a\r\nAccept:  b \r\nX-Same: 1\r\nX-Same: 2\r\n"
    b"X_Under: u\r\nFolded: a\r\n\tb\r\nEmpty:\r\ncontent-type: x/y\r\nConnection: close\r\n\r\n",
    b"GET /h HTTP/1.1\r\nHost: ca\r\nX-Lf: 1\nX-Next: 2\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: ca\r\nTransfer-Encoding: gzip\r\n\r\n",
]


def _undated(response: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", response)


def test_responses_are_byte_for_byte_those_of_cheroots_request_and_gateway(
    ca: CertificateAuthority,
) -> None:
    """Every way of framing an answer (Content-Length, chunked, HEAD, 204, HTTP/1.0 with and
    without keep-alive, a body longer than declared, refusals of the request line and head)
    gives the bytes cheroot's own HTTPRequest and Gateway_10 give, but for the Date."""
    settings = ca.settings
    with running(settings, echo_app) as ours:
        mine = [exchange(settings, ours, r) for r in REQUESTS]
    with running(
        settings, echo_app, gateway=cheroot_wsgi.Gateway_10, connection=_StockConnection
    ) as stock:
        theirs = [exchange(settings, stock, r) for r in REQUESTS]
    for request, got, want in zip(REQUESTS, mine, theirs, strict=True):
        assert _undated(got) == _undated(want), request[:80]
    assert mine[0].count(b"HTTP/1.1 200 OK") == 2  # keep-alive: both answered on one connection
    assert b"\r\nTransfer-Encoding: chunked\r\n" in mine[3]
    assert b"413 Request Entity Too Large" in mine[8]


class _BothEnvirons(Gateway):
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def get_environ(self) -> Any:
        mine = super().get_environ()
        self.seen.append((mine, cheroot_wsgi.Gateway_10.get_environ(self)))
        return mine


def test_the_environ_is_cheroots_key_for_key_with_and_without_a_client_certificate(
    ca: CertificateAuthority,
) -> None:
    """PATH_INFO decoding, the query, repeated and folded headers, CONTENT_TYPE/LENGTH, the
    client certificate's SSL_CLIENT_* variables, REMOTE_*, SERVER_* and wsgi.*: all as
    cheroot's Gateway_10 builds them, and what the app reads of them is right."""
    settings = ca.settings
    _BothEnvirons.seen = []
    request = (
        b"PUT /puppet-ca/v1/certificate_request/a%20b%2Fc%C3%A9?x=1&y=%20z HTTP/1.1\r\n"
        b"Host: ca.test:8140\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Accept: a\r\nAccept: b\r\nX-Once: 1\r\nX-Once: 2\r\nX_Under: u\r\n"
        b"Folded: a\r\n b\r\nUser-Agent: Puppet/7.23.0\r\n\r\nhello"
        b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n"
    )
    with running(settings, echo_app, gateway=_BothEnvirons) as port:
        exchange(settings, port, request, cert=True)
        exchange(settings, port, request)
    assert len(_BothEnvirons.seen) == 4
    for mine, theirs in _BothEnvirons.seen:
        assert mine == theirs
    with_cert, _, without, _ = (mine for mine, _ in _BothEnvirons.seen)
    assert with_cert["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert with_cert["SSL_CLIENT_S_DN_CN"] == settings.certname
    assert with_cert["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert without["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_CERT" not in without
    assert (
        with_cert["PATH_INFO"] == "/puppet-ca/v1/certificate_request/a b%2Fc\xc3\xa9"
    )  # PEP 3333: latin-1
    assert with_cert["QUERY_STRING"] == "x=1&y=%20z"
    assert (with_cert["CONTENT_TYPE"], with_cert["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert with_cert["HTTP_ACCEPT"] == "a, b" and with_cert["HTTP_X_ONCE"] == "2"
    assert with_cert["HTTP_X_UNDER"] == "u" and "HTTP_FOLDED" in with_cert
    assert with_cert["REMOTE_ADDR"] == "127.0.0.1" and with_cert["SERVER_PORT"] == str(port)
    assert with_cert["wsgi.url_scheme"] == "https" and with_cert["HTTPS"] == "on"


def _date_of(response: bytes) -> str:
    found = re.search(rb"\r\nDate: ([^\r]*)\r\n", response)
    assert found is not None, response[:200]
    return found[1].decode()


def test_the_date_header_is_now_and_follows_the_clock_across_seconds(
    ca: CertificateAuthority,
) -> None:
    """The Date value is formatted once per second: each answer's is the second it was made
    in (RFC 9110 IMF-fixdate), never a stale one."""
    settings, app = ca.settings, make_app(ca=ca)
    get = b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n"
    dates = []
    with running(settings, app) as port:
        for _ in range(3):
            before = int(time.time())
            date = _date_of(exchange(settings, port, get))
            after = int(time.time())
            assert date in {email.utils.formatdate(t, usegmt=True) for t in (before, after)}
            dates.append(email.utils.parsedate_to_datetime(date).timestamp())
            while int(time.time()) == after:  # the next answer is made in a later second
                time.sleep(0.05)
    assert dates[0] < dates[1] < dates[2]


def test_http_date_is_formatdate_of_this_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.25]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    first = http_date()
    assert first == email.utils.formatdate(1_800_000_000, usegmt=True).encode()
    clock[0] += 0.7
    assert http_date() is first  # the same second: not formatted again
    clock[0] += 0.1
    assert http_date() == b"Fri, 15 Jan 2027 08:00:01 GMT"


class _CountingConnection(server_module._Connection):
    writes: list[int] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wfile, writes = self.wfile, self.writes

        class Counting:
            def write(self, data: bytes) -> int:
                writes.append(len(data))
                return int(wfile.write(data))

            def __getattr__(self, name: str) -> Any:
                return getattr(wfile, name)

        self.wfile = Counting()
        sendall = self.socket.sendall

        def counting_sendall(data: bytes) -> None:
            writes.append(len(data))
            sendall(data)

        self.socket.sendall = counting_sendall


def test_an_answer_is_one_write_of_its_head_and_body(ca: CertificateAuthority) -> None:
    """The head and the body of an answer go out together: one TLS record, one send."""
    settings, app = ca.settings, make_app(ca=ca)
    _CountingConnection.writes = []
    get = b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\n\r\n"
    with running(settings, app, connection=_CountingConnection) as port:
        response = exchange(settings, port, get + get[:-2] + b"Connection: close\r\n\r\n")
    assert response.count(b"-----BEGIN CERTIFICATE-----") == 2
    assert len(_CountingConnection.writes) == 2  # one per answer
    assert sum(_CountingConnection.writes) == len(response)


def test_the_access_log_line_is_made_only_when_it_is_logged(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At INFO each answer is one access-log line (the target made printable); below INFO
    the line's arguments are not computed at all."""
    app = make_app(ca=ca)
    with caplog.at_level(logging.INFO, logger="splitca.access"):
        got = wsgi_call(app, "GET", "/puppet-ca/v1/certificate/ca\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "splitca.access"]
    assert len(lines) == 1 and '"GET /puppet-ca/v1/certificate/ca\\n" 404 ' in lines[0], lines
    assert got.status == 404

    def refuse(text: str) -> str:
        raise AssertionError("an access-log line was formatted below INFO")

    monkeypatch.setattr(app_module, "printable", refuse)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="splitca.access"):
        assert wsgi_call(app, "GET", "/puppet-ca/v1/certificate/ca").status == 200
    assert not [r for r in caplog.records if r.name == "splitca.access"]


def test_a_head_whose_first_field_line_is_folded_is_answered_400_not_500(
    ca: CertificateAuthority,
) -> None:
    """A continuation line with no field before it (RFC 9112 5.2 obs-fold) is a bad head:
    a clean 400 and the connection closed, never a crash answered 500."""
    settings, app = ca.settings, make_app(ca=ca)
    with running(settings, app) as port:
        for fold in (b" ", b"\t"):
            got = exchange(
                settings,
                port,
                b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\n"
                + fold
                + b"X: y\r\nHost: ca\r\n\r\nGET /puppet-ca/v1/certificate/ca HTTP/1.1\r\n"
                + b"Host: ca\r\n\r\n",
            )
            assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:100]
            assert got.count(b"HTTP/1.1 ") == 1  # closed: the request after it is not served


_SMUGGLED = b"GET /puppet-ca/v1/certificate_revocation_list/ca HTTP/1.1\r\nHost: ca\r\n\r\n"


def _answered_alone(ca: CertificateAuthority, request: bytes) -> bytes:
    """What a served CA sends back for *request* with a CRL request pipelined behind it:
    asserted to be one answer, not the CRL's (the request after it was not served)."""
    settings, app = ca.settings, make_app(ca=ca)
    with running(settings, app) as port:
        got = exchange(settings, port, request + _SMUGGLED)
    assert got.count(b"HTTP/1.1 ") == 1 and b"X509 CRL" not in got
    return got


@pytest.mark.parametrize(
    "framing",
    [
        b"HTTP/1.1\r\nHost: ca\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"HTTP/1.1\r\nHost: ca\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"HTTP/1.0\r\nConnection: Keep-Alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"HTTP/1.0\r\nConnection: Keep-Alive\r\nTransfer-Encoding: chunked\r\n",
    ],
)
def test_a_request_framed_two_ways_is_answered_then_the_connection_closed(
    ca: CertificateAuthority, framing: bytes
) -> None:
    """Transfer-Encoding with Content-Length, or in HTTP/1.0, is a body another reader of
    the stream (a proxy in front) may have framed otherwise: what follows it is not served
    as the next request (RFC 9112 6.1: answer, then close the connection)."""
    got = _answered_alone(ca, b"GET /puppet-ca/v1/certificate/ca " + framing + b"\r\n0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:100]
    head = got.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nKeep-Alive:" not in head
    if framing.startswith(b"HTTP/1.1"):
        assert b"\r\nConnection: close" in head


@pytest.mark.parametrize("target", [b"//[x/y", b"//x]/y", b"//[::1/puppet-ca/v1/certificate/ca"])
def test_a_target_urlsplit_refuses_is_answered_400_not_500(
    ca: CertificateAuthority, target: bytes
) -> None:
    """A request target whose authority is a broken IPv6 literal (urlsplit's ValueError,
    which cheroot lets escape as a 500) is a bad request line: 400, and closed."""
    settings, app = ca.settings, make_app(ca=ca)
    after = b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\n\r\n"
    with running(settings, app) as port:
        for pad in (b"", b"X-Pad: " + b"a" * 65200 + b"\r\n"):  # in memory, and past its limit
            got = exchange(
                settings,
                port,
                b"GET " + target + b" HTTP/1.1\r\nHost: ca\r\n" + pad + b"\r\n" + after,
            )
            assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:100]
            assert got.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize(
    "field",
    [
        b"Content-Length : 5",  # whitespace between the name and the colon (RFC 9112 5.1)
        b"Transfer-Encoding\t: chunked",
        b"Content-Length\x0b: 5",
        b"X-Note: a\rTransfer-Encoding: chunked",  # a bare CR, a line end to some readers
        b"X-Note: a\x00b",  # NUL (RFC 9110 5.5)
    ],
)
def test_a_field_line_another_reader_may_split_otherwise_is_answered_400_and_closed(
    ca: CertificateAuthority, field: bytes
) -> None:
    """A head a proxy in front may read otherwise (a name with whitespace before its colon,
    a bare CR or a NUL in a field) is refused 400, and what follows is not served."""
    get = b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\n"
    got = _answered_alone(ca, get + field + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:100]
