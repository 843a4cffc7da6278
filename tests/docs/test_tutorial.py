"""The tutorial works as written: its code and commands, run as a reader would, show what it says.

The app is the tutorial's Python block, run by the tutorial's own uvicorn command (on a free port,
with TMPDIR pointing at a directory of the test so the default spans file lands there); the
requests are its curl commands; the expected outputs are the blocks that follow them. Only the
`pip install` lines are not run (no network in tests).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial" / "instrument-your-service.md"
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.M | re.S)]


def block_after(all_blocks: list[tuple[str, str]], predicate) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The block that follows the first block for which ``predicate(body)`` holds."""
    for i, (_, body) in enumerate(all_blocks):
        if predicate(body):
            return all_blocks[i + 1]
    raise AssertionError("the tutorial lost a block the test follows")


def command(all_blocks: list[tuple[str, str]], start: str) -> str:
    lines = [line for lang, body in all_blocks if lang == "sh" for line in body.splitlines()
             if start in line]
    assert lines, f"the tutorial has no command containing {start!r}"
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the tutorial's service exited at start"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the tutorial's service did not start listening")


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "OBSKIT_", "PROMETHEUS_MULTIPROC"))}
    env["TMPDIR"] = str(tmp)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # curl to the local service
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_sh(line: str, port: int, env: dict[str, str], cwd: Path) -> str:
    line = line.replace("localhost:8000", f"127.0.0.1:{port}")
    out = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=15)
    assert out.returncode == 0, (line, out.stderr)
    return out.stdout


def test_the_tutorial_does_what_it_says(tmp_path: Path) -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    all_blocks = blocks(text)
    python = [body for lang, body in all_blocks if lang == "python"]
    assert len(python) == 1, "the tutorial's service is one Python block"
    (tmp_path / "app.py").write_text(python[0])
    env = clean_env(tmp_path)
    port = free_port()

    # 3. Run it: the tutorial's command, with `uvicorn` from the project's venv and a free port.
    run = shlex.split(command(all_blocks, "uvicorn app:app"))
    assignments = dict(a.split("=", 1) for a in run if re.match(r"^[A-Z_]+=", a))
    argv = [a for a in run if not re.match(r"^[A-Z_]+=", a)]
    assert argv[0] == "uvicorn" and "--port" in argv
    argv[argv.index("--port") + 1] = str(port)
    proc = subprocess.Popen([PYTHON, "-m", *argv], cwd=tmp_path, env={**env, **assignments},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)

        # Place an order: the response is the one shown.
        curl = command(all_blocks, "curl -s -X POST")
        shown = json.loads(block_after(all_blocks, lambda b: b.strip() == curl)[1])
        assert json.loads(run_sh(curl, port, env, tmp_path)) == shown

        # 6. The metrics: exactly the lines shown.
        scrape = command(all_blocks, "/metrics")
        shown_metrics = block_after(all_blocks, lambda b: b.strip() == scrape)[1]
        assert set(run_sh(scrape, port, env, tmp_path).splitlines()) == \
            set(shown_metrics.strip().splitlines())
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            stdout, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr

    # 4. The logs: the three lines shown, with the same fields, one trace id and one order.
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    shown_logs = [json.loads(line) for line in _json_lines(all_blocks, '"order accepted"')]
    got = {}
    for want in shown_logs:
        match = [line for line in lines if line.get("logger") == want["logger"]
                 and line.get("order_id") == want.get("order_id", "ord-1001")]
        assert match, f"no {want['logger']} line for the order in the service's output"
        assert set(match[0]) == set(want), (want["logger"], set(match[0]) ^ set(want))
        got[want["logger"]] = match[0]
    trace_ids = {line["trace_id"] for line in got.values()}
    assert len(trace_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", next(iter(trace_ids)))
    assert {line["order_id"] for line in got.values()} == {"ord-1001"}
    assert got["shop"]["event"] == "order accepted" and got["shop"]["channel"] == "b2c"
    (trace_id,) = trace_ids

    # 5. The trace: the span the jq command shows, with the log lines' trace id.
    spans_file = tmp_path / "obskit" / "shop.spans.jsonl"
    assert spans_file.exists(), "no spans file where the tutorial says it is"
    jq = command(all_blocks, "spans.jsonl").replace("/tmp/obskit/", f"{tmp_path}/obskit/")
    shown_span = json.loads(block_after(all_blocks, lambda b: "spans.jsonl" in b
                                        and b.lstrip().startswith("jq"))[1])
    if shutil.which("jq"):
        spans = [json.loads(line) for line in run_sh(jq, port, env, tmp_path).splitlines()]
    else:  # the same selection without jq
        spans = [{"name": s["name"], "trace_id": s["context"]["trace_id"],
                  "order": s["attributes"].get("order.id")}
                 for s in map(json.loads, spans_file.read_text().splitlines())]
    server = [s for s in spans if s["name"] == shown_span["name"]]
    assert server == [{**shown_span, "trace_id": "0x" + trace_id}]

    # 7. obskit doctor: says where the spans go.
    doctor = command(all_blocks, "obskit doctor")
    out = run_sh(doctor, port, env, tmp_path)
    shown_line = block_after(all_blocks, lambda b: b.strip() == doctor)[1].strip()
    expected = " ".join(shown_line.replace("/tmp/obskit/", f"{tmp_path}/obskit/").split())
    assert expected in [" ".join(line.split()) for line in out.splitlines()], out


def _json_lines(all_blocks: list[tuple[str, str]], marker: str) -> list[str]:
    for lang, body in all_blocks:
        if lang == "json" and marker in body:
            return [line for line in body.splitlines() if line.strip()]
    raise AssertionError(f"the tutorial lost its log lines ({marker})")


def test_the_tutorials_install_commands_name_real_extras() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    installs = [line for lang, body in blocks(TUTORIAL.read_text(encoding="utf-8"))
                if lang == "sh" for line in body.splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        for name in re.findall(r"obskit\[([^\]]+)\]|'\.\[([^\]]+)\]'", line):
            for extra in filter(None, name):
                assert extra in extras, f"{line}: no extra {extra!r} in pyproject.toml"
