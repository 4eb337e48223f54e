"""A brute-force reference for funnels, written from the definitions in docs/funnels.md.

It enumerates every attempt of every person (tiny inputs only) instead of using the
set-based formulation of ``journeylens.analyses.funnel``, so agreement between the two
is evidence that the SQL implements the documented semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class Ev:
    person: str
    ts: float
    """Seconds since an arbitrary origin."""
    event: str
    channel: str | None
    message_id: str


Pred = Callable[[Ev], bool]


@dataclass(frozen=True)
class Excl:
    pred: Pred
    from_step: int
    to_step: int


@dataclass
class PersonFunnel:
    level: int = 0
    to_convert: dict[int, float] = field(default_factory=dict)
    """Step -> seconds from the attempt start to the first completion (steps >= 2)."""
    from_previous: dict[int, float] = field(default_factory=dict)
    completions: dict[int, int] = field(default_factory=dict)


def ordered(evs: Sequence[Ev], steps: Sequence[Pred], window: float, step_window: float | None = None,
            exclusions: Sequence[Excl] = ()) -> PersonFunnel:
    """Attempts are tuples of events e1..ek, ei matching step i, with non-decreasing times (one
    event may fill several steps), ek - e1 <= window, each gap <= step_window, and for every
    exclusion (X, i, j) with i < k: no X strictly between ei and e_min(k, j)."""
    out = PersonFunnel()
    chains: list[tuple[Ev, ...]] = [(e,) for e in evs if steps[0](e)]
    k = 1
    while chains:
        out.level = k
        out.completions[k] = len({id(c[-1]) for c in chains})
        if k > 1:
            first = min(c[-1].ts for c in chains)
            done = [c for c in chains if c[-1].ts == first]
            out.to_convert[k] = first - max(c[0].ts for c in done)
            out.from_previous[k] = first - max(c[-2].ts for c in done)
        if k == len(steps):
            break
        k += 1
        nxt: list[tuple[Ev, ...]] = []
        for c in chains:
            for e in evs:
                if not steps[k - 1](e) or e.ts < c[-1].ts or e.ts - c[0].ts > window:
                    continue
                if step_window is not None and e.ts - c[-1].ts > step_window:
                    continue
                if any(_excluded(evs, (*c, e), x) for x in exclusions):
                    continue
                nxt.append((*c, e))
        chains = nxt
    return out


def _excluded(evs: Sequence[Ev], chain: tuple[Ev, ...], x: Excl) -> bool:
    k = len(chain)
    if k <= x.from_step:
        return False
    lo = chain[x.from_step - 1].ts
    hi = chain[min(k, x.to_step) - 1].ts
    return any(x.pred(e) and lo < e.ts < hi for e in evs)


def strict(evs: Sequence[Ev], steps: Sequence[Pred], window: float,
           step_window: float | None = None) -> PersonFunnel:
    """Attempts are runs of consecutive touches (by time, message id, event)."""
    out = PersonFunnel()
    seq = sorted(evs, key=lambda e: (e.ts, e.message_id, e.event))
    for k in range(1, len(steps) + 1):
        ends = []
        for p in range(k - 1, len(seq)):
            run = seq[p - k + 1: p + 1]
            if not all(steps[j](run[j]) for j in range(k)):
                continue
            if run[-1].ts - run[0].ts > window:
                continue
            if step_window is not None and any(b.ts - a.ts > step_window for a, b in pairwise(run)):
                continue
            ends.append(p)
        if not ends:
            break
        out.level = k
        out.completions[k] = len(ends)
        if k > 1:
            p = ends[0]
            out.to_convert[k] = seq[p].ts - seq[p - k + 1].ts
            out.from_previous[k] = seq[p].ts - seq[p - 1].ts
    return out


def unordered(evs: Sequence[Ev], steps: Sequence[Pred], window: float) -> PersonFunnel:
    """Windows [t, t + window] start at the time t of any step touch; a window completes k steps
    when k distinct steps have a touch in it, at the k-th smallest of their first times."""
    out = PersonFunnel()
    anchors = sorted({e.ts for e in evs if any(s(e) for s in steps)})
    reach: list[tuple[float, list[float]]] = []
    for t in anchors:
        firsts = []
        for s in steps:
            times = [e.ts for e in evs if s(e) and t <= e.ts <= t + window]
            if times:
                firsts.append(min(times))
        reach.append((t, sorted(firsts)))
    for k in range(1, len(steps) + 1):
        ok = [(t, c) for t, c in reach if len(c) >= k]
        if not ok:
            break
        out.level = k
        out.completions[k] = len(ok)
        if k > 1:
            first = min(c[k - 1] for _, c in ok)
            t, c = max(((t, c) for t, c in ok if c[k - 1] == first), key=lambda tc: tc[0])
            out.to_convert[k] = first - t
            out.from_previous[k] = first - c[k - 2]
    return out


@dataclass(frozen=True)
class StepSummary:
    persons: int
    totals: int
    median: float | None
    p90: float | None
    mean: float | None
    median_prev: float | None


def summarise(results: Sequence[PersonFunnel], n_steps: int) -> list[StepSummary]:
    out = []
    for k in range(1, n_steps + 1):
        reached = [r for r in results if r.level >= k]
        durs = [r.to_convert[k] for r in reached if k in r.to_convert]
        prevs = [r.from_previous[k] for r in reached if k in r.from_previous]
        out.append(StepSummary(
            persons=len(reached),
            totals=sum(r.completions[k] for r in reached),
            median=float(np.percentile(durs, 50)) if durs else None,
            p90=float(np.percentile(durs, 90)) if durs else None,
            mean=float(np.mean(durs)) if durs else None,
            median_prev=float(np.percentile(prevs, 50)) if prevs else None,
        ))
    return out
