"""The CRM's writes: an order and its outgoing message in one transaction; status history.

Ingress, relay and status consumer all go through here, so "what is an order's status" has one
definition: the highest-ranked status seen (``orderflow.statuses``), with its history.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from obskit import order_context, propagation
from orderflow import messaging
from orderflow.statuses import FINAL, RANK


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(order_id)


@dataclass
class NewOrder:
    order_id: str
    tracking_token: str
    created: bool  # False: an Idempotency-Key replay of an existing order
    accepted_at: datetime


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def idempotency_scope(channel: str, body: dict[str, Any], partner: str | None) -> str:
    """Whose Idempotency-Keys a key is compared with: one partner's (all its API keys, so a
    retry after a key rotation finds the order), or one shop customer's (by email), never
    everyone's: a key another customer happens to send must not find, or reveal, an order."""
    if channel == "b2b":
        assert partner is not None, "a b2b order has a partner"
        return f"partner:{partner}"
    email = str(body["customer_email"]).strip().lower()
    return "b2c:" + hashlib.sha256(email.encode()).hexdigest()[:32]


async def create_order(pool: AsyncConnectionPool, *, channel: str, body: dict[str, Any],
                       partner_id: int | None, idempotency_key: str | None,
                       request_id: str | None, trace_id: str | None,
                       partner: str | None = None) -> NewOrder:
    """Store the order, its ``accepted`` history row and its outbox message in one transaction.

    Once this returns the order is durable: the relay will publish it even if this process dies.
    ``partner_id`` is the API key that placed a b2b order, ``partner`` the partner that owns it
    (``api_keys.partner``): idempotency and status reads go by the partner, not by its key.
    """
    order_id = str(uuid.uuid4())
    token = secrets.token_urlsafe(16)
    scope = None
    if idempotency_key is not None:
        scope = idempotency_scope(channel, body, partner)
    rhash = request_hash(body)
    now = datetime.now(UTC)
    model = body["model"]
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "INSERT INTO orders (order_id, channel, partner_id, customer_email, model, quantity,"
            " reference, tracking_token, status, status_rank, idempotency_scope,"
            " idempotency_key, request_hash, request_id, trace_id, created_at, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,'accepted',0,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING order_id",
            (order_id, channel, partner_id, body["customer_email"], Jsonb(model),
             body["quantity"], body.get("reference"), token, scope, idempotency_key, rhash,
             request_id, trace_id, now, now))).fetchone()
        if row is None:  # replay: the first request with this key won
            existing = await (await conn.execute(
                "SELECT order_id, tracking_token, request_hash, created_at FROM orders"
                " WHERE idempotency_scope = %s AND idempotency_key = %s",
                (scope, idempotency_key))).fetchone()
            assert existing is not None
            if existing["request_hash"] != rhash:
                raise IdempotencyConflict(str(existing["order_id"]))
            return NewOrder(str(existing["order_id"]), existing["tracking_token"], False,
                            existing["created_at"])
        await conn.execute(
            "INSERT INTO order_status_history (order_id, status, at) VALUES (%s,'accepted',%s)",
            (order_id, now))
        message = {"order_id": order_id, "channel": channel, "model": model,
                   "quantity": body["quantity"], "accepted_at": now.timestamp()}
        with order_context(order_id, channel):
            # The request's trace context and order baggage travel with the outbox row, so the
            # relay's publish (and the MES) continue the HTTP request's trace.
            headers = dict(propagation.inject({}))
        await conn.execute(
            "INSERT INTO outbox (order_id, exchange, routing_key, message_id, payload, headers)"
            " VALUES (%s,%s,%s,%s,%s,%s)",
            (order_id, messaging.ORDERS_EXCHANGE, channel, f"order:{order_id}", Jsonb(message),
             Jsonb(headers)))
    return NewOrder(order_id, token, True, now)


@dataclass
class StatusEvent:
    order_id: str
    status: str
    at: datetime
    worker: str | None = None
    detail: dict[str, Any] | None = None


async def record_statuses(conn: AsyncConnection[Any], events: list[StatusEvent], *,
                          rejected: list[StatusEvent] | None = None) -> list[dict[str, Any]]:
    """Append history rows and move ``orders.status`` forward, inside the caller's transaction.

    A (order, status) seen again increments ``duplicates`` instead of adding a row: redeliveries
    are visible but harmless. Returns the status changes that were new, for ``events``.

    The status only moves up the ranks (``orderflow.statuses``), and ``done``/``failed`` are
    final: the first one committed stays, whatever arrives later. Within one call, the highest
    rank wins (``done`` over ``failed`` over ``dead_lettered``), so two terminal events in a
    batch give the same result in any order. ``dead_lettered`` is not final: a replayed order
    that then reaches ``done`` or ``failed`` moves on.

    Events of orders that do not exist are not written; they are appended to ``rejected`` (the
    caller dead-letters them alone) instead of failing the whole batch.
    """
    if not events:
        return []
    merged: dict[tuple[str, str], tuple[StatusEvent, int]] = {}
    for e in events:
        key = (e.order_id, e.status)
        first, dups = merged.get(key, (e, -1))
        merged[key] = (first, dups + 1)
    keys = sorted(merged)  # one lock order for every writer: no deadlocks
    rows = await (await conn.execute(
        "INSERT INTO order_status_history (order_id, status, at, worker, detail, duplicates)"
        " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::text[],"
        " %s::jsonb[], %s::int[]) AS v(order_id, status, at, worker, detail, duplicates)"
        " WHERE EXISTS (SELECT 1 FROM orders o WHERE o.order_id = v.order_id)"
        " ON CONFLICT (order_id, status) DO UPDATE"
        " SET duplicates = order_status_history.duplicates + excluded.duplicates + 1"
        " RETURNING order_id::text, status, (xmax = 0) AS inserted",
        ([k[0] for k in keys], [k[1] for k in keys], [merged[k][0].at for k in keys],
         [merged[k][0].worker for k in keys],
         [Jsonb(merged[k][0].detail) if merged[k][0].detail else None for k in keys],
         [merged[k][1] for k in keys]))).fetchall()
    inserted = {(r["order_id"], r["status"]) for r in rows if r["inserted"]}
    known = {r["order_id"] for r in rows}
    if len(known) < len({k[0] for k in keys}):
        unknown = [e for e in events if e.order_id not in known]
        if rejected is not None:
            rejected.extend(unknown)
        keys = [k for k in keys if k[0] in known]

    per_order: dict[str, dict[str, Any]] = defaultdict(dict)
    for (oid, status) in keys:
        ev = merged[(oid, status)][0]
        agg = per_order[oid]
        if RANK.get(status, -1) > agg.get("rank", -1):
            agg["rank"], agg["status"] = RANK.get(status, -1), status
        d = ev.detail or {}
        if "price" in d:
            agg["price"], agg["print_minutes"] = d["price"], d.get("print_minutes")
        if "reason" in d:
            agg["reason"] = d["reason"]
    oids = sorted(per_order)
    final = sorted(FINAL)
    await conn.execute(
        "UPDATE orders o SET"
        " status = CASE WHEN o.status = ANY(%s) OR o.status_rank >= v.rank THEN o.status"
        "  ELSE v.status END,"
        " status_rank = CASE WHEN o.status = ANY(%s) THEN o.status_rank"
        "  ELSE GREATEST(o.status_rank, v.rank) END,"
        " price = COALESCE(v.price, o.price),"
        " print_minutes = COALESCE(v.print_minutes, o.print_minutes),"
        # A replayed order that reaches done drops the reason it was dead-lettered for.
        " failure_reason = CASE WHEN o.status = ANY(%s) THEN o.failure_reason"
        "  WHEN v.status = 'done' AND o.status_rank < v.rank THEN NULL"
        "  ELSE COALESCE(v.reason, o.failure_reason) END, updated_at = now()"
        " FROM unnest(%s::uuid[], %s::text[], %s::smallint[], %s::numeric[], %s::numeric[],"
        " %s::text[]) AS v(order_id, status, rank, price, print_minutes, reason)"
        " WHERE o.order_id = v.order_id",
        (final, final, final, oids, [per_order[o]["status"] for o in oids],
         [per_order[o]["rank"] for o in oids],
         [per_order[o].get("price") for o in oids],
         [per_order[o].get("print_minutes") for o in oids],
         [per_order[o].get("reason") for o in oids]))
    return [{"order_id": k[0], "status": k[1], "at": merged[k][0].at.isoformat()}
            for k in keys if k in inserted]


async def get_order(pool: AsyncConnectionPool, order_id: str) -> dict[str, Any] | None:
    try:
        uuid.UUID(order_id)
    except ValueError:
        return None
    async with pool.connection() as conn:
        order = await (await conn.execute(
            "SELECT o.order_id::text, o.channel, o.partner_id, k.partner, o.tracking_token,"
            " o.status, o.price, o.currency, o.print_minutes, o.failure_reason, o.quantity,"
            " o.model, o.reference, o.created_at, o.updated_at"
            " FROM orders o LEFT JOIN api_keys k ON k.id = o.partner_id"
            " WHERE o.order_id = %s", (order_id,))).fetchone()
        if order is None:
            return None
        history = await (await conn.execute(
            "SELECT status, at FROM order_status_history WHERE order_id = %s ORDER BY at, id",
            (order_id,))).fetchall()
    # Statuses only move forward; clocks of different processes may not (the MES can stamp
    # "received" a hair before the relay got the broker's confirm for "published").
    history.sort(key=lambda h: (RANK.get(h["status"], 50), h["at"]))
    order["history"] = history
    return order


# --- API keys -----------------------------------------------------------------------------------
KEY_PREFIX = "ofk_"


async def create_api_key(pool: AsyncConnectionPool, partner: str,
                         rate_limit: str | None = None) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO api_keys (partner, key_prefix, key_hash, rate_limit)"
            " VALUES (%s, %s, %s, %s)", (partner, key[:10], hash_key(key), rate_limit))
    return key


async def list_api_keys(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    """Every key (never the key itself: its prefix), newest first, revoked ones included."""
    async with pool.connection() as conn:
        return list(await (await conn.execute(
            "SELECT partner, key_prefix, rate_limit, created_at, revoked_at FROM api_keys"
            " ORDER BY created_at DESC, id DESC")).fetchall())


async def revoke_api_key(pool: AsyncConnectionPool, key_prefix: str) -> int:
    """Revoke the active keys with this prefix; the number revoked. Ingress caches a lookup for
    at most 10 s, so a revoked key stops working within that."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = now()"
            " WHERE key_prefix = %s AND revoked_at IS NULL", (key_prefix,))
        return int(cur.rowcount or 0)


async def lookup_api_key(pool: AsyncConnectionPool, key: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT id, partner, key_prefix, rate_limit FROM api_keys"
            " WHERE key_hash = %s AND revoked_at IS NULL", (hash_key(key),))).fetchone()
