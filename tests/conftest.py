"""Shared fixtures: one SparkSession per run, stores parametrised over backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from journeylens.store import Store, open_store

BACKENDS = ["duckdb", pytest.param("spark", marks=pytest.mark.spark)]


@pytest.fixture(scope="session")
def spark_session():  # type: ignore[no-untyped-def]
    from journeylens.store.spark import spark_session

    session = spark_session("local[2]", 2)
    # Test data is tiny: adaptive planning and whole-stage codegen cost more than they save.
    session.conf.set("spark.sql.adaptive.enabled", "false")
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    return session


def store_url(backend: str, folder: Path) -> str:
    if backend == "duckdb":
        return str(folder / "test.duckdb")
    return f"spark://local[2]?warehouse={folder / 'warehouse'}&shuffle_partitions=2"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "spark":
        request.getfixturevalue("spark_session")
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> Callable[[], Store]:
    """Open (or reopen) a fresh store of the parametrised backend in tmp_path."""
    opened: list[Store] = []

    def factory() -> Store:
        s = open_store(store_url(backend, tmp_path))
        opened.append(s)
        return s

    yield factory  # type: ignore[misc]
    for s in opened:
        s.close()
