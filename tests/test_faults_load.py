"""Several hundred concurrent enrollments against two workers while CLI sign and revoke loops run."""

from __future__ import annotations

import subprocess
import sys
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

AUTO = 260  # names the allowlist signs on arrival
MANUAL = 60  # names that wait for `splitca sign --all`
CLIENTS = 24


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_hundreds_of_enrollments_with_cli_sign_and_revoke(
    ca: CertificateAuthority, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    allowlist = tmp_path / "autosign.conf"
    allowlist.write_text("*.auto.test\n")
    settings = ca.settings.replace(autosign=str(allowlist), threads=16)
    server = server_factory(settings, workers=2)
    keys = [fast_key() for _ in range(4)]
    auto = [f"n{i:03d}.auto.test" for i in range(AUTO)]
    manual = [f"m{i:03d}.manual.test" for i in range(MANUAL)]
    names = auto + manual
    csrs = {
        n: make_csr(n, key=keys[i % 4]).public_bytes(serialization.Encoding.PEM)
        for i, n in enumerate(names)
    }
    base = f"{server.url}/puppet-ca/v1"
    verify = str(server.cacert)
    lock = threading.Lock()
    errors: list[str] = []
    issued: dict[str, bytes] = {}
    done = threading.Event()

    def client(mine: list[str]) -> None:
        with requests.Session() as http:
            for name in mine:
                put = http.put(
                    f"{base}/certificate_request/{name}",
                    data=csrs[name],
                    headers={"Content-Type": "text/plain"},
                    verify=verify,
                    timeout=60,
                )
                if put.status_code != 200:
                    errors.append(f"PUT {name}: {put.status_code} {put.text[:200]}")
                    continue
                if name in auto:
                    got = http.get(f"{base}/certificate/{name}", verify=verify, timeout=60)
                    if got.status_code != 200:
                        errors.append(f"GET {name}: {got.status_code}")
                        continue
                    with lock:
                        issued[name] = got.content

    cli_failures: list[str] = []
    revoked: list[str] = []

    def signer() -> None:
        while not done.is_set():
            r = _cli(server.config, "sign", "--all")
            if r.returncode != 0:
                cli_failures.append(f"sign --all: {r.returncode} {r.stderr[:300]}")
            time.sleep(0.2)

    def revoker() -> None:
        while not done.is_set():
            with lock:
                batch = [n for n in issued if n not in revoked][:5]
            if batch:
                r = _cli(server.config, "revoke", *batch)
                if r.returncode != 0:
                    cli_failures.append(f"revoke: {r.returncode} {r.stderr[:300]}")
                revoked.extend(batch)
            time.sleep(0.3)

    helpers = [threading.Thread(target=signer), threading.Thread(target=revoker)]
    clients = [threading.Thread(target=client, args=(names[i::CLIENTS],)) for i in range(CLIENTS)]
    for t in [*helpers, *clients]:
        t.start()
    for t in clients:
        t.join(300)
    done.set()
    for t in helpers:
        t.join(120)
    assert not errors, errors[:5]
    assert not cli_failures, cli_failures[:5]
    assert len(issued) == AUTO
    assert revoked, "the revoke loop never ran"

    # No CSR lost: a last `sign --all` leaves every manual name signed.
    last = _cli(server.config, "sign", "--all")
    assert last.returncode == 0, last.stderr
    fresh = open_ca(settings)
    for name in names:
        row = fresh.store.index.cert(name)
        assert row is not None, f"{name} has no certificate"
        assert fresh.store.cadir.csr_path(name).exists() is False
    # No serial issued twice, anywhere.
    lines = list(parse_inventory(fresh.store.cadir.inventory.read_bytes()))
    serials = [line.serial for line in lines]
    assert len(serials) == len(set(serials))
    on_disk = [
        x509.load_pem_x509_certificate(p.read_bytes()).serial_number
        for p in fresh.store.cadir.signeddir.glob("*.pem")
    ]
    assert len(on_disk) == len(set(on_disk))
    for name, pem in issued.items():
        assert fresh.store.cadir.cert_path(name).read_bytes() == pem
    # Every revocation is in the CRL, which verifies; the index agrees with the files.
    crl = x509.load_pem_x509_crl(fresh.store.cadir.cacrl.read_bytes())
    in_crl = {r.serial_number for r in crl}
    for name in revoked:
        assert x509.load_pem_x509_certificate(issued[name]).serial_number in in_crl
    out = openssl(
        "crl",
        "-in",
        str(fresh.store.cadir.cacrl),
        "-CAfile",
        str(fresh.store.cadir.cacert),
        "-noout",
    )
    assert out.returncode == 0 and b"verify OK" in out.stdout + out.stderr
    counts = fresh.store.index.counts()
    fresh.store.index.rebuild()
    assert fresh.store.index.counts() == counts
    assert counts["revoked"] == len(set(revoked))
    assert "Traceback" not in server.log_text()
