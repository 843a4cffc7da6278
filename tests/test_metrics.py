import re
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import obskit
from obskit.metrics import OVERFLOW, Catalogue, LabelGuardError, in_flight, observe
from obskit.testing import init_for_tests


def test_unbounded_label_names_are_refused():
    cat = Catalogue(CollectorRegistry())
    for label in ("order_id", "trace_id", "path", "customer_email"):
        with pytest.raises(LabelGuardError, match=label):
            cat.counter(f"bad_{label}", "doc", ["stage", label])


def test_cardinality_cap_folds_new_series_into_overflow():
    reg = CollectorRegistry()
    cat = Catalogue(reg, max_series=3)
    for i in range(10):  # e.g. a bug passing an order id as "stage"
        cat.order_stage.labels(f"ord-{i}", "b2c").inc()
    samples = {
        s.labels["stage"]: s.value
        for fam in reg.collect() if fam.name == "obskit_order_stage_transitions"
        for s in fam.samples if s.name.endswith("_total")
    }
    assert set(samples) == {"ord-0", "ord-1", "ord-2", OVERFLOW}
    assert samples[OVERFLOW] == 7
    assert reg.get_sample_value("obskit_metrics_series_overflow_total",
                                {"family": "obskit_order_stage_transitions_total"}) == 7


def test_same_values_reuse_the_series_without_counting_overflow():
    reg = CollectorRegistry()
    cat = Catalogue(reg, max_series=2)
    for _ in range(5):
        cat.order_stage.labels("done", "b2c").inc()
        cat.order_stage.labels("done", "b2b").inc()
    assert reg.get_sample_value("obskit_order_stage_transitions_total",
                                {"stage": "done", "channel": "b2c"}) == 5
    assert reg.get_sample_value("obskit_metrics_series_overflow_total",
                                {"family": "obskit_order_stage_transitions_total"}) is None


def test_record_stage_counts_by_stage_and_channel_and_never_labels_the_order():
    with init_for_tests("crm", disabled_instrumentations="all") as t:
        with obskit.order_context("ord-777", channel="b2c"):
            obskit.record_stage("accepted")
            obskit.record_stage("stored")
        obskit.record_stage("published", order_id="ord-778", channel="b2b")
        text = om_latest(t.registry).decode()
    assert t.metric("obskit_order_stage_transitions_total",
                    {"stage": "accepted", "channel": "b2c"}) == 1
    assert t.metric("obskit_order_stage_transitions_total",
                    {"stage": "published", "channel": "b2b"}) == 1
    assert "ord-777" not in text and "ord-778" not in text
    assert [ln["order_id"] for ln in t.logs] == ["ord-777", "ord-777", "ord-778"]


def test_histograms_carry_trace_id_exemplars_in_openmetrics():
    from opentelemetry import trace

    with init_for_tests("svc", disabled_instrumentations="all") as t:
        with trace.get_tracer("t").start_as_current_span("work") as span:
            observe(t.handle.catalogue.db_duration.labels("postgresql", "SELECT"), 0.003)
        trace_id = format(span.get_span_context().trace_id, "032x")
        text = om_latest(t.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    fam = families["db_client_operation_duration_seconds"]
    exemplars = [s.exemplar for s in fam.samples if s.exemplar is not None]
    assert exemplars and exemplars[0].labels == {"trace_id": trace_id}


def test_a_bucket_exemplar_is_replaced_at_most_once_per_interval(monkeypatch):
    from obskit import metrics

    reg = CollectorRegistry()
    child = Catalogue(reg).db_duration.labels("postgresql", "SELECT")

    def exemplars() -> dict[str, str]:
        families = text_string_to_metric_families(om_latest(reg).decode())
        fam = next(f for f in families if f.name == "db_client_operation_duration_seconds")
        return {s.labels["le"]: s.exemplar.labels["trace_id"]
                for s in fam.samples if s.exemplar is not None}

    metrics.observe_traced(child, 0.003, "a" * 32)
    metrics.observe_traced(child, 0.003, "b" * 32)  # same bucket, within the interval: kept
    metrics.observe_traced(child, 7.0, "c" * 32)  # a slow request: its bucket gets its own
    metrics.observe_traced(child, 0.003, None)  # unsampled: counted, no exemplar
    got = exemplars()
    assert set(got.values()) == {"a" * 32, "c" * 32}
    monkeypatch.setattr(metrics, "EXEMPLAR_INTERVAL", 0.0)
    metrics.observe_traced(child, 0.003, "d" * 32)
    assert set(exemplars().values()) == {"d" * 32, "c" * 32}
    samples = {s.name: s.value for f in text_string_to_metric_families(om_latest(reg).decode())
               for s in f.samples if s.name == "db_client_operation_duration_seconds_count"}
    assert samples["db_client_operation_duration_seconds_count"] == 5


def test_catalogue_matches_docs(repo_root):
    from obskit.metrics import markdown_table

    doc = (repo_root / "docs" / "metrics.md").read_text()
    assert markdown_table() in doc, "regenerate with: python -m obskit.metrics"
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M))
    cat = Catalogue(CollectorRegistry())
    declared = set(cat.families) | {"obskit_metrics_series_overflow_total"}
    assert declared == documented, (declared - documented, documented - declared)
    for name in declared:  # Prometheus naming: base units and suffixes
        assert not re.search(r"_(ms|milliseconds|count)$", name), name


def test_exemplars_go_to_the_catalogues_histograms_once_per_bucket_and_interval():
    """Throttled per bucket by the buckets the catalogue declared (prometheus-client's own
    bucket bounds are private); a histogram declared elsewhere takes no exemplar."""
    from prometheus_client import Histogram

    from obskit.metrics import observe_traced

    reg = CollectorRegistry()
    child = Catalogue(reg).db_duration.labels("postgresql", "SELECT")
    observe_traced(child, 0.003, "a" * 32)
    observe_traced(child, 0.004, "b" * 32)  # same bucket, within the interval: no new exemplar
    observe_traced(child, 0.3, "c" * 32)  # another bucket
    text = om_latest(reg).decode()
    assert text.count('trace_id="') == 2
    assert 'le="0.005",operation="SELECT"} 2.0 # {trace_id="' + "a" * 32 in text
    assert "c" * 32 in text and "b" * 32 not in text
    assert reg.get_sample_value("db_client_operation_duration_seconds_count",
                                {"db_system": "postgresql", "operation": "SELECT"}) == 3

    other = CollectorRegistry()
    plain = Histogram("h_seconds", "h", registry=other)
    observe_traced(plain, 0.2, "d" * 32)
    assert other.get_sample_value("h_seconds_count") == 1
    assert "trace_id" not in om_latest(other).decode()




def test_in_flight_counts_starts_less_ends_and_scrapes_do_not_move_it():
    reg = CollectorRegistry()
    cat = Catalogue(reg)
    child = cat.http_server_active.labels("GET")
    counter = in_flight(child)
    assert in_flight(child) is counter  # one per child: a second init() keeps the count

    def active() -> float | None:
        return reg.get_sample_value("http_server_active_requests", {"method": "GET"})

    assert active() == 0
    for _ in range(5):
        counter.start()
    assert active() == 5
    assert active() == 5  # reading takes its own count off again
    counter.inc(-3)  # ends arrive summed, from the deferred batch
    assert active() == 2
    counter.inc(-2)
    assert active() == 0


def test_in_flight_loses_no_start_to_threads_racing_each_other_and_a_scraper():
    reg = CollectorRegistry()
    counter = in_flight(Catalogue(reg).http_server_active.labels("POST"))
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            reg.get_sample_value("http_server_active_requests", {"method": "POST"})

    def serve() -> None:
        for _ in range(20_000):
            counter.start()
        counter.inc(-5_000)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=serve) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    assert reg.get_sample_value("http_server_active_requests", {"method": "POST"}) == 60_000


def test_in_flight_is_the_childs_own_inc_in_multiprocess_mode(tmp_path, monkeypatch):
    # The multiprocess collector reads the child's file, never a set_function: there start()
    # and inc() must write the file (tests/test_exposition.py scrapes it across processes).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg = CollectorRegistry()
    counter = in_flight(Catalogue(reg).http_server_active.labels("PUT"))
    counter.start()
    counter.start()
    counter.inc(-1)
    # read from the child's value: no set_function was installed
    assert reg.get_sample_value("http_server_active_requests", {"method": "PUT"}) == 1
    assert counter.inc.__self__ is not counter


# On bounds, just above one, past the last, negative, NaN (in no bucket); every third one
# (NaN included) with an exemplar.
OBSERVATIONS = [0.0004, 0.001, 0.0010001, 0.3, 2.5, 31.0, float("nan"), 1e9, 0.02, 0.02, -1.0]


def _expositions(monkeypatch, make_family) -> tuple[bytes, bytes]:
    """Text and OpenMetrics exposition of a fresh registry holding what ``make_family`` returns
    after the same observations, in two label sets."""
    monkeypatch.setattr(time, "time", lambda: 1_767_000_000.25)  # created and exemplar stamps
    reg = CollectorRegistry()
    family = make_family(reg)
    for labels in (("GET", "/a", "200"), ("POST", "/b", "500")):
        child = family.labels(*labels)
        for i, value in enumerate(OBSERVATIONS):
            child.observe(value, {"trace_id": f"{i:032x}"} if i % 3 == 0 else None)
    return generate_latest(reg), om_latest(reg)


@pytest.mark.parametrize("created", [True, False], ids=["created", "no-created"])
def test_lean_histogram_exposes_what_prometheus_clients_histogram_does(monkeypatch, created):
    from prometheus_client import Histogram, disable_created_metrics, enable_created_metrics

    from obskit.metrics import LATENCY_BUCKETS, LeanHistogram

    names = ["method", "route", "status_code"]
    if not created:
        disable_created_metrics()
    try:
        lean = _expositions(monkeypatch, lambda reg: LeanHistogram(
            "http_server_request_duration_seconds", "Doc.", names, LATENCY_BUCKETS, reg))
        stock = _expositions(monkeypatch, lambda reg: Histogram(
            "http_server_request_duration_seconds", "Doc.", names, registry=reg,
            buckets=LATENCY_BUCKETS))
    finally:
        enable_created_metrics()
    assert lean == stock
    assert (b"_created" in lean[1]) is created
    assert b'# {trace_id="00000000000000000000000000000000"} 0.0004' in lean[1]  # exemplar kept


def test_lean_histogram_counts_every_observation_of_racing_threads():
    from obskit.metrics import LeanHistogram

    reg = CollectorRegistry()
    child = LeanHistogram("h_seconds", "Doc.", ["k"], (0.1, 1.0), reg).labels("x")

    def observe() -> None:
        for i in range(20_000):
            child.observe(0.05 if i % 2 else 0.5)

    workers = [threading.Thread(target=observe) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert reg.get_sample_value("h_seconds_count", {"k": "x"}) == 80_000
    assert reg.get_sample_value("h_seconds_bucket", {"k": "x", "le": "0.1"}) == 40_000
    assert reg.get_sample_value("h_seconds_sum", {"k": "x"}) == pytest.approx(22_000)


def test_the_catalogues_labelled_histograms_are_lean_unless_disabled_or_multiprocess(
        monkeypatch, tmp_path):
    from prometheus_client import Histogram

    from obskit.metrics import LeanHistogram

    assert isinstance(Catalogue(CollectorRegistry()).http_server_duration.metric, LeanHistogram)
    monkeypatch.setenv("OBSKIT_DISABLE_FAST_PATHS", "lean_histograms")
    assert isinstance(Catalogue(CollectorRegistry()).http_server_duration.metric, Histogram)
    monkeypatch.delenv("OBSKIT_DISABLE_FAST_PATHS")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert isinstance(Catalogue(CollectorRegistry()).http_server_duration.metric, Histogram)
