"""What every obskit dashboard shares: datasource and label variables, panel shapes, the encoder.

Panels are built with grafana-foundation-sdk's builders and encoded with its JSON encoder; this
module only fixes the conventions the tests pin: a unit and a description on every panel, Prometheus
targets on ``${datasource}``, stable ids and refIds, and the expectation of each panel (does it
show data on a healthy system?) recorded next to the panel that has it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, logs, loki, prometheus, stat, table, tempo
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import loki as lm
from grafana_foundation_sdk.models import tempo as tm

from obskit.bundle._params import Params
from obskit.bundle._queries import Expect

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOKI = dm.DataSourceRef(type_val="loki", uid="${loki}")
TEMPO = dm.DataSourceRef(type_val="tempo", uid="${tempo}")

#: The prefixes an on-call engineer reads first in a description; the tests check that a panel
#: expected to be empty says why.
EMPTY_WHILE_HEALTHY = "Empty while healthy: "
NEEDS = "Needs {}: "

Builder = Any  # a grafana-foundation-sdk panel builder (their classes share no public base)


@dataclass(frozen=True)
class Target:
    """One Prometheus query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    exemplar: bool = False


# --- variables -----------------------------------------------------------------------------

def datasource_var(name: str, kind: str, uid: str, label: str) -> Any:
    return (db.DatasourceVariable(name).label(label).type(kind)
            .current(dm.VariableOption(text=uid, value=uid)))


def query_var(name: str, label: str, query: str, default: str | None = None) -> Any:
    """A multi-value Prometheus query variable; "All" matches any value (``.*``)."""
    v = (db.QueryVariable(name).label(label).datasource(PROMETHEUS).query(query)
         .multi(True).include_all(True).all_value(".*")
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    if default is None:
        return v.current(dm.VariableOption(text=["All"], value=["$__all"]))
    return v.current(dm.VariableOption(text=[default], value=[default]))


def label_vars(p: Params, service_default: str | None = None, *, channel: bool = True,
               queue: str | None = None) -> list[Any]:
    """``datasource``, ``service``, ``instance`` (and ``channel``, ``queue``) from obskit's series.

    ``queue``: the metric whose ``queue`` label lists the queues.
    """
    svc, inst = p.service_label, p.instance_label
    out = [
        datasource_var("datasource", "prometheus", p.prometheus_uid, "Prometheus"),
        query_var("service", "Service", f"label_values(up{p.sel()}, {svc})", service_default),
        query_var("instance", "Instance",
                  f"label_values(up{p.sel(match(svc, '$service'))}, {inst})"),
    ]
    if channel:
        stages = f"obskit_order_stage_transitions_total{p.sel()}"
        out.append(query_var("channel", "Channel", f"label_values({stages}, channel)"))
    if queue:
        out.append(query_var("queue", "Queue", f"label_values({queue}, queue)"))
    return out


def eq(label: str, value: str) -> str:
    """``label="value"``."""
    return f'{label}="{value}"'


def match(label: str, regex: str) -> str:
    """``label=~"regex"``."""
    return f'{label}=~"{regex}"'


def scoped(p: Params, *matchers: str) -> str:
    """``p.sel()`` narrowed to the dashboard's ``$service`` and ``$instance``, plus
    ``matchers``."""
    parts = [match(p.service_label, "$service"), match(p.instance_label, "$instance")]
    return p.sel(", ".join([*parts, *(m for m in matchers if m)]))


# --- panels --------------------------------------------------------------------------------

def _prom_targets(panel: Builder, targets: Sequence[Target]) -> Builder:
    for t in targets:
        q = prometheus.Dataquery().expr(t.expr).datasource(PROMETHEUS)
        if t.legend:
            q = q.legend_format(t.legend)
        if t.instant:
            q = q.instant()
        else:
            q = q.range()
        if t.exemplar:
            q = q.exemplar(True)
        panel = panel.with_target(q)
    return panel.datasource(PROMETHEUS)


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> Any:
    return (db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


def above(limit: float) -> list[tuple[float | None, str]]:
    """Green below ``limit``, red at or above it."""
    return [(None, "green"), (limit, "red")]


def below(limit: float) -> list[tuple[float | None, str]]:
    """Red below ``limit``, green at or above it."""
    return [(None, "red"), (limit, "green")]


def timeseries(title: str, description: str, unit: str, targets: Sequence[Target], *,
               w: int = 12, h: int = 8, thresholds: Sequence[tuple[float | None, str]] = (),
               stack: bool = False, min_zero: bool = True, bars: bool = False) -> Builder:
    panel = (ts.Panel().title(title).description(description).unit(unit).span(w).height(h)
             .line_width(1).fill_opacity(10 if not stack else 60)
             .legend(cb.VizLegendOptions().show_legend(True)
                     .display_mode(cm.LegendDisplayMode.TABLE)
                     .placement(cm.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                      .sort(cm.SortOrder.DESCENDING)))
    if min_zero:
        panel = panel.min(0)
    if bars:
        panel = panel.draw_style(cm.GraphDrawStyle.BARS)
    if stack:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if thresholds:
        panel = (panel.thresholds(_thresholds(thresholds))
                 .thresholds_style(cb.GraphThresholdsStyleConfig()
                                   .mode(cm.GraphThresholdsStyleMode.DASHED)))
    return _prom_targets(panel, targets)


def stat_panel(title: str, description: str, unit: str, targets: Sequence[Target], *,
               w: int = 6, h: int = 5,
               thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> Builder:
    panel = (stat.Panel().title(title).description(description).unit(unit).span(w).height(h)
             .graph_mode(cm.BigValueGraphMode.AREA).color_mode(cm.BigValueColorMode.VALUE)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(_thresholds(thresholds)))
    return _prom_targets(panel, targets)


def bar_gauge(title: str, description: str, unit: str, targets: Sequence[Target], *,
              w: int = 12, h: int = 8,
              thresholds: Sequence[tuple[float | None, str]] = ((None, "blue"),)) -> Builder:
    panel = (bargauge.Panel().title(title).description(description).unit(unit).span(w).height(h)
             .orientation(cm.VizOrientation.HORIZONTAL)
             .display_mode(cm.BarGaugeDisplayMode.GRADIENT).show_unfilled(True).min(0)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(_thresholds(thresholds)))
    return _prom_targets(panel, targets)


def table_panel(title: str, description: str, unit: str, targets: Sequence[Target], *,
                w: int = 12, h: int = 8) -> Builder:
    panel = (table.Panel().title(title).description(description).unit(unit).span(w).height(h)
             .with_transformation(dm.DataTransformerConfig(id_val="merge", options={})))
    return _prom_targets(panel, targets)


def logs_panel(title: str, description: str, expr: str, *, w: int = 24, h: int = 10) -> Builder:
    return (logs.Panel().title(title).description(description).unit("none").span(w).height(h)
            .datasource(LOKI).show_time(True).wrap_log_message(True).enable_log_details(True)
            .prettify_log_message(False).show_common_labels(False).show_labels(False)
            .sort_order(cm.LogsSortOrder.ASCENDING)
            .with_target(loki.Dataquery().expr(expr).datasource(LOKI)
                         .query_type("range").direction(lm.LokiQueryDirection.FORWARD)))


def loki_table(title: str, description: str, expr: str, columns: Sequence[str], *,
               w: int = 12, h: int = 10) -> Builder:
    """A Loki log query as a table: time, then ``columns`` from the stream labels, oldest first."""
    keep = {"Time": True, **{c: True for c in columns}}
    order = {name: i for i, name in enumerate(keep)}
    return (table.Panel().title(title).description(description).unit("none").span(w).height(h)
            .datasource(LOKI)
            .with_target(loki.Dataquery().expr(expr).datasource(LOKI)
                         .query_type("range").direction(lm.LokiQueryDirection.FORWARD))
            .with_transformation(dm.DataTransformerConfig(
                id_val="extractFields", options={"source": "labels", "replace": False}))
            .with_transformation(dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {}, "includeByName": keep, "indexByName": order,
                         "renameByName": {}}))
            .sort_by([cb.TableSortByFieldState().display_name("Time").desc(False)]))


def tempo_table(title: str, description: str, traceql: str, *, w: int = 12,
                h: int = 10) -> Builder:
    return (table.Panel().title(title).description(description).unit("none").span(w).height(h)
            .datasource(TEMPO)
            .with_target(tempo.TempoQuery().query(traceql).query_type("traceql").limit(20)
                         .table_type(tm.SearchTableType.TRACES).datasource(TEMPO)))


# --- the dashboard -------------------------------------------------------------------------

class Board:
    """One dashboard being built: its panels in order and what each is expected to show."""

    def __init__(self, p: Params, name: str, title: str, description: str,
                 variables: Sequence[Any], *, refresh: str = "30s",
                 time_from: str = "now-1h") -> None:
        self.p = p
        self.name = name
        self.expectations: dict[str, Expect] = {}
        self._builder = (db.Dashboard(title).uid(p.dashboard_uid_prefix + name)
                         .description(description).tags(["obskit"]).editable()
                         .refresh(refresh).time(time_from, "now").timezone("browser")
                         .tooltip(dm.DashboardCursorSync.CROSSHAIR))
        for v in variables:
            self._builder = self._builder.with_variable(v)

    def row(self, title: str) -> Board:
        self._builder = self._builder.with_row(db.Row(title))
        return self

    def add(self, panel: Builder, expect: Expect = "data") -> Board:
        title = panel.build().title
        if title in self.expectations:
            raise ValueError(f"{self.name}: two panels titled {title!r}")
        self.expectations[title] = expect
        self._builder = self._builder.with_panel(panel)
        return self

    def build(self) -> dict[str, Any]:
        model: dict[str, Any] = json.loads(json.dumps(self._builder.build(), cls=JSONEncoder))
        for i, panel in enumerate(_walk(model), start=1):
            panel["id"] = i
            for j, target in enumerate(panel.get("targets", [])):
                target["refId"] = _ref_id(j)
        model["links"] = [{
            "title": "obskit dashboards", "type": "dashboards", "tags": ["obskit"],
            "asDropdown": True, "includeVars": False, "keepTime": True, "targetBlank": False,
            "icon": "external link", "tooltip": "", "url": ""}]
        return model

    def expected(self) -> dict[str, Expect]:
        """Panels that are not expected to show data on a healthy system."""
        return {t: e for t, e in self.expectations.items() if e != "data"}


def _walk(model: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in model.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _ref_id(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"Q{i}"
