"""The alerting rules and Alertmanager's routing, checked by the real tools.

promtool 2.42 checks the rule files and runs their unit tests (alerts/tests/: every alert fires
with its labels and annotations, and stays silent when healthy); amtool 0.25 checks the routing;
a real Alertmanager applies the inhibitions; and a real Prometheus evaluating the rendered rules
delivers an alert to a webhook through the rendered Alertmanager config.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_dashboards import EXTERNAL, OBSKIT, metric_names

from obskit.bundle import ParamError, Params, all_queries, parse_overrides, render, render_files
from obskit.bundle._params import prom_seconds
from obskit.bundle.alerts import RULE_FILES, Record, alerts, markdown_table, rules
from obskit.testing import AlertmanagerProcess, PrometheusProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RUNBOOKS = ROOT / "docs" / "runbooks"
AM_CONFIG = ALERTS / "alertmanager.yml"
#: Dashboards a runbook may send the on-call engineer to.
DASHBOARDS = ("order-flow", "mes", "api", "rabbitmq", "cache", "find-order", "telemetry")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run scripts/system-deps.sh"
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=120)


def _rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.rules.yml"))


def _test_files() -> list[Path]:
    return sorted((ALERTS / "tests").glob("*.test.yml"))


def _alert_rules(text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r]


def _all_rules(files: dict[str, str]) -> list[dict[str, Any]]:
    return [r for rel, text in sorted(files.items()) if rel.endswith(".rules.yml")
            for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


# --- promtool ---------------------------------------------------------------------------------

def test_promtool_accepts_the_rule_files() -> None:
    files = _rule_files()
    assert {f.name for f in files} == set(RULE_FILES)
    r = _run("promtool", "check", "rules", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = _test_files()
    # one test file per rule file, named after it
    assert {t.name.replace(".test.yml", ".rules.yml") for t in tests} == set(RULE_FILES)
    r = _run("promtool", "test", "rules", *map(str, tests))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(tests), r.stdout


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    # So the test above cannot pass by accident: one wrong annotation is a failure.
    (tmp_path / "tests").mkdir()
    shutil.copy(ALERTS / "orders.rules.yml", tmp_path)
    text = (ALERTS / "tests" / "orders.test.yml").read_text()
    assert '"2 b2c order(s) lost at stage published"' in text
    broken = tmp_path / "tests" / "orders.test.yml"
    broken.write_text(text.replace('"2 b2c order(s) lost', '"3 b2c order(s) lost'))
    r = _run("promtool", "test", "rules", str(broken))
    assert r.returncode != 0 and "OrdersLost" in r.stdout + r.stderr


# --- every alert ------------------------------------------------------------------------------

def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    seen = 0
    for path in _rule_files():
        for rule in _alert_rules(path.read_text()):
            name, where = rule["alert"], f"{path.name}: {rule['alert']}"
            assert rule["labels"]["severity"] in ("critical", "warning"), where
            notes = rule["annotations"]
            assert set(notes) == {"summary", "description", "runbook_url"}, where
            assert notes["summary"].strip() and notes["description"].strip(), where
            assert notes["runbook_url"] == f"docs/runbooks/{name}.md", where
            assert (ROOT / notes["runbook_url"]).is_file(), f"{where}: no runbook"
            # The summary names what is affected: a label the alert is grouped by.
            grouped = set(re.findall(r"\b(?:by|without) \(([^)]*)\)", rule["expr"]))
            names = {n.strip() for g in grouped for n in g.split(",")} - {"le", "endpoint"}
            if rule["expr"].strip() == "up == 0":
                names = {"job", "instance"}
            if names:
                assert any(f"$labels.{n}" in notes["summary"] for n in names), where
            seen += 1
    assert seen == len(alerts(Params()))


def _unit_cases() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(file, alert name, expected alerts) of every alert_rule_test case."""
    for path in _test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                yield path.name, case["alertname"], case.get("exp_alerts") or []


def test_every_alert_fires_in_a_unit_test_and_is_silent_in_another() -> None:
    fires: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for file, name, expected in _unit_cases():
        if not expected:
            silent.add(name)
        for exp in expected:
            fires.add((name, exp["exp_labels"]["severity"]))
            # exact annotations, not only labels
            assert set(exp.get("exp_annotations", {})) == {"summary", "description",
                                                            "runbook_url"}, (file, name)
    shipped = {(a.name, a.severity) for a in alerts(Params())}
    assert shipped - fires == set(), "alerts with no firing unit test"
    assert {n for n, _ in shipped} - silent == set(), "alerts with no silent unit test"
    assert fires <= shipped, "unit tests of alerts that do not exist"


def test_runbooks_cover_every_alert_and_nothing_else() -> None:
    names = {a.name for a in alerts(Params())}
    pages = {p.stem: p.read_text() for p in RUNBOOKS.glob("*.md") if p.name != "README.md"}
    assert set(pages) == names
    for name, text in pages.items():
        assert text.startswith(f"# {name}\n"), name
        # followable half-asleep: a dashboard to open and a command to run
        assert any(f"obskit-{d}" in text for d in DASHBOARDS), f"{name}: names no dashboard"
        assert re.search(r"```sh\n", text), f"{name}: no command to run"


def test_the_runbook_index_lists_every_alert() -> None:
    assert markdown_table() in (RUNBOOKS / "README.md").read_text(), \
        "docs/runbooks/README.md's table is stale: paste `python -c 'from " \
        "obskit.bundle.alerts import markdown_table; print(markdown_table())'`"


def test_every_metric_a_rule_reads_exists() -> None:
    recorded = {r.name for _, r in rules(Params()) if isinstance(r, Record)}
    for file, rule in rules(Params()):
        names = metric_names(rule.expr)
        assert names, f"{file}: {rule.name}"
        unknown = names - OBSKIT - EXTERNAL - recorded
        assert not unknown, f"{file}: {rule.name} reads {sorted(unknown)}, which nothing exports"


def test_every_rule_expression_is_among_the_bundles_queries() -> None:
    # ... so Grafana's PromQL grammar parses it (test_query_grammar.py) and the live platform
    # test evaluates it.
    exprs = {q.expr for q in all_queries(Params()) if q.source.startswith("alerts/")}
    assert exprs == {r.expr for _, r in rules(Params())}


def test_selectors_and_the_service_label_reach_the_rules() -> None:
    files = render_files(parse_overrides(['obskit_selector=job="shop"',
                                          'rabbitmq_selector=job="mq", cluster="eu1"',
                                          'collector_selector=job="col"', "service_label=app"]))
    text = "\n".join(r["expr"] for r in _all_rules(files))
    assert 'job="obskit"' not in text and 'job="rabbitmq"' not in text
    assert 'job="otelcol"' not in text and "service" not in text
    assert 'obskit_orders_lost{job="shop"}' in text
    assert 'up{job="mq", cluster="eu1"}' in text and '{job="col"}' in text
    assert "sum by (app, reason)" in text
    assert "equal: [alertname, channel, stage, queue, app]" in files["alerts/alertmanager.yml"]


def test_thresholds_are_parameters() -> None:
    files = render_files(parse_overrides(["queue_backlog_messages=250", "http_error_ratio=0.05",
                                          "mes_stage_p95_seconds=2.5",
                                          "slo_accept_to_done_seconds=30",
                                          "slo_accept_to_done_target=0.995"]))
    text = "\n".join(r["expr"] for r in _all_rules(files))
    assert "> 250\n" in text and "\n> 0.05" in text and "[10m]))) > 2.5" in text
    assert 'le=~"30|30[.]0"' in text and "> (14.4 * 0.005)" in text


@pytest.mark.parametrize("pair, message", [
    ("slo_accept_to_done_seconds=45", "must be one of obskit_order_stage_age_seconds's"),
    ("slo_accept_to_done_target=1", "between 0 and 1"),
    ("alert_time_scale=0", "positive factor"),
    ("scrape_interval=fast", "expected a Prometheus duration"),
])
def test_bad_alerting_parameters_name_the_problem(pair: str, message: str) -> None:
    with pytest.raises(ParamError, match=re.escape(message)):
        parse_overrides([pair])


# --- alert_time_scale -------------------------------------------------------------------------

def _durations(expr: str) -> list[str]:
    """Every range window and offset of an expression, in order."""
    return re.findall(r"\[(\d[0-9a-z]*)\]|offset (\d[0-9a-z]*)", expr)


def test_the_time_scale_reaches_every_window_and_for_and_never_goes_below_4_scrapes(
        tmp_path: Path) -> None:
    default = _all_rules(render_files())
    files = render_files(parse_overrides(["scrape_interval=1s", "alert_time_scale=0.01"]))
    scaled = _all_rules(files)
    assert [r.get("alert") or r["record"] for r in scaled] == \
        [r.get("alert") or r["record"] for r in default]
    clamped = 0
    for d, s in zip(default, scaled, strict=True):
        name = d.get("alert") or d["record"]
        if "for" in d:
            assert prom_seconds(s["for"]) == pytest.approx(prom_seconds(d["for"]) * 0.01), name
        assert ("for" in s) == ("for" in d), name
        windows = list(zip(_durations(d["expr"]), _durations(s["expr"]), strict=True))
        for (dw, do), (sw, so) in windows:
            nominal, got = prom_seconds(dw or do), prom_seconds(sw or so)
            assert got == pytest.approx(max(nominal * 0.01, 4.0)), (name, dw or do, sw or so)
            clamped += nominal * 0.01 < 4.0
    assert clamped, "no window hit the 4-scrape floor: the test proves nothing about it"
    assert "[43m12s]" in "\n".join(r["expr"] for r in scaled)  # 3d × 0.01
    # Alertmanager's waits scale too.
    am = yaml.safe_load(files["alerts/alertmanager.yml"])["route"]
    assert (am["group_wait"], am["group_interval"], am["repeat_interval"]) == ("300ms", "3s",
                                                                               "2m24s")
    # Prometheus accepts the scaled files.
    for rel, text in files.items():
        if rel.endswith(".rules.yml"):
            (tmp_path / Path(rel).name).write_text(text)
    r = _run("promtool", "check", "rules", *map(str, sorted(tmp_path.glob("*.rules.yml"))))
    assert r.returncode == 0, r.stdout + r.stderr


# --- Alertmanager -----------------------------------------------------------------------------

def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    r = _run("amtool", "check-config", str(AM_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    text = render_files(parse_overrides(["pager_webhook_url=https://pager.example/hook",
                                         "chat_webhook_url=https://chat.example/hook"]))[
        "alerts/alertmanager.yml"]
    path = tmp_path / "am.yml"
    path.write_text(text)
    r = _run("amtool", "check-config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    assert receivers["pager"]["webhook_configs"][0]["url"] == "https://pager.example/hook"
    assert receivers["chat"]["webhook_configs"][0]["url"] == "https://chat.example/hook"
    # Unset, a receiver has no integration: nothing is sent anywhere.
    assert {r["name"]: set(r) for r in yaml.safe_load(AM_CONFIG.read_text())["receivers"]} == \
        {"pager": {"name"}, "chat": {"name"}}


def test_the_documented_pagerduty_and_slack_receivers_are_valid(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "platform.md").read_text()
    m = re.search(r"<!-- alertmanager-receivers-example[^>]*-->\n```yaml\n(.*?)```", doc, re.S)
    assert m, "docs/platform.md lost its receivers example"
    config = yaml.safe_load(AM_CONFIG.read_text())
    config["receivers"] = yaml.safe_load(m.group(1))["receivers"]
    assert {r["name"] for r in config["receivers"]} == {"pager", "chat"}
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(config))
    r = _run("amtool", "check-config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_critical_alerts_page_and_post_to_chat_warnings_only_post() -> None:
    for a in alerts(Params()):
        expected = "pager,chat" if a.severity == "critical" else "chat"
        r = _run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}",
                 f"--verify.receivers={expected}", f"alertname={a.name}",
                 f"severity={a.severity}", "channel=b2c", "stage=published")
        assert r.returncode == 0, f"{a.name} ({a.severity}): {r.stdout}{r.stderr}"
        assert r.stdout.strip() == expected


def _post(am: AlertmanagerProcess, *label_sets: dict[str, str]) -> None:
    body = [{"labels": labels, "annotations": {"summary": "test"}} for labels in label_sets]
    httpx.post(f"{am.url}/api/v2/alerts", json=body, timeout=10).raise_for_status()


def test_alertmanager_inhibits_what_says_nothing_new() -> None:
    lost = {"alertname": "OrdersLost", "severity": "critical", "stage": "published",
            "channel": "b2c"}
    stuck_there = {**lost, "alertname": "OrdersStuck", "severity": "warning"}
    stuck_elsewhere = {**stuck_there, "stage": "priced"}
    page = {"alertname": "OrderLatencyBudgetBurn", "severity": "critical", "channel": "b2b"}
    ticket = {**page, "severity": "warning"}
    ticket_b2c = {**ticket, "channel": "b2c"}
    broker = {"alertname": "RabbitMQDown", "severity": "critical", "job": "rabbitmq",
              "instance": "mq:15692"}
    dlq = {"alertname": "DeadLetterQueueNotEmpty", "severity": "warning",
           "queue": "orders.b2c.dlq"}
    broker_target = {"alertname": "TargetDown", "severity": "warning", "job": "rabbitmq",
                     "instance": "mq:15692"}
    mes_target = {**broker_target, "job": "obskit", "instance": "mes-1"}
    muted = [stuck_there, ticket, dlq, broker_target]
    shown = [lost, stuck_elsewhere, page, ticket_b2c, broker, mes_target]
    with AlertmanagerProcess(AM_CONFIG) as am:
        _post(am, *muted, *shown)

        def states() -> dict[str, str] | None:
            got = {json.dumps(a["labels"], sort_keys=True): a["status"]["state"]
                   for a in am.alerts()}
            return got if len(got) == len(muted) + len(shown) else None

        def settled() -> dict[str, str] | None:
            got = states()
            return got if got and list(got.values()).count("suppressed") >= len(muted) else None

        got = wait_for(settled, 10, what="the inhibitions to apply")
    for labels in muted:
        assert got[json.dumps(labels, sort_keys=True)] == "suppressed", labels
    for labels in shown:
        assert got[json.dumps(labels, sort_keys=True)] == "active", labels


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_firing_rule_reaches_the_pager_and_chat_webhooks(tmp_path: Path) -> None:
    """The rendered rules on a real Prometheus, the rendered routing on a real Alertmanager, with
    1 s scrapes and alert_time_scale=0.01. RabbitMQ's metrics endpoint is a closed port: the
    critical RabbitMQDown pages (and posts to chat), the other dead targets' TargetDown warnings
    reach chat only, and RabbitMQ's own TargetDown is inhibited."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}"
    out = tmp_path / "bundle"
    prom_port = _free_port()
    settings = [
        "scrape_interval=1s", "alert_time_scale=0.01",
        f"pager_webhook_url={hook}/pager", f"chat_webhook_url={hook}/chat",
        f"prometheus_config_dir={out}", f"prometheus_address=127.0.0.1:{prom_port}",
        *(f"{k}=127.0.0.1:{_free_port()}" for k in ("rabbitmq_metrics", "collector_metrics",
                                                      "tempo_address", "loki_address",
                                                      "grafana_address")),
    ]
    received: list[tuple[str, dict[str, Any]]] = server.received  # type: ignore[attr-defined]

    def delivered(path: str, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [a for p, body in list(received) if p == path for a in body["alerts"]
                if a["labels"]["alertname"] == alertname and a["status"] == "firing"
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    try:
        render(out, parse_overrides(settings))
        with AlertmanagerProcess(out / "alerts" / "alertmanager.yml") as am:
            render(out, parse_overrides([*settings, f"alertmanager_address={am.address}"]))
            with PrometheusProcess(out / "platform/prometheus/prometheus.yml",
                                   port=prom_port) as prom:
                started = time.monotonic()
                [page] = wait_for(lambda: delivered("/pager", "RabbitMQDown"), 30,
                                  what="RabbitMQDown at the pager webhook")
                paged_after = time.monotonic() - started
                assert page["labels"]["severity"] == "critical"
                assert page["annotations"]["runbook_url"] == "docs/runbooks/RabbitMQDown.md"
                assert "is down" in page["annotations"]["summary"]
                wait_for(lambda: delivered("/chat", "RabbitMQDown"), 10,
                         what="RabbitMQDown in chat")
                wait_for(lambda: delivered("/chat", "TargetDown", job="tempo"), 30,
                         what="TargetDown (tempo) in chat")
                # RabbitMQ's own TargetDown fired too, and is muted by RabbitMQDown.
                inhibited = wait_for(lambda: [a for a in am.alerts()
                                              if a["labels"]["alertname"] == "TargetDown"
                                              and a["labels"]["job"] == "rabbitmq"
                                              and a["status"]["state"] == "suppressed"], 10,
                                     what="RabbitMQ's TargetDown to be inhibited")
                assert inhibited
                # Every rule evaluates on Prometheus 2.42 without an error.
                health = [(r["name"], r["health"], r.get("lastError", ""))
                          for g in prom.rules() for r in g["rules"]]
                assert len(health) == len(rules(Params()))
                assert all(h == "ok" for _, h, _ in health), health
    finally:
        server.shutdown()
        server.server_close()
    assert not delivered("/chat", "TargetDown", job="rabbitmq")
    warnings_paged = [a for p, body in received if p == "/pager" for a in body["alerts"]
                      if a["labels"]["severity"] != "critical"]
    assert not warnings_paged
    assert paged_after < 20
