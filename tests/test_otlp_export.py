"""Spans and logs reach a real OTLP receiver over both protocols; logs exactly once."""

import os
import subprocess
import sys
import textwrap

import pytest

from obskit.testing import OtlpReceiver

APP = textwrap.dedent(
    """
    import logging
    # What `opentelemetry-instrument` with logging auto-instrumentation does before the app
    # runs: a second, OTLP-exporting handler on the root logger.
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    import os
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=os.environ["CONTRIB_LOGS_ENDPOINT"])))
    logging.getLogger().addHandler(LoggingHandler(logger_provider=lp))

    import obskit
    from opentelemetry import trace
    obskit.init("exporter-test")
    with trace.get_tracer("t").start_as_current_span("checkout"):
        with obskit.order_context("ord-5", channel="b2b"):
            obskit.get_logger("app").info("from structlog", api_key="k-1")
            logging.getLogger("lib").warning("from stdlib")
    """
)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_and_logs_are_exported_once(protocol):
    with OtlpReceiver(protocol) as receiver, OtlpReceiver("http/protobuf") as contrib:
        env = {**os.environ, **receiver.env(), "OBSKIT_RAISE_INTERNAL_ERRORS": "0",
               "CONTRIB_LOGS_ENDPOINT": contrib.endpoint + "/v1/logs"}
        r = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        (span,) = receiver.wait_for_spans(lambda s: len(s) >= 1)
        logs = receiver.wait_for_logs(lambda ls: len(ls) >= 2)
    assert span.name == "checkout" and span.service_name == "exporter-test"
    assert span.attributes["order.id"] == "ord-5"
    logs = [log for log in logs if not str(log.body).startswith("obskit fast paths")]
    bodies = sorted(str(log.body) for log in logs)
    assert bodies == ["from stdlib", "from structlog"]  # each exactly once
    for log in logs:
        assert log.trace_id == span.trace_id
        assert log.attributes["order_id"] == "ord-5"
        assert log.attributes["channel"] == "b2b"
        assert log.service_name == "exporter-test"
    structlog_record = next(log for log in logs if log.body == "from structlog")
    assert structlog_record.attributes["api_key"] == "[REDACTED]"
    # the contrib handler was removed by init(): it exported nothing
    assert contrib.logs == []
