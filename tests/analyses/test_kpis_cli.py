"""``journeylens kpis`` through the real app (``journeylens.cli.app.app``) on a copy of the shop demo."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import journeylens
from journeylens.analyses.kpis import REGISTRY
from journeylens.cli.app import app
from journeylens.errors import JourneylensError

runner = CliRunner()


@pytest.fixture(scope="module")
def db(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = demo_shop.copy_db(Path(tmp_path_factory.mktemp("kpis-cli")))
    tp = demo_shop.truth_persons()
    with journeylens.open(path) as ws:
        ws.save_cohort("loyal", tp[tp.persona == "loyal_regular"].person_id)
    return str(path)


def invoke(db: str, *args: str) -> Result:
    return runner.invoke(app, ["--db", db, "kpis", *args])


def test_json_contract(db: str, demo_shop: Any) -> None:
    res = invoke(db, "--model", "five_phase", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["model"] == "five_phase"
    stages = d["stages"]
    assert [s["stage"] for s in stages] == ["awareness", "consideration", "decision", "retention", "advocacy"]
    aw = stages[0]["kpis"]
    assert aw["reach"] == demo_shop.truth["people"]
    assert aw["impressions"] == sum(c["impressions"] for c in
                                    demo_shop.truth["costs"]["realized"]["per_channel"].values())
    assert isinstance(aw["cpm"], float)
    ret = stages[3]
    assert ret["kpis"]["upsell_rate"] is None and ret["missing"]["upsell_rate"] == "no upsell touches"
    assert sorted(k for s in stages for k in s["kpis"]) == sorted(REGISTRY)


def test_table_and_csv_by_channel(db: str) -> None:
    res = invoke(db, "--by", "channel")
    assert res.exit_code == 0, res.output
    assert "Awareness by channel" in res.stdout and "paid_search" in res.stdout
    res = invoke(db, "--by", "channel", "--period", "month", "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    spend = [r for r in rows if r["kpi"] == "spend" and r["by"] == "paid_search"]
    assert len(spend) == 6 and all(r["period"] for r in spend)
    organic = [r for r in rows if r["kpi"] == "cpc" and r["by"] == "organic_search"]
    assert organic and all(r["value"] == "" and r["missing"] == "no costs for this group" for r in organic)


def test_cohort_breakdown(db: str, demo_shop: Any) -> None:
    res = invoke(db, "--by", "cohort:loyal", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    groups = {g["value"]: g for g in d["stages"][2]["groups"]}
    real = demo_shop.truth["personas"]["loyal_regular"]["realized"]
    assert groups["loyal"]["kpis"]["conversions"] == real["converted"]
    assert groups["loyal"]["kpis"]["revenue"] == pytest.approx(real["revenue"], abs=0.01)


def test_list_prints_the_registry(db: str) -> None:
    res = invoke(db, "--list", "--model", "three_phase", "--format", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    stage = {r["key"]: r["stage"] for r in d["kpis"]}
    assert set(stage) == set(REGISTRY)
    assert stage["cpm"] == stage["ctr"] == "pre_purchase" and stage["nps"] == "post_purchase"
    res = invoke(db, "--list")
    assert res.exit_code == 0 and "cost_per_conv" in res.stdout and "Engagement" in res.stdout


@pytest.mark.parametrize("args, needle", [
    (("--period", "year"), "unknown period 'year'"),
    (("--by", "colour"), "unknown breakdown 'colour'"),
    (("--churn-after", "soon"), "churn_after 'soon' is not a duration"),
    (("--by", "cohort:nobody"), "unknown cohort 'nobody'"),
])
def test_bad_parameters_raise_journeylens_errors(db: str, args: tuple[str, ...], needle: str) -> None:
    res = invoke(db, *args)
    assert res.exit_code != 0
    assert isinstance(res.exception, JourneylensError) and needle in str(res.exception)


def test_bad_parameter_is_one_line_from_the_console(db: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "journeylens", "--db", db, "kpis", "--period", "year"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[0] == (
        "error [unknown_name]: unknown period 'year'; choose one of: day, month, week")
    assert "Traceback" not in proc.stderr
