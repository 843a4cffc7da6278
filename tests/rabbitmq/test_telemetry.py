"""Telemetry never costs a message; the fast header path writes what the W3C propagators write."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from rmq_helpers import sample, wait_for

from obskit import propagation
from obskit.rabbitmq import Consumer, Delivery, Publisher
from obskit.rabbitmq import _propagation as fast


class _BrokenTracer(trace.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("tracer is broken")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer is broken")


class _BrokenProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BrokenTracer()


async def test_a_broken_tracer_provider_loses_no_message(url, topology, registry):
    got: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        got.append(d)

    provider = _BrokenProvider()
    spec = topology.queue("orders.b2c")
    async with Publisher(url, tracer_provider=provider, registry=registry) as pub, \
            Consumer(spec, handler, url=url, tracer_provider=provider, registry=registry):
        # Returns only after the broker's confirm, so the span failure did not stop it.
        mid = await pub.publish("orders", "b2c", {"order_id": "o-1"}, order_id="o-1",
                                channel="b2c")
        await wait_for(lambda: got, what="the handler")
        await wait_for(lambda: sample(registry, "messaging_acked_total", system="rabbitmq",
                                      queue="orders.b2c") == 1, what="the ack")
    assert got[0].message_id == mid
    assert (got[0].order_id, got[0].channel) == ("o-1", "b2c")  # baggage still travels
    assert sample(registry, "messaging_confirmed_total", system="rabbitmq", exchange="orders",
                  routing_key="b2c") == 1
    # Acked before the consumer closed: nothing can have been redelivered since.
    assert sample(registry, "messaging_consumed_total", system="rabbitmq",
                  queue="orders.b2c") == 1


@pytest.mark.parametrize("entries", [
    {"order.id": "A-1001", "order.channel": "b2c"},
    {"order.id": "a b+c/ü%", "order.channel": "b2b"},  # needs percent-encoding
    {"k": ""},
    {"a": "b,c=d"},  # looks like two plain pairs once joined
    {"a,b": "c", "x=y": "z"},
])
def test_fast_headers_match_the_w3c_propagators(entries):
    provider = TracerProvider()
    ctx = Context()
    for k, v in entries.items():
        ctx = baggage.set_baggage(k, v, ctx)
    span = provider.get_tracer("t").start_span("s", ctx)
    ctx = trace.set_span_in_context(span, ctx)
    ours: dict[str, Any] = {}
    fast.inject(ours, span, ctx)
    theirs: dict[str, Any] = {}
    TraceContextTextMapPropagator().inject(theirs, ctx)
    W3CBaggagePropagator().inject(theirs, ctx)
    assert ours == theirs
    # Reading back (as str or as AMQP bytes) gives what the generic extract gives.
    for carrier in (ours, {k: v.encode() for k, v in ours.items()}):
        got, want = fast.extract(carrier), propagation.extract(carrier, Context())
        assert baggage.get_all(got) == baggage.get_all(want)
        assert (trace.get_current_span(got).get_span_context()
                == trace.get_current_span(want).get_span_context())
