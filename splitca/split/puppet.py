"""The local Puppet's paths (ssldir, hostcert, ...): ``puppet config print``, cached, else by layout.

Puppet's own packages (puppet-agent, "AIO") keep everything under ``/etc/puppetlabs``;
Debian's and Ubuntu's ``puppet-agent`` use ``/etc/puppet`` and ``/var/lib/puppet/ssl``,
and a puppet.conf may move the ssldir anywhere. The defaults of ``sync-crl``,
``apache-config`` and ``generate --ssldir`` therefore ask the installed agent, once:
the answer is cached (per user, keyed by the puppet program and its puppet.conf, so a
changed puppet.conf is asked again) because Puppet takes seconds to start. Without an
agent, or if it does not answer within ``TIMEOUT``, the layout whose confdir exists is
used (Puppet's own first), and Puppet's own layout if neither does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from splitca import fs
from splitca.errors import StoreError

__all__ = ["AIO", "DEBIAN", "TIMEOUT", "Layout", "PuppetPaths", "local_puppet"]

log = logging.getLogger(__name__)

TIMEOUT = 20.0  # seconds `puppet config print` may take (it is slow on a loaded host)
PROGRAM_ENV = "SPLITCA_PUPPET"  # the puppet program to ask; "" or "none": ask none
_PROGRAMS = ("/opt/puppetlabs/bin/puppet", "puppet")
_ASKED = ("confdir", "ssldir", "certname", "hostcert", "hostprivkey", "localcacert", "hostcrl")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Layout:
    """Where one family of packages puts Puppet's configuration and its ssldir."""

    name: str
    confdir: Path
    ssldir: Path


AIO = Layout("puppetlabs", Path("/etc/puppetlabs/puppet"), Path("/etc/puppetlabs/puppet/ssl"))
DEBIAN = Layout("debian", Path("/etc/puppet"), Path("/var/lib/puppet/ssl"))


@dataclass(frozen=True)
class PuppetPaths:
    """The local agent's settings splitca's defaults use (as ``puppet config print`` names them)."""

    confdir: Path
    ssldir: Path
    certname: str | None
    hostcert: Path | None
    hostprivkey: Path | None
    localcacert: Path
    hostcrl: Path
    source: str  # "puppet config print" or the layout's name

    @classmethod
    def of_layout(cls, layout: Layout) -> PuppetPaths:
        ssl = layout.ssldir
        return cls(
            confdir=layout.confdir,
            ssldir=ssl,
            certname=None,
            hostcert=None,
            hostprivkey=None,
            localcacert=ssl / "certs" / "ca.pem",
            hostcrl=ssl / "crl.pem",
            source=f"{layout.name} layout",
        )

    @property
    def rack_root(self) -> Path:
        """Where the Rack puppetmaster's config.ru lives (Passenger), beside puppet.conf."""
        return self.confdir / "rack"


_lock = threading.Lock()
_memo: dict[str, PuppetPaths] = {}


def local_puppet() -> PuppetPaths:
    """This host's Puppet paths (asked once per process; see the module's docstring)."""
    with _lock:
        key = os.environ.get(PROGRAM_ENV, "auto")
        if key not in _memo:
            _memo[key] = _resolve()
        return _memo[key]


def _resolve() -> PuppetPaths:
    program = _program()
    if program is not None:
        asked = _ask(program)
        if asked is not None:
            return asked
    layout = next((lay for lay in (AIO, DEBIAN) if lay.confdir.is_dir()), AIO)
    return PuppetPaths.of_layout(layout)


def _program() -> str | None:
    given = os.environ.get(PROGRAM_ENV)
    if given is not None:
        return None if given in ("", "none") else given
    for name in _PROGRAMS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitca" / "puppet-paths.json"


def _fingerprint(program: str) -> str:
    """What the cached answer depends on: the program and every puppet.conf it may read."""
    parts = [program, str(os.getuid())]
    for p in (program, *(str(lay.confdir / "puppet.conf") for lay in (AIO, DEBIAN))):
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:-")
    return "|".join(parts)


def _ask(program: str) -> PuppetPaths | None:
    key = _fingerprint(program)
    cache = _cache_file()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("version") == _CACHE_VERSION and cached.get("key") == key:
            return _paths(cached["settings"], "puppet config print")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        out = subprocess.run(
            [program, "config", "print", *_ASKED],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not ask %s for its paths (%s); using the default layout", program, exc)
        return None
    settings = dict(
        (k.strip(), v.strip())
        for k, sep, v in (line.partition(" = ") for line in out.stdout.splitlines())
        if sep
    )
    if out.returncode != 0 or not all(settings.get(k) for k in ("confdir", "ssldir")):
        log.warning("%s config print failed; using the default layout", program)
        return None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": _CACHE_VERSION, "key": key, "settings": settings}
        fs.atomic_write(cache, json.dumps(data).encode(), mode=0o644, durable=False)
    except (OSError, StoreError) as exc:
        log.debug("could not cache Puppet's paths in %s: %s", cache, exc)
    return _paths(settings, "puppet config print")


def _paths(s: dict[str, str], source: str) -> PuppetPaths:
    ssl = Path(s["ssldir"])

    def path(name: str) -> Path | None:
        return Path(s[name]) if s.get(name) else None

    return PuppetPaths(
        confdir=Path(s["confdir"]),
        ssldir=ssl,
        certname=s.get("certname") or None,
        hostcert=path("hostcert"),
        hostprivkey=path("hostprivkey"),
        localcacert=path("localcacert") or ssl / "certs" / "ca.pem",
        hostcrl=path("hostcrl") or ssl / "crl.pem",
        source=source,
    )
