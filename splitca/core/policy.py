"""CSR vetting (puppetserver's rules, stricter on weak crypto) and autosign strategies."""

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

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from splitca import pki
from splitca.errors import ConfigError, PolicyViolation

__all__ = [
    "Allowlist",
    "Approved",
    "AutosignDecision",
    "Autosigner",
    "CsrRules",
    "Executable",
    "Fixed",
    "check_subject",
    "vet",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CsrRules:
    """What this CA accepts in a CSR."""

    allow_subject_alt_names: bool = False
    allow_authorization_extensions: bool = False
    allow_legacy_signatures: bool = False
    min_rsa_bits: int = 2048


@dataclass(frozen=True)
class Approved:
    """A vetted request: the only things a certificate is built from (never the raw CSR)."""

    certname: str
    public_key: CertificatePublicKeyTypes
    alt_names: tuple[x509.GeneralName, ...]
    extensions: tuple[x509.Extension[x509.ExtensionType], ...]


def check_subject(url_name: str, cn: str | None) -> None:
    """puppetserver's validate-subject!: CN equals the URL name, then the name rules."""
    if cn != url_name:
        raise PolicyViolation(
            "hostname-mismatch",
            url_name,
            f'Instance name "{cn}" does not match requested key "{url_name}"',
        )
    if problem := pki.certname_problem(url_name):
        raise PolicyViolation("invalid-subject-name", url_name, problem)


def _is_allowed_extension(oid: str) -> bool:
    """puppetserver's allowed-extension?: SAN, or a strict sub-OID of pp reg/priv/auth arcs."""
    if oid == x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string:
        return True
    if oid == pki.PP_CLI_AUTH.dotted_string:
        return False
    return any(
        oid.startswith(arc + ".") for arc in (pki.PP_REG_ARC, pki.PP_PRIV_ARC, pki.PP_AUTH_ARC)
    )


_STRONG_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def check_crypto(csr: x509.CertificateSigningRequest, certname: str, rules: CsrRules) -> None:
    """Refuse weak keys and weak signature hashes (puppetserver accepts anything)."""
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < rules.min_rsa_bits:
        raise PolicyViolation(
            "weak-key",
            certname,
            f"CSR '{certname}' has a {key.key_size}-bit RSA key; at least {rules.min_rsa_bits} bits are required.",
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _STRONG_CURVES:
        raise PolicyViolation(
            "weak-key",
            certname,
            f"CSR '{certname}' has an EC key on curve {key.curve.name}; use P-256, P-384 or P-521.",
        )
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        # Ed25519/Ed448, DSA, ...: Puppet agents (Ruby OpenSSL, key_type rsa or ec) make
        # only RSA and EC keys, and Puppet's TLS stacks expect nothing else.
        raise PolicyViolation(
            "unsupported-key",
            certname,
            f"CSR '{certname}' has {_key_kind(key)} key, which is not accepted; "
            "use an RSA key or an EC key on P-256, P-384 or P-521.",
        )
    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:
        algorithm = None
        if not rules.allow_legacy_signatures:
            raise PolicyViolation(
                "weak-signature",
                certname,
                f"CSR '{certname}' uses an unsupported signature algorithm.",
            ) from None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1) and not rules.allow_legacy_signatures:
        raise PolicyViolation(
            "weak-signature",
            certname,
            f"CSR '{certname}' is signed with {algorithm.name.upper()}, which is refused. "
            "Set allow_legacy_signatures: true to accept CSRs from Puppet 2.6 agents.",
        )


def _key_kind(key: CertificatePublicKeyTypes) -> str:
    kinds = {
        dsa.DSAPublicKey: "a DSA",
        ed25519.Ed25519PublicKey: "an Ed25519",
        ed448.Ed448PublicKey: "an Ed448",
    }
    for cls, kind in kinds.items():
        if isinstance(key, cls):
            return kind
    return f"a {type(key).__name__}"


def vet(
    csr: x509.CertificateSigningRequest,
    certname: str,
    rules: CsrRules,
    *,
    allow_alt_names: bool = False,
    info: pki.CsrInfo | None = None,
) -> Approved:
    """Run puppetserver's signing checks (SAN, auth extensions, allowlist, signature) and ours.

    *allow_alt_names* lets a human override the SAN rule for one signing
    (``splitca sign --allow-dns-alt-names``).

    Raises:
      PolicyViolation: with puppetserver's message for the first failed check.
    """
    info = info or pki.inspect_csr(csr)
    check_crypto(csr, certname, rules)
    extra = [n for n in info.sans if n != x509.DNSName(certname)]
    if extra and not (rules.allow_subject_alt_names or allow_alt_names):
        names = ", ".join(pki.general_name_str(n) for n in extra)
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' contains extra subject alternative names ({names}), which are disallowed. "
            "To allow subject alternative names, set allow_subject_alt_names: true in the splitca "
            "configuration, or issue the certificate with 'splitca generate --dns-alt-names'.",
        )
    for name in info.sans:
        if not isinstance(name, x509.DNSName | x509.IPAddress):
            raise PolicyViolation(
                "disallowed-extension",
                certname,
                f"CSR '{certname}' contains a subject alternative name of an unsupported type "
                f"({pki.general_name_str(name)}); only DNS and IP names are allowed.",
            )
    auth = [e for e in info.extensions if e.oid.dotted_string.startswith(pki.PP_AUTH_ARC + ".")]
    if auth and not rules.allow_authorization_extensions:
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' contains an authorization extension, which is disallowed. "
            "To allow authorization extensions, set allow_authorization_extensions: true in the "
            "splitca configuration.",
        )
    bad = [
        e.oid.dotted_string
        for e in info.extensions
        if not _is_allowed_extension(e.oid.dotted_string)
    ]
    if bad:
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"Found extensions that are not permitted: {', '.join(bad)}",
        )
    critical = [
        e.oid.dotted_string
        for e in info.extensions
        if e.critical and not isinstance(e.value, x509.SubjectAlternativeName)
    ]
    if critical:
        # Requested extensions are copied into the certificate. Marked critical, an
        # extension no verifier knows (every pp_* one) makes OpenSSL, Java and Ruby
        # reject the certificate ("unhandled critical extension"): refused, never issued.
        raise PolicyViolation(
            "disallowed-extension",
            certname,
            f"CSR '{certname}' marks requested extensions critical ({', '.join(critical)}); "
            "Puppet extensions must be non-critical, or no TLS client accepts the certificate.",
        )
    if not _signature_valid(csr):
        raise PolicyViolation(
            "invalid-signature",
            certname,
            "CSR contains a public key that does not correspond to the signing key",
        )
    copied = tuple(
        e for e in info.extensions if not isinstance(e.value, x509.SubjectAlternativeName)
    )
    return Approved(certname, csr.public_key(), tuple(info.sans), copied)


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """The CSR's self-signature verifies (MD5/SHA-1 too: cryptography's check refuses those
    outright, so legacy signatures, once allowed by policy, are verified by hand)."""
    try:
        if csr.is_signature_valid:
            return True
    except Exception:  # an algorithm cryptography will not verify: only MD5/SHA-1 below
        pass
    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:
        return False
    if not isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        return False
    return pki.verify_signature(
        csr.public_key(), csr.signature, csr.tbs_certrequest_bytes, algorithm
    )


# --- autosign ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AutosignDecision:
    """Whether to sign now, and why (shown to operators for pending CSRs)."""

    sign: bool
    reason: str
    details: dict[str, object] = field(default_factory=dict)


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
