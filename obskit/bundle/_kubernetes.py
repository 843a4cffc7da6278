"""The Kubernetes target: orderflow and the platform as manifests and chart values.

``render_kubernetes(params)`` is deploy/kubernetes/ as ``{path relative to it: text}``, from the
same ``Params`` as the compose bundle: the alerting rules become PrometheusRules, the dashboards
Grafana-sidecar ConfigMaps, the collector configuration the gateway's chart values, the
datasources Grafana's, and the selectors the relabelling of the PodMonitors, so a dashboard
reads the same labels in both.

The manifests are Python data dumped as YAML (not templates): the tests read them back as data,
and a misspelt key is a Python error here rather than a silently ignored YAML key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from obskit.bundle._params import ParamError, Params
from obskit.bundle._templates import hours, render_template

__all__ = ["CHARTS", "OPERATORS", "Process", "render_kubernetes"]

Doc = dict[str, Any]

#: The port every orderflow pod serves ``/metrics`` on (``OBSKIT_METRICS_PORT``): one process
#: per pod, so one port for all; the compose bundle's BASE+i layout is a one-host necessity.
METRICS_PORT = 9464
#: ``orderflow api --port``.
HTTP_PORT = 8000
#: The user the image runs as (deploy/orderflow.Dockerfile creates it).
RUN_AS = 10001

# Names other resources refer to; the operators derive their Services and Secrets from them.
# RabbitMQ: Service orderflow-rabbitmq, Secret orderflow-rabbitmq-default-user.
RABBITMQ = "orderflow-rabbitmq"
POSTGRES = "orderflow-db"  # Services orderflow-db-rw / -ro, Secret orderflow-db-app
POSTGRES_DB = "orderflow"
REDIS_RELEASE = "orderflow-redis-ha"  # redis-ha chart: HAProxy Service orderflow-redis-ha-haproxy
# Key `auth`; created by hand (docs/how-to/deploy-on-kubernetes.md).
REDIS_SECRET = "orderflow-redis"
APP_SECRET = "orderflow-secrets"  # ORDERFLOW_DASHBOARD_TOKEN; created by hand, optional
CONFIG = "orderflow-config"
GATEWAY = "otel-gateway"  # fullnameOverride of the gateway collector release
AGENT = "otel-agent"
TEMPO = "tempo"
LOKI = "loki"
KPS = "kps"  # kube-prometheus-stack's fullnameOverride: kps-prometheus, kps-alertmanager

#: The operators whose custom resources are rendered, pinned; tests/bundle/fixtures/crds/ holds
#: the CRDs of exactly these versions.
OPERATORS = {
    "keda": "2.20.2",
    "rabbitmq-cluster-operator": "2.22.3",
    "cloudnative-pg": "1.30.0",
    "prometheus-operator": "0.93.0 (kube-prometheus-stack 88.5.3)",
}
#: Helm charts whose values files are rendered: (repository URL, chart, version).
CHARTS = {
    "kube-prometheus-stack": ("https://prometheus-community.github.io/helm-charts",
                              "kube-prometheus-stack", "88.5.3"),
    "tempo-distributed": ("https://grafana-community.github.io/helm-charts",
                          "tempo-distributed", "3.3.0"),
    "loki": ("https://grafana-community.github.io/helm-charts", "loki", "18.11.0"),
    "opentelemetry-collector": ("https://open-telemetry.github.io/opentelemetry-helm-charts",
                                "opentelemetry-collector", "0.170.0"),
    "redis-ha": ("https://dandydeveloper.github.io/charts", "redis-ha", "4.39.0"),
    "keda": ("https://kedacore.github.io/charts", "keda", "2.20.2"),
}


@dataclass(frozen=True, slots=True)
class Process:
    """One orderflow process kind: a Deployment of identical pods."""

    service: str  # obskit.init()'s service name, the `service` label, the component label
    args: tuple[str, ...]  # after `orderflow`
    cpu: tuple[str, str]  # request, limit
    memory: tuple[str, str]
    # Seconds between SIGTERM and SIGKILL. The workers' consumers give in-flight handlers 10 s
    # (orderflow.messaging: shutdown_timeout=10.0), cancel the rest (their messages go back to
    # the queue) and wait 5 s more, then flush the batch writers and close pools: 30 s covers
    # it with room. The ingress: preStop 5 s, then uvicorn's 10 s graceful shutdown.
    grace_seconds: int
    serves_http: bool = False
    pdb_max_unavailable: int | str = 1
    # None: an autoscaler owns the count, and an apply must not reset it.
    replicas: int | None = None

    @property
    def name(self) -> str:
        return f"orderflow-{self.service}"


def _processes(p: Params) -> tuple[Process, ...]:
    return (
        Process("ingress", ("api", "--host", "0.0.0.0", "--port", str(HTTP_PORT)),
                ("500m", "1"), ("256Mi", "512Mi"), 25, serves_http=True),
        # Several relays are safe: each claims outbox rows FOR UPDATE SKIP LOCKED.
        Process("crm-relay", ("relay",), ("100m", "500m"), ("192Mi", "384Mi"), 30, replicas=2),
        # Two for availability: one carries ~1,500 orders/s (capacity-model.md).
        Process("crm-status", ("status",), ("200m", "1"), ("192Mi", "384Mi"), 30, replicas=2),
        Process("mes", ("mes", "--concurrency", str(p.mes_concurrency)), ("250m", "1"),
                ("192Mi", "384Mi"), 30, pdb_max_unavailable="20%"),
    )


# --- YAML ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors: every manifest reads on its own


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # Multi-line text (dashboards, configs) as literal blocks: readable in review and diffs.
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _dump(docs: Iterable[Doc], header: str) -> str:
    body = "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=100,
                                  allow_unicode=True) for d in docs)
    return header + body


def _header(what: str) -> str:
    return (f"# Rendered by `obskit bundle render --target kubernetes` ({what}).\n"
            "# Change a parameter (`obskit bundle params`) or obskit/bundle/_kubernetes.py, "
            "not this file.\n")


# --- shared pieces -------------------------------------------------------------------------


def _version(image: str) -> str:
    return image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else "unknown"


def _labels(p: Params, component: str) -> dict[str, str]:
    return {**_selector(component), "app.kubernetes.io/part-of": "orderflow",
            "app.kubernetes.io/version": _version(p.orderflow_image),
            "app.kubernetes.io/managed-by": "obskit-bundle"}


def _obskit_labels(component: str) -> dict[str, str]:
    """Labels of what the bundle adds for the platform (alerts, dashboards, monitors)."""
    return {"app.kubernetes.io/name": "obskit", "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "obskit-bundle"}


def _selector(component: str) -> dict[str, str]:
    # Stable across releases: a Deployment's selector cannot change.
    return {"app.kubernetes.io/name": "orderflow", "app.kubernetes.io/instance": "orderflow",
            "app.kubernetes.io/component": component}


def _meta(name: str, labels: dict[str, str], **extra: Any) -> Doc:
    return {"name": name, "labels": labels, **extra}


def _matchers(selector: str, param: str) -> dict[str, str]:
    """``job="obskit", cluster="eu1"`` as labels; the relabelling sets them on every target."""
    pairs = re.findall(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)',
                       selector)
    rebuilt = ", ".join(f'{k}="{v}"' for k, v in pairs)
    if not pairs or rebuilt.replace(" ", "") != selector.replace(" ", ""):
        raise ParamError(f"{param}={selector!r}: the Kubernetes target sets these labels on the "
                         'scraped targets, so it needs equality matchers only (name="value", '
                         "comma-separated)")
    return dict(pairs)


def _set_labels(labels: dict[str, str]) -> list[Doc]:
    return [{"action": "replace", "targetLabel": k, "replacement": v}
            for k, v in labels.items()]


def _spread(component: str) -> list[Doc]:
    # Replicas across zones and nodes; ScheduleAnyway so a small cluster still schedules them.
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": _selector(component)}}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> Doc:
    ref: Doc = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> Doc:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _env(p: Params, proc: Process) -> list[Doc]:
    """Connection settings, composed from the operators' Secrets with ``$(VAR)``: the
    credentials never sit in a ConfigMap. Upper-case names other than ORDERFLOW_*, OBSKIT_* and
    OTEL_* are only parts of these URLs (``PG_USER``, ...)."""
    ns = p.k8s_namespace
    env = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("NODE_IP", "status.hostIP"),
        # The node's collector agent (a DaemonSet with a hostPort): spans and logs leave the
        # pod for the same node, and the agent adds the Kubernetes attributes.
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://$(NODE_IP):4317"},
        {"name": "OTEL_RESOURCE_ATTRIBUTES",
         "value": f"k8s.pod.name=$(POD_NAME),k8s.namespace.name={ns}"},
        _secret_env("PG_USER", f"{POSTGRES}-app", "username"),
        _secret_env("PG_PASSWORD", f"{POSTGRES}-app", "password"),
        {"name": "ORDERFLOW_DATABASE_URL", "value": "postgresql://$(PG_USER):$(PG_PASSWORD)@"
         f"{POSTGRES}-rw.{ns}.svc:5432/{POSTGRES_DB}"},
        # Status reads and the dashboard go to the replica (orderflow.db.open_pools).
        {"name": "ORDERFLOW_READ_DATABASE_URL", "value": "postgresql://$(PG_USER):"
         f"$(PG_PASSWORD)@{POSTGRES}-ro.{ns}.svc:5432/{POSTGRES_DB}"},
        _secret_env("RABBITMQ_USER", f"{RABBITMQ}-default-user", "username"),
        _secret_env("RABBITMQ_PASSWORD", f"{RABBITMQ}-default-user", "password"),
        {"name": "ORDERFLOW_RABBITMQ_URL",
         "value": f"amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@{RABBITMQ}.{ns}.svc:5672/"},
        # The relay's queue-depth poller and `obskit dlq` read the management API.
        {"name": "OBSKIT_RABBITMQ_MANAGEMENT_URL",
         "value": f"http://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@{RABBITMQ}.{ns}.svc:15672"},
        _secret_env("REDIS_PASSWORD", REDIS_SECRET, "auth"),
        # HAProxy in front of the Sentinel-managed Redis always routes to the current master:
        # orderflow's plain redis:// client needs no Sentinel support.
        {"name": "ORDERFLOW_REDIS_URL",
         "value": f"redis://:$(REDIS_PASSWORD)@{REDIS_RELEASE}-haproxy.{ns}.svc:6379/0"},
    ]
    if proc.serves_http:
        env.append(_secret_env("ORDERFLOW_DASHBOARD_TOKEN", APP_SECRET,
                               "ORDERFLOW_DASHBOARD_TOKEN", optional=True))
    return env


def _security() -> tuple[Doc, Doc]:
    pod = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
           "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                 "capabilities": {"drop": ["ALL"]}}
    return pod, container


# --- orderflow -----------------------------------------------------------------------------


def _config_map(p: Params) -> Doc:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(CONFIG, _labels(p, "config")),
        "data": {
            # One process per pod, each serving its own /metrics (exemplars included).
            "OBSKIT_METRICS_PORT": str(METRICS_PORT),
            "OBSKIT_ENVIRONMENT": "production",
            "OBSKIT_LOG_FORMAT": "json",
            # Behind an Ingress controller the socket peer is the controller: the client IP
            # (rate limits, logs) comes from X-Forwarded-For written by these proxies. Set it
            # to your cluster's pod network.
            "ORDERFLOW_TRUSTED_PROXIES": "10.0.0.0/8",
            "ORDERFLOW_QUEUE_POLL_INTERVAL": "15",
        },
    }


def _deployment(p: Params, proc: Process) -> Doc:
    pod_security, security = _security()
    ports = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    container: Doc = {
        "name": proc.service,
        "image": p.orderflow_image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(proc.args),
        "envFrom": [{"configMapRef": {"name": CONFIG}}],
        "env": _env(p, proc),
        "ports": ports,
        "resources": {"requests": {"cpu": proc.cpu[0], "memory": proc.memory[0]},
                      "limits": {"cpu": proc.cpu[1], "memory": proc.memory[1]}},
        "securityContext": security,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if proc.serves_http:
        ports.insert(0, {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
        container["readinessProbe"] = {  # PostgreSQL reachable: orders can be stored
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
        container["startupProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2, "failureThreshold": 30}
        # Endpoints are removed asynchronously: keep serving while Services and the Ingress
        # controller stop sending, then uvicorn drains for up to 10 s.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    else:
        # The workers serve no HTTP but /metrics (obskit's server thread): it proves the
        # process is alive, not that its event loop turns. A worker that cannot reach its
        # broker or database exits and is restarted; see the how-to for what is missing.
        container["livenessProbe"] = {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3}
    migrate: Doc = {
        # Every pod starts on an up-to-date schema; migrations hold an advisory lock, so
        # pods starting together apply them once.
        "name": "db-upgrade", "image": p.orderflow_image, "imagePullPolicy": "IfNotPresent",
        "args": ["db", "upgrade"], "envFrom": [{"configMapRef": {"name": CONFIG}}],
        "env": [e for e in _env(p, proc) if e["name"].startswith(("PG_", "ORDERFLOW_DATABASE"))],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": security,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: Doc = {
        "selector": {"matchLabels": _selector(proc.service)},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": _labels(p, proc.service)},
            "spec": {
                "serviceAccountName": "orderflow",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": proc.grace_seconds,
                "securityContext": pod_security,
                "topologySpreadConstraints": _spread(proc.service),
                "initContainers": [migrate],
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if proc.replicas is not None:
        spec = {"replicas": proc.replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(proc.name, _labels(p, proc.service)), "spec": spec}


def _pdb(p: Params, proc: Process) -> Doc:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(proc.name, _labels(p, proc.service)),
            "spec": {"maxUnavailable": proc.pdb_max_unavailable,
                     "selector": {"matchLabels": _selector(proc.service)}}}


def _ingress_extras(p: Params, proc: Process) -> list[Doc]:
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(proc.name, _labels(p, proc.service)),
        "spec": {"selector": _selector(proc.service),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http",
                            "protocol": "TCP"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(proc.name, _labels(p, proc.service)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": proc.name},
            "minReplicas": p.ingress_min_replicas, "maxReplicas": p.ingress_max_replicas,
            # CPU: the ingress is CPU-bound per request (docs/explanation/performance.md).
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
    return [service, hpa]


#: The MES ScaledObject's HPA behaviour; deploy/capacity.py replays the same rules.
MES_HPA_BEHAVIOR: Doc = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                             {"type": "Pods", "value": 4, "periodSeconds": 15}]},
    # Slow down: a pod stopped hands its in-flight orders back (redelivered), which costs a
    # restart of their stages.
    "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                  "policies": [{"type": "Percent", "value": 20, "periodSeconds": 60}]},
}


def _mes_scaling(p: Params, proc: Process) -> list[Doc]:
    ns = p.k8s_namespace
    auth = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": _meta(RABBITMQ, _labels(p, "mes")),
        "spec": {"secretTargetRef": [
            {"parameter": "username", "name": f"{RABBITMQ}-default-user", "key": "username"},
            {"parameter": "password", "name": f"{RABBITMQ}-default-user", "key": "password"}]},
    }
    targets = p.queue_targets()
    triggers = [{
        "type": "rabbitmq",
        "name": queue.replace(".", "-"),
        "metadata": {
            # The management API counts ready + unacknowledged messages: the orders a pod
            # holds (prefetch) count, so a busy pool is not mistaken for an idle one.
            "protocol": "http",
            "host": f"http://{RABBITMQ}.{ns}.svc:15672",
            "vhostName": "/",
            "queueName": queue,
            "mode": "QueueLength",
            "value": str(targets[queue]),
        },
        "authenticationRef": {"name": RABBITMQ},
    } for queue in p.order_queues]
    scaled = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": _meta(proc.name, _labels(p, "mes")),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": proc.name},
            "pollingInterval": p.keda_polling_interval,
            "minReplicaCount": p.mes_min_replicas,
            "maxReplicaCount": p.mes_max_replicas,
            # One trigger per queue; the HPA takes the largest replica count any of them
            # asks for, so a B2B backlog scales the MES even while B2C is quiet, and a B2C
            # flood never lowers what B2B needs.
            "triggers": triggers,
            # The broker unreachable for 3 polls: hold a safe size instead of shrinking.
            "fallback": {"failureThreshold": 3,
                         "replicas": max(p.mes_min_replicas, min(6, p.mes_max_replicas))},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": MES_HPA_BEHAVIOR}},
        },
    }
    return [auth, scaled]


def _pod_monitor(p: Params) -> Doc:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": _meta("orderflow", _labels(p, "monitoring")),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "orderflow",
                                         "app.kubernetes.io/instance": "orderflow"}},
            "podMetricsEndpoints": [{
                "port": "metrics", "path": "/metrics", "interval": p.scrape_interval,
                # The labels the dashboards and rules select on, as the compose bundle's
                # file_sd targets carry them: service (obskit.init's name), instance (one
                # process), and the obskit selector's labels.
                "relabelings": [
                    {"action": "replace", "targetLabel": p.service_label,
                     "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]},
                    {"action": "replace", "targetLabel": p.instance_label,
                     "sourceLabels": ["__meta_kubernetes_pod_name"]},
                    *_set_labels(_matchers(p.obskit_selector, "obskit_selector")),
                ],
            }],
        },
    }


def _rabbitmq_monitor(p: Params) -> Doc:
    labels = _matchers(p.rabbitmq_selector, "rabbitmq_selector")
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": _meta(RABBITMQ, _labels(p, "monitoring")),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ,
                                         "app.kubernetes.io/component": "rabbitmq"}},
            "endpoints": [
                {"port": "prometheus", "path": "/metrics", "interval": p.scrape_interval,
                 "relabelings": _set_labels(labels)},
                # Per-queue depth and consumers, as the compose bundle scrapes them.
                {"port": "prometheus", "path": "/metrics/detailed",
                 "interval": p.scrape_interval,
                 "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                 "relabelings": [*_set_labels(labels),
                                 {"action": "replace", "targetLabel": "endpoint",
                                  "replacement": "detailed"}]},
            ],
        },
    }


def _rabbitmq_cluster(p: Params) -> Doc:
    return {
        "apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster",
        "metadata": _meta(RABBITMQ, _labels(p, "rabbitmq")),
        "spec": {
            # Quorum queues (obskit.rabbitmq declares every queue with x-queue-type=quorum)
            # replicate to 3 nodes and survive the loss of one.
            "replicas": 3,
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                          "limits": {"cpu": "2", "memory": "2Gi"}},
            "persistence": {"storage": "20Gi"},
            "rabbitmq": {
                "additionalConfig": "\n".join([
                    "cluster_partition_handling = pause_minority",
                    # Queues declared without a type (none of obskit's) are quorum too.
                    "default_queue_type = quorum",
                    "vm_memory_high_watermark.relative = 0.6",
                ]) + "\n",
            },
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname",
                 "labelSelector": {"matchLabels": {"app.kubernetes.io/name": RABBITMQ}}}]}},
            # The topology (exchanges, quorum queues, DLQs, retry tiers) is declared by every
            # orderflow process on start through obskit.rabbitmq: nothing to declare here.
        },
    }


def _postgres_cluster(p: Params) -> Doc:
    return {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": _meta(POSTGRES, _labels(p, "postgresql")),
        "spec": {
            "instances": 2,  # a primary (-rw) and a replica (-ro)
            "bootstrap": {"initdb": {"database": POSTGRES_DB, "owner": POSTGRES_DB}},
            "storage": {"size": "50Gi"},
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                          "limits": {"cpu": "4", "memory": "4Gi"}},
            "postgresql": {
                # Pools: ingress 20 + 20 (replica), MES 4 + 4, relay 4, status 4 per pod
                # (docs/explanation/capacity-model.md: at mes_max_replicas add a Pooler).
                "parameters": {"max_connections": "400", "shared_buffers": "1GB"},
                # An accepted order survives a failover: the replica confirms each commit;
                # with the replica gone, the primary goes on alone rather than stop.
                "synchronous": {"method": "any", "number": 1, "dataDurability": "preferred"},
            },
            "affinity": {"enablePodAntiAffinity": True, "podAntiAffinityType": "required",
                         "topologyKey": "kubernetes.io/hostname"},
        },
    }


def _redis_values(p: Params) -> Doc:
    return {
        # 3 Redis pods with Sentinel; HAProxy routes to whichever is master, so clients
        # without Sentinel support (orderflow's) follow a failover.
        "replicas": 3,
        "auth": True,
        "existingSecret": REDIS_SECRET,
        "authKey": "auth",
        "hardAntiAffinity": True,
        "haproxy": {"enabled": True, "replicas": 2, "hardAntiAffinity": True,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "500m", "memory": "128Mi"}}},
        "redis": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"}}},
        "persistentVolume": {"enabled": True, "size": "8Gi"},
        "podDisruptionBudget": {"maxUnavailable": 1},
        "exporter": {"enabled": True, "serviceMonitor": {"enabled": True}},
    }


def _orderflow_files(p: Params) -> dict[str, str]:
    files: dict[str, str] = {}
    procs = _processes(p)
    files["orderflow/namespace.yaml"] = _dump([{
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": _meta(p.k8s_namespace, {"app.kubernetes.io/part-of": "orderflow"})}],
        _header("orderflow's namespace"))
    files["orderflow/config.yaml"] = _dump([
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": _meta("orderflow", _labels(p, "config")),
         "automountServiceAccountToken": False},
        _config_map(p)], _header("configuration; credentials come from the operators' Secrets"))
    for proc in procs:
        docs = [_deployment(p, proc), _pdb(p, proc)]
        if proc.serves_http:
            docs += _ingress_extras(p, proc)
        if proc.service == "mes":
            docs += _mes_scaling(p, proc)
        files[f"orderflow/{proc.service}.yaml"] = _dump(docs, _header(f"`orderflow "
                                                                      f"{proc.args[0]}`"))
    files["orderflow/monitoring.yaml"] = _dump(
        [_pod_monitor(p), _rabbitmq_monitor(p)], _header("scrape targets"))
    files["orderflow/rabbitmq.yaml"] = _dump([_rabbitmq_cluster(p)],
                                             _header("RabbitMQ Cluster Operator"))
    files["orderflow/postgresql.yaml"] = _dump([_postgres_cluster(p)], _header("CloudNativePG"))
    files["orderflow/values/redis-ha.yaml"] = _dump([_redis_values(p)], _header(
        "values of the redis-ha chart {2} ({0})".format(*CHARTS["redis-ha"])))
    files["orderflow/kustomization.yaml"] = _kustomization(
        files, "orderflow", p.k8s_namespace,
        "kustomize base of orderflow; the Helm values under values/ are installed with helm")
    return files


# --- observability -------------------------------------------------------------------------


def _addresses(p: Params) -> Params:
    """``p`` with the in-cluster addresses of the charts' Services, for the templates."""
    ns = p.k8s_observability_namespace
    return dataclasses.replace(
        p,
        tempo_address=f"{TEMPO}-query-frontend.{ns}.svc:3200",
        loki_address=f"{LOKI}-gateway.{ns}.svc:80",
        prometheus_address=f"{KPS}-prometheus.{ns}.svc:9090",
        alertmanager_address=f"{KPS}-alertmanager.{ns}.svc:9093",
    )


def _rule_files(p: Params) -> dict[str, Doc]:
    from obskit.bundle import alerts

    return {name: yaml.safe_load(text) for name, text in alerts.build_all(p, lambda _: "").items()}


def _prometheus_rules(p: Params) -> list[Doc]:
    return [{
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": _meta(f"obskit-{name.removesuffix('.rules.yml')}",
                          _obskit_labels("alerts"),
                          annotations={"obskit.dev/source": f"alerts/{name}"}),
        "spec": {"groups": doc["groups"]},
    } for name, doc in _rule_files(p).items()]


def _dashboards(p: Params) -> list[Doc]:
    from obskit.bundle import dashboards

    return [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(f"obskit-dashboard-{name.removesuffix('.json')}",
                          # The Grafana sidecar loads ConfigMaps with this label, into the
                          # folder the annotation names.
                          {"grafana_dashboard": "1", **_obskit_labels("dashboards")},
                          annotations={"grafana_folder": p.grafana_folder}),
        "data": {name: text},
    } for name, text in dashboards.build_all_json(p).items()]


def _collector_monitor(p: Params) -> Doc:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": _meta("otel-collector", _obskit_labels("monitoring")),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}},
            "podMetricsEndpoints": [{
                "port": "metrics", "interval": p.scrape_interval,
                "relabelings": _set_labels(_matchers(p.collector_selector,
                                                     "collector_selector"))}],
        },
    }


def _gateway_values(p: Params) -> Doc:
    k = _addresses(p)
    ns = p.k8s_observability_namespace
    config = yaml.safe_load(render_template(
        "collector/otelcol-config.yaml", k,
        tempo_otlp=f"{TEMPO}-distributor.{ns}.svc:4317",
        loki_otlp=f"http://{LOKI}-gateway.{ns}.svc/otlp"))
    # The chart's defaults add receivers and a metrics pipeline we do not use: null removes
    # them from the merged configuration.
    for receiver in ("jaeger", "zipkin", "prometheus"):
        config["receivers"][receiver] = None
    config["service"]["pipelines"]["metrics"] = None
    repo, _, tag = p.collector_image.rpartition(":")
    return {
        "fullnameOverride": GATEWAY,
        "mode": "deployment",
        "image": {"repository": repo, "tag": tag},
        "replicaCount": 2,
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6,
                        "targetCPUUtilizationPercentage": 70},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "resources": {"requests": {"cpu": "250m", "memory": f"{p.collector_memory_limit_mib}Mi"},
                      "limits": {"cpu": "1",
                                 "memory": f"{p.collector_memory_limit_mib * 5 // 4}Mi"}},
        "ports": {"metrics": {"enabled": True},
                  **{name: {"enabled": False} for name in
                     ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")}},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": GATEWAY}}}],
        "config": config,
    }


def _agent_values(p: Params) -> Doc:
    repo, _, tag = p.collector_image.rpartition(":")
    ns = p.k8s_observability_namespace
    return {
        "fullnameOverride": AGENT,
        "mode": "daemonset",
        "image": {"repository": repo, "tag": tag},
        # k8s_attributes (the processor's name since the collector renamed k8sattributes; the
        # chart's preset defines it): pod, deployment and node names on every span and log
        # record, looked up for this node's pods only.
        "presets": {"kubernetesAttributes": {"enabled": True}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "ports": {"otlp": {"enabled": True, "hostPort": 4317},
                  "otlp-http": {"enabled": True, "hostPort": 4318},
                  "metrics": {"enabled": True},
                  **{name: {"enabled": False} for name in
                     ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")}},
        "config": {
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"},
                                       "http": {"endpoint": "0.0.0.0:4318"}}},
                "jaeger": None, "zipkin": None, "prometheus": None},
            "processors": {
                "memory_limiter": {"check_interval": "1s", "limit_mib": 200,
                                   "spike_limit_mib": 50},
                "batch": {"send_batch_size": 2048, "timeout": "1s"}},
            "exporters": {"otlp_grpc/gateway": {"endpoint": f"{GATEWAY}.{ns}.svc:4317",
                                   "tls": {"insecure": True},
                                   "sending_queue": {"queue_size": 5000}}},
            "service": {"pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc/gateway"],
                           "processors": ["memory_limiter", "k8s_attributes", "batch"]},
                "logs": {"receivers": ["otlp"], "exporters": ["otlp_grpc/gateway"],
                         "processors": ["memory_limiter", "k8s_attributes", "batch"]},
                "metrics": None}},
        },
    }


def _tempo_values(p: Params) -> Doc:
    ns = p.k8s_observability_namespace
    three = {"replicas": 3}
    return {
        "fullnameOverride": TEMPO,
        "reportingEnabled": False,
        "traces": {"otlp": {"grpc": {"enabled": True}, "http": {"enabled": True}}},
        # Tempo 3 ingests through Kafka: the distributors write to it, the block-builders
        # and live-stores read it (one each per partition). Bring a Kafka (e.g. Strimzi).
        "ingest": {"kafka": {"address": f"tempo-kafka-kafka-bootstrap.{ns}.svc:9092",
                             "topic": "tempo-traces",
                             "auto_create_topic_default_partitions": 3}},
        "distributor": three,
        "blockBuilder": three,
        "liveStore": three,
        "querier": {"replicas": 2},
        "queryFrontend": {"replicas": 2},
        "metricsGenerator": {
            "enabled": True, "replicas": 2,
            # Span metrics for every traced service (the MES serves no HTTP), written to
            # Prometheus: the datasource links from a span to its service's rates use them.
            "config": {"storage": {"remote_write": [{
                "url": f"http://{KPS}-prometheus.{ns}.svc:9090/api/v1/write",
                "send_exemplars": True}]},
                "registry": {"external_labels": {"source": "tempo"}}},
        },
        "overrides": {"defaults": {"metrics_generator": {
            "processors": ["service-graphs", "span-metrics"],
            "trace_id_label_name": "trace_id"}}},
        "backendWorker": {"replicas": 2},
        "backendScheduler": {"config": {"provider": {"compaction": {"compaction": {
            "block_retention": f"{hours(p.retention)}h"}}}}},
        "storage": {"trace": {
            "backend": "s3",
            # Your object store; credentials through the chart's extraEnv / IRSA.
            "s3": {"bucket": "tempo-traces", "endpoint": "s3.amazonaws.com"}}},
    }


def _loki_values(p: Params) -> Doc:
    return {
        "fullnameOverride": LOKI,
        "deploymentMode": "SimpleScalable",
        "loki": {
            "auth_enabled": False,
            "schemaConfig": {"configs": [{
                "from": "2024-01-01", "store": "tsdb", "object_store": "s3", "schema": "v13",
                "index": {"prefix": "index_", "period": "24h"}}]},
            "storage": {"type": "s3",
                        "bucketNames": {"chunks": "loki-chunks", "ruler": "loki-ruler",
                                        "admin": "loki-admin"}},
            # OTLP logs keep order_id, trace_id and span_id as structured metadata.
            "limits_config": {"allow_structured_metadata": True, "volume_enabled": True,
                              "retention_period": f"{hours(p.retention)}h"},
            "compactor": {"retention_enabled": True, "delete_request_store": "s3"},
            "analytics": {"reporting_enabled": False},
        },
        "write": {"replicas": 3},
        "read": {"replicas": 3},
        "backend": {"replicas": 3},
        "gateway": {"enabled": True, "replicas": 2},
        "singleBinary": {"replicas": 0},
        "minio": {"enabled": False},
        "lokiCanary": {"enabled": False},
        "test": {"enabled": False},
    }


def _kps_values(p: Params) -> Doc:
    k = _addresses(p)
    datasources = yaml.safe_load(render_template(
        "platform/grafana/provisioning/datasources/obskit.yaml", k))["datasources"]
    alertmanager = yaml.safe_load(render_template("alerts/alertmanager.yml", k))
    prom_repo, _, prom_tag = p.prometheus_image.rpartition(":")
    am_repo, _, am_tag = p.alertmanager_image.rpartition(":")
    graf_repo, _, graf_tag = p.grafana_image.rpartition(":")
    return {
        "fullnameOverride": KPS,
        "prometheus": {"prometheusSpec": {
            "replicas": 2,  # an HA pair; both scrape everything, Grafana reads either
            "image": {"registry": "docker.io", "repository": prom_repo, "tag": prom_tag},
            "scrapeInterval": p.scrape_interval,
            "evaluationInterval": p.scrape_interval,
            "retention": p.retention,
            # Tempo's metrics generator writes span metrics here.
            "enableRemoteWriteReceiver": True,
            "enableFeatures": ["exemplar-storage"],
            # Select every PrometheusRule, ServiceMonitor and PodMonitor, not only the
            # chart's release-labelled ones: obskit's carry no release label.
            "ruleSelectorNilUsesHelmValues": False,
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"},
                          "limits": {"memory": "8Gi"}},
            "storageSpec": {"volumeClaimTemplate": {"spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "100Gi"}}}}},
        }},
        "alertmanager": {
            "alertmanagerSpec": {
                "replicas": 3,  # a gossip cluster: one notification per alert
                "image": {"registry": "docker.io", "repository": am_repo, "tag": am_tag}},
            # The bundle's routing and receivers (alerts/alertmanager.yml), unchanged.
            "config": alertmanager,
        },
        "grafana": {
            "fullnameOverride": "grafana",
            "image": {"registry": "docker.io", "repository": graf_repo, "tag": graf_tag},
            "admin": {"existingSecret": "grafana-admin", "userKey": "admin-user",
                      "passwordKey": "admin-password"},
            "sidecar": {
                "dashboards": {"enabled": True, "label": "grafana_dashboard",
                               "labelValue": "1", "searchNamespace": "ALL",
                               "folderAnnotation": "grafana_folder",
                               "provider": {"foldersFromFilesStructure": True}},
                # The bundle's datasources replace the chart's default Prometheus one: the
                # dashboards and links use their uids.
                "datasources": {"defaultDatasourceEnabled": False},
            },
            "additionalDataSources": datasources,
        },
    }


def _observability_files(p: Params) -> dict[str, str]:
    ns = p.k8s_observability_namespace
    files: dict[str, str] = {}
    files["observability/namespace.yaml"] = _dump([{
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": _meta(ns, {"app.kubernetes.io/part-of": "obskit"})}],
        _header("the platform's namespace"))
    files["observability/prometheusrules.yaml"] = _dump(
        _prometheus_rules(p), _header("the alerting rules of alerts/*.rules.yml"))
    files["observability/dashboards.yaml"] = _dump(
        _dashboards(p), _header("the dashboards of dashboards/*.json, for Grafana's sidecar"))
    files["observability/monitoring.yaml"] = _dump(
        [_collector_monitor(p)], _header("the collectors' own metrics"))
    for name, values in (("kube-prometheus-stack", _kps_values(p)),
                         ("tempo-distributed", _tempo_values(p)),
                         ("loki", _loki_values(p)),
                         ("otel-gateway", _gateway_values(p)),
                         ("otel-agent", _agent_values(p))):
        chart = CHARTS["opentelemetry-collector" if name.startswith("otel-") else name]
        files[f"observability/values/{name}.yaml"] = _dump(
            [values], _header(f"values of the {chart[1]} chart {chart[2]} ({chart[0]})"))
    files["observability/kustomization.yaml"] = _kustomization(
        files, "observability", ns, "kustomize base of the platform's resources; the charts' "
        "values under values/ are installed with helm")
    return files


def _kustomization(files: dict[str, str], folder: str, namespace: str, what: str) -> str:
    """``folder``/kustomization.yaml: every resource of ``files`` in it, not the Helm values."""
    return _dump([{
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        "resources": sorted(r.removeprefix(f"{folder}/") for r in files if "/values/" not in r),
    }], _header(what))


def render_kubernetes(p: Params) -> dict[str, str]:
    """deploy/kubernetes/ for ``p``: relative path -> text."""
    files = {**_orderflow_files(p), **_observability_files(p)}
    files["kustomization.yaml"] = _dump([{
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["orderflow", "observability"],
    }], _header("everything but the operators and the charts: "
                "docs/how-to/deploy-on-kubernetes.md"))
    return dict(sorted(files.items()))
