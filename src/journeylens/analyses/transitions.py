"""Transition matrix: how often units step from one path node to the next, and how long it takes.

Paths are those of :mod:`journeylens.analyses.paths` (same level, anchors, cleaning,
collapsing, depth and start/end nodes; whole paths unless ``depth`` is given). Every two
consecutive nodes of a unit's path are one *transition* ``source → target``:

* ``transitions``: how many times it occurs (a unit may make it several times);
* ``persons``: units that make it at least once (unique paths through it);
* ``probability_out``: ``transitions`` / all transitions out of ``source`` — the chance
  that the next node after ``source`` is ``target``;
* ``probability_in``: ``transitions`` / all transitions into ``target`` — the share of
  arrivals at ``target`` that come from ``source``;
* ``median_seconds`` and ``p95_seconds``: quantiles (linear interpolation) of the time
  from the last touch of ``source`` to the first touch of ``target``; markers
  (``path_start``/``path_end``) have no time.

With ``converted`` (a step filter such as ``purchase`` or ``stage=decision``) the matrix
is also computed separately for *converters* — units with a touch matching it, at any
time — and for the other units, and :class:`TransitionDifference` rows compare their
``probability_out``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import field_validator

from journeylens.analyses._time import format_duration
from journeylens.analyses.funnel import Step
from journeylens.analyses.paths import (
    PATH_END,
    PATH_START,
    PathOptions,
    Persons,
    _as_step,
    _check_query,
    path_nodes,
)
from journeylens.errors import InvalidParameterError, UnknownNameError

ALL = "all"
CONVERTERS = "converters"
NON_CONVERTERS = "non_converters"
GROUPS = (ALL, CONVERTERS, NON_CONVERTERS)
VALUES = ("transitions", "persons", "probability_out", "probability_in", "median_seconds", "p95_seconds")
_CONVERTED = "converted"


class TransitionsQuery(PathOptions):
    """Transition matrix over whole paths (``depth`` None by default); ``converted`` splits
    units into converters and non-converters."""

    converted: Step | None = None

    @field_validator("converted", mode="before")
    @classmethod
    def _converted(cls, v: Any) -> Any:
        return _as_step(v)

    def to_dict(self) -> dict[str, Any]:
        return {**self.options_dict(), "converted": None if self.converted is None else self.converted.name}


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    transitions: int
    persons: int
    """Units (persons or accounts) making this transition at least once."""
    probability_out: float
    probability_in: float
    median_seconds: float | None
    p95_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class TransitionDifference:
    """One transition compared between converters and non-converters.

    A probability is None when that group has no transition out of ``source``; it is 0.0
    when the group leaves ``source`` but never towards ``target``.
    """

    source: str
    target: str
    converters_probability_out: float | None
    non_converters_probability_out: float | None
    difference: float | None
    """Converters' minus non-converters' probability_out (None if either is None)."""
    converters_transitions: int
    non_converters_transitions: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class TransitionMatrix:
    query: TransitionsQuery
    transitions: tuple[Transition, ...]
    """Everybody's transitions, most frequent first."""
    persons: int
    """Units with a path (one node or more)."""
    converters: tuple[Transition, ...] = ()
    non_converters: tuple[Transition, ...] = ()
    converter_persons: int = 0
    non_converter_persons: int = 0
    differences: tuple[TransitionDifference, ...] = ()
    """Largest absolute difference first (only with ``converted``)."""

    @property
    def unit(self) -> str:
        return self.query.unit

    def group(self, name: str = ALL) -> tuple[Transition, ...]:
        if name not in GROUPS:
            raise UnknownNameError("transition group", name, GROUPS)
        if name != ALL and self.query.converted is None:
            raise InvalidParameterError(f"group '{name}' needs a 'converted' step in the query")
        return {ALL: self.transitions, CONVERTERS: self.converters, NON_CONVERTERS: self.non_converters}[name]

    def nodes(self) -> list[str]:
        """Node names in display order: ``path_start`` first, ``path_end`` last, the others by
        how many transitions touch them."""
        weight: dict[str, int] = {}
        for t in self.transitions:
            weight[t.source] = weight.get(t.source, 0) + t.transitions
            weight[t.target] = weight.get(t.target, 0) + t.transitions
        inner = sorted((n for n in weight if n not in (PATH_START, PATH_END)), key=lambda n: (-weight[n], n))
        return ([PATH_START] if PATH_START in weight else []) + inner + ([PATH_END] if PATH_END in weight else [])

    def matrix(self, value: str = "probability_out", group: str = ALL) -> pd.DataFrame:
        """Sources × targets of ``value`` (or ``difference`` with ``converted``); absent
        transitions are 0 for counts and probabilities, NaN for times."""
        order = self.nodes()
        if value == "difference":
            if self.query.converted is None:
                raise InvalidParameterError("the difference needs a 'converted' step in the query")
            cells = {(d.source, d.target): d.difference for d in self.differences}
            fill: float | None = None
        else:
            if value not in VALUES:
                raise UnknownNameError("matrix value", value, (*VALUES, "difference"))
            cells = {(t.source, t.target): getattr(t, value) for t in self.group(group)}
            fill = None if value.endswith("seconds") else 0
        sources = [n for n in order if n != PATH_END]
        targets = [n for n in order if n != PATH_START]
        data = [[cells.get((s, t), fill) for t in targets] for s in sources]
        return pd.DataFrame(data, index=pd.Index(sources, name="source"), columns=pd.Index(targets, name="target"),
                            dtype="float64")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query.to_dict(),
            "unit": self.unit,
            "persons": self.persons,
            "transitions": [t.to_dict() for t in self.transitions],
        }
        if self.query.converted is not None:
            out[CONVERTERS] = {"persons": self.converter_persons, "transitions": [t.to_dict() for t in self.converters]}
            out[NON_CONVERTERS] = {"persons": self.non_converter_persons,
                                   "transitions": [t.to_dict() for t in self.non_converters]}
            out["differences"] = [d.to_dict() for d in self.differences]
        return out

    def to_pandas(self) -> pd.DataFrame:
        """One row per transition; with ``converted`` a leading ``group`` column holds all,
        converters and non_converters."""
        columns = ["source", "target", *VALUES]
        if self.query.converted is None:
            return pd.DataFrame([t.to_dict() for t in self.transitions], columns=columns)
        rows = [{"group": g, **t.to_dict()} for g in GROUPS for t in self.group(g)]
        return pd.DataFrame(rows, columns=["group", *columns])

    def differences_pandas(self) -> pd.DataFrame:
        columns = ["source", "target", "converters_probability_out", "non_converters_probability_out",
                   "difference", "converters_transitions", "non_converters_transitions"]
        return pd.DataFrame([d.to_dict() for d in self.differences], columns=columns)

    def table_rows(self, group: str = ALL) -> list[tuple[str, str, int, int, float, float, str, str]]:
        """Rows for terminal tables with formatted times."""
        return [(t.source, t.target, t.transitions, t.persons, t.probability_out, t.probability_in,
                 format_duration(t.median_seconds), format_duration(t.p95_seconds)) for t in self.group(group)]

    def figure(self) -> Any:
        """Heatmap of probability_out (source rows, target columns); with ``converted`` the
        converters' minus the non-converters' probability_out."""
        import plotly.graph_objects as go

        diff = self.query.converted is not None
        m = self.matrix("difference" if diff else "probability_out")
        counts = self.matrix("transitions")
        heat = go.Heatmap(
            z=m.to_numpy(), x=list(m.columns), y=list(m.index), customdata=counts.to_numpy(),
            colorscale="RdBu" if diff else "Blues", zmid=0 if diff else None,
            hovertemplate="%{y} → %{x}: %{z:.1%}<br>transitions: %{customdata}<extra></extra>",
        )
        fig = go.Figure(heat)
        what = (f"converters ({self.query.converted.name}) minus non-converters" if diff and self.query.converted
                else "probability of the next node")
        fig.update_layout(title=f"Transitions by {self.query.level} — {what}", xaxis_title="to",
                          yaxis_title="from", yaxis_autorange="reversed")
        return fig


def _rows(agg: Iterable[Mapping[str, Any]]) -> tuple[tuple[Transition, ...], int]:
    """Transitions of one group and its unit count (rows with a NULL source are the units'
    first nodes: they count units, not transitions)."""
    rows = list(agg)
    out_total: dict[str, int] = {}
    in_total: dict[str, int] = {}
    units = 0
    for r in rows:
        if r["source"] is None:
            units += int(r["transitions"])
            continue
        out_total[r["source"]] = out_total.get(r["source"], 0) + int(r["transitions"])
        in_total[r["target"]] = in_total.get(r["target"], 0) + int(r["transitions"])
    result = [
        Transition(
            source=str(r["source"]), target=str(r["target"]), transitions=int(r["transitions"]),
            persons=int(r["persons"]), probability_out=int(r["transitions"]) / out_total[r["source"]],
            probability_in=int(r["transitions"]) / in_total[r["target"]],
            median_seconds=None if r["median"] is None else float(r["median"]),
            p95_seconds=None if r["p95"] is None else float(r["p95"]),
        )
        for r in rows if r["source"] is not None
    ]
    result.sort(key=lambda t: (-t.transitions, t.source, t.target))
    return tuple(result), units


def _differences(conv: tuple[Transition, ...], non: tuple[Transition, ...]) -> tuple[TransitionDifference, ...]:
    c = {(t.source, t.target): t for t in conv}
    n = {(t.source, t.target): t for t in non}
    c_sources = {t.source for t in conv}
    n_sources = {t.source for t in non}

    def prob(table: Mapping[tuple[str, str], Transition], sources: set[str], key: tuple[str, str]) -> float | None:
        if key[0] not in sources:
            return None
        t = table.get(key)
        return t.probability_out if t is not None else 0.0

    out = []
    for key in sorted(set(c) | set(n)):
        pc, pn = prob(c, c_sources, key), prob(n, n_sources, key)
        out.append(TransitionDifference(
            source=key[0], target=key[1], converters_probability_out=pc, non_converters_probability_out=pn,
            difference=None if pc is None or pn is None else pc - pn,
            converters_transitions=c[key].transitions if key in c else 0,
            non_converters_transitions=n[key].transitions if key in n else 0,
        ))
    out.sort(key=lambda d: (d.difference is None, -round(abs(d.difference or 0.0), 12), d.source, d.target))
    return tuple(out)


def transitions(touches: ir.Table, query: TransitionsQuery, *, persons: Persons = None) -> TransitionMatrix:
    """The transition matrix of ``query`` over ``touches`` (see the module docstring).

    ``touches`` and ``persons`` are as for :func:`journeylens.analyses.paths.paths`.
    """
    _check_query(query, TransitionsQuery)
    q = query
    flags = {_CONVERTED: q.converted} if q.converted is not None else None
    nodes = path_nodes(touches, q, persons=persons, flags=flags)
    rows = nodes.select("unit", "source", target=nodes.node, seconds=nodes.seconds,
                        grp=ibis.literal(ALL),
                        **({_CONVERTED: nodes[_CONVERTED]} if flags else {}))
    if flags:
        split = rows.mutate(grp=ibis.cases((rows[_CONVERTED], ibis.literal(CONVERTERS)),
                                           else_=ibis.literal(NON_CONVERTERS)))
        rows = rows.union(split)
    # both quantiles from one aggregate (one sort of each pair's gaps instead of two)
    agg = rows.group_by("grp", "source", "target").aggregate(
        transitions=rows.count(),
        persons=rows.unit.nunique(),
        quantiles=rows.seconds.quantile([0.5, 0.95]),
    )
    agg = agg.mutate(median=agg.quantiles[0], p95=agg.quantiles[1]).drop("quantiles")
    by_group: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for r in agg.to_pyarrow().to_pylist():
        by_group[str(r["grp"])].append(r)
    everyone, total = _rows(by_group[ALL])
    if q.converted is None:
        return TransitionMatrix(query=q, transitions=everyone, persons=total)
    conv, n_conv = _rows(by_group[CONVERTERS])
    non, n_non = _rows(by_group[NON_CONVERTERS])
    return TransitionMatrix(query=q, transitions=everyone, persons=total, converters=conv, non_converters=non,
                            converter_persons=n_conv, non_converter_persons=n_non,
                            differences=_differences(conv, non))


__all__ = [
    "ALL",
    "CONVERTERS",
    "NON_CONVERTERS",
    "Transition",
    "TransitionDifference",
    "TransitionMatrix",
    "TransitionsQuery",
    "transitions",
]
