"""A collector that dies under load: throughput, memory and drops while it is gone, and export
resuming by itself when it is back.

The service is bench_http's ``obskit_live`` (obskit's default ``init()``, spans and every access
line exported over OTLP/gRPC) under steady load from wrk; the collector is bench_http's discarding
OTLP endpoint in its own process. Three phases: collector up (``--up`` s), killed for ``--down``
s (default 600: ten minutes), back on the same port for ``--up`` s. wrk runs in ``--window`` s
windows; after each, the service's req/s, the resident memory of the service and of its export
process, and the ``obskit_telemetry_*`` counters from its ``/metrics`` are printed.

    .venv/bin/python benchmarks/bench_soak.py              # ~12 min
    .venv/bin/python benchmarks/bench_soak.py --down 60    # a short version

The summary compares the down phase's median req/s with the up phases', the memory growth from
the end of the first up phase to the end of the down phase, the drops counted, and whether
spans were exported again after the collector came back (and how long that took).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import bench_http as bh


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return 0.0
    return kb / 1024


def counters(metrics_port: int) -> dict[str, float]:
    """The ``obskit_telemetry_*`` counters of the service, summed over their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(obskit_telemetry_\w+_total)(\{[^}]*\})? ([\d.e+]+)", line)
        if m:
            name = m.group(1).removeprefix("obskit_telemetry_").removesuffix("_total")
            out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


def start_sink(port: int) -> subprocess.Popen[Any]:
    sink = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                          "bench_http.py"),
                             "--otlp-sink", str(port)])
    bh._wait_port(port)
    return sink


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--up", type=float, default=60.0, help="seconds with the collector, before "
                    "and after (default 60)")
    ap.add_argument("--down", type=float, default=600.0, help="seconds without (default 600)")
    ap.add_argument("--window", type=float, default=20.0, help="seconds per wrk window")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--variant", default="obskit_live",
                    help="bench_http variant (obskit_live, obskit_10pct_live, "
                    "obskit_live_inproc)")
    args = ap.parse_args(argv)

    sink_port, port, metrics_port = bh._free_port(), bh._free_port(), bh._free_port()
    sink = start_sink(sink_port)
    env = {**os.environ, "BENCH_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
           "OBSKIT_METRICS_PORT": str(metrics_port), "OBSKIT_METRICS_ADDR": "127.0.0.1"}
    server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "bench_http.py"), "--serve",
         args.variant, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/items/42"
    rows: list[dict[str, Any]] = []
    try:
        bh._wait_port(port)
        bh._wait_port(metrics_port)
        bh.run_wrk(url, 3, args.connections, 1)  # warm-up
        child = (bh.child_pids(server.pid) or [0])[0]
        t0 = time.monotonic()
        print(f"{'t s':>6} {'phase':<6} {'req/s':>7} {'p99 ms':>7} {'service MB':>10} "
              f"{'export MB':>9} {'spans exported':>14} {'spans dropped':>13} "
              f"{'logs dropped':>12}", flush=True)

        def window(phase: str) -> None:
            res = bh.run_wrk(url, args.window, args.connections, 1)
            c = counters(metrics_port)
            row = {"t": time.monotonic() - t0, "phase": phase, **res,
                   "rss": rss_mb(server.pid), "child_rss": rss_mb(child), **c}
            rows.append(row)
            print(f"{row['t']:6.0f} {phase:<6} {res['rps']:7.0f} {res['p99']:7.2f} "
                  f"{row['rss']:10.1f} {row['child_rss']:9.1f} "
                  f"{c.get('spans_exported', 0):14.0f} {c.get('spans_dropped', 0):13.0f} "
                  f"{c.get('log_records_dropped', 0):12.0f}", flush=True)

        def phase(name: str, seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end - args.window / 2:
                window(name)

        phase("up", args.up)
        bh._stop(sink, 5)  # the collector dies
        phase("down", args.down)
        back_at = time.monotonic()
        sink = start_sink(sink_port)  # and comes back at the same address
        exported_before = rows[-1].get("spans_exported", 0)
        phase("back", args.up)
        resumed_after = next((r["t"] - (back_at - t0) for r in rows
                              if r["phase"] == "back"
                              and r.get("spans_exported", 0) > exported_before), None)
    finally:
        bh._stop(server, 10)
        bh._stop(sink, 5)

    up = statistics.median(r["rps"] for r in rows if r["phase"] in ("up", "back"))
    down = statistics.median(r["rps"] for r in rows if r["phase"] == "down")
    last_up = [r for r in rows if r["phase"] == "up"][-1]
    last_down = [r for r in rows if r["phase"] == "down"][-1]
    growth = (last_down["rss"] + last_down["child_rss"]) - (last_up["rss"] + last_up["child_rss"])
    dropped = {k: last_down.get(k, 0) - last_up.get(k, 0)
               for k in ("spans_dropped", "log_records_dropped")}
    print()
    print(f"variant {args.variant}: up {args.up:g} s, down {args.down:g} s, back {args.up:g} s; "
          f"wrk -c{args.connections} in {args.window:g} s windows")
    print("| figure | value | target |")
    print("|---|---:|---|")
    print(f"| req/s, collector up (median of up and back windows) | {up:.0f} | |")
    print(f"| req/s, collector down (median) | {down:.0f} ({down / up - 1:+.1%}) | no more than "
          "5 % below |")
    print(f"| resident memory growth while down (service + export process) | "
          f"{growth:+.1f} MB | ≤ 50 MB |")
    print(f"| spans dropped while down | {dropped['spans_dropped']:.0f} | counted |")
    print(f"| log records dropped while down | {dropped['log_records_dropped']:.0f} | counted |")
    print(f"| spans exported again after the collector came back | "
          f"{'yes, within ' + format(resumed_after, '.0f') + ' s' if resumed_after else 'NO'} | "
          "by itself |")
    # Faster while the collector is down is expected: the export process encodes nothing then.
    ok = down >= 0.95 * up and growth <= 50 and resumed_after is not None \
        and all(v > 0 for v in dropped.values())
    print("\nPASS" if ok else "\nFAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
