"""``PrometheusProcess`` / ``AlertmanagerProcess``: the real binaries, started and stopped."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from obskit.testing import AlertmanagerProcess, PrometheusError, PrometheusProcess, wait_for

AM_CONFIG = """\
route: {receiver: none}
receivers: [{name: none}]
"""


def _prom_config(path: Path, am: str, target: str) -> Path:
    path.write_text(f"""\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["{am}"]}}]}}]
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["{target}"]}}]
""")
    return path


def test_prometheus_and_alertmanager_start_answer_and_stop_clean(tmp_path: Path) -> None:
    (tmp_path / "am.yml").write_text(AM_CONFIG)
    with AlertmanagerProcess(tmp_path / "am.yml") as am:
        assert am.alerts() == []
        # Prometheus scrapes itself, so its port is chosen here, before the config is written.
        port = _free()
        config = _prom_config(tmp_path / "prom.yml", am.address, f"127.0.0.1:{port}")
        prom = PrometheusProcess(config, port=port)
        with prom:
            assert prom.port == port
            up = wait_for(lambda: prom.query('up{job="prometheus"} == 1'), 15,
                          what="Prometheus to scrape itself")
            assert up[0]["metric"]["instance"] == prom.address
            assert prom.query("1 + 1") == [{"metric": {}, "value": [pytest.approx(time.time(),
                                                                                abs=60), "2"]}]
            assert [t["health"] for t in prom.targets()] == ["up"]
            assert wait_for(prom.alertmanagers, 15) == [f"{am.url}/api/v2/alerts"]
            with pytest.raises(PrometheusError, match="parse error"):
                prom.query("sum(")
            config.write_text(config.read_text().replace("job_name: prometheus",
                                                         "job_name: renamed"))
            prom.reload()
            assert "job_name: renamed" in prom.config()
            config.write_text("scrape_configs: [{job_name: x, nope: 1}]")
            with pytest.raises(PrometheusError, match="(?s)reload failed.*field nope"):
                prom.reload()
            pid, data_dir = prom.pid, prom.data_dir
            assert pid is not None and data_dir is not None and data_dir.is_dir()
        assert prom.pid is None and not data_dir.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        am_dir = am.data_dir
    assert am_dir is not None and not am_dir.exists()


def test_startup_failure_carries_stderr_and_cleans_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("scrape_configs: [{job_name: x, nope: 1}]")
    prom = PrometheusProcess(bad)
    with pytest.raises(PrometheusError, match="field nope not found"):
        prom.start()
    assert prom.data_dir is None and prom.pid is None


def test_taken_port_is_reported(tmp_path: Path) -> None:
    (tmp_path / "am.yml").write_text(AM_CONFIG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(PrometheusError, match="address already in use"):
            AlertmanagerProcess(tmp_path / "am.yml", port=s.getsockname()[1]).start()


def test_missing_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("obskit.testing._prometheus._binary_dirs", ("/nonexistent",))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="scripts/system-deps.sh"):
        PrometheusProcess(tmp_path / "p.yml")


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
