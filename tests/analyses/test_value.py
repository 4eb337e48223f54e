"""Customer value (``analyses/value.py``, ``journeylens clv``).

Expected values come from outside: the parameters Fader, Hardie & Lee published for the CDNOW
data (BG/NBD 2005, Gamma-Gamma "RFM and CLV" note), the ``lifetimes`` package as an oracle for
the predictions and for the RFM summary of the demo's purchases, and the demo's planted truth.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from journeylens.analyses.value import (
    MODEL_NAME,
    BetaGeoModel,
    CLVResult,
    GammaGammaModel,
    ValueQuery,
    clv,
    customer_lifetime_value,
    fit_rfm,
    rfm_summary,
)
from journeylens.errors import InputFileError, InvalidParameterError, UnknownNameError
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.helpers import events_table

lifetimes = pytest.importorskip("lifetimes")
from lifetimes import BetaGeoFitter, GammaGammaFitter  # noqa: E402
from lifetimes.datasets import (  # noqa: E402
    load_cdnow_summary,
    load_cdnow_summary_data_with_monetary_value,
)

DAY = 1440  # minutes

# Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way", CDNOW 2,357 customers, weeks.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BGNBD_LL = -9582.4
# Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves" / Hardie's note 025: 946 repeat buyers.
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_summary_data_with_monetary_value()


# ============================================================================ published numbers
def test_bgnbd_matches_published_cdnow_parameters() -> None:
    d = load_cdnow_summary()
    bg = BetaGeoModel().fit(d.frequency, d.recency, d["T"])
    for name, value in PUBLISHED_BGNBD.items():
        assert bg.params_[name] == pytest.approx(value, abs=0.005), name
    assert bg.log_likelihood_ == pytest.approx(PUBLISHED_BGNBD_LL, abs=0.05)
    assert bg.n_ == 2357


def test_gamma_gamma_matches_published_cdnow_parameters(cdnow: pd.DataFrame) -> None:
    gg = GammaGammaModel().fit(cdnow.frequency, cdnow.monetary_value)
    assert gg.n_ == 946  # customers with a repeat purchase
    # published to two decimals; our optimum (6.2488, 3.7446, 15.4477) equals lifetimes' to 1e-4
    for name, value in PUBLISHED_GG.items():
        assert gg.params_[name] == pytest.approx(value, abs=0.01), name


def test_predictions_agree_with_lifetimes(cdnow: pd.DataFrame) -> None:
    x, t_x, T, m = cdnow.frequency, cdnow.recency, cdnow["T"], cdnow.monetary_value
    bg = BetaGeoModel().fit(x, t_x, T)
    oracle = BetaGeoFitter().fit(x, t_x, T)
    for name in ("r", "alpha", "a", "b"):
        assert bg.params_[name] == pytest.approx(oracle.params_[name], rel=1e-4), name
    for t in (1, 10, 39, 52, 104):
        ours = bg.conditional_expected_purchases(t, x, t_x, T)
        theirs = oracle.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bg.probability_alive(x, t_x, T), oracle.conditional_probability_alive(x, t_x, T),
                               rtol=1e-4, atol=1e-6)
    ts = np.array([1.0, 39.0, 78.0])
    np.testing.assert_allclose(bg.expected_purchases(ts), oracle.expected_number_of_purchases_up_to_time(ts),
                               rtol=1e-4)
    # the worked example of Fader, Hardie & Lee (customer 1 of CDNOW): a customer with x=2, t_x=30.43, T=38.86 expects 1.226 purchases in 39 weeks
    assert float(bg.conditional_expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=0.001)

    gg = GammaGammaModel().fit(x, m)
    gg_oracle = GammaGammaFitter().fit(x[x > 0], m[x > 0])
    np.testing.assert_allclose(gg.expected_spend(x, m), gg_oracle.conditional_expected_average_profit(x, m),
                               rtol=1e-4)
    ours_clv = customer_lifetime_value(bg, gg.expected_spend(x, m), x, t_x, T, horizon=12, discount=0.01,
                                       periods_per_month=4.345)
    theirs_clv = gg_oracle.customer_lifetime_value(oracle, x, t_x, T, m, time=12, discount_rate=0.01, freq="W")
    np.testing.assert_allclose(ours_clv, theirs_clv.to_numpy(), rtol=2e-4)


def test_fit_rfm_result_and_figure(cdnow: pd.DataFrame) -> None:
    res = fit_rfm(cdnow.reset_index().rename(columns={"customer_id": "unit"}),
                  ValueQuery(time_unit="week", top=3, periods_per_month=4.345))
    assert res.model == MODEL_NAME and res.people == 2357 and res.repeat_customers == 946
    d = res.to_dict()
    assert set(d["params"]) == {"r", "alpha", "a", "b", "p", "q", "gamma"}
    assert len(d["top"]) == 3 and d["top"][0]["clv"] == pytest.approx(res.frame.clv.max())
    assert res.mean_clv == pytest.approx(float(res.frame.clv.mean()))
    assert list(res.to_pandas().clv) == sorted(res.frame.clv, reverse=True)
    assert res.figure().data  # a histogram of CLV


def test_bad_rfm_tables_and_queries_raise() -> None:
    with pytest.raises(InvalidParameterError, match="lacks column"):
        fit_rfm(pd.DataFrame({"frequency": [1], "recency": [1.0]}))
    with pytest.raises(InvalidParameterError, match="recency"):
        fit_rfm(pd.DataFrame({"frequency": [1, 0], "recency": [5.0, 0.0], "T": [3.0, 4.0]}))
    with pytest.raises(InvalidParameterError, match="repeat purchase"):
        fit_rfm(pd.DataFrame({"frequency": [0, 0], "recency": [0.0, 0.0], "T": [3.0, 4.0]}))
    with pytest.raises(UnknownNameError, match="did you mean 'week'"):
        ValueQuery(time_unit="weeks")
    with pytest.raises(UnknownNameError):
        ValueQuery(unit="household")
    with pytest.raises(InvalidParameterError, match="whole number of days"):
        ValueQuery(holdout="36h")
    with pytest.raises(InvalidParameterError, match="discount"):
        ValueQuery(discount=1.5)
    with pytest.raises(InvalidParameterError, match="horizon"):
        ValueQuery(horizon=0)
    with pytest.raises(InvalidParameterError, match="not a date"):
        ValueQuery(as_of="yesterday")


# ============================================================================ RFM in Ibis, both backends
def _rows() -> list[dict[str, Any]]:
    """a: purchase days 0 (two orders, 10 + 5), 3 (20), 10 (30), 15 (40) and an order without revenue
    on day 12; b: one purchase on day 5 (7); d: first purchase on day 14 (9); c never buys. The last
    touch is c's visit on day 20, so the observation ends on day 20 (2026-03-21)."""
    def buy(user: str, day: int, revenue: float | None, n: int) -> dict[str, Any]:
        return {"user_id": user, "event": "purchase", "minute": day * DAY + n, "revenue": revenue,
                "channel": "email" if user == "a" else "direct"}

    return [
        {"user_id": "a", "event": "visit", "minute": 0, "channel": "email"},
        buy("a", 0, 10.0, 1), buy("a", 0, 5.0, 2), buy("a", 3, 20.0, 3), buy("a", 10, 30.0, 4),
        buy("a", 12, None, 5), buy("a", 15, 40.0, 6),
        buy("b", 5, 7.0, 7), buy("d", 14, 9.0, 8),
        {"user_id": "c", "event": "visit", "minute": 20 * DAY + 9},
    ]


def test_rfm_summary_hand_computed(touches_of: Callable[[list[dict[str, Any]]], ir.Table]) -> None:
    touches = touches_of(_rows())
    full = rfm_summary(touches)
    assert full.observation_end == date(2026, 3, 21) and full.calibration_end is None
    got = full.frame.set_index("unit")[["frequency", "recency", "T", "monetary_value", "revenue"]]
    expected = pd.DataFrame(
        {"frequency": [3, 0, 0], "recency": [15.0, 0.0, 0.0], "T": [20.0, 15.0, 6.0],
         "monetary_value": [30.0, 0.0, 0.0], "revenue": [105.0, 7.0, 9.0]},
        index=pd.Index(["a", "b", "d"], name="unit"))
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    # holdout of 8 days: calibration ends on day 12; d bought only in the holdout and is left out
    cal = rfm_summary(touches, ValueQuery(holdout="8d", time_unit="week"))
    assert cal.calibration_end == date(2026, 3, 13) and cal.duration_holdout == pytest.approx(8 / 7)
    got = cal.frame.set_index("unit")
    assert list(got.index) == ["a", "b"]
    assert list(got.frequency) == [2, 0] and list(got.frequency_holdout) == [1, 0]
    np.testing.assert_allclose(got.recency, [10 / 7, 0.0])
    np.testing.assert_allclose(got["T"], [12 / 7, 7 / 7])
    np.testing.assert_allclose(got.monetary_value, [25.0, 0.0])
    np.testing.assert_allclose(got.revenue_holdout, [40.0, 0.0])

    # purchases = every `purchase` event: a's order without revenue adds purchase day 12 of value 0
    by_event = rfm_summary(touches, ValueQuery(purchase="purchase", as_of="2026-03-17")).frame.set_index("unit")
    assert by_event.loc["a", "frequency"] == 4 and by_event.loc["a", "T"] == 16.0
    assert by_event.loc["a", "monetary_value"] == pytest.approx((20 + 30 + 0 + 40) / 4)
    assert "d" in by_event.index and by_event.loc["d", "T"] == 2.0


def test_breakdown_by_first_purchase_column_and_segment(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "b.duckdb")) as store:
        store.append("events", events_table(_rows()))
        _breakdowns(Workspace(store).touches())


def _breakdowns(touches: ir.Table) -> None:
    res = clv(touches, ValueQuery(breakdown="channel"))
    assert {r.value: r.units for r in res.breakdown_rows} == {"email": 1, "direct": 2}
    seg = ibis.memtable({"person_id": ["a", "b", "c"], "value": ["vip", "new", "new"]})
    res = clv(touches, ValueQuery(breakdown="tier"), segments={"tier": seg})
    assert {r.value: r.units for r in res.breakdown_rows} == {"vip": 1, "new": 1}
    with pytest.raises(UnknownNameError, match="breakdown"):
        clv(touches, ValueQuery(breakdown="chanel"))


# ============================================================================ demo shop
def _demo_transactions(demo: Any) -> pd.DataFrame:
    """Purchases read straight from the generator's files (not through journeylens):
    person = truth_persons' person for the row's user id; day = UTC date."""
    ev = pd.read_parquet(demo.files["events"], columns=["ts", "user_id", "revenue", "type"])
    ev = ev[(ev.revenue > 0) & (ev.type == "track")]
    truth = demo.truth_persons()[["person_id", "user_ids"]].explode("user_ids")
    ev = ev.merge(truth, left_on="user_id", right_on="user_ids", how="left")
    assert ev.person_id.notna().all()
    ev["date"] = ev.ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return ev[["person_id", "date", "revenue"]]


def test_demo_rfm_matches_lifetimes_summary(demo_shop: Any) -> None:
    from lifetimes.utils import calibration_and_holdout_data

    tx = _demo_transactions(demo_shop)
    with demo_shop.open() as ws:
        ours = rfm_summary(ws.touches(), ValueQuery(holdout="90d")).frame.set_index("unit")
    end = pd.Timestamp(date(2026, 6, 29))
    assert end == pd.Timestamp(demo_shop.truth["start"]) + pd.Timedelta(days=demo_shop.truth["days"] - 1)
    oracle = calibration_and_holdout_data(tx, "person_id", "date", calibration_period_end=end - pd.Timedelta(days=90),
                                          observation_period_end=end, freq="D", monetary_value_col="revenue")
    oracle = oracle.sort_index()
    assert list(ours.index) == list(oracle.index)
    np.testing.assert_array_equal(ours.frequency, oracle.frequency_cal)
    np.testing.assert_allclose(ours.recency, oracle.recency_cal)
    np.testing.assert_allclose(ours["T"], oracle.T_cal)
    np.testing.assert_allclose(ours.monetary_value, oracle.monetary_value_cal)
    np.testing.assert_array_equal(ours.frequency_holdout, oracle.frequency_holdout)
    assert (oracle.duration_holdout == 90).all()


def test_demo_historical_value_equals_truth(demo_shop: Any) -> None:
    truth = demo_shop.truth_persons()
    customers = truth[truth.revenue > 0].set_index("person_id")
    with demo_shop.open() as ws:
        res = clv(ws.touches())
    f = res.frame.set_index("unit")
    assert res.people == len(customers) == 744
    assert sorted(f.index) == sorted(customers.index)
    np.testing.assert_allclose(f.revenue.sort_index(), customers.revenue.sort_index(), rtol=1e-9)
    assert res.total_revenue == pytest.approx(demo_shop.truth["counts"]["revenue"])
    # repeat purchase days never exceed the repeat purchases
    assert (f.frequency <= customers.n_purchases.reindex(f.index) - 1).all()
    assert res.model == MODEL_NAME and res.mean_clv is not None and res.mean_clv > 0
    assert 0 < res.mean_p_alive <= 1


def test_demo_holdout_prediction(demo_shop: Any) -> None:
    """Fit on the first 90 of 180 days, predict the last 90: aggregate error within 20 % and a
    per-person MAE below the naive forecast x/T · 90 (reached: -10.4 %, MAE 0.681 vs 0.948)."""
    with demo_shop.open() as ws:
        res = clv(ws.touches(), ValueQuery(holdout="90d"))
    h = res.holdout
    assert h is not None and h.units == res.people == 299 and h.duration == 90
    assert h.actual_purchases == 164
    assert h.relative_error is not None and abs(h.relative_error) < 0.20
    assert h.mae < h.baseline_mae
    assert h.predicted_revenue is not None and abs(h.predicted_revenue / h.actual_revenue - 1) < 0.25
    assert sum(r.units for r in h.by_frequency) == h.units
    assert res.figure().data  # bars of actual vs predicted


def test_demo_loyal_regulars_are_worth_most(demo_shop: Any) -> None:
    """Planted: loyal regulars buy again (about 3 repeat purchases); bargain hunters and impulse
    buyers rarely. Personas reach the analysis as a segment table."""
    truth = demo_shop.truth_persons()
    personas = ibis.memtable(truth[["person_id", "persona"]].rename(columns={"persona": "value"}))
    with demo_shop.open() as ws:
        res = clv(ws.touches(), ValueQuery(breakdown="persona"), segments={"persona": personas})
    rows = {r.value: r for r in res.breakdown_rows}
    assert res.breakdown_rows[0].value == "loyal_regular"  # sorted by mean CLV
    best = max(rows.values(), key=lambda r: r.mean_expected_purchases)
    assert best.value == "loyal_regular"
    for low in ("bargain_hunter", "impulse_buyer"):
        assert rows[low].mean_expected_purchases < 0.8 * rows["loyal_regular"].mean_expected_purchases


# ============================================================================ CLI
def _invoke(*args: str) -> Any:
    from journeylens.cli.app import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_rfm_csv_cdnow(tmp_path: Path, cdnow: pd.DataFrame) -> None:
    path = tmp_path / "cdnow.csv"
    cdnow.reset_index().to_csv(path, index=False)
    r = _invoke("clv", "--rfm", str(path), "--time-unit", "week", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["model"] == "bgnbd+gamma_gamma" and data["people"] == 2357
    for name, value in {**PUBLISHED_BGNBD, **PUBLISHED_GG}.items():
        tol = 0.005 if name in PUBLISHED_BGNBD else 0.01
        assert data["params"][name] == pytest.approx(value, abs=tol), name
    assert data["mean_clv"] > 0 and data["top"][0]["unit"]

    bare = tmp_path / "cdnow_rf.csv"
    load_cdnow_summary().to_csv(bare, index=False)
    r = _invoke("clv", "--rfm", str(bare), "--time-unit", "week", "--format", "json")
    data = json.loads(r.stdout)
    assert data["model"] == "bgnbd" and data["mean_clv"] is None
    assert data["params"]["r"] == pytest.approx(0.243, abs=0.005)

    r = _invoke("clv", "--rfm", str(bare), "--time-unit", "week", "--format", "csv")
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 2358
    r = _invoke("clv", "--rfm", str(bare), "--time-unit", "week", "--top", "2")
    assert r.exit_code == 0 and "Top 2" in r.stdout and "0.2426" in r.stdout

    broken = tmp_path / "broken.csv"
    broken.write_text("frequency,recency\n1,2\n")
    r = _invoke("clv", "--rfm", str(broken))
    assert isinstance(r.exception, InputFileError) and "missing column(s) T" in str(r.exception)
    # through the real entry point: one line on stderr, no traceback
    done = subprocess.run([sys.executable, "-m", "journeylens", "clv", "--rfm", str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == InputFileError.exit_code
    assert "missing column(s) T" in done.stderr and "Traceback" not in done.stderr


def test_cli_on_demo(demo_shop: Any, tmp_path: Path) -> None:
    db = str(demo_shop.copy_db(tmp_path))
    r = _invoke("--db", db, "clv", "--format", "json", "--top", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {"model", "params", "people", "mean_clv"} <= set(data)
    assert data["model"] == "bgnbd+gamma_gamma" and data["people"] == 744 and len(data["top"]) == 2
    r = _invoke("--db", db, "clv", "--holdout", "90d", "--breakdown", "channel")
    assert r.exit_code == 0, r.output
    assert "Holdout check" in r.stdout and "By channel" in r.stdout
    r = _invoke("--db", db, "clv", "--holdout", "36h")
    assert isinstance(r.exception, InvalidParameterError) and "whole number of days" in str(r.exception)
    r = _invoke("--db", db, "clv", "--format", "csv")
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 745


def test_result_is_frozen(cdnow: pd.DataFrame) -> None:
    res = fit_rfm(cdnow, ValueQuery(time_unit="week"))
    assert isinstance(res, CLVResult)
    with pytest.raises(AttributeError):
        res.people = 1  # type: ignore[misc]


def test_demo_b2b_accounts(demo_b2b: Any) -> None:
    """Accounts as customers: every converted account has a purchase, and its value is the sum of its
    members' contract and upsell revenue in the truth. Only one account buys twice in 180 days, so
    Gamma-Gamma is not fitted and CLV is reported as missing, with the reason."""
    truth = demo_b2b.truth_persons()
    per_account = truth[truth.revenue > 0].groupby("account_id").revenue.sum().sort_index()
    with demo_b2b.open() as ws:
        touches = ws.touches()
        summary = rfm_summary(touches, ValueQuery(unit="account"))
        res = clv(touches, ValueQuery(unit="account", purchase="event=contract_signed|upsell"))
    f = summary.frame.set_index("unit").sort_index()
    assert summary.units == demo_b2b.truth["accounts"]["converted"] == len(per_account)
    np.testing.assert_allclose(f.revenue, per_account.to_numpy(), rtol=1e-9)
    assert list(f.index) == list(per_account.index)
    assert res.people == summary.units and res.unit == "account"
    assert res.model == "bgnbd" and res.mean_clv is None and "Gamma-Gamma not fitted" in res.notes[0]


# ============================================================================ fit speed (issue 8)
def test_fast_bgnbd_terms_are_identical(cdnow: pd.DataFrame) -> None:
    """The gathered per-distinct-value terms used by ``fit`` equal the plain formula bit for bit."""
    from journeylens.analyses.value import _BetaGeoTerms

    x, t_x, tt = (cdnow[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    terms = _BetaGeoTerms(x, t_x, tt)
    for params in ([0.243, 4.414, 0.793, 2.426], [0.29, 23.5, 2.0e6, 6.7e6], [1.0, 1.0, 1.0, 1.0]):
        assert np.array_equal(terms(params), BetaGeoModel.log_likelihood_terms(params, x, t_x, tt))


@pytest.mark.parametrize("source", ["cdnow", "demo"])
def test_powell_polish_matches_nelder_mead(source: str, cdnow: pd.DataFrame, demo_shop: Any) -> None:
    """The Powell polish (default since issue 8) agrees with the former Nelder-Mead polish within
    the tolerance docs/clv.md states: log-likelihood within 0.01, P(alive) within 0.001 and expected
    purchases within 0.5 % per unit (on the demo the optimum lies on the a, b → ∞ ridge)."""
    if source == "cdnow":
        frame = cdnow
    else:
        with demo_shop.open() as ws:
            frame = rfm_summary(ws.touches(), ValueQuery()).frame
    x, t_x, tt = (frame[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    fast = BetaGeoModel().fit(x, t_x, tt)
    slow = BetaGeoModel(polish="Nelder-Mead").fit(x, t_x, tt)
    assert fast.log_likelihood_ >= slow.log_likelihood_ - 0.01
    assert np.max(np.abs(fast.probability_alive(x, t_x, tt) - slow.probability_alive(x, t_x, tt))) < 1e-3
    ef, es = (m.conditional_expected_purchases(52, x, t_x, tt) for m in (fast, slow))
    assert np.max(np.abs(ef - es) / np.maximum(es, 1e-9)) < 5e-3
    keep = (x > 0) & (frame.monetary_value.to_numpy() > 0)
    m = frame.monetary_value.to_numpy(dtype=float)
    gf, gs = GammaGammaModel().fit(x, m), GammaGammaModel(polish="Nelder-Mead").fit(x, m)
    assert gf.log_likelihood_ >= gs.log_likelihood_ - 0.01
    sf, ss = gf.expected_spend(x[keep], m[keep]), gs.expected_spend(x[keep], m[keep])
    assert np.max(np.abs(sf - ss) / ss) < 5e-3
