"""The MES dashboard: JSON endpoints for managers and operators, and the page that polls them.

``create_app()`` includes ``router``; ``events.load_plugins()`` calls ``register_hooks()`` in every
orderflow process so a new order or a status change invalidates the cached hot views wherever it
is committed. Reads go to ``app.state.read_db`` (the replica when one is configured).

The endpoints carry no customer emails or partner references, only what a production manager
needs, and answer only managers (``orderflow.api.auth``: ``ORDERFLOW_DASHBOARD_TOKEN``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from orderflow import cache as dcache
from orderflow import events
from orderflow.api import auth
from orderflow.api.schemas import ErrorBody
from orderflow.statuses import STATUSES, TERMINAL

NEWEST_LIMIT = 10
# The newest-orders view is a hot view: every cached variant is reloaded after each change. Only
# the first page in these sizes is cached, so query strings cannot multiply that work; other
# pages are read from the database each time.
HOT_PAGE_SIZES = frozenset({10, 20, 50, 100, 200})
THROUGHPUT_WINDOW_S = 15 * 60
THROUGHPUT_BUCKET_S = 30
_COLUMNS = ("order_id, channel, status, model->>'name' AS model, model->>'material' AS material, "
            "model->>'quality' AS quality, quantity, price, currency, created_at, updated_at")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if dcache._default is not None:  # only if this process ever used it
        await dcache._default.close()


router = APIRouter(tags=["dashboard"], lifespan=_lifespan)


def register_hooks() -> None:
    """Invalidate the hot views on the two triggers, in whichever process commits the change."""
    events.on_order_created(dcache.on_order_created)
    events.on_status_changed(dcache.on_status_changed)


def _cache(request: Request) -> dcache.DashboardCache:
    # app.state wins so tests and the benchmark can run a cache of their own beside the default.
    return getattr(request.app.state, "dashboard_cache", None) or dcache.default_cache()


def _body(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _respond(request: Request, name: str, key: str,
                   load: Callable[[], Awaitable[dict[str, Any]]], *, hot: bool) -> Response:
    # The cache holds the response body: a hit is sent as stored, never decoded and re-encoded.
    # The uncached path (cache off) serializes the same way, so the comparison is like for like.
    async def loader() -> bytes:
        return _body(await load())

    body, result = await _cache(request).get_or_load(name, key, loader, hot=hot)
    return _send(request, body, result)


def _send(request: Request, body: bytes, result: str) -> Response:
    # Conditional polling: a dashboard that already holds this body gets 304 and no body. The
    # validator changes with every load (the body carries ``generated_at``). ``no-cache``: the
    # browser asks each time, so freshness stays the server's (invalidation, list TTL).
    etag = f'W/"{zlib.crc32(body):08x}{len(body):x}"'
    headers = {"X-Cache": result, "ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` (a list of tags, or ``*``) with ``etag``."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == opaque
               for tag in (t.strip() for t in if_none_match.split(",")))


_JSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}}},
    401: {"model": ErrorBody, "description": "No manager credential"},
    403: {"model": ErrorBody, "description": "The dashboard is off (no token configured)"},
}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
        elif isinstance(v, Decimal):
            out[k] = float(v)
        elif k == "order_id":
            out[k] = str(v)
        else:
            out[k] = v
    return out


async def _fetch(conn: Any, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(query, params)
    return [_jsonable(dict(r)) for r in await cur.fetchall()]


async def _load_summary(request: Request) -> dict[str, Any]:
    async with request.app.state.read_db.connection() as conn:
        return await _summary(conn)


async def _summary(conn: Any) -> dict[str, Any]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in await _fetch(conn, "SELECT status, count(*) AS n FROM orders GROUP BY status", {}):
        counts[r["status"]] = r["n"]
    newest = await _fetch(conn, f"SELECT {_COLUMNS} FROM orders "
                          "ORDER BY created_at DESC LIMIT %(n)s", {"n": NEWEST_LIMIT})
    params = {"window": THROUGHPUT_WINDOW_S, "bucket": THROUGHPUT_BUCKET_S}
    bucket = ("to_timestamp(floor(extract(epoch FROM {col}) / %(bucket)s) * %(bucket)s)")
    accepted = await _fetch(
        conn, f"SELECT {bucket.format(col='created_at')} AS t, count(*) AS n FROM orders "
        "WHERE created_at >= now() - make_interval(secs => %(window)s) GROUP BY 1", params)
    finished = await _fetch(
        conn, f"SELECT {bucket.format(col='at')} AS t, status, count(*) AS n "
        "FROM order_status_history WHERE status IN ('done', 'failed') "
        "AND at >= now() - make_interval(secs => %(window)s) GROUP BY 1, 2", params)
    points: dict[str, dict[str, Any]] = {}
    for r in accepted:
        points.setdefault(r["t"], {"t": r["t"], "accepted": 0, "done": 0, "failed": 0})
        points[r["t"]]["accepted"] = r["n"]
    for r in finished:
        points.setdefault(r["t"], {"t": r["t"], "accepted": 0, "done": 0, "failed": 0})
        points[r["t"]][r["status"]] = r["n"]
    total = sum(counts.values())
    return {
        "counts": counts,
        "total": total,
        "in_flight": total - sum(counts[s] for s in TERMINAL),
        "newest": newest,
        "throughput": {"bucket_seconds": THROUGHPUT_BUCKET_S, "window_seconds":
                       THROUGHPUT_WINDOW_S, "points": sorted(points.values(),
                                                             key=lambda p: p["t"])},
        "generated_at": datetime.now().astimezone().isoformat(),
    }


@router.get("/api/v1/dashboard/summary", response_class=Response, responses=_JSON)
async def summary(request: Request) -> Response:
    """Counts by status, the newest orders and throughput (accepted/done/failed per 30 s).

    Cached until the next new order or status change.
    """
    if (refused := auth.refuse(request)) is not None:
        return refused
    return await _respond(request, "dashboard_summary", "summary",
                          lambda: _load_summary(request), hot=True)


@router.get("/api/v1/dashboard/orders", response_class=Response,
            responses={**_JSON, 422: {"model": ErrorBody, "description": "Unknown status"}})
async def orders(request: Request,
                 status: str | None = Query(None, description="One of the order statuses; "
                                            "omitted: the newest orders of any status."),
                 limit: int = Query(50, ge=1, le=200),
                 offset: int = Query(0, ge=0, le=10_000)) -> Response:
    """Orders of one status, newest first (cached 60 s), or the newest orders of any status
    (cached until the next new order or status change)."""
    if (refused := auth.refuse(request)) is not None:
        return refused
    if status is not None and status not in STATUSES:
        message = f"unknown status {status!r}; expected one of {', '.join(STATUSES)}"
        return JSONResponse({"error": "invalid_status", "message": message,
                             "request_id": request.scope.get("state", {}).get("request_id"),
                             "errors": [{"field": "status", "message": message}]},
                            status_code=422)
    params = {"status": status, "limit": limit, "offset": offset}

    async def load() -> dict[str, Any]:
        async with request.app.state.read_db.connection() as conn:
            return await _list(conn)

    async def _list(conn: Any) -> dict[str, Any]:
        if status is None:
            rows = await _fetch(conn, f"SELECT {_COLUMNS} FROM orders ORDER BY created_at "
                                "DESC LIMIT %(limit)s OFFSET %(offset)s", params)
            total = await _fetch(conn, "SELECT count(*) AS n FROM orders", {})
        else:
            rows = await _fetch(conn, f"SELECT {_COLUMNS} FROM orders WHERE status = "
                                "%(status)s ORDER BY created_at DESC LIMIT %(limit)s "
                                "OFFSET %(offset)s", params)
            total = await _fetch(conn, "SELECT count(*) AS n FROM orders "
                                 "WHERE status = %(status)s", params)
        return {**params, "total": total[0]["n"], "orders": rows,
                "generated_at": datetime.now().astimezone().isoformat()}

    if status is None:
        if offset or limit not in HOT_PAGE_SIZES:
            return _send(request, _body(await load()), "bypass")
        return await _respond(request, "dashboard_newest", f"newest:{limit}", load, hot=True)
    return await _respond(request, "dashboard_orders", f"{status}:{limit}:{offset}", load,
                          hot=False)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request, token: str | None = None) -> Response:
    """The page: plain HTML + JS polling the JSON endpoints (no CDN: works offline).

    ``?token=`` logs a manager in: a cookie for the page's polls, then the page without it."""
    if (refused := auth.refuse(request, query_token=token)) is not None:
        return refused
    if token is not None:
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        query = urlencode(rest)
        to = RedirectResponse("/dashboard" + (f"?{query}" if query else ""), status_code=303)
        to.set_cookie(auth.COOKIE, auth.session_value(auth.dashboard_token(request)),
                      httponly=True, samesite="strict", path="/",
                      secure=request.url.scheme == "https")
        return to
    html = resources.files("orderflow").joinpath("templates/dashboard.html").read_text("utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})
