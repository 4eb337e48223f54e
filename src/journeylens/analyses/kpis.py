"""KPIs per stage: the registry of every KPI of DOMAIN.md and one function that computes them.

The **registry** (:data:`KPIS`) holds one frozen :class:`Kpi` per KPI: key, label, unit,
the DOMAIN.md *phase* it belongs to (awareness, consideration, decision, retention, advocacy),
its one formula in words and the inputs it reads. Docs (:func:`kpi_markdown`), the CLI
(``journeylens kpis --list``) and the dashboard read it from here.

:func:`kpis` computes every KPI from three tables the caller passes — the touches of a journey
model (``ws.touches(model)``), the imported costs (``ws.costs()``) and the survey answers
(``ws.surveys()``) — overall and, optionally, per period (day/week/month, UTC) and breakdown
value. It returns a :class:`KpiResult`: per stage of the model the KPIs of the phases that land
on that stage, each with its value or ``None`` plus the reason it is missing (never a made-up
0). ``docs/kpis.md`` states every formula, the stage mapping and the breakdown rules.

Everything table-shaped is Ibis (filters, window functions, group-bys) and gives the same numbers
on DuckDB and Spark; Python only divides the aggregated sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from journeylens.analyses._relations import segment_values, union_all
from journeylens.analyses._time import PERIODS, format_duration, parse_duration
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey.model import JourneyModel
from journeylens.store.functions import json_get

PHASES: tuple[str, ...] = ("awareness", "consideration", "decision", "retention", "advocacy")
"""The KPI phases of DOMAIN.md ("KPIs by stage"), in journey order."""

STAGE_PHASES: dict[str, tuple[str, ...]] = {
    "awareness": ("awareness",), "exposure": ("awareness",),
    "consideration": ("consideration",), "interest": ("consideration",), "desire": ("consideration",),
    "acquisition": ("consideration",), "engagement": ("consideration",),
    "decision": ("decision",), "purchase": ("decision",), "action": ("decision",),
    "conversion": ("decision",), "subscription": ("decision",),
    "retention": ("retention",), "use": ("retention",), "onboarding": ("retention",),
    "adoption": ("retention",), "assimilation": ("retention",), "expansion": ("retention",),
    "excitement": ("retention",), "ascension": ("retention",),
    "advocacy": ("advocacy",), "advocate": ("advocacy",), "promoter": ("advocacy",),
    "pre_purchase": ("awareness", "consideration"), "post_purchase": ("retention", "advocacy"),
}
"""Which KPI phase(s) a model stage key stands for. Stage keys not listed here are placed by
position (see :func:`stage_phases`)."""

UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
NONE_LABEL = "(none)"
"""Breakdown value of rows that have none."""
DEFAULT_CHURN_AFTER = "30d"
"""A customer is churned when the latest touch of the data is more than this after their last touch."""

VIDEO_EVENTS: tuple[str, ...] = ("video_view",)
UPSELL_EVENTS: tuple[str, ...] = ("upsell",)
SUPPORT_EVENTS: tuple[str, ...] = ("support_ticket",)
REFERRAL_EVENTS: tuple[str, ...] = ("referral_sent",)
REVIEW_EVENTS: tuple[str, ...] = ("review_written",)
EVENT_SETS: dict[str, tuple[str, ...]] = {
    "video": VIDEO_EVENTS, "upsell": UPSELL_EVENTS, "support": SUPPORT_EVENTS,
    "referral": REFERRAL_EVENTS, "review": REVIEW_EVENTS,
}
"""Event names the event-counting KPIs read (override with ``kpis(..., events={...})``)."""

COST_BREAKDOWNS: dict[str, str] = {"channel": "channel", "campaign": "campaign", "utm_campaign": "campaign"}
"""Breakdowns the costs table can be split by, and its column for each."""
TOUCH_ALIASES: dict[str, str] = {"campaign": "utm_campaign"}
"""Breakdown names that mean another touches column."""
SURVEY_BREAKDOWNS: tuple[str, ...] = ("touchpoint",)
"""Touch-column breakdowns the surveys table also has."""

Unit = Literal["count", "currency", "share", "ratio", "score"]
Input = Literal["touches", "costs", "surveys"]


# ============================================================================ registry
@dataclass(frozen=True)
class Kpi:
    """One KPI: ``phase`` is its DOMAIN.md stage; ``formula`` its one definition (per period and
    breakdown value); ``inputs`` the tables it reads. ``unit``: ``count``, ``currency`` (the
    costs' and touches' currency), ``share`` (0–1), ``ratio`` (a plain quotient) or ``score``."""

    key: str
    label: str
    unit: Unit
    phase: str
    formula: str
    inputs: tuple[Input, ...]


KPIS: tuple[Kpi, ...] = (
    # --- awareness
    Kpi("spend", "Spend", "currency", "awareness",
        "Σ costs.spend", ("costs",)),
    Kpi("impressions", "Impressions", "count", "awareness",
        "Σ costs.impressions over cost rows that report impressions", ("costs",)),
    Kpi("reach", "Reach", "count", "awareness",
        "distinct units with a touch in an awareness stage", ("touches",)),
    Kpi("video_views", "Video views", "count", "awareness",
        "touches whose event is a video event (video_view)", ("touches",)),
    Kpi("cpm", "CPM", "currency", "awareness",
        "Σ spend / Σ impressions × 1000, both over cost rows that report impressions", ("costs",)),
    # --- consideration
    Kpi("clicks", "Clicks", "count", "consideration",
        "Σ costs.clicks over cost rows that report clicks", ("costs",)),
    Kpi("ctr", "CTR", "share", "consideration",
        "Σ clicks / Σ impressions, both over cost rows that report clicks and impressions", ("costs",)),
    Kpi("engagement_rate", "Engagement rate", "share", "consideration",
        "engaged units (a touch in a stage after the awareness stages) / reach", ("touches",)),
    Kpi("cpc", "CPC", "currency", "consideration",
        "Σ spend / Σ clicks, both over cost rows that report clicks", ("costs",)),
    # --- decision
    Kpi("leads", "Leads", "count", "decision",
        "units counted at their first identified touch (one carrying a user_id)", ("touches",)),
    Kpi("conversions", "Conversions", "count", "decision",
        "units counted at their first revenue touch (revenue > 0)", ("touches",)),
    Kpi("conversion_rate", "Conversion rate", "share", "decision",
        "units counted at their first touch in a decision stage that have a revenue touch / those units",
        ("touches",)),
    Kpi("sales", "Sales", "count", "decision",
        "touches with revenue > 0", ("touches",)),
    Kpi("revenue", "Revenue", "currency", "decision",
        "Σ touches.revenue", ("touches",)),
    Kpi("cpl", "CPL", "currency", "decision",
        "Σ spend / leads", ("costs", "touches")),
    Kpi("cost_per_conversion", "Cost per conversion (CPA)", "currency", "decision",
        "Σ spend / conversions", ("costs", "touches")),
    Kpi("roas", "ROAS", "ratio", "decision",
        "revenue / Σ spend", ("costs", "touches")),
    # --- retention
    Kpi("repurchase_rate", "Repurchase rate", "share", "retention",
        "customers (counted at their first revenue touch) with 2 or more revenue touches / customers",
        ("touches",)),
    Kpi("upsell_rate", "Upsell rate", "share", "retention",
        "customers (counted at their first revenue touch) with an upsell touch / customers", ("touches",)),
    Kpi("churn_rate", "Churn rate", "share", "retention",
        "customers whose last touch is more than churn_after before the latest touch / customers whose "
        "first revenue touch is", ("touches",)),
    Kpi("clv", "CLV (historical)", "currency", "retention",
        "Σ revenue of all touches of the customers (counted at their first revenue touch) / customers",
        ("touches",)),
    Kpi("nps", "NPS", "score", "retention",
        "100 × (answers 9–10 − answers 0–6) / answers, NPS answers (0–10)", ("surveys",)),
    Kpi("csat", "CSAT", "share", "retention",
        "answers 4–5 / answers, CSAT answers (1–5)", ("surveys",)),
    Kpi("ces", "CES", "score", "retention",
        "mean score of CES answers (1–7, higher = easier)", ("surveys",)),
    Kpi("feedback_count", "Feedback count", "count", "retention",
        "survey answers of any kind", ("surveys",)),
    Kpi("support_requests", "Support requests", "count", "retention",
        "touches whose event is a support event (support_ticket)", ("touches",)),
    # --- advocacy
    Kpi("referrals", "Referrals", "count", "advocacy",
        "touches whose event is a referral event (referral_sent)", ("touches",)),
    Kpi("reviews", "Reviews written", "count", "advocacy",
        "touches whose event is a review event (review_written)", ("touches",)),
)
"""Every KPI, in phase order. Keys are stable (JSON, CSV, REST, dashboard)."""

REGISTRY: dict[str, Kpi] = {k.key: k for k in KPIS}


def kpis_of_phase(phase: str) -> tuple[Kpi, ...]:
    return tuple(k for k in KPIS if k.phase == phase)


# ============================================================================ survey scores
def nps_expr(score: ir.NumericColumn, where: ir.BooleanValue | None = None) -> ir.FloatingScalar:
    """Net Promoter Score of 0–10 answers: ``100 × (#score ≥ 9 − #score ≤ 6) / #answers``.

    ``where`` restricts the answers (e.g. ``t.kind == "nps"``); NULL scores are not answers; NULL
    when there is no answer. A reduction: use it in ``aggregate``.
    """
    n = score.count(where=where)
    promoters = (score >= 9).cast("int64").sum(where=where)
    detractors = (score <= 6).cast("int64").sum(where=where)
    return 100.0 * (promoters - detractors).cast("float64") / n.nullif(0).cast("float64")


def csat_expr(score: ir.NumericColumn, where: ir.BooleanValue | None = None) -> ir.FloatingScalar:
    """CSAT of 1–5 answers: share (0–1) of answers 4 or 5; NULL when there is no answer."""
    n = score.count(where=where)
    return (score >= 4).cast("int64").sum(where=where).cast("float64") / n.nullif(0).cast("float64")


def ces_expr(score: ir.NumericColumn, where: ir.BooleanValue | None = None) -> ir.FloatingScalar:
    """CES of 1–7 answers (higher = easier): the mean score; NULL when there is no answer."""
    return score.cast("float64").mean(where=where)


# ============================================================================ stage mapping
def stage_phases(model: JourneyModel) -> dict[str, tuple[str, ...]]:
    """The KPI phases each stage of ``model`` stands for.

    Known stage keys use :data:`STAGE_PHASES`. Any other stage ``i`` of ``n`` stands for the phase
    nearest its relative position ``4·i/(n−1)``. A phase that no stage stands for is added to the
    stage nearest the phase's position (ties: the earlier stage) — so every phase has a stage.
    """
    keys = model.stage_keys
    n = len(keys)

    def pos(i: int) -> float:
        return 0.0 if n == 1 else 4.0 * i / (n - 1)

    out: dict[str, list[str]] = {}
    for i, key in enumerate(keys):
        out[key] = list(STAGE_PHASES.get(key, (PHASES[round(pos(i))],)))
    for j, phase in enumerate(PHASES):
        if not any(phase in p for p in out.values()):
            nearest = min(range(n), key=lambda i: (abs(pos(i) - j), i))
            out[keys[nearest]].append(phase)
    return {k: tuple(sorted(v, key=PHASES.index)) for k, v in out.items()}


def kpi_stages(model: JourneyModel) -> dict[str, tuple[Kpi, ...]]:
    """The KPIs shown on each stage of ``model``: those of the phases whose *home stage* it is
    (the first stage standing for the phase)."""
    phases = stage_phases(model)
    home: dict[str, str] = {}
    for key in model.stage_keys:
        for p in phases[key]:
            home.setdefault(p, key)
    return {key: tuple(k for k in KPIS if home[k.phase] == key) for key in model.stage_keys}


# ============================================================================ request model
class KpiQuery(BaseModel):
    """Parameters of :func:`kpis` (shared by the Python API, CLI and REST API).

    ``by`` is a touches column (``channel``, ``touchpoint``, ``utm_source`` …; ``campaign`` means
    ``utm_campaign``), ``properties.<key>`` or the name of a segment table (persona, cohort);
    ``period`` is ``day``, ``week`` (Monday–Sunday) or ``month`` (UTC); ``churn_after`` a
    duration (``30d``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unit: str = "person"
    by: str | None = None
    period: str | None = None
    churn_after: str | int = DEFAULT_CHURN_AFTER

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid kpi query: " + "; ".join(parts)) from None

    @model_validator(mode="after")
    def _validate(self) -> KpiQuery:
        if self.unit not in UNITS:
            raise UnknownNameError("unit", self.unit, UNITS)
        if self.period is not None and self.period not in PERIODS:
            raise UnknownNameError("period", self.period, PERIODS)
        if self.by is not None and not self.by.strip():
            raise InvalidParameterError("the breakdown (by) is empty")
        parse_duration(self.churn_after, name="churn_after")
        return self

    @property
    def churn_seconds(self) -> int:
        return parse_duration(self.churn_after, name="churn_after")

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]


# ============================================================================ result
Number = int | float


@dataclass(frozen=True)
class KpiValue:
    """One KPI's value; ``None`` with ``missing`` (why) when it cannot be computed."""

    kpi: str
    value: Number | None
    missing: str | None = None


@dataclass(frozen=True)
class KpiGroup:
    """The KPIs of one period (start date; None without ``period``) and breakdown value."""

    period: date | None
    value: str | None
    kpis: tuple[KpiValue, ...]


@dataclass(frozen=True)
class StageKpis:
    stage: str
    label: str
    phases: tuple[str, ...]
    """The KPI phases whose KPIs land on this stage (may be empty)."""
    kpis: tuple[KpiValue, ...]
    """Over everything (all periods and breakdown values)."""
    groups: tuple[KpiGroup, ...] = ()
    """Per period and/or breakdown value (empty without ``by``/``period``)."""


def _values_dict(values: Iterable[KpiValue]) -> tuple[dict[str, Number | None], dict[str, str]]:
    vals = {v.kpi: v.value for v in values}
    missing = {v.kpi: v.missing for v in values if v.missing is not None}
    return vals, missing


@dataclass(frozen=True)
class KpiResult:
    """KPIs per stage of ``model`` (see :func:`kpis`)."""

    model: str
    query: KpiQuery
    stages: tuple[StageKpis, ...]
    as_of: datetime | None = None
    """The latest touch (the reference time of ``churn_rate``)."""
    notes: tuple[str, ...] = field(default=())

    def get(self, kpi: str, *, period: date | None = None, value: str | None = None) -> KpiValue:
        """The KPI ``kpi`` overall, or of one period and/or breakdown value."""
        for s in self.stages:
            if period is None and value is None:
                found = [v for v in s.kpis if v.kpi == kpi]
            else:
                found = [v for g in s.groups if g.period == period and g.value == value for v in g.kpis
                         if v.kpi == kpi]
            if found:
                return found[0]
        raise UnknownNameError("kpi", kpi, [v.kpi for s in self.stages for v in s.kpis])

    def value(self, kpi: str, *, period: date | None = None, value: str | None = None) -> Number | None:
        return self.get(kpi, period=period, value=value).value

    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            vals, missing = _values_dict(s.kpis)
            d: dict[str, Any] = {"stage": s.stage, "label": s.label, "phases": list(s.phases), "kpis": vals,
                                 "missing": missing}
            if s.groups:
                d["groups"] = []
                for g in s.groups:
                    gv, gm = _values_dict(g.kpis)
                    d["groups"].append({"period": g.period.isoformat() if g.period else None, "value": g.value,
                                        "kpis": gv, "missing": gm})
            stages.append(d)
        return {"model": self.model, "unit": self.query.unit, "by": self.query.by, "period": self.query.period,
                "churn_after": str(self.query.churn_after),
                "as_of": self.as_of.isoformat() if self.as_of else None, "stages": stages}

    def to_pandas(self) -> pd.DataFrame:
        """One row per stage, period, breakdown value and KPI (overall rows have empty period/value)."""
        rows: list[dict[str, Any]] = []
        for s in self.stages:
            parts: list[tuple[date | None, str | None, tuple[KpiValue, ...]]] = [(None, None, s.kpis)]
            parts += [(g.period, g.value, g.kpis) for g in s.groups]
            for period, value, values in parts:
                for v in values:
                    k = REGISTRY[v.kpi]
                    rows.append({"stage": s.stage, "period": period, "by": value, "kpi": v.kpi, "label": k.label,
                                 "value": v.value, "unit": k.unit, "missing": v.missing})
        return pd.DataFrame(rows, columns=["stage", "period", "by", "kpi", "label", "value", "unit", "missing"])

    def figure(self) -> Any:
        """A Plotly table figure: one column per stage, its KPIs as label: value lines."""
        import plotly.graph_objects as go

        cells = []
        for s in self.stages:
            cells.append("<br>".join(f"{REGISTRY[v.kpi].label}: {format_kpi(v)}" for v in s.kpis) or "–")
        return go.Figure(go.Table(header={"values": [s.label for s in self.stages]},
                                  cells={"values": [[c] for c in cells], "align": "left"}))


def format_kpi(v: KpiValue) -> str:
    """A short display form of a KPI value: ``–`` when missing."""
    if v.value is None:
        return "–"
    unit = REGISTRY[v.kpi].unit
    x = v.value
    if unit == "count":
        return f"{int(x):,}"
    if unit == "share":
        return f"{x:.1%}"
    if unit == "currency":
        return f"{x:,.2f}"
    return f"{x:,.2f}"


# ============================================================================ computation
_Key = tuple[int, date | None, str | None]
"""(level, period, breakdown value): level 0 is the overall row."""


def _period(ts: ir.Value, period: str | None) -> ir.Value:
    if period is None:
        return ibis.null("date")
    return ts.truncate(PERIODS[period]).cast("date") if isinstance(ts, ir.TimestampValue) \
        else ts.cast("timestamp").truncate(PERIODS[period]).cast("date")


def _segment(segments: Mapping[str, ir.Table], name: str, unit_col: str) -> ir.Table:
    return segment_values(segments, name, unit_col, unit_as="_u", value_as="_g")


def _with_levels(base: ir.Table, grouped: ir.Table | None) -> ir.Table:
    """``base`` as level 0 (period and value NULL) plus ``grouped`` as level 1."""
    lvl0 = base.mutate(_lvl=ibis.literal(0, "int64"), _p=ibis.null("date"), _g=ibis.null("string"),
                       _sg=ibis.literal(""))
    if grouped is None:
        return lvl0
    lvl1 = grouped.mutate(_lvl=ibis.literal(1, "int64"))
    return union_all([lvl0, lvl1.select(*lvl0.columns)])


def _collect(expr: ir.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return rows


def _touch_groups(touches: ir.Table, q: KpiQuery, segments: Mapping[str, ir.Table]) -> tuple[ir.Table, ir.Table | None]:
    """Touches with ``_u`` (unit id) — and, grouped, ``_p``, ``_g``, ``_sg`` (segment value or '')."""
    t = touches
    need = ["ts", "message_id", "stage_index", "event", "revenue", "user_id"]
    lacking = [c for c in [*need, q.unit_column] if c not in t.columns]
    if lacking:
        raise InvalidParameterError(f"the touches lack column(s) {', '.join(lacking)}")
    t = t.filter(t[q.unit_column].notnull())
    base = t.select(_u=t[q.unit_column].cast("string"), ts=t.ts, message_id=t.message_id,
                    stage_index=t.stage_index, event=t.event, revenue=t.revenue.cast("float64"),
                    user_id=t.user_id)
    if q.by is None and q.period is None:
        return base, None
    p = _period(t.ts, q.period)
    by = q.by
    if by is None:
        g: ir.Value = ibis.null("string")
    elif by in segments:
        seg = _segment(segments, by, q.unit_column)
        j = base.mutate(_p=_period(base.ts, q.period)).left_join(seg, "_u")
        grouped = j.select(*base.columns, "_p", "_g", _sg=j._g.fill_null(""))
        return base, grouped
    else:
        name = TOUCH_ALIASES.get(by, by) if by not in t.columns else by
        if name.startswith("properties.") and len(name) > len("properties.") and "properties" in t.columns:
            g = json_get(t.properties, name[len("properties."):])
        elif name in t.columns and name != "properties":
            g = t[name].cast("string")
        else:
            allowed = [c for c in t.columns if c not in ("properties", "traits")] + [*segments, "campaign",
                                                                                  "properties.<key>"]
            raise UnknownNameError("breakdown", by, allowed)
    grouped = t.select(_u=t[q.unit_column].cast("string"), ts=t.ts, message_id=t.message_id,
                       stage_index=t.stage_index, event=t.event, revenue=t.revenue.cast("float64"),
                       user_id=t.user_id, _p=p, _g=g, _sg=ibis.literal(""))
    return base, grouped


def _first(t: ir.Table, cond: ir.BooleanValue) -> ir.Table:
    """Rows of ``t`` that are each unit's first touch (by ts, message_id) matching ``cond``,
    per level and segment value."""
    f = t.filter(cond)
    rn = ibis.row_number().over(group_by=[f._lvl, f._u, f._sg], order_by=[f.ts, f.message_id])
    f = f.mutate(_rn=rn)
    return f.filter(f._rn == 0)


def _touch_measures(t: ir.Table, model: JourneyModel, events: Mapping[str, tuple[str, ...]],
                    cutoff: datetime | None) -> dict[_Key, dict[str, Any]]:
    phases = stage_phases(model)
    idx = {p: [i for i, k in enumerate(model.stage_keys) if p in phases[k]] for p in PHASES}
    keys = ["_lvl", "_p", "_g"]
    is_aw = t.stage_index.isin(idx["awareness"])
    rev = t.revenue > 0
    touch = t.group_by(keys).aggregate(
        reach=t._u.nunique(where=is_aw),
        engaged=t._u.nunique(where=t.stage_index.notnull() & ~is_aw),
        video_views=t.count(where=t.event.isin(events["video"])),
        sales=t.count(where=rev),
        revenue=t.revenue.sum(),
        revenue_touches=t.count(where=t.revenue.notnull()),
        support_requests=t.count(where=t.event.isin(events["support"])),
        referrals=t.count(where=t.event.isin(events["referral"])),
        reviews=t.count(where=t.event.isin(events["review"])),
        upsells=t.count(where=t.event.isin(events["upsell"])),
        identified=t.count(where=t.user_id.notnull()),
    )
    # per unit (level, segment value): lifetime facts
    ug = ["_lvl", "_u", "_sg"]
    per_unit = t.group_by(ug).aggregate(
        n_rev=t.count(where=rev), total_rev=t.revenue.sum(where=rev),
        upsold=t.count(where=t.event.isin(events["upsell"])), last_ts=t.ts.max(),
    )
    leads = _first(t, t.user_id.notnull())
    leads = leads.group_by(keys).aggregate(leads=leads._u.nunique())
    entered = _first(t, t.stage_index.isin(idx["decision"])).join(per_unit, ug)
    entered = entered.group_by(keys).aggregate(entered=entered.count(), entered_converted=entered.count(
        where=entered.n_rev > 0))
    cust = _first(t, rev).join(per_unit, ug)
    c = {
        "customers": cust.count(), "repeaters": cust.count(where=cust.n_rev >= 2),
        "upsellers": cust.count(where=cust.upsold > 0), "customer_revenue": cust.total_rev.sum(),
    }
    if cutoff is not None:
        before = ibis.literal(cutoff, type="timestamp('UTC')")
        c["churn_eligible"] = cust.count(where=cust.ts < before)
        c["churned"] = cust.count(where=cust.last_ts < before)
    customers = cust.group_by(keys).aggregate(**c)
    out: dict[_Key, dict[str, Any]] = {}
    for part in (touch, leads, entered, customers):
        for r in _collect(part):
            out.setdefault((int(r.pop("_lvl")), r.pop("_p"), r.pop("_g")), {}).update(r)
    return out


def _cost_measures(costs: ir.Table, q: KpiQuery) -> tuple[dict[_Key, dict[str, Any]], str | None]:
    """Cost sums per key, and the reason groups are missing (by that costs cannot split)."""
    c = costs
    imp, clk = c.impressions.notnull(), c.clicks.notnull()
    base = c.select(date=c.date, spend=c.spend.cast("float64"), impressions=c.impressions, clicks=c.clicks,
                    _imp=imp, _clk=clk)
    why: str | None = None
    grouped: ir.Table | None = None
    if q.by is not None or q.period is not None:
        col = COST_BREAKDOWNS.get(q.by) if q.by is not None else None
        if q.by is not None and col is None:
            why = f"costs cannot be broken down by '{q.by}' (only {', '.join(sorted(COST_BREAKDOWNS))})"
        else:
            g = c[col].cast("string") if col is not None else ibis.null("string")
            grouped = c.select(date=c.date, spend=c.spend.cast("float64"), impressions=c.impressions,
                               clicks=c.clicks, _imp=imp, _clk=clk, _p=_period(c.date, q.period), _g=g,
                               _sg=ibis.literal(""))
    t = _with_levels(base, grouped)
    agg = t.group_by(["_lvl", "_p", "_g"]).aggregate(
        cost_rows=t.count(), spend=t.spend.sum(),
        imp_rows=t.count(where=t._imp), impressions=t.impressions.sum(where=t._imp),
        spend_imp=t.spend.sum(where=t._imp),
        clk_rows=t.count(where=t._clk), clicks=t.clicks.sum(where=t._clk), spend_clk=t.spend.sum(where=t._clk),
        clicks_both=t.clicks.sum(where=t._imp & t._clk), impressions_both=t.impressions.sum(where=t._imp & t._clk),
    )
    return {(int(r.pop("_lvl")), r.pop("_p"), r.pop("_g")): r for r in _collect(agg)}, why


def _survey_measures(surveys: ir.Table, q: KpiQuery, segments: Mapping[str, ir.Table]
                     ) -> tuple[dict[_Key, dict[str, Any]], str | None]:
    s = surveys
    unit = s[q.unit_column].cast("string") if q.unit_column in s.columns else ibis.null("string")
    base = s.select(_u=unit, ts=s.ts, kind=s.kind, score=s.score.cast("float64"))
    why: str | None = None
    grouped: ir.Table | None = None
    if q.by is not None or q.period is not None:
        p = _period(s.ts, q.period)
        if q.by is None:
            grouped = base.mutate(_p=p, _g=ibis.null("string"), _sg=ibis.literal(""))
        elif q.by in segments:
            seg = _segment(segments, q.by, q.unit_column)
            j = base.mutate(_p=p).left_join(seg, "_u")
            grouped = j.select(*base.columns, "_p", _g=j._g, _sg=ibis.literal(""))
        elif q.by in SURVEY_BREAKDOWNS and q.by in s.columns:
            grouped = base.mutate(_p=p, _g=s[q.by].cast("string"), _sg=ibis.literal(""))
        else:
            why = f"survey answers cannot be broken down by '{q.by}'"
    t = _with_levels(base, grouped)
    kind = t.kind.lower()
    is_nps, is_csat, is_ces = kind == "nps", kind == "csat", kind == "ces"
    agg = t.group_by(["_lvl", "_p", "_g"]).aggregate(
        feedback=t.count(),
        nps_n=t.score.count(where=is_nps), nps=nps_expr(t.score, is_nps),
        csat_n=t.score.count(where=is_csat), csat=csat_expr(t.score, is_csat),
        ces_n=t.score.count(where=is_ces), ces=ces_expr(t.score, is_ces),
    )
    return {(int(r.pop("_lvl")), r.pop("_p"), r.pop("_g")): r for r in _collect(agg)}, why


def _ratio(num: Number | None, den: Number | None, what: str, scale: float = 1.0) -> tuple[Number | None, str | None]:
    if num is None or den is None or den == 0:
        return None, f"no {what}"
    return float(num) / float(den) * scale, None


def kpis(
    touches: ir.Table,
    *,
    model: JourneyModel,
    costs: ir.Table | None = None,
    surveys: ir.Table | None = None,
    query: KpiQuery | None = None,
    segments: Mapping[str, ir.Table] | None = None,
    events: Mapping[str, Sequence[str]] | None = None,
    **params: Any,
) -> KpiResult:
    """Every KPI of :data:`KPIS` per stage of ``model`` (see the module doc and ``docs/kpis.md``).

    ``touches`` are the touches staged by ``model`` (``ws.touches(model)``); ``costs`` the
    imported costs, ``surveys`` the answers with ``person_id``/``account_id`` (``ws.surveys()``),
    each None when not imported. ``query`` or ``params`` (:class:`KpiQuery` fields: ``unit``,
    ``by``, ``period``, ``churn_after``) choose the unit, breakdown and period; ``segments`` maps
    segment names (persona, cohort) to tables of ``person_id`` (or ``account_id``) and ``value``;
    ``events`` overrides the event names of :data:`EVENT_SETS`.
    """
    q = query if query is not None else KpiQuery(**params)
    segs = dict(segments or {})
    ev = {k: tuple(v) for k, v in EVENT_SETS.items()}
    for k, v in (events or {}).items():
        if k not in EVENT_SETS:
            raise UnknownNameError("event set", k, EVENT_SETS)
        ev[k] = tuple(v)

    as_of_row = _collect(touches.aggregate(as_of=touches.ts.max(), n=touches.count()))[0]
    as_of: datetime | None = as_of_row["as_of"]
    if as_of is not None and as_of.tzinfo is None:  # Spark hands back naive UTC times
        as_of = as_of.replace(tzinfo=UTC)
    cutoff = None if as_of is None else as_of - timedelta(seconds=q.churn_seconds)
    base, grouped = _touch_groups(touches, q, segs)
    tm = _touch_measures(_with_levels(base, grouped), model, ev, cutoff)

    cm: dict[_Key, dict[str, Any]] = {}
    cost_why: str | None = "no costs imported"
    cost_group_why: str | None = None
    if costs is not None:
        cm, cost_group_why = _cost_measures(costs, q)
        if cm.get((0, None, None), {}).get("cost_rows"):
            cost_why = None
    sm: dict[_Key, dict[str, Any]] = {}
    survey_why: str | None = "no surveys imported"
    survey_group_why: str | None = None
    if surveys is not None:
        sm, survey_group_why = _survey_measures(surveys, q, segs)
        if sm.get((0, None, None), {}).get("feedback"):
            survey_why = None

    total_t = tm.get((0, None, None), {})
    total_c = cm.get((0, None, None), {})
    counted = {"video": "video_views", "support": "support_requests", "referral": "referrals",
               "review": "reviews", "upsell": "upsells"}
    flags = _Flags(
        cost=cost_why, cost_group=cost_group_why,
        survey=survey_why, survey_group=survey_group_why,
        no_revenue=None if total_t.get("revenue_touches") else "no touch has revenue",
        no_identified=None if total_t.get("identified") else "no identified touch (user_id)",
        no_impressions=None if total_c.get("imp_rows") else "the costs report no impressions",
        no_clicks=None if total_c.get("clk_rows") else "the costs report no clicks",
        events={k: None if total_t.get(m) else f"no {'/'.join(ev[k]) or k} touches" for k, m in counted.items()},
    )

    keys = sorted(set(tm) | set(cm) | set(sm), key=lambda k: (k[0], k[1] or date.min, k[2] or ""))
    computed: dict[_Key, dict[str, KpiValue]] = {}
    for key in keys:
        level0 = key[0] == 0
        computed[key] = _compute(tm.get(key, {}), cm.get(key, {}), sm.get(key, {}), flags, level0)
    by_stage = kpi_stages(model)
    overall = computed.get((0, None, None)) or _compute({}, {}, {}, flags, True)
    stages = []
    for st in model.stages:
        ks = by_stage[st.key]
        groups = tuple(
            KpiGroup(period=k[1], value=(k[2] if k[2] is not None else (NONE_LABEL if q.by else None)),
                     kpis=tuple(computed[k][x.key] for x in ks))
            for k in keys if k[0] == 1
        ) if ks else ()
        own = tuple(p for p in PHASES if any(x.phase == p for x in ks))
        stages.append(StageKpis(st.key, st.label, own, tuple(overall[x.key] for x in ks), groups))
    return KpiResult(model=model.key, query=q, stages=tuple(stages), as_of=as_of)


@dataclass
class _Flags:
    """Why KPIs are missing for the whole result (None: the input is there)."""

    cost: str | None
    cost_group: str | None
    survey: str | None
    survey_group: str | None
    no_revenue: str | None
    no_identified: str | None
    no_impressions: str | None
    no_clicks: str | None
    events: dict[str, str | None]


def _compute(t: Mapping[str, Any], c: Mapping[str, Any], s: Mapping[str, Any], f: _Flags,
             level0: bool) -> dict[str, KpiValue]:
    """All KPI values of one key from its measures."""
    out: dict[str, KpiValue] = {}

    def cnt(m: Mapping[str, Any], k: str) -> int:
        return int(m.get(k) or 0)

    cost_why = f.cost or (None if level0 else (f.cost_group or (None if c.get("cost_rows") else "no costs for this group")))
    survey_why = f.survey or (None if level0 else f.survey_group)

    def put(key: str, value: Number | None, why: str | None = None) -> None:
        out[key] = KpiValue(key, None if why else value, why if why else (None if value is not None else "no data"))

    def put_ratio(key: str, num: Number | None, den: Number | None, what: str, why: str | None = None,
                  scale: float = 1.0) -> None:
        if why:
            out[key] = KpiValue(key, None, why)
        else:
            v, w = _ratio(num, den, what, scale)
            out[key] = KpiValue(key, v, w)

    no_imp = f.no_impressions or (None if cnt(c, "imp_rows") or cost_why else "no cost rows report impressions")
    no_clk = f.no_clicks or (None if cnt(c, "clk_rows") or cost_why else "no cost rows report clicks")
    spend = float(c.get("spend") or 0.0)
    # awareness
    put("spend", round(spend, 6), cost_why)
    put("impressions", cnt(c, "impressions"), cost_why or no_imp)
    put("reach", cnt(t, "reach"))
    put("video_views", cnt(t, "video_views"), f.events["video"])
    put_ratio("cpm", c.get("spend_imp"), c.get("impressions"), "impressions", cost_why or no_imp, 1000.0)
    # consideration
    put("clicks", cnt(c, "clicks"), cost_why or no_clk)
    put_ratio("ctr", c.get("clicks_both"), c.get("impressions_both"), "impressions",
              cost_why or no_imp or no_clk)
    put_ratio("engagement_rate", cnt(t, "engaged"), cnt(t, "reach"), "units reached")
    put_ratio("cpc", c.get("spend_clk"), c.get("clicks"), "clicks", cost_why or no_clk)
    # decision
    put("leads", cnt(t, "leads"), f.no_identified)
    put("conversions", cnt(t, "customers"), f.no_revenue)
    put_ratio("conversion_rate", cnt(t, "entered_converted"), cnt(t, "entered"), "units entering the decision stage",
              f.no_revenue)
    put("sales", cnt(t, "sales"), f.no_revenue)
    put("revenue", float(t.get("revenue") or 0.0), f.no_revenue)
    put_ratio("cpl", spend, cnt(t, "leads"), "leads", cost_why or f.no_identified)
    put_ratio("cost_per_conversion", spend, cnt(t, "customers"), "conversions", cost_why or f.no_revenue)
    put_ratio("roas", float(t.get("revenue") or 0.0), spend, "spend", cost_why or f.no_revenue)
    # retention
    put_ratio("repurchase_rate", cnt(t, "repeaters"), cnt(t, "customers"), "customers", f.no_revenue)
    put_ratio("upsell_rate", cnt(t, "upsellers"), cnt(t, "customers"), "customers", f.no_revenue or f.events["upsell"])
    put_ratio("churn_rate", cnt(t, "churned"), cnt(t, "churn_eligible"), "customers converted before churn_after",
              f.no_revenue)
    put_ratio("clv", float(t.get("customer_revenue") or 0.0), cnt(t, "customers"), "customers", f.no_revenue)
    for k, n, label in (("nps", "nps_n", "NPS"), ("csat", "csat_n", "CSAT"), ("ces", "ces_n", "CES")):
        why = survey_why or (None if cnt(s, n) else f"no {label} answers")
        put(k, s.get(k), why)
    put("feedback_count", cnt(s, "feedback"), survey_why)
    put("support_requests", cnt(t, "support_requests"), f.events["support"])
    # advocacy
    put("referrals", cnt(t, "referrals"), f.events["referral"])
    put("reviews", cnt(t, "reviews"), f.events["review"])
    assert set(out) == set(REGISTRY), set(REGISTRY) ^ set(out)
    return out


# ============================================================================ docs
DOCS_BEGIN = "<!-- kpi-registry:begin (generated by journeylens.analyses.kpis.kpi_markdown) -->"
DOCS_END = "<!-- kpi-registry:end -->"


def kpi_markdown() -> str:
    """The KPI registry as Markdown (the generated block of ``docs/kpis.md``)."""
    lines = [DOCS_BEGIN, "", "| key | KPI | phase | unit | formula | inputs |", "|---|---|---|---|---|---|"]
    for k in KPIS:
        lines.append(f"| `{k.key}` | {k.label} | {k.phase} | {k.unit} | {k.formula} | {', '.join(k.inputs)} |")
    lines += ["", "Event names read by the event-based KPIs (override with `events=`):", ""]
    for name, evs in EVENT_SETS.items():
        lines.append(f"- `{name}`: {', '.join(f'`{e}`' for e in evs)}")
    lines += ["", "Stage keys and the KPI phase(s) they stand for:", ""]
    by_phase: dict[tuple[str, ...], list[str]] = {}
    for key, ph in STAGE_PHASES.items():
        by_phase.setdefault(ph, []).append(key)
    for ph, ks in by_phase.items():
        lines.append(f"- {' + '.join(ph)}: {', '.join(f'`{k}`' for k in ks)}")
    lines += ["", f"Default `churn_after`: `{DEFAULT_CHURN_AFTER}` "
              f"({format_duration(parse_duration(DEFAULT_CHURN_AFTER))}).", "", DOCS_END]
    return "\n".join(lines) + "\n"


def registry_rows() -> list[dict[str, Any]]:
    """The registry as plain rows (CLI ``--list``, REST, dashboard)."""
    return [{"key": k.key, "label": k.label, "phase": k.phase, "unit": k.unit, "formula": k.formula,
             "inputs": list(k.inputs)} for k in KPIS]


__all__ = [
    "KPIS", "PHASES", "REGISTRY", "STAGE_PHASES", "Kpi", "KpiGroup", "KpiQuery", "KpiResult", "KpiValue",
    "StageKpis", "ces_expr", "csat_expr", "kpi_markdown", "kpi_stages", "kpis", "nps_expr", "registry_rows",
    "stage_phases",
]
