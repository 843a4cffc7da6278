"""Every fast path is active on the installed versions, and each one's fallback (forced with
``OBSKIT_DISABLE_FAST_PATHS``) gives the same telemetry: spans and log records over OTLP/gRPC,
the JSON log lines, the metrics, the AMQP message a publish delivers and pamqp's property bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from obskit import _fastpaths
from obskit.testing import OtlpReceiver

NAMES = [p.name for p in _fastpaths.FAST_PATHS]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"

# One process's worth of every fast path: an instrumented FastAPI app serving 40 requests (more
# than the stepped encoders' 24 per step) inside order contexts, one failing; two confirmed
# publishes to RabbitMQ read back with basic.get; pamqp property bytes. Spans and log records go
# to an OTLP/gRPC receiver; the rest is written to FP_OUT as JSON.
WORKLOAD = textwrap.dedent(
    """
    import asyncio, datetime, decimal, io, json, os

    import aio_pika, httpx
    from fastapi import FastAPI
    from prometheus_client import generate_latest

    import obskit
    from obskit import _fastpaths
    from obskit.integrations import INTEGRATIONS

    stream = io.StringIO()
    others = ",".join(n for n in INTEGRATIONS if n not in ("fastapi", "starlette"))
    obskit.init("fastpaths", log_stream=stream, log_format="json",
                disabled_instrumentations=others)
    app = FastAPI()

    @app.get("/orders/{oid}")
    async def read(oid: str) -> dict:
        with obskit.order_context(oid, channel="b2b", partner="acme"):
            obskit.get_logger("app").info("order read", oid=oid)
            return {"id": oid}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("boom")

    async def http() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            for i in range(40):
                headers = {"x-request-id": f"req-{i}"}
                if i % 2:
                    headers["traceparent"] = f"00-{i + 1:032x}-{i + 1:016x}-01"
                    headers["baggage"] = f"order.id=ord-{i},tenant=t{i}"
                await client.get(f"/orders/ord-{i}", headers=headers)
            await client.get("/boom", headers={"x-request-id": "req-boom"})

    async def amqp(out: dict) -> None:
        from obskit.rabbitmq import Publisher
        from obskit.rabbitmq._propagation import extract
        from opentelemetry import baggage, trace

        queue_name = os.environ["FP_QUEUE"]
        connection = await aio_pika.connect(os.environ["FP_AMQP"])
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name, auto_delete=True)
            async with Publisher(os.environ["FP_AMQP"]) as publisher:
                with obskit.order_context("ord-p1", channel="b2c"):
                    await publisher.publish("", queue_name, {"a": 1}, message_id="m-1",
                                            correlation_id="c-1", headers={"x-n": 1})
                await publisher.publish("", queue_name, b"raw", message_id="m-2",
                                        order_id="ord-p2", channel="b2b", message_type="t")
            messages = []
            for _ in range(2):
                m = await queue.get(timeout=5)
                await m.ack()
                ctx = extract(m.headers)
                sc = trace.get_current_span(ctx).get_span_context()
                messages.append({
                    "body": m.body.hex(), "headers": m.headers, "content_type": m.content_type,
                    "message_id": m.message_id, "correlation_id": m.correlation_id,
                    "delivery_mode": int(m.delivery_mode), "type": m.type,
                    "timestamp": m.timestamp is not None,
                    "extracted": [f"{sc.trace_id:032x}", f"{sc.span_id:016x}",
                                  int(sc.trace_flags), dict(baggage.get_all(ctx))]})
            out["amqp"] = messages

    def pamqp_bytes() -> list:
        from obskit.rabbitmq._properties import PublishProperties
        ts = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        cases = [{}, {"content_type": "application/json", "delivery_mode": 2, "timestamp": ts,
                      "message_id": "m", "correlation_id": "c", "app_id": "a", "priority": 3},
                 {"headers": {"traceparent": "00-ab-cd-01", "x-n": 3, "x-ok": True,
                              "x-price": decimal.Decimal("1.50"), "x-nested": {"a": "b"},
                              "x-list": ["a", 1], "x-u": "Größe ✓", "x-none": None}}]
        return [PublishProperties(**case).marshal().hex() for case in cases]

    out: dict = {}
    asyncio.run(http())
    asyncio.run(amqp(out))
    out["pamqp"] = pamqp_bytes()
    handle = obskit.get_handle()
    handle.force_flush()
    out["metrics"] = generate_latest(handle.registry).decode()
    obskit.shutdown()
    out["logs"] = stream.getvalue().splitlines()
    out["queue"] = os.environ["FP_QUEUE"]
    out["status"] = {p.name: [active, reason] for p, active, reason in _fastpaths.status()}
    with open(os.environ["FP_OUT"], "w") as f:
        json.dump(out, f, default=str)
    """
)


#: Fast paths of the export process (obskit._export_process); the others' exporter paths
#: (stepped encoders, queue drops) are the in-process exporters'.
EXPORT_PATHS = ("direct_otlp_encoding",)
EXPORT = "export:"  # a run configuration with this prefix exports through the export process


def run_workload(config: str, tmp_path: Any) -> dict[str, Any]:
    """Run WORKLOAD in a fresh process with ``OBSKIT_DISABLE_FAST_PATHS`` = ``config`` (after
    the ``EXPORT`` prefix, which selects the export process)."""
    disabled = config.removeprefix(EXPORT)
    out = tmp_path / f"out-{uuid.uuid4().hex[:8]}.json"
    with OtlpReceiver("grpc") as receiver:
        env = {**os.environ, **receiver.env(), "OBSKIT_DISABLE_FAST_PATHS": disabled,
               "FP_OUT": str(out), "FP_AMQP": AMQP,
               "OBSKIT_EXPORT_PROCESS": "1" if config.startswith(EXPORT) else "0",
               "FP_QUEUE": f"obskit-fastpaths-{uuid.uuid4().hex[:10]}",
               "OBSKIT_RABBITMQ_URL": AMQP, "OTEL_BSP_SCHEDULE_DELAY": "60000",
               "OTEL_BLRP_SCHEDULE_DELAY": "60000"}
        r = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        result = json.loads(out.read_text())
        result["spans"] = receiver.wait_for_spans(lambda s: len(s) >= 43)
        result["otlp_logs"] = receiver.wait_for_logs(lambda s: len(s) >= 80)
    return result


# --- normalising: ids and times differ between runs, nothing else may -------------------------
_ID = re.compile(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b")
_VOLATILE = {"timestamp", "duration_ms", "duration", "service.instance.id", "pid",
             "process.pid", "thread", "exception.stacktrace", "stacktrace", "exception"}


class Ids:
    """Replaces trace and span ids by their order of appearance, and the run's queue name."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(self.queue, "<queue>")
            return _ID.sub(lambda m: self.seen.setdefault(m.group(), f"<id{len(self.seen)}>"),
                           value)
        if isinstance(value, dict):
            return {k: "<volatile>" if k in _VOLATILE else self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def _span_key(span: Any) -> str:
    return json.dumps([span.name, span.kind, span.scope, span.attributes], sort_keys=True,
                      default=str)


def telemetry(result: dict[str, Any]) -> dict[str, Any]:
    """What the workload emitted, ids numbered in a content order, times blanked."""
    ids = Ids(result["queue"])
    spans = sorted(result["spans"], key=_span_key)
    out: dict[str, Any] = {"spans": [ids([s.name, s.kind, s.scope, s.status, s.trace_id,
                                          s.span_id, s.parent_span_id, s.attributes,
                                          s.resource, [list(link) for link in s.links]])
                                     for s in spans]}
    own = "obskit fast paths"  # the start-up report: it differs by design
    logs = sorted((r for r in result["otlp_logs"] if not str(r.body).startswith(own)),
                  key=lambda r: json.dumps(
        [str(r.body), r.attributes.get("request_id"), r.attributes.get("oid")], default=str))
    out["otlp_logs"] = [ids([str(r.body), r.severity_text, r.scope, r.trace_id, r.span_id,
                             r.attributes, r.resource]) for r in logs]
    out["logs"] = sorted(json.dumps(ids(json.loads(line)), sort_keys=True)
                         for line in result["logs"] if own not in line)
    out["amqp"] = ids(result["amqp"])
    out["pamqp"] = result["pamqp"]
    out["metrics"] = sorted(
        ids(line) for line in result["metrics"].splitlines()
        if not line.startswith("#") and "_created" not in line and "_sum" not in line
        and "_bucket" not in line and not line.startswith(("process_", "python_")))
    return out


# A path used only where another path is off: compared with that other path off in both runs.
BASELINES = {"span_attributes_direct": ("lean_spans", "lean_spans,span_attributes_direct"),
             **{name: (EXPORT, EXPORT + name) for name in EXPORT_PATHS}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The workload with nothing disabled, each path disabled alone, and the cases below."""
    tmp = tmp_path_factory.mktemp("fastpaths")
    configs = ["", "all", *(n for n in NAMES if n not in EXPORT_PATHS),
               *(c for pair in BASELINES.values() for c in pair)]
    configs = list(dict.fromkeys(configs))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(configs, pool.map(lambda c: run_workload(c, tmp), configs),
                           strict=True))
    return results


def _all_active(status: dict[str, list[Any]]) -> dict[str, tuple[Any, ...]]:
    """``status`` with the paths that are not needed here (e.g. no such layer in this FastAPI)
    counted as active: what must be true on every supported version."""
    return {name: (True, "") if not active and reason.startswith("not needed") else
            (active, reason) for name, (active, reason) in status.items()}


def test_every_fast_path_is_active_on_the_installed_versions(runs):
    status = {**runs[""]["status"], **{n: runs[EXPORT]["status"][n] for n in EXPORT_PATHS}}
    assert _all_active(status) == {name: (True, "") for name in NAMES}


def test_probe_decides_every_fast_path_in_a_fresh_process():
    code = ("import json; from obskit import _fastpaths; from obskit.cli import doctor; "
            "doctor.probe_fast_paths(); "
            "print(json.dumps({p.name: [a, r] for p, a, r in _fastpaths.status()}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OBSKIT_DISABLE_FAST_PATHS": ""})
    assert r.returncode == 0, r.stderr
    assert _all_active(json.loads(r.stdout)) == {name: (True, "") for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_forced_fallback_gives_the_same_telemetry(runs, name):
    baseline, forced = BASELINES.get(name, ("", name))
    assert runs[forced]["status"][name] == [False, "disabled"]
    assert _all_active({name: runs[baseline]["status"][name]}) == {name: (True, "")}
    expected, got = telemetry(runs[baseline]), telemetry(runs[forced])
    for part in expected:  # one part at a time: a readable diff
        assert got[part] == expected[part], part


def test_all_fast_paths_off_gives_the_same_telemetry(runs):
    assert all(v == [False, "disabled"] for k, v in runs["all"]["status"].items()
               if k not in EXPORT_PATHS)  # in-process: the export process's are not decided
    expected, got = telemetry(runs[""]), telemetry(runs["all"])
    for part in expected:
        assert got[part] == expected[part], part


def test_the_workload_exercises_what_it_compares(runs):
    t = telemetry(runs[""])
    assert len(t["spans"]) == 43 and len(t["amqp"]) == 2  # 41 requests, 2 publishes
    kinds = {s[1] for s in t["spans"]}
    assert {"SERVER", "PRODUCER"} <= kinds
    server = [s for s in t["spans"] if s[1] == "SERVER"]
    assert any(s[7].get("order.id") == "ord-3" for s in server)  # baggage → span attributes
    (published,) = [m for m in t["amqp"] if m["message_id"] == "m-1"]
    assert published["headers"]["baggage"] == "order.id=ord-p1,order.channel=b2c"
    assert published["extracted"][3] == {"order.id": "ord-p1", "order.channel": "b2c"}
    assert sum("order read" in r[0] for r in t["otlp_logs"]) == 40


# --- each fallback that triggers on a missing private attribute -------------------------------

@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[bool, str]]:
    """This process's decisions, restored afterwards."""
    saved = dict(_fastpaths._decisions)
    yield _fastpaths._decisions
    _fastpaths._decisions.clear()
    _fastpaths._decisions.update(saved)


def test_lean_spans_without_the_sdks_value_cleaner_use_the_sdk(monkeypatch, decisions):
    from opentelemetry.sdk.trace import Span, TracerProvider

    from obskit import _fastspan

    monkeypatch.setattr(_fastspan, "_clean_value", None)
    tracer = _fastspan.FastTracer(TracerProvider().get_tracer("t"))
    assert not tracer.fast
    assert decisions["lean_spans"] == (False, "opentelemetry.attributes._clean_attribute_value "
                                              "is missing")
    span = tracer.start_span("s", attributes={"a": 1})
    assert type(span) is not _fastspan.LeanSpan and isinstance(span, Span)
    assert dict(span.attributes) == {"a": 1}


def test_lean_spans_with_a_tracer_missing_a_private_attribute_use_the_sdk(monkeypatch,
                                                                           decisions):
    from opentelemetry.sdk.trace import TracerProvider

    from obskit import _fastspan

    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")
    sdk_tracer = TracerProvider().get_tracer("t")
    del sdk_tracer._span_limits
    tracer = _fastspan.FastTracer(sdk_tracer)
    assert not tracer.fast
    assert decisions["lean_spans"][0] is False
    assert "_span_limits" in decisions["lean_spans"][1]


def test_stepped_exporters_without_the_translate_hook_are_the_sdks(monkeypatch, decisions):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from obskit import _tracing

    for cls in (OTLPSpanExporter, OTLPLogExporter, OTLPExporterMixin):
        if "_translate_data" in cls.__dict__:
            monkeypatch.delattr(cls, "_translate_data")
    assert _tracing.grpc_span_exporter_class() is OTLPSpanExporter
    assert _tracing.grpc_log_exporter_class() is OTLPLogExporter
    assert decisions["stepped_otlp_spans"] == (
        False, "OTLPSpanExporter does not encode through _translate_data")
    assert decisions["stepped_otlp_logs"][0] is False


def test_the_stepped_exporter_really_encodes_through_its_hook(monkeypatch):
    """The stepped exporters override ``_translate_data``: the SDK's export must call it."""
    from opentelemetry.sdk.trace import TracerProvider

    from obskit import _tracing

    calls = []
    real = _tracing.encode_in_steps
    monkeypatch.setattr(_tracing, "encode_in_steps",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    provider = TracerProvider()
    spans = []
    for i in range(30):
        span = provider.get_tracer("t").start_span(f"s{i}")
        span.end()
        spans.append(span)
    with OtlpReceiver("grpc") as receiver:
        exporter = _tracing.grpc_span_exporter_class()(endpoint=receiver.endpoint, insecure=True)
        exporter.export(spans)
        assert len(receiver.wait_for_spans(lambda s: len(s) >= 30)) == 30
        exporter.shutdown()
    assert calls == [30]


class _Blocked:
    """An exporter that holds its first batch until released: the queue fills up."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.received = 0

    def export(self, batch: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.release.wait(10)
        self.received += len(batch)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _NotTheQueue:  # what obskit expects the SDK's queue to be instead: no match
    pass


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fallback"])
def test_a_full_span_queue_counts_every_span_it_drops(monkeypatch, decisions, fast):
    """No span is lost uncounted: exported + counted drops == ended, with the fast path and with
    the fallback that counts the queue itself (the SDK's private queue not as expected)."""
    from opentelemetry.sdk.trace import TracerProvider

    from obskit import _tracing
    from obskit.metrics import catalogue

    if not fast:
        monkeypatch.setattr(_tracing, "deque", _NotTheQueue)
    registry = CollectorRegistry()
    exporter = _Blocked()
    processor = _tracing.DroppingBatchSpanProcessor(
        exporter, catalogue(registry), max_queue_size=64, max_export_batch_size=16,
        schedule_delay_millis=10)
    assert decisions["span_queue_drop"][0] is fast
    if not fast:
        assert "queue counted by obskit" in decisions["span_queue_drop"][1]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for i in range(500):
        provider.get_tracer("t").start_span(f"s{i}").end()
    exporter.release.set()
    processor.force_flush()
    dropped = registry.get_sample_value("obskit_telemetry_spans_dropped_total",
                                        {"reason": "queue_full"})
    assert dropped and dropped >= 500 - 64 - 16
    assert exporter.received + dropped == 500
    processor.shutdown()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fallback"])
def test_a_full_log_queue_counts_every_record_it_drops(monkeypatch, decisions, fast):
    from opentelemetry.sdk._logs import LoggerProvider

    from obskit import _tracing
    from obskit.metrics import catalogue

    if not fast:
        monkeypatch.setattr(_tracing, "deque", _NotTheQueue)
    registry = CollectorRegistry()
    exporter = _Blocked()
    processor = _tracing._CountingLogProcessor(
        exporter, catalogue(registry), max_queue_size=64, max_export_batch_size=16,
        schedule_delay_millis=10)
    assert decisions["log_queue_drop"][0] is fast
    provider = LoggerProvider()
    provider.add_log_record_processor(processor)  # type: ignore[arg-type]
    logger = provider.get_logger("t")
    for i in range(500):
        logger.emit(body=f"r{i}")
    exporter.release.set()
    processor.force_flush()
    dropped = registry.get_sample_value("obskit_telemetry_log_records_dropped_total",
                                        {"reason": "queue_full"})
    assert dropped and dropped >= 500 - 64 - 16
    assert exporter.received + dropped == 500
    processor.shutdown()


def test_direct_attributes_with_a_value_length_limit_use_set_attributes(monkeypatch,
                                                                          decisions):
    from opentelemetry.sdk.trace import TracerProvider

    from obskit import _tracing

    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    try:
        assert _tracing._check_direct_attributes() is False
        assert decisions["span_attributes_direct"] == (
            False, "a span attribute length limit is set")
        span = TracerProvider().get_tracer("t").start_span("s")
        _tracing.set_attributes_fast(span, {"k": "longer than four"})
        assert dict(span.attributes) == {"k": "long"}  # the SDK's truncation: its path
    finally:
        monkeypatch.undo()
        assert _tracing._check_direct_attributes() is True


def test_context_direct_with_another_runtime_context_uses_the_api(monkeypatch):
    from opentelemetry import context as api

    from obskit import _otel_context

    monkeypatch.setattr(api, "_RUNTIME_CONTEXT", object())
    var, reason = _otel_context._runtime_var()
    assert var is None and reason == "runtime context is object (OTEL_PYTHON_CONTEXT)"
    monkeypatch.delattr(api, "_RUNTIME_CONTEXT")
    var, reason = _otel_context._runtime_var()
    assert var is None and reason.startswith("AttributeError")


def test_amqp_propagation_with_another_propagator_uses_it(monkeypatch, decisions):
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from obskit.rabbitmq import _propagation

    span = trace.NonRecordingSpan(trace.SpanContext(1, 2, False, trace.TraceFlags(1)))
    ctx = trace.set_span_in_context(span)
    monkeypatch.setattr(propagate, "get_global_textmap",
                        lambda: CompositePropagator([TraceContextTextMapPropagator()]))
    headers: dict[str, Any] = {}
    _propagation.inject(headers, span, ctx)
    assert headers == {"traceparent": f"00-{1:032x}-{2:016x}-01"}
    assert decisions["amqp_propagation"] == (
        False, "the global propagator is not tracecontext,baggage (OTEL_PROPAGATORS)")
    odd = CompositePropagator([])
    del odd._propagators  # a composite that keeps its propagators elsewhere
    monkeypatch.setattr(propagate, "get_global_textmap", lambda: odd)
    assert not _propagation._is_default()
    assert decisions["amqp_propagation"] == (False, "CompositePropagator._propagators is missing")
    monkeypatch.undo()
    assert _propagation._is_default()  # the default pair again: the fast path again
    assert decisions["amqp_propagation"] == (True, "")


def test_amqp_properties_with_another_pamqp_layout_use_pamqps_marshal(monkeypatch, decisions):
    from pamqp.commands import Basic

    from obskit.rabbitmq import _properties

    def broken() -> Any:
        raise KeyError("shortstr")

    monkeypatch.setattr(_properties, "_slots", broken)
    slots, reason = _properties._decide()
    assert slots == () and reason.startswith("pamqp's Basic.Properties layout differs")
    monkeypatch.setattr(_properties, "_SLOTS", ())
    props = {"content_type": "text/plain", "headers": {"a": "b"}, "delivery_mode": 2}
    assert (_properties.PublishProperties(**props).marshal()
            == Basic.Properties(**props).marshal())


def test_fastapi_without_the_telemetry_layer(monkeypatch, decisions):
    import importlib.util

    import fastapi  # noqa: F401 - imported before its telemetry module is hidden

    from obskit.integrations import fastapi as integration

    if importlib.util.find_spec("fastapi.telemetry") is not None:  # FastAPI 0.16x
        monkeypatch.setitem(sys.modules, "fastapi.telemetry._asgi", None)  # moved elsewhere
        assert integration._telemetry_layer() is None
        assert decisions["fastapi_telemetry_layer"] == (
            False, "fastapi.telemetry._asgi.ExceptionTelemetryMiddleware is missing")
        assert not _fastpaths.quiet_reason(decisions["fastapi_telemetry_layer"][1])
    monkeypatch.setitem(sys.modules, "fastapi.telemetry", None)  # a FastAPI before 0.16x
    assert integration._telemetry_layer() is None
    assert decisions["fastapi_telemetry_layer"] == (
        False, "not needed: this FastAPI has no telemetry layer")
    assert _fastpaths.quiet_reason(decisions["fastapi_telemetry_layer"][1])


# --- the API, the start-up report, the option ----------------------------------------------

def test_enabled_reads_the_env_var_each_call(monkeypatch):
    monkeypatch.setenv("OBSKIT_DISABLE_FAST_PATHS", "lean_spans, Amqp-Properties")
    assert not _fastpaths.enabled("lean_spans") and not _fastpaths.enabled("amqp_properties")
    assert _fastpaths.enabled("context_direct")
    monkeypatch.setenv("OBSKIT_DISABLE_FAST_PATHS", "all")
    assert not _fastpaths.enabled("context_direct")
    monkeypatch.delenv("OBSKIT_DISABLE_FAST_PATHS")
    assert _fastpaths.enabled("lean_spans")


def test_unknown_names_are_programmer_errors(decisions):
    with pytest.raises(ValueError, match="unknown fast path 'lean_span'"):
        _fastpaths.report("lean_span", True)
    with pytest.raises(ValueError, match="lean_spans"):
        _fastpaths.enabled("nope")


def test_the_latest_report_wins_and_status_lists_every_path(decisions):
    decisions.clear()
    _fastpaths.report("lean_spans", False, "a reason")
    _fastpaths.report("lean_spans", True, "ignored when active")
    status = {p.name: (a, r) for p, a, r in _fastpaths.status()}
    assert list(status) == NAMES
    assert status["lean_spans"] == (True, "") and status["context_direct"] == (None, "")


def test_the_option_is_in_the_table_and_environment_only():
    from obskit._config import OPTIONS, resolve

    (option,) = [o for o in OPTIONS if o.name == "disable_fast_paths"]
    assert option.env == "OBSKIT_DISABLE_FAST_PATHS"
    assert resolve({}, {"OBSKIT_DISABLE_FAST_PATHS": "lean_spans,all"}).disable_fast_paths == (
        "lean_spans", "all")
    with pytest.raises(ValueError, match="OBSKIT_DISABLE_FAST_PATHS.*unknown fast path 'lean'"):
        resolve({}, {"OBSKIT_DISABLE_FAST_PATHS": "lean"})
    with pytest.raises(ValueError, match="environment only"):
        resolve({"disable_fast_paths": "lean_spans"}, {})


def test_init_logs_active_paths_in_one_line_and_problems_in_another():
    code = textwrap.dedent("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        import obskit
        obskit.init("svc", instrument_logging=False, spans_file="off",
                    disabled_instrumentations="all")
    """)
    env = {**os.environ, "OBSKIT_DISABLE_FAST_PATHS": "context_direct",
           "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "64"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "obskit fast paths" in ln]
    assert len(lines) == 2, r.stderr
    info, warning = lines
    assert info.startswith("INFO obskit fast paths active: ") and "baggage_direct" in info
    assert info.endswith("; off: context_direct (disabled)")
    assert warning == ("WARNING obskit fast paths off (the public, slower path is used): "
                       "span_attributes_direct (a span attribute length limit is set)")


def test_compatibility_doc_lists_the_fast_paths_as_generated(repo_root):
    text = (repo_root / "docs" / "compatibility.md").read_text()
    begin, end = "<!-- fastpaths:begin -->\n", "<!-- fastpaths:end -->"
    assert begin in text and end in text
    section = text.split(begin, 1)[1].split(end, 1)[0]
    assert section == _fastpaths.markdown(), (
        "regenerate with: python -m obskit._fastpaths --write docs/compatibility.md")
    for path in (*_fastpaths.FAST_PATHS, *_fastpaths.OTHER_PRIVATE):
        assert path.what and (path.checked or not path.private), path.name
