import io
import json
import logging
import re

from opentelemetry import trace

import obskit
from obskit.processors import REDACTED, Scrubber
from obskit.testing import init_for_tests

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def test_every_line_has_the_base_fields():
    with init_for_tests("crm", disabled_instrumentations="all") as t:
        obskit.get_logger("crm.api").info("order received", items=2)
    (line,) = t.logs
    assert line["event"] == "order received"
    assert line["level"] == "info"
    assert line["service"] == "crm"
    assert line["logger"] == "crm.api"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", line["timestamp"])
    assert line["items"] == 2
    assert "trace_id" not in line and "order_id" not in line  # outside span and order


def test_span_and_order_context_reach_structlog_and_stdlib_lines():
    with init_for_tests("mes", disabled_instrumentations="all") as t:
        tracer = trace.get_tracer("t")
        with tracer.start_as_current_span("price") as span:
            with obskit.order_context("ord-42", channel="b2b", partner="acme"):
                obskit.get_logger("mes").info("pricing")
                logging.getLogger("somelib.pool").warning("slow %s", "query", extra={"ms": 12})
        ctx = span.get_span_context()
    lines = t.logs
    assert [ln["event"] for ln in lines] == ["pricing", "slow query"]
    for ln in lines:
        assert HEX32.match(ln["trace_id"]) and int(ln["trace_id"], 16) == ctx.trace_id
        assert HEX16.match(ln["span_id"]) and int(ln["span_id"], 16) == ctx.span_id
        assert (ln["order_id"], ln["channel"], ln["partner"]) == ("ord-42", "b2b", "acme")
        assert ln["service"] == "mes"
    assert lines[1]["logger"] == "somelib.pool" and lines[1]["level"] == "warning"
    assert lines[1]["ms"] == 12
    # the span got the order too
    (finished,) = t.spans
    assert finished.attributes["order.id"] == "ord-42"
    assert finished.attributes["order.channel"] == "b2b"


def test_order_context_ends_with_the_block_and_nests():
    with init_for_tests("svc", disabled_instrumentations="all") as t:
        log = obskit.get_logger("x")
        with obskit.order_context("a", channel="b2c"):
            with obskit.order_context("b"):
                log.info("inner")
            log.info("outer")
        log.info("after")
    inner, outer, after = t.logs
    assert (inner["order_id"], inner["channel"]) == ("b", "b2c")
    assert outer["order_id"] == "a"
    assert "order_id" not in after


def test_exceptions_are_rendered_once_with_traceback():
    with init_for_tests("svc", disabled_instrumentations="all") as t:
        try:
            raise ValueError("bad volume")
        except ValueError:
            obskit.get_logger("x").exception("pricing failed")
            logging.getLogger("lib").exception("lib failed")
    a, b = t.logs
    assert a["level"] == "error" and "ValueError: bad volume" in a["exception"]
    assert b["level"] == "error" and "ValueError: bad volume" in b["exception"]


def test_scrubbing_secret_keys_but_not_ordinary_words():
    with init_for_tests("svc", disabled_instrumentations="all", scrub_keys="iban") as t:
        obskit.get_logger("x").info(
            "login",
            password="hunter2", api_key="k-123", Authorization="Bearer abc", session_cookie="c",
            accessToken="t", iban="DE00", headers={"X-Api-Key": "k", "Accept": "json"},
            token_count=7, monkey="banana", passage="text", tokenizer="bpe",
            dsn="postgresql://app:pa55@db:5432/orders",
            note="retrying with password=hunter2 and token: abc123",
        )
        logging.getLogger("lib").info("connect", extra={"secret": "s", "user": "bob"})
    line, stdlib_line = t.logs
    for key in ("password", "api_key", "Authorization", "session_cookie", "accessToken", "iban"):
        assert line[key] == REDACTED, key
    assert line["headers"] == {"X-Api-Key": REDACTED, "Accept": "json"}
    assert (line["token_count"], line["monkey"], line["passage"], line["tokenizer"]) == (
        7, "banana", "text", "bpe")
    assert line["dsn"] == f"postgresql://app:{REDACTED}@db:5432/orders"
    assert "hunter2" not in line["note"] and "abc123" not in line["note"]
    assert stdlib_line["secret"] == REDACTED and stdlib_line["user"] == "bob"
    raw = t.stream.getvalue()
    for secret in ("hunter2", "k-123", "pa55", "DE00"):
        assert secret not in raw


def test_scrubber_key_classification():
    s = Scrubber()
    for key in ("password", "db_password", "X-Auth-Token", "client_secret", "set-cookie",
                "privateKey", "private_key", "API_KEY", "refresh_token"):
        assert s.is_secret(key), key
    for key in ("monkey", "token_count", "token_type", "passage", "author", "keyboard",
                "tokenizer", "order_id", "secretary_name"):
        assert not s.is_secret(key), key


def test_level_filtering_applies_to_both_apis():
    with init_for_tests("svc", disabled_instrumentations="all", log_level="WARNING") as t:
        obskit.get_logger("x").info("hidden")
        logging.getLogger("lib").info("hidden too")
        obskit.get_logger("x").warning("shown")
    assert [ln["event"] for ln in t.logs] == ["shown"]


def test_console_format_is_readable_not_json():
    stream = io.StringIO()
    obskit.init("svc", log_format="console", log_stream=stream, spans_file="off",
                disabled_instrumentations="all")
    obskit.get_logger("x").info("hello console", order="o1")
    out = stream.getvalue()
    assert "hello console" in out
    try:
        json.loads(out.splitlines()[0])
    except ValueError:
        pass
    else:
        raise AssertionError("console format printed JSON")


def _json_lines(path):  # without init()'s own start-up report (obskit's fast paths)
    return [json.loads(ln) for ln in path.read_text().splitlines()
            if '"obskit fast paths ' not in ln]


def test_lines_to_a_file_are_batched_and_complete_after_flush(tmp_path):
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("svc", log_stream=stream, log_format="json", spans_file="off",
                    disabled_instrumentations="all")
        log = obskit.get_logger("x")
        log.info("first")
        logging.getLogger("lib").warning("second")
        # Queued, not written per line: the file sees them at the next flush.
        obskit.get_handle().force_flush()
        assert [ln["event"] for ln in _json_lines(path)] == ["first", "second"]
        log.info("third")
        obskit.shutdown()  # flushes what is still queued
        assert [ln["event"] for ln in _json_lines(path)] == ["first", "second", "third"]


def test_batched_lines_from_threads_keep_their_order_and_overflow_is_written_inline(tmp_path):
    import threading

    from obskit import _deferred

    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("svc", log_stream=stream, log_format="json", spans_file="off",
                    disabled_instrumentations="all")

        def worker(n):
            log = obskit.get_logger("w")
            for i in range(1500):  # more than MAX_PENDING in all: written by the loggers too
                log.info("line", worker=n, i=i)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(_deferred._pending) < _deferred.MAX_PENDING
        obskit.shutdown()
        lines = _json_lines(path)
    assert len(lines) == 6000
    for n in range(4):  # each thread's lines arrive complete and in order
        assert [ln["i"] for ln in lines if ln["worker"] == n] == list(range(1500))


def test_a_forked_child_does_not_repeat_the_parents_queued_lines(tmp_path):
    import os

    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("svc", log_stream=stream, log_format="json", spans_file="off",
                    disabled_instrumentations="all")
        obskit.get_logger("x").info("before fork")
        pid = os.fork()
        if pid == 0:  # child: log one line of its own and leave without atexit hooks
            try:
                obskit.get_logger("x").info("child")
                obskit.get_handle().force_flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        obskit.get_logger("x").info("parent after fork")
        obskit.shutdown()
    events = [ln["event"] for ln in _json_lines(path)]
    assert sorted(events) == ["before fork", "child", "parent after fork"]
    assert events[0] == "before fork"


def test_a_forked_child_starts_its_own_flusher(tmp_path):
    """The writer knows its process by a fork hook, not by asking getpid() per line: a child's
    lines are written by a flusher thread of its own, with no explicit flush."""
    import os

    from obskit.testing import wait_for

    path = tmp_path / "out.log"
    with path.open("w") as stream:
        obskit.init("svc", log_stream=stream, log_format="json", spans_file="off",
                    disabled_instrumentations="all")
        obskit.get_logger("x").info("parent")  # the parent's flusher runs
        obskit.get_handle().force_flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                obskit.get_logger("x").info("child, flushed by its own thread")
                wait_for(lambda: "flushed by its own thread" in path.read_text(), timeout=5,
                         interval=0.01)
                code = 0
            finally:
                os._exit(code)  # no atexit hooks, no flush
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child's flusher never wrote its line"
        obskit.shutdown()
    events = [ln["event"] for ln in _json_lines(path)]
    assert events == ["parent", "child, flushed by its own thread"]




def test_a_plain_line_renders_to_the_same_text_as_through_the_full_renderer():
    # The access line's orjson call without options must give the renderer's bytes, and hand
    # what orjson refuses to the renderer's own fallback (json).
    from obskit._logging import _json_renderer, _plain_json_renderer

    full = _json_renderer()
    plain = _plain_json_renderer(full)
    lines = [
        {"event": "GET /items/1 200", "status_code": 200, "duration_ms": 0.123, "ok": True,
         "client": None, "path": "/größe/✓/\"q\"\\\n\t\x00", "f": 0.1 + 0.2, "big": 2**63 - 1,
         "neg": -1e-300},
        {"event": "x", "huge": 2**70},  # beyond 64 bits: orjson refuses, json writes it
        {"event": "x", "lone": "\ud800"},  # a lone surrogate: the same
    ]
    for line in lines:
        assert plain(dict(line)) == full(None, "info", dict(line))
    assert json.loads(plain(dict(lines[1])))["huge"] == 2**70
