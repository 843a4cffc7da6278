"""``orderflow all``: the whole pipeline as one supervised group of processes.

Children: ``api`` (and ``api-2`` ... with ``ingress > 1``), ``relay``, ``status`` (CRM status
consumer) and N ``mes`` workers, each its own process (as in production, so killing one is a real
test). A child that dies is restarted with backoff; SIGTERM/SIGINT stops them all (SIGTERM, then
SIGKILL after a grace period).

The ingress port is bound here, once per ingress process, and each ``api`` child serves the
socket it inherits (``orderflow api --fd``). With more than one they are ``SO_REUSEPORT``
sockets on the same port: the kernel spreads new connections evenly over them. One listening
socket shared by all would balance worse: asyncio accepts greedily, so whichever process wakes
first takes a whole burst of keep-alive connections for their lifetime. Holding the sockets
here means a crashed ingress loses nothing: connections wait in its socket's backlog until the
restarted child accepts them, instead of being refused or reset.

Metrics, one of two ways:

* default: all children share ``PROMETHEUS_MULTIPROC_DIR``, so the ingress ``/metrics`` shows the
  metrics of every process in the group (MES stages included) — one URL, but without exemplars
  and with the MES workers summed together;
* ``metrics_port=BASE``: each child serves its own ``/metrics`` on ``OBSKIT_METRICS_PORT`` (in
  the order of ``children()``: ingress BASE, crm-relay BASE+1, crm-status BASE+2, mes-1 BASE+3,
  ..., then ingress-2, ingress-3, ... after the last MES worker, so adding ingress processes
  moves no existing port), with exemplars, and ``targets_file`` tells Prometheus where they are
  (file_sd).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import obskit

_log = obskit.get_logger("orderflow.supervisor")


@dataclass
class Child:
    name: str  # the process: api, api-2, relay, status, mes-1, ...
    service: str  # what it passes to obskit.init(): ingress, crm-relay, crm-status, mes
    argv: list[str]
    metrics_port: int | None = None  # its own /metrics (per-process mode)
    label: str | None = None  # its ``instance`` label if not the service's name
    sock: socket.socket | None = None  # the listening socket it serves (ingress)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


def children(port: int, host: str, mes_workers: int, mes_concurrency: int,
             metrics_port: int | None = None, ingress: int = 1) -> list[Child]:
    """The group in a fixed order; with ``metrics_port`` child i serves metrics on BASE+i.

    The first ingress leads, the extra ones come last: ``ingress=1`` is the layout that
    dashboards, file_sd targets and tests know, and more ingress processes only append to it."""
    if ingress < 1:
        raise ValueError(f"ingress must be at least 1, not {ingress}")
    # -P: never import from the cwd (a stray ./obskit folder would shadow the library).
    base = [sys.executable, "-P", "-m", "orderflow.cli"]

    def api(i: int) -> Child:
        # --port/--host are shown by ps and logs; the child serves the socket given by --fd.
        return Child("api" if i == 1 else f"api-{i}", "ingress",
                     [*base, "api", "--port", str(port), "--host", host],
                     label=None if ingress == 1 else f"ingress-{i}")

    group = [api(1),
             Child("relay", "crm-relay", [*base, "relay"]),
             Child("status", "crm-status", [*base, "status"])]
    group += [Child(f"mes-{i + 1}", "mes", [*base, "mes", "--concurrency", str(mes_concurrency),
                                            "--worker-id", f"mes-{i + 1}"])
              for i in range(mes_workers)]
    group += [api(i) for i in range(2, ingress + 1)]
    if metrics_port is not None:
        for i, c in enumerate(group):
            c.metrics_port = metrics_port + i
    return group


def instance(c: Child) -> str:
    """The ``instance`` label of a child: its service name, ``mes-N`` for an MES worker,
    ``ingress-N`` for an ingress when there are several."""
    if c.label is not None:
        return c.label
    return c.service if c.service != "mes" else c.name


def listen(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on ``host:port`` (port 0: a free one, the same for all), to be
    inherited by the ingress processes.

    ``SO_REUSEPORT`` would also let any other process of this user join the port unnoticed (a
    stale group from an earlier run would take a share of the traffic), so the port is first
    bound once without it: that fails, as a single bind does, when anything holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if n > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--ingress > 1 needs SO_REUSEPORT (Linux, BSD); run one ingress here")
    if n > 1 and port != 0:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))  # EADDRINUSE: someone serves this port already
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            if n > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            s.listen(2048)  # uvicorn's default backlog
            s.set_inheritable(True)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def write_targets(path: str | os.PathLike[str], group: list[Child], host: str) -> None:
    """Prometheus file_sd JSON of the group's metrics ports, replaced atomically (Prometheus
    watches the file and must never read it half-written)."""
    entries = [{"targets": [f"{host}:{c.metrics_port}"],
                "labels": {"service": c.service, "instance": instance(c)}}
               for c in group if c.metrics_port is not None]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a containerised Prometheus
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def run(port: int = 8000, host: str = "127.0.0.1", mes_workers: int = 2,
        mes_concurrency: int = 8, metrics_port: int | None = None,
        targets_file: str | os.PathLike[str] | None = None,
        targets_host: str = "host.docker.internal", ingress: int = 1) -> int:
    env = dict(os.environ)
    try:
        socks = listen(host, port, ingress)
    except OSError as exc:
        print(f"orderflow: cannot serve http://{host}:{port}: {exc}", file=sys.stderr,
              flush=True)
        return 1
    port = socks[0].getsockname()[1]  # the one bound, if 0 was asked
    group = children(port, host, mes_workers, mes_concurrency, metrics_port, ingress)
    apis = [c for c in group if c.service == "ingress"]
    for c, sock in zip(apis, socks, strict=True):
        c.sock = sock
        c.argv += ["--fd", str(sock.fileno())]
    if metrics_port is None:
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="orderflow-metrics-")
    else:
        # Per process: multiprocess mode would drop the exemplars this mode is for.
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("prometheus_multiproc_dir", None)
        if targets_file is not None:
            write_targets(targets_file, group, targets_host)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(c: Child) -> None:
        child_env = {**env, "ORDERFLOW_PROCESS": c.name}
        if c.metrics_port is not None:
            child_env["OBSKIT_METRICS_PORT"] = str(c.metrics_port)
        c.proc = subprocess.Popen(c.argv, env=child_env,
                                  pass_fds=(c.sock.fileno(),) if c.sock else ())
        c.started_at = time.monotonic()
        _log.info("started", child=c.name, pid=c.proc.pid)

    for c in group:
        start(c)
    if metrics_port is None:
        metrics = f"metrics of all on http://{host}:{port}/metrics"
    else:
        metrics = "metrics per process on " + ", ".join(
            f"{instance(c)} :{c.metrics_port}" for c in group)
        if targets_file is not None:
            metrics += f" (Prometheus targets in {targets_file})"
    apis_text = "api" if len(apis) == 1 else f"{len(apis)} api processes"
    print(f"orderflow: {apis_text} on http://{host}:{port} (docs /docs), relay, status "
          f"consumer, {mes_workers} MES workers; {metrics}; Ctrl-C stops", file=sys.stderr,
          flush=True)
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
    for c in apis:
        if c.sock is not None:
            c.sock.close()
    return 0
