"""Opening stores. Only this package opens database backends."""

from __future__ import annotations

from pathlib import Path

from journeylens.store.base import Appender, AppendResult, Store
from journeylens.store.functions import json_get, json_get_number

__all__ = ["AppendResult", "Appender", "Store", "json_get", "json_get_number", "open_store"]


def open_store(url: str | Path, *, read_only: bool = False) -> Store:
    """Open the store at ``url``.

    * a path (``journeylens.duckdb``, ``duckdb:///abs/path.duckdb``, ``:memory:``) opens
      the embedded DuckDB file, creating it and its tables when missing;
    * ``spark://local[2]?warehouse=DIR`` opens the PySpark store over Parquet
      tables in ``DIR``.
    """
    text = str(url)
    if text.startswith("spark://"):
        from journeylens.store.spark import SparkStore

        return SparkStore(text)
    if text.startswith("duckdb://"):
        text = text.removeprefix("duckdb://") or ":memory:"
    from journeylens.config import setting
    from journeylens.store.duckdb import DuckDBStore

    return DuckDBStore(text, read_only=read_only, memory_limit=setting("memory_limit"))
