"""The written files: names, columns, types, values — importable without column mapping."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from journeylens import schema
from tests.demo.demo_checks import Run

SHOP_PERSONAS = ("bargain_hunter", "loyal_regular", "researcher", "offline_traditional", "impulse_buyer")
B2B_PERSONAS = ("startup_founder", "senior_executive", "project_lead", "tech_evaluator", "daily_user")
CATALOG_CHANNEL = {  # the built-in catalog (journey/catalog.yaml) as far as the demo uses it
    "search_ad": "paid_search", "social_ad": "paid_social", "display_ad": "display",
    "organic_search": "organic_search", "social_media": "social", "influencer": "influencer",
    "blog": "organic_search", "youtube": "social", "newsletter": "email", "flyer_qr": "print",
    "poster_qr": "print", "tv_spot": "tv_radio", "trade_fair": "event", "webinar": "event",
    "referral_link": "referral", "partner_site": "partner", "review_portal": "review_site",
    "website": "direct", "online_shop": "direct", "store": "store", "sales_team": "sales",
    "support": "support", "product": "direct", "onboarding": "direct", "renewal": "direct",
}


def test_files_present(run: Run) -> None:
    expected = {"events", "people", "costs", "surveys", "truth", "truth_persons"}
    if run.res.scenario == "b2b":
        expected.add("accounts")
    assert set(run.res.files) == expected
    for path in run.res.files.values():
        assert path.exists() and path.parent == run.dir
    assert run.res.events == len(run.events) == run.truth["events"]


def test_events_schema_is_canonical(run: Run) -> None:
    written = pq.read_schema(run.res.files["events"])
    assert written.names == schema.EVENTS.names
    want = schema.EVENTS.arrow_schema()
    for f in want:
        assert written.field(f.name).type == f.type, f.name
    ev = run.events
    for c in schema.EVENTS.required:
        assert ev[c].notna().all(), c
    assert ev["message_id"].is_unique
    assert (ev["workspace"] == "default").all()
    assert set(ev["type"]) <= {"track", "identify", "alias", "group"}
    assert (ev["received_at"] >= ev["ts"]).all()
    assert ((ev["received_at"] - ev["ts"]) < pd.Timedelta(seconds=5)).all()


def test_events_values(run: Run) -> None:
    ev = run.events
    track = ev[ev["type"] == "track"]
    # touchpoints and channels follow the catalog
    assert track["touchpoint"].notna().all()
    assert set(track["touchpoint"]) <= set(CATALOG_CHANNEL)
    own = track["channel"] == track["touchpoint"].map(CATALOG_CHANNEL)
    in_session = ~track["event"].isin(["visit", "qr_scan", "video_view", "trade_fair_visit"])
    assert (own | in_session).all(), "session starts carry their touchpoint's channel"
    # identity rows
    ident = ev[ev["type"] == "identify"]
    assert ident["anonymous_id"].notna().all() and ident["user_id"].notna().all()
    assert ident["traits"].map(lambda t: isinstance(json.loads(t), dict)).all()
    alias = ev[ev["type"] == "alias"]
    assert alias["previous_id"].notna().all() and alias["user_id"].notna().all()
    assert ev.loc[ev["type"] != "alias", "previous_id"].isna().all()
    # properties are JSON objects
    props = ev["properties"].dropna()
    assert props.map(lambda p: isinstance(json.loads(p), dict)).all()
    # revenue only on revenue events, in EUR
    rev = ev[ev["revenue"].notna()]
    assert set(rev["event"]) <= {"purchase", "contract_signed", "upsell"}
    assert (rev["revenue"] > 0).all() and (rev["currency"] == "EUR").all()
    assert ev.loc[ev["revenue"].isna(), "currency"].isna().all()
    # utm on paid visits
    visits = ev[ev["event"] == "visit"]
    paid = visits["channel"].isin(["paid_search", "paid_social", "display", "email"])
    assert visits.loc[paid, ["utm_source", "utm_medium", "utm_campaign"]].notna().all().all()
    assert visits.loc[visits["channel"].isin(["organic_search", "direct", "referral"]), "utm_campaign"].isna().all()


def test_timestamps_in_window_and_ordered(run: Run) -> None:
    ev = run.events
    start = pd.Timestamp(run.truth["start"], tz="UTC")
    end = start + pd.Timedelta(days=run.truth["days"])
    assert (ev["ts"] >= start).all() and (ev["ts"] < end).all()
    key = ev["user_id"].fillna(ev["anonymous_id"])
    # within every id (and so within every person) rows are written in time order
    assert ev.assign(k=key).groupby("k", sort=False)["ts"].apply(lambda s: s.is_monotonic_increasing).all()


def test_message_ids_deterministic_format(run: Run) -> None:
    prefix = f"{run.res.scenario}-{run.truth['seed']}-"
    ids = run.events["message_id"]
    assert ids.str.startswith(prefix).all()
    assert ids.str.len().eq(len(prefix) + 10).all()


def test_people_csv(run: Run) -> None:
    people = pd.read_csv(run.res.files["people"])
    if run.res.scenario == "shop":
        cols = ["user_id", "age", "gender", "city", "income_band", "device", "interests"]
    else:
        cols = ["user_id", "account_id", "role", "seniority", "department", "age", "gender", "device"]
    assert list(people.columns) == cols
    assert people["user_id"].is_unique
    # exactly the identified people, under their current (root) user id
    ident_users = set(run.events.loc[run.events["type"] == "identify", "user_id"])
    identified = run.persons[run.persons["user_ids"].map(lambda u: bool(set(u) & ident_users))]
    assert set(people["user_id"]) == set(identified["person_id"])
    assert people["age"].between(18, 90).all()


def test_accounts_csv(b2b: Run) -> None:
    acc = pd.read_csv(b2b.res.files["accounts"])
    assert list(acc.columns) == ["account_id", "industry", "employees", "country", "plan"]
    assert acc["account_id"].is_unique
    grouped = set(b2b.events.loc[b2b.events["type"] == "group", "account_id"])
    assert set(acc["account_id"]) == grouped
    assert acc["plan"].isin(["starter", "business", "enterprise"]).all()
    assert (acc["employees"] >= 1).all()


def test_costs_csv(run: Run) -> None:
    costs = pd.read_csv(run.res.files["costs"])
    assert list(costs.columns) == ["date", "channel", "campaign", "spend", "impressions", "clicks",
                                   "video_views", "currency"]
    assert (costs["currency"] == "EUR").all()
    assert (costs["spend"] >= 0).all() and (costs["clicks"] >= 0).all()
    assert not costs.duplicated(["date", "channel", "campaign"]).any()
    start = datetime.fromisoformat(run.truth["start"]).date()
    days = pd.to_datetime(costs["date"]).dt.date
    assert (days >= start).all() and (days < start + timedelta(days=run.truth["days"])).all()
    per_channel = costs.groupby("channel")["campaign"].nunique()
    for ch in ("paid_search", "paid_social", "display"):
        assert 2 <= per_channel[ch] <= 3


def test_surveys_csv(run: Run) -> None:
    sv = pd.read_csv(run.res.files["surveys"])
    assert list(sv.columns) == ["person", "ts", "kind", "score", "comment", "touchpoint", "stage"]
    assert len(sv) == run.truth["counts"]["surveys"] > 0
    for kind, (lo, hi) in schema.SURVEY_SCALES.items():
        s = sv.loc[sv["kind"] == kind, "score"]
        assert s.between(lo, hi).all(), kind
    stages = list(run.truth["stages"])
    assert sv["stage"].isin(stages).all()
    ids = set(run.events["anonymous_id"].dropna()) | set(run.events["user_id"].dropna())
    assert sv["person"].isin(ids).all()
    ts = pd.to_datetime(sv["ts"], utc=True)
    assert ts.notna().all()
    comments = sv["comment"].dropna()
    assert len(comments) > 0.3 * len(sv)
    german = comments.str.contains(
        r"[äöüß]|\b(?:die|der|das|ist|und|zu|war|nicht|sehr|hat|gut|mit|bei|im|kam|uns|mir)\b",
        case=False, regex=True)
    assert 0.35 < german.mean() < 0.8, "comments mix German and English"


def test_persona_never_in_data_files(run: Run) -> None:
    keys = SHOP_PERSONAS if run.res.scenario == "shop" else B2B_PERSONAS
    assert set(run.truth["personas"]) == set(keys)
    texts = [run.res.files[k].read_text(encoding="utf-8")
             for k in ("people", "costs", "surveys", "accounts") if k in run.res.files]
    text_columns = [c for c in run.events.columns if c not in ("ts", "received_at", "revenue")]
    for key in (*keys, "persona"):
        for t in texts:
            assert key not in t, key
        for col in text_columns:
            assert not run.events[col].dropna().str.contains(key, regex=False).any(), (key, col)


def test_shop_vocabulary(shop: Run) -> None:
    ev = shop.events
    names = set(ev.loc[ev["type"] == "track", "event"])
    assert names <= {
        "visit", "video_view", "qr_scan", "blog_read", "product_view", "review_read",
        "newsletter_signup", "signup", "store_visit", "add_to_cart", "shipping_costs_viewed",
        "checkout_started", "purchase", "newsletter_open", "support_ticket", "login",
        "review_written", "referral_sent", "social_share",
    }
    visits = ev[ev["event"] == "visit"]
    assert set(visits["touchpoint"]) <= {"search_ad", "social_ad", "display_ad", "organic_search",
                                         "social_media", "influencer", "newsletter", "flyer_qr",
                                         "poster_qr", "tv_spot", "referral_link", "website"}
    # every QR scan is immediately followed by a visit with the same touchpoint and campaign
    idx = ev.index[ev["event"] == "qr_scan"]
    nxt = ev.loc[idx + 1]
    assert (nxt["event"].to_numpy() == "visit").all()
    assert (nxt["touchpoint"].to_numpy() == ev.loc[idx, "touchpoint"].to_numpy()).all()
    assert (nxt["utm_campaign"].to_numpy() == ev.loc[idx, "utm_campaign"].to_numpy()).all()
    # events inside a web session carry the session's channel
    pv = ev[ev["event"] == "product_view"]
    assert (pv["touchpoint"] == "online_shop").all()
    assert pv["channel"].nunique() > 3


def test_b2b_vocabulary(b2b: Run) -> None:
    ev = b2b.events
    names = set(ev.loc[ev["type"] == "track", "event"])
    assert names <= {
        "visit", "blog_read", "trade_fair_visit", "whitepaper_download", "webinar_attended",
        "pricing_view", "review_read", "case_study_view", "demo_requested", "sales_call",
        "trial_started", "proposal_sent", "contract_signed", "onboarding_session", "feature_used",
        "login", "support_ticket", "renewal", "upsell", "review_written", "referral_sent",
        "case_study_participation",
    }
    assert {"visit", "whitepaper_download", "contract_signed", "feature_used"} <= names


@pytest.mark.parametrize("scenario", ["shop", "b2b"])
def test_events_per_human(scenario: str, request: pytest.FixtureRequest) -> None:
    r: Run = request.getfixturevalue(scenario)
    per_human = len(r.events) / r.truth["people"]
    assert 10 <= per_human <= 25
