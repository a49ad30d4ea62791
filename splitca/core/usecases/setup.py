"""Use cases: open a CA, create one (setup), and issue the CA server's own TLS identity."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from splitca import fs, pki
from splitca.config import Settings
from splitca.core.audit import SYSTEM
from splitca.core.ports import CAStore
from splitca.core.usecases.chain import RootSpec, create_chain
from splitca.core.usecases.common import Deps, state_of
from splitca.core.usecases.sign import generate
from splitca.errors import Conflict, StoreError

__all__ = ["SetupResult", "open_store", "server_identity_hint", "setup"]

CERT_MODE = 0o644
PRIVATE_MODE = 0o600


@dataclass(frozen=True)
class SetupResult:
    created: bool
    messages: list[str]


def open_store(store: CAStore, settings: Settings) -> None:
    """Make an existing CA's store ready; StoreError if there is no CA."""
    missing = store.missing_parts()
    if missing:
        raise StoreError(
            f"{settings.cadir} is not a CA directory (missing {', '.join(missing)}); "
            "run 'splitca setup' first"
        )
    store.prepare()
    store.refresh()


def setup(
    d: Deps,
    *,
    server_identity: bool = False,
    key_passphrase: bytes | None = None,
    intermediate: RootSpec | None = None,
) -> SetupResult:
    """Create a CA, with the CA server's TLS identity, in an empty store.

    With *key_passphrase* the CA key is written encrypted (PKCS#8; see
    :func:`splitca.core.usecases.cacert.encrypt_key` for an existing CA).

    With *intermediate*, a root CA is made too and the CA is an intermediate under it,
    as ``puppetserver ca setup`` does: ``ca_crt.pem`` holds the intermediate then the
    root, ``ca_crl.pem`` their CRLs in that order, and the root key goes to its own file
    (to be moved offline; only the root's CRL needs it again).

    If a CA exists (one imported from puppetserver, say) nothing at all is written,
    unless *server_identity*: then the CA server's certificate is issued if it is
    missing, never replacing a certificate file (see :func:`ensure_server_identity`).

    Raises:
      StoreError: the store holds part of a CA (never overwritten).
      Conflict: *server_identity*, and a certificate for the certname already exists.
    """
    if not d.store.missing_parts():
        # Looked at before anything is created: re-running setup changes no byte.
        return _setup_existing(d, server_identity=server_identity)
    d.store.prepare()
    with d.store.locked("setup"):
        present = d.store.present_parts()
        made_meanwhile = not d.store.missing_parts()  # by a concurrent setup
        if not made_meanwhile:
            return _create(d, present, key_passphrase, intermediate)
    # Outside the setup lock: _setup_existing takes it again (it is not re-entrant).
    return _setup_existing(d, server_identity=server_identity)


def _create(
    d: Deps,
    present: list[str],
    key_passphrase: bytes | None = None,
    intermediate: RootSpec | None = None,
) -> SetupResult:
    """Create the CA in an empty store (the caller holds the setup lock)."""
    if present:
        raise StoreError(
            f"Cannot initialize CA with partial state in {d.settings.cadir}: found "
            f"{', '.join(present)} but not all of ca_crt.pem, ca_key.pem, "
            "ca_crl.pem, serial. Restore the missing files or move the directory away; "
            "splitca never replaces a CA key."
        )
    sealed = ", key encrypted" if key_passphrase is not None else ""
    if intermediate is None:
        key = _create_ca(d, key_passphrase)
        msgs = [
            f"Created CA '{d.settings.effective_ca_name}' in {d.settings.cadir} "
            f"({_describe(key)}{sealed})."
        ]
    else:
        key, msgs = _create_intermediate(d, intermediate, key_passphrase)
    msgs += ensure_server_identity(d)
    d.audit.event(
        "setup", SYSTEM, ca_name=d.settings.effective_ca_name, cadir=str(d.settings.cadir)
    )
    return SetupResult(True, msgs)


def _create_ca(d: Deps, key_passphrase: bytes | None = None) -> CertificateIssuerPrivateKeyTypes:
    s, now = d.settings, d.clock()
    key = pki.generate_private_key(s.key_type, rsa_bits=s.key_size, curve=s.ec_curve)
    cert = pki.build_ca_certificate(key, s.effective_ca_name, now=now, ttl=s.ca_ttl)
    crl = pki.build_crl(
        ca_key=key,
        ca_cert=cert,
        entries=(),
        number=0,
        this_update=now - dt.timedelta(minutes=1),
        next_update=now + s.crl_ttl,
    )
    d.store.create_ca(
        ca_cert=pki.pem(cert),
        ca_key=pki.private_key_pem(key, key_passphrase),
        ca_pub=pki.public_key_pem(key.public_key()),
        crl=pki.pem(crl),
    )
    return key


def _create_intermediate(
    d: Deps, spec: RootSpec, key_passphrase: bytes | None = None
) -> tuple[CertificateIssuerPrivateKeyTypes, list[str]]:
    made = create_chain(d, spec)  # writes the root key first
    try:
        d.store.create_ca(
            ca_cert=made.ca_cert,
            ca_key=pki.private_key_pem(made.key, key_passphrase),
            ca_pub=pki.public_key_pem(made.key.public_key()),
            crl=made.crl,
        )
    except BaseException:
        with contextlib.suppress(OSError):  # no CA refers to that root: leave no key of it
            fs.unlink(spec.key_out)
        raise
    root = made.root.subject.rfc4514_string()
    return made.key, [
        f"Created CA '{d.settings.effective_ca_name}' in {d.settings.cadir} "
        f"({_describe(made.key)}), an intermediate under the root CA '{root}'.",
        f"The root CA's key is in {spec.key_out}: move it OFFLINE now (with a copy of "
        "ca_crt.pem and ca_crl.pem). Nothing here needs it; it re-issues the root's CRL "
        "('splitca ca root-crl', then 'splitca crl install-root' here) before "
        f"{_root_crl_due(made.crl):%Y-%m-%d}.",
    ]


def _root_crl_due(crl_pem: bytes) -> dt.datetime:
    root_crl = x509.load_pem_x509_crl(pki.split_pem(crl_pem, "X509 CRL")[-1])
    assert root_crl.next_update_utc is not None
    return root_crl.next_update_utc


def _setup_existing(d: Deps, *, server_identity: bool) -> SetupResult:
    if not server_identity:
        msgs = [f"CA already exists in {d.settings.cadir}; nothing changed."]
        if hint := server_identity_hint(d.settings, d.store):
            msgs.append(hint)
        return SetupResult(False, msgs)
    open_store(d.store, d.settings)
    with d.store.locked("setup"):
        msgs = [f"CA already exists in {d.settings.cadir}."]
        return SetupResult(False, msgs + ensure_server_identity(d))


def ensure_server_identity(d: Deps) -> list[str]:
    """The CA host's own TLS certificate (with pp_cli_auth, as puppetserver's), made once.

    Never replaces a certificate: if the store holds one for the certname (an imported
    puppetserver CA holds its own host's certificate) this is a Conflict. The key is
    written before the certificate is issued, so a run that stops half-way is finished
    by the next one (with that key) instead of blocking the name.

    Raises:
      Conflict: a certificate for the certname exists, or server/cert.pem without its key.
      StoreError: configured server_cert/server_key are missing, or a write failed.
    """
    s = d.settings
    cert_path, key_path = s.effective_server_cert, s.effective_server_key
    have_cert, have_key = os.path.lexists(cert_path), os.path.lexists(key_path)
    if have_cert and have_key:
        return [f"The CA server's certificate {cert_path} exists; nothing changed."]
    if s.server_cert is not None or s.server_key is not None:
        raise StoreError(f"server_cert {cert_path} or server_key {key_path} does not exist")
    if have_cert:
        raise Conflict(
            f"{cert_path} exists but its key {key_path} does not; splitca never replaces a "
            f"certificate file: restore the key, or move {cert_path} away"
        )
    key = _read_key(key_path) if have_key else None
    if key is not None:
        with d.store.names_locked([s.certname]):  # no revoke between the check and the install
            if (issued := _issued_for(d, key)) is not None:
                # A run that stopped half-way: the certificate was issued for the key it wrote.
                fs.atomic_write(cert_path, issued, mode=CERT_MODE, anchor=s.cadir)
                where = d.store.cert_location(s.certname)
                return [f"Installed the CA server's certificate {cert_path} ({where})."]
    if d.store.has_cert(s.certname):
        raise Conflict(
            f"{d.store.cert_location(s.certname)} already exists (on a CA imported from "
            f"puppetserver it is puppetserver's own certificate for {s.certname}); splitca "
            "never replaces a certificate. Set server_cert and server_key to that certificate "
            "and its key, or give this CA server another name with --certname"
        )
    return _issue_identity(d, key, key_path, cert_path)


def _read_key(key_path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        return pki.load_private_key(key_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the CA server's key {key_path}: {exc}") from exc


def _issued_for(d: Deps, key: CertificateIssuerPrivateKeyTypes) -> bytes | None:
    """The stored certificate of the CA server's name, if it is for *key* and not revoked."""
    certname = d.settings.certname
    existing = d.store.cert(certname)
    if existing is None:
        return None
    try:
        certs = pki.load_certificates(existing.data)
    except ValueError:
        return None
    if (
        certs
        and pki.public_key_pem(certs[0].public_key()) == pki.public_key_pem(key.public_key())
        and state_of(d, certname) == "signed"  # not revoked meanwhile
    ):
        return existing.data
    return None


def _issue_identity(
    d: Deps, key: CertificateIssuerPrivateKeyTypes | None, key_path: Path, cert_path: Path
) -> list[str]:
    wrote_key = False
    if key is None:
        s = d.settings
        key = pki.generate_private_key(
            s.server_key_type or s.key_type, rsa_bits=s.key_size, curve=s.ec_curve
        )
        try:
            key_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {key_path.parent}: {exc.strerror}") from exc
        fs.atomic_write(
            key_path, pki.private_key_pem(key), mode=PRIVATE_MODE, anchor=d.settings.cadir
        )
        wrote_key = True
    alt = pki.parse_alt_names(d.settings.dns_alt_names)
    try:
        _, cert = generate(
            d, d.settings.certname, alt_names=alt, ca_client=True, actor=SYSTEM, key=key
        )
    except BaseException:
        if wrote_key:  # nothing was issued: leave nothing behind
            with contextlib.suppress(OSError):
                fs.unlink(key_path, anchor=d.settings.cadir)
        raise
    fs.atomic_write(cert_path, pki.pem(cert), mode=CERT_MODE, anchor=d.settings.cadir)
    names = ", ".join(
        pki.general_name_str(n)
        for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )
    return [f"Issued the CA server's certificate {cert_path} for {names}."]


def server_identity_hint(settings: Settings, store: CAStore) -> str | None:
    """What to do if the CA server has no TLS certificate (None if it has one)."""
    cert, key = settings.effective_server_cert, settings.effective_server_key
    if cert.exists() and key.exists():
        return None
    missing = cert if not cert.exists() else key
    if settings.server_cert is not None or settings.server_key is not None:
        return f"{missing} (server_cert/server_key) does not exist; 'splitca serve' needs it."
    if store.has_cert(settings.certname):
        return (
            f"The CA server has no TLS certificate ({missing} is missing), and "
            f"{store.cert_location(settings.certname)} exists "
            "(splitca never replaces it): 'splitca setup --server-identity --certname NAME' "
            "issues one under another name, or set server_cert and server_key."
        )
    return (
        f"The CA server has no TLS certificate ({missing} is missing); "
        f"'splitca setup --server-identity' issues one for {settings.certname}."
    )


def _describe(key: CertificateIssuerPrivateKeyTypes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__
