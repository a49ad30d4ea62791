"""FileStore: the CAStore over puppetserver's cadir, the SQLite index, group commit and flock locks.

The files are puppetserver's and they are the truth (see docs/architecture.md,
"Storage"); the index is kept in step inside the same short transactions that rename
files into place. Concurrent reservations and publications in one process are
batched (:class:`GroupCommit`): one lock round and one fsync serve many threads.
"""
# Over 400 lines because it is one implementation of the whole CAStore port (every method
# is a few lines over cadir/index); splitting it would split the port across files.

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from cryptography import x509

from splitca import fs, pki
from splitca.core.ports import MAX_REFUSALS, Blob, CRLEntry, CRLFetch, Refusal, Reservation
from splitca.errors import NotDurable, StoreError, StoreUnavailable
from splitca.store.files.batch import GroupCommit
from splitca.store.files.cadir import (
    KEY_MODE,
    MAX_PEM_FILE_BYTES,
    CADir,
    inventory_line,
    name_reads_back,
)
from splitca.store.files.index import Index, Row

__all__ = ["FileStore"]

log = logging.getLogger(__name__)

# (certname, its signed/ path, staged file, certificate, index row, drop the CSR?)
_Publication = tuple[str, Path, str, x509.Certificate, tuple[str, int, str], bool]


class FileStore:
    """One cadir. Safe to share between threads and to use from several processes.

    ``cadir`` and ``index`` are this implementation's internals: tests may inspect
    them; the core never does.
    """

    def __init__(self, root: Path) -> None:
        self.cadir = CADir(root)
        self.index = Index(self.cadir)
        self._serials = GroupCommit(self._reserve_batch)
        self._inventory_sync = fs.SyncPoint(self.cadir.inventory)
        self._publisher = GroupCommit(self._publish_batch)

    # --- lifecycle -----------------------------------------------------------------------
    def missing_parts(self) -> list[str]:
        return [p.name for p in self.cadir.missing_ca_files()]

    def present_parts(self) -> list[str]:
        c = self.cadir
        return [p.name for p in (c.cacert, c.cakey, c.cacrl, c.serial_file) if p.exists()]

    def prepare(self) -> None:
        self.cadir.ensure_dirs()

    def create_ca(self, *, ca_cert: bytes, ca_key: bytes, ca_pub: bytes, crl: bytes) -> None:
        """Write a new CA. The key goes last: a crash before it leaves no usable partial CA,
        and the next setup tells the operator exactly what it found."""
        c = self.cadir
        c.write_public(c.cacrl, crl)
        c.write_public(c.capub, ca_pub)
        c.write_public(c.cacert, ca_cert)
        c.write_public(c.infra_crl, crl)
        for empty in (c.infra_inventory, c.infra_serials):
            if not empty.exists():
                c.write_public(empty, b"")
        cert = pki.load_certificates(ca_cert)[0]
        c.write_serial(cert.serial_number + 1)
        c.append_inventory(
            cert.serial_number,
            pki.puppet_time(cert.not_valid_before_utc),
            pki.puppet_time(cert.not_valid_after_utc),
            pki.first_cn(cert.subject) or "",
        )
        c.write_key(c.cakey, ca_key, mode=KEY_MODE)
        self.index.refresh()

    def refresh(self) -> None:
        self.index.refresh()

    def rebuild(self) -> None:
        self.index.rebuild()

    def maintain(self) -> int:
        return self.cadir.clear_stale_staging()

    def close(self) -> None:
        self.index.close()

    def ping(self) -> None:
        missing = self.missing_parts()
        if missing:
            raise StoreUnavailable(f"the CA in {self.cadir.root} lacks {', '.join(missing)}")

    # --- CRL fetches -----------------------------------------------------------------------
    def record_crl_fetch(self, name: str, number: int, at: float) -> None:
        try:
            self.index.record_crl_fetch(name, number, at)
        except (StoreError, OSError) as exc:
            log.warning("CRL fetch by %s not recorded: %s", name, exc)

    def crl_fetches(self) -> list[CRLFetch]:
        return [CRLFetch(n, num, at) for n, num, at in self.index.crl_fetches()]

    # --- locks ---------------------------------------------------------------------------
    def locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.cadir.lock(name)()

    @contextlib.contextmanager
    def names_locked(self, names: Iterable[str]) -> Iterator[None]:
        """Hold the name locks of *names*: the one place issuing and revoking are serialized.

        Everything that issues a certificate for a name (signing, autosign, renewal,
        generate) and everything that revokes or cleans it runs under this, so a
        revoke that has read a name's serials finishes installing its CRL before
        anything new can be issued to that name, in any thread, worker or CLI process.
        The locks are :meth:`CADir.name_lock` stripes; each distinct stripe is taken
        once (they are not re-entrant), always in sorted order, so holders of several
        never deadlock with each other. Name locks come before every other lock
        (``serial``, ``inventory``, ``crl``, ``index``), and nothing waits for a name
        lock while holding one of those; the group commits take none of them.
        """
        locks = {str(lk.path): lk for lk in map(self.cadir.name_lock, names)}
        if len(locks) == 1:  # one name (every enrollment): no ExitStack
            with next(iter(locks.values()))():
                yield
            return
        with contextlib.ExitStack() as held:
            for path in sorted(locks):
                held.enter_context(locks[path]())
            yield

    # --- reads ---------------------------------------------------------------------------
    def ca_cert(self) -> Blob:
        found = self.cadir.read_cached_stamped(self.cadir.cacert)
        if found is None:
            raise StoreError(f"CA certificate {self.cadir.cacert} is missing; run 'splitca setup'")
        return Blob(*found)

    def crl(self) -> Blob:
        found = self.cadir.read_cached_stamped(self.cadir.cacrl)
        if found is None:
            raise StoreError(f"CRL {self.cadir.cacrl} is missing; run 'splitca crl refresh'")
        return Blob(*found)

    def cert(self, name: str) -> Blob | None:
        return _read_blob(self.cadir.cert_file(name))

    def csr(self, name: str) -> Blob | None:
        return _read_blob(self.cadir.csr_path(name))

    def has_cert(self, name: str) -> bool:
        return os.path.lexists(self.cadir.cert_path(name))

    def has_csr(self, name: str) -> bool:
        return self.cadir.csr_path(name).exists()

    def cert_location(self, name: str) -> str:
        return str(self.cadir.cert_path(name))

    def csr_location(self, name: str) -> str:
        return str(self.cadir.csr_path(name))

    def crl_location(self) -> str:
        return str(self.cadir.cacrl)

    # --- writes --------------------------------------------------------------------------
    def save_csr(
        self, name: str, pem: bytes, csr: x509.CertificateSigningRequest, *, reason: str
    ) -> None:
        path = self.cadir.csr_path(name)
        tmp = self.cadir.stage(path, pem)
        with self.index.transaction(changes=("requests",)) as conn:
            self.cadir.publish(tmp, path)
            self.index.put_csr(conn, name, csr, reason=reason)
            self.index.record(conn, "requests")

    def delete_csr(self, name: str) -> None:
        with self.index.transaction(changes=("requests",)) as conn:
            self.cadir.unlink(self.cadir.csr_path(name))
            self.index.delete_csr(conn, name)
            self.index.record(conn, "requests")

    def delete_cert(self, name: str, *, and_csr: bool = False) -> None:
        with self.index.transaction(changes=("signed", "requests")) as conn:
            self.cadir.unlink(self.cadir.cert_path(name))
            self.index.delete_cert(conn, name)
            if and_csr:
                self.cadir.unlink(self.cadir.csr_path(name))
                self.index.delete_csr(conn, name)
            self.index.record(conn, "signed", "requests")

    def reserve_serial(
        self, name: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> Reservation:
        """Take the next serial, its inventory line written, before anything is signed with it.

        Concurrent callers in this process are batched (group commit): one lock round,
        one append and one fsync for all of them. The fsync is left to
        :meth:`publish_cert`, so it overlaps the signing.
        """
        na = pki.puppet_time(not_after)
        # The line's notAfter as the index stores it (whole seconds), without parsing it back.
        na_ts = int(not_after.astimezone(dt.UTC).replace(microsecond=0).timestamp())
        serial, mark = self._serials.submit((name, pki.puppet_time(not_before), na, na_ts))
        return Reservation(serial, mark)

    def _reserve_batch(
        self, wanted: list[tuple[str, str, str, int]]
    ) -> list[tuple[int, tuple[int, int]]]:
        """Allocate consecutive serials for (certname, not_before, not_after, its timestamp)
        and record them.

        The inventory lines are the record that the serials are taken: the next serial
        is never below the inventory's highest, and a line is made durable (see
        :meth:`publish_cert`) before its certificate can reach anyone. So a serial
        reaches no client unless it is recorded, and none is handed out twice, even if
        the serial file (replaced atomically, without fsync) lost its last update in a
        crash. Returns (serial, inventory mark to sync up to) per item.
        """
        with self.cadir.lock("serial")(), self.cadir.lock("inventory")():
            with self.index.transaction() as conn:
                # The floor from inside the transaction: it caught up with the files when
                # it began, so the index's highest serial needs no refresh (four stats).
                first = self._serial_floor()
                lines = b"".join(
                    inventory_line(first + i, nb, na, name)
                    for i, (name, nb, na, _) in enumerate(wanted)
                )
                # The rows the index would parse from these lines (a name that would not
                # read back as itself, conceivable for a configured CA name, is parsed).
                rows = (
                    [
                        self.index.inventory_row(first + i, name, na_ts)
                        for i, (name, _, _, na_ts) in enumerate(wanted)
                    ]
                    if all(name_reads_back(name) for name, *_ in wanted)
                    else None
                )
                # Appended after the transaction's catch-up, so only add_inventory indexes
                # these lines (appended before it, the catch-up re-read and re-parsed them).
                # No fsync under the lock: it overlaps the signing (see publish_cert).
                appended = self.cadir.append(self.cadir.inventory, lines, durable=False)
                self.index.add_inventory(conn, lines, appended, rows=rows)
            self.cadir.write_serial(first + len(wanted), durable=False)
        mark = (appended.st_ino, appended.st_size)
        return [(first + i, mark) for i in range(len(wanted))]

    def _serial_floor(self) -> int:
        """The next free serial: the serial file, but never below the highest one issued."""
        try:
            serial = self.cadir.read_serial()
        except StoreError as exc:
            if self.cadir.serial_file.exists():
                log.warning("%s; continuing after the highest serial in the inventory", exc)
                serial = 0
            else:
                raise
        floor = max(self.index.max_issued_serial(), self.cadir.inventory_tail_max()) + 1
        if serial < floor:
            if serial:
                log.warning(
                    "serial file says %X but serial %X was already issued (restored backup?); using %X",
                    serial,
                    floor - 1,
                    floor,
                )
            serial = floor
        return serial

    def repair_serial(self) -> bool:
        with self.cadir.lock("serial")():
            try:
                current = self.cadir.read_serial()
            except StoreError:
                current = -1
            wanted = self._serial_floor()
            if wanted == current:
                return False
            self.cadir.write_serial(wanted)
        return True

    def publish_cert(
        self, name: str, cert: x509.Certificate, reservation: Reservation, *, drop_csr: bool
    ) -> None:
        """Atomically put signed/<name>.pem in place (and drop the CSR) with the index updated.

        The inventory line is made durable first: one fsync (overlapping other threads'
        signing) covers every line appended so far. The file is then written and fsynced
        here, in parallel with other threads; the renames are group-committed (see
        :meth:`_publish_batch`).
        """
        self._inventory_sync.sync_upto(reservation.token)  # type: ignore[arg-type]
        drop = drop_csr and self.cadir.csr_path(name).exists()
        path = self.cadir.cert_path(name)
        tmp = self.cadir.stage(path, pki.pem(cert))
        values = self.index.cert_values(name, cert)  # computed outside the write lock
        try:
            self._publisher.submit((name, path, tmp, cert, values, drop))
        except BaseException:
            fs.discard(tmp)  # renamed into place only if the batch succeeded
            raise

    def publish_ca_cert(self, pem: bytes, reservation: Reservation | None) -> None:
        if reservation is not None:
            self._inventory_sync.sync_upto(reservation.token)  # type: ignore[arg-type]
        self.cadir.write_public(self.cadir.cacert, pem)

    def ca_key(self) -> bytes:
        return self.cadir.read_ca_key()

    def replace_ca_key(self, data: bytes) -> None:
        self.cadir.rewrite_ca_key(data)

    def _publish_batch(self, items: list[_Publication]) -> list[None]:
        """Rename staged certificates into signed/ in one index transaction, one directory fsync.

        The index commits only after the renames are durable; if anything fails, every
        certificate of the batch gets the error (a file already renamed is picked up
        by the index's next refresh, as after a crash).
        """
        # requests/ changes (and is marked, synced and recorded) only if a CSR is dropped:
        # an autosigned CSR was never written there.
        changes = ("signed", "requests") if any(item[5] for item in items) else ("signed",)
        with self.index.transaction(changes=changes) as conn, self.cadir.open_dirs() as dirs:
            for certname, path, tmp, cert, values, drop_csr in items:
                self.cadir.publish(tmp, path, durable=False, dirs=dirs)
                self.index.put_cert(conn, certname, cert, values=values, path=path)
                if drop_csr:  # synced below, with the batch
                    self.cadir.unlink(self.cadir.csr_path(certname), durable=False)
                    self.index.delete_csr(conn, certname)
            try:
                os.fsync(dirs(self.cadir.signeddir))  # the descriptor the renames went through
                if "requests" in changes:
                    fs.fsync_dir(self.cadir.csrdir)
            except OSError as exc:
                raise StoreError(f"could not sync {self.cadir.signeddir}: {exc.strerror}") from exc
            self.index.record(conn, *changes)  # each was marked dirty
        return [None] * len(items)

    # --- queries -------------------------------------------------------------------------
    def status(self, name: str) -> Row | None:
        return self.index.status(name)

    def statuses(self, state: str | None = None) -> Iterator[Row]:
        return self.index.rows(state)

    def statuses_json(self, state: str | None = None) -> Iterator[str]:
        return self.index.status_json_chunks(state)

    def pending_names(self) -> list[str]:
        return self.index.pending_names()

    def serials_for_names(self, names: Sequence[str]) -> dict[str, list[int]]:
        found = {name: self.serials_for(name) for name in names}  # local: no round trips
        return {name: serials for name, serials in found.items() if serials}

    def serials_for(self, name: str) -> list[int]:
        """Every serial ever issued to *name*: the current cert plus the inventory."""
        serials = set(self.index.inventory_serials(name))
        row = self.index.cert(name)
        if row is not None and row.serial is not None:
            serials.add(row.serial)
        return sorted(serials)

    def counts(self) -> dict[str, int]:
        return self.index.counts()

    # --- refused requests ---------------------------------------------------------------
    def record_refusal(self, refusal: Refusal, *, prune_before: float) -> None:
        """In the index's ``refusals`` table; waits at most a second for the index lock."""
        r = refusal
        try:
            with self.index.transaction(timeout=1.0) as conn:
                self.index.add_refusal(
                    conn,
                    (r.at, r.certname, r.kind, r.reason, r.address),
                    prune_before=prune_before,
                    keep=MAX_REFUSALS,
                )
        except Exception as exc:  # best effort: the refusal is answered and audited anyway
            log.warning("could not record the refusal of %s: %s", r.certname, exc)

    def refusals(self, since: float) -> list[Refusal]:
        try:
            return [
                Refusal(n, k, r, a, at)
                for at, n, k, r, a in self.index.refusals(since, MAX_REFUSALS)
            ]
        except Exception as exc:
            log.warning("could not read the recorded refusals: %s", exc)
            return []

    # --- revocation ----------------------------------------------------------------------
    def is_revoked(self, serial: int) -> bool:
        return self.index.is_revoked(serial)

    def revoked_among(self, serials: Iterable[int]) -> set[int]:
        return self.index.revoked_among(serials)

    def revocations(self) -> list[CRLEntry]:
        return self.index.revocation_rows()

    def revoked_count(self) -> int:
        return self.index.revoked_count()

    def crl_number(self) -> int:
        return self.index.crl_number()

    def expired_serials(self, now: dt.datetime) -> set[int]:
        return self.index.expired_serials(now)

    def publish_crl(
        self,
        pem: bytes,
        *,
        number: int,
        entries: Sequence[CRLEntry],
        added: Sequence[pki.Revocation] | None,
        on_installed: Callable[[], None],
    ) -> None:
        """Install ca_crl.pem atomically, then (same index transaction) its revocations.

        Once the file is installed the CRL is in effect (it is what is served), so
        *on_installed* (the audit record) runs at once, and a failure to update the
        index afterwards (a full disk) does not fail the call: it is logged, and the
        index catches up from the file on its next refresh (its stamp for the CRL is
        recorded only when the index commits).

        Raises:
          NotDurable: the CRL is installed and recorded, but its rename could not be
            synced (a crash could undo it); the caller reports failure.
        """
        tmp = self.cadir.stage(self.cadir.cacrl, pem)
        installed = False
        not_durable: NotDurable | None = None
        try:
            with self.index.transaction(changes=("crl",)) as conn:
                try:
                    self.cadir.publish(tmp, self.cadir.cacrl)
                except NotDurable as exc:  # renamed into place: served, recorded, then reported
                    not_durable = exc
                installed = True
                on_installed()
                if added is not None:
                    self.index.add_revoked(conn, list(added), number)
                else:
                    self.index.replace_revocation_rows(conn, list(entries), number)
                self.index.record(conn, "crl")
        except BaseException as exc:
            if not installed:
                fs.discard(tmp)
                raise
            if not isinstance(exc, StoreError):
                raise
            log.warning(
                "CRL number %d is installed and in effect, but the index could not be updated "
                "(%s); it catches up from the CRL file on its next refresh",
                number,
                exc,
            )
        if not_durable is not None:
            # Served now, but a crash could bring the previous CRL back (and the index would
            # follow the file): the caller must not be told this is done.
            raise NotDurable(
                f"CRL number {number} is installed and served, but it could not be made durable "
                f"({not_durable}); a crash could undo it: run 'splitca crl refresh --force' "
                "once the storage is healthy"
            ) from not_durable


def _read_blob(path: Path | str) -> Blob | None:
    """A certificate's or CSR's bytes and mtime from one open (fstat, not a second path lookup).

    Served verbatim to anyone: a symbolic link planted there (to ca_key.pem, say) is refused,
    never followed, and so is a file too big to be one (UnsafePath).
    """
    try:
        data, st = fs.read_stat(path, limit=MAX_PEM_FILE_BYTES, follow=False)
    except FileNotFoundError:
        return None
    return Blob(data, st.st_mtime)
