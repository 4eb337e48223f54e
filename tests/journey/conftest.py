"""Fixtures for the journey tests: an Ibis connection per backend, and models from YAML text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pytest

from journeylens.journey import JourneyModel, load_model
from journeylens.store.functions import register_duckdb_functions


@pytest.fixture
def con(backend: str, request: pytest.FixtureRequest) -> Any:
    """An Ibis connection that runs assign_stages: in-memory DuckDB with journeylens' macros,
    or PySpark on the shared session (``get_json_object`` is a Spark builtin)."""
    if backend == "duckdb":
        duck = ibis.duckdb.connect()
        register_duckdb_functions(duck)
        return duck
    return ibis.pyspark.connect(request.getfixturevalue("spark_session"))


@pytest.fixture
def upload(
    con: Any, backend: str, request: pytest.FixtureRequest
) -> Callable[[pa.Table], ir.Table]:
    """Make an Arrow table an Ibis table of the backend, NULLs intact.

    (Spark memtables travel through pandas, where a NULL number or text
    becomes NaN - and NaN compares greater than any number in Spark.)
    """
    if backend == "duckdb":
        return ibis.memtable
    session = request.getfixturevalue("spark_session")
    counter = iter(range(10_000))

    def to_spark(data: pa.Table) -> ir.Table:
        name = f"journey_test_{next(counter)}"
        session.createDataFrame(data).createOrReplaceTempView(name)
        return con.table(name)

    return to_spark


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[[str], JourneyModel]:
    """Write YAML text to a fresh file in tmp_path and load it as a model."""
    counter = iter(range(10_000))

    def write(text: str) -> JourneyModel:
        path = tmp_path / f"model_{next(counter)}.yaml"
        path.write_text(text, encoding="utf-8")
        return load_model(path)

    return write
