"""The Apache reload after a new CRL: run the command (no shell) and confirm it through the pidfile."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from splitca.errors import (
    ReloadFailed,
)

log = logging.getLogger("splitca.crlsync")  # the name operators filter on


def run_reload(command: Sequence[str], timeout: float, pidfile: Path | None = None) -> None:
    """Run the reload command (no shell) and, with *pidfile*, confirm it took effect.

    With *pidfile* (the PidFile of the Apache that serves the CRL), the command is run
    only while that file names a running process: ``apachectl graceful`` *starts* a
    stopped Apache, which would report success while the server that matters kept its
    old CRL. After the command, the reload counts as done only once Apache re-read its
    configuration: it rewrites its PidFile for every new generation (and, where /proc
    shows it, has started a new child process for it).

    Raises:
      ReloadFailed: naming what went wrong; nothing is recorded, so the next run
        reloads again.
    """
    shown = shlex.join(command)
    deadline = time.monotonic() + timeout
    before = None
    if pidfile is not None:
        before = _running(pidfile)
    # Its output goes to files, not pipes: a child it leaves running (a script ending in
    # `... &`) keeps them open, and waiting for a pipe's end would wait for that child.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        returncode = _run(command, shown, timeout, out, err)
        if returncode != 0:  # its last line of output says why
            detail = (_tail(err) or _tail(out)).decode("utf-8", "replace").strip().splitlines()
            why = f": {detail[-1][:200]}" if detail else ""
            raise ReloadFailed(f"reload command {shown} exited with {returncode}{why}{_PENDING}")
    if pidfile is not None and before is not None:
        _confirm(pidfile, before, shown, timeout, deadline)


def _run(command: Sequence[str], shown: str, timeout: float, out: IO[bytes], err: IO[bytes]) -> int:
    """Run *command* (no shell) with its output to *out* and *err*; its exit status."""
    try:
        proc = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ReloadFailed(f"reload command not found: {shown}{_PENDING}") from None
    except subprocess.TimeoutExpired:
        raise ReloadFailed(
            f"reload command did not finish within {timeout:g}s: {shown}{_PENDING}"
        ) from None
    except OSError as exc:
        raise ReloadFailed(
            f"cannot run reload command {shown}: {exc.strerror or exc}{_PENDING}"
        ) from None
    return proc.returncode


def _tail(f: IO[bytes], size: int = 4096) -> bytes:
    """The last *size* bytes written to *f* (the end of a command's output)."""
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - size))
    return f.read(size)


_PENDING = "; the reload is still pending and the next run tries again"
_POLL = 0.05


@dataclass(frozen=True)
class _Apache:
    """A running Apache as its PidFile shows it."""

    pid: int
    stamp: tuple[int, int, int]  # the PidFile's inode, mtime and ctime
    children: frozenset[int]  # its child processes (empty without /proc)


def _read_pidfile(path: Path) -> tuple[int, tuple[int, int, int]] | None:
    try:
        st = os.stat(path)
        pid = int(path.read_bytes()[:32].strip())
    except (OSError, ValueError):
        return None
    return (pid, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)) if pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process (root's Apache): it exists
        pass
    except OSError:
        return False
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in ("Z", "X")  # a zombie has exited


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), if any."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _children(pid: int) -> frozenset[int]:
    """Processes whose parent is *pid* (empty where there is no /proc)."""
    out = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return frozenset()
    for name in entries:
        if name.isdigit():
            fields = _proc_stat(int(name))
            if fields is not None and len(fields) > 1 and fields[1] == str(pid):
                out.add(int(name))
    return frozenset(out)


def _running(pidfile: Path) -> _Apache:
    """The Apache behind *pidfile*, which must be running. Raises ReloadFailed if not."""
    found = _read_pidfile(pidfile)
    if found is None:
        why = "it does not exist" if not pidfile.exists() else "it holds no process id"
    elif not _alive(found[0]):
        why = f"process {found[0]} is not running"
    else:
        return _Apache(found[0], found[1], _children(found[0]))
    raise ReloadFailed(
        f"not reloading: Apache is not running (--apache-pidfile {pidfile}: {why}); "
        f"the reload command would start a server, not reload the one serving the CRL"
        f"{_PENDING}"
    )


def _confirm(pidfile: Path, before: _Apache, shown: str, timeout: float, deadline: float) -> None:
    """Wait (until *deadline*) for the Apache behind *pidfile* to finish reloading."""
    with_proc = os.path.isdir(f"/proc/{before.pid}")
    while True:
        found = _read_pidfile(pidfile)
        if found is not None and found[1] != before.stamp and _alive(found[0]):
            pid = found[0]
            if not with_proc or _children(pid) - before.children:
                log.info("Apache (pid %d) reloaded", pid)
                return
        elif not _alive(before.pid) and (found is None or not _alive(found[0])):
            raise ReloadFailed(
                f"Apache (pid {before.pid}, {pidfile}) exited during the reload by {shown}: "
                f"check its error log and 'apachectl configtest'{_PENDING}"
            )
        if time.monotonic() >= deadline:
            raise ReloadFailed(
                f"reload command {shown} exited with 0, but Apache (pid {before.pid}, "
                f"{pidfile}) did not re-read its configuration within {timeout:g}s: is this "
                f"the PidFile of the Apache that serves the CRL?{_PENDING}"
            )
        time.sleep(_POLL)
