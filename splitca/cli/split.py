"""Split-CA commands for compile masters and the CA's Apache: apache-config and sync-crl."""
# Over 400 lines because sync-crl and apache-config carry many options each; their logic lives in split/.

from __future__ import annotations

import dataclasses
import grp
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

import click
from cryptography.exceptions import InvalidSignature

from splitca import fs, pki
from splitca.split import apache
from splitca.split.crlsync import (
    CHECKS,
    DEFAULT_RELOAD_COMMAND,
    SyncConfig,
    SyncResult,
    check_crl_file,
    sync_once,
    watch,
)
from splitca.split.puppet import local_puppet

from ..clock import utcnow
from ..config import parse_duration
from ..errors import ConfigError, SplitCAError
from ._base import Ctx, Outcome, cli, echo_json, exit_code_for, finish, format_option, pass_ctx

log = logging.getLogger(__name__)

# Defaults that are Puppet's paths follow the installed agent (split/puppet.py): Puppet's
# packages use /etc/puppetlabs/puppet/ssl, Debian's /var/lib/puppet/ssl. Callables, so they are
# asked only when an option is left out (never for --help).
_PUPPET_HELP = "the local agent's, from 'puppet config print'"
MODULE_DIRS = (
    Path("/usr/lib/apache2/modules"),  # Debian, Ubuntu
    Path("/usr/lib64/httpd/modules"),  # RHEL, Fedora
    Path("/usr/lib/httpd/modules"),
    Path("/usr/libexec/apache2"),
)
APACHE_BINARIES = ("apache2", "httpd")


# --- apache-config ------------------------------------------------------------------------


def canonical_command(site: apache.MasterSite | apache.CASite) -> str:
    """The fully explicit command that renders *site* again, for the file's header."""
    args = [
        "splitca",
        "apache-config",
        "--site",
        "master" if isinstance(site, apache.MasterSite) else "ca",
    ]
    for f in dataclasses.fields(site):
        value = getattr(site, f.name)
        if f.name == "generated_by" or value is None or value == ():
            continue
        if isinstance(site, apache.MasterSite):
            if f.name == "backend_url" and site.backend != "proxy":
                continue
            if f.name == "rack_root" and site.backend != "passenger":
                continue
        for one in value if isinstance(value, tuple) else (value,):
            args += ["--" + f.name.replace("_", "-"), str(one)]
    return shlex.join(args)


def _depth_of(ca_cert: Path, given: int | None) -> int:
    """SSLVerifyDepth: as given, else the number of certificates in the CA bundle (>= 1)."""
    if given is not None:
        return given
    try:
        return max(1, len(pki.load_certificates(ca_cert.read_bytes())))
    except (OSError, ValueError):
        return 1


def _owner_of(path: Path) -> tuple[str, str]:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot stat the cadir {path}: {exc.strerror}") from None
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        raise ConfigError(
            f"the owner of {path} has no name; pass --wsgi-user/--wsgi-group"
        ) from None
    if st.st_uid == 0:
        raise ConfigError(
            f"{path} is owned by root, and mod_wsgi refuses to run as root: chown the cadir "
            "to a service user (for example puppet) or pass --wsgi-user and --wsgi-group"
        )
    return user, group


def _default_python_home() -> Path | None:
    """The virtualenv splitca runs from, if any: mod_wsgi then uses the same packages."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return None


def find_apache(given: str | None, *, option: str = "--check") -> str:
    for name in [given] if given else APACHE_BINARIES:
        assert name is not None
        found = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
        )
        if found:
            return found
    raise ConfigError(
        f"{option}: Apache not found ({given or ' or '.join(APACHE_BINARIES)}); pass --apache-bin"
    )


def find_modules_dir(given: Path | None) -> Path:
    for d in [given] if given else MODULE_DIRS:
        assert d is not None
        if (d / "mod_ssl.so").exists():
            return d
    raise ConfigError(
        "--check: no Apache modules directory with mod_ssl.so found; pass --modules-dir"
    )


def server_modules(site_modules: tuple[str, ...], modules_dir: Path) -> tuple[str, ...]:
    """The base modules present as files in *modules_dir*, then the site's own."""
    base = [m for m in apache.BASE_MODULES if (modules_dir / apache.module_file(m)).exists()]
    return tuple(dict.fromkeys([*base, *site_modules]))


def config_test(text: str, modules: tuple[str, ...], *, apache_bin: str, modules_dir: Path) -> str:
    """Run Apache's own config test (``-t``) on *text* inside a minimal server config.

    Returns Apache's output. Raises ConfigError with Apache's message if the test fails.
    """
    missing = [name for name in modules if not (modules_dir / apache.module_file(name)).exists()]
    if missing:
        raise ConfigError(
            f"--check: Apache module(s) {', '.join(missing)} not installed in {modules_dir}"
        )
    with tempfile.TemporaryDirectory(prefix="splitca-check-") as tmp:
        root = Path(tmp)
        site = root / "site.conf"
        site.write_text(text, encoding="utf-8")
        frame = apache.ServerFrame(
            server_root=root,
            run_dir=root,
            error_log=root / "error.log",
            site_conf=site,
            modules_dir=modules_dir,
            modules=server_modules(modules, modules_dir),
        )
        conf = root / "httpd.conf"
        conf.write_text(apache.render_server_config(frame), encoding="utf-8")
        try:
            proc = subprocess.run(
                [apache_bin, "-t", "-f", str(conf)],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"--check: could not run {apache_bin}: {exc}") from None
    output = (proc.stderr + proc.stdout).replace(str(site), "<rendered config>").strip()
    if proc.returncode != 0:
        raise ConfigError(f"Apache's config test failed: {' '.join(output.splitlines())}")
    return output


@cli.command(name="apache-config")
@click.option(
    "--site",
    type=click.Choice(["master", "ca"]),
    default="master",
    show_default=True,
    help="master: a compile master's vhost; ca: the CA under mod_wsgi.",
)
@click.option("--server-name", help="ServerName (default: this host's certname/FQDN).")
@click.option("--listen", default="8140", show_default=True, help="PORT or ADDRESS:PORT.")
@click.option(
    "--ssldir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: local_puppet().ssldir,
    show_default=_PUPPET_HELP,
    help="Puppet ssldir for the default --cert/--key/--ca-cert/--crl (master).",
)
@click.option("--certname", help="File name in the ssldir (default: --server-name).")
@click.option("--cert", type=click.Path(path_type=Path), help="This server's certificate.")
@click.option("--key", type=click.Path(path_type=Path), help="This server's private key.")
@click.option("--ca-cert", type=click.Path(path_type=Path), help="The Puppet CA certificate.")
@click.option(
    "--crl",
    type=click.Path(path_type=Path),
    help="The CRL file 'splitca sync-crl' keeps current (master; default SSLDIR/crl.pem).",
)
@click.option(
    "--verify-depth", type=int, help="SSLVerifyDepth (default: certificates in --ca-cert)."
)
@click.option(
    "--backend",
    type=click.Choice(list(apache.BACKENDS)),
    default="proxy",
    show_default=True,
    help="proxy: puppetserver behind Apache; passenger: the Rack puppetmaster.",
)
@click.option(
    "--backend-url",
    default="http://127.0.0.1:18140",
    show_default=True,
    help="puppetserver's URL for --backend proxy.",
)
@click.option(
    "--rack-root",
    type=click.Path(path_type=Path),
    default=lambda: local_puppet().rack_root,
    show_default="CONFDIR/rack, CONFDIR " + _PUPPET_HELP,
    help="Directory holding config.ru, for --backend passenger.",
)
@click.option(
    "--ca-url", help="Proxy /puppet-ca/ to this CA (https://HOST:PORT); default: refuse it."
)
@click.option(
    "--splitca-config",
    type=click.Path(path_type=Path),
    help="splitca config file for the app (ca; default: the --config given to splitca).",
)
@click.option("--wsgi-user", help="User of the mod_wsgi daemon (ca; default: the cadir's owner).")
@click.option("--wsgi-group", help="Group of the mod_wsgi daemon (ca; default: the cadir's group).")
@click.option(
    "--python-home",
    type=click.Path(path_type=Path),
    help="Virtualenv with splitca for mod_wsgi (ca; default: the one running this command).",
)
@click.option(
    "--python-path",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Extra directory on the app's sys.path (ca; repeatable).",
)
@click.option(
    "--wsgi-script",
    type=click.Path(path_type=Path),
    help="WSGI entry file (ca; default: the splitca.wsgi shipped with the package).",
)
@click.option(
    "--processes", type=int, default=2, show_default=True, help="mod_wsgi processes (ca)."
)
@click.option(
    "--threads", type=int, default=15, show_default=True, help="Threads per process (ca)."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (atomically) instead of stdout.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Run Apache's config test on the result first (master: and load --crl as mod_ssl "
    "does at start, which the config test does not).",
)
@click.option(
    "--apache-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server config (httpd.conf) of the Apache that includes this site, when it is "
    "not the system Apache: the reload printed for sync-crl is then this Apache's (master).",
)
@click.option(
    "--apache-bin", help="Apache binary for --check and --apache-conf (default: apache2 or httpd)."
)
@click.option(
    "--modules-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Apache modules directory for --check.",
)
@pass_ctx
def apache_config(
    c: Ctx,
    site: str,
    server_name: str | None,
    listen: str,
    ssldir: Path,
    certname: str | None,
    cert: Path | None,
    key: Path | None,
    ca_cert: Path | None,
    crl: Path | None,
    verify_depth: int | None,
    backend: str,
    backend_url: str,
    rack_root: Path,
    ca_url: str | None,
    splitca_config: Path | None,
    wsgi_user: str | None,
    wsgi_group: str | None,
    python_home: Path | None,
    python_path: tuple[Path, ...],
    wsgi_script: Path | None,
    processes: int,
    threads: int,
    output: Path | None,
    check: bool,
    apache_conf: Path | None,
    apache_bin: str | None,
    modules_dir: Path | None,
) -> None:
    """Render Apache 2.4 config for a compile master (default) or for the CA itself.

    \b
    Compile master (puppetserver on 127.0.0.1:18140 behind Apache):
      splitca apache-config --server-name master1.example.com \\
          --backend proxy --backend-url http://127.0.0.1:18140 \\
          --output /etc/apache2/sites-available/puppet-master.conf --check
    The CA under mod_wsgi:
      splitca --config /etc/splitca/splitca.yaml apache-config --site ca \\
          --server-name ca.example.com --output /etc/apache2/sites-available/puppet-ca.conf

    Values that could break or inject into the config (spaces, quotes, newlines,
    '$', '%') are refused. For a compile master it also prints (on stderr) how
    'splitca sync-crl' reloads the Apache this site belongs to: the system Apache's
    when --output is in its configuration, else the one --apache-conf names. See
    docs/split-ca.md for the whole deployment.
    """
    rendered: apache.MasterSite | apache.CASite
    if site == "master":
        name = server_name or _default_name()
        fname = certname or name
        ca_path = ca_cert or ssldir / "certs" / "ca.pem"
        rendered = apache.MasterSite(
            server_name=name,
            listen=listen,
            cert=cert or ssldir / "certs" / f"{fname}.pem",
            key=key or ssldir / "private_keys" / f"{fname}.pem",
            ca_cert=ca_path,
            crl=crl or ssldir / "crl.pem",
            verify_depth=_depth_of(ca_path, verify_depth),
            backend=backend,  # type: ignore[arg-type]
            backend_url=backend_url,
            rack_root=rack_root,
            ca_url=ca_url,
        )
    else:
        explicit = cert and key and ca_cert and server_name and (wsgi_user or wsgi_group)
        settings = None if explicit else c.settings
        config_path = splitca_config or c.config_path
        if config_path is None:
            raise ConfigError(
                "--site ca: the app needs a config file: give splitca --config FILE "
                "(or --splitca-config FILE)"
            )
        user, group = wsgi_user, wsgi_group
        if settings is not None:
            cert = cert or settings.effective_server_cert
            key = key or settings.effective_server_key
            ca_cert = ca_cert or settings.cadir / "ca_crt.pem"
            server_name = server_name or settings.certname
            if user is None and group is None:
                user, group = _owner_of(settings.cadir)
        assert cert is not None and key is not None and ca_cert is not None and server_name
        rendered = apache.CASite(
            server_name=server_name,
            listen=listen,
            cert=cert,
            key=key,
            ca_cert=ca_cert,
            verify_depth=_depth_of(ca_cert, verify_depth),
            splitca_config=config_path.absolute(),
            wsgi_script=wsgi_script or apache.wsgi_script_path(),
            wsgi_user=user,
            wsgi_group=group,
            python_home=python_home if python_home is not None else _default_python_home(),
            python_path=python_path,
            processes=processes,
            threads=threads,
        )
    rendered = dataclasses.replace(rendered, generated_by=canonical_command(rendered))
    text = apache.render(rendered)
    if check:
        config_test(
            text,
            rendered.modules,
            apache_bin=find_apache(apache_bin),
            modules_dir=find_modules_dir(modules_dir),
        )
        if isinstance(rendered, apache.MasterSite):  # what mod_ssl reads only at start
            check_crl_file(rendered.crl, rendered.ca_cert, now=utcnow())
        click.echo("Apache's config test passed.", err=True)
    hint = None
    if isinstance(rendered, apache.MasterSite):
        hint = reload_hint(output, apache_conf, apache_bin)  # before writing: it may fail
    if output is None:
        click.echo(text, nl=False)
    else:
        fs.atomic_write(output, text.encode("utf-8"), mode=0o644)
        click.echo(f"Wrote {output}", err=True)
    if hint:
        click.echo(hint, err=True)


RELOAD_HINT = "sync-crl reloads this Apache with: "


def reload_hint(output: Path | None, apache_conf: Path | None, apache_bin: str | None) -> str:
    """How sync-crl reloads the Apache a master site is for: ``--reload-command`` and
    ``--apache-pidfile``, exact for the system Apache or the one *apache_conf* names."""
    system = apache.system_apache(apache_conf or output) if (apache_conf or output) else None
    if apache_conf is not None and system is None:
        binary = find_apache(apache_bin, option="--apache-conf")
        command: tuple[str, ...] = (binary, "-f", str(apache_conf.absolute()), "-k", "graceful")
        pidfile = apache_pidfile_of(binary, apache_conf)
    elif system is not None:
        command, pidfile = system.reload_command, system.pidfile
    else:
        return (
            "sync-crl must reload the Apache that includes this site: run this again with "
            "--apache-conf (that Apache's httpd.conf) for its --reload-command and "
            "--apache-pidfile, or --output into the system Apache's configuration"
        )
    return f"{RELOAD_HINT}--reload-command {shlex.quote(shlex.join(command))} " + shlex.join(
        ["--apache-pidfile", str(pidfile)]
    )


def apache_pidfile_of(apache_bin: str, conf: Path) -> Path:
    """The PidFile of the Apache run with ``-f conf``, as Apache itself reports it."""
    try:
        proc = subprocess.run(
            [apache_bin, "-f", str(conf.absolute()), "-t", "-D", "DUMP_RUN_CFG"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--apache-conf: could not run {apache_bin}: {exc}") from None
    for line in proc.stdout.splitlines():
        if line.startswith("PidFile: "):
            return Path(line.split(": ", 1)[1].strip().strip('"'))
    output = " ".join((proc.stderr + proc.stdout).split())[:300]
    raise ConfigError(f"--apache-conf: Apache does not report a PidFile for {conf}: {output}")


def _default_name() -> str:
    import socket

    name = socket.getfqdn().lower().rstrip(".")
    return name if name and name != "localhost.localdomain" else "localhost"


# --- sync-crl ------------------------------------------------------------------------------

_EXIT_HELP = f"""\b
Exit codes (for timers and monitoring):
  {Outcome.CRL_UNCHANGED:d}   the installed CRL is current; nothing changed
  {Outcome.CRL_UPDATED:d}  a new CRL was installed (and Apache reloaded), or --force-reload reloaded
  2   bad arguments, or --ca-cert unreadable
  5   a --dest file could not be written (or another sync of them is stuck)
  6   the CA could not be reached or answered an error; installed CRL kept
  7   the CA's CRL was rejected (the message names the check); installed CRL kept
  8   STALE: the installed CRL is expired or near its nextUpdate and no fresh one
      could be had (takes precedence over 6 and 7)
  9   the CRL is installed but the reload failed or could not be confirmed (Apache
      not running, or it did not re-read its configuration); it stays pending and the
      next run retries it
\b
Checks a CRL must pass: {", ".join(CHECKS)}.
"""


@cli.command(name="sync-crl", epilog=_EXIT_HELP)
@click.option(
    "--ca-url", required=True, help="The CA, https://HOST:PORT (e.g. https://ca.example.com:8140)."
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: local_puppet().localcacert,
    show_default="localcacert, " + _PUPPET_HELP,
    help="The pinned CA certificate: the only trust for TLS and for the CRL's signature.",
)
@click.option(
    "--dest",
    "destinations",
    type=click.Path(dir_okay=False, path_type=Path),
    multiple=True,
    help="Where to install the CRL (repeatable; default: Puppet's hostcrl, SSLDIR/crl.pem).",
)
@click.option(
    "--client-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Present this certificate to the CA (with --client-key), so the CA records which CRL "
    "this master has ('splitca masters'). Default: the host's Puppet certificate (hostcert, "
    "hostprivkey) if both files are there.",
)
@click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--no-client-cert",
    is_flag=True,
    help="Present no client certificate (the CA then cannot record this master).",
)
@click.option(
    "--legacy-environment",
    metavar="ENV",
    help="Use the legacy path /ENV/certificate_revocation_list/ca (pre-Puppet-4 CAs).",
)
@click.option(
    "--reload-command",
    help="Run (no shell) after the CRL changed; '' for none. Default: 'apachectl graceful' "
    "for the system Apache, confirmed through its PidFile.",
)
@click.option(
    "--apache-pidfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PidFile of the Apache that serves the CRL: reload only while it runs, and count the "
    "reload as done only once it re-read its configuration. Default: the system Apache's with "
    "the default --reload-command, none with another.",
)
@click.option(
    "--force-reload", is_flag=True, help="Reload even if the CRL did not change (exit 10)."
)
@click.option("--no-reload", is_flag=True, help="Never run the reload command.")
@click.option(
    "--reload-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds the reload command and its confirmation may take.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds for the whole fetch: connecting, reading, parsing and verifying the CRL.",
)
@click.option(
    "--max-bytes",
    type=int,
    default=16 * 1024 * 1024,
    show_default=True,
    help="Refuse a CRL answer larger than this, as sent or as decoded (gzip).",
)
@click.option(
    "--warn-before",
    help="Exit 8 when the installed CRL expires within this (e.g. 2d; default: last quarter of its lifetime).",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to keep Last-Modified for conditional GETs (default: next to the first --dest).",
)
@click.option("--no-conditional", is_flag=True, help="Always fetch the whole CRL.")
@click.option(
    "--allow-rollback",
    is_flag=True,
    help="Accept a CRL number lower than the installed one (after restoring the CA from a "
    "backup); the whole CRL is fetched.",
)
@click.option(
    "--watch",
    "interval",
    metavar="INTERVAL",
    help="Keep running, syncing every INTERVAL (e.g. 5m); for a service instead of a timer.",
)
@format_option
@pass_ctx
def sync_crl(
    c: Ctx,
    ca_url: str,
    ca_cert: Path,
    destinations: tuple[Path, ...],
    client_cert: Path | None,
    client_key: Path | None,
    no_client_cert: bool,
    legacy_environment: str | None,
    reload_command: str | None,
    apache_pidfile: Path | None,
    force_reload: bool,
    no_reload: bool,
    reload_timeout: float,
    timeout: float,
    max_bytes: int,
    warn_before: str | None,
    state_file: Path | None,
    no_conditional: bool,
    allow_rollback: bool,
    interval: str | None,
    fmt: str,
) -> None:
    """Fetch the CA's CRL, verify it, install it atomically, reload Apache if it changed.

    Run it on every compile master from a timer (see apache/splitca-sync-crl.timer).
    The CRL must parse, be signed by the pinned --ca-cert, come from that CA, have a
    CRL number not lower than the installed one, and not be expired; otherwise the
    installed file is left alone.
    """
    command, pidfile = _reload_of(reload_command, apache_pidfile, no_reload)
    if no_client_cert:
        if client_cert or client_key:
            raise ConfigError("--no-client-cert: --client-cert/--client-key given too")
    elif client_cert is None and client_key is None:
        client_cert, client_key = _host_identity(ca_cert)
    cfg = SyncConfig(
        ca_url=ca_url,
        ca_cert=ca_cert,
        destinations=destinations or (local_puppet().hostcrl,),
        client_cert=client_cert,
        client_key=client_key,
        legacy_environment=legacy_environment,
        timeout=timeout,
        max_bytes=max_bytes,
        reload_command=command,
        reload_timeout=reload_timeout,
        apache_pidfile=pidfile,
        force_reload=force_reload,
        warn_before=parse_duration(warn_before, key="--warn-before") if warn_before else None,
        state_file=state_file,
        conditional=not no_conditional,
        allow_rollback=allow_rollback,
    )
    seconds = None if interval is None else parse_duration(interval, key="--watch").total_seconds()
    try:
        if seconds is None:
            result = sync_once(cfg)
        else:
            stop = threading.Event()

            def on_signal(signum: int, frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            watch(cfg, seconds, stop=stop, report=lambda r: _report(r, fmt))
            return
    except SplitCAError as exc:  # with --watch, only what ends it (a ConfigError)
        if fmt != "json":
            raise  # the group prints it as one line, with its exit code
        _report(exc, fmt)  # the same object as every other run's, on stdout
        finish(exc)
    _report(result, fmt)
    finish(_outcome(result))


def _host_identity(ca_cert: Path) -> tuple[Path | None, Path | None]:
    """The host's Puppet certificate and key, if both are readable and the certificate was
    issued by the pinned *ca_cert*: what sync-crl presents by default, so the CA sees which
    CRL each master has (a certificate of another CA would fail the TLS handshake)."""
    puppet = local_puppet()
    cert, key = puppet.hostcert, puppet.hostprivkey
    if (cert is None or key is None) and puppet.certname:
        cert = puppet.ssldir / "certs" / f"{puppet.certname}.pem"
        key = puppet.ssldir / "private_keys" / f"{puppet.certname}.pem"
    why = "the host's Puppet certname is unknown"
    if cert is not None and key is not None:
        why = _unusable_identity(cert, key, ca_cert)
        if not why:
            return cert, key
    log.info(
        "presenting no client certificate (%s): the CA will not record which CRL this "
        "master has; give --client-cert/--client-key",
        why,
    )
    return None, None


def _unusable_identity(cert: Path, key: Path, ca_cert: Path) -> str:
    """Why *cert* cannot be presented to the CA pinned by *ca_cert* ('' if it can)."""
    if not (os.access(cert, os.R_OK) and os.access(key, os.R_OK)):
        return f"{cert} or its key is not readable"
    try:
        leaf = pki.load_certificates(cert.read_bytes())[0]
        cas = pki.load_certificates(ca_cert.read_bytes())
    except (OSError, ValueError, IndexError):
        return f"{cert} or {ca_cert} holds no certificate"
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            return ""
        except (ValueError, TypeError, InvalidSignature):
            continue
    return f"{cert} was not issued by {ca_cert}"


# Programs that reload an Apache: their exit status alone does not say the right one reloaded.
_APACHE_PROGRAMS = frozenset({"apachectl", "apache2ctl", "httpd", "apache2"})


def _reload_of(
    reload_command: str | None, apache_pidfile: Path | None, no_reload: bool
) -> tuple[tuple[str, ...], Path | None]:
    """The reload command and the PidFile that confirms it, from the options."""
    if no_reload:
        return (), None
    if reload_command is not None:
        try:
            command = tuple(shlex.split(reload_command))
        except ValueError as exc:
            raise ConfigError(f"--reload-command: {exc}") from None
        if apache_pidfile is None and command and Path(command[0]).name in _APACHE_PROGRAMS:
            log.warning(
                "--reload-command %s cannot be confirmed without --apache-pidfile (a stopped "
                "Apache may be started, a running one left on the old CRL): give the PidFile of "
                "the Apache that serves the CRL, as 'splitca apache-config' prints it",
                shlex.join(command),
            )
        return command, apache_pidfile
    if apache_pidfile is not None:
        return DEFAULT_RELOAD_COMMAND, apache_pidfile
    system = apache.system_apache()
    if system is None:
        known = " or ".join(str(a.config_dir) for a in apache.SYSTEM_APACHES)
        raise ConfigError(
            f"--reload-command: there is no system Apache here (no {known}): give the "
            "--reload-command and --apache-pidfile of the Apache that serves the CRL (as "
            "'splitca apache-config' prints them), or --no-reload"
        )
    return system.reload_command, system.pidfile


def _outcome(result: SyncResult) -> Outcome:
    return Outcome.CRL_UPDATED if result.outcome == "updated" else Outcome.CRL_UNCHANGED


def _report(result: SyncResult | SplitCAError, fmt: str) -> None:
    if isinstance(result, SplitCAError):
        code = exit_code_for(result)
        if fmt == "json":
            echo_json(
                {"outcome": "error", "exit_code": code, "error": str(result), **_check(result)}
            )
        else:
            click.echo(f"Error: {result}", err=True)
        return
    if fmt == "json":
        echo_json({**result.as_dict(), "exit_code": exit_code_for(_outcome(result))})
    else:
        click.echo(result.describe())
        for line in result.warnings:
            click.echo(f"Warning: {line}", err=True)


def _check(exc: SplitCAError) -> dict[str, str]:
    check = getattr(exc, "check", None)
    return {"check": check} if isinstance(check, str) else {}
