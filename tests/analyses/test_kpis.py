"""KPIs per stage: the registry, hand-checked tiny cases (DuckDB and Spark) and the shop/b2b demos'
planted truth, with an independent pandas oracle over the demo's own files where truth.json has no
figure.

The tiny case (five_phase; T0 = 2026-03-01 09:00 UTC, times in minutes after T0):

* a: visit (paid_search, c1) 0, product_view 1, signup 2 (identified: user ua, an identify row), add_to_cart 3,
  purchase 100 (order 1) 4 — all paid_search; day 40: purchase 50 (order 2, email), upsell (email).
* b: visit (display, d1) 10, video_view 11, product_view 12, add_to_cart 13 — never buys.
* c: visit (direct) 20.
* e: visit (paid_search, c1) 30, product_view 31, add_to_cart 32 (identified: ue), purchase 30 33,
  support_ticket 34, referral_sent 35, review_written 36.

Hand-worked: reach 4 (a, b, c, e), video views 1, engaged 3 (a, b, e) → 75 %, leads 2,
conversions 2, entered decision 3 (a, b, e) of which 2 converted → 2/3, sales 3, revenue 180,
repurchase 1/2, upsell 1/2, CLV 90; latest touch = a's upsell at day 40, so with churn_after 30d
both customers converted before the cut-off and only e (last touch on day 0) is churned → 1/2.
Costs: paid_search c1 03-01 (10 €, 1000 impressions, 2 clicks), display d1 03-01 (5 €, 4000, 1),
email n1 03-02 (3 €, no impressions, 1 click), paid_search c1 04-10 (2 €, 100, 0).
Spend 20; impressions 5100 (rows reporting them: 17 €) → CPM 17/5100×1000; clicks 4 → CPC 5;
CTR 3/5100; CPL 20/2 = 10; CPA 10; ROAS 180/20 = 9.
Surveys: NPS 10, 5, 8 → (1 − 1)/3 = 0; CSAT 5, 3 → 0.5; CES 6, 4 → 5; 7 answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa
import pytest

from journeylens import schema
from journeylens.analyses.kpis import (
    DOCS_BEGIN,
    DOCS_END,
    KPIS,
    PHASES,
    REGISTRY,
    KpiQuery,
    KpiResult,
    ces_expr,
    csat_expr,
    kpi_markdown,
    kpi_stages,
    kpis,
    nps_expr,
    stage_phases,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey import builtin_models, load_model
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import T0, events_table

DOCS = Path(__file__).resolve().parents[2] / "docs"
DAY40 = 40 * 24 * 60

ISSUE_KPIS = (
    "impressions", "reach", "video_views", "cpm", "clicks", "ctr", "engagement_rate", "cpc", "leads",
    "conversion_rate", "sales", "revenue", "cpl", "cost_per_conversion", "roas", "repurchase_rate",
    "upsell_rate", "churn_rate", "nps", "csat", "ces", "clv", "feedback_count", "support_requests", "referrals",
)


# ============================================================================ registry
def test_registry_has_every_kpi_of_the_issue_once() -> None:
    keys = [k.key for k in KPIS]
    assert len(keys) == len(set(keys))
    assert set(ISSUE_KPIS) <= set(keys)
    for k in KPIS:
        assert k.phase in PHASES and k.formula and k.inputs and k.label
        assert k.unit in ("count", "currency", "share", "ratio", "score")


def test_registry_phases_follow_domain_md() -> None:
    domain = (Path(__file__).resolve().parents[3] / "shared" / "DOMAIN.md")
    expected = {"impressions": "awareness", "reach": "awareness", "cpm": "awareness", "clicks": "consideration",
                "ctr": "consideration", "cpc": "consideration", "engagement_rate": "consideration",
                "leads": "decision", "roas": "decision", "cpl": "decision", "nps": "retention",
                "churn_rate": "retention", "clv": "retention", "referrals": "advocacy"}
    for key, phase in expected.items():
        assert REGISTRY[key].phase == phase, key
    if domain.exists():
        assert "Awareness: impressions" in domain.read_text()


def test_docs_page_holds_the_generated_registry() -> None:
    text = (DOCS / "kpis.md").read_text()
    block = text[text.index(DOCS_BEGIN):text.index(DOCS_END) + len(DOCS_END)] + "\n"
    assert block == kpi_markdown(), "paste kpi_markdown() into docs/kpis.md"
    for k in KPIS:
        assert f"`{k.key}`" in text


@pytest.mark.parametrize("model", list(builtin_models()))
def test_every_phase_lands_on_one_stage_of_every_model(model: str) -> None:
    m = load_model(model)
    placed = kpi_stages(m)
    assert sorted(k.key for ks in placed.values() for k in ks) == sorted(REGISTRY)
    phases = stage_phases(m)
    assert set().union(*phases.values()) == set(PHASES)


def test_stage_mapping_of_some_models() -> None:
    assert stage_phases(load_model("five_phase")) == {p: (p,) for p in PHASES}
    three = stage_phases(load_model("three_phase"))
    assert three == {"pre_purchase": ("awareness", "consideration"), "purchase": ("decision",),
                     "post_purchase": ("retention", "advocacy")}
    # momentum has no advocacy stage: advocacy joins its last stage
    assert stage_phases(load_model("momentum"))["retention"] == ("retention", "advocacy")
    b2b = {s: [k.key for k in ks] for s, ks in kpi_stages(load_model("b2b")).items()}
    assert "nps" in b2b["onboarding"] and "cpm" in b2b["awareness"]


def test_query_validation() -> None:
    with pytest.raises(UnknownNameError):
        KpiQuery(period="year")
    with pytest.raises(UnknownNameError):
        KpiQuery(unit="company")
    with pytest.raises(InvalidParameterError):
        KpiQuery(churn_after="soon")
    with pytest.raises(InvalidParameterError):
        KpiQuery(by=" ")


# ============================================================================ tiny case
def _ev(who: str, minute: int, event: str, channel: str | None, *, user: str | None = None,
        campaign: str | None = None, revenue: float | None = None, props: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
    row: dict[str, Any] = {"message_id": f"{who}{minute:06d}", "minute": minute, "event": event,
                           "channel": channel, "anonymous_id": f"{who}1",
                           "user_id": user, "utm_campaign": campaign, "revenue": revenue}
    if props is not None:
        row["properties"] = props
    return row


TINY = [
    _ev("a", 0, "visit", "paid_search", campaign="c1"),
    _ev("a", 1, "product_view", "paid_search"),
    {**_ev("a", 2, "identify", None, user="ua"), "type": "identify", "message_id": "a-identify"},
    _ev("a", 2, "signup", "paid_search", user="ua"),
    _ev("a", 3, "add_to_cart", "paid_search", user="ua"),
    _ev("a", 4, "purchase", "paid_search", user="ua", revenue=100.0, props={"order_number": 1}),
    _ev("a", DAY40, "purchase", "email", user="ua", revenue=50.0, props={"order_number": 2}),
    _ev("a", DAY40 + 1, "upsell", "email", user="ua"),
    _ev("b", 10, "visit", "display", campaign="d1"),
    _ev("b", 11, "video_view", "display"),
    _ev("b", 12, "product_view", "display"),
    _ev("b", 13, "add_to_cart", "display"),
    _ev("c", 20, "visit", "direct"),
    _ev("e", 30, "visit", "paid_search", campaign="c1"),
    _ev("e", 31, "product_view", "paid_search"),
    {**_ev("e", 32, "identify", None, user="ue"), "type": "identify", "message_id": "e-identify"},
    _ev("e", 32, "add_to_cart", "paid_search", user="ue"),
    _ev("e", 33, "purchase", "paid_search", user="ue", revenue=30.0, props={"order_number": 1}),
    _ev("e", 34, "support_ticket", "support", user="ue"),
    _ev("e", 35, "referral_sent", "paid_search", user="ue"),
    _ev("e", 36, "review_written", "review_site", user="ue"),
]

COSTS = [
    (date(2026, 3, 1), "paid_search", "c1", 10.0, 1000, 2),
    (date(2026, 3, 1), "display", "d1", 5.0, 4000, 1),
    (date(2026, 3, 2), "email", "n1", 3.0, None, 1),
    (date(2026, 4, 10), "paid_search", "c1", 2.0, 100, 0),
]
SURVEYS = [("ua", "nps", 10.0), ("e1", "nps", 5.0), ("c1", "nps", 8.0), ("ua", "csat", 5.0),
           ("b1", "csat", 3.0), ("ue", "ces", 6.0), ("c1", "ces", 4.0)]


def _costs_table() -> pa.Table:
    rows = [{"message_id": f"c{i}", "workspace": "default", "date": d, "channel": ch, "campaign": cp,
             "spend": sp, "impressions": im, "clicks": cl, "video_views": None, "currency": "EUR"}
            for i, (d, ch, cp, sp, im, cl) in enumerate(COSTS)]
    return pa.Table.from_pylist(rows, schema=schema.COSTS.arrow_schema())


def _surveys_table() -> pa.Table:
    rows = [{"message_id": f"s{i}", "workspace": "default", "person": p, "ts": T0 + timedelta(hours=i),
             "kind": k, "score": s, "comment": None, "touchpoint": "online_shop", "stage": None}
            for i, (p, k, s) in enumerate(SURVEYS)]
    return pa.Table.from_pylist(rows, schema=schema.SURVEYS.arrow_schema())


def _fill(store: Store) -> Workspace:
    store.append("events", events_table(TINY))
    store.append("costs", _costs_table())
    store.append("surveys", _surveys_table())
    ws = Workspace(store)
    ws.rebuild_identities()
    return ws


@pytest.fixture
def tiny(make_store: Callable[[], Store]) -> Workspace:
    """The tiny case on each backend (Spark is slow here: only one test uses this)."""
    return _fill(make_store())


@pytest.fixture
def tiny_duck(tmp_path: Path) -> Iterator[Workspace]:
    from journeylens.store import open_store

    store = open_store(str(tmp_path / "tiny.duckdb"))
    yield _fill(store)
    store.close()


def _run(ws: Workspace, **params: Any) -> KpiResult:
    m = ws.model("five_phase")
    return kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys(), **params)


def test_tiny_case_every_formula(tiny: Workspace) -> None:
    r = _run(tiny)
    expected = {
        "spend": 20.0, "impressions": 5100, "reach": 4, "video_views": 1, "cpm": 17 / 5100 * 1000,
        "clicks": 4, "ctr": 3 / 5100, "engagement_rate": 0.75, "cpc": 5.0,
        "leads": 2, "conversions": 2, "conversion_rate": 2 / 3, "sales": 3, "revenue": 180.0, "cpl": 10.0,
        "cost_per_conversion": 10.0, "roas": 9.0,
        "repurchase_rate": 0.5, "upsell_rate": 0.5, "churn_rate": 0.5, "clv": 90.0, "nps": 0.0, "csat": 0.5,
        "ces": 5.0, "feedback_count": 7, "support_requests": 1, "referrals": 1, "reviews": 1,
    }
    got = {k: r.value(k) for k in expected}
    assert got == pytest.approx(expected)
    assert all(r.get(k).missing is None for k in expected)
    assert [s.stage for s in r.stages] == ["awareness", "consideration", "decision", "retention", "advocacy"]
    assert r.as_of == T0 + timedelta(minutes=DAY40 + 1)
    _check_by_channel_and_month(_run(tiny, by="channel", period="month"))


def test_tiny_case_by_channel_and_month(tiny_duck: Workspace) -> None:
    _check_by_channel_and_month(_run(tiny_duck, by="channel", period="month"))


def _check_by_channel_and_month(r: KpiResult) -> None:
    mar, apr = date(2026, 3, 1), date(2026, 4, 1)
    ps = {"period": mar, "value": "paid_search"}
    assert r.value("spend", **ps) == pytest.approx(10.0)
    assert r.value("impressions", **ps) == 1000 and r.value("clicks", **ps) == 2
    assert r.value("leads", **ps) == 2 and r.value("conversions", **ps) == 2
    assert r.value("revenue", **ps) == pytest.approx(130.0) and r.value("roas", **ps) == pytest.approx(13.0)
    assert r.value("reach", **ps) == 2 and r.value("engagement_rate", **ps) == pytest.approx(1.0)
    email_apr = {"period": apr, "value": "email"}
    assert r.value("revenue", **email_apr) == pytest.approx(50.0)
    assert r.get("spend", **email_apr).missing == "no costs for this group"
    email_mar = {"period": mar, "value": "email"}
    assert r.value("spend", **email_mar) == pytest.approx(3.0)
    assert r.get("impressions", **email_mar).missing == "no cost rows report impressions"
    assert r.value("cpc", **email_mar) == pytest.approx(3.0)
    assert r.get("cost_per_conversion", **email_mar).missing == "no conversions"
    assert r.value("spend", period=apr, value="paid_search") == pytest.approx(2.0)
    # surveys have no channel: their KPIs per group say so; the overall figure stays
    assert r.get("nps", **ps).missing == "survey answers cannot be broken down by 'channel'"
    assert r.value("nps") == pytest.approx(0.0)


def test_tiny_case_segment_breakdown(tiny_duck: Workspace) -> None:
    tiny = tiny_duck
    m = tiny.model("five_phase")
    touches = tiny.touches(m)
    buyers = touches.filter(touches.revenue > 0).select("person_id").distinct()
    seg = buyers.mutate(value=ibis.literal("buyer"))
    r = kpis(touches, model=m, costs=tiny.costs(), surveys=tiny.surveys(), by="persona",
             segments={"persona": seg})
    assert r.value("conversions", value="buyer") == 2
    assert r.value("reach", value="buyer") == 2
    assert r.value("reach", value="(none)") == 2
    assert r.value("conversions", value="(none)") == 0
    assert r.value("revenue", value="buyer") == pytest.approx(180.0)
    assert r.get("spend", value="buyer").missing.startswith("costs cannot be broken down by 'persona'")
    assert r.value("spend") == pytest.approx(20.0)
    # surveys by segment: ua (10), e1 → ue (5) are buyers → NPS 100 × (1 − 1) / 2 = 0; c1 (8) → (none)
    assert r.value("nps", value="buyer") == pytest.approx(0.0)
    assert r.value("nps", value="(none)") == pytest.approx(0.0)
    assert r.value("feedback_count", value="buyer") == 4


# ============================================================================ duckdb-only small cases
def test_missing_inputs_are_reasons_not_zeros(tmp_path: Path) -> None:
    from journeylens.store import open_store

    store = open_store(str(tmp_path / "x.duckdb"))
    store.append("events", events_table([_ev("c", 0, "visit", "direct")]))
    ws = Workspace(store)
    m = ws.model()
    r = kpis(ws.touches(m), model=m)
    assert r.value("reach") == 1
    for key in ("spend", "impressions", "cpm", "clicks", "ctr", "cpc", "cpl", "roas"):
        assert r.value(key) is None and r.get(key).missing == "no costs imported", key
    for key in ("nps", "csat", "ces", "feedback_count"):
        assert r.value(key) is None and r.get(key).missing == "no surveys imported", key
    for key in ("conversions", "sales", "revenue", "repurchase_rate", "clv"):
        assert r.get(key).missing == "no touch has revenue", key
    assert r.get("leads").missing == "no identified touch (user_id)"
    assert r.get("video_views").missing == "no video_view touches"
    # an empty costs table counts as not imported
    r2 = kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys())
    assert r2.get("cpm").missing == "no costs imported" and r2.get("nps").missing == "no surveys imported"
    d = r.to_dict()
    aw = d["stages"][0]
    assert aw["kpis"]["cpm"] is None and aw["missing"]["cpm"] == "no costs imported"
    store.close()


def test_survey_score_expressions_against_plain_python() -> None:
    scores = [0, 3, 6, 7, 8, 9, 10, 10, None]
    t = ibis.memtable(pd.DataFrame({"score": pd.array(scores, dtype="Float64")}))
    con = ibis.duckdb.connect()
    row = con.execute(t.aggregate(nps=nps_expr(t.score), csat=csat_expr(t.score, t.score <= 5),
                                  ces=ces_expr(t.score))).iloc[0]
    answers = [s for s in scores if s is not None]
    nps = 100 * (sum(s >= 9 for s in answers) - sum(s <= 6 for s in answers)) / len(answers)
    assert row.nps == pytest.approx(nps)  # 100 × (3 − 3) / 8 = 0
    assert row.csat == pytest.approx(0.0)  # answers ≤ 5: 0, 3 → none is 4–5
    assert row.ces == pytest.approx(sum(answers) / len(answers))
    empty = con.execute(t.aggregate(nps=nps_expr(t.score, t.score > 100))).iloc[0]
    assert pd.isna(empty.nps)


# ============================================================================ demo truth
def _person_map(tp: pd.DataFrame) -> dict[str, str]:
    ids: dict[str, str] = {}
    for row in tp.itertuples():
        for x in list(row.anonymous_ids) + list(row.user_ids):
            ids[x] = row.person_id
    return ids


def _oracle_touches(demo: Any) -> pd.DataFrame:
    """events.parquet's touches with the person the generator says each row belongs to."""
    ev = pd.read_parquet(demo.files["events"])
    ev = ev[ev["type"] == "track"].copy()
    ids = _person_map(demo.truth_persons())
    ev["person"] = [ids[u] if isinstance(u, str) else ids[a] for u, a in zip(ev.user_id, ev.anonymous_id,
                                                                             strict=True)]
    return ev


@pytest.fixture(scope="module")
def shop(demo_shop: Any) -> KpiResult:
    with demo_shop.open() as ws:
        m = ws.model("five_phase")
        return kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys())


def test_shop_cost_kpis_equal_the_planted_costs(demo_shop: Any, shop: KpiResult) -> None:
    real = demo_shop.truth["costs"]["realized"]
    ch = real["per_channel"]
    assert shop.value("spend") == pytest.approx(real["total_spend"], abs=0.01)
    assert shop.value("impressions") == sum(c["impressions"] for c in ch.values())
    assert shop.value("clicks") == sum(c["clicks"] for c in ch.values())
    # fee channels (email, influencer) report no impressions: CPM uses the spend of the others
    reporting = [c for k, c in ch.items() if k not in ("email", "influencer")]
    assert shop.value("cpm") == pytest.approx(
        sum(c["spend"] for c in reporting) / sum(c["impressions"] for c in reporting) * 1000, rel=1e-9)
    assert shop.value("ctr") == pytest.approx(
        sum(c["clicks"] for c in reporting) / sum(c["impressions"] for c in reporting), rel=1e-9)
    assert shop.value("cpc") == pytest.approx(real["total_spend"] / sum(c["clicks"] for c in ch.values()),
                                              rel=1e-6)


def test_shop_touch_kpis_equal_the_truth(demo_shop: Any, shop: KpiResult) -> None:
    t = demo_shop.truth
    counts, stages = t["counts"], t["stages"]
    assert shop.value("reach") == stages["awareness"]["people"] == t["people"]
    assert shop.value("video_views") == counts["events_by_name"]["video_view"]
    assert shop.value("engagement_rate") == pytest.approx(stages["consideration"]["realized_rate"], abs=1e-6)
    assert shop.value("leads") == t["identity"]["identified_persons"]
    assert shop.value("conversions") == counts["conversions"]
    assert shop.value("conversion_rate") == pytest.approx(counts["conversions"] / stages["decision"]["people"])
    assert shop.value("sales") == counts["revenue_events"]
    assert shop.value("revenue") == pytest.approx(counts["revenue"], abs=0.01)
    spend = t["costs"]["realized"]["total_spend"]
    assert shop.value("cpl") == pytest.approx(spend / t["identity"]["identified_persons"], rel=1e-6)
    assert shop.value("cost_per_conversion") == pytest.approx(spend / counts["conversions"], rel=1e-6)
    assert shop.value("roas") == pytest.approx(counts["revenue"] / spend, rel=1e-6)
    assert shop.value("support_requests") == counts["support_tickets"]
    assert shop.value("referrals") == counts["referrals_sent"]
    assert shop.value("reviews") == counts["events_by_name"]["review_written"]
    assert shop.get("upsell_rate").missing == "no upsell touches"


def test_shop_customer_kpis_equal_truth_persons(demo_shop: Any, shop: KpiResult) -> None:
    tp = demo_shop.truth_persons()
    buyers = tp[tp.n_purchases >= 1]
    assert len(buyers) == demo_shop.truth["counts"]["conversions"]
    assert shop.value("repurchase_rate") == pytest.approx((buyers.n_purchases >= 2).mean())
    assert shop.value("clv") == pytest.approx(buyers.revenue.mean())
    # churn: oracle over events.parquet with the generator's person of every row
    ev = _oracle_touches(demo_shop)
    as_of = ev.ts.max()
    cut = as_of - pd.Timedelta(days=30)
    per = ev.groupby("person").agg(last=("ts", "max"))
    first_rev = ev[ev.revenue > 0].groupby("person").ts.min()
    eligible = first_rev[first_rev < cut].index
    churned = (per.loc[eligible, "last"] < cut).sum()
    assert shop.as_of == as_of.to_pydatetime()
    assert 0 < churned < len(eligible)
    assert shop.value("churn_rate") == pytest.approx(churned / len(eligible))


def test_shop_survey_kpis_equal_the_survey_file(demo_shop: Any, shop: KpiResult) -> None:
    sv = pd.read_csv(demo_shop.files["surveys"])
    nps = sv[sv.kind == "nps"].score
    assert shop.value("nps") == pytest.approx(100 * ((nps >= 9).mean() - (nps <= 6).mean()))
    assert shop.value("csat") == pytest.approx((sv[sv.kind == "csat"].score >= 4).mean())
    assert shop.value("ces") == pytest.approx(sv[sv.kind == "ces"].score.mean())
    assert shop.value("feedback_count") == demo_shop.truth["counts"]["surveys"] == len(sv)
    # and the truth's per-stage means agree with CES
    real = demo_shop.truth["surveys"]["realized"]
    ces = [(s["kinds"]["ces"]["count"], s["kinds"]["ces"]["mean"]) for s in real.values() if "ces" in s["kinds"]]
    assert shop.value("ces") == pytest.approx(sum(n * m for n, m in ces) / sum(n for n, _ in ces), abs=1e-3)


@pytest.fixture(scope="module")
def shop_by(demo_shop: Any) -> dict[str, KpiResult]:
    with demo_shop.open() as ws:
        m = ws.model("five_phase")
        t, c, s = ws.touches(m), ws.costs(), ws.surveys()
        persona = ibis.memtable(demo_shop.truth_persons()[["person_id", "persona"]].rename(
            columns={"persona": "value"}))
        return {
            "channel": kpis(t, model=m, costs=c, surveys=s, by="channel"),
            "campaign": kpis(t, model=m, costs=c, surveys=s, by="campaign"),
            "month": kpis(t, model=m, costs=c, surveys=s, period="month"),
            "persona": kpis(t, model=m, costs=c, surveys=s, by="persona", segments={"persona": persona}),
        }


def test_shop_costs_per_channel_and_campaign(demo_shop: Any, shop_by: dict[str, KpiResult]) -> None:
    real = demo_shop.truth["costs"]["realized"]
    for name, key in (("channel", "per_channel"), ("campaign", "per_campaign")):
        r = shop_by[name]
        for value, c in real[key].items():
            assert r.value("spend", value=value) == pytest.approx(c["spend"], abs=0.01), value
            assert r.value("clicks", value=value) == c["clicks"], value
            if c["impressions"]:
                assert r.value("impressions", value=value) == c["impressions"], value
                assert r.value("cpm", value=value) == pytest.approx(c["spend"] / c["impressions"] * 1000, rel=1e-6)
    # organic search has no costs: the cost KPIs say so
    assert shop_by["channel"].get("cpc", value="organic_search").missing == "no costs for this group"


def test_shop_touch_kpis_per_channel_match_the_event_file(demo_shop: Any, shop_by: dict[str, KpiResult]) -> None:
    ev = _oracle_touches(demo_shop)
    r = shop_by["channel"]
    rev = ev[ev.revenue > 0].groupby("channel").revenue.agg(["sum", "count"])
    for channel, row in rev.iterrows():
        assert r.value("revenue", value=channel) == pytest.approx(row["sum"], abs=0.01)
        assert r.value("sales", value=channel) == row["count"]
    reach = ev[ev.event.isin(["visit", "video_view", "qr_scan", "blog_read"])].groupby("channel").person.nunique()
    for channel, n in reach.items():
        assert r.value("reach", value=channel) == n
    # conversions: each buyer counted under the channel of the first purchase
    first = ev[ev.revenue > 0].sort_values(["ts", "message_id"]).groupby("person").head(1)
    for channel, n in first.groupby("channel").size().items():
        assert r.value("conversions", value=channel) == n
    spend = demo_shop.truth["costs"]["realized"]["per_channel"]["paid_search"]["spend"]
    assert r.value("roas", value="paid_search") == pytest.approx(rev.loc["paid_search", "sum"] / spend, rel=1e-6)


def test_shop_additive_kpis_sum_over_months(shop: KpiResult, shop_by: dict[str, KpiResult]) -> None:
    r = shop_by["month"]
    stage_groups = {s.stage: s.groups for s in r.stages}
    months = {g.period for g in stage_groups["awareness"]}
    assert len(months) == 6 and all(m is not None and m.day == 1 for m in months)
    for key in ("spend", "impressions", "clicks", "sales", "revenue", "video_views", "support_requests",
                "referrals", "feedback_count", "conversions", "leads"):
        total = sum(r.value(key, period=m) or 0 for m in months)
        assert total == pytest.approx(shop.value(key), rel=1e-9), key


def test_shop_per_persona_matches_the_planted_personas(demo_shop: Any, shop_by: dict[str, KpiResult]) -> None:
    r = shop_by["persona"]
    for persona, p in demo_shop.truth["personas"].items():
        real = p["realized"]
        assert r.value("conversions", value=persona) == real["converted"], persona
        assert r.value("revenue", value=persona) == pytest.approx(real["revenue"], abs=0.01), persona
        assert r.value("sales", value=persona) == real["revenue_events"], persona
        assert r.value("reach", value=persona) == real["humans"], persona
    # the planted pain point: bargain hunters convert least once in decision
    rates = {p: r.value("conversion_rate", value=p) for p in demo_shop.truth["personas"]}
    assert min(rates, key=lambda p: rates[p] or 0) == "bargain_hunter"


def test_b2b_kpis(demo_b2b: Any) -> None:
    t = demo_b2b.truth
    with demo_b2b.open() as ws:
        m = ws.model("b2b")
        r = kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys())
        ra = kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys(), unit="account")
    assert [s.stage for s in r.stages] == list(m.stage_keys)
    assert r.value("spend") == pytest.approx(t["costs"]["realized"]["total_spend"], abs=0.01)
    assert r.value("revenue") == pytest.approx(t["counts"]["revenue"], abs=0.01)
    assert r.value("sales") == t["counts"]["revenue_events"]
    assert r.value("reach") == t["people"]
    assert r.value("support_requests") == t["counts"]["support_tickets"]
    # trade fair costs: clicks = fair visits, impressions = booth visitors
    ev = t["costs"]["realized"]["per_channel"]
    assert r.value("clicks") == sum(c["clicks"] for c in ev.values())
    # upsell: customers (first revenue touch) with an upsell touch, by the event file
    oracle = _oracle_touches(demo_b2b)
    buyers = set(oracle[oracle.revenue > 0].person)
    upsold = set(oracle[oracle.event == "upsell"].person) & buyers
    assert r.value("upsell_rate") == pytest.approx(len(upsold) / len(buyers))
    # accounts: conversions = accounts whose known members signed a contract
    acc = oracle[oracle.event == "contract_signed"].account_id.dropna().nunique()
    assert ra.value("conversions") == acc
    assert ra.value("reach") == t["stages"]["awareness"]["accounts"]


def test_result_shapes(shop: KpiResult) -> None:
    d = json.loads(json.dumps(shop.to_dict()))
    assert d["model"] == "five_phase"
    assert [s["stage"] for s in d["stages"]] == ["awareness", "consideration", "decision", "retention", "advocacy"]
    assert d["stages"][0]["kpis"]["impressions"] == shop.value("impressions")
    df = shop.to_pandas()
    assert set(df.kpi) == set(REGISTRY) and len(df) == len(REGISTRY)
    assert shop.figure() is not None


def test_unknown_breakdown(demo_shop: Any) -> None:
    with demo_shop.open() as ws:
        m = ws.model()
        with pytest.raises(UnknownNameError):
            kpis(ws.touches(m), model=m, by="colour")
