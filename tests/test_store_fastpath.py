"""The enrollment path's cheaper forms (issue 12) say exactly what the plain ones said.

Each fast form is compared with the straightforward code it replaced, kept here as the
oracle: the index row's status JSON and the audit record of an issued certificate (for
certificates with and without SANs, IPs, Puppet extensions and foreign ones), the leaf
profile (extension order, criticality, refusals), the reads and the publication.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

from splitca import fs, pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.core.audit import Actor
from splitca.core.usecases.common import cert_fields
from splitca.errors import InvalidRequest, PolicyViolation, StoreError, UnsafePath
from splitca.pki import certs, names
from splitca.pki.csr import extension_value_text, san_strings
from splitca.pki.names import PP_AUTH_ARC, SHORT_NAMES
from splitca.store.files.audit import AuditLog
from splitca.store.files.cadir import CADir
from splitca.store.files.filestore import FileStore
from splitca.store.files.index import _cert_row

from .conftest import fast_key, make_csr, make_settings, setup_ca

# --- the oracles: the code before issue 12, verbatim in substance ---------------------


def _old_status_fields(name: str, cert: x509.Certificate) -> dict[str, object]:
    try:
        exts = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension):
        exts = []
    dns: list[str] = []
    sans: list[str] = []
    auth: dict[str, str] = {}
    for ext in exts:
        if isinstance(ext.value, x509.SubjectAlternativeName):
            dns, sans = san_strings(ext.value)
        elif ext.oid.dotted_string.startswith(PP_AUTH_ARC + "."):
            dotted = ext.oid.dotted_string
            auth[SHORT_NAMES.get(dotted, dotted)] = extension_value_text(ext)
    fps = pki.fingerprints(pki.der(cert))
    return {
        "name": name,
        "dns_alt_names": dns,
        "subject_alt_names": sans,
        "authorization_extensions": auth,
        "fingerprint": fps["default"],
        "fingerprints": fps,
        "not_before": pki.puppet_time(cert.not_valid_before_utc),
        "not_after": pki.puppet_time(cert.not_valid_after_utc),
        "serial_number": cert.serial_number,
    }


def _old_general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return str(name.value)


def _old_cert_fields(cert: x509.Certificate, certname: str) -> dict[str, object]:
    try:
        sans = [
            _old_general_name(n)
            for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ]
    except x509.ExtensionNotFound:
        sans = []
    return {
        "certname": certname,
        "serial": cert.serial_number,
        "fingerprint": pki.fingerprints(pki.der(cert))["SHA256"],
        "sans": sans,
        "extensions": [e.oid.dotted_string for e in cert.extensions],
        "not_after": pki.puppet_time(cert.not_valid_after_utc),
    }


# --- a variety of certificates -----------------------------------------------------------

_NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
_PP_UUID = ObjectIdentifier("1.3.6.1.4.1.34380.1.1.1")
_PP_AUTH_ROLE = ObjectIdentifier(PP_AUTH_ARC + ".13")
_FOREIGN = ObjectIdentifier("1.2.3.4.5")


def _utf8(oid: ObjectIdentifier, text: str, critical: bool = False) -> x509.Extension:  # type: ignore[type-arg]
    return x509.Extension(oid, critical, x509.UnrecognizedExtension(oid, pki.der_utf8(text)))


def _certs() -> list[tuple[str, x509.Certificate]]:
    ca_key = fast_key()
    ca = pki.build_ca_certificate(ca_key, "Puppet CA: fast", now=_NOW, ttl=dt.timedelta(days=900))
    out = [("ca", ca)]
    variants: list[tuple[list[x509.GeneralName], list[x509.Extension]]] = [  # type: ignore[type-arg]
        ([], []),
        ([x509.DNSName("puppet"), x509.DNSName("n1.example.com")], []),
        ([x509.IPAddress(ipaddress.ip_address("10.0.0.1")), x509.DNSName("b.ex")], []),
        ([x509.IPAddress(ipaddress.ip_address("::1"))], [_utf8(_PP_UUID, "ab-cd")]),
        (
            [x509.RFC822Name("ops@example.com"), x509.UniformResourceIdentifier("spiffe://x/y")],
            [_utf8(_PP_AUTH_ROLE, "webserver"), pki.cli_auth_extension()],
        ),
        ([], [_utf8(_FOREIGN, "other", critical=True), _utf8(_PP_UUID, "Ü-nicode")]),
    ]
    for i, (sans, exts) in enumerate(variants):
        key = fast_key() if i % 2 else ec.generate_private_key(ec.SECP256R1())
        name = f"n{i}.example.com"
        builder = pki.leaf_builder(
            ca_key=ca_key,
            ca_cert=ca,
            public_key=key.public_key(),
            certname=name,
            not_before=_NOW,
            not_after=_NOW + dt.timedelta(days=30 + i),
            alt_names=sans,
            extensions=exts,
        )
        out.append((name, pki.sign_leaf(builder, ca_key, 1000 + i)))
    return out


CERTS = _certs()


@pytest.mark.parametrize(("name", "cert"), CERTS, ids=[n for n, _ in CERTS])
def test_the_status_json_of_a_row_is_the_previous_functions(
    name: str, cert: x509.Certificate
) -> None:
    serial, not_after_ts, status = _cert_row(name, cert)
    assert status == json.dumps(_old_status_fields(name, cert), separators=(",", ":"))
    assert json.loads(status) == _old_status_fields(name, cert)
    assert (serial, not_after_ts) == (
        str(cert.serial_number),
        int(cert.not_valid_after_utc.timestamp()),
    )


@pytest.mark.parametrize(("name", "cert"), CERTS, ids=[n for n, _ in CERTS])
def test_the_audit_record_of_a_certificate_is_the_previous_functions(
    name: str, cert: x509.Certificate
) -> None:
    assert cert_fields(cert, name) == _old_cert_fields(cert, name)
    for n in (
        x509.DNSName("a.b"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.RFC822Name("x@y.z"),
        x509.UniformResourceIdentifier("https://x/"),
        x509.RegisteredID(ObjectIdentifier("1.2.3")),
        x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")])),
    ):
        assert pki.general_name_str(n) == _old_general_name(n)


def test_the_leaf_profile_keeps_its_extensions_in_order_and_refuses_duplicates() -> None:
    """Extensions go to the builder as one list now: the order and criticality of
    puppetserver's profile, the requested ones in the middle, and a duplicate refused
    before a serial is taken, with cryptography's own message."""
    by_name = dict(CERTS)
    cert = by_name["n4.example.com"]
    got = [(e.oid.dotted_string, e.critical) for e in cert.extensions]
    assert got == [
        ("2.16.840.1.113730.1.13", False),  # Netscape comment
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string, False),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string, False),
        (_PP_AUTH_ROLE.dotted_string, False),
        (pki.PP_CLI_AUTH.dotted_string, False),
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string, False),
        (ExtensionOID.BASIC_CONSTRAINTS.dotted_string, True),
        (ExtensionOID.EXTENDED_KEY_USAGE.dotted_string, True),
        (ExtensionOID.KEY_USAGE.dotted_string, True),
    ]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n4.example.com"]  # always the certname
    ca_key = fast_key()
    ca = by_name["ca"]
    common = dict(ca_key=ca_key, ca_cert=ca, certname="d.ex", not_before=_NOW)
    twice = [_utf8(_PP_UUID, "a"), _utf8(_PP_UUID, "b")]
    with pytest.raises(ValueError, match="This extension has already been set"):
        pki.leaf_builder(
            public_key=fast_key().public_key(), not_after=_NOW, extensions=twice, **common
        )
    with pytest.raises(TypeError, match="Expecting one of"):
        pki.leaf_builder(public_key="not a key", not_after=_NOW, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not valid after"):
        pki.leaf_builder(
            public_key=fast_key().public_key(), not_after=_NOW - dt.timedelta(days=1), **common
        )


# --- reads and publication -----------------------------------------------------------------


def test_read_stat_reads_whole_files_of_any_size(tmp_path: Path) -> None:
    for size in (0, 1, 4096, 65536 + 3, 300_000):
        path = tmp_path / f"f{size}"
        data = os.urandom(size)
        path.write_bytes(data)
        got, st = fs.read_stat(path)
        assert got == data and st.st_size == size and st.st_ino == path.stat().st_ino
        assert fs.read_bytes(path) == data
    assert fs.read_bytes(tmp_path / "missing") is None
    with pytest.raises(FileNotFoundError):
        fs.read_stat(tmp_path / "missing")
    proc = Path("/proc/self/status")  # stat says 0 bytes: read to the end all the same
    assert fs.read_stat(proc)[0].startswith(b"Name:")


def test_an_enrollment_leaves_the_index_in_step_with_the_files(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamps recorded from descriptors (the inventory's fstat after the append, the
    signed/ directory the renames went through) are the ones a fresh look at the files
    gives: the next query re-indexes nothing, and a rebuild finds what was recorded."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    store = ca.store
    assert isinstance(store, FileStore)
    store.index.refresh()  # the first look indexes the copied CA
    reindexed: list[str] = []
    for which in store.index.WATCHED:
        real = getattr(store.index, f"_reconcile_{which}")
        monkeypatch.setattr(
            store.index,
            f"_reconcile_{which}",
            lambda conn, w=which, real=real: (reindexed.append(w), real(conn))[1],
        )
    ca.submit_csr("fast1.example.com", pki.pem(make_csr("fast1.example.com")))
    ca.sign("fast1.example.com")
    assert store.status("fast1.example.com") is not None
    assert reindexed == []  # every stamp our writes recorded was the files' own
    monkeypatch.undo()
    conn = store.index._conn()  # what the writes recorded (no refresh: it would correct them)
    stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    for which, path in store.index._watched.items():
        st = os.stat(path)
        assert stored[f"stamp:{which}"] == f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}", which
    before = conn.execute("SELECT name, serial, status, stamp FROM certs ORDER BY name").fetchall()
    inventory = conn.execute("SELECT * FROM inventory ORDER BY serial").fetchall()
    assert not list(settings.cadir.joinpath(".splitca", "tmp").iterdir())  # nothing staged left
    store.rebuild()
    conn = store.index._conn()
    assert (
        conn.execute("SELECT name, serial, status, stamp FROM certs ORDER BY name").fetchall()
        == before
    )
    assert conn.execute("SELECT * FROM inventory ORDER BY serial").fetchall() == inventory
    row = store.status("fast1.example.com")
    assert row is not None and row.state == "signed"
    assert store.cert("fast1.example.com") is not None


@pytest.mark.parametrize(
    "name",
    ["plain.example.com", "Puppet CA: host.example.com", "odd/CN=inner", "two\u2028lines"],
)
def test_a_reservation_indexes_its_inventory_line_as_a_rebuild_parses_it(
    settings: Settings, name: str
) -> None:
    """The reservation indexes its own line from the values it wrote it from; a rebuild
    (which parses the file) finds the same rows, for names and times of any shape."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    store = ca.store
    assert isinstance(store, FileStore)
    not_after = dt.datetime(2031, 5, 6, 7, 8, 9, 987654, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    store.reserve_serial(name, _NOW, not_after)
    conn = store.index._conn()
    recorded = conn.execute("SELECT * FROM inventory ORDER BY serial").fetchall()
    store.rebuild()
    assert store.index._conn().execute("SELECT * FROM inventory ORDER BY serial").fetchall() == (
        recorded
    )


@pytest.mark.parametrize("batch", [False, True])
def test_a_refused_rename_removes_the_staged_file_with_or_without_a_batch(
    tmp_path: Path, batch: bool
) -> None:
    """publish's contract (the rename failed: the staged file is removed) holds when the
    directories come from a batch's descriptors too, also when it is the target directory
    (a link) that is refused after the staging directory was opened."""
    root = tmp_path / "ca"
    (root / "tmp").mkdir(parents=True)
    evil = tmp_path / "evil"
    evil.mkdir()
    (root / "signed").symlink_to(evil)
    target = root / "signed" / "n.pem"
    tmp = fs.stage(target, b"cert\n", mode=0o644, tmpdir=root / "tmp", anchor=root)
    with pytest.raises(UnsafePath), fs.OpenDirs(root) as dirs:
        fs.publish(tmp, target, anchor=root, dirs=dirs if batch else None)
    assert not os.path.exists(tmp) and os.listdir(root / "tmp") == []
    assert os.listdir(evil) == []


def _ca_with_a_fifo_at(tmp_path: Path, rel: str) -> tuple[CertificateAuthority, Path]:
    """A CA that issued fifo-victim.example.com, with a FIFO planted at cadir/*rel*."""
    settings = make_settings(tmp_path)
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    ca.generate("fifo-victim.example.com")
    target = settings.cadir / rel
    target.unlink()
    os.mkfifo(target, 0o600)
    return ca, target


def _outcome_beside_a_fifo(
    act: Callable[[], object], fifo: Path, what: str
) -> BaseException | None:
    """What *act* raised (None: nothing); the test fails if *act* blocks on *fifo*."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            act()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    actor = threading.Thread(target=run, daemon=True)
    actor.start()
    actor.join(20)
    if actor.is_alive():
        os.close(os.open(fifo, os.O_RDWR))  # let the blocked reader go before failing
        actor.join(10)
        pytest.fail(f"{what} blocked on a FIFO")
    return outcome[0]


@pytest.mark.parametrize("which", ["serial", "certificate"])
def test_a_fifo_in_place_of_a_cadir_file_is_refused_not_waited_on(
    tmp_path: Path, which: str
) -> None:
    """Opening a FIFO for reading waits for a writer: a FIFO planted where the serial file or
    a certificate should be would hang the thread that reads it (a request, forever). The
    read is refused at once instead, as a store error (HTTP 503, never a hang or a 500);
    for the serial file that error is the usual "unreadable serial file" warning."""
    rel = "serial" if which == "serial" else "signed/fifo-victim.example.com.pem"
    ca, target = _ca_with_a_fifo_at(tmp_path, rel)
    if which == "serial":
        outcome = _outcome_beside_a_fifo(
            lambda: ca.generate("after-the-fifo.example.com"), target, "reading the serial"
        )
        # an unreadable serial file is a warning: the next serial comes from the inventory,
        # and the serial file is replaced by a regular one
        assert outcome is None
        assert target.is_file() and not target.is_fifo()
        assert int(target.read_text(), 16) > 2
    else:
        outcome = _outcome_beside_a_fifo(
            lambda: ca.certificate_pem("fifo-victim.example.com"), target, "reading a certificate"
        )
        assert isinstance(outcome, StoreError), outcome
        assert "not a regular file" in str(outcome)


@pytest.mark.parametrize("which", ["ca_crl.pem", "inventory.txt", "ca_crt.pem", "ca_key.pem"])
@pytest.mark.parametrize("op", ["generate", "revoke"])
def test_a_fifo_in_place_of_a_ca_file_fails_the_operation_not_hangs_it(
    tmp_path: Path, which: str, op: str
) -> None:
    """The CRL, the inventory, the CA certificate and key were read with a plain (blocking)
    open: a FIFO planted in place of one by whoever can write the cadir hung every signing
    and revocation for ever (the CRL and the inventory are read while the index's write
    lock is held, so every other writer queued behind). Each is refused at once, as a
    store error naming the file (HTTP 503, a one-line CLI error)."""
    ca, target = _ca_with_a_fifo_at(tmp_path, which)
    outcome = _outcome_beside_a_fifo(
        (lambda: ca.generate("after-the-fifo.example.com"))
        if op == "generate"
        else (lambda: ca.revoke(["fifo-victim.example.com"])),
        target,
        f"{op} with {which}",
    )
    assert isinstance(outcome, StoreError), outcome
    assert which in str(outcome) and "not a regular file" in str(outcome)


@pytest.mark.parametrize(
    "name",
    ["web01.example.com", "Puppet CA: ca.example.com", "a/CN=b", "x\u2028y", "v\x0bw", "é.example"],
)
def test_a_name_said_to_read_back_is_parsed_back_as_itself(name: str) -> None:
    from splitca.store.files.cadir import inventory_line, name_reads_back, parse_inventory

    parsed = list(parse_inventory(inventory_line(1, "2026-01-01T00:00:00UTC", "x", name)))
    if name_reads_back(name):
        assert [line.certname for line in parsed] == [name]
    else:
        assert [line.certname for line in parsed] != [name]


@pytest.mark.parametrize(
    "path",
    ["a/b.pem", "/a/b", "/b", "b", "//b", "//a/b", "///a/b", "a//b/", "./a/./b", "/a/b/", "a/b/."],
)
def test_a_files_directory_and_name_are_spelled_as_path_spells_them(path: str) -> None:
    """publish, open_nofollow: a file's directory and name by string work, as the Path
    properties they replaced spell them (for a str and for a Path)."""
    p = Path(path)
    expected = (str(p.parent), p.name)
    assert fs._dir_and_name(path) == expected
    assert fs._dir_and_name(p) == expected
    assert fs._spelled(path) == str(p)


def _old_format_problem(name: str) -> str | None:
    if any(c.isupper() for c in name):
        return "Certificate names must be lower case."
    if "*" in name:
        return f"Subject contains a wildcard, which is not allowed: {name}"
    if (
        not name
        or len(name) > names.MAX_CERTNAME_LENGTH
        or name.endswith("-")
        or not name.isascii()
        or names._LABELS_RE.fullmatch(name) is None
    ):
        return names._BAD_FORMAT
    return None


_CERTNAMES = ["agent.example.com", "Agent.example.com", "AGENT", "a-b_c", "a-", "*.ex", "X*", ""]
_CERTNAMES += ["a" * 300, "ünï.ex", "Ünï.ex", "\u01c5x", "\u03d2", "ß", "İx", "agent\u212a"]


@pytest.mark.parametrize("name", _CERTNAMES)
def test_the_certname_format_rules_are_the_previous_ones(name: str) -> None:
    assert names._format_problem.__wrapped__(name) == _old_format_problem(name)


def test_an_audit_line_is_the_previous_one(tmp_path: Path) -> None:
    """The audit record (secrets dropped, the fields' order kept) and its JSON line,
    byte for byte what the generator and json.dumps made."""
    log = AuditLog(tmp_path / "audit.log")
    actor = Actor("http", "agent.ex", "127.0.0.1")
    items: list[dict[str, object]] = [
        {"certname": "n.ex", "token": "t", "sans": ["DNS:n.ex"], "serial": 7},
        {"password": "p", "when": _NOW, "note": 'Ü \u2028 "q"', "key": 1, "secret": 2},
        {},
    ]
    assert log.events("sign", actor, items)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    secret = {"token", "password", "challenge_password", "key", "private_key", "secret"}
    for line, fields in zip(lines, items, strict=True):
        old = {"time": json.loads(line)["time"], "event": "sign", "actor": actor.as_dict()}
        old.update((k, v) for k, v in fields.items() if k not in secret)
        assert line == json.dumps(old, separators=(",", ":"), default=str)


def test_a_refused_csr_is_audited_recorded_and_raised_as_it_was(settings: Settings) -> None:
    """The refusal guard (a class now): the csr-refused event with its kind and message,
    the stored refusal, and the same exception for the caller."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    with pytest.raises(InvalidRequest) as bad:
        ca.submit_csr("junk.ex", b"not a csr")
    sans = pki.pem(make_csr("san.ex", sans=["DNS:other.ex"]))
    with pytest.raises(PolicyViolation) as refused:
        ca.submit_csr("san.ex", sans)
    lines = settings.effective_audit_log.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    got = [(e["certname"], e["kind"], e["message"]) for e in events if e["event"] == "csr-refused"]
    assert got == [
        ("junk.ex", "invalid-csr", str(bad.value)),
        ("san.ex", refused.value.kind, str(refused.value)),
    ]
    assert [(r.certname, r.kind) for r in ca.refusals()] == [
        ("san.ex", refused.value.kind),
        ("junk.ex", "invalid-csr"),
    ]


@pytest.mark.parametrize("root", ["/srv/ca", "relative/ca", "/"])
def test_a_certnames_file_as_a_str_is_its_path(root: str) -> None:
    """cert_file (no Path made) names the file cert_path names."""
    cadir = CADir(Path(root))
    for name in ("agent.example.com", "a", "n-1.ex"):
        assert cadir.cert_file(name) == str(cadir.cert_path(name))


def _old_leaf_builder(
    *,
    ca_key: object,
    ca_cert: x509.Certificate,
    public_key: object,
    certname: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    alt_names: list[x509.GeneralName],
    extensions: list[x509.Extension],  # type: ignore[type-arg]
) -> x509.CertificateBuilder:
    """leaf_builder before issue 12: a setter per field, add_extension per extension."""
    sans = list(alt_names)
    own = x509.DNSName(certname)
    if own not in sans:
        sans.append(own)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.UnrecognizedExtension(
                names.NETSCAPE_COMMENT, certs._ia5(names.NETSCAPE_COMMENT_TEXT)
            ),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier(certs.ca_key_identifier(ca_cert), None, None), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)  # type: ignore[arg-type]
    )
    for ext in extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return (
        builder.add_extension(x509.SubjectAlternativeName(sans), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(certs._LEAF_EKU, True)
        .add_extension(certs._LEAF_KU, True)
    )


def _outcome(make: Callable[[], x509.CertificateBuilder], ca_key: object) -> object:
    try:
        builder = make()
    except (ValueError, TypeError) as exc:
        return (type(exc), str(exc))
    return pki.sign_leaf(builder, ca_key, 4242).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def test_the_leaf_builder_in_one_constructor_makes_the_previous_certificates() -> None:
    """Byte for byte the certificate the setter-and-add_extension builder made (RSA signs
    deterministically), and the same error for contents that cannot make one."""
    ca_key = fast_key()
    ca = pki.build_ca_certificate(ca_key, "Puppet CA: one", now=_NOW, ttl=dt.timedelta(days=900))
    rsa_key, ec_key = fast_key().public_key(), ec.generate_private_key(ec.SECP256R1()).public_key()
    bc = x509.Extension(ExtensionOID.BASIC_CONSTRAINTS, True, x509.BasicConstraints(True, None))
    ski = x509.Extension(
        ExtensionOID.SUBJECT_KEY_IDENTIFIER, False, x509.SubjectKeyIdentifier(b"\x01" * 20)
    )
    comment = _utf8(names.NETSCAPE_COMMENT, "mine")
    not_an_extension = x509.Extension(_FOREIGN, False, "nope")  # type: ignore[type-var]
    cases: list[tuple[object, list[x509.GeneralName], list[x509.Extension], dt.timedelta]] = [  # type: ignore[type-arg]
        (rsa_key, [], [], dt.timedelta(days=30)),
        (ec_key, [x509.DNSName("puppet"), x509.DNSName("n.ex")], [], dt.timedelta(days=1)),
        (
            rsa_key,
            [x509.IPAddress(ipaddress.ip_address("::1"))],
            [_utf8(_PP_UUID, "u")],
            dt.timedelta(days=9),
        ),
        (rsa_key, [], [_utf8(_PP_AUTH_ROLE, "w"), pki.cli_auth_extension()], dt.timedelta(days=2)),
        (rsa_key, [], [_utf8(_PP_UUID, "a"), _utf8(_PP_UUID, "b")], dt.timedelta(days=2)),
        (rsa_key, [], [bc], dt.timedelta(days=2)),
        (rsa_key, [], [ski], dt.timedelta(days=2)),
        (rsa_key, [], [comment], dt.timedelta(days=2)),
        (rsa_key, [], [_utf8(_PP_UUID, "a"), not_an_extension], dt.timedelta(days=2)),
        ("not a key", [], [], dt.timedelta(days=2)),
        (rsa_key, [], [], dt.timedelta(days=-1)),
    ]
    for key, sans, exts, ttl in cases:
        args = dict(
            ca_key=ca_key,
            ca_cert=ca,
            public_key=key,
            certname="n.ex",
            not_before=_NOW,
            not_after=_NOW + ttl,
            alt_names=sans,
            extensions=exts,
        )
        new = _outcome(lambda: pki.leaf_builder(**args), ca_key)  # type: ignore[arg-type]  # noqa: B023
        assert new == _outcome(lambda: _old_leaf_builder(**args), ca_key)  # type: ignore[arg-type]  # noqa: B023


@pytest.mark.parametrize("in_tmpdir", [False, True])
def test_a_staged_file_is_named_as_before(tmp_path: Path, in_tmpdir: bool) -> None:
    """stage returns a str now: the name the Path it was spelled."""
    (tmp_path / "tmp").mkdir()
    target = tmp_path / "signed" / "n.ex.pem"
    target.parent.mkdir()
    tmpdir = tmp_path / "tmp" if in_tmpdir else None
    tmp = fs.stage(target, b"x\n", mode=0o644, tmpdir=tmpdir, anchor=tmp_path)
    old = (tmpdir or target.parent) / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    assert tmp == str(old)
    assert old.read_bytes() == b"x\n" and old.stat().st_mode & 0o777 == 0o644
    fs.publish(tmp, target, anchor=tmp_path)
    assert target.read_bytes() == b"x\n" and not old.exists()
