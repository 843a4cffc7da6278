"""``orderflow all``: the whole pipeline as one supervised group of processes.

Children: ``api``, ``relay``, ``status`` (CRM status consumer) and N ``mes`` workers, each its
own process (as in production, so killing one is a real test). A child that dies is restarted
with backoff; SIGTERM/SIGINT stops them all (SIGTERM, then SIGKILL after a grace period).
All children share ``PROMETHEUS_MULTIPROC_DIR``, so the ingress ``/metrics`` shows the metrics of
every process in the group (MES stages included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import obskit

_log = obskit.get_logger("orderflow.supervisor")


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


def children(port: int, host: str, mes_workers: int, mes_concurrency: int) -> list[Child]:
    # -P: never import from the cwd (a stray ./obskit folder would shadow the library).
    base = [sys.executable, "-P", "-m", "orderflow.cli"]
    group = [Child("api", [*base, "api", "--port", str(port), "--host", host]),
             Child("relay", [*base, "relay"]),
             Child("status", [*base, "status"])]
    group += [Child(f"mes-{i + 1}", [*base, "mes", "--concurrency", str(mes_concurrency),
                                     "--worker-id", f"mes-{i + 1}"])
              for i in range(mes_workers)]
    return group


def run(port: int = 8000, host: str = "127.0.0.1", mes_workers: int = 2,
        mes_concurrency: int = 8) -> int:
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="orderflow-metrics-")
    group = children(port, host, mes_workers, mes_concurrency)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(c: Child) -> None:
        c.proc = subprocess.Popen(c.argv, env={**env, "ORDERFLOW_PROCESS": c.name})
        c.started_at = time.monotonic()
        _log.info("started", child=c.name, pid=c.proc.pid)

    for c in group:
        start(c)
    print(f"orderflow: api on http://{host}:{port} (docs /docs), relay, status consumer, "
          f"{mes_workers} MES workers; Ctrl-C stops", file=sys.stderr, flush=True)
    while not stopping:
        now = time.monotonic()
        for c in group:
            if c.proc is not None and c.proc.poll() is not None:
                code = c.proc.returncode
                c.proc = None
                # Restart at once after a long healthy run, back off on a crash loop.
                if now - c.started_at > 30:
                    c.restarts = 0
                delay = min(2 ** c.restarts * 0.5, 30.0)
                c.restarts += 1
                c.next_start = now + delay
                _log.warning("child exited; restarting", child=c.name, exit_code=code,
                             restart_in_s=delay)
            if c.proc is None and now >= c.next_start and not stopping:
                start(c)
        time.sleep(0.2)
    for c in group:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.terminate()
    deadline = time.monotonic() + 15
    for c in group:
        if c.proc is None:
            continue
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()
    return 0
