"""`splitca ca ...`: the CA certificate's own lifecycle (status and expiry, renew, encrypt-key)."""

from __future__ import annotations

import click

from splitca.core.audit import Actor

from .. import pki
from ..compose import ca_key_passphrase
from ..config import parse_duration
from ._base import Ctx, Outcome, cli, echo_json, finish, format_option, pass_ctx

CLI_ACTOR = Actor("cli")


@cli.group(name="ca")
def ca_group() -> None:
    """The CA certificate itself: its expiry, renewal with the same key, key encryption.

    \b
    splitca ca status                 expiry of each CA certificate (exit 12 if near)
    splitca ca renew                  same key, new validity: every agent stays valid
    splitca ca encrypt-key            encrypt ca_key.pem in place
    splitca ca root-crl               the root's CRL, on the offline machine
    See docs/ca-lifecycle.md and docs/intermediate-ca.md.
    """


@ca_group.command(name="status")
@click.option(
    "--warn-within",
    metavar="DURATION",
    help="Warn (exit 12) if a CA certificate expires within this, e.g. 400d or 2y "
    "[default: the ca_expiry_warning setting, 1y].",
)
@format_option
@pass_ctx
def ca_status(c: Ctx, warn_within: str | None, fmt: str) -> None:
    """Show each certificate of the CA bundle: subject, serial, validity, days left, key.

    Exits 11 if any of them expires within the horizon (or has expired), so a
    monitoring check or a timer can run it; 0 otherwise. Needs no passphrase.
    """
    horizon = parse_duration(warn_within, key="--warn-within") if warn_within else None
    report = c.ca.ca_status(horizon=horizon)
    if fmt == "json":
        echo_json(report.as_dict())
    else:
        for cert in report.certificates:
            click.echo(cert.subject)
            click.echo(f"  serial      {cert.serial}")
            click.echo(
                f"  issuer      {cert.issuer}{'  (self-signed)' if cert.self_signed else ''}"
            )
            click.echo(f"  not before  {pki.puppet_time(cert.not_before)}")
            click.echo(
                f"  not after   {pki.puppet_time(cert.not_after)}  ({cert.days_left} days left)"
            )
            click.echo(f"  key         {cert.key_type} {cert.key_size}")
            signs = {True: "yes", False: "no", None: "unknown"}[cert.signing_key]
            click.echo(f"  signing key {signs}")
            click.echo(f"  sha256      {cert.sha256}")
        shown = {True: "encrypted", False: "not encrypted", None: "unreadable here"}
        click.echo(f"CA key: {shown[report.key_encrypted]}")
        for warning in report.warnings:
            click.echo(f"Warning: {warning}", err=True)
    if report.expiring:
        finish(Outcome.CA_EXPIRING)


@ca_group.command(name="renew")
@click.option(
    "--validity",
    metavar="DURATION",
    help="New lifetime from now, e.g. 15y [default: the ca_ttl setting]. Must end later "
    "than the current certificate.",
)
@click.option(
    "--serial",
    type=click.Choice(["auto", "keep", "new"]),
    default="auto",
    show_default=True,
    help="keep: the old certificate's serial, which certificates naming the CA by serial in "
    "their Authority Key Identifier need (puppetserver's do); new: a fresh one; auto: keep "
    "if any signed certificate names it.",
)
@format_option
@pass_ctx
def ca_renew(c: Ctx, validity: str | None, serial: str, fmt: str) -> None:
    """Re-issue the CA certificate with the SAME key, subject and key identifier.

    A new serial and validity; ca_crt.pem is replaced atomically, so 'splitca serve'
    serves and signs with it from the next request, no restart. Every certificate
    the CA issued stays valid. Masters and agents keep trusting the old certificate
    until it expires: give them the new ca_crt.pem before then (docs/ca-lifecycle.md).
    """
    ttl = parse_duration(validity, key="--validity") if validity else None
    result = c.ca.renew_ca(validity=ttl, serial=serial, actor=CLI_ACTOR)
    old, new = result.old, result.new
    if fmt == "json":
        echo_json(
            {
                "subject": new.subject.rfc4514_string(),
                "old_serial": old.serial_number,
                "serial": new.serial_number,
                "old_not_after": pki.puppet_time(old.not_valid_after_utc),
                "not_after": pki.puppet_time(new.not_valid_after_utc),
                "kept_serial": result.kept_serial,
                "sha256": pki.fingerprints(pki.der(new))["SHA256"],
                "bundle": str(c.settings.cadir / "ca_crt.pem"),
            }
        )
        return
    serials = (
        f"{old.serial_number} (kept)"
        if result.kept_serial
        else f"{old.serial_number} -> {new.serial_number}"
    )
    click.echo(
        f"Renewed CA certificate {new.subject.rfc4514_string()}: serial {serials}, valid until "
        f"{pki.puppet_time(new.not_valid_after_utc)} "
        f"(was {pki.puppet_time(old.not_valid_after_utc)})."
    )
    if result.kept_serial:
        click.echo(f"Kept the serial: {result.kept_serial}.")
    click.echo(
        f"Distribute {c.settings.cadir / 'ca_crt.pem'} to compile masters and agents before "
        f"{pki.puppet_time(old.not_valid_after_utc)} (docs/ca-lifecycle.md)."
    )


@ca_group.command(name="encrypt-key")
@format_option
@pass_ctx
def ca_encrypt_key(c: Ctx, fmt: str) -> None:
    """Encrypt ca_key.pem in place (PKCS#8, AES-256), atomically.

    The passphrase comes from the ca_key_passphrase_file setting or, under systemd,
    $CREDENTIALS_DIRECTORY/<ca_key_credential> (LoadCredential=), never from the
    command line. Configure the same source for 'splitca serve' first: it decrypts
    the key when it next loads it.
    """
    passphrase = ca_key_passphrase(c.settings)
    c.ca.encrypt_ca_key(passphrase, actor=CLI_ACTOR)
    path = c.settings.cadir / "ca_key.pem"
    if fmt == "json":
        echo_json({"encrypted": True, "key": str(path)})
    else:
        click.echo(f"Encrypted the CA key {path}.")
