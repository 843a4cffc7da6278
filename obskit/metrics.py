"""The metrics catalogue: every Prometheus family obskit records, in one place.

docs/metrics.md lists the same families; ``tests/test_metrics.py`` checks that they match.

Two guards keep series bounded, because one unbounded label (an order id, a raw URL path) can take
Prometheus down:

* label *names* that are known to be unbounded (``order_id``, ``trace_id``, ``path``, ...) are
  refused with ``ValueError`` when a family is declared;
* every family caps its distinct label sets (``max_series``); past the cap new values are folded
  into ``"__overflow__"`` and ``obskit_metrics_series_overflow_total`` counts it, so a bug shows up
  as a number instead of an outage.

Histograms carry an exemplar with the current ``trace_id`` when a span is recording (OpenMetrics
exposition only; prometheus-client does not store exemplars in multiprocess mode).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from obskit import _deferred, _fastpaths, _internal

__all__ = [
    "FORBIDDEN_LABELS",
    "OVERFLOW",
    "Catalogue",
    "LabelGuardError",
    "catalogue",
]

#: Label names that are unbounded by nature. They belong on spans, logs and exemplars.
FORBIDDEN_LABELS = frozenset(
    {
        "order_id", "order", "trace_id", "span_id", "message_id", "request_id", "correlation_id",
        "user_id", "customer_id", "customer_email", "email", "idempotency_key", "tracking_token",
        "api_key", "path", "url", "raw_path", "query", "ip", "client_ip", "session_id",
    }
)
OVERFLOW = "__overflow__"
DEFAULT_MAX_SERIES = 500

# Seconds. Covers a 1 ms cache hit up to a 30 s print-job step.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# Order stage ages can be minutes (a print) or hours (a stuck order).
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class LabelGuardError(ValueError):
    """A metric was declared with a label that would make its series unbounded."""


class _Guarded:
    """A family whose ``labels()`` caches children and caps distinct label sets.

    The cache makes the hot path one dict lookup (prometheus-client takes a lock per
    ``labels()``).
    """

    __slots__ = ("metric", "name", "max_series", "_children", "_series", "_lock", "_overflow",
                 "_n_labels", "_bounds")

    def __init__(self, metric: Any, name: str, n_labels: int, max_series: int,
                 overflow: Counter | None, bounds: tuple[float, ...] | None = None) -> None:
        self.metric = metric
        self._bounds = bounds  # a histogram's buckets: its children take exemplars
        self.name = name
        self.max_series = max_series
        self._n_labels = n_labels
        self._children: dict[tuple[Any, ...], Any] = {}  # raw values -> child (cache)
        self._series: dict[tuple[str, ...], Any] = {}  # distinct label sets -> child
        self._lock = threading.Lock()
        self._overflow = overflow

    def labels(self, *values: Any) -> Any:
        child = self._children.get(values)
        if child is not None:
            return child
        key = tuple("" if v is None else str(v) for v in values)
        if len(key) != self._n_labels:
            raise ValueError(f"{self.name}: expected {self._n_labels} label values, got {key}")
        with self._lock:
            child = self._series.get(key)
            if child is None:
                if len(self._series) >= self.max_series:
                    # Not cached under the raw values: each overflowing call is counted.
                    if self._overflow is not None:
                        self._overflow.labels(self.name).inc()
                    key = (OVERFLOW,) * self._n_labels
                    child = self._series.get(key)
                    if child is None:
                        child = self._series[key] = self._new_child(key)
                    return child
                child = self._series[key] = self._new_child(key)
            if len(self._children) < 4 * self.max_series:
                self._children[values] = child
        return child

    def _new_child(self, key: tuple[str, ...]) -> Any:
        child = self.metric.labels(*key)
        if self._bounds is not None:
            _bounds[child] = self._bounds
        return child

    def __getattr__(self, item: str) -> Any:
        return getattr(self.metric, item)


#: A bucket's exemplar is replaced at most this often (seconds). Prometheus keeps one exemplar per
#: bucket and reads it once per scrape, so replacing it on every observation only costs: building
#: and validating an exemplar is 1.2 µs of a 2 µs observe. A bucket that is rarely hit (the slow
#: tail) still gets the trace of its first request after each interval.
EXEMPLAR_INTERVAL = 1.0
_exemplar_at: dict[tuple[Any, int], float] = {}  # (histogram child, bucket index) -> monotonic
#: The bucket bounds of the catalogue's histogram children (they take exemplars); a histogram
#: declared elsewhere takes none.
_bounds: dict[Any, tuple[float, ...]] = {}


def _exemplar_due(child: Any, value: float) -> tuple[Any, int] | None:
    """The (child, bucket) key when ``value``'s bucket may take a new exemplar now, else None."""
    bounds = _bounds.get(child)
    if bounds is None:
        return None
    key = (child, bisect_left(bounds, value))
    if monotonic() - _exemplar_at.get(key, -EXEMPLAR_INTERVAL) >= EXEMPLAR_INTERVAL:
        return key
    return None


def observe_exemplar(child: Any, value: float, trace_id: str) -> bool:
    """Observe ``value`` with ``trace_id`` as its bucket's exemplar if the bucket may take one
    now (True); else observe nothing (False)."""
    key = _exemplar_due(child, value)
    if key is None:
        return False
    _exemplar_at[key] = monotonic()
    child.observe(value, {"trace_id": trace_id})
    return True


def observe_traced(child: Any, value: float, trace_id: str | None) -> None:
    """Observe ``value``; ``trace_id`` becomes the bucket's exemplar unless it got one lately."""
    if trace_id is None or not observe_exemplar(child, value, trace_id):
        child.observe(value)


def observe_span(child: Any, value: float, span: Any) -> None:
    """``observe_traced`` with ``span``'s trace id, formatted only when the bucket takes it."""
    key = _exemplar_due(child, value)
    if key is not None:
        trace_id = trace_id_of(span)
        if trace_id is not None:
            _exemplar_at[key] = monotonic()
            child.observe(value, {"trace_id": trace_id})
            return
    child.observe(value)


def trace_id_of(span: Any) -> str | None:
    """The hex trace id of ``span`` when it is sampled (an exemplar is worth keeping), else None."""
    sc = span.get_span_context()
    if not sc.is_valid or not sc.trace_flags.sampled:
        return None
    return format(sc.trace_id, "032x")


def observe(histogram_child: Any, value: float) -> None:
    """Observe with the current span's trace_id as exemplar when one is available."""
    observe_span(histogram_child, value, trace.get_current_span())


class LeanHistogram:
    """A labelled histogram family, exposed exactly as prometheus-client's ``Histogram`` is,
    whose ``labels(...).observe()`` costs less.

    prometheus-client's child observes through six Python calls and two locks (its sum's and
    its bucket's), a linear scan of the bounds in between: ~14k instructions per request of
    obskit's HTTP middleware at 10 % sampling, callgrind, 2.4 % of the request
    (benchmarks/HISTORY.md). A ``LeanHistogram`` child is one call: a ``bisect`` and one lock,
    6.6k instructions less.
    The family is a custom collector (prometheus-client's public ``HistogramMetricFamily``):
    the same buckets, ``_count``, ``_sum``, ``_created`` (unless prometheus-client's created
    series are turned off) and exemplars, checked sample for sample against a ``Histogram`` fed
    the same observations (tests/test_metrics.py).

    Not in multiprocess mode, where only prometheus-client's own metrics write the shared files:
    ``Catalogue`` makes a ``Histogram`` there, and where the ``lean_histograms`` fast path is
    disabled.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry | None) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds[-1] != _INF:
            bounds.append(_INF)
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)
        self._children: dict[tuple[str, ...], _LeanChild] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: Any) -> _LeanChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected {len(self._labelnames)} label values, "
                             f"got {key}")
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = _LeanChild(self._bounds)
            return child

    def describe(self) -> list[Any]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> list[Any]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        created = _created_series()
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            with child.lock:
                counts, total, exemplars = list(child.counts), child.sum, list(child.exemplars)
            buckets: list[Any] = []
            acc = 0.0
            for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
                acc += count
                buckets.append((le, acc) if exemplar is None else (le, acc, exemplar))
            family.add_metric(key, buckets, total)
            if created:
                family.add_sample(self._name + "_created", dict(zip(self._labelnames, key,
                                                                    strict=True)),
                                  child.created)
        return [family]


class _LeanChild:
    """One label set of a ``LeanHistogram``: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum", "exemplars", "created", "lock")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.created = time.time()
        self.lock = threading.Lock()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        i = bisect_left(self.bounds, amount)  # the first bound >= amount: its ``le`` bucket
        with self.lock:
            self.sum += amount
            if amount == amount:  # NaN is in no bucket, as with prometheus-client
                self.counts[i] += 1.0
        if exemplar and amount == amount:
            if sum(len(k) + len(v) for k, v in exemplar.items()) > 128:
                raise ValueError("Exemplar labels have more than 128 UTF-8 characters.")
            self.exemplars[i] = Exemplar(exemplar, amount, time.time())


_INF = float("inf")
#: Asked on every scrape: a counter has two samples to a histogram's seventeen, and
#: prometheus-client gates their ``_created`` with the same switch.
_created_probe = Counter("obskit_created_probe", "", registry=None)


def _created_series() -> bool:
    """Whether prometheus-client's metrics expose ``_created`` now (its public
    ``disable_created_metrics()`` and ``PROMETHEUS_DISABLE_CREATED_SERIES`` turn it off)."""
    return any(s.name.endswith("_created") for metric in _created_probe.collect()
               for s in metric.samples)


class InFlight:
    """One child of a gauge that counts what is in flight (``http_server_active_requests``).

    ``start()`` counts one in: ``next()`` of an ``itertools.count``, one C call that is atomic
    under the GIL and takes no lock. The child's own ``inc(1)`` takes prometheus-client's lock
    through four calls: 2.3k instructions per request of obskit's HTTP middleware, callgrind
    (benchmarks/HISTORY.md). ``inc(-n)`` counts ``n`` out; the
    deferred batch sends them summed, so its lock is taken once per batch. The child reports
    started + ``inc``s through its public ``set_function``.

    In multiprocess mode the collector reads the child's file, not the function: ``start`` and
    ``inc`` are then the child's own ``inc``. Use ``in_flight(child)``: one per child, so a
    second ``init()`` keeps counting the requests the first one let in.
    """

    __slots__ = ("start", "inc", "_started", "_lock", "_offset", "__weakref__")
    start: Callable[[], object]
    inc: Callable[[float], None]

    def __init__(self, child: Any, multiprocess: bool) -> None:
        if multiprocess:
            self.start = functools.partial(child.inc, 1)
            self.inc = child.inc
            return
        self._started = itertools.count()
        self.start = self._started.__next__
        self.inc = self._add
        self._lock = threading.Lock()
        self._offset = 0.0  # what inc() added, less the reads of _started
        child.set_function(self.value)

    def _add(self, amount: float) -> None:
        with self._lock:
            self._offset += amount

    def value(self) -> float:
        """Started + what ``inc`` added. Reading the count advances it: each read is taken
        off again."""
        with self._lock:
            self._offset -= 1
            return next(self._started) + self._offset + 1


def probe_fast_path() -> bool:
    """Decide (and report) ``lean_histograms``: labelled catalogue histograms as
    ``LeanHistogram``s, except in multiprocess mode. ``Catalogue`` asks it per histogram;
    ``obskit doctor`` asks too."""
    from obskit.exposition import multiprocess_dir

    if not _fastpaths.enabled("lean_histograms"):
        _fastpaths.report("lean_histograms", False, "disabled")
        return False
    if multiprocess_dir() is not None:
        _fastpaths.report("lean_histograms", False, "not needed: multiprocess mode "
                          "(PROMETHEUS_MULTIPROC_DIR) keeps prometheus-client's Histogram")
        return False
    _fastpaths.report("lean_histograms", True, "")
    return True


_in_flight: weakref.WeakKeyDictionary[Any, InFlight] = weakref.WeakKeyDictionary()
_in_flight_lock = threading.Lock()


def in_flight(child: Any) -> InFlight:
    """The ``InFlight`` counting into gauge ``child`` (made once per child)."""
    with _in_flight_lock:
        counter = _in_flight.get(child)
        if counter is None:
            from obskit.exposition import multiprocess_dir

            counter = _in_flight[child] = InFlight(child, multiprocess_dir() is not None)
        return counter


class _WritePendingFirst:
    """A collector with no metrics: takes the pending batch of deferred work (finished requests
    whose metrics are not recorded yet) when collected."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        _deferred.flush()
        return []


class Catalogue:
    """All obskit metric families, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.registry = REGISTRY if registry is None else registry
        self._max_series = max_series
        # First in the registry, so every scrape (and get_sample_value) sees the requests that
        # wait in the deferred batch (obskit.integrations._http.finish).
        self.registry.register(_WritePendingFirst())
        self.families: dict[str, _Guarded] = {}
        self.described: dict[str, tuple[str, Sequence[str], str]] = {}  # name: type, labels, doc
        overflow_doc = "Label sets folded into __overflow__ by the cardinality guard, by family."
        self.described["obskit_metrics_series_overflow_total"] = ("counter", ["family"],
                                                                  overflow_doc)
        self.series_overflow = Counter("obskit_metrics_series_overflow", overflow_doc, ["family"],
                                       registry=self.registry)

        # --- HTTP server (RED by method, route template, status code) -------------------
        self.http_server_duration = self.histogram(
            "http_server_request_duration_seconds",
            "HTTP server request duration; its _count is the request rate. `route` is the "
            "route template (never the raw path); unmatched requests have route=\"__unmatched__\".",
            ["method", "route", "status_code"])
        self.http_server_active = self.gauge(
            "http_server_active_requests", "HTTP requests being served now.", ["method"])
        # --- HTTP client -------------------------------------------------------------------
        self.http_client_duration = self.histogram(
            "http_client_request_duration_seconds",
            "Outgoing HTTP request duration (requests, httpx).",
            ["method", "server_address", "status_code"])
        # --- Database and cache ------------------------------------------------------------
        self.db_duration = self.histogram(
            "db_client_operation_duration_seconds",
            "Database operation duration by system (postgresql) and operation (SELECT, ...).",
            ["db_system", "operation"])
        self.cache_duration = self.histogram(
            "cache_operation_duration_seconds",
            "Cache/Redis command duration by system and command.", ["cache_system", "operation"])
        self.cache_requests = self.counter(
            "cache_requests", "Cache-aside lookups by cache name and result (hit, miss, error).",
            ["cache", "result"])
        self.cache_invalidations = self.counter(
            "cache_invalidations", "Cache-aside invalidations by cache name and trigger.",
            ["cache", "trigger"])
        # --- Messaging ---------------------------------------------------------------------
        self.msg_published = self.counter(
            "messaging_published", "Messages handed to the broker, by exchange and routing key.",
            ["system", "exchange", "routing_key"])
        self.msg_confirmed = self.counter(
            "messaging_confirmed", "Publishes the broker confirmed (publisher confirms).",
            ["system", "exchange", "routing_key"])
        self.msg_returned = self.counter(
            "messaging_returned", "Publishes the broker returned as unroutable or nacked; the "
            "caller got an exception.", ["system", "exchange", "routing_key", "reason"])
        self.msg_publish_duration = self.histogram(
            "messaging_publish_duration_seconds", "Publish duration until the broker confirmed.",
            ["system", "exchange"])
        self.msg_consumed = self.counter(
            "messaging_consumed", "Messages delivered to a consumer, by queue.",
            ["system", "queue"])
        self.msg_acked = self.counter(
            "messaging_acked", "Messages acknowledged after successful processing.",
            ["system", "queue"])
        self.msg_retried = self.counter(
            "messaging_retried", "Messages scheduled for another attempt, by queue and error type.",
            ["system", "queue", "error_type"])
        self.msg_dead_lettered = self.counter(
            "messaging_dead_lettered", "Messages sent to the dead-letter queue, by queue and "
            "error type.", ["system", "queue", "error_type"])
        self.msg_process_duration = self.histogram(
            "messaging_process_duration_seconds",
            "Consumer handler duration by queue and outcome: ack, retry, dead_letter, duplicate "
            "(idempotent skip), requeue (channel lost before the ack); raw pika/aio-pika "
            "deliveries also reject, error, auto_ack, unsettled.",
            ["system", "queue", "outcome"])
        self.queue_messages = self.gauge(
            "messaging_queue_messages", "Messages ready in a queue, polled from the broker "
            "(DLQs included: queue=\"orders.b2c.dlq\").", ["queue"], multiprocess_mode="max")
        self.queue_consumers = self.gauge(
            "messaging_queue_consumers", "Consumers attached to a queue, polled from the broker.",
            ["queue"], multiprocess_mode="max")
        # --- Orders ------------------------------------------------------------------------
        self.order_stage = self.counter(
            "obskit_order_stage_transitions",
            "Orders reaching a stage (accepted, stored, published, received, priced, ..., done, "
            "failed, dead_lettered), by stage and channel (b2c, b2b).", ["stage", "channel"])
        self.order_stage_age = self.histogram(
            "obskit_order_stage_age_seconds",
            "Time from acceptance to reaching a stage, when the caller knows it.",
            ["stage", "channel"], buckets=STAGE_BUCKETS)
        # Exact, from the journey store (obskit.journey). Every process exports the gauges; only
        # the active sweeper's are non-zero: aggregate with max by (stage, channel).
        self.orders_in_stage = self.gauge(
            "obskit_orders_in_stage", "Unfinished orders whose last stage is `stage` now (from "
            "the journey store; the active sweeper's value, others export 0).",
            ["stage", "channel"], multiprocess_mode="livemax")
        self.orders_stuck = self.gauge(
            "obskit_orders_stuck", "Orders in `stage` for longer than its stuck deadline.",
            ["stage", "channel"], multiprocess_mode="livemax")
        self.orders_lost = self.gauge(
            "obskit_orders_lost", "Orders in `stage` for longer than its lost deadline, not "
            "terminal: `obskit orders lost` lists them.", ["stage", "channel"],
            multiprocess_mode="livemax")
        self.orders_oldest_age = self.gauge(
            "obskit_orders_oldest_age_seconds", "How long the oldest order in `stage` has been "
            "there (0 when none).", ["stage", "channel"], multiprocess_mode="livemax")
        self.orders_lost_total = self.counter(
            "obskit_orders_declared_lost", "Orders declared lost, each once, by the stage where "
            "they stopped (the gauge obskit_orders_lost is how many are lost now).",
            ["stage", "channel"])
        self.orders_stage_repeated = self.counter(
            "obskit_orders_stage_repeated", "An order reaching a stage it had reached before: "
            "its message was processed twice (a redelivery or a duplicate).", ["stage", "channel"])
        self.orders_stage_duration = self.histogram(
            "obskit_orders_stage_duration_seconds", "Time an order spent in `stage` before its "
            "next stage (from the journey store).", ["stage", "channel"], buckets=STAGE_BUCKETS)
        self.journey_written = self.counter(
            "obskit_journey_hops_written", "Order hops written to the journey store.", [])
        self.journey_dropped = self.counter(
            "obskit_journey_hops_dropped", "Order hops not written to the journey store: "
            "buffer_full (the store was down too long), shutdown, error.", ["reason"])
        self.journey_store_errors = self.counter(
            "obskit_journey_store_errors", "Failed calls to the journey store, by operation "
            "(write, sweep); writes are retried.", ["operation"])
        self.journey_forgotten = self.counter(
            "obskit_journey_orders_forgotten", "Unfinished orders dropped from the journey store "
            "past its retention or size limit.", [])
        self.journey_sweeper_leader = self.gauge(
            "obskit_journey_sweeper_leader", "1 in the process whose journey sweeper is active.",
            [], multiprocess_mode="livemax")
        self.journey_last_sweep = self.gauge(
            "obskit_journey_last_sweep_timestamp_seconds", "When the active sweeper last "
            "counted stuck and lost orders (Unix time).", [], multiprocess_mode="livemax")
        # --- Telemetry self-metrics --------------------------------------------------------
        self.spans_dropped = self.counter(
            "obskit_telemetry_spans_dropped",
            "Spans not exported: queue_full (collector slow or dead) or export_failed.",
            ["reason"])
        self.spans_exported = self.counter(
            "obskit_telemetry_spans_exported", "Spans the exporter accepted.", [])
        self.logs_dropped = self.counter(
            "obskit_telemetry_log_records_dropped",
            "Log records not exported over OTLP (queue_full or export_failed).", ["reason"])
        self.internal_errors = self.counter(
            "obskit_internal_errors",
            "Errors inside obskit that were swallowed so the host kept running, by component.",
            ["component"])

    # --- declaration helpers ---------------------------------------------------------------
    def _check(self, name: str, labels: Sequence[str]) -> None:
        bad = sorted(set(labels) & FORBIDDEN_LABELS)
        if bad:
            raise LabelGuardError(
                f"metric {name!r}: label(s) {', '.join(bad)} are unbounded; put them on spans, "
                "logs or exemplars instead"
            )

    def _wrap(self, metric: Any, name: str, kind: str, doc: str, labels: Sequence[str],
              bounds: tuple[float, ...] | None = None) -> Any:
        self.described[name] = (kind, labels, doc)
        if not labels:
            self.families[name] = metric
            if bounds is not None:
                _bounds[metric] = bounds
            return metric
        guarded = _Guarded(metric, name, len(labels), self._max_series, self.series_overflow,
                           bounds)
        self.families[name] = guarded
        return guarded

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> Any:
        self._check(name, labels)
        return self._wrap(Counter(name, doc, list(labels), registry=self.registry),
                          name + "_total", "counter", doc, labels)

    def histogram(self, name: str, doc: str, labels: Sequence[str],
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Any:
        self._check(name, labels)
        metric: Any
        if labels and probe_fast_path():
            metric = LeanHistogram(name, doc, labels, buckets, self.registry)
        else:
            metric = Histogram(name, doc, list(labels), registry=self.registry, buckets=buckets)
        return self._wrap(metric, name, "histogram", doc, labels, tuple(float(b) for b in buckets))

    def gauge(self, name: str, doc: str, labels: Sequence[str],
              multiprocess_mode: Any = "livesum") -> Any:
        self._check(name, labels)
        return self._wrap(Gauge(name, doc, list(labels), registry=self.registry,
                                multiprocess_mode=multiprocess_mode), name, "gauge", doc, labels)


# Keyed by the registry object itself (weakly): an id() could be reused by a new registry
# after the old one was garbage-collected, handing out a stale catalogue.
_catalogues: weakref.WeakKeyDictionary[CollectorRegistry, Catalogue] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


_active: Catalogue | None = None


def set_active(cat: Catalogue | None) -> None:
    """Make ``cat`` what ``catalogue()`` returns by default (``init(registry=...)`` does this)."""
    global _active
    _active = cat


def catalogue(registry: CollectorRegistry | None = None) -> Catalogue:
    """The catalogue bound to ``registry``.

    Default: the one ``obskit.init()`` set up (its ``registry=``), else prometheus-client's
    global ``REGISTRY``.
    """
    if registry is None and _active is not None:
        return _active
    reg = REGISTRY if registry is None else registry
    cat = _catalogues.get(reg)
    if cat is None:
        with _lock:
            cat = _catalogues.get(reg)
            if cat is None:
                cat = _catalogues[reg] = Catalogue(reg)
    return cat


def markdown_table() -> str:
    """The catalogue as the table in docs/metrics.md (``python -m obskit.metrics``)."""
    cat = Catalogue(CollectorRegistry())
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, (kind, labelnames, doc) in sorted(cat.described.items()):
        labels = ", ".join(f"`{lbl}`" for lbl in labelnames) or "—"
        rows.append(f"| `{name}` | {kind} | {labels} | {doc} |")
    return "\n".join(rows)


def _count_internal_error(component: str) -> None:
    catalogue().internal_errors.labels(component).inc()


_internal.count_errors_with(_count_internal_error)


if __name__ == "__main__":
    print(markdown_table())
