"""Mechanics shared by the scenario simulators: sessions, identity, sources, surveys.

A simulator works through one block of people at a time and one person at a
time. A person's journey is a sequence of *sessions* (a web visit with what
happens in it, a store visit, a newsletter open, a CRM activity ...) in time
order. A session is appended to the :class:`~journeylens.demo._log.EventLog`
as it is built and committed only if its last row falls inside the window;
otherwise it is cut off again and the person's journey ends there (the window
is over for them). Everything the truth files report is derived from committed
rows, so truncation at the window end never makes the truth disagree with the
data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from journeylens import schema
from journeylens.demo import _text
from journeylens.demo import _vocab as V
from journeylens.demo._campaigns import LINGER_SHARE, CampaignTable
from journeylens.demo._log import EventLog, Mark
from journeylens.demo._random import Rand, cumulative, scramble

DAY = 86400.0
HOUR = 3600.0

KINDS: tuple[str, ...] = ("nps", "csat", "ces")
K_NPS, K_CSAT, K_CES = range(3)
_SCALES = [schema.SURVEY_SCALES[k] for k in KINDS]

HOUR_PROFILES: dict[str, tuple[float, ...]] = {
    # 24 weights, hour 0..23 (UTC)
    "morning": (0, 0, 0, 0, 0, 1, 3, 6, 9, 10, 10, 9, 7, 6, 5, 5, 4, 4, 3, 3, 2, 1, 0, 0),
    "office": (0, 0, 0, 0, 0, 0, 1, 4, 8, 10, 10, 9, 7, 9, 10, 9, 8, 5, 3, 2, 2, 1, 1, 0),
    "evening": (1, 0, 0, 0, 0, 0, 1, 2, 3, 3, 3, 4, 5, 4, 4, 4, 5, 6, 8, 10, 10, 9, 6, 3),
    "late": (4, 2, 1, 0, 0, 0, 0, 1, 2, 2, 3, 4, 5, 4, 4, 4, 5, 5, 6, 8, 10, 10, 9, 7),
}
HOUR_CUM: dict[str, list[float]] = {k: cumulative(v) for k, v in HOUR_PROFILES.items()}


@dataclass(frozen=True)
class SurveyPlan:
    """Planted survey behaviour of a scenario."""

    stages: tuple[str, ...]
    levels: dict[str, float]
    """Planted mean sentiment per stage on [0, 1]; a score is lo + (hi - lo) * level + noise."""
    persona_offsets: dict[str, dict[str, float]]
    """persona -> stage -> offset added to the level (the planted pain shows in the scores)."""
    themes: dict[str, dict[str, float]]
    """stage -> comment theme -> share of comments."""
    languages: dict[str, float]
    comment_rate: float
    noise_sd: float = 0.18

    def planted_mean(self, stage: str, kind: str) -> float:
        lo, hi = schema.SURVEY_SCALES[kind]
        return lo + (hi - lo) * self.levels[stage]

    def to_dict(self) -> dict[str, object]:
        return {
            "levels": self.levels,
            "persona_offsets": self.persona_offsets,
            "noise_sd": self.noise_sd,
            "comment_rate": self.comment_rate,
            "theme_shares": self.themes,
            "language_shares": self.languages,
            "planted_means": {s: {k: round(self.planted_mean(s, k), 4) for k in KINDS}
                              for s in self.stages},
        }


@dataclass
class Human:
    """Per-human facts the truth needs that are not visible in the rows."""

    pid: int
    gidx: int
    persona: int
    account: int = -1
    referred: bool = False
    second_device: bool = False
    planted: dict[str, float] = field(default_factory=dict)
    """Planted probability of reaching each stage from the one before (for planted_rate)."""
    traits: dict[str, object] | None = None


class BaseSim:
    """Session, identity and survey mechanics (see module doc)."""

    scenario: str = ""
    stages: tuple[str, ...] = ()

    def __init__(self, *, seed: int, days: int, campaigns: CampaignTable, survey: SurveyPlan,
                 stage_code: list[int], persona_keys: Sequence[str]) -> None:
        self.seed = seed
        self.days = days
        self.horizon = days * DAY
        self.ct = campaigns
        self.survey_plan = survey
        self.stage_code = stage_code
        self.theme_cum = [cumulative([survey.themes[s].get(t, 0.0) for t in _text.THEMES])
                          for s in survey.stages]
        self.lang_cum = cumulative([survey.languages[lang] for lang in _text.LANGUAGES])
        self.level = [[survey.levels[s] + survey.persona_offsets.get(p, {}).get(s, 0.0)
                       for s in survey.stages] for p in persona_keys]
        self.salt = (seed * 1_000_003 + len(self.scenario)) & ((1 << 40) - 1)
        self.r = Rand(np.random.default_rng(0))  # replaced per block
        self.humans: list[Human] = []
        self.log = EventLog()
        self._bind()
        # current person
        self.pid = 0
        self.persona = 0
        self.anon: list[int] = []
        self.ident: list[bool] = []
        self.dev = 0
        self.user = -1
        self.acct = -1
        self.row_acct = -1
        self.s_ch = -1
        self.now = 0.0
        self.t_last = 0.0
        self.alive = True
        self.mk: Mark = (0, 0)
        self.n_user_ids = 0
        self.traits_text: str | None = None

    # ------------------------------------------------------------------ batch handling
    def new_batch(self) -> None:
        self.log = EventLog()
        self.humans = []
        self._bind()

    def _bind(self) -> None:
        L = self.log
        self._t = L.t.append
        self._ev = L.ev.append
        self._tp = L.tp.append
        self._ch = L.ch.append
        self._camp = L.camp.append
        self._an = L.anon.append
        self._us = L.user.append
        self._ac = L.acct.append
        self._url = L.url.append
        self._pr = L.props.append
        self._pid = L.pid.append

    # ------------------------------------------------------------------ person handling
    def start_person(self, human: Human, t: float) -> None:
        self.humans.append(human)
        self.pid = human.pid
        self.persona = human.persona
        self.anon = [self.log.new_id(f"anon-{scramble(2 * human.gidx, self.salt):012x}")]
        self.ident = [False]
        self.dev = 0
        self.user = -1
        self.acct = -1
        self.row_acct = -1
        self.s_ch = -1
        self.now = t
        self.t_last = t - 3600.0  # nothing before the first session
        self.alive = True
        self.n_user_ids = 0
        self.traits_text = None

    def new_user_id(self, gidx: int, prefix: str) -> int:
        k = self.n_user_ids
        self.n_user_ids += 1
        return self.log.new_id(f"{prefix}-{scramble(8 * gidx + k, self.salt ^ 0x5BD1E995):012x}")

    def add_device(self, gidx: int) -> int:
        self.anon.append(self.log.new_id(f"anon-{scramble(2 * gidx + 1, self.salt):012x}"))
        self.ident.append(False)
        return len(self.anon) - 1

    def pick_device(self, human: Human, allow_new: bool = True) -> None:
        """Device of the next session. A second device is only used once the person is
        identified, and introduced only by sessions that log in on it right away (so its
        anonymous id is always linked); later sessions use it 40% of the time."""
        if human.second_device and self.user >= 0:
            if len(self.anon) == 1:
                if allow_new:
                    self.add_device(human.gidx)
                    self.dev = 1
                else:
                    self.dev = 0
            elif self.ident[1] or allow_new:
                self.dev = 1 if self.r.u() < 0.4 else 0
            else:
                self.dev = 0
        else:
            self.dev = 0

    # ------------------------------------------------------------------ sessions
    def begin(self, t: float) -> None:
        log = self.log
        self.mk = (len(log.t), len(log.surveys))
        self.now = t

    def commit(self) -> bool:
        if self.now >= self.horizon:
            self.log.rollback(self.mk)
            self.alive = False
            return False
        self.t_last = self.now
        return True

    def next_start(self, mean_days: float, hours: list[float], at_least: float = 300.0) -> float:
        """Start of the next session: an exponential gap, placed at a typical hour of day."""
        r = self.r
        lo = self.t_last + at_least
        t = lo + r.exp(mean_days) * DAY
        day = math.floor(t / DAY)
        cand = day * DAY + r.pick(hours) * HOUR + r.u() * HOUR
        if cand < lo:
            cand += DAY * (1 + math.floor((lo - cand) / DAY))
        return cand

    def step(self, mean: float = 40.0) -> float:
        self.now += 2.0 + self.r.exp(mean)
        return self.now

    # ------------------------------------------------------------------ rows
    def row(self, ev: int, tp: int, ch: int, camp: int = -1, url: int = -1,
            props: str | None = None, client: bool = True) -> None:
        """One row at ``self.now`` (advance the clock first). Client rows carry the device's
        anonymous id (and the user id once this device is identified); server rows only the
        user id."""
        self._t(self.now)
        self._ev(ev)
        self._tp(tp)
        self._ch(ch)
        self._camp(camp)
        if client:
            d = self.dev
            self._an(self.anon[d])
            self._us(self.user if self.ident[d] else -1)
        else:
            self._an(-1)
            self._us(self.user)
        self._ac(self.row_acct)
        self._url(url)
        self._pr(props)
        self._pid(self.pid)

    def e(self, ev: int, tp: int, url: int = -1, props: str | None = None, mean: float = 40.0) -> None:
        """An in-session client row: the clock advances, the channel is the session's.
        (``row`` inlined: this is the hottest path of the simulation.)"""
        now = self.now + 2.0 - mean * math.log(1.0 - self.r.u())
        self.now = now
        self._t(now)
        self._ev(ev)
        self._tp(tp)
        self._ch(self.s_ch)
        self._camp(-1)
        d = self.dev
        self._an(self.anon[d])
        self._us(self.user if self.ident[d] else -1)
        self._ac(self.row_acct)
        self._url(url)
        self._pr(props)
        self._pid(self.pid)

    def identify(self) -> None:
        """Link the current device's anonymous id to the user id (and send the traits)."""
        self.now += 1.0 + self.r.exp(2.0)
        self.ident[self.dev] = True
        n = len(self.log.t)
        self.row(V.E_IDENTIFY, -1, -1)
        if self.traits_text is None:
            self.traits_text = to_json(self.humans[-1].traits or {})
        self.log.traits.append((n, self.traits_text))

    def alias(self, new_user: int) -> None:
        self.now += 1.0
        n = len(self.log.t)
        old = self.user
        self.user = new_user
        self.row(V.E_ALIAS, -1, -1, client=False)
        self.log.prev.append((n, old))

    def group(self, acct: int, traits: str) -> None:
        self.now += 1.0 + self.r.exp(2.0)
        n = len(self.log.t)
        self.acct = acct
        self.row_acct = acct
        self.row(V.E_GROUP, -1, -1, client=False)
        self.log.traits.append((n, traits))

    def revenue(self, value: float) -> None:
        """Revenue of the row just emitted."""
        self.log.rev.append((len(self.log.t) - 1, value))

    # ------------------------------------------------------------------ sources
    def campaign_for(self, tp: int, t: float, linger_ok: bool = False) -> tuple[int, int]:
        """(touchpoint, campaign) of a visit from ``tp`` at ``t`` (see _campaigns)."""
        ct = self.ct
        if tp not in ct.by_tp:
            return tp, -1
        day = ct.day(t)
        live = ct.live[tp][day]
        if live is not None:
            return tp, live[0][self.r.pick(live[1])]
        la = ct.launched[tp][day]
        if la is not None and (linger_ok or self.r.u() < LINGER_SHARE):
            return tp, la[0][self.r.pick(la[1])]
        return V.TP["website"], -1

    # ------------------------------------------------------------------ surveys
    def survey(self, kind: int, stage: int, tp: int) -> None:
        r = self.r
        sp = self.survey_plan
        lo, hi = _SCALES[kind]
        x = self.level[self.persona][stage] + sp.noise_sd * r.z()
        x = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
        score = float(round(lo + (hi - lo) * x))
        pol = 1 if (score - lo) / (hi - lo) >= 0.5 else 0
        comment: str | None = None
        theme = lang = -1
        if r.u() < sp.comment_rate:
            theme = r.pick(self.theme_cum[stage])
            lang = r.pick(self.lang_cum)
            comment = r.item(_text.COMMENT_TABLE[theme][lang][pol])
        self.now += 20.0 + r.exp(90.0)
        person = self.user if (self.user >= 0 and self.ident[self.dev]) else self.anon[self.dev]
        self.log.surveys.append((self.now, person, kind, score, comment, tp, stage, theme, lang, pol,
                                 self.pid))


def to_json(value: object) -> str:
    """Compact JSON text (UTF-8 kept readable)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
