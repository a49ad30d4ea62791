"""Enrollment in-process: registry records and tokens, registry autosign, the admin endpoint, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from splitca import compose, pki
from splitca.authority import CertificateAuthority
from splitca.cli import cli
from splitca.compose import open_ca, open_registry
from splitca.config import Settings
from splitca.enrollment.autosign import RedeemedLedger, RegistryAutosigner
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.enroll import cloud_config, register, render_user_data
from splitca.enrollment.registry import (
    Classification,
    Registration,
    check_token,
    hash_token,
    parse_record,
)
from splitca.errors import ConfigError, Conflict, InvalidRequest, NotFound, PolicyViolation
from splitca.http.wsgiapp import make_app

from .conftest import make_csr, setup_ca, write_config, wsgi_call

V1 = "/puppet-ca/v1"
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
WORKER = Classification(("hadoop::worker",), {"datacenter": "fra"}, "production")


@pytest.fixture
def rca(settings: Settings) -> CertificateAuthority:
    """A CA with ``autosign: registry`` over the default local registry."""
    s = settings.replace(autosign="registry")
    setup_ca(s)
    return open_ca(s)


def audit_lines(ca: CertificateAuthority) -> list[dict[str, Any]]:
    path = ca.settings.effective_audit_log
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def submit(ca: CertificateAuthority, name: str, password: str | None) -> Any:
    return ca.submit_csr(name, pki.pem(make_csr(name, password=password)))


# --- records and tokens ------------------------------------------------------------------------


def test_a_record_stores_the_token_hash_never_the_token(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    record, token = register(registry, "web1.example.com", WORKER, ttl=dt.timedelta(hours=1))
    path = tmp_path / "reg" / "web1.example.com.json"
    data = path.read_bytes()
    assert token.encode() not in data
    assert json.loads(data)["token_sha256"] == hash_token(token)
    assert path.stat().st_mode & 0o777 == 0o640
    assert registry.get("web1.example.com") == record
    assert len(token) == 64 and all(c in "0123456789abcdef" for c in token)


@pytest.mark.parametrize(
    ("record", "token", "now", "reason"),
    [
        (None, "t", NOW, "no registration"),
        ("used", "t", NOW, "token already used"),
        ("fresh", "t", NOW + dt.timedelta(hours=2), "registration expired"),
        ("fresh", None, NOW, "no challengePassword"),
        ("fresh", "", NOW, "no challengePassword"),
        ("fresh", "wrong", NOW, "bad token"),
        ("fresh", "t", NOW, None),
    ],
)
def test_token_check_reasons(
    record: str | None, token: str | None, now: dt.datetime, reason: str | None
) -> None:
    fresh = Registration("n.example.com", NOW, NOW + dt.timedelta(hours=1), hash_token("t"))
    rec = {None: None, "fresh": fresh, "used": fresh.with_redeemed(NOW)}[record]
    assert check_token(rec, token, now) == reason


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(certname="other.example.com"), "not 'n.example.com'"),
        (lambda r: r.update(token_sha256="ABC"), "token_sha256"),
        (lambda r: r.update(expires="tomorrow"), "expires"),
        (lambda r: r.update(created="2030-01-01T00:00:00"), "time zone"),
        (lambda r: r.update(classes=["Bad-Class"]), "not a Puppet class name"),
        (lambda r: r.update(classes="role::web"), "list of class names"),
        (lambda r: r.update(parameters={"x": {"y": float("inf")}}), "finite"),
        (lambda r: r.update(parameters={"$x": 1}), "variable name"),
        (lambda r: r.update(environment="../prod"), "environment"),
        (lambda r: r.update(padding="x" * 70000), "larger than"),
    ],
)
def test_hostile_records_are_refused(mutate: Any, message: str) -> None:
    good = Registration("n.example.com", NOW, NOW, hash_token("t"), WORKER)
    raw = json.loads(good.to_json())
    assert parse_record(good.to_json(), "n.example.com") == good
    mutate(raw)
    with pytest.raises(ValueError, match=message):
        parse_record(json.dumps(raw).encode(), "n.example.com")
    for junk in (b"\xff\xfe", b"[1]", b"null", b"{"):
        with pytest.raises(ValueError):
            parse_record(junk, "n.example.com")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = [
    "certname",
    "created",
    "expires",
    "token_sha256",
    "classes",
    "parameters",
    "environment",
    "redeemed",
]


@hsettings(max_examples=100, deadline=None)
@given(
    base=st.booleans(),
    changes=st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4),
)
def test_any_json_record_is_either_valid_or_a_clean_valueerror(base: bool, changes: dict) -> None:
    """Whatever a remote registry serves, parsing never crashes and never half-accepts."""
    raw: dict[str, Any] = (
        json.loads(Registration("n.example.com", NOW, NOW, "a" * 64, WORKER).to_json())
        if base
        else {}
    )
    raw.update(changes)
    try:
        data = json.dumps(raw).encode()
    except ValueError:
        return
    try:
        record = parse_record(data, "n.example.com")
    except ValueError:
        return
    assert record.certname == "n.example.com" and len(record.token_sha256) == 64
    assert parse_record(record.to_json(), "n.example.com") == record


def _redeem_in_child(args: tuple[str, str]) -> bool:
    root, token = args
    return DirectoryRegistry(Path(root)).redeem("race.example.com", token, NOW).ok


def test_concurrent_redemptions_across_processes_succeed_exactly_once(tmp_path: Path) -> None:
    """Eight processes present the same token at once: one wins, seven are told it is used."""
    registry = DirectoryRegistry(tmp_path / "reg")
    _, token = register(registry, "race.example.com", WORKER, ttl=dt.timedelta(hours=1), now=NOW)
    with ProcessPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_redeem_in_child, [(str(tmp_path / "reg"), token)] * 8))
    assert results.count(True) == 1
    record = registry.get("race.example.com")
    assert record is not None and record.redeemed == NOW


def test_the_ledger_refuses_a_token_hash_twice(tmp_path: Path) -> None:
    ledger = RedeemedLedger(tmp_path / "ledger")
    assert ledger.claim("a" * 64, "x", NOW) is True
    assert ledger.claim("a" * 64, "y", NOW) is False
    assert (tmp_path / "ledger" / ("a" * 64)).stat().st_mode & 0o777 == 0o600


def test_registry_writes_conflict_and_remove_needs_a_record(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    register(registry, "a.example.com", WORKER, ttl=dt.timedelta(hours=1))
    with pytest.raises(Conflict):
        register(registry, "a.example.com", WORKER, ttl=dt.timedelta(hours=1))
    _, token = register(registry, "a.example.com", WORKER, ttl=dt.timedelta(hours=1), replace=True)
    assert registry.redeem("a.example.com", token, dt.datetime.now(dt.UTC)).ok
    registry.remove("a.example.com")
    with pytest.raises(NotFound):
        registry.remove("a.example.com")
    for bad in ("../etc/passwd", "UPPER.example.com", ""):
        with pytest.raises(InvalidRequest):
            register(registry, bad, WORKER, ttl=dt.timedelta(hours=1))
        assert registry.get(bad) is None
    with pytest.raises(InvalidRequest):
        register(registry, "b.example.com", WORKER, ttl=dt.timedelta(days=31))


# --- registry autosign through the CA ------------------------------------------------------------


def test_registered_csr_with_its_token_is_signed_once(rca: CertificateAuthority) -> None:
    registry = open_registry(rca.settings)
    _, token = register(registry, "node1.example.com", WORKER, ttl=dt.timedelta(hours=1))
    result = submit(rca, "node1.example.com", token)
    assert result.signed, result.reason
    # the same token, replayed after the host was cleaned, is not signed again
    rca.clean(["node1.example.com"])
    replay = submit(rca, "node1.example.com", token)
    assert not replay.signed and replay.reason == "token already used"
    row = rca.status("node1.example.com")
    assert row is not None and row.state == "requested" and row.reason == "token already used"


@pytest.mark.parametrize(
    ("password", "ttl", "reason"),
    [
        ("good", dt.timedelta(hours=1), None),
        ("0" * 64, dt.timedelta(hours=1), "bad token"),
        (None, dt.timedelta(hours=1), "no challengePassword"),
        ("good", -dt.timedelta(hours=1), "registration expired"),
    ],
    ids=["signed", "bad-token", "no-password", "expired"],
)
def test_pending_reasons(
    rca: CertificateAuthority, password: str | None, ttl: dt.timedelta, reason: str | None
) -> None:
    registry = open_registry(rca.settings)
    now = dt.datetime.now(dt.UTC)
    created = now if ttl > dt.timedelta(0) else now - dt.timedelta(hours=2)
    _, token = register(registry, "n.example.com", WORKER, ttl=abs(ttl), now=created)
    result = submit(rca, "n.example.com", token if password == "good" else password)
    assert result.signed == (reason is None)
    if reason:
        assert result.reason == reason
        assert rca.status("n.example.com").reason == reason  # type: ignore[union-attr]


def test_unregistered_name_stays_pending_and_validation_still_applies(
    rca: CertificateAuthority,
) -> None:
    result = submit(rca, "stranger.example.com", "anything")
    assert not result.signed and result.reason == "no registration"
    # A registered name with its token still cannot smuggle in alt names.
    registry = open_registry(rca.settings)
    _, token = register(registry, "sneaky.example.com", WORKER, ttl=dt.timedelta(hours=1))
    csr = make_csr("sneaky.example.com", password=token, sans=["DNS:puppet"])
    with pytest.raises(PolicyViolation):
        rca.submit_csr("sneaky.example.com", pki.pem(csr))
    assert registry.get("sneaky.example.com").redeemed is None  # type: ignore[union-attr]


def test_a_broken_registry_leaves_csrs_pending(rca: CertificateAuthority) -> None:
    reg = Path(rca.settings.effective_registry)
    reg.mkdir(parents=True, exist_ok=True)
    (reg / "broken.example.com.json").write_text("{not json")
    result = submit(rca, "broken.example.com", "x")
    assert not result.signed and result.reason.startswith("registry unavailable:")


def test_clock_is_injectable_for_expiry(tmp_path: Path) -> None:
    registry = DirectoryRegistry(tmp_path / "reg")
    _, token = register(registry, "c.example.com", WORKER, ttl=dt.timedelta(hours=1), now=NOW)
    late = RegistryAutosigner(
        lambda: registry, RedeemedLedger(tmp_path / "l"), clock=lambda: NOW + dt.timedelta(hours=1)
    )
    info = pki.inspect_csr(make_csr("c.example.com", password=token))
    decision = late.decide("c.example.com", b"", info)
    assert not decision.sign and decision.reason == "registration expired"


# --- the audit log ------------------------------------------------------------------------------


def test_audit_has_one_line_per_event_and_never_the_token(rca: CertificateAuthority) -> None:
    registry = open_registry(rca.settings)
    record, token = register(
        registry, "aud.example.com", WORKER, ttl=dt.timedelta(hours=1), audit=rca.audit
    )
    submit(rca, "aud.example.com", token)
    submit(rca, "other.example.com", token)
    events = [(e["event"], e.get("certname")) for e in audit_lines(rca)]
    assert events[-6:] == [
        ("register", "aud.example.com"),
        ("csr-received", "aud.example.com"),
        ("autosign-decision", "aud.example.com"),
        ("sign", "aud.example.com"),
        ("csr-received", "other.example.com"),
        ("autosign-decision", "other.example.com"),
    ]
    lines = audit_lines(rca)
    decision = lines[-4]
    assert decision["sign"] is True and decision["token_id"] == record.token_id
    assert decision["policy"] == "registry"
    assert lines[-1]["sign"] is False and lines[-1]["reason"] == "no registration"
    assert lines[-3]["serial"] and lines[-3]["fingerprint"] and "sans" in lines[-3]
    text = rca.settings.effective_audit_log.read_text()
    assert token not in text and hash_token(token) not in text


# --- certificate_status shows why ------------------------------------------------------------------


def test_certificate_status_explains_pending(rca: CertificateAuthority, admin_cert: Any) -> None:
    app = make_app(ca=rca)
    submit(rca, "why.example.com", None)
    r = wsgi_call(app, "GET", f"{V1}/certificate_status/why.example.com", client=admin_cert)
    assert r.status == 200
    body = json.loads(r.body)
    assert body["state"] == "requested" and body["pending_reason"] == "no registration"
    r = wsgi_call(app, "GET", f"{V1}/certificate_statuses/x", client=admin_cert)
    assert json.loads(r.body)[0]["pending_reason"] == "no registration"


# --- the admin endpoint -------------------------------------------------------------------------


def test_registration_endpoint_needs_an_admin(rca: CertificateAuthority) -> None:
    app = make_app(ca=rca)
    agent = rca.generate("plain.example.com", key_type="rsa", key_size=2048)[1]
    for client in (None, agent):
        for method, path in (
            ("GET", "/splitca/registrations"),
            ("POST", "/splitca/registrations"),
            ("PUT", "/splitca/registrations/x.example.com"),
            ("DELETE", "/splitca/registrations/x.example.com"),
        ):
            r = wsgi_call(app, method, V1 + path, b"{}", client=client)
            assert r.status == 403, (method, path, client)


def test_registration_endpoint_round_trip(
    rca: CertificateAuthority, admin_cert: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    app = make_app(ca=rca)
    body = {"classes": ["hadoop::worker"], "parameters": {"replicas": 3}, "ttl": "30m"}
    r = wsgi_call(
        app,
        "PUT",
        f"{V1}/splitca/registrations/w1.example.com",
        json.dumps(body).encode(),
        client=admin_cert,
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 201, r.text
    assert r.headers["Cache-Control"] == "no-store"
    created = json.loads(r.body)
    token = created["token"]
    assert created["state"] == "waiting" and created["parameters"] == {"replicas": 3}
    again = wsgi_call(
        app, "PUT", f"{V1}/splitca/registrations/w1.example.com", b"{}", client=admin_cert
    )
    assert again.status == 409
    got = wsgi_call(app, "GET", f"{V1}/splitca/registrations/w1.example.com", client=admin_cert)
    assert got.status == 200 and "token" not in json.loads(got.body)
    posted = wsgi_call(
        app,
        "POST",
        f"{V1}/splitca/registrations",
        json.dumps({"classes": ["role::db"], "domain": "example.com"}).encode(),
        client=admin_cert,
    )
    assert posted.status == 201
    fresh = json.loads(posted.body)["certname"]
    assert fresh.endswith(".example.com")
    listing = json.loads(
        wsgi_call(app, "GET", f"{V1}/splitca/registrations", client=admin_cert).body
    )
    assert sorted(x["certname"] for x in listing) == sorted([fresh, "w1.example.com"])
    assert submit(rca, "w1.example.com", token).signed
    for bad in (b"[]", b'{"classes": "x"}', b'{"nope": 1}', b'{"ttl": "forever"}', b"{"):
        r = wsgi_call(
            app, "PUT", f"{V1}/splitca/registrations/b.example.com", bad, client=admin_cert
        )
        assert r.status == 400, bad
    d = wsgi_call(app, "DELETE", f"{V1}/splitca/registrations/w1.example.com", client=admin_cert)
    assert d.status == 204
    d = wsgi_call(app, "DELETE", f"{V1}/splitca/registrations/w1.example.com", client=admin_cert)
    assert d.status == 404
    events = [e["event"] for e in audit_lines(rca)]
    assert events.count("register") == 2 and events.count("unregister") == 1
    everything = caplog.text + rca.settings.effective_audit_log.read_text()
    assert token not in everything


# --- the command line --------------------------------------------------------------------------


def run(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def test_cli_register_classify_unregister(rca: CertificateAuthority, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    r = run(
        cfg,
        "register",
        "hd1.example.com",
        "--class",
        "hadoop::worker,role::base",
        "--param",
        "rack=r7",
        "--environment",
        "production",
    )
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert len(token) == 64
    r = run(cfg, "classify", "hd1.example.com")
    assert r.exit_code == 0
    assert yaml.safe_load(r.stdout) == {
        "classes": ["hadoop::worker", "role::base"],
        "parameters": {"rack": "r7"},
        "environment": "production",
    }
    assert r.stdout.startswith("---\n")
    r = run(cfg, "classify", "unknown.example.com")
    assert r.exit_code == 1 and "not registered" in r.stderr
    r = run(cfg, "registrations", "--format", "json")
    assert [x["state"] for x in json.loads(r.stdout)] == ["waiting"]
    assert token not in r.stdout
    assert submit(rca, "hd1.example.com", token).signed
    r = run(cfg, "registrations", "--state", "enrolled")
    assert "hd1.example.com" in r.stdout and "enrolled" in r.stdout
    # classification outlives the enrollment
    assert run(cfg, "classify", "hd1.example.com").exit_code == 0
    assert run(cfg, "unregister", "hd1.example.com").exit_code == 0
    assert run(cfg, "classify", "hd1.example.com").exit_code == 1
    assert run(cfg, "unregister", "hd1.example.com").exit_code == 3
    r = run(cfg, "register", "x.example.com", "--class", "Not A Class")
    assert r.exit_code == 4 and "Puppet class name" in r.stderr
    r = run(cfg, "register", "x.example.com", "--param", "novalue")
    assert r.exit_code == 4
    assert token not in rca.settings.effective_audit_log.read_text()


def test_a_parameter_that_is_not_unicode_text_is_refused_and_nothing_is_registered(
    rca: CertificateAuthority, tmp_path: Path
) -> None:
    """An argument that is not UTF-8 reaches Python as lone surrogates (and JSON can spell
    them, "\\ud800"): no character, so no store can hold it (PostgreSQL refuses it) and no
    classifier can print it. Refused as bad input, like a NUL, wherever it comes from."""
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    not_utf8 = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Linux argv gives Python
    r = run(cfg, "register", "x.example.com", "--param", f"note={not_utf8}")
    assert r.exit_code == 4, r.output
    assert "parameters: note" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for bad in ("\ud800", ["ok", "\udfff"], {"k\udc80": 1}, {"k": {"v": "\udbff"}}):
        with pytest.raises(InvalidRequest, match="parameters: note"):
            Classification.build([], {"note": bad}, "")
    assert run(cfg, "registrations", "--format", "json").stdout.strip() == "[]"


def test_cli_enroll_prints_cloud_config(rca: CertificateAuthority, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    r = run(
        cfg,
        "enroll",
        "--class",
        "hadoop::worker",
        "--domain",
        "nodes.example.com",
        "--server",
        "puppet.example.com",
        "--ca-port",
        "8141",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("#cloud-config\n")
    doc = yaml.safe_load(r.stdout)
    puppet = doc["puppet"]
    main = puppet["conf"]["main"]
    assert main["certname"].endswith(".nodes.example.com")
    assert main["server"] == "puppet.example.com" and main["ca_server"] == "ca.test"
    assert main["ca_port"] == "8141" and main["serverport"] == "8140"
    assert puppet["conf"]["ca_cert"] == rca.ca_certificate_pem().decode()
    token = puppet["csr_attributes"]["custom_attributes"]["1.2.840.113549.1.9.7"]
    assert set(puppet["csr_attributes"]) == {"custom_attributes"}
    record = open_registry(rca.settings).get(main["certname"])
    assert record is not None and record.token_sha256 == hash_token(token)
    assert record.classification.classes == ("hadoop::worker",)
    j = run(cfg, "enroll", "--format", "json", "--install", "aio")
    out = json.loads(j.stdout)
    assert yaml.safe_load(out["user_data"])["puppet"]["install_type"] == "aio"
    assert out["certname"] != main["certname"]
    bad = run(cfg, "enroll", "--ca-cert", str(tmp_path / "missing.pem"))
    assert bad.exit_code == 2


def test_cli_enroll_embeds_certificates_only_never_a_key(
    rca: CertificateAuthority, tmp_path: Path
) -> None:
    """--ca-cert's file goes into user-data that every process on the instance can read:
    a file that holds a private key too (a combined key+cert PEM) is refused, anything
    around the certificates is left out, a huge file is not read whole, and a refused
    file registers nothing."""
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    ca_pem = (rca.settings.cadir / "ca_crt.pem").read_bytes()
    combined = tmp_path / "combined.pem"
    combined.write_bytes((rca.settings.cadir / "ca_key.pem").read_bytes() + ca_pem)
    r = run(cfg, "enroll", "--ca-cert", str(combined))
    assert r.exit_code == 2, r.output
    assert "PRIVATE KEY" not in r.stdout and "private key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    huge = tmp_path / "huge.pem"
    huge.write_bytes(ca_pem + b"#" * (2 * 1024 * 1024))
    r = run(cfg, "enroll", "--ca-cert", str(huge))
    assert r.exit_code == 2 and "larger than" in r.stderr, r.output
    assert run(cfg, "registrations", "--format", "json").stdout.strip() == "[]"
    commented = tmp_path / "commented.pem"
    commented.write_bytes(b"# internal note: vault path secret/ca\n" + ca_pem)
    r = run(cfg, "enroll", "--ca-cert", str(commented))
    assert r.exit_code == 0, r.output
    embedded = yaml.safe_load(r.stdout)["puppet"]["conf"]["ca_cert"]
    assert embedded == ca_pem.decode() and "vault" not in r.stdout


def test_cli_enroll_with_a_bad_server_registers_nothing(
    rca: CertificateAuthority, tmp_path: Path
) -> None:
    """Options of the user-data are checked before the registration is written: a refused
    --server leaves no registration behind (a token nobody was given)."""
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    for option, value in (("--server", "a b"), ("--ca-server", "x\ny"), ("--server", "....")):
        r = run(cfg, "enroll", option, value)
        assert r.exit_code == 4, (value, r.output)
        assert "is not a host name or IP address" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert run(cfg, "registrations", "--format", "json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    "host",
    [
        "....",
        "a..b.example.com",
        "-a.example.com",
        "a-.example.com",
        "[::1",
        "::1]",
        "::::",
        "1.2.3.4:8140",
        "[10.0.0.1]",
        "a" * 64 + ".example.com",
    ],
)
def test_user_data_refuses_what_is_no_host_name_or_address(host: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a host name or IP address"):
        cloud_config(
            certname="a.example.com",
            token="f" * 64,
            ca_cert_pem="",
            server=host,
            server_port=8140,
            ca_server="ca.example.com",
            ca_port=8140,
        )


@pytest.mark.parametrize(
    "host",
    [
        "puppet",
        "puppet.example.com",
        "10.0.0.1",
        "::1",
        "[::1]",
        "fe80::1",
        "x1-2.example",
    ],
)
def test_user_data_takes_host_names_and_addresses(host: str) -> None:
    doc = cloud_config(
        certname="a.example.com",
        token="f" * 64,
        ca_cert_pem="",
        server=host,
        server_port=8140,
        ca_server=host,
        ca_port=8140,
    )
    assert doc["puppet"]["conf"]["main"]["server"] == host


def test_user_data_values_are_strings_for_configparser() -> None:
    doc = cloud_config(
        certname="a.example.com",
        token="f" * 64,
        ca_cert_pem="-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        server="s",
        server_port=8140,
        ca_server="c",
        ca_port=8141,
    )
    text = render_user_data(doc)
    assert "ca_cert: |" in text
    for value in yaml.safe_load(text)["puppet"]["conf"]["main"].values():
        assert isinstance(value, str)


def test_settings_validate_registry_locations(tmp_path: Path) -> None:
    base = {"cadir": str(tmp_path), "certname": "ca.test"}
    for good in ("", "/srv/reg", "https://reg.example.com/nodes/", "s3://my-bucket/reg"):
        Settings.from_mapping({**base, "registry": good})
    for bad in ("relative/dir", "ftp://x/y", "s3://Bad_Bucket/x", "https://h/x?q=1"):
        with pytest.raises(ConfigError, match=r"^registry: "):
            Settings.from_mapping({**base, "registry": bad})


def test_registry_dir_is_created_with_explicit_modes(rca: CertificateAuthority) -> None:
    registry = open_registry(rca.settings)
    register(registry, "m.example.com", WORKER, ttl=dt.timedelta(hours=1))
    root = Path(rca.settings.effective_registry)
    assert root.stat().st_mode & 0o777 == 0o750
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())
    assert os.access(root / "m.example.com.json", os.R_OK)


def test_post_registration_can_answer_with_user_data(
    rca: CertificateAuthority, admin_cert: Any
) -> None:
    """A remote provisioner gets ready-to-use user-data in one call; options are validated
    (nothing can inject lines into puppet.conf) before anything is registered."""
    app = make_app(ca=rca)
    body = {"classes": ["hadoop::worker"], "user_data": {"server": "puppet.example.com"}}
    r = wsgi_call(
        app, "POST", f"{V1}/splitca/registrations", json.dumps(body).encode(), client=admin_cert
    )
    assert r.status == 201, r.text
    answer = json.loads(r.body)
    assert answer["user_data"].startswith("#cloud-config\n")
    puppet = yaml.safe_load(answer["user_data"])["puppet"]
    assert puppet["conf"]["main"]["certname"] == answer["certname"]
    assert puppet["conf"]["main"]["server"] == "puppet.example.com"
    assert puppet["conf"]["main"]["ca_server"] == "ca.test"
    assert puppet["csr_attributes"]["custom_attributes"]["1.2.840.113549.1.9.7"] == answer["token"]
    before = len(list(open_registry(rca.settings).records()))
    for bad in (
        {"server": "evil\nautosign = true"},
        {"ca_port": 0},
        {"install": "curl|sh"},
        {"nope": 1},
        "yes",
    ):
        r = wsgi_call(
            app,
            "POST",
            f"{V1}/splitca/registrations",
            json.dumps({"user_data": bad}).encode(),
            client=admin_cert,
        )
        assert r.status == 400, bad
    assert len(list(open_registry(rca.settings).records())) == before


def test_cli_enroll_refuses_a_domain_that_makes_a_name_longer_than_a_cn(
    rca: CertificateAuthority, tmp_path: Path
) -> None:
    """<uuid>.<domain> must fit a certificate's CN (64 characters): refused before any
    registration or token exists, not after the machine burnt its token on a 500."""
    cfg = write_config(tmp_path / "c.yaml", rca.settings)
    domain = "nodes." + "d" * 25 + ".example.com"  # 36 + 1 + 43 = 80 characters
    r = run(cfg, "enroll", "--domain", domain)
    assert r.exit_code == 4, r.output
    assert "at most 64 characters" in r.stderr and r.stdout == ""
    assert list(open_registry(rca.settings).records()) == []
    r = run(cfg, "register", "r" * 65)
    assert r.exit_code == 4 and "at most 64 characters" in r.stderr
    assert list(open_registry(rca.settings).records()) == []
    # 64 characters fit: a 27-character domain
    r = run(cfg, "enroll", "--domain", "n" * 15 + ".example.com", "--format", "json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["certname"]) == 64


# --- wiring: `autosign: registry` is never silently "autosign nothing" ---------------------

_OPEN_WAYS = {
    # A fresh interpreter per way, so nothing another module registered at import helps.
    "compose.open_ca": "from splitca.compose import open_ca\nca = open_ca(s)",
    "wsgi.make_app": "from splitca.wsgi import make_app\nca = make_app(s).ca",
}


@pytest.mark.parametrize("way", sorted(_OPEN_WAYS))
def test_registry_autosign_is_used_or_refused_however_the_ca_is_opened(
    settings: Settings, tmp_path: Path, way: str
) -> None:
    import subprocess
    import sys

    s = settings.replace(autosign="registry")
    compose.setup_ca(s)
    _, token = register(open_registry(s), "w1.example.com", WORKER, ttl=dt.timedelta(hours=1))
    (tmp_path / "csr.pem").write_bytes(pki.pem(make_csr("w1.example.com", password=token)))
    cfg = write_config(tmp_path / "registry.yaml", s)
    script = "\n".join(
        [
            "import sys",
            "from pathlib import Path",
            "from splitca.config import Settings",
            "from splitca.errors import ConfigError",
            f"s = Settings.load(Path({str(cfg)!r}))",
            "try:",
            *("    " + line for line in _OPEN_WAYS[way].splitlines()),
            f"    r = ca.submit_csr('w1.example.com', Path({str(tmp_path / 'csr.pem')!r}).read_bytes())",
            "except ConfigError as exc:",
            "    print('refused:', exc); sys.exit(0)",
            "print('signed' if r.signed else 'pending: ' + r.reason)",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out == "signed", out


def test_the_facade_has_no_default_collaborators(settings: Settings) -> None:
    """Only the composition root wires the CA: without a store, signer, audit sink and
    autosigner there is no CA object that could quietly autosign nothing."""
    compose.setup_ca(settings)
    with pytest.raises(TypeError, match="store"):
        CertificateAuthority(settings)  # type: ignore[call-arg]


def test_an_autosign_name_missing_from_the_table_is_a_config_error(settings: Settings) -> None:
    from splitca.compose import AUTOSIGN_STRATEGIES, build_autosigner
    from splitca.core.autosign import Deferred, make_autosigner
    from splitca.errors import ConfigError

    with pytest.raises(ConfigError, match="'registry' is not an autosign strategy"):
        make_autosigner("registry", timeout=1.0, settings=settings)  # no table: refuse
    with pytest.raises(ConfigError, match="known: registry"):
        make_autosigner("bogus", timeout=1.0, strategies=AUTOSIGN_STRATEGIES)
    built = build_autosigner(settings.replace(autosign="registry"))
    assert isinstance(built, RegistryAutosigner)
    calls: list[int] = []
    deferred = Deferred(lambda: calls.append(1) or built)  # type: ignore[func-returns-value]
    assert calls == []  # nothing built (nor refused) until it is used
    assert deferred.description == built.description and calls == [1]
    assert deferred.description and calls == [1]  # built once
