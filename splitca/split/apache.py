"""Apache 2.4 configuration for a split CA: validated site models rendered from package templates."""
# Over 400 lines because each site model validates its inputs beside the template fields it fills.

from __future__ import annotations

import importlib.resources
import ipaddress
import re
import string
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from splitca.errors import ConfigError

__all__ = [
    "BACKENDS",
    "BASE_MODULES",
    "SYSTEM_APACHES",
    "CASite",
    "MasterSite",
    "ServerFrame",
    "SystemApache",
    "module_file",
    "module_files",
    "render",
    "render_server_config",
    "system_apache",
    "wsgi_script_path",
]

BACKENDS = ("proxy", "passenger")

_TEMPLATES = importlib.resources.files("splitca.split") / "templates"

# What may appear in a path, a URL path or a name that goes into the config. Anything
# else (spaces, quotes, newlines, '$' which Apache expands as ${VAR}, '%' which
# mod_headers and ap_expr expand, '<' '>' which open sections, '#', '\\') is refused:
# such a value could end a directive early, start a new one, or change its meaning.
_PATH_RE = re.compile(r"/[A-Za-z0-9._/@+,=-]*")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_URL_PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_BAD_CHARS = {
    "\n": "a newline",
    "\r": "a carriage return",
    "\x00": "a NUL byte",
    "\t": "a tab",
    '"': "a double quote",
    "'": "a quote",
    " ": "a space",
    "$": "a '$' (Apache expands ${...})",
    "%": "a '%' (Apache expands %{...})",
    "\\": "a backslash",
    "<": "a '<'",
    ">": "a '>'",
    "#": "a '#'",
}


def _describe_bad(value: str) -> str:
    for ch, what in _BAD_CHARS.items():
        if ch in value:
            return f"contains {what}"
    bad = next((c for c in value if not (c.isascii() and c.isprintable())), None)
    if bad is not None:
        return f"contains the character {bad!r}"
    return "contains characters that are not allowed"


def _unsafe(label: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"{label}: {value!r} {why}; refusing to put it into an Apache config")


def check_path(label: str, value: Path | str) -> Path:
    """An absolute path made only of characters that cannot break a directive."""
    text = str(value)
    if not text.startswith("/"):
        raise ConfigError(f"{label}: {text!r} must be an absolute path")
    if not _PATH_RE.fullmatch(text):
        raise _unsafe(label, text, _describe_bad(text))
    return Path(text)


def check_host(label: str, value: str) -> str:
    """A DNS name or an IP address."""
    _no_bad_chars(label, value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOST_RE.fullmatch(value) or ".." in value:
        raise _unsafe(label, value, "is not a host name")
    return value


def _no_bad_chars(label: str, value: str) -> None:
    if any(c in value for c in _BAD_CHARS) or not (value.isascii() and value.isprintable()):
        raise _unsafe(label, value, _describe_bad(value))


def check_listen(label: str, value: str) -> tuple[str, str]:
    """``PORT``, ``ADDR:PORT`` or ``[V6]:PORT``; returns (Listen argument, VirtualHost address)."""
    _no_bad_chars(label, value)
    m = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?([0-9]{1,5})", value)
    if not m:
        raise _unsafe(label, value, "is not PORT, ADDRESS:PORT or [IPV6]:PORT")
    addr, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise ConfigError(f"{label}: port {port} is not 1-65535")
    if addr:
        try:
            ipaddress.ip_address(addr.strip("[]"))
        except ValueError:
            raise _unsafe(label, value, "does not hold a valid IP address") from None
        return f"{addr}:{port}", f"{addr}:{port}"
    return str(port), f"*:{port}"


def check_url(label: str, value: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``scheme://host[:port][/path]`` with no query, fragment or credentials; no trailing '/'."""
    _no_bad_chars(label, value)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise _unsafe(label, value, f"is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ConfigError(
            f"{label}: {value!r} must start with {' or '.join(s + '://' for s in schemes)}"
        )
    if parts.query or parts.fragment or parts.username or parts.password or "@" in parts.netloc:
        raise _unsafe(label, value, "must not have a query, fragment or credentials")
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"{label}: {value!r} has no host")
    check_host(label, host)
    path = parts.path.rstrip("/")
    if not _URL_PATH_RE.fullmatch(path):
        raise _unsafe(label, value, "has a path with characters that are not allowed")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}{path}"


def _check_user(label: str, value: str) -> str:
    if not _USER_RE.fullmatch(value):
        raise _unsafe(label, value, "is not a plain user or group name")
    return value


def _check_int(label: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{label}: must be a whole number from {low} to {high}, got {value!r}")
    return value


def _check_comment(value: str) -> str:
    """One line of comment text (the command that rendered the file)."""
    if any(c in value for c in "\r\n\x00") or not value.isprintable():
        raise ConfigError("the generated-by comment must be one printable line")
    return value


# --- site models ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MasterSite:
    """A compile master: mod_ssl in front of puppetserver (proxy) or the Rack master (passenger).

    Field names are the ``splitca apache-config`` option names, so errors name the option.
    """

    server_name: str
    cert: Path
    key: Path
    ca_cert: Path
    crl: Path
    listen: str = "8140"
    verify_depth: int = 1
    backend: Literal["proxy", "passenger"] = "proxy"
    backend_url: str = "http://127.0.0.1:18140"
    rack_root: Path = Path("/etc/puppetlabs/puppet/rack")
    ca_url: str | None = None  # None: /puppet-ca/ is refused; else proxied to this CA
    generated_by: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first unsafe or invalid value."""
        check_host("--server-name", self.server_name)
        for name in ("cert", "key", "ca_cert", "crl", "rack_root"):
            check_path(_opt(name), getattr(self, name))
        check_listen("--listen", self.listen)
        _check_int("--verify-depth", self.verify_depth, 1, 10)
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"--backend: must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        check_url("--backend-url", self.backend_url)
        if self.ca_url is not None:
            check_url("--ca-url", self.ca_url, schemes=("https",))
        _check_comment(self.generated_by)

    @property
    def modules(self) -> tuple[str, ...]:
        """Apache modules this site needs (names as in ``a2enmod``)."""
        mods = ["ssl", "headers"]
        if self.backend == "proxy" or self.ca_url:
            mods += ["proxy", "proxy_http"]
        if self.backend == "passenger":
            mods.append("passenger")
        return tuple(mods)


@dataclass(frozen=True, kw_only=True)
class CASite:
    """The CA itself: splitca's WSGI app under mod_wsgi, client certificates optional."""

    server_name: str
    cert: Path
    key: Path
    ca_cert: Path
    splitca_config: Path
    wsgi_script: Path
    listen: str = "8140"
    verify_depth: int = 1
    wsgi_user: str | None = None  # None: the daemon runs as Apache's User
    wsgi_group: str | None = None
    python_home: Path | None = None
    python_path: tuple[Path, ...] = ()
    processes: int = 2
    threads: int = 15
    generated_by: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first unsafe or invalid value."""
        check_host("--server-name", self.server_name)
        for name in ("cert", "key", "ca_cert", "splitca_config", "wsgi_script"):
            check_path(_opt(name), getattr(self, name))
        if self.python_home is not None:
            check_path("--python-home", self.python_home)
        for p in self.python_path:
            if ":" in str(p):
                raise _unsafe("--python-path", str(p), "contains ':' (the path separator)")
            check_path("--python-path", p)
        check_listen("--listen", self.listen)
        _check_int("--verify-depth", self.verify_depth, 1, 10)
        _check_int("--processes", self.processes, 1, 64)
        _check_int("--threads", self.threads, 1, 256)
        if self.wsgi_user is not None:
            _check_user("--wsgi-user", self.wsgi_user)
        if self.wsgi_group is not None:
            _check_user("--wsgi-group", self.wsgi_group)
        if self.wsgi_user == "root" or self.wsgi_group == "root":
            raise ConfigError("--wsgi-user/--wsgi-group: mod_wsgi refuses to run as root")
        _check_comment(self.generated_by)

    @property
    def modules(self) -> tuple[str, ...]:
        return ("ssl", "headers", "env", "wsgi")


def _opt(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


# --- rendering -------------------------------------------------------------------------------


def _template(name: str) -> string.Template:
    return string.Template((_TEMPLATES / name).read_text(encoding="utf-8"))


def _fill(name: str, values: Mapping[str, object]) -> str:
    # substitute, never safe_substitute: a missing name is a KeyError, not a silent blank.
    return _template(name).substitute({k: str(v) for k, v in values.items()})


def _header(site: MasterSite | CASite, title: str) -> str:
    lines = [f"# {title}"]
    if site.generated_by:
        lines.append(f"# Generated by: {site.generated_by}")
        lines.append("# Re-run that command instead of editing this file by hand.")
    lines.append(f"# Needs the Apache modules: {' '.join(site.modules)}")
    return "\n".join(lines)


def render(site: MasterSite | CASite) -> str:
    """Return the Apache config text for *site*; writing it is the caller's job."""
    if isinstance(site, MasterSite):
        return _render_master(site)
    return _render_ca(site)


def _render_master(site: MasterSite) -> str:
    listen, vhost = check_listen("--listen", site.listen)
    if site.ca_url is None:
        puppet_ca = _fill("master-puppet-ca-refuse.conf.tmpl", {})
    else:
        puppet_ca = _fill("master-puppet-ca-proxy.conf.tmpl", {"ca_url": site.ca_url})
    if site.backend == "proxy":
        backend = _fill("master-backend-proxy.conf.tmpl", {"backend_url": site.backend_url})
    else:
        backend = _fill("master-backend-passenger.conf.tmpl", {"rack_root": site.rack_root})
    proxy_tls = ""
    if site.ca_url is not None or (
        site.backend == "proxy" and site.backend_url.startswith("https://")
    ):
        # Apache talks TLS to the CA (and/or the backend): verify it against the Puppet CA.
        proxy_tls = _fill(
            "master-proxy-tls.conf.tmpl",
            {"ca_cert": site.ca_cert, "verify_depth": site.verify_depth},
        )
    return _fill(
        "master-vhost.conf.tmpl",
        {
            "header": _header(site, f"splitca: compile master {site.server_name}"),
            "listen": listen,
            "vhost_address": vhost,
            "server_name": site.server_name,
            "port": vhost.rsplit(":", 1)[1],
            "cert": site.cert,
            "key": site.key,
            "ca_cert": site.ca_cert,
            "crl": site.crl,
            "verify_depth": site.verify_depth,
            # ProxyPass rules match in order: /puppet-ca/ comes before the backend's "/".
            "routes": "\n\n".join(b.rstrip("\n") for b in (proxy_tls, puppet_ca, backend) if b),
        },
    )


def _render_ca(site: CASite) -> str:
    listen, vhost = check_listen("--listen", site.listen)
    opts = []
    if site.wsgi_user:
        opts.append(f"user={site.wsgi_user}")
    if site.wsgi_group:
        opts.append(f"group={site.wsgi_group}")
    if site.python_home is not None:
        opts.append(f"python-home={site.python_home}")
    if site.python_path:
        opts.append("python-path=" + ":".join(str(p) for p in site.python_path))
    daemon_options = "".join(f" \\\n    {o}" for o in opts)
    return _fill(
        "ca-vhost.conf.tmpl",
        {
            "header": _header(site, f"splitca: Puppet CA {site.server_name}"),
            "listen": listen,
            "vhost_address": vhost,
            "server_name": site.server_name,
            "port": vhost.rsplit(":", 1)[1],
            "cert": site.cert,
            "key": site.key,
            "ca_cert": site.ca_cert,
            "verify_depth": site.verify_depth,
            "processes": site.processes,
            "threads": site.threads,
            "daemon_options": daemon_options,
            "splitca_config": site.splitca_config,
            "wsgi_script": site.wsgi_script,
            "wsgi_dir": site.wsgi_script.parent,
            "wsgi_file": site.wsgi_script.name,
        },
    )


def wsgi_script_path() -> Path:
    """The mod_wsgi entry point shipped with the package (a real file, at the path that
    deployed Apache configs name: ``splitca/templates/splitca.wsgi``)."""
    return Path(str(importlib.resources.files("splitca") / "templates" / "splitca.wsgi"))


# --- the distribution's own Apache ----------------------------------------------------------


@dataclass(frozen=True)
class SystemApache:
    """The Apache a distribution's package installs: where its configuration lives, its
    PidFile, and the command that reloads it gracefully (re-reading certificates and CRLs).
    """

    name: str
    config_dir: Path
    pidfile: Path
    reload_command: tuple[str, ...]

    def owns(self, path: Path) -> bool:
        """Whether *path* is inside this Apache's configuration directory."""
        return Path(path).absolute().is_relative_to(self.config_dir)


SYSTEM_APACHES = (
    # APACHE_PID_FILE in /etc/apache2/envvars; `apachectl graceful` tests the config first.
    SystemApache(
        "Debian",
        Path("/etc/apache2"),
        Path("/var/run/apache2/apache2.pid"),
        ("apachectl", "graceful"),
    ),
    # PidFile run/httpd.pid under ServerRoot /etc/httpd (run -> /run/httpd).
    SystemApache(
        "RHEL", Path("/etc/httpd"), Path("/run/httpd/httpd.pid"), ("apachectl", "graceful")
    ),
)


def system_apache(path: Path | None = None) -> SystemApache | None:
    """The system Apache whose configuration holds *path*; without *path*, the one
    installed here (its configuration directory exists). None if there is none."""
    for candidate in SYSTEM_APACHES:
        if (path is not None and candidate.owns(path)) or (
            path is None and candidate.config_dir.is_dir()
        ):
            return candidate
    return None


# --- a minimal server around one site, for Apache's config test -----------------------------

# Module name as in a2enmod -> (Apache module identifier, file name).
_MODULE_FILES: dict[str, tuple[str, str]] = {
    "mpm_event": ("mpm_event_module", "mod_mpm_event.so"),
    "unixd": ("unixd_module", "mod_unixd.so"),
    "authz_core": ("authz_core_module", "mod_authz_core.so"),
    "log_config": ("log_config_module", "mod_log_config.so"),
    "socache_shmcb": ("socache_shmcb_module", "mod_socache_shmcb.so"),
    "ssl": ("ssl_module", "mod_ssl.so"),
    "headers": ("headers_module", "mod_headers.so"),
    "env": ("env_module", "mod_env.so"),
    "proxy": ("proxy_module", "mod_proxy.so"),
    "proxy_http": ("proxy_http_module", "mod_proxy_http.so"),
    "wsgi": ("wsgi_module", "mod_wsgi.so"),
    "passenger": ("passenger_module", "mod_passenger.so"),
}
# What every server needs besides a site's own modules (load those that exist as files:
# some builds compile unixd or log_config in).
BASE_MODULES = ("mpm_event", "unixd", "authz_core", "log_config", "socache_shmcb")


@dataclass(frozen=True, kw_only=True)
class ServerFrame:
    """Where a throwaway Apache keeps its files, and which modules it loads from where."""

    server_root: Path
    run_dir: Path
    error_log: Path
    site_conf: Path
    modules_dir: Path
    modules: tuple[str, ...]
    user: str | None = None  # needed when Apache is started as root
    group: str | None = None
    log_level: str = "warn"
    extra: tuple[str, ...] = field(default=())  # whole directives, written by us, not users

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                check_path(f.name, value)
        for name in (self.user, self.group):
            if name is not None:
                _check_user("user/group", name)
        unknown = [m for m in self.modules if m not in _MODULE_FILES]
        if unknown:
            raise ConfigError(f"unknown Apache module(s): {', '.join(unknown)}")
        if not re.fullmatch(r"[a-z]+[0-9]?(?: [a-z_]+:[a-z0-9]+)*", self.log_level):
            raise ConfigError(f"unsupported LogLevel {self.log_level!r}")


def module_file(name: str) -> str:
    """The shared-object file name of the module *name* (``ssl`` -> ``mod_ssl.so``)."""
    try:
        return _MODULE_FILES[name][1]
    except KeyError:
        raise ConfigError(f"unknown Apache module {name!r}") from None


def module_files(modules: Iterable[str]) -> list[tuple[str, str]]:
    """(identifier, file name) for each module, in order, without duplicates."""
    return [_MODULE_FILES[n] for n in dict.fromkeys(modules) if n in _MODULE_FILES]


def render_server_config(frame: ServerFrame) -> str:
    """A complete httpd.conf that loads *frame.modules* and includes *frame.site_conf*.

    Every LoadModule is guarded by ``<IfModule !...>`` so modules compiled into the
    server binary (unixd on Debian, for one) are not loaded twice.
    """
    loads = []
    for ident, filename in module_files(frame.modules):
        loads.append(
            f"<IfModule !{ident}>\n"
            f"    LoadModule {ident} {frame.modules_dir / filename}\n"
            "</IfModule>"
        )
    user_group = ""
    if frame.user:
        user_group += f"User {frame.user}\n"
    if frame.group:
        user_group += f"Group {frame.group}\n"
    return _fill(
        "server.conf.tmpl",
        {
            "server_root": frame.server_root,
            "run_dir": frame.run_dir,
            "error_log": frame.error_log,
            "log_level": frame.log_level,
            "load_modules": "\n".join(loads),
            "user_group": user_group.rstrip("\n"),
            "extra": "\n".join(frame.extra),
            "site_conf": frame.site_conf,
        },
    )
