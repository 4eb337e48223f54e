"""The DuckDB appender's two strategies (direct stream into an empty table, staged anti-join
otherwise) give the same rows and counts; aborts and failures leave nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from journeylens import schema
from journeylens.errors import StoreError
from journeylens.store import open_store
from journeylens.store.duckdb import DuckDBAppender, DuckDBStore
from tests.helpers import T0, events_table


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = open_store(str(tmp_path / "app.duckdb"))
    assert isinstance(s, DuckDBStore)
    yield s
    s.close()


def chunk(ids: list[str], event: str = "visit") -> pa.Table:
    return events_table([{"anonymous_id": "a", "message_id": m, "event": event} for m in ids])


def ids_in(s: DuckDBStore) -> list[str]:
    return sorted(s.to_pyarrow(s.table("events").message_id).to_pylist())


def test_direct_mode_dedupes_within_and_across_chunks(duck: DuckDBStore) -> None:
    with duck.appender("events") as app:
        assert isinstance(app, DuckDBAppender)
        app.write(chunk(["1", "2", "2"]))
        assert app._mode == "direct"
        app.write(chunk(["3", "1", "4"]))
        app.write(chunk(["4", "4"]))
        assert duck.scalar(duck.table("events").count()) == 0  # nothing visible before commit
        result = app.commit()
    assert (result.inserted, result.duplicates) == (4, 4)
    assert ids_in(duck) == ["1", "2", "3", "4"]


def test_direct_mode_skips_keys_already_in_the_table(duck: DuckDBStore) -> None:
    duck.append("events", chunk(["1", "5"]))
    with duck.appender("events") as app:
        assert isinstance(app, DuckDBAppender)
        app.write(chunk(["1", "2", "2"], event="again"))
        assert app._mode == "direct"
        app.write(chunk(["3", "5", "2"], event="again"))
        result = app.commit()
    assert (result.inserted, result.duplicates) == (2, 4)
    assert ids_in(duck) == ["1", "2", "3", "5"]
    e = duck.table("events")
    kept = {r["message_id"]: r["event"] for r in duck.to_pyarrow(e.select("message_id", "event")).to_pylist()}
    assert kept["1"] == kept["5"] == "visit"  # the stored rows stay as they were


def test_staged_mode_for_composite_keys(duck: DuckDBStore) -> None:
    key = ("workspace", "target", "source", "line", "field", "reason")
    rows = [{"workspace": "default", "target": "events", "source": "f.csv", "line": i, "field": None,
             "reason": "bad", "raw": "x", "received_at": T0} for i in (1, 2, 2, None, None)]
    q = pa.Table.from_pylist(rows, schema=schema.QUARANTINE.arrow_schema())
    with duck.appender("quarantine", key=key) as app:
        assert isinstance(app, DuckDBAppender)
        app.write(q)
        assert app._mode == "staged"
        result = app.commit()
    assert (result.inserted, result.duplicates) == (3, 2)  # NULL line equals NULL line here
    assert duck.append("quarantine", q, key=key).inserted == 0


def test_large_stream_keeps_every_row(duck: DuckDBStore) -> None:
    n = 300_000  # several Arrow batches: DuckDB inserts them on several threads
    table = chunk(["x"]).slice(0, 0)
    base = events_table([{"anonymous_id": "a"}])
    big = pa.concat_tables([base] * n).combine_chunks().set_column(
        0, "message_id", pa.array([f"id{i}" for i in range(n)], pa.string()))
    with duck.appender("events") as app:
        app.write(big.slice(0, 200_000))
        app.write(table)
        app.write(big.slice(150_000))  # 50,000 repeated
        result = app.commit()
    assert (result.inserted, result.duplicates) == (n, 50_000)
    assert duck.scalar(duck.table("events").count()) == n
    assert duck.scalar(duck.table("events").message_id.nunique()) == n


def test_abort_leaves_nothing_and_the_store_usable(duck: DuckDBStore) -> None:
    with pytest.raises(RuntimeError), duck.appender("events") as app:
        app.write(chunk(["1", "2"]))
        raise RuntimeError("validation blew up")
    assert duck.scalar(duck.table("events").count()) == 0
    assert duck.append("events", chunk(["1"])).inserted == 1


def test_failing_insert_is_reported_and_rolled_back(duck: DuckDBStore) -> None:
    bad = chunk(["1"]).set_column(0, pa.field("message_id", pa.string()), pa.array([None], pa.string()))
    bad = bad.cast(pa.schema([f.with_nullable(True) for f in schema.EVENTS.arrow_schema()]))
    with pytest.raises(StoreError), duck.appender("events") as app:  # NOT NULL message_id
        app.write(chunk(["ok"]))
        app.write(bad)
        app.commit()
    assert duck.scalar(duck.table("events").count()) == 0
    assert duck.append("events", chunk(["2"])).inserted == 1


def test_suspect_keys_are_checked_exactly(duck: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key's hash reported twice (as if all collided): the exact check keeps every
    distinct key once and removes only real repeats."""
    real = DuckDBAppender._key_hashes
    monkeypatch.setattr(DuckDBAppender, "_key_hashes", lambda self, c: np.concatenate([real(self, c)] * 2))
    result = duck.append("events", chunk(["1", "2", "3", "2"]))
    assert (result.inserted, result.duplicates) == (3, 1)
    assert ids_in(duck) == ["1", "2", "3"]
