"""The dashboard page in a real headless Debian chromium: it loads, shows the counts, and shows a
new order once the ingress has accepted it (the page polls; the ``order_created`` hook
invalidates the cached views in the ingress process).

Runs ``orderflow api`` as a subprocess on its own database and Redis key prefix.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from obskit.testing import wait_for
from orderflow.migrations import upgrade

MANAGER_TOKEN = "browser-manager-token"

# Named after the run (conftest.py): two runs at once do not share it.
DSN = ("postgresql://postgres@127.0.0.1:5432/"
       f"orderflow_dash_test_{os.environ['ORDERFLOW_TEST_RUN']}")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="Debian chromium and chromedriver are not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    upgrade(DSN)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("TRUNCATE orders, order_status_history, outbox CASCADE")
        for status in ("accepted", "done", "done"):
            conn.execute(
                "INSERT INTO orders (order_id, channel, customer_email, model, quantity, "
                "tracking_token, status) VALUES (%s, 'b2c', 'a@example.com', "
                "'{\"name\": \"seed.stl\", \"material\": \"PLA\", \"quality\": \"draft\"}', 1, "
                "'tok', %s)", (str(uuid.uuid4()), status))
    port = _free_port()
    env = {**os.environ, "ORDERFLOW_DATABASE_URL": DSN, "ORDERFLOW_READ_DATABASE_URL": DSN,
           "ORDERFLOW_DASHBOARD_TOKEN": MANAGER_TOKEN,
           "ORDERFLOW_REDIS_PREFIX": f"dashbrowser-{uuid.uuid4().hex[:8]}"}
    proc = subprocess.Popen([sys.executable, "-m", "orderflow.cli", "api", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"orderflow api exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            return httpx.get(f"{url}/dashboard", timeout=1,
                             auth=("manager", MANAGER_TOKEN)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, interval=0.2, what="orderflow api to start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dash-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_shows_counts_and_a_new_order(api_url: str, browser: object) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    # The managers' link: the token sets a cookie, the page's polls carry it.
    d.get(f"{api_url}/dashboard?interval=500&token={MANAGER_TOKEN}")  # type: ignore[attr-defined]

    def text(css: str) -> str:  # "" until the first poll has rendered the element
        found = d.find_elements(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
        return str(found[0].text) if found else ""

    wait_for(lambda: text("[data-testid=count-done]") == "2", 15, interval=0.2,
             what="the counts to render")
    assert text("[data-testid=count-accepted]") == "1"
    assert text("#total") == "3 orders"
    assert d.find_elements(By.CSS_SELECTOR, "#chart polyline")  # type: ignore[attr-defined]
    assert text("#error") == ""

    placed = httpx.post(f"{api_url}/api/v1/shop/orders", timeout=10, json={
        "customer_email": "grace@example.com", "quantity": 3,
        "model": {"name": "browser-test.stl", "volume_cm3": 4.2, "material": "PETG",
                  "quality": "fine"}})
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]

    row = f"#newest tr[data-order-id='{order_id}']"
    wait_for(lambda: bool(d.find_elements(By.CSS_SELECTOR, row)),  # type: ignore[attr-defined]
             15, interval=0.2, what="the new order in the newest-orders table")
    assert "browser-test.stl" in text(row)
    wait_for(lambda: text("#total") == "4 orders", 5, interval=0.2,
             what="the total to count the new order")
