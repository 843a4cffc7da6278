"""MES: throughput per instance, stage latency, errors, backlog; B2B next to B2C."""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    Board,
    Target,
    above,
    eq,
    label_vars,
    match,
    scoped,
    stat_panel,
    timeseries,
)

NAME = "mes"
PROCESS = "messaging_process_duration_seconds"
AGE = "obskit_order_stage_age_seconds"
TRANSITIONS = "obskit_order_stage_transitions_total"
#: The stages the MES records (mes.py: received → priced → scheduled → printing → done).
MES_STAGES = ("received", "priced", "scheduled", "printing", "done")


def build(p: Params) -> Board:
    queues = "|".join(q.replace(".", "[.]") for q in p.order_queues)
    on_queue = f'{match("queue", "$queue")}'
    b = Board(p, NAME, "obskit / MES",
              "The manufacturing execution system: how many orders each instance handles, how "
              "long each stage takes, what fails and retries, and the backlog of the order "
              "queues. The MES is stateless: if the backlog grows while every instance is busy, "
              "run more instances.",
              label_vars(p, p.mes_service,
                         queue=f"{PROCESS}_count{p.sel(match(p.service_label, '$service'))}"))

    chan = match("channel", "$channel")
    b.row("Throughput")
    b.add(timeseries(
        "Orders handled per instance",
        "Order messages each MES instance finished per second (any outcome). Uneven lines with "
        "a growing backlog mean one instance is stuck or slow.",
        "ops",
        [Target(f"sum by ({p.instance_label}) (rate({PROCESS}_count"
                f"{scoped(p, on_queue)}[$__rate_interval]))", f"{{{{{p.instance_label}}}}}")],
        stack=True))
    b.add(stat_panel(
        "MES instances up",
        "MES processes Prometheus can scrape now (`up`). Fewer than you run means one is down "
        "or unreachable.",
        "short",
        [Target(f"sum(up{scoped(p)})")], w=4, thresholds=[(None, "red"), (1, "green")]))
    b.add(stat_panel(
        "Orders done per second",
        "Orders the MES brought to 'done' per second, all instances, selected channels.",
        "ops",
        [Target(f"sum(rate({TRANSITIONS}{scoped(p, eq('stage', 'done'), chan)}"
                "[$__rate_interval]))")], w=8))

    b.row("Duration per stage")
    b.add(timeseries(
        "Handling time per order",
        f"p50/p95/p99 of the MES handler per order message, from delivery to ack (all stages "
        f"of one order). The dashed line is the stage target ({p.mes_stage_p95_seconds:g} s, "
        "parameter mes_stage_p95_seconds). Exemplars link to traces.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le) (rate({PROCESS}_bucket"
                f"{scoped(p, on_queue, eq('outcome', 'ack'))}[$__rate_interval])))",
                f"p{round(q * 100)}", exemplar=q == 0.95) for q in (0.5, 0.95, 0.99)],
        thresholds=above(p.mes_stage_p95_seconds)))
    stages = "|".join(MES_STAGES)
    b.add(timeseries(
        "Time to reach each MES stage (p50/p95/p99)",
        "Time from acceptance to each MES stage: the gap between two stages is the time spent "
        "in the first. A stage whose p95 climbs while the one before stays flat is the slow "
        "step.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le, stage) (rate({AGE}_bucket"
                f"{scoped(p, match('stage', stages), match('channel', '$channel'))}"
                f"[$__rate_interval])))", f"p{round(q * 100)} {{{{stage}}}}",
                exemplar=q == 0.95) for q in (0.5, 0.95, 0.99)],
        thresholds=above(p.mes_stage_p95_seconds)))

    b.row("Errors and retries")
    not_ack = 'outcome!="ack"'
    b.add(timeseries(
        "Handler outcomes other than ack",
        "Order messages per second that ended in retry, dead_letter, duplicate (a redelivery "
        "acknowledged without work), requeue (channel lost before the ack) or error. Zero "
        "lines while healthy.",
        "ops",
        [Target(f"sum by (queue, outcome) (rate({PROCESS}_count"
                f"{scoped(p, on_queue, not_ack)}"
                "[$__rate_interval]))", "{{queue}} {{outcome}}")]))
    b.add(timeseries(
        "Retries by error type",
        EMPTY_WHILE_HEALTHY + "order messages scheduled for another attempt, by queue and "
        "error type. Retries that succeed are harmless; a steady rate means a dependency "
        "(database, pricing) is failing.",
        "ops",
        [Target(f"sum by (queue, error_type) (rate(messaging_retried_total"
                f"{scoped(p, on_queue)}[$__rate_interval]))", "{{queue}} {{error_type}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Dead-lettered by error type",
        EMPTY_WHILE_HEALTHY + "order messages the MES moved to the DLQ after its last attempt "
        "(or at once for a malformed order), by queue and error type. Each one is an order a "
        "customer is waiting for: `obskit dlq list orders.b2c.dlq`.",
        "ops",
        [Target(f"sum by (queue, error_type) (rate(messaging_dead_lettered_total"
                f"{scoped(p, on_queue)}[$__rate_interval]))", "{{queue}} {{error_type}}")]),
        expect="empty_while_healthy")

    b.row("Backlog and consumers")
    any_service = p.sel(match("queue", queues))  # polled by whichever service runs the poller
    b.add(timeseries(
        "Order queue backlog",
        f"Messages ready in the order queues ({', '.join(p.order_queues)}), as the broker "
        f"reports them (polled by obskit's QueueDepthPoller). The dashed line is the backlog "
        f"threshold ({p.queue_backlog_messages} messages, parameter queue_backlog_messages).",
        "short",
        [Target(f"max by (queue) (messaging_queue_messages{any_service})", "{{queue}}")],
        thresholds=above(p.queue_backlog_messages)))
    b.add(timeseries(
        "Consumers on the order queues",
        "Consumers attached to each order queue. Zero while messages are ready means nobody "
        "processes that channel's orders.",
        "short",
        [Target(f"max by (queue) (messaging_queue_consumers{any_service})", "{{queue}}")],
        thresholds=[(None, "red"), (1, "green")]))

    b.row("B2B next to B2C")
    b.add(timeseries(
        "Orders received by channel",
        "Orders the MES took from its queue per second: b2c (web shop, orders.b2c) and b2b "
        "(open API, orders.b2b). The queues are separate so a partner's burst cannot delay "
        "shop orders.",
        "ops",
        [Target(f"sum by (channel) (rate({TRANSITIONS}"
                f"{scoped(p, eq('stage', 'received'), chan)}[$__rate_interval]))",
                "{{channel}}")]))
    b.add(timeseries(
        "Accept → done p95 by channel",
        f"p95 from acceptance to done for each channel. The dashed line is the target "
        f"({p.accept_to_done_p95_seconds:g} s, parameter accept_to_done_p95_seconds).",
        "s",
        [Target(f"histogram_quantile(0.95, sum by (le, channel) (rate({AGE}_bucket"
                f"{scoped(p, eq('stage', 'done'), chan)}[$__rate_interval])))",
                "{{channel}}", exemplar=True)],
        thresholds=above(p.accept_to_done_p95_seconds)))
    return b
