"""``splitca masters``: which CRL each compile master has, and whether any is too far behind."""

from __future__ import annotations

import datetime as dt

import click

from splitca.config import parse_duration
from splitca.core.usecases.fleet import Fleet, MasterState
from splitca.errors import ConfigError, MastersBehind

from ._base import Ctx, cli, echo_json, exit_code_for, finish, format_option, pass_ctx

_EXIT_HELP = f"""\b
Exit codes (for monitoring):
  0   every master is within the threshold (or none has synced yet)
  {exit_code_for(MastersBehind):d}  a master is behind by more than --max-behind / --max-age
  5   the CA's store cannot be read
"""


@cli.command(name="masters", epilog=_EXIT_HELP)
@click.option(
    "--max-behind",
    type=click.IntRange(min=0),
    metavar="N",
    help="Fail when a master lacks more than N CRL numbers (default 0: any missed CRL).",
)
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Fail when a master has lacked the current CRL for longer than this (e.g. 30m); "
    "allows for the sync timer's interval.",
)
@format_option
@pass_ctx
def masters(c: Ctx, max_behind: int | None, max_age: str | None, fmt: str) -> None:
    """List each compile master's CRL: number, last fetch, age, and whether it is behind.

    The CA records a master when its 'splitca sync-crl' fetches the CRL presenting the
    master's certificate (sync-crl does by default, from the host's Puppet ssldir).
    A master that is behind still admits agents revoked since: run this from
    monitoring, with --max-age a little longer than the sync timer's interval.
    """
    if max_behind is not None and max_age is not None:
        raise ConfigError("give --max-behind or --max-age, not both")
    age_limit = parse_duration(max_age, key="--max-age").total_seconds() if max_age else None
    number_limit = 0 if max_behind is None and age_limit is None else max_behind
    fleet = c.ca.masters()
    late = [m for m in fleet.masters if _late(m, number_limit, age_limit)]
    if fmt == "json":
        echo_json(
            {
                "crl_number": fleet.crl_number,
                "crl_published": _iso(fleet.crl_published),
                "masters": [{**m.as_dict(), "late": m in late} for m in fleet.masters],
                "late": [m.name for m in late],
            }
        )
    else:
        _print_table(fleet, late)
    if late:
        limit = f"--max-age {max_age}" if max_age else f"--max-behind {number_limit}"
        click.echo(
            f"{len(late)} master(s) behind the current CRL by more than {limit}: "
            + ", ".join(m.name for m in late),
            err=True,
        )
        finish(MastersBehind)


def _late(m: MasterState, number_limit: int | None, age_limit: float | None) -> bool:
    if age_limit is not None:
        return m.behind > 0 and m.lag > age_limit
    return m.behind > (number_limit or 0)


def _print_table(fleet: Fleet, late: list[MasterState]) -> None:
    click.echo(f"Current CRL: number {fleet.crl_number}, published {_iso(fleet.crl_published)}")
    if not fleet.masters:
        click.echo("No compile master has fetched the CRL with 'splitca sync-crl' yet.")
        return
    width = max(len("CERTNAME"), *(len(m.name) for m in fleet.masters))
    click.echo(f"{'CERTNAME':<{width}}  {'CRL':>6}  {'FETCHED (UTC)':<20}  {'AGE':>7}  STATE")
    for m in fleet.masters:
        state = "current" if not m.behind else f"behind by {m.behind} for {_span(m.lag)}"
        if m in late:
            state += " (LATE)"
        click.echo(
            f"{m.name:<{width}}  {m.crl_number:>6}  {_iso(m.fetched_at):<20}  {_span(m.age):>7}  {state}"
        )


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
