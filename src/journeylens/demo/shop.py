"""The B2C online-shop scenario: planted parameters and the per-person simulation.

Every number a later analysis is tested against is declared here, in the
module-level constants, and copied into ``truth.json`` by the generator.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from journeylens.demo import _vocab as V
from journeylens.demo._campaigns import Campaign, CampaignTable
from journeylens.demo._random import Rand, block_generator, cumulative, scramble, sigmoid
from journeylens.demo._sim import (
    DAY,
    HOUR_CUM,
    K_CES,
    K_CSAT,
    K_NPS,
    BaseSim,
    Human,
    SurveyPlan,
)
from journeylens.demo._truth import PersonFacts, Tally, TruthSpec

# ----------------------------------------------------------------------------- personas


@dataclass(frozen=True)
class ShopPersona:
    key: str
    description: str
    share: float
    # traits (people.csv / identify traits)
    age: tuple[float, float, int, int]
    """mean, sd, min, max"""
    gender: dict[str, float]
    income_band: dict[str, float]
    device: dict[str, float]
    cities: tuple[str, ...]
    """Home cities: 85% of the persona live in one of them, the rest anywhere."""
    interests: tuple[str, ...]
    # behaviour
    channel_mix: dict[str, float]
    """Visit source touchpoint -> weight; each person's own mix is Dirichlet around it."""
    mix_concentration: float
    hours: str
    gap_days: float
    """Mean days between two sessions."""
    awareness_sessions: float
    """Mean number of extra awareness-only sessions before consideration (1 + Poisson)."""
    video_rate: float
    youtube_share: float
    blog_rate: float
    p_consider: float
    consider_sessions: float
    """Mean number of extra consideration sessions (1 + Poisson)."""
    depth: float
    """Mean product views per consideration session."""
    p_backtrack: float
    """Chance that a consideration session is preceded by an awareness-only session."""
    p_review_read: float
    p_store: float
    p_newsletter_signup: float
    p_signup: float
    p_decide: float
    base_logit: float
    """Log-odds of the first purchase given decision before channel effects."""
    abandon_after_shipping: float
    retries: float
    """Mean extra cart attempts of people who do not convert."""
    p_retain: float
    repurchases: float
    interpurchase_days: float
    p_newsletter_open: float
    p_support: float
    p_login: float
    p_advocate: float
    p_review_written: float
    p_referral: float
    p_social_share: float
    price_sensitivity: float
    """Within a category, a product is chosen with weight price ** -price_sensitivity."""
    categories: dict[str, float]


BIG_CITIES = ("Berlin", "Hamburg", "Köln", "München", "Frankfurt am Main")
MID_CITIES = ("Hannover", "Nürnberg", "Bremen", "Dresden", "Leipzig", "Dortmund")
UNI_CITIES = ("Heidelberg", "Freiburg", "Münster", "Aachen", "Göttingen", "Tübingen")
SMALL_TOWNS = ("Lüneburg", "Celle", "Bamberg", "Passau", "Rosenheim", "Kempten")
LIFESTYLE_CITIES = ("Düsseldorf", "Stuttgart", "Mannheim", "Wiesbaden", "Karlsruhe")
ALL_CITIES = BIG_CITIES + MID_CITIES + UNI_CITIES + SMALL_TOWNS + LIFESTYLE_CITIES

PERSONAS: tuple[ShopPersona, ...] = (
    ShopPersona(
        key="bargain_hunter",
        description="Young, low income, mobile, big city; comes through ads, compares a lot, "
        "abandons the cart when shipping costs appear, rarely buys again.",
        share=0.26,
        age=(24.0, 3.0, 18, 33), gender={"f": 0.52, "m": 0.45, "d": 0.03},
        income_band={"low": 0.78, "mid": 0.2, "high": 0.02},
        device={"mobile": 0.86, "desktop": 0.09, "tablet": 0.05},
        cities=BIG_CITIES, interests=("deals", "sneakers", "gaming", "streetwear"),
        channel_mix={"search_ad": 0.2, "social_ad": 0.22, "display_ad": 0.16, "organic_search": 0.1,
                     "social_media": 0.08, "influencer": 0.1, "flyer_qr": 0.04, "poster_qr": 0.03,
                     "tv_spot": 0.02, "website": 0.05},
        mix_concentration=6.0, hours="late", gap_days=3.0, awareness_sessions=1.5,
        video_rate=0.1, youtube_share=0.3, blog_rate=0.05,
        p_consider=0.75, consider_sessions=2.0, depth=3.5, p_backtrack=0.35, p_review_read=0.25,
        p_store=0.0, p_newsletter_signup=0.12, p_signup=0.08,
        p_decide=0.65, base_logit=-2.6, abandon_after_shipping=0.70, retries=1.0,
        p_retain=0.35, repurchases=0.6, interpurchase_days=45.0, p_newsletter_open=0.15,
        p_support=0.06, p_login=0.3,
        p_advocate=0.15, p_review_written=0.4, p_referral=0.5, p_social_share=0.5,
        price_sensitivity=2.0,
        categories={"sneakers": 0.35, "jackets": 0.2, "gadgets": 0.3, "backpacks": 0.15},
    ),
    ShopPersona(
        key="loyal_regular",
        description="Middle-aged, mid to high income, desktop, mid-size city; comes directly or via "
        "the newsletter, buys fast and again and again, recommends the shop.",
        share=0.20,
        age=(47.0, 4.5, 36, 62), gender={"f": 0.6, "m": 0.38, "d": 0.02},
        income_band={"low": 0.04, "mid": 0.46, "high": 0.45, "very_high": 0.05},
        device={"desktop": 0.6, "mobile": 0.3, "tablet": 0.1},
        cities=MID_CITIES, interests=("home", "cooking", "garden", "family"),
        channel_mix={"website": 0.32, "organic_search": 0.2, "search_ad": 0.14, "social_media": 0.1,
                     "display_ad": 0.05, "social_ad": 0.05, "poster_qr": 0.04, "tv_spot": 0.05,
                     "flyer_qr": 0.05},
        mix_concentration=8.0, hours="evening", gap_days=5.0, awareness_sessions=0.5,
        video_rate=0.05, youtube_share=0.5, blog_rate=0.1,
        p_consider=0.85, consider_sessions=1.0, depth=2.0, p_backtrack=0.2, p_review_read=0.15,
        p_store=0.05, p_newsletter_signup=0.45, p_signup=0.4,
        p_decide=0.75, base_logit=-1.0, abandon_after_shipping=0.12, retries=0.8,
        p_retain=0.85, repurchases=3.0, interpurchase_days=24.0, p_newsletter_open=0.45,
        p_support=0.1, p_login=0.6,
        p_advocate=0.55, p_review_written=0.6, p_referral=0.5, p_social_share=0.3,
        price_sensitivity=0.3,
        categories={"home": 0.35, "kitchen": 0.35, "jackets": 0.15, "backpacks": 0.15},
    ),
    ShopPersona(
        key="researcher",
        description="30s to 40s, high income, desktop, university town; organic search, blog and "
        "videos, reads reviews, many product views over weeks before buying expensive items.",
        share=0.20,
        age=(37.0, 3.5, 28, 49), gender={"f": 0.4, "m": 0.57, "d": 0.03},
        income_band={"mid": 0.1, "high": 0.6, "very_high": 0.3},
        device={"desktop": 0.82, "mobile": 0.1, "tablet": 0.08},
        cities=UNI_CITIES, interests=("technology", "outdoor", "photography", "product_tests"),
        channel_mix={"organic_search": 0.38, "search_ad": 0.14, "website": 0.14, "social_media": 0.06,
                     "display_ad": 0.05, "influencer": 0.07, "social_ad": 0.06, "tv_spot": 0.02,
                     "poster_qr": 0.02},
        mix_concentration=8.0, hours="office", gap_days=6.0, awareness_sessions=2.0,
        video_rate=0.25, youtube_share=0.9, blog_rate=0.45,
        p_consider=0.85, consider_sessions=3.5, depth=5.0, p_backtrack=0.45, p_review_read=0.8,
        p_store=0.05, p_newsletter_signup=0.1, p_signup=0.1,
        p_decide=0.5, base_logit=-2.2, abandon_after_shipping=0.15, retries=1.2,
        p_retain=0.5, repurchases=0.9, interpurchase_days=55.0, p_newsletter_open=0.25,
        p_support=0.15, p_login=0.4,
        p_advocate=0.45, p_review_written=0.8, p_referral=0.3, p_social_share=0.2,
        price_sensitivity=-1.0,
        categories={"gadgets": 0.45, "backpacks": 0.25, "jackets": 0.2, "kitchen": 0.1},
    ),
    ShopPersona(
        key="offline_traditional",
        description="60+, mid income, tablet, small town; reached by flyers, posters and TV "
        "(QR codes, vanity links), visits the store, slow, asks customer service.",
        share=0.14,
        age=(66.0, 5.0, 56, 84), gender={"f": 0.55, "m": 0.45},
        income_band={"low": 0.2, "mid": 0.62, "high": 0.18},
        device={"tablet": 0.62, "desktop": 0.3, "mobile": 0.08},
        cities=SMALL_TOWNS, interests=("gardening", "travel", "books", "local_news"),
        channel_mix={"flyer_qr": 0.28, "poster_qr": 0.16, "tv_spot": 0.2, "website": 0.14,
                     "organic_search": 0.1, "search_ad": 0.08, "display_ad": 0.04},
        mix_concentration=6.0, hours="morning", gap_days=8.0, awareness_sessions=1.0,
        video_rate=0.02, youtube_share=1.0, blog_rate=0.02,
        p_consider=0.7, consider_sessions=1.5, depth=2.0, p_backtrack=0.3, p_review_read=0.1,
        p_store=0.55, p_newsletter_signup=0.15, p_signup=0.15,
        p_decide=0.55, base_logit=-1.6, abandon_after_shipping=0.15, retries=0.7,
        p_retain=0.6, repurchases=1.4, interpurchase_days=40.0, p_newsletter_open=0.35,
        p_support=0.3, p_login=0.2,
        p_advocate=0.2, p_review_written=0.5, p_referral=0.3, p_social_share=0.05,
        price_sensitivity=0.8,
        categories={"home": 0.4, "kitchen": 0.3, "jackets": 0.2, "backpacks": 0.1},
    ),
    ShopPersona(
        key="impulse_buyer",
        description="Late 20s, mid income, mobile, lifestyle city; social ads, influencers and "
        "videos, decides within a day, shares on social media, seldom buys again.",
        share=0.20,
        age=(29.0, 2.5, 22, 36), gender={"f": 0.68, "m": 0.3, "d": 0.02},
        income_band={"low": 0.12, "mid": 0.74, "high": 0.14},
        device={"mobile": 0.9, "tablet": 0.06, "desktop": 0.04},
        cities=LIFESTYLE_CITIES, interests=("beauty", "lifestyle", "fitness", "fashion"),
        channel_mix={"social_ad": 0.3, "influencer": 0.22, "social_media": 0.18, "display_ad": 0.08,
                     "search_ad": 0.07, "organic_search": 0.05, "website": 0.06, "poster_qr": 0.02,
                     "tv_spot": 0.02},
        mix_concentration=6.0, hours="late", gap_days=1.5, awareness_sessions=0.3,
        video_rate=0.3, youtube_share=0.1, blog_rate=0.02,
        p_consider=0.8, consider_sessions=0.3, depth=1.5, p_backtrack=0.1, p_review_read=0.05,
        p_store=0.0, p_newsletter_signup=0.08, p_signup=0.15,
        p_decide=0.75, base_logit=-0.8, abandon_after_shipping=0.18, retries=0.3,
        p_retain=0.3, repurchases=0.5, interpurchase_days=60.0, p_newsletter_open=0.1,
        p_support=0.08, p_login=0.2,
        p_advocate=0.25, p_review_written=0.3, p_referral=0.3, p_social_share=0.8,
        price_sensitivity=0.5,
        categories={"jackets": 0.35, "sneakers": 0.35, "home": 0.3},
    ),
)
PERSONA_KEYS = tuple(p.key for p in PERSONAS)

CHANNEL_EFFECTS: dict[str, float] = {
    "referral": 1.8,
    "email": 1.5,
    "paid_search": 1.3,
    "organic_search": 1.15,
    "influencer": 1.0,
    "print": 0.85,
    "direct": 0.7,
    "tv_radio": 0.55,
    "social": 0.4,
    "paid_social": 0.2,
    "display": 0.0,
}
"""Planted log-odds increment on P(first purchase | decision) per channel the person had a
visit from before reaching decision (each channel counted once)."""

SOURCES: tuple[str, ...] = (
    "search_ad", "social_ad", "display_ad", "organic_search", "social_media", "influencer",
    "flyer_qr", "poster_qr", "tv_spot", "website",
)
"""Visit sources a person's own mix draws from (newsletter and referral visits come from
subscriptions and referrals)."""

# identity
P_SECOND_DEVICE = 0.3
"""Share of people who start using a second device once identified (the next session after
identification is on it; later sessions use it 40% of the time)."""
P_ALIAS = 0.05
P_ALIAS_CHAIN = 0.35
P_ALIAS_PER_SESSION = 0.4
P_TAKE_REFERRAL = 0.8
P_REFERRAL_SUCCESS = 0.6
MAX_ATTEMPTS_CONVERTER = 8
P_EXIT_SURVEY = 0.12
P_NEWSLETTER_VISIT = 0.3
"""Share of a subscriber's sessions that start with a newsletter click-through."""

# ----------------------------------------------------------------------------- campaigns

CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("search_brand", "search_ad", "google", "cpc", (0.0, 1.0), 0.5, "online", cpc=0.35, ctr=0.08),
    Campaign("search_generic", "search_ad", "google", "cpc", (0.0, 1.0), 0.35, "online", cpc=0.85, ctr=0.03),
    Campaign("search_spring_sale", "search_ad", "google", "cpc", (0.3, 0.5), 0.4, "online", cpc=0.6, ctr=0.05),
    Campaign("social_prospecting", "social_ad", "instagram", "paid_social", (0.0, 1.0), 0.5, "online", cpc=0.6, ctr=0.012),
    Campaign("social_retargeting", "social_ad", "facebook", "paid_social", (0.0, 1.0), 0.3, "online", cpc=0.45, ctr=0.02),
    Campaign("social_video", "social_ad", "instagram", "paid_social", (0.1, 0.6), 0.4, "online", cpc=0.5, ctr=0.008),
    Campaign("display_prospecting", "display_ad", "gdn", "display", (0.0, 1.0), 0.6, "online", cpc=0.25, ctr=0.0025),
    Campaign("display_retargeting", "display_ad", "gdn", "display", (0.0, 1.0), 0.4, "online", cpc=0.4, ctr=0.006),
    Campaign("newsletter_weekly", "newsletter", "newsletter", "email", (0.0, 1.0), 0.8, "fee", cpc=120.0, fee_every=7),
    Campaign("newsletter_sale", "newsletter", "newsletter", "email", (0.3, 0.5), 0.5, "fee", cpc=60.0, fee_every=7),
    Campaign("influencer_lena", "influencer", "instagram", "influencer", (0.05, 0.45), 0.6, "fee", cpc=900.0, fee_every=14),
    Campaign("influencer_max", "influencer", "youtube", "influencer", (0.4, 0.95), 0.4, "fee", cpc=1500.0, fee_every=21),
    Campaign("flyer_spring", "flyer_qr", "flyer", "print", (0.05, 0.3), 0.6, "print", cpc=0.12, volume=60000),
    Campaign("flyer_autumn", "flyer_qr", "flyer", "print", (0.55, 0.8), 0.4, "print", cpc=0.12, volume=50000),
    Campaign("poster_city", "poster_qr", "poster", "print", (0.15, 0.6), 1.0, "print", cpc=2.5, volume=1200),
    Campaign("tv_spring", "tv_spot", "tv", "offline", (0.12, 0.3), 0.5, "tv", cpc=4500.0, volume=250000),
    Campaign("tv_autumn", "tv_spot", "tv", "offline", (0.6, 0.78), 0.5, "tv", cpc=5200.0, volume=280000),
)

# ----------------------------------------------------------------------------- surveys

SURVEY = SurveyPlan(
    stages=V.FIVE_PHASE,
    levels={"awareness": 0.68, "consideration": 0.62, "decision": 0.4, "retention": 0.7, "advocacy": 0.88},
    persona_offsets={"bargain_hunter": {"decision": -0.15}},
    themes={
        "awareness": {"usability": 0.4, "price": 0.3, "product_quality": 0.2, "delivery_speed": 0.1},
        "consideration": {"product_quality": 0.35, "usability": 0.3, "price": 0.25, "shipping_costs": 0.1},
        "decision": {"shipping_costs": 0.45, "price": 0.25, "usability": 0.2, "delivery_speed": 0.1},
        "retention": {"delivery_speed": 0.3, "customer_service": 0.3, "product_quality": 0.3, "price": 0.1},
        "advocacy": {"product_quality": 0.45, "customer_service": 0.25, "delivery_speed": 0.2, "price": 0.1},
    },
    languages={"de": 0.6, "en": 0.4},
    comment_rate=0.55,
)

# ----------------------------------------------------------------------------- catalog & urls

CATEGORIES = ("sneakers", "jackets", "backpacks", "home", "kitchen", "gadgets")
PRODUCTS: tuple[tuple[str, str, str, float], ...] = tuple(
    (f"P{ci * 5 + j + 1:03d}", f"{cat}-{name}", cat, price)
    for ci, (cat, items) in enumerate((
        ("sneakers", (("runner", 59.9), ("court", 79.9), ("trail", 99.9), ("retro", 69.9), ("canvas", 39.9))),
        ("jackets", (("rain", 89.9), ("down", 179.0), ("softshell", 119.0), ("denim", 69.9), ("fleece", 49.9))),
        ("backpacks", (("daypack", 49.9), ("commuter", 89.9), ("hiking", 139.0), ("kids", 29.9), ("laptop", 69.9))),
        ("home", (("blanket", 39.9), ("lamp", 59.9), ("cushion", 19.9), ("vase", 24.9), ("rug", 129.0))),
        ("kitchen", (("knife", 49.9), ("pan", 69.9), ("kettle", 39.9), ("grinder", 89.9), ("mug-set", 24.9))),
        ("gadgets", (("earbuds", 79.9), ("powerbank", 29.9), ("watch", 199.0), ("speaker", 99.9), ("camera", 349.0))),
    ))
    for j, (name, price) in enumerate(items)
)
BLOG_ARTICLES = ("how-to-choose-running-shoes", "packing-list-hiking", "cozy-home-ideas",
                 "best-gadgets-2026", "jacket-care-guide", "kitchen-basics")
VIDEOS = ("spring-collection", "unboxing-camera", "how-we-make-jackets", "customer-stories")
STORES = ("Lüneburg", "Bamberg", "Hannover", "Berlin Mitte", "Kempten")
SUPPORT_TOPICS = ("delivery", "return", "payment", "product_defect", "invoice")
SHARE_NETWORKS = ("instagram", "facebook", "pinterest", "whatsapp")
SHIPPING_COST = 4.95
FREE_SHIPPING_FROM = 60.0

SITE = "https://shop.example.com"


class _Urls:
    def __init__(self) -> None:
        self.urls: list[str] = []
        self.code: dict[str, int] = {}

    def add(self, url: str) -> int:
        if url not in self.code:
            self.code[url] = len(self.urls)
            self.urls.append(url)
        return self.code[url]


REFERRERS: dict[str, str] = {
    "search_ad": "https://www.google.com/",
    "organic_search": "https://www.google.com/",
    "social_ad": "https://www.instagram.com/",
    "social_media": "https://www.instagram.com/",
    "display_ad": "https://ads.adnetwork.example/",
    "influencer": "https://www.instagram.com/",
}


# ----------------------------------------------------------------------------- simulation

_REPURCHASE, _OPEN, _SUPPORT, _LOGIN, _REVIEW, _REFERRAL, _SHARE = range(7)

TPC = V.TP
_TP_WEBSITE = TPC["website"]
_TP_SHOP = TPC["online_shop"]
_TP_REVIEW = TPC["review_portal"]
_TP_BLOG = TPC["blog"]
_TP_YOUTUBE = TPC["youtube"]
_TP_SOCIAL_AD = TPC["social_ad"]
_TP_STORE = TPC["store"]
_TP_NEWSLETTER = TPC["newsletter"]
_TP_SUPPORT = TPC["support"]
_TP_REFERRAL = TPC["referral_link"]
_TP_SOCIAL = TPC["social_media"]
_QR_TPS = frozenset((TPC["flyer_qr"], TPC["poster_qr"]))
_E = V.EV


class ShopSim(BaseSim):
    """Simulates the people of the shop scenario block by block."""

    scenario = "shop"
    stages = V.FIVE_PHASE

    def __init__(self, seed: int, days: int) -> None:
        super().__init__(seed=seed, days=days, campaigns=CampaignTable(CAMPAIGNS, days), survey=SURVEY,
                         stage_code=V.stage_table(V.FIVE_PHASE, V.SHOP_STAGE_OF),
                         persona_keys=PERSONA_KEYS)
        self.stage_idx = {s: i for i, s in enumerate(V.FIVE_PHASE)}
        self.shares = np.array([p.share for p in PERSONAS])
        self.shares = self.shares / self.shares.sum()
        self.alpha = np.array([[p.channel_mix.get(s, 0.0) * p.mix_concentration + 0.02 for s in SOURCES]
                               for p in PERSONAS])
        self.src_tp = [TPC[s] for s in SOURCES]
        self.hours = [HOUR_CUM[p.hours] for p in PERSONAS]
        cat_products = {c: [i for i, p in enumerate(PRODUCTS) if p[2] == c] for c in CATEGORIES}
        self.cat_cum = [cumulative([p.categories.get(c, 0.0) for c in CATEGORIES]) for p in PERSONAS]
        self.cat_products = [cat_products[c] for c in CATEGORIES]
        self.price_cum = [[cumulative([PRODUCTS[i][3] ** -p.price_sensitivity for i in cat_products[c]])
                           for c in CATEGORIES] for p in PERSONAS]
        self.gender_cum = [(list(p.gender), cumulative(list(p.gender.values()))) for p in PERSONAS]
        self.income_cum = [(list(p.income_band), cumulative(list(p.income_band.values()))) for p in PERSONAS]
        self.device_cum = [(list(p.device), cumulative(list(p.device.values()))) for p in PERSONAS]
        self.effect = [CHANNEL_EFFECTS.get(c, 0.0) for c in V.CHANNELS]
        # urls
        u = _Urls()
        self.u_home = u.add(SITE + "/")
        self.u_lp = [u.add(f"{SITE}/lp/{c.key}") for c in CAMPAIGNS]
        self.u_qr = [u.add(f"{SITE}/r/{c.key}") for c in CAMPAIGNS]
        self.u_product = [u.add(f"{SITE}/p/{p[1]}") for p in PRODUCTS]
        self.u_cart = u.add(SITE + "/cart")
        self.u_shipping = u.add(SITE + "/cart/shipping")
        self.u_checkout = u.add(SITE + "/checkout")
        self.u_thanks = u.add(SITE + "/checkout/thank-you")
        self.u_register = u.add(SITE + "/account/register")
        self.u_newsletter = u.add(SITE + "/newsletter")
        self.u_login = u.add(SITE + "/account/login")
        self.u_refer = u.add(SITE + "/refer-a-friend")
        self.u_blog = [u.add(f"{SITE}/blog/{a}") for a in BLOG_ARTICLES]
        self.u_reviews = u.add("https://www.reviewportal.example/shop-example")
        self.urls = u.urls
        self.product_props = [f'"product_id":"{p[0]}","category":"{p[2]}","price":{p[3]}' for p in PRODUCTS]
        self.qr_props = [f'{{"qr_code":"{c.key}"}}' for c in CAMPAIGNS]
        self.refq: list[tuple[float, int]] = []
        self._reset_person_state()

    def referrers(self) -> list[str | None]:
        return [REFERRERS.get(t) for t in V.TOUCHPOINTS]

    def _reset_person_state(self) -> None:
        self.P: ShopPersona = PERSONAS[0]
        self.h: Human = Human(0, 0, 0)
        self.exposed: list[int] = []
        self.subscribed = False
        self.signed_up = False
        self.orders = 0
        self.aliases_left = 0
        self.retained = False
        self.mix_cum: list[float] = []
        self.ref_props: str | None = None

    # ------------------------------------------------------------------ block
    def simulate_block(self, block: int, first_pid: int, first_gidx: int, n: int) -> None:
        gen = block_generator(self.seed, self.scenario, block)
        self.r = Rand(gen)
        persona = gen.choice(len(PERSONAS), size=n, p=self.shares)
        gam = gen.standard_gamma(self.alpha[persona])
        cum = np.cumsum(gam / gam.sum(axis=1, keepdims=True), axis=1).tolist()
        t0 = (gen.random(n) * self.horizon).tolist()
        self.refq = []
        for i in range(n):
            self.person(first_pid + i, first_gidx + i, int(persona[i]), cum[i], t0[i])

    # ------------------------------------------------------------------ person
    def draw_traits(self, k: int) -> dict[str, object]:
        r = self.r
        P = PERSONAS[k]
        age = round(min(max(r.normal(P.age[0], P.age[1]), P.age[2]), P.age[3]))
        g = self.gender_cum[k]
        inc = self.income_cum[k]
        dev = self.device_cum[k]
        city = r.item(P.cities) if r.u() < 0.85 else r.item(ALL_CITIES)
        n_int = 2 + (1 if r.u() < 0.5 else 0)
        first = r.below(len(P.interests))
        interests = [P.interests[(first + j) % len(P.interests)] for j in range(n_int)]
        return {"age": age, "gender": g[0][r.pick(g[1])], "city": city,
                "income_band": inc[0][r.pick(inc[1])], "device": dev[0][r.pick(dev[1])],
                "interests": sorted(interests)}

    def person(self, pid: int, gidx: int, k: int, mix_cum: list[float], t0: float) -> None:
        r = self.r
        P = PERSONAS[k]
        self.P = P
        h = Human(pid=pid, gidx=gidx, persona=k)
        self.h = h
        h.second_device = r.u() < P_SECOND_DEVICE
        self.aliases_left = (2 if r.u() < P_ALIAS_CHAIN else 1) if r.u() < P_ALIAS else 0
        h.traits = self.draw_traits(k)
        self.exposed = []
        self.subscribed = False
        self.signed_up = False
        self.orders = 0
        self.retained = False
        self.mix_cum = mix_cum
        hours = self.hours[k]
        referrer = -1
        latest = self.horizon - 2 * 3600.0  # the first session always fits into the window
        if self.refq and r.u() < P_TAKE_REFERRAL:
            t_ref, ref_user = self.refq.pop(0)
            t_arrive = t_ref + 600.0 + r.exp(2.0) * DAY
            if t_arrive < latest:
                referrer = ref_user
                h.referred = True
                t0 = t_arrive
        if referrer < 0:
            day = math.floor(t0 / DAY)
            t0 = min(latest, day * DAY + r.pick(hours) * 3600.0 + r.u() * 3600.0)
        self.ref_props = f'{{"referrer_user_id":"{self.log.ids[referrer]}"}}' if referrer >= 0 else None
        self.start_person(h, t0)
        h.planted = {"awareness": 1.0, "consideration": P.p_consider, "decision": P.p_decide,
                     "advocacy": P.p_advocate}

        # --- awareness
        n_aw = 1 + r.poisson(P.awareness_sessions)
        t = t0
        for j in range(n_aw):
            if j == 0 and referrer >= 0:
                ok = self.awareness_session(t, _TP_REFERRAL)
            else:
                ok = self.awareness_session(t)
            if not ok:
                return
            t = self.next_start(P.gap_days, hours)
        if r.u() >= P.p_consider:
            return
        # --- consideration
        n_cons = 1 + r.poisson(P.consider_sessions)
        for j in range(n_cons):
            if j > 0 and r.u() < P.p_backtrack:
                if not self.awareness_session(t):
                    return
                t = self.next_start(P.gap_days, hours)
            if not self.consider_session(t):
                return
            t = self.next_start(P.gap_days, hours)
        if r.u() >= P.p_decide:
            self.drift_away(hours)
            return
        # --- decision: the planted outcome is drawn from the exposures so far
        if not self.exposed:  # only video views and store visits so far: come back directly
            self.exposed.append(_TP_WEBSITE)
        channels = {V.TP_CH[tp] for tp in self.exposed}
        p_buy = sigmoid(P.base_logit + sum(self.effect[c] for c in channels))
        h.planted["retention"] = p_buy * P.p_retain
        h.planted["p_first_purchase"] = p_buy
        converted = r.u() < p_buy
        max_attempts = MAX_ATTEMPTS_CONVERTER if converted else 1 + min(3, r.poisson(P.retries))
        t = self.next_start(P.gap_days * 0.5, hours)
        t_first = -1.0
        for attempt in range(1, max_attempts + 1):
            res = self.cart_session(t, converted, attempt >= max_attempts, first=True)
            if res < 0:
                return
            if res == 1:
                t_first = self.now
                break
            t = self.next_start(P.gap_days, hours)
        if t_first < 0:
            self.drift_away(hours)
            return
        # --- retention and advocacy
        self.after_purchase(t_first, hours)

    # ------------------------------------------------------------------ sessions
    def open_web(self, t: float, tp: int, linger_ok: bool = False, props: str | None = None) -> None:
        """Begin a web session that starts with a visit from ``tp``."""
        self.begin(t)
        self.pick_device(self.h)
        if self.aliases_left and self.user >= 0 and self.r.u() < P_ALIAS_PER_SESSION:
            self.aliases_left -= 1
            self.alias(self.new_user_id(self.h.gidx, "cust"))
            self.step(20.0)
        tp, camp = self.campaign_for(tp, t, linger_ok)
        if tp == _TP_REFERRAL and props is None:
            props = self.ref_props
        ch = V.TP_CH[tp]
        self.s_ch = ch
        if tp in _QR_TPS:
            self.row(V.E_QR, tp, ch, camp, self.u_qr[camp], self.qr_props[camp])
            self.step(8.0)
        self.row(V.E_VISIT, tp, ch, camp, self.u_lp[camp] if camp >= 0 else self.u_home, props)
        if tp not in self.exposed:
            self.exposed.append(tp)
        if self.user >= 0 and not self.ident[self.dev]:
            self.identify()  # logs in on a new device

    def source(self) -> int:
        """Visit source before the first purchase: the person's own mix, plus newsletter
        click-throughs once subscribed."""
        if self.subscribed and self.r.u() < P_NEWSLETTER_VISIT:
            return _TP_NEWSLETTER
        return self.src_tp[self.r.pick(self.mix_cum)]

    def product(self) -> int:
        k = self.persona
        c = self.r.pick(self.cat_cum[k])
        return self.cat_products[c][self.r.pick(self.price_cum[k][c])]

    def product_view(self, p: int) -> None:
        self.e(_E["product_view"], _TP_SHOP, self.u_product[p], "{" + self.product_props[p] + "}")

    def ensure_identified(self) -> None:
        if self.user < 0:
            self.user = self.new_user_id(self.h.gidx, "cust")
        if not self.ident[self.dev]:
            self.identify()

    def awareness_session(self, t: float, tp: int = -1, props: str | None = None) -> bool:
        r = self.r
        P = self.P
        if tp < 0 and r.u() < P.video_rate:
            return self.video_session(t)
        self.open_web(t, self.source() if tp < 0 else tp, props=props)
        if r.u() < P.blog_rate:
            a = r.below(len(BLOG_ARTICLES))
            self.e(_E["blog_read"], _TP_BLOG, self.u_blog[a], f'{{"article":"{BLOG_ARTICLES[a]}"}}', mean=90.0)
        if r.u() < 0.015:
            self.survey(K_CSAT, 0, _TP_WEBSITE)
        return self.commit()

    def video_session(self, t: float) -> bool:
        r = self.r
        self.begin(t)
        self.pick_device(self.h, allow_new=False)
        v = VIDEOS[r.below(len(VIDEOS))]
        secs = 5 + int(r.exp(40.0))
        props = f'{{"video":"{v}","seconds":{secs}}}'
        if r.u() < self.P.youtube_share:
            self.row(V.E_VIDEO, _TP_YOUTUBE, V.TP_CH[_TP_YOUTUBE], -1, -1, props)
            return self.commit()
        tp, camp = self.campaign_for(_TP_SOCIAL_AD, t)
        if tp != _TP_SOCIAL_AD:
            self.row(V.E_VIDEO, _TP_YOUTUBE, V.TP_CH[_TP_YOUTUBE], -1, -1, props)
            return self.commit()
        ch = V.TP_CH[tp]
        self.row(V.E_VIDEO, tp, ch, camp, -1, props)
        if r.u() < 0.35:  # click-through: a visit of the same campaign
            self.now += secs + 2.0
            self.s_ch = ch
            self.row(V.E_VISIT, tp, ch, camp, self.u_lp[camp])
            if tp not in self.exposed:
                self.exposed.append(tp)
            if self.user >= 0 and not self.ident[self.dev]:
                self.identify()
        return self.commit()

    def consider_session(self, t: float) -> bool:
        r = self.r
        P = self.P
        if r.u() < P.p_store:
            self.begin(t)
            s = r.below(len(STORES))
            self.row(V.E_STORE, _TP_STORE, V.TP_CH[_TP_STORE], -1, -1, f'{{"store":"{STORES[s]}"}}',
                     client=self.user < 0)
            if r.u() < 0.1:
                self.survey(K_CSAT, 1, _TP_STORE)
            return self.commit()
        self.open_web(t, self.source())
        depth = 1 + r.poisson(P.depth - 1.0)
        for j in range(depth):
            p = self.product()
            self.product_view(p)
            if j == 0 and r.u() < P.p_review_read:
                self.e(_E["review_read"], _TP_REVIEW, self.u_reviews, f'{{"product_id":"{PRODUCTS[p][0]}"}}', mean=120.0)
        if not self.subscribed and r.u() < P.p_newsletter_signup:
            self.ensure_identified()
            self.e(_E["newsletter_signup"], _TP_WEBSITE, self.u_newsletter)
            self.subscribed = True
        if not self.signed_up and r.u() < P.p_signup:
            self.ensure_identified()
            self.e(_E["signup"], _TP_WEBSITE, self.u_register)
            self.signed_up = True
        if r.u() < 0.03:
            self.survey(K_CES, 1, _TP_SHOP)
        return self.commit()

    def drift_away(self, hours: list[float]) -> None:
        """After giving up: a few more visits through channels already known (retargeting)."""
        r = self.r
        if not self.exposed:
            return
        for _ in range(r.poisson(0.8)):
            t = self.next_start(self.P.gap_days * 2.0, hours)
            self.open_web(t, self.exposed[r.below(len(self.exposed))], linger_ok=True)
            if not self.commit():
                return

    def cart_session(self, t: float, converts: bool, last: bool, first: bool) -> int:
        """One attempt to buy. Returns 1 (purchase), 0 (abandoned) or -1 (window over)."""
        r = self.r
        P = self.P
        tp = self.exposed[r.below(len(self.exposed))] if first else self.source_retained()
        self.open_web(t, tp, linger_ok=True)
        if not first and r.u() < 0.6:
            self.e(_E["login"], _TP_SHOP, self.u_login)
            self.retained = True
        p = self.product()
        self.product_view(p)
        if r.u() < 0.3:
            p = self.product()
            self.product_view(p)
        price = PRODUCTS[p][3]
        qty = 1 if r.u() < 0.8 else 2
        pp = self.product_props[p]
        self.e(_E["add_to_cart"], _TP_SHOP, self.u_cart, f'{{{pp},"quantity":{qty}}}')
        cart = round(price * qty, 2)
        ship = SHIPPING_COST if cart < FREE_SHIPPING_FROM else 0.0
        self.e(V.E_SHIPPING, _TP_SHOP, self.u_shipping, f'{{"shipping_cost":{ship},"cart_value":{cart}}}', mean=20.0)
        abandon = r.u() < P.abandon_after_shipping
        if converts and last:
            abandon = False
        if abandon:
            if r.u() < P_EXIT_SURVEY:
                self.survey(K_CES, 2, _TP_SHOP)
            return 0 if self.commit() else -1
        self.e(V.E_CHECKOUT, _TP_SHOP, self.u_checkout, f'{{"cart_value":{cart}}}', mean=30.0)
        if not converts:
            return 0 if self.commit() else -1
        self.ensure_identified()
        self.orders += 1
        order_id = f"O-{scramble(self.h.gidx, self.salt ^ 0x27D4EB2F):012x}-{self.orders}"
        self.e(V.E_PURCHASE1 if first else V.E_PURCHASE2, _TP_SHOP, self.u_thanks,
               f'{{"order_number":{self.orders},"order_id":"{order_id}",{pp},"items":{qty},'
               f'"shipping_cost":{ship}}}', mean=60.0)
        self.revenue(cart)  # revenue = the goods' value; shipping is in the properties
        if first:
            if r.u() < 0.2:
                self.survey(K_CSAT, 2, _TP_SHOP)
        else:
            self.retained = True
            if r.u() < 0.1:
                self.survey(K_NPS, 3, _TP_SHOP)
        return 1 if self.commit() else -1

    def source_retained(self) -> int:
        """Visit source of a customer: own mix, newsletter if subscribed."""
        r = self.r
        if self.subscribed and r.u() < 0.35:
            return _TP_NEWSLETTER
        if r.u() < 0.3:
            return _TP_WEBSITE
        return self.src_tp[r.pick(self.mix_cum)]

    # ------------------------------------------------------------------ after the first purchase
    def after_purchase(self, t_first: float, hours: list[float]) -> None:
        r = self.r
        P = self.P
        if r.u() >= P.p_retain:
            return
        plan: list[tuple[float, int, int]] = []
        seq = 0

        def add(t: float, kind: int) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(plan, (t, seq, kind))

        t = t_first
        for _ in range(r.poisson(P.repurchases)):
            t += (1.0 + r.exp(P.interpurchase_days)) * DAY
            add(t, _REPURCHASE)
        if self.subscribed:
            w = t_first + (1.0 + 6.0 * r.u()) * DAY
            while w < self.horizon:
                if r.u() < P.p_newsletter_open:
                    add(w + r.exp(0.5) * DAY, _OPEN)
                w += 7 * DAY
        if r.u() < P.p_support:
            add(t_first + (2.0 + r.exp(5.0)) * DAY, _SUPPORT)
        if r.u() < P.p_login or not plan:
            add(t_first + (1.0 + r.exp(4.0)) * DAY, _LOGIN)
        first_ret = plan[0][0]
        if r.u() < P.p_advocate:
            ta = first_ret + (1.0 + r.exp(10.0)) * DAY
            any_adv = False
            if r.u() < P.p_review_written:
                add(ta, _REVIEW)
                any_adv = True
            if r.u() < P.p_referral:
                add(ta + r.exp(5.0) * DAY, _REFERRAL)
                any_adv = True
            if r.u() < P.p_social_share or not any_adv:
                add(ta + r.exp(5.0) * DAY, _SHARE)
        retries = 0
        while plan and self.alive:
            t, _, kind = heapq.heappop(plan)
            if t < self.t_last + 300.0:
                t = self.t_last + 300.0 + r.exp(3600.0)
            if kind == _REPURCHASE:
                res = self.cart_session(t, True, retries >= 3, first=False)
                if res < 0:
                    return
                if res == 0:
                    retries += 1
                    add(t + (1.0 + r.exp(4.0)) * DAY, _REPURCHASE)
                else:
                    retries = 0
                    if r.u() < P.p_support:
                        add(self.now + (2.0 + r.exp(5.0)) * DAY, _SUPPORT)
            elif kind == _OPEN:
                self.newsletter_open(t)
            elif kind == _SUPPORT:
                self.support(t)
            elif kind == _LOGIN:
                self.open_web(t, self.source_retained(), linger_ok=True)
                self.e(_E["login"], _TP_SHOP, self.u_login)
                self.retained = True
                if r.u() < 0.5:
                    self.product_view(self.product())
                self.commit()
            elif self.retained:  # advocacy only after a retention touch
                if kind == _REVIEW:
                    self.review(t)
                elif kind == _REFERRAL:
                    self.referral(t)
                else:
                    self.share(t)

    def newsletter_open(self, t: float) -> None:
        r = self.r
        self.begin(t)
        self.row(_E["newsletter_open"], _TP_NEWSLETTER, V.TP_CH[_TP_NEWSLETTER], -1, -1,
                 f'{{"newsletter":"weekly-{int(t // (7 * DAY)) + 1:02d}"}}', client=False)
        self.retained = True
        if r.u() < 0.3:  # click-through
            self.now += 30.0 + r.exp(120.0)
            self.pick_device(self.h)
            tp, camp = self.campaign_for(_TP_NEWSLETTER, self.now, True)
            self.s_ch = V.TP_CH[tp]
            self.row(V.E_VISIT, tp, self.s_ch, camp, self.u_lp[camp] if camp >= 0 else self.u_home)
            if self.user >= 0 and not self.ident[self.dev]:
                self.identify()
            self.product_view(self.product())
        self.commit()

    def support(self, t: float) -> None:
        r = self.r
        self.begin(t)
        topic = SUPPORT_TOPICS[r.below(len(SUPPORT_TOPICS))]
        self.row(V.E_SUPPORT, _TP_SUPPORT, V.TP_CH[_TP_SUPPORT], -1, -1, f'{{"topic":"{topic}"}}', client=False)
        self.retained = True
        if r.u() < 0.4:
            self.survey(K_CSAT, 3, _TP_SUPPORT)
        self.commit()

    def review(self, t: float) -> None:
        r = self.r
        self.begin(t)
        rating = min(5, max(1, round(1 + 4 * self.level[self.persona][4] + 0.8 * r.z())))
        p = self.product()
        self.row(_E["review_written"], _TP_REVIEW, V.TP_CH[_TP_REVIEW], -1, self.u_reviews,
                 f'{{"rating":{rating},"product_id":"{PRODUCTS[p][0]}"}}', client=False)
        if r.u() < 0.3:
            self.survey(K_NPS, 4, _TP_REVIEW)
        self.commit()

    def referral(self, t: float) -> None:
        r = self.r
        self.open_web(t, _TP_WEBSITE, linger_ok=True)
        medium = ("whatsapp", "email", "link")[r.below(3)]
        self.e(V.E_REFERRAL_SENT, _TP_REFERRAL, self.u_refer, f'{{"medium":"{medium}"}}')
        referrer = self.user
        if self.commit() and r.u() < P_REFERRAL_SUCCESS:
            self.refq.append((self.now, referrer))

    def share(self, t: float) -> None:
        r = self.r
        self.open_web(t, self.source_retained(), linger_ok=True)
        p = self.product()
        self.product_view(p)
        net = SHARE_NETWORKS[r.below(len(SHARE_NETWORKS))]
        self.e(_E["social_share"], _TP_SOCIAL, self.u_product[p],
               f'{{"network":"{net}","product_id":"{PRODUCTS[p][0]}"}}')
        self.commit()

    # ------------------------------------------------------------------ generator interface
    min_block = 1
    model = "five_phase"

    def truth_spec(self) -> TruthSpec:
        return TruthSpec(
            stages=V.FIVE_PHASE,
            stage_code=self.stage_code,
            first_conversion=frozenset((V.E_PURCHASE1,)),
            revenue_events=frozenset((V.E_PURCHASE1, V.E_PURCHASE2)),
            exposure_events=frozenset((V.E_VISIT,)),
            persona_keys=PERSONA_KEYS,
            account_level=False,
            pain_event=V.E_SHIPPING,
            n_campaigns=len(CAMPAIGNS),
        )

    def campaigns(self) -> tuple[Campaign, ...]:
        return CAMPAIGNS

    def people_columns(self) -> list[str]:
        return ["age", "gender", "city", "income_band", "device", "interests"]

    def account_of(self) -> np.ndarray | None:
        return None

    def batch_extra(self, facts: PersonFacts) -> None:
        return None

    def account_rows(self) -> list[list[object]]:
        return []

    def truth_extra(self, tally: Tally) -> dict[str, Any]:
        return {}

    def truth_extra_columns(self, facts: PersonFacts) -> dict[str, pa.Array]:
        return {}

    @staticmethod
    def planted() -> dict[str, Any]:
        personas = {}
        for p in PERSONAS:
            d = asdict(p)
            key = d.pop("key")
            personas[key] = d
        return {
            "personas": personas,
            "channel_effects": dict(CHANNEL_EFFECTS),
            "effect_model": "logit P(first purchase | decision) = persona base_logit + sum of the "
            "effects of the distinct channels the person had a visit from before reaching decision",
            "pain_point": {
                "event": "shipping_costs_viewed",
                "persona": "bargain_hunter",
                "stage": "decision",
                "effect": "cart abandoned right after the event: the person's next row is not "
                "checkout_started",
                "planted_abandon_rate": {p.key: p.abandon_after_shipping for p in PERSONAS},
            },
            "surveys": SURVEY.to_dict(),
            "identity": {"p_second_device": P_SECOND_DEVICE, "p_alias": P_ALIAS,
                         "p_alias_chain": P_ALIAS_CHAIN},
            "referral": {"p_take": P_TAKE_REFERRAL, "p_success": P_REFERRAL_SUCCESS},
        }
