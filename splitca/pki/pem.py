"""Linear-time PEM block parsing and certificate bundle loading."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from cryptography import x509

# --- PEM parsing -----------------------------------------------------------------------
#
# A block is ``-----BEGIN <LABEL>-----``, an optional CR, a LF, anything, and the first
# ``-----END <LABEL>-----`` after it with the same label (LABEL: A-Z, 0-9, space). The
# scan is linear (n log n at worst) on any input: each BEGIN and END marker is read
# once, and the END a BEGIN needs is looked up by label instead of being searched for.
# (A backreferencing regex rescans the rest of the input for every unmatched BEGIN:
# quadratic, 29 s of CPU for 256 KB of ``-----BEGIN A-----`` lines.)

_BEGIN = b"-----BEGIN "
_END = b"-----END "
_DASHES = b"-----"
_LABEL_RUN = re.compile(rb"[A-Z0-9 ]*")


def _marker_label(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """(label, end of the closing dashes) of the marker whose label starts at *pos*."""
    run = _LABEL_RUN.match(data, pos)
    assert run is not None  # a * pattern always matches
    label_end = run.end()
    if label_end == pos or not data.startswith(_DASHES, label_end):
        return None
    return data[pos:label_end], label_end + len(_DASHES)


def _end_markers(data: bytes) -> dict[bytes, list[tuple[int, int]]]:
    """Every ``-----END <LABEL>-----`` in *data*: label -> [(start, end)] in order."""
    out: dict[bytes, list[tuple[int, int]]] = {}
    pos = data.find(_END)
    while pos != -1:
        marker = _marker_label(data, pos + len(_END))
        if marker is not None:
            out.setdefault(marker[0], []).append((pos, marker[1]))
        pos = data.find(_END, pos + len(_END))
    return out


def pem_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(label, start, end) of every PEM block in *data*, left to right, never overlapping."""
    ends = _end_markers(data) if _BEGIN in data else {}
    out: list[tuple[str, int, int]] = []
    pos = data.find(_BEGIN)
    while pos != -1:
        marker = _marker_label(data, pos + len(_BEGIN))
        nxt = pos + len(_BEGIN)
        if marker is not None:
            label, body = marker
            if data.startswith(b"\r\n", body):
                body += 2
            elif data.startswith(b"\n", body):
                body += 1
            else:
                body = -1
            candidates = ends.get(label) if body != -1 else None
            if candidates:
                i = bisect.bisect_left(candidates, (body, -1))
                if i < len(candidates):
                    end = candidates[i][1]
                    out.append((label.decode("ascii"), pos, end))
                    nxt = end
        pos = data.find(_BEGIN, nxt)
    return out


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Return (label, whole block) for every PEM block in *data*."""
    return [(label, data[start:end]) for label, start, end in pem_spans(data)]


def outside_pem(data: bytes, spans: Iterable[tuple[str, int, int]]) -> bytes:
    """The bytes of *data* outside the given blocks (from :func:`pem_spans`)."""
    parts: list[bytes] = []
    pos = 0
    for _, start, end in spans:
        parts.append(data[pos:start])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def split_pem(data: bytes, label: str) -> list[bytes]:
    return [block for lab, block in pem_blocks(data) if lab == label]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(b) for b in split_pem(data, "CERTIFICATE")]


# Puppet tooling writes CSRs with these version values: 0 (the only one PKCS#10
# defines: Puppet agents, openssl, cryptography) and 2 (the puppetserver ca tool,
# ``csr.version = 2`` in Ruby). 1 is accepted as well (the same confusion of X.509's
# v2 with its encoding); anything else is refused.
