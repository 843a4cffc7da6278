"""MES dashboard endpoints and their cache, against the real PostgreSQL and Redis.

Own database (``orderflow_dash_test_<run>``) and a unique Redis key prefix per test, so nothing here
sees other tests' orders or cache entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from obskit.metrics import catalogue
from obskit.testing import wait_for_async
from orderflow import cache as dcache
from orderflow import events
from orderflow.api import dashboard
from orderflow.config import Settings
from orderflow.db import open_pool
from orderflow.migrations import upgrade

# Named after the run (conftest.py): two runs at once do not share it.
DSN = ("postgresql://postgres@127.0.0.1:5432/"
       f"orderflow_dash_test_{os.environ['ORDERFLOW_TEST_RUN']}")
REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens: "Redis is down"
MANAGER_TOKEN = "test-manager-token"
#: The manager credential (orderflow.api.auth): the dashboard answers nobody else.
MANAGER = {"Authorization": f"Bearer {MANAGER_TOKEN}"}

pytestmark = [pytest.mark.asyncio(loop_scope="session"),
              # cashews 7.6 closes its redis client with the deprecated close()
              pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]


# --- helpers shared with test_dashboard_browser.py -------------------------------------------
async def insert_order(pool: AsyncConnectionPool, *, status: str = "accepted",
                       created_at: datetime | None = None, name: str = "part.stl") -> str:
    """Store an order as the CRM would (order row + history), without any events."""
    order_id = str(uuid.uuid4())
    at = created_at or datetime.now(UTC)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO orders (order_id, channel, customer_email, model, quantity, "
            "tracking_token, status, created_at, updated_at) "
            "VALUES (%s, 'b2c', 'ada@example.com', %s, 2, 'tok', %s, %s, %s)",
            (order_id, json.dumps({"name": name, "volume_cm3": 12.5, "material": "PLA",
                                   "quality": "standard"}), status, at, at))
        await conn.execute("INSERT INTO order_status_history (order_id, status, at) "
                           "VALUES (%s, %s, %s)", (order_id, status, at))
    return order_id


async def place_order(pool: AsyncConnectionPool, **kw: Any) -> str:
    """Store an order and fire ``order_created`` as the ingress does after its commit."""
    order_id = await insert_order(pool, **kw)
    await events.order_created([{"order_id": order_id, "channel": "b2c", "status": "accepted",
                                 "at": datetime.now(UTC).isoformat()}])
    return order_id


async def change_status(pool: AsyncConnectionPool, order_id: str, status: str) -> None:
    """Record a status change and fire ``status_changed`` as the status consumer does."""
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET status = %s, updated_at = %s WHERE order_id = %s",
                           (status, now, order_id))
        await conn.execute("INSERT INTO order_status_history (order_id, status, at) "
                           "VALUES (%s, %s, %s)", (order_id, status, now))
    await events.status_changed([{"order_id": order_id, "channel": "b2c", "status": status,
                                  "at": now.isoformat()}])


def dashboard_app(pool: AsyncConnectionPool) -> FastAPI:
    """Just the dashboard router on the state ``create_app()`` provides."""
    app = FastAPI()
    app.include_router(dashboard.router)
    app.state.db = app.state.read_db = pool
    app.state.settings = Settings(dashboard_token=MANAGER_TOKEN)
    return app


async def reset_db(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await conn.execute("TRUNCATE orders, order_status_history, outbox CASCADE")


async def drop_keys(prefix: str) -> None:
    r = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in r.scan_iter(f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


def count(name: str, result: str) -> float:
    value = catalogue().registry.get_sample_value(
        "cache_requests_total", {"cache": name, "result": result})
    return value or 0.0


def invalidations(trigger: str) -> float:
    value = catalogue().registry.get_sample_value(
        "cache_invalidations_total", {"cache": "dashboard", "trigger": trigger})
    return value or 0.0


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def pool() -> AsyncIterator[AsyncConnectionPool]:
    await asyncio.to_thread(upgrade, DSN)
    p = await open_pool(DSN, max_size=5, name="dashboard-test")
    events.load_plugins()  # what every orderflow process does: registers our hooks
    yield p
    await p.close()


async def _make_cache(url: str, **kw: Any) -> AsyncIterator[dcache.DashboardCache]:
    prefix = f"dashtest-{uuid.uuid4().hex[:8]}"
    kw.setdefault("min_interval", 0.0)  # every trigger invalidates at once
    c = dcache.DashboardCache(url, prefix=prefix, **kw)
    dcache.set_default(c)  # the event hooks invalidate this one
    yield c
    dcache.set_default(None)
    await c.close()
    await drop_keys(prefix)


@pytest.fixture
async def cache() -> AsyncIterator[dcache.DashboardCache]:
    async for c in _make_cache(REDIS_URL, list_ttl=1.0, hot_ttl=60.0):
        yield c


@pytest.fixture
async def client(pool: AsyncConnectionPool, cache: dcache.DashboardCache
                 ) -> AsyncIterator[httpx.AsyncClient]:
    await reset_db(pool)
    transport = httpx.ASGITransport(app=dashboard_app(pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash",
                                 headers=MANAGER) as c:
        yield c


# --- tests -----------------------------------------------------------------------------------
async def test_summary_is_served_from_cache_on_the_second_call(
        client: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    for _ in range(3):
        await insert_order(pool)
    hits, misses = count("dashboard_summary", "hit"), count("dashboard_summary", "miss")

    first = await client.get("/api/v1/dashboard/summary")
    second = await client.get("/api/v1/dashboard/summary")

    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert count("dashboard_summary", "miss") == misses + 1
    assert count("dashboard_summary", "hit") == hits + 1
    body = second.json()
    assert body["counts"]["accepted"] == 3 and body["total"] == 3 and body["in_flight"] == 3
    assert len(body["newest"]) == 3
    assert body == first.json()


async def test_per_status_list_and_newest_are_cached(client: httpx.AsyncClient,
                                                     pool: AsyncConnectionPool) -> None:
    await insert_order(pool)
    for url, name in (("/api/v1/dashboard/orders?status=accepted", "dashboard_orders"),
                      ("/api/v1/dashboard/orders", "dashboard_newest")):
        hits = count(name, "hit")
        assert (await client.get(url)).headers["x-cache"] == "miss"
        again = await client.get(url)
        assert again.headers["x-cache"] == "hit"
        assert count(name, "hit") == hits + 1
        assert again.json()["total"] == 1 and len(again.json()["orders"]) == 1


async def test_new_order_and_status_change_appear_at_once(
        client: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    await insert_order(pool)
    await client.get("/api/v1/dashboard/summary")
    await client.get("/api/v1/dashboard/orders")
    created = invalidations("order_created")

    order_id = await place_order(pool, name="new-bracket.stl")

    summary = (await client.get("/api/v1/dashboard/summary")).json()
    assert summary["counts"]["accepted"] == 2
    assert summary["newest"][0]["order_id"] == order_id
    newest = await client.get("/api/v1/dashboard/orders")
    assert newest.json()["orders"][0]["order_id"] == order_id
    assert invalidations("order_created") == created + 1

    changed = invalidations("status_changed")
    await change_status(pool, order_id, "priced")

    summary = (await client.get("/api/v1/dashboard/summary")).json()
    assert summary["counts"]["accepted"] == 1 and summary["counts"]["priced"] == 1
    assert summary["newest"][0]["status"] == "priced"
    assert invalidations("status_changed") == changed + 1
    # And the next read is served from cache again.
    assert (await client.get("/api/v1/dashboard/summary")).headers["x-cache"] == "hit"


async def test_per_status_list_respects_its_ttl(client: httpx.AsyncClient,
                                                pool: AsyncConnectionPool,
                                                cache: dcache.DashboardCache) -> None:
    order_id = await place_order(pool)
    url = "/api/v1/dashboard/orders?status=accepted"
    assert [o["order_id"] for o in (await client.get(url)).json()["orders"]] == [order_id]

    await change_status(pool, order_id, "priced")

    # Not invalidated: the list lives its TTL (1 s here, 60 s in production) by design...
    stale = await client.get(url)
    assert stale.headers["x-cache"] == "hit"
    assert [o["order_id"] for o in stale.json()["orders"]] == [order_id]
    # ...while the counts already know.
    assert (await client.get("/api/v1/dashboard/summary")).json()["counts"]["accepted"] == 0

    await asyncio.sleep(cache.list_ttl + 0.3)  # the scenario: the list's TTL runs out
    fresh = await client.get(url)
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json()["orders"] == [] and fresh.json()["total"] == 0


async def test_invalidation_from_another_process_is_seen(
        client: httpx.AsyncClient, pool: AsyncConnectionPool,
        cache: dcache.DashboardCache) -> None:
    await client.get("/api/v1/dashboard/summary")
    await insert_order(pool)
    # A second client on the same keys stands for the ingress process that committed the order.
    other = dcache.DashboardCache(REDIS_URL, prefix=cache.prefix.removesuffix(":dash"))
    try:
        assert (await client.get("/api/v1/dashboard/summary")).json()["total"] == 0  # cached
        await other.invalidate("order_created")
        # The stated bound: generation_poll, plus one reload made ahead of the readers, who
        # get the previous copy from cache meanwhile.
        deadline = time.monotonic() + cache.generation_poll + 1.0
        while True:
            r = await client.get("/api/v1/dashboard/summary")
            assert r.headers["x-cache"] in ("hit", "stale")
            if r.json()["total"] == 1:
                break
            assert time.monotonic() < deadline, "the other process's change never showed"
            await asyncio.sleep(0.02)
    finally:
        await other.close()


class SlowReload:
    """A loader whose first load is quick and whose reloads wait for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.loads = 0

    async def __call__(self) -> bytes:
        self.loads += 1
        if self.loads > 1:
            await self.release.wait()  # a slow reload
        return b"v%d" % self.loads


async def test_a_change_elsewhere_is_reloaded_ahead_and_no_reader_waits() -> None:
    load = SlowReload()

    async for c in _make_cache(REDIS_URL, generation_poll=0.05):
        other = dcache.DashboardCache(REDIS_URL, prefix=c.prefix.removesuffix(":dash"))
        try:
            assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"v1", "miss")
            await other.invalidate("status_changed")  # e.g. the status consumer's process
            await wait_for_async(lambda: load.loads == 2, timeout=5, interval=0.01,
                                 what="the poller to see the change and reload")
            for _ in range(3):  # readers meanwhile: the previous copy, at once
                got = await asyncio.wait_for(
                    c.get_or_load("dashboard_summary", "k", load, hot=True), 0.5)
                assert got == (b"v1", "hit")
            load.release.set()

            async def switched_in(c: dcache.DashboardCache = c) -> bool:
                got = await c.get_or_load("dashboard_summary", "k", load, hot=True)
                assert got in ((b"v1", "hit"), (b"v2", "hit")), got  # no reader waits or loads
                return got == (b"v2", "hit")

            await wait_for_async(switched_in, timeout=5, interval=0.01,
                                 what="the reloaded copy to be switched in")
            assert load.loads == 2  # the reload was the poller's, not a reader's
        finally:
            await other.close()


async def test_a_hit_makes_no_redis_round_trip_and_sends_the_stored_body(
        client: httpx.AsyncClient, pool: AsyncConnectionPool,
        cache: dcache.DashboardCache, monkeypatch: pytest.MonkeyPatch) -> None:
    await insert_order(pool)
    cache.generation_poll = 60.0  # so the generation is not due for a re-check in this test
    first = await client.get("/api/v1/dashboard/summary")
    calls = 0
    real = cache._cache.get_raw

    async def counting(key: str) -> Any:
        nonlocal calls
        calls += 1
        return await real(key)

    monkeypatch.setattr(cache._cache, "get_raw", counting)
    again = [await client.get("/api/v1/dashboard/summary") for _ in range(3)]
    assert [r.headers["x-cache"] for r in again] == ["hit"] * 3
    assert calls == 0
    assert all(r.content == first.content for r in again)
    assert again[0].headers["content-type"] == "application/json"


async def test_another_ingress_fills_from_redis_and_keeps_the_list_ttl(
        client: httpx.AsyncClient, pool: AsyncConnectionPool,
        cache: dcache.DashboardCache) -> None:
    order_id = await insert_order(pool)
    url = "/api/v1/dashboard/orders?status=accepted"
    assert (await client.get(url)).headers["x-cache"] == "miss"
    await asyncio.sleep(cache.list_ttl / 2)  # the scenario: the copy is half its TTL old
    # A second ingress (its own in-process tier) on the same Redis.
    other = dcache.DashboardCache(REDIS_URL, prefix=cache.prefix.removesuffix(":dash"),
                                  list_ttl=cache.list_ttl)
    app = dashboard_app(pool)
    app.state.dashboard_cache = other
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://dash2", headers=MANAGER) as c2:
            r = await c2.get(url)
            assert r.headers["x-cache"] == "hit"  # from Redis, no query
            assert [o["order_id"] for o in r.json()["orders"]] == [order_id]
            await change_status(pool, order_id, "priced")
            # Its copy expires when the first load does, not list_ttl after it was copied: the
            # scenario lets that moment pass.
            await asyncio.sleep(cache.list_ttl / 2 + 0.2)
            fresh = await c2.get(url)
            assert fresh.headers["x-cache"] == "miss" and fresh.json()["orders"] == []
    finally:
        await other.close()


async def test_readers_get_the_previous_copy_while_one_reloads() -> None:
    load = SlowReload()

    async for c in _make_cache(REDIS_URL, max_stale=5.0):
        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"v1", "miss")
        stale = count("dashboard_summary", "stale")
        await c.invalidate("order_created")
        reloader = asyncio.create_task(c.get_or_load("dashboard_summary", "k", load, hot=True))
        await wait_for_async(lambda: load.loads == 2, timeout=5, interval=0,
                             what="the reload to start")
        assert not reloader.done()  # the reader that triggered the reload waits for it...
        others = [await asyncio.wait_for(
            c.get_or_load("dashboard_summary", "k", load, hot=True), 1.0) for _ in range(3)]
        assert others == [(b"v1", "stale")] * 3  # ...the others get the previous copy at once
        assert count("dashboard_summary", "stale") == stale + 3
        load.release.set()
        assert await reloader == (b"v2", "miss")
        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"v2", "hit")
        assert load.loads == 2


async def test_no_stale_copy_older_than_max_stale() -> None:
    release, reloading = asyncio.Event(), asyncio.Event()
    data = {"value": b"old", "slow": False}

    async def load() -> bytes:
        if data["slow"]:
            reloading.set()
            await release.wait()
        return data["value"]

    async for c in _make_cache(REDIS_URL, max_stale=0.2):
        await c.get_or_load("dashboard_summary", "k", load, hot=True)
        await asyncio.sleep(0.3)  # the scenario: the copy gets older than max_stale
        data.update(value=b"new", slow=True)
        await c.invalidate("order_created")
        reloader = asyncio.create_task(c.get_or_load("dashboard_summary", "k", load, hot=True))
        await asyncio.wait_for(reloading.wait(), 5)
        waiter = asyncio.create_task(c.get_or_load("dashboard_summary", "k", load, hot=True))
        # A bounded look for something that must not happen: the waiter getting "old".
        await asyncio.sleep(0.05)
        assert not waiter.done()  # waits for the reload instead of getting "old"
        release.set()
        assert await waiter == (b"new", "miss") and await reloader == (b"new", "miss")


async def test_bursts_of_triggers_fold_into_two_invalidations() -> None:
    async for c in _make_cache(REDIS_URL, min_interval=0.3):
        loads = 0

        async def load() -> bytes:
            nonlocal loads
            loads += 1
            return b"%d" % loads

        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"1", "miss")
        await c.invalidate("order_created")  # acts at once
        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"2", "miss")
        for _ in range(20):  # a burst of status changes within the interval...
            await c.invalidate("status_changed")
        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"2", "hit")
        # ...is one more invalidation at its end, reloaded ahead of the next reader.
        await wait_for_async(
            lambda: loads == 3 and c._trailing is None and not c._refreshes,  # noqa: B023 (now)
            timeout=5, interval=0.01, what="the trailing invalidation's reload")
        assert await c.get_or_load("dashboard_summary", "k", load, hot=True) == (b"3", "hit")
        assert loads == 3


async def test_redis_down_still_answers_from_the_database(pool: AsyncConnectionPool) -> None:
    await reset_db(pool)
    order_id = await insert_order(pool)
    async for down in _make_cache(DOWN_REDIS_URL, timeout=0.2):
        errors = count("dashboard_summary", "error")
        transport = httpx.ASGITransport(app=dashboard_app(pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash",
                                 headers=MANAGER) as c:
            for _ in range(2):  # the second call takes the "Redis is down" shortcut
                r = await c.get("/api/v1/dashboard/summary")
                assert r.status_code == 200 and r.headers["x-cache"] == "error"
                assert r.json()["counts"]["accepted"] == 1
            r = await c.get("/api/v1/dashboard/orders?status=accepted")
            assert r.status_code == 200
            assert [o["order_id"] for o in r.json()["orders"]] == [order_id]
            await change_status(pool, order_id, "priced")  # the hook must not raise
            r = await c.get("/api/v1/dashboard/summary")
            assert r.json()["counts"]["priced"] == 1
        assert count("dashboard_summary", "error") == errors + 3
        assert not down._inflight


async def test_concurrent_misses_run_one_query(cache: dcache.DashboardCache) -> None:
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b'{"n":1}'

    results = await asyncio.gather(*(cache.get_or_load("dashboard_summary", "k", load, hot=True)
                                     for _ in range(10)))
    assert calls == 1
    assert results == [(b'{"n":1}', "miss")] * 10


async def test_disabled_cache_always_reads_the_database(pool: AsyncConnectionPool) -> None:
    async for off in _make_cache(REDIS_URL, enabled=False):
        calls = 0

        async def load() -> bytes:
            nonlocal calls
            calls += 1
            return b"%d" % calls

        assert await off.get_or_load("dashboard_summary", "k", load, hot=True) == (b"1", "bypass")
        assert await off.get_or_load("dashboard_summary", "k", load, hot=True) == (b"2", "bypass")


async def test_paging_and_bad_status(client: httpx.AsyncClient, pool: AsyncConnectionPool
                                     ) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    ids = [await insert_order(pool, created_at=base + timedelta(seconds=i)) for i in range(5)]
    r = await client.get("/api/v1/dashboard/orders?status=accepted&limit=2&offset=1")
    body = r.json()
    assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 1
    assert [o["order_id"] for o in body["orders"]] == [ids[3], ids[2]]  # newest first

    bad = await client.get("/api/v1/dashboard/orders?status=lost")
    assert bad.status_code == 422 and "status" in bad.text
    assert (await client.get("/api/v1/dashboard/orders?limit=0")).status_code == 422


async def test_summary_throughput_and_page(client: httpx.AsyncClient,
                                           pool: AsyncConnectionPool) -> None:
    order_id = await place_order(pool)
    await change_status(pool, order_id, "done")
    tp = (await client.get("/api/v1/dashboard/summary")).json()["throughput"]
    assert sum(p["accepted"] for p in tp["points"]) == 1
    assert sum(p["done"] for p in tp["points"]) == 1

    page = await client.get("/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/api/v1/dashboard/summary" in page.text and "<svg" in page.text


async def test_a_dashboard_that_holds_the_body_gets_304_until_it_changes(
        client: httpx.AsyncClient, pool: AsyncConnectionPool) -> None:
    await insert_order(pool)
    first = await client.get("/api/v1/dashboard/summary")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"

    again = await client.get("/api/v1/dashboard/summary", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["x-cache"] == "hit"
    listed = await client.get("/api/v1/dashboard/summary",
                              headers={"If-None-Match": f'"other", {etag.removeprefix("W/")}'})
    assert listed.status_code == 304  # weak comparison, one of a list

    await place_order(pool)
    changed = await client.get("/api/v1/dashboard/summary", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["total"] == 2
    assert changed.headers["etag"] != etag


# --- hits answered before FastAPI (dashboard._CachedRoute) -----------------------------------
URLS = ("/api/v1/dashboard/summary", "/api/v1/dashboard/orders?status=printing&limit=50",
        "/api/v1/dashboard/orders?limit=50")


def _through_fastapi(url: str) -> str:
    """The same view by a query string the early answer leaves to FastAPI (an escaped, unknown
    parameter: FastAPI ignores it, so the cache key is the same)."""
    return url + ("&" if "?" in url else "?") + "note=a%20b"


@pytest.fixture
def responds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The views answered through FastAPI's endpoint (``dashboard._respond``), in order."""
    calls: list[str] = []
    real = dashboard._respond

    async def counting(request: Any, view: dashboard.View, load: Any) -> Any:
        calls.append(view[1])
        return await real(request, view, load)

    monkeypatch.setattr(dashboard, "_respond", counting)
    return calls


async def test_a_hit_is_answered_before_fastapi_with_the_same_bytes_and_headers(
        client: httpx.AsyncClient, pool: AsyncConnectionPool, responds: list[str]) -> None:
    await insert_order(pool, status="printing")
    for url in URLS:
        responds.clear()
        miss = await client.get(url)
        hit = await client.get(url)
        slow = await client.get(_through_fastapi(url))
        assert len(responds) == 2, (url, responds)  # the miss and the slow hit, not the hit
        assert (miss.headers["x-cache"], hit.headers["x-cache"], slow.headers["x-cache"]) == (
            "miss", "hit", "hit")
        # Byte for byte what FastAPI's path sends for the same stored body, header order too.
        assert hit.content == slow.content == miss.content
        assert hit.headers.raw == slow.headers.raw
        assert [h for h in miss.headers.raw if h[0] != b"x-cache"] == [
            h for h in hit.headers.raw if h[0] != b"x-cache"]
        assert hit.headers["etag"] == dcache.etag_of(hit.content)
        assert hit.headers["content-length"] == str(len(hit.content))

        etag = {"If-None-Match": hit.headers["etag"]}
        early, late = await client.get(url, headers=etag), await client.get(
            _through_fastapi(url), headers=etag)
        assert early.status_code == late.status_code == 304 and early.content == b""
        assert early.headers.raw == late.headers.raw


async def test_a_hit_is_answered_early_only_to_a_manager_and_a_valid_query(
        client: httpx.AsyncClient, pool: AsyncConnectionPool, responds: list[str]) -> None:
    await insert_order(pool)
    url = "/api/v1/dashboard/orders?status=accepted&limit=50"
    assert (await client.get(url)).headers["x-cache"] == "miss"
    responds.clear()
    # No credential, a wrong one: FastAPI's path refuses, as before.
    assert (await client.get(url, headers={"Authorization": ""})).status_code == 401
    assert (await client.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401
    # The other credentials answer early too.
    basic = httpx.BasicAuth("anyone", MANAGER_TOKEN)
    assert (await client.get(url, headers={"Authorization": ""}, auth=basic)).headers[
        "x-cache"] == "hit"
    # What FastAPI rejects is still rejected, not looked up.
    for bad in ("status=lost", "status=accepted&limit=0", "status=accepted&limit=201",
                "status=accepted&offset=10001", "status=accepted&limit=" + "9" * 5000,
                "status=accepted&limit=%35%30"):
        r = await client.get(f"/api/v1/dashboard/orders?{bad}")
        assert r.status_code == (200 if "%" in bad else 422), (bad, r.status_code)
    assert responds == ["accepted:50:0"]  # only the escaped limit (=50) went to the endpoint
    # Spelled differently, the same page: the same entry.
    for same in ("status=accepted&limit=050", "limit=50&status=accepted&&offset=0",
                 "status=accepted&limit=50&limit=50"):
        r = await client.get(f"/api/v1/dashboard/orders?{same}")
        assert r.status_code == 200 and r.headers["x-cache"] == "hit", same


async def test_peek_answers_only_what_get_or_load_would_as_a_hit(
        cache: dcache.DashboardCache) -> None:
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return b'{"n":%d}' % loads

    hits = count("dashboard_summary", "hit")
    assert cache.peek("dashboard_summary", "k", hot=True) is None
    assert cache.peek("dashboard_orders", "l", hot=False) is None
    await cache.get_or_load("dashboard_summary", "k", load, hot=True)
    await cache.get_or_load("dashboard_orders", "l", load, hot=False)
    hot, listed = (cache.peek("dashboard_summary", "k", hot=True),
                   cache.peek("dashboard_orders", "l", hot=False))
    assert hot is not None and hot.body == b'{"n":1}' and hot.etag == dcache.etag_of(hot.body)
    assert listed is not None and listed.body == b'{"n":2}'
    assert count("dashboard_summary", "hit") == hits + 1  # a peek that answers is a hit

    # The generation due from Redis (no poller to keep it fresh): not answered without I/O,
    # and not counted; get_or_load asks Redis and then serves the same copy.
    assert cache._poller is not None
    cache._poller.cancel()
    cache._gen_at = -1e9
    assert cache.peek("dashboard_summary", "k", hot=True) is None
    assert count("dashboard_summary", "hit") == hits + 1
    assert await cache.get_or_load("dashboard_summary", "k", load, hot=True) == (
        b'{"n":1}', "hit")
    # A list past its TTL (1 s here) is not a hit either.
    cache.list_ttl = 0.0
    assert cache.peek("dashboard_orders", "l", hot=False) is None


@pytest.mark.parametrize("first", [False, True], ids=["at-the-route", "hits-first"])
async def test_server_timing_and_route_on_hits_and_misses(
        pool: AsyncConnectionPool, responds: list[str], first: bool) -> None:
    """The early answer runs inside obskit's middleware: Server-Timing covers it as it covers
    FastAPI's path (the benchmark's in-server figures come from this header), and the span
    names the route, whether the route (``_CachedRoute``) or ``HitsFirst`` answered."""
    from obskit.testing import init_for_tests

    await reset_db(pool)
    await insert_order(pool)
    async for c in _make_cache(REDIS_URL):
        others = "requests,httpx,psycopg,psycopg2,asyncpg,sqlalchemy,redis,pika,aio_pika,flask"
        with init_for_tests("dashboard", server_timing=True,
                            disabled_instrumentations=others) as obs:
            app = dashboard_app(pool)
            if first:
                app.add_middleware(dashboard.HitsFirst)
            app.state.dashboard_cache = c
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://dash", headers=MANAGER) as client:
                got = [await client.get(url) for url in URLS for _ in range(2)]
                other = await client.get("/dashboard")  # not a JSON view: routed as ever
            routes = [(s.attributes or {}).get("http.route") for s in obs.spans]
        assert [r.headers["x-cache"] for r in got] == ["miss", "hit"] * 3
        assert len(responds) == 3  # the hits were answered early
        for r in got:
            name, _, dur = r.headers["server-timing"].partition(";dur=")
            assert name == "app" and 0 < float(dur) < 10_000
            assert "x-request-id" in r.headers
        assert other.status_code == 200 and "server-timing" in other.headers
        assert routes == [url.partition("?")[0] for url in URLS for _ in range(2)] + [
            "/dashboard"]
