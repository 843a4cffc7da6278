"""The ``orderflow`` command. ``orderflow --help`` lists the subcommands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from orderflow.config import ENV_FAULTS, Settings
from orderflow.faults import FAULTS

#: Default of ``orderflow all --metrics-port`` (a CLI default, like ``--port``, not a setting of
#: the services themselves).
ENV_METRICS_PORT = "ORDERFLOW_METRICS_PORT"


def _serve(service: str, body: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> int:
    """Run one long-lived service until SIGTERM/SIGINT, with obskit initialised."""
    import obskit

    settings = Settings()
    obskit.init(service, journey_url=settings.journey_url)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await body(settings, stop)

    asyncio.run(runner())
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from orderflow import migrations

    settings = Settings()
    applied = migrations.upgrade(settings.database_url)
    version = migrations.current_version(settings.database_url)
    print(f"database at version {version}" + (f" (applied {applied})" if applied else
                                              " (up to date)"))
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from orderflow import crm, db

    async def create() -> str:
        pool = await db.open_pool(Settings().database_url, max_size=1)
        try:
            return await crm.create_api_key(pool, args.partner, args.rate_limit)
        finally:
            await pool.close()

    key = asyncio.run(create())
    print(key)
    print(f"API key for partner {args.partner!r}: send it as header X-API-Key. It is shown "
          "once and stored only as a hash.", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import obskit

    obskit.init("ingress", journey_url=Settings().journey_url)
    import socket

    import uvicorn

    from orderflow.api.app import create_app

    config = uvicorn.Config(create_app(), host=args.host, port=args.port, access_log=False,
                            log_config=None, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    if args.fd is None:
        server.run()
    else:
        # Not uvicorn's own fd=: it rebuilds the socket as AF_UNIX, which a TCP socket is not;
        # socket(fileno=) reads the family from the descriptor.
        server.run(sockets=[socket.socket(fileno=args.fd)])
    # As uvicorn.run: a server that never started (the port taken, the app failed) is an error.
    return 0 if server.started else 3


def cmd_relay(args: argparse.Namespace) -> int:
    from orderflow import relay

    return _serve("crm-relay", relay.main)


def cmd_status(args: argparse.Namespace) -> int:
    from orderflow import status

    return _serve("crm-status", status.main)


def cmd_mes(args: argparse.Namespace) -> int:
    from orderflow import mes

    return _serve("mes", lambda s, stop: mes.main(s, stop, concurrency=args.concurrency,
                                                  worker_id=args.worker_id))


def cmd_all(args: argparse.Namespace) -> int:
    import obskit

    obskit.init("orderflow-supervisor")
    from orderflow import faults, migrations, supervisor

    # The children that apply them log it and set the gauge; this is for the one reading stderr.
    if on := faults.announce("*", metric=False):
        print(f"orderflow: FAULT INJECTION ON ({faults.format_spec(on)}): orders are lost or "
              "stalled on purpose", file=sys.stderr, flush=True)
    migrations.upgrade(Settings().database_url)
    return supervisor.run(port=args.port, host=args.host, mes_workers=args.mes_workers,
                          mes_concurrency=args.concurrency, metrics_port=args.metrics_port,
                          targets_file=args.targets_file, targets_host=args.targets_host,
                          ingress=args.ingress)


def cmd_demo(args: argparse.Namespace) -> int:
    from orderflow import demo

    summary = demo.run(duration=args.duration, rate=args.rate, port=args.port,
                       quiet=args.json, faults=dict(args.fault or ()))
    if args.json:
        print(json.dumps(summary))
    else:
        print(demo.format_summary(summary))
    # Orders stuck by a fault are in a known state: lost on purpose, not unaccounted for.
    return 0 if summary["unaccounted"] == 0 else 1


def _with_pool(fn: Callable[..., Awaitable[object]], *args: object) -> object:
    from orderflow import db

    async def run() -> object:
        pool = await db.open_pool(Settings().database_url, max_size=1)
        try:
            return await fn(pool, *args)
        finally:
            await pool.close()

    return asyncio.run(run())


def cmd_apikey_list(args: argparse.Namespace) -> int:
    from orderflow import crm

    rows = _with_pool(crm.list_api_keys)
    assert isinstance(rows, list)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    if not rows:
        print("no API keys")
        return 0
    print(f"{'PARTNER':<20} {'PREFIX':<12} {'RATE LIMIT':<22} {'CREATED':<20} REVOKED")
    for r in rows:
        revoked = r["revoked_at"].strftime("%Y-%m-%d %H:%M") if r["revoked_at"] else "-"
        print(f"{r['partner']:<20} {r['key_prefix']:<12} {r['rate_limit'] or 'default':<22} "
              f"{r['created_at'].strftime('%Y-%m-%d %H:%M'):<20} {revoked}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    from orderflow import crm

    n = _with_pool(crm.revoke_api_key, args.key_prefix)
    if not n:
        print(f"no active key with prefix {args.key_prefix!r}", file=sys.stderr)
        return 1
    print(f"revoked {n} key(s) with prefix {args.key_prefix}; it stops working within 10 s")
    return 0


def cmd_outbox_parked(args: argparse.Namespace) -> int:
    from orderflow import relay

    if args.retry:
        n = _with_pool(relay.unpark)
        print(f"{n} parked outbox row(s) sent back to the relay")
        return 0
    rows = _with_pool(relay.parked)
    assert isinstance(rows, list)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    if not rows:
        print("no parked outbox rows")
        return 0
    print(f"{'ID':<8} {'ORDER':<36} {'ROUTE':<16} {'ATTEMPTS':<8} {'PARKED':<16} LAST ERROR")
    for r in rows:
        print(f"{r['id']:<8} {r['order_id']:<36} {r['exchange'] + '/' + r['routing_key']:<16} "
              f"{r['attempts']:<8} {r['parked_at'].strftime('%Y-%m-%d %H:%M'):<16} "
              f"{(r['last_error'] or '')[:100]}")
    return 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orderflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="database schema")
    dbsub = dbp.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("upgrade", help="create the database if missing and apply migrations"
                     ).set_defaults(func=cmd_db_upgrade)

    kp = sub.add_parser("apikey", help="partner API keys")
    ksub = kp.add_subparsers(dest="apikey_command", required=True)
    kc = ksub.add_parser("create", help="create a key for PARTNER and print it")
    kc.add_argument("partner")
    kc.add_argument("--rate-limit", default=None,
                    help='this key\'s limit, e.g. "100/second;5000/hour" '
                         "(default: ORDERFLOW_RATE_LIMIT_B2B)")
    kc.set_defaults(func=cmd_apikey_create)
    kl = ksub.add_parser("list", help="every key: partner, prefix, limit, created, revoked")
    kl.add_argument("--json", action="store_true", help="machine-readable output")
    kl.set_defaults(func=cmd_apikey_list)
    kr = ksub.add_parser("revoke", help="revoke the key with this prefix (from `apikey list`)")
    kr.add_argument("key_prefix")
    kr.set_defaults(func=cmd_apikey_revoke)

    op = sub.add_parser("outbox", help="the CRM outbox")
    osub = op.add_subparsers(dest="outbox_command", required=True)
    opk = osub.add_parser("parked", help="outbox rows the relay gave up on (exit 1 if any)")
    opk.add_argument("--json", action="store_true", help="machine-readable output")
    opk.add_argument("--retry", action="store_true",
                     help="give every parked row a fresh set of attempts")
    opk.set_defaults(func=cmd_outbox_parked)

    a = sub.add_parser("api", help="run the ingress (shop API, open API, order status)")
    a.add_argument("--port", type=int, default=8000)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--fd", type=int, default=None, metavar="FD",
                   help="serve this inherited listening socket instead of binding --host/--port "
                        "(how `orderflow all` starts its ingress processes)")
    a.set_defaults(func=cmd_api, faults=True)

    sub.add_parser("relay", help="run the CRM outbox relay").set_defaults(func=cmd_relay,
                                                                         faults=True)
    sub.add_parser("status", help="run the CRM consumer of MES status events"
                   ).set_defaults(func=cmd_status, faults=True)

    m = sub.add_parser("mes", help="run an MES worker (run as many as the load needs)")
    m.add_argument("--concurrency", type=int, default=8,
                   help="orders in progress at once per queue (default 8)")
    m.add_argument("--worker-id", default=None, help="name in logs and history "
                   "(default host:pid)")
    m.set_defaults(func=cmd_mes, faults=True)

    al = sub.add_parser("all", help="run api, relay, status consumer and MES workers together")
    al.add_argument("--port", type=int, default=8000)
    al.add_argument("--host", default="127.0.0.1")
    al.add_argument("--mes-workers", type=int, default=2)
    al.add_argument("--ingress", type=_positive, default=1, metavar="N",
                    help="ingress processes serving --port together (default 1; the kernel "
                         "spreads connections over them, SO_REUSEPORT)")
    al.add_argument("--concurrency", type=int, default=8, help="per MES worker")
    al.add_argument("--metrics-port", type=_port, metavar="BASE",
                    # A string default goes through type=, so a bad env value is a usage error.
                    default=os.environ.get(ENV_METRICS_PORT) or None,
                    help="each process serves its own /metrics (with exemplars): ingress on "
                         "BASE, crm-relay BASE+1, crm-status BASE+2, mes-1 BASE+3, ..., then "
                         "ingress-2, ... after the last MES worker "
                         f"(env {ENV_METRICS_PORT}; default: off, the ingress /metrics shows "
                         "all processes merged)")
    al.add_argument("--targets-file", metavar="PATH", default=None,
                    help="with --metrics-port: write the processes as Prometheus file_sd JSON "
                         "here (labels service, instance)")
    al.add_argument("--targets-host", default="host.docker.internal",
                    help="host Prometheus reaches the processes at (default "
                         "host.docker.internal: the bundle's Prometheus in docker)")
    al.set_defaults(func=cmd_all, faults=True)

    d = sub.add_parser("demo", help="run everything, send a mix of orders, print a summary")
    d.add_argument("--duration", type=float, required=True, help="seconds of sending")
    d.add_argument("--rate", type=float, default=10.0, help="orders per second (default 10)")
    d.add_argument("--port", type=int, default=0, help="ingress port (default: a free one)")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--fault", action="append", type=_fault, metavar="NAME[=RATE]",
                   help="lose or stall orders on purpose (repeatable; added to "
                        f"{ENV_FAULTS}): {', '.join(FAULTS)}; RATE = share of orders, 0..1 "
                        "(docs/orderflow.md, Faults on purpose)")
    d.set_defaults(func=cmd_demo, faults=True)

    c = sub.add_parser("chaos", help="place many orders, inject a real fault, heal it, and "
                       "count lost, duplicated, stuck and unexpected orders")
    c.add_argument("--fault", action="append", required=True, metavar="NAME",
                   help="kill-mes, kill-relay, kill-status, kill-ingress, rabbitmq-restart, "
                        "rabbitmq-close-connections, postgres-restart, redis-restart, "
                        "collector-down, or all (repeatable)")
    c.add_argument("--orders", type=int, default=200, help="orders per run (default 200)")
    c.add_argument("--rate", type=float, default=20.0, help="orders per second (default 20)")
    c.add_argument("--runs", type=int, default=1, help="runs of each fault (default 1)")
    c.add_argument("--json", action="store_true", help="one JSON list of the runs")
    c.set_defaults(func=cmd_chaos)
    return p


def cmd_chaos(args: argparse.Namespace) -> int:
    from orderflow import chaos

    names = list(chaos.FAULTS) if args.fault == ["all"] else args.fault
    unknown = [n for n in names if n not in chaos.FAULTS]
    if unknown:
        print(f"orderflow chaos: unknown fault(s) {', '.join(unknown)}; valid: "
              f"{', '.join(chaos.FAULTS)}, or all", file=sys.stderr)
        return 2
    results = []
    for _ in range(args.runs):
        for name in names:
            r = chaos.run_once(name, orders=args.orders, rate=args.rate,
                               log=(lambda m: None) if args.json else
                               (lambda m: print(m, file=sys.stderr, flush=True)))
            results.append(r)
            if not args.json:
                print(f"{name}: {r['orders']} orders, lost {r['lost']}, duplicated "
                      f"{r['duplicated']}, stuck {r['stuck']}, unexpected {r['unexpected']}, "
                      f"recovery {r['recovery_seconds']} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results))
    else:
        print(chaos.table(results))
    bad = sum(r["lost"] + r["duplicated"] + r["unexpected"] for r in results)
    return 1 if bad else 0


def _fault(text: str) -> tuple[str, float]:
    from orderflow import faults

    try:
        return faults.parse_one(text)
    except faults.FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} outside 1-65535")
    return port


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if getattr(args, "targets_file", None) and args.metrics_port is None:
        p.error(f"--targets-file needs --metrics-port (or {ENV_METRICS_PORT}): without it the "
                "processes have no metrics ports of their own")
    if getattr(args, "faults", False):  # a typo must not start a group that injects nothing
        from orderflow import faults

        try:
            faults.load()
        except faults.FaultSpecError as exc:
            p.error(str(exc))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
