"""The certificate lifecycle at its edges, as agents, operators and their scripts drive it:
what names nothing is refused, a 204 carries nothing, and bulk signing never grants the CA."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca

from .conftest import make_csr, setup_ca, snapshot, write_config


def signed(ca, name: str) -> None:
    ca.submit_csr(name, pki.pem(make_csr(name)))
    ca.sign(name)


# --- a command that names nothing -----------------------------------------------------------


@pytest.mark.parametrize("command", ["revoke", "clean"])
@pytest.mark.parametrize("given", ["", ",", " , ,"])
def test_revoke_or_clean_of_no_name_is_a_usage_error_not_success(
    settings, tmp_path: Path, command: str, given: str
) -> None:
    """``splitca revoke "$HOST"`` with an empty variable names nothing: that must not exit 0
    (the script would go on believing the host revoked)."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    signed(ca, "web.test")
    before = snapshot(settings.cadir)
    config = write_config(tmp_path / "splitca.yaml", settings)
    result = CliRunner().invoke(cli, ["--config", str(config), command, given])
    assert result.exit_code == 2, result.output
    assert "no CERTNAME given" in result.output
    assert "Traceback" not in result.output
    assert snapshot(settings.cadir) == before
