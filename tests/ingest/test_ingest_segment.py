"""Segment / RudderStack messages: every call type, batch lines, context fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.ingest.ingest_helpers import RECEIVED, Writer, collect, jsonl

TS = "2024-03-01T10:00:00.000Z"
T10 = datetime(2024, 3, 1, 10, tzinfo=UTC)

TRACK = {
    "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1", "messageId": "m-track",
    "timestamp": TS, "receivedAt": "2024-03-01T10:00:05Z",
    "properties": {"total": 30, "currency": "EUR", "touchpoint": "online_shop"},
    "context": {
        "campaign": {"source": "newsletter", "medium": "email", "name": "spring", "content": "hero",
                     "term": "shoes"},
        "page": {"url": "https://shop.example/checkout", "referrer": "https://shop.example/cart"},
        "groupId": "acme",
    },
}
PAGE = {"type": "page", "name": "Pricing", "anonymousId": "a1", "messageId": "m-page", "timestamp": TS,
        "properties": {"url": "https://shop.example/pricing", "referrer": "https://www.bing.com/"}}
SCREEN = {"type": "screen", "anonymousId": "a1", "messageId": "m-screen", "originalTimestamp": TS}
IDENTIFY = {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m-identify",
            "sentAt": TS, "context": {"traits": {"email": "u1@example.com"}}}
GROUP = {"type": "group", "userId": "u1", "groupId": "acme", "messageId": "m-group", "timestamp": TS,
         "traits": {"name": "Acme"}}
ALIAS = {"type": "alias", "userId": "u1", "previousId": "a1", "messageId": "m-alias", "timestamp": TS}


def by_id(rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {r["message_id"]: r for r in rows}


def test_every_message_type(write: Writer) -> None:
    res = collect(write("segment.jsonl", jsonl(TRACK, PAGE, SCREEN, IDENTIFY, GROUP, ALIAS)))
    assert res.info.fmt == "segment"
    assert res.quarantined.num_rows == 0
    rows = by_id(res.accepted.to_pylist())

    track = rows["m-track"]
    assert (track["type"], track["event"], track["user_id"], track["anonymous_id"]) == \
        ("track", "Order Completed", "u1", "a1")
    assert (track["ts"], track["received_at"]) == (T10, datetime(2024, 3, 1, 10, 0, 5, tzinfo=UTC))
    assert (track["utm_source"], track["utm_medium"], track["utm_campaign"], track["utm_content"],
            track["utm_term"]) == ("newsletter", "email", "spring", "hero", "shoes")
    assert (track["url"], track["referrer"]) == ("https://shop.example/checkout", "https://shop.example/cart")
    assert (track["revenue"], track["currency"], track["touchpoint"]) == (30.0, "EUR", "online_shop")
    assert track["channel"] == "email"  # derived from utm_medium
    assert track["account_id"] == "acme"  # context.groupId
    assert json.loads(str(track["properties"])) == TRACK["properties"]
    assert track["traits"] is None

    page = rows["m-page"]
    assert (page["type"], page["event"], page["url"], page["referrer"], page["channel"]) == \
        ("page", "Pricing", "https://shop.example/pricing", "https://www.bing.com/", "organic_search")
    assert page["received_at"] == RECEIVED

    screen = rows["m-screen"]
    assert (screen["type"], screen["event"], screen["ts"]) == ("screen", "screen", T10)

    identify = rows["m-identify"]
    assert (identify["type"], identify["event"], identify["user_id"], identify["ts"]) == \
        ("identify", "identify", "u1", T10)
    assert json.loads(str(identify["traits"])) == {"email": "u1@example.com"}

    group = rows["m-group"]
    assert (group["event"], group["account_id"]) == ("group", "acme")
    assert json.loads(str(group["traits"])) == {"name": "Acme"}

    alias = rows["m-alias"]
    assert (alias["event"], alias["user_id"], alias["previous_id"]) == ("alias", "u1", "a1")


def test_batch_lines_and_batch_context(write: Writer) -> None:
    batch = {"batch": [dict(TRACK, context={"page": {"url": "https://shop.example/x"}}), PAGE, "oops"],
             "context": {"campaign": {"source": "google", "medium": "cpc"}}, "sentAt": TS}
    text = jsonl({"type": "page", "anonymousId": "a0", "messageId": "first", "timestamp": TS},
                 batch,
                 {"type": "track", "event": "e", "anonymousId": "a9", "messageId": "last", "timestamp": TS})
    res = collect(write("s.jsonl", text))
    assert res.rejects() == [(2, None, "not a JSON object")]
    assert res.accepted.column("message_id").to_pylist() == ["first", "m-track", "m-page", "last"]
    rows = by_id(res.accepted.to_pylist())
    # the batch context is a default for its messages; the message's own context keys win
    assert rows["m-track"]["utm_source"] == "google"
    assert rows["m-track"]["url"] == "https://shop.example/x"
    assert rows["m-page"]["utm_medium"] == "cpc"
    assert rows["m-page"]["channel"] == "paid_search"
    assert res.quarantined.column("line").to_pylist() == [2]
    assert json.loads(res.quarantined.column("raw").to_pylist()[0]) == {"message": "oops"}


def test_segment_rejects_with_lines(write: Writer) -> None:
    text = jsonl(
        {"type": "identify", "anonymousId": "a1", "messageId": "no-user", "timestamp": TS},
        {"type": "alias", "userId": "u1", "messageId": "no-prev", "timestamp": TS},
        {"type": "group", "userId": "u1", "messageId": "no-group", "timestamp": TS},
        {"type": "track", "anonymousId": "a1", "messageId": "no-event", "timestamp": TS},
        {"type": "bogus", "anonymousId": "a1", "messageId": "bad-type", "timestamp": TS, "context": {}},
        '{"type": "track", "messageId": ',
        {"type": "track", "event": "x", "messageId": "no-ids", "timestamp": TS, "context": {}},
        {"type": "track", "event": "x", "anonymousId": "a", "messageId": "no-ts", "context": {}},
        {"type": "track", "event": "x", "anonymousId": "a", "messageId": "bad-props", "timestamp": TS,
         "properties": [1]},
    )
    res = collect(write("s.jsonl", text), fmt="segment")
    assert res.rejects() == [
        (1, "user_id", "identify needs user_id"),
        (2, "previous_id", "alias needs previous_id"),
        (3, "account_id", "group needs account_id"),
        (4, "event", "missing required value"),
        (5, "type", "unknown message type"),
        (6, None, "invalid JSON: Expecting value"),
        (7, "anonymous_id", "missing user_id and anonymous_id"),
        (8, "ts", "missing required value"),
        (9, "properties", "not a JSON object"),
    ]


def test_rudderstack_message_and_missing_type(write: Writer) -> None:
    rudder = {"type": "track", "event": "Product Viewed", "anonymousId": "r1", "rudderId": "x",
              "messageId": "rs-1", "originalTimestamp": TS, "channel": "web",
              "properties": {"revenue": "12.5", "channel": "paid_social"}}
    untyped = {"event": "Signed Up", "userId": "u7", "messageId": "untyped", "timestamp": TS,
               "context": {"library": {"name": "analytics.js"}}}
    res = collect(write("r.jsonl", jsonl(rudder, untyped)), fmt="rudderstack")
    rows = by_id(res.accepted.to_pylist())
    assert (rows["rs-1"]["revenue"], rows["rs-1"]["channel"]) == (12.5, "paid_social")
    assert (rows["untyped"]["type"], rows["untyped"]["event"]) == ("track", "Signed Up")


def test_generic_jsonl_of_segment_like_records_when_format_is_jsonl(write: Writer) -> None:
    text = jsonl({"type": "track", "event": "x", "userId": "u1", "messageId": "m1", "timestamp": TS,
                  "context": {"ip": "1.2.3.4"}})
    res = collect(write("s.jsonl", text), fmt="jsonl")
    assert res.info.fmt == "jsonl"
    row = res.accepted.to_pylist()[0]
    assert (row["message_id"], row["user_id"], row["ts"]) == ("m1", "u1", T10)
    assert json.loads(str(row["properties"])) == {"context": {"ip": "1.2.3.4"}}


def test_message_ids_generated_for_segment_without_message_id(write: Writer) -> None:
    msg = {"type": "track", "event": "x", "anonymousId": "a", "timestamp": TS, "context": {}}
    path = write("s.jsonl", jsonl(msg, dict(msg, event="y")))
    ids = collect(path).accepted.column("message_id").to_pylist()
    assert ids == collect(path).accepted.column("message_id").to_pylist()
    assert ids[0] != ids[1]
