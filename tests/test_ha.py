"""Several active `splitca serve` replicas behind a real HAProxy: replicas die, nothing is lost.

Three replicas share one store; HAProxy (TCP mode, health checks on /status/v1/simple)
spreads clients over them. Clients enroll as Puppet agents do (fetch the certificate,
submit the CSR if there is none, retry on failure) while replicas are killed with
SIGKILL; afterwards every client has a certificate for its own key, no serial was issued
twice, every certificate a client holds is the one the store serves, and the CRL verifies.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from splitca import pki
from splitca.config import Settings

from .conftest import Server, fast_key, make_csr, openssl, setup_ca, start_server
from .haproxy_harness import HAProxy, start_haproxy

pytestmark = pytest.mark.slow

V1 = "/puppet-ca/v1"
REPLICAS = 3
CLIENTS = 8
ENROLLMENTS = 150  # a few hundred on a fast machine; enough here for two kills mid-run
KILL_AFTER = (40, 90)  # enrollments done when the first and the second replica die
DEADLINE = 240.0  # the whole run; a hang fails instead of stalling the suite


@dataclass
class Cluster:
    settings: Settings
    replicas: dict[str, Server]
    lb: HAProxy
    root: Path

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.settings.cadir / "ca_crt.pem")
        return s


def store_settings(kind: str, settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The settings replicas share for store *kind*: one cadir on this host for files; for
    PostgreSQL a database of the test's own (the cadir then holds only the key, the CA
    certificate's copy and the replicas' TLS identity, which they may share on one host)."""
    if kind == "files":
        return settings
    assert kind == "postgresql", kind
    server = request.getfixturevalue("pg_server")
    return settings.replace(
        store=request.getfixturevalue("pg_url"), database_password_file=server.password_file
    )


@pytest.fixture(params=["files", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[Cluster]:
    shared = store_settings(request.param, settings.replace(autosign=True), request)
    setup_ca(shared)
    replicas: dict[str, Server] = {}
    lb: HAProxy | None = None
    try:
        for i in range(REPLICAS):
            replicas[f"r{i}"] = start_server(tmp_path, shared, workers=1)
        lb = start_haproxy(tmp_path / "haproxy", {n: s.port for n, s in replicas.items()})
        lb.wait_up(set(replicas))
        yield Cluster(shared, replicas, lb, tmp_path)
    finally:
        if lb is not None:
            lb.stop()
        for s in replicas.values():
            s.stop()


@dataclass
class Run:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: dict[str, x509.Certificate] = field(default_factory=dict)
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    unavailable: int = 0  # 503 answers seen (the store was down), retried as agents do


def enroll(
    session: requests.Session, url: str, name: str, key: rsa.RSAPrivateKey, run: Run
) -> None:
    """As `puppet ssl bootstrap` does: GET the certificate; if there is none, PUT the CSR; retry."""
    csr = pki.pem(make_csr(name, key=key))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            got = session.get(f"{url}{V1}/certificate/{name}", timeout=10)
            if got.status_code == 200:
                cert = x509.load_pem_x509_certificate(got.content)
                if cert.public_key().public_numbers() != key.public_key().public_numbers():
                    run.errors.append(f"{name}: served a certificate for another key")
                    return
                with run.lock:
                    run.done[name] = cert
                return
            if got.status_code == 404:
                put = session.put(
                    f"{url}{V1}/certificate_request/{name}",
                    data=csr,
                    headers={"Content-Type": "text/plain"},
                    timeout=10,
                )
                if put.status_code == 200:
                    continue  # autosigned: the next GET fetches it
                if put.status_code < 500 and "already has a" not in put.text:
                    run.errors.append(f"{name}: PUT answered {put.status_code}: {put.text[:200]}")
                    return
            if got.status_code == 503 or (got.status_code == 404 and put.status_code == 503):
                with run.lock:
                    run.unavailable += 1
        except requests.RequestException:
            pass  # a replica died under us: the agent tries again
        with run.lock:
            run.retries += 1
        time.sleep(0.2)
    run.errors.append(f"{name}: not enrolled within 60 s")


def _enroll_all(
    cluster: Cluster, names: list[str], run: Run, clients: int
) -> list[threading.Thread]:
    """*clients* agents enrolling *names* through the balancer, in the background."""
    keys = {n: fast_key() for n in names}
    todo = list(names)
    lock = threading.Lock()

    def client() -> None:
        session = cluster.session()
        while True:
            with lock:
                if not todo:
                    return
                name = todo.pop()
            enroll(session, cluster.lb.url, name, keys[name], run)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def _wait(threads: list[threading.Thread], deadline: float) -> None:
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running at the deadline"


def test_enrollment_goes_on_while_replicas_are_killed(cluster: Cluster) -> None:
    run = Run()
    names = [f"ha{i:04d}.example.com" for i in range(ENROLLMENTS)]
    killed: list[str] = []
    threads = _enroll_all(cluster, names, run, CLIENTS)
    victims = iter(sorted(cluster.replicas))
    deadline = time.monotonic() + DEADLINE
    for threshold in KILL_AFTER:
        while len(run.done) < threshold and time.monotonic() < deadline and not run.errors:
            time.sleep(0.05)
        victim = next(victims)
        cluster.replicas[victim].proc.send_signal(signal.SIGKILL)
        killed.append(victim)
    _wait(threads, deadline)
    assert not run.errors, run.errors[:5]
    assert sorted(run.done) == sorted(names)
    assert len(killed) == 2 and all(cluster.replicas[k].proc.wait(5) == -9 for k in killed)

    # One serial space: no serial twice, among the certificates the clients hold.
    serials = [c.serial_number for c in run.done.values()]
    assert len(set(serials)) == len(serials)
    # What each client holds is what the store serves (through the surviving replica).
    session = cluster.session()
    for name, cert in run.done.items():
        served = session.get(f"{cluster.lb.url}{V1}/certificate/{name}", timeout=10)
        assert served.status_code == 200 and served.content.strip() == pki.pem(cert).strip()
    statuses = session.get(
        f"{cluster.replicas[sorted(cluster.replicas)[-1]].url}{V1}/certificate_statuses/any",
        cert=_admin(cluster),
        timeout=30,
    )
    assert statuses.status_code == 200, statuses.text
    signed = {s["name"] for s in statuses.json() if s["state"] == "signed"}
    by_name = {s["name"]: s for s in statuses.json()}
    assert set(names) <= signed, [by_name.get(n) for n in set(names) - signed]
    store_serials = [s["serial_number"] for s in statuses.json() if s.get("serial_number")]
    assert len(set(store_serials)) == len(store_serials)  # the store too holds each once
    cluster.lb.wait_up(set(cluster.replicas) - set(killed))  # the balancer saw them die
    # Everything issued verifies against the CA and its CRL with openssl.
    sample = cluster.root / "issued.pem"
    crl = cluster.root / "crl.pem"
    crl.write_bytes(session.get(f"{cluster.lb.url}{V1}/certificate_revocation_list/ca").content)
    bundle = cluster.root / "bundle.pem"
    bundle.write_bytes((cluster.settings.cadir / "ca_crt.pem").read_bytes() + crl.read_bytes())
    for i, cert in enumerate(list(run.done.values())[:20]):
        sample.write_bytes(pki.pem(cert))
        proc = openssl("verify", "-crl_check", "-CAfile", str(bundle), str(sample))
        assert proc.returncode == 0, (i, proc.stdout, proc.stderr)


def _admin(cluster: Cluster) -> tuple[str, str]:
    """An admin client certificate (the CA server's own identity carries pp_cli_auth)."""
    s = cluster.settings
    return str(s.effective_server_cert), str(s.effective_server_key)


def test_a_revocation_through_one_replica_is_in_the_crl_of_every_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    session = cluster.session()
    run = Run()
    enroll(session, cluster.lb.url, "victim.example.com", fast_key(), run)
    assert "victim.example.com" in run.done, run.errors
    serial = run.done["victim.example.com"].serial_number
    first, *others = (cluster.replicas[n] for n in sorted(cluster.replicas))
    revoked = session.put(
        f"{first.url}{V1}/certificate_status/victim.example.com",
        json={"desired_state": "revoked"},
        cert=_admin(cluster),
        timeout=30,
    )
    assert revoked.status_code == 204, revoked.text
    for replica in others:  # at once: no waiting for a sync
        crl = x509.load_pem_x509_crl(
            session.get(f"{replica.url}{V1}/certificate_revocation_list/ca", timeout=10).content
        )
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None, replica.url
    # A compile master's sync-crl pointed at the load balancer gets it too.
    dest = tmp_path / "master-crl.pem"
    sync = first.cli(
        "sync-crl",
        "--ca-url",
        cluster.lb.url,
        "--ca-cert",
        str(cluster.settings.cadir / "ca_crt.pem"),
        "--dest",
        str(dest),
        "--no-reload",
    )
    assert sync.returncode == 10, sync.stdout + sync.stderr  # 10: a new CRL was installed
    crl = x509.load_pem_x509_crl(dest.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_puppet_agents_bootstrap_through_the_load_balancer(
    cluster: Cluster, agent_factory: Callable[[str], object]
) -> None:
    for i in range(3):
        agent = agent_factory(f"lb-agent{i}.example.com")
        result = agent.bootstrap(cluster.lb.port)  # type: ignore[attr-defined]
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Completed SSL initialization" in result.stdout
    cluster.replicas["r0"].proc.send_signal(signal.SIGKILL)
    cluster.lb.wait_up({"r1", "r2"})
    agent = agent_factory("lb-agent-after-kill.example.com")
    result = agent.bootstrap(cluster.lb.port)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout + result.stderr


# --- on one PostgreSQL database: it restarts mid-run; operators revoke meanwhile ----------------
#
# Clients enroll through HAProxy as Puppet agents do (retrying 503s and dropped
# connections). The database is killed and started again during the run: requests answer
# 503 meanwhile, the CA certificate and the CRL keep being served, and every enrollment
# completes with one serial space afterwards. Operators revoke with the CLI from another
# process while the replicas sign: every CRL any replica serves has a number no lower than
# the one served before it, and the last one holds every revoked serial.

DB_CLIENTS = 6
DB_ENROLLMENTS = 80
DOWN_AFTER = 20  # enrollments done when the database dies
DOWN_FOR = 3.0  # seconds it stays down


def _statuses(cluster: Cluster) -> list[dict[str, object]]:
    s = cluster.settings
    got = cluster.session().get(
        f"{cluster.lb.url}{V1}/certificate_statuses/any",
        cert=(str(s.effective_server_cert), str(s.effective_server_key)),
        timeout=30,
    )
    assert got.status_code == 200, got.text
    rows: list[dict[str, object]] = got.json()
    return rows


@pytest.mark.parametrize("cluster", ["postgresql"], indirect=True)
def test_enrollment_completes_through_a_database_restart(
    cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    pg = request.getfixturevalue("pg_server")
    run = Run()
    names = [f"db{i:03d}.example.com" for i in range(DB_ENROLLMENTS)]
    deadline = time.monotonic() + DEADLINE
    threads = _enroll_all(cluster, names, run, DB_CLIENTS)
    while len(run.done) < DOWN_AFTER and time.monotonic() < deadline and not run.errors:
        time.sleep(0.05)
    pg.stop(mode=signal.SIGKILL)  # a crash, not a clean shutdown
    try:
        time.sleep(DOWN_FOR / 2)
        # Meanwhile every replica still serves the CA certificate and the CRL it has.
        session = cluster.session()
        for replica in cluster.replicas.values():
            for path in ("/certificate/ca", "/certificate_revocation_list/ca"):
                got = session.get(f"{replica.url}{V1}{path}", timeout=10)
                assert got.status_code == 200, (replica.url, path, got.status_code)
        time.sleep(DOWN_FOR / 2)
    finally:
        pg.start()
    _wait(threads, deadline)
    assert not run.errors, run.errors[:5]
    assert sorted(run.done) == sorted(names)
    assert run.unavailable > 0, "no request met the outage: the test proved nothing"
    serials = [c.serial_number for c in run.done.values()]
    assert len(set(serials)) == len(serials)
    rows = {r["name"]: r for r in _statuses(cluster)}
    for name, cert in run.done.items():
        assert rows[name]["state"] == "signed"
        assert rows[name]["serial_number"] == cert.serial_number
    all_serials = [r["serial_number"] for r in rows.values() if r.get("serial_number")]
    assert len(set(all_serials)) == len(all_serials)


@pytest.mark.parametrize("cluster", ["postgresql"], indirect=True)
def test_replicas_signing_while_an_operator_revokes_share_one_serial_space_and_crl(
    cluster: Cluster,
) -> None:
    run = Run()
    names = [f"op{i:03d}.example.com" for i in range(DB_ENROLLMENTS // 2)]
    deadline = time.monotonic() + DEADLINE
    threads = _enroll_all(cluster, names, run, DB_CLIENTS)
    replicas = list(cluster.replicas.values())
    seen: list[int] = []
    stop = threading.Event()
    poll_errors: list[str] = []

    def poll_crls() -> None:  # what compile masters see, from whichever replica
        session = cluster.session()
        while not stop.is_set():
            replica = random.choice(replicas)
            try:
                got = session.get(f"{replica.url}{V1}/certificate_revocation_list/ca", timeout=10)
            except requests.RequestException as exc:
                poll_errors.append(repr(exc))
                return
            if got.status_code != 200:
                poll_errors.append(f"{replica.url}: {got.status_code}")
                return
            seen.append(_number(got.content))
            time.sleep(0.05)

    poller = threading.Thread(target=poll_crls, daemon=True)
    poller.start()
    revoked: dict[str, int] = {}
    operator = replicas[0]  # its config: another process, as an operator's shell
    while len(revoked) < 5 and time.monotonic() < deadline and not run.errors:
        candidates = [n for n in sorted(run.done) if n not in revoked]
        if not candidates:
            time.sleep(0.1)
            continue
        name = candidates[0]
        done = operator.cli("revoke", name)
        assert done.returncode == 0, done.stdout + done.stderr
        revoked[name] = run.done[name].serial_number
    _wait(threads, deadline)
    stop.set()
    poller.join(15)
    assert not run.errors, run.errors[:5]
    assert not poll_errors, poll_errors[:3]
    assert len(revoked) == 5 and sorted(run.done) == sorted(names)
    assert seen == sorted(seen), "a replica served an older CRL after a newer one"
    assert len(set(seen)) >= 2, "the poller saw no revocation: the test proved nothing"
    serials = [c.serial_number for c in run.done.values()]
    assert len(set(serials)) == len(serials)
    session = cluster.session()
    for replica in replicas:
        crl = x509.load_pem_x509_crl(
            session.get(f"{replica.url}{V1}/certificate_revocation_list/ca", timeout=10).content
        )
        for name, serial in revoked.items():
            assert crl.get_revoked_certificate_by_serial_number(serial) is not None, name


def _number(pem: bytes) -> int:
    crl = x509.load_pem_x509_crl(
        pem.split(b"-----END X509 CRL-----")[0] + b"-----END X509 CRL-----\n"
    )
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
