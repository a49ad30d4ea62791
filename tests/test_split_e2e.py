"""The split CA end to end: `splitca serve` or Apache+mod_wsgi as the CA, Apache compile masters,
`splitca sync-crl` between them, and the real Puppet 7 agent."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from splitca import compose
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.split import apache

from .apache_harness import (
    IS_ROOT,
    Apache,
    Identity,
    https_get,
    https_request,
    issue,
    owned_by_nobody,
    refused,
    render_master,
    require_debian_defaults,
    start_apache,
    stop_apache,
    unprivileged,
    wait_until,
    world_dir,
    wsgi_python_home,  # noqa: F401 - fixture
)
from .apache_harness import backend as backend
from .conftest import Server, make_settings, setup_ca, write_config

if TYPE_CHECKING:
    from splitca.config import Settings

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MASTER_MODULES = ("ssl", "headers", "proxy", "proxy_http")


def splitca(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def generate(config: Path, name: str, ssldir: Path, alt: str | None = None) -> Identity:
    """`splitca generate` on the CA, files in Puppet's ssldir layout (as for a compile master)."""
    args = ["generate", name, "--ssldir", str(ssldir), "--key-size", "2048"]
    if alt:
        args += ["--dns-alt-names", alt]
    out = splitca(config, *args)
    assert out.returncode == 0, out.stderr
    from cryptography import x509

    cert = ssldir / "certs" / f"{name}.pem"
    return Identity(
        name,
        cert,
        ssldir / "private_keys" / f"{name}.pem",
        ssldir / "certs" / "ca.pem",
        x509.load_pem_x509_certificate(cert.read_bytes()),
    )


def sync_crl(
    server_url: str, cacert: Path, crl: Path, apache_server: Apache
) -> subprocess.CompletedProcess[str]:
    """`splitca sync-crl` on the master, reloading the test's Apache."""
    return subprocess.run(
        [
            sys.executable, "-m", "splitca", "sync-crl",
            "--ca-url", server_url,
            "--ca-cert", str(cacert),
            "--dest", str(crl),
            "--reload-command", shlex.join(apache_server.graceful_command),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def start_master(master: Identity, crl: Path, backend_url: str) -> Apache:
    from .conftest import free_port

    port = free_port()
    return start_apache(render_master(master, crl, port, backend_url), port, MASTER_MODULES)


def gets_through(apache_server: Apache, who: Identity) -> bool:
    try:
        answer = https_get(
            apache_server.port, "/echo", cacert=who.cacert, cert=who.cert, key=who.key
        )
    except Exception:
        return False
    return answer.status == 200 and answer.json()["x-client-dn"] == f"CN={who.name}"


# --- acceptance 3: revocation reaches the compile master --------------------------------------------


def test_revoked_agent_is_refused_after_sync_while_others_get_through(
    settings, server_factory, backend, tmp_path
):
    setup_ca(settings)
    server: Server = server_factory(settings)
    master_ssl = tmp_path / "master1-ssl"
    master = generate(
        server.config, "master1.example.com", master_ssl, "puppet,master1.example.com,IP:127.0.0.1"
    )
    agent1 = generate(server.config, "agent1.example.com", tmp_path / "agent1-ssl")
    agent2 = generate(server.config, "agent2.example.com", tmp_path / "agent2-ssl")
    httpd = start_master(master, master_ssl / "crl.pem", backend.url)
    try:
        assert gets_through(httpd, agent1) and gets_through(httpd, agent2)

        revoked = splitca(server.config, "revoke", "agent1.example.com")
        assert revoked.returncode == 0, revoked.stderr
        # Apache still has the old CRL: the revocation is not enforced until sync-crl runs.
        assert gets_through(httpd, agent1)

        before = httpd.generations()
        synced = sync_crl(server.url, master.cacert, master_ssl / "crl.pem", httpd)
        assert synced.returncode == 10, synced.stdout + synced.stderr
        assert "Installed CRL number 1" in synced.stdout and "reloaded" in synced.stdout
        assert (master_ssl / "crl.pem").read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
        httpd.wait_generation(before)

        wait_until(
            lambda: refused(
                httpd.port, "/echo", cacert=agent1.cacert, cert=agent1.cert, key=agent1.key
            ),
            "agent1 refused",
        )
        assert gets_through(httpd, agent2)
        assert "revoked" in httpd.log_text()

        # Nothing new on the CA: exit 0 and no reload.
        generations = httpd.generations()
        again = sync_crl(server.url, master.cacert, master_ssl / "crl.pem", httpd)
        assert again.returncode == 0, again.stdout + again.stderr
        assert httpd.generations() == generations
    finally:
        stop_apache(httpd)


# --- acceptance 5: an expired CRL locks everyone out; refresh + sync lets them back in ---------------


def test_expired_crl_refuses_everyone_until_refresh_and_sync(tmp_path, server_factory, backend):
    settings = make_settings(tmp_path)  # crl_ttl 7d
    eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    compose.setup_ca(settings, clock=lambda: eight_days_ago)
    past = open_ca(settings, clock=lambda: eight_days_ago)
    master = issue(
        past, "master1.example.com", tmp_path / "master-ssl", alt_names=("IP:127.0.0.1",)
    )
    agent = issue(past, "agent1.example.com", tmp_path / "agent")
    past.close()
    crl = tmp_path / "master-ssl" / "crl.pem"
    crl.write_bytes(
        (settings.cadir / "ca_crl.pem").read_bytes()
    )  # as an unverifying cron copy would
    config = write_config(tmp_path / "splitca.yaml", settings)
    shown = splitca(config, "crl", "show", "--format", "json")
    assert '"seconds_to_next_update":-' in shown.stdout, shown.stdout

    httpd = start_master(master, crl, backend.url)
    try:
        assert refused(httpd.port, "/echo", cacert=agent.cacert, cert=agent.cert, key=agent.key)
        assert "CRL has expired" in httpd.log_text()

        refreshed = splitca(config, "crl", "refresh")
        assert refreshed.returncode == 0 and "Re-issued CRL number 1" in refreshed.stdout, (
            refreshed.stdout
        )
        server = server_factory(settings)
        before = httpd.generations()
        synced = sync_crl(server.url, master.cacert, crl, httpd)
        assert synced.returncode == 10, synced.stdout + synced.stderr
        httpd.wait_generation(before)
        wait_until(lambda: gets_through(httpd, agent), "agent gets through with a fresh CRL")
    finally:
        stop_apache(httpd)


# --- acceptance 6: the real Puppet 7 agent, CA on splitca serve, master behind Apache ------------------


def test_puppet_agent_bootstraps_from_the_ca_and_runs_against_the_apache_master(
    settings, server_factory, agent_factory, backend, tmp_path
):
    setup_ca(settings)
    server = server_factory(settings.replace(autosign=True))
    master_ssl = tmp_path / "master1-ssl"
    master = generate(server.config, "master1.example.com", master_ssl, "puppet,IP:127.0.0.1")
    httpd = start_master(master, master_ssl / "crl.pem", backend.url)
    try:
        agent = agent_factory("agent-split.example.com")
        run = agent.run(
            "agent", "--test",
            *agent.args(server.port, server="127.0.0.1", server_port=httpd.port),
            "--waitforcert", "0",
            "--no-report",
            timeout=180,
        )  # fmt: skip
        output = run.stdout + run.stderr
        # The certificate came from the CA (bootstrap), not from the master.
        assert agent.cert_path.exists(), output
        assert agent.cacert_path.read_bytes() == server.cacert.read_bytes()
        seen = [s for s in backend.seen if s.path.startswith("/puppet/v3/")]
        paths = "\n".join(s.path for s in seen)
        assert seen, output
        # Every request reached puppetserver's side with the agent's verified identity.
        for request in seen:
            assert request.header("X-Client-Verify") == "SUCCESS", request
            assert request.header("X-Client-DN") == "CN=agent-split.example.com", request
        assert any(
            s.path.startswith("/puppet/v3/catalog/agent-split.example.com?") for s in seen
        ), output + paths
        assert run.returncode in (0, 2), output
        assert "Applied catalog" in output, output
    finally:
        stop_apache(httpd)


# --- the CA itself under Apache + mod_wsgi -----------------------------------------------------------


def wsgi_ca_site(settings: Settings, config: Path, port: int, python_home: Path) -> str:
    """The CA's vhost for mod_wsgi, as `splitca apache-config --site ca` renders it."""
    script = next(python_home.glob("lib/python3*/site-packages/splitca/templates/splitca.wsgi"))
    args = [
        "--config", str(config),
        "apache-config", "--site", "ca",
        "--listen", f"127.0.0.1:{port}",
        "--python-home", str(python_home),
        "--wsgi-script", str(script),
    ]  # fmt: skip
    if IS_ROOT:
        user, group = unprivileged()
        args += ["--wsgi-user", user, "--wsgi-group", group]
        rendered = CliRunner().invoke(cli, args)
        assert rendered.exit_code == 0, rendered.output
        return rendered.output
    # Apache runs as us, and so does the daemon: no user= needed
    return apache.render(
        apache.CASite(
            server_name=settings.certname,
            listen=f"127.0.0.1:{port}",
            cert=settings.effective_server_cert,
            key=settings.effective_server_key,
            ca_cert=settings.cadir / "ca_crt.pem",
            splitca_config=config,
            wsgi_script=script,
            python_home=python_home,
        )
    )


def test_ca_under_mod_wsgi_serves_the_api_and_bootstraps_an_agent(wsgi_python_home, agent_factory):  # noqa: F811
    from .conftest import free_port

    root = world_dir("splitca-ca-")
    settings = make_settings(root, autosign=True)
    setup_ca(settings)
    config = write_config(root / "splitca.yaml", settings)
    port = free_port()
    text = wsgi_ca_site(settings, config, port, wsgi_python_home)
    with owned_by_nobody(root):
        httpd = start_apache(text, port, ("ssl", "headers", "env", "wsgi"))
        try:
            cacert = settings.cadir / "ca_crt.pem"
            got = https_get(port, "/puppet-ca/v1/certificate/ca", cacert=cacert)
            assert got.status == 200, got.body[:500] + httpd.log_text().encode()[-3000:]
            assert got.body == cacert.read_bytes()
            crl = https_get(port, "/puppet-ca/v1/certificate_revocation_list/ca", cacert=cacert)
            assert crl.status == 200 and crl.body == (settings.cadir / "ca_crl.pem").read_bytes()
            legacy = https_get(port, "/production/certificate/ca", cacert=cacert)
            assert legacy.status == 200 and legacy.body == cacert.read_bytes()
            missing = https_get(port, "/puppet-ca/v1/certificate/nobody.example.com", cacert=cacert)
            assert missing.status == 404

            agent = agent_factory("agent-wsgi.example.com")
            boot = agent.bootstrap(port)
            assert boot.returncode == 0, boot.stdout + boot.stderr + httpd.log_text()[-3000:]
            assert agent.cert_path.exists()
            assert (
                settings.cadir / "signed" / "agent-wsgi.example.com.pem"
            ).read_bytes() == agent.cert_path.read_bytes()
            # An admin (the CA host's own certificate carries pp_cli_auth) revokes through
            # Apache: mod_ssl hands the verified client certificate to the app.
            revoke = https_request(
                "PUT",
                port,
                "/puppet-ca/v1/certificate_status/agent-wsgi.example.com",
                cacert=cacert,
                cert=settings.effective_server_cert,
                key=settings.effective_server_key,
                headers={"Content-Type": "application/json"},
                body=b'{"desired_state": "revoked"}',
            )
            assert revoke.status == 204, revoke.body
            # The same request without a client certificate is forbidden.
            anonymous = https_request(
                "PUT",
                port,
                "/puppet-ca/v1/certificate_status/agent-wsgi.example.com",
                cacert=cacert,
                headers={"Content-Type": "application/json"},
                body=b'{"desired_state": "revoked"}',
            )
            assert anonymous.status == 403
            # Health for a load balancer, and the metrics, under mod_wsgi too.
            health = https_get(port, "/status/v1/simple", cacert=cacert)
            assert (health.status, health.body) == (200, b"running")
            metrics = https_request(
                "GET",
                port,
                "/metrics",
                cacert=cacert,
                cert=settings.effective_server_cert,
                key=settings.effective_server_key,
            )
            assert metrics.status == 200, metrics.body[:2000]
            values = {
                s.name: s.value
                for f in text_string_to_metric_families(metrics.body.decode())
                for s in f.samples
            }
            assert values["splitca_up"] == 1 and values["splitca_certificates_revoked"] == 1
            # The agent sees it on its next CRL download.
            agent.crl_path.unlink()
            again = agent.bootstrap(port)
            assert again.returncode != 0 and "is revoked" in again.stdout + again.stderr
        finally:
            stop_apache(httpd)
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(root)


# --- the CA side: a CRL that is due is re-issued before anyone can fetch it ----------------------------


def test_serve_reissues_a_due_crl_before_compile_masters_fetch_it(tmp_path, server_factory):
    settings = make_settings(tmp_path)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    compose.setup_ca(settings, clock=lambda: long_ago)  # its CRL expired 23 days ago
    server = server_factory(settings)
    master = tmp_path / "master"
    master.mkdir()
    (master / "ca.pem").write_bytes(server.cacert.read_bytes())
    synced = subprocess.run(
        [
            sys.executable, "-m", "splitca", "sync-crl",
            "--ca-url", server.url,
            "--ca-cert", str(master / "ca.pem"),
            "--dest", str(master / "crl.pem"),
            "--no-reload",
            "--format", "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert synced.returncode == 10, synced.stdout + synced.stderr
    assert '"crl_number":1' in synced.stdout
    next_update = dt.datetime.fromisoformat(synced.stdout.split('"next_update":"')[1].split('"')[0])
    assert next_update - dt.datetime.now(dt.UTC) > dt.timedelta(days=6)


# --- /puppet-ca/ on a compile master, forwarded to the CA (--ca-url) -----------------------------------


def test_master_forwards_puppet_ca_to_the_ca_over_verified_tls(
    settings, server_factory, backend, tmp_path
):
    from .conftest import free_port

    setup_ca(settings)
    server = server_factory(settings)
    master_ssl = tmp_path / "master1-ssl"
    master = generate(server.config, "master1.example.com", master_ssl, "IP:127.0.0.1")
    agent = generate(server.config, "agent1.example.com", tmp_path / "agent1-ssl")
    port = free_port()
    ca_url = f"https://localhost:{server.port}"  # the CA's certificate names localhost
    text = render_master(master, master_ssl / "crl.pem", port, backend.url, "--ca-url", ca_url)
    httpd = start_apache(text, port, MASTER_MODULES)
    try:
        kw = {"cacert": agent.cacert, "cert": agent.cert, "key": agent.key}
        got = https_get(port, "/puppet-ca/v1/certificate/ca", **kw)
        assert got.status == 200, httpd.log_text()[-3000:]
        assert got.body == server.cacert.read_bytes()
        crl = https_get(port, "/puppet-ca/v1/certificate_revocation_list/ca", **kw)
        assert crl.status == 200 and crl.body == (settings.cadir / "ca_crl.pem").read_bytes()
        assert not [s for s in backend.seen if s.path.startswith("/puppet-ca/")]
        # Everything else still goes to the backend.
        assert https_get(port, "/echo", **kw).json()["x-client-dn"] == "CN=agent1.example.com"
    finally:
        stop_apache(httpd)


# --- the CA under Apache as Debian ships it: mod_deflate gzips the CRL ---------------------------


def test_sync_crl_installs_the_crl_that_apache_mod_deflate_gzipped(wsgi_python_home, tmp_path):  # noqa: F811
    """Debian enables mod_deflate by default, and it compresses text/plain: the CA's CRL
    reaches sync-crl gzipped. sync-crl decodes it and installs the CRL itself, the first
    one and the one a revocation through the same Apache produced."""
    import gzip
    import shutil

    from .conftest import free_port

    require_debian_defaults()
    root = world_dir("splitca-ca-")
    settings = make_settings(root)
    setup_ca(settings)
    ca = open_ca(settings)
    issue(ca, "agent1.example.com", root / "agent1")
    ca.close()
    config = write_config(root / "splitca.yaml", settings)
    port = free_port()
    text = wsgi_ca_site(settings, config, port, wsgi_python_home)
    master = tmp_path / "master"
    master.mkdir()
    cacert = master / "ca.pem"
    cacert.write_bytes((settings.cadir / "ca_crt.pem").read_bytes())
    dest = master / "crl.pem"
    sync = [
        sys.executable, "-m", "splitca", "sync-crl",
        "--ca-url", f"https://127.0.0.1:{port}",
        "--ca-cert", str(cacert),
        "--dest", str(dest),
        "--no-reload",
    ]  # fmt: skip
    with owned_by_nobody(root):
        httpd = start_apache(text, port, ("ssl", "headers", "env", "wsgi"))
        try:
            # What any client that accepts gzip gets from this Apache (curl --compressed,
            # requests, sync-crl): the harness loads Debian's default modules as shipped.
            crl_path = "/puppet-ca/v1/certificate_revocation_list/ca"
            raw = https_get(port, crl_path, cacert=cacert, headers={"Accept-Encoding": "gzip"})
            assert raw.status == 200 and raw.headers.get("Content-Encoding") == "gzip", raw
            assert gzip.decompress(raw.body) == (settings.cadir / "ca_crl.pem").read_bytes()

            first = subprocess.run(sync, capture_output=True, text=True, timeout=120)
            assert first.returncode == 10, first.stdout + first.stderr
            assert "Installed CRL number 0" in first.stdout
            assert dest.read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()

            revoke = https_request(
                "PUT",
                port,
                "/puppet-ca/v1/certificate_status/agent1.example.com",
                cacert=cacert,
                cert=settings.effective_server_cert,
                key=settings.effective_server_key,
                headers={"Content-Type": "application/json"},
                body=b'{"desired_state": "revoked"}',
            )
            assert revoke.status == 204, revoke.body
            again = subprocess.run(sync, capture_output=True, text=True, timeout=120)
            assert again.returncode == 10, again.stdout + again.stderr
            assert "Installed CRL number 1" in again.stdout
            assert dest.read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
        finally:
            stop_apache(httpd)
    shutil.rmtree(root, ignore_errors=True)


# --- a reload is done only when the Apache that serves the vhost re-read it -------------------------


def _sync_args(server_url: str, cacert: Path, crl: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "splitca", "sync-crl",
        "--ca-url", server_url, "--ca-cert", str(cacert), "--dest", str(crl), *extra,
    ]  # fmt: skip


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=env
    )


def _stop_daemon(stopped: Apache) -> None:
    """Stop an Apache a reload command may have started in the background."""
    pidfile = stopped.root / "httpd.pid"
    if pidfile.exists():
        subprocess.run(
            [stopped.binary, "-f", str(stopped.conf), "-k", "stop"],
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: not pidfile.exists(), "the started Apache stopped")


def test_a_reload_that_would_start_a_stopped_apache_is_not_recorded(
    settings, server_factory, backend, tmp_path
):
    """The reload command of a *stopped* Apache (here `apache2 -k graceful`, which, like
    `apachectl graceful`, starts it) must not run: the CRL is installed, the reload stays
    pending (exit 9), and the next run, given the Apache that serves the vhost as
    `apache-config --apache-conf` prints it, reloads it although the CRL did not change."""
    from .conftest import free_port

    setup_ca(settings)
    server = server_factory(settings)
    master_ssl = tmp_path / "master1-ssl"
    master = generate(server.config, "master1.example.com", master_ssl, "IP:127.0.0.1")
    agent1 = generate(server.config, "agent1.example.com", tmp_path / "agent1-ssl")
    crl = master_ssl / "crl.pem"
    httpd = start_master(master, crl, backend.url)
    port = free_port()
    stopped = start_apache(f"Listen 127.0.0.1:{port}\n", port, ("ssl",))
    stopped.stop()  # configured, not running: the "system" Apache of the issue
    try:
        assert splitca(server.config, "revoke", "agent1.example.com").returncode == 0
        wrong = _sync_args(
            server.url, master.cacert, crl,
            "--reload-command", shlex.join(stopped.graceful_command),
            "--apache-pidfile", str(stopped.root / "httpd.pid"),
        )  # fmt: skip
        first = _run(wrong)
        assert first.returncode == 9, first.stdout + first.stderr
        assert "Apache is not running" in first.stderr and "still pending" in first.stderr
        assert crl.read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
        assert not (stopped.root / "httpd.pid").exists()  # it was not started
        assert gets_through(httpd, agent1)  # true: the serving Apache has the old CRL
        assert _run(wrong).returncode == 9  # still pending, still not started

        hint = CliRunner().invoke(
            cli,
            ["apache-config", "--server-name", "master1.example.com",
             "--apache-conf", str(httpd.conf), "--apache-bin", httpd.binary],
        )  # fmt: skip
        assert hint.exit_code == 0, hint.output
        from splitca.cli.split import RELOAD_HINT

        line = next(ln for ln in hint.stderr.splitlines() if ln.startswith(RELOAD_HINT))
        right = _sync_args(
            server.url, master.cacert, crl, *shlex.split(line.removeprefix(RELOAD_HINT))
        )
        before = httpd.generations()
        second = _run(right)
        assert second.returncode == 10, second.stdout + second.stderr
        assert "not loaded; reloaded" in second.stdout
        assert httpd.generations() > before  # confirmed before sync-crl answered
        wait_until(lambda: not gets_through(httpd, agent1), "agent1 refused")

        generations = httpd.generations()
        third = _run(right)
        assert third.returncode == 0 and httpd.generations() == generations, third.stdout

        forced = _run([*right, "--force-reload"])
        assert forced.returncode == 10, forced.stdout + forced.stderr
        assert "reloaded (--force-reload)" in forced.stdout
        assert httpd.generations() > generations
    finally:
        _stop_daemon(stopped)
        stop_apache(stopped)
        stop_apache(httpd)


def test_the_default_reload_never_starts_a_stopped_system_apache(
    settings, server_factory, tmp_path
):
    """`apachectl graceful` (the default) starts a stopped Apache and exits 0. Here a fake
    `apachectl` does just that to a stopped Apache of the test's own; sync-crl must not run
    it while the system Apache's PidFile names no running process."""
    from .conftest import free_port

    system = apache.system_apache()
    if system is None:
        pytest.skip("no system Apache configuration here")
    if system.pidfile.exists():
        pytest.skip(f"{system.pidfile} exists: the system Apache may be running")
    setup_ca(settings)
    server = server_factory(settings)
    master = tmp_path / "master"
    master.mkdir()
    (master / "ca.pem").write_bytes(server.cacert.read_bytes())
    port = free_port()
    stopped = start_apache(f"Listen 127.0.0.1:{port}\n", port, ("ssl",))
    stopped.stop()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apachectl"
    fake.write_text(f"#!/bin/sh\nexec {shlex.join(stopped.graceful_command)}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        result = _run(_sync_args(server.url, master / "ca.pem", master / "crl.pem"), env=env)
        assert result.returncode == 9, result.stdout + result.stderr
        assert f"--apache-pidfile {system.pidfile}" in result.stderr
        assert not (stopped.root / "httpd.pid").exists()  # the fake apachectl never ran
        assert (master / "crl.pem").read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
    finally:
        _stop_daemon(stopped)
        stop_apache(stopped)
