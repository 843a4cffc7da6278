"""Find an order: its logs, its traces and its stages, from one order id.

Loki 3 ingests OTLP natively: ``service.name`` becomes the label ``service_name``; obskit's log
attributes (``order_id``, ``stage``, ``channel``, ...) and the record's ``trace_id``/``span_id``
become structured metadata, filtered with ``| key="value"``. Spans carry the order as the span
attribute ``order.id`` (obskit._context.ORDER_ID_KEY).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from obskit._context import ORDER_ID_KEY
from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    NEEDS,
    Board,
    Target,
    datasource_var,
    logs_panel,
    loki_table,
    table_panel,
    tempo_table,
)

NAME = "find-order"
#: obskit's log attribute for the order id (processors.add_order_context), as Loki names it.
LOG_ORDER_ID = "order_id"
#: The message of the line record_stage writes at each stage (obskit._orders).
STAGE_LINE = "order stage"


def build(p: Params) -> Board:
    # order_id!="" first: with the box empty the panels show nothing instead of every line.
    order = f'| {LOG_ORDER_ID}!="" | {LOG_ORDER_ID}="$order_id"'
    b = Board(p, NAME, "obskit / Find an order",
              "Paste an order id: every log line of that order across services, its traces, and "
              "the stages it reached in time order. The last stage shown is where it stopped.",
              [db.TextBoxVariable("order_id").label("Order id")
               .description("The order id the ingress returned (also in the customer's status "
                            "link).").default_value(""),
               datasource_var("loki", "loki", p.loki_uid, "Loki"),
               datasource_var("tempo", "tempo", p.tempo_uid, "Tempo"),
               datasource_var("datasource", "prometheus", p.prometheus_uid, "Prometheus")],
              time_from="now-24h", refresh="")
    b.add(loki_table(
        "Stages of the order",
        NEEDS.format("Loki") + "the 'order stage' log lines of this order, oldest first: each "
        "service records one at its hand-off (accepted, stored, published, received, priced, "
        "..., done). The last row is where the order is now, or where it stopped.",
        f'{{service_name=~".+"}} |= "{STAGE_LINE}" {order}',
        ["service_name", "stage", "channel", "trace_id"]), expect="needs:loki")
    b.add(tempo_table(
        "Traces of the order",
        NEEDS.format("Tempo") + f"traces with a span whose attribute {ORDER_ID_KEY} is this "
        "order: the HTTP request that accepted it, the outbox relay's publish, the MES "
        "consumer. Click a trace id to open it.",
        f'{{ span.{ORDER_ID_KEY} = "$order_id" }}'), expect="needs:tempo")
    # Order ids are never metric labels: this says where to look, `obskit orders` says which.
    state = " or ".join(
        f'label_replace(max by (stage, channel) (obskit_orders_{kind}{p.sel()}) > 0, '
        f'"state", "{kind}", "", "")' for kind in ("lost", "stuck"))
    b.add(table_panel(
        "Stuck or lost now",
        EMPTY_WHILE_HEALTHY + "how many orders are stuck (past their stage's stuck deadline) "
        "or lost (past its lost deadline) now, per stage and channel, whatever the order id "
        "above. Their ids: `obskit orders stuck` and `obskit orders lost`; then paste one "
        "above.",
        "short", [Target(state, instant=True)], w=24, h=6), expect="empty_while_healthy")
    b.add(logs_panel(
        "Logs of the order",
        NEEDS.format("Loki") + "every log line that carries this order id, from every service, "
        "oldest first. Expand a line for its trace_id (a link to the trace).",
        f'{{service_name=~".+"}} {order}'), expect="needs:loki")
    return b
