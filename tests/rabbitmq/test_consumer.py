"""Consumer: retries, DLQ with error headers, parse failures, replay, idempotency, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aio_pika
from opentelemetry import baggage
from opentelemetry.trace import SpanKind
from rmq_helpers import REDIS_URL, queue_depth, sample, wait_for

from obskit import current_order
from obskit.cli import main as cli_main
from obskit.rabbitmq import (
    Consumer,
    DeadLetterQueues,
    Delivery,
    PermanentError,
    Publisher,
    RedisIdempotency,
)


async def test_fails_twice_then_succeeds_is_applied_once_with_two_retries(
        url, vhost, mgmt, topology, registry):
    calls: Counter[str] = Counter()
    applied: list[str] = []

    async def handler(d: Delivery) -> None:
        calls[d.message_id] += 1
        assert d.attempt == calls[d.message_id]
        if calls[d.message_id] <= 2:
            raise ConnectionError("MES database busy")
        applied.append(d.data["order_id"])

    spec = topology.queue("orders.b2c")
    async with Publisher(url, registry=registry) as pub, \
            Consumer(spec, handler, url=url, registry=registry):
        await pub.publish("orders", "b2c", {"order_id": "o-1"}, order_id="o-1", channel="b2c")
        await wait_for(lambda: applied, what="the third attempt")
        await wait_for(lambda: sample(registry, "messaging_acked_total", system="rabbitmq",
                                      queue="orders.b2c") == 1, what="the ack")
        # Nothing left in a retry tier, the DLQ or the queue (checked last: a copy on its way
        # back from a tier lands there): no other copy can arrive, the counts below are final.
        for name in (*spec.retry_queues, spec.dlq, spec.name):
            await wait_for(lambda name=name: _eq(queue_depth(mgmt, vhost, name), 0),
                           what=f"{name} to be empty")
    assert applied == ["o-1"]
    assert sum(calls.values()) == 3
    q = {"system": "rabbitmq", "queue": "orders.b2c"}
    assert sample(registry, "messaging_retried_total", error_type="ConnectionError", **q) == 2
    assert sample(registry, "messaging_acked_total", **q) == 1
    assert sample(registry, "messaging_consumed_total", **q) == 3
    assert sample(registry, "messaging_dead_lettered_total", error_type="ConnectionError",
                  **q) == 0
    assert sample(registry, "messaging_process_duration_seconds_count", outcome="retry",
                  **q) == 2


async def test_always_failing_message_lands_in_dlq_after_n_attempts_with_error_headers(
        url, vhost, mgmt, topology, registry):
    calls = 0

    async def handler(d: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError("pricing service timed out")

    spec = topology.queue("orders.b2c")
    async with Publisher(url, registry=registry) as pub, \
            Consumer(spec, handler, url=url, registry=registry):
        mid = await pub.publish("orders", "b2c", {"order_id": "o-2"}, order_id="o-2")
        await wait_for(lambda: queue_depth(mgmt, vhost, spec.dlq), what="the DLQ")
    assert calls == spec.max_attempts == 3
    async with DeadLetterQueues(url) as dlq:
        [letter] = await dlq.show(spec.dlq)
    assert letter.message_id == mid
    assert letter.error_type == "TimeoutError"
    assert letter.error_message == "pricing service timed out"
    assert letter.attempts == 3
    assert letter.reason == "exhausted"
    assert letter.first_failure and letter.last_failure
    assert letter.first_failure < letter.last_failure
    assert letter.service
    assert letter.original_queue == "orders.b2c"
    assert letter.order_id == "o-2"
    assert letter.trace_id is None or len(letter.trace_id) == 32
    assert json.loads(letter.body_preview) == {"order_id": "o-2"}
    assert sample(registry, "messaging_dead_lettered_total", system="rabbitmq",
                  queue="orders.b2c", error_type="TimeoutError") == 1
    assert await queue_depth(mgmt, vhost, "orders.b2c") == 0


async def test_unparseable_body_goes_to_dlq_at_once_and_replay_brings_it_back(
        url, vhost, mgmt, topology, registry):
    seen: list[object] = []
    fixed = False

    def parse(body: bytes) -> object:
        # The "bug": a body with a trailing comma. The fixed parser tolerates it.
        text = body.decode()
        return json.loads(text.replace(",}", "}") if fixed else text)

    async def handler(d: Delivery) -> None:
        seen.append(d.data)

    spec = topology.queue("orders.b2b")
    async with Publisher(url, registry=registry) as pub:
        c = Consumer(spec, handler, url=url, registry=registry, parse=lambda b: parse(b))
        async with c:
            mid = await pub.publish("orders", "b2b", b'{"order_id": "o-3",}',
                                    content_type="application/json", order_id="o-3")
            await wait_for(lambda: queue_depth(mgmt, vhost, spec.dlq), what="the DLQ")
        assert seen == []
        async with DeadLetterQueues(url) as dlq:
            [letter] = await dlq.show(spec.dlq)
        assert letter.attempts == 1  # no retry for a body that cannot parse
        assert letter.reason == "permanent"
        assert letter.error_type == "obskit.rabbitmq.errors.MessageParseError"
        assert sample(registry, "messaging_retried_total", system="rabbitmq",
                      queue="orders.b2b", error_type="MessageParseError") == 0

        fixed = True  # deploy the fix, then replay from the on-call CLI
        async with c:
            rc = await asyncio.to_thread(cli_main, ["dlq", "replay", spec.dlq, "--all",
                                                    "--vhost", vhost, "--no-progress"])
            assert rc == 0
            await wait_for(lambda: seen, what="the replayed message")
    assert seen == [{"order_id": "o-3"}]
    assert await queue_depth(mgmt, vhost, spec.dlq) == 0
    assert await queue_depth(mgmt, vhost, spec.name) == 0
    del mid


async def test_permanent_error_and_validation_error_skip_retries(url, vhost, mgmt, topology,
                                                                 registry):
    class ValidationError(Exception):  # the name pydantic/jsonschema use
        pass

    async def handler(d: Delivery) -> None:
        if d.data["kind"] == "permanent":
            raise PermanentError("unknown material 'unobtainium'")
        raise ValidationError("quantity must be > 0")

    spec = topology.queue("orders.b2c")
    async with Publisher(url) as pub, Consumer(spec, handler, url=url, registry=registry):
        await pub.publish("orders", "b2c", {"kind": "permanent"})
        await pub.publish("orders", "b2c", {"kind": "validation"})
        await wait_for(lambda: _eq(queue_depth(mgmt, vhost, spec.dlq), 2), what="2 in DLQ")
    assert sample(registry, "messaging_consumed_total", system="rabbitmq",
                  queue="orders.b2c") == 2  # one delivery each: no retry


async def _eq(aw, value) -> bool:  # type: ignore[no-untyped-def]
    return (await aw) == value


async def test_order_context_and_trace_continue_into_the_handler(url, topology, spans):
    provider, exporter = spans
    got: list[tuple[object, object, object]] = []

    async def handler(d: Delivery) -> None:
        got.append((current_order(), (d.order_id, d.channel), baggage.get_all()))

    spec = topology.queue("orders.b2c")
    async with Publisher(url, tracer_provider=provider) as pub, \
            Consumer(spec, handler, url=url, tracer_provider=provider):
        mid = await pub.publish("orders", "b2c", {"x": 1}, order_id="o-9", channel="b2c")
        await wait_for(lambda: got)
        await wait_for(lambda: any(s.kind == SpanKind.CONSUMER
                                   for s in exporter.get_finished_spans()),
                       what="the process span to end")
    assert got[0][0] == ("o-9", "b2c")
    assert got[0][1] == ("o-9", "b2c")
    by_kind = {s.kind: s for s in exporter.get_finished_spans()}
    pub_span, proc_span = by_kind[SpanKind.PRODUCER], by_kind[SpanKind.CONSUMER]
    assert pub_span.name == "orders publish"
    assert proc_span.name == "orders.b2c process"
    # Parent: the order's trace continues; link: as the messaging conventions recommend.
    assert proc_span.context.trace_id == pub_span.context.trace_id
    assert proc_span.parent.span_id == pub_span.context.span_id
    assert proc_span.links[0].context.span_id == pub_span.context.span_id
    for s in (pub_span, proc_span):
        assert s.attributes["messaging.system"] == "rabbitmq"
        assert s.attributes["messaging.message.id"] == mid
        assert s.attributes["messaging.rabbitmq.destination.routing_key"] == "b2c"
    assert pub_span.attributes["messaging.operation.type"] == "publish"
    assert pub_span.attributes["messaging.destination.name"] == "orders"
    assert proc_span.attributes["messaging.operation.type"] == "process"
    assert proc_span.attributes["messaging.destination.subscription.name"] == "orders.b2c"
    assert proc_span.attributes["messaging.message.delivery_count"] == 1
    assert proc_span.attributes["order.id"] == "o-9"


async def test_redis_guard_applies_a_duplicate_message_id_once(url, topology, registry):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    guard = RedisIdempotency(client, prefix=f"obskit:test:{id(topology)}:")
    applied: list[str] = []

    async def handler(d: Delivery) -> None:
        applied.append(d.message_id or "")

    spec = topology.queue("orders.b2c")
    try:
        async with Publisher(url) as pub, \
                Consumer(spec, handler, url=url, idempotency=guard, registry=registry):
            for _ in range(3):  # a publisher retry after a lost confirm looks like this
                await pub.publish("orders", "b2c", {"n": 1}, message_id="dup-1")
            await wait_for(lambda: sample(registry, "messaging_process_duration_seconds_count",
                                          system="rabbitmq", queue="orders.b2c",
                                          outcome="duplicate") == 2, what="2 duplicates")
        assert applied == ["dup-1"]
    finally:
        await client.delete(f"obskit:test:{id(topology)}:dup-1")
        await client.aclose()


async def test_graceful_shutdown_finishes_in_flight_and_returns_the_rest(
        url, vhost, mgmt, topology):
    started: list[int] = []
    done: list[int] = []

    async def handler(d: Delivery) -> None:
        started.append(d.data["n"])
        await asyncio.sleep(0.3)  # the work stop() finds in flight
        done.append(d.data["n"])

    spec = topology.queue("orders.b2c")
    async with Publisher(url) as pub:
        for n in range(10):
            await pub.publish("orders", "b2c", {"n": n})
        c = Consumer(spec, handler, url=url, prefetch=10, concurrency=2)
        await c.start()
        await wait_for(lambda: len(started) == 2)  # both concurrency slots busy
        await c.stop()
    assert len(done) == 2  # the two in flight finished...
    # ...and were acked; the eight prefetched but not started went back to the queue.
    assert await queue_depth(mgmt, vhost, spec.name) == 8


async def test_generic_aio_pika_instrumentation_does_not_count_twice(url, topology):
    """With obskit.init() instrumenting aio-pika, this layer's messages count once."""
    from obskit.testing import init_for_tests

    got: list[str] = []

    async def handler(d: Delivery) -> None:
        got.append(d.message_id or "")

    with init_for_tests("mes") as t:
        spec = topology.queue("orders.b2c")
        async with Publisher(url) as pub, Consumer(spec, handler, url=url):
            await pub.publish("orders", "b2c", {"n": 1}, order_id="o-5")
            await wait_for(lambda: got)
            # Leaving the block waits for the handler; a second span would have ended by then.
            await wait_for(lambda: "orders.b2c process" in [s.name for s in t.spans],
                           what="the process span to end")
        names = [s.name for s in t.spans]
        assert names.count("orders publish") == 1, names
        assert names.count("orders.b2c process") == 1, names
        assert t.metric("messaging_published_total", {"system": "rabbitmq",
                        "exchange": "orders", "routing_key": "b2c"}) == 1
        assert t.metric("messaging_consumed_total", {"system": "rabbitmq",
                        "queue": "orders.b2c"}) == 1


async def test_handler_may_use_aio_pika_message_and_settle_it_itself(url, vhost, mgmt, topology,
                                                                     registry):
    """Delivery.message is aio-pika's IncomingMessage; a handler's own ack is not repeated."""
    seen: list[tuple[Any, Any]] = []

    async def handler(d: Delivery) -> None:
        m = d.message
        assert isinstance(m, aio_pika.abc.AbstractIncomingMessage)
        seen.append((m.message_id, m.headers.get("baggage")))
        if d.data["n"] == 1:
            await m.ack()  # the handler settles it; obskit must not ack a second time

    spec = topology.queue("orders.b2c")
    async with Publisher(url) as pub:
        c = Consumer(spec, handler, url=url, registry=registry)
        async with c:
            ids = [await pub.publish("orders", "b2c", {"n": n}, order_id=f"o-{n}")
                   for n in (1, 2)]
            await wait_for(lambda: len(seen) == 2)
            # A double ack would close the channel (PRECONDITION_FAILED): one more still flows.
            ids.append(await pub.publish("orders", "b2c", {"n": 3}))
            await wait_for(lambda: len(seen) == 3)
    assert [s[0] for s in seen] == ids
    assert "order.id=o-1" in str(seen[0][1])
    assert await queue_depth(mgmt, vhost, spec.name) == 0
    assert sample(registry, "messaging_acked_total", system="rabbitmq", queue="orders.b2c") == 3


async def test_dependency_unavailable_retries_without_spending_attempts(
        url, vhost, mgmt, topology, registry):
    """An outage longer than max_attempts sends nothing to the DLQ; the message is applied once
    the dependency is back, and it still has all its attempts for real failures."""
    from obskit.rabbitmq import DependencyUnavailable

    runs: list[tuple[int, Any]] = []
    applied: list[str] = []

    async def handler(d: Delivery) -> None:
        runs.append((d.attempt, d.headers.get("x-obskit-unavailable")))
        if len(runs) <= 6:  # twice max_attempts
            raise DependencyUnavailable("database unreachable")
        applied.append(d.data["order_id"])

    spec = topology.queue("orders.b2c")
    async with Publisher(url, registry=registry) as pub, \
            Consumer(spec, handler, url=url, registry=registry):
        await pub.publish("orders", "b2c", {"order_id": "o-9"}, order_id="o-9")
        await wait_for(lambda: applied, what="the run after the outage", timeout=30)
    assert applied == ["o-9"]
    assert await queue_depth(mgmt, vhost, spec.dlq) == 0
    assert [a for a, _ in runs] == [1] * 7  # no attempt spent
    assert [n for _, n in runs] == [None, 1, 2, 3, 4, 5, 6]  # the outage's own count
    q = {"system": "rabbitmq", "queue": "orders.b2c"}
    assert sample(registry, "messaging_dead_lettered_total",
                  error_type="DependencyUnavailable", **q) == 0
    assert sample(registry, "messaging_retried_total", error_type="DependencyUnavailable",
                  **q) == 6
