"""The redeemed-token ledger: one exclusive, explicitly-moded, durable file per used token."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitca import fs
from splitca.enrollment.autosign import RedeemedLedger

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TOKEN = "ab" * 32


@pytest.fixture
def fsynced_dirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Records the directories the ledger fsyncs, still fsyncing them for real.

    Durability itself cannot be tested without cutting the power; what can be checked is
    that the directory holding the new entry is fsynced before claim() returns True (the
    file's own fsync does not make its name durable)."""
    seen: list[Path] = []
    real = fs.fsync_dir

    def spy(path: Path) -> None:
        seen.append(Path(path))
        real(path)

    monkeypatch.setattr(fs, "fsync_dir", spy)
    yield seen


@pytest.fixture
def narrow_umask() -> Iterator[None]:
    old = os.umask(0o400)  # would leave a file created 0600 as 0200, a directory 0700 as 0300
    try:
        yield
    finally:
        os.umask(old)


def test_claim_creates_one_durable_entry_with_an_explicit_mode(
    tmp_path: Path, fsynced_dirs: list[Path], narrow_umask: None
) -> None:
    root = tmp_path / "cadir" / ".splitca" / "redeemed-tokens"
    ledger = RedeemedLedger(root)
    assert ledger.claim(TOKEN, "h1.example.com", NOW)
    entry = root / TOKEN
    assert json.loads(entry.read_text()) == {"certname": "h1.example.com", "time": NOW.isoformat()}
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert root in fsynced_dirs  # the entry's name
    assert root.parent in fsynced_dirs  # the ledger directory, made by this first claim
    # used once: every later claim, however it races, is refused and changes nothing
    before = entry.read_bytes()
    assert not ledger.claim(TOKEN, "h2.example.com", NOW)
    assert entry.read_bytes() == before


def test_concurrent_claims_of_one_token_have_one_winner(tmp_path: Path) -> None:
    ledger = RedeemedLedger(tmp_path / "ledger")
    start = threading.Barrier(16)
    wins: list[bool] = []

    def claim(i: int) -> None:
        start.wait()
        wins.append(ledger.claim(TOKEN, f"h{i}.example.com", NOW))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == [False] * 15 + [True]


def test_a_symlink_planted_as_an_entry_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    root.mkdir()
    target = tmp_path / "elsewhere"
    (root / TOKEN).symlink_to(target)
    assert not RedeemedLedger(root).claim(TOKEN, "h1.example.com", NOW)
    assert not target.exists()
