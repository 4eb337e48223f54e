"""Stratified (standardised) attribution: a method run within each stratum of a segment, pooled.

``AttributionQuery(adjust="persona")`` with ``segments={"persona": table}`` (a table of
unit id and ``value``, as ``Workspace.segments("persona")`` gives) splits the journeys by the
stratum of their unit, applies the method to each stratum's journeys on its own, and pools:

* **conversions / revenue** of a value: the sum over strata of its within-stratum credit
  (so the credit still sums to the converting journeys);
* **effect** of a value: attributed conversions per journey that touched it, computed within
  each stratum and averaged over the strata with the strata's journey counts as weights
  (direct standardisation; strata where the value was never touched drop out and the weights
  of the others are renormalised)::

      effect_c = Σ_s n_s · (credit_sc / exposed_sc) / Σ_s n_s     over s with exposed_sc > 0

  ``n_s`` journeys (converting and null) of stratum ``s``, ``exposed_sc`` its journeys that
  touched ``c``, ``credit_sc`` the method's attributed conversions of ``c`` in ``s``.

With one stratum the effect is ``conversions / journeys`` of the plain result (the
"per exposed journey" normalisation). The effect ranks values by what a journey's exposure to
them is worth, instead of by volume; standardising over strata removes the part of that
comparison that comes from strata with their own base rate and their own channel mix
(docs/attribution.md, "Recovering planted effects").

Each unit belongs to exactly one stratum: a unit holding several values of the segment
(overlapping cohorts) is put in the smallest value; units holding none form ``(none)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

from journeylens.analyses._relations import segment_values
from journeylens.analyses.attribution import (
    METHODS,
    AttributionComparison,
    AttributionQuery,
    AttributionResult,
    ChannelCredit,
    PathCounts,
    _journeys_from_arrow,
    credit,
    journey_rows,
    spend_by_value,
)
from journeylens.errors import InvalidParameterError, UnknownNameError

NONE_STRATUM = "(none)"
"""The stratum of units that hold no value of the segment."""


@dataclass(frozen=True)
class Stratum:
    """One stratum of an adjusted attribution: its journeys, conversions and per-value effects."""

    value: str
    units: int
    journeys: int
    conversions: int
    effects: Mapping[str, float] = field(default_factory=dict)
    """Value -> attributed conversions per journey that touched it, within this stratum."""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "units": self.units, "journeys": self.journeys,
                "conversions": self.conversions, "effects": dict(self.effects)}


@dataclass(frozen=True)
class AdjustedAttributionResult(AttributionResult):
    """An :class:`AttributionResult` pooled over the strata of ``query.adjust``.

    ``channels`` hold the summed within-stratum credit (and spend, CPA, ROAS on it), sorted by
    ``effects`` (largest first); ``effects`` value -> standardised attributed conversions per
    exposed journey (module docstring); ``strata`` the strata, largest first.
    """

    effects: Mapping[str, float] = field(default_factory=dict)
    strata: tuple[Stratum, ...] = ()

    def effect(self) -> dict[str, float]:
        """Value -> standardised attributed conversions per exposed journey."""
        return dict(self.effects)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for row in out["channels"]:
            row["effect"] = self.effects.get(row["channel"])
        out["adjust"] = {"by": self.query.adjust, "weights": "journeys per stratum",
                         "strata": [s.to_dict() for s in self.strata]}
        return out

    def to_pandas(self) -> pd.DataFrame:
        df = super().to_pandas()
        df["effect"] = [self.effects.get(c) for c in df["channel"]]
        return df


def unit_strata(segments: Mapping[str, ir.Table] | None, name: str, unit_column: str) -> dict[str, str]:
    """Unit id (text) -> stratum: the smallest value of segment ``name`` the unit holds."""
    segs = dict(segments or {})
    if name not in segs:
        raise UnknownNameError("adjustment segment", name, sorted(segs) or ["persona", "cohort", "cohort:<name>"])
    seg = segment_values(segs, name, unit_column, unit_as="_u")
    seg = seg.filter(seg._u.notnull() & seg.value.notnull())
    agg = seg.group_by("_u").aggregate(value=seg.value.min())
    data = agg.to_pyarrow()
    return dict(zip(data.column("_u").to_pylist(), data.column("value").to_pylist(), strict=True))


def _stratified_rows(touches: ir.Table, q: AttributionQuery,
                     segments: Mapping[str, ir.Table] | None) -> list[tuple[str, int, pa.Table]]:
    """(stratum, units, journey rows of its units) per stratum, largest first (one backend query)."""
    assert q.adjust is not None
    strata = unit_strata(segments, q.adjust, q.unit_column)
    data = journey_rows(touches, q).to_pyarrow()
    units = np.asarray(data.column("u").to_pandas(), dtype=object)
    label = pd.Series(units).map(strata).fillna(NONE_STRATUM).to_numpy(dtype=object)
    codes, names = pd.factorize(label, sort=True)
    out = []
    for i, name in enumerate(names):
        idx = np.flatnonzero(codes == i)  # rows keep their order: by unit, conversion, time
        out.append((str(name), int(pd.unique(units[idx]).size), data.take(pa.array(idx))))
    out.sort(key=lambda x: (-x[1], x[0]))
    return out


def _pool(q: AttributionQuery, method: str, parts: Sequence[tuple[str, int, AttributionResult]],
          spend: Mapping[str, float] | None) -> AdjustedAttributionResult:
    names = sorted({c.channel for _, _, r in parts for c in r.channels})
    conv = dict.fromkeys(names, 0.0)
    rev = dict.fromkeys(names, 0.0)
    exposed = dict.fromkeys(names, 0)
    num = dict.fromkeys(names, 0.0)
    den = dict.fromkeys(names, 0.0)
    strata = []
    for value, units, r in parts:
        eff: dict[str, float] = {}
        for c in r.channels:
            conv[c.channel] += c.conversions
            rev[c.channel] += c.revenue or 0.0
            exposed[c.channel] += c.journeys
            if c.journeys > 0:
                eff[c.channel] = c.conversions / c.journeys
                num[c.channel] += r.journeys * eff[c.channel]
                den[c.channel] += r.journeys
        strata.append(Stratum(value, units, r.journeys, r.conversions, eff))
    effects = {c: num[c] / den[c] for c in names if den[c] > 0}
    total = sum(r.conversions for _, _, r in parts)
    revenue = sum(r.revenue or 0.0 for _, _, r in parts) if q.revenue is not None else None
    rows = []
    for name in names:
        cv = conv[name]
        rv = rev[name] if q.revenue is not None else None
        s = None if spend is None else spend.get(name)
        rows.append(ChannelCredit(
            channel=name, conversions=cv, share=cv / total if total else 0.0, revenue=rv, journeys=exposed[name],
            spend=s, cpa=(s / cv if s is not None and cv > 0 else None),
            roas=(rv / s if s is not None and rv is not None and s > 0 else None), score=None))
    rows.sort(key=lambda x: (-effects.get(x.channel, -np.inf), x.channel))
    detail: dict[str, Any] = {"adjust": q.adjust, "strata": len(parts)}
    for key in ("order", "exact"):
        vals = {r.detail[key] for _, _, r in parts if key in r.detail}
        if len(vals) == 1:
            detail[key] = vals.pop()
    return AdjustedAttributionResult(
        query=q, method=method, channels=tuple(rows), conversions=total,
        conversions_without_touches=sum(r.conversions_without_touches for _, _, r in parts),
        journeys=sum(r.journeys for _, _, r in parts), revenue=revenue, detail=detail, effects=effects,
        strata=tuple(strata))


def _check(q: AttributionQuery) -> None:
    if q.adjust is None:
        raise InvalidParameterError("adjusted attribution needs query.adjust (a segment name such as persona)")
    if getattr(q, "breakdown", None) is not None:
        raise InvalidParameterError("adjust and breakdown cannot be combined",
                                    hint="adjust pools the strata; a breakdown shows each value on its own")


def adjusted_attribution(touches: ir.Table, query: AttributionQuery, *,
                         segments: Mapping[str, ir.Table] | None = None,
                         costs: ir.Table | None = None) -> AdjustedAttributionResult:
    """``query.method`` within each stratum of the segment ``query.adjust``, pooled (module docstring)."""
    return compare_adjusted(touches, query, methods=[query.method], segments=segments, costs=costs).results[0]  # type: ignore[return-value]


def compare_adjusted(touches: ir.Table, query: AttributionQuery, *, methods: Sequence[str] = METHODS,
                     segments: Mapping[str, ir.Table] | None = None,
                     costs: ir.Table | None = None) -> AttributionComparison:
    """Every method of ``methods`` adjusted for ``query.adjust``; journeys extracted once."""
    _check(query)
    for m in methods:
        if m not in METHODS:
            raise UnknownNameError("attribution method", m, METHODS)
    spend = spend_by_value(costs, query)
    journeys = [(v, n, _journeys_from_arrow(rows, query)) for v, n, rows in _stratified_rows(touches, query, segments)]
    needs_paths = any(m in ("markov", "shapley") for m in methods)
    paths: list[PathCounts | None] = [j.paths() if needs_paths else None for _, _, j in journeys]
    results = []
    for m in methods:
        parts = [(v, n, credit(j, query, m, paths=pc)) for (v, n, j), pc in zip(journeys, paths, strict=True)]
        results.append(_pool(query, m, parts, spend))
    return AttributionComparison(query, tuple(results))


__all__ = ["NONE_STRATUM", "AdjustedAttributionResult", "Stratum", "adjusted_attribution", "compare_adjusted",
           "unit_strata"]
