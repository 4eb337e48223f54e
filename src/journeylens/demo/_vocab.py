"""Fixed vocabularies of the demo generator: event codes, touchpoints, channels.

The simulation works on small integer codes; names only appear when a batch is
turned into an Arrow table. Two internal codes may share one public event name
(``purchase`` is split into the first and the repeat purchase so that the stage
of a row can be looked up from its code alone).
"""

from __future__ import annotations

# --- touchpoints (keys of journey/catalog.yaml) and their catalog channel -------------------
TOUCHPOINT_CHANNEL: dict[str, str] = {
    "search_ad": "paid_search",
    "social_ad": "paid_social",
    "display_ad": "display",
    "organic_search": "organic_search",
    "social_media": "social",
    "influencer": "influencer",
    "blog": "organic_search",
    "youtube": "social",
    "newsletter": "email",
    "welcome_email": "email",
    "flyer_qr": "print",
    "poster_qr": "print",
    "tv_spot": "tv_radio",
    "trade_fair": "event",
    "webinar": "event",
    "referral_link": "referral",
    "partner_site": "partner",
    "review_portal": "review_site",
    "website": "direct",
    "online_shop": "direct",
    "store": "store",
    "sales_team": "sales",
    "support": "support",
    "product": "direct",
    "onboarding": "direct",
    "renewal": "direct",
}
"""Touchpoint → channel, exactly as in the built-in catalog (a test keeps them in sync)."""

TOUCHPOINTS: tuple[str, ...] = tuple(TOUCHPOINT_CHANNEL)
TP: dict[str, int] = {k: i for i, k in enumerate(TOUCHPOINTS)}

CHANNELS: tuple[str, ...] = tuple(dict.fromkeys(TOUCHPOINT_CHANNEL.values()))
CH: dict[str, int] = {k: i for i, k in enumerate(CHANNELS)}

TP_CH: list[int] = [CH[TOUCHPOINT_CHANNEL[t]] for t in TOUCHPOINTS]
"""Channel code of each touchpoint code."""

# --- message types ---------------------------------------------------------------------------
TYPES: tuple[str, ...] = ("track", "identify", "alias", "group")
T_TRACK, T_IDENTIFY, T_ALIAS, T_GROUP = range(4)

# --- events: internal code -> (public name, message type) ------------------------------------
_EVENT_DEFS: tuple[tuple[str, str, int], ...] = (
    # (internal key, public event name, type code)
    ("identify", "identify", T_IDENTIFY),
    ("alias", "alias", T_ALIAS),
    ("group", "group", T_GROUP),
    # shared / shop
    ("visit", "visit", T_TRACK),
    ("video_view", "video_view", T_TRACK),
    ("qr_scan", "qr_scan", T_TRACK),
    ("blog_read", "blog_read", T_TRACK),
    ("product_view", "product_view", T_TRACK),
    ("review_read", "review_read", T_TRACK),
    ("newsletter_signup", "newsletter_signup", T_TRACK),
    ("signup", "signup", T_TRACK),
    ("store_visit", "store_visit", T_TRACK),
    ("add_to_cart", "add_to_cart", T_TRACK),
    ("shipping_costs_viewed", "shipping_costs_viewed", T_TRACK),
    ("checkout_started", "checkout_started", T_TRACK),
    ("purchase_first", "purchase", T_TRACK),
    ("purchase_repeat", "purchase", T_TRACK),
    ("newsletter_open", "newsletter_open", T_TRACK),
    ("support_ticket", "support_ticket", T_TRACK),
    ("login", "login", T_TRACK),
    ("review_written", "review_written", T_TRACK),
    ("referral_sent", "referral_sent", T_TRACK),
    ("social_share", "social_share", T_TRACK),
    # b2b
    ("trade_fair_visit", "trade_fair_visit", T_TRACK),
    ("whitepaper_download", "whitepaper_download", T_TRACK),
    ("webinar_attended", "webinar_attended", T_TRACK),
    ("pricing_view", "pricing_view", T_TRACK),
    ("case_study_view", "case_study_view", T_TRACK),
    ("demo_requested", "demo_requested", T_TRACK),
    ("sales_call", "sales_call", T_TRACK),
    ("trial_started", "trial_started", T_TRACK),
    ("proposal_sent", "proposal_sent", T_TRACK),
    ("contract_signed", "contract_signed", T_TRACK),
    ("onboarding_session", "onboarding_session", T_TRACK),
    ("feature_used", "feature_used", T_TRACK),
    ("renewal", "renewal", T_TRACK),
    ("upsell", "upsell", T_TRACK),
    ("case_study_participation", "case_study_participation", T_TRACK),
)

EVENT_KEYS: tuple[str, ...] = tuple(d[0] for d in _EVENT_DEFS)
EVENT_NAMES: tuple[str, ...] = tuple(d[1] for d in _EVENT_DEFS)
EVENT_TYPES: tuple[int, ...] = tuple(d[2] for d in _EVENT_DEFS)
EV: dict[str, int] = {k: i for i, k in enumerate(EVENT_KEYS)}

E_IDENTIFY = EV["identify"]
E_ALIAS = EV["alias"]
E_GROUP = EV["group"]
E_VISIT = EV["visit"]
E_VIDEO = EV["video_view"]
E_QR = EV["qr_scan"]
E_PURCHASE1 = EV["purchase_first"]
E_PURCHASE2 = EV["purchase_repeat"]
E_SHIPPING = EV["shipping_costs_viewed"]
E_CHECKOUT = EV["checkout_started"]
E_CONTRACT = EV["contract_signed"]
E_UPSELL = EV["upsell"]
E_TRADE_FAIR = EV["trade_fair_visit"]
E_REFERRAL_SENT = EV["referral_sent"]
E_SUPPORT = EV["support_ticket"]
E_STORE = EV["store_visit"]

# --- journey models ------------------------------------------------------------------------
FIVE_PHASE: tuple[str, ...] = ("awareness", "consideration", "decision", "retention", "advocacy")
B2B_STAGES: tuple[str, ...] = ("awareness", "consideration", "decision", "onboarding", "advocacy")

SHOP_STAGE_OF: dict[str, str] = {
    "visit": "awareness",
    "video_view": "awareness",
    "qr_scan": "awareness",
    "blog_read": "awareness",
    "product_view": "consideration",
    "review_read": "consideration",
    "newsletter_signup": "consideration",
    "signup": "consideration",
    "store_visit": "consideration",
    "add_to_cart": "decision",
    "shipping_costs_viewed": "decision",
    "checkout_started": "decision",
    "purchase_first": "decision",
    "purchase_repeat": "retention",
    "newsletter_open": "retention",
    "support_ticket": "retention",
    "login": "retention",
    "review_written": "advocacy",
    "referral_sent": "advocacy",
    "social_share": "advocacy",
}
"""five_phase stage of every shop event (internal key)."""

B2B_STAGE_OF: dict[str, str] = {
    "visit": "awareness",
    "blog_read": "awareness",
    "trade_fair_visit": "awareness",
    "whitepaper_download": "consideration",
    "webinar_attended": "consideration",
    "pricing_view": "consideration",
    "review_read": "consideration",
    "case_study_view": "consideration",
    "demo_requested": "consideration",
    "sales_call": "consideration",
    "trial_started": "decision",
    "proposal_sent": "decision",
    "contract_signed": "decision",
    "onboarding_session": "onboarding",
    "feature_used": "onboarding",
    "login": "onboarding",
    "support_ticket": "onboarding",
    "renewal": "onboarding",
    "upsell": "onboarding",
    "review_written": "advocacy",
    "referral_sent": "advocacy",
    "case_study_participation": "advocacy",
}
"""b2b stage of every b2b event (internal key)."""


def stage_table(stages: tuple[str, ...], stage_of: dict[str, str]) -> list[int]:
    """Stage index per internal event code (-1 for identity messages and foreign events)."""
    idx = {s: i for i, s in enumerate(stages)}
    return [idx[stage_of[k]] if k in stage_of else -1 for k in EVENT_KEYS]
