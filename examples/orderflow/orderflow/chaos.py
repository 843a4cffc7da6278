"""``orderflow chaos``: many orders, one real fault mid-run, then count what was lost.

In the spirit of Jepsen: start the whole pipeline (``orderflow all``), place N orders from both
channels at a steady rate (a client that retries with its ``Idempotency-Key`` until the order is
accepted, as partners do), inject one fault after a third of them, heal it, drain, then check
every accepted order against the database, the broker and the journey store:

* **lost**: accepted, not finished, and nothing left anywhere that would move it;
* **stuck**: accepted, not finished, but a message or outbox row for it still waits;
* **duplicated**: produced more than once (the MES recorded ``done`` twice for it);
* **unexpected**: a state it should never reach: ``failed`` or ``dead_lettered`` (every order
  sent is valid and printable), or both ``done`` and ``failed`` in its history.

``recovery`` is the time from the fault's injection until every order accepted before the heal
had finished. Faults act on the machine's own services exactly as ``scripts/services.sh`` starts
them, and always leave them running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import psycopg

from orderflow import crm, db, messaging, migrations
from orderflow.config import Settings
from orderflow.statuses import TERMINAL

MANAGEMENT = os.environ.get("OBSKIT_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")


@dataclass
class Run:
    """One run's state, shared by the sender, the fault and the monitor."""

    settings: Settings
    base: str
    group: subprocess.Popen[bytes]
    journey_prefix: str
    env: dict[str, str]
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> channel
    client_errors: list[str] = field(default_factory=list)
    retries: int = 0
    injected_at: float | None = None
    healed_at: float | None = None
    recovered_at: float | None = None
    receiver: Any = None  # collector-down: the OTLP receiver


@dataclass(frozen=True)
class Fault:
    name: str
    doc: str
    inject: Callable[[Run], None]
    heal: Callable[[Run], None]
    hold: float = 3.0  # seconds between inject and heal


# --- the faults ------------------------------------------------------------------------------
def child_processes(ppid: int) -> list[tuple[str, list[str], int]]:
    """(subcommand, argv, pid) of the orderflow processes whose parent is ``ppid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid_of = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid_of != ppid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "orderflow.cli" in args:
            out.append((args[args.index("orderflow.cli") + 1], args, int(entry)))
    return out


def _children(run: Run) -> dict[str, int]:
    """The supervisor's children: name (api, relay, status, mes-1, ...) -> pid."""
    out: dict[str, int] = {}
    for cmd, args, pid in child_processes(run.group.pid):
        name = {"api": "api", "relay": "relay", "status": "status"}.get(cmd)
        if cmd == "mes":
            name = args[args.index("--worker-id") + 1] if "--worker-id" in args else "mes"
        if name:
            out[name] = pid
    return out


def _kill(child: str) -> Callable[[Run], None]:
    def inject(run: Run) -> None:
        pid = _children(run).get(child)
        if pid is None:
            raise RuntimeError(f"no {child} process under the supervisor")
        os.kill(pid, signal.SIGKILL)

    return inject


def _nothing(run: Run) -> None:
    """The supervisor restarts a killed child by itself."""


def _sh(*argv: str, timeout: float = 120) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


def _services() -> None:
    """Start whatever has stopped, the way the machine's services are started."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    script = os.path.join(root, "scripts", "services.sh")
    if not os.path.exists(script):
        raise RuntimeError(f"{script} not found: cannot restart the services")
    _sh("bash", script, timeout=300)


def _rabbit_stop(run: Run) -> None:
    _sh("rabbitmqctl", "-q", "stop_app")


def _rabbit_start(run: Run) -> None:
    _sh("rabbitmqctl", "-q", "start_app")
    _sh("rabbitmqctl", "-q", "await_startup")


def _close_connections(run: Run) -> None:
    vhost = messaging.vhost_of(run.settings.rabbitmq_url)
    with httpx.Client(base_url=_mgmt_base(), auth=_mgmt_auth(), timeout=10) as c:
        for conn in c.get(f"/api/vhosts/{quote(vhost, safe='')}/connections").json():
            c.delete(f"/api/connections/{quote(conn['name'], safe='')}",
                     headers={"X-Reason": "orderflow chaos: connections closed by the broker"})


def _postgres_stop(run: Run) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    _sh("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast")


def _redis_stop(run: Run) -> None:
    url = urlsplit(run.settings.redis_url)
    with contextlib.suppress(subprocess.CalledProcessError):  # it exits before answering
        _sh("redis-cli", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379),
            "shutdown", "nosave")


def _collector_stop(run: Run) -> None:
    run.receiver.stop()


def _collector_start(run: Run) -> None:
    from obskit.testing import OtlpReceiver

    run.receiver = OtlpReceiver("grpc", port=run.receiver.port).start()


def _services_start(run: Run) -> None:
    _services()


FAULTS: Mapping[str, Fault] = MappingProxyType({f.name: f for f in (
    Fault("kill-mes", "SIGKILL an MES worker mid-order; the supervisor restarts it",
          _kill("mes-1"), _nothing, hold=0),
    Fault("kill-relay", "SIGKILL the outbox relay; the supervisor restarts it",
          _kill("relay"), _nothing, hold=0),
    Fault("kill-status", "SIGKILL the CRM status consumer; the supervisor restarts it",
          _kill("status"), _nothing, hold=0),
    Fault("kill-ingress", "SIGKILL the ingress; clients retry until it is back",
          _kill("api"), _nothing, hold=0),
    Fault("rabbitmq-restart", "stop and start the RabbitMQ application (rabbitmqctl)",
          _rabbit_stop, _rabbit_start),
    Fault("rabbitmq-close-connections", "the broker closes every connection of the vhost",
          _close_connections, _nothing, hold=0),
    Fault("postgres-restart", "stop PostgreSQL (fast), start it again as services.sh does",
          _postgres_stop, _services_start),
    Fault("redis-restart", "shut Redis down, start it again as services.sh does",
          _redis_stop, _services_start),
    Fault("collector-down", "the OTLP collector the services export to stops accepting",
          _collector_stop, _collector_start, hold=5.0),
)})


def _mgmt_base() -> str:
    u = urlsplit(MANAGEMENT)
    return f"{u.scheme}://{u.hostname}:{u.port or 15672}"


def _mgmt_auth() -> tuple[str, str]:
    u = urlsplit(MANAGEMENT)
    return (u.username or "guest", u.password or "guest")


# --- one run ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(rng: random.Random) -> dict[str, Any]:
    return {"customer_email": f"chaos{rng.randint(1, 99999)}@example.com",
            "model": {"name": f"part-{rng.randint(1, 999)}.stl",
                      "volume_cm3": round(rng.uniform(2, 300), 1),
                      "material": rng.choice(("PLA", "ABS", "PETG")),
                      "quality": rng.choice(("draft", "standard"))},
            "quantity": rng.randint(1, 5)}


async def _place(run: Run, client: httpx.AsyncClient, channel: str, body: dict[str, Any],
                 key: str, deadline: float) -> None:
    """Place one order like a careful client: same Idempotency-Key until it is accepted."""
    path = "/api/v1/shop/orders" if channel == "b2c" else "/api/v1/partner/orders"
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    if channel == "b2b":
        headers["X-API-Key"] = key
    while True:
        try:
            r = await client.post(run.base + path, json=body, headers=headers)
            if r.status_code in (200, 201, 202):
                run.accepted[r.json()["order_id"]] = channel
                return
            problem = f"{r.status_code} {r.text[:120]}"
            wait = float(r.headers.get("Retry-After", "0.2") or 0.2)
            if r.status_code < 500 and r.status_code != 429:
                run.client_errors.append(problem)  # a 4xx for a valid order: report it
                return
        except httpx.HTTPError as exc:
            problem, wait = repr(exc), 0.2
        if time.monotonic() > deadline:
            run.client_errors.append(f"gave up: {problem}")
            return
        run.retries += 1
        await asyncio.sleep(min(wait, 2.0))


async def _send(run: Run, n: int, rate: float, key: str, fault: Fault,
                fault_thread: list[threading.Thread]) -> None:
    rng = random.Random(11)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        tasks = []
        start = time.monotonic()
        for i in range(n):
            if i == n // 3:
                t = threading.Thread(target=_inject_and_heal, args=(run, fault), daemon=True)
                t.start()
                fault_thread.append(t)
            channel = "b2c" if i % 2 == 0 else "b2b"
            tasks.append(asyncio.create_task(
                _place(run, client, channel, _body(rng), key, time.monotonic() + 120)))
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*tasks)


def _inject_and_heal(run: Run, fault: Fault) -> None:
    run.injected_at = time.monotonic()
    try:
        fault.inject(run)
        time.sleep(fault.hold)
    finally:
        try:
            fault.heal(run)
        except Exception:
            _services()  # whatever happened: the machine's services are left running
            raise
        finally:
            run.healed_at = time.monotonic()


def _states(dsn: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    for _ in range(60):  # right after a PostgreSQL restart, connecting may fail for a moment
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT o.order_id::text, o.status,"
                    " (SELECT array_agg(h.status) FROM order_status_history h"
                    "  WHERE h.order_id = o.order_id) AS history,"
                    " EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id) AS in_outbox"
                    " FROM orders o WHERE o.order_id = ANY(%s::uuid[])", (ids,)).fetchall()
            return {r[0]: {"status": r[1], "history": r[2] or [], "in_outbox": r[3]}
                    for r in rows}
        except psycopg.OperationalError:
            time.sleep(1)
    raise RuntimeError("the database stayed unreachable after the fault was healed")


def _queued(settings: Settings) -> int:
    """Messages still waiting in the vhost's order and status queues (DLQs excluded)."""
    vhost = messaging.vhost_of(settings.rabbitmq_url)
    try:
        r = httpx.get(f"{_mgmt_base()}/api/queues/{quote(vhost, safe='')}", auth=_mgmt_auth(),
                      timeout=10)
        return sum(int(q.get("messages", 0)) for q in r.json()
                   if not q["name"].endswith(".dlq"))
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


def _done_counts(settings: Settings, prefix: str, ids: list[str]) -> dict[str, int]:
    """How many times the MES recorded ``done`` per order (obskit's journey store)."""
    import redis

    r = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        with r.pipeline(transaction=False) as pipe:
            for oid in ids:
                pipe.hget(f"{prefix}:{{journey}}:o:{oid}", "n:done")
            values = pipe.execute()
        return {oid: int(v or 0) for oid, v in zip(ids, values, strict=True)}
    finally:
        r.close()


def _monitor(run: Run, stop: threading.Event) -> None:
    """From the heal on: when did every order accepted before it finish?"""
    while not stop.is_set() and run.healed_at is None:
        time.sleep(0.2)
    if run.healed_at is None:
        return
    ids = list(run.accepted)
    while not stop.is_set():
        try:
            states = _states(run.settings.database_url, ids)
        except RuntimeError:
            return
        if all(states.get(i, {}).get("status") in TERMINAL for i in ids):
            run.recovered_at = time.monotonic()
            return
        time.sleep(0.5)


def run_once(fault_name: str, *, orders: int = 200, rate: float = 20.0,
             drain_timeout: float = 120.0, mes_workers: int = 2,
             log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    fault = FAULTS[fault_name]
    settings = Settings()
    migrations.upgrade(settings.database_url)
    key = asyncio.run(_partner_key(settings))
    port = _free_port()
    prefix = f"orderflow-chaos-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OBSKIT_JOURNEY_PREFIX": prefix,
           # One client IP places everything: lift the per-IP limits (as the demo does).
           "ORDERFLOW_RATE_LIMIT_B2C": f"{max(100, int(rate * 10))}/second",
           "ORDERFLOW_RATE_LIMIT_B2B": f"{max(100, int(rate * 10))}/second",
           "ORDERFLOW_RATE_LIMIT_B2B_IP": f"{max(200, int(rate * 20))}/second"}
    receiver = None
    if fault_name == "collector-down":
        from obskit.testing import OtlpReceiver

        receiver = OtlpReceiver("grpc", port=_free_port()).start()
        env.update(receiver.env())
        env.pop("OTEL_SDK_DISABLED", None)
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"orderflow-chaos-{port}.log")
    with open(log_path, "wb") as log_file:
        group = subprocess.Popen([sys.executable, "-P", "-m", "orderflow.cli", "all", "--port",
                                  str(port), "--mes-workers", str(mes_workers)],
                                 env=env, stdout=log_file, stderr=subprocess.STDOUT)
    run = Run(settings, f"http://127.0.0.1:{port}", group, prefix, env, receiver=receiver)
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(run, stop), daemon=True)
    fault_thread: list[threading.Thread] = []
    try:
        _wait_ready(run, log_path)
        log(f"chaos: {fault_name}: {orders} orders at {rate:g}/s; the fault comes after "
            f"{orders // 3} (logs: {log_path})")
        monitor.start()
        t0 = time.monotonic()
        asyncio.run(_send(run, orders, rate, key, fault, fault_thread))
        for t in fault_thread:
            t.join(300)
        ids = list(run.accepted)
        states = _drain(run, ids, t0 + drain_timeout + orders / rate
                        + 2 * settings.mes_claim_lease)
    finally:
        stop.set()
        if group.poll() is None:
            group.send_signal(signal.SIGTERM)
            try:
                group.wait(timeout=30)
            except subprocess.TimeoutExpired:
                group.kill()
                group.wait()
        if run.receiver is not None:
            run.receiver.stop()
        if run.healed_at is None:  # the fault thread never finished: never leave it broken
            _services()
    monitor.join(5)
    return _verdict(run, fault_name, ids, states)


async def _partner_key(settings: Settings) -> str:
    pool = await db.open_pool(settings.database_url, max_size=1)
    try:
        return await crm.create_api_key(pool, f"chaos-{uuid.uuid4().hex[:6]}")
    finally:
        await pool.close()


def _wait_ready(run: Run, log_path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(run.base + "/readyz", timeout=2.0).status_code == 200:
                return
        if run.group.poll() is not None:
            break
        time.sleep(0.3)
    raise RuntimeError(f"the pipeline did not become ready; see {log_path}")


def _drain(run: Run, ids: list[str], until: float) -> dict[str, dict[str, Any]]:
    """Wait until every accepted order is finished, or nothing moved for a while (longer than
    an MES claim lease: a killed worker's orders wait that long), or ``until``."""
    quiet = 30 + 2 * run.settings.mes_claim_lease
    states = _states(run.settings.database_url, ids)
    moved = time.monotonic()
    while time.monotonic() < until and time.monotonic() - moved < quiet:
        if all(states.get(i, {}).get("status") in TERMINAL for i in ids):
            if run.recovered_at is None:  # the monitor had not seen it yet: all are done now
                run.recovered_at = time.monotonic()
            break
        time.sleep(0.5)
        before, states = states, _states(run.settings.database_url, ids)
        if any(before.get(i, {}).get("status") != s["status"] for i, s in states.items()):
            moved = time.monotonic()
    return states


def _verdict(run: Run, fault: str, ids: list[str],
             states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    queued = _queued(run.settings)
    done_counts = _done_counts(run.settings, run.journey_prefix, ids)
    lost: list[str] = []
    stuck: list[str] = []
    duplicated: list[str] = []
    unexpected: list[str] = []
    for oid in ids:
        st = states.get(oid)
        if done_counts.get(oid, 0) > 1:
            duplicated.append(oid)
        if st is None:
            lost.append(oid)  # accepted (202) but not in the database
            continue
        history = set(st["history"])
        if st["status"] in ("failed", "dead_lettered") or {"done", "failed"} <= history:
            unexpected.append(oid)
        elif st["status"] not in TERMINAL:
            (stuck if st["in_outbox"] or queued != 0 else lost).append(oid)
    recovery = (None if run.recovered_at is None or run.injected_at is None
                else round(run.recovered_at - run.injected_at, 1))
    return {"fault": fault, "orders": len(ids), "lost": len(lost), "stuck": len(stuck),
            "duplicated": len(duplicated), "unexpected": len(unexpected),
            "recovery_seconds": recovery, "client_retries": run.retries,
            "client_errors": run.client_errors[:5], "queued_after": queued,
            "examples": {"lost": lost[:5], "stuck": stuck[:5], "duplicated": duplicated[:5],
                         "unexpected": unexpected[:5]}}


def table(results: list[dict[str, Any]]) -> str:
    """fault | runs | orders | lost | duplicated | stuck | unexpected | max recovery."""
    rows = ["| fault | runs | orders | lost | duplicated | stuck | unexpected | max recovery |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["fault"], []).append(r)
    for name, rs in by.items():
        rec = [r["recovery_seconds"] for r in rs if r["recovery_seconds"] is not None]
        rows.append(f"| `{name}` | {len(rs)} | {sum(r['orders'] for r in rs)} | "
                    f"{sum(r['lost'] for r in rs)} | {sum(r['duplicated'] for r in rs)} | "
                    f"{sum(r['stuck'] for r in rs)} | {sum(r['unexpected'] for r in rs)} | "
                    f"{f'{max(rec):.1f} s' if rec else '—'} |")
    return "\n".join(rows)
