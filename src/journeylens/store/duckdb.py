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
import ibis.expr.types as ir
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

    def materialize(self, expr: ir.Table) -> ir.Table:
        """A TEMP table holding ``expr`` (Ibis' ``cache()`` trips on sqlglot 30 when dropping)."""
        self._temp_tables = getattr(self, "_temp_tables", 0) + 1
        # keep every column nullable, like the expression's source tables (ibis would declare NOT NULL)
        nullable = ibis.schema({n: t.copy(nullable=True) for n, t in expr.schema().items()})
        return self.con.create_table(f"_jl_tmp_{self._temp_tables}", expr.cast(nullable), temp=True)

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

    def replace_workspace_rows_from(self, name: str, workspace: str, expr: Any) -> None:
        """Replace all rows of ``workspace`` in table ``name`` by the rows of the Ibis expression
        ``expr`` (same columns), computed inside DuckDB in one transaction (derived tables)."""
        self.table(name)
        names = schema.TABLES[name].names
        cols = ", ".join(_q(c) for c in names)
        sql = ibis.to_sql(expr.select(*names), dialect="duckdb")
        self.raw.execute("BEGIN TRANSACTION")
        try:
            self.raw.execute(f"DELETE FROM {_q(name)} WHERE workspace = ?", [workspace])
            self.raw.execute(f"INSERT INTO {_q(name)} ({cols}) SELECT {cols} FROM ({sql})")
            self.raw.execute("COMMIT")
        except Exception:
            self.raw.execute("ROLLBACK")
            raise

    def set_meta(self, key: str, value: str) -> None:
        """Set one key of the store's meta table (e.g. a derived table's build marker)."""
        self.raw.execute("BEGIN TRANSACTION")
        try:
            self.raw.execute(f"DELETE FROM {_q(schema.META.name)} WHERE key = ?", [key])
            self.raw.execute(f"INSERT INTO {_q(schema.META.name)} VALUES (?, ?)", [key, value])
            self.raw.execute("COMMIT")
        except Exception:
            self.raw.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- collector / GDPR
    def append_parts(self, parts: Sequence[tuple[str, pa.Table, Sequence[str]]]) -> list[set[tuple[Any, ...]]]:
        """Append several tables in ONE transaction; per part, the keys that were duplicates.

        Each part is ``(table, rows, key)``. Rows whose ``key`` values exist in
        the table already are not inserted; their key tuples are returned. The
        rows of one part must have distinct keys (the caller dedupes within a
        batch). An empty ``key`` inserts every row. Either all parts are
        committed or none (the exception propagates after ROLLBACK).
        """
        return self.write_atomic(parts)[0]

    def write_atomic(self, parts: Sequence[tuple[str, pa.Table, Sequence[str]]],
                     deletions: Sequence[tuple[str, str, Sequence[Any]]] = (),
                     ) -> tuple[list[set[tuple[Any, ...]]], dict[str, int]]:
        """:meth:`delete_where` ``deletions``, then :meth:`append_parts` ``parts``, in ONE transaction."""
        views: list[str] = []
        found: list[set[tuple[Any, ...]]] = []
        counts: dict[str, int] = {}
        try:
            self.raw.execute("BEGIN TRANSACTION")
            try:
                for name, condition, params in deletions:
                    self.table(name)
                    n = self.raw.execute(f"DELETE FROM {_q(name)} WHERE {condition}", list(params)).fetchone()[0]
                    counts[name] = counts.get(name, 0) + int(n)
                for name, data, key in parts:
                    self.table(name)
                    if data.num_rows == 0:
                        found.append(set())
                        continue
                    view = f"_parts_{next(_counter)}"
                    self.raw.register(view, self._conform(name, data))
                    views.append(view)
                    dupes: set[tuple[Any, ...]] = set()
                    source = _q(view)
                    if key:
                        cond = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in key)
                        cols = ", ".join(f"s.{_q(k)}" for k in key)
                        rows = self.raw.execute(
                            f"SELECT {cols} FROM {_q(view)} s SEMI JOIN {_q(name)} t ON {cond}").fetchall()
                        dupes = {tuple(r) for r in rows}
                        if dupes:
                            source = f"(SELECT s.* FROM {_q(view)} s ANTI JOIN {_q(name)} t ON {cond})"
                    self.raw.execute(f"INSERT INTO {_q(name)} SELECT * FROM {source}")
                    found.append(dupes)
                self.raw.execute("COMMIT")
            except BaseException:
                self.raw.execute("ROLLBACK")
                raise
        finally:
            for view in views:
                self.raw.unregister(view)
        return found, counts

    def delete_where(self, deletions: Sequence[tuple[str, str, Sequence[Any]]]) -> dict[str, int]:
        """Run ``DELETE FROM table WHERE <condition>`` (SQL with ``?`` parameters) for each
        ``(table, condition, params)`` in ONE transaction; returns rows deleted per table."""
        return self.write_atomic((), deletions)[1]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query (``?`` parameters)."""
        table = self.raw.execute(sql, list(params)).to_arrow_table()
        columns = [c.to_pylist() for c in table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def checkpoint(self) -> None:
        self.raw.execute("CHECKPOINT")

    def close(self) -> None:
        self.con.disconnect()
