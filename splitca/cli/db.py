"""CLI: ``splitca db``, the PostgreSQL store's schema and moving a CA in and out of the database."""

from __future__ import annotations

from pathlib import Path

import click

from ._base import Ctx, cli, echo_json, format_option, pass_ctx

__all__ = ["db"]


@cli.group()
def db() -> None:
    """Maintain the PostgreSQL store's database (the 'store' setting).

    Several CA replicas share one database; see docs/ha.md.
    """


@db.command(name="migrate")
@format_option
@pass_ctx
def db_migrate(c: Ctx, fmt: str) -> None:
    """Create or upgrade splitca's schema in the database (idempotent).

    Safe to run from several hosts at once: one does the work, the others wait for it
    and find it done. 'splitca setup' and 'splitca serve' migrate by themselves too.
    The password comes from database_password_file or libpq's PGPASSWORD/PGPASSFILE.
    """
    from ..compose import migrate_database

    before, after = migrate_database(c.settings)
    if fmt == "json":
        echo_json({"schema_version_before": before, "schema_version": after})
    elif before == after:
        click.echo(f"Schema is at version {after}; nothing to do.")
    else:
        click.echo(f"Schema migrated from version {before} to {after}.")


def _report(verb: str, counts: dict[str, int], fmt: str) -> None:
    if fmt == "json":
        echo_json(counts)
        return
    click.echo(
        f"{verb}: {counts['certificates']} certificates, {counts['requests']} pending requests, "
        f"{counts['inventory']} serials issued, {counts['revocations']} revocations, "
        f"CRL number {counts['crl_number']}, next serial {counts['next_serial']:X}."
    )


@db.command(name="import")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a CA the database already holds.")
@format_option
@pass_ctx
def db_import(c: Ctx, source: Path, force: bool, fmt: str) -> None:
    """Load the CA directory SOURCE (splitca's or puppetserver's) into the database.

    Certificates, pending requests, the inventory, the serial counter, revocations and
    the CRL with its number go in one transaction, checked against what was read before
    it commits: every serial is kept. A database that already holds a CA is refused
    (exit 4) unless --force. The CA key is copied to this host's cadir (the global
    option) if it has none. Stop the old CA first.
    """
    from ..compose import import_cadir

    _report("Imported", import_cadir(c.settings, source, force=force), fmt)


@db.command(name="export")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@format_option
@pass_ctx
def db_export(c: Ctx, dest: Path, fmt: str) -> None:
    """Write the database's CA as a new puppetserver-layout CA directory DEST.

    The result is served by 'splitca serve' on the file store and by puppetserver, with
    the same certificates, inventory, serial counter and CRL. DEST must be absent or
    empty. The CA key is this host's copy (none is written if this host has none).
    """
    from ..compose import export_cadir

    _report("Exported", export_cadir(c.settings, dest), fmt)
