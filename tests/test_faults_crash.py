"""kill -9 of `splitca serve` (supervisor and workers) at random moments while agents enroll."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.store.files.cadir import parse_inventory

from .conftest import Server, fast_key, make_csr, openssl

AGENTS = 240
CLIENTS = 6
KILLS = 4


def _kill_all(server: Server) -> None:
    """SIGKILL the supervisor and every worker at once: nothing gets to clean up."""
    kids = subprocess.run(
        ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [server.proc.pid, *map(int, kids)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(10)
    for pid in map(int, kids):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)


@pytest.mark.slow
# requests may drop a socket unclosed when the server dies under it: the client's leak, not ours
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_during_enrollment_loses_and_reuses_nothing(
    ca: CertificateAuthority, server_factory: Callable[..., Server]
) -> None:
    seed = int(os.environ.get("SPLITCA_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    settings = ca.settings.replace(autosign=True)
    keys = [fast_key() for _ in range(4)]
    names = [f"agent{i:03d}.example.com" for i in range(AGENTS)]
    csrs = {
        n: make_csr(n, key=keys[i % 4]).public_bytes(serialization.Encoding.PEM)
        for i, n in enumerate(names)
    }
    current = {"server": server_factory(settings, workers=2)}
    lock = threading.Lock()
    received: dict[str, bytes] = {}
    unexpected: list[str] = []

    def enroll(mine: list[str]) -> None:
        with requests.Session() as http:
            for name in mine:
                for _attempt in range(200):
                    with lock:
                        server = current["server"]
                    base = f"{server.url}/puppet-ca/v1"
                    try:
                        put = http.put(
                            f"{base}/certificate_request/{name}",
                            data=csrs[name],
                            headers={"Content-Type": "text/plain"},
                            verify=str(server.cacert),
                            timeout=5,
                        )
                        if put.status_code not in (200, 400):
                            unexpected.append(f"PUT {name}: {put.status_code} {put.text[:200]}")
                            continue
                        if put.status_code == 400 and "already has a signed" not in put.text:
                            unexpected.append(f"PUT {name}: {put.text[:200]}")
                            break
                        got = http.get(
                            f"{base}/certificate/{name}", verify=str(server.cacert), timeout=5
                        )
                    except requests.RequestException:
                        time.sleep(0.05)  # the server is down or restarting: try again
                        continue
                    if got.status_code == 200:
                        with lock:
                            received[name] = got.content
                        break
                    time.sleep(0.05)
                else:
                    unexpected.append(f"{name}: never enrolled")

    workers = [
        threading.Thread(target=enroll, args=(names[i::CLIENTS],), daemon=True)
        for i in range(CLIENTS)
    ]
    for w in workers:
        w.start()
    progress_at_kills = []
    # Random moments, spread over the run: after a random number of enrollments, plus
    # a random few milliseconds so the kill lands anywhere inside a request.
    for threshold in sorted(rng.sample(range(15, AGENTS - 15), KILLS)):
        deadline = time.monotonic() + 60
        while len(received) < threshold and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        with lock:
            victim = current["server"]
            progress_at_kills.append(len(received))
        _kill_all(victim)
        replacement = server_factory(settings, workers=2)
        with lock:
            current["server"] = replacement
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers), f"clients hung (seed {seed})"
    assert not unexpected, f"seed {seed}: {unexpected[:5]}"
    assert len(received) == AGENTS
    # the kills really landed in the middle of the run
    assert sum(0 < n < AGENTS for n in progress_at_kills) >= 2, progress_at_kills
    _kill_all(current["server"])

    # Every certificate a client received is in signed/, the inventory and the index.
    fresh = open_ca(settings)
    inventory_lines = list(parse_inventory(fresh.store.cadir.inventory.read_bytes()))
    by_serial: dict[int, str] = {}
    for line in inventory_lines:
        assert line.serial not in by_serial, f"serial {line.serial:X} issued twice (seed {seed})"
        by_serial[line.serial] = line.certname
    for name, pem in received.items():
        assert fresh.store.cadir.cert_path(name).read_bytes() == pem, name
        serial = x509.load_pem_x509_certificate(pem).serial_number
        assert by_serial.get(serial) == name
        row = fresh.store.index.cert(name)
        assert row is not None and row.serial == serial
    on_disk = [
        x509.load_pem_x509_certificate(p.read_bytes()).serial_number
        for p in fresh.store.cadir.signeddir.glob("*.pem")
    ]
    assert len(on_disk) == len(set(on_disk)), "two certificates share a serial"
    # The index agrees with a rebuild from the files.
    before = fresh.store.index.counts()
    fresh.store.index.rebuild()
    assert fresh.store.index.counts() == before

    # The CRL verifies after a revocation, and the server starts clean.
    fresh.revoke([names[0]])
    out = openssl(
        "crl",
        "-in",
        str(fresh.store.cadir.cacrl),
        "-CAfile",
        str(fresh.store.cadir.cacert),
        "-noout",
    )
    assert out.returncode == 0 and b"verify OK" in out.stdout + out.stderr
    final = server_factory(settings, workers=2)
    name = "after-the-crashes.example.com"
    csr = make_csr(name, key=keys[0]).public_bytes(serialization.Encoding.PEM)
    base = f"{final.url}/puppet-ca/v1"
    put = requests.put(
        f"{base}/certificate_request/{name}",
        data=csr,
        headers={"Content-Type": "text/plain"},
        verify=str(final.cacert),
        timeout=10,
    )
    assert put.status_code == 200, put.text
    got = requests.get(f"{base}/certificate/{name}", verify=str(final.cacert), timeout=10)
    serial = x509.load_pem_x509_certificate(got.content).serial_number
    assert serial not in by_serial
    assert final.stop() == 0
    assert "Traceback" not in final.log_text()
    assert fresh.store.cadir.read_serial() > max(by_serial)
    leftovers = list(Path(fresh.store.cadir.tmpdir).glob("*.tmp"))
    assert all(time.time() - p.stat().st_mtime < 3600 for p in leftovers)
