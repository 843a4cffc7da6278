from opentelemetry.sdk.trace import SpanLimits, TracerProvider

from obskit._tracing import set_attributes_fast


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
