"""record_stage -> writer -> store -> sweeper -> gauges, with real Redis (and one that dies)."""

import os
import threading
import time

from prometheus_client import CollectorRegistry

import obskit
from obskit import journey
from obskit.journey import Deadlines, JourneyStore
from obskit.journey._sweeper import Sweeper
from obskit.metrics import Catalogue
from obskit.testing import wait_for

REDIS_URL = os.environ.get("OBSKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def init(prefix, url=REDIS_URL, **kw):
    registry = CollectorRegistry()
    opts = dict(journey_url=url, journey_prefix=prefix, journey_sweep_interval=0.1,
                stage_deadlines="*=60s/120s,published=0.3s/0.6s", log_stream=open(os.devnull, "w"))
    opts.update(kw)
    obskit.init("journey-test", registry=registry, **opts)
    return registry


def record(oid, *stages, channel="b2c"):
    with obskit.order_context(oid, channel):
        for s in stages:
            obskit.record_stage(s)


def test_counts_are_exact_while_orders_flow_from_several_threads(prefix):
    registry = init(prefix)
    path = ("accepted", "stored", "published", "received", "priced", "done")

    def producer(t):
        for i in range(200):
            # Thread t's orders stop at stage (i % 6): a known number in each stage.
            record(f"t{t}-{i}", *path[:i % 6 + 1], channel="b2b" if t % 2 else "b2c")

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journey.flush(10)
    sweeps = journey._running_sweeper.sweeps
    wait_for(lambda: journey._running_sweeper.sweeps > sweeps + 1, what="two more sweeps")
    for ch in ("b2c", "b2b"):
        for k, stage in enumerate(path[:-1]):
            expected = sum(1 for i in range(200) if i % 6 == k) * 2  # two threads per channel
            assert value(registry, "obskit_orders_in_stage", stage=stage, channel=ch) == expected
    assert value(registry, "obskit_journey_hops_written_total") == 4 * sum(
        i % 6 + 1 for i in range(200))
    assert value(registry, "obskit_journey_sweeper_leader") == 1
    # Published is past its 0.6 s lost deadline soon: every such order is lost, counted once.
    n_pub = value(registry, "obskit_orders_in_stage", stage="published", channel="b2c")
    wait_for(lambda: value(registry, "obskit_orders_lost", stage="published", channel="b2c")
             == n_pub, what="published orders declared lost")
    sweeps = journey._running_sweeper.sweeps
    wait_for(lambda: journey._running_sweeper.sweeps > sweeps + 1,
             what="two more sweeps (they must not count the lost orders again)")
    assert value(registry, "obskit_orders_declared_lost_total", stage="published",
                 channel="b2c") == n_pub
    assert value(registry, "obskit_orders_stuck", stage="received", channel="b2c") == 0
    # The MES stage durations come from the journey: one per order that left 'received'.
    left_received = sum(1 for i in range(200) if i % 6 >= 4) * 2
    assert value(registry, "obskit_orders_stage_duration_seconds_count", stage="received",
                 channel="b2c") == left_received


def test_several_sweepers_one_active_and_a_dead_one_is_replaced(store):
    cats = [Catalogue(CollectorRegistry()) for _ in range(3)]
    sweepers = [Sweeper(JourneyStore(REDIS_URL, store.prefix), c, Deadlines(), interval=0.2)
                for c in cats]
    store.write([journey.Hop("o1", "published", "b2c", time.time(), "s", "i")])
    try:
        results = [s.run_once() for s in sweepers]
        assert results == [True, False, False]
        for _ in range(3):  # they keep their roles
            assert [s.run_once() for s in sweepers] == [True, False, False]

        def gauge(cat):
            return cat.registry.get_sample_value("obskit_orders_in_stage",
                                                 {"stage": "published", "channel": "b2c"})
        assert [gauge(c) for c in cats] == [1.0, None, None]
        # The active one dies without resigning: its lease (3 intervals) runs out.
        wait_for(lambda: sweepers[1].run_once() or sweepers[2].run_once(), timeout=5,
                 what="a standby taking over")
        assert sum(s.active for s in sweepers[1:]) == 1
        # The old one comes back: it stands by and zeroes what it published.
        assert sweepers[0].run_once() is False
        assert gauge(cats[0]) == 0.0 and sweepers[0].active is False
        assert max(gauge(c) or 0 for c in cats) == 1.0
    finally:
        for s in sweepers:
            s.stop()
            s.store.close()


def test_redis_down_the_service_carries_on_and_no_hop_is_lost_when_it_is_back(
        private_redis, prefix):
    registry = init(prefix, private_redis.url)
    record("before", "accepted", "stored")
    assert journey.flush(5)
    private_redis.stop()
    t0 = time.perf_counter()
    for i in range(2000):
        record(f"during-{i}", "accepted", "stored")
    elapsed = time.perf_counter() - t0
    # 4,000 calls while Redis is down: nothing waited on a connect timeout (1 s each).
    assert elapsed < 1.0, elapsed
    wait_for(lambda: value(registry, "obskit_journey_store_errors_total", operation="write") > 0,
             what="the failed write to be counted")
    assert journey.status()["pending_hops"] > 0
    private_redis.start()
    assert journey.flush(20), "hops kept in memory are written once Redis is back"
    assert value(registry, "obskit_journey_hops_dropped_total", reason="buffer_full") == 0
    s = JourneyStore(private_redis.url, prefix)
    try:
        assert s.journey("during-1999")[0].stage == "stored"
        assert s.journey("before")[0].stage == "stored"
    finally:
        s.close()


def test_a_bounded_buffer_drops_the_excess_and_counts_it():
    from obskit.journey._writer import JourneyWriter

    cat = Catalogue(CollectorRegistry())
    store = JourneyStore("redis://127.0.0.1:1/0", "nowhere", timeout=0.2)
    w = JourneyWriter(store, cat, max_buffer=100)
    try:
        for i in range(150):
            w.submit(journey.Hop(f"o{i}", "accepted", "b2c", time.time(), "s", "i"))
        assert cat.registry.get_sample_value("obskit_journey_hops_dropped_total",
                                             {"reason": "buffer_full"}) >= 50
        assert w.pending <= 100
        assert w.flush(0.5) is False
    finally:
        w.stop(1)
        store.close()


def test_a_forked_worker_writes_its_own_hops(prefix, store):
    init(prefix, journey_sweep=False)
    pid = os.fork()
    if pid == 0:  # the child: record, flush, exit without running the parent's handlers
        code = 1
        try:
            record("forked", "accepted", "stored")
            code = 0 if journey.flush(5) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    state, hops = store.journey("forked")
    assert state.stage == "stored"
    assert hops[0].instance.endswith(f":{pid}")


def test_hops_are_kept_whatever_the_trace_sampling(prefix, store):
    from opentelemetry import trace

    init(prefix, traces_sampler="always_off", journey_sweep=False)
    tracer = trace.get_tracer("t")
    with tracer.start_as_current_span("not sampled") as span:
        assert not span.is_recording()
        record("unsampled", "accepted", "stored")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert journey.flush(5)
    state, hops = store.journey("unsampled")
    assert state.stage == "stored"
    assert {h.trace_id for h in hops} == {trace_id}
    assert {h.service for h in hops} == {"journey-test"}
