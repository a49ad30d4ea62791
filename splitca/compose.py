"""The composition root: the one place that names concrete strategies and wires the CA and its app."""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from splitca.admin.local import LocalAdmin
from splitca.admin.port import Admin, RemoteTarget
from splitca.core.audit import SYSTEM, Actor, AuditSink, TeeAudit
from splitca.core.autosign import Autosigner, Deferred, Strategies, make_autosigner
from splitca.core.ports import CAStore
from splitca.core.usecases.chain import RootSpec
from splitca.core.usecases.importca import ImportInput
from splitca.enrollment.autosign import Ledger, RegistryAutosigner, make_registry_autosigner
from splitca.enrollment.backends.directory import DirectoryRegistry
from splitca.enrollment.registry import Registry
from splitca.errors import ConfigError, StoreError
from splitca.store.files.audit import AuditLog
from splitca.store.files.cadir import CADir
from splitca.store.files.filestore import FileStore
from splitca.store.files.passphrase import passphrase_reader, read_passphrase
from splitca.store.files.signer import KeyFileSigner

from .authority import CertificateAuthority, SetupResult

if TYPE_CHECKING:
    from splitca.store.postgres.database import Database
    from splitca.store.postgres.pgstore import PgStore
from .clock import utcnow
from .config import Settings

__all__ = [
    "AUTOSIGN_STRATEGIES",
    "build_autosigner",
    "build_ca",
    "ca_key_passphrase",
    "export_cadir",
    "import_ca",
    "import_cadir",
    "migrate_database",
    "open_admin",
    "open_audit",
    "open_ca",
    "open_registry",
    "open_store",
    "setup_ca",
]


def open_registry(settings: Settings) -> Registry:
    """The backend named by the ``registry`` setting (remote ones are imported lazily).

    Unset, it is the CA's own store: ``<cadir>/registry``, or the database's
    registrations table on the PostgreSQL store (docs/ha.md).
    """
    if settings.store and not settings.registry:
        from splitca.enrollment.backends.postgres import PgRegistry

        return PgRegistry(_prepared_database(settings))
    location = settings.effective_registry
    timeout = settings.registry_timeout.total_seconds()
    if location.startswith(("http://", "https://")):
        from splitca.enrollment.backends.http import HttpRegistry

        return HttpRegistry(
            location,
            timeout=timeout,
            negative_ttl=settings.registry_negative_ttl.total_seconds(),
            ca_file=settings.registry_ca_file,
        )
    if location.startswith("s3://"):
        from splitca.enrollment.backends.s3 import S3Registry

        return S3Registry(
            location,
            timeout=timeout,
            endpoint_url=settings.registry_s3_endpoint or None,
            region=settings.registry_s3_region or None,
        )
    return DirectoryRegistry(Path(location))


def _registry_autosigner(*, settings: Settings, **_: object) -> RegistryAutosigner:
    return make_registry_autosigner(
        settings=settings,
        registry_factory=lambda: open_registry(settings),
        ledger=_database_ledger(settings) if settings.store else None,
    )


def _database_ledger(settings: Settings) -> Ledger:
    """On the PostgreSQL store the redeemed-token ledger is the database's, shared by every
    replica whatever the registry backend (each host's own files would let each replica
    redeem a token of a read-only registry once)."""
    from splitca.enrollment.backends.postgres import PgLedger

    return PgLedger(_database(settings))


# `autosign: <name>` strategies; paths and true/false are policy's own (allowlist, executable).
AUTOSIGN_STRATEGIES: Strategies = {"registry": _registry_autosigner}


def build_autosigner(settings: Settings) -> Autosigner:
    """The autosigner for ``settings.autosign``; ConfigError for a value it cannot honour."""
    return make_autosigner(
        settings.autosign,
        timeout=settings.autosign_timeout.total_seconds(),
        strategies=AUTOSIGN_STRATEGIES,
        settings=settings,
    )


def open_store(settings: Settings) -> CAStore:
    """The store named by ``store``: the file store in ``cadir``, or a PostgreSQL database.

    With a database, ``cadir`` still holds this host's CA key (``ca_key.pem``) and a copy
    of the CA certificate, which the signer reads (docs/ha.md). psycopg is imported only
    here, only then.
    """
    if not settings.store:
        return FileStore(settings.cadir)
    return _open_pg(settings)


def _no_driver(exc: ImportError) -> ConfigError:
    return ConfigError(
        f"store: the PostgreSQL store needs psycopg ({exc.name} is not installed): "
        "pip install 'splitca[postgresql]'"
    )


def _open_pg(settings: Settings) -> PgStore:
    try:
        from splitca.store.postgres.pgstore import PgStore
    except ImportError as exc:
        raise _no_driver(exc) from None
    return PgStore(settings.store, key_dir=settings.cadir, database=_database(settings))


# One Database (and so one pair of pools) per process for the store, the registry and the
# audit trail of the same settings, while any of them is alive.
_DATABASES: weakref.WeakValueDictionary[tuple[object, ...], Database] = (
    weakref.WeakValueDictionary()
)
_DATABASES_GUARD = threading.Lock()
_MIGRATED: weakref.WeakSet[Database] = weakref.WeakSet()


def _database(settings: Settings) -> Database:
    """The database named by ``store`` (ConfigError without psycopg installed)."""
    try:
        from splitca.store.postgres.database import Database
    except ImportError as exc:
        raise _no_driver(exc) from None
    password = _database_password(settings.database_password_file)
    timeout = settings.database_timeout.total_seconds()
    pool_size = settings.threads + 2  # a connection per request thread, and upkeep's
    key = (settings.store, password, timeout, pool_size)
    with _DATABASES_GUARD:
        db = _DATABASES.get(key)
        if db is None:
            db = Database(settings.store, password=password, timeout=timeout, pool_size=pool_size)
            _DATABASES[key] = db
    return db


def _prepared_database(settings: Settings) -> Database:
    """The database, its schema brought up to date once per process (as the store does at
    start), for the commands that reach only the registry (``splitca register``...)."""
    from splitca.store.postgres import schema

    db = _database(settings)
    if db not in _MIGRATED:
        with db.connection() as conn:
            if schema.current_version(conn) != schema.LATEST:
                schema.migrate(conn)
        _MIGRATED.add(db)
    return db


def migrate_database(settings: Settings) -> tuple[int, int]:
    """Create or upgrade the database's schema (``splitca db migrate``): (before, after)."""
    store = _pg_for_db_command(settings)
    try:
        return store.migrate()
    finally:
        store.shutdown()


def import_cadir(settings: Settings, source: Path, *, force: bool = False) -> dict[str, int]:
    """Load the cadir *source* into the database (``splitca db import``); what it holds now."""
    from splitca.store.postgres.transfer import import_cadir as load

    store = _pg_for_db_command(settings)
    try:
        return load(store, source, force=force)
    finally:
        store.shutdown()


def export_cadir(settings: Settings, dest: Path) -> dict[str, int]:
    """Write the database's CA as a new cadir *dest* (``splitca db export``)."""
    from splitca.store.postgres.transfer import export_cadir as dump

    store = _pg_for_db_command(settings)
    try:
        return dump(store, dest)
    finally:
        store.shutdown()


def _pg_for_db_command(settings: Settings) -> PgStore:
    if not settings.store:
        raise ConfigError(
            "store: 'splitca db' works on the PostgreSQL store; set store: postgresql://..."
        )
    return _open_pg(settings)


def _database_password(path: Path | None) -> str | None:
    """The first line of ``database_password_file`` (None: libpq's PGPASSWORD/PGPASSFILE)."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # the message names the file, never its text
        raise StoreError(
            f"cannot read database_password_file {path}: {type(exc).__name__}"
        ) from None
    return text.splitlines()[0] if text else ""


def open_audit(settings: Settings) -> AuditSink:
    """The audit sink named by the settings: the ``audit_log`` JSON-lines file; on the
    PostgreSQL store the database's audit table, and also ``audit_log`` if it is set."""
    if not settings.store:
        return AuditLog(settings.effective_audit_log)
    from splitca.store.postgres.audit import PgAudit

    database = PgAudit(_database(settings))
    if settings.audit_log is None:
        return database
    return TeeAudit(database, AuditLog(settings.audit_log))


def build_ca(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    autosigner: Autosigner | None = None,
    audit: AuditSink | None = None,
) -> CertificateAuthority:
    """The CA object over the store, signer and audit sink the settings name (nothing is read).

    Without *autosigner* the ``autosign`` setting is honoured when first needed.
    """
    return CertificateAuthority(
        settings,
        store=open_store(settings),
        signer=KeyFileSigner(CADir(settings.cadir), passphrase=passphrase_reader(settings)),
        audit=open_audit(settings) if audit is None else audit,
        autosigner=Deferred(lambda: build_autosigner(settings))
        if autosigner is None
        else autosigner,
        clock=clock,
    )


def open_ca(
    settings: Settings,
    *,
    autosign_at_start: bool = True,
    clock: Callable[[], dt.datetime] = utcnow,
    autosigner: Autosigner | None = None,
    audit: AuditSink | None = None,
) -> CertificateAuthority:
    """Open the existing CA for an edge (server, WSGI app, CLI); StoreError if there is none.

    Edges that take CSRs build the autosigner at start, so a bad ``autosign`` fails before
    the first request (``autosign_at_start``); the CLI, which never autosigns, defers it
    so an unused setting neither warns nor fails its commands. The core never imports the
    enrollment adapters (registry backends pull in requests or boto3): they are named here.
    """
    if autosigner is None and autosign_at_start:
        autosigner = build_autosigner(settings)
    ca = build_ca(settings, clock=clock, autosigner=autosigner, audit=audit)
    ca.require_ca()
    return ca


def setup_ca(
    settings: Settings,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    server_identity: bool = False,
    key_passphrase: bytes | None = None,
    intermediate: RootSpec | None = None,
) -> SetupResult:
    """Create the CA named by ``settings`` (see :func:`splitca.core.usecases.setup.setup`).

    With ``encrypt_ca_key`` the passphrase is read first (a missing one fails before
    anything is written) and the key is written encrypted.
    """
    if settings.encrypt_ca_key and key_passphrase is None:
        key_passphrase = read_passphrase(settings)
    return build_ca(settings, clock=clock).setup(
        server_identity=server_identity, key_passphrase=key_passphrase, intermediate=intermediate
    )


def ca_key_passphrase(settings: Settings) -> bytes:
    """The CA key's passphrase from its configured source (ConfigError if there is none)."""
    return read_passphrase(settings)


def open_admin(
    remote: RemoteTarget | None,
    *,
    settings: Callable[[], Settings],
    ca: Callable[[], CertificateAuthority],
    actor: Actor,
    registry_actor: Actor,
) -> Admin:
    """What the operator commands administer: the CA's HTTP API at ``remote.url`` (with the
    admin identity given, or the agent ssldir's), else this host's CA and registry, each
    opened on first use (*settings*, *ca*) under the CLI's actors."""
    if remote is not None:
        from splitca.admin.remote import RemoteAdmin  # requests only when it is used

        return RemoteAdmin.connect(remote)
    return LocalAdmin(
        settings=settings,
        ca=ca,
        registry=lambda: open_registry(settings()),
        audit=lambda: open_audit(settings()),
        actor=actor,
        registry_actor=registry_actor,
    )


def import_ca(
    settings: Settings,
    given: ImportInput,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    actor: Actor = SYSTEM,
) -> SetupResult:
    """Import an external CA into the empty cadir of ``settings`` (see usecases.importca)."""
    return build_ca(settings, clock=clock).import_ca(given, actor=actor)
