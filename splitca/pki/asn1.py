"""Just enough DER to write a large CRL fast, to read a CRL's header without parsing its
entries, and to re-encode a CSR whose version cryptography refuses."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CrlHeader",
    "CsrParts",
    "encode_tbs_crl",
    "finish_crl",
    "pem_crl",
    "read_crl_header",
    "read_csr",
]

# CRLReason codes (RFC 5280 section 5.3.1) by cryptography's ReasonFlags names.
REASON_CODES = {
    "unspecified": 0,
    "key_compromise": 1,
    "ca_compromise": 2,
    "affiliation_changed": 3,
    "superseded": 4,
    "cessation_of_operation": 5,
    "certificate_hold": 6,
    "remove_from_crl": 8,
    "privilege_withdrawn": 9,
    "aa_compromise": 10,
}

_OID_CRL_NUMBER = bytes.fromhex("0603551d14")
_OID_AKI = bytes.fromhex("0603551d23")
_OID_REASON = bytes.fromhex("0603551d15")


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _len(len(body)) + body


def integer(value: int) -> bytes:
    """DER INTEGER (non-negative values only, as serials and CRL numbers are)."""
    if value < 0:
        raise ValueError("negative INTEGER")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return tlv(0x02, body)


def der_time(when: dt.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 section 4.1.2.5)."""
    when = when.astimezone(dt.UTC)
    if 1950 <= when.year < 2050:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _reason_ext(code: int) -> bytes:
    ext = tlv(0x30, _OID_REASON + tlv(0x04, tlv(0x0A, bytes((code,)))))
    return tlv(0x30, ext)  # Extensions ::= SEQUENCE OF Extension


_REASON_EXTS = {code: _reason_ext(code) for code in REASON_CODES.values() if code != 0}


def encode_tbs_crl(
    *,
    algorithm: bytes,
    issuer: bytes,
    this_update: dt.datetime,
    next_update: dt.datetime,
    entries: Iterable[tuple[int, float, int | None]],
    number: int,
    authority_key_id: bytes,
) -> bytes:
    """The TBSCertList of a v2 CRL: CRL number and AKI, one entry per (serial, unix time, reason code).

    Entries keep their order. A reason code of None or 0 (unspecified) gets no
    CRLReason extension, as cryptography's builder does. *algorithm* is the DER
    AlgorithmIdentifier the signature will use; *issuer* the DER Name.
    """
    times: dict[float, bytes] = {}
    parts: list[bytes] = []
    for serial, when, reason in entries:
        t = times.get(when)
        if t is None:
            t = times[when] = der_time(dt.datetime.fromtimestamp(when, dt.UTC))
        body = integer(serial) + t
        if reason:
            body += _REASON_EXTS[reason]
        parts.append(tlv(0x30, body))
    revoked = tlv(0x30, b"".join(parts)) if parts else b""
    number_ext = tlv(0x30, _OID_CRL_NUMBER + tlv(0x04, integer(number)))
    aki_ext = tlv(0x30, _OID_AKI + tlv(0x04, tlv(0x30, tlv(0x80, authority_key_id))))
    extensions = tlv(0xA0, tlv(0x30, number_ext + aki_ext))
    return tlv(
        0x30,
        integer(1)  # v2
        + algorithm
        + issuer
        + der_time(this_update)
        + der_time(next_update)
        + revoked
        + extensions,
    )


def finish_crl(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    """CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }."""
    return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))


def pem_crl(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN X509 CRL-----\n" + lines + b"\n-----END X509 CRL-----\n"


# --- reading -------------------------------------------------------------------------------


def _read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the TLV at *pos*."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _parse_time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii")
    if tag == 0x17:
        when = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
    elif tag == 0x18:
        when = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError("not a Time")
    return when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class CrlHeader:
    """What a CRL says about itself, read without touching its revoked entries."""

    issuer: bytes  # DER Name
    this_update: dt.datetime
    next_update: dt.datetime | None


def read_crl_header(der: bytes) -> CrlHeader:
    """Issuer and dates of a DER CRL in microseconds, however many entries it has.

    Raises:
      ValueError: not a CRL's DER.
    """
    tag, pos, _ = _read(der, 0)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    tag, pos, tbs_end = _read(der, pos)  # tbsCertList
    if tag != 0x30:
        raise ValueError("no TBSCertList")
    tag, start, end = _read(der, pos)
    if tag == 0x02:  # version
        pos = end
        tag, start, end = _read(der, pos)
    pos = end  # signature AlgorithmIdentifier
    tag, start, end = _read(der, pos)
    if tag != 0x30:
        raise ValueError("no issuer")
    issuer = der[pos:end]
    pos = end
    tag, start, end = _read(der, pos)
    this_update = _parse_time(tag, der[start:end])
    pos = end
    next_update = None
    if pos < tbs_end:
        tag, start, end = _read(der, pos)
        if tag in (0x17, 0x18):
            next_update = _parse_time(tag, der[start:end])
    return CrlHeader(issuer, this_update, next_update)


@dataclass(frozen=True)
class CsrParts:
    """A PKCS#10 CertificationRequest split where its version can be replaced."""

    version: int
    info: bytes  # the whole CertificationRequestInfo TLV: the bytes the signature covers
    after_version: bytes  # subject, subjectPKInfo and attributes, as encoded
    signature: bytes  # signatureAlgorithm and signature, as encoded

    def as_version_0(self) -> bytes:
        """The same request with version 0 (its signature no longer covers it)."""
        return tlv(0x30, tlv(0x30, integer(0) + self.after_version) + self.signature)


def read_csr(der: bytes) -> CsrParts:
    """Split a DER CertificationRequest (RFC 2986) around its version field.

    Raises:
      ValueError: not a CertificationRequest's DER.
    """
    tag, pos, end = _read(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("not a SEQUENCE, or trailing data")
    info_start = pos
    tag, pos, info_end = _read(der, pos)
    if tag != 0x30:
        raise ValueError("no CertificationRequestInfo")
    tag, start, version_end = _read(der, pos)
    if tag != 0x02 or not 1 <= version_end - start <= 4:
        raise ValueError("no version INTEGER")
    version = int.from_bytes(der[start:version_end], "big", signed=True)
    return CsrParts(
        version=version,
        info=der[info_start:info_end],
        after_version=der[version_end:info_end],
        signature=der[info_end:end],
    )
