"""A/B experiment readout: conversion per variant, two-proportion tests, SRM and CUPED.

Semantics (``docs/experiments.md`` has the long form):

* **Variant and exposure.** ``variant="properties.KEY"`` (or a touch column): a unit
  (person or account) is exposed at its first touch carrying a value; its variant is
  that value. Units seen with two or more different values are *mixed*: left out and
  counted. ``variant="trait:KEY"``: the variant is the trait of the unit's newest
  ``people`` (or ``accounts``) row; exposure is the unit's first touch.
* **Conversion.** A unit converts when it has a touch matching ``goal`` (an event name
  or a funnel step filter such as ``stage=decision``) at or after its exposure, and, with
  a ``window``, no later than ``window`` after it.
* **Per variant**: units, conversions, rate with the Wilson interval.
* **Each variant against the control** (``control``, default: a variant named
  control/a/baseline, else the first by name): difference ``p_t − p_c`` with the
  unpooled (Wald) interval; relative lift ``p_t / p_c − 1`` with the interval of the log
  risk ratio (Katz: ``se = sqrt((1−p_t)/x_t + (1−p_c)/x_c)``); two-sided p-value of the
  pooled two-proportion z-test (equal to Pearson's chi-square on the 2×2 table without
  continuity correction).
* **Sample-ratio mismatch**: Pearson chi-square goodness of fit of the units per variant
  against ``expected_split`` (equal by default); SRM when its p-value < ``srm_alpha``.
* **CUPED** (optional): covariate ``X`` per unit measured before exposure; ``θ =
  cov(X, Y) / var(X)`` over all units; each variant's adjusted rate ``ȳ_i − θ (x̄_i − x̄)``
  and variance ``var_i(Y) − 2θ cov_i(X, Y) + θ² var_i(X)``; the difference is tested
  with a z-test.
* **Not enough data** when a variant has fewer than ``min_units`` units, fewer than
  ``min_conversions`` conversions or non-conversions (the normal approximation needs
  them), or there are fewer than two variants. The readout then says so and why; the
  numbers are still reported but carry no verdict.
* **Breakdown** (optional): ``breakdown`` names a segment passed as ``segments=``
  (``persona``, ``cohort``, ``cohort:NAME``), a touch column or ``properties.KEY`` (read on
  the unit's first touch). The whole readout — rates, tests, SRM, CUPED (θ within the
  value), enough-data rules — is repeated on the units of each value; a unit with several
  segment values is read out under each, units without one under ``(none)``.

All per-unit work happens on the backend (one query of sufficient statistics per
variant); the tests are closed forms over those sums.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from scipy import stats as _st

from journeylens.analyses._relations import segment_values
from journeylens.analyses._time import parse_duration
from journeylens.analyses.funnel import NONE_LABEL, Step, check_step_fields, step_predicate
from journeylens.analyses.surveys import wilson_interval
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.functions import json_get, json_get_number, unix_micros

PROPERTY_PREFIX = "properties."
TRAIT_PREFIX = "trait:"
PRE_PREFIX = "pre"
UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
CONTROL_NAMES = ("control", "a", "baseline", "original", "default")
DEFAULT_PRE_WINDOW = "30d"


# ============================================================================ closed forms
def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class ProportionTest:
    """Treatment against control on two binomial shares."""

    difference: float
    lower: float
    upper: float
    lift: float | None
    lift_lower: float | None
    lift_upper: float | None
    z: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"difference": self.difference, "lower": self.lower, "upper": self.upper, "lift": self.lift,
                "lift_lower": self.lift_lower, "lift_upper": self.lift_upper, "z": self.z,
                "p_value": self.p_value}


def two_proportion_test(n_c: int, x_c: int, n_t: int, x_t: int, *, confidence: float = 0.95) -> ProportionTest:
    """Difference ``p_t − p_c`` (Wald interval, unpooled), relative lift (Katz log risk
    ratio interval; None when the control or treatment has no conversion) and the pooled
    two-sided z-test. Needs ``n_c, n_t > 0``."""
    if n_c <= 0 or n_t <= 0:
        raise InvalidParameterError("two_proportion_test needs units in both groups")
    z_c = _z(confidence)
    p_c, p_t = x_c / n_c, x_t / n_t
    diff = p_t - p_c
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    z = diff / se0 if se0 > 0 else None
    p_value = float(2 * _st.norm.sf(abs(z))) if z is not None else None
    lift = lo = hi = None
    if x_c > 0 and x_t > 0:
        rr = p_t / p_c
        se_log = math.sqrt((1 - p_t) / x_t + (1 - p_c) / x_c)
        lift = rr - 1
        lo, hi = rr * math.exp(-z_c * se_log) - 1, rr * math.exp(z_c * se_log) - 1
    elif x_c > 0:
        lift = -1.0
    return ProportionTest(diff, diff - z_c * se, diff + z_c * se, lift, lo, hi, z, p_value)


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio mismatch: observed units per variant against the expected split."""

    observed: dict[str, int]
    expected: dict[str, float]
    """Expected units per variant."""
    chi2: float
    p_value: float
    alpha: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {"observed": self.observed, "expected": self.expected, "chi2": self.chi2, "p_value": self.p_value,
                "alpha": self.alpha, "mismatch": self.mismatch}


def srm_check(observed: Mapping[str, int], split: Mapping[str, float] | None = None, *,
              alpha: float = 0.001) -> SrmCheck:
    """Pearson chi-square goodness of fit (``k − 1`` degrees of freedom) of ``observed``
    units against ``split`` (shares, normalised to sum 1; equal when None)."""
    names = list(observed)
    total = sum(observed.values())
    weights = {v: float((split or {}).get(v, 0 if split else 1)) for v in names}
    wsum = sum(weights.values())
    if wsum <= 0 or any(w <= 0 for w in weights.values()):
        raise InvalidParameterError("expected split needs a positive share for every variant",
                                    hint=f"variants: {', '.join(names)}")
    expected = {v: total * weights[v] / wsum for v in names}
    chi2 = sum((observed[v] - expected[v]) ** 2 / expected[v] for v in names if expected[v] > 0)
    p = float(_st.chi2.sf(chi2, len(names) - 1)) if len(names) > 1 else 1.0
    return SrmCheck(dict(observed), expected, float(chi2), p, alpha)


def units_needed(p_control: float, relative_mde: float, *, confidence: float = 0.95, power: float = 0.8) -> int | None:
    """Units per variant for the two-sided two-proportion z-test to detect a relative lift
    ``relative_mde`` over ``p_control`` with ``power``:
    ``n = (z_{α/2} sqrt(2 p̄ (1−p̄)) + z_β sqrt(p1(1−p1) + p2(1−p2)))² / (p2 − p1)²``,
    ``p̄ = (p1 + p2)/2``. None when undefined (rate 0 or 1, or lift 0)."""
    p1 = p_control
    p2 = p1 * (1 + relative_mde)
    if not 0 < p1 < 1 or not 0 < p2 < 1 or p1 == p2:
        return None
    pbar = (p1 + p2) / 2
    za, zb = _z(confidence), float(_st.norm.ppf(power))
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    return math.ceil(n)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one variant: units, ``Σy`` (conversions), ``Σx``, ``Σx²``, ``Σxy``."""

    n: int
    sy: float
    sx: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def var_y(self) -> float:
        m = self.sy / self.n
        return max(self.sy / self.n - m * m, 0.0) * self.n / (self.n - 1) if self.n > 1 else 0.0

    def var_x(self) -> float:
        m = self.sx / self.n
        return max(self.sxx / self.n - m * m, 0.0) * self.n / (self.n - 1) if self.n > 1 else 0.0

    def cov(self) -> float:
        return (self.sxy / self.n - (self.sx / self.n) * (self.sy / self.n)) * self.n / (self.n - 1) \
            if self.n > 1 else 0.0


@dataclass(frozen=True)
class CupedTest:
    """The CUPED-adjusted comparison of one variant with the control."""

    theta: float
    rate_control: float
    rate: float
    difference: float
    lower: float
    upper: float
    p_value: float | None
    variance_reduction: float
    """1 − var(adjusted) / var(unadjusted) of the difference."""

    def to_dict(self) -> dict[str, Any]:
        return {"theta": self.theta, "rate_control": self.rate_control, "rate": self.rate,
                "difference": self.difference, "lower": self.lower, "upper": self.upper,
                "p_value": self.p_value, "variance_reduction": self.variance_reduction}


def cuped_theta(groups: Sequence[Moments]) -> float:
    """θ = cov(X, Y) / var(X) over all units of ``groups`` (0 when X does not vary)."""
    n = sum(g.n for g in groups)
    pooled = Moments(n, sum(g.sy for g in groups), sum(g.sx for g in groups), sum(g.sxx for g in groups),
                     sum(g.sxy for g in groups))
    vx = pooled.var_x()
    return pooled.cov() / vx if vx > 0 else 0.0


def cuped_test(control: Moments, treatment: Moments, theta: float, mean_x: float, *,
               confidence: float = 0.95) -> CupedTest:
    """Adjusted means ``ȳ − θ(x̄ − mean_x)`` and the z-test of their difference."""
    def adjusted(g: Moments) -> tuple[float, float]:
        mean = g.sy / g.n - theta * (g.sx / g.n - mean_x)
        var = max(g.var_y() - 2 * theta * g.cov() + theta * theta * g.var_x(), 0.0)
        return mean, var

    (mc, vc), (mt, vt) = adjusted(control), adjusted(treatment)
    diff = mt - mc
    se = math.sqrt(vc / control.n + vt / treatment.n)
    raw_se = math.sqrt(control.var_y() / control.n + treatment.var_y() / treatment.n)
    h = _z(confidence) * se
    p = float(2 * _st.norm.sf(abs(diff / se))) if se > 0 else None
    reduction = 1 - (se * se) / (raw_se * raw_se) if raw_se > 0 else 0.0
    return CupedTest(theta, mc, mt, diff, diff - h, diff + h, p, reduction)


# ============================================================================ request model
class ExperimentQuery(BaseModel):
    """``variant``: ``properties.KEY``, a touch column, or ``trait:KEY``; ``goal``: an event
    name or step filter (``stage=decision``, ``event=purchase&properties.total>=50``);
    ``window``: longest time from exposure to conversion (None = any time after);
    ``cuped_covariate``: ``pre`` (goal touches before exposure), ``pre:STEP`` (touches
    matching STEP before exposure) — both counted within ``pre_window`` — or ``trait:KEY``
    (a numeric trait). ``expected_split``: variant -> share (equal when empty). ``breakdown``:
    a segment name (``persona``, ``cohort:NAME``), a touch column or ``properties.KEY`` — the
    readout is repeated per value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: str
    goal: Step
    window: str | int | None = None
    control: str | None = None
    unit: str = "person"
    confidence: float = 0.95
    expected_split: dict[str, float] = {}
    srm_alpha: float = 0.001
    min_units: int = 100
    min_conversions: int = 5
    cuped_covariate: str | None = None
    pre_window: str | int = DEFAULT_PRE_WINDOW
    mde: float = 0.1
    """Relative lift the ``units_needed`` figure is computed for."""
    breakdown: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid experiment query: " + "; ".join(parts)) from None
        self._validate()

    @field_validator("goal", mode="before")
    @classmethod
    def _goal(cls, v: Any) -> Any:
        return Step.parse(v) if isinstance(v, str) else v

    def _validate(self) -> None:
        v = self.variant.strip()
        if not v or v in (PROPERTY_PREFIX.rstrip("."), TRAIT_PREFIX) or v.endswith((".", ":")):
            raise InvalidParameterError(f"variant '{self.variant}' names no property or trait",
                                        hint="write properties.KEY or trait:KEY")
        if self.unit not in UNITS:
            raise UnknownNameError("unit", self.unit, UNITS)
        if not 0.5 <= self.confidence <= 0.999:
            raise InvalidParameterError(f"confidence must be between 0.5 and 0.999, got {self.confidence}")
        if not 0 < self.srm_alpha < 1:
            raise InvalidParameterError(f"srm_alpha must be between 0 and 1, got {self.srm_alpha}")
        if self.min_units < 1 or self.min_conversions < 0:
            raise InvalidParameterError("min_units must be at least 1 and min_conversions at least 0")
        if self.mde <= 0:
            raise InvalidParameterError(f"mde must be positive, got {self.mde}")
        if self.breakdown is not None and not self.breakdown.strip():
            raise InvalidParameterError("breakdown is empty", hint="persona, cohort:NAME, a column or properties.KEY")
        if self.window is not None:
            parse_duration(self.window, name="window")
        parse_duration(self.pre_window, name="pre_window")
        if any(s <= 0 for s in self.expected_split.values()):
            raise InvalidParameterError("expected split shares must be positive")
        c = self.cuped_covariate
        if c is not None and not (c == PRE_PREFIX or (c.startswith(PRE_PREFIX + ":") and len(c) > 4)
                                  or (c.startswith(TRAIT_PREFIX) and len(c) > len(TRAIT_PREFIX))):
            raise InvalidParameterError(f"cannot read the CUPED covariate '{c}'",
                                        hint="write pre, pre:STEP (e.g. pre:purchase) or trait:KEY")

    @property
    def window_seconds(self) -> int | None:
        return None if self.window is None else parse_duration(self.window, name="window")

    @property
    def pre_window_seconds(self) -> int:
        return parse_duration(self.pre_window, name="pre_window")

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]


def parse_split(text: str | None) -> dict[str, float]:
    """``A=50,B=50`` (or ``A=0.5,B=0.5``) -> ``{"A": 50.0, "B": 50.0}``."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            raise InvalidParameterError(f"cannot read the split '{part}'", hint="write A=50,B=50") from None
        if not sep or not name.strip():
            raise InvalidParameterError(f"cannot read the split '{part}'", hint="write A=50,B=50")
    return out


# ============================================================================ result
@dataclass(frozen=True)
class VariantRow:
    variant: str
    units: int
    conversions: int
    rate: float
    lower: float
    upper: float
    is_control: bool
    test: ProportionTest | None
    """Against the control (None for the control)."""
    cuped: CupedTest | None = None
    covariate_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "units": self.units, "conversions": self.conversions, "rate": self.rate,
                "lower": self.lower, "upper": self.upper, "is_control": self.is_control,
                "test": self.test.to_dict() if self.test else None,
                "cuped": self.cuped.to_dict() if self.cuped else None, "covariate_mean": self.covariate_mean}

    @staticmethod
    def flat_columns() -> list[str]:
        return ["variant", "control", "units", "conversions", "rate", "rate_lower", "rate_upper", "difference",
                "difference_lower", "difference_upper", "lift", "lift_lower", "lift_upper", "p_value",
                "cuped_difference", "cuped_lower", "cuped_upper", "cuped_p_value"]

    def flat(self) -> dict[str, Any]:
        t = self.test
        c = self.cuped
        return {"variant": self.variant, "control": self.is_control, "units": self.units,
                "conversions": self.conversions, "rate": self.rate, "rate_lower": self.lower,
                "rate_upper": self.upper, "difference": t.difference if t else None,
                "difference_lower": t.lower if t else None, "difference_upper": t.upper if t else None,
                "lift": t.lift if t else None, "lift_lower": t.lift_lower if t else None,
                "lift_upper": t.lift_upper if t else None, "p_value": t.p_value if t else None,
                "cuped_difference": c.difference if c else None, "cuped_lower": c.lower if c else None,
                "cuped_upper": c.upper if c else None, "cuped_p_value": c.p_value if c else None}


@dataclass(frozen=True)
class ExperimentResult:
    query: ExperimentQuery
    variants: tuple[VariantRow, ...]
    control: str | None
    srm: SrmCheck | None
    status: str
    """``ok`` or ``not_enough_data``."""
    reasons: tuple[str, ...]
    """Why the data are not enough (empty when ok)."""
    mixed_units: int
    """Units seen in two or more variants, left out."""
    units_needed: int | None
    """Units per variant to detect a relative lift of ``query.mde`` at the control's rate."""
    breakdown: tuple[BreakdownExperiment, ...] = ()
    """With ``query.breakdown``: the readout of each value's units (largest first)."""

    @property
    def enough_data(self) -> bool:
        return self.status == "ok"

    def verdict(self) -> str:
        """One sentence: not enough data, SRM, or the best significant variant."""
        alpha = 1 - self.query.confidence
        if not self.enough_data:
            return "not enough data: " + "; ".join(self.reasons)
        if self.srm is not None and self.srm.mismatch:
            return (f"sample-ratio mismatch (p = {self.srm.p_value:.2g}): the split differs from the expected one; "
                    "fix the assignment before reading the result")
        winners = [v for v in self.variants if v.test and v.test.p_value is not None and v.test.p_value < alpha]
        if not winners:
            return f"no significant difference to {self.control} at {self.query.confidence:.0%} confidence"
        parts = [f"{v.variant} {'+' if v.test and v.test.difference > 0 else ''}{(v.test.lift or 0):.1%} relative "
                 f"(p = {v.test.p_value:.2g})" for v in winners if v.test and v.test.p_value is not None]
        return f"significant against {self.control}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {"variant": q.variant, "goal": q.goal.name, "window_seconds": q.window_seconds, "unit": q.unit,
                "confidence": q.confidence, "control": self.control, "status": self.status,
                "reasons": list(self.reasons), "verdict": self.verdict(), "mixed_units": self.mixed_units,
                "units_needed": self.units_needed, "mde": q.mde, "cuped_covariate": q.cuped_covariate,
                "srm": self.srm.to_dict() if self.srm else None,
                "variants": [v.to_dict() for v in self.variants],
                **({"breakdown": {"by": q.breakdown, "values": [b.to_dict() for b in self.breakdown]}}
                   if q.breakdown is not None else {})}

    def to_pandas(self) -> pd.DataFrame:
        """One row per variant; with a breakdown one row per breakdown value and variant (column
        ``breakdown`` first)."""
        if self.query.breakdown is not None:
            rows = [{"breakdown": b.value, **v.flat()} for b in self.breakdown for v in b.result.variants]
            cols = ["breakdown", *(VariantRow.flat_columns())]
            return pd.DataFrame(rows, columns=cols)
        return pd.DataFrame([v.flat() for v in self.variants])

    def by_value(self, value: str) -> ExperimentResult:
        """The readout of breakdown value ``value``."""
        for b in self.breakdown:
            if b.value == value:
                return b.result
        raise UnknownNameError(f"{self.query.breakdown or 'breakdown'} value", value, [b.value for b in self.breakdown])

    def figure(self) -> Any:
        """Conversion rate per variant with its interval."""
        import plotly.graph_objects as go

        v = self.variants
        fig = go.Figure(go.Bar(
            x=[r.variant for r in v], y=[r.rate for r in v],
            error_y={"type": "data", "symmetric": False, "array": [r.upper - r.rate for r in v],
                     "arrayminus": [r.rate - r.lower for r in v]},
            text=[f"{r.rate:.1%} (n={r.units})" for r in v], textposition="auto",
        ))
        verdict = self.verdict()
        short = verdict if len(verdict) <= 70 else verdict[:verdict.rfind(" ", 0, 67)] + " …"
        # the full verdict is in to_dict() and the tables; the chart title must fit a dashboard card
        fig.update_layout(title={"text": f"{self.query.goal.name} by {self.query.variant}<br><sup>{short}</sup>"},
                          yaxis={"tickformat": ".0%", "title": "conversion"})
        return fig


@dataclass(frozen=True)
class BreakdownExperiment:
    """The readout of one breakdown value's units."""

    value: str
    result: ExperimentResult

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"value": self.value, "control": r.control, "status": r.status, "reasons": list(r.reasons),
                "verdict": r.verdict(), "mixed_units": r.mixed_units, "units_needed": r.units_needed,
                "srm": r.srm.to_dict() if r.srm else None, "variants": [v.to_dict() for v in r.variants]}


# ============================================================================ computation
_U = "_unit"


def _micros(ts: ir.TimestampValue) -> ir.IntegerValue:
    value: ir.IntegerValue = unix_micros(ts)
    return value


def _exposures(t: ir.Table, q: ExperimentQuery, people: ir.Table | None) -> ir.Table:
    """``_unit, exposed_at (µs), variant, variants`` per unit."""
    name = q.variant.strip()
    if name.startswith(TRAIT_PREFIX):
        if people is None:
            raise InvalidParameterError(f"variant '{name}' reads traits: pass the people (or accounts) table")
        col = q.unit_column
        if col not in people.columns or "traits" not in people.columns:
            raise InvalidParameterError(f"the traits table needs columns {col} and traits")
        key = name[len(TRAIT_PREFIX):]
        traits = people.select(_tu=people[col].cast("string"), variant=json_get(people.traits, key))
        traits = traits.filter(traits.variant.notnull() & traits._tu.notnull())
        first = t.group_by(_U).aggregate(exposed_at=_micros(t.ts).min())
        joined = first.join(traits, first[_U] == traits._tu)
        per = joined.group_by(_U).aggregate(exposed_at=joined.exposed_at.min(), variant=joined.variant.min(),
                                            variants=joined.variant.nunique())
        return per
    if name.startswith(PROPERTY_PREFIX):
        if "properties" not in t.columns:
            raise UnknownNameError("variant", name, [c for c in t.columns if c != _U])
        value: ir.StringValue = json_get(t.properties, name[len(PROPERTY_PREFIX):])
    elif name in t.columns and name not in (_U, "properties", "ts"):
        value = t[name].cast("string")
    else:
        allowed = [c for c in t.columns if c not in (_U, "properties", "ts")]
        raise UnknownNameError("variant", name, [*allowed, "properties.<key>", "trait:<key>"])
    rows = t.select(_U, _at=_micros(t.ts), _v=value)
    rows = rows.filter(rows._v.notnull())
    return rows.group_by(_U).aggregate(exposed_at=rows._at.min(), variant=rows._v.min(), variants=rows._v.nunique())


def _covariate(t: ir.Table, exp: ir.Table, q: ExperimentQuery, people: ir.Table | None) -> ir.Table | None:
    """``_unit, x`` (float) per exposed unit, or None without CUPED."""
    c = q.cuped_covariate
    if c is None:
        return None
    if c.startswith(TRAIT_PREFIX):
        if people is None:
            raise InvalidParameterError(f"covariate '{c}' reads traits: pass the people (or accounts) table")
        col = q.unit_column
        x = people.select(_cu=people[col].cast("string"), x=json_get_number(people.traits, c[len(TRAIT_PREFIX):]))
        j = exp.select(_U).left_join(x, exp[_U] == x._cu)
        return j.group_by(_U).aggregate(x=j.x.max().fill_null(0.0))
    step = q.goal if c == PRE_PREFIX else Step.parse(c[len(PRE_PREFIX) + 1:])
    check_step_fields(t, [step])
    hits = t.filter(step_predicate(t, step)).select(_hu=t[_U], _at=_micros(t.ts))
    j = exp.select(_U, "exposed_at").left_join(hits, exp[_U] == hits._hu)
    before = (j._at < j.exposed_at) & (j._at >= j.exposed_at - ibis.literal(q.pre_window_seconds * 1_000_000, "int64"))
    one = ibis.cases((before.fill_null(False), 1.0), else_=0.0)
    return j.group_by(_U).aggregate(x=one.sum())


def _labels(t: ir.Table, q: ExperimentQuery, segments: Mapping[str, ir.Table]) -> ir.Table | None:
    """``_bu`` (unit as text), ``b`` (breakdown value) per unit and value; None without a breakdown."""
    name = q.breakdown
    if name is None:
        return None
    col = q.unit_column
    if name in segments:
        seg = segment_values(segments, name, col, unit_as="_bu", value_as="b")
        return seg.filter(seg._bu.notnull())
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in t.columns:
        value: ir.StringValue = json_get(t.properties, name[len(PROPERTY_PREFIX):])
    elif name in t.columns and name not in (_U, "properties", "traits"):
        value = t[name].cast("string")
    else:
        allowed = [c for c in t.columns if c not in (_U, "properties", "traits")]
        raise UnknownNameError("breakdown", name, [*allowed, *segments, "persona", "cohort:<name>",
                                                   "properties.<key>"])
    rows = t.select(_bu=t[_U], _at=_micros(t.ts), v=value)
    rows = rows.mutate(edge=rows._at.min().over(ibis.window(group_by="_bu")))
    rows = rows.filter(rows._at == rows.edge)
    return rows.group_by("_bu").aggregate(b=rows.v.min())


def experiment(touches: ir.Table, query: ExperimentQuery, *, people: ir.Table | None = None,
               segments: Mapping[str, ir.Table] | None = None) -> ExperimentResult:
    """Read out the A/B experiment ``query`` over ``touches`` (see the module doc).

    ``touches``: ``ws.touches(model)`` (unit column, ``ts``, ``properties`` and the columns
    the goal reads). ``people``: ``ws.people()`` (or ``ws.accounts()`` for unit=account),
    needed for ``trait:`` variants or covariates. ``segments``: breakdown names that are not
    touch columns (``persona``, ``cohort:NAME``; ``Workspace.segments``) mapped to tables with
    the unit column and ``value``. One backend query computes the sufficient statistics per
    variant (and breakdown value).
    """
    if not isinstance(query, ExperimentQuery):
        raise InvalidParameterError("experiment() needs an ExperimentQuery")
    q = query
    col = q.unit_column
    if col not in touches.columns or "ts" not in touches.columns:
        raise UnknownNameError("column", col if col not in touches.columns else "ts", touches.columns)
    check_step_fields(touches, [q.goal])
    t = touches.filter(touches[col].notnull())
    t = t.mutate(**{_U: t[col].cast("string")})
    exp = _exposures(t, q, people)

    goal = t.filter(step_predicate(t, q.goal)).select(_gu=t[_U], _gat=_micros(t.ts))
    j = exp.select(_U, "exposed_at").join(goal, exp[_U] == goal._gu)
    ok = j._gat >= j.exposed_at
    if q.window_seconds is not None:
        ok = ok & (j._gat <= j.exposed_at + ibis.literal(q.window_seconds * 1_000_000, "int64"))
    conv = j.filter(ok).select(_cu=j[_U]).distinct()
    units = exp.left_join(conv, exp[_U] == conv._cu)
    units = units.mutate(y=ibis.cases((units._cu.notnull(), 1.0), else_=0.0)).drop("_cu")
    cov = _covariate(t, exp, q, people)
    if cov is not None:
        cov = cov.rename(_xu=_U)
        units = units.left_join(cov, units[_U] == cov._xu).drop("_xu")
        units = units.mutate(x=units.x.fill_null(0.0))
    else:
        units = units.mutate(x=ibis.literal(0.0))
    labels = _labels(t, q, dict(segments or {}))
    parts = [units.mutate(b=ibis.null("string"))]
    if labels is not None:
        lj = units.left_join(labels, units[_U] == labels._bu)
        parts.append(lj.select(*units.columns, b=lj.b.fill_null(NONE_LABEL)))
    records: list[dict[str, Any]] = []
    for part in parts:
        single = part.filter(part.variants == 1)
        stats = single.group_by("b", "variant").aggregate(
            n=single.count(), sy=single.y.sum(), sx=single.x.sum(), sxx=(single.x * single.x).sum(),
            sxy=(single.x * single.y).sum(),
        ).mutate(kind=ibis.literal("variant"))
        mixed = part.filter(part.variants > 1)
        mixed_row = mixed.group_by("b").aggregate(n=mixed.count()).mutate(
            variant=ibis.null("string"), sy=ibis.literal(0.0), sx=ibis.literal(0.0), sxx=ibis.literal(0.0),
            sxy=ibis.literal(0.0), kind=ibis.literal("mixed"))
        records += stats.union(mixed_row.select(*stats.columns)).to_pyarrow().to_pylist()

    def readout(value: str | None, control: str | None = None, lenient: bool = False) -> ExperimentResult:
        mine = [r for r in records if r["b"] == value]
        moments = {str(r["variant"]): Moments(int(r["n"]), float(r["sy"] or 0), float(r["sx"] or 0),
                                              float(r["sxx"] or 0), float(r["sxy"] or 0))
                   for r in mine if r["kind"] == "variant"}
        mixed_units = sum(int(r["n"]) for r in mine if r["kind"] == "mixed")
        return _readout(q, moments, mixed_units, control=control, lenient=lenient)

    overall = readout(None)
    if labels is None:
        return overall
    size: dict[str, int] = defaultdict(int)
    for r in records:
        if r["b"] is not None:
            size[str(r["b"])] += int(r["n"])
    values = sorted(size, key=lambda v: (-size[v], v))
    # every value is compared with the overall control when it has that variant
    breakdown = tuple(BreakdownExperiment(v, readout(v, overall.control, lenient=True)) for v in values)
    return replace(overall, breakdown=breakdown)


def _pick_control(names: Sequence[str], wanted: str | None, lenient: bool = False) -> str | None:
    if wanted is not None:
        if wanted not in names and lenient:
            return _pick_control(names, None)
        if wanted not in names:
            raise UnknownNameError("control variant", wanted, names)
        return wanted
    for n in names:
        if n.lower() in CONTROL_NAMES:
            return n
    return names[0] if names else None


def _readout(q: ExperimentQuery, moments: Mapping[str, Moments], mixed_units: int, *, control: str | None = None,
             lenient: bool = False) -> ExperimentResult:
    """The statistics of an experiment from each variant's sufficient statistics. ``control``
    overrides ``q.control``; ``lenient`` (a breakdown value's readout): a control or split
    variant the value does not have is no error (the default control, the split's other shares)."""
    names = sorted(moments)
    control = _pick_control(names, control if control is not None else q.control, lenient)
    split = dict(q.expected_split)
    if split:
        unknown = [v for v in split if v not in names]
        if unknown and names and not lenient:
            raise UnknownNameError("variant in the expected split", unknown[0], names)
        split = {v: w for v, w in split.items() if v in names}
    reasons: list[str] = []
    if len(names) < 2:
        reasons.append(f"{len(names)} variant{'s' if len(names) != 1 else ''} found for {q.variant}; need at least 2")
    for v in names:
        m = moments[v]
        if m.n < q.min_units:
            reasons.append(f"variant {v} has {m.n} units (need {q.min_units})")
        x = round(m.sy)
        if x < q.min_conversions or m.n - x < q.min_conversions:
            reasons.append(f"variant {v} has {x} conversions of {m.n} "
                           f"(need {q.min_conversions} conversions and non-conversions)")
    conf = q.confidence
    theta = mean_x = 0.0
    if q.cuped_covariate is not None and names:
        theta = cuped_theta(list(moments.values()))
        total = sum(m.n for m in moments.values())
        mean_x = sum(m.sx for m in moments.values()) / total if total else 0.0
    rows: list[VariantRow] = []
    for v in ([control] if control else []) + [n for n in names if n != control]:
        m = moments[v]
        x = round(m.sy)
        ci = wilson_interval(x, m.n, confidence=conf) or (0.0, 1.0)
        test = cup = None
        if v != control and control is not None:
            c = moments[control]
            test = two_proportion_test(c.n, round(c.sy), m.n, x, confidence=conf)
            if q.cuped_covariate is not None:
                cup = cuped_test(c, m, theta, mean_x, confidence=conf)
        rows.append(VariantRow(v, m.n, x, x / m.n, ci[0], ci[1], v == control, test, cup,
                               m.sx / m.n if q.cuped_covariate is not None else None))
    srm = srm_check({v: moments[v].n for v in names}, split or None, alpha=q.srm_alpha) \
        if len(names) >= 2 else None
    needed = None
    if control is not None:
        c = moments[control]
        needed = units_needed(c.sy / c.n, q.mde, confidence=conf)
    return ExperimentResult(query=q, variants=tuple(rows), control=control, srm=srm,
                            status="not_enough_data" if reasons else "ok", reasons=tuple(reasons),
                            mixed_units=mixed_units, units_needed=needed)


def readout_from_counts(query: ExperimentQuery, counts: Mapping[str, tuple[int, int]]) -> ExperimentResult:
    """The readout from ``variant -> (units, conversions)`` alone (no CUPED), e.g. for
    numbers from another tool."""
    return _readout(query, {v: Moments(n, float(x)) for v, (n, x) in counts.items()}, 0)


__all__ = [
    "BreakdownExperiment", "CupedTest", "ExperimentQuery", "ExperimentResult", "Moments", "ProportionTest", "SrmCheck", "VariantRow",
    "cuped_test", "cuped_theta", "experiment", "parse_split", "readout_from_counts", "srm_check",
    "two_proportion_test", "units_needed",
]
