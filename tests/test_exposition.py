import os
import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import obskit
    obskit.init("worker", disabled_instrumentations="all", spans_file="off")
    cat = obskit.get_handle().catalogue
    cat.order_stage.labels("received", "b2c").inc(int(sys.argv[1]))
    # a live gauge (counted as the middlewares do): must vanish when we die
    from obskit.metrics import in_flight
    in_flight(cat.http_server_active.labels("GET")).start()
    print("ready", flush=True)
    sys.stdin.readline()                           # wait until the test lets us go
    """
)


def test_multiprocess_aggregates_workers_and_forgets_dead_ones_live_gauges(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "OBSKIT_RAISE_INTERNAL_ERRORS": "0"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env) for n in (2, 3)]
    for w in workers:
        assert w.stdout.readline().strip() == "ready"
    scrape = textwrap.dedent(
        """
        from prometheus_client import generate_latest
        from obskit.exposition import scrape_registry
        print(generate_latest(scrape_registry()).decode())
        """
    )

    def sample(text, name, labels):
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    out = subprocess.run([sys.executable, "-c", scrape], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert sample(out, "obskit_order_stage_transitions_total",
                  {"stage": "received", "channel": "b2c"}) == 5
    assert sample(out, "http_server_active_requests", {"method": "GET"}) == 2

    workers[0].kill()  # a worker dies without cleaning up
    workers[0].wait()
    out = subprocess.run([sys.executable, "-c", scrape], capture_output=True, text=True,
                         env=env, check=True).stdout
    # its counter increments still count; its live gauge is gone
    assert sample(out, "obskit_order_stage_transitions_total",
                  {"stage": "received", "channel": "b2c"}) == 5
    assert sample(out, "http_server_active_requests", {"method": "GET"}) == 1
    workers[1].communicate("\n", timeout=30)
