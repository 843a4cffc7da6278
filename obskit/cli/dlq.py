"""``obskit dlq``: list, show, replay and purge dead-letter queues (on-call tooling)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from obskit.rabbitmq._dlq import DeadLetter, DeadLetterQueues, group_by_error
from obskit.rabbitmq.errors import RabbitMQError

EXAMPLES = """examples:
  obskit dlq list
  obskit dlq show orders.b2c.dlq --limit 20
  obskit dlq replay orders.b2c.dlq --message-id 7f3c...   # one message
  obskit dlq replay orders.b2c.dlq --limit 100            # the oldest 100
  obskit dlq replay orders.b2c.dlq --all
  obskit dlq purge orders.b2c.dlq --yes

environment: OBSKIT_RABBITMQ_URL (default amqp://guest:guest@localhost:5672/),
             OBSKIT_RABBITMQ_MANAGEMENT_URL (default http://guest:guest@localhost:15672)
"""


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vhost", help="virtual host (default: the one in OBSKIT_RABBITMQ_URL)")
    p.add_argument("--url", help="AMQP URL (default: $OBSKIT_RABBITMQ_URL)")
    p.add_argument("--management-url",
                   help="management API URL (default: $OBSKIT_RABBITMQ_MANAGEMENT_URL)")


def register(subparsers: Any) -> None:
    dlq = subparsers.add_parser(
        "dlq", help="inspect and replay dead-lettered messages",
        description="Inspect, replay and purge dead-letter queues.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("list", help="every DLQ with its depth")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="messages grouped by error type (they stay in the queue)")
    p.add_argument("queue", help="the DLQ (orders.b2c.dlq) or the queue it serves (orders.b2c)")
    p.add_argument("--limit", type=_positive, default=50, help="messages to read (default 50)")
    p.add_argument("--json", action="store_true")
    add_connection_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("replay", help="send messages back to the queue they failed in")
    p.add_argument("queue", help="the DLQ (orders.b2c.dlq) or the queue it serves (orders.b2c)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--limit", type=_positive, help="replay the oldest N messages")
    which.add_argument("--all", action="store_true",
                       help="replay every message present when the command starts (default)")
    which.add_argument("--message-id", help="replay the message with this id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("purge", help="delete every message of a DLQ")
    p.add_argument("queue")
    p.add_argument("--yes", action="store_true", help="really delete (required)")
    p.add_argument("--force", action="store_true",
                   help="allow purging a queue whose name does not end in .dlq")
    add_connection_args(p)
    p.set_defaults(func=cmd_purge)


def _as_dlq(queue: str) -> str:
    """``orders.b2c`` means its DLQ ``orders.b2c.dlq`` for show and replay."""
    return queue if queue.endswith(".dlq") else queue + ".dlq"


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def _dlqs(args: argparse.Namespace) -> DeadLetterQueues:
    return DeadLetterQueues(args.url, vhost=args.vhost, management_url=args.management_url)


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except RabbitMQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"error: cannot reach RabbitMQ: {exc}", file=sys.stderr)
        return 1


# --- list ------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list(args))


async def _list(args: argparse.Namespace) -> int:
    async with _dlqs(args) as d:
        rows = await d.list()
    if args.json:
        print(json.dumps({"vhost": d.vhost, "dlqs": rows}, indent=2))
        return 0
    if not rows:
        print(f"no dead-letter queues in vhost {d.vhost!r}")
        return 0
    w = max(len(r["queue"]) for r in rows)
    print(f"{'DLQ':<{w}}  {'MESSAGES':>8}  SOURCES")
    for r in rows:
        print(f"{r['queue']:<{w}}  {r['messages']:>8}  {', '.join(r['sources']) or '-'}")
    return 0


# --- show ------------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    args.queue = _as_dlq(args.queue)
    return _run(_show(args))


async def _show(args: argparse.Namespace) -> int:
    async with _dlqs(args) as d:
        depth = await d.depth(args.queue)
        letters = await d.show(args.queue, limit=args.limit)
    groups = group_by_error(letters)
    if args.json:
        print(json.dumps({
            "queue": args.queue, "vhost": d.vhost, "depth": depth, "shown": len(letters),
            "groups": [{"error_type": k, "count": len(v),
                        "messages": [x.to_dict() for x in v]} for k, v in groups.items()],
        }, indent=2))
        return 0
    print(f"{args.queue}: {depth} message(s), showing {len(letters)} in "
          f"{len(groups)} error group(s)")
    for error_type, items in groups.items():
        print()
        reasons = sorted({x.reason or "?" for x in items})
        print(f"■ {error_type} — {len(items)} message(s) [{', '.join(reasons)}]")
        messages = sorted({x.error_message for x in items if x.error_message})
        for text in messages[:3]:
            print(f"  {text[:160]}")
        if len(messages) > 3:
            print(f"  ... {len(messages) - 3} more distinct message(s)")
        for x in items:
            print("  " + _line(x))
    return 0


def _line(x: DeadLetter) -> str:
    return (f"id={x.message_id or '-'} order={x.order_id or '-'} attempts={x.attempts or '-'} "
            f"first={x.first_failure or '-'} last={x.last_failure or x.dead_lettered_at or '-'} "
            f"service={x.service or '-'} trace={x.trace_id or '-'} "
            f"from={x.original_queue or '-'} body={x.body_preview!r}")


# --- replay ----------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    args.queue = _as_dlq(args.queue)
    return _run(_replay(args))


async def _replay(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            # Finish the message in hand (publish confirmed + DLQ ack), then stop.
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not in the main thread (tests)
            pass
    bar: Any = None

    def total(n: int) -> None:
        nonlocal bar
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=n, unit="msg", desc=f"replay {args.queue}", file=sys.stderr)

    def progress(_: DeadLetter) -> None:
        if bar is not None:
            bar.update(1)

    try:
        async with _dlqs(args) as d:
            result = await d.replay(args.queue, limit=args.limit, message_id=args.message_id,
                                    on_progress=progress, stop=stop, total=total)
    finally:
        if bar is not None:
            bar.close()
    if result.not_found:
        print(f"message {args.message_id} not found in {args.queue}", file=sys.stderr)
        return 1
    print(f"replayed {result.replayed} message(s) from {args.queue}")
    if result.interrupted:
        print("interrupted: every message is either replayed or still in the DLQ",
              file=sys.stderr)
        return 130
    return 0


# --- purge -----------------------------------------------------------------------------------
def cmd_purge(args: argparse.Namespace) -> int:
    if not args.queue.endswith(".dlq") and not args.force:
        print(f"refusing to purge {args.queue!r}: not a DLQ (name does not end in .dlq); "
              "add --force if you mean it", file=sys.stderr)
        return 2
    if not args.yes:
        print(f"this deletes every message in {args.queue!r}; re-run with --yes",
              file=sys.stderr)
        return 2
    return _run(_purge(args))


async def _purge(args: argparse.Namespace) -> int:
    async with _dlqs(args) as d:
        n = await d.purge(args.queue)
    print(f"purged {n} message(s) from {args.queue}")
    return 0
