"""OTLP protobuf bytes straight from the export process's tuples (``obskit._export_process``).

The SDK's encoder builds a protobuf message object per span, attribute and value in Python
(~50 µs per span, ~60 µs per log record); the export process would pay that on the machine's
other core. This writes the same bytes directly, field by field in field-number order as the
protobuf runtime serialises them, and keeps the encoded ``KeyValue`` of repeated attribute values
(method, route, status, service, ...), which is most of a span. ``tests/test_otlp_encode.py``
checks the bytes equal ``encode_spans`` / ``encode_logs`` of the SDK for spans and records with
every field the SDK's encoder writes. Nothing on PyPI does this for OpenTelemetry's Python types,
hence our own; the SDK's exporters still send the request (gRPC, retries, TLS, headers).

Layout (opentelemetry-proto, trace/v1 and logs/v1): the field numbers in the constants below.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

_Q = struct.Struct("<Q").pack  # fixed64
_I = struct.Struct("<I").pack  # fixed32
_D = struct.Struct("<d").pack  # double
_VARINTS = [bytes([i]) for i in range(128)]


def varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _VARINTS[n]
    if n < 0:
        n &= 0xFFFFFFFFFFFFFFFF  # int64: two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(data)) + data


def _string(tag: bytes, text: str | None) -> bytes:
    """A proto3 string field: left out when empty."""
    return _ld(tag, text.encode()) if text else b""


def any_value(value: Any) -> bytes:
    """The body of an ``AnyValue`` (a oneof: written even when it holds a zero)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _D(value)
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, Sequence):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", key_value(str(k), v))
                                     for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def key_value(key: str, value: Any) -> bytes:
    return _ld(b"\x0a", key.encode()) + _ld(b"\x12", any_value(value))


_CACHE_TYPES = (str, int, bool)
_CACHE_MAX = 8192
_STR_CACHE_MAX = 128  # longer strings (paths with ids, user agents) are rarely repeated


class Attributes:
    """Encodes attribute maps as repeated ``KeyValue`` fields of one tag, remembering the
    encoding of (key, value) pairs seen before."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, type, Any], bytes] = {}

    def encode(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        cache = self._cache
        parts = []
        for key, value in attributes.items():
            kind = type(value)
            if kind in _CACHE_TYPES and (kind is not str or len(value) <= _STR_CACHE_MAX):
                k = (key, kind, value)
                field = cache.get(k)
                if field is None:
                    field = _ld(tag, key_value(key, value))
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[k] = field
                parts.append(field)
                continue
            try:
                parts.append(_ld(tag, key_value(key, value)))
            except TypeError:  # as the SDK: an attribute it cannot encode is left out
                continue
        return b"".join(parts)


def _scope(scope: tuple[Any, ...] | None, attributes: Attributes) -> bytes:
    """An ``InstrumentationScope`` (name 1, version 2, attributes 3); an empty one for None."""
    if scope is None:
        return b""
    name, version, _schema, attrs = scope
    return _string(b"\x0a", name) + _string(b"\x12", version) + attributes.encode(b"\x1a", attrs)


def _group_key(attrs: Mapping[str, Any] | None, schema: str | None) -> tuple[str, str]:
    # The SDK groups by Resource / InstrumentationScope equality (values, not identity).
    return repr(sorted((attrs or {}).items())), schema or ""


class SpanEncoder:
    """``ExportTraceServiceRequest`` bytes of a ``("spans", ...)`` frame's items."""

    def __init__(self) -> None:
        self.attributes = Attributes()

    def request(self, frame: tuple[Any, ...]) -> bytes:
        _, resource_table, scope_table, items = frame
        groups: dict[tuple[str, str], tuple[int, dict[Any, tuple[int, list[bytes]]]]] = {}
        resource_of = [_group_key(a, s) for a, s in resource_table]
        scope_of = [None if s is None else (s[0], s[1], s[2], _group_key(s[3], None))
                    for s in scope_table]
        encode = self.span
        for item in items:
            r, s = item[17], item[18]
            rkey = resource_of[r]
            group = groups.get(rkey)
            if group is None:
                group = groups[rkey] = (r, {})
            scopes = group[1]
            skey = scope_of[s]
            entry = scopes.get(skey)
            if entry is None:
                entry = scopes[skey] = (s, [])
            entry[1].append(encode(item))
        out = []
        attrs = self.attributes
        for r, scopes in groups.values():
            resource_attrs, resource_schema = resource_table[r]
            body = [_ld(b"\x0a", attrs.encode(b"\x0a", resource_attrs))]
            for s, spans in scopes.values():
                scope = scope_table[s]
                scope_body = [_ld(b"\x0a", _scope(scope, attrs))]
                scope_body.extend(_ld(b"\x12", span) for span in spans)
                if scope is not None:
                    scope_body.append(_string(b"\x1a", scope[2]))
                body.append(_ld(b"\x12", b"".join(scope_body)))
            body.append(_string(b"\x1a", resource_schema))
            out.append(_ld(b"\x0a", b"".join(body)))
        return b"".join(out)

    def span(self, item: tuple[Any, ...]) -> bytes:
        (name, trace_id, span_id, _flags, state, parent, kind, start, end, code, description,
         attributes, events, links, dropped_attributes, dropped_events, dropped_links,
         _r, _s) = item
        enc = self.attributes.encode
        parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
        if state:
            parts.append(_string(b"\x1a", ",".join(f"{k}={v}" for k, v in state)))
        if parent is not None:
            parts += (b"\x22\x08", parent[1].to_bytes(8, "big"))
        parts += (_string(b"\x2a", name), b"\x30", varint(kind + 1))  # SDK kind + 1: OTLP's
        if start:
            parts += (b"\x39", _Q(start))
        if end:
            parts += (b"\x41", _Q(end))
        parts.append(enc(b"\x4a", attributes))
        if dropped_attributes:
            parts += (b"\x50", varint(dropped_attributes))
        for ev_name, ts, ev_attrs, ev_dropped in events or ():
            ev = [b"\x09" + _Q(ts) if ts else b"", _string(b"\x12", ev_name),
                  enc(b"\x1a", ev_attrs), b"\x20" + varint(ev_dropped) if ev_dropped else b""]
            parts.append(_ld(b"\x5a", b"".join(ev)))
        if dropped_events:
            parts += (b"\x60", varint(dropped_events))
        for ctx, link_attrs, link_dropped in links or ():
            link = [b"\x0a\x10", ctx[0].to_bytes(16, "big"), b"\x12\x08",
                    ctx[1].to_bytes(8, "big"), enc(b"\x22", link_attrs),
                    b"\x28" + varint(link_dropped) if link_dropped else b"",
                    b"\x35", _I(0x300 if ctx[3] else 0x100)]
            parts.append(_ld(b"\x6a", b"".join(link)))
        if dropped_links:
            parts += (b"\x70", varint(dropped_links))
        status = _string(b"\x12", description) + (b"\x18" + varint(code) if code else b"")
        parts.append(_ld(b"\x7a", status))
        # flags (16, fixed32): "has is_remote", and is_remote of the parent
        parts += (b"\x85\x01", _I(0x300 if parent is not None and parent[3] else 0x100))
        return b"".join(parts)


class LogEncoder:
    """``ExportLogsServiceRequest`` bytes of ``("logs", ...)`` items, as the SDK's ``Logger``
    makes them with ``resource`` and the ``obskit`` scope (``_OtlpExport``)."""

    def __init__(self, resource_attributes: Mapping[str, Any], schema_url: str | None,
                 scope_name: str = "obskit") -> None:
        self.attributes = Attributes()
        self._resource = _ld(b"\x0a", self.attributes.encode(b"\x0a", resource_attributes))
        self._resource_schema = _string(b"\x1a", schema_url)
        self._scope = _ld(b"\x0a", _string(b"\x0a", scope_name))

    def request(self, items: Sequence[tuple[Any, ...]]) -> bytes:
        enc = self.attributes.encode
        records = []
        for observed, trace_id, span_id, flags, text, number, body, attrs in items:
            parts = [b"\x10" + varint(number) if number else b"", _string(b"\x1a", text),
                     _ld(b"\x2a", any_value(body)), enc(b"\x32", attrs),
                     b"\x45" + _I(flags) if flags else b""]
            if trace_id:
                parts += (b"\x4a\x10", trace_id.to_bytes(16, "big"))
            if span_id:
                parts += (b"\x52\x08", span_id.to_bytes(8, "big"))
            if observed:
                parts += (b"\x59", _Q(observed))
            records.append(_ld(b"\x12", b"".join(parts)))
        scope_logs = _ld(b"\x12", self._scope + b"".join(records))
        return _ld(b"\x0a", self._resource + scope_logs + self._resource_schema)
