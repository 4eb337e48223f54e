"""Propensity and next best action: per person, the probability to convert or to churn in the
next period, the features that drive it, and the touchpoint with the highest estimated uplift.

The long form with the verification is ``docs/propensity.md``. In short:

* **Timeline.** ``A`` = ``as_of`` (a date means the end of that UTC day; default: the latest
  touch). Touches after ``A`` are never read. ``h`` = ``horizon``. A *cutoff* ``c`` splits time:
  features read the touches with ``ts <= c``, labels the touches with ``c < ts <= c + h``.
  Training cutoff ``T1 = A - 2h``, holdout cutoff ``T2 = A - h`` (its labels end at ``A``),
  scoring cutoff ``A``. The model evaluated is fitted on ``T1`` rows and scored on ``T2`` rows
  (holdout AUC, calibration); the model that scores persons at ``A`` is refitted on the ``T2``
  rows with the same settings.
* **Targets.** ``stage=KEY``: a person *converts* when a touch in ``(c, c + h]`` has
  ``stage_index >=`` the index of stage ``KEY``; the population at ``c`` are persons with a touch
  at or before ``c`` whose furthest stage is below ``KEY``. Any other text is a funnel step filter
  (``purchase``, ``event=purchase&properties.order_number=1``): converting = a matching touch in
  ``(c, c + h]``, the population = persons with a touch at or before ``c`` and no matching touch.
  ``churn``: the population are persons *active* at ``c`` (a touch in ``(c - active_within, c]``,
  default ``active_within = h``); a person churns when it has no touch in ``(c, c + h]``.
* **Features** (computed in Ibis from the touches ``<= c``): ``touches``, ``sessions`` (a new
  session after 30 minutes without a touch), ``active_days`` (distinct UTC dates),
  ``recent_touches`` (in ``(c - h, c]``), ``recency_days`` and ``tenure_days`` (``c`` minus the
  last / first touch), ``revenue`` (sum), ``furthest_stage`` (index, -1 if none), ``touchpoints_seen``,
  ``channels_seen`` (distinct), and a count per event name, channel and touchpoint
  (``event:visit``, ``channel:email``, ``touchpoint:newsletter``) for the ``max_values`` most
  frequent values of each in the touches ``<= A``.
* **Model.** :class:`PropensityModel` — scikit-learn ``HistGradientBoostingClassifier`` with fixed
  settings and ``random_state``.
* **Drivers** of a person: for each feature, ``p(x) - p(x with that feature set to its median over
  the scored persons)``; the ``top_drivers`` largest by absolute value. A local, one-at-a-time
  sensitivity, not a causal effect.
* **Next best action.** Uplift of an action value ``a`` (a touchpoint, or a channel) for persons at
  stage ``s`` (and persona ``p`` when a persona segment is given), pooled over the labelled cutoffs
  ``c_k``: conversion — ``c_k = A - k h`` (``k = 1..uplift_cutoffs``), *treated* = a touch at ``a``
  in ``(c, c + h]`` before the person's first target touch there, uplift = conversion rate of the
  treated minus that of the others; churn — ``c_k = A - (k + 1) h``, population = persons active at
  ``c`` with a touch in ``(c, c + h]``, treated = a touch at ``a`` in ``(c, c + h]``, outcome = no
  touch in ``(c + h, c + 2h]``, uplift = churn rate of the others minus that of the treated.
  Confidence intervals are Newcombe's hybrid score intervals for a difference of proportions.
  An action qualifies with at least ``min_n`` treated and ``min_n`` untreated persons; action
  values of touches that are the conversion target itself are excluded. A person's next best
  action is the qualifying action with the largest positive uplift in its (stage, persona) cell,
  else in its stage over all personas, else none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from journeylens.analyses._relations import nullable as _nullable
from journeylens.analyses._time import parse_duration, parse_instant, utc_instant
from journeylens.analyses.funnel import Step, check_step_fields, step_predicate
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey import JourneyModel
from journeylens.store.functions import seconds_between

CHURN = "churn"
ACTIONS = ("touchpoint", "channel")
BASELINES = ("active", "all")
"""Uplift comparison group: persons of the cell active in the period without the action, or all
persons of the cell without it (conversion targets; churn uplifts always compare active persons)."""
DEFAULT_HORIZON = "30d"
SESSION_GAP_SECONDS = 30 * 60
"""A touch more than this after the previous touch of the person starts a new session."""
DAY_SECONDS = 86_400
BASE_FEATURES = (
    "touches", "sessions", "active_days", "recent_touches", "recency_days", "tenure_days", "revenue",
    "furthest_stage", "touchpoints_seen", "channels_seen",
)
"""Features every person gets; then one count per frequent event, channel and touchpoint."""
COUNTED = ("event", "channel", "touchpoint")
"""Columns whose frequent values become count features (``event:<value>`` ...)."""

_U = "_u"
_TS = "ts"
NONE = "(none)"
"""Persona value of persons in no segment of ``query.persona``."""
_STAGE_TARGET = re.compile(r"^\s*stage\s*(?:=|>=)\s*([A-Za-z0-9_\-]+)\s*$")


# ============================================================================ request model
class PropensityQuery(BaseModel):
    """Everything a propensity run needs besides the touches (shared by Python, CLI and REST).

    ``target``: ``stage=KEY``, ``churn`` or a funnel step filter (``purchase``,
    ``event=purchase&properties.order_number=1``). ``as_of``: end of the data (date = end of that
    UTC day; None = the latest touch). ``horizon``: the period to predict (``30d``, ``4w``).
    ``active_within``: churn only, how recent a touch must be for a person to count as active
    (default: ``horizon``). ``action``: next best actions are ``touchpoint`` or ``channel`` values.
    ``persona``: name of a segment table (``person_id``, ``value``) that refines the next best
    action cells. ``min_n``: smallest treated and untreated groups for an uplift. ``confidence``:
    level of the uplift intervals. ``top_drivers``: drivers per person. ``max_values``: count
    features per counted column. ``uplift_cutoffs``: labelled cutoffs pooled for uplifts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = "stage=decision"
    as_of: datetime | date | None = None
    horizon: str | int = DEFAULT_HORIZON
    active_within: str | int | None = None
    action: str = "touchpoint"
    persona: str | None = None
    min_n: int = 20
    confidence: float = 0.95
    top_drivers: int = 3
    max_values: int = 25
    uplift_cutoffs: int = 3
    baseline: str = "active"
    random_state: int = 0

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid propensity query: " + "; ".join(parts)) from None

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, v: Any) -> Any:
        return parse_instant(v)

    @model_validator(mode="after")
    def _validate(self) -> PropensityQuery:
        if not self.target.strip():
            raise InvalidParameterError("target is empty", hint="stage=decision, churn or an event such as purchase")
        self.horizon_seconds  # noqa: B018 - parses (raises on a bad duration)
        if self.active_within is not None and self.target_kind != CHURN:
            raise InvalidParameterError("active_within applies to the churn target only")
        self.active_seconds  # noqa: B018
        if self.target_kind == "event":
            self.step  # noqa: B018
        if self.baseline not in BASELINES:
            raise UnknownNameError("baseline", self.baseline, BASELINES)
        if self.action not in ACTIONS:
            raise UnknownNameError("action", self.action, ACTIONS)
        for name, value, low in (("min_n", self.min_n, 1), ("top_drivers", self.top_drivers, 0),
                                 ("max_values", self.max_values, 0), ("uplift_cutoffs", self.uplift_cutoffs, 1)):
            if value < low:
                raise InvalidParameterError(f"{name} must be at least {low}, got {value}")
        if not 0.5 <= self.confidence < 1:
            raise InvalidParameterError(f"confidence must be in [0.5, 1), got {self.confidence}")
        return self

    # derived values -----------------------------------------------------------------
    @property
    def target_kind(self) -> Literal["stage", "churn", "event"]:
        text = self.target.strip()
        if text.lower() == CHURN:
            return "churn"
        return "stage" if _STAGE_TARGET.match(text) else "event"

    @property
    def target_stage(self) -> str | None:
        m = _STAGE_TARGET.match(self.target)
        return m.group(1) if m and self.target_kind == "stage" else None

    @property
    def step(self) -> Step:
        """The target as a funnel step (event targets only)."""
        return Step.parse(self.target.strip())

    @property
    def horizon_seconds(self) -> int:
        return parse_duration(self.horizon, name="horizon")

    @property
    def active_seconds(self) -> int:
        return self.horizon_seconds if self.active_within is None else parse_duration(
            self.active_within, name="active_within")

    @property
    def as_of_time(self) -> datetime | None:
        return utc_instant(self.as_of)

    @property
    def probability_column(self) -> str:
        return "p_churn" if self.target_kind == "churn" else "p_convert"


# ============================================================================ model
class PropensityModel:
    """Gradient boosting with a scikit-learn face: settings in ``__init__``, :meth:`fit` returns
    self, fitted values end in ``_``.

    ``HistGradientBoostingClassifier(learning_rate=0.05, max_iter=200, max_leaf_nodes=15,
    min_samples_leaf=20, l2_regularization=1.0, early_stopping=False, random_state=...)``.
    Fitting and prediction run on ``n_threads`` OpenMP threads (default 1: on a shared machine
    OpenMP's busy waiting made a fit 15 times slower with all cores than with one).
    """

    def __init__(self, *, random_state: int = 0, learning_rate: float = 0.05, max_iter: int = 200,
                 max_leaf_nodes: int = 15, min_samples_leaf: int = 20, l2_regularization: float = 1.0,
                 n_threads: int = 1) -> None:
        self.random_state = random_state
        self.n_threads = n_threads
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization

    def fit(self, X: np.ndarray, y: np.ndarray) -> PropensityModel:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise InvalidParameterError(
                f"cannot train: all {len(y)} training persons have the same label",
                hint="choose another as_of, a longer horizon or another target")
        estimator = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate, max_iter=self.max_iter, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=False, random_state=self.random_state,
        )
        with threadpool_limits(self.n_threads):
            self.estimator_ = estimator.fit(np.asarray(X, dtype=float), y)
        self.n_train_ = len(y)
        self.positive_rate_ = float(y.mean())
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of label 1 per row."""
        from threadpoolctl import threadpool_limits

        if len(X) == 0:
            return np.zeros(0)
        with threadpool_limits(self.n_threads):
            proba: np.ndarray = self.estimator_.predict_proba(np.asarray(X, dtype=float))[:, 1]
        return proba

    def contributions(self, X: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """``out[i, j] = p(X[i]) - p(X[i] with feature j set to reference[j])``; ``reference``
        defaults to the column medians of ``X``."""
        X = np.asarray(X, dtype=float)
        n, m = X.shape
        if n == 0 or m == 0:
            return np.zeros((n, m))
        ref = np.median(X, axis=0) if reference is None else np.asarray(reference, dtype=float)
        base = self.predict_proba(X)
        out = np.empty((n, m))
        per_batch = max(1, 200_000 // n)  # features changed per predict call
        for start in range(0, m, per_batch):
            cols = range(start, min(m, start + per_batch))
            changed = np.concatenate([X] * len(cols))
            for b, j in enumerate(cols):
                changed[b * n:(b + 1) * n, j] = ref[j]
            p = self.predict_proba(changed)
            for b, j in enumerate(cols):
                out[:, j] = base - p[b * n:(b + 1) * n]
        return out


def roc_auc(y: Sequence[int] | np.ndarray, p: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve (scikit-learn); None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, np.asarray(p, dtype=float)))


# ============================================================================ result
@dataclass(frozen=True)
class Driver:
    feature: str
    value: float
    effect: float
    """``p(x) - p(x with this feature at the median)``: positive = raises the probability."""

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else round(self.value, 2)
        return f"{self.feature}={v} ({self.effect:+.3f})"

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "effect": self.effect}


@dataclass(frozen=True)
class ActionUplift:
    stage: str
    persona: str | None
    """None = all personas of the stage."""
    action: str
    treated: int
    treated_rate: float
    untreated: int
    untreated_rate: float
    uplift: float
    """Conversion: treated rate minus untreated rate; churn: untreated minus treated rate."""
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "persona": self.persona, "action": self.action, "treated": self.treated,
                "treated_rate": self.treated_rate, "untreated": self.untreated,
                "untreated_rate": self.untreated_rate, "uplift": self.uplift, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PersonScore:
    person_id: str
    stage: str | None
    """Furthest stage at ``as_of`` (None: no touch matched a stage)."""
    probability: float
    drivers: tuple[Driver, ...]
    next_best_action: str | None
    uplift: float | None
    uplift_low: float | None
    uplift_high: float | None
    persona: str | None = None


@dataclass(frozen=True)
class PersonaSummary:
    """One persona (segment value) of ``query.persona``: its scored persons and the holdout
    evaluation of the (everyone) model restricted to its persons."""

    persona: str
    persons: int
    """Scored persons at ``as_of`` with this value."""
    mean_probability: float | None
    holdout_persons: int
    holdout_positive_rate: float | None
    holdout_mean_predicted: float | None
    holdout_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evaluation:
    """The model fitted at the training cutoff, scored at the holdout cutoff."""

    train_cutoff: datetime
    holdout_cutoff: datetime
    train_persons: int
    train_positive_rate: float
    holdout_persons: int
    holdout_positive_rate: float
    holdout_mean_predicted: float
    holdout_auc: float | None
    holdout_brier: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PropensityResult:
    query: PropensityQuery
    as_of: datetime
    features: tuple[str, ...]
    evaluation: Evaluation
    importance: tuple[tuple[str, float], ...]
    """Features by mean absolute driver effect over the scored persons, largest first."""
    uplifts: tuple[ActionUplift, ...]
    """Every qualifying (stage, persona, action) uplift, by stage, persona, uplift descending."""
    persons: tuple[PersonScore, ...]
    """Scored persons at ``as_of``, highest probability first."""
    excluded_actions: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    by_persona: tuple[PersonaSummary, ...] = ()
    """With ``query.persona``: per value, scored persons and the holdout evaluation (most persons first)."""

    @property
    def target(self) -> str:
        return self.query.target

    def top(self, n: int) -> tuple[PersonScore, ...]:
        return self.persons[:n]

    def to_pandas(self, limit: int | None = None) -> pd.DataFrame:
        """One row per scored person (CRM export): ``person_id, stage, [persona,] p_convert|p_churn,
        driver_1..k, next_best_action, uplift, uplift_low, uplift_high``."""
        col = self.query.probability_column
        k = self.query.top_drivers
        rows = []
        for s in self.persons[:limit]:
            row: dict[str, Any] = {"person_id": s.person_id, "stage": s.stage}
            if self.query.persona is not None:
                row["persona"] = s.persona
            row[col] = s.probability
            for i in range(k):
                row[f"driver_{i + 1}"] = str(s.drivers[i]) if i < len(s.drivers) else None
            row.update(next_best_action=s.next_best_action, uplift=s.uplift, uplift_low=s.uplift_low,
                       uplift_high=s.uplift_high)
            rows.append(row)
        columns = ["person_id", "stage", *(["persona"] if self.query.persona is not None else []), col,
                   *(f"driver_{i + 1}" for i in range(k)), "next_best_action", "uplift", "uplift_low", "uplift_high"]
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path: str | Path | None = None) -> str:
        """All scored persons as CSV (written to ``path`` when given); returns the text."""
        buf = StringIO()
        self.to_pandas().to_csv(buf, index=False)
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def uplifts_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([u.to_dict() for u in self.uplifts],
                            columns=["stage", "persona", "action", "treated", "treated_rate", "untreated",
                                     "untreated_rate", "uplift", "low", "high"])

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        q = self.query
        return {
            "target": q.target, "target_kind": q.target_kind, "as_of": self.as_of.isoformat(),
            "horizon_seconds": q.horizon_seconds, "action": q.action, "persona": q.persona,
            "evaluation": self.evaluation.to_dict(),
            "features": list(self.features),
            "importance": [{"feature": f, "mean_abs_effect": v} for f, v in self.importance],
            "excluded_actions": list(self.excluded_actions),
            "uplifts": [u.to_dict() for u in self.uplifts],
            **({"by_persona": [b.to_dict() for b in self.by_persona]} if q.persona is not None else {}),
            "persons_scored": len(self.persons),
            "persons": [
                {"person_id": s.person_id, "stage": s.stage, "persona": s.persona, q.probability_column: s.probability,
                 "drivers": [d.to_dict() for d in s.drivers], "next_best_action": s.next_best_action,
                 "uplift": s.uplift, "uplift_low": s.uplift_low, "uplift_high": s.uplift_high}
                for s in self.persons[:limit]
            ],
        }

    def figure(self) -> Any:
        """Bar chart of the global feature importance (mean absolute driver effect)."""
        import plotly.graph_objects as go

        top = list(self.importance[:15])[::-1]
        fig = go.Figure(go.Bar(x=[v for _, v in top], y=[f for f, _ in top], orientation="h"))
        auc = self.evaluation.holdout_auc
        fig.update_layout(title=f"Propensity — {self.query.target} (holdout AUC "
                                f"{'–' if auc is None else f'{auc:.3f}'})",
                          xaxis_title="mean |change in probability| at the median")
        return fig


# ============================================================================ computation
@dataclass(frozen=True)
class _Plan:
    query: PropensityQuery
    base: ir.Table
    """Touches with ``_u`` (person id as text) up to ``as_of``."""
    as_of: datetime
    has_target: bool
    """False for churn (no touch is a target)."""
    stage_index: int | None
    stage_names: Mapping[int, str]
    vocab: Mapping[str, tuple[str, ...]]
    excluded: tuple[str, ...]
    """Action values of touches that are the conversion target itself."""

    @property
    def h(self) -> timedelta:
        return timedelta(seconds=self.query.horizon_seconds)

    def lit(self, t: datetime) -> ir.TimestampValue:
        return ibis.literal(t, type=self.base[_TS].type())

    def feature_columns(self) -> list[tuple[str, str]]:
        """(internal column, feature name) in model order."""
        out = [("stage_index" if f == "furthest_stage" else f, f) for f in BASE_FEATURES]
        for col in COUNTED:
            out += [(f"_{col}_{i}", f"{col}:{v}") for i, v in enumerate(self.vocab.get(col, ()))]
        return out


@dataclass(frozen=True)
class Dataset:
    """Feature rows of one cutoff: ``frame`` has ``person_id``, the features, ``stage_index`` and
    ``label`` (NaN when the horizon after the cutoff is not observed)."""

    cutoff: datetime
    frame: pd.DataFrame
    features: tuple[str, ...]

    @property
    def X(self) -> np.ndarray:
        return self.frame[list(self.features)].to_numpy(dtype=float)

    @property
    def y(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=int)


def _utc(v: Any) -> datetime:
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def _plan(touches: ir.Table, q: PropensityQuery, model: JourneyModel | None) -> _Plan:
    """Validate ``q`` against ``touches`` and cache the touches it reads (``_u``, ``ts``, the counted
    columns, ``revenue``, ``stage_index``, ``_target`` = 1 where a touch is the conversion target)."""
    for needed in ("person_id", _TS):
        if needed not in touches.columns:
            raise UnknownNameError("column", needed, touches.columns)
    kind = q.target_kind
    if kind == "event":
        check_step_fields(touches, [q.step])
    if q.action not in touches.columns:
        raise UnknownNameError("column", q.action, touches.columns)
    t = touches.filter(touches.person_id.notnull())
    as_of = q.as_of_time
    if as_of is None:
        latest = t[_TS].max().to_pyarrow().as_py()
        if latest is None:
            raise InvalidParameterError("there are no touches to learn from", hint="import events first")
        as_of = _utc(latest)
    t = t.filter(t[_TS] <= ibis.literal(as_of, type=t[_TS].type()))

    stage_names: dict[int, str] = {}
    if model is not None:
        stage_names = {i: s.key for i, s in enumerate(model.stages)}
    elif "stage_index" in t.columns and "stage" in t.columns:
        rows = t.filter(t.stage_index.notnull()).select("stage_index", "stage").distinct().to_pyarrow().to_pylist()
        stage_names = {int(r["stage_index"]): str(r["stage"]) for r in rows}
    stage_index = None
    target: ir.Value = ibis.literal(0, "int64")
    if kind == "stage":
        if "stage_index" not in t.columns:
            raise UnknownNameError("column", "stage_index", t.columns)
        key = q.target_stage
        by_key = {v: k for k, v in stage_names.items()}
        if key not in by_key:
            raise UnknownNameError("stage", str(key), by_key)
        stage_index = by_key[key]
        target = (t.stage_index >= stage_index).fill_null(False).cast("int64")
    elif kind == "event":
        target = step_predicate(t, q.step).cast("int64")
    cols: dict[str, ir.Value] = {_U: t.person_id.cast("string"), _TS: t[_TS], "_target": target}
    for c in COUNTED:
        cols[c] = t[c].cast("string") if c in t.columns else ibis.null("string")
    cols["revenue"] = t.revenue.cast("float64") if "revenue" in t.columns else ibis.null("float64")
    cols["stage_index"] = t.stage_index.cast("int64") if "stage_index" in t.columns else ibis.null("int64")
    base = t.select(**cols)
    vocab, excluded = _vocabulary(base, q, stage_index)
    return _Plan(q, base, as_of, kind != "churn", stage_index, stage_names, vocab, excluded)



def _union(parts: Sequence[ir.Table]) -> ir.Table:
    u = _nullable(parts[0])
    for p in parts[1:]:
        u = u.union(_nullable(p.select(*parts[0].columns)))
    return u


def _vocabulary(t: ir.Table, q: PropensityQuery, stage_index: int | None) -> tuple[dict[str, tuple[str, ...]],
                                                                                  tuple[str, ...]]:
    """(one query) The ``max_values`` most frequent values of each counted column (ties by value),
    and the touchpoints of touches that are the conversion target itself (stage target: the
    touches placed in the target stage; event target: the matching touches). Channel actions
    and churn exclude nothing: a channel is where a session came from, never the target."""
    parts = []
    for col in COUNTED if q.max_values else ():
        s = t.filter(t[col].notnull()).select(v=t[col])
        parts.append(s.group_by("v").aggregate(n=s.count()).mutate(col=ibis.literal(col)))
    if q.target_kind != "churn" and q.action == "touchpoint":
        hits = t.filter(t.stage_index == stage_index) if q.target_kind == "stage" else t.filter(t._target == 1)
        hits = hits.filter(hits[q.action].notnull()).select(v=hits[q.action])
        parts.append(hits.group_by("v").aggregate(n=hits.count()).mutate(col=ibis.literal("_excluded")))
    if not parts:
        return {}, ()
    rows = _union(parts).to_pyarrow().to_pylist()
    out: dict[str, tuple[str, ...]] = {}
    for col in COUNTED if q.max_values else ():
        mine = sorted((r for r in rows if r["col"] == col), key=lambda r: (-int(r["n"]), str(r["v"])))
        out[col] = tuple(str(r["v"]) for r in mine[: q.max_values])
    excluded = tuple(sorted(str(r["v"]) for r in rows if r["col"] == "_excluded"))
    return out, excluded


def _person_state(plan: _Plan, cutoff: datetime) -> ir.Table:
    """``_u, stage_index, reached, last_ts`` per person with a touch at or before ``cutoff``."""
    t = plan.base.filter(plan.base[_TS] <= plan.lit(cutoff))
    return t.group_by(_U).aggregate(stage_index=t.stage_index.max(), reached=t._target.max(), last_ts=t[_TS].max())


def _person_rows(plan: _Plan, cutoff: datetime) -> ir.Table:
    """One row per person with a touch at or before ``cutoff``: features, ``stage_index``,
    ``reached`` (a target touch at or before the cutoff; 0/1), ``last_ts``."""
    c = plan.lit(cutoff)
    t = plan.base.filter(plan.base[_TS] <= c)
    prev = t[_TS].lag().over(ibis.window(group_by=_U, order_by=[t[_TS]]))
    t = t.mutate(_new=ibis.cases((prev.isnull(), 1), (seconds_between(t[_TS], prev) > SESSION_GAP_SECONDS, 1), else_=0),
                 _recent=(t[_TS] > plan.lit(cutoff - plan.h)).cast("int64"))
    aggs: dict[str, ir.Value] = {
        "touches": t.count(),
        "sessions": t._new.sum(),
        "active_days": t[_TS].date().nunique(),
        "recent_touches": t._recent.sum(),
        "first_ts": t[_TS].min(),
        "last_ts": t[_TS].max(),
        "revenue": t.revenue.sum(),
        "stage_index": t.stage_index.max(),
        "touchpoints_seen": t.touchpoint.nunique(),
        "channels_seen": t.channel.nunique(),
        "reached": t._target.max(),
    }
    for col in COUNTED:
        for i, v in enumerate(plan.vocab.get(col, ())):
            aggs[f"_{col}_{i}"] = (t[col] == v).cast("int64").sum()
    per = t.group_by(_U).aggregate(**aggs)
    return per.mutate(recency_days=seconds_between(c, per.last_ts) / DAY_SECONDS,
                      tenure_days=seconds_between(c, per.first_ts) / DAY_SECONDS)


def _labels(plan: _Plan, start: datetime, end: datetime) -> ir.Table:
    """``_u, hit_ts``: per person with a touch in ``(start, end]`` the first target touch there
    (NULL when none; churn: the first touch)."""
    b = plan.base
    w = b.filter((b[_TS] > plan.lit(start)) & (b[_TS] <= plan.lit(end)))
    w = w.mutate(_h=(w._target == 1) if plan.has_target else ibis.literal(True))
    return w.group_by(_U).aggregate(hit_ts=ibis.cases((w._h, w[_TS]), else_=ibis.null(w[_TS].type().copy(nullable=True))).min(),
                                    any_ts=w[_TS].min())


def _population(plan: _Plan, cutoff: datetime) -> ir.Table:
    """Person rows at ``cutoff`` in the target's population, with ``label`` (NULL when the
    horizon after the cutoff passes ``as_of``)."""
    q = plan.query
    rows = _person_rows(plan, cutoff)
    if q.target_kind == "churn":
        active_from = cutoff - timedelta(seconds=q.active_seconds)
        rows = rows.filter(rows.last_ts > plan.lit(active_from))
    else:
        rows = rows.filter(rows.reached == 0)
    end = cutoff + plan.h
    if end > plan.as_of:
        return rows.mutate(label=ibis.null("int64"))
    lab = _labels(plan, cutoff, end)
    j = rows.left_join(lab, _U)
    if q.target_kind == "churn":
        label = j.any_ts.isnull().cast("int64")
    else:
        label = j.hit_ts.notnull().cast("int64")
    return j.select(*rows.columns, label=label)


def dataset(touches: ir.Table, query: PropensityQuery, cutoff: datetime | date | str, *,
            model: JourneyModel | None = None) -> Dataset:
    """The feature rows of the target's population at one ``cutoff`` (for inspection and tests)."""
    return datasets(touches, query, [cutoff], model=model)[0]


def datasets(touches: ir.Table, query: PropensityQuery, cutoffs: Sequence[datetime | date | str], *,
             model: JourneyModel | None = None) -> list[Dataset]:
    """The feature rows at each of ``cutoffs`` (a date = the end of that UTC day), one query."""
    times = [PropensityQuery(as_of=parse_instant(c)).as_of_time for c in cutoffs]
    return _collect(_plan(touches, query, model), [t for t in times if t is not None])


def _collect(plan: _Plan, cutoffs: Sequence[datetime]) -> list[Dataset]:
    """The datasets of ``cutoffs`` (one backend query)."""
    cols = plan.feature_columns()
    names = [_U, *dict.fromkeys(internal for internal, _ in cols), "label"]

    parts = [_population(plan, c).select(*names, _cut=ibis.literal(i, "int64")) for i, c in enumerate(cutoffs)]
    u = _union(parts)
    frame = u.to_pandas()
    out: list[Dataset] = []
    for i, c in enumerate(cutoffs):
        f = frame[frame["_cut"] == i]
        d = pd.DataFrame({"person_id": f[_U].astype(str).to_numpy()})
        for internal, name in cols:
            d[name] = pd.to_numeric(f[internal], errors="coerce").to_numpy(dtype=float)
        d["furthest_stage"] = d["furthest_stage"].fillna(-1)
        d[[n for _, n in cols]] = d[[n for _, n in cols]].fillna(0.0)
        d["stage_index"] = pd.to_numeric(f["stage_index"], errors="coerce").to_numpy(dtype=float)
        d["label"] = pd.to_numeric(f["label"], errors="coerce").to_numpy(dtype=float)
        d = d.sort_values("person_id", kind="stable").reset_index(drop=True)
        out.append(Dataset(c, d, tuple(name for _, name in cols)))
    return out


# ---------------------------------------------------------------- uplift
def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, mid - half), min(1.0, mid + half))


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float) -> tuple[float, float, float]:
    """``p1 - p2`` and Newcombe's hybrid score interval (method 10 of Newcombe 1998)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _uplift_cells(plan: _Plan, persona: ir.Table | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Counts pooled over the labelled uplift cutoffs: ``totals`` per (stage_index, persona) with
    ``n``, ``y``; ``treated`` per (stage_index, persona, action) with ``n``, ``y`` (y = outcome 1:
    converted, or churned)."""
    q = plan.query
    h = plan.h
    churn = q.target_kind == "churn"
    act_col = q.action
    pops: list[ir.Table] = []
    acts: list[ir.Table] = []
    b = plan.base
    for k in range(1, q.uplift_cutoffs + 1):
        c = plan.as_of - (k + 1) * h if churn else plan.as_of - k * h
        rows = _person_state(plan, c)
        nxt = _labels(plan, c, c + h)
        if churn:
            rows = rows.filter(rows.last_ts > plan.lit(c - timedelta(seconds=q.active_seconds)))
            after = _labels(plan, c + h, c + 2 * h)
            pop = rows.join(nxt, _U).select(_U, "stage_index")
            pop = pop.left_join(after, _U).select(_U, "stage_index", y=after.any_ts.isnull().cast("int64"))
            w = b.filter((b[_TS] > plan.lit(c)) & (b[_TS] <= plan.lit(c + h)))
        else:
            rows = rows.filter(rows.reached == 0)
            pop = rows.left_join(nxt, _U).select(_U, "stage_index", y=nxt.hit_ts.notnull().cast("int64"),
                                                  hit_ts=nxt.hit_ts)
            w = b.filter((b[_TS] > plan.lit(c)) & (b[_TS] <= plan.lit(c + h)))
            w = w.join(pop.select(_U, _hit=pop.hit_ts), _U)
            w = w.filter(w._hit.isnull() | (w[_TS] < w._hit))
        a = w.filter(w[act_col].notnull()).select(_U, action=w[act_col].cast("string")).distinct()
        if q.baseline == "active" and not churn:
            pop = pop.semi_join(a.select(_U).distinct(), _U)
        pop = pop.mutate(_k=ibis.literal(k, "int64"))
        acts.append(a.mutate(_k=ibis.literal(k, "int64")))
        pops.append(pop.select(_U, "_k", "stage_index", "y"))
    pop_all = _union(pops)
    act_all = _union(acts)
    if persona is not None:
        pv = persona.group_by(_U).aggregate(persona=persona.value.min())
        pop_all = pop_all.left_join(pv, _U).select(*pop_all.columns, persona=pv.persona)
    else:
        pop_all = pop_all.mutate(persona=ibis.null("string"))
    totals = pop_all.group_by("stage_index", "persona").aggregate(n=pop_all.count(), y=pop_all.y.sum())
    pairs = act_all.join(pop_all, [_U, "_k"])
    treated = pairs.group_by("stage_index", "persona", "action").aggregate(n=pairs.count(), y=pairs.y.sum())
    both = totals.mutate(action=ibis.null("string")).select("stage_index", "persona", "action", "n", "y")
    rows = _union([both, treated]).to_pyarrow().to_pylist()
    return [r for r in rows if r["action"] is None], [r for r in rows if r["action"] is not None]


def _uplifts(plan: _Plan, persona: ir.Table | None, excluded: Sequence[str]) -> list[ActionUplift]:
    q = plan.query
    z = _z(q.confidence)
    churn = q.target_kind == "churn"
    totals, treated = _uplift_cells(plan, persona)
    # cells: (stage_index, persona) plus the stage-wide cell (stage_index, None)
    tot: dict[tuple[int, str | None], list[int]] = {}
    trt: dict[tuple[int, str | None, str], list[int]] = {}
    for r in totals:
        if r["stage_index"] is None:
            continue
        s = int(r["stage_index"])
        keys = [(s, None)] + ([(s, r["persona"] or "(none)")] if persona is not None else [])
        for key in keys:
            cur = tot.setdefault(key, [0, 0])
            cur[0] += int(r["n"])
            cur[1] += int(r["y"] or 0)
    for r in treated:
        if r["stage_index"] is None or r["action"] in excluded:
            continue
        s = int(r["stage_index"])
        cells = [(s, None)] + ([(s, r["persona"] or "(none)")] if persona is not None else [])
        for cell in cells:
            cur = trt.setdefault((*cell, str(r["action"])), [0, 0])
            cur[0] += int(r["n"])
            cur[1] += int(r["y"] or 0)
    out: list[ActionUplift] = []
    for (s, p, a), (nt, yt) in trt.items():
        n, y = tot.get((s, p), (0, 0))
        nu, yu = n - nt, y - yt
        if nt < q.min_n or nu < q.min_n:
            continue
        if churn:  # fewer churners among the treated is good
            d, lo, hi = newcombe(yu, nu, yt, nt, z)
        else:
            d, lo, hi = newcombe(yt, nt, yu, nu, z)
        out.append(ActionUplift(stage=plan.stage_names.get(s, str(s)), persona=p, action=a, treated=nt,
                                treated_rate=yt / nt, untreated=nu, untreated_rate=yu / nu, uplift=d, low=lo, high=hi))
    order = {v: k for k, v in plan.stage_names.items()}
    out.sort(key=lambda u: (order.get(u.stage, 99), u.persona is not None, u.persona or "", -u.uplift, u.action))
    return out


# ---------------------------------------------------------------- entry point
def propensity(touches: ir.Table, query: PropensityQuery | None = None, *, model: JourneyModel | None = None,
               segments: Mapping[str, ir.Table] | None = None,
               persons: Sequence[str] | ir.Table | None = None) -> PropensityResult:
    """Fit, evaluate and apply a propensity model for ``query.target`` (see the module docstring).

    ``touches`` needs ``person_id``, ``ts`` and, for stage targets and stage features,
    ``stage``/``stage_index`` (``Workspace.touches(model)``). ``model`` names the stages (else
    they are read from the touches). ``segments`` maps names to tables with ``person_id`` and
    ``value``; ``query.persona`` picks one of them for the next-best-action cells and the
    per-persona summary (``by_persona``). ``persons`` (ids, or a table whose ``person_id`` or
    only column holds them) keeps only those persons in the scored list and the
    per-persona summary; the model, its overall evaluation and the uplifts use everyone.
    """
    q = query if query is not None else PropensityQuery()
    if not isinstance(q, PropensityQuery):
        raise InvalidParameterError("propensity() needs a PropensityQuery")
    plan = _plan(touches, q, model)
    persona = None
    if q.persona is not None:
        segs = segments or {}
        if q.persona not in segs:
            raise UnknownNameError("segment", q.persona, segs)
        seg = segs[q.persona]
        if "person_id" not in seg.columns or "value" not in seg.columns:
            raise InvalidParameterError(f"segment table '{q.persona}' needs columns person_id and value")
        persona = seg.select(**{_U: seg.person_id.cast("string"), "value": seg.value.cast("string")})
    keep: set[str] | None = None
    if isinstance(persons, ir.Table):
        c = "person_id" if "person_id" in persons.columns else persons.columns[0]
        if "person_id" not in persons.columns and len(persons.columns) != 1:
            raise InvalidParameterError("the table of persons to keep needs a column person_id (or exactly one column)")
        keep = {str(x) for x in persons.select(c).to_pyarrow().column(c).to_pylist()}
    elif isinstance(persons, str):
        raise InvalidParameterError("persons must be a list of ids, not one string")
    elif persons is not None:
        keep = {str(x) for x in persons}
    return _run(plan, persona, keep)


def _persona_summary(persona_of: Mapping[str, str], scored: Sequence[PersonScore], holdout: Dataset,
                     p_hold: np.ndarray, keep: set[str] | None) -> tuple[PersonaSummary, ...]:
    """Per persona value: scored persons, mean probability, the holdout rows' evaluation (only
    the persons of ``keep`` when given)."""
    ids = [str(i) for i in holdout.frame["person_id"]]
    hold_values = np.array([persona_of.get(i, NONE) for i in ids], dtype=object)
    y_hold = holdout.y
    if keep is not None:
        kept = np.array([i in keep for i in ids], dtype=bool)
        hold_values, y_hold, p_hold = hold_values[kept], y_hold[kept], p_hold[kept]
    scored_by: dict[str, list[float]] = {}
    for s in scored:
        scored_by.setdefault(s.persona or NONE, []).append(s.probability)
    values = set(scored_by) | set(hold_values.tolist())
    out = []
    for v in values:
        mask = hold_values == v
        n_h = int(mask.sum())
        probs = scored_by.get(v, [])
        out.append(PersonaSummary(
            persona=v, persons=len(probs), mean_probability=float(np.mean(probs)) if probs else None,
            holdout_persons=n_h, holdout_positive_rate=float(y_hold[mask].mean()) if n_h else None,
            holdout_mean_predicted=float(p_hold[mask].mean()) if n_h else None,
            holdout_auc=roc_auc(y_hold[mask], p_hold[mask]) if n_h else None))
    out.sort(key=lambda b: (-b.persons, -b.holdout_persons, b.persona))
    return tuple(out)


def _run(plan: _Plan, persona: ir.Table | None, keep: set[str] | None = None) -> PropensityResult:
    q = plan.query
    t2 = plan.as_of - plan.h
    t1 = t2 - plan.h
    train, holdout, score = _collect(plan, [t1, t2, plan.as_of])
    for name, ds in (("training", train), ("holdout", holdout)):
        if len(ds.frame) == 0:
            raise InvalidParameterError(
                f"no persons in the {name} population at {ds.cutoff.isoformat()}",
                hint="the data must span at least two horizons before as_of; shorten --horizon")

    fitted = PropensityModel(random_state=q.random_state).fit(train.X, train.y)
    p_hold = fitted.predict_proba(holdout.X)
    y_hold = holdout.y
    evaluation = Evaluation(
        train_cutoff=t1, holdout_cutoff=t2, train_persons=len(train.frame),
        train_positive_rate=float(train.y.mean()), holdout_persons=len(holdout.frame),
        holdout_positive_rate=float(y_hold.mean()), holdout_mean_predicted=float(p_hold.mean()),
        holdout_auc=roc_auc(y_hold, p_hold), holdout_brier=float(np.mean((p_hold - y_hold) ** 2)),
    )
    final = PropensityModel(random_state=q.random_state).fit(holdout.X, holdout.y)
    X = score.X
    p = final.predict_proba(X)
    contrib = final.contributions(X) if q.top_drivers else np.zeros((len(X), 0))
    feats = score.features
    importance: tuple[tuple[str, float], ...] = ()
    if contrib.size:
        mean_abs = np.abs(contrib).mean(axis=0)
        importance = tuple((feats[j], float(mean_abs[j])) for j in np.argsort(-mean_abs, kind="stable"))

    excluded = plan.excluded
    uplifts = _uplifts(plan, persona, excluded)
    best: dict[tuple[str, str | None], ActionUplift] = {}
    for u in uplifts:
        key = (u.stage, u.persona)
        if u.uplift > 0 and (key not in best or u.uplift > best[key].uplift):
            best[key] = u
    persona_of: dict[str, str] = {}
    if persona is not None:
        pv = persona.group_by(_U).aggregate(v=persona.value.min()).to_pyarrow().to_pylist()
        persona_of = {str(r[_U]): str(r["v"]) for r in pv}

    persons: list[PersonScore] = []
    stage_idx = score.frame["stage_index"].to_numpy()
    ids = score.frame["person_id"].tolist()
    order = np.lexsort((np.array(ids, dtype=object).astype(str), -p))
    for i in order:
        si = stage_idx[i]
        stage = None if pd.isna(si) else plan.stage_names.get(int(si), str(int(si)))
        pers = persona_of.get(ids[i], "(none)") if persona is not None else None
        nba = None
        if stage is not None:
            nba = best.get((stage, pers)) if persona is not None else None
            nba = nba or best.get((stage, None))
        drivers: tuple[Driver, ...] = ()
        if contrib.size:
            top = np.argsort(-np.abs(contrib[i]), kind="stable")[: q.top_drivers]
            drivers = tuple(Driver(feats[j], float(X[i, j]), float(contrib[i, j])) for j in top
                            if contrib[i, j] != 0)
        persons.append(PersonScore(
            person_id=ids[i], stage=stage, probability=float(p[i]), drivers=drivers,
            next_best_action=None if nba is None else nba.action, uplift=None if nba is None else nba.uplift,
            uplift_low=None if nba is None else nba.low, uplift_high=None if nba is None else nba.high,
            persona=pers,
        ))
    if keep is not None:
        persons = [s for s in persons if s.person_id in keep]
    by_persona = _persona_summary(persona_of, persons, holdout, p_hold, keep) if persona is not None else ()
    return PropensityResult(
        query=q, as_of=plan.as_of, features=feats, evaluation=evaluation, importance=importance,
        uplifts=tuple(uplifts), persons=tuple(persons), excluded_actions=excluded, by_persona=by_persona,
    )


__all__ = [
    "ActionUplift",
    "Dataset",
    "Driver",
    "Evaluation",
    "PersonScore",
    "PersonaSummary",
    "PropensityModel",
    "PropensityQuery",
    "PropensityResult",
    "dataset",
    "datasets",
    "newcombe",
    "propensity",
    "roc_auc",
    "wilson",
]
