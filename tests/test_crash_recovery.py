"""A signing process that dies between its writes leaves a cadir that a restart serves correctly.

The crash is real (the process exits with os._exit at that point: no cleanup, no finally
blocks, like kill -9); only *where* it happens is chosen, by patching one function in the
dying process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from cryptography import x509

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.compose import open_ca
from splitca.store.files.cadir import parse_inventory

from .conftest import make_csr, openssl, setup_ca, write_config

DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from splitca import compose, fs
    from splitca.store.files import index
    from splitca.config import Settings

    config, point, name = sys.argv[1:4]
    settings = Settings.load(Path(config))
    ca = compose.open_ca(settings)

    def die(*a, **k):
        os._exit(137)

    if point == "after-inventory":       # inventory line (the serial's durable record) written, serial file not
        from splitca.store.files import cadir
        cadir.CADir.write_serial = die
    elif point == "before-publish":      # serial + inventory written, certificate not yet in place
        real_publish = fs.publish
        def publish(tmp, path, **kw):
            if path.parent.name == "signed":
                die()
            return real_publish(tmp, path, **kw)
        fs.publish = publish
    elif point == "before-index-commit":  # certificate renamed into place, CSR removed, index not committed
        real_record = index.Index.record
        def record(self, conn, *which):
            if "signed" in which:
                die()
            return real_record(self, conn, *which)
        index.Index.record = record
    ca.sign(name)
    os._exit(0)
    """
)


def crash_signing(config: Path, point: str, name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", DIE, str(config), point, name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 137, proc.stderr


@pytest.mark.parametrize("point", ["after-inventory", "before-publish", "before-index-commit"])
def test_interrupted_signing_recovers(settings, tmp_path: Path, server_factory, point: str) -> None:
    setup_ca(settings)
    ca = open_ca(settings)
    ca.submit_csr("victim", pki.pem(make_csr("victim")))
    ca.close()
    config = write_config(tmp_path / "c.yaml", settings)
    serial_before = ca.store.cadir.read_serial()

    crash_signing(config, point, "victim")

    # "Restart": a new process-level view of the cadir.
    again = open_ca(settings)
    cert_file = settings.cadir / "signed" / "victim.pem"
    inventory = list(parse_inventory((settings.cadir / "inventory.txt").read_bytes()))
    recorded = {line.serial for line in inventory}
    if point == "before-index-commit":
        # The certificate made it to disk: the index catches up, the CSR is gone.
        assert cert_file.exists()
        row = again.status("victim")
        assert row is not None and row.state == "signed"
        assert row.serial == serial_before
    else:
        # Nothing was published: still pending, signable, and the lost serial is never reused.
        assert not cert_file.exists()
        assert again.status("victim").state == "requested"  # type: ignore[union-attr]
        cert = again.sign("victim")
        # Whatever the crashed process had put on record stays used: never issued again.
        assert cert.serial_number not in recorded
        assert cert.serial_number >= serial_before
        inventory = list(parse_inventory((settings.cadir / "inventory.txt").read_bytes()))
    serials = [line.serial for line in inventory]
    assert len(serials) == len(set(serials))
    # No torn or half-written files anywhere, and the restarted server serves it all.
    for pem_file in (settings.cadir / "signed").glob("*.pem"):
        x509.load_pem_x509_certificate(pem_file.read_bytes())
    assert (
        openssl(
            "crl",
            "-in",
            str(settings.cadir / "ca_crl.pem"),
            "-noout",
            "-verify",
            "-CAfile",
            str(settings.cadir / "ca_crt.pem"),
        ).returncode
        == 0
    )
    again.close()
    server = server_factory(settings)
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(server.cacert)
        s.cert = (str(settings.effective_server_cert), str(settings.effective_server_key))
        r = s.get(f"{server.url}/puppet-ca/v1/certificate/victim", timeout=30)
        assert r.status_code == 200
        assert (
            x509.load_pem_x509_certificate(r.content).serial_number == again.status("victim").serial
        )  # type: ignore[union-attr]
        r = s.get(f"{server.url}/puppet-ca/v1/certificate_statuses/all", timeout=30)
        assert r.status_code == 200
        assert {st["name"]: st["state"] for st in json.loads(r.content)}["victim"] == "signed"


def test_a_writer_killed_after_its_rename_is_indexed_by_the_next_writer(
    settings, tmp_path: Path
) -> None:
    """Several processes share one cadir (CLI and server, or replicas). One is killed after
    renaming a certificate into signed/ but before its index commit; the directory's stamp
    need not move (its mtime has the kernel's coarse tick: simulated here by putting it
    back). The next writer, in another process that had already read the index, must
    index the orphan, not record a stamp that hides it for good."""
    setup_ca(settings)
    other = open_ca(settings)  # a long-running process: it has read the index already
    other.submit_csr("victim", pki.pem(make_csr("victim")))
    other.submit_csr("bystander", pki.pem(make_csr("bystander")))
    assert other.status("victim").state == "requested"  # type: ignore[union-attr]
    signed = settings.cadir / "signed"
    before = os.stat(signed)
    config = write_config(tmp_path / "c.yaml", settings)

    crash_signing(config, "before-index-commit", "victim")
    assert (signed / "victim.pem").exists()
    os.utime(signed, ns=(before.st_atime_ns, before.st_mtime_ns))  # same tick

    other.sign("bystander")  # the next writer
    row = other.status("victim")
    assert row is not None and row.state == "signed"
    fresh = open_ca(settings)
    states = {r.name: r.state for r in fresh.statuses()}
    assert states["victim"] == "signed" and states["bystander"] == "signed"


def test_torn_inventory_line_is_tolerated_and_healed(ca: CertificateAuthority) -> None:
    """A crash mid-append leaves a partial last line: readers skip it; the next append starts fresh."""
    with open(ca.store.cadir.inventory, "ab") as f:
        f.write(b"0x00FF 2026-01-01T00:00:00UTC 2031-01")  # torn: no end, no newline
    ca.submit_csr("after-tear", pki.pem(make_csr("after-tear")))
    cert = ca.sign("after-tear")
    lines = ca.store.cadir.inventory.read_bytes().split(b"\n")
    assert any(ln.startswith(f"0x{cert.serial_number:04X} ".encode()) for ln in lines)
    parsed = list(parse_inventory(ca.store.cadir.inventory.read_bytes()))
    assert parsed[-1].certname == "after-tear"
    assert all(p.serial != 0xFF for p in parsed)
