"""RabbitMQ and DLQs: the broker's view (rabbitmq_prometheus) next to obskit's clients' view.

Broker series come from two scrapes of the rabbitmq_prometheus plugin: ``/metrics`` (the
``rabbitmq_global_*`` counters) and ``/metrics/detailed?family=queue_coarse_metrics&family=
queue_consumer_count`` (``rabbitmq_detailed_queue_*`` per queue), both under
``Params.rabbitmq_selector``.
"""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    Board,
    Target,
    above,
    label_vars,
    match,
    query_var,
    scoped,
    timeseries,
)

NAME = "rabbitmq"
DETAILED = "rabbitmq_detailed_queue_"


def build(p: Params) -> Board:
    def rmq(extra: str = "") -> str:
        return p.sel(extra, base=p.rabbitmq_selector)

    queue = match("queue", "$queue")
    dlqs = f'{queue}, {match("queue", ".+[.]dlq")}'
    variables = label_vars(p, channel=False)
    variables.append(query_var("queue", "Queue",
                               f"label_values({DETAILED}messages{rmq()}, queue)"))
    b = Board(p, NAME, "obskit / RabbitMQ and DLQs",
              "Queues as the broker sees them (depth, unacked, consumers, dead-lettering) and "
              "publishing as obskit's clients see it (confirm latency, returns, retries). "
              "Every critical queue Q has a dead-letter queue Q.dlq.",
              variables)

    b.row("Queues")
    b.add(timeseries(
        "Ready messages per queue",
        f"Messages waiting for a consumer, per queue (broker). The dashed line is the backlog "
        f"threshold ({p.queue_backlog_messages}, parameter queue_backlog_messages).",
        "short",
        [Target(f"sum by (queue) ({DETAILED}messages_ready{rmq(queue)})", "{{queue}}")],
        thresholds=above(p.queue_backlog_messages)))
    b.add(timeseries(
        "Unacknowledged per queue",
        "Messages delivered to a consumer and not yet acknowledged, per queue. Bounded by "
        "consumers × prefetch; stuck at that bound means the consumers are stuck.",
        "short",
        [Target(f"sum by (queue) ({DETAILED}messages_unacked{rmq(queue)})", "{{queue}}")]))
    b.add(timeseries(
        "Consumers per queue",
        "Consumers attached to each queue (broker). An order queue with zero consumers is an "
        "MES outage for that channel.",
        "short",
        [Target(f"sum by (queue) ({DETAILED}consumers{rmq(queue)})", "{{queue}}")]))
    b.add(timeseries(
        "DLQ depth",
        "Messages in each dead-letter queue (ready + unacked). Zero when healthy; anything "
        "else is orders or events to inspect and replay with `obskit dlq`.",
        "short",
        [Target(f"sum by (queue) ({DETAILED}messages{rmq(dlqs)})", "{{queue}}")],
        thresholds=above(1)))

    b.row("Publishing")
    b.add(timeseries(
        "Publish → confirm latency",
        "p50/p95/p99 from publish to the broker's confirm, by exchange (obskit publishers). "
        "Slow confirms mean a busy broker or disk: quorum queues confirm after a majority "
        "wrote the message.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le, exchange) (rate("
                f"messaging_publish_duration_seconds_bucket{scoped(p)}[$__rate_interval])))",
                f"p{round(q * 100)} {{{{exchange}}}}", exemplar=q == 0.95)
         for q in (0.5, 0.95, 0.99)]))
    b.add(timeseries(
        "Published and confirmed",
        "Messages published and confirmed per second, by exchange (obskit publishers). The "
        "two lines should lie on each other; a gap is publishes waiting for, or refused, a "
        "confirm.",
        "ops",
        [Target(f"sum by (exchange) (rate(messaging_published_total{scoped(p)}"
                "[$__rate_interval]))", "published {{exchange}}"),
         Target(f"sum by (exchange) (rate(messaging_confirmed_total{scoped(p)}"
                "[$__rate_interval]))", "confirmed {{exchange}}")]))
    b.add(timeseries(
        "Returned or nacked publishes",
        EMPTY_WHILE_HEALTHY + "publishes the broker returned as unroutable (no queue bound "
        "for the routing key) or nacked, by exchange, routing key and reason. The publisher "
        "got an exception; the message was not delivered.",
        "ops",
        [Target(f"sum by (exchange, routing_key, reason) (rate(messaging_returned_total"
                f"{scoped(p)}[$__rate_interval]))", "{{exchange}} {{routing_key}} {{reason}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Unroutable at the broker",
        "Messages the broker could not route, all publishers (obskit or not): returned "
        "(mandatory flag) or dropped silently. Dropped messages are lost: a zero line is the "
        "healthy state.",
        "ops",
        [Target(f"sum(rate(rabbitmq_global_messages_unroutable_returned_total{rmq()}"
                "[$__rate_interval]))", "returned"),
         Target(f"sum(rate(rabbitmq_global_messages_unroutable_dropped_total{rmq()}"
                "[$__rate_interval]))", "dropped")]))

    b.row("Dead letters and retries")
    b.add(timeseries(
        "Dead-lettered by error type",
        EMPTY_WHILE_HEALTHY + "messages obskit consumers sent to a DLQ, by queue and error "
        "type, after their last retry or at once for a permanent error.",
        "ops",
        [Target(f"sum by (queue, error_type) (rate(messaging_dead_lettered_total"
                f"{scoped(p, queue)}[$__rate_interval]))", "{{queue}} {{error_type}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Dead-lettered at the broker by reason",
        "Messages the broker dead-lettered per second, by reason: rejected (a consumer gave "
        "up), expired (a retry queue's TTL ran out: this is how delayed retries come back), "
        "maxlen (a queue overflowed) and delivery_limit (a quorum queue's redelivery cap).",
        "ops",
        [Target(f"sum(rate(rabbitmq_global_messages_dead_lettered_{r}_total{rmq()}"
                "[$__rate_interval]))", r)
         for r in ("rejected", "expired", "maxlen", "delivery_limit")]))
    b.add(timeseries(
        "Retries by queue and error type",
        EMPTY_WHILE_HEALTHY + "messages obskit consumers scheduled for another attempt "
        "(through the queue's retry queues), by queue and error type.",
        "ops",
        [Target(f"sum by (queue, error_type) (rate(messaging_retried_total"
                f"{scoped(p, queue)}[$__rate_interval]))", "{{queue}} {{error_type}}")]),
        expect="empty_while_healthy")
    b.add(timeseries(
        "Redelivered",
        "Messages the broker delivered again (a consumer died or its channel closed before "
        "the ack). Consumers are idempotent, so redeliveries cost work, not orders.",
        "ops",
        [Target(f"sum(rate(rabbitmq_global_messages_redelivered_total{rmq()}"
                "[$__rate_interval]))", "redelivered")]))
    return b
