"""The fault checker in CI: every fault once, a small number of orders, nothing lost.

``orderflow chaos --fault all --runs 10 --orders 200`` is the full run (docs/orderflow.md has its
table); here each fault runs once with 45 orders in a database and vhost of the test's own. The
service faults (RabbitMQ, PostgreSQL, Redis restarts) act on the machine's services and leave them
running.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import isolated_services

from orderflow import chaos


@pytest.fixture
def isolated(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    with isolated_services("orderflow_chaos") as own:
        for k, v in {**env, "ORDERFLOW_DATABASE_URL": own.dsn,
                     "ORDERFLOW_READ_DATABASE_URL": own.dsn,
                     "ORDERFLOW_RABBITMQ_URL": own.amqp_url,
                     "ORDERFLOW_REDIS_PREFIX": f"orderflow-chaos-{own.run}",
                     "ORDERFLOW_MES_STAGE_DELAY": "0.05"}.items():
            if k.startswith(("ORDERFLOW_", "OBSKIT_", "OTEL_")):
                monkeypatch.setenv(k, v)
        yield own


@pytest.mark.parametrize("fault", list(chaos.FAULTS))
def test_no_order_is_lost_duplicated_or_left_unfinished(isolated, fault: str) -> None:
    r = chaos.run_once(fault, orders=45, rate=15.0, drain_timeout=90.0)
    print(f"\n{fault}: {r}")
    assert r["orders"] >= 40, r  # a few may be refused while the ingress is down; none wrongly
    assert not r["client_errors"], r
    assert (r["lost"], r["duplicated"], r["unexpected"], r["stuck"]) == (0, 0, 0, 0), r
    assert r["recovery_seconds"] is not None, r


def test_the_command_names_the_faults_and_refuses_unknown_ones() -> None:
    p = subprocess.run([sys.executable, "-P", "-m", "orderflow.cli", "chaos", "--fault",
                        "kill-everything"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "kill-everything" in p.stderr and "kill-mes" in p.stderr
