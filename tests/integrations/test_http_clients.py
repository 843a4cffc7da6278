"""requests and httpx: CLIENT spans, traceparent/baggage injected (the server continues the trace),
``http_client_request_duration_seconds``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
from opentelemetry.trace import SpanKind

import obskit
from obskit.testing import Captured, init_for_tests, wait_for


def check_trace(obs: Captured, body: dict[str, Any]) -> None:
    # The server ends its span just after the response went out.
    wait_for(lambda: len(obs.spans) >= 2, timeout=5, interval=0.01,
             what="the client and the server span")
    spans = obs.spans
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(clients) == 1 and len(servers) == 1, [(s.name, s.kind) for s in spans]
    client, server = clients[0], servers[0]
    attrs = client.attributes
    assert attrs.get("http.response.status_code", attrs.get("http.status_code")) == 200
    # The server saw our traceparent and continued the client's trace.
    assert body["traceparent"].split("-")[1] == format(client.context.trace_id, "032x")
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert "order.id=o-42" in body["baggage"]
    assert server.attributes["order.id"] == "o-42"


def client_count(obs: Captured, method: str = "GET", status: str = "200") -> float | None:
    return obs.metric("http_client_request_duration_seconds_count",
                      {"method": method, "server_address": "127.0.0.1", "status_code": status})


def test_requests_span_propagation_and_metric(obs: Captured, http_server: str) -> None:
    with obskit.order_context("o-42", channel="b2b"):
        body = requests.get(f"{http_server}/echo/1", timeout=5).json()
    check_trace(obs, body)
    assert client_count(obs) == 1


def test_httpx_sync_span_propagation_and_metric(obs: Captured, http_server: str) -> None:
    with obskit.order_context("o-42"), httpx.Client() as client:
        body = client.get(f"{http_server}/echo/1").json()
    check_trace(obs, body)
    assert client_count(obs) == 1


async def test_httpx_async_span_propagation_and_metric(obs: Captured, http_server: str) -> None:
    with obskit.order_context("o-42"):
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"{http_server}/echo/1")).json()
    check_trace(obs, body)
    assert client_count(obs) == 1


def test_connection_error_is_counted_and_raised(obs: Captured) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:9/", timeout=2)
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get("http://127.0.0.1:9/")
    assert client_count(obs, status="error") == 2


def test_clients_uninstrument_and_disable() -> None:
    originals = (requests.Session.__dict__["send"],
                 httpx.HTTPTransport.__dict__["handle_request"],
                 httpx.AsyncHTTPTransport.__dict__["handle_async_request"])
    assert not any(hasattr(f, "__wrapped__") for f in originals)
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika"):
        assert hasattr(requests.Session.__dict__["send"], "__wrapped__")
        assert hasattr(httpx.HTTPTransport.__dict__["handle_request"], "__wrapped__")
    assert (requests.Session.__dict__["send"],
            httpx.HTTPTransport.__dict__["handle_request"],
            httpx.AsyncHTTPTransport.__dict__["handle_async_request"]) == originals
    with init_for_tests("svc", disabled_instrumentations="requests,httpx,pika,aio_pika") as obs:
        assert requests.Session.__dict__["send"] is originals[0]
        assert httpx.HTTPTransport.__dict__["handle_request"] is originals[1]
        assert obs.handle.active_integrations().count("requests") == 0
