"""The admin identity a remote command presents unless told otherwise: this host's Puppet agent ssldir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from splitca.errors import ConfigError

__all__ = ["FALLBACK_SSLDIRS", "Identity", "agent_ssldir", "resolve"]

# Where Puppet keeps its ssldir when `puppet config print` cannot say: Puppet's own packages,
# then Debian's.
FALLBACK_SSLDIRS = (Path("/etc/puppetlabs/puppet/ssl"), Path("/var/lib/puppet/ssl"))
_PUPPETS = ("/opt/puppetlabs/bin/puppet",)
PUPPET_TIMEOUT = 30.0


@dataclass(frozen=True)
class Identity:
    """The files of one TLS client identity and the CA certificate the server is verified with."""

    cert: Path
    key: Path
    ca_cert: Path


def _puppet() -> str | None:
    return shutil.which("puppet") or next((p for p in _PUPPETS if os.access(p, os.X_OK)), None)


def agent_ssldir() -> tuple[str, Path, str]:
    """(certname, ssldir, where they came from), as `puppetserver ca` finds its identity:
    `puppet config print certname ssldir` (agent section) where Puppet is installed, else
    the host's FQDN and the first of FALLBACK_SSLDIRS that exists."""
    certname, ssldir = "", ""
    source = "puppet config print"
    puppet = _puppet()
    if puppet is not None:
        try:
            out = subprocess.run(
                [puppet, "config", "print", "certname", "ssldir", "--section", "agent"],
                capture_output=True,
                text=True,
                timeout=PUPPET_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            out = None
        for line in out.stdout.splitlines() if out is not None and out.returncode == 0 else ():
            key, sep, value = line.partition(" = ")
            if sep and key.strip() == "certname":
                certname = value.strip()
            elif sep and key.strip() == "ssldir":
                ssldir = value.strip()
    if not certname or not ssldir:
        source = "the host name and Puppet's default ssldir"
    if not certname:
        certname = socket.getfqdn().lower().rstrip(".") or "localhost"
    if not ssldir:
        found = next((d for d in FALLBACK_SSLDIRS if d.is_dir()), FALLBACK_SSLDIRS[0])
        ssldir = str(found)
    return certname, Path(ssldir), source


def resolve(cert: Path | None, key: Path | None, ca_cert: Path | None) -> Identity:
    """The given files, the missing ones taken from the agent ssldir; ConfigError (naming the
    option, the file and how to make one) for a file that is not there."""
    given = {"--cert": cert, "--key": key, "--ca-cert": ca_cert}
    files: dict[str, Path] = {opt: path for opt, path in given.items() if path is not None}
    source = ""
    if len(files) < len(given):
        certname, ssldir, source = agent_ssldir()
        defaults = {
            "--cert": ssldir / "certs" / f"{certname}.pem",
            "--key": ssldir / "private_keys" / f"{certname}.pem",
            "--ca-cert": ssldir / "certs" / "ca.pem",
        }
        files = {opt: files.get(opt, defaults[opt]) for opt in given}
    for opt, path in files.items():
        if not path.is_file():
            origin = f" (the agent ssldir's, from {source})" if given[opt] is None else ""
            raise ConfigError(
                f"{opt}: {path} does not exist{origin}; give --cert, --key and --ca-cert, or "
                "make an admin identity on the CA host with: "
                "splitca generate NAME --ca-client --ssldir DIR"
            )
    return Identity(files["--cert"], files["--key"], files["--ca-cert"])
