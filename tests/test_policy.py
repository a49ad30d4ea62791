"""CSR vetting (splitca.core.policy) on its own: every refusal kind, each rule on both sides of
its boundary, with real CSRs; puppetserver's rules and messages (puppet-ca-api.md section 4)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from splitca import pki
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.core.policy import Approved, CsrRules, check_crypto, check_subject, vet
from splitca.errors import PolicyViolation
from splitca.pki.csr import VersionedCsr

from .conftest import fast_key, make_csr, setup_ca
from .test_bad_input import _ECDSA_SHA256, versioned_csr

RULES = CsrRules()
PP_ROLE = "1.3.6.1.4.1.34380.1.1.13"  # pp_role (ppRegCertExt)
PP_PRIV = "1.3.6.1.4.1.34380.1.2.1.5"  # under ppPrivCertExt
PP_AUTHORIZATION = "1.3.6.1.4.1.34380.1.3.1"
PP_AUTH_ROLE = "1.3.6.1.4.1.34380.1.3.13"
PP_CLI_AUTH = "1.3.6.1.4.1.34380.1.3.39"

# AlgorithmIdentifier DER of the signatures cryptography will not make.
_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")
_MD5_RSA = bytes.fromhex("300d06092a864886f70d0101040500")
_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_UNKNOWN_ALG = bytes.fromhex("3005060329012a")  # OID 1.1.1.42


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + size + body


def resigned(
    csr: x509.CertificateSigningRequest,
    key: rsa.RSAPrivateKey,
    algorithm: hashes.HashAlgorithm,
    algid: bytes,
    *,
    tamper: bool = False,
) -> x509.CertificateSigningRequest:
    """*csr*'s request info signed again by *key* with *algorithm*, labelled *algid*."""
    info = csr.tbs_certrequest_bytes
    signature = key.sign(info, padding.PKCS1v15(), algorithm)
    if tamper:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    der = _tlv(0x30, info + algid + _tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_csr(der)


def refusal(
    csr: x509.CertificateSigningRequest,
    name: str,
    rules: CsrRules = RULES,
    **kw: bool,
) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        vet(csr, name, rules, **kw)
    assert info.value.certname == name
    return info.value


def subject_csr(
    attrs: list[x509.NameAttribute], key: PrivateKeyTypes | None = None
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key or fast_key(), hashes.SHA256())  # type: ignore[arg-type]


# --- the subject (validate-subject!) -------------------------------------------------------------


def test_a_cn_other_than_the_url_name_is_a_hostname_mismatch() -> None:
    with pytest.raises(PolicyViolation) as info:
        check_subject("agent1", "agent2")
    assert info.value.kind == "hostname-mismatch" and info.value.certname == "agent1"
    assert str(info.value) == 'Instance name "agent2" does not match requested key "agent1"'
    with pytest.raises(PolicyViolation) as info:
        check_subject("agent1", None)  # a CSR without a CN
    assert info.value.kind == "hostname-mismatch"


def test_the_mismatch_is_checked_before_the_name_rules() -> None:
    """puppetserver's order: a bad name in the URL with another CN is a mismatch first."""
    with pytest.raises(PolicyViolation) as info:
        check_subject("Bad*Name", "good")
    assert info.value.kind == "hostname-mismatch"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Agent1", "Certificate names must be lower case."),
        ("foo*bar", "Subject contains a wildcard, which is not allowed: foo*bar"),
        ("*.example.com", "Subject contains a wildcard, which is not allowed: *.example.com"),
        ("bad-", "Subject hostname format is invalid"),
        ("a..b", "Subject hostname format is invalid"),
        ("-lead", "Subject hostname format is invalid"),
        (".lead", "Subject hostname format is invalid"),
        ("super/bad", "Subject hostname format is invalid"),
        ("not\neven\tkind\rof", "Subject hostname format is invalid"),
        ("hidden\b\b\b\b\b\bagent", "Subject hostname format is invalid"),
        ("caf\u00e9", "Subject hostname format is invalid"),
        ("", "Subject hostname format is invalid"),
        (
            "n" * 65,
            "Certificate names must be at most 64 characters long "
            "(the limit of a certificate's common name, RFC 5280); this one has 65.",
        ),
    ],
)
def test_names_puppetserver_refuses_are_invalid_subject_names(name: str, message: str) -> None:
    with pytest.raises(PolicyViolation) as info:
        check_subject(name, name)
    assert (info.value.kind, str(info.value), info.value.certname) == (
        "invalid-subject-name",
        message,
        name,
    )


@pytest.mark.parametrize(
    "name", ["web01.example.com", "foo.", "foo..", "a.-b", "_x", "a_b-c.d", "0", "n" * 64]
)
def test_names_puppetserver_accepts_pass(name: str) -> None:
    """Including its quirks: trailing dots (Java's split) and a label starting with '-'."""
    check_subject(name, name)


# The reference's equivalent of puppetserver's rules (puppet-ca-api.md section 4.2), plus the CN limit.
_PUPPETSERVER_NAME = re.compile(
    r"(?!.*-\Z)[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_-]*[a-z0-9_])*\.*", re.ASCII
)
_name_chars = st.sampled_from("abz09_-.*A/ \n\u00e9")


@hsettings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(_name_chars, max_size=70), st.text(max_size=20)))
def test_any_name_is_accepted_exactly_as_puppetserver_would_or_an_invalid_subject_name(
    name: str,
) -> None:
    expected_ok = bool(_PUPPETSERVER_NAME.fullmatch(name)) and len(name) <= 64
    try:
        check_subject(name, name)
    except PolicyViolation as exc:
        assert exc.kind == "invalid-subject-name", (name, exc.kind)
        assert not expected_ok, (name, str(exc))
    else:
        assert expected_ok, name
    with pytest.raises(PolicyViolation) as info:
        check_subject(name, name + "x")
    assert info.value.kind == "hostname-mismatch"


# --- keys and signatures (splitca's own rules; puppetserver accepts anything) --------------------


def test_rsa_keys_are_refused_below_min_rsa_bits_and_accepted_at_it() -> None:
    csr = make_csr("r1")  # a 2048-bit key
    assert csr.public_key().key_size == 2048  # type: ignore[union-attr]
    check_crypto(csr, "r1", CsrRules(min_rsa_bits=2048))
    vet(csr, "r1", CsrRules(min_rsa_bits=2048))
    exc = refusal(csr, "r1", CsrRules(min_rsa_bits=2049))
    assert exc.kind == "weak-key"
    assert str(exc) == "CSR 'r1' has a 2048-bit RSA key; at least 2049 bits are required."


def test_a_1024_bit_rsa_key_is_refused_by_default_and_accepted_when_allowed() -> None:
    csr = make_csr("old", key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    exc = refusal(csr, "old")
    assert (exc.kind, str(exc)) == (
        "weak-key",
        "CSR 'old' has a 1024-bit RSA key; at least 2048 bits are required.",
    )
    assert vet(csr, "old", CsrRules(min_rsa_bits=1024)).certname == "old"


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ec_keys_on_the_nist_curves_are_accepted(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    approved = vet(make_csr("e1", key=key), "e1", RULES)
    assert approved.public_key == key.public_key()


@pytest.mark.parametrize("curve", [ec.SECP224R1(), ec.SECP256K1(), ec.BrainpoolP256R1()])
def test_ec_keys_on_other_curves_are_weak(curve: ec.EllipticCurve) -> None:
    exc = refusal(make_csr("e2", key=ec.generate_private_key(curve)), "e2")
    assert (exc.kind, str(exc)) == (
        "weak-key",
        f"CSR 'e2' has an EC key on curve {curve.name}; use P-256, P-384 or P-521.",
    )


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (ed25519.Ed25519PrivateKey.generate(), "an Ed25519"),
        (ed448.Ed448PrivateKey.generate(), "an Ed448"),
        (dsa.generate_private_key(key_size=1024), "a DSA"),
    ],
    ids=["ed25519", "ed448", "dsa"],
)
def test_keys_puppet_agents_never_make_are_unsupported(key: PrivateKeyTypes, kind: str) -> None:
    csr = subject_csr([x509.NameAttribute(NameOID.COMMON_NAME, "k1")], key)
    for rules in (RULES, CsrRules(allow_legacy_signatures=True, min_rsa_bits=512)):
        exc = refusal(csr, "k1", rules)
        assert (exc.kind, str(exc)) == (
            "unsupported-key",
            f"CSR 'k1' has {kind} key, which is not accepted; "
            "use an RSA key or an EC key on P-256, P-384 or P-521.",
        )


@pytest.mark.parametrize(
    ("algorithm", "algid", "label"),
    [(hashes.SHA1(), _SHA1_RSA, "SHA1"), (hashes.MD5(), _MD5_RSA, "MD5")],
    ids=["sha1", "md5"],
)
def test_legacy_signatures_are_refused_unless_allowed_and_then_verified(
    algorithm: hashes.HashAlgorithm, algid: bytes, label: str
) -> None:
    key = fast_key()
    csr = resigned(make_csr("l1", key=key), key, algorithm, algid)
    exc = refusal(csr, "l1")
    assert exc.kind == "weak-signature"
    assert str(exc).startswith(f"CSR 'l1' is signed with {label}, which is refused.")
    legacy = CsrRules(allow_legacy_signatures=True)
    assert vet(csr, "l1", legacy).certname == "l1"
    # Allowed means checked by hand, not waved through: a broken one is still refused.
    broken = resigned(make_csr("l1", key=key), key, algorithm, algid, tamper=True)
    assert refusal(broken, "l1", legacy).kind == "invalid-signature"
    assert refusal(broken, "l1").kind == "weak-signature"


def test_an_unknown_signature_algorithm_is_weak_and_never_verifies() -> None:
    key = fast_key()
    csr = resigned(make_csr("u1", key=key), key, hashes.SHA256(), _UNKNOWN_ALG)
    exc = refusal(csr, "u1")
    assert (exc.kind, str(exc)) == (
        "weak-signature",
        "CSR 'u1' uses an unsupported signature algorithm.",
    )
    assert refusal(csr, "u1", CsrRules(allow_legacy_signatures=True)).kind == "invalid-signature"


def test_a_signature_by_another_key_is_an_invalid_signature() -> None:
    """puppetserver's case: the CSR holds a public key that did not sign it."""
    theirs = make_csr("s1", key=fast_key())
    forged = resigned(theirs, fast_key(), hashes.SHA256(), _SHA256_RSA)
    exc = refusal(forged, "s1")
    assert (exc.kind, str(exc)) == (
        "invalid-signature",
        "CSR contains a public key that does not correspond to the signing key",
    )
    # The same bytes signed by the right key pass: the refusal is the signature's.
    key = fast_key()
    assert vet(resigned(make_csr("s1", key=key), key, hashes.SHA256(), _SHA256_RSA), "s1", RULES)
    tampered = resigned(make_csr("s1", key=key), key, hashes.SHA256(), _SHA256_RSA, tamper=True)
    assert refusal(tampered, "s1").kind == "invalid-signature"


# --- subject alternative names (ensure-subject-alt-names-allowed!) ---------------------------------


def test_a_san_of_just_the_certname_is_always_allowed() -> None:
    """SERVER-2338: agents add DNS:<certname> whenever dns_alt_names is set."""
    approved = vet(make_csr("a1.example.com", sans=["DNS:a1.example.com"]), "a1.example.com", RULES)
    assert approved.alt_names == (x509.DNSName("a1.example.com"),)
    assert vet(make_csr("a2"), "a2", RULES).alt_names == ()


@pytest.mark.parametrize(
    ("sans", "listed"),
    [
        (["DNS:s1", "DNS:puppet", "IP:10.0.0.1"], "DNS:puppet, IP:10.0.0.1"),
        (["DNS:other"], "DNS:other"),
        (["IP:10.0.0.1"], "IP:10.0.0.1"),
        (["DNS:s1", "DNS:*.example.com"], "DNS:*.example.com"),
    ],
)
def test_other_sans_are_refused_unless_allowed(sans: list[str], listed: str) -> None:
    csr = make_csr("s1", sans=sans)
    exc = refusal(csr, "s1")
    assert exc.kind == "disallowed-extension"
    assert str(exc).startswith(
        f"CSR 's1' contains extra subject alternative names ({listed}), which are disallowed."
    )
    wanted = tuple(pki.parse_alt_names(sans))
    assert vet(csr, "s1", CsrRules(allow_subject_alt_names=True)).alt_names == wanted
    # 'splitca sign --allow-dns-alt-names': a human allows them for one signing.
    assert vet(csr, "s1", RULES, allow_alt_names=True).alt_names == wanted


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (x509.UniformResourceIdentifier("https://evil.example/"), "URI:https://evil.example/"),
        (x509.RFC822Name("root@example.com"), "email:root@example.com"),
    ],
)
def test_sans_other_than_dns_and_ip_are_refused_even_when_sans_are_allowed(
    name: x509.GeneralName, shown: str
) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName("u1"), name])
    csr = make_csr("u1", raw_extensions=[san])
    for rules, kw in (
        (CsrRules(allow_subject_alt_names=True), {}),
        (RULES, {"allow_alt_names": True}),
    ):
        exc = refusal(csr, "u1", rules, **kw)
        assert (exc.kind, str(exc)) == (
            "disallowed-extension",
            f"CSR 'u1' contains a subject alternative name of an unsupported type ({shown}); "
            "only DNS and IP names are allowed.",
        )
    # With SANs not allowed at all, the SAN rule speaks first, naming it.
    assert f"extra subject alternative names ({shown})" in str(refusal(csr, "u1"))


def test_an_ip_san_is_carried_as_an_ip() -> None:
    csr = make_csr("ip1", sans=["DNS:ip1", "IP:192.0.2.7", "IP:2001:db8::1"])
    approved = vet(csr, "ip1", CsrRules(allow_subject_alt_names=True))
    assert approved.alt_names == (
        x509.DNSName("ip1"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    )


# --- authorization extensions and the extension allowlist -------------------------------------------


@pytest.mark.parametrize("oid", [PP_AUTHORIZATION, PP_AUTH_ROLE, "1.3.6.1.4.1.34380.1.3.99"])
def test_authorization_extensions_are_refused_unless_allowed(oid: str) -> None:
    csr = make_csr("au1", extensions=[(oid, "true")])
    exc = refusal(csr, "au1")
    assert exc.kind == "disallowed-extension"
    assert str(exc).startswith(
        "CSR 'au1' contains an authorization extension, which is disallowed."
    )
    approved = vet(csr, "au1", CsrRules(allow_authorization_extensions=True))
    assert [e.oid.dotted_string for e in approved.extensions] == [oid]


def test_pp_cli_auth_is_never_granted_through_a_csr() -> None:
    csr = make_csr("adm", extensions=[(PP_CLI_AUTH, "true")])
    assert str(refusal(csr, "adm")).startswith("CSR 'adm' contains an authorization extension")
    everything = CsrRules(
        allow_authorization_extensions=True,
        allow_subject_alt_names=True,
        allow_legacy_signatures=True,
    )
    exc = refusal(csr, "adm", everything, allow_alt_names=True)
    assert (exc.kind, str(exc)) == (
        "disallowed-extension",
        f"Found extensions that are not permitted: {PP_CLI_AUTH}",
    )


@pytest.mark.parametrize(
    "oid", [PP_ROLE, PP_PRIV, "1.3.6.1.4.1.34380.1.1.1", "1.3.6.1.4.1.34380.1.2.9.9.9"]
)
def test_strict_sub_oids_of_the_registered_and_private_arcs_are_allowed(oid: str) -> None:
    approved = vet(make_csr("x1", extensions=[(oid, "v")]), "x1", RULES)
    assert [(e.oid.dotted_string, e.critical) for e in approved.extensions] == [(oid, False)]


@pytest.mark.parametrize(
    "oid",
    [
        "1.3.6.1.4.1.34380.1.1",  # the arc itself: isSubtreeOf wants a longer OID
        "1.3.6.1.4.1.34380.1.2",
        "1.3.6.1.4.1.34380.1.3",
        "1.3.6.1.4.1.34380.1.10",  # a look-alike of 1.1 as a string prefix
        "1.3.6.1.4.1.34380.1.20.1",
        "1.3.6.1.4.1.343801.1.1.1",
        "1.3.6.1.4.1.34381.1.1.1",  # the next enterprise number
        "1.9.9.9.9.9.0",
    ],
)
def test_anything_else_is_not_permitted(oid: str) -> None:
    csr = make_csr("x2", extensions=[(oid, "v")])
    everything = CsrRules(allow_authorization_extensions=True, allow_subject_alt_names=True)
    for rules in (RULES, everything):
        exc = refusal(csr, "x2", rules)
        assert (exc.kind, str(exc)) == (
            "disallowed-extension",
            f"Found extensions that are not permitted: {oid}",
        )


def test_every_extension_not_permitted_is_listed_in_request_order() -> None:
    csr = make_csr(
        "x3",
        extensions=[("1.9.9.9.9.9.1", "a"), (PP_ROLE, "b"), ("1.9.9.9.9.9.0", "c")],
        raw_extensions=[x509.BasicConstraints(ca=True, path_length=None)],
    )
    assert str(refusal(csr, "x3")) == (
        "Found extensions that are not permitted: 1.9.9.9.9.9.1, 1.9.9.9.9.9.0, 2.5.29.19"
    )


def test_puppetserver_order_san_then_authorization_then_allowlist() -> None:
    both = make_csr("o1", sans=["DNS:o1", "DNS:x"], extensions=[(PP_AUTHORIZATION, "v")])
    assert "extra subject alternative names" in str(refusal(both, "o1"))
    auth_and_bad = make_csr("o1", extensions=[(PP_AUTHORIZATION, "v"), ("1.9.9", "v")])
    assert "authorization extension" in str(refusal(auth_and_bad, "o1"))


def test_a_critical_requested_extension_is_refused_but_a_critical_san_is_not() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c1")])
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(PP_ROLE), pki.der_utf8("web"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    critical = builder.add_extension(ext, True).sign(fast_key(), hashes.SHA256())
    exc = refusal(critical, "c1")
    assert (exc.kind, str(exc)) == (
        "disallowed-extension",
        f"CSR 'c1' marks requested extensions critical ({PP_ROLE}); "
        "Puppet extensions must be non-critical, or no TLS client accepts the certificate.",
    )
    san = x509.SubjectAlternativeName([x509.DNSName("c1")])
    ok = builder.add_extension(san, True).sign(fast_key(), hashes.SHA256())
    approved = vet(ok, "c1", RULES)
    assert approved.alt_names == (x509.DNSName("c1"),) and approved.extensions == ()


_EXT_POOL = [
    PP_ROLE,
    PP_PRIV,
    PP_AUTHORIZATION,
    PP_AUTH_ROLE,
    PP_CLI_AUTH,
    "1.3.6.1.4.1.34380.1.1",
    "1.3.6.1.4.1.34380.1.3",
    "1.3.6.1.4.1.34380.1.10",
    "1.3.6.1.4.1.34380.1.1.13.1",
    "1.2.3.4",
]
_EC_KEY = ec.generate_private_key(ec.SECP256R1())  # signs fast: many CSRs per run


def _allowed_by_puppetserver(oid: str) -> bool:
    """allowed-extension? as puppet-ca-api.md section 4.5 states it (written independently)."""
    parts = oid.split(".")
    arcs = (["1", "3", "6", "1", "4", "1", "34380", "1", a] for a in ("1", "2", "3"))
    return oid != PP_CLI_AUTH and any(len(parts) > 9 and parts[:9] == arc for arc in arcs)


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requested=st.lists(
        st.tuples(st.sampled_from(_EXT_POOL), st.booleans()), unique_by=lambda t: t[0], max_size=4
    ),
    allow_auth=st.booleans(),
)
def test_any_set_of_extensions_is_vetted_by_puppetservers_rules(
    requested: list[tuple[str, bool]], allow_auth: bool
) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h1")])
    )
    for oid, critical in requested:
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), pki.der_utf8("v"))
        builder = builder.add_extension(ext, critical)
    csr = builder.sign(_EC_KEY, hashes.SHA256())
    auth = any(oid.startswith("1.3.6.1.4.1.34380.1.3.") for oid, _ in requested)
    ok = (
        (allow_auth or not auth)
        and all(_allowed_by_puppetserver(oid) for oid, _ in requested)
        and not any(critical for _, critical in requested)
    )
    try:
        approved = vet(csr, "h1", CsrRules(allow_authorization_extensions=allow_auth))
    except PolicyViolation as exc:
        assert exc.kind == "disallowed-extension", exc
        assert not ok, (requested, str(exc))
    else:
        assert ok, requested
        assert [(e.oid.dotted_string, e.critical) for e in approved.extensions] == requested


# --- what an approval carries --------------------------------------------------------------------------


def test_approved_carries_exactly_the_vetted_data() -> None:
    key = fast_key()
    csr = make_csr(
        "ap1",
        key=key,
        sans=["DNS:ap1", "DNS:alias", "IP:10.1.2.3"],
        extensions=[(PP_ROLE, "web"), (PP_AUTHORIZATION, "ops")],
        password="s3cret",
    )
    rules = CsrRules(allow_subject_alt_names=True, allow_authorization_extensions=True)
    approved = vet(csr, "ap1", rules)
    assert isinstance(approved, Approved)
    assert approved.certname == "ap1"
    assert approved.public_key == key.public_key()
    assert approved.alt_names == tuple(pki.parse_alt_names(["DNS:ap1", "DNS:alias", "IP:10.1.2.3"]))
    # The SAN is carried as names, not as the CSR's extension; the rest verbatim, in order.
    assert [(e.oid.dotted_string, e.value, e.critical) for e in approved.extensions] == [
        (
            PP_ROLE,
            x509.UnrecognizedExtension(x509.ObjectIdentifier(PP_ROLE), pki.der_utf8("web")),
            False,
        ),
        (
            PP_AUTHORIZATION,
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(PP_AUTHORIZATION), pki.der_utf8("ops")
            ),
            False,
        ),
    ]


def test_the_certificate_is_built_from_the_approval_not_the_raw_csr(settings: Settings) -> None:
    """Extra subject RDNs, a second CN, a critical SAN and a challengePassword in the CSR:
    the certificate has CN=<certname> alone, a non-critical SAN and no attributes."""
    setup_ca(settings)
    ca = open_ca(settings.replace(allow_subject_alt_names=True), autosign_at_start=False)
    key = fast_key()
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "built1"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "ca.test"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("alias1")]), True)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"pw")
    )
    ca.submit_csr("built1", pki.pem(builder.sign(key, hashes.SHA256())))
    cert = ca.sign("built1")
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "built1")])
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert list(san.value) == [x509.DNSName("alias1"), x509.DNSName("built1")]
    requested = {e.oid for e in cert.extensions} - {
        x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
        x509.oid.ExtensionOID.KEY_USAGE,
        x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        pki.NETSCAPE_COMMENT,
    }
    assert requested == set()


# --- CSRs of version 1 and 2 (VersionedCsr) --------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_a_versioned_csr_is_vetted_like_any_other(version: int) -> None:
    csr = pki.load_csr(versioned_csr("v2host", version))
    assert isinstance(csr, VersionedCsr)
    approved = vet(csr, "v2host", RULES)
    assert approved.certname == "v2host" and approved.public_key == csr.public_key()
    exc = refusal(csr, "v2host", CsrRules(min_rsa_bits=4096))
    assert exc.kind == "weak-key"


@pytest.mark.parametrize(
    "body",
    [
        lambda: versioned_csr("v2bad", 2, tamper=True),
        lambda: versioned_csr("v2bad", 2, label=_ECDSA_SHA256),  # an RSA signature labelled ECDSA
    ],
    ids=["tampered", "mislabelled"],
)
def test_a_versioned_csr_with_a_bad_signature_is_an_invalid_signature(body) -> None:  # type: ignore[no-untyped-def]
    csr = pki.load_csr(body())
    assert isinstance(csr, VersionedCsr)
    exc = refusal(csr, "v2bad")
    assert (exc.kind, str(exc)) == (
        "invalid-signature",
        "CSR contains a public key that does not correspond to the signing key",
    )


# --- the kinds the use cases raise around vet ----------------------------------------------------------


def test_duplicate_cert_is_the_kind_for_a_name_that_has_a_certificate_or_csr(
    settings: Settings,
) -> None:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    ca.submit_csr("dup1", pki.pem(make_csr("dup1")))
    for state in ("requested", "signed", "revoked"):
        if state == "signed":
            ca.sign("dup1")
        elif state == "revoked":
            ca.revoke(["dup1"])
        with pytest.raises(PolicyViolation) as info:
            ca.submit_csr("dup1", pki.pem(make_csr("dup1")))
        assert (info.value.kind, str(info.value)) == (
            "duplicate-cert",
            f"dup1 already has a {state} certificate; ignoring certificate request",
        )


def test_invalid_csr_is_the_kind_for_a_stored_csr_that_no_longer_parses(settings: Settings) -> None:
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    ca.submit_csr("rot1", pki.pem(make_csr("rot1")))
    ca.store.cadir.csr_path("rot1").write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    with pytest.raises(PolicyViolation) as info:
        ca.sign("rot1")
    assert info.value.kind == "invalid-csr"
    assert str(info.value).startswith("Stored CSR for rot1 is unreadable: ")
