import json
import random

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from obskit import _config as config
from obskit._tracing import (
    LOG_LAYERS,
    JsonLinesSpanExporter,
    _iso,
    build_resource,
    encode_in_steps,
    renew_instance_id,
    set_attributes_fast,
)


def test_fast_attributes_land_on_the_span():
    span = TracerProvider().get_tracer("t").start_span("s")
    set_attributes_fast(span, {"http.route": "/orders/{id}", "http.response.status_code": 200,
                               "tags": ("a", "b")})
    span.end()
    assert dict(span.attributes) == {"http.route": "/orders/{id}",
                                     "http.response.status_code": 200, "tags": ("a", "b")}


def test_limits_take_the_validating_path():
    limits = SpanLimits(max_span_attribute_length=3, max_span_attributes=2)
    tracer = TracerProvider(span_limits=limits).get_tracer("t")
    attrs = {"a": "long value", "b": "x", "c": "y"}
    fast, sdk = tracer.start_span("fast"), tracer.start_span("sdk")
    set_attributes_fast(fast, attrs)
    sdk.set_attributes(attrs)
    fast.end()
    sdk.end()
    # truncated and capped exactly as the SDK's own set_attributes does
    assert dict(fast.attributes) == dict(sdk.attributes)
    assert all(len(v) <= 3 for v in fast.attributes.values())
    assert fast.dropped_attributes == sdk.dropped_attributes == 1


def test_jsonl_lines_decode_to_what_the_sdk_to_json_gives(tmp_path):
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "ü": "ö"}))
    tracer = provider.get_tracer("t")
    parent = tracer.start_span("parent", kind=SpanKind.SERVER,
                               attributes={"tags": ("a", "b"), "n": 3, "ok": True, "x": 1.5})
    link = Link(parent.get_span_context(), {"why": "batch"})
    child = tracer.start_span("kind\u00e9", context=set_span_in_context(parent),
                              kind=SpanKind.CONSUMER, links=[link])
    child.add_event("retry", {"attempt": 2})
    child.set_status(Status(StatusCode.ERROR, "broker gone"))
    child.end()
    parent.end()
    unfinished = tracer.start_span("open")  # no end time yet
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesSpanExporter(str(path))
    assert exporter.export([child, parent, unfinished]) == SpanExportResult.SUCCESS
    exporter.shutdown()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        json.loads(s.to_json()) for s in (child, parent, unfinished)]


def test_jsonl_line_of_a_forked_worker_carries_its_new_instance_id(tmp_path):
    resource = build_resource(config.resolve({"service_name": "svc"}))
    span = TracerProvider(resource=resource).get_tracer("t").start_span("s")
    span.end()
    exporter = JsonLinesSpanExporter(str(tmp_path / "spans.jsonl"))
    before = json.loads(exporter.encode(span))["resource"]["attributes"]["service.instance.id"]
    new_id = renew_instance_id([resource])
    after = json.loads(exporter.encode(span))["resource"]["attributes"]["service.instance.id"]
    assert before != after == new_id


def test_a_value_json_cannot_encode_does_not_lose_the_batch(tmp_path):
    tracer = TracerProvider().get_tracer("t")
    odd, fine = tracer.start_span("odd"), tracer.start_span("fine")
    set_attributes_fast(odd, {"payload": b"\x00\x01"})  # trusted path: no type check
    odd.end()
    fine.end()
    path = tmp_path / "spans.jsonl"
    assert JsonLinesSpanExporter(str(path)).export([odd, fine]) == SpanExportResult.SUCCESS
    first, second = map(json.loads, path.read_text().splitlines())
    assert first["attributes"]["payload"] == str(b"\x00\x01") and second["name"] == "fine"


def test_spans_file_is_rotated_past_its_size_and_kept_to_two_files(tmp_path):
    tracer = TracerProvider().get_tracer("t")
    spans = []
    for i in range(400):
        span = tracer.start_span(f"span-{i}")
        span.end()
        spans.append(span)
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesSpanExporter(str(path), max_bytes=20_000)
    other = JsonLinesSpanExporter(str(path), max_bytes=20_000)  # another process, same file
    batch = len(exporter.encode(spans[0])) * 10 + 200
    for i in range(0, 400, 10):
        assert (exporter if i % 20 else other).export(spans[i:i + 10]) == \
            SpanExportResult.SUCCESS
    exporter.shutdown()
    other.shutdown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spans.jsonl", "spans.jsonl.1"]
    assert path.stat().st_size < 20_000 + batch
    assert (tmp_path / "spans.jsonl.1").stat().st_size < 20_000 + batch
    kept = [json.loads(line)["name"] for f in ("spans.jsonl.1", "spans.jsonl")
            for line in (tmp_path / f).read_text().splitlines()]
    assert kept[-1] == "span-399" and len(kept) < 400  # the newest kept, the oldest dropped
    assert len(kept) == len(set(kept))  # nothing written twice


def test_spans_file_max_mb_default_env_and_bad_value():
    assert config.resolve({}, {}).spans_file_max_mb == 100.0
    assert config.resolve({}, {"OBSKIT_SPANS_FILE_MAX_MB": "0.5"}).spans_file_max_mb == 0.5
    try:
        config.resolve({"spans_file_max_mb": -1}, {})
    except ValueError as exc:
        assert "spans_file_max_mb" in str(exc)
    else:
        raise AssertionError("a negative size must be refused")


def test_span_times_are_formatted_as_the_sdk_formats_them():
    rng = random.Random(5)
    now = 1_764_150_000_123_456_789
    values = [now + rng.randrange(-10**15, 10**15) for _ in range(20_000)]
    values += [now + k for k in range(0, 200_000, 7)]  # across microsecond rounding edges
    values += [1_700_000_000_999_999_500 + k for k in range(1_000)]  # rounds up a second
    assert [_iso(v) for v in values] == [ns_to_iso_str(v) for v in values]


def test_otlp_batches_encoded_in_steps_equal_one_encoding():
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    providers = [TracerProvider(resource=Resource.create({"service.name": name}))
                 for name in ("crm", "mes", "dashboard")]
    tracers = [p.get_tracer(scope) for p in providers for scope in ("http", "amqp")]
    spans = []
    for i in range(150):  # interleaved; a scope and then a resource appear only late
        tracer = tracers[i % 3] if i < 100 else tracers[3 - i % 2] if i < 140 else tracers[4]
        span = tracer.start_span(f"s{i}", attributes={"i": i})
        span.end()
        spans.append(span)
    stepped = encode_in_steps(spans)
    assert stepped == encode_spans(spans)
    assert len(stepped.resource_spans) == 3
    assert encode_in_steps(spans[:3]) == encode_spans(spans[:3])


def test_otlp_log_batches_encoded_in_steps_equal_one_encoding():
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    for name in ("crm", "mes"):
        provider = LoggerProvider(resource=Resource.create({"service.name": name}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        for scope in ("obskit.access", "orderflow"):
            logger = provider.get_logger(scope)
            for i in range(40):
                logger.emit(body=f"line {i}", attributes={"i": i})
    records = exporter.get_finished_logs()
    assert len(records) == 160
    stepped = encode_in_steps(records, encode_logs, LOG_LAYERS)
    assert stepped == encode_logs(records)
    assert [len(r.scope_logs) for r in stepped.resource_logs] == [2, 2]
