"""`splitca status` shows requested extensions, challengePassword presence, alt names, fingerprints, revocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.config import Settings

from .conftest import make_csr, setup_ca, write_config

PP_ROLE = pki.OIDS_BY_SHORT_NAME["pp_role"]
PP_UUID = pki.OIDS_BY_SHORT_NAME["pp_uuid"]
SECRET = "s3cret-token-value"


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    csr = make_csr(
        "web1.example.com",
        extensions=[(PP_ROLE, "webserver"), (PP_UUID, "ED803750-E3C7-44F5")],
        password=SECRET,
    )
    ca.submit_csr("web1.example.com", pki.pem(csr))
    return write_config(tmp_path / "splitca.yaml", settings)


def test_status_of_a_csr_shows_extensions_and_that_a_password_is_there(config: Path) -> None:
    text = run(config, "status", "web1.example.com")
    assert text.exit_code == 0, text.output
    assert "pp_role:" in text.stdout and "webserver" in text.stdout
    assert "pp_uuid:" in text.stdout and "ED803750-E3C7-44F5" in text.stdout
    assert "challengePassword:   present" in text.stdout
    assert "fingerprint SHA256:" in text.stdout and "alt names:" in text.stdout
    data = json.loads(run(config, "status", "web1.example.com", "--format", "json").stdout)
    assert data["extensions"] == {"pp_role": "webserver", "pp_uuid": "ED803750-E3C7-44F5"}
    assert data["challenge_password"] is True
    assert data["state"] == "requested" and "SHA256" in data["fingerprints"]
    for out in (text.stdout, json.dumps(data)):
        assert SECRET not in out


def test_status_of_a_revoked_certificate_says_when_and_why(config: Path) -> None:
    assert run(config, "sign", "web1.example.com").exit_code == 0
    signed = json.loads(run(config, "status", "web1.example.com", "--format", "json").stdout)
    assert signed["extensions"] == {"pp_role": "webserver", "pp_uuid": "ED803750-E3C7-44F5"}
    assert "challenge_password" not in signed and "revocation" not in signed
    assert run(config, "revoke", "web1.example.com", "--reason", "superseded").exit_code == 0
    data = json.loads(run(config, "status", "web1.example.com", "--format", "json").stdout)
    assert data["state"] == "revoked"
    assert data["revocation"]["reason"] == "superseded"
    assert data["revocation"]["date"].endswith("+00:00")
    text = run(config, "status", "web1.example.com").stdout
    assert f"revoked:             {data['revocation']['date']} (superseded)" in text

    listed = run(config, "list", "--revoked").stdout
    assert f"revoked: {data['revocation']['date']} (superseded)" in listed
    [row] = json.loads(run(config, "list", "--revoked", "--format", "json").stdout)
    assert row["name"] == "web1.example.com" and row["revocation"] == data["revocation"]
