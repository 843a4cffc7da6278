"""Hardened ingress (issue 16): fuzzed requests, body size, forwarded client IPs, idempotency
scopes, partner identity across key rotation, and the managers-only dashboard."""

from __future__ import annotations

import base64
import concurrent.futures
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import api_key, new_ip, order_body, sql
from fastapi import FastAPI

from orderflow import cache as dcache
from orderflow.api import dashboard
from orderflow.api.middleware import client_ip
from orderflow.config import Settings
from orderflow.db import open_pool

MANAGER_TOKEN = "test-manager-token"  # conftest's ORDERFLOW_DASHBOARD_TOKEN
MANAGER = {"Authorization": f"Bearer {MANAGER_TOKEN}"}


def _count(dsn: str) -> int:
    return int(sql(dsn, "SELECT count(*) FROM orders")[0][0])


# --- 8. fuzzing: every request gets a documented answer, never a 5xx -------------------------
FUZZ_EXAMPLES = 30  # per operation and mode; the whole run stays well under a minute


def _send(case: Any, base: str, headers: dict[str, str]) -> httpx.Response:
    """Send a schemathesis case with httpx. (Its own ``case.call`` uses ``requests``, which the
    ``urllib3`` that ``niquests`` installs over the real one breaks in this environment.)"""
    from hypothesis import reject

    kw = case.as_transport_kwargs(base_url=base, headers=headers)
    sent = {str(k): str(v) for k, v in (kw.get("headers") or {}).items()}
    if kw.get("cookies"):
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in kw["cookies"].items())
    body: dict[str, Any] = {}
    if "json" in kw:
        body["json"] = kw["json"]
    elif isinstance(kw.get("data"), (bytes, str)):
        body["content"] = kw["data"]
    elif kw.get("data") is not None:
        body["data"] = kw["data"]
    try:
        return httpx.request(kw["method"], kw["url"], params=kw.get("params"), headers=sent,
                             timeout=10, **body)
    except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
        reject()  # not a request any HTTP client could send
        raise


def test_fuzzed_requests_get_documented_answers_never_5xx(stack) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    base, dsn = stack["base"], stack["dsn"]
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    # A real key and the managers' token, so bodies reach validation and the dashboard its
    # queries (without them every case would stop at 401).
    headers = {"X-API-Key": api_key(dsn, "fuzzer"), **MANAGER}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    failures: list[str] = []
    started = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 6, [op.label for op in operations]
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                case.validate_response(_send(case, base, headers), checks=checks)

            try:
                run()
            except Unsatisfiable:  # nothing to negate (no parameters, no body)
                continue
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{op.label} [{mode}]: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 60


def test_framework_errors_use_the_error_shape(stack) -> None:
    base = stack["base"]
    cases = [
        ("GET", "/no/such/path", {}, 404),
        ("PUT", "/api/v1/shop/orders", {}, 405),
        # not UTF-8: not even text, so FastAPI cannot parse it (its own 400)
        ("POST", "/api/v1/shop/orders", {"content": b'{"a": "\xc3\x28"}', "headers": {
            "Content-Type": "application/json", "X-Forwarded-For": new_ip()}}, 400),
    ]
    for method, path, kw, status in cases:
        r = httpx.request(method, base + path, **kw)
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert body["error"] and body["message"], body
        assert body["request_id"] == r.headers["X-Request-ID"]
        assert "detail" not in body


# --- 9. body size ------------------------------------------------------------------------------
def test_oversized_body_gets_413_before_parsing(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    limit = Settings().max_body_bytes
    before = _count(dsn)
    big = order_body(reference="x" * (limit + 1000))
    r = httpx.post(base + "/api/v1/shop/orders", json=big,
                   headers={"X-Forwarded-For": new_ip()})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert r.json()["request_id"] == r.headers["X-Request-ID"]

    # Chunked, no Content-Length: counted while it arrives (and invalid JSON: never parsed).
    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b"{" * 4096

    r = httpx.post(base + "/api/v1/shop/orders", content=chunks(),
                   headers={"Content-Type": "application/json", "X-Forwarded-For": new_ip()})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text
    # A body within the limit is read and validated as before.
    r = httpx.post(base + "/api/v1/shop/orders", json=order_body(reference="x" * 1000),
                   headers={"X-Forwarded-For": new_ip()})
    assert r.status_code == 422 and "reference" in r.text
    assert _count(dsn) == before


# --- 10. client IP behind proxies ---------------------------------------------------------
def _scope(peer: str, *xff: str) -> dict[str, object]:
    return {"client": (peer, 5000),
            "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}


def test_client_ip_is_the_rightmost_untrusted_hop() -> None:
    proxies = frozenset({"127.0.0.1", "10.9.0.0/16"})
    # A direct client: its X-Forwarded-For is ignored.
    assert client_ip(_scope("203.0.113.7", "1.1.1.1"), proxies) == "203.0.113.7"
    # Through the proxy: the client's own claim (left) is not believed.
    assert client_ip(_scope("127.0.0.1", "1.1.1.1, 198.51.100.4"), proxies) == "198.51.100.4"
    # A proxy that appends a header of its own instead of extending the client's.
    assert client_ip(_scope("127.0.0.1", "1.1.1.1", "198.51.100.4"), proxies) == "198.51.100.4"
    # Two proxies (one by network): skipped right to left.
    assert client_ip(_scope("127.0.0.1", "1.1.1.1, 198.51.100.4", "10.9.3.3"),
                     proxies) == "198.51.100.4"
    # Garbage where the client should be: the proxy itself, not a bucket chosen by the client.
    assert client_ip(_scope("127.0.0.1", "1.1.1.1, not-an-ip"), proxies) == "127.0.0.1"
    assert client_ip(_scope("127.0.0.1"), proxies) == "127.0.0.1"


def test_forged_forwarded_for_does_not_escape_the_rate_limit(stack) -> None:
    base = stack["base"]
    real = new_ip()

    def post(_: int) -> int:
        # The client forges a header; the (trusted) proxy appends the real address in another.
        headers = httpx.Headers([("X-Forwarded-For", new_ip()), ("X-Forwarded-For", real)])
        return httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                          headers=headers).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(20)))  # the test env's shop limit: 10/second per IP
    assert codes.count(429) >= 5, codes


# --- 11. shop idempotency keys are per customer -------------------------------------------
def test_another_customers_idempotency_key_finds_nothing(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    idem = "checkout-1"  # a guessable key, as a careless shop front end might send
    headers = {"Idempotency-Key": idem, "X-Forwarded-For": new_ip()}
    ada = httpx.post(base + "/api/v1/shop/orders", json=order_body(customer_email=(
        email := f"ada-{uuid.uuid4().hex[:6]}@example.com")), headers=headers)
    assert ada.status_code == 202
    first = ada.json()
    # Another customer with the same key (same or other body): an order of their own.
    for body in (order_body(customer_email="eve@example.com"),
                 order_body(customer_email="eve@example.com", quantity=7)):
        eve = httpx.post(base + "/api/v1/shop/orders", json=body,
                         headers={**headers, "X-Forwarded-For": new_ip()})
        assert eve.status_code in (202, 422), eve.text
        assert first["order_id"] not in eve.text and first["tracking_token"] not in eve.text
    # The customer's own retry still finds the order; the same key with another body is
    # refused without naming it.
    again = httpx.post(base + "/api/v1/shop/orders", json=order_body(customer_email=email),
                       headers={**headers, "X-Forwarded-For": new_ip()})
    assert again.status_code == 202 and again.json() == first
    other = httpx.post(base + "/api/v1/shop/orders",
                       json=order_body(customer_email=email, quantity=9),
                       headers={**headers, "X-Forwarded-For": new_ip()})
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert first["order_id"] not in other.text
    assert sql(dsn, "SELECT count(*) FROM orders WHERE order_id = %s",
               first["order_id"]) == [(1,)]


# --- 12. partners own their orders, not their keys -------------------------------------------
def test_partner_keeps_its_orders_after_key_rotation(stack) -> None:
    base, dsn, env = stack["base"], stack["dsn"], stack["env"]
    partner = f"rotating-{uuid.uuid4().hex[:6]}"
    old_key = api_key(dsn, partner)
    idem = str(uuid.uuid4())
    placed = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                        headers={"X-API-Key": old_key, "Idempotency-Key": idem})
    assert placed.status_code == 202
    order_id = placed.json()["order_id"]

    new_key = api_key(dsn, partner)
    revoked = subprocess.run([sys.executable, "-P", "-m", "orderflow.cli", "apikey", "revoke",
                              old_key[:10]], env=env, capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr

    status = httpx.get(f"{base}/api/v1/orders/{order_id}", headers={"X-API-Key": new_key})
    assert status.status_code == 200 and status.json()["order_id"] == order_id
    retry = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                       headers={"X-API-Key": new_key, "Idempotency-Key": idem})
    assert retry.status_code == 202 and retry.json()["order_id"] == order_id
    assert retry.headers.get("Idempotent-Replayed") == "true"
    # Another partner neither sees it nor replays it.
    stranger = api_key(dsn, f"stranger-{uuid.uuid4().hex[:6]}")
    assert httpx.get(f"{base}/api/v1/orders/{order_id}",
                     headers={"X-API-Key": stranger}).status_code == 404
    theirs = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                        headers={"X-API-Key": stranger, "Idempotency-Key": idem})
    assert theirs.status_code == 202 and theirs.json()["order_id"] != order_id


# --- 13. the dashboard is for managers ---------------------------------------------------------
def test_dashboard_refuses_anonymous_callers(stack) -> None:
    base = stack["base"]
    for path in ("/dashboard", "/api/v1/dashboard/summary", "/api/v1/dashboard/orders"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.get(base + path, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"] == "unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert httpx.get(base + path, headers=MANAGER).status_code == 200
        basic = base64.b64encode(f"manager:{MANAGER_TOKEN}".encode()).decode()
        assert httpx.get(base + path, headers={"Authorization": f"Basic {basic}"}
                         ).status_code == 200
    # The managers' link: a cookie for the page's polls, then the page without the token.
    with httpx.Client(base_url=base, follow_redirects=True) as browser:
        r = browser.get(f"/dashboard?interval=500&token={MANAGER_TOKEN}")
        assert r.status_code == 200 and r.url.query == b"interval=500"
        assert r.history[0].status_code == 303
        assert MANAGER_TOKEN not in r.history[0].headers["set-cookie"]
        assert browser.get("/api/v1/dashboard/summary").status_code == 200
    assert httpx.get(base + f"/dashboard?token=wrong-{MANAGER_TOKEN}").status_code == 401


async def test_dashboard_without_a_token_is_off() -> None:
    app = FastAPI()
    app.include_router(dashboard.router)
    app.state.settings = Settings(dashboard_token="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dash") as c:
        for path in ("/dashboard", "/api/v1/dashboard/summary"):
            r = await c.get(path, headers=MANAGER)
            assert r.status_code == 403 and r.json()["error"] == "dashboard_disabled"


# cashews 7.6 closes its redis client with the deprecated close()
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_query_strings_cannot_multiply_the_work_of_an_invalidation(env) -> None:
    pool = await open_pool(env["ORDERFLOW_DATABASE_URL"], max_size=2, name="hardening-test")
    cache = dcache.DashboardCache(env["ORDERFLOW_REDIS_URL"],
                                  prefix=f"hardening-{uuid.uuid4().hex[:8]}", min_interval=0.0)
    app = FastAPI()
    app.include_router(dashboard.router)
    app.state.db = app.state.read_db = pool
    app.state.settings = Settings(dashboard_token=MANAGER_TOKEN)
    app.state.dashboard_cache = cache
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://dash", headers=MANAGER) as c:
            for limit in range(1, 41):
                for offset in (0, 1):
                    r = await c.get(f"/api/v1/dashboard/orders?limit={limit}&offset={offset}")
                    assert r.status_code == 200
            # Unknown parameters are ignored: no new cache entries.
            await c.get("/api/v1/dashboard/summary")
            for i in range(5):
                r = await c.get(f"/api/v1/dashboard/summary?nonce={i}")
                assert r.headers["x-cache"] == "hit"
        # Every hot entry is reloaded after each change (cache._reloads): they stay few.
        hot = [e for e in cache._local.values() if e.loader is not None]
        assert len(hot) <= len(dashboard.HOT_PAGE_SIZES) + 1, len(hot)
    finally:
        await cache.close()
        await pool.close()

