"""deploy/kubernetes/: the render of the defaults, valid against the Kubernetes schema and the
pinned operators' CRDs, and consistent with what orderflow and obskit really serve and read.

Kubernetes schema: ``kubernetes-validate`` in strict mode (unknown fields fail) for the versions
in ``K8S_VERSIONS``. Custom resources: the ``openAPIV3Schema`` of the CRDs in fixtures/crds/
(their operators, tags and commits in fixtures/crds/README.md), made strict the same way.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from obskit.bundle import ParamError, Params, parse_overrides, render_files
from obskit.bundle._kubernetes import OPERATORS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRDS = Path(__file__).resolve().parent / "fixtures" / "crds"
#: The oldest Kubernetes the manifests target (preStop `sleep` is on by default from 1.30) and
#: the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
#: Custom resource kinds -> CRD fixture file.
CRD_FILES = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("rabbitmq.com", "RabbitmqCluster"): "rabbitmq.com_rabbitmqclusters.yaml",
    ("postgresql.cnpg.io", "Cluster"): "postgresql.cnpg.io_clusters.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
}
ORDERFLOW = ROOT / "examples" / "orderflow"


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_files(target="kubernetes")


def _docs(files: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for rel, text in files.items():
        if "/values/" in rel or rel.endswith("kustomization.yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            yield rel, doc


@pytest.fixture(scope="module")
def resources(files: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    return list(_docs(files))


def _kind(resources: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for _, d in resources if d["kind"] == kind]


def _is_custom(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"].split("/")[0], doc["kind"]) in CRD_FILES


# --- drift ---------------------------------------------------------------------------------


def test_checked_in_manifests_are_the_render_of_the_defaults(files: dict[str, str]) -> None:
    stale = [rel for rel, text in files.items()
             if not (DEPLOY / rel).exists() or (DEPLOY / rel).read_text() != text]
    assert not stale, (f"{stale} differ from the render of the defaults: run `.venv/bin/obskit "
                       "bundle render --target kubernetes --out deploy/kubernetes`")
    on_disk = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert on_disk == set(files), "a file under deploy/kubernetes/ is not rendered: it would " \
        "not survive the next render"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obskit", "bundle", "render", "--target",
                           "kubernetes", *args], capture_output=True, text=True, timeout=120)


def test_cli_check_passes_on_the_checked_in_tree_and_fails_on_drift(tmp_path: Path) -> None:
    assert _cli("--out", str(DEPLOY), "--check").returncode == 0
    # The same parameter the compose bundle takes reaches the manifests.
    drift = _cli("--out", str(DEPLOY), "--check", "--set", "scrape_interval=30s")
    assert drift.returncode == 1
    assert "orderflow/monitoring.yaml" in drift.stdout
    assert "observability/values/kube-prometheus-stack.yaml" in drift.stdout
    out = tmp_path / "k"
    assert _cli("--out", str(out), "--set", "mes_max_replicas=12").returncode == 0
    scaled = next(d for d in yaml.safe_load_all((out / "orderflow/mes.yaml").read_text())
                  if d["kind"] == "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 12


def test_kustomize_builds_the_tree() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (for `kubectl kustomize`) must be on PATH"
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    namespaces = {d["metadata"].get("namespace") for d in built if d["kind"] != "Namespace"}
    assert namespaces == {Params().k8s_namespace, Params().k8s_observability_namespace}


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_validate_strictly(resources: list[tuple[str, dict[str, Any]]],
                                          version: str) -> None:
    core = [(rel, d) for rel, d in resources if not _is_custom(d)]
    assert {d["kind"] for _, d in core} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                              "PodDisruptionBudget", "ConfigMap", "Namespace",
                                              "ServiceAccount"}
    for rel, doc in core:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{rel}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at "
                        f"{'.'.join(map(str, exc.path))}")


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema: unknown fields fail (the API server would
    prune them silently), int-or-string and nullable as Kubernetes reads them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _crd_schema(file: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v.get("served", True), f"{file}: {version} is not served"
            schema = _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            schema["properties"]["metadata"] = {"type": "object"}
            return schema
    raise AssertionError(f"{file} has no version {version}")


def test_custom_resources_validate_against_the_pinned_crds(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    custom = [(rel, d) for rel, d in resources if _is_custom(d)]
    kinds = {(d["apiVersion"].split("/")[0], d["kind"]) for _, d in custom}
    assert kinds == set(CRD_FILES), "every CRD fixture is used and every custom kind has one"
    for rel, doc in custom:
        group, version = doc["apiVersion"].split("/")
        schema = _crd_schema(CRD_FILES[group, doc["kind"]], version)
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{rel}: {doc['kind']} {doc['metadata']['name']}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_the_strict_crd_check_catches_a_misspelt_field(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    scaled = copy.deepcopy(_kind(resources, "ScaledObject")[0])
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    schema = _crd_schema(CRD_FILES["keda.sh", "ScaledObject"], "v1alpha1")
    assert not jsonschema.Draft7Validator(schema).is_valid(scaled)


def test_crd_fixtures_name_their_source_and_version() -> None:
    readme = (CRDS / "README.md").read_text()
    for file in CRD_FILES.values():
        assert f"`{file}`" in readme, f"fixtures/crds/README.md does not list {file}"
    for version in OPERATORS.values():
        assert f"v{version.split()[0]}" in readme
    assert len(re.findall(r"\b[0-9a-f]{40}\b", readme)) >= 4, "each operator's commit"


# --- consistency with orderflow and obskit -------------------------------------------------


def _deployments(resources: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _kind(resources, "Deployment")}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_the_pods(resources: list[tuple[str, dict[str, Any]]]) -> None:
    deployments = _deployments(resources)
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        assert _matches(d["spec"]["selector"]["matchLabels"], pods[name]), name
        for c in d["spec"]["template"]["spec"]["topologySpreadConstraints"]:
            assert _matches(c["labelSelector"]["matchLabels"], pods[name]), name
    for kind, path in (("Service", ("spec", "selector")),
                       ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
        for doc in _kind(resources, kind):
            sel = doc
            for key in path:
                sel = sel[key]
            hits = [n for n, labels in pods.items() if _matches(sel, labels)]
            assert hits == [doc["metadata"]["name"]], f"{kind} {doc['metadata']['name']}: {hits}"
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for doc in _kind(resources, kind):
            assert doc["spec"]["scaleTargetRef"]["name"] in deployments
    # The PodMonitor scrapes every orderflow pod.
    monitor = next(d for d in _kind(resources, "PodMonitor")
                   if d["metadata"]["name"] == "orderflow")
    assert all(_matches(monitor["spec"]["selector"]["matchLabels"], labels)
               for labels in pods.values())
    # Every autoscaled Deployment leaves `replicas` to its autoscaler.
    scaled = {d["spec"]["scaleTargetRef"]["name"] for kind in ("HorizontalPodAutoscaler",
                                                               "ScaledObject")
              for d in _kind(resources, kind)}
    for name in scaled:
        assert "replicas" not in deployments[name]["spec"], name


def test_processes_are_orderflow_commands_with_obskit_service_names(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    from orderflow import cli, supervisor

    deployments = _deployments(resources)
    services = {c.service: c.argv[c.argv.index("orderflow.cli") + 1]
                for c in supervisor.children(8000, "127.0.0.1", 1, 8)}
    by_component = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
                    for d in deployments.values()}
    # The component label is the name each process passes to obskit.init(): the `service`
    # label the dashboards select on.
    assert set(by_component) == set(services)
    parser = cli.parser()
    for service, subcommand in services.items():
        spec = by_component[service]["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        assert args[0] == subcommand, service
        parser.parse_args(args)  # exits (fails the test) on an option orderflow lacks
        for init in spec["initContainers"]:
            parser.parse_args(init["args"])


def _container(resources: list[tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    return dict(_deployments(resources)[name]["spec"]["template"]["spec"]["containers"][0])


def test_ports_match_what_the_processes_serve(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    from orderflow.api.app import create_app

    config = next(d for d in _kind(resources, "ConfigMap")
                  if d["metadata"]["name"] == "orderflow-config")["data"]
    metrics_port = int(config["OBSKIT_METRICS_PORT"])
    routes = {getattr(r, "path", None) for r in create_app().routes}
    for name, d in _deployments(resources).items():
        c = d["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == metrics_port, name
        if "api" in c["args"]:
            assert ports["http"] == int(c["args"][c["args"].index("--port") + 1])
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert {"/readyz", "/healthz"} <= routes
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ports, (name, probe)
    for svc in _kind(resources, "Service"):
        c = _container(resources, svc["metadata"]["name"])
        names = {p["name"] for p in c["ports"]}
        assert all(p["targetPort"] in names for p in svc["spec"]["ports"])
    monitor = next(d for d in _kind(resources, "PodMonitor")
                   if d["metadata"]["name"] == "orderflow")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def _names_the_code_reads() -> set[str]:
    from orderflow import config

    from obskit._config import OPTIONS
    from obskit.rabbitmq import _env as rabbitmq_env

    names = {o.env for o in OPTIONS} | {a for o in OPTIONS for a in o.env_aliases}
    names |= {getattr(rabbitmq_env, n) for n in dir(rabbitmq_env) if n.startswith("ENV_")}
    names |= {getattr(config, n) for n in dir(config) if n.startswith("ENV_")}
    return names


def test_env_names_are_ones_the_code_reads(resources: list[tuple[str, dict[str, Any]]]) -> None:
    read = _names_the_code_reads()
    assert "ORDERFLOW_READ_DATABASE_URL" in read  # orderflow.config reads it (the replica)
    config = next(d for d in _kind(resources, "ConfigMap")
                  if d["metadata"]["name"] == "orderflow-config")["data"]
    assert set(config) <= read, set(config) - read
    for name, d in _deployments(resources).items():
        spec = d["spec"]["template"]["spec"]
        for c in [*spec["initContainers"], *spec["containers"]]:
            env = c["env"]
            # The only other names are parts of URLs, spelled out with $(NAME) by a later
            # variable of the same container (Kubernetes expands only earlier ones).
            for i, e in enumerate(env):
                if e["name"] in read:
                    continue
                later = " ".join(x.get("value", "") for x in env[i + 1:])
                assert f"$({e['name']})" in later, f"{name}/{c['name']}: {e['name']} is " \
                    "neither read by orderflow/obskit nor used by a later variable"
            names = {e["name"] for e in env}
            assert {"ORDERFLOW_DATABASE_URL"} <= names
            if c["name"] != "db-upgrade":
                assert {"ORDERFLOW_READ_DATABASE_URL", "ORDERFLOW_RABBITMQ_URL",
                        "ORDERFLOW_REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= names
            # No credential in plain text: every secret part comes from a Secret.
            for e in env:
                if "PASSWORD" in e["name"] or "TOKEN" in e["name"]:
                    assert "secretKeyRef" in e["valueFrom"], e["name"]


def test_read_url_points_at_the_replica_service(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    cluster = _kind(resources, "Cluster")[0]
    env = {e["name"]: e.get("value") for e in _container(resources, "orderflow-mes")["env"]}
    assert f"@{cluster['metadata']['name']}-ro." in env["ORDERFLOW_READ_DATABASE_URL"]
    assert f"@{cluster['metadata']['name']}-rw." in env["ORDERFLOW_DATABASE_URL"]
    assert cluster["spec"]["instances"] >= 2


def test_grace_periods_cover_how_the_processes_stop(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    from orderflow import cli, messaging
    from orderflow.config import Settings

    settings = Settings()
    consumer = messaging.consumer(settings, messaging.order_queue(settings, "b2c"), None,
                                  prefetch=1, concurrency=1)
    # obskit's Consumer.stop: in-flight handlers get shutdown_timeout, the rest are
    # cancelled (their messages go back) and waited for 5 s more; then writers flush.
    workers_need = consumer.shutdown_timeout + 5
    uvicorn = re.search(r"timeout_graceful_shutdown=(\d+)", inspect.getsource(cli.cmd_api))
    assert uvicorn, "orderflow api no longer bounds its graceful shutdown"
    for name, d in _deployments(resources).items():
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if "api" in c["args"]:
            need = c["lifecycle"]["preStop"]["sleep"]["seconds"] + int(uvicorn.group(1))
        else:
            need = workers_need
        assert spec["terminationGracePeriodSeconds"] >= need + 5, name


def test_keda_scales_the_mes_on_every_order_queue(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    p = Params()
    scaled = _kind(resources, "ScaledObject")[0]
    triggers = {t["metadata"]["queueName"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == set(p.order_queues) == {"orders.b2c", "orders.b2b"}
    for queue, t in triggers.items():
        assert t["type"] == "rabbitmq"
        assert t["metadata"]["mode"] == "QueueLength"
        assert int(t["metadata"]["value"]) == p.queue_targets()[queue]
        # The HTTP API counts unacknowledged messages: a pod's prefetch is not "idle".
        assert t["metadata"]["protocol"] == "http"
        assert t["metadata"].get("excludeUnacknowledged") in (None, "false")
        # At most a pod's slots: KEDA's depth includes the orders in the pods' hands, so a
        # steady load keeps its pods (deploy/capacity.py: a larger target sees only backlogs).
        assert int(t["metadata"]["value"]) <= p.mes_concurrency
    mes = _container(resources, "orderflow-mes")
    assert mes["args"][mes["args"].index("--concurrency") + 1] == str(p.mes_concurrency)


def test_security_and_resources_on_every_container(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    for name, d in _deployments(resources).items():
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in [*spec["initContainers"], *spec["containers"]]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert set(c["resources"]) == {"requests", "limits"}, name
            assert c["image"] == Params().orderflow_image
            assert not c["image"].endswith(":latest")


# --- the platform: the same rules, dashboards and selectors as the compose bundle ----------


def test_prometheus_rules_are_the_bundle_rules(
        resources: list[tuple[str, dict[str, Any]]], tmp_path: Path) -> None:
    compose = render_files()
    rules = {d["metadata"]["annotations"]["obskit.dev/source"]: d
             for d in _kind(resources, "PrometheusRule")}
    expected = {rel for rel in compose if rel.endswith(".rules.yml")}
    assert set(rules) == expected
    promtool = shutil.which("promtool")
    assert promtool, "promtool must be on PATH (Debian package prometheus)"
    for rel, doc in rules.items():
        assert doc["spec"]["groups"] == yaml.safe_load(compose[rel])["groups"], rel
        out = tmp_path / Path(rel).name
        out.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
        done = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_config_maps_are_the_bundle_dashboards(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    compose = render_files()
    maps = [d for d in _kind(resources, "ConfigMap")
            if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {f"dashboards/{k}": v for d in maps for k, v in d["data"].items()}
    assert shipped == {rel: text for rel, text in compose.items()
                       if rel.startswith("dashboards/")}
    for d in maps:
        assert d["metadata"]["annotations"]["grafana_folder"] == Params().grafana_folder
        # Client-side apply keeps a copy in an annotation limited to 256 KiB.
        assert len(json.dumps(d)) < 250_000


def test_selector_parameters_reach_the_scrape_relabelling() -> None:
    files = render_files(parse_overrides(['obskit_selector=job="shop", team="mes"',
                                          'rabbitmq_selector=job="mq"']), "kubernetes")
    text = files["orderflow/monitoring.yaml"]
    pod_monitor, service_monitor = yaml.safe_load_all(text)
    relabel = pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "shop"} in relabel
    assert {"action": "replace", "targetLabel": "team", "replacement": "mes"} in relabel
    assert all({"action": "replace", "targetLabel": "job", "replacement": "mq"}
               in e["relabelings"] for e in service_monitor["spec"]["endpoints"])
    with pytest.raises(ParamError, match="equality matchers"):
        render_files(parse_overrides(['obskit_selector=job=~"obskit|shop"']), "kubernetes")


def test_chart_values_connect_the_platform(files: dict[str, str]) -> None:
    gateway = yaml.safe_load(files["observability/values/otel-gateway.yaml"])
    agent = yaml.safe_load(files["observability/values/otel-agent.yaml"])
    tempo = yaml.safe_load(files["observability/values/tempo-distributed.yaml"])
    loki = yaml.safe_load(files["observability/values/loki.yaml"])
    kps = yaml.safe_load(files["observability/values/kube-prometheus-stack.yaml"])
    ns = Params().k8s_observability_namespace
    exporters = gateway["config"]["exporters"]
    assert exporters["otlp_grpc/tempo"]["endpoint"] == \
        f"{tempo['fullnameOverride']}-distributor.{ns}.svc:4317"
    assert exporters["otlp_http/loki"]["endpoint"] == \
        f"http://{loki['fullnameOverride']}-gateway.{ns}.svc/otlp"
    assert agent["config"]["exporters"]["otlp_grpc/gateway"]["endpoint"] == \
        f"{gateway['fullnameOverride']}.{ns}.svc:4317"
    # The pods send to the agent's hostPort on their node.
    mes = next(yaml.safe_load_all(files["orderflow/mes.yaml"]))
    env = {e["name"]: e.get("value") for e in
           mes["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == \
        f"http://$(NODE_IP):{agent['ports']['otlp']['hostPort']}"
    # Grafana gets the bundle's datasources (their uids are what the dashboards use).
    uids = {d["uid"] for d in kps["grafana"]["additionalDataSources"]}
    p = Params()
    assert uids == {p.prometheus_uid, p.tempo_uid, p.loki_uid, p.alertmanager_uid}
    alertmanager = yaml.safe_load(render_files()["alerts/alertmanager.yml"])
    assert kps["alertmanager"]["config"] == alertmanager
    assert kps["prometheus"]["prometheusSpec"]["enableRemoteWriteReceiver"] is True


def test_the_crd_cel_rules_on_fields_we_set_hold(
        resources: list[tuple[str, dict[str, Any]]]) -> None:
    # jsonschema does not evaluate x-kubernetes-validations (CEL): the rules that touch the
    # fields these manifests set, checked by hand (grep the fixtures for the others).
    scaled = _kind(resources, "ScaledObject")[0]["spec"]
    assert scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    cluster = _kind(resources, "Cluster")[0]["spec"]
    sync = cluster["postgresql"]["synchronous"]
    assert sync["number"] > 0
    assert sync["dataDurability"] != "preferred" or not (
        sync.get("standbyNamesPre") or sync.get("standbyNamesPost"))
    assert not ("imageCatalogRef" in cluster and "imageName" in cluster)
    rabbit = _kind(resources, "RabbitmqCluster")[0]["spec"]["rabbitmq"]
    assert "$(" not in rabbit.get("envConfig", "") and "`" not in rabbit.get("envConfig", "")


CHARTS = Path(__file__).resolve().parent / "fixtures" / "charts"
#: values file -> the skeleton of its chart's values.yaml (fixtures/charts/README.md).
CHART_FOR_VALUES = {
    "observability/values/kube-prometheus-stack.yaml": "kube-prometheus-stack-88.5.3",
    "observability/values/tempo-distributed.yaml": "tempo-distributed-3.3.0",
    "observability/values/loki.yaml": "loki-18.11.0",
    "observability/values/otel-gateway.yaml": "opentelemetry-collector-0.170.0",
    "observability/values/otel-agent.yaml": "opentelemetry-collector-0.170.0",
    "orderflow/values/redis-ha.yaml": "redis-ha-4.39.0",
}
#: Read by the charts' templates, shown in values.yaml only as comments.
CHART_KEYS_IN_COMMENTS = {
    "grafana.fullnameOverride",  # grafana: templates/_helpers.tpl "grafana.fullname"
    "storage.trace.s3",  # tempo-distributed: the `config` value, `toYaml .Values.storage.trace.s3`
    "loki.storage.bucketNames",  # loki: templates/_helpers.tpl, required for object storage
    "podDisruptionBudget.maxUnavailable",  # opentelemetry-collector: templates/pdb.yaml
}
#: Passed through to the component's own configuration: their keys are the component's.
CHART_FREE_FORM = {"config", "loki.limits_config"}


def _merge(a: Any, b: Any) -> Any:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return b if isinstance(b, dict) else a
    return {**a, **{k: _merge(a[k], v) if k in a else v for k, v in b.items()}}


def _unknown_keys(ours: dict[str, Any], chart: Any, path: str = "") -> list[str]:
    out = []
    for key, value in ours.items():
        at = f"{path}.{key}" if path else key
        if at in CHART_KEYS_IN_COMMENTS or at in CHART_FREE_FORM:
            continue
        if not isinstance(chart, dict) or key not in chart:
            out.append(at)
        elif isinstance(value, dict) and isinstance(chart[key], dict):
            out += _unknown_keys(value, chart[key], at)
    return out


def test_chart_values_use_keys_the_charts_know(files: dict[str, str]) -> None:
    assert {r for r in files if "/values/" in r} == set(CHART_FOR_VALUES)
    for rel, chart_name in CHART_FOR_VALUES.items():
        chart = json.loads((CHARTS / f"{chart_name}.values-keys.json").read_text())
        if chart_name.startswith("kube-prometheus-stack"):
            chart["grafana"] = _merge(chart.get("grafana", {}), json.loads(
                (CHARTS / "grafana-12.11.1.values-keys.json").read_text()))
        unknown = _unknown_keys(yaml.safe_load(files[rel]), chart)
        assert not unknown, f"{rel}: keys {chart_name} does not have: {unknown}"
        assert chart_name.rsplit("-", 1)[1] in files[rel].splitlines()[0], \
            f"{rel} names another chart version than its fixture"


def test_collector_pipelines_name_defined_components(files: dict[str, str]) -> None:
    for rel in ("observability/values/otel-gateway.yaml", "observability/values/otel-agent.yaml"):
        values = yaml.safe_load(files[rel])
        config = values["config"]
        # The chart's kubernetesAttributes preset defines the processor under its new name
        # (rewriteDeprecatedComponentNames, on by default) and adds nothing when it is listed.
        preset = {"k8s_attributes"} if values.get("presets", {}).get(
            "kubernetesAttributes", {}).get("enabled") else set()
        for name, pipeline in config["service"]["pipelines"].items():
            if pipeline is None:  # removed from the chart's default configuration
                continue
            for kind in ("receivers", "processors", "exporters"):
                defined = {k for k, v in config.get(kind, {}).items() if v is not None}
                missing = set(pipeline.get(kind, [])) - defined - preset
                assert not missing, f"{rel}: pipeline {name} uses undefined {kind} {missing}"
