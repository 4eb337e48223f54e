"""Overview: the headline numbers of a workspace (people, events, channels)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd


@dataclass(frozen=True)
class ChannelRow:
    channel: str
    touches: int
    people: int
    share_of_touches: float


@dataclass(frozen=True)
class Overview:
    people: int
    identified_people: int
    events: int
    touches: int
    first_ts: datetime | None
    last_ts: datetime | None
    channels: tuple[ChannelRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "people": self.people,
            "identified_people": self.identified_people,
            "events": self.events,
            "touches": self.touches,
            "first_ts": self.first_ts.isoformat() if self.first_ts else None,
            "last_ts": self.last_ts.isoformat() if self.last_ts else None,
            "channels": [vars(c) for c in self.channels],
        }

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([vars(c) for c in self.channels])

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=[c.channel for c in self.channels], y=[c.people for c in self.channels]))
        fig.update_layout(title="People per channel", yaxis_title="people")
        return fig


def overview(touches: ir.Table, events: ir.Table, *, top: int = 8) -> Overview:
    """Headline numbers. A person is *identified* when any of their touches carries a user id."""
    stats = touches.aggregate(
        people=touches.person_id.nunique(),
        touches=touches.count(),
        first_ts=touches.ts.min(),
        last_ts=touches.ts.max(),
    ).to_pyarrow().to_pylist()[0]
    ident = touches.filter(touches.user_id.notnull()).person_id.nunique().execute()
    n_events = int(events.count().execute())
    ch = touches.mutate(channel=touches.channel.fill_null("(none)"))
    top_channels = (
        ch.group_by("channel")
        .aggregate(touches=ch.count(), people=ch.person_id.nunique())
        .order_by([ibis.desc("people"), "channel"])
        .limit(top)
        .to_pyarrow()
        .to_pylist()
    )
    total = stats["touches"] or 0
    channels = tuple(
        ChannelRow(r["channel"], int(r["touches"]), int(r["people"]), r["touches"] / total if total else 0.0)
        for r in top_channels
    )
    return Overview(
        people=int(stats["people"] or 0),
        identified_people=int(ident),
        events=n_events,
        touches=int(total),
        first_ts=stats["first_ts"],
        last_ts=stats["last_ts"],
        channels=channels,
    )

