"""KeyFileSigner: the Signer over the cadir's ca_key.pem and ca_crt.pem, loaded once, reloaded on change."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from splitca import pki
from splitca.core.ports import CRLEntry
from splitca.errors import ConfigError, StoreError
from splitca.store.files.cadir import CADir

__all__ = ["KeyFileSigner", "LoadedKey"]


@dataclass(frozen=True)
class LoadedKey:
    """The SigningKey of an in-memory private key."""

    key: CertificateIssuerPrivateKeyTypes
    certificate: x509.Certificate

    def prepare_leaf(
        self,
        *,
        public_key: CertificatePublicKeyTypes,
        certname: str,
        not_before: dt.datetime,
        not_after: dt.datetime,
        alt_names: Sequence[x509.GeneralName],
        extensions: Sequence[x509.Extension[x509.ExtensionType]],
    ) -> x509.CertificateBuilder:
        return pki.leaf_builder(
            ca_key=self.key,
            ca_cert=self.certificate,
            public_key=public_key,
            certname=certname,
            not_before=not_before,
            not_after=not_after,
            alt_names=alt_names,
            extensions=extensions,
        )

    def sign_leaf(self, tbs: x509.CertificateBuilder, serial: int) -> x509.Certificate:
        return pki.sign_leaf(tbs, self.key, serial)

    def sign_crl(
        self,
        *,
        entries: Iterable[CRLEntry],
        number: int,
        this_update: dt.datetime,
        next_update: dt.datetime,
    ) -> bytes:
        return pki.build_crl_der(
            ca_key=self.key,
            ca_cert=self.certificate,
            entries=entries,
            number=number,
            this_update=this_update,
            next_update=next_update,
        )

    def renew_ca(
        self, *, serial: int, not_before: dt.datetime, not_after: dt.datetime
    ) -> x509.Certificate:
        return pki.renew_ca_certificate(
            self.certificate, self.key, serial=serial, not_before=not_before, not_after=not_after
        )


class KeyFileSigner:
    """Signs with the CA key in the cadir (puppetserver's ``ca_key.pem``), plain or encrypted.

    An encrypted key (``BEGIN ENCRYPTED PRIVATE KEY``, see ``splitca ca encrypt-key``) is
    decrypted once, with the passphrase *passphrase* returns (called only then), and kept
    in memory; it is decrypted again only when the file changes.
    """

    def __init__(self, cadir: CADir, *, passphrase: Callable[[], bytes] | None = None) -> None:
        self._cadir = cadir
        self._passphrase = passphrase
        self._lock = threading.Lock()
        self._loaded: tuple[str, LoadedKey] | None = None
        # The last decryption that failed: (key file stamp, passphrase digest) and its message.
        # Decrypting costs 600,000 PBKDF2 rounds; each request asks for the key, so the
        # same key file with the same passphrase is not tried again.
        self._failed: tuple[tuple[str, bytes], str] | None = None

    def current(self) -> LoadedKey:
        """The CA key and certificate, loaded once and reloaded if the files change."""
        c = self._cadir
        key_stamp = _stamp(c.cakey)  # before the file is read: a change after is seen next time
        stamp = key_stamp + "|" + _stamp(c.cacert)
        with self._lock:
            if self._loaded is None or self._loaded[0] != stamp:
                key = self._load_key(c.read_ca_key(), key_stamp)
                try:
                    certs = pki.load_certificates(c.read_ca_cert())
                except ValueError as exc:  # damaged: the CA cannot serve (503), not a crash
                    raise StoreError(
                        f"{c.cacert} holds a certificate that does not parse: {exc}"
                    ) from None
                if not certs:
                    raise StoreError(f"{c.cacert} holds no certificate")
                cert = pki.signing_certificate(certs, key)
                if cert is None:
                    raise StoreError(f"no certificate in {c.cacert} matches {c.cakey}")
                self._loaded = (stamp, LoadedKey(key, cert))
            return self._loaded[1]

    def _load_key(self, data: bytes, stamp: str) -> CertificateIssuerPrivateKeyTypes:
        """The key of *data* (the key file as *stamp* identifies it); ConfigError (one line,
        no passphrase) if it cannot be decrypted, at once if that key and passphrase failed."""
        path = self._cadir.cakey
        if not pki.is_encrypted_key(data):
            try:
                return pki.load_private_key(data)
            except (ValueError, TypeError) as exc:
                raise StoreError(f"the CA key {path} is not a usable private key: {exc}") from None
        if self._passphrase is None:
            raise ConfigError(
                f"the CA key {path} is encrypted and this CA has no passphrase source"
            )
        passphrase = self._passphrase()
        attempt = (stamp, hashlib.sha256(passphrase).digest())
        if self._failed is not None and self._failed[0] == attempt:
            raise ConfigError(self._failed[1])
        try:
            key = pki.load_private_key(data, passphrase)
        except (ValueError, TypeError):
            why = f"cannot decrypt the CA key {path}: wrong passphrase (or a damaged key file)"
            self._failed = (attempt, why)
            raise ConfigError(why) from None
        self._failed = None
        return key


def _stamp(path: os.PathLike[str]) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
