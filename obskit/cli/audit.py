"""``obskit audit rabbitmq``: find queues that can lose messages (no working DLQ, ...)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from obskit.cli.dlq import add_connection_args
from obskit.rabbitmq._audit import AuditReport, audit
from obskit.rabbitmq._env import amqp_url, vhost_of
from obskit.rabbitmq._management import ManagementClient

EXAMPLES = """examples:
  obskit audit rabbitmq --critical 'orders.*'
  obskit audit rabbitmq --critical 'orders.*' --critical 'invoices.*' --json

exit status: 1 when a queue matching a --critical pattern has no working dead-letter queue
(no DLX by argument or policy, a DLX that does not exist, or one that routes nowhere); else 0.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("audit", help="audit infrastructure for ways to lose messages")
    sub = p.add_subparsers(dest="audit_target", metavar="TARGET")
    sub.required = True
    r = sub.add_parser("rabbitmq", help="queues without DLQ, non-durable, no consumers, backlog",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--critical", action="append", default=[], metavar="PATTERN",
                   help="fnmatch pattern of queues that must have a working DLQ (repeatable)")
    r.add_argument("--backlog", type=int, default=1000,
                   help="ready messages from which a work queue's backlog is reported")
    r.add_argument("--json", action="store_true")
    add_connection_args(r)
    r.set_defaults(func=cmd_rabbitmq)


def cmd_rabbitmq(args: argparse.Namespace) -> int:
    vhost = args.vhost if args.vhost is not None else vhost_of(amqp_url(args.url))
    try:
        report = asyncio.run(_audit(args, vhost))
    except Exception as exc:  # httpx errors: unreachable API, bad credentials
        print(f"error: cannot audit vhost {vhost!r}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
    return report.exit_code


async def _audit(args: argparse.Namespace, vhost: str) -> AuditReport:
    async with ManagementClient(args.management_url) as mgmt:
        return await audit(mgmt, vhost, critical=args.critical, backlog=args.backlog)


def _print(report: AuditReport) -> None:
    print(f"vhost {report.vhost!r}: {len(report.queues)} queue(s)")
    for q in report.queues:
        mark = "✗" if q.critical and not q.has_working_dlq else \
            ("!" if q.findings else "✓")
        dl = (f"DLX {q.dead_letter_exchange or '(default)'}"
              f" → {', '.join(q.dead_letter_targets) or 'nothing'}"
              if q.dead_letter_exchange is not None else "no DLX")
        crit = " critical" if q.critical else ""
        print(f"{mark} {q.name} [{q.role}{crit}, {q.type}, {q.consumers} consumer(s), "
              f"{q.messages} msg] {dl}")
        for f in q.findings:
            print(f"    {f.severity}: {f.check}: {f.detail}")
    for p in report.unmatched_patterns:
        print(f"warning: --critical {p!r} matches no queue", file=sys.stderr)
    if report.failing:
        print(f"FAIL: {len(report.failing)} critical queue(s) without a working DLQ: "
              f"{', '.join(q.name for q in report.failing)}")
    else:
        print("OK: every critical queue has a working DLQ")
