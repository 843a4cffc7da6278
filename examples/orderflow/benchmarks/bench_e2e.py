"""End-to-end benchmark of orderflow: MES worker scaling, the cached dashboard, result writes.

    .venv/bin/python examples/orderflow/benchmarks/bench_e2e.py            # full run, ~6 min
    .venv/bin/python examples/orderflow/benchmarks/bench_e2e.py --json     # one JSON object
    ... --dashboard-only / --writes-only / --skip-scaling / --skip-dashboard / --skip-writes

It runs the real processes (``orderflow api``, ``relay``, ``status``, ``mes``) against the local
PostgreSQL, RabbitMQ and Redis, on a database, vhost and key prefix of its own
(``orderflow_bench``, ``orderflow-bench``) that it recreates each run, and prints:

1. **MES scaling**: a burst of ``--orders`` orders through the ingress with 1, 2 and 4 MES
   workers; end-to-end orders/s (first accept → last done), accept → done latency p50/p95/p99 and
   the ratio to one worker. MES stages are simulated I/O (``ORDERFLOW_MES_STAGE_DELAY``), so the
   workers are I/O-bound as a real MES waiting on slicers and printers is.
2. **Dashboard**: with ``--seed`` synthetic orders bulk-loaded by COPY and orders flowing at
   ``--rate``/s through 2 workers, ``--readers`` concurrent readers hit each endpoint a manager's
   dashboard reads (summary, a page of each status, newest) of a cached ingress and of an
   uncached one (``ORDERFLOW_DASHBOARD_CACHE=0``), and ``GET /healthz`` (the HTTP floor) among
   them in the same windows: p50/p95 per endpoint at the client and in the server
   (``Server-Timing``), the hit ratio and uncached/cached. Then issue 18's target per endpoint,
   PASS or FAIL: cached client p50 and p95 within 1.25x of ``/healthz``'s, and uncached / cached
   in the server >= 20x. The exit status is 1 when a target is missed.
3. **Result writes**: the status events of ``--write-orders`` orders written through the CRM
   status consumer's ``BatchWriter`` and with one transaction per event, ``--write-inflight`` in
   flight: events/s, transactions per event, the wait for the commit.

A CPU probe (a fixed pure-Python workload) is printed at the start and the end: the shared
machine's speed, to compare runs by.

The dashboard readers use aiohttp (``pip install -e 'examples/orderflow[bench]'``): httpx costs
~1.8 ms of client CPU per request on our machines, more than a cached endpoint itself, so it
would measure the client. Orders are posted with httpx, from a process of their own (``--flow``).

Not a test: apart from the dashboard's targets nothing is checked; the figures go to
docs/explanation/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

try:
    import aiohttp
except ImportError:  # pragma: no cover - an error with the fix, at start
    sys.exit("bench_e2e.py needs aiohttp for its dashboard readers: "
             "pip install -e 'examples/orderflow[bench]'")
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from orderflow.migrations import upgrade
from orderflow.statuses import STATUSES

DSN = "postgresql://postgres@127.0.0.1:5432/orderflow_bench"
VHOST = "orderflow-bench"
AMQP = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
MGMT = "http://127.0.0.1:15672"
REDIS_PREFIX = "orderflow-bench"
DASHBOARD_TOKEN = "bench-manager-token"  # the readers are managers (orderflow.api.auth)
TERMINAL = ("done", "failed", "dead_lettered")
SEED_STATUSES = (["done"] * 90 + ["failed"] * 3 + ["accepted", "published", "received", "priced",
                                                   "scheduled", "printing"] * 1 + ["printing"])
# What a manager's dashboard reads (orderflow/templates/dashboard.html): the summary, a page of
# PAGE orders of each status it offers a button for, and the newest orders.
PAGE = 50
ENDPOINTS = {
    "summary": "/api/v1/dashboard/summary",
    **{f"orders?status={s}": f"/api/v1/dashboard/orders?status={s}&limit={PAGE}"
       for s in STATUSES},
    "orders (newest)": f"/api/v1/dashboard/orders?limit={PAGE}",
}
# The floor under any cached endpoint: polled with them, in the same windows and at the same
# load, so "within 1.25x of /healthz" compares like with like.
FLOOR_NAME = "healthz (floor)"
# Issue 18's dashboard target, checked on the main measurement (2.) of the "after" pair.
CLIENT_TARGET = 1.25  # cached p50 and p95 at the client <= this x GET /healthz's
SERVER_TARGET = 20.0  # uncached / cached p50 in the server (Server-Timing) >= this
PATHS = {**ENDPOINTS, FLOOR_NAME: "/healthz"}


# --- environment ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset_database(dsn: str = DSN) -> None:
    """Drop the database of ``dsn`` and create it migrated."""
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(str(conninfo_to_dict(dsn)["dbname"]))))
    upgrade(dsn)


def reset_vhost(vhost: str = VHOST) -> None:
    """An empty RabbitMQ vhost ``vhost`` that guest may use."""
    auth = ("guest", "guest")
    with httpx.Client(base_url=MGMT, auth=auth, timeout=10) as c:
        c.delete(f"/api/vhosts/{vhost}")
        c.put(f"/api/vhosts/{vhost}").raise_for_status()
        c.put(f"/api/permissions/{vhost}/guest",
              json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()


def seed(n: int) -> float:
    """COPY ``n`` synthetic orders (created over the last 30 days) and one history row each."""
    started = time.perf_counter()
    rng = random.Random(42)
    now = datetime.now(UTC)
    models = [json.dumps({"name": f"part-{i}.stl", "volume_cm3": 5 + i, "material": m,
                          "quality": q})
              for i, (m, q) in enumerate((m, q) for m in ("PLA", "ABS", "PETG", "RESIN")
                                         for q in ("draft", "standard", "fine"))]
    orders, history = io.StringIO(), io.StringIO()
    for _ in range(n):
        oid = uuid.uuid4()
        status = rng.choice(SEED_STATUSES)
        created = now - timedelta(days=30) + timedelta(seconds=rng.uniform(0, 29 * 86400))
        updated = created + timedelta(minutes=rng.uniform(1, 120))
        price = f"{rng.uniform(2, 400):.2f}"
        model = models[rng.randrange(len(models))].replace("\\", "\\\\")
        orders.write(f"{oid}\tb2c\tseed@example.com\t{model}\t{rng.randint(1, 20)}\ttok\t"
                     f"{status}\t{price}\t{created.isoformat()}\t{updated.isoformat()}\n")
        history.write(f"{oid}\t{status}\t{updated.isoformat()}\n")
    with psycopg.connect(DSN) as conn, conn.cursor() as cur:
        with cur.copy("COPY orders (order_id, channel, customer_email, model, quantity, "
                      "tracking_token, status, price, created_at, updated_at) FROM STDIN") as cp:
            cp.write(orders.getvalue())
        with cur.copy("COPY order_status_history (order_id, status, at) FROM STDIN") as cp:
            cp.write(history.getvalue())
        conn.commit()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("VACUUM ANALYZE order_status_history")
    return time.perf_counter() - started


class Fleet:
    """The orderflow processes of one run; logs go to files in ``logdir``."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir = env, logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, **env: str) -> None:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115  # closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "orderflow.cli", *args], env={**self.env, **env},
            stdout=log, stderr=subprocess.STDOUT)

    def stop(self, *names: str) -> None:
        self._terminate([self.procs.pop(name) for name in names])

    def stop_all(self) -> None:
        procs = list(self.procs.values())
        self.procs.clear()
        self._terminate(procs)

    @staticmethod
    def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")


async def wait_http(url: str, fleet: Any, timeout: float = 40) -> None:
    """Until ``url`` answers 200; ``fleet.check()`` raises if what should serve it died."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            fleet.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


async def wait_consumers(n: int, timeout: float = 30) -> None:
    """Until ``n`` MES consumers are attached to ``orders.b2c`` (each worker has one)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=MGMT, auth=("guest", "guest"), timeout=5) as c:
        while time.monotonic() < deadline:
            r = await c.get(f"/api/queues/{VHOST}/orders.b2c")
            if r.status_code == 200 and r.json().get("consumers", 0) >= n:
                return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{n} MES workers did not attach to orders.b2c")


# --- load -------------------------------------------------------------------------------------
BODY = {"customer_email": "bench@example.com", "quantity": 2,
        "model": {"name": "bench.stl", "volume_cm3": 12.0, "material": "PLA",
                  "quality": "standard"}}


async def post_orders(client: httpx.AsyncClient, n: int, parallel: int = 16) -> list[str]:
    ids: list[str] = []
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            r = await client.post("/api/v1/shop/orders", json=BODY)
            r.raise_for_status()
            ids.append(r.json()["order_id"])

    await asyncio.gather(*(one() for _ in range(n)))
    return ids


def cpu_probe() -> float:
    """Milliseconds for a fixed pure-Python workload (best of 5): the machine's speed now.

    Our 2 vCPUs are shared with other machines' work: the same code ran 2x slower at one moment
    than minutes later (93 vs 48 ms here), so figures of different runs compare only with this
    probe beside them. Ratios within one run are measured in interleaved windows instead.
    """
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def wait_terminal(ids: list[str], fleet: Fleet, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        while True:
            fleet.check()
            row = await (await conn.execute(
                "SELECT count(*) FROM orders WHERE order_id = ANY(%s::uuid[]) AND status = "
                "ANY(%s)", (ids, list(TERMINAL)))).fetchone()
            if row and row[0] >= len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0] if row else 0}/{len(ids)} orders finished")
            await asyncio.sleep(0.5)
        rows = await (await conn.execute(
            "SELECT o.created_at, h.at FROM orders o JOIN order_status_history h "
            "USING (order_id) WHERE o.order_id = ANY(%s::uuid[]) AND h.status = 'done'",
            (ids,))).fetchall()
    lat = [(at - created).total_seconds() * 1000 for created, at in rows]
    span = (max(at for _, at in rows) - min(c for c, _ in rows)).total_seconds()
    return {"orders": len(ids), "done": len(rows), "seconds": round(span, 2),
            "orders_per_s": round(len(rows) / span, 2),
            "latency_ms": {f"p{p}": round(pct(lat, p)) for p in (50, 95, 99)}}


async def scaling(fleet: Fleet, api: str, workers: list[int], n: int, concurrency: int,
                  say: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        for k in workers:
            names = [f"mes{k}-{i}" for i in range(k)]
            for name in names:
                fleet.start(name, "mes", "--concurrency", str(concurrency), "--worker-id", name)
            await wait_consumers(k)
            ids = await post_orders(client, n)
            res = await wait_terminal(ids, fleet, timeout=max(120, 3 * n))
            results[str(k)] = res
            say(f"  {k} MES worker(s): {res['orders_per_s']:7.2f} orders/s, accept->done "
                f"p50 {res['latency_ms']['p50']} ms, p95 {res['latency_ms']['p95']} ms, "
                f"p99 {res['latency_ms']['p99']} ms")
            fleet.stop(*names)
            await asyncio.sleep(1.0)  # let the broker see the consumers go
    base = results[str(workers[0])]["orders_per_s"]
    for k in workers:
        results[str(k)]["scaling"] = round(results[str(k)]["orders_per_s"] / base, 2)
    return results


Target = tuple[str, str]  # (label, base URL)


def _summarize(lat: dict[str, list[float]], served: dict[str, dict[str, int]],
               server: dict[str, list[float]]) -> dict[str, Any]:
    out = {}
    for name, v in lat.items():
        n = max(1, len(v))
        s = server[name]
        out[name] = {"requests": len(v), "p50_ms": round(statistics.median(v), 2) if v else None,
                     "p95_ms": round(pct(v, 95), 2),
                     # in the server, from Server-Timing (obskit's server_timing option): the
                     # endpoint's own time, without the client, the network and the HTTP parser
                     "server_p50_ms": round(statistics.median(s), 3) if s else None,
                     "server_p95_ms": round(pct(s, 95), 3) if s else None,
                     # served from cache: from this process's copy or Redis ("hit") or the
                     # previous copy while another reader reloads ("stale")
                     "hit_ratio": round((served[name].get("hit", 0)
                                         + served[name].get("stale", 0)) / n, 3),
                     "errors": sum(k for how, k in served[name].items()
                                   if how.startswith("HTTP ")),
                     "x_cache": dict(served[name])}
    return out


def _new_tally() -> tuple[dict[str, list[float]], dict[str, dict[str, int]],
                                           dict[str, list[float]]]:
    return {k: [] for k in PATHS}, {k: {} for k in PATHS}, {k: [] for k in PATHS}


def _session(base: str, connections: int = 1) -> aiohttp.ClientSession:
    """A dashboard reader's HTTP client: keep-alive, up to ``connections`` at once."""
    return aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=30),
                                 connector=aiohttp.TCPConnector(limit=connections),
                                 headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"})


async def _get(c: aiohttp.ClientSession, name: str, lat: dict[str, list[float]],
               served: dict[str, dict[str, int]], server: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    async with c.get(PATHS[name]) as r:
        await r.read()
    lat[name].append((time.perf_counter() - t0) * 1000)
    # An error is counted, not raised: on a machine busy enough the uncached ingress runs out
    # of database connections (503 after its 5 s pool timeout), a result worth printing. Its
    # time is kept: a reader waited that long.
    how = r.headers.get("x-cache", "?") if r.status < 400 else f"HTTP {r.status}"
    served[name][how] = served[name].get(how, 0) + 1
    timing = r.headers.get("server-timing", "")
    if ";dur=" in timing:  # app;dur=0.123
        server[name].append(float(timing.rpartition(";dur=")[2]))


async def closed_loop(base: str, n_readers: int, seconds: float, tally: Any) -> None:
    """``n_readers`` readers, each sending its next request when the last one returned: the
    saturation figure (it measures how many requests the ingress can queue, not a dashboard)."""
    stop_at = time.monotonic() + seconds

    async def reader(i: int) -> None:
        names = list(PATHS)
        async with _session(base) as c:
            j = i
            while time.monotonic() < stop_at:
                await _get(c, names[j % len(names)], *tally)
                j += 1

    await asyncio.gather(*(reader(i) for i in range(n_readers)))


async def open_loop(base: str, n_readers: int, rate: float, seconds: float, tally: Any,
                    rng: random.Random) -> None:
    """``n_readers`` dashboards polling at ``rate`` requests/s in total (Poisson arrivals): each
    request is sent on schedule whether or not the previous one has returned, as independent
    browsers do, so a slow response does not hide the load behind it."""
    stop_at = time.monotonic() + seconds
    names = list(PATHS)

    async def reader(i: int) -> None:
        pending: set[asyncio.Task[None]] = set()
        async with _session(base, connections=64) as c:
            next_at, j = time.monotonic() + rng.expovariate(rate / n_readers), i
            while next_at < stop_at:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                task = asyncio.create_task(_get(c, names[j % len(names)], *tally))
                pending.add(task)
                task.add_done_callback(pending.discard)
                j += 1
                next_at += rng.expovariate(rate / n_readers)
            await asyncio.gather(*pending)

    await asyncio.gather(*(reader(i) for i in range(n_readers)))


async def interleaved(targets: list[Target], rounds: int, window: float,
                      run_one: Any) -> dict[str, Any]:
    """Each target gets ``rounds`` windows of ``window`` s, round-robin, so drifts in the noise
    of the shared machine hit every target alike."""
    tallies = {label: _new_tally() for label, _ in targets}
    for _ in range(rounds):
        for label, base in targets:
            await run_one(base, window, tallies[label])
    return {label: _summarize(*tallies[label]) for label, _ in targets}


def _ratios(res: dict[str, Any], cached: str, uncached: str,
            prefix: str = "") -> dict[str, Any]:
    def ratio(name: str, q: str) -> float | None:
        c, u = res[cached][name][f"{prefix}{q}_ms"], res[uncached][name][f"{prefix}{q}_ms"]
        return round(u / c, 1) if c and u else None

    return {name: {q: ratio(name, q) for q in ("p50", "p95")} for name in ENDPOINTS}


def _table(say: Any, res: dict[str, Any], pairs: list[tuple[str, str, str]]) -> None:
    say(f"    {'endpoint':28} {'cached p50/p95 ms':>19} {'from cache':>10} "
        f"{'uncached p50/p95 ms':>20} {'x p50':>6} {'x p95':>6}   "
        f"{'in the server (Server-Timing): cached / uncached p50, p95 ms':>30}  x p50  x p95")
    for title, cached, uncached in pairs:
        say(f"   [{title}]")
        x = _ratios(res, cached, uncached)
        xs = _ratios(res, cached, uncached, "server_")
        for name in PATHS:
            c, u = res[cached][name], res[uncached][name]
            floor = name == FLOOR_NAME  # served by neither cache: no ratios
            line = (f"    {name:28} {c['p50_ms']:>8.2f} / {c['p95_ms']:<8.2f} "
                    f"{'' if floor else format(c['hit_ratio'], '.0%'):>9} "
                    f"{u['p50_ms']:>9.2f} / {u['p95_ms']:<8.2f} "
                    f"{'' if floor else x[name]['p50']:>6} {'' if floor else x[name]['p95']:>6}")
            if c["server_p50_ms"] is not None and u["server_p50_ms"] is not None:
                line += (f"   {c['server_p50_ms']:.3f} / {u['server_p50_ms']:.2f}, "
                         f"{c['server_p95_ms']:.3f} / {u['server_p95_ms']:.2f}")
                if not floor:
                    line += f"  {xs[name]['p50']:>5} {xs[name]['p95']:>5}"
            errors = [f"{label} {r['errors']}" for label, r in (("cached", c), ("uncached", u))
                      if r["errors"]]
            say(line + (f"   ERRORS: {', '.join(errors)} ({c['x_cache']}, {u['x_cache']})"
                        if errors else ""))


def _targets(res: dict[str, Any], quiet: dict[str, Any], cached: str,
             uncached: str) -> dict[str, Any]:
    """Issue 18's dashboard target per endpoint, from the main measurement (``res``) of one
    (cached, uncached) pair: the cached client p50 and p95 within CLIENT_TARGET x those of
    GET /healthz on the same ingress in the same windows, and uncached / cached in the server
    (Server-Timing p50) at least SERVER_TARGET. Beside it, the same in-server ratio with one
    quiet reader (``quiet``, service time only): under load the uncached ingress queues for
    its database connections, and that wait is inside its Server-Timing too."""
    floor = res[cached][FLOOR_NAME]
    out: dict[str, Any] = {}
    for name in ENDPOINTS:
        c, u = res[cached][name], res[uncached][name]
        client = {q: round(c[f"{q}_ms"] / floor[f"{q}_ms"], 2) for q in ("p50", "p95")}
        server = {q: (round(u[f"server_{q}_ms"] / c[f"server_{q}_ms"], 1)
                      if c[f"server_{q}_ms"] and u[f"server_{q}_ms"] else None)
                  for q in ("p50", "p95")}
        qc, qu = quiet[cached][name]["server_p50_ms"], quiet[uncached][name]["server_p50_ms"]
        out[name] = {"client_vs_healthz": client, "cached_errors": c["errors"],
                     "client_pass": (all(v <= CLIENT_TARGET for v in client.values())
                                     and not c["errors"]),
                     "server_speedup": server,
                     "server_pass": server["p50"] is not None and server["p50"] >= SERVER_TARGET,
                     "cached_server_p50_ms": c["server_p50_ms"],
                     "uncached_server_p50_ms": u["server_p50_ms"],
                     "quiet_server_speedup_p50": round(qu / qc, 1) if qc and qu else None}
    return out


def _say_targets(say: Any, title: str, targets: dict[str, Any], res: dict[str, Any],
                 quiet: dict[str, Any], cached: str, uncached: str) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    floor = res[cached][FLOOR_NAME]
    say(f"   [{title}] GET /healthz in the same windows: p50 {floor['p50_ms']:.2f} ms, "
        f"p95 {floor['p95_ms']:.2f} ms")
    say(f"    {'endpoint':28} {'client / healthz: p50   p95':>28}         "
        f"{'in the server p50: uncached / cached ms':>40}  {'x p50 (x p95)':>16}"
        f"        quiet (1.) x p50")
    for name, t in targets.items():
        cv, sv = t["client_vs_healthz"], t["server_speedup"]
        say(f"    {name:28} {cv['p50']:>22.2f} {cv['p95']:>5.2f}  {verdict(t['client_pass'])}   "
            f"{t['uncached_server_p50_ms']:>31.2f} / {t['cached_server_p50_ms']:<6.3f}  "
            f"{sv['p50']:>6} ({sv['p95']})  {verdict(t['server_pass'])}"
            f"   {t['quiet_server_speedup_p50']:>10}")
    slowdown = statistics.median(res[uncached][n]["server_p50_ms"]
                                 / quiet[uncached][n]["server_p50_ms"] for n in targets)
    if slowdown > 3:
        say(f"    NOTE: the uncached ingress's in-server p50 was {slowdown:.0f}x its quiet "
            "service time (median over the endpoints): it queued for database connections or "
            "CPU at this load on this machine, and that wait is inside its Server-Timing. The "
            "quiet column is service time alone.")


async def dashboard(fleet: Fleet, targets: list[Target], args: argparse.Namespace,
                    say: Any) -> dict[str, Any]:
    """``targets`` come in (cached, uncached) pairs: after, and before if ``--before``.

    Every measurement reads GET /healthz among the endpoints, in the same windows: the floor
    the cached reads are held to. ``out["targets"]`` is issue 18's target for each pair,
    ``out["targets_met"]`` whether the first pair (this tree) meets all of it.
    """
    rng = random.Random(7)
    pairs = [(targets[i][0].rsplit(" ", 1)[0], targets[i][0], targets[i + 1][0])
             for i in range(0, len(targets), 2)]
    for _, base in targets:  # warm up pools and caches
        async with _session(base) as c:
            for path in ENDPOINTS.values():
                async with c.get(path) as r:
                    await r.read()
    out: dict[str, Any] = {}

    # 1. Service time: one sequential reader, nothing else running.
    out["quiet_one_reader"] = await interleaved(
        targets, args.rounds, args.window / 2,
        lambda base, secs, tally: closed_loop(base, 1, secs, tally))
    say("  1. one sequential reader, no orders flowing (service time):")
    _table(say, out["quiet_one_reader"], pairs)

    for i in range(2):
        fleet.start(f"mesd-{i}", "mes", "--concurrency", str(args.concurrency))
    await wait_consumers(2)
    # Orders come from a process of their own, as the shop's customers do: posting them from
    # the readers' event loop (httpx, ~1.8 ms of CPU each) delayed the readers' own requests.
    flower = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--flow", targets[0][1],
         "--rate", str(args.rate)], stdout=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(2)  # orders in every stage before measuring
        # GET /healthz is one of the URLs polled: the round trip itself on the loaded machine,
        # what no cache can take away (idle wake-ups included: at 60 req/s the processes sleep
        # between requests).
        out["open_loop"] = await interleaved(
            targets, args.rounds, args.read_window,
            lambda base, secs, tally: open_loop(base, args.readers, args.read_rate, secs,
                                                tally, rng))
        say(f"  2. MAIN: {args.readers} dashboards polling {args.read_rate:g} req/s in total "
            f"(open loop, {args.rounds} x {args.read_window:g} s per target) while orders flow "
            f"at {args.rate:g}/s:")
        _table(say, out["open_loop"], pairs)
        out["closed_loop"] = await interleaved(
            targets, args.rounds, args.window,
            lambda base, secs, tally: closed_loop(base, args.readers, secs, tally))
        say(f"  3. saturation: {args.readers} closed-loop readers as fast as answered, orders "
            f"flowing (CPU queueing in one ingress on {os.cpu_count()} shared cores):")
        _table(say, out["closed_loop"], pairs)
    finally:
        flower.terminate()
        sent_text, _ = flower.communicate(timeout=60)
    out["orders_sent_during_reads"] = int(sent_text.strip() or 0)
    out["speedup"] = {model: {title: _ratios(out[model], cached, uncached)
                              for title, cached, uncached in pairs}
                      for model in ("quiet_one_reader", "open_loop", "closed_loop")}
    out["speedup_in_server"] = {model: {title: _ratios(out[model], cached, uncached, "server_")
                                        for title, cached, uncached in pairs}
                                for model in ("quiet_one_reader", "open_loop", "closed_loop")}
    out["targets"] = {title: _targets(out["open_loop"], out["quiet_one_reader"], cached,
                                      uncached)
                      for title, cached, uncached in pairs}
    say(f"  TARGETS (issue 18), from 2.: each cached read's client p50 and p95 within "
        f"{CLIENT_TARGET:g}x GET /healthz's, and uncached / cached in the server (Server-Timing "
        f"p50) >= {SERVER_TARGET:g}x, for every endpoint:")
    for title, cached, uncached in pairs:
        _say_targets(say, title, out["targets"][title], out["open_loop"],
                     out["quiet_one_reader"], cached, uncached)
    first = out["targets"][pairs[0][0]]
    missed = [f"{name} ({what})" for name, t in first.items()
              for what, ok in (("client", t["client_pass"]), ("server", t["server_pass"]))
              if not ok]
    out["targets_met"] = not missed
    say(f"  {'ALL TARGETS MET' if not missed else 'TARGETS MISSED: ' + ', '.join(missed)} "
        f"[{pairs[0][0]}]")
    return out


# The status events the MES publishes for an order that is printed (mes.py).
WRITE_STAGES = ("received", "priced", "scheduled", "printing", "done")


def _fresh_orders(n: int) -> list[str]:
    """COPY ``n`` orders in status ``received`` with no history: each variant writes for orders
    of its own, so no variant meets the rows of another."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC).isoformat()
    model = json.dumps({"name": "bench.stl", "volume_cm3": 10, "material": "PLA",
                        "quality": "standard"})
    with psycopg.connect(DSN) as conn, conn.cursor() as cur:
        with cur.copy("COPY orders (order_id, channel, customer_email, model, quantity, "
                      "tracking_token, status, created_at, updated_at) FROM STDIN") as cp:
            for oid in ids:
                cp.write(f"{oid}\tb2c\tbench@example.com\t{model}\t1\ttok\treceived\t"
                         f"{now}\t{now}\n")
        conn.commit()
    return ids


async def result_writes(args: argparse.Namespace, say: Any,
                        orders_per_s: float | None = None) -> dict[str, Any]:
    """The MES's results reach the database through the CRM status consumer. Same events, same
    real PostgreSQL, ``--write-inflight`` events in flight (the consumer's concurrency), each
    handler waiting for its event to be committed before it would ack:

    * **batched**: ``orderflow.batching.BatchWriter`` as ``orderflow status`` runs it (up to 200
      events or 20 ms per transaction);
    * **per event**: one transaction per event, the handlers sharing the same 4-connection pool.

    Prints events/s committed, transactions per event (counted where they are opened) and the
    handlers' wait for the commit, in interleaved rounds.
    """
    from orderflow import crm, db
    from orderflow.batching import BatchWriter

    pool = await db.open_pool(DSN, max_size=4, name="bench-writes")
    transactions = 0

    async def flush(items: list[crm.StatusEvent]) -> None:
        nonlocal transactions
        transactions += 1
        async with pool.connection() as conn, conn.transaction():
            await crm.record_statuses(conn, items)

    async def one_by_one(event: crm.StatusEvent) -> None:
        await flush([event])

    async def run_variant(name: str, order_ids: list[str]) -> dict[str, Any]:
        # Stage by stage over all orders, as concurrent MES workers interleave their orders.
        base = datetime.now(UTC)
        queue: asyncio.Queue[crm.StatusEvent] = asyncio.Queue()
        for i, stage in enumerate(WRITE_STAGES):
            for oid in order_ids:
                queue.put_nowait(crm.StatusEvent(order_id=oid, status=stage,
                                                 at=base + timedelta(milliseconds=i),
                                                 worker="bench"))
        n = queue.qsize()
        writer: BatchWriter[crm.StatusEvent] = BatchWriter("bench", flush)
        writer.start()
        submit = writer.submit if name == "batched" else one_by_one
        waits: list[float] = []

        async def handler() -> None:
            while not queue.empty():
                event = queue.get_nowait()
                t0 = time.perf_counter()
                await submit(event)
                waits.append((time.perf_counter() - t0) * 1000)

        before = transactions
        started = time.perf_counter()
        await asyncio.gather(*(handler() for _ in range(args.write_inflight)))
        seconds = time.perf_counter() - started
        await writer.stop()
        return {"events": n, "seconds": seconds, "commits": transactions - before,
                "waits": waits}

    tallies: dict[str, list[dict[str, Any]]] = {"batched": [], "per event": []}
    try:
        for _ in range(args.rounds):
            for name in tallies:
                ids = await asyncio.to_thread(_fresh_orders, args.write_orders)
                tallies[name].append(await run_variant(name, ids))
    finally:
        await pool.close()
    out: dict[str, Any] = {}
    for name, runs in tallies.items():
        events = sum(r["events"] for r in runs)
        waits = [w for r in runs for w in r["waits"]]
        out[name] = {
            "events_per_s": round(statistics.median(r["events"] / r["seconds"] for r in runs)),
            "transactions_per_event": round(sum(r["commits"] for r in runs) / events, 3),
            "commit_wait_p50_ms": round(statistics.median(waits), 1),
            "commit_wait_p95_ms": round(pct(waits, 95), 1),
        }
        o = out[name]
        say(f"  {name:10} {o['events_per_s']:>7,} events/s  {o['transactions_per_event']:>6} "
            f"transactions/event  wait for the commit p50 {o['commit_wait_p50_ms']} ms, "
            f"p95 {o['commit_wait_p95_ms']} ms")
    out["speedup"] = round(out["batched"]["events_per_s"] / out["per event"]["events_per_s"], 1)
    # What the MES makes at the largest scale measured (the scaling part; 24 orders/s with 4
    # workers on our machine when it did not run).
    rate = orders_per_s or 24.0
    need = rate * len(WRITE_STAGES)
    out["mes_events_per_s"] = round(need)
    say(f"  batched / per event: {out['speedup']}x the events/s. MES workers at {rate:.1f} "
        f"orders/s make ~{need:.0f} status events/s: {need / out['per event']['events_per_s']:.0%}"
        f" of what one status consumer can write one transaction per event, "
        f"{need / out['batched']['events_per_s']:.1%} of what it writes batched.")
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    say("orderflow end-to-end benchmark")
    reset_database()
    reset_vhost()
    seconds = seed(args.seed)
    say(f"  seeded {args.seed:,} orders by COPY in {seconds:.1f} s (db orderflow_bench)")
    logdir = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    env = {**os.environ, "ORDERFLOW_DATABASE_URL": DSN, "ORDERFLOW_READ_DATABASE_URL": DSN,
           "ORDERFLOW_RABBITMQ_URL": AMQP, "ORDERFLOW_REDIS_PREFIX": REDIS_PREFIX,
           "ORDERFLOW_RATE_LIMIT_B2C": "100000/second",
           "ORDERFLOW_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
           "ORDERFLOW_MES_STAGE_DELAY": str(args.stage_delay),
           "OBSKIT_LOG_LEVEL": args.log_level,
           # Server-Timing on every response: the endpoints' time in the server, beside the
           # client's round trip.
           "OBSKIT_SERVER_TIMING": "1"}
    fleet = Fleet(env, logdir)
    port, port_nc = free_port(), free_port()
    api, api_nc = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port_nc}"
    targets: list[Target] = [("after cached", api), ("after uncached", api_nc)]
    result: dict[str, Any] = {
        "config": {"seed_orders": args.seed, "burst_orders": args.orders,
                   "mes_concurrency": args.concurrency, "stage_delay_s": args.stage_delay,
                   "flow_rate": args.rate, "readers": args.readers,
                   "read_rate": args.read_rate, "rounds": args.rounds,
                   "window_s": args.window, "before": args.before, "cpus": os.cpu_count(),
                   "load_average": os.getloadavg(), "cpu_probe_ms": cpu_probe(),
                   "log_level": args.log_level,
                   "logs": str(logdir)}}
    try:
        fleet.start("api", "api", "--port", str(port))
        fleet.start("api-nocache", "api", "--port", str(port_nc),
                    ORDERFLOW_DASHBOARD_CACHE="0")
        fleet.start("relay", "relay")
        fleet.start("status", "status")
        if args.before and not args.skip_dashboard:
            # The same ingress from an older source tree (PYTHONPATH wins over the editable
            # install), reading the same database and Redis: before/after in one run.
            old = {"PYTHONPATH": str(Path(args.before).resolve())}
            for label, extra in (("cached", {}), ("uncached", {"ORDERFLOW_DASHBOARD_CACHE": "0"})):
                p = free_port()
                fleet.start(f"api-before-{label}", "api", "--port", str(p), **old, **extra)
                targets.append((f"before {label}", f"http://127.0.0.1:{p}"))
        for _, base in targets:
            await wait_http(f"{base}/healthz", fleet)
        if not args.skip_scaling:
            say(f"MES scaling: bursts of {args.orders} orders, {args.concurrency} concurrent "
                f"orders per worker, 3 stages x {args.stage_delay} s simulated I/O")
            result["scaling"] = await scaling(fleet, api, args.workers, args.orders,
                                              args.concurrency, say)
            say("  scaling vs 1 worker: " + ", ".join(
                f"{k}: {v['scaling']}x" for k, v in result["scaling"].items()))
        if not args.skip_dashboard:
            say(f"Dashboard at {args.seed:,}+ orders; targets {', '.join(t for t, _ in targets)}"
                f"; {args.rounds} interleaved windows of {args.window:g} s per target and load "
                f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
            result["dashboard"] = await dashboard(fleet, targets, args, say)
            result["config"]["load_average_after"] = os.getloadavg()
    finally:
        fleet.stop_all()
    if not args.skip_writes:
        say(f"Result writes: status events of {args.write_orders:,} orders x "
            f"{len(WRITE_STAGES)} stages per variant, {args.write_inflight} in flight, "
            f"{args.rounds} interleaved rounds (the fleet stopped: only this writes)")
        top = max(result.get("scaling", {}).values(), default=None,
                  key=lambda r: r["orders_per_s"])
        result["writes"] = await result_writes(args, say, top and top["orders_per_s"])
    result["config"]["cpu_probe_ms_after"] = cpu_probe()  # the fleet stopped: the machine alone
    say(f"  CPU probe: {result['config']['cpu_probe_ms']} ms at the start, "
        f"{result['config']['cpu_probe_ms_after']} ms at the end (a fixed pure-Python workload: "
        "the shared machine's speed; compare runs only at similar values)")
    say(f"  process logs: {logdir}")
    return result


def flow(base: str, rate: float) -> None:
    """``--flow BASE``: post shop orders to ``BASE`` at ``rate``/s until SIGTERM, then print how
    many were sent (the dashboard part runs this in a process of its own)."""
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    sent = 0
    with httpx.Client(base_url=base, timeout=30) as c:
        next_at = time.monotonic()
        while not stopping:
            c.post("/api/v1/shop/orders", json=BODY)
            sent += 1
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    print(sent, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=200, help="orders per scaling burst")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    p.add_argument("--concurrency", type=int, default=4, help="orders in flight per MES worker")
    p.add_argument("--stage-delay", type=float, default=0.2, help="seconds per MES stage")
    p.add_argument("--seed", type=int, default=100_000, help="synthetic orders in the database")
    p.add_argument("--rate", type=float, default=20.0, help="orders/s during the dashboard run")
    p.add_argument("--readers", type=int, default=8, help="concurrent dashboard readers")
    p.add_argument("--read-rate", type=float, default=60.0,
                   help="open-loop dashboard requests/s, all readers together")
    p.add_argument("--rounds", type=int, default=3, help="interleaved windows per target")
    p.add_argument("--window", type=float, default=5.0, help="seconds per window")
    p.add_argument("--read-window", type=float, default=10.0,
                   help="seconds per window of the main dashboard measurement (2.): at 60 "
                        "req/s over 12 URLs, ~150 requests per URL and target in 3 rounds")
    p.add_argument("--before", metavar="DIR",
                   help="also measure the ingress of an older orderflow source tree, e.g. "
                        "git archive HEAD examples/orderflow | tar -x -C /tmp/before; "
                        "DIR=/tmp/before/examples/orderflow")
    p.add_argument("--log-level", default="WARNING", help="OBSKIT_LOG_LEVEL of the processes")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-dashboard", action="store_true")
    p.add_argument("--skip-writes", action="store_true")
    p.add_argument("--dashboard-only", action="store_true", help="only the dashboard (~2.5 min)")
    p.add_argument("--writes-only", action="store_true", help="only the result writes (~1 min)")
    p.add_argument("--write-orders", type=int, default=1000,
                   help="orders per result-writes run (5 status events each)")
    p.add_argument("--write-inflight", type=int, default=64,
                   help="status events in flight (orderflow status's concurrency)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--flow", metavar="BASE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dashboard_only:
        args.skip_scaling = args.skip_writes = True
    if args.writes_only:
        args.skip_scaling = args.skip_dashboard = True
    if args.flow:
        flow(args.flow, args.rate)
        return 0
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    # The dashboard's targets are the one check this benchmark makes: exit 1 when missed.
    return 0 if result.get("dashboard", {}).get("targets_met", True) else 1


if __name__ == "__main__":
    sys.exit(main())
