"""Every query the bundle ships (dashboard panels, variables, datasource links), in one list.

The tests parse each with Grafana's own grammars and evaluate each PromQL query against a live
Prometheus; a query that is added to a dashboard is in this list without anyone registering it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Query", "TEST_VALUES", "dashboard_queries"]

Lang = Literal["promql", "logql", "traceql"]
#: What a query returns on a healthy system: "data" (at least one series), "empty_while_healthy"
#: (shows data only under a fault: DLQ growth, 5xx, dropped spans), or "needs:<component>" (fed by
#: a part of the platform that does not run beside the tests, e.g. the collector or Tempo).
Expect = str

#: Values for Grafana's variables when a query is parsed or run outside Grafana.
TEST_VALUES = {
    "__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300",
    "service": ".*", "instance": ".*", "channel": ".*", "queue": ".*", "route": ".*", "cache": ".*",
    "order_id": "ord_test", "datasource": "prometheus", "loki": "loki", "tempo": "tempo",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    # the datasource links' own variables
    "__tags": 'service="mes"', "__trace.traceId": "0af7651916cd43dd8448eb211c80319c",
    '__span.tags["service.name"]': "mes",
}
_VAR = re.compile(r"\$\{([^}:]+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class Query:
    lang: Lang
    expr: str  # as shipped, with Grafana variables
    source: str  # "<file>: <panel title>" for messages
    expect: Expect = "data"

    def concrete(self, values: dict[str, str] | None = None) -> str:
        """``expr`` with Grafana's variables replaced (``TEST_VALUES`` by default)."""
        vals = TEST_VALUES if values is None else values

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name not in vals:
                raise KeyError(f"{self.source}: no test value for variable ${name}")
            return vals[name]

        return _VAR.sub(sub, self.expr)


_LANGS: dict[str, Lang] = {"prometheus": "promql", "loki": "logql", "tempo": "traceql"}


def _lang(datasource: Any) -> Lang | None:
    kind = datasource.get("type") if isinstance(datasource, dict) else None
    return _LANGS.get(kind or "")


def dashboard_queries(file: str, dashboard: dict[str, Any],
                      expectations: dict[str, Expect] | None = None) -> list[Query]:
    """The queries of every panel target and query variable of a dashboard model.

    ``expectations`` maps a panel title to its ``Expect`` (default "data").
    """
    expectations = expectations or {}
    out: list[Query] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # rows hold their collapsed panels
        for target in panel.get("targets", []):
            lang = _lang(target.get("datasource")) or _lang(panel.get("datasource"))
            expr = target.get("expr") or target.get("query")
            if lang is None or not expr:
                continue
            title = panel.get("title", "?")
            out.append(Query(lang, expr, f"{file}: {title}", expectations.get(title, "data")))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        lang = _lang(var.get("datasource"))
        q = var.get("query")
        expr = q.get("query") if isinstance(q, dict) else q
        if lang == "promql" and expr:
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr.strip(), re.S)
            if m:  # Grafana's helper, not PromQL: its selector is
                expr = m.group(1)
            out.append(Query(lang, expr, f"{file}: variable {var.get('name')}", "data"))
    return out
