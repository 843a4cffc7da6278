"""A pytest plugin: with ``OBSKIT_NO_SKIPS=1`` a skipped test fails instead, naming the fix.

obskit's tests (and orderflow's) run against the real PostgreSQL, Redis and RabbitMQ of the test
machine and a few system tools (promtool, chromium, ...). A test that skips itself because one of
them is missing would let a run pass without testing anything, so ``make test`` (and with it CI)
sets ``OBSKIT_NO_SKIPS=1``; a developer running ``pytest`` by hand still gets the skip. xfail is
left alone: it is not a skip.

Load it from a conftest (``pytest_plugins = ["obskit.testing.pytest_plugin"]``) or with
``-p obskit.testing.pytest_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

#: Set to 1 (as ``make test`` does) to turn every skip into a failure.
ENV_NO_SKIPS = "OBSKIT_NO_SKIPS"

_SERVICES = "start the local services: scripts/services.sh (PostgreSQL, Redis, RabbitMQ)"
_SYSTEM = "install the system packages the tests use: scripts/system-deps.sh"
_PYTHON = ("install the test extras: make setup (pip install -e '.[test]' "
           "-e 'examples/orderflow[test]')")

#: (words of a skip reason, lower case) -> the fix; the first match wins.
_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("could not import", "no module named"), _PYTHON),
    (("rabbitmq", "amqp", "postgres", "redis"), _SERVICES),
    (("chromium", "chromedriver", "promtool", "amtool", "prometheus", "alertmanager", "wrk",
      "docker-compose"), _SYSTEM),
)


def enabled() -> bool:
    return os.environ.get(ENV_NO_SKIPS, "").strip().lower() in ("1", "true", "yes")


def fix_for(reason: str) -> str:
    """The command that provides what a skip ``reason`` says is missing."""
    words = reason.lower()
    for needles, fix in _FIXES:
        if any(n in words for n in needles):
            return fix
    return f"{_SERVICES}; {_SYSTEM}; {_PYTHON}"


def _reason(longrepr: object) -> tuple[str, str]:
    """(where, reason) of a skip report: pytest stores ``(path, lineno, "Skipped: ...")``."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, message = longrepr
        return f"{path}:{lineno}", str(message).removeprefix("Skipped: ")
    return "", str(longrepr)


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    where, reason = _reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped, and {ENV_NO_SKIPS}=1 makes a skip a failure: {reason}\n"
        f"  at {where or report.nodeid}\n"
        f"  fix: {fix_for(reason)}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and enabled():
        _as_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # A module-level skip (``pytest.importorskip``, ``pytest.skip(allow_module_level=True)``).
    report = yield
    if report.skipped and enabled():
        _as_failure(report)
    return report
