"""The CA key's passphrase: from ca_key_passphrase_file or systemd's $CREDENTIALS_DIRECTORY, never argv."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from splitca.config import Settings
from splitca.errors import ConfigError

__all__ = ["MAX_PASSPHRASE_BYTES", "passphrase_file", "passphrase_reader", "read_passphrase"]

MAX_PASSPHRASE_BYTES = 4096


def passphrase_file(settings: Settings) -> Path | None:
    """Where the passphrase is: the setting, else ``$CREDENTIALS_DIRECTORY/<ca_key_credential>``."""
    if settings.ca_key_passphrase_file is not None:
        return settings.ca_key_passphrase_file
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidate = Path(creds) / settings.ca_key_credential
        if candidate.exists():
            return candidate
    return None


def read_passphrase(settings: Settings) -> bytes:
    """The passphrase bytes (one trailing newline dropped). Never logged, never in a message.

    Raises:
      ConfigError: no passphrase is configured, the file cannot be read, is empty, too
        long, or readable by every user.
    """
    path = passphrase_file(settings)
    if path is None:
        raise ConfigError(
            "the CA key needs a passphrase and none is configured: set ca_key_passphrase_file, "
            f"or run under systemd with LoadCredential={settings.ca_key_credential}:FILE "
            "(see docs/ca-lifecycle.md); it is never taken from the command line"
        )
    try:
        # O_NONBLOCK: a FIFO would wait for a writer (refused below as not a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the CA key passphrase file {path}: {exc.strerror}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the CA key passphrase file {path} is not a regular file")
        if st.st_mode & stat.S_IROTH:
            raise ConfigError(
                f"the CA key passphrase file {path} is readable by every user "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        data = os.read(fd, MAX_PASSPHRASE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise ConfigError(f"the CA key passphrase file {path} is over {MAX_PASSPHRASE_BYTES} bytes")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ConfigError(f"the CA key passphrase file {path} is empty")
    return data


def passphrase_reader(settings: Settings) -> Callable[[], bytes]:
    """A reader the Signer calls only if the key is encrypted, and only when it loads it."""
    return lambda: read_passphrase(settings)
