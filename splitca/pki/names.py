"""Puppet's OIDs and certname rules, Puppet's time format, fingerprints."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import warnings

from cryptography import x509

# --- Puppet's OID arcs (puppet-ca-api.md section 7.6) ---------------------------------
PUPPETLABS = "1.3.6.1.4.1.34380"
PP_REG_ARC = PUPPETLABS + ".1.1"
PP_PRIV_ARC = PUPPETLABS + ".1.2"
PP_AUTH_ARC = PUPPETLABS + ".1.3"
PP_CLI_AUTH = x509.ObjectIdentifier(PP_AUTH_ARC + ".39")
NETSCAPE_COMMENT = x509.ObjectIdentifier("2.16.840.1.113730.1.13")
NETSCAPE_COMMENT_TEXT = b"Puppet Server Internal Certificate"
SAN_OID = x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME  # compared per extension: one object

_REG_NAMES = [
    "pp_uuid",
    "pp_instance_id",
    "pp_image_name",
    "pp_preshared_key",
    "pp_cost_center",
    "pp_product",
    "pp_project",
    "pp_application",
    "pp_service",
    "pp_employee",
    "pp_created_by",
    "pp_environment",
    "pp_role",
    "pp_software_version",
    "pp_department",
    "pp_cluster",
    "pp_provisioner",
    "pp_region",
    "pp_datacenter",
    "pp_zone",
    "pp_network",
    "pp_securitypolicy",
    "pp_cloudplatform",
    "pp_apptier",
    "pp_hostname",
    "pp_owner",
]
SHORT_NAMES: dict[str, str] = {f"{PP_REG_ARC}.{i}": n for i, n in enumerate(_REG_NAMES, 1)}
SHORT_NAMES.update(
    {
        PP_AUTH_ARC + ".1": "pp_authorization",
        PP_AUTH_ARC + ".13": "pp_auth_role",
        PP_AUTH_ARC + ".39": "pp_cli_auth",
    }
)
OIDS_BY_SHORT_NAME = {v: k for k, v in SHORT_NAMES.items()}

MAX_CERTNAME_LENGTH = 250  # "<name>.pem" must fit in a 255-byte file name
# RFC 5280 ub-common-name: a certificate's CN holds at most 64 characters, and the
# certname is the CN, so a longer name could be stored but never signed.
MAX_CN_LENGTH = 64

# Equivalent of puppetserver's validate-subject! (see puppet-ca-api.md section 4.2),
# including its tolerance of trailing dots (Java's String.split drops trailing empties).
_LABELS_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_-]*[a-z0-9_])*\.*")


_BAD_FORMAT = "Subject hostname format is invalid"

# cryptography warns (UserWarning, with a source line on stderr) when it parses a CN
# longer than 64 characters; such a name is refused here with a clear message instead.
warnings.filterwarnings(
    "ignore", message="Attribute's length must be >= 1 and <= 64", category=UserWarning
)


@functools.lru_cache(maxsize=4096)
def _format_problem(name: str) -> str | None:
    """puppetserver's message if *name* breaks the certname format rules, else None."""
    # In ASCII only A-Z are upper case, and lower() changes only them: one call, not one per letter.
    if name != name.lower() if name.isascii() else any(c.isupper() for c in name):
        return "Certificate names must be lower case."
    if "*" in name:
        return f"Subject contains a wildcard, which is not allowed: {name}"
    if (
        not name
        or len(name) > MAX_CERTNAME_LENGTH
        or name.endswith("-")
        or not name.isascii()
        or _LABELS_RE.fullmatch(name) is None
    ):
        return _BAD_FORMAT
    return None


@functools.lru_cache(maxsize=4096)
def certname_problem(name: str) -> str | None:
    """The message for a name that cannot be a new certname, or None if it can be.

    puppetserver's format rules, and the CN length limit: every way a name enters
    the CA (CSR submission, registration, enrollment, generate, configuration)
    checks this, so a name that could never be signed is refused at the door.
    """
    problem = _format_problem(name)
    if problem and (len(name) <= MAX_CN_LENGTH or problem != _BAD_FORMAT):
        return problem
    if len(name) > MAX_CN_LENGTH:
        return (
            f"Certificate names must be at most {MAX_CN_LENGTH} characters long "
            f"(the limit of a certificate's common name, RFC 5280); this one has {len(name)}."
        )
    return None


def is_safe_name(name: str) -> bool:
    """True if *name* can be used as a file name in the cadir (no path tricks at all).

    Looser than :func:`certname_problem` on length only: names stored by older
    versions (or another CA) can still be listed, refused, revoked and deleted.
    """
    return _format_problem(name) is None


def puppet_time(when: dt.datetime) -> str:
    """Format a time the way puppetserver does in JSON and inventory: ``2031-11-23T20:25:45UTC``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SUTC")


def colon_hex(digest: bytes) -> str:
    return digest.hex(":").upper()


def sha256_fingerprint(der: bytes) -> str:
    """The ``SHA256`` member of :func:`fingerprints`, alone (what the audit log records)."""
    return colon_hex(hashlib.sha256(der).digest())


def fingerprints(der: bytes) -> dict[str, str]:
    """puppetserver's ``fingerprints`` object for DER bytes (cert or CSR)."""
    sha256 = sha256_fingerprint(der)
    return {
        "SHA1": colon_hex(hashlib.sha1(der).digest()),
        "SHA256": sha256,
        "SHA512": colon_hex(hashlib.sha512(der).digest()),
        "default": sha256,
    }
