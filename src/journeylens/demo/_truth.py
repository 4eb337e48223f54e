"""Realized ground truth: tallies over the committed rows of every batch.

Nothing here reads the written files. Each batch's numpy columns (the very
arrays the Parquet writer receives) are counted once; person-level facts are
derived from the rows carrying that person's batch index (``pid``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa

from journeylens.demo import _text
from journeylens.demo import _vocab as V
from journeylens.demo._campaigns import Campaign
from journeylens.demo._log import Columns, EventLog
from journeylens.demo._sim import KINDS, Human
from journeylens.schema import SURVEY_SCALES


@dataclass(frozen=True)
class TruthSpec:
    """What counts as what in a scenario."""

    stages: tuple[str, ...]
    stage_code: list[int]
    first_conversion: frozenset[int]
    """Event codes of the conversion (shop: first purchase; b2b: contract)."""
    revenue_events: frozenset[int]
    exposure_events: frozenset[int]
    """Rows that expose a person to their channel (visits; b2b also trade fair visits)."""
    persona_keys: tuple[str, ...]
    account_level: bool
    """b2b: exposures count until the account's conversion, not the person's."""
    pain_event: int
    n_campaigns: int


@dataclass
class Grouped:
    """Distinct values per person: ``values[offsets[i]:offsets[i + 1]]`` belong to person i."""

    offsets: np.ndarray
    values: np.ndarray

    @property
    def owner(self) -> np.ndarray:
        """The person of every value."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_arrow(self, vocab: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)),
                                        vocab.take(pa.array(self.values, type=pa.int64())))


def grouped_unique(pid: np.ndarray, vals: np.ndarray, n: int, width: int) -> Grouped:
    """Distinct ``vals`` per pid, sorted."""
    key = np.unique(pid.astype(np.int64) * width + vals.astype(np.int64))
    p = key // width
    return Grouped(offsets=np.searchsorted(p, np.arange(n + 1)), values=key % width)


@dataclass
class PersonFacts:
    """Per-human facts of one batch (index = pid)."""

    root: pa.Array
    identified: np.ndarray
    furthest: np.ndarray
    converted: np.ndarray
    first_conv_us: np.ndarray
    n_purchases: np.ndarray
    revenue: np.ndarray
    exposed: Grouped
    """channel codes"""
    anonymous_ids: Grouped
    """indices into the batch's id table"""
    user_ids: Grouped
    n_rows: np.ndarray
    reached_decision: np.ndarray


def person_facts(spec: TruthSpec, log: EventLog, cols: Columns, humans: list[Human],
                 account_of: np.ndarray | None) -> PersonFacts:
    n = len(humans)
    pid = cols.pid
    ev = cols.ev
    big = np.iinfo(np.int64).max
    stage = np.asarray(spec.stage_code, dtype=np.int32)[ev]
    furthest = np.full(n, -1, dtype=np.int32)
    np.maximum.at(furthest, pid, stage)
    n_rows = np.bincount(pid, minlength=n)
    conv_rows = np.isin(ev, list(spec.first_conversion))
    first_conv = np.full(n, big, dtype=np.int64)
    np.minimum.at(first_conv, pid[conv_rows], cols.t_us[conv_rows])
    converted = first_conv < big
    rev_rows = np.isin(ev, list(spec.revenue_events))
    n_purchases = np.bincount(pid[rev_rows], minlength=n)
    revenue = np.bincount(pid, weights=np.nan_to_num(cols.revenue), minlength=n)
    reached_decision = furthest >= spec.stages.index("decision")
    # exposures before the conversion (of the person, or b2b: of the person's account)
    cutoff = first_conv
    if spec.account_level and account_of is not None and n:
        acc_conv = np.full(int(account_of.max()) + 1, big, dtype=np.int64)
        np.minimum.at(acc_conv, account_of, first_conv)
        cutoff = acc_conv[account_of]
    exp_rows = np.isin(ev, list(spec.exposure_events)) & (cols.t_us < cutoff[pid]) & (cols.ch >= 0)
    exposed = grouped_unique(pid[exp_rows], cols.ch[exp_rows], n, len(V.CHANNELS))
    width = max(len(log.ids), 1)
    a_rows = cols.anon >= 0
    anon = grouped_unique(pid[a_rows], cols.anon[a_rows], n, width)
    u_rows = cols.user >= 0
    users = grouped_unique(pid[u_rows], cols.user[u_rows], n, width)
    # root: the user id of the person's last row that has one (after an alias only the new id
    # is used), else the (only) anonymous id
    last_user_row = np.full(n, -1, dtype=np.int64)
    rows_idx = np.flatnonzero(u_rows)
    np.maximum.at(last_user_row, pid[rows_idx], rows_idx)
    has_user = last_user_row >= 0
    first_anon = np.where(anon.counts() > 0, anon.values[np.minimum(anon.offsets[:-1], len(anon.values) - 1)]
                          if len(anon.values) else -1, -1)
    root_idx = np.where(has_user, cols.user[np.maximum(last_user_row, 0)] if cols.n else -1, first_anon)
    ids = pa.array(log.ids, type=pa.large_string()).cast(pa.string())
    root = ids.take(pa.array(root_idx, mask=root_idx < 0, type=pa.int64()))
    identified = np.zeros(n, dtype=bool)
    identified[pid[ev == V.E_IDENTIFY]] = True
    return PersonFacts(root=root, identified=identified, furthest=furthest, converted=converted,
                       first_conv_us=first_conv, n_purchases=n_purchases, revenue=revenue,
                       exposed=exposed, anonymous_ids=anon, user_ids=users,
                       n_rows=n_rows, reached_decision=reached_decision)


@dataclass
class Tally:
    """Running totals over all batches."""

    spec: TruthSpec
    days: int
    humans: int = 0
    humans_with_rows: int = 0
    rows: int = 0
    by_name: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    stage_people: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    stage_touches: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    planted_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    planted_n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    visits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    qr_scans: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    video_views: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fair_visits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    persona: dict[str, Counter[str]] = field(default_factory=dict)
    persona_revenue: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    persona_furthest: dict[str, Counter[str]] = field(default_factory=dict)
    channel: dict[str, Counter[str]] = field(default_factory=dict)
    identity: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    revenue: float = 0.0
    pain: dict[str, Counter[str]] = field(default_factory=dict)
    survey_n: np.ndarray = field(default_factory=lambda: np.zeros(0))
    survey_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    survey_norm_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    themes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    languages: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    polarity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        ns = len(self.spec.stages)
        self.stage_people = np.zeros(ns, dtype=np.int64)
        self.stage_touches = np.zeros(ns, dtype=np.int64)
        self.planted_sum = np.zeros(ns)
        self.planted_n = np.zeros(ns)
        shape = (self.days, self.spec.n_campaigns)
        self.visits = np.zeros(shape, dtype=np.int64)
        self.qr_scans = np.zeros(shape, dtype=np.int64)
        self.video_views = np.zeros(shape, dtype=np.int64)
        self.fair_visits = np.zeros(shape, dtype=np.int64)
        self.persona = {k: Counter() for k in self.spec.persona_keys}
        self.persona_furthest = {k: Counter() for k in self.spec.persona_keys}
        self.pain = {k: Counter() for k in self.spec.persona_keys}
        self.channel = {c: Counter() for c in V.CHANNELS}
        self.survey_n = np.zeros((ns, len(KINDS)))
        self.survey_sum = np.zeros((ns, len(KINDS)))
        self.survey_norm_sum = np.zeros(ns)
        self.themes = np.zeros((ns, len(_text.THEMES)), dtype=np.int64)
        self.languages = np.zeros((ns, len(_text.LANGUAGES)), dtype=np.int64)
        self.polarity = np.zeros((ns, 2), dtype=np.int64)

    # ------------------------------------------------------------------ per batch
    def add(self, log: EventLog, cols: Columns, humans: list[Human], facts: PersonFacts,
            start_us: int) -> None:
        spec = self.spec
        ev = cols.ev
        n = len(humans)
        self.humans += n
        self.humans_with_rows += int((facts.n_rows > 0).sum())
        self.rows += cols.n
        codes = np.bincount(ev, minlength=len(V.EVENT_KEYS))
        for code, c in enumerate(codes.tolist()):
            if c:
                self.by_name[V.EVENT_NAMES[code]] += c
                self.by_type[V.TYPES[V.EVENT_TYPES[code]]] += c
                self.counts["events." + V.EVENT_KEYS[code]] += c
        stage = np.asarray(spec.stage_code, dtype=np.int32)[ev]
        touch = stage >= 0
        ns = len(spec.stages)
        self.stage_touches += np.bincount(stage[touch], minlength=ns)
        fur = facts.furthest
        for s in range(ns):
            self.stage_people[s] += int((fur >= s).sum())
        # planted rate: mean planted p(stage | previous stage) over people who reached the previous
        names = spec.stages
        for i, h in enumerate(humans):
            f = int(fur[i])
            if f < 0:
                continue
            for s in range(min(f + 2, ns)):
                p = h.planted.get(names[s])
                if p is not None:
                    self.planted_sum[s] += p
                    self.planted_n[s] += 1
        # campaigns per day
        day = ((cols.t_us - start_us) // 86_400_000_000).astype(np.int64)
        camp = cols.camp
        nc = spec.n_campaigns
        for arr, code in ((self.visits, V.E_VISIT), (self.qr_scans, V.E_QR),
                          (self.video_views, V.E_VIDEO), (self.fair_visits, V.E_TRADE_FAIR)):
            m = (ev == code) & (camp >= 0)
            if m.any():
                arr += np.bincount(day[m] * nc + camp[m], minlength=self.days * nc).reshape(self.days, nc)
        # personas, conversions, channels
        keys = spec.persona_keys
        for i, h in enumerate(humans):
            k = keys[h.persona]
            pc = self.persona[k]
            pc["humans"] += 1
            pc["events"] += int(facts.n_rows[i])
            if facts.identified[i]:
                pc["identified"] += 1
            if facts.reached_decision[i]:
                pc["reached_decision"] += 1
            if facts.converted[i]:
                pc["converted"] += 1
            pc["purchases"] += int(facts.n_purchases[i])
            self.persona_revenue[k] += float(facts.revenue[i])
            if fur[i] >= 0:
                self.persona_furthest[k][spec.stages[fur[i]]] += 1
            if h.referred:
                self.counts["referred_humans"] += 1
                if facts.converted[i]:
                    self.counts["referred_humans_converted"] += 1
        if not spec.account_level:
            owner = facts.exposed.owner
            m = facts.reached_decision[owner]
            n_ch = len(V.CHANNELS)
            exp_n = np.bincount(facts.exposed.values[m], minlength=n_ch)
            conv_n = np.bincount(facts.exposed.values[m & facts.converted[owner]], minlength=n_ch)
            for c, name in enumerate(V.CHANNELS):
                self.channel[name]["exposed_at_decision"] += int(exp_n[c])
                self.channel[name]["converted"] += int(conv_n[c])
        self.revenue += float(np.nansum(cols.revenue))
        self.counts["conversions"] += int(facts.converted.sum())
        self.counts["revenue_events"] += int(facts.n_purchases.sum())
        # identity
        idn = self.identity
        idn["identified_persons"] += int(facts.identified.sum())
        idn["never_identified"] += int((~facts.identified & (facts.n_rows > 0)).sum())
        n_anon = facts.anonymous_ids.counts()
        idn["anonymous_ids"] += int(n_anon.sum())
        idn["persons_with_two_devices"] += int((n_anon >= 2).sum())
        idn["second_device_flagged"] += sum(1 for h in humans if h.second_device)
        is_identify = ev == V.E_IDENTIFY
        idn["identify_messages"] += int(is_identify.sum())
        idn["stitched_anonymous_ids"] += len(np.unique(cols.anon[is_identify]))
        is_alias = ev == V.E_ALIAS
        idn["alias_messages"] += int(is_alias.sum())
        aliases_per = np.bincount(cols.pid[is_alias], minlength=n)
        idn["persons_with_alias"] += int((aliases_per >= 1).sum())
        idn["alias_chains"] += int((aliases_per >= 2).sum())
        idn["max_alias_chain"] = max(idn["max_alias_chain"], int(aliases_per.max()) if n else 0)
        idn["user_ids"] += len(facts.user_ids.values)
        idn["group_messages"] += int((ev == V.E_GROUP).sum())
        # anonymous visits of people identified later
        is_visit = ev == V.E_VISIT
        later = is_visit & (cols.user < 0) & facts.identified[cols.pid]
        self.counts["anonymous_visits_later_identified"] += int(later.sum())
        self.counts["anonymous_visits"] += int((is_visit & (cols.user < 0)).sum())
        tp_ref = V.TP["referral_link"]
        self.counts["referral_visits"] += int((is_visit & (cols.tp == tp_ref)).sum())
        offline_tps = [V.TP[t] for t in ("flyer_qr", "poster_qr", "tv_spot", "store", "trade_fair")]
        self.counts["offline_touches"] += int(np.isin(cols.tp, offline_tps).sum())
        self.counts["tv_visits"] += int((is_visit & (cols.tp == V.TP["tv_spot"])).sum())
        # pain point (shop: no checkout_started right after it -- a shop person's rows are
        # contiguous; b2b: the person's last touch)
        self._pain(cols, humans)
        # surveys
        self._surveys(log)

    def _pain(self, cols: Columns, humans: list[Human]) -> None:
        spec = self.spec
        ev = cols.ev
        rows = np.flatnonzero(ev == spec.pain_event)
        if len(rows) == 0:
            return
        pid = cols.pid
        nxt = rows + 1
        has_next = nxt < cols.n
        same = np.zeros(len(rows), dtype=bool)
        same[has_next] = pid[nxt[has_next]] == pid[rows[has_next]]
        if spec.pain_event == V.E_SHIPPING:
            cont = np.zeros(len(rows), dtype=bool)
            cont[has_next] = ev[nxt[has_next]] == V.E_CHECKOUT
            abandoned = ~(same & cont)
        else:
            # b2b: the person makes no further touch after it
            stage = np.asarray(spec.stage_code, dtype=np.int32)[ev]
            touch_rows = np.flatnonzero(stage >= 0)
            last_touch = np.full(len(humans), -1, dtype=np.int64)
            np.maximum.at(last_touch, pid[touch_rows], touch_rows)
            abandoned = last_touch[pid[rows]] == rows
        keys = spec.persona_keys
        for r_i, ab in zip(rows.tolist(), abandoned.tolist(), strict=True):
            k = keys[humans[int(pid[r_i])].persona]
            self.pain[k]["events"] += 1
            if ab:
                self.pain[k]["abandoned"] += 1

    def _surveys(self, log: EventLog) -> None:
        for row in log.surveys:
            _t, _person, kind, score, comment, _tp, stage, theme, lang, pol, _pid = row
            lo, hi = SURVEY_SCALES[KINDS[kind]]
            self.survey_n[stage, kind] += 1
            self.survey_sum[stage, kind] += score
            self.survey_norm_sum[stage] += (score - lo) / (hi - lo)
            if comment is not None:
                self.themes[stage, theme] += 1
                self.languages[stage, lang] += 1
                self.polarity[stage, pol] += 1
        self.counts["surveys"] += len(log.surveys)

    # ------------------------------------------------------------------ results
    def stages_dict(self) -> dict[str, dict[str, float | int | None]]:
        out: dict[str, dict[str, float | int | None]] = {}
        prev = None
        for s, name in enumerate(self.spec.stages):
            people = int(self.stage_people[s])
            planted = (float(self.planted_sum[s] / self.planted_n[s]) if self.planted_n[s] else None)
            out[name] = {
                "people": people,
                "touches": int(self.stage_touches[s]),
                "planted_rate": round(planted, 6) if planted is not None else None,
                "realized_rate": round(people / prev, 6) if prev else (1.0 if s == 0 else None),
            }
            prev = people
        return out

    def surveys_dict(self) -> dict[str, object]:
        realized: dict[str, object] = {}
        for s, name in enumerate(self.spec.stages):
            n_all = float(self.survey_n[s].sum())
            kinds = {}
            for k, kind in enumerate(KINDS):
                n = int(self.survey_n[s, k])
                if n:
                    kinds[kind] = {"count": n, "mean": round(float(self.survey_sum[s, k] / n), 4)}
            n_comments = int(self.themes[s].sum())
            realized[name] = {
                "count": int(n_all),
                "kinds": kinds,
                "mean_normalized": round(float(self.survey_norm_sum[s] / n_all), 4) if n_all else None,
                "comments": n_comments,
                "themes": {t: int(c) for t, c in zip(_text.THEMES, self.themes[s].tolist(), strict=True) if c},
                "languages": {lang: int(c) for lang, c in
                              zip(_text.LANGUAGES, self.languages[s].tolist(), strict=True)},
                "polarity": {p: int(c) for p, c in
                             zip(_text.POLARITIES, self.polarity[s].tolist(), strict=True)},
            }
        return realized


# ----------------------------------------------------------------------------- costs

CostRow = tuple[str, str, str, float, int | None, int, int | None, str]


COST_SCALE_PEOPLE = 100_000
"""Fixed costs and volumes (print, TV, fees, fairs) are planted per this many people and scaled
to the size of a run, so that cost ratios do not depend on how many people are simulated."""


def cost_rows(campaigns: tuple[Campaign, ...], tally: Tally, start_ordinal: int,
              gen: np.random.Generator, people: int) -> tuple[list[CostRow], dict[str, object]]:
    """Daily cost rows per campaign (see docs/demo.md) and realized totals per channel."""
    scale = people / COST_SCALE_PEOPLE
    days = tally.days
    rows: list[CostRow] = []
    per_channel: dict[str, dict[str, float]] = {}
    per_campaign: dict[str, dict[str, object]] = {}
    noise = gen.standard_normal((days, len(campaigns)))
    for code, c in enumerate(campaigns):
        a, b = c.days(days)
        last = b if c.kind == "online" else days
        tot: dict[str, float] = dict.fromkeys(("rows", "spend", "clicks", "impressions", "video_views"), 0.0)
        for d in range(a, last):
            in_flight = d < b
            video: int | None = None
            impressions: int | None
            if c.kind == "online":
                clicks = int(tally.visits[d, code])
                impressions = max(clicks, round(clicks / c.ctr))
                spend = round(max(0.0, clicks * c.cpc * (1.0 + 0.05 * float(noise[d, code]))), 2)
                if c.touchpoint == "social_ad":
                    video = int(tally.video_views[d, code])
            elif c.kind == "print":
                clicks = int(tally.qr_scans[d, code])
                spread = min(3, b - a)
                volume = max(spread, round(c.volume * scale))
                pieces = volume // spread + (1 if d - a < volume % spread else 0) if d - a < spread else 0
                impressions = pieces
                spend = round(pieces * c.cpc, 2)
            elif c.kind == "tv":
                clicks = int(tally.visits[d, code])
                impressions = round(scale * c.volume * (1.0 + 0.1 * float(noise[d, code]))) if in_flight else 0
                spend = round(scale * c.cpc, 2) if in_flight else 0.0
            elif c.kind == "event":
                clicks = int(tally.fair_visits[d, code])
                impressions = round(scale * c.volume) if in_flight else 0
                spend = round(scale * c.cpc, 2) if in_flight else 0.0
            else:  # fee
                clicks = int(tally.visits[d, code])
                impressions = None
                spend = round(scale * c.cpc, 2) if in_flight and (d - a) % c.fee_every == 0 else 0.0
            day = date.fromordinal(start_ordinal + d).isoformat()
            rows.append((day, c.channel, c.key, float(spend), impressions, clicks, video, "EUR"))
            tot["rows"] += 1
            tot["spend"] += spend
            tot["clicks"] += clicks
            tot["impressions"] += impressions or 0
            tot["video_views"] += video or 0
        ch = per_channel.setdefault(c.channel, dict.fromkeys(tot, 0.0))
        for k in ("spend", "clicks", "impressions", "video_views", "rows"):
            ch[k] += tot[k]
        per_campaign[c.key] = {"channel": c.channel, "spend": round(tot["spend"], 2),
                               "clicks": int(tot["clicks"]), "impressions": int(tot["impressions"]),
                               "video_views": int(tot["video_views"]), "rows": int(tot["rows"])}
    realized = {
        "per_channel": {k: {"spend": round(v["spend"], 2), "clicks": int(v["clicks"]),
                            "impressions": int(v["impressions"]), "video_views": int(v["video_views"]),
                            "rows": int(v["rows"])} for k, v in per_channel.items()},
        "per_campaign": per_campaign,
        "total_spend": round(sum(v["spend"] for v in per_channel.values()), 2),
    }
    return rows, realized
