"""One order, one trace, two processes: HTTP request -> FastAPI shop -> RabbitMQ -> MES ->
PostgreSQL, every span received by an OTLP receiver the test runs, and every log line of both
processes carrying the order's trace_id and order_id.

Real RabbitMQ and PostgreSQL; the services are subprocesses (tests/e2e/apps/) that only call
``obskit.init()`` and are configured by the standard OTEL_* variables.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from obskit.testing import OtlpReceiver, ReceivedSpan

ACCESS_LOGGERS = {"obskit.access", "uvicorn.access"}

CASES = [
    # (publisher client, consumer script, consumer mode, OTLP protocol)
    pytest.param("aio_pika", "mes_aio_pika.py", "iterator", "grpc", id="aio_pika-grpc"),
    pytest.param("pika", "mes_pika.py", "callback", "http/protobuf", id="pika-http"),
    pytest.param("pika", "mes_pika.py", "generator", "grpc", id="pika-generator-grpc"),
]


@pytest.mark.parametrize(("client", "consumer", "mode", "protocol"), CASES)
def test_one_trace_from_http_request_to_database(stack: Any, client: str, consumer: str,
                                                 mode: str, protocol: str) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    with OtlpReceiver(protocol) as rx:
        env = rx.env()
        mes = stack.start("mes", [f"tests/e2e/apps/{consumer}"], E2E_MODE=mode, **env)
        port = stack.free_port()
        shop = stack.start("shop", ["-m", "uvicorn", "shop:app", "--app-dir", "tests/e2e/apps",
                                    "--port", str(port), "--no-access-log"],
                           E2E_CLIENT=client, **env)
        stack.wait_for_port(port, shop.proc)

        response = httpx.post(f"http://127.0.0.1:{port}/orders/{order_id}", timeout=10)
        assert response.status_code == 202

        mes.wait(timeout=30)  # exits after one message, flushing its telemetry
        shop.stop()
        assert mes.proc.returncode == 0, mes.stderr
        assert stack.stored_orders() == [order_id]

        def complete(spans: list[ReceivedSpan]) -> bool:
            return (any(s.kind == "SERVER" and s.service_name == "shop" for s in spans)
                    and any(s.kind == "CONSUMER" and s.service_name == "mes" for s in spans)
                    and any(_is_db(s) for s in spans))

        spans = rx.wait_for_spans(complete, timeout=5)
        logs = rx.logs

    (server,) = [s for s in spans if s.kind == "SERVER" and s.service_name == "shop"]
    trace_id = server.trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    summary = [(s.service_name, s.kind, s.name) for s in spans]

    # One trace across both processes: server -> publish -> process -> DB.
    (publish,) = [s for s in in_trace if s.kind == "PRODUCER"]
    (process,) = [s for s in in_trace if s.kind == "CONSUMER"]
    dbs = [s for s in in_trace if _is_db(s)]
    assert publish.service_name == "shop", summary
    assert process.service_name == "mes", summary
    assert dbs and all(s.service_name == "mes" for s in dbs), summary
    assert process.parent_span_id == publish.span_id
    assert publish.name == "amq.default publish"
    assert process.name == f"{stack.queue} process"
    assert any(s.parent_span_id == process.span_id for s in dbs), summary
    # The order arrived with the message (baggage) and is on the consumer's spans.
    for span in (publish, process, *dbs):
        assert span.attributes.get("order.id") == order_id, span
        assert span.attributes.get("order.channel") == "b2c", span
    assert process.attributes["messaging.system"] == "rabbitmq"
    assert process.attributes["messaging.message.id"] == f"m-{order_id}"

    for service in stack.services:  # telemetry swallowed no error along the way
        assert "obskit internal error" not in service.stdout + service.stderr, service.name

    # Every log line emitted inside the request / the handler carries the trace and the order.
    for service, events in ((stack.services[1], {"order accepted", "order published"}),
                            (stack.services[0], {"order received", "order stored"})):
        lines = service.logs
        assert events <= {line.get("event") for line in lines}, (service.name, service.stdout)
        traced = [line for line in lines if "trace_id" in line]
        assert traced, service.stdout
        for line in traced:
            assert line["trace_id"] == trace_id, (service.name, line)
            if line.get("logger") in ACCESS_LOGGERS:
                # Written when the response is sent, after the endpoint's order_context ended:
                # they carry the trace, not the order.
                continue
            assert line.get("order_id") == order_id, (service.name, line)
            assert line.get("channel") == "b2c", (service.name, line)

    # The same lines went out as OTel log records, correlated with the trace.
    exported = {(r.service_name, str(r.body)) for r in logs if r.trace_id == trace_id}
    assert ("mes", "order received") in exported and ("shop", "order accepted") in exported


def _is_db(span: ReceivedSpan) -> bool:
    attrs: dict[str, Any] = span.attributes
    return span.kind == "CLIENT" and (attrs.get("db.system") == "postgresql"
                                      or attrs.get("db.system.name") == "postgresql")
