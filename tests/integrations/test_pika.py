"""pika instrumentation against the real broker: basic_consume callbacks, the consume()
generator and basic_get all run in the sender's context under a CONSUMER span that is a child of
the PRODUCER span."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import obskit
from obskit.testing import init_for_tests

pika = pytest.importorskip("pika")

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def channel() -> Iterator[Any]:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception as exc:  # pragma: no cover - environment
        pytest.skip(f"RabbitMQ not reachable: {exc}")
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def queue(channel: Any) -> Iterator[str]:
    name = f"obskit-test-pika-{uuid.uuid4().hex[:10]}"
    channel.queue_declare(name)
    yield name
    if channel.is_open:
        channel.queue_delete(name)


def _publish(channel: Any, queue: str, order_id: str, properties: Any = None) -> None:
    with trace.get_tracer("test").start_as_current_span("POST /orders"):
        with obskit.order_context(order_id, channel="b2c"):
            channel.basic_publish("", queue, b'{"x": 1}',
                                  properties or pika.BasicProperties(message_id=f"m-{order_id}"))


def _spans(t: Any, name: str) -> list[Any]:
    return [s for s in t.spans if s.name == name]


def _assert_child_of_publish(t: Any, queue: str, order_ids: list[str]) -> list[Any]:
    publish = _spans(t, "amq.default publish")
    process = sorted(_spans(t, f"{queue} process"), key=lambda s: s.start_time)
    assert len(publish) == len(process) == len(order_ids), [s.name for s in t.spans]
    for pub, proc, oid in zip(publish, process, order_ids, strict=True):
        assert pub.kind == SpanKind.PRODUCER and proc.kind == SpanKind.CONSUMER
        assert proc.context.trace_id == pub.context.trace_id
        assert proc.parent.span_id == pub.context.span_id
        assert proc.attributes["order.id"] == oid
        assert proc.attributes["order.channel"] == "b2c"
        assert proc.attributes["messaging.message.id"] == f"m-{oid}"
    return process


def _handler_lines(t: Any) -> list[dict[str, Any]]:
    return [line for line in t.logs if line.get("event") == "handling"]


def test_publish_span_headers_and_metric(channel: Any, queue: str) -> None:
    with init_for_tests("shop") as t:
        props = pika.BasicProperties(message_id="m-1", headers={"x-app": "1"})
        _publish(channel, queue, "o-pub", props)
        (pub,) = _spans(t, "amq.default publish")
        a = pub.attributes
        assert a["messaging.system"] == "rabbitmq"
        assert a["messaging.destination.name"] == "amq.default"
        assert a["messaging.rabbitmq.destination.routing_key"] == queue
        assert a["messaging.operation.type"] == "publish"
        assert a["messaging.message.body.size"] == 8
        assert a["order.id"] == "o-pub"
        assert props.headers == {"x-app": "1"}  # the caller's properties are not mutated
        method, got, _ = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert got.headers["x-app"] == "1"
        assert format(pub.context.trace_id, "032x") in got.headers["traceparent"]
        assert "order.id=o-pub" in got.headers["baggage"]
        assert t.metric("messaging_published_total", {
            "system": "rabbitmq", "exchange": "", "routing_key": queue}) == 1


def test_basic_consume_callback_runs_in_sender_context(channel: Any, queue: str) -> None:
    with init_for_tests("mes") as t:
        _publish(channel, queue, "o-cb")
        seen: list[Any] = []

        def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            obskit.get_logger("mes").info("handling")
            seen.append(obskit.current_order())
            ch.basic_ack(method.delivery_tag)
            ch.stop_consuming()

        channel.basic_consume(queue, handler)
        channel.connection.call_later(5, channel.stop_consuming)
        channel.start_consuming()
        assert seen == [("o-cb", "b2c")]
        (proc,) = _assert_child_of_publish(t, queue, ["o-cb"])
        (line,) = _handler_lines(t)
        assert line["trace_id"] == format(proc.context.trace_id, "032x")
        assert line["span_id"] == format(proc.context.span_id, "016x")
        assert line["order_id"] == "o-cb" and line["channel"] == "b2c"
        labels = {"system": "rabbitmq", "queue": queue}
        assert t.metric("messaging_consumed_total", labels) == 1
        assert t.metric("messaging_process_duration_seconds_count",
                        {**labels, "outcome": "ack"}) == 1
        assert obskit.current_order() == (None, None)


def test_basic_consume_callback_error(channel: Any, queue: str) -> None:
    with init_for_tests("mes") as t:
        _publish(channel, queue, "o-err")

        def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            ch.basic_nack(method.delivery_tag, requeue=False)
            raise ValueError("bad model")

        channel.basic_consume(queue, handler)
        with pytest.raises(ValueError, match="bad model"):
            channel.start_consuming()
        (proc,) = _spans(t, f"{queue} process")
        assert proc.status.status_code == StatusCode.ERROR
        assert proc.attributes["error.type"] == "ValueError"
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue, "outcome": "reject"}) == 1


def test_consume_generator_loop_body_runs_in_each_senders_context(channel: Any,
                                                                   queue: str) -> None:
    with init_for_tests("mes") as t:
        _publish(channel, queue, "o-gen-1")
        _publish(channel, queue, "o-gen-2")
        seen: list[Any] = []
        for method, _props, _body in channel.consume(queue, inactivity_timeout=5):
            assert method is not None, "timed out"
            obskit.get_logger("mes").info("handling")
            seen.append(obskit.current_order())
            channel.basic_ack(method.delivery_tag)
            if len(seen) == 2:
                break
        channel.cancel()
        assert obskit.current_order() == (None, None)  # break closed the generator
        assert seen == [("o-gen-1", "b2c"), ("o-gen-2", "b2c")]
        process = _assert_child_of_publish(t, queue, ["o-gen-1", "o-gen-2"])
        lines = _handler_lines(t)
        assert [line["trace_id"] for line in lines] == [
            format(p.context.trace_id, "032x") for p in process]
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue, "outcome": "ack"}) == 2


def test_basic_get_attaches_until_ack(channel: Any, queue: str) -> None:
    with init_for_tests("mes") as t:
        _publish(channel, queue, "o-get")
        method, _props, _body = channel.basic_get(queue)
        assert method is not None
        assert obskit.current_order() == ("o-get", "b2c")
        obskit.get_logger("mes").info("handling")
        channel.basic_ack(method.delivery_tag)
        assert obskit.current_order() == (None, None)
        (proc,) = _assert_child_of_publish(t, queue, ["o-get"])
        assert _handler_lines(t)[0]["order_id"] == "o-get"
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue, "outcome": "ack"}) == 1


def test_basic_get_nack_requeue_outcome(channel: Any, queue: str) -> None:
    with init_for_tests("mes") as t:
        _publish(channel, queue, "o-nack")
        method, _props, _body = channel.basic_get(queue)
        channel.basic_nack(method.delivery_tag)  # pika's default: requeue
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue, "outcome": "requeue"}) == 1
        method, _props, _body = channel.basic_get(queue, auto_ack=True)
        assert method is not None and method.redelivered
        # auto_ack: settled by the broker; the span ends at the next get.
        assert obskit.current_order() == ("o-nack", "b2c")
        assert channel.basic_get(queue) == (None, None, None)
        assert obskit.current_order() == (None, None)
        assert t.metric("messaging_process_duration_seconds_count", {
            "system": "rabbitmq", "queue": queue, "outcome": "auto_ack"}) == 1


def test_uninstrumented_after_shutdown(channel: Any, queue: str) -> None:
    with init_for_tests("mes"):
        pass
    channel.basic_publish("", queue, b"x")
    method, props, _ = channel.basic_get(queue, auto_ack=True)
    assert method is not None
    assert "traceparent" not in (props.headers or {})


def test_broken_telemetry_never_loses_a_message(channel: Any, queue: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from obskit.integrations import _amqp

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("telemetry bug")

    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")
    with init_for_tests("mes"):
        monkeypatch.setattr(_amqp.propagation, "inject", boom)
        monkeypatch.setattr(_amqp.propagation, "extract", boom)
        channel.basic_publish("", queue, b"payload")
        got: list[bytes] = []

        def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            ch.stop_consuming()

        channel.basic_consume(queue, handler)
        channel.connection.call_later(5, channel.stop_consuming)
        channel.start_consuming()
        assert got == [b"payload"]
