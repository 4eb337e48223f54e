"""Retention and lifecycle: cohorts by first event, return periods, repurchase, churn, lifecycle states.

Four analyses share one time model and one request-model pattern (the long form with worked
examples is ``docs/retention.md``):

* **Periods** are calendar days, weeks (Monday to Sunday) or months in UTC. Every timestamp maps to
  an integer *period index* (:func:`period_index`: days since 1970-01-01; Monday-weeks since the
  week of 1969-12-29; months since January 1970), so offsets between periods are differences of
  integers and come out the same on every backend.
* :func:`retention` — a unit's *cohort* is the ``cohort_period`` of its first touch matching
  ``start_event`` (any touch by default). It is *retained in period k* when it has a touch
  matching ``return_event`` (any touch by default) at or after that first start touch whose
  ``period`` index is the first start touch's index plus ``k`` (``bounded``), or plus ``k`` or
  more (``unbounded``). With ``period="day"`` this is N-day retention in calendar days (UTC)
  counted from the unit's own first start touch, not in 24-hour steps.
* :func:`repurchase` — purchasers have at least one touch matching ``event``; repurchasers have
  at least two (within ``window`` of the first, when given).
* :func:`churn` — a unit is churned at time ``D`` when it has touched before ``D`` and its last
  touch at or before ``D`` is more than ``inactive_for`` before ``D``. Per period: units active at
  the period start, and how many of them churned during the period.
* :func:`lifecycle` — per period, the active units split into new, returning and resurrecting;
  units active in the previous period but not this one are dormant (a negative count).

Everything is one Ibis query per analysis (plus one to find ``as_of`` when not given) made of
filters, joins, group-bys and window functions; Python only reshapes the aggregated rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from journeylens.analyses._time import format_duration, parse_duration, parse_instant, utc_instant
from journeylens.analyses.funnel import (
    NONE_LABEL,
    OTHER_LABEL,
    PROPERTY_PREFIX,
    Step,
    check_step_fields,
    step_predicate,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.functions import json_get

UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
PERIODS = ("day", "week", "month")
MODES = ("bounded", "unbounded")
BREAKDOWN_TOUCHES = ("first_touch", "start")
LIFECYCLE_STATES = ("new", "returning", "resurrecting", "dormant")
MAX_PERIODS = 400
"""At most this many return periods in a retention matrix."""

EPOCH = date(1970, 1, 1)
EPOCH_MONDAY = date(1969, 12, 29)
"""Monday of the week that holds 1970-01-01 (a Thursday): week index 0."""

# ============================================================================ periods
def period_index(ts: ir.TimestampValue, period: str) -> ir.IntegerValue:
    """The integer index of the UTC calendar period holding ``ts`` (an Ibis expression).

    day: days since 1970-01-01; week: Monday-to-Sunday weeks since the week starting 1969-12-29;
    month: months since January 1970. Built from the UTC date and year/month, which DuckDB and
    Spark compute alike (both stores run their sessions in UTC).
    """
    if period == "month":
        return ((ts.year() - 1970) * 12 + ts.month() - 1).cast("int64")
    days = ts.date().epoch_days().cast("int64")
    if period == "day":
        return days
    return ((days + 3) / 7).floor().cast("int64")


def index_of(instant: datetime | date, period: str) -> int:
    """:func:`period_index` of a Python date or datetime (naive datetimes are UTC)."""
    if isinstance(instant, datetime):
        instant = (instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)).date()
    if period == "month":
        return (instant.year - 1970) * 12 + instant.month - 1
    days = (instant - EPOCH).days
    return days if period == "day" else (days + 3) // 7


def period_start(index: int, period: str) -> date:
    """First day of the period with ``index`` (the inverse of :func:`index_of`)."""
    if period == "day":
        return EPOCH + timedelta(days=index)
    if period == "week":
        return EPOCH_MONDAY + timedelta(weeks=index)
    year, month0 = divmod(index, 12)
    return date(1970 + year, month0 + 1, 1)


# ============================================================================ request models
def _as_step(value: Any) -> Any:
    if value is None or isinstance(value, Step):
        return value
    if isinstance(value, str):
        return Step.parse(value) if value.strip() else None
    if isinstance(value, Mapping) and "filter" in value:
        return Step.parse(str(value["filter"]), value.get("name"))
    return value


def _pydantic_message(kind: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "query"
        parts.append(f"{where}: {e['msg']}")
    return f"invalid {kind} query: " + "; ".join(parts)


class _Query(BaseModel):
    """Parameters every retention-family analysis shares.

    ``unit`` is ``person`` or ``account``; ``breakdown`` a column of the touches or
    ``properties.<key>``, read on the unit's first touch (values beyond the ``breakdown_limit``
    most frequent become ``(other)``, missing values ``(none)``); ``date_from``/``date_to``
    (UTC dates, inclusive) pick the periods that contain them and those between; ``as_of``
    (default: the latest touch) is the end of the data — touches after it are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = "retention"

    period: str = "week"
    unit: str = "person"
    breakdown: str | None = None
    breakdown_limit: int = 25
    date_from: date | None = None
    date_to: date | None = None
    as_of: datetime | date | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidParameterError(_pydantic_message(self.kind, exc)) from None

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> Any:
        return parse_instant(v)

    @model_validator(mode="after")
    def _validate(self) -> _Query:
        for rule in self.rules():
            rule(self)
        return self

    def rules(self) -> Sequence[Callable[[Any], None]]:
        return COMMON_RULES

    # derived values -------------------------------------------------------------------
    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    @property
    def as_of_time(self) -> datetime | None:
        """``as_of`` as an aware UTC datetime (a date means the end of that day)."""
        return utc_instant(self.as_of)

    def steps(self) -> tuple[Step, ...]:
        """The step filters the query reads (for column checks)."""
        return ()

    def common_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "period": self.period, "breakdown": self.breakdown,
                "date_from": self.date_from, "date_to": self.date_to}


def _step_name(step: Step | None) -> str | None:
    return None if step is None else step.name


class RetentionQuery(_Query):
    """Cohort retention. ``start_event``/``return_event`` are step filters as in funnels
    (``purchase``, ``channel=email``, ``stage=decision``, ``event=purchase&properties.total>=50``);
    None means any touch. ``periods`` return periods 0..periods-1 are reported; ``cohort_period``
    (default: ``period``) groups units into cohorts; ``breakdown_touch`` reads the breakdown on the
    unit's ``first_touch`` (default) or on its first ``start`` touch."""

    kind: ClassVar[str] = "retention"

    start_event: Step | None = None
    return_event: Step | None = None
    periods: int = 12
    mode: str = "bounded"
    cohort_period: str | None = None
    breakdown_touch: str = "first_touch"

    @field_validator("start_event", "return_event", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return _as_step(v)

    def rules(self) -> Sequence[Callable[[Any], None]]:
        return (*COMMON_RULES, _rule_mode, _rule_periods, _rule_cohort_period, _rule_breakdown_touch)

    @property
    def cohort_grain(self) -> str:
        return self.cohort_period or self.period

    def steps(self) -> tuple[Step, ...]:
        return tuple(s for s in (self.start_event, self.return_event) if s is not None)


class LifecycleQuery(_Query):
    """Lifecycle states per period; ``event`` (a step filter, None = any touch) defines activity."""

    kind: ClassVar[str] = "lifecycle"

    event: Step | None = None

    @field_validator("event", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return _as_step(v)

    def steps(self) -> tuple[Step, ...]:
        return () if self.event is None else (self.event,)


class ChurnQuery(_Query):
    """Churn after ``inactive_for`` (a duration: ``30d``, ``8w``, ``12h``) without a touch matching
    ``event`` (None = any touch); rates per ``period`` (default month)."""

    kind: ClassVar[str] = "churn"

    period: str = "month"
    event: Step | None = None
    inactive_for: str | int = "30d"

    @field_validator("event", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return _as_step(v)

    def rules(self) -> Sequence[Callable[[Any], None]]:
        return (*COMMON_RULES, _rule_inactive_for)

    @property
    def inactive_seconds(self) -> int:
        return parse_duration(self.inactive_for, name="inactive_for")

    def steps(self) -> tuple[Step, ...]:
        return () if self.event is None else (self.event,)


class RepurchaseQuery(_Query):
    """Repurchase rate: purchasers (a touch matching ``event``) with a second one (within
    ``window`` of the first when given). ``period`` (None = one overall figure) groups purchasers
    by the period of their first purchase."""

    kind: ClassVar[str] = "repurchase"

    event: Step = Step.parse("purchase")
    window: str | int | None = None
    period: str | None = None  # type: ignore[assignment]

    @field_validator("event", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        step = _as_step(v)
        if step is None:
            raise InvalidParameterError("repurchase needs a purchase event", hint="e.g. purchase")
        return step

    def rules(self) -> Sequence[Callable[[Any], None]]:
        return (*COMMON_RULES, _rule_window)

    @property
    def window_seconds(self) -> int | None:
        return None if self.window is None else parse_duration(self.window, name="window")

    def steps(self) -> tuple[Step, ...]:
        return (self.event,)


# ---------------------------------------------------------------- validation rules
def _rule_unit(q: _Query) -> None:
    if q.unit not in UNITS:
        raise UnknownNameError("unit", q.unit, UNITS)


def _rule_period(q: _Query) -> None:
    if q.period is None and isinstance(q, RepurchaseQuery):
        return
    if q.period not in PERIODS:
        raise UnknownNameError("period", str(q.period), PERIODS)


def _rule_dates(q: _Query) -> None:
    if q.date_from is not None and q.date_to is not None and q.date_from > q.date_to:
        raise InvalidParameterError(f"date_from {q.date_from} is after date_to {q.date_to}")


def _rule_breakdown(q: _Query) -> None:
    if q.breakdown is not None and not q.breakdown.strip():
        raise InvalidParameterError("breakdown is empty")
    if q.breakdown_limit < 1:
        raise InvalidParameterError(f"breakdown_limit must be at least 1, got {q.breakdown_limit}")


def _rule_mode(q: RetentionQuery) -> None:
    if q.mode not in MODES:
        raise UnknownNameError("retention mode", q.mode, MODES)


def _rule_periods(q: RetentionQuery) -> None:
    if not 1 <= q.periods <= MAX_PERIODS:
        raise InvalidParameterError(f"periods must be 1 to {MAX_PERIODS}, got {q.periods}",
                                    hint="periods counts the return periods shown: 0 .. periods-1")


def _rule_cohort_period(q: RetentionQuery) -> None:
    if q.cohort_period is not None and q.cohort_period not in PERIODS:
        raise UnknownNameError("cohort period", q.cohort_period, PERIODS)


def _rule_breakdown_touch(q: RetentionQuery) -> None:
    if q.breakdown_touch not in BREAKDOWN_TOUCHES:
        raise UnknownNameError("breakdown touch", q.breakdown_touch, BREAKDOWN_TOUCHES)


def _rule_inactive_for(q: ChurnQuery) -> None:
    q.inactive_seconds  # noqa: B018 - parses, raising InvalidParameterError


def _rule_window(q: RepurchaseQuery) -> None:
    q.window_seconds  # noqa: B018 - parses, raising InvalidParameterError


COMMON_RULES: tuple[Callable[[Any], None], ...] = (_rule_unit, _rule_period, _rule_dates, _rule_breakdown)
"""Applied in order when a query is built; each query type appends its own rules."""


# ============================================================================ results
def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _rate(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass(frozen=True)
class RetentionCell:
    period: int
    """Offset ``k`` from the cohort period (0 = the period of the first start touch)."""
    retained: int
    """Units retained in period ``k`` (bounded) or in ``k`` or later (unbounded)."""
    eligible: int
    """Units of the cohort whose period ``k`` has begun by ``as_of``; the rate's denominator."""
    rate: float | None
    """``retained / eligible``; None while no unit of the cohort has reached period ``k``."""
    complete: bool
    """Period ``k`` has ended before the period holding ``as_of`` for every unit of the cohort."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class RetentionCohort:
    cohort: date
    """First day of the cohort period (UTC; weeks start on Monday)."""
    size: int
    cells: tuple[RetentionCell, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cohort": self.cohort.isoformat(), "size": self.size, "cells": [c.to_dict() for c in self.cells]}


@dataclass(frozen=True)
class CurvePoint:
    period: int
    retained: int
    eligible: int
    rate: float | None
    """Retained over eligible units summed over all cohorts (a cohort-size weighted average)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class BreakdownRetention:
    value: str
    size: int
    cohorts: tuple[RetentionCohort, ...]
    curve: tuple[CurvePoint, ...]


@dataclass(frozen=True)
class RetentionResult:
    """Cohort × period matrix (counts and rates), cohort sizes and the averaged curve."""

    query: RetentionQuery
    as_of: datetime | None
    """End of the data used (None when there were no touches)."""
    cohorts: tuple[RetentionCohort, ...]
    curve: tuple[CurvePoint, ...]
    breakdown: tuple[BreakdownRetention, ...] = ()

    @property
    def size(self) -> int:
        """Units in all cohorts."""
        return sum(c.size for c in self.cohorts)

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out: dict[str, Any] = {
            **q.common_dict(),
            "cohort_period": q.cohort_grain,
            "mode": q.mode,
            "periods": q.periods,
            "start_event": _step_name(q.start_event),
            "return_event": _step_name(q.return_event),
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "size": self.size,
            "cohorts": [c.to_dict() for c in self.cohorts],
            "curve": [p.to_dict() for p in self.curve],
        }
        if q.breakdown is not None:
            out["breakdown"] = {
                "by": q.breakdown,
                "touch": q.breakdown_touch,
                "values": [{"value": b.value, "size": b.size, "cohorts": [c.to_dict() for c in b.cohorts],
                            "curve": [p.to_dict() for p in b.curve]} for b in self.breakdown],
            }
        return out

    def _groups(self) -> list[tuple[str | None, tuple[RetentionCohort, ...], tuple[CurvePoint, ...]]]:
        if self.query.breakdown is None:
            return [(None, self.cohorts, self.curve)]
        return [(b.value, b.cohorts, b.curve) for b in self.breakdown]

    def to_pandas(self) -> pd.DataFrame:
        """Tidy rows: one per (breakdown value,) cohort and period with counts and rate."""
        rows: list[dict[str, Any]] = []
        cols = ["cohort", "size", "period", "retained", "eligible", "rate", "complete"]
        for value, cohorts, _ in self._groups():
            for c in cohorts:
                for cell in c.cells:
                    row = {"cohort": c.cohort, "size": c.size, **cell.to_dict()}
                    rows.append({"breakdown": value, **row} if self.query.breakdown is not None else row)
        if self.query.breakdown is not None:
            cols = ["breakdown", *cols]
        return pd.DataFrame(rows, columns=cols)

    def curve_pandas(self) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        for value, _, curve in self._groups():
            for p in curve:
                rows.append({"breakdown": value, **p.to_dict()} if self.query.breakdown is not None else p.to_dict())
        return pd.DataFrame(rows)

    def matrix(self, value: Literal["rate", "retained", "eligible"] = "rate") -> pd.DataFrame:
        """Wide cohort × period table of ``value`` (overall cohorts), with ``size``; periods not
        yet reached are empty (NaN)."""
        rows = []
        for c in self.cohorts:
            row: dict[Any, Any] = {"cohort": c.cohort, "size": c.size}
            for cell in c.cells:
                v = getattr(cell, value)
                row[cell.period] = None if cell.eligible == 0 else v
            rows.append(row)
        return pd.DataFrame(rows, columns=["cohort", "size", *range(self.query.periods)])

    def figure(self) -> Any:
        """Heatmap of the cohort × period rates above the averaged retention curve(s)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        q = self.query
        fig = make_subplots(rows=2, cols=1, row_heights=[0.6, 0.4], vertical_spacing=0.12,
                            subplot_titles=("Cohorts", "Average retention"))
        m = self.matrix("rate")
        z = [[None if pd.isna(v) else float(v) for v in row] for row in m[list(range(q.periods))].to_numpy()]
        labels = [f"{c.cohort.isoformat()} ({c.size})" for c in self.cohorts]
        fig.add_trace(go.Heatmap(
            z=z, x=[f"{q.period} {k}" for k in range(q.periods)], y=labels, colorscale="Blues", zmin=0, zmax=1,
            text=[["" if v is None else f"{v:.0%}" for v in row] for row in z], texttemplate="%{text}",
            hovertemplate="cohort %{y}, %{x}: %{z:.1%}<extra></extra>", showscale=False,
        ), row=1, col=1)
        fig.update_yaxes(autorange="reversed", row=1, col=1)
        curves = [("all", self.curve)] + [(b.value, b.curve) for b in self.breakdown]
        for name, curve in curves:
            fig.add_trace(go.Scatter(x=[p.period for p in curve], y=[p.rate for p in curve], mode="lines+markers",
                                     name=name), row=2, col=1)
        fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=2, col=1)
        fig.update_xaxes(title_text=f"{q.period}s after the first start touch", row=2, col=1)
        title = f"Retention ({q.mode}, {q.period}s) — {q.unit}s"
        if q.breakdown is not None:
            title += f" by {q.breakdown}"
        fig.update_layout(title=title, height=720)
        return fig


@dataclass(frozen=True)
class LifecycleRow:
    period: date
    new: int
    """Units whose first active touch is in this period."""
    returning: int
    """Active in this period and the previous one."""
    resurrecting: int
    """Active in this period, not in the previous one, but in an earlier one."""
    dormant: int
    """Minus the units active in the previous period but not in this one (≤ 0)."""

    @property
    def active(self) -> int:
        return self.new + self.returning + self.resurrecting

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period.isoformat(), "new": self.new, "returning": self.returning,
                "resurrecting": self.resurrecting, "dormant": self.dormant, "active": self.active}


@dataclass(frozen=True)
class BreakdownLifecycle:
    value: str
    rows: tuple[LifecycleRow, ...]


@dataclass(frozen=True)
class LifecycleResult:
    query: LifecycleQuery
    as_of: datetime | None
    rows: tuple[LifecycleRow, ...]
    breakdown: tuple[BreakdownLifecycle, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out: dict[str, Any] = {**q.common_dict(), "event": _step_name(q.event),
                               "as_of": None if self.as_of is None else self.as_of.isoformat(),
                               "rows": [r.to_dict() for r in self.rows]}
        if q.breakdown is not None:
            out["breakdown"] = {"by": q.breakdown, "values": [
                {"value": b.value, "rows": [r.to_dict() for r in b.rows]} for b in self.breakdown]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        cols = ["period", "new", "returning", "resurrecting", "dormant", "active"]
        if self.query.breakdown is None:
            return pd.DataFrame([{**r.to_dict(), "period": r.period} for r in self.rows], columns=cols)
        rows = [{"breakdown": b.value, **r.to_dict(), "period": r.period} for b in self.breakdown for r in b.rows]
        return pd.DataFrame(rows, columns=["breakdown", *cols])

    def figure(self) -> Any:
        """Stacked bars per period: new, returning, resurrecting above zero, dormant below."""
        import plotly.graph_objects as go

        colours = {"new": "#2ca02c", "returning": "#1f77b4", "resurrecting": "#9467bd", "dormant": "#d62728"}
        x = [r.period for r in self.rows]
        fig = go.Figure([go.Bar(name=s, x=x, y=[getattr(r, s) for r in self.rows], marker_color=colours[s])
                         for s in LIFECYCLE_STATES])
        q = self.query
        fig.update_layout(barmode="relative", title=f"Lifecycle per {q.period} — {q.unit}s",
                          yaxis_title=f"{q.unit}s")
        return fig


@dataclass(frozen=True)
class ChurnRow:
    period: date
    active_at_start: int
    """Units with a touch before the period start, the last one at most ``inactive_for`` before it."""
    churned: int
    """Of those, units that became churned during the period (on or before ``as_of``)."""

    @property
    def churn_rate(self) -> float | None:
        return _rate(self.churned, self.active_at_start)

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period.isoformat(), "active_at_start": self.active_at_start,
                "churned": self.churned, "churn_rate": self.churn_rate}


@dataclass(frozen=True)
class BreakdownChurn:
    value: str
    active: int
    churned: int
    rows: tuple[ChurnRow, ...]


Status = Literal["active", "churned"]


@dataclass(frozen=True)
class ChurnResult:
    query: ChurnQuery
    as_of: datetime | None
    active: int
    """Units active at ``as_of``: last touch at most ``inactive_for`` before it."""
    churned: int
    """Units churned at ``as_of``: last touch more than ``inactive_for`` before it."""
    rows: tuple[ChurnRow, ...]
    breakdown: tuple[BreakdownChurn, ...] = ()
    units: ir.Table | None = field(default=None, repr=False, compare=False)
    """One row per unit: ``unit``, ``last_ts``, ``status`` (active|churned at ``as_of``)."""

    @property
    def churn_rate(self) -> float | None:
        """Share of all units with a touch that are churned at ``as_of``."""
        return _rate(self.churned, self.active + self.churned)

    def people(self, status: Status = "churned") -> list[str]:
        """Ids of the units that are ``churned`` (or ``active``) at ``as_of``, sorted."""
        if status not in ("active", "churned"):
            raise UnknownNameError("status", str(status), ("active", "churned"))
        if self.units is None:
            return []
        u = self.units
        ids = u.filter(u.status == status).select("unit").to_pyarrow().column(0).to_pylist()
        return sorted(str(v) for v in ids)

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out: dict[str, Any] = {
            **q.common_dict(), "event": _step_name(q.event), "inactive_for_seconds": q.inactive_seconds,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "active": self.active, "churned": self.churned, "churn_rate": self.churn_rate,
            "rows": [r.to_dict() for r in self.rows],
        }
        if q.breakdown is not None:
            out["breakdown"] = {"by": q.breakdown, "values": [
                {"value": b.value, "active": b.active, "churned": b.churned, "rows": [r.to_dict() for r in b.rows]}
                for b in self.breakdown]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        cols = ["period", "active_at_start", "churned", "churn_rate"]
        if self.query.breakdown is None:
            return pd.DataFrame([{**r.to_dict(), "period": r.period} for r in self.rows], columns=cols)
        rows = [{"breakdown": b.value, **r.to_dict(), "period": r.period} for b in self.breakdown for r in b.rows]
        return pd.DataFrame(rows, columns=["breakdown", *cols])

    def figure(self) -> Any:
        """Bars of units churned per period with the churn rate as a line (right axis)."""
        import plotly.graph_objects as go

        q = self.query
        x = [r.period for r in self.rows]
        fig = go.Figure([
            go.Bar(name="active at start", x=x, y=[r.active_at_start for r in self.rows], marker_color="#c7d7ea"),
            go.Bar(name="churned", x=x, y=[r.churned for r in self.rows], marker_color="#d62728"),
            go.Scatter(name="churn rate", x=x, y=[r.churn_rate for r in self.rows], yaxis="y2", mode="lines+markers"),
        ])
        fig.update_layout(
            title=f"Churn per {q.period} (inactive for {format_duration(q.inactive_seconds)}) — {q.unit}s",
            barmode="overlay", yaxis_title=f"{q.unit}s",
            yaxis2={"overlaying": "y", "side": "right", "tickformat": ".0%", "rangemode": "tozero"},
        )
        return fig


@dataclass(frozen=True)
class RepurchaseRow:
    period: date | None
    """First day of the first-purchase period (None for the overall figure)."""
    purchasers: int
    repurchasers: int
    purchases: int
    """All purchase touches of these purchasers (up to ``as_of``, not only inside the window)."""

    @property
    def rate(self) -> float | None:
        return _rate(self.repurchasers, self.purchasers)

    def to_dict(self) -> dict[str, Any]:
        return {"period": _iso(self.period), "purchasers": self.purchasers, "repurchasers": self.repurchasers,
                "purchases": self.purchases, "rate": self.rate}


@dataclass(frozen=True)
class BreakdownRepurchase:
    value: str
    total: RepurchaseRow
    rows: tuple[RepurchaseRow, ...]


@dataclass(frozen=True)
class RepurchaseResult:
    query: RepurchaseQuery
    as_of: datetime | None
    total: RepurchaseRow
    rows: tuple[RepurchaseRow, ...] = ()
    """Per first-purchase period (only with ``period``)."""
    breakdown: tuple[BreakdownRepurchase, ...] = ()

    @property
    def rate(self) -> float | None:
        return self.total.rate

    @property
    def purchasers(self) -> int:
        return self.total.purchasers

    @property
    def repurchasers(self) -> int:
        return self.total.repurchasers

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out: dict[str, Any] = {
            **q.common_dict(), "event": q.event.name, "window_seconds": q.window_seconds,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            **{k: v for k, v in self.total.to_dict().items() if k != "period"},
            "rows": [r.to_dict() for r in self.rows],
        }
        if q.breakdown is not None:
            out["breakdown"] = {"by": q.breakdown, "values": [
                {"value": b.value, **{k: v for k, v in b.total.to_dict().items() if k != "period"},
                 "rows": [r.to_dict() for r in b.rows]} for b in self.breakdown]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        """The overall row (period empty) then one row per period; per breakdown value when broken down."""
        cols = ["period", "purchasers", "repurchasers", "purchases", "rate"]
        groups: list[tuple[str | None, RepurchaseRow, tuple[RepurchaseRow, ...]]] = [(None, self.total, self.rows)]
        if self.query.breakdown is not None:
            groups = [(b.value, b.total, b.rows) for b in self.breakdown]
            cols = ["breakdown", *cols]
        rows = []
        for value, total, per in groups:
            for r in (total, *per):
                d = {**r.to_dict(), "period": r.period}
                rows.append({"breakdown": value, **d} if self.query.breakdown is not None else d)
        return pd.DataFrame(rows, columns=cols)

    def figure(self) -> Any:
        """Repurchase rate per first-purchase period (or per breakdown value)."""
        import plotly.graph_objects as go

        q = self.query
        if self.rows:
            fig = go.Figure(go.Bar(x=[r.period for r in self.rows], y=[r.rate for r in self.rows],
                                   customdata=[r.purchasers for r in self.rows],
                                   hovertemplate="%{x}: %{y:.1%} of %{customdata} purchasers<extra></extra>"))
        else:
            groups = [(b.value, b.total) for b in self.breakdown] or [("all", self.total)]
            fig = go.Figure(go.Bar(x=[g for g, _ in groups], y=[t.rate for _, t in groups],
                                   customdata=[t.purchasers for _, t in groups],
                                   hovertemplate="%{x}: %{y:.1%} of %{customdata} purchasers<extra></extra>"))
        window = "" if q.window is None else f" within {format_duration(q.window_seconds)}"
        fig.update_layout(title=f"Repurchase rate ({q.event.name}{window}) — {q.unit}s",
                          yaxis={"tickformat": ".0%", "rangemode": "tozero"})
        return fig


# ============================================================================ computation
_U = "unit"
_TS = "ts"
_B = "breakdown"


@dataclass(frozen=True)
class _Plan:
    query: _Query
    base: ir.Table
    """Touches of units (``unit`` added, NULL units dropped) at or before ``as_of``."""
    as_of: datetime
    segments: Mapping[str, ir.Table] = field(default_factory=dict)
    """Segment tables (unit column + ``value``) usable as breakdowns."""

    @property
    def last(self) -> int:
        """Period index holding ``as_of`` (in ``query.period``)."""
        return index_of(self.as_of, str(self.query.period))

    def rows(self, step: Step | None) -> ir.Table:
        return self.base if step is None else self.base.filter(step_predicate(self.base, step))

    def span(self, period: str) -> tuple[int | None, int | None]:
        """Period indexes picked by ``date_from``/``date_to`` (None = open)."""
        q = self.query
        lo = None if q.date_from is None else index_of(q.date_from, period)
        hi = None if q.date_to is None else index_of(q.date_to, period)
        return lo, hi


def _utc(value: Any) -> datetime:
    ts = pd.Timestamp(value).to_pydatetime()
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _readable(touches: ir.Table, name: str) -> bool:
    """A breakdown name is a column (not ``properties`` itself) or ``properties.<key>``."""
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX):
        return "properties" in touches.columns
    return name in touches.columns and name not in (_U, "properties")


def _plan(touches: ir.Table, q: _Query, segments: Mapping[str, ir.Table] | None = None) -> _Plan | None:
    """Bind ``q`` to ``touches``; None when there is no touch at all (and no ``as_of``)."""
    segments = dict(segments or {})
    segment = q.breakdown is not None and q.breakdown in segments
    col = q.unit_column
    for needed in (col, _TS):
        if needed not in touches.columns:
            raise UnknownNameError("column", needed, touches.columns)
    check_step_fields(touches, q.steps())
    # only the columns the query reads: smaller plans compile and run faster
    names = {col, _TS}
    for f in [*(f for s in q.steps() for f in s.fields), *([q.breakdown] if q.breakdown and not segment else [])]:
        names.add("properties" if f.startswith(PROPERTY_PREFIX) and "properties" in touches.columns else f)
    if q.breakdown is not None and not segment and not _readable(touches, q.breakdown):
        allowed = [c for c in touches.columns if c not in (_U, "properties")] + [*segments, "properties.<key>"]
        raise UnknownNameError("breakdown", q.breakdown, allowed)
    touches = touches.select(*[c for c in touches.columns if c in names])
    base = touches.filter(touches[col].notnull()).mutate(**{_U: touches[col].cast("string")})
    as_of = q.as_of_time
    if as_of is None:  # the end of the data: the latest touch of any unit (or none)
        latest = touches[_TS].max().to_pyarrow().as_py()
        if latest is None:
            return None
        as_of = _utc(latest)
    else:
        base = base.filter(base[_TS] <= ibis.literal(as_of, type=base[_TS].type()))
    return _Plan(q, base, as_of, segments)


def _breakdown_value(plan: _Plan) -> ir.Value | None:
    name = plan.query.breakdown
    if name is None:
        return None
    b = plan.base  # the name was checked by _plan
    if name in b.columns and name not in (_U, "properties"):
        return b[name].cast("string")
    return json_get(b.properties, name[len(PROPERTY_PREFIX):])


def _labelled(plan: _Plan, units: ir.Table, source: ir.Table | None = None) -> ir.Table:
    """``units`` (one row per unit) with ``breakdown``: the value on the unit's first touch of
    ``source`` (default: all its touches), ``(none)`` when missing, ``(other)`` beyond the
    ``breakdown_limit`` values held by most of these units (ties by value); NULL without breakdown.

    Several touches at the first time: the smallest non-NULL value wins.
    """
    name = plan.query.breakdown
    if name is not None and name in plan.segments:
        # a segment: the unit's value; a unit with several values takes the smallest, so
        # that every unit is counted once overall
        seg = plan.segments[name]
        col = plan.query.unit_column
        if col not in seg.columns or "value" not in seg.columns:
            raise InvalidParameterError(f"segment table '{name}' needs columns {col} and value")
        values = seg.group_by(**{_U: seg[col].cast("string")}).aggregate(v=seg.value.cast("string").min())
    else:
        value = _breakdown_value(plan)
        if value is None:
            return units.mutate(**{_B: ibis.null("string")})
        src = plan.base if source is None else source
        rows = src.select(_U, _TS, v=value)
        rows = rows.mutate(edge=rows[_TS].min().over(ibis.window(group_by=_U)))
        rows = rows.filter(rows[_TS] == rows.edge)
        values = rows.group_by(_U).aggregate(v=rows.v.min())
    t = units.left_join(values, _U).select(*units.columns, "v")
    t = t.mutate(v=t.v.fill_null(NONE_LABEL))
    counts = t.group_by("v").aggregate(n=t.count())
    limit = plan.query.breakdown_limit
    ranked = counts.mutate(pos=ibis.row_number().over(ibis.window(order_by=[ibis.desc("n"), "v"])) + 1)
    labels = ranked.select(_v=ranked.v, label=ibis.cases((ranked.pos <= limit, ranked.v),
                                                         else_=ibis.literal(OTHER_LABEL)))
    out = t.join(labels, t.v == labels._v)
    return out.select(*units.columns, **{_B: out.label})


def _collect(expr: ir.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return rows


def _order(values: Iterable[str | None], sizes: Mapping[str | None, int]) -> list[str]:
    """Breakdown values by size (descending), then value; ``(other)`` last."""
    named = [v for v in set(values) if v is not None]
    return sorted(named, key=lambda v: (v == OTHER_LABEL, -sizes.get(v, 0), v))


# ---------------------------------------------------------------- retention
def retention(touches: ir.Table, query: RetentionQuery, *,
              segments: Mapping[str, ir.Table] | None = None) -> RetentionResult:
    """Compute the cohort retention ``query`` over ``touches`` (one backend query, plus one for
    ``as_of`` when not given).

    ``touches`` needs ``ts`` (UTC), the unit column (``person_id`` or ``account_id``; rows where
    it is NULL are ignored) and the columns the filters and the breakdown read. ``segments``
    maps breakdown names that are not touch columns (``persona``, ``cohort``) to tables with
    the unit column and ``value``; a unit with several values is counted under the smallest.
    """
    if not isinstance(query, RetentionQuery):
        raise InvalidParameterError("retention() needs a RetentionQuery")
    q = query
    plan = _plan(touches, q, segments)
    if plan is None:
        return RetentionResult(q, None, (), _curve({}, q.periods), ())
    starts = plan.rows(q.start_event)
    first = starts.group_by(_U).aggregate(first_ts=starts[_TS].min())
    first = first.mutate(c=period_index(first.first_ts, q.cohort_grain), s=period_index(first.first_ts, q.period))
    lo, hi = plan.span(q.cohort_grain)
    if lo is not None:
        first = first.filter(first.c >= lo)
    if hi is not None:
        first = first.filter(first.c <= hi)
    first = _labelled(plan, first, starts if q.breakdown_touch == "start" else None)

    # the latest return touch per unit and period: a period counts when it is at or after the start
    returns = plan.rows(q.return_event)
    returns = returns.group_by(_U, rp=period_index(returns[_TS], q.period)).aggregate(rts=returns[_TS].max())
    returns = returns.rename(_r=_U)
    j = first.left_join(returns, [first[_U] == returns._r, returns.rts >= first.first_ts])
    # one row per unit and return period k (one row with k NULL for a unit that never returns)
    j = j.select(_U, _B, "c", "s", k=(j.rp - j.s).cast("int64"))
    top = q.periods - 1
    if q.mode == "bounded":
        # each unit is counted once in the sizes: on its row with the smallest k (or its only row)
        j = j.mutate(lead=(j.k.isnull() | (j.k == j.k.min().over(ibis.window(group_by=_U)))).cast("int64"),
                     k=ibis.cases((j.k <= top, j.k), else_=ibis.null("int64")))
        agg = j.group_by(_B, "c", "s", "k", "lead").aggregate(n=j.count())
    else:
        # the last return period L of each unit, capped at the last period shown
        per = j.group_by(_U, _B, "c", "s").aggregate(last_k=j.k.max())
        capped = ibis.cases((per.last_k > top, ibis.literal(top, "int64")), else_=per.last_k)
        agg = per.group_by(_B, "c", "s", k=capped, lead=ibis.literal(1, "int64")).aggregate(n=per.count())

    # (breakdown, cohort) -> {s: units} and -> {k: units} (unbounded: units whose L is k)
    size_of: dict[tuple[str | None, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    count_of: dict[tuple[str | None, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in _collect(agg):
        key, n = (r["breakdown"], int(r["c"])), int(r["n"])
        if r["lead"]:
            size_of[key][int(r["s"])] += n
        if r["k"] is not None:
            count_of[key][int(r["k"])] += n
    last_index = plan.last

    def cohorts_of(keys: Iterable[tuple[str | None, int]]) -> tuple[RetentionCohort, ...]:
        merged_s: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        merged_k: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for key in keys:
            for s, n in size_of[key].items():
                merged_s[key[1]][s] += n
            for k, n in count_of.get(key, {}).items():
                merged_k[key[1]][k] += n
        return tuple(_cohort(c, merged_s[c], merged_k[c], q, last_index) for c in sorted(merged_s))

    overall = cohorts_of(size_of)
    breakdown: list[BreakdownRetention] = []
    if q.breakdown is not None:
        totals = {v: sum(n for (b, _), d in size_of.items() if b == v for n in d.values())
                  for v in {b for b, _ in size_of}}
        for v in _order(totals, totals):
            cs = cohorts_of(k for k in size_of if k[0] == v)
            breakdown.append(BreakdownRetention(v, totals[v], cs, _curve_of(cs, q.periods)))
    return RetentionResult(q, plan.as_of, overall, _curve_of(overall, q.periods), tuple(breakdown))


def _cohort(c: int, sizes: Mapping[int, int], counts: Mapping[int, int], q: RetentionQuery,
            last_index: int) -> RetentionCohort:
    """One cohort's cells from its sizes per first-touch period ``s`` and its counts per period ``k``
    (bounded) or per last return period (unbounded, capped at the last period shown)."""
    size = sum(sizes.values())
    latest_s = max(sizes)
    cells = []
    for k in range(q.periods):
        eligible = sum(n for s, n in sizes.items() if s + k <= last_index)
        if q.mode == "bounded":
            retained = counts.get(k, 0)
        else:
            retained = sum(n for L, n in counts.items() if k <= L)
        cells.append(RetentionCell(k, retained, eligible, _rate(retained, eligible), latest_s + k < last_index))
    return RetentionCohort(period_start(c, q.cohort_grain), size, tuple(cells))


def _curve_of(cohorts: Sequence[RetentionCohort], periods: int) -> tuple[CurvePoint, ...]:
    totals: dict[int, tuple[int, int]] = {}
    for c in cohorts:
        for cell in c.cells:
            r, e = totals.get(cell.period, (0, 0))
            totals[cell.period] = (r + cell.retained, e + cell.eligible)
    return _curve(totals, periods)


def _curve(totals: Mapping[int, tuple[int, int]], periods: int) -> tuple[CurvePoint, ...]:
    out = []
    for k in range(periods):
        r, e = totals.get(k, (0, 0))
        out.append(CurvePoint(k, r, e, _rate(r, e)))
    return tuple(out)


# ---------------------------------------------------------------- lifecycle
def lifecycle(touches: ir.Table, query: LifecycleQuery, *,
              segments: Mapping[str, ir.Table] | None = None) -> LifecycleResult:
    """Lifecycle states per period (one backend query, plus one for ``as_of`` when not given).

    A unit is *active* in a period when it has a touch matching ``query.event`` in it. Per
    period ``p``: new = first active period is ``p``; returning = active in ``p`` and ``p-1``;
    resurrecting = active in ``p``, not in ``p-1``, but before; dormant = active in ``p-1`` and
    not in ``p`` (negative). Periods run from the first active period (or ``date_from``) to the
    one holding ``as_of`` (or ``date_to``). ``segments`` as for :func:`retention`: breakdown names
    that are not touch columns (``persona``, ``cohort``, ``cohort:NAME``) mapped to tables with the
    unit column and ``value``; a unit with several values is counted under the smallest.
    """
    if not isinstance(query, LifecycleQuery):
        raise InvalidParameterError("lifecycle() needs a LifecycleQuery")
    q = query
    plan = _plan(touches, q, segments)
    if plan is None:
        return LifecycleResult(q, None, ())
    rows = plan.rows(q.event)
    act = rows.select(_U, p=period_index(rows[_TS], q.period)).distinct()
    units = _labelled(plan, act.select(_U).distinct())
    act = act.join(units, _U)
    w = ibis.window(group_by=_U, order_by="p")
    act = act.mutate(prev=act.p.lag().over(w), nxt=act.p.lead().over(w))
    state = ibis.cases(
        (act.prev.isnull(), 0),
        (act.prev == act.p - 1, 1),
        else_=2,
    )
    # one aggregate: units per period and state, and whether they are gone (dormant) the next period
    gone = (act.nxt.isnull() | (act.nxt > act.p + 1)).cast("int64")
    agg = act.group_by(_B, "p", state=state, gone=gone).aggregate(n=act.count())
    counts: dict[str | None, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    for r in _collect(agg):
        g, p, n = r["breakdown"], int(r["p"]), int(r["n"])
        counts[g][p][int(r["state"])] += n
        if r["gone"] and p + 1 <= plan.last:
            counts[g][p + 1][3] += n
    lo, hi = plan.span(q.period)
    first_p = min((p for d in counts.values() for p in d), default=plan.last)
    span = range(first_p if lo is None else lo, min(plan.last, hi if hi is not None else plan.last) + 1)

    def rows_of(groups: Iterable[str | None]) -> tuple[LifecycleRow, ...]:
        out = []
        for p in span:
            n = [0, 0, 0, 0]
            for g in groups:
                n = [a + b for a, b in zip(n, counts[g].get(p, (0, 0, 0, 0)), strict=True)]
            out.append(LifecycleRow(period_start(p, q.period), n[0], n[1], n[2], -n[3]))
        return tuple(out)

    breakdown: list[BreakdownLifecycle] = []
    if q.breakdown is not None:
        size = {g: sum(v[0] for v in d.values()) for g, d in counts.items()}  # units = new ever
        breakdown = [BreakdownLifecycle(g, rows_of([g])) for g in _order(counts, size)]
    return LifecycleResult(q, plan.as_of, rows_of(list(counts)), tuple(breakdown))


# ---------------------------------------------------------------- churn
def churn(touches: ir.Table, query: ChurnQuery, *, segments: Mapping[str, ir.Table] | None = None) -> ChurnResult:
    """Churn per period and at ``as_of`` (one backend query, plus one for ``as_of`` when not given).

    A unit's touches (matching ``query.event``) form *spells*: runs in which consecutive touches
    are at most ``inactive_for`` apart. A spell from first touch ``a`` to last touch ``z`` keeps the
    unit active through ``z + inactive_for``; right after that instant the unit is churned. Per
    period ``[S, E)``: ``active_at_start`` = units with a spell ``a < S <= z + inactive_for``;
    ``churned`` = those of them whose spell ends in the period (``S <= z + inactive_for < E``) and
    before ``as_of``. ``segments``: breakdowns over saved cohorts, as for :func:`lifecycle`.
    """
    if not isinstance(query, ChurnQuery):
        raise InvalidParameterError("churn() needs a ChurnQuery")
    q = query
    plan = _plan(touches, q, segments)
    if plan is None:
        return ChurnResult(q, None, 0, 0, ())
    gap = ibis.interval(seconds=q.inactive_seconds)
    rows = plan.rows(q.event)
    t = rows.select(_U, _TS).distinct()  # distinct times: no ties in the windows below
    w = ibis.window(group_by=_U, order_by=_TS)
    t = t.mutate(prev=t[_TS].lag().over(w), nxt=t[_TS].lead().over(w))
    t = t.mutate(opens=t.prev.isnull() | (t[_TS] > t.prev + gap), closes=t.nxt.isnull() | (t.nxt > t[_TS] + gap))
    edges = t.filter(t.opens | t.closes)
    # along a unit's spell edges, a closing edge that does not open a spell follows the one that did
    edges = edges.mutate(
        begin=ibis.cases((edges.opens, edges[_TS]), else_=edges[_TS].lag().over(w)),
        first=ibis.cases((edges.opens, edges.prev.isnull()), else_=edges.prev.isnull().lag().over(w)),
    )
    spells = edges.filter(edges.closes).select(_U, "begin", "first", last_ts=edges[_TS], end=edges[_TS] + gap)
    units = _labelled(plan, spells.select(_U).distinct())
    spells = spells.join(units, _U)
    as_of = ibis.literal(plan.as_of, type=rows[_TS].type())
    # one aggregate over spells: periods of their first touch (pa) and of their end (pz), whether
    # they ended before as_of, and whether they are their unit's first spell
    agg = spells.group_by(
        _B, pa=period_index(spells.begin, q.period), pz=period_index(spells.end, q.period),
        done=(spells.end < as_of).cast("int64"), first=spells.first.cast("int64"),
    ).aggregate(n=spells.count())
    delta: dict[str | None, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    gone: dict[str | None, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    now_n: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])  # active, churned at as_of
    first_p = plan.last
    for r in _collect(agg):
        g, pa, pz, n = r["breakdown"], int(r["pa"]), int(r["pz"]), int(r["n"])
        first_p = min(first_p, pa)
        if pz > pa:  # active at the start of periods pa+1 .. pz
            delta[g][pa + 1] += n
            delta[g][pz + 1] -= n
            if r["done"]:
                gone[g][pz] += n
        # a unit's spells are disjoint: only its last one can still run at as_of
        now_n[g][0] += 0 if r["done"] else n
        now_n[g][1] += n if r["first"] else 0
    for v in now_n.values():
        v[1] -= v[0]  # churned = units - active
    latest = spells.group_by(_U).aggregate(last_ts=spells.last_ts.max(), end=spells.end.max())
    status = latest.select(_U, "last_ts", status=ibis.cases((latest.end < as_of, "churned"), else_="active"))
    lo, hi = plan.span(q.period)
    start = first_p if lo is None else lo
    stop = plan.last if hi is None else min(plan.last, hi)

    def rows_of(groups: Iterable[str | None]) -> tuple[ChurnRow, ...]:
        groups = list(groups)
        d: dict[int, int] = defaultdict(int)
        for g in groups:
            for p, n in delta[g].items():
                d[p] += n
        running = sum(n for p, n in d.items() if p < start)
        out = []
        for p in range(start, stop + 1):
            running += d.get(p, 0)
            out.append(ChurnRow(period_start(p, q.period), running, sum(gone[g].get(p, 0) for g in groups)))
        return tuple(out)

    active_now = sum(v[0] for v in now_n.values())
    churned_now = sum(v[1] for v in now_n.values())
    breakdown: list[BreakdownChurn] = []
    if q.breakdown is not None:
        size = {g: sum(v) for g, v in now_n.items()}
        breakdown = [BreakdownChurn(g, now_n[g][0], now_n[g][1], rows_of([g])) for g in _order(now_n, size)]
    return ChurnResult(q, plan.as_of, active_now, churned_now, rows_of(list(now_n)), tuple(breakdown), status)


# ---------------------------------------------------------------- repurchase
def repurchase(touches: ir.Table, query: RepurchaseQuery, *,
               segments: Mapping[str, ir.Table] | None = None) -> RepurchaseResult:
    """Repurchase rate (one backend query, plus one for ``as_of`` when not given).

    Purchases are touches matching ``query.event``; each matching touch is one purchase. A
    purchaser has at least one; a repurchaser at least two, the second at most ``window`` after
    the first when a window is given. With ``period`` purchasers are grouped by the period of
    their first purchase; ``date_from``/``date_to`` keep the purchasers whose first purchase lies in
    the periods holding them (in days without ``period``). ``segments``: breakdowns over saved
    cohorts, as for :func:`lifecycle`.
    """
    if not isinstance(query, RepurchaseQuery):
        raise InvalidParameterError("repurchase() needs a RepurchaseQuery")
    q = query
    plan = _plan(touches, q, segments)
    empty = RepurchaseRow(None, 0, 0, 0)
    if plan is None:
        return RepurchaseResult(q, None, empty)
    buys = plan.rows(q.event).select(_U, _TS)
    first = buys.group_by(_U).aggregate(first_ts=buys[_TS].min(), purchases=buys.count())
    if q.window_seconds is None:
        per = first.mutate(counted=first.purchases)
    else:
        j = buys.join(first, _U)
        j = j.filter(j[_TS] <= j.first_ts + ibis.interval(seconds=q.window_seconds))
        inside = j.group_by(_U).aggregate(counted=j.count())
        per = first.join(inside, _U)
    grain = q.period
    per = per.mutate(c=period_index(per.first_ts, grain) if grain else ibis.literal(0, "int64"))
    lo, hi = plan.span(grain or "day")
    if lo is not None or hi is not None:
        picked = period_index(per.first_ts, grain or "day")
        if lo is not None:
            per = per.filter(picked >= lo)
        if hi is not None:
            per = per.filter(picked <= hi)
    per = _labelled(plan, per.select(_U, "c", "purchases", "counted"), None)
    agg = per.group_by(_B, "c").aggregate(
        n=per.count(), again=(per.counted >= 2).cast("int64").sum(), total=per.purchases.sum())
    counts: dict[str | None, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for r in _collect(agg):
        slot = counts[r["breakdown"]][int(r["c"])]
        for i, name in enumerate(("n", "again", "total")):
            slot[i] += int(r[name])

    def summary(groups: Iterable[str | None]) -> tuple[RepurchaseRow, tuple[RepurchaseRow, ...]]:
        by_c: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for g in groups:
            for c, v in counts[g].items():
                by_c[c] = [a + b for a, b in zip(by_c[c], v, strict=True)]
        tot = [sum(v[i] for v in by_c.values()) for i in range(3)]
        total = RepurchaseRow(None, *tot)
        if not grain:
            return total, ()
        return total, tuple(RepurchaseRow(period_start(c, grain), *by_c[c]) for c in sorted(by_c))

    total, rows = summary(list(counts))
    breakdown: list[BreakdownRepurchase] = []
    if q.breakdown is not None:
        size = {g: sum(v[0] for v in d.values()) for g, d in counts.items()}
        for g in _order(counts, size):
            t, rs = summary([g])
            breakdown.append(BreakdownRepurchase(g, t, rs))
    return RepurchaseResult(q, plan.as_of, total, rows, tuple(breakdown))


__all__ = [
    "BreakdownChurn",
    "BreakdownLifecycle",
    "BreakdownRepurchase",
    "BreakdownRetention",
    "ChurnQuery",
    "ChurnResult",
    "ChurnRow",
    "CurvePoint",
    "LifecycleQuery",
    "LifecycleResult",
    "LifecycleRow",
    "RepurchaseQuery",
    "RepurchaseResult",
    "RepurchaseRow",
    "RetentionCell",
    "RetentionCohort",
    "RetentionQuery",
    "RetentionResult",
    "churn",
    "index_of",
    "lifecycle",
    "period_index",
    "period_start",
    "repurchase",
    "retention",
]
