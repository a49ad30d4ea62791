"""Revocation and clean: what they do (the CRL, the certificate_status and clean endpoints,
a revoked certificate's authority), and that revocation is final under races.

The races: agents renewing as fast as they can while an admin revokes or cleans them (over
HTTP, or with the CLI from another process) end up with nothing that is not on the CRL served
right after the revoke/clean answered, and can renew nothing afterwards. Those go through a
real ``splitca serve`` with two worker processes; a signing racing a clean, and batch revokes
racing renewals, run in threads of one process."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.core.usecases import revoke as usecases_revoke
from splitca.errors import Conflict
from splitca.store.files.cadir import parse_inventory

from .conftest import Server, fast_key, make_csr, setup_ca, signed, wsgi_call

V1 = "/puppet-ca/v1"
RENEWERS = 4  # threads renewing one agent's certificate at once
TRIALS = 8  # per test; each trial is one agent revoked (or cleaned) mid-renewal
CLI_TRIALS = 4  # a CLI run costs an interpreter start-up
WARMUP_RENEWALS = 2 * RENEWERS  # renewals that must have succeeded before the revoke starts
AFTER_ATTEMPTS = 2  # renewal attempts each thread makes after the revoke answered
DEADLINE = 30.0  # seconds any one phase of a trial may take, so a hang cannot stall the suite


# --- what revoke and clean do ----------------------------------------------------------------


def test_crl_number_increments_and_revocations_batch_into_one_resign(
    ca: CertificateAuthority,
) -> None:
    """Revoking a batch re-signs the CRL once; every change bumps the CRL number."""
    for i in range(3):
        signed(ca, f"n{i}")
    before = pki.crl_number(x509.load_pem_x509_crl(ca.crl_pem()))
    found, missing = ca.revoke(["n0", "n1", "n2", "ghost"])
    assert sorted(found) == ["n0", "n1", "n2"] and missing == ["ghost"]
    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert pki.crl_number(crl) == before + 1
    assert len(list(crl)) == 3
    again, _ = ca.revoke(["n0"])  # already revoked: no new CRL
    assert again == {"n0": [found["n0"][0]]}
    assert pki.crl_number(x509.load_pem_x509_crl(ca.crl_pem())) == before + 1
    assert ca.refresh_crl(force=True)
    assert pki.crl_number(x509.load_pem_x509_crl(ca.crl_pem())) == before + 2


def test_clean_endpoint(app, ca, admin_cert) -> None:
    signed(ca, "c1")
    r = wsgi_call(app, "PUT", f"{V1}/clean", b'{"certnames":["c1"]}', client=admin_cert)
    assert (r.status, r.text) == (200, "Successfully cleaned all certs.")
    assert not ca.store.cadir.cert_path("c1").exists()
    assert ca.is_revoked(ca.serials_for("c1")[0])
    r = wsgi_call(app, "PUT", f"{V1}/clean", b'{"certnames":["missing"]}', client=admin_cert)
    assert (r.status, r.text) == (
        200,
        'The following certs do not exist and cannot be revoked: ["missing"]',
    )
    for body, msg in (
        (b"nope", "Request body is not JSON."),
        (
            b"{}",
            "Missing required key: 'certnames'. Please supply the list of certs you want to clean.",
        ),
        (b'{"certnames":[],"async":true}', "Async mode is not currently supported."),
    ):
        r = wsgi_call(app, "PUT", f"{V1}/clean", body, client=admin_cert)
        assert (r.status, r.text) == (400, msg)


def test_revoked_admin_certificate_is_treated_as_unauthenticated(app, ca) -> None:
    _key_pem, cert = ca.generate("admin2", ca_client=True)
    assert wsgi_call(app, "GET", f"{V1}/certificate_statuses/all", client=cert).status == 200
    ca.revoke(["admin2"])
    assert wsgi_call(app, "GET", f"{V1}/certificate_statuses/all", client=cert).status == 403


# --- races: revocation is final ----------------------------------------------------------------


def test_a_signing_racing_clean_lands_wholly_after_it(settings, monkeypatch) -> None:
    """A new request signed while clean runs waits for it: it is neither revoked nor deleted
    by that clean, and nothing is ever deleted unrevoked (the tests below do the same
    through the server)."""
    setup_ca(settings)
    ca = open_ca(settings.replace(allow_duplicate_certs=True))
    ca.submit_csr("flip", pki.pem(make_csr("flip")))
    first = ca.sign("flip")
    real_add = usecases_revoke.add_to_crl
    racers: list[threading.Thread] = []
    second: list[x509.Certificate] = []

    def sign_again() -> None:
        ca.submit_csr("flip", pki.pem(make_csr("flip")))
        second.append(ca.sign("flip"))

    def add_while_signing(d, serials, reason, **kwargs):  # type: ignore[no-untyped-def]
        t = threading.Thread(target=sign_again)  # the race: a signing while clean revokes
        t.start()
        racers.append(t)
        return real_add(d, serials, reason, **kwargs)

    monkeypatch.setattr(usecases_revoke, "add_to_crl", add_while_signing)
    cleaned, _ = ca.clean(["flip"])
    for t in racers:
        t.join(60)
    assert cleaned == ["flip"] and len(second) == 1
    issued = [
        ln.serial
        for ln in parse_inventory(ca.store.cadir.inventory.read_bytes())
        if ln.certname == "flip"
    ]
    assert issued == [first.serial_number, second[0].serial_number]
    assert ca.is_revoked(first.serial_number)
    assert not ca.is_revoked(second[0].serial_number)
    current = x509.load_pem_x509_certificate(ca.store.cadir.cert_path("flip").read_bytes())
    assert current.serial_number == second[0].serial_number


@dataclass
class Outcome:
    """What the renewers of one trial saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[x509.Certificate] = field(default_factory=list)
    late_successes: list[int] = field(default_factory=list)  # serials got after the answer
    attempts_after: dict[int, int] = field(default_factory=dict)  # per thread
    latest: dict[int, x509.Certificate] = field(default_factory=dict)  # per thread
    errors: list[str] = field(default_factory=list)


def _session(server: Server, cert: Path | None = None, key: Path | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
    s.verify = str(server.cacert)
    if cert is not None and key is not None:
        s.cert = (str(cert), str(key))
    return s


def _renew(server: Server, cert_file: Path, key_file: Path) -> requests.Response:
    with _session(server, cert_file, key_file) as s:
        return s.post(f"{server.url}{V1}/certificate_renewal", timeout=DEADLINE)


def _renewer(
    idx: int,
    server: Server,
    workdir: Path,
    key_file: Path,
    first: x509.Certificate,
    outcome: Outcome,
    answered: threading.Event,
    stop: threading.Event,
) -> None:
    """Renew continuously, always presenting the newest certificate this thread holds."""
    current = first
    n = 0
    session: requests.Session | None = None
    try:
        while not stop.is_set():
            if session is None:
                n += 1
                cert_file = workdir / f"r{idx}-{n}.pem"
                cert_file.write_bytes(pki.pem(current))
                session = _session(server, cert_file, key_file)
            after = answered.is_set()
            try:
                r = session.post(f"{server.url}{V1}/certificate_renewal", timeout=DEADLINE)
            except requests.RequestException as exc:
                with outcome.lock:
                    outcome.errors.append(f"renewer {idx}: {exc!r}")
                session.close()
                session = None
                continue
            with outcome.lock:
                if after:
                    outcome.attempts_after[idx] = outcome.attempts_after.get(idx, 0) + 1
                if r.status_code == 200:
                    new = x509.load_pem_x509_certificate(r.content)
                    outcome.received.append(new)
                    outcome.latest[idx] = new
                    if after:
                        outcome.late_successes.append(new.serial_number)
            if r.status_code == 200:
                current = new
                session.close()
                session = None  # present the renewed certificate from now on
            elif r.status_code >= 500:
                with outcome.lock:
                    outcome.errors.append(f"renewer {idx}: {r.status_code} {r.text[:200]}")
    finally:
        if session is not None:
            session.close()


def _wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _crl_serials(server: Server) -> set[int]:
    with _session(server) as s:
        r = s.get(f"{server.url}{V1}/certificate_revocation_list/ca", timeout=DEADLINE)
    assert r.status_code == 200, r.text
    return {
        e.serial_number
        for block in pki.split_pem(r.content, "X509 CRL")
        for e in x509.load_pem_x509_crl(block)
    }


def _inventory_serials(settings: Settings, name: str) -> set[int]:
    lines = parse_inventory((settings.cadir / "inventory.txt").read_bytes())
    return {ln.serial for ln in lines if ln.certname == name}


@dataclass
class Race:
    server: Server  # two workers
    ca: CertificateAuthority  # the same cadir, from this process
    key: rsa.RSAPrivateKey  # every trial's agent key
    key_file: Path
    workdir: Path


def _trial(race: Race, name: str, act: Callable[[str], None], *, cleaned: bool) -> None:
    server, ca, key_file, workdir = race.server, race.ca, race.key_file, race.workdir
    key = race.key
    ca.submit_csr(name, pki.pem(make_csr(name, key=key)))
    first = ca.sign(name)
    outcome = Outcome()
    answered, stop = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=_renewer,
            args=(i, server, workdir, key_file, first, outcome, answered, stop),
            daemon=True,
        )
        for i in range(RENEWERS)
    ]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: len(outcome.received) >= WARMUP_RENEWALS, f"{name}'s first renewals")
        act(name)  # the revoke or clean, while every renewer is mid-flight
        answered.set()
        crl = _crl_serials(server)  # the CRL that is served once the revoke has answered
        _wait_for(
            lambda: all(
                outcome.attempts_after.get(i, 0) >= AFTER_ATTEMPTS for i in range(RENEWERS)
            ),
            f"{name}'s renewals after the revoke",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE)
    assert not outcome.errors, outcome.errors[:5]
    escaped = sorted(c.serial_number for c in outcome.received if c.serial_number not in crl)
    assert not escaped, f"{name}: renewed certificates missing from the CRL: {escaped}"
    assert not outcome.late_successes, (
        f"{name}: renewals succeeded after the revoke answered: {outcome.late_successes}"
    )
    unrevoked = sorted(_inventory_serials(server.settings, name) - crl)
    assert not unrevoked, f"{name}: issued serials (inventory) missing from the CRL: {unrevoked}"
    if cleaned:
        assert not ca.store.cadir.cert_path(name).exists(), (
            f"signed/{name}.pem came back after clean"
        )
    # No certificate this agent ever held renews now.
    for i, cert in enumerate([first, *outcome.latest.values()]):
        cert_file = workdir / f"final-{i}.pem"
        cert_file.write_bytes(pki.pem(cert))
        r = _renew(server, cert_file, key_file)
        assert r.status_code != 200, f"{name}: serial {cert.serial_number} renewed after the revoke"


@pytest.fixture
def race(settings: Settings, server_factory: Callable[..., Server], tmp_path: Path) -> Race:
    setup_ca(settings)
    ca = open_ca(settings)
    server = server_factory(settings.replace(allow_auto_renewal=True), workers=2)
    key = fast_key()
    key_file = tmp_path / "agent-key.pem"
    key_file.write_bytes(pki.private_key_pem(key))
    key_file.chmod(0o600)
    workdir = tmp_path / "renewals"
    workdir.mkdir()
    return Race(server, ca, key, key_file, workdir)


def _admin(server: Server) -> requests.Session:
    s = server.settings
    return _session(server, s.effective_server_cert, s.effective_server_key)


@pytest.mark.slow
def test_http_revoke_racing_renewals_leaves_nothing_valid(race: Race) -> None:
    server = race.server
    with _admin(server) as admin:

        def revoke(name: str) -> None:
            r = admin.put(
                f"{server.url}{V1}/certificate_status/{name}",
                json={"desired_state": "revoked"},
                timeout=DEADLINE,
            )
            assert r.status_code == 204, (r.status_code, r.text)

        for i in range(TRIALS):
            _trial(race, f"rv-{i}", revoke, cleaned=False)


@pytest.mark.slow
def test_http_clean_racing_renewals_leaves_nothing_valid(race: Race) -> None:
    server = race.server
    with _admin(server) as admin:

        def clean(name: str) -> None:
            r = admin.put(f"{server.url}{V1}/clean", json={"certnames": [name]}, timeout=DEADLINE)
            assert r.status_code == 200 and "Successfully cleaned" in r.text, r.text

        for i in range(TRIALS):
            _trial(race, f"cl-{i}", clean, cleaned=True)


@pytest.mark.slow
def test_cli_revoke_racing_http_renewals_leaves_nothing_valid(race: Race) -> None:
    server = race.server

    def revoke(name: str) -> None:
        proc = server.cli("revoke", name)
        assert proc.returncode == 0, proc.stderr

    for i in range(CLI_TRIALS):
        _trial(race, f"cli-{i}", revoke, cleaned=False)


@pytest.mark.slow
def test_batch_revokes_racing_renewals_in_threads_are_final_and_never_deadlock(
    settings: Settings,
) -> None:
    """Threads of one process: renewers of many names, and revokers of random batches of
    them in random orders (each batch holds several name-lock stripes at once). No lock
    wait times out, and whenever a revoke covered serial S, a renewal of S that succeeded
    produced a serial that the same revoke covered too (it was issued before, never after)."""
    setup_ca(settings)
    ca = open_ca(settings)
    ca.store.cadir._lock_timeout = 10.0  # a lock-order deadlock shows up as LockTimeout, not a hang
    key = fast_key()
    names = [f"batch-{i:02d}" for i in range(24)]
    current: dict[str, x509.Certificate] = {}
    for name in names:
        ca.submit_csr(name, pki.pem(make_csr(name, key=key)))
        current[name] = ca.sign(name)
    renewed: list[tuple[str, int, int]] = []  # (name, presented serial, new serial)
    revoked: list[dict[str, list[int]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def renewer(mine: list[str]) -> None:
        held = {n: current[n] for n in mine}
        while held and not stop.is_set():
            for name, cert in list(held.items()):
                try:
                    new = ca.renew(cert)
                except Conflict:
                    del held[name]  # revoked: this agent is done
                    continue
                except BaseException as exc:
                    errors.append(exc)
                    return
                renewed.append((name, cert.serial_number, new.serial_number))
                held[name] = new

    def revoker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(6):
                batch = rnd.sample(names, 8)
                found, _ = ca.revoke(batch)
                revoked.append(found)
        except BaseException as exc:
            errors.append(exc)

    renewers = [threading.Thread(target=renewer, args=(names[i::4],)) for i in range(4)]
    revokers = [threading.Thread(target=revoker, args=(seed,)) for seed in range(3)]
    for t in renewers + revokers:
        t.start()
    for t in revokers:
        t.join(DEADLINE * 2)
    stop.set()
    for t in renewers:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in renewers + revokers), "a thread is stuck"
    assert not errors, errors[:3]
    assert renewed and revoked
    for found in revoked:
        for name, old, new in renewed:
            if old in found.get(name, ()):
                assert new in found[name], f"renewal {old} -> {new} of {name} escaped a revoke"


# --- a CRL file removed or damaged behind the CA's back ------------------------------------------


def _file_crl_serials(path: Path) -> set[int]:
    ours = pki.own_crl(path.read_bytes(), path.with_name("ca_crt.pem").read_bytes())
    return {r.serial_number for r in ours or []}


def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")  # as a restore that stopped half-way, or a full disk, leaves it
    elif how == "garbage":
        path.write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    else:  # only another CA's CRL (a root's, say), which was taken for this CA's
        import datetime as dt

        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = dt.datetime.now(dt.UTC)
        other = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")]))
            .last_update(now)
            .next_update(now + dt.timedelta(days=30))
            .add_extension(x509.CRLNumber(99), critical=False)
            .sign(fast_key(), hashes.SHA256())
        )
        path.write_bytes(pki.pem_crl(other.public_bytes(serialization.Encoding.DER)))


def _one_revoked_one_valid(
    settings: Settings,
) -> tuple[CertificateAuthority, x509.Certificate, x509.Certificate]:
    """A new CA that revoked revoked-before.example.com and not revoked-after.example.com."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    old = signed(ca, "revoked-before.example.com")
    new = signed(ca, "revoked-after.example.com")
    ca.revoke(["revoked-before.example.com"])
    return ca, old, new


@pytest.mark.parametrize("how", ["missing", "empty", "garbage", "foreign"])
@pytest.mark.parametrize("then", ["revoke", "refresh"])
def test_a_crl_file_lost_or_damaged_never_unrevokes_anything(
    settings: Settings, how: str, then: str
) -> None:
    """The index re-read the CRL file when it changed and, finding no CRL of this CA in it
    (removed, emptied, damaged), forgot every revocation: the next revoke signed a CRL of
    its own serials only, and the server's CRL refresh (due at once, the CRL being unreadable)
    an empty one (a file holding only another CA's CRL was even taken for this CA's), so
    every certificate revoked before was valid again, and said "signed".
    A damaged file failed every write with a ValueError. The index now keeps the last CRL's
    revocations, and the next CRL carries them, with a higher number."""
    from splitca.compose import open_ca

    ca, old, new = _one_revoked_one_valid(settings)
    crl = settings.cadir / "ca_crl.pem"
    ca_crt = (settings.cadir / "ca_crt.pem").read_bytes()
    number = pki.crl_number(pki.own_crl(crl.read_bytes(), ca_crt))  # type: ignore[arg-type]
    _damage(crl, how)
    if then == "revoke":
        ca.revoke(["revoked-after.example.com"])
        assert _file_crl_serials(crl) == {old.serial_number, new.serial_number}
    else:
        assert ca.refresh_crl() is True  # due: the CRL in effect is gone
        assert _file_crl_serials(crl) == {old.serial_number}
    after = pki.own_crl(crl.read_bytes(), ca_crt)
    assert after is not None and pki.crl_number(after) == number + 1
    assert ca.status("revoked-before.example.com").state == "revoked"  # type: ignore[union-attr]
    # and a CA opened afresh (another process) agrees
    again = open_ca(settings, autosign_at_start=False)
    assert again.status("revoked-before.example.com").state == "revoked"  # type: ignore[union-attr]


def test_with_no_record_of_a_lost_crl_no_crl_is_signed(settings: Settings) -> None:
    """An index built afresh (``splitca index rebuild``, a lost index) over a CRL file that is
    gone has no record of what was revoked: rather than sign a CRL without those entries,
    revoking and refreshing fail with a store error saying to restore the file, and so does
    a renewal (a revoked certificate cannot be told from a valid one); once it is restored,
    revoking works and nothing was lost."""
    from splitca.errors import StoreError

    ca, old, new = _one_revoked_one_valid(settings)
    crl = settings.cadir / "ca_crl.pem"
    backup = crl.read_bytes()
    crl.unlink()
    ca.rebuild_index()
    with pytest.raises(StoreError, match="restore it from a backup"):
        ca.revoke(["revoked-after.example.com"])
    with pytest.raises(StoreError, match="restore it from a backup"):
        ca.refresh_crl(force=True)
    with pytest.raises(StoreError, match="restore it from a backup"):
        ca.renew(old)  # a revoked certificate is not renewed into an unrevoked one
    assert not crl.exists()
    crl.write_bytes(backup)
    ca.revoke(["revoked-after.example.com"])
    assert _file_crl_serials(crl) == {old.serial_number, new.serial_number}
