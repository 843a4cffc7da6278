"""Order flow: where orders are, how long they take, where they stop."""

from __future__ import annotations

from typing import Any

from obskit._orders import STAGES, TERMINAL_STAGES
from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    Board,
    Target,
    above,
    bar_gauge,
    eq,
    label_vars,
    match,
    scoped,
    stat_panel,
    timeseries,
)

NAME = "order-flow"
TRANSITIONS = "obskit_order_stage_transitions_total"
AGE = "obskit_order_stage_age_seconds"
#: The happy path in order; an order leaves it at ``failed`` or ``dead_lettered``.
FLOW = tuple(s for s in STAGES if s not in TERMINAL_STAGES) + ("done",)


def build(p: Params) -> Board:
    def sel(stage: str = "", stages: str = "") -> str:
        """The selector of stage ``stage`` (or regex ``stages``) on the selected channels."""
        chosen = eq("stage", stage) if stage else match("stage", stages or ".+")
        return scoped(p, f'{match("channel", "$channel")}, {chosen}')

    b = Board(p, NAME, "obskit / Order flow",
              "Every order's hand-offs (accepted → stored → published → received → MES stages → "
              "done) as counts, ages and stops. Start here to find where orders are lost.",
              label_vars(p))

    b.row("Funnel")
    b.add(bar_gauge(
        "Order funnel",
        "Orders that reached each stage during the selected time range, in pipeline order. A "
        "stage with fewer orders than the one before it is where orders stop: compare with "
        "'In flight per stage' and 'Dead-lettered orders'.",
        "short",
        [Target(f'sum(increase({TRANSITIONS}{sel(s)}[$__range]))',
                s, instant=True) for s in FLOW]))
    b.add(timeseries(
        "Orders per stage and channel",
        "Orders reaching each stage per second, by channel (b2c web shop, b2b open API). In a "
        "healthy pipeline every stage follows 'accepted' closely.",
        "ops",
        [Target(f"sum by (stage, channel) (rate({TRANSITIONS}{sel()}"
                "[$__rate_interval]))", "{{channel}} {{stage}}")]))

    b.row("In flight")
    pairs = list(zip(FLOW, FLOW[1:], strict=False))
    b.add(bar_gauge(
        "In flight per stage",
        "Orders that reached a stage and not yet the next one, counted since the services "
        "started (a restart of one service resets its counts: the bar is wrong until the "
        "others restart too). Unprintable orders stay at 'received' and dead-lettered ones "
        "where they stopped; 'Failed orders' and 'Dead-lettered orders' count those.",
        "short",
        [Target(f'clamp_min(sum({TRANSITIONS}{sel(a)}) - '
                f'sum({TRANSITIONS}{sel(n)}), 0)',
                f"{a} → {n}", instant=True) for a, n in pairs],
        thresholds=above(p.queue_backlog_messages)))
    terminal = "|".join(s for s in STAGES if s in TERMINAL_STAGES)
    b.add(stat_panel(
        "Orders in flight",
        "Orders accepted and not yet done, failed or dead-lettered, per channel, since the "
        "services started. Steady growth while traffic is flat means orders are stuck.",
        "short",
        [Target(f'clamp_min(sum by (channel) ({TRANSITIONS}{sel("accepted")}) - '
                f'sum by (channel) ({TRANSITIONS}{sel(stages=terminal)}), 0)',
                "{{channel}}")],
        w=12, thresholds=above(p.queue_backlog_messages)))

    b.row("Latency")
    done = sel("done")
    b.add(timeseries(
        "Accept → done latency",
        f"p50/p95/p99 time from acceptance (ingress answered 202) to done, by channel. The "
        f"dashed line is the p95 target ({p.accept_to_done_p95_seconds:g} s, parameter "
        "accept_to_done_p95_seconds). Exemplars (dots) link to the trace of an order in that "
        "bucket.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le, channel) (rate({AGE}_bucket{done}"
                f"[$__rate_interval])))", f"p{round(q * 100)} {{{{channel}}}}",
                exemplar=q == 0.95)
         for q in (0.5, 0.95, 0.99)],
        thresholds=above(p.accept_to_done_p95_seconds)))
    b.add(timeseries(
        "Time to reach each stage (p95)",
        "p95 time from acceptance to each stage: the step where the line jumps is where orders "
        "wait. Exemplars link to traces.",
        "s",
        [Target(f"histogram_quantile(0.95, sum by (le, stage) (rate({AGE}_bucket"
                f"{sel()}[$__rate_interval])))", "{{stage}}", exemplar=True)],
        thresholds=above(p.accept_to_done_p95_seconds)))

    b.row("Stops")
    b.add(timeseries(
        "Failed orders",
        "Orders that ended 'failed' (the MES found them unprintable, e.g. larger than the build "
        "volume), by channel. A business outcome, not a fault: the customer is told.",
        "short",
        [Target(f"sum by (channel) (increase({TRANSITIONS}{sel('failed')}"
                "[$__rate_interval]))", "{{channel}}")], bars=True))
    b.add(timeseries(
        "Dead-lettered orders",
        EMPTY_WHILE_HEALTHY + "orders the MES gave up on after its retries (or refused as "
        "malformed), moved to the order queue's DLQ, by channel. Any point here is an order to "
        "look at: `obskit dlq` lists them with their order and trace ids.",
        "short",
        [Target(f"sum by (channel) (increase({TRANSITIONS}{sel('dead_lettered')}"
                "[$__rate_interval]))", "{{channel}}")],
        bars=True), expect="empty_while_healthy")
    return b


def model(p: Params) -> dict[str, Any]:
    return build(p).build()
