"""`splitca serve` as a process: TLS, access log, clean shutdown, worker supervision, the demo script."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Server, free_port, setup_ca

pytestmark = pytest.mark.slow


def session(cacert: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE must not decide what we trust
    s.verify = str(cacert)
    return s


def test_access_log_and_clean_sigterm(settings, server_factory) -> None:
    setup_ca(settings)
    server = server_factory(settings)
    with session(server.cacert) as s:
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/nobody", timeout=10).status_code == 404
    time.sleep(0.2)
    log = server.log_text()
    assert re.search(r'127\.0\.0\.1 - "GET /puppet-ca/v1/certificate/ca" 200 \d+ [\d.]+ms', log)
    assert re.search(r'"GET /puppet-ca/v1/certificate/nobody" 404', log)
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.log_text()


def test_client_certificate_is_optional_and_verified(
    settings, server_factory, tmp_path: Path
) -> None:
    """Agents connect without a certificate; a certificate from another CA fails the handshake."""
    import trustme

    setup_ca(settings)
    server = server_factory(settings)
    other = trustme.CA()
    stranger = other.issue_cert("stranger")
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    stranger.cert_chain_pems[0].write_to_path(str(cert))
    stranger.private_key_pem.write_to_path(str(key))
    with session(server.cacert) as s:
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
        s.cert = (str(cert), str(key))
        with pytest.raises(requests.exceptions.SSLError):
            s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10)
        s.cert = (str(settings.effective_server_cert), str(settings.effective_server_key))
        assert (
            s.get(f"{server.url}/puppet-ca/v1/certificate_statuses/all", timeout=10).status_code
            == 200
        )


def _live_children(pid: int) -> set[int]:
    """The processes whose parent is *pid*, without zombies (a killed worker is one until
    the supervisor reaps it)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=30)
    live = set()
    for child in out.stdout.split():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            live.add(int(child))
    return live


def _served_by(server: Server, pids: set[int]) -> int | None:
    """GET the CA certificate on a fresh TLS connection; which of *pids* holds the server
    end of it (the worker that accepted and answered), read from /proc."""
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = tls.recv(4096)
            assert chunk, f"connection closed before a response: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        # The connection is still open (keep-alive): find its server-side socket.
        want = (f"{server.port:04X}", f"{tls.getsockname()[1]:04X}")
        inodes = {
            f[9]
            for f in (ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:])
            if (f[1].split(":")[1], f[2].split(":")[1]) == want
        }
        assert len(inodes) == 1, inodes
        link = f"socket:[{inodes.pop()}]"
        for pid in pids:
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == link for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    return pid
        return None


def test_dead_worker_is_replaced(settings, server_factory) -> None:
    """A killed worker is replaced by a new process that serves requests; the other worker
    is left alone. Waits on those conditions (bounded), not on a pid count: a forked pid is
    not yet a listening worker, and one keep-alive connection shows only one worker."""
    setup_ca(settings)
    server = server_factory(settings, workers=2)
    supervisor = server.proc.pid
    original = _live_children(supervisor)  # both told the supervisor they listen
    assert len(original) == 2, original
    victim, survivor = sorted(original)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (now := _live_children(supervisor)) == original or len(now) < 2:
        assert time.monotonic() < deadline, f"worker not replaced:\n{server.log_text()}"
        assert server.proc.poll() is None, server.log_text()
        time.sleep(0.1)
    assert victim not in now and survivor in now and len(now) == 2, (original, now)
    (replacement,) = now - original
    # Fresh connections are spread over the workers' listening sockets (SO_REUSEPORT):
    # every one is answered, and the replacement answers some once it listens.
    answered = []
    while replacement not in answered:
        assert time.monotonic() < deadline, f"replacement never answered:\n{server.log_text()}"
        who = _served_by(server, now)
        assert who in now, (who, now)
        answered.append(who)
    assert _live_children(supervisor) == now  # nothing else died or was restarted
    assert re.search(
        rf"worker \d \(pid {victim}\) exited with status \d+; restarting", server.log_text()
    )
    assert server.stop() == 0


def _run_serve_sh(tmp_path: Path, port: int, log: Path) -> str:
    """Start scripts/serve.sh, wait for the CA, fetch its certificate, SIGTERM it; its log."""
    env = dict(
        os.environ,
        SPLITCA_VENV=sys.prefix,
        SPLITCA_DEMO_DIR=str(tmp_path / "demo"),
        SPLITCA_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "serve.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 180
        while "CA ready at" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        cacert = tmp_path / "demo" / "ca" / "ca_crt.pem"
        with session(cacert) as s:
            r = s.get(f"https://127.0.0.1:{port}/puppet-ca/v1/certificate/ca", timeout=10)
            assert r.status_code == 200 and r.content == cacert.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    return log.read_text()


def test_readme_serve_command_runs_a_demo_ca(tmp_path: Path) -> None:
    """scripts/serve.sh: creates the demo CA on first run and serves it; SIGTERM stops it.
    A restart with nothing changed reuses the CA and skips `pip install -e` (the venv's
    stamp of pyproject.toml matches)."""
    port = free_port()
    text = _run_serve_sh(tmp_path, port, tmp_path / "serve.log")
    assert "Created CA 'Puppet CA: localhost'" in text
    assert f"puppet ssl bootstrap --ca_server 127.0.0.1 --ca_port {port}" in text
    again = _run_serve_sh(tmp_path, port, tmp_path / "serve-again.log")
    assert "is up to date with pyproject.toml; not reinstalling" in again
    assert "Installing splitca" not in again and "Created CA" not in again


def test_many_agents_keep_their_connections(settings, server_factory) -> None:
    """More agents than cheroot's default keep-alive limit (10 per worker) each keep their
    TLS connection between requests: no "Connection: close", so no new handshake per request."""
    setup_ca(settings)
    server = server_factory(settings)
    ctx = ssl.create_default_context(cafile=str(server.cacert))
    ctx.check_hostname = False
    conns = []
    try:
        for _ in range(16):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conns.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
        for round_ in range(2):
            for i, tls in enumerate(conns):
                tls.sendall(b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = tls.recv(65536)
                    assert chunk, f"connection {i} closed in round {round_}"
                    head += chunk
                status_line, _, rest = head.partition(b"\r\n")
                assert b" 200 " in status_line
                headers = rest.split(b"\r\n\r\n", 1)[0].lower()
                assert b"connection: close" not in headers, (i, round_)
                length = int(re.search(rb"content-length: (\d+)", headers).group(1))  # type: ignore[union-attr]
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += tls.recv(65536)
    finally:
        for tls in conns:
            with contextlib.suppress(OSError):
                tls.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_stops_every_process_cleanly(settings, server_factory, workers: int) -> None:
    """SIGHUP (a closed terminal, an operator's `kill -HUP`) stops the server as SIGTERM
    does. It used to kill the process outright; with workers, only the supervisor died
    and its workers went on serving the port, orphaned."""
    setup_ca(settings)
    server = server_factory(settings, workers=workers)
    pids = {server.proc.pid} | _live_children(server.proc.pid)
    assert len(pids) == 1 + (workers if workers > 1 else 0), pids
    with session(server.cacert) as s:  # a keep-alive connection open across the signal
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
        code = server.stop(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while live := {p for p in pids if Path(f"/proc/{p}").exists()}:
        if time.monotonic() > deadline:
            for p in live:
                os.kill(p, signal.SIGKILL)
            pytest.fail(f"processes left running after SIGHUP: {live}")
        time.sleep(0.1)
    log = server.log_text()
    assert code == 0, log
    # a worker logs the signal it got: SIGHUP alone, or SIGTERM from its supervisor
    assert re.search(r"SIG(HUP|TERM): stopping after the requests in flight", log), log
    assert "Traceback" not in log


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_a_request_in_flight_finish(
    settings, server_factory, tmp_path: Path, workers: int
) -> None:
    """A CSR being signed when SIGTERM arrives is signed and answered. With workers, the
    worker process ended (os._exit) as soon as cheroot's serve() returned, which it does
    when stopping begins: the agent's connection was closed without an answer."""

    setup_ca(settings)
    started, release = tmp_path / "started", tmp_path / "release"
    policy = tmp_path / "policy.sh"  # holds the request in its thread until released
    policy.write_text(
        f"#!/bin/sh\ncat >/dev/null\ntouch {started}\n"
        f"for i in $(seq 100); do [ -e {release} ] && exit 0; sleep 0.1; done\nexit 1\n"
    )
    policy.chmod(0o755)
    server = server_factory(settings.replace(autosign=str(policy)), workers=workers)
    name = "inflight.example.com"
    answer: list[object] = []

    def put() -> None:
        try:
            answer.append(server.put_csr(name, timeout=30).status_code)
        except requests.RequestException as exc:
            answer.append(exc)

    client = threading.Thread(target=put)
    client.start()
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline and client.is_alive(), server.log_text()
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while "SIGTERM: stopping" not in server.log_text():  # the worker is stopping
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    # held past cheroot's selector wake-up (0.5 s), when serve() returns while stopping
    time.sleep(1.5)
    release.touch()
    client.join(30)
    assert answer == [200], (answer, server.log_text())
    assert (settings.cadir / "signed" / f"{name}.pem").exists()
    # it ends by itself after the first SIGTERM (another one, as server.stop() sends, could
    # reach it in the interpreter's shutdown, after its handlers are gone: killed, -15)
    assert server.proc.wait(30) == 0
    assert "Traceback" not in server.log_text()


def test_plain_http_on_the_https_port_is_answered_400(settings, server_factory) -> None:
    """`curl http://ca:8140/...` gets a 400 saying to use https://, as cheroot answers
    it; the handshake done outside cheroot's accept loop closed such a client silently."""
    setup_ca(settings)
    server = server_factory(settings)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /puppet-ca/v1/certificate/ca HTTP/1.1\r\nHost: ca\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert answer.endswith(b"use https://.\n"), answer
    with session(server.cacert) as s:  # TLS clients are served as before
        assert s.get(f"{server.url}/puppet-ca/v1/certificate/ca", timeout=10).status_code == 200
    assert "answered 400 and closed: plain HTTP on the HTTPS port" in server.log_text()
