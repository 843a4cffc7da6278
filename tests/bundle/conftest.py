"""The query grammar checker: tests/bundle/querycheck run with Node.js.

Node and npm are required, not optional: a bundle whose queries were never parsed must not pass
CI by skipping. ``npm ci`` runs only when ``node_modules`` is missing or older than the lock file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from obskit.bundle._queries import Query

QUERYCHECK = Path(__file__).resolve().parent / "querycheck"
NODE_MAJOR_MIN = 20

Check = Callable[[Sequence[Query]], list[dict[str, Any]]]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: the bundle's queries are parsed with Grafana's "
                    f"grammars under Node.js >= {NODE_MAJOR_MIN} (tests/bundle/querycheck). "
                    "Install Node.js (https://nodejs.org, or `apt-get install nodejs npm`).",
                    pytrace=False)
    return path


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=QUERYCHECK, capture_output=True, text=True, check=False,
                          **kwargs)


def _installed() -> bool:
    # npm writes node_modules/.package-lock.json at the end of every install.
    marker = QUERYCHECK / "node_modules" / ".package-lock.json"
    lock = QUERYCHECK / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def querycheck() -> Check:
    """``check(queries)``: the queries Grafana's grammars reject, as check.mjs reports them.

    Variables are substituted with ``Query.concrete()`` first; each failure also carries the
    query as shipped (``shipped``).
    """
    node = _tool("node")
    npm = _tool("npm")
    version = _run([node, "--version"]).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        pytest.fail(f"Node.js {version} is too old for tests/bundle/querycheck: need "
                    f">= {NODE_MAJOR_MIN}", pytrace=False)
    if not _installed():
        done = _run([npm, "ci", "--no-audit", "--no-fund"], timeout=300)
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {QUERYCHECK} failed:\n{done.stderr}", pytrace=False)

    def check(queries: Sequence[Query]) -> list[dict[str, Any]]:
        payload = [{"lang": q.lang, "expr": q.concrete(), "source": q.source} for q in queries]
        done = _run([node, "check.mjs"], input=json.dumps(payload), timeout=120)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"check.mjs exited {done.returncode}: {done.stderr}")
        failures: list[dict[str, Any]] = json.loads(done.stdout)
        shipped = {(p["source"], p["expr"]): q.expr for p, q in zip(payload, queries, strict=True)}
        for f in failures:
            f["shipped"] = shipped[f["source"], f["expr"]]
        return failures

    return check
