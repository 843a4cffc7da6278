"""The one set of parameters every file of the bundle is rendered from.

A user changes a selector, a port or a threshold here (``obskit bundle render --set KEY=VALUE``)
and every file that uses it follows: compose, collector, Prometheus, Alertmanager, Tempo, Loki,
Grafana provisioning, dashboards and alerting rules. docs/platform.md lists the table
(``PARAMS``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from obskit.metrics import STAGE_BUCKETS
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
    # --- alerting (alerts/: rules, their tests, Alertmanager) --------------------------------
    slo_accept_to_done_seconds: float = _p(60.0, "The latency SLO: an order is on time when "
                                           "done within this many seconds of acceptance. Must "
                                           "be a bucket bound of obskit_order_stage_age_seconds.")
    slo_accept_to_done_target: float = _p(0.99, "Share of orders that must be on time (over "
                                          "30 days); 1 - target is the error budget the "
                                          "burn-rate alerts watch.")
    pager_webhook_url: str = _p("", "Webhook that critical alerts page through (your pager's "
                                "Alertmanager webhook). Empty: critical alerts page nobody.")
    chat_webhook_url: str = _p("", "Webhook every alert is posted to (a chat bridge); warnings "
                               "go only here. Empty: alerts show at Alertmanager and in Grafana "
                               "only.")
    runbook_base_url: str = _p("docs/runbooks", "Where the runbooks are: each alert's "
                               "runbook_url is `<this>/<AlertName>.md`. Set it to a URL your "
                               "team opens, e.g. https://github.com/ORG/REPO/blob/main/docs/"
                               "runbooks.")
    alert_time_scale: float = _p(1.0, "Multiplies every `for:` and range window of the rules "
                                 "and Alertmanager's group timings (tests: 0.01 with "
                                 "scrape_interval=1s). A window never goes below 4 × "
                                 "scrape_interval.")
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
    # --- Kubernetes (`render --target kubernetes`: deploy/kubernetes/) ----------------------
    k8s_namespace: str = _p("orderflow", "Namespace of orderflow and of its RabbitMQ, "
                            "PostgreSQL and Redis.")
    k8s_observability_namespace: str = _p("observability", "Namespace of the collector, Tempo, "
                                          "Loki, Prometheus, Alertmanager and Grafana.")
    orderflow_image: str = _p("registry.example.com/orderflow:0.1.0", "orderflow's container "
                              "image, an exact tag (deploy/orderflow.Dockerfile builds it).")
    ingress_min_replicas: int = _p(2, "Ingress pods at least (HorizontalPodAutoscaler on CPU).")
    ingress_max_replicas: int = _p(10, "Ingress pods at most.")
    mes_min_replicas: int = _p(2, "MES pods at least (KEDA on queue depth).")
    mes_max_replicas: int = _p(40, "MES pods at most; each holds database connections "
                               "(docs/explanation/capacity-model.md).")
    mes_concurrency: int = _p(8, "Orders in progress per order queue per MES pod "
                              "(`orderflow mes --concurrency`).")
    mes_queue_targets: list[str] = _p(
        ["orders.b2c=6", "orders.b2b=4"], "KEDA's target per MES pod for each order queue, "
        "`queue=messages` (ready + unacknowledged); derived in "
        "docs/explanation/capacity-model.md by deploy/capacity.py.")
    keda_polling_interval: int = _p(15, "Seconds between KEDA's reads of the queue depths.")

    def __post_init__(self) -> None:
        # Mistakes that would render valid YAML with a silently wrong meaning fail here.
        if self.slo_accept_to_done_seconds not in STAGE_BUCKETS:
            bounds = ", ".join(f"{b:g}" for b in STAGE_BUCKETS)
            raise ParamError(f"slo_accept_to_done_seconds={self.slo_accept_to_done_seconds:g}: "
                             "the SLO counts orders in the histogram bucket of that bound, so it "
                             f"must be one of obskit_order_stage_age_seconds's: {bounds}")
        if not 0 < self.slo_accept_to_done_target < 1:
            raise ParamError(f"slo_accept_to_done_target={self.slo_accept_to_done_target:g}: "
                             "expected a share between 0 and 1, e.g. 0.99")
        if not self.alert_time_scale > 0:
            raise ParamError(f"alert_time_scale={self.alert_time_scale:g}: expected a positive "
                             "factor (1 in production, e.g. 0.01 in tests)")
        try:
            if prom_seconds(self.scrape_interval) <= 0:
                raise ValueError("it is zero")
        except ValueError as exc:
            raise ParamError(f"scrape_interval={self.scrape_interval!r}: {exc}") from None
        targets = self.queue_targets()
        missing = [q for q in self.order_queues if q not in targets]
        if missing:
            raise ParamError(f"mes_queue_targets={','.join(self.mes_queue_targets)}: no target "
                             f"for {', '.join(missing)}; expected one `queue=messages` per "
                             "order queue")
        if not 0 < self.mes_min_replicas <= self.mes_max_replicas:
            raise ParamError(f"mes_min_replicas={self.mes_min_replicas}, mes_max_replicas="
                             f"{self.mes_max_replicas}: expected 0 < min <= max")
        if not 0 < self.ingress_min_replicas <= self.ingress_max_replicas:
            raise ParamError(f"ingress_min_replicas={self.ingress_min_replicas}, "
                             f"ingress_max_replicas={self.ingress_max_replicas}: expected "
                             "0 < min <= max")

    def queue_targets(self) -> dict[str, int]:
        """``mes_queue_targets`` as queue -> messages per MES pod."""
        out: dict[str, int] = {}
        for item in self.mes_queue_targets:
            queue, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit() or int(value) < 1:
                raise ParamError(f"mes_queue_targets: {item!r}: expected queue=messages, "
                                 "e.g. orders.b2c=120")
            out[queue.strip()] = int(value)
        return out

    def target_list(self) -> list[Target]:
        return [Target.parse(t) for t in self.targets]

    def sel(self, extra: str = "", base: str | None = None) -> str:
        """``{<obskit_selector>, <extra>}``: the braces of a PromQL selector."""
        parts = [s for s in (self.obskit_selector if base is None else base, extra) if s]
        return "{" + ", ".join(parts) + "}"


_PROM_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PROM_DURATION = re.compile(r"(?:(\d+)(ms|s|m|h|d|w|y))+")


def prom_seconds(duration: str) -> float:
    """A Prometheus duration (``15s``, ``1m30s``, ``2h``) in seconds."""
    text = duration.strip()
    if not _PROM_DURATION.fullmatch(text):
        raise ValueError(f"expected a Prometheus duration such as 15s, 1m or 1m30s, not "
                         f"{duration!r}")
    return sum(int(n) * _PROM_UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


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
