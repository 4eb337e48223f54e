"""The embedded default store: one DuckDB file, reached through Ibis.

Backend-specific SQL of the DuckDB store lives in this file only.
Appends are one transaction each, so an import is all-or-nothing and
importing the same file twice inserts nothing: into an empty table the chunks
stream straight in, known keys dropped by a join and repeated ones removed
before COMMIT; composite keys are staged in a temporary table and the new
rows moved with one anti-join (:class:`DuckDBAppender`).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from journeylens import schema
from journeylens.errors import ConfigError, StoreError, UnknownNameError
from journeylens.store.base import Appender, AppendResult, Store
from journeylens.store.functions import register_duckdb_functions

_counter = itertools.count()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _known_table(name: str) -> None:
    """Raise :class:`UnknownNameError` unless ``name`` is a canonical table (as ``Store.table`` does,
    without asking the backend for its schema)."""
    if name not in schema.TABLES:
        raise UnknownNameError("table", name, schema.TABLES)


_END = object()
_STREAM_BATCH = 122_880
"""Rows per Arrow batch handed to DuckDB (its row-group size): several batches let it insert on all threads."""


class _Stream:
    """One ``INSERT INTO target SELECT * FROM <Arrow stream>`` running in a background thread on
    its own cursor, fed chunk by chunk through a small queue (validation of the next chunk
    overlaps DuckDB's compression and writing of the previous one)."""

    def __init__(self, cur: Any, target: str, arrow_schema: pa.Schema, key: str | None = None) -> None:
        self.cur = cur
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.inserted = 0
        self.view = f"_stream_{next(_counter)}"
        reader = pa.RecordBatchReader.from_batches(arrow_schema, self._batches())
        cur.register(self.view, reader)
        sql = f"INSERT INTO {_q(target)} SELECT * FROM {_q(self.view)}"
        if key is not None:  # a MARK join: hash table on the table's keys, the stream only probes it
            sql += f" WHERE {_q(key)} NOT IN (SELECT {_q(key)} FROM {_q(target)})"
        self.thread = threading.Thread(target=self._run, args=(sql,), name=f"jl-append-{target}", daemon=True)
        self.thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if item.num_columns and item.column(0).num_chunks > 8:  # many small pieces: one Python call each
                item = item.combine_chunks()
            yield from item.to_batches(max_chunksize=_STREAM_BATCH)

    def _run(self, sql: str) -> None:
        try:
            self.inserted = int(self.cur.execute(sql).fetchone()[0])
        except BaseException as exc:  # reported to the writing thread
            self.error = exc

    def put(self, item: Any) -> None:
        while True:
            if not self.thread.is_alive():
                self._raise()
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        err = self.error or StoreError("the append stream stopped")
        raise StoreError(f"append failed: {err}".splitlines()[0]) from err

    def finish(self) -> int:
        self.put(_END)
        self.thread.join()
        self.cur.unregister(self.view)
        if self.error is not None:
            self._raise()
        return self.inserted

    def cancel(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(queue.Full):  # else the consumer is stuck already
                self.queue.put(StoreError("append aborted"), timeout=5)
            self.thread.join()
        self.cur.unregister(self.view)


class DuckDBAppender(Appender):
    """Appends chunks atomically, deduplicating on ``key``: a row whose key is in the table
    already, or earlier in the same append, is a duplicate (one row per key is inserted).

    Two strategies, same result:

    * **direct** (a single key column that the schema requires, e.g. ``message_id``): chunks
      stream straight into the table inside one transaction on a private cursor, no staging
      copy. When the table has rows, ``key NOT IN (SELECT key FROM table)`` drops the known
      keys (a MARK join: DuckDB hashes the table's keys, the stream only probes). Keys repeated
      inside the append are found from DuckDB ``hash()`` values collected per chunk (numpy);
      only when some hash repeats are the table's rows with such hashes checked exactly and
      every copy of a key but one deleted before COMMIT.
    * **staged** (other keys, e.g. quarantine's composite key with nullable parts): chunks are
      staged in a TEMP table; at commit the staged rows whose key is new are moved with one
      anti-join (``IS NOT DISTINCT FROM``) in one transaction.
    """

    def __init__(self, store: DuckDBStore, name: str, key: Sequence[str]) -> None:
        self.store = store
        self.name = name
        self.key = list(key)
        self.stage = f"_stage_{name}_{next(_counter)}"
        self.raw = store.raw
        self.rows = 0
        self._mode: str | None = None  # decided at the first write: "direct" or "staged"
        self._stream: _Stream | None = None
        self._cur: Any = None
        self._hashes: list[npt.NDArray[np.uint64]] = []

    def _start(self) -> None:
        spec = schema.TABLES[self.name]
        required = {c.name for c in spec.columns if c.required}
        if len(self.key) == 1 and self.key[0] in required:
            has_rows = self.raw.execute(f"SELECT EXISTS (SELECT 1 FROM {_q(self.name)})").fetchone()[0]
            self._cur = self.raw.cursor()
            self._cur.execute("BEGIN TRANSACTION")
            self._stream = _Stream(self._cur, self.name, spec.arrow_schema(), self.key[0] if has_rows else None)
            self._mode = "direct"
        else:
            self.raw.execute(f"CREATE TEMP TABLE {_q(self.stage)} AS SELECT * FROM {_q(self.name)} LIMIT 0")
            self._mode = "staged"

    def write(self, chunk: pa.Table) -> None:
        if chunk.num_rows == 0:
            return
        chunk = Store._conform(self.name, chunk)
        if self._mode is None:
            self._start()
        if self._stream is not None:
            self._hashes.append(self._key_hashes(chunk))
            self._stream.put(chunk)
        else:
            view = f"_arrow_{self.stage}"
            self.raw.register(view, chunk)
            try:
                self.raw.execute(f"INSERT INTO {_q(self.stage)} SELECT * FROM {_q(view)}")
            finally:
                self.raw.unregister(view)
        self.rows += chunk.num_rows

    def commit(self) -> AppendResult:
        try:
            if self.rows == 0:
                return AppendResult(0, 0)
            if self._stream is not None:
                return self._commit_direct()
            return self._commit_staged()
        finally:
            self.abort()

    def _commit_direct(self) -> AppendResult:
        assert self._stream is not None
        cur, target = self._cur, _q(self.name)
        inserted = self._stream.finish()
        self._stream = None
        hashes = np.sort(np.concatenate(self._hashes))
        repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        self._hashes = []
        if len(repeated):  # maybe the same key twice in this append (or a hash collision): check exactly
            key, view = _q(self.key[0]), f"_repeated_{next(_counter)}"
            cur.register(view, pa.table({"h": pa.array(repeated, pa.uint64())}))
            try:
                inserted -= int(cur.execute(
                    f"DELETE FROM {target} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
                    f"(PARTITION BY {key} ORDER BY rowid) AS n FROM {target} "
                    f"WHERE hash({key}) IN (SELECT h FROM {_q(view)})) WHERE n > 1)").fetchone()[0])
            finally:
                cur.unregister(view)
        cur.execute("COMMIT")
        self._cur = None
        return AppendResult(inserted, self.rows - inserted)

    def _key_hashes(self, chunk: pa.Table) -> npt.NDArray[np.uint64]:
        """DuckDB's ``hash()`` of the chunk's key values (equal keys, equal hashes)."""
        view = f"_keys_{next(_counter)}"
        self.raw.register(view, chunk.select(self.key))
        try:
            out = self.raw.execute(f"SELECT hash({_q(self.key[0])}) FROM {_q(view)}").fetch_arrow_table()
        finally:
            self.raw.unregister(view)
        return np.asarray(out.column(0).to_numpy(), dtype=np.uint64)

    def _commit_staged(self) -> AppendResult:
        raw, stage, target = self.raw, _q(self.stage), _q(self.name)
        source = stage
        if self.key:
            keys = ", ".join(_q(k) for k in self.key)
            distinct = raw.execute(f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {stage})").fetchone()[0]
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

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        if self._cur is not None:
            with contextlib.suppress(Exception):  # a failed statement may have ended the transaction
                self._cur.execute("ROLLBACK")
            self._cur.close()
            self._cur = None
        if self._mode == "staged":
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
        self._tables: dict[str, ir.Table] = {}
        self._ensure_tables(read_only)

    def table(self, name: str) -> ir.Table:
        """The table's expression, looked up in the catalog once per store: the canonical tables
        are created at open and never altered (a lookup costs about as much as a small query)."""
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = super().table(name)
        return t

    def workspace_rows(self, name: str, workspace: str) -> int:
        _known_table(name)
        rows = self.raw.execute(f"SELECT count(*) FROM {_q(name)} WHERE workspace = ?", [workspace]).fetchall()
        return int(rows[0][0])

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

    def replace_workspace_rows_incremental(self, name: str, workspace: str, insert: Any, *, expected: Any,
                                           stale_ids: pa.Array, stale_columns: Sequence[str]) -> bool:
        """Update the derived rows of ``workspace`` in table ``name`` in place, in one transaction:
        delete its rows where any of ``stale_columns`` is one of ``stale_ids``, then insert the rows
        of the Ibis expression ``insert`` (evaluated after the delete, so it may anti-join the
        table); COMMIT when the workspace then holds exactly ``expected`` (an Ibis count, also
        evaluated after the delete) rows and return True, else ROLLBACK and return False."""
        self.table(name)
        names = schema.TABLES[name].names
        cols = ", ".join(_q(c) for c in names)
        insert_sql = ibis.to_sql(insert.select(*names), dialect="duckdb")
        expected_sql = ibis.to_sql(expected, dialect="duckdb")
        view = f"_stale_{next(_counter)}"
        self.raw.register(view, pa.table({"id": stale_ids.cast(pa.string())}))
        try:
            self.raw.execute("BEGIN TRANSACTION")
            try:
                if len(stale_ids):
                    hit = " OR ".join(f"{_q(c)} IN (SELECT id FROM {_q(view)})" for c in stale_columns)
                    self.raw.execute(f"DELETE FROM {_q(name)} WHERE workspace = ? AND ({hit})", [workspace])
                self.raw.execute(f"INSERT INTO {_q(name)} ({cols}) SELECT {cols} FROM ({insert_sql})")
                want = self.raw.execute(expected_sql).fetchone()[0]
                have = self.raw.execute(f"SELECT count(*) FROM {_q(name)} WHERE workspace = ?", [workspace]).fetchone()[0]
                if int(want) != int(have):
                    self.raw.execute("ROLLBACK")
                    return False
                self.raw.execute("COMMIT")
                return True
            except Exception:
                self.raw.execute("ROLLBACK")
                raise
        finally:
            self.raw.unregister(view)

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
        the table already (including rows of an earlier part of the same call)
        are not inserted; their key tuples are returned. The rows of one part
        must have distinct keys (the caller dedupes within a batch). An empty
        ``key`` inserts every row unchecked. Either all parts are committed or
        none (the exception propagates after ROLLBACK).
        """
        return self.write_atomic(parts)[0]

    def write_atomic(self, parts: Sequence[tuple[str, pa.Table, Sequence[str]]],
                     deletions: Sequence[tuple[str, str, Sequence[Any]]] = (),
                     ) -> tuple[list[set[tuple[Any, ...]]], dict[str, int]]:
        """:meth:`delete_where` ``deletions``, then :meth:`append_parts` ``parts``, in ONE transaction."""
        views: list[str] = []
        found: list[set[tuple[Any, ...]]] = []
        counts: dict[str, int] = {}
        for name, _, _ in parts:
            _known_table(name)
        for name, _, _ in deletions:
            _known_table(name)
        try:
            self.raw.execute("BEGIN TRANSACTION")
            try:
                for name, condition, params in deletions:
                    n = self.raw.execute(f"DELETE FROM {_q(name)} WHERE {condition}", list(params)).fetchone()[0]
                    counts[name] = counts.get(name, 0) + int(n)
                for name, data, key in parts:
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

    def key_hashes(self, name: str, key: Sequence[str], data: pa.Table | None = None) -> Any:
        """DuckDB's 64-bit ``hash(key columns)`` of every row of table ``name`` (or of ``data``, rows
        with the same columns), as a numpy ``uint64`` array in row order for ``data``. Equal keys give
        equal hashes within one process; the collector keeps them to skip the duplicate check for
        keys that are surely new (:class:`journeylens.server.writer.KeyIndex`)."""
        _known_table(name)
        cols = ", ".join(_q(k) for k in key)
        if data is None:
            return self.raw.execute(f"SELECT hash({cols}) AS h FROM {_q(name)}").fetchnumpy()["h"]
        view = f"_hash_{next(_counter)}"
        self.raw.register(view, data.select(list(key)))
        try:
            return self.raw.execute(f"SELECT hash({cols}) AS h FROM {_q(view)}").fetchnumpy()["h"]
        finally:
            self.raw.unregister(view)

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
