"""PublishProperties.marshal() must give pamqp's bytes (and pamqp's errors) for every input."""

import datetime
import decimal
import logging

import pytest
from pamqp import header
from pamqp.commands import Basic

from obskit.rabbitmq._properties import PublishProperties

TS = datetime.datetime(2026, 11, 26, 3, 4, 5, tzinfo=datetime.UTC)
HEADERS = {
    "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
    "baggage": "order.id=ord-1,order.channel=b2c",
    "x-attempt": 3,
    "x-ok": True,
    "x-ratio": 0.5,
    "x-price": decimal.Decimal("12.50"),
    "x-nested": {"a": "b", "n": 1},
    "x-list": ["a", 1, False],
    "x-when": TS,
    "x-unicode": "Größe ✓",
    "x-none": None,
}

CASES = [
    {},
    {"delivery_mode": 2},
    {"content_type": "application/json", "delivery_mode": 2, "message_id": "m-1",
     "timestamp": TS, "headers": {"traceparent": HEADERS["traceparent"],
                                  "baggage": HEADERS["baggage"]}},
    {"headers": {}},
    {"headers": HEADERS},
    {"content_type": "", "message_id": "", "correlation_id": "c"},  # '' is left out, as None
    {"content_type": "text/plain", "content_encoding": "gzip", "headers": {"k": "v"},
     "delivery_mode": 1, "priority": 9, "correlation_id": "corr",
     "reply_to": "amq.rabbitmq.reply-to", "expiration": "60000", "message_id": "id",
     "timestamp": TS, "message_type": "order.created",
     "user_id": "guest", "app_id": "crm"},
    {"timestamp": datetime.datetime(2026, 1, 1, 12, 0)},  # naive: UTC for both
    {"message_id": "ü" * 127},  # 254 bytes: still a short string
    {"headers": {"z": "last", "a": "first", "m": "middle"}},  # pamqp sorts the keys
]


@pytest.mark.parametrize("fields", CASES)
def test_same_bytes_as_pamqp(fields):
    ours = PublishProperties(**fields)
    theirs = Basic.Properties(**fields)
    assert ours.marshal() == theirs.marshal()
    # And the content header decodes to what pamqp's own frame decodes to.
    decoded = []
    for props in (ours, theirs):
        frame = header.ContentHeader(0, 10, props)
        out = header.ContentHeader()
        out.unmarshal(frame.marshal())
        decoded.append(out.properties)
    assert decoded[0] == decoded[1]


def test_long_header_name_is_truncated_like_pamqp(caplog):
    fields = {"headers": {"k" * 200: "v", "short": "x"}}
    with caplog.at_level(logging.WARNING):
        assert PublishProperties(**fields).marshal() == Basic.Properties(**fields).marshal()
    assert "Truncating key" in caplog.text


@pytest.mark.parametrize("fields", [
    {"message_id": "x" * 256},  # too long for a short string
    {"content_type": 12},  # not a string
    {"headers": {"k": object()}},  # no AMQP type
    {"expiration": 60000},  # not a string
])
def test_same_errors_as_pamqp(fields):
    with pytest.raises(TypeError) as theirs:
        Basic.Properties(**fields).marshal()
    with pytest.raises(TypeError) as ours:
        PublishProperties(**fields).marshal()
    assert str(ours.value) == str(theirs.value)
