"""Dependencies failing under a running system: Redis down, PostgreSQL restarting.

Each test brings the dependency down for itself only — a redis-server of its own, a database of
its own made unavailable — never the machine's shared services.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from conftest import (
    AUTH,
    MGMT,
    PG_ADMIN,
    _free_port,
    _ready,
    isolated_services,
    new_ip,
    order_body,
    statuses,
    wait_for,
)

from obskit.testing import RedisServer


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer(persistent=False) as r:
        yield r


class Service:
    """An ``orderflow`` process whose log (stderr) the test reads."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="orderflow-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-P", "-m", "orderflow.cli", *args],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lines(self, *words: str) -> list[str]:
        return [ln for ln in self.log.read_text(errors="replace").splitlines()
                if all(w in ln for w in words)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


def test_breaker_opens_after_failures_in_a_row_probes_once_then_closes() -> None:
    from orderflow.degradation import CLOSED, OPEN, Breaker, Unavailable

    now = [0.0]
    b = Breaker("test", f"op-{uuid.uuid4().hex[:6]}", timeout=0.05, failures=2,
                reset_seconds=5.0, clock=lambda: now[0])
    calls: list[str] = []

    async def fail() -> None:
        calls.append("fail")
        raise ConnectionError("down")

    async def hang() -> None:
        calls.append("hang")
        await asyncio.sleep(10)  # the scenario: a call that hangs past the breaker's timeout

    async def ok() -> str:
        calls.append("ok")
        return "fine"

    async def scenario() -> None:
        for op in (fail, ok, fail):  # a success in between: not two in a row
            with contextlib.suppress(Unavailable):
                await b.call(op)
        assert b.state == CLOSED
        with pytest.raises(Unavailable):
            await b.call(hang)  # the timeout counts as a failure
        assert b.state == OPEN
        calls.clear()
        with pytest.raises(Unavailable):
            await b.call(ok)
        assert calls == []  # open: not even tried
        now[0] = 5.0
        with pytest.raises(Unavailable):
            await b.call(fail)  # the probe fails: open again, for another reset period
        assert b.state == OPEN and calls == ["fail"]
        now[0] = 10.0
        assert await b.call(ok) == "fine"
        assert b.state == CLOSED

    asyncio.run(scenario())


def _metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(base + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"{name}{{{want}}} not in /metrics")


def _post(base: str, ip: str | None = None) -> tuple[int, float]:
    t = time.perf_counter()
    r = httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                   headers={"X-Forwarded-For": ip or new_ip()}, timeout=30)
    return r.status_code, time.perf_counter() - t


def test_redis_down_orders_still_accepted_fast_then_recovers(
        env: dict[str, str], private_redis: RedisServer) -> None:
    env = {**env, "ORDERFLOW_REDIS_URL": private_redis.url,
           "OBSKIT_JOURNEY_URL": private_redis.url,
           "ORDERFLOW_REDIS_PREFIX": f"degr-{uuid.uuid4().hex[:8]}",
           "ORDERFLOW_RATE_LIMIT_B2C": "5/minute", "ORDERFLOW_BREAKER_RESET": "1",
           "OBSKIT_LOG_LEVEL": "INFO"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    api = Service(env, "api", "--port", str(port))
    try:
        wait_for(lambda: _ready(base), timeout=30, what="ingress /readyz")
        healthy = [_post(base) for _ in range(10)]
        assert all(code == 202 for code, _ in healthy), healthy
        baseline = statistics.median(t for _, t in healthy)
        assert _metric(base, "orderflow_breaker_open", operation="rate_limit") == 0

        private_redis.stop()
        # The first few requests find Redis gone (each costs at most the short timeout) and
        # open the breakers; after that Redis is not even tried.
        first = [_post(base) for _ in range(5)]
        assert all(code == 202 for code, _ in first), first
        assert _metric(base, "orderflow_breaker_open", dependency="redis",
                       operation="rate_limit") == 1
        assert _metric(base, "orderflow_breaker_open", dependency="redis",
                       operation="events") == 1
        down = [_post(base) for _ in range(20)]
        assert all(code == 202 for code, _ in down), down
        down_t = [t for _, t in down]
        # Generous bounds: without breakers each request waited for Redis (>= 1 s).
        assert statistics.median(down_t) < baseline + 0.1, (baseline, down_t)
        assert max(down_t) < 0.5, down_t
        assert _metric(base, "orderflow_degraded_total", dependency="redis",
                       operation="rate_limit") >= 25
        # Fail open to a local limiter: a flood from one client is still refused.
        ip = new_ip()
        codes = [_post(base, ip)[0] for _ in range(8)]
        assert codes.count(202) == 5 and codes.count(429) == 3, codes
        # Logged once per transition, not once per request.
        assert len(api.lines("circuit opened", "rate_limit")) == 1

        private_redis.start()

        def closed() -> bool:
            _post(base)
            return _metric(base, "orderflow_breaker_open", operation="rate_limit") == 0

        wait_for(closed, timeout=20, what="the rate-limit breaker to close", interval=0.3)
        client = redis.Redis.from_url(private_redis.url)
        assert client.keys(env["ORDERFLOW_REDIS_PREFIX"] + ":ratelimit*"), \
            "the shared limiter in Redis is used again"
        client.close()
        assert len(api.lines("circuit closed", "rate_limit")) == 1
    finally:
        api.stop()


def _admin(query: str, *params: object) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(query, params)  # type: ignore[arg-type]


def _dlq_depths(amqp_url: str) -> dict[str, int]:
    vhost = amqp_url.rsplit("/", 1)[1]
    queues = httpx.get(f"{MGMT}/queues/{vhost}", auth=AUTH).json()
    return {q["name"]: int(q.get("messages", 0)) for q in queues if q["name"].endswith(".dlq")}


def test_postgres_unavailable_gives_503_and_everything_recovers(env: dict[str, str]) -> None:
    with isolated_services("orderflow_pgdown") as iso:
        db_name = iso.dsn.rsplit("/", 1)[1]
        env = {**env, "ORDERFLOW_DATABASE_URL": iso.dsn,
               "ORDERFLOW_READ_DATABASE_URL": iso.dsn, "ORDERFLOW_RABBITMQ_URL": iso.amqp_url,
               "ORDERFLOW_REDIS_PREFIX": f"pgdown-{iso.run}",
               "OBSKIT_JOURNEY_PREFIX": f"pgdown-{iso.run}-journey",
               "ORDERFLOW_DB_TIMEOUT": "1"}
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        services = [Service(env, "api", "--port", str(port)), Service(env, "relay"),
                    Service(env, "status"),
                    Service({**env, "ORDERFLOW_MES_STAGE_DELAY": "0.3"}, "mes",
                            "--worker-id", "pgdown-1")]
        try:
            wait_for(lambda: _ready(base), timeout=30, what="ingress /readyz")
            placed = [httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                                 headers={"X-Forwarded-For": new_ip()}).json()["order_id"]
                      for _ in range(3)]  # in flight in the MES when the database goes

            def in_the_mes() -> bool:
                now = statuses(iso.dsn, placed)
                return len(now) == 3 and set(now.values()) <= {"received", "priced",
                                                                "scheduled", "printing"}

            wait_for(in_the_mes, timeout=30, what="the orders to be in the MES")
            _admin(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS false')
            _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                   db_name)
            key = str(uuid.uuid4())
            for _ in range(2):
                r = httpx.post(base + "/api/v1/shop/orders", json=order_body(), timeout=30,
                               headers={"X-Forwarded-For": new_ip(), "Idempotency-Key": key})
                assert r.status_code == 503, r.text
                # no connection in the pool: answered after ORDERFLOW_DB_TIMEOUT, not 10 s
                assert r.elapsed.total_seconds() < 5, r.elapsed
                assert int(r.headers["Retry-After"]) > 0
                body = r.json()
                assert body["error"] == "unavailable" and body["request_id"], body
            ready = httpx.get(base + "/readyz", timeout=30)
            assert ready.status_code == 503
            time.sleep(2)  # the relay and the consumers meet the outage too
        finally:
            _admin(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true')
        try:
            def accepted() -> str | None:
                r = httpx.post(base + "/api/v1/shop/orders", json=order_body(), timeout=30,
                               headers={"X-Forwarded-For": new_ip(), "Idempotency-Key": key})
                return r.json()["order_id"] if r.status_code == 202 else None

            placed.append(wait_for(accepted, timeout=30, what="the ingress to accept again",
                                   interval=0.5))
            wait_for(lambda: set(statuses(iso.dsn, placed).values()) == {"done"}, timeout=60,
                     what="every order to reach done after the outage", interval=0.5)
            assert all(s.alive() for s in services), [s.proc.returncode for s in services]
            assert not any(_dlq_depths(iso.amqp_url).values()), _dlq_depths(iso.amqp_url)
        finally:
            for s in services:
                s.stop()
