import json
import os
import socket
import subprocess
import sys


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obskit", "doctor", "--json", "--timeout", "1"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_doctor_reports_config_sources_masks_secrets_and_checks_reachability():
    with socket.socket() as collector:  # a listening "collector"
        collector.bind(("127.0.0.1", 0))
        collector.listen()
        port = collector.getsockname()[1]
        r = _doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                     "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20topsecret",
                     "OTEL_SERVICE_NAME": "mes", "OBSKIT_DISABLED_INSTRUMENTATIONS": "redis"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "topsecret" not in r.stdout
    report = json.loads(r.stdout)
    assert report["configuration"]["service_name"] == {"value": "mes",
                                                       "source": "env OTEL_SERVICE_NAME"}
    assert report["configuration"]["otlp_headers"]["value"] == {"authorization": "****"}
    assert report["otlp"]["ok"] is True
    states = {i["name"]: i["state"] for i in report["integrations"]}
    assert states["redis"] == "disabled"


def test_doctor_fails_when_the_collector_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert r.returncode == 1
    assert json.loads(r.stdout)["otlp"]["ok"] is False


def test_doctor_reports_a_bad_value_instead_of_crashing():
    r = subprocess.run([sys.executable, "-m", "obskit", "doctor"], capture_output=True, text=True,
                       env={**os.environ, "OBSKIT_METRICS_PORT": "nope"}, timeout=60)
    assert r.returncode == 1 and "OBSKIT_METRICS_PORT" in r.stdout
