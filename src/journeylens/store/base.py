"""The store interface: the one path to the database.

A :class:`Store` owns an Ibis backend connection and the canonical tables of
:mod:`journeylens.schema`. Everything above the store reads through
:meth:`Store.table` (an Ibis table expression) and writes through
:meth:`Store.appender` (deduplicating, atomic appends) or
:meth:`Store.replace_workspace_rows` (derived tables).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from journeylens import schema
from journeylens.errors import SchemaVersionError, UnknownNameError


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows that are new, and rows already present (by key)."""

    inserted: int
    duplicates: int


class Appender(abc.ABC):
    """Stages chunks for one table, then commits them atomically.

    Rows whose key already exists in the table (or earlier in the same append)
    are counted as duplicates and not inserted; nothing is visible before
    :meth:`commit`.
    """

    @abc.abstractmethod
    def write(self, chunk: pa.Table) -> None: ...

    @abc.abstractmethod
    def commit(self) -> AppendResult: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class Store(abc.ABC):
    """A backend holding the canonical tables."""

    backend: str
    url: str
    con: Any  # the Ibis backend

    def table(self, name: str) -> ir.Table:
        if name not in schema.TABLES:
            raise UnknownNameError("table", name, schema.TABLES)
        return self.con.table(name)

    @abc.abstractmethod
    def appender(self, name: str, key: Sequence[str] | None = None) -> Appender:
        """An appender for table ``name`` deduplicating on ``key`` (default: the table's key)."""

    def append(self, name: str, data: pa.Table, key: Sequence[str] | None = None) -> AppendResult:
        with self.appender(name, key) as app:
            app.write(data)
            return app.commit()

    @abc.abstractmethod
    def replace_workspace_rows(self, name: str, workspace: str, data: pa.Table) -> None:
        """Replace all rows of ``workspace`` in table ``name`` by ``data`` (atomically)."""

    def workspace_rows(self, name: str, workspace: str) -> int:
        """Number of rows of ``workspace`` in table ``name``."""
        t = self.table(name)
        return int(self.scalar(t.filter(t.workspace == workspace).count()))

    def to_pyarrow(self, expr: ir.Expr) -> pa.Table:
        return self.con.to_pyarrow(expr)

    def materialize(self, expr: ir.Table) -> ir.Table:
        """``expr`` computed once into a temporary table for the session (dropped on close).

        Several analyses over the same derived table (e.g. a journey map's touches with
        stages) then read rows instead of each recompiling and recomputing the joins and
        stage rules. DuckDB: a TEMP table; Spark: a cached DataFrame.
        """
        return expr.cache()

    def execute(self, expr: ir.Expr) -> Any:
        return self.con.execute(expr)

    def scalar(self, expr: ir.Scalar) -> Any:
        value = self.con.execute(expr)
        return value.item() if hasattr(value, "item") else value

    @abc.abstractmethod
    def meta(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # helpers shared by backends -------------------------------------------------
    @staticmethod
    def _check_version(found: str | None, url: str) -> None:
        if found is None:
            return
        if int(found) > schema.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{url} was written by a newer journeylens (schema version {found}, "
                f"this version reads up to {schema.SCHEMA_VERSION})",
                hint="upgrade journeylens",
            )

    @staticmethod
    def _conform(name: str, data: pa.Table) -> pa.Table:
        """Cast ``data`` to the canonical Arrow schema of table ``name`` (same column order)."""
        target = schema.TABLES[name].arrow_schema()
        if data.schema.equals(target):
            return data
        cols = []
        for f in target:
            if f.name in data.column_names:
                cols.append(data.column(f.name).cast(f.type))
            else:
                cols.append(pa.nulls(data.num_rows, f.type))
        return pa.Table.from_arrays(cols, schema=target)


def empty_table(name: str) -> pa.Table:
    return schema.TABLES[name].arrow_schema().empty_table()


def literal_workspace(t: ir.Table, workspace: str) -> ir.BooleanValue:
    return t.workspace == ibis.literal(workspace)
