"""Peak orders per second of orderflow, end to end, and where it saturates first.

    .venv/bin/python examples/orderflow/benchmarks/bench_peak.py            # full run, ~20 min
    .venv/bin/python examples/orderflow/benchmarks/bench_peak.py --quick    # smoke run, ~3 min
    ... --configs 2x1,2x2 --step-seconds 20 --json-out /tmp/peak.json

For each configuration (``MxI``: M MES workers, I ingress processes; default 1x1, 2x1, 4x1, 1x2,
2x2, 4x2) it starts ``orderflow all --mes-workers M --ingress I`` with
``ORDERFLOW_MES_STAGE_DELAY=0`` on a database, vhost and Redis prefix of its own
(``orderflow_peak``, ``orderflow-peak``, recreated per configuration) and offers shop orders at
a fixed rate, open loop, for ``--step-seconds`` per step: the rate grows by ``--growth`` while a
step passes, then ``--refine`` bisections between the last pass and the first failure. A step
passes when

* every request was answered 202 and the client sent at the offered rate (else the client, not
  orderflow, was measured);
* accept latency p99 < ``--max-accept-p99`` (50 ms), timed from the moment each request was due,
  so a client that falls behind shows as latency (no coordinated omission);
* every accepted order reaches a terminal status in PostgreSQL after the step (zero
  unaccounted);
* the pipeline kept up: accepted → ``done`` p99 < ``--max-e2e`` (2 s; at zero stage delay an
  order takes tens of ms, a backlog growing over the step makes it seconds).

During each step it samples the CPU of every process (psutil): each ingress, the relay, the
status consumer, each MES worker, PostgreSQL (our database's backends and its own background
processes), RabbitMQ (beam.smp), Redis, the load client, and the machine as a whole (what is left
is other work on the machine). The first bottleneck is read at the highest failing step, where
the load is greatest: a single-threaded process near 100 % of a core, or the machine near 200 %
(2 cores). Before the steps it measures what the group burns idle, and after them the CPU per
order of each process (the slope of its CPU over the steps' rates).

Then the ceiling of each hop alone (``--skip-hops`` / ``--hops-only``), downstream stopped so
work piles up before it: the ingress accepting (closed loop, relay stopped), the CRM commit
(``crm.create_order`` in this process, no HTTP), the relay publishing the outbox, one MES worker
and then 4 draining ``orders.b2c``, the status consumer writing the piled-up status events, the
broker alone (obskit's Publisher with confirms into a quorum queue, and a consumer), and the load
client alone (against a canned HTTP responder).

The load client is aiohttp in processes of its own (``--clients``); it is timed against the
canned responder so its own limit is known. Nothing asserts: the figures go to
docs/explanation/performance.md (Peak throughput). The machine's other load changes the figures:
a CPU probe is printed at the start and the end, and the CPU that none of our processes used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from bench_e2e import (  # shared with the end-to-end benchmark (this folder is on sys.path)
    BODY,
    Fleet,
    cpu_probe,
    free_port,
    pct,
    reset_database,
    reset_vhost,
    wait_http,
)

try:
    import aiohttp
    import psutil
except ImportError as exc:  # pragma: no cover - the bench extra is missing
    sys.exit(f"bench_peak.py needs {exc.name}: pip install -e 'examples/orderflow[bench]'")

DB_NAME = "orderflow_peak"
DSN = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
VHOST = "orderflow-peak"
AMQP = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
MGMT = "http://127.0.0.1:15672"
REDIS_PREFIX = "orderflow-peak"
TERMINAL = ("done", "failed", "dead_lettered")
SHOP = "/api/v1/shop/orders"
#: Processes that can use both cores; every other one is held to one by its GIL or design.
MULTICORE = {"postgres", "rabbitmq"}
#: Labels of cpu_percent() that are not orderflow's processes or its services.
NOT_OURS = ("machine", "other", "steal", "client", "bench")
#: PostgreSQL's own processes (process titles), which work for every database.
PG_SHARED = ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
             "logical replication launcher", "stats collector", "archiver")


# --- environment ------------------------------------------------------------------------------
def reset_services() -> None:
    """A fresh database (migrated) and vhost of our own."""
    reset_database(DSN)
    reset_vhost(VHOST)


def service_env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "ORDERFLOW_DATABASE_URL": DSN, "ORDERFLOW_READ_DATABASE_URL": DSN,
           "ORDERFLOW_RABBITMQ_URL": AMQP, "ORDERFLOW_REDIS_PREFIX": REDIS_PREFIX,
           "OBSKIT_JOURNEY_PREFIX": f"{REDIS_PREFIX}-journey",
           # One client IP sends everything: the per-IP shop limit would measure itself.
           "ORDERFLOW_RATE_LIMIT_B2C": "1000000/second",
           "ORDERFLOW_MES_STAGE_DELAY": "0",
           "OBSKIT_LOG_LEVEL": args.log_level}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if args.telemetry == "off":
        env["OTEL_SDK_DISABLED"] = "true"
    return env


async def queue_depths() -> dict[str, int]:
    """Messages in each queue of our vhost (the management API refreshes them every ~5 s)."""
    async with httpx.AsyncClient(base_url=MGMT, auth=("guest", "guest"), timeout=5) as c:
        r = await c.get(f"/api/queues/{VHOST}", params={"columns": "name,messages"})
        return {q["name"]: int(q.get("messages") or 0) for q in r.json()} if r.is_success \
            else {}


async def consumers(queue: str) -> int:
    async with httpx.AsyncClient(base_url=MGMT, auth=("guest", "guest"), timeout=5) as c:
        r = await c.get(f"/api/queues/{VHOST}/{queue}")
        return int(r.json().get("consumers", 0)) if r.status_code == 200 else 0


async def until(check: Any, timeout: float, what: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def connect() -> psycopg.AsyncConnection[Any]:
    """A connection to our database, waiting out "too many clients": the server's connections
    are shared with everything else on the machine."""
    for attempt in range(60):
        try:
            return await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        except psycopg.OperationalError:
            if attempt == 59:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def scalar(query: str, *params: Any) -> int:
    async with await connect() as conn:
        row = await (await conn.execute(query, params)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# --- CPU ----------------------------------------------------------------------------------------
def _label(p: psutil.Process, group_pid: int | None, clients: dict[int, str]) -> str | None:
    """Who a process is: ingress-N, relay, status, mes-N, postgres, rabbitmq, redis, client."""
    try:
        if p.pid in clients:
            return clients[p.pid]
        name = p.name()
        if name.startswith("postgres"):
            # Our database's backends and the shared background processes (WAL writer,
            # checkpointer, ...); backends of other databases are other work on the machine.
            title = " ".join(p.cmdline()).strip()
            shared = title.endswith(PG_SHARED) or "/bin/postgres " in title
            return "postgres" if DB_NAME in title or shared else None
        if name == "beam.smp":
            return "rabbitmq"
        if name == "redis-server":
            return "redis"
        if group_pid is not None and p.ppid() == group_pid:
            child = p.environ().get("ORDERFLOW_PROCESS", "")
            return {"api": "ingress-1"}.get(child, child.replace("api-", "ingress-"))
        if p.pid == os.getpid():
            return "bench"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return None


@dataclass
class CpuSnapshot:
    at: float
    by_pid: dict[int, tuple[str, float]]
    machine_busy: float
    steal: float


def cpu_snapshot(group_pid: int | None, clients: dict[int, str]) -> CpuSnapshot:
    by_pid: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter():
        label = _label(p, group_pid, clients)
        if label is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            by_pid[p.pid] = (label, t.user + t.system)
    m = psutil.cpu_times()
    return CpuSnapshot(time.monotonic(), by_pid, m.user + m.nice + m.system + m.irq + m.softirq,
                       getattr(m, "steal", 0.0))


def cpu_percent(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    """% of one core per label between two snapshots, plus ``machine`` (of 200 % on 2 cores),
    ``other`` (what none of the labelled processes used: other work on the shared machine) and
    ``steal`` (taken by the hypervisor)."""
    wall = max(b.at - a.at, 1e-6)
    out: dict[str, float] = {}
    for pid, (label, t) in b.by_pid.items():
        before = a.by_pid.get(pid, (label, 0.0))[1]  # born in between: all its time is new
        out[label] = out.get(label, 0.0) + (t - before) / wall * 100
    ours = sum(out.values())
    out = {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
    out["machine"] = round((b.machine_busy - a.machine_busy) / wall * 100, 1)
    out["other"] = round(max(0.0, out["machine"] - ours), 1)
    out["steal"] = round((b.steal - a.steal) / wall * 100, 1)
    return out


def bottleneck(cpu: dict[str, float], cores: int) -> dict[str, Any]:
    """The process closest to its own ceiling: 100 % for a single-threaded one (a Python
    process is held to one core by the GIL), the whole machine for PostgreSQL and RabbitMQ;
    and the machine itself."""
    machine_cap = cores * 100.0
    procs = {k: v for k, v in cpu.items() if k not in ("machine", "other", "steal")}
    load = {k: v / (machine_cap if k in MULTICORE else 100.0) for k, v in procs.items()}
    top = max(load, key=lambda k: load[k]) if load else "?"
    machine = cpu.get("machine", 0.0) / machine_cap
    biggest = sorted(procs.items(), key=lambda kv: -kv[1])[:3]
    if load and load[top] >= 0.85 and load[top] >= machine:
        name = f"{top} ({procs[top]:.0f} % of a core)" if top not in MULTICORE else \
            f"{top} ({procs[top]:.0f} % of {cores} cores)"
    elif machine >= 0.85:
        name = (f"the machine's {cores} cores ({cpu['machine']:.0f} %, other work "
                f"{cpu.get('other', 0):.0f}; ours: "
                + ", ".join(f"{k} {v:.0f}" for k, v in biggest) + ")")
    else:
        name = (f"nothing CPU-saturated (machine {cpu.get('machine', 0):.0f} %; top: "
                + ", ".join(f"{k} {v:.0f}" for k, v in biggest) + ")")
    return {"name": name, "process": top, "process_cpu": procs.get(top),
            "machine_cpu": cpu.get("machine"), "top": biggest}


# --- load client (a process of its own) ---------------------------------------------------------
async def _load(base: str, rate: float, seconds: float, connections: int, closed: int,
                start_at: float, path: str) -> dict[str, Any]:
    """Open loop: request i is due at ``start_at + i / rate`` whatever the answers do; its
    latency counts from when it was due. ``closed`` > 0: that many workers, each sending its
    next request when the last is answered (for ceilings)."""
    lat: list[float] = []
    ids: list[str] = []
    errors: dict[str, int] = {}
    late = 0
    body = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json"}
    # keepalive_timeout under uvicorn's 5 s: never reuse a connection the server is closing.
    conn = aiohttp.TCPConnector(limit=connections, keepalive_timeout=3)
    async with aiohttp.ClientSession(base_url=base, connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def one(due: float) -> None:
            try:
                async with s.post(path, data=body, headers=headers) as r:
                    data = await r.read()
                    if r.status in (200, 202):
                        lat.append((time.monotonic() - due) * 1000)
                        if path == SHOP:
                            ids.append(json.loads(data)["order_id"])
                    else:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        end = t0 + seconds
        sent = 0
        if closed:
            async def worker() -> None:
                nonlocal sent
                while time.monotonic() < end:
                    sent += 1
                    await one(time.monotonic())

            await asyncio.gather(*(worker() for _ in range(closed)))
        else:
            total = int(rate * seconds)
            tasks: set[asyncio.Task[None]] = set()
            while sent < total:
                now = time.monotonic()
                due = t0 + sent / rate
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                if now - due > 0.01:
                    late += 1  # this client could not send it on time
                task = asyncio.create_task(one(due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if tasks:
                await asyncio.wait(tasks)
        elapsed = time.monotonic() - t0
    cpu = psutil.Process().cpu_times()
    return {"sent": sent, "ok": len(lat), "errors": errors, "late": late, "latencies": lat,
            "ids": ids, "elapsed": elapsed, "cpu_s": cpu.user + cpu.system}


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    late: int = 0
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu_s: float = 0.0


class Clients:
    """``n`` load processes sharing ``rate``; started ahead, they begin together at a set time."""

    def __init__(self, base: str, rate: float, seconds: float, n: int, *, connections: int,
                 closed: int = 0, path: str = SHOP, lead: float = 1.5) -> None:
        self.start_at = time.time() + lead
        self.procs = [subprocess.Popen(
            [sys.executable, __file__, "--load", base, "--rate", str(rate / n), "--seconds",
             str(seconds), "--connections", str(connections), "--closed", str(closed),
             "--start-at", str(self.start_at), "--path", path],
            stdout=subprocess.PIPE) for _ in range(n)]

    def labels(self) -> dict[int, str]:
        return {p.pid: "client" for p in self.procs}

    async def result(self) -> LoadResult:
        out = LoadResult()
        for p in self.procs:
            text, _ = await asyncio.to_thread(p.communicate)
            if p.returncode:
                raise RuntimeError(f"load client exited with {p.returncode}")
            r = json.loads(text)
            out.sent += r["sent"]
            out.ok += r["ok"]
            out.late += r["late"]
            out.latencies += r["latencies"]
            out.ids += r["ids"]
            out.elapsed = max(out.elapsed, r["elapsed"])
            out.client_cpu_s += r["cpu_s"]
            for k, v in r["errors"].items():
                out.errors[k] = out.errors.get(k, 0) + v
        return out


# --- one configuration --------------------------------------------------------------------------
class Group:
    """``orderflow all`` for one configuration; its log goes to ``logdir``."""

    def __init__(self, env: dict[str, str], logdir: Path, mes: int, ingress: int,
                 concurrency: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.mes = mes
        self.log_path = logdir / f"all-{mes}x{ingress}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "orderflow.cli", "all", "--port", str(self.port),
                 "--mes-workers", str(mes), "--ingress", str(ingress), "--concurrency",
                 str(concurrency)], env=env, stdout=log, stderr=subprocess.STDOUT)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"orderflow all exited with {self.proc.returncode}:\n{tail}")

    async def ready(self) -> None:
        await wait_http(f"{self.base}/readyz", self, 60)
        for q in ("orders.b2c", "order-events.status"):
            want = self.mes if q == "orders.b2c" else 1

            async def attached(q: str = q, want: int = want) -> bool:
                self.check()
                return await consumers(q) >= want

            await until(attached, 60, f"{want} consumer(s) on {q}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_accounted(ids: list[str], timeout: float, check: Any) -> int:
    """Wait until every order in ``ids`` is terminal; the number that are not at the end."""
    deadline = time.monotonic() + timeout
    left = len(ids)
    async with await connect() as conn:
        while True:
            check()
            row = await (await conn.execute(
                "SELECT count(*) FROM orders WHERE order_id = ANY(%s::uuid[]) AND status = "
                "ANY(%s)", (ids, list(TERMINAL)))).fetchone()
            left = len(ids) - (row[0] if row else 0)
            if left <= 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.5)


async def e2e_latencies(ids: list[str]) -> list[float]:
    """accepted → done per order, ms (the order's commit time to the MES's ``done``)."""
    async with await connect() as conn:
        rows = await (await conn.execute(
            "SELECT extract(epoch FROM h.at - o.created_at) * 1000 FROM orders o JOIN "
            "order_status_history h USING (order_id) WHERE o.order_id = ANY(%s::uuid[]) "
            "AND h.status = 'done'", (ids,))).fetchall()
    return [float(r[0]) for r in rows]


async def step(group: Group, rate: float, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    seconds = args.step_seconds
    clients = Clients(group.base, rate, seconds, args.clients, connections=args.connections)
    labels = clients.labels()
    # The CPU window: the middle of the step, past the clients' start and before their tail.
    await asyncio.sleep(max(0.0, clients.start_at - time.time()) + min(2.0, seconds / 5))
    a = cpu_snapshot(group.proc.pid, labels)
    depths: list[dict[str, int]] = []

    async def sample_depths() -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                depths.append(await queue_depths())
            await asyncio.sleep(2.5)

    sampler = asyncio.create_task(sample_depths())
    await asyncio.sleep(max(0.5, clients.start_at + seconds - time.time() - 0.3))
    b = cpu_snapshot(group.proc.pid, labels)
    outbox = await scalar("SELECT count(*) FROM outbox")
    load = await clients.result()
    sampler.cancel()
    drain_started = time.monotonic()
    unaccounted = await wait_accounted(load.ids, args.drain_timeout, group.check)
    drain = time.monotonic() - drain_started
    e2e = await e2e_latencies(load.ids)
    cpu = cpu_percent(a, b)
    lat = load.latencies
    achieved = load.sent / max(load.elapsed, 1e-6)
    res: dict[str, Any] = {
        "rate": round(rate), "accepted": load.ok, "errors": load.errors, "late_sends": load.late,
        "accepted_per_s": round(load.ok / seconds, 1), "sent_per_s": round(achieved, 1),
        "accept_p50_ms": round(pct(lat, 50), 1), "accept_p99_ms": round(pct(lat, 99), 1),
        "e2e_p50_ms": round(pct(e2e, 50)), "e2e_p99_ms": round(pct(e2e, 99)),
        "unaccounted": unaccounted, "drain_s": round(drain, 1), "outbox_at_end": outbox,
        "max_depth": {q: max(d.get(q, 0) for d in depths) for q in
                      ("orders.b2c", "order-events.status")} if depths else {},
        "client_cpu_pct": round(load.client_cpu_s / max(load.elapsed, 1e-6) * 100, 1),
        "cpu": cpu}
    why = []
    if load.errors:
        why.append(f"errors {load.errors}")
    if load.late > 0.01 * load.sent:
        why.append(f"client late on {load.late} sends")
    if res["accept_p99_ms"] >= args.max_accept_p99:
        why.append(f"accept p99 {res['accept_p99_ms']} ms")
    if unaccounted:
        why.append(f"{unaccounted} unaccounted")
    if not e2e or res["e2e_p99_ms"] >= args.max_e2e * 1000:
        why.append(f"accepted->done p99 {res['e2e_p99_ms']} ms (backlog)")
    res["ok"] = not why
    res["why"] = "; ".join(why)
    top = ", ".join(f"{k} {v:.0f}" for k, v in list(cpu.items())[:4])
    say(f"    {rate:7.0f}/s  {'pass' if res['ok'] else 'FAIL'}  accept p50/p99 "
        f"{res['accept_p50_ms']}/{res['accept_p99_ms']} ms  done p50/p99 {res['e2e_p50_ms']}/"
        f"{res['e2e_p99_ms']} ms  drain {res['drain_s']} s  CPU % {top}; machine "
        f"{cpu['machine']:.0f}, other {cpu['other']:.0f}" + (f"  [{res['why']}]" if why else ""))
    return res


async def find_peak(group: Group, start: float, args: argparse.Namespace,
                    say: Any) -> dict[str, Any]:
    """Grow the rate while steps pass; then bisect between the last pass and the first fail."""
    steps: list[dict[str, Any]] = []
    passed: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    rate = start
    while True:
        s = await step(group, rate, args, say)
        steps.append(s)
        if s["ok"]:
            passed = s
            if rate >= args.max_rate:
                break
            rate = min(rate * args.growth, args.max_rate)
        else:
            failed = s
            if passed is not None or rate <= args.min_rate:
                break
            rate = max(rate / 2, args.min_rate)  # the start was too high: come down
    for _ in range(args.refine if passed and failed else 0):
        assert passed is not None and failed is not None
        mid = math.sqrt(passed["rate"] * failed["rate"])
        if failed["rate"] / passed["rate"] < 1.06:
            break  # within the step's noise
        s = await step(group, mid, args, say)
        steps.append(s)
        if s["ok"]:
            passed = s
        else:
            failed = s
    cores = os.cpu_count() or 1
    # Saturation shows best at the most load: the highest failing step (or the highest step).
    worst = max((x for x in steps if not x["ok"]), key=lambda x: x["rate"], default=None) \
        or max(steps, key=lambda x: x["rate"])
    return {"peak": passed, "first_fail": failed, "steps": steps,
            "bottleneck": bottleneck(worst["cpu"], cores), "bottleneck_rate": worst["rate"],
            "cost": cost_per_order(steps, cores)}


def _group(label: str) -> str:
    return "mes" if label.startswith("mes-") else \
        "ingress" if label.startswith("ingress") else label


def average_per_order(step: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per order of each of our processes (by group) in ``step``: its share of
    a core over the orders accepted per second, idle work included."""
    rate = max(step["accepted_per_s"], 1e-6)
    groups: dict[str, float] = {}
    for k, v in step["cpu"].items():
        if k not in NOT_OURS:
            groups[_group(k)] = groups.get(_group(k), 0.0) + v
    return {k: round(v * 10 / rate, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def cost_per_order(steps: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """CPU milliseconds each process spends per order: the slope of its CPU against the orders
    accepted per second over the steps (least squares), so what it burns idle (pollers, the
    metrics thread) is left out. Their sum says how many orders/s the machine could carry if
    orderflow had both cores to itself and nothing else ran."""
    xs = [x["accepted_per_s"] for x in steps]
    if len(set(xs)) < 2:
        return {}
    mean_x = sum(xs) / len(xs)
    var = sum((x - mean_x) ** 2 for x in xs)
    labels = {_group(k) for x in steps for k in x["cpu"]} - set(NOT_OURS)
    ms: dict[str, float] = {}
    for label in sorted(labels):
        ys = [sum(v for k, v in x["cpu"].items() if _group(k) == label) for x in steps]
        mean_y = sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
        ms[label] = round(max(slope, 0.0) * 10, 2)  # % of a core per order/s = 10 ms/order
    total = sum(ms.values())
    return {"ms_per_order": dict(sorted(ms.items(), key=lambda kv: -kv[1])),
            "total_ms": round(total, 2),
            "orders_per_s_if_alone": round(cores * 1000 / total) if total else None}


async def configuration(mes: int, ingress: int, start: float, args: argparse.Namespace,
                        logdir: Path, say: Any) -> dict[str, Any]:
    reset_services()
    group = Group(service_env(args), logdir, mes, ingress, args.mes_concurrency)
    try:
        await group.ready()
        # Warm-up, not counted: connections, pools, the first JIT-less imports of each path.
        warm = Clients(group.base, 50, 3, 1, connections=args.connections, lead=0.5)
        await warm.result()
        # What the group burns with no orders (pollers, heartbeats, metrics threads): the part
        # of a step's CPU that is not per order.
        await asyncio.sleep(1.0)
        a = cpu_snapshot(group.proc.pid, {})
        await asyncio.sleep(5.0)
        idle = cpu_percent(a, cpu_snapshot(group.proc.pid, {}))
        ours = round(sum(v for k, v in idle.items() if k not in NOT_OURS), 1)
        say(f"  {mes} MES x {ingress} ingress (MES concurrency {args.mes_concurrency}); idle, "
            f"no orders: ours {ours} % ("
            + ", ".join(f"{k} {v:.0f}" for k, v in idle.items() if k not in NOT_OURS)
            + f"), other work {idle['other']:.0f} %:")
        r = await find_peak(group, start, args, say)
        r["idle_cpu"] = idle
        if peak := r["peak"]:
            # CPU of ours per order at the peak step, over what the group burns idle.
            busy = sum(v for k, v in peak["cpu"].items() if k not in NOT_OURS)
            peak["cpu_ms_per_order_over_idle"] = round(
                (busy - ours) * 10 / max(peak["accepted_per_s"], 1e-6), 1)
        if c := r["cost"]:
            say(f"    CPU per order: {c['total_ms']} ms ("
                + ", ".join(f"{k} {v}" for k, v in c["ms_per_order"].items())
                + f"): both cores would carry ~{c['orders_per_s_if_alone']} orders/s")
        if peak:
            # The slope above is each process's *extra* CPU per extra order/s: ~0 for one whose
            # CPU does not grow with the rate (the status consumer writes bigger batches as the
            # rate grows). Its share at the peak, averaged per order, says what it costs there.
            at_peak = average_per_order(peak)
            peak["cpu_ms_per_order_at_peak"] = at_peak
            say("    CPU per order at the peak, average: "
                + ", ".join(f"{k} {v}" for k, v in at_peak.items()))
        return r
    finally:
        group.stop()


# --- hop ceilings -------------------------------------------------------------------------------
async def _rate_while(count: Any, seconds: float, total: int | None = None) -> dict[str, Any]:
    """Rate of a counter over ``seconds`` (or until it reaches ``total``), sampled every
    0.25 s; the first sample after a move starts the clock, so start-up is not counted."""
    first = await count()
    t_start = time.monotonic()
    while (n := await count()) == first and time.monotonic() - t_start < 30:
        await asyncio.sleep(0.05)
    t0, n0 = time.monotonic(), n
    while time.monotonic() - t0 < seconds and (total is None or n < total):
        await asyncio.sleep(0.25)
        n = await count()
    t1 = time.monotonic()
    return {"count": n - n0, "seconds": round(t1 - t0, 2),
            "per_s": round((n - n0) / max(t1 - t0, 1e-6), 1), "total": n}


async def _commits(seconds: float, concurrency: int) -> dict[str, Any]:
    """The CRM commit alone: ``crm.create_order`` (order, history row, outbox row in one
    transaction) from this process, no HTTP, a pool as large as the ingress's."""
    from orderflow import crm, db

    pool = await db.open_pool(DSN, max_size=20, name="bench-commit")
    n = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal n
        while time.monotonic() < end:
            await crm.create_order(pool, channel="b2c", body=dict(BODY), partner_id=None,
                                   idempotency_key=None, request_id=None, trace_id=None)
            n += 1

    try:
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"count": n, "per_s": round(n / (time.monotonic() - t0), 1)}
    finally:
        await pool.close()


async def _broker(n: int, inflight: int) -> dict[str, Any]:
    """RabbitMQ alone, from one Python process: ``n`` confirmed persistent publishes through
    obskit's Publisher into a quorum queue, ``inflight`` at once; then consumed (prefetch 200,
    one ack each)."""
    import aio_pika

    from obskit.rabbitmq import Publisher

    queue = f"bench.scratch.{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect(AMQP)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        sem = asyncio.Semaphore(inflight)
        async with Publisher(AMQP) as pub:
            async def one(i: int) -> None:
                async with sem:
                    await pub.publish("", queue, {"i": i, "order_id": str(uuid.uuid4())})

            t0 = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            published = n / (time.monotonic() - t0)
        await ch.set_qos(prefetch_count=200)
        got = 0
        done = asyncio.Event()

        async def on_message(m: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            await m.ack()
            got += 1
            if got >= n:
                done.set()

        t0 = time.monotonic()
        tag = await q.consume(on_message)
        await asyncio.wait_for(done.wait(), 120)
        consumed = n / (time.monotonic() - t0)
        await q.cancel(tag)
        await q.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()
    return {"publish_confirmed_per_s": round(published), "consume_ack_per_s": round(consumed)}


async def _canned(port: int) -> None:
    """A fixed 202 answer to every request: the load client's own ceiling is timed on it."""
    body = b'{"order_id":"00000000-0000-0000-0000-000000000000"}'
    answer = (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                head, sep, rest = self.buf.partition(b"\r\n\r\n")
                if not sep:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if len(rest) < length:
                    return
                self.buf = rest[length:]
                self.t.write(answer)  # type: ignore[attr-defined]

    server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def hops(args: argparse.Namespace, logdir: Path, say: Any) -> dict[str, Any]:
    """Each hop's ceiling with the hops after it stopped, so its input has piled up."""
    reset_services()
    env = service_env(args)
    fleet = Fleet(env, logdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    secs = args.hop_seconds
    cores = os.cpu_count() or 1

    def fleet_labels() -> dict[int, str]:
        return {p.pid: name for name, p in fleet.procs.items()}

    def report(name: str, r: dict[str, Any], cpu: dict[str, float], unit: str) -> None:
        r["cpu"] = cpu
        r["bottleneck"] = bottleneck(cpu, cores)["name"]
        # CPU per unit of work of each process that took part (10 ms per % per unit/s).
        r["cpu_ms_per_unit"] = {k: round(v * 10 / r["per_s"], 2) for k, v in cpu.items()
                                if k not in ("machine", "other", "steal") and v >= 3
                                and r["per_s"]}
        out[name] = r
        top = ", ".join(f"{k} {v:.0f} ({r['cpu_ms_per_unit'].get(k, 0):.2f} ms)"
                        for k, v in list(cpu.items())[:4])
        say(f"  {name:38} {r['per_s']:>7,.0f} {unit}  CPU % (ms per {unit[:-2]}): {top}; "
            f"machine {cpu['machine']:.0f}, other {cpu['other']:.0f}")

    try:
        fleet.start("ingress", "api", "--port", str(port))
        await wait_http(f"{base}/readyz", fleet)
        warm = Clients(base, 50, 2, 1, connections=args.connections, lead=0.5)
        await warm.result()
        # 1. The ingress accepting, closed loop, nothing downstream running.
        c = Clients(base, 0, secs, args.clients, connections=64, closed=64)
        labels = {**fleet_labels(), **c.labels()}
        await asyncio.sleep(max(0.0, c.start_at - time.time()) + 1)
        a = cpu_snapshot(None, labels)
        await asyncio.sleep(secs - 1.5)
        cpu = cpu_percent(a, cpu_snapshot(None, labels))
        r = await c.result()
        report("ingress accept (HTTP, closed loop 64)",
               {"per_s": round(r.ok / r.elapsed, 1), "accepted": r.ok, "errors": r.errors,
                "accept_p50_ms": round(pct(r.latencies, 50), 1),
                "accept_p99_ms": round(pct(r.latencies, 99), 1)}, cpu, "orders/s")
        # 2. The CRM commit alone, in this process.
        a = cpu_snapshot(None, {})
        r2 = await _commits(min(secs, 6), 32)
        report("CRM commit (crm.create_order, 32)", r2, cpu_percent(a, cpu_snapshot(None, {})),
               "orders/s")
        fleet.stop("ingress")
        total = await scalar("SELECT count(*) FROM orders")
        # 3. The relay publishing the piled-up outbox (MES stopped: orders.b2c fills).
        fleet.start("relay", "relay")
        await asyncio.sleep(0.5)
        a = cpu_snapshot(None, fleet_labels())
        r3 = await _rate_while(lambda: scalar("SELECT count(*) FROM orders WHERE status_rank "
                                              "> 0"), 1e9, total)
        report("relay (outbox -> broker, confirmed)", r3,
               cpu_percent(a, cpu_snapshot(None, fleet_labels())), "orders/s")
        # 4. MES workers draining orders.b2c (status consumer stopped: its queue fills).
        finished = "SELECT count(*) FROM mes_claims WHERE finished_at IS NOT NULL"
        for k in (1, 4):
            have = sum(1 for n in fleet.procs if n.startswith("mes"))
            for i in range(have, k):
                fleet.start(f"mes-{i + 1}", "mes", "--concurrency", str(args.mes_concurrency),
                            "--worker-id", f"mes-{i + 1}")
            await until(lambda k=k: consumers_at_least("orders.b2c", k), 60,
                        f"{k} MES workers")
            a = cpu_snapshot(None, fleet_labels())
            r4 = await _rate_while(lambda: scalar(finished), secs, total)
            report(f"MES, {k} worker(s) (concurrency {args.mes_concurrency})", r4,
                   cpu_percent(a, cpu_snapshot(None, fleet_labels())), "orders/s")
        await until(lambda: _equal(finished, total), 120, "the MES to finish the pile")
        # 5. The status consumer writing the piled-up events (5 per order: received ... done).
        fleet.start("status", "status")
        a = cpu_snapshot(None, fleet_labels())
        r5 = await _rate_while(lambda: scalar("SELECT count(*) FROM orders WHERE status = "
                                              "'done'"), 1e9, total)
        r5["events_per_s"] = round(r5["per_s"] * 5)
        report("status writes (consumer -> PostgreSQL)", r5,
               cpu_percent(a, cpu_snapshot(None, fleet_labels())), "orders/s")
        say(f"  {'':38} {r5['events_per_s']:>7,} status events/s")
    finally:
        fleet.stop_all()
    out["pipeline"] = pipeline_budget(out, cores)
    b = out["pipeline"]
    say(f"  {'CPU per order, hop by hop':38} {b['total_ms']:>7} ms = "
        + ", ".join(f"{k} {v}" for k, v in b["ms_per_order"].items())
        + f": both cores, nothing else running, would carry ~{b['orders_per_s_if_alone']:,} "
        "orders/s")
    # 6. The broker alone, from one Python process.
    a = cpu_snapshot(None, {})
    r6 = await _broker(args.broker_messages, 256)
    cpu = cpu_percent(a, cpu_snapshot(None, {}))
    r6["per_s"] = r6["publish_confirmed_per_s"]
    report("broker publish, confirmed (1 client)", r6, cpu, "msgs/s")
    say(f"  {'broker consume + ack (1 client)':38} {r6['consume_ack_per_s']:>7,} msgs/s")
    # 7. The load client alone, against a canned responder in a process of its own.
    cport = free_port()
    canned = subprocess.Popen([sys.executable, __file__, "--canned", str(cport)])
    try:
        await asyncio.sleep(1.0)
        c = Clients(f"http://127.0.0.1:{cport}", 0, min(secs, 5), 1, connections=64, closed=64,
                    path="/canned")
        labels = {**c.labels(), canned.pid: "canned responder"}
        await asyncio.sleep(max(0.0, c.start_at - time.time()) + 0.5)
        a = cpu_snapshot(None, labels)
        await asyncio.sleep(min(secs, 5) - 1.0)
        cpu = cpu_percent(a, cpu_snapshot(None, labels))
        r7 = await c.result()
        report("load client alone (1 process)", {"per_s": round(r7.ok / r7.elapsed, 1)}, cpu,
               "req/s")
    finally:
        canned.terminate()
        canned.wait()
    return out


def pipeline_budget(hop: dict[str, Any], cores: int) -> dict[str, Any]:
    """CPU milliseconds per order of each process, from the hop where it did its work: the
    services' share summed over the hops that use them. Their sum bounds the orders/s of the
    whole pipeline on ``cores`` free cores, whatever the number of processes."""
    # The hop where each process does its part of an order (the MES with one worker).
    where = {"ingress": "ingress accept", "relay": "relay", "mes-1": "MES, 1 ",
             "status": "status writes"}
    services = {"postgres": ("ingress accept", "relay", "MES, 1 ", "status writes"),
                "rabbitmq": ("relay", "MES, 1 ", "status writes"),
                "redis": ("ingress accept", "relay", "status writes")}
    ms: dict[str, float] = {}
    for proc, prefix in where.items():
        for key, r in hop.items():
            if key.startswith(prefix):
                ms[proc.removesuffix("-1")] = r["cpu_ms_per_unit"].get(proc, 0.0)
    for service, prefixes in services.items():
        ms[service] = round(sum(r["cpu_ms_per_unit"].get(service, 0.0)
                                for key, r in hop.items() if key.startswith(prefixes)), 2)
    total = round(sum(ms.values()), 2)
    return {"ms_per_order": dict(sorted(ms.items(), key=lambda kv: -kv[1])), "total_ms": total,
            "orders_per_s_if_alone": round(cores * 1000 / total) if total else None}


async def consumers_at_least(queue: str, n: int) -> bool:
    return await consumers(queue) >= n


async def _equal(query: str, n: int) -> bool:
    return await scalar(query) >= n


# --- the run ------------------------------------------------------------------------------------
def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        m, _, i = part.strip().partition("x")
        out.append((int(m), int(i or 1)))
    return out


def table(results: dict[str, Any]) -> str:
    rows = [f"  {'config (MES x ingress)':24} {'peak orders/s':>13} {'accept p50/p99 ms':>18} "
            f"{'done p50/p99 ms':>16} {'CPU ms/order':>12}  first bottleneck (at the highest "
            "failing step); CPU ms/order: ours at the peak over ours idle"]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"  {name:24} broke off: {r['error'][:120]}")
            continue
        p = r["peak"]
        peak = f"{p['rate']:,}" if p else "< min"
        acc = f"{p['accept_p50_ms']}/{p['accept_p99_ms']}" if p else "-"
        e2e = f"{p['e2e_p50_ms']}/{p['e2e_p99_ms']}" if p else "-"
        fail = r["first_fail"]
        why = f" [fails at {fail['rate']:,}/s: {fail['why']}]" if fail else ""
        cost = p.get("cpu_ms_per_order_over_idle", "-") if p else "-"
        rows.append(f"  {name:24} {peak:>13} {acc:>18} {e2e:>16} {cost:>12}  "
                    f"{r['bottleneck']['name']} at {r['bottleneck_rate']:,}/s{why}")
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    def say(text: str) -> None:
        print(text, flush=True)

    logdir = Path(tempfile.mkdtemp(prefix="orderflow-peak-"))
    result: dict[str, Any] = {"config": {
        "configs": args.configs, "step_seconds": args.step_seconds, "growth": args.growth,
        "refine": args.refine, "clients": args.clients, "connections": args.connections,
        "mes_concurrency": args.mes_concurrency, "max_accept_p99_ms": args.max_accept_p99,
        "max_e2e_s": args.max_e2e, "telemetry": args.telemetry, "log_level": args.log_level,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "cpu_probe_ms": cpu_probe(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "logs": str(logdir)}}
    say(f"orderflow peak throughput: {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, CPU probe "
        f"{result['config']['cpu_probe_ms']} ms; steps of {args.step_seconds:g} s, "
        f"{args.clients} client process(es) x {args.connections} connections; "
        f"pass = no errors, accept p99 < {args.max_accept_p99:g} ms, 0 unaccounted, "
        f"accepted->done p99 < {args.max_e2e:g} s")
    started = time.monotonic()
    peaks: dict[str, Any] = {}
    start = args.start_rate
    if not args.hops_only:
        for mes, ingress in parse_configs(args.configs):
            try:
                r = await configuration(mes, ingress, start, args, logdir, say)
            except Exception as exc:  # the others still run; the table says which broke
                say(f"    broke off: {exc!r}"[:600])
                peaks[f"{mes} MES x {ingress} ingress"] = {"error": repr(exc)[:600]}
                continue
            peaks[f"{mes} MES x {ingress} ingress"] = r
            if r["peak"]:
                start = max(args.min_rate, 0.7 * r["peak"]["rate"])  # next config starts near
        result["peaks"] = peaks
        say("\nPeak throughput (sustained; machine shared, see the CPU probe):")
        say(table(peaks))
    if not args.skip_hops:
        say(f"\nEach hop alone ({args.hop_seconds:g} s windows; its downstream stopped):")
        result["hops"] = await hops(args, logdir, say)
    result["config"]["cpu_probe_ms_after"] = cpu_probe()
    result["config"]["minutes"] = round((time.monotonic() - started) / 60, 1)
    say(f"\nCPU probe {result['config']['cpu_probe_ms']} ms at the start, "
        f"{result['config']['cpu_probe_ms_after']} ms at the end (a fixed pure-Python workload; "
        f"compare runs only at similar values); {result['config']['minutes']} min; logs "
        f"{logdir}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=None,
                   help="MxI,...: M MES workers, I ingress processes (default "
                        "1x1,2x1,4x1,1x2,2x2,4x2; --quick: 2x1)")
    p.add_argument("--step-seconds", type=float, default=15.0, help="seconds per rate step")
    p.add_argument("--start-rate", type=float, default=50.0, help="first config's first rate")
    p.add_argument("--growth", type=float, default=1.4, help="rate factor after a pass")
    p.add_argument("--refine", type=int, default=2, help="bisections after the first fail")
    p.add_argument("--min-rate", type=float, default=5.0, help="lowest rate tried")
    p.add_argument("--max-rate", type=float, default=5000.0)
    p.add_argument("--max-accept-p99", type=float, default=50.0, help="ms")
    p.add_argument("--max-e2e", type=float, default=2.0, help="accepted->done p99, seconds")
    p.add_argument("--drain-timeout", type=float, default=90.0,
                   help="seconds after a step for its orders to finish")
    p.add_argument("--clients", type=int, default=1, help="load client processes")
    p.add_argument("--connections", type=int, default=128, help="per client process")
    p.add_argument("--mes-concurrency", type=int, default=16,
                   help="orders in progress per MES worker and queue")
    p.add_argument("--telemetry", choices=("default", "off"), default="default",
                   help="default: obskit as deployed without a collector (spans to a file); "
                        "off: OTEL_SDK_DISABLED")
    p.add_argument("--log-level", default="WARNING", help="OBSKIT_LOG_LEVEL of the processes")
    p.add_argument("--hop-seconds", type=float, default=8.0, help="window per hop ceiling")
    p.add_argument("--broker-messages", type=int, default=10_000)
    p.add_argument("--skip-hops", action="store_true")
    p.add_argument("--hops-only", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: config 2x1, 5 s steps, one bisection, short hops (~3 min)")
    p.add_argument("--json-out", metavar="PATH", help="also write the results as JSON here")
    # A load client process (started by the benchmark itself).
    p.add_argument("--load", metavar="BASE", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--closed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--path", default=SHOP, help=argparse.SUPPRESS)
    p.add_argument("--canned", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(args.load, args.rate, args.seconds,
                                           args.connections, args.closed, args.start_at,
                                           args.path))))
        return 0
    if args.canned:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_canned(args.canned))
        return 0
    if args.quick:
        args.configs = args.configs or "2x1"
        args.step_seconds, args.refine, args.hop_seconds = 5.0, 1, 4.0
        args.broker_messages = 3000
    args.configs = args.configs or "1x1,2x1,4x1,1x2,2x2,4x2"
    result = asyncio.run(run(args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
