"""HTTP server overhead: a trivial FastAPI endpoint under wrk, four variants, interleaved.

    python benchmarks/bench_http.py                   # 3 rounds x 4 variants x 5 s
    python benchmarks/bench_http.py --rounds 5 --duration 10 --connections 32
    python benchmarks/bench_http.py --server plain    # asyncio + h11 instead of uvloop + httptools
    # a change against an older tree, in one interleaved run (before:obskit, before:obskit_10pct)
    git worktree add /tmp/before HEAD~1
    python benchmarks/bench_http.py --before /tmp/before --variants bare,obskit,obskit_10pct

Servers: ``standard`` (default) is uvicorn as ``pip install 'uvicorn[standard]'`` (and
``fastapi[standard]``) installs it, with uvloop and httptools: the setup of the reference figures in
the issue (bare ~10,000 req/s, stock contrib 0.27 of it). ``plain`` is uvicorn without its extras
(asyncio loop, h11 parser), about half as fast per request, so a fixed per-request cost weighs
less against it. ``--server both`` runs both, one after the other.

Variants (each in its own uvicorn process, one worker, uvicorn's access log off):

* ``bare``        FastAPI, no global tracer provider (so FastAPI's native telemetry stays off);
* ``stock``       ``FastAPIInstrumentor`` + SDK ``TracerProvider`` with a ``BatchSpanProcessor``
                  to a no-op exporter (the standard contrib setup);
* ``obskit``      ``obskit.init()``: every request traced (same provider + processor as stock),
                  RED metrics with exemplars, one JSON access-log line per request to /dev/null;
* ``obskit_10pct`` the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
                  ``OTEL_TRACES_SAMPLER_ARG=0.1``.

Diagnostic variants (``--variants bare,obskit,obskit_nolog,obskit_notrace``): ``obskit_nolog``
is ``obskit`` with the access log filtered out (``log_level=WARNING``); ``obskit_notrace`` is
``obskit`` with ``OTEL_SDK_DISABLED=true`` (metrics + access log only); ``obskit_10pct_norid`` is
``obskit_10pct`` with request ids off (``request_id=False``: no ``X-Request-ID`` made or returned).
The journey store's cost (``--variants obskit_stage,obskit_journey``): both record one order stage
per request (``record_stage("accepted")``); ``obskit_journey`` also keeps it in the journey store
(Redis at ``BENCH_JOURNEY_URL``, default the local one); the server CPU per request includes the
writer thread's.

Spans go to a no-op exporter in both traced variants so the comparison measures instrumentation,
not exporting. The deployment path (``--variants bare,obskit_file,obskit_live,obskit_10pct_live,
stock_live``): ``obskit_file`` writes spans to obskit's JSON-lines file (the default without a
collector); the ``_live`` variants export over OTLP/gRPC to a live endpoint in a process of its
own that accepts and discards everything unparsed (``--otlp-sink``): ``obskit_live`` is the
default ``init()`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (spans and every log line exported),
``obskit_10pct_live`` the same at 10 % head sampling, ``obskit_live_nologs`` without log export,
``obskit_live_inproc`` with the SDK's exporters in the server's process
(``OBSKIT_EXPORT_PROCESS=0``), ``obskit_live_http`` over OTLP/HTTP (``--otlp-sink-http``),
``stock_live`` the contrib setup with the SDK's gRPC exporter.
The last two columns are the CPU per request of obskit's export process (the server's child) and
of the receiving end. Prints req/s (median over rounds), p50/p99 latency (median over rounds)
and the ratio to bare. Needs ``wrk`` (Debian package ``wrk``).

``--callgrind N`` measures without noise instead: each variant's server runs under valgrind's
callgrind with its cache simulation, serves 400 requests to warm up and then N more (8
keep-alive connections), and the table gives per request the instructions, the simulated L1 and
last-level cache misses and KCachegrind's cycle estimate (Ir + 10 x L1 misses + 100 x LL
misses; no branch simulation). The same tree gives the same figures whatever else the machine
runs, so a change of 1 % shows; it is a model, though (real ratios here have been 0.02-0.10
lower), and under valgrind (~50x slower) the 0.1 s flusher writes the access lines in much
smaller batches than the up to 256 of a real server.
Needs ``valgrind`` (Debian package); ~1 minute per variant, two at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

VARIANTS = ("bare", "stock", "obskit", "obskit_10pct")
#: The deployment path: spans (and obskit's log records) exported over OTLP/gRPC to a live
#: endpoint that accepts and discards everything (``--otlp-sink``, a process of its own).
LIVE_VARIANTS = ("obskit_live", "obskit_10pct_live", "obskit_live_nologs", "obskit_live_inproc",
                 "obskit_live_http", "stock_live")
#: Diagnostic variants, run with --variants: where obskit's per-request cost goes.
EXTRA_VARIANTS = ("obskit_nolog", "obskit_notrace", "obskit_10pct_norid", "obskit_stage",
                  "obskit_journey", "obskit_file", *LIVE_VARIANTS)
#: Where ``obskit_journey`` keeps its hops (a prefix of its own, emptied after the run).
JOURNEY_URL = os.environ.get("BENCH_JOURNEY_URL", "redis://127.0.0.1:6379/0")
JOURNEY_PREFIX = "obskit-bench"


# --- server side (runs in the subprocess) --------------------------------------------------------
def _noop_provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class NoopExporter(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
            return SpanExportResult.SUCCESS

    # The default sampler reads OTEL_TRACES_SAMPLER / _ARG, as obskit's does.
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_provider(endpoint: str) -> Any:
    """The stock contrib setup exporting for real: BatchSpanProcessor + the SDK's gRPC exporter."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                    insecure=True)))
    trace.set_tracer_provider(provider)
    return provider


def build_app(variant: str) -> Any:
    from fastapi import FastAPI

    live = variant in LIVE_VARIANTS
    endpoint = os.environ.get("BENCH_OTLP_HTTP_ENDPOINT" if variant == "obskit_live_http"
                              else "BENCH_OTLP_ENDPOINT", "")
    if live and not endpoint:
        raise SystemExit(f"{variant}: BENCH_OTLP_ENDPOINT is not set")
    if variant == "stock":
        provider = _noop_provider()
    elif variant == "stock_live":
        provider = _otlp_provider(endpoint)
    elif live:  # obskit's default init(), as a service in the bundle runs it
        import obskit

        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
        obskit.init("bench", log_stream=sink, log_format="json", otlp_endpoint=endpoint,
                    otlp_protocol="http/protobuf" if variant == "obskit_live_http" else "grpc",
                    export_logs=variant != "obskit_live_nologs",
                    export_process=variant != "obskit_live_inproc")
    elif variant == "obskit_file":  # the default sink without a collector: a JSON-lines file
        import tempfile

        import obskit

        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
        spans = os.path.join(tempfile.mkdtemp(prefix="bench-spans-"), "spans.jsonl")
        obskit.init("bench", log_stream=sink, log_format="json", spans_file=spans)
    elif variant.startswith("obskit"):
        import obskit

        options: dict[str, Any] = {}
        if variant == "obskit_nolog":
            options["log_level"] = "WARNING"
        if variant == "obskit_notrace":
            options["sdk_disabled"] = True
        if variant == "obskit_journey":
            options.update(journey_url=JOURNEY_URL, journey_prefix=JOURNEY_PREFIX)
        if variant == "obskit_10pct_norid":
            options["request_id"] = False
        else:
            options["tracer_provider"] = _noop_provider()
        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server
        obskit.init("bench", log_stream=sink, log_format="json", spans_file="off", **options)

    app = FastAPI()

    if variant in ("obskit_stage", "obskit_journey"):
        import obskit

        @app.get("/items/{item_id}")
        async def item_stage(item_id: int) -> dict[str, int]:
            obskit.record_stage("accepted", order_id=item_id, channel="b2c")
            return {"item_id": item_id}
    else:
        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

    if variant in ("stock", "stock_live"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


BEFORE = "before:"  # prefix of a variant served from the --before tree
BATCH_BY_SIZE = "BENCH_BATCH_BY_SIZE"  # set by --callgrind (see serve())

#: The OTLP/gRPC services the sink answers: every export is accepted and thrown away unparsed.
_OTLP_SERVICES = ("opentelemetry.proto.collector.trace.v1.TraceService",
                  "opentelemetry.proto.collector.logs.v1.LogsService",
                  "opentelemetry.proto.collector.metrics.v1.MetricsService")


def otlp_sink(port: int, http_port: int | None = None) -> None:
    """A live OTLP/gRPC endpoint that accepts everything and keeps nothing (``--otlp-sink``),
    and OTLP/HTTP on ``http_port`` (``--otlp-sink-http``).

    The request bytes are not even parsed (no deserializer): the receiving end's cost is the
    transport, as little as any collector could spend. An empty reply is a valid empty
    ``Export*ServiceResponse``."""
    import threading
    from concurrent import futures
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import grpc

    class Discard(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector serves it

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    if http_port:
        httpd = ThreadingHTTPServer(("127.0.0.1", http_port), Discard)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def export(request: bytes, context: Any) -> bytes:
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(export)  # bytes in, bytes out
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, {"Export": handler})
                                     for name in _OTLP_SERVICES])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def serve(variant: str, port: int, server: str = "standard") -> None:
    if variant.startswith("obskit_10pct"):
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    import uvicorn

    app = build_app(variant)
    if os.environ.get(BATCH_BY_SIZE) == "1":
        # Under callgrind the server runs ~50x slower: the deferred batch's 0.1 s and the
        # export hand-over's 0.2 s ticks would cut batches of ~7 requests, where wrk sees 256,
        # and how many a tick caught varied from run to run (+-5k instructions per request).
        # Batches by size only, as under load.
        from obskit import _deferred, _export_process

        _deferred.FLUSH_INTERVAL = _export_process.INTERVAL = 3600.0
    if os.environ.get("BENCH_GC_FREEZE") == "1":  # diagnostic: is a p99 spike a full GC?
        import gc

        gc.freeze()
    loop, http = ("uvloop", "httptools") if server == "standard" else ("asyncio", "h11")
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False, lifespan="on", loop=loop, http=http)


# --- driver -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


#: ``--pin``: (server CPUs, wrk CPUs), else None (the scheduler decides).
PIN: tuple[set[int], set[int]] | None = None


def _pinned(cpus: set[int] | None) -> Any:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run_wrk(url: str, duration: float, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
         "--latency", url],
        capture_output=True, text=True, check=True,
        preexec_fn=_pinned(PIN[1] if PIN else None)).stdout  # noqa: PLW1509 - no threads here
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99, "requests": requests}


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (obskit's export process)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def children_cpu_seconds(pid: int, children: list[int]) -> float:
    total = 0.0
    for child in children:
        try:
            total += cpu_seconds(child)
        except OSError:  # ended meanwhile
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _variant_env(variant: str, before: str | None) -> tuple[str, dict[str, str] | None]:
    """The variant to serve and its environment (None: this one's), with the discarding
    endpoint's addresses while one runs (``SINK``)."""
    env: dict[str, str] | None = None
    if variant.startswith(BEFORE):
        # The older tree's obskit first on the path (ahead of the editable install); the server
        # script is this one, so both sides serve the same app.
        variant = variant[len(BEFORE):]
        env = {**os.environ, "PYTHONPATH": os.path.abspath(before or ".")}
    if SINK is not None:
        env = {**(env or os.environ), "BENCH_OTLP_ENDPOINT": SINK[1],
               "BENCH_OTLP_HTTP_ENDPOINT": SINK[2]}
    return variant, env


def _stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: The running ``--otlp-sink`` process (pid, endpoint), started once for the live variants.
SINK: tuple[int, str, str] | None = None  # pid, gRPC endpoint, HTTP endpoint


def measure(variant: str, duration: float, connections: int, threads: int,
            warmup: float, server: str, before: str | None = None) -> dict[str, float]:
    port = _free_port()
    variant, env = _variant_env(variant, before)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", variant, "--port", str(port),
         "--server", server],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_pinned(PIN[0] if PIN else None))  # noqa: PLW1509
    try:
        _wait_port(port)
        url = f"http://127.0.0.1:{port}/items/42"
        if warmup > 0:
            run_wrk(url, warmup, connections, threads)
        cpu0 = cpu_seconds(proc.pid)
        children = child_pids(proc.pid)  # the export process, started by init()
        helper0 = children_cpu_seconds(proc.pid, children)
        sink0 = cpu_seconds(SINK[0]) if SINK is not None else 0.0
        res = run_wrk(url, duration, connections, threads)
        # Server CPU per request: unlike req/s, barely affected by other load on the machine.
        res["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / max(1, res["requests"]) * 1e6
        # The export process's CPU: off the requests' GIL, but the machine pays it.
        res["helper_us"] = ((children_cpu_seconds(proc.pid, children) - helper0)
                            / max(1, res["requests"]) * 1e6)
        # The receiving end's share (what a collector would spend, at the least).
        res["sink_us"] = ((cpu_seconds(SINK[0]) - sink0) / max(1, res["requests"]) * 1e6
                          if SINK is not None else 0.0)
        return res
    finally:
        _stop(proc, 10)


# --- --callgrind: instructions and simulated cache misses per request --------------------------
CG_WARMUP = 400
CG_CONNECTIONS = 8


async def _drive(port: int, total: int) -> None:
    """``total`` GETs over CG_CONNECTIONS keep-alive connections, one request at a time each."""
    import asyncio

    request = (f"GET /items/42 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "User-Agent: bench\r\n\r\n").encode()

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response: {head[:60]!r}")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
        finally:
            writer.close()

    share = total // CG_CONNECTIONS
    await asyncio.gather(*(client(share) for _ in range(CG_CONNECTIONS)))


def _callgrind_totals(path: str) -> dict[str, int]:
    with open(path) as f:
        text = f.read()
    events = re.search(r"^events: (.*)$", text, re.M)
    totals = re.search(r"^(?:summary|totals): (.*)$", text, re.M)
    if events is None or totals is None:
        raise RuntimeError(f"{path}: not a callgrind profile")
    return dict(zip(events.group(1).split(), map(int, totals.group(1).split()), strict=False))


def callgrind(variant: str, n: int, server: str, before: str | None,
              keep: str | None = None) -> dict[str, float]:
    """Per-request callgrind events of ``variant``'s server over ``n`` requests after warm-up;
    ``keep``: a directory to keep the profile in (``<variant>.<server>.callgrind``), for
    ``callgrind_annotate``."""
    import asyncio
    import tempfile

    name, env = _variant_env(variant, before)
    env = {**(env or os.environ), BATCH_BY_SIZE: "1"}
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-cg-") as tmp:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--cache-sim=yes",
             f"--callgrind-out-file={tmp}/cg.%p", sys.executable, os.path.abspath(__file__),
             "--serve", name, "--port", str(port), "--server", server],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            _wait_port(port, timeout=600)
            asyncio.run(_drive(port, CG_WARMUP))
            subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                           capture_output=True)
            asyncio.run(_drive(port, n))
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                           capture_output=True)
        finally:
            _stop(proc, 120)
        profile = f"{tmp}/cg.{proc.pid}.1"  # the dump after --zero
        totals = _callgrind_totals(profile)
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(profile, os.path.join(keep, f"{variant.replace(':', '_')}.{server}"
                                                    ".callgrind"))
    served = n // CG_CONNECTIONS * CG_CONNECTIONS
    per = {k: v / served for k, v in totals.items()}
    l1 = per.get("I1mr", 0) + per.get("D1mr", 0) + per.get("D1mw", 0)
    ll = per.get("ILmr", 0) + per.get("DLmr", 0) + per.get("DLmw", 0)
    return {"ir": per["Ir"], "l1": l1, "ll": ll, "est": per["Ir"] + 10 * l1 + 100 * ll}


def run_callgrind(args: argparse.Namespace, server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    variants = [v for v in args.variants.split(",") if v]
    if args.before:
        variants += [BEFORE + v for v in variants if v.startswith("obskit")]
    with _live_sink(variants), \
            ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        futures = {v: pool.submit(callgrind, v, args.callgrind, server, args.before,
                               args.callgrind_keep)
                   for v in variants}
        results = {v: f.result() for v, f in futures.items()}
    bare = results.get("bare")
    print(f"\nserver {server}: callgrind, {args.callgrind} requests after {CG_WARMUP} of warm-up, "
          f"{CG_CONNECTIONS} connections, per request")
    print("| variant | instructions | L1 misses | LL misses | est. cycles | est. vs bare "
          "| instructions vs bare |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, r in results.items():
        ratio = f"{bare['est'] / r['est']:.3f}" if bare else ""
        ratio_ir = f"{bare['ir'] / r['ir']:.3f}" if bare else ""
        print(f"| {v} | {r['ir']:,.0f} | {r['l1']:,.0f} | {r['ll']:,.1f} | {r['est']:,.0f} "
              f"| {ratio} | {ratio_ir} |", flush=True)
    print("\nest. vs bare = bare's cycle estimate / the variant's: the throughput ratio the model "
          "predicts.\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--server", choices=("standard", "plain", "both"), default="standard",
                    help="uvicorn with uvloop + httptools (standard) or asyncio + h11 (plain)")
    ap.add_argument("--before", metavar="DIR",
                    help="an older checkout (e.g. a git worktree): every obskit variant also "
                         "runs from it, as before:<variant>, interleaved with the current one")
    ap.add_argument("--pin", action="store_true",
                    help="server on the first CPU, wrk on the others (less run-to-run noise "
                         "where nothing else runs; needs 2+ CPUs)")
    ap.add_argument("--callgrind", type=int, metavar="N",
                    help="instead of wrk: N requests per variant under callgrind's cache "
                         "simulation, per-request instructions and cache misses (no noise)")
    ap.add_argument("--callgrind-keep", metavar="DIR",
                    help="with --callgrind: keep each variant's profile in DIR "
                         "(for callgrind_annotate)")
    ap.add_argument("--serve", choices=VARIANTS + EXTRA_VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--otlp-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--otlp-sink-http", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.otlp_sink:
        otlp_sink(args.otlp_sink, args.otlp_sink_http)
        return 0
    if args.serve:
        serve(args.serve, args.port, args.server)
        return 0
    tool = "valgrind" if args.callgrind else "wrk"
    if shutil.which(tool) is None:
        print(f"{tool} not found: apt-get install {tool}", file=sys.stderr)
        return 2
    if args.pin:
        global PIN
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        PIN = ({cpus[0]}, set(cpus[1:]))
    servers = ("standard", "plain") if args.server == "both" else (args.server,)
    if "standard" in servers:
        try:
            import httptools  # noqa: F401
            import uvloop  # noqa: F401
        except ImportError:
            print("--server standard needs uvicorn[standard] (uvloop, httptools): "
                  "pip install -e '.[bench]', or use --server plain", file=sys.stderr)
            return 2
    for server in servers:
        if args.callgrind:
            run_callgrind(args, server)
        else:
            run_server(args, server)
    return 0


def run_server(args: argparse.Namespace, server: str) -> None:
    variants = [v for v in args.variants.split(",") if v]
    if args.before:
        if not os.path.isdir(os.path.join(args.before, "obskit")):
            raise SystemExit(f"--before {args.before}: no obskit package in that directory")
        variants += [BEFORE + v for v in variants if v.startswith("obskit")]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with _live_sink(variants):
        _rounds(args, server, variants, results)
    _report(args, server, variants, results)


@contextlib.contextmanager
def _live_sink(variants: list[str]) -> Iterator[None]:
    """The discarding OTLP endpoint (``SINK``) while ``variants`` has a live one."""
    global SINK
    if not any(v.split(":")[-1] in LIVE_VARIANTS for v in variants):
        yield
        return
    sink_port, http_port = _free_port(), _free_port()
    sink = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             "--otlp-sink", str(sink_port), "--otlp-sink-http", str(http_port)])
    try:
        _wait_port(sink_port)
        _wait_port(http_port)
        SINK = (sink.pid, f"http://127.0.0.1:{sink_port}", f"http://127.0.0.1:{http_port}")
        yield
    finally:
        _stop(sink, 5)
        SINK = None


def _rounds(args: argparse.Namespace, server: str, variants: list[str],
            results: dict[str, list[dict[str, float]]]) -> None:
    for r in range(args.rounds):
        # Rotate who goes first so slow phases of the machine hit every variant alike.
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            res = measure(v, args.duration, args.connections, args.threads, args.warmup,
                          server, args.before)
            results[v].append(res)
            print(f"{server} round {r + 1}/{args.rounds} {v:<21} {res['rps']:7.0f} req/s  "
                  f"p50 {res['p50']:6.2f} ms  p99 {res['p99']:7.2f} ms  "
                  f"cpu {res['cpu_us']:6.1f} us/req", flush=True)


def _report(args: argparse.Namespace, server: str, variants: list[str],
            results: dict[str, list[dict[str, float]]]) -> None:
    def med(v: str, key: str) -> float:
        return statistics.median(x[key] for x in results[v])

    bare = med("bare", "rps") if "bare" in results else None
    stock = med("stock", "rps") if "stock" in results else None
    print()
    print(f"server {server}: {args.rounds} rounds x {args.duration:g} s, "
          f"wrk -t{args.threads} -c{args.connections}, medians")
    bare_cpu = med("bare", "cpu_us") if "bare" in results else None
    stock_cpu = med("stock", "cpu_us") if "stock" in results else None
    print("| variant | req/s | p50 ms | p99 ms | req/s vs bare | req/s vs stock | req/s spread "
          "| server CPU µs/req | CPU-based vs bare | CPU-based vs stock | export process CPU "
          "µs/req | receiver CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for v in variants:
        rps = med(v, "rps")
        cpu = med(v, "cpu_us")
        spread = f"{min(x['rps'] for x in results[v]):.0f}–{max(x['rps'] for x in results[v]):.0f}"
        print(f"| {v} | {rps:.0f} | {med(v, 'p50'):.2f} | {med(v, 'p99'):.2f} | "
              f"{'' if not bare else f'{rps / bare:.2f}'} | "
              f"{'' if not stock else f'{rps / stock:.2f}x'} | {spread} | {cpu:.0f} | "
              f"{'' if not bare_cpu else f'{bare_cpu / cpu:.2f}'} | "
              f"{'' if not stock_cpu else f'{stock_cpu / cpu:.2f}x'} | "
              f"{med(v, 'helper_us'):.0f} | {med(v, 'sink_us'):.1f} |")
    if "obskit_journey" in variants:
        from obskit.journey import JourneyStore

        JourneyStore(JOURNEY_URL, JOURNEY_PREFIX).delete_all()
    print("\nCPU-based = throughput ratio a dedicated core would give (inverse server CPU per "
          "request);\nreq/s ratios depend on what else the machine is doing.\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
