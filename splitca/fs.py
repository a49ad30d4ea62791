"""Filesystem primitives: atomic writes with explicit modes, durable appends, cross-process locks.

Nothing here writes through a symbolic link: every open for writing uses ``O_NOFOLLOW``
(a planted link makes the operation fail with :class:`UnsafePath`, its target untouched),
temporary files are created with ``O_EXCL``, and a rename replaces a link itself. With an
*anchor* (the cadir), no directory between the anchor and the file may be a link either:
the directories are opened one by one with ``O_NOFOLLOW`` and the file is created, renamed
or removed relative to the last one, so swapping a directory for a link after a check
cannot redirect the write.
"""
# Over 400 lines because the storage-safety primitives (atomic writes, O_NOFOLLOW opens, directory-relative renames, flock locks) are one reviewed mechanism.

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import stat
import threading
import time
from pathlib import Path

from splitca.errors import LockTimeout, NotDurable, StoreError, UnsafePath

__all__ = [
    "FileLock",
    "OpenDirs",
    "SyncPoint",
    "append_line",
    "append_stat",
    "atomic_write",
    "create_new",
    "discard",
    "fsync_dir",
    "open_dir",
    "open_nofollow",
    "open_regular",
    "publish",
    "read_bytes",
    "read_stat",
    "refuse_symlink",
    "stage",
    "unlink",
]

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_pid = os.getpid()  # for staged files' names; reset in a forked child (a syscall less per write)


def _symlink_refused(path: os.PathLike[str] | str) -> UnsafePath:
    return UnsafePath(
        f"refusing to use {os.fspath(path)}: it is a symbolic link, and splitca never reads "
        "or writes through one (replace it with a regular file, and find out who made it)"
    )


def refuse_symlink(path: os.PathLike[str] | str) -> None:
    """Raise :class:`UnsafePath` if *path* is a symbolic link (for paths opened by others: SQLite)."""
    if os.path.islink(path):
        raise _symlink_refused(path)


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _spelled(path: os.PathLike[str] | str) -> str:
    """*path* as ``str(Path(path))`` spells it (no doubled or trailing slash, no ``.``
    component), without building a Path when it is already spelled so (the common case)."""
    if isinstance(path, Path):
        return str(path)  # a Path is spelled so (and caches its string)
    text = os.fspath(path)
    if "//" in text or "/./" in text or text.startswith("./") or text.endswith(("/", "/.")):
        return str(Path(text))
    return text


def _dir_and_name(path: os.PathLike[str] | str) -> tuple[str, str]:
    """The directory and the name of a file's *path*, spelled as ``Path.parent`` and
    ``Path.name`` spell them (``os.path.split`` of the spelled path, ``.`` for no
    directory), by string work: no Path is made for them."""
    where = _spelled(path)
    i = where.rfind("/") + 1
    head = where[:i]
    return head.rstrip("/") or head or ".", where[i:]


@functools.lru_cache(maxsize=1024)  # a pure function of two strings; the same few recur
def _below(path: str, anchor: str) -> tuple[str, ...] | None:
    """The components of *path* below *anchor* (both as ``str(Path)`` spells them), or None
    if *path* is not under it. Plain string work: this runs several times per request."""
    if path == anchor:
        return ()
    if path.startswith("//") or anchor.startswith("//"):  # POSIX's implementation-defined root
        try:
            return Path(path).relative_to(anchor).parts
        except ValueError:
            return None
    prefix = anchor if anchor.endswith("/") else anchor + "/"
    if not path.startswith(prefix):
        return None
    return tuple(part for part in path[len(prefix) :].split("/") if part)


def open_dir(path: Path | str, anchor: Path | str | None = None) -> int:
    """A descriptor of directory *path*; below *anchor* (if *path* is under it) no component
    may be a symbolic link. The caller closes it.

    Raises:
      UnsafePath: a directory below *anchor* is a symbolic link.
      OSError: anything else (a missing directory, say).
    """
    return _open_dir(_spelled(path), None if anchor is None else _spelled(anchor))


def _open_dir(where: str, base: str | None) -> int:
    """:func:`open_dir` of a spelled *where* below a spelled *base* (None: no anchor)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    parts = None if base is None else _below(where, base)
    if parts is None:
        return os.open(where, flags)
    assert base is not None
    fd = os.open(base, flags)
    try:
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise _symlink_refused(os.path.join(base, *parts[: i + 1])) from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_nofollow(
    path: os.PathLike[str] | str,
    flags: int,
    mode: int = 0o600,
    *,
    anchor: Path | None = None,
    dirs: OpenDirs | None = None,
) -> int:
    """``os.open`` that never follows a symbolic link in the last component (nor, with
    *anchor*, in any directory below it). With *dirs*, its directory is opened (with
    that batch's anchor) once for the batch.

    Raises:
      UnsafePath: *path* (or a directory below *anchor*) is a symbolic link.
      OSError: anything else.
    """
    if dirs is None and anchor is None:
        return _open_in(path, _spelled(path), flags, mode, None)
    parent, name = _dir_and_name(path)
    if dirs is not None:
        return _open_in(path, name, flags, mode, dirs.spelled(parent))
    assert anchor is not None
    dir_fd = _open_dir(parent, _spelled(anchor))
    try:
        return _open_in(path, name, flags, mode, dir_fd)
    finally:
        os.close(dir_fd)


def _open_in(
    path: os.PathLike[str] | str, name: str, flags: int, mode: int, dir_fd: int | None
) -> int:
    try:
        return os.open(name, flags | _NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and _is_link(name, dir_fd):
            raise _symlink_refused(path) from None
        raise


def unlink(path: Path | str, *, anchor: Path | None = None, durable: bool = False) -> None:
    """Remove *path* (not there: fine), never through a linked directory below *anchor*;
    with *durable*, the removal is synced (else a crash can bring the file back).

    Raises:
      NotDurable: it is removed, but syncing its directory failed.
      OSError: it could not be removed.
    """
    directory, name = _dir_and_name(path)
    try:
        dir_fd = _open_dir(directory, None if anchor is None else _spelled(anchor))
    except FileNotFoundError:
        return
    try:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        if durable:
            try:
                os.fsync(dir_fd)
            except OSError as exc:
                raise NotDurable(
                    f"{path} is removed but the removal could not be synced: {exc.strerror}"
                ) from exc
    finally:
        os.close(dir_fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(
    path: Path,
    data: bytes,
    *,
    mode: int,
    durable: bool = True,
    tmpdir: Path | None = None,
    anchor: Path | None = None,
    dirs: OpenDirs | None = None,
) -> str:
    """Write *data* to a temporary file for *path* with *mode*, fsynced; return its path.

    Pair with :func:`publish`. Splitting the two lets a caller do the cheap rename
    inside a short critical section while the write and fsync happen outside it.
    The temporary file is a hidden sibling of *path*, or lives in *tmpdir* (which
    must be on the same filesystem) so that staging leaves *path*'s directory alone.
    *dirs*: a batch's directory descriptors (their anchor applies), as for :func:`publish`.
    """
    if dirs is not None:
        anchor = dirs.anchor
    if tmpdir is None:
        directory, name = _dir_and_name(path)
    else:
        directory, name = _spelled(tmpdir), path.name
    # A str, as str(Path) would spell it (a root directory ends in its slash already): the
    # staged file is only ever named to the OS, so no Path is made for it.
    sep = "" if directory.endswith("/") else "/"
    tmp = f"{directory}{sep}.{name}.{_pid}.{threading.get_ident()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = open_nofollow(tmp, flags, mode, anchor=anchor, dirs=dirs)
        except FileExistsError:
            # Left by a crashed process that had our pid, or planted: unlink removes the
            # entry itself (never a link's target), then create afresh, exclusively.
            unlink(tmp, anchor=anchor)
            fd = open_nofollow(tmp, flags, mode, anchor=anchor, dirs=dirs)
        try:
            os.fchmod(fd, mode)  # umask must not widen or narrow the mode we chose
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from exc
    return tmp


class OpenDirs:
    """Directory descriptors for a batch of renames: each directory is opened (as
    :func:`open_dir` does, below *anchor*) once for the batch, and closed at its end.

    Held only for one batch: a descriptor kept longer would go on naming a directory
    that another process has since moved away.
    """

    def __init__(self, anchor: Path | None) -> None:
        self.anchor = anchor
        self._base = None if anchor is None else _spelled(anchor)  # spelled once per batch
        self._fds: dict[str, int] = {}

    def __call__(self, path: os.PathLike[str] | str) -> int:
        return self.spelled(_spelled(path))

    def spelled(self, where: str) -> int:
        """The descriptor of directory *where*, already spelled as ``str(Path)`` spells it
        (a str key: no Path hashing and comparing per lookup)."""
        fd = self._fds.get(where)
        if fd is None:
            fd = self._fds[where] = _open_dir(where, self._base)
        return fd

    def __enter__(self) -> OpenDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def publish(
    tmp: Path | str,
    path: Path,
    *,
    durable: bool = True,
    anchor: Path | None = None,
    dirs: OpenDirs | None = None,
) -> None:
    """Rename a staged file over *path* (atomic), then make the rename durable.

    With *dirs* (whose anchor is used), the directories come from that batch's
    descriptors and stay open for its next renames (and its directory fsync).

    Raises:
      StoreError: the rename failed; *path* is untouched and the staged file removed.
      NotDurable: the rename happened (readers see the new file) but syncing it failed.
    """
    src = dst = -1
    src_dir, src_name = _dir_and_name(tmp)
    dst_dir, dst_name = _dir_and_name(path)
    try:
        try:
            if dirs is not None:  # src first: if dst is refused, the staged file is removed
                src = dirs.spelled(src_dir)
                dst = dirs.spelled(dst_dir)
            else:
                base = None if anchor is None else _spelled(anchor)
                src = _open_dir(src_dir, base)
                dst = src if src_dir == dst_dir else _open_dir(dst_dir, base)
            os.replace(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst)
        except (OSError, UnsafePath) as exc:
            if src >= 0:  # (not through a directory that turned out to be a link)
                with contextlib.suppress(OSError):
                    os.unlink(src_name, dir_fd=src)
            if isinstance(exc, UnsafePath):
                raise
            raise StoreError(f"could not write {path}: {exc.strerror or exc}") from exc
        if durable:
            try:
                os.fsync(dst)
            except OSError as exc:
                raise NotDurable(
                    f"{path} is in place but could not be synced: {exc.strerror or exc}"
                ) from exc
    finally:
        if dirs is None:
            for fd in {src, dst} - {-1}:
                os.close(fd)


def discard(tmp: Path | str) -> None:
    """Remove a staged file that will not be published."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_write(
    path: Path, data: bytes, *, mode: int, durable: bool = True, anchor: Path | None = None
) -> None:
    """Replace *path* with *data* so readers see the old file or the new one, never a torn one.

    The data goes to a temporary file in the same directory, which gets *mode*, is
    fsynced, and is renamed over *path*; then the directory is fsynced. On any
    failure (for example ENOSPC) the temporary file is removed and *path* is untouched.

    Raises:
      StoreError: the write failed; the message names the path and the OS error.
    """
    with OpenDirs(anchor) as dirs:  # the directory is opened once, for both steps
        tmp = stage(path, data, mode=mode, durable=durable, dirs=dirs)
        publish(tmp, path, durable=durable, dirs=dirs)


def create_new(path: Path, data: bytes, *, mode: int) -> None:
    """Write *data* to *path* only if nothing is there (not even a link): whole or not at all.

    The data is staged and fsynced, then hard-linked to *path*, which fails if anything
    exists there; a check before a long computation cannot protect a key file (another
    process may create one meanwhile), this does.

    Raises:
      FileExistsError: *path* exists (it is left as it was).
      StoreError: the write failed.
    """
    tmp = stage(path, data, mode=mode)
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from exc
    finally:
        discard(tmp)
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise NotDurable(f"{path} is in place but could not be synced: {exc.strerror}") from exc


def append_line(
    path: Path, line: bytes, *, mode: int, durable: bool = True, anchor: Path | None = None
) -> tuple[int, int]:
    """Append one newline-terminated record to *path*, durably unless ``durable=False``.

    A single ``write`` on an ``O_APPEND`` descriptor. Readers must tolerate a torn
    last line after a crash (see :func:`splitca.store.files.cadir.parse_inventory`); callers
    serialise appends with a lock. Returns (inode, size after the append), for a
    later :func:`sync_upto`.
    """
    st = append_stat(path, line, mode=mode, durable=durable, anchor=anchor)
    return st.st_ino, st.st_size


def append_stat(
    path: Path, line: bytes, *, mode: int, durable: bool = True, anchor: Path | None = None
) -> os.stat_result:
    """:func:`append_line`, returning the ``fstat`` of the file appended to, right after
    the write (what a ``stat`` of *path* would say, without another path lookup)."""
    if not line.endswith(b"\n"):
        raise ValueError("append_line needs a newline-terminated record")
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode, anchor=anchor)
        try:
            # If a previous crash left a torn last line, start ours on a fresh line
            # (read through the same descriptor: the file we append to, never another).
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "No space left on device (short write)")
                if durable:
                    os.fsync(fd)
                st = os.fstat(fd)
            except OSError:
                # Leave no torn record behind (a full disk writes part of it).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"could not append to {path}: {exc.strerror or exc}") from exc
    return st


class SyncPoint:
    """Group fsync of an append-only file: ``sync_upto(mark)`` returns once the file is durable
    at least up to *mark* (from :func:`append_line`); concurrent callers share one fsync."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._durable: tuple[int, int] = (-1, -1)

    def sync_upto(self, mark: tuple[int, int]) -> None:
        with self._lock:
            ino, size = self._durable
            if ino == mark[0] and size >= mark[1]:
                return  # another thread's fsync already covered it
            try:
                fd = open_nofollow(self.path, os.O_RDONLY)
                try:
                    st = os.fstat(fd)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StoreError(f"could not sync {self.path}: {exc.strerror or exc}") from exc
            self._durable = (st.st_ino, st.st_size)


def open_regular(path: os.PathLike[str] | str) -> int:
    """A read-only descriptor of the regular file *path* (the caller closes it), opened
    without blocking: a FIFO planted there would block a reader for ever.

    Raises:
      UnsafePath: *path* is not a regular file.
      OSError: anything else (FileNotFoundError, say).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{os.fspath(path)} is not a regular file; refusing to read it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path) -> bytes | None:
    """Return the file's bytes, or None if it does not exist."""
    try:
        return read_stat(path)[0]
    except FileNotFoundError:
        return None


def read_stat(
    path: os.PathLike[str] | str, *, limit: int | None = None, follow: bool = True
) -> tuple[bytes, os.stat_result]:
    """A file's bytes and its ``fstat`` from one open (follows links, like ``open``, unless
    ``follow=False``).

    Four system calls for a small file (open, fstat, read, close) where
    ``Path.read_bytes`` makes ten (its buffered reader's isatty, seeks and second read).
    With *limit*, a file of more bytes than that is refused rather than read.

    Raises:
      UnsafePath: *path* is not a regular file (a FIFO would block a reader forever, a
        device could be read without end); it is opened without blocking to find out.
        Or it holds more than *limit* bytes, or (``follow=False``) it is a symbolic link.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags) if follow else _open_in(path, os.fspath(path), flags, 0, None)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{os.fspath(path)} is not a regular file; refusing to read it")
        if limit is not None and st.st_size > limit:
            raise _too_big(path, limit)
        data = os.read(fd, st.st_size + 1)  # one byte more: a file grown since is seen
        if len(data) != st.st_size:
            chunks = [data]  # grown or shrunk (or /proc, whose sizes are 0): read to the end
            size = len(data)
            while chunk := os.read(fd, max(st.st_size, 65536)):
                chunks.append(chunk)
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_big(path, limit)
            data = b"".join(chunks)
        return data, st
    finally:
        os.close(fd)


def _too_big(path: os.PathLike[str] | str, limit: int) -> UnsafePath:
    return UnsafePath(f"{os.fspath(path)} holds more than {limit} bytes; refusing to read it")


class _Slot:
    """One lock file in this process: a thread lock and, while held, a cached descriptor."""

    __slots__ = ("fd", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fd: int | None = None


_registry_lock = threading.Lock()
_slots: dict[str, _Slot] = {}


def _slot(path: Path) -> _Slot:
    key = str(path)
    with _registry_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = _Slot()
        return slot


_generation = 0  # bumped in a forked child, so FileLocks drop slots cached before the fork


def _reset_after_fork() -> None:
    # A thread lock some other thread held at fork() would stay held forever in the
    # child, and inherited descriptors share their flock with the parent: start afresh.
    # (Closing an inherited copy does not release the parent's lock.)
    global _registry_lock, _generation, _pid
    _registry_lock = threading.Lock()
    _generation += 1
    _pid = os.getpid()
    for slot in _slots.values():
        if slot.fd is not None:
            with contextlib.suppress(OSError):
                os.close(slot.fd)
    _slots.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


class _Held:
    """One holding of a :class:`FileLock` (a class, not a generator: it is taken several
    times per request)."""

    __slots__ = ("_held", "_lock", "_timeout")

    def __init__(self, lock: FileLock, timeout: float | None) -> None:
        self._lock = lock
        self._timeout = timeout
        self._held: tuple[_Slot, int] | None = None

    def __enter__(self) -> None:
        if self._held is not None:
            raise RuntimeError(f"lock {self._lock.path.name} is already held by this holder")
        self._held = self._lock._acquire(self._timeout)

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._lock._release(*held)


class FileLock:
    """An exclusive lock shared by threads and processes, on a lock file.

    Threads of one process queue on an in-process lock first (prompt hand-over, no
    polling); the winner then takes ``flock`` on the process's descriptor for the
    file, which excludes other processes. The descriptor stays open between uses
    (no open/close per lock) and is re-opened if the lock file was replaced. Waits
    are bounded: :class:`LockTimeout` after *timeout*.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0, anchor: Path | None = None) -> None:
        self.path = path
        self._where = os.fspath(path)  # what the lock's every lstat names, as a str once
        self.timeout = timeout
        self.anchor = anchor
        self._cached: tuple[int, _Slot] | None = None

    def _open(self, slot: _Slot) -> int:
        if slot.fd is None:
            try:
                slot.fd = open_nofollow(
                    self.path, os.O_RDWR | os.O_CREAT, 0o600, anchor=self.anchor
                )
            except OSError as exc:
                raise StoreError(f"could not open lock {self.path}: {exc.strerror}") from exc
        return slot.fd

    def _drop(self, slot: _Slot) -> None:
        if slot.fd is not None:
            with contextlib.suppress(OSError):
                os.close(slot.fd)
            slot.fd = None

    def __call__(self, timeout: float | None = None) -> _Held:
        """A context manager holding the lock (waiting at most *timeout*, default the lock's)."""
        return _Held(self, timeout)

    def _acquire(self, timeout: float | None) -> tuple[_Slot, int]:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        cached = self._cached
        if cached is not None and cached[0] == _generation:
            slot = cached[1]
        else:
            slot = _slot(self.path)
            self._cached = (_generation, slot)
        if not slot.lock.acquire(timeout=max(limit, 0)):
            raise LockTimeout(f"timed out after {limit:g}s waiting for lock {self.path.name}")
        try:
            return slot, self._flock(slot, deadline, limit)
        except BaseException:
            slot.lock.release()
            raise

    def _release(self, slot: _Slot, fd: int) -> None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                self._drop(slot)  # closing releases it too
        finally:
            slot.lock.release()

    def _flock(self, slot: _Slot, deadline: float, limit: float) -> int:
        delay = 0.0001
        while True:
            fd = self._open(slot)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"timed out after {limit:g}s waiting for lock {self.path.name}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.005)
                continue
            except OSError as exc:
                self._drop(slot)
                raise StoreError(f"could not lock {self.path}: {exc.strerror}") from exc
            try:
                same = os.fstat(fd).st_ino == os.lstat(self._where).st_ino
            except OSError:
                same = False
            if same:
                return fd
            self._drop(slot)  # the lock file was removed or replaced: lock the new one
