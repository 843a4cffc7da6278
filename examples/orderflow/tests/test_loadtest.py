"""``loadtest/run.py``: a short headless Locust run leaves its reports and accounts for every
order; the accounting really fails on an order the database does not know.

Locust runs on gevent, which must not patch this process: it runs as the runner's subprocess,
and the runner's functions are loaded from its file (``loadtest/`` is not a package).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from conftest import isolated_services

ROOT = Path(__file__).resolve().parents[3]
RUNNER = ROOT / "loadtest" / "run.py"
# find_spec, not importorskip: importing locust would monkey-patch this process with gevent.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed: pip install -e 'examples/orderflow[loadtest]'",
                allow_module_level=True)


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadtest_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _names(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {row["Name"] for row in csv.DictReader(f)}


def test_headless_run_accounts_for_every_order(tmp_path: Path) -> None:
    # 20 users: the 15:4:1 weights give exactly 15 shoppers, 4 partners and 1 manager.
    env = {**os.environ, "OTEL_SDK_DISABLED": "true", "OBSKIT_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, str(RUNNER), "--users", "20", "--spawn-rate", "20", "--duration", "20",
         "--mes-workers", "1", "--mes-stage-delay", "0.02", "--drain-timeout", "20",
         "--report-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    for name in ("report.html", "stats_stats.csv", "stats_failures.csv", "accepted.tsv",
                 "summary.json", "orderflow.log"):
        assert (tmp_path / name).is_file(), name
    names = _names(tmp_path / "stats_stats.csv")
    html = (tmp_path / "report.html").read_text()
    # One request of each user class, in the CSV and in the HTML report.
    for name in ("/api/v1/shop/orders", "/api/v1/partner/orders", "/api/v1/dashboard/summary",
                 "partner order (over limit, 429 expected)"):
        assert name in names, (name, names)
        assert name in html, name

    summary = json.loads((tmp_path / "summary.json").read_text())
    orders = summary["orders"]
    assert orders["accepted"] > 0 and orders["by_channel"]["b2c"] > 0
    assert orders["by_channel"]["b2b"] > 0
    assert orders["unaccounted"] == 0 and summary["unaccounted_order_ids"] == []
    assert summary["requests"]["unexpected_failures"] == 0
    assert summary["exit_code"] == 0
    assert orders["accepted"] == len({line.split("\t")[0] for line in
                                      (tmp_path / "accepted.tsv").read_text().splitlines()})
    assert "unaccounted   0" in out.stdout


def test_an_unknown_accepted_order_fails_the_run(tmp_path: Path) -> None:
    """Not vacuous: a stored order passes, an id the database never saw fails, by id."""
    runner = _runner()
    stored, lost = str(uuid.uuid4()), str(uuid.uuid4())
    with isolated_services("orderflow_loadtest_check") as iso:
        with psycopg.connect(iso.dsn) as conn:
            conn.execute("INSERT INTO orders (order_id, channel, customer_email, model, quantity,"
                         " tracking_token, status) VALUES (%s, 'b2c', 'a@example.com', '{}', 1,"
                         " 'tok', 'done')", (stored,))

        ok = runner.check(iso.dsn, [stored])
        assert ok.accepted == 1 and ok.unaccounted == [] and ok.by_status == {"done": 1}
        assert runner.decide(ok, 0, 0, True)[0] == 0
        assert runner.decide(ok, 3, 1, True)[0] == 2  # unexpected request failures
        bad = runner.check(iso.dsn, [stored, lost])
        assert bad.unaccounted == [lost]
        assert runner.decide(bad, 0, 0, True)[0] == 1

        # The command's exit status and message, through --recheck of a report directory.
        (tmp_path / "accepted.tsv").write_text(f"{stored}\tb2c\n{lost}\tb2b\n")
        out = subprocess.run([sys.executable, str(RUNNER), "--recheck", str(tmp_path),
                              "--database-url", iso.dsn], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["unaccounted"] == 1 and result["unaccounted_order_ids"] == [lost]
