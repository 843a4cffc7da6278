"""The shipped platform files, checked by the real tools where this machine has them
(Debian's docker-compose, promtool 2.42) and structurally where it has not (the collector: no
binary can be installed here). The alerting rules and Alertmanager: test_alerts.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.observability.yml"
COLLECTOR = ROOT / "collector" / "otelcol-config.yaml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run scripts/system-deps.sh"
    return path


def _compose(*args: str, password: str | None = "s3cret") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    return subprocess.run([_tool("docker-compose"), "-f", str(COMPOSE), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def compose_model() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_is_clean() -> None:
    r = _compose("config", "-q")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_compose_refuses_to_start_without_a_grafana_password() -> None:
    r = _compose("config", "-q", password=None)
    assert r.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in r.stderr


def test_compose_services_are_pinned_local_persistent_and_ordered() -> None:
    model = compose_model()
    services = model["services"]
    assert set(services) == {"otelcol", "tempo", "loki", "prometheus", "alertmanager", "grafana"}
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and any(c.isdigit() for c in tag), image
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1"
        for dep, cond in svc.get("depends_on", {}).items():
            want = "service_healthy" if "healthcheck" in services[dep] else "service_started"
            assert cond["condition"] == want, f"{name} -> {dep}"
    # Stateful services keep their data in named volumes.
    for name, path in [("tempo", "/var/tempo"), ("loki", "/loki"), ("prometheus", "/prometheus"),
                       ("alertmanager", "/alertmanager"), ("grafana", "/var/lib/grafana")]:
        assert any(v.split(":")[0] in model["volumes"] and v.split(":")[1] == path
                   for v in services[name]["volumes"]), name
    # Everything but the scratch-based collector has a healthcheck.
    assert {n for n, s in services.items() if "healthcheck" not in s} == {"otelcol"}
    # Grafana: no default admin password, no anonymous access.
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    # Prometheus reaches the host's /metrics; with exemplar storage on.
    prom = services["prometheus"]
    assert "host.docker.internal:host-gateway" in prom["extra_hosts"]
    assert "--enable-feature=exemplar-storage" in prom["command"]
    assert "--web.enable-remote-write-receiver" in prom["command"]


def test_compose_mounts_exist_in_the_repository() -> None:
    for name, svc in compose_model()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    r = subprocess.run([_tool("promtool"), "check", "config",
                        str(ROOT / "platform/prometheus/prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    # So the test above cannot pass by accident (promtool 2.42 rejects unknown fields).
    bad = tmp_path / "prometheus.yml"
    bad.write_text((ROOT / "platform/prometheus/prometheus.yml").read_text()
                   .replace("scrape_interval:", "scrape_intervall:", 1))
    r = subprocess.run([_tool("promtool"), "check", "config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


# --- the collector -----------------------------------------------------------------------
SECTIONS = ("receivers", "processors", "exporters", "connectors")


def collector() -> dict[str, Any]:
    return yaml.safe_load(COLLECTOR.read_text())


def test_collector_pipelines_use_defined_components_and_nothing_is_unused() -> None:
    cfg = collector()
    service = cfg["service"]
    used: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for name, pipeline in service["pipelines"].items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in (cfg.get(section) or {}), \
                    f"pipeline {name} uses undefined {section[:-1]} {component}"
                used[section].add(component)
    for section in SECTIONS:
        unused = set(cfg.get(section) or {}) - used[section]
        assert not unused, f"defined but unused {section}: {unused}"
    assert set(service.get("extensions", [])) == set(cfg.get("extensions") or {})


def test_collector_pipelines_limit_memory_first_and_batch_last() -> None:
    for name, pipeline in collector()["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
        assert "redaction/scrub" in processors, name


def test_collector_sends_traces_to_tempo_and_logs_to_lokis_otlp_endpoint() -> None:
    cfg, services = collector(), compose_model()["services"]
    pipelines = cfg["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs"}

    def target(exporter: str) -> tuple[str, str]:
        endpoint = cfg["exporters"][exporter]["endpoint"]
        hostport = endpoint.split("://")[-1].split("/")[0]
        host, _, port = hostport.partition(":")
        return host, port

    (traces_exporter,) = pipelines["traces"]["exporters"]
    host, port = target(traces_exporter)
    assert traces_exporter.split("/")[0] == "otlp_grpc" and host == "tempo" and host in services
    tempo = yaml.safe_load((ROOT / "platform/tempo/tempo.yaml").read_text())
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] \
        .endswith(":" + port)
    (logs_exporter,) = pipelines["logs"]["exporters"]
    host, port = target(logs_exporter)
    assert logs_exporter.split("/")[0] == "otlp_http" and host == "loki" and host in services
    assert cfg["exporters"][logs_exporter]["endpoint"].endswith("/otlp")
    loki = yaml.safe_load((ROOT / "platform/loki/loki.yaml").read_text())
    assert str(loki["server"]["http_listen_port"]) == port
    assert loki["limits_config"]["allow_structured_metadata"] is True


def test_collector_exposes_its_metrics_where_prometheus_scrapes_them() -> None:
    readers = collector()["service"]["telemetry"]["metrics"]["readers"]
    exporter = readers[0]["pull"]["exporter"]["prometheus"]
    prom = yaml.safe_load((ROOT / "platform/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "otelcol"]
    host, _, port = job["static_configs"][0]["targets"][0].partition(":")
    assert host in compose_model()["services"] and int(port) == exporter["port"]
    assert exporter["host"] == "0.0.0.0"


def test_collector_receives_otlp_on_the_published_ports() -> None:
    otlp = collector()["receivers"]["otlp"]["protocols"]
    ports = compose_model()["services"]["otelcol"]["ports"]
    for proto, inner in (("grpc", "4317"), ("http", "4318")):
        assert otlp[proto]["endpoint"].endswith(":" + inner)
        assert any(p.endswith(":" + inner) for p in ports)


@pytest.mark.parametrize("key, secret", [
    ("password", True), ("db_password", True), ("http.request.header.authorization", True),
    ("X-Api-Key", True), ("customer_email", True), ("session.id", True),
    ("order.id", False), ("http.route", False), ("messaging.destination.name", False),
    ("passage", False), ("monkey", False),
])
def test_collector_masks_the_values_of_secret_keys(key: str, secret: bool) -> None:
    # Python's re and the collector's RE2 agree on this subset (no look-around).
    import re

    (pattern,) = collector()["processors"]["redaction/scrub"]["blocked_key_patterns"]
    assert bool(re.search(pattern, key)) is secret


def test_collector_masks_email_addresses_in_values_and_log_bodies() -> None:
    import re

    cfg = collector()
    (pattern,) = cfg["processors"]["redaction/scrub"]["blocked_values"]
    assert re.search(pattern, "order for jane.doe+3d@example.co.uk")
    assert not re.search(pattern, "ord_01HZX9 b2c printing")
    body = cfg["processors"]["transform/scrub-body"]["log_statements"][0]["statements"][0]
    assert json.dumps(pattern) in body and "body" in body  # an OTTL string literal
    assert "transform/scrub-body" in cfg["service"]["pipelines"]["logs"]["processors"]
