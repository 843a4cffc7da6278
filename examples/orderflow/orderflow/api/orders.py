"""Order creation (shop and open API) and order status (JSON and a page for customers)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from opentelemetry import trace

import obskit
from orderflow import crm, events
from orderflow.api import schemas
from orderflow.api.ratelimit import Verdict

router = APIRouter()
_log = obskit.get_logger("orderflow.api")

IDEMPOTENCY_KEY_MAX = 200


def error(status: int, code: str, message: str, request: Request,
          headers: dict[str, str] | None = None,
          errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message,
                            "request_id": request.state.request_id}
    if errors:
        body["errors"] = errors
    request.state.access["outcome"] = code
    return JSONResponse(body, status_code=status, headers=headers)


async def _limit(request: Request, channel: str, scope: str, identity: str,
                 limits_text: str, headers: dict[str, str]) -> JSONResponse | None:
    verdict: Verdict | None = await request.app.state.limiter.check(
        channel, scope, identity, limits_text)
    if verdict is None:
        return None
    headers.update(verdict.headers())
    if verdict.allowed:
        return None
    request.state.access["rate_limited"] = scope
    _log.warning("rate limited", channel=channel, scope=scope, limit=verdict.policy,
                 **({"partner": request.state.access["partner"]}
                    if "partner" in request.state.access else {}))
    return error(429, "rate_limited",
                 f"too many requests for this {'API key' if scope == 'api_key' else 'client'};"
                 f" retry after {verdict.reset_seconds}s", request, headers=headers)


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


async def _accept(request: Request, order: schemas.OrderIn, channel: str,
                  partner: dict[str, Any] | None, idem_key: str | None,
                  headers: dict[str, str]) -> tuple[crm.NewOrder | None, JSONResponse | None]:
    if idem_key is not None and len(idem_key) > IDEMPOTENCY_KEY_MAX:
        return None, error(400, "invalid_idempotency_key",
                           f"Idempotency-Key must be at most {IDEMPOTENCY_KEY_MAX} characters",
                           request, headers=headers)
    span = trace.get_current_span()
    ctx = span.get_span_context()
    trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
    body = order.model_dump(mode="json")
    try:
        new = await crm.create_order(
            request.app.state.db, channel=channel, body=body,
            partner_id=partner["id"] if partner else None,
            partner=partner["partner"] if partner else None,
            idempotency_key=idem_key, request_id=request.state.request_id, trace_id=trace_id)
    except crm.IdempotencyConflict:
        # The order it names is not in the answer: the key is the only thing the caller proved.
        return None, error(422, "idempotency_key_reused",
                           "this Idempotency-Key was already used with a different request "
                           "body; use a new key for a new order", request, headers=headers)
    access = request.state.access
    access.update(order_id=new.order_id, outcome="accepted" if new.created else "replayed")
    with obskit.order_context(new.order_id, channel):
        if new.created:
            accepted_at = new.accepted_at.timestamp()
            obskit.record_stage("stored", accepted_at=accepted_at)
            obskit.record_stage("accepted", accepted_at=accepted_at)
            await events.order_created([{"order_id": new.order_id, "channel": channel,
                                         "status": "accepted",
                                         "at": new.accepted_at.isoformat()}])
        else:
            headers["Idempotent-Replayed"] = "true"
            _log.info("idempotent replay", idempotency_key=idem_key)
    return new, None


def _url(request: Request, path: str) -> str:
    base = request.app.state.settings.public_url
    return f"{base}{path}"


class Refused(Exception):
    """Raised by the guards below; the app's handler sends ``response`` as is."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


@dataclass
class Admission:
    """What a guard learned: the rate-limit headers to return and, for B2B, the partner."""

    headers: dict[str, str]
    partner: dict[str, Any] | None = None


# Guards are dependencies so they run *before* the body is validated: an invalid request is
# rate-limited and authenticated like any other (no free flood of malformed requests).
async def shop_guard(request: Request) -> Admission:
    request.state.access["channel"] = "b2c"
    headers: dict[str, str] = {}
    refused = await _limit(request, "b2c", "ip", request.state.client_ip,
                           request.app.state.settings.rate_limit_b2c, headers)
    if refused is not None:
        raise Refused(refused)
    return Admission(headers)


async def partner_guard(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> Admission:
    request.state.access["channel"] = "b2b"
    settings = request.app.state.settings
    headers: dict[str, str] = {}
    refused = await _limit(request, "b2b", "ip", request.state.client_ip,
                           settings.rate_limit_b2b_ip, headers)
    if refused is not None:
        raise Refused(refused)
    partner = await _partner(request, x_api_key)
    if partner is None:
        raise Refused(error(401, "unauthorized",
                            "missing or unknown API key: send it in the X-API-Key header",
                            request, headers={**headers, "WWW-Authenticate": "ApiKey"}))
    request.state.access.update(partner=partner["partner"], key_prefix=partner["key_prefix"])
    refused = await _limit(request, "b2b", "api_key", str(partner["id"]),
                           partner["rate_limit"] or settings.rate_limit_b2b, headers)
    if refused is not None:
        raise Refused(refused)
    return Admission(headers, partner)


@router.post("/api/v1/shop/orders", status_code=202, tags=["shop (B2C)"],
             response_model=schemas.ShopOrderAccepted,
             responses=schemas.errors(400, 413, 422, 429))
async def create_shop_order(
    request: Request, order: schemas.OrderIn,
    admission: Annotated[Admission, Depends(shop_guard)],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Place a web-shop order. 202 once it is durably stored; poll ``status_url``.

    Send an ``Idempotency-Key`` (e.g. a UUID per checkout) to retry safely: the same key and
    body return the same order."""
    headers = admission.headers
    new, err = await _accept(request, order, "b2c", None, _idempotency_key(idempotency_key),
                             headers)
    if err is not None:
        return err
    assert new is not None
    body = {"order_id": new.order_id,
            "status_url": _url(request, f"/api/v1/orders/{new.order_id}?token="
                                        f"{new.tracking_token}"),
            "tracking_token": new.tracking_token,
            "tracking_url": _url(request, f"/track/{new.order_id}?token={new.tracking_token}")}
    return JSONResponse(body, status_code=202, headers=headers)


async def _partner(request: Request, api_key: str | None) -> dict[str, Any] | None:
    if not api_key:
        return None
    cache: dict[str, tuple[float, dict[str, Any] | None]] = request.app.state.key_cache
    hit = cache.get(api_key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    partner = await crm.lookup_api_key(request.app.state.db, api_key)
    # A short cache: a revoked key stops working within 10 s, and a flood of requests with one
    # key does not become a flood of queries.
    if len(cache) > 10_000:
        cache.clear()
    cache[api_key] = (now + 10.0, partner)
    return partner


@router.post("/api/v1/partner/orders", status_code=202, tags=["open API (B2B)"],
             response_model=schemas.PartnerOrderAccepted,
             responses=schemas.errors(400, 401, 413, 422, 429))
async def create_partner_order(
    request: Request, order: schemas.OrderIn,
    admission: Annotated[Admission, Depends(partner_guard)],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Place an order through the open API (header ``X-API-Key``). Retry with the same
    ``Idempotency-Key`` after a timeout: you get the same order, never a second one."""
    headers = admission.headers
    assert admission.partner is not None
    new, err = await _accept(request, order, "b2b", admission.partner,
                             _idempotency_key(idempotency_key), headers)
    if err is not None:
        return err
    assert new is not None
    body = {"order_id": new.order_id, "status_url": _url(request, f"/api/v1/orders/{new.order_id}")}
    return JSONResponse(body, status_code=202, headers=headers)


async def _authorised_order(request: Request, order_id: str, token: str | None,
                            api_key: str | None) -> dict[str, Any] | None:
    """The order if the caller owns it; None otherwise (the caller answers 404 either way)."""
    state = request.app.state
    order = await crm.get_order(state.read_db, order_id)
    if order is None and state.read_db is not state.db:
        order = await crm.get_order(state.db, order_id)  # a lagging replica: read your writes
    if order is None:
        return None
    if api_key:
        partner = await _partner(request, api_key)
        # The partner owns its orders, whichever of its keys placed them (key rotation).
        if partner is not None and order["partner"] == partner["partner"]:
            request.state.access["partner"] = partner["partner"]
            return order
        return None
    if token and order["channel"] == "b2c" and hmac.compare_digest(
            token.encode(), order["tracking_token"].encode()):
        return order
    return None


def _status_body(order: dict[str, Any]) -> dict[str, Any]:
    def at(v: datetime) -> str:
        return v.isoformat()

    return {
        "order_id": order["order_id"], "channel": order["channel"], "status": order["status"],
        "price": float(order["price"]) if order["price"] is not None else None,
        "currency": order["currency"],
        "print_minutes": (float(order["print_minutes"]) if order["print_minutes"] is not None
                          else None),
        "failure_reason": order["failure_reason"], "reference": order["reference"],
        "history": [{"status": h["status"], "at": at(h["at"])} for h in order["history"]],
    }


@router.get("/api/v1/orders/{order_id}", tags=["order status"],
            response_model=schemas.OrderStatus,
            responses=schemas.errors(404, 429))
async def order_status(
    request: Request, order_id: str,
    token: Annotated[str | None, Query(description="B2C: the tracking_token")] = None,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> Any:
    """An order's status and history, for its owner: the shop customer (``?token=``) or the
    partner that placed it (``X-API-Key``). Anyone else gets 404."""
    request.state.access["order_id"] = order_id
    headers: dict[str, str] = {}
    refused = await _status_limit(request, headers)
    if refused is not None:
        return refused
    order = await _authorised_order(request, order_id, token, x_api_key)
    if order is None:
        return error(404, "not_found", "no such order", request, headers=headers)
    request.state.access["outcome"] = "ok"
    return JSONResponse(_status_body(order), headers=headers)


async def _status_limit(request: Request, headers: dict[str, str]) -> JSONResponse | None:
    """Status reads are limited per client IP (``ORDERFLOW_RATE_LIMIT_STATUS``)."""
    return await _limit(request, "status", "ip", request.state.client_ip,
                        request.app.state.settings.rate_limit_status, headers)


@router.get("/track/{order_id}", response_class=HTMLResponse, tags=["order status"],
            responses={404: {"description": "A page saying the order was not found",
                             "content": {"text/html": {}}}, **schemas.errors(429)})
async def status_page(request: Request, order_id: str,
                      token: Annotated[str | None, Query()] = None) -> Any:
    """A status page for shop customers (the link in the order confirmation)."""
    request.state.access["order_id"] = order_id
    headers: dict[str, str] = {}
    refused = await _status_limit(request, headers)
    if refused is not None:
        return refused
    order = await _authorised_order(request, order_id, token, None)
    templates = request.app.state.templates
    if order is None:
        request.state.access["outcome"] = "not_found"
        return HTMLResponse(templates.get_template("not_found.html").render(), status_code=404)
    body = _status_body(order)
    return HTMLResponse(templates.get_template("status.html").render(order=body))
