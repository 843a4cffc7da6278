"""Ingress contracts: validation, API keys, Idempotency-Key, rate limits, request ids, health."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import uuid

import httpx
from conftest import Procs, _free_port, _ready, api_key, new_ip, order_body, sql, wait_for


def _count(dsn: str) -> int:
    return int(sql(dsn, "SELECT count(*) FROM orders")[0][0])


def test_invalid_orders_get_a_clear_4xx_and_store_nothing(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    key = api_key(dsn, "validator")
    before = _count(dsn)
    cases = [
        (order_body(quantity=0), "quantity"),
        (order_body(quantity=1001), "quantity"),
        (order_body(quantity="3"), "quantity"),
        (order_body(customer_email="nope"), "customer_email"),
        (order_body(model={"name": "a", "volume_cm3": 0, "material": "PLA",
                           "quality": "fine"}), "model.volume_cm3"),
        (order_body(model={"name": "a", "volume_cm3": 5, "material": "GOLD",
                           "quality": "fine"}), "model.material"),
        (order_body(model={"name": "a", "volume_cm3": 5, "material": "PLA",
                           "quality": "ultra"}), "model.quality"),
        ({"customer_email": "a@b.co", "quantity": 1}, "model"),
        (order_body(colour="red"), "colour"),
    ]
    for body, field in cases:
        for path, headers in (("/api/v1/shop/orders", {"X-Forwarded-For": new_ip()}),
                              ("/api/v1/partner/orders", {"X-API-Key": key})):
            r = httpx.post(base + path, json=body, headers=headers)
            assert r.status_code == 422, (body, r.text)
            err = r.json()
            assert err["error"] == "invalid_request"
            assert field in [e["field"] for e in err["errors"]], err
            assert all(e["message"] for e in err["errors"])
            assert err["request_id"] == r.headers["X-Request-ID"]
    r = httpx.post(base + "/api/v1/shop/orders", content=b"{not json",
                   headers={"Content-Type": "application/json", "X-Forwarded-For": new_ip()})
    assert r.status_code == 422
    assert _count(dsn) == before


def test_partner_orders_need_a_known_api_key(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    before = _count(dsn)
    for headers in ({}, {"X-API-Key": "ofk_unknown"}, {"X-API-Key": ""}):
        r = httpx.post(base + "/api/v1/partner/orders", json=order_body(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"
    # An invalid body without a key is still 401: authentication comes first.
    r = httpx.post(base + "/api/v1/partner/orders", json={"quantity": 0})
    assert r.status_code == 401
    assert _count(dsn) == before


def test_same_idempotency_key_gives_one_order(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    key = api_key(dsn, "retrying-partner")
    idem = str(uuid.uuid4())
    headers = {"X-API-Key": key, "Idempotency-Key": idem}
    first = httpx.post(base + "/api/v1/partner/orders", json=order_body(), headers=headers)
    second = httpx.post(base + "/api/v1/partner/orders", json=order_body(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert sql(dsn, "SELECT count(*) FROM orders WHERE idempotency_key = %s", idem) == [(1,)]

    # Same key, different body: refused, not silently a second order.
    r = httpx.post(base + "/api/v1/partner/orders", json=order_body(quantity=9), headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "idempotency_key_reused"

    # Concurrent retries of one shop checkout: still one order.
    shop_key = str(uuid.uuid4())

    def post(_: int) -> httpx.Response:
        return httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                          headers={"Idempotency-Key": shop_key, "X-Forwarded-For": new_ip()})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(post, range(6)))
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["order_id"] for r in results}) == 1
    assert sql(dsn, "SELECT count(*) FROM orders WHERE idempotency_key = %s",
               shop_key) == [(1,)]
    # The same key from another partner is a different order (keys are per client).
    other = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                       headers={"X-API-Key": api_key(dsn, "other"), "Idempotency-Key": idem})
    assert other.status_code == 202 and other.json()["order_id"] != first.json()["order_id"]


def _rate_limited_total(base: str, channel: str, scope: str) -> float:
    text = httpx.get(base + "/metrics").text
    m = re.search(rf'^orderflow_rate_limited_total\{{channel="{channel}",scope="{scope}"\}} '
                  r"(\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_over_the_partner_rate_limit_gets_429_and_is_counted(stack) -> None:
    base, dsn = stack["base"], stack["dsn"]
    key = api_key(dsn, "chatty", rate_limit="3/minute")
    before = _rate_limited_total(base, "b2b", "api_key")
    codes = []
    for _ in range(5):
        r = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                       headers={"X-API-Key": key})
        codes.append(r.status_code)
    assert codes == [202, 202, 202, 429, 429]
    assert r.json()["error"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Remaining"] == "0"
    assert _rate_limited_total(base, "b2b", "api_key") == before + 2
    # Another partner is not affected: limits are per key.
    ok = httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                    headers={"X-API-Key": api_key(dsn, "quiet")})
    assert ok.status_code == 202 and int(ok.headers["RateLimit-Remaining"]) > 0


def test_shop_rate_limit_is_per_client_ip(stack) -> None:
    base = stack["base"]
    ip = new_ip()
    before = _rate_limited_total(base, "b2c", "ip")

    def post(_: int) -> int:
        return httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                          headers={"X-Forwarded-For": ip}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(16)))  # limit in the test env: 10/second
    assert codes.count(429) >= 5 and codes.count(202) <= 10
    assert _rate_limited_total(base, "b2c", "ip") >= before + codes.count(429)
    # A different client is not limited.
    assert post(0) == 429  # the same IP still is
    r = httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                   headers={"X-Forwarded-For": new_ip()})
    assert r.status_code == 202


def test_status_reads_are_rate_limited_per_client_ip(stack) -> None:
    # An ingress of its own with a low status limit (the session's is high for other tests).
    procs = Procs(stack["env"])
    port = _free_port()
    procs.start("api", "--port", str(port), ORDERFLOW_RATE_LIMIT_STATUS="3/minute")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), timeout=30, what="second ingress /readyz")
        placed = httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                            headers={"X-Forwarded-For": new_ip()}).json()
        url = base + placed["status_url"]
        ip = new_ip()
        before = _rate_limited_total(base, "status", "ip")
        codes = [httpx.get(url, headers={"X-Forwarded-For": ip}).status_code
                 for _ in range(8)]
        assert codes.count(200) <= 3 and codes.count(429) >= 5, codes
        assert _rate_limited_total(base, "status", "ip") >= before + codes.count(429)
        # guessing other orders from that IP is refused too; another client still reads
        assert httpx.get(base + "/api/v1/orders/00000000-0000-0000-0000-000000000000",
                         headers={"X-Forwarded-For": ip}).status_code == 429
        assert httpx.get(url, headers={"X-Forwarded-For": new_ip()}).status_code == 200
    finally:
        procs.stop_all()


def test_apikey_create_list_revoke(stack) -> None:
    base, env = stack["base"], stack["env"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", "-m", "orderflow.cli", "apikey", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    created = cli("create", "revocable-gmbh")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[0]
    listed = cli("list", "--json")
    row = next(r for r in json.loads(listed.stdout) if r["partner"] == "revocable-gmbh")
    assert row["key_prefix"] == key[:10] and row["revoked_at"] is None
    assert key not in listed.stdout  # only the prefix is ever shown
    r = httpx.post(base + "/api/v1/partner/orders", json=order_body(), headers={"X-API-Key": key})
    assert r.status_code == 202
    assert cli("revoke", row["key_prefix"]).returncode == 0
    assert cli("revoke", row["key_prefix"]).returncode == 1  # nothing active left
    # the ingress caches a key lookup for at most 10 s
    wait_for(lambda: httpx.post(base + "/api/v1/partner/orders", json=order_body(),
                                headers={"X-API-Key": key}).status_code == 401,
             timeout=20, what="the revoked key to be refused", interval=1.0)


def test_request_id_is_echoed_or_generated(stack) -> None:
    base = stack["base"]
    r = httpx.get(base + "/healthz", headers={"X-Request-ID": "partner-req-42"})
    assert r.headers["X-Request-ID"] == "partner-req-42"
    generated = httpx.get(base + "/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # Garbage is replaced, not reflected.
    assert httpx.get(base + "/healthz", headers={"X-Request-ID": "a b\tc"}
                     ).headers["X-Request-ID"] != "a b\tc"


def test_health_readiness_metrics_and_docs(stack) -> None:
    base = stack["base"]
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(base + "/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["postgresql"] == "ok"
    metrics = httpx.get(base + "/metrics")
    assert metrics.status_code == 200 and "obskit_order_stage_transitions" in metrics.text
    spec = httpx.get(base + "/openapi.json").json()
    assert {"/api/v1/shop/orders", "/api/v1/partner/orders",
            "/api/v1/orders/{order_id}"} <= set(spec["paths"])
