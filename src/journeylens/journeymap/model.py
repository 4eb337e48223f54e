"""The Customer Journey Map as data: stages (columns) × rows, every cell with its evidence.

Rows, in order (``ROWS``): behaviour, touchpoints, kpis, emotion, goals, pain_points,
solutions, owners. A cell holds JSON-able content, the number of observations behind
it and an evidence level derived from that number (``evidence_level``). A cell with no
input says so (``content is None`` and ``missing`` tells why) instead of inventing text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ROWS: tuple[str, ...] = (
    "behaviour", "touchpoints", "kpis", "emotion", "goals", "pain_points", "solutions", "owners",
)
ROW_LABELS: dict[str, str] = {
    "behaviour": "Behaviour",
    "touchpoints": "Touchpoints & channels",
    "kpis": "KPIs",
    "emotion": "Emotions",
    "goals": "Customer goals",
    "pain_points": "Hurdles / pain points",
    "solutions": "Solutions",
    "owners": "Responsibilities",
}

EVIDENCE_LEVELS = ("none", "weak", "moderate", "strong")
"""``none``: no observation; ``weak``: 1–29; ``moderate``: 30–99; ``strong``: 100 or more
(units, touches or survey answers, whichever the row counts). Configured rows are ``configured``."""


def evidence_level(n: int) -> str:
    """The evidence level of a cell backed by ``n`` observations (see ``EVIDENCE_LEVELS``)."""
    if n <= 0:
        return "none"
    if n < 30:
        return "weak"
    if n < 100:
        return "moderate"
    return "strong"


# ------------------------------------------------------------------ inputs from other analyses
@dataclass(frozen=True)
class EmotionPoint:
    """Emotion of one stage: ``score`` in [0, 1] (0 = very negative), the answers behind it
    and a confidence interval."""

    score: float
    n: int
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class KpiCell:
    """One KPI value of a stage; ``value`` None means its inputs are missing (``missing`` says which)."""

    key: str
    label: str
    value: float | None
    unit: str = ""
    missing: str | None = None
    display: str | None = None
    """The value as shown (e.g. ``12.5%``, ``1,234``); derived from ``value`` when None."""


@dataclass(frozen=True)
class PainPointNote:
    """A detected pain point of a stage, reduced to what the map shows."""

    stage: str
    title: str
    evidence: str
    severity: float
    affected: int
    suggestion: str | None = None


# ------------------------------------------------------------------ the map
@dataclass(frozen=True)
class MapCell:
    """One cell: ``content`` (JSON-able; None when there is no input), the number ``n`` of
    observations behind it, its evidence level and, when empty, why."""

    row: str
    stage: str
    content: Any
    n: int = 0
    evidence: str = "none"
    source: str = "data"
    """``data``, ``config`` or ``data+config``."""
    missing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"content": self.content, "n": self.n, "evidence": self.evidence,
                             "source": self.source}
        if self.missing:
            d["missing"] = self.missing
        return d


@dataclass(frozen=True)
class StageColumn:
    key: str
    label: str
    description: str
    people: int
    """Units that reached the stage (furthest stage at or beyond it)."""
    share: float | None
    """``people`` / units of the first stage."""


@dataclass(frozen=True)
class JourneyMap:
    """A journey map of one model for one scope (everyone, a persona, a segment, a period)."""

    model: str
    model_name: str
    title: str
    unit: str
    scope: Mapping[str, str]
    """What the map is restricted to, e.g. ``{"persona": "bargain_hunter"}``; empty = everyone."""
    stages: tuple[StageColumn, ...]
    cells: Mapping[tuple[str, str], MapCell]
    """(row, stage) → cell, for every row of ``ROWS`` and every stage."""
    total_units: int = 0
    generated_at: str = ""
    zoom: StageZoom | None = None

    def cell(self, row: str, stage: str) -> MapCell:
        return self.cells[(row, stage)]

    def row(self, row: str) -> list[MapCell]:
        return [self.cells[(row, s.key)] for s in self.stages]

    @property
    def scope_label(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.scope.items()) or "everyone"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_name": self.model_name,
            "title": self.title,
            "unit": self.unit,
            "scope": dict(self.scope),
            "total_units": self.total_units,
            "generated_at": self.generated_at,
            "stages": [
                {
                    "stage": s.key, "label": s.label, "people": s.people, "share": s.share,
                    "rows": {r: self.cells[(r, s.key)].content for r in ROWS},
                    "evidence": {r: {k: v for k, v in self.cells[(r, s.key)].to_dict().items()
                                     if k != "content"} for r in ROWS},
                }
                for s in self.stages
            ],
            **({"zoom": self.zoom.to_dict()} if self.zoom is not None else {}),
        }

    def to_pandas(self) -> pd.DataFrame:
        """One row per map row, one column per stage, cells as short text."""
        from journeylens.journeymap.render import cell_text

        data = {"row": [ROW_LABELS[r] for r in ROWS]}
        data.update({s.label: [cell_text(self.cells[(r, s.key)]) for r in ROWS] for s in self.stages})
        return pd.DataFrame(data)

    def to_html(self, path: str | Path | None = None) -> str:
        """Self-contained HTML (no external assets); written to ``path`` when given."""
        from journeylens.journeymap.render import render_html

        html = render_html(self)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def to_png(self, path: str | Path) -> Path:
        """Render through headless Chromium (see ``render.render_png``)."""
        from journeylens.journeymap.render import render_png

        return render_png(self.to_html(), Path(path))

    def to_pdf(self, path: str | Path) -> Path:
        """A3 landscape PDF through headless Chromium."""
        from journeylens.journeymap.render import render_pdf

        return render_pdf(self.to_html(), Path(path))

    def figure(self) -> Any:
        """Plotly figure of the emotion curve and the stage reach (for notebooks and the dashboard)."""
        from plotly.subplots import make_subplots

        labels = [s.label for s in self.stages]
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_bar(x=labels, y=[s.people for s in self.stages], name=f"{self.unit}s reaching the stage",
                    marker_color="#9ecae1")
        emo = [self.cells[("emotion", s.key)].content for s in self.stages]
        fig.add_scatter(x=labels, y=[e["score"] if e else None for e in emo], name="emotion (0–1)",
                        mode="lines+markers", secondary_y=True, line={"color": "#e6550d"})
        fig.update_yaxes(range=[0, 1], secondary_y=True)
        fig.update_layout(title=self.title, template="plotly_white")
        return fig


@dataclass(frozen=True)
class StageZoom:
    """One stage zoomed in: all its touchpoints, its top events and the paths through it."""

    stage: str
    label: str
    touchpoints: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    paths: tuple[dict[str, Any], ...]
    entries_from: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """Stage a unit was in before its first touch of this stage (``start`` = none)."""

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "label": self.label, "touchpoints": list(self.touchpoints),
                "events": list(self.events), "paths": list(self.paths), "entries_from": list(self.entries_from)}
