"""The MES dashboard: JSON endpoints for managers and operators, and the page that polls them.

``create_app()`` includes ``router``; ``events.load_plugins()`` calls ``register_hooks()`` in every
orderflow process so a new order or a status change invalidates the cached hot views wherever it
is committed. Reads go to ``app.state.read_db`` (the replica when one is configured).

The endpoints carry no customer emails or partner references, only what a production manager
needs, and answer only managers (``orderflow.api.auth``: ``ORDERFLOW_DASHBOARD_TOKEN``).

A cache hit is answered before FastAPI's endpoint handling (``_CachedRoute``; ``HitsFirst``
also skips the routing): every dashboard polls every few seconds, and a hit is bytes already
encoded, so the per-request work around them — validating the query with pydantic, a Request,
exit stacks, a Response object, hashing the body for its ETag — was most of a hit's time in the
server. Everything else (a miss, a stale copy, a refusal, an unusual query string) goes through
FastAPI as before, and both ways send the same bytes and headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

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
View = tuple[str, str, bool]  # the cache's name (metric label), key, and whether it is hot
SUMMARY: View = ("dashboard_summary", "summary", True)
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


async def _respond(request: Request, view: View,
                   load: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    # The cache holds the response body: a hit is sent as stored, never decoded and re-encoded.
    # The uncached path (cache off) serializes the same way, so the comparison is like for like.
    async def loader() -> bytes:
        return _body(await load())

    name, key, hot = view
    body, result = await _cache(request).get_or_load(name, key, loader, hot=hot)
    return _send(request, body, result)


def _send(request: Request, body: bytes, result: str) -> Response:
    # Conditional polling: a dashboard that already holds this body gets 304 and no body. The
    # validator changes with every load (the body carries ``generated_at``). ``no-cache``: the
    # browser asks each time, so freshness stays the server's (invalidation, list TTL).
    # _CachedRoute sends the same headers for a hit: keep the two in step.
    etag = dcache.etag_of(body)
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


# --- hits, before FastAPI ----------------------------------------------------------------------
def _orders_view(status: str | None, limit: int, offset: int) -> View | None:
    """How a page of ``/orders`` is cached; None: read from the database each time."""
    if status is None:
        if offset or limit not in HOT_PAGE_SIZES:
            return None
        return "dashboard_newest", f"newest:{limit}", True
    return "dashboard_orders", f"{status}:{limit}:{offset}", False


def _plain_query(query_string: bytes) -> dict[str, str] | None:
    """``name=value`` pairs when the query string is plain (nothing escaped, no name twice),
    else None: such a request goes through FastAPI, whose parsing and validation decide."""
    if not query_string:
        return {}
    if b"%" in query_string or b"+" in query_string:
        return None
    out: dict[str, str] = {}
    for part in query_string.decode("latin-1").split("&"):
        if not part:
            continue  # as parse_qsl: "a=1&&b=2"
        name, eq, value = part.partition("=")
        if not eq or name in out:
            return None
        out[name] = value
    return out


def _number(value: str | None, default: int, low: int, high: int) -> int | None:
    """A query parameter FastAPI would accept as an int in [low, high]; None: let it decide."""
    if value is None:
        return default
    # Plain digits only, and short: int() refuses strings of over 4,300 digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        return None
    n = int(value)
    return n if low <= n <= high else None


def _summary_hit_view(query: dict[str, str]) -> View | None:
    return SUMMARY  # no parameters: any query string reads the same summary


def _orders_hit_view(query: dict[str, str]) -> View | None:
    # The bounds are the endpoint's Query() bounds below.
    limit, offset = _number(query.get("limit"), 50, 1, 200), _number(query.get("offset"), 0, 0,
                                                                     10_000)
    status = query.get("status")
    if limit is None or offset is None or (status is not None and status not in STATUSES):
        return None
    return _orders_view(status, limit, offset)


async def _send_hit(request: Request, send: Send, entry: dcache.Entry) -> None:
    """What ``_send(request, entry.body, "hit")`` sends, header for header, without a Response."""
    etag = entry.etag.encode("latin-1")
    headers = [(b"x-cache", b"hit"), (b"etag", etag), (b"cache-control", b"no-cache")]
    if _matches(request.headers.get("if-none-match"), entry.etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [(b"content-length", b"%d" % len(entry.body)),
                (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": entry.body})


async def answer_hit(scope: Scope, send: Send, path: str) -> bool:
    """Send the stored body if this request is a manager's GET of the dashboard JSON at
    ``path`` (the route's path) and a hit on this process's copy; False: nothing was sent."""
    if scope["method"] != "GET":
        return False
    view = _hit_view(path, scope.get("query_string", b""))
    if view is None:
        return False
    request = Request(scope)
    token = auth.dashboard_token(request)
    if not token or not auth.presented_token(request, token):
        return False  # FastAPI's path answers 401/403, as ever
    entry = _cache(request).peek(view[0], view[1], hot=view[2])
    if entry is None:
        return False
    await _send_hit(request, send, entry)
    return True


class _CachedRoute(APIRoute):
    """A dashboard JSON route that answers a manager's cache hit itself (see the module doc).

    It runs after routing and every middleware (obskit's span, metrics, access line and
    ``Server-Timing`` included); only FastAPI's handling of the endpoint is skipped.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        _ROUTES[path] = self

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HitsFirst already looked (and found no hit to answer): not twice per request.
        if scope.get(_PEEKED) or not await answer_hit(scope, send, self.path):
            await super().handle(scope, receive, send)


class HitsFirst:
    """ASGI middleware: answer dashboard cache hits before routing.

    ``_CachedRoute`` answers them once FastAPI has routed the request, and routing through
    the app's routers (FastAPI 0.16x), its exception and exit-stack layers are most of what is
    left of a hit's time: in the server (``Server-Timing`` p50, one quiet reader, ``orderflow
    api``) 0.08 ms at the route, 0.04 ms here. Added innermost in the app factory
    (``app.add_middleware(dashboard.HitsFirst)`` before any other ``add_middleware``), the
    middlewares outside it still see every request (request id, client IP on the access line,
    body limit). It names the route on the scope as the router would, so the span, the metrics
    and the access line carry the same route.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = _ROUTES.get(scope["path"])
            if route is not None:
                scope["route"] = route
                if await answer_hit(scope, send, route.path):
                    return
                del scope["route"]  # the router decides, as for any request
                scope[_PEEKED] = True
        await self.app(scope, receive, send)


# Set on the scope by HitsFirst when it looked for a hit and found none to answer.
_PEEKED = "orderflow.dashboard.peeked"
# The dashboard routes that answer hits themselves, by path (HitsFirst finds them here).
_ROUTES: dict[str, _CachedRoute] = {}
# The view each (route, query string) reads, remembered: dashboards poll the same few URLs.
# Bounded, as query strings are the client's.
_VIEWS: dict[tuple[str, bytes], View | None] = {}
_MAX_VIEWS = 256


def _hit_view(path: str, query_string: bytes) -> View | None:
    """The view a GET of ``path?query_string`` reads, None: not one ``_CachedRoute`` answers."""
    key = (path, query_string)
    if key in _VIEWS:
        return _VIEWS[key]
    read = _HIT_VIEWS.get(path)
    query = _plain_query(query_string) if read is not None else None
    view = read(query) if read is not None and query is not None else None
    if len(_VIEWS) >= _MAX_VIEWS:
        _VIEWS.clear()
    _VIEWS[key] = view
    return view


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


async def summary(request: Request) -> Response:
    """Counts by status, the newest orders and throughput (accepted/done/failed per 30 s).

    Cached until the next new order or status change.
    """
    if (refused := auth.refuse(request)) is not None:
        return refused
    return await _respond(request, SUMMARY, lambda: _load_summary(request))


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

    view = _orders_view(status, limit, offset)
    if view is None:
        return _send(request, _body(await load()), "bypass")
    return await _respond(request, view, load)


# Which routes answer hits themselves, and how they read their query (by route path).
_HIT_VIEWS: dict[str, Callable[[dict[str, str]], View | None]] = {
    "/api/v1/dashboard/summary": _summary_hit_view,
    "/api/v1/dashboard/orders": _orders_hit_view,
}
# add_api_route: the decorators take no route class of their own.
router.add_api_route("/api/v1/dashboard/summary", summary, methods=["GET"],
                     response_class=Response, responses=_JSON, route_class_override=_CachedRoute)
router.add_api_route("/api/v1/dashboard/orders", orders, methods=["GET"],
                     response_class=Response, route_class_override=_CachedRoute,
                     responses={**_JSON, 422: {"model": ErrorBody,
                                               "description": "Unknown status"}})


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
