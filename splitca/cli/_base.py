"""The click group, its context object, and the ONE table mapping errors to exit codes."""

from __future__ import annotations

import enum
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

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
    MastersBehind,
    NotFound,
    PolicyViolation,
    ReloadFailed,
    RemoteError,
    SplitCAError,
    StoreError,
)

if TYPE_CHECKING:
    from ..authority import CertificateAuthority

__all__ = [
    "EXIT_CODES",
    "Ctx",
    "Outcome",
    "cli",
    "exit_code_for",
    "finish",
    "format_option",
    "pass_ctx",
]


class Outcome(enum.IntEnum):
    """Exit codes that are outcomes, not errors (docs/cli.md; sync-crl's in docs/split-ca.md)."""

    OK = 0
    FAILED = 1  # serve: its workers kept dying
    NOT_REGISTERED = 1  # classify: an ENC's "no such node"
    CRL_UNCHANGED = 0  # sync-crl: the installed CRL is current; nothing changed
    CRL_UPDATED = 10  # sync-crl: a new CRL installed (and reloaded), or --force-reload reloaded
    CA_EXPIRING = 12  # ca status: a CA certificate expires within the horizon (or expired)


# Errors, and a command's partial failures it reported itself name by name (finish(NotFound)).
# Documented in docs/cli.md; sync-crl's use of them in docs/split-ca.md.
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
    (MastersBehind, 11),  # masters: a compile master's CRL is behind by more than allowed
    (SplitCAError, 1),
)


def exit_code_for(outcome: Outcome | SplitCAError | type[SplitCAError]) -> int:
    """The exit code of an outcome, or of an error (an instance, or its class)."""
    if isinstance(outcome, Outcome):
        return int(outcome)
    kind = outcome if isinstance(outcome, type) else type(outcome)
    for cls, code in EXIT_CODES:
        if issubclass(kind, cls):
            return code
    return 1  # pragma: no cover - SplitCAError is last in the table


def finish(outcome: Outcome | SplitCAError | type[SplitCAError]) -> NoReturn:
    """End the command with *outcome*'s exit code, having reported it already (no "Error:"
    line is added): ``finish(NotFound)`` after listing the names that were not found."""
    raise click.exceptions.Exit(exit_code_for(outcome))


@dataclass
class Ctx:
    """What every command gets: settings (loaded lazily) and the CA (opened lazily)."""

    config_path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    given: dict[str, Any] = field(default_factory=dict)  # global options on the command line
    _settings: Settings | None = None
    _ca: CertificateAuthority | None = None  # imported lazily: see COMMAND_MODULES
    json_output: bool = False  # the command was given --format json: errors are JSON too

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

            self._ca = open_ca(self.settings, autosign_at_start=False)  # the CLI never autosigns
        return self._ca


pass_ctx = click.make_pass_decorator(Ctx)
F = TypeVar("F", bound=Callable[..., Any])


def _note_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    obj = ctx.find_object(Ctx)
    if obj is not None and value == "json":
        obj.json_output = True
    return value


def format_option(fn: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        callback=_note_format,
        help="Output format; json is stable for scripts (errors too: one JSON object on stderr).",
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
    "purge": "retention",
    **dict.fromkeys(("register", "enroll", "registrations", "unregister", "classify"), "enroll"),
    **dict.fromkeys(("apache-config", "sync-crl"), "split"),
    "masters": "fleet",
    **dict.fromkeys(("import", "ca"), "chain"),  # chain.py adds to lifecycle's `ca` group
    "db": "db",
}


# --- global options ------------------------------------------------------------------------
#
# --config, --cadir, -v and -q belong to the whole program, but users type them where the
# docs' first command puts them: after the command (`splitca setup --cadir DIR`). Every
# command and nested group therefore accepts them too (GlobalOptions below), and they
# merge into the one Ctx the group made: flags add up (-v wins over -q, as before the
# command); a value given both before and after the command must be the same, else it is
# a usage error (exit 2), since guessing which CA directory was meant is not safe.
# $SPLITCA_CONFIG and the default config file are only defaults: --config anywhere wins.

_GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--config", "config_path"),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "metavar": "FILE",
            "help": f"YAML config file [env SPLITCA_CONFIG; default {DEFAULT_CONFIG_PATH} if it exists].",
        },
    ),
    (
        ("--cadir",),
        {
            "type": click.Path(file_okay=False, path_type=Path),
            "metavar": "DIR",
            "help": "CA directory (overrides the config's cadir).",
        },
    ),
    (("-v", "--verbose"), {"is_flag": True, "help": "Log debug messages to stderr."}),
    (("-q", "--quiet"), {"is_flag": True, "help": "Log only errors to stderr."}),
)


def _log_level(verbose: bool, quiet: bool) -> int:
    return logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING


def _give(obj: Ctx, param: click.Parameter, value: Any) -> None:
    """Merge one global option given on the command line into the Ctx."""
    name = param.name
    assert name is not None
    if name in ("verbose", "quiet"):
        obj.given[name] = True
        logging.getLogger().setLevel(
            _log_level(bool(obj.given.get("verbose")), bool(obj.given.get("quiet")))
        )
        return
    before = obj.given.get(name)
    if before is not None and before != value:
        raise click.BadParameter(
            f"given as {before} before the command and as {value} after it; give it once",
            param=param,
        )
    obj.given[name] = value
    if name == "config_path":
        obj.config_path = value
        obj._settings = None
    elif name == "cadir":
        obj.override(cadir=str(value))


class GlobalOption(click.Option):
    """A global option repeated on a command: merged into the Ctx, not passed to the function."""

    def __init__(self, decls: tuple[str, ...], **attrs: Any) -> None:
        super().__init__(list(decls), expose_value=False, callback=self._merge, **attrs)

    @staticmethod
    def _merge(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False or ctx.resilient_parsing:
            return
        obj = ctx.find_object(Ctx)
        assert obj is not None, "global options need the splitca group's Ctx"
        _give(obj, param, value)


class GlobalOptions(click.Command):
    """Adds the global options to a command or nested group; help lists them in their own
    short section. A command's own option with the same flag would win (none has one; a test
    checks that every command accepts every global option)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taken = {opt for p in self.params for opt in p.opts + p.secondary_opts}
        for decls, attrs in _GLOBAL_OPTIONS:
            if not taken.intersection(d for d in decls if d.startswith("-")):
                self.params.append(GlobalOption(decls, **attrs))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                (shared if isinstance(param, GlobalOption) else own).append(record)
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if shared:
            with formatter.section("Global options (before or after the command)"):
                formatter.write_dl(shared)
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)


class SplitCACommand(GlobalOptions):
    """Every `splitca X` command (the group's command_class)."""


class SplitCASubGroup(GlobalOptions, click.Group):
    """Nested groups (`crl`, `index`): their commands take the global options too."""

    command_class = SplitCACommand
    group_class = type  # groups nested deeper: this class again


class SplitCAGroup(click.Group):
    """Loads command modules lazily; turns any SplitCAError into one line and its exit code."""

    command_class = SplitCACommand
    group_class = SplitCASubGroup

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
            obj = ctx.find_object(Ctx)
            if obj is not None and obj.json_output:
                error = {
                    "error": str(exc),
                    "kind": type(exc).__name__,
                    "exit_code": exit_code_for(exc),
                }
                click.echo(json.dumps(error, separators=(",", ":")), err=True)
            else:
                click.echo(f"Error: {exc}", err=True)
            ctx.exit(exit_code_for(exc))


def _default_config() -> Path | None:
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _group_options(fn: F) -> F:
    """The global options, before the command: exposed to cli(); --config also reads the env."""
    for decls, attrs in reversed(_GLOBAL_OPTIONS):
        extra: dict[str, Any] = {"envvar": "SPLITCA_CONFIG"} if decls[-1] == "config_path" else {}
        fn = click.option(*decls, **attrs, **extra)(fn)
    return fn


@click.group(cls=SplitCAGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_group_options
@click.version_option(package_name="splitca")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, cadir: Path | None, verbose: bool, quiet: bool
) -> None:
    """splitca: a Puppet-compatible certificate authority and split-CA toolkit.

    \b
    Start here:
      splitca setup --cadir /var/lib/splitca/ca --certname ca.example.com
      splitca serve --cadir /var/lib/splitca/ca
      splitca list --all --cadir /var/lib/splitca/ca
    Global options work before or after the command. Every command works
    while 'splitca serve' runs.
    """
    logging.basicConfig(
        level=_log_level(verbose, quiet),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from_command_line = ctx.get_parameter_source("config_path") is ParameterSource.COMMANDLINE
    obj = Ctx(config_path if config_path is not None else _default_config())
    given: dict[str, Any] = {"config_path": config_path if from_command_line else None}
    given.update(cadir=cadir, verbose=verbose or None, quiet=quiet or None)
    obj.given = {k: v for k, v in given.items() if v is not None}
    if cadir is not None:
        obj.override(cadir=str(cadir))
    ctx.obj = obj


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    os.umask(0o022)
    cli.main(args=argv, prog_name="splitca")
