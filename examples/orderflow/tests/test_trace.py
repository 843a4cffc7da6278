"""One order is one trace: ingress → CRM (outbox) → relay → RabbitMQ → MES → status consumer.

A second stack of real processes with tracing on, exporting to an OTLP receiver the test runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from conftest import Procs, _free_port, _ready, isolated_services, wait_for

from obskit.testing import OtlpReceiver

ORDER = {"customer_email": "trace@example.com",
         "model": {"name": "bracket.stl", "volume_cm3": 12.5, "material": "PETG",
                   "quality": "standard"},
         "quantity": 2}


@pytest.fixture
def traced_stack(env: dict[str, str]) -> Any:
    # A database and vhost of its own: the session's untraced relay and status consumer must
    # not pick up this order's outbox row or status events.
    with isolated_services("orderflow_trace") as own, OtlpReceiver("grpc") as receiver:
        traced_env = {k: v for k, v in env.items() if k != "OTEL_SDK_DISABLED"}
        traced_env.update(receiver.env())
        traced_env.update({
            "OBSKIT_LOG_LEVEL": "INFO",
            "ORDERFLOW_DATABASE_URL": own.dsn,
            "ORDERFLOW_READ_DATABASE_URL": own.dsn,
            "ORDERFLOW_RABBITMQ_URL": own.amqp_url,
        })
        procs = Procs(traced_env)
        port = _free_port()
        for args in (("api", "--port", str(port)), ("relay",), ("status",),
                     ("mes", "--worker-id", f"trace-{uuid.uuid4().hex[:6]}")):
            procs.start(*args)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(base), timeout=30, what="ingress /readyz")
            yield base, receiver
        finally:
            procs.stop_all()


def test_one_order_is_one_trace_across_every_process(traced_stack: Any) -> None:
    base, receiver = traced_stack
    r = httpx.post(base + "/api/v1/shop/orders", json=ORDER, timeout=10)
    assert r.status_code == 202, r.text
    order_id = r.json()["order_id"]

    def done() -> bool:
        status = httpx.get(base + r.json()["status_url"], timeout=5).json()
        return status["status"] == "done"

    wait_for(done, timeout=60, what=f"order {order_id} done")

    def order_spans(spans: list[Any]) -> list[Any]:
        return [s for s in spans if s.attributes.get("order.id") == order_id]

    def every_hop_seen(spans: list[Any]) -> bool:
        services = {s.service_name for s in order_spans(spans)}
        return {"ingress", "crm-relay", "mes", "crm-status"} <= services

    spans = order_spans(receiver.wait_for_spans(every_hop_seen, timeout=30))
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, {(s.service_name, s.name, s.trace_id) for s in spans}
    (trace_id,) = trace_ids
    kinds = {(s.service_name, s.kind) for s in spans}
    assert ("ingress", "SERVER") in kinds
    assert ("crm-relay", "PRODUCER") in kinds and ("mes", "CONSUMER") in kinds
    # the order's log lines, from every process, carry the same trace id
    logs = receiver.wait_for_logs(
        lambda ls: {"ingress", "mes"} <= {lg.service_name for lg in ls
                                          if lg.attributes.get("order_id") == order_id})
    # (the test's own status polls are separate requests, hence separate traces)
    order_logs = [lg for lg in logs if lg.attributes.get("order_id") == order_id
                  and lg.attributes.get("method") != "GET"]
    assert order_logs
    strays = [(lg.service_name, lg.attributes.get("logger"), lg.body) for lg in order_logs
              if lg.trace_id != trace_id]
    assert not strays
