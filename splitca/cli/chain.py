"""CA chain commands: import an external CA, and the root's CRL issued offline (`ca root-crl`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from cryptography import x509

from splitca.core.audit import Actor
from splitca.core.usecases.chain import issue_upper_crl, parse_crl_file
from splitca.core.usecases.importca import ImportInput

from .. import fs, pki
from ..clock import utcnow
from ..compose import import_ca
from ..config import parse_duration
from ..errors import ConfigError, Conflict, InvalidRequest
from ._base import Ctx, cli, echo_json, format_option, pass_ctx
from .lifecycle import ca_group  # the `ca` group; root-crl is added to it here

CLI_ACTOR = Actor("cli")
MAX_INPUT = 16 * 1024 * 1024  # a CRL chain of a large CA fits; anything bigger is not ours
MAX_PASSPHRASE = 4096

_FILE = click.Path(dir_okay=False, path_type=Path)


def read_input(path: Path, option: str, limit: int = MAX_INPUT) -> bytes:
    """A file named by *option*, bounded; ConfigError (one line) if unreadable or too large."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{option}: {path} is larger than {limit} bytes")
    return data


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase in *path* (one trailing newline dropped); never from the command line."""
    if path is None:
        return None
    data = read_input(path, "--passphrase-file", MAX_PASSPHRASE)
    data = data[:-1] if data.endswith(b"\n") else data
    data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise ConfigError(f"--passphrase-file: {path} is empty")
    return data


def _certs(path: Path, option: str) -> list[x509.Certificate]:
    try:
        certs = pki.load_certificates(read_input(path, option))
    except ValueError as exc:
        raise InvalidRequest(
            f"{option}: {path} holds a certificate that does not parse: {exc}"
        ) from None
    if not certs:
        raise InvalidRequest(f"{option}: {path} holds no PEM certificate")
    return certs


# --- import ------------------------------------------------------------------------------------


@cli.command(name="import")
@click.option(
    "--cert-bundle",
    type=_FILE,
    required=True,
    help="The signing CA's certificate and every CA above it, up to the root (any order).",
)
@click.option(
    "--crl-chain",
    type=_FILE,
    required=True,
    help="One current CRL for each CA of the bundle (any order).",
)
@click.option(
    "--private-key",
    type=_FILE,
    required=True,
    help="The signing CA's private key (PEM; may be encrypted).",
)
@click.option(
    "--passphrase-file",
    type=_FILE,
    help="File holding the key's passphrase (never on the command line).",
)
@click.option(
    "--certname",
    help="This CA host's certname, for its TLS certificate (default: the host's FQDN).",
)
@click.option(
    "--dns-alt-names",
    help="Alt names for the CA server's TLS certificate, e.g. puppet,IP:127.0.0.1.",
)
@format_option
@pass_ctx
def import_(
    c: Ctx,
    cert_bundle: Path,
    crl_chain: Path,
    private_key: Path,
    passphrase_file: Path | None,
    certname: str | None,
    dns_alt_names: str | None,
    fmt: str,
) -> None:
    """Make a new cadir a CA that signs with an external CA's key (as 'puppetserver ca import').

    \b
    The bundle is put in order (signing CA first, root last) and every link checked:
    the key matches the signing CA's certificate, each certificate is a CA signed by
    the next, nothing is expired, and each CA has one current CRL signed by it.
    Leaf certificates then carry the signing CA's key identifier as their AKI.
    \b
      splitca import --cert-bundle bundle.pem --private-key ca_key.pem \\
          --crl-chain crls.pem --passphrase-file pass.txt
    The key is stored unencrypted as ca_key.pem (mode 0640), as puppetserver does.
    """
    c.override(certname=certname, dns_alt_names=dns_alt_names)
    given = ImportInput(
        bundle=read_input(cert_bundle, "--cert-bundle"),
        crl_chain=read_input(crl_chain, "--crl-chain"),
        key=read_input(private_key, "--private-key"),
        passphrase=read_passphrase(passphrase_file),
    )
    result = import_ca(c.settings, given, actor=CLI_ACTOR)
    if fmt == "json":
        echo_json(
            {"created": result.created, "cadir": str(c.settings.cadir), "messages": result.messages}
        )
    else:
        for msg in result.messages:
            click.echo(msg)


# --- the `ca` group: the CA certificates themselves ----------------------------------------------


_REASONS = {r.name: r for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl}


@ca_group.command(name="root-crl")
@click.option(
    "--root-key",
    type=_FILE,
    required=True,
    help="The root CA's private key (root_key.pem from 'setup --intermediate').",
)
@click.option(
    "--root-cert",
    type=_FILE,
    required=True,
    help="The root's certificate, or a bundle holding it (ca_crt.pem): the one matching --root-key is used.",
)
@click.option(
    "--crl",
    "previous",
    type=_FILE,
    required=True,
    help="The CRLs served now (ca_crl.pem) or the root's last CRL: its entries are kept, its number raised.",
)
@click.option(
    "--revoke-intermediate",
    "revoke",
    type=_FILE,
    multiple=True,
    help="Certificate of a CA the root issued, to revoke (repeat for several).",
)
@click.option(
    "--reason",
    type=click.Choice(sorted(_REASONS)),
    default="ca_compromise",
    show_default=True,
    help="CRL reason for --revoke-intermediate.",
)
@click.option(
    "--ttl",
    default="1y",
    show_default=True,
    help="How long the new root CRL is valid (its nextUpdate).",
)
@click.option(
    "--passphrase-file",
    type=_FILE,
    help="File holding --root-key's passphrase, if it is encrypted.",
)
@click.option(
    "--out",
    type=_FILE,
    default=Path("root_crl.pem"),
    show_default=True,
    help="Where to write the new root CRL (never over an existing file).",
)
@format_option
def root_crl(
    root_key: Path,
    root_cert: Path,
    previous: Path,
    revoke: tuple[Path, ...],
    reason: str,
    ttl: str,
    passphrase_file: Path | None,
    out: Path,
    fmt: str,
) -> None:
    """Issue the root CA's next CRL, where the root key is (an offline machine); no cadir needed.

    \b
    On the offline machine, with copies of the CA's ca_crt.pem and ca_crl.pem:
      splitca ca root-crl --root-key root_key.pem --root-cert ca_crt.pem \\
          --crl ca_crl.pem --out root_crl.pem
    then on the CA:
      splitca crl install-root root_crl.pem
    which serves it after this CA's own CRL (sync-crl brings it to the masters).
    """
    lifetime = parse_duration(ttl, key="--ttl")
    if lifetime < dt.timedelta(hours=1):
        raise ConfigError("--ttl: must be at least 1h")
    if out.exists() or out.is_symlink():
        raise Conflict(f"--out: {out} exists; move it away or name another file")
    try:
        key = pki.load_key(read_input(root_key, "--root-key"), read_passphrase(passphrase_file))
    except pki.ChainError as exc:
        raise InvalidRequest(f"--root-key: {exc}") from None
    to_revoke = [cert for path in revoke for cert in _certs(path, "--revoke-intermediate")]
    made = issue_upper_crl(
        key=key,
        certs=_certs(root_cert, "--root-cert"),
        previous=parse_crl_file(read_input(previous, "--crl"), "--crl"),
        revoke=to_revoke,
        reason=_REASONS[reason],
        now=utcnow(),
        ttl=lifetime,
    )
    fs.atomic_write(out, made.pem, mode=0o644)
    if fmt == "json":
        echo_json(
            {
                "out": str(out),
                "issuer": made.issuer,
                "crl_number": made.number,
                "next_update": made.next_update.isoformat(),
                "entries": made.entries,
                "revoked": made.revoked,
            }
        )
        return
    click.echo(
        f"Wrote CRL number {made.number} of {made.issuer!r} to {out} ({made.entries} entries, "
        f"next update {made.next_update:%Y-%m-%d %H:%M}Z)"
    )
    for serial in made.revoked:
        click.echo(f"  revoked serial {serial}")
    click.echo(f"Install it on the CA: splitca crl install-root {out}")
