"""The retention CLI commands, registered on a fresh Typer app (the lead wires them into
``journeylens.cli.app``); the store is a DuckDB file named through ``JOURNEYLENS_DB``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from journeylens.cli.retention import register
from journeylens.errors import UnknownNameError
from journeylens.store import open_store
from tests.analyses.test_retention import WK, _rows
from tests.helpers import events_table


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("retention-cli")) / "cli.duckdb"
    rows = [r for r in _rows() if r["user_id"].startswith("wk:")]  # the weekly case only
    with open_store(str(path)) as store:
        store.append("events", events_table(rows))
    return str(path)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()

    @cli.callback()
    def main() -> None:  # a group, so that commands are addressed by name
        pass

    register(cli)
    return cli


def invoke(app: typer.Typer, db: str, *args: str) -> Result:
    from journeylens.cli import app as main_app

    main_app._state.clear()  # a --db of an earlier test's main-app run would win over JOURNEYLENS_DB
    result = CliRunner().invoke(app, list(args), env={"JOURNEYLENS_DB": db, "COLUMNS": "200"})
    return result


def test_register_adds_the_commands(app: typer.Typer) -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    assert names == {"retention", "lifecycle", "churn", "repurchase"}


def test_retention_json_table_and_csv(app: typer.Typer, db: str) -> None:
    r = invoke(app, db, "retention", "--periods", "4", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    # the weekly case of test_retention.py: cohorts of 2, 2 and 1 persons
    assert [c["size"] for c in data["cohorts"]] == [2, 2, 1]
    assert [p["retained"] for p in data["curve"]] == [5, 3, 2, 1]
    assert data["cohorts"][2]["cells"][3]["rate"] is None
    table = invoke(app, db, "retention", "--periods", "4", "--breakdown", "channel")
    assert table.exit_code == 0, table.output
    assert "week 3" in table.stdout and "50.0%" in table.stdout and "all (weighted)" in table.stdout
    assert "Average retention by channel" in table.stdout
    rows = list(csv.DictReader(io.StringIO(invoke(app, db, "retention", "--periods", "4", "-f", "csv").stdout)))
    assert len(rows) == 3 * 4 and rows[0].keys() >= {"cohort", "size", "period", "retained", "eligible", "rate"}


def test_lifecycle_churn_repurchase(app: typer.Typer, db: str) -> None:
    life = invoke(app, db, "lifecycle", "--format", "csv")
    assert life.exit_code == 0, life.output
    rows = list(csv.DictReader(io.StringIO(life.stdout)))
    assert [int(r["dormant"]) for r in rows] == [0, -1, -2, -2, -1]
    gone = invoke(app, db, "churn", "--inactive-for", "7d", "--period", "week", "--format", "json")
    assert gone.exit_code == 0, gone.output
    assert [r["churned"] for r in json.loads(gone.stdout)["rows"]] == [0, 1, 2, 2, 2]
    table = invoke(app, db, "churn", "--inactive-for", "7d", "--period", "week")
    assert "1 active, 4 churned" in table.stdout
    rep = invoke(app, db, "repurchase", "--event", "visit", "--window", "7d", "--format", "json")
    assert rep.exit_code == 0, rep.output
    # a second visit within 7 days of the first: a (1 s), b (2 d), c (6 d 16 h), e (exactly 7 d: the window
    # is inclusive); not d (one visit)
    assert (json.loads(rep.stdout)["purchasers"], json.loads(rep.stdout)["repurchasers"]) == (len(WK), 4)
    assert "Repurchase rate" in invoke(app, db, "repurchase", "--event", "visit", "--period", "week").stdout


def test_bad_parameters_raise_before_the_store_opens(app: typer.Typer, tmp_path: Path) -> None:
    missing = tmp_path / "never.duckdb"
    r = invoke(app, str(missing), "retention", "--period", "weak")
    assert isinstance(r.exception, UnknownNameError) and r.exception.hint == "did you mean 'week'?"
    assert not missing.exists()
