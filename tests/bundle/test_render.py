"""The checked-in bundle is the render of the defaults, and one parameter reaches every file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from obskit.bundle import ParamError, Params, parse_overrides, render, render_files

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_bundle_is_the_render_of_the_defaults() -> None:
    files = render_files()
    stale = [rel for rel, text in files.items()
             if not (ROOT / rel).exists() or (ROOT / rel).read_text() != text]
    assert not stale, (f"{stale} differ from the render of the defaults: run "
                       "`.venv/bin/obskit bundle render --out .` and commit the result")
    # Every dashboard in the folder is rendered: a hand-added one would not survive a render.
    rendered = {rel for rel in files if rel.startswith("dashboards/")}
    on_disk = {f"dashboards/{p.name}" for p in (ROOT / "dashboards").glob("*.json")}
    assert on_disk == rendered


def test_every_file_parses() -> None:
    for rel, text in render_files().items():
        if rel.endswith(".json"):
            json.loads(text)
        else:
            assert yaml.safe_load(text), rel


def _has(text: str, selector: str) -> bool:
    return selector in text or json.dumps(selector)[1:-1] in text  # YAML or JSON


def test_a_selector_override_reaches_every_file_that_selects() -> None:
    default = render_files()
    custom = render_files(parse_overrides(['obskit_selector=job="shop"',
                                           'rabbitmq_selector=job="mq", cluster="eu1"']))
    # Files that select obskit metrics: every dashboard and every rule file.
    selecting = {rel for rel, text in default.items() if _has(text, 'job="obskit"')}
    assert {r for r in default if r.startswith("dashboards/")} <= selecting
    assert {r for r in default if r.endswith(".rules.yml")} <= selecting
    for rel in selecting:
        assert not _has(custom[rel], 'job="obskit"'), rel
        assert _has(custom[rel], 'job="shop"'), rel
    for rel in ("dashboards/rabbitmq.json", "alerts/rabbitmq.rules.yml"):
        assert _has(custom[rel], 'job="mq", cluster="eu1"'), rel
        assert not _has(custom[rel], 'job="rabbitmq"'), rel


def test_port_and_address_overrides_reach_compose_and_prometheus() -> None:
    files = render_files(parse_overrides(["grafana_port=3300", "bind_address=0.0.0.0",
                                          "alertmanager_address=am.internal:9093",
                                          "targets=mes/mes-a=10.0.0.5:9100"]))
    compose = yaml.safe_load(files["docker-compose.observability.yml"])
    assert "0.0.0.0:3300:3000" in compose["services"]["grafana"]["ports"]
    for svc in compose["services"].values():
        assert all(p.startswith("0.0.0.0:") for p in svc.get("ports", []))
    prom = yaml.safe_load(files["platform/prometheus/prometheus.yml"])
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == \
        ["am.internal:9093"]
    assert json.loads(files["platform/prometheus/targets/obskit.json"]) == [
        {"targets": ["10.0.0.5:9100"], "labels": {"service": "mes", "instance": "mes-a"}}]


@pytest.mark.parametrize("pair, message", [
    ("nope=1", "unknown parameter 'nope'"),
    ("grafana_port=abc", "grafana_port='abc'"),
    ("targets=mes", "expected service[/instance]=host:port"),
    ("novalue", "expected KEY=VALUE"),
])
def test_bad_overrides_name_the_problem(pair: str, message: str) -> None:
    with pytest.raises(ParamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_overrides([pair])


def test_render_writes_only_what_changed(tmp_path: Path) -> None:
    first = render(tmp_path)
    assert len(first) == len(render_files())
    assert render(tmp_path) == []
    changed = render(tmp_path, parse_overrides(["grafana_port=3300"]))
    assert [p.relative_to(tmp_path).as_posix() for p in changed] == \
        ["docker-compose.observability.yml"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obskit", "bundle", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_render_check_and_params(tmp_path: Path) -> None:
    out = tmp_path / "b"
    r = _cli("render", "--out", str(out), "--set", "grafana_port=3300")
    assert r.returncode == 0, r.stderr
    assert "0.0.0.0:3300" not in (out / "docker-compose.observability.yml").read_text()
    assert f"{Params().bind_address}:3300:3000" in \
        (out / "docker-compose.observability.yml").read_text()
    assert _cli("render", "--out", str(out), "--check", "--set", "grafana_port=3300"
                ).returncode == 0
    stale = _cli("render", "--out", str(out), "--check")
    assert stale.returncode == 1 and "docker-compose.observability.yml" in stale.stdout
    bad = _cli("render", "--out", str(out), "--set", "grafana_prot=1")
    assert bad.returncode == 2 and "unknown parameter 'grafana_prot'" in bad.stderr
    assert "Traceback" not in bad.stderr
    listing = _cli("params")
    assert listing.returncode == 0 and "obskit_selector = job=\"obskit\"" in listing.stdout


def test_docs_list_every_parameter() -> None:
    from obskit.bundle._params import markdown_table

    assert markdown_table() in (ROOT / "docs/platform.md").read_text(), \
        "docs/platform.md's parameter table is stale: paste `python -c 'from " \
        "obskit.bundle._params import markdown_table; print(markdown_table())'`"
