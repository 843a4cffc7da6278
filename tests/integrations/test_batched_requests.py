"""A request's metrics and access line are made in the log writer's batch when logs go to a file
or a pipe (every deployed service): a scrape still reads exact figures, the line keeps its
request's time, trace ids and order, and the OTLP log record its trace context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import obskit
from obskit import _deferred
from obskit.integrations import _http
from obskit.testing import OtlpReceiver


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        obskit.get_logger("shop").info("looked up", order=order_id)
        return {"order_id": order_id}

    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://shop.test") as client:
        return await client.get(path)


def _lines(path: Path) -> list[dict[str, Any]]:  # httpx logs each request too: not ours
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def slow_flusher(monkeypatch: pytest.MonkeyPatch) -> None:
    # The flusher thread must not take the batch during the test: a scrape has to.
    monkeypatch.setattr(_deferred, "_paused", True)


async def test_a_scrape_sees_the_batched_request_and_writes_its_line(
        tmp_path: Path, slow_flusher: None) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("shop", registry=registry, log_stream=stream, log_format="json",
                    spans_file="off")
        response = await _get(_app(), "/orders/ord-1")
        assert response.status_code == 200
        assert path.read_text() == ""  # the handler's line and the request wait in the batch
        assert any(isinstance(item, _http.FinishedRequest) for item in _deferred._pending)

        labels = {"method": "GET", "route": "/orders/{order_id}", "status_code": "200"}
        count = registry.get_sample_value("http_server_request_duration_seconds_count", labels)
        assert count == 1.0  # the scrape wrote the batch first
        assert registry.get_sample_value("http_server_active_requests", {"method": "GET"}) == 0
        handler_line, access_line = [  # in the order they happened
            line for line in _lines(path) if line["logger"] in ("shop", "obskit.access")]
        assert handler_line["event"] == "looked up"
        assert access_line["event"] == "GET /orders/ord-1 200"
        assert access_line["request_id"] == response.headers["x-request-id"]
        assert access_line["trace_id"] == handler_line["trace_id"]
        assert access_line["span_id"] == handler_line["span_id"]
        assert access_line["timestamp"] > handler_line["timestamp"]
        obskit.shutdown()


async def test_shutdown_writes_the_requests_still_in_the_batch(tmp_path: Path,
                                                               slow_flusher: None) -> None:
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("shop", registry=CollectorRegistry(), log_stream=stream, log_format="json",
                    spans_file="off", log_level="WARNING")
        app = _app()
        for i in range(3):
            assert (await _get(app, f"/orders/{i}")).status_code == 200
        registry = obskit.get_handle().catalogue.registry  # type: ignore[union-attr]
        assert path.read_text() == ""
        obskit.shutdown()
    # Access lines are INFO (switched off here): the batch made the metrics and wrote nothing.
    assert path.read_text() == ""
    labels = {"method": "GET", "route": "/orders/{order_id}", "status_code": "200"}
    assert registry.get_sample_value("http_server_request_duration_seconds_count", labels) == 3


async def test_the_exported_access_record_carries_its_requests_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_flusher: None) -> None:
    with OtlpReceiver("http/protobuf") as receiver, (tmp_path / "out.log").open("w") as stream:
        for key, value in receiver.env().items():
            monkeypatch.setenv(key, value)
        obskit.init("shop", registry=CollectorRegistry(), log_stream=stream, log_format="json",
                    spans_file="off")
        assert (await _get(_app(), "/orders/ord-9")).status_code == 200
        obskit.shutdown()  # the batch is written (and exported) in this thread, outside the request
        (span,) = receiver.wait_for_spans(lambda s: any(x.kind == "SERVER" for x in s))
        logs = receiver.wait_for_logs(lambda ls: len(ls) >= 2)
    access = next(log for log in logs if log.attributes.get("logger") == "obskit.access")
    assert access.body == "GET /orders/ord-9 200"
    assert (access.trace_id, access.span_id) == (span.trace_id, span.span_id)


def test_a_flask_request_is_batched_the_same_way(tmp_path: Path, slow_flusher: None) -> None:
    import flask

    app = flask.Flask("shop")

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> dict[str, str]:
        with obskit.order_context(order_id, channel="b2b"):
            obskit.get_logger("shop").info("looked up")
        return {"order_id": order_id}

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    registry = CollectorRegistry()
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("shop", registry=registry, log_stream=stream, log_format="json",
                    spans_file="off")
        client = app.test_client()
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        response = client.get("/orders/ord-4", buffered=True, headers={
            "traceparent": f"00-{trace_id}-b7ad6b7169203331-01",
            "baggage": "order.id=ord-caller"})
        assert response.status_code == 200
        assert client.get("/ping", buffered=True, headers={
            "baggage": "order.id=ord-caller,order.channel=b2c"}).status_code == 200
        assert path.read_text() == ""
        labels = {"method": "GET", "route": "/orders/<order_id>", "status_code": "200"}
        assert registry.get_sample_value("http_server_request_duration_seconds_count",
                                         labels) == 1.0
        assert registry.get_sample_value("http_server_active_requests", {"method": "GET"}) == 0
        handler_line, access_line, ping_line = [
            line for line in _lines(path) if line["logger"] in ("shop", "obskit.access")]
        obskit.shutdown()
    assert handler_line["order_id"] == access_line["order_id"] == "ord-4"  # the handler's
    assert access_line["channel"] == "b2b"
    assert access_line["trace_id"] == handler_line["trace_id"] == trace_id
    assert access_line["request_id"] == response.headers["x-request-id"]
    # No order of its own: the caller's, from the baggage read while the request was current.
    assert (ping_line["order_id"], ping_line["channel"]) == ("ord-caller", "b2c")
