"""Retention: the relay deletes MES dedup marks and clears idempotency keys past
ORDERFLOW_RETENTION_DAYS, and keeps everything younger (and the orders themselves)."""

from __future__ import annotations

import json
import uuid

from conftest import Procs, isolated_services, sql, wait_for


def _order(dsn: str, *, age_days: float, key: str) -> str:
    order_id = str(uuid.uuid4())
    sql(dsn, "INSERT INTO orders (order_id, channel, customer_email, model, quantity,"
             " tracking_token, status, idempotency_scope, idempotency_key, request_hash,"
             " created_at) VALUES (%s, 'b2c', 'a@b.co', %s, 1, 't', 'done', 'b2c', %s, 'h',"
             " now() - make_interval(days => %s)) RETURNING order_id",
        order_id, json.dumps({"name": "x"}), key, age_days)
    return order_id


def _mark(dsn: str, *, age_days: float) -> str:
    mid = str(uuid.uuid4())
    sql(dsn, "INSERT INTO processed_messages (message_id, consumer, processed_at)"
             " VALUES (%s, 'mes', now() - make_interval(days => %s)) RETURNING message_id",
        mid, age_days)
    return mid


def test_relay_purges_marks_and_idempotency_keys_past_retention(env: dict[str, str]) -> None:
    with isolated_services("orderflow_retention") as iso:
        dsn = iso.dsn
        _mark(dsn, age_days=8)
        new_mark = _mark(dsn, age_days=6)
        old_order = _order(dsn, age_days=8, key="old-key")
        new_order = _order(dsn, age_days=6, key="new-key")
        procs = Procs({**env, "ORDERFLOW_DATABASE_URL": dsn,
                       "ORDERFLOW_READ_DATABASE_URL": dsn,
                       "ORDERFLOW_RABBITMQ_URL": iso.amqp_url, "ORDERFLOW_RETENTION_DAYS": "7"})
        procs.start("relay")
        try:
            def marks() -> set[str]:
                return {r[0] for r in sql(dsn, "SELECT message_id FROM processed_messages")}

            wait_for(lambda: marks() == {new_mark}, timeout=30,
                     what="the relay to delete the old dedup mark")
            keys = dict(sql(dsn, "SELECT order_id::text, idempotency_key FROM orders"))
            assert keys == {old_order: None, new_order: "new-key"}  # orders kept, old key gone
        finally:
            procs.stop_all()
