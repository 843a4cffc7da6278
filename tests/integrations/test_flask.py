"""Flask (WSGI): one SERVER span with the url_rule template, RED metrics, access log, errors."""

from __future__ import annotations

from typing import Any

import flask
from opentelemetry.trace import SpanKind, StatusCode

from obskit.testing import Captured, init_for_tests

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def make_app() -> flask.Flask:
    app = flask.Flask("shop")

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    return app


def access(obs: Captured) -> list[dict[str, Any]]:
    return [x for x in obs.logs if x.get("logger") == "obskit.access"]


def test_flask_span_metrics_and_log(obs: Captured) -> None:
    client = make_app().test_client()  # buffered: closes the body like a server
    headers = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01", "X-Request-ID": "r-9"}
    r = client.get("/orders/12", buffered=True, headers=headers)
    assert r.status_code == 200
    assert client.get("/nope", buffered=True).status_code == 404
    first, second = obs.spans
    assert first.kind == SpanKind.SERVER and first.name == "GET /orders/<int:order_id>"
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert first.attributes["http.route"] == "/orders/<int:order_id>"
    assert first.attributes["http.response.status_code"] == 200
    assert second.name == "GET" and second.attributes["http.response.status_code"] == 404
    lines = access(obs)
    assert [(x["route"], x["status_code"]) for x in lines] == [
        ("/orders/<int:order_id>", 200), ("__unmatched__", 404)]
    assert lines[0]["request_id"] == "r-9" and lines[0]["trace_id"] == TRACE_ID
    assert obs.metric("http_server_request_duration_seconds_count",
                      {"method": "GET", "route": "/orders/<int:order_id>",
                       "status_code": "200"}) == 1
    assert obs.metric("http_server_active_requests", {"method": "GET"}) == 0


def test_flask_exception_is_500_and_span_error(obs: Captured) -> None:
    app = make_app()
    assert app.test_client().get("/boom", buffered=True).status_code == 500
    (span,) = obs.spans
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert any(e.name == "exception" for e in span.events)
    (line,) = access(obs)
    assert line["level"] == "error" and line["status_code"] == 500


def test_flask_app_created_before_init_and_uninstrument() -> None:
    app = make_app()
    assert not hasattr(flask.Flask.__dict__["__call__"], "__wrapped__")
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika") as obs:
        app.test_client().get("/orders/1", buffered=True)
        assert len(obs.spans) == 1
    assert not hasattr(flask.Flask.__dict__["__call__"], "__wrapped__")
    with init_for_tests("svc", disabled_instrumentations="flask,pika,aio_pika") as obs:
        app.test_client().get("/orders/1", buffered=True)
        assert obs.spans == () and access(obs) == []


def test_flask_instrument_app_explicitly() -> None:
    from obskit.integrations.flask import instrument_app

    app = make_app()
    with init_for_tests("svc", disabled_instrumentations="flask,pika,aio_pika") as obs:
        instrument_app(app)
        app.test_client().get("/orders/3", buffered=True)
        (span,) = obs.spans
        assert span.name == "GET /orders/<int:order_id>"
        assert len(access(obs)) == 1


def test_flask_behind_proxy_fix(obs: Captured) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = make_app()
    app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    app.test_client().get("/orders/4", buffered=True, headers={"X-Forwarded-For": "203.0.113.9"})
    (span,) = obs.spans
    assert span.attributes["client.address"] == "203.0.113.9"
    assert access(obs)[0]["client"] == "203.0.113.9"


def test_flask_request_id_and_order_on_the_access_line(obs: Captured) -> None:
    import obskit

    app = flask.Flask("shop")

    @app.post("/orders/<oid>")
    def create(oid: str) -> dict[str, str]:
        with obskit.order_context(oid, channel="b2c"):
            obskit.get_logger("shop").info("stored")
        return {"ok": oid}

    client = app.test_client()
    r = client.post("/orders/o-1", buffered=True)
    rid = r.headers["X-Request-ID"]
    assert len(rid) == 32
    (line,) = access(obs)
    assert (line["request_id"], line["order_id"], line["channel"]) == (rid, "o-1", "b2c")
    (stored,) = [x for x in obs.logs if x["event"] == "stored"]
    assert stored["request_id"] == rid


def test_flask_server_timing_header_when_asked() -> None:
    with init_for_tests("svc", server_timing=True):
        r = make_app().test_client().get("/orders/7")
    name, _, dur = r.headers["Server-Timing"].partition(";dur=")
    assert name == "app" and float(dur) >= 0
