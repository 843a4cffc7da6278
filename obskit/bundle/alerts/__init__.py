"""The bundle's alerting rules, generated from ``Params`` (one module per rule file).

Each module's ``groups(p)`` returns its rule groups; ``build_all`` writes them as the files under
``alerts/`` that Prometheus loads (``alerts/*.rules.yml``). Their ``promtool test rules`` cases sit
next to them in ``alerts/tests/`` and each alert's runbook in ``docs/runbooks/<AlertName>.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from obskit.bundle._params import Params
from obskit.bundle._queries import Query

from . import api, mes_slo, orders, rabbitmq, telemetry
from ._common import Alert, Group, Record, runbook_url, to_yaml

__all__ = ["RULE_FILES", "Alert", "Record", "alerts", "build_all", "markdown_table",
           "rule_queries", "rules", "runbook_url"]

#: File name under alerts/ -> builder, in the order the runbook index lists them.
RULE_FILES: dict[str, Callable[[Params], list[Group]]] = {
    m.FILE: m.groups for m in (orders, mes_slo, rabbitmq, api, telemetry)
}


def build_all(p: Params, header: Callable[[str], str]) -> dict[str, str]:
    """File name -> rule file text; ``header(source)`` is each file's leading comment."""
    out = {}
    for name, groups in RULE_FILES.items():
        module = groups.__module__.rsplit(".", 1)[-1]
        out[name] = to_yaml(p, groups(p), header(f"obskit/bundle/alerts/{module}.py"))
    return out


def rules(p: Params) -> list[tuple[str, Alert | Record]]:
    """(file name, rule) of every rule, in file order."""
    return [(name, r) for name, groups in RULE_FILES.items() for g in groups(p) for r in g.rules]


def alerts(p: Params) -> list[Alert]:
    """Every alerting rule (an alert with two severities is two rules)."""
    return [r for _, r in rules(p) if isinstance(r, Alert)]


def rule_queries(p: Params) -> list[Query]:
    """Each rule's expression as a ``Query``: alerts return nothing on a healthy system, the
    recording rules return their ratios."""
    out = []
    for name, r in rules(p):
        if isinstance(r, Alert):
            out.append(Query("promql", r.expr, f"alerts/{name}: {r.name} ({r.severity})",
                             "empty_while_healthy"))
        else:
            out.append(Query("promql", r.expr, f"alerts/{name}: {r.name}", "data"))
    return out


def markdown_table(p: Params | None = None) -> str:
    """The alerts as the index in docs/runbooks/README.md (a test checks they are equal)."""
    p = p or Params()
    rows = ["| alert | severity | what it means | rule file |", "|---|---|---|---|"]
    for name, r in rules(p):
        if isinstance(r, Alert):
            rows.append(f"| [{r.name}]({r.name}.md) | {r.severity} | {r.meaning} | "
                        f"`alerts/{name}` |")
    return "\n".join(rows)
