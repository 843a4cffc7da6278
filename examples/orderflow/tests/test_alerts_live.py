"""Faults on purpose, end to end: each one pages (or posts) through a real Prometheus and
Alertmanager, and ``obskit orders show`` names the stage where an affected order stopped.

Per fault: ``orderflow all`` with ``ORDERFLOW_FAULTS=<fault>=1.0``, the bundle rendered with every
address on this machine and its timings shrunk for a test (``scrape_interval=1s``,
``alert_time_scale=0.01``: a ``for: 5m`` waits 3 s, a ``[10m]`` window is 6 s), short stage
deadlines (``OBSKIT_STAGE_DEADLINES``) and a sweep every 0.5 s, and a webhook receiver in the test
that both Alertmanager receivers (pager, chat) post to. A run without faults pages nobody.

The time from the first order to the delivery is printed; docs/find-a-lost-order.md quotes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import _free_port, api_key, wait_for
from test_platform_live import _Background, _render
from test_supervisor_metrics import OrderflowAll, isolated_env

from obskit.testing import AlertmanagerProcess, PrometheusProcess
from orderflow.demo import Traffic

#: The issue's bound: from the fault to the page.
DELIVERY_TIMEOUT = 120.0
#: Alerts a test platform raises because the collector, Tempo, Loki and Grafana do not run here.
ABSENT_JOBS = {"otelcol", "tempo", "loki", "grafana"}


class Webhook:
    """Alertmanager's webhook receiver: every alert posted to /pager or /chat, with when."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook._lock:
                    for alert in body.get("alerts", []):
                        if alert.get("status") == "firing":
                            hook.received.append((time.time(), self.path.strip("/"), alert))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, receiver: str, alertname: str, **labels: str) -> tuple[float, dict] | None:
        with self._lock:
            for at, rcv, alert in self.received:
                lab = alert["labels"]
                if rcv == receiver and lab.get("alertname") == alertname and all(
                        lab.get(k) == v for k, v in labels.items()):
                    return at, alert
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Scenario:
    fault: str
    alert: str
    receiver: str  # pager (critical) or chat (warning)
    labels: dict[str, str]
    stopped_at: str | None  # the stage `obskit orders show` must name
    deadlines: str = "*=3s/6s"
    env: dict[str, str] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario("relay-drop", "OrdersLost", "pager", {"stage": "stored", "channel": "b2c"},
             "stored"),
    Scenario("mes-ack-drop", "OrdersLost", "pager", {"stage": "received", "channel": "b2c"},
             "received"),
    Scenario("mes-stall", "OrdersStuck", "chat", {"stage": "priced", "channel": "b2c"},
             "priced", deadlines="*=3s/10m", env={"ORDERFLOW_FAULT_STALL_SECONDS": "600"}),
    Scenario("poison", "DeadLetterQueueNotEmpty", "chat", {"queue": "orders.b2c.dlq"},
             "dead_lettered", deadlines="*=3s/10m"),
    Scenario("slow-mes", "OrderStageSlow", "chat", {"channel": "b2c"}, None,
             deadlines="*=30s/10m", env={"ORDERFLOW_FAULT_SLOW_SECONDS": "1.5"},
             params=["mes_stage_p95_seconds=1"]),
]


@dataclass
class Platform:
    group: OrderflowAll
    prom: PrometheusProcess
    hook: Webhook
    env: dict[str, str]


def _platform(env: dict[str, str], tmp: Path, faults: str, sc_env: dict[str, str],
              deadlines: str, params: list[str]) -> Any:
    """A context manager: orderflow with ``faults``, Prometheus, Alertmanager, the webhook."""
    from contextlib import ExitStack, contextmanager

    @contextmanager
    def run() -> Any:
        with ExitStack() as stack:
            e = stack.enter_context(isolated_env(env))
            e.update({"ORDERFLOW_FAULTS": faults, "OBSKIT_STAGE_DEADLINES": deadlines,
                      "OBSKIT_JOURNEY_SWEEP_INTERVAL": "0.5",
                      "ORDERFLOW_QUEUE_POLL_INTERVAL": "1",
                      "ORDERFLOW_MES_STAGE_DELAY": "0.05", **sc_env})
            hook = Webhook()
            stack.callback(hook.close)
            prom_port, am_port = _free_port(), _free_port()
            targets = tmp / "platform" / "prometheus" / "targets" / "obskit.json"
            group = OrderflowAll(e, tmp, targets_file=targets, mes_workers=1, concurrency=4)
            prom_yml, am_yml, _ = _render(tmp, group, am_port, prom_port, [
                "alert_time_scale=0.01", f"pager_webhook_url={hook.url}/pager",
                f"chat_webhook_url={hook.url}/chat", *params])
            stack.enter_context(AlertmanagerProcess(am_yml, port=am_port))
            stack.enter_context(group)
            prom = stack.enter_context(PrometheusProcess(prom_yml, port=prom_port))
            yield Platform(group, prom, hook, e)

    return run()


class _Orders:
    """Shop orders, one every ``every`` seconds, from a thread, while the test waits."""

    def __init__(self, group: OrderflowAll, every: float = 0.3) -> None:
        self.group, self.every = group, every
        self.ids: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.group.place("b2c")
            if r.status_code == 202:
                self.ids.append(r.json()["order_id"])
            else:
                self.errors.append(f"{r.status_code} {r.text[:200]}")
            self._stop.wait(self.every)

    def __enter__(self) -> _Orders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _diagnose(p: Platform) -> str:
    """What Prometheus and the webhook saw, for a failure message."""
    lines = ["firing/pending: " + json.dumps([r["metric"] for r in p.prom.query("ALERTS")])]
    for expr in ("max by (stage, channel) (obskit_orders_in_stage)",
                 "max by (stage, channel) (obskit_orders_stuck)",
                 "max by (stage, channel) (obskit_orders_lost)",
                 "sum by (instance) (obskit_journey_sweeper_leader)",
                 "sum by (instance) (obskit_journey_hops_written_total)",
                 "sum by (stage) (obskit_orders_stage_repeated_total)",
                 "sum by (stage) (obskit_order_stage_transitions_total)",
                 "sum by (queue, outcome) (messaging_process_duration_seconds_count)", "up"):
        lines.append(f"{expr}: " + json.dumps([(r["metric"], r["value"][1])
                                               for r in p.prom.query(expr)]))
    lines.append("webhook: " + json.dumps([(rcv, a["labels"]) for _, rcv, a in p.hook.received]))
    lines.append("orderflow log tail:\n" + p.group.log()[-3000:])
    return "\n".join(lines)


def _show(p: Platform, order_id: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-P", "-m", "obskit", "orders", "show", order_id,
                        "--json"], capture_output=True, text=True, timeout=60,
                       env={**p.env, "OBSKIT_JOURNEY_URL": p.env["ORDERFLOW_REDIS_URL"]})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.fault for s in SCENARIOS])
def test_each_fault_pages_with_the_stage_where_orders_stopped(env: dict[str, str],
                                                              tmp_path: Path, sc: Scenario):
    with _platform(env, tmp_path, f"{sc.fault}=1.0", sc.env, sc.deadlines, sc.params) as p:
        t0 = time.time()
        with _Orders(p.group) as orders:  # a steady trickle, as a shop has, until the page
            try:
                at, alert = wait_for(lambda: p.hook.find(sc.receiver, sc.alert, **sc.labels),
                                     timeout=DELIVERY_TIMEOUT, interval=0.5,
                                     what=f"{sc.alert} {sc.labels} at the {sc.receiver} webhook")
            except AssertionError:
                print(_diagnose(p))
                raise
        assert not orders.errors, orders.errors[:3]
        ids = orders.ids
        print(f"\n{sc.fault}: {sc.alert} {sc.labels} reached {sc.receiver} "
              f"{at - t0:.1f}s after the first order")
        assert alert["labels"]["severity"] == ("critical" if sc.receiver == "pager"
                                               else "warning")
        assert alert["annotations"]["runbook_url"].endswith(f"{sc.alert}.md")
        for value in sc.labels.values():
            assert value in alert["annotations"]["summary"] + alert["annotations"]["description"]
        if sc.stopped_at is not None:
            journey = _show(p, ids[0])
            assert journey["now"]["stage"] == sc.stopped_at, journey


def test_duplicated_messages_are_absorbed_and_page_nobody(env: dict[str, str], tmp_path: Path):
    """Every order published twice: the MES's claim lets one twin produce it, so no order is
    worked twice and OrdersProcessedTwice stays silent (it fired here before the claim)."""
    with _platform(env, tmp_path, "duplicate=1.0", {}, "*=3s/6s", []) as p:
        with _Orders(p.group) as orders:
            time.sleep(12)  # OrdersProcessedTwice's window is 9 s at this scale
        assert not orders.errors, orders.errors[:3]
        wait_for(lambda: all(_show(p, i)["now"]["stage"] == "done" for i in orders.ids[:5]),
                 timeout=30, interval=0.5, what="the first orders to finish")
        # The scenario: three scrapes and rule evaluations of the finished orders, the window
        # in which a double-processing alert would show.
        time.sleep(3)
        firing = [r["metric"] for r in p.prom.query('ALERTS{alertname="OrdersProcessedTwice"}')]
        repeated = p.prom.query("sum(obskit_orders_stage_repeated_total)")
        journeys = [_show(p, i) for i in orders.ids[:5]]
    assert firing == [], firing
    assert not repeated or float(repeated[0]["value"][1]) == 0, repeated
    for j in journeys:
        assert [h["stage"] for h in j["hops"]].count("done") == 1, j


def test_a_run_without_faults_pages_nobody(env: dict[str, str], tmp_path: Path):
    # Deadlines as short as the fault runs': a healthy order never waits that long.
    with _platform(env, tmp_path, "", {}, "*=3s/6s", []) as p:
        # Settled: Prometheus has seen the MES consume both order queues (before that, an
        # order queue has no consumer, and rightly says so).
        wait_for(lambda: len(p.prom.query(
            'min by (queue) (messaging_queue_consumers{queue=~"orders[.]b2[bc]"}) > 0')) == 2,
            timeout=60, interval=0.5, what="the MES consuming both order queues")
        # The scenario: alerts raised before that (a queue without a consumer) resolve, and what
        # Alertmanager holds from then is delivered, before the webhook's record is cleared.
        time.sleep(3)
        p.hook.received.clear()
        traffic = Traffic(p.group.base, api_key(p.group.dsn, "calm-partner"),
                          api_key(p.group.dsn, "calm-burst", "5/second"))
        with _Background(traffic, 15.0, rate=8.0) as bg:
            pass
        assert bg.error is None, repr(bg.error)
        assert traffic.accepted and not traffic.errors, traffic.errors[:5]
        # Every scaled window and for: has passed by now (the longest for:, 15m, is 9 s; the
        # lost deadline is 6 s; the sweep runs every 0.5 s): look at what fires.
        time.sleep(12)  # the scenario: every window passes with nothing to raise
        firing = [r["metric"] for r in p.prom.query('ALERTS{alertstate="firing"}')]
        posted = [a["labels"] for _, _, a in p.hook.received]

    def absent(labels: dict[str, str]) -> bool:
        return labels["alertname"] == "TargetDown" and labels.get("job") in ABSENT_JOBS

    assert [f for f in firing if not absent(f)] == [], firing
    assert [a for a in posted if a["severity"] == "critical"] == [], posted
    assert [a for a in posted if not absent(a)] == [], posted
