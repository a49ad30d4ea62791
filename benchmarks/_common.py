"""Shared benchmark plumbing: a bare keep-alive HTTPS client, a `splitca serve` runner, stats."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VAR = Path(os.environ.get("SPLITCA_BENCH_DIR", REPO / "var" / "bench"))


# --- numbers -------------------------------------------------------------------------------


def cached_rsa_keys(name: str, count: int) -> list[bytes]:
    """*count* RSA-2048 private keys (PKCS#8 PEM), generated once and kept in VAR/*name*."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = VAR / name
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        keys = [
            rsa.generate_private_key(65537, 2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            for _ in range(count)
        ]
        path.write_bytes(b"".join(keys))
    marker = b"-----END PRIVATE KEY-----\n"
    return [part + marker for part in path.read_bytes().split(marker) if part.strip()]


def percentile(values: Sequence[float], p: float) -> float:
    """The *p*-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def best_of(n: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run *fn* (which returns seconds) *n* times; return (median, all)."""
    runs = [fn() for _ in range(n)]
    return median(runs), runs


@dataclass
class Result:
    """One benchmark line: a figure, its unit, the target and the floor it compares to."""

    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    floor: float | None = None
    floor_name: str = ""
    ratio_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def ratio(self) -> float | None:
        if self.floor in (None, 0) or self.value == 0:
            return None
        assert self.floor is not None
        return self.value / self.floor

    def line(self) -> str:
        verdict = "" if self.ok is None else ("  PASS" if self.ok else "  MISS")
        text = f"{self.name:<48} {fmt(self.value)} {self.unit:<6}"
        if self.target:
            text += f" (target {self.target}){verdict}"
        r = self.ratio()
        if r is not None:
            text += f"\n{'':<50}= {r:.2f} x {self.floor_name} ({fmt(self.floor or 0)} {self.unit})"
            if self.ratio_note:
                text += f" {self.ratio_note}"
        return text


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:8.0f}"
    if v >= 1:
        return f"{v:8.2f}"
    return f"{v:8.4f}"


# --- a bare HTTP/1.1 keep-alive client over TLS (less client CPU than http.client) -----------


class HttpsConn:
    """One persistent TLS connection; ``request`` returns (status, body). Reads Content-Length
    and chunked bodies; the buffer is a bytearray with a read position (no quadratic copies)."""

    def __init__(
        self,
        port: int,
        cafile: Path,
        *,
        cert: tuple[Path, Path] | None = None,
        host: str = "127.0.0.1",
        timeout: float = 60,
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self._ctx, self._addr, self._timeout = ctx, (host, port), timeout
        self.sock: ssl.SSLSocket | None = None
        self.reconnects = 0  # times the server said "Connection: close" and we reconnected
        self._connect()

    def _connect(self) -> None:
        raw = socket.create_connection(self._addr, timeout=self._timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._addr[0])
        self.buf = bytearray()
        self.pos = 0

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        if self.pos and self.pos == len(self.buf):
            self.buf.clear()
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker, self.pos)) < 0:
            self._fill()
        out = bytes(self.buf[self.pos : i])
        self.pos = i + len(marker)
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._fill()
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, bytes]:
        """One request; a server's ``Connection: close`` is honoured, as agents do: the
        connection is closed and the next request opens a new one."""
        if self.sock is None:
            self._connect()
            self.reconnects += 1
        status, body, close = self._request(method, path, body, headers)
        if close:
            self.close()
        return status, body

    def _request(
        self, method: str, path: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> tuple[int, bytes, bool]:
        assert self.sock is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.sock.sendall(head.encode() + b"\r\n" + body)
        lines = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        chunked = close = False
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            key = k.strip().lower()
            if key == b"content-length":
                length = int(v)
            elif key == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif key == b"connection" and b"close" in v.lower():
                close = True
        if method == "HEAD" or status in (204, 304):
            return status, b"", close
        if not chunked:
            return status, self._take(length), close
        parts = []
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            parts.append(self._take(size))
            self._take(2)
            if size == 0:
                return status, b"".join(parts), close


# --- `splitca serve` as a real process ---------------------------------------------------------


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    cadir: Path
    log: Path
    ready_seconds: float

    @property
    def cacert(self) -> Path:
        return self.cadir / "ca_crt.pem"

    def pids(self) -> list[int]:
        """The supervisor and its worker processes."""
        out = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            out += [int(p) for p in children.split()]
        except OSError:
            pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, cadir: Path, **extra: Any) -> Path:
    raw: dict[str, Any] = {
        "cadir": str(cadir),
        "certname": "ca.bench",
        "dns_alt_names": ["puppet", "localhost", "IP:127.0.0.1"],
        "listen": "127.0.0.1",
        "log_level": "WARNING",
    }
    raw.update(extra)
    path.write_text(yaml.safe_dump(raw))
    return path


def splitca_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "splitca", "--config", str(config), *args]


def serve(config: Path, cadir: Path, *, timeout: float = 120, quiet: bool = True) -> Served:
    """Start `splitca serve` and wait for its ready line; time start-to-ready."""
    port = int(yaml.safe_load(config.read_text())["port"])
    log = config.with_suffix(".log")
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            splitca_cmd(config, *(["-q"] if quiet else []), "serve"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"splitca serve exited: {log.read_text(errors='replace')}")
        if b"CA ready at" in log.read_bytes():
            return Served(proc, port, cadir, log, time.perf_counter() - started)
        time.sleep(0.005)
    proc.kill()
    raise RuntimeError("splitca serve did not become ready")


def cpu_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by *pids*."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def rss_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from /proc."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def run_timed(cmd: Sequence[str], *, stdout: Any = subprocess.DEVNULL) -> float:
    """Wall-clock seconds of one command (which must succeed)."""
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=stdout, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)
