"""The embedded default store: one DuckDB file, reached through Ibis.

Backend-specific SQL of the DuckDB store lives in this file only.
Appends stage chunks in a temporary table and move the new rows into the
target table in one transaction, so an import is all-or-nothing and
importing the same file twice inserts nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa

from journeylens import schema
from journeylens.errors import ConfigError, StoreError
from journeylens.store.base import Appender, AppendResult, Store
from journeylens.store.functions import register_duckdb_functions

_counter = itertools.count()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBAppender(Appender):
    def __init__(self, store: DuckDBStore, name: str, key: Sequence[str]) -> None:
        self.store = store
        self.name = name
        self.key = list(key)
        self.stage = f"_stage_{name}_{next(_counter)}"
        self.raw = store.raw
        self.rows = 0
        self.raw.execute(f"CREATE TEMP TABLE {_q(self.stage)} AS SELECT * FROM {_q(name)} LIMIT 0")

    def write(self, chunk: pa.Table) -> None:
        if chunk.num_rows == 0:
            return
        chunk = Store._conform(self.name, chunk)
        view = f"_arrow_{self.stage}"
        self.raw.register(view, chunk)
        try:
            self.raw.execute(f"INSERT INTO {_q(self.stage)} SELECT * FROM {_q(view)}")
        finally:
            self.raw.unregister(view)
        self.rows += chunk.num_rows

    def commit(self) -> AppendResult:
        raw, stage, target = self.raw, _q(self.stage), _q(self.name)
        try:
            if self.rows == 0:
                return AppendResult(0, 0)
            source = stage
            if self.key:
                keys = ", ".join(_q(k) for k in self.key)
                distinct = raw.execute(
                    f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {stage})"
                ).fetchone()[0]
                if distinct != self.rows:  # duplicates inside this append: keep the first
                    source = f"(SELECT * FROM {stage} QUALIFY row_number() OVER (PARTITION BY {keys}) = 1)"
                has_rows = raw.execute(f"SELECT EXISTS (SELECT 1 FROM {target})").fetchone()[0]
                if has_rows:
                    cond = " AND ".join(f"t.{_q(k)} IS NOT DISTINCT FROM s.{_q(k)}" for k in self.key)
                    source = f"(SELECT s.* FROM {source} s WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {cond}))"
            raw.execute("BEGIN TRANSACTION")
            try:
                inserted = raw.execute(f"INSERT INTO {target} SELECT * FROM {source}").fetchone()[0]
                raw.execute("COMMIT")
            except Exception:
                raw.execute("ROLLBACK")
                raise
            return AppendResult(int(inserted), self.rows - int(inserted))
        finally:
            self.abort()

    def abort(self) -> None:
        self.raw.execute(f"DROP TABLE IF EXISTS {_q(self.stage)}")


class DuckDBStore(Store):
    backend = "duckdb"

    def __init__(self, path: str | Path, *, read_only: bool = False, memory_limit: str | None = None,
                 threads: int | None = None) -> None:
        self.url = str(path)
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None and self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a DuckDB file")
        try:
            self.con: Any = ibis.duckdb.connect(str(path), read_only=read_only)
        except Exception as exc:  # duckdb raises IOException & co.
            raise StoreError(f"cannot open {path}: {exc}".splitlines()[0]) from exc
        self.raw = self.con.con
        if memory_limit:
            try:
                self.raw.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
            except Exception as exc:
                raise ConfigError(f"invalid memory_limit '{memory_limit}'", hint="e.g. 3GB or 512MB") from exc
        if threads:
            self.raw.execute(f"SET threads = {int(threads)}")
        self.raw.execute("SET preserve_insertion_order = false")
        register_duckdb_functions(self.con)
        self._ensure_tables(read_only)

    def _ensure_tables(self, read_only: bool) -> None:
        existing = set(self.con.list_tables())
        if schema.META.name in existing:
            self._check_version(self.meta().get("schema_version"), self.url)
        if read_only:
            return
        for spec in schema.TABLES.values():
            if spec.name not in existing:
                self.con.create_table(spec.name, schema=spec.ibis_schema())
        if "schema_version" not in self.meta():
            self.raw.execute(
                f"INSERT INTO {_q(schema.META.name)} VALUES ('schema_version', ?)",
                [str(schema.SCHEMA_VERSION)],
            )

    def meta(self) -> dict[str, str]:
        rows = self.raw.execute(f"SELECT key, value FROM {_q(schema.META.name)}").fetchall()
        return {k: v for k, v in rows}

    def appender(self, name: str, key: Sequence[str] | None = None) -> Appender:
        self.table(name)  # validates the name
        return DuckDBAppender(self, name, schema.TABLES[name].key if key is None else key)

    def replace_workspace_rows(self, name: str, workspace: str, data: pa.Table) -> None:
        data = self._conform(name, data)
        view = f"_replace_{next(_counter)}"
        self.raw.register(view, data)
        try:
            self.raw.execute("BEGIN TRANSACTION")
            try:
                self.raw.execute(f"DELETE FROM {_q(name)} WHERE workspace = ?", [workspace])
                self.raw.execute(f"INSERT INTO {_q(name)} SELECT * FROM {_q(view)}")
                self.raw.execute("COMMIT")
            except Exception:
                self.raw.execute("ROLLBACK")
                raise
        finally:
            self.raw.unregister(view)

    def checkpoint(self) -> None:
        self.raw.execute("CHECKPOINT")

    def close(self) -> None:
        self.con.disconnect()
