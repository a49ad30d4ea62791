"""Operator commands for the CA itself: setup, serve, list, status, sign, revoke, clean, generate, crl, index."""
# Over 400 lines because it holds every CA command (setup, serve, list, status, sign, revoke, clean, generate, crl, index), each a thin parse-call-render.

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path

import click
from cryptography import x509

from splitca.core.ports import Refusal, Row
from splitca.core.usecases.chain import DEFAULT_ROOT_CRL_TTL, DEFAULT_ROOT_TTL, RootSpec
from splitca.core.usecases.ssldir import ssldir_paths

from .. import pki
from ..compose import setup_ca
from ..config import parse_duration
from ..errors import ConfigError, Conflict, InvalidRequest, NotFound
from ._base import Ctx, Outcome, cli, echo_json, finish, format_option, pass_ctx
from ._remote import CLI_ACTOR, admin, is_remote, remote_options
from .chain import read_input, read_passphrase

log = logging.getLogger(__name__)


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _given_names(values: tuple[str, ...]) -> list[str]:
    """The names of a command that needs one: arguments given but naming nothing (an
    empty "$HOST" in a script, or only commas) are a usage error, never a quiet success."""
    names = _split_names(values)
    if not names:
        raise click.UsageError("no CERTNAME given (the arguments are empty or only commas)")
    return names


# --- setup and serve ------------------------------------------------------------------------


@cli.command()
@click.option("--certname", help="This CA host's certname (default: the host's FQDN).")
@click.option(
    "--ca-name", help='Subject CN of the CA certificate (default "Puppet CA: <certname>").'
)
@click.option(
    "--dns-alt-names",
    help="Alt names for the CA server's TLS certificate, e.g. puppet,IP:127.0.0.1.",
)
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), help="CA key type (default rsa).")
@click.option("--key-size", type=int, help="RSA key size in bits (default 4096).")
@click.option(
    "--ec-curve", type=click.Choice(["P-256", "P-384"]), help="EC curve with --key-type ec."
)
@click.option("--ca-ttl", help="CA certificate lifetime, e.g. 5y or 15y (default 5y).")
@click.option(
    "--server-identity",
    is_flag=True,
    help="For a CA that already exists (imported from puppetserver, say): issue this host's "
    "TLS certificate if it is missing. Refused if signed/CERTNAME.pem exists.",
)
@click.option(
    "--encrypt-key",
    is_flag=True,
    help="Write ca_key.pem encrypted (PKCS#8), with the passphrase from ca_key_passphrase_file "
    "or $CREDENTIALS_DIRECTORY (never from the command line). Setting: encrypt_ca_key.",
)
@click.option(
    "--intermediate",
    is_flag=True,
    help="Make a root CA too, and sign agents with an intermediate under it "
    "(as 'puppetserver ca setup'); the root key goes to --root-key-out.",
)
@click.option(
    "--root-key-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --intermediate: where to write the root key (default CADIR/root_key.pem); "
    "move it offline afterwards.",
)
@click.option(
    "--root-ca-name",
    help='With --intermediate: the root\'s CN (default "Puppet Root CA: <random>").',
)
@click.option(
    "--root-ttl",
    help="With --intermediate: the root certificate's lifetime (default 15y, at least --ca-ttl).",
)
@click.option(
    "--root-crl-ttl", help="With --intermediate: how long the root's CRL is valid (default 1y)."
)
@click.option(
    "--root-passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --intermediate: encrypt the root key with the passphrase in this file.",
)
@format_option
@pass_ctx
def setup(
    c: Ctx,
    certname: str | None,
    ca_name: str | None,
    dns_alt_names: str | None,
    key_type: str | None,
    key_size: int | None,
    ec_curve: str | None,
    ca_ttl: str | None,
    server_identity: bool,
    encrypt_key: bool,
    intermediate: bool,
    root_key_out: Path | None,
    root_ca_name: str | None,
    root_ttl: str | None,
    root_crl_ttl: str | None,
    root_passphrase_file: Path | None,
    fmt: str,
) -> None:
    """Create a CA in the cadir (puppetserver's layout). Safe to re-run.

    Writes ca_crt.pem, ca_key.pem (0640), ca_pub.pem, ca_crl.pem, serial,
    inventory.txt, signed/ and requests/, plus this host's TLS certificate with
    pp_cli_auth (server/cert.pem, server/key.pem). If a CA already exists not a
    byte is changed; a partial CA is reported and never overwritten.

    \b
    An existing CA without splitca's server certificate (puppetserver's cadir):
      splitca setup --server-identity --certname ca.example.com
    issues it (and never replaces a certificate file).

    \b
    A root CA and an intermediate that signs agents (docs/intermediate-ca.md):
      splitca setup --intermediate --root-key-out /media/offline/root_key.pem
    """
    c.override(
        certname=certname,
        ca_name=ca_name,
        dns_alt_names=dns_alt_names,
        key_type=key_type,
        key_size=key_size,
        ec_curve=ec_curve,
        ca_ttl=ca_ttl,
        encrypt_ca_key=True if encrypt_key else None,
    )
    spec = None
    root_given = root_key_out or root_ca_name or root_ttl or root_crl_ttl or root_passphrase_file
    if root_given and not intermediate:
        raise click.UsageError("the --root-* options go with --intermediate")
    if intermediate:
        spec = RootSpec(
            key_out=root_key_out or c.settings.cadir / "root_key.pem",
            name=root_ca_name,
            ttl=parse_duration(root_ttl, key="--root-ttl") if root_ttl else DEFAULT_ROOT_TTL,
            crl_ttl=parse_duration(root_crl_ttl, key="--root-crl-ttl")
            if root_crl_ttl
            else DEFAULT_ROOT_CRL_TTL,
            passphrase=read_passphrase(root_passphrase_file),
        )
        if spec.crl_ttl < dt.timedelta(hours=1):
            raise ConfigError("--root-crl-ttl: must be at least 1h")
    result = setup_ca(c.settings, server_identity=server_identity, intermediate=spec)
    if fmt == "json":
        echo_json(
            {"created": result.created, "cadir": str(c.settings.cadir), "messages": result.messages}
        )
    else:
        for msg in result.messages:
            click.echo(msg)


@cli.command()
@click.option("--listen", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8140).")
@click.option(
    "--workers", type=int, help="Worker processes sharing the port (default: one per CPU)."
)
@click.option("--threads", type=int, help="Threads per worker (default 16).")
@click.option("--autosign", help="Override autosign: true, false, registry, or a path.")
@pass_ctx
def serve(
    c: Ctx,
    listen: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    autosign: str | None,
) -> None:
    """Run the CA's HTTPS API (Puppet's /puppet-ca/v1 and legacy paths) in the foreground.

    Stops cleanly on SIGTERM, SIGHUP or Ctrl-C (it has no reload: restart it to apply
    configuration changes). Point agents at it with
    'puppet ssl bootstrap --ca_server HOST --ca_port PORT'.
    """
    from splitca.http.server import serve as run

    if logging.getLogger().level == logging.WARNING:  # neither -v nor -q given
        logging.getLogger().setLevel(logging.INFO)  # a server's access log belongs on stderr

    value: bool | str | None = autosign
    if autosign is not None and autosign.lower() in ("true", "false"):
        value = autosign.lower() == "true"
    c.override(listen=listen, port=port, workers=workers, threads=threads, autosign=value)

    def ready(url: str) -> None:
        click.echo(f"splitca: CA ready at {url}/puppet-ca/v1 (cadir {c.settings.cadir})", err=True)

    finish(Outcome(run(c.settings, ready=ready)))


# --- listing -----------------------------------------------------------------------------


def _text_line(row: Row, revocation: dict[str, object] | None = None) -> str:
    d = row.as_dict()
    alt = d.get("subject_alt_names") or []
    extra = f"\talt names: {json.dumps(alt)}" if alt else ""
    auth = d.get("authorization_extensions") or {}
    if auth:
        extra += f"\tauthorization extensions: {json.dumps(auth)}"
    if row.state == "requested" and row.reason:
        extra += f"\tpending: {_shown(row.reason)}"
    if "not_after" in d:
        extra += f"\texpires: {d['not_after']}"
    if revocation is not None:
        extra += f"\trevoked: {revocation['date']} ({revocation['reason']})"
    return f"    {row.name:<40} (SHA256)  {d['fingerprint']}{extra}"


@cli.command(name="list")
@click.option(
    "--pending",
    "state",
    flag_value="requested",
    help="Only CSRs waiting for signing (the default).",
)
@click.option("--signed", "state", flag_value="signed", help="Only valid signed certificates.")
@click.option("--revoked", "state", flag_value="revoked", help="Only revoked certificates.")
@click.option("--all", "state", flag_value="all", help="Everything: pending, signed and revoked.")
@click.option(
    "--refused",
    "state",
    flag_value="refused",
    help="CSRs refused at submission (name, reason, time, address) within refusal_retention.",
)
@format_option
@remote_options()
@pass_ctx
def list_(c: Ctx, state: str | None, fmt: str) -> None:
    """List CSRs and certificates, from the index (fast at 100k certificates).

    JSON output is an array of puppetserver certificate_status objects; pending
    entries carry "pending_reason" explaining why they were not signed. With
    --refused: the CSRs this CA refused when they were submitted (never stored),
    newest first, as objects with certname, kind, reason, address and time.
    """
    state = state or "requested"
    ca = admin(c)
    if state == "refused":
        _list_refused(c, ca.refusals(), fmt)
        return
    rows = ca.statuses(None if state == "all" else state)
    revoked: dict[int, dict[str, object]] = {}
    if state == "revoked" or (state == "all" and fmt == "text"):  # when and why, by serial
        revoked = ca.revocation_details(r.serial for r in ca.statuses("revoked") if r.serial)
    if fmt == "json" and state == "revoked":
        # Revoked certificates carry when and why ("revocation"), as in 'status'.
        echo_json([_with_revocation(r.as_dict(), revoked.get(r.serial or -1)) for r in rows])
        return
    if fmt == "json":
        # Pieces of ~2000 objects rendered by the index: no per-row Python work, and no
        # list of 100k strings in memory.
        out = sys.stdout
        for piece in ca.statuses_json(None if state == "all" else state):
            out.write(piece)
        out.write("\n")
        return
    titles = {
        "requested": "Requested Certificates:",
        "signed": "Signed Certificates:",
        "revoked": "Revoked Certificates:",
    }
    groups: dict[str, list[Row]] = {"requested": [], "signed": [], "revoked": []}
    for row in ca.statuses(None if state == "all" else state):
        groups[row.state].append(row)
    shown = 0
    for key, title in titles.items():
        if groups[key]:
            click.echo(title)
            for row in groups[key]:
                click.echo(_text_line(row, revoked.get(row.serial or -1)))
            shown += len(groups[key])
    if not shown:
        click.echo(
            "No certificates to list" if state == "all" else f"No {state} certificates to list"
        )
    if state in ("requested", "all") and not is_remote() and (refused := len(ca.refusals())):
        click.echo(
            f"{refused} CSR{'s' if refused > 1 else ''} refused recently, "
            "see 'splitca list --refused'",
            err=True,
        )


def _list_refused(c: Ctx, refusals: list[Refusal], fmt: str) -> None:
    if fmt == "json":
        echo_json([r.as_dict() for r in refusals])
        return
    window = _duration_text(c.settings.refusal_retention)
    if not refusals:
        click.echo(f"No CSRs refused in the last {window}")
        return
    click.echo(f"Refused CSRs (last {window}, newest first):")
    for r in refusals:
        d = r.as_dict()
        click.echo(
            f"    {r.certname:<40} {d['time']}  from {r.address or '-'}\t{r.kind}: {r.reason}"
        )


def _duration_text(td: dt.timedelta) -> str:
    secs = int(td.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs % size == 0:
            n = secs // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{secs} seconds"


def _with_revocation(d: dict[str, object], found: dict[str, object] | None) -> dict[str, object]:
    if found is not None:
        d["revocation"] = found
    return d


@cli.command()
@click.argument("certname")
@format_option
@remote_options()
@pass_ctx
def status(c: Ctx, certname: str, fmt: str) -> None:
    """Show one certname's certificate_status (certificate if signed, else CSR).

    Also: the Puppet extensions requested or issued (pp_role, pp_uuid, ... by their
    Puppet names), whether a pending CSR carries a challengePassword (never its
    value), alt names, fingerprints, and for a revoked certificate when and why.
    """
    ca = admin(c)
    row = ca.status(certname)
    d = ca.describe(certname) if row is not None else None
    if row is None or d is None:
        raise NotFound(f"nothing is known about {certname}")
    if fmt == "json":
        echo_json(d)
        return
    click.echo(f"{row.name}: {row.state}")
    click.echo(_text_line(row))
    for label, value in _status_details(d):
        click.echo(f"  {_shown(label) + ':':<20} {_shown(value)}")


def _shown(value: object) -> str:
    """*value* as one line of text: a character that does not print (a control, an escape,
    a newline, a bidi override) is shown escaped. Alt names, extension values and pending
    reasons are what an agent put in its CSR; they must not drive the operator's terminal
    or forge lines of the report."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _status_details(d: dict[str, object]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if "serial_number" in d:
        out.append(("serial", d["serial_number"]))
        out.append(("valid", f"{d['not_before']} to {d['not_after']}"))
    alt = d.get("subject_alt_names") or []
    assert isinstance(alt, list)
    out.append(("alt names", ", ".join(map(str, alt)) or "none"))
    exts = d.get("extensions") or {}
    assert isinstance(exts, dict)
    for name, value in exts.items():
        out.append((name, value))
    if "challenge_password" in d:
        out.append(("challengePassword", "present" if d["challenge_password"] else "none"))
    if d.get("pending_reason"):
        out.append(("pending", d["pending_reason"]))
    fps = d.get("fingerprints") or {}
    assert isinstance(fps, dict)
    for alg in ("SHA256", "SHA1", "SHA512"):
        if alg in fps:
            out.append((f"fingerprint {alg}", fps[alg]))
    revocation = d.get("revocation")
    if isinstance(revocation, dict):
        out.append(("revoked", f"{revocation['date']} ({revocation['reason']})"))
    return out


# --- sign, revoke, clean ---------------------------------------------------------------------


@cli.command()
@click.argument("certnames", nargs=-1)
@click.option(
    "--all",
    "sign_all",
    is_flag=True,
    help="Sign every pending CSR but those of reserved names (the CA's, admin_certnames).",
)
@click.option(
    "--allow-dns-alt-names",
    is_flag=True,
    help="Sign even if the CSR has subject alt names (this signing only).",
)
@click.option("--ttl", help="Certificate lifetime, e.g. 90d or 1y (default: cert_ttl or ca_ttl).")
@format_option
@remote_options()
@pass_ctx
def sign(
    c: Ctx,
    certnames: tuple[str, ...],
    sign_all: bool,
    allow_dns_alt_names: bool,
    ttl: str | None,
    fmt: str,
) -> None:
    """Sign pending CSRs: 'splitca sign NAME...' or 'splitca sign --all'.

    --all leaves the CSRs of the CA's own certname and of admin_certnames pending
    (their certificates administer the CA: anyone may ask for one first); sign
    those by name. Exits non-zero if any name could not be signed (and says why).
    """
    names = _split_names(certnames)
    if sign_all == bool(names):
        raise click.UsageError("give CERTNAME(s) or --all, not both and not neither")
    ca = admin(c)
    lifetime = parse_duration(ttl, key="--ttl") if ttl else None
    if sign_all:  # every pending CSR but the CA's own and admin certnames' (see --help)
        signed = ca.sign_all(ttl=lifetime, allow_alt_names=allow_dns_alt_names)
        names = [r.certname for r in signed]
    else:
        names = list(dict.fromkeys(names))
        signed = ca.sign(names, ttl=lifetime, allow_alt_names=allow_dns_alt_names)
    results: list[dict[str, object]] = [
        {"certname": r.certname, "signed": True, "serial": r.serial, "fingerprint": r.fingerprint}
        if r.signed
        else {"certname": r.certname, "signed": False, "error": r.error}
        for r in signed
    ]
    failed = sum(not r.signed for r in signed)
    if fmt == "json":
        echo_json(results)
    else:
        if not names:
            click.echo("No pending CSRs to sign.")
        for r in results:
            if r["signed"]:
                click.echo(
                    f"Signed certificate for {r['certname']} (serial {r['serial']}, SHA256 {r['fingerprint']})"
                )
            else:
                click.echo(f"Error: could not sign {r['certname']}: {r['error']}", err=True)
    if failed:
        finish(Conflict)  # "refused" (exit 4), each name's reason printed above


_REASONS = {r.name: r for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)}


@cli.command()
@click.argument("certnames", nargs=-1, required=True)
@click.option(
    "--reason",
    type=click.Choice(sorted(_REASONS)),
    default="key_compromise",
    show_default=True,
    help="CRL reason code (puppetserver uses key_compromise).",
)
@format_option
@remote_options()
@pass_ctx
def revoke(c: Ctx, certnames: tuple[str, ...], reason: str, fmt: str) -> None:
    """Revoke every certificate issued to each CERTNAME, with one CRL re-sign for the batch.

    Names may be given as separate arguments or comma-separated. Names with
    nothing to revoke are reported and make the exit code 3.
    """
    names = _given_names(certnames)
    ca = admin(c)
    already = ca.already_revoked(names)  # for the message only
    found, missing = ca.revoke(names, reason=_REASONS[reason])
    if fmt == "json":
        echo_json(
            {
                "revoked": found,
                "already_revoked": [n for n in already if n in found],
                "not_found": missing,
            }
        )
    else:
        for name, serials in found.items():
            numbers = f"serial{'s' if len(serials) > 1 else ''} {', '.join(map(str, serials))}"
            if name in already:
                click.echo(f"{name} was already revoked ({numbers}); the CRL is unchanged")
            else:
                click.echo(f"Revoked {name} ({numbers})")
        for name in missing:
            click.echo(f"Error: no certificate to revoke for {name}", err=True)
    if missing:
        finish(NotFound)  # each missing name printed above


@cli.command()
@click.argument("certnames", nargs=-1, required=True)
@format_option
@remote_options()
@pass_ctx
def clean(c: Ctx, certnames: tuple[str, ...], fmt: str) -> None:
    """Revoke and delete the certificates of CERTNAMEs so the hosts can re-enroll."""
    done = admin(c).clean(_given_names(certnames))
    cleaned, pending, missing = done.cleaned, done.csr_deleted, done.not_found
    if fmt == "json":
        echo_json({"cleaned": cleaned, "csr_deleted": pending, "not_found": missing})
    else:
        for name in cleaned:
            click.echo(f"Cleaned {name}: revoked and deleted its certificate")
        for name in pending:
            click.echo(f"Deleted the pending CSR of {name}")
        for name in missing:
            click.echo(f"Error: nothing to clean for {name}", err=True)
    if missing:
        finish(NotFound)  # each missing name printed above


# --- generate --------------------------------------------------------------------------------


@cli.command()
@click.argument("certname")
@click.option(
    "--dns-alt-names",
    "alt",
    help="Comma-separated alt names: puppet,master1.example.com,IP:10.0.0.5.",
)
@click.option(
    "--ca-client", is_flag=True, help="Add pp_cli_auth: the certificate may administer this CA."
)
@click.option(
    "--ssldir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write files in Puppet's ssldir layout (default ./<certname>-ssl).",
)
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True)
@click.option("--key-size", type=int, default=4096, show_default=True, help="RSA key size.")
@format_option
@pass_ctx
def generate(
    c: Ctx,
    certname: str,
    alt: str | None,
    ca_client: bool,
    ssldir: Path | None,
    key_type: str,
    key_size: int,
    fmt: str,
) -> None:
    """Issue a key and certificate here, for a compile master or an admin client.

    \b
    Files (Puppet's ssldir layout, so puppet and Apache can use them as is):
      SSLDIR/private_keys/CERTNAME.pem   the key, mode 0600
      SSLDIR/certs/CERTNAME.pem          the certificate
      SSLDIR/certs/ca.pem                the CA certificate
      SSLDIR/crl.pem                     the current CRL
    \b
    Example (compile master):
      splitca generate master1.example.com --dns-alt-names puppet,master1.example.com
    """
    try:
        alt_names = pki.parse_alt_names(alt.split(",")) if alt else []
    except ValueError as exc:
        raise InvalidRequest(f"--dns-alt-names: {exc}") from None
    if key_type == "rsa" and key_size not in (2048, 3072, 4096):
        raise ConfigError("--key-size: must be 2048, 3072 or 4096")
    if problem := pki.certname_problem(certname):
        raise InvalidRequest(f"{certname!r}: {problem}")
    out = ssldir or Path(f"{certname}-ssl")
    paths = ssldir_paths(certname, out)
    cert = c.ca.generate_ssldir(  # a CA that cannot be opened fails before anything is made
        certname,
        out,
        alt_names=alt_names,
        ca_client=ca_client,
        key_type=key_type,
        key_size=key_size,
        actor=CLI_ACTOR,
    )
    if fmt == "json":
        echo_json(
            {
                "certname": certname,
                "serial": cert.serial_number,
                **{k: str(v) for k, v in paths.items()},
            }
        )
    else:
        click.echo(
            f"Issued {certname} (serial {cert.serial_number}{', pp_cli_auth' if ca_client else ''})"
        )
        for k, v in paths.items():
            click.echo(f"  {k:<5} {v}")


# --- CRL maintenance ---------------------------------------------------------------------------


@cli.group()
def crl() -> None:
    """Show or re-issue the CA's CRL."""


@crl.command(name="show")
@format_option
@pass_ctx
def crl_show(c: Ctx, fmt: str) -> None:
    """Show the CRL's number, dates, size and entry count."""
    info = c.ca.crl_info()
    if fmt == "json":
        echo_json(info)
        return
    chain = info.pop("chain")
    warnings = info.pop("warnings")
    for key, value in info.items():
        click.echo(f"{key:<24} {value}")
    assert isinstance(chain, list) and isinstance(warnings, list)
    if len(chain) > 1:
        click.echo("chain:")
        for one in chain:
            whose = "this CA" if one["own"] else "above"
            click.echo(
                f"  {one['issuer']:<40} number {one['crl_number']}, next update "
                f"{one['next_update']} ({whose}{'' if one['signature_valid'] else ', BAD SIGNATURE'})"
            )
    for line in warnings:
        click.echo(f"Warning: {line}", err=True)


@crl.command(name="refresh")
@click.option("--force", is_flag=True, help="Re-issue even if nextUpdate is still far away.")
@format_option
@pass_ctx
def crl_refresh(c: Ctx, force: bool, fmt: str) -> None:
    """Re-issue the CRL if it is due (within crl_refresh_margin of nextUpdate), pruning expired entries.

    Meant for a timer; 'splitca serve' also does this in the background.
    """
    done = c.ca.refresh_crl(force=force, actor=CLI_ACTOR)
    info = c.ca.crl_info()
    if fmt == "json":
        echo_json({"reissued": done, **info})
    elif done:
        click.echo(f"Re-issued CRL number {info['crl_number']}, next update {info['next_update']}")
    else:
        click.echo(
            f"CRL number {info['crl_number']} is fresh until {info['next_update']}; nothing to do"
        )


@crl.command(name="install-root")
@click.argument("crl_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@format_option
@pass_ctx
def crl_install_root(c: Ctx, crl_file: Path, fmt: str) -> None:
    """Serve a new CRL of the root (or any CA above this one) after this CA's own CRL.

    FILE comes from 'splitca ca root-crl' on the offline machine. It must verify with
    that CA's certificate in ca_crt.pem, be current and have a higher number than the
    one it replaces. ca_crl.pem is re-published atomically (this CA's CRL re-signed first).
    """
    done = c.ca.install_crl(read_input(crl_file, "FILE"), actor=CLI_ACTOR)
    if fmt == "json":
        echo_json(
            [
                {
                    "issuer": r.issuer,
                    "crl_number": r.number,
                    "next_update": r.next_update.isoformat() if r.next_update else None,
                    "installed": r.changed,
                }
                for r in done
            ]
        )
        return
    for r in done:
        what = "Installed" if r.changed else "Already installed:"
        click.echo(f"{what} CRL number {r.number} of {r.issuer!r}, next update {r.next_update}")


# --- index maintenance -------------------------------------------------------------------------


@cli.group()
def index() -> None:
    """Maintain splitca's index of the cadir (normally automatic)."""


@index.command(name="rebuild")
@format_option
@pass_ctx
def index_rebuild(c: Ctx, fmt: str) -> None:
    """Re-read every file in the cadir into the index (after restoring a backup, say)."""
    started = dt.datetime.now(dt.UTC)
    counts = c.ca.rebuild_index()
    secs = (dt.datetime.now(dt.UTC) - started).total_seconds()
    if fmt == "json":
        echo_json({"seconds": round(secs, 3), **counts})
    else:
        click.echo(f"Index rebuilt in {secs:.1f}s: {counts}")
