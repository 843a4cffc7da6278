"""orderflow's capacity model, and a load ramp replayed through it.

    python deploy/capacity.py                         # sizing, caps, KEDA targets, 10x ramp
    python deploy/capacity.py --multiple 100 --scenario b2c-flood --plot ramp.png

The figures come from deploy/capacity-figures.json (each with its benchmark); the autoscaling
settings (KEDA targets, min/max pods, polling) from the bundle's parameters, as rendered into
deploy/kubernetes/. docs/explanation/capacity-model.md explains the model and shows the output.

The model is fluid, second by second: orders arrive per channel, each MES pod works
``concurrency`` orders of each queue at once (one consumer per queue, so the queues never share
slots), KEDA asks for ``ceil(depth / target)`` pods per queue and the HPA takes the largest,
within its scale-up and scale-down policies; a new pod works after ``pod_start_seconds``. An
order's accept -> done time is the wait in its queue (FIFO: backlog / throughput) plus its
stages. It leaves out what is small at these rates: the relay's hop (milliseconds) and the
status consumer (a batched consumer carries ~1,500 orders/s).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "capacity-figures.json"
CHANNELS = ("orders.b2c", "orders.b2b")


@dataclass(frozen=True, slots=True)
class Scaling:
    """The autoscaling settings of deploy/kubernetes/ (``obskit bundle params``)."""

    targets: dict[str, int]
    min_pods: int
    max_pods: int
    concurrency: int
    polling_seconds: int  # the HPA decides once per poll (its scale-up period is the same)
    # The ScaledObject's HPA behaviour (obskit.bundle._kubernetes.MES_HPA_BEHAVIOR).
    up_percent: float
    up_pods: int
    down_window: int
    down_percent: float
    down_period: int

    @classmethod
    def from_bundle(cls) -> Scaling:
        from obskit.bundle import Params
        from obskit.bundle._kubernetes import MES_HPA_BEHAVIOR

        p = Params()
        up = {policy["type"]: policy["value"]
              for policy in MES_HPA_BEHAVIOR["scaleUp"]["policies"]}
        down = MES_HPA_BEHAVIOR["scaleDown"]
        (down_policy,) = down["policies"]
        return cls(targets=p.queue_targets(), min_pods=p.mes_min_replicas,
                   max_pods=p.mes_max_replicas, concurrency=p.mes_concurrency,
                   polling_seconds=p.keda_polling_interval,
                   up_percent=up["Percent"], up_pods=up["Pods"],
                   down_window=down["stabilizationWindowSeconds"],
                   down_percent=down_policy["value"], down_period=down_policy["periodSeconds"])


@dataclass(frozen=True, slots=True)
class Model:
    """Per-pod rates and the pipeline's caps, from the figures."""

    f: dict[str, float]
    utilization: dict[str, float]  # the policy: share of a pod's slots kept busy, per queue

    @classmethod
    def load(cls, path: Path = FIGURES) -> Model:
        data = json.loads(path.read_text())
        figures = {k: float(v["value"]) for k, v in data["figures"].items()}
        utilization = {q: float(u) for q, u in data["policy"]["target_utilization"].items()
                       if q in CHANNELS}
        return cls(figures, utilization)

    @property
    def service_seconds(self) -> float:
        """An order's time in the MES when nobody waits: its stages."""
        return self.f["mes_stages_waited"] * self.f["mes_stage_seconds"]

    def mes_queue_rate(self, concurrency: int) -> float:
        """Orders/s one MES pod finishes from one queue (its own consumer's slots)."""
        return concurrency / self.service_seconds * self.f["mes_scaling_efficiency"]

    @property
    def ingress_pod_rate(self) -> float:
        """Orders/s per ingress pod at the HPA's CPU target (a share of the request)."""
        return (self.f["ingress_cpu_request_cores"] * self.f["ingress_hpa_cpu_target"]
                / self.f["ingress_cpu_seconds_per_order"])

    @property
    def status_pod_rate(self) -> float:
        """Orders/s per status consumer: the lower of consuming and batch-writing 5 events."""
        per_event = min(self.f["rabbitmq_consume_per_second"],
                        self.f["status_batched_writes_per_second"])
        return per_event / self.f["status_events_per_order"]

    @property
    def relay_pod_rate(self) -> float:
        """Orders/s per relay: its confirmed publishes (an upper bound: one message each)."""
        return self.f["rabbitmq_publish_per_second"]

    @property
    def postgres_cap(self) -> float:
        """Orders/s at which the primary's unbatched commits are saturated."""
        return self.f["postgres_commits_per_second"] / self.f["postgres_commits_per_order"]

    @property
    def rabbitmq_cap(self) -> float:
        """Orders/s at which the busiest queue, order-events.status (5 events per order, one
        quorum queue: one leader), is saturated."""
        return self.f["rabbitmq_publish_per_second"] / self.f["status_events_per_order"]

    def keda_targets(self, concurrency: int) -> dict[str, int]:
        """Messages (ready + unacknowledged) per MES pod for each queue.

        KEDA's depth includes the orders the pods are working on, so in a steady state it is
        load x stage time (Little's law) and the target sets how busy the pods run; a backlog
        adds to it and scales out in proportion. A target above ``concurrency`` would only
        see backlogs: the pods would shrink to the minimum whenever they keep up, then fall
        behind again (a sawtooth)."""
        return {q: math.floor(concurrency * self.utilization[q]) for q in CHANNELS}

    def pods_for(self, orders_per_second: float, concurrency: int) -> dict[str, int]:
        """Pods of each process for a steady load (no backlog), at least two for availability."""
        share = self.f["b2c_share"]
        per_queue = self.mes_queue_rate(concurrency)
        busiest = max(share, 1 - share) * orders_per_second
        return {
            "ingress": max(2, math.ceil(orders_per_second / self.ingress_pod_rate)),
            "mes": max(2, math.ceil(busiest / per_queue)),
            "crm-relay": max(2, math.ceil(orders_per_second / self.relay_pod_rate)),
            "crm-status": max(2, math.ceil(orders_per_second / self.status_pod_rate)),
        }


# --- the replay ------------------------------------------------------------------------------


Load = Callable[[float], dict[str, float]]


def ramp(base: float, multiple: float, share: float) -> tuple[Load, int]:
    """Today's load for 2 min, up to ``multiple`` x over 3 min, held 10 min, down over 2 min,
    then today's load for 8 min."""
    def load(t: float) -> dict[str, float]:
        if t < 120:
            x = 1.0
        elif t < 300:
            x = 1 + (multiple - 1) * (t - 120) / 180
        elif t < 900:
            x = multiple
        elif t < 1020:
            x = multiple - (multiple - 1) * (t - 900) / 120
        else:
            x = 1.0
        total = base * x
        return {"orders.b2c": total * share, "orders.b2b": total * (1 - share)}
    return load, 1500


def b2c_flood(base: float, multiple: float, share: float) -> tuple[Load, int]:
    """The web shop jumps to ``multiple`` x at once for 5 min (a campaign, a bot); the open
    API's load does not change."""
    def load(t: float) -> dict[str, float]:
        x = multiple if 60 <= t < 360 else 1.0
        return {"orders.b2c": base * share * x, "orders.b2b": base * (1 - share)}
    return load, 900


SCENARIOS = {"ramp": ramp, "b2c-flood": b2c_flood}


@dataclass(slots=True)
class Row:
    t: int
    offered: dict[str, float]
    held: float  # orders/s above the pipeline's cap: refused (503) or waiting in the outbox
    depth: dict[str, float]  # what KEDA reads: waiting + in the pods' hands
    latency: dict[str, float]  # accept -> done of an order accepted now, seconds
    pods: int  # working
    desired: int


@dataclass(slots=True)
class _Hpa:
    s: Scaling
    history: deque[tuple[int, int]] = field(default_factory=deque)  # (t, raw desired)
    last_down: int = -10**9

    def decide(self, t: int, current: int, raw: int) -> int:
        raw = min(max(raw, self.s.min_pods), self.s.max_pods)
        self.history.append((t, raw))
        while self.history and self.history[0][0] < t - self.s.down_window:
            self.history.popleft()
        if raw > current:
            step = max(math.ceil(current * self.s.up_percent / 100), self.s.up_pods)
            return min(raw, current + step)
        # Scale down to the highest recommendation of the stabilisation window, 20 %/min.
        floor = max(r for _, r in self.history)
        if floor < current and t - self.last_down >= self.s.down_period:
            self.last_down = t
            return max(floor, current - max(1, math.floor(current * self.s.down_percent / 100)))
        return current


def simulate(model: Model, scaling: Scaling, load: Load, seconds: int) -> list[Row]:
    service = model.service_seconds
    per_queue = model.mes_queue_rate(scaling.concurrency)
    waiting = dict.fromkeys(CHANNELS, 0.0)
    pods = desired = scaling.min_pods
    starting: deque[tuple[int, int]] = deque()  # (ready at, pods)
    hpa = _Hpa(scaling)
    cap = min(model.postgres_cap, model.rabbitmq_cap)
    arrived = {q: [0.0] for q in CHANNELS}  # cumulative, for the FIFO latency below
    finished = {q: [0.0] for q in CHANNELS}
    rows = []
    for t in range(seconds):
        while starting and starting[0][0] <= t:
            pods += starting.popleft()[1]
        offered = load(t)
        total = sum(offered.values())
        # Above the cap, PostgreSQL (first) holds orders back: they never reach the queues.
        passed = min(1.0, cap / total) if total else 1.0
        rate = pods * per_queue
        depth = {}
        for q in CHANNELS:
            arriving = offered[q] * passed
            done = min(waiting[q] + arriving, rate)
            waiting[q] += arriving - done
            arrived[q].append(arrived[q][-1] + arriving)
            finished[q].append(finished[q][-1] + done)
            depth[q] = waiting[q] + done * service  # + the orders being worked on
        if t % scaling.polling_seconds == 0:
            raw = max(math.ceil(depth[q] / scaling.targets[q]) for q in CHANNELS)
            planned = pods + sum(n for _, n in starting)
            new = hpa.decide(t, planned, raw)
            if new > planned:
                starting.append((t + int(model.f["pod_start_seconds"]), new - planned))
            elif new < planned:
                pods -= planned - new  # stopped pods hand their orders back
            desired = new
        rows.append(Row(t, offered, total * (1 - passed), depth, {}, pods, desired))
    for q in CHANNELS:
        # FIFO: an order accepted in second t is done when everything accepted before it is,
        # whatever pods arrive meanwhile; inf: not done by the end of the replay.
        out = 0
        for r in rows:
            while out < seconds and finished[q][out + 1] < arrived[q][r.t + 1] - 1e-6:
                out += 1
            r.latency[q] = (out - r.t + service if out < seconds else math.inf)
    return rows


def summary(rows: list[Row]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peak_pods": max(r.pods for r in rows),
        "pod_minutes": round(sum(r.pods for r in rows) / 60),
        "peak_held_per_s": round(max(r.held for r in rows)),
    }
    for q in CHANNELS:
        out[f"peak_depth_{q}"] = round(max(r.depth[q] for r in rows))
    for q in CHANNELS:
        out[f"peak_latency_{q}"] = round(max(r.latency[q] for r in rows), 1)
    return out


# --- output ----------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def report_sizing(model: Model, scaling: Scaling) -> str:
    base = model.f["today_orders_per_second"]
    out = ["Per pod (orders/s):", _table(
        ["process", "orders/s per pod", "bound by"],
        [["ingress", f"{model.ingress_pod_rate:,.0f}", "CPU at the HPA target"],
         ["mes (per queue)", f"{model.mes_queue_rate(scaling.concurrency):.1f}",
          f"{scaling.concurrency} in flight x {model.service_seconds:g} s of stages"],
         ["crm-relay", f"{model.relay_pod_rate:,.0f}", "confirmed publishes"],
         ["crm-status", f"{model.status_pod_rate:,.0f}", "consume 5 events per order"]]),
        "", "Caps of the pipeline (orders/s):", _table(
            ["what", "orders/s", "x today"],
            [["PostgreSQL primary (unbatched commits)", f"{model.postgres_cap:,.0f}",
              f"{model.postgres_cap / base:.0f}x"],
             ["RabbitMQ order-events.status (one quorum queue)", f"{model.rabbitmq_cap:,.0f}",
              f"{model.rabbitmq_cap / base:.0f}x"]]),
        "", f"Pods for a steady load (today = {base:g} orders/s):"]
    rows = []
    for multiple in (1, 10, 100):
        load = base * multiple
        pods = model.pods_for(load, scaling.concurrency)
        capped = [n for n, cap in (("PostgreSQL", model.postgres_cap),
                                   ("RabbitMQ", model.rabbitmq_cap)) if load > cap]
        rows.append([f"{multiple}x", f"{load:,.0f}", *(str(pods[k]) for k in
                                                        ("ingress", "mes", "crm-relay",
                                                         "crm-status")),
                     ", ".join(capped) + " over cap" if capped else "-"])
    out.append(_table(["load", "orders/s", "ingress", "mes", "crm-relay", "crm-status",
                       "caps"], rows))
    derived = model.keda_targets(scaling.concurrency)
    out += ["", "KEDA targets (messages per MES pod = concurrency x target utilisation):",
            _table(["queue", "utilisation", "derived", "in deploy/kubernetes"],
                   [[q, f"{model.utilization[q]:g}", str(derived[q]), str(scaling.targets[q])]
                    for q in CHANNELS])]
    return "\n".join(out)


def report_run(rows: list[Row], every: int) -> str:
    table = [[str(r.t), f"{r.offered['orders.b2c']:.0f}", f"{r.offered['orders.b2b']:.0f}",
              f"{r.held:.0f}", f"{r.depth['orders.b2c']:.0f}", f"{r.depth['orders.b2b']:.0f}",
              str(r.pods), str(r.desired), f"{r.latency['orders.b2c']:.1f}",
              f"{r.latency['orders.b2b']:.1f}"] for r in rows if r.t % every == 0]
    return _table(["t s", "b2c/s", "b2b/s", "held/s", "depth b2c", "depth b2b", "pods", "desired",
                   "b2c s", "b2b s"], table)


def sweep(model: Model, scaling: Scaling, multiple: float) -> str:
    """Both replays for a few KEDA targets: what each costs (pod-minutes) and buys (latency).
    The last is a target far above a pod's slots, which sees only backlogs."""
    rows = []
    for u in (0.5, 0.75, 1.0, 15.0):
        targets = {q: max(1, math.floor(scaling.concurrency * u)) for q in CHANNELS}
        s = replace(scaling, targets=targets)
        for name, scenario in SCENARIOS.items():
            load, seconds = scenario(model.f["today_orders_per_second"], multiple,
                                     model.f["b2c_share"])
            out = summary(simulate(model, s, load, seconds))
            label = f"{u:g}" if u <= 1 else "backlog only"
            rows.append([label, f"{targets['orders.b2c']}", name, str(out["peak_pods"]),
                         str(out["pod_minutes"]), f"{out['peak_latency_orders.b2c']:g}",
                         f"{out['peak_latency_orders.b2b']:g}"])
    return _table(["utilisation", "target", "scenario", "peak pods", "pod-minutes",
                   "worst b2c s", "worst b2b s"], rows)


def plot(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [r.t for r in rows]
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    for q in CHANNELS:
        axes[0].plot(t, [r.depth[q] for r in rows], label=q)
        axes[2].plot(t, [r.latency[q] for r in rows], label=q)
    axes[1].plot(t, [r.pods for r in rows], label="working")
    axes[1].plot(t, [r.desired for r in rows], label="desired", linestyle="--")
    for ax, label in zip(axes, ("queue depth (msgs)", "MES pods", "accept → done (s)"),
                         strict=True):
        ax.set_ylabel(label)
        ax.legend()
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="ramp")
    ap.add_argument("--multiple", type=float, default=10.0, help="peak load as a multiple of "
                    "today's (default 10)")
    ap.add_argument("--every", type=int, default=60, help="print one row per this many s")
    ap.add_argument("--figures", type=Path, default=FIGURES)
    ap.add_argument("--max-pods", type=int, help="MES pods at most (default: the bundle's)")
    ap.add_argument("--sweep", action="store_true", help="also replay both scenarios for "
                    "target utilisations 0.5, 0.75 and 1")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="also plot (needs matplotlib)")
    args = ap.parse_args(argv)
    model = Model.load(args.figures)
    scaling = Scaling.from_bundle()
    if args.max_pods:
        scaling = replace(scaling, max_pods=args.max_pods)
    print(report_sizing(model, scaling))
    if args.sweep:
        print(f"\nTarget utilisation, both scenarios at {args.multiple:g}x:")
        print(sweep(model, scaling, args.multiple))
    load, seconds = SCENARIOS[args.scenario](model.f["today_orders_per_second"], args.multiple,
                                             model.f["b2c_share"])
    rows = simulate(model, scaling, load, seconds)
    print(f"\nReplay: {args.scenario}, peak {args.multiple:g}x today "
          f"(MES pods {scaling.min_pods}-{scaling.max_pods}):")
    print(report_run(rows, args.every))
    print("\n" + ", ".join(f"{k} {v}" for k, v in summary(rows).items()))
    if args.plot:
        print(f"plot: {args.plot}" if plot(rows, args.plot) else
              "plot skipped: matplotlib is not installed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
