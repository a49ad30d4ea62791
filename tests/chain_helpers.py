"""Test helpers for CA chains: an external root -> ... -> issuing CA, with real keys and CRLs."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from splitca import pki
from splitca.cli import cli

from .conftest import fast_key

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class ExtCA:
    """One CA of an external chain: key, certificate, and the CRLs it can sign."""

    name: str
    key: Any
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)

    def crl(
        self,
        number: int = 1,
        *,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
        key: Any = None,
    ) -> x509.CertificateRevocationList:
        this = this_update or NOW - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(this)
            .next_update(next_update or NOW + dt.timedelta(days=30))
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this).build()
            )
        return builder.sign(key or self.key, hashes.SHA256())


def ext_ca(
    name: str,
    parent: ExtCA | None = None,
    *,
    ca: bool = True,
    key: Any = None,
    path_length: int | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> ExtCA:
    """A CA certificate as an external CA makes one: random serial, an 8-byte SKI (not
    the SHA-1 of the key that splitca would compute), AKI = the parent's SKI."""
    key = key or fast_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = os.urandom(8)
    issuer_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                pki.ca_key_identifier(parent.cert) if parent else ski, None, None
            ),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(pki.certs.CA_KEY_USAGE, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return ExtCA(name, key, builder.sign(issuer_key, hashes.SHA256()))


def ext_chain(levels: int) -> list[ExtCA]:
    """[issuing, ..., root]: *levels* CAs."""
    root = ext_ca("Example Root CA")
    chain = [root]
    for i in range(1, levels):
        chain.append(
            ext_ca("Example Issuing CA" if i == levels - 1 else f"Example Mid CA {i}", chain[-1])
        )
    return chain[::-1]


def write_pems(path: Path, objs: list[Any]) -> Path:
    path.write_bytes(b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objs))
    return path


def key_pem(key: Any, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_config(tmp_path: Path, **extra: Any) -> Path:
    raw = {
        "cadir": str(tmp_path / "ca"),
        "certname": "ca.test",
        "dns_alt_names": ["puppet", "localhost", "IP:127.0.0.1"],
        "key_size": 2048,
        "workers": 1,
        "threads": 8,
        **extra,
    }
    path = tmp_path / "splitca.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def import_files(tmp_path: Path, chain: list[ExtCA], crls: list[Any] | None = None) -> list[str]:
    """The arguments of `splitca import` for *chain* (bundle root first: any order is taken)."""
    bundle = write_pems(tmp_path / "bundle.pem", [c.cert for c in chain[::-1]])
    crl_file = write_pems(
        tmp_path / "crls.pem", crls if crls is not None else [c.crl() for c in chain]
    )
    key = tmp_path / "issuing_key.pem"
    key.write_bytes(key_pem(chain[0].key))
    return ["--cert-bundle", str(bundle), "--crl-chain", str(crl_file), "--private-key", str(key)]


def aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
