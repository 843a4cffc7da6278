"""RabbitMQ: the broker down, order queues without consumers or backed up, DLQs, lost publishes.

Queue depths and consumers are obskit's view (``messaging_queue_*``, polled from the management
API by whichever processes run the poller: ``max by (queue)``); the broker's own view is used for
what only it knows (is it up, did it drop unroutable messages).
"""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import COUNT, VALUE, Alert, Group, Timing, grew, label

FILE = "rabbitmq.rules.yml"
DEPTH = "messaging_queue_messages"
CONSUMERS = "messaging_queue_consumers"


def groups(p: Params) -> list[Group]:
    t = Timing(p)
    rmq = p.sel(base=p.rabbitmq_selector)
    orders = p.sel('queue=~"{}"'.format("|".join(q.replace(".", "[.]") for q in p.order_queues)))
    dlqs = p.sel('queue=~".+[.]dlq"')
    queue, instance, svc = label("queue"), label("instance"), label(p.service_label)
    return [Group("obskit-rabbitmq", [
        Alert(
            "RabbitMQDown", "critical",
            f"max without (endpoint) (up{rmq}) == 0",
            f"RabbitMQ at {instance} is down",
            f"Prometheus cannot scrape RabbitMQ at {instance} (the rabbitmq_prometheus plugin): "
            "the broker or its metrics endpoint is down. While the broker is down no order "
            "moves between services; the queue, DLQ and consumer alerts are muted meanwhile.",
            for_=t.for_("1m"),
            meaning="the broker (or its metrics endpoint) does not answer; mutes the queue "
                    "alerts"),
        Alert(
            "OrderQueueNoConsumer", "critical",
            f"max by (queue) ({CONSUMERS}{orders}) == 0",
            f"No consumer on order queue {queue}",
            f"Nothing consumes {queue}: its channel's orders wait in the queue and no MES "
            "instance works on them. Are the MES processes running and connected?",
            for_=t.for_("2m"), needs_broker=True,
            meaning="an order queue has no consumer: that channel's orders are not processed"),
        Alert(
            "OrderQueueBacklogGrowing", "warning",
            f"max by (queue) ({DEPTH}{orders}) > {p.queue_backlog_messages}\n"
            f"and\n"
            f"max by (queue) (deriv({DEPTH}{orders}[{t.window('10m')}])) > 0",
            f"Order queue {queue} holds {VALUE} messages and grows",
            f"{VALUE} messages wait in {queue} (threshold {p.queue_backlog_messages}, "
            "queue_backlog_messages) and the number still grows: the MES takes orders slower "
            "than they arrive. Run more MES instances if every one is busy.",
            for_=t.for_("10m"), needs_broker=True,
            meaning=f"more than {p.queue_backlog_messages} ready messages in an order queue, "
                    "still growing"),
        Alert(
            "DeadLetterQueueNotEmpty", "warning",
            f"max by (queue) ({DEPTH}{dlqs}) > 0",
            f"{VALUE} message(s) in dead-letter queue {queue}",
            f"{queue} holds {VALUE} message(s) that failed every retry. Each is an order or "
            f"event that stopped: `obskit dlq show {queue}`, fix the cause, then replay.",
            for_=t.for_("1m"), needs_broker=True,
            meaning="a DLQ holds messages: orders or events that failed every retry"),
        Alert(
            "DeadLetterQueueGrowing", "warning",
            f"max by (queue) ({DEPTH}{dlqs})\n"
            f"-\n"
            f"max by (queue) ({DEPTH}{dlqs} offset {t.window('15m')}) > 0",
            f"Dead-letter queue {queue} grew by {VALUE} in {t.window('15m')}",
            f"{VALUE} more message(s) in {queue} than {t.window('15m')} ago: messages are "
            f"failing now. `obskit dlq show {queue}` groups them by error type.",
            needs_broker=True,
            meaning="messages are being dead-lettered now"),
        Alert(
            "PublishesFailed", "warning",
            grew("messaging_returned_total" + p.sel(),
                 f"{p.service_label}, exchange, routing_key, reason", t.window("10m")) + " > 0",
            f"{svc}: {COUNT} publish(es) to {label('exchange')} failed ({label('reason')})",
            f"The broker did not take {COUNT} message(s) that {svc} published to exchange "
            f"{label('exchange')} with routing key {label('routing_key')} in the last "
            f"{t.window('10m')} ({label('reason')}). unroutable: no queue is bound for that "
            "key; nacked: the broker refused it; unconfirmed: no confirm in time. The "
            "publisher got an error: an outbox retries, other callers must.",
            meaning="publishes the broker returned as unroutable, nacked or never confirmed"),
        Alert(
            "RabbitMQUnroutableDropped", "warning",
            f"sum by (instance) (increase(rabbitmq_global_messages_unroutable_dropped_total"
            f"{rmq}[{t.window('10m')}])) > 0",
            f"RabbitMQ at {instance} dropped {COUNT} unroutable message(s)",
            f"RabbitMQ at {instance} dropped {COUNT} message(s) in the last {t.window('10m')}: "
            "they were published without the mandatory flag to an exchange that routes them "
            "nowhere, and are gone. Find the publisher that does not use obskit's.",
            meaning="the broker discarded messages nobody could receive"),
    ])]
