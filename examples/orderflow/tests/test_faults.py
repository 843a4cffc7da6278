"""Faults on purpose (``orderflow.faults``): the spec, and each fault's effect on the real pipeline.

The pipeline tests share one group of their own (``isolated_services``: database and vhost)
running the ingress and the CRM status consumer; each test starts the relay and an MES worker
with its fault, so one test's fault never touches another's orders.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import (
    AUTH,
    MGMT,
    _free_port,
    _ready,
    isolated_services,
    new_ip,
    order_body,
    sql,
    statuses,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from orderflow import cli, demo, faults
from orderflow.messaging import vhost_of

# --- the spec -----------------------------------------------------------------------------------


@pytest.fixture
def no_faults() -> Iterator[None]:
    faults.load("")
    yield
    faults.load("")


def test_parse_names_rates_and_defaults() -> None:
    assert faults.parse("") == {}
    assert faults.parse(" relay-drop=0.25 , poison,duplicate=1,slow-mes=0") == {
        "relay-drop": 0.25, "poison": faults.FAULTS["poison"].default_rate, "duplicate": 1.0,
        "slow-mes": 0.0}
    assert faults.parse("poison=0.1,poison=0.3") == {"poison": 0.3}  # the last wins
    assert set(faults.FAULTS) == {"relay-drop", "mes-ack-drop", "mes-stall", "poison",
                                  "duplicate", "slow-mes"}
    for f in faults.FAULTS.values():
        assert 0 < f.default_rate < 1 and f.process in ("relay", "mes"), f
    assert faults.parse(faults.format_spec({"mes-stall": 0.5, "poison": 1.0})) == {
        "mes-stall": 0.5, "poison": 1.0}


@pytest.mark.parametrize(("spec", "message"), [
    ("relay-dorp", "unknown fault 'relay-dorp'; valid: relay-drop, mes-ack-drop, mes-stall, "
                   "poison, duplicate, slow-mes"),
    ("poison=1.5", "rate of fault 'poison' must be a number from 0 to 1"),
    ("poison=-0.1", "got '-0.1'"),
    ("poison=half", "got 'half'"),
    ("poison=nan", "got 'nan'"),
    ("poison=", "got ''"),
])
def test_parse_errors_name_the_culprit(spec: str, message: str) -> None:
    with pytest.raises(faults.FaultSpecError) as info:
        faults.parse(f"duplicate,{spec}")
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_an_order_is_picked_by_its_id_at_about_the_rate(no_faults: None) -> None:
    ids = [f"order-{i}" for i in range(20000)]
    picked = [i for i in ids if faults.picks("poison", i, 0.1)]
    assert 0.09 < len(picked) / len(ids) < 0.11
    assert picked == [i for i in ids if faults.picks("poison", i, 0.1)]  # the same every time
    other = {i for i in ids if faults.picks("relay-drop", i, 0.1)}
    assert len(other & set(picked)) < 0.2 * len(picked)  # each fault picks its own orders
    assert not any(faults.picks("poison", i, 0.0) for i in ids[:1000])

    assert not faults.hit("poison", "order-1")  # off by default
    faults.load("poison=1")
    assert faults.hit("poison", "order-1") and not faults.hit("relay-drop", "order-1")
    faults.load("poison=0.1")
    assert [i for i in ids if faults.hit("poison", i)] == picked


def test_cli_refuses_a_bad_fault_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             no_faults: None) -> None:
    monkeypatch.setenv("ORDERFLOW_FAULTS", "mes-stall,poisson=0.1")
    for argv in (["relay"], ["mes"], ["all"], ["api"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "ORDERFLOW_FAULTS: unknown fault 'poisson'; valid: relay-drop," in err, err
    monkeypatch.delenv("ORDERFLOW_FAULTS")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--duration", "1", "--fault", "duplicate=2"])
    assert exit_info.value.code == 2
    assert "--fault: rate of fault 'duplicate' must be a number from 0 to 1" \
        in capsys.readouterr().err
    args = cli.parser().parse_args(["demo", "--duration", "1", "--fault", "poison",
                                    "--fault", "relay-drop=0.5"])
    assert dict(args.fault) == {"poison": 0.02, "relay-drop": 0.5}


def test_demo_summary_says_the_orders_were_lost_on_purpose() -> None:
    summary = {"accepted": 10, "completed": 6, "failed": 0, "dead_lettered": 0, "in_flight": 4,
               "unaccounted": 0, "rejected_invalid": 0, "rate_limited": 0,
               "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "cache_hit_ratio": 0.5,
               "dashboard_reads": 3, "by_channel": {"b2c": 6, "b2b": 4},
               "faults": {"relay-drop": 0.3}, "lost_on_purpose": 4,
               "stuck_by_status": {"accepted": 4}, "processed_twice": 0}
    text = demo.format_summary(summary)
    assert text.startswith("FAULTS ON         relay-drop=0.3")
    assert "lost_on_purpose   4   stopped at: accepted 4" in text
    assert "FAULTS" not in demo.format_summary({**summary, "faults": {}})


# --- each fault in the real pipeline ------------------------------------------------------------


class Proc:
    """One ``orderflow`` process with its own log file and ``/metrics`` port."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.started_event: str | None = None
        self.metrics_port = _free_port()
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "orderflow.cli", *args],
                env={**env, "OBSKIT_METRICS_PORT": str(self.metrics_port),
                     "OBSKIT_METRICS_ADDR": "127.0.0.1"},
                stdout=out, stderr=subprocess.STDOUT)

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
        return lines

    def running(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        return True

    def started(self) -> bool:
        return self.running() and any(x.get("event") == self.started_event for x in self.logs())

    def announced(self) -> list[dict[str, Any]]:
        return [x for x in self.logs() if x.get("event") == "fault injection ON"]

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from this process's ``/metrics`` (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Group:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.dsn = env["ORDERFLOW_DATABASE_URL"]
        self.vhost = vhost_of(env["ORDERFLOW_RABBITMQ_URL"])
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []

    def start(self, *args: str, fault: str = "", **extra_env: str) -> Proc:
        """Start ``orderflow ARGS`` with ``ORDERFLOW_FAULTS=fault`` (``up`` waits for it)."""
        env = {**self.env, "ORDERFLOW_FAULTS": fault, "OBSKIT_LOG_LEVEL": "INFO", **extra_env}
        p = Proc(env, self.logs / f"{args[0]}-{len(self.procs)}.log", *args)
        p.started_event = {"relay": "relay started", "mes": "mes worker started",
                           "status": "status consumer started"}.get(args[0])
        self.procs.append(p)
        return p

    def up(self) -> None:
        """Wait until every relay, MES worker and status consumer works: an order placed earlier
        would wait for them in the outbox or the queue, but a test wants its fault to meet its
        orders in a running process."""
        for p in self.procs:
            if p.started_event:
                wait_for(p.started, timeout=30, what=f"{p.log_path.name}: {p.started_event!r}")

    def place(self) -> str:
        r = httpx.post(self.base + "/api/v1/shop/orders", json=order_body(),
                       headers={"X-Forwarded-For": new_ip()})
        assert r.status_code == 202, r.text
        return str(r.json()["order_id"])

    def history(self, order_id: str) -> dict[str, tuple[Any, int]]:
        """status → (at, duplicates)"""
        rows = sql(self.dsn, "SELECT status, at, duplicates FROM order_status_history"
                             " WHERE order_id = %s", order_id)
        return {status: (at, dups) for status, at, dups in rows}

    def reached(self, order_id: str, status: str) -> bool:
        return status in self.history(order_id)

    def peek(self, queue: str) -> list[dict[str, Any]]:
        """The ready messages of ``queue``, left in it (management API; not the lagging
        statistics: the broker answers from the queue itself)."""
        r = httpx.post(f"{MGMT}/queues/{quote(self.vhost, safe='')}/{queue}/get", auth=AUTH,
                       json={"count": 50, "ackmode": "ack_requeue_true", "encoding": "auto"})
        r.raise_for_status()
        return list(r.json())

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()


@pytest.fixture(scope="module")
def group(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    with isolated_services("orderflow_faults") as own:
        e = {**env, "ORDERFLOW_DATABASE_URL": own.dsn, "ORDERFLOW_READ_DATABASE_URL": own.dsn,
             "ORDERFLOW_RABBITMQ_URL": own.amqp_url,
             "ORDERFLOW_REDIS_PREFIX": f"orderflow-faults-{own.run}",
             "OBSKIT_JOURNEY_PREFIX": f"orderflow-faults-{own.run}",
             "ORDERFLOW_FAULT_STALL_SECONDS": "3600", "ORDERFLOW_FAULT_SLOW_SECONDS": "0.4"}
        g = Group(e, tmp_path_factory.mktemp("faults"))
        g.start("api", "--port", str(g.port))
        g.start("status")
        try:
            wait_for(lambda: _ready(g.base), timeout=30, what="ingress /readyz")
            g.up()  # the status consumer has declared the queues
            yield g
        finally:
            g.stop()


@pytest.fixture
def pipeline(group: Group) -> Iterator[Group]:
    """The group with empty order queues; the relay and MES workers a test starts are stopped
    after it."""
    for queue in ("orders.b2c", "orders.b2b"):  # e.g. a stalled order given back
        httpx.delete(f"{MGMT}/queues/{quote(group.vhost, safe='')}/{queue}/contents",
                     auth=AUTH).raise_for_status()
    ingress_and_status = list(group.procs)
    group.procs = []
    try:
        yield group
    finally:
        group.stop()
        group.procs = ingress_and_status


def _announced(p: Proc, fault: str, rate: float) -> None:
    lines = wait_for(p.announced, timeout=10, what="fault injection ON")
    assert [(x["fault"], x["rate"], x["level"]) for x in lines] == [(fault, rate, "warning")]
    assert p.metric("orderflow_fault_active", fault=fault) == rate


def test_relay_drop_deletes_the_outbox_row_and_publishes_nothing(pipeline: Group) -> None:
    g = pipeline
    relay = g.start("relay", fault="relay-drop=1")
    g.up()
    _announced(relay, "relay-drop", 1.0)
    ids = [g.place() for _ in range(3)]
    wait_for(lambda: sql(g.dsn, "SELECT count(*) FROM outbox WHERE order_id = ANY(%s::uuid[])",
                         ids) == [(0,)], timeout=20, what="the relay to take the rows")
    # Stopped at the CRM commit (journey stage `stored`): no `published`, nothing in the broker.
    assert statuses(g.dsn, ids) == dict.fromkeys(ids, "accepted")
    assert all(set(g.history(i)) == {"accepted"} for i in ids)
    assert g.peek("orders.b2c") == []
    assert relay.metric("messaging_published_total", exchange="orders") == 0
    assert relay.metric("obskit_order_stage_transitions_total", stage="published") == 0


def test_poison_lands_in_the_dlq_and_the_order_stays_published(pipeline: Group) -> None:
    g = pipeline
    relay = g.start("relay", fault="poison=1")
    mes = g.start("mes", "--worker-id", "mes-p")
    g.up()
    _announced(relay, "poison", 1.0)
    oid = g.place()

    def dead_lettered() -> list[dict[str, Any]]:
        return [m for m in g.peek("orders.b2c.dlq")
                if m["properties"].get("message_id") == f"order:{oid}"]

    [message] = wait_for(dead_lettered, timeout=20, what="the poisoned order in the DLQ")
    headers = message["properties"]["headers"]
    assert headers["x-obskit-error-type"].endswith("MessageParseError"), headers
    assert headers["x-obskit-dead-letter-reason"] == "permanent"
    with pytest.raises(ValueError):
        json.loads(message["payload"])
    wait_for(lambda: g.reached(oid, "published"), timeout=10, what="`published` recorded")
    assert statuses(g.dsn, [oid]) == {oid: "published"}
    assert set(g.history(oid)) == {"accepted", "published"}
    assert mes.metric("obskit_order_stage_transitions_total", stage="received") == 0


def test_duplicate_is_delivered_twice_and_worked_once(pipeline: Group) -> None:
    g = pipeline
    relay = g.start("relay", fault="duplicate=1")
    # Stages long enough that the second delivery starts before the first is finished.
    mes = g.start("mes", "--worker-id", "mes-d", ORDERFLOW_MES_STAGE_DELAY="0.3")
    g.up()
    _announced(relay, "duplicate", 1.0)
    oid = g.place()
    wait_for(lambda: g.reached(oid, "done"), timeout=30, what="the order done")
    assert relay.metric("messaging_published_total", exchange="orders", routing_key="b2c") == 2
    # The twin waits for the claim (retried, no attempt spent), then is acked without work.
    wait_for(lambda: (mes.metric("messaging_acked_total", queue="orders.b2c") or 0) >= 2,
             timeout=15, what="the twin acknowledged")
    history = g.history(oid)
    assert all(dups == 0 for _, dups in history.values()), history
    assert statuses(g.dsn, [oid]) == {oid: "done"}


def test_mes_ack_drop_acknowledges_without_working(pipeline: Group) -> None:
    g = pipeline
    g.start("relay")
    mes = g.start("mes", "--worker-id", "mes-a", fault="mes-ack-drop=1")
    g.up()
    _announced(mes, "mes-ack-drop", 1.0)
    oid = g.place()
    wait_for(lambda: mes.metric("messaging_acked_total", queue="orders.b2c") == 1, timeout=20,
             what="the MES to acknowledge the order")
    # Acknowledged after `received` and before any other stage: nothing follows.
    assert mes.metric("obskit_order_stage_transitions_total", stage="received") == 1
    assert mes.metric("obskit_order_stage_transitions_total", stage="priced") == 0
    # `received` may be written before the relay records `published`: wait for both.
    wait_for(lambda: g.reached(oid, "received") and g.reached(oid, "published"), timeout=10,
             what="`published` and `received` in the history")
    assert set(g.history(oid)) == {"accepted", "published", "received"}
    assert g.peek("orders.b2c") == []


def test_mes_stall_holds_the_order_after_priced_and_shutdown_gives_it_back(
        pipeline: Group) -> None:
    g = pipeline
    g.start("relay")
    mes = g.start("mes", "--worker-id", "mes-s", fault="mes-stall=1")
    g.up()
    _announced(mes, "mes-stall", 1.0)
    oid = g.place()
    wait_for(lambda: g.reached(oid, "priced"), timeout=20, what="`priced`")
    # Held: delivered, not acknowledged, not scheduled (ORDERFLOW_FAULT_STALL_SECONDS=3600).
    assert mes.metric("messaging_consumed_total", queue="orders.b2c") == 1
    assert mes.metric("messaging_acked_total", queue="orders.b2c") == 0
    assert mes.metric("obskit_order_stage_transitions_total", stage="scheduled") == 0
    assert g.peek("orders.b2c") == []  # unacked: not ready for anyone else

    started = time.monotonic()
    mes.proc.send_signal(signal.SIGTERM)
    assert mes.proc.wait(timeout=15) == 0
    # Well under the consumer's 10 s shutdown timeout: the stall was cut short, not waited out.
    assert time.monotonic() - started < 8
    [back] = wait_for(lambda: g.peek("orders.b2c"), timeout=10, what="the message back")
    assert back["properties"]["message_id"] == f"order:{oid}"
    assert statuses(g.dsn, [oid]) == {oid: "priced"}


def test_slow_mes_makes_each_stage_take_longer(pipeline: Group) -> None:
    g = pipeline
    g.start("relay")
    mes = g.start("mes", "--worker-id", "mes-w", fault="slow-mes=1",
                  ORDERFLOW_MES_STAGE_DELAY="0.01")
    g.up()
    _announced(mes, "slow-mes", 1.0)
    oid = g.place()
    wait_for(lambda: g.reached(oid, "done"), timeout=20, what="the slow order done")
    at = {status: v[0] for status, v in g.history(oid).items()}
    for before, after in (("priced", "scheduled"), ("scheduled", "printing"),
                          ("printing", "done")):
        assert (at[after] - at[before]).total_seconds() >= 0.4, (before, after, at)
