"""Multi-touch attribution: credit for conversions spread over the channels of the journeys before them.

Two stages (``docs/attribution.md`` has the long form with every formula):

1. **Journey extraction** (Ibis, same answer on every backend): per unit (person or
   account) the conversions — touches matching the ``conversion`` step; by default only
   the unit's first — and for each conversion the touches strictly before it and at most
   ``lookback`` earlier (with ``repeat``: every conversion, each after the previous one).
   Units that never convert give one *null journey*: their touches within ``lookback`` up
   to and including their last touch (with ``repeat`` also the touches after a unit's last
   conversion); ``eligible`` keeps only the null journeys of units that have a touch
   matching that step. Each touch carries its value at the attribution ``level`` (channel,
   touchpoint, campaign, any touch column or ``properties.KEY``); touches without a value
   and conversion touches are not part of a journey. Runs of consecutive touches with the
   same value collapse to the latest one unless ``collapse_repeats=False``.
2. **Methods** (numpy/scipy on the collected journeys): first touch, last touch, last
   non-direct, linear, time decay, position based — per converting journey, weights that
   sum to 1; Markov chain removal effects of order 1..4 computed exactly from the
   absorbing chain of the aggregated paths (sparse LU, no simulation); Shapley values of
   the coalition conversion rate, exact over all subsets up to ``shapley_exact_max``
   values, Monte-Carlo permutation sampling (fixed seed) beyond.

Per value: attributed conversions, share, attributed revenue, journeys that touched it,
and with a cost table spend, CPA (spend / conversions) and ROAS (revenue / spend).

With a ``breakdown`` (a segment such as ``persona``, ``cohort:NAME``, a touch column or
``properties.KEY`` read on the unit's first touch) the same method runs once more on the
journeys of each breakdown value's units; spend is not segment specific, so a breakdown
value has no spend, CPA or ROAS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from scipy import sparse
from scipy.sparse.linalg import splu

from journeylens.analyses._relations import segment_values
from journeylens.analyses._time import parse_duration
from journeylens.analyses.funnel import NONE_LABEL, OTHER_LABEL, Step, step_predicate
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.functions import json_get, json_get_number, unix_micros

METHODS = ("first_touch", "last_touch", "last_non_direct", "linear", "time_decay", "position_based",
           "markov", "shapley")
HEURISTICS = METHODS[:6]
UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
LEVEL_ALIASES: dict[str, str] = {"campaign": "utm_campaign"}
"""Level names that stand for a touch column."""
COST_KEYS: dict[str, str] = {"channel": "channel", "utm_campaign": "campaign"}
"""Touch column -> the cost table's column it joins on (other levels have no costs)."""
PROPERTY_PREFIX = "properties."
DEFAULT_LOOKBACK = "30d"
DEFAULT_HALF_LIFE = "7d"
MAX_MARKOV_ORDER = 4
MAX_ITERATIONS = 10_000
"""Neumann iterations of the absorbing-chain solve before falling back to a sparse LU."""


# ============================================================================ request model
class AttributionQuery(BaseModel):
    """Everything an attribution needs besides the tables. Errors are journeylens errors.

    ``conversion`` is a funnel-step filter (``purchase``, ``stage=decision``,
    ``event=purchase&properties.order_number=1``); ``revenue`` the numeric column (or
    ``properties.KEY``) of the conversion touch holding its value, None for none;
    ``touches`` an optional step filter restricting which touches form journeys
    (``event=visit``); ``eligible`` an optional step filter: null journeys count only for
    units with such a touch; ``level`` ``channel``, ``touchpoint``, ``campaign``
    (= ``utm_campaign``), another touch column or ``properties.KEY``. ``breakdown``: the name
    of a segment passed as ``segments=`` (``persona``, ``cohort``, ``cohort:NAME``), a touch
    column or ``properties.KEY`` (read on the unit's first touch); the ``breakdown_limit``
    values with the most units are shown, the rest are ``(other)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = "markov"
    conversion: str = "purchase"
    revenue: str | None = "revenue"
    repeat: bool = False
    lookback: str | int = DEFAULT_LOOKBACK
    unit: str = "person"
    level: str = "channel"
    touches: str | None = None
    eligible: str | None = None
    collapse_repeats: bool = True
    order: int = 1
    half_life: str | int = DEFAULT_HALF_LIFE
    first_share: float = 0.4
    last_share: float = 0.4
    direct: tuple[str, ...] = ("direct",)
    shapley_exact_max: int = 15
    shapley_samples: int = 2000
    seed: int = 0
    breakdown: str | None = None
    breakdown_limit: int = 25
    adjust: str | None = None
    """A segment name (``persona``): the method runs within each of its strata and the results are
    pooled (``analyses.attribution_adjust``; needs ``segments=``)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid attribution query: " + "; ".join(parts)) from None

    @field_validator("direct", mode="before")
    @classmethod
    def _direct(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _validate(self) -> AttributionQuery:
        for rule in VALIDATION_RULES:
            rule(self)
        return self

    @property
    def lookback_seconds(self) -> int:
        return parse_duration(self.lookback, name="lookback")

    @property
    def half_life_seconds(self) -> int:
        return parse_duration(self.half_life, name="half_life")

    @property
    def conversion_step(self) -> Step:
        return Step.parse(self.conversion)

    @property
    def touch_step(self) -> Step | None:
        return None if self.touches is None else Step.parse(self.touches)

    @property
    def eligible_step(self) -> Step | None:
        return None if self.eligible is None else Step.parse(self.eligible)

    @property
    def level_column(self) -> str:
        return LEVEL_ALIASES.get(self.level, self.level)

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]


def _rule_method(q: AttributionQuery) -> None:
    if q.method not in METHODS:
        raise UnknownNameError("attribution method", q.method, METHODS)


def _rule_unit(q: AttributionQuery) -> None:
    if q.unit not in UNITS:
        raise UnknownNameError("unit", q.unit, UNITS)


def _rule_parse(q: AttributionQuery) -> None:
    """Durations and step filters parse."""
    _ = q.lookback_seconds, q.half_life_seconds, q.conversion_step, q.touch_step, q.eligible_step


def _rule_order(q: AttributionQuery) -> None:
    if not 1 <= q.order <= MAX_MARKOV_ORDER:
        raise InvalidParameterError(f"Markov order must be 1 to {MAX_MARKOV_ORDER}, got {q.order}")


def _rule_shares(q: AttributionQuery) -> None:
    f, last = q.first_share, q.last_share
    if not (0 <= f <= 1 and 0 <= last <= 1 and 0 < f + last <= 1):
        raise InvalidParameterError(
            f"position-based shares first={f}, last={last} must be in [0, 1] with 0 < first + last <= 1",
            hint="the default is 0.4 / 0.4 (40/20/40)")


def _rule_shapley(q: AttributionQuery) -> None:
    if not 1 <= q.shapley_exact_max <= 20:
        raise InvalidParameterError(f"shapley_exact_max must be 1 to 20, got {q.shapley_exact_max}")
    if q.shapley_samples < 1:
        raise InvalidParameterError(f"shapley_samples must be at least 1, got {q.shapley_samples}")
    if q.seed < 0:
        raise InvalidParameterError(f"seed must be >= 0, got {q.seed}")


def _rule_level(q: AttributionQuery) -> None:
    if not q.level.strip():
        raise InvalidParameterError("level is empty", hint="channel, touchpoint or campaign")


def _rule_breakdown(q: AttributionQuery) -> None:
    if q.breakdown is not None and not q.breakdown.strip():
        raise InvalidParameterError("breakdown is empty", hint="persona, cohort:NAME, a column or properties.KEY")
    if q.breakdown_limit < 1:
        raise InvalidParameterError(f"breakdown_limit must be at least 1, got {q.breakdown_limit}")


VALIDATION_RULES: tuple[Callable[[AttributionQuery], None], ...] = (
    _rule_method, _rule_unit, _rule_parse, _rule_order, _rule_shares, _rule_shapley, _rule_level,
    _rule_breakdown,
)
"""Applied in order when an :class:`AttributionQuery` is built; the first failing rule raises."""


# ============================================================================ journeys
@dataclass(frozen=True)
class Journeys:
    """Journeys as flat arrays: one entry per touch, grouped by journey, in time order.

    ``journey`` (int64, 0..n-1, non-decreasing) indexes the per-journey arrays ``converted``
    and ``revenue``; ``code`` indexes ``values``; ``seconds_before`` is the time from the
    touch to the journey's end (its conversion, or a null journey's last touch); ``direct``
    marks touches of a direct channel. Every journey has at least one touch.
    """

    values: tuple[str, ...]
    journey: np.ndarray
    code: np.ndarray
    seconds_before: np.ndarray
    direct: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray
    conversions_without_touches: int = 0
    revenue_without_touches: float = 0.0

    @classmethod
    def from_arrays(cls, journey: np.ndarray, values: Sequence[str] | np.ndarray | pd.Categorical, converted: np.ndarray,
                    revenue: np.ndarray | None = None, seconds_before: np.ndarray | None = None,
                    direct: np.ndarray | None = None, *, collapse_repeats: bool = True,
                    conversions_without_touches: int = 0, revenue_without_touches: float = 0.0) -> Journeys:
        """Build from touch rows sorted by journey then time: ``journey`` any ids forming
        contiguous runs, ``values`` the level value per touch, ``converted``/``revenue`` per
        row (constant within a journey). Runs of equal values collapse to their last touch."""
        j = np.asarray(journey)
        n = len(j)
        if n == 0:
            none_i = np.zeros(0, np.int64)
            return cls((), none_i, none_i.astype(np.int32), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool),
                       np.zeros(0), conversions_without_touches, revenue_without_touches)
        if isinstance(values, pd.Categorical):  # already coded (the extraction): no string hashing
            cat = values.remove_unused_categories()
            cats = np.asarray(cat.categories, dtype=object)
            rank = np.empty(len(cats), np.int32)
            rank[np.argsort(cats, kind="stable")] = np.arange(len(cats), dtype=np.int32)
            raw: Any = rank[np.asarray(cat.codes)]
            names = np.sort(cats, kind="stable")
        else:
            raw, names = pd.factorize(np.asarray(values, dtype=object), sort=True)
        code = np.asarray(raw, np.int32)
        new = np.empty(n, bool)
        new[0] = True
        new[1:] = j[1:] != j[:-1]
        jid = np.cumsum(new) - 1
        keep = np.ones(n, bool)
        if collapse_repeats:
            keep[:-1] = ~((jid[:-1] == jid[1:]) & (code[:-1] == code[1:]))
        firsts = np.flatnonzero(new)
        conv = np.asarray(converted, bool)[firsts]
        rev = np.zeros(len(firsts)) if revenue is None else np.nan_to_num(np.asarray(revenue, float)[firsts])
        sec = np.zeros(n) if seconds_before is None else np.asarray(seconds_before, float)
        dr = np.zeros(n, bool) if direct is None else np.asarray(direct, bool)
        return cls(tuple(str(x) for x in names), jid[keep].astype(np.int64), code[keep], sec[keep], dr[keep],
                   conv, rev, conversions_without_touches, revenue_without_touches)

    @property
    def n_journeys(self) -> int:
        return len(self.converted)

    @property
    def n_conversions(self) -> int:
        """Converting journeys (conversions that have at least one touch)."""
        return int(self.converted.sum())

    @property
    def total_revenue(self) -> float:
        return float(self.revenue[self.converted].sum())

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per touch: 0-based position in its journey and the journey's length; per journey: first row."""
        length = np.bincount(self.journey, minlength=self.n_journeys)
        starts = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
        pos = np.arange(len(self.journey)) - starts[self.journey]
        return pos, length[self.journey], starts

    def exposure(self) -> np.ndarray:
        """Per value: journeys (converting and null) with at least one touch of it."""
        pairs = np.unique(self.journey * max(len(self.values), 1) + self.code)
        return np.bincount(pairs % max(len(self.values), 1), minlength=len(self.values))

    def paths(self) -> PathCounts:
        """Identical paths aggregated: conversions, null journeys and revenue per distinct path."""
        dtype = np.uint16 if len(self.values) < 65_535 else np.uint32
        if self.n_journeys == 0:
            return PathCounts(self.values, np.zeros((0, 1), dtype), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                              np.zeros(0))
        from journeylens.analyses._attribution_paths import group_paths

        length = np.bincount(self.journey, minlength=self.n_journeys)
        inverse, first, distinct = group_paths(self.journey, self.code, len(self.values), self.n_journeys)
        n_u = len(first)
        conv = np.bincount(inverse, weights=self.converted.astype(float), minlength=n_u)
        total = np.bincount(inverse, minlength=n_u).astype(float)
        rev = np.bincount(inverse, weights=np.where(self.converted, self.revenue, 0.0), minlength=n_u)
        return PathCounts(self.values, distinct, length[first].astype(np.int64), conv, total - conv, rev)


def _row_groups(mat: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Group identical rows of ``mat`` (entries < ``base``): (group per row, first row of each group).

    Rows that fit a 63-bit number in base ``base`` are encoded exactly and hashed (O(n));
    wider ones are sorted as byte strings."""
    width = mat.shape[1]
    if width * math.log2(base) < 63:
        key = np.zeros(len(mat), np.int64)
        for t in range(width):
            key = key * base + mat[:, t].astype(np.int64)
        codes, _ = pd.factorize(key)
        inverse = np.asarray(codes, np.int64)
        first = np.full(int(inverse.max()) + 1 if len(inverse) else 0, len(inverse), np.int64)
        np.minimum.at(first, inverse, np.arange(len(inverse)))
        return inverse, first
    rows = np.ascontiguousarray(mat).view(np.dtype((np.void, mat.dtype.itemsize * width))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return inverse.ravel(), first


@dataclass(frozen=True)
class PathCounts:
    """Distinct paths with their conversions, null journeys and revenue.

    ``matrix[i, :lengths[i]]`` holds path ``i`` as value codes + 1 (0 pads the rest).
    """

    values: tuple[str, ...]
    matrix: np.ndarray
    lengths: np.ndarray
    conversions: np.ndarray
    nulls: np.ndarray
    revenue: np.ndarray

    @classmethod
    def from_paths(cls, values: Sequence[str], paths: Sequence[Sequence[int]], conversions: Sequence[float],
                   nulls: Sequence[float], revenue: Sequence[float] | None = None) -> PathCounts:
        """From paths given as sequences of value codes (0-based indexes into ``values``)."""
        width = max([len(p) for p in paths] + [1])
        mat = np.zeros((len(paths), width), np.uint32)
        for i, p in enumerate(paths):
            mat[i, : len(p)] = np.asarray(p, np.int64) + 1
        conv = np.asarray(conversions, float)
        return cls(tuple(values), mat, np.array([len(p) for p in paths], np.int64), conv, np.asarray(nulls, float),
                   np.zeros_like(conv) if revenue is None else np.asarray(revenue, float))

    @property
    def paths(self) -> list[tuple[int, ...]]:
        """The paths as tuples of value codes."""
        return [tuple(int(c) - 1 for c in row[:n]) for row, n in zip(self.matrix, self.lengths, strict=True)]


# ============================================================================ methods
def heuristic_weights(j: Journeys, method: str, *, half_life_seconds: float = 7 * 86_400,
                      first_share: float = 0.4, last_share: float = 0.4) -> np.ndarray:
    """Credit per touch of a rule-based method; the weights of each journey sum to 1.

    first_touch / last_touch: 1 on the first / last touch. last_non_direct: 1 on the last
    touch that is not direct (the last touch when all are direct). linear: 1/n.
    time_decay: ``2^(-t/half_life)`` normalised, t = seconds before the journey's end.
    position_based: ``first_share`` on the first, ``last_share`` on the last touch, the
    rest evenly on the middle ones; one touch gets 1, two get first/(first+last) and
    last/(first+last).
    """
    pos, n, starts = j.positions()
    if method == "first_touch":
        return (pos == 0).astype(float)
    if method == "last_touch":
        return (pos == n - 1).astype(float)
    if method == "last_non_direct":
        if len(pos) == 0:
            return np.zeros(0)
        nd = np.where(j.direct, -1, pos)
        best = np.maximum.reduceat(nd, starts)
        chosen = np.where(best >= 0, best, np.bincount(j.journey, minlength=j.n_journeys) - 1)
        return (pos == chosen[j.journey]).astype(float)
    if method == "linear":
        return 1.0 / n
    if method == "time_decay":
        sec = j.seconds_before
        low = np.full(j.n_journeys, np.inf)
        np.minimum.at(low, j.journey, sec)
        w = np.exp2(-(sec - low[j.journey]) / float(half_life_seconds))
        return w / np.bincount(j.journey, weights=w, minlength=j.n_journeys)[j.journey]
    if method == "position_based":
        f, last = first_share, last_share
        middle = np.where(n > 2, (1.0 - f - last) / np.maximum(n - 2, 1), 0.0)
        w = np.where(pos == 0, f, np.where(pos == n - 1, last, middle))
        w = np.where(n == 2, np.where(pos == 0, f, last) / (f + last), w)
        return np.where(n == 1, 1.0, w)
    raise UnknownNameError("rule-based attribution method", method, HEURISTICS)


@dataclass(frozen=True)
class MarkovFit:
    """The absorbing chain of order ``order`` and its removal effects.

    ``conversion_probability`` is P(absorbed in conversion | start);
    ``removal_effects[c] = 1 - P_without_c / P`` where "without c" sends every state that
    contains ``c`` to the null state; ``revenue_removal_effects`` the same for the expected
    conversion value (value of a conversion = mean revenue of the conversions from its last state).
    """

    order: int
    states: int
    conversion_probability: float
    removal_effects: np.ndarray
    revenue_removal_effects: np.ndarray


def _chain(paths: PathCounts, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chain's states and counts, vectorised.

    Returns (``members``: state x value booleans, ``edges``: [src, dst, weight] rows,
    ``to_conv``, ``to_null``, ``to_value`` per state). State 0 is the start. A state is a
    window of ``order`` consecutive values encoded base ``n_values + 1`` (0 pads windows of
    paths shorter than ``order``)."""
    n_values = len(paths.values)
    base = n_values + 1
    if order * math.log2(base) >= 62:
        raise InvalidParameterError(f"Markov order {order} with {n_values} values exceeds 64-bit state codes",
                                    hint="use a lower order or a coarser level")
    use = (paths.conversions + paths.nulls > 0) & (paths.lengths > 0)
    mat = paths.matrix[use].astype(np.int64)
    lengths = paths.lengths[use]
    conv, nulls, value = paths.conversions[use], paths.nulls[use], paths.revenue[use]
    n_p, width = mat.shape
    padded = np.concatenate([mat, np.zeros((n_p, order - 1), np.int64)], axis=1)
    codes = np.zeros((n_p, width), np.int64)
    for t in range(order):
        codes = codes * base + padded[:, t:t + width]
    windows = np.maximum(lengths - order + 1, 1)
    valid = np.arange(width)[None, :] < windows[:, None]
    path_of = np.nonzero(valid)[0]
    seq = codes[valid]  # row-major: each path's windows in order
    if len(seq) == 0:
        return np.zeros((1, max(n_values, 1)), bool), np.zeros((0, 3)), np.zeros(1), np.zeros(1), np.zeros(1)
    first = np.ones(len(seq), bool)
    first[1:] = path_of[1:] != path_of[:-1]
    keep = first.copy()
    keep[1:] |= seq[1:] != seq[:-1]  # consecutive equal states merge
    seq, path_of, first = seq[keep], path_of[keep], first[keep]
    codes_of, uniq = pd.factorize(seq, sort=True)  # hashing: O(n), sorts only the distinct states
    uniq = np.asarray(uniq, np.int64)
    state = np.asarray(codes_of, np.int64) + 1
    prev = np.empty_like(state)
    prev[0] = 0
    prev[1:] = state[:-1]
    prev[first] = 0
    weight = (conv + nulls)[path_of]
    edges = np.column_stack([prev, state, weight]).astype(float)
    last = np.ones(len(seq), bool)
    last[:-1] = path_of[1:] != path_of[:-1]
    end = np.zeros(n_p, np.int64)
    end[path_of[last]] = state[last]
    n_states = len(uniq) + 1
    to_conv = np.bincount(end, weights=conv, minlength=n_states)
    to_null = np.bincount(end, weights=nulls, minlength=n_states)
    to_value = np.bincount(end, weights=value, minlength=n_states)
    members = np.zeros((n_states, max(n_values, 1)), bool)
    rest = uniq.copy()
    for _ in range(order):
        digit = rest % base
        hit = digit > 0
        members[np.flatnonzero(hit) + 1, digit[hit] - 1] = True
        rest //= base
    return members, edges, to_conv, to_null, to_value


def _absorption(q: sparse.csr_matrix, a: sparse.csr_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve ``(I - Q) x = rhs`` (``a = I - Q``): the Neumann iteration ``x <- Q x + rhs`` until no
    entry moves by more than 1e-14 of the largest (converges since every state is transient;
    journeys are short, so a few dozen sparse products), else a sparse LU factorisation."""
    x = rhs.copy()
    scale = max(float(np.abs(rhs).max(initial=0.0)), 1e-300)
    for _ in range(MAX_ITERATIONS):
        nxt = q @ x + rhs
        moved = float(np.abs(nxt - x).max(initial=0.0))
        x = nxt
        if moved <= 1e-14 * max(float(np.abs(x).max(initial=0.0)), scale):
            return np.asarray(x)
    return np.asarray(splu(a.tocsc()).solve(rhs))


def markov_fit(paths: PathCounts, order: int = 1) -> MarkovFit:
    """Fit the order-``order`` chain on ``paths``; every value's removal effect, exactly.

    States are the windows of ``order`` consecutive values of a path (the whole path when it
    is shorter), consecutive equal states merged — as ``ChannelAttribution.markov_model``.
    A path with c conversions and m null journeys adds c + m to each of its transitions
    ``start -> s1 -> ... -> sL``, c to ``sL -> conversion`` and m to ``sL -> null``;
    probabilities are the counts divided by the state's outgoing total. Absorption
    probabilities solve ``(I - Q) x = r`` to machine precision (:func:`_absorption`), once for
    the full chain and once per value with the states containing it removed (their mass goes
    to null).
    """
    n_values = len(paths.values)
    members, edges, to_conv, to_null, to_value = _chain(paths, order)
    n_states = len(members)
    counts = sparse.csr_matrix((edges[:, 2], (edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64))),
                               shape=(n_states, n_states))
    out = np.asarray(counts.sum(axis=1)).ravel() + to_conv + to_null
    scale = np.divide(1.0, out, out=np.zeros(n_states), where=out > 0)
    q = sparse.diags(scale) @ counts
    rhs = np.column_stack([to_conv * scale, to_value * scale])
    a = (sparse.identity(n_states, format="csr") - q).tocsr()

    q = q.tocsr()

    def absorb(keep: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(keep)  # the start state (index 0) is always kept
        return _absorption(q[idx][:, idx], a[idx][:, idx], np.ascontiguousarray(rhs[idx]))[0]

    full = absorb(np.ones(n_states, bool))
    re_conv = np.zeros(n_values)
    re_val = np.zeros(n_values)
    for v in range(n_values):
        if not members[:, v].any():
            continue
        without = absorb(~members[:, v])
        re_conv[v] = 1.0 - without[0] / full[0] if full[0] > 0 else 0.0
        re_val[v] = 1.0 - without[1] / full[1] if full[1] > 0 else 0.0
    return MarkovFit(order, n_states, float(full[0]), re_conv, re_val)


def channel_sets(paths: PathCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct value sets of the paths as a boolean matrix, with their conversions, journeys, revenue."""
    n = len(paths.values)
    member = np.zeros((len(paths.lengths), n + 1), bool)
    member[np.arange(len(paths.lengths))[:, None], paths.matrix.astype(np.int64)] = True
    member = np.ascontiguousarray(member[:, 1:])
    if len(member) == 0:
        return member, np.zeros(0), np.zeros(0), np.zeros(0)
    rows = member.view(np.dtype((np.void, n))).ravel() if n else np.zeros(len(member), "V1")
    _, first, idx = np.unique(rows, return_index=True, return_inverse=True)
    idx = idx.ravel()
    k = len(first)
    conv = np.bincount(idx, weights=paths.conversions, minlength=k)
    jour = np.bincount(idx, weights=paths.conversions + paths.nulls, minlength=k)
    rev = np.bincount(idx, weights=paths.revenue, minlength=k)
    return member[first], conv, jour, rev


def shapley_values(paths: PathCounts, *, exact_max: int = 15, samples: int = 2000,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Shapley values of the coalition conversion rate (and of the coalition revenue per journey).

    ``v(S) = conversions / journeys`` over the journeys whose set of distinct values is a
    subset of ``S`` (0 when there is none), so ``v(∅) = 0`` and the values sum to the overall
    conversion rate; revenue likewise with revenue in place of conversions. Exact (all
    ``2^n`` subsets) for at most ``exact_max`` values, else the mean marginal contribution
    over ``samples`` random permutations (numpy generator seeded with ``seed``).
    Returns (conversion values, revenue values, exact?).
    """
    n = len(paths.values)
    if n == 0:
        return np.zeros(0), np.zeros(0), True
    mat, conv, jour, rev = channel_sets(paths)
    if n <= exact_max:
        masks = mat.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64))
        size = 1 << n
        sums = [np.bincount(masks, weights=x, minlength=size) for x in (conv, jour, rev)]
        every = np.arange(size, dtype=np.int64)
        for b in range(n):  # subset sums (zeta transform): sums[S] = sum over T subset of S
            has = every[(every >> b) & 1 == 1]
            for arr in sums:
                arr[has] += arr[has ^ (1 << b)]
        c, t, r = sums
        vc = np.divide(c, t, out=np.zeros(size), where=t > 0)
        vr = np.divide(r, t, out=np.zeros(size), where=t > 0)
        popcount = np.zeros(size, np.int64)
        for b in range(n):
            popcount += (every >> b) & 1
        lg = [math.lgamma(k + 1) for k in range(n + 1)]
        w = np.array([math.exp(lg[k] + lg[n - k - 1] - lg[n]) for k in range(n)])
        phi_c = np.zeros(n)
        phi_r = np.zeros(n)
        for j in range(n):
            s = every[(every >> j) & 1 == 0]
            ws = w[popcount[s]]
            phi_c[j] = float(np.sum(ws * (vc[s | (1 << j)] - vc[s])))
            phi_r[j] = float(np.sum(ws * (vr[s | (1 << j)] - vr[s])))
        return phi_c, phi_r, True
    rng = np.random.default_rng(seed)
    phi_c = np.zeros(n)
    phi_r = np.zeros(n)
    rank = np.empty(n, np.int64)
    for _ in range(samples):
        perm = rng.permutation(n)
        rank[perm] = np.arange(n)
        inside_at = np.where(mat, rank[None, :], -1).max(axis=1)  # prefix length - 1 that contains the set
        cc = np.cumsum(np.bincount(inside_at, weights=conv, minlength=n))
        tt = np.cumsum(np.bincount(inside_at, weights=jour, minlength=n))
        rr = np.cumsum(np.bincount(inside_at, weights=rev, minlength=n))
        vc = np.divide(cc, tt, out=np.zeros(n), where=tt > 0)
        vr = np.divide(rr, tt, out=np.zeros(n), where=tt > 0)
        phi_c[perm] += np.diff(vc, prepend=0.0)
        phi_r[perm] += np.diff(vr, prepend=0.0)
    return phi_c / samples, phi_r / samples, False


# ============================================================================ results
@dataclass(frozen=True)
class ChannelCredit:
    """One value's credit under one method."""

    channel: str
    conversions: float
    share: float
    revenue: float | None
    journeys: int = 0
    """Journeys (converting and null) with at least one touch of this value."""
    spend: float | None = None
    cpa: float | None = None
    roas: float | None = None
    score: float | None = None
    """Markov: the removal effect; Shapley: the Shapley value of the coalition conversion rate."""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class AttributionResult:
    """Credit per value (channel, touchpoint, campaign ...) of one method, largest first."""

    query: AttributionQuery
    method: str
    channels: tuple[ChannelCredit, ...]
    conversions: int
    """Conversions with at least one touch in their lookback (the credited total)."""
    conversions_without_touches: int
    journeys: int
    """Journeys with at least one touch (converting and null)."""
    revenue: float | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Method facts: Markov ``order``, ``states``, ``conversion_probability``; Shapley ``exact``."""
    breakdown: tuple[BreakdownAttribution, ...] = ()
    """With ``query.breakdown``: the same method on the journeys of each value's units."""

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out = {
            "method": self.method, "level": q.level, "unit": q.unit, "conversion": q.conversion,
            "lookback_seconds": q.lookback_seconds, "conversions": self.conversions,
            "conversions_without_touches": self.conversions_without_touches, "journeys": self.journeys,
            "revenue": self.revenue, **dict(self.detail),
            "channels": [c.to_dict() for c in self.channels],
        }
        if q.breakdown is not None:
            out["breakdown"] = {"by": q.breakdown, "values": [b.to_dict() for b in self.breakdown]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        """One row per value; with a breakdown one row per breakdown value and value (column
        ``breakdown`` first)."""
        cols = list(ChannelCredit.__dataclass_fields__)
        if self.query.breakdown is not None:
            rows = [{"breakdown": b.value, **c.to_dict()} for b in self.breakdown for c in b.channels]
            return pd.DataFrame(rows, columns=["breakdown", *cols])
        return pd.DataFrame([c.to_dict() for c in self.channels], columns=cols)

    def by_value(self, value: str) -> BreakdownAttribution:
        """The result of breakdown value ``value``."""
        for b in self.breakdown:
            if b.value == value:
                return b
        raise UnknownNameError(f"{self.query.breakdown or 'breakdown'} value", value,
                               [b.value for b in self.breakdown])

    def credit(self) -> dict[str, float]:
        """Value -> attributed conversions."""
        return {c.channel: c.conversions for c in self.channels}

    def figure(self) -> Any:
        """Plotly bars: attributed conversions per value, share as label (grouped by breakdown
        value when there is a breakdown)."""
        import plotly.graph_objects as go

        if self.query.breakdown is not None:
            fig = go.Figure([go.Bar(name=b.value, x=[c.channel for c in b.channels],
                                    y=[c.conversions for c in b.channels]) for b in self.breakdown])
            fig.update_layout(title=f"Attribution ({method_label(self.query, self.method)}) by {self.query.level} "
                                    f"and {self.query.breakdown}", barmode="group",
                              yaxis_title="attributed conversions")
            return fig
        fig = go.Figure(go.Bar(x=[c.channel for c in self.channels], y=[c.conversions for c in self.channels],
                               text=[f"{c.share:.1%}" for c in self.channels], textposition="auto"))
        fig.update_layout(title=f"Attribution ({method_label(self.query, self.method)}) by {self.query.level}",
                          yaxis_title="attributed conversions")
        return fig


@dataclass(frozen=True)
class BreakdownAttribution:
    """One breakdown value's attribution: the method applied to the journeys of its units only.
    Spend is not segment specific: ``spend``, ``cpa`` and ``roas`` of its channels are None."""

    value: str
    units: int
    """Units with this value that have at least one journey or conversion."""
    channels: tuple[ChannelCredit, ...]
    conversions: int
    conversions_without_touches: int
    journeys: int
    revenue: float | None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def credit(self) -> dict[str, float]:
        """Value -> attributed conversions."""
        return {c.channel: c.conversions for c in self.channels}

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "units": self.units, "conversions": self.conversions,
                "conversions_without_touches": self.conversions_without_touches, "journeys": self.journeys,
                "revenue": self.revenue, **dict(self.detail), "channels": [c.to_dict() for c in self.channels]}


@dataclass(frozen=True)
class AttributionComparison:
    """Several methods side by side on the same journeys."""

    query: AttributionQuery
    results: tuple[AttributionResult, ...]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(r.method for r in self.results)

    def result(self, method: str) -> AttributionResult:
        for r in self.results:
            if r.method == method:
                return r
        raise UnknownNameError("attribution method", method, self.methods)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.query.level, "unit": self.query.unit, "methods": list(self.methods),
                "results": [r.to_dict() for r in self.results]}

    def to_pandas(self) -> pd.DataFrame:
        """Long form: one row per method and value (and breakdown value, column ``breakdown``)."""
        cols = ["method", *(["breakdown"] if self.query.breakdown is not None else []),
                *ChannelCredit.__dataclass_fields__]
        frames = [r.to_pandas().assign(method=r.method) for r in self.results if r.channels]
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def wide(self, column: str = "conversions") -> pd.DataFrame:
        """One row per value, one column per method (``column``: conversions, share, revenue, cpa, roas);
        over all units (the breakdown values are in :meth:`to_pandas`)."""
        cols = ["method", *ChannelCredit.__dataclass_fields__]
        frames = [pd.DataFrame([c.to_dict() for c in r.channels]).assign(method=r.method)
                  for r in self.results if r.channels]
        df = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
        if df.empty:
            return pd.DataFrame(columns=["channel", *self.methods])
        w = df.pivot_table(index="channel", columns="method", values=column, aggfunc="first", dropna=False)
        w = w.reindex(columns=list(self.methods)).sort_values(list(self.methods)[-1], ascending=False)
        return w.reset_index().rename_axis(None, axis=1)

    def figure(self) -> Any:
        """Plotly grouped bars: attributed conversions per value, one bar per method."""
        import plotly.graph_objects as go

        w = self.wide()
        fig = go.Figure([go.Bar(name=m, x=list(w["channel"]), y=list(w[m])) for m in self.methods])
        fig.update_layout(title=f"Attribution by {self.query.level}: methods compared", barmode="group",
                          yaxis_title="attributed conversions")
        return fig


def method_label(q: AttributionQuery, method: str) -> str:
    """Human name of ``method`` with its parameters."""
    if method == "markov":
        return f"markov, order {q.order}"
    if method == "time_decay":
        return f"time decay, half-life {q.half_life}"
    if method == "position_based":
        return f"position based {q.first_share:.0%}/{1 - q.first_share - q.last_share:.0%}/{q.last_share:.0%}"
    return method.replace("_", " ")


# ============================================================================ computation
def extract_journeys(touches: ir.Table, query: AttributionQuery) -> Journeys:
    """The journeys of ``query`` (see the module docstring), collected from the backend in one query."""
    return _journeys_from_arrow(journey_rows(touches, query).to_pyarrow(), query)


def _value_expr(t: ir.Table, q: AttributionQuery) -> ir.StringValue:
    col = q.level_column
    if col.startswith(PROPERTY_PREFIX) and len(col) > len(PROPERTY_PREFIX) and "properties" in t.columns:
        return json_get(t.properties, col[len(PROPERTY_PREFIX):])
    if col in t.columns and col not in ("properties", "traits"):
        return t[col].cast("string")
    allowed = [c for c in t.columns if c not in ("properties", "traits")] + [*LEVEL_ALIASES, "properties.<key>"]
    raise UnknownNameError("attribution level", q.level, allowed)


def _revenue_expr(t: ir.Table, q: AttributionQuery) -> ir.FloatingValue:
    name = q.revenue
    if name is None:
        return ibis.literal(0.0, "float64")
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in t.columns:
        return json_get_number(t.properties, name[len(PROPERTY_PREFIX):]).fill_null(0.0)
    if name in t.columns and t[name].type().is_numeric():
        return t[name].cast("float64").fill_null(0.0)
    allowed = [c for c in t.columns if t[c].type().is_numeric()] + ["properties.<key>"]
    raise UnknownNameError("revenue column", name, allowed)


def journey_rows(touches: ir.Table, q: AttributionQuery) -> ir.Table:
    """Ibis: one row per journey touch — ``u`` (unit), ``k`` (conversion number, -1 for a null
    journey), ``converted``, ``rev``, ``sec`` (seconds before the end), ``v`` (level value),
    ``ch`` (channel), ``us`` (time, µs), ``mid`` — plus one marker row with NULL ``v`` per
    conversion (to count conversions without touches); ordered by u, k, us, mid."""
    unit = q.unit_column
    if unit not in touches.columns:
        raise UnknownNameError("unit column", unit, [c for c in touches.columns if c.endswith("_id")])
    t = touches.filter(touches[unit].notnull())
    t = t.mutate(_u=t[unit].cast("string"), _us=unix_micros(t.ts), _conv=step_predicate(t, q.conversion_step),
                 _v=_value_expr(t, q), _ch=t.channel.cast("string"), _rev=_revenue_expr(t, q))
    by_unit = ibis.window(group_by="_u", order_by=["_us", "message_id"])
    conv = t.filter(t._conv)
    conv = conv.select("_u", "_rev", end=conv._us, k=ibis.row_number().over(by_unit),
                       lower=conv._us.lag().over(by_unit))
    if not q.repeat:
        conv = conv.filter(conv.k == 0)
    last_conv = conv.group_by("_u").aggregate(last=conv.end.max())
    last_touch = t.group_by("_u").aggregate(end=t._us.max())
    nulls = last_touch.left_join(last_conv, "_u").select(last_touch._u, last_touch.end, last_conv["last"])
    keep = nulls["last"].isnull() | (nulls.end > nulls["last"]) if q.repeat else nulls["last"].isnull()
    nulls = nulls.filter(keep)
    eligible = q.eligible_step
    if eligible is not None:
        ok = t.filter(step_predicate(t, eligible)).select(_e="_u").distinct()
        nulls = nulls.semi_join(ok, nulls._u == ok._e)
    ends = conv.select("_u", "end", "lower", k=conv.k.cast("int64"), converted=ibis.literal(True),
                       rev=conv._rev).union(
        nulls.select("_u", "end", lower=nulls["last"], k=ibis.literal(-1, "int64"), converted=ibis.literal(False),
                     rev=ibis.literal(0.0, "float64")))
    cond = ~t._conv & t._v.notnull()
    step = q.touch_step
    if step is not None:
        cond = cond & step_predicate(t, step)
    p = t.filter(cond).select(pu="_u", pus="_us", pv="_v", pch="_ch", pmid="message_id")
    span = ibis.literal(q.lookback_seconds * 1_000_000, "int64")
    joined = ends.join(p, ends._u == p.pu)  # equi-join only: range predicates in the join make a nested loop
    before = ibis.ifelse(joined.converted, joined.pus < joined.end, joined.pus <= joined.end)
    after = joined.lower.isnull() | (joined.pus > joined.lower)
    rows = joined.filter(before, joined.end - joined.pus <= span, after)
    rows = rows.select(u=rows._u, k=rows.k, converted=rows.converted, rev=rows.rev,
                       sec=(rows.end - rows.pus).cast("float64") / 1e6, v=rows.pv, ch=rows.pch, us=rows.pus,
                       mid=rows.pmid)
    markers = ends.filter(ends.converted)
    markers = markers.select(u=markers._u, k=markers.k, converted=markers.converted, rev=markers.rev,
                             sec=ibis.null("float64"), v=ibis.null("string"), ch=ibis.null("string"),
                             us=ibis.null("int64"), mid=ibis.null("string"))
    return rows.union(markers).order_by(["u", "k", "us", "mid"])


def _journeys_from_arrow(data: pa.Table, q: AttributionQuery) -> Journeys:
    from journeylens.analyses._attribution_paths import journey_arrays

    a = journey_arrays(data, q.direct)
    return Journeys.from_arrays(
        a["journey"], a["values"], a["converted"], a["revenue"], a["seconds_before"], a["direct"],
        collapse_repeats=q.collapse_repeats, conversions_without_touches=a["lonely_conversions"],
        revenue_without_touches=a["lonely_revenue"],
    )


def _breakdown_expr(t: ir.Table, name: str) -> ir.StringValue:
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in t.columns:
        return json_get(t.properties, name[len(PROPERTY_PREFIX):])
    if name in t.columns and name not in ("properties", "traits"):
        return t[name].cast("string")
    raise UnknownNameError("breakdown", name, [])


def unit_labels(touches: ir.Table, q: AttributionQuery,
                segments: Mapping[str, ir.Table] | None = None) -> ir.Table | None:
    """Ibis: ``_lu`` (unit id as text), ``b`` (breakdown value) — one row per unit and value of
    ``q.breakdown``; None without a breakdown. A segment gives every value a unit has; a column or
    ``properties.KEY`` the value on the unit's first touch (several at that time: the smallest)."""
    name = q.breakdown
    if name is None:
        return None
    segs = dict(segments or {})
    col = q.unit_column
    if name in segs:
        seg = segment_values(segs, name, col, unit_as="_lu", value_as="b")
        return seg.filter(seg._lu.notnull())
    if col not in touches.columns:
        raise UnknownNameError("unit column", col, [c for c in touches.columns if c.endswith("_id")])
    readable = (name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in touches.columns
                ) or (name in touches.columns and name not in ("properties", "traits"))
    if not readable:
        allowed = [c for c in touches.columns if c not in ("properties", "traits")] + [*segs, "persona",
                                                                                      "cohort:<name>",
                                                                                      "properties.<key>"]
        raise UnknownNameError("breakdown", name, allowed)
    t = touches.filter(touches[col].notnull())
    rows = t.select(_lu=t[col].cast("string"), _us=unix_micros(t.ts), v=_breakdown_expr(t, name))
    rows = rows.mutate(edge=rows._us.min().over(ibis.window(group_by="_lu")))
    rows = rows.filter(rows._us == rows.edge)
    return rows.group_by("_lu").aggregate(b=rows.v.min())


def extract_breakdown(touches: ir.Table, query: AttributionQuery,
                      segments: Mapping[str, ir.Table] | None = None) -> list[tuple[str, int, Journeys]]:
    """Per breakdown value (most units first, ``(other)`` last): the value, its units with a
    journey or a conversion, and the journeys of its units (one backend query). Units without a
    value are ``(none)``; a unit with several values (overlapping cohorts) is in each."""
    labels = unit_labels(touches, query, segments)
    if labels is None:
        return []
    rows = journey_rows(touches, query)
    j = rows.left_join(labels, rows.u == labels._lu)
    j = j.select(*rows.columns, b=j.b.fill_null(NONE_LABEL))
    df = j.order_by(["b", "u", "k", "us", "mid"]).to_pyarrow().to_pandas()
    units = df.groupby("b")["u"].nunique()
    ranked = sorted(units.index, key=lambda v: (-int(units[v]), str(v)))
    keep = set(ranked[: query.breakdown_limit])
    if len(ranked) > len(keep):
        df["b"] = df["b"].where(df["b"].isin(keep), OTHER_LABEL)
    out: list[tuple[str, int, Journeys]] = []
    for value, sub in df.groupby("b", sort=False):
        if value == OTHER_LABEL and len(ranked) > len(keep):
            # a unit may hold several folded values: keep each row once, in journey order
            sub = sub.drop_duplicates(["u", "k", "mid"]).sort_values(["u", "k", "us", "mid"], kind="stable")
        out.append((str(value), int(sub["u"].nunique()),
                    _journeys_from_arrow(pa.Table.from_pandas(sub, preserve_index=False), query)))
    out.sort(key=lambda x: (x[0] == OTHER_LABEL, -x[1], x[0]))
    return out


def _with_breakdown(result: AttributionResult, parts: Sequence[tuple[str, int, Journeys]],
                    paths: Sequence[PathCounts | None] | None = None) -> AttributionResult:
    """``result`` with the same method applied to each breakdown value's journeys (no spend)."""
    if result.query.breakdown is None:
        return result
    out = []
    for i, (value, units, journeys) in enumerate(parts):
        r = credit(journeys, result.query, result.method, paths=None if paths is None else paths[i])
        out.append(BreakdownAttribution(value=value, units=units, channels=r.channels, conversions=r.conversions,
                                        conversions_without_touches=r.conversions_without_touches,
                                        journeys=r.journeys, revenue=r.revenue, detail=r.detail))
    return replace(result, breakdown=tuple(out))


def credit(journeys: Journeys, query: AttributionQuery, method: str | None = None, *,
           spend: Mapping[str, float] | None = None, paths: PathCounts | None = None) -> AttributionResult:
    """Apply ``method`` (default ``query.method``) to extracted journeys.

    Rule-based methods: a value's conversions are the sum of its touch weights over
    converting journeys, its revenue the same weighted by each journey's revenue. Markov
    and Shapley: scores ``s`` (removal effects / Shapley values) are scaled so that the
    values' conversions sum to the converting journeys: ``conversions_c = s_c / Σ s × total``
    (revenue likewise with the revenue scores and the total revenue).
    """
    method = method or query.method
    if method not in METHODS:
        raise UnknownNameError("attribution method", method, METHODS)
    n_v = len(journeys.values)
    total = journeys.n_conversions
    detail: dict[str, Any] = {}
    scores: np.ndarray | None = None
    if method in HEURISTICS:
        w = heuristic_weights(journeys, method, half_life_seconds=query.half_life_seconds,
                              first_share=query.first_share, last_share=query.last_share)
        conv_row = journeys.converted[journeys.journey]
        conv = np.bincount(journeys.code, weights=w * conv_row, minlength=n_v)
        rev = np.bincount(journeys.code, weights=w * np.where(conv_row, journeys.revenue[journeys.journey], 0.0),
                          minlength=n_v)
    else:
        pc = paths if paths is not None else journeys.paths()
        if method == "markov":
            fit = markov_fit(pc, query.order)
            scores, rscores = fit.removal_effects, fit.revenue_removal_effects
            detail = {"order": fit.order, "states": fit.states, "conversion_probability": fit.conversion_probability}
        else:
            scores, rscores, exact = shapley_values(pc, exact_max=query.shapley_exact_max,
                                                    samples=query.shapley_samples, seed=query.seed)
            detail = {"exact": exact}
        conv = _scaled(scores, total)
        rev = _scaled(rscores, journeys.total_revenue)
    exposed = journeys.exposure()
    rows = []
    for i, name in enumerate(journeys.values):
        c = float(conv[i])
        r = float(rev[i]) if query.revenue is not None else None
        s = None if spend is None else spend.get(name)
        rows.append(ChannelCredit(
            channel=name, conversions=c, share=c / total if total else 0.0, revenue=r, journeys=int(exposed[i]),
            spend=s, cpa=(s / c if s is not None and c > 0 else None),
            roas=(r / s if s is not None and r is not None and s > 0 else None),
            score=None if scores is None else float(scores[i]),
        ))
    rows.sort(key=lambda x: (-x.conversions, x.channel))
    return AttributionResult(
        query=query, method=method, channels=tuple(rows), conversions=total,
        conversions_without_touches=journeys.conversions_without_touches, journeys=journeys.n_journeys,
        revenue=journeys.total_revenue if query.revenue is not None else None, detail=detail,
    )


def _scaled(scores: np.ndarray, total: float) -> np.ndarray:
    s = float(scores.sum())
    return scores / s * total if s != 0 else np.zeros_like(scores)


def spend_by_value(costs: ir.Table | None, query: AttributionQuery) -> dict[str, float] | None:
    """Total spend per channel (level channel) or campaign (level campaign) of the cost table;
    None for other levels or without costs."""
    if costs is None:
        return None
    key = COST_KEYS.get(query.level_column)
    if key is None or key not in costs.columns:
        return None
    kept = costs.filter(costs[key].notnull())
    agg = kept.group_by(key).aggregate(spend=kept.spend.sum())
    return {str(r[key]): float(r["spend"] or 0.0) for r in agg.to_pyarrow().to_pylist()}


def attribution(touches: ir.Table, query: AttributionQuery | None = None, *, costs: ir.Table | None = None,
                segments: Mapping[str, ir.Table] | None = None, **params: Any) -> AttributionResult:
    """Attribute conversions to the values at ``query.level`` with ``query.method``.

    ``touches`` as from ``Workspace.touches()``; ``costs`` the cost table (``Workspace.costs()``)
    for spend, CPA and ROAS; ``segments`` breakdown names that are not touch columns
    (``persona``, ``cohort:NAME``; ``Workspace.segments``) mapped to tables with the unit column
    and ``value``. Keyword ``params`` build the query when none is given.
    """
    q = query if query is not None else AttributionQuery(**params)
    if q.adjust is not None:  # stratified by a segment and pooled
        from journeylens.analyses.attribution_adjust import adjusted_attribution

        return adjusted_attribution(touches, q, segments=segments, costs=costs)
    parts = extract_breakdown(touches, q, segments)  # first: a bad breakdown fails before the long query
    result = credit(extract_journeys(touches, q), q, spend=spend_by_value(costs, q))
    return _with_breakdown(result, parts)


def compare_attribution(touches: ir.Table, query: AttributionQuery | None = None, *,
                        methods: Sequence[str] = METHODS, costs: ir.Table | None = None,
                        segments: Mapping[str, ir.Table] | None = None, **params: Any) -> AttributionComparison:
    """Every method of ``methods`` on the same journeys (extracted once); per breakdown value too."""
    q = query if query is not None else AttributionQuery(**params)
    for m in methods:
        if m not in METHODS:
            raise UnknownNameError("attribution method", m, METHODS)
    if q.adjust is not None:  # stratified by a segment and pooled
        from journeylens.analyses.attribution_adjust import compare_adjusted

        return compare_adjusted(touches, q, methods=methods, segments=segments, costs=costs)
    parts = extract_breakdown(touches, q, segments)
    j = extract_journeys(touches, q)
    spend = spend_by_value(costs, q)
    needs_paths = any(m in ("markov", "shapley") for m in methods)
    pc = j.paths() if needs_paths else None
    part_paths = [p[2].paths() if needs_paths else None for p in parts]
    return AttributionComparison(q, tuple(_with_breakdown(credit(j, q, m, spend=spend, paths=pc), parts, part_paths)
                                          for m in methods))


__all__ = [
    "METHODS",
    "AttributionComparison",
    "AttributionQuery",
    "AttributionResult",
    "BreakdownAttribution",
    "ChannelCredit",
    "Journeys",
    "MarkovFit",
    "PathCounts",
    "attribution",
    "compare_attribution",
    "credit",
    "extract_breakdown",
    "extract_journeys",
    "heuristic_weights",
    "journey_rows",
    "markov_fit",
    "method_label",
    "shapley_values",
    "spend_by_value",
    "unit_labels",
]
