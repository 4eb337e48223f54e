"""Stage funnel over a journey model.

Semantics: a unit (person or account) *reaches* stage ``i`` when its furthest
stage — the highest stage index among all its matched touches, at any time —
is ``i`` or beyond. ``people`` of a stage counts units that reached it, so the
counts never increase along the model even though journeys are not linear.
``touches`` counts the touches the model's rules placed in the stage.
``unmatched_touches`` counts touches no rule matched (reported, never dropped).

Non-linear journeys. A unit's *stage at time t* is its furthest stage so far
(running maximum of ``stage_index`` over its touches ordered by ``ts``, then
``message_id``). It *enters* a stage when that running maximum first reaches
it (a skipped stage is never entered).

* ``median_seconds_in_stage``: median over units that entered the stage and
  later entered a further one, of the time between the two entries. Units
  still in the stage (censored) are left out; ``units_timed`` says how many
  were measured.
* ``moved_back``: units that, while their furthest stage was this one, had a
  touch placed in an earlier stage.
* ``repeated``: units with two or more separate runs of touches in this
  stage (another stage's touch in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from journeylens.errors import InvalidParameterError
from journeylens.journey import JourneyModel

UNITS = {"person": "person_id", "account": "account_id"}


@dataclass(frozen=True)
class StageRow:
    stage: str
    label: str
    people: int
    """Units whose furthest stage is this one or a later one."""
    touches: int
    furthest: int
    """Units whose furthest stage is exactly this one (they stalled here)."""
    conversion_from_previous: float | None
    conversion_from_start: float | None
    median_seconds_in_stage: float | None = None
    units_timed: int = 0
    moved_back: int = 0
    repeated: int = 0


@dataclass(frozen=True)
class StageFunnel:
    model: str
    unit: str
    stages: tuple[StageRow, ...]
    unmatched_touches: int
    total_units: int
    """All units with at least one touch (matched or not)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "unit": self.unit,
            "stages": [
                {
                    "stage": r.stage,
                    "people": r.people,
                    "touches": r.touches,
                    "furthest": r.furthest,
                    "conversion_from_previous": r.conversion_from_previous,
                    "conversion_from_start": r.conversion_from_start,
                    "median_seconds_in_stage": r.median_seconds_in_stage,
                    "units_timed": r.units_timed,
                    "moved_back": r.moved_back,
                    "repeated": r.repeated,
                }
                for r in self.stages
            ],
            "unmatched_touches": self.unmatched_touches,
            "total_units": self.total_units,
        }

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_dict()["stages"])

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Funnel(
                y=[r.label for r in self.stages],
                x=[r.people for r in self.stages],
                textinfo="value+percent initial",
            )
        )
        fig.update_layout(title=f"Stage funnel — {self.model} ({self.unit}s)")
        return fig


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def stage_funnel(touches: ir.Table, model: JourneyModel, *, unit: str = "person") -> StageFunnel:
    """Count units reaching each stage of ``model``.

    ``touches`` must carry ``stage_index`` (see ``journey.assign_stages``) and
    the unit column (``person_id`` or ``account_id``). For accounts, touches of
    people without an account are ignored.
    """
    if unit not in UNITS:
        raise InvalidParameterError(f"unknown unit '{unit}'; choose person or account")
    col = UNITS[unit]
    t = touches.filter(touches[col].notnull())
    matched = t.filter(t.stage_index.notnull())
    per_unit = matched.group_by(col).aggregate(furthest=matched.stage_index.max())
    furthest = per_unit.group_by("furthest").aggregate(n=per_unit.count()).to_pyarrow().to_pylist()
    by_stage = matched.group_by("stage_index").aggregate(n=matched.count()).to_pyarrow().to_pylist()
    unmatched = int(t.filter(t.stage_index.isnull()).count().execute())
    total = int(t[col].nunique().execute())

    dyn = _dynamics(matched, col)
    n_furthest = {int(r["furthest"]): int(r["n"]) for r in furthest}
    n_touches = {int(r["stage_index"]): int(r["n"]) for r in by_stage}
    rows: list[StageRow] = []
    reached_after = sum(n_furthest.values())
    first = reached_after
    previous: int | None = None
    for i, stage in enumerate(model.stages):
        reached = reached_after
        rows.append(
            StageRow(
                stage=stage.key,
                label=stage.label,
                people=reached,
                touches=n_touches.get(i, 0),
                furthest=n_furthest.get(i, 0),
                conversion_from_previous=None if previous is None else _ratio(reached, previous),
                conversion_from_start=_ratio(reached, first),
                median_seconds_in_stage=dyn.get(i, {}).get("median"),
                units_timed=int(dyn.get(i, {}).get("timed") or 0),
                moved_back=int(dyn.get(i, {}).get("back") or 0),
                repeated=int(dyn.get(i, {}).get("repeated") or 0),
            )
        )
        reached_after -= n_furthest.get(i, 0)
        previous = reached
    return StageFunnel(model.key, unit, tuple(rows), unmatched, total)


def _dynamics(matched: ir.Table, col: str) -> dict[int, dict[str, Any]]:
    """Per stage index: median seconds in stage, units timed, moved back, repeated (see module doc)."""
    order = [matched.ts, matched.message_id]
    running = ibis.window(group_by=matched[col], order_by=order, preceding=None, following=0)
    ordered = ibis.window(group_by=matched[col], order_by=order)
    t = matched.select(
        unit=matched[col], ts=matched.ts, message_id=matched.message_id, stage_index=matched.stage_index,
        reach=matched.stage_index.max().over(running),
        prev_stage=matched.stage_index.lag().over(ordered),
    )
    w = ibis.window(group_by=t.unit, order_by=[t.ts, t.message_id])
    t = t.mutate(prev_reach=t.reach.lag().over(w))

    entries = t.filter(t.prev_reach.isnull() | (t.reach > t.prev_reach)).select("unit", "reach", "ts")
    we = ibis.window(group_by=entries.unit, order_by=entries.ts)
    entries = entries.mutate(next_entry=entries.ts.lead().over(we))
    timed = entries.filter(entries.next_entry.notnull())
    timed = timed.mutate(seconds=timed.next_entry.delta(timed.ts, unit="microsecond") / 1e6)
    times = timed.group_by(stage=timed.reach).aggregate(median=timed.seconds.median(), timed=timed.unit.nunique())

    back = t.filter(t.stage_index < t.prev_reach)
    back = back.group_by(stage=back.prev_reach).aggregate(back=back.unit.nunique())

    runs = t.filter(t.prev_stage.isnull() | (t.stage_index != t.prev_stage))
    runs = runs.group_by([runs.unit, runs.stage_index]).aggregate(n=runs.count())
    runs = runs.filter(runs.n > 1)
    repeated = runs.group_by(stage=runs.stage_index).aggregate(repeated=runs.unit.nunique())

    out: dict[int, dict[str, Any]] = {}
    for part in (times, back, repeated):
        for row in part.to_pyarrow().to_pylist():
            out.setdefault(int(row.pop("stage")), {}).update(row)
    return out
