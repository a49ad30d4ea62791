"""A full disk: clear 503s to clients, no torn or lost file, and signing resumes when space returns."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca import compose
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.errors import LockTimeout, StoreError
from splitca.http.wsgiapp import make_app
from splitca.store.files.cadir import parse_inventory

from .conftest import fast_key, make_csr, make_settings, require, wsgi_call

INVENTORY_LINE = re.compile(rb"0x[0-9A-F]+ \S+UTC \S+UTC /CN=[^\n]+")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (needs root)."""
    require(os.geteuid() == 0, "the full-disk test needs root to mount a tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(proc.returncode == 0, f"cannot mount a tmpfs: {proc.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _assert_nothing_torn(ca: CertificateAuthority) -> dict[int, str]:
    """Every file parses; returns the inventory as {serial: certname}."""
    cadir = ca.store.cadir
    for pem in cadir.signeddir.glob("*.pem"):
        x509.load_pem_x509_certificate(pem.read_bytes())
    for pem in cadir.csrdir.glob("*.pem"):
        x509.load_pem_x509_csr(pem.read_bytes())
    raw = cadir.inventory.read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.splitlines():
        assert INVENTORY_LINE.fullmatch(line), line
    cadir.read_serial()
    crl = x509.load_pem_x509_crl(cadir.cacrl.read_bytes())
    assert crl.is_signature_valid(ca.ca_certificate().public_key())  # type: ignore[arg-type]
    assert not list(cadir.tmpdir.glob("*.tmp")), "staged files left behind"
    inventory = {line.serial: line.certname for line in parse_inventory(raw)}
    assert len(inventory) == len(raw.splitlines()), "a serial appears twice in the inventory"
    return inventory


def test_full_disk_gives_503_loses_nothing_and_recovers(tiny_fs: Path) -> None:
    settings = make_settings(tiny_fs, autosign=True)
    compose.setup_ca(settings)
    ca = open_ca(settings)
    app = make_app(ca=ca)
    key = fast_key()
    filler = _fill(
        tiny_fs, leave=160 * 1024
    )  # room for some CSRs, their certificates and index commits
    received: dict[str, bytes] = {}
    failed: list[str] = []
    statuses: set[int] = set()
    for i in range(400):
        name = f"node{i}.example.com"
        body = make_csr(name, key=key).public_bytes(serialization.Encoding.PEM)
        put = wsgi_call(app, "PUT", f"/puppet-ca/v1/certificate_request/{name}", body)
        statuses.add(put.status)
        if put.status == 200:
            got = wsgi_call(app, "GET", f"/puppet-ca/v1/certificate/{name}")
            assert got.status == 200
            received[name] = got.body
            continue
        assert put.status == 503, (put.status, put.text)
        assert "Traceback" not in put.text
        assert re.search(r"space|full", put.text, re.I), put.text
        assert put.headers.get("Retry-After")
        failed.append(name)
        if len(failed) >= 8:
            break
    assert failed, "the disk never filled up"
    assert received, "nothing was signed before the disk filled up"
    assert statuses <= {200, 503}
    # Operator commands on a full disk fail cleanly, or tell the truth: once the new CRL file
    # is installed the revocation has taken effect, even if the index could not follow.
    victim = next(iter(received))
    try:
        ca.revoke([victim])
    except (StoreError, LockTimeout):
        pass
    else:
        crl = x509.load_pem_x509_crl(ca.store.cadir.cacrl.read_bytes())
        serial = x509.load_pem_x509_certificate(received[victim]).serial_number
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    # Nothing torn, nothing lost, while the disk is still full.
    inventory = _assert_nothing_torn(ca)
    for name, pem in received.items():
        assert ca.store.cadir.cert_path(name).read_bytes() == pem
        serial = x509.load_pem_x509_certificate(pem).serial_number
        assert inventory[serial] == name
    # Space comes back: signing resumes, and the refused agents can enroll.
    filler.unlink()
    for name in [*failed, "after.example.com"]:
        body = make_csr(name, key=key).public_bytes(serialization.Encoding.PEM)
        put = wsgi_call(app, "PUT", f"/puppet-ca/v1/certificate_request/{name}", body)
        # a certificate published just before the index update failed is already there
        assert put.status == 200 or "already has a signed certificate" in put.text, put.text
        got = wsgi_call(app, "GET", f"/puppet-ca/v1/certificate/{name}")
        assert got.status == 200
        received[name] = got.body
    assert ca.revoke([next(iter(received))])[0]
    inventory = _assert_nothing_torn(ca)
    serials = [x509.load_pem_x509_certificate(p).serial_number for p in received.values()]
    assert len(set(serials)) == len(serials)
    for name, pem in received.items():
        row = ca.store.index.cert(name)
        assert row is not None
        assert row.serial == x509.load_pem_x509_certificate(pem).serial_number
        assert inventory[row.serial] == name
