"""obskit's direct OTel context operations do what the API's functions do."""

from __future__ import annotations

from opentelemetry import baggage, trace
from opentelemetry import context as api
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from obskit import _otel_context


def _span(n: int) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(n, n, False, TraceFlags(1)))


def test_with_span_matches_set_span_in_context_and_keeps_the_rest() -> None:
    base = baggage.set_baggage("order.id", "o-1", api.Context())
    ours = _otel_context.with_span(_span(7), base)
    theirs = trace.set_span_in_context(_span(7), base)
    assert trace.get_current_span(ours).get_span_context() == (
        trace.get_current_span(theirs).get_span_context())
    assert baggage.get_baggage("order.id", ours) == "o-1"
    assert dict(base) != dict(ours)  # a copy: the original is unchanged
    assert _otel_context.span_of(base) is None
    assert _otel_context.span_of(ours).get_span_context().trace_id == 7


def test_attach_and_detach_are_the_current_context() -> None:
    before = api.get_current()
    ctx = _otel_context.with_span(_span(9), _otel_context.current())
    token = _otel_context.attach(ctx)
    try:
        assert api.get_current() is ctx
        assert trace.get_current_span().get_span_context().trace_id == 9
        inner = api.attach(api.set_value("k", "v"))  # the API's attach nests inside ours
        assert api.get_value("k") == "v"
        api.detach(inner)
        assert _otel_context.current() is ctx
    finally:
        _otel_context.detach(token)
    assert api.get_current() is before
