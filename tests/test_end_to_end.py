"""End to end: `journeylens demo` small, then stage counts against the planted truth.json.

The truth is the generator's own bookkeeping of the simulated journeys (which
stage each simulated touch belongs to, how far each human got), written
independently of the import, stitching, model rules and stage analysis that
the CLI runs here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import journeylens
from tests.conftest import store_url


def cli(*args: str, db: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "journeylens", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("shop")
    db = d / "demo.duckdb"
    r = cli("demo", "--people", "800", "--seed", "11", "--out", str(d / "data"), "--format", "json", db=db)
    assert r.returncode == 0, r.stderr
    return {"db": db, "data": d / "data", "out": json.loads(r.stdout),
            "truth": json.loads((d / "data" / "truth.json").read_text())}


def test_demo_imports_everything_without_quarantine(shop: dict[str, Any]) -> None:
    imports = {i["target"]: i for i in shop["out"]["imports"]}
    assert imports["events"]["accepted"] == shop["truth"]["events"]
    assert all(i["quarantined"] == 0 for i in imports.values())


def test_stage_counts_match_truth(shop: dict[str, Any]) -> None:
    r = cli("stages", "--model", "five_phase", "--format", "json", db=shop["db"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["model"] == "five_phase"
    assert got["unmatched_touches"] == 0
    truth = shop["truth"]["stages"]
    assert [s["stage"] for s in got["stages"]] == list(truth)
    for s in got["stages"]:
        assert (s["people"], s["touches"]) == (truth[s["stage"]]["people"], truth[s["stage"]]["touches"]), s["stage"]


def test_people_count_equals_simulated_humans(shop: dict[str, Any]) -> None:
    # every human is one person after stitching: anonymous devices merged, alias chains followed
    assert shop["out"]["overview"]["people"] == shop["truth"]["people"]


def test_demo_twice_adds_nothing(shop: dict[str, Any]) -> None:
    r = cli("import", "events", str(shop["data"] / "events.parquet"), "--format", "json", db=shop["db"])
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["accepted"] == 0 and rep["duplicates"] == shop["truth"]["events"]


def test_b2b_accounts_per_stage(tmp_path: Path) -> None:
    db = tmp_path / "b2b.duckdb"
    r = cli("demo", "--scenario", "b2b", "--people", "300", "--seed", "5", "--out", str(tmp_path / "d"),
            "--format", "json", db=db)
    assert r.returncode == 0, r.stderr
    truth = json.loads((tmp_path / "d" / "truth.json").read_text())
    persons = json.loads(cli("stages", "--model", "b2b", "--format", "json", db=db).stdout)
    assert persons["unmatched_touches"] == 0
    for s in persons["stages"]:
        assert s["people"] == truth["stages"][s["stage"]]["people"], s["stage"]
    accounts = json.loads(cli("stages", "--model", "b2b", "--unit", "account", "--format", "json", db=db).stdout)
    for s in accounts["stages"]:
        assert s["people"] == truth["stages"][s["stage"]]["accounts"], s["stage"]


@pytest.mark.spark
def test_spark_store_gives_the_same_stage_counts(shop: dict[str, Any], tmp_path: Path,
                                                 spark_session: Any) -> None:
    duck = journeylens.open(shop["db"]).stage_funnel("five_phase").to_dict()
    ws = journeylens.open(store_url("spark", tmp_path))
    for target in ("events", "people"):
        ws.import_file(target, shop["data"] / f"{target}.{'parquet' if target == 'events' else 'csv'}")
    spark = ws.stage_funnel("five_phase").to_dict()
    assert spark == duck
