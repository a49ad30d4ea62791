"""Enrollment throughput and latency: N concurrent agents doing PUT CSR + GET cert over real TLS."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ._common import (
    VAR,
    HttpsConn,
    Served,
    cached_rsa_keys,
    cpu_seconds,
    free_port,
    machine_busy,
    serve,
    splitca_cmd,
    write_config,
)

CLIENT_KEYS = 16


def pristine_ca(key_size: int = 4096, server_key_type: str = "") -> Path:
    """A freshly set-up CA with an RSA-*key_size* key, made once and copied per run; with
    *server_key_type* ``ec``, the CA server's TLS identity is EC (``server_key_type``)."""
    root = (
        VAR / f"ca{key_size}{'-' + server_key_type + '-server' if server_key_type else ''}-pristine"
    )
    cadir = root / "ca"
    root.mkdir(parents=True, exist_ok=True)
    extra = {"server_key_type": server_key_type} if server_key_type else {}
    cfg = write_config(root / "setup.yaml", cadir, key_size=key_size, **extra)
    # Idempotent: creates the CA once, and re-issues only what a newer layout lacks.
    subprocess.run(splitca_cmd(cfg, "setup"), check=True, stdout=subprocess.DEVNULL)
    return cadir


def _client_keys() -> list[bytes]:
    return cached_rsa_keys("client-keys.pem", CLIENT_KEYS)


def _make_csrs(args: tuple[bytes, list[str]]) -> list[bytes]:
    key_pem, names = args
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    out = []
    for name in names:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256())
        )
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


def make_csrs(names: list[str]) -> list[bytes]:
    """Real RSA-2048 CSRs as agents send them, signed with a pool of pre-generated keys."""
    keys = _client_keys()
    chunks = [(keys[i % len(keys)], names[i :: len(keys)]) for i in range(len(keys))]
    with ProcessPoolExecutor(os.cpu_count() or 1) as ex:
        results = list(ex.map(_make_csrs, chunks))
    by_name: dict[str, bytes] = {}
    for (_, chunk_names), csrs in zip(chunks, results, strict=True):
        by_name.update(zip(chunk_names, csrs, strict=True))
    return [by_name[n] for n in names]


@dataclass
class EnrollRun:
    done: int
    errors: int
    seconds: float
    latencies: list[float]
    reconnects: int = 0  # new TLS connections because the server closed a kept-alive one

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def _enroll(conn: HttpsConn, name: str, csr: bytes) -> str | None:
    """One agent's enrollment on *conn*: PUT its CSR, GET its certificate; the error, if any."""
    try:
        s1, b1 = conn.request(
            "PUT",
            f"/puppet-ca/v1/certificate_request/{name}",
            csr,
            (("Content-Type", "text/plain"),),
        )
        s2, b2 = conn.request("GET", f"/puppet-ca/v1/certificate/{name}")
    except OSError as exc:
        return f"{name}: {exc}"
    if s1 != 200 or s2 != 200 or not b2.startswith(b"-----BEGIN CERTIFICATE"):
        return f"{name}: PUT {s1} {b1[:80]!r} GET {s2} {b2[:80]!r}"
    return None


def _run_threads(
    threads: int, count: int, enroll_one: Callable[[int, int], str | None]
) -> tuple[float, list[float], list[str]]:
    """*threads* threads take the enrollments 0..*count*-1 in turn, all starting at once;
    ``enroll_one(thread, i)`` does one. (seconds, latencies of the good ones, errors)."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        mine: list[float] = []
        start.wait()
        while True:
            with lock:
                i = next(counter)
            if i >= count:
                break
            t = time.perf_counter()
            error = enroll_one(k, i)
            if error is not None:
                errors.append(error)
            else:
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for th in workers:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in workers:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return elapsed, latencies, errors


def drive(
    port: int,
    cacert: Path,
    names: list[str],
    csrs: list[bytes],
    clients: int,
) -> EnrollRun:
    """*clients* threads, one keep-alive TLS connection each, enroll every name once."""
    conns = [HttpsConn(port, cacert) for _ in range(clients)]
    elapsed, latencies, errors = _run_threads(
        clients, len(names), lambda k, i: _enroll(conns[k], names[i], csrs[i])
    )
    for c in conns:
        c.close()
    done = len(names) - len(errors)
    return EnrollRun(done, len(errors), elapsed, latencies, sum(c.reconnects for c in conns))


def herd(port: int, cacert: Path, names: list[str], csrs: list[bytes], pool: int) -> EnrollRun:
    """A thundering herd: every agent arrives at once, but at most *pool* are served at a
    time (the client pool); each agent opens its own TLS connection (a full handshake),
    PUTs its CSR, GETs its certificate and hangs up, as a bootstrapping agent does."""

    def agent(k: int, i: int) -> str | None:
        try:
            conn = HttpsConn(port, cacert)
        except OSError as exc:
            return f"{names[i]}: {exc}"
        try:
            return _enroll(conn, names[i], csrs[i])
        finally:
            conn.close()

    elapsed, latencies, errors = _run_threads(pool, len(names), agent)
    return EnrollRun(len(names) - len(errors), len(errors), elapsed, latencies)


def run(
    *,
    n: int = 2000,
    clients: int = 8,
    workers: int = 0,
    threads: int = 16,
    key_size: int = 4096,
    profile: Path | None = None,
    strace: Path | None = None,
    herd_pool: int = 0,
    server_key_type: str = "",
) -> tuple[EnrollRun, dict[str, float]]:
    """Copy the pristine CA, serve it with autosign on, enroll *n* agents; return the run.

    With *herd_pool*, the *n* agents arrive as a herd (see :func:`herd`) through that
    many client threads, each agent on a new connection, instead of *clients*
    keep-alive connections."""
    src = pristine_ca(key_size, server_key_type)
    root = VAR / "enroll-run"
    set_aside(root)
    root.mkdir(parents=True)
    cadir = root / "ca"
    shutil.copytree(src, cadir)
    tag = f"{int(time.time())}"
    warm = [f"warm-{tag}-{i}.bench.example" for i in range(clients * 4)]
    names = [f"agent-{tag}-{i:06d}.bench.example" for i in range(n)]
    csrs = make_csrs(warm + names)
    port = free_port()
    cfg = write_config(
        root / "serve.yaml",
        cadir,
        port=port,
        autosign=True,
        workers=workers,
        threads=threads,
    )
    served = serve(cfg, cadir)
    try:
        drive(port, served.cacert, warm, csrs[: len(warm)], clients)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--subprocesses",
                    "--pid",
                    str(served.proc.pid),
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                    "--nonblocking",
                    "--rate",
                    os.environ.get("BENCH_SPY_RATE", "100"),
                    *(["--gil"] if os.environ.get("BENCH_SPY_GIL") else []),
                    *(["--idle"] if os.environ.get("BENCH_SPY_IDLE") else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        pids = served.pids()
        tracer = None
        if strace is not None:
            # syscall counts of the workers (not the supervisor) during the measured run
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-o", str(strace)]
                + [a for pid in pids[1:] for a in ("-p", str(pid))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        cpu0, busy0, me0 = cpu_seconds(pids), machine_busy(), os.times()
        if herd_pool:
            result = herd(port, served.cacert, names, csrs[len(warm) :], herd_pool)
        else:
            result = drive(port, served.cacert, names, csrs[len(warm) :], clients)
        cpu1, busy1, me1 = cpu_seconds(pids), machine_busy(), os.times()
        for attached in (spy, tracer):
            if attached is not None:
                attached.send_signal(2)
                attached.wait(60)
        # The HTTP floor of this server, measured right after on the same workers: two
        # requests as an enrollment has, but answered from memory (the CA certificate).
        http_floor = 0.0 if herd_pool else http_two_requests_cpu(served, clients, min(n, 1500))
    finally:
        served.stop()
    info: dict[str, float] = {
        "server_user_s": cpu1[0] - cpu0[0],
        "server_sys_s": cpu1[1] - cpu0[1],
        "client_cpu_s": (me1.user + me1.system) - (me0.user + me0.system),
        "machine_busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
        "http_two_requests_cpu_s": http_floor,
    }
    return result, info


def http_two_requests_cpu(served: Served, clients: int, n: int) -> float:
    """Server CPU seconds for two keep-alive GETs of the CA certificate over TLS (the
    requests of one enrollment without the store or a signature), *clients* at once."""
    conns = [HttpsConn(served.port, served.cacert) for _ in range(clients)]
    path = "/puppet-ca/v1/certificate/ca"

    def two(k: int, i: int) -> str | None:
        s1, _ = conns[k].request("GET", path)
        s2, _ = conns[k].request("GET", path)
        return None if s1 == s2 == 200 else f"GET {s1} {s2}"

    try:
        _run_threads(clients, min(n, 200), two)  # warm
        pids = served.pids()
        cpu0 = cpu_seconds(pids)
        _, _, errors = _run_threads(clients, n, two)
        cpu1 = cpu_seconds(pids)
    finally:
        for c in conns:
            c.close()
    if errors:
        raise RuntimeError(f"HTTP floor: {errors[0]}")
    return ((cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])) / n


def store_path_cpu(n: int = 300, key_size: int = 4096) -> float:
    """CPU seconds (this thread's) per enrollment of the store path alone, in this process,
    one thread: ``submit_csr`` with autosign, then the certificate read, as the PUT and
    GET do, on a fresh copy of the pristine CA; no HTTP, no TLS, no other thread."""
    from splitca.compose import open_ca
    from splitca.config import Settings

    root = VAR / "store-path-run"
    set_aside(root)
    root.mkdir(parents=True)
    cadir = root / "ca"
    shutil.copytree(pristine_ca(key_size), cadir)
    cfg = write_config(root / "c.yaml", cadir, port=free_port(), autosign=True)
    tag = f"{int(time.time())}"
    names = [f"store-{tag}-{i:05d}.bench.example" for i in range(n + 20)]
    csrs = make_csrs(names)
    ca = open_ca(Settings.load(cfg))

    def one(i: int) -> None:
        ca.submit_csr(names[i], csrs[i])
        if not ca.certificate_pem(names[i]):
            raise RuntimeError(f"no certificate for {names[i]}")

    for i in range(20):  # warm: first opens, the index, the key
        one(i)
    t0 = time.thread_time()
    for i in range(20, n + 20):
        one(i)
    return (time.thread_time() - t0) / n


_KEPT = 0


def set_aside(path: Path) -> None:
    """Move a tree aside (a previous run's, a floor's) and keep it: ``--clean`` removes them.

    Deleting thousands of files makes every file creation after it dearer for minutes on
    a file system without a journal (ext4 skips recently freed inodes, one by one): a
    benchmark that deleted its previous run's tree, at its start or its exit, measured the
    next run's file creations at up to six times their cost (the file-creation floor, 53
    then 303 then 340 us in three runs in a row). A run's tree is a few megabytes.
    """
    global _KEPT
    if not path.exists():
        return
    _KEPT += 1
    path.rename(path.with_name(f"{path.name}.old-{os.getpid()}-{_KEPT}"))


def kept_trees() -> list[Path]:
    """The trees earlier runs moved aside (see :func:`set_aside`)."""
    return sorted(VAR.glob("*.old-*"))


def clean() -> int:
    """Remove the kept trees; how many."""
    old = kept_trees()
    for tree in old:
        shutil.rmtree(tree, ignore_errors=True)
    return len(old)
