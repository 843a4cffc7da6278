"""``obskit orders show/stuck/lost`` against the machine's Redis, as a user runs them."""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from urllib.parse import unquote

import pytest

from obskit.journey import Deadlines, Hop, JourneyStore

REDIS_URL = os.environ.get("OBSKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def store():
    s = JourneyStore(REDIS_URL, f"obskit-cli-{uuid.uuid4().hex[:8]}")
    yield s
    s.delete_all()
    s.close()


def orders(store, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "obskit", "orders", *args], capture_output=True, text=True,
        timeout=60, env={**os.environ, "OBSKIT_JOURNEY_URL": store.url,
                         "OBSKIT_JOURNEY_PREFIX": store.prefix, **env})


@pytest.fixture
def journeys(store):
    now = time.time()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    store.write([
        Hop("late-1", "accepted", "b2c", now - 900, "ingress", "web:11", trace),
        Hop("late-1", "stored", "b2c", now - 899.9, "ingress", "web:11", trace),
        Hop("late-1", "published", "b2c", now - 899, "crm-relay", "crm:12", trace),
        Hop("late-1", "received", "b2c", now - 898, "mes", "mes:13", trace),
        Hop("late-1", "priced", "b2c", now - 897, "mes", "mes:13", trace, {"price": "12.50"}),
        Hop("slow-2", "published", "b2b", now - 200, "crm-relay", "crm:12"),
        Hop("fine-3", "published", "b2b", now - 1, "crm-relay", "crm:12"),
        Hop("done-4", "received", "b2c", now - 5, "mes", "mes:13"),
        Hop("done-4", "done", "b2c", now - 4, "mes", "mes:13"),
    ])
    # What the active sweeper would publish: priced is lost after 10 minutes.
    store.sweep(Deadlines.parse("priced=1m/10m,published=2m/15m"))
    return trace


def test_show_prints_every_hop_and_where_the_order_is_now(store, journeys):
    r = orders(store, "show", "late-1", OBSKIT_GRAFANA_URL="http://grafana.example:3000")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    hop_lines = [ln for ln in lines if " mes " in ln or " ingress " in ln or " crm-relay " in ln]
    stages = ["accepted", "stored", "published", "received", "priced"]
    assert [next(s for s in stages if f" {s} " in ln) for ln in hop_lines] == stages
    assert "+900ms" in hop_lines[2] and "crm-relay" in hop_lines[2] and "crm:12" in hop_lines[2]
    assert "+1.0s" in hop_lines[3] and "mes:13" in hop_lines[3]
    assert "price=12.50" in hop_lines[-1]
    now_line = next(ln for ln in lines if ln.startswith("now:"))
    assert re.search(r"LOST priced for 14m5\ds \(stuck after 1m, lost after 10m\)", now_line)
    link = next(ln for ln in lines if ln.startswith("trace: "))
    assert link.startswith("trace: http://grafana.example:3000/explore?")
    assert journeys in unquote(link) and '"uid":"obskit-tempo"' in unquote(link)


def test_show_json(store, journeys):
    r = orders(store, "show", "done-4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [h["stage"] for h in out["hops"]] == ["received", "done"]
    assert out["hops"][1]["since_previous"] == pytest.approx(1.0, abs=0.01)
    assert out["now"]["stage"] == "done" and out["now"]["state"] == "finished"


def test_an_unknown_order_is_a_message_and_exit_code_1(store, journeys):
    r = orders(store, "show", "no-such-order")
    assert r.returncode == 1
    assert "no-such-order" in r.stderr and "not in the journey store" in r.stderr
    assert "Traceback" not in r.stderr


def test_stuck_and_lost_list_order_ids_with_stage_and_age(store, journeys):
    r = orders(store, "stuck", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["order_id"], x["stage"], x["lost"]) for x in rows] == [
        ("late-1", "priced", True), ("slow-2", "published", False)]
    assert rows[1]["channel"] == "b2b" and 199 < rows[1]["age_seconds"] < 260

    r = orders(store, "stuck", "--stage", "published", "--older-than", "0s", "--json")
    assert {x["order_id"] for x in json.loads(r.stdout)} == {"slow-2", "fine-3"}

    r = orders(store, "lost")
    assert r.returncode == 0, r.stderr
    assert "late-1" in r.stdout and "slow-2" not in r.stdout and "1 lost order(s)" in r.stdout


def test_an_unreachable_store_names_the_url_without_a_traceback(store):
    r = orders(store, "lost", OBSKIT_JOURNEY_URL="redis://:hunter2@127.0.0.1:1/0")
    assert r.returncode == 2
    assert "redis://:****@127.0.0.1:1/0" in r.stderr and "unavailable" in r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_no_store_configured_says_how_to_set_one(store):
    r = orders(store, "stuck", OBSKIT_JOURNEY_URL="")
    assert r.returncode == 2 and "OBSKIT_JOURNEY_URL" in r.stderr


def test_a_bad_duration_is_a_usage_error(store):
    r = orders(store, "stuck", "--older-than", "soon")
    assert r.returncode == 2 and "duration" in r.stderr
