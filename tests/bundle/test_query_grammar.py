"""Every PromQL, LogQL and TraceQL query the bundle ships parses with the grammars Grafana uses.

The parsers are Prometheus's ``@prometheus-io/lezer-promql`` and Grafana's ``@grafana/lezer-logql``
and ``@grafana/lezer-traceql``, the ones behind Grafana's query editors, pinned in
tests/bundle/querycheck. The first tests prove the checker itself catches errors.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from obskit.bundle import Params, Query, all_queries

QUERYCHECK = Path(__file__).resolve().parent / "querycheck"


def _q(lang: str, expr: str, name: str) -> Query:
    return Query(lang, expr, f"test: {name}")  # type: ignore[arg-type]


GOOD = [
    _q("promql", 'histogram_quantile(0.95, sum by (le) (rate(x_bucket{job="obskit"}[1m])))', "p95"),
    _q("promql", 'sum by (le) (rate(x_bucket{job="obskit", service=~"$service"}'
                 '[$__rate_interval]))', "variables"),
    _q("promql", 'sum(rate(http_server_request_duration_seconds_count{http_response_status_code'
                 '=~"5.."}[5m])) / sum(rate(http_server_request_duration_seconds_count[5m]))'
                 ' > 0.01', "ratio"),
    _q("promql", 'count by (service) (up{job="obskit"} == 1) or vector(0)', "or vector"),
    _q("logql", '{service_name=~".+"} | order_id="ord_1" | json', "label filter"),
    _q("logql", '{service_name=~"$service"} |= "${order_id}" | logfmt | line_format "{{.msg}}"',
       "line filter"),
    _q("logql", 'sum by (level) (count_over_time({service_name="mes"} | json [$__interval]))',
       "metric query"),
    _q("traceql", '{ span.order.id = "ord_1" }', "span attribute"),
    _q("traceql", '{ resource.service.name = "mes" } | select(span.order.stage)', "select"),
    _q("traceql", '{ resource.service.name =~ "$service" && span:duration > 1s }', "intrinsic"),
    _q("traceql", '{ status = error } | rate() by (resource.service.name)', "metrics"),
]

BAD = [
    _q("promql", 'sum(rate(x_bucket{job="obskit"}[1m])', "unclosed paren"),
    _q("promql", 'rate(x_bucket[1m]) by (le)', "by on a function"),
    _q("promql", 'histogram_quantile(0.95 sum(x))', "missing comma"),
    _q("promql", "", "empty"),
    _q("logql", '{service_name="mes"} |= ', "filter without a string"),
    _q("logql", '{service_name=mes}', "unquoted matcher value"),
    _q("logql", 'sum(rate({service_name="mes"}))', "rate without a range"),
    _q("traceql", '{ span.order.id = }', "comparison without a value"),
    _q("traceql", '{ span.order.id = "ord_1"', "unclosed spanset"),
    _q("traceql", '{ resource.service.name = "mes" } | select(', "unclosed select"),
]


def test_checker_accepts_valid_queries(querycheck):
    assert querycheck(GOOD) == []


def test_checker_reports_each_invalid_query_with_its_position(querycheck):
    failures = querycheck(BAD)
    assert sorted(f["source"] for f in failures) == sorted(q.source for q in BAD)
    by_source = {f["source"]: f for f in failures}
    unclosed = by_source["test: unclosed paren"]
    assert unclosed["lang"] == "promql"
    assert unclosed["error"].startswith("syntax error at 1:37 (offset 36)")
    assert by_source["test: unquoted matcher value"]["error"].endswith('unexpected "mes"')


def test_checker_reports_the_query_as_shipped_and_as_parsed(querycheck):
    bad = _q("promql", "rate(x[$__rate_interval]", "unclosed, with a variable")
    [failure] = querycheck([bad])
    assert failure["shipped"] == bad.expr
    assert failure["expr"] == "rate(x[1m]"


def test_checker_rejects_malformed_input(querycheck):
    for payload in ('{"lang": "promql"}', '[{"lang": "sql", "expr": "SELECT 1"}]', "not json"):
        done = subprocess.run(["node", "check.mjs"], cwd=QUERYCHECK, input=payload,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, (payload, done.stdout, done.stderr)
        assert done.stderr.startswith("check.mjs: ")


def test_every_shipped_query_parses(querycheck):
    # The bundle's one list of queries: dashboard panels and variables, datasource links.
    queries = all_queries(Params())
    per_lang = Counter(q.lang for q in queries)
    # The bundle queries Prometheus, Loki and Tempo; a check that parses none of one language
    # proves nothing about it.
    assert all(per_lang[lang] > 0 for lang in ("promql", "logql", "traceql")), per_lang

    failures = querycheck(queries)
    assert not failures, f"{len(failures)} of {len(queries)} shipped queries do not parse:\n" + (
        "\n".join(f"- {f['source']} ({f['lang']}): {f['error']}\n    {json.dumps(f['shipped'])}"
                  for f in failures))
