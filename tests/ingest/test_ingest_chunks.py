"""Chunking gives the same rows as one chunk; random rows never break an import."""

from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeylens import schema
from tests.ingest.ingest_helpers import Writer, collect, jsonl

TEN_CSV = """user_id,ts,event,revenue,color
u1,2024-03-01T10:00:00Z,a,1,red
u2,bad,b,,
u3,2024-03-01T10:00:02Z,c,x,
u4,2024-03-01T10:00:03Z,d,,blue
u5,2024-03-01T10:00:04Z,,,
u6,2024-03-01T10:00:05Z,f,6,
1,2
u8,2024-03-01T10:00:07Z,h,,green
u9,2024-03-01T10:00:08Z,i,9,
u10,2024-03-01T10:00:09Z,j,,
"""


def ten_jsonl() -> str:
    rows: list[Any] = []
    for i in range(1, 11):
        rows.append({"user_id": f"u{i}", "ts": f"2024-03-01T10:00:{i:02d}Z", "event": "e", "n": i})
    rows[2] = '{"broken": '
    rows[5]["ts"] = "never"
    return jsonl(*rows)


def ten_parquet(path: Path) -> Path:
    pq.write_table(pa.table({
        "user_id": [f"u{i}" if i != 4 else None for i in range(1, 11)],
        "ts": pa.array([1709287200 + i for i in range(10)]),
        "event": ["e"] * 10,
        "n": list(range(10)),
    }), path, row_group_size=4)
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_chunk_rows_3_equals_one_chunk(write: Writer, tmp_path: Path, kind: str) -> None:
    if kind == "csv":
        path = write("ten.csv", TEN_CSV)
    elif kind == "jsonl":
        path = write("ten.jsonl", ten_jsonl())
    else:
        path = ten_parquet(tmp_path / "ten.parquet")
    whole = collect(path)
    small = collect(path, chunk_rows=3)
    assert whole.chunks == 1
    assert small.chunks >= 3
    assert small.accepted.equals(whole.accepted)
    assert small.quarantined.equals(whole.quarantined)
    assert small.rows == whole.rows == 10
    assert whole.quarantined.num_rows >= 1


def test_chunk_sizes_and_progress(write: Writer) -> None:
    path = write("ten.csv", TEN_CSV)
    from journeylens.ingest import open_source

    chunks = list(open_source(path, "events", chunk_rows=3))
    # 9 parseable rows in chunks of 3; the row with too few fields (line 8) comes with lines 9-11
    assert [c.rows for c in chunks] == [3, 3, 4]
    done = [c.bytes_done for c in chunks]
    assert done == sorted(done) and done[-1] == len(TEN_CSV)


def test_parquet_progress_counts_rows(tmp_path: Path) -> None:
    from journeylens.ingest import open_source

    src = open_source(ten_parquet(tmp_path / "ten.parquet"), "events", chunk_rows=4)
    assert [c.bytes_done for c in src] == [4, 8, 10]
    assert src.info.total_rows == 10


def test_iterating_twice_reads_again(write: Writer) -> None:
    from journeylens.ingest import open_source

    src = open_source(write("ten.jsonl", ten_jsonl()), "events", chunk_rows=4)
    first = [c.accepted.num_rows for c in src]
    assert [c.accepted.num_rows for c in src] == first


# ---------------------------------------------------------------- property test
_text = st.text(alphabet=string.printable + "äöü€\u00a0", max_size=12)
_value = st.one_of(
    st.none(),
    _text,
    st.sampled_from(["2024-03-01T10:00:00Z", "2024-03-01", "1709287200123", "track", "identify",
                     "alias", "group", "page", "nps", "NaN", "inf", "-1", "1e400", "{}", '{"a":1}',
                     "[]", "", " ", "1985-01-01", "9999-12-31", "0"]),
)
_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_columns = ["user_id", "anonymous_id", "ts", "type", "event", "revenue", "properties", "traits",
            "account_id", "previous_id", "utm_medium", "referrer", "extra"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({c: _value for c in _columns}), min_size=1, max_size=12),
       target=st.sampled_from(["events", "people", "accounts", "costs", "surveys"]))
def test_random_csv_rows_never_raise(tmp_path: Path, rows: list[dict[str, str | None]], target: str) -> None:
    header = list(_columns)
    if target == "costs":
        header = ["date", "channel", "campaign", "spend", "impressions", "clicks"]
    elif target == "surveys":
        header = ["person", "ts", "kind", "score", "comment"]
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")  # quotes values holding \r or \n
    out.writerow(header)
    values = [list(r.values())[: len(header)] for r in rows]
    for row in values:
        out.writerow(["" if v is None else v for v in row])
    path = tmp_path / f"random-{target}.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    res = collect(path, target=target, chunk_rows=5)
    nonblank = sum(1 for row in values if any((v or "") != "" for v in row))
    assert res.accepted.num_rows + res.quarantined.num_rows == res.rows
    assert res.rows == nonblank
    lines = res.quarantined.column("line").to_pylist()
    assert len(lines) == len(set(lines))


@settings(max_examples=40, deadline=None)
@given(records=st.lists(st.one_of(st.dictionaries(st.sampled_from([*_columns, "userId", "timestamp"]),
                                                  _json_value, max_size=8),
                                  _json_value, st.just("{not json")), min_size=1, max_size=12))
def test_random_json_lines_never_raise(records: list[Any]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.jsonl"
        lines = [r if r == "{not json" else json.dumps(r) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        nonblank = sum(1 for line in lines if line.strip())
        try:
            res = collect(path, fmt="jsonl", chunk_rows=4)
        except Exception as exc:  # only a clear file error is allowed (e.g. a leading JSON array)
            from journeylens.errors import InputFileError

            assert isinstance(exc, InputFileError)
            return
        assert res.rows == nonblank
        assert res.accepted.num_rows + res.quarantined.num_rows == nonblank
        assert res.accepted.schema.equals(schema.EVENTS.arrow_schema())


_segment_keys = ["type", "event", "name", "userId", "anonymousId", "messageId", "timestamp",
                 "originalTimestamp", "sentAt", "receivedAt", "properties", "traits", "context", "groupId",
                 "previousId", "batch"]
_message = st.dictionaries(
    st.sampled_from(_segment_keys),
    st.one_of(_json_value, st.sampled_from(["track", "page", "identify", "group", "alias", "screen",
                                            "2024-03-01T10:00:00Z"]),
              st.fixed_dictionaries({"campaign": st.dictionaries(st.sampled_from(["source", "medium", "name"]),
                                                                 _json_value, max_size=3),
                                     "page": st.dictionaries(st.sampled_from(["url", "referrer"]), _text)})),
    max_size=10,
)


@settings(max_examples=40, deadline=None)
@given(messages=st.lists(st.one_of(_message, st.fixed_dictionaries({"batch": st.lists(_message, max_size=3)})),
                         min_size=1, max_size=10))
def test_random_segment_messages_never_raise(messages: list[dict[str, Any]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "segment.jsonl"
        path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
        expected = sum(len(m["batch"]) if isinstance(m.get("batch"), list) else 1 for m in messages)
        res = collect(path, fmt="segment", chunk_rows=3)
        assert res.rows == expected
        assert res.accepted.num_rows + res.quarantined.num_rows == expected
