"""The demo event vocabulary and the stages the project brief assigns to it.

The expected stages are copied from the brief's vocabulary tables (shop:
five_phase stage of each event; B2B: b2b-model stage), never from running
the code. ``label`` is how the event is written in docs/models.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis.expr.types as ir
import pyarrow as pa

from journeylens.journey import JourneyModel, assign_stages, load_catalog
from tests.helpers import events_table


@dataclass(frozen=True)
class DemoTouch:
    label: str
    event: str
    touchpoint: str
    expected: str
    properties: dict[str, object] = field(default_factory=dict)
    type: str = "track"


FIRST_PURCHASE = "purchase (order 1)"
REPEAT_PURCHASE = "purchase (order ≥ 2)"

SHOP_VISIT_TOUCHPOINTS = (
    "search_ad", "social_ad", "display_ad", "organic_search", "social_media", "influencer",
    "newsletter", "flyer_qr", "poster_qr", "tv_spot", "referral_link", "website",
)  # fmt: skip

# Shop scenario, five_phase stage of each event (from the brief).
SHOP: tuple[DemoTouch, ...] = (
    *(DemoTouch("visit", "visit", tp, "awareness", type="page") for tp in SHOP_VISIT_TOUCHPOINTS),
    DemoTouch("video_view", "video_view", "youtube", "awareness"),
    DemoTouch("qr_scan", "qr_scan", "poster_qr", "awareness"),
    DemoTouch("blog_read", "blog_read", "blog", "awareness", type="page"),
    DemoTouch("product_view", "product_view", "online_shop", "consideration", {"sku": "A-1"}),
    DemoTouch("review_read", "review_read", "review_portal", "consideration"),
    DemoTouch("newsletter_signup", "newsletter_signup", "website", "consideration"),
    DemoTouch("signup", "signup", "online_shop", "consideration"),
    DemoTouch("store_visit", "store_visit", "store", "consideration"),
    DemoTouch(
        "add_to_cart", "add_to_cart", "online_shop", "decision", {"sku": "A-1", "price": 19.9}
    ),
    DemoTouch("shipping_costs_viewed", "shipping_costs_viewed", "online_shop", "decision"),
    DemoTouch("checkout_started", "checkout_started", "online_shop", "decision"),
    DemoTouch(
        FIRST_PURCHASE, "purchase", "online_shop", "decision", {"order_number": 1, "total": 39.8}
    ),
    DemoTouch(
        REPEAT_PURCHASE, "purchase", "online_shop", "retention", {"order_number": 2, "total": 12.0}
    ),
    DemoTouch(REPEAT_PURCHASE, "purchase", "store", "retention", {"order_number": 7}),
    DemoTouch("newsletter_open", "newsletter_open", "newsletter", "retention"),
    DemoTouch("support_ticket", "support_ticket", "support", "retention"),
    DemoTouch("login", "login", "online_shop", "retention"),
    DemoTouch("review_written", "review_written", "review_portal", "advocacy", {"rating": 5}),
    DemoTouch("referral_sent", "referral_sent", "referral_link", "advocacy"),
    DemoTouch("social_share", "social_share", "social_media", "advocacy"),
)

# B2B scenario, b2b-model stage of each event (from the brief).
B2B: tuple[DemoTouch, ...] = (
    DemoTouch("visit", "visit", "search_ad", "awareness", type="page"),
    DemoTouch("visit", "visit", "website", "awareness", type="page"),
    DemoTouch("visit", "visit", "partner_site", "awareness", type="page"),
    DemoTouch("blog_read", "blog_read", "blog", "awareness", type="page"),
    DemoTouch("trade_fair_visit", "trade_fair_visit", "trade_fair", "awareness"),
    DemoTouch("whitepaper_download", "whitepaper_download", "website", "consideration"),
    DemoTouch("webinar_attended", "webinar_attended", "webinar", "consideration"),
    DemoTouch("pricing_view", "pricing_view", "website", "consideration", type="page"),
    DemoTouch("review_read", "review_read", "review_portal", "consideration"),
    DemoTouch("case_study_view", "case_study_view", "website", "consideration"),
    DemoTouch("demo_requested", "demo_requested", "website", "consideration"),
    DemoTouch("sales_call", "sales_call", "sales_team", "consideration"),
    DemoTouch("trial_started", "trial_started", "product", "decision"),
    DemoTouch("proposal_sent", "proposal_sent", "sales_team", "decision", {"amount": 24000}),
    DemoTouch("contract_signed", "contract_signed", "sales_team", "decision", {"seats": 40}),
    DemoTouch("onboarding_session", "onboarding_session", "onboarding", "onboarding"),
    DemoTouch("feature_used", "feature_used", "product", "onboarding", {"feature": "reports"}),
    DemoTouch("login", "login", "product", "onboarding"),
    DemoTouch("support_ticket", "support_ticket", "support", "onboarding"),
    DemoTouch("renewal", "renewal", "renewal", "onboarding"),
    DemoTouch("upsell", "upsell", "sales_team", "onboarding"),
    DemoTouch("review_written", "review_written", "review_portal", "advocacy"),
    DemoTouch("referral_sent", "referral_sent", "referral_link", "advocacy"),
    DemoTouch("case_study_participation", "case_study_participation", "sales_team", "advocacy"),
)

VOCABULARIES = {"shop": SHOP, "b2b": B2B}


def vocabulary_table(touches: Sequence[DemoTouch]) -> pa.Table:
    """One canonical events row per demo touch (channel from the built-in catalog)."""
    catalog = load_catalog()
    return events_table(
        [
            {
                "type": t.type,
                "event": t.event,
                "touchpoint": t.touchpoint,
                "channel": catalog[t.touchpoint].channel,
                "properties": t.properties,
                "revenue": t.properties.get("total"),
            }
            for t in touches
        ]
    )


def run_stages(con: Any, table: ir.Table, model: JourneyModel) -> list[str | None]:
    """The stage of every row of ``table``, in message_id order."""
    result = con.to_pyarrow(assign_stages(table, model).order_by("message_id"))
    return list(result.column("stage").to_pylist())
