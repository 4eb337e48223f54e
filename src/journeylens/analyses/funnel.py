"""Funnels: how many persons (or accounts) go through a sequence of steps within a window.

The request is a :class:`FunnelQuery` (shared by the Python API, the CLI and the
REST API). It passes validation rules (each raising a journeylens error), gets
its defaults, and then one implementation per ``order`` turns the touches into
one row per unit and reached step (:meth:`_Variant.unit_steps`). Everything
after that — counts, conversion, time to convert, histograms, breakdowns and
trends — is shared and set-based: window functions, joins and aggregates only.

Semantics (``docs/funnels.md`` has the long form with examples):

* **ordered** (default) equals ClickHouse ``windowFunnel(window)`` in its
  default mode. A unit reaches step ``k`` when it has touches ``e1..ek`` with
  ``ei`` matching step ``i``, ``ts(e1) <= ts(e2) <= ... <= ts(ek)`` and
  ``ts(ek) - ts(e1) <= window``. Equal times count as in order and one touch may
  serve several steps. Computed as ClickHouse does — each step-``k`` touch
  extends the latest attempt that reached step ``k-1`` — but as one running
  ``max`` window per step over the step-``k-1`` and step-``k`` rows only.
* **strict**: ``e1..ek`` are *consecutive* touches of the unit (ordered by
  ``ts``, then ``message_id``, then ``event``), within the window.
* **unordered**: the unit's level is the largest number of distinct steps that
  all have a touch within one window ``[t, t + window]``, ``t`` being the time
  of any of its step touches.

A unit's *time to convert* to step ``k`` is measured on the first completion of
step ``k``: the earliest touch that completes it, minus the start (step-1 touch)
of the latest attempt it completes.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import reduce
from operator import and_
from typing import Any, Literal

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from journeylens.analyses import _funnel_scan
from journeylens.analyses._relations import nullable as _nullable
from journeylens.analyses._relations import segment_values, union_all
from journeylens.analyses._time import PERIODS, format_duration, histogram_edges, parse_duration
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.functions import json_get, json_get_number, seconds_between, unix_micros

ORDERS = ("ordered", "strict", "unordered")
UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
ATTRIBUTIONS = ("first_touch", "last_touch", "step:<k>")
MAX_STEPS = 32
"""As ClickHouse ``windowFunnel``: at most 32 steps."""
DEFAULT_WINDOW = "14d"
NONE_LABEL = "(none)"
"""Breakdown value of units whose attributed touch has no value."""
OTHER_LABEL = "(other)"
"""Breakdown value that gathers the values beyond ``breakdown_limit``."""
PROPERTY_PREFIX = "properties."

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte"]
COMPARISONS = ("gt", "gte", "lt", "lte")
_OPS: dict[str, Op] = {"!=": "ne", ">=": "gte", "<=": "lte", "=": "eq", ">": "gt", "<": "lt"}
_SYMBOL = {v: k for k, v in _OPS.items()}
_CONDITION = re.compile(r"^\s*([^=!<>&|]+?)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_ATTRIBUTION = re.compile(r"^(first_touch|last_touch|step:(\d+))$")


# ============================================================================ request model
class Condition(BaseModel):
    """One test on a touch: ``field`` is a column of the touches or ``properties.<key>``.

    ``eq`` with several values means "any of them", ``ne`` "none of them" (a
    missing value counts as different). Comparisons are numeric.
    """

    model_config = ConfigDict(frozen=True)

    field: str
    op: Op = "eq"
    values: tuple[str, ...]

    @field_validator("values", mode="before")
    @classmethod
    def _as_tuple(cls, v: Any) -> Any:
        if isinstance(v, str | int | float):
            return (str(v),)
        return tuple(str(x) for x in v) if isinstance(v, list | tuple) else v

    def __str__(self) -> str:
        return f"{self.field}{_SYMBOL[self.op]}{'|'.join(self.values)}"


class Step(BaseModel):
    """A funnel step: touches matching all ``conditions``; ``name`` labels it in results."""

    model_config = ConfigDict(frozen=True)

    name: str
    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Step:
        """A step from its short form.

        ``purchase`` is the event name; ``channel=email``, ``event=purchase&properties.total>=50``,
        ``stage=decision``, ``touchpoint=shop|app`` are filters: ``&`` joins conditions,
        ``|`` lists alternatives, operators are ``= != > >= < <=``.
        """
        text = str(text).strip()
        if not text:
            raise InvalidParameterError("a funnel step is empty", hint="give an event name or a filter like channel=email")
        if not any(ch in text for ch in "=<>!&"):
            return cls(name=name or text, conditions=(Condition(field="event", values=(text,)),))
        conditions = []
        for part in text.split("&"):
            m = _CONDITION.match(part)
            if not m or not m.group(3):
                raise InvalidParameterError(
                    f"cannot read the step condition '{part.strip()}' in '{text}'",
                    hint="write FIELD=VALUE, FIELD!=A|B, properties.KEY>=NUMBER; join conditions with &",
                )
            field_, symbol, value = m.groups()
            op = _OPS[symbol]
            values = tuple(v.strip() for v in value.split("|")) if op in ("eq", "ne") else (value,)
            if op in COMPARISONS and not _is_number(value):
                raise InvalidParameterError(f"'{field_}{symbol}{value}' compares with a non-number '{value}'")
            conditions.append(Condition(field=field_, op=op, values=values))
        return cls(name=name or text, conditions=tuple(conditions))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.conditions)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_step(value: Any) -> Any:
    if isinstance(value, str):
        return Step.parse(value)
    if isinstance(value, Mapping) and "filter" in value:
        return Step.parse(str(value["filter"]), value.get("name"))
    return value


class Exclusion(BaseModel):
    """Touches matching ``step`` after step ``from_step`` and before step ``to_step`` (1-based)
    stop an attempt: it cannot go past ``from_step`` (see ``docs/funnels.md``)."""

    model_config = ConfigDict(frozen=True)

    step: Step
    from_step: int
    to_step: int

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return _as_step(v)

    @classmethod
    def parse(cls, text: str) -> Exclusion:
        """``EVENT:i:j`` (``EVENT`` may be a step filter) -> an exclusion between steps i and j."""
        parts = str(text).rsplit(":", 2)
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts[1:]):
            raise InvalidParameterError(
                f"cannot read the exclusion '{text}'", hint="write EVENT:i:j, e.g. coupon_error:2:3"
            )
        return cls(step=Step.parse(parts[0]), from_step=int(parts[1]), to_step=int(parts[2]))


class FunnelQuery(BaseModel):
    """Everything a funnel needs besides the touches. Errors are journeylens errors.

    ``window`` and ``step_window`` are durations (``30m``, ``12h``, ``7d``, ``4w`` or
    seconds); ``breakdown`` is a column of the touches, ``properties.<key>`` or the
    name of a segment table passed to :func:`funnel` (persona, cohort);
    ``breakdown_attribution`` takes the value from the unit's ``first_touch``, its
    ``last_touch`` up to its furthest step, or the touch at which it first reached
    step ``k`` (``step:<k>``, 1-based).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[Step, ...]
    order: str = "ordered"
    window: str | int = DEFAULT_WINDOW
    step_window: str | int | None = None
    unit: str = "person"
    exclusions: tuple[Exclusion, ...] = ()
    breakdown: str | None = None
    breakdown_attribution: str = "first_touch"
    breakdown_limit: int = 25
    trend_period: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidParameterError(_pydantic_message(exc)) from None

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        return tuple(_as_step(s) for s in v) if isinstance(v, list | tuple) else v

    @field_validator("exclusions", mode="before")
    @classmethod
    def _exclusions(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            return tuple(Exclusion.parse(x) if isinstance(x, str) else x for x in v)
        return v

    @model_validator(mode="after")
    def _validate(self) -> FunnelQuery:
        for rule in VALIDATION_RULES:
            rule(self)
        return self

    # defaults and derived values ---------------------------------------------------
    @property
    def window_seconds(self) -> int:
        return parse_duration(self.window, name="window")

    @property
    def step_window_seconds(self) -> int | None:
        return None if self.step_window is None else parse_duration(self.step_window, name="step_window")

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    @property
    def attribution_step(self) -> int | None:
        """``k`` of ``step:<k>`` attribution, else None."""
        m = _ATTRIBUTION.match(self.breakdown_attribution)
        return int(m.group(2)) if m and m.group(2) else None

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "query"
        parts.append(f"{where}: {e['msg']}")
    return "invalid funnel query: " + "; ".join(parts)


# ---------------------------------------------------------------- validation rules
def _rule_steps(q: FunnelQuery) -> None:
    """2 to 32 steps."""
    if not 2 <= len(q.steps) <= MAX_STEPS:
        raise InvalidParameterError(
            f"a funnel needs 2 to {MAX_STEPS} steps, got {len(q.steps)}",
            hint="e.g. journeylens funnel visit product_view purchase",
        )


def _rule_order(q: FunnelQuery) -> None:
    if q.order not in ORDERS:
        raise UnknownNameError("funnel order", q.order, ORDERS)


def _rule_unit(q: FunnelQuery) -> None:
    if q.unit not in UNITS:
        raise UnknownNameError("unit", q.unit, UNITS)


def _rule_windows(q: FunnelQuery) -> None:
    """Both windows parse; a per-step limit is shorter than the window and needs an order."""
    window = q.window_seconds
    step = q.step_window_seconds
    if step is None:
        return
    if q.order == "unordered":
        raise InvalidParameterError("step_window needs ordered steps; an unordered funnel has no step-to-step gap")
    if step > window:
        raise InvalidParameterError(
            f"step_window ({q.step_window}) is longer than the window ({q.window})",
            hint="the window bounds the whole funnel; a per-step limit must be shorter",
        )


def _rule_exclusions(q: FunnelQuery) -> None:
    """Exclusions sit between two steps (1 <= i < j <= steps) of an ordered funnel."""
    if not q.exclusions:
        return
    if q.order != "ordered":
        why = ("no touch can lie between two steps of a strict funnel" if q.order == "strict"
               else "an unordered funnel has no 'between'")
        raise InvalidParameterError(f"exclusions need order 'ordered' ({why})")
    n = len(q.steps)
    for e in q.exclusions:
        if not 1 <= e.from_step < e.to_step <= n:
            raise InvalidParameterError(
                f"exclusion '{e.step.name}' is between steps {e.from_step} and {e.to_step}; "
                f"need 1 <= i < j <= {n}"
            )


def _rule_breakdown(q: FunnelQuery) -> None:
    m = _ATTRIBUTION.match(q.breakdown_attribution)
    if not m:
        raise UnknownNameError("breakdown attribution", q.breakdown_attribution, ATTRIBUTIONS)
    k = q.attribution_step
    if k is not None:
        if not 1 <= k <= len(q.steps):
            raise InvalidParameterError(f"breakdown attribution step:{k} is not a step (1..{len(q.steps)})")
        if q.order == "unordered":
            raise InvalidParameterError("breakdown attribution step:<k> needs ordered steps",
                                        hint="use first_touch or last_touch")
    if q.breakdown is not None and not q.breakdown.strip():
        raise InvalidParameterError("breakdown is empty")
    if q.breakdown_limit < 1:
        raise InvalidParameterError(f"breakdown_limit must be at least 1, got {q.breakdown_limit}")


def _rule_trend(q: FunnelQuery) -> None:
    if q.trend_period is not None and q.trend_period not in PERIODS:
        raise UnknownNameError("trend period", q.trend_period, PERIODS)


VALIDATION_RULES: tuple[Callable[[FunnelQuery], None], ...] = (
    _rule_steps, _rule_order, _rule_unit, _rule_windows, _rule_exclusions, _rule_breakdown, _rule_trend,
)
"""Applied in order when a :class:`FunnelQuery` is built; the first failing rule raises."""


# ============================================================================ result
@dataclass(frozen=True)
class HistogramBin:
    lower_seconds: int
    upper_seconds: int
    """Exclusive, except for the last bin (which ends at the window)."""
    persons: int


@dataclass(frozen=True)
class FunnelStep:
    step: str
    index: int
    """1-based position in the funnel."""
    persons: int
    """Units that reached the step (uniques)."""
    totals: int
    """Completions of the step: step touches that complete some valid attempt (see docs)."""
    conversion_from_start: float
    conversion_from_previous: float
    drop_offs: int
    """Units that reached the previous step but not this one (0 for step 1)."""
    median_seconds_to_convert: float | None
    p90_seconds_to_convert: float | None
    mean_seconds_to_convert: float | None
    median_seconds_from_previous: float | None
    histogram: tuple[HistogramBin, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "histogram"}
        d["histogram"] = [vars(b) for b in self.histogram]
        return d


@dataclass(frozen=True)
class BreakdownFunnel:
    value: str
    steps: tuple[FunnelStep, ...]


@dataclass(frozen=True)
class TrendRow:
    period: date
    """First day of the entry period (UTC; weeks start on Monday)."""
    breakdown: str | None
    persons: tuple[int, ...]
    """Units per step among those whose counted attempt started in the period."""

    @property
    def entered(self) -> int:
        return self.persons[0] if self.persons else 0

    @property
    def converted(self) -> int:
        return self.persons[-1] if self.persons else 0

    @property
    def conversion(self) -> float:
        return self.converted / self.entered if self.entered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period.isoformat(), "breakdown": self.breakdown, "entered": self.entered,
                "converted": self.converted, "conversion": self.conversion, "persons": list(self.persons)}


Status = Literal["converted", "dropped"]
STATUSES = ("dropped", "converted")


def step_ref(text: object) -> int | str:
    """A step as a user writes it (CLI, REST): its 1-based index when all digits, else its name
    (resolved by :meth:`FunnelResult.step_index`)."""
    return int(str(text)) if str(text).isdigit() else str(text)


@dataclass(frozen=True)
class FunnelPeople:
    """The units that dropped off at / converted to one step of a funnel (see
    :meth:`FunnelResult.people`); ``cohort`` names the cohort they were saved as, if any."""

    step: int
    step_name: str
    status: str
    unit: str
    people: tuple[str, ...]
    breakdown_value: str | None = None
    cohort: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "step_name": self.step_name, "status": self.status, "unit": self.unit,
                "breakdown_value": self.breakdown_value, "cohort": self.cohort, "count": len(self.people),
                "people": list(self.people)}

    def to_pandas(self) -> pd.DataFrame:
        column = UNITS.get(self.unit, "person_id")
        return pd.DataFrame({column: list(self.people)}, dtype="object")


@dataclass(frozen=True)
class FunnelResult:
    """Counts per step (and per breakdown value), trend by entry period, and the units behind them."""

    query: FunnelQuery
    steps: tuple[FunnelStep, ...]
    breakdown: tuple[BreakdownFunnel, ...] = ()
    trend: tuple[TrendRow, ...] = ()
    units: ir.Table | None = field(default=None, repr=False, compare=False)
    """One row per unit that entered: ``unit``, ``level`` (furthest step), ``breakdown``."""

    @property
    def unit(self) -> str:
        return self.query.unit

    # ------------------------------------------------------------------ people
    def step_index(self, step: int | str) -> int:
        """1-based index of ``step`` (an index or a step name; the first step of that name)."""
        names = self.query.step_names
        if isinstance(step, int) and not isinstance(step, bool):
            if not 1 <= step <= len(names):
                raise InvalidParameterError(f"step {step} is not in the funnel (1..{len(names)})")
            return step
        if step in names:
            return names.index(str(step)) + 1
        raise UnknownNameError("funnel step", str(step), names)

    def people_table(self, step: int | str, status: Status = "converted", *, breakdown: str | None = None) -> ir.Table:
        """Ibis table (one column, the unit id — ``person_id`` or ``account_id``) of the units that
        reached ``step`` (``converted``) or reached the step before it but not it (``dropped``)."""
        if self.units is None:
            raise InvalidParameterError("this funnel result holds no unit table")
        k = self.step_index(step)
        if status not in ("converted", "dropped"):
            raise UnknownNameError("status", str(status), ("converted", "dropped"))
        u = self.units
        cond = u.level >= k if status == "converted" else u.level == k - 1
        if breakdown is not None:
            cond = cond & (u.breakdown == breakdown)
        return u.filter(cond).select(**{self.query.unit_column: u.unit}).distinct()

    def people(self, step: int | str, status: Status = "converted", *, breakdown: str | None = None) -> list[str]:
        """Ids of the units that converted to / dropped off at ``step`` (sorted). Dropped off at step k
        means: reached step k-1 but not step k, so nobody drops off at step 1."""
        table = self.people_table(step, status, breakdown=breakdown)
        return sorted(str(v) for v in table.to_pyarrow().column(0).to_pylist())

    def people_at(self, step: int | str, status: Status = "dropped", *,
                  breakdown: str | None = None) -> FunnelPeople:
        """:meth:`people` with the step, status and unit they belong to (a renderable result)."""
        k = self.step_index(step)
        return FunnelPeople(step=k, step_name=self.query.step_names[k - 1], status=status, unit=self.unit,
                            people=tuple(self.people(k, status, breakdown=breakdown)), breakdown_value=breakdown)

    def levels(self) -> dict[str, int]:
        """Each unit that entered the funnel -> its furthest step (1-based), in one query."""
        if self.units is None:
            raise InvalidParameterError("this funnel result holds no unit table")
        t = self.units.select(_U, "level").distinct()
        return {str(r[_U]): int(r["level"]) for r in _collect(t)}

    # ------------------------------------------------------------------ renderings
    def to_dict(self) -> dict[str, Any]:
        q = self.query
        out: dict[str, Any] = {
            "unit": q.unit,
            "order": q.order,
            "window_seconds": q.window_seconds,
            "step_window_seconds": q.step_window_seconds,
            "steps": [s.to_dict() for s in self.steps],
        }
        if q.exclusions:
            out["exclusions"] = [{"step": e.step.name, "from_step": e.from_step, "to_step": e.to_step}
                                 for e in q.exclusions]
        if q.breakdown is not None:
            out["breakdown"] = {
                "by": q.breakdown,
                "attribution": q.breakdown_attribution,
                "values": [{"value": b.value, "steps": [s.to_dict() for s in b.steps]} for b in self.breakdown],
            }
        if q.trend_period is not None:
            out["trend"] = {"period": q.trend_period, "rows": [r.to_dict() for r in self.trend]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        """One row per step (per breakdown value first when broken down); histograms left out."""
        rows: list[dict[str, Any]] = []
        groups: list[tuple[str | None, tuple[FunnelStep, ...]]] = [(None, self.steps)]
        if self.query.breakdown is not None:
            groups = [(b.value, b.steps) for b in self.breakdown]
        for value, steps in groups:
            for s in steps:
                d = s.to_dict()
                del d["histogram"]
                rows.append({"breakdown": value, **d} if self.query.breakdown is not None else d)
        return pd.DataFrame(rows)

    def trend_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([r.to_dict() for r in self.trend])

    def figure(self) -> Any:
        """Plotly bars of units per step; one bar group per breakdown value when broken down."""
        import plotly.graph_objects as go

        names = list(self.query.step_names)
        fig = go.Figure()
        groups: list[tuple[str, tuple[FunnelStep, ...]]] = [("all", self.steps)]
        if self.query.breakdown is not None:
            groups = [(b.value, b.steps) for b in self.breakdown]
        for value, steps in groups:
            fig.add_trace(go.Bar(
                name=value, x=names, y=[s.persons for s in steps],
                text=[f"{s.conversion_from_start:.1%}" for s in steps], textposition="auto",
                customdata=[format_duration(s.median_seconds_to_convert) for s in steps],
                hovertemplate="%{x}: %{y} (%{text} of start)<br>median time to convert %{customdata}",
            ))
        title = f"Funnel ({self.query.order}, window {self.query.window}) — {self.unit}s"
        if self.query.breakdown is not None:
            title += f" by {self.query.breakdown}"
        fig.update_layout(title=title, barmode="group", yaxis_title=f"{self.unit}s",
                          showlegend=self.query.breakdown is not None)
        return fig


# ============================================================================ computation
_TS = "ts"
_U = "unit"


def _at_most_after(t: ir.TimestampValue, ref: ir.TimestampValue, seconds: int) -> ir.BooleanValue:
    """``t <= ref + seconds`` (exact to the microsecond; integer arithmetic, see
    :func:`journeylens.store.functions.seconds_between`)."""
    return unix_micros(t) <= unix_micros(ref) + ibis.literal(seconds * 1_000_000, "int64")


@dataclass(frozen=True)
class _Plan:
    """The validated query bound to a touches table: unit rows and one predicate per step."""

    query: FunnelQuery
    base: ir.Table
    """Touches of units (``unit`` column added, rows without a unit dropped)."""
    steps: tuple[ir.BooleanValue, ...]
    exclusions: tuple[ir.BooleanValue, ...]
    ts_type: dt.DataType
    columns: tuple[str, ...]
    """All columns of the touches table (``base`` keeps those the funnel reads)."""

    def null_ts(self) -> ir.TimestampValue:
        return ibis.null().cast(self.ts_type)

    def rows(self, predicate: ir.BooleanValue) -> ir.Table:
        return self.base.filter(predicate)

    def in_window(self, t: ir.TimestampValue, start: ir.TimestampValue) -> ir.BooleanValue:
        """``t <= start + window``."""
        return _at_most_after(t, start, self.query.window_seconds)

    def in_step_window(self, t: ir.TimestampValue, previous: ir.TimestampValue) -> ir.BooleanValue | None:
        """``t <= previous + step_window``, or None without a per-step limit."""
        s = self.query.step_window_seconds
        return None if s is None else _at_most_after(t, previous, s)


class _Variant(abc.ABC):
    """One funnel order: touches -> one row per unit and reached step.

    :meth:`unit_steps` returns ``unit``, ``step`` (1-based), ``reached`` (time of the
    first completion of the step), ``start`` (start of the attempt it completes),
    ``prev`` (time of the previous step's touch in that attempt) and ``completions``.
    """

    def __init__(self, plan: _Plan, *, attempt_times: bool = False) -> None:
        self.plan = plan
        self.scanned: pa.Table | None = None
        """:meth:`unit_steps` as Arrow when it was computed in process (then already executed)."""
        self.attempt_times = attempt_times
        """Also return ``t1..tn``: the times of the step touches of the attempt a row completes."""

    @abc.abstractmethod
    def unit_steps(self) -> ir.Table: ...

    def _per_unit(self, rows: ir.Table, k: int) -> ir.Table:
        """Aggregate successful step-``k`` rows (``unit, ts, start, prev``) to one row per unit.

        Start and previous time are non-decreasing along a unit's successful rows, so
        their minimum belongs to the first completion.
        """
        times = {c: rows[c].min() for c in rows.columns if re.fullmatch(r"t\d+", c)}
        return rows.group_by(_U).aggregate(
            step=ibis.literal(k, "int64"),
            reached=rows[_TS].min(),
            start=rows.start.min(),
            prev=rows.prev.min(),
            completions=rows.count().cast("int64"),
            **times,
        )


class _Ordered(_Variant):
    """ClickHouse ``windowFunnel`` (default mode), plus per-step limit and exclusions.

    Step ``k`` rows are the touches matching step ``k``; a step-``k`` row succeeds when the
    latest successful step-``k-1`` row at or before it (rows ordered by ``(ts, step)``) has
    ``ts <= start + window`` (and ``ts <= its time + step_window``, and no exclusion touch
    strictly between the attempt's step-``i`` touch and this one). Start, previous time
    and the step-``i`` times of successful rows never decrease along a unit's rows, so
    "the latest" is a running ``max`` — one window pass per step, over two steps' rows.
    """

    scan_in_process = True
    """On an in-process engine (DuckDB) the plain funnel walks each unit's step touches in
    numpy (:mod:`journeylens.analyses._funnel_scan`) instead of one window pass per step."""

    def unit_steps(self) -> ir.Table:
        p = self.plan
        q = p.query
        if not (self.attempt_times or q.exclusions or q.step_window_seconds is not None):
            if self.scan_in_process and _funnel_scan.runs_in_process(p.base):
                self.scanned = _funnel_scan.unit_steps(p.base, p.steps, q.window_seconds,
                                                       disjoint=_disjoint(q.steps))
                return _funnel_scan.as_table(self.scanned, p.ts_type)
            return self._attempt_starts()
        carried = (list(range(1, len(q.steps) + 1)) if self.attempt_times
                   else sorted({e.from_step for e in q.exclusions}))
        null = p.null_ts()
        first = p.rows(p.steps[0])
        cols = {_U: first[_U], _TS: first[_TS], "start": first[_TS], "prev": null}
        cols |= {f"t{i}": (first[_TS] if i == 1 else null) for i in carried}
        done = first.select(**cols)
        per_step = [self._per_unit(done, 1)]
        for k in range(2, len(q.steps) + 1):
            done = self._extend(done, k, carried)
            per_step.append(self._per_unit(done, k))
        return reduce(lambda a, b: a.union(b), per_step)

    def _attempt_starts(self) -> ir.Table:
        """The plain funnel (no per-step limit, exclusions or attempt times): each pass only
        needs, per unit, the starts of the attempts that reached step ``k-1`` and the time
        each was first reached there — one row per ``(unit, start)``, not per successful
        touch — because a step-``k`` touch succeeds when the latest start reached at or
        before it is within the window. Fewer rows to sort; same successes.

        ``prev`` (the latest successful step-``k-1`` touch at or before the first completion
        of step ``k``) then comes from a join of those completions with the step-``k-1``
        successes (hash join and aggregate instead of carrying it through the sort).
        """
        p = self.plan
        n = len(p.query.steps)
        null = p.null_ts()
        first = p.rows(p.steps[0]).select(_U, _TS)
        per_step = [first.group_by(_U).aggregate(
            step=ibis.literal(1, "int64"), reached=first[_TS].min(), start=first[_TS].min(), prev=null,
            completions=first.count().cast("int64"))]
        # step-1 touches start where they are; equal (unit, ts) pairs are rare: no dedupe
        anchors = first.select(_U, _TS, start=first[_TS])
        done = anchors
        w = ibis.cumulative_window(group_by=_U, order_by=[_TS, "o"])
        for k in range(2, n + 1):
            cur = p.rows(p.steps[k - 1])
            # anchors sort before step-k touches of the same time (o=0 < 1): equal times count as in order
            if k == 2:  # step-1 anchors start where they are: no start column to carry through the sort
                u = anchors.select(_U, _TS, o=ibis.literal(0, "int8")).union(
                    cur.select(_U, _TS, o=ibis.literal(1, "int8")))
                s = u.mutate(w_start=ibis.cases((u.o == 0, u[_TS]), else_=null).max().over(w))
            else:
                u = anchors.select(_U, _TS, o=ibis.literal(0, "int8"), start="start").union(
                    cur.select(_U, _TS, o=ibis.literal(1, "int8"), start=null))
                s = u.mutate(w_start=u.start.max().over(w))
            s = s.filter((s.o == 1) & s.w_start.notnull() & p.in_window(s[_TS], s.w_start))
            succ = s.select(_U, _TS, start=s.w_start)
            if k < n:  # the next pass's anchors; the per-unit numbers from them (fewer rows)
                groups = succ.group_by(_U, "start").aggregate(**{_TS: succ[_TS].min(), "c": succ.count()})
                anchors = groups.select(_U, _TS, "start")
                agg = groups.group_by(_U).aggregate(reached=groups[_TS].min(), start=groups.start.min(),
                                                    completions=groups.c.sum().cast("int64"))
            else:
                agg = succ.group_by(_U).aggregate(reached=succ[_TS].min(), start=succ.start.min(),
                                                  completions=succ.count().cast("int64"))
            if k == 2:  # the previous touch of a step-2 completion is its start
                prev: ir.Table = agg.mutate(prev=agg.start)
            else:  # the latest step-(k-1) success at or before it: one of the attempt it completes
                b = done.rename(_pu=_U, _pts=_TS, _ps="start")
                j = agg.join(b, (agg[_U] == b._pu) & (agg.start == b._ps) & (b._pts <= agg.reached))
                prev = j.group_by(_U, "reached", "start", "completions").aggregate(prev=j._pts.max())
            per_step.append(prev.select(_U, step=ibis.literal(k, "int64"), reached="reached", start="start",
                                        prev="prev", completions="completions"))
            done = succ
        return union_all(per_step)

    def _extend(self, done: ir.Table, k: int, carried: list[int]) -> ir.Table:
        p = self.plan
        q = p.query
        null = p.null_ts()
        active = [(n, e) for n, e in enumerate(q.exclusions) if e.from_step < k <= e.to_step]

        def part(t: ir.Table, kind: int, start: Any, ts_i: Callable[[int], Any], x: int | None) -> ir.Table:
            cols: dict[str, Any] = {_U: t[_U], _TS: t[_TS], "o": ibis.literal(kind, "int8"), "start": start}
            cols |= {f"t{i}": ts_i(i) for i in carried}
            cols |= {f"x{n}": (t[_TS] if n == x else null) for n, _ in active}
            return t.select(**cols)

        prev_rows = part(done, 0, done.start, lambda i: done[f"t{i}"], None)
        cur = p.rows(p.steps[k - 1])
        parts = [prev_rows, part(cur, 1, null, lambda i: null, None)]
        for n, _ in active:
            xs = p.rows(p.exclusions[n])
            parts.append(part(xs, 2, null, lambda i: null, n))
        u = reduce(lambda a, b: a.union(b), parts)
        # rows of step k-1 sort before step-k rows of the same time (o=0 < 1): equal times
        # count as in order; exclusion rows (o=2) after both: only earlier exclusions count.
        w = ibis.cumulative_window(group_by=_U, order_by=[_TS, "o"])
        last = ibis.cases((u.o == 0, u[_TS]), else_=null)
        w_start = u.start.max().over(w)
        # step-1 rows start where they are: the latest start is the latest step-1 time
        s = u.mutate(
            w_start=w_start,
            w_last=w_start if k == 2 else last.max().over(w),
            **{f"w_t{i}": u[f"t{i}"].max().over(w) for i in carried},
            **{f"w_x{n}": u[f"x{n}"].max().over(w) for n, _ in active},
        )
        ok = (s.o == 1) & s.w_start.notnull() & p.in_window(s[_TS], s.w_start)
        gap = p.in_step_window(s[_TS], s.w_last)
        if gap is not None:
            ok = ok & gap
        for n, e in active:
            ok = ok & (s[f"w_x{n}"].isnull() | (s[f"w_x{n}"] <= s[f"w_t{e.from_step}"]))
        s = s.filter(ok)
        cols: dict[str, Any] = {_U: s[_U], _TS: s[_TS], "start": s.w_start, "prev": s.w_last}
        for i in carried:
            cols[f"t{i}"] = s[_TS] if i == k else (s[f"w_t{i}"] if i < k else null)
        return s.select(**cols)


class _Strict(_Variant):
    """Step ``k`` at touch ``p`` when touches ``p-k+1..p`` match steps ``1..k`` (lags over the
    unit's touches in a fixed total order), within the window and per-step limit."""

    def unit_steps(self) -> ir.Table:
        p = self.plan
        n = len(p.query.steps)
        b = p.base
        order = [b[_TS]] + [b[c] for c in ("message_id", "event") if c in b.columns]
        flags = b.select(_U, _TS, *[c for c in ("message_id", "event") if c in b.columns],
                         **{f"m{k}": p.steps[k - 1].fill_null(False) for k in range(1, n + 1)})
        w = ibis.window(group_by=_U, order_by=[flags[c.get_name()] for c in order])

        def lag_ts(d: int) -> ir.TimestampValue:
            return flags[_TS] if d == 0 else flags[_TS].lag(d).over(w)

        cols: dict[str, Any] = {}
        for k in range(2, n + 1):
            ok = reduce(and_, [flags[f"m{j}"].lag(k - j).over(w).fill_null(False) for j in range(1, k)],
                        flags[f"m{k}"])
            ok = ok & p.in_window(flags[_TS], lag_ts(k - 1))
            for d in range(k - 1):
                gap = p.in_step_window(lag_ts(d), lag_ts(d + 1))
                if gap is not None:
                    ok = ok & gap
            cols[f"ok{k}"] = ok
            cols[f"start{k}"] = lag_ts(k - 1)
        cols["prev"] = lag_ts(1)
        s = flags.mutate(**cols)

        def times(k: int) -> dict[str, Any]:
            if not self.attempt_times:
                return {}
            return {f"t{i}": (lag_ts(k - i) if i <= k else p.null_ts()) for i in range(1, n + 1)}

        per_step = [self._per_unit(s.filter(s.m1).mutate(start=s[_TS], prev=p.null_ts(), **times(1)), 1)]
        for k in range(2, n + 1):
            rows = s.filter(s[f"ok{k}"]).mutate(start=s[f"start{k}"], **times(k))
            per_step.append(self._per_unit(rows, k))
        return reduce(lambda a, b_: a.union(b_), per_step)


class _Unordered(_Variant):
    """Anchors are the unit's step touches; for each anchor time ``t`` and step ``s`` the next
    step-``s`` time at or after ``t`` (a range window with peers); the steps whose next time is
    within ``t + window`` are ranked by that time: rank ``k`` completes ``k`` distinct steps."""

    def unit_steps(self) -> ir.Table:
        p = self.plan
        n = len(p.query.steps)
        null = p.null_ts()
        rows = reduce(lambda a, b: a.union(b), [
            p.rows(p.steps[s - 1]).select(_U, _TS, s=ibis.literal(s, "int64")) for s in range(1, n + 1)
        ])
        rw = ibis.range_window(group_by=_U, order_by=_TS, preceding=0, following=None)
        nxt = {f"n{s}": ibis.cases((rows.s == s, rows[_TS]), else_=null).min().over(rw) for s in range(1, n + 1)}
        anchors = rows.select(_U, t=rows[_TS], **nxt).distinct()
        exploded = reduce(lambda a, b: a.union(b), [
            anchors.filter(anchors[f"n{s}"].notnull() & p.in_window(anchors[f"n{s}"], anchors.t))
            .select(_U, "t", s=ibis.literal(s, "int64"), c=anchors[f"n{s}"])
            for s in range(1, n + 1)
        ])
        w = ibis.window(group_by=[_U, "t"], order_by=["c", "s"])
        ranked = exploded.mutate(step=ibis.row_number().over(w) + 1, prev_c=exploded.c.lag(1).over(w))
        by_step = ibis.window(group_by=[_U, "step"])
        ranked = ranked.mutate(first_c=ranked.c.min().over(by_step), completions=ranked.count().over(by_step))
        first = ranked.filter(ranked.c == ranked.first_c)
        first = first.mutate(latest_t=first.t.max().over(by_step))
        first = first.filter(first.t == first.latest_t)
        return first.group_by(_U, "step").aggregate(
            reached=first.c.min(),
            start=first.t.max(),
            prev=first.prev_c.min(),
            completions=first.completions.max().cast("int64"),
        ).select(_U, "step", "reached", "start", "prev", "completions")


VARIANTS: dict[str, type[_Variant]] = {"ordered": _Ordered, "strict": _Strict, "unordered": _Unordered}


# ---------------------------------------------------------------- predicates
def step_predicate(t: ir.Table, step: Step) -> ir.BooleanValue:
    """True where a touch of ``t`` matches ``step``, else False (never NULL)."""
    return _step_filter(t, step).fill_null(False)




def _step_filter(t: ir.Table, step: Step) -> ir.BooleanValue:
    """True where the touch matches ``step``; may be NULL for no match (for filters only)."""
    return reduce(and_, [_condition_predicate(t, c) for c in step.conditions])


def _condition_predicate(t: ir.Table, c: Condition) -> ir.BooleanValue:
    if c.field.startswith(PROPERTY_PREFIX):
        key = c.field[len(PROPERTY_PREFIX):]
        numeric = c.op in COMPARISONS or all(_is_number(v) for v in c.values)
        x: ir.Value = json_get_number(t.properties, key) if numeric else json_get(t.properties, key)
    else:
        x = t[c.field]
        numeric = x.type().is_numeric()
        if not (numeric or x.type().is_string()):
            raise InvalidParameterError(f"step condition '{c}': column '{c.field}' is neither text nor a number")
    values: list[Any] = list(c.values)
    if numeric:
        bad = [v for v in values if not _is_number(v)]
        if bad:
            raise InvalidParameterError(f"step condition '{c}': '{c.field}' holds numbers, got '{bad[0]}'")
        values = [float(v) for v in values]
    if c.op == "eq":
        return x == values[0] if len(values) == 1 else x.isin(values)
    if c.op == "ne":
        inside = x == values[0] if len(values) == 1 else x.isin(values)
        return ~inside | x.isnull()
    v = values[0]
    return {"gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[c.op]


def _disjoint(steps: Sequence[Step]) -> bool:
    """True when no touch can match two of ``steps``: every pair has a column both require to
    equal values from disjoint sets (typically: different event names)."""
    def equal_sets(step: Step) -> dict[str, set[str]]:
        return {c.field: set(c.values) for c in step.conditions
                if c.op == "eq" and not c.field.startswith(PROPERTY_PREFIX)}

    sets = [equal_sets(s) for s in steps]
    return all(any(f in b and not (a[f] & b[f]) for f in a)
               for i, a in enumerate(sets) for b in sets[i + 1:])


def check_step_fields(touches: ir.Table, steps: Sequence[Step]) -> None:
    """Raise :class:`UnknownNameError` (with a suggestion) when a step reads a column ``touches`` lacks."""
    columns = [c for c in touches.columns if c != "properties"]
    for step in steps:
        for f in step.fields:
            if f.startswith(PROPERTY_PREFIX):
                if "properties" not in touches.columns or len(f) == len(PROPERTY_PREFIX):
                    raise UnknownNameError("step field", f, [*columns, "properties.<key>"])
            elif f not in columns:
                raise UnknownNameError("step field", f, [*columns, "properties.<key>"])


def _plan(touches: ir.Table, q: FunnelQuery) -> _Plan:
    col = q.unit_column
    missing = [c for c in (col, _TS) if c not in touches.columns]
    if missing:
        raise UnknownNameError("column", missing[0], touches.columns)
    check_step_fields(touches, q.steps)
    check_step_fields(touches, [e.step for e in q.exclusions])
    # only the columns the funnel reads: the backend need not compute the others (stages ...)
    used = {col, _TS}
    for step in [*q.steps, *(e.step for e in q.exclusions)]:
        used |= {"properties" if f.startswith(PROPERTY_PREFIX) else f for f in step.fields}
    if q.breakdown is not None:
        used.add("properties" if q.breakdown.startswith(PROPERTY_PREFIX) else q.breakdown)
    if q.order == "strict":
        used |= {"message_id", "event"}
    kept = [c for c in touches.columns if c in used and c != _U]
    source = _passed_through(touches, set(kept))
    base = source.filter(source[col].notnull() & source[_TS].notnull()).select(*kept, **{_U: source[col].cast("string")})
    return _Plan(
        query=q,
        base=base,
        steps=tuple(_step_filter(base, s) for s in q.steps),
        exclusions=tuple(_step_filter(base, e.step) for e in q.exclusions),
        ts_type=base[_TS].type(),
        columns=tuple(touches.columns),
    )


def _passed_through(t: ir.Table, columns: set[str]) -> ir.Table:
    """``t`` without the projections on top of it that pass ``columns`` through unchanged.

    ``Workspace.touches()`` adds the journey model's stage columns (a ``CASE`` over every
    touch, JSON reads included) with a projection the funnel does not need unless a step or
    the breakdown reads them. The query shares the touches among several step scans, and
    DuckDB materialises such a shared subquery with all its columns; reading below the
    projection keeps the stage rules out of the funnel's query.
    """
    op = t.op()
    while isinstance(op, ops.Project) and all(
        isinstance(v := op.values.get(c), ops.Field) and v.name == c and v.rel == op.parent for c in columns
    ):
        op = op.parent
    return t if op is t.op() else op.to_expr()


# ---------------------------------------------------------------- breakdown
def _breakdown_values(plan: _Plan, unit_steps: ir.Table, level: ir.Table,
                      segments: Mapping[str, ir.Table]) -> ir.Table | None:
    """``unit, breakdown`` (string, NULL when absent) per unit, or None without a breakdown."""
    q = plan.query
    name = q.breakdown
    if name is None:
        return None
    b = plan.base
    if name in segments:
        return segment_values(segments, name, q.unit_column, unit_as=_U, value_as="breakdown")
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in b.columns:
        value: ir.Value = json_get(b.properties, name[len(PROPERTY_PREFIX):])
    elif name in b.columns and name not in (_U, "properties"):
        value = b[name].cast("string")
    else:
        allowed = [c for c in plan.columns if c != "properties"] + [*segments, "properties.<key>"]
        raise UnknownNameError("breakdown", name, allowed)

    k = q.attribution_step
    touches = b.select(_U, _TS, v=value)
    if k is not None:
        reached = unit_steps.filter(unit_steps.step == k).select(_U, at=unit_steps.reached)
        rows = b.filter(plan.steps[k - 1]).select(_U, _TS, v=value)
        rows = rows.join(reached, _U).filter(lambda r: r[_TS] == r.at)
    elif q.breakdown_attribution == "last_touch":
        ends = level.select(_U, at=level.reached)
        rows = touches.join(ends, _U).filter(lambda r: r[_TS] <= r.at)
        rows = rows.mutate(edge=rows[_TS].max().over(ibis.window(group_by=_U)))
        rows = rows.filter(rows[_TS] == rows.edge)
    else:  # first_touch
        rows = touches.mutate(edge=touches[_TS].min().over(ibis.window(group_by=_U)))
        rows = rows.filter(rows[_TS] == rows.edge)
    # several touches at the attributed time: the smallest non-NULL value wins
    return rows.group_by(_U).aggregate(breakdown=rows.v.min())


# ---------------------------------------------------------------- the counted attempt
def attempt_times(touches: ir.Table, query: FunnelQuery) -> ir.Table:
    """The step touches of each unit's counted attempt: ``unit`` (string id), ``level`` and
    ``t1..tn`` (the time of the attempt's step-``i`` touch; NULL beyond ``level``).

    The counted attempt is the one behind the unit's first completion of its furthest step
    (the one whose times the funnel reports). Ordered funnels: its step-``i`` touch is the
    latest successful step-``i`` touch at or before its step-``i+1`` touch — exactly the
    chain ClickHouse ``windowFunnel`` extends. Strict funnels: the consecutive touches that
    complete it. Unordered funnels have no step order, hence no such touches.
    """
    if query.order == "unordered":
        raise InvalidParameterError("an unordered funnel has no ordered step touches to anchor paths on",
                                    hint="use order ordered or strict")
    plan = _plan(touches, query)
    us = VARIANTS[query.order](plan, attempt_times=True).unit_steps()
    lv = us.group_by(_U).aggregate(level=us.step.max()).rename(_lu=_U)
    j = us.join(lv, [us[_U] == lv._lu, us.step == lv.level])
    return j.select(_U, "level", *[f"t{i}" for i in range(1, len(query.steps) + 1)])


# ---------------------------------------------------------------- saved cohorts as segments
PERSONA_PREFIX = "persona:"
"""Saved personas are cohorts named ``persona:<key>``."""
COHORT_BREAKDOWNS = ("persona", "cohort", "cohort:<name>")
MEMBER = "member"
NON_MEMBER = "non_member"


def cohort_segments(cohorts: ir.Table, touches: ir.Table, breakdown: str | None,
                    unit: str = "person") -> dict[str, ir.Table]:
    """Segment tables for breakdowns over saved cohorts (``cohorts``: ``name``, ``person_id``,
    already restricted to the workspace); ``{}`` when ``breakdown`` is not one of them.

    * ``persona``: value = the persona key of each ``persona:<key>`` cohort the unit is in;
    * ``cohort``: value = the name of each other saved cohort the unit is in;
    * ``cohort:NAME``: ``member`` or ``non_member`` of cohort NAME, for every unit of ``touches``.

    Units in no such cohort get the analysis' ``(none)`` value; a unit in several counts
    under each. For ``unit="account"`` an account holds the values of its persons (the
    ``person_id``/``account_id`` pairs of ``touches``); it is a member when one of them is.
    """
    if breakdown is None or not (breakdown in ("persona", "cohort") or breakdown.startswith("cohort:")):
        return {}
    col = UNITS.get(unit, "person_id")
    is_persona = cohorts.name.startswith(PERSONA_PREFIX)
    if breakdown == "persona":
        c = cohorts.filter(is_persona)
        seg = c.select("person_id", value=c.name.substr(len(PERSONA_PREFIX)))
    elif breakdown == "cohort":
        c = cohorts.filter(~is_persona)
        seg = c.select("person_id", value=c.name)
    else:
        name = breakdown[len("cohort:"):]
        names = [str(n) for n in cohorts.select("name").distinct().to_pyarrow().column("name").to_pylist()]
        if name not in names:
            raise UnknownNameError("cohort", name, sorted(names))
        members = cohorts.filter(cohorts.name == ibis.literal(name)).select(_m="person_id").distinct()
        units = touches.filter(touches[col].notnull()).select("person_id", *([col] if col != "person_id" else []))
        units = units.distinct()
        j = units.left_join(members, units.person_id == members._m)
        flag = ibis.cases((j._m.notnull(), 1), else_=0)
        per = j.group_by(col).aggregate(_in=flag.max())
        return {breakdown: per.select(col, value=ibis.cases((per._in == 1, ibis.literal(MEMBER)),
                                                             else_=ibis.literal(NON_MEMBER)))}
    seg = seg.distinct()
    if col != "person_id":
        pairs = touches.filter(touches[col].notnull() & touches.person_id.notnull()).select("person_id", col)
        pairs = pairs.distinct().rename(_p="person_id")
        j = seg.join(pairs, seg.person_id == pairs._p)
        seg = j.select(col, "value").distinct()
    return {breakdown: seg}


# ---------------------------------------------------------------- summary
def _durations(t: ir.Table) -> dict[str, ir.Value]:
    later = t.step > 1
    to_convert = ibis.cases((later, seconds_between(t.reached, t.start)), else_=ibis.null("float64"))
    from_prev = ibis.cases((later, seconds_between(t.reached, t.prev)), else_=ibis.null("float64"))
    return {"dur": to_convert, "dur_prev": from_prev}


def _collect(expr: ir.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return rows


def _steps_of(q: FunnelQuery, stats: Mapping[int, Mapping[str, Any]],
              hist: Mapping[int, Mapping[int, int]], edges: Sequence[int]) -> tuple[FunnelStep, ...]:
    out: list[FunnelStep] = []
    start = int(stats.get(1, {}).get("persons", 0))
    previous = start
    for k, name in enumerate(q.step_names, start=1):
        s = stats.get(k, {})
        persons = int(s.get("persons", 0))
        bins = hist.get(k, {})
        out.append(FunnelStep(
            step=name,
            index=k,
            persons=persons,
            totals=int(s.get("totals", 0) or 0),
            conversion_from_start=persons / start if start else 0.0,
            conversion_from_previous=(persons / previous if previous else 0.0),
            drop_offs=previous - persons,
            median_seconds_to_convert=_num(s.get("median")),
            p90_seconds_to_convert=_num(s.get("p90")),
            mean_seconds_to_convert=_num(s.get("mean")),
            median_seconds_from_previous=_num(s.get("median_prev")),
            histogram=tuple(HistogramBin(edges[i], edges[i + 1], int(bins.get(i, 0)))
                            for i in range(len(edges) - 1)) if k > 1 else (),
        ))
        previous = persons
    return tuple(out)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def funnel(touches: ir.Table, query: FunnelQuery, *, segments: Mapping[str, ir.Table] | None = None) -> FunnelResult:
    """Compute the funnel ``query`` over ``touches`` (one query on the backend).

    ``touches`` needs ``ts`` (UTC), the unit column (``person_id`` or ``account_id``;
    rows where it is NULL are ignored) and the columns the steps and breakdown read
    (``properties`` as JSON text). ``segments`` maps breakdown names that are not
    touch columns (``persona``, ``cohort``) to tables with the unit column and
    ``value``; a unit with several values counts under each.
    """
    if not isinstance(query, FunnelQuery):
        raise InvalidParameterError("funnel() needs a FunnelQuery")
    q = query
    plan = _plan(touches, q)
    variant = VARIANTS[q.order](plan)
    unit_steps = variant.unit_steps()
    level = _levels(unit_steps, len(q.steps))
    values = _breakdown_values(plan, unit_steps, level, segments or {})
    units = _units(level, values, q.breakdown_limit)

    edges = histogram_edges(q.window_seconds)
    if variant.scanned is not None and values is None and q.trend_period is None:
        records = _funnel_scan.summary_records(variant.scanned, edges)
    else:
        records = _collect(_summary(unit_steps, level, units if values is not None else None, q, edges))

    stats: dict[str | None, dict[int, dict[str, Any]]] = {}
    hist: dict[str | None, dict[int, dict[int, int]]] = {}
    trend_counts: dict[tuple[str | None, date], dict[int, int]] = {}
    rank: dict[str, int] = {}
    for r in records:
        g, k = r["group"], int(r["step"])
        if r["kind"] == "stats":
            stats.setdefault(g, {})[k] = r
            if g is not None:
                rank[g] = int(r["rank"])
        elif r["kind"] == "hist":
            hist.setdefault(g, {}).setdefault(k, {})[int(r["bin"])] = int(r["persons"])
        else:
            trend_counts.setdefault((g, r["period"]), {})[k] = int(r["persons"])

    overall = _steps_of(q, stats.get(None, {}), hist.get(None, {}), edges)
    order = sorted(rank, key=lambda g: (rank[g], g))
    breakdown = tuple(BreakdownFunnel(g, _steps_of(q, stats[g], hist.get(g, {}), edges)) for g in order)
    position = {g: i for i, g in enumerate([None, *order])}
    trend = tuple(
        TrendRow(period=d, breakdown=g, persons=tuple(c.get(k, 0) for k in range(1, len(q.steps) + 1)))
        for (g, d), c in sorted(trend_counts.items(), key=lambda kv: (position.get(kv[0][0], -1), kv[0][1]))
    )
    return FunnelResult(query=q, steps=overall, breakdown=breakdown, trend=trend, units=units)


def _levels(unit_steps: ir.Table, n: int) -> ir.Table:
    """``unit, level, start, reached``: each unit's furthest step and its counted attempt — the
    first completion of that step (``start`` = the attempt's start, ``reached`` = completion)."""
    at_level: dict[str, list[ir.Value]] = {"start": [], "reached": []}
    for k in range(n, 0, -1):
        for col, values in at_level.items():
            values.append(ibis.cases((unit_steps.step == k, unit_steps[col])).max())
    return unit_steps.group_by(_U).aggregate(
        level=unit_steps.step.max(), start=ibis.coalesce(*at_level["start"]),
        reached=ibis.coalesce(*at_level["reached"]),
    )


def _units(level: ir.Table, values: ir.Table | None, limit: int) -> ir.Table:
    """``unit, level, breakdown, rank``: one row per unit that entered (and breakdown value).

    Values are ranked by entering units (ties by value); values ranked beyond ``limit``
    become ``(other)``, whose rank is ``limit + 1``.
    """
    if values is None:
        return level.select(_U, "level", breakdown=ibis.null("string"), rank=ibis.null("int64"))
    filled = values.mutate(breakdown=values.breakdown.fill_null(NONE_LABEL))
    ub = level.select(_U, "level").left_join(filled, _U).select(_U, "level", "breakdown")
    ub = ub.mutate(breakdown=ub.breakdown.fill_null(NONE_LABEL))
    counts = ub.group_by("breakdown").aggregate(n=ub.count())
    ranked = counts.mutate(pos=ibis.row_number().over(ibis.window(order_by=[ibis.desc("n"), "breakdown"])) + 1)
    inside = ranked.pos <= limit
    labels = ranked.select(
        _b="breakdown",
        label=ibis.cases((inside, ranked.breakdown), else_=ibis.literal(OTHER_LABEL)),
        rank=ibis.cases((inside, ranked.pos), else_=ibis.literal(limit + 1, "int64")).cast("int64"),
    )
    out = ub.join(labels, ub.breakdown == labels._b)
    return out.select(_U, "level", breakdown=out.label, rank=out.rank)



def _summary(unit_steps: ir.Table, level: ir.Table, units: ir.Table | None, q: FunnelQuery,
             edges: Sequence[int]) -> ir.Table:
    """Every number of the result as one table (``kind`` = stats | hist | trend), so the
    backend runs the funnel once: per group (NULL = everyone, else a breakdown value) and step."""
    rows = unit_steps
    if q.trend_period is not None:
        rows = rows.join(level.select(_U, entry=level.start), _U)
    rows = rows.mutate(group=ibis.null("string"), rank=ibis.null("int64"), **_durations(rows))
    if units is not None:
        by_value = rows.drop("group", "rank").join(units.select(_U, group=units.breakdown, rank=units.rank), _U)
        rows = _nullable(rows).union(_nullable(by_value.select(*rows.columns)))
    null_f = ibis.null("float64")
    null_i = ibis.null("int64")
    common = {"bin": null_i, "period": ibis.null("date"), "totals": null_i, "median": null_f, "p90": null_f,
              "mean": null_f, "median_prev": null_f, "rank": null_i}

    def shaped(t: ir.Table, kind: str, **cols: Any) -> ir.Table:
        values = {**common, **cols}
        return t.select(kind=ibis.literal(kind), group=t.group, step=t.step, persons=t.persons.cast("int64"),
                        **values)

    stats = rows.group_by("group", "step").aggregate(
        persons=rows.count(), totals=rows.completions.sum().cast("int64"), median=rows.dur.quantile(0.5),
        p90=rows.dur.quantile(0.9), mean=rows.dur.mean(), median_prev=rows.dur_prev.quantile(0.5),
        rank=rows.rank.min(),
    )
    parts = [shaped(stats, "stats", totals=stats.totals, median=stats.median, p90=stats.p90, mean=stats.mean,
                    median_prev=stats.median_prev, rank=stats.rank)]
    inner = edges[1:-1]
    later = rows.filter(rows.step > 1)
    bins = (ibis.cases(*((later.dur < e, i) for i, e in enumerate(inner)), else_=len(inner))
            if inner else ibis.literal(0))
    later = later.mutate(bin=bins.cast("int64"))
    hist = later.group_by("group", "step", "bin").aggregate(persons=later.count())
    parts.append(shaped(hist, "hist", bin=hist.bin))
    if q.trend_period is not None:
        dated = rows.mutate(period=rows.entry.truncate(PERIODS[q.trend_period]).date())
        trend = dated.group_by("group", "period", "step").aggregate(persons=dated.count())
        parts.append(shaped(trend, "trend", period=trend.period))
    return reduce(lambda a, b: a.union(b), parts)


__all__ = [
    "BreakdownFunnel",
    "Condition",
    "Exclusion",
    "FunnelPeople",
    "FunnelQuery",
    "FunnelResult",
    "FunnelStep",
    "HistogramBin",
    "Step",
    "TrendRow",
    "attempt_times",
    "cohort_segments",
    "funnel",
    "step_predicate",
    "step_ref",
]

