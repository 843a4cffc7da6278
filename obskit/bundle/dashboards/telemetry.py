"""Telemetry health: is the telemetry itself complete? Dropped spans and logs, obskit's own
errors, the label guard, the collector, Tempo's generated metrics, and scrape targets."""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    NEEDS,
    Board,
    Target,
    above,
    label_vars,
    scoped,
    table_panel,
    timeseries,
)

NAME = "telemetry"


def build(p: Params) -> Board:
    def col(extra: str = "") -> str:
        return p.sel(extra, base=p.collector_selector)

    svc = p.service_label
    b = Board(p, NAME, "obskit / Telemetry health",
              "Whether what the other dashboards show is complete: telemetry dropped on the way, "
              "errors obskit swallowed to keep the services running, label sets folded by the "
              "cardinality guard, the collector's pipeline and Prometheus's scrape targets.",
              label_vars(p, channel=False))

    b.row("obskit in the services")
    b.add(timeseries(
        "Spans dropped",
        "Spans the services did not export, by service and reason: queue_full (the collector "
        "is slow or down and the export queue overflowed) or export_failed. Zero lines while "
        "healthy (the series exists from the first exported span); otherwise the traces of "
        "that period are incomplete.",
        "ops",
        [Target(f"sum by ({svc}, reason) (rate(obskit_telemetry_spans_dropped_total{scoped(p)}"
                "[$__rate_interval]))", f"{{{{{svc}}}}} {{{{reason}}}}")],
        thresholds=above(0.001)))
    b.add(timeseries(
        "Log records dropped",
        EMPTY_WHILE_HEALTHY + "log records the services did not export over OTLP, by service "
        "and reason (queue_full, export_failed); a zero line where a service exports logs over "
        "OTLP. Points here mean Loki misses lines that the service's own log output still has.",
        "ops",
        [Target(f"sum by ({svc}, reason) (rate(obskit_telemetry_log_records_dropped_total"
                f"{scoped(p)}[$__rate_interval]))", f"{{{{{svc}}}}} {{{{reason}}}}")],
        thresholds=above(0.001)), expect="empty_while_healthy")
    b.add(timeseries(
        "Spans exported",
        "Spans per second the services' exporters handed to the collector, by service.",
        "ops",
        [Target(f"sum by ({svc}) (rate(obskit_telemetry_spans_exported_total{scoped(p)}"
                "[$__rate_interval]))", f"{{{{{svc}}}}}")]))
    b.add(timeseries(
        "obskit internal errors",
        EMPTY_WHILE_HEALTHY + "errors inside obskit that it swallowed so the service kept "
        "running, by service and component. The service is fine; its telemetry is not: the "
        "service's log has the exception.",
        "ops",
        [Target(f"sum by ({svc}, component) (rate(obskit_internal_errors_total{scoped(p)}"
                "[$__rate_interval]))", f"{{{{{svc}}}}} {{{{component}}}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Label sets over the cardinality cap",
        EMPTY_WHILE_HEALTHY + "label sets the cardinality guard folded into __overflow__, by "
        "service and metric family: a label took more distinct values than a metric can hold "
        "(an id or raw path used as a label). Those series are merged, not lost.",
        "ops",
        [Target(f"sum by ({svc}, family) (rate(obskit_metrics_series_overflow_total{scoped(p)}"
                "[$__rate_interval]))", f"{{{{{svc}}}}} {{{{family}}}}")]),
        expect="empty_while_healthy")

    b.row("Collector")
    needs = NEEDS.format("the collector's own metrics")
    b.add(timeseries(
        "Collector refused",
        needs + "spans and log records the collector's receivers refused (memory limiter "
        "pressure, bad data): the sending service counts them as export_failed.",
        "ops",
        [Target(f"sum by (receiver) (rate(otelcol_receiver_refused_spans_total{col()}"
                "[$__rate_interval]))", "spans {{receiver}}"),
         Target(f"sum by (receiver) (rate(otelcol_receiver_refused_log_records_total{col()}"
                "[$__rate_interval]))", "logs {{receiver}}")]),
        expect="needs:collector")
    b.add(timeseries(
        "Collector export failures",
        needs + "spans and log records the collector failed to send to Tempo and Loki, by "
        "exporter. Sustained failures with a full queue (next panel) lose data.",
        "ops",
        [Target(f"sum by (exporter) (rate(otelcol_exporter_send_failed_spans_total{col()}"
                "[$__rate_interval]))", "spans {{exporter}}"),
         Target(f"sum by (exporter) (rate(otelcol_exporter_send_failed_log_records_total{col()}"
                "[$__rate_interval]))", "logs {{exporter}}")]),
        expect="needs:collector")
    b.add(timeseries(
        "Collector export queue",
        needs + "batches waiting in each exporter's sending queue, as a share of its "
        "capacity. At 100 % the collector drops new data.",
        "percentunit",
        [Target(f"max by (exporter) (otelcol_exporter_queue_size{col()}) / max by (exporter) "
                f"(otelcol_exporter_queue_capacity{col()})", "{{exporter}}")],
        thresholds=above(0.8)), expect="needs:collector")
    b.add(timeseries(
        "Collector accepted",
        needs + "spans and log records per second the collector's receivers accepted: what "
        "reaches the platform.",
        "ops",
        [Target(f"sum(rate(otelcol_receiver_accepted_spans_total{col()}[$__rate_interval]))",
                "spans"),
         Target(f"sum(rate(otelcol_receiver_accepted_log_records_total{col()}"
                "[$__rate_interval]))", "logs")]),
        expect="needs:collector")

    b.row("Tempo and scraping")
    tempo = NEEDS.format("Tempo's metrics-generator")
    b.add(timeseries(
        "Request rate from traces",
        tempo + "server spans per second by service, computed by Tempo from the traces it "
        "received (span metrics). Compare with the services' own request rates: a gap means "
        "spans are lost on the way.",
        "ops",
        [Target("sum by (service) (rate(traces_spanmetrics_calls_total"
                '{span_kind="SPAN_KIND_SERVER"}[$__rate_interval]))', "{{service}}")]),
        expect="needs:tempo")
    b.add(timeseries(
        "Service graph requests",
        tempo + "requests per second between services as Tempo's service graph sees them "
        "(client → server edges), with failed ones.",
        "ops",
        [Target("sum by (client, server) (rate(traces_service_graph_request_total"
                "[$__rate_interval]))", "{{client}} → {{server}}"),
         Target("sum by (client, server) (rate(traces_service_graph_request_failed_total"
                "[$__rate_interval]))", "failed {{client}} → {{server}}")]),
        expect="needs:tempo")
    b.add(table_panel(
        "Scrape targets down",
        EMPTY_WHILE_HEALTHY + "every Prometheus target whose last scrape failed (`up == 0`), "
        "by job and instance: its metrics, and the panels and alerts built on them, are "
        "missing.",
        "short",
        [Target("up == 0", instant=True)], w=12), expect="empty_while_healthy")
    b.add(timeseries(
        "Scrape targets up per job",
        "Targets per job whose last scrape succeeded. A drop is a process or an exporter gone.",
        "short",
        [Target("sum by (job) (up)", "{{job}}")], w=12))
    return b
