"""Order stages: one call at each hand-off makes "accepted but never reached the MES" a number."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from obskit import journey
from obskit._context import current_order
from obskit.metrics import catalogue, observe

__all__ = ["STAGES", "TERMINAL_STAGES", "record_stage"]

#: The hand-off stages every service agrees on (MISSION.md). MES stages in between are free-form.
STAGES = ("accepted", "stored", "published", "received", "priced", "scheduled", "printing",
          "done", "failed", "dead_lettered")
TERMINAL_STAGES = frozenset({"done", "failed", "dead_lettered"})

_log: Any = None


def record_stage(stage: str, *, order_id: Any = None, channel: str | None = None,
                 accepted_at: float | None = None, registry: Any = None, **fields: Any) -> None:
    """Record that an order reached ``stage``.

    Increments ``obskit_order_stage_transitions_total{stage,channel}``, adds a span event
    ``order.stage`` on the current span, writes one log line ``order stage`` with the order id,
    and, with a journey store (``journey_url``), queues the hop for it (whatever the sampling).
    ``order_id``/``channel`` default to the active ``order_context``. ``accepted_at`` (a Unix
    timestamp) also observes ``obskit_order_stage_age_seconds``. Never raises.
    """
    global _log
    try:
        ctx_id, ctx_channel = current_order()
        oid = str(order_id) if order_id is not None else ctx_id
        ch = channel or ctx_channel or "unknown"
        cat = catalogue(registry)
        cat.order_stage.labels(stage, ch).inc()
        if accepted_at is not None:
            observe(cat.order_stage_age.labels(stage, ch), max(0.0, time.time() - accepted_at))
        span = trace.get_current_span()
        if oid is not None and journey._running_writer is not None:
            sc = span.get_span_context()
            journey.record(oid, stage, ch, time.time(),
                           format(sc.trace_id, "032x") if sc.is_valid else None, fields)
        if span.is_recording():
            attrs = {"order.stage": stage, "order.channel": ch}
            if oid is not None:
                attrs["order.id"] = oid
            span.add_event("order.stage", attrs)
        if _log is None:
            from obskit._logging import get_logger

            _log = get_logger("obskit.orders")
        kv = {"order_id": oid} if oid is not None else {}
        _log.info("order stage", stage=stage, channel=ch, **kv, **fields)
    except Exception as exc:
        from obskit._internal import internal_error

        internal_error("orders.record_stage", exc)
