"""Customer value: RFM summaries, BG/NBD, Gamma-Gamma and customer lifetime value (CLV).

The long form with every formula and the checks against published numbers is ``docs/clv.md``.

**RFM summary** (:func:`rfm_summary`, one Ibis query). *Purchases* are the touches matching the
``purchase`` step filter (default ``revenue>0``; e.g. ``purchase`` or ``event=contract_signed|upsell``);
a purchase's value is its ``revenue`` (NULL counts as 0). Purchases are grouped by unit (person or
account) and UTC calendar day, as ``lifetimes.utils.summary_data_from_transaction_data`` does with
``freq="D"``. For every unit with a purchase on or before the end of the calibration period:

* ``frequency`` x = purchase days after the first one (repeat purchases);
* ``recency`` t_x = last purchase day − first purchase day;
* ``T`` = calibration end day − first purchase day;
* ``monetary_value`` = mean value per repeat purchase day (0 when x = 0);
* ``revenue`` = value of all its purchases up to the calibration end (historical CLV).

t_x and T are days divided by the days of ``time_unit`` (day 1, week 7, month 30). The observation
end is ``as_of`` (a date) or the UTC day of the last touch. With a ``holdout`` of h days the
calibration ends h days earlier; ``frequency_holdout`` counts a unit's purchase days in
(calibration end, observation end] and ``revenue_holdout`` their value.

**BG/NBD** (Fader, Hardie & Lee 2005, :class:`BetaGeoModel`) and **Gamma-Gamma** (Fader, Hardie &
Lee 2005, "RFM and CLV", :class:`GammaGammaModel`) are fitted by maximum likelihood on
log-parameters with ``scipy.optimize``. **CLV** over ``horizon`` months with monthly ``discount`` d
(as ``lifetimes``' ``customer_lifetime_value``): with f time units per month,
``CLV = Σ_{i=1..H} E[M] · (E[X(i·f)] − E[X((i−1)·f)]) / (1 + d)^i``, E[X(t)] the conditional
expected repeat purchases in (T, T + t] and E[M] the Gamma-Gamma conditional mean spend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from scipy import optimize, special

from journeylens.analyses._relations import segment_values
from journeylens.analyses._time import parse_duration
from journeylens.analyses.funnel import (
    NONE_LABEL,
    PROPERTY_PREFIX,
    Step,
    check_step_fields,
    step_predicate,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.functions import json_get

UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
DAYS_PER_UNIT: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 30.0}
"""Days in one time unit of recency and T."""
DAYS_PER_MONTH = 30.0
"""A CLV month is 30 days (``lifetimes`` uses the same for daily data)."""
DEFAULT_PURCHASE = "revenue>0"
MODEL_NAME = "bgnbd+gamma_gamma"
RFM_COLUMNS = ("frequency", "recency", "T")
MIN_SPEND_UNITS = 10
"""Gamma-Gamma is fitted only with at least this many units with repeat purchases of value > 0."""


# ============================================================================ request model
class ValueQuery(BaseModel):
    """Everything a customer-value analysis needs besides the touches (or an RFM table).

    ``purchase`` is a step filter as in funnels (default ``revenue>0``); ``unit`` person or account;
    ``time_unit`` of recency and T: day, week or month (30 days); ``as_of`` ends the observation
    (default: the UTC day of the last touch); ``holdout`` (whole days: ``90d``, ``12w``) ends the
    calibration that much earlier and checks the predictions on it; ``horizon`` in months and
    monthly ``discount`` for CLV; ``periods_per_month`` time units per CLV month (default
    30 / days of ``time_unit``); ``penalizer`` adds ``penalizer · Σ params²`` to both negative
    mean log-likelihoods (0 = plain maximum likelihood); ``top`` units listed by CLV;
    ``breakdown`` a column of the touches or ``properties.KEY`` (read on the unit's first
    purchase) or the name of a segment table.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    purchase: Step = Step.parse(DEFAULT_PURCHASE)
    unit: str = "person"
    time_unit: str = "day"
    as_of: date | None = None
    holdout: str | int | None = None
    horizon: int = 12
    discount: float = 0.01
    periods_per_month: float | None = None
    penalizer: float = 0.0
    top: int = 10
    breakdown: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid clv query: " + "; ".join(parts)) from None

    @field_validator("purchase", mode="before")
    @classmethod
    def _purchase(cls, v: Any) -> Any:
        if v is None:
            return Step.parse(DEFAULT_PURCHASE)
        return Step.parse(v) if isinstance(v, str) else v

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> Any:
        if isinstance(v, datetime):
            return v.date()
        if isinstance(v, str):
            try:
                return date.fromisoformat(v.strip()[:10])
            except ValueError:
                raise InvalidParameterError(f"as_of '{v}' is not a date", hint="write YYYY-MM-DD") from None
        return v

    @model_validator(mode="after")
    def _validate(self) -> ValueQuery:
        if self.unit not in UNITS:
            raise UnknownNameError("unit", self.unit, UNITS)
        if self.time_unit not in DAYS_PER_UNIT:
            raise UnknownNameError("time unit", self.time_unit, DAYS_PER_UNIT)
        if self.holdout is not None:
            _ = self.holdout_days
        if not 1 <= self.horizon <= 1200:
            raise InvalidParameterError(f"horizon must be 1 to 1200 months, got {self.horizon}")
        if not (math.isfinite(self.discount) and 0 <= self.discount < 1):
            raise InvalidParameterError(f"discount must be a monthly rate in [0, 1), got {self.discount}",
                                        hint="0.01 means 1 % per month")
        if self.periods_per_month is not None and not (
                math.isfinite(self.periods_per_month) and self.periods_per_month > 0):
            raise InvalidParameterError(f"periods_per_month must be positive, got {self.periods_per_month}")
        if not (math.isfinite(self.penalizer) and self.penalizer >= 0):
            raise InvalidParameterError(f"penalizer must be >= 0, got {self.penalizer}")
        if self.top < 0:
            raise InvalidParameterError(f"top must be >= 0, got {self.top}")
        return self

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    @property
    def holdout_days(self) -> int | None:
        """Whole days of the holdout period, or None."""
        if self.holdout is None:
            return None
        seconds = parse_duration(self.holdout, name="holdout")
        if seconds % 86_400:
            raise InvalidParameterError(f"holdout {self.holdout!r} is not a whole number of days",
                                        hint="write e.g. 90d or 12w")
        return seconds // 86_400

    @property
    def months_factor(self) -> float:
        """Time units per CLV month."""
        if self.periods_per_month is not None:
            return self.periods_per_month
        return DAYS_PER_MONTH / DAYS_PER_UNIT[self.time_unit]


# ============================================================================ RFM summary
@dataclass(frozen=True)
class RFMSummary:
    """Per-unit RFM summary (see the module docstring for every column).

    ``frame`` columns: ``unit`` id, ``frequency``, ``recency``, ``T``, ``monetary_value``,
    ``revenue``, ``first_purchase`` (date) and, with a holdout, ``frequency_holdout``,
    ``revenue_holdout``; ``duration_holdout`` is the holdout length in time units.
    """

    unit: str
    time_unit: str
    observation_end: date | None
    calibration_end: date | None
    duration_holdout: float | None
    frame: pd.DataFrame = field(repr=False, compare=False)

    @property
    def units(self) -> int:
        return len(self.frame)

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        f = self.frame
        return {
            "unit": self.unit,
            "time_unit": self.time_unit,
            "observation_end": self.observation_end,
            "calibration_end": self.calibration_end,
            "duration_holdout": self.duration_holdout,
            "units": self.units,
            "repeat_customers": int((f.frequency > 0).sum()) if len(f) else 0,
            "mean_frequency": _mean(f.frequency) if len(f) else None,
            "mean_recency": _mean(f.recency) if len(f) else None,
            "mean_T": _mean(f["T"]) if len(f) else None,
            "total_revenue": float(f.revenue.sum()) if "revenue" in f and len(f) else None,
            "rows": _records(f),
        }

    def figure(self) -> Any:
        import plotly.express as px

        return px.histogram(self.frame, x="frequency", title=f"Repeat purchases per {self.unit}")


def _mean(s: pd.Series) -> float:
    return float(s.mean())


def _records(f: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in f.to_dict("records")]


def _day(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Days since 1970-01-01 of the UTC date of ``ts``."""
    return ts.date().epoch_days().cast("int64")


def _epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _from_epoch_day(n: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(n))


def purchases(touches: ir.Table, query: ValueQuery) -> ir.Table:
    """Purchase touches: ``unit``, ``ts``, ``day`` (UTC epoch day), ``value`` (revenue, NULL → 0)."""
    check_step_fields(touches, [query.purchase])
    col = query.unit_column
    if col not in touches.columns:
        raise InvalidParameterError(f"the touches have no {col} column")
    t = touches.filter(step_predicate(touches, query.purchase) & touches[col].notnull())
    value = t.revenue.cast("float64").fill_null(0.0) if "revenue" in t.columns else ibis.literal(0.0)
    return t.select(unit=t[col].cast("string"), ts=t.ts, day=_day(t.ts), value=value)


def _observation_end_day(touches: ir.Table, query: ValueQuery) -> int | None:
    if query.as_of is not None:
        return _epoch_day(query.as_of)
    last = touches.ts.max().execute()
    if last is None or pd.isna(last):
        return None
    return _epoch_day(pd.Timestamp(last).tz_convert("UTC").date() if pd.Timestamp(last).tzinfo
                      else pd.Timestamp(last).date())


def rfm_summary(touches: ir.Table, query: ValueQuery | None = None) -> RFMSummary:
    """Frequency, recency, T, monetary value and revenue per unit (and holdout counts).

    One query over ``touches`` (which need ``ts``, the unit column and the purchase step's fields);
    see the module docstring for the definitions.
    """
    q = query or ValueQuery()
    scale = DAYS_PER_UNIT[q.time_unit]
    end_day = _observation_end_day(touches, q)
    columns = ["unit", "frequency", "recency", "T", "monetary_value", "revenue", "first_purchase"]
    if end_day is None:
        return RFMSummary(q.unit, q.time_unit, None, None, None, pd.DataFrame(columns=columns))
    h = q.holdout_days
    cal_day = end_day - (h or 0)
    p = purchases(touches, q)
    p = p.filter(p.day <= end_day)
    daily = p.group_by(["unit", "day"]).aggregate(value=p.value.sum())
    cal = daily.filter(daily.day <= cal_day)
    cal = cal.mutate(first=cal.day.min().over(group_by=cal.unit))
    per = cal.group_by("unit").aggregate(
        first_day=cal.first.min(),
        last_day=cal.day.max(),
        days=cal.count(),
        revenue=cal.value.sum(),
        first_value=cal.value.sum(where=cal.day == cal.first),
    )
    if h is not None:
        hold = daily.filter(daily.day > cal_day)
        hold = hold.group_by("unit").aggregate(frequency_holdout=hold.count(), revenue_holdout=hold.value.sum())
        per = per.left_join(hold, "unit").select(per, hold.frequency_holdout, hold.revenue_holdout)
    df = per.to_pyarrow().to_pandas()
    out = pd.DataFrame({"unit": df.unit.astype(str)})
    x = df.days.astype("int64") - 1
    out["frequency"] = x
    out["recency"] = (df.last_day - df.first_day).astype(float) / scale
    out["T"] = (cal_day - df.first_day).astype(float) / scale
    repeat_value = (df.revenue - df.first_value).astype(float)
    out["monetary_value"] = np.where(x > 0, repeat_value / x.clip(lower=1), 0.0)
    out["revenue"] = df.revenue.astype(float)
    out["first_purchase"] = [_from_epoch_day(d) for d in df.first_day]
    if h is not None:
        out["frequency_holdout"] = df.frequency_holdout.fillna(0).astype("int64")
        out["revenue_holdout"] = df.revenue_holdout.fillna(0.0).astype(float)
    out = out.sort_values("unit", kind="stable").reset_index(drop=True)
    return RFMSummary(
        unit=q.unit, time_unit=q.time_unit, observation_end=_from_epoch_day(end_day),
        calibration_end=_from_epoch_day(cal_day) if h is not None else None,
        duration_holdout=h / scale if h is not None else None, frame=out,
    )


# ============================================================================ models
def _as_array(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=float)


POLISH_BOUND = 20.0
"""The Powell polish keeps every log-parameter within ±POLISH_BOUND (or the BFGS point)."""


def _fit_log_params(nll: Callable[[np.ndarray], float], n_params: int, *,
                    polish_method: str = "Powell") -> tuple[np.ndarray, float]:
    """Minimise ``nll`` over log-parameters: BFGS from 0 (all parameters 1), then a polish from
    the BFGS point; the better point wins.

    The polish is Powell's method (default). Until 0.9 it was Nelder-Mead with tight tolerances
    (``polish_method="Nelder-Mead"``), which on large data sets whose BG/NBD optimum lies on the
    a, b → ∞ ridge (no dropout heterogeneity) crawled along the ridge until its 40,000 function
    evaluations ran out (19 s on the 1M-event demo; Powell: under 1 s). Both stop on the same
    flat ridge; docs/clv.md states the tolerance between them, checked by
    ``tests/analyses/test_value.py::test_powell_polish_matches_nelder_mead``."""
    start = np.zeros(n_params)
    best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-9, "maxiter": 2000})
    if polish_method == "Nelder-Mead":
        polish = optimize.minimize(nll, best.x, method="Nelder-Mead",
                                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000, "maxfev": 40_000})
    else:
        # Bounded: far along the ridge (parameters beyond e^20) the likelihood's differences of
        # log-beta functions lose every significant digit and would look "better".
        bounds = [(min(-POLISH_BOUND, v), max(POLISH_BOUND, v)) for v in best.x]
        polish = optimize.minimize(nll, best.x, method="Powell", bounds=bounds,
                                   options={"xtol": 1e-8, "ftol": 1e-12, "maxfev": 40_000})
    x, fun = (polish.x, polish.fun) if polish.fun <= best.fun else (best.x, best.fun)
    if not np.all(np.isfinite(x)) or not math.isfinite(fun):
        raise InvalidParameterError("the model fit did not converge", hint="check the RFM data or add a penalizer")
    return x, float(fun)


def _aggregate(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Unique rows of ``cols`` and their counts (likelihoods are sums over identical rows)."""
    stacked = np.column_stack(cols)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(float)


class _BetaGeoTerms:
    """:meth:`BetaGeoModel.log_likelihood_terms` for fixed (x, t_x, T) rows, fast: the special
    functions and logarithms are evaluated once per distinct x, t_x and T (a few dozen to a few
    hundred values) and gathered, instead of once per row. Every element is computed with the
    same operations in the same order, so the terms are bit-for-bit those of the plain formula
    (``tests/analyses/test_value.py::test_fast_bgnbd_terms_are_identical``)."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
        self.x = _as_array(x)
        self.xu, self.xi = np.unique(self.x, return_inverse=True)
        self.tu, self.ti = np.unique(_as_array(t_x), return_inverse=True)
        self.Tu, self.Ti = np.unique(_as_array(T), return_inverse=True)
        self.x1u = np.maximum(self.xu, 1)
        self.repeat = self.x > 0

    def __call__(self, params: Sequence[float]) -> np.ndarray:
        r, alpha, a, b = params
        x, xi = self.x, self.xi
        rx = r + x
        a1 = special.gammaln(r + self.xu)[xi] - special.gammaln(r) + r * np.log(alpha)
        a2 = special.betaln(a, b + self.xu)[xi] - special.betaln(a, b)
        a3 = -rx * np.log(alpha + self.Tu)[self.Ti]
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.log(a) - np.log(b + self.x1u - 1)[xi] - rx * np.log(alpha + self.tu)[self.ti]
        a4 = np.where(self.repeat, a4, -np.inf)
        return np.asarray(a1 + a2 + np.logaddexp(a3, a4))


class BetaGeoModel:
    """BG/NBD model of Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way".

    While alive a customer buys with Poisson rate λ ~ Gamma(r, α); after every purchase they drop
    out with probability p ~ Beta(a, b). ``fit`` maximises the log-likelihood of (x, t_x, T)
    (their eq. 6) over log r, log α, log a, log b; fitted values end in ``_``.
    """

    def __init__(self, penalizer: float = 0.0, *, polish: str = "Powell") -> None:
        self.penalizer = penalizer
        self.polish = polish
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = math.nan
        self.n_: int = 0

    @staticmethod
    def log_likelihood_terms(params: Sequence[float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Per-customer log-likelihood ln L(r, α, a, b | x, t_x, T)."""
        r, alpha, a, b = params
        x, t_x, T = _as_array(x), _as_array(t_x), _as_array(T)
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        a2 = special.betaln(a, b + x) - special.betaln(a, b)
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
        a4 = np.where(x > 0, a4, -np.inf)
        return np.asarray(a1 + a2 + np.logaddexp(a3, a4))

    def fit(self, frequency: Any, recency: Any, T: Any) -> BetaGeoModel:
        x, t_x, tt = _as_array(frequency), _as_array(recency), _as_array(T)
        _check_rfm(x, t_x, tt)
        if not np.any(x > 0):
            raise InvalidParameterError("BG/NBD needs at least one repeat purchase", hint="no unit bought twice")
        (ux, ut, uT), w = _aggregate(x, t_x, tt)
        n = w.sum()
        pen = self.penalizer
        terms = _BetaGeoTerms(ux, ut, uT)

        def nll(logp: np.ndarray) -> float:
            params = np.exp(logp)
            ll = float(np.dot(w, terms(params)))
            value = -ll / n + pen * float(np.sum(params ** 2))
            return value if math.isfinite(value) else 1e300

        logp, _ = _fit_log_params(nll, 4, polish_method=self.polish)
        r, alpha, a, b = np.exp(logp)
        self.params_ = {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}
        self.log_likelihood_ = float(np.dot(w, terms(np.exp(logp))))
        self.n_ = int(n)
        return self

    def _p(self) -> tuple[float, float, float, float]:
        if not self.params_:
            raise InvalidParameterError("the BG/NBD model is not fitted yet")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def expected_purchases(self, t: Any) -> np.ndarray:
        """E[X(t)]: expected repeat purchases in (0, t] of a new customer (eq. 9)."""
        r, alpha, a, b = self._p()
        t = _as_array(t)
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return np.asarray((a + b - 1) / (a - 1) * (1 - hyp * (alpha / (alpha + t)) ** r))

    def conditional_expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected purchases in (T, T + t] given the history (eq. 10)."""
        r, alpha, a, b = self._p()
        t, x, t_x, tt = _as_array(t), _as_array(frequency), _as_array(recency), _as_array(T)
        aa, bb, cc = r + x, b + x, a + b + x - 1
        z = t / (alpha + tt + t)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_hyp = np.log(special.hyp2f1(aa, bb, cc, z))
            # Euler's transformation where the series overflows: 2F1(a,b;c;z) = (1-z)^(c-a-b) 2F1(c-a,c-b;c;z)
            alt = np.log(special.hyp2f1(cc - aa, cc - bb, cc, z)) + (cc - aa - bb) * np.log1p(-z)
            log_hyp = np.where(np.isfinite(log_hyp), log_hyp, alt)
            first = (a + b + x - 1) / (a - 1)
            second = 1 - np.exp(log_hyp + (r + x) * np.log((alpha + tt) / (alpha + tt + t)))
            denominator = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + tt) / (alpha + t_x)) ** (r + x)
        return np.asarray(first * second / denominator)

    def probability_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(alive | x, t_x, T) = 1 / (1 + [x > 0] · a / (b + x − 1) · ((α + T) / (α + t_x))^(r + x))."""
        r, alpha, a, b = self._p()
        x, t_x, tt = _as_array(frequency), _as_array(recency), _as_array(T)
        log_odds = (r + x) * np.log((alpha + tt) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
        return np.asarray(np.where(x > 0, special.expit(-log_odds), 1.0))


class GammaGammaModel:
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Hardie's note 025).

    A customer's transaction values are Gamma(p, ν) with ν ~ Gamma(q, γ); their mean spend is
    p·ν⁻¹, so E[M] = pγ/(q − 1). ``fit`` maximises the likelihood of the mean repeat spend m̄
    of the customers with x > 0 over log p, log q, log γ.
    """

    def __init__(self, penalizer: float = 0.0, *, polish: str = "Powell") -> None:
        self.penalizer = penalizer
        self.polish = polish
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = math.nan
        self.n_: int = 0

    @staticmethod
    def log_likelihood_terms(params: Sequence[float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """ln f(m̄ | p, q, γ, x) per customer (x > 0, m̄ > 0)."""
        p, q, g = params
        x, m = _as_array(x), _as_array(m)
        px = p * x
        return np.asarray(special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(g)
                          + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(g + m * x))

    def fit(self, frequency: Any, monetary_value: Any) -> GammaGammaModel:
        """Fit on the customers with frequency > 0 and monetary value > 0 (the others are ignored)."""
        x, m = _as_array(frequency), _as_array(monetary_value)
        keep = (x > 0) & (m > 0) & np.isfinite(m)
        if keep.sum() < 2:
            raise InvalidParameterError("Gamma-Gamma needs at least two units with repeat purchases of value > 0")
        (ux, um), w = _aggregate(x[keep], m[keep])
        n = w.sum()
        pen = self.penalizer

        def nll(logp: np.ndarray) -> float:
            params = np.exp(logp)
            ll = float(np.dot(w, self.log_likelihood_terms(params, ux, um)))
            value = -ll / n + pen * float(np.sum(params ** 2))
            return value if math.isfinite(value) else 1e300

        logp, _ = _fit_log_params(nll, 3, polish_method=self.polish)
        p, q, g = np.exp(logp)
        self.params_ = {"p": float(p), "q": float(q), "gamma": float(g)}
        self.log_likelihood_ = float(np.dot(w, self.log_likelihood_terms(np.exp(logp), ux, um)))
        self.n_ = int(n)
        return self

    def expected_spend(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[M | x, m̄] = (q − 1)/(px + q − 1) · pγ/(q − 1) + px/(px + q − 1) · m̄ (eq. 5 of note 025);
        x = 0 gives the population mean pγ/(q − 1). Infinite (no finite mean) when q ≤ 1."""
        if not self.params_:
            raise InvalidParameterError("the Gamma-Gamma model is not fitted yet")
        p, q, g = self.params_["p"], self.params_["q"], self.params_["gamma"]
        x, m = _as_array(frequency), _as_array(monetary_value)
        if q <= 1:
            return np.full(np.shape(x), np.inf)
        weight = p * x / (p * x + q - 1)
        return np.asarray((1 - weight) * (p * g / (q - 1)) + weight * np.where(x > 0, m, 0.0))


def customer_lifetime_value(bg: BetaGeoModel, spend: Any, frequency: Any, recency: Any, T: Any, *,
                            horizon: int = 12, discount: float = 0.01, periods_per_month: float = 30.0) -> np.ndarray:
    """Discounted CLV per customer over ``horizon`` months:
    ``Σ_{i=1..horizon} spend · (E[Y(i·f) | x, t_x, T] − E[Y((i−1)·f) | x, t_x, T]) / (1 + discount)^i``
    with ``f = periods_per_month`` (as ``lifetimes.utils._customer_lifetime_value``)."""
    x, t_x, tt, m = _as_array(frequency), _as_array(recency), _as_array(T), _as_array(spend)
    total = np.zeros(np.shape(x))
    previous = np.zeros(np.shape(x))
    for i in range(1, horizon + 1):
        cum = bg.conditional_expected_purchases(i * periods_per_month, x, t_x, tt)
        total = total + m * (cum - previous) / (1 + discount) ** i
        previous = cum
    return total


def _check_rfm(x: np.ndarray, t_x: np.ndarray, tt: np.ndarray) -> None:
    if len(x) == 0:
        raise InvalidParameterError("no units with a purchase", hint="check the purchase filter and the period")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(tt))):
        raise InvalidParameterError("frequency, recency and T must be finite numbers")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > tt + 1e-9):
        raise InvalidParameterError("RFM data must have frequency >= 0 and 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise InvalidParameterError("recency must be 0 where frequency is 0")


# ============================================================================ result
@dataclass(frozen=True)
class FrequencyRow:
    """Holdout check of the units with one calibration frequency (the last row gathers ``>= n``)."""

    frequency: str
    units: int
    actual: float
    """Mean purchases per unit in the holdout."""
    predicted: float

    def to_dict(self) -> dict[str, Any]:
        return {"frequency": self.frequency, "units": self.units, "actual": self.actual, "predicted": self.predicted}


@dataclass(frozen=True)
class HoldoutCheck:
    """Predictions of the calibration fit compared with the holdout period.

    ``predicted_purchases`` = Σ E[Y(duration) | x, t_x, T] over the calibration units,
    ``actual_purchases`` = Σ frequency_holdout; ``relative_error`` = predicted / actual − 1;
    ``mae`` = mean |predicted − actual| per unit; ``baseline_mae`` the same for the naive
    forecast x / T · duration (calibration repeat rate carried on); revenue likewise with E[M].
    """

    calibration_end: date | None
    observation_end: date | None
    duration: float
    units: int
    actual_purchases: int
    predicted_purchases: float
    relative_error: float | None
    mae: float
    baseline_mae: float
    actual_revenue: float
    predicted_revenue: float | None
    by_frequency: tuple[FrequencyRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration_end": self.calibration_end, "observation_end": self.observation_end,
            "duration": self.duration, "units": self.units, "actual_purchases": self.actual_purchases,
            "predicted_purchases": self.predicted_purchases, "relative_error": self.relative_error,
            "mae": self.mae, "baseline_mae": self.baseline_mae, "actual_revenue": self.actual_revenue,
            "predicted_revenue": self.predicted_revenue,
            "by_frequency": [r.to_dict() for r in self.by_frequency],
        }


@dataclass(frozen=True)
class BreakdownRow:
    """Mean value of the units with one breakdown value."""

    value: str
    units: int
    mean_clv: float | None
    mean_revenue: float | None
    mean_p_alive: float
    mean_expected_purchases: float

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "units": self.units, "mean_clv": self.mean_clv,
                "mean_revenue": self.mean_revenue, "mean_p_alive": self.mean_p_alive,
                "mean_expected_purchases": self.mean_expected_purchases}


@dataclass(frozen=True)
class CLVResult:
    """Fitted BG/NBD (+ Gamma-Gamma) and per-unit predictions.

    ``model`` is ``bgnbd+gamma_gamma``, or ``bgnbd`` when Gamma-Gamma gives no finite spend (no
    monetary values, fewer than ``MIN_SPEND_UNITS`` repeat buyers, or q <= 1; ``notes`` says which):
    then CLV and ``mean_clv`` are None; ``params`` r, alpha, a, b (+ p, q, gamma); ``people`` units in the RFM summary;
    ``mean_clv`` mean discounted CLV over ``horizon`` months. ``frame`` (``to_pandas``) has one row
    per unit: the RFM columns, ``p_alive``, ``expected_purchases`` (over the horizon,
    undiscounted), ``expected_spend`` and ``clv``, sorted by CLV (then id).
    """

    model: str
    unit: str
    time_unit: str
    params: Mapping[str, float]
    people: int
    mean_clv: float | None
    horizon: int
    discount: float
    periods_per_month: float
    observation_end: date | None
    calibration_end: date | None
    total_revenue: float | None
    mean_revenue: float | None
    repeat_customers: int
    mean_p_alive: float
    mean_expected_purchases: float
    log_likelihood: Mapping[str, float]
    holdout: HoldoutCheck | None
    breakdown: str | None
    breakdown_rows: tuple[BreakdownRow, ...]
    top: int
    notes: tuple[str, ...]
    """Why CLV is missing, when it is."""
    frame: pd.DataFrame = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": dict(self.params),
            "people": self.people,
            "mean_clv": self.mean_clv,
            "unit": self.unit,
            "time_unit": self.time_unit,
            "horizon_months": self.horizon,
            "discount": self.discount,
            "periods_per_month": self.periods_per_month,
            "observation_end": self.observation_end,
            "calibration_end": self.calibration_end,
            "total_revenue": self.total_revenue,
            "mean_revenue": self.mean_revenue,
            "repeat_customers": self.repeat_customers,
            "mean_p_alive": self.mean_p_alive,
            "mean_expected_purchases": self.mean_expected_purchases,
            "log_likelihood": dict(self.log_likelihood),
            "holdout": self.holdout.to_dict() if self.holdout else None,
            "breakdown": self.breakdown,
            "breakdown_values": [r.to_dict() for r in self.breakdown_rows],
            "top": _records(self.frame.head(self.top)),
            "notes": list(self.notes),
        }

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.copy()

    def figure(self) -> Any:
        """Holdout: mean actual vs predicted holdout purchases by calibration frequency;
        else the distribution of CLV (or of P(alive) without monetary values)."""
        import plotly.graph_objects as go

        if self.holdout is not None:
            rows = self.holdout.by_frequency
            xs = [r.frequency for r in rows]
            fig = go.Figure([go.Bar(name="actual", x=xs, y=[r.actual for r in rows]),
                             go.Bar(name="predicted (BG/NBD)", x=xs, y=[r.predicted for r in rows])])
            fig.update_layout(barmode="group", title="Holdout purchases per unit by calibration frequency",
                              xaxis_title="repeat purchases in calibration", yaxis_title="mean holdout purchases")
            return fig
        column = "clv" if self.mean_clv is not None else "p_alive"
        fig = go.Figure(go.Histogram(x=self.frame[column], nbinsx=40))
        fig.update_layout(title=f"{column} per {self.unit} ({self.horizon} months)", xaxis_title=column,
                          yaxis_title=f"{self.unit}s")
        return fig


# ============================================================================ analysis
def fit_rfm(frame: pd.DataFrame, query: ValueQuery | None = None, *,
            calibration_end: date | None = None, observation_end: date | None = None,
            duration_holdout: float | None = None, breakdown: Mapping[str, Sequence[str]] | None = None) -> CLVResult:
    """Fit BG/NBD (and Gamma-Gamma when ``monetary_value`` is present) on an RFM ``frame``.

    ``frame`` has ``frequency``, ``recency``, ``T`` (time units), optionally ``monetary_value``,
    ``revenue``, ``unit`` (ids; default the row number) and, for a holdout check,
    ``frequency_holdout`` (+ ``revenue_holdout``) with ``duration_holdout`` in time units.
    ``breakdown`` maps breakdown values to unit ids.
    """
    q = query or ValueQuery()
    missing = [c for c in RFM_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidParameterError(f"the RFM table lacks column(s) {', '.join(missing)}",
                                    hint="columns: frequency, recency, T and optionally monetary_value")
    f = frame.copy().reset_index(drop=True)
    if "unit" not in f.columns:
        f.insert(0, "unit", [str(i + 1) for i in range(len(f))])
    for c in (*RFM_COLUMNS, "monetary_value"):
        if c in f.columns:
            f[c] = pd.to_numeric(f[c], errors="coerce").astype(float)
    if f.frequency.notna().all() and (f.frequency == f.frequency.round()).all():
        f["frequency"] = f.frequency.astype("int64")
    x, t_x, tt = f.frequency.to_numpy(dtype=float), f.recency.to_numpy(), f["T"].to_numpy()
    bg = BetaGeoModel(q.penalizer).fit(x, t_x, tt)
    params: dict[str, float] = dict(bg.params_)
    ll = {"bgnbd": bg.log_likelihood_}
    factor = q.months_factor
    horizon_t = q.horizon * factor
    f["p_alive"] = bg.probability_alive(x, t_x, tt)
    f["expected_purchases"] = bg.conditional_expected_purchases(horizon_t, x, t_x, tt)
    has_money = "monetary_value" in f.columns and bool(np.all(np.isfinite(f.monetary_value.to_numpy())))
    gg: GammaGammaModel | None = None
    notes: list[str] = []
    if not has_money:
        notes.append("no monetary values: BG/NBD only, no CLV")
    elif int(((x > 0) & (f.monetary_value.to_numpy() > 0)).sum()) < MIN_SPEND_UNITS:
        notes.append(f"fewer than {MIN_SPEND_UNITS} units with repeat purchases of value > 0: "
                     "Gamma-Gamma not fitted, no CLV")
    else:
        gg = GammaGammaModel(q.penalizer).fit(x, f.monetary_value.to_numpy())
        params.update(gg.params_)
        ll["gamma_gamma"] = gg.log_likelihood_
        if gg.params_["q"] <= 1:
            notes.append("Gamma-Gamma q <= 1: mean spend is infinite, no CLV")
            gg = None
    if gg is not None:
        f["expected_spend"] = gg.expected_spend(x, f.monetary_value.to_numpy())
        f["clv"] = customer_lifetime_value(bg, f.expected_spend.to_numpy(), x, t_x, tt, horizon=q.horizon,
                                           discount=q.discount, periods_per_month=factor)
        f = f.sort_values(["clv", "unit"], ascending=[False, True], kind="stable").reset_index(drop=True)
    else:
        f = f.sort_values(["expected_purchases", "unit"], ascending=[False, True], kind="stable")
        f = f.reset_index(drop=True)

    holdout = None
    if duration_holdout is not None and "frequency_holdout" in f.columns:
        holdout = _holdout_check(bg, gg, f, duration_holdout, calibration_end, observation_end)
    rows: tuple[BreakdownRow, ...] = ()
    if breakdown is not None:
        rows = _breakdown_rows(f, breakdown)
    revenue = f.revenue if "revenue" in f.columns else None
    return CLVResult(
        model=MODEL_NAME if gg is not None else "bgnbd",
        unit=q.unit, time_unit=q.time_unit, params=params, people=len(f),
        mean_clv=float(f.clv.mean()) if "clv" in f.columns else None,
        horizon=q.horizon, discount=q.discount, periods_per_month=factor,
        observation_end=observation_end, calibration_end=calibration_end,
        total_revenue=float(revenue.sum()) if revenue is not None else None,
        mean_revenue=float(revenue.mean()) if revenue is not None else None,
        repeat_customers=int((f.frequency > 0).sum()), notes=tuple(notes),
        mean_p_alive=float(f.p_alive.mean()), mean_expected_purchases=float(f.expected_purchases.mean()),
        log_likelihood=ll, holdout=holdout, breakdown=q.breakdown, breakdown_rows=rows, top=q.top, frame=f,
    )


def _holdout_check(bg: BetaGeoModel, gg: GammaGammaModel | None, f: pd.DataFrame, duration: float,
                   calibration_end: date | None, observation_end: date | None) -> HoldoutCheck:
    x, t_x, tt = f.frequency.to_numpy(), f.recency.to_numpy(), f["T"].to_numpy()
    predicted = bg.conditional_expected_purchases(duration, x, t_x, tt)
    actual = f.frequency_holdout.to_numpy().astype(float)
    baseline = np.where(tt > 0, x / np.where(tt > 0, tt, 1.0), 0.0) * duration
    act_sum = int(actual.sum())
    rows: list[FrequencyRow] = []
    cap = 5
    for k in range(cap + 1):
        mask = x >= cap if k == cap else x == k
        if mask.any():
            rows.append(FrequencyRow(f"{k}+" if k == cap else str(k), int(mask.sum()),
                                     float(actual[mask].mean()), float(predicted[mask].mean())))
    predicted_revenue = None
    if gg is not None and "expected_spend" in f.columns:
        predicted_revenue = float(np.sum(predicted * f.expected_spend.to_numpy()))
    return HoldoutCheck(
        calibration_end=calibration_end, observation_end=observation_end, duration=float(duration),
        units=len(f), actual_purchases=act_sum, predicted_purchases=float(predicted.sum()),
        relative_error=float(predicted.sum() / act_sum - 1) if act_sum else None,
        mae=float(np.mean(np.abs(predicted - actual))), baseline_mae=float(np.mean(np.abs(baseline - actual))),
        actual_revenue=float(f.revenue_holdout.sum()) if "revenue_holdout" in f.columns else 0.0,
        predicted_revenue=predicted_revenue, by_frequency=tuple(rows),
    )


def _breakdown_rows(f: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> tuple[BreakdownRow, ...]:
    indexed = f.set_index("unit")
    rows = []
    for value, ids in groups.items():
        part = indexed.loc[indexed.index.intersection(list(ids))]
        if part.empty:
            continue
        rows.append(BreakdownRow(
            value=value, units=len(part),
            mean_clv=float(part.clv.mean()) if "clv" in part.columns else None,
            mean_revenue=float(part.revenue.mean()) if "revenue" in part.columns else None,
            mean_p_alive=float(part.p_alive.mean()), mean_expected_purchases=float(part.expected_purchases.mean()),
        ))
    rows.sort(key=lambda r: (-(r.mean_clv if r.mean_clv is not None else r.mean_expected_purchases), r.value))
    return tuple(rows)


def _breakdown_groups(touches: ir.Table, q: ValueQuery, segments: Mapping[str, ir.Table],
                      summary: RFMSummary) -> dict[str, list[str]] | None:
    """Breakdown value → unit ids. Segments give their own values; a column or ``properties.KEY``
    is read on the unit's first purchase touch (smallest value among touches at that time;
    NULL → ``(none)``)."""
    name = q.breakdown
    if name is None:
        return None
    col = q.unit_column
    if name in segments:
        pairs = segment_values(segments, name, col, value_as="v")
    else:
        if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX) and "properties" in touches.columns:
            value: ir.Value = json_get(touches.properties, name[len(PROPERTY_PREFIX):])
        elif name in touches.columns and name not in (col, "properties", "ts"):
            value = touches[name].cast("string")
        else:
            allowed = [c for c in touches.columns if c not in ("properties", "ts")] + [*segments, "properties.<key>"]
            raise UnknownNameError("breakdown", name, allowed)
        t = touches.mutate(_v=value)
        t = t.filter(step_predicate(t, q.purchase) & t[col].notnull())
        t = t.mutate(_first=t.ts.min().over(group_by=t[col]))
        t = t.filter(t.ts == t._first)
        pairs = t.group_by(unit=t[col].cast("string")).aggregate(v=t._v.min())
    df = pairs.to_pyarrow().to_pandas()
    known = set(summary.frame.unit)
    groups: dict[str, list[str]] = {}
    for unit, v in zip(df.unit, df.v, strict=True):
        if unit in known:
            groups.setdefault(NONE_LABEL if v is None or pd.isna(v) else str(v), []).append(str(unit))
    return groups


def clv(touches: ir.Table, query: ValueQuery | None = None, *,
        segments: Mapping[str, ir.Table] | None = None) -> CLVResult:
    """RFM summary of ``touches`` (:func:`rfm_summary`), BG/NBD + Gamma-Gamma fitted on it, CLV per unit.

    With ``query.holdout`` the models are fitted on the calibration period, everything is as of
    the calibration end, and :class:`HoldoutCheck` compares the predictions with the holdout.
    """
    q = query or ValueQuery()
    summary = rfm_summary(touches, q)
    groups = _breakdown_groups(touches, q, segments or {}, summary)
    return fit_rfm(summary.frame, q, calibration_end=summary.calibration_end,
                   observation_end=summary.observation_end, duration_holdout=summary.duration_holdout,
                   breakdown=groups)


def read_rfm_csv(path: str) -> pd.DataFrame:
    """An RFM summary CSV: columns ``frequency``, ``recency``, ``T`` (+ ``monetary_value``); an id
    column (``unit``, ``id``, ``ID``, ``customer_id``, ``person_id``, ``account_id``) is kept as ``unit``."""
    from journeylens.errors import InputFileError

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"cannot read the RFM CSV: {exc}", path=str(path)) from None
    missing = [c for c in RFM_COLUMNS if c not in df.columns]
    if missing:
        raise InputFileError(f"missing column(s) {', '.join(missing)}", path=str(path),
                             hint="an RFM CSV has frequency, recency, T and optionally monetary_value")
    for c in ("unit", "id", "ID", "customer_id", "person_id", "account_id"):
        if c in df.columns:
            df = df.rename(columns={c: "unit"})
            df["unit"] = df.unit.astype(str)
            break
    keep = [c for c in ("unit", *RFM_COLUMNS, "monetary_value") if c in df.columns]
    out = df[keep].copy()
    for c in (*RFM_COLUMNS, "monetary_value"):
        if c in out.columns:
            values = pd.to_numeric(out[c], errors="coerce")
            if values.isna().any():
                line = int(values.isna().to_numpy().argmax()) + 2
                raise InputFileError(f"'{c}' is not a number", path=str(path), line=line, field=c)
            out[c] = values.astype(float)
    return out
