"""Lean spans for obskit's own hot paths: the HTTP server span and the messaging spans.

A span from the SDK's ``Tracer.start_span`` costs ~20 µs in a tight loop and 60-80 µs per request
in a loaded server (measured, docs/performance-http.md): it builds a ``SamplingResult``, a
``BoundedAttributes`` with its own lock, two ``BoundedList``s, a lock per span, and on ``end()`` a
second, copied ``ReadableSpan`` for the processors — and every one of those objects survives in
the batch queue until the next export, which makes the garbage collector's passes longer.

``FastTracer.start_span`` makes the same span with less: the sampling decision of the samplers
obskit configures (``ParentBased`` / ``TraceIdRatioBased`` / always on / always off) is taken
inline, the provider's processors are called directly, in order, skipping hooks that are empty
functions (``BatchSpanProcessor.on_start``, the SDK's ``_on_ending``s), and the span is a
``LeanSpan`` — a subclass of the SDK's ``Span`` (so ``isinstance`` checks, processors and
exporters see an SDK span) whose attributes live in a plain dict, whose events and links are
created only when used, and which is handed to the processors itself on ``end()`` instead of a
copy (after ``end()`` it ignores changes, as the SDK's does).

Everything the provider decides is still honoured: its processors see ``on_start``/``on_end``
exactly as with SDK spans, its id generator, resource, span limits and tracer configuration are
used, and a sampler obskit does not know is asked through ``should_sample`` (its attributes and
trace state kept). When the SDK's internals differ from what this module expects (another SDK
version), ``FastTracer`` hands every call to the SDK tracer instead — checked once per process.
"""

from __future__ import annotations

import dis
import random
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import (
    Event,
    Span,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState

from obskit import _fastpaths
from obskit._internal import internal_error
from obskit._otel_context import current as _current_context
from obskit._otel_context import span_of as _span_of

__all__ = ["FastTracer", "LeanSpan"]

try:  # the SDK's own value cleaning (sequences to tuples, unknown types to str)
    from opentelemetry.attributes import _clean_attribute_value as _clean_value
except ImportError:  # older API: FastTracer's self-check fails and the SDK path is used
    _clean_value = None  # type: ignore[assignment]

_INTERNAL = SpanKind.INTERNAL
_UNSET_STATUS = Status(StatusCode.UNSET)  # what an SDK span starts with
_lean_spans_work: bool | None = None  # FastTracer._self_check() of this process
_EMPTY_STATE = TraceState()
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_getrandbits = random.getrandbits  # what RandomIdGenerator uses
_tuple_new = tuple.__new__
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_PARENT_BASED = (ParentBased, ParentBasedTraceIdRatio)  # exact types: a subclass may decide
_RATIO = (TraceIdRatioBased,)


def _does_something(hook: Any) -> bool:
    """False for a hook whose function body is only ``pass`` and/or a docstring."""
    func = getattr(hook, "__func__", hook)
    if getattr(func, "__code__", None) is None:
        return hook is not None  # a builtin or other callable: call it
    try:
        ops = [(i.opname, i.argval) for i in dis.get_instructions(func)
               if i.opname not in ("RESUME", "NOP", "CACHE")]
    except Exception:  # cannot tell: call it
        return True
    return ops not in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])


class _Hooks:
    """The processors' ``on_start`` / ``_on_ending`` / ``on_end`` that do something, in order.

    Read from the provider's ``SynchronousMultiSpanProcessor`` and derived again whenever its
    processor tuple changes (``add_span_processor`` replaces it). Any other processor object is
    called as it is.
    """

    __slots__ = ("processor", "_seen", "starts", "endings", "ends")

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self._seen: Any = None
        self.starts: tuple[Any, ...] = ()
        self.endings: tuple[Any, ...] = ()
        self.ends: tuple[Any, ...] = ()
        self.current()

    def current(self) -> _Hooks:
        processor = self.processor
        if type(processor) is not SynchronousMultiSpanProcessor:
            if self._seen is None:
                self._seen = processor
                self.starts = (processor.on_start,)
                on_ending = getattr(processor, "_on_ending", None)
                self.endings = (on_ending,) if on_ending is not None else ()
                self.ends = (processor.on_end,)
            return self
        processors = processor._span_processors
        if processors is not self._seen:
            self.starts = tuple(p.on_start for p in processors if _does_something(p.on_start))
            self.endings = tuple(p._on_ending for p in processors
                                 if _does_something(getattr(p, "_on_ending", None)))
            self.ends = tuple(p.on_end for p in processors if _does_something(p.on_end))
            self._seen = processors
        return self


class LeanSpan(Span):
    """An SDK ``Span`` without the per-span locks, bounded containers and end-time copy.

    Thread safety: attribute writes are single dict operations (atomic under the GIL); a span is
    ended once by the code that started it.
    """

    # Defaults the SDK's inherited methods read (``__exit__``, ``record_exception``).
    _record_exception = True
    _set_status_on_exception = True
    _instrumentation_info = None
    _sampler = None
    _trace_config = None
    _record_end_metrics: Any = None
    _dropped = 0
    # Taken only by the SDK's rarely used ``@_check_span_ended`` methods (``set_status``): one lock
    # for all lean spans instead of one allocated per span.
    _lock = threading.Lock()

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, tracer: FastTracer, attributes: Any = None,
                 links: Sequence[trace_api.Link] = ()) -> None:
        # Deliberately not calling Span.__init__: this sets exactly the fields ReadableSpan and
        # the inherited Span methods read (checked once per FastTracer by _self_check()).
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._instrumentation_scope = tracer.scope
        self._resource = tracer.resource
        self._status = tracer.unset_status
        self._span_processor = tracer.processor
        self._hooks = tracer.hooks
        self._limits = tracer.limits
        self._max_attributes = tracer.max_attributes
        self._start_time: int | None = None
        self._end_time: int | None = None
        self._attributes: dict[str, Any] = {}
        self._events: Any = ()
        self._links: Any = ()
        if attributes:
            self.set_attributes(attributes)
        if links:
            self._start_links(links, tracer)

    # -- attributes: validated like the SDK's, stored in a plain dict -----------------------------
    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            return
        if not key or not isinstance(key, str):
            self._dropped += 1
            return
        value = _clean_value(value, None)
        attrs = self._attributes
        if key not in attrs and len(attrs) >= self._max_attributes:  # the SDK drops the oldest
            del attrs[next(iter(attrs))]
            self._dropped += 1
        attrs[key] = value

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_trusted_attributes(self, attributes: dict[str, Any]) -> None:
        """Attributes obskit built itself (valid OTel types): no per-value validation."""
        if self._end_time is not None:
            return
        attrs = self._attributes
        if len(attrs) + len(attributes) <= self._max_attributes:
            attrs.update(attributes)
        else:
            self.set_attributes(attributes)

    # -- events and links: the SDK's bounded containers, created on first use --------------------
    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        limits = self._limits
        events = self._events
        if events == ():  # past the limit the oldest is dropped and counted, as the SDK does
            events = self._events = BoundedList(limits.max_events)
        events.append(Event(name=name, timestamp=timestamp, attributes=BoundedAttributes(
            limits.max_event_attributes, attributes,
            max_value_len=limits.max_attribute_length, immutable=True)))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end_time is not None or context is None:
            return
        if not (context.is_valid or attributes or context.trace_state):  # the SDK's rule
            return
        limits = self._limits
        links = self._links
        if type(links) is tuple:
            links = self._links = BoundedList.from_seq(limits.max_links, links)
        links.append(trace_api.Link(context, BoundedAttributes(
            limits.max_link_attributes, attributes,
            max_value_len=limits.max_attribute_length, immutable=True)))

    def _start_links(self, links: Sequence[trace_api.Link], tracer: FastTracer) -> None:
        """Links given at start: a tuple while within the limit (nothing to drop or count)."""
        limits = self._limits
        valid = []
        for link in links:
            context, attributes = link.context, link.attributes
            if context is None or not (context.is_valid or attributes or context.trace_state):
                continue  # the SDK's rule
            valid.append(trace_api.Link(context, BoundedAttributes(
                limits.max_link_attributes, attributes,
                max_value_len=limits.max_attribute_length, immutable=True)
                if attributes else tracer.no_attributes))
        if len(valid) <= limits.max_links:
            self._links = tuple(valid)
        else:  # past the limit the oldest are dropped and counted, as the SDK does
            bounded = self._links = BoundedList(limits.max_links)
            bounded.extend(valid)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def start(self, start_time: int | None = None, parent_context: Any = None) -> None:
        if self._start_time is not None:
            return
        self._start_time = start_time if start_time is not None else time_ns()
        for on_start in self._hooks.current().starts:
            on_start(self, parent_context=parent_context)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None or self._start_time is None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        if self._record_end_metrics is not None:
            self._record_end_metrics()
        hooks = self._hooks.current()
        for on_ending in hooks.endings:
            on_ending(self)
        for on_end in hooks.ends:
            on_end(self)  # the span itself: it ignores changes from here on


class FastTracer:
    """``start_span`` with the SDK tracer's semantics and less of its cost (see module doc)."""

    def __init__(self, sdk_tracer: Any) -> None:
        self.sdk = sdk_tracer
        self.fast = False
        self.unset_status = _UNSET_STATUS
        if not isinstance(sdk_tracer, SdkTracer):  # a proxy or another SDK: nothing to speed up
            return
        if not _fastpaths.enabled("lean_spans"):
            _fastpaths.report("lean_spans", False, "disabled")
            return
        try:
            self.scope = sdk_tracer._instrumentation_scope
            self.resource = sdk_tracer.resource
            self.processor = sdk_tracer.span_processor
            self.hooks = _Hooks(self.processor)
            self.sampler: Any = sdk_tracer.sampler
            self.ids = sdk_tracer.id_generator
            self.limits: SpanLimits = sdk_tracer._span_limits
            self._config = sdk_tracer._tracer_config
            self._metrics = sdk_tracer._tracer_metrics
            if _clean_value is None:
                _fastpaths.report("lean_spans", False,
                                  "opentelemetry.attributes._clean_attribute_value is missing")
                return
            if self.limits.max_span_attribute_length is not None:
                # Values would need truncating on every write: leave it to the SDK.
                _fastpaths.report("lean_spans", False, "a span attribute length limit is set")
                return
            self.max_attributes = self.limits.max_span_attributes or 128
            # Shared by every link started without attributes (immutable: safe to share).
            self.no_attributes = BoundedAttributes(self.limits.max_link_attributes, None,
                                                   immutable=True)
            self._random_ids = type(self.ids) is RandomIdGenerator
            self._root_bound = self._bound_without_parent()
            self._metrics_noop = type(self._metrics).__name__ == "NoOpTracerMetrics"
            global _lean_spans_work
            if _lean_spans_work is None:  # a property of the SDK version: checked once
                _lean_spans_work = self._self_check()
            self.fast = _lean_spans_work
            _fastpaths.report("lean_spans", self.fast,
                              "" if self.fast else "a LeanSpan does not read back like an SDK span")
        except Exception as exc:  # another SDK version: the SDK path, always correct
            self.fast = False
            _fastpaths.report("lean_spans", False,
                              f"SDK internals differ: {type(exc).__name__}: {exc}")
            internal_error("fastspan.init", exc)

    def _self_check(self) -> bool:
        """A LeanSpan must read back like an SDK span (ReadableSpan properties and JSON)."""
        ctx = SpanContext(1, 1, False, _SAMPLED, _EMPTY_STATE)
        span = LeanSpan("check", ctx, None, _INTERNAL, self)
        span._hooks = _Hooks(SpanProcessor())  # the base class: no-ops
        span.start()
        span.set_attribute("a", 1)
        span.set_attribute("seq", [1, 2])  # the SDK keeps sequences as tuples
        span.set_trusted_attributes({"b": "x"})
        span.add_event("e", {"k": "v"})
        span.end()
        built = _tuple_new(SpanContext, (1, 2, False, _SAMPLED, _EMPTY_STATE, True))
        ok = (built == SpanContext(1, 2, False, _SAMPLED, _EMPTY_STATE) and built.is_valid
              and span.attributes == {"a": 1, "seq": (1, 2), "b": "x"} and len(span.events) == 1
              and span.end_time is not None and span.links == () and bool(span.to_json())
              and span.dropped_attributes == 0 and span.status.is_unset)
        return bool(ok)

    def _bound_without_parent(self) -> int | None:
        """For a span without a parent, the sampler's decision as ``trace_id & mask < bound``
        (taken inline in ``start_span``); None: ``_decide`` it."""
        sampler = self.sampler
        if type(sampler) in _PARENT_BASED:
            sampler = sampler._root
        if sampler is ALWAYS_ON:
            return _TRACE_ID_LIMIT + 1
        if sampler is ALWAYS_OFF:
            return 0
        if type(sampler) in _RATIO:
            return int(sampler.bound)
        return None

    def _decide(self, parent: SpanContext | None, trace_id: int) -> bool | None:
        """The sampling decision of the samplers obskit configures; None: ask the sampler."""
        sampler = self.sampler
        if type(sampler) in _PARENT_BASED:
            if parent is not None:
                sampled = parent.trace_flags.sampled
                if parent.is_remote:
                    sampler = (sampler._remote_parent_sampled if sampled
                               else sampler._remote_parent_not_sampled)
                else:
                    sampler = (sampler._local_parent_sampled if sampled
                               else sampler._local_parent_not_sampled)
            else:
                sampler = sampler._root
        if sampler is ALWAYS_ON:
            return True
        if sampler is ALWAYS_OFF:
            return False
        if type(sampler) in _RATIO:
            return trace_id & _TRACE_ID_LIMIT < sampler.bound
        if type(sampler) is StaticSampler:
            return bool(sampler._decision.is_sampled())
        return None

    def start_span(self, name: str, context: Any = None, kind: SpanKind = _INTERNAL,
                   attributes: Any = None, links: Sequence[trace_api.Link] | None = ()) -> Any:
        links = links or ()
        if not self.fast or not self._config.is_enabled:
            return self.sdk.start_span(name, context, kind, attributes, links)
        parent_span = _span_of(context if context is not None else _current_context())
        parent: SpanContext | None = None
        if parent_span is not None:
            parent = parent_span.get_span_context()
            if parent is not None and not parent.is_valid:
                parent = None
        random_ids = self._random_ids
        if parent is None:
            if random_ids:  # RandomIdGenerator.generate_trace_id, inline
                trace_id = _getrandbits(128)
                while not trace_id:
                    trace_id = _getrandbits(128)
                random_id = True
            else:
                trace_id = self.ids.generate_trace_id()
                random_id = self.ids.is_trace_id_random()
            trace_state = _EMPTY_STATE
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
            trace_state = parent.trace_state
        bound = self._root_bound
        if parent is None and bound is not None:
            sampled: bool | None = trace_id & _TRACE_ID_LIMIT < bound
        else:
            sampled = self._decide(parent, trace_id)
        recording = sampled
        sampler_attributes = None
        if sampled is None:  # a sampler obskit does not know: its own decision, attributes, state
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()
            recording = result.decision.is_recording()
            sampler_attributes = result.attributes
            if result.trace_state is not None:
                trace_state = result.trace_state
            decision = result.decision
        else:
            decision = None  # made below only where the SDK's span metrics need it
        if random_id:
            flags = _SAMPLED_RANDOM if sampled else _UNSAMPLED_RANDOM
        else:
            flags = _SAMPLED if sampled else _UNSAMPLED
        if random_ids:  # ids known to be valid: SpanContext.__new__ without its range checks
            span_id = _getrandbits(64)
            while not span_id:
                span_id = _getrandbits(64)
            span_context = _tuple_new(SpanContext,
                                      (trace_id, span_id, False, flags, trace_state, True))
        else:
            span_context = SpanContext(trace_id, self.ids.generate_span_id(), False, flags,
                                       trace_state)
        end_metrics = None
        if not self._metrics_noop:
            if decision is None:  # an enum member read is ~60 ns on Python 3.11: only here
                decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP
            end_metrics = self._metrics.start_span(parent, decision)
        if not recording:
            return NonRecordingSpan(span_context)
        span = LeanSpan(name, span_context, parent, kind, self, sampler_attributes, links)
        if attributes:
            span.set_attributes(attributes)
        if end_metrics is not None:
            span._record_end_metrics = end_metrics
        span.start(parent_context=context)
        return span


def probe_fast_path() -> None:
    """Decide (and report) ``lean_spans`` with a throwaway provider: ``obskit doctor``."""
    FastTracer(TracerProvider(shutdown_on_exit=False).get_tracer("obskit.probe"))
