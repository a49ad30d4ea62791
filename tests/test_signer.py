"""The Signer seam: KeyFileSigner loads the CA key once and reloads it when the files change."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from splitca import pki
from splitca.errors import StoreError
from splitca.store.files.cadir import CADir
from splitca.store.files.signer import KeyFileSigner

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_ca(root: Path, name: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.build_ca_certificate(key, name, now=NOW, ttl=dt.timedelta(days=1))
    (root / "ca_crt.pem").write_bytes(pki.pem(cert))
    (root / "ca_key.pem").write_bytes(pki.private_key_pem(key))


def test_the_key_is_loaded_once_and_reloaded_when_the_files_change(tmp_path: Path) -> None:
    _write_ca(tmp_path, "First CA")
    signer = KeyFileSigner(CADir(tmp_path))
    first = signer.current()
    assert signer.current() is first  # not re-read while the files are unchanged
    assert pki.first_cn(first.certificate.subject) == "First CA"
    _write_ca(tmp_path, "Second CA")
    st = os.stat(tmp_path / "ca_key.pem")
    os.utime(tmp_path / "ca_key.pem", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = signer.current()
    assert second is not first
    assert pki.first_cn(second.certificate.subject) == "Second CA"


def test_what_it_signs_verifies_against_its_certificate(tmp_path: Path) -> None:
    _write_ca(tmp_path, "Signing CA")
    loaded = KeyFileSigner(CADir(tmp_path)).current()
    leaf = ec.generate_private_key(ec.SECP256R1())
    tbs = loaded.prepare_leaf(
        public_key=leaf.public_key(),
        certname="leaf.example.com",
        not_before=NOW,
        not_after=NOW + dt.timedelta(hours=1),
        alt_names=(),
        extensions=(),
    )
    cert = loaded.sign_leaf(tbs, 4242)
    cert.verify_directly_issued_by(loaded.certificate)
    assert cert.serial_number == 4242
    crl = loaded.sign_crl(
        entries=[(4242, NOW.timestamp(), 1)],
        number=7,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
    )
    parsed = x509.load_der_x509_crl(crl)
    assert parsed.is_signature_valid(loaded.certificate.public_key())  # type: ignore[arg-type]
    assert pki.crl_number(parsed) == 7


def test_a_key_that_matches_no_certificate_is_refused(tmp_path: Path) -> None:
    _write_ca(tmp_path, "Mismatched CA")
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca_key.pem").write_bytes(pki.private_key_pem(other))
    with pytest.raises(StoreError, match="matches"):
        KeyFileSigner(CADir(tmp_path)).current()
