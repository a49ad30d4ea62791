"""Enrollment end to end with real programs: Puppet 7 agents configured from `splitca enroll`'s
cloud-init user-data against `splitca serve`, the classifier under `puppet apply`, and a hanging
policy executable on a live server."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from splitca import pki
from splitca.config import Settings
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.enroll import register
from splitca.enrollment.registry import Classification

from .conftest import Agent, Server, make_csr, require_program, setup_ca, write_config

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"


def splitca(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def apply_cloud_config(puppet: dict[str, Any], agent: Agent) -> None:
    """What cloud-init's cc_puppet does with the ``puppet:`` section, for this agent's dirs:
    ``conf`` sections into puppet.conf through ConfigParser (``ca_cert`` to <ssldir>/certs/ca.pem),
    ``csr_attributes`` dumped to csr_attributes.yaml."""
    conf_path = agent.confdir / "puppet.conf"
    parser = configparser.ConfigParser()
    parser.read(conf_path)
    for section, values in puppet.get("conf", {}).items():
        if section == "ca_cert":
            (agent.ssldir / "certs").mkdir(parents=True, exist_ok=True)
            (agent.ssldir / "certs" / "ca.pem").write_text(values)
            continue
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in values.items():
            if key == "certname":
                value = value.lower()
            parser.set(section, key, value)  # TypeError for non-strings, as in cloud-init
    with open(conf_path, "w") as f:
        parser.write(f)
    if "csr_attributes" in puppet:
        (agent.confdir / "csr_attributes.yaml").write_text(
            yaml.dump(puppet["csr_attributes"], default_flow_style=False)
        )


def bootstrap_from_conf(agent: Agent) -> subprocess.CompletedProcess[str]:
    """`puppet ssl bootstrap` with only the agent's directories on the command line:
    server, ports, certname and the CA certificate come from the files cloud-init wrote."""
    root = agent.root
    return agent.run(
        "ssl",
        "bootstrap",
        "--confdir",
        str(agent.confdir),
        "--vardir",
        str(root / "var"),
        "--ssldir",
        str(agent.ssldir),
        "--logdir",
        str(root / "log"),
        "--rundir",
        str(root / "run"),
        "--codedir",
        str(root / "code"),
        "--keylength",
        "2048",
        "--color",
        "false",
        "--waitforcert",
        "0",
    )


def pending_reasons(server: Server) -> dict[str, str]:
    out = splitca(server.config, "list", "--pending", "--format", "json")
    assert out.returncode == 0, out.stderr
    return {row["name"]: row.get("pending_reason", "") for row in json.loads(out.stdout)}


def admin(settings: Settings, method: str, url: str, **kw: Any) -> requests.Response:
    """A request with the CA host's own certificate (it carries pp_cli_auth)."""
    return requests.request(
        method,
        url,
        verify=str(settings.cadir / "ca_crt.pem"),  # per request: REQUESTS_CA_BUNDLE would win
        cert=(str(settings.effective_server_cert), str(settings.effective_server_key)),
        timeout=30,
        **kw,
    )


def test_cloud_init_enrolled_agents_against_a_registry_ca(
    settings: Settings, server_factory: Any, agent_factory: Any
) -> None:
    """enroll -> user-data -> real agent autosigned on first contact; strangers, replays and
    late comers stay pending with the reason; tokens never reach any log."""
    s = settings.replace(autosign="registry")
    setup_ca(s)
    server: Server = server_factory(s)
    port = str(server.port)

    out = splitca(
        server.config,
        "enroll",
        "--class",
        "hadoop::worker",
        "--environment",
        "production",
        "--server",
        "127.0.0.1",
        "--server-port",
        port,
        "--ca-server",
        "127.0.0.1",
        "--ca-port",
        port,
        "--domain",
        "fleet.example.com",
    )
    assert out.returncode == 0, out.stderr
    user_data = out.stdout
    assert user_data.splitlines()[0] == "#cloud-config"
    puppet = yaml.safe_load(user_data)["puppet"]
    certname = puppet["conf"]["main"]["certname"]
    token = puppet["csr_attributes"]["custom_attributes"][CHALLENGE_PASSWORD]
    assert re.fullmatch(r"[0-9a-f-]{36}\.fleet\.example\.com", certname)

    # 1. the enrolled machine: signed on first contact, with only cloud-init's files
    agent = agent_factory(certname)
    apply_cloud_config(puppet, agent)
    conf = (agent.confdir / "puppet.conf").read_text()
    assert f"certname = {certname}" in conf and f"ca_port = {port}" in conf
    first = bootstrap_from_conf(agent)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Completed SSL initialization" in first.stdout
    assert agent.cert_path.exists()
    assert agent.cacert_path.read_bytes() == server.cacert.read_bytes()

    # 2. a machine nobody registered
    stranger = agent_factory("stranger.fleet.example.com")
    (stranger.confdir / "csr_attributes.yaml").write_text(
        yaml.safe_dump({"custom_attributes": {CHALLENGE_PASSWORD: "f" * 64}})
    )
    assert stranger.bootstrap(server.port).returncode != 0
    assert not stranger.cert_path.exists()

    # 3. the same user-data replayed after the first machine was cleaned away
    assert splitca(server.config, "clean", certname).returncode == 0
    clone = agent_factory(certname)
    clone.root = clone.root.with_name(clone.root.name + "-clone")
    for sub in ("conf", "var", "ssl", "log", "run", "code"):
        (clone.root / sub).mkdir(parents=True)
    apply_cloud_config(puppet, clone)
    assert bootstrap_from_conf(clone).returncode != 0
    assert not clone.cert_path.exists()

    # 4. a registration whose window has passed
    late_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    _, late_token = register(
        DirectoryRegistry(Path(s.effective_registry)),
        "late.fleet.example.com",
        Classification(("hadoop::worker",)),
        ttl=dt.timedelta(hours=1),
        now=late_at,
    )
    late = agent_factory("late.fleet.example.com")
    (late.confdir / "csr_attributes.yaml").write_text(
        yaml.safe_dump({"custom_attributes": {CHALLENGE_PASSWORD: late_token}})
    )
    assert late.bootstrap(server.port).returncode != 0

    # 5. a registration made remotely through the admin endpoint, over mutual TLS
    resp = admin(
        s,
        "PUT",
        f"{server.url}/puppet-ca/v1/splitca/registrations/remote.fleet.example.com",
        json={"classes": ["role::db"], "ttl": "10m"},
    )
    assert resp.status_code == 201, resp.text
    remote_token = resp.json()["token"]
    remote = agent_factory("remote.fleet.example.com")
    (remote.confdir / "csr_attributes.yaml").write_text(
        yaml.safe_dump({"custom_attributes": {CHALLENGE_PASSWORD: remote_token}})
    )
    ok = remote.bootstrap(server.port)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    anonymous = requests.put(
        f"{server.url}/puppet-ca/v1/splitca/registrations/evil.fleet.example.com",
        json={},
        verify=str(server.cacert),
        timeout=30,
    )
    assert anonymous.status_code == 403

    assert pending_reasons(server) == {
        "stranger.fleet.example.com": "no registration",
        certname: "token already used",
        "late.fleet.example.com": "registration expired",
    }
    status = admin(s, "GET", f"{server.url}/puppet-ca/v1/certificate_status/late.fleet.example.com")
    assert status.json()["pending_reason"] == "registration expired"

    # 6. the audit trail: one line per event, who and from where; no token in any log
    audit = [json.loads(x) for x in s.effective_audit_log.read_text().splitlines()]
    mine = [(e["event"], e.get("sign")) for e in audit if e.get("certname") == certname]
    assert mine == [
        ("register", None),
        ("csr-received", None),
        ("autosign-decision", True),
        ("sign", None),
        ("revoke", None),
        ("clean", None),
        ("csr-received", None),
        ("autosign-decision", False),
    ]
    received = next(e for e in audit if e["event"] == "csr-received" and e["certname"] == certname)
    assert received["actor"]["address"] == "127.0.0.1" and received["fingerprint"]
    signed = next(e for e in audit if e["event"] == "sign" and e["certname"] == certname)
    assert signed["serial"] and signed["fingerprint"] and f"DNS:{certname}" in signed["sans"]
    remote_reg = next(
        e for e in audit if e["event"] == "register" and e["certname"].startswith("remote")
    )
    assert remote_reg["actor"] == {"kind": "http", "name": "ca.test", "address": "127.0.0.1"}
    logs = server.log_text() + s.effective_audit_log.read_text()
    for secret in (token, late_token, remote_token):
        assert secret not in logs
    assert "/splitca/registrations/remote.fleet.example.com" in server.log_text()


def test_classify_feeds_puppet_apply(
    settings: Settings, tmp_path: Path, agent_factory: Any
) -> None:
    """`puppet apply --node_terminus exec --external_nodes "splitca classify"` applies the
    registered classes with the registered parameters; an unknown node fails the run."""
    setup_ca(settings)
    cfg = write_config(tmp_path / "splitca.yaml", settings)
    reg = splitca(
        cfg,
        "register",
        "hadoop-7.example.com",
        "--class",
        "splitcatest::worker",
        "--param",
        "role=datanode",
        "--environment",
        "production",
    )
    assert reg.returncode == 0, reg.stderr
    marker = tmp_path / "applied.txt"
    manifests = tmp_path / "envs" / "production" / "modules" / "splitcatest" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "worker.pp").write_text(
        "class splitcatest::worker {\n"
        f"  file {{ '{marker}': content => \"class=${{name}} role=${{role}}\\n\" }}\n"
        "}\n"
    )
    agent = agent_factory("hadoop-7.example.com")
    enc = f"{sys.executable} -m splitca --config {cfg} classify"

    def apply(certname: str) -> subprocess.CompletedProcess[str]:
        return agent.run(
            "apply",
            "--certname",
            certname,
            "--confdir",
            str(agent.confdir),
            "--vardir",
            str(agent.root / "var"),
            "--codedir",
            str(agent.root / "code"),
            "--logdir",
            str(agent.root / "log"),
            "--rundir",
            str(agent.root / "run"),
            "--environmentpath",
            str(tmp_path / "envs"),
            "--node_terminus",
            "exec",
            "--external_nodes",
            enc,
            "--color",
            "false",
            "-e",
            "",
        )

    done = apply("hadoop-7.example.com")
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.read_text() == "class=splitcatest::worker role=datanode\n"
    marker.unlink()
    unknown = apply("nobody.example.com")
    assert unknown.returncode != 0
    assert "nobody.example.com" in unknown.stdout + unknown.stderr
    assert not marker.exists()


def test_a_hanging_policy_executable_is_killed_and_the_server_keeps_serving(
    settings: Settings, server_factory: Any, tmp_path: Path
) -> None:
    """The policy never answers: it is killed (with its children) at autosign_timeout, the CSR
    stays pending saying so, and requests that arrived meanwhile were answered first."""
    require_program("sh")
    started = tmp_path / "policy-started"
    child_pid = tmp_path / "policy-child.pid"
    policy = tmp_path / "hang-policy"
    policy.write_text(
        f"#!/bin/sh\necho started > {started}\nsleep 300 &\necho $! > {child_pid}\nwait\n"
    )
    policy.chmod(0o755)
    setup_ca(settings)
    server: Server = server_factory(
        settings.replace(autosign=str(policy), autosign_timeout=dt.timedelta(seconds=2))
    )
    csr = pki.pem(make_csr("hung.example.com"))
    put: dict[str, Any] = {}

    def submit() -> None:
        put["response"] = requests.put(
            f"{server.url}/puppet-ca/v1/certificate_request/hung.example.com",
            data=csr,
            headers={"Content-Type": "text/plain"},
            verify=str(server.cacert),
            timeout=60,
        )

    worker = threading.Thread(target=submit)
    worker.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), server.log_text()
    for path, status in (
        ("certificate/ca", 200),
        ("certificate_revocation_list/ca", 200),
        ("certificate/nobody", 404),
    ):
        r = requests.get(f"{server.url}/puppet-ca/v1/{path}", verify=str(server.cacert), timeout=30)
        assert r.status_code == status, (path, r.status_code, r.text)
    worker.join(60)
    assert not worker.is_alive()
    assert put["response"].status_code == 200
    reasons = pending_reasons(server)
    assert reasons == {"hung.example.com": "policy executable timed out after 2s"}

    # The policy's own child was killed with it (the whole process group).
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)

    # Requests that arrived while the policy hung were answered before the CSR was.
    log = server.log_text().splitlines()
    put_line = next(i for i, x in enumerate(log) if '"PUT /puppet-ca/v1/certificate_request' in x)
    get_lines = [i for i, x in enumerate(log) if '"GET /puppet-ca/v1/certificate' in x]
    assert len(get_lines) == 3 and max(get_lines) < put_line
    assert "timed out" in server.log_text()


def _alive(pid: int) -> bool:
    """True while *pid* runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# Strings that YAML 1.1 parsers read differently: Ruby's Psych (what Puppet's exec node
# terminus loads an ENC answer with) takes some as numbers, symbols or dates where PyYAML
# (which writes it) sees plain strings.
# fmt: off
_AMBIGUOUS = [
    "0:30", "00:30", "1:20:30", "1,000", "0,1", ":sym", "2026-1-5", "2026-01-05",
    "2026-01-05 10:00:00", "yEs", "nO", "On", "oFF", "tRUE", "fAlse", "nULL", "~", "y", "n",
    "0x1f", "0b1", "017", "08", "1_000", "1e5", "1.5", ".5", "-.inf", ".NaN", "+1", "-0",
    "!tag", "&anchor", "*alias", "@at", "%pct", "`tick", "- dash", "? q", "a: b", "#hash",
    "x #y", " lead", "trail ", "", "multi\nline", "tab\there", "caf\u00e9", "\u65e5\u672c",
    "\U0001f600", "hadoop::worker", "r12",
]
# fmt: on


def test_classify_output_is_read_back_by_puppets_loader_as_the_registered_data() -> None:
    """What `splitca classify` prints, loaded the way Puppet's exec node terminus loads it
    (Puppet::Util::Yaml.safe_load with Symbol permitted), is exactly the registered
    classification: every string stays a string, numbers stay the numbers they were."""
    require_program("ruby")
    from splitca.enrollment.enroll import enc_yaml

    params: dict[str, object] = {f"p{i}": v for i, v in enumerate(_AMBIGUOUS)}
    params.update(
        n_int=3,
        n_big=2**62,
        n_float=0.25,
        n_exp=1e20,
        n_small=1e-05,
        flag=True,
        off=False,
        nothing=None,
        listed=list(_AMBIGUOUS),
        nested={v: v for v in _AMBIGUOUS if v},
    )
    for environment in ("production", "08", "0_1", "1_000", "017"):
        c = Classification.build(["role::web", "yes", "on"], params, environment)
        loaded = subprocess.run(
            [
                "ruby",
                "-rpuppet",
                "-rjson",
                "-e",
                "d = Puppet::Util::Yaml.safe_load(STDIN.read, [Symbol]);"
                " bad = []; w = lambda { |v| case v"
                " when Hash then v.each { |k, x| w.(k); w.(x) }"
                " when Array then v.each { |x| w.(x) }"
                " when String, Integer, Float, true, false, nil then nil"
                " else bad << v.inspect end };"
                " w.(d); abort(\"not JSON data: #{bad.join(', ')}\") unless bad.empty?;"
                " puts JSON.generate(d)",
            ],
            input=enc_yaml(c),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert json.loads(loaded.stdout) == c.enc() | {"environment": environment}
