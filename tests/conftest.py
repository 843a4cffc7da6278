import os

import pytest

# OBSKIT_NO_SKIPS=1 (make test, CI): a skipped test fails, naming the service or tool to install.
pytest_plugins = ["obskit.testing.pytest_plugin", "pytester"]

# Internal errors are swallowed in production ("less telemetry, never a crash"); a test run
# should see them. Tests that exercise the swallowing set it back to "0".
os.environ.setdefault("OBSKIT_RAISE_INTERNAL_ERRORS", "1")


@pytest.fixture(autouse=True)
def _clean_obskit():
    """Every test starts and ends without an active obskit handle."""
    import obskit
    from obskit.testing import reset_global_tracer_provider

    yield
    obskit.shutdown()
    reset_global_tracer_provider()


@pytest.fixture
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent
