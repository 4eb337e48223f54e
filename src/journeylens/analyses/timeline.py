"""One person's stitched journey: every touch in time order with its stage and touchpoint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from journeylens.errors import UnknownNameError

COLUMNS = ("ts", "event", "stage", "touchpoint", "channel", "user_id", "anonymous_id", "revenue")


@dataclass(frozen=True)
class TimelineTouch:
    ts: datetime
    event: str
    stage: str | None
    touchpoint: str | None
    channel: str | None
    user_id: str | None
    anonymous_id: str | None
    revenue: float | None


@dataclass(frozen=True)
class PersonTimeline:
    person_id: str
    account_id: str | None
    ids: tuple[str, ...]
    """Every anonymous and user id stitched into this person."""
    touches: tuple[TimelineTouch, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "account_id": self.account_id,
            "ids": list(self.ids),
            "touches": [{**vars(t), "ts": t.ts.isoformat()} for t in self.touches],
        }

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([vars(t) for t in self.touches], columns=list(COLUMNS))

    def figure(self) -> Any:
        import plotly.graph_objects as go

        df = self.to_pandas()
        fig = go.Figure(go.Scatter(x=df["ts"], y=df["stage"].fillna("(unmatched)"), mode="markers+lines",
                                   text=df["event"], hovertemplate="%{x}<br>%{text}<extra></extra>"))
        fig.update_layout(title=f"Journey of {self.person_id}", yaxis_title="stage")
        return fig


def person_timeline(touches: ir.Table, identities: ir.Table, who: str) -> PersonTimeline:
    """The touches of the person that id ``who`` (anonymous id, user id or person id) belongs to.

    ``touches`` must be resolved (``person_id``, ``stage``); ``identities`` restricted to the workspace.
    """
    linked = identities.filter(identities.id == ibis.literal(who)).person_id.to_pyarrow().to_pylist()
    person = linked[0] if linked else who
    mine = touches.filter(touches.person_id == ibis.literal(person))
    rows = mine.select(*COLUMNS, "account_id").order_by(["ts", "event"]).to_pyarrow().to_pylist()
    if not rows:
        raise UnknownNameError("person", who, [])
    ids = identities.filter(identities.person_id == ibis.literal(person)).id.to_pyarrow().to_pylist()
    seen = {r["user_id"] for r in rows} | {r["anonymous_id"] for r in rows} | set(ids) | {person}
    account = next((r["account_id"] for r in reversed(rows) if r["account_id"]), None)
    return PersonTimeline(
        person_id=person,
        account_id=account,
        ids=tuple(sorted(i for i in seen if i)),
        touches=tuple(TimelineTouch(**{c: r[c] for c in COLUMNS}) for r in rows),
    )
