"""A power cut: what was handed out before it is on disk after it, and the serial file is
not older than at the cadir's last sync (puppetserver trusts that file alone).

The CA runs on a loop-mounted ext4 image (without a journal, and journaled with
``data=writeback`` and ``data=ordered``) and the power is cut with ``EXT4_IOC_SHUTDOWN``
without flushing the log (xfstests' "godown"): what was not written to the device is
lost, as in a real cut. The enrollments run in a child process, so nothing of the
writer's memory survives either. Needs root (loop mount), like the full-disk tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from splitca.store.files.cadir import parse_inventory

from .conftest import REPO, make_settings, require, require_program, setup_ca, write_config

_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_GOING_FLAGS_NOLOGFLUSH = 2  # drop what is not on the device, journal included

# What both programs below begin with: the CA of the config given as argv[1], and csr(name).
_PROGRAM_HEAD = """
import json, os, sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from splitca.compose import open_ca
from splitca.config import Settings

ca = open_ca(Settings.load(Path(sys.argv[1])), autosign_at_start=False)
key = ec.generate_private_key(ec.SECP256R1())
def csr(name):
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
"""

# Enroll 20 agents, sync everything, enroll 3 more (each answered only when durable), then
# (with "then-crl") a CRL refresh, which syncs the cadir directory; print what was handed out
# and the serial file's value at the sync and at the end.
_WRITER = (
    _PROGRAM_HEAD
    + """
handed = {}
def enroll(name):
    ca.submit_csr(name, csr(name))
    handed[name] = ca.certificate_pem(name).decode()
for i in range(20):
    enroll(f"before-sync-{i}.example.com")
os.sync()
serial_file = ca.store.cadir.serial_file
at_sync = int(serial_file.read_bytes(), 16)
for i in range(3):
    enroll(f"after-sync-{i}.example.com")
if sys.argv[2] == "then-crl":
    ca.refresh_crl(force=True)
at_cut = int(serial_file.read_bytes(), 16)
print(json.dumps({"handed": handed, "serial_at_sync": at_sync, "serial_at_cut": at_cut}), flush=True)
sys.stdin.read()  # still running, its index open, when the power goes
"""
)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(params=["no-journal", "data=writeback", "data=ordered"])
def ext4(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(image, mount point, mount options) of a fresh 64 MiB ext4 mounted for this test."""
    require(os.geteuid() == 0, "the power-cut test needs root to mount a loop file system")
    mkfs = require_program("mkfs.ext4")
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    features = ["-O", "^has_journal"] if request.param == "no-journal" else []
    made = _run(mkfs, "-q", "-F", *features, str(image))
    require(made.returncode == 0, f"mkfs.ext4 failed: {made.stderr}")
    options = "loop" if request.param == "no-journal" else f"loop,{request.param}"
    mounted = _run("mount", "-o", options, str(image), str(mnt))
    require(mounted.returncode == 0, f"cannot mount a loop ext4: {mounted.stderr}")
    try:
        yield image, mnt, options
    finally:
        _run("umount", "-l", str(mnt))


def _cut_power(mnt: Path) -> None:
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, struct.pack("I", _GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def _reboot(image: Path, mnt: Path, options: str) -> None:
    assert _run("umount", str(mnt)).returncode == 0
    _run("e2fsck", "-fy", str(image))  # as the boot would (it may have things to mend)
    remounted = _run("mount", "-o", options, str(image), str(mnt))
    assert remounted.returncode == 0, remounted.stderr


def _run_then_cut_power(
    ext4: tuple[Path, Path, str], program: str, *args: str, autosign: bool
) -> tuple[Path, dict[str, Any]]:
    """Run *program* against a new CA on *ext4*; when it prints its JSON line (its last
    answer given), cut the power under it, still running, and boot again. Returns the
    cadir and what the program printed."""
    image, mnt, options = ext4
    settings = make_settings(mnt, autosign=autosign)
    setup_ca(settings)
    config = write_config(mnt / "splitca.yaml", settings)
    writer = subprocess.Popen(
        [sys.executable, "-c", program, str(config), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()  # the program's last answer is given
        assert line, writer.communicate(timeout=60)[1]
        told: dict[str, Any] = json.loads(line)
        _cut_power(mnt)  # while the CA process still runs: it gets no chance to tidy up
    finally:
        writer.kill()
        writer.communicate(timeout=60)
    _reboot(image, mnt, options)
    return settings.cadir, told


def _enroll_then_cut_power(ext4: tuple[Path, Path, str], then: str) -> tuple[Path, dict[str, Any]]:
    return _run_then_cut_power(ext4, _WRITER, then, autosign=True)


def _inventory(cadir: Path) -> dict[int, object]:
    return {line.serial: line for line in parse_inventory((cadir / "inventory.txt").read_bytes())}


def test_every_certificate_handed_out_right_before_a_power_cut_survives_it(
    ext4: tuple[Path, Path, str],
) -> None:
    """The power goes right after the last answer: every certificate an agent received is
    in signed/ as it received it, with its inventory line; the serial file is not below
    its value at the last sync (and the CA, reopened, carries on above the inventory)."""
    cadir, told = _enroll_then_cut_power(ext4, "cut-at-once")
    inventory = _inventory(cadir)
    for name, pem in told["handed"].items():
        assert (cadir / "signed" / f"{name}.pem").read_text() == pem, name
        assert x509.load_pem_x509_certificate(pem.encode()).serial_number in inventory, name
    assert int((cadir / "serial").read_bytes(), 16) >= told["serial_at_sync"]


def test_after_a_power_cut_the_serial_file_is_not_older_than_at_the_last_sync(
    ext4: tuple[Path, Path, str],
) -> None:
    """After a CRL refresh (which syncs the cadir directory) and a power cut, the serial
    file holds its value from before the cut, above every serial issued: puppetserver,
    which trusts that file alone, would reuse none. (A serial file recycled in place
    came back two values old here.)"""
    cadir, told = _enroll_then_cut_power(ext4, "then-crl")
    serial_file = int((cadir / "serial").read_bytes(), 16)
    assert serial_file >= told["serial_at_cut"]
    assert serial_file > max(_inventory(cadir))


# Issue a certificate and take a request, sync, then clean the certificate (revoke + delete)
# and delete the request, each answered; print when done.
_REMOVER = (
    _PROGRAM_HEAD
    + """
ca.submit_csr("cleaned.example.com", csr("cleaned.example.com"))
ca.sign("cleaned.example.com")
ca.submit_csr("rejected.example.com", csr("rejected.example.com"))
os.sync()
ca.clean(["cleaned.example.com"])
ca.delete_csr("rejected.example.com")
print(json.dumps({"done": True}), flush=True)
sys.stdin.read()  # still running when the power goes
"""
)


def test_a_clean_or_a_rejected_request_answered_before_a_power_cut_stays_done(
    ext4: tuple[Path, Path, str],
) -> None:
    """Removing signed/<name>.pem (clean) or requests/<name>.pem (DELETE certificate_request)
    was not synced: after a power cut the cleaned certificate was back in signed/ (served
    again, and the name could not enroll anew) and the rejected request back in requests/,
    pending, for the next 'sign --all' to sign. An answered removal survives the cut."""
    cadir, _ = _run_then_cut_power(ext4, _REMOVER, autosign=False)
    assert not (cadir / "signed" / "cleaned.example.com.pem").exists()
    assert not (cadir / "requests" / "rejected.example.com.pem").exists()
