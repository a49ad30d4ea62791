"""Moving a CA between a cadir (splitca's or puppetserver's) and the database, serials and all, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitca import pki
from splitca.errors import Conflict, StoreError
from splitca.store.files.cadir import CADir, inventory_line, parse_inventory
from splitca.store.files.filestore import FileStore
from splitca.store.postgres.pgstore import PgStore

__all__ = ["export_cadir", "import_cadir"]

_TABLES = "ca, inventory, inventory_also, certs, csrs, revoked"


def _counts(conn: Any) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM certs), (SELECT count(*) FROM csrs),"
        " (SELECT count(*) FROM inventory) + (SELECT count(*) FROM inventory_also),"
        " (SELECT count(*) FROM revoked),"
        " (SELECT coalesce(max(crl_number), 0) FROM ca),"
        " (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM serials),"
        " splitca.top_serial()"
    ).fetchone()
    names = ("certificates", "requests", "inventory", "revocations", "crl_number")
    out = dict(zip(names, (int(v) for v in row[:5]), strict=True))
    out["next_serial"] = max(int(row[5]), int(row[6]) + 1)
    return out


def import_cadir(pg: PgStore, source: Path, *, force: bool = False) -> dict[str, int]:
    """Load the CA in *source* into the database in one transaction, checked before commit.

    Serials, the inventory, certificates, pending requests (with why they are pending),
    revocations, the CRL and its number are kept as they are. A database that holds a
    CA (or any certificate) is refused (Conflict) unless *force*, which replaces it but
    keeps its floors: the next serial and the next CRL number stay above every one the
    replaced CA used (so the CRL number recorded may be above the imported CRL's).
    The CA key is copied to this host's key_dir if it has none (never replaced).
    """
    src = FileStore(source)
    if missing := src.missing_parts():
        raise StoreError(f"{source} is not a complete CA directory (missing {', '.join(missing)})")
    src.prepare()  # its index, in <source>/.splitca/ (puppetserver ignores it)
    src.refresh()
    c = src.cadir
    ca_cert = c.read_ca_cert()
    key = c.read_ca_key()
    own_key = pg.key_path.read_bytes() if pg.key_path.exists() else None
    if own_key is not None and own_key != key:
        raise Conflict(f"{pg.key_path} holds another CA key; move it away to import {source}")
    cert = pki.load_certificates(ca_cert)[0]
    _check_key(source, key, ca_cert)
    pub = c.capub.read_bytes() if c.capub.exists() else pki.public_key_pem(cert.public_key())
    crl = src.crl()
    # One row per serial (the last line naming it); a serial the file lists under other
    # names too (issued twice) keeps those in inventory_also, each name's serial revocable.
    inventory: dict[int, tuple[int, str, str, str, int | None]] = {}
    also: dict[tuple[int, str], tuple[int, str, str, str, int | None]] = {}
    for line in parse_inventory(c.inventory.read_bytes() if c.inventory.exists() else b""):
        na = line.not_after_dt
        ts = None if na is None else int(na.timestamp())
        before = inventory.get(line.serial)
        if before is not None and before[1] != line.certname:
            also[(before[0], before[1])] = before
        also.pop((line.serial, line.certname), None)
        inventory[line.serial] = (line.serial, line.certname, line.not_before, line.not_after, ts)
    certs, csrs = [], []
    for row in src.statuses():
        blob = src.csr(row.name) if row.state == "requested" else src.cert(row.name)
        if blob is None:
            continue  # removed while we read
        modified = blob.modified or 0.0
        if row.state == "requested":
            csrs.append((row.name, row.status, row.reason, blob.data, modified))
        else:
            certs.append((row.name, row.serial, row.not_after_ts, row.status, blob.data, modified))
    revocations = src.revocations()
    expected = {
        "certificates": len(certs),
        "requests": len(csrs),
        "inventory": len(inventory) + len(also),
        "revocations": len(revocations),
        "crl_number": src.crl_number(),
    }
    next_serial = c.read_serial()
    pg.prepare()
    # The crl lock first: a replica publishing a CRL made from the revocations it read
    # finishes before we replace them (else its CRL would be installed over ours).
    with pg.locked("crl"), pg.db.transaction() as conn:
        conn.execute(f"LOCK TABLE {_TABLES} IN EXCLUSIVE MODE")  # replicas wait for us
        held = _counts(conn)
        # The CRL's version only moves forward, across a replacement too: each replica
        # serves its cached CRL while the version is the one it cached (PgStore.crl).
        last = conn.execute("SELECT coalesce(max(crl_version), 0) FROM ca").fetchone()
        version = int(last[0] if last else 0) + 1
        # What a replaced CA used stays used: its serials (the same CA would issue them
        # again) and its CRL numbers (the next CRL is numbered above every one before).
        expected["crl_number"] = max(expected["crl_number"], held["crl_number"])
        serial_floor = max(next_serial, held["next_serial"])
        if held["certificates"] or held["inventory"] or held["requests"] or _has_ca(conn):
            if not force:
                raise Conflict(
                    f"{pg.db.shown} already holds a CA ({held['certificates']} certificates, "
                    f"{held['inventory']} serials); --force replaces it"
                )
            conn.execute(f"TRUNCATE {_TABLES}")
        conn.execute(
            "INSERT INTO ca (id, cert, pub, cert_modified, crl, crl_number, crl_modified,"
            " crl_version) VALUES (1, %s, %s, %s, %s, %s, %s, %s)",
            (ca_cert, pub, c.mtime(c.cacert) or 0.0, crl.data, expected["crl_number"],
             crl.modified or 0.0, version),
        )  # fmt: skip
        _copy(
            conn,
            "inventory (serial, name, not_before, not_after, not_after_ts)",
            inventory.values(),
        )
        _copy(
            conn,
            "inventory_also (serial, name, not_before, not_after, not_after_ts)",
            also.values(),
        )
        _copy(conn, "certs (name, serial, not_after_ts, status, pem, modified)", certs)
        _copy(conn, "csrs (name, status, reason, pem, modified)", csrs)
        _copy(conn, "revoked (serial, date_ts, reason)", revocations)
        conn.execute("SELECT setval('serials', greatest(%s, splitca.top_serial(), 1)::bigint, true)",
                     (serial_floor - 1,))  # fmt: skip
        got = _counts(conn)
        wanted = {**expected, "next_serial": max(serial_floor, got["next_serial"])}
        if got != wanted:  # raising here rolls the whole import back
            raise StoreError(f"import of {source} does not add up: read {wanted}, wrote {got}")
    if own_key is None:
        pg.host.ensure_dir()
        pg.host.write_key(key)
    pg.prepare()  # this host's copy of the CA certificate
    return got


def _check_key(source: Path, key: bytes, ca_cert: bytes) -> None:
    """Refuse a key that signs for no certificate of the bundle (another CA's key): the
    database would hold a CA no replica can sign for. An encrypted key is checked where
    its passphrase is, when the CA opens."""
    if pki.is_encrypted_key(key):
        return
    try:
        found = pki.signing_certificate(pki.load_certificates(ca_cert), pki.load_private_key(key))
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{source}/ca_key.pem is not a usable CA key: {exc}") from None
    if found is None:
        raise StoreError(
            f"{source}/ca_key.pem does not match the CA certificate {source}/ca_crt.pem"
        )


def _has_ca(conn: Any) -> bool:
    return conn.execute("SELECT 1 FROM ca").fetchone() is not None


def _copy(conn: Any, target: str, rows: Any) -> None:
    with conn.cursor().copy(f"COPY {target} FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def export_cadir(pg: PgStore, dest: Path) -> dict[str, int]:
    """Write the database's CA as a new puppetserver-layout cadir that FileStore and
    puppetserver serve (one consistent snapshot); the key is this host's copy, if any."""
    if dest.exists() and any(dest.iterdir()):
        raise Conflict(f"{dest} is not empty; export writes a new CA directory")
    with pg.db.transaction() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        ca = conn.execute("SELECT cert, pub, crl FROM ca WHERE id = 1").fetchone()
        if ca is None:
            raise StoreError(f"{pg.db.shown} holds no CA to export")
        counts = _counts(conn)
        inventory = conn.execute(
            "SELECT serial, not_before, not_after, name FROM inventory"
            " UNION ALL SELECT serial, not_before, not_after, name FROM inventory_also"
            " ORDER BY serial, name"
        ).fetchall()
        certs = conn.execute("SELECT name, pem FROM certs").fetchall()
        csrs = conn.execute("SELECT name, pem, reason FROM csrs").fetchall()
    c = CADir(dest)
    c.ensure_dirs()
    for name, pem in certs:
        c.write_public(c.cert_path(name), bytes(pem))
    for name, pem, _ in csrs:
        c.write_public(c.csr_path(name), bytes(pem))
    c.write_public(
        c.inventory, b"".join(inventory_line(int(s), nb, na, n) for s, nb, na, n in inventory)
    )
    for path, data in ((c.capub, ca[1]), (c.cacrl, ca[2]), (c.infra_crl, ca[2]),
                       (c.infra_inventory, b""), (c.infra_serials, b""), (c.cacert, ca[0])):  # fmt: skip
        c.write_public(path, bytes(data))
    c.write_serial(counts["next_serial"])
    if pg.key_path.exists():
        c.write_key(c.cakey, pg.key_path.read_bytes())  # last: a usable CA only when complete
    files = FileStore(dest)
    files.refresh()
    for name, _, reason in csrs:
        if reason:
            files.index.set_csr_reason(name, reason)
    have = files.counts()
    if (have["requested"], have["signed"] + have["revoked"]) != (len(csrs), len(certs)):
        raise StoreError(
            f"export to {dest} does not add up: the database had {len(certs)} certificates "
            f"and {len(csrs)} requests, the files have {have}"
        )
    return counts
