"""Reading a request head and body without a thread: framing, chunked decoding, memory budget."""

from __future__ import annotations

import re
import threading

from splitca.errors import BodyTooLarge, InvalidRequest, MalformedRequestLine

__all__ = ["BodyReader", "Budget", "find_head_end", "framing"]

_HEX = re.compile(rb"[0-9A-Fa-f]+")
# method SP request-target SP HTTP/d.d, nothing else (RFC 9112 3): the one form both this
# module and cheroot read the same way (cheroot strips the line and takes int()s of the version)
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\x00-\x20\x7f]+ HTTP/(\d)\.(\d)")
_LINE_LIMIT = 4096  # a chunk-size line (with extensions) or one trailer line
_TRAILER_LIMIT = 65536
# chunked framing (size lines, extensions, CRLFs, trailer) allowed beyond the body's own
# bytes: at most limit + this, so at most 2 * limit + this on the wire
_FRAMING_SLACK = 65536


def _malformed(why: str) -> InvalidRequest:
    return InvalidRequest(f"Malformed chunked request body: {why}.")


def find_head_end(buf: bytearray, searched: int) -> int:
    """Where the blank line ending a request head starts in *buf*, or -1.

    *searched* is how much of *buf* an earlier call already searched: the search resumes
    there (less the 3 bytes a terminator can straddle), so reading a head one TLS record
    at a time costs linear work, not quadratic.
    """
    return buf.find(b"\r\n\r\n", max(0, searched - 3))


class BodyReader:
    """Incremental, bounded decoding of one request body: Content-Length or chunked.

    :meth:`feed` takes bytes as they arrive and returns what follows the body (a
    pipelined request) once the body is complete, None while more is needed. It raises
    BodyTooLarge as soon as the body, declared or received, would pass *limit* (a chunk
    is refused by its size line, before any of it is read), or its chunked framing would
    pass ``limit + 64 KiB``, and InvalidRequest on broken chunked framing. It holds the
    decoded body and at most one framing line: memory is bounded by *limit*, work and
    bytes on the wire are linear in it.
    """

    def __init__(self, limit: int, length: int | None) -> None:
        if length is not None and length > limit:
            raise BodyTooLarge(limit)
        self.limit = limit
        self.data = bytearray()
        self._left = length  # Content-Length: bytes still to come; None: chunked
        self._buf = bytearray()  # chunked: received, not yet decoded
        self._state = "size"  # chunked: size, data, crlf, trailer
        self._chunk_left = 0
        self._trailer = 0
        self._framing = 0  # chunked: bytes of framing read so far

    @property
    def done(self) -> bool:
        return self._left == 0

    @property
    def held(self) -> int:
        """Bytes of memory this body holds (decoded, and received but not yet decoded)."""
        return len(self.data) + len(self._buf)

    def _framed(self, n: int) -> None:
        self._framing += n
        if self._framing > self.limit + _FRAMING_SLACK:
            raise BodyTooLarge(self.limit)

    def feed(self, chunk: bytes) -> bytes | None:
        if self._left is not None:
            take = chunk[: self._left]
            self.data += take
            self._left -= len(take)
            return chunk[len(take) :] if self._left == 0 else None
        buf = self._buf
        buf += chunk
        pos = 0
        try:
            while True:
                if self._state == "data":
                    n = min(self._chunk_left, len(buf) - pos)
                    self.data += buf[pos : pos + n]
                    pos += n
                    self._chunk_left -= n
                    if self._chunk_left:
                        return None
                    self._state = "crlf"
                elif self._state == "crlf":
                    if len(buf) - pos < 2:
                        return None
                    if buf[pos : pos + 2] != b"\r\n":
                        raise _malformed("a chunk does not end with CRLF")
                    pos += 2
                    self._framed(2)
                    self._state = "size"
                else:  # a line: a chunk size, or a trailer field
                    end = buf.find(b"\n", pos, pos + _LINE_LIMIT + 1)
                    if end < 0:
                        if len(buf) - pos > _LINE_LIMIT:
                            raise _malformed("a line is too long")
                        return None
                    line = bytes(buf[pos:end]).strip()
                    self._framed(end + 1 - pos)
                    if self._state == "trailer":
                        self._trailer += end + 1 - pos
                    pos = end + 1
                    if self._state == "trailer":
                        if not line:
                            rest = bytes(buf[pos:])
                            pos = len(buf)
                            return rest
                        if self._trailer > _TRAILER_LIMIT:
                            raise _malformed("the trailer is too long")
                        continue
                    size = line.split(b";", 1)[0].strip()
                    if not _HEX.fullmatch(size):
                        shown = size[:20].decode("ascii", "backslashreplace")
                        raise _malformed(f"bad chunk size '{shown}'")
                    n = int(size, 16)
                    if n == 0:
                        self._state = "trailer"
                    elif len(self.data) + n > self.limit:
                        raise BodyTooLarge(self.limit)
                    else:
                        self._chunk_left = n
                        self._state = "data"
        finally:
            del buf[:pos]


def framing(head: bytes, limit: int) -> tuple[bytes, int | None, bool, bool]:
    """How the body after *head* is framed, as cheroot reads the head.

    Returns the head to hand to cheroot (without ``Expect``: the 100 Continue, if any,
    is sent by the caller, before the body is read), the Content-Length (0: no body;
    None: chunked), whether the client waits for 100 Continue (HTTP/1.1 only, RFC
    9110 10.1.1) and whether the connection must close after the answer: a
    Transfer-Encoding with a Content-Length, or in HTTP/1.0, is a body another reader
    of the stream (a proxy in front) may have framed otherwise (RFC 9112 6.1). Raises InvalidRequest on a request line that is not strictly
    ``method target HTTP/d.d`` (another reading of it could frame the body differently
    from cheroot's) or a Content-Length that is not one number, BodyTooLarge on an
    absurd one.
    """
    lines = head.split(b"\r\n")
    version = _REQUEST_LINE.fullmatch(lines[0])
    if version is None:
        raise MalformedRequestLine("Malformed request line.")
    major, minor = int(version[1]), int(version[2])
    if (major, minor) not in ((1, 0), (1, 1)):
        return head, 0, False, True  # cheroot answers 505 and closes: there is no body to read
    http11 = minor == 1
    fields: dict[bytes, list[bytes]] = {}
    kept = [lines[0]]
    last: bytes | None = None
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and last is not None:  # obsolete line folding
            fields[last][-1] += b" " + line.strip()
        else:
            name, _, value = line.partition(b":")
            last = name.strip().lower()
            fields.setdefault(last, []).append(value.strip())
        if last != b"expect":
            kept.append(line)
    expects = fields.get(b"expect")
    expect = http11 and expects is not None and any(v.lower() == b"100-continue" for v in expects)
    te = fields.get(b"transfer-encoding")
    uncertain = te is not None and (not http11 or b"content-length" in fields)
    te = te if http11 else None  # cheroot: chunked from HTTP/1.1
    codings = [c.strip().lower() for v in te for c in v.split(b",") if c.strip()] if te else []
    if codings:
        # cheroot answers any other coding with 501 and reads no body
        length = None if set(codings) == {b"chunked"} else 0
        return b"\r\n".join(kept), length, expect, uncertain
    lengths = set(fields.get(b"content-length", []))
    if not lengths:
        return b"\r\n".join(kept), 0, expect, uncertain
    value = lengths.pop()
    if lengths or not value.isdigit():
        raise InvalidRequest("Invalid Content-Length header.")
    if len(value.lstrip(b"0")) > len(str(limit)):
        raise BodyTooLarge(limit)
    return b"\r\n".join(kept), int(value), expect, uncertain


class Budget:
    """The bytes one worker process may hold for requests it is reading, shared by all
    its connections (and threads).

    :meth:`resize` moves one connection's share from *old* to *new* bytes; growing
    fails, changing nothing, when the budget would pass ``limit``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def resize(self, old: int, new: int) -> bool:
        with self._lock:
            if new > old and self.used + new - old > self.limit:
                return False
            self.used += new - old
            return True
