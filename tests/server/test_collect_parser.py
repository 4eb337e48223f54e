"""The request parser and message preparation (no server): units, hypothesis, import parity."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeylens.ingest import live
from journeylens.ingest.convert import Duck
from journeylens.ingest.readers import ParsedLines, build_segment
from journeylens.ingest.validate import Validator
from journeylens.server.auth import KeyRing, basic_user, hash_key
from journeylens.server.collect import (
    BadRequest,
    Limits,
    corrected_timestamp,
    decode_body,
    gunzip,
    prepare,
)
from journeylens.server.privacy import IpMask, anonymize_ip, mask_ips_in_text, no_consent

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def test_clock_skew_formula() -> None:
    msg = {"timestamp": "2024-06-01T13:00:00+00:00", "sentAt": "2024-06-01T13:00:10+00:00"}
    assert corrected_timestamp(msg, NOW) == (NOW - timedelta(seconds=10)).isoformat(timespec="microseconds")
    assert corrected_timestamp({}, NOW) == NOW.isoformat(timespec="microseconds")
    assert corrected_timestamp({"timestamp": "2024-01-01T00:00:00Z"}, NOW) == "2024-01-01T00:00:00Z"
    assert corrected_timestamp({"timestamp": "junk", "sentAt": "2024-01-01T00:00:00Z"}, NOW) == "junk"


def test_ip_anonymising_and_consent() -> None:
    m = IpMask()
    assert anonymize_ip("203.0.113.77", m) == "203.0.113.0"
    assert anonymize_ip("2001:db8:abcd:12::1", m) == "2001:db8:abcd::"
    assert anonymize_ip("not-an-ip", m) is None
    assert mask_ips_in_text('{"ip":"10.1.2.3","v":"1.2.3.4.5"}', m) == '{"ip":"10.1.2.0","v":"1.2.3.4.5"}'
    assert no_consent({"context": {"consent": False}})
    assert no_consent({"context": {"optOut": True}})
    assert no_consent({"context": {"consent": {"categoryPreferences": {"analytics": False}}}})
    assert not no_consent({"context": {"consent": {"categoryPreferences": {"analytics": True}}}})


def test_basic_auth_header_and_keyring() -> None:
    import base64

    assert basic_user("Basic " + base64.b64encode(b"k1:").decode()) == "k1"
    assert basic_user("Basic " + base64.b64encode(b"k1").decode()) == "k1"
    assert basic_user("Basic !!!") is None and basic_user(None) is None
    from journeylens.server.auth import KeyRecord

    ring = KeyRing([KeyRecord("id", "A", "write", hash_key("secret"), None, NOW)])
    assert ring.lookup("secret") is not None and ring.lookup("Secret") is None
    ring.revoke("id")
    assert ring.lookup("secret") is None


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)  # ~50 KB compressed
    with pytest.raises(BadRequest) as e:
        gunzip(bomb, 500 * 1024)
    assert e.value.code == "request_too_large"


def test_live_and_import_paths_map_identically(tmp_path: Path) -> None:
    """The same Segment messages through `journeylens import events` and through the collector's
    writer path give the same rows (received_at aside)."""
    import journeylens
    from journeylens.server.writer import Job, Writer

    msgs = [
        {"type": "track", "event": "purchase", "userId": "u1", "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
         "properties": {"revenue": 30, "currency": "EUR", "touchpoint": "shop"},
         "context": {"campaign": {"source": "newsletter", "medium": "email", "name": "may"},
                     "page": {"url": "https://x.example/p", "referrer": "https://mail.example"}}},
        {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": "m2", "timestamp": "2024-05-01T09:00:00Z"},
        {"type": "identify", "anonymousId": "a1", "userId": "u1", "messageId": "m3", "timestamp": "2024-05-01T09:30:00Z",
         "traits": {"plan": "pro"}},
        {"type": "group", "userId": "u1", "groupId": "acme", "messageId": "m4", "timestamp": "2024-05-01T09:40:00Z"},
        {"type": "track", "event": "x", "userId": "u1", "messageId": "m5", "timestamp": "2024-05-01T09:40:00Z",
         "properties": {"revenue": "lots"}},
    ]
    f = tmp_path / "seg.jsonl"
    f.write_text("\n".join(json.dumps(m) for m in msgs) + "\n")
    with journeylens.open(tmp_path / "imp.duckdb", workspace="W") as ws:
        ws.import_file("events", f, fmt="segment")
        imported = ws.store.to_pyarrow(ws.events().drop("received_at").order_by("message_id")).to_pylist()
    w = Writer(str(tmp_path / "live.duckdb"))
    w.start()
    try:
        prepared = prepare({"batch": [dict(m) for m in msgs]}, "batch", NOW, LIMITS, IpMask())
        assert not prepared.quarantined
        results: list[Any] = []
        import threading

        ev = threading.Event()
        w.submit(Job("W", "test", NOW, prepared.messages, [], lambda r: (results.append(r), ev.set())))
        assert ev.wait(120)
        live = w.run_sync(lambda s: s.to_pyarrow(s.table("events").drop("received_at").order_by("message_id")))
        live_q = w.run_sync(lambda s: s.query("SELECT reason FROM quarantine"))
    finally:
        w.stop()
    assert results[0].accepted == 4 and results[0].quarantined == [(4, "not numeric")]
    assert live.to_pylist() == imported
    assert live_q == [("not numeric",)]


# ------------------------------------------------------------------ hypothesis
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_message = st.fixed_dictionaries(
    {},
    optional={"type": st.sampled_from(["track", "page", "identify", "group", "alias", "screen", "bogus", ""]) | _json,
              "event": st.text(max_size=20) | _json, "userId": st.text(max_size=10) | st.integers(),
              "anonymousId": st.text(max_size=10), "messageId": st.text(max_size=10) | st.integers() | _json,
              "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "yesterday", "2024-13-45", ""]) | _json,
              "sentAt": st.sampled_from(["2024-01-01T00:00:05Z", "x"]), "properties": _json, "context": _json,
              "previousId": st.text(max_size=5), "groupId": st.text(max_size=5) | _json},
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b: json.dumps({"batch": b}).encode(), st.lists(_message | _json, max_size=8)),
    st.builds(lambda m: json.dumps(m).encode(), _message),
    st.builds(lambda b, n: json.dumps({"batch": b}).encode()[:n], st.lists(_message, max_size=3),
              st.integers(0, 200)),
    st.builds(lambda d: b'{"batch": [' + b"[" * d + b"]" * d + b"]}", st.sampled_from([1, 63, 64, 65, 200, 3000])),
    st.sampled_from([b'{"event": "\\ud800", "userId": "u"}', b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}",
                     b'{"userId": "u", "event": "e", "properties": {"n": 1e999}}', b"NaN",
                     b'{"userId": "u", "event": "e", "properties": {"n": ' + b"9" * 5000 + b"}}"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies, endpoint=st.sampled_from(["batch", "track", "identify", "b", "alias", "group"]),
       gz=st.booleans())
def test_parser_never_fails_except_bad_request_and_accounts_for_every_message(
        body: bytes, endpoint: str, gz: bool) -> None:
    raw = gzip.compress(body) if gz else body
    try:
        payload = decode_body(raw, "gzip" if gz else None, "application/json", LIMITS)
        prepared = prepare(payload, endpoint, NOW, LIMITS, IpMask())
    except BadRequest as exc:
        assert exc.code and exc.message
        return
    n = len(payload["batch"]) if endpoint in ("batch", "b") else 1
    indexes = [i for i, _ in prepared.messages] + [q[0] for q in prepared.quarantined]
    assert sorted(indexes) + [None] * prepared.no_consent == sorted(indexes) + [None] * (n - len(indexes))
    assert len(set(indexes)) == len(indexes) and len(indexes) + prepared.no_consent == n
    for _, msg in prepared.messages:  # ready for the validator: writable as UTF-8, with an id
        json.dumps(msg, ensure_ascii=False).encode("utf-8")
        assert isinstance(msg["messageId"], str) and msg["messageId"]
    if prepared.messages:  # and the import validator takes them without raising
        records = [(g, m, m) for g, (_, m) in enumerate(prepared.messages)]
        duck = _duck()
        checked = Validator("events", workspace="W", source="t", tz="UTC", received_at=NOW, now=NOW,
                            duck=duck).validate(build_segment(ParsedLines(records, [], 0, [])))
        assert checked.accepted.num_rows + checked.quarantined.num_rows == len(records)


_DUCK: list[Duck] = []


def _duck() -> Duck:
    if not _DUCK:
        _DUCK.append(Duck("UTC"))
    return _DUCK[0]


# ------------------------------------------------------------------ the columnar live mapping
def _reference(messages: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], list[Any]]:
    """The collector's validation as the import path does it: build_segment + Validator, every check."""
    records = [(g, m, m) for g, m in enumerate(messages)]
    checked = Validator("events", workspace="W", source="http", tz="UTC", received_at=now, now=now,
                        duck=_duck()).validate(build_segment(ParsedLines(records, [], 0, [])))
    q = checked.quarantined
    return checked.accepted.to_pylist(), list(zip(q.column("line").to_pylist(), q.column("field").to_pylist(),
                                                  q.column("reason").to_pylist(), q.column("raw").to_pylist(),
                                                  strict=True))


def _exact(a: Any, b: Any) -> bool:
    """Equal, with floats compared by sign too (-0.0 is not 0.0)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_exact(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and bool(a == b)


_ts_texts = st.sampled_from(["2024-01-01T00:00:00Z", "2024-05-31T23:59:59.5+02:00", "2024-05-01T10:00:00.123456",
                             "2024-05-01T10:00:00.1234567Z", "2024-05-01T10:00:00+05:99", "2024-05-01T10:00:00.25Z", "2024-02-30T00:00:00Z",
                             "1989-12-31T23:59:59Z", "2024-07-01T00:00:00-00:30", " 2024-05-01T10:00:00Z",
                             "2024-05-01 10:00:00", "2024-05-01T24:00:00Z", "yesterday", "", "1714557600"])
_numbers_or_text = (st.floats() | st.integers(-(2**60), 2**60) | st.sampled_from([0, 0.0, -0.0, 2**53, "12.5", "lots",
                                                                                  True, None, "", [1]]))
_live_message = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "page", "identify", "group", "alias", "screen", "Track ", "bogus"]),
     "userId": st.sampled_from(["u1", "u2", " u3 "]), "messageId": st.text(min_size=1, max_size=6)},
    optional={"event": st.text(max_size=8) | _json, "anonymousId": st.text(max_size=5), "name": _json,
              "timestamp": _ts_texts | _json, "originalTimestamp": _ts_texts, "sentAt": _ts_texts,
              "receivedAt": _ts_texts, "properties": st.dictionaries(
                  st.sampled_from(["revenue", "total", "currency", "touchpoint", "channel", "url", "referrer", "x"]),
                  _numbers_or_text | _json, max_size=5) | _json,
              "context": st.fixed_dictionaries({}, optional={
                  "campaign": st.dictionaries(st.sampled_from(["source", "medium", "name", "content", "term"]),
                                              _json, max_size=3) | _json,
                  "page": st.dictionaries(st.sampled_from(["url", "referrer"]), _json, max_size=2) | _json,
                  "groupId": _json, "traits": _json}) | _json,
              "traits": st.dictionaries(st.text(max_size=3), _json | st.floats(), max_size=3) | _json,
              "groupId": st.text(max_size=5) | _json, "previousId": st.text(max_size=5) | _json},
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_live_message, min_size=1, max_size=12))
def test_columnar_live_mapping_validates_exactly_like_build_segment(messages: list[dict[str, Any]]) -> None:
    """validate_messages (columnar mapping, typed ts/received_at/revenue, JSON checks skipped for objects it
    serialised) accepts and quarantines exactly like build_segment + Validator with every DuckDB check."""
    now = NOW
    chunk = live.live_chunk([dict(m) for m in messages])
    assert chunk is not None
    ref_rows, ref_rejected = _reference([dict(m) for m in messages], now)
    got = live.validate_messages([dict(m) for m in messages], "W", now, _duck())
    assert _exact(got.accepted.to_pylist(), ref_rows)
    assert got.rejected == ref_rejected
    assert got.accepted_items == [g for g in range(len(messages)) if g not in {r[0] for r in ref_rejected}]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53) + 1, 2**53 - 1),
                min_size=1, max_size=20))
def test_typed_revenue_equals_duckdb_parsing_the_text(values: list[Any]) -> None:
    msgs = [{"type": "track", "event": "e", "userId": "u", "messageId": f"m{i}", "properties": {"revenue": v}}
            for i, v in enumerate(values)]
    chunk = live.live_chunk(msgs)
    assert chunk is not None
    ref_rows, ref_rejected = _reference(msgs, NOW)
    got = live.validate_messages(msgs, "W", NOW, _duck())
    assert _exact(got.accepted.to_pylist(), ref_rows) and got.rejected == ref_rejected


def test_naive_times_are_left_to_the_connection_time_zone() -> None:
    """Replay validates in the --tz connection: naive texts must be read there, as the import path does."""
    msgs = [{"type": "track", "event": "e", "userId": "u", "messageId": "n1", "timestamp": "2024-05-01T10:00:00"},
            {"type": "track", "event": "e", "userId": "u", "messageId": "n2", "timestamp": "2024-05-01T10:00:00Z"}]
    chunk = live.live_chunk(msgs)
    assert chunk is not None and chunk[0].columns["ts"].type == pa.string()
    berlin = Duck("Europe/Berlin")
    try:
        got = live.validate_messages([dict(m) for m in msgs], "W", NOW, berlin)
        records = [(g, m, m) for g, m in enumerate(msgs)]
        ref = Validator("events", workspace="W", source="http", tz="UTC", received_at=NOW, now=NOW,
                        duck=berlin).validate(build_segment(ParsedLines(records, [], 0, [])))
    finally:
        berlin.close()
    assert got.accepted.to_pylist() == ref.accepted.to_pylist()
    ts = got.accepted.column("ts").to_pylist()
    assert ts[0] != ts[1]  # 10:00 in Berlin is 08:00 UTC


def test_live_mapping_declines_what_build_segment_expands() -> None:
    assert live.live_chunk([{"type": "track", "batch": [{"event": "x"}]}]) is None
    ok = live.live_chunk([{"type": "track", "event": "x", "userId": "u", "messageId": "1",
                           "timestamp": "2024-05-01T10:00:00.5+02:00", "receivedAt": "2024-05-01T10:00:01Z",
                           "properties": {"revenue": 2.5, "n": float("inf")}, "traits": {"a": 1}}])
    assert ok is not None
    chunk, known = ok
    assert chunk.columns["ts"].type == pa.timestamp("us", tz="UTC")
    assert chunk.columns["revenue"].type == pa.float64()
    assert known == frozenset({"traits"})  # properties hold Infinity: checked by DuckDB
