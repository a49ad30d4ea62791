"""One request and its answer on cheroot, lean: the head parsed from memory, a cheaper environ, one write."""
# The per-request Python of the built-in server (issue 12). cheroot's own code for these steps
# is correct but cost ~270 Python calls per GET (~115 with these); each override below keeps
# cheroot's behaviour byte for byte (tests/test_exchange.py compares them with cheroot's own)
# and drops what can be done once: the Date header per second, header names per process,
# the buffered reader under a head already in memory, the second write of each answer.
# Where cheroot reads a head otherwise than RFC 9110/9112 (field lines a proxy may split
# otherwise, Host, the Connection options) the docstrings say so; tests/test_http_fields.py.

from __future__ import annotations

import email.utils
import io
import logging
import sys
import time
from typing import Any

from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi

from splitca.errors import SplitCAError

__all__ = ["BodyInput", "Gateway", "HeaderReader", "Request", "http_date"]

log = logging.getLogger("splitca.server")  # as http/server.py: the name operators filter on

_DATE: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's value for now (RFC 9110 IMF-fixdate), formatted once per second."""
    global _DATE
    now = int(time.time())
    sec, value = _DATE
    if sec != now:
        value = email.utils.formatdate(now, usegmt=True).encode("ISO-8859-1")
        _DATE = (now, value)
    return value


class BodyInput:
    """``wsgi.input`` over a body the connection has already read, or the error that ended it."""

    def __init__(self, body: bytes | SplitCAError) -> None:
        self._error = body if isinstance(body, SplitCAError) else None
        self._data = io.BytesIO(body if isinstance(body, bytes) else b"")

    def read(self, size: int | None = -1) -> bytes:
        if self._error is not None:
            raise self._error
        return self._data.read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        if self._error is not None:
            raise self._error
        return self._data.readline(-1 if size is None else size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        if self._error is not None:
            raise self._error
        return self._data.readlines(hint)

    def __iter__(self) -> BodyInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


_COMMA_SEPARATED = frozenset(cheroot_server.comma_separated_headers)  # type: ignore[attr-defined]


class HeaderReader(cheroot_server.HeaderReader):
    """cheroot's HeaderReader with its two per-line hooks inline (it keeps every header and
    title-cases the names): the same dict, the same errors, and more of them. A field line
    that another reader of the stream (a proxy in front) may split or name otherwise is
    refused (cheroot reads it on, so what follows it was served): whitespace between a
    field name and its colon (RFC 9112 5.1), a bare CR or a NUL (RFC 9112 2.2, 9110 5.5).
    So is a second Host field line (RFC 9112 3.2: cheroot keeps the last).
    """

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        if hdict is None:
            hdict = {}
        hname: Any = None
        while True:
            line = rfile.readline()
            if not line:
                raise ValueError("Illegal end of headers.")
            if line == b"\r\n":
                break  # the end of the head
            if not line.endswith(b"\r\n"):
                raise ValueError("HTTP requires CRLF terminators")
            if b"\r" in line[:-2] or b"\0" in line:
                raise ValueError("Illegal character in a header line.")
            if line[:1] in {b" ", b"\t"}:
                if hname is None:  # cheroot: an UnboundLocalError, answered 500
                    raise ValueError("Illegal continuation line.")
                v = line.strip()  # a continuation line: as cheroot, it replaces the value
            else:
                try:
                    k, v = line.split(b":", 1)
                except ValueError:
                    raise ValueError("Illegal header line.") from None
                if k[-1:].isspace():  # SP, HT, VT, FF: what cheroot's strip() took away
                    raise ValueError("Illegal whitespace before a header's colon.")
                v = v.strip()
                k = k.strip().title()
                if k == b"Host" and k in hdict:
                    raise ValueError("More than one Host header field.")
                hname = k
            if k in _COMMA_SEPARATED:
                existing = hdict.get(hname)
                if existing:
                    v = b", ".join((existing, v))
            hdict[hname] = v
        return hdict


class Request(cheroot_server.HTTPRequest):
    """cheroot's request, reading its head and body from memory when the connection gathered them.

    The connection (splitca.http.server) sets ``conn.body`` and leaves exactly the request
    head in ``conn.socket.pre``; cheroot's parser then reads that head from a BytesIO
    instead of through its pure-Python buffered socket reader (same bytes, same checks,
    same 413/414 limits).
    """

    conn: Any
    header_reader = HeaderReader()

    def parse_request(self) -> None:
        conn = self.conn
        if getattr(conn, "body", None) is None:
            super().parse_request()
            return
        pre = conn.socket.pre
        raw = bytes(pre)
        pre.clear()
        # cheroot's HTTPRequest.parse_request, over the head in memory; a head within
        # max_request_header_size cannot trip cheroot's size check, so it reads the head as is
        limit = self.server.max_request_header_size
        head = io.BytesIO(raw)
        self.rfile = (
            head if not limit or len(raw) <= limit else cheroot_server.SizeCheckWrapper(head, limit)
        )
        try:
            if not self.read_request_line():
                return
        except cheroot_errors.MaxSizeExceeded:
            self.simple_response(
                "414 Request-URI Too Long",
                "The Request-URI sent with the request exceeds the maximum allowed bytes.",
            )
            return
        try:
            if not self.read_request_headers():
                return
        except cheroot_errors.MaxSizeExceeded:
            self.simple_response(
                "413 Request Entity Too Large",
                "The headers sent with the request exceed the maximum allowed bytes.",
            )
            return
        self.ready = True

    def read_request_headers(self) -> bool:
        """cheroot's, but the Connection header read as RFC 9110 7.6.1 has it: a list of
        case-insensitive options (cheroot compares the whole value with ``close`` and
        ``Keep-Alive``, so ``Close`` or ``TE, close`` kept the connection open), and an
        HTTP/1.1 request without Host refused (RFC 9112 3.2; an HTTP/1.0 one may omit it)."""
        if not super().read_request_headers():
            return False
        http11 = self.response_protocol == "HTTP/1.1"
        if http11 and b"Host" not in self.inheaders:
            self.simple_response("400 Bad Request", "An HTTP/1.1 request needs a Host header.")
            return False
        value = self.inheaders.get(b"Connection")
        options = {o.strip().lower() for o in value.split(b",")} if value else set()
        # HTTP/1.1 keeps it open unless "close"; HTTP/1.0 closes it unless "keep-alive"
        self.close_connection = b"close" in options or not (http11 or b"keep-alive" in options)
        return True

    def read_request_line(self) -> bool:
        """cheroot's, but a target urlsplit refuses ("Invalid IPv6 URL": cheroot catches
        only UnicodeError, so it escaped as a 500) is a bad request line like the others."""
        try:
            return bool(super().read_request_line())
        except ValueError:
            self.simple_response("400 Bad Request", "Malformed Request-URI")
            return False

    def respond(self) -> None:
        conn = self.conn
        body = getattr(conn, "body", None)
        if body is None:
            super().respond()
            return
        if isinstance(body, SplitCAError) or conn.close_after:
            self.close_connection = True  # the rest of the stream cannot be framed
        self.rfile = BodyInput(body)
        # cheroot's HTTPRequest.respond, minus its own body readers
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def simple_response(self, status: Any, msg: Any = "") -> None:
        """cheroot's answer to a request it refuses before the app (400, 413, 414, 501...),
        logged as the server's other refusals are; the connection is closed after it."""
        code = str(status)[:3]
        if code in {"413", "414"} and self.response_protocol != "HTTP/1.1":
            code = "400"  # cheroot's answer to an HTTP/1.0 client
        log.info("%s: answered %s and closed: %s", self.conn.remote_addr, code, msg)
        super().simple_response(status, msg)

    def send_headers(self) -> None:
        self.conn.wfile.write(self.response_head())

    def response_head(self) -> bytes:
        """cheroot's HTTPRequest.send_headers, returning the head instead of writing it,
        with the Date header formatted once per second."""
        hkeys = [key.lower() for key, _ in self.outheaders]
        status = int(self.status[:3])
        if status == 413:
            self.close_connection = True  # Request Entity Too Large: close to avoid garbage
        elif b"content-length" not in hkeys:
            if status < 200 or status in {204, 205, 304}:
                pass  # no message body
            elif self.response_protocol == "HTTP/1.1" and self.method != b"HEAD":
                self.chunked_write = True
                self.outheaders.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.close_connection = True  # closing is the only way to delimit it
        if not self.close_connection:
            self.close_connection = not self.server.can_add_keepalive_connection
        if b"connection" not in hkeys:
            if self.response_protocol == "HTTP/1.1":
                if self.close_connection:
                    self.outheaders.append((b"Connection", b"close"))
            elif not self.close_connection:
                self.outheaders.append((b"Connection", b"Keep-Alive"))
        if (b"Connection", b"Keep-Alive") in self.outheaders:
            self.outheaders.append((b"Keep-Alive", f"timeout={self.server.timeout}".encode()))
        if not self.close_connection and not self.chunked_read:
            remaining = getattr(self.rfile, "remaining", 0)
            if remaining > 0:
                self.rfile.read(remaining)  # the rest of an unread body
        if b"date" not in hkeys:
            self.outheaders.append((b"Date", http_date()))
        if b"server" not in hkeys:
            self.outheaders.append((b"Server", self.server.server_name.encode("ISO-8859-1")))
        buf = [self.server.protocol.encode("ascii") + b" " + self.status + b"\r\n"]
        for k, v in self.outheaders:
            buf.append(k + b": " + v + b"\r\n")
        buf.append(b"\r\n")
        return b"".join(buf)


_ENV_NAMES: dict[bytes, str] = {}  # request header name -> its environ key
_ENV_NAMES_LIMIT = 256  # clients choose header names: remember only so many


class Gateway(cheroot_wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway: the same environ and checks, in fewer calls, and a
    response that is one body in one write together with its head."""

    req: Any

    def get_environ(self) -> Any:  # a dict (cheroot's stub says None)
        """What ``Gateway_10.get_environ`` returns, key for key (not for AF_UNIX: cheroot's)."""
        req = self.req
        server = req.server
        bind_addr = server.bind_addr
        if isinstance(bind_addr, str):
            return super().get_environ()
        conn = req.conn
        env: dict[str, Any] = {
            "ACTUAL_SERVER_PROTOCOL": server.protocol,
            "PATH_INFO": req.path.decode("ISO-8859-1"),
            "QUERY_STRING": req.qs.decode("ISO-8859-1"),
            "REMOTE_ADDR": conn.remote_addr or "",
            "REMOTE_PORT": str(conn.remote_port or ""),
            "REQUEST_METHOD": req.method.decode("ISO-8859-1"),
            "REQUEST_URI": req.uri.decode("ISO-8859-1"),
            "SCRIPT_NAME": "",
            "SERVER_NAME": server.server_name,
            "SERVER_PROTOCOL": req.request_protocol.decode("ISO-8859-1"),
            "SERVER_SOFTWARE": server.software,
            "wsgi.errors": sys.stderr,
            "wsgi.input": req.rfile,
            "wsgi.input_terminated": bool(req.chunked_read),
            "wsgi.multiprocess": False,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.url_scheme": req.scheme.decode("ISO-8859-1"),
            "wsgi.version": self.version,
            "SERVER_PORT": str(bind_addr[1]),
        }
        names = _ENV_NAMES
        for k, v in req.inheaders.items():
            name = names.get(k)
            if name is None:
                name = "HTTP_" + k.decode("ISO-8859-1").upper().replace("-", "_")
                if len(names) < _ENV_NAMES_LIMIT:
                    names[k] = name
            env[name] = v.decode("ISO-8859-1")
        ct = env.pop("HTTP_CONTENT_TYPE", None)
        if ct is not None:
            env["CONTENT_TYPE"] = ct
        cl = env.pop("HTTP_CONTENT_LENGTH", None)
        if cl is not None:
            env["CONTENT_LENGTH"] = cl
        if conn.ssl_env:
            env.update(conn.ssl_env)
        return env

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        """cheroot's ``Gateway.start_response``, the same checks inline."""
        if self.started_response and not exc_info:
            raise RuntimeError("WSGI start_response called a second time with no exc_info.")
        self.started_response = True
        req = self.req
        if req.sent_headers:
            raise exc_info[1]
        if not isinstance(status, str):
            raise TypeError("WSGI response status is not of type str.")
        req.status = status.encode("ISO-8859-1")
        out = req.outheaders
        for k, v in headers:
            if not isinstance(k, str):
                raise TypeError(f"WSGI response header key {k!r} is not of type str.")
            if not isinstance(v, str):
                raise TypeError(f"WSGI response header value {v!r} is not of type str.")
            if k.lower() == "content-length":
                self.remaining_bytes_out = int(v)
            out.append((k.encode("ISO-8859-1"), v.encode("ISO-8859-1")))
        return self.write

    def respond(self) -> None:
        """cheroot's ``Gateway.respond``; a response of one body (the app's ``[body]``) that
        fits its Content-Length goes out with its head in one ``sendall``: one TLS record,
        one send, instead of two writes through cheroot's buffered writer (which only
        flushes each write to the socket)."""
        response = self.req.server.wsgi_app(self.env, self.start_response)
        req = self.req
        if (
            type(response) is list
            and len(response) == 1
            and type(response[0]) is bytes
            and self.started_response
            and not req.sent_headers
            and (self.remaining_bytes_out is None or len(response[0]) <= self.remaining_bytes_out)
        ):
            body = response[0]
            req.sent_headers = True
            head = req.response_head()
            if body and req.chunked_write:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            req.conn.socket.sendall(head + body)  # not through cheroot's pure-Python writer
            return
        try:
            for chunk in filter(None, response):
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()
