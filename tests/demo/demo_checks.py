"""By-hand checks for the demo generator tests (imported by conftest.py and the tests).

The checks in this folder re-derive the truth from the written files with
pandas, independently of the generator's own bookkeeping: the stage rules and
the identity stitching are written out again here, from the specification in
docs/demo.md, and never imported from ``journeylens.demo``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from journeylens.demo import DemoResult

SHOP_PEOPLE = 1500
B2B_PEOPLE = 1500

# the default models' stage of every touch event (docs/demo.md)
SHOP_STAGES = ("awareness", "consideration", "decision", "retention", "advocacy")
SHOP_RULES: dict[str, str] = {
    "visit": "awareness", "video_view": "awareness", "qr_scan": "awareness", "blog_read": "awareness",
    "product_view": "consideration", "review_read": "consideration",
    "newsletter_signup": "consideration", "signup": "consideration", "store_visit": "consideration",
    "add_to_cart": "decision", "shipping_costs_viewed": "decision", "checkout_started": "decision",
    "newsletter_open": "retention", "support_ticket": "retention", "login": "retention",
    "review_written": "advocacy", "referral_sent": "advocacy", "social_share": "advocacy",
}
B2B_STAGES = ("awareness", "consideration", "decision", "onboarding", "advocacy")
B2B_RULES: dict[str, str] = {
    "visit": "awareness", "blog_read": "awareness", "trade_fair_visit": "awareness",
    "whitepaper_download": "consideration", "webinar_attended": "consideration",
    "pricing_view": "consideration", "review_read": "consideration", "case_study_view": "consideration",
    "demo_requested": "consideration", "sales_call": "consideration",
    "trial_started": "decision", "proposal_sent": "decision", "contract_signed": "decision",
    "onboarding_session": "onboarding", "feature_used": "onboarding", "login": "onboarding",
    "support_ticket": "onboarding", "renewal": "onboarding", "upsell": "onboarding",
    "review_written": "advocacy", "referral_sent": "advocacy", "case_study_participation": "advocacy",
}


@dataclass
class Run:
    res: DemoResult
    events: pd.DataFrame
    truth: dict[str, Any]
    persons: pd.DataFrame

    @property
    def dir(self) -> Path:
        return self.res.out_dir


def load(res: DemoResult) -> Run:
    events = pd.read_parquet(res.files["events"])
    truth = json.loads(res.files["truth"].read_text(encoding="utf-8"))
    persons = pd.read_parquet(res.files["truth_persons"])
    return Run(res=res, events=events, truth=truth, persons=persons)


# ----------------------------------------------------------------------------- by-hand logic


def stitch(events: pd.DataFrame) -> dict[str, str]:
    """Every id -> its person's root id, by hand: identify rows and rows carrying both ids link an
    anonymous id to a user id, alias rows link previous_id to user_id. The root is the end of the
    alias chain (the user id that never became a previous id), else the user id, else the
    anonymous id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb

    for col in ("anonymous_id", "user_id", "previous_id"):
        for v in events[col].dropna().unique():
            find(v)
    both = events.dropna(subset=["anonymous_id", "user_id"])
    for a, u in zip(both["anonymous_id"], both["user_id"], strict=True):
        union(a, u)
    alias = events[events["type"] == "alias"]
    for p, u in zip(alias["previous_id"], alias["user_id"], strict=True):
        union(p, u)
    previous = set(alias["previous_id"])
    users = set(events["user_id"].dropna())
    members: dict[str, list[str]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    out: dict[str, str] = {}
    for ids in members.values():
        ends = [i for i in ids if i in users and i not in previous]
        if ends:
            assert len(ends) == 1, f"ambiguous root in {sorted(ids)}"
            root = ends[0]
        else:
            assert len(ids) == 1, f"anonymous person with several ids {ids}"
            root = ids[0]
        for i in ids:
            out[i] = root
    return out


def person_of_rows(events: pd.DataFrame, roots: dict[str, str]) -> pd.Series:
    key = events["user_id"].fillna(events["anonymous_id"])
    return key.map(roots)


def stage_of_rows(events: pd.DataFrame, scenario: str) -> pd.Series:
    rules = SHOP_RULES if scenario == "shop" else B2B_RULES
    stage = events["event"].map(rules)
    if scenario == "shop":
        purchase = events["event"] == "purchase"
        order = events.loc[purchase, "properties"].map(lambda p: json.loads(p)["order_number"])
        stage.loc[purchase] = order.map(lambda n: "decision" if n == 1 else "retention")
    stage[events["type"] != "track"] = None
    return stage
