"""Stage funnel over a journey model.

Semantics: a unit (person or account) *reaches* stage ``i`` when its furthest
stage — the highest stage index among all its matched touches, at any time —
is ``i`` or beyond. ``people`` of a stage counts units that reached it, so the
counts never increase along the model even though journeys are not linear.
``touches`` counts the touches the model's rules placed in the stage.
``unmatched_touches`` counts touches no rule matched (reported, never dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
            )
        )
        reached_after -= n_furthest.get(i, 0)
        previous = reached
    return StageFunnel(model.key, unit, tuple(rows), unmatched, total)
