"""The observability platform, rendered from one set of parameters.

``obskit bundle render --out DIR [--set KEY=VALUE ...]`` writes the compose file, the collector,
Prometheus, Alertmanager, Tempo, Loki and Grafana configuration, the order-flow dashboards and the
alerting rules; with ``--target kubernetes``, the manifests and chart values of deploy/kubernetes/
(``_kubernetes.py``). ``obskit bundle push`` sends the dashboards to an existing Grafana. Needs
``obskit[bundle]``.
"""

from __future__ import annotations

from obskit.bundle._params import PARAMS, ParamError, Params, Target, parse_overrides
from obskit.bundle._queries import Query
from obskit.bundle._render import datasource_queries, render, render_files

__all__ = [
    "PARAMS",
    "ParamError",
    "Params",
    "Query",
    "Target",
    "all_queries",
    "parse_overrides",
    "render",
    "render_files",
]


def all_queries(params: Params | None = None) -> list[Query]:
    """Every query the bundle ships: dashboard panels and variables, datasource links, and
    the expressions of the alerting and recording rules."""
    from obskit.bundle import alerts, dashboards

    p = params or Params()
    out = list(dashboards.all_queries(p))
    out += [Query(lang, expr, source, expect)  # type: ignore[arg-type]
            for lang, expr, source, expect in datasource_queries(p)]
    out += alerts.rule_queries(p)
    return out
