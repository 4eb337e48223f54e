"""Pain points and moments of truth.

**Pain points** (``docs/painpoints.md`` has the long form). Every detector turns the
journeys into *measured items*, each either *bad* or not, computed as Ibis tables:

* ``abandonment`` — one item per touch of event ``E`` (goal touches and stand-alone
  touches — alone in their session — excluded): bad when the touch ends its session, i.e.
  the unit's next touch comes more than ``session_gap`` later or never.
* ``drop_out`` — one item per touch of ``E`` (goal touches excluded, touches of the last
  ``quiet`` before the data end excluded as censored): bad when it is the unit's last touch.
* ``low_conversion`` — one item per unit that entered stage ``s`` (not the last stage) at
  least ``quiet`` before the data end: bad when it never reaches a stage after ``s``.
* ``dwell_time`` — one item per unit that entered ``s`` and later a further stage: bad
  when the time between the two entries exceeds the median of all such units of ``s``.
* ``loop`` — one item per unit that reached ``s``: bad when it has two or more separate
  runs of touches in ``s`` (touches of another stage in between).
* ``support`` — one item per unit that reached ``s``: bad when it had a support touch
  (``support_event`` or touchpoint ``support``) while its furthest stage was ``s``.
* ``negative_feedback`` — one item per survey answer placed in stage ``s`` (the survey's
  ``stage``): bad when its score normalised to 0–1 on its scale
  (``(score − lo) / (hi − lo)``; nps 0–10, csat 1–5, ces 1–7) is below 0.5.

Each (kind, stage, subject) is compared — rate of bad items ``p = k / n`` against a
baseline ``p0 = k0 / n0`` — in three ways:

* ``segment``: the subject's items of units in one segment value (a given segment such as
  a persona, or a low-cardinality person / account trait) against those of units with
  another value of the same segment;
* ``period``: the subject's items in the recent half of the data's time range against
  the earlier half (abandonment and negative feedback only: the other kinds need follow-up
  time, so the recent half always looks worse);
* ``other``: the subject against the pooled items of the other subjects of the same kind
  (abandonment and drop-out: other events of the same stage; the rest: other stages or
  transitions). Dwell time has no such comparison (its threshold is per stage). Not in the
  default ``comparisons``: it mixes the design of different steps into the rate (a blog
  read or a sign-up ends a session by nature), so it ranks natural exits as pain points.

A comparison is a finding when ``n >= min_items``, ``n0 >= min_items``, ``k >= 5`` and
the one-sided two-proportion z-test (pooled variance) of ``p > p0`` has
``p_value < alpha / m`` (Bonferroni over all ``m`` comparisons tested). Its *excess*
``n × (p − p0)`` is the number of bad items beyond the baseline rate; its 95 % interval
is the Wald interval of ``p − p0``. A :class:`PainPoint` is one (kind, stage, subject)
with its strongest finding (largest excess); ``severity`` = ``excess`` of that finding
× ``confidence`` (``1 − p_value``). Pain points are ranked by severity. The other
findings of the same subject are kept in ``also``.

**Moments of truth**: for each value ``x`` of ``by`` (channel, touchpoint or event), the
outcome ``converted`` (unit has a goal touch) is compared between units that had a touch
with ``x`` before their first goal touch (non-converters: at any time) and units that did
not, stratified by the furthest stage each unit reached before that goal touch (or at all).
``odds_ratio`` is the Mantel–Haenszel common odds ratio with the Robins–Breslow–Greenland
95 % interval; ``lift`` is the Mantel–Haenszel risk ratio; ``risk_difference`` the
Mantel–Haenszel risk difference. Ranked by ``log(odds_ratio)``. With ``outcome="churn"``
the units are converters whose first goal touch lies at least ``inactive`` before the data
end, the outcome is "no touch in the last ``inactive``", exposures are touches after the
first goal touch, and the strata are the furthest stage reached.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from scipy import stats

from journeylens.analyses._relations import segment_values, union_all
from journeylens.analyses._time import parse_duration
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey import JourneyModel
from journeylens.store.functions import json_get, unix_micros

KINDS = ("abandonment", "drop_out", "low_conversion", "dwell_time", "loop", "support", "negative_feedback")
COMPARISONS = ("segment", "period", "other")
UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
MOMENT_BY = ("channel", "touchpoint", "event")
OUTCOMES = ("conversion", "churn")
SURVEY_SCALES: dict[str, tuple[float, float]] = {"nps": (0.0, 10.0), "csat": (1.0, 5.0), "ces": (1.0, 7.0)}
"""Score range per survey kind; a score is normalised to ``(score − lo) / (hi − lo)``."""
NEGATIVE_BELOW = 0.5
"""A survey answer whose normalised score is below this counts as negative."""
PERIOD_DIM = "period"
PERIOD_KINDS = ("abandonment", "negative_feedback")
"""Kinds compared between periods; the others depend on follow-up time (censoring)."""
RECENT, EARLIER = "recent", "earlier"
_U = "unit"

_METRICS = {
    "abandonment": "share of touches that end the session",
    "drop_out": "share of touches that are the last touch",
    "low_conversion": "share of units not reaching a further stage",
    "dwell_time": "share of units slower than the stage median",
    "loop": "share of units with repeated runs in the stage",
    "support": "share of units with a support touch in the stage",
    "negative_feedback": "share of negative survey answers",
}


def _pydantic_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
    return "invalid pain point query: " + "; ".join(parts)


class PainPointsQuery(BaseModel):
    """Parameters of :func:`pain_points` (shared by the Python API and the CLI).

    ``session_gap`` and ``quiet`` are durations (``30m``, ``30d``); ``goals`` are event
    names whose touches are conversions (touches with revenue > 0 always are);
    ``traits`` says whether low-cardinality person/account traits (2..``max_levels``
    values) are used as segments besides the given ones.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: str = "person"
    session_gap: str | int = "30m"
    quiet: str | int = "14d"
    goals: tuple[str, ...] = ()
    support_event: str = "support_ticket"
    kinds: tuple[str, ...] = KINDS
    comparisons: tuple[str, ...] = ("segment", "period")
    traits: bool = True
    max_levels: int = 12
    alpha: float = 0.05
    min_items: int = 30
    top: int | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidParameterError(_pydantic_message(exc)) from None
        if self.unit not in UNITS:
            raise UnknownNameError("unit", self.unit, UNITS)
        for k in self.kinds:
            if k not in KINDS:
                raise UnknownNameError("pain point kind", k, KINDS)
        for c in self.comparisons:
            if c not in COMPARISONS:
                raise UnknownNameError("comparison", c, COMPARISONS)
        parse_duration(self.session_gap, name="session_gap")
        parse_duration(self.quiet, name="quiet")
        if not 0 < self.alpha < 1:
            raise InvalidParameterError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_items < 1 or self.max_levels < 2:
            raise InvalidParameterError("min_items must be >= 1 and max_levels >= 2")
        if self.top is not None and self.top < 1:
            raise InvalidParameterError(f"top must be at least 1, got {self.top}")

    @field_validator("goals", "kinds", "comparisons", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else v

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    @property
    def gap_seconds(self) -> int:
        return parse_duration(self.session_gap, name="session_gap")

    @property
    def quiet_seconds(self) -> int:
        return parse_duration(self.quiet, name="quiet")


# ============================================================================ results
@dataclass(frozen=True)
class Finding:
    """One significant comparison of a subject's bad-item rate with a baseline."""

    comparison: str
    """segment | period | other"""
    group: str | None
    """``dim=value`` for segment and period comparisons, else None."""
    n: int
    bad: int
    rate: float
    baseline_n: int
    baseline_bad: int
    baseline: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    excess: float
    """``n × (rate − baseline)``: bad items beyond the baseline rate."""
    affected: int
    """Distinct units with at least one bad item in the compared group."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class PainPoint:
    rank: int
    kind: str
    stage: str
    subject: str
    """Event (abandonment, drop_out), ``a → b`` transition (low_conversion) or stage."""
    metric: str
    finding: Finding
    severity: float
    """``finding.excess × (1 − finding.p_value)``."""
    evidence: str
    also: tuple[Finding, ...] = ()

    @property
    def suggestion(self) -> str:
        """A first idea for the journey map's solutions row, by kind of pain point."""
        who = f" ({self.finding.group})" if self.finding.group else ""
        return {
            "abandonment": f"Find out why journeys end after '{self.subject}'{who} and remove that hurdle",
            "drop_out": f"Follow up people who leave after '{self.subject}'{who}",
            "low_conversion": f"Ease the step {self.subject}{who}",
            "dwell_time": f"Shorten the time people spend in {self.stage}{who}",
            "loop": f"Help people who repeat {self.stage}{who} to move on",
            "support": f"Fix the causes of support requests in {self.stage}{who}",
            "negative_feedback": f"Act on the negative feedback in {self.stage}{who}",
        }.get(self.kind, f"Look into {self.subject}{who}")

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "rank": self.rank, "kind": self.kind, "stage": self.stage, "subject": self.subject,
            "metric": self.metric, "comparison": f.comparison, "group": f.group, "value": f.rate,
            "baseline": f.baseline, "effect": f.difference, "ci_low": f.ci_low, "ci_high": f.ci_high,
            "p_value": f.p_value, "n": f.n, "bad": f.bad, "affected": f.affected, "excess": f.excess,
            "severity": self.severity, "evidence": self.evidence, "also": [a.to_dict() for a in self.also],
        }


@dataclass(frozen=True)
class MomentOfTruth:
    rank: int
    outcome: str
    by: str
    value: str
    exposed: int
    exposed_rate: float
    unexposed: int
    unexposed_rate: float
    odds_ratio: float
    or_ci_low: float
    or_ci_high: float
    lift: float
    """Mantel–Haenszel risk ratio (exposed vs not, within strata)."""
    risk_difference: float
    p_value: float
    """Two-sided Cochran–Mantel–Haenszel test."""
    strata: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class PainPointsResult:
    query: PainPointsQuery
    model: str
    pain_points: tuple[PainPoint, ...]
    tests: int
    """Comparisons tested (the Bonferroni ``m``)."""
    segments: tuple[str, ...]
    """Segment dimensions used (given ones, traits, ``period``)."""
    moments: tuple[MomentOfTruth, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "unit": self.query.unit, "tests": self.tests, "segments": list(self.segments),
            "pain_points": [p.to_dict() for p in self.pain_points],
            "moments": [m.to_dict() for m in self.moments],
        }

    def to_pandas(self) -> pd.DataFrame:
        cols = ["rank", "kind", "stage", "subject", "comparison", "group", "value", "baseline", "effect",
                "ci_low", "ci_high", "p_value", "n", "affected", "excess", "severity", "evidence"]
        return pd.DataFrame([{c: p.to_dict()[c] for c in cols} for p in self.pain_points], columns=cols)

    def moments_pandas(self) -> pd.DataFrame:
        cols = list(MomentOfTruth.__dataclass_fields__)
        return pd.DataFrame([m.to_dict() for m in self.moments], columns=cols)

    def figure(self) -> Any:
        """Horizontal bars of severity, strongest on top."""
        import plotly.graph_objects as go

        pts = list(reversed(self.pain_points))
        fig = go.Figure(go.Bar(
            x=[p.severity for p in pts], y=[f"{p.stage}: {p.subject} ({p.kind})" for p in pts], orientation="h",
            hovertext=[p.evidence for p in pts],
        ))
        fig.update_layout(title=f"Pain points — {self.model}", xaxis_title="severity (excess bad items)")
        return fig


@dataclass(frozen=True)
class MomentsResult:
    outcome: str
    by: str
    moments: tuple[MomentOfTruth, ...]
    units: int
    converted: int

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "by": self.by, "units": self.units, "converted": self.converted,
                "moments": [m.to_dict() for m in self.moments]}

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([m.to_dict() for m in self.moments], columns=list(MomentOfTruth.__dataclass_fields__))


# ============================================================================ items (Ibis)
def _base(touches: ir.Table, q: PainPointsQuery) -> ir.Table:
    col = q.unit_column
    for c in (col, "ts", "message_id", "event", "stage_index"):
        if c not in touches.columns:
            raise UnknownNameError("column", c, touches.columns)
    t = touches.filter(touches[col].notnull() & touches.stage_index.notnull())
    goal = t.event.isin(list(q.goals)) if q.goals else ibis.literal(False)
    if "revenue" in t.columns:
        goal = goal | (t.revenue.fill_null(0) > 0)
    support = t.event == q.support_event
    if "touchpoint" in t.columns:
        support = support | (t.touchpoint.fill_null("") == "support")
    return t.select(**{_U: t[col].cast("string")}, ts=t.ts, message_id=t.message_id, event=t.event,
                    stage_index=t.stage_index.cast("int64"), goal=goal, support=support)


def _seconds(a: ir.TimestampValue, b: ir.TimestampValue) -> ir.FloatingValue:
    """Seconds from ``b`` to ``a``, exact to the microsecond: integer microseconds since the epoch
    (``unix_micros``) avoid DuckDB's time-zone-aware (ICU) ``date_diff`` on ``TIMESTAMPTZ``,
    which cost about half of the pain points' item query at 1M touches."""
    return (unix_micros(a) - unix_micros(b)).cast("float64") / 1e6


def _items(b: ir.Table, q: PainPointsQuery, n_stages: int, end: Any, mid: Any,
           surveys: ir.Table | None, model: JourneyModel) -> ir.Table:
    """``unit, kind, stage_index, subject, bad, t`` — one row per measured item."""
    w = ibis.window(group_by=b[_U], order_by=[b.ts, b.message_id])
    upto = ibis.window(group_by=b[_U], order_by=[b.ts, b.message_id], rows=(None, 0))
    before = ibis.window(group_by=b[_U], order_by=[b.ts, b.message_id], rows=(None, -1))
    # one window pass (same partition and order): ``prev_reach`` (the furthest stage before this
    # touch) is the running maximum up to the previous row, i.e. ``lag(reach)``
    t = b.mutate(next_ts=b.ts.lead().over(w), prev_ts=b.ts.lag().over(w), reach=b.stage_index.max().over(upto),
                 prev_stage=b.stage_index.lag().over(w), prev_reach=b.stage_index.max().over(before))
    gap = float(q.gap_seconds)
    ends = t.next_ts.isnull() | (_seconds(t.next_ts, t.ts) > gap)
    starts = t.prev_ts.isnull() | (_seconds(t.ts, t.prev_ts) > gap)
    end_lit = ibis.literal(end)
    quiet_ok = _seconds(end_lit, t.ts) >= float(q.quiet_seconds)
    parts: list[ir.Table] = []
    kinds = set(q.kinds)

    def shaped(x: ir.Table, kind: str, subject: ir.Value, bad: ir.Value, ts: ir.Value) -> ir.Table:
        return x.select(_U, kind=ibis.literal(kind), stage_index=x.stage_index.cast("int64"),
                        subject=subject.cast("string"), bad=bad, t=ts)

    if "abandonment" in kinds:
        x = t.filter(~t.goal & ~(ends & starts))
        parts.append(shaped(x, "abandonment", x.event, (x.next_ts.isnull() | (_seconds(x.next_ts, x.ts) > gap)),
                            x.ts))
    if "drop_out" in kinds:
        x = t.filter(~t.goal & quiet_ok)
        parts.append(shaped(x, "drop_out", x.event, x.next_ts.isnull(), x.ts))

    # stage entries: first touch at which the running furthest stage reaches a new value
    entries = t.filter(t.prev_reach.isnull() | (t.reach > t.prev_reach)).select(_U, stage_index=t.reach, ts=t.ts)
    we = ibis.window(group_by=entries[_U], order_by=entries.ts)
    entries = entries.mutate(next_entry=entries.ts.lead().over(we))
    if "low_conversion" in kinds:
        x = entries.filter((entries.stage_index < n_stages - 1)
                           & (_seconds(end_lit, entries.ts) >= float(q.quiet_seconds)))
        parts.append(shaped(x, "low_conversion", x.stage_index.cast("string"), x.next_entry.isnull(), x.ts))
    if "dwell_time" in kinds:
        x = entries.filter(entries.next_entry.notnull())
        x = x.mutate(dwell=_seconds(x.next_entry, x.ts))
        med = x.group_by("stage_index").aggregate(med=x.dwell.median())
        x = x.join(med, "stage_index")
        parts.append(shaped(x, "dwell_time", x.stage_index.cast("string"), x.dwell > x.med, x.ts))
    if "loop" in kinds or "support" in kinds:
        runs = t.filter(t.prev_stage.isnull() | (t.stage_index != t.prev_stage))
        runs = runs.group_by(_U, "stage_index").aggregate(runs=runs.count())
        st = t.filter(t.support)
        sup = st.group_by(_U, stage_index=st.reach).aggregate(tickets=st.count())
        first = entries.select(_U, "stage_index", "ts")
        if "loop" in kinds:
            x = first.left_join(runs, [_U, "stage_index"]).select(_U, "stage_index", "ts", runs=runs.runs)
            parts.append(shaped(x, "loop", x.stage_index.cast("string"), x.runs.fill_null(0) >= 2, x.ts))
        if "support" in kinds:
            x = first.left_join(sup, [_U, "stage_index"]).select(_U, "stage_index", "ts", tickets=sup.tickets)
            parts.append(shaped(x, "support", x.stage_index.cast("string"), x.tickets.fill_null(0) > 0, x.ts))
    if "negative_feedback" in kinds and surveys is not None:
        parts.extend(_survey_items(surveys, q, model))
    if not parts:
        raise InvalidParameterError("no pain point kind to compute", hint=f"choose from {', '.join(KINDS)}")
    items = union_all(parts)
    return items.mutate(recent=items.t >= ibis.literal(mid))


def _survey_items(s: ir.Table, q: PainPointsQuery, model: JourneyModel) -> list[ir.Table]:
    col = q.unit_column
    for c in (col, "ts", "kind", "score", "stage"):
        if c not in s.columns:
            raise UnknownNameError("survey column", c, s.columns)
    keys = [st.key for st in model.stages]
    idx = ibis.cases(*((s.stage == k, i) for i, k in enumerate(keys)), else_=ibis.null("int64"))
    lo = ibis.cases(*((s.kind == k, v[0]) for k, v in SURVEY_SCALES.items()), else_=ibis.null("float64"))
    hi = ibis.cases(*((s.kind == k, v[1]) for k, v in SURVEY_SCALES.items()), else_=ibis.null("float64"))
    norm = (s.score.cast("float64") - lo) / (hi - lo)
    x = s.select(**{_U: s[col].cast("string")}, stage_index=idx.cast("int64"), norm=norm, ts=s.ts)
    x = x.filter(x[_U].notnull() & x.stage_index.notnull() & x.norm.notnull())
    return [x.select(_U, kind=ibis.literal("negative_feedback"), stage_index=x.stage_index,
                     subject=x.stage_index.cast("string"), bad=x.norm < NEGATIVE_BELOW, t=x.ts)]


def _trait_segments(table: ir.Table, id_col: str, prefix: str, max_levels: int) -> list[ir.Table]:
    """``id, dim, value`` for every JSON key of ``table.traits`` with 2..max_levels values."""
    sample = table.select(table.traits).filter(table.traits.notnull()).limit(2000).to_pyarrow()
    keys: set[str] = set()
    for text in sample.column("traits").to_pylist():
        try:
            obj = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, dict):
            keys |= {k for k, v in obj.items() if isinstance(v, str | int | bool) and k.isidentifier()}
    if not keys:
        return []
    keys_sorted = sorted(keys)
    counts = table.aggregate(**{f"k{i}": json_get(table.traits, k).nunique() for i, k in enumerate(keys_sorted)})
    row = counts.to_pyarrow().to_pylist()[0]
    out = []
    for i, k in enumerate(keys_sorted):
        if 2 <= int(row[f"k{i}"] or 0) <= max_levels:
            v = json_get(table.traits, k)
            x = table.select(id=table[id_col].cast("string"), dim=ibis.literal(f"{prefix}{k}"), value=v)
            out.append(x.filter(x.value.notnull()))
    return out


def _unit_segments(b: ir.Table, q: PainPointsQuery, segments: Mapping[str, ir.Table],
                   people: ir.Table | None, accounts: ir.Table | None) -> ir.Table | None:
    col = q.unit_column
    parts: list[ir.Table] = []
    for name in segments:
        x = segment_values(segments, name, col, unit_as=_U)
        parts.append(x.filter(x.value.notnull()).select(_U, dim=ibis.literal(name), value=x.value))
    if q.traits:
        if people is not None and q.unit == "person":
            for x in _trait_segments(people, "person_id", "", q.max_levels):
                parts.append(x.select(**{_U: x.id}, dim=x.dim, value=x.value))
        if accounts is not None:
            links: ir.Table | None
            if q.unit == "account":
                links = accounts.select(id=accounts.account_id.cast("string"),
                                        **{_U: accounts.account_id.cast("string")})
            elif people is not None and "account_id" in people.columns:
                links = people.filter(people.account_id.notnull()).select(
                    id=people.account_id.cast("string"), **{_U: people.person_id.cast("string")})
            else:
                links = None
            if links is not None:
                for x in _trait_segments(accounts, "account_id", "account.", q.max_levels):
                    j = x.join(links, x.id == links.id)
                    parts.append(j.select(_U, dim=j.dim, value=j.value))
    if not parts:
        return None
    return reduce(lambda a, c: a.union(c), parts).distinct()


def _counts(items: ir.Table, useg: ir.Table | None, with_period: bool) -> pd.DataFrame:
    """Per kind, stage_index, subject, dim, value (dim NULL = everyone): n, bad, affected.

    The items are first summed per unit and subject (items, bad items, and the same in the
    recent half), so every comparison group sums unit rows instead of counting distinct units
    over its items: ``affected`` is the number of unit rows with a bad item. A unit has one row
    per segment value (``useg`` is distinct), so the sums equal the item counts."""
    keys = ["kind", "stage_index", "subject"]
    bad = items.bad.cast("int64")
    per_unit = items.group_by([_U, *keys]).aggregate(
        n=items.count(), bad=bad.sum().fill_null(0),
        n_r=items.count(where=items.recent), bad_r=bad.sum(where=items.recent).fill_null(0))

    def agg(x: ir.Table, n: ir.IntegerValue, k: ir.IntegerValue, dim: ir.Value, value: ir.Value) -> ir.Table:
        y = x.select(*keys, dim=dim, value=value, _n=n, _k=k)
        y = y.filter(y._n > 0)
        return y.group_by([*keys, "dim", "value"]).aggregate(
            n=y._n.sum().cast("int64"), bad=y._k.sum().cast("int64"), affected=y.count(where=y._k > 0))

    null_s = ibis.null("string")
    parts = [agg(per_unit, per_unit.n, per_unit.bad, null_s, null_s)]
    if with_period:
        parts.append(agg(per_unit, per_unit.n_r, per_unit.bad_r, ibis.literal(PERIOD_DIM), ibis.literal(RECENT)))
        parts.append(agg(per_unit, per_unit.n - per_unit.n_r, per_unit.bad - per_unit.bad_r,
                         ibis.literal(PERIOD_DIM), ibis.literal(EARLIER)))
    if useg is not None:
        j = per_unit.join(useg, _U)
        parts.append(agg(j, j.n, j.bad, j.dim.cast("string"), j.value.cast("string")))
    df = union_all(parts).to_pandas()
    for c in ("n", "bad", "affected"):
        df[c] = df[c].fillna(0).astype("int64")
    return df


# ============================================================================ statistics
def two_proportion(k: int, n: int, k0: int, n0: int) -> tuple[float, float, float, float]:
    """One-sided z-test of ``k/n > k0/n0`` (pooled variance): ``(difference, ci_low, ci_high, p)``;
    the interval is the 95 % Wald interval of the difference (unpooled)."""
    p, p0 = k / n, k0 / n0
    pooled = (k + k0) / (n + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n0))
    z = (p - p0) / se if se > 0 else (math.inf if p > p0 else 0.0)
    pv = float(stats.norm.sf(z))
    se_u = math.sqrt(p * (1 - p) / n + p0 * (1 - p0) / n0)
    d = p - p0
    return d, d - 1.959964 * se_u, d + 1.959964 * se_u, pv


@dataclass
class _Test:
    kind: str
    stage_index: int
    subject: str
    comparison: str
    group: str | None
    n: int
    bad: int
    affected: int
    n0: int
    bad0: int
    extra: dict[str, Any] = field(default_factory=dict)


def _tests(df: pd.DataFrame, q: PainPointsQuery) -> list[_Test]:
    out: list[_Test] = []
    comps = set(q.comparisons)
    overall = df[df.dim.isna()]
    seg = df[df.dim.notna()]
    for (kind, si, subj), g in seg.groupby(["kind", "stage_index", "subject"], sort=True):
        for dim, gd in g.groupby("dim", sort=True):
            if dim == PERIOD_DIM and ("period" not in comps or kind not in PERIOD_KINDS):
                continue
            if dim != PERIOD_DIM and "segment" not in comps:
                continue
            n_all, bad_all = int(gd.n.sum()), int(gd.bad.sum())
            recs: list[dict[Any, Any]] = gd.to_dict("records")
            for r in recs:
                if dim == PERIOD_DIM and r["value"] != RECENT:
                    continue
                out.append(_Test(str(kind), int(str(si)), str(subj), "period" if dim == PERIOD_DIM else "segment",
                                 f"{dim}={r['value']}", int(r["n"]), int(r["bad"]), int(r["affected"]),
                                 n_all - int(r["n"]), bad_all - int(r["bad"])))
    if "other" in comps:
        for kind, g in overall.groupby("kind", sort=True):
            if kind == "dwell_time":
                continue
            pooled_by = ["stage_index"] if kind in ("abandonment", "drop_out") else []
            groups = g.groupby(pooled_by, sort=True) if pooled_by else [(None, g)]
            for _, gg in groups:
                n_all, bad_all = int(gg.n.sum()), int(gg.bad.sum())
                rows: list[dict[Any, Any]] = gg.to_dict("records")
                for r in rows:
                    out.append(_Test(str(kind), int(r["stage_index"]), str(r["subject"]), "other", None,
                                     int(r["n"]), int(r["bad"]), int(r["affected"]), n_all - int(r["n"]),
                                     bad_all - int(r["bad"])))
    return out


def _subject_label(kind: str, subject: str, stages: Sequence[str]) -> str:
    if kind in ("abandonment", "drop_out"):
        return subject
    i = int(subject)
    if kind == "low_conversion":
        return f"{stages[i]} → {stages[i + 1]}" if i + 1 < len(stages) else stages[i]
    return stages[i]


def _evidence(kind: str, stage: str, subject: str, f: Finding) -> str:
    who = {"segment": f"for {f.group}", "period": "in the recent half",
           "other": "for this subject"}[f.comparison]
    base = {"segment": "other values", "period": "the earlier half",
            "other": "the other events of the stage" if kind in ("abandonment", "drop_out") else "the others"}
    what = {
        "abandonment": f"{f.rate:.0%} of '{subject}' touches end the session",
        "drop_out": f"{f.rate:.0%} of '{subject}' touches are the last touch",
        "low_conversion": f"{f.rate:.0%} of units entering {stage} never go further ({subject})",
        "dwell_time": f"{f.rate:.0%} of units stay in {stage} longer than its median",
        "loop": f"{f.rate:.0%} of units repeat {stage}",
        "support": f"{f.rate:.0%} of units in {stage} open a support request",
        "negative_feedback": f"{f.rate:.0%} of survey answers in {stage} are negative",
    }[kind]
    return (f"{what} {who} vs {f.baseline:.0%} for {base[f.comparison]} "
            f"(+{f.difference:.1%}, 95% CI {f.ci_low:+.1%}..{f.ci_high:+.1%}, p={f.p_value:.1e}; "
            f"{f.excess:,.0f} excess of {f.n:,} items, {f.affected:,} units affected)")


# ============================================================================ entry points
def pain_points(touches: ir.Table, model: JourneyModel, query: PainPointsQuery | None = None, *,
                surveys: ir.Table | None = None, people: ir.Table | None = None,
                accounts: ir.Table | None = None, segments: Mapping[str, ir.Table] | None = None,
                moments: bool = False) -> PainPointsResult:
    """Detect and rank pain points over ``touches`` (see the module docstring).

    ``touches`` need the unit column, ``ts``, ``message_id``, ``event``, ``stage_index`` of
    ``model`` (``revenue`` and ``touchpoint`` are used when present). ``surveys`` (with the
    unit column, ``ts``, ``kind``, ``score``, ``stage``) enables negative feedback;
    ``people`` (``person_id``, ``account_id``, ``traits``) and ``accounts`` (``account_id``,
    ``traits``) give trait segments; ``segments`` maps names (persona, cohort) to tables
    with the unit column and ``value``. ``moments`` adds :func:`moments_of_truth` by channel.
    """
    q = query or PainPointsQuery()
    b = _base(touches, q)
    span = b.aggregate(lo=b.ts.min(), hi=b.ts.max()).to_pyarrow().to_pylist()[0]
    if span["lo"] is None:
        raise InvalidParameterError("no touches with a unit and a stage to analyse")
    end, lo = span["hi"], span["lo"]
    mid = lo + (end - lo) / 2
    stage_keys = [s.key for s in model.stages]
    items = _items(b, q, len(stage_keys), end, mid, surveys, model)
    useg = _unit_segments(b, q, segments or {}, people, accounts)
    df = _counts(items, useg, "period" in q.comparisons)
    dims = tuple(sorted({str(d) for d in df.dim.dropna().unique()}))

    tests = [t for t in _tests(df, q) if t.n >= q.min_items and t.n0 >= q.min_items and t.bad >= 5]
    m = max(1, len(tests))
    best: dict[tuple[str, int, str], list[Finding]] = {}
    for t in tests:
        d, lo_ci, hi_ci, pv = two_proportion(t.bad, t.n, t.bad0, t.n0)
        if d <= 0 or pv >= q.alpha / m:
            continue
        f = Finding(comparison=t.comparison, group=t.group, n=t.n, bad=t.bad, rate=t.bad / t.n, baseline_n=t.n0,
                    baseline_bad=t.bad0, baseline=t.bad0 / t.n0, difference=d, ci_low=lo_ci, ci_high=hi_ci,
                    p_value=pv, excess=t.n * d, affected=t.affected)
        best.setdefault((t.kind, t.stage_index, t.subject), []).append(f)
    points: list[tuple[float, str, int, str, Finding, tuple[Finding, ...]]] = []
    for (kind, si, subj), fs in best.items():
        fs.sort(key=lambda f: (-f.excess, f.p_value, f.group or ""))
        top = fs[0]
        points.append((top.excess * (1 - top.p_value), kind, si, subj, top, tuple(fs[1:])))
    points.sort(key=lambda p: (-p[0], p[1], p[2], p[3]))
    if q.top is not None:
        points = points[: q.top]
    out = []
    for rank, (sev, kind, si, subj, f, also) in enumerate(points, start=1):
        stage = stage_keys[si] if 0 <= si < len(stage_keys) else str(si)
        label = _subject_label(kind, subj, stage_keys)
        out.append(PainPoint(rank=rank, kind=kind, stage=stage, subject=label, metric=_METRICS[kind], finding=f,
                             severity=sev, evidence=_evidence(kind, stage, label, f), also=also))
    mots: tuple[MomentOfTruth, ...] = ()
    if moments:
        mots = moments_of_truth(touches, goals=q.goals, unit=q.unit).moments
    return PainPointsResult(query=q, model=model.key, pain_points=tuple(out), tests=len(tests), segments=dims,
                            moments=mots)


def _mantel_haenszel(tables: Sequence[tuple[float, float, float, float]]) -> dict[str, float]:
    """MH odds ratio (RGB 95 % CI), risk ratio, risk difference and the CMH p-value over
    2×2 strata ``(a, b, c, d)`` = (exposed&event, exposed&no event, unexposed&event, unexposed&no)."""
    r_num = s_den = 0.0
    p_r = ps_qr = q_s = 0.0
    rr_num = rr_den = rd_num = w_sum = 0.0
    cmh_num = cmh_var = 0.0
    for a, b_, c, d in tables:
        n = a + b_ + c + d
        n1, n0 = a + b_, c + d
        if n1 == 0 or n0 == 0 or n < 2:
            continue
        r, s = a * d / n, b_ * c / n
        p, qq = (a + d) / n, (b_ + c) / n
        r_num += r
        s_den += s
        p_r += p * r
        ps_qr += p * s + qq * r
        q_s += qq * s
        rr_num += a * n0 / n
        rr_den += c * n1 / n
        w = n1 * n0 / n
        rd_num += (a / n1 - c / n0) * w
        w_sum += w
        m1 = a + c
        cmh_num += a - n1 * m1 / n
        cmh_var += n1 * n0 * m1 * (n - m1) / (n * n * (n - 1))
    nan = float("nan")
    if r_num == 0 or s_den == 0:
        orr, lo, hi = nan, nan, nan
    else:
        orr = r_num / s_den
        var = p_r / (2 * r_num ** 2) + ps_qr / (2 * r_num * s_den) + q_s / (2 * s_den ** 2)
        lo, hi = math.exp(math.log(orr) - 1.959964 * math.sqrt(var)), math.exp(math.log(orr) + 1.959964 * math.sqrt(var))
    chi = cmh_num ** 2 / cmh_var if cmh_var > 0 else 0.0
    return {"odds_ratio": orr, "lo": lo, "hi": hi, "rr": rr_num / rr_den if rr_den else nan,
            "rd": rd_num / w_sum if w_sum else nan, "p": float(stats.chi2.sf(chi, 1)) if cmh_var > 0 else 1.0}


def moments_of_truth(touches: ir.Table, *, by: str = "channel", outcome: str = "conversion",
                     goals: Sequence[str] = (), unit: str = "person", inactive: str | int = "30d",
                     min_exposed: int = 20) -> MomentsResult:
    """Touchpoints (``by`` = channel, touchpoint or event) whose presence changes the outcome
    most, stratified by stage reached (see the module docstring). Goal touches are touches with
    revenue > 0 or an event in ``goals``; values with fewer than ``min_exposed`` exposed units
    are left out."""
    if by not in MOMENT_BY:
        raise UnknownNameError("moments-of-truth column", by, MOMENT_BY)
    if outcome not in OUTCOMES:
        raise UnknownNameError("outcome", outcome, OUTCOMES)
    if unit not in UNITS:
        raise UnknownNameError("unit", unit, UNITS)
    col = UNITS[unit]
    if by not in touches.columns:
        raise UnknownNameError("column", by, touches.columns)
    t = touches.filter(touches[col].notnull())
    goal = t.event.isin(list(goals)) if goals else ibis.literal(False)
    if "revenue" in t.columns:
        goal = goal | (t.revenue.fill_null(0) > 0)
    t = t.select(**{_U: t[col].cast("string")}, ts=t.ts, x=t[by].cast("string"), goal=goal,
                 stage_index=t.stage_index)
    firsts = t.group_by(_U).aggregate(
        conv_ts=ibis.cases((t.goal, t.ts), else_=ibis.null(t.ts.type().copy(nullable=True))).min(), last_ts=t.ts.max())
    j = t.join(firsts, _U)
    if outcome == "conversion":
        before = j.conv_ts.isnull() | (j.ts < j.conv_ts)
        pre = j.filter(before)
        units = pre.group_by(_U).aggregate(stratum=pre.stage_index.max(),
                                           y=pre.conv_ts.notnull().any())
        exposures = pre.filter(pre.x.notnull()).select(_U, "x").distinct()
    else:
        end = t.ts.max().as_scalar()
        secs = float(parse_duration(inactive, name="inactive"))
        cust = j.filter(j.conv_ts.notnull() & (_seconds(end, j.conv_ts) >= secs))
        units = cust.group_by(_U).aggregate(stratum=cust.stage_index.max(),
                                            y=(_seconds(end, cust.last_ts) >= secs).any())
        after = cust.filter(cust.ts > cust.conv_ts)
        exposures = after.filter(after.x.notnull()).select(_U, "x").distinct()
    units = units.filter(units.stratum.notnull())
    sizes = units.group_by("stratum").aggregate(n=units.count(), events=units.y.cast("int64").sum())
    ex = exposures.join(units, _U)
    cells = ex.group_by("x", "stratum").aggregate(n1=ex.count(), a=ex.y.cast("int64").sum())
    size_df = sizes.to_pandas()
    cell_df = cells.to_pandas()
    strata = {int(r["stratum"]): (int(r["n"]), int(r["events"])) for r in size_df.to_dict("records")}
    total_units = sum(v[0] for v in strata.values())
    total_events = sum(v[1] for v in strata.values())
    found: list[MomentOfTruth] = []
    for x, g in cell_df.groupby("x", sort=True):
        recs: list[dict[str, Any]] = g.to_dict("records")
        exp_n = sum(int(r["n1"]) for r in recs)
        if exp_n < min_exposed or total_units - exp_n < min_exposed:
            continue
        tables = []
        a_sum = c_sum = n0_sum = 0
        for r in recs:
            n, m1 = strata[int(r["stratum"])]
            a, n1 = int(r["a"]), int(r["n1"])
            c, n0 = m1 - a, n - n1
            tables.append((float(a), float(n1 - a), float(c), float(n0 - c)))
            a_sum += a
        for s, (n, m1) in strata.items():
            if s not in {int(r["stratum"]) for r in recs}:
                tables.append((0.0, 0.0, float(m1), float(n - m1)))
        c_sum = total_events - a_sum
        n0_sum = total_units - exp_n
        mh = _mantel_haenszel(tables)
        found.append(MomentOfTruth(
            rank=0, outcome=outcome, by=by, value=str(x), exposed=exp_n, exposed_rate=a_sum / exp_n,
            unexposed=n0_sum, unexposed_rate=c_sum / n0_sum if n0_sum else float("nan"),
            odds_ratio=mh["odds_ratio"], or_ci_low=mh["lo"], or_ci_high=mh["hi"], lift=mh["rr"],
            risk_difference=mh["rd"], p_value=mh["p"], strata=len(strata),
        ))
    found.sort(key=lambda mt: (-(math.log(mt.odds_ratio) if mt.odds_ratio and mt.odds_ratio > 0
                                 and math.isfinite(mt.odds_ratio) else -math.inf), mt.value))
    ranked = tuple(MomentOfTruth(**{**mt.to_dict(), "rank": i}) for i, mt in enumerate(found, start=1))
    return MomentsResult(outcome=outcome, by=by, moments=ranked, units=total_units, converted=total_events)


__all__ = [
    "COMPARISONS",
    "KINDS",
    "Finding",
    "MomentOfTruth",
    "MomentsResult",
    "PainPoint",
    "PainPointsQuery",
    "PainPointsResult",
    "moments_of_truth",
    "pain_points",
    "two_proportion",
]
