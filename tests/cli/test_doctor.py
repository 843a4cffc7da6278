import json
import os
import re
import socket
import subprocess
import sys

from obskit import _fastpaths


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


def test_doctor_shows_each_fast_path_and_an_off_one_is_not_a_failure():
    r = subprocess.run([sys.executable, "-m", "obskit", "doctor", "--json", "--timeout", "1"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OBSKIT_DISABLE_FAST_PATHS": "amqp_properties",
                            "OBSKIT_SPANS_FILE": "off"})
    assert r.returncode == 0, r.stdout + r.stderr
    paths = {p["name"]: p for p in json.loads(r.stdout)["fast_paths"]}
    assert list(paths) == [p.name for p in _fastpaths.FAST_PATHS]
    assert paths["amqp_properties"] == {"name": "amqp_properties", "state": "off",
                                        "detail": "disabled", "warning": False}
    assert paths["lean_spans"] == {"name": "lean_spans", "state": "active"}
    text = subprocess.run([sys.executable, "-m", "obskit", "doctor", "--timeout", "1"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OBSKIT_DISABLE_FAST_PATHS": "amqp_properties",
                               "OBSKIT_SPANS_FILE": "off"}).stdout
    assert "\nfast paths:\n" in text
    assert re.search(r"^  amqp_properties +off \(disabled\)$", text, re.M)
    assert re.search(r"^  stepped_otlp_spans +active$", text, re.M)
