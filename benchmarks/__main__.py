"""Run every benchmark and print figures with their floors: ``python -m benchmarks [--quick]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cryptography
from cryptography.hazmat.backends.openssl import backend

from . import enroll, floors, ops, pg
from ._common import REPO, VAR, Result, banner, percentile

# OpenSSL's CPUID mask for AVX-512 IFMA (leaf 7 EBX bit 21): with it set, RSA runs on the
# code path of a CPU without IFMA, about 2.5x slower per signature (docs/performance.md).
IA32CAP = "OPENSSL_ia32cap"  # spelled so: OpenSSL reads this exact name
NO_IFMA = ":~0x200000"


def machine() -> dict[str, object]:
    cpu = "?"
    ifma = False
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "?":
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            ifma = ifma or "avx512ifma" in line.split()
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    fs = (
        subprocess.run(["df", "-T", str(VAR)], capture_output=True, text=True, check=False)
        .stdout.splitlines()[-1]
        .split()[1]
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "rsa_avx512_ifma": (
            "masked (OPENSSL_ia32cap)"
            if ifma and os.environ.get(IA32CAP)
            else ("yes" if ifma else "no (not in this CPU)")
        ),
        "filesystem": fs,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def _enroll_result(
    run: enroll.EnrollRun,
    extra: dict[str, float],
    floor_rate: float,
    sig_cpu: float,
    herd: int,
    clients: int,
    store_cpu: float,
) -> Result:
    """One enrollment run as a Result: its rate against the signing floor, its CPU against
    one signature's, its latencies."""
    done = max(1, run.done)
    cpu = extra["server_user_s"] + extra["server_sys_s"]
    per = cpu / done
    figures: dict[str, object] = {
        "clients": clients,
        "enrollments": run.done,
        "errors": run.errors,
        "reconnects_after_connection_close": run.reconnects,
        "p50_ms": round(percentile(run.latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(run.latencies, 99) * 1000, 1),
        "server_cpu_ms_per_enrollment": round(per * 1000, 2),
        "server_user_ms_per_enrollment": round(extra["server_user_s"] / done * 1000, 2),
        "server_sys_ms_per_enrollment": round(extra["server_sys_s"] / done * 1000, 2),
        "signature_cpu_ms": round(sig_cpu * 1000, 2),
        "server_cpu_per_enrollment_x_signature": round(per / sig_cpu, 2),
        "client_cpu_ms_per_enrollment": round(extra["client_cpu_s"] / done * 1000, 2),
        "machine_busy_fraction": round(extra["machine_busy"], 2),
    }
    http = extra.get("http_two_requests_cpu_s", 0.0)
    if http:
        # Where the CPU goes, each part against the signature: the HTTP floor (two requests
        # answered from memory by these workers), the store path in one thread (signature
        # included), and what is left: concurrency (GIL hand-offs, locks) and the request
        # handling between the two (reading the CSR body, routing to the store).
        rest = per - http - store_cpu
        figures |= {
            "http_floor_cpu_ms_two_requests": round(http * 1000, 2),
            "http_floor_x_signature": round(http / sig_cpu, 2),
            "store_path_one_thread_cpu_ms": round(store_cpu * 1000, 2),
            "store_path_x_signature": round(store_cpu / sig_cpu, 2),
            "rest_cpu_ms": round(rest * 1000, 2),
            "rest_x_signature": round(rest / sig_cpu, 2),
        }
    if herd:
        figures["seconds_until_all_enrolled"] = round(run.seconds, 1)
    ok = run.errors == 0 and per <= 2 * sig_cpu and percentile(run.latencies, 99) < 0.1
    return Result(
        "herd enrollments/s" if herd else "enrollments/s",
        run.rate,
        "/s",
        "CPU <= 2x one signature, p99 < 100 ms, no errors",
        ok,
        floor_rate,
        "raw RSA-4096 signing floor",
        "(all cores, before and after the run)",
        figures,
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer requests and runs, 10k only")
    ap.add_argument(
        "--only",
        default="floors,enroll,list,serve,statuses,revoke,rebuild,pg",
        help="comma-separated subset of: floors,enroll,list,serve,statuses,revoke,rebuild,"
        "pg (= pg-enroll,pg-large: the PostgreSQL store, benchmarks/pg.py)",
    )
    ap.add_argument("--certs", type=int, default=100_000, help="size of the large cadir")
    ap.add_argument("--enrollments", type=int, default=3000)
    ap.add_argument(
        "--clients", default="8,64", help="concurrent keep-alive agents; a list runs each"
    )
    ap.add_argument(
        "--herd",
        type=int,
        default=0,
        metavar="N",
        help="also enroll N agents arriving at once, each on a new TLS connection (e.g. 5000)",
    )
    ap.add_argument("--herd-pool", type=int, default=64, help="client threads serving the herd")
    ap.add_argument("--profile", action="store_true", help="py-spy the enrollment run")
    ap.add_argument(
        "--no-pg",
        action="store_true",
        help="with --only enroll: the file store only (no PostgreSQL rounds)",
    )
    ap.add_argument(
        "--no-ifma",
        action="store_true",
        help="run everything (floors and servers) with OpenSSL's AVX-512 IFMA RSA code masked,"
        " as on a CPU without it (sets OPENSSL_ia32cap and restarts)",
    )
    ap.add_argument(
        "--strace", action="store_true", help="count the workers' syscalls (strace -c -f)"
    )
    ap.add_argument(
        "--clean",
        action="store_true",
        help="remove the run trees earlier runs kept in var/bench, then exit (measure a few"
        " minutes later: mass deletions slow file creation for a while on ext4 without a journal)",
    )
    args = ap.parse_args()
    if args.no_ifma and os.environ.get(IA32CAP) != NO_IFMA:
        # OpenSSL reads the mask once, when it loads: start again with it in the environment
        # (the servers and floor processes inherit it).
        env = {**os.environ, IA32CAP: NO_IFMA}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], env)
    if args.clean:
        print(f"removed {enroll.clean()} kept run trees from {VAR}")
        return 0
    only = set(args.only.split(","))
    big = 10_000 if args.quick else args.certs
    sizes = [10_000] if args.quick else [10_000, big]
    runs = 3 if args.quick else 5
    VAR.mkdir(parents=True, exist_ok=True)
    # Installed packages ship bytecode; this checkout may not (PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "splitca")], check=True)
    info = machine()
    banner("machine")
    for k, v in info.items():
        print(f"  {k:<18} {v}")
    kept = enroll.kept_trees()
    if kept:
        print(f"  ({len(kept)} run trees of earlier runs kept in {VAR}: --clean removes them)")
    results: list[Result] = []

    def show(new: list[Result]) -> None:
        for r in new:
            print(r.line())
            for k, v in r.extra.items():
                print(f"{'':<50}  {k}: {v}")
        results.extend(new)
        sys.stdout.flush()

    key_pem = (enroll.pristine_ca() / "ca_key.pem").read_bytes()
    banner("floors (measured now, on this machine)")
    sign_rate = floors.rsa_sign_rate(key_pem, seconds=2 if args.quick else 4)
    sign_s = floors.rsa_sign_seconds(key_pem)
    py_floor = floors.python_start()
    cli_floor = floors.python_start("splitca.cli, splitca.cli.ca")
    server_floor = floors.python_start("splitca.http.server, splitca.cli.ca")
    fsync = floors.fsync_seconds(VAR)
    created = VAR / f"create-floor-{os.getpid()}"
    create_cpu = floors.file_create_cpu_seconds(created)
    enroll.set_aside(created)
    show(
        [
            Result("raw RSA-4096 signatures/s, all cores", sign_rate, "/s"),
            Result("one RSA-4096 signature, one core", sign_s * 1000, "ms"),
            Result("python -c pass", py_floor, "s"),
            Result("CLI start floor (import splitca.cli)", cli_floor, "s"),
            Result("server start floor (import splitca.http.server)", server_floor, "s"),
            Result("write+fsync of 100 bytes", fsync * 1000, "ms"),
            Result("create+rename of a 1.6 KB file, CPU time", create_cpu * 1e6, "us"),
        ]
    )

    if "enroll" in only:
        sig_cpu = floors.rsa_sign_cpu_seconds(key_pem)
        store_cpu = enroll.store_path_cpu(100 if args.quick else 300)
        show(
            [
                Result("one RSA-4096 signature, CPU time", sig_cpu * 1000, "ms"),
                Result(
                    "store path of one enrollment, one thread, CPU time",
                    store_cpu * 1000,
                    "ms",
                    floor=sig_cpu * 1000,
                    floor_name="one signature's CPU time",
                ),
            ]
        )
        n = 600 if args.quick else args.enrollments
        runs_wanted = [(int(c), 0, "") for c in str(args.clients).split(",")]
        if args.herd:
            # the herd twice: the default RSA-4096 TLS identity, then `server_key_type: ec`
            runs_wanted += [(args.herd_pool, args.herd, ""), (args.herd_pool, args.herd, "ec")]
        for clients, herd, server_key in runs_wanted:
            if herd:
                key_desc = "EC P-256" if server_key else "RSA-4096"
                banner(
                    f"thundering herd: {herd} agents at once, {clients} at a time, new TLS each, "
                    f"{key_desc} server key"
                )
            else:
                banner(f"enrollment: {clients} agents, PUT CSR + GET cert over TLS, autosign")
            prof = VAR / f"enroll-{clients}.pyspy" if args.profile and not herd else None
            trace = VAR / f"enroll-{clients}.strace" if args.strace and not herd else None
            run, extra = enroll.run(
                n=herd or n,
                clients=clients,
                profile=prof,
                strace=trace,
                herd_pool=clients if herd else 0,
                server_key_type=server_key,
            )
            sign_rate_after = floors.rsa_sign_rate(key_pem, seconds=2)
            floor_rate = (sign_rate + sign_rate_after) / 2
            sign_rate = sign_rate_after  # the next run's "before"
            result = _enroll_result(run, extra, floor_rate, sig_cpu, herd, clients, store_cpu)
            if server_key:
                result.name += f" ({server_key} server key)"
            show([result])

    if "list" in only:
        banner("CLI listing (index-backed)")
        for n in sizes:
            show(ops.bench_list(n, cli_floor, runs))

    for n in sizes:
        if "serve" in only or "statuses" in only:
            banner(f"serve at {n // 1000}k certificates")
            serve_results, served = ops.bench_serve(n, py_floor, server_floor)
            try:
                if "serve" in only:
                    show(serve_results)
                if "statuses" in only:
                    show(ops.bench_statuses(served, n, 2 if args.quick else 3))
                    mem = ops.memory_after(served)
                    print(f"{'':<50}  memory after serving the array: {mem}")
            finally:
                served.stop()

    if "revoke" in only:
        banner(f"revocation and CRL at {big // 1000}k certificates")

        def crl_get_10k(cadir: Path) -> list[Result]:
            s = ops.serve_cadir(cadir, "crl10k")
            try:
                return ops.bench_crl_get(s, "10k entries", 100 if args.quick else 300)
            finally:
                s.stop()

        rev, cadir = ops.bench_revoke_and_crl(big, cli_floor, sign_s, crl_get_10k)
        show(rev)
        s = ops.serve_cadir(cadir, "crlfull")
        try:
            show(ops.bench_crl_get(s, f"{big // 1000}k entries", 50 if args.quick else 200))
        finally:
            s.stop()

    if "rebuild" in only and not args.quick:
        banner("index")
        show([ops.bench_index_rebuild(big)])

    # `--only enroll` covers both stores: the PostgreSQL rounds (1 and 3 replicas) follow.
    pg_parts = {p for p in ("enroll", "large") if {"pg", f"pg-{p}"} & only}
    if "enroll" in only and not args.no_pg:
        pg_parts.add("enroll")
    if pg_parts:
        banner("PostgreSQL store: a real PostgreSQL on loopback (benchmarks/pg.py)")
        if not pg.available():
            print("  skipped: PostgreSQL is not installed (apt-get install postgresql)")
        else:
            for new in pg.run_all(
                key_pem,
                n_enroll=600 if args.quick else args.enrollments,
                clients=[int(c) for c in str(args.clients).split(",")],
                rounds=1 if args.quick or "enroll" in only else 3,
                big=big,
                cli_floor=cli_floor,
                sign_s=sign_s,
                parts=pg_parts,
            ):
                show(new)

    info["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    out = VAR / "results.json"
    out.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "machine": info,
                "results": [
                    {
                        "name": r.name,
                        "value": r.value,
                        "unit": r.unit,
                        "target": r.target,
                        "ok": r.ok,
                        "floor": r.floor,
                        "ratio": r.ratio(),
                        **r.extra,
                    }
                    for r in results
                ],
            },
            indent=2,
            default=str,
        )
    )
    banner("summary")
    for r in results:
        if r.ok is not None:
            print(
                f"  {'PASS' if r.ok else 'MISS'}  {r.name}: {r.value:.3g} {r.unit} (target {r.target})"
            )
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
