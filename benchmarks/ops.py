"""Operator-side benchmarks at 10k/100k certificates: list, certificate_statuses, revoke, CRL, serve."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import floors
from ._common import (
    HttpsConn,
    Result,
    Served,
    free_port,
    median,
    percentile,
    rss_kb,
    serve,
    splitca_cmd,
    write_config,
)
from .dataset import certname, ensure, working_copy

PENDING_FLOOR_NOTE = "(interpreter start + importing splitca's CLI)"


def _cfg(cadir: Path, name: str, **extra: object) -> Path:
    return write_config(cadir.parent / f"{name}.yaml", cadir, **extra)


def _timed(cmd: list[str], runs: int) -> tuple[float, bytes]:
    """Median wall-clock seconds of *cmd* (stdout read through a pipe), and its last stdout."""
    times = []
    out = b""
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[3:]} failed: {proc.stderr.decode(errors='replace')}")
        out = proc.stdout
    return median(times), out


def bench_list(n: int, cli_floor: float, runs: int = 5) -> list[Result]:
    return list_figures(_cfg(ensure(n), "list"), n, cli_floor, runs)


def list_figures(
    cfg: Path, n: int, cli_floor: float, runs: int, *, targets: bool = True
) -> list[Result]:
    """`list --all` and `list --pending` (JSON) of the CA *cfg* names, against the CLI's
    start; *targets*: the file store's targets and its text listing too (the PostgreSQL
    benchmark compares its figures with the file store's instead)."""
    t_all, out = _timed(splitca_cmd(cfg, "list", "--all", "--format", "json"), runs)
    t_pending, out_p = _timed(splitca_cmd(cfg, "list", "--pending", "--format", "json"), runs)
    k = f"{n // 1000}k"
    big = targets and n >= 100_000
    results = [
        Result(
            f"list --all --format json, {k} certs",
            t_all,
            "s",
            "< 1 s" if big else "",
            (t_all < 1.0) if big else None,
            cli_floor,
            "CLI start floor",
            PENDING_FLOOR_NOTE,
            {"objects": len(json.loads(out)), "bytes": len(out)},
        ),
        Result(
            f"list --pending --format json, {k} certs",
            t_pending,
            "s",
            "< 0.2 s" if targets else "",
            (t_pending < 0.2) if targets else None,
            cli_floor,
            "CLI start floor",
            PENDING_FLOOR_NOTE,
            {"objects": len(json.loads(out_p))},
        ),
    ]
    if targets:
        t_text, _ = _timed(splitca_cmd(cfg, "list", "--all"), max(1, runs // 2))
        results.append(Result(f"list --all (text), {k} certs", t_text, "s"))
    return results


def _admin(cadir: Path) -> tuple[Path, Path]:
    return cadir / "server" / "cert.pem", cadir / "server" / "key.pem"


def _get_latency(
    conn: HttpsConn, path: str, n: int, headers: tuple[tuple[str, str], ...] = ()
) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = conn.request("GET", path, headers=headers)
        out.append(time.perf_counter() - t)
        assert status in (200, 304), status
    return out


def bench_statuses(served: Served, n: int, runs: int = 3) -> list[Result]:
    """certificate_statuses over TLS with the admin certificate; floor: the same bytes as a static file."""
    conn = HttpsConn(served.port, served.cacert, cert=_admin(served.cadir))
    times = []
    body = b""
    for _ in range(runs):
        t = time.perf_counter()
        status, body = conn.request("GET", "/puppet-ca/v1/certificate_statuses/any")
        times.append(time.perf_counter() - t)
        assert status == 200, status
    count = len(json.loads(body))
    t_signed = median(
        [
            _one(conn, "/puppet-ca/v1/certificate_statuses/any?state=signed")
            for _ in range(max(1, runs // 2))
        ]
    )
    conn.close()
    # Floor: moving the same bytes over one loopback TLS connection, Python on both ends.
    floor = floors.tls_transfer_seconds(
        len(body), *_admin(served.cadir), served.cadir / "ca_crt.pem"
    )
    k = f"{n // 1000}k"
    return [
        Result(
            f"GET certificate_statuses (all), {k} certs",
            median(times),
            "s",
            "< 2 s" if n >= 100_000 else "",
            (median(times) < 2.0) if n >= 100_000 else None,
            floor,
            "TLS transfer floor",
            f"(the same {len(body) / 1e6:.0f} MB over one loopback TLS connection)",
            {"objects": count, "bytes": len(body)},
        ),
        Result(f"GET certificate_statuses?state=signed, {k} certs", t_signed, "s"),
    ]


def _one(conn: HttpsConn, path: str) -> float:
    t = time.perf_counter()
    status, _ = conn.request("GET", path)
    assert status == 200, status
    return time.perf_counter() - t


def bench_crl_get(served: Served, label: str, requests: int = 300) -> list[Result]:
    """GET CRL latency on a keep-alive connection (full body, and the agents' conditional GET)."""
    conn = HttpsConn(served.port, served.cacert)
    path = "/puppet-ca/v1/certificate_revocation_list/ca"
    _get_latency(conn, path, 10)
    full = _get_latency(conn, path, requests)
    size = len(conn.request("GET", path)[1])
    since = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    cond = _get_latency(conn, path, requests, (("If-Modified-Since", since),))
    tiny = _get_latency(conn, "/puppet-ca/v1/certificate/ca", requests)
    conn.close()
    floor = median(tiny)
    cadir = served.cadir
    moving = median(
        [floors.tls_transfer_seconds(size, *_admin(cadir), cadir / "ca_crt.pem") for _ in range(5)]
    )
    return [
        Result(
            f"GET CRL p50, {label} ({size / 1e6:.2f} MB)",
            median(full) * 1000,
            "ms",
            "< 5 ms",
            median(full) < 0.005,
            floor * 1000,
            "GET of the CA cert",
            f"(p99 {percentile(full, 99) * 1000:.1f} ms)",
            {
                "tls_transfer_floor_ms": round(moving * 1000, 2),
                "ratio_to_transfer_floor": round(median(full) / moving, 2),
            },
        ),
        Result(
            f"GET CRL p50, If-Modified-Since (304), {label}",
            median(cond) * 1000,
            "ms",
            "",
            None,
            floor * 1000,
            "GET of the CA cert",
        ),
    ]


def crl_state(cfg: Path) -> dict[str, object]:
    """`splitca crl show --format json` of the CA in *cfg*."""
    out = subprocess.run(
        splitca_cmd(cfg, "crl", "show", "--format", "json"), check=True, capture_output=True
    ).stdout
    return dict(json.loads(out))


def revoke_in_one_command(
    label: str, cfg: Path, names: list[str], cli_floor: float, sign_s: float
) -> Result:
    """`splitca revoke NAMES` once: its time against the CLI start plus one signature, and
    the CRL re-signs it cost (the target: one)."""
    before = crl_state(cfg)
    started = time.perf_counter()
    subprocess.run(splitca_cmd(cfg, "-q", "revoke", *names), check=True, stdout=subprocess.DEVNULL)
    t_revoke = time.perf_counter() - started
    after = crl_state(cfg)
    resigns = int(after["crl_number"]) - int(before["crl_number"])  # type: ignore[call-overload]
    return Result(
        label,
        t_revoke,
        "s",
        "< 2 s, one CRL re-sign",
        t_revoke < 2.0 and resigns == 1,
        cli_floor + sign_s,
        "floor",
        "(CLI start + one RSA-4096 signature)",
        {
            "crl_resigns": resigns,
            "crl_entries": after["entries"],
            "signature_valid": after["signature_valid"],
        },
    )


def bench_revoke_and_crl(
    n: int,
    cli_floor: float,
    sign_s: float,
    after_10k: Callable[[Path], list[Result]] | None = None,
) -> tuple[list[Result], Path]:
    """Revoke 10k names in one command, then fill the CRL to ~n entries and time a forced refresh."""
    cadir = working_copy(n, "revoke")
    cfg = _cfg(cadir, "revoke")

    names = [certname(i) for i in range(10_000)]
    results = [
        revoke_in_one_command("revoke 10k certs in one command", cfg, names, cli_floor, sign_s)
    ]
    if after_10k is not None:
        results += after_10k(cadir)
    # Grow the CRL to every certificate (commands of 30k names: ARG_MAX), then refresh it.
    rest = [certname(i) for i in range(10_000, n)]
    for part in (rest[i : i + 30_000] for i in range(0, len(rest), 30_000)):
        subprocess.run(
            splitca_cmd(cfg, "-q", "revoke", *part), check=True, stdout=subprocess.DEVNULL
        )
    full = crl_state(cfg)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            splitca_cmd(cfg, "-q", "crl", "refresh", "--force"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
    refreshed = crl_state(cfg)
    verify = _openssl_verify(cadir)
    results.append(
        Result(
            f"crl refresh --force, {int(full['entries']) // 1000}k entries",  # type: ignore[call-overload]
            median(times),
            "s",
            "< 2 s",
            median(times) < 2.0,
            cli_floor + sign_s,
            "floor",
            "(CLI start + one RSA-4096 signature)",
            {
                "entries": refreshed["entries"],
                "crl_bytes": refreshed["bytes"],
                "openssl_verify": verify,
                "cryptography_signature_valid": refreshed["signature_valid"],
            },
        )
    )
    return results, cadir


def _openssl_verify(cadir: Path) -> bool:
    proc = subprocess.run(
        [
            "openssl",
            "crl",
            "-in",
            str(cadir / "ca_crl.pem"),
            "-CAfile",
            str(cadir / "ca_crt.pem"),
            "-noout",
        ],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0 and b"verify OK" in proc.stdout + proc.stderr


def serve_cadir(cadir: Path, name: str, **extra: object) -> Served:
    port = free_port()
    cfg = _cfg(cadir, name, port=port, **extra)
    return serve(cfg, cadir)


def bench_serve(n: int, py_floor: float, import_floor: float) -> tuple[list[Result], Served]:
    """Start-to-ready and memory of `splitca serve` on the n-certificate cadir."""
    cadir = ensure(n)
    readies = []
    for _ in range(2):
        s = serve_cadir(cadir, "serve-start")
        readies.append(s.ready_seconds)
        s.stop()
    served = serve_cadir(cadir, "serve")
    readies.append(served.ready_seconds)
    time.sleep(0.5)
    mem = [rss_kb(p) for p in served.pids()]
    rss_total = sum(r for r, _ in mem) / 1024
    pss_total = sum(p for _, p in mem) / 1024
    k = f"{n // 1000}k"
    return [
        Result(
            f"serve start to ready, {k} certs",
            median(readies),
            "s",
            "< 1 s",
            median(readies) < 1.0,
            import_floor,
            "floor",
            "(interpreter start + importing the server's modules)",
        ),
        Result(
            f"serve memory (PSS, all {len(mem)} processes), {k} certs",
            pss_total,
            "MB",
            "< 100 MB",
            pss_total < 100,
            extra={
                "rss_sum_mb": round(rss_total, 1),
                "rss_per_process_mb": [round(r / 1024, 1) for r, _ in mem],
            },
        ),
    ], served


def memory_after(served: Served) -> dict[str, object]:
    mem = [rss_kb(p) for p in served.pids()]
    return {
        "pss_total_mb": round(sum(p for _, p in mem) / 1024, 1),
        "rss_per_process_mb": [round(r / 1024, 1) for r, _ in mem],
    }


def bench_index_rebuild(n: int) -> Result:
    cadir = ensure(n)
    cfg = _cfg(cadir, "rebuild")
    started = time.perf_counter()
    subprocess.run(splitca_cmd(cfg, "index", "rebuild"), check=True, stdout=subprocess.DEVNULL)
    return Result(
        f"index rebuild from the files (cold), {n // 1000}k certs",
        time.perf_counter() - started,
        "s",
        "",
        None,
    )


def python_exe() -> str:
    return sys.executable
