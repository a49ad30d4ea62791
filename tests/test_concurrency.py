"""Several processes sign at once (the server's workers plus CLI runs): no serial is reused,
no inventory line is lost, every certificate is indexed."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography import x509

from splitca import pki
from splitca.compose import open_ca
from splitca.store.files.cadir import parse_inventory

from .conftest import fast_key, make_csr, setup_ca

pytestmark = pytest.mark.slow


def test_server_and_cli_signers_never_reuse_a_serial(settings, server_factory) -> None:
    setup_ca(settings)
    ca = open_ca(settings)
    pending = [f"cli-{i:02d}" for i in range(40)]
    for name in pending:
        ca.submit_csr(name, pki.pem(make_csr(name)))
    agents = [f"http-{i:02d}" for i in range(40)]
    bodies = {name: pki.pem(make_csr(name, key=fast_key())) for name in agents}
    server = server_factory(settings.replace(autosign=True), workers=2)

    def enroll(name: str) -> int:
        with requests.Session() as s:
            s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
            s.verify = str(server.cacert)
            r = s.put(
                f"{server.url}/puppet-ca/v1/certificate_request/{name}",
                data=bodies[name],
                headers={"Content-Type": "text/plain"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            r = s.get(f"{server.url}/puppet-ca/v1/certificate/{name}", timeout=60)
            return r.status_code

    # Four CLI signers over disjoint quarters, plus a fifth racing the first over the same names.
    groups = [pending[i::4] for i in range(4)] + [pending[0::4]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "splitca", "--config", str(server.config), "sign", *g],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in groups
    ]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(enroll, agents))
    outs = [p.communicate(timeout=180) for p in procs]
    assert statuses == [200] * len(agents)
    signed_by = [set(re.findall(r"^Signed certificate for (\S+) ", out, re.M)) for out, _ in outs]
    for i in (1, 2, 3):  # disjoint groups: nobody else signs their names, so nothing can fail
        assert procs[i].returncode == 0, outs[i][1]
        assert outs[i][1] == "" and signed_by[i] == set(groups[i])
    # The first group races the fifth over the same names: each name is signed by exactly
    # one of them; the other says it "is already signed" and exits 4.
    assert signed_by[0] | signed_by[4] == set(groups[0])
    assert not signed_by[0] & signed_by[4], "a name was signed by both racing signers"
    for i, other in ((0, 4), (4, 0)):
        lost = sorted(signed_by[other])
        assert procs[i].returncode == (4 if lost else 0), outs[i][1]
        assert outs[i][1].splitlines() == [
            f"Error: could not sign {n}: {n} is already signed (there is no CSR to sign)"
            for n in lost
        ]

    cadir = settings.cadir
    certs = {
        p.stem: x509.load_pem_x509_certificate(p.read_bytes())
        for p in (cadir / "signed").glob("*.pem")
    }
    assert set(pending) | set(agents) <= set(certs)
    serials = [c.serial_number for c in certs.values()]
    assert len(serials) == len(set(serials)), "a serial was issued twice"
    lines = list(parse_inventory((cadir / "inventory.txt").read_bytes()))
    inv_serials = [ln.serial for ln in lines]
    assert len(inv_serials) == len(set(inv_serials)), "duplicate serial in the inventory"
    assert set(serials) <= set(inv_serials), "a certificate is missing from the inventory"
    per_name = collections.Counter(ln.certname for ln in lines)
    assert all(per_name[n] == 1 for n in pending + agents), "a name was signed twice"
    assert ca.store.cadir.read_serial() > max(inv_serials)
    assert list((cadir / "requests").glob("*.pem")) == []
    fresh = open_ca(settings)
    assert fresh.store.index.counts()["signed"] == len(certs)
    for name, cert in certs.items():
        assert fresh.status(name).serial == cert.serial_number  # type: ignore[union-attr]
