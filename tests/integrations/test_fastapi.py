"""FastAPI/Starlette server side: one SERVER span, RED metrics by route template, access log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import obskit
from obskit.integrations import fastapi as fastapi_integration
from obskit.testing import Captured, init_for_tests

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    return app


async def call(app: Any, *paths: str, headers: dict[str, str] | None = None) -> list[int]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        return [(await client.get(p, headers=headers)).status_code for p in paths]


def access(captured: Captured) -> list[dict[str, Any]]:
    return [line for line in captured.logs if line.get("logger") == "obskit.access"]


def server_spans(captured: Captured) -> list[Any]:
    return [s for s in captured.spans if s.kind == SpanKind.SERVER]


async def test_one_server_span_with_route_template(obs: Captured) -> None:
    assert await call(make_app(), "/orders/123") == [200]
    spans = obs.spans
    assert len(spans) == 1, [s.name for s in spans]  # FastAPI native telemetry adds none
    span = spans[0]
    assert span.kind == SpanKind.SERVER
    assert span.name == "GET /orders/{order_id}"
    attrs = dict(span.attributes or {})
    assert attrs["http.route"] == "/orders/{order_id}"
    assert attrs["url.path"] == "/orders/123"
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "shop.test"
    assert attrs["user_agent.original"].startswith("python-httpx")
    assert attrs["client.address"] == "127.0.0.1"


async def test_app_created_before_init_is_instrumented_once() -> None:
    app = make_app()  # before init(): auto-wiring happens when the stack is built
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika") as obs:
        assert await call(app, "/orders/1", "/orders/2") == [200, 200]
        assert [s.name for s in obs.spans] == ["GET /orders/{order_id}"] * 2
        assert app._telemetry["tracing"] is False  # native telemetry forced off


async def test_metrics_use_route_template_and_carry_exemplars(obs: Captured) -> None:
    await call(make_app(), "/orders/123", "/orders/456", "/nope")
    span_trace_ids = {format(s.context.trace_id, "032x") for s in obs.spans}
    text = generate_latest(obs.registry).decode()
    assert "/orders/123" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    duration = families["http_server_request_duration_seconds"]
    counts = {(s.labels["route"], s.labels["status_code"]): s.value for s in duration.samples
              if s.name.endswith("_count")}
    assert counts[("/orders/{order_id}", "200")] == 2
    assert counts[("__unmatched__", "404")] == 1
    exemplars = [s.exemplar for s in duration.samples if s.exemplar is not None]
    assert exemplars and {e.labels["trace_id"] for e in exemplars} <= span_trace_ids
    active = families["http_server_active_requests"]
    assert [s.value for s in active.samples if s.labels.get("method") == "GET"] == [0.0]


async def test_incoming_traceparent_is_continued(obs: Captured) -> None:
    tp = f"00-{TRACE_ID}-{PARENT_ID}-01"
    await call(make_app(), "/orders/7", headers={"traceparent": tp, "baggage": "order.id=o-7"})
    (span,) = obs.spans
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["order.id"] == "o-7"  # baggage -> order context
    (line,) = access(obs)
    assert line["trace_id"] == TRACE_ID and line["order_id"] == "o-7"


async def test_one_access_log_line_per_request(obs: Captured) -> None:
    statuses = await call(make_app(), "/orders/5", "/missing", "/orders/not-a-number",
                          headers={"X-Request-ID": "req-1"})
    assert statuses == [200, 404, 422]
    lines = access(obs)
    assert [(x["path"], x["status_code"], x["route"]) for x in lines] == [
        ("/orders/5", 200, "/orders/{order_id}"),
        ("/missing", 404, "__unmatched__"),
        ("/orders/not-a-number", 422, "/orders/{order_id}"),
    ]
    for line in lines:
        assert line["level"] == "info"
        assert line["method"] == "GET" and line["request_id"] == "req-1"
        assert line["client"] == "127.0.0.1" and line["duration_ms"] >= 0
        assert line["trace_id"] and line["span_id"]


async def test_exception_gives_500_and_error_span(obs: Captured) -> None:
    assert await call(make_app(), "/boom") == [500]
    (span,) = obs.spans
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert any(e.name == "exception" for e in span.events)
    (line,) = access(obs)
    assert line["level"] == "error" and line["status_code"] == 500
    assert obs.metric("http_server_request_duration_seconds_count",
                      {"method": "GET", "route": "/boom", "status_code": "500"}) == 1


async def test_unsampled_requests_still_get_metrics_and_log() -> None:
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika",
                        traces_sampler="always_off") as obs:
        await call(make_app(), "/orders/1")
        assert obs.spans == ()
        assert len(access(obs)) == 1
        assert obs.metric("http_server_request_duration_seconds_count",
                          {"method": "GET", "route": "/orders/{order_id}",
                           "status_code": "200"}) == 1


async def test_disabled_instrumentation_is_honoured() -> None:
    with init_for_tests("svc", disabled_instrumentations="fastapi,starlette,pika,aio_pika") as obs:
        await call(make_app(), "/orders/1")
        assert access(obs) == []
        assert obs.metric("http_server_request_duration_seconds_count",
                          {"method": "GET", "route": "/orders/{order_id}",
                           "status_code": "200"}) is None
        assert not hasattr(FastAPI.__dict__["build_middleware_stack"], "__wrapped__")


async def test_uninstrument_restores_fastapi() -> None:
    from fastapi.telemetry._asgi import NativeTelemetry

    original_build = FastAPI.__dict__["build_middleware_stack"]
    original_enabled = NativeTelemetry.__dict__["enabled"]
    assert not hasattr(original_build, "__wrapped__")
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika") as obs:
        app = make_app()
        assert FastAPI.__dict__["build_middleware_stack"] is not original_build
        await call(app, "/orders/1")
        assert len(obs.spans) == 1
    # shutdown() uninstrumented: class restored, the built app passes requests through.
    assert FastAPI.__dict__["build_middleware_stack"] is original_build
    assert NativeTelemetry.__dict__["enabled"] is original_enabled
    assert await call(app, "/orders/1") == [200]
    assert len(obs.spans) == 1


async def test_instrument_is_idempotent(obs: Captured) -> None:
    wrapped = FastAPI.__dict__["build_middleware_stack"]
    fastapi_integration.instrument(obskit.get_handle())  # type: ignore[arg-type]
    assert FastAPI.__dict__["build_middleware_stack"] is wrapped
    await call(make_app(), "/orders/1")
    assert len(obs.spans) == 1


async def test_instrument_app_explicitly_after_first_request() -> None:
    app = make_app()
    assert await call(app, "/orders/1") == [200]  # stack built before obskit existed
    with init_for_tests("svc", disabled_instrumentations="fastapi,starlette,pika,aio_pika") as obs:
        assert fastapi_integration.instrument_app(app) is app
        assert fastapi_integration.instrument_app(app) is app  # idempotent
        await call(app, "/orders/2")
        assert [s.name for s in obs.spans] == ["GET /orders/{order_id}"]


async def test_starlette_mount_route_template(obs: Captured) -> None:
    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/items/{item_id}", item)])
    app = Starlette(routes=[Mount("/v1", app=inner)])
    assert await call(app, "/v1/items/42") == [200]
    (span,) = obs.spans  # the mounted sub-app's own middleware passed through
    assert span.name == "GET /v1/items/{item_id}"
    (line,) = access(obs)
    assert line["route"] == "/v1/items/{item_id}"


async def test_bookkeeping_errors_never_reach_the_app(obs: Captured,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from obskit.integrations import _http

    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")

    class Broken:
        def labels(self, *a: Any) -> Any:
            raise RuntimeError("metrics backend broken")

    from obskit.metrics import catalogue  # internal_error() counts in the default catalogue

    def errors(component: str) -> float:
        return catalogue().registry.get_sample_value("obskit_internal_errors_total",
                                         {"component": component}) or 0.0

    # The metrics are made with the access line, in the deferred batch (at once here).
    before = errors("asgi.start"), errors("deferred")
    assert _http.state is not None
    monkeypatch.setattr(_http.state, "duration", Broken())
    monkeypatch.setattr(_http.state, "active", Broken())
    assert await call(make_app(), "/orders/1") == [200]
    assert (errors("asgi.start"), errors("deferred")) == (before[0] + 1, before[1] + 1)


async def test_request_id_is_generated_returned_and_on_every_line(obs: Captured) -> None:
    app = FastAPI()

    @app.post("/orders/{order_id}")
    async def create(order_id: str) -> dict[str, str]:
        with obskit.order_context(order_id, channel="b2b"):
            obskit.get_logger("shop").info("storing order")
        obskit.add_request_fields(partner="acme")
        return {"ok": order_id}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        generated = await client.post("/orders/o-7")
        echoed = await client.post("/orders/o-8", headers={"X-Request-ID": "partner-req-42"})
        hostile = await client.post("/orders/o-9", headers={"X-Request-ID": "x" * 500})
    rid = generated.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert echoed.headers["x-request-id"] == "partner-req-42"
    assert hostile.headers["x-request-id"] != "x" * 500  # too long: replaced, not echoed

    lines = access(obs)
    assert [ln["request_id"] for ln in lines] == [rid, "partner-req-42",
                                                  hostile.headers["x-request-id"]]
    # the access line names the order the handler worked on, and the app's extra field
    assert [(ln["order_id"], ln["channel"], ln["partner"]) for ln in lines] == [
        ("o-7", "b2b", "acme"), ("o-8", "b2b", "acme"), ("o-9", "b2b", "acme")]
    app_lines = [ln for ln in obs.logs if ln["event"] == "storing order"]
    assert [ln["request_id"] for ln in app_lines] == [ln["request_id"] for ln in lines]
    spans = server_spans(obs)
    assert spans[0].attributes["http.request.header.x-request-id"] == (rid,)


async def test_request_id_option_off_leaves_responses_alone() -> None:
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika", request_id=False) as t:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/orders/1")
    assert "x-request-id" not in r.headers
    assert "request_id" not in access(t)[0]


async def test_plain_starlette_route_in_fastapi_gets_its_template(obs: Captured) -> None:
    app = make_app()
    app.add_route("/metrics", obskit.metrics_asgi_app())
    assert await call(app, "/metrics") == [200]
    (line,) = access(obs)
    assert line["route"] == "/metrics"
    (span,) = server_spans(obs)
    assert span.name == "GET /metrics" and span.attributes["http.route"] == "/metrics"


async def test_server_timing_header_when_asked() -> None:
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika", server_timing=True):
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/orders/1")
    name, _, dur = r.headers["server-timing"].partition(";dur=")
    assert name == "app" and 0 < float(dur) < 10_000
    assert "x-request-id" in r.headers  # both extra headers
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app()),
                                 base_url="http://t") as client:
        with init_for_tests("svc", disabled_instrumentations="pika,aio_pika"):
            assert "server-timing" not in (await client.get("/orders/1")).headers  # default off


async def test_fastapis_inert_exception_telemetry_layer_is_unlinked(obs: Captured) -> None:
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware

    def layers(stack: Any) -> list[type]:
        found = []
        while stack is not None and len(found) < 20:
            found.append(type(stack))
            stack = getattr(stack, "app", None)
        return found

    app = make_app()
    assert await call(app, "/orders/1", "/boom") == [200, 500]
    assert ExceptionTelemetryMiddleware not in layers(app.middleware_stack)
    # Exceptions still reach obskit's span and FastAPI's own error handling.
    boom = [s for s in obs.spans if s.name == "GET /boom"]
    assert boom and boom[0].status.status_code == StatusCode.ERROR
    # Without obskit the layer is there (FastAPI's native telemetry may switch itself on).
    obskit.shutdown()
    plain = make_app()
    assert await call(plain, "/orders/1") == [200]
    assert ExceptionTelemetryMiddleware in layers(plain.middleware_stack)
