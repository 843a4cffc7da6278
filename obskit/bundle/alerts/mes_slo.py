"""MES latency: the accept → done SLO with multi-window, multi-burn-rate alerts, and slow stages.

The SLO: ``slo_accept_to_done_target`` of orders are done within ``slo_accept_to_done_seconds``
of acceptance, per channel, over 30 days. A late order is one outside the histogram bucket of
that bound. The alerts are the Google SRE workbook's ("Alerting on SLOs", table 5-8): page when
the budget burns 14.4× too fast over 1h (and still over 5m) or 6× over 6h (and 30m); ticket at
3× over 1d (and 2h) or 1× over 3d (and 6h). The short window makes an alert stop soon after the
burn does. Recording rules keep one ratio per window; their names carry the nominal window even
when ``alert_time_scale`` shrinks it.
"""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import PERCENT, SECONDS, Alert, Group, Record, Timing, label

FILE = "mes-slo.rules.yml"
AGE = "obskit_order_stage_age_seconds"
DURATION = "obskit_orders_stage_duration_seconds"
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
#: (burn rate, long window, short window)
PAGE = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
TICKET = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))


def late_ratio(window: str) -> str:
    """The recording rule: the share of orders done late over ``window``, per channel."""
    return f"channel:obskit_orders_late:ratio_rate{window}"


def le_matcher(bound: float) -> str:
    """The bucket of ``bound``. Prometheus 3 stores ``le`` as a float ("60.0"); 2.x keeps what
    the client wrote ("60.0" from Python, "60" from Go): match both."""
    if float(bound).is_integer():
        n = int(bound)
        return f'le=~"{n}|{n}[.]0"'
    return f'le="{bound!r}"'


def _burn(pairs: tuple[tuple[float, str, str], ...], budget: float) -> str:
    def over(window: str, rate: float) -> str:
        return f"{late_ratio(window)} > ({rate:g} * {budget:g})"

    return "\nor\n".join(f"(\n  {over(long, rate)}\nand\n  {over(short, rate)}\n)"
                         for rate, long, short in pairs)


def groups(p: Params) -> list[Group]:
    t = Timing(p)
    budget = round(1 - p.slo_accept_to_done_target, 10)
    slo = f"{p.slo_accept_to_done_seconds:g}s"
    target = f"{round(p.slo_accept_to_done_target * 100, 6):g}%"
    done = p.sel('stage="done"')
    good = p.sel(f'stage="done", {le_matcher(p.slo_accept_to_done_seconds)}')
    records: list[Alert | Record] = [
        Record(late_ratio(w), (
            f"1 - (\n"
            f"  sum by (channel) (rate({AGE}_bucket{good}[{t.window(w)}]))\n"
            f"/\n"
            f"  sum by (channel) (rate({AGE}_count{done}[{t.window(w)}]))\n"
            f")"))
        for w in WINDOWS]
    channel, stage = label("channel"), label("stage")
    return [Group("obskit-mes-slo", [
        *records,
        Alert(
            "OrderLatencyBudgetBurn", "critical", _burn(PAGE, budget),
            f"{channel} orders are late: the latency error budget burns fast",
            f"{PERCENT} of {channel} orders took longer than {slo} from acceptance to done "
            f"(SLO: {target} within {slo}). At this rate the 30-day error budget is gone in "
            "under 5 days. Find the slow stage on the order-flow dashboard.",
            meaning=f"orders slower than the SLO ({target} done within {slo}) at 6× to 14.4× "
                    "the sustainable rate: pages"),
        Alert(
            "OrderLatencyBudgetBurn", "warning", _burn(TICKET, budget),
            f"{channel} orders are late: the latency error budget burns slowly",
            f"{PERCENT} of {channel} orders took longer than {slo} from acceptance to done "
            f"(SLO: {target} within {slo}). At this rate the 30-day error budget runs out "
            "within the month. Find the slow stage on the order-flow dashboard.",
            meaning="the same at 1× to 3× over a day or three: a ticket, not a page"),
        Alert(
            "OrderStageSlow", "warning",
            f"histogram_quantile(0.95, sum by (le, stage, channel) (rate({DURATION}_bucket"
            f"{p.sel()}[{t.window('10m')}]))) > {p.mes_stage_p95_seconds:g}",
            f"{channel} orders spend {SECONDS} (p95) at stage {stage}",
            f"95% of {channel} orders leave stage {stage} within {SECONDS}; more than "
            f"{p.mes_stage_p95_seconds:g}s (mes_stage_p95_seconds) is slow. The MES dashboard "
            "shows whether one instance or all of them are slow.",
            for_=t.for_("15m"),
            meaning=f"the p95 time orders spend in one stage is above "
                    f"{p.mes_stage_p95_seconds:g}s"),
    ])]
