"""The store on every backend: tables, idempotent appends, schema version, replace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from journeylens import schema
from journeylens.errors import SchemaVersionError, UnknownNameError
from journeylens.store import Store, open_store
from tests.helpers import events_table


def test_creates_every_canonical_table(make_store: Callable[[], Store]) -> None:
    s = make_store()
    for name, spec in schema.TABLES.items():
        assert s.table(name).columns == tuple(spec.names), name
    assert s.meta()["schema_version"] == str(schema.SCHEMA_VERSION)


def test_append_is_idempotent_on_message_id(make_store: Callable[[], Store]) -> None:
    s = make_store()
    batch = events_table([{"anonymous_id": "a", "message_id": m} for m in ["1", "2", "2", "3"]])
    r1 = s.append("events", batch)
    assert (r1.inserted, r1.duplicates) == (3, 1)
    r2 = s.append("events", batch)
    assert (r2.inserted, r2.duplicates) == (0, 4)
    r3 = s.append("events", events_table([{"anonymous_id": "a", "message_id": m} for m in ["3", "4"]]))
    assert (r3.inserted, r3.duplicates) == (1, 1)
    ids = sorted(s.to_pyarrow(s.table("events").message_id).to_pylist())
    assert ids == ["1", "2", "3", "4"]


def test_appender_commits_all_chunks_at_once(make_store: Callable[[], Store]) -> None:
    s = make_store()
    with s.appender("events") as app:
        app.write(events_table([{"anonymous_id": "a", "message_id": "x1"}]))
        app.write(events_table([{"anonymous_id": "a", "message_id": "x2"}]))
        assert s.scalar(s.table("events").count()) == 0  # nothing visible before commit
        result = app.commit()
    assert result.inserted == 2
    assert s.scalar(s.table("events").count()) == 2


def test_data_survives_reopen(make_store: Callable[[], Store]) -> None:
    s = make_store()
    s.append("events", events_table([{"anonymous_id": "a"}]))
    s.close()
    assert make_store().scalar(make_store().table("events").count()) == 1


def test_replace_workspace_rows_keeps_other_workspaces(make_store: Callable[[], Store]) -> None:
    s = make_store()
    def ids(ws: str, *pairs: tuple[str, str]) -> pa.Table:
        return pa.Table.from_pylist([{"workspace": ws, "id": i, "person_id": p} for i, p in pairs],
                                    schema=schema.IDENTITIES.arrow_schema())
    s.replace_workspace_rows("identities", "a", ids("a", ("x", "u1")))
    s.replace_workspace_rows("identities", "b", ids("b", ("y", "u2")))
    s.replace_workspace_rows("identities", "a", ids("a", ("z", "u3")))
    rows = sorted((r["workspace"], r["id"]) for r in s.to_pyarrow(s.table("identities")).to_pylist())
    assert rows == [("a", "z"), ("b", "y")]


def test_unknown_table_suggests_name(make_store: Callable[[], Store]) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'events'"):
        make_store().table("event")


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    s = open_store(path)
    s.con.raw_sql("UPDATE journeylens_meta SET value = '999' WHERE key = 'schema_version'")
    s.close()
    with pytest.raises(SchemaVersionError, match="schema version 999"):
        open_store(path)
