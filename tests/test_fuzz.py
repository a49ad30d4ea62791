"""Property-based hostile input: CSR intake, the router, the config loader, the allowlist, sync-crl's CRL check.

Whatever comes in: no 500, no traceback, no file written outside the cadir. Example
counts are modest so the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from splitca import compose, pki
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.core.autosign import allowlist_matches
from splitca.errors import ConfigError, CRLRejected, InvalidRequest, SplitCAError
from splitca.http.wsgiapp import make_app
from splitca.split import crlsync

from .conftest import make_csr, make_settings, wsgi_call

FUZZ = hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=bool(os.environ.get("CI")),
)
OK_STATUSES = {200, 204, 304, 400, 403, 404, 405, 406, 409, 413, 415, 422}


class World:
    """One CA (autosign on), its app, an admin certificate, and the files outside its cadir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        settings = make_settings(root, autosign=True)
        compose.setup_ca(settings)
        self.ca = open_ca(settings)
        self.app = make_app(ca=self.ca)
        self.admin = x509.load_pem_x509_certificate(settings.effective_server_cert.read_bytes())
        self.outside = self.files_outside()

    def files_outside(self) -> set[str]:
        cadir = self.ca.store.cadir.root
        out = set()
        for dirpath, _dirs, files in os.walk(self.root):
            if Path(dirpath).is_relative_to(cadir):
                continue
            out.update(os.path.join(dirpath, f) for f in files)
        return out

    def check(self, status: int, body: bytes) -> None:
        assert status in OK_STATUSES, (status, body[:300])
        assert b"Traceback" not in body
        assert self.files_outside() == self.outside


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield World(tmp_path_factory.mktemp("fuzz"))


_KEY = ec.generate_private_key(ec.SECP256R1())
_GOOD = make_csr("agent.example.com", key=_KEY)
_GOOD_PEM = _GOOD.public_bytes(serialization.Encoding.PEM)
_GOOD_DER = _GOOD.public_bytes(serialization.Encoding.DER)

names = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
    st.text(max_size=60),
    st.sampled_from(["..", ".", "../../etc/passwd", "a/b", "%2e%2e", "ca", "CA", "a" * 300]),
)


@st.composite
def mutated_csr(draw: st.DrawFn) -> bytes:
    """A real CSR with bytes flipped, cut or inserted, as DER inside a PEM, or mangled PEM."""
    der = bytearray(_GOOD_DER)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(der) - 1))
        der[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        der = der[: draw(st.integers(0, len(der)))]
    b64 = base64.encodebytes(bytes(der))
    label = draw(st.sampled_from([b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST", b"X509 CRL"]))
    pem = b"-----BEGIN " + label + b"-----\n" + b64 + b"-----END " + label + b"-----\n"
    return pem + draw(st.sampled_from([b"", b"\n", b"junk", _GOOD_PEM]))


csr_bodies = st.one_of(st.binary(max_size=2000), mutated_csr(), st.just(_GOOD_PEM))


@FUZZ
@given(name=names, body=csr_bodies, ctype=st.sampled_from(["text/plain", "", "application/x"]))
@example(name="agent.example.com", body=_GOOD_PEM, ctype="text/plain")
def test_csr_intake_never_fails_badly(world: World, name: str, body: bytes, ctype: str) -> None:
    path = "/puppet-ca/v1/certificate_request/" + name
    r = wsgi_call(world.app, "PUT", path, body, headers={"Content-Type": ctype} if ctype else {})
    world.check(r.status, r.body)


@FUZZ
@given(name=st.text(max_size=80), body=st.binary(max_size=600))
def test_submit_csr_raises_only_splitca_errors(world: World, name: str, body: bytes) -> None:
    with contextlib.suppress(SplitCAError):
        world.ca.submit_csr(name, body)
    world.check(200, b"")


methods = st.one_of(
    st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
)
segments = st.one_of(
    st.sampled_from(
        [
            "puppet-ca",
            "v1",
            "certificate",
            "certificate_request",
            "certificate_status",
            "certificate_statuses",
            "certificate_revocation_list",
            "certificate_renewal",
            "sign",
            "all",
            "clean",
            "expirations",
            "production",
            "ca",
            "..",
            "",
            "%2F",
            "%00",
        ]
    ),
    st.text(max_size=20),
)
paths = st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts))
headers = st.dictionaries(
    st.sampled_from(["Accept", "Content-Type", "If-Modified-Since", "X-Client-Verify", "Range"]),
    st.text(max_size=40).filter(lambda v: "\n" not in v and "\r" not in v),
    max_size=3,
)


@FUZZ
@given(
    method=methods,
    path=paths,
    hdrs=headers,
    query=st.text(max_size=40),
    body=st.binary(max_size=300),
    admin=st.booleans(),
)
@example(
    method="PUT",
    path="/puppet-ca/v1/certificate_status/x",
    hdrs={},
    query="",
    body=b'{"desired_state": 1}',
    admin=True,
)
@example(method="GET", path="/x/certificate_status/%FF", hdrs={}, query="", body=b"", admin=True)
def test_router_never_fails_badly(
    world: World,
    method: str,
    path: str,
    hdrs: dict[str, str],
    query: str,
    body: bytes,
    admin: bool,
) -> None:
    r = wsgi_call(
        world.app,
        method,
        path,
        body,
        headers=hdrs,
        query=query,
        client=world.admin if admin else None,
    )
    world.check(r.status, r.body)


# --- configuration ----------------------------------------------------------------------------

FIELDS = sorted(Settings.__dataclass_fields__)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(
    raw=st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), json_values, max_size=6
    )
)
def test_config_mapping_is_a_settings_or_a_config_error(raw: dict[str, Any]) -> None:
    try:
        Settings.from_mapping(raw)
    except ConfigError as exc:
        assert str(exc)


@FUZZ
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5).map(
            lambda d: yaml.safe_dump(d)
        ),
    )
)
def test_config_file_is_a_settings_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        Settings.load(path)
    except ConfigError as exc:
        assert str(exc)


# --- the autosign allowlist -----------------------------------------------------------------------


@FUZZ
@given(lines=st.lists(st.text(max_size=30), max_size=8), name=st.text(max_size=40))
def test_allowlist_answers_a_bool_for_anything(lines: list[str], name: str) -> None:
    assert allowlist_matches(lines, name) in (True, False)


@FUZZ
@given(name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}\.){1,3}[a-z]{2,5}", fullmatch=True))
def test_allowlist_exact_and_glob_lines_match(name: str) -> None:
    assert allowlist_matches([name], name)
    assert allowlist_matches(["#comment", "", "*." + name.split(".", 1)[1]], name)
    assert not allowlist_matches([name + " x", "#" + name], name)


# --- the CRL that sync-crl accepts -------------------------------------------------------------------


@pytest.fixture(scope="module")
def crl_world(world: World) -> tuple[bytes, list[x509.Certificate]]:
    return world.ca.crl_pem(), pki.load_certificates(world.ca.ca_certificate_pem())


@st.composite
def mangled_crl(draw: st.DrawFn, good: bytes) -> bytes:
    blocks = pki.split_pem(good, "X509 CRL")
    der = bytearray(x509.load_pem_x509_crl(blocks[0]).public_bytes(serialization.Encoding.DER))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(der) - 1))
        der[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        der = der[: draw(st.integers(0, len(der)))]
    return (
        b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(bytes(der)) + b"-----END X509 CRL-----\n"
    )


def test_sync_crl_verification_survives_hostile_crls(
    crl_world: tuple[bytes, list[x509.Certificate]], world: World
) -> None:
    good, cas = crl_world
    now = dt.datetime.now(dt.UTC)
    verified = crlsync.verify_crl(good, cas, now=now)
    crls = [x509.load_pem_x509_crl(b) for b in pki.split_pem(good, "X509 CRL")]
    assert verified.data == good
    assert verified.numbers == {
        crl.issuer.rfc4514_string(): pki.crl_number(crl) for crl in crls
    } and set(verified.numbers) == {ca.subject.rfc4514_string() for ca in cas}
    assert verified.next_update == min(crl.next_update_utc for crl in crls)  # type: ignore[type-var]
    # The CA's next CRL verifies as one number higher; going back to the first is refused.
    assert world.ca.refresh_crl(force=True)
    newer = world.ca.crl_pem()
    later = dt.datetime.now(dt.UTC)
    assert crlsync.verify_crl(newer, cas, now=later, installed=[good]).number == verified.number + 1
    with pytest.raises(CRLRejected) as rejected:
        crlsync.verify_crl(good, cas, now=later, installed=[newer])
    assert rejected.value.check == "crl-number"

    @FUZZ
    @given(data=st.one_of(st.binary(max_size=3000), mangled_crl(good), st.just(good + good)))
    def check(data: bytes) -> None:
        try:
            crlsync.verify_crl(data, cas, now=now, installed=[good])
        except CRLRejected as exc:
            assert exc.check
        # (no exception: a flipped byte in, say, a time's seconds can still verify)

    check()


# --- PEM extraction: linear time, same blocks as the regex it replaced -----------------------------

# The regex splitca used before (quadratic: each unmatched BEGIN rescans the rest of the input).
_OLD_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)

_PEM_PIECES = st.sampled_from(
    [
        b"-----BEGIN A-----",
        b"-----BEGIN B-----",
        b"-----BEGIN A B-----",
        b"-----END A-----",
        b"-----END B-----",
        b"-----END A B-----",
        b"-----BEGIN ",
        b"-----END ",
        b"-----",
        b"--",
        b"BEGIN",
        b"A",
        b"a",
        b" ",
        b"\n",
        b"\r\n",
        b"\r",
        b"QUFB",
        _GOOD_PEM,
    ]
)


@FUZZ
@given(pieces=st.lists(_PEM_PIECES, max_size=30), noise=st.binary(max_size=40))
@example(
    pieces=[b"-----BEGIN A-----", b"\n", b"-----BEGIN A-----", b"\n", b"-----END A-----"], noise=b""
)
def test_pem_blocks_match_the_old_regex(pieces: list[bytes], noise: bytes) -> None:
    data = b"".join(pieces) + noise
    expected = [(m.group(1).decode(), m.group(0)) for m in _OLD_PEM_RE.finditer(data)]
    assert pki.pem_blocks(data) == expected
    spans = pki.pem_spans(data)
    assert pki.outside_pem(data, spans) == _OLD_PEM_RE.sub(b"", data)


def _adversarial_pem(size: int) -> dict[str, bytes]:
    n = size // 18
    return {
        "repeated BEGIN": b"-----BEGIN A-----\n" * n,
        "distinct labels": b"".join(b"-----BEGIN A%d-----\n" % i for i in range(size // 24)),
        "BEGIN then a foreign END": b"-----BEGIN A-----\n-----END B-----\n" * (n // 2),
        "END before BEGIN": b"-----END A-----\n" * (n // 2) + b"-----BEGIN A-----\n" * (n // 2),
        "long label": b"-----BEGIN " + b"A" * size,
        "markers only": b"-----BEGIN -----END " * (size // 20),
        "many small blocks": b"-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n"
        * (size // 50),
    }


@pytest.mark.parametrize("shape", sorted(_adversarial_pem(64)))
def test_pem_parsing_is_linear_on_hostile_input(shape: str, crl_world) -> None:
    """256 KB of hostile PEM: the old regex needed ~29 s of CPU for the first shape in
    sync-crl; every parser of the package now takes a small fraction of a second (bound:
    2 s of CPU for all three, generous for a loaded machine, far below quadratic)."""
    data = _adversarial_pem(256 * 1024)[shape]
    _, cas = crl_world
    start = time.process_time()
    pki.pem_blocks(data)
    with pytest.raises(InvalidRequest):
        pki.load_csr(data)
    with pytest.raises(CRLRejected):
        crlsync.verify_crl(data, cas, now=dt.datetime.now(dt.UTC))
    assert time.process_time() - start < 2.0
