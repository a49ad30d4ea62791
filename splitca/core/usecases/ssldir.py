"""Use case: issue a key and certificate into a Puppet ssldir (``splitca generate``)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from splitca import fs, pki
from splitca.core.audit import SYSTEM, Actor
from splitca.core.usecases.common import Deps, refuse_taken
from splitca.core.usecases.sign import generate
from splitca.errors import InvalidRequest, StoreError

__all__ = ["generate_ssldir", "ssldir_paths"]

CERT_MODE = 0o644


def ssldir_paths(certname: str, ssldir: Path) -> dict[str, Path]:
    """Puppet's ssldir layout: where the key, certificate, CA bundle and CRL go."""
    return {
        "key": ssldir / "private_keys" / f"{certname}.pem",
        "cert": ssldir / "certs" / f"{certname}.pem",
        "ca": ssldir / "certs" / "ca.pem",
        "crl": ssldir / "crl.pem",
    }


def generate_ssldir(
    d: Deps,
    certname: str,
    ssldir: Path,
    *,
    alt_names: Iterable[x509.GeneralName] = (),
    ca_client: bool = False,
    key_type: str = "rsa",
    key_size: int = 4096,
    actor: Actor = SYSTEM,
) -> x509.Certificate:
    """Issue *certname*'s key and certificate into *ssldir*, with the CA bundle and the CRL.

    The destination is made and checked, and the key put in its final place, before
    anything is issued: a bad ssldir costs nothing, an issued certificate always has its
    key, an existing key is never replaced, and a failure removes the directories this made.
    """
    if problem := pki.certname_problem(certname):
        raise InvalidRequest(f"{certname!r}: {problem}")
    paths = ssldir_paths(certname, ssldir)
    made = [
        p
        for p in (ssldir / "private_keys", ssldir / "certs", ssldir, *ssldir.parents)
        if not p.exists()
    ]
    try:
        _make_dirs(ssldir)
        refuse_taken(d, certname)  # the answer that matters most first (again under the lock)
        _refuse_taken(paths)
        key = pki.generate_private_key(key_type, rsa_bits=key_size)
        # The key is in its final place before the certificate is issued: an issued
        # certificate always has its key. A failed issue removes it again.
        fs.atomic_write(paths["key"], pki.private_key_pem(key), mode=0o600)
        try:
            _, cert = generate(
                d,
                certname,
                alt_names=alt_names,
                ca_client=ca_client,
                key_type=key_type,
                key_size=key_size,
                actor=actor,
                key=key,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                fs.unlink(paths["key"])
            raise
    except BaseException:
        for p in sorted(made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty: never anything that was there before
        raise
    fs.atomic_write(paths["cert"], pki.pem(cert), mode=CERT_MODE)
    fs.atomic_write(paths["ca"], d.store.ca_cert().data, mode=CERT_MODE)
    fs.atomic_write(paths["crl"], d.store.crl().data, mode=CERT_MODE)
    return cert


def _refuse_taken(paths: dict[str, Path]) -> None:
    """An existing key is never replaced (it may be in use), and no destination may be a
    link or a directory, which would fail only after the certificate exists."""
    for kind, path in paths.items():
        if os.path.lexists(path) and (kind == "key" or not stat.S_ISREG(os.lstat(path).st_mode)):
            what = "holds a key, never replaced" if kind == "key" else "is not a regular file"
            raise StoreError(f"--ssldir: {path} {what}; choose another --ssldir")


def _make_dirs(ssldir: Path) -> None:
    try:
        for sub in ("private_keys", "certs"):
            (ssldir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("private_keys", "certs"):
            if (ssldir / sub).is_symlink():
                raise StoreError(f"--ssldir: {ssldir / sub} is a symbolic link; refused")
        (ssldir / "private_keys").chmod(0o750)
    except OSError as exc:
        raise StoreError(
            f"--ssldir: cannot create {exc.filename or ssldir}: {exc.strerror or exc}"
        ) from None
