"""What the pika and aio-pika integrations share: publish and delivery bookkeeping for AMQP.

A *delivery* is one message being handled by user code. It owns a CONSUMER span
``<queue> process`` whose **parent** is the producer's span (from the ``traceparent`` header), so
publisher and consumer share one trace; the order baggage from the ``baggage`` header is made
current with it. A link would be the choice for batch consumers (one span, many producers);
a single-message handler is a continuation of the request that published it, and "one trace per
order" is what on-call engineers search for.

Every function here swallows its own failures (``internal_error``): telemetry must never lose or
break a message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, Status, StatusCode

from obskit import propagation
from obskit._fastspan import FastTracer
from obskit._internal import internal_error
from obskit._semconv import (  # noqa: F401 - re-exported for the integrations
    ATTR_BODY_SIZE,
    ATTR_CONVERSATION_ID,
    ATTR_DELIVERY_TAG,
    ATTR_DESTINATION,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_REDELIVERED,
    ATTR_ROUTING_KEY,
    ATTR_SUBSCRIPTION,
    ATTR_SYSTEM,
    DEFAULT_EXCHANGE,
    KIND_CONSUMER,
    KIND_PRODUCER,
    MESSAGING_SYSTEM_RABBITMQ,
)
from obskit.metrics import observe_span

SYSTEM = MESSAGING_SYSTEM_RABBITMQ

#: ``outcome`` label of ``messaging_process_duration_seconds`` for raw-client deliveries.
OUTCOMES = ("ack", "requeue", "reject", "error", "auto_ack", "unsettled")


@dataclass
class Instruments:
    """Tracer and metric families one integration records with (set by ``instrument()``)."""

    tracer: FastTracer
    catalogue: Any
    component: str

    def report(self, exc: BaseException) -> None:
        internal_error(self.component, exc)

    @classmethod
    def of(cls, handle: Any, integration: str) -> Instruments:
        """The instruments of ``integration`` (``"pika"``, ``"aio_pika"``) under ``handle``."""
        tracer = trace.get_tracer(f"obskit.integrations.{integration}",
                                  tracer_provider=handle.tracer_provider)
        return cls(FastTracer(tracer), handle.catalogue, f"integration.{integration}")


def enabled() -> bool:
    """False inside ``opentelemetry.instrumentation.utils.suppress_instrumentation()``.

    A higher-level layer that records its own spans and metrics for a publish or a consumer
    (obskit.rabbitmq) suppresses ours there to avoid counting a message twice.
    """
    return is_instrumentation_enabled()


def routing_key_label(routing_key: str | None) -> str:
    """Bounded metric label: server-named reply queues (amq.gen-...) fold into one value."""
    rk = routing_key or ""
    if rk.startswith("amq.gen-"):
        return "amq.gen-*"
    return rk


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# --- publish ----------------------------------------------------------------------------------

def start_publish(ins: Instruments, exchange: str | None, routing_key: str | None,
                  headers: Mapping[str, Any] | None, message_id: Any = None,
                  correlation_id: Any = None, body_size: int | None = None,
                  ) -> tuple[Span | None, Any, dict[str, Any] | None]:
    """Start the PRODUCER span; return ``(span, token, headers to send)``.

    The returned headers are a *new* dict (the caller's message is never mutated) with
    ``traceparent``/``baggage`` of the publish span. ``(None, None, None)`` when suppressed
    or on an internal error: the caller publishes the message unchanged.
    """
    try:
        if not enabled():
            return None, None, None
        dest = exchange or DEFAULT_EXCHANGE
        attrs: dict[str, Any] = {
            ATTR_SYSTEM: SYSTEM,
            ATTR_DESTINATION: dest,
            ATTR_ROUTING_KEY: routing_key or "",
            ATTR_OPERATION_TYPE: "publish",
            ATTR_OPERATION_NAME: "publish",
        }
        if message_id is not None:
            attrs[ATTR_MESSAGE_ID] = _str(message_id)
        if correlation_id is not None:
            attrs[ATTR_CONVERSATION_ID] = _str(correlation_id)
        if body_size is not None:
            attrs[ATTR_BODY_SIZE] = body_size
        span = ins.tracer.start_span(f"{dest} publish", kind=KIND_PRODUCER, attributes=attrs)
        ctx = trace.set_span_in_context(span)
        new_headers: dict[str, Any] = dict(headers or {})
        propagation.inject(new_headers, context=ctx)
        token = otel_context.attach(ctx)
        ins.catalogue.msg_published.labels(SYSTEM, exchange or "",
                                           routing_key_label(routing_key)).inc()
        return span, token, new_headers
    except Exception as exc:
        ins.report(exc)
        return None, None, None


def end_publish(ins: Instruments, span: Span | None, token: Any,
                error: BaseException | None = None) -> None:
    if span is None:
        return
    try:
        if token is not None:
            otel_context.detach(token)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.set_attribute("error.type", type(error).__qualname__)
        span.end()
    except Exception as exc:
        ins.report(exc)


# --- deliveries -------------------------------------------------------------------------------

@dataclass
class Delivery:
    """One message being handled: its span, the context made current, its outcome."""

    ins: Instruments
    queue: str
    span: Span
    ctx: Context
    started: float
    auto_ack: bool
    token: Any = None
    previous: Context | None = None
    outcome: str | None = None  # set by ack/nack/reject wrappers
    error: BaseException | None = None
    ended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def settle(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome

    def fail(self, error: BaseException) -> None:
        try:
            if self.error is None:
                self.error = error
                self.span.record_exception(error)
                self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                self.span.set_attribute("error.type", type(error).__qualname__)
        except Exception as exc:
            self.ins.report(exc)


def start_delivery(ins: Instruments, *, queue: str, headers: Mapping[str, Any] | None,
                   exchange: str | None, routing_key: str | None, message_id: Any = None,
                   correlation_id: Any = None, body_size: int | None = None,
                   delivery_tag: Any = None, redelivered: bool | None = None,
                   auto_ack: bool = False, base: Context | None = None,
                   attach: bool = True) -> Delivery | None:
    """Start a CONSUMER span in the sender's context and (``attach``) make it current.

    ``base`` is the context the message's context is laid over: an empty ``Context()`` for
    callbacks (a delivery is a new unit of work, whatever was current when the connection was
    opened), the caller's current context for ``get``/iterators (a message without headers then
    continues the caller's trace).
    """
    try:
        if not enabled():
            return None
        if base is None:
            base = otel_context.get_current()
        parent = propagation.extract(headers, context=base)
        attrs: dict[str, Any] = {
            ATTR_SYSTEM: SYSTEM,
            ATTR_DESTINATION: queue,
            ATTR_SUBSCRIPTION: queue,
            ATTR_ROUTING_KEY: routing_key or "",
            ATTR_OPERATION_TYPE: "process",
            ATTR_OPERATION_NAME: "process",
            "messaging.rabbitmq.destination.exchange": exchange or DEFAULT_EXCHANGE,
        }
        if message_id is not None:
            attrs[ATTR_MESSAGE_ID] = _str(message_id)
        if correlation_id is not None:
            attrs[ATTR_CONVERSATION_ID] = _str(correlation_id)
        if body_size is not None:
            attrs[ATTR_BODY_SIZE] = body_size
        if delivery_tag is not None:
            attrs[ATTR_DELIVERY_TAG] = int(delivery_tag)
        if redelivered is not None:
            attrs[ATTR_REDELIVERED] = bool(redelivered)
        span = ins.tracer.start_span(f"{queue or '(unnamed)'} process", context=parent,
                                     kind=KIND_CONSUMER, attributes=attrs)
        ctx = trace.set_span_in_context(span, parent)
        d = Delivery(ins=ins, queue=queue, span=span, ctx=ctx, started=time.perf_counter(),
                     auto_ack=auto_ack)
        ins.catalogue.msg_consumed.labels(SYSTEM, queue).inc()
        if attach:
            d.previous = otel_context.get_current()
            d.token = otel_context.attach(ctx)
        return d
    except Exception as exc:
        ins.report(exc)
        return None


def end_delivery(d: Delivery | None, error: BaseException | None = None) -> None:
    """End the span, record duration and outcome, restore the previous context. Idempotent."""
    if d is None or d.ended:
        return
    d.ended = True
    try:
        if error is not None:
            d.fail(error)
        outcome = d.outcome or ("error" if d.error is not None
                                else "auto_ack" if d.auto_ack else "unsettled")
        elapsed = time.perf_counter() - d.started
        child = d.ins.catalogue.msg_process_duration.labels(SYSTEM, d.queue, outcome)
        observe_span(child, elapsed, d.span)
        d.span.set_attribute("messaging.rabbitmq.outcome", outcome)
        d.span.end()
    except Exception as exc:
        d.ins.report(exc)
    finally:
        _restore(d)


def _restore(d: Delivery) -> None:
    """Undo ``attach`` — only where our context is still the current one.

    Iterators and ``get`` attach in the caller's task/thread and end later (next message, ack);
    if the user's code has moved on to another context meanwhile we leave it alone rather than
    clobber it, and never call ``detach`` across contexts (it would log an error).
    """
    if d.token is None:
        return
    token, d.token = d.token, None
    try:
        if otel_context.get_current() is d.ctx:
            try:
                otel_context._RUNTIME_CONTEXT.detach(token)  # type: ignore[attr-defined]
            except ValueError:  # token from another contextvars.Context (a copied task)
                otel_context.attach(d.previous if d.previous is not None else Context())
    except Exception as exc:
        d.ins.report(exc)
