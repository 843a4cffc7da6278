"""API: RED per route, client and server errors, rate limits by channel and scope."""

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
    query_var,
    scoped,
    stat_panel,
    timeseries,
)

NAME = "api"
HTTP = "http_server_request_duration_seconds"
RATE_LIMITED = "orderflow_rate_limited_total"
RATE_LIMIT_ERRORS = "orderflow_rate_limit_errors_total"


def build(p: Params) -> Board:
    route = match("route", "$route")
    routes = f"{HTTP}_count{p.sel(match(p.service_label, '$service'))}"
    b = Board(p, NAME, "obskit / API",
              "The ingress: shop API (b2c, /api/v1/shop/...), open API (b2b, "
              "/api/v1/partner/...), order status and the MES dashboard. Requests, errors and "
              "latency per route; rate-limited requests by channel and by what was over its "
              "limit.",
              [*label_vars(p, p.ingress_service),
               query_var("route", "Route", f"label_values({routes}, route)")])

    b.row("Requests, errors, duration")
    b.add(timeseries(
        "Requests per route",
        "Requests per second by route template (never the raw path) and status code. "
        "`__unmatched__` collects requests that matched no route.",
        "reqps",
        [Target(f"sum by (route, status_code) (rate({HTTP}_count{scoped(p, route)}"
                "[$__rate_interval]))", "{{route}} {{status_code}}")]))
    b.add(timeseries(
        "Duration per route",
        "p50/p95/p99 request duration by route. Exemplars (on p95) link to the trace of a "
        "request in that bucket.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le, route) (rate({HTTP}_bucket"
                f"{scoped(p, route)}[$__rate_interval])))", f"p{round(q * 100)} {{{{route}}}}",
                exemplar=q == 0.95) for q in (0.5, 0.95, 0.99)]))
    total = f"sum(rate({HTTP}_count{scoped(p, route)}[$__rate_interval]))"
    five = match("status_code", "5..")
    server_errors = f"sum(rate({HTTP}_count{scoped(p, route, five)}[$__rate_interval]))"
    b.add(stat_panel(
        "5xx ratio",
        f"Share of requests answered 5xx. Red at the incident threshold ({p.http_error_ratio:.1%}, "
        "parameter http_error_ratio). No 5xx series at all counts as 0.",
        "percentunit",
        [Target(f"({server_errors} or vector(0)) / {total}")],
        thresholds=above(p.http_error_ratio)))
    b.add(stat_panel(
        "Requests in progress",
        "HTTP requests being served now, by method. Climbing while the request rate is flat "
        "means requests wait on something (database, Redis, the broker).",
        "short",
        [Target(f"sum by (method) (http_server_active_requests{scoped(p)})", "{{method}}")]))
    b.add(timeseries(
        "Client errors (4xx)",
        "4xx answers per second by route and status: 422 invalid orders, 401/403 bad API keys, "
        "404 unknown orders, 429 rate-limited (see below). A jump after a partner release is "
        "usually their bug.",
        "reqps",
        [Target(f"sum by (route, status_code) (rate({HTTP}_count"
                f"{scoped(p, route, match('status_code', '4..'))}[$__rate_interval]))",
                "{{route}} {{status_code}}")]))
    b.add(timeseries(
        "Server errors (5xx)",
        EMPTY_WHILE_HEALTHY + "5xx answers per second by route and status. Any 5xx on an order "
        "route is an order the client was told we did not take: check its trace.",
        "reqps",
        [Target(f"sum by (route, status_code) (rate({HTTP}_count"
                f"{scoped(p, route, match('status_code', '5..'))}[$__rate_interval]))",
                "{{route}} {{status_code}}")],
        thresholds=above(0)), expect="empty_while_healthy")

    b.row("Rate limits")
    chan = match("channel", "$channel")
    b.add(timeseries(
        "Rate-limited requests by channel and scope",
        "Requests refused with 429 per second, by channel and by what was over its limit: "
        "`ip` (a client address) or `api_key` (a partner's key). A partner at its key's limit "
        "is working as agreed; many `ip` refusals on the shop look like abuse.",
        "reqps",
        [Target(f"sum by (channel, scope) (rate({RATE_LIMITED}{scoped(p, chan)}"
                "[$__rate_interval]))", "{{channel}} {{scope}}")]))
    b.add(timeseries(
        "Rate-limit checks failed",
        EMPTY_WHILE_HEALTHY + "rate-limit checks that could not be made (Redis unreachable), by "
        "channel. Those requests were let through unlimited: losing orders is worse than "
        "briefly not limiting.",
        "reqps",
        [Target(f"sum by (channel) (rate({RATE_LIMIT_ERRORS}{scoped(p, chan)}"
                "[$__rate_interval]))", "{{channel}}")]), expect="empty_while_healthy")
    b.add(timeseries(
        "Orders accepted by channel",
        "Orders the ingress accepted (answered 202) per second, by channel.",
        "ops",
        [Target(f"sum by (channel) (rate(obskit_order_stage_transitions_total"
                f"{scoped(p, eq('stage', 'accepted'), chan)}[$__rate_interval]))",
                "{{channel}}")]))
    return b
