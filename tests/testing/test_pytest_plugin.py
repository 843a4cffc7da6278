"""obskit.testing.pytest_plugin: with OBSKIT_NO_SKIPS=1 every skip fails and names its fix."""

from __future__ import annotations

import pytest

from obskit.testing.pytest_plugin import ENV_NO_SKIPS

SKIPPING = """
import pytest

def test_needs_rabbitmq():
    pytest.skip("RabbitMQ not reachable: connection refused")

@pytest.mark.skipif(True, reason="Debian chromium and chromedriver are not installed")
def test_needs_a_browser():
    pass

@pytest.mark.xfail(reason="a known bug, not a missing service")
def test_known_bug():
    assert False

def test_runs():
    pass
"""


@pytest.fixture(autouse=True)
def _lean_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the installed plugins (schemathesis, hypothesis, ...) the inner run starts in a
    # fraction of the time; it needs none of them.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # In a process of its own, loaded the way a real run loads it.
    return pytester.runpytest_subprocess("-p", "obskit.testing.pytest_plugin", "-p",
                                         "no:cacheprovider", *args)


def test_with_no_skips_each_skip_fails_and_names_the_fix(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NO_SKIPS, "1")
    pytester.makepyfile(test_services=SKIPPING)
    result = _run(pytester)
    # The skipif mark is evaluated at setup, so that one is reported as an error.
    result.assert_outcomes(failed=1, errors=1, passed=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "RabbitMQ not reachable: connection refused" in out
    assert "fix: start the local services: scripts/services.sh" in out
    assert "Debian chromium and chromedriver are not installed" in out
    assert "fix: install the system packages the tests use: scripts/system-deps.sh" in out


def test_without_it_a_skip_stays_a_skip(pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_NO_SKIPS, raising=False)
    pytester.makepyfile(test_services=SKIPPING)
    result = _run(pytester)
    result.assert_outcomes(skipped=2, passed=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_a_module_level_skip_fails_the_collection(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NO_SKIPS, "1")
    pytester.makepyfile(test_browser="""
import pytest
webdriver = pytest.importorskip("a_module_nobody_installed")

def test_page():
    pass
""")
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    assert result.ret != pytest.ExitCode.OK
    out = result.stdout.str()
    assert "a_module_nobody_installed" in out
    assert "fix: install the test extras: make setup" in out
