"""Two- and three-level CA chains with the real programs: Puppet 7 agents bootstrap from
`splitca serve`, Apache compile masters admit and refuse under `sync-crl`, the serve log warns."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from splitca import pki

from .apache_harness import (
    Identity,
    https_get,
    refused,
    render_master,
    start_apache,
    stop_apache,
    wait_until,
)
from .apache_harness import backend as backend
from .chain_helpers import NOW, ext_chain, import_files, key_pem, run, write_config
from .conftest import Server, free_port, make_settings, openssl
from .test_split_e2e import MASTER_MODULES, generate, gets_through, splitca, sync_crl

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def make_ca(tmp_path: Path, levels: int) -> Path:
    """A CA with a chain of *levels*: `setup --intermediate` for 2, `import` of an external
    root -> mid -> issuing chain for 3. Returns its config file."""
    config = write_config(tmp_path)
    if levels == 2:
        done = run(config, "setup", "--intermediate", "--root-key-out", str(tmp_path / "root.pem"))
    else:
        done = run(config, "import", *import_files(tmp_path, ext_chain(levels)))
    assert done.exit_code == 0, done.output
    assert len(pki.load_certificates((tmp_path / "ca" / "ca_crt.pem").read_bytes())) == levels
    return config


def verify_all(cert: Path, cacert: Path, crl: Path) -> subprocess.CompletedProcess[bytes]:
    return openssl(
        "verify", "-crl_check_all", "-CAfile", str(cacert), "-CRLfile", str(crl), str(cert)
    )


@pytest.mark.parametrize("levels", [2, 3])
def test_agents_bootstrap_and_an_apache_master_admits_and_refuses_under_a_chain(
    levels, tmp_path, server_factory, agent_factory, backend
):
    make_ca(tmp_path, levels)
    settings = make_settings(tmp_path)
    server: Server = server_factory(settings.replace(autosign=True))
    # Real Puppet 7 agents (certificate_revocation = chain: every CA's CRL is checked).
    agents = [agent_factory(f"agent{i}.example.com") for i in (1, 2)]
    for agent in agents:
        boot = agent.bootstrap(server.port)
        assert boot.returncode == 0, boot.stdout + boot.stderr
        assert agent.cacert_path.read_bytes() == server.cacert.read_bytes()
        assert agent.crl_path.read_bytes() == (settings.cadir / "ca_crl.pem").read_bytes()
        check = verify_all(agent.cert_path, agent.cacert_path, agent.crl_path)
        assert check.returncode == 0, check.stdout + check.stderr
    # A compile master under that chain: apache-config sets the depth from the bundle.
    master_ssl = tmp_path / "master1-ssl"
    master = generate(server.config, "master1.example.com", master_ssl, "puppet,IP:127.0.0.1")
    port = free_port()
    site = render_master(master, master_ssl / "crl.pem", port, backend.url)
    assert f"SSLVerifyDepth {levels}\n" in site
    assert len(pki.split_pem((master_ssl / "crl.pem").read_bytes(), "X509 CRL")) == levels
    httpd = start_apache(site, port, MASTER_MODULES)
    try:
        who = [
            Identity(
                a.certname,
                a.cert_path,
                a.key_path,
                a.cacert_path,
                x509.load_pem_x509_certificate(a.cert_path.read_bytes()),
            )
            for a in agents
        ]
        assert gets_through(httpd, who[0]) and gets_through(httpd, who[1])
        revoked = splitca(server.config, "revoke", "agent1.example.com")
        assert revoked.returncode == 0, revoked.stderr
        before = httpd.generations()
        synced = sync_crl(server.url, master.cacert, master_ssl / "crl.pem", httpd)
        assert synced.returncode == 10, synced.stdout + synced.stderr
        crls = pki.split_pem((master_ssl / "crl.pem").read_bytes(), "X509 CRL")
        assert len(crls) == levels  # the whole chain, verified, the issuing CA's re-signed
        httpd.wait_generation(before)
        wait_until(
            lambda: refused(
                httpd.port, "/echo", cacert=who[0].cacert, cert=who[0].cert, key=who[0].key
            ),
            "the revoked agent refused",
        )
        assert gets_through(httpd, who[1])
        assert "revoked" in httpd.log_text()
        if levels == 3:  # and a real agent run through the master under the 3-level chain
            agent = agents[1]
            done = agent.run(
                "agent", "--test",
                *agent.args(server.port, server="127.0.0.1", server_port=httpd.port),
                "--no-report",
                timeout=180,
            )  # fmt: skip
            assert done.returncode in (0, 2), done.stdout + done.stderr
            assert "Applied catalog" in done.stdout + done.stderr
    finally:
        stop_apache(httpd)


def test_serve_log_warns_well_before_the_roots_crl_expires(tmp_path, server_factory):
    chain = ext_chain(2)
    issuing, root = chain
    soon = root.crl(
        this_update=NOW - dt.timedelta(days=300), next_update=NOW + dt.timedelta(days=20)
    )
    config = write_config(tmp_path)
    assert (
        run(config, "import", *import_files(tmp_path, chain, [issuing.crl(), soon])).exit_code == 0
    )
    server: Server = server_factory(make_settings(tmp_path))
    log = server.log_text()
    assert "CRL chain: the CRL of 'CN=Example Root CA' (number 1) expires at" in log, log
    assert "splitca crl install-root" in log
    served = server.cli("crl", "show", "--format", "json")
    assert [c["issuer"] for c in json.loads(served.stdout)["chain"]] == [
        "CN=Example Issuing CA",
        "CN=Example Root CA",
    ]
    # The root's holder issues its next CRL; installed while serving, it is what the CA
    # serves at once, and the warning is gone.
    root_key = tmp_path / "ext_root_key.pem"
    root_key.write_bytes(key_pem(root.key))
    cadir = tmp_path / "ca"
    made = server.cli(
        "ca", "root-crl", "--root-key", str(root_key), "--root-cert", str(cadir / "ca_crt.pem"),
        "--crl", str(cadir / "ca_crl.pem"), "--out", str(tmp_path / "root_crl.pem"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = server.cli("crl", "install-root", str(tmp_path / "root_crl.pem"))
    assert done.returncode == 0 and "Installed CRL number 2" in done.stdout, done.stderr
    answer = https_get(
        server.port, "/puppet-ca/v1/certificate_revocation_list/ca", cacert=server.cacert
    )
    assert answer.status == 200
    assert answer.body == (cadir / "ca_crl.pem").read_bytes()
    crls = [x509.load_pem_x509_crl(b) for b in pki.split_pem(answer.body, "X509 CRL")]
    assert [pki.crl_number(c) for c in crls][1] == 2
    shown = server.cli("crl", "show", "--format", "json")
    assert json.loads(shown.stdout)["warnings"] == []
