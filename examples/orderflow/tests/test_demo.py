"""``orderflow demo --duration 20 --json``: every accepted order is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_accounts_for_every_order(env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-P", "-m", "orderflow.cli", "demo", "--duration", "20", "--rate", "8",
         "--json"], env=env, capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for k in ("accepted", "completed", "failed", "dead_lettered", "in_flight", "unaccounted",
              "rejected_invalid", "rate_limited", "latency_ms", "cache_hit_ratio"):
        assert k in summary, k
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert summary["unaccounted"] == 0
    assert summary["accepted"] >= 100
    assert summary["completed"] + summary["failed"] + summary["dead_lettered"] \
        + summary["in_flight"] == summary["accepted"]
    assert summary["in_flight"] == 0 and summary["completed"] > 0 and summary["failed"] > 0
    assert summary["rejected_invalid"] > 0 and summary["rate_limited"] > 0
    assert summary["latency_ms"]["p50"] > 0
