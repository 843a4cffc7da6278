"""A small instrumented service: the ten lines of the README's quick start, runnable.

    make quickstart            # or: .venv/bin/python examples/quickstart/app.py

It starts the FastAPI app below under uvicorn, sends it a few requests (one order, one bad
request, one lookup), and prints what obskit produced: the JSON log lines, the spans (from the
local spans file, since no collector is configured) and the order metrics.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time

import obskit

SPANS_FILE = os.path.join(tempfile.mkdtemp(prefix="obskit-quickstart-"), "spans.jsonl")
obskit.init("quickstart", spans_file=SPANS_FILE, log_format=os.environ.get("OBSKIT_LOG_FORMAT",
                                                                           "json"))

from fastapi import FastAPI, HTTPException  # noqa: E402  (init() first: it instruments FastAPI)

log = obskit.get_logger("quickstart")
app = FastAPI()
app.add_route("/metrics", obskit.metrics_asgi_app())
ORDERS: dict[str, dict] = {}


@app.post("/orders/{order_id}", status_code=202)
async def create_order(order_id: str, body: dict) -> dict:
    with obskit.order_context(order_id, channel="b2c"):
        obskit.record_stage("accepted")
        price = _price(body)
        ORDERS[order_id] = {"price": price}
        log.info("order stored", price=price)
        obskit.record_stage("stored")
    return {"order_id": order_id, "price": price}


@obskit.traced
def _price(body: dict) -> float:
    volume = float(body.get("volume_cm3", 0))
    if volume <= 0:
        raise HTTPException(422, "volume_cm3 must be > 0")
    return round(volume * 0.12, 2)


@app.get("/orders/{order_id}")
async def get_order(order_id: str) -> dict:
    if order_id not in ORDERS:
        raise HTTPException(404, "no such order")
    return ORDERS[order_id]


def main() -> int:
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    print(f"# quickstart service on {base}; sending requests", file=sys.stderr, flush=True)
    with httpx.Client(base_url=base) as client:
        client.post("/orders/ord-1001", json={"volume_cm3": 42})
        client.post("/orders/ord-1002", json={"volume_cm3": -1})
        client.get("/orders/ord-1001")
        metrics = client.get("/metrics").text
    server.should_exit = True
    obskit.get_handle().force_flush()  # type: ignore[union-attr]

    print("\n# spans (from " + SPANS_FILE + ")", file=sys.stderr)
    with open(SPANS_FILE) as f:
        for line in f:
            span = json.loads(line)
            attrs = span.get("attributes", {})
            print(f"  {span['context']['trace_id']}  {span['name']:<28} "
                  f"order={attrs.get('order.id', '-')}", file=sys.stderr)
    print("\n# order metrics (GET /metrics)", file=sys.stderr)
    for line in metrics.splitlines():
        if line.startswith(("obskit_order_stage_transitions_total", "http_server_request_dur"
                            "ation_seconds_count")):
            print("  " + line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
