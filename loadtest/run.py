"""Load-test orderflow with Locust, headless, and account for every accepted order.

    .venv/bin/python loadtest/run.py --users 50 --spawn-rate 10 --duration 60 --mes-workers 2

By default it runs ``orderflow all`` itself on a database, RabbitMQ vhost and Redis prefix of its
own (``orderflow_loadtest_<run>``), creates the partner API keys and a dashboard token, runs
``locust --headless -f loadtest/locustfile.py`` against it, waits until orders stop moving, then
checks every accepted order id in the database. ``--host URL --database-url DSN`` load-tests a
deployment that is already running instead.

It leaves in ``loadtest/reports/<UTC time>/`` (or ``--report-dir``): Locust's ``report.html`` and
``stats*.csv``, ``accepted.tsv`` (every accepted order id), ``summary.json``, ``locust.log`` and,
with its own pipeline, ``orderflow.log``.

Exit status: 0 all accepted orders accounted for and no unexpected request failure; 1 an accepted
order is unaccounted for (its id is in no known state in the database: lost); 2 requests failed
unexpectedly (or Locust itself failed); 3 the pipeline did not start. docs/how-to/load-test.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

try:
    import httpx
    import psycopg
    from orderflow import crm, db, migrations
    from orderflow.config import (
        DEFAULT_DATABASE_URL,
        DEFAULT_RABBITMQ_URL,
        ENV_DASHBOARD_TOKEN,
        ENV_DATABASE_URL,
        ENV_JOURNEY_URL,
        ENV_MES_STAGE_DELAY,
        ENV_RABBITMQ_URL,
        ENV_REDIS_PREFIX,
        ENV_REDIS_URL,
        ENV_TRUSTED_PROXIES,
        Settings,
    )
    from orderflow.demo import order_states
    from orderflow.statuses import RANK, STATUSES, TERMINAL
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - the fix, at start
    sys.exit(f"loadtest/run.py needs orderflow and locust ({exc}): "
             "pip install -e 'examples/orderflow[loadtest]'")

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
REPORTS = HERE / "reports"
#: Partners with keys of their own (each Partner user is one of them).
PARTNERS = ("acme-erp", "globex-procurement", "initech-mrp", "umbrella-supply")
#: Seconds without any status change after which the wait for in-flight orders ends (MES retries
#: wait 1 s then 10 s by default: an order between tiers is still "moving").
QUIET_SECONDS = 15.0
MANAGEMENT_URL = os.environ.get("OBSKIT_RABBITMQ_MANAGEMENT_URL",
                                "http://guest:guest@127.0.0.1:15672")
#: Exit statuses (the module docstring says what each means).
OK, UNACCOUNTED, REQUEST_FAILURES, NO_PIPELINE = 0, 1, 2, 3


def log(msg: str) -> None:
    print(f"loadtest: {msg}", file=sys.stderr, flush=True)


# --- the pipeline under test ------------------------------------------------------------------
@dataclass
class Target:
    """What Locust loads and where the accounting looks."""

    base_url: str
    dsn: str
    dashboard_token: str
    own: bool  # started here: isolated, stopped and dropped at the end
    trusts_forwarded_for: bool = False
    process: subprocess.Popen[bytes] | None = None
    vhost: str = ""
    redis_prefix: str = ""
    redis_url: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_vhost(amqp_url: str, vhost: str) -> str:
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def management(method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The RabbitMQ management API (``OBSKIT_RABBITMQ_MANAGEMENT_URL``, credentials inside)."""
    u = urlsplit(MANAGEMENT_URL)
    base = f"{u.scheme}://{u.hostname}:{u.port or 15672}/api"
    auth = (u.username or "guest", u.password or "guest")
    return httpx.request(method, base + path, auth=auth, timeout=10.0, **kwargs)


def create_vhost(vhost: str) -> None:
    name = quote(vhost, safe="")
    management("PUT", f"/vhosts/{name}").raise_for_status()
    management("PUT", f"/permissions/{name}/guest",
               json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()


def supports_ingress_flag() -> bool:
    out = subprocess.run([sys.executable, "-P", "-m", "orderflow.cli", "all", "--help"],
                         capture_output=True, text=True, timeout=60)
    return "--ingress" in out.stdout


def start_pipeline(args: argparse.Namespace, report_dir: Path) -> Target:
    """``orderflow all`` on a database, vhost and Redis prefix of this run, and a port of its
    own: a second run, the test suite or the demo on this machine never share its orders."""
    run = uuid.uuid4().hex[:8]
    settings = Settings()
    dsn = make_conninfo(os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL,
                        dbname=f"orderflow_loadtest_{run}")
    vhost, prefix = f"orderflow-loadtest-{run}", f"orderflow-loadtest-{run}"
    create_vhost(vhost)
    migrations.upgrade(dsn)  # creates the database
    port = free_port()
    token = secrets.token_urlsafe(16)
    env = {**os.environ,
           ENV_DATABASE_URL: dsn,
           ENV_RABBITMQ_URL: with_vhost(os.environ.get(ENV_RABBITMQ_URL) or DEFAULT_RABBITMQ_URL,
                                        vhost),
           ENV_REDIS_URL: settings.redis_url,
           ENV_REDIS_PREFIX: prefix,
           ENV_JOURNEY_URL: settings.journey_url,
           "OBSKIT_JOURNEY_PREFIX": f"{prefix}-journey",
           ENV_DASHBOARD_TOKEN: token,
           # Locust users send X-Forwarded-For with IPs of their own: trusted from this machine,
           # the per-IP limits see many customers with the production limits.
           ENV_TRUSTED_PROXIES: "127.0.0.1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes its own
    if args.mes_stage_delay is not None:
        env[ENV_MES_STAGE_DELAY] = str(args.mes_stage_delay)
    argv = [sys.executable, "-P", "-m", "orderflow.cli", "all", "--port", str(port),
            "--mes-workers", str(args.mes_workers), "--concurrency", str(args.mes_concurrency)]
    if args.ingress and args.ingress > 1:
        argv += ["--ingress", str(args.ingress)]
    log_file = open(report_dir / "orderflow.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    return Target(f"http://127.0.0.1:{port}", dsn, token, own=True, trusts_forwarded_for=True,
                  process=proc, vhost=vhost, redis_prefix=prefix, redis_url=settings.redis_url)


def wait_ready(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise RuntimeError(f"orderflow all exited with {target.process.returncode}")
        try:
            if httpx.get(target.base_url + "/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{target.base_url}/readyz not ready after {timeout:g}s")


def stop_pipeline(target: Target, keep: bool) -> None:
    """SIGTERM the group (the supervisor stops its children), then drop what this run made
    unless ``keep``: the database is where lost orders are looked for."""
    if target.process is not None and target.process.poll() is None:
        target.process.send_signal(signal.SIGTERM)
        try:
            target.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            target.process.kill()
            target.process.wait()
    if keep:
        log(f"kept for inspection: database {conninfo_to_dict(target.dsn).get('dbname')}, "
            f"vhost {target.vhost}, Redis prefix {target.redis_prefix}")
        return
    management("DELETE", f"/vhosts/{quote(target.vhost, safe='')}")
    admin = make_conninfo(target.dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(str(conninfo_to_dict(target.dsn)["dbname"]))))
    drop_redis_prefix(target.redis_url, target.redis_prefix)


def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


def create_keys(dsn: str, partner_limit: str, burst_rate: int) -> tuple[list[str], str]:
    """One key per partner and the low-limit key of a sloppy integration (``burst_rate``/s)."""
    async def create() -> tuple[list[str], str]:
        pool = await db.open_pool(dsn, max_size=1)
        try:
            keys = [await crm.create_api_key(pool, f"loadtest-{p}", partner_limit)
                    for p in PARTNERS]
            return keys, await crm.create_api_key(pool, "loadtest-sloppy-integration",
                                                  f"{burst_rate}/second")
        finally:
            await pool.close()

    return asyncio.run(create())


# --- locust -----------------------------------------------------------------------------------
def run_locust(args: argparse.Namespace, target: Target, report_dir: Path,
               partner_keys: list[str], burst_key: str) -> int:
    env = {**os.environ,
           "LOADTEST_PARTNER_KEYS": ",".join(partner_keys),
           "LOADTEST_BURST_KEY": burst_key,
           "LOADTEST_BURST_RATE": str(args.burst_rate),
           "LOADTEST_DASHBOARD_TOKEN": target.dashboard_token,
           "LOADTEST_ACCEPTED_FILE": str(report_dir / "accepted.tsv"),
           "LOADTEST_CLIENT_IPS": "1" if target.trusts_forwarded_for else ""}
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", target.base_url, "--users", str(args.users),
            "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration:g}s",
            # Users finish the task they are in (a burst, a checkout) instead of being cut off.
            "--stop-timeout", "5",
            "--csv", str(report_dir / "stats"), "--html", str(report_dir / "report.html"),
            "--only-summary"]
    if args.processes:
        argv += ["--processes", str(args.processes)]
    log(f"locust: {args.users} users (spawn {args.spawn_rate}/s) for {args.duration:g}s "
        f"against {target.base_url} (log: {report_dir / 'locust.log'})")
    with open(report_dir / "locust.log", "wb") as out:
        return subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=args.duration + 120).returncode


def read_stats(report_dir: Path) -> list[dict[str, Any]]:
    """Locust's ``stats_stats.csv`` as one dict per request name (the last is Aggregated)."""
    path = report_dir / "stats_stats.csv"
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"type": r["Type"], "name": r["Name"],
                         "requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                         "rps": round(float(r["Requests/s"]), 2),
                         "p50_ms": _ms(r["50%"]), "p95_ms": _ms(r["95%"]),
                         "p99_ms": _ms(r["99%"])})
    return rows


def _ms(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def read_failures(report_dir: Path, limit: int = 10) -> list[str]:
    path = report_dir / "stats_failures.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: -int(r["Occurrences"]))
    return [f"{r['Occurrences']}× {r['Method']} {r['Name']}: {_error(r['Error'])}"
            for r in rows[:limit]]


def _error(text: str) -> str:
    """``CatchResponseError('msg')`` (Locust's repr of a failure) -> ``msg``."""
    head, sep, rest = text.partition("(")
    if sep and head.endswith("Error") and len(rest) > 3 and rest[0] in "'\"":
        return rest[1:-2]
    return text


def read_accepted(path: Path) -> dict[str, str]:
    """order id -> channel; replays name an id twice, so this is a set."""
    accepted: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="ascii").splitlines():
            order_id, _, channel = line.partition("\t")
            if order_id:
                accepted[order_id] = channel
    return accepted


# --- accounting -------------------------------------------------------------------------------
def wait_settled(dsn: str, ids: list[str], *, quiet: float,
                 timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until every order is terminal, or none moved for ``quiet`` s, or ``timeout``."""
    deadline = time.monotonic() + timeout
    current = order_states(dsn, ids)
    moved_at = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < quiet:
        if all(current.get(i, {}).get("status") in TERMINAL for i in ids):
            break
        time.sleep(1.0)
        before, current = current, order_states(dsn, ids)
        if any(before.get(i, {}).get("status") != s["status"] for i, s in current.items()):
            moved_at = time.monotonic()
    return current


@dataclass
class Accounting:
    accepted: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    unaccounted: list[str] = field(default_factory=list)
    accept_to_done_ms: dict[str, float | None] = field(default_factory=dict)


def account(ids: list[str], found: dict[str, dict[str, Any]]) -> Accounting:
    """An accepted order is accounted for when it is stored in a known status; otherwise the
    pipeline lost it after answering 202 (the one thing a load test must never see)."""
    by_status = dict.fromkeys(STATUSES, 0)
    unaccounted: list[str] = []
    latencies: list[float] = []
    for order_id in ids:
        st = found.get(order_id)
        if st is None or st["status"] not in RANK:
            unaccounted.append(order_id)
            continue
        by_status[st["status"]] += 1
        if st["latency_ms"] is not None:
            latencies.append(st["latency_ms"])
    in_flight = sum(n for s, n in by_status.items() if s not in TERMINAL)
    return Accounting(len(ids), {s: n for s, n in by_status.items() if n}, in_flight, unaccounted,
                      {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)})


def check(dsn: str, ids: list[str]) -> Accounting:
    """The pass/fail rule on its own, with no waiting (``--recheck`` and the tests use it)."""
    return account(ids, order_states(dsn, ids))


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))], 1)


# --- summary ----------------------------------------------------------------------------------
def summarize(args: argparse.Namespace, target: Target, report_dir: Path,
              accepted: dict[str, str], acc: Accounting, locust_rc: int) -> dict[str, Any]:
    stats = read_stats(report_dir)
    total = stats[-1] if stats and stats[-1]["name"] == "Aggregated" else None
    failures = total["failures"] if total else 0
    locust_log = (report_dir / "locust.log").read_text(errors="replace")
    exit_code, verdict = decide(acc, failures, locust_rc, bool(stats))
    return {
        "verdict": verdict, "exit_code": exit_code,
        "target": target.base_url, "own_pipeline": target.own,
        "users": args.users, "spawn_rate": args.spawn_rate, "duration_s": args.duration,
        "mes_workers": args.mes_workers if target.own else None,
        "ingress": (args.ingress or 1) if target.own else None,
        "requests": {"total": total["requests"] if total else 0,
                     "per_second": total["rps"] if total else 0.0,
                     "unexpected_failures": failures},
        "by_name": stats,
        "failure_messages": read_failures(report_dir),
        "orders": {**asdict(acc), "unaccounted": len(acc.unaccounted),
                   "by_channel": {ch: sum(1 for c in accepted.values() if c == ch)
                                  for ch in ("b2c", "b2b")}},
        "unaccounted_order_ids": acc.unaccounted[:20],
        "locust": {"exit_code": locust_rc,
                   # Locust on a busy machine measures itself too: say so beside the figures.
                   "cpu_warning": "CPU usage above" in locust_log},
        "report_dir": str(report_dir),
        # The figures depend on the machine and on what else ran on it: say both.
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
    }


def decide(acc: Accounting, failures: int, locust_rc: int, have_stats: bool) -> tuple[int, str]:
    if acc.unaccounted:
        return UNACCOUNTED, f"FAIL: {len(acc.unaccounted)} accepted orders unaccounted for"
    if failures:
        return REQUEST_FAILURES, f"FAIL: {failures} unexpected request failures"
    if not have_stats or (locust_rc != 0):
        return REQUEST_FAILURES, f"FAIL: locust exited with {locust_rc} (see locust.log)"
    return OK, "PASS: every accepted order accounted for, no unexpected failure"


def format_summary(s: dict[str, Any]) -> str:
    o = s["orders"]
    lat = o["accept_to_done_ms"]
    req = s["requests"]
    names = [(r["type"] + " " + r["name"]).strip() for r in s["by_name"]]
    w = max([len(n) for n in names] + [10])
    lines = [f"{'request':<{w}} {'reqs':>6} {'fail':>5} {'req/s':>7} {'p50':>6} {'p95':>6} "
             f"{'p99':>6}"]
    for name, r in zip(names, s["by_name"], strict=True):
        lines.append(f"{name:<{w}} {r['requests']:>6} "
                     f"{r['failures']:>5} {r['rps']:>7} {_fmt(r['p50_ms']):>6} "
                     f"{_fmt(r['p95_ms']):>6} {_fmt(r['p99_ms']):>6}")
    stuck = ", ".join(f"{k} {v}" for k, v in o["by_status"].items() if k not in TERMINAL)
    lines += [
        "",
        f"requests      {req['total']} at {req['per_second']}/s, "
        f"{req['unexpected_failures']} unexpected failures",
        *(f"  {m}" for m in s["failure_messages"]),
        f"accepted      {o['accepted']}  (b2c {o['by_channel']['b2c']}, "
        f"b2b {o['by_channel']['b2b']})",
        f"done          {o['by_status'].get('done', 0)}",
        f"failed        {o['by_status'].get('failed', 0)}   (unprintable on purpose: too large)",
        f"dead_lettered {o['by_status'].get('dead_lettered', 0)}",
        f"in flight     {o['in_flight']}{'   (' + stuck + ')' if stuck else ''}",
        f"unaccounted   {o['unaccounted']}",
        *(f"  {i}" for i in s["unaccounted_order_ids"]),
        f"accept→done   p50 {_fmt(lat['p50'])} ms · p95 {_fmt(lat['p95'])} ms · "
        f"p99 {_fmt(lat['p99'])} ms",
    ]
    m = s["machine"]
    lines.append(f"machine       {m['cpus']} CPUs, load average {m['load_average_1m_at_end']} "
                 "(1 min, at the end of the load)")
    if s["locust"]["cpu_warning"]:
        lines.append("warning       locust's CPU went over 90%: latencies include the client's "
                     "own queueing")
    lines += [f"reports       {s['report_dir']}", s["verdict"]]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# --- the command ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="docs/how-to/load-test.md")
    p.add_argument("--users", type=int, default=50, help="simulated users (default 50)")
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--mes-workers", type=int, default=2, help="own pipeline: MES processes")
    p.add_argument("--mes-concurrency", type=int, default=8,
                   help="own pipeline: orders each MES worker handles at once (default 8)")
    p.add_argument("--ingress", type=int, default=None,
                   help="own pipeline: ingress processes on one port (orderflow all --ingress)")
    p.add_argument("--mes-stage-delay", type=float, default=None,
                   help="own pipeline: seconds per simulated MES stage "
                        "(ORDERFLOW_MES_STAGE_DELAY; default: orderflow's 0.2)")
    p.add_argument("--host", default=None,
                   help="load-test this running deployment instead (needs --database-url)")
    p.add_argument("--database-url", default=None,
                   help="with --host: its PostgreSQL, to create the partner keys and account "
                        "for the orders")
    p.add_argument("--dashboard-token", default=os.environ.get(ENV_DASHBOARD_TOKEN, ""),
                   help=f"with --host: the managers' token (default ${ENV_DASHBOARD_TOKEN})")
    p.add_argument("--partner-limit", default="100/second;5000/minute",
                   help="rate limit of the partners' keys (default 100/second;5000/minute)")
    p.add_argument("--burst-rate", type=int, default=5,
                   help="per-second limit of the key that goes over its limit (default 5)")
    p.add_argument("--processes", type=int, default=None,
                   help="locust worker processes (locust --processes; default one)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="longest wait for in-flight orders after the load (default 120 s)")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="default loadtest/reports/<UTC time>/")
    p.add_argument("--keep", action="store_true",
                   help="own pipeline: keep its database and vhost (kept anyway when orders "
                        "are unaccounted for)")
    p.add_argument("--recheck", type=Path, metavar="REPORT_DIR", default=None,
                   help="only account again for the orders of an earlier run (needs "
                        "--database-url); exit 1 if any is unaccounted for")
    args = p.parse_args(argv)
    if (args.host or args.recheck) and not args.database_url:
        p.error("--host and --recheck need --database-url (the accounting reads the orders)")
    return args


def recheck(report_dir: Path, dsn: str) -> int:
    ids = list(read_accepted(report_dir / "accepted.tsv"))
    acc = check(dsn, ids)
    print(json.dumps({"accepted": acc.accepted, "by_status": acc.by_status,
                      "in_flight": acc.in_flight, "unaccounted": len(acc.unaccounted),
                      "unaccounted_order_ids": acc.unaccounted[:20]}))
    return UNACCOUNTED if acc.unaccounted else OK


def remote_target(args: argparse.Namespace) -> Target:
    if not args.dashboard_token:
        log(f"no dashboard token (--dashboard-token / {ENV_DASHBOARD_TOKEN}): the Manager "
            "requests will fail with 401/403")
    return Target(args.host.rstrip("/"), args.database_url, args.dashboard_token, own=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.recheck:
        return recheck(args.recheck, args.database_url)
    if args.ingress and args.ingress > 1 and not args.host and not supports_ingress_flag():
        log("this orderflow has no `orderflow all --ingress`: run without --ingress")
        return NO_PIPELINE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = (args.report_dir or REPORTS / stamp).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    target = remote_target(args) if args.host else start_pipeline(args, report_dir)
    keep = args.keep
    try:
        try:
            wait_ready(target, timeout=90.0)
        except RuntimeError as exc:
            log(f"{exc}; see {report_dir / 'orderflow.log'}")
            return NO_PIPELINE
        partner_keys, burst_key = create_keys(target.dsn, args.partner_limit, args.burst_rate)
        locust_rc = run_locust(args, target, report_dir, partner_keys, burst_key)
        accepted = read_accepted(report_dir / "accepted.tsv")
        ids = list(accepted)
        log(f"{len(ids)} orders accepted; waiting until they stop moving")
        found = wait_settled(target.dsn, ids, quiet=QUIET_SECONDS, timeout=args.drain_timeout)
        acc = account(ids, found)
        keep = keep or bool(acc.unaccounted)
        summary = summarize(args, target, report_dir, accepted, acc, locust_rc)
    finally:
        if target.own:
            stop_pipeline(target, keep)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return int(summary["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
