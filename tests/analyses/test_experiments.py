"""A/B readout against a planted effect: estimates, intervals, p-values and SRM against closed
forms and scipy; CI coverage by simulation; CUPED against a numpy regression adjustment."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from typer.testing import CliRunner

from journeylens import schema
from journeylens.analyses.experiments import (
    ExperimentQuery,
    experiment,
    readout_from_counts,
    srm_check,
    two_proportion_test,
    units_needed,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.helpers import T0, events_table

Z = 1.959963984540054


def planted(n: int, seed: int, p: dict[str, float], *, share_b: float = 0.5, pre_rate: float = 0.3,
            pre_boost: float = 0.15) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Persons with variant A/B (property on their visit), conversion probability ``p[v]``
    (+ ``pre_boost`` for persons who purchased before exposure) — rows and what was drawn."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    drawn: dict[str, Any] = {"A": [0, 0], "B": [0, 0], "x": [], "y": [], "v": []}
    for i in range(n):
        v = "B" if rng.random() < share_b else "A"
        pre = rng.random() < pre_rate
        uid = f"u{i}"
        if pre:
            rows.append({"user_id": uid, "event": "purchase", "minute": 0})
        rows.append({"user_id": uid, "event": "visit", "minute": 10, "properties": {"variant": v}})
        conv = rng.random() < p[v] + (pre_boost if pre else 0)
        if conv:
            rows.append({"user_id": uid, "event": "purchase", "minute": 20 + rng.randrange(0, 3000)})
        drawn[v][0] += 1
        drawn[v][1] += conv
        drawn["x"].append(float(pre))
        drawn["y"].append(float(conv))
        drawn["v"].append(v)
    for k, r in enumerate(rows):
        r["message_id"] = f"m{k}"
    return rows, drawn


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """6,000 persons, 10 % vs 13 % conversion, in a DuckDB file."""
    rows, drawn = planted(6000, 11, {"A": 0.10, "B": 0.13})
    db = str(Path(tmp_path_factory.mktemp("exp")) / "exp.duckdb")
    with open_store(db) as store:
        store.append("events", events_table(rows))
    return db, drawn


def test_planted_effect_matches_closed_forms_and_scipy(big: tuple[str, dict[str, Any]]) -> None:
    db, drawn = big
    with open_store(db) as store:
        res = experiment(Workspace(store).touches(), ExperimentQuery(variant="properties.variant", goal="purchase"))
    assert res.status == "ok" and res.control == "A" and res.mixed_units == 0
    a, b = res.variants
    assert (a.variant, a.units, a.conversions) == ("A", *drawn["A"])
    assert (b.variant, b.units, b.conversions) == ("B", *drawn["B"])
    (na, xa), (nb, xb) = drawn["A"], drawn["B"]
    pa_, pb = xa / na, xb / nb
    t = b.test
    assert t is not None
    # difference and Wald interval
    se = math.sqrt(pa_ * (1 - pa_) / na + pb * (1 - pb) / nb)
    assert t.difference == pytest.approx(pb - pa_)
    assert (t.lower, t.upper) == pytest.approx((pb - pa_ - Z * se, pb - pa_ + Z * se))
    # p-value = Pearson chi-square on the 2x2 table without continuity correction
    chi2, p, _, _ = stats.chi2_contingency([[xa, na - xa], [xb, nb - xb]], correction=False)
    assert t.p_value == pytest.approx(p, rel=1e-9) and t.z == pytest.approx(math.sqrt(chi2))
    # relative lift with the Katz log interval
    rr = pb / pa_
    s = math.sqrt(1 / xb - 1 / nb + 1 / xa - 1 / na)
    assert t.lift == pytest.approx(rr - 1)
    assert (t.lift_lower, t.lift_upper) == pytest.approx((rr * math.exp(-Z * s) - 1, rr * math.exp(Z * s) - 1))
    # the planted truth: +3 points absolute (+30 % relative), within the intervals
    assert t.lower < 0.03 < t.upper and t.lift_lower is not None and t.lift_lower < 0.3 < (t.lift_upper or 0)
    assert t.p_value < 0.05
    # SRM: scipy's goodness of fit
    assert res.srm is not None
    assert res.srm.p_value == pytest.approx(stats.chisquare([na, nb]).pvalue) and not res.srm.mismatch
    assert "significant against A" in res.verdict()


def test_cuped_matches_a_regression_adjustment(big: tuple[str, dict[str, Any]]) -> None:
    db, drawn = big
    with open_store(db) as store:
        res = experiment(Workspace(store).touches(),
                         ExperimentQuery(variant="properties.variant", goal="purchase", cuped_covariate="pre"))
    x, y, v = np.array(drawn["x"]), np.array(drawn["y"]), np.array(drawn["v"])
    theta = np.cov(x, y)[0, 1] / np.var(x, ddof=1)
    adj = y - theta * (x - x.mean())
    diff = adj[v == "B"].mean() - adj[v == "A"].mean()
    se = math.sqrt(adj[v == "B"].var(ddof=1) / (v == "B").sum() + adj[v == "A"].var(ddof=1) / (v == "A").sum())
    c = res.variants[1].cuped
    assert c is not None
    assert c.theta == pytest.approx(theta) and c.difference == pytest.approx(diff)
    assert (c.lower, c.upper) == pytest.approx((diff - Z * se, diff + Z * se))
    raw = res.variants[1].test
    assert raw is not None and c.upper - c.lower < raw.upper - raw.lower  # the covariate explains variance
    assert c.variance_reduction > 0.01
    assert c.p_value == pytest.approx(2 * stats.norm.sf(abs(diff / se)))


def test_interval_coverage_by_simulation() -> None:
    """95 % intervals of the difference and of the lift cover the planted values ~95 % of the time."""
    rng = np.random.default_rng(5)
    n, pa_, pb, reps = 3000, 0.10, 0.13, 1000
    xa, xb = rng.binomial(n, pa_, reps), rng.binomial(n, pb, reps)
    cover_d = cover_l = rejected = 0
    for a, b in zip(xa, xb, strict=True):
        t = two_proportion_test(n, int(a), n, int(b))
        cover_d += t.lower <= pb - pa_ <= t.upper
        cover_l += (t.lift_lower or 0) <= pb / pa_ - 1 <= (t.lift_upper or 0)
        rejected += (t.p_value or 1) < 0.05
    assert 0.93 <= cover_d / reps <= 0.97 and 0.93 <= cover_l / reps <= 0.97
    # power: the closed-form sample size for +30 % at 10 % says 3000 per variant is plenty
    needed = units_needed(0.10, 0.30)
    assert needed is not None and needed < n and rejected / reps > 0.8
    # and under the null the test rejects ~5 %
    x0 = rng.binomial(n, pa_, (reps, 2))
    false = sum((two_proportion_test(n, int(a), n, int(b)).p_value or 1) < 0.05 for a, b in x0)
    assert 0.03 <= false / reps <= 0.07


def test_units_needed_closed_form() -> None:
    # Fleiss' formula by hand for p1 = 0.10, p2 = 0.11, alpha 0.05, power 0.8
    p1, p2 = 0.10, 0.11
    pbar = (p1 + p2) / 2
    n = (Z * math.sqrt(2 * pbar * (1 - pbar)) + 0.8416212335729143 * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2
    assert units_needed(0.10, 0.10) == math.ceil(n / (p2 - p1) ** 2)
    assert units_needed(0.0, 0.1) is None


def test_srm_detected_and_expected_split() -> None:
    q = ExperimentQuery(variant="properties.variant", goal="purchase")
    res = readout_from_counts(q, {"A": (6000, 600), "B": (5400, 700)})
    assert res.srm is not None and res.srm.mismatch
    assert res.srm.p_value == pytest.approx(stats.chisquare([6000, 5400]).pvalue)
    assert "sample-ratio mismatch" in res.verdict()
    # the same counts are fine when a 60/40 split ... of 6000/4000 was intended
    q2 = ExperimentQuery(variant="properties.variant", goal="purchase", expected_split={"A": 60, "B": 40})
    ok = readout_from_counts(q2, {"A": (6000, 600), "B": (4000, 500)})
    assert ok.srm is not None and not ok.srm.mismatch
    assert ok.srm.p_value == pytest.approx(stats.chisquare([6000, 4000], [6000, 4000]).pvalue)
    three = srm_check({"A": 100, "B": 100, "C": 160})
    assert three.p_value == pytest.approx(stats.chisquare([100, 100, 160]).pvalue) and three.mismatch


def test_not_enough_data() -> None:
    q = ExperimentQuery(variant="properties.variant", goal="purchase")
    small = readout_from_counts(q, {"A": (40, 4), "B": (45, 9)})
    assert small.status == "not_enough_data" and not small.enough_data
    assert small.verdict().startswith("not enough data") and "variant A has 40 units (need 100)" in small.verdict()
    assert small.variants[1].test is not None  # numbers still shown
    rare = readout_from_counts(q, {"A": (500, 2), "B": (500, 3)})
    assert rare.status == "not_enough_data" and "2 conversions of 500" in rare.verdict()
    one = readout_from_counts(q, {"A": (500, 50)})
    assert one.status == "not_enough_data" and "need at least 2" in one.verdict() and one.srm is None
    none = readout_from_counts(q, {})
    assert none.status == "not_enough_data" and none.variants == ()


def _hand_rows() -> list[dict[str, Any]]:
    return [
        # p1: A, converts 1 h after exposure
        {"user_id": "p1", "event": "visit", "minute": 0, "properties": {"variant": "A"}},
        {"user_id": "p1", "event": "purchase", "minute": 60},
        # p2: B, purchase only before exposure -> not converted
        {"user_id": "p2", "event": "purchase", "minute": 0},
        {"user_id": "p2", "event": "visit", "minute": 5, "properties": {"variant": "B"}},
        # p3: B, converts 3 days later (outside a 2d window)
        {"user_id": "p3", "event": "visit", "minute": 0, "properties": {"variant": "B"}},
        {"user_id": "p3", "event": "purchase", "minute": 3 * 1440},
        # p4: mixed A then B -> left out
        {"user_id": "p4", "event": "visit", "minute": 0, "properties": {"variant": "A"}},
        {"user_id": "p4", "event": "visit", "minute": 9, "properties": {"variant": "B"}},
        {"user_id": "p4", "event": "purchase", "minute": 10},
        # p5: never exposed
        {"user_id": "p5", "event": "purchase", "minute": 10},
        # p6: A, no conversion; stage=decision via add_to_cart
        {"user_id": "p6", "event": "visit", "minute": 0, "properties": {"variant": "A"}},
        {"user_id": "p6", "event": "add_to_cart", "minute": 2},
    ]


def test_exposure_window_and_mixed_units_on_every_backend(touches_of: Callable[[list[dict[str, Any]]], ir.Table]) -> None:
    t = touches_of(_hand_rows())
    res = experiment(t, ExperimentQuery(variant="properties.variant", goal="purchase", min_units=1,
                                        min_conversions=0))
    got = {v.variant: (v.units, v.conversions) for v in res.variants}
    assert got == {"A": (2, 1), "B": (2, 1)} and res.mixed_units == 1
    win = experiment(t, ExperimentQuery(variant="properties.variant", goal="purchase", window="2d"))
    assert {v.variant: v.conversions for v in win.variants} == {"A": 1, "B": 0}
    assert win.status == "not_enough_data"
    stage = experiment(t, ExperimentQuery(variant="properties.variant", goal="stage=decision",
                                          cuped_covariate="pre:purchase"))
    # purchase and add_to_cart are decision touches of five_phase
    assert {v.variant: v.conversions for v in stage.variants} == {"A": 2, "B": 1}
    assert {v.variant: v.covariate_mean for v in stage.variants} == {"A": 0.0, "B": 0.5}


def test_trait_variant(tmp_path: Path) -> None:
    rows = _hand_rows()
    people = [{"message_id": f"t{i}", "workspace": "default", "user_id": u, "account_id": None, "ts": T0,
               "traits": json.dumps({"group": g, "age": a})}
              for i, (u, g, a) in enumerate([("p1", "X", 30), ("p2", "Y", 40), ("p3", "Y", 50), ("p5", "X", 20)])]
    with open_store(str(tmp_path / "t.duckdb")) as store:
        store.append("events", events_table(rows))
        store.append("people", pa.Table.from_pylist(people, schema=schema.PEOPLE.arrow_schema()))
        ws = Workspace(store)
        res = experiment(ws.touches(), ExperimentQuery(variant="trait:group", goal="purchase", control="Y",
                                                       cuped_covariate="trait:age"), people=ws.people())
    got = {v.variant: (v.units, v.conversions, v.covariate_mean) for v in res.variants}
    # exposure = first touch: p1 converts, p5's purchase is its first touch (counted), p2 and p3 convert
    assert got == {"Y": (2, 2, 45.0), "X": (2, 2, 25.0)}
    assert res.control == "Y" and res.variants[0].variant == "Y"


def test_bad_parameters() -> None:
    with pytest.raises(InvalidParameterError, match="CUPED covariate"):
        ExperimentQuery(variant="properties.variant", goal="purchase", cuped_covariate="nope")
    with pytest.raises(InvalidParameterError, match="window"):
        ExperimentQuery(variant="properties.variant", goal="purchase", window="soon")
    with pytest.raises(InvalidParameterError, match="names no property"):
        ExperimentQuery(variant="properties.", goal="purchase")
    with pytest.raises(UnknownNameError, match="control variant"):
        readout_from_counts(ExperimentQuery(variant="properties.v", goal="x", control="Z"), {"A": (5, 1)})


def test_cli(big: tuple[str, dict[str, Any]]) -> None:
    from journeylens.cli.app import app

    db, drawn = big
    runner = CliRunner()
    r = runner.invoke(app, ["--db", db, "experiment", "--variant", "properties.variant", "--goal", "purchase",
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [(v["variant"], v["units"], v["conversions"]) for v in data["variants"]] == \
        [("A", *drawn["A"]), ("B", *drawn["B"])]
    assert data["status"] == "ok" and data["srm"]["mismatch"] is False
    r = runner.invoke(app, ["--db", db, "experiment", "--variant", "properties.variant", "--goal", "purchase",
                            "--cuped-covariate", "pre", "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("variant,control,units,conversions,rate")
    r = runner.invoke(app, ["--db", db, "experiment", "--variant", "properties.variant", "--goal", "purchase",
                            "--min-units", "10000"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "not enough data" in r.stdout and "(need 10000)" in r.stdout
    r = runner.invoke(app, ["--db", db, "experiment", "--variant", "propertys.variant", "--goal", "purchase"])
    assert isinstance(r.exception, UnknownNameError)
