"""FastTracer / LeanSpan: the same spans, decisions and processor calls as the SDK tracer."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from obskit._fastspan import FastTracer, LeanSpan


class Recorder:
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span)

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: Any) -> None:
        self.ended.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def provider(sampler: Sampler = ALWAYS_ON, **kwargs: Any) -> tuple[TracerProvider,
                                                                    InMemorySpanExporter]:
    p = TracerProvider(sampler=sampler, resource=Resource.create({"service.name": "t"}),
                       **kwargs)
    exporter = InMemorySpanExporter()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p, exporter


def exercise(tracer: Any, parent: Any = None) -> None:
    span = tracer.start_span("op", parent, SpanKind.SERVER, attributes={"a": 1, "l": [1, 2]},
                             links=[trace.Link(SpanContext(5, 6, True, TraceFlags(1)), {"k": "v"})])
    span.set_attribute("b", "x")
    span.set_attributes({"c": 2.5, "d": True})
    span.update_name("op renamed")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        span.record_exception(exc)
    span.add_event("ev", {"e": 1})
    span.set_status(Status(StatusCode.ERROR, "bad"))
    span.end()
    span.set_attribute("after_end", 1)  # ignored, as on SDK spans


def comparable(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, {k: v for k, v in (e.attributes or {}).items()
                             if k != "exception.stacktrace"}) for e in span.events],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
        "flags": span.context.trace_flags,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
    }


def test_lean_span_exports_what_the_sdk_span_exports() -> None:
    p, exporter = provider()
    fast = FastTracer(p.get_tracer("scope", "1.0"))
    assert fast.fast
    exercise(fast)
    exercise(p.get_tracer("scope", "1.0"))
    lean, sdk = exporter.get_finished_spans()
    assert type(lean) is LeanSpan and isinstance(lean, SdkSpan)
    assert comparable(lean) == comparable(sdk)
    assert lean.end_time >= lean.start_time > 0
    # Both exporters' encoders accept it.
    assert encode_spans([lean]).resource_spans
    assert '"name": "op renamed"' in lean.to_json()


def test_children_and_remote_parents() -> None:
    p, exporter = provider()
    fast = FastTracer(p.get_tracer("scope"))
    root = fast.start_span("root")
    child = fast.start_span("child", trace.set_span_in_context(root))
    child.end()
    root.end()
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("k", "v")]))
    from_remote = fast.start_span("server", trace.set_span_in_context(NonRecordingSpan(remote)))
    from_remote.end()
    c, r, s = exporter.get_finished_spans()
    assert c.parent == r.context and c.context.trace_id == r.context.trace_id
    assert r.parent is None
    assert s.parent == remote and s.context.trace_id == 0xABC
    assert s.context.trace_state == remote.trace_state
    assert not s.context.is_remote
    with trace.use_span(root, end_on_exit=False):  # the current span is the default parent
        implicit = fast.start_span("implicit")
    assert implicit.parent == root.get_span_context()


@pytest.mark.parametrize("sampler", [
    ALWAYS_ON, ALWAYS_OFF, TraceIdRatioBased(0.5), ParentBased(TraceIdRatioBased(0.5)),
    ParentBasedTraceIdRatio(0.25), ParentBased(ALWAYS_OFF, remote_parent_sampled=ALWAYS_OFF),
])
def test_sampling_decisions_match_the_sdk(sampler: Sampler) -> None:
    ids = FixedIds()
    p, _ = provider(sampler, id_generator=ids)
    fast = FastTracer(p.get_tracer("s"))
    sdk = p.get_tracer("s")
    parents = [None]
    for remote in (True, False):
        for flags in (0, 1):
            ctx = SpanContext(0x1234, 0x99, remote, TraceFlags(flags))
            parents.append(trace.set_span_in_context(NonRecordingSpan(ctx)))
    decisions = set()
    for parent in parents:
        for trace_id in range(1, 2**64, 2**59):  # root spans: spread over the ratio range
            ids.trace_id = trace_id
            a, b = fast.start_span("x", parent), sdk.start_span("x", parent)
            assert a.is_recording() == b.is_recording()
            assert a.get_span_context() == b.get_span_context()
            decisions.add(a.is_recording())
            a.end()
            b.end()
    if sampler not in (ALWAYS_ON, ALWAYS_OFF):
        assert decisions == {True, False}


class FixedIds(IdGenerator):
    trace_id = 1

    def generate_span_id(self) -> int:
        return 7

    def generate_trace_id(self) -> int:
        return self.trace_id


class TaggingSampler(Sampler):
    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> SamplingResult:
        if name == "drop":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampler": "tag"},
                              TraceState([("tag", "1")]))

    def get_description(self) -> str:
        return "tagging"


def test_an_unknown_sampler_is_asked() -> None:
    p, exporter = provider(TaggingSampler())
    fast = FastTracer(p.get_tracer("s"))
    fast.start_span("drop").end()
    fast.start_span("keep", attributes={"x": 1}).end()
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes) == {"sampler": "tag", "x": 1}
    assert span.context.trace_state.get("tag") == "1"


def test_processors_see_start_and_end() -> None:
    p, _ = provider()
    rec = Recorder()
    p.add_span_processor(rec)
    span = FastTracer(p.get_tracer("s")).start_span("x")
    assert rec.started == [span] and rec.ended == []
    span.end()
    span.end()  # a second end is ignored
    assert rec.ended == [span]


def test_processors_are_called_in_order_and_ones_added_later_too() -> None:
    calls: list[str] = []

    class Named(Recorder):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            calls.append(f"{self.name}.start")

        def _on_ending(self, span: Any) -> None:
            calls.append(f"{self.name}.ending")

        def on_end(self, span: Any) -> None:
            calls.append(f"{self.name}.end")

    p, exporter = provider()  # a SimpleSpanProcessor: its empty on_start/_on_ending are skipped
    p.add_span_processor(Named("a"))
    tracer = FastTracer(p.get_tracer("s"))
    span = tracer.start_span("x")
    p.add_span_processor(Named("b"))  # added while the span runs: it sees the end, as in the SDK
    span.end()
    assert calls == ["a.start", "a.ending", "b.ending", "a.end", "b.end"]
    assert len(exporter.get_finished_spans()) == 1
    calls.clear()
    tracer.start_span("y").end()
    assert calls == ["a.start", "b.start", "a.ending", "b.ending", "a.end", "b.end"]


def test_empty_processor_hooks_are_recognised() -> None:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from obskit._fastspan import _does_something
    from obskit._tracing import OrderSpanProcessor

    assert not _does_something(SpanProcessor.on_start)  # docstring only
    assert not _does_something(BatchSpanProcessor.on_start)  # pass
    assert not _does_something(BatchSpanProcessor._on_ending)
    assert _does_something(BatchSpanProcessor.on_end)
    assert _does_something(OrderSpanProcessor.on_start)
    assert _does_something(print)  # a builtin is called, not inspected


def test_limits_like_the_sdk() -> None:
    p, exporter = provider(span_limits=SpanLimits(max_span_attributes=2, max_events=1,
                                                  max_links=1))
    for tracer in (FastTracer(p.get_tracer("s")), p.get_tracer("s")):
        span = tracer.start_span("x")
        for i in range(4):
            span.set_attribute(f"k{i}", i)
        span.set_attribute("", 1)  # invalid key: dropped
        span.add_event("a")
        span.add_event("b")
        span.add_link(SpanContext(5, 6, True, TraceFlags(1)))
        span.add_link(SpanContext(7, 8, True, TraceFlags(1)))
        span.add_link(SpanContext(0, 0, False))  # invalid, no attributes: ignored
        span.end()
    lean, sdk = exporter.get_finished_spans()
    assert type(lean) is LeanSpan
    assert comparable(lean) == comparable(sdk)
    assert dict(lean.attributes) == {"k2": 2, "k3": 3} and lean.dropped_attributes == 3
    assert [e.name for e in lean.events] == ["b"] and lean.dropped_events == 1
    assert lean.links[0].context.span_id == 8 and lean.dropped_links == 1


def test_links_given_at_start_like_the_sdk() -> None:
    """Within the limit, then past it (the oldest dropped and counted), then one added later."""
    def links() -> list[trace.Link]:
        return [trace.Link(SpanContext(5, 6, True, TraceFlags(1))),
                trace.Link(SpanContext(0, 0, False)),  # invalid, no attributes: ignored
                trace.Link(SpanContext(7, 8, True, TraceFlags(1)), {"k": "v"})]

    for max_links in (2, 1):
        p, exporter = provider(span_limits=SpanLimits(max_links=max_links))
        for tracer in (FastTracer(p.get_tracer("s")), p.get_tracer("s")):
            span = tracer.start_span("x", links=links())
            span.add_link(SpanContext(9, 10, True, TraceFlags(1)))
            span.end()
        lean, sdk = exporter.get_finished_spans()
        assert type(lean) is LeanSpan
        assert comparable(lean) == comparable(sdk)
        assert lean.links[-1].context.span_id == 10
        assert lean.dropped_links == (1 if max_links == 2 else 2)


def test_a_value_length_limit_uses_the_sdk_path() -> None:
    p, exporter = provider(span_limits=SpanLimits(max_span_attribute_length=3))
    fast = FastTracer(p.get_tracer("s"))
    assert not fast.fast
    span = fast.start_span("x")
    span.set_attribute("k", "abcdef")
    span.end()
    (sdk,) = exporter.get_finished_spans()
    assert type(sdk) is not LeanSpan and sdk.attributes["k"] == "abc"


def test_a_disabled_tracer_gives_non_recording_spans() -> None:
    p, exporter = provider()
    from opentelemetry.sdk.trace import _disable_tracer_configurator

    p._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)
    span = FastTracer(p.get_tracer("s")).start_span("x")
    assert not span.is_recording()
    span.end()
    assert exporter.get_finished_spans() == ()
