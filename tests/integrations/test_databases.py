"""psycopg, psycopg2, asyncpg, SQLAlchemy and redis against the real PostgreSQL and Redis:
CLIENT spans, duration metrics, no double spans, uninstrument."""

from __future__ import annotations

import os
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import redis
import redis.asyncio
from opentelemetry.trace import SpanKind

from obskit.testing import Captured, init_for_tests

PG_DSN = os.environ.get("OBSKIT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OBSKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
OTHERS = "pika,aio_pika"  # tested in their own modules


def statement(span: Any) -> str | None:
    attrs = span.attributes or {}
    return attrs.get("db.query.text", attrs.get("db.statement"))


def db_spans(obs: Captured, sql: str) -> list[Any]:
    return [s for s in obs.spans if s.kind == SpanKind.CLIENT and statement(s) == sql]


def db_count(obs: Captured, operation: str, system: str = "postgresql") -> float | None:
    return obs.metric("db_client_operation_duration_seconds_count",
                      {"db_system": system, "operation": operation})


def cache_count(obs: Captured, operation: str) -> float | None:
    return obs.metric("cache_operation_duration_seconds_count",
                      {"cache_system": "redis", "operation": operation})


def test_psycopg_sync(obs: Captured) -> None:
    with psycopg.connect(PG_DSN) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + %s", (1,))
        assert cur.fetchone() == (42,)
        cur.execute("/* comment */ with t as (select 1) select * from t")
    (span,) = db_spans(obs, "SELECT 41 + %s")
    assert (span.attributes or {}).get("db.system", span.attributes.get("db.system.name")) \
        == "postgresql"
    assert db_count(obs, "SELECT") == 1
    assert db_count(obs, "WITH") == 1


async def test_psycopg_async(obs: Captured) -> None:
    async with await psycopg.AsyncConnection.connect(PG_DSN) as conn, conn.cursor() as cur:
        await cur.execute("SELECT 7")
        assert await cur.fetchone() == (7,)
    assert len(db_spans(obs, "SELECT 7")) == 1
    assert db_count(obs, "SELECT") == 1


def test_psycopg2(obs: Captured) -> None:
    conn = psycopg2.connect(PG_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE obskit_t (x int)")
            cur.execute("INSERT INTO obskit_t VALUES (%s)", (5,))
            cur.execute("SELECT x FROM obskit_t")
            assert cur.fetchall() == [(5,)]
    finally:
        conn.close()
    assert len(db_spans(obs, "SELECT x FROM obskit_t")) == 1
    assert (db_count(obs, "CREATE"), db_count(obs, "INSERT"), db_count(obs, "SELECT")) == (1, 1, 1)


async def test_asyncpg(obs: Captured) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        assert await conn.fetchval("SELECT 3") == 3
        stmt = await conn.prepare("SELECT $1::int * 2")
        assert await stmt.fetchval(21) == 42
    finally:
        await conn.close()
    assert len(db_spans(obs, "SELECT 3")) == 1
    assert db_count(obs, "SELECT") == 2  # the direct query and the prepared statement


def test_sqlalchemy_over_psycopg_makes_one_span_per_statement(obs: Captured) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_DSN.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1234")).scalar() == 1234
    engine.dispose()
    assert len(db_spans(obs, "SELECT 1234")) == 1  # the driver's, not a second SQLAlchemy one
    assert db_count(obs, "SELECT") >= 1


def test_sqlalchemy_own_spans_for_other_drivers(obs: Captured) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 1
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT nope FROM t"))
    (span,) = db_spans(obs, "SELECT x FROM t")
    assert span.attributes["db.system.name"] == "sqlite"
    assert span.attributes["db.operation.name"] == "SELECT"
    (failed,) = db_spans(obs, "SELECT nope FROM t")
    assert not failed.status.is_ok
    assert db_count(obs, "INSERT", "sqlite") == 1
    assert db_count(obs, "SELECT", "sqlite") == 2


def test_redis_sync_and_pipeline(obs: Captured) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set("obskit:test", "1")
    assert client.get("obskit:test") == b"1"
    with client.pipeline() as pipe:
        pipe.incr("obskit:test").delete("obskit:test").execute()
    client.close()
    names = [s.name for s in obs.spans if s.kind == SpanKind.CLIENT]
    assert "SET" in names and "GET" in names
    assert (cache_count(obs, "SET"), cache_count(obs, "GET"), cache_count(obs, "PIPELINE")) \
        == (1, 1, 1)


async def test_redis_asyncio(obs: Captured) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    await client.set("obskit:async", "2")
    assert await client.get("obskit:async") == b"2"
    await client.delete("obskit:async")
    await client.aclose()
    assert "GET" in [s.name for s in obs.spans]
    assert cache_count(obs, "GET") == 1 and cache_count(obs, "DEL") == 1


def test_db_uninstrument_and_disable() -> None:
    import asyncpg.connection

    def patched() -> tuple[bool, ...]:
        return (hasattr(psycopg.Connection.__dict__["connect"], "__wrapped__"),
                hasattr(psycopg2.connect, "__wrapped__"),
                hasattr(asyncpg.connection.Connection.__dict__["fetch"], "__wrapped__"),
                hasattr(redis.Redis.__dict__["execute_command"], "__wrapped__"))

    assert patched() == (False,) * 4
    with init_for_tests("svc", disabled_instrumentations=OTHERS) as obs:
        assert patched() == (True,) * 4
        assert {"psycopg", "psycopg2", "asyncpg", "sqlalchemy", "redis"} <= set(
            obs.handle.active_integrations())
    assert patched() == (False,) * 4
    with init_for_tests("svc", disabled_instrumentations=f"psycopg,redis,{OTHERS}") as obs:
        assert patched() == (False, True, True, False)
        client = redis.Redis.from_url(REDIS_URL)
        client.get("obskit:none")
        client.close()
        assert obs.spans == () and cache_count(obs, "GET") is None
