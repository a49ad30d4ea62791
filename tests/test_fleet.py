"""The fleet's CRLs: the CA records which CRL each compile master's sync-crl fetched, and
`splitca masters` says who is behind; real `splitca serve`, real `splitca sync-crl` runs."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from splitca.compose import open_ca
from splitca.config import Settings
from splitca.http.app import App
from splitca.http.wsgiapp import make_app

from .conftest import Server, WsgiResult, setup_ca, wsgi_call

V1 = "/puppet-ca/v1"


def splitca(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitca", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def generate(server: Server, name: str, tmp_path: Path) -> Path:
    ssl = tmp_path / f"{name}-ssl"
    out = server.cli("generate", name, "--ssldir", str(ssl), "--key-size", "2048")
    assert out.returncode == 0, out.stderr
    return ssl


def sync(
    server: Server,
    name: str,
    ssl: Path,
    *,
    identity: bool = True,
    env: dict[str, str] | None = None,
) -> int:
    """One real `splitca sync-crl` run of master *name*, with its certificate from *ssl*."""
    args = [
        "sync-crl",
        "--ca-url",
        server.url,
        "--ca-cert",
        str(ssl / "certs" / "ca.pem"),
        "--dest",
        str(ssl / "crl.pem"),
        "--no-reload",
    ]
    if identity:
        args += [
            "--client-cert",
            str(ssl / "certs" / f"{name}.pem"),
            "--client-key",
            str(ssl / "private_keys" / f"{name}.pem"),
        ]
    out = splitca(*args, env=env)
    assert out.returncode in (0, 10), out.stderr
    return out.returncode


def masters(server: Server, *args: str) -> tuple[int, dict[str, object]]:
    out = server.cli("masters", "--format", "json", *args)
    return out.returncode, json.loads(out.stdout)


def test_masters_shows_the_master_that_stopped_syncing_and_exits_non_zero(
    settings: Settings, server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    setup_ca(settings)
    server = server_factory(settings)
    m1 = generate(server, "master1.test", tmp_path)
    m2 = generate(server, "master2.test", tmp_path)
    agent = generate(server, "agent1.test", tmp_path)
    code, fleet = masters(server)
    assert (code, fleet["masters"]) == (0, [])

    # master2 runs sync-crl without --client-cert: it presents the host's Puppet certificate,
    # which its `puppet config print` names (a stand-in puppet that answers for master2).
    fake = tmp_path / "bin" / "puppet"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\ncat <<EOF\n"
        f"confdir = {tmp_path}/etc-puppet\nssldir = {m2}\ncertname = master2.test\n"
        f"hostcert = {m2}/certs/master2.test.pem\nhostprivkey = {m2}/private_keys/master2.test.pem\n"
        f"localcacert = {m2}/certs/ca.pem\nhostcrl = {m2}/crl.pem\nEOF\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, SPLITCA_PUPPET=str(fake), XDG_CACHE_HOME=str(tmp_path / "cache"))
    sync(server, "master1.test", m1)  # generate --ssldir wrote the CRL: 0 (current) or 10
    sync(server, "master2.test", m2, identity=False, env=env)
    # An agent fetching the CRL with its certificate is not a compile master.
    r = requests.get(
        f"{server.url}{V1}/certificate_revocation_list/ca",
        verify=str(server.cacert),
        cert=(str(agent / "certs/agent1.test.pem"), str(agent / "private_keys/agent1.test.pem")),
        timeout=30,
    )
    assert r.status_code == 200

    code, fleet = masters(server)
    first = fleet["crl_number"]
    assert code == 0
    assert [(m["certname"], m["crl_number"], m["behind"]) for m in fleet["masters"]] == [  # type: ignore[index]
        ("master1.test", first, 0),
        ("master2.test", first, 0),
    ]

    out = server.cli("revoke", "agent1.test")
    assert out.returncode == 0, out.stderr
    assert sync(server, "master1.test", m1) == 10  # only master1 syncs again

    code, fleet = masters(server)
    assert code == 11  # MastersBehind (cli/_base.py EXIT_CODES)
    assert fleet["crl_number"] == first + 1  # type: ignore[operator]
    assert fleet["late"] == ["master2.test"]
    rows = {m["certname"]: m for m in fleet["masters"]}  # type: ignore[union-attr, index]
    assert (rows["master1.test"]["behind"], rows["master2.test"]["behind"]) == (0, 1)
    assert rows["master2.test"]["crl_number"] == first

    text = server.cli("masters")
    assert text.returncode == 11
    assert "master2.test" in text.stdout and "behind by 1" in text.stdout
    assert "master2.test" in text.stderr
    assert server.cli("masters", "--max-behind", "1").returncode == 0
    assert server.cli("masters", "--max-age", "1h").returncode == 0  # behind for seconds only
    assert server.cli("masters", "--max-age", "1h", "--max-behind", "1").returncode == 2

    # The same lag on /metrics, for Prometheus.
    prom = generate(server, "prometheus.test", tmp_path)
    r = requests.get(
        f"{server.url}/metrics",
        verify=str(server.cacert),
        cert=(
            str(prom / "certs/prometheus.test.pem"),
            str(prom / "private_keys/prometheus.test.pem"),
        ),
        timeout=30,
    )
    behind = {
        s.labels["certname"]: s.value
        for f in text_string_to_metric_families(r.text)
        if f.name == "splitca_master_crl_behind"
        for s in f.samples
    }
    assert behind == {"master1.test": 0, "master2.test": 1}

    assert sync(server, "master2.test", m2, identity=False, env=env) == 10
    assert masters(server)[0] == 0  # caught up


def fetch_crl_as_sync_crl(app: App, cert: x509.Certificate) -> WsgiResult:
    """GET the CRL as a compile master's `splitca sync-crl` does (its certificate, its agent)."""
    return wsgi_call(
        app,
        "GET",
        f"{V1}/certificate_revocation_list/ca",
        client=cert,
        headers={"User-Agent": "splitca-sync-crl"},
    )


def test_a_crl_fetch_that_cannot_be_recorded_is_still_served(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The index is locked by a writer that does not let go: the record is given up (logged)
    after a short wait, and the CRL goes out."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    _, cert = ca.generate("master1.test", key_size=2048)
    ca.store.refresh()
    holder = sqlite3.connect(settings.cadir / ".splitca" / "index.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING):
            r = fetch_crl_as_sync_crl(app, cert)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.status == 200 and b"BEGIN X509 CRL" in r.body
    assert "CRL fetch by master1.test not recorded" in caplog.text
    assert ca.masters().masters == ()
    fetch_crl_as_sync_crl(app, cert)  # and once the index is free, it is recorded
    assert [m.name for m in ca.masters().masters] == ["master1.test"]


def test_a_revoked_or_cleaned_master_leaves_the_fleet(settings: Settings) -> None:
    """A master taken out of service (its certificate revoked, or cleaned) can fetch no CRL
    again: listed, it would be behind for ever and `splitca masters` exit 11 for ever."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    for name in ("master1.test", "master2.test", "master3.test"):
        _, cert = ca.generate(name, key_size=2048)
        r = fetch_crl_as_sync_crl(app, cert)
        assert r.status == 200
    assert [m.name for m in ca.masters().masters] == [
        "master1.test",
        "master2.test",
        "master3.test",
    ]
    ca.revoke(["master1.test"])
    ca.clean(["master3.test"])
    fleet = ca.masters()
    assert [m.name for m in fleet.masters] == ["master2.test"]
    assert all(m.behind == 0 for m in fleet.masters) is False  # the revocations moved the CRL on
