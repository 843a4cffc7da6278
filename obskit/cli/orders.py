"""``obskit orders``: where is order X, and which orders are stuck or lost (the journey store).

Exit codes: 0 found / listed, 1 unknown order id, 2 the store is not configured or unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from obskit import _config
from obskit.journey import Deadlines, JourneyStore, StoreUnavailable, Waiting, open_store
from obskit.journey._deadlines import format_duration, parse_duration

EXAMPLES = """examples:
  obskit orders show 7f3c2a9e-...            # every hop, and where the order is now
  obskit orders stuck                        # past their stage's stuck deadline
  obskit orders stuck --stage published --older-than 5m
  obskit orders lost --json

environment: OBSKIT_JOURNEY_URL (the Redis of the journey store), OBSKIT_JOURNEY_PREFIX,
             OBSKIT_GRAFANA_URL (adds Grafana Explore links to traces)
"""


def register(subparsers: Any) -> None:
    orders = subparsers.add_parser(
        "orders", help="an order's journey; stuck and lost orders",
        description="Read the order journey store: where an order is, and which orders are "
        "stuck or lost.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = orders.add_subparsers(dest="orders_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("show", help="every hop of one order, and where it is now")
    p.add_argument("order_id")
    _common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("stuck", help="orders past their stage's stuck deadline, oldest first")
    p.add_argument("--stage", help="only this stage (e.g. published)")
    p.add_argument("--older-than", type=_duration, metavar="DURATION",
                   help="in their stage for longer than this (e.g. 90s, 5m, 2h) instead of "
                   "the stage's deadline")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    _common(p)
    p.set_defaults(func=cmd_stuck)

    p = sub.add_parser("lost", help="orders past their stage's lost deadline, oldest first")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    _common(p)
    p.set_defaults(func=cmd_lost)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--url", help="journey store URL (default: $OBSKIT_JOURNEY_URL)")
    p.add_argument("--prefix", help="key prefix (default: $OBSKIT_JOURNEY_PREFIX or obskit)")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settings(args: argparse.Namespace) -> _config.Settings:
    return _config.resolve({"service_name": "obskit-cli", "journey_url": args.url,
                            "journey_prefix": args.prefix})


def _fail(msg: str, code: int = 2) -> int:
    print(f"obskit orders: {msg}", file=sys.stderr)
    return code


def _open(args: argparse.Namespace) -> tuple[_config.Settings, JourneyStore] | int:
    try:
        settings = _settings(args)
    except ValueError as exc:
        return _fail(str(exc))
    if not settings.journey_url:
        return _fail("no journey store configured: set OBSKIT_JOURNEY_URL (e.g. "
                     "redis://127.0.0.1:6379/0) or pass --url")
    try:
        import redis  # noqa: F401
    except ImportError:
        return _fail("the redis package is missing: pip install 'obskit[journey]'")
    return settings, open_store(settings)


def _deadlines(store: JourneyStore, settings: _config.Settings) -> Deadlines:
    """The table the active sweeper uses (so the CLI and the gauges agree), else ours."""
    published = store.published_deadlines()
    return published if published is not None else settings.stage_deadlines


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def explore_url(grafana_url: str, tempo_uid: str, trace_id: str) -> str:
    """A Grafana Explore link that opens ``trace_id`` in the Tempo datasource."""
    pane = {"a": {"datasource": tempo_uid, "queries": [{
        "refId": "A", "datasource": {"type": "tempo", "uid": tempo_uid},
        "queryType": "traceql", "query": trace_id}],
        "range": {"from": "now-24h", "to": "now"}}}
    return (f"{grafana_url.rstrip('/')}/explore?schemaVersion=1&orgId=1&panes="
            + quote(json.dumps(pane, separators=(",", ":")), safe=""))


def cmd_show(args: argparse.Namespace) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    settings, store = opened
    try:
        state, hops = store.journey(args.order_id)
        deadlines = _deadlines(store, settings)
    except StoreUnavailable as exc:
        return _fail(str(exc))
    finally:
        store.close()
    if state is None and not hops:
        return _fail(f"order {args.order_id!r} is not in the journey store at {store.url} "
                     f"(prefix {store.prefix!r}): it was never recorded there, or it finished "
                     f"more than {format_duration(settings.journey_finished_ttl)} ago", 1)
    now = time.time()
    grafana = settings.grafana_url
    rows: list[dict[str, Any]] = []
    prev: float | None = None
    for h in hops:
        rows.append({"stage": h.stage, "at": h.at, "time": _utc(h.at),
                     "since_previous": None if prev is None else round(h.at - prev, 6),
                     "channel": h.channel, "service": h.service, "instance": h.instance,
                     "trace_id": h.trace_id, "detail": h.detail,
                     "trace_url": explore_url(grafana, settings.grafana_tempo_uid, h.trace_id)
                     if grafana and h.trace_id else None})
        prev = h.at
    now_line, verdict = _where(state, deadlines, now)
    if args.json:
        out = {"order_id": args.order_id, "hops": rows, "now": verdict}
        print(json.dumps(out, indent=2))
        return 0
    print(f"order {args.order_id}  ({state.channel if state else hops[-1].channel})")
    print(f"{'time (UTC)':<23}  {'+prev':>8}  {'stage':<14} {'service':<14} {'instance':<22} "
          "trace")
    for r in rows:
        gap = "" if r["since_previous"] is None else "+" + format_duration(r["since_previous"])
        extra = ("  " + " ".join(f"{k}={v}" for k, v in r["detail"].items())
                 if r["detail"] else "")
        print(f"{r['time']:<23}  {gap:>8}  {r['stage']:<14} {r['service']:<14} "
              f"{r['instance']:<22} {r['trace_id'] or '-'}{extra}")
    print(now_line)
    traces = dict.fromkeys(r["trace_url"] for r in rows if r["trace_url"])
    for url in traces:
        print(f"trace: {url}")
    return 0


def _where(state: Any, deadlines: Deadlines, now: float) -> tuple[str, dict[str, Any]]:
    """One line saying where the order is now and for how long, and the same as a dict."""
    if state is None:
        return ("now: unknown (hops recorded, but its state has expired)",
                {"stage": None, "state": "unknown"})
    age = now - state.since
    d = deadlines.for_stage(state.stage, state.channel)
    if state.terminal:
        word = "finished" if state.stage in ("done", "failed") else "in the dead-letter queue"
        return (f"now: {state.stage} ({word}) for {format_duration(age)}",
                {"stage": state.stage, "state": "finished" if word == "finished"
                 else "dead_lettered", "for_seconds": round(age, 3)})
    if age >= d.lost:
        kind = "lost"
    elif age >= d.stuck:
        kind = "stuck"
    else:
        kind = "moving"
    line = (f"now: {kind.upper() if kind != 'moving' else 'in'} {state.stage} for "
            f"{format_duration(age)} (stuck after {format_duration(d.stuck)}, lost after "
            f"{format_duration(d.lost)})")
    if kind == "lost":
        line += " — the next hop never came: check the service that should take it from " \
                f"{state.stage} (docs/runbooks)"
    return line, {"stage": state.stage, "state": kind, "for_seconds": round(age, 3),
                  "stuck_after_seconds": d.stuck, "lost_after_seconds": d.lost}


def _listing(args: argparse.Namespace, *, lost_only: bool) -> int:
    opened = _open(args)
    if isinstance(opened, int):
        return opened
    settings, store = opened
    try:
        deadlines = _deadlines(store, settings)
        found = store.waiting(deadlines, stage=getattr(args, "stage", None),
                              older_than=getattr(args, "older_than", None),
                              lost_only=lost_only, limit=args.limit)
    except StoreUnavailable as exc:
        return _fail(str(exc))
    finally:
        store.close()
    if args.json:
        print(json.dumps([_row(w) for w in found], indent=2))
        return 0
    what = "lost" if lost_only else "stuck"
    if not found:
        print(f"no {what} orders")
        return 0
    print(f"{'order_id':<38} {'stage':<14} {'channel':<8} {'in stage for':>12}  since (UTC)")
    for w in found:
        flag = "  LOST" if w.lost and not lost_only else ""
        print(f"{w.order_id:<38} {w.stage:<14} {w.channel:<8} {format_duration(w.age):>12}  "
              f"{_utc(w.since)}{flag}")
    more = " (limit reached)" if len(found) >= args.limit else ""
    print(f"{len(found)} {what} order(s){more}; `obskit orders show ORDER_ID` for the journey")
    return 0


def _row(w: Waiting) -> dict[str, Any]:
    return {"order_id": w.order_id, "stage": w.stage, "channel": w.channel,
            "age_seconds": round(w.age, 3), "since": _utc(w.since), "lost": w.lost}


def cmd_stuck(args: argparse.Namespace) -> int:
    return _listing(args, lost_only=False)


def cmd_lost(args: argparse.Namespace) -> int:
    return _listing(args, lost_only=True)
