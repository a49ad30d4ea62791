"""The remote options (--ca-url, --cert, --key, --ca-cert) and the Admin a command works on."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from splitca.admin.port import Admin, RemoteTarget
from splitca.core.audit import Actor

from ._base import Ctx

__all__ = ["CLI_ACTOR", "admin", "remote_options", "user_actor"]

F = TypeVar("F", bound=Callable[..., Any])
CLI_ACTOR = Actor("cli")
_META = "splitca.remote"
_PATH = click.Path(dir_okay=False, path_type=Path)


def user_actor() -> Actor:
    """The CLI as the user running it (registrations record who made them)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return Actor("cli", user)


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and not ctx.resilient_parsing:
        assert param.name is not None
        typed = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        ctx.meta.setdefault(_META, {})[param.name] = (value, typed)


_OPTIONS: tuple[tuple[str, str, str, Any], ...] = (
    (
        "--ca-url",
        "SPLITCA_CA_URL",
        "URL",
        "Administer the CA at this URL (https://ca.example.com:8140) through its HTTP API "
        "instead of the local cadir [env SPLITCA_CA_URL].",
    ),
    (
        "--cert",
        "SPLITCA_CERT",
        "FILE",
        "With --ca-url: the admin client certificate (pp_cli_auth, from 'splitca generate "
        "--ca-client') [env SPLITCA_CERT; default: the agent ssldir's certs/CERTNAME.pem].",
    ),
    (
        "--key",
        "SPLITCA_KEY",
        "FILE",
        "With --ca-url: its private key [env SPLITCA_KEY; default: the agent ssldir's "
        "private_keys/CERTNAME.pem].",
    ),
    (
        "--ca-cert",
        "SPLITCA_CA_CERT",
        "FILE",
        "With --ca-url: the CA certificate the server is verified against [env "
        "SPLITCA_CA_CERT; default: the agent ssldir's certs/ca.pem].",
    ),
)


def remote_options(*, ca_cert: bool = True) -> Callable[[F], F]:
    """Add the remote options to a command (without --ca-cert for `enroll`, which has its own)."""

    def decorate(fn: F) -> F:
        for flag, env, metavar, text in reversed(_OPTIONS):
            if flag == "--ca-cert" and not ca_cert:
                continue
            fn = click.option(
                flag,
                envvar=env,
                metavar=metavar,
                type=str if flag == "--ca-url" else _PATH,
                expose_value=False,
                callback=_keep,
                help=text,
            )(fn)
        return fn

    return decorate


def is_remote() -> bool:
    """Whether this command was given --ca-url (or SPLITCA_CA_URL)."""
    found: dict[str, tuple[Any, bool]] = click.get_current_context().meta.get(_META, {})
    return bool(found.get("ca_url", (None, False))[0])


def admin(c: Ctx, *, ca_cert: Path | None = None) -> Admin:
    """The Admin of this command: the CA at --ca-url if given, else this host's."""
    from ..compose import open_admin

    found: dict[str, tuple[Any, bool]] = click.get_current_context().meta.get(_META, {})
    given = {name: value for name, (value, _) in found.items()}
    if ca_cert is not None:
        given["ca_cert"] = ca_cert
    url = given.get("ca_url")
    target = None
    if url:
        target = RemoteTarget(url, given.get("cert"), given.get("key"), given.get("ca_cert"))
    else:
        # Typed without --ca-url, they would be ignored: say so rather than act on the cadir.
        typed = sorted(f"--{name.replace('_', '-')}" for name, (_, t) in found.items() if t)
        if typed:
            raise click.UsageError(f"{' and '.join(typed)} only work with --ca-url URL")
    return open_admin(
        target,
        settings=lambda: c.settings,
        ca=lambda: c.ca,
        actor=CLI_ACTOR,
        registry_actor=user_actor(),
    )
