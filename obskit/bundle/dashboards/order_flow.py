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
# From the journey sweeper (obskit.journey): exact numbers per stage and channel.
IN_STAGE = "obskit_orders_in_stage"
STUCK = "obskit_orders_stuck"
LOST = "obskit_orders_lost"
OLDEST = "obskit_orders_oldest_age_seconds"
DECLARED_LOST = "obskit_orders_declared_lost_total"
REPEATED = "obskit_orders_stage_repeated_total"
STAGE_DURATION = "obskit_orders_stage_duration_seconds"
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
        "'In flight per stage', 'Lost orders' and 'Dead-lettered orders'.",
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

    # The journey sweeper's gauges: exact, from whichever process holds the sweeper lease (the
    # others export 0), so they are not narrowed to the dashboard's service and instance.
    def journey(metric: str) -> str:
        return f"max by (stage, channel) ({metric}{p.sel(match('channel', '$channel'))})"

    b.row("In flight")
    b.add(bar_gauge(
        "In flight per stage",
        "Unfinished orders whose last stage is this one now, all selected channels, counted by "
        "the journey sweeper from every order's journey (exact, and unaffected by restarts). A "
        "bar that keeps growing is where orders pile up; `obskit orders stuck --stage S` lists "
        "the ones waiting too long.",
        "short",
        [Target(f"sum by (stage) ({journey(IN_STAGE)})", "{{stage}}", instant=True)],
        thresholds=above(p.queue_backlog_messages)))
    b.add(stat_panel(
        "Orders in flight",
        "Orders accepted and not yet done, failed or dead-lettered, per channel (journey "
        "sweeper). Steady growth while traffic is flat means orders are stuck.",
        "short",
        [Target(f"sum by (channel) ({journey(IN_STAGE)})", "{{channel}}")],
        w=12, thresholds=above(p.queue_backlog_messages)))
    b.add(timeseries(
        "Oldest order per stage",
        "How long the oldest unfinished order has been at each stage, by channel. A line that "
        "climbs steadily is an order that does not move; it turns stuck, then lost, at the "
        "stage's deadlines (OBSKIT_STAGE_DEADLINES).",
        "s",
        [Target(journey(OLDEST), "{{channel}} {{stage}}")], w=24))

    b.row("Stuck and lost")
    b.add(timeseries(
        "Stuck orders",
        EMPTY_WHILE_HEALTHY + "orders past their stage's stuck deadline, by stage and channel "
        "(alert OrdersStuck). `obskit orders stuck` lists them with their trace ids.",
        "short",
        [Target(f"{journey(STUCK)} > 0", "{{channel}} {{stage}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Lost orders",
        EMPTY_WHILE_HEALTHY + "orders past their stage's lost deadline and not finished: they "
        "will not move by themselves (alert OrdersLost pages). `obskit orders lost` lists them.",
        "short",
        [Target(f"{journey(LOST)} > 0", "{{channel}} {{stage}}")],
        thresholds=above(1)), expect="empty_while_healthy")
    b.add(timeseries(
        "Orders declared lost",
        EMPTY_WHILE_HEALTHY + "orders the sweeper declared lost, each counted once, by the stage "
        "where they stopped. Stays in history after the orders are dealt with.",
        "short",
        [Target(f"sum by (stage, channel) (increase({DECLARED_LOST}"
                f"{p.sel(match('channel', '$channel'))}[$__rate_interval]))",
                "{{channel}} {{stage}}")], bars=True), expect="empty_while_healthy")
    b.add(timeseries(
        "Orders processed twice",
        EMPTY_WHILE_HEALTHY + "orders that reached a stage they had reached before: a message "
        "redelivered after a crash or published twice (alert OrdersProcessedTwice).",
        "short",
        [Target(f"sum by (stage, channel) (increase({REPEATED}"
                f"{p.sel(match('channel', '$channel'))}[$__rate_interval]))",
                "{{channel}} {{stage}}")], bars=True), expect="empty_while_healthy")

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
    b.add(timeseries(
        "Time spent in each stage (p95)",
        f"p95 time orders spend at a stage before reaching the next one, from their journeys. "
        f"The dashed line is the slow-stage threshold ({p.mes_stage_p95_seconds:g} s, parameter "
        "mes_stage_p95_seconds; alert OrderStageSlow).",
        "s",
        [Target(f"histogram_quantile(0.95, sum by (le, stage) (rate({STAGE_DURATION}_bucket"
                f"{p.sel(match('channel', '$channel'))}[$__rate_interval])))", "{{stage}}")],
        thresholds=above(p.mes_stage_p95_seconds), w=24))

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
