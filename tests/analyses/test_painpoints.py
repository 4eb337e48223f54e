"""Pain points and moments of truth: hand-made journeys on every backend, statistics against
closed forms and scipy, and the demo's planted pain point and channel effects."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest
from scipy import stats
from typer.testing import CliRunner

from journeylens import schema
from journeylens.analyses.painpoints import (
    PainPointsQuery,
    _mantel_haenszel,
    moments_of_truth,
    pain_points,
    two_proportion,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import T0, events_table

# ------------------------------------------------------------------ hand-made journeys
N = 10


def _rows() -> list[dict[str, Any]]:
    """Tier a: cart → shipping costs → leaves (back two hours later with a lone visit).
    Tier b: cart → shipping costs → checkout → purchase (a goal, revenue)."""
    rows: list[dict[str, Any]] = []
    for i in range(N):
        a, b = f"a{i}", f"b{i}"
        for k, ev in enumerate(["visit", "product_view", "add_to_cart", "shipping_costs_viewed"]):
            rows.append({"user_id": a, "event": ev, "minute": k})
        rows.append({"user_id": a, "event": "visit", "minute": 120})
        for k, ev in enumerate(["visit", "product_view", "add_to_cart", "shipping_costs_viewed",
                                "checkout_started", "purchase"]):
            rows.append({"user_id": b, "event": ev, "minute": k,
                         **({"revenue": 20.0, "properties": {"order_number": 1}} if ev == "purchase" else {})})
    return rows


def _people(store: Store) -> None:
    rows = [{"message_id": f"p{u}{i}", "workspace": "default", "user_id": f"{u}{i}", "ts": T0,
             "traits": json.dumps({"tier": u})} for u in ("a", "b") for i in range(N)]
    store.append("people", pa.Table.from_pylist(rows, schema=schema.PEOPLE.arrow_schema()))


def test_abandonment_by_trait_on_every_backend(make_store: Callable[[], Store], backend: str) -> None:
    store = make_store()
    store.append("events", events_table(_rows()))
    _people(store)
    ws = Workspace(store)
    m = ws.model()
    q = PainPointsQuery(kinds=("abandonment", "drop_out", "low_conversion"), min_items=5)
    res = pain_points(ws.touches(m), m, q, people=ws.people())
    assert "tier" in res.segments
    top = res.pain_points[0]
    f = top.finding
    # hand count: tier a 10 shipping touches, all end the session; tier b 10, none does
    assert (top.kind, top.stage, top.subject, f.group) == ("abandonment", "decision", "shipping_costs_viewed",
                                                           "tier=a")
    assert (f.n, f.bad, f.baseline_n, f.baseline_bad, f.affected) == (10, 10, 10, 0, 10)
    assert f.excess == pytest.approx(10.0)
    # z = 1 / sqrt(0.25 * 0.2); drop-out and conversion items are all censored (quiet 14d)
    assert f.p_value == pytest.approx(stats.norm.sf(1 / math.sqrt(0.05)))
    assert all(p.kind == "abandonment" for p in res.pain_points)
    # the lone return visit is a stand-alone session: not an abandonment item
    assert not any(p.subject == "visit" for p in res.pain_points)


def test_loops_and_dropout_without_censoring(make_store: Callable[[], Store]) -> None:
    store = make_store()
    store.append("events", events_table(_rows()))
    _people(store)
    ws = Workspace(store)
    m = ws.model()
    q = PainPointsQuery(kinds=("loop", "drop_out"), min_items=5, quiet="1s")
    res = pain_points(ws.touches(m), m, q, people=ws.people())
    by = {(p.kind, p.subject): p.finding for p in res.pain_points}
    # tier a returns to awareness after decision: two awareness runs each
    loop = by[("loop", "awareness")]
    assert (loop.group, loop.n, loop.bad, loop.baseline_bad) == ("tier=a", 10, 10, 0)
    assert ("drop_out", "shipping_costs_viewed") not in by  # tier a came back afterwards


def test_query_validation() -> None:
    with pytest.raises(UnknownNameError):
        PainPointsQuery(kinds=("nope",))
    with pytest.raises(UnknownNameError):
        PainPointsQuery(unit="household")
    with pytest.raises(InvalidParameterError):
        PainPointsQuery(session_gap="soon")
    with pytest.raises(InvalidParameterError):
        PainPointsQuery(top=0)


# ------------------------------------------------------------------ statistics vs oracles
@pytest.mark.parametrize(("k", "n", "k0", "n0"), [(30, 100, 15, 120), (7, 40, 2, 35), (500, 2000, 420, 2100)])
def test_two_proportion_equals_pearson_chi_square(k: int, n: int, k0: int, n0: int) -> None:
    d, lo, hi, p = two_proportion(k, n, k0, n0)
    _chi2, p2, _, _ = stats.chi2_contingency([[k, n - k], [k0, n0 - k0]], correction=False)
    assert p == pytest.approx(p2 / 2)  # one-sided, difference positive
    assert d == pytest.approx(k / n - k0 / n0)
    se = math.sqrt((k / n) * (1 - k / n) / n + (k0 / n0) * (1 - k0 / n0) / n0)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * se)


def test_mantel_haenszel_closed_forms() -> None:
    a, b, c, d = 20.0, 30.0, 10.0, 40.0
    one = _mantel_haenszel([(a, b, c, d)])
    assert one["odds_ratio"] == pytest.approx(a * d / (b * c))
    woolf = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)  # RGB reduces to Woolf with one stratum
    assert one["lo"] == pytest.approx(math.exp(math.log(a * d / (b * c)) - 1.959964 * woolf))
    assert one["rr"] == pytest.approx((a / (a + b)) / (c / (c + d)))
    n = a + b + c + d
    pearson = stats.chi2_contingency([[a, b], [c, d]], correction=False)[0]
    assert one["p"] == pytest.approx(stats.chi2.sf(pearson * (n - 1) / n, 1))
    # two strata with the same odds ratio 2 but different base rates: MH gives exactly 2
    two = _mantel_haenszel([(20, 10, 10, 10), (5, 45, 60, 1080)])
    assert two["odds_ratio"] == pytest.approx(2.0)


# ------------------------------------------------------------------ demo ground truth
def _personas(demo: Any) -> dict[str, ibis.Table]:
    tp = demo.truth_persons()[["person_id", "persona"]].rename(columns={"persona": "value"})
    return {"persona": ibis.memtable(tp)}


def test_demo_shop_planted_pain_point_ranked_first(demo_shop: Any) -> None:
    truth = demo_shop.truth["pain_point"]
    with demo_shop.open() as ws:
        m = ws.model()
        t = ws.touches(m)
        plain = pain_points(t, m, surveys=ws.surveys(), people=ws.people(), accounts=ws.accounts())
        personas = pain_points(t, m, surveys=ws.surveys(), people=ws.people(), accounts=ws.accounts(),
                               segments=_personas(demo_shop))
    # without personas: found through the traits (bargain hunters have low income)
    first = plain.pain_points[0]
    assert (first.kind, first.stage, first.subject) == ("abandonment", truth["stage"], truth["event"])
    assert first.finding.group == "income_band=low"
    # with personas: the planted persona, its realized rate and event count
    top = personas.pain_points[0]
    f = top.finding
    real = truth["realized"][truth["persona"]]
    assert (top.kind, top.subject, f.group) == ("abandonment", truth["event"], f"persona={truth['persona']}")
    assert f.n == real["events"]
    assert abs(f.bad - real["abandoned"]) <= 3
    others = [v for k, v in truth["realized"].items() if k != truth["persona"]]
    base = sum(v["abandoned"] for v in others) / sum(v["events"] for v in others)
    assert f.baseline == pytest.approx(base, abs=0.01)
    assert f.ci_low > 0.4


def test_demo_b2b_pricing_dropout_of_founders(demo_b2b: Any) -> None:
    truth = demo_b2b.truth["pain_point"]
    with demo_b2b.open() as ws:
        m = ws.model("b2b")
        res = pain_points(ws.touches(m), m, surveys=ws.surveys(), people=ws.people(), accounts=ws.accounts(),
                          segments=_personas(demo_b2b))
    drops = [p for p in res.pain_points if p.kind == "drop_out" and p.stage == truth["stage"]]
    top = drops[0]
    assert (top.subject, top.finding.group) == (truth["event"], f"persona={truth['persona']}")
    real = truth["realized"][truth["persona"]]["rate"]
    assert top.finding.rate == pytest.approx(real, abs=0.05)
    # the same drop-out is also seen through an account trait (startups are on the starter plan)
    assert any(a.group == "account.plan=starter" for a in top.also)


def test_demo_shop_moments_of_truth_follow_channel_effects(demo_shop: Any) -> None:
    effects: dict[str, float] = demo_shop.truth["channel_effects"]["effects"]
    with demo_shop.open() as ws:
        res = moments_of_truth(ws.touches())
    odds = {mt.value: mt.odds_ratio for mt in res.moments if mt.value in effects}
    assert set(odds) == set(effects)
    keys = sorted(odds)
    rho = stats.spearmanr([odds[k] for k in keys], [effects[k] for k in keys]).statistic
    assert rho >= 0.7
    for strong in ("referral", "email", "paid_search"):
        for weak in ("display", "paid_social"):
            assert odds[strong] > odds[weak]
    email = next(mt for mt in res.moments if mt.value == "email")
    assert email.or_ci_low > 1 and email.p_value < 0.001
    assert res.converted == sum(demo_shop.truth_persons().converted)


# ------------------------------------------------------------------ CLI
def test_cli_painpoints(demo_shop: Any, tmp_path: Path) -> None:
    from journeylens.cli.app import app

    db = demo_shop.copy_db(tmp_path)
    seg = tmp_path / "personas.csv"
    demo_shop.truth_persons()[["person_id", "persona"]].rename(columns={"persona": "value"}).to_csv(seg, index=False)
    runner = CliRunner()
    r = runner.invoke(app, ["--db", str(db), "painpoints", "--top", "3", "--segment", f"persona={seg}",
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert len(data["pain_points"]) == 3
    assert data["pain_points"][0]["group"] == "persona=bargain_hunter"
    r = runner.invoke(app, ["--db", str(db), "painpoints", "--top", "2", "--moments", "--format", "table"])
    assert r.exit_code == 0, r.output
    assert "Pain points" in r.stdout and "Moments of truth" in r.stdout
    r = runner.invoke(app, ["--db", str(db), "painpoints", "--top", "1", "--moments", "--format", "json"])
    data = json.loads(r.stdout)
    assert data["pain_points"][0]["subject"] == "shipping_costs_viewed"
    assert data["moments"][0]["by"] == "channel" and len(data["moments"]) >= 11
    r = runner.invoke(app, ["--db", str(db), "painpoints", "--top", "2", "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("rank,kind,stage,subject")
    r = runner.invoke(app, ["--db", str(db), "painpoints", "--kind", "nope"])
    assert r.exit_code != 0 and isinstance(r.exception, UnknownNameError)
    assert "unknown pain point kind 'nope'" in str(r.exception)
