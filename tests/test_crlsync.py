"""`splitca sync-crl`: every check on a hostile CRL, exit codes, atomic install, reload only on change."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.server
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from splitca import compose, pki
from splitca.authority import CertificateAuthority
from splitca.cli import cli
from splitca.cli._base import Outcome
from splitca.compose import open_ca
from splitca.errors import CRLRejected
from splitca.pki import asn1
from splitca.split import crlsync

from .apache_harness import (
    Identity,
    MasterStack,
    build_master_stack,
    issue,
    start_backend,
    stop_apache,
)
from .conftest import free_port, make_settings

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


# --- CRLs made with real keys ---------------------------------------------------------------------


@dataclass
class Signer:
    """A CA key + certificate that can sign CRLs with any number and dates."""

    key: Any
    cert: x509.Certificate

    def crl(
        self,
        number: int,
        *,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
        serials: tuple[int, ...] = (),
    ) -> bytes:
        this = this_update or NOW - dt.timedelta(minutes=1)
        return pki.pem(
            pki.build_crl(
                ca_key=self.key,
                ca_cert=self.cert,
                entries=[pki.Revocation(s, this) for s in serials],
                number=number,
                this_update=this,
                next_update=next_update or this + dt.timedelta(days=7),
            )
        )


def make_signer(name: str = "Puppet CA: ca.test") -> Signer:
    key = pki.generate_private_key("rsa", rsa_bits=2048)
    return Signer(key, pki.build_ca_certificate(key, name, now=NOW, ttl=dt.timedelta(days=365)))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


# --- the pure checks --------------------------------------------------------------------------------


def reject(data: bytes, cas: list[x509.Certificate], **kw: Any) -> str:
    with pytest.raises(CRLRejected) as info:
        crlsync.verify_crl(data, cas, now=NOW, **kw)
    assert str(info.value).startswith(f"CRL rejected ({info.value.check}): ")
    return info.value.check


def test_a_good_crl_passes(signer):
    data = signer.crl(5, serials=(3, 4))
    v = crlsync.verify_crl(data, [signer.cert], now=NOW, installed=[signer.crl(4)])
    assert v.data == data and v.number == 5
    assert v.next_update > NOW


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not a crl at all",
        b"\xff\xfe\x00binary",
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    ],
    ids=["empty", "text", "binary", "bad-der"],
)
def test_garbage_is_refused_as_parse(signer, body):
    assert reject(body, [signer.cert]) == "parse"


def test_a_certificate_instead_of_a_crl_is_refused(signer):
    assert reject(pki.pem(signer.cert), [signer.cert]) == "parse"


def test_text_around_the_crl_is_refused(signer):
    assert reject(b"<html>\n" + signer.crl(1), [signer.cert]) == "parse"


def test_crl_from_another_ca_is_refused_as_issuer(signer):
    other = make_signer("Some Other CA")
    assert reject(other.crl(9), [signer.cert]) == "issuer"


def test_crl_signed_by_a_lookalike_ca_is_refused_as_signature(signer):
    lookalike = make_signer("Puppet CA: ca.test")
    assert lookalike.cert.subject == signer.cert.subject
    assert reject(lookalike.crl(9), [signer.cert]) == "signature"


def test_expired_crl_is_refused(signer):
    old = signer.crl(
        9,
        this_update=NOW - dt.timedelta(days=8),
        next_update=NOW - dt.timedelta(days=1),
    )
    assert reject(old, [signer.cert]) == "expired"


def test_crl_from_the_future_is_refused(signer):
    assert (
        reject(signer.crl(9, this_update=NOW + dt.timedelta(hours=2)), [signer.cert])
        == "not-yet-valid"
    )


def test_older_crl_number_than_installed_is_refused_as_replay(signer):
    installed = signer.crl(7)
    assert reject(signer.crl(6), [signer.cert], installed=[installed]) == "crl-number"
    # Same number, different content: two CRLs cannot both be number 7.
    assert (
        reject(signer.crl(7, serials=(99,)), [signer.cert], installed=[installed]) == "crl-number"
    )
    # Identical content is fine (nothing to do), and --allow-rollback is the escape hatch.
    assert crlsync.verify_crl(installed, [signer.cert], now=NOW, installed=[installed]).number == 7
    assert crlsync.verify_crl(
        signer.crl(6), [signer.cert], now=NOW, installed=[installed], allow_rollback=True
    )


def test_installed_crl_from_another_ca_does_not_block(signer):
    """After the CA was replaced (new --ca-cert), the old CA's CRL number does not count."""
    old_ca = make_signer("Puppet CA: old")
    assert (
        crlsync.verify_crl(signer.crl(1), [signer.cert], now=NOW, installed=[old_ca.crl(50)]).number
        == 1
    )


def test_duplicate_and_missing_crls_in_a_chain(signer):
    assert reject(signer.crl(1) + signer.crl(2), [signer.cert]) == "duplicate"
    root = make_signer("Root CA")
    assert reject(signer.crl(1), [signer.cert, root.cert]) == "incomplete"
    both = crlsync.verify_crl(signer.crl(1) + root.crl(3), [signer.cert, root.cert], now=NOW)
    assert sorted(both.numbers.values()) == [1, 3]


def test_freshness_warns_in_the_last_quarter_by_default(signer):
    data = signer.crl(
        1, this_update=NOW - dt.timedelta(days=6), next_update=NOW + dt.timedelta(days=1)
    )
    state = crlsync.installed_state(data, [signer.cert], warn_before=None)
    assert state.stale(NOW)  # 1 day left of 7 < a quarter
    assert not crlsync.installed_state(
        data, [signer.cert], warn_before=dt.timedelta(hours=12)
    ).stale(NOW)
    assert crlsync.installed_state(None, [signer.cert], warn_before=None).stale(NOW)
    assert crlsync.installed_state(b"junk", [signer.cert], warn_before=None).stale(NOW)


def test_last_modified_is_sent_back_only_when_it_is_a_strong_validator():
    date = email.utils.format_datetime(NOW, usegmt=True)
    just_now = email.utils.format_datetime(NOW - dt.timedelta(seconds=1), usegmt=True)
    old = email.utils.format_datetime(NOW - dt.timedelta(minutes=5), usegmt=True)
    assert crlsync.usable_validator(old, date) == old
    assert crlsync.usable_validator(just_now, date) is None
    assert crlsync.usable_validator(old, None) is None
    assert crlsync.usable_validator("garbage", date) is None


# --- a CA over real TLS that answers whatever the test says ------------------------------------------


@dataclass
class FakeCA:
    """An HTTPS server with a certificate from our CA, serving a chosen CRL answer."""

    port: int
    body: bytes = b""
    status: int = 200
    last_modified: str | None = None
    length: int | None = None  # Content-Length to send; None = len(body); -1 = none (close)
    encoding: str | None = None  # Content-Encoding to send (the body is sent as given)
    requests: list[tuple[str, dict[str, str], bool]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _fake_ca_handler(fake: FakeCA) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            peer = (
                self.connection.getpeercert()
                if isinstance(self.connection, ssl.SSLSocket)
                else None
            )
            fake.requests.append((self.path, dict(self.headers.items()), bool(peer)))
            ims = self.headers.get("If-Modified-Since")
            if ims and fake.last_modified and ims == fake.last_modified:
                self.send_response(304)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(fake.status)
            if fake.last_modified:
                self.send_header("Last-Modified", fake.last_modified)
            if fake.encoding:
                self.send_header("Content-Encoding", fake.encoding)
            if fake.length != -1:
                self.send_header(
                    "Content-Length", str(len(fake.body) if fake.length is None else fake.length)
                )
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.wfile.write(fake.body)
            self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertificateAuthority]:
    """One CA for this module (its CRL is never changed here: tests sign their own)."""
    settings = make_settings(tmp_path_factory.mktemp("crlsync"))
    compose.setup_ca(settings)
    authority = open_ca(settings)
    yield authority
    authority.close()


@pytest.fixture(scope="module")
def ca_server_identity(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Identity:
    return issue(
        ca, "ca-server.example.com", tmp_path_factory.mktemp("fakeca"), alt_names=("IP:127.0.0.1",)
    )


@pytest.fixture
def fake_ca(ca_server_identity: Identity) -> Iterator[FakeCA]:
    ident = ca_server_identity
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(ident.cert), str(ident.key))
    ctx.load_verify_locations(str(ident.cacert))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    fake = FakeCA(free_port())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", fake.port), _fake_ca_handler(fake))
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    fake.server = server
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class Master:
    """A compile master's files: the pinned CA cert, the installed CRL, a reload counter."""

    root: Path
    cacert: Path
    crl: Path
    reloads: Path

    def reload_count(self) -> int:
        return len(self.reloads.read_text().splitlines()) if self.reloads.exists() else 0

    def sync(self, ca_url: str, *extra: str, env: dict[str, str] | None = None) -> Result:
        args = [
            "sync-crl",
            "--ca-url", ca_url,
            "--ca-cert", str(self.cacert),
            "--dest", str(self.crl),
            "--reload-command", f"sh -c 'echo reload >> {self.reloads}'",
            "--timeout", "10",
            *extra,
        ]  # fmt: skip
        return CliRunner().invoke(cli, args, env=env)


@pytest.fixture
def master(ca: CertificateAuthority, tmp_path: Path) -> Master:
    root = tmp_path / "master"
    root.mkdir()
    cacert = root / "ca.pem"
    cacert.write_bytes(ca.ca_certificate_pem())
    return Master(root, cacert, root / "crl.pem", root / "reloads.log")


def ca_signer(ca: CertificateAuthority) -> Signer:
    key = serialization.load_pem_private_key((ca.settings.cadir / "ca_key.pem").read_bytes(), None)
    return Signer(key, ca.ca_certificate())  # type: ignore[arg-type]


def install(master: Master, data: bytes) -> tuple[bytes, int]:
    master.crl.write_bytes(data)
    os.utime(master.crl, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return data, master.crl.stat().st_mtime_ns


def untouched(master: Master, before: tuple[bytes, int]) -> bool:
    return (master.crl.read_bytes(), master.crl.stat().st_mtime_ns) == before


# --- the command against a real TLS server ----------------------------------------------------------


def test_first_sync_installs_and_reloads_then_nothing_changes(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    first = master.sync(fake_ca.url)
    assert first.exit_code == Outcome.CRL_UPDATED, first.output
    assert "Installed CRL number 0" in first.output
    assert master.crl.read_bytes() == ca.crl_pem()
    assert master.crl.stat().st_mode & 0o777 == 0o644
    assert master.reload_count() == 1
    again = master.sync(fake_ca.url)
    assert again.exit_code == Outcome.CRL_UNCHANGED, again.output
    assert "is current" in again.output
    assert master.reload_count() == 1  # reload only when the content changed
    path, headers, _ = fake_ca.requests[0]
    assert path == "/puppet-ca/v1/certificate_revocation_list/ca"
    assert headers["User-Agent"] == "splitca-sync-crl"  # how the CA tells masters apart


def test_a_newer_crl_is_installed_to_every_destination(master, fake_ca, ca, tmp_path):
    signer = ca_signer(ca)
    before = install(master, signer.crl(3))
    hostcrl = tmp_path / "hostcrl.pem"
    fake_ca.body = signer.crl(4, serials=(17,))
    result = master.sync(fake_ca.url, "--dest", str(hostcrl), "--format", "json")
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.crl.read_bytes() == hostcrl.read_bytes() == fake_ca.body
    assert not untouched(master, before)
    assert '"crl_number":4' in result.output and '"reloaded":true' in result.output
    assert master.reload_count() == 1


def test_reload_when_someone_else_already_put_the_crl_in_place(master, fake_ca, ca):
    """E.g. the master's own puppet agent refreshed hostcrl: Apache must still reload."""
    fake_ca.body = ca.crl_pem()
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UPDATED
    newer = ca_signer(ca).crl(5)
    master.crl.write_bytes(newer)  # not us
    fake_ca.body = newer
    result = master.sync(fake_ca.url)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert "not loaded; reloaded" in result.output
    assert master.reload_count() == 2


REJECTIONS = {
    "other-ca": lambda ca: make_signer("Some Other CA").crl(50),
    "lookalike-ca": lambda ca: make_signer(pki.first_cn(ca.ca_certificate().subject) or "").crl(50),
    "older-number": lambda ca: ca_signer(ca).crl(2),
    "expired": lambda ca: ca_signer(ca).crl(
        50, this_update=NOW - dt.timedelta(days=9), next_update=NOW - dt.timedelta(days=2)
    ),
    "garbage": lambda ca: b"<html><body>Service Unavailable</body></html>\n",
}
EXPECTED_CHECK = {
    "other-ca": "issuer",
    "lookalike-ca": "signature",
    "older-number": "crl-number",
    "expired": "expired",
    "garbage": "parse",
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_hostile_crls_are_refused_and_the_installed_file_is_untouched(case, master, fake_ca, ca):
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = REJECTIONS[case](ca)
    result = master.sync(fake_ca.url)
    assert result.exit_code == 7, result.output
    assert f"CRL rejected ({EXPECTED_CHECK[case]})" in result.output
    assert "Traceback" not in result.output
    assert untouched(master, before)
    assert master.reload_count() == 0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_too_large_answer_is_refused_without_reading_it_all(master, fake_ca, ca, declared):
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = b"A" * (3 * 1024 * 1024)
    fake_ca.length = None if declared else -1
    result = master.sync(fake_ca.url, "--max-bytes", str(1024 * 1024))
    assert result.exit_code == 7, result.output
    assert "CRL rejected (size)" in result.output
    assert untouched(master, before)


def test_json_output_carries_the_outcome_exit_code(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    first = master.sync(fake_ca.url, "--format", "json")
    out = json.loads(first.stdout)
    assert first.exit_code == out["exit_code"] == 10 and out["outcome"] == "updated"
    assert list(out)[-1] == "exit_code"  # the key order scripts saw before
    again = master.sync(fake_ca.url, "--format", "json")
    out = json.loads(again.stdout)
    assert again.exit_code == out["exit_code"] == 0 and out["outcome"] == "unchanged"


def test_json_output_names_the_failed_check(master, fake_ca, ca):
    install(master, ca_signer(ca).crl(3))
    fake_ca.body = ca_signer(ca).crl(2)
    result = master.sync(fake_ca.url, "--format", "json")
    assert result.exit_code == 7
    out = json.loads(result.stdout)
    assert out["outcome"] == "error" and out["check"] == "crl-number" and out["exit_code"] == 7


def test_unreachable_ca_leaves_the_installed_crl_in_place(master, ca):
    before = install(master, ca_signer(ca).crl(3))
    result = master.sync(f"https://127.0.0.1:{free_port()}")
    assert result.exit_code == 6, result.output
    assert "cannot reach" in result.output
    assert untouched(master, before)


def test_http_error_from_the_ca_is_exit_6(master, fake_ca, ca):
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.status, fake_ca.body = 503, b"busy"
    result = master.sync(fake_ca.url)
    assert result.exit_code == 6 and "HTTP 503" in result.output
    assert untouched(master, before)


def test_stale_installed_crl_and_no_fresh_one_is_exit_8(master, ca):
    before = install(
        master,
        ca_signer(ca).crl(
            3,
            this_update=NOW - dt.timedelta(days=6, hours=20),
            next_update=NOW + dt.timedelta(hours=4),
        ),
    )
    result = master.sync(f"https://127.0.0.1:{free_port()}")
    assert result.exit_code == 8, result.output
    assert "expires at" in result.output and "cannot reach" in result.output
    assert untouched(master, before)


def test_expired_installed_crl_is_reported_as_an_outage(master, fake_ca, ca):
    expired = ca_signer(ca).crl(
        3, this_update=NOW - dt.timedelta(days=9), next_update=NOW - dt.timedelta(days=2)
    )
    install(master, expired)
    fake_ca.body = expired  # the CA itself is not re-issuing
    result = master.sync(fake_ca.url)
    assert result.exit_code == 8, result.output
    assert "EXPIRED" in result.output and "refuses every agent" in result.output


def test_new_crl_that_itself_expires_soon_is_installed_but_warned_about(master, fake_ca, ca):
    fake_ca.body = ca_signer(ca).crl(
        4, this_update=NOW - dt.timedelta(days=6, hours=20), next_update=NOW + dt.timedelta(hours=4)
    )
    result = master.sync(fake_ca.url)
    assert result.exit_code == 8, result.output
    assert master.crl.read_bytes() == fake_ca.body
    assert "splitca crl refresh" in result.output


def test_failed_reload_is_exit_9_and_retried_next_time(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    failing = master.sync(fake_ca.url, "--reload-command", "sh -c 'echo nope >&2; exit 3'")
    assert failing.exit_code == 9, failing.output
    assert "exited with 3: nope" in failing.output
    assert master.crl.read_bytes() == ca.crl_pem()
    retry = master.sync(fake_ca.url)
    assert retry.exit_code == Outcome.CRL_UPDATED, retry.output
    assert master.reload_count() == 1


def test_a_reload_command_that_leaves_a_child_behind_is_done_when_it_exits(master, fake_ca, ca):
    """A reload command that starts something in the background and exits 0 (a script
    ending in `... &`) is done when it exits: the child holding its output open made
    the wait for that output last --reload-timeout, then exit 9, and again every run."""
    fake_ca.body = ca.crl_pem()
    command = f"sh -c 'echo reload >> {master.reloads}; sleep 20 &'"
    args = ("--reload-command", command, "--reload-timeout", "5")
    result = master.sync(fake_ca.url, *args)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.reload_count() == 1
    assert master.sync(fake_ca.url, *args).exit_code == Outcome.CRL_UNCHANGED


def test_a_gzipped_crl_is_installed_decoded(master, fake_ca, ca):
    """What a CA behind Apache's mod_deflate (Debian's default) sends."""
    import gzip

    fake_ca.body, fake_ca.encoding = gzip.compress(ca.crl_pem()), "gzip"
    result = master.sync(fake_ca.url)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.crl.read_bytes() == ca.crl_pem()
    assert fake_ca.requests[0][1]["Accept-Encoding"] == "gzip, deflate"


def test_a_gzip_bomb_is_refused_as_size_and_the_installed_file_is_untouched(master, fake_ca, ca):
    import zlib

    before = install(master, ca_signer(ca).crl(3))
    obj = zlib.compressobj(9, zlib.DEFLATED, 31)
    fake_ca.body = b"".join(obj.compress(b"\0" * (1 << 20)) for _ in range(32)) + obj.flush()
    fake_ca.encoding = "gzip"
    result = master.sync(fake_ca.url, "--max-bytes", str(1024 * 1024))
    assert result.exit_code == 7, result.output
    assert "CRL rejected (size)" in result.output and "decodes (gzip)" in result.output
    assert untouched(master, before)


def test_force_reload_reloads_a_current_crl(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UPDATED
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED
    assert master.reload_count() == 1
    forced = master.sync(fake_ca.url, "--force-reload", "--format", "json")
    assert forced.exit_code == Outcome.CRL_UPDATED, forced.output
    assert '"reloaded":true' in forced.output and '"changed":[]' in forced.output
    assert master.reload_count() == 2
    assert "reloaded (--force-reload)" in master.sync(fake_ca.url, "--force-reload").output
    assert master.reload_count() == 3
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED
    refused = master.sync(fake_ca.url, "--force-reload", "--no-reload")
    assert refused.exit_code == 2 and "--force-reload" in refused.output


def test_a_304_to_a_request_that_was_not_conditional_is_an_error(master, fake_ca, ca):
    """--force-reload (like a pending reload) fetches without If-Modified-Since, so a 304
    says nothing about what is installed: it is not "current; nothing changed" (exit 0,
    and the reload asked for silently skipped) but an error, the installed CRL kept."""
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.status, fake_ca.body = 304, b""
    result = master.sync(fake_ca.url, "--force-reload")
    assert "If-Modified-Since" not in fake_ca.requests[-1][1]
    assert result.exit_code == 6, result.output
    assert "answered HTTP 304" in result.output
    assert master.reload_count() == 0
    assert untouched(master, before)


def test_an_apache_reload_command_without_a_pidfile_is_warned_about(
    master, fake_ca, ca, tmp_path, caplog
):
    """Exit 0 of `apachectl graceful` may mean it started a stopped system Apache: say so."""
    apachectl = tmp_path / "bin" / "apachectl"
    apachectl.parent.mkdir()
    apachectl.write_text(f"#!/bin/sh\necho reload >> {master.reloads}\n")
    apachectl.chmod(0o755)
    fake_ca.body = ca.crl_pem()
    with caplog.at_level(logging.WARNING):
        result = master.sync(fake_ca.url, "--reload-command", f"{apachectl} graceful")
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert "cannot be confirmed without --apache-pidfile" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        master.sync(fake_ca.url, "--force-reload")  # the fixture's own `sh -c` command
    assert "cannot be confirmed" not in caplog.text


def test_no_reload_while_the_apache_in_the_pidfile_is_not_running(master, fake_ca, ca):
    """A reload command like `apachectl graceful` would start a stopped Apache and
    succeed: with --apache-pidfile it is not run, the reload stays pending, and the next
    run does it even though the CRL did not change."""
    fake_ca.body = ca.crl_pem()
    pidfile = master.root / "httpd.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    for content, why in [(None, "it does not exist"), (f"{dead.pid}\n", "is not running")]:
        if content is not None:
            pidfile.write_text(content)
        result = master.sync(fake_ca.url, "--apache-pidfile", str(pidfile))
        assert result.exit_code == 9, result.output
        assert "Apache is not running" in result.output and why in result.output
        assert "still pending" in result.output
        assert master.reload_count() == 0  # the command never ran
        assert master.crl.read_bytes() == ca.crl_pem()  # the CRL itself is installed
    retry = master.sync(fake_ca.url)
    assert retry.exit_code == Outcome.CRL_UPDATED, retry.output
    assert "not loaded; reloaded" in retry.output
    assert master.reload_count() == 1
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED


def test_a_reload_the_running_apache_does_not_act_on_is_not_recorded(master, fake_ca, ca):
    """The command exits 0, but the process in the PidFile never re-reads its
    configuration (the command reloaded some other server): exit 9, retried next run."""
    fake_ca.body = ca.crl_pem()
    pidfile = master.root / "httpd.pid"
    alive = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{alive.pid}\n")
        args = ("--apache-pidfile", str(pidfile), "--reload-timeout", "1")
        result = master.sync(fake_ca.url, *args)
        assert result.exit_code == 9, result.output
        assert "did not re-read its configuration within 1s" in result.output
        assert master.reload_count() == 1  # it ran, but is not counted as done
        again = master.sync(fake_ca.url, *args)
        assert again.exit_code == 9, again.output
        assert master.reload_count() == 2
    finally:
        alive.kill()
        alive.wait()


def test_a_hostile_answer_of_unterminated_pem_markers_is_refused_quickly(master, fake_ca, ca):
    """256 KB of '-----BEGIN A-----' lines: the backreferencing PEM regex took 29 s on
    this, past any --timeout. Parsing is linear: refused as parse, well within it."""
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = b"-----BEGIN A-----\n" * (256 * 1024 // 18)
    started = time.monotonic()
    result = master.sync(fake_ca.url)
    elapsed = time.monotonic() - started
    assert result.exit_code == 7, result.output
    assert "CRL rejected (parse)" in result.output
    assert untouched(master, before)
    assert elapsed < 5, elapsed  # generous: the quadratic parser takes ~30 s


def test_timeout_covers_parsing_and_verifying_the_answer(master, fake_ca, ca, monkeypatch):
    """--timeout bounds the whole answer, not only its download: a CRL whose checks end
    after the deadline is not installed (exit 6, the installed CRL kept)."""
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = ca_signer(ca).crl(4)
    real = crlsync.verify_crl

    def slow_verify(*args: Any, **kw: Any) -> crlsync.VerifiedCRL:
        time.sleep(1.5)  # as a slow parse of a hostile answer would
        return real(*args, **kw)

    monkeypatch.setattr(crlsync, "verify_crl", slow_verify)
    result = master.sync(fake_ca.url, "--timeout", "1")
    assert result.exit_code == 6, result.output
    assert "took longer than --timeout 1s; nothing was installed" in result.output
    assert untouched(master, before)
    assert master.reload_count() == 0
    monkeypatch.setattr(crlsync, "verify_crl", real)
    assert master.sync(fake_ca.url, "--timeout", "1").exit_code == Outcome.CRL_UPDATED


def test_the_environment_cannot_change_what_is_trusted(master, ca, tmp_path):
    """A CA server with a certificate from another CA is refused even when
    REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE/SSL_CERT_FILE point at that CA."""
    other = trustme.CA()
    bundle = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(bundle))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("127.0.0.1").configure_cert(ctx)
    before = install(master, ca_signer(ca).crl(3))
    fake = FakeCA(free_port(), body=ca_signer(ca).crl(4))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", fake.port), _fake_ca_handler(fake))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        env = {
            "REQUESTS_CA_BUNDLE": str(bundle),
            "CURL_CA_BUNDLE": str(bundle),
            "SSL_CERT_FILE": str(bundle),
        }
        result = master.sync(fake.url, env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 6, result.output
    assert "TLS with" in result.output
    assert untouched(master, before)
    assert fake.requests == []  # the handshake failed before any request was sent


def test_client_certificate_and_legacy_path(master, fake_ca, ca, ca_server_identity):
    ident = ca_server_identity
    fake_ca.body = ca.crl_pem()
    result = master.sync(
        fake_ca.url,
        "--client-cert", str(ident.cert),
        "--client-key", str(ident.key),
        "--legacy-environment", "production",
    )  # fmt: skip
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    path, _, had_cert = fake_ca.requests[-1]
    assert path == "/production/certificate_revocation_list/ca"
    assert had_cert


def test_conditional_get_uses_a_strong_last_modified(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    fake_ca.last_modified = email.utils.format_datetime(NOW - dt.timedelta(hours=1), usegmt=True)
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UPDATED
    assert "If-Modified-Since" not in fake_ca.requests[-1][1]
    again = master.sync(fake_ca.url)
    assert again.exit_code == Outcome.CRL_UNCHANGED, again.output
    assert fake_ca.requests[-1][1]["If-Modified-Since"] == fake_ca.last_modified
    # Someone replaced the installed file: fetch it all again rather than trust a 304.
    master.crl.write_bytes(b"tampered")
    third = master.sync(fake_ca.url)
    assert "If-Modified-Since" not in fake_ca.requests[-1][1]
    assert third.exit_code == Outcome.CRL_UPDATED and master.crl.read_bytes() == ca.crl_pem()


def test_a_stale_installed_crl_is_fetched_whole_not_conditionally(master, fake_ca, ca):
    """The CA's Last-Modified is its CRL file's mtime: after its clock stepped back (or a
    file restored with an old mtime, or HA nodes whose clocks differ) it answers 304 while
    it holds a newer CRL. While the installed CRL is fresh that costs a delay; once it nears
    its nextUpdate it must not cost the outage: the whole CRL is fetched then."""
    signer = ca_signer(ca)
    fake_ca.last_modified = email.utils.format_datetime(NOW - dt.timedelta(hours=1), usegmt=True)
    fake_ca.body = signer.crl(
        5, this_update=NOW - dt.timedelta(days=6), next_update=NOW + dt.timedelta(hours=12)
    )
    assert master.sync(fake_ca.url).exit_code == 8  # installed, but in its last quarter
    fresh = fake_ca.body = signer.crl(6)  # re-issued; the CA's Last-Modified did not move
    result = master.sync(fake_ca.url)
    assert "If-Modified-Since" not in fake_ca.requests[-1][1]
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.crl.read_bytes() == fresh
    # Fresh again: conditional, as before.
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED
    assert fake_ca.requests[-1][1]["If-Modified-Since"] == fake_ca.last_modified


def test_allow_rollback_fetches_the_whole_crl(master, fake_ca, ca):
    """A CA restored from a backup may keep its old CRL's mtime (cp -a, tar, rsync -a), so
    it answers If-Modified-Since with 304: --allow-rollback must still get and install the
    CA's (lower-numbered) CRL, not report the installed one as current."""
    signer = ca_signer(ca)
    fake_ca.body = signer.crl(5)
    fake_ca.last_modified = email.utils.format_datetime(NOW - dt.timedelta(hours=1), usegmt=True)
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UPDATED
    restored = fake_ca.body = signer.crl(2)  # the restored CA's, Last-Modified unchanged
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED  # a 304, as it should
    result = master.sync(fake_ca.url, "--allow-rollback")
    assert "If-Modified-Since" not in fake_ca.requests[-1][1]
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert "Installed CRL number 2" in result.output
    assert master.crl.read_bytes() == restored


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ca-url", "http://ca:8140"], "must start with https://"),
        (["--client-cert", "/x.pem"], "go together"),
        (["--timeout", "0"], "--timeout"),
        (["--legacy-environment", "prod/../x"], "--legacy-environment"),
        (["--warn-before", "soon"], "--warn-before"),
    ],
)
def test_bad_arguments_are_exit_2(master, fake_ca, args, message):
    result = master.sync(fake_ca.url, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unreadable_pinned_ca_is_exit_2(master, fake_ca):
    master.cacert.write_text("not a certificate")
    result = master.sync(fake_ca.url)
    assert result.exit_code == 2 and "--ca-cert" in result.output


def test_a_fatal_error_under_watch_is_reported_in_the_json_of_every_run(master, fake_ca):
    """--watch --format json prints one object per run with its outcome; the error that
    ends the watch (an unreadable --ca-cert) is one of them, not another shape."""
    master.cacert.write_text("not a certificate")
    result = master.sync(fake_ca.url, "--watch", "1s", "--format", "json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["outcome"] == "error" and report["exit_code"] == 2
    assert "--ca-cert" in report["error"]


# --- --watch as a real process ---------------------------------------------------------------------


def test_watch_keeps_syncing_until_sigterm(master, fake_ca, ca):
    fake_ca.body = ca.crl_pem()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "splitca", "sync-crl",
            "--ca-url", fake_ca.url,
            "--ca-cert", str(master.cacert),
            "--dest", str(master.crl),
            "--no-reload",
            "--watch", "1s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not master.crl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert master.crl.read_bytes() == ca.crl_pem()
        newer = ca_signer(ca).crl(7)
        fake_ca.body = newer
        while master.crl.read_bytes() != newer and time.monotonic() < deadline:
            time.sleep(0.05)
        assert master.crl.read_bytes() == newer
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Installed CRL number 0" in out and "Installed CRL number 7" in out


# --- CRLs cryptography refuses with something other than ValueError ----------------------------------


def _children(der: bytes, start: int, end: int) -> list[bytes]:
    out, pos = [], start
    while pos < end:
        _, _, stop = asn1._read(der, pos)
        out.append(der[pos:stop])
        pos = stop
    return out


def with_duplicate_extension(signer: Signer, number: int) -> bytes:
    """A CRL correctly signed by *signer* that carries its CRLNumber extension twice (the
    second saying 999). cryptography's builder refuses duplicates, so the TBSCertList is
    rebuilt from DER and signed again; cryptography then raises DuplicateExtension (not a
    ValueError) when the extensions are read."""
    crl = x509.load_pem_x509_crl(signer.crl(number))
    tbs = crl.tbs_certlist_bytes
    _, start, end = asn1._read(tbs, 0)
    fields = _children(tbs, start, end)
    assert fields[-1][0] == 0xA0  # [0] crlExtensions
    _, start, end = asn1._read(fields[-1], 0)
    seq = fields[-1][start:end]
    _, start, end = asn1._read(seq, 0)
    extra = asn1.tlv(0x30, asn1._OID_CRL_NUMBER + asn1.tlv(0x04, asn1.integer(999)))
    exts = [*_children(seq, start, end), extra]
    tbs = asn1.tlv(0x30, b"".join(fields[:-1]) + asn1.tlv(0xA0, asn1.tlv(0x30, b"".join(exts))))
    der = crl.public_bytes(serialization.Encoding.DER)
    _, start, end = asn1._read(der, 0)
    algorithm = _children(der, start, end)[1]
    assert isinstance(signer.key, rsa.RSAPrivateKey) and crl.signature_hash_algorithm
    signature = signer.key.sign(tbs, padding.PKCS1v15(), crl.signature_hash_algorithm)
    out = asn1.pem_crl(asn1.finish_crl(tbs, algorithm, signature))
    probe = x509.load_pem_x509_crl(out)
    assert probe.is_signature_valid(signer.cert.public_key())  # type: ignore[arg-type]
    with pytest.raises(x509.DuplicateExtension):
        probe.extensions  # noqa: B018
    return out


def test_a_crl_with_a_duplicated_extension_is_refused_as_parse(signer):
    bad = with_duplicate_extension(signer, 5)
    assert reject(bad, [signer.cert]) == "parse"
    # as an installed file it is no CRL at all: no crash, stale, and no rollback floor
    assert crlsync.trusted_crls(bad, [signer.cert]) == {}
    assert crlsync.installed_state(bad, [signer.cert], warn_before=None).stale(NOW)
    good = crlsync.verify_crl(signer.crl(2), [signer.cert], now=NOW, installed=[bad])
    assert good.number == 2


def test_sync_refuses_a_crl_with_a_duplicated_extension(master, fake_ca, ca):
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = with_duplicate_extension(ca_signer(ca), 4)
    result = master.sync(fake_ca.url)
    assert result.exit_code == 7, result.output
    assert "CRL rejected (parse)" in result.output and "DuplicateExtension" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert untouched(master, before)
    assert master.reload_count() == 0


def test_a_good_crl_replaces_an_installed_one_that_does_not_parse(master, fake_ca, ca, caplog):
    """Documented choice: an installed file cryptography cannot parse holds no usable CRL
    (Apache cannot load it either), so a fully verified CRL from the CA replaces it; the
    file is named in one warning line."""
    install(master, with_duplicate_extension(ca_signer(ca), 9))
    fake_ca.body = ca_signer(ca).crl(4)
    with caplog.at_level(logging.WARNING, logger="splitca.crlsync"):
        result = master.sync(fake_ca.url)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.crl.read_bytes() == fake_ca.body
    assert master.reload_count() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(master.crl) in warnings[0]
    assert "DuplicateExtension" in warnings[0] and "\n" not in warnings[0]


def test_an_installed_crl_that_does_not_parse_and_no_ca_is_stale_not_a_crash(master, ca):
    before = install(master, with_duplicate_extension(ca_signer(ca), 9))
    result = master.sync(f"https://127.0.0.1:{free_port()}")
    assert result.exit_code == 8, result.output
    assert "no valid CRL from the pinned CA is installed" in result.output
    assert "Traceback" not in result.output
    assert untouched(master, before)


def test_watch_survives_a_crl_with_a_duplicated_extension(master, fake_ca, ca):
    before = install(master, ca_signer(ca).crl(3))
    fake_ca.body = with_duplicate_extension(ca_signer(ca), 4)
    cfg = crlsync.SyncConfig(
        ca_url=fake_ca.url,
        ca_cert=master.cacert,
        destinations=(master.crl,),
        reload_command=(),
        timeout=10,
    )
    stop = threading.Event()
    reports: list[object] = []

    def report(r: object) -> None:
        reports.append(r)
        if len(reports) == 2:
            stop.set()

    crlsync.watch(cfg, 0.01, stop=stop, report=report)
    assert len(reports) == 2
    assert all(isinstance(r, CRLRejected) and r.check == "parse" for r in reports), reports
    assert untouched(master, before)


# --- the documentation says what the code does -------------------------------------------------------


def test_documented_exit_codes_and_checks_match_the_code():
    from splitca.cli._base import EXIT_CODES
    from splitca.errors import ConfigError, CRLStale, ReloadFailed, RemoteError, StoreError

    codes = dict(EXIT_CODES)
    assert (codes[ConfigError], codes[StoreError], codes[RemoteError]) == (2, 5, 6)
    assert (codes[CRLRejected], codes[CRLStale], codes[ReloadFailed]) == (7, 8, 9)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "split-ca.md").read_text()
    for code in (Outcome.CRL_UNCHANGED, Outcome.CRL_UPDATED, 2, 5, 6, 7, 8, 9):
        assert f"\n| {code} |" in doc, code
    for check in crlsync.CHECKS:
        assert re.search(rf"^\s*\| `{check}` \|", doc, re.MULTILINE), check
    help_text = CliRunner().invoke(cli, ["sync-crl", "--help"]).output
    for code in (0, 10, 6, 7, 8, 9):
        assert f"  {code} " in help_text


# --- a chain: the CRLs of the CAs above the signing one (the root's) ----------------------------------


def test_the_roots_crl_nearing_next_update_is_a_warning_and_the_signing_cas_is_exit_8(
    master, fake_ca, ca
):
    """The root's CRL is re-issued by hand, so its last quarter warns (naming what to run);
    the signing CA's own CRL going stale still means the CA is failing: exit 8."""
    root = make_signer("Example Root CA")
    master.cacert.write_bytes(ca.ca_certificate_pem() + pki.pem(root.cert))
    root_crl = root.crl(
        2, this_update=NOW - dt.timedelta(days=345), next_update=NOW + dt.timedelta(days=20)
    )
    fake_ca.body = ca_signer(ca).crl(5) + root_crl
    done = master.sync(fake_ca.url)
    assert done.exit_code == Outcome.CRL_UPDATED, done.output
    assert "Warning: the CRL of the CA 'CN=Example Root CA' (number 2) expires at" in done.output
    assert "splitca ca root-crl" in done.output and "splitca crl install-root" in done.output
    assert master.crl.read_bytes() == fake_ca.body
    again = master.sync(fake_ca.url, "--format", "json")
    report = json.loads(again.stdout)
    assert report["exit_code"] == Outcome.CRL_UNCHANGED and len(report["warnings"]) == 1
    # A root CRL with plenty of time left: no warning.
    fake_ca.body = ca_signer(ca).crl(6) + root.crl(3)
    quiet = master.sync(fake_ca.url)
    assert quiet.exit_code == Outcome.CRL_UPDATED and "Warning" not in quiet.output
    # A root CRL that is not signed by the pinned root is refused whatever its freshness.
    forger = make_signer("Example Root CA")
    fake_ca.body = ca_signer(ca).crl(7) + forger.crl(9)
    done = master.sync(fake_ca.url)
    assert done.exit_code == 7 and "signature" in done.output
    # The signing CA's CRL in its last quarter: stale (exit 8), as for a flat CA.
    stale = ca_signer(ca).crl(
        8, this_update=NOW - dt.timedelta(days=6), next_update=NOW + dt.timedelta(days=1)
    )
    fake_ca.body = stale + root.crl(4)
    done = master.sync(fake_ca.url)
    assert done.exit_code == 8, done.output


# --- the file Apache reads: the verified CRLs, never the answer's PEM armor ----------------------------


def _armored(crl_pem: bytes) -> dict[str, bytes]:
    """The same signed CRL in PEM armor that cryptography reads but OpenSSL's file loader
    (what mod_ssl's SSLCARevocationFile uses) does not: the armor is not signed."""
    lines = crl_pem.splitlines(keepends=True)
    begin, body, end = lines[0], b"".join(lines[1:-1]), lines[-1]
    return {
        "indented": b"  " + crl_pem,
        "form-feed-first": b"\x0c" + crl_pem,
        "end-marker-mid-line": begin + body.rstrip(b"\n") + end,
        "tab-before-end": begin + body + b"\t" + end,
        "pem-header": begin + b"Comment: from the CA\n\n" + body + end,
    }


def openssl_crls(path: Path) -> int:
    """How many CRLs OpenSSL's file loader finds in *path* (raises if it cannot load it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(path))  # X509_STORE_load_file, as mod_ssl
    return ctx.cert_store_stats()["crl"]


@pytest.mark.parametrize("armor", sorted(_armored(b"-\n-\n-\n")))
def test_the_installed_file_is_the_verified_crl_as_openssl_reads_it(master, fake_ca, ca, armor):
    """An answer whose CRL verifies but whose armor OpenSSL refuses must not become a file
    Apache cannot load (a graceful restart with it kills Apache): what is installed is the
    verified CRL itself, in the PEM every reader reads alike."""
    good = ca_signer(ca).crl(4, serials=(17,))
    fake_ca.body = _armored(good)[armor]
    result = master.sync(fake_ca.url)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output
    assert master.crl.read_bytes() == good
    assert openssl_crls(master.crl) == 1
    assert master.sync(fake_ca.url).exit_code == Outcome.CRL_UNCHANGED  # nothing to rewrite


@pytest.fixture(scope="module")
def stack(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MasterStack]:
    """A real Apache compile master (the vhost `apache-config` renders) on the module's CA;
    the tests using it install CRLs only forward (each a higher number)."""
    backend = start_backend()
    try:
        built = build_master_stack(ca, tmp_path_factory.mktemp("stack"), backend)
    except BaseException:
        backend.stop()
        raise
    yield built
    stop_apache(built.apache)
    backend.stop()


def sync_into(stack: MasterStack, fake_ca: FakeCA) -> Result:
    """`splitca sync-crl` into the stack's CRL file, reloading (and confirming) its Apache."""
    return CliRunner().invoke(
        cli,
        [
            "sync-crl",
            "--ca-url", fake_ca.url,
            "--ca-cert", str(stack.master.cacert),
            "--dest", str(stack.crl),
            "--reload-command", " ".join(stack.apache.graceful_command),
            "--apache-pidfile", str(stack.apache.root / "httpd.pid"),
            "--timeout", "10",
        ],
    )  # fmt: skip


@pytest.mark.interop
def test_real_apache_survives_an_oddly_armored_crl_and_refuses_the_revoked_agent(
    stack, fake_ca, ca
):
    """The whole path on a real Apache: the CA's answer holds the right CRL in indented
    armor (OpenSSL's loader skips an indented BEGIN line). sync-crl installs and reloads;
    Apache must keep running, refuse the revoked agent and let the other one through."""
    revoked, other = stack.agent("gone.example.com"), stack.agent("kept.example.com")
    assert not stack.refuses(revoked) and not stack.refuses(other)
    crl = ca_signer(ca).crl(9, serials=(revoked.certificate.serial_number,))
    fake_ca.body = _armored(crl)["indented"]
    result = sync_into(stack, fake_ca)
    assert result.exit_code == Outcome.CRL_UPDATED, result.output + stack.apache.output()
    assert stack.apache.proc is not None and stack.apache.proc.poll() is None
    assert stack.refuses(revoked)
    assert not stack.refuses(other)


@pytest.mark.interop
def test_a_crl_dated_ahead_of_this_hosts_clock_is_not_installed(stack, fake_ca, ca):
    """Apache (OpenSSL) refuses every agent while its CRL's thisUpdate is in the future,
    with no allowance for skew: a CRL from a CA whose clock is ahead of this master's is
    kept out until this clock reaches it (a later run installs it), never installed to
    lock every agent out meanwhile."""
    agent = stack.agent("on-time.example.com")
    before = stack.crl.read_bytes()
    fake_ca.body = ca_signer(ca).crl(50, this_update=NOW + dt.timedelta(minutes=3))
    result = sync_into(stack, fake_ca)
    assert result.exit_code == 7, result.output
    assert "CRL rejected (not-yet-valid)" in result.output and "clock" in result.output
    assert stack.crl.read_bytes() == before
    assert not stack.refuses(agent)
