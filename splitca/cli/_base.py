"""The click group, its context object, and the ONE table mapping errors to exit codes."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import DEFAULT_CONFIG_PATH, Settings
from ..errors import (
    ConfigError,
    Conflict,
    CRLRejected,
    CRLStale,
    Forbidden,
    InvalidRequest,
    ListenError,
    LockTimeout,
    NotFound,
    PolicyViolation,
    ReloadFailed,
    RemoteError,
    SplitCAError,
    StoreError,
)

if TYPE_CHECKING:
    from ..authority import CertificateAuthority

__all__ = ["EXIT_CODES", "Ctx", "cli", "exit_code_for", "format_option", "pass_ctx"]

# Documented in docs/cli.md. Commands with richer outcomes (sync-crl) document their own.
EXIT_CODES: tuple[tuple[type[SplitCAError], int], ...] = (
    (ConfigError, 2),
    (ListenError, 2),  # serve: the address or port cannot be used (in use, not permitted)
    (NotFound, 3),
    (PolicyViolation, 4),
    (Conflict, 4),
    (Forbidden, 4),
    (InvalidRequest, 4),
    (LockTimeout, 5),
    (StoreError, 5),
    (RemoteError, 6),
    (CRLRejected, 7),
    (CRLStale, 8),  # sync-crl: no fresh CRL and the installed one expires soon
    (ReloadFailed, 9),  # sync-crl: CRL installed, reload command failed
    (SplitCAError, 1),
)


def exit_code_for(exc: SplitCAError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1  # pragma: no cover - SplitCAError is last in the table


@dataclass
class Ctx:
    """What every command gets: settings (loaded lazily) and the CA (opened lazily)."""

    config_path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _ca: CertificateAuthority | None = None  # imported lazily: see COMMAND_MODULES

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load(self.config_path, self.overrides)
        return self._settings

    def override(self, **values: Any) -> None:
        """Command-line flags win over the config file; call before ``settings`` is used."""
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self._settings = None

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            from ..compose import open_ca

            self._ca = open_ca(self.settings)
        return self._ca


pass_ctx = click.make_pass_decorator(Ctx)
F = TypeVar("F", bound=Callable[..., Any])


def format_option(fn: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format; json is stable for scripts.",
    )(fn)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=None, separators=(",", ":"), default=str))


# Which module defines each top-level command. Modules are imported only when their
# command runs (or help lists it), so `splitca classify` never pays for requests or the
# CA's crypto, and `splitca list` never pays for the split-CA tooling.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("setup", "serve", "list", "status", "sign", "revoke", "clean", "generate", "crl", "index"),
        "ca",
    ),
    **dict.fromkeys(("register", "enroll", "registrations", "unregister", "classify"), "enroll"),
    **dict.fromkeys(("apache-config", "sync-crl"), "split"),
}


class SplitCAGroup(click.Group):
    """Loads command modules lazily; turns any SplitCAError into one line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"{__package__}.{COMMAND_MODULES[cmd_name]}")
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SplitCAError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


def _default_config() -> Path | None:
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


@click.group(cls=SplitCAGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SPLITCA_CONFIG",
    help=f"YAML config file [env SPLITCA_CONFIG; default {DEFAULT_CONFIG_PATH} if it exists].",
)
@click.option(
    "--cadir",
    type=click.Path(file_okay=False, path_type=Path),
    help="CA directory (overrides the config's cadir).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Log only errors to stderr.")
@click.version_option(package_name="splitca")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, cadir: Path | None, verbose: bool, quiet: bool
) -> None:
    """splitca: a Puppet-compatible certificate authority and split-CA toolkit.

    \b
    Start here:
      splitca setup --cadir /var/lib/splitca/ca --certname ca.example.com
      splitca --cadir /var/lib/splitca/ca serve
      splitca --cadir /var/lib/splitca/ca list --all
    Every command works while 'splitca serve' runs.
    """
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config_path is None:
        config_path = _default_config()
    obj = Ctx(config_path)
    if cadir is not None:
        obj.override(cadir=str(cadir))
    ctx.obj = obj


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    os.umask(0o022)
    cli.main(args=argv, prog_name="splitca")
