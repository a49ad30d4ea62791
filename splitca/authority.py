"""The CA's use cases: set up, take CSRs, sign, revoke, clean, renew, report, keep the CRL fresh."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from . import _fs, pki
from ._batch import GroupCommit
from .audit import SYSTEM, Actor, AuditLog
from .clock import utcnow
from .config import Settings
from .errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PolicyViolation,
    SplitCAError,
    StoreError,
)
from .index import Index, Row, own_crl
from .policy import (
    Approved,
    AutosignDecision,
    Autosigner,
    CsrRules,
    check_subject,
    make_autosigner,
    vet,
)
from .store import KEY_MODE, PRIVATE_MODE, CADir, inventory_line

__all__ = ["CertificateAuthority", "SetupResult", "SubmitResult"]

# (certname, staged file, certificate, index row, drop the CSR?)
_Publication = tuple[str, Path, x509.Certificate, tuple[str, int, str], bool]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupResult:
    created: bool
    messages: list[str]


@dataclass(frozen=True)
class SubmitResult:
    """What happened to a submitted CSR."""

    certname: str
    signed: bool
    reason: str
    serial: int | None = None


@dataclass
class BulkSignResult:
    signed: list[str] = field(default_factory=list)
    no_csr: list[str] = field(default_factory=list)
    signing_errors: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # why a name was not signed
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)


class CertificateAuthority:
    """One CA over one cadir. Safe to share between threads and to run in several processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        autosigner: Autosigner | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.cadir = CADir(settings.cadir)
        self.index = Index(self.cadir)
        self.audit = audit if audit is not None else AuditLog(settings.effective_audit_log)
        self.rules = CsrRules(
            allow_subject_alt_names=settings.allow_subject_alt_names,
            allow_authorization_extensions=settings.allow_authorization_extensions,
            allow_legacy_signatures=settings.allow_legacy_signatures,
            min_rsa_bits=settings.min_rsa_bits,
        )
        self._autosigner = autosigner
        self._key_lock = threading.Lock()
        self._serials = GroupCommit(self._reserve_batch)
        self._inventory_sync = _fs.SyncPoint(self.cadir.inventory)
        self._publisher = GroupCommit(self._publish_batch)
        self._key: tuple[str, CertificateIssuerPrivateKeyTypes, x509.Certificate] | None = None

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, **kwargs: object) -> CertificateAuthority:
        """Open an existing CA; raise StoreError if the cadir is not a CA."""
        ca = cls(settings, **kwargs)  # type: ignore[arg-type]
        missing = ca.cadir.missing_ca_files()
        if missing:
            names = ", ".join(p.name for p in missing)
            raise StoreError(
                f"{settings.cadir} is not a CA directory (missing {names}); run 'splitca setup' first"
            )
        ca.cadir.ensure_dirs()
        ca.index.refresh()
        return ca

    @property
    def autosigner(self) -> Autosigner:
        if self._autosigner is None:
            self._autosigner = make_autosigner(
                self.settings.autosign,
                timeout=self.settings.autosign_timeout.total_seconds(),
                settings=self.settings,
                audit=self.audit,
            )
        return self._autosigner

    def signing_material(self) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
        """The CA key and certificate, loaded once and reloaded if the files change."""
        stamp = _fs_stamp(self.cadir.cakey) + "|" + _fs_stamp(self.cadir.cacert)
        with self._key_lock:
            if self._key is None or self._key[0] != stamp:
                key = pki.load_private_key(self.cadir.read_ca_key())
                certs = pki.load_certificates(self.cadir.read_ca_cert())
                if not certs:
                    raise StoreError(f"{self.cadir.cacert} holds no certificate")
                cert = pki.signing_certificate(certs, key)
                if cert is None:
                    raise StoreError(
                        f"no certificate in {self.cadir.cacert} matches {self.cadir.cakey}"
                    )
                self._key = (stamp, key, cert)
            return self._key[1], self._key[2]

    # --- setup ---------------------------------------------------------------------------
    @classmethod
    def setup(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        server_identity: bool = False,
    ) -> SetupResult:
        """Create a CA, with the CA server's TLS identity, in an empty cadir.

        If a CA exists (one imported from puppetserver, say) nothing at all is written,
        unless *server_identity*: then the CA server's certificate is issued if it is
        missing, never replacing a certificate file (see :meth:`_ensure_server_identity`).

        Raises:
          StoreError: the cadir holds part of a CA (never overwritten).
          Conflict: *server_identity*, and a certificate for the certname already exists.
        """
        if CADir(settings.cadir).is_initialised():
            # Looked at before anything is created: re-running setup changes no byte.
            return cls._setup_existing(settings, clock=clock, server_identity=server_identity)
        ca = cls(settings, clock=clock)
        cadir = ca.cadir
        cadir.ensure_dirs()
        with cadir.lock("setup")():
            present = [
                p for p in (cadir.cacert, cadir.cakey, cadir.cacrl, cadir.serial_file) if p.exists()
            ]
            if len(present) == 4:  # a concurrent setup made it meanwhile
                return cls._setup_existing(settings, clock=clock, server_identity=server_identity)
            if present:
                raise StoreError(
                    f"Cannot initialize CA with partial state in {cadir.root}: found "
                    f"{', '.join(p.name for p in present)} but not all of ca_crt.pem, ca_key.pem, "
                    "ca_crl.pem, serial. Restore the missing files or move the directory away; "
                    "splitca never replaces a CA key."
                )
            now = clock()
            key = pki.generate_private_key(
                settings.key_type, rsa_bits=settings.key_size, curve=settings.ec_curve
            )
            cert = pki.build_ca_certificate(
                key, settings.effective_ca_name, now=now, ttl=settings.ca_ttl
            )
            crl = pki.build_crl(
                ca_key=key,
                ca_cert=cert,
                entries=(),
                number=0,
                this_update=now - dt.timedelta(minutes=1),
                next_update=now + settings.crl_ttl,
            )
            # The key is written last: a crash before it leaves no key and so no usable
            # partial CA, and the next setup tells the operator exactly what it found.
            cadir.write_public(cadir.cacrl, pki.pem(crl))
            cadir.write_public(cadir.capub, pki.public_key_pem(key.public_key()))
            cadir.write_public(cadir.cacert, pki.pem(cert))
            cadir.write_public(cadir.infra_crl, pki.pem(crl))
            for empty in (cadir.infra_inventory, cadir.infra_serials):
                if not empty.exists():
                    cadir.write_public(empty, b"")
            cadir.write_serial(2)
            cadir.append_inventory(
                1,
                pki.puppet_time(cert.not_valid_before_utc),
                pki.puppet_time(cert.not_valid_after_utc),
                settings.effective_ca_name,
            )
            cadir.write_key(cadir.cakey, pki.private_key_pem(key), mode=KEY_MODE)
            msgs = [
                f"Created CA '{settings.effective_ca_name}' in {cadir.root} ({_describe_key(key)})."
            ]
            ca.index.refresh()
            msgs += ca._ensure_server_identity()
            ca.audit.event(
                "setup", SYSTEM, ca_name=settings.effective_ca_name, cadir=str(cadir.root)
            )
            return SetupResult(True, msgs)

    @classmethod
    def _setup_existing(
        cls, settings: Settings, *, clock: Callable[[], dt.datetime], server_identity: bool
    ) -> SetupResult:
        if not server_identity:
            msgs = [f"CA already exists in {settings.cadir}; nothing changed."]
            if hint := _server_identity_hint(settings):
                msgs.append(hint)
            return SetupResult(False, msgs)
        ca = cls.open(settings, clock=clock)
        with ca.cadir.lock("setup")():
            msgs = [f"CA already exists in {settings.cadir}."]
            return SetupResult(False, msgs + ca._ensure_server_identity())

    def _ensure_server_identity(self) -> list[str]:
        """The CA host's own TLS certificate (with pp_cli_auth, as puppetserver's), made once.

        Never replaces a certificate file: if signed/<certname>.pem exists (an imported
        puppetserver CA holds its own host's certificate there) this is a Conflict. The
        key is written before the certificate is issued, so a run that stops half-way is
        finished by the next one (with that key) instead of blocking the name.

        Raises:
          Conflict: a certificate for the certname exists, or server/cert.pem without its key.
          StoreError: configured server_cert/server_key are missing, or a write failed.
        """
        cert_path = self.settings.effective_server_cert
        key_path = self.settings.effective_server_key
        have_cert, have_key = os.path.lexists(cert_path), os.path.lexists(key_path)
        if have_cert and have_key:
            return [f"The CA server's certificate {cert_path} exists; nothing changed."]
        if self.settings.server_cert is not None or self.settings.server_key is not None:
            raise StoreError(f"server_cert {cert_path} or server_key {key_path} does not exist")
        if have_cert:
            raise Conflict(
                f"{cert_path} exists but its key {key_path} does not; splitca never replaces a "
                f"certificate file: restore the key, or move {cert_path} away"
            )
        certname = self.settings.certname
        signed = self.cadir.cert_path(certname)
        key: CertificateIssuerPrivateKeyTypes | None = None
        if have_key:  # a run that stopped half-way: finish it with the key it wrote
            try:
                key = pki.load_private_key(key_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot read the CA server's key {key_path}: {exc}") from exc
            existing = _fs.read_bytes(signed)
            if existing is not None:
                try:
                    certs = pki.load_certificates(existing)
                except ValueError:
                    certs = []
                if (
                    certs
                    and pki.public_key_pem(certs[0].public_key())
                    == pki.public_key_pem(key.public_key())
                    and self.state_of(certname) == "signed"  # not revoked meanwhile
                ):
                    self.cadir.write_public(cert_path, existing)
                    return [f"Installed the CA server's certificate {cert_path} ({signed})."]
        if os.path.lexists(signed):
            raise Conflict(
                f"{signed} already exists (on a CA imported from puppetserver it is puppetserver's "
                f"own certificate for {certname}); splitca never replaces a certificate. Set "
                "server_cert and server_key to that certificate and its key, or give this CA "
                "server another name with --certname"
            )
        wrote_key = False
        if key is None:
            key = pki.generate_private_key("rsa", rsa_bits=4096)
            try:
                key_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {key_path.parent}: {exc.strerror}") from exc
            self.cadir.write_key(key_path, pki.private_key_pem(key), mode=PRIVATE_MODE)
            wrote_key = True
        alt = pki.parse_alt_names(self.settings.dns_alt_names)
        try:
            _, cert = self.generate(certname, alt_names=alt, ca_client=True, actor=SYSTEM, key=key)
        except BaseException:
            if wrote_key:  # nothing was issued: leave nothing behind
                _unlink(key_path)
            raise
        self.cadir.write_public(cert_path, pki.pem(cert))
        names = ", ".join(
            pki.general_name_str(n)
            for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
        return [f"Issued the CA server's certificate {cert_path} for {names}."]

    # --- reading ----------------------------------------------------------------------------
    def ca_certificate_pem(self) -> bytes:
        return self.cadir.read_ca_cert()

    def crl_pem(self) -> bytes:
        return self.cadir.read_crl()

    def certificate_pem(self, certname: str) -> bytes | None:
        """The signed certificate file, served verbatim (no parsing), or None."""
        if not pki.is_safe_name(certname):
            return None
        return _fs.read_bytes(self.cadir.cert_path(certname))

    def csr_pem(self, certname: str) -> bytes | None:
        if not pki.is_safe_name(certname):
            return None
        return _fs.read_bytes(self.cadir.csr_path(certname))

    def status(self, certname: str) -> Row | None:
        if not pki.is_safe_name(certname):
            return None
        return self.index.status(certname)

    def statuses(self, state: str | None = None) -> Iterator[Row]:
        return self.index.rows(state)

    def statuses_json(self, state: str | None = None) -> Iterator[str]:
        """:meth:`statuses` as one JSON array in pieces (with ``pending_reason``), for streaming."""
        return self.index.status_json_chunks(state)

    def state_of(self, certname: str) -> str | None:
        row = self.status(certname)
        return None if row is None else row.state

    def expirations(self) -> dict[str, dict[str, str]]:
        certs = pki.load_certificates(self.cadir.read_ca_cert())
        crls = [x509.load_pem_x509_crl(b) for b in pki.split_pem(self.cadir.read_crl(), "X509 CRL")]
        return {
            "ca-certs": {
                pki.first_cn(c.subject) or c.subject.rfc4514_string(): pki.puppet_time(
                    c.not_valid_after_utc
                )
                for c in certs
            },
            "crls": {
                pki.first_cn(c.issuer) or c.issuer.rfc4514_string(): pki.puppet_time(
                    c.next_update_utc
                )
                for c in crls
                if c.next_update_utc is not None
            },
        }

    # --- per-name serialization ------------------------------------------------------------
    @contextlib.contextmanager
    def _names_locked(self, names: Iterable[str]) -> Iterator[None]:
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
        with contextlib.ExitStack() as held:
            for path in sorted(locks):
                held.enter_context(locks[path]())
            yield

    # --- CSR intake ------------------------------------------------------------------------
    def submit_csr(self, certname: str, body: bytes, *, actor: Actor = SYSTEM) -> SubmitResult:
        """PUT certificate_request: validate, store as pending, autosign if policy says so.

        Unlike puppetserver, a CSR that could never be signed under this CA's policy
        (weak crypto, bad signature, disallowed SANs or extensions) is refused before
        anything is written, so the cadir holds no junk.

        Raises:
          InvalidRequest: not one PEM CSR.
          PolicyViolation: puppetserver's validation kinds and messages (HTTP 400).
        """
        csr = pki.load_csr(body)
        info = pki.inspect_csr(csr)
        cn = info.cn
        fields = {
            "certname": certname,
            "fingerprint": pki.fingerprints(pki.der(csr))["SHA256"],
            "sans": [pki.general_name_str(n) for n in info.sans],
            "extensions": [e.oid.dotted_string for e in info.extensions],
        }
        try:
            if cn is not None and pki.is_safe_name(cn):
                self._refuse_duplicate(cn)
            check_subject(certname, cn)
            approved = vet(csr, certname, self.rules, info=info)
        except PolicyViolation as exc:
            self.audit.event("csr-refused", actor, **fields, kind=exc.kind, message=str(exc))
            raise
        self.audit.event("csr-received", actor, **fields)
        if certname in self.reserved_names:
            # The CA's own name and the admin names grant CA administration: a human signs those.
            decision = AutosignDecision(
                False, "reserved name (CA or admin certname); sign it by hand"
            )
        else:
            decision = self.autosigner.decide(certname, body, info)
        self.audit.event(
            "autosign-decision",
            actor,
            certname=certname,
            sign=decision.sign,
            reason=decision.reason,
            **decision.details,
        )
        pem = pki.pem(csr)
        with self._names_locked([certname]):
            # Re-checked under the name lock: concurrent CSRs for one name (say, several
            # keys racing) must not all pass the check above and all be signed or stored.
            try:
                self._refuse_duplicate(certname)
            except PolicyViolation as exc:
                self.audit.event("csr-refused", actor, **fields, kind=exc.kind, message=str(exc))
                raise
            if decision.sign:
                cert = self._issue(approved, ttl=None)
                self._publish_cert(certname, cert, drop_csr=self.cadir.csr_path(certname).exists())
                self.audit.event(
                    "sign",
                    Actor("autosign", actor.name, actor.address),
                    **self._cert_fields(cert, certname),
                    reason=decision.reason,
                )
                return SubmitResult(certname, True, decision.reason, cert.serial_number)
            tmp = self.cadir.stage(self.cadir.csr_path(certname), pem)
            with self.index.transaction() as conn:
                _fs.publish(tmp, self.cadir.csr_path(certname))
                self.index.put_csr(conn, certname, csr, reason=decision.reason)
                self.index.record(conn, "requests")
        log.info("Saved CSR for %s (pending: %s)", certname, decision.reason)
        return SubmitResult(certname, False, decision.reason)

    @property
    def reserved_names(self) -> frozenset[str]:
        """Names never autosigned: their certificates administer the CA."""
        return frozenset((self.settings.certname, *self.settings.admin_certnames))

    def _refuse_duplicate(self, name: str) -> None:
        """puppetserver's duplicate-cert rule, unless allow_duplicate_certs."""
        if self.settings.allow_duplicate_certs:
            return
        state = self.state_of(name)
        if state is not None:
            raise PolicyViolation(
                "duplicate-cert",
                name,
                f"{name} already has a {state} certificate; ignoring certificate request",
            )

    def delete_csr(self, certname: str, *, actor: Actor = SYSTEM) -> None:
        if not pki.is_safe_name(certname) or not self.cadir.csr_path(certname).exists():
            raise NotFound(f"No certificate request for {certname}")
        with self.cadir.name_lock(certname)(), self.index.transaction() as conn:
            _unlink(self.cadir.csr_path(certname))
            self.index.delete_csr(conn, certname)
            self.index.record(conn, "requests")
        self.audit.event("csr-deleted", actor, certname=certname)

    # --- signing ---------------------------------------------------------------------------
    def _reserve_serial(
        self, certname: str, not_before: dt.datetime, not_after: dt.datetime
    ) -> tuple[int, tuple[int, int]]:
        """Take the next serial, its inventory line written, before anything is signed with it.

        Concurrent callers in this process are batched (group commit): one lock round,
        one append and one fsync for all of them.
        """
        return self._serials.submit(
            (certname, pki.puppet_time(not_before), pki.puppet_time(not_after))
        )

    def _reserve_batch(
        self, wanted: list[tuple[str, str, str]]
    ) -> list[tuple[int, tuple[int, int]]]:
        """Allocate consecutive serials for (certname, not_before, not_after) and record them.

        The inventory lines are the record that the serials are taken: the next serial
        is never below the inventory's highest, and a line is made durable (see
        :meth:`_issue`) before its certificate can reach anyone. So a serial reaches no
        client unless it is recorded, and none is handed out twice, even if the serial
        file (replaced atomically, without fsync) lost its last update in a crash.
        Returns (serial, inventory mark to sync up to) per item.
        """
        with self.cadir.lock("serial")(), self.cadir.lock("inventory")():
            first = self._serial_floor()
            lines = b"".join(
                inventory_line(first + i, nb, na, name) for i, (name, nb, na) in enumerate(wanted)
            )
            # No fsync under the lock: it overlaps the signing (see _issue).
            mark = _fs.append_line(self.cadir.inventory, lines, mode=0o644, durable=False)
            self.cadir.write_serial(first + len(wanted), durable=False)
            with self.index.transaction() as conn:
                self.index.add_inventory(conn, lines)
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
        """Move the serial file past the highest issued serial if it lags (after a crash)."""
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

    def _issue(self, approved: Approved, ttl: dt.timedelta | None) -> x509.Certificate:
        """Sign *approved* with a fresh serial recorded in the inventory (not yet published)."""
        key, ca_cert = self.signing_material()
        now = self.clock().replace(microsecond=0)  # X.509 times have whole seconds
        not_before = now - self.settings.backdate
        not_after = min(
            now + (ttl or self.settings.effective_cert_ttl), ca_cert.not_valid_after_utc
        )
        # Everything that can refuse the request is checked before a serial is taken:
        # a request that cannot become a certificate costs no serial or inventory line.
        try:
            builder = pki.leaf_builder(
                ca_key=key,
                ca_cert=ca_cert,
                public_key=approved.public_key,
                certname=approved.certname,
                not_before=not_before,
                not_after=not_after,
                alt_names=approved.alt_names,
                extensions=approved.extensions,
            )
        except (ValueError, TypeError) as exc:
            raise PolicyViolation(
                "invalid-csr",
                approved.certname,
                f"Cannot issue a certificate for {approved.certname}: {exc}",
            ) from None
        # Inventory first: a certificate a client has received is always in the inventory.
        serial, mark = self._reserve_serial(approved.certname, not_before, not_after)
        cert = pki.sign_leaf(builder, key, serial)
        # The inventory line is durable before the certificate can be published; one
        # fsync (overlapping other threads' signing) covers every line appended so far.
        self._inventory_sync.sync_upto(mark)
        return cert

    def _publish_cert(self, certname: str, cert: x509.Certificate, *, drop_csr: bool) -> None:
        """Atomically put signed/<name>.pem in place (and drop the CSR) with the index updated.

        The file is written and fsynced here, in parallel with other threads; the
        renames are group-committed (see :meth:`_publish_batch`).
        """
        path = self.cadir.cert_path(certname)
        tmp = self.cadir.stage(path, pki.pem(cert))
        values = self.index.cert_values(certname, cert)  # computed outside the write lock
        try:
            self._publisher.submit((certname, tmp, cert, values, drop_csr))
        finally:
            _fs.discard(tmp)  # gone if it was renamed into place; else clean up
        log.info("Signed certificate for %s (serial %d)", certname, cert.serial_number)

    def _publish_batch(self, items: list[_Publication]) -> list[None]:
        """Rename staged certificates into signed/ in one index transaction, one directory fsync.

        The index commits only after the renames are durable; if anything fails, every
        certificate of the batch gets the error (a file already renamed is picked up
        by the index's next refresh, as after a crash).
        """
        with self.index.transaction() as conn:
            changed = {"signed"}
            for certname, tmp, cert, values, drop_csr in items:
                _fs.publish(tmp, self.cadir.cert_path(certname), durable=False)
                self.index.put_cert(conn, certname, cert, values=values)
                if drop_csr:
                    _unlink(self.cadir.csr_path(certname))
                    self.index.delete_csr(conn, certname)
                    changed.add("requests")
            try:
                _fs.fsync_dir(self.cadir.signeddir)
                if "requests" in changed:
                    _fs.fsync_dir(self.cadir.csrdir)
            except OSError as exc:
                raise StoreError(f"could not sync {self.cadir.signeddir}: {exc.strerror}") from exc
            self.index.record(conn, *sorted(changed))
        return [None] * len(items)

    def _cert_fields(self, cert: x509.Certificate, certname: str) -> dict[str, object]:
        try:
            sans = [
                pki.general_name_str(n)
                for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ]
        except x509.ExtensionNotFound:
            sans = []
        return {
            "certname": certname,
            "serial": cert.serial_number,
            "fingerprint": pki.fingerprints(pki.der(cert))["SHA256"],
            "sans": sans,
            "extensions": [e.oid.dotted_string for e in cert.extensions],
            "not_after": pki.puppet_time(cert.not_valid_after_utc),
        }

    def sign(
        self,
        certname: str,
        *,
        ttl: dt.timedelta | None = None,
        allow_alt_names: bool = False,
        actor: Actor = SYSTEM,
    ) -> x509.Certificate:
        """Sign the pending CSR for *certname*.

        Raises:
          NotFound: nothing at all is known about *certname*.
          Conflict: no pending CSR ("Cannot sign certificate for host X without a certificate request").
          PolicyViolation: the CSR fails a signing check.
        """
        if not pki.is_safe_name(certname):
            raise NotFound("Invalid certificate subject.")
        with self._names_locked([certname]):
            data = _fs.read_bytes(self.cadir.csr_path(certname))
            if data is None:
                if self.cadir.cert_path(certname).exists():
                    raise Conflict(
                        f"Cannot sign certificate for host {certname} without a certificate request"
                    )
                raise NotFound("Invalid certificate subject.")
            try:
                csr = pki.load_csr(data)
            except InvalidRequest as exc:
                raise PolicyViolation(
                    "invalid-csr", certname, f"Stored CSR for {certname} is unreadable: {exc}"
                ) from None
            info = pki.inspect_csr(csr)
            check_subject(certname, info.cn)
            approved = vet(csr, certname, self.rules, allow_alt_names=allow_alt_names, info=info)
            cert = self._issue(approved, ttl)
            self._publish_cert(certname, cert, drop_csr=True)
        self.audit.event("sign", actor, **self._cert_fields(cert, certname))
        return cert

    def sign_many(
        self,
        certnames: Iterable[str],
        *,
        ttl: dt.timedelta | None = None,
        allow_alt_names: bool = False,
        actor: Actor = SYSTEM,
    ) -> BulkSignResult:
        """Bulk sign (POST /sign, 'splitca sign'): every name lands in signed, no-csr or
        signing-errors, with the reason in ``messages``. One name's failure, whatever it
        is, never stops the others."""
        result = BulkSignResult()
        for name in certnames:
            try:
                cert = self.sign(name, ttl=ttl, allow_alt_names=allow_alt_names, actor=actor)
            except (NotFound, Conflict) as exc:
                result.no_csr.append(name)
                result.messages[name] = str(exc)
            except SplitCAError as exc:
                result.signing_errors.append(name)
                result.messages[name] = str(exc)
            except Exception as exc:  # reported, never the end of the batch
                log.exception("signing %s failed", name)
                result.signing_errors.append(name)
                result.messages[name] = f"internal error ({type(exc).__name__}); see the log"
            else:
                result.signed.append(name)
                result.certificates[name] = cert
        return result

    def sign_all(self, *, allow_alt_names: bool = False, actor: Actor = SYSTEM) -> BulkSignResult:
        return self.sign_many(
            self.index.pending_names(), allow_alt_names=allow_alt_names, actor=actor
        )

    def generate(
        self,
        certname: str,
        *,
        alt_names: Iterable[x509.GeneralName] = (),
        ca_client: bool = False,
        key_type: str = "rsa",
        key_size: int = 4096,
        actor: Actor = SYSTEM,
        replace: bool = False,
        key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> tuple[bytes, x509.Certificate]:
        """Make a key and a certificate for *certname* here (trusted: SANs allowed).

        ``ca_client`` adds ``pp_cli_auth`` so the certificate can administer this CA.
        With *key* (one the caller has already saved) no key is made: the certificate
        is for that key, so a failure after issuing cannot lose it.

        Raises:
          Conflict: a certificate or CSR for *certname* already exists.
        """
        if problem := pki.certname_problem(certname):
            raise InvalidRequest(f"{certname!r}: {problem}")
        with self._names_locked([certname]):
            if not replace:
                state = self.state_of(certname)
                if state is not None:
                    raise Conflict(
                        f"{certname} already has a {state} certificate; "
                        f"run 'splitca clean {certname}' first to replace it"
                    )
            if key is None:
                key = pki.generate_private_key(key_type, rsa_bits=key_size)
            exts = (pki.cli_auth_extension(),) if ca_client else ()
            approved = Approved(certname, key.public_key(), tuple(alt_names), exts)
            cert = self._issue(approved, ttl=None)
            self._publish_cert(certname, cert, drop_csr=self.cadir.csr_path(certname).exists())
        self.audit.event(
            "generate", actor, ca_client=ca_client, **self._cert_fields(cert, certname)
        )
        return pki.private_key_pem(key), cert

    def renew(self, cert: x509.Certificate, *, actor: Actor = SYSTEM) -> x509.Certificate:
        """certificate_renewal: same subject, key and extensions; new serial and validity.

        Raises:
          InvalidRequest: the certificate was not issued by this CA ("does not match signature").
          Conflict: it is revoked (checked again under the name lock, see :meth:`revoke`).
        """
        _, ca_cert = self.signing_material()
        try:
            aki = cert.extensions.get_extension_for_class(
                x509.AuthorityKeyIdentifier
            ).value.key_identifier
        except x509.ExtensionNotFound:
            aki = None
        if aki != pki.ca_key_identifier(ca_cert):
            raise InvalidRequest("Certificate present, but does not match signature")
        if self.index.is_revoked(cert.serial_number):
            raise Conflict("Certificate is revoked and cannot be renewed")
        certname = pki.first_cn(cert.subject) or ""
        if not pki.is_safe_name(certname):
            raise InvalidRequest("No valid certificate found in renewal request")
        keep = {
            x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
            x509.oid.ExtensionOID.BASIC_CONSTRAINTS,
            x509.oid.ExtensionOID.EXTENDED_KEY_USAGE,
            x509.oid.ExtensionOID.KEY_USAGE,
            x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            pki.NETSCAPE_COMMENT,
        }
        exts = tuple(e for e in cert.extensions if e.oid not in keep)
        try:
            sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = ()
        with self._names_locked([certname]):
            # Again under the name lock: a revoke or clean of this name holds it from reading
            # the name's serials until the CRL is installed, so either this renewal was
            # issued before (and its serial is on that CRL) or it sees the revocation here.
            if self.index.is_revoked(cert.serial_number):
                raise Conflict("Certificate is revoked and cannot be renewed")
            new = self._issue(
                Approved(certname, cert.public_key(), sans, exts),
                self.settings.auto_renewal_cert_ttl,
            )
            self._publish_cert(certname, new, drop_csr=False)
        self.audit.event(
            "renew", actor, previous_serial=cert.serial_number, **self._cert_fields(new, certname)
        )
        return new

    # --- revocation -------------------------------------------------------------------------
    def serials_for(self, certname: str) -> list[int]:
        """Every serial ever issued to *certname*: the current cert plus the inventory."""
        serials = set(self.index.inventory_serials(certname))
        row = self.index.cert(certname)
        if row is not None and row.serial is not None:
            serials.add(row.serial)
        return sorted(serials)

    def revoke(
        self,
        certnames: Iterable[str],
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
        actor: Actor = SYSTEM,
    ) -> tuple[dict[str, list[int]], list[str]]:
        """Revoke every certificate of each name, with ONE CRL re-sign for the whole batch.

        The names' locks are held from reading their serials until the new CRL is
        installed, so nothing issued to them (a renewal, say) escapes: when this returns,
        every serial ever issued to each name is on the CRL, and no renewal with one of
        those certificates can succeed any more.

        Returns:
          ({name: serials newly revoked or already revoked}, [names with nothing to revoke]).
        """
        names = list(certnames)
        with self._names_locked(n for n in names if pki.is_safe_name(n)):
            found, missing, added = self._revoke_held(names, reason, actor)
        self._audit_revoke(found, added, reason, actor)
        return found, missing

    def _revoke_held(
        self, names: list[str], reason: x509.ReasonFlags, actor: Actor
    ) -> tuple[dict[str, list[int]], list[str], set[int]]:
        """:meth:`revoke`'s work; the caller holds the names' locks. Also returns the serials
        newly put on the CRL."""
        found: dict[str, list[int]] = {}
        missing: list[str] = []
        for name in names:
            serials = self.serials_for(name) if pki.is_safe_name(name) else []
            if serials:
                found[name] = serials
            else:
                missing.append(name)
        all_serials = {s for ss in found.values() for s in ss}
        added = self._add_to_crl(all_serials, reason, actor=actor) if all_serials else set()
        return found, missing, added

    def _audit_revoke(
        self,
        found: dict[str, list[int]],
        added: set[int],
        reason: x509.ReasonFlags,
        actor: Actor,
    ) -> None:
        for name, serials in found.items():
            self.audit.event(
                "revoke",
                actor,
                certname=name,
                serials=serials,
                newly_revoked=[s for s in serials if s in added],
                reason=reason.name,
            )

    def _add_to_crl(
        self, serials: set[int], reason: x509.ReasonFlags, *, actor: Actor = SYSTEM
    ) -> set[int]:
        with self.cadir.lock("crl")():
            current = self.index.revocation_rows()
            known = {row[0] for row in current}
            now = self.clock()
            new = [pki.Revocation(s, now, reason) for s in sorted(serials - known)]
            if new:
                when, code = now.timestamp(), pki.reason_code(reason)
                rows = current + [(e.serial, when, code) for e in new]
                self._write_crl(rows, now, added=new, actor=actor, reason=reason.name)
        return {e.serial for e in new}

    def _write_crl(
        self,
        entries: list[tuple[int, float, int | None]],
        now: dt.datetime,
        *,
        added: list[pki.Revocation] | None = None,
        actor: Actor = SYSTEM,
        reason: str | None = None,
    ) -> int:
        """Sign and atomically install a new CA CRL (caller holds the crl lock); its number.

        *entries* are (serial, unix time, CRLReason code). With *added*, only those
        are new to the index; otherwise the index's revocations are replaced.

        Once the file is installed the CRL is in effect (it is what is served), so a
        ``crl-published`` audit event is written at once, and a failure to update the
        index afterwards (a full disk) does not fail the call: it is logged, and the
        index catches up from the file on its next refresh (its stamp for the CRL is
        recorded only when the index commits).
        """
        key, ca_cert = self.signing_material()
        number = self.index.crl_number() + 1
        der = pki.build_crl_der(
            ca_key=key,
            ca_cert=ca_cert,
            entries=entries,
            number=number,
            this_update=now - dt.timedelta(minutes=1),
            next_update=now + self.settings.crl_ttl,
        )
        data = pki.pem_crl(der)
        # Keep any other CRLs of the chain (intermediate-CA setups) after ours.
        existing = self.cadir.read_cached(self.cadir.cacrl) or b""
        issuer = ca_cert.subject.public_bytes()
        for block in pki.split_pem(existing, "X509 CRL"):
            if pki.crl_header(block).issuer != issuer:
                data += block + b"\n"
        tmp = self.cadir.stage(self.cadir.cacrl, data)
        installed = False
        try:
            with self.index.transaction() as conn:
                _fs.publish(tmp, self.cadir.cacrl)
                installed = True
                fields: dict[str, object] = {"crl_number": number, "entries": len(entries)}
                if added:
                    fields["revoked"] = [e.serial for e in added]
                if reason is not None:
                    fields["reason"] = reason
                if not self.audit.event("crl-published", actor, **fields):
                    log.error("CRL number %d is in effect but its audit record is lost", number)
                if added is not None:
                    self.index.add_revoked(conn, added, number)
                else:
                    self.index.replace_revocation_rows(conn, entries, number)
                self.index.record(conn, "crl")
        except BaseException as exc:
            if not installed:
                _fs.discard(tmp)
                raise
            if not isinstance(exc, StoreError):
                raise
            log.warning(
                "CRL number %d is installed and in effect, but the index could not be updated "
                "(%s); it catches up from the CRL file on its next refresh",
                number,
                exc,
            )
        log.info("Published CRL number %d with %d entries", number, len(entries))
        return number

    def crl_info(self) -> dict[str, object]:
        _, ca_cert = self.signing_material()
        crl = own_crl(self.cadir.read_crl(), self.cadir.read_ca_cert())
        if crl is None:
            raise StoreError(f"{self.cadir.cacrl} holds no CRL")
        now = self.clock()
        next_update = crl.next_update_utc
        return {
            "issuer": crl.issuer.rfc4514_string(),
            "crl_number": pki.crl_number(crl),
            "this_update": crl.last_update_utc.isoformat(),
            "next_update": next_update.isoformat() if next_update else None,
            "seconds_to_next_update": int((next_update - now).total_seconds())
            if next_update
            else None,
            "entries": self.index.revoked_count(),
            "bytes": len(self.cadir.read_crl()),
            "signature_valid": crl.is_signature_valid(ca_cert.public_key()),  # type: ignore[arg-type]
        }

    def crl_needs_refresh(self) -> bool:
        """True if our CRL is missing, unreadable, or within the refresh margin of nextUpdate.

        Reads only the CRL's header, so it costs microseconds at any CRL size.
        """
        _, ca_cert = self.signing_material()
        issuer = ca_cert.subject.public_bytes()
        header = None
        for block in pki.split_pem(self.cadir.read_crl(), "X509 CRL"):
            try:
                candidate = pki.crl_header(block)
            except ValueError:
                continue
            if candidate.issuer == issuer:
                header = candidate
                break
        if header is None or header.next_update is None:
            return True
        return header.next_update - self.clock() < self.settings.effective_crl_refresh_margin

    def refresh_crl(self, *, force: bool = False, actor: Actor = SYSTEM) -> bool:
        """Re-issue the CRL (new number, fresh nextUpdate) if it is due or *force*.

        With ``crl_prune_expired`` the entries of certificates that have expired (per
        the inventory) are dropped, as RFC 5280 allows.
        """
        with self.cadir.lock("crl")():
            if not force and not self.crl_needs_refresh():
                return False
            now = self.clock()
            entries = self.index.revocation_rows()
            pruned = 0
            if self.settings.crl_prune_expired:
                expired = self.index.expired_serials(now)
                kept = [e for e in entries if e[0] not in expired]
                pruned = len(entries) - len(kept)
                entries = kept
            # Nothing pruned: the index's revocations stay as they are (only the number moves).
            number = self._write_crl(entries, now, added=None if pruned else [], actor=actor)
        self.audit.event(
            "crl-refresh",
            actor,
            crl_number=number,
            entries=len(entries),
            pruned=pruned,
        )
        return True

    # --- clean and delete -----------------------------------------------------------------------
    def clean(
        self, certnames: Iterable[str], *, actor: Actor = SYSTEM
    ) -> tuple[list[str], list[str]]:
        """Revoke, then delete signed/<name>.pem (puppetserver's clean). One CRL re-sign.

        Revocation and deletion happen under the same hold of the names' locks (see
        :meth:`revoke`), so nothing can be issued to a name in between: a certificate
        file that survives a clean would be one issued after it, to a new request.

        Returns (cleaned names, names that had nothing to revoke).
        """
        names = list(dict.fromkeys(certnames))
        reason = x509.ReasonFlags.key_compromise
        with self._names_locked(n for n in names if pki.is_safe_name(n)):
            found, missing, added = self._revoke_held(names, reason, actor)
            self._audit_revoke(found, added, reason, actor)
            for name in found:
                with self.index.transaction() as conn:
                    _unlink(self.cadir.cert_path(name))
                    self.index.delete_cert(conn, name)
                    self.index.record(conn, "signed")
                self.audit.event("clean", actor, certname=name, serials=found[name])
        return list(found), missing

    def delete(self, certname: str, *, actor: Actor = SYSTEM) -> None:
        """DELETE certificate_status: remove the cert and CSR files, without revoking."""
        if not pki.is_safe_name(certname) or self.index.status(certname) is None:
            raise NotFound("Invalid certificate subject.")
        with self.cadir.name_lock(certname)(), self.index.transaction() as conn:
            _unlink(self.cadir.cert_path(certname))
            _unlink(self.cadir.csr_path(certname))
            self.index.delete_cert(conn, certname)
            self.index.delete_csr(conn, certname)
            self.index.record(conn, "signed", "requests")
        self.audit.event("delete", actor, certname=certname)


def _server_identity_hint(settings: Settings) -> str | None:
    """What to do if the CA server has no TLS certificate (None if it has one)."""
    cert, key = settings.effective_server_cert, settings.effective_server_key
    if cert.exists() and key.exists():
        return None
    missing = cert if not cert.exists() else key
    if settings.server_cert is not None or settings.server_key is not None:
        return f"{missing} (server_cert/server_key) does not exist; 'splitca serve' needs it."
    taken = CADir(settings.cadir).cert_path(settings.certname)
    if os.path.lexists(taken):
        return (
            f"The CA server has no TLS certificate ({missing} is missing), and {taken} exists "
            "(splitca never replaces it): 'splitca setup --server-identity --certname NAME' "
            "issues one under another name, or set server_cert and server_key."
        )
    return (
        f"The CA server has no TLS certificate ({missing} is missing); "
        f"'splitca setup --server-identity' issues one for {settings.certname}."
    )


def _unlink(path: os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"Path {path} exists but could not be deleted: {exc.strerror}") from exc


def _fs_stamp(path: os.PathLike[str]) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _describe_key(key: CertificateIssuerPrivateKeyTypes) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__
