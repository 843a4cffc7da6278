"""The bundle against live data: every PromQL query of every dashboard, run on a real Prometheus.

The bundle is rendered with every address pointing at this machine, Alertmanager and Prometheus
run as real processes (``obskit.testing``), and ``orderflow all --metrics-port`` writes its
processes into Prometheus's file_sd directory while the demo's traffic (shop and partner orders,
invalid ones, unprintable ones, a partner over its rate limit, managers polling the dashboard)
flows. A query expected to show data on a healthy system must return a series; every other
query must at least evaluate.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import NamedTuple

from conftest import _free_port, api_key
from test_supervisor_metrics import GROUP, OrderflowAll, isolated_env

from obskit.bundle import Query, all_queries, parse_overrides, render
from obskit.testing import AlertmanagerProcess, OtlpReceiver, PrometheusError, PrometheusProcess
from orderflow.demo import Traffic

#: Seconds of demo traffic; the queries are polled while it runs and for a while after.
TRAFFIC_SECONDS = 15.0
DATA_TIMEOUT = 40.0  # from the start of the traffic until every "data" query has a series


class Result(NamedTuple):
    source: str
    expr: str  # concrete: Grafana's variables replaced
    expect: str
    series: int  # -1 when it did not evaluate
    error: str = ""


def _render(out: Path, group: OrderflowAll, am_port: int, prom_port: int,
            extra: list[str] | None = None) -> tuple[Path, Path, list[Query]]:
    """The bundle with every address on this machine; (prometheus.yml, alertmanager.yml, the
    dashboards' PromQL queries)."""
    config_dir = out / "platform" / "prometheus"
    unused = "127.0.0.1:{}"  # the collector, Tempo, Loki, Grafana: not running beside the test
    targets = [f"{svc if svc == inst else f'{svc}/{inst}'}=127.0.0.1:{group.metrics_base + i}"
               for i, (inst, svc) in enumerate(GROUP[:3 + group.mes_workers])]
    params = parse_overrides([
        f"prometheus_config_dir={config_dir}",
        f"prometheus_address=127.0.0.1:{prom_port}",
        f"alertmanager_address=127.0.0.1:{am_port}",
        "rabbitmq_metrics=127.0.0.1:15692",
        f"collector_metrics={unused.format(_free_port())}",
        f"tempo_address={unused.format(_free_port())}",
        f"loki_address={unused.format(_free_port())}",
        f"grafana_address={unused.format(_free_port())}",
        f"targets={','.join(targets)}",
        "scrape_interval=1s",
        *(extra or []),
    ])
    render(out, params)
    # Compose mounts ./alerts at <prometheus_config_dir>/alerts; here a link does it.
    (config_dir / "alerts").symlink_to(out / "alerts", target_is_directory=True)
    queries = [q for q in all_queries(params) if q.lang == "promql"]
    return config_dir / "prometheus.yml", out / "alerts/alertmanager.yml", queries


def _evaluate(prom: PrometheusProcess, queries: list[Query]) -> list[Result]:
    out = []
    for q in queries:
        expr = q.concrete()
        try:
            out.append(Result(q.source, expr, q.expect, len(prom.query(expr))))
        except PrometheusError as exc:
            out.append(Result(q.source, expr, q.expect, -1, str(exc)))
    return out


def _failures(results: list[Result]) -> list[str]:
    bad = []
    for r in results:
        if r.error:
            bad.append(f"{r.source}: does not evaluate: {r.error}\n    {r.expr}")
        elif r.expect == "data" and r.series == 0:
            bad.append(f"{r.source}: no series\n    {r.expr}")
    return bad


def _table(results: list[Result], first_data: dict[str, float]) -> str:
    """Each query with its series count and when it first had data (s after the traffic began)."""
    lines = [f"{'series':>6} {'data at':>7}  {'expect':<22} query"]
    for r in results:
        shown = "ERROR" if r.error else r.series
        at = f"{first_data[r.expr]:.0f}s" if r.expr in first_data else "-"
        lines.append(f"{shown:>6} {at:>7}  {r.expect:<22} {r.source}\n{'':>39} {r.expr}")
    return "\n".join(lines)


class _Background:
    """The demo's traffic in a thread, so Prometheus can be polled while it flows."""

    def __init__(self, traffic: Traffic, seconds: float, rate: float) -> None:
        self.traffic = traffic
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(seconds, rate), daemon=True)

    def _run(self, seconds: float, rate: float) -> None:
        try:
            asyncio.run(self.traffic.run(seconds, rate))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> _Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=TRAFFIC_SECONDS + 30)


def test_every_dashboard_query_returns_data_on_a_live_platform(env: dict[str, str],
                                                               tmp_path: Path) -> None:
    started = time.monotonic()
    with isolated_env(env) as e, OtlpReceiver("grpc") as receiver:
        # Spans really exported (the telemetry dashboard counts them), to a receiver in the test.
        e.update(receiver.env())
        e.pop("OBSKIT_SPANS_FILE", None)
        # The demo's mix comes from one client IP: lift the per-IP limits (as the demo does)
        # so that the per-key limit of the bursting partner is what trips.
        e.update({"ORDERFLOW_RATE_LIMIT_B2C": "200/second",
                  "ORDERFLOW_RATE_LIMIT_B2B_IP": "400/second",
                  "ORDERFLOW_MES_STAGE_DELAY": "0.05"})
        prom_port, am_port = _free_port(), _free_port()
        targets = tmp_path / "platform" / "prometheus" / "targets" / "obskit.json"
        group = OrderflowAll(e, tmp_path, targets_file=targets)
        prom_yml, am_yml, queries = _render(tmp_path, group, am_port, prom_port)
        rendered_targets = json.loads(targets.read_text())
        with AlertmanagerProcess(am_yml, port=am_port), group, \
                PrometheusProcess(prom_yml, port=prom_port) as prom:
            # `orderflow all --targets-file` and the bundle's `targets` agree on the layout.
            assert json.loads(targets.read_text()) == rendered_targets
            traffic = Traffic(group.base, api_key(group.dsn, "live-partner"),
                              api_key(group.dsn, "live-burst", "5/second"))
            t0 = time.time()
            first_data: dict[str, float] = {}
            with _Background(traffic, TRAFFIC_SECONDS, rate=10.0) as bg:
                deadline = time.monotonic() + DATA_TIMEOUT
                while True:
                    results = _evaluate(prom, queries)
                    for r in results:
                        if r.series > 0 and r.expr not in first_data:
                            first_data[r.expr] = time.time() - t0
                    failures = _failures(results)
                    if (not failures and not bg.thread.is_alive()) \
                            or time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
            assert bg.error is None, repr(bg.error)
            assert traffic.accepted and not traffic.errors, traffic.errors[:5]
            ready_after = time.monotonic() - started

            exemplars = prom.query_exemplars(
                'http_server_request_duration_seconds_bucket{job="obskit"}', t0 - 60,
                time.time() + 60)
            trace_ids = {x["labels"]["trace_id"] for series in exemplars
                         for x in series["exemplars"]}
            alertmanagers = prom.alertmanagers()
            rules = [r for g in prom.rules() for r in g["rules"]]
            broken_rules = [(r["name"], r["lastError"]) for r in rules
                            if r.get("health") == "err"]
            # One scrape can miss its 1 s timeout on a loaded machine: down means down for 10 s.
            for _ in range(20):
                down = [(t["labels"], t["lastError"]) for t in prom.targets()
                        if t["labels"]["job"] == "obskit" and t["health"] != "up"]
                if not down:
                    break
                time.sleep(0.5)

    print(f"\nlive platform: {len(queries)} PromQL queries, evaluated {ready_after:.1f}s after "
          f"the start; {len(traffic.accepted)} orders accepted\n" + _table(results, first_data))
    assert not failures, (f"{len(failures)} of {len(queries)} queries failed:\n"
                          + "\n".join(failures) + "\n\n" + _table(results, first_data))
    assert trace_ids and all(len(t) == 32 for t in trace_ids), exemplars
    assert f"http://127.0.0.1:{am_port}/api/v2/alerts" in alertmanagers, alertmanagers
    assert not down, down
    assert len(rules) >= 20, "the bundle's alerts/*.rules.yml were not loaded"
    assert not broken_rules, broken_rules
