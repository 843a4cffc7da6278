"""Where would the broker dead-letter a queue's messages? Computed from management API data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeadLetterRoute", "Broker", "topic_matches"]


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    p, k = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and match(i + 1, j + 1)

    return match(0, 0)


@dataclass
class DeadLetterRoute:
    exchange: str | None  # None: no DLX configured
    routing_key: str | None  # None: the message's own routing keys
    source: str  # "arguments", "policy" or "none"
    exchange_exists: bool = False
    targets: list[str] = field(default_factory=list)  # queues it reaches
    uncertain: bool = False  # no dead-letter routing key: depends on the messages' keys

    @property
    def works(self) -> bool:
        return self.exchange is not None and self.exchange_exists and bool(self.targets)


class Broker:
    """A snapshot of one vhost: queues, exchanges, bindings."""

    def __init__(self, queues: list[dict[str, Any]], exchanges: list[dict[str, Any]],
                 bindings: list[dict[str, Any]],
                 policies: list[dict[str, Any]] | None = None) -> None:
        self.queues = {q["name"]: q for q in queues}
        self.exchanges = {e["name"]: e for e in exchanges}
        self.bindings = bindings
        self.policies = sorted(policies or [], key=lambda p: -int(p.get("priority") or 0))

    def policy_of(self, queue: dict[str, Any]) -> dict[str, Any]:
        """The queue's effective policy definition.

        Computed from the policy list when the management stats have not caught up yet (a
        new queue shows no policy for up to the stats interval, ~5 s).
        """
        policy = queue.get("effective_policy_definition")
        if isinstance(policy, dict) and policy:
            return policy
        for p in self.policies:  # highest priority first, as RabbitMQ picks
            if p.get("apply-to", "all") not in ("all", "queues", f"{queue.get('type')}_queues"):
                continue
            try:
                if re.search(p.get("pattern", ""), queue["name"]):
                    return dict(p.get("definition") or {})
            except re.error:
                continue
        return {}

    def route(self, queue: dict[str, Any]) -> DeadLetterRoute:
        args = queue.get("arguments") or {}
        policy = self.policy_of(queue)
        # Queue arguments win over policy for the DLX (RabbitMQ's rule).
        if "x-dead-letter-exchange" in args:
            ex, source = args["x-dead-letter-exchange"], "arguments"
        elif "dead-letter-exchange" in policy:
            ex, source = policy["dead-letter-exchange"], "policy"
        else:
            return DeadLetterRoute(None, None, "none")
        rk = args.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
        route = DeadLetterRoute(str(ex), None if rk is None else str(rk), source)
        route.exchange_exists = route.exchange in self.exchanges or route.exchange == ""
        if not route.exchange_exists:
            return route
        route.targets, route.uncertain = self._destinations(route.exchange or "",
                                                            route.routing_key, set())
        return route

    def _destinations(self, exchange: str, rk: str | None,
                      seen: set[str]) -> tuple[list[str], bool]:
        if exchange == "":
            if rk is None:
                return [], True
            return ([rk] if rk in self.queues else []), False
        if exchange in seen:
            return [], False
        seen.add(exchange)
        ex_type = (self.exchanges.get(exchange) or {}).get("type", "direct")
        out: list[str] = []
        uncertain = rk is None or ex_type == "headers"
        for b in self.bindings:
            if b.get("source") != exchange:
                continue
            key = b.get("routing_key", "")
            if rk is None or ex_type in ("fanout", "headers"):
                hit = True
            elif ex_type == "topic":
                hit = topic_matches(key, rk)
            else:
                hit = key == rk
            if not hit:
                continue
            if b.get("destination_type") == "exchange":
                sub, unc = self._destinations(b["destination"], rk, seen)
                out += sub
                uncertain = uncertain or unc
            else:
                out.append(b["destination"])
        return sorted(set(out)), uncertain

    def dead_letter_queues(self) -> set[str]:
        """Queues that receive dead letters: ``*.dlq`` names and any queue a DLX reaches."""
        dlqs = {n for n in self.queues if n.endswith(".dlq")}
        for q in self.queues.values():
            r = self.route(q)
            if r.works and not _is_retry(q):
                dlqs.update(t for t in r.targets if t != q["name"] and not
                            _is_retry(self.queues.get(t, {})))
        # A retry tier dead-letters back into its work queue: that is not a DLQ.
        retry_targets = {t for q in self.queues.values() if _is_retry(q)
                         for t in self.route(q).targets}
        return {d for d in dlqs if d not in retry_targets or d.endswith(".dlq")}


def _is_retry(queue: dict[str, Any]) -> bool:
    args = queue.get("arguments") or {}
    return ".retry." in queue.get("name", "") or "x-message-ttl" in args and \
        "x-dead-letter-exchange" in args and queue.get("consumers", 0) == 0 and \
        args.get("x-dead-letter-exchange") == ""


def is_retry_queue(queue: dict[str, Any]) -> bool:
    return _is_retry(queue)
