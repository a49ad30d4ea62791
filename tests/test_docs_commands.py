"""Every `splitca ...` command shown in README.md and docs/*.md runs, for real, as documented.

The commands are extracted from the fenced code blocks of the docs (prose is skipped):

* ``sh``/``bash``/``shell`` blocks: every line is shell (continuation lines joined, comments
  dropped, pipes, ``&&``, ``$(...)``, redirections and ``VAR=...`` prefixes understood);
* ``console`` and untagged blocks: only the lines that start with ``$ `` (the rest is output);
* ``ini`` blocks (systemd units): the ``Exec...=`` lines.

Each `splitca` command is then run through the real CLI, in document order (README.md, then
docs/*.md sorted), against one scratch CA: the documented paths and host names are mapped to
temporary ones by SUBSTITUTIONS, defaults that point at system paths are pinned by
`_pin_system_defaults`, and the state a command needs (a pending CSR for `sign NAME`, a
signed certificate for `revoke NAME`, a registration for `classify NAME`, a running
`splitca serve` for `sync-crl --ca-url ...` and for the operator commands given `--ca-url`,
with an admin identity pinned where the docs rely on the agent ssldir's) is made first by
`_prepare`. Each command must
exit as documented (EXPECTED_EXIT, else 0) without a traceback. A command the test cannot
run must be in NOT_RUN with the reason; a new command in the docs is picked up
automatically and either runs or fails loudly.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings

from .conftest import chdir, fast_key, free_port, make_csr, require_program

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))

# --- extraction --------------------------------------------------------------------------------

SHELL_LANGS = frozenset({"sh", "bash", "shell", "zsh"})  # every line is a command
PROMPT_LANGS = frozenset({"console", "shell-session", ""})  # only "$ " lines are commands
UNIT_LANGS = frozenset({"ini", "systemd"})  # Exec...= lines are commands
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_EXEC_LINE = re.compile(r"^\s*Exec\w*=[-@:+!]*(.*)$")
_OPERATORS = frozenset({"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"})
_REDIRECTS = frozenset({">", ">>", "<", "<<", "<<<", ">&", "<&", ">|", "&>"})
_PREFIX_WORDS = frozenset({"exec", "sudo", "time", "env", "command", "nohup"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class DocCommand:
    """One `splitca` command of the docs: where it is, and its arguments after `splitca`."""

    where: str  # "docs/cli.md:68"
    line: str  # the documented shell line (continuations joined), after SUBSTITUTIONS
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: splitca {shlex.join(self.args)}"


def _shell_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, logical shell line) of every command line in the fenced code blocks."""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1  # the closing fence
        j = 0
        while j < len(body):
            start, text = body[j]
            j += 1
            text = text.strip()
            if lang in SHELL_LANGS:
                text = text.removeprefix("$ ")
            elif lang in PROMPT_LANGS:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            elif lang in UNIT_LANGS:
                u = _EXEC_LINE.match(text)
                if not u:
                    continue
                text = u.group(1)
            else:
                continue  # yaml, json, hocon, ...: not commands
            while j < len(body) and (text.endswith("\\") or not _quotes_closed(text)):
                if text.endswith("\\"):
                    text = text[:-1] + " " + body[j][1].strip()
                else:  # a quoted string that goes on over the next line
                    text += "\n" + body[j][1]
                j += 1
            if text:
                yield start, text


def _quotes_closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def _simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line: split at pipes, lists and $(...)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words: list[str] = []
    skip_next = False
    for token in lex:
        if skip_next:
            skip_next = False
            continue
        if token in _REDIRECTS:
            skip_next = True  # the redirection's target is not an argument
            continue
        if token in _OPERATORS or (token and set(token) <= set("();<>|&")):
            if words:
                yield words
            words = []
            continue
        words.append(token)
    if words:
        yield words


def extract(markdown: str, name: str, substitutions: dict[str, str]) -> list[DocCommand]:
    """Every `splitca ...` invocation in *markdown*'s code blocks, with *substitutions* made."""
    found = []
    keys = sorted(substitutions, key=len, reverse=True)  # longest first
    for lineno, text in _shell_lines(markdown):
        for key in keys:
            text = text.replace(key, substitutions[key])
        for words in _simple_commands(text):
            while words and (_ASSIGNMENT.match(words[0]) or words[0] in _PREFIX_WORDS):
                words = words[1:]
            if words and os.path.basename(words[0]) == "splitca":
                found.append(DocCommand(f"{name}:{lineno}", text, tuple(words[1:])))
    return found


# --- the scratch site ---------------------------------------------------------------------------

# Documented paths and names -> the scratch site's. {work} is the scratch root (and the
# commands' working directory), {etc} stands for /etc/splitca, {ca_port} is the port of the
# `splitca serve` that sync-crl talks to.
SUBSTITUTIONS = {
    "/var/lib/splitca/ca": "{work}/ca",
    "/etc/splitca/": "{etc}/",  # splitca.yaml (also $SPLITCA_CONFIG) and classify.yaml
    "/etc/apache2/sites-available/": "{work}/sites-available/",
    "~/": "{work}/home/",
    "/media/offline/": "{work}/offline/",  # the root key's offline medium (intermediate-ca.md)
    "ca.example.com:8140": "ca.example.com:{ca_port}",  # resolved to 127.0.0.1 in-process
    "0.0.0.0": "127.0.0.1",  # network only on loopback
    # placeholders the docs abbreviate with "..."
    "3f2c...example.com": "3f2c-docs.example.com",
    "5f0c...e2.fleet.example.com": "5f0c-docs.fleet.example.com",
    # shell the test does not run
    "$(cat decommissioned.txt | paste -sd,)": "old1.example.com,old2.example.com",
    '"$1"': "5f0c-docs.fleet.example.com",  # the ENC wrapper script's argument
}

# Commands the test cannot run, by a substring of the documented line, with the reason.
# (Keep this short; every entry must still match a documented command.) Today every
# documented command runs; the ones that need care are handled, not skipped:
# - `serve` runs until stopped: it is started, must serve the CA certificate, then gets
#   SIGTERM and must exit 0 ("SIGTERM stops it cleanly"); on the config's port, not 8140.
# - `sync-crl` needs a CA: a real `splitca serve` (SUBPROCESS below) on {ca_port}; its
#   system defaults (Puppet's ssldir, `apachectl graceful`) are pinned to the scratch site.
# - `apache-config --check` runs the real apache2 -t (a missing Apache skips it, or fails
#   it under SPLITCA_REQUIRE_INTEROP=1).
NOT_RUN: dict[str, str] = {}

# Documented exit codes other than 0, by command.
EXPECTED_EXIT: dict[tuple[str, ...], frozenset[int]] = {
    ("sync-crl",): frozenset({0, 10}),  # 0: CRL current, 10: a new CRL was installed
    ("ca", "status"): frozenset({0, 12}),  # 12: a CA certificate ends within the horizon
}

# Commands run as a real process (`python -m splitca`); the rest run in-process through
# click's CliRunner (the same `cli` object the console script calls), which is quicker.
# sync-crl must run in-process: it resolves the documented CA host name to 127.0.0.1.
SUBPROCESS = frozenset({("setup",), ("list",), ("revoke",), ("crl", "show"), ("serve",)})

# Commands that take --ca-url and then work on the CA's HTTP API: run in-process (the docs'
# CA host name resolves to 127.0.0.1 there) against the `splitca serve` on {ca_port}, with
# the admin identity pinned (docs/remote-admin.md) unless the documented line gives one.
_REMOTE_NAMES = ("list", "status", "sign", "revoke", "clean", "register", "registrations")
REMOTE = frozenset((c,) for c in (*_REMOTE_NAMES, "unregister", "enroll"))

# Global options and whether they take a value (to find the command in an argument list).
_GLOBALS = {"--config": True, "--cadir": True, "-v": False, "--verbose": False}
_GLOBALS |= {"-q": False, "--quiet": False}


@dataclass
class Site:
    work: Path
    ca_port: int
    serve_port: int
    env: dict[str, str]
    server: subprocess.Popen[bytes] | None = None
    undo: list[Callable[[], object]] = field(default_factory=list)  # after the command

    @property
    def etc(self) -> Path:
        return self.work / "etc"

    @property
    def config(self) -> Path:
        return self.etc / "splitca.yaml"

    @property
    def cadir(self) -> Path:
        return self.work / "ca"

    @property
    def master_ssl(self) -> Path:
        """The compile master's Puppet ssldir (the docs' /etc/puppetlabs/puppet/ssl)."""
        return self.work / "master-ssl"

    @property
    def stub_bin(self) -> Path:
        return self.work / "bin"

    def concrete(self, cmd: DocCommand) -> DocCommand:
        """*cmd* (extracted with SUBSTITUTIONS' placeholders) with this site's paths."""
        values = {"{work}": str(self.work), "{etc}": str(self.etc), "{ca_port}": str(self.ca_port)}

        def fill(text: str) -> str:
            for key, value in values.items():
                text = text.replace(key, value)
            return text

        return DocCommand(cmd.where, fill(cmd.line), tuple(fill(a) for a in cmd.args))

    def settings(self) -> Settings:
        return Settings.load(self.config, {})

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None


def make_site(work: Path) -> Site:
    site = Site(work, free_port(), free_port(), {})
    for d in (site.etc, site.stub_bin, work / "sites-available", work / "home"):
        d.mkdir(parents=True, exist_ok=True)
    site.config.write_text(
        f"cadir: {site.cadir}\n"
        "certname: ca.example.com\n"
        "dns_alt_names: [ca.example.com, puppet-ca.example.com]\n"
        "listen: 127.0.0.1\n"
        f"port: {site.serve_port}\n"
        "key_size: 2048\n"  # the CA key: real, just quicker than 4096
        "workers: 1\n"
        "threads: 4\n"
        # docs/ca-lifecycle.md encrypts the CA key (`ca encrypt-key`): its passphrase file.
        f"ca_key_passphrase_file: {site.etc / 'ca-key.passphrase'}\n"
    )
    (site.etc / "ca-key.passphrase").write_text("docs passphrase, not a secret\n")
    (site.etc / "ca-key.passphrase").chmod(0o600)
    (site.etc / "classify.yaml").write_text(f"registry: {site.cadir / 'registry'}\n")
    # A reload command that touches no real Apache.
    stub = site.stub_bin / "apachectl"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {site.work}/reloads.log\n')
    stub.chmod(0o755)
    site.env = {
        "SPLITCA_CONFIG": str(site.config),  # stands for /etc/splitca/splitca.yaml
        "HOME": str(work / "home"),
        "PATH": f"{site.stub_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return site


# --- preconditions ------------------------------------------------------------------------------


def _command_path(args: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """(("crl", "show"), its own arguments), skipping global options before the command."""
    rest = list(args)
    path: list[str] = []
    group: click.Group = cli
    while rest:
        word = rest[0]
        if word in _GLOBALS:
            rest = rest[1 + _GLOBALS[word] :]
            continue
        if word.startswith("-"):
            break
        cmd = group.get_command(click.Context(group), word)
        if cmd is None:
            break
        path.append(word)
        rest = rest[1:]
        if not isinstance(cmd, click.Group):
            break
        group = cmd
    return tuple(path), rest


def _params(path: tuple[str, ...], rest: list[str]) -> dict[str, Any] | None:
    """The command's parsed parameters, or None if click refuses them (the run will say why)."""
    cmd: click.Command | None = cli
    for word in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(click.Context(cmd), word)
    assert cmd is not None
    try:
        with cmd.make_context(path[-1] if path else "splitca", rest, resilient_parsing=True) as ctx:
            return dict(ctx.params)
    except click.ClickException:
        return None


def _names(value: Any) -> list[str]:
    values = value if isinstance(value, tuple) else (value,) if value else ()
    return [n.strip() for v in values for n in str(v).split(",") if n.strip()]


def _cli(site: Site, *args: str) -> None:
    """A helper step through the CLI itself (its outcome is not what is being tested)."""
    CliRunner().invoke(cli, list(args), env=site.env)


def _ensure_ca(site: Site) -> None:
    if not (site.cadir / "ca_crt.pem").exists():
        result = CliRunner().invoke(cli, ["setup"], env=site.env)
        assert result.exit_code == 0, result.output


def _state(site: Site, name: str) -> str | None:
    return open_ca(site.settings()).state_of(name)


def _pending(site: Site, name: str) -> None:
    if _state(site, name) not in (None, "requested"):
        _cli(site, "clean", name)
    if _state(site, name) is None:
        csr = make_csr(name, key=fast_key())
        open_ca(site.settings()).submit_csr(name, pki.pem(csr))


def _signed(site: Site, name: str) -> None:
    if _state(site, name) == "signed":
        return
    _pending(site, name)
    _cli(site, "sign", name)
    assert _state(site, name) == "signed", name


def _absent(site: Site, name: str) -> None:
    if _state(site, name) is not None:
        _cli(site, "clean", name)


def _registered(site: Site, name: str) -> None:
    _cli(site, "register", name, "--class", "role::docs")


def _ca_server(site: Site) -> None:
    """A real `splitca serve` on {ca_port}, for sync-crl (started once, stopped at the end)."""
    if site.server is not None and site.server.poll() is None:
        return
    with open(site.work / "ca-server.log", "wb") as log:
        site.server = subprocess.Popen(
            [sys.executable, "-m", "splitca", "serve", "--port", str(site.ca_port)],
            env={**os.environ, **site.env, "PYTHONUNBUFFERED": "1"},
            cwd=site.work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    _wait_answering(site.ca_port, site.server, site.work / "ca-server.log")


def _master_ssldir(site: Site, server_name: str | None) -> None:
    """The compile master's ssldir: the pinned CA certificate, the CRL, its own key and cert."""
    ca = open_ca(site.settings())
    (site.master_ssl / "certs").mkdir(parents=True, exist_ok=True)
    (site.master_ssl / "private_keys").mkdir(parents=True, exist_ok=True)
    (site.master_ssl / "certs" / "ca.pem").write_bytes(ca.ca_certificate_pem())
    if not (site.master_ssl / "crl.pem").exists():
        (site.master_ssl / "crl.pem").write_bytes(ca.crl_pem())
    if server_name and not (site.master_ssl / "certs" / f"{server_name}.pem").exists():
        _absent(site, server_name)
        key_pem, cert = open_ca(site.settings()).generate(
            server_name, alt_names=[], ca_client=False, key_type="rsa", key_size=2048
        )
        (site.master_ssl / "private_keys" / f"{server_name}.pem").write_bytes(key_pem)
        (site.master_ssl / "certs" / f"{server_name}.pem").write_bytes(pki.pem(cert))


def _admin_identity(site: Site) -> Path:
    """An admin identity (pp_cli_auth) in Puppet's ssldir layout, for remote commands."""
    ssldir = site.work / "admin-ssl"
    if not (ssldir / "certs" / "ca.pem").exists():
        _absent(site, "docs-admin.example.com")
        argv = ["generate", "docs-admin.example.com", "--ca-client", "--ssldir", str(ssldir)]
        result = CliRunner().invoke(cli, [*argv, "--key-size", "2048"], env=site.env)
        assert result.exit_code == 0, result.output
    return ssldir


def _external_ca_files(site: Site, params: dict[str, Any]) -> None:
    """What an operator receives from the organisation's PKI for `splitca import`: a
    three-level chain (bundle, CRL chain), the issuing CA's key, encrypted if a
    --passphrase-file is named (the passphrase in that file)."""
    from .chain_helpers import ext_chain, key_pem, write_pems

    chain = ext_chain(3)
    write_pems(site.work / params["cert_bundle"], [c.cert for c in chain])
    write_pems(site.work / params["crl_chain"], [c.crl() for c in chain])
    passphrase = None
    if params.get("passphrase_file"):
        passphrase = b"docs passphrase"
        (site.work / params["passphrase_file"]).write_bytes(passphrase + b"\n")
    (site.work / params["private_key"]).write_bytes(key_pem(chain[0].key, passphrase))


def _offline_copies(site: Site, params: dict[str, Any]) -> None:
    """The docs' step before `ca root-crl`: copies of ca_crt.pem and ca_crl.pem on the
    offline medium, from the CA whose chain holds the root key's certificate."""
    key = pki.load_key((site.work / params["root_key"]).read_bytes(), None)
    for bundle in sorted(site.work.glob("*/ca_crt.pem")):
        if pki.signing_certificate(pki.load_certificates(bundle.read_bytes()), key) is not None:
            for given, name in (
                (params["root_cert"], "ca_crt.pem"),
                (params["previous"], "ca_crl.pem"),
            ):
                if not (site.work / given).exists():
                    shutil.copy(bundle.parent / name, site.work / given)
            return


def _has(rest: list[str], *options: str) -> bool:
    return any(a == o or a.startswith(o + "=") for a in rest for o in options)


def _remote(path: tuple[str, ...], args: tuple[str, ...]) -> bool:
    """A REMOTE command given --ca-url (*args*: the whole documented command, which parsing
    leaves whole, unlike the ``rest`` that _params consumes)."""
    return path in REMOTE and _has(list(args), "--ca-url")


def _pin_system_defaults(
    site: Site, path: tuple[str, ...], rest: list[str], args: tuple[str, ...] = ()
) -> list[str]:
    """Extra arguments for defaults that point at system paths (Puppet's ssldir, Apache)."""
    extra: list[str] = []
    if path == ("sync-crl",):
        if not _has(rest, "--ca-cert"):
            extra += ["--ca-cert", str(site.master_ssl / "certs" / "ca.pem")]
        if not _has(rest, "--dest"):
            extra += ["--dest", str(site.master_ssl / "crl.pem")]
        if not _has(rest, "--reload-command"):
            extra += ["--reload-command", f"{site.stub_bin / 'apachectl'} graceful"]
    if _remote(path, args):
        ssldir = site.work / "admin-ssl"
        pinned = {
            "--cert": ssldir / "certs" / "docs-admin.example.com.pem",
            "--key": ssldir / "private_keys" / "docs-admin.example.com.pem",
            "--ca-cert": ssldir / "certs" / "ca.pem",
        }
        if not _has(list(args), *pinned):  # the agent ssldir's identity, by default
            extra += [a for opt, file in pinned.items() for a in (opt, str(file))]
    if path == ("apache-config",) and not _has(rest, "--site") and not _has(rest, "--ssldir"):
        extra += ["--ssldir", str(site.master_ssl)]
    return extra


def _prepare(site: Site, path: tuple[str, ...], params: dict[str, Any]) -> None:
    """Make the state the documented command needs, as an operator would have it."""
    if path != ("setup",):
        _ensure_ca(site)
    names = _names(params.get("certnames") or params.get("certname"))
    if path == ("sign",):
        for name in names or (["docs-pending.example.com"] if params.get("sign_all") else []):
            _pending(site, name)
    elif path in (("revoke",), ("clean",), ("status",)):
        for name in names:
            _signed(site, name)
    elif path == ("generate",):
        for name in names:
            _absent(site, name)
        out = params.get("ssldir") or site.work / f"{names[0]}-ssl"
        shutil.rmtree(site.work / out, ignore_errors=True)
    elif path == ("register",) and not params.get("replace"):
        for name in names:
            _cli(site, "unregister", name)
    elif path in (("unregister",), ("classify",)):
        for name in names:
            _registered(site, name)
    elif path == ("sync-crl",):
        _master_ssldir(site, None)
        _ca_server(site)
    elif path == ("apache-config",) and params.get("site") != "ca":
        _master_ssldir(site, params.get("certname") or params.get("server_name"))
    elif path == ("apache-config",) and not (params.get("wsgi_user") or params.get("wsgi_group")):
        # The docs' step before it, `chown -R puppet:puppet /var/lib/splitca/ca`, for the
        # cadir itself (whose owner the vhost's mod_wsgi daemon runs as); undone afterwards.
        st = site.cadir.stat()
        os.chown(site.cadir, pwd.getpwnam("puppet").pw_uid, grp.getgrnam("puppet").gr_gid)
        site.undo.append(lambda: os.chown(site.cadir, st.st_uid, st.st_gid))
    elif path == ("import",):
        _external_ca_files(site, params)
    elif path == ("ca", "root-crl"):
        _offline_copies(site, params)
    if params.get("check"):
        require_program("apache2")


# --- running ------------------------------------------------------------------------------------


def _wait_answering(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until https://127.0.0.1:PORT/ serves the CA certificate (the server answers)."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{port}/puppet-ca/v1/certificate/ca"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"splitca serve exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, context=tls, timeout=5) as r:
            if r.status == 200 and b"BEGIN CERTIFICATE" in r.read():
                return
        time.sleep(0.1)
    raise AssertionError(f"splitca serve did not answer on port {port}:\n{log.read_text()}")


@contextlib.contextmanager
def _example_hosts_on_loopback() -> Iterator[None]:
    """Resolve the docs' *.example.com host names to 127.0.0.1 (in this process only)."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".example.com"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real


def _run_serve(site: Site, args: list[str], port: int) -> tuple[int, str]:
    """`splitca serve` runs until stopped: start it, wait until it answers, SIGTERM it."""
    log = site.work / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "splitca", *args],
            env={**os.environ, **site.env, "PYTHONUNBUFFERED": "1"},
            cwd=site.work,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_answering(port, proc, log)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text()


def run_doc_command(site: Site, cmd: DocCommand) -> tuple[int, str, frozenset[int]]:
    """Prepare and run one documented command: (exit code, output, the expected codes)."""
    path, rest = _command_path(cmd.args)
    params = _params(path, rest) if path else None
    try:
        if path and params is not None:
            _prepare(site, path, params)
            if _remote(path, cmd.args):
                _ca_server(site)
                _admin_identity(site)
        return _run(site, cmd, path, rest)
    finally:
        while site.undo:
            site.undo.pop()()


def _run(
    site: Site, cmd: DocCommand, path: tuple[str, ...], rest: list[str]
) -> tuple[int, str, frozenset[int]]:
    args = [*cmd.args, *_pin_system_defaults(site, path, rest, cmd.args)]
    expected = EXPECTED_EXIT.get(path, frozenset({0}))
    if path == ("serve",):
        port = rest[rest.index("--port") + 1] if "--port" in rest else site.serve_port
        code, output = _run_serve(site, args, int(port))
    elif path in SUBPROCESS and not _remote(path, cmd.args):
        proc = subprocess.run(
            [sys.executable, "-m", "splitca", *args],
            env={**os.environ, **site.env},
            cwd=site.work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    else:
        with chdir(site.work), _example_hosts_on_loopback():
            result = CliRunner().invoke(cli, args, env=site.env)
        code, output = result.exit_code, result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += "".join(traceback.format_exception(result.exception))
    return code, output, expected


def check_doc_command(site: Site, cmd: DocCommand) -> None:
    """Fail (with the documented line and the output) unless it exits as documented."""
    code, output, expected = run_doc_command(site, cmd)
    assert code in expected and "Traceback" not in output, (
        f"{cmd}\n  documented as: {cmd.line}\n  exit {code}, expected {sorted(expected)}:\n{output}"
    )


# --- the tests ----------------------------------------------------------------------------------


def _documented() -> list[DocCommand]:
    found = []
    for doc in DOC_FILES:
        name = str(doc.relative_to(REPO))
        found += extract(doc.read_text(encoding="utf-8"), name, SUBSTITUTIONS)
    return found


DOCUMENTED = _documented()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = make_site(tmp_path_factory.mktemp("docs-site"))
    yield s
    s.stop()


@pytest.mark.parametrize("cmd", DOCUMENTED, ids=str)
def test_documented_command_runs(site: Site, cmd: DocCommand) -> None:
    for needle, reason in NOT_RUN.items():
        if needle in cmd.line:
            pytest.skip(f"not run: {reason}")
    check_doc_command(site, site.concrete(cmd))


# --- commands in prose: not run, but their command and options must exist ----------------------

_INLINE = re.compile(r"`([^`\n]+)`")
_OPTION = re.compile(r"(?<![\w.:/])--?[A-Za-z][\w-]*")


def _outside_fences(markdown: str) -> Iterator[tuple[int, str]]:
    fence = None
    for n, line in enumerate(markdown.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            fence = None if fence else m.group(2)
            continue
        if fence is None:
            yield n, line


def prose_problems(markdown: str, name: str, *, reference_tables: bool = False) -> list[str]:
    """Inline `splitca ...` spans (and, in the command reference, the first cell of each table
    row) whose command or options do not exist."""
    problems = []
    for n, line in _outside_fences(markdown):
        spans = [m.group(1) for m in _INLINE.finditer(line)]
        if reference_tables and line.startswith("| `"):
            spans.append("splitca " + spans.pop(0))  # `sign NAME... | --all [...]`
        for span in spans:
            for m in re.finditer(r"(?:^|[\s/])splitca\s+(.*?)(?:&&|\|\||;|$)", span):
                words = tuple(re.sub(r"[\[\]|]", " ", m.group(1)).split())
                problem = _unknown(words)
                if problem:
                    problems.append(f"{name}:{n}: `{span}`: {problem}")
    return problems


def _unknown(words: tuple[str, ...]) -> str | None:
    path, rest = _command_path(words)
    if not path and rest and not rest[0].startswith("-") and not rest[0].isupper():
        return f"no command {rest[0]!r}"
    cmd: click.Command | None = cli
    for word in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(click.Context(cmd), word)
    assert cmd is not None
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    bad = [o.split("=")[0] for o in _OPTION.findall(" ".join(rest)) if o.split("=")[0] not in known]
    return f"{' '.join(path) or 'splitca'} has no option {', '.join(bad)}" if bad else None


def test_commands_in_prose_name_real_commands_and_options() -> None:
    problems = []
    for doc in DOC_FILES:
        name = str(doc.relative_to(REPO))
        text = doc.read_text(encoding="utf-8")
        problems += prose_problems(text, name, reference_tables=name == "docs/cli.md")
    assert not problems, "\n".join(problems)


def test_prose_check_finds_a_bogus_option_or_command() -> None:
    text = (
        "Run `splitca crl refresh --force`, then `splitca sign --all --bogus`.\n"
        "Or `splitca frobnicate NAME` and `splitca clean NAME && splitca unregister NAME -x`.\n"
        "```sh\nsplitca --not-checked-here\n```\n"
        "| `revoke NAME... [--reason key_compromise] [--no-such]` | ... |\n"
    )
    assert prose_problems(text, "x.md", reference_tables=True) == [
        "x.md:1: `splitca sign --all --bogus`: sign has no option --bogus",
        "x.md:2: `splitca frobnicate NAME`: no command 'frobnicate'",
        "x.md:2: `splitca clean NAME && splitca unregister NAME -x`: unregister has no option -x",
        "x.md:6: `splitca revoke NAME... [--reason key_compromise] [--no-such]`: "
        "revoke has no option --no-such",
    ]


def test_docs_show_commands_and_the_tables_are_current() -> None:
    """The extractor finds the docs' commands, and no table entry has gone stale."""
    where = {c.where.split(":")[0] for c in DOCUMENTED}
    assert {"README.md", "docs/cli.md", "docs/split-ca.md", "docs/enrollment.md"} <= where
    assert len(DOCUMENTED) >= 25, [str(c) for c in DOCUMENTED]
    texts = [(doc.read_text(encoding="utf-8")) for doc in DOC_FILES]
    for key in [*SUBSTITUTIONS, *NOT_RUN]:
        assert any(key in t for t in texts), f"{key!r} is no longer in the docs: drop it"
    # "splitca setup --cadir ..." is the very first command a new user types.
    readme = [c for c in DOCUMENTED if c.where.startswith("README.md")]
    assert readme[0].args[:2] == ("setup", "--cadir")


SNIPPET = """\
Prose with `splitca frobnicate --inline` is not run.

```sh
splitca list --all   # a comment
splitca --cadir /var/lib/splitca/ca sign \\
    agent1.example.com
TOKEN=$(splitca register web7.example.com --ttl 2h) && echo "$TOKEN"
splitca list --all --format json | jq '.[] | .name' > names.txt
cat > /usr/local/bin/wrapper <<'EOF'
exec /usr/local/bin/splitca --config /etc/splitca/classify.yaml classify "$1"
EOF
curl https://ca.example.com:8140/
```

```
$ splitca registrations
web7.example.com   waiting
splitca this-is-output-not-a-command
```

```ini
[Service]
ExecStart=/usr/local/bin/splitca --config /etc/splitca/splitca.yaml crl refresh
```

```yaml
splitca: not a command
```
"""


def test_extractor_finds_exactly_the_commands_in_code_blocks() -> None:
    got = [(c.where, c.args) for c in extract(SNIPPET, "x.md", {'"$1"': "n1.example.com"})]
    assert got == [
        ("x.md:4", ("list", "--all")),
        ("x.md:5", ("--cadir", "/var/lib/splitca/ca", "sign", "agent1.example.com")),
        ("x.md:7", ("register", "web7.example.com", "--ttl", "2h")),
        ("x.md:8", ("list", "--all", "--format", "json")),
        (
            "x.md:10",
            ("--config", "/etc/splitca/classify.yaml", "classify", "n1.example.com"),
        ),
        ("x.md:16", ("registrations",)),
        ("x.md:23", ("--config", "/etc/splitca/splitca.yaml", "crl", "refresh")),
    ]


def _snippet_check(site: Site, markdown: str) -> Callable[[], None]:
    (cmd,) = extract(markdown, "snippet.md", SUBSTITUTIONS)
    return lambda: check_doc_command(site, site.concrete(cmd))


def test_a_documented_option_that_does_not_exist_fails(site: Site) -> None:
    bogus = "```sh\nsplitca --cadir /var/lib/splitca/ca list --all --no-such-option\n```\n"
    with pytest.raises(AssertionError, match=r"No such option.*--no-such-option"):
        _snippet_check(site, bogus)()
    with pytest.raises(AssertionError, match="No such command 'frobnicate'"):
        _snippet_check(site, "```sh\nsplitca frobnicate\n```\n")()
    # sync-crl is documented with exit codes 0 and 10; a bad option is still exit 2
    with pytest.raises(AssertionError, match="exit 2"):
        _snippet_check(site, "```sh\nsplitca sync-crl --ca-url https://x --bogus\n```\n")()


def test_global_options_after_the_command_as_the_readme_shows(site: Site) -> None:
    """README's first command and `splitca --help`'s "Start here" put --cadir after `setup`."""
    snippet = (
        "```sh\n"
        "splitca setup --cadir /var/lib/splitca/ca --certname ca.example.com\n"
        "splitca crl show --cadir /var/lib/splitca/ca -q\n"
        "```\n"
    )
    for cmd in extract(snippet, "snippet.md", SUBSTITUTIONS):
        check_doc_command(site, site.concrete(cmd))
    help_text = CliRunner().invoke(cli, ["--help"]).output
    start_here = [ln.split() for ln in help_text.splitlines() if ln.strip().startswith("splitca ")]
    assert start_here, help_text
    for words in start_here:
        path, rest = _command_path(tuple(words[1:]))
        assert path and _params(path, rest) is not None, words
