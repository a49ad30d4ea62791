"""Provisioner and classifier commands: register, enroll, registrations, unregister, classify."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from splitca.admin.port import EnrollOptions
from splitca.enrollment import enroll as enrollment
from splitca.enrollment.registry import Classification, Registry

from ..compose import open_registry
from ..config import parse_duration
from ..errors import InvalidRequest, NotFound
from ._base import Ctx, Outcome, cli, echo_json, finish, format_option, pass_ctx
from ._remote import admin, is_remote, remote_options

F = TypeVar("F", bound=Callable[..., Any])


def _registry(c: Ctx) -> Registry:
    return open_registry(c.settings)


def _classification(
    classes: tuple[str, ...], params: tuple[str, ...], environment: str | None
) -> Classification:
    names = [n.strip() for v in classes for n in v.split(",") if n.strip()]
    parameters: dict[str, object] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidRequest(f"--param {item!r}: expected NAME=VALUE")
        parameters[key.strip()] = value
    return Classification.build(names, parameters, environment or "")


def _ttl(ttl: str | None) -> dt.timedelta | None:
    """--ttl, or None for the registry_ttl of the CA that registers (this host's or --ca-url's)."""
    return parse_duration(ttl, key="--ttl") if ttl else None


_classification_options = [
    click.option(
        "--class",
        "classes",
        multiple=True,
        metavar="CLASS",
        help="Puppet class for the node (repeat, or comma-separate), e.g. hadoop::worker.",
    ),
    click.option(
        "--param",
        "params",
        multiple=True,
        metavar="NAME=VALUE",
        help="Top-scope parameter for the node (repeatable); values are strings.",
    ),
    click.option("--environment", help="Puppet environment the classifier assigns."),
    click.option(
        "--ttl", help="How long the token can enroll the machine (default registry_ttl; max 30d)."
    ),
]


def classification_options(fn: F) -> F:
    for option in reversed(_classification_options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("certname")
@classification_options
@click.option(
    "--replace", is_flag=True, help="Overwrite an existing registration (issues a new token)."
)
@format_option
@remote_options()
@pass_ctx
def register(
    c: Ctx,
    certname: str,
    classes: tuple[str, ...],
    params: tuple[str, ...],
    environment: str | None,
    ttl: str | None,
    replace: bool,
    fmt: str,
) -> None:
    """Pre-register CERTNAME and print its one-time enrollment token (shown only once).

    \b
    Put the token in the machine's csr_attributes.yaml:
      custom_attributes:
        1.2.840.113549.1.9.7: <token>
    With 'autosign: registry' the CA signs its first CSR, once, within --ttl.
    Text output is the token alone on stdout (details on stderr), for scripts:
      TOKEN=$(splitca register web7.example.com --class role::web)
    """
    if not is_remote():  # a remote CA's autosign is not in this host's config
        _warn_unless_registry(c)
    found = admin(c).register(
        certname,
        _classification(classes, params, environment),
        ttl=_ttl(ttl),
        replace=replace,
    )
    if fmt == "json":
        echo_json(found)
        return
    click.echo(
        f"Registered {certname} until {found['expires']} "
        f"(token id {found['token_id']}); the token is shown once:",
        err=True,
    )
    click.echo(found["token"])


def _warn_unless_registry(c: Ctx) -> None:
    """A token is only checked under ``autosign: registry``; say so before one is made."""
    value = c.settings.autosign
    if value == "registry":
        return
    shown = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value
    effect = (
        "every valid CSR is signed, token or not"
        if value is True
        else "the machine's CSR is not signed by its token: it waits for 'splitca sign' "
        "(or for that policy)"
    )
    click.echo(
        f"Warning: this CA's autosign is {shown}, not registry: {effect}. "
        "Set 'autosign: registry' in the CA's configuration (docs/enrollment.md).",
        err=True,
    )


@cli.command()
@classification_options
@click.option("--prefix", default="", help="Certname prefix before the UUID, e.g. hadoop-.")
@click.option("--domain", default="", help="Domain after the UUID: <uuid>.<domain>.")
@click.option("--server", help="Puppet server of the agent (default: this CA's certname).")
@click.option("--server-port", type=int, default=8140, show_default=True)
@click.option("--ca-server", help="CA server of the agent (default: this CA's certname).")
@click.option("--ca-port", type=int, help="CA port (default: the 'port' setting).")
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SPLITCA_CA_CERT",
    help="CA certificate to embed (default: <cadir>/ca_crt.pem); with --ca-url the one the CA "
    "server is verified against (default: the agent ssldir's certs/ca.pem), and the CA embeds "
    "its own [env SPLITCA_CA_CERT].",
)
@click.option(
    "--install",
    type=click.Choice(enrollment.INSTALL_CHOICES),
    default="packages",
    show_default=True,
    help="How cloud-init installs the agent: distro packages, Puppet's aio (puppet7), none.",
)
@click.option("--no-run", is_flag=True, help="Do not run the agent from cloud-init.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="yaml: the user-data itself; json: {certname, expires, token_id, user_data}.",
)
@remote_options(ca_cert=False)
@pass_ctx
def enroll(
    c: Ctx,
    classes: tuple[str, ...],
    params: tuple[str, ...],
    environment: str | None,
    ttl: str | None,
    prefix: str,
    domain: str,
    server: str | None,
    server_port: int,
    ca_server: str | None,
    ca_port: int | None,
    ca_cert: Path | None,
    install: str,
    no_run: bool,
    fmt: str,
) -> None:
    """Register a new machine under a fresh UUID certname and print its cloud-init user-data.

    \b
    Pass the output as the instance's user-data, e.g.
      splitca enroll --class hadoop::worker > user-data
      aws ec2 run-instances --user-data file://user-data ...
    cloud-init's puppet module writes puppet.conf (server, ca_server, certname),
    the CA certificate and csr_attributes.yaml (the one-time token); the agent's
    first CSR is autosigned by a CA with 'autosign: registry'.
    """
    for port in (server_port, ca_port):
        if port is not None and not 1 <= port <= 65535:
            raise click.UsageError("ports must be 1-65535")
    if not is_remote():
        _warn_unless_registry(c)
    options = EnrollOptions(
        prefix=prefix,
        domain=domain,
        server=server,
        server_port=server_port,
        ca_server=ca_server,
        ca_port=ca_port,
        install=install,
        run_agent=not no_run,
        ca_cert=ca_cert,
    )
    found = admin(c, ca_cert=ca_cert).enroll(
        _classification(classes, params, environment), ttl=_ttl(ttl), options=options
    )
    if fmt == "json":
        echo_json(found)
        return
    click.echo(
        f"Registered {found['certname']} until {found['expires']} (token id {found['token_id']})",
        err=True,
    )
    click.echo(str(found["user_data"]), nl=False)


@cli.command(name="registrations")
@click.option(
    "--state",
    type=click.Choice(["waiting", "enrolled", "expired"]),
    help="Only registrations in this state.",
)
@format_option
@remote_options()
@pass_ctx
def registrations_(c: Ctx, state: str | None, fmt: str) -> None:
    """List registrations: waiting (token unused), enrolled (token used) or expired.

    Tokens are never shown (they are not stored); token_id identifies one in the audit log.
    """
    rows = admin(c).registrations()
    if state:
        rows = [r for r in rows if r["state"] == state]
    if fmt == "json":
        echo_json(rows)
        return
    if not rows:
        click.echo("No registrations")
        return
    for r in rows:
        classes = ",".join(str(x) for x in r["classes"])  # type: ignore[attr-defined]
        env = f"  environment={r['environment']}" if r["environment"] else ""
        click.echo(
            f"{r['certname']:<45} {r['state']:<8} expires {r['expires']}  "
            f"classes={classes or '-'}{env}"
        )


@cli.command()
@click.argument("certnames", nargs=-1, required=True)
@remote_options()
@format_option
@pass_ctx
def unregister(c: Ctx, certnames: tuple[str, ...], fmt: str) -> None:
    """Delete registrations: their tokens stop working and 'classify' forgets the nodes.

    Certificates already issued are untouched (use 'splitca clean' for those).
    Every name is tried; names that were not registered are reported and make
    the exit code 3.
    """
    ca = admin(c)
    done: list[str] = []
    missing: list[str] = []
    for name in certnames:
        try:
            ca.unregister(name)
        except NotFound:
            missing.append(name)
            if fmt != "json":
                click.echo(f"Error: {name} is not registered", err=True)
            continue
        done.append(name)
        if fmt != "json":
            click.echo(f"Unregistered {name}")
    if fmt == "json":
        echo_json({"unregistered": done, "not_found": missing})
    if missing:
        finish(NotFound)  # each missing name reported above


@cli.command()
@click.argument("certname")
@pass_ctx
def classify(c: Ctx, certname: str) -> None:
    """Print CERTNAME's classification as Puppet ENC YAML; exit 1 if it is not registered.

    \b
    On compile masters (puppet.conf, [server] section):
      node_terminus  = exec
      external_nodes = /usr/local/bin/splitca-classify
    where splitca-classify runs 'splitca --config /etc/splitca/splitca.yaml classify "$1"'.
    Read-only; needs only the 'registry' setting, not the CA key.
    """
    found = enrollment.classify(_registry(c), certname)
    if found is None:
        click.echo(f"splitca classify: {certname} is not registered", err=True)
        finish(Outcome.NOT_REGISTERED)
    click.echo(enrollment.enc_yaml(found), nl=False)
