"""Every file format, column auto-detection, --map and folding."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from journeylens import schema
from tests.ingest.ingest_helpers import Result, Writer, collect, jsonl

T10 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
T1130 = datetime(2024, 3, 1, 11, 30, tzinfo=UTC)

CSV = (
    "userId,anonymousId,timestamp,event_name,revenue,color\n"
    "u1,,2024-03-01T10:00:00Z,purchase,12.50,red\n"
    ",a2,2024-03-01 11:30:00,view,,blue\n"
)


def check_basic(res: Result, fmt: str) -> None:
    assert res.info.fmt == fmt
    assert res.info.target == "events"
    assert res.quarantined.num_rows == 0
    assert res.column("user_id") == ["u1", None]
    assert res.column("anonymous_id") == [None, "a2"]
    assert res.column("ts") == [T10, T1130]
    assert res.column("event") == ["purchase", "view"]
    assert res.column("type") == ["track", "track"]
    assert res.column("revenue") == [12.5, None]
    assert res.column("workspace") == ["w", "w"]
    assert res.column("received_at") == [datetime(2024, 6, 1, 12, tzinfo=UTC)] * 2
    assert [json.loads(p) for p in res.column("properties")] == [{"color": "red"}, {"color": "blue"}]
    assert all(len(m) == 32 for m in res.column("message_id"))


def test_csv_auto_detects_names_and_folds_unknown(write: Writer) -> None:
    res = collect(write("events.csv", CSV))
    check_basic(res, "csv")
    assert res.info.column_map == {"userId": "user_id", "anonymousId": "anonymous_id", "timestamp": "ts",
                                   "event_name": "event", "revenue": "revenue"}
    assert res.info.folded == ["color"]
    assert res.info.total_rows is None
    assert res.info.total_bytes == len(CSV)


def test_tsv_and_semicolon_and_gzip(write: Writer) -> None:
    check_basic(collect(write("events.tsv", CSV.replace(",", "\t"))), "csv")
    check_basic(collect(write("events.csv", CSV.replace(",", ";"))), "csv")
    res = collect(write("events.csv.gz", CSV))
    check_basic(res, "csv")
    assert res.info.total_bytes == Path(res.info.path).stat().st_size


def test_csv_quoted_values_bom_and_whitespace(write: Writer) -> None:
    text = ("\ufeffuser_id , ts,event,properties\n"
            ' u1 ,2024-03-01T10:00:00Z,"buy, now","{""a"": 1}"\n'
            "\u00a0u2\u00a0,2024-03-01T10:00:00Z,  view  ,   \n")
    res = collect(write("e.csv", text))
    assert res.quarantined.num_rows == 0
    assert res.column("user_id") == ["u1", "u2"]
    assert res.column("event") == ["buy, now", "view"]
    assert res.column("properties") == ['{"a": 1}', None]


def test_jsonl_flat_and_nested(write: Writer) -> None:
    text = jsonl(
        {"userId": "u1", "timestamp": "2024-03-01T10:00:00Z", "event_name": "purchase", "revenue": 12.5,
         "color": "red", "properties": {"sku": "A1", "qty": 2}},
        {"anonymousId": "a2", "timestamp": "2024-03-01 11:30:00", "event_name": "view", "revenue": None,
         "color": "blue", "size": 3, "tags": ["x", "y"]},
    )
    for name in ("e.jsonl", "e.ndjson", "e.json", "e.jsonl.gz"):
        res = collect(write(name, text))
        assert res.info.fmt == "jsonl"
        assert res.quarantined.num_rows == 0
        assert res.column("user_id") == ["u1", None]
        assert res.column("ts") == [T10, T1130]
        assert res.column("revenue") == [12.5, None]
        assert [json.loads(p) for p in res.column("properties")] == [
            {"color": "red", "sku": "A1", "qty": 2},
            {"color": "blue", "size": 3, "tags": ["x", "y"]},
        ]
        assert res.info.folded == ["color", "size", "tags"]


def test_parquet_typed_and_string_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array(["u1", None]),
        "anonymous_id": pa.array([None, "a2"]),
        "timestamp": pa.array([T10, T1130], pa.timestamp("ms", "UTC")),
        "event": ["purchase", "view"],
        "revenue": pa.array([12.5, None]),
        "color": ["red", "blue"],
        "n": pa.array([1, None], pa.int32()),
    }), path)
    res = collect(path)
    assert res.info.fmt == "parquet"
    assert res.info.total_rows == 2
    assert res.column("ts") == [T10, T1130]
    assert res.column("revenue") == [12.5, None]
    assert [json.loads(p) for p in res.column("properties")] == [{"color": "red", "n": 1}, {"color": "blue"}]
    assert res.info.folded == ["color", "n"]


def test_parquet_canonical_file_passes_through(tmp_path: Path) -> None:
    sch = schema.EVENTS.arrow_schema()
    rows: dict[str, list[Any]] = {f.name: [None, None] for f in sch}
    rows.update(message_id=["m1", "m2"], workspace=["other", "other"], ts=[T10, T1130],
                received_at=[T10, None], type=["track", "page"], event=["signup", "home"],
                anonymous_id=["a1", "a2"], channel=["email", None], revenue=[9.5, None],
                properties=['{"x":1}', None])
    table = pa.Table.from_pydict(rows, schema=sch)
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    res = collect(path)
    assert res.quarantined.num_rows == 0
    assert res.info.folded == []
    assert "workspace" not in res.info.column_map
    expected = table.to_pydict()
    got = res.accepted.to_pydict()
    expected["workspace"] = ["w", "w"]  # the import's workspace wins
    expected["received_at"] = [T10, datetime(2024, 6, 1, 12, tzinfo=UTC)]
    assert got == expected


def test_parquet_float_ids_and_naive_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array([123.0, None]),
        "anonymous_id": ["a", "b"],
        "ts": pa.array([datetime(2024, 3, 1, 10), datetime(2024, 7, 1, 10)], pa.timestamp("ns")),
        "event": ["x", "y"],
    }), path)
    res = collect(path, tz="Europe/Berlin")
    assert res.column("user_id") == ["123", None]
    assert res.column("ts") == [datetime(2024, 3, 1, 9, tzinfo=UTC), datetime(2024, 7, 1, 8, tzinfo=UTC)]


def test_explicit_mapping_beats_names(write: Writer) -> None:
    text = "who,when,what,event,user_id\nu1,2024-03-01T10:00:00Z,buy,ignored,zzz\n"
    res = collect(write("e.csv", text), mapping={"who": "user_id", "when": "ts", "what": "event"})
    assert res.column("user_id") == ["u1"]
    assert res.column("event") == ["buy"]
    assert json.loads(res.column("properties")[0]) == {"event": "ignored", "user_id": "zzz"}
    assert res.info.column_map == {"who": "user_id", "when": "ts", "what": "event"}
    assert res.info.folded == ["event", "user_id"]


def test_mapping_to_empty_target_drops_a_column(write: Writer) -> None:
    text = "date,channel,spend,note\n2024-03-01,email,10,hello\n"
    res = collect(write("c.csv", text), target="costs", mapping={"note": ""})
    assert res.accepted.num_rows == 1
    assert res.column("spend") == [10.0]


def test_alias_priority_exact_name_wins(write: Writer) -> None:
    text = "timestamp,ts,user,event,ANONYMOUS-ID\n2020-01-01,2024-03-01T10:00:00Z,u1,x,a1\n"
    res = collect(write("e.csv", text))
    assert res.column("ts") == [T10]
    assert res.column("anonymous_id") == ["a1"]
    assert res.column("user_id") == ["u1"]
    assert json.loads(res.column("properties")[0]) == {"timestamp": "2020-01-01"}


def test_format_override_and_unknown_suffix(write: Writer) -> None:
    res = collect(write("events.txt", CSV), fmt="csv")
    check_basic(res, "csv")
    path = write("events.log", jsonl({"user_id": "u", "ts": "2024-03-01T10:00:00Z", "event": "x"}))
    assert collect(path).info.fmt == "jsonl"  # content sniffed: starts with '{'


def test_people_traits_and_default_ts(write: Writer) -> None:
    text = ("id,email,plan,updated_at,traits\n"
            "u1,a@x.de,pro,2024-03-01T10:00:00Z,\n"
            "u2,b@x.de,,,\"{\"\"age\"\": 40, \"\"plan\"\": \"\"free\"\"}\"\n"
            "u3,,,,\n")
    res = collect(write("people.csv", text), target="people")
    assert res.quarantined.num_rows == 0
    assert res.column("user_id") == ["u1", "u2", "u3"]
    assert res.column("ts") == [T10, datetime(2024, 6, 1, 12, tzinfo=UTC), datetime(2024, 6, 1, 12, tzinfo=UTC)]
    assert [json.loads(t) for t in res.column("traits")] == [
        {"email": "a@x.de", "plan": "pro"},
        {"email": "b@x.de", "age": 40, "plan": "free"},
        {},
    ]
    assert res.info.folded == ["email", "plan"]


def test_accounts(write: Writer) -> None:
    res = collect(write("a.csv", "groupId,name,employees\nacme,Acme Inc,120\n,Nobody,1\n"), target="accounts")
    assert res.column("account_id") == ["acme"]
    assert json.loads(res.column("traits")[0]) == {"name": "Acme Inc", "employees": "120"}
    assert res.rejects() == [(3, "account_id", "missing required value")]


def test_costs_and_aliases(write: Writer) -> None:
    text = "day,source,campaign_name,cost,impressions,clicks,currency\n2024-03-01,email,spring,10.5,1000,20,EUR\n"
    res = collect(write("costs.csv", text), target="costs")
    assert res.accepted.to_pylist()[0] | {"message_id": None} == {
        "message_id": None, "workspace": "w", "date": datetime(2024, 3, 1).date(), "channel": "email",
        "campaign": "spring", "spend": 10.5, "impressions": 1000, "clicks": 20, "video_views": None,
        "currency": "EUR",
    }


def test_surveys_aliases(write: Writer) -> None:
    text = "user_id,time,type,rating,feedback\nu1,2024-03-01T10:00:00Z,NPS,9,Super!\n"
    res = collect(write("s.csv", text), target="surveys")
    row = res.accepted.to_pylist()[0]
    assert (row["person"], row["ts"], row["kind"], row["score"], row["comment"]) == ("u1", T10, "nps", 9.0, "Super!")


def test_header_only_file_yields_nothing(write: Writer) -> None:
    res = collect(write("e.csv", "user_id,ts,event\n"))
    assert res.rows == 0
    assert res.accepted.num_rows == 0


@pytest.mark.parametrize("target", sorted(schema.IMPORTABLE))
def test_empty_chunks_have_exact_schemas(write: Writer, target: str) -> None:
    header = ",".join(c for c in schema.IMPORTABLE[target].names if c != "workspace")
    res = collect(write("x.csv", header + "\n" + "," * header.count(",") + "x\n"), target=target)
    assert res.rows == 1  # a row with one value: rejected, never dropped
    assert res.quarantined.num_rows == 1


def test_crlf_line_endings_and_local_received_at(write: Writer) -> None:
    received = datetime(2024, 6, 1, 14, 0).astimezone()  # what the workspace passes: aware, local
    res = collect(write("e.csv", CSV.replace("\n", "\r\n") + "bad-row\r\n"), received_at=received)
    assert res.column("user_id") == ["u1", None]
    assert res.column("received_at") == [received.astimezone(UTC)] * 2
    assert res.rejects() == [(4, None, "wrong number of columns")]
    assert res.quarantined.column("received_at").to_pylist() == [received.astimezone(UTC)]


def test_pathlib_and_str_paths_give_the_same_rows(write: Writer) -> None:
    path = write("e.csv", CSV)
    assert collect(path).accepted.equals(collect(str(path)).accepted)
