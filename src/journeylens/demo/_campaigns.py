"""Planted campaigns: which campaign a visit belongs to and what it cost.

A campaign belongs to one touchpoint (and so one channel). It is *launched* on
its first flight day and *in flight* (spending) until its flight ends. Online
paid ads (search, social, display) only bring visits while in flight. Printed
QR codes, TV vanity links and influencer posts keep working after the flight
ends, at a lower rate; their cost rows continue (with zero spend) so that every
visit of a campaign falls on a day that has a cost row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from journeylens.demo import _vocab as V
from journeylens.demo._random import cumulative

CostKind = Literal["online", "print", "tv", "fee", "event"]

LINGER_SHARE = 0.25
"""Chance that a visit drawn for a print/TV/influencer touchpoint outside every flight still
comes in through a launched campaign (an old flyer, a remembered vanity URL); otherwise the
visit is direct (website)."""


@dataclass(frozen=True)
class Campaign:
    key: str
    touchpoint: str
    utm_source: str
    utm_medium: str
    flight: tuple[float, float]
    """Flight as fractions of the window ([start, end))."""
    weight: float
    kind: CostKind
    cpc: float = 0.0
    """online: cost per click (EUR); print: cost per piece; fee: fee per fee day; tv: cost per
    spot day; event: cost per fair day. Fees, TV and fair costs are per 100,000 people."""
    ctr: float = 0.0
    """online: click-through rate used to derive impressions from clicks."""
    volume: int = 0
    """print: pieces distributed in the flight; tv: reach per spot day; event: booth visitors per
    fair day; all per 100,000 people (scaled to the run)."""
    fee_every: int = 7
    """fee: a fee is paid every ``fee_every`` days of the flight."""

    @property
    def channel(self) -> str:
        return V.TOUCHPOINT_CHANNEL[self.touchpoint]

    def days(self, window_days: int) -> tuple[int, int]:
        """First flight day and the day after the last one (0-based, within the window)."""
        a = min(window_days - 1, math.floor(self.flight[0] * window_days))
        b = max(a + 1, min(window_days, math.ceil(self.flight[1] * window_days)))
        return a, b

    @property
    def lingers(self) -> bool:
        return self.kind != "online"

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"channel": self.channel, "touchpoint": self.touchpoint,
                                "utm_source": self.utm_source, "utm_medium": self.utm_medium,
                                "flight": list(self.flight), "kind": self.kind}
        if self.kind == "online":
            d.update(cpc=self.cpc, ctr=self.ctr)
        elif self.kind == "print":
            d.update(pieces_per_100k_people=self.volume, cost_per_piece=self.cpc)
        elif self.kind == "tv":
            d.update(reach_per_spot_day_per_100k_people=self.volume,
                     cost_per_spot_day_per_100k_people=self.cpc)
        elif self.kind == "event":
            d.update(visitors_per_day_per_100k_people=self.volume, cost_per_day_per_100k_people=self.cpc)
        else:
            d.update(fee_per_100k_people=self.cpc, fee_every_days=self.fee_every)
        return d


Choice = tuple[list[int], list[float]]
"""Campaign codes and cumulative weights."""


class CampaignTable:
    """Per touchpoint and day: the campaigns a visit can come from."""

    def __init__(self, campaigns: tuple[Campaign, ...], window_days: int) -> None:
        self.campaigns = campaigns
        self.window_days = window_days
        self.by_tp: dict[int, list[int]] = {}
        for code, c in enumerate(campaigns):
            self.by_tp.setdefault(V.TP[c.touchpoint], []).append(code)
        self.live: dict[int, list[Choice | None]] = {}
        self.launched: dict[int, list[Choice | None]] = {}
        for tp, codes in self.by_tp.items():
            live: list[Choice | None] = []
            launched: list[Choice | None] = []
            for day in range(window_days):
                lc = [k for k in codes if campaigns[k].days(window_days)[0] <= day < campaigns[k].days(window_days)[1]]
                la = [k for k in codes if campaigns[k].lingers and campaigns[k].days(window_days)[0] <= day]
                live.append((lc, cumulative([campaigns[k].weight for k in lc])) if lc else None)
                launched.append((la, cumulative([campaigns[k].weight for k in la])) if la else None)
            self.live[tp] = live
            self.launched[tp] = launched

    def has_campaigns(self, tp: int) -> bool:
        return tp in self.by_tp

    def day(self, t: float) -> int:
        return min(self.window_days - 1, max(0, int(t // 86400.0)))
