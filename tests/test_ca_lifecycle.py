"""The CA certificate's own lifecycle: `ca status` (expiry of every certificate of the bundle),
`ca renew` (same key, new validity; issued certificates keep verifying) and the CA key
encrypted at rest (`setup --encrypt-key`, `ca encrypt-key`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from splitca import pki
from splitca.cli import cli
from splitca.compose import open_ca
from splitca.compose import setup_ca as compose_setup_ca
from splitca.config import Settings

from .conftest import (
    chdir,
    copy_fixture_cadir,
    fast_key,
    free_port,
    make_csr,
    make_settings,
    openssl,
    openssl_verify,
    setup_ca,
    write_config,
)

PASSPHRASE = "correct horse battery staple 7f3a"


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    with chdir(config.parent):  # generate writes its ssldir below the working directory
        result = CliRunner().invoke(cli, ["--config", str(config), *args], env=env)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


def config_for(tmp_path: Path, settings: Settings, **extra: object) -> Path:
    return write_config(tmp_path / "splitca.yaml", settings, **extra)


def bundle(settings: Settings) -> list[x509.Certificate]:
    return pki.load_certificates((settings.cadir / "ca_crt.pem").read_bytes())


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def foreign_ca(name: str, days: int) -> x509.Certificate:
    key = fast_key()
    now = dt.datetime.now(dt.UTC)
    return pki.build_ca_certificate(key, name, now=now, ttl=dt.timedelta(days=days))


def getter(cacert: Path, url: str) -> Callable[[str], bytes]:
    context = ssl.create_default_context(cafile=str(cacert))
    context.check_hostname = False

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{url}{path}", context=context, timeout=30) as r:
            return bytes(r.read())

    return get


def put_csr(cacert: Path, url: str, name: str) -> None:
    context = ssl.create_default_context(cafile=str(cacert))
    context.check_hostname = False
    req = urllib.request.Request(
        f"{url}/puppet-ca/v1/certificate_request/{name}",
        data=pki.pem(make_csr(name)),
        method="PUT",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, context=context, timeout=30):
        pass


# --- ca status ------------------------------------------------------------------------------


def test_status_shows_every_certificate_of_a_multi_cert_bundle(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    other = foreign_ca("Other Root", days=30)
    with open(settings.cadir / "ca_crt.pem", "ab") as f:
        f.write(pki.pem(other))
    config = config_for(tmp_path, settings)

    code, out, err = run(config, "ca", "status", "--format", "json")
    report = json.loads(out)
    assert code == 12, (out, err)  # the second certificate expires within a year
    first, second = report["certificates"]
    assert first["subject"] == "CN=Puppet CA: ca.test"
    assert first["signing_key"] is True and first["self_signed"] is True
    assert first["key_type"] == "RSA" and first["key_size"] == 2048
    assert first["serial"] == 1 and first["days_left"] >= 5 * 365 - 2
    assert first["warning"] is None
    assert second["subject"] == "CN=Other Root" and second["signing_key"] is False
    assert 28 <= second["days_left"] <= 30
    assert "Other Root expires in" in second["warning"]
    assert report["warnings"] == [second["warning"]] and report["expiring"] is True

    code, out, err = run(config, "ca", "status")
    assert code == 12
    assert "CN=Other Root" in out and "signing key no" in out and "RSA 2048" in out
    assert "Warning: CA certificate CN=Other Root expires in" in err


def test_status_warns_and_exits_12_within_the_horizon_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ca_ttl="200d")
    compose_setup_ca(settings)
    config = config_for(tmp_path, settings)

    code, out, err = run(config, "ca", "status")
    assert code == 12, out + err
    assert "expires in 199 days" in err and "splitca ca renew" in err

    code, out, err = run(config, "ca", "status", "--warn-within", "100d")
    assert code == 0, out + err
    assert err == ""

    quiet = config_for(tmp_path, settings, ca_expiry_warning="150d")
    assert run(quiet, "ca", "status")[0] == 0

    code, _, err = run(config, "ca", "status", "--warn-within", "soon")
    assert code == 2 and "--warn-within" in err


def test_status_of_a_bundle_without_a_certificate_is_an_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    (settings.cadir / "ca_crt.pem").write_bytes(b"not a certificate\n")
    code, out, err = run(config_for(tmp_path, settings), "ca", "status")
    assert code == 5 and "holds no certificate" in err, out + err
    assert "Traceback" not in out + err


def test_serve_logs_the_ca_expiry_at_start(tmp_path: Path, server_factory) -> None:
    settings = make_settings(tmp_path, ca_ttl="200d")
    compose_setup_ca(settings)
    server = server_factory(settings)
    log = server.log_text()
    assert "CA certificate CN=Puppet CA: ca.test (serial 1, RSA 2048) valid until" in log
    assert "WARNING" in log and "expires in 199 days" in log, log


# --- ca renew -------------------------------------------------------------------------------


def test_renew_keeps_key_subject_and_ski_and_issued_certificates_verify(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ca_ttl="200d", cert_ttl="1y")
    compose_setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    agent_key = fast_key()
    ca.submit_csr("agent1.test", pki.pem(make_csr("agent1.test", key=agent_key)))
    before = ca.sign("agent1.test")
    ca.submit_csr("agent2.test", pki.pem(make_csr("agent2.test")))
    ca.sign("agent2.test")
    ca.revoke(["agent2.test"])
    ca.close()
    (old,) = bundle(settings)
    assert before.not_valid_after_utc == old.not_valid_after_utc  # cut short to the CA's end
    config = config_for(tmp_path, settings)

    code, out, err = run(config, "ca", "renew", "--validity", "10y", "--format", "json")
    assert code == 0, out + err
    shown = json.loads(out)
    (new,) = bundle(settings)
    assert shown["serial"] == new.serial_number and shown["old_serial"] == 1
    assert shown["kept_serial"] is None  # splitca's certificates name the CA by key id only
    assert new.subject == old.subject == new.issuer
    assert ski(new) == ski(old)
    assert list(new.extensions) == list(
        old.extensions
    )  # AKI, basic constraints, key usage: all the same
    assert new.public_key() == old.public_key()
    assert new.serial_number > 3  # from the store's serial space: after every issued serial
    assert new.not_valid_after_utc > old.not_valid_after_utc + dt.timedelta(days=9 * 365)
    assert (settings.cadir / "ca_pub.pem").read_bytes() == pki.public_key_pem(new.public_key())
    assert f"0x{new.serial_number:04X} " in (settings.cadir / "inventory.txt").read_text()

    # An agent certificate issued before the renewal verifies against the new bundle and
    # CRL; the revoked one is still refused.
    agent1 = tmp_path / "agent1.pem"
    agent1.write_bytes(pki.pem(before))
    ok = openssl_verify(agent1, settings.cadir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    agent2 = tmp_path / "agent2.pem"
    agent2.write_bytes((settings.cadir / "signed" / "agent2.test.pem").read_bytes())
    refused = openssl_verify(agent2, settings.cadir)
    assert refused.returncode != 0 and b"revoked" in refused.stdout + refused.stderr

    # The signer now signs with the renewed certificate: a new agent certificate is no
    # longer cut short to the old end, and the next serial is past the CA's.
    ca = open_ca(settings, autosign_at_start=False)
    ca.submit_csr("agent3.test", pki.pem(make_csr("agent3.test")))
    after = ca.sign("agent3.test")
    assert after.not_valid_after_utc > old.not_valid_after_utc + dt.timedelta(days=100)
    assert after.serial_number == new.serial_number + 1
    assert ca.revoke(["agent1.test"])[1] == []  # the CRL is signed by the same key
    ca.close()
    crl = x509.load_pem_x509_crl((settings.cadir / "ca_crl.pem").read_bytes())
    assert crl.is_signature_valid(new.public_key()) and crl.issuer == new.subject
    audit = (settings.cadir / "audit.log").read_text()
    assert '"event":"ca-renew"' in audit.replace(" ", "")


@pytest.mark.parametrize("serial", ["auto", "new"])
def test_renew_of_a_puppetserver_ca_keeps_the_serial_its_certificates_name(
    tmp_path: Path, serial: str
) -> None:
    """puppetserver's certificates name the CA by issuer and serial in their Authority Key
    Identifier: with another serial OpenSSL no longer finds their issuer."""
    cadir = copy_fixture_cadir(tmp_path / "ca")
    settings = make_settings(tmp_path, cadir=str(cadir), certname="localhost")
    (old,) = bundle(settings)
    code, out, err = run(
        config_for(tmp_path, settings), "ca", "renew", "--validity", "20y", "--serial", serial
    )
    assert code == 0, out + err
    (new,) = bundle(settings)
    assert new.not_valid_after_utc > old.not_valid_after_utc
    crl = x509.load_pem_x509_crl((cadir / "ca_crl.pem").read_bytes())
    results = {}
    for path in sorted((cadir / "signed").glob("*.pem")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None:
            results[path.name] = openssl_verify(path, cadir).returncode
    assert "agent1.pem" in results and len(results) >= 5
    if serial == "auto":
        assert new.serial_number == old.serial_number
        assert "Kept the serial: " in out and "Authority Key Identifier" in out
        assert set(results.values()) == {0}, results
    else:  # why auto keeps it: with a new serial not one of them verifies
        assert new.serial_number != old.serial_number
        assert 0 not in results.values(), results


def test_renew_while_serving_serves_and_signs_with_the_new_certificate(
    tmp_path: Path, server_factory
) -> None:
    settings = make_settings(tmp_path, ca_ttl="200d", cert_ttl="1y")
    compose_setup_ca(settings)
    server = server_factory(settings.replace(autosign=True))
    get = getter(server.cacert, server.url)
    old_served = get("/puppet-ca/v1/certificate/ca")
    renewed = server.cli("ca", "renew", "--validity", "5y")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "Renewed CA certificate CN=Puppet CA: ca.test: serial 1 ->" in renewed.stdout
    served = get("/puppet-ca/v1/certificate/ca")
    assert served != old_served and served == (settings.cadir / "ca_crt.pem").read_bytes()
    (new,) = pki.load_certificates(served)

    put_csr(server.cacert, server.url, "agent9.test")
    cert = x509.load_pem_x509_certificate(get("/puppet-ca/v1/certificate/agent9.test"))
    (old,) = pki.load_certificates(old_served)
    assert cert.not_valid_after_utc > old.not_valid_after_utc  # signed under the new one
    cert.verify_directly_issued_by(new)


def test_renew_refuses_to_shorten_the_ca_and_changes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    config = config_for(tmp_path, settings)
    before = (settings.cadir / "ca_crt.pem").read_bytes()
    serial = (settings.cadir / "serial").read_bytes()
    code, out, err = run(config, "ca", "renew", "--validity", "1y")
    assert code == 4 and "not after its current end" in err, out + err
    assert (settings.cadir / "ca_crt.pem").read_bytes() == before
    assert (settings.cadir / "serial").read_bytes() == serial
    code, _, err = run(config, "ca", "renew", "--validity", "51y")
    assert code == 4 and "50 years" in err


def test_renew_refuses_an_intermediate_signing_certificate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    (own,) = bundle(settings)
    key = pki.load_private_key((settings.cadir / "ca_key.pem").read_bytes())
    root_key = fast_key()
    now = dt.datetime.now(dt.UTC)
    root = pki.build_ca_certificate(root_key, "Offline Root", now=now, ttl=dt.timedelta(days=3650))
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(own.subject)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(root_key, pki.signing_hash(root_key))  # type: ignore[arg-type]
    )
    chain = pki.pem(intermediate) + pki.pem(root)
    (settings.cadir / "ca_crt.pem").write_bytes(chain)
    code, out, err = run(config_for(tmp_path, settings), "ca", "renew")
    assert code == 4, out + err
    assert "is issued by CN=Offline Root: only its issuer can renew it" in err
    assert (settings.cadir / "ca_crt.pem").read_bytes() == chain
    code, out, _ = run(config_for(tmp_path, settings), "ca", "status", "--format", "json")
    rows = json.loads(out)["certificates"]
    assert [r["signing_key"] for r in rows] == [True, False]
    assert [r["self_signed"] for r in rows] == [False, True]


def test_renewal_of_a_ca_naming_itself_by_serial_names_the_new_serial() -> None:
    key = fast_key()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name.from_rfc4514_string("CN=Old Ruby CA")
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(name)], 1), False)
        .sign(key, pki.signing_hash(key))  # type: ignore[arg-type]
    )
    new = pki.renew_ca_certificate(
        old, key, serial=42, not_before=now, not_after=now + dt.timedelta(days=900)
    )
    aki = new.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.authority_cert_serial_number == 42
    assert aki.authority_cert_issuer == [x509.DirectoryName(name)]
    new.verify_directly_issued_by(new)


def test_signing_certificate_is_the_newest_one_holding_the_key(tmp_path: Path) -> None:
    key = fast_key()
    now = dt.datetime.now(dt.UTC)
    old = pki.build_ca_certificate(key, "CA", now=now, ttl=dt.timedelta(days=10))
    new = pki.renew_ca_certificate(
        old, key, serial=9, not_before=now, not_after=now + dt.timedelta(days=900)
    )
    assert pki.signing_certificate([old, new], key) == new
    assert pki.signing_certificate([new, old], key) == new


# --- the CA key encrypted at rest ----------------------------------------------------------------


def passphrase_file(tmp_path: Path, value: str = PASSPHRASE) -> Path:
    path = tmp_path / "ca-passphrase"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_setup_encrypt_key_writes_an_encrypted_key_that_signs_and_issues_crls(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    config = config_for(tmp_path, settings, ca_key_passphrase_file=str(passphrase_file(tmp_path)))
    code, out, err = run(config, "setup", "--encrypt-key")
    assert code == 0, out + err
    assert "key encrypted" in out
    data = (settings.cadir / "ca_key.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (settings.cadir / "ca_key.pem").stat().st_mode & 0o777 == 0o640
    with pytest.raises(TypeError):  # unreadable without the passphrase
        serialization.load_pem_private_key(data, password=None)
    # A strong KDF: PBES2 with PBKDF2-HMAC-SHA256, 600,000 rounds (0x927C0), AES-256-CBC;
    # and OpenSSL reads it with the passphrase (the way back to an unencrypted key).
    parsed = openssl("asn1parse", "-in", str(settings.cadir / "ca_key.pem")).stdout.decode()
    for part in (":PBES2", ":PBKDF2", ":0927C0", ":hmacWithSHA256", ":aes-256-cbc"):
        assert part in parsed, parsed
    back = openssl(
        "pkey",
        "-in",
        str(settings.cadir / "ca_key.pem"),
        "-passin",
        f"file:{tmp_path / 'ca-passphrase'}",
    )
    assert back.returncode == 0 and b"BEGIN PRIVATE KEY" in back.stdout, back.stderr
    # The CA server's TLS identity was issued by the encrypted key.
    server_cert = x509.load_pem_x509_certificate((settings.cadir / "server/cert.pem").read_bytes())
    (ca_cert,) = bundle(settings)
    server_cert.verify_directly_issued_by(ca_cert)

    outputs = [out, err]
    for args in (
        ("generate", "agent1.test", "--key-size", "2048"),
        ("revoke", "agent1.test"),
        ("crl", "refresh", "--force"),
        ("ca", "status"),
        ("ca", "renew", "--validity", "6y"),
    ):
        code, out, err = run(config, *args)
        assert code == 0, (args, out, err)
        outputs += [out, err]
    crl = x509.load_pem_x509_crl((settings.cadir / "ca_crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(3) is not None
    assert crl.is_signature_valid(ca_cert.public_key())
    assert "CA key: encrypted" in "".join(outputs)
    outputs.append((settings.cadir / "audit.log").read_text())
    assert not any(PASSPHRASE in text for text in outputs)


def test_wrong_or_missing_passphrase_is_one_clear_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    good = config_for(tmp_path, settings, ca_key_passphrase_file=str(passphrase_file(tmp_path)))
    assert run(good, "setup", "--encrypt-key")[0] == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    wrong.chmod(0o600)
    bad = write_config(tmp_path / "bad.yaml", settings, ca_key_passphrase_file=str(wrong))
    code, out, err = run(bad, "generate", "agent1.test")
    assert code == 2, out + err
    assert err.strip() == (
        f"Error: cannot decrypt the CA key {settings.cadir / 'ca_key.pem'}: wrong passphrase "
        "(or a damaged key file)"
    )
    assert "Traceback" not in out + err and "not it" not in out + err

    none = write_config(tmp_path / "none.yaml", settings)
    code, out, err = run(none, "generate", "agent1.test", env={"CREDENTIALS_DIRECTORY": ""})
    assert code == 2 and len(err.strip().splitlines()) == 1, out + err
    assert "needs a passphrase and none is configured" in err
    assert "LoadCredential=splitca-ca-key" in err

    wrong.chmod(0o644)
    code, _, err = run(bad, "generate", "agent1.test")
    assert code == 2 and "readable by every user" in err
    assert not (settings.cadir / "signed" / "agent1.test.pem").exists()


def test_serve_without_the_passphrase_fails_at_start_in_one_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    good = config_for(tmp_path, settings, ca_key_passphrase_file=str(passphrase_file(tmp_path)))
    assert run(good, "setup", "--encrypt-key")[0] == 0
    none = write_config(tmp_path / "none.yaml", settings.replace(port=free_port()))
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    served = subprocess.run(
        [sys.executable, "-m", "splitca", "--config", str(none), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert served.returncode == 2, served.stderr
    assert served.stderr.splitlines()[-1].startswith(
        "Error: the CA key needs a passphrase and none is configured"
    )
    assert "Traceback" not in served.stderr and "CA ready" not in served.stderr


def test_passphrase_from_systemd_credentials_directory(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "splitca-ca-key").write_text(PASSPHRASE)
    (creds / "splitca-ca-key").chmod(0o400)
    config = config_for(tmp_path, settings, encrypt_ca_key=True)
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    code, out, err = run(config, "setup", env=env)
    assert code == 0, out + err
    assert (settings.cadir / "ca_key.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    code, out, err = run(config, "generate", "agent1.test", "--key-size", "2048", env=env)
    assert code == 0, out + err
    key = serialization.load_pem_private_key(
        (settings.cadir / "ca_key.pem").read_bytes(), password=PASSPHRASE.encode()
    )
    assert key.public_key() == bundle(settings)[0].public_key()


def test_encrypt_key_in_place(tmp_path: Path, server_factory) -> None:
    settings = make_settings(tmp_path)
    setup_ca(settings)
    plain = (settings.cadir / "ca_key.pem").read_bytes()
    config = config_for(tmp_path, settings, ca_key_passphrase_file=str(passphrase_file(tmp_path)))
    server = server_factory(
        settings.replace(ca_key_passphrase_file=passphrase_file(tmp_path), autosign=True)
    )

    code, out, err = run(config, "ca", "encrypt-key", "--format", "json")
    assert code == 0, out + err
    assert json.loads(out) == {"encrypted": True, "key": str(settings.cadir / "ca_key.pem")}
    sealed = (settings.cadir / "ca_key.pem").read_bytes()
    assert sealed.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert (settings.cadir / "ca_key.pem").stat().st_mode & 0o777 == 0o640
    key = serialization.load_pem_private_key(sealed, password=PASSPHRASE.encode())
    assert pki.private_key_pem(key) == plain  # the same key
    assert not list((settings.cadir).glob("*.tmp")) and not list(settings.cadir.glob(".ca_key*"))

    code, out, err = run(config, "ca", "encrypt-key")
    assert code == 4 and "already encrypted" in err
    assert (settings.cadir / "ca_key.pem").read_bytes() == sealed

    # The running server reloads the key (decrypting it with its configured passphrase).
    put_csr(server.cacert, server.url, "agent5.test")
    issued = getter(server.cacert, server.url)("/puppet-ca/v1/certificate/agent5.test")
    x509.load_pem_x509_certificate(issued).verify_directly_issued_by(bundle(settings)[0])
    assert PASSPHRASE not in server.log_text()


def test_the_passphrase_is_never_a_command_line_option() -> None:
    for args in (["setup", "--help"], ["ca", "encrypt-key", "--help"]):
        text = " ".join(CliRunner().invoke(cli, args).output.split())
        assert "never from the command line" in text
        assert "--passphrase" not in text


def test_ca_status_needs_no_passphrase(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    good = config_for(tmp_path, settings, ca_key_passphrase_file=str(passphrase_file(tmp_path)))
    assert run(good, "setup", "--encrypt-key")[0] == 0
    none = write_config(tmp_path / "none.yaml", settings)
    code, out, err = run(
        none, "ca", "status", "--format", "json", env={"CREDENTIALS_DIRECTORY": ""}
    )
    assert code == 0, out + err
    report = json.loads(out)
    assert report["key_encrypted"] is True
    assert report["certificates"][0]["signing_key"] is None
    assert "needs a passphrase" in report["warnings"][0]


def test_a_key_that_does_not_decrypt_is_tried_once_per_key_file_and_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request and health probe asks for the key: a key file the passphrase does not
    # open (re-encrypted under a running serve with another one) must not cost each of
    # them 600,000 PBKDF2 rounds, one after the other under the signer's lock.
    from splitca.errors import ConfigError
    from splitca.store.files.cadir import CADir
    from splitca.store.files.signer import KeyFileSigner

    settings = make_settings(tmp_path)
    good = passphrase_file(tmp_path)
    config = config_for(tmp_path, settings, ca_key_passphrase_file=str(good))
    assert run(config, "setup", "--encrypt-key")[0] == 0
    attempts: list[int] = []
    real = pki.load_private_key

    def counting(data: bytes, passphrase: bytes | None = None):  # type: ignore[no-untyped-def]
        attempts.append(1)
        return real(data, passphrase)

    monkeypatch.setattr(pki, "load_private_key", counting)
    given = [b"not it"]
    signer = KeyFileSigner(CADir(settings.cadir), passphrase=lambda: given[0])
    for _ in range(3):
        with pytest.raises(ConfigError, match="wrong passphrase"):
            signer.current()
    assert len(attempts) == 1
    given[0] = PASSPHRASE.encode()  # the passphrase file fixed: tried again, and it loads
    assert signer.current().certificate == bundle(settings)[0]
    assert len(attempts) == 2


def test_a_passphrase_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    # Opening a FIFO for reading waits for a writer: serve's start (or a key reload under
    # the signer's lock) would hang there, silently, instead of saying what is wrong.
    import threading

    from splitca.errors import ConfigError
    from splitca.store.files.passphrase import read_passphrase

    fifo = tmp_path / "pass.fifo"
    os.mkfifo(fifo, 0o600)
    settings = make_settings(tmp_path).replace(ca_key_passphrase_file=fifo)
    got: list[BaseException] = []

    def read() -> None:
        try:
            read_passphrase(settings)
        except BaseException as exc:
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
        reader.join(5)
        pytest.fail("read_passphrase blocked on a FIFO")
    assert len(got) == 1 and isinstance(got[0], ConfigError), got
    assert "is not a regular file" in str(got[0])
