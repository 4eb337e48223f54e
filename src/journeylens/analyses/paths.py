"""Paths: the most frequent sequences of touches, and their flows for a Sankey diagram.

The request is a :class:`PathsQuery` (shared by the Python API, the CLI and the REST
API); :class:`journeylens.analyses.transitions.TransitionsQuery` shares its path options
(:class:`PathOptions`). Both analyses start from the same *path nodes*: one row per node
of every unit's path, built set-based from the touches (window functions, filters and
group-bys only) by :func:`path_nodes`.

Semantics (``docs/paths.md`` has the long form with examples):

1. A unit's (person's or account's) touches are ordered by ``ts``, then ``message_id``.
   Each touch becomes a *node*: its value at the path ``level`` (``event``,
   ``touchpoint``, ``stage``, ``channel`` or ``url``), renamed by the first matching
   cleaning rule, ``(none)`` when missing.
2. Touches whose node matches an ``exclude`` pattern are dropped.
3. Anchors cut the sequence: ``from`` starts it at the unit's first touch matching that
   step filter, ``to`` ends it at the first touch matching its filter after the start
   (or the first anywhere without ``from``). Units lacking an anchor have no path.
4. ``collapse_repeats`` merges consecutive equal nodes into one.
5. ``depth`` keeps the first ``depth`` nodes — the last ``depth`` when only ``to`` is
   given, so paths stay aligned on their end point.
6. ``start_end_nodes`` adds ``path_start`` before the first node and ``path_end`` after
   the last one, unless the depth limit cut the path on that side.

The time of a step from node A to node B is the gap between the last touch of A (of
its run, when repeats are collapsed) and the first touch of B.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from journeylens.analyses._relations import union_all
from journeylens.analyses._time import format_duration
from journeylens.analyses.funnel import (
    FunnelResult,
    Step,
    attempt_times,
    check_step_fields,
    step_predicate,
)
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey.stages import glob_regex
from journeylens.store.functions import seconds_between

LEVELS: dict[str, str] = {
    "event": "event",
    "touchpoint": "touchpoint",
    "stage": "stage",
    "channel": "channel",
    "url": "url",
}
"""Path levels and the touches column each one reads."""
UNITS: dict[str, str] = {"person": "person_id", "account": "account_id"}
PATH_START = "path_start"
PATH_END = "path_end"
NONE_LABEL = "(none)"
"""Node name of a touch without a value at the path level (e.g. a touch no stage rule matched)."""
MAX_DEPTH = 100
MAX_TOP = 10_000
DEFAULT_DEPTH = 5
ARROW = " → "
SEP = "\x1f"
"""Separator of nodes inside path strings built by the database (never shown)."""
REGEX_PREFIX = "re:"
FUNNEL_POSITIONS = ("before", "between", "after", "dropped")

Persons: TypeAlias = Sequence[str] | ir.Table | None
"""Units to restrict an analysis to: a list of ids or an Ibis table of them."""


# ============================================================================ request model
class CleaningRule(BaseModel):
    """Renames every node whose value matches ``pattern`` to ``name``.

    ``pattern`` is a glob over the whole value (``*`` any run of characters, ``?`` one
    character) or, with ``regex=True``, a regular expression searched anywhere in the
    value (anchor it with ``^...$``; use the syntax RE2 and Java share).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    name: str
    regex: bool = False

    @model_validator(mode="after")
    def _check(self) -> CleaningRule:
        if not self.pattern:
            raise InvalidParameterError("a cleaning rule has an empty pattern")
        if not self.name.strip():
            raise InvalidParameterError(f"cleaning rule '{self.pattern}' has an empty name",
                                        hint="write PATTERN=NAME, e.g. '*/p/*=product page'")
        if self.regex:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InvalidParameterError(f"cleaning rule: '{self.pattern}' is not a regular expression ({exc})") from None
        return self

    @classmethod
    def parse(cls, text: str) -> CleaningRule:
        """``PATTERN=NAME`` (glob) or ``re:PATTERN=NAME`` (regular expression); the name is
        what follows the last ``=``."""
        body = str(text)
        regex = body.startswith(REGEX_PREFIX)
        if regex:
            body = body[len(REGEX_PREFIX):]
        pattern, sep, name = body.rpartition("=")
        if not sep or not pattern:
            raise InvalidParameterError(f"cannot read the cleaning rule '{text}'",
                                        hint="write PATTERN=NAME (glob) or re:PATTERN=NAME, e.g. '*/p/*=product page'")
        return cls(pattern=pattern, name=name.strip(), regex=regex)

    def regex_pattern(self) -> str:
        """The rule as a regular expression searched in the value."""
        return self.pattern if self.regex else glob_regex([self.pattern])

    def __str__(self) -> str:
        return f"{REGEX_PREFIX if self.regex else ''}{self.pattern}={self.name}"


def _as_step(value: Any) -> Any:
    if isinstance(value, str):
        return Step.parse(value)
    return value


def _as_rules(value: Any) -> Any:
    if isinstance(value, str | CleaningRule | Mapping):
        value = [value]
    if isinstance(value, list | tuple):
        return tuple(CleaningRule.parse(v) if isinstance(v, str) else v for v in value)
    return value


def _as_strings(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list | tuple) else value


class PathOptions(BaseModel):
    """What a path is: level, anchors, cleaning, collapsing, depth and start/end nodes.

    ``from`` and ``to`` are step filters as in funnels (``purchase``,
    ``event=purchase&channel=email``, ``stage=decision``); ``cleaning_rules`` are
    :class:`CleaningRule` objects or ``PATTERN=NAME`` / ``re:PATTERN=NAME`` texts;
    ``exclude`` holds glob patterns over node names (after cleaning).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    level: str = "event"
    unit: str = "person"
    from_: Step | None = Field(default=None, alias="from")
    to: Step | None = None
    depth: int | None = None
    collapse_repeats: bool = False
    cleaning_rules: tuple[CleaningRule, ...] = ()
    exclude: tuple[str, ...] = ()
    start_end_nodes: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidParameterError(_pydantic_message(exc, type(self).__name__)) from None

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return _as_step(v)

    @field_validator("cleaning_rules", mode="before")
    @classmethod
    def _rules(cls, v: Any) -> Any:
        return _as_rules(v)

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude(cls, v: Any) -> Any:
        return _as_strings(v)

    @model_validator(mode="after")
    def _validate(self) -> PathOptions:
        for rule in PATH_RULES:
            rule(self)
        return self

    @property
    def unit_column(self) -> str:
        return UNITS[self.unit]

    @property
    def level_column(self) -> str:
        return LEVELS[self.level]

    @property
    def aligned_end(self) -> bool:
        """Paths are aligned on their end: only ``to`` is given (depth keeps the last nodes)."""
        return self.to is not None and self.from_ is None

    def options_dict(self) -> dict[str, Any]:
        """The options as plain JSON values (as the REST API takes them)."""
        return {
            "level": self.level,
            "unit": self.unit,
            "from": None if self.from_ is None else self.from_.name,
            "to": None if self.to is None else self.to.name,
            "depth": self.depth,
            "collapse_repeats": self.collapse_repeats,
            "cleaning_rules": [str(r) for r in self.cleaning_rules],
            "exclude": list(self.exclude),
            "start_end_nodes": self.start_end_nodes,
        }


def _pydantic_message(exc: ValidationError, what: str) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "query"
        parts.append(f"{where}: {e['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


# ---------------------------------------------------------------- validation rules
def _rule_level(q: PathOptions) -> None:
    if q.level not in LEVELS:
        raise UnknownNameError("path level", q.level, LEVELS)


def _rule_unit(q: PathOptions) -> None:
    if q.unit not in UNITS:
        raise UnknownNameError("unit", q.unit, UNITS)


def _rule_depth(q: PathOptions) -> None:
    if q.depth is not None and not 1 <= q.depth <= MAX_DEPTH:
        raise InvalidParameterError(f"depth must be 1 to {MAX_DEPTH} nodes, got {q.depth}",
                                    hint="leave it out for whole paths (transitions)")


def _rule_exclude(q: PathOptions) -> None:
    if any(not p for p in q.exclude):
        raise InvalidParameterError("an exclude pattern is empty")


PATH_RULES: tuple[Callable[[PathOptions], None], ...] = (_rule_level, _rule_unit, _rule_depth, _rule_exclude)
"""Applied in order when path options are built; the first failing rule raises."""


class PathsQuery(PathOptions):
    """Top paths: ``top`` most frequent paths of at most ``depth`` nodes (default 5); the
    Sankey flows keep the ``max_links`` heaviest links."""

    depth: int | None = DEFAULT_DEPTH
    top: int = 20
    max_links: int = 100

    @model_validator(mode="after")
    def _validate_paths(self) -> PathsQuery:
        if not 1 <= self.top <= MAX_TOP:
            raise InvalidParameterError(f"top must be 1 to {MAX_TOP}, got {self.top}")
        if self.max_links < 1:
            raise InvalidParameterError(f"max_links must be at least 1, got {self.max_links}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**self.options_dict(), "top": self.top, "max_links": self.max_links}


# ============================================================================ results
@dataclass(frozen=True)
class PathRow:
    nodes: tuple[str, ...]
    persons: int
    """Units (persons or accounts) whose path this is."""
    share: float
    """``persons`` / all units with a path."""
    median_seconds: float | None
    """Median time from the path's first touch to its last touch (markers excluded)."""

    @property
    def path(self) -> str:
        return ARROW.join(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "nodes": list(self.nodes), "persons": self.persons, "share": self.share,
                "median_seconds": self.median_seconds}


@dataclass(frozen=True)
class SankeyNode:
    step: int
    """Column of the node: 1 = first node of the paths (``path_start`` is 0); aligned on
    the end (only ``to`` given): 0 = last node, -1 the one before, ``path_end`` 1."""
    name: str
    persons: int

    @property
    def key(self) -> str:
        return f"{self.step}:{self.name}"


@dataclass(frozen=True)
class SankeyLink:
    step: int
    """Step of the source node; the target is at ``step + 1``."""
    source: str
    target: str
    persons: int


@dataclass(frozen=True)
class Sankey:
    """Flows between path nodes per step position (units per node and per link)."""

    nodes: tuple[SankeyNode, ...]
    links: tuple[SankeyLink, ...]
    links_total: int
    """Links before keeping the ``max_links`` heaviest (``links`` holds the kept ones)."""
    aligned: Literal["start", "end"] = "start"
    unit: str = "person"

    def to_dict(self) -> dict[str, Any]:
        return {
            "aligned": self.aligned,
            "unit": self.unit,
            "nodes": [vars(n) for n in self.nodes],
            "links": [vars(lk) for lk in self.links],
            "links_total": self.links_total,
        }

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([vars(lk) for lk in self.links], columns=["step", "source", "target", "persons"])

    def figure(self, title: str | None = None) -> Any:
        import plotly.graph_objects as go

        used = {(lk.step, lk.source) for lk in self.links} | {(lk.step + 1, lk.target) for lk in self.links}
        nodes = [n for n in self.nodes if (n.step, n.name) in used] or list(self.nodes)
        index = {(n.step, n.name): i for i, n in enumerate(nodes)}
        # one column per step; within a column the busiest node on top
        steps = sorted({n.step for n in nodes})
        span = max(len(steps) - 1, 1)
        column: dict[int, list[SankeyNode]] = {}
        for n in sorted(nodes, key=lambda n: (n.step, -n.persons, n.name)):
            column.setdefault(n.step, []).append(n)
        xs = [0.001 + 0.998 * steps.index(n.step) / span for n in nodes]
        ys = [0.001 + 0.998 * (column[n.step].index(n) + 0.5) / len(column[n.step]) for n in nodes]
        fig = go.Figure(go.Sankey(
            arrangement="snap",
            node={"label": [n.name for n in nodes], "x": xs, "y": ys, "pad": 12,
                  "customdata": [n.persons for n in nodes],
                  "hovertemplate": "%{label}: %{customdata} " + self.unit + "s<extra></extra>"},
            link={"source": [index[(lk.step, lk.source)] for lk in self.links],
                  "target": [index[(lk.step + 1, lk.target)] for lk in self.links],
                  "value": [lk.persons for lk in self.links]},
        ))
        fig.update_layout(title=title or f"Paths ({self.unit}s)")
        return fig


@dataclass(frozen=True)
class PathsResult:
    """The top paths, the Sankey flows of all paths and the units behind them."""

    query: PathsQuery
    paths: tuple[PathRow, ...]
    persons: int
    """Units with a path (after restriction, anchors and exclusions)."""
    distinct_paths: int
    sankey: Sankey
    units: ir.Table | None = field(default=None, repr=False, compare=False)
    """One row per unit with a path: the unit id column (``person_id`` or ``account_id``)
    and ``path`` (nodes joined by " → ")."""

    @property
    def unit(self) -> str:
        return self.query.unit

    def people_table(self, path: str | Sequence[str]) -> ir.Table:
        """Ibis table (the unit id column) of the units that followed ``path`` (a " → " text or nodes)."""
        if self.units is None:
            raise InvalidParameterError("this paths result holds no unit table")
        text = path if isinstance(path, str) else ARROW.join(path)
        u = self.units
        return u.filter(u.path == text).select(self.query.unit_column)

    def people(self, path: str | Sequence[str]) -> list[str]:
        """Ids of the units that followed ``path`` (sorted)."""
        return sorted(str(v) for v in self.people_table(path).to_pyarrow().column(0).to_pylist())

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query.to_dict(),
            "unit": self.unit,
            "persons": self.persons,
            "distinct_paths": self.distinct_paths,
            "paths": [p.to_dict() for p in self.paths],
            "sankey": self.sankey.to_dict(),
        }

    def to_pandas(self) -> pd.DataFrame:
        """One row per top path: rank, path, steps, persons, share, median_seconds."""
        rows = [{"rank": i, "path": p.path, "steps": len(p.nodes), "persons": p.persons, "share": p.share,
                 "median_seconds": p.median_seconds} for i, p in enumerate(self.paths, start=1)]
        return pd.DataFrame(rows, columns=["rank", "path", "steps", "persons", "share", "median_seconds"])

    def figure(self) -> Any:
        """Plotly Sankey of the flows between path nodes (heaviest ``max_links`` links)."""
        q = self.query
        title = f"Paths by {q.level} — {self.persons:,} {self.unit}s"
        if q.from_ is not None:
            title += f", from {q.from_.name}"
        if q.to is not None:
            title += f", to {q.to.name}"
        return self.sankey.figure(title)

    def table_rows(self) -> list[tuple[int, str, int, float, str]]:
        """Rank, path, persons, share and formatted median time, for terminal tables."""
        return [(i, p.path, p.persons, p.share, format_duration(p.median_seconds))
                for i, p in enumerate(self.paths, start=1)]


# ============================================================================ computation
_U = "unit"
_TS = "ts"
_NODE = "node"


def restrict_persons(t: ir.Table, col: str, persons: Persons) -> ir.Table:
    """Rows of ``t`` whose ``col`` is one of ``persons`` (ids or a table of ids)."""
    if persons is None:
        return t
    if isinstance(persons, ir.Table):
        other = col if col in persons.columns else None
        if other is None:
            if len(persons.columns) != 1:
                raise InvalidParameterError(
                    f"the table of units to keep needs a column {col} (or exactly one column), "
                    f"got {', '.join(persons.columns)}")
            other = persons.columns[0]
        ids = persons.select(_keep=persons[other].cast("string")).distinct()
        return t.semi_join(ids, t[col].cast("string") == ids._keep)
    if isinstance(persons, str):
        raise InvalidParameterError("persons must be a list of ids, not one string")
    ids_list = sorted({str(p) for p in persons})
    if not ids_list:
        return t.filter(ibis.literal(False))
    return t.filter(t[col].cast("string").isin(ids_list))


def _node_value(t: ir.Table, q: PathOptions) -> ir.StringValue:
    value = t[q.level_column].cast("string")
    if q.cleaning_rules:
        value = ibis.cases(
            *((value.re_search(r.regex_pattern()), ibis.literal(r.name)) for r in q.cleaning_rules),
            else_=value,
        )
    return value.fill_null(NONE_LABEL)


def _check_columns(touches: ir.Table, q: PathOptions, steps: Sequence[Step]) -> None:
    for c in (q.unit_column, _TS, q.level_column):
        if c not in touches.columns:
            raise UnknownNameError("column", c, touches.columns)
    check_step_fields(touches, steps)


def path_nodes(touches: ir.Table, q: PathOptions, *, persons: Persons = None,
               flags: Mapping[str, Step] | None = None, anchor_times: ir.Table | None = None) -> ir.Table:
    """One row per node of every unit's path (the module docstring defines paths).

    Columns: ``unit`` (string id), ``pos`` (1-based position in the path; ``path_start``
    is 0 and ``path_end`` last + 1), ``step`` (Sankey column, see :class:`SankeyNode`),
    ``node``, ``source`` (the previous node, NULL for the first), ``ts`` (first touch of
    the node), ``end_ts`` (last touch of the node's run), ``seconds`` (time from
    ``source`` to this node; NULL for the first node and the markers) and, for each
    entry of ``flags``, a boolean column: the unit has a touch matching that step (any
    touch of the unit, before anchors and exclusions apply).

    ``anchor_times`` (columns ``unit``, ``from_at``, ``to_at``) makes the anchors exact: only
    units listed there have a path, the ``from`` anchor is the unit's first touch matching
    ``from`` *at* ``from_at``, the ``to`` anchor its first touch matching ``to`` at ``to_at``
    at or after the start (the start itself when equal times put it first).
    """
    flags = dict(flags or {})
    anchors = [s for s in (q.from_, q.to) if s is not None]
    _check_columns(touches, q, [*anchors, *flags.values()])
    col = q.unit_column
    t = restrict_persons(touches.filter(touches[col].notnull()), col, persons)
    exact = anchor_times is not None
    if anchor_times is not None:
        a = anchor_times.select(_a_unit=anchor_times[_U], _from_at=anchor_times.from_at,
                                _to_at=anchor_times.to_at)
        t = t.join(a, t[col].cast("string") == a._a_unit).drop("_a_unit")
    order = [_TS, *(["message_id"] if "message_id" in t.columns else []), _NODE]
    cols: dict[str, Any] = {_U: t[col].cast("string"), _TS: t[_TS], _NODE: _node_value(t, q)}
    if "message_id" in t.columns:
        cols["message_id"] = t.message_id
    if q.from_ is not None:
        cols["_from"] = step_predicate(t, q.from_) & ((t[_TS] == t._from_at).fill_null(False) if exact else True)
    if q.to is not None:
        cols["_to"] = step_predicate(t, q.to) & ((t[_TS] == t._to_at).fill_null(False) if exact else True)
    per_unit = ibis.window(group_by=_U)
    for name, step in flags.items():
        cols[f"_f_{name}"] = ibis.cases((step_predicate(t, step), 1), else_=0)
    s = t.select(**cols)
    if flags:
        s = s.mutate(**{name: s[f"_f_{name}"].max().over(per_unit) == 1 for name in flags})
        s = s.drop(*[f"_f_{name}" for name in flags])
    if q.exclude:
        s = s.filter(~s[_NODE].re_search(glob_regex(list(q.exclude))))

    # one ordered pass over each unit's touches: position, previous node and previous time
    w = ibis.window(group_by=_U, order_by=order)
    s = s.mutate(pos=ibis.row_number().over(w) + 1, source=s[_NODE].lag().over(w), _gap_from=s[_TS].lag().over(w))
    if anchors:
        # keep the touches from the first `from` touch to the first `to` touch after it; the
        # kept touches are consecutive, so positions shift and the first one's source is dropped
        null_i = ibis.null("int64")
        if q.from_ is not None:
            s = s.mutate(_lo=ibis.cases((s._from, s.pos), else_=null_i).min().over(per_unit))
            s = s.filter(s.pos >= s._lo)
        if q.to is not None:
            if q.from_ is None:
                after = s._to
            else:
                after = s._to & ((s.pos >= s._lo) if exact else (s.pos > s._lo))
            hi = ibis.cases((after, s.pos), else_=null_i).min().over(per_unit)
            if exact and q.from_ is not None:  # the step-k touch sorted before the step-(k-1) one
                hi = ibis.coalesce(hi, s._lo)
            s = s.mutate(_hi=hi)
            s = s.filter(s.pos <= s._hi)
        if q.from_ is not None:
            s = s.mutate(pos=s.pos - s._lo + 1)
        s = s.drop(*[c for c in ("_from", "_to", "_lo", "_hi") if c in s.columns])

    if q.collapse_repeats:
        # a run of equal nodes starts where the node differs from the previous touch's; the
        # previous touch of a run's start is the last touch of the previous run
        s = s.mutate(_last_ts=s[_TS].max().over(per_unit))
        s = s.filter((s.pos == 1) | s.source.isnull() | (s[_NODE] != s.source))
        s = s.mutate(end_ts=ibis.coalesce(s._gap_from.lead().over(w), s._last_ts),
                     pos=ibis.row_number().over(w) + 1)
        s = s.drop("_last_ts")
    else:
        s = s.mutate(end_ts=s[_TS])

    n_kept: ir.IntegerValue | None = None
    head_cut: ir.BooleanValue = ibis.literal(False)
    tail_cut: ir.BooleanValue = ibis.literal(False)
    needs_n = q.start_end_nodes or q.aligned_end  # path length: for markers and end alignment
    if needs_n:
        s = s.mutate(_n=s.pos.max().over(per_unit))
        n_kept = s._n
    if q.depth is not None:
        d = q.depth
        if q.aligned_end:
            s = s.filter(s.pos > s._n - d)
            s = s.mutate(pos=s.pos - ibis.greatest(s._n - d, 0))
            head_cut = s._n > d
        else:
            s = s.filter(s.pos <= d)
            if needs_n:
                tail_cut = s._n > d
        if needs_n:
            n_kept = ibis.least(s._n, d)
    seconds = ibis.cases(
        (s.pos > 1, seconds_between(s[_TS], s._gap_from)), else_=ibis.null("float64"))
    step = s.pos - n_kept if (q.aligned_end and n_kept is not None) else s.pos
    nodes = s.mutate(
        source=ibis.cases((s.pos > 1, s.source), else_=ibis.null("string")),
        seconds=seconds,
        step=step.cast("int64"),
        _n_kept=(n_kept if n_kept is not None else s.pos).cast("int64"),
        _head_cut=head_cut,
        _tail_cut=tail_cut,
    )
    out_cols = [_U, "pos", "step", _NODE, "source", _TS, "end_ts", "seconds", *flags]
    if not q.start_end_nodes:
        return nodes.select(*out_cols)

    null_ts = ibis.null().cast(nodes[_TS].type().copy(nullable=True))
    null_f = ibis.null("float64")
    first = nodes.filter(nodes.pos == 1)
    starts = first.filter(~first._head_cut).select(
        _U, pos=ibis.literal(0, "int64"), step=(first.step - 1).cast("int64"), node=ibis.literal(PATH_START),
        source=ibis.null("string"), ts=null_ts, end_ts=null_ts, seconds=null_f, **{f: first[f] for f in flags})
    real = nodes.mutate(source=ibis.cases((nodes.pos == 1, ibis.cases((nodes._head_cut, ibis.null("string")),
                                                                      else_=ibis.literal(PATH_START))),
                                          else_=nodes.source))
    last = nodes.filter(nodes.pos == nodes._n_kept)
    ends = last.filter(~last._tail_cut).select(
        _U, pos=(last.pos + 1).cast("int64"), step=(last.step + 1).cast("int64"), node=ibis.literal(PATH_END),
        source=last[_NODE], ts=null_ts, end_ts=null_ts, seconds=null_f, **{f: last[f] for f in flags})
    return union_all([starts.select(*out_cols), real.select(*out_cols), ends.select(*out_cols)])


def _collect(expr: ir.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = expr.to_pyarrow().to_pylist()
    return rows


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _unit_paths(nodes: ir.Table) -> ir.Table:
    """One row per unit: ``unit``, ``path`` (nodes joined by SEP in order) and ``seconds``
    (first to last touch of the path)."""
    ordered = ibis.struct({"pos": nodes.pos, "node": nodes[_NODE]}).collect().sort()
    g = nodes.group_by(_U).aggregate(
        path=ordered.map(lambda x: x.node).join(SEP),
        _start=nodes[_TS].min(),
        _end=nodes.end_ts.max(),
    )
    return g.select(_U, "path", seconds=seconds_between(g._end, g._start))


def _triples(nodes: ir.Table) -> ir.Table:
    """Units per ``(step, node, source)``: node totals and, where ``source`` is set, links."""
    return nodes.group_by("step", _NODE, "source").aggregate(persons=nodes.count())


def _sankey(rows: Sequence[Mapping[str, Any]], q: PathsQuery) -> Sankey:
    """The Sankey of the ``_triples`` rows: nodes with their units, heaviest links kept."""
    totals: dict[tuple[int, str], int] = {}
    links: list[SankeyLink] = []
    for r in rows:
        key = (int(r["step"]), str(r[_NODE]))
        totals[key] = totals.get(key, 0) + int(r["persons"])
        if r["source"] is not None:
            links.append(SankeyLink(int(r["step"]) - 1, str(r["source"]), str(r[_NODE]), int(r["persons"])))
    links.sort(key=lambda lk: (-lk.persons, lk.step, lk.source, lk.target))
    kept = sorted(links[: q.max_links], key=lambda lk: (lk.step, -lk.persons, lk.source, lk.target))
    node_rows = sorted((SankeyNode(s, n, c) for (s, n), c in totals.items()),
                       key=lambda n: (n.step, -n.persons, n.name))
    return Sankey(nodes=tuple(node_rows), links=tuple(kept), links_total=len(links),
                  aligned="end" if q.aligned_end else "start", unit=q.unit)


def _check_query(query: Any, cls: type) -> None:
    if not isinstance(query, cls):
        raise InvalidParameterError(f"needs a {cls.__name__}, got {type(query).__name__}")


def paths(touches: ir.Table, query: PathsQuery, *, persons: Persons = None) -> PathsResult:
    """The ``query.top`` most frequent paths and the Sankey flows of all paths.

    ``touches`` needs ``ts``, the unit column (rows where it is NULL are ignored), the
    level column and the columns the anchors read (``message_id`` orders equal times).
    ``persons`` restricts the analysis to these units (ids of persons, or of accounts
    when the unit is account): a list, or an Ibis table with the unit column or one column
    (e.g. ``FunnelResult.people_table(k, "dropped")``).
    """
    _check_query(query, PathsQuery)
    return _paths_of(touches, query, persons=persons)


def _paths_of(touches: ir.Table, q: PathsQuery, *, persons: Persons,
              anchor_times: ir.Table | None = None) -> PathsResult:
    nodes = path_nodes(touches, q, persons=persons, anchor_times=anchor_times)
    per_unit = _unit_paths(nodes)
    by_path = per_unit.group_by("path").aggregate(persons=per_unit.count(), median=per_unit.seconds.quantile(0.5))
    everything = ibis.window()
    by_path = by_path.mutate(n_total=by_path.persons.sum().over(everything),
                             n_distinct=by_path.persons.count().over(everything))
    top = by_path.order_by([ibis.desc("persons"), "path"]).limit(q.top)
    # one query for both answers: the top paths (kind 0) and the Sankey triples (kind 1)
    null_s, null_i = ibis.null("string"), ibis.null("int64")
    triples = _triples(nodes)
    both = top.select(kind=ibis.literal(0, "int64"), path=top.path, persons=top.persons.cast("int64"),
                      median=top.median.cast("float64"), n_total=top.n_total.cast("int64"),
                      n_distinct=top.n_distinct.cast("int64"), step=null_i, node=null_s, source=null_s)
    both = union_all([both, triples.select(
        kind=ibis.literal(1, "int64"), path=null_s, persons=triples.persons.cast("int64"), median=ibis.null("float64"),
        n_total=null_i, n_distinct=null_i, step=triples.step, node=triples[_NODE], source=triples.source)])
    rows = _collect(both)
    found = sorted((r for r in rows if r["kind"] == 0), key=lambda r: (-int(r["persons"]), str(r["path"])))
    total = int(found[0]["n_total"]) if found else 0
    paths_ = tuple(
        PathRow(nodes=tuple(str(r["path"]).split(SEP)), persons=int(r["persons"]),
                share=int(r["persons"]) / total if total else 0.0, median_seconds=_num(r["median"]))
        for r in found
    )
    units = per_unit.select(**{q.unit_column: per_unit[_U], "path": per_unit.path.replace(SEP, ARROW)})
    return PathsResult(query=q, paths=paths_, persons=total, distinct_paths=int(found[0]["n_distinct"]) if found else 0,
                       sankey=_sankey([r for r in rows if r["kind"] == 1], q), units=units)


def sankey(touches: ir.Table, query: PathsQuery, *, persons: Persons = None) -> Sankey:
    """Only the Sankey flows of :func:`paths` (units per node and link, per step position)."""
    _check_query(query, PathsQuery)
    return _sankey(_collect(_triples(path_nodes(touches, query, persons=persons))), query)


# ---------------------------------------------------------------- around funnel steps
def funnel_anchors(result: FunnelResult, step: int | str, position: str) -> tuple[dict[str, Step | None], ir.Table]:
    """Anchor steps and units for paths around funnel step ``step`` (1-based index or name).

    The anchors are the step touches of each unit's counted attempt (see
    :func:`journeylens.analyses.funnel.attempt_times`); :func:`funnel_paths` pins them:

    * ``before``: up to the attempt's step-k touch, of units that reached step k;
    * ``between``: from the attempt's step-(k-1) touch to its step-k touch, of units that
      reached step k (k >= 2);
    * ``after``: from the attempt's step-k touch, of units that reached step k;
    * ``dropped``: from the attempt's step-(k-1) touch, of units that reached step k-1 but
      not step k (dropped off at step k; k >= 2).
    """
    if position not in FUNNEL_POSITIONS:
        raise UnknownNameError("funnel position", str(position), FUNNEL_POSITIONS)
    k = result.step_index(step)
    steps = result.query.steps
    if position in ("between", "dropped") and k < 2:
        raise InvalidParameterError(f"'{position}' needs a step after the first (k >= 2), got {k}",
                                    hint="use 'after' for paths after step 1")
    if position == "before":
        return {"from": None, "to": steps[k - 1]}, result.people_table(k)
    if position == "between":
        return {"from": steps[k - 2], "to": steps[k - 1]}, result.people_table(k)
    if position == "after":
        return {"from": steps[k - 1], "to": None}, result.people_table(k)
    return {"from": steps[k - 2], "to": None}, result.people_table(k, "dropped")


def funnel_paths(touches: ir.Table, result: FunnelResult, step: int | str, position: str = "after",
                 query: PathsQuery | None = None) -> PathsResult:
    """Paths before / between / after funnel step ``step``, or of the units that dropped off
    at it (see :func:`funnel_anchors`), anchored on the exact step touches of each unit's
    counted attempt. ``touches`` must be those the funnel ran on; ``query`` gives the other
    path options (its own ``from``/``to`` must be unset; its unit is the funnel's)."""
    base = query or PathsQuery()
    _check_query(base, PathsQuery)
    if base.from_ is not None or base.to is not None:
        raise InvalidParameterError("funnel paths set the anchors themselves; leave 'from' and 'to' empty")
    anchors, units = funnel_anchors(result, step, position)
    k = result.step_index(step)
    data = base.model_dump(by_alias=True)
    data.update(anchors, unit=result.unit)
    q = PathsQuery(**data)
    at = attempt_times(touches, result.query)
    col = result.query.unit_column
    ids = units.select(_k=units[col].cast("string"))
    at = at.semi_join(ids, at[_U] == ids._k)
    null_ts = ibis.null().cast(at.t1.type().copy(nullable=True))
    from_i = {"before": None, "between": k - 1, "after": k, "dropped": k - 1}[position]
    to_i = {"before": k, "between": k, "after": None, "dropped": None}[position]
    times = at.select(_U, from_at=at[f"t{from_i}"] if from_i else null_ts,
                      to_at=at[f"t{to_i}"] if to_i else null_ts)
    return _paths_of(touches, q, persons=None, anchor_times=times)


__all__ = [
    "FUNNEL_POSITIONS",
    "LEVELS",
    "NONE_LABEL",
    "PATH_END",
    "PATH_START",
    "CleaningRule",
    "PathOptions",
    "PathRow",
    "PathsQuery",
    "PathsResult",
    "Sankey",
    "SankeyLink",
    "SankeyNode",
    "funnel_anchors",
    "funnel_paths",
    "path_nodes",
    "paths",
    "restrict_persons",
    "sankey",
]
