"""The ``paths`` and ``transitions`` commands, run in-process on a small DuckDB store.

The commands are registered on a fresh Typer app here (the lead wires them into the main
app); the workspace is opened the way the main app does, through ``cli.app._open``.
Journeys (minutes after T0): p1 visit, product_view, product_view, add_to_cart, purchase;
p2 visit, product_view, add_to_cart; p3 visit, product_view; p4 visit.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from journeylens.cli import app as main_app
from journeylens.cli.paths import register
from journeylens.errors import InputFileError, InvalidParameterError, UnknownNameError
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.helpers import events_table

V, PV, ATC, PUR = "visit", "product_view", "add_to_cart", "purchase"
ROWS = [
    {"user_id": "p1", "event": V, "minute": 0}, {"user_id": "p1", "event": PV, "minute": 1},
    {"user_id": "p1", "event": PV, "minute": 2}, {"user_id": "p1", "event": ATC, "minute": 4},
    {"user_id": "p1", "event": PUR, "minute": 6},
    {"user_id": "p2", "event": V, "minute": 0}, {"user_id": "p2", "event": PV, "minute": 3},
    {"user_id": "p2", "event": ATC, "minute": 5},
    {"user_id": "p3", "event": V, "minute": 0}, {"user_id": "p3", "event": PV, "minute": 1},
    {"user_id": "p4", "event": V, "minute": 0},
]
Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    db = tmp_path / "t.duckdb"
    store = open_store(db)
    store.append("events", events_table(ROWS))
    Workspace(store).rebuild_identities()
    store.close()
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test app."""

    register(app)
    monkeypatch.setitem(main_app._state, "db", str(db))
    monkeypatch.setitem(main_app._state, "workspace", None)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def ok(r: Result) -> str:
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout


def test_paths_json_and_table(run: Run) -> None:
    d = json.loads(ok(run("paths", "--format", "json", "--depth", "3")))
    # depth 3: p1 V PV PV, p2 V PV ATC, p3 V PV, p4 V
    assert [(p["nodes"], p["persons"]) for p in d["paths"]] == [
        ([V], 1), ([V, PV], 1), ([V, PV, ATC], 1), ([V, PV, PV], 1)]
    assert d["persons"] == 4 and d["query"]["depth"] == 3 and d["sankey"]["links_total"] == 3
    text = ok(run("paths", "--collapse"))
    assert "Top paths by event" in text and "visit → product_view → add_to_cart" in text


def test_paths_options_map_to_the_query(run: Run) -> None:
    out = ok(run("paths", "--from", PV, "--collapse", "--start-end-nodes", "--clean", "*_to_*=cart",
                 "--exclude", PUR, "--format", "csv"))
    rows = list(csv.DictReader(io.StringIO(out)))
    # from the first product view, collapsed, add_to_cart renamed, purchase dropped:
    # p1 and p2 PV cart, p3 PV
    assert [(r["path"], r["persons"]) for r in rows] == [
        ("path_start → product_view → cart → path_end", "2"),
        ("path_start → product_view → path_end", "1")]
    d = json.loads(ok(run("paths", "--to", ATC, "--depth", "2", "--format", "json")))
    assert [(p["nodes"], p["persons"]) for p in d["paths"]] == [([PV, ATC], 2)]
    assert d["sankey"]["aligned"] == "end"


def test_paths_restricted_to_persons(run: Run, tmp_path: Path) -> None:
    d = json.loads(ok(run("paths", "--person", "p3", "--person", "p4", "--format", "json")))
    assert [p["nodes"] for p in d["paths"]] == [[V], [V, PV]]
    ids = tmp_path / "ids.txt"
    ids.write_text("p2\n\np4\n")
    d = json.loads(ok(run("paths", "--persons-file", str(ids), "--format", "json")))
    assert [p["nodes"] for p in d["paths"]] == [[V], [V, PV, ATC]]


def test_paths_around_funnel_steps(run: Run) -> None:
    steps = ["--funnel", V, "--funnel", PV, "--funnel", ATC, "--funnel", PUR]
    # dropped off at add_to_cart: p3, from its first product view
    d = json.loads(ok(run("paths", *steps, "--dropped-at", "3", "--format", "json")))
    assert [(p["nodes"], p["persons"]) for p in d["paths"]] == [([PV], 1)]
    # between product_view and add_to_cart, of p1 and p2: anchored on the counted attempt's
    # step-2 touch, the latest product view before the add_to_cart, so both go PV ATC
    d = json.loads(ok(run("paths", *steps, "--between", "3", "--window", "1h", "--format", "json")))
    assert [(p["nodes"], p["persons"]) for p in d["paths"]] == [([PV, ATC], 2)]


def test_transitions_table_json_csv_and_html(run: Run, tmp_path: Path) -> None:
    d = json.loads(ok(run("transitions", "--format", "json")))
    got = {(t["source"], t["target"]): t["transitions"] for t in d["transitions"]}
    assert got == {(V, PV): 3, (PV, PV): 1, (PV, ATC): 2, (ATC, PUR): 1}
    html = tmp_path / "m.html"
    text = ok(run("transitions", "--converted", PUR, "--html", str(html)))
    assert "Converters vs non-converters" in text and "Transitions of converters" in text
    page = html.read_text()
    assert "Plotly.newPlot" in page and 'src="https://cdn.plot.ly' not in page  # self-contained
    rows = list(csv.DictReader(io.StringIO(ok(run("transitions", "--converted", PUR, "--format", "csv")))))
    assert {r["group"] for r in rows} == {"all", "converters", "non_converters"}
    sankey = tmp_path / "s.html"
    ok(run("paths", "--html", str(sankey), "--format", "json"))
    assert '"type":"sankey"' in sankey.read_text()


def test_errors_are_journeylens_errors(run: Run, tmp_path: Path) -> None:
    r = run("paths", "--level", "evnt")
    assert isinstance(r.exception, UnknownNameError) and "did you mean 'event'" in str(r.exception)
    assert isinstance(run("paths", "--dropped-at", "2").exception, InvalidParameterError)
    assert isinstance(run("paths", "--funnel", V, "--funnel", PV).exception, InvalidParameterError)
    assert isinstance(run("paths", "--funnel", V, "--funnel", PV, "--after", "1", "--from", V).exception,
                      InvalidParameterError)
    assert isinstance(run("paths", "--persons-file", str(tmp_path / "missing.txt")).exception, InputFileError)
    assert isinstance(run("transitions", "--clean", "nonsense").exception, InvalidParameterError)
    assert isinstance(run("transitions", "--converted", "colour=red").exception, UnknownNameError)
