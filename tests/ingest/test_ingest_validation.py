"""Validation rules: every quarantine reason with its line number, timestamps, numbers, ids."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.ingest_helpers import RECEIVED, Writer, collect, jsonl

EVENTS_CSV = """user_id,ts,event,type,revenue,properties
u1,2024-03-01T10:00:00Z,view,track,,
u2,not a time,view,track,,
u3,,view,track,,
u4,1985-05-01,view,track,,
u5,2999-01-01,view,track,,
u6,2024-03-01,view,bogus,,
u7,2024-03-01,,track,,
u8,2024-03-01,buy,track,12x,
u9,2024-03-01,buy,track,NaN,
u10,2024-03-01,view,track,,"[1,2]"
u11,2024-03-01,view,track,,{bad
,2024-03-01,view,track,,
,2024-03-01,,identify,,
u12,2024-03-01,,alias,,
u13,2024-03-01,,group,,
u14,2024-03-01,,identify,,
1,2,3

u15,2024-03-01,view,TRACK,inf,
u16,2024-03-01,view,Page,-5,"{""a"": [1]}"
"""

EXPECTED_REJECTS = [
    (3, "ts", "cannot parse timestamp"),
    (4, "ts", "missing required value"),
    (5, "ts", "timestamp before 1990"),
    (6, "ts", "timestamp in the future"),
    (7, "type", "unknown message type"),
    (8, "event", "missing required value"),
    (9, "revenue", "not numeric"),
    (10, "revenue", "not numeric"),
    (11, "properties", "not a JSON object"),
    (12, "properties", "not a JSON object"),
    (13, "anonymous_id", "missing user_id and anonymous_id"),
    (14, "user_id", "identify needs user_id"),
    (15, "previous_id", "alias needs previous_id"),
    (16, "account_id", "group needs account_id"),
    (18, None, "wrong number of columns"),
    (20, "revenue", "not numeric"),
]


def test_csv_quarantine_reasons_and_lines(write: Writer) -> None:
    res = collect(write("events.csv", EVENTS_CSV))
    assert res.rejects() == EXPECTED_REJECTS
    assert res.column("user_id") == ["u1", "u14", "u16"]
    assert res.column("event") == ["view", "identify", "view"]
    assert res.column("type") == ["track", "identify", "page"]
    assert res.column("revenue") == [None, None, -5.0]
    assert res.column("properties") == [None, None, '{"a": [1]}']
    assert res.rows == 19  # 20 data lines, one blank
    q = res.quarantined
    assert set(q.column("workspace").to_pylist()) == {"w"}
    assert set(q.column("target").to_pylist()) == {"events"}
    assert set(q.column("source").to_pylist()) == {str(Path(res.info.path))}
    assert set(q.column("received_at").to_pylist()) == {RECEIVED}
    raw = dict(zip(q.column("line").to_pylist(), q.column("raw").to_pylist(), strict=True))
    assert json.loads(raw[3]) == {"user_id": "u2", "ts": "not a time", "event": "view", "type": "track",
                                  "revenue": "", "properties": ""}
    assert json.loads(raw[18]) == "1,2,3"


def test_csv_multiline_quoted_value_counts_as_one_line(write: Writer) -> None:
    text = 'user_id,ts,event\nu1,2024-03-01,"two\nlines"\nu2,bad,x\n'
    assert collect(write("e.csv", text)).rejects() == [(3, "ts", "cannot parse timestamp")]


def test_jsonl_physical_lines_and_broken_json(write: Writer) -> None:
    text = jsonl(
        {"user_id": "u1", "ts": "2024-03-01T10:00:00Z", "event": "view"},
        "",
        '{"user_id": "u2", "ts": ',
        {"user_id": "u3", "ts": "2024-03-01T10:00:00Z"},
        "[1, 2]",
        '{"user_id": "u4", "ts": 1709287200, "event": "x", "revenue": NaN}',
        {"user_id": "u5", "ts": 1709287200000, "event": "x", "properties": "not json"},
        {"user_id": "u6", "ts": 1709287200000, "event": "x", "properties": {"ok": True}},
    )
    res = collect(write("e.jsonl", text))
    assert res.rejects() == [
        (3, None, "invalid JSON: Expecting value"),
        (4, "event", "missing required value"),
        (5, None, "not a JSON object"),
        (6, None, "invalid JSON: NaN is not valid JSON"),
        (7, "properties", "not a JSON object"),
    ]
    assert res.column("user_id") == ["u1", "u6"]
    assert res.column("properties") == [None, '{"ok":true}']
    raw = res.quarantined.column("raw").to_pylist()
    assert raw[0] == '{"user_id": "u2", "ts": '
    assert json.loads(raw[1]) == {"user_id": "u3", "ts": "2024-03-01T10:00:00Z"}


def test_parquet_rows_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({
        "user_id": ["u1", None, "u3", "u4"],
        "ts": pa.array([datetime(2024, 3, 1), datetime(2024, 3, 1), None, datetime(1970, 1, 2)],
                       pa.timestamp("us", "UTC")),
        "event": ["a", "b", "c", "d"],
        "revenue": pa.array([1.0, 2.0, float("inf"), 4.0]),
    }), path, row_group_size=2)
    res = collect(path, chunk_rows=3)
    assert res.rejects() == [
        (2, "anonymous_id", "missing user_id and anonymous_id"),
        (3, "ts", "missing required value"),
        (4, "ts", "timestamp before 1990"),
    ]
    assert res.column("user_id") == ["u1"]
    assert json.loads(res.quarantined.column("raw").to_pylist()[0]) == {
        "user_id": None, "ts": "2024-03-01 00:00:00+00:00", "event": "b", "revenue": 2.0}


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10)),
    ("2024-03-01T10:00:00+02:00", datetime(2024, 3, 1, 8)),
    ("2024-03-01T10:00:00-0530", datetime(2024, 3, 1, 15, 30)),
    ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10)),
    ("2024-03-01T10:00:00.123456Z", datetime(2024, 3, 1, 10, 0, 0, 123456)),
    ("2024-03-01T10:00:00,5Z", datetime(2024, 3, 1, 10, 0, 0, 500000)),
    ("2024-03-01T10:00Z", datetime(2024, 3, 1, 10)),
    ("2024-03-01T10:00", datetime(2024, 3, 1, 10)),
    ("2024-03-01", datetime(2024, 3, 1)),
    ("01.03.2024 10:00", datetime(2024, 3, 1, 10)),
    ("1709287200", datetime(2024, 3, 1, 10)),
    ("1709287200.5", datetime(2024, 3, 1, 10, 0, 0, 500000)),
    ("1709287200123", datetime(2024, 3, 1, 10, 0, 0, 123000)),
    ("1709287200123456", datetime(2024, 3, 1, 10, 0, 0, 123456)),
])
def test_timestamp_text_variants(write: Writer, text: str, expected: datetime) -> None:
    res = collect(write("e.csv", f"user_id,ts,event\nu,\"{text}\",x\n"))
    assert res.column("ts") == [expected.replace(tzinfo=UTC)]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-03-01 10:00:00", datetime(2024, 3, 1, 9)),  # CET
    ("2024-07-01 10:00:00", datetime(2024, 7, 1, 8)),  # CEST
    ("2024-03-01", datetime(2024, 2, 29, 23)),
    ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10)),  # explicit zone wins
    ("2024-03-01T10:00:00+01:00", datetime(2024, 3, 1, 9)),
    ("1709287200000", datetime(2024, 3, 1, 10)),  # epochs are UTC
])
def test_timestamp_time_zone(write: Writer, text: str, expected: datetime) -> None:
    res = collect(write("e.csv", f"user_id,ts,event\nu,\"{text}\",x\n"), tz="Europe/Berlin")
    assert res.column("ts") == [expected.replace(tzinfo=UTC)]


def test_epoch_numbers_in_jsonl_and_parquet(write: Writer, tmp_path: Path) -> None:
    res = collect(write("e.jsonl", jsonl({"u": "x", "ts": 1709287200, "event": "a"},
                                         {"u": "x", "ts": 1709287200123, "event": "a"},
                                         {"u": "x", "ts": 1709287200.25, "event": "a"})),
                  mapping={"u": "user_id"})
    assert res.column("ts") == [datetime(2024, 3, 1, 10, tzinfo=UTC),
                                datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
                                datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)]
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user_id": ["x", "y"], "ts": pa.array([1709287200123, 1709287200]),
                             "event": ["a", "b"]}), path)
    assert collect(path).column("ts") == [datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
                                          datetime(2024, 3, 1, 10, tzinfo=UTC)]


def test_costs_rules(write: Writer) -> None:
    text = """date,channel,campaign,spend,impressions,clicks
2024-03-01,paid_search,spring,100.5,1000,50
2024-03-02,paid_search,spring,abc,1000,50
2024-03-03,,spring,10,1000,50
2024-03-04,email,spring,10,10.5,1
03/32/2024,email,x,1,1,1
01.03.2024,email,x,1,1e3,
2024-03-05,email,x,,1,1
1980-01-01,email,x,1,1,1
"""
    res = collect(write("costs.csv", text), target="costs")
    assert res.rejects() == [
        (3, "spend", "not numeric"),
        (4, "channel", "missing required value"),
        (5, "impressions", "not an integer"),
        (6, "date", "cannot parse date"),
        (8, "spend", "missing required value"),
        (9, "date", "date before 1990"),
    ]
    assert res.column("date") == [date(2024, 3, 1), date(2024, 3, 1)]
    assert res.column("impressions") == [1000, 1000]
    assert res.column("clicks") == [50, None]


def test_survey_rules(write: Writer) -> None:
    text = """person,ts,kind,score,comment
u1,2024-03-01,NPS,9,great
u2,2024-03-01,nps,11,
u3,2024-03-01,csat,0,
u4,2024-03-01,foo,3,
u5,2024-03-01,ces,7,
u6,2024-03-01,ces,,
u7,2024-03-01,csat,x,
"""
    res = collect(write("s.csv", text), target="surveys")
    assert res.rejects() == [
        (3, "score", "score outside the nps scale 0-10"),
        (4, "score", "score outside the csat scale 1-5"),
        (5, "kind", "unknown survey kind"),
        (7, "score", "missing required value"),
        (8, "score", "not numeric"),
    ]
    assert res.column("kind") == ["nps", "ces"]
    assert res.column("comment") == ["great", None]


def test_people_and_accounts_rules(write: Writer) -> None:
    text = 'user_id,ts,traits\nu1,,"[1]"\n,2024-03-01,\nu3,yesterday,\n'
    assert collect(write("p.csv", text), target="people").rejects() == [
        (2, "traits", "not a JSON object"),
        (3, "user_id", "missing required value"),
        (4, "ts", "cannot parse timestamp"),
    ]


def test_invalid_utf8_in_csv_is_quarantined(write: Writer) -> None:
    data = b"user_id,ts,event\nu1,2024-03-01,ok\nu\xff2,2024-03-01,bad\n"
    res = collect(write("e.csv", data))
    assert res.rejects() == [(3, "user_id", "invalid UTF-8")]
    assert res.column("user_id") == ["u1"]


def test_unknown_keys_in_later_jsonl_chunks_are_rejected_for_costs(write: Writer) -> None:
    text = jsonl({"date": "2024-03-01", "channel": "email", "spend": 1},
                 {"date": "2024-03-02", "channel": "email", "spend": 2, "oops": 1},
                 {"date": "2024-03-03", "channel": "email", "spend": 3, "oops": None})
    res = collect(write("c.jsonl", text), target="costs", chunk_rows=1)
    assert res.rejects() == [(2, "oops", "unknown column")]
    assert res.column("spend") == [1.0, 3.0]


def test_raw_is_capped(write: Writer) -> None:
    res = collect(write("e.jsonl", '{"user_id": "' + "x" * 20000 + '"\n'))
    raw = res.quarantined.column("raw").to_pylist()[0]
    assert len(raw.encode()) == 10 * 1024


# ---------------------------------------------------------------- channel derivation
def test_channel_derivation(write: Writer) -> None:
    rows = [
        # utm_source, utm_medium, referrer, url, channel -> expected
        ("google", "cpc", "", "", "", "paid_search"),
        ("facebook", "cpc", "", "", "", "paid_social"),
        ("fb", "Paid-Social", "", "", "", "paid_social"),
        ("", "Newsletter", "", "", "", "email"),
        ("", "e-mail", "", "", "", "email"),
        ("", "qr", "", "", "", "print"),
        ("", "banner", "", "", "", "display"),
        ("", "affiliate", "", "", "", "partner"),
        ("", "social", "", "", "", "social"),
        ("", "video", "https://www.google.com/", "", "", None),
        ("", "", "https://www.google.de/search?q=x", "", "", "organic_search"),
        ("", "", "https://duckduckgo.com/", "", "", "organic_search"),
        ("", "", "https://blog.example.org/post", "https://shop.example/", "", "referral"),
        ("", "", "https://shop.example/a", "https://shop.example/b", "", None),
        ("", "cpc", "", "", "tv_radio", "tv_radio"),
        ("", "", "", "", "", None),
    ]
    lines = ["user_id,ts,event,utm_source,utm_medium,referrer,url,channel"]
    lines += [f"u,2024-03-01,x,{s},{m},{r},{u},{c}" for s, m, r, u, c, _ in rows]
    res = collect(write("e.csv", "\n".join(lines) + "\n"))
    assert res.column("channel") == [r[-1] for r in rows]


# ---------------------------------------------------------------- message ids
def test_message_ids_are_deterministic(write: Writer) -> None:
    text = ("user_id,ts,event,revenue,message_id\n"
            "u1,2024-03-01T10:00:00Z,buy,1,\n"
            "u1,2024-03-01T10:00:00Z,buy,2,\n"
            "u1,2024-03-01T10:00:00Z,buy,1,\n"
            "u2,2024-03-01T10:00:00Z,buy,1,given\n")
    path = write("e.csv", text)
    first = collect(path).column("message_id")
    again = collect(path, received_at=datetime(2025, 1, 1, tzinfo=UTC)).column("message_id")
    assert first == again
    assert first[0] != first[1]  # revenue differs
    assert first[0] == first[2]  # the same row twice: one id (the store keeps one)
    assert first[3] == "given"
    assert all(len(m) == 32 and int(m, 16) >= 0 for m in first[:3])
    other_ws = collect(path, workspace="other").column("message_id")
    assert other_ws[0] != first[0]
    # the same data as JSON lines gives the same ids
    as_jsonl = jsonl({"user_id": "u1", "ts": "2024-03-01 10:00:00+00:00", "event": "buy", "revenue": 1})
    assert collect(write("e.jsonl", as_jsonl)).column("message_id") == [first[0]]


def test_people_ids_do_not_depend_on_import_time(write: Writer) -> None:
    path = write("p.csv", "user_id,plan\nu1,pro\nu2,pro\n")
    a = collect(path, target="people").column("message_id")
    b = collect(path, target="people", received_at=datetime(2030, 1, 1, tzinfo=UTC)).column("message_id")
    assert a == b
    assert a[0] != a[1]
