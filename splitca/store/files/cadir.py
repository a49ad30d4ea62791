"""The Puppet CA directory on disk: puppetserver's layout and formats, atomic writes, named locks."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from splitca import fs
from splitca.errors import StoreError

__all__ = ["CADir", "InventoryLine", "format_serial", "parse_inventory", "parse_serial"]

CERT_MODE = 0o644
KEY_MODE = 0o640  # puppetserver's rw-r----- for ca_key.pem
PRIVATE_MODE = 0o600
LOCK_STRIPES = 64
# The most a signed/ or requests/ file may hold to be served or indexed (one is a few KiB).
MAX_PEM_FILE_BYTES = 16 * 1024 * 1024
INDEX_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")  # SQLite's database and side files

_INVENTORY_RE = re.compile(r"^0x([0-9A-Fa-f]+) (\S+) (\S+) (.*)$")
_INVENTORY_SERIAL_RE = re.compile(rb"0x([0-9A-Fa-f]+) \S+ \S+ /")


def format_serial(serial: int) -> bytes:
    """puppetserver's serial file format: ``%04X``, no newline."""
    return f"{serial:04X}".encode()


def parse_serial(data: bytes) -> int:
    """Accept puppetserver's ``%04X`` and the CLI's lowercase unpadded hex."""
    text = data.decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9A-Fa-f]{1,40}", text):
        raise StoreError(f"serial file holds {text[:40]!r}, not a hexadecimal number")
    return int(text, 16)


@dataclass(frozen=True)
class InventoryLine:
    serial: int
    not_before: str
    not_after: str
    subject: str

    @property
    def certname(self) -> str:
        # "/CN=agent1" (puppetserver and the Ruby CA) -> "agent1"
        _, _, cn = self.subject.rpartition("/CN=")
        return cn

    @property
    def not_after_dt(self) -> dt.datetime | None:
        try:
            return dt.datetime.strptime(self.not_after[:19], "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=dt.UTC
            )
        except ValueError:
            return None


def inventory_line(serial: int, not_before: str, not_after: str, certname: str) -> bytes:
    return f"0x{serial:04X} {not_before} {not_after} /CN={certname}\n".encode()


def name_reads_back(certname: str) -> bool:
    """Whether :func:`parse_inventory` reads *certname* back from its :func:`inventory_line`
    as itself: one printable line (``splitlines`` breaks at more than newlines) without
    another ``/CN=`` in it."""
    return certname.isprintable() and "/CN=" not in certname


def parse_inventory(data: bytes) -> Iterator[InventoryLine]:
    """Parse inventory lines, skipping blank, torn or foreign lines instead of failing."""
    for raw in data.decode("utf-8", "replace").splitlines():
        m = _INVENTORY_RE.match(raw)
        if m:
            yield InventoryLine(int(m.group(1), 16), m.group(2), m.group(3), m.group(4))


class CADir:
    """Paths, reads, atomic writes and locks for one puppetserver-format cadir.

    File names and formats are puppetserver's (``puppet-ca-api.md`` section 9), so a
    cadir can move between puppetserver and splitca in both directions. splitca's
    own state (index, locks) lives in the ``.splitca/`` subdirectory, which
    puppetserver ignores.
    """

    def __init__(self, root: Path, *, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.cacert = root / "ca_crt.pem"
        self.cakey = root / "ca_key.pem"
        self.capub = root / "ca_pub.pem"
        self.cacrl = root / "ca_crl.pem"
        self.serial_file = root / "serial"
        self.inventory = root / "inventory.txt"
        self.signeddir = root / "signed"
        self.csrdir = root / "requests"
        self.infra_inventory = root / "infra_inventory.txt"
        self.infra_serials = root / "infra_serials"
        self.infra_crl = root / "infra_crl.pem"
        self.private = root / ".splitca"
        self.index_path = self.private / "index.sqlite3"
        self.tmpdir = self.private / "tmp"
        self._signed = str(self.signeddir)  # see cert_file
        self._lock_timeout = lock_timeout
        self._cache_lock = threading.Lock()
        self._file_cache: dict[Path, tuple[tuple[int, int, int], bytes]] = {}
        self._same_fs: dict[Path, bool] = {}
        self._locks: dict[str, fs.FileLock] = {}

    # --- layout ------------------------------------------------------------------------
    REQUIRED = ("cacert", "cakey", "cacrl", "serial_file")

    def missing_ca_files(self) -> list[Path]:
        return [getattr(self, a) for a in self.REQUIRED if not getattr(self, a).exists()]

    def is_initialised(self) -> bool:
        return not self.missing_ca_files()

    def ensure_dirs(self) -> None:
        """Create the directories splitca needs (not the CA files); refuse planted symlinks.

        Raises:
          UnsafePath: a directory or file that splitca writes is a symbolic link.
        """
        try:
            for d, mode in (
                (self.root, 0o750),
                (self.signeddir, 0o755),
                (self.csrdir, 0o755),
                (self.private, 0o700),
                (self.private / "locks", 0o700),
                (self.tmpdir, 0o700),
            ):
                d.mkdir(mode=mode, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {exc.filename}: {exc.strerror}") from exc
        self.refuse_symlinks()

    def refuse_symlinks(self) -> None:
        """Fail before changing anything if a path splitca writes is a symbolic link.

        Whoever can write the cadir (the web server user, under mod_wsgi) must not be
        able to make a root-run command write elsewhere. The writes themselves never
        follow a link (see :mod:`splitca.fs`); this check makes a command refuse
        up front instead of failing half-way. The cadir itself may be a link.
        """
        locks = self.private / "locks"
        paths = [
            self.signeddir,
            self.csrdir,
            self.private,
            locks,
            self.tmpdir,
            self.root / "server",
            self.cacrl,
            self.serial_file,
            self.inventory,
            self.root / "audit.log",
            *(Path(f"{self.index_path}{suffix}") for suffix in INDEX_FILE_SUFFIXES),
        ]
        with contextlib.suppress(OSError):
            paths += [Path(e.path) for e in os.scandir(locks) if e.is_symlink()]
        for path in paths:
            fs.refuse_symlink(path)

    # --- locks -------------------------------------------------------------------------
    def lock(self, name: str) -> fs.FileLock:
        """A named cross-process lock: ``serial``, ``inventory``, ``crl``, ``setup``..."""
        lock = self._locks.get(name)
        if lock is None:
            lock = fs.FileLock(
                self.private / "locks" / f"{name}.lock",
                timeout=self._lock_timeout,
                anchor=self.root,
            )
            self._locks[name] = lock  # a benign race: two equal objects, one kept
        return lock

    def name_lock(self, certname: str) -> fs.FileLock:
        """A striped lock serialising operations on one certname (CSR/sign/clean)."""
        stripe = hashlib.sha256(certname.encode()).digest()[0] % LOCK_STRIPES
        return self.lock(f"name-{stripe:02d}")

    # --- paths for one certname (callers validate names first) --------------------------
    def cert_path(self, certname: str) -> Path:
        return self.signeddir / f"{certname}.pem"

    def csr_path(self, certname: str) -> Path:
        return self.csrdir / f"{certname}.pem"

    def cert_file(self, certname: str) -> str:
        """:meth:`cert_path` as a str, made without a Path (for the certificate GET of every
        enrollment, whose read hands the path to the OS as a str anyway)."""
        return f"{self._signed}/{certname}.pem"

    # --- cached reads of the few files served on every request ---------------------------
    def read_cached(self, path: Path) -> bytes | None:
        """File bytes, re-read only when (inode, size, mtime) changed. None if missing."""
        found = self.read_cached_stamped(path)
        return None if found is None else found[0]

    def read_cached_stamped(self, path: Path) -> tuple[bytes, float] | None:
        """:meth:`read_cached` with the file's mtime (from the same ``stat``)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._cache_lock:
            hit = self._file_cache.get(path)
            if hit and hit[0] == key:
                return hit[1], st.st_mtime
        # Never blocks: a FIFO planted in its place is refused (UnsafePath), not waited on.
        try:
            data, st = fs.read_stat(path)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)  # of the version read
        with self._cache_lock:
            self._file_cache[path] = (key, data)
        return data, st.st_mtime

    def mtime(self, path: Path) -> float | None:
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return None

    def read_ca_cert(self) -> bytes:
        data = self.read_cached(self.cacert)
        if data is None:
            raise StoreError(f"CA certificate {self.cacert} is missing; run 'splitca setup'")
        return data

    def read_crl(self) -> bytes:
        data = self.read_cached(self.cacrl)
        if data is None:
            raise StoreError(f"CRL {self.cacrl} is missing; run 'splitca crl refresh'")
        return data

    def read_ca_key(self) -> bytes:
        try:
            return fs.read_stat(self.cakey)[0]  # never blocks on a planted FIFO
        except FileNotFoundError:
            raise StoreError(f"CA key {self.cakey} is missing") from None
        except PermissionError:
            raise StoreError(f"no permission to read the CA key {self.cakey}") from None

    # --- serial ------------------------------------------------------------------------
    def read_serial(self) -> int:
        data = fs.read_bytes(self.serial_file)
        if data is None:
            raise StoreError(f"serial file {self.serial_file} is missing")
        return parse_serial(data)

    def write_serial(self, value: int, *, durable: bool = True) -> None:
        """Replace the serial file atomically.

        ``durable=False`` skips the fsyncs: fine for splitca, because the inventory line
        is made durable before a certificate with the serial is handed out
        (``FileStore.publish_cert``) and the next serial is never below the inventory's
        highest (``FileStore._serial_floor``). For puppetserver, which trusts this file
        alone, the replacement must stay a new file renamed over the old one: ext4 then
        writes the new data before the rename (auto_da_alloc), so after a power cut the
        file is not older than at the cadir's last sync. Rewritten in place it came back
        two values old (tests/test_power_cut.py).
        """
        fs.atomic_write(
            self.serial_file,
            format_serial(value),
            mode=CERT_MODE,
            durable=durable,
            anchor=self.root,
        )

    # --- inventory ---------------------------------------------------------------------
    def append_inventory(self, serial: int, not_before: str, not_after: str, certname: str) -> None:
        with self.lock("inventory")():
            fs.append_line(
                self.inventory,
                inventory_line(serial, not_before, not_after, certname),
                mode=CERT_MODE,
                anchor=self.root,
            )

    def inventory_tail_max(self, tail: int = 1024) -> int:
        """The highest serial among the inventory's last few lines (0 if none).

        A cheap second opinion for serial allocation that does not depend on the index
        being up to date: serials are appended in increasing order.
        """
        try:
            fd = fs.open_regular(self.inventory)
        except FileNotFoundError:
            return 0
        try:  # open, fstat, pread, close: no buffered reader's seeks
            data = os.pread(fd, tail, max(0, os.fstat(fd).st_size - tail))
        finally:
            os.close(fd)
        best = 0
        for raw in data.split(b"\n")[-4:]:  # a torn or partial line simply does not match
            m = _INVENTORY_SERIAL_RE.match(raw)
            if m and (serial := int(m.group(1), 16)) > best:
                best = serial
        return best

    # --- whole-file writers with the right modes ----------------------------------------
    def write_public(self, path: Path, data: bytes) -> None:
        fs.atomic_write(path, data, mode=CERT_MODE, anchor=self.root)

    def write_key(self, path: Path, data: bytes, *, mode: int = KEY_MODE) -> None:
        fs.atomic_write(path, data, mode=mode, anchor=self.root)

    def rewrite_ca_key(self, data: bytes) -> None:
        """Replace ca_key.pem atomically (temp file, fsync, rename), keeping its mode."""
        try:
            mode = stat.S_IMODE(os.stat(self.cakey).st_mode) & 0o640
        except FileNotFoundError:
            mode = KEY_MODE
        self.write_key(self.cakey, data, mode=mode)

    def append(self, path: Path, lines: bytes, *, durable: bool = True) -> os.stat_result:
        """Append records to a file in the cadir; the file's stat after (see :func:`fs.append_stat`)."""
        return fs.append_stat(path, lines, mode=CERT_MODE, durable=durable, anchor=self.root)

    def publish(
        self, tmp: Path | str, path: Path, *, durable: bool = True, dirs: fs.OpenDirs | None = None
    ) -> None:
        """Rename a staged file into place in the cadir, through no linked directory.

        *dirs*: a batch's directory descriptors, from :meth:`open_dirs`.
        """
        fs.publish(tmp, path, durable=durable, anchor=self.root, dirs=dirs)

    def open_dirs(self) -> fs.OpenDirs:
        """Directory descriptors (below the cadir, no linked directory) for one batch."""
        return fs.OpenDirs(self.root)

    def unlink(self, path: Path, *, durable: bool = True) -> None:
        """Remove a file of the cadir (missing: fine), through no linked directory; synced
        unless ``durable=False``. StoreError: it exists but could not be removed (or synced)."""
        try:
            fs.unlink(path, anchor=self.root, durable=durable)
        except OSError as exc:
            raise StoreError(
                f"Path {path} exists but could not be deleted: {exc.strerror}"
            ) from exc

    def stage(self, path: Path, data: bytes) -> str:
        """Stage a public file for :func:`fs.publish`, outside the target directory.

        Staging in ``.splitca/tmp`` keeps ``signed/`` and ``requests/`` unchanged until
        the rename, so their stamps move only with changes the index records.
        """
        parent = path.parent
        same = self._same_fs.get(parent)
        if same is None:
            try:
                same = os.stat(parent).st_dev == os.stat(self.tmpdir).st_dev
            except FileNotFoundError:
                same = False
            self._same_fs[parent] = same
        return fs.stage(
            path, data, mode=CERT_MODE, tmpdir=self.tmpdir if same else None, anchor=self.root
        )

    def clear_stale_staging(self, older_than: float = 3600.0) -> int:
        """Remove staged files left by crashed processes; returns how many."""
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self.tmpdir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.name.endswith(".tmp") and now - entry.stat().st_mtime > older_than:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    def read_infra_inventory(self) -> list[str]:
        data = fs.read_bytes(self.infra_inventory) or b""
        return [ln for ln in data.decode("utf-8", "replace").split("\n") if ln]
