"""Telemetry: can the numbers be trusted? Dropped spans and logs, the collector, the journey
store and its sweeper, the cardinality guard, scrape targets."""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import COUNT, RATE, Alert, Group, Timing, grew, label

FILE = "telemetry.rules.yml"
#: How old the last sweep may be: the sweeper runs every journey_sweep_interval (10 s by default)
#: and a standby takes over within three; five minutes is many missed sweeps, not a slow one.
SWEEP_STALE_SECONDS = 300


def groups(p: Params) -> list[Group]:
    t = Timing(p)
    svc = p.service_label
    col = p.sel(base=p.collector_selector)
    w5, w10, w15 = t.window("5m"), t.window("10m"), t.window("15m")

    def dropped(name: str, metric: str, what: str, missing: str) -> Alert:
        return Alert(
            name, "warning",
            f"sum by ({svc}, reason) (rate({metric}{p.sel()}[{w5}])) > 0",
            f"{label(svc)} drops {what} ({label('reason')})",
            f"{label(svc)} has been dropping {RATE} {what}/s ({label('reason')}) for "
            f"{t.for_('10m')}: {missing} of that service are missing. queue_full: the "
            "collector is slow or unreachable; export_failed: it refuses them.",
            for_=t.for_("10m"),
            meaning=f"a service drops {what} before they reach the collector")

    def collector(name: str, kind: str, label_name: str, signals: tuple[str, str],
                  doing: str, meaning: str) -> Alert:
        expr = "\nor\n".join(f"sum by ({label_name}) (rate(otelcol_{kind}_{s}_total{col}[{w5}])) "
                             "> 0" for s in signals)
        return Alert(
            name, "warning", expr,
            f"The collector's {label_name} {label(label_name)} {doing}",
            f"The OpenTelemetry Collector's {label_name} {label(label_name)} {doing} "
            f"({RATE}/s) for {t.for_('10m')}: telemetry is being lost between the services "
            "and Tempo or Loki.",
            for_=t.for_("10m"), meaning=meaning)

    journey = p.sel()
    return [Group("obskit-telemetry", [
        dropped("TelemetrySpansDropped", "obskit_telemetry_spans_dropped_total", "spans",
                "traces"),
        dropped("TelemetryLogRecordsDropped", "obskit_telemetry_log_records_dropped_total",
                "log records", "log lines"),
        collector("CollectorRefusingTelemetry", "receiver", "receiver",
                  ("refused_spans", "refused_log_records"), "refuses spans or log records",
                  "the collector refuses what services send (memory limit, bad data)"),
        collector("CollectorExportFailing", "exporter", "exporter",
                  ("send_failed_spans", "send_failed_log_records"),
                  "fails to send spans or log records",
                  "the collector cannot deliver to Tempo or Loki"),
        Alert(
            "JourneyHopsDropped", "warning",
            f"{grew('obskit_journey_hops_dropped_total' + journey, f'{svc}, reason', w10)} > 0",
            f"{label(svc)} dropped {COUNT} order hop(s) ({label('reason')})",
            f"{label(svc)} could not write {COUNT} order hop(s) to the journey store in the "
            f"last {w10} ({label('reason')}). Those orders' journeys miss a stage: they may be "
            "reported stuck or lost although they moved on.",
            meaning="order hops never reached the journey store: stuck/lost numbers may be "
                    "wrong"),
        Alert(
            "JourneyStoreErrors", "warning",
            f"sum by ({svc}, operation) (rate(obskit_journey_store_errors_total{journey}"
            f"[{w5}])) > 0",
            f"{label(svc)}: the journey store fails ({label('operation')})",
            f"{label(svc)} has been failing to {label('operation')} the journey store (Redis) "
            f"for {t.for_('10m')}. Writes are retried from a buffer; if it fills, hops are "
            "dropped.",
            for_=t.for_("10m"),
            meaning="calls to the journey store (Redis) fail"),
        Alert(
            "JourneySweeperDown", "critical",
            f"(\n"
            f"  max(obskit_journey_sweeper_leader{journey}) < 1\n"
            f"or\n"
            f"  time() - max(obskit_journey_last_sweep_timestamp_seconds{journey})"
            f" > {SWEEP_STALE_SECONDS}\n"
            f")\n"
            f"and\n"
            f"sum(rate(obskit_journey_hops_written_total{journey}[{w15}])) > 0",
            "No journey sweeper is counting stuck and lost orders",
            "Orders are flowing but no process holds the journey sweeper lease, or its last "
            f"sweep is older than {SWEEP_STALE_SECONDS // 60} minutes: OrdersLost and "
            "OrdersStuck cannot fire. `obskit doctor` in a service shows its journey status.",
            for_=t.for_("5m"),
            meaning="nothing counts stuck and lost orders: the lost-order page cannot fire"),
        Alert(
            "MetricLabelSetsFolded", "warning",
            f"{grew('obskit_metrics_series_overflow_total' + p.sel(), f'{svc}, family', w15)} > 0",
            f"{label(svc)} folds {label('family')} label sets into __overflow__",
            f"The cardinality guard of {label(svc)} folded {COUNT} new label set(s) of "
            f"{label('family')} into __overflow__ in the last {w15}: a label takes unbounded "
            "values (an id or a raw path). Those series are merged, not lost; fix the label.",
            meaning="a metric's label takes unbounded values; the guard merges them"),
        Alert(
            "TargetDown", "warning",
            "up == 0",
            f"{label('job')} target {label('instance')} is down",
            f"Prometheus cannot scrape {label('instance')} (job {label('job')}) for "
            f"{t.for_('5m')}: its metrics, and the alerts on them, are blind.",
            for_=t.for_("5m"),
            meaning="Prometheus cannot scrape a target: its metrics and alerts are blind"),
    ])]
