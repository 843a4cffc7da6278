"""``orderflow demo``: run the whole pipeline, send a realistic mix of orders, account for each.

The mix: web-shop (B2C) and partner (B2B) orders, a few invalid ones (rejected with 4xx, never
stored), a few unprintable ones (they end ``failed``), and bursts from a partner whose key has a
low limit (some get 429). After sending, it waits for in-flight orders to finish and checks every
accepted order in the database: ``unaccounted`` (accepted but in no known state) must be 0.

With faults on (``--fault``, ``ORDERFLOW_FAULTS``) some orders stop on purpose: the demo stops
waiting once no order has moved for a while, and reports them as ``lost_on_purpose`` with the
status each stopped at. They are in a known state, so they are not ``unaccounted``.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import psycopg

from orderflow import crm, db, migrations
from orderflow.config import ENV_DASHBOARD_TOKEN, ENV_FAULTS, Settings
from orderflow.faults import active as active_faults
from orderflow.faults import format_spec
from orderflow.statuses import RANK, STATUSES, TERMINAL

MATERIALS = ("PLA", "ABS", "PETG", "RESIN")
QUALITIES = ("draft", "standard", "fine")
#: With faults on: stop waiting for in-flight orders after this long without any status change
#: (the ``slow-mes`` fault adds its seconds per stage).
QUIET_SECONDS = 10.0
#: Tries per request when the connection fails (the order keeps its Idempotency-Key).
ATTEMPTS = 3
#: Seconds an idle pooled connection is kept: below uvicorn's 5 s keep-alive.
KEEPALIVE_EXPIRY = 2.0
INVALID = (
    {"customer_email": "not-an-email", "quantity": 1},
    {"customer_email": "x@example.com", "quantity": 0,
     "model": {"name": "a", "volume_cm3": 10, "material": "PLA", "quality": "fine"}},
    {"customer_email": "x@example.com", "quantity": 1,
     "model": {"name": "a", "volume_cm3": -5, "material": "GOLD", "quality": "fine"}},
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _order(rng: random.Random, volume: float | None = None) -> dict[str, Any]:
    return {"customer_email": f"customer{rng.randint(1, 9999)}@example.com",
            "model": {"name": f"part-{rng.randint(1, 999)}.stl",
                      "volume_cm3": volume or round(rng.uniform(2, 400), 1),
                      "material": rng.choice(MATERIALS), "quality": rng.choice(QUALITIES)},
            "quantity": rng.randint(1, 20)}


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return round(s[k], 1)


class Traffic:
    def __init__(self, base: str, partner_key: str, burst_key: str, seed: int = 7,
                 dashboard_token: str | None = None) -> None:
        """``dashboard_token``: the managers' credential; default ``ORDERFLOW_DASHBOARD_TOKEN``."""
        self.base = base
        token = Settings().dashboard_token if dashboard_token is None else dashboard_token
        self.manager_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.partner_key = partner_key
        self.burst_key = burst_key
        self.rng = random.Random(seed)
        self.accepted: dict[str, str] = {}  # order_id -> channel
        self.rejected_invalid = 0
        self.rate_limited = 0
        self.dashboard_reads = 0
        self.retried = 0  # requests sent again after a connection error (same Idempotency-Key)
        self.errors: list[str] = []

    async def _request(self, client: httpx.AsyncClient, method: str, url: str,
                       **kwargs: Any) -> httpx.Response:
        """Like a careful client: a request that met a connection error (the server closing
        an idle connection as it is reused, a restart) goes again, up to ``ATTEMPTS`` times.
        Safe for orders because each carries its own ``Idempotency-Key``."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await client.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt == ATTEMPTS:
                    raise
                self.retried += 1
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def send(self, client: httpx.AsyncClient, channel: str, body: dict[str, Any],
                   key: str | None = None) -> None:
        path = "/api/v1/shop/orders" if channel == "b2c" else "/api/v1/partner/orders"
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        if key:
            headers["X-API-Key"] = key
        try:
            r = await self._request(client, "POST", self.base + path, json=body,
                                    headers=headers)
        except httpx.HTTPError as exc:
            self.errors.append(repr(exc))
            return
        if r.status_code == 202:
            self.accepted[r.json()["order_id"]] = channel
        elif r.status_code == 429:
            self.rate_limited += 1
        elif 400 <= r.status_code < 500:
            self.rejected_invalid += 1
        else:
            self.errors.append(f"{r.status_code} {r.text[:200]}")

    async def manager(self, client: httpx.AsyncClient, stop: asyncio.Event,
                      status: str) -> None:
        """A manager with the MES dashboard open: it polls the summary and one status list."""
        while not stop.is_set():
            for path in ("/api/v1/dashboard/summary", f"/api/v1/dashboard/orders?status={status}"):
                try:
                    r = await self._request(client, "GET", self.base + path,
                                            headers=self.manager_headers)
                    if r.status_code == 200:
                        self.dashboard_reads += 1
                    elif r.status_code in (401, 403):  # a setup error, not load: say so
                        self.errors.append(f"dashboard {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                pass

    async def run(self, duration: float, rate: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        # Idle pooled connections expire before the server's keep-alive (uvicorn: 5 s), so the
        # client never reuses one the server is closing at that moment.
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
            stop = asyncio.Event()
            managers = [asyncio.create_task(self.manager(client, stop, status))
                        for status in ("printing", "done")]
            start = time.monotonic()
            i = 0
            next_burst = start + 2.0
            while time.monotonic() - start < duration:
                i += 1
                if i % 20 == 7:
                    coro = self.send(client, "b2c", INVALID[i % len(INVALID)])
                elif i % 25 == 3:  # larger than the build volume: ends "failed"
                    coro = self.send(client, "b2b", _order(self.rng, 9500.0), self.partner_key)
                elif self.rng.random() < 0.65:
                    coro = self.send(client, "b2c", _order(self.rng))
                else:
                    coro = self.send(client, "b2b", _order(self.rng), self.partner_key)
                t = asyncio.create_task(coro)
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                if time.monotonic() >= next_burst:  # a partner integration gone wild
                    next_burst += 5.0
                    for _ in range(12):
                        b = asyncio.create_task(self.send(client, "b2b", _order(self.rng),
                                                          self.burst_key))
                        tasks.add(b)
                        b.add_done_callback(tasks.discard)
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks)
            stop.set()
            await asyncio.gather(*managers)


async def _keys(settings: Settings) -> tuple[str, str]:
    pool = await db.open_pool(settings.database_url, max_size=1)
    try:
        return (await crm.create_api_key(pool, "demo-partner"),
                await crm.create_api_key(pool, "demo-burst", "5/second"))
    finally:
        await pool.close()


def order_states(dsn: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each stored order of ``ids``: its status, accept -> done in ms (None until done) and
    whether a status was repeated; an id that is not stored is absent (the demo's and the load
    test's accounting)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT o.order_id::text, o.status,"
            " EXTRACT(EPOCH FROM (d.at - a.at)) * 1000 AS latency_ms,"
            " EXISTS (SELECT 1 FROM order_status_history r WHERE r.order_id = o.order_id"
            " AND r.duplicates > 0) AS repeated"
            " FROM orders o"
            " LEFT JOIN order_status_history a ON a.order_id = o.order_id AND a.status = 'accepted'"
            " LEFT JOIN order_status_history d ON d.order_id = o.order_id AND d.status = 'done'"
            " WHERE o.order_id = ANY(%s::uuid[])", (ids,)).fetchall()
    return {r[0]: {"status": r[1], "latency_ms": None if r[2] is None else float(r[2]),
                   "repeated": r[3]} for r in rows}


def _cache_hit_ratio(base: str) -> float:
    try:
        text = httpx.get(base + "/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return 0.0
    hits = misses = 0.0
    for line in text.splitlines():
        if line.startswith("cache_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'result="hit"' in line:
                hits += value
            elif 'result="miss"' in line:
                misses += value
    return round(hits / (hits + misses), 3) if hits + misses else 0.0


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run(*, duration: float, rate: float = 10.0, port: int = 0, quiet: bool = False,
        drain_timeout: float | None = None,
        faults: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``faults`` are added to ``ORDERFLOW_FAULTS`` (a name in both: ``faults`` wins)."""
    settings = Settings()
    on = {**active_faults(), **(faults or {})}
    migrations.upgrade(settings.database_url)
    partner_key, burst_key = asyncio.run(_keys(settings))
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    # All demo traffic comes from one IP: lift the per-IP shop limit so the per-key limit of
    # the bursting partner is what trips.
    env.setdefault("ORDERFLOW_RATE_LIMIT_B2C", f"{max(100, int(rate * 10))}/second")
    env.setdefault("ORDERFLOW_RATE_LIMIT_B2B_IP", f"{max(200, int(rate * 20))}/second")
    # The dashboard answers managers only: the demo makes a token unless one is configured.
    dashboard_token = env.get(ENV_DASHBOARD_TOKEN) or secrets.token_urlsafe(16)
    env[ENV_DASHBOARD_TOKEN] = dashboard_token
    if on:
        env[ENV_FAULTS] = format_spec(on)
        _log(quiet, f"demo: FAULT INJECTION ON ({env[ENV_FAULTS]}): orders will be lost or "
                    "stalled on purpose")
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"orderflow-demo-{port}.log")
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed below
    group = subprocess.Popen([sys.executable, "-P", "-m", "orderflow.cli", "all", "--port",
                              str(port)], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    _log(quiet, f"demo: pipeline starting on {base} (logs: {log_path})")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if group.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the pipeline did not become ready; see {log_path}")
            time.sleep(0.3)
        _log(quiet, f"demo: sending ~{rate:g} orders/s for {duration:g}s")
        _log(quiet, f"demo: MES dashboard at {base}/dashboard?token={dashboard_token}")
        traffic = Traffic(base, partner_key, burst_key, dashboard_token=dashboard_token)
        sent_at = time.monotonic()
        asyncio.run(traffic.run(duration, rate))
        send_seconds = time.monotonic() - sent_at
        ids = list(traffic.accepted)
        _log(quiet, f"demo: {len(ids)} accepted; waiting for in-flight orders")
        wait_until = time.monotonic() + (drain_timeout or max(30.0, duration * 2))
        # Orders stopped by a fault never finish: with faults on, "no order moved for a while"
        # ends the wait too.
        quiet_for = QUIET_SECONDS + (settings.fault_slow_seconds if "slow-mes" in on else 0.0)
        states = order_states(settings.database_url, ids)
        moved_at = time.monotonic()
        while time.monotonic() < wait_until:
            if all(states.get(i, {}).get("status") in TERMINAL for i in ids):
                break
            if on and time.monotonic() - moved_at > quiet_for:
                break
            time.sleep(0.5)
            before, states = states, order_states(settings.database_url, ids)
            if any(before.get(i, {}).get("status") != st["status"] for i, st in states.items()):
                moved_at = time.monotonic()
        cache_ratio = _cache_hit_ratio(base)
    finally:
        group.send_signal(signal.SIGTERM)
        try:
            group.wait(timeout=30)
        except subprocess.TimeoutExpired:
            group.kill()
        log_file.close()

    counts = {s: 0 for s in STATUSES}
    unaccounted: list[str] = []
    latencies: list[float] = []
    repeated = 0
    for oid in ids:
        st = states.get(oid)
        if st is None or st["status"] not in RANK:
            unaccounted.append(oid)
            continue
        counts[st["status"]] += 1
        repeated += bool(st["repeated"])
        if st["latency_ms"] is not None:
            latencies.append(float(st["latency_ms"]))
    in_flight = sum(n for s, n in counts.items() if s not in TERMINAL)
    return {
        "accepted": len(ids),
        "completed": counts["done"],
        "failed": counts["failed"],
        "dead_lettered": counts["dead_lettered"],
        "in_flight": in_flight,
        "unaccounted": len(unaccounted),
        "rejected_invalid": traffic.rejected_invalid,
        "rate_limited": traffic.rate_limited,
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                       "p99": _percentile(latencies, 99)},
        "cache_hit_ratio": cache_ratio,
        "dashboard_reads": traffic.dashboard_reads,
        "by_channel": {ch: sum(1 for c in traffic.accepted.values() if c == ch)
                       for ch in ("b2c", "b2b")},
        "accepted_per_second": round(len(ids) / send_seconds, 1) if send_seconds else None,
        "transport_errors": len(traffic.errors),
        "retried_after_connection_error": traffic.retried,
        "unaccounted_order_ids": unaccounted[:20],
        "faults": on,
        # Known states, so not unaccounted: where the faults stopped them.
        "lost_on_purpose": in_flight if on else 0,
        "stuck_by_status": {s: n for s, n in counts.items() if n and s not in TERMINAL},
        "processed_twice": repeated,
    }


def format_summary(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    ok = "OK" if s["unaccounted"] == 0 else "ORDERS UNACCOUNTED FOR"
    lines = []
    if s.get("faults"):
        stuck = ", ".join(f"{st} {n}" for st, n in s["stuck_by_status"].items()) or "none"
        lines += [
            f"FAULTS ON         {format_spec(s['faults'])}   (docs/orderflow.md: Faults on "
            "purpose)",
            f"lost_on_purpose   {s['lost_on_purpose']}   stopped at: {stuck}",
            f"processed_twice   {s['processed_twice']}",
        ]
    retried, gave_up = s.get("retried_after_connection_error", 0), s.get("transport_errors", 0)
    if retried or gave_up:
        lines.append(f"connection errors {retried} retried with the same Idempotency-Key, "
                     f"{gave_up} gave up")
    return "\n".join([
        *lines,
        f"accepted          {s['accepted']}  (b2c {s['by_channel']['b2c']}, "
        f"b2b {s['by_channel']['b2b']})",
        f"completed         {s['completed']}",
        f"failed            {s['failed']}   (unprintable: larger than the build volume)",
        f"dead_lettered     {s['dead_lettered']}",
        f"in_flight         {s['in_flight']}",
        f"unaccounted       {s['unaccounted']}   {ok}",
        f"rejected_invalid  {s['rejected_invalid']}",
        f"rate_limited      {s['rate_limited']}",
        f"latency accept→done  p50 {lat['p50']} ms · p95 {lat['p95']} ms · p99 {lat['p99']} ms",
        f"cache_hit_ratio   {s['cache_hit_ratio']}   ({s['dashboard_reads']} dashboard reads "
        "by two managers polling every 0.5 s)",
    ])
