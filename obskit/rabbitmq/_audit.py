"""Audit a vhost for the ways RabbitMQ loses messages silently (step one of the plan)."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._management import ManagementClient
from ._routing import Broker, is_retry_queue

__all__ = ["AuditReport", "Finding", "QueueAudit", "audit"]

#: Findings that mean "no working DLQ": they fail the audit for a --critical queue.
DLQ_CHECKS = frozenset({"no_dlx", "dlx_missing", "dlx_routes_nowhere"})


@dataclass
class Finding:
    check: str
    severity: str  # "error" | "warning"
    detail: str


@dataclass
class QueueAudit:
    name: str
    role: str  # "work", "retry" or "dlq"
    type: str
    durable: bool
    consumers: int
    messages: int
    dead_letter_exchange: str | None
    dead_letter_routing_key: str | None
    dead_letter_source: str
    dead_letter_targets: list[str]
    critical: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def has_working_dlq(self) -> bool:
        return not any(f.check in DLQ_CHECKS for f in self.findings)


@dataclass
class AuditReport:
    vhost: str
    critical_patterns: list[str]
    queues: list[QueueAudit]

    @property
    def failing(self) -> list[QueueAudit]:
        """Critical queues without a working DLQ."""
        return [q for q in self.queues if q.critical and not q.has_working_dlq]

    @property
    def unmatched_patterns(self) -> list[str]:
        return [p for p in self.critical_patterns
                if not any(fnmatch.fnmatchcase(q.name, p) for q in self.queues)]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "vhost": self.vhost,
            "critical_patterns": self.critical_patterns,
            "ok": self.exit_code == 0,
            "failing": [q.name for q in self.failing],
            "unmatched_patterns": self.unmatched_patterns,
            "queues": [{**asdict(q), "has_working_dlq": q.has_working_dlq}
                       for q in self.queues],
        }


async def audit(management: ManagementClient, vhost: str, *,
                critical: Sequence[str] = (), backlog: int = 1000) -> AuditReport:
    """Check every queue of ``vhost``; ``critical`` are fnmatch patterns (``orders.*``)."""
    queues, exchanges, bindings, policies = await asyncio.gather(
        management.queues(vhost), management.exchanges(vhost), management.bindings(vhost),
        management.policies(vhost))
    broker = Broker(queues, exchanges, bindings, policies)
    dlqs = broker.dead_letter_queues()
    out: list[QueueAudit] = []
    for q in sorted(queues, key=lambda q: q["name"]):
        name = q["name"]
        role = "dlq" if name in dlqs else "retry" if is_retry_queue(q) else "work"
        route = broker.route(q)
        qa = QueueAudit(
            name=name, role=role, type=q.get("type", "classic"),
            durable=bool(q.get("durable")), consumers=int(q.get("consumers") or 0),
            messages=int(q.get("messages") or 0), dead_letter_exchange=route.exchange,
            dead_letter_routing_key=route.routing_key, dead_letter_source=route.source,
            dead_letter_targets=route.targets,
            critical=any(fnmatch.fnmatchcase(name, p) for p in critical) and role != "dlq",
        )
        f = qa.findings.append
        if role != "dlq":
            if route.exchange is None:
                f(Finding("no_dlx", "error", "no dead-letter exchange (argument or policy): "
                          "rejected or expired messages are dropped"))
            elif not route.exchange_exists:
                f(Finding("dlx_missing", "error", f"dead-letter exchange {route.exchange!r} "
                          "does not exist: dead letters are dropped"))
            elif not route.targets:
                what = (f"routing key {route.routing_key!r}" if route.routing_key is not None
                        else "any routing key")
                f(Finding("dlx_routes_nowhere", "error", f"dead-letter exchange "
                          f"{route.exchange!r} routes {what} to no queue"))
            elif route.uncertain:
                f(Finding("dlx_routing_key_unset", "warning", "no dead-letter routing key: "
                          "dead letters keep their own keys, which may not be bound"))
            args = q.get("arguments") or {}
            policy = broker.policy_of(q)
            if route.exchange is not None and qa.type == "quorum":
                strategy = args.get("x-dead-letter-strategy",
                                    policy.get("dead-letter-strategy", "at-most-once"))
                if strategy != "at-least-once":
                    f(Finding("dead_letter_at_most_once", "warning", "dead-lettering is "
                              "at-most-once; set x-dead-letter-strategy=at-least-once and "
                              "x-overflow=reject-publish"))
            elif route.exchange is not None and qa.type == "classic":
                f(Finding("dead_letter_at_most_once", "warning", "classic queues dead-letter "
                          "without confirms (at-most-once); use a quorum queue"))
        if not qa.durable:
            f(Finding("not_durable", "error", "not durable: the queue and its messages vanish "
                      "on a broker restart"))
        if role == "work" and qa.consumers == 0:
            f(Finding("no_consumers", "warning", "no consumer: messages wait forever"))
        ready = int(q.get("messages_ready") or 0)
        rate = float((q.get("messages_details") or {}).get("rate") or 0.0)
        if role == "dlq" and qa.messages:
            f(Finding("dlq_not_empty", "warning", f"{qa.messages} dead-lettered message(s): "
                      f"obskit dlq show {name}"))
        elif role == "work" and ready >= backlog:
            check = "growing_backlog" if rate > 0 else "backlog"
            f(Finding(check, "warning", f"{ready} messages ready (growing {rate:+.1f}/s)"))
        out.append(qa)
    return AuditReport(vhost, list(critical), out)
