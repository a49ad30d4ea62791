"""The fast paths' building blocks: hand-encoded CRLs, CRL headers, group commit, cached file locks."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca import pki
from splitca.errors import LockTimeout, StoreError
from splitca.fs import FileLock
from splitca.pki import asn1
from splitca.store.files.batch import GroupCommit

from .conftest import openssl

NOW = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)

KEYS: dict[str, Callable[[], CertificateIssuerPrivateKeyTypes]] = {
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


def _reference_crl(
    key: CertificateIssuerPrivateKeyTypes,
    cert: x509.Certificate,
    entries: list[pki.Revocation],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """What cryptography's own builder makes of the same input."""
    revoked = []
    for e in entries:
        rb = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.date)
        if e.reason is not None and e.reason != x509.ReasonFlags.unspecified:
            rb = rb.add_extension(x509.CRLReason(e.reason), False)
        revoked.append(rb.build())
    aki = x509.AuthorityKeyIdentifier(pki.ca_key_identifier(cert), None, None)
    return x509.CertificateRevocationListBuilder(
        issuer_name=cert.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=[
            x509.Extension(x509.oid.ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(number)),
            x509.Extension(x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, aki),
        ],
        revoked_certificates=revoked,
    ).sign(key, pki.signing_hash(key))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("size", [0, 1, 300])
def test_hand_encoded_crl_is_what_cryptography_would_sign(
    kind: str, size: int, tmp_path: Path
) -> None:
    key = KEYS[kind]()
    cert = pki.build_ca_certificate(key, "Puppet CA: t", now=NOW, ttl=dt.timedelta(days=9000))
    flags = list(x509.ReasonFlags)
    entries = [
        pki.Revocation(i * 7919 + 2, NOW - dt.timedelta(seconds=i % 7), flags[i % len(flags)])
        for i in range(size)
    ]
    if size:
        entries += [pki.Revocation(2**159 - 1, NOW, None), pki.Revocation(128, NOW, None)]
    this_update, next_update = NOW - dt.timedelta(minutes=1), NOW + dt.timedelta(days=30 * 365)
    mine = pki.build_crl(
        ca_key=key,
        ca_cert=cert,
        entries=entries,
        number=2**70 + 5,
        this_update=this_update,
        next_update=next_update,
    )
    ref = _reference_crl(key, cert, entries, 2**70 + 5, this_update, next_update)
    assert mine.tbs_certlist_bytes == ref.tbs_certlist_bytes
    assert mine.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    assert [(r.serial_number, r.revocation_date_utc) for r in mine] == [
        (e.serial, e.date.replace(microsecond=0)) for e in entries
    ]
    assert pki.crl_number(mine) == 2**70 + 5
    # next_update in 2061: GeneralizedTime, read back by the header reader
    header = pki.crl_header(pki.pem(mine))
    assert header.issuer == cert.subject.public_bytes()
    assert header.this_update == this_update
    assert header.next_update == next_update
    (tmp_path / "crl.pem").write_bytes(pki.pem(mine))
    (tmp_path / "ca.pem").write_bytes(pki.pem(cert))
    out = openssl("crl", "-in", str(tmp_path / "crl.pem"), "-CAfile", str(tmp_path / "ca.pem"))
    assert out.returncode == 0, out.stderr
    assert b"verify OK" in out.stdout + out.stderr


def test_pem_of_der_matches_cryptography() -> None:
    key = KEYS["p256"]()
    cert = pki.build_ca_certificate(key, "Puppet CA: t", now=NOW, ttl=dt.timedelta(days=10))
    der = pki.build_crl_der(
        ca_key=key,
        ca_cert=cert,
        entries=[(5, NOW.timestamp(), 1)] * 40,
        number=1,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
    )
    assert pki.pem_crl(der) == pki.pem(x509.load_der_x509_crl(der))


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x02\x01\x01", b"\x30\x03\x02\x01\x01"],
)
def test_crl_header_refuses_junk(junk: bytes) -> None:
    with pytest.raises(ValueError):
        asn1.read_crl_header(junk)


def test_group_commit_batches_and_keeps_results_apart() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def commit(items: list[int]) -> list[int]:
        batches.append(list(items))
        gate.wait(5)
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(commit, max_batch=8)
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        results[i] = gc.submit(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # first leader is blocked in commit; the others queue up
    gate.set()
    for t in threads:
        t.join(10)
    assert results == {i: i * 10 for i in range(20)}
    assert sorted(i for b in batches for i in b) == list(range(20))
    assert all(len(b) <= 8 for b in batches)
    assert len(batches) < 20  # something was batched


def test_group_commit_failure_reaches_every_item_of_the_batch() -> None:
    def commit(items: list[int]) -> list[int]:
        raise StoreError("disk full")

    gc: GroupCommit[int, int] = GroupCommit(commit)
    with pytest.raises(StoreError, match="disk full"):
        gc.submit(1)
    gc2: GroupCommit[int, int] = GroupCommit(lambda items: [0] * (len(items) + 1))
    with pytest.raises(RuntimeError):
        gc2.submit(1)


def test_file_lock_excludes_threads_and_times_out(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", timeout=0.3)
    other = FileLock(tmp_path / "x.lock", timeout=0.3)
    inside = 0
    peak = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, peak
        for _ in range(50):
            with FileLock(tmp_path / "x.lock", timeout=10)():
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak == 1
    with lock(), pytest.raises(LockTimeout):  # noqa: SIM117 - nesting is the point
        with other():
            pass


def test_file_lock_excludes_other_processes_and_survives_replacement(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    lock = FileLock(path, timeout=0.2)
    with lock():
        pass  # the descriptor is now cached
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: hold the lock until told to stop
        try:
            with FileLock(path, timeout=5)():
                os.write(w, b"x")
                time.sleep(1.0)
        finally:
            os._exit(0)
    try:
        os.read(r, 1)
        with pytest.raises(LockTimeout), lock():
            pass
    finally:
        os.waitpid(pid, 0)
    with lock():
        pass
    # the lock file is replaced behind our back: the new file is what counts
    path.unlink()
    path.write_bytes(b"")
    pid = os.fork()
    if pid == 0:
        try:
            with FileLock(path, timeout=5)():
                os.write(w, b"y")
                time.sleep(1.0)
        finally:
            os._exit(0)
    try:
        os.read(r, 1)
        with pytest.raises(LockTimeout), lock():
            pass
    finally:
        os.waitpid(pid, 0)
