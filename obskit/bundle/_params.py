"""The one set of parameters every file of the bundle is rendered from.

A user changes a selector, a port or a threshold here (``obskit bundle render --set KEY=VALUE``)
and every file that uses it follows: compose, collector, Prometheus, Alertmanager, Tempo, Loki,
Grafana provisioning and dashboards. docs/platform.md lists the table (``PARAMS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from obskit.processors import DEFAULT_SCRUB_KEYS

__all__ = ["PARAMS", "Params", "ParamError", "Target", "parse_overrides"]


class ParamError(ValueError):
    """A ``--set KEY=VALUE`` names no parameter or has a value of the wrong shape."""


def _p(default: Any, doc: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Target:
    """One process serving obskit's ``/metrics``: ``service`` and ``instance`` become labels."""

    service: str
    instance: str
    address: str  # host:port

    @classmethod
    def parse(cls, text: str) -> Target:
        """``service[/instance]=host:port``; the instance defaults to the service name."""
        name, sep, address = text.strip().partition("=")
        service, _, instance = name.partition("/")
        host, colon, port = address.rpartition(":")
        if not sep or not service or not host or not colon or not port.isdigit():
            raise ParamError(f"target {text!r}: expected service[/instance]=host:port, "
                             "e.g. mes/mes-1=host.docker.internal:9467")
        return cls(service.strip(), (instance or service).strip(), address.strip())

    def __str__(self) -> str:
        name = self.service if self.instance == self.service else f"{self.service}/{self.instance}"
        return f"{name}={self.address}"


#: orderflow's processes as ``orderflow all --metrics-port 9464`` numbers them, seen from the
#: containers (``host.docker.internal`` is the host through ``host-gateway``).
DEFAULT_TARGETS = [
    "ingress=host.docker.internal:9464",
    "crm-relay=host.docker.internal:9465",
    "crm-status=host.docker.internal:9466",
    "mes/mes-1=host.docker.internal:9467",
    "mes/mes-2=host.docker.internal:9468",
]


@dataclass(frozen=True)
class Params:
    """Every parameter of the bundle, with its default (the checked-in render)."""

    # --- where things listen --------------------------------------------------------------
    bind_address: str = _p("127.0.0.1", "Host address the published ports bind to. 0.0.0.0 "
                           "exposes the stack to the network: set a strong Grafana password.")
    grafana_port: int = _p(3000, "Grafana on the host.")
    prometheus_port: int = _p(9090, "Prometheus on the host.")
    alertmanager_port: int = _p(9093, "Alertmanager on the host.")
    tempo_port: int = _p(3200, "Tempo's HTTP API on the host.")
    loki_port: int = _p(3100, "Loki's HTTP API on the host.")
    otlp_grpc_port: int = _p(4317, "The collector's OTLP/gRPC receiver on the host.")
    otlp_http_port: int = _p(4318, "The collector's OTLP/HTTP receiver on the host.")
    # --- images: exact release tags, never `latest` -------------------------------------------
    collector_image: str = _p("otel/opentelemetry-collector-contrib:0.159.0",
                              "The OpenTelemetry Collector (contrib distribution).")
    tempo_image: str = _p("grafana/tempo:3.0.3", "Tempo.")
    loki_image: str = _p("grafana/loki:3.7.6", "Loki.")
    prometheus_image: str = _p("prom/prometheus:v3.14.0", "Prometheus.")
    alertmanager_image: str = _p("prom/alertmanager:v0.34.0", "Alertmanager.")
    grafana_image: str = _p("grafana/grafana:13.2.0", "Grafana.")
    # --- what Prometheus scrapes -----------------------------------------------------------
    targets: list[str] = _p(DEFAULT_TARGETS, "obskit processes to scrape, comma-separated "
                            "service[/instance]=host:port (one per process: exemplars are kept "
                            "per process, not in multiprocess mode).")
    rabbitmq_metrics: str = _p("host.docker.internal:15692", "RabbitMQ's rabbitmq_prometheus "
                               "endpoint (host:port).")
    collector_metrics: str = _p("otelcol:8888", "The collector's own metrics (host:port).")
    tempo_address: str = _p("tempo:3200", "Tempo's HTTP address as Prometheus and Grafana see it.")
    loki_address: str = _p("loki:3100", "Loki's HTTP address as the collector and Grafana see it.")
    prometheus_address: str = _p("prometheus:9090", "Prometheus as Tempo, Grafana and itself see "
                                 "it.")
    alertmanager_address: str = _p("alertmanager:9093", "Alertmanager as Prometheus and Grafana "
                                   "see it.")
    grafana_address: str = _p("grafana:3000", "Grafana as Prometheus sees it (its own metrics).")
    prometheus_config_dir: str = _p("/etc/prometheus", "Where Prometheus finds its files: "
                                    "`alerts/*.rules.yml` and `targets/*.json` under it.")
    scrape_interval: str = _p("15s", "Prometheus scrape and rule evaluation interval.")
    retention: str = _p("15d", "How long Prometheus, Loki and Tempo keep data.")
    # --- selectors: one change re-targets every dashboard and rule ------------------------
    obskit_selector: str = _p('job="obskit"', "PromQL label matchers that select the obskit "
                              "services' metrics (without braces).")
    rabbitmq_selector: str = _p('job="rabbitmq"', "PromQL label matchers for RabbitMQ's metrics.")
    collector_selector: str = _p('job="otelcol"', "PromQL label matchers for the collector's "
                                 "own metrics.")
    service_label: str = _p("service", "The target label that names a service (from `targets`).")
    instance_label: str = _p("instance", "The target label that names one process.")
    mes_service: str = _p("mes", "The MES's service name (its dashboard's default).")
    ingress_service: str = _p("ingress", "The HTTP ingress's service name.")
    order_queues: list[str] = _p(["orders.b2c", "orders.b2b"], "The critical order queues; "
                                 "their DLQs are `<queue>.dlq`.")
    # --- thresholds (dashboards colour by them; the alerting rules reuse them) -------------
    accept_to_done_p95_seconds: float = _p(30.0, "Accept → done p95 above this is late.")
    mes_stage_p95_seconds: float = _p(5.0, "An MES stage p95 above this is slow.")
    http_error_ratio: float = _p(0.01, "5xx share of requests above this is an incident.")
    queue_backlog_messages: int = _p(1000, "Ready messages in an order queue above this is a "
                                     "backlog.")
    cache_hit_ratio_min: float = _p(0.8, "Dashboard cache hit ratio below this is degraded.")
    alert_webhook_url: str = _p("", "Where Alertmanager sends alerts (a webhook: your pager's, "
                                "a chat bridge). Empty: alerts are visible but page nobody.")
    # --- Grafana ---------------------------------------------------------------------------
    grafana_folder: str = _p("obskit", "The folder the dashboards go to.")
    grafana_folder_uid: str = _p("obskit", "Its uid (stable: `bundle push` updates by uid).")
    dashboard_uid_prefix: str = _p("obskit-", "Prefix of every dashboard uid.")
    prometheus_uid: str = _p("obskit-prometheus", "Datasource uid of Prometheus.")
    tempo_uid: str = _p("obskit-tempo", "Datasource uid of Tempo.")
    loki_uid: str = _p("obskit-loki", "Datasource uid of Loki.")
    alertmanager_uid: str = _p("obskit-alertmanager", "Datasource uid of Alertmanager.")
    # --- collector -------------------------------------------------------------------------
    collector_memory_limit_mib: int = _p(512, "The collector's memory limiter ceiling.")
    redact_keys: list[str] = _p(
        [*DEFAULT_SCRUB_KEYS, "email", "customer_email"],
        "Attribute key words whose values the collector masks: obskit's own scrub list, a "
        "second line for telemetry that did not pass through obskit.")

    def target_list(self) -> list[Target]:
        return [Target.parse(t) for t in self.targets]

    def sel(self, extra: str = "", base: str | None = None) -> str:
        """``{<obskit_selector>, <extra>}``: the braces of a PromQL selector."""
        parts = [s for s in (self.obskit_selector if base is None else base, extra) if s]
        return "{" + ", ".join(parts) + "}"


PARAMS: tuple[dataclasses.Field[Any], ...] = tuple(dataclasses.fields(Params))
_BY_NAME = {f.name: f for f in PARAMS}


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("list"):
            return [v.strip() for v in raw.split(",") if v.strip()]
    except ValueError as exc:
        raise ParamError(f"{name}={raw!r}: {exc}") from None
    return raw


def parse_overrides(pairs: Iterable[str] | Mapping[str, Any] = (),
                    base: Params | None = None) -> Params:
    """``Params`` with ``KEY=VALUE`` overrides applied (lists are comma-separated)."""
    items = pairs.items() if isinstance(pairs, Mapping) else (_split(p) for p in pairs)
    changes: dict[str, Any] = {}
    for key, raw in items:
        f = _BY_NAME.get(key)
        if f is None:
            close = [n for n in _BY_NAME if key.split("_")[0] in n]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise ParamError(f"unknown parameter {key!r}{hint}; `obskit bundle params` lists "
                             "them")
        changes[key] = _convert(key, f.type, raw) if isinstance(raw, str) else raw
    params = dataclasses.replace(base or Params(), **changes)
    params.target_list()  # a malformed target fails here, with its text
    return params


def _split(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise ParamError(f"--set {pair!r}: expected KEY=VALUE")
    return key.strip(), value


def markdown_table() -> str:
    """The parameters as the table in docs/platform.md (``python -m obskit.bundle._params``)."""
    p = Params()
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for f in PARAMS:
        value = getattr(p, f.name)
        shown = ",".join(value) if isinstance(value, list) else str(value)
        if len(shown) > 60:
            shown = shown[:57] + "…"
        shown = shown.replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
