"""The PostgreSQL schema, as numbered migrations. Append new ones; never edit an applied one.

``upgrade()`` creates the database if it is missing, then applies pending migrations in one
transaction each under an advisory lock, so two processes upgrading at once do not race.
Why not Alembic: orderflow has no ORM models; a list of SQL steps is the whole need.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

OUTBOX_CHANNEL = "orderflow_outbox"  # NOTIFY channel the relay LISTENs on
_LOCK_ID = 0x0F1D_0001

MIGRATIONS: list[tuple[int, str]] = [
    (1, f"""
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    partner      text NOT NULL,
    key_prefix   text NOT NULL,             -- shown in logs and listings, never the key
    key_hash     text NOT NULL UNIQUE,      -- sha256 of the key
    rate_limit   text,                      -- limits notation; NULL = ORDERFLOW_RATE_LIMIT_B2B
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE orders (
    order_id          uuid PRIMARY KEY,
    channel           text NOT NULL CHECK (channel IN ('b2c', 'b2b')),
    partner_id        bigint REFERENCES api_keys(id),
    customer_email    text NOT NULL,
    model             jsonb NOT NULL,
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    reference         text,
    tracking_token    text NOT NULL,
    status            text NOT NULL,
    status_rank       smallint NOT NULL DEFAULT 0,
    price             numeric(12, 2),
    currency          text NOT NULL DEFAULT 'EUR',
    print_minutes     numeric(12, 1),
    failure_reason    text,
    idempotency_scope text,
    idempotency_key   text,
    request_hash      text,
    request_id        text,
    trace_id          text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX orders_status_created ON orders (status, created_at DESC);
CREATE INDEX orders_created ON orders (created_at DESC);
CREATE INDEX orders_partner ON orders (partner_id) WHERE partner_id IS NOT NULL;

CREATE TABLE order_status_history (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders(order_id),
    status      text NOT NULL,
    at          timestamptz NOT NULL,
    worker      text,
    detail      jsonb,
    duplicates  integer NOT NULL DEFAULT 0,  -- the same event seen again (redelivery)
    UNIQUE (order_id, status)
);

CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    message_id  text NOT NULL,
    payload     jsonb NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{{}}',  -- W3C traceparent/baggage of the request
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);

CREATE TABLE processed_messages (
    message_id   text NOT NULL,
    consumer     text NOT NULL,
    worker       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Wake the relay at commit time: NOTIFY is transactional, so it fires only for committed rows.
CREATE FUNCTION orderflow_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION orderflow_outbox_notify();
"""),
    # The dashboard's throughput chart counts done/failed per 30 s over the last 15 minutes;
    # without this it scans the whole history (13 ms at 100k orders, growing), with it it reads
    # the few hundred rows in the window (0.4 ms). Not CONCURRENTLY: migrations run in a
    # transaction; on a large live table create it CONCURRENTLY by hand first (IF NOT EXISTS).
    (2, """
CREATE INDEX IF NOT EXISTS order_status_history_status_at ON order_status_history (status, at);
"""),
    # Retention (orderflow.retention) finds what is past ORDERFLOW_RETENTION_DAYS by these
    # instead of scanning every mark and every order on each purge.
    (5, """
CREATE INDEX IF NOT EXISTS processed_messages_processed_at ON processed_messages (processed_at);
CREATE INDEX IF NOT EXISTS orders_idempotency_created ON orders (created_at)
    WHERE idempotency_key IS NOT NULL;
"""),
    # Recovery and exactly-once effects (docs/orderflow.md "Recovery"): the MES claims an order
    # before producing it, outbox rows that keep failing are parked, and the terminal statuses
    # get distinct ranks (done > failed > dead_lettered; done and failed are final).
    (4, """
CREATE TABLE mes_claims (
    order_id    uuid PRIMARY KEY,
    token       uuid NOT NULL,              -- one per attempt: a twin on the same worker differs
    worker      text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,       -- renewed while the worker lives; then free again
    finished_at timestamptz                 -- produced: never again
);
ALTER TABLE outbox
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN parked_at timestamptz;       -- gave up after ORDERFLOW_OUTBOX_MAX_ATTEMPTS
CREATE INDEX outbox_parked ON outbox (id) WHERE parked_at IS NOT NULL;
UPDATE orders SET status_rank = CASE status WHEN 'done' THEN 102 WHEN 'failed' THEN 101
    ELSE 100 END
 WHERE status IN ('done', 'failed', 'dead_lettered');
"""),
]


def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist. True if it was created."""
    params = conninfo_to_dict(dsn)
    name = params.get("dbname") or "postgres"
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # another process won the race
            return False
        return True


def upgrade(dsn: str) -> list[int]:
    """Create the database if missing and apply pending migrations; return the versions applied."""
    ensure_database(dsn)
    applied: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version integer PRIMARY KEY, applied_at timestamptz DEFAULT now())")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, text in sorted(MIGRATIONS):  # by version, whatever the list order
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(text)  # type: ignore[arg-type]  # static DDL, no user input
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)",
                                 (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


def current_version(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0
