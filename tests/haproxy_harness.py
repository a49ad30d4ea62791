"""A real HAProxy (Debian's) in TCP mode in front of several `splitca serve` replicas, on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import free_port, require_program

# The shipped example (deploy/haproxy.cfg) is what the tests run: only its addresses, check
# interval (fast, for tests) and a stats socket (to read backend states) are changed here.
SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"


def _config(stats: Path, port: int, backends: dict[str, int]) -> str:
    out: list[str] = []
    for line in SHIPPED.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("server "):
            continue
        if stripped.startswith("bind "):
            line = f"    bind 127.0.0.1:{port}"
        elif stripped.startswith("default-server "):
            line = line.replace("inter 2s fall 2 rise 2", "inter 300ms fall 2 rise 1")
        out.append(line)
        if stripped == "global":
            out.append(f"    stats socket {stats} mode 600 level admin")
        if stripped.startswith("default-server "):
            out.extend(f"    server {n} 127.0.0.1:{p}" for n, p in sorted(backends.items()))
    text = "\n".join(out) + "\n"
    assert "inter 300ms" in text and "127.0.0.1:" in text, "deploy/haproxy.cfg changed shape"
    return text


@dataclass
class HAProxy:
    """One HAProxy process; ``url`` is what agents and sync-crl are pointed at."""

    port: int
    config: Path
    stats: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        """Each backend server's state as HAProxy sees it (``UP``, ``DOWN``, ...)."""
        out = self._command("show stat")
        states: dict[str, str] = {}
        for line in out.splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "splitca" and cols[1] not in ("BACKEND", "FRONTEND"):
                states[cols[1]] = cols[17].split(" ")[0]
        return states

    def wait_up(self, names: set[str], timeout: float = 20) -> None:
        """Until exactly *names* are UP (health checks passed), or AssertionError."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states()
            if {n for n, s in states.items() if s == "UP"} == names:
                return
            time.sleep(0.1)
        raise AssertionError(f"HAProxy backends never became {sorted(names)} UP: {states}")

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_haproxy(root: Path, backends: dict[str, int]) -> HAProxy:
    """HAProxy on a free loopback port balancing over *backends* (name -> port)."""
    haproxy = require_program("haproxy")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    stats = root / "haproxy.sock"
    config = root / "haproxy.cfg"
    config.write_text(_config(stats, port, backends))
    check = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = root / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=out, stderr=out)
    lb = HAProxy(port, config, stats, proc, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            lb.states()
            return lb
        time.sleep(0.05)
    lb.stop()
    raise RuntimeError(f"haproxy did not start: {log.read_text(errors='replace')}")
