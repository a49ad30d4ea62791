"""Hostile CSR submissions: the right 4xx, a clear message, and a cadir left exactly as it was."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.http.routes_ca import App
from splitca.http.wsgiapp import make_app

from .conftest import fast_key, make_csr, setup_ca, snapshot, wsgi_call

V1 = "/puppet-ca/v1"


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return pki.pem(csr)


def tampered_signature(name: str) -> bytes:
    der = bytearray(make_csr(name).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature bits: still parses, no longer verifies
    return pki.pem(x509.load_der_x509_csr(bytes(der)))


def legacy_csr(name: str, digest: str) -> bytes:
    """A CSR signed with an old hash, made by the openssl CLI (cryptography refuses to)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        key = f"{d}/k.pem"
        with open(key, "wb") as f:
            f.write(pki.private_key_pem(fast_key()))
        out = subprocess.run(
            ["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", f"-{digest}"],
            capture_output=True,
            check=True,
            timeout=30,
        )
    return out.stdout


def weak_key(name: str) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return pem(make_csr(name, key=key))


def long_cn_csr(name: str) -> bytes:
    """A CSR whose CN is longer than 64 characters (cryptography warns, openssl makes them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name, _validate=False)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return pem(builder.sign(fast_key(), hashes.SHA256()))


_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + size + body


def _skip_header(der: bytes, pos: int) -> int:
    """Position of the contents of the TLV at *pos* (lengths up to 2 bytes)."""
    first = der[pos + 1]
    return pos + 2 + (first & 0x7F if first & 0x80 else 0)


_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def versioned_csr(
    name: str, version: int, *, tamper: bool = False, label: bytes = _RSA_SHA256
) -> bytes:
    """A CSR with *version* in its version field, correctly signed over that encoding
    (as the puppetserver ca tool's ``csr.version = 2`` makes them)."""
    key = fast_key()
    der = pki.der(make_csr(name, key=key))
    info_at = _skip_header(der, 0)
    body_at = _skip_header(der, info_at)
    info_len = (
        int.from_bytes(der[info_at + 2 : body_at], "big")
        if der[info_at + 1] & 0x80
        else der[info_at + 1]
    )
    assert der[body_at : body_at + 3] == b"\x02\x01\x00"  # version 0
    info = _tlv(0x30, bytes([2, 1, version]) + der[body_at + 3 : body_at + info_len])
    signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    if tamper:
        signature = signature[:-1] + bytes([signature[-1] ^ 0xFF])
    out = _tlv(0x30, info + label + _tlv(0x03, b"\x00" + signature))
    b64 = base64.encodebytes(out)
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + b64 + b"-----END CERTIFICATE REQUEST-----\n"


def eddsa_csr(name: str, key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return pem(x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None))


def critical_extension_csr(name: str, oid: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), pki.der_utf8("webserver"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(ext, True)
    return pem(builder.sign(fast_key(), hashes.SHA256()))


@dataclass(frozen=True)
class Case:
    id: str
    url_name: str
    body: Callable[[], bytes]
    status: int
    message: str  # expected to be contained in the response body
    exact: bool = False


CASES = [
    Case(
        "garbage",
        "g1",
        lambda: b"hello, I am not a CSR",
        400,
        "Request body is not a PEM certificate request.",
    ),
    Case("empty", "g1", lambda: b"", 400, "Request body is not a PEM certificate request."),
    Case(
        "two-pems",
        "g1",
        lambda: pem(make_csr("g1")) + pem(make_csr("g1")),
        400,
        "Request body holds 2 PEM objects; expected exactly one CSR.",
    ),
    Case(
        "certificate-not-csr",
        "g1",
        lambda: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        400,
        "holds a PEM CERTIFICATE, not a CERTIFICATE REQUEST",
    ),
    Case(
        "corrupt-base64",
        "g1",
        lambda: b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
        400,
        "Could not parse the certificate request",
    ),
    Case(
        "not-utf8",
        "g1",
        lambda: b"\xff\xfe" + pem(make_csr("g1")),
        400,
        "Request body is not UTF-8 text",
    ),
    Case("nul-bytes", "g1", lambda: pem(make_csr("g1")) + b"\x00", 400, "contains NUL bytes"),
    Case(
        "trailing-junk",
        "g1",
        lambda: pem(make_csr("g1")) + b"rm -rf /",
        400,
        "text outside the PEM CSR block",
    ),
    Case(
        "oversized",
        "g1",
        lambda: b"A" * (64 * 1024 + 1),
        413,
        "Request body is larger than 65536 bytes.",
    ),
    Case(
        "cn-mismatch",
        "g1",
        lambda: pem(make_csr("other")),
        400,
        'Instance name "other" does not match requested key "g1"',
        exact=True,
    ),
    Case(
        "uppercase",
        "Upper",
        lambda: pem(make_csr("Upper")),
        400,
        "Certificate names must be lower case.",
        exact=True,
    ),
    Case(
        "wildcard",
        "*.example.com",
        lambda: pem(make_csr("*.example.com")),
        400,
        "Subject contains a wildcard, which is not allowed: *.example.com",
        exact=True,
    ),
    Case(
        "dotdot",
        "..",
        lambda: pem(make_csr("..")),
        400,
        "Subject hostname format is invalid",
        exact=True,
    ),
    Case(
        "trailing-dash",
        "bad-",
        lambda: pem(make_csr("bad-")),
        400,
        "Subject hostname format is invalid",
        exact=True,
    ),
    Case(
        "san-not-allowed",
        "s1",
        lambda: pem(make_csr("s1", sans=["DNS:s1", "DNS:puppet", "IP:10.0.0.1"])),
        400,
        "CSR 's1' contains extra subject alternative names (DNS:puppet, IP:10.0.0.1), which are disallowed.",
    ),
    Case(
        "pp-cli-auth",
        "p1",
        lambda: pem(make_csr("p1", extensions=[(pki.PP_CLI_AUTH.dotted_string, "true")])),
        400,
        "CSR 'p1' contains an authorization extension, which is disallowed.",
    ),
    Case(
        "disallowed-extension",
        "e1",
        lambda: pem(
            make_csr("e1", raw_extensions=[x509.BasicConstraints(ca=True, path_length=None)])
        ),
        400,
        "Found extensions that are not permitted: 2.5.29.19",
        exact=True,
    ),
    Case(
        "weak-key",
        "w1",
        lambda: weak_key("w1"),
        400,
        "CSR 'w1' has a 1024-bit RSA key; at least 2048 bits are required.",
        exact=True,
    ),
    Case(
        "sha1-signature",
        "w2",
        lambda: legacy_csr("w2", "sha1"),
        400,
        "CSR 'w2' is signed with SHA1, which is refused.",
    ),
    Case(
        "md5-signature",
        "w3",
        lambda: legacy_csr("w3", "md5"),
        400,
        "CSR 'w3' is signed with MD5, which is refused.",
    ),
    Case(
        "name-longer-than-a-cn",
        "n" * 65,
        lambda: long_cn_csr("n" * 65),
        400,
        "Certificate names must be at most 64 characters long "
        "(the limit of a certificate's common name, RFC 5280); this one has 65.",
        exact=True,
    ),
    Case(
        "name-of-250-characters",
        ("n" * 49 + ".") * 5,
        lambda: long_cn_csr(("n" * 49 + ".") * 5),
        400,
        "Certificate names must be at most 64 characters long",
    ),
    Case(
        "csr-version-3",
        "v3",
        lambda: versioned_csr("v3", 3),
        400,
        "Certificate request version 3 is not supported (accepted: 0, 1, 2).",
        exact=True,
    ),
    Case(
        "csr-version-2-bad-signature",
        "v2bad",
        lambda: versioned_csr("v2bad", 2, tamper=True),
        400,
        "CSR contains a public key that does not correspond to the signing key",
        exact=True,
    ),
    Case(
        "csr-version-2-rsa-signature-labelled-ecdsa",
        "v2label",
        lambda: versioned_csr("v2label", 2, label=_ECDSA_SHA256),
        400,
        "CSR contains a public key that does not correspond to the signing key",
        exact=True,
    ),
    Case(
        "ed25519-key",
        "k1",
        lambda: eddsa_csr("k1", ed25519.Ed25519PrivateKey.generate()),
        400,
        "CSR 'k1' has an Ed25519 key, which is not accepted; "
        "use an RSA key or an EC key on P-256, P-384 or P-521.",
        exact=True,
    ),
    Case(
        "ed448-key",
        "k2",
        lambda: eddsa_csr("k2", ed448.Ed448PrivateKey.generate()),
        400,
        "CSR 'k2' has an Ed448 key, which is not accepted;",
    ),
    Case(
        "critical-pp-extension",
        "c1",
        lambda: critical_extension_csr("c1", "1.3.6.1.4.1.34380.1.1.13"),
        400,
        "CSR 'c1' marks requested extensions critical (1.3.6.1.4.1.34380.1.1.13); "
        "Puppet extensions must be non-critical, or no TLS client accepts the certificate.",
        exact=True,
    ),
    Case(
        "quadratic-pem",
        "q1",
        lambda: b"-----BEGIN A-----\n" * (65536 // 18),
        400,
        "Request body is not a PEM certificate request.",
        exact=True,
    ),
    Case(
        "bad-signature",
        "b1",
        lambda: tampered_signature("b1"),
        400,
        "CSR contains a public key that does not correspond to the signing key",
        exact=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_csr_is_refused_and_changes_nothing(
    app: App, ca: CertificateAuthority, case: Case
) -> None:
    before = snapshot(ca.store.cadir.root)
    outside_before = sorted(p.name for p in ca.store.cadir.root.parent.iterdir())
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/certificate_request/{case.url_name}",
        case.body(),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status == case.status, r.text
    assert r.headers["Content-Type"] == "text/plain"
    if case.exact:
        assert r.text == case.message
    else:
        assert case.message in r.text
    assert "Traceback" not in r.text
    assert snapshot(ca.store.cadir.root) == before
    assert sorted(p.name for p in ca.store.cadir.root.parent.iterdir()) == outside_before


def test_duplicate_is_refused_and_changes_nothing(app: App, ca: CertificateAuthority) -> None:
    key = fast_key()
    assert (
        wsgi_call(app, "PUT", f"{V1}/certificate_request/d1", pem(make_csr("d1", key=key))).status
        == 200
    )
    before = snapshot(ca.store.cadir.root)
    r = wsgi_call(app, "PUT", f"{V1}/certificate_request/d1", pem(make_csr("d1", key=fast_key())))
    assert (r.status, r.text) == (
        400,
        "d1 already has a requested certificate; ignoring certificate request",
    )
    assert snapshot(ca.store.cadir.root) == before


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/certificate_request/../../../../tmp/evil",
        f"{V1}/certificate_request/..%2F..%2Fevil",
        f"{V1}/certificate_request/%2e%2e",
        f"{V1}/certificate/..%2Fca_key",
        f"{V1}/certificate/../ca_key",
        f"{V1}/certificate_status/%2e%2e%2fserial",
    ],
)
def test_path_segments_never_escape_the_cadir(
    app: App, ca: CertificateAuthority, admin_cert, path: str
) -> None:
    before = snapshot(ca.store.cadir.root)
    for method in ("GET", "PUT", "DELETE"):
        r = wsgi_call(
            app, method, path, pem(make_csr("evil")) if method == "PUT" else b"", client=admin_cert
        )
        assert r.status in (400, 403, 404, 405), (method, r.status, r.text)
        assert b"PRIVATE KEY" not in r.body
    assert snapshot(ca.store.cadir.root) == before
    assert not (ca.store.cadir.root.parent / "evil.pem").exists()


def test_authorization_extension_pp_cli_auth_is_refused_even_when_auth_extensions_allowed(
    settings,
) -> None:
    setup_ca(settings)
    ca = open_ca(settings.replace(allow_authorization_extensions=True))
    app = make_app(ca=ca)
    before = snapshot(ca.store.cadir.root)
    body = pem(make_csr("p2", extensions=[(pki.PP_CLI_AUTH.dotted_string, "true")]))
    r = wsgi_call(app, "PUT", f"{V1}/certificate_request/p2", body)
    assert (r.status, r.text) == (
        400,
        "Found extensions that are not permitted: 1.3.6.1.4.1.34380.1.3.39",
    )
    assert snapshot(ca.store.cadir.root) == before
    # while an ordinary authorization extension is now accepted
    ok = pem(make_csr("p3", extensions=[("1.3.6.1.4.1.34380.1.3.13", "webops")]))
    assert wsgi_call(app, "PUT", f"{V1}/certificate_request/p3", ok).status == 200


def test_legacy_signature_switch_accepts_sha1(settings) -> None:
    setup_ca(settings)
    app = make_app(ca=open_ca(settings.replace(allow_legacy_signatures=True)))
    body = legacy_csr("old-agent", "sha1")
    assert wsgi_call(app, "PUT", f"{V1}/certificate_request/old-agent", body).status == 200


def test_chunked_oversized_body_is_413(app: App, ca: CertificateAuthority) -> None:
    """A body without Content-Length (chunked) is bounded too."""
    import io
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, object] = {}
    setup_testing_defaults(environ)
    environ.update(
        {
            "REQUEST_METHOD": "PUT",
            "PATH_INFO": f"{V1}/certificate_request/big",
            "wsgi.input": io.BytesIO(b"A" * 200_000),
            "HTTP_TRANSFER_ENCODING": "chunked",
        }
    )
    seen: dict[str, str] = {}
    body = b"".join(app(environ, lambda s, h: seen.setdefault("status", s)))
    assert seen["status"].startswith("413") and b"larger than" in body


class _Stream:
    """A wsgi.input as a WSGI server might give it: endless data, or an error after some bytes."""

    def __init__(self, error: BaseException | None = None, after: int = 0) -> None:
        self.error = error
        self.after = after
        self.served = 0
        self.largest_read = 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "an unbounded read of wsgi.input"
        self.largest_read = max(self.largest_read, size)
        if self.error is not None and self.served >= self.after:
            raise self.error
        self.served += size
        return b"A" * size


def _put_streamed(app: App, stream: _Stream, **environ: str) -> tuple[str, bytes]:
    import logging
    from wsgiref.util import setup_testing_defaults

    env: dict[str, object] = {}
    setup_testing_defaults(env)
    env.update(
        {
            "REQUEST_METHOD": "PUT",
            "PATH_INFO": f"{V1}/certificate_request/streamed",
            "wsgi.input": stream,
            **environ,
        }
    )
    seen: dict[str, str] = {}
    logger = logging.getLogger("splitca.wsgi")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        body = b"".join(app(env, lambda s, h: seen.setdefault("status", s)))
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if r.exc_info], "a client error logged a traceback"
    return seen["status"], body


def test_an_endless_chunked_body_is_read_in_bounded_pieces(app: App) -> None:
    """Under any WSGI server (mod_wsgi included): pieces of at most 64 KiB, stop past the limit."""
    stream = _Stream()
    status, body = _put_streamed(app, stream, HTTP_TRANSFER_ENCODING="chunked")
    assert status.startswith("413") and body == b"Request body is larger than 65536 bytes."
    assert stream.served <= 65536 + 1
    assert stream.largest_read <= 65536


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        # cheroot's chunked reader on "zz" as a chunk size
        (ValueError("Bad chunked transfer size: b'zz'"), "400", b"Malformed chunked request body."),
        # a socket timeout while the client sends its body
        (TimeoutError("timed out"), "408", b"The request body did not arrive in time."),
        # mod_wsgi, client gone or Apache's own chunk parser refused the body
        (
            OSError("Apache/mod_wsgi request data read error: Connection reset by peer"),
            "400",
            b"The request body could not be read.",
        ),
        # mod_wsgi, Apache's Timeout passed while reading the body
        (
            OSError("Apache/mod_wsgi request data read error: The timeout specified has expired"),
            "408",
            b"The request body did not arrive in time.",
        ),
    ],
)
def test_wsgi_input_errors_are_the_clients_error(
    app: App, ca: CertificateAuthority, error: BaseException, status: str, message: bytes
) -> None:
    before = snapshot(ca.store.cadir.root)
    for environ in ({"HTTP_TRANSFER_ENCODING": "chunked"}, {"CONTENT_LENGTH": "5000"}):
        got, body = _put_streamed(app, _Stream(error, after=0), **environ)
        assert got.startswith(status) and body == message, (environ, got, body)
    assert snapshot(ca.store.cadir.root) == before


def test_a_body_shorter_than_its_content_length_is_400(app: App) -> None:
    class Short(_Stream):
        def read(self, size: int = -1) -> bytes:
            return b""  # the client hung up early

    status, body = _put_streamed(app, Short(), CONTENT_LENGTH="5000")
    assert (
        status.startswith("400") and body == b"The request body is shorter than its Content-Length."
    )
