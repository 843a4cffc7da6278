"""``traceparent`` + ``baggage`` headers per message, with a fast path for the default propagator.

With the default ``OTEL_PROPAGATORS`` (W3C trace context + W3C baggage) the generic propagator
API costs more per message than the whole rest of the header work. When the global propagator
is exactly that pair, the headers are written and read here directly, producing and accepting
the same strings; anything unusual (other propagators, ``tracestate``, baggage that needs
percent-encoding or exceeds the W3C limits) takes the generic ``obskit.propagation`` path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import quote_plus

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_value
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from obskit import _fastpaths, propagation

# Characters quote_plus() leaves alone and W3C baggage accepts in keys and values unescaped.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+").fullmatch
_BAGGAGE_PLAIN = re.compile(
    r"[A-Za-z0-9_.~-]+=[A-Za-z0-9_.~-]+(?:,[A-Za-z0-9_.~-]+=[A-Za-z0-9_.~-]+)*").fullmatch
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})").fullmatch
# Far inside the W3C limits (180 pairs, 4096 bytes a pair, 8192 a header): no entry is dropped.
_MAX_FAST_BAGGAGE = 4096
_MAX_FAST_PAIRS = 64

try:  # the context keys of the current span and of baggage (private API: a fast path)
    from opentelemetry.baggage import _BAGGAGE_KEY
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # a future API without them: the generic path
    _SPAN_KEY = _BAGGAGE_KEY = None  # type: ignore[assignment]
    _unavailable = "opentelemetry's _SPAN_KEY / _BAGGAGE_KEY are missing"
else:
    _unavailable = "" if _fastpaths.enabled("amqp_propagation") else "disabled"

_default: tuple[object, bool] = (None, False)
# The last baggage dict encoded and its header: one order's publishes share the dict.
_last_baggage: tuple[object, str | None] = (None, None)


def _is_default() -> bool:
    """True when the fast path is on and the global propagator is OTel's default
    tracecontext + baggage composite (decided again, and reported, when it changes)."""
    global _default
    textmap = propagate.get_global_textmap()
    if _default[0] is textmap:
        return _default[1]
    inner = getattr(textmap, "_propagators", None)
    if _unavailable:
        reason = _unavailable
    elif type(textmap) is not CompositePropagator:
        reason = f"the global propagator is a {type(textmap).__name__} (OTEL_PROPAGATORS)"
    elif not isinstance(inner, list | tuple):
        reason = "CompositePropagator._propagators is missing"
    elif [type(p) for p in inner] != [TraceContextTextMapPropagator, W3CBaggagePropagator]:
        reason = "the global propagator is not tracecontext,baggage (OTEL_PROPAGATORS)"
    else:
        reason = ""
    _fastpaths.report("amqp_propagation", not reason, reason)
    _default = (textmap, not reason)
    return not reason


def inject(headers: MutableMapping[str, Any], span: trace.Span, context: Context) -> None:
    """Write ``span``'s trace context and ``context``'s baggage into ``headers``."""
    if not _is_default():
        propagation.inject(headers, context)
        return
    sc = span.get_span_context()
    if sc.trace_state:
        propagation.inject(headers, context)
        return
    if sc.is_valid:
        headers["traceparent"] = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"
    entries = get_value(_BAGGAGE_KEY, context)
    if isinstance(entries, Mapping) and entries:
        value = _encode_baggage(entries)
        if value is None:
            W3CBaggagePropagator().inject(headers, context)
        else:
            headers["baggage"] = value


def _encode_baggage(entries: Mapping[str, object]) -> str | None:
    global _last_baggage
    # Baggage dicts are never mutated (set_baggage copies), so identity is a safe cache key.
    last, header = _last_baggage
    if last is entries:
        return header
    n = len(entries)
    if n > _MAX_FAST_PAIRS:
        return None
    header = ",".join([f"{k}={v}" for k, v in entries.items()])
    # One regex for the usual case (as many "=" as pairs: no "," or "=" inside a key or value);
    # otherwise escape pair by pair.
    if header.count("=") != n or not _BAGGAGE_PLAIN(header):
        parts = []
        for k, v in entries.items():
            k, v = str(k), str(v)
            parts.append((k if _PLAIN(k) else quote_plus(k)) + "="
                         + (v if _PLAIN(v) else quote_plus(v)))
        header = ",".join(parts)
    if len(header) > _MAX_FAST_BAGGAGE:
        return None
    _last_baggage = (entries, header)
    return header


def extract(headers: Mapping[str, Any]) -> Context:
    """The context (remote parent span + baggage) carried by ``headers``; a fresh context."""
    if not _is_default() or "tracestate" in headers:
        return propagation.extract(headers)
    # One Context built from one dict: what set_span_in_context + set_baggage per pair give.
    values: dict[str, object] = {}
    tp = headers.get("traceparent")
    if tp is not None:
        if isinstance(tp, bytes | bytearray):
            tp = bytes(tp).decode("ascii", "replace")
        m = _TRACEPARENT(tp) if isinstance(tp, str) else None
        if m is None:
            return propagation.extract(headers)
        trace_id, span_id = int(m.group(1), 16), int(m.group(2), 16)
        if trace_id and span_id:
            values[_SPAN_KEY] = trace.NonRecordingSpan(trace.SpanContext(
                trace_id, span_id, is_remote=True,
                trace_flags=trace.TraceFlags(int(m.group(3), 16))))
    bg = headers.get("baggage")
    if bg:
        if isinstance(bg, bytes | bytearray):
            bg = bytes(bg).decode("utf-8", "replace")
        if (not isinstance(bg, str) or len(bg) > _MAX_FAST_BAGGAGE
                or bg.count(",") >= _MAX_FAST_PAIRS or not _BAGGAGE_PLAIN(bg)):
            return propagation.extract(headers)
        entries: dict[str, object] = {}
        for pair in bg.split(","):
            k, _, v = pair.partition("=")
            entries[k] = v
        values[_BAGGAGE_KEY] = entries
    return Context(values)


_is_default()  # decide and report now (again when the global propagator changes)
