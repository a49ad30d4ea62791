"""--format json on every command that prints data, errors as JSON in that mode, messages that say what happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from splitca.cli import cli
from splitca.config import Settings

from .conftest import setup_ca, write_config


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    setup_ca(settings)
    return write_config(tmp_path / "splitca.yaml", settings)


def test_index_rebuild_and_unregister_print_json(config: Path) -> None:
    out = run(config, "index", "rebuild", "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert {"seconds", "requested", "signed", "revoked"} <= set(data)

    reg = run(config, "register", "web1.example.com")
    assert reg.exit_code == 0, reg.output
    out = run(config, "unregister", "web1.example.com", "ghost.example.com", "--format", "json")
    assert out.exit_code == 3
    assert json.loads(out.stdout) == {
        "unregistered": ["web1.example.com"],
        "not_found": ["ghost.example.com"],
    }


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("status", "x.example.com"),
        ("crl", "show"),
        ("crl", "refresh"),
        ("index", "rebuild"),
        ("revoke", "x.example.com"),
        ("clean", "x.example.com"),
        ("sign", "x.example.com"),
    ],
)
def test_errors_are_one_json_object_with_format_json(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "no-ca-here"
    out = CliRunner().invoke(cli, ["--cadir", str(missing), *args, "--format", "json"])
    assert out.exit_code == 5, out.output
    assert out.stdout == ""
    error = json.loads(out.stderr)
    assert error["exit_code"] == 5 and error["kind"] == "StoreError"
    assert "no-ca-here" in error["error"]
    text = CliRunner().invoke(cli, ["--cadir", str(missing), *args])
    assert text.stderr.startswith("Error: ")


def test_status_of_an_unknown_name_in_json(config: Path) -> None:
    out = run(config, "status", "ghost.example.com", "--format", "json")
    assert out.exit_code == 3
    assert json.loads(out.stderr) == {
        "error": "nothing is known about ghost.example.com",
        "kind": "NotFound",
        "exit_code": 3,
    }


def test_messages_say_what_happened(config: Path, tmp_path: Path) -> None:
    assert run(config, "generate", "n1.example.com", "--ssldir", str(tmp_path / "s")).exit_code == 0
    out = run(config, "sign", "ghost.example.com", "n1.example.com")
    assert out.exit_code == 4
    assert out.stderr.splitlines() == [
        "Error: could not sign ghost.example.com: no CSR for ghost.example.com",
        "Error: could not sign n1.example.com: n1.example.com is already signed "
        "(there is no CSR to sign)",
    ]
    assert run(config, "revoke", "n1.example.com").stdout.startswith("Revoked n1.example.com")
    again = run(config, "revoke", "n1.example.com")
    assert again.exit_code == 0
    assert again.stdout.startswith("n1.example.com was already revoked (serial ")
    data = json.loads(run(config, "revoke", "n1.example.com", "--format", "json").stdout)
    assert data["already_revoked"] == ["n1.example.com"]
    out = run(config, "sign", "n1.example.com")
    assert "n1.example.com's certificate is revoked and there is no CSR to sign" in out.stderr


@pytest.mark.parametrize("autosign", [False, True])
def test_register_and_enroll_warn_unless_the_ca_autosigns_by_registry(
    settings: Settings, tmp_path: Path, autosign: bool
) -> None:
    setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings.replace(autosign=autosign))
    reg = run(config, "register", "web1.example.com")
    assert reg.exit_code == 0, reg.output
    assert f"Warning: this CA's autosign is {str(autosign).lower()}, not registry" in reg.stderr
    assert len(reg.stdout.split()) == 1  # the token alone, for scripts
    enroll = run(config, "enroll", "--domain", "fleet.example.com")
    assert enroll.exit_code == 0, enroll.output
    assert "not registry" in enroll.stderr and enroll.stdout.startswith("#cloud-config")


def test_no_warning_under_autosign_registry(settings: Settings, tmp_path: Path) -> None:
    setup_ca(settings)
    config = write_config(tmp_path / "splitca.yaml", settings.replace(autosign="registry"))
    reg = run(config, "register", "web1.example.com")
    assert reg.exit_code == 0 and "Warning" not in reg.stderr
