"""The database schema, created and upgraded by splitca, its version recorded; one migrator at a time."""

from __future__ import annotations

from typing import Any

import psycopg

from splitca.errors import StoreError
from splitca.store.postgres.database import MIGRATE_LOCK

__all__ = ["LATEST", "current_version", "migrate"]

# Each step upgrades the schema from the version before it; never edit a released step.
_STEPS: dict[int, str] = {
    1: """
CREATE TABLE splitca.ca (
  id integer PRIMARY KEY CHECK (id = 1),
  cert bytea NOT NULL, pub bytea NOT NULL, cert_modified double precision NOT NULL,
  crl bytea NOT NULL, crl_number numeric NOT NULL, crl_modified double precision NOT NULL,
  crl_version bigint NOT NULL DEFAULT 1);
CREATE SEQUENCE splitca.serials AS bigint MINVALUE 1 START 1;
CREATE TABLE splitca.inventory (
  serial numeric PRIMARY KEY, name text COLLATE "C" NOT NULL,
  not_before text NOT NULL, not_after text NOT NULL, not_after_ts bigint);
CREATE INDEX inventory_name ON splitca.inventory (name);
CREATE INDEX inventory_not_after ON splitca.inventory (not_after_ts);
CREATE TABLE splitca.certs (
  name text COLLATE "C" PRIMARY KEY, serial numeric NOT NULL, not_after_ts bigint NOT NULL,
  status text NOT NULL, pem bytea NOT NULL, modified double precision NOT NULL);
CREATE INDEX certs_serial ON splitca.certs (serial);
CREATE TABLE splitca.csrs (
  name text COLLATE "C" PRIMARY KEY, status text NOT NULL, reason text NOT NULL DEFAULT '',
  pem bytea NOT NULL, modified double precision NOT NULL);
CREATE TABLE splitca.revoked (
  serial numeric PRIMARY KEY, pos bigserial NOT NULL, date_ts double precision NOT NULL,
  reason integer);
CREATE INDEX revoked_pos ON splitca.revoked (pos);
CREATE FUNCTION splitca.top_serial() RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT greatest(coalesce((SELECT max(serial) FROM splitca.inventory), 0),
                  coalesce((SELECT max(serial) FROM splitca.certs), 0)) $$;
-- The next serial: never below one already issued (even if the sequence lags after a
-- restore), never handed out twice (the inventory's key), its row committed with it.
CREATE FUNCTION splitca.reserve_serial(p_name text, p_nb text, p_na text, p_na_ts bigint)
RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE s numeric; top numeric; got numeric;
BEGIN
  LOOP
    s := nextval('splitca.serials');
    top := splitca.top_serial();
    IF s <= top THEN
      s := top + 1;
      PERFORM setval('splitca.serials', s::bigint, true);
    END IF;
    INSERT INTO splitca.inventory (serial, name, not_before, not_after, not_after_ts)
      VALUES (s, p_name, p_nb, p_na, p_na_ts) ON CONFLICT (serial) DO NOTHING
      RETURNING serial INTO got;
    IF got IS NOT NULL THEN RETURN got; END IF;
  END LOOP;
END $$;
-- Move the sequence past serial s (never back).
CREATE FUNCTION splitca.serial_at_least(s numeric) RETURNS void LANGUAGE plpgsql AS $$
DECLARE nxt numeric;
BEGIN
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO nxt
    FROM splitca.serials;
  IF nxt <= s THEN PERFORM setval('splitca.serials', s::bigint, true); END IF;
END $$;
-- Move a lagging sequence past every issued serial; true if it moved.
CREATE FUNCTION splitca.repair_serial() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE nxt numeric; top numeric;
BEGIN
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO nxt
    FROM splitca.serials;
  top := splitca.top_serial();
  IF nxt > top THEN RETURN false; END IF;
  PERFORM setval('splitca.serials', top::bigint, true);
  RETURN true;
END $$;
""",
    2: """
CREATE TABLE splitca.crl_fetches (
  name text COLLATE "C" PRIMARY KEY, number numeric NOT NULL, at double precision NOT NULL);
""",
    3: """
CREATE TABLE splitca.refusals (
  id bigserial PRIMARY KEY, at double precision NOT NULL, certname text NOT NULL,
  kind text NOT NULL, reason text NOT NULL, address text NOT NULL);
CREATE INDEX refusals_at ON splitca.refusals (at);
""",
    # Pre-registrations and the ledger of redeemed tokens (enrollment/backends/postgres.py)
    # and the audit trail (store/postgres/audit.py).
    4: """
CREATE TABLE splitca.registrations (
  certname text COLLATE "C" PRIMARY KEY,
  token_sha256 text NOT NULL CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
  created timestamptz NOT NULL, expires timestamptz NOT NULL, redeemed timestamptz,
  classes jsonb NOT NULL DEFAULT '[]', parameters jsonb NOT NULL DEFAULT '{}',
  environment text NOT NULL DEFAULT '');
CREATE TABLE splitca.redeemed_tokens (
  token_sha256 text PRIMARY KEY, certname text COLLATE "C" NOT NULL,
  redeemed timestamptz NOT NULL);
CREATE TABLE splitca.audit (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL, event text NOT NULL,
  certname text COLLATE "C", host text NOT NULL, record jsonb NOT NULL);
CREATE INDEX audit_at ON splitca.audit (at);
CREATE INDEX audit_event ON splitca.audit (event, at);
CREATE INDEX audit_certname ON splitca.audit (certname, at);
""",
    # A revoked serial was issued by this CA even when no inventory row or certificate
    # says so (a cadir imported with its inventory lost or its serial file restored): the
    # floor of new serials is above it too (pgstore._RESERVE inlines the same rule), if
    # the sequence (bigint) could reach it: a CRL may list another tool's 128-bit serials.
    # An imported inventory may list one serial under several names (a puppetserver whose
    # serial file was restored issued it again): the inventory keeps one, inventory_also
    # the others, so each name's serials are all revoked with it.
    5: """
CREATE TABLE splitca.inventory_also (
  serial numeric NOT NULL, name text COLLATE "C" NOT NULL,
  not_before text NOT NULL, not_after text NOT NULL, not_after_ts bigint,
  PRIMARY KEY (serial, name));
CREATE INDEX inventory_also_name ON splitca.inventory_also (name);
CREATE OR REPLACE FUNCTION splitca.top_serial() RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT greatest(coalesce((SELECT max(serial) FROM splitca.inventory), 0),
                  coalesce((SELECT max(serial) FROM splitca.certs), 0),
                  coalesce((SELECT max(serial) FROM splitca.revoked
                            WHERE serial <= 9223372036854775807), 0)) $$;
""",
}
LATEST = max(_STEPS)


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version recorded in the database (0: none yet, nor any table of splitca's).

    Raises StoreError for splitca's tables without a readable version (a damaged or
    hand-edited database): no migration may run over tables of an unknown version.
    """
    meta, ca = conn.execute(
        "SELECT to_regclass('splitca.meta'), to_regclass('splitca.ca')"
    ).fetchone() or (None, None)
    row = None
    if meta is not None:
        row = conn.execute("SELECT value FROM splitca.meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        if ca is not None:
            raise StoreError(
                "the database holds splitca's tables but no schema version (splitca.meta):"
                " damaged or not made by splitca; restore it from a backup"
            )
        return 0
    try:
        return int(row[0])
    except ValueError:
        raise StoreError(
            f"the database records schema version {row[0]!r}, not a number: damaged;"
            " restore it from a backup"
        ) from None


def migrate(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Bring the schema to :data:`LATEST`; returns (version before, version after).

    One transaction under an advisory lock: replicas starting at once queue here, and
    each after the first finds the work done. A database newer than this splitca is
    refused (StoreError) rather than written with an older schema's assumptions.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATE_LOCK)
        before = current_version(conn)
        if before > LATEST:
            raise StoreError(
                f"the database has schema version {before}, newer than this splitca's "
                f"({LATEST}): upgrade splitca on this host"
            )
        if before < LATEST:
            conn.execute("CREATE SCHEMA IF NOT EXISTS splitca")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS splitca.meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            for version in range(before + 1, LATEST + 1):
                conn.execute(_STEPS[version].encode())
            conn.execute(
                "INSERT INTO splitca.meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(LATEST),),
            )
    return before, LATEST
