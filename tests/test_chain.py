"""Intermediate and external CAs: setup --intermediate, import, the root's CRL offline, the CRL chain's health."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from splitca import pki

from .chain_helpers import (
    NOW,
    ExtCA,
    aki,
    ext_ca,
    ext_chain,
    import_files,
    key_pem,
    run,
    ski,
    write_config,
    write_pems,
)
from .conftest import make_csr, openssl


def verify_all(cert: Path, cadir: Path) -> tuple[int, str]:
    """`openssl verify -crl_check_all` with the whole chain and the whole CRL chain."""
    done = openssl(
        "verify",
        "-crl_check_all",
        "-CAfile",
        str(cadir / "ca_crt.pem"),
        "-CRLfile",
        str(cadir / "ca_crl.pem"),
        str(cert),
    )
    return done.returncode, (done.stdout + done.stderr).decode()


def certs_of(path: Path) -> list[x509.Certificate]:
    return pki.load_certificates(path.read_bytes())


def crls_of(path: Path) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(b) for b in pki.split_pem(path.read_bytes(), "X509 CRL")]


def issue(config: Path, tmp_path: Path, name: str) -> Path:
    """`splitca generate NAME`: a leaf certificate from the CA, as a file."""
    ssldir = tmp_path / f"{name}-ssl"
    done = run(config, "generate", name, "--key-size", "2048", "--ssldir", str(ssldir))
    assert done.exit_code == 0, done.output
    return ssldir / "certs" / f"{name}.pem"


# --- setup --intermediate ------------------------------------------------------------------------


def test_setup_intermediate_makes_a_root_and_an_intermediate_that_signs(tmp_path):
    config = write_config(tmp_path)
    cadir, root_key = tmp_path / "ca", tmp_path / "offline" / "root_key.pem"
    done = run(config, "setup", "--intermediate", "--root-key-out", str(root_key))
    assert done.exit_code == 0, done.output
    assert "move it OFFLINE" in done.output and str(root_key) in done.output
    inter, root = certs_of(cadir / "ca_crt.pem")  # issuing CA first, then the root
    assert root.issuer == root.subject and inter.issuer == root.subject
    assert pki.directly_issued(inter, root) and pki.is_ca(inter)
    assert aki(inter) == ski(root)
    assert inter.subject.rfc4514_string() == "CN=Puppet CA: ca.test"
    own, root_crl = crls_of(cadir / "ca_crl.pem")  # the intermediate's CRL, then the root's
    assert own.issuer == inter.subject and own.is_signature_valid(inter.public_key())
    assert root_crl.issuer == root.subject and root_crl.is_signature_valid(root.public_key())
    # The root key is where it was asked to go (0600), and not in the cadir.
    assert root_key.stat().st_mode & 0o777 == 0o600
    key = pki.load_key(root_key.read_bytes(), None)
    assert pki.signing_certificate([root], key) is root
    assert not (cadir / "root_key.pem").exists()
    ca_key = pki.load_key((cadir / "ca_key.pem").read_bytes(), None)
    assert pki.signing_certificate([inter, root], ca_key) == inter
    # Leaves are signed by the intermediate, with its key identifier, and verify with the chain.
    leaf_path = issue(config, tmp_path, "web1.test")
    leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
    assert leaf.issuer == inter.subject and aki(leaf) == ski(inter)
    code, out = verify_all(leaf_path, cadir)
    assert code == 0, out


def test_setup_intermediate_defaults_the_root_key_into_the_cadir_and_never_replaces_one(tmp_path):
    config = write_config(tmp_path)
    done = run(config, "setup", "--intermediate")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "ca" / "root_key.pem").stat().st_mode & 0o777 == 0o600
    assert "move it OFFLINE" in done.output
    # A second CA must not overwrite an existing root key file.
    (tmp_path / "b").mkdir()
    other = write_config(tmp_path / "b")
    existing = tmp_path / "kept.pem"
    existing.write_bytes(b"precious")
    again = run(other, "setup", "--intermediate", "--root-key-out", str(existing))
    assert again.exit_code == 4, again.output
    assert "never replaces a key file" in again.output
    assert existing.read_bytes() == b"precious"
    assert not (tmp_path / "b" / "ca" / "ca_key.pem").exists()


def test_root_options_need_intermediate(tmp_path):
    done = run(write_config(tmp_path), "setup", "--root-key-out", str(tmp_path / "k.pem"))
    assert done.exit_code == 2 and "go with --intermediate" in done.output


# --- the root's CRL, offline, and installing it ---------------------------------------------------


def test_root_crl_offline_revokes_the_intermediate_and_install_root_serves_it(tmp_path):
    config = write_config(tmp_path)
    cadir = tmp_path / "ca"
    offline = tmp_path / "offline"
    offline.mkdir()
    assert (
        run(
            config, "setup", "--intermediate", "--root-key-out", str(offline / "root_key.pem")
        ).exit_code
        == 0
    )
    leaf = issue(config, tmp_path, "web1.test")
    # A revocation here re-signs only this CA's CRL and keeps the root's after it.
    root_crl_before = crls_of(cadir / "ca_crl.pem")[1]
    other = issue(config, tmp_path, "gone.test")
    assert run(config, "revoke", "gone.test").exit_code == 0
    own, kept = crls_of(cadir / "ca_crl.pem")
    assert pki.crl_number(own) == 1 and pki.der(kept) == pki.der(root_crl_before)
    assert "revoked" in verify_all(other, cadir)[1]
    assert verify_all(leaf, cadir)[0] == 0
    assert (
        run(config, "crl", "refresh", "--force").exit_code == 0
    )  # the same: ours, then the root's
    own, kept = crls_of(cadir / "ca_crl.pem")
    assert pki.crl_number(own) == 2 and pki.der(kept) == pki.der(root_crl_before)
    # On the offline machine: copies of ca_crt.pem and ca_crl.pem, and the root key. No cadir.
    for name in ("ca_crt.pem", "ca_crl.pem"):
        shutil.copy(cadir / name, offline / name)
    inter_file = write_pems(offline / "intermediate.pem", [certs_of(cadir / "ca_crt.pem")[0]])
    made = run(
        config,
        "ca",
        "root-crl",
        "--root-key", str(offline / "root_key.pem"),
        "--root-cert", str(offline / "ca_crt.pem"),
        "--crl", str(offline / "ca_crl.pem"),
        "--out", str(offline / "root_crl.pem"),
        "--format", "json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    first = json.loads(made.output)
    assert first["crl_number"] == 1 and first["revoked"] == []
    installed = run(config, "crl", "install-root", str(offline / "root_crl.pem"))
    assert installed.exit_code == 0, installed.output
    assert "Installed CRL number 1" in installed.output
    own2, root2 = crls_of(cadir / "ca_crl.pem")
    assert pki.crl_number(root2) == 1 and pki.crl_number(own2) == 3  # ours re-signed first
    assert (
        own2.get_revoked_certificate_by_serial_number(
            x509.load_pem_x509_certificate(other.read_bytes()).serial_number
        )
        is not None
    )  # our revocations are kept
    assert verify_all(leaf, cadir)[0] == 0
    again = run(config, "crl", "install-root", str(offline / "root_crl.pem"))
    assert again.exit_code == 0 and "Already installed" in again.output
    # Revoke the intermediate itself: every certificate it issued stops verifying.
    (offline / "ca_crl.pem").write_bytes((cadir / "ca_crl.pem").read_bytes())
    revoked = run(
        config,
        "ca",
        "root-crl",
        "--root-key", str(offline / "root_key.pem"),
        "--root-cert", str(offline / "ca_crt.pem"),
        "--crl", str(offline / "ca_crl.pem"),
        "--revoke-intermediate", str(inter_file),
        "--out", str(offline / "root_crl2.pem"),
    )  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    assert "CRL number 2" in revoked.output
    assert run(config, "crl", "install-root", str(offline / "root_crl2.pem")).exit_code == 0
    code, out = verify_all(leaf, cadir)
    assert code != 0 and "revoked" in out
    # The older root CRL cannot be put back (it would un-revoke the intermediate).
    before = (cadir / "ca_crl.pem").read_bytes()
    old = run(config, "crl", "install-root", str(offline / "root_crl.pem"))
    assert old.exit_code == 4 and "number 1, but number 2 is installed" in old.output
    assert (cadir / "ca_crl.pem").read_bytes() == before


def test_install_root_refuses_what_is_not_a_current_crl_of_a_ca_above(tmp_path):
    config = write_config(tmp_path)
    cadir = tmp_path / "ca"
    assert run(config, "setup", "--intermediate").exit_code == 0
    before = (cadir / "ca_crl.pem").read_bytes()
    own_crl = write_pems(tmp_path / "own.pem", crls_of(cadir / "ca_crl.pem")[:1])
    stranger = ext_ca("Some Other Root")
    cases = {
        own_crl: "this CA's own",
        write_pems(tmp_path / "stranger.pem", [stranger.crl()]): "not from a CA in",
        cadir / "ca_crt.pem": "holds PEM CERTIFICATE",
        write_pems(tmp_path / "empty.pem", []): "holds no PEM CRL",
    }
    for path, message in cases.items():
        done = run(config, "crl", "install-root", str(path))
        assert done.exit_code == 4, done.output
        assert message in done.output and "Traceback" not in done.output
        assert (cadir / "ca_crl.pem").read_bytes() == before
    # A root CRL signed by another key with the root's name, and an expired one.
    root = certs_of(cadir / "ca_crt.pem")[1]
    forged = write_pems(tmp_path / "forged.pem", [_crl_as(root, key=stranger.key)])
    done = run(config, "crl", "install-root", str(forged))
    assert done.exit_code == 4 and "not signed by that CA's key" in done.output
    root_key = pki.load_key((cadir / "root_key.pem").read_bytes(), None)
    expired = write_pems(
        tmp_path / "expired.pem",
        [_crl_as(root, key=root_key, next_update=NOW - dt.timedelta(hours=1))],
    )
    done = run(config, "crl", "install-root", str(expired))
    assert done.exit_code == 4 and "has expired" in done.output
    assert (cadir / "ca_crl.pem").read_bytes() == before


def _crl_as(
    ca: x509.Certificate, *, key, next_update: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    """A CRL naming *ca* as its issuer, signed by *key*."""
    return ExtCA("x", key, ca).crl(
        99, this_update=NOW - dt.timedelta(days=2), next_update=next_update
    )


def test_root_crl_refuses_a_key_that_is_not_the_roots_and_the_root_itself(tmp_path):
    config = write_config(tmp_path)
    cadir = tmp_path / "ca"
    assert run(config, "setup", "--intermediate").exit_code == 0
    base = [
        "ca",
        "root-crl",
        "--root-cert",
        str(cadir / "ca_crt.pem"),
        "--crl",
        str(cadir / "ca_crl.pem"),
    ]
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(key_pem(ext_ca("x").key))
    done = run(config, *base, "--root-key", str(stranger), "--out", str(tmp_path / "a.pem"))
    assert done.exit_code == 4 and "matches no certificate" in done.output
    done = run(
        config,
        *base,
        "--root-key", str(cadir / "root_key.pem"),
        "--revoke-intermediate", str(cadir / "ca_crt.pem"),
        "--out", str(tmp_path / "b.pem"),
    )  # fmt: skip
    assert done.exit_code == 4 and "is the root itself" in done.output
    assert not (tmp_path / "a.pem").exists() and not (tmp_path / "b.pem").exists()
    # An encrypted root key needs its passphrase, from a file.
    enc = tmp_path / "root_enc.pem"
    enc.write_bytes(key_pem(pki.load_key((cadir / "root_key.pem").read_bytes(), None), b"s3cret"))
    done = run(config, *base, "--root-key", str(enc), "--out", str(tmp_path / "c.pem"))
    assert done.exit_code == 4 and "--passphrase-file" in done.output
    (tmp_path / "pass").write_text("s3cret\n")
    done = run(
        config, *base, "--root-key", str(enc), "--passphrase-file", str(tmp_path / "pass"),
        "--out", str(tmp_path / "c.pem"),
    )  # fmt: skip
    assert done.exit_code == 0, done.output


# --- import ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3])
def test_import_a_chain_signs_with_the_issuing_ca_and_its_own_key_identifier(tmp_path, levels):
    chain = ext_chain(levels)
    config = write_config(tmp_path)
    cadir = tmp_path / "ca"
    crls = [c.crl() for c in chain[::-1]]  # root first too
    done = run(config, "import", *import_files(tmp_path, chain, crls))
    assert done.exit_code == 0, done.output
    # Both were given root first: put in chain order, and said so.
    assert "--cert-bundle listed the chain in another order" in done.output
    assert "--crl-chain listed the CRLs in another order" in done.output
    assert [c.subject for c in certs_of(cadir / "ca_crt.pem")] == [c.cert.subject for c in chain]
    assert [c.issuer for c in crls_of(cadir / "ca_crl.pem")] == [c.cert.subject for c in chain]
    leaf_path = issue(config, tmp_path, "web1.test")
    leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
    # The issuing CA's SKI is 8 random bytes, not a hash of its key: taken from the certificate.
    assert aki(leaf) == ski(chain[0].cert) and len(aki(leaf) or b"") == 8
    code, out = verify_all(leaf_path, cadir)
    assert code == 0, out
    # Revocation re-signs only the issuing CA's CRL; the others stay, after it.
    assert run(config, "revoke", "web1.test").exit_code == 0
    crls = crls_of(cadir / "ca_crl.pem")
    assert [c.issuer for c in crls] == [c.cert.subject for c in chain]
    assert (
        aki(leaf)
        == crls[0]
        .extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        .value.key_identifier
    )
    code, out = verify_all(leaf_path, cadir)
    assert code != 0 and "revoked" in out


def test_import_takes_an_encrypted_key_with_a_passphrase_file(tmp_path):
    chain = ext_chain(2)
    args = import_files(tmp_path, chain)
    key = Path(args[-1])
    key.write_bytes(key_pem(chain[0].key, b"correct horse"))
    config = write_config(tmp_path)
    done = run(config, "import", *args)
    assert done.exit_code == 4 and "encrypted" in done.output and "--passphrase-file" in done.output
    (tmp_path / "wrong").write_text("wrong\n")
    done = run(config, "import", *args, "--passphrase-file", str(tmp_path / "wrong"))
    assert done.exit_code == 4 and "does not decrypt" in done.output
    assert not (tmp_path / "ca" / "ca_key.pem").exists()
    (tmp_path / "right").write_text("correct horse\n")
    done = run(config, "import", *args, "--passphrase-file", str(tmp_path / "right"))
    assert done.exit_code == 0, done.output
    assert (tmp_path / "ca" / "ca_key.pem").stat().st_mode & 0o777 == 0o640


def _import_error(tmp_path: Path, chain, *, crls=None, bundle=None, key=None) -> str:
    args = import_files(tmp_path, chain, crls)
    if bundle is not None:
        write_pems(Path(args[1]), bundle)
    if key is not None:
        Path(args[5]).write_bytes(key_pem(key))
    config = write_config(tmp_path)
    done = run(config, "import", *args)
    assert done.exit_code == 4, done.output
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "ca" / "ca_key.pem").exists()  # nothing written
    assert not (tmp_path / "ca" / "ca_crt.pem").exists()
    return done.output


def test_import_errors_are_one_clear_line_and_write_nothing(tmp_path):
    chain = ext_chain(3)
    issuing, mid, root = chain
    out = _import_error(tmp_path, chain, key=ext_ca("x").key)
    assert "does not match any certificate in the bundle" in out
    out = _import_error(tmp_path, chain, bundle=[issuing.cert, root.cert])
    assert "lacks the issuer of 'CN=Example Issuing CA'" in out
    lookalike = ext_ca("Example Mid CA 1", root)  # the mid CA's name, another key
    out = _import_error(tmp_path, chain, bundle=[issuing.cert, lookalike.cert, root.cert])
    assert "the bundle's 'CN=Example Mid CA 1' did not sign 'CN=Example Issuing CA'" in out
    stray = ext_ca("Unrelated Root")
    out = _import_error(tmp_path, chain, bundle=[c.cert for c in chain] + [stray.cert])
    assert "outside the signing CA's chain" in out
    leafish = ext_ca("Not A CA", mid, ca=False)
    out = _import_error(
        tmp_path,
        [leafish, mid, root],
        crls=[mid.crl(), root.crl()],
    )
    assert "'CN=Not A CA' is not a CA certificate" in out
    expired = issuing.crl(
        next_update=NOW - dt.timedelta(hours=1), this_update=NOW - dt.timedelta(days=2)
    )
    out = _import_error(tmp_path, chain, crls=[expired, mid.crl(), root.crl()])
    assert "the CRL from 'CN=Example Issuing CA' expired at" in out
    forged = mid.crl(key=stray.key)
    out = _import_error(tmp_path, chain, crls=[issuing.crl(), forged, root.crl()])
    assert "is not signed by that CA's key" in out
    out = _import_error(tmp_path, chain, crls=[issuing.crl(), root.crl()])
    assert "no CRL for 'CN=Example Mid CA 1'" in out
    out = _import_error(tmp_path, chain, crls=[issuing.crl(), mid.crl(), root.crl(), stray.crl()])
    assert "is not from a CA of the chain" in out
    root.revoked.append(mid.cert.serial_number)
    out = _import_error(tmp_path, chain)
    assert "'CN=Example Mid CA 1' is revoked by the CRL of 'CN=Example Root CA'" in out
    root.revoked.clear()


def test_import_refuses_a_cadir_that_holds_a_ca(tmp_path):
    config = write_config(tmp_path)
    assert run(config, "setup").exit_code == 0
    before = (tmp_path / "ca" / "ca_crt.pem").read_bytes()
    done = run(config, "import", *import_files(tmp_path, ext_chain(2)))
    assert done.exit_code == 4 and "already holds a CA" in done.output
    assert (tmp_path / "ca" / "ca_crt.pem").read_bytes() == before


# --- the CRL chain's health: crl show ---------------------------------------------------------------


def test_crl_show_warns_well_before_the_roots_crl_expires(tmp_path):
    chain = ext_chain(2)
    issuing, root = chain
    soon = root.crl(
        this_update=NOW - dt.timedelta(days=300), next_update=NOW + dt.timedelta(days=40)
    )
    config = write_config(tmp_path)
    assert (
        run(config, "import", *import_files(tmp_path, chain, [issuing.crl(), soon])).exit_code == 0
    )
    done = run(config, "crl", "show")
    assert done.exit_code == 0, done.output
    assert "Warning: the CRL of 'CN=Example Root CA' (number 1) expires at" in done.output
    assert "in 39 days" in done.output or "in 40 days" in done.output
    assert "splitca ca root-crl" in done.output and "splitca crl install-root" in done.output
    info = json.loads(run(config, "crl", "show", "--format", "json").output)
    assert [c["own"] for c in info["chain"]] == [True, False]
    assert len(info["warnings"]) == 1 and "Example Root CA" in info["warnings"][0]


def test_crl_show_is_quiet_for_a_fresh_chain(tmp_path):
    config = write_config(tmp_path)
    assert run(config, "setup", "--intermediate").exit_code == 0
    done = run(config, "crl", "show", "--format", "json")
    assert json.loads(done.output)["warnings"] == []


def test_a_csr_signed_under_an_imported_three_level_chain_verifies(tmp_path):
    """Through the CA's own signing path (a CSR, as an agent sends it)."""
    from splitca.compose import open_ca

    from .conftest import make_settings

    chain = ext_chain(3)
    config = write_config(tmp_path)
    assert run(config, "import", *import_files(tmp_path, chain)).exit_code == 0
    ca = open_ca(make_settings(tmp_path), autosign_at_start=False)
    ca.submit_csr("agent.test", pki.pem(make_csr("agent.test")))
    cert = ca.sign("agent.test")
    path = tmp_path / "agent.pem"
    path.write_bytes(pki.pem(cert))
    assert aki(cert) == ski(chain[0].cert)
    code, out = verify_all(path, tmp_path / "ca")
    assert code == 0, out


def _setup_with_an_encrypted_root(tmp_path: Path) -> tuple[Path, Path]:
    """`setup --intermediate` writing the root key sealed with the passphrase in ./pass:
    (the config, the root key's path)."""
    config = write_config(tmp_path)
    (tmp_path / "pass").write_text("root secret\n")
    root_key = tmp_path / "root_key.pem"
    done = run(
        config, "setup", "--intermediate", "--root-key-out", str(root_key),
        "--root-passphrase-file", str(tmp_path / "pass"),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return config, root_key


def test_setup_intermediate_can_write_the_root_key_encrypted(tmp_path):
    config, root_key = _setup_with_an_encrypted_root(tmp_path)
    cadir = tmp_path / "ca"
    assert b"ENCRYPTED" in root_key.read_bytes()
    with pytest.raises(pki.ChainError, match="encrypted"):
        pki.load_key(root_key.read_bytes(), None)
    args = ["ca", "root-crl", "--root-key", str(root_key), "--root-cert", str(cadir / "ca_crt.pem")]
    args += ["--crl", str(cadir / "ca_crl.pem"), "--out", str(tmp_path / "root_crl.pem")]
    done = run(config, *args, "--passphrase-file", str(tmp_path / "pass"))
    assert done.exit_code == 0, done.output
    assert run(config, "crl", "install-root", str(tmp_path / "root_crl.pem")).exit_code == 0


def test_the_encrypted_root_key_is_sealed_as_strongly_as_the_ca_key(tmp_path):
    # The offline root outranks the CA key: the same PBES2 with PBKDF2-HMAC-SHA256 at
    # 600,000 rounds (0x927C0), not cryptography's BestAvailableEncryption (2048 rounds).
    _, root_key = _setup_with_an_encrypted_root(tmp_path)
    parsed = openssl("asn1parse", "-in", str(root_key)).stdout.decode()
    for part in (":PBES2", ":PBKDF2", ":0927C0", ":hmacWithSHA256", ":aes-256-cbc"):
        assert part in parsed, parsed
    back = openssl("pkey", "-in", str(root_key), "-passin", f"file:{tmp_path / 'pass'}")
    assert back.returncode == 0 and b"BEGIN PRIVATE KEY" in back.stdout, back.stderr


def test_a_root_key_file_made_while_the_keys_are_generated_is_never_replaced(tmp_path, monkeypatch):
    # The key file is checked for, then two keys are generated (seconds at 4096 bits):
    # a file that appears at the path meanwhile must survive, and nothing be set up.
    config = write_config(tmp_path)
    root_key = tmp_path / "root_key.pem"
    real = pki.generate_private_key

    def generate_and_plant(*args, **kwargs):
        if not root_key.exists():
            root_key.write_bytes(b"precious")
        return real(*args, **kwargs)

    monkeypatch.setattr(pki, "generate_private_key", generate_and_plant)
    done = run(config, "setup", "--intermediate", "--root-key-out", str(root_key))
    assert done.exit_code == 4, done.output
    assert "never replaces a key file" in done.output
    assert root_key.read_bytes() == b"precious"
    assert not (tmp_path / "ca" / "ca_key.pem").exists()


def test_import_refuses_a_chain_whose_leaves_no_verifier_accepts(tmp_path):
    # A CA above the signing CA that allows no CA below it (pathLenConstraint), or one
    # limited to purposes other than TLS (extendedKeyUsage): every certificate this CA
    # issued would fail OpenSSL's verification on agents, masters and Apache.
    root = ext_ca("Example Root CA", path_length=0)
    mid = ext_ca("Example Mid CA 1", root)
    issuing = ext_ca("Example Issuing CA", mid)
    out = _import_error(tmp_path, [issuing, mid, root])
    assert "'CN=Example Root CA' allows no more than 0 CAs below it" in out
    (tmp_path / "eku").mkdir()
    root = ext_ca("Example Root CA")
    mid = ext_ca("Example Mid CA 1", root, eku=[x509.oid.ExtendedKeyUsageOID.CODE_SIGNING])
    issuing = ext_ca("Example Issuing CA", mid)
    out = _import_error(tmp_path / "eku", [issuing, mid, root])
    assert "'CN=Example Mid CA 1' is limited by extendedKeyUsage" in out
    # Path lengths that fit (2 CAs under the root, 1 under the mid) and TLS purposes are fine.
    tls = [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    root = ext_ca("Example Root CA", path_length=2)
    mid = ext_ca("Example Mid CA 1", root, path_length=1, eku=tls)
    issuing = ext_ca("Example Issuing CA", mid, path_length=0)
    (tmp_path / "ok").mkdir()
    config = write_config(tmp_path / "ok")
    done = run(config, "import", *import_files(tmp_path / "ok", [issuing, mid, root]))
    assert done.exit_code == 0, done.output
    path = issue(config, tmp_path / "ok", "web1.test")
    code, out = verify_all(path, tmp_path / "ok" / "ca")
    assert code == 0, out
