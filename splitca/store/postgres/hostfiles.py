"""This host's own files beside the PostgreSQL store: its copy of the CA key and of the CA certificate."""

from __future__ import annotations

import contextlib
from pathlib import Path

from splitca import fs
from splitca.errors import StoreError

__all__ = ["CERT_FILE", "KEY_FILE", "HostFiles"]

KEY_FILE, CERT_FILE = "ca_key.pem", "ca_crt.pem"
KEY_MODE, CERT_MODE = 0o640, 0o644  # puppetserver's modes for ca_key.pem and ca_crt.pem


class HostFiles:
    """``ca_key.pem`` and ``ca_crt.pem`` in one directory (the cadir): what the signer reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = root / KEY_FILE
        self.cert = root / CERT_FILE

    def ensure_dir(self) -> None:
        try:
            self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.root}: {exc.strerror}") from exc

    def read_key(self) -> bytes:
        try:
            return self.key.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"the CA key {self.key} is missing") from None
        except OSError as exc:
            raise StoreError(f"cannot read the CA key {self.key}: {exc.strerror}") from None

    def write_key(self, data: bytes) -> None:
        fs.atomic_write(self.key, data, mode=KEY_MODE, anchor=self.root)

    def write_cert(self, pem: bytes) -> None:
        """Replace the certificate copy, unless it holds exactly *pem* already."""
        with contextlib.suppress(OSError):
            if self.cert.read_bytes() == pem:
                return
        fs.atomic_write(self.cert, pem, mode=CERT_MODE, anchor=self.root)
