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


def _doctor_without(*modules: str) -> subprocess.CompletedProcess:
    """``obskit doctor --json`` in a process where ``modules`` cannot be imported."""
    code = ("import sys; sys.modules.update(dict.fromkeys(sys.argv[1:])); "
            "from obskit.cli import main; sys.exit(main(['doctor', '--json', '--timeout', '1']))")
    return subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OBSKIT_SPANS_FILE": "off",
                                           "OBSKIT_DISABLE_FAST_PATHS": ""})


def test_without_the_rabbitmq_extra_the_amqp_paths_name_what_is_missing():
    # A service installed with obskit[fastapi] only: none of the rabbitmq extra's libraries.
    r = _doctor_without("httpx", "aio_pika", "aiormq", "pamqp")
    assert r.returncode == 0, r.stdout + r.stderr
    paths = {p["name"]: p for p in json.loads(r.stdout)["fast_paths"]}
    for name in ("amqp_propagation", "amqp_properties"):
        assert paths[name] == {
            "name": name, "state": "off", "warning": False,
            "detail": "not needed: aio_pika is not installed "
                      "(the rabbitmq extra: pip install 'obskit[rabbitmq]')"}
    assert paths["lean_spans"]["state"] == "active"


def test_the_amqp_paths_do_not_need_httpx():
    # httpx is only the management API client's: publishing and consuming work without it.
    r = _doctor_without("httpx")
    assert r.returncode == 0, r.stdout + r.stderr
    paths = {p["name"]: p for p in json.loads(r.stdout)["fast_paths"]}
    assert paths["amqp_propagation"]["state"] == paths["amqp_properties"]["state"] == "active"
