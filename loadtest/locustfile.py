"""Locust users of orderflow: web-shop customers, partner integrations and production managers.

Run it through ``loadtest/run.py`` (docs/how-to/load-test.md): the runner starts the pipeline,
creates the partner keys and the dashboard token, passes them here in ``LOADTEST_*`` variables and
accounts for every accepted order afterwards. Locust alone works too (its web UI, say)::

    LOADTEST_PARTNER_KEYS=ofk_... LOADTEST_BURST_KEY=ofk_... LOADTEST_DASHBOARD_TOKEN=... \\
        locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Who does what (weights: about 15 shoppers for 4 partners for 1 manager):

* ``ShopCustomer``: browses, checks out (now and then the checkout is retried, or the form is
  invalid), then keeps the status page open: it reloads every 5 s, as the page itself does,
  until the order is finished.
* ``Partner``: an ERP integration. Single orders, concurrent bursts, retries with the same
  ``Idempotency-Key`` (the same order must come back), a key reused with another body (422), a
  sloppy sibling integration whose low-limit key goes over its limit (429 is the point, counted
  under its own name), and status polls through the API.
* ``Manager``: the MES dashboard open in a browser: the summary and one status list every 3 s,
  with ``If-None-Match`` as the browser sends it.

Expected refusals (422 for an invalid form, 429 on the low-limit key) are successes under names
of their own, so the failure count holds only what nobody should see. Every accepted order id is
appended to ``LOADTEST_ACCEPTED_FILE`` the moment it is accepted (``run.py`` checks each one
against the database when the load is over).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent.pool
from locust import FastHttpUser, between, task
from locust.contrib.fasthttp import ResponseContextManager

# --- configuration: the runner's handshake (env vars, so locust's own CLI stays untouched) ----
PARTNER_KEYS = [k for k in os.environ.get("LOADTEST_PARTNER_KEYS", "").split(",") if k]
BURST_KEY = os.environ.get("LOADTEST_BURST_KEY", "")
#: The low-limit key's limit in requests per second (``apikey create --rate-limit N/second``).
BURST_RATE = int(os.environ.get("LOADTEST_BURST_RATE", "5"))
DASHBOARD_TOKEN = os.environ.get("LOADTEST_DASHBOARD_TOKEN", "")
ACCEPTED_FILE = os.environ.get("LOADTEST_ACCEPTED_FILE", "")
#: "1": each simulated user sends ``X-Forwarded-For`` with an IP of its own, so the per-IP rate
#: limits see many clients as in production. Only useful when the ingress trusts this machine
#: (``ORDERFLOW_TRUSTED_PROXIES``): the runner's own pipeline does.
CLIENT_IPS = os.environ.get("LOADTEST_CLIENT_IPS", "") == "1"

MATERIALS = ("PLA", "ABS", "PETG", "RESIN")
QUALITIES = ("draft", "standard", "fine")
STATUSES = frozenset({"accepted", "published", "received", "priced", "scheduled", "printing",
                      "done", "failed", "dead_lettered"})
TERMINAL = frozenset({"done", "failed", "dead_lettered"})
DASHBOARD_STATUSES = ("printing", "scheduled", "done", "failed", "accepted")
#: The status page renders the status with "_" as " " (templates/status.html).
_PAGE_STATUS = re.compile(r'id="status">\s*([^<]+?)\s*<')

# Request names: /orders/{id} URLs aggregate under one row each, and expected refusals get rows
# of their own. tests/test_loadtest.py and the how-to read these names.
SHOP_ORDER = "/api/v1/shop/orders"
SHOP_RETRY = "/api/v1/shop/orders (checkout retried: same order)"
SHOP_INVALID = "/api/v1/shop/orders (invalid form: 422 expected)"
STATUS_PAGE = "/track/[id] (status page)"
PARTNER_ORDER = "/api/v1/partner/orders"
PARTNER_REPLAY = "/api/v1/partner/orders (idempotent replay: same order)"
PARTNER_CONFLICT = "/api/v1/partner/orders (key reused: 422 expected)"
PARTNER_LOW_LIMIT = "/api/v1/partner/orders (low-limit key: accepted)"
PARTNER_OVER_LIMIT = "partner order (over limit, 429 expected)"
PARTNER_STATUS = "/api/v1/orders/[id] (partner)"
LIMIT_CHECK = "rate limit enforced on the low-limit key"
DASH_SUMMARY = "/api/v1/dashboard/summary"
DASH_BY_STATUS = "/api/v1/dashboard/orders?status=[status]"
DASH_NEWEST = "/api/v1/dashboard/orders (newest)"


# --- helpers ----------------------------------------------------------------------------------
def order_body(rng: random.Random, email: str, *, unprintable: bool = False) -> dict[str, Any]:
    """A valid order like orderflow.demo's; ``unprintable``: larger than the build volume, so
    the MES ends it ``failed`` (a known state, accounted for)."""
    return {"customer_email": email,
            "model": {"name": f"part-{rng.randint(1, 999)}.stl",
                      "volume_cm3": 9500.0 if unprintable else round(rng.uniform(2, 400), 1),
                      "material": rng.choice(MATERIALS), "quality": rng.choice(QUALITIES)},
            "quantity": rng.randint(1, 20)}


def invalid_body(rng: random.Random) -> dict[str, Any]:
    """A form a customer got wrong: the ingress must answer 422 and store nothing."""
    return rng.choice([
        {"customer_email": "not-an-email", "quantity": 1},
        {"customer_email": "x@example.com", "quantity": 0,
         "model": {"name": "a.stl", "volume_cm3": 10, "material": "PLA", "quality": "fine"}},
        {"customer_email": "x@example.com", "quantity": 1,
         "model": {"name": "a.stl", "volume_cm3": -5, "material": "GOLD", "quality": "fine"}},
    ])


def record_accepted(order_id: str, channel: str) -> None:
    """Append one accepted order id. One short ``O_APPEND`` write per line, so lines from
    several locust processes (``--processes``) never interleave; written at once, so ids survive
    a locust that is killed."""
    if ACCEPTED_FILE:
        with open(ACCEPTED_FILE, "a", encoding="ascii") as f:
            f.write(f"{order_id}\t{channel}\n")


def fake_ip(rng: random.Random) -> str:
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def json_of(resp: ResponseContextManager) -> dict[str, Any] | None:
    """The body as a JSON object, or None after marking the request failed (never raises)."""
    try:
        value = json.loads(resp.text or "")
    except ValueError:
        resp.failure(f"HTTP {resp.status_code}: body is not JSON: {(resp.text or '')[:120]!r}")
        return None
    if not isinstance(value, dict):
        resp.failure(f"HTTP {resp.status_code}: expected a JSON object, got {value!r:.120}")
        return None
    return value


def unexpected(resp: ResponseContextManager) -> None:
    """Fail with what happened: a connection error (status 0), or the status and the error.

    Locust groups failures by message, so the message leaves out what differs per request (the
    ``request_id`` of orderflow's error bodies)."""
    if not resp.status_code:
        # A connection error or timeout: FastResponse.error holds the exception.
        resp.failure(f"no response: {getattr(resp, 'error', None)!r}")
        return
    text = resp.text or ""
    try:
        body = json.loads(text)
        what = f"{body['error']}: {body['message']}"
    except (ValueError, TypeError, KeyError):
        what = repr(text[:160])
    if resp.status_code == 429:
        resp.failure(f"429 where no limit should trip ({what}): see docs/how-to/load-test.md, "
                     "rate limits")
    else:
        resp.failure(f"unexpected HTTP {resp.status_code} ({what})")


def header(resp: ResponseContextManager, name: str) -> str | None:
    value = resp.headers.get(name) if resp.headers is not None else None
    return value if isinstance(value, str) else None  # geventhttpclient: a list if repeated


def accepted_id(resp: ResponseContextManager, *fields: str) -> dict[str, Any] | None:
    """For a 202: the body if it names an order (and ``fields``); else the request fails."""
    if resp.status_code != 202:
        unexpected(resp)
        return None
    body = json_of(resp)
    if body is None:
        return None
    missing = [f for f in ("order_id", *fields) if not isinstance(body.get(f), str)]
    if missing:
        resp.failure(f"202 without {', '.join(missing)}: {(resp.text or '')[:160]!r}")
        return None
    return body


class OrderflowUser(FastHttpUser):
    """What every simulated user shares: its own client IP and its own random stream."""

    abstract = True
    # Failed requests are counted, never retried: a retry would hide what the user saw.
    max_retries = 0
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = random.Random()
        self.ip = fake_ip(self.rng)

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"X-Forwarded-For": self.ip} if CLIENT_IPS else {}
        h.update(extra)
        return h

    @contextmanager
    def post_json(self, path: str, body: dict[str, Any], name: str,
                  **headers: str) -> Iterator[ResponseContextManager]:
        with self.client.post(path, json=body, headers=self.headers(**headers), name=name,
                              catch_response=True) as resp:
            yield resp


# --- web-shop customers (B2C) -----------------------------------------------------------------
class ShopCustomer(OrderflowUser):
    """Checks out, then watches the status page until the order is finished."""

    weight = 15
    #: The status page reloads itself every 5 s while the order is open (meta refresh).
    PAGE_REFRESH = 5.0
    #: A customer leaves after this many reloads even if the order is still printing.
    MAX_RELOADS = 8

    def on_start(self) -> None:
        self.email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
        self.order: dict[str, Any] | None = None  # the open order: id, tracking_url
        self.reloads = 0

    def wait_time(self) -> float:
        if self.order is not None:  # the page is open: its own refresh, a little jitter
            return self.PAGE_REFRESH + self.rng.uniform(-0.5, 0.5)
        return self.rng.uniform(5, 20)  # browsing the shop before the next checkout

    @task
    def visit(self) -> None:
        if self.order is None:
            self.checkout()
        else:
            self.reload_status_page()

    def checkout(self) -> None:
        if self.rng.random() < 0.05:  # a form with a mistake: refused, nothing stored
            with self.post_json(SHOP_ORDER, invalid_body(self.rng), SHOP_INVALID) as resp:
                if resp.status_code == 422:
                    resp.success()
                else:
                    unexpected(resp)
            return
        key = str(uuid.uuid4())  # one per checkout, as the docs tell shops to do
        body = order_body(self.rng, self.email)
        with self.post_json(SHOP_ORDER, body, SHOP_ORDER, **{"Idempotency-Key": key}) as resp:
            accepted = accepted_id(resp, "tracking_url")
        if accepted is None:
            return
        record_accepted(accepted["order_id"], "b2c")
        self.order, self.reloads = accepted, 0
        if self.rng.random() < 0.1:  # a double click / a retry after a slow answer
            self.retry_checkout(body, key, accepted["order_id"])

    def retry_checkout(self, body: dict[str, Any], key: str, order_id: str) -> None:
        with self.post_json(SHOP_ORDER, body, SHOP_RETRY, **{"Idempotency-Key": key}) as resp:
            again = accepted_id(resp)
            if again is None:
                return
            if again["order_id"] != order_id:
                resp.failure(f"retried checkout made a second order {again['order_id']} "
                             f"(first {order_id}): idempotency broken")
            elif header(resp, "Idempotent-Replayed") != "true":
                resp.failure("replayed order without 'Idempotent-Replayed: true'")

    def reload_status_page(self) -> None:
        assert self.order is not None
        order_id = self.order["order_id"]
        url = self.order["tracking_url"]  # absolute with ORDERFLOW_PUBLIC_URL, else relative
        with self.client.get(url, headers=self.headers(), name=STATUS_PAGE,
                             catch_response=True) as resp:
            status = self._page_status(resp, order_id)
        self.reloads += 1
        if status in TERMINAL or status is None or self.reloads >= self.MAX_RELOADS:
            self.order = None  # finished (or given up): back to browsing

    @staticmethod
    def _page_status(resp: ResponseContextManager, order_id: str) -> str | None:
        if resp.status_code != 200:
            unexpected(resp)
            return None
        text = resp.text or ""
        found = _PAGE_STATUS.search(text)
        if order_id not in text or found is None:
            resp.failure(f"status page without the order id or its status: {text[:120]!r}")
            return None
        status = found.group(1).replace(" ", "_")
        if status not in STATUSES:
            resp.failure(f"status page shows an unknown status {status!r}")
            return None
        return status


# --- partner integrations (B2B, open API) -----------------------------------------------------
class Partner(OrderflowUser):
    """A partner's ERP: orders one at a time and in bursts, retries safely, polls statuses."""

    weight = 4
    wait_time = between(1, 4)
    concurrency = 8  # connections for a concurrent burst
    #: Orders of one burst, sent 4 at a time.
    BURST = (5, 15)
    #: Own orders whose status is still polled (oldest dropped first).
    WATCHED = 20

    def on_start(self) -> None:
        # Each partner user is one partner: its key, its orders (keys are per partner).
        self.key = self.rng.choice(PARTNER_KEYS) if PARTNER_KEYS else ""
        self.email = f"purchasing-{uuid.uuid4().hex[:8]}@partner.example.com"
        self.watched: list[str] = []

    def place(self, key: str, name: str, *, idem: str | None = None,
              body: dict[str, Any] | None = None) -> tuple[str | None, dict[str, Any]]:
        """POST one order; its id if accepted (recorded, watched), and the body sent."""
        body = body or order_body(self.rng, self.email, unprintable=self.rng.random() < 0.02)
        idem = idem or str(uuid.uuid4())
        with self.post_json(PARTNER_ORDER, body, name, **{"X-API-Key": key,
                                                          "Idempotency-Key": idem}) as resp:
            if not key:
                resp.failure("no partner API key: set LOADTEST_PARTNER_KEYS (loadtest/run.py "
                             "does)")
                return None, body
            accepted = accepted_id(resp)
        if accepted is None:
            return None, body
        self.accepted(accepted["order_id"])
        return accepted["order_id"], body

    def accepted(self, order_id: str) -> None:
        record_accepted(order_id, "b2b")
        self.watched = [*self.watched[-(self.WATCHED - 1):], order_id]

    @task(4)
    def single_order(self) -> None:
        self.place(self.key, PARTNER_ORDER)

    @task(1)
    def burst(self) -> None:
        """A batch from the ERP's nightly export: sent concurrently, 4 connections."""
        pool = gevent.pool.Pool(4)
        for _ in range(self.rng.randint(*self.BURST)):
            pool.spawn(self.place, self.key, PARTNER_ORDER)
        pool.join()

    @task(1)
    def retry_after_timeout(self) -> None:
        """The ERP timed out and sends the same request again: the same order must come back.
        Now and then a buggy integration reuses the key for another order: 422, nothing stored.
        """
        idem = str(uuid.uuid4())
        order_id, body = self.place(self.key, PARTNER_ORDER, idem=idem)
        if order_id is None:
            return
        headers = {"X-API-Key": self.key, "Idempotency-Key": idem}
        with self.post_json(PARTNER_ORDER, body, PARTNER_REPLAY, **headers) as resp:
            again = accepted_id(resp)
            if again is not None and again["order_id"] != order_id:
                resp.failure(f"replay made a second order {again['order_id']} (first "
                             f"{order_id}): idempotency broken")
            elif again is not None and header(resp, "Idempotent-Replayed") != "true":
                resp.failure("replayed order without 'Idempotent-Replayed: true'")
        if self.rng.random() < 0.25:
            other = {**body, "quantity": body["quantity"] % 20 + 1}
            with self.post_json(PARTNER_ORDER, other, PARTNER_CONFLICT, **headers) as resp:
                if resp.status_code == 422 and "idempotency_key_reused" in (resp.text or ""):
                    resp.success()
                else:
                    unexpected(resp)

    @task(1)
    def over_limit(self) -> None:
        """The sibling integration with a ``BURST_RATE``/s key fires 3× that at once: the
        ingress must refuse the excess with 429 (a success here) and accept the rest."""
        n = 3 * BURST_RATE
        refused: list[int] = []
        started = time.monotonic()
        pool = gevent.pool.Pool(n)
        for _ in range(n):
            pool.spawn(self._over_limit_one, refused)
        pool.join()
        self.check_limit(n, len(refused), time.monotonic() - started)

    def _over_limit_one(self, refused: list[int]) -> None:
        body = order_body(self.rng, self.email)
        headers = {"X-API-Key": BURST_KEY, "Idempotency-Key": str(uuid.uuid4())}
        with self.post_json(PARTNER_ORDER, body, PARTNER_LOW_LIMIT, **headers) as resp:
            if not BURST_KEY:
                resp.failure("no low-limit key: set LOADTEST_BURST_KEY (loadtest/run.py does)")
            elif resp.status_code == 429:
                resp.request_meta["name"] = PARTNER_OVER_LIMIT  # a row of its own
                resp.success()
                refused.append(1)
            elif (accepted := accepted_id(resp)) is not None:
                # Recorded, not watched: the order is the sibling integration's, and this
                # partner's key may not read it (404, as it should).
                record_accepted(accepted["order_id"], "b2b")

    def check_limit(self, sent: int, refused: int, seconds: float) -> None:
        """A row that fails if the limit did not trip although it must have: more requests
        than the moving window (1 s) can hold in any window they fit in."""
        must_trip = sent > BURST_RATE * (seconds + 1.0)
        exc = None
        if must_trip and not refused:
            exc = AssertionError(f"{sent} requests in {seconds:.2f}s on a {BURST_RATE}/s key "
                                 "and not one 429: the per-key limit is not enforced")
        self.environment.events.request.fire(
            request_type="CHECK", name=LIMIT_CHECK, response_time=seconds * 1000,
            response_length=0, exception=exc, context={})

    @task(4)
    def poll_status(self) -> None:
        """The ERP syncs the statuses of its open orders through the API."""
        if not self.watched:
            return
        order_id = self.rng.choice(self.watched)
        with self.client.get(f"/api/v1/orders/{order_id}", headers=self.headers(
                **{"X-API-Key": self.key}), name=PARTNER_STATUS, catch_response=True) as resp:
            if resp.status_code != 200:
                unexpected(resp)
                return
            body = json_of(resp)
            if body is None:
                return
            if body.get("order_id") != order_id or body.get("status") not in STATUSES:
                resp.failure("status of another order or an unknown status: "
                             f"{(resp.text or '')[:160]!r}")
            elif body["status"] in TERMINAL:
                self.watched.remove(order_id)  # finished: the ERP stops asking


# --- production managers (the MES dashboard) -------------------------------------------------
class Manager(OrderflowUser):
    """The dashboard page in a browser: every ~3 s the summary and the selected status list."""

    weight = 1
    wait_time = between(2.5, 3.5)  # the page polls every 3 s (templates/dashboard.html)

    def on_start(self) -> None:
        self.selected = self.rng.choice(DASHBOARD_STATUSES)
        self.etags: dict[str, str] = {}  # the browser's cache: URL -> ETag

    @task
    def tick(self) -> None:
        if self.rng.random() < 0.1:  # the manager picks another status
            self.selected = self.rng.choice(DASHBOARD_STATUSES)
        self.read("/api/v1/dashboard/summary", DASH_SUMMARY)
        if self.rng.random() < 0.2:
            self.read("/api/v1/dashboard/orders?limit=20", DASH_NEWEST)
        else:
            self.read(f"/api/v1/dashboard/orders?status={self.selected}&limit=50",
                      DASH_BY_STATUS)

    def read(self, url: str, name: str) -> None:
        headers = self.headers(Authorization=f"Bearer {DASHBOARD_TOKEN}", Accept="application/json")
        if url in self.etags:
            headers["If-None-Match"] = self.etags[url]
        with self.client.get(url, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code == 304:  # unchanged since the last poll: no body, as in Chrome
                resp.success()
                return
            if resp.status_code in (401, 403):
                resp.failure(f"dashboard refused ({resp.status_code}): the token is wrong or "
                             "unset (LOADTEST_DASHBOARD_TOKEN / ORDERFLOW_DASHBOARD_TOKEN)")
                return
            if resp.status_code != 200:
                unexpected(resp)
                return
            if json_of(resp) is None:
                return
            if etag := header(resp, "ETag"):
                self.etags[url] = etag
