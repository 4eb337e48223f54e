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


# ------------------------------------------------------------------ demo workspaces
class DemoData:
    """A demo data set generated once per test session and imported into a DuckDB file.

    ``db`` the DuckDB file, ``data`` the generator's output folder, ``truth`` truth.json;
    ``open()`` a Workspace on it (close it, or use ``with``). Treat it as read-only: tests
    that write must copy ``db`` first (``copy_db(tmp_path)``).
    """

    def __init__(self, scenario: str, people: int, seed: int, folder: Path) -> None:
        import json

        import journeylens
        from journeylens.demo import generate

        self.scenario, self.people, self.seed = scenario, people, seed
        self.data = folder / "data"
        self.db = folder / "demo.duckdb"
        res = generate(scenario=scenario, people=people, seed=seed, out_dir=self.data)
        with journeylens.open(self.db) as ws:
            for target in ("events", "people", "accounts", "costs", "surveys"):
                if target in res.files:
                    ws.import_file(target, res.files[target])
        self.files = dict(res.files)
        self.truth: dict = json.loads((self.data / "truth.json").read_text())

    def open(self):  # type: ignore[no-untyped-def]
        import journeylens

        return journeylens.open(self.db)

    def truth_persons(self):  # type: ignore[no-untyped-def]
        import pandas as pd

        return pd.read_parquet(self.files["truth_persons"])

    def copy_db(self, folder: Path) -> Path:
        import shutil

        target = folder / "demo-copy.duckdb"
        shutil.copy(self.db, target)
        return target


@pytest.fixture(scope="session")
def demo_shop(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """Shop demo, 3,000 people, seed 7 (about 55k events), imported into DuckDB."""
    return DemoData("shop", 3000, 7, tmp_path_factory.mktemp("demo_shop"))


@pytest.fixture(scope="session")
def demo_b2b(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """B2B demo, 3,000 people, seed 7, imported into DuckDB."""
    return DemoData("b2b", 3000, 7, tmp_path_factory.mktemp("demo_b2b"))
