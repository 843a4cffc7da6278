"""aio-pika instrumentation against the real broker: every consume path runs in the sender's
context (trace + order baggage), under a CONSUMER span that is a child of the PRODUCER span."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import obskit
from obskit.testing import init_for_tests, wait_for_async

aio_pika = pytest.importorskip("aio_pika")

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def channel() -> AsyncIterator[Any]:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:  # pragma: no cover - environment
        pytest.skip(f"RabbitMQ not reachable: {exc}")
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def queue(channel: Any) -> AsyncIterator[Any]:
    q = await channel.declare_queue(f"obskit-test-aio-{uuid.uuid4().hex[:10]}", auto_delete=False)
    yield q
    await q.delete(if_unused=False, if_empty=False)


async def _publish(channel: Any, queue: Any, order_id: str, body: bytes = b"{}",
                   message: Any | None = None) -> None:
    log = obskit.get_logger("shop")
    with trace.get_tracer("test").start_as_current_span("POST /orders"):
        with obskit.order_context(order_id, channel="b2c"):
            log.info("publishing")
            msg = message or aio_pika.Message(body, message_id=f"m-{order_id}")
            await channel.default_exchange.publish(msg, routing_key=queue.name)


def _by_name(spans: Any, name: str) -> list[Any]:
    return [s for s in spans if s.name == name]


def _assert_one_trace(t: Any, queue: str, order_id: str) -> tuple[Any, Any]:
    publish = _by_name(t.spans, "amq.default publish")
    process = _by_name(t.spans, f"{queue} process")
    assert len(publish) == 1 and len(process) == 1, [s.name for s in t.spans]
    pub, proc = publish[0], process[0]
    assert pub.kind == SpanKind.PRODUCER and proc.kind == SpanKind.CONSUMER
    assert proc.context.trace_id == pub.context.trace_id
    assert proc.parent is not None and proc.parent.span_id == pub.context.span_id
    assert proc.attributes["order.id"] == order_id
    assert proc.attributes["order.channel"] == "b2c"
    assert proc.attributes["messaging.system"] == "rabbitmq"
    assert proc.attributes["messaging.operation.type"] == "process"
    assert proc.attributes["messaging.destination.name"] == queue
    return pub, proc


def _handler_log(t: Any) -> dict[str, Any]:
    lines = [line for line in t.logs if line.get("event") == "handling"]
    assert len(lines) == 1, t.logs
    return lines[0]


async def test_publish_span_attributes_headers_and_metric(channel: Any, queue: Any) -> None:
    with init_for_tests("shop") as t:
        original = aio_pika.Message(b"abc", message_id="m-1", headers={"x-app": "1"})
        await _publish(channel, queue, "o-pub", message=original)
        (pub,) = _by_name(t.spans, "amq.default publish")
        a = pub.attributes
        assert a["messaging.system"] == "rabbitmq"
        assert a["messaging.destination.name"] == "amq.default"
        assert a["messaging.rabbitmq.destination.routing_key"] == queue.name
        assert a["messaging.operation.type"] == "publish"
        assert a["messaging.message.id"] == "m-1"
        assert a["messaging.message.body.size"] == 3
        assert a["order.id"] == "o-pub" and a["order.channel"] == "b2c"
        # The caller's message is not mutated; the sent one carries the context.
        assert original.headers == {"x-app": "1"}
        got = await queue.get(timeout=5)
        await got.ack()
        assert got.headers["x-app"] == "1"
        trace_id = format(pub.context.trace_id, "032x")
        assert trace_id in str(got.headers["traceparent"])
        assert "order.id=o-pub" in str(got.headers["baggage"])
        assert t.metric("messaging_published_total", {
            "system": "rabbitmq", "exchange": "", "routing_key": queue.name}) == 1


async def test_consume_callback_runs_in_sender_context(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        seen: list[tuple[str | None, str | None]] = []

        async def handler(message: Any) -> None:
            async with message.process():
                obskit.get_logger("mes").info("handling")
                seen.append(obskit.current_order())

        await queue.consume(handler)
        await _publish(channel, queue, "o-cb")
        await wait_for_async(lambda: len(_by_name(t.spans, f"{queue.name} process")) == 1,
                             timeout=5, interval=0.01, what="the process span")
        pub, proc = _assert_one_trace(t, queue.name, "o-cb")
        assert seen == [("o-cb", "b2c")]
        line = _handler_log(t)
        assert line["trace_id"] == format(pub.context.trace_id, "032x")
        assert line["span_id"] == format(proc.context.span_id, "016x")
        assert line["order_id"] == "o-cb" and line["channel"] == "b2c"
        labels = {"system": "rabbitmq", "queue": queue.name}
        assert t.metric("messaging_consumed_total", labels) == 1
        assert t.metric("messaging_process_duration_seconds_count",
                        {**labels, "outcome": "ack"}) == 1


async def test_consume_callback_error_marks_span_and_outcome(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        async def handler(message: Any) -> None:
            async with message.process(requeue=False):
                raise ValueError("bad model")

        await queue.consume(handler)
        await _publish(channel, queue, "o-err")
        await wait_for_async(lambda: len(_by_name(t.spans, f"{queue.name} process")) == 1,
                             timeout=5, interval=0.01, what="the process span")
        (proc,) = _by_name(t.spans, f"{queue.name} process")
        assert proc.status.status_code == StatusCode.ERROR
        assert proc.attributes["error.type"] == "ValueError"
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue.name, "outcome": "reject"}) == 1


async def test_iterator_loop_body_runs_in_each_senders_context(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        await _publish(channel, queue, "o-it-1")
        await _publish(channel, queue, "o-it-2")
        seen: list[tuple[str | None, str | None]] = []
        trace_ids: list[str] = []
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    await asyncio.sleep(0)  # the context survives awaits in the body
                    obskit.get_logger("mes").info("handling")
                    seen.append(obskit.current_order())
                    trace_ids.append(format(
                        trace.get_current_span().get_span_context().trace_id, "032x"))
                if len(seen) == 2:
                    break
        # The loop's own context is back once the iterator is closed.
        assert obskit.current_order() == (None, None)
        assert not trace.get_current_span().get_span_context().is_valid
        assert seen == [("o-it-1", "b2c"), ("o-it-2", "b2c")]
        publish = _by_name(t.spans, "amq.default publish")
        process = _by_name(t.spans, f"{queue.name} process")
        assert len(process) == 2
        assert trace_ids == [format(p.context.trace_id, "032x") for p in publish]
        for pub, proc in zip(publish, sorted(process, key=lambda s: s.start_time), strict=True):
            assert proc.parent.span_id == pub.context.span_id
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue.name, "outcome": "ack"}) == 2


async def test_iterator_error_in_body_is_recorded(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        await _publish(channel, queue, "o-it-err")
        with pytest.raises(RuntimeError):
            async with queue.iterator() as it:
                async for message in it:
                    await message.ack()
                    raise RuntimeError("boom")
        (proc,) = _by_name(t.spans, f"{queue.name} process")
        assert proc.status.status_code == StatusCode.ERROR
        assert proc.attributes["order.id"] == "o-it-err"
        assert obskit.current_order() == (None, None)


async def test_get_attaches_until_ack(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        await _publish(channel, queue, "o-get")
        message = await queue.get(timeout=5)
        assert obskit.current_order() == ("o-get", "b2c")
        obskit.get_logger("mes").info("handling")
        await message.ack()
        assert obskit.current_order() == (None, None)
        pub, proc = _assert_one_trace(t, queue.name, "o-get")
        assert _handler_log(t)["trace_id"] == format(pub.context.trace_id, "032x")
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue.name, "outcome": "ack"}) == 1


async def test_get_with_process_block(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        await _publish(channel, queue, "o-get-p")
        message = await queue.get(timeout=5)
        async with message.process():
            obskit.get_logger("mes").info("handling")
        assert obskit.current_order() == (None, None)
        _assert_one_trace(t, queue.name, "o-get-p")
        assert _handler_log(t)["order_id"] == "o-get-p"


async def test_uninstrument_stops_tracing(channel: Any, queue: Any) -> None:
    with init_for_tests("mes") as t:
        pass
    assert t.spans == ()
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
    message = await queue.get(timeout=5)
    await message.ack()
    assert "traceparent" not in (message.headers or {})


async def test_broken_telemetry_never_loses_a_message(channel: Any, queue: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from obskit.integrations import _amqp

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("telemetry bug")

    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")
    with init_for_tests("mes"):
        monkeypatch.setattr(_amqp.propagation, "inject", boom)
        monkeypatch.setattr(_amqp.propagation, "extract", boom)
        await channel.default_exchange.publish(aio_pika.Message(b"payload"),
                                               routing_key=queue.name)
        got: list[bytes] = []

        async def handler(message: Any) -> None:
            async with message.process():
                got.append(message.body)

        await queue.consume(handler)
        await wait_for_async(lambda: got == [b"payload"], timeout=5, interval=0.01,
                             what="the payload")
        assert (await queue.declare()).message_count == 0  # acked, not lost
