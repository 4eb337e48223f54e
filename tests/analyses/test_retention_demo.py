"""Retention family on the seeded shop demo (DuckDB), checked against the planted truth and against
identities that hold whatever the data: every person is in exactly one cohort, is new exactly once,
and is either active or churned."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from journeylens.analyses.retention import (
    ChurnQuery,
    LifecycleQuery,
    RepurchaseQuery,
    RetentionQuery,
    churn,
    lifecycle,
    repurchase,
    retention,
)
from journeylens.cli.render import to_json
from journeylens.demo import generate
from journeylens.store import open_store
from journeylens.workspace import Workspace

PEOPLE = 300


class Demo:
    def __init__(self, ws: Workspace, truth: pd.DataFrame) -> None:
        self.ws = ws
        self.truth = truth
        self.touches = ws.touches()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = Path(tmp_path_factory.mktemp("retention-demo"))
    res = generate(scenario="shop", people=PEOPLE, seed=3, out_dir=out / "files")
    ws = Workspace(open_store(str(out / "demo.duckdb")))
    ws.import_file("events", res.files["events"])
    ws.import_file("people", res.files["people"])
    return Demo(ws, pq.read_table(res.files["truth_persons"]).to_pandas())


def test_repurchase_rate_equals_the_planted_truth(demo: Demo) -> None:
    n = demo.truth.n_purchases
    buyers, again = int((n >= 1).sum()), int((n >= 2).sum())
    r = repurchase(demo.touches, RepurchaseQuery())
    assert (r.purchasers, r.repurchasers) == (buyers, again)
    assert r.rate == pytest.approx(again / buyers)
    assert r.total.purchases == int(n.sum())
    # by first-purchase month the rows add up to the total
    monthly = repurchase(demo.touches, RepurchaseQuery(period="month"))
    assert sum(row.purchasers for row in monthly.rows) == buyers
    assert sum(row.repurchasers for row in monthly.rows) == again


@pytest.mark.parametrize(("period", "cohort_period"), [("week", None), ("month", None), ("day", "week")])
def test_cohort_sizes_add_up_to_the_persons(demo: Demo, period: str, cohort_period: str | None) -> None:
    r = retention(demo.touches, RetentionQuery(period=period, cohort_period=cohort_period, periods=6,
                                               breakdown="channel", breakdown_limit=3))
    assert r.size == sum(c.size for c in r.cohorts) == PEOPLE == len(demo.truth)
    assert sum(b.size for b in r.breakdown) == PEOPLE
    assert len(r.breakdown) == 4 and r.breakdown[-1].value == "(other)"
    for c in r.cohorts:
        # with start = return = any touch everyone returns in period 0
        assert (c.cells[0].retained, c.cells[0].eligible) == (c.size, c.size)
        assert all(x.retained <= x.eligible <= c.size for x in c.cells)
    # breakdown matrices add up to the overall matrix
    for c in r.cohorts:
        parts = [bc for b in r.breakdown for bc in b.cohorts if bc.cohort == c.cohort]
        assert sum(p.size for p in parts) == c.size
        for k, cell in enumerate(c.cells):
            assert sum(p.cells[k].retained for p in parts) == cell.retained


def test_unbounded_is_at_least_bounded_and_never_grows(demo: Demo) -> None:
    q = {"period": "week", "periods": 8, "start_event": "purchase", "return_event": "purchase"}
    bounded = retention(demo.touches, RetentionQuery(**q))
    unbounded = retention(demo.touches, RetentionQuery(mode="unbounded", **q))
    assert [c.size for c in bounded.cohorts] == [c.size for c in unbounded.cohorts]
    assert bounded.size == int((demo.truth.n_purchases >= 1).sum())
    for b, u in zip(bounded.cohorts, unbounded.cohorts, strict=True):
        assert all(x.retained <= y.retained for x, y in zip(b.cells, u.cells, strict=True))
        retained = [y.retained for y in u.cells]
        assert retained == sorted(retained, reverse=True)


def test_lifecycle_and_churn_account_for_every_person(demo: Demo) -> None:
    life = lifecycle(demo.touches, LifecycleQuery(period="month"))
    assert sum(row.new for row in life.rows) == PEOPLE
    for before, now in zip(life.rows, life.rows[1:], strict=False):
        assert now.active - before.active == now.new + now.resurrecting + now.dormant
        assert now.returning - now.dormant == before.active  # active before: returning now or dormant
    gone = churn(demo.touches, ChurnQuery(inactive_for="30d", period="month"))
    assert gone.active + gone.churned == PEOPLE
    for row in gone.rows:
        assert 0 <= row.churned <= row.active_at_start


def test_results_render(demo: Demo) -> None:
    results = [
        retention(demo.touches, RetentionQuery(periods=4, breakdown="channel", breakdown_limit=2)),
        lifecycle(demo.touches, LifecycleQuery(period="month")),
        churn(demo.touches, ChurnQuery(period="month", breakdown="channel", breakdown_limit=2)),
        repurchase(demo.touches, RepurchaseQuery(period="month", window="60d")),
    ]
    for r in results:
        data = json.loads(to_json(r.to_dict()))
        assert data["unit"] == "person"
        assert not r.to_pandas().empty
        fig = r.figure()
        assert fig.data and fig.layout.title.text
    matrix = results[0].matrix()
    assert list(matrix.columns) == ["cohort", "size", 0, 1, 2, 3]
    assert set(results[0].to_pandas().columns) >= {"breakdown", "cohort", "period", "rate"}
