"""An order's whole journey: ingress → CRM → outbox relay → RabbitMQ → MES → status history."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import httpx
from conftest import api_key, new_ip, order_body, sql, statuses, wait_for

STAGES = ["accepted", "published", "received", "priced", "scheduled", "printing", "done"]


def _place_shop(base: str, **over: Any) -> dict[str, Any]:
    r = httpx.post(base + "/api/v1/shop/orders", json=order_body(**over),
                   headers={"X-Forwarded-For": new_ip()})
    assert r.status_code == 202, r.text
    return r.json()


def _place_partner(base: str, key: str, **over: Any) -> dict[str, Any]:
    r = httpx.post(base + "/api/v1/partner/orders", json=order_body(**over),
                   headers={"X-API-Key": key})
    assert r.status_code == 202, r.text
    return r.json()


def _wait_terminal(dsn: str, ids: list[str], timeout: float = 60) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        st = statuses(dsn, ids)
        done = len(st) == len(ids) and all(s in ("done", "failed", "dead_lettered")
                                           for s in st.values())
        return st if done else None

    return wait_for(check, timeout=timeout, what=f"{len(ids)} orders to finish", interval=0.2)


def test_each_channel_reaches_done_visible_to_owner_only(stack, mes_worker) -> None:
    base, dsn = stack["base"], stack["dsn"]
    mes_worker("mes-a")
    key = api_key(dsn, "acme")
    other_key = api_key(dsn, "globex")
    shop = _place_shop(base)
    partner = _place_partner(base, key, reference="PO-4711")
    assert set(shop) >= {"order_id", "status_url", "tracking_token"}
    assert set(partner) >= {"order_id", "status_url"} and "tracking_token" not in partner
    _wait_terminal(dsn, [shop["order_id"], partner["order_id"]])

    r = httpx.get(base + shop["status_url"])
    assert r.status_code == 200
    body = r.json()
    assert body["channel"] == "b2c" and body["status"] == "done" and body["price"] > 0
    assert [h["status"] for h in body["history"]] == STAGES

    r = httpx.get(base + partner["status_url"], headers={"X-API-Key": key})
    assert r.status_code == 200
    assert r.json()["status"] == "done" and r.json()["channel"] == "b2b"
    assert [h["status"] for h in r.json()["history"]] == STAGES
    assert r.json()["reference"] == "PO-4711"

    sid, pid = shop["order_id"], partner["order_id"]
    for url, headers in [
        (f"/api/v1/orders/{sid}", {}),                               # no credentials
        (f"/api/v1/orders/{sid}?token=wrong", {}),                   # wrong token
        (f"/api/v1/orders/{sid}", {"X-API-Key": key}),               # a partner, not the owner
        (f"/api/v1/orders/{pid}", {}),                               # partner order, no key
        (f"/api/v1/orders/{pid}", {"X-API-Key": other_key}),         # another partner
        (f"/api/v1/orders/{pid}?token={shop['tracking_token']}", {}),  # someone else's token
        (f"/api/v1/orders/{uuid.uuid4()}", {}),                      # no such order
    ]:
        r = httpx.get(base + url, headers=headers)
        assert r.status_code == 404, (url, headers, r.text)
        assert "history" not in r.text

    page = httpx.get(base + f"/track/{sid}?token={shop['tracking_token']}")
    assert page.status_code == 200 and "done" in page.text and sid in page.text
    assert httpx.get(base + f"/track/{sid}?token=nope").status_code == 404
    # Published orders leave the outbox: it holds only what is not yet in the broker.
    assert sql(dsn, "SELECT count(*) FROM outbox WHERE order_id = ANY(%s::uuid[])",
               [sid, pid]) == [(0,)]


def test_unprintable_order_fails_with_reason(stack, mes_worker) -> None:
    base, dsn = stack["base"], stack["dsn"]
    mes_worker("mes-f")
    o = _place_shop(base, model={"name": "huge.stl", "volume_cm3": 50000, "material": "PLA",
                                 "quality": "draft"})
    assert _wait_terminal(dsn, [o["order_id"]]) == {o["order_id"]: "failed"}
    body = httpx.get(base + o["status_url"]).json()
    assert "build volume" in body["failure_reason"]
    assert [h["status"] for h in body["history"]][-1] == "failed"


def test_sigkill_of_mes_worker_mid_order_loses_nothing(stack, mes_worker) -> None:
    base, dsn = stack["base"], stack["dsn"]
    # Long stages: the kill must land mid-order even on a loaded machine.
    slow = mes_worker("mes-slow", stage_delay=15.0, concurrency=8)
    ids = [_place_shop(base)["order_id"] for _ in range(4)]

    def mid_order() -> bool:
        rows = sql(dsn, "SELECT count(DISTINCT order_id) FROM order_status_history"
                        " WHERE order_id = ANY(%s::uuid[]) AND status = 'priced'", ids)
        return rows[0][0] == len(ids)

    wait_for(mid_order, timeout=30, what="the slow worker to be mid-order")
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=10)
    assert all(s != "done" for s in statuses(dsn, ids).values())  # really killed mid-order

    mes_worker("mes-rescue")
    final = _wait_terminal(dsn, ids)
    assert set(final.values()) == {"done"}
    for oid in ids:
        got = [r[0] for r in sql(dsn, "SELECT status FROM order_status_history"
                                      " WHERE order_id = %s", oid)]
        assert sorted(got) == sorted(STAGES)  # one row per stage, none missing
        done_by = sql(dsn, "SELECT worker FROM order_status_history WHERE order_id = %s"
                           " AND status = 'done'", oid)
        assert done_by == [("mes-rescue",)]


def test_two_mes_workers_process_disjoint_orders_without_duplicates(stack, mes_worker) -> None:
    base, dsn = stack["base"], stack["dsn"]
    mes_worker("mes-1", stage_delay=0.05, concurrency=2)
    mes_worker("mes-2", stage_delay=0.05, concurrency=2)
    key = api_key(dsn, "initech")
    ids = [(_place_shop(base) if i % 2 else _place_partner(base, key))["order_id"]
           for i in range(24)]
    assert set(_wait_terminal(dsn, ids).values()) == {"done"}

    rows = sql(dsn, "SELECT order_id::text, array_agg(DISTINCT worker), sum(duplicates)"
                    " FROM order_status_history WHERE order_id = ANY(%s::uuid[])"
                    " AND status IN ('received','priced','scheduled','printing','done')"
                    " GROUP BY order_id", ids)
    assert len(rows) == len(ids)
    by_worker: dict[str, int] = {}
    for oid, workers, dups in rows:
        assert len(workers) == 1, f"order {oid} was worked on by {workers}"
        assert dups == 0, f"order {oid} was processed more than once"
        by_worker[workers[0]] = by_worker.get(workers[0], 0) + 1
    assert set(by_worker) == {"mes-1", "mes-2"}, by_worker  # both took a share
    marks = sql(dsn, "SELECT count(*), count(DISTINCT worker) FROM processed_messages"
                     " WHERE message_id = ANY(%s)", [f"order:{i}" for i in ids])
    assert marks == [(len(ids), 2)]
