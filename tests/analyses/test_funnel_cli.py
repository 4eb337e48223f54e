"""``journeylens funnel``: the JSON contract, CSV, the table and errors (DuckDB file store).

The command is mounted on a bare Typer app here with :func:`journeylens.cli.funnel.register`,
as the main app does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from journeylens.cli import app as main_app
from journeylens.cli.funnel import register
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import open_store
from tests.helpers import events_table

STEPS = ["visit", "product_view", "add_to_cart", "purchase"]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    db = tmp_path / "cli.duckdb"
    rows = []
    # p1 all four steps (1m apart), p2 up to product_view, p3 only a visit; channels for breakdowns
    for person, n, channel in (("p1", 4, "email"), ("p2", 2, "seo"), ("p3", 1, "seo")):
        rows += [{"user_id": person, "event": STEPS[i], "minute": i, "channel": channel} for i in range(n)]
    store = open_store(db)
    store.append("events", events_table([dict(r, message_id=f"m{i}") for i, r in enumerate(rows)]))
    store.close()
    monkeypatch.setitem(main_app._state, "db", str(db))
    monkeypatch.setitem(main_app._state, "workspace", None)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def test_json_contract(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["funnel", *STEPS, "--window", "7d", "--format", "json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert [(s["step"], s["persons"]) for s in got["steps"]] == list(zip(STEPS, [3, 2, 1, 1], strict=True))
    first, second = got["steps"][0], got["steps"][1]
    assert (first["conversion_from_start"], first["conversion_from_previous"]) == (1.0, 1.0)
    assert first["median_seconds_to_convert"] is None
    assert (second["conversion_from_start"], second["median_seconds_to_convert"]) == (2 / 3, 60.0)
    assert got["window_seconds"] == 604_800


def test_options_reach_the_query(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["funnel", "visit", "purchase", "--order", "strict", "--window", "1h",
                                 "--breakdown", "channel", "--breakdown-from", "step:1", "--trend", "day",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["order"] == "strict"
    # strict: visit must be followed directly by purchase; nobody does that
    assert [s["persons"] for s in got["steps"]] == [3, 0]
    assert {v["value"]: v["steps"][0]["persons"] for v in got["breakdown"]["values"]} == {"seo": 2, "email": 1}
    assert [row["entered"] for row in got["trend"]["rows"]] == [3, 2, 1]


def test_exclusions_and_csv(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["funnel", "visit", "add_to_cart", "purchase", "--exclude", "product_view:1:2",
                                 "--format", "csv"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("step,index,persons,totals,conversion_from_start")
    # p1's product_view lies between its visit and add_to_cart: it stops at step 1
    assert [line.split(",")[2] for line in lines[1:]] == ["3", "0", "0"]


def test_table_output(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["funnel", *STEPS, "--breakdown", "channel"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "Funnel (ordered, window 14d)" in r.stdout and "█" in r.stdout
    assert "channel = email" in r.stdout and "channel = seo" in r.stdout


def test_errors_are_journeylens_errors(cli: typer.Typer) -> None:
    r = CliRunner().invoke(cli, ["funnel", "visit", "purchase", "--order", "strikt"])
    assert isinstance(r.exception, UnknownNameError)
    assert "did you mean 'strict'" in str(r.exception)


def test_people_listed_and_saved_as_a_cohort(cli: typer.Typer) -> None:
    """``--people dropped:K`` lists who reached step K-1 but not K; ``--save-cohort`` keeps them as a
    cohort that later funnels break down by (p2 viewed a product, never added to cart)."""
    r = CliRunner().invoke(cli, ["funnel", *STEPS, "--people", "dropped:add_to_cart", "--format", "json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["step"], got["status"], got["people"], got["cohort"]) == (3, "dropped", ["p2"], None)
    r = CliRunner().invoke(cli, ["funnel", *STEPS, "--people", "converted:2", "--format", "csv"])
    assert r.stdout.splitlines() == ["person_id", "p1", "p2"]
    r = CliRunner().invoke(cli, ["funnel", *STEPS, "--people", "dropped:3", "--save-cohort", "browsers"])
    assert r.exit_code == 0 and "saved as cohort 'browsers'" in r.stdout, r.output
    r = CliRunner().invoke(cli, ["funnel", "visit", "product_view", "--breakdown", "cohort:browsers", "--format",
                                 "json"])
    by_value = {b["value"]: [s["persons"] for s in b["steps"]] for b in json.loads(r.stdout)["breakdown"]["values"]}
    assert by_value == {"member": [1, 1], "non_member": [2, 1]}
    for bad in (["--people", "lost:2"], ["--save-cohort", "x"]):  # the main app prints these (test_cli)
        r = CliRunner().invoke(cli, ["funnel", *STEPS, *bad])
        assert isinstance(r.exception, InvalidParameterError), r.output
