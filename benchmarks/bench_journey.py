"""The journey store's cost per recorded stage, in the caller, in the writer thread and in Redis.

    python benchmarks/bench_journey.py                 # 5 rounds x 20,000 hops, interleaved
    python benchmarks/bench_journey.py --hops 100000 --rounds 3

Each round records the same hops twice, journey off then on (the order alternates per round), in
one process with obskit initialised (log lines to /dev/null, spans off): ``record_stage()`` inside
an ``order_context``, six stages per order as orderflow records them. Prints per hop: the caller's
wall time (what a request pays), the whole process's CPU until the writer has stored everything
(caller + writer thread), and Redis's own CPU (``INFO cpu``). Medians over rounds.
For the HTTP view, see ``bench_http.py --variants bare,obskit,obskit_stage,obskit_journey``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from typing import Any

STAGES = ("stored", "accepted", "published", "received", "priced", "done")


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(hops: int, journey_on: bool, url: str, prefix: str) -> dict[str, float]:
    import obskit
    from obskit import journey

    options: dict[str, Any] = {"journey_url": url if journey_on else None,
                               "journey_prefix": prefix, "journey_sweep": False}
    obskit.init("bench-journey", log_stream=open(os.devnull, "w"), spans_file="off",  # noqa: SIM115
                **options)
    import redis

    r = redis.Redis.from_url(url)
    orders = hops // len(STAGES)
    redis_cpu0 = _redis_cpu(r)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(orders):
        with obskit.order_context(f"o{i}", "b2c"):
            for s in STAGES:
                obskit.record_stage(s)
    caller = time.perf_counter() - t0
    if journey_on and not journey.flush(120):
        raise SystemExit("the writer did not catch up in 120 s")
    cpu = time.process_time() - cpu0
    redis_cpu = _redis_cpu(r) - redis_cpu0
    obskit.shutdown()
    r.close()
    n = orders * len(STAGES)
    return {"caller_us": caller / n * 1e6, "cpu_us": cpu / n * 1e6,
            "redis_us": redis_cpu / n * 1e6 if journey_on else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hops", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--url", default=os.environ.get("BENCH_JOURNEY_URL",
                                                    "redis://127.0.0.1:6379/0"))
    args = ap.parse_args(argv)
    from obskit.journey import JourneyStore

    prefix = f"obskit-bench-{uuid.uuid4().hex[:6]}"
    res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        for k in range(args.rounds):
            for on in ((False, True) if k % 2 == 0 else (True, False)):
                x = run(args.hops, on, args.url, prefix)
                res[on].append(x)
                print(f"round {k + 1} journey {'on ' if on else 'off'}: caller "
                      f"{x['caller_us']:.2f} µs/hop, process CPU {x['cpu_us']:.2f} µs/hop, "
                      f"redis CPU {x['redis_us']:.2f} µs/hop", flush=True)
    finally:
        JourneyStore(args.url, prefix).delete_all()

    def med(on: bool, key: str) -> float:
        return statistics.median(x[key] for x in res[on])

    print(f"\n{args.rounds} rounds x {args.hops} hops, medians, per recorded stage")
    print("| | caller µs | process CPU µs (caller + writer) | Redis CPU µs |")
    print("|---|---:|---:|---:|")
    for on in (False, True):
        print(f"| journey {'on' if on else 'off'} | {med(on, 'caller_us'):.2f} | "
              f"{med(on, 'cpu_us'):.2f} | {med(on, 'redis_us'):.2f} |")
    print(f"| cost of the journey | {med(True, 'caller_us') - med(False, 'caller_us'):+.2f} | "
          f"{med(True, 'cpu_us') - med(False, 'cpu_us'):+.2f} | {med(True, 'redis_us'):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
