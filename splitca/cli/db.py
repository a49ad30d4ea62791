"""CLI: ``splitca db``, the PostgreSQL store's schema (``migrate``)."""

from __future__ import annotations

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
