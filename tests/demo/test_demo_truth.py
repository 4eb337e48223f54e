"""truth.json and truth_persons.parquet agree with the data files, recomputed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.demo.demo_checks import Run, person_of_rows, stage_of_rows, stitch

TOP_KEYS = {"scenario", "seed", "people", "start", "days", "events", "model", "stages", "personas",
            "channel_effects", "pain_point", "surveys", "costs", "identity", "counts"}


def test_truth_layout(run: Run) -> None:
    t = run.truth
    assert set(t) >= TOP_KEYS
    assert t["scenario"] == run.res.scenario
    assert t["model"] == ("five_phase" if run.res.scenario == "shop" else "b2b")
    assert t["people"] == len(run.persons) == t["counts"]["humans"]
    assert run.res.truth == t
    for s in t["stages"].values():
        assert {"people", "touches", "planted_rate"} <= set(s)
    assert len(t["personas"]) >= 4
    for p in t["personas"].values():
        assert {"share", "description", "planted", "realized"} <= set(p)
    eff = t["channel_effects"]
    assert eff["ranking"] == sorted(eff["effects"], key=lambda c: -eff["effects"][c])
    assert len(set(eff["effects"].values())) == len(eff["effects"]), "effects are distinct"


def test_identity_stitching_by_hand(run: Run) -> None:
    roots = stitch(run.events)
    persons = set(roots.values())
    # one person per human after stitching
    assert len(persons) == run.truth["people"] == run.truth["identity"]["persons_after_stitching"]
    assert persons == set(run.persons["person_id"])
    # the ids of every person, as recorded in truth_persons
    members: dict[str, set[str]] = {}
    for i, r in roots.items():
        members.setdefault(r, set()).add(i)
    for row in run.persons.itertuples():
        assert set(row.anonymous_ids) | set(row.user_ids) == members[row.person_id]
    # people who never identify keep exactly one anonymous id
    anon_only = run.persons[run.persons["user_ids"].map(len) == 0]
    assert (anon_only["anonymous_ids"].map(len) == 1).all()
    ident = run.truth["identity"]
    ev = run.events
    assert ident["alias_messages"] == int((ev["type"] == "alias").sum())
    assert ident["identify_messages"] == int((ev["type"] == "identify").sum())
    assert ident["identified_persons"] == int((run.persons["user_ids"].map(len) > 0).sum())
    two = run.persons["anonymous_ids"].map(len) >= 2
    assert ident["persons_with_two_devices"] == int(two.sum()) > 0
    # a second device of ~20% of identified humans
    assert 0.1 < two.sum() / ident["identified_persons"] < 0.35
    # alias chains a -> b -> c exist
    chain_len = run.persons["user_ids"].map(len) - 1
    assert ident["alias_chains"] == int((chain_len >= 2).sum())
    assert ident["persons_with_alias"] == int((chain_len >= 1).sum()) > 0


def test_stages_recounted(run: Run) -> None:
    ev = run.events
    sc = run.res.scenario
    stage = stage_of_rows(ev, sc)
    stages = list(run.truth["stages"])
    touch = ev["type"] == "track"
    assert stage[touch].notna().all(), "every touch maps to a stage"
    assert stage[~touch].isna().all()
    idx = stage.map({s: i for i, s in enumerate(stages)})
    person = person_of_rows(ev, stitch(ev))
    furthest = idx.groupby(person).max()
    assert len(furthest) == run.truth["people"]
    prev = None
    for i, s in enumerate(stages):
        t = run.truth["stages"][s]
        assert t["touches"] == int((idx == i).sum()), s
        assert t["people"] == int((furthest >= i).sum()), s
        if prev is not None:
            assert t["people"] <= prev, "stage counts never increase"
        prev = t["people"]
    assert run.truth["stages"][stages[0]]["people"] == run.truth["people"]
    assert run.truth["stages"][stages[-1]]["people"] > 0
    fs = run.persons.set_index("person_id")["furthest_stage"]
    assert (fs.map(stages.index) == furthest.reindex(fs.index)).all()
    for s in stages[1:]:
        rate = run.truth["stages"][s]["planted_rate"]
        assert rate is not None and 0.0 < rate <= 1.0


def test_counts_recounted(run: Run) -> None:
    ev = run.events
    c = run.truth["counts"]
    assert c["events"] == len(ev)
    assert c["events_by_type"] == ev["type"].value_counts().to_dict()
    assert c["events_by_name"] == ev["event"].value_counts().to_dict()
    assert math.isclose(c["revenue"], ev["revenue"].sum(), abs_tol=0.05)
    assert math.isclose(run.persons["revenue"].sum(), ev["revenue"].sum(), abs_tol=1.0)
    assert c["support_tickets"] == int((ev["event"] == "support_ticket").sum()) > 0
    assert c["referrals_sent"] == int((ev["event"] == "referral_sent").sum()) > 0
    visits = ev[ev["event"] == "visit"]
    ref = visits[visits["touchpoint"] == "referral_link"]
    assert c["referral_visits"] == len(ref)
    # anonymous visits of people who identified later
    roots = stitch(ev)
    person = person_of_rows(visits, roots)
    identified = set(run.persons.loc[run.persons["user_ids"].map(len) > 0, "person_id"])
    later = visits["user_id"].isna() & person.isin(identified)
    assert c["anonymous_visits_later_identified"] == int(later.sum()) > 0


def test_referrals(run: Run) -> None:
    ev = run.events
    ref = ev[(ev["event"] == "visit") & (ev["touchpoint"] == "referral_link")]
    if run.res.scenario == "shop":
        assert len(ref) > 0
    referrers = ref["properties"].map(lambda p: json.loads(p)["referrer_user_id"])
    users = set(ev["user_id"].dropna())
    assert referrers.isin(users).all(), "a referral names an existing user id"
    # the referred human is a different person than the referrer
    roots = stitch(ev)
    assert (referrers.map(roots) != person_of_rows(ref, roots)).all()
    assert run.truth["counts"]["referred_humans"] == int(person_of_rows(ref, roots).nunique())


def test_conversions(run: Run) -> None:
    ev = run.events
    roots = stitch(ev)
    p = run.persons.set_index("person_id")
    if run.res.scenario == "shop":
        n_rev = ev[ev["event"] == "purchase"]
        conv = n_rev[n_rev["properties"].map(lambda x: json.loads(x)["order_number"]) == 1]
    else:
        conv = ev[ev["event"] == "contract_signed"]
        n_rev = ev[ev["event"].isin(["contract_signed", "upsell"])]
    who = person_of_rows(conv, roots)
    assert who.is_unique
    assert run.truth["counts"]["conversions"] == len(conv) == int(p["converted"].sum()) > 0
    assert set(who) == set(p.index[p["converted"]])
    first = conv.groupby(who)["ts"].min()
    assert (p.loc[first.index, "first_purchase_ts"] == first).all()
    assert p.loc[~p["converted"], "first_purchase_ts"].isna().all()
    counts = person_of_rows(n_rev, roots).value_counts()
    assert (p["n_purchases"].reindex(counts.index) == counts).all()
    assert int(p["n_purchases"].sum()) == len(n_rev)


def test_exposed_channels(run: Run) -> None:
    ev = run.events
    roots = stitch(ev)
    kinds = ["visit"] if run.res.scenario == "shop" else ["visit", "trade_fair_visit"]
    vis = ev[ev["event"].isin(kinds)].assign(person=lambda d: person_of_rows(d, roots))
    p = run.persons.set_index("person_id")
    if run.res.scenario == "shop":
        cutoff = vis["person"].map(p["first_purchase_ts"])
    else:
        acc_conv = p.groupby("account_id")["first_purchase_ts"].min()
        cutoff = vis["person"].map(p["account_id"]).map(acc_conv)
    before = vis[cutoff.isna() | (vis["ts"] < cutoff)]
    got = before.groupby("person")["channel"].apply(lambda s: sorted(set(s)))
    want = p["exposed_channels"].map(sorted)
    assert (got.reindex(want.index).map(lambda x: x if isinstance(x, list) else []) == want).all()


def test_costs_match_visits(run: Run) -> None:
    ev = run.events.copy()
    ev["date"] = ev["ts"].dt.strftime("%Y-%m-%d")
    costs = pd.read_csv(run.res.files["costs"])
    key = ["date", "channel", "campaign"]
    visits = ev[(ev["event"] == "visit") & ev["utm_campaign"].notna()].rename(columns={"utm_campaign": "campaign"})
    n_visits = visits.groupby(key).size().rename("visits")
    paid = ["paid_search", "paid_social", "display"]
    online = costs[costs["channel"].isin(paid)]
    online_visits = n_visits[n_visits.index.get_level_values("channel").isin(paid)]
    m = online.merge(online_visits.reset_index(), on=key, how="outer")
    assert m["clicks"].notna().all(), "every paid visit falls on a day with a cost row"
    assert (m["clicks"] == m["visits"].fillna(0)).all(), "clicks == visits per day, channel, campaign"
    assert (online["impressions"] >= online["clicks"]).all()
    camp = run.truth["costs"]["planted_campaigns"]
    for row in online[online["clicks"] > 20].itertuples():
        planted = camp[row.campaign]
        assert row.spend / row.clicks == pytest.approx(planted["cpc"], rel=0.3)
        assert row.clicks / row.impressions == pytest.approx(planted["ctr"], rel=0.1, abs=2e-4)
    # every campaign visit has a cost row; tv, fee and event rows count visits / scans as clicks
    allrows = costs.merge(n_visits.reset_index(), on=key, how="right")
    assert allrows["spend"].notna().all()
    if run.res.scenario == "shop":
        scans = ev[ev["event"] == "qr_scan"].rename(columns={"utm_campaign": "campaign"}).groupby(key).size()
        printed = costs[costs["channel"] == "print"].set_index(key)
        assert (printed["clicks"] == scans.reindex(printed.index).fillna(0)).all()
        assert printed["impressions"].sum() > 0
        vids = ev[(ev["event"] == "video_view") & (ev["touchpoint"] == "social_ad")]
        vids = vids.rename(columns={"utm_campaign": "campaign"}).groupby(key).size()
        social = costs[costs["channel"] == "paid_social"].set_index(key)
        assert (social["video_views"] == vids.reindex(social.index).fillna(0)).all()
    else:
        fairs = ev[ev["event"] == "trade_fair_visit"].rename(columns={"utm_campaign": "campaign"}).groupby(key).size()
        event_rows = costs[costs["channel"] == "event"].set_index(key)
        assert (event_rows["clicks"] == fairs.reindex(event_rows.index).fillna(0)).all()
    realized = run.truth["costs"]["realized"]["per_channel"]
    tot = costs.groupby("channel")[["spend", "clicks"]].sum()
    for ch, r in realized.items():
        assert r["clicks"] == tot.loc[ch, "clicks"]
        assert r["spend"] == pytest.approx(tot.loc[ch, "spend"], abs=0.05)


def test_pain_point(run: Run) -> None:
    ev = run.events
    pp = run.truth["pain_point"]
    roots = stitch(ev)
    person = person_of_rows(ev, roots)
    persona = person.map(run.persons.set_index("person_id")["persona"])
    rows = ev.index[ev["event"] == pp["event"]]
    if run.res.scenario == "shop":
        nxt_event = ev["event"].shift(-1)
        same = person.shift(-1) == person
        abandoned = ~((nxt_event == "checkout_started") & same)
    else:
        touch = ev["type"] == "track"
        last_touch = pd.Series(ev.index[touch], index=ev.index[touch]).groupby(person[touch]).max()
        abandoned = pd.Series(ev.index.to_numpy() == person.map(last_touch).to_numpy(), index=ev.index)
    df = pd.DataFrame({"persona": persona[rows], "abandoned": abandoned[rows]})
    got = df.groupby("persona")["abandoned"].agg(["size", "sum"])
    for k, r in pp["realized"].items():
        if r["events"]:
            assert got.loc[k, "size"] == r["events"] and got.loc[k, "sum"] == r["abandoned"], k
    focus = pp["persona"]
    rate = got["sum"] / got["size"]
    assert rate[focus] > 0.5
    assert (rate.drop(focus) < 0.3).all()


def test_surveys_recounted(run: Run) -> None:
    sv = pd.read_csv(run.res.files["surveys"])
    real = run.truth["surveys"]["realized"]
    for stage, r in real.items():
        s = sv[sv["stage"] == stage]
        assert r["count"] == len(s)
        for kind, k in r["kinds"].items():
            assert k["count"] == int((s["kind"] == kind).sum())
            assert k["mean"] == pytest.approx(s.loc[s["kind"] == kind, "score"].mean(), abs=1e-3)
        assert r["comments"] == int(s["comment"].notna().sum())
    # an emotion curve: low at decision, highest at advocacy (where there are enough answers)
    norm = {s: r["mean_normalized"] for s, r in real.items() if r["count"] >= 8}
    assert norm["decision"] < norm["awareness"]
    if run.res.scenario == "shop":
        assert min(norm, key=lambda s: norm[s]) == "decision"
    if "advocacy" in norm:
        assert max(norm, key=lambda s: norm[s]) == "advocacy"


def test_personas_distinct(run: Run) -> None:
    p = run.persons
    shares = p["persona"].value_counts(normalize=True)
    for k, d in run.truth["personas"].items():
        assert d["realized"]["humans"] == int((p["persona"] == k).sum())
        assert shares[k] == pytest.approx(d["share"], abs=0.08)
    people = pd.read_csv(run.res.files["people"]).merge(p[["person_id", "persona"]],
                                                        left_on="user_id", right_on="person_id")
    ages = people.groupby("persona")["age"].mean().sort_values()
    assert ages.diff().dropna().min() > 2.0, "persona ages differ"
    # traits separate personas: the most common device/role per persona is shared by most of them
    col = "device" if run.res.scenario == "shop" else "role"
    top = people.groupby("persona")[col].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert (top > 0.5).all()


def test_channel_effects_recoverable_shop(shop: Run) -> None:
    """With persona fixed, exposure to a strong channel raises conversion more than a weak one."""
    p = shop.persons[shop.persons["furthest_stage"].isin(["decision", "retention", "advocacy"])]
    eff = shop.truth["channel_effects"]["effects"]

    def lift(ch: str) -> float:
        exposed = p["exposed_channels"].map(lambda c: ch in c)
        return float(p.loc[exposed, "converted"].mean() - p.loc[~exposed, "converted"].mean())

    strong = [c for c in ("email", "paid_search", "organic_search") if eff[c] > 1.0]
    weak = [c for c in ("display", "paid_social") if eff[c] < 0.3]
    assert np.mean([lift(c) for c in strong]) > np.mean([lift(c) for c in weak])
