"""Autosign strategies behind one protocol: fixed, allowlist, an executable; Deferred; make_autosigner."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from splitca import pki
from splitca.errors import ConfigError

log = logging.getLogger(__name__)


# --- autosign ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AutosignDecision:
    """Whether to sign now, and why (shown to operators for pending CSRs)."""

    sign: bool
    reason: str
    details: dict[str, object] = field(default_factory=dict)
    # The strategy vouches that the CSR comes from the machine the name is registered to
    # (it redeemed a one-time token for that name), so the CSR may replace the name's
    # current certificate (a rebuilt machine). Only such a decision ever supersedes.
    replaces_certificate: bool = False


class Autosigner(Protocol):
    """Decides, when a CSR arrives, whether to sign it without a human."""

    @property
    def description(self) -> str: ...

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision: ...


@dataclass(frozen=True)
class Fixed:
    """autosign: true / false."""

    value: bool

    @property
    def description(self) -> str:
        return "autosign everything" if self.value else "autosign off"

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision:
        if self.value:
            return AutosignDecision(True, "autosign is true")
        return AutosignDecision(False, "autosign is off; waiting for 'splitca sign'")


def glob_matches(pattern: str, name: str) -> bool:
    """puppetserver's glob: ``*.foo.bar`` matches ``a.foo.bar``, ``x.y.foo.bar`` and ``foo.bar``."""
    if pattern == "*":
        return True
    pat = pattern.lower().split(".")[1:]
    labels = name.lower().split(".")
    if len(labels) < len(pat):
        return False
    return labels[len(labels) - len(pat) :] == pat if pat else True


def allowlist_matches(
    lines: Sequence[str], certname: str, *, source: str = "autosign.conf"
) -> bool:
    """Puppet's autosign.conf semantics (puppet-ca-api.md section 7.2)."""
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        if "#" in line or " " in line or "\t" in line:
            log.warning("Invalid pattern '%s' found in %s", line, source)
            continue
        if line.startswith("*"):
            if glob_matches(line, certname):
                return True
        elif line == certname:
            return True
    return False


@dataclass(frozen=True)
class Allowlist:
    """autosign: /path/autosign.conf, re-read when it changes."""

    path: Path

    @property
    def description(self) -> str:
        return f"allowlist {self.path}"

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            return AutosignDecision(False, f"allowlist {self.path} unreadable: {exc.strerror}")
        if allowlist_matches(lines, certname, source=str(self.path)):
            return AutosignDecision(True, f"matched allowlist {self.path}")
        return AutosignDecision(False, f"no match in allowlist {self.path}")


@dataclass(frozen=True)
class Executable:
    """autosign: /path/to/policy-executable, Puppet's contract with a hard timeout."""

    path: Path
    timeout: float = 5.0
    max_output: int = 4096

    @property
    def description(self) -> str:
        return f"policy executable {self.path} (timeout {self.timeout:g}s)"

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision:
        try:
            proc = subprocess.Popen(
                [str(self.path), certname],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout can kill the whole process group
                close_fds=True,
            )
        except OSError as exc:
            log.warning("autosign executable %s could not start: %s", self.path, exc)
            return AutosignDecision(False, f"policy executable could not start: {exc.strerror}")
        try:
            out, err = proc.communicate(csr_pem, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            log.warning(
                "Autosign command '%s' timed out after %gs for '%s'; leaving it pending",
                self.path,
                self.timeout,
                certname,
            )
            return AutosignDecision(False, f"policy executable timed out after {self.timeout:g}s")
        stdout = out[: self.max_output].decode("utf-8", "replace").strip()
        stderr = err[: self.max_output].decode("utf-8", "replace").strip()
        if stdout:
            log.info("autosign executable stdout for %s: %s", certname, stdout)
        if stderr:
            log.warning("autosign executable stderr for %s: %s", certname, stderr)
        if proc.returncode == 0:
            return AutosignDecision(True, "policy executable approved", {"stdout": stdout[:200]})
        log.warning(
            "Autosign command '%s' rejected certificate '%s' because the exit code was %s, not zero",
            self.path,
            certname,
            proc.returncode,
        )
        return AutosignDecision(
            False,
            f"policy executable said no (exit code {proc.returncode})",
            {"stdout": stdout[:200]},
        )


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


# Named strategies (``autosign: registry``): name -> factory(**context). The composition
# root (splitca.compose) passes the table; nothing registers itself at import time.
Strategies = Mapping[str, Callable[..., Autosigner]]


class Deferred:
    """An autosigner built on first use, for an edge that may never autosign (the CLI).

    Built with the same table as at start, so it is never a weaker strategy; a bad
    setting raises its ConfigError on first use.
    """

    def __init__(self, build: Callable[[], Autosigner]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: Autosigner | None = None

    def _get(self) -> Autosigner:
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    @property
    def description(self) -> str:
        return self._get().description

    def decide(self, certname: str, csr_pem: bytes, info: pki.CsrInfo) -> AutosignDecision:
        return self._get().decide(certname, csr_pem, info)


def make_autosigner(
    value: bool | str, *, timeout: float, strategies: Strategies | None = None, **context: object
) -> Autosigner:
    """Build the strategy for the ``autosign`` setting, the way puppetserver reads it.

    A path that does not exist means "never" (logged); an executable file is a
    policy executable; any other file is an allowlist. A name (not a path) must be
    in *strategies*: an unknown one is a ConfigError, never "autosign nothing".
    """
    if isinstance(value, bool):
        return Fixed(value)
    if not value.startswith("/"):
        factory = (strategies or {}).get(value)
        if factory is None:
            known = ", ".join(sorted(strategies or {})) or "none"
            raise ConfigError(
                f"autosign: {value!r} is not an autosign strategy available here (known: {known}); "
                "a CA that autosigns by name is opened through splitca.compose"
            )
        return factory(**context)
    path = Path(value)
    if not path.exists():
        log.warning("autosign file %s does not exist; nothing will be autosigned", path)
        return Fixed(False)
    if path.is_dir():
        raise ConfigError(f"autosign: {path} is a directory")
    if os.access(path, os.X_OK):
        return Executable(path, timeout=timeout)
    return Allowlist(path)
