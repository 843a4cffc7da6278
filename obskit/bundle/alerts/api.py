"""API: the share of requests answered 5xx, per service."""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import PERCENT, Alert, Group, Timing, label

FILE = "api.rules.yml"
HTTP = "http_server_request_duration_seconds_count"


def groups(p: Params) -> list[Group]:
    t = Timing(p)
    svc = p.service_label
    w = t.window("5m")
    five = 'status_code=~"5.."'
    return [Group("obskit-api", [
        Alert(
            "ApiErrorRatioHigh", "critical",
            f"sum by ({svc}) (rate({HTTP}{p.sel(five)}[{w}]))"
            f"\n/\n"
            f"sum by ({svc}) (rate({HTTP}{p.sel()}[{w}]))\n"
            f"> {p.http_error_ratio:g}",
            f"{label(svc)} answers {PERCENT} of requests with 5xx",
            f"{PERCENT} of the requests to {label(svc)} failed with a 5xx over the last {w} "
            f"(threshold {p.http_error_ratio:.1%}, http_error_ratio). Shop customers and "
            "partners get errors: orders may not be accepted.",
            for_=t.for_("5m"),
            meaning=f"more than {p.http_error_ratio:.1%} of a service's requests answered 5xx"),
    ])]
