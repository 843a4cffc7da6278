"""Orders: lost, stuck, processed twice; from the journey sweeper's exact numbers.

Every obskit process exports the sweeper's gauges, only the active sweeper with real values (the
others export 0): gauges are read with ``max by (stage, channel)``, counters summed.
"""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import COUNT, VALUE, Alert, Group, Timing, grew, label

FILE = "orders.rules.yml"
LOST = "obskit_orders_lost"
STUCK = "obskit_orders_stuck"
REPEATED = "obskit_orders_stage_repeated_total"


def groups(p: Params) -> list[Group]:
    t = Timing(p)
    stage, channel = label("stage"), label("channel")
    return [Group("obskit-orders", [
        Alert(
            "OrdersLost", "critical",
            f"max by (stage, channel) ({LOST}{p.sel()}) > 0",
            f"{VALUE} {channel} order(s) lost at stage {stage}",
            f"{VALUE} {channel} order(s) have been at stage {stage} past its lost deadline: "
            "they will not move by themselves. `obskit orders lost` lists them; "
            "`obskit orders show ORDER_ID` gives the hop and trace of each.",
            meaning="orders past their stage's lost deadline: they will not move by themselves"),
        Alert(
            "OrdersStuck", "warning",
            f"max by (stage, channel) ({STUCK}{p.sel()}) > 0",
            f"{VALUE} {channel} order(s) stuck at stage {stage}",
            f"{VALUE} {channel} order(s) have been at stage {stage} longer than its stuck "
            "deadline. They may still move; past the lost deadline they page as OrdersLost. "
            f"`obskit orders stuck --stage {stage}` lists them.",
            for_=t.for_("5m"),
            meaning="orders past their stage's stuck deadline, not yet lost"),
        Alert(
            "OrdersProcessedTwice", "warning",
            f"{grew(REPEATED + p.sel(), 'stage, channel', t.window('15m'))} > 0",
            f"{COUNT} {channel} order(s) reached stage {stage} twice",
            f"{COUNT} {channel} order(s) reached stage {stage} again in the last "
            f"{t.window('15m')}: a message was processed twice (a redelivery after a crash, or "
            "a duplicate publish). Check the handler is idempotent for that stage.",
            meaning="an order reached the same stage again: its message was processed twice"),
    ])]
