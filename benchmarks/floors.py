"""Physical floors measured in the same run: raw signing rate, interpreter start, fsync, file creation, TLS round trip."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._common import median


def _sign_for(key_pem: bytes, seconds: float) -> int:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    tbs = os.urandom(1200)  # about the size of a leaf certificate's TBSCertificate
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        n += 1
    return n


def rsa_sign_rate(key_pem: bytes, *, seconds: float = 3.0, procs: int | None = None) -> float:
    """Raw signatures per second with `cryptography`, one process per core, all at once."""
    procs = procs or os.cpu_count() or 1
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        pool.starmap(_sign_for, [(key_pem, 0.2)] * procs)  # warm up
        started = time.perf_counter()
        counts = pool.starmap(_sign_for, [(key_pem, seconds)] * procs)
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed


def rsa_sign_seconds(key_pem: bytes, n: int = 20) -> float:
    """Median seconds for one raw signature on one core."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        key.sign(b"x" * 1200, padding.PKCS1v15(), hashes.SHA256())
        runs.append(time.perf_counter() - t)
    return median(runs)


def rsa_sign_cpu_seconds(key_pem: bytes, n: int = 40) -> float:
    """CPU seconds (this thread's, so other load does not count) for one raw signature."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    key.sign(b"x" * 1200, padding.PKCS1v15(), hashes.SHA256())  # warm up
    started = time.thread_time()
    for _ in range(n):
        key.sign(b"x" * 1200, padding.PKCS1v15(), hashes.SHA256())
    return (time.thread_time() - started) / n


def python_start(import_: str = "", n: int = 7) -> float:
    """Median seconds for `python -c 'import X'` (the floor of any CLI command)."""
    code = f"import {import_}" if import_ else "pass"
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        runs.append(time.perf_counter() - t)
    return median(runs)


def fsync_seconds(directory: Path, n: int = 50) -> float:
    """Median seconds of write(100 bytes)+fsync on the benchmark's filesystem."""
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        runs = []
        for _ in range(n):
            t = time.perf_counter()
            f.write(b"x" * 100)
            f.flush()
            os.fsync(f.fileno())
            runs.append(time.perf_counter() - t)
    return median(runs)


def file_create_cpu_seconds(directory: Path, n: int = 300) -> float:
    """CPU seconds to create a 1.6 KB file (``O_EXCL``, write, close) and rename it into
    another directory, as the CA does for each certificate, in a new *directory* left for
    the caller to remove.

    What the kernel spends here depends on the file system's state, not only on the
    hardware: ext4 without a journal skips every inode freed in the last seconds (minutes,
    while its table block is dirty) at each creation, so right after mass deletions this
    is several times its quiet value. Read the enrollment figures beside it.
    """
    staging, final = directory / "tmp", directory / "signed"
    staging.mkdir(parents=True)
    final.mkdir()
    data = b"x" * 1619
    started = time.thread_time()
    for i in range(n):
        fd = os.open(staging / f"c{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.rename(staging / f"c{i}", final / f"c{i}.pem")
    return (time.thread_time() - started) / n


def tls_transfer_seconds(nbytes: int, cert: Path, key: Path, cafile: Path) -> float:
    """Seconds to move *nbytes* over one loopback TLS connection, Python on both ends."""
    import socket
    import ssl
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    client_ctx.check_hostname = False
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    block = b"x" * (1 << 16)

    def send() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            left = nbytes
            while left > 0:
                tls.sendall(block[: min(left, len(block))])
                left -= len(block)

    sender = threading.Thread(target=send)
    sender.start()
    with client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as tls:
        tls.recv(1)
        started = time.perf_counter()
        got = 1
        while got < nbytes:
            chunk = tls.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        elapsed = time.perf_counter() - started
    sender.join()
    listener.close()
    return elapsed
