"""The B2B SaaS scenario: accounts with buying committees, long journeys.

An account (a company) has 3-8 people. Its journey follows an account timeline
(awareness -> consideration -> decision -> contract -> onboarding); each member
takes part according to their committee role and persona. Members are emitted
in two phases: everything before the account's decision start first (so that the
account's realized channel exposures are known), then the planted outcome is
drawn and everything after it is emitted.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
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
    to_json,
)
from journeylens.demo._truth import PersonFacts, Tally, TruthSpec

# ----------------------------------------------------------------------------- personas


@dataclass(frozen=True)
class B2BPersona:
    key: str
    description: str
    age: tuple[float, float, int, int]
    gender: dict[str, float]
    seniority: dict[str, float]
    department: dict[str, float]
    device: dict[str, float]
    channel_mix: dict[str, float]
    mix_concentration: float
    hours: str
    join_days: float
    """Mean days after the account's first touch until this person's first touch."""
    awareness_sessions: float
    """Mean number of awareness sessions (1 + Poisson), spread over months."""
    gap_days: float
    p_blog: float
    p_fair: float
    consider_sessions: float
    """Mean number of consideration sessions while the account considers (Poisson)."""
    p_whitepaper: float
    p_webinar: float
    p_case_study: float
    p_review_read: float
    p_pricing: float
    pricing_abandon: float
    """Planted pain point: chance to drop out right after a pricing_view."""
    uses_per_week: float
    """Product sessions (login + feature_used) per week once the account is a customer."""
    features_per_use: float
    p_support_per_month: float
    p_advocate: float


PERSONAS: tuple[B2BPersona, ...] = (
    B2BPersona(
        key="startup_founder",
        description="Founder / CEO of a small company; decides alone and fast, checks the price "
        "early and often drops out right after seeing it.",
        age=(44.0, 4.0, 32, 60), gender={"m": 0.7, "f": 0.3}, seniority={"c_level": 1.0},
        department={"management": 1.0}, device={"mobile": 0.55, "desktop": 0.45},
        channel_mix={"organic_search": 0.25, "search_ad": 0.25, "social_ad": 0.2, "partner_site": 0.1,
                     "display_ad": 0.05, "website": 0.15},
        mix_concentration=6.0, hours="late", join_days=4.0, awareness_sessions=3.5, gap_days=10.0,
        p_blog=0.2, p_fair=0.15, consider_sessions=2.5, p_whitepaper=0.3, p_webinar=0.1,
        p_case_study=0.3, p_review_read=0.4, p_pricing=0.45, pricing_abandon=0.65,
        uses_per_week=0.6, features_per_use=2.5, p_support_per_month=0.05, p_advocate=0.25,
    ),
    B2BPersona(
        key="senior_executive",
        description="Senior executive (decision maker or finance) of a mid-size or large company; "
        "meets vendors at trade fairs and through partners, reads case studies, signs the contract.",
        age=(53.0, 4.0, 42, 66), gender={"m": 0.65, "f": 0.35},
        seniority={"c_level": 0.4, "vp": 0.35, "director": 0.25},
        department={"management": 0.6, "finance": 0.4}, device={"desktop": 0.7, "mobile": 0.3},
        channel_mix={"partner_site": 0.3, "organic_search": 0.2, "search_ad": 0.15, "website": 0.2,
                     "social_ad": 0.1, "display_ad": 0.05},
        mix_concentration=8.0, hours="morning", join_days=20.0, awareness_sessions=3.0, gap_days=20.0,
        p_blog=0.05, p_fair=0.45, consider_sessions=2.0, p_whitepaper=0.4, p_webinar=0.1,
        p_case_study=0.6, p_review_read=0.2, p_pricing=0.6, pricing_abandon=0.12,
        uses_per_week=0.15, features_per_use=1.5, p_support_per_month=0.02, p_advocate=0.15,
    ),
    B2BPersona(
        key="project_lead",
        description="Manager who drives the evaluation: reads the blog, downloads whitepapers, "
        "attends webinars, requests the demo, uses the product and recommends it.",
        age=(38.0, 3.5, 29, 50), gender={"f": 0.55, "m": 0.45},
        seniority={"manager": 0.6, "head_of": 0.4},
        department={"marketing": 0.45, "operations": 0.35, "sales": 0.2},
        device={"desktop": 0.8, "mobile": 0.2},
        channel_mix={"organic_search": 0.35, "search_ad": 0.2, "social_ad": 0.15, "website": 0.15,
                     "partner_site": 0.1, "display_ad": 0.05},
        mix_concentration=8.0, hours="office", join_days=0.0, awareness_sessions=5.0, gap_days=9.0,
        p_blog=0.6, p_fair=0.3, consider_sessions=4.5, p_whitepaper=0.5, p_webinar=0.35,
        p_case_study=0.5, p_review_read=0.5, p_pricing=0.0, pricing_abandon=0.0,
        uses_per_week=1.5, features_per_use=3.5, p_support_per_month=0.1, p_advocate=0.45,
    ),
    B2BPersona(
        key="tech_evaluator",
        description="IT / engineering evaluator: organic search and reviews, technical blog posts, "
        "starts the trial, opens support tickets.",
        age=(32.0, 3.5, 24, 45), gender={"m": 0.75, "f": 0.25}, seniority={"senior": 0.55, "lead": 0.45},
        department={"it": 0.7, "engineering": 0.3}, device={"desktop": 0.9, "mobile": 0.1},
        channel_mix={"organic_search": 0.45, "search_ad": 0.15, "website": 0.2, "display_ad": 0.1,
                     "social_ad": 0.05, "partner_site": 0.05},
        mix_concentration=8.0, hours="office", join_days=25.0, awareness_sessions=3.0, gap_days=14.0,
        p_blog=0.7, p_fair=0.1, consider_sessions=2.5, p_whitepaper=0.45, p_webinar=0.2,
        p_case_study=0.3, p_review_read=0.7, p_pricing=0.0, pricing_abandon=0.0,
        uses_per_week=1.2, features_per_use=3.0, p_support_per_month=0.3, p_advocate=0.2,
    ),
    B2BPersona(
        key="daily_user",
        description="Junior / mid-level team member who will use the product; little contact "
        "before the purchase, logs in often afterwards.",
        age=(27.0, 3.0, 21, 38), gender={"f": 0.5, "m": 0.5}, seniority={"junior": 0.55, "mid": 0.45},
        department={"sales": 0.35, "marketing": 0.3, "customer_service": 0.35},
        device={"desktop": 0.6, "mobile": 0.4},
        channel_mix={"social_ad": 0.3, "organic_search": 0.25, "website": 0.2, "display_ad": 0.15,
                     "search_ad": 0.1},
        mix_concentration=6.0, hours="office", join_days=35.0, awareness_sessions=2.5, gap_days=20.0,
        p_blog=0.2, p_fair=0.05, consider_sessions=0.8, p_whitepaper=0.1, p_webinar=0.05,
        p_case_study=0.1, p_review_read=0.4, p_pricing=0.0, pricing_abandon=0.0,
        uses_per_week=2.5, features_per_use=3.5, p_support_per_month=0.15, p_advocate=0.3,
    ),
)
PERSONA_KEYS = tuple(p.key for p in PERSONAS)
_P = {p.key: i for i, p in enumerate(PERSONAS)}

ROLES: tuple[str, ...] = ("champion", "decision_maker", "it", "user", "finance", "user", "user", "user")
"""Committee roles by position: an account of size n has the first n roles."""


@dataclass(frozen=True)
class Segment:
    key: str
    share: float
    employees: tuple[int, int]
    plan: str
    sizes: dict[int, float]
    acv_median: float
    """Annual contract value (EUR) booked on contract_signed."""
    p_consider: float
    p_decide: float
    base_logit: float
    """Log-odds of the contract given decision before channel effects."""
    awareness_days: float
    consider_days: float
    decision_days: float
    p_upsell: float
    decision_maker: str
    """Persona of the decision maker."""


SEGMENTS: tuple[Segment, ...] = (
    Segment("startup", 0.35, (5, 49), "starter", {3: 0.6, 4: 0.4}, 4800.0, 0.7, 0.6, -2.6,
            14.0, 18.0, 14.0, 0.15, "startup_founder"),
    Segment("midmarket", 0.45, (50, 999), "business", {4: 0.25, 5: 0.4, 6: 0.35}, 24000.0, 0.65, 0.6,
            -3.1, 21.0, 30.0, 25.0, 0.25, "senior_executive"),
    Segment("enterprise", 0.20, (1000, 20000), "enterprise", {6: 0.3, 7: 0.35, 8: 0.35}, 90000.0,
            0.6, 0.55, -3.6, 30.0, 45.0, 35.0, 0.35, "senior_executive"),
)

INDUSTRIES = ("software", "manufacturing", "retail", "financial_services", "healthcare", "logistics",
              "education", "media")
COUNTRIES = {"DE": 0.5, "AT": 0.15, "CH": 0.15, "NL": 0.1, "GB": 0.1}

CHANNEL_EFFECTS: dict[str, float] = {
    "partner": 1.6,
    "referral": 1.4,
    "event": 1.2,
    "organic_search": 1.0,
    "paid_search": 0.75,
    "direct": 0.5,
    "paid_social": 0.25,
    "display": 0.0,
}
"""Planted log-odds increment on P(contract | decision) per channel any member of the account had
a visit (or trade fair visit) from before the account's decision start (each channel once)."""

SOURCES: tuple[str, ...] = ("search_ad", "social_ad", "organic_search", "partner_site", "display_ad", "website")

ACCOUNT_MIX: dict[str, float] = {"search_ad": 0.2, "social_ad": 0.15, "organic_search": 0.25,
                                 "partner_site": 0.15, "display_ad": 0.1, "website": 0.15}
"""Average channel mix of an account; each account draws its own (Dirichlet, concentration
ACCOUNT_MIX_CONCENTRATION), so accounts differ in the channels that reach them."""
ACCOUNT_MIX_CONCENTRATION = 0.8
ACCOUNT_MIX_WEIGHT = 0.95
"""A member's visit sources: this share from the account's mix, the rest from the persona's."""

P_SECOND_DEVICE = 0.3
P_ALIAS = 0.04
P_ALIAS_CHAIN = 0.35
P_ALIAS_PER_SESSION = 0.3
P_TAKE_REFERRAL = 0.8
P_REFERRAL_SUCCESS = 0.5

CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("search_brand", "search_ad", "google", "cpc", (0.0, 1.0), 0.4, "online", cpc=1.2, ctr=0.07),
    Campaign("search_crm_software", "search_ad", "google", "cpc", (0.0, 1.0), 0.6, "online", cpc=4.5, ctr=0.025),
    Campaign("linkedin_leadgen", "social_ad", "linkedin", "paid_social", (0.0, 1.0), 0.6, "online", cpc=6.0, ctr=0.006),
    Campaign("linkedin_abm", "social_ad", "linkedin", "paid_social", (0.3, 0.9), 0.4, "online", cpc=8.0, ctr=0.004),
    Campaign("display_retargeting", "display_ad", "gdn", "display", (0.0, 1.0), 0.6, "online", cpc=0.9, ctr=0.003),
    Campaign("display_abm", "display_ad", "gdn", "display", (0.2, 0.7), 0.4, "online", cpc=1.5, ctr=0.002),
    Campaign("partner_referrals", "partner_site", "partner", "partner", (0.0, 1.0), 0.6, "fee", cpc=2500.0, fee_every=30),
    Campaign("partner_marketplace", "partner_site", "marketplace", "partner", (0.1, 1.0), 0.4, "fee", cpc=1200.0, fee_every=30),
    Campaign("fair_spring_expo", "trade_fair", "fair", "event", (0.15, 0.165), 0.5, "event", cpc=15000.0, volume=8000),
    Campaign("fair_autumn_summit", "trade_fair", "fair", "event", (0.7, 0.715), 0.5, "event", cpc=12000.0, volume=6000),
)

SURVEY = SurveyPlan(
    stages=V.B2B_STAGES,
    levels={"awareness": 0.66, "consideration": 0.6, "decision": 0.45, "onboarding": 0.55, "advocacy": 0.86},
    persona_offsets={"startup_founder": {"consideration": -0.15, "decision": -0.1}},
    themes={
        "awareness": {"product_quality": 0.4, "usability": 0.35, "price": 0.25},
        "consideration": {"price": 0.4, "product_quality": 0.3, "usability": 0.3},
        "decision": {"price": 0.5, "customer_service": 0.3, "onboarding": 0.2},
        "onboarding": {"onboarding": 0.45, "customer_service": 0.3, "usability": 0.25},
        "advocacy": {"product_quality": 0.5, "customer_service": 0.3, "onboarding": 0.2},
    },
    languages={"de": 0.55, "en": 0.45},
    comment_rate=0.5,
)

SITE = "https://www.saas.example"
APP = "https://app.saas.example"
BLOG_ARTICLES = ("crm-data-quality", "sales-forecasting-guide", "pipeline-metrics", "gdpr-for-sales-teams")
WHITEPAPERS = ("state-of-sales-2026", "roi-of-crm", "security-whitepaper")
CASE_STUDIES = ("logistics-leader", "retail-chain", "fintech-scaleup", "machine-builder")
WEBINARS = ("product-tour", "forecasting-best-practice", "migration-without-pain")
FEATURES = ("pipeline", "forecast", "reports", "email_sync", "api", "dashboards", "automation")
REFERRERS: dict[str, str] = {
    "search_ad": "https://www.google.com/",
    "organic_search": "https://www.google.com/",
    "social_ad": "https://www.linkedin.com/",
    "display_ad": "https://ads.adnetwork.example/",
    "partner_site": "https://partners.example.com/",
}

# plan item kinds
(_AW, _FAIR, _CONS, _WEBINAR, _DEMO, _CALL, _TRIAL, _PROPOSAL, _CONTRACT, _ONBOARD, _USE, _SUPPORT,
 _RENEWAL, _UPSELL, _REVIEW, _REFERRAL, _CASESTUDY) = range(17)

TPC = V.TP
_E = V.EV
_TP_WEBSITE = TPC["website"]
_TP_FAIR = TPC["trade_fair"]
_TP_REFERRAL = TPC["referral_link"]
_TP_PRODUCT = TPC["product"]


@dataclass
class Member:
    """One committee member and the simulation state that is swapped in while emitting them."""

    human: Human
    role: str
    k: int
    """persona index"""
    mix_cum: list[float]
    start: float
    plan: list[tuple[float, int, int, int]] = field(default_factory=list)
    state: tuple[Any, ...] = ()
    stopped: bool = False
    onboarded: bool = False
    aliases_left: int = 0
    ref_props: str | None = None


@dataclass
class Account:
    acct: int
    seg: int
    traits: dict[str, object]
    members: list[Member]
    planted: dict[str, float] = field(default_factory=dict)
    exposed_tps: list[int] = field(default_factory=list)
    exposed_ch: set[int] = field(default_factory=set)
    contract_committed: bool = False
    referred: bool = False


class B2BSim(BaseSim):
    """Simulates the accounts of the b2b scenario block by block."""

    scenario = "b2b"
    stages = V.B2B_STAGES
    min_block = 3
    model = "b2b"

    def __init__(self, seed: int, days: int) -> None:
        super().__init__(seed=seed, days=days, campaigns=CampaignTable(CAMPAIGNS, days), survey=SURVEY,
                         stage_code=V.stage_table(V.B2B_STAGES, V.B2B_STAGE_OF), persona_keys=PERSONA_KEYS)
        self.alpha = np.array([[p.channel_mix.get(s, 0.0) * p.mix_concentration + 0.02 for s in SOURCES]
                               for p in PERSONAS])
        self.acc_alpha = np.array([ACCOUNT_MIX[s] * ACCOUNT_MIX_CONCENTRATION for s in SOURCES])
        self.src_tp = [TPC[s] for s in SOURCES]
        self.hours = [HOUR_CUM[p.hours] for p in PERSONAS]
        self.trait_cum = [{name: (list(d), cumulative(list(d.values()))) for name, d in
                           (("department", p.department), ("seniority", p.seniority),
                            ("gender", p.gender), ("device", p.device))} for p in PERSONAS]
        self.seg_cum = cumulative([s.share for s in SEGMENTS])
        self.size_cum = [(list(s.sizes), cumulative(list(s.sizes.values()))) for s in SEGMENTS]
        self.country = (list(COUNTRIES), cumulative(list(COUNTRIES.values())))
        self.effect = [CHANNEL_EFFECTS.get(c, 0.0) for c in V.CHANNELS]
        self.accounts: list[Account] = []
        self.all_accounts: list[tuple[str, dict[str, object]]] = []
        self.acc_tally: dict[str, Any] = {}
        self._init_acc_tally()
        urls: list[str] = []

        def add(u: str) -> int:
            urls.append(u)
            return len(urls) - 1

        self.u_home = add(SITE + "/")
        self.u_lp = [add(f"{SITE}/lp/{c.key}") for c in CAMPAIGNS]
        self.u_blog = [add(f"{SITE}/blog/{a}") for a in BLOG_ARTICLES]
        self.u_wp = [add(f"{SITE}/whitepapers/{w}") for w in WHITEPAPERS]
        self.u_cs = [add(f"{SITE}/case-studies/{c}") for c in CASE_STUDIES]
        self.u_pricing = add(SITE + "/pricing")
        self.u_demo = add(SITE + "/demo")
        self.u_trial = add(APP + "/signup/trial")
        self.u_login = add(APP + "/login")
        self.u_feature = [add(f"{APP}/{f}") for f in FEATURES]
        self.u_reviews = add("https://www.softwarereviews.example/saas-example")
        self.u_refer = add(SITE + "/refer")
        self.u_webinar = [add(f"{SITE}/webinars/{w}") for w in WEBINARS]
        self.urls = urls
        self.refq: list[tuple[float, int]] = []
        self.m: Member | None = None
        self.a: Account | None = None

    def referrers(self) -> list[str | None]:
        return [REFERRERS.get(t) for t in V.TOUCHPOINTS]

    def new_batch(self) -> None:
        super().new_batch()
        self.accounts = []

    # ------------------------------------------------------------------ member state swapping
    def _save(self, m: Member) -> None:
        m.state = (self.anon, self.ident, self.dev, self.user, self.acct, self.row_acct, self.t_last,
                   self.alive, self.n_user_ids, self.traits_text)

    def _load(self, m: Member) -> None:
        (self.anon, self.ident, self.dev, self.user, self.acct, self.row_acct, self.t_last,
         self.alive, self.n_user_ids, self.traits_text) = m.state
        self.pid = m.human.pid
        self.persona = m.k
        self.m = m

    # ------------------------------------------------------------------ block
    def partition(self, n: int) -> list[tuple[int, int]]:
        """(segment, size) of the accounts of a block of ``n`` people (sizes 3..8, sum n)."""
        r = self.r
        out: list[tuple[int, int]] = []
        left = n
        while left > 0:
            seg = r.pick(self.seg_cum)
            sizes, cum = self.size_cum[seg]
            size = sizes[r.pick(cum)]
            if left <= 8:
                size = left
            elif left - size < 3:
                size = left - 3
            if size not in SEGMENTS[seg].sizes:
                seg = next(i for i, s in enumerate(SEGMENTS) if size in s.sizes)
            out.append((seg, size))
            left -= size
        return out

    def simulate_block(self, block: int, first_pid: int, first_gidx: int, n: int) -> None:
        gen = block_generator(self.seed, self.scenario, block)
        self.r = Rand(gen)
        self.refq = []
        parts = self.partition(n)
        # channel mixes of all accounts and members of the block in two draws: a member's visit
        # sources come mostly from the account's own (concentrated) mix, partly the persona's
        personas = [self._persona_of(role, SEGMENTS[seg]) for seg, size in parts for role in ROLES[:size]]
        acc = gen.standard_gamma(np.broadcast_to(self.acc_alpha, (len(parts), len(SOURCES))))
        acc = acc / acc.sum(axis=1, keepdims=True)
        gam = gen.standard_gamma(self.alpha[personas])
        acc_rows = np.repeat(np.arange(len(parts)), [size for _, size in parts])
        mix = ACCOUNT_MIX_WEIGHT * acc[acc_rows] + (1.0 - ACCOUNT_MIX_WEIGHT) * gam / gam.sum(axis=1, keepdims=True)
        mixes = np.cumsum(mix, axis=1).tolist()
        off = 0
        for a_i, (seg, size) in enumerate(parts):
            self.account(block, a_i, seg, personas[off:off + size], mixes[off:off + size],
                         first_pid + off, first_gidx + off)
            off += size

    # ------------------------------------------------------------------ account
    def account(self, block: int, a_i: int, seg_i: int, personas: list[int], mix: list[list[float]],
                pid: int, gidx: int) -> None:
        r = self.r
        seg = SEGMENTS[seg_i]
        acct = self.log.new_id(f"acct-{scramble(block * 4096 + a_i, self.salt ^ 0x1B873593):012x}")
        traits: dict[str, object] = {
            "industry": INDUSTRIES[r.below(len(INDUSTRIES))],
            "employees": round(math.exp(math.log(seg.employees[0]) + r.u() * (
                math.log(seg.employees[1]) - math.log(seg.employees[0])))),
            "country": self.country[0][r.pick(self.country[1])],
            "plan": seg.plan,
        }
        a = Account(acct=acct, seg=seg_i, traits=traits, members=[])
        self.a = a
        self.accounts.append(a)
        latest = self.horizon - 2 * 3600.0
        # start of the account's journey (or arrival through a referral)
        t0 = r.u() * self.horizon * 0.85
        ref_props: str | None = None
        if self.refq and r.u() < P_TAKE_REFERRAL:
            t_ref, ref_user = self.refq.pop(0)
            t_arr = t_ref + 600.0 + r.exp(3.0) * DAY
            if t_arr < latest:
                t0 = t_arr
                a.referred = True
                ref_props = f'{{"referrer_user_id":"{self.log.ids[ref_user]}"}}'
        roles = ROLES[:len(personas)]
        for j, role in enumerate(roles):
            k = personas[j]
            P = PERSONAS[k]
            h = Human(pid=pid + j, gidx=gidx + j, persona=k, account=acct)
            h.traits = self._traits(k, role)
            h.second_device = r.u() < P_SECOND_DEVICE
            start = t0 if j == 0 else t0 + r.exp(P.join_days) * DAY
            if start >= latest:
                start = t0 + r.u() * (latest - t0)
            h.referred = a.referred and j == 0
            m = Member(human=h, role=role, k=k, mix_cum=mix[j], start=start)
            m.aliases_left = (2 if r.u() < P_ALIAS_CHAIN else 1) if r.u() < P_ALIAS else 0
            self.start_person(h, start)
            self._save(m)
            a.members.append(m)
        # account timeline
        T1 = t0 + (7.0 + r.exp(seg.awareness_days)) * DAY
        T2 = T1 + (10.0 + r.exp(seg.consider_days)) * DAY
        T3 = T2 + (7.0 + r.exp(seg.decision_days)) * DAY
        consider = r.u() < seg.p_consider
        decide = consider and r.u() < seg.p_decide
        dm = a.members[1]
        # ---- plan before the decision
        cut = T2 if decide else math.inf
        n_dm_pricing = 0
        for j, m in enumerate(a.members):
            P = PERSONAS[m.k]
            self._plan_awareness(m, P, cut, ref_props if j == 0 else None)
            if consider:
                end = T2 if decide else T1 + (10.0 + r.exp(seg.consider_days)) * DAY
                n_c = r.poisson(P.consider_sessions)
                if m is dm and decide:
                    n_c = max(n_c, 1)
                for _ in range(n_c):
                    t = max(T1, m.start) + r.u() * max(end - max(T1, m.start), DAY)
                    if t >= cut:
                        continue
                    wp = 1 if r.u() < P.p_whitepaper else 0
                    pricing = 0
                    if r.u() < P.p_pricing:
                        pricing = 2 if r.u() < P.pricing_abandon else 1
                        if m is dm:
                            n_dm_pricing += 1
                    self._add(m, t, _CONS, wp * 4 + pricing)
                    if r.u() < P.p_webinar:
                        self._add(m, t + (1.0 + r.exp(5.0)) * DAY, _WEBINAR, r.below(len(WEBINARS)))
        # the pain point: a decision maker who drops out after a pricing view stalls the account
        stall_p = PERSONAS[dm.k].pricing_abandon
        stalled = self._apply_pricing_dropouts(a)
        p_stall_free = (1.0 - stall_p) ** n_dm_pricing
        a.planted = {"awareness": 1.0, "consideration": seg.p_consider,
                     "decision": seg.p_decide * p_stall_free}
        if stalled:
            decide = False
            cut = math.inf
        if decide:
            champ = a.members[0]
            t_demo = T2 - (1.0 + r.exp(3.0)) * DAY
            self._add(champ, max(t_demo, champ.start + DAY), _DEMO, 0)
            self._add(champ, T2 - 0.3 * DAY, _CALL, 0)
            if not any(kind == _CONS and arg & 4 for _, _, kind, arg in dm.plan):
                t = max(T1, dm.start) + r.u() * max(T2 - 2 * DAY - max(T1, dm.start), DAY)
                self._add(dm, min(t, T2 - DAY), _CONS, 4)
        # ---- emit phase A
        for m in self._order(a):
            self._emit(m, a, cut)
        if not decide:
            return
        # ---- the planted outcome, from the channels the account was exposed to so far
        p_buy = sigmoid(seg.base_logit + sum(self.effect[c] for c in a.exposed_ch))
        a.planted["p_contract"] = p_buy
        a.planted["onboarding"] = p_buy
        converted = r.u() < p_buy
        eligible = [PERSONAS[m.k].p_advocate for m in a.members if m.role in ("champion", "user", "it")]
        a.planted["advocacy"] = 1.0 - math.prod(1.0 - p for p in eligible)
        self._plan_after_decision(a, seg, T2, T3, converted)
        for m in self._order(a):
            self._emit(m, a, math.inf)

    def _persona_of(self, role: str, seg: Segment) -> int:
        if role == "champion":
            return _P["project_lead"]
        if role == "decision_maker":
            return _P[seg.decision_maker]
        if role == "finance":
            return _P["senior_executive"]
        if role == "it":
            return _P["tech_evaluator"]
        return _P["daily_user"]

    def _traits(self, k: int, role: str) -> dict[str, object]:
        r = self.r
        P = PERSONAS[k]
        tab = self.trait_cum[k]

        def pick(name: str) -> str:
            keys, cum = tab[name]
            return keys[r.pick(cum)]

        age = round(min(max(r.normal(P.age[0], P.age[1]), P.age[2]), P.age[3]))
        dept = "finance" if role == "finance" else pick("department")
        if role == "decision_maker" and dept == "finance":
            dept = "management"
        return {"role": role, "seniority": pick("seniority"), "department": dept, "age": age,
                "gender": pick("gender"), "device": pick("device")}

    def _order(self, a: Account) -> list[Member]:
        """Emission order: the decision maker first (the contract is theirs), then the rest."""
        return [a.members[1], a.members[0], *a.members[2:]]

    def _add(self, m: Member, t: float, kind: int, arg: int) -> None:
        heapq.heappush(m.plan, (t, len(m.plan), kind, arg))

    def _plan_awareness(self, m: Member, P: B2BPersona, cut: float, ref_props: str | None) -> None:
        r = self.r
        n = 1 + r.poisson(P.awareness_sessions)
        t = m.start
        if t >= cut:  # joins after the decision started: first touch through a known channel
            self._add(m, t, _AW, -3)
        for j in range(n):
            if t >= cut or t >= self.horizon:
                break
            if j == 0 and ref_props is not None:
                self._add(m, t, _AW, -2)  # referral visit
            else:
                self._add(m, t, _AW, -1)
            t += (1.0 + r.exp(P.gap_days)) * DAY
        # a trade fair visit if a fair takes place while this person is active
        if r.u() < P.p_fair:
            end = min(cut, t + 30 * DAY, self.horizon)
            for code, c in enumerate(CAMPAIGNS):
                if c.kind != "event":
                    continue
                a, b = c.days(self.days)
                if m.start < (b * DAY) and a * DAY < end:
                    lo = max(a * DAY, m.start - m.start % DAY + DAY)
                    hi = min(b * DAY, end)
                    if lo < hi:
                        day = math.floor((lo + r.u() * (hi - lo)) / DAY)
                        self._add(m, day * DAY + (9 + r.u() * 8) * 3600.0, _FAIR, code)
                        break
        m.ref_props = ref_props

    def _apply_pricing_dropouts(self, a: Account) -> bool:
        """Cut each member's plan after a pricing view with drop-out; True if the DM dropped out."""
        stalled = False
        for m in a.members:
            items = sorted(m.plan)
            for i, (_t, _s, kind, arg) in enumerate(items):
                if kind == _CONS and (arg & 3) == 2:
                    m.plan = items[:i + 1]
                    heapq.heapify(m.plan)
                    if m is a.members[1]:
                        stalled = True
                    break
        return stalled

    def _plan_after_decision(self, a: Account, seg: Segment, T2: float, T3: float, converted: bool) -> None:
        r = self.r
        champ, dm = a.members[0], a.members[1]
        it = a.members[2]
        self._add(it, T2 + (0.5 + r.exp(2.0)) * DAY, _TRIAL, 0)
        self._add(dm, T2 + (1.0 + r.exp(5.0)) * DAY, _CALL, 1)
        self._add(champ, T2 + (1.0 + r.exp(5.0)) * DAY, _CALL, 1)
        t_prop = max(T2 + 2 * DAY, T3 - (2.0 + r.exp(4.0)) * DAY)
        self._add(dm, t_prop, _PROPOSAL, 0)
        if converted:
            self._add(dm, max(T3, t_prop + DAY), _CONTRACT, 0)
        # continued awareness/consideration during the decision (known channels only)
        for m in a.members:
            P = PERSONAS[m.k]
            t = max(T2, m.start) + r.exp(P.gap_days) * DAY
            for _ in range(r.poisson(0.8)):
                self._add(m, t, _AW, -3)
                t += (1.0 + r.exp(P.gap_days)) * DAY
        if not converted:
            return
        T4 = max(T3, t_prop + DAY) + (2.0 + r.exp(5.0)) * DAY
        for m in a.members:
            P = PERSONAS[m.k]
            if m.role in ("champion", "it", "user"):
                for s in range(1 + r.below(3)):
                    self._add(m, T4 + s * 7 * DAY + r.u() * DAY, _ONBOARD, s + 1)
            # product use: weekly rhythm
            if P.uses_per_week > 0:
                t = T4 + (0.5 + r.exp(3.0)) * DAY
                while t < self.horizon:
                    self._add(m, t, _USE, 0)
                    t += r.exp(7.0 / P.uses_per_week) * DAY + 3600.0
            month = T4 + r.u() * 30 * DAY
            while month < self.horizon:
                if r.u() < P.p_support_per_month:
                    self._add(m, month + r.u() * 30 * DAY, _SUPPORT, 0)
                month += 30 * DAY
            if m.role in ("champion", "user", "it") and r.u() < P.p_advocate:
                ta = T4 + (20.0 + r.exp(25.0)) * DAY
                x = r.u()
                self._add(m, ta, _REVIEW if x < 0.5 else (_REFERRAL if x < 0.8 else _CASESTUDY), 0)
        n = 1
        t = max(T3, t_prop + DAY) + 30 * DAY
        while t < self.horizon:
            self._add(dm, t, _RENEWAL, n)
            n += 1
            t += 30 * DAY
        if r.u() < seg.p_upsell:
            self._add(dm, T4 + (30.0 + r.exp(40.0)) * DAY, _UPSELL, 0)

    # ------------------------------------------------------------------ emission
    def _emit(self, m: Member, a: Account, cut: float) -> None:
        self._load(m)
        r = self.r
        P = PERSONAS[m.k]
        while m.plan and self.alive and not m.stopped:
            if m.plan[0][0] >= cut:
                break
            t, _s, kind, arg = heapq.heappop(m.plan)
            if t < self.t_last + 300.0:
                t = self.t_last + 300.0 + r.exp(1800.0)
            if t >= self.horizon:
                self.alive = False
                break
            if kind == _AW:
                self._aw(m, a, t, arg)
            elif kind == _FAIR:
                self._fair(m, a, t, arg)
            elif kind == _CONS:
                self._cons(m, a, t, arg)
            elif kind == _DEMO:
                self._web(m, a, t, self._known_source(m, a))
                self._ensure_identified(a)
                self.e(_E["demo_requested"], _TP_WEBSITE, self.u_demo,
                       f'{{"plan":"{SEGMENTS[a.seg].plan}"}}')
                self.commit()
            elif kind == _TRIAL:
                self._web(m, a, t, self._known_source(m, a))
                self._ensure_identified(a)
                self.e(_E["trial_started"], _TP_PRODUCT, self.u_trial,
                       f'{{"plan":"{SEGMENTS[a.seg].plan}","trial_days":14}}')
                if r.u() < 0.4:
                    self.survey(K_CES, 2, _TP_PRODUCT)
                self.commit()
            elif kind == _USE:
                if a.contract_committed:
                    self._use(m, a, t, P)
            elif self.user >= 0:
                self._server(m, a, t, kind, arg)
        self._save(m)

    def _known_source(self, m: Member, a: Account) -> int:
        """A touchpoint the account already came through (no new exposure after the decision)."""
        if a.exposed_tps:
            return a.exposed_tps[self.r.below(len(a.exposed_tps))]
        return _TP_WEBSITE

    def _web(self, m: Member, a: Account, t: float, tp: int, props: str | None = None) -> None:
        """Begin a web session with a visit from ``tp``."""
        self.begin(t)
        self.pick_device(m.human)
        if m.aliases_left and self.user >= 0 and self.r.u() < P_ALIAS_PER_SESSION:
            m.aliases_left -= 1
            self.alias(self.new_user_id(m.human.gidx, "lead"))
            self.step(20.0)
        tp, camp = self.campaign_for(tp, t, linger_ok=True)
        ch = V.TP_CH[tp]
        self.s_ch = ch
        self.row(V.E_VISIT, tp, ch, camp, self.u_lp[camp] if camp >= 0 else self.u_home, props)
        # exposures are recorded right away: a session that does not fit into the window ends
        # the member's journey, and then no decision of the account falls into the window either
        if tp not in a.exposed_tps and tp != _TP_REFERRAL:  # a referral link is used once
            a.exposed_tps.append(tp)
        a.exposed_ch.add(ch)
        if self.user >= 0 and not self.ident[self.dev]:
            self.identify()

    def _ensure_identified(self, a: Account) -> None:
        m = self.m
        assert m is not None
        if self.user < 0:
            self.user = self.new_user_id(m.human.gidx, "lead")
        if not self.ident[self.dev]:
            self.identify()
        if self.acct < 0:
            self.group(a.acct, self.acct_traits_of(a))

    def acct_traits_of(self, a: Account) -> str:
        return to_json(a.traits)

    def _aw(self, m: Member, a: Account, t: float, arg: int) -> None:
        r = self.r
        P = PERSONAS[m.k]
        if arg == -2:
            self._web(m, a, t, _TP_REFERRAL, m.ref_props)
        elif arg == -3:
            self._web(m, a, t, self._known_source(m, a))
        else:
            self._web(m, a, t, self.src_tp[r.pick(m.mix_cum)])
        if r.u() < P.p_blog:
            for _ in range(1 + r.poisson(0.5)):
                b = r.below(len(BLOG_ARTICLES))
                self.e(_E["blog_read"], TPC["blog"], self.u_blog[b], f'{{"article":"{BLOG_ARTICLES[b]}"}}', mean=120.0)
        if r.u() < 0.01:
            self.survey(K_CSAT, 0, _TP_WEBSITE)
        self.commit()

    def _fair(self, m: Member, a: Account, t: float, code: int) -> None:
        day = self.ct.day(t)
        if self.ct.live[_TP_FAIR][day] is None:
            return
        self.begin(t)
        self.pick_device(m.human, allow_new=False)
        booth = f"B{1 + self.r.below(40)}"
        self.row(V.E_TRADE_FAIR, _TP_FAIR, V.TP_CH[_TP_FAIR], code, -1,
                 f'{{"fair":"{CAMPAIGNS[code].key}","booth":"{booth}"}}')
        a.exposed_ch.add(V.TP_CH[_TP_FAIR])
        if self.r.u() < 0.05:
            self.survey(K_CSAT, 0, _TP_FAIR)
        self.commit()

    def _cons(self, m: Member, a: Account, t: float, arg: int) -> None:
        r = self.r
        P = PERSONAS[m.k]
        self._web(m, a, t, self.src_tp[r.pick(m.mix_cum)])
        if r.u() < P.p_review_read:
            self.e(_E["review_read"], TPC["review_portal"], self.u_reviews, '{"portal":"softwarereviews"}', mean=150.0)
        if r.u() < P.p_case_study:
            for _ in range(1 + r.poisson(0.5)):
                c = r.below(len(CASE_STUDIES))
                self.e(_E["case_study_view"], _TP_WEBSITE, self.u_cs[c], f'{{"case_study":"{CASE_STUDIES[c]}"}}', mean=90.0)
        if arg & 4:
            self._ensure_identified(a)
            w = r.below(len(WHITEPAPERS))
            self.e(_E["whitepaper_download"], _TP_WEBSITE, self.u_wp[w], f'{{"whitepaper":"{WHITEPAPERS[w]}"}}')
        pricing = arg & 3
        if pricing:
            self.e(_E["pricing_view"], _TP_WEBSITE, self.u_pricing, f'{{"plan":"{SEGMENTS[a.seg].plan}"}}')
            if pricing == 2:  # the pain point: gone right after the price
                m.stopped = True
                if r.u() < 0.2:
                    self.survey(K_CES, 1, _TP_WEBSITE)
                self.commit()
                return
            # someone who stays comes back soon (a follow-up session)
            self._add(m, t + (1.0 + r.exp(4.0)) * DAY, _AW, -3)
        if r.u() < 0.03:
            self.survey(K_CES, 1, _TP_WEBSITE)
        self.commit()

    def _use(self, m: Member, a: Account, t: float, P: B2BPersona) -> None:
        r = self.r
        self.begin(t)
        self.pick_device(m.human)
        self.s_ch = V.TP_CH[_TP_PRODUCT]
        if self.user < 0 or not self.ident[self.dev] or self.acct < 0:
            self.now += 1.0
            self._ensure_identified(a)  # first sign-in to the product
        self.e(_E["login"], _TP_PRODUCT, self.u_login, None, mean=5.0)
        m.onboarded = True
        for _ in range(1 + r.poisson(P.features_per_use - 1.0)):
            f = r.below(len(FEATURES))
            self.e(_E["feature_used"], _TP_PRODUCT, self.u_feature[f], f'{{"feature":"{FEATURES[f]}"}}', mean=120.0)
        self.commit()

    def _server(self, m: Member, a: Account, t: float, kind: int, arg: int) -> None:
        """CRM / back-office rows: user id (and account) only."""
        r = self.r
        seg = SEGMENTS[a.seg]
        plan = seg.plan
        if kind in (_REVIEW, _REFERRAL, _CASESTUDY) and not m.onboarded:
            return
        if kind == _REFERRAL:  # sent from a web session
            self._web(m, a, t, _TP_WEBSITE)
            self.e(V.E_REFERRAL_SENT, _TP_REFERRAL, self.u_refer, '{"medium":"email"}')
            referrer = self.user
            if self.commit() and r.u() < P_REFERRAL_SUCCESS:
                self.refq.append((self.now, referrer))
            return
        self.begin(t)
        if kind == _WEBINAR:
            w = WEBINARS[arg]
            self.row(_E["webinar_attended"], TPC["webinar"], V.TP_CH[TPC["webinar"]], -1, self.u_webinar[arg],
                     f'{{"webinar":"{w}","minutes":{20 + r.below(40)}}}', client=False)
            if r.u() < 0.1:
                self.survey(K_CSAT, 1, TPC["webinar"])
        elif kind == _CALL:
            ctype = ("discovery", "demo")[arg]
            self.row(_E["sales_call"], TPC["sales_team"], V.TP_CH[TPC["sales_team"]], -1, -1,
                     f'{{"call_type":"{ctype}","minutes":{15 + r.below(45)}}}', client=False)
        elif kind == _PROPOSAL:
            self.row(_E["proposal_sent"], TPC["sales_team"], V.TP_CH[TPC["sales_team"]], -1, -1,
                     f'{{"plan":"{plan}"}}', client=False)
        elif kind == _CONTRACT:
            acv = round(seg.acv_median * math.exp(0.3 * r.z()) * (len(a.members) / 4.0), 2)
            self.row(V.E_CONTRACT, TPC["sales_team"], V.TP_CH[TPC["sales_team"]], -1, -1,
                     f'{{"plan":"{plan}","seats":{len(a.members) * 3},"term_months":12}}', client=False)
            self.revenue(acv)
            if r.u() < 0.6:
                self.survey(K_CSAT, 2, TPC["sales_team"])
            if self.commit():
                a.contract_committed = True
            return
        elif not a.contract_committed:
            return
        elif kind == _ONBOARD:
            self.row(_E["onboarding_session"], TPC["onboarding"], V.TP_CH[TPC["onboarding"]], -1, -1,
                     f'{{"session":{arg}}}', client=False)
            m.onboarded = True
            if r.u() < 0.4:
                self.survey(K_CSAT, 3, TPC["onboarding"])
        elif kind == _SUPPORT:
            topic = ("integration", "billing", "permissions", "bug", "data_import")[r.below(5)]
            self.row(V.E_SUPPORT, TPC["support"], V.TP_CH[TPC["support"]], -1, -1,
                     f'{{"topic":"{topic}"}}', client=False)
            m.onboarded = True
            if r.u() < 0.4:
                self.survey(K_CSAT, 3, TPC["support"])
        elif kind == _RENEWAL:
            self.row(_E["renewal"], TPC["renewal"], V.TP_CH[TPC["renewal"]], -1, -1,
                     f'{{"plan":"{plan}","period":{arg}}}', client=False)
        elif kind == _UPSELL:
            value = round(seg.acv_median * 0.3 * math.exp(0.3 * r.z()), 2)
            self.row(V.E_UPSELL, TPC["renewal"], V.TP_CH[TPC["renewal"]], -1, -1,
                     f'{{"plan":"{plan}","addon":"extra_seats"}}', client=False)
            self.revenue(value)
        elif kind == _REVIEW:
            rating = min(5, max(1, round(1 + 4 * self.level[m.k][4] + 0.8 * r.z())))
            self.row(_E["review_written"], TPC["review_portal"], V.TP_CH[TPC["review_portal"]], -1,
                     self.u_reviews, f'{{"rating":{rating}}}', client=False)
            if r.u() < 0.8:
                self.survey(K_NPS, 4, TPC["review_portal"])
        elif kind == _CASESTUDY:
            self.row(_E["case_study_participation"], _TP_WEBSITE, V.TP_CH[_TP_WEBSITE], -1, -1,
                     '{"format":"interview"}', client=False)
            if r.u() < 0.8:
                self.survey(K_NPS, 4, _TP_WEBSITE)
        self.commit()

    # ------------------------------------------------------------------ generator interface
    def truth_spec(self) -> TruthSpec:
        return TruthSpec(
            stages=V.B2B_STAGES,
            stage_code=self.stage_code,
            first_conversion=frozenset((V.E_CONTRACT,)),
            revenue_events=frozenset((V.E_CONTRACT, V.E_UPSELL)),
            exposure_events=frozenset((V.E_VISIT, V.E_TRADE_FAIR)),
            persona_keys=PERSONA_KEYS,
            account_level=True,
            pain_event=_E["pricing_view"],
            n_campaigns=len(CAMPAIGNS),
        )

    def campaigns(self) -> tuple[Campaign, ...]:
        return CAMPAIGNS

    def people_columns(self) -> list[str]:
        return ["account_id", "role", "seniority", "department", "age", "gender", "device"]

    def account_of(self) -> np.ndarray:
        out = np.zeros(len(self.humans), dtype=np.int64)
        for i, a in enumerate(self.accounts):
            for m in a.members:
                out[m.human.pid] = i
        return out

    def _init_acc_tally(self) -> None:
        ns = len(V.B2B_STAGES)
        self.acc_tally = {
            "accounts": 0, "stage_accounts": np.zeros(ns, dtype=np.int64),
            "stage_accounts_all": np.zeros(ns, dtype=np.int64),
            "planted_sum": np.zeros(ns), "planted_n": np.zeros(ns),
            "by_segment": {s.key: {"accounts": 0, "converted": 0, "revenue": 0.0, "reached_decision": 0}
                           for s in SEGMENTS},
            "sizes": {n: 0 for n in range(3, 9)},
            "converted": 0, "known": 0, "referred": 0,
            "channel": {c: {"exposed_at_decision": 0, "converted": 0} for c in CHANNEL_EFFECTS},
        }

    def batch_extra(self, facts: PersonFacts) -> None:
        t = self.acc_tally
        decision = V.B2B_STAGES.index("decision")
        ns = len(V.B2B_STAGES)
        n_acc = len(self.accounts)
        if n_acc == 0:
            return
        acc_of = self.account_of()
        fur = np.full(n_acc, -1, dtype=np.int64)
        np.maximum.at(fur, acc_of, facts.furthest)
        conv = np.zeros(n_acc, dtype=np.int64)
        np.maximum.at(conv, acc_of, facts.converted.astype(np.int64))
        known = np.zeros(n_acc, dtype=np.int64)
        np.maximum.at(known, acc_of, facts.identified.astype(np.int64))  # identify -> group
        # what the data can show: an account is known through its members' group calls, and
        # reaches a stage when one of those (identified) members does
        fur_known = np.full(n_acc, -1, dtype=np.int64)
        ident = facts.identified
        np.maximum.at(fur_known, acc_of[ident], facts.furthest[ident])
        revenue = np.bincount(acc_of, weights=facts.revenue, minlength=n_acc)
        # channels per account (union over members), for accounts that reached decision
        n_ch = len(V.CHANNELS)
        pairs = np.unique(acc_of[facts.exposed.owner] * n_ch + facts.exposed.values)
        a_idx, ch = pairs // n_ch, pairs % n_ch
        m = fur[a_idx] >= decision
        exp_n = np.bincount(ch[m], minlength=n_ch)
        conv_n = np.bincount(ch[m & (conv[a_idx] > 0)], minlength=n_ch)
        for c, name in enumerate(V.CHANNELS):
            if name in t["channel"]:
                t["channel"][name]["exposed_at_decision"] += int(exp_n[c])
                t["channel"][name]["converted"] += int(conv_n[c])
        for i, a in enumerate(self.accounts):
            f = int(fur[i])
            t["accounts"] += 1
            t["sizes"][len(a.members)] += 1
            for s in range(ns):
                if f >= s:
                    t["stage_accounts_all"][s] += 1
                if fur_known[i] >= s:
                    t["stage_accounts"][s] += 1
                if f >= 0 and s <= f + 1:
                    p = a.planted.get(V.B2B_STAGES[s])
                    if p is not None:
                        t["planted_sum"][s] += p
                        t["planted_n"][s] += 1
            seg = t["by_segment"][SEGMENTS[a.seg].key]
            seg["accounts"] += 1
            seg["revenue"] += float(revenue[i])
            if f >= decision:
                seg["reached_decision"] += 1
            if conv[i]:
                seg["converted"] += 1
                t["converted"] += 1
            if a.referred:
                t["referred"] += 1
            if known[i]:
                t["known"] += 1
                self.all_accounts.append((self.log.ids[a.acct], a.traits))

    def account_rows(self) -> list[list[object]]:
        """accounts.csv rows of the accounts that became known in this batch (via group calls)."""
        rows = [[acct, tr["industry"], tr["employees"], tr["country"], tr["plan"]] for acct, tr in self.all_accounts]
        self.all_accounts = []
        return rows

    def truth_extra_columns(self, facts: PersonFacts) -> dict[str, pa.Array]:
        ids = self.log.ids
        acct = [""] * len(self.humans)
        conv = [False] * len(self.humans)
        for a in self.accounts:
            c = any(bool(facts.converted[m.human.pid]) for m in a.members)
            for m in a.members:
                acct[m.human.pid] = ids[a.acct]
                conv[m.human.pid] = c
        return {"account_id": pa.array(acct, type=pa.string()), "account_converted": pa.array(conv, type=pa.bool_())}

    def truth_extra(self, tally: Tally) -> dict[str, Any]:
        t = self.acc_tally
        ns = len(V.B2B_STAGES)
        account_stages: dict[str, dict[str, Any]] = {}
        prev_all = None
        for s in range(ns):
            n = int(t["stage_accounts"][s])
            n_all = int(t["stage_accounts_all"][s])
            planted = float(t["planted_sum"][s] / t["planted_n"][s]) if t["planted_n"][s] else None
            account_stages[V.B2B_STAGES[s]] = {
                "accounts": n,
                "accounts_all": n_all,
                "planted_rate": round(planted, 6) if planted is not None else None,
                "realized_rate": round(n_all / prev_all, 6) if prev_all else (1.0 if s == 0 else None),
            }
            prev_all = n_all
        channel = {}
        for c in sorted(CHANNEL_EFFECTS, key=lambda ch: -CHANNEL_EFFECTS[ch]):
            d = t["channel"][c]
            n = d["exposed_at_decision"]
            channel[c] = {"exposed_at_decision": n, "converted": d["converted"],
                          "conversion_rate": round(d["converted"] / n, 6) if n else None}
        return {
            "account_stages": account_stages,
            "channel_realized": channel,
            "accounts": {
                "total": t["accounts"],
                "known": t["known"],
                "converted": t["converted"],
                "referred": t["referred"],
                "committee_sizes": {str(k): v for k, v in t["sizes"].items()},
                "by_segment": {k: {**v, "revenue": round(v["revenue"], 2)} for k, v in t["by_segment"].items()},
                "segments_planted": {s.key: {kk: vv for kk, vv in asdict(s).items() if kk != "key"}
                                     for s in SEGMENTS},
                "roles": list(ROLES),
            },
            "counts": {"accounts": t["accounts"], "accounts_converted": t["converted"]},
        }

    @staticmethod
    def planted() -> dict[str, Any]:
        personas = {}
        shares = _persona_shares()
        for p in PERSONAS:
            d = asdict(p)
            key = d.pop("key")
            d["share"] = shares[key]
            personas[key] = d
        return {
            "personas": personas,
            "channel_effects": dict(CHANNEL_EFFECTS),
            "base_logit": {s.key: s.base_logit for s in SEGMENTS},
            "effect_model": "account level: logit P(contract | decision) = segment base_logit + sum of "
            "the effects of the distinct channels any member of the account had a visit or trade fair "
            "visit from before the account's decision start",
            "pain_point": {
                "event": "pricing_view",
                "persona": "startup_founder",
                "stage": "consideration",
                "effect": "the person drops out right after the event (it is their last touch); when "
                "the decision maker drops out the account never reaches decision",
                "planted_abandon_rate": {p.key: p.pricing_abandon for p in PERSONAS},
            },
            "surveys": SURVEY.to_dict(),
            "identity": {"p_second_device": P_SECOND_DEVICE, "p_alias": P_ALIAS,
                         "p_alias_chain": P_ALIAS_CHAIN},
            "referral": {"p_take": P_TAKE_REFERRAL, "p_success": P_REFERRAL_SUCCESS},
        }


def _persona_shares() -> dict[str, float]:
    """Expected persona shares implied by segment shares, committee sizes and roles."""
    out = dict.fromkeys(PERSONA_KEYS, 0.0)
    total = 0.0
    for s in SEGMENTS:
        for size, w in s.sizes.items():
            for role in ROLES[:size]:
                if role == "champion":
                    k = "project_lead"
                elif role == "decision_maker":
                    k = s.decision_maker
                elif role == "finance":
                    k = "senior_executive"
                elif role == "it":
                    k = "tech_evaluator"
                else:
                    k = "daily_user"
                out[k] += s.share * w
                total += s.share * w
    return {k: round(v / total, 6) for k, v in out.items()}
