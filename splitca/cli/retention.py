"""Retention commands: purge what the CA no longer needs (long-expired certificates)."""

from __future__ import annotations

import click

from splitca.core.audit import Actor

from ..config import parse_duration
from ._base import Ctx, cli, echo_json, format_option, pass_ctx

CLI_ACTOR = Actor("cli")


@cli.command()
@click.option(
    "--expired",
    is_flag=True,
    help="Purge certificates that expired more than --older-than ago (required).",
)
@click.option(
    "--older-than",
    default="90d",
    show_default=True,
    help="How long a certificate must have been expired, e.g. 30d or 1y.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@format_option
@pass_ctx
def purge(c: Ctx, expired: bool, older_than: str, dry_run: bool, fmt: str) -> None:
    """Remove long-expired certificates' files (signed/NAME.pem) and their CRL entries.

    The inventory (so no serial is ever reused) and the audit log keep every
    certificate; the CRL is re-signed once. Safe while 'splitca serve' runs.

    \b
    Example:
      splitca purge --expired --older-than 90d --dry-run
    """
    if not expired:
        raise click.UsageError("say what to purge: --expired")
    age = parse_duration(older_than, key="--older-than")

    def progress(done: int, total: int) -> None:
        if fmt == "text" and total > 1000 and (done % 1000 < 200 or done == total):
            click.echo(f"  {done}/{total} expired certificates...", err=True)

    result = c.ca.purge_expired(age, dry_run=dry_run, progress=progress, actor=CLI_ACTOR)
    if fmt == "json":
        echo_json(result.as_dict())
        return
    verb = "Would remove" if dry_run else "Removed"
    click.echo(
        f"{verb} {len(result.certificates)} certificate file(s) and "
        f"{len(result.crl_entries)} CRL entr{'y' if len(result.crl_entries) == 1 else 'ies'} "
        f"of certificates expired before {result.cutoff.isoformat(timespec='seconds')}"
    )
    for name, serial in sorted(result.certificates.items()):
        click.echo(f"    {name:<40} serial {serial}")
    if result.crl_number is not None:
        click.echo(f"CRL number {result.crl_number} published without them")
