"""Enrollment use cases: register machines, render their cloud-init user-data, classify them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Iterator
from typing import Any

import yaml

from splitca import pki
from splitca.clock import utcnow
from splitca.core.audit import SYSTEM, Actor, AuditSink
from splitca.enrollment.registry import (
    Classification,
    Registration,
    Registry,
    hash_token,
    new_token,
)
from splitca.errors import InvalidRequest

__all__ = [
    "CHALLENGE_PASSWORD_OID",
    "MAX_REGISTRATION_TTL",
    "classify",
    "cloud_config",
    "enc_yaml",
    "new_certname",
    "register",
    "render_user_data",
    "unregister",
]

CHALLENGE_PASSWORD_OID = "1.2.840.113549.1.9.7"
MAX_REGISTRATION_TTL = dt.timedelta(days=30)
INSTALL_CHOICES = ("packages", "aio", "none")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def new_certname(*, prefix: str = "", domain: str = "") -> str:
    """A fresh, unguessable certname: ``<prefix><uuid4>[.<domain>]``.

    Raises:
      InvalidRequest: the prefix or domain makes an invalid certname.
    """
    name = f"{prefix}{uuid.uuid4()}" + (f".{domain.strip('.')}" if domain else "")
    if problem := pki.certname_problem(name):
        if len(name) > pki.MAX_CN_LENGTH:
            room = pki.MAX_CN_LENGTH - 36 - (1 if domain else 0)  # a UUID has 36 characters
            problem += f" The prefix and domain can have at most {room} characters together."
        raise InvalidRequest(f"--prefix/--domain give an invalid certname {name!r}: {problem}")
    return name


def register(
    registry: Registry,
    certname: str,
    classification: Classification,
    *,
    ttl: dt.timedelta,
    replace: bool = False,
    now: dt.datetime | None = None,
    audit: AuditSink | None = None,
    actor: Actor = SYSTEM,
) -> tuple[Registration, str]:
    """Write a registration for *certname* and return it with its one-time token.

    The token is returned once and stored nowhere: the registry keeps its SHA-256.

    Raises:
      InvalidRequest: bad certname or ttl.
      Conflict: already registered (without *replace*), or a read-only registry.
    """
    if problem := pki.certname_problem(certname):
        raise InvalidRequest(f"{certname!r} is not a valid certname: {problem}")
    if not dt.timedelta(0) < ttl <= MAX_REGISTRATION_TTL:
        raise InvalidRequest("ttl: a registration lasts more than 0s and at most 30d")
    now = now or utcnow().replace(microsecond=0)  # registrations keep whole seconds
    token = new_token()
    record = Registration(certname, now, now + ttl, hash_token(token), classification)
    registry.add(record, replace=replace)
    if audit is not None:
        audit.event(
            "register",
            actor,
            certname=certname,
            registry=registry.location,
            token_id=record.token_id,
            expires=record.expires.isoformat(),
            classes=list(classification.classes),
            environment=classification.environment,
            # names only: parameter values may be secrets of the site
            parameter_names=sorted(classification.parameters),
            replaced=replace,
        )
    return record, token


def unregister(
    registry: Registry, certname: str, *, audit: AuditSink | None = None, actor: Actor = SYSTEM
) -> None:
    """Delete a registration (its token can no longer enroll; the classifier forgets the node).

    Raises:
      NotFound: nothing registered under *certname*.
    """
    registry.remove(certname)
    if audit is not None:
        audit.event("unregister", actor, certname=certname, registry=registry.location)


def registrations(registry: Registry) -> Iterator[Registration]:
    return registry.records()


def classify(registry: Registry, certname: str) -> Classification | None:
    """The node's classification, or None for a node the registry does not know.

    A registration keeps classifying its node after the token is used or the
    enrollment window has passed: expiry bounds enrollment, not the node's life.
    """
    record = registry.get(certname)
    return None if record is None else record.classification


def enc_yaml(classification: Classification) -> str:
    """Puppet's external node classifier output (``node_terminus = exec``).

    Puppet reads it with Ruby's Psych, whose YAML 1.1 rules differ from PyYAML's: a plain
    ``0:30`` or ``1,000`` is an Integer there, ``:x`` a Symbol, ``2026-1-5`` a Date (which
    Puppet's loader refuses, failing the node's run). So a string is written plain only if
    it is a name no YAML parser takes for anything else; every other one is double-quoted.
    """
    return yaml.dump(
        classification.enc(),
        Dumper=_EncDumper,
        explicit_start=True,
        default_flow_style=False,
        sort_keys=False,
    )


class _EncDumper(yaml.SafeDumper):
    """Strings plain only when unambiguous in every YAML 1.1 parser, else double-quoted."""


# Identifiers and class names (rack, r12, hadoop::worker): never a number, date or symbol...
_PLAIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
# ...except YAML 1.1's booleans and null, which Psych matches in any letter case.
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _enc_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain = _PLAIN_RE.fullmatch(value) and value.lower() not in _YAML11_WORDS
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')


_EncDumper.add_representer(str, _enc_str)


# --- cloud-init -----------------------------------------------------------------------------


def check_agent_options(
    *, server: object, server_port: object, ca_server: object, ca_port: object, install: object
) -> None:
    """Refuse user-data options that cannot configure an agent; run it before registering,
    so that a refused option leaves no registration behind.

    Raises:
      InvalidRequest: naming the bad option.
    """
    if install not in INSTALL_CHOICES:
        raise InvalidRequest(f"install: must be one of {', '.join(INSTALL_CHOICES)}")
    for key, host in (("server", server), ("ca_server", ca_server)):
        # these land in puppet.conf: one clean token, never a line break
        if not _is_host(host):
            raise InvalidRequest(f"{key}: {str(host)[:80]!r} is not a host name or IP address")
    for key, port in (("server_port", server_port), ("ca_port", ca_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidRequest(f"{key}: must be a port number 1-65535")


def _is_host(host: object) -> bool:
    """A DNS name (labels of letters, digits and inner hyphens), an IP address, or an IPv6
    address in brackets."""
    if not isinstance(host, str) or not 0 < len(host) <= 253:
        return False
    bracketed = host.startswith("[") and host.endswith("]")
    inner = host[1:-1] if bracketed else host
    if ":" in inner:  # only an IPv6 address has colons (no port, no zone: "%" is no host)
        try:
            return "%" not in inner and ipaddress.ip_address(inner).version == 6
        except ValueError:
            return False
    return not bracketed and all(_LABEL_RE.fullmatch(label) for label in host.split("."))


def cloud_config(
    *,
    certname: str,
    token: str,
    ca_cert_pem: str,
    server: str,
    server_port: int,
    ca_server: str,
    ca_port: int,
    install: str = "packages",
    run_agent: bool = True,
    crl_refresh_seconds: int = 86400,
) -> dict[str, Any]:
    """The ``#cloud-config`` document for one machine, using cloud-init's ``puppet`` module.

    ``conf`` becomes puppet.conf (``ca_cert`` is written to ``<ssldir>/certs/ca.pem``, so
    the agent trusts this CA from the first connection instead of trusting on first
    use) and ``csr_attributes`` becomes csr_attributes.yaml, whose challengePassword
    carries the token. Values are strings because cloud-init writes them with
    ConfigParser.
    """
    check_agent_options(
        server=server,
        server_port=server_port,
        ca_server=ca_server,
        ca_port=ca_port,
        install=install,
    )
    puppet: dict[str, Any] = {}
    if install == "none":
        puppet["install"] = False
    elif install == "aio":
        puppet.update(install=True, install_type="aio", collection="puppet7")
    else:
        puppet.update(install=True, install_type="packages")
    puppet["conf"] = {
        "main": {
            "certname": certname,
            "server": server,
            "serverport": str(server_port),
            "ca_server": ca_server,
            "ca_port": str(ca_port),
            # Puppet 7 never re-fetches its CRL without this, and fails once it expires.
            "crl_refresh_interval": f"{max(60, int(crl_refresh_seconds))}s",
        },
        "ca_cert": ca_cert_pem,
    }
    puppet["csr_attributes"] = {"custom_attributes": {CHALLENGE_PASSWORD_OID: token}}
    puppet["exec"] = run_agent
    if run_agent:
        puppet["exec_args"] = ["--onetime", "--no-daemonize", "--verbose", "--waitforcert", "0"]
    return {"puppet": puppet}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the CA certificate) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def agent_crl_refresh_seconds(crl_ttl: dt.timedelta, refresh_margin: dt.timedelta) -> int:
    """How often agents should re-fetch the CRL: daily, or sooner if the CRL is shorter-lived.

    The CA re-issues its CRL when ``refresh_margin`` of its life remains; fetching at
    least twice within that margin means an agent never holds an expired CRL.
    """
    return int(min(dt.timedelta(days=1), refresh_margin / 2, crl_ttl / 4).total_seconds())


def render_user_data(document: dict[str, Any]) -> str:
    """User-data text: ``#cloud-config`` then the YAML document."""
    body = yaml.dump(document, Dumper=_Dumper, default_flow_style=False, sort_keys=False)
    return "#cloud-config\n" + body
