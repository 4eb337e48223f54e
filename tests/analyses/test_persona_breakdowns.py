"""Personas and cohorts as breakdowns and filters in attribution, experiments, propensity,
lifecycle and churn (issue 5): hand-checked journeys on every backend, the demo's planted
personas (saved as ``persona:<key>`` cohorts from ``truth_persons``), a planted per-persona
A/B effect against scipy, and the CLI."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import journeylens
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import Store, open_store
from journeylens.workspace import Workspace
from tests.analyses.test_attribution import hand_journey_rows
from tests.helpers import events_table


# ------------------------------------------------------------------ hand-checked, every backend
def _rows() -> list[dict[str, Any]]:
    """The hand-checked journeys of test_attribution (p1..p6; see its docstring), without accounts."""
    return [{k: v for k, v in r.items() if k != "account_id"} for r in hand_journey_rows()]


def test_segments_on_every_backend(make_store: Callable[[], Store]) -> None:
    store = make_store()
    store.append("events", events_table(_rows()))
    ws = Workspace(store)
    ws.rebuild_identities()
    ws.save_cohort("persona:x", ["p1", "p2", "p3"])
    ws.save_cohort("persona:y", ["p4", "p5", "p6"])

    # attribution: x = p1 (email, seo), p2 (direct, email, direct collapsed to 3 touches), p3 null;
    # y = p4 (seo; the email 40 days before is outside the 30-day lookback), p5 (no touch), p6 (seo)
    first = ws.attribution("first_touch", breakdown="persona")
    assert [b.value for b in first.breakdown] == ["x", "y"]
    x, y = first.by_value("x"), first.by_value("y")
    assert x.credit() == {"email": 1.0, "direct": 1.0, "seo": 0.0}  # p1's and p3's seo gets no first touch
    assert (x.units, x.conversions, x.conversions_without_touches, x.journeys) == (3, 2, 0, 3)
    assert {k: v for k, v in y.credit().items() if v} == {"seo": 2.0}
    assert (y.units, y.conversions, y.conversions_without_touches, y.journeys) == (3, 2, 1, 2)
    assert first.credit() == {"email": 1.0, "direct": 1.0, "seo": 2.0}  # overall unchanged
    linear = ws.attribution("linear", breakdown="persona").by_value("x")
    assert linear.credit() == pytest.approx({"email": 0.5 + 1 / 3, "seo": 0.5, "direct": 2 / 3})
    assert {c.channel: c.revenue for c in linear.channels} == pytest.approx(
        {"email": 50 + 50 / 3, "seo": 50.0, "direct": 100 / 3})
    only_y = ws.attribution("first_touch", persons="persona:y")
    assert only_y.credit() == {"seo": 2.0} and only_y.conversions_without_touches == 1

    # lifecycle per day: x is active on day 0 only; y on day 0 (p4, p5, p6) and day 40 (p4)
    lc = ws.lifecycle(breakdown="persona", period="day")
    rows = {b.value: [(r.new, r.returning, r.resurrecting, r.dormant) for r in b.rows] for b in lc.breakdown}
    assert len(rows["x"]) == len(rows["y"]) == 41
    assert rows["x"][0] == (3, 0, 0, 0) and rows["x"][1] == (0, 0, 0, -3) and set(rows["x"][2:]) == {(0, 0, 0, 0)}
    assert rows["y"][0] == (3, 0, 0, 0) and rows["y"][1] == (0, 0, 0, -3) and rows["y"][40] == (0, 0, 1, 0)
    assert set(rows["y"][2:40]) == {(0, 0, 0, 0)}
    # churn at as_of (p4's touch on day 40): only p4 is active
    ch = ws.churn(breakdown="persona", inactive_for="7d", period="week")
    assert {b.value: (b.active, b.churned) for b in ch.breakdown} == {"x": (0, 3), "y": (1, 2)}
    member = ws.churn(breakdown="cohort:persona:x", inactive_for="7d", period="week")
    assert {b.value: (b.active, b.churned) for b in member.breakdown} == {"member": (0, 3), "non_member": (1, 2)}
    assert ws.lifecycle(period="day", persons="persona:x").rows[0].new == 3


# ------------------------------------------------------------------ the demo's planted personas
@pytest.fixture(scope="module")
def shop(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, pd.DataFrame]]:
    """A copy of the shop demo with the planted personas saved as ``persona:<key>`` cohorts."""
    db = demo_shop.copy_db(tmp_path_factory.mktemp("persona_breakdowns"))
    truth = demo_shop.truth_persons()
    with journeylens.open(db) as ws:
        for persona, group in truth.groupby("persona"):
            ws.save_cohort(f"persona:{persona}", group.person_id.tolist())
    yield db, truth


def test_attribution_per_persona_sums_to_the_personas_conversions(shop: tuple[Path, pd.DataFrame]) -> None:
    db, truth = shop
    converted = truth[truth.converted].groupby("persona").size().to_dict()
    with journeylens.open(db) as ws:
        plain = ws.attribution("markov")
        cmp = ws.compare_attribution(breakdown="persona", methods=["markov", "linear", "shapley"])
        only = ws.attribution("markov", persons="persona:bargain_hunter")
    for r in cmp.results:
        assert {b.value for b in r.breakdown} == set(converted)
        for b in r.breakdown:
            # every first purchase of the persona is either credited or counted as without touches
            assert b.conversions + b.conversions_without_touches == converted[b.value], (r.method, b.value)
            assert sum(b.credit().values()) == pytest.approx(b.conversions), (r.method, b.value)
            assert b.units == int((truth.persona == b.value).sum())  # every human has touches
            assert all(c.spend is None and c.cpa is None and c.roas is None for c in b.channels)
        assert sum(b.conversions for b in r.breakdown) == r.conversions  # the personas partition the persons
    markov = cmp.result("markov")
    assert markov.credit() == pytest.approx(plain.credit())  # the overall result does not change
    assert any(c.spend is not None for c in markov.channels)
    # the filter is the breakdown value's journeys alone
    assert only.credit() == pytest.approx(markov.by_value("bargain_hunter").credit())
    assert only.conversions == markov.by_value("bargain_hunter").conversions
    # bargain hunters come through ads, loyal regulars through direct and organic (docs/demo.md)
    bh, lr = markov.by_value("bargain_hunter"), markov.by_value("loyal_regular")
    paid = {"paid_search", "paid_social", "display"}
    assert sum(v for k, v in bh.credit().items() if k in paid) / bh.conversions > 0.4
    assert sum(v for k, v in lr.credit().items() if k in paid) / lr.conversions < 0.3
    df = cmp.to_pandas()
    assert list(df.columns[:3]) == ["method", "breakdown", "channel"] and set(df["breakdown"]) == set(converted)


def test_attribution_column_breakdown_and_errors(shop: tuple[Path, pd.DataFrame]) -> None:
    db, truth = shop
    with journeylens.open(db) as ws:
        r = ws.attribution("first_touch", breakdown="channel", breakdown_limit=3)
        plain = ws.attribution("first_touch")
        with pytest.raises(UnknownNameError, match="unknown breakdown 'colour'"):
            ws.attribution(breakdown="colour")
        with pytest.raises(UnknownNameError, match="persona:nobody"):
            ws.attribution(persons="persona:nobody")
        with pytest.raises(InvalidParameterError):
            ws.attribution(breakdown_limit=0)
    # the first touch's channel partitions the persons: 3 values and (other) add up to the whole
    assert len(r.breakdown) == 4 and r.breakdown[-1].value == "(other)"
    assert sum(b.conversions for b in r.breakdown) == plain.conversions
    assert sum(b.units for b in r.breakdown) == len(truth)
    total: dict[str, float] = {}
    for b in r.breakdown:
        for k, v in b.credit().items():
            total[k] = total.get(k, 0.0) + v
    assert {k: v for k, v in total.items() if v} == pytest.approx({k: v for k, v in plain.credit().items() if v})


def test_lifecycle_and_churn_per_persona(shop: tuple[Path, pd.DataFrame]) -> None:
    db, truth = shop
    humans = truth.groupby("persona").size().to_dict()
    with journeylens.open(db) as ws:
        lc = ws.lifecycle(breakdown="persona", period="month")
        ch = ws.churn(breakdown="persona", inactive_for="30d")
        only = ws.churn(inactive_for="30d", persons="persona:researcher")
    # every human is new exactly once, in its persona
    assert {b.value: sum(r.new for r in b.rows) for b in lc.breakdown} == humans
    for i, row in enumerate(lc.rows):
        assert sum(b.rows[i].active for b in lc.breakdown) == row.active
    assert {b.value: b.active + b.churned for b in ch.breakdown} == humans
    assert sum(b.active for b in ch.breakdown) == ch.active
    r = next(b for b in ch.breakdown if b.value == "researcher")
    assert (only.active, only.churned) == (r.active, r.churned)
    assert [(x.active_at_start, x.churned) for x in only.rows] == [(x.active_at_start, x.churned) for x in r.rows]


def test_repurchase_per_persona(shop: tuple[Path, pd.DataFrame]) -> None:
    db, truth = shop
    converted = truth[truth.converted].groupby("persona").size().to_dict()
    with journeylens.open(db) as ws:
        total = ws.repurchase()
        per = ws.repurchase(breakdown="persona")
        only = ws.repurchase(persons="persona:loyal_regular")
    # a purchaser is a person with a purchase: exactly the planted converters of each persona
    assert {b.value: b.total.purchasers for b in per.breakdown} == converted
    assert sum(b.total.repurchasers for b in per.breakdown) == total.repurchasers
    lr = next(b for b in per.breakdown if b.value == "loyal_regular")
    assert (only.purchasers, only.repurchasers) == (lr.total.purchasers, lr.total.repurchasers)


def test_transitions_and_sankey_filtered_by_persona(shop: tuple[Path, pd.DataFrame]) -> None:
    from journeylens.cli.app import app

    db, truth = shop
    size = int((truth.persona == "loyal_regular").sum())
    with journeylens.open(db) as ws:
        tm = ws.transitions(persons="persona:loyal_regular")
        everyone = ws.transitions()
        flows = ws.sankey(persons="persona:loyal_regular")
    assert tm.persons == size < everyone.persons  # every planted person has touches
    # every person of the persona starts exactly one path: the first step's nodes hold them all
    assert sum(n["persons"] for n in flows.to_dict()["nodes"] if n["step"] == 1) == size
    res = CliRunner().invoke(app, ["--db", str(db), "transitions", "--cohort", "persona:loyal_regular", "-f", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["persons"] == size


def test_propensity_per_persona_and_filter(shop: tuple[Path, pd.DataFrame]) -> None:
    db, truth = shop
    persona_of = dict(zip(truth.person_id, truth.persona, strict=True))
    with journeylens.open(db) as ws:
        by = ws.propensity(persona="persona", horizon="30d")
        only = ws.propensity(persona="persona", horizon="30d", persons="persona:researcher")
    assert all(s.persona == persona_of[s.person_id] for s in by.persons)
    scored = pd.DataFrame({"persona": [persona_of[s.person_id] for s in by.persons],
                           "p": [s.probability for s in by.persons]})
    expected = scored.groupby("persona")["p"].agg(["size", "mean"])
    got = {b.persona: b for b in by.by_persona}
    assert set(got) == set(expected.index)
    for persona, row in expected.iterrows():
        assert got[str(persona)].persons == row["size"]
        assert got[str(persona)].mean_probability == pytest.approx(row["mean"])
    assert sum(b.holdout_persons for b in by.by_persona) == by.evaluation.holdout_persons
    assert any(u.persona == "bargain_hunter" for u in by.uplifts)
    # the filter keeps the model: the same persons get the same probabilities
    assert [s.person_id for s in only.persons] == [s.person_id for s in by.persons if s.persona == "researcher"]
    assert [s.probability for s in only.persons] == [s.probability for s in by.persons if s.persona == "researcher"]
    assert [b.persona for b in only.by_persona] == ["researcher"]
    assert only.by_persona[0].holdout_auc == pytest.approx(got["researcher"].holdout_auc)
    assert by.to_dict(limit=1)["by_persona"][0]["persona"] == by.by_persona[0].persona


# ------------------------------------------------------------------ a planted per-persona A/B effect
PLANTED = {"hunter": {"A": 0.10, "B": 0.20}, "regular": {"A": 0.15, "B": 0.15}}


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[tuple[str, str], list[int]]]:
    """3,000 persons per persona, variant A/B on their first visit; B doubles the hunters'
    conversion and leaves the regulars'. Returns the DuckDB file and the drawn (units, conversions)."""
    rng = random.Random(5)
    rows: list[dict[str, Any]] = []
    drawn: dict[tuple[str, str], list[int]] = {}
    members: dict[str, list[str]] = {p: [] for p in PLANTED}
    for persona, rates in PLANTED.items():
        for i in range(3000):
            uid = f"{persona}-{i}"
            members[persona].append(uid)
            v = "B" if rng.random() < 0.5 else "A"
            rows.append({"user_id": uid, "event": "visit", "minute": i, "properties": {"variant": v}})
            conv = rng.random() < rates[v]
            if conv:
                rows.append({"user_id": uid, "event": "purchase", "minute": i + 60})
            cell = drawn.setdefault((persona, v), [0, 0])
            cell[0] += 1
            cell[1] += int(conv)
    rows.append({"user_id": "stranger", "event": "visit", "minute": 0, "properties": {"variant": "A"}})
    for k, r in enumerate(rows):
        r["message_id"] = f"m{k}"
    db = str(Path(tmp_path_factory.mktemp("ab")) / "ab.duckdb")
    with open_store(db) as store:
        store.append("events", events_table(rows))
        ws = Workspace(store)
        ws.rebuild_identities()
        for persona, ids in members.items():
            ws.save_cohort(f"persona:{persona}", ids)
    return db, drawn


def test_experiment_per_persona_matches_the_planted_effect(ab: tuple[str, dict[tuple[str, str], list[int]]]) -> None:
    db, drawn = ab
    with journeylens.open(db) as ws:
        r = ws.experiment(variant="properties.variant", goal="purchase", breakdown="persona", cuped_covariate="pre")
        only = ws.experiment(variant="properties.variant", goal="purchase", persons="persona:hunter")
    assert [b.value for b in r.breakdown] == ["hunter", "regular", "(none)"]
    assert sum(v.units for v in r.variants) == 6001
    for persona in PLANTED:
        res = r.by_value(persona)
        assert [(v.variant, v.units, v.conversions) for v in res.variants] == \
            [(v, *drawn[(persona, v)]) for v in ("A", "B")]
        # the pooled z-test equals Pearson's chi-square on the drawn 2x2 table
        (na, xa), (nb, xb) = drawn[(persona, "A")], drawn[(persona, "B")]
        _, p, _, _ = stats.chi2_contingency(np.array([[xa, na - xa], [xb, nb - xb]]), correction=False)
        assert res.variants[1].test is not None and res.variants[1].test.p_value == pytest.approx(p, rel=1e-9)
        assert res.srm is not None and res.srm.p_value == pytest.approx(stats.chisquare([na, nb]).pvalue)
    hunter, regular = r.by_value("hunter"), r.by_value("regular")
    test_b = hunter.variants[1].test
    assert test_b is not None and test_b.p_value is not None and test_b.p_value < 1e-6
    assert test_b.lift == pytest.approx(
        (drawn[("hunter", "B")][1] / drawn[("hunter", "B")][0]) / (drawn[("hunter", "A")][1] / drawn[("hunter", "A")][0])
        - 1)
    assert regular.variants[1].test is not None and abs(regular.variants[1].test.difference) < 0.03
    assert r.by_value("(none)").status == "not_enough_data"  # the stranger alone
    assert [(v.variant, v.units, v.conversions) for v in only.variants] == \
        [(v.variant, v.units, v.conversions) for v in hunter.variants]
    df = r.to_pandas()
    assert list(df.columns[:2]) == ["breakdown", "variant"] and len(df) == 5
    d = r.to_dict()
    assert d["breakdown"]["by"] == "persona" and d["breakdown"]["values"][0]["value"] == "hunter"


def test_experiment_cli_breakdown_and_segment(ab: tuple[str, dict[tuple[str, str], list[int]]]) -> None:
    from journeylens.cli.app import app

    db, drawn = ab
    runner = CliRunner()
    base = ["--db", db, "experiment", "--variant", "properties.variant", "--goal", "purchase"]
    res = runner.invoke(app, [*base, "--breakdown", "persona", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert "variants" in data and "verdict" in data
    got = {(b["value"], v["variant"]): [v["units"], v["conversions"]] for b in data["breakdown"]["values"]
           for v in b["variants"]}
    assert {k: v for k, v in got.items() if k[0] != "(none)"} == drawn
    res = runner.invoke(app, [*base, "--segment", "persona:regular", "--format", "csv"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(io.StringIO(res.stdout))
    assert df[["variant", "units", "conversions"]].values.tolist() == \
        [[v, *drawn[("regular", v)]] for v in ("A", "B")]
    res = runner.invoke(app, [*base, "--breakdown", "persona"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "persona = hunter" in res.stdout and "significant against A" in res.stdout


# ------------------------------------------------------------------ CLI on the demo
def test_cli_attribution_lifecycle_churn_propensity(shop: tuple[Path, pd.DataFrame]) -> None:
    from journeylens.cli.app import app

    db, truth = shop
    runner = CliRunner()
    converted = truth[truth.converted].groupby("persona").size().to_dict()

    def run(*args: str) -> Any:
        res = runner.invoke(app, ["--db", str(db), *args], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        return res

    d = json.loads(run("attribution", "--breakdown", "persona", "--format", "json").stdout)
    assert d["method"] == "markov" and d["channels"] and d["breakdown"]["by"] == "persona"
    assert {v["value"]: v["conversions"] + v["conversions_without_touches"] for v in d["breakdown"]["values"]} \
        == converted
    plain = json.loads(run("attribution", "--format", "json").stdout)
    assert "breakdown" not in plain and plain["channels"] == d["channels"]
    seg = json.loads(run("attribution", "--segment", "persona:researcher", "--format", "json").stdout)
    assert seg["conversions"] + seg["conversions_without_touches"] == converted["researcher"]
    csv = pd.read_csv(io.StringIO(run("attribution", "-b", "persona", "--format", "csv").stdout))
    assert list(csv.columns[:2]) == ["breakdown", "channel"] and set(csv["breakdown"]) == set(converted)
    assert "persona = loyal_regular" in run("attribution", "--compare", "-b", "persona").stdout
    assert "not segment specific" in run("attribution", "-b", "persona").stdout
    adj = json.loads(run("attribution", "--order", "2", "--adjust", "persona", "--format", "json").stdout)
    assert adj["adjust"]["by"] == "persona" and len(adj["adjust"]["strata"]) == truth.persona.nunique()
    effects = {c["channel"]: c["effect"] for c in adj["channels"]}
    assert all(e is not None and e >= 0 for e in effects.values())
    table = run("attribution", "--order", "2", "--adjust", "persona").stdout
    assert "per exposed journey" in table and "effect" in table and f"{effects['email']:.4f}" in table

    lc = json.loads(run("lifecycle", "--breakdown", "persona", "--period", "month", "--format", "json").stdout)
    assert {v["value"]: sum(r["new"] for r in v["rows"]) for v in lc["breakdown"]["values"]} == \
        truth.groupby("persona").size().to_dict()
    ch = run("churn", "--breakdown", "cohort:persona:researcher", "--segment", "persona:researcher", "--format",
             "json")
    assert [v["value"] for v in json.loads(ch.stdout)["breakdown"]["values"]] == ["member"]

    pr = json.loads(run("propensity", "--breakdown", "persona", "--segment", "persona:loyal_regular", "--top", "3",
                        "--format", "json").stdout)
    assert [b["persona"] for b in pr["by_persona"]] == ["loyal_regular"]
    assert {p["persona"] for p in pr["persons"]} == {"loyal_regular"}
    res = runner.invoke(app, ["--db", str(db), "propensity", "--breakdown", "channel"])
    assert isinstance(res.exception, InvalidParameterError)
    res = runner.invoke(app, ["--db", str(db), "lifecycle", "--segment", "persona:nobody"])
    assert isinstance(res.exception, UnknownNameError)
