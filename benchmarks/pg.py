"""The PostgreSQL store under the benchmarks: enrollment on 1 and 3 replicas, statuses, list, revoke, CRL.

A real PostgreSQL (tests/pg_harness.py's: initdb in a temp dir, run as ``nobody`` on a
free loopback port, fsync and synchronous_commit on) is started for the run and removed
after it. The CAs are the file store's benchmark CAs moved in with ``splitca db import``:
the pristine RSA-4096 CA for enrollment, the 10k/100k cadirs of benchmarks/dataset.py
for the rest. Every replica is a real ``splitca serve`` process whose cadir holds only
this host's files (the CA key, the CA certificate's copy, the TLS identity). The file
store's enrollment rate and the raw signing floor are measured in the same run,
alternating with the PostgreSQL runs, and the figures are reported as ratios to both.
"""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import enroll, floors, ops
from ._common import (
    VAR,
    Result,
    Served,
    cpu_seconds,
    free_port,
    machine_busy,
    median,
    percentile,
    serve,
    splitca_cmd,
    write_config,
)
from .dataset import certname, ensure

if TYPE_CHECKING:  # the harness imports pytest; the checkout's tests/ is on the path
    from tests.pg_harness import PgServer


def available() -> bool:
    """Whether Debian's PostgreSQL server is installed (the benchmarks skip it otherwise)."""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb"))


@contextlib.contextmanager
def database_server() -> Iterator[PgServer]:
    """The tests' PostgreSQL harness: started here, stopped and removed at the end."""
    from tests.pg_harness import running_server

    with running_server() as server:
        yield server


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _postgres_pids(server: PgServer) -> list[int]:
    """The postmaster and its backends (a backend that exits early takes its CPU with it)."""
    assert server.proc is not None
    return [server.proc.pid, *_children(server.proc.pid)]


class Host:
    """One host's files for the PostgreSQL store (a copy of the pristine CA's cadir, whose
    key and TLS identity every dataset shares) and configs for its database."""

    def __init__(self, server: PgServer, name: str) -> None:
        self.server = server
        self.root = VAR / f"pg-{name}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.cadir = self.root / "ca"
        shutil.copytree(enroll.pristine_ca(), self.cadir)

    def config(self, db: str, name: str, **extra: Any) -> Path:
        return write_config(
            self.root / f"{name}.yaml",
            self.cadir,
            store=self.server.url(db),
            database_password_file=str(self.server.password_file),
            **extra,
        )

    def import_cadir(self, db: str, source: Path) -> tuple[float, dict[str, int]]:
        """``splitca db import SOURCE`` into *db*: (seconds, its counts)."""
        started = time.perf_counter()
        proc = subprocess.run(
            splitca_cmd(self.config(db, "import"), "db", "import", str(source), "--format", "json"),
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"db import failed: {proc.stderr.decode(errors='replace')}")
        return elapsed, dict(json.loads(proc.stdout))

    def serve(self, db: str, name: str, **extra: Any) -> Served:
        cfg = self.config(db, name, port=free_port(), **extra)
        return serve(cfg, self.cadir)


# --- enrollment -------------------------------------------------------------------------------


def _enroll_pg(
    host: Host, template: str, n: int, clients: int, replicas: int
) -> tuple[enroll.EnrollRun, dict[str, float]]:
    """*replicas* `splitca serve` on a fresh copy of *template*, *clients* keep-alive agents
    spread evenly over them, *n* enrollments (autosign): the run and its CPU figures."""
    db = host.server.new_database(template=template)
    # One replica: the file store's shape (a worker per CPU). Three: one worker each.
    workers = 0 if replicas == 1 else 1
    served: list[Served] = []
    try:
        for i in range(replicas):
            served.append(host.serve(db, f"replica{i}", autosign=True, workers=workers, threads=16))
        tag = f"{int(time.time())}-{replicas}"
        warm = [f"warm-{tag}-{i}.bench.example" for i in range(clients * 4)]
        names = [f"agent-{tag}-{i:06d}.bench.example" for i in range(n)]
        csrs = enroll.make_csrs(warm + names)
        _spread(served, warm, csrs[: len(warm)], clients)
        pids = [p for s in served for p in s.pids()]
        pg_pids = _postgres_pids(host.server)
        cpu0, pg0, busy0 = cpu_seconds(pids), cpu_seconds(pg_pids), machine_busy()
        run = _spread(served, names, csrs[len(warm) :], clients)
        cpu1, pg1, busy1 = cpu_seconds(pids), cpu_seconds(pg_pids), machine_busy()
    finally:
        for s in served:
            s.stop()
        host.server.drop_database(db)
    return run, {
        "server_s": (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1]),
        "postgres_s": (pg1[0] - pg0[0]) + (pg1[1] - pg0[1]),
        "machine_busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
    }


def _spread(
    served: list[Served], names: list[str], csrs: list[bytes], clients: int
) -> enroll.EnrollRun:
    """enroll.drive against every replica at once, names and clients dealt out evenly."""
    k = len(served)
    runs: list[enroll.EnrollRun | None] = [None] * k

    def one(i: int) -> None:
        per = clients // k + (1 if i < clients % k else 0)
        runs[i] = enroll.drive(served[i].port, served[i].cacert, names[i::k], csrs[i::k], per)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done = [r for r in runs if r is not None]
    if len(done) != k:
        raise RuntimeError("a client thread failed (its traceback is above)")
    return enroll.EnrollRun(
        sum(r.done for r in done),
        sum(r.errors for r in done),
        max(r.seconds for r in done),
        [x for r in done for x in r.latencies],
        sum(r.reconnects for r in done),
    )


def bench_enroll(
    server: PgServer, key_pem: bytes, n: int, clients: int, rounds: int
) -> list[Result]:
    """Alternating rounds of: file store, PostgreSQL with 1 replica, with 3 replicas; the
    signing floor before and after each round. Medians of the rates and of their ratios."""
    host = Host(server, "enroll")
    template = server.new_database()
    source = VAR / "pg-enroll-source" / "ca"
    shutil.rmtree(source.parent, ignore_errors=True)
    shutil.copytree(enroll.pristine_ca(), source)
    host.import_cadir(template, source)
    rates: dict[str, list[float]] = {"files": [], "pg1": [], "pg3": []}
    ratios: dict[str, list[float]] = {"pg1": [], "pg3": [], "floor1": [], "floor3": []}
    extra: dict[str, dict[str, object]] = {"pg1": {}, "pg3": {}}
    errors = 0
    file_ms: list[float] = []  # the file store's server CPU per enrollment
    for _ in range(rounds):
        floor_before = floors.rsa_sign_rate(key_pem, seconds=2)
        file_run, file_cpu = enroll.run(n=n, clients=clients)
        errors += file_run.errors
        rates["files"].append(file_run.rate)
        file_ms.append(
            (file_cpu["server_user_s"] + file_cpu["server_sys_s"]) / max(1, file_run.done) * 1000
        )
        for replicas in (1, 3):
            key = f"pg{replicas}"
            run, cpu = _enroll_pg(host, template, n, clients, replicas)
            errors += run.errors
            rates[key].append(run.rate)
            ratios[key].append(run.rate / file_run.rate if file_run.rate else 0.0)
            done = max(1, run.done)
            extra[key] = {
                "errors": run.errors,
                "p50_ms": round(percentile(run.latencies, 50) * 1000, 1),
                "p99_ms": round(percentile(run.latencies, 99) * 1000, 1),
                "replica_cpu_ms_per_enrollment": round(cpu["server_s"] / done * 1000, 2),
                "postgres_cpu_ms_per_enrollment": round(cpu["postgres_s"] / done * 1000, 2),
                "machine_busy_fraction": round(cpu["machine_busy"], 2),
            }
        floor = (floor_before + floors.rsa_sign_rate(key_pem, seconds=2)) / 2
        ratios["floor1"].append(rates["pg1"][-1] / floor)
        ratios["floor3"].append(rates["pg3"][-1] / floor)
    server.drop_database(template)
    out = [
        Result(
            f"file store enrollments/s ({clients} agents, same rounds)",
            median(rates["files"]),
            "/s",
            extra={
                "rates": [round(r, 1) for r in rates["files"]],
                "server_cpu_ms_per_enrollment": round(median(file_ms), 2),
            },
        )
    ]
    for replicas in (1, 3):
        key = f"pg{replicas}"
        ratio = median(ratios[key])
        out.append(
            Result(
                f"PostgreSQL enrollments/s, {replicas} replica{'s' if replicas > 1 else ''}",
                median(rates[key]),
                "/s",
                ">= 0.8x the file store" if replicas == 1 else "",
                (ratio >= 0.8 and errors == 0) if replicas == 1 else None,
                median(rates["files"]),
                "the file store",
                f"(median of per-round ratios {ratio:.2f})",
                {
                    **extra[key],
                    "rates": [round(r, 1) for r in rates[key]],
                    "ratio_to_file_store_per_round": [round(r, 2) for r in ratios[key]],
                    "ratio_to_signing_floor": round(median(ratios[f"floor{replicas}"]), 2),
                },
            )
        )
    return out


# --- 100k certificates: import, statuses, list, revoke, CRL -----------------------------------


def bench_large(server: PgServer, n: int, cli_floor: float, sign_s: float) -> list[Result]:
    """Import the n-certificate cadir, then statuses and list --all on it, then revoke 10k
    in one command (one CRL re-sign) and GET the CRL, on a copy of that database."""
    host = Host(server, f"large-{n}")
    k = f"{n // 1000}k"
    db = server.new_database()
    t_import, counts = host.import_cadir(db, ensure(n))
    out = [
        Result(
            f"db import of the {k} cadir",
            t_import,
            "s",
            extra={"certificates": counts["certificates"], "requests": counts["requests"]},
        )
    ]
    served = host.serve(db, "statuses")
    try:
        out += _named(ops.bench_statuses(served, n, 3), "PostgreSQL ")
    finally:
        served.stop()
    out += _named(
        ops.list_figures(host.config(db, "list"), n, cli_floor, 3, targets=False), "PostgreSQL "
    )
    work = server.new_database(template=db)  # the revoke writes; the imported one stays
    try:
        out += _bench_revoke(host, work, n, cli_floor, sign_s)
    finally:
        server.drop_database(work)
        server.drop_database(db)
    return out


def _named(results: list[Result], prefix: str) -> list[Result]:
    for r in results:
        r.name = prefix + r.name
    return results


def _bench_revoke(host: Host, db: str, n: int, cli_floor: float, sign_s: float) -> list[Result]:
    cfg = host.config(db, "revoke")
    names = [certname(i) for i in range(min(10_000, n))]
    label = f"PostgreSQL revoke {len(names) // 1000}k certs in one command ({n // 1000}k db)"
    out = [ops.revoke_in_one_command(label, cfg, names, cli_floor, sign_s)]
    served = host.serve(db, "crl")
    try:
        out += _named(
            ops.bench_crl_get(served, f"{len(names) // 1000}k entries", 300), "PostgreSQL "
        )
    finally:
        served.stop()
    return out


def run_all(
    key_pem: bytes,
    *,
    n_enroll: int,
    clients: list[int],
    rounds: int,
    big: int,
    cli_floor: float,
    sign_s: float,
    parts: set[str],
) -> Iterator[list[Result]]:
    """Every PostgreSQL benchmark in *parts* ("enroll", "large"), one result list at a time."""
    with database_server() as server:
        if "enroll" in parts:
            for c in clients:
                yield bench_enroll(server, key_pem, n_enroll, c, rounds)
        if "large" in parts:
            yield bench_large(server, big, cli_floor, sign_s)


__all__ = ["available", "bench_enroll", "bench_large", "run_all"]
