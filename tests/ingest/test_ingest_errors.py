"""Files that cannot be imported: one clear InputFileError before any row is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeylens.errors import InputFileError, InvalidParameterError, UnknownNameError
from journeylens.ingest import open_source
from tests.ingest.ingest_helpers import Writer, jsonl


def fails(path: Path | str, target: str = "events", **kwargs: object) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        open_source(path, target, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert str(path) in str(err)
    assert err.path == str(path)
    assert "\n" not in str(err)
    assert err.code == "input_file" and err.exit_code == 2
    return err


def test_missing_file(tmp_path: Path) -> None:
    err = fails(tmp_path / "nope.csv")
    assert "no such file" in str(err)


def test_directory(tmp_path: Path) -> None:
    assert "directory" in str(fails(tmp_path))


def test_empty_file(write: Writer) -> None:
    assert "empty" in str(fails(write("e.csv", "")))
    assert "no data" in str(fails(write("e.jsonl", "\n  \n")))


def test_unknown_format(write: Writer) -> None:
    err = fails(write("events.xlsx", "a,b\n1,2\n"))
    assert "cannot tell the format" in str(err)
    assert err.hint is not None and "--input-format" in err.hint
    err = fails(write("events.csv", "a\n"), fmt="exel")
    assert "unknown format 'exel'" in str(err)


def test_unreadable_parquet(write: Writer) -> None:
    err = fails(write("events.parquet", "user_id,ts\n"))
    assert "cannot read as Parquet" in str(err)


def test_binary_data_in_a_text_file(write: Writer) -> None:
    assert "not a text file" in str(fails(write("events.csv", b"PAR1\x00\x01\x02")))


def test_not_gzip(write: Writer) -> None:
    path = write("events.csv", "user_id,ts,event\n")
    gz = path.with_suffix(".csv.gz")
    gz.write_bytes(b"plain text, not gzip\n")
    assert "cannot read the file" in str(fails(gz))


def test_json_array_is_not_json_lines(write: Writer) -> None:
    err = fails(write("events.json", '[{"user_id": "u1"},\n {"user_id": "u2"}]\n'))
    assert "not JSON lines" in str(err)
    err = fails(write("events.json", '{\n  "user_id": "u1"\n}\n'))
    assert "not JSON lines" in str(err)


def test_map_source_not_in_file(write: Writer) -> None:
    err = fails(write("e.csv", "user_name,ts,event\n"), mapping={"username": "user_id"})
    assert "--map username=user_id" in str(err) and "no column 'username'" in str(err)
    assert err.field == "username"
    assert err.hint == "did you mean 'user_name'?"


def test_map_target_not_a_column(write: Writer) -> None:
    err = fails(write("e.csv", "who,ts,event\n"), mapping={"who": "userid"})
    assert "'userid' is not a column of events" in str(err)
    assert err.field == "userid"
    assert err.hint == "did you mean 'user_id'?"


def test_map_in_jsonl_checks_first_records(write: Writer) -> None:
    err = fails(write("e.jsonl", jsonl({"who": "u", "ts": "2024-03-01", "event": "x"})), fmt="jsonl",
                mapping={"whom": "user_id"})
    assert "no column 'whom'" in str(err)


def test_required_column_missing(write: Writer) -> None:
    err = fails(write("costs.csv", "date,channel,campaign,Spend EUR\n"), "costs", mapping={"Spend EUR": ""})
    assert "no 'spend' column" in str(err)
    assert err.field == "spend"
    err = fails(write("e.csv", "user_id,event,when\n"))
    assert "no 'ts' column" in str(err) and err.field == "ts"
    assert err.hint is not None and "--map SOURCE=ts" in err.hint
    err = fails(write("s.csv", "person,ts,kind\n"), "surveys")
    assert err.field == "score"
    err = fails(write("e.csv", "user_id,ts\n"))
    assert err.field == "event"


def test_costs_unknown_columns_named_in_one_line(write: Writer) -> None:
    err = fails(write("costs.csv", "date,channel,spend,cliks,note\n"), "costs")
    assert "unknown columns 'cliks', 'note' for costs" in str(err)
    assert err.hint is not None and "'cliks' → 'clicks'?" in err.hint


def test_surveys_unknown_column(write: Writer) -> None:
    err = fails(write("s.jsonl", jsonl({"person": "u", "ts": "2024-03-01", "kind": "nps", "score": 1,
                                        "scroe": 2})), "surveys")
    assert "unknown column 'scroe'" in str(err) and err.field == "scroe"


def test_segment_only_into_events(write: Writer) -> None:
    path = write("s.jsonl", jsonl({"type": "track", "event": "x", "userId": "u", "timestamp": "2024-03-01"}))
    assert "import into events" in str(fails(path, "people", fmt="segment"))
    assert "--map does not apply" in str(fails(path, fmt="segment", mapping={"a": "user_id"}))


def test_duplicate_csv_header(write: Writer) -> None:
    err = fails(write("e.csv", "user_id,ts,event,user_id\n"))
    assert "duplicate column name 'user_id'" in str(err)


def test_bad_parameters(write: Writer) -> None:
    path = write("e.csv", "user_id,ts,event\n")
    with pytest.raises(UnknownNameError):
        open_source(path, "identities")
    with pytest.raises(InvalidParameterError, match="Europe/Berlin"):
        open_source(path, "events", tz="Europe/Berln")
    with pytest.raises(InvalidParameterError):
        open_source(path, "events", chunk_rows=0)
