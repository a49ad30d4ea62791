"""`splitca apache-config`: what it renders, what it refuses, and that Apache accepts all of it."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import stat
from pathlib import Path

import click.testing
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca import pki
from splitca.authority import CertificateAuthority
from splitca.cli import cli
from splitca.errors import ConfigError
from splitca.split import apache

from .apache_harness import (
    Identity,
    apache_binary,
    issue,
    modules_dir,
    refused,
    render_master,
    require_module,
    start_apache,
    stop_apache,
    wsgi_python_home,  # noqa: F401
)
from .apache_harness import backend as backend
from .conftest import REPO, free_port, write_config

MODULES = ("ssl", "headers", "proxy", "proxy_http")

EXAMPLES = REPO / "apache"


def master(**kw: object) -> apache.MasterSite:
    values: dict[str, object] = {
        "server_name": "master1.example.com",
        "cert": Path("/etc/puppetlabs/puppet/ssl/certs/master1.example.com.pem"),
        "key": Path("/etc/puppetlabs/puppet/ssl/private_keys/master1.example.com.pem"),
        "ca_cert": Path("/etc/puppetlabs/puppet/ssl/certs/ca.pem"),
        "crl": Path("/etc/puppetlabs/puppet/ssl/crl.pem"),
    }
    values.update(kw)
    return apache.MasterSite(**values)  # type: ignore[arg-type]


def directives(text: str) -> list[str]:
    """Non-comment lines, stripped: what Apache reads."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


# --- what the compile-master vhost contains ---------------------------------------------------


def test_master_vhost_has_every_directive_the_split_ca_needs():
    lines = directives(apache.render(master()))
    for required in (
        "Listen 8140",
        "<VirtualHost *:8140>",
        "SSLEngine on",
        "SSLProtocol -all +TLSv1.2 +TLSv1.3",
        "SSLCertificateFile /etc/puppetlabs/puppet/ssl/certs/master1.example.com.pem",
        "SSLCertificateKeyFile /etc/puppetlabs/puppet/ssl/private_keys/master1.example.com.pem",
        "SSLCACertificateFile /etc/puppetlabs/puppet/ssl/certs/ca.pem",
        "SSLCARevocationFile /etc/puppetlabs/puppet/ssl/crl.pem",
        "SSLCARevocationCheck chain",
        "SSLVerifyClient require",
        "SSLVerifyDepth 1",
        "SSLOptions +StdEnvVars +ExportCertData",
        'RequestHeader set X-Client-Verify "%{SSL_CLIENT_VERIFY}s"',
        'RequestHeader set X-Client-DN "%{SSL_CLIENT_S_DN}s"',
        'RequestHeader set X-Client-Cert "expr=%{escape:%{SSL_CLIENT_CERT}}"',
        'ProxyPass "/" "http://127.0.0.1:18140/"',
    ):
        assert required in lines, required


def test_inbound_identity_headers_are_stripped_before_they_are_set():
    lines = directives(apache.render(master()))
    for name in ("X-Client-Verify", "X-Client-DN", "X-Client-Cert"):
        unset = lines.index(f"RequestHeader unset {name} early")
        assert unset < lines.index(
            next(ln for ln in lines if ln.startswith(f"RequestHeader set {name} "))
        )
        assert f"RequestHeader unset {name.replace('-', '_')} early" in lines


def test_puppet_ca_is_refused_by_default_and_proxied_with_ca_url():
    refused = apache.render(master())
    assert '<Location "/puppet-ca/">' in refused and "Require all denied" in refused
    proxied = directives(apache.render(master(ca_url="https://ca.example.com:8140")))
    ca_rule = 'ProxyPass "/puppet-ca/" "https://ca.example.com:8140/puppet-ca/" timeout=60'
    assert ca_rule in proxied
    # The CA's rule must come before the catch-all backend rule (first match wins).
    assert proxied.index(ca_rule) < proxied.index('ProxyPass "/" "http://127.0.0.1:18140/"')
    assert "SSLProxyVerify require" in proxied
    assert "SSLProxyCACertificateFile /etc/puppetlabs/puppet/ssl/certs/ca.pem" in proxied
    assert "Require all denied" not in proxied
    # The CA's certificate is checked against the CA's name, not the agent's Host header.
    assert "ProxyPreserveHost On" not in proxied


def test_passenger_backend_serves_the_rack_app():
    lines = directives(apache.render(master(backend="passenger", rack_root=Path("/srv/rack"))))
    assert "PassengerAppRoot /srv/rack" in lines
    assert "DocumentRoot /srv/rack/public" in lines
    assert not any(ln.startswith("ProxyPass ") for ln in lines)


def test_listen_on_one_address():
    lines = directives(apache.render(master(listen="10.0.0.5:8141")))
    assert "Listen 10.0.0.5:8141" in lines and "<VirtualHost 10.0.0.5:8141>" in lines


# --- refusing values that would break or inject into the config -------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cert", Path("/etc/my ssl/cert.pem"), "a space"),
        ("key", Path('/etc/ssl/"key.pem'), "double quote"),
        ("crl", Path("/etc/ssl/crl.pem\nSSLVerifyClient none"), "newline"),
        ("ca_cert", Path("/etc/${APACHE_RUN_DIR}/ca.pem"), "'$'"),
        ("ca_cert", Path("/etc/%{HOME}/ca.pem"), "'%'"),
        ("cert", Path("relative/cert.pem"), "absolute path"),
        ("rack_root", Path("/srv/rack>"), "'>'"),
        ("server_name", "master1 evil", "a space"),
        ("server_name", "master1\nSSLEngine off", "newline"),
        ("listen", "8140\nListen 80", "newline"),
        ("listen", "99999", "not 1-65535"),
        ("backend_url", "http://127.0.0.1:18140/ x", "a space"),
        ("backend_url", "ftp://127.0.0.1", "must start with"),
        ("backend_url", 'http://127.0.0.1:18140/"', "double quote"),
        ("backend_url", "http://user:pw@127.0.0.1:18140", "credentials"),
        ("ca_url", "http://ca.example.com:8140", "https://"),
        ("ca_url", "https://ca.example.com:8140/?x=1", "query"),
        ("verify_depth", 0, "1 to 10"),
        ("backend", "fastcgi", "one of"),
    ],
)
def test_unsafe_values_are_refused_with_a_clear_error(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        master(**{field: value})
    assert "--" + field.replace("_", "-") in str(info.value)


def test_cli_refuses_unsafe_values_and_writes_nothing(tmp_path):
    out = tmp_path / "site.conf"
    result = CliRunner().invoke(
        cli,
        ["apache-config", "--server-name", "m1", "--crl", "/etc/a b/crl.pem", "--output", str(out)],
    )
    assert result.exit_code == 2
    assert "--crl: '/etc/a b/crl.pem' contains a space" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_ca_site_refuses_root_and_odd_user_names():
    base = {
        "server_name": "ca.example.com",
        "cert": Path("/ca/server.pem"),
        "key": Path("/ca/server.key"),
        "ca_cert": Path("/ca/ca_crt.pem"),
        "splitca_config": Path("/etc/splitca/splitca.yaml"),
        "wsgi_script": Path("/opt/splitca/splitca.wsgi"),
    }
    with pytest.raises(ConfigError, match="refuses to run as root"):
        apache.CASite(**base, wsgi_user="root")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="plain user"):
        apache.CASite(**base, wsgi_user="puppet user")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="path separator"):
        apache.CASite(**base, python_path=(Path("/a:/b"),))  # type: ignore[arg-type]


def test_output_file_is_written_atomically_with_mode_0644(tmp_path):
    out = tmp_path / "site.conf"
    out.write_text("old")
    out.chmod(0o600)
    result = CliRunner().invoke(
        cli, ["apache-config", "--server-name", "m1", "--verify-depth", "1", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert "SSLVerifyClient require" in out.read_text()
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_ca_site_defaults_come_from_the_splitca_config(tmp_path, settings, ca):
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "apache-config",
            "--site",
            "ca",
            "--wsgi-user",
            "puppet",
            "--python-home",
            "/opt/splitca",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = directives(result.output)
    assert f"SSLCertificateFile {settings.effective_server_cert}" in lines
    assert f"SSLCACertificateFile {settings.cadir / 'ca_crt.pem'}" in lines
    assert f"SetEnv SPLITCA_CONFIG {config}" in lines
    assert "SSLVerifyClient optional" in lines
    assert "WSGIScriptAlias / " + str(apache.wsgi_script_path()) in lines
    assert "user=puppet" in result.output and "python-home=/opt/splitca" in result.output


def test_ca_site_with_a_root_owned_cadir_asks_for_a_wsgi_user(tmp_path, settings, ca):
    config = write_config(tmp_path / "splitca.yaml", settings)
    if settings.cadir.stat().st_uid != 0:
        pytest.skip("needs a root-owned cadir (the tests run as root in CI)")
    result = CliRunner().invoke(cli, ["--config", str(config), "apache-config", "--site", "ca"])
    assert result.exit_code == 2
    assert "mod_wsgi refuses to run as root" in result.output


# --- the rendered examples never drift from the templates ---------------------------------------


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.conf")))
def test_shipped_examples_match_what_the_command_in_their_header_renders(example):
    text = (EXAMPLES / example).read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("# Generated by: "))
    argv = shlex.split(header.removeprefix("# Generated by: "))
    assert argv[:2] == ["splitca", "apache-config"]
    result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    assert result.stdout == text, f"apache/{example} is stale: re-run the command in its header"


def test_examples_cover_every_backend_and_both_sites():
    texts = [p.read_text() for p in EXAMPLES.glob("*.conf")]
    assert any("--backend proxy" in t and "--ca-url" not in t for t in texts)
    assert any("--backend proxy" in t and "--ca-url" in t for t in texts)
    assert any("--backend passenger" in t for t in texts)
    assert any("--site ca" in t for t in texts)


def _command_parses(argv: list[str]) -> None:
    assert argv[0].endswith("splitca"), argv
    result = CliRunner().invoke(cli, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output


def test_systemd_unit_and_cron_line_use_options_sync_crl_has():
    unit = (EXAMPLES / "splitca-sync-crl.service").read_text().replace("\\\n", " ")
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    _command_parses(shlex.split(exec_start.removeprefix("ExecStart=")))
    assert "SuccessExitStatus=10" in unit
    timer = (EXAMPLES / "splitca-sync-crl.timer").read_text()
    assert "OnUnitActiveSec=" in timer and "WantedBy=timers.target" in timer
    cron = (EXAMPLES / "splitca-sync-crl.cron").read_text()
    line = next(
        ln for ln in cron.splitlines() if ln and not ln.startswith("#") and "=" not in ln.split()[0]
    )
    fields = line.split(None, 6)
    assert fields[5] == "root"
    _command_parses(shlex.split(fields[6].replace(">/dev/null", "")))


def test_the_serve_unit_runs_a_command_serve_has():
    unit = (REPO / "deploy" / "splitca.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    _command_parses(argv)
    assert argv[-1] == "serve" and "RestartPreventExitStatus=2" in unit


# --- Apache's own config test accepts every variant ----------------------------------------------


@pytest.fixture
def master_files(ca: CertificateAuthority, tmp_path: Path) -> dict[str, Path]:
    ident = issue(ca, "master1.example.com", tmp_path / "ssl", alt_names=("puppet", "IP:127.0.0.1"))
    crl = tmp_path / "ssl" / "crl.pem"
    crl.write_bytes(ca.crl_pem())
    rack = tmp_path / "rack"
    (rack / "public").mkdir(parents=True)
    return {"cert": ident.cert, "key": ident.key, "ca": ident.cacert, "crl": crl, "rack": rack}


def check_master(files: dict[str, Path], crl: str | Path, *extra: str) -> click.testing.Result:
    """`splitca apache-config --check` of master1.example.com with *files*' identity."""
    return CliRunner().invoke(
        cli,
        [
            "apache-config",
            "--server-name", "master1.example.com",
            "--cert", str(files["cert"]),
            "--key", str(files["key"]),
            "--ca-cert", str(files["ca"]),
            "--crl", str(crl),
            "--check",
            *extra,
        ],
    )  # fmt: skip


MASTER_VARIANTS = {
    "proxy": ["--backend", "proxy", "--backend-url", "http://127.0.0.1:18140"],
    "proxy-ca-url": ["--backend", "proxy", "--ca-url", "https://ca.example.com:8140"],
    "proxy-https-backend": ["--backend", "proxy", "--backend-url", "https://127.0.0.1:18141"],
    "proxy-on-address": ["--listen", "127.0.0.1:18140"],
    "passenger": ["--backend", "passenger"],
    "passenger-ca-url": ["--backend", "passenger", "--ca-url", "https://ca.example.com:8140/"],
}


@pytest.mark.interop
@pytest.mark.parametrize("variant", sorted(MASTER_VARIANTS))
def test_every_master_variant_passes_apache_config_test(variant, master_files, tmp_path):
    apache_binary()
    modules_dir()
    if "passenger" in variant:
        require_module("passenger")
    result = check_master(
        master_files,
        master_files["crl"],
        "--rack-root", str(master_files["rack"]),
        *MASTER_VARIANTS[variant],
        "--output", str(tmp_path / "site.conf"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "config test passed" in result.output


@pytest.mark.interop
def test_ca_site_passes_apache_config_test(tmp_path, settings, ca, wsgi_python_home):  # noqa: F811
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(
        cli,
        [
            "--config", str(config),
            "apache-config", "--site", "ca",
            "--wsgi-user", "nobody",
            "--python-home", str(wsgi_python_home),
            "--check",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "config test passed" in result.output


@pytest.mark.interop
def test_check_reports_apaches_own_error(master_files):
    apache_binary()
    modules_dir()
    result = check_master(master_files, "/nonexistent/crl.pem")
    assert result.exit_code == 2
    assert "Apache's config test failed" in result.output
    assert "/nonexistent/crl.pem" in result.output
    assert "Traceback" not in result.output


def _bad_crl(case: str, ca: CertificateAuthority) -> bytes:
    """A CRL file `apache2 -t` accepts but mod_ssl cannot use once Apache starts."""
    now = dt.datetime.now(dt.UTC)
    key = serialization.load_pem_private_key((ca.settings.cadir / "ca_key.pem").read_bytes(), None)
    signer: tuple[object, x509.Certificate] = (key, ca.ca_certificate())
    if case == "other-ca":
        other = pki.generate_private_key("rsa", rsa_bits=2048)
        signer = (other, pki.build_ca_certificate(other, "Other CA", now=now, ttl=dt.timedelta(1)))
    this = now - dt.timedelta(days=9 if case == "expired" else 0, minutes=1)
    crl = pki.pem(
        pki.build_crl(
            ca_key=signer[0],  # type: ignore[arg-type]
            ca_cert=signer[1],
            entries=[],
            number=3,
            this_update=this,
            next_update=this + dt.timedelta(days=7),
        )
    )
    return {
        "garbage": b"<html>Service Unavailable</html>\n",
        "certificate": ca.ca_certificate_pem(),
        "indented": b"  " + crl,
    }.get(case, crl)


@pytest.mark.interop
@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("garbage", "Apache would not start"),
        ("indented", "Apache would not start"),
        ("certificate", "CRL rejected (parse)"),
        ("expired", "CRL rejected (expired)"),
        ("other-ca", "CRL rejected (issuer)"),
    ],
)
def test_check_refuses_a_crl_file_mod_ssl_cannot_use(case, why, master_files, ca, tmp_path):
    """`apache2 -t` does not load the CRL (mod_ssl reads it only when Apache starts):
    --check does, and says what would happen, writing nothing."""
    apache_binary()
    modules_dir()
    master_files["crl"].write_bytes(_bad_crl(case, ca))
    out = tmp_path / "site.conf"
    result = check_master(master_files, master_files["crl"], "--output", str(out))
    assert result.exit_code == 2, result.output
    assert f"--crl: {master_files['crl']}" in result.output and why in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.interop
def test_what_check_refuses_breaks_a_real_apache(master_files, ca, backend):
    """Why --check loads the CRL: with a file it cannot load, Apache exits at start; with
    one that holds no CRL, it starts and refuses every agent."""
    agent = issue(ca, "agent1.example.com", master_files["crl"].parent / "agent")
    ident = Identity(
        "m", master_files["cert"], master_files["key"], master_files["ca"], agent.certificate
    )
    port = free_port()
    master_files["crl"].write_bytes(_bad_crl("garbage", ca))
    with pytest.raises(RuntimeError, match=r"unable to configure X\.509 CRL storage"):
        start_apache(render_master(ident, master_files["crl"], port, backend.url), port, MODULES)
    master_files["crl"].write_bytes(_bad_crl("certificate", ca))
    server = start_apache(
        render_master(ident, master_files["crl"], port, backend.url), port, MODULES
    )
    try:
        args = {"cacert": agent.cacert, "cert": agent.cert, "key": agent.key}
        assert refused(port, "/echo", **args)
        assert "unable to get certificate CRL" in server.log_text()
    finally:
        stop_apache(server)


# --- the reload sync-crl must use for the Apache a master site belongs to ----------------------


def _hint(output: str) -> list[str]:
    from splitca.cli.split import RELOAD_HINT

    line = next(ln for ln in output.splitlines() if ln.startswith(RELOAD_HINT))
    return shlex.split(line.removeprefix(RELOAD_HINT))


@pytest.mark.parametrize(
    ("output", "command", "pidfile"),
    [
        (
            "/etc/apache2/sites-available/puppet-master.conf",
            "apachectl graceful",
            "/var/run/apache2/apache2.pid",
        ),
        ("/etc/httpd/conf.d/puppet-master.conf", "apachectl graceful", "/run/httpd/httpd.pid"),
    ],
)
def test_the_system_apaches_reload_is_printed_for_a_site_in_its_config(output, command, pidfile):
    from splitca.cli.split import reload_hint

    hint = shlex.split(reload_hint(Path(output), None, None).split(": ", 1)[1])
    assert hint == ["--reload-command", command, "--apache-pidfile", pidfile]


def test_apache_conf_gives_that_apaches_exact_reload_and_pidfile(tmp_path):
    """For an Apache of its own (apache2 -f FILE), the reload and PidFile sync-crl must use
    are that Apache's, the PidFile as Apache itself reports it."""
    root = tmp_path / "httpd"
    root.mkdir()
    (root / "site.conf").write_text("")
    frame = apache.ServerFrame(
        server_root=root,
        run_dir=root / "run",
        error_log=root / "error.log",
        site_conf=root / "site.conf",
        modules_dir=modules_dir(),
        modules=("mpm_event", "unixd", "authz_core"),
    )
    (root / "run").mkdir()
    conf = root / "httpd.conf"
    conf.write_text(apache.render_server_config(frame))
    out = tmp_path / "site-out.conf"
    result = CliRunner().invoke(
        cli,
        ["apache-config", "--server-name", "m1", "--verify-depth", "1", "--output", str(out),
         "--apache-conf", str(conf), "--apache-bin", apache_binary()],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _hint(result.stderr) == [
        "--reload-command",
        shlex.join([apache_binary(), "-f", str(conf), "-k", "graceful"]),
        "--apache-pidfile",
        str(root / "run" / "httpd.pid"),
    ]
    assert "--reload-command" not in result.stdout + out.read_text()
    # An Apache that cannot tell its PidFile: an error, and nothing is written.
    broken = tmp_path / "broken.conf"
    broken.write_text("NoSuchDirective here\n")
    out.unlink()
    failed = CliRunner().invoke(
        cli,
        ["apache-config", "--server-name", "m1", "--output", str(out),
         "--apache-conf", str(broken), "--apache-bin", apache_binary()],
    )  # fmt: skip
    assert failed.exit_code == 2, failed.output
    assert "--apache-conf: Apache does not report a PidFile" in failed.output
    assert not out.exists()


def test_without_output_or_apache_conf_it_says_what_sync_crl_needs():
    result = CliRunner().invoke(
        cli, ["apache-config", "--server-name", "m1", "--verify-depth", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "--apache-conf" in result.stderr and "SSLVerifyClient" not in result.stderr
    assert "--apache-conf" not in result.stdout
