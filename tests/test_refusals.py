"""Refused CSRs are visible: the agent's 400 (body and reason phrase), one serve log line, `list --refused`."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from click.testing import CliRunner, Result

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.http.wsgiapp import make_app

from .apache_harness import wsgi_python_home  # noqa: F401 - fixture
from .conftest import Agent, Server, make_csr, setup_ca, write_config


def put_csr(settings: Settings, name: str, pem: bytes) -> tuple[str, str]:
    """PUT certificate_request/NAME through the real app: (status line, body)."""
    ca = open_ca(settings, autosign_at_start=False)
    app = make_app(ca=ca)
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        {
            "REQUEST_METHOD": "PUT",
            "PATH_INFO": f"/puppet-ca/v1/certificate_request/{name}",
            "wsgi.input": io.BytesIO(pem),
            "CONTENT_LENGTH": str(len(pem)),
            "CONTENT_TYPE": "text/plain",
            "REMOTE_ADDR": "192.0.2.7",
            "SSL_CLIENT_VERIFY": "NONE",
        }
    )
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(app(environ, start_response)).decode()
    return seen["status"], body


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    setup_ca(settings)
    return write_config(tmp_path / "splitca.yaml", settings)


def test_a_refused_csr_is_answered_logged_and_listed(
    settings: Settings, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem = pki.pem(make_csr("web1.example.com", sans=["DNS:evil.example.com"]))
    with caplog.at_level(logging.WARNING):
        status, body = put_csr(settings, "web1.example.com", pem)
    assert status.startswith("400 Bad Request: CSR refused (disallowed-extension): ")
    assert "evil.example.com" in status and "evil.example.com" in body
    [line] = [r.getMessage() for r in caplog.records if "Refused CSR" in r.getMessage()]
    assert line.startswith("Refused CSR for web1.example.com from 192.0.2.7: ")
    assert "disallowed-extension" in line and "\n" not in line

    out = run(config, "list", "--refused")
    assert out.exit_code == 0, out.output
    assert "web1.example.com" in out.output and "from 192.0.2.7" in out.output
    assert "extra subject alternative names" in out.output
    assert "last 7 days" in out.output

    data = json.loads(run(config, "list", "--refused", "--format", "json").output)
    assert [(r["certname"], r["kind"], r["address"]) for r in data] == [
        ("web1.example.com", "disallowed-extension", "192.0.2.7")
    ]
    assert data[0]["time"].endswith("+00:00")

    plain = CliRunner().invoke(cli, ["--config", str(config), "list"])
    assert "1 CSR refused recently, see 'splitca list --refused'" in plain.stderr
    # Nothing of the refused CSR was stored.
    assert not (settings.cadir / "requests" / "web1.example.com.pem").exists()


def test_a_duplicate_and_garbage_are_recorded_newest_first(
    settings: Settings, config: Path
) -> None:
    assert put_csr(settings, "dup.example.com", pki.pem(make_csr("dup.example.com")))[0].startswith(
        "200"
    )
    status, body = put_csr(settings, "dup.example.com", pki.pem(make_csr("dup.example.com")))
    assert status.startswith("400 Bad Request: CSR refused (duplicate-cert)")
    assert "already has a requested certificate" in body
    status, _ = put_csr(settings, "junk%0Aname", b"not a csr")
    assert status.startswith("400")
    data = json.loads(run(config, "list", "--refused", "--format", "json").output)
    assert [(r["certname"], r["kind"]) for r in data] == [
        ("junk\\nname", "invalid-csr"),
        ("dup.example.com", "duplicate-cert"),
    ]


def test_refusals_older_than_the_retention_are_not_shown(
    settings: Settings, tmp_path: Path
) -> None:
    setup_ca(settings)
    short = settings.replace(refusal_retention=dt.timedelta(seconds=60))
    put_csr(short, "old.example.com", pki.pem(make_csr("old.example.com", sans=["DNS:x.y"])))
    ca = open_ca(short, autosign_at_start=False)
    assert [r.certname for r in ca.refusals()] == ["old.example.com"]
    later = open_ca(
        short,
        autosign_at_start=False,
        clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120),
    )
    assert later.refusals() == []


def test_a_real_puppet_agent_logs_why_its_csr_was_refused(
    settings: Settings,
    server_factory: Callable[..., Server],
    agent_factory: Callable[[str], Agent],
) -> None:
    """Puppet 7 drops a 400's body on CSR submission (state_machine.rb NeedSubmitCSR) and
    goes on to "not signed yet"; it logs the status line, so the reason travels there."""
    setup_ca(settings)
    server = server_factory(settings)
    agent = agent_factory("alt.example.com")
    res = agent.bootstrap(server.port, "--dns_alt_names", "sneaky.example.com", "--debug")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "returned 400 Bad Request: CSR refused (disallowed-extension)" in out, out
    assert "sneaky.example.com" in out
    log = server.log_text()
    assert "Refused CSR for alt.example.com from 127.0.0.1" in log, log
    listed = server.cli("list", "--refused")
    assert "alt.example.com" in listed.stdout and "disallowed-extension" in listed.stdout


@pytest.mark.interop
@pytest.mark.slow
def test_under_mod_wsgi_the_reason_phrase_reaches_the_client(wsgi_python_home: Path) -> None:  # noqa: F811
    """Apache passes the app's reason phrase on (it does not replace it with "Bad Request")."""
    import shutil

    import requests

    from .apache_harness import (
        IS_ROOT,
        owned_by_nobody,
        start_apache,
        stop_apache,
        unprivileged,
        world_dir,
    )
    from .conftest import free_port, make_settings

    root = world_dir("splitca-refusals-")
    settings = make_settings(root)
    setup_ca(settings)
    config = write_config(root / "splitca.yaml", settings)
    port = free_port()
    script = next(
        wsgi_python_home.glob("lib/python3*/site-packages/splitca/templates/splitca.wsgi")
    )
    args = [
        "--config", str(config),
        "apache-config", "--site", "ca",
        "--listen", f"127.0.0.1:{port}",
        "--python-home", str(wsgi_python_home),
        "--wsgi-script", str(script),
    ]  # fmt: skip
    if IS_ROOT:
        user, group = unprivileged()
        args += ["--wsgi-user", user, "--wsgi-group", group]
    rendered = CliRunner().invoke(cli, args)
    assert rendered.exit_code == 0, rendered.output
    pem = pki.pem(make_csr("alt.example.com", sans=["DNS:sneaky.example.com"]))
    with owned_by_nobody(root):
        httpd = start_apache(rendered.output, port, ("ssl", "headers", "env", "wsgi"))
        try:
            r = requests.put(
                f"https://127.0.0.1:{port}/puppet-ca/v1/certificate_request/alt.example.com",
                data=pem,
                headers={"Content-Type": "text/plain"},
                verify=str(settings.cadir / "ca_crt.pem"),
                timeout=30,
            )
            log = httpd.log_text()
        finally:
            stop_apache(httpd)
    assert r.status_code == 400, (r.text, log[-3000:])
    assert r.reason.startswith("Bad Request: CSR refused (disallowed-extension)"), r.reason
    assert "sneaky.example.com" in r.text
    shutil.rmtree(root, ignore_errors=True)


def test_a_busy_store_drops_the_record_but_never_the_answer(
    settings: Settings, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """record_refusal is best effort: with the index held by another process, the 400
    still goes out with its reason; the record is dropped and that is logged."""
    import subprocess
    import sys

    assert run(config, "list").exit_code == 0  # the index is in step: no catching up below
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from splitca.store.files.filestore import FileStore\n"
            "store = FileStore(pathlib.Path(sys.argv[1]))\n"
            "with store.cadir.lock('index')():\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n",
            str(settings.cadir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        pem = pki.pem(make_csr("busy.example.com", sans=["DNS:other.example.com"]))
        with caplog.at_level(logging.WARNING):
            status, body = put_csr(settings, "busy.example.com", pem)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert status.startswith("400 Bad Request: CSR refused") and "other.example.com" in body
    assert any(
        "could not record the refusal of busy.example.com" in r.getMessage() for r in caplog.records
    )
    listed = json.loads(run(config, "list", "--refused", "--format", "json").output)
    assert listed == []
