"""Large cadirs for the benchmarks: real, parseable certificates in puppetserver's layout.

The CA is a real RSA-4096 CA made by `splitca setup`; its key signs everything
the benchmarks time (enrollments, CRLs). The leaf certificates are built with
splitca's own profile (pki.build_leaf_certificate: same subject, SAN, extensions,
AKI = the CA's key id, RSA-2048 public keys) and written directly in parallel.
Signing 100k leaves with RSA-4096 takes ~45 minutes on this shared 2-core
machine, so by default (BENCH_REAL_SIGNATURES unset) leaves above 10k are signed
with an RSA-2048 stand-in key carrying the CA's name: their signatures do not
verify under the CA key and are 256 instead of 512 bytes, which nothing timed
looks at (the index parses certificates but never verifies them; list, status,
revoke and CRL work never read leaf signatures). The leaves' public keys come from
a pool of 64 keys. Generation is cached under var/bench/ (gitignored).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from splitca import pki
from splitca.store.files.cadir import format_serial, inventory_line

from ._common import VAR, cached_rsa_keys, splitca_cmd, write_config
from .enroll import pristine_ca

POOL = 64
PENDING = 1000
CHUNK = 500


def certname(i: int) -> str:
    return f"agent-{i:06d}.bench.example"


def _pool() -> list[bytes]:
    return cached_rsa_keys("leaf-pool.pem", POOL)


def _sign_chunk(args: tuple[Path, int, int, list[bytes], bool]) -> list[bytes]:
    """Issue certificates first..first+count-1 into signed/; return their inventory lines."""
    cadir, first, count, pool, real = args
    os.nice(10)  # a benchmark fixture: let interactive work on the machine go first
    if real:
        ca_key = pki.load_private_key((cadir / "ca_key.pem").read_bytes())
    else:
        ca_key = pki.load_private_key(pool[0])  # the RSA-2048 stand-in signer
    ca_cert = pki.load_certificates((cadir / "ca_crt.pem").read_bytes())[0]
    pubs = [pki.load_private_key(p).public_key() for p in pool]
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    lines = []
    for i in range(first, first + count):
        name = certname(i)
        now = base + dt.timedelta(seconds=i)
        not_after = now + dt.timedelta(days=5 * 365)
        cert = pki.build_leaf_certificate(
            ca_key=ca_key,
            ca_cert=ca_cert,
            public_key=pubs[i % len(pubs)],
            certname=name,
            serial=i + 2,
            not_before=now - dt.timedelta(days=1),
            not_after=not_after,
        )
        (cadir / "signed" / f"{name}.pem").write_bytes(pki.pem(cert))
        lines.append(
            inventory_line(
                i + 2,
                pki.puppet_time(cert.not_valid_before_utc),
                pki.puppet_time(cert.not_valid_after_utc),
                name,
            )
        )
    return lines


def _csr_chunk(args: tuple[Path, list[str], bytes]) -> None:
    cadir, names, key_pem = args
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    for name in names:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256())
        )
        (cadir / "requests" / f"{name}.pem").write_bytes(
            csr.public_bytes(serialization.Encoding.PEM)
        )


def _generate(n: int, root: Path) -> None:
    cadir = root / "ca"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(pristine_ca(), cadir)
    shutil.rmtree(cadir / ".splitca", ignore_errors=True)
    pool = _pool()
    real = n <= 10_000 or bool(os.environ.get("BENCH_REAL_SIGNATURES"))
    jobs = [(cadir, first, min(CHUNK, n - first), pool, real) for first in range(0, n, CHUNK)]
    signer = "the RSA-4096 CA key" if real else "an RSA-2048 stand-in key"
    print(f"  generating {n} certificates signed by {signer} in {cadir} ...", flush=True)
    with ProcessPoolExecutor(os.cpu_count() or 1) as ex:
        chunks = list(ex.map(_sign_chunk, jobs))
        pending = [f"pending-{i:05d}.bench.example" for i in range(PENDING)]
        list(
            ex.map(
                _csr_chunk,
                [(cadir, pending[k::POOL], pool[k]) for k in range(POOL)],
            )
        )
    with open(cadir / "inventory.txt", "ab") as inv:
        for lines in chunks:
            inv.write(b"".join(lines))
    (cadir / "serial").write_bytes(format_serial(n + 2))


def ensure(n: int) -> Path:
    """The cadir with *n* certificates (+ pending CSRs), generated once, with its index built."""
    root = VAR / f"cadir-{n}"
    done = root / "complete"
    if not done.exists():
        _generate(n, root)
        cfg = write_config(root / "bench.yaml", root / "ca")
        subprocess.run(splitca_cmd(cfg, "index", "rebuild"), check=True)
        done.write_text("ok\n")
    return root / "ca"


def working_copy(n: int, name: str) -> Path:
    """A disposable copy of the n-certificate cadir (index included) for benchmarks that write."""
    src = ensure(n)
    dest = VAR / f"work-{name}-{n}" / "ca"
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest
