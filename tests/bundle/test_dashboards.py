"""The dashboards' rules, checked on the generated models.

The key one: every metric a PromQL query names exists in obskit's catalogue, in orderflow's own
metrics or in the explicit list of external metrics below, so renaming a family in
obskit/metrics.py fails here instead of silently emptying a panel.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from obskit._context import ORDER_ID_KEY
from obskit._orders import STAGES
from obskit.bundle._params import Params, parse_overrides
from obskit.bundle._queries import Query
from obskit.bundle.dashboards import DASHBOARDS, EXPECTATIONS, all_queries, build_all
from obskit.bundle.dashboards._common import EMPTY_WHILE_HEALTHY
from obskit.metrics import Catalogue

#: Pinned: Grafana links, `bundle push` and users' bookmarks rely on them.
UIDS = {
    "order-flow.json": "obskit-order-flow",
    "mes.json": "obskit-mes",
    "api.json": "obskit-api",
    "rabbitmq.json": "obskit-rabbitmq",
    "cache.json": "obskit-cache",
    "find-order.json": "obskit-find-order",
    "telemetry.json": "obskit-telemetry",
}

#: Metrics that are not obskit's, by who exposes them. Every one must be used (no stale entries).
EXTERNAL = {
    # Prometheus itself
    "up",
    # rabbitmq_prometheus: /metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count
    "rabbitmq_detailed_queue_messages", "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked", "rabbitmq_detailed_queue_consumers",
    # rabbitmq_prometheus: /metrics (global counters)
    "rabbitmq_global_messages_unroutable_returned_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_dead_lettered_rejected_total",
    "rabbitmq_global_messages_dead_lettered_expired_total",
    "rabbitmq_global_messages_dead_lettered_maxlen_total",
    "rabbitmq_global_messages_dead_lettered_delivery_limit_total",
    "rabbitmq_global_messages_redelivered_total",
    # the OpenTelemetry Collector's own metrics (counters carry _total since v0.107)
    "otelcol_receiver_refused_spans_total", "otelcol_receiver_refused_log_records_total",
    "otelcol_receiver_accepted_spans_total", "otelcol_receiver_accepted_log_records_total",
    "otelcol_exporter_send_failed_spans_total", "otelcol_exporter_send_failed_log_records_total",
    "otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity",
    # Tempo's metrics-generator
    "traces_spanmetrics_calls_total", "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
}


def _series_names(metric: Any) -> set[str]:
    (family,) = metric.describe()  # a collector's public description: name and type
    name, kind = family.name, family.type
    if kind == "counter":
        return {name + "_total"}
    if kind == "histogram":
        return {name + s for s in ("_bucket", "_count", "_sum")}
    return {name}


def _obskit_metrics() -> set[str]:
    cat = Catalogue(CollectorRegistry())
    out = _series_names(cat.series_overflow)
    for family in cat.families.values():
        out |= _series_names(getattr(family, "metric", family))
    return out


def _orderflow_metrics() -> set[str]:
    from orderflow.api import ratelimit

    return _series_names(ratelimit.RATE_LIMITED) | _series_names(ratelimit.RATE_LIMIT_ERRORS)


OBSKIT = _obskit_metrics()
ORDERFLOW = _orderflow_metrics()

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(\s*\()?", text):
        if m.group(2) or m.group(1).lower() in _KEYWORDS:
            continue  # a function call or a keyword
        names.add(m.group(1))
    return names


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, Any]]:
    return build_all(Params())


@pytest.fixture(scope="module")
def queries() -> list[Query]:
    return all_queries(Params())


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in model["panels"]:
        if panel["type"] != "row":
            out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _promql(qs: list[Query]) -> list[Query]:
    return [q for q in qs if q.lang == "promql"]


# --- identity --------------------------------------------------------------------------------

def test_files_and_uids_are_pinned(models: dict[str, dict[str, Any]]) -> None:
    assert {name: m["uid"] for name, m in models.items()} == UIDS
    assert len(set(UIDS.values())) == len(UIDS)
    for m in models.values():
        assert m["tags"] == ["obskit"]
        assert 39 <= m["schemaVersion"] <= 41
        assert m["title"].startswith("obskit / ")


def test_uid_prefix_is_a_parameter() -> None:
    models = build_all(parse_overrides(["dashboard_uid_prefix=acme-"]))
    assert models["mes.json"]["uid"] == "acme-mes"


def test_rendering_is_deterministic(models: dict[str, dict[str, Any]]) -> None:
    again = build_all(Params())
    for name, model in models.items():
        assert json.dumps(model, sort_keys=True, indent=2) == \
            json.dumps(again[name], sort_keys=True, indent=2), name


def test_panel_ids_are_unique(models: dict[str, dict[str, Any]]) -> None:
    for name, model in models.items():
        ids = [p["id"] for p in model["panels"]] + [
            c["id"] for p in model["panels"] for c in p.get("panels", [])]
        assert len(ids) == len(set(ids)), name
        titles = [p["title"] for p in _panels(model)]
        assert len(titles) == len(set(titles)), name


# --- every panel -----------------------------------------------------------------------------

def test_every_panel_has_a_unit_and_a_description(models: dict[str, dict[str, Any]]) -> None:
    for name, model in models.items():
        for panel in _panels(model):
            where = f"{name}: {panel['title']}"
            assert panel.get("description", "").strip(), f"{where}: no description"
            assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), \
                f"{where}: no unit"


def test_every_range_uses_grafanas_interval(queries: list[Query]) -> None:
    promql = _promql(queries)
    assert promql
    for q in promql:
        for fn in re.finditer(r"\b(rate|irate|increase)\(", q.expr):
            depth, i = 1, fn.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(q.expr[i], 0)
                i += 1
            ranges = re.findall(r"\[([^\]]+)\]", q.expr[fn.end():i])
            allowed = {"$__rate_interval"} if fn.group(1) != "increase" else {
                "$__rate_interval", "$__range"}
            assert ranges and set(ranges) <= allowed, f"{q.source}: {q.expr}"
        assert not re.search(r"\[\d+[smhd]\]", q.expr), f"{q.source}: fixed range in {q.expr}"


def test_every_target_uses_a_datasource_variable(models: dict[str, dict[str, Any]]) -> None:
    refs = {"prometheus": "${datasource}", "loki": "${loki}", "tempo": "${tempo}"}
    for name, model in models.items():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        for panel in _panels(model):
            kind = panel["datasource"]["type"]
            assert panel["datasource"] == {"type": kind, "uid": refs[kind]}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]
            var = refs[kind][2:-1]
            assert variables[var]["type"] == "datasource"
            assert variables[var]["query"] == kind
        if any(p["datasource"]["type"] == "prometheus" for p in _panels(model)):
            assert variables["datasource"]["current"]["value"] == Params().prometheus_uid, name


def test_label_variables_are_multi_value_queries(models: dict[str, dict[str, Any]]) -> None:
    for name, model in models.items():
        for var in model["templating"]["list"]:
            if var["name"] in ("service", "instance", "channel", "queue", "route", "cache"):
                assert var["type"] == "query", (name, var["name"])
                assert var["query"].startswith("label_values(")
                assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"
                assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert models["mes.json"]["templating"]["list"][1]["current"]["value"] == ["mes"]
    assert models["api.json"]["templating"]["list"][1]["current"]["value"] == ["ingress"]


def test_every_variable_a_query_uses_is_defined(models: dict[str, dict[str, Any]],
                                                queries: list[Query]) -> None:
    defined = {name: {v["name"] for v in m["templating"]["list"]} for name, m in models.items()}
    for q in queries:
        file = q.source.split(":")[0]
        used = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", q.expr)}
        assert {u for u in used if not u.startswith("__")} <= defined[file], q.source
        q.concrete()  # TEST_VALUES knows every variable


# --- metric names ----------------------------------------------------------------------------

def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le, route) (rate(foo_bucket{a="b|c", d=~"x.+"}[$__range]))'
                        ' / on(x) group_left bar_total or vector(0) > bool 1e3') == {
        "foo_bucket", "bar_total"}
    assert metric_names("up == 0") == {"up"}
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m])))') == {
        "x_bucket"}


def test_every_metric_exists(queries: list[Query]) -> None:
    used: set[str] = set()
    for q in _promql(queries):
        names = metric_names(q.expr)
        assert names, f"{q.source}: no metric in {q.expr}"
        unknown = names - OBSKIT - ORDERFLOW - EXTERNAL
        assert not unknown, (f"{q.source}: {sorted(unknown)} is in neither obskit/metrics.py, "
                             "orderflow's metrics nor EXTERNAL")
        used |= names
    assert EXTERNAL - used == set(), "EXTERNAL lists metrics no dashboard uses"
    assert ORDERFLOW <= used


def test_a_renamed_family_is_caught() -> None:
    renamed = {n.replace("obskit_order_stage_transitions", "obskit_order_stages") for n in OBSKIT}
    missing = [q.source for q in _promql(all_queries(Params()))
               if metric_names(q.expr) - renamed - ORDERFLOW - EXTERNAL]
    assert "order-flow.json: Order funnel" in missing


def test_funnel_follows_obskits_stages(models: dict[str, dict[str, Any]]) -> None:
    funnel = next(p for p in _panels(models["order-flow.json"]) if p["title"] == "Order funnel")
    legends = [t["legendFormat"] for t in funnel["targets"]]
    assert legends == [s for s in STAGES if s not in ("failed", "dead_lettered")]


def test_exemplars_on_a_histogram(models: dict[str, dict[str, Any]]) -> None:
    targets = [t for p in _panels(models["order-flow.json"]) for t in p["targets"]
               if t.get("exemplar")]
    assert targets and all("obskit_order_stage_age_seconds_bucket" in t["expr"] for t in targets)


# --- selectors -------------------------------------------------------------------------------

def _selectors_of(expr: str, names: set[str]) -> list[str]:
    """The matchers (``{...}``, or "" when bare) of every selector of a metric in ``names``."""
    out = []
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\{[^}]*\})?(?!\s*\()", expr):
        if m.group(1) in names:
            out.append(m.group(2) or "")
    return out


@pytest.mark.parametrize(("param", "value", "names"), [
    ("obskit_selector", 'job="custom"', OBSKIT | ORDERFLOW | {"up"}),
    ("rabbitmq_selector", 'job="broker"', {n for n in EXTERNAL if n.startswith("rabbitmq_")}),
    ("collector_selector", 'job="collector"', {n for n in EXTERNAL if n.startswith("otelcol_")}),
])
def test_a_selector_parameter_changes_every_query(param: str, value: str,
                                                  names: set[str]) -> None:
    default = getattr(Params(), param)
    qs = _promql(all_queries(parse_overrides([f"{param}={value}"])))
    seen = 0
    for q in qs:
        if q.source.endswith(": Scrape targets down") or q.source.endswith("per job"):
            continue  # every job's `up`, on purpose
        for matchers in _selectors_of(q.expr, names):
            assert value in matchers, f"{q.source}: {q.expr}"
            seen += 1
        assert default not in q.expr, f"{q.source}: {q.expr}"
    assert seen


def test_service_and_instance_labels_are_parameters() -> None:
    p = parse_overrides(["service_label=app", "instance_label=pod"])
    for q in _promql(all_queries(p)):
        assert 'service=~"$service"' not in q.expr and 'instance=~"$instance"' not in q.expr, \
            q.source
    assert any('app=~"$service"' in q.expr for q in all_queries(p))


def test_thresholds_are_parameters() -> None:
    text = json.dumps(build_all(parse_overrides(["accept_to_done_p95_seconds=42.5",
                                                 "cache_hit_ratio_min=0.61"])))
    assert '"value": 42.5' in text and '"value": 0.61' in text


# --- expectations ----------------------------------------------------------------------------

def test_expectations_name_real_panels_and_say_so(models: dict[str, dict[str, Any]]) -> None:
    assert set(EXPECTATIONS) == set(DASHBOARDS)
    for name, model in models.items():
        panels = {p["title"]: p for p in _panels(model)}
        expected = EXPECTATIONS[name]
        assert set(expected) <= set(panels), name
        for title, panel in panels.items():
            desc = panel["description"]
            says = desc.startswith(EMPTY_WHILE_HEALTHY) or desc.startswith("Needs ")
            assert says == (title in expected), f"{name}: {title}"
            if expected.get(title) == "empty_while_healthy":
                assert desc.startswith(EMPTY_WHILE_HEALTHY), title
            elif title in expected:
                assert expected[title].startswith("needs:"), title


def test_queries_carry_their_panels_expectation(queries: list[Query]) -> None:
    by_source = {q.source: q.expect for q in queries}
    assert by_source["api.json: Server errors (5xx)"] == "empty_while_healthy"
    assert by_source["telemetry.json: Collector refused"] == "needs:collector"
    assert by_source["order-flow.json: Order funnel"] == "data"


# --- find an order ---------------------------------------------------------------------------

def test_find_order_queries_the_order_id(models: dict[str, dict[str, Any]],
                                         queries: list[Query]) -> None:
    variables = {v["name"]: v for v in models["find-order.json"]["templating"]["list"]}
    assert variables["order_id"]["type"] == "textbox"
    found = {q.lang: q.expr for q in queries if q.source.startswith("find-order.json")}
    assert found["traceql"] == f'{{ span.{ORDER_ID_KEY} = "$order_id" }}'
    assert '| order_id="$order_id"' in found["logql"]
    stages = next(q for q in queries if q.source == "find-order.json: Stages of the order")
    assert '|= "order stage"' in stages.expr
