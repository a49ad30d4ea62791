"""The audit log file: one descriptor kept open between events, yet a rotated, removed or
truncated log is picked up at the next event, a planted symlink is never followed, a failed
write reopens, threads and forked processes never interleave, and nothing is leaked."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from splitca import pki
from splitca.compose import open_ca
from splitca.config import Settings
from splitca.core.audit import SYSTEM
from splitca.store.files import audit as audit_module
from splitca.store.files.audit import AuditLog

from .conftest import make_csr, setup_ca
from .test_faults_disk import _fill, tiny_fs  # noqa: F401 - tiny_fs is a fixture


def events(path: Path) -> list[str]:
    """The event names of *path*'s lines (each line must be one whole JSON record)."""
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the audit log opens, in order."""
    seen: list[str] = []
    real = audit_module.open_nofollow

    def counting(path: os.PathLike[str] | str, flags: int, mode: int = 0o600) -> int:
        seen.append(os.fspath(path))
        return real(path, flags, mode)

    monkeypatch.setattr(audit_module, "open_nofollow", counting)
    return seen


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit.log")
    try:
        yield audit
    finally:
        audit.close()


# --- one open, not one per event ----------------------------------------------------------------


def test_events_share_one_open_descriptor(log: AuditLog, opens: list[str]) -> None:
    for name in ("csr-received", "autosign-decision", "sign"):
        assert log.event(name, certname="a.example.com")
    assert log.events("revoke", SYSTEM, [{"serial": 2}, {"serial": 3}])
    assert opens == [str(log.path)]
    assert log.path is not None
    assert events(log.path) == ["csr-received", "autosign-decision", "sign", "revoke", "revoke"]


def test_an_autosigned_enrollment_opens_the_audit_log_once(
    settings: Settings, opens: list[str]
) -> None:
    s = settings.replace(autosign=True)
    setup_ca(s)
    ca = open_ca(s, autosign_at_start=False)
    try:
        for name in ("one.example.com", "two.example.com"):
            ca.submit_csr(name, pki.pem(make_csr(name)))
            assert ca.certificate_pem(name)
    finally:
        ca.close()
    enrollment = ["csr-received", "autosign-decision", "sign"]
    assert events(s.effective_audit_log)[-6:] == enrollment * 2
    assert opens.count(str(s.effective_audit_log)) == 1  # not once per event


# --- rotation: the next event goes to a new file at the path ------------------------------------


@pytest.mark.parametrize("rotate", ["rename", "rename and create", "remove"])
def test_a_rotated_log_is_picked_up_at_the_next_event(
    tmp_path: Path, log: AuditLog, umask022: None, rotate: str
) -> None:
    path = tmp_path / "audit.log"
    assert log.event("before")
    old = tmp_path / "audit.log.1"
    if rotate.startswith("rename"):
        path.rename(old)
        if rotate == "rename and create":  # logrotate's `create 0640`: a new empty file at once
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
    else:
        shutil.copyfile(path, old)
        path.unlink()
    assert log.event("after")
    assert log.event("later")
    assert events(path) == ["after", "later"]
    assert stat.S_IMODE(path.lstat().st_mode) == 0o640
    assert events(old) == ["before"]  # the old file gets nothing more


def test_copytruncate_rotation_keeps_working(tmp_path: Path, log: AuditLog) -> None:
    path = tmp_path / "audit.log"
    assert log.event("before")
    shutil.copyfile(path, tmp_path / "audit.log.1")
    os.truncate(path, 0)
    assert log.event("after")
    assert b"\0" not in path.read_bytes()  # appended at the new end, not at the old offset
    assert events(path) == ["after"]
    assert events(tmp_path / "audit.log.1") == ["before"]


# --- never through a symbolic link --------------------------------------------------------------


@pytest.mark.parametrize("points_at", ["victim", "the open log"])
def test_a_log_replaced_by_a_symlink_is_not_followed(
    tmp_path: Path, log: AuditLog, caplog: pytest.LogCaptureFixture, points_at: str
) -> None:
    path = tmp_path / "audit.log"
    assert log.event("before")
    path.rename(tmp_path / "audit.log.1")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep\n")
    path.symlink_to(victim if points_at == "victim" else tmp_path / "audit.log.1")
    with caplog.at_level(logging.ERROR):
        assert log.event("sign", certname="x") is False
        assert log.event("sign", certname="y") is False
    assert "symbolic link" in caplog.text and "'sign' not recorded" in caplog.text
    assert victim.read_bytes() == b"keep\n"
    assert events(tmp_path / "audit.log.1") == ["before"]
    path.unlink()  # the operator removes the link: the log is written again
    assert log.event("after")
    assert events(path) == ["after"]


@pytest.mark.parametrize("reader", [False, True])
def test_a_fifo_planted_as_the_log_is_refused_not_waited_on(
    settings: Settings, caplog: pytest.LogCaptureFixture, reader: bool
) -> None:
    """Opening a FIFO for writing waits for a reader: a FIFO planted in place of audit.log
    hung the revoke that wrote its ``crl-published`` event (inside the index transaction,
    so every other signing and revocation queued behind it, for ever). The events are
    refused (logged, as any failed audit write) and the operations go on; with a reader
    attached to the FIFO (someone collecting the log elsewhere) nothing is sent to it."""
    setup_ca(settings)
    ca = open_ca(settings, autosign_at_start=False)
    ca.generate("victim.example.com")
    path = settings.cadir / "audit.log"
    path.unlink()
    os.mkfifo(path, 0o600)
    held = os.open(path, os.O_RDONLY | os.O_NONBLOCK) if reader else None
    outcome: list[object] = []

    def act() -> None:
        try:
            ca.revoke(["victim.example.com"])
            ca.generate("after-the-fifo.example.com")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with caplog.at_level(logging.ERROR):
            actor = threading.Thread(target=act, daemon=True)
            actor.start()
            actor.join(20)
            if actor.is_alive():
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
                actor.join(10)
                pytest.fail("an audited operation blocked on a FIFO in place of audit.log")
        if held is not None:
            assert os.read(held, 4096) == b""  # nothing was written to the FIFO
    finally:
        if held is not None:
            os.close(held)
    assert outcome == [None]
    assert ca.status("victim.example.com").state == "revoked"  # type: ignore[union-attr]
    assert ca.status("after-the-fifo.example.com").state == "signed"  # type: ignore[union-attr]
    assert "'crl-published' not recorded" in caplog.text


# --- a failed write drops the descriptor --------------------------------------------------------


def test_a_write_on_a_full_disk_fails_alone_and_the_next_event_reopens(
    tiny_fs: Path,  # noqa: F811
    opens: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = AuditLog(tiny_fs / "audit.log")
    try:
        assert log.event("before")
        filler = _fill(tiny_fs, leave=0)
        with caplog.at_level(logging.ERROR):
            assert log.event("sign", certname="x", note="n" * 20000) is False
        assert "'sign' not recorded" in caplog.text
        filler.unlink()
        assert log.event("after")
        assert '"event":"after"' in (tiny_fs / "audit.log").read_text().splitlines()[-1]
        assert len(opens) == 2  # the failed write dropped the descriptor; once, not per event
    finally:
        log.close()


def test_a_descriptor_gone_bad_is_dropped_and_reopened(
    log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    assert log.event("before")
    assert log._fd is not None
    os.close(log._fd)  # as if something closed it under us: EBADF
    with caplog.at_level(logging.ERROR):
        assert log.event("lost") is False
    assert "'lost' not recorded" in caplog.text
    assert log.event("after")
    assert log.path is not None
    assert events(log.path) == ["before", "after"]


# --- threads and forked processes ---------------------------------------------------------------


def test_threads_never_interleave_lines(log: AuditLog) -> None:
    def write(n: int) -> None:
        for i in range(100):
            assert log.event("sign", certname=f"t{n}-{i}", pad="x" * 500)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.path is not None
    assert events(log.path) == ["sign"] * 400


def _in_child(work: Callable[[], bool]) -> int:
    """Fork; the child runs *work* (exit 0 if it returned True, killed after 10 s); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(10)  # bounded: a deadlocked child dies instead of hanging the test
            code = 0 if work() else 1
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_and_its_parent_share_the_log_without_interleaving(
    tmp_path: Path, log: AuditLog
) -> None:
    path = tmp_path / "audit.log"
    assert log.event("before")  # the descriptor is open when the child is forked

    def child() -> bool:
        return all(log.event("child", pad="c" * 700) for _ in range(200))

    pid = _in_child(child)
    parent = [log.event("parent", pad="p" * 700) for _ in range(200)]
    assert _exit_code(pid) == 0 and all(parent)
    lines = events(path)
    assert lines[0] == "before" and sorted(lines[1:]) == ["child"] * 200 + ["parent"] * 200


def test_after_a_fork_each_process_picks_up_a_rotation_on_its_own(
    tmp_path: Path, log: AuditLog
) -> None:
    path = tmp_path / "audit.log"
    assert log.event("before")
    go = os.pipe()

    def child() -> bool:
        os.close(go[1])
        os.read(go[0], 1)  # wait until the parent has rotated the log
        return log.event("child")

    pid = _in_child(child)
    os.close(go[0])
    path.rename(tmp_path / "audit.log.1")
    os.write(go[1], b"x")
    os.close(go[1])
    assert _exit_code(pid) == 0
    assert log.event("parent")
    assert sorted(events(path)) == ["child", "parent"]
    assert events(tmp_path / "audit.log.1") == ["before"]


def test_a_child_forked_while_another_thread_writes_is_not_deadlocked(log: AuditLog) -> None:
    assert log.event("before")
    with log._lock:  # another thread is mid-write when this one forks
        pid = _in_child(lambda: log.event("child"))
    assert _exit_code(pid) == 0
    assert log.path is not None
    assert events(log.path) == ["before", "child"]


# --- no leaked descriptors ----------------------------------------------------------------------


def test_close_releases_the_descriptor_and_the_log_stays_usable(tmp_path: Path) -> None:
    before = open_fds()
    log = AuditLog(tmp_path / "audit.log")
    assert log.event("one")
    assert len(open_fds() - before) == 1
    log.close()
    assert open_fds() == before
    assert log.event("two")
    log.close()
    log.close()  # twice is fine
    assert open_fds() == before
    assert events(tmp_path / "audit.log") == ["one", "two"]


def test_a_dropped_log_closes_its_descriptor(tmp_path: Path) -> None:
    before = open_fds()
    log = AuditLog(tmp_path / "audit.log")
    assert log.event("one")
    del log
    assert open_fds() == before
