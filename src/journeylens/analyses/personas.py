"""Personas: rule-based (from a YAML file) and discovered (clustering traits + journey behaviour).

Features (one row per unit — person, or account with ``unit="account"``):

* **traits** — from the JSON ``traits`` of ``Workspace.people()`` (for accounts:
  ``Workspace.accounts()``; people additionally get their account's traits as
  ``account.<key>``). A trait whose non-empty values all parse as numbers is
  *numeric*; a trait whose values contain ``;`` is a *list* (multi-hot, one
  column per item); any other trait is *categorical* (one-hot). Values held by
  fewer than ``min_count`` units are folded into ``(other)``.
* **behaviour** — from the touches, aggregated in Ibis per unit: ``touches``
  (log1p), ``days_active`` (distinct UTC dates, log1p), ``span_days`` (last
  minus first touch, log1p), ``furthest_stage`` (highest ``stage_index``),
  ``channel:<c>`` (share of the unit's touches from channel ``c``),
  ``event:<e>`` (log1p of the count of event ``e``) and ``median_hour`` (the
  median UTC hour of day of the unit's touches, lower median).

Discovery: every column is standardised (z-score), then each *block* (one trait,
or one behaviour family) is divided by the square root of its width so that a
trait with many one-hot values weighs as much as one numeric trait. Units with
traits are clustered with k-means (``n_init=10``) on the first principal
components that explain ``variance`` of the variance; ``k`` is chosen over
``k_range`` by the **highest mean silhouette** (on 4,000 units). With more than
``FIT_SAMPLE`` (10,000) units with traits, k-means and the silhouette run on a seeded
random sample of that size, and k-means on all of them, started from the chosen sample
solution's centres, then labels everyone. Units without traits (never
identified) are assigned afterwards by a classifier trained on the clustered
units' behaviour features only (logistic regression).

Each persona is described by its features with the largest *lift*: the
persona's mean of a feature divided by everyone's mean (for a one-hot, list
or channel share that is the share in the persona over the share overall).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from journeylens.analyses.stages import StageFunnel, stage_funnels
from journeylens.errors import InvalidParameterError, ModelError, UnknownNameError, suggest
from journeylens.journey import JourneyModel
from journeylens.journey._yaml import KEY_PATTERN, YNode, describe, read_yaml
from journeylens.store.functions import unix_micros

UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
OTHER = "(other)"
OTHER_PERSONA = "other"
"""Persona key of units no rule matches."""
LIST_SEPARATOR = ";"
DEFAULT_K_RANGE = (2, 10)


# ============================================================================ features
@dataclass(frozen=True)
class FeatureColumn:
    """One column of the feature matrix."""

    name: str
    """``trait:<key>``, ``trait:<key>=<value>``, ``trait:<key>~<item>`` (list item), ``touches``,
    ``days_active``, ``span_days``, ``furthest_stage``, ``channel:<c>``, ``event:<e>``, ``median_hour``."""
    block: str
    """Columns of one block share its weight (one trait, or one behaviour family)."""
    kind: str
    """numeric | onehot | multihot | share | count | stage | hour"""
    source: str
    """traits | behaviour"""
    label: str
    """Human-readable, e.g. ``device = mobile``, ``interests: deals``, ``channel paid_social``."""


@dataclass(frozen=True)
class Features:
    """Feature matrix of the units (rows) plus the raw values rule conditions read."""

    unit: str
    ids: tuple[str, ...]
    matrix: np.ndarray
    """Unscaled feature values, ``len(ids) x len(columns)``; NaN where a unit has no traits."""
    columns: tuple[FeatureColumn, ...]
    has_traits: np.ndarray
    """Boolean per unit: traits were found (for persons: the person identified)."""
    raw: pd.DataFrame
    """Indexed by unit id: raw trait values (``traits.<key>``, ``account.<key>``) and the behaviour
    features by their plain names (``touches`` as a count here), for rule conditions."""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.matrix, index=pd.Index(self.ids, name=UNITS[self.unit]),
                            columns=[c.name for c in self.columns])


def _parse_traits(rows: Iterable[tuple[str, str | None]], prefix: str) -> pd.DataFrame:
    """``id -> {prefix.key: text}`` from JSON trait objects (invalid JSON counts as no traits)."""
    records: dict[str, dict[str, str]] = {}
    for uid, text in rows:
        if uid is None or not text:
            continue
        try:
            obj = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(obj, dict):
            continue
        rec: dict[str, str] = {}
        for k, v in obj.items():
            if v is None or isinstance(v, dict | list):
                if isinstance(v, list):
                    rec[f"{prefix}.{k}"] = LIST_SEPARATOR.join(str(x) for x in v)
                continue
            text_value = str(v).strip()
            if text_value:
                rec[f"{prefix}.{k}"] = text_value
        records[str(uid)] = rec
    return pd.DataFrame.from_dict(records, orient="index")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _trait_columns(raw: pd.DataFrame, ids: Sequence[str], min_count: int
                   ) -> tuple[list[np.ndarray], list[FeatureColumn]]:
    """Numeric, one-hot and multi-hot columns of the trait frame (rows in ``ids`` order)."""
    values: list[np.ndarray] = []
    cols: list[FeatureColumn] = []
    frame = raw.reindex(list(ids))
    for key in sorted(raw.columns):
        series = frame[key]
        present = series.dropna().astype(str)
        if present.empty:
            continue
        name = key.split(".", 1)[1] if key.startswith("traits.") else key
        if all(_is_number(v) for v in present):
            values.append(pd.to_numeric(series, errors="coerce").to_numpy(dtype=float))
            cols.append(FeatureColumn(f"trait:{name}", key, "numeric", "traits", name))
            continue
        # Vectorised (issue 8): one pass over the rows per key instead of one pandas ``map`` with a
        # Python lambda per value; the columns are the same as the former element-wise formulas.
        raw_values = series.to_numpy(dtype=object)
        is_str = np.fromiter((isinstance(v, str) for v in raw_values), dtype=bool, count=len(raw_values))
        is_list = present.str.contains(LIST_SEPARATOR, regex=False).any()
        if is_list:
            items = [tuple(x.strip() for x in v.split(LIST_SEPARATOR) if x.strip()) if ok else None
                     for v, ok in zip(raw_values, is_str, strict=True)]
            counts = pd.Series([x for t in items if t is not None for x in t]).value_counts()
            chosen = sorted(counts[counts >= min_count].index)
            position = {item: j for j, item in enumerate(chosen)}
            hot = np.zeros((len(items), len(chosen)))
            hot[~is_str] = np.nan
            for i, t in enumerate(items):
                if t:
                    for x in t:
                        j = position.get(x)
                        if j is not None:
                            hot[i, j] = 1.0
            for j, item in enumerate(chosen):
                values.append(hot[:, j].copy())
                cols.append(FeatureColumn(f"trait:{name}~{item}", key, "multihot", "traits", f"{name}: {item}"))
            continue
        counts = present.value_counts()
        kept = set(counts[counts >= min_count].index)
        folded = raw_values.copy()
        folded[is_str & ~pd.Series(raw_values).isin(kept).to_numpy()] = OTHER
        for value in sorted(set(pd.Series(folded).dropna())):
            col = np.where(is_str, (folded == value).astype(float), np.nan)
            values.append(col)
            cols.append(FeatureColumn(f"trait:{name}={value}", key, "onehot", "traits", f"{name} = {value}"))
    return values, cols


_DAY_US, _HOUR_US = 86_400_000_000, 3_600_000_000


def _behaviour(touches: ir.Table, col: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per unit aggregates computed on the backend: totals, channel counts, event counts, hour counts."""
    t = touches.filter(touches[col].notnull())
    # UTC dates and hours from integer microseconds: exact, and far cheaper on DuckDB than
    # time-zone-aware (ICU) date/hour extraction from TIMESTAMPTZ
    us = unix_micros(t.ts)
    t = t.mutate(_u=t[col].cast("string"), _day=us - us % _DAY_US,
                 _hour=((us % _DAY_US - us % _HOUR_US) / _HOUR_US).cast("int64"))
    totals = t.group_by("_u").aggregate(
        touches=t.count(),
        days_active=t._day.nunique(),
        first=t.ts.min(),
        last=t.ts.max(),
        furthest_stage=t.stage_index.max(),
    )
    totals = totals.mutate(span_days=totals["last"].delta(totals["first"], unit="second") / 86400.0)
    totals = totals.drop("first", "last")
    channels = t.group_by("_u", channel=t.channel.fill_null("(none)")).aggregate(n=t.count())
    events = t.group_by("_u", "event").aggregate(n=t.count())
    hours = t.group_by("_u", hour=t._hour).aggregate(n=t.count())
    return totals.to_pandas(), channels.to_pandas(), events.to_pandas(), hours.to_pandas()


def _lower_median_hour(hours: pd.DataFrame) -> pd.Series:
    """Lower median of the hour of day per unit from ``_u, hour, n`` counts."""
    h = hours.sort_values(["_u", "hour"])
    h["cum"] = h.groupby("_u")["n"].cumsum()
    h["tot"] = h.groupby("_u")["n"].transform("sum")
    first = h[h["cum"] * 2 >= h["tot"]].groupby("_u")["hour"].first()
    return first.astype(float)


def build_features(
    touches: ir.Table,
    people: ir.Table | None = None,
    accounts: ir.Table | None = None,
    *,
    unit: str = "person",
    min_count: int = 5,
) -> Features:
    """Feature matrix of every unit with at least one touch (see the module docstring).

    ``touches`` need ``ts``, ``event``, ``channel``, ``stage_index`` and the unit column.
    ``people`` is ``Workspace.people()`` (``person_id``, ``traits``, ``account_id``) and
    ``accounts`` is ``Workspace.accounts()`` (``account_id``, ``traits``). Unit person: traits
    ``traits.<key>`` from ``people`` plus ``account.<key>`` of the person's account; unit
    account: ``traits.<key>`` from ``accounts``.
    """
    if unit not in UNITS:
        raise UnknownNameError("unit", unit, UNITS)
    if min_count < 1:
        raise InvalidParameterError(f"min_count must be at least 1, got {min_count}")
    col = UNITS[unit]
    if col not in touches.columns:
        raise InvalidParameterError(f"the touches have no column {col}")
    totals, channels, events, hours = _behaviour(touches, col)
    if totals.empty:
        raise InvalidParameterError(f"no touches with a {col}; personas need journeys")
    ids = tuple(sorted(str(u) for u in totals["_u"]))
    index = pd.Index(ids)
    totals = totals.set_index("_u").reindex(index)

    raw = pd.DataFrame(index=index)
    acc = pd.DataFrame()
    if accounts is not None:
        af = accounts.select("account_id", "traits").to_pandas()
        acc = _parse_traits(zip(af["account_id"].astype(str).tolist(), af["traits"].tolist(), strict=True),
                            "traits" if unit == "account" else "account")
    if unit == "account":
        raw = raw.join(acc)
    elif people is not None:
        cols = ["person_id", "traits"] + (["account_id"] if "account_id" in people.columns else [])
        pf = people.select(*cols).to_pandas()
        raw = raw.join(_parse_traits(zip(pf["person_id"].astype(str).tolist(), pf["traits"].tolist(), strict=True),
                                     "traits"))
        if not acc.empty and "account_id" in pf.columns:
            link = pf.set_index(pf["person_id"].astype(str))["account_id"]
            link = link[link.notna()].astype(str)
            link = link[~link.index.duplicated()]
            per_person = acc.reindex(link.to_numpy())
            per_person.index = link.index
            raw = raw.join(per_person)
    trait_keys = list(raw.columns)
    has_traits = raw.notna().any(axis=1).to_numpy() if trait_keys else np.zeros(len(ids), dtype=bool)
    values, cols_ = _trait_columns(raw, ids, min_count) if trait_keys else ([], [])

    n = totals["touches"].to_numpy(dtype=float)
    for name in ("touches", "days_active", "span_days"):
        values.append(np.log1p(totals[name].to_numpy(dtype=float)))
        cols_.append(FeatureColumn(name, name, "count", "behaviour", name.replace("_", " ")))
    stage = totals["furthest_stage"].to_numpy(dtype=float)
    values.append(np.nan_to_num(stage, nan=-1.0))
    cols_.append(FeatureColumn("furthest_stage", "furthest_stage", "stage", "behaviour", "furthest stage"))
    median_hour = _lower_median_hour(hours).reindex(index).to_numpy(dtype=float)
    values.append(median_hour)
    cols_.append(FeatureColumn("median_hour", "median_hour", "hour", "behaviour", "median hour of day"))

    ch = channels.pivot_table(index="_u", columns="channel", values="n", aggfunc="sum", fill_value=0)
    ch = ch.reindex(index).fillna(0)
    ev = events.pivot_table(index="_u", columns="event", values="n", aggfunc="sum", fill_value=0)
    ev = ev.reindex(index).fillna(0)
    for c in sorted(ch.columns):
        values.append(ch[c].to_numpy(dtype=float) / n)
        cols_.append(FeatureColumn(f"channel:{c}", "channels", "share", "behaviour", f"channel {c}"))
    for e in sorted(ev.columns):
        values.append(np.log1p(ev[e].to_numpy(dtype=float)))
        cols_.append(FeatureColumn(f"event:{e}", "events", "count", "behaviour", f"event {e}"))

    behaviour = pd.DataFrame(
        {"touches": n, "days_active": totals["days_active"].to_numpy(dtype=float),
         "span_days": totals["span_days"].to_numpy(dtype=float), "furthest_stage": stage,
         "median_hour": median_hour,
         **{f"channel.{c}": ch[c].to_numpy(dtype=float) / n for c in ch.columns},
         **{f"event.{e}": ev[e].to_numpy(dtype=float) for e in ev.columns}},
        index=index,
    )
    raw = pd.concat([raw, behaviour], axis=1)
    matrix = np.column_stack(values) if values else np.zeros((len(ids), 0))
    return Features(unit, ids, matrix, tuple(cols_), has_traits, raw)


BEHAVIOUR_FIELDS = ("touches", "days_active", "span_days", "furthest_stage", "median_hour")
"""Plain behaviour fields rule conditions may test (besides ``channel.<c>`` and ``event.<e>``)."""
WEIGHTED_BLOCKS = ("channels", "events")
"""Behaviour families whose columns share one unit of weight (divided by sqrt(width))."""


# ============================================================================ result
@dataclass(frozen=True)
class FeatureLift:
    """How one feature distinguishes a persona from everyone."""

    feature: str
    label: str
    source: str
    kind: str
    persona_mean: float
    """Mean in the persona (a share for one-hot, list and channel features); raw units
    (``touches`` etc. as log1p, like the clustering sees them)."""
    overall_mean: float
    lift: float | None
    """``persona_mean / overall_mean``; None when the overall mean is 0."""
    effect: float
    """``(persona_mean - overall_mean) / overall standard deviation``: the ranking key."""

    def text(self) -> str:
        """``device = mobile 93% (all 46%) ×2.02``; shares as percentages, others as numbers."""
        if self.kind in ("onehot", "multihot", "share"):
            body = f"{self.label} {self.persona_mean:.0%} (all {self.overall_mean:.0%})"
        else:
            body = f"{self.label} {self.persona_mean:.3g} (all {self.overall_mean:.3g})"
        return body + (f" ×{self.lift:.2f}" if self.lift is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "label": self.label, "source": self.source, "kind": self.kind,
                "persona_mean": self.persona_mean, "overall_mean": self.overall_mean, "lift": self.lift,
                "effect": self.effect}


@dataclass(frozen=True)
class Persona:
    key: str
    """Stable, slug-like; the segment value in breakdowns."""
    label: str
    size: int
    share: float
    """``size`` / all units with touches."""
    with_traits: int
    """Members with traits (persons: identified)."""
    description: str
    top_features: tuple[FeatureLift, ...]
    stage_funnel: StageFunnel | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "label": self.label, "size": self.size, "share": self.share,
            "with_traits": self.with_traits, "description": self.description,
            "top_features": [f.to_dict() for f in self.top_features],
            "stage_funnel": self.stage_funnel.to_dict()["stages"] if self.stage_funnel else None,
        }


@dataclass(frozen=True, eq=False)
class PersonaResult:
    """Personas of one run: discovered (``method="discovered"``) or from rules (``"rules"``)."""

    method: str
    unit: str
    model: str
    personas: tuple[Persona, ...]
    assignments: pd.DataFrame
    """One row per unit with touches: the unit column, ``persona`` (key), ``has_traits`` and
    ``assigned_by`` (``cluster`` | ``behaviour`` | ``rule`` | ``other``)."""
    total: int
    k: int | None = None
    criterion: str | None = None
    scores: tuple[tuple[int, float], ...] = ()
    """``(k, mean silhouette)`` for every k tried (discovered personas)."""
    rules_path: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    def persona(self, key: str) -> Persona:
        for p in self.personas:
            if p.key == key:
                return p
        raise UnknownNameError("persona", key, [p.key for p in self.personas])

    def members(self, key: str) -> list[str]:
        """Unit ids of persona ``key`` (e.g. to save it as a cohort)."""
        self.persona(key)
        a = self.assignments
        return sorted(a.loc[a["persona"] == key, self.unit_column].astype(str))

    def segment_table(self) -> ir.Table:
        """An Ibis memtable (unit column, ``value`` = persona key) for ``segments={"persona": ...}``."""
        a = self.assignments
        df = pd.DataFrame({self.unit_column: a[self.unit_column].astype(str), "value": a["persona"].astype(str)})
        return ibis.memtable(df)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "unit": self.unit, "model": self.model, "total": self.total, "k": self.k,
            "criterion": self.criterion, "scores": [{"k": k, "score": s} for k, s in self.scores],
            "rules": self.rules_path, "notes": list(self.notes),
            "personas": [p.to_dict() for p in self.personas],
        }

    def to_pandas(self) -> pd.DataFrame:
        rows = []
        for p in self.personas:
            row: dict[str, Any] = {"persona": p.key, "label": p.label, "size": p.size, "share": p.share,
                                   "with_traits": p.with_traits}
            if p.stage_funnel is not None:
                for s in p.stage_funnel.stages:
                    row[s.stage] = s.people
            row["description"] = p.description
            rows.append(row)
        return pd.DataFrame(rows)

    def figure(self) -> Any:
        """Grouped bars: share of each persona's units reaching each stage."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for p in self.personas:
            if p.stage_funnel is None:
                continue
            base = p.stage_funnel.stages[0].people if p.stage_funnel.stages else 0
            fig.add_trace(go.Bar(name=f"{p.label} ({p.share:.0%})", x=[s.label for s in p.stage_funnel.stages],
                                 y=[s.people / base if base else 0 for s in p.stage_funnel.stages]))
        fig.update_layout(title=f"Personas ({self.method}) — share reaching each stage ({self.model})",
                          barmode="group", yaxis_tickformat=".0%")
        return fig


# ============================================================================ discovery
def _prepare(features: Features, fit_rows: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Impute (fit-set means), transform skewed non-negative numeric traits with log1p, z-score
    (fit-set mean/sd; constant columns become 0) and weight the channel/event blocks."""
    x = features.matrix[:, list(columns)].astype(float).copy()
    cols = [features.columns[j] for j in columns]
    for j, c in enumerate(cols):
        if c.kind == "numeric":
            v = x[fit_rows, j]
            v = v[~np.isnan(v)]
            if v.size > 2 and v.min() >= 0 and float(pd.Series(v).skew()) > 2:  # type: ignore[arg-type]
                x[:, j] = np.log1p(x[:, j])
    fit = x[fit_rows]
    with np.errstate(all="ignore"):
        mean = np.nanmean(fit, axis=0)
    mean = np.nan_to_num(mean)
    x = np.where(np.isnan(x), mean, x)
    sd = x[fit_rows].std(axis=0)
    z = np.where(sd > 0, (x - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    width: dict[str, int] = {}
    for c in cols:
        width[c.block] = width.get(c.block, 0) + 1
    weights = np.array([1 / math.sqrt(width[c.block]) if c.block in WEIGHTED_BLOCKS else 1.0 for c in cols])
    return np.asarray(z * weights)


FIT_SAMPLE = 10_000
"""Most units k-means and the silhouette see while k is chosen (a seeded random sample)."""
SILHOUETTE_SAMPLE = 4000
"""Units (of the fit sample) whose mean silhouette scores each k."""


def _choose_k(points: np.ndarray, k_values: Sequence[int], seed: int
              ) -> tuple[int, np.ndarray, tuple[tuple[int, float], ...]]:
    """k-means for every k and the k with the highest mean silhouette.

    With more than :data:`FIT_SAMPLE` points, k is chosen on a seeded random sample of
    that many; then k-means on all points, started from the chosen solution's centres, gives
    everyone's label. The silhouette of every k is scored on the same
    :data:`SILHOUETTE_SAMPLE` points (``silhouette_score(..., sample_size, random_state)``'s
    sample), whose distance matrix is computed once."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances, silhouette_score
    from sklearn.utils import check_random_state

    fit = points
    if len(points) > FIT_SAMPLE:
        pick = np.sort(np.random.default_rng(seed).choice(len(points), FIT_SAMPLE, replace=False))
        fit = points[pick]
    scored = check_random_state(seed).permutation(len(fit))[:min(len(fit), SILHOUETTE_SAMPLE)]
    distances = pairwise_distances(fit[scored])
    best: tuple[float, int, Any] | None = None
    scores: list[tuple[int, float]] = []
    for k in k_values:
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(fit)
        labels = km.labels_
        if len(set(labels)) < 2 or len(set(labels[scored])) < 2:
            continue
        s = float(silhouette_score(distances, labels[scored], metric="precomputed"))
        scores.append((k, s))
        if best is None or s > best[0]:
            best = (s, k, km)
    if best is None:
        raise InvalidParameterError("the units cannot be split into clusters (all feature rows are equal)")
    _, k_best, km_best = best
    if fit is points:
        return k_best, np.asarray(km_best.labels_), tuple(scores)
    full = KMeans(n_clusters=k_best, init=km_best.cluster_centers_, n_init=1, random_state=seed).fit(points)
    return k_best, np.asarray(full.labels_), tuple(scores)


def discover_personas(
    touches: ir.Table,
    people: ir.Table | None = None,
    accounts: ir.Table | None = None,
    *,
    model: JourneyModel,
    unit: str = "person",
    k: int | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    components: int = 8,
    min_count: int = 5,
    seed: int = 0,
    top: int = 6,
    funnels: bool = True,
) -> PersonaResult:
    """Discover personas by clustering traits and behaviour (k-means, k by silhouette).

    Units with traits are clustered on all features; if none has traits, everyone is
    clustered on behaviour. ``k`` fixes the number of personas; otherwise the k in
    ``k_range`` (inclusive) with the highest mean silhouette on the PCA points wins.
    Units without traits get the persona a logistic regression on behaviour features
    (trained on the clustered units) predicts. ``top`` features per persona are reported.
    """
    lo, hi = k_range
    if k is not None and k < 2:
        raise InvalidParameterError(f"k must be at least 2, got {k}")
    if k is None and not 2 <= lo <= hi:
        raise InvalidParameterError(f"k_range must satisfy 2 <= low <= high, got {k_range}")
    if components < 1:
        raise InvalidParameterError(f"components must be at least 1, got {components}")
    feats = build_features(touches, people, accounts, unit=unit, min_count=min_count)
    n = len(feats.ids)
    with_traits = feats.has_traits
    behaviour_cols = [j for j, c in enumerate(feats.columns) if c.source == "behaviour"]
    notes: list[str] = []
    if with_traits.sum() >= 3:
        fit_rows = with_traits.copy()
        fit_cols = list(range(len(feats.columns)))
    else:
        fit_rows = np.ones(n, dtype=bool)
        fit_cols = behaviour_cols
        notes.append("no unit has traits: clustered on behaviour only")
    n_fit = int(fit_rows.sum())
    k_values = [k] if k is not None else [x for x in range(lo, hi + 1) if x < n_fit]
    if not k_values or max(k_values) >= n_fit:
        raise InvalidParameterError(f"{n_fit} units cannot form {k or lo} personas")

    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # BLAS/OpenMP threads cost far more than they save at this size
        z = _prepare(feats, fit_rows, fit_cols)
        n_comp = max(1, min(components, z.shape[1], n_fit - 1))
        pca = PCA(n_components=n_comp, random_state=seed).fit(z[fit_rows])
        points = pca.transform(z[fit_rows])
        chosen, labels, scores = _choose_k(points, k_values, seed)

    cluster = np.full(n, -1)
    cluster[fit_rows] = labels
    assigned_by = np.where(fit_rows, "cluster", "behaviour").astype(object)
    rest = ~fit_rows
    if rest.any():
        from sklearn.linear_model import LogisticRegression

        zb = _prepare(feats, fit_rows, behaviour_cols)
        with threadpool_limits(1):
            clf = LogisticRegression(max_iter=2000).fit(zb[fit_rows], labels)
            cluster[rest] = clf.predict(zb[rest])
        notes.append(f"{int(rest.sum())} units without traits assigned from behaviour (logistic regression)")

    groups = {c: np.flatnonzero(cluster == c) for c in range(chosen)}
    stats = _column_stats(feats)
    describers = {c: _lifts(feats, rows, top, stats) for c, rows in groups.items()}
    labels_text = _unique_labels({c: _label(feats, rows, lifts) for c, (rows, lifts) in
                                  ((c, (groups[c], describers[c][1])) for c in groups)}, describers)
    keys = _unique_keys({c: _slug(t) for c, t in labels_text.items()})
    persona_of = np.array([keys[c] for c in cluster], dtype=object)
    return _result("discovered", feats, persona_of, assigned_by, touches, model, funnels, top,
                   labels={keys[c]: labels_text[c] for c in groups}, descriptions={},
                   k=chosen, scores=scores, notes=notes,
                   criterion=f"highest mean silhouette of k-means on {n_comp} principal components",
                   stats=stats)


# ---------------------------------------------------------------- description and labels
@dataclass(frozen=True)
class _ColumnStats:
    """Per feature column: non-missing count, mean and standard deviation over all units."""

    count: np.ndarray
    mean: np.ndarray
    sd: np.ndarray


def _column_stats(feats: Features) -> _ColumnStats:
    m = feats.matrix
    count = np.zeros(m.shape[1], dtype=int)
    mean = np.full(m.shape[1], np.nan)
    sd = np.full(m.shape[1], np.nan)
    for j in range(m.shape[1]):
        col = m[:, j]
        v = col[~np.isnan(col)]
        count[j] = v.size
        if v.size:
            mean[j], sd[j] = float(v.mean()), float(v.std())
    return _ColumnStats(count, mean, sd)


def _lifts(feats: Features, rows: np.ndarray, top: int, stats: _ColumnStats | None = None
           ) -> tuple[tuple[FeatureLift, ...], list[FeatureLift]]:
    """(top features by |effect|, all features) of the units ``rows`` (ascending indices);
    ``stats`` are the overall column statistics (computed when not given)."""
    st = stats if stats is not None else _column_stats(feats)
    sub = feats.matrix[np.sort(rows)]
    out: list[FeatureLift] = []
    for j, c in enumerate(feats.columns):
        col = sub[:, j]
        inside = col[~np.isnan(col)]
        if inside.size == 0 or st.count[j] < 2:
            continue
        overall = float(st.mean[j])
        sd = float(st.sd[j])
        mean = float(inside.mean())
        if sd == 0:
            continue
        lift = mean / overall if overall != 0 else None
        out.append(FeatureLift(c.name, c.label, c.source, c.kind, mean, overall, lift, (mean - overall) / sd))
    ranked = sorted(out, key=lambda f: (-abs(f.effect), f.feature))
    return tuple(ranked[:top]), out


def _label(feats: Features, rows: np.ndarray, lifts: list[FeatureLift]) -> str:
    """A name-like label: the dominant categorical trait value with the highest lift, the list items most
    over-represented, else the most over-represented channel, and the age decade."""
    by = {f.feature: f for f in lifts}
    cols = {c.name: c for c in feats.columns}
    parts: list[str] = []
    cats = sorted((f for f in lifts if cols[f.feature].kind == "onehot" and f.persona_mean >= 0.5
                   and (f.lift or 0) >= 1.25), key=lambda f: -(f.lift or 0))
    used: set[str] = set()
    for f in cats:
        block = cols[f.feature].block
        if block in used or f.feature.endswith(f"={OTHER}"):
            continue
        used.add(block)
        parts.append(f.feature.split("=", 1)[1].replace("_", " "))
        break
    items = sorted((f for f in lifts if cols[f.feature].kind == "multihot" and f.persona_mean >= 0.3
                    and (f.lift or 0) >= 1.5), key=lambda f: -(f.lift or 0))[:2]
    if items:
        parts.append(" & ".join(f.feature.split("~", 1)[1].replace("_", " ") for f in items) + " fans")
    if not items:
        chans = sorted((f for f in lifts if cols[f.feature].kind == "share" and f.persona_mean >= 0.15
                        and (f.lift or 0) >= 1.3), key=lambda f: -(f.lift or 0))
        if chans:
            parts.append(f"via {chans[0].feature.split(':', 1)[1].replace('_', ' ')}")
    if not parts:
        stage = by.get("furthest_stage")
        parts.append("engaged" if stage is not None and stage.effect > 0 else "casual")
    text = " ".join(parts)
    text = text[0].upper() + text[1:]
    age = by.get("trait:age")
    if age is not None:
        values = feats.matrix[rows, [c.name for c in feats.columns].index("trait:age")]
        values = values[~np.isnan(values)]
        if values.size:
            text += f", {int(np.median(values) // 10 * 10)}s"
    return text


def _unique_labels(labels: Mapping[int, str],
                   describers: Mapping[int, tuple[tuple[FeatureLift, ...], list[FeatureLift]]]) -> dict[int, str]:
    out = dict(labels)
    seen: dict[str, list[int]] = {}
    for c, t in out.items():
        seen.setdefault(t, []).append(c)
    for t, cs in seen.items():
        if len(cs) > 1:
            for c in cs:
                best = describers[c][0][0] if describers[c][0] else None
                out[c] = f"{t} ({best.label} {'high' if best.effect > 0 else 'low'})" if best else f"{t} #{c + 1}"
    return out


_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    import unicodedata

    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    slug = _SLUG.sub("_", ascii_.replace("&", " ")).strip("_")[:48].strip("_")
    return slug if slug and slug[0].isalpha() else f"p_{slug}"


def _unique_keys(keys: Mapping[int, str]) -> dict[int, str]:
    out: dict[int, str] = {}
    used: set[str] = {OTHER_PERSONA}
    for c in sorted(keys):
        key, n = keys[c], 2
        while key in used:
            key, n = f"{keys[c]}_{n}", n + 1
        used.add(key)
        out[c] = key
    return out


def _result(method: str, feats: Features, persona_of: np.ndarray, assigned_by: np.ndarray, touches: ir.Table,
            model: JourneyModel, funnels: bool, top: int, *, labels: Mapping[str, str],
            descriptions: Mapping[str, str], stats: _ColumnStats | None = None, **extra: Any) -> PersonaResult:
    col = UNITS[feats.unit]
    n = len(feats.ids)
    assignments = pd.DataFrame({col: list(feats.ids), "persona": persona_of.astype(str),
                                "has_traits": feats.has_traits, "assigned_by": assigned_by.astype(str)})
    sizes = assignments["persona"].value_counts()
    order = sorted(labels, key=lambda key: (-int(sizes.get(key, 0)), key))
    if OTHER_PERSONA in sizes.index and OTHER_PERSONA not in labels:
        order.append(OTHER_PERSONA)
    personas: list[Persona] = []
    st = stats if stats is not None else _column_stats(feats)
    funnel_of: dict[str, StageFunnel] = {}
    if funnels and n:
        # every persona's stage funnel in one query (grouped by persona), not one per persona
        groups = ibis.memtable(pd.DataFrame({col: assignments[col].astype(str),
                                             "value": assignments["persona"].astype(str)}))
        funnel_of = stage_funnels(touches, model, groups, unit=feats.unit)
    for key in order:
        rows = np.flatnonzero(persona_of == key)
        ranked, _ = _lifts(feats, rows, top, st) if rows.size else ((), [])
        desc = descriptions.get(key) or "; ".join(f.text() for f in ranked)
        sf = funnel_of.get(key) if funnels and rows.size else None
        personas.append(Persona(
            key=key, label=labels.get(key, "Other" if key == OTHER_PERSONA else key), size=int(rows.size),
            share=rows.size / n, with_traits=int(feats.has_traits[rows].sum()), description=desc,
            top_features=ranked, stage_funnel=sf,
        ))
    return PersonaResult(method=method, unit=feats.unit, model=model.key, personas=tuple(personas),
                         assignments=assignments, total=n, **extra)


# ============================================================================ rules
RULE_OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "exists")
_RULE_COMPARISONS = ("gt", "gte", "lt", "lte")
_PREFIXES = ("traits.", "account.", "channel.", "event.")


@dataclass(frozen=True)
class RuleCondition:
    """``field op value`` on the unit's features (see :func:`load_persona_rules`)."""

    field: str
    op: str
    value: Any
    line: int


@dataclass(frozen=True)
class PersonaRule:
    key: str
    label: str
    description: str
    blocks: tuple[tuple[RuleCondition, ...], ...]
    """OR of blocks; inside a block all conditions hold."""
    line: int


def load_persona_rules(path: str | Path) -> tuple[PersonaRule, ...]:
    """Read a persona rules file. Problems raise ``ModelError`` with file, line and key path.

    ::

        personas:                 # ordered; the first matching rule wins, else "other"
          - key: young_mobile
            label: Young mobile shoppers
            description: optional text
            when:                 # all conditions hold (or ``any:`` a list of when-blocks)
              traits.age: {lt: 30}
              traits.device: mobile            # a value: equal (";"-lists: one item equal)
              traits.interests: [deals, gaming] # a list: any of them
              channel.paid_social: {gte: 0.2}   # share of the unit's touches
              event.purchase: {gte: 1}          # count of the event
              furthest_stage: {gte: decision}   # stage key or 0-based index
              touches: {gte: 5}

    Fields: ``traits.<key>``, ``account.<key>`` (the person's account), ``touches``,
    ``days_active``, ``span_days``, ``furthest_stage``, ``median_hour``, ``channel.<c>``,
    ``event.<e>``. Operators: eq, ne, gt, gte, lt, lte, in, exists.
    """
    root = read_yaml(Path(path))
    top = root.fields(required=("personas",), optional=("description",))
    rules: list[PersonaRule] = []
    seen: set[str] = set()
    for node in top["personas"].sequence(non_empty=True):
        f = node.fields(required=("key",), optional=("label", "description", "when", "any"))
        key = f["key"].text(pattern=KEY_PATTERN)
        if key == OTHER_PERSONA:
            raise f["key"].error(f"'{OTHER_PERSONA}' is reserved for units no rule matches")
        if key in seen:
            raise f["key"].error(f"duplicate persona key '{key}'")
        seen.add(key)
        if ("when" in f) == ("any" in f):
            raise node.error("a persona needs exactly one of 'when' (all conditions) or 'any' (list of when-blocks)")
        blocks = ((_rule_block(f["when"]),) if "when" in f
                  else tuple(_rule_block(b) for b in f["any"].sequence(non_empty=True)))
        label = f["label"].text() if "label" in f else key.replace("_", " ").capitalize()
        description = f["description"].text() if "description" in f and f["description"].value() else ""
        rules.append(PersonaRule(key, label, description, blocks, node.line))
    return tuple(rules)


def _rule_block(node: YNode) -> tuple[RuleCondition, ...]:
    items = node.items()
    if not items:
        raise node.error("a when-block needs at least one condition")
    out: list[RuleCondition] = []
    for name, value in items:
        if name not in BEHAVIOUR_FIELDS and not (name.startswith(_PREFIXES) and name.split(".", 1)[1]):
            close = suggest(name, BEHAVIOUR_FIELDS)
            raise value.error(
                f"unknown field '{name}'; use traits.<key>, account.<key>, channel.<c>, event.<e> or "
                f"{', '.join(BEHAVIOUR_FIELDS)}", hint=f"did you mean '{close}'?" if close else None)
        if value.is_mapping:
            ops = value.items()
            if not ops:
                raise value.error("empty operator mapping; use e.g. {gte: 3}")
            out += [_rule_operator(name, op, v) for op, v in ops]
        elif value.is_sequence:
            out.append(RuleCondition(name, "in", _rule_values(value), value.line))
        else:
            out.append(RuleCondition(name, "eq", _rule_value(value), value.line))
    return tuple(out)


def _rule_value(node: YNode) -> str | float | bool:
    if node.is_mapping or node.is_sequence:
        raise node.error(f"expected a single value, got {describe(node.node)}")
    v = node.value()
    if v is None:
        raise node.error("expected a value, got nothing (null)", hint="to test absence use {exists: false}")
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    return str(v)


def _rule_values(node: YNode) -> tuple[str | float | bool, ...]:
    return tuple(_rule_value(n) for n in node.sequence(non_empty=True))


def _rule_operator(name: str, op: str, node: YNode) -> RuleCondition:
    if op not in RULE_OPERATORS:
        close = suggest(op, RULE_OPERATORS)
        raise node.error(f"unknown operator '{op}'; use one of {', '.join(RULE_OPERATORS)}",
                         hint=f"did you mean '{close}'?" if close else None)
    if op == "exists":
        return RuleCondition(name, op, node.boolean(), node.line)
    if op == "in":
        return RuleCondition(name, op, _rule_values(node), node.line)
    value = _rule_value(node)
    if op in _RULE_COMPARISONS and not isinstance(value, float) and not (name == "furthest_stage"
                                                                          and isinstance(value, str)):
        raise node.error(f"'{op}' compares numbers, got {describe(node.node)}")
    return RuleCondition(name, op, value, node.line)


def _condition_mask(raw: pd.DataFrame, c: RuleCondition, model: JourneyModel, path: str) -> np.ndarray:
    """Which units satisfy ``c``. A missing value satisfies only ``ne`` and ``exists: false``."""
    name = c.field
    if name in raw.columns:
        series = raw[name]
    elif name.startswith(("channel.", "event.")):
        series = pd.Series(0.0, index=raw.index)  # never seen: share / count 0
    else:
        series = pd.Series(np.nan, index=raw.index, dtype=object)
    present = series.notna().to_numpy()
    if c.op == "exists":
        return np.asarray(present == bool(c.value))
    value = c.value
    if name == "furthest_stage" and isinstance(value, str):
        if value not in model.stage_keys:
            raise ModelError(f"unknown stage '{value}' of model {model.key}; stages: {', '.join(model.stage_keys)}",
                             path=path, line=c.line, field=c.field)
        value = float(model.index(value))
    if c.op in _RULE_COMPARISONS:
        nums = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            cmp = {"gt": nums > value, "gte": nums >= value, "lt": nums < value, "lte": nums <= value}[c.op]
        return np.asarray(cmp & ~np.isnan(nums))
    wanted = value if isinstance(value, tuple) else (value,)
    if name == "furthest_stage":
        wanted = tuple(float(model.index(v)) if isinstance(v, str) and v in model.stage_keys else v for v in wanted)
    hit = np.array([_matches(v, wanted) for v in series], dtype=bool)
    return np.asarray(~hit) if c.op == "ne" else np.asarray(hit & present)


def _matches(actual: Any, wanted: tuple[Any, ...]) -> bool:
    if actual is None or (isinstance(actual, float) and math.isnan(actual)):
        return False
    if isinstance(actual, str):
        items = {x.strip() for x in actual.split(LIST_SEPARATOR)}
        for w in wanted:
            if isinstance(w, bool):
                if str(w).lower() in {i.lower() for i in items}:
                    return True
            elif isinstance(w, float):
                if any(_is_number(i) and float(i) == w for i in items):
                    return True
            elif w in items:
                return True
        return False
    return any(not isinstance(w, str | bool) and float(actual) == w for w in wanted)


def rule_personas(
    touches: ir.Table,
    people: ir.Table | None = None,
    accounts: ir.Table | None = None,
    *,
    rules: str | Path | Sequence[PersonaRule],
    model: JourneyModel,
    unit: str = "person",
    top: int = 6,
    funnels: bool = True,
) -> PersonaResult:
    """Assign every unit with touches to the first persona whose rule it matches, else ``other``."""
    path = str(rules) if isinstance(rules, str | Path) else None
    parsed = load_persona_rules(rules) if isinstance(rules, str | Path) else tuple(rules)
    if not parsed:
        raise InvalidParameterError("no persona rules given")
    feats = build_features(touches, people, accounts, unit=unit)
    n = len(feats.ids)
    persona_of = np.full(n, OTHER_PERSONA, dtype=object)
    open_ = np.ones(n, dtype=bool)
    for rule in parsed:
        match = np.zeros(n, dtype=bool)
        for block in rule.blocks:
            m = np.ones(n, dtype=bool)
            for c in block:
                m &= _condition_mask(feats.raw, c, model, path or "<rules>")
            match |= m
        take = match & open_
        persona_of[take] = rule.key
        open_ &= ~take
    assigned_by = np.where(open_, "other", "rule").astype(object)
    return _result("rules", feats, persona_of, assigned_by, touches, model, funnels, top,
                   labels={r.key: r.label for r in parsed}, descriptions={r.key: r.description for r in parsed},
                   rules_path=path)


def personas(
    touches: ir.Table,
    people: ir.Table | None = None,
    accounts: ir.Table | None = None,
    *,
    model: JourneyModel,
    rules: str | Path | Sequence[PersonaRule] | None = None,
    unit: str = "person",
    k: int | None = None,
    **params: Any,
) -> PersonaResult:
    """Rule-based personas when ``rules`` is given, else discovered ones (:func:`discover_personas`)."""
    if rules is not None:
        if k is not None:
            raise InvalidParameterError("k applies to discovered personas; rules define their own personas")
        return rule_personas(touches, people, accounts, rules=rules, model=model, unit=unit, **params)
    return discover_personas(touches, people, accounts, model=model, unit=unit, k=k, **params)


__all__ = [
    "FeatureColumn",
    "FeatureLift",
    "Features",
    "Persona",
    "PersonaResult",
    "PersonaRule",
    "RuleCondition",
    "build_features",
    "discover_personas",
    "load_persona_rules",
    "personas",
    "rule_personas",
]
