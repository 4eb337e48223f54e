"""Rendering journey maps: self-contained HTML (inline CSS and SVG, no external assets),
PNG and PDF through headless Chromium (Playwright driving Debian's ``/usr/bin/chromium``).

The page is a grid: one label column, one column per stage, one band per map row. The
emotion row is a single SVG across the stage columns: a curve through the stages' scores
with a drawn face at each point (no emoji font needed) and the n behind it. Every cell
carries a coloured evidence dot (strong / moderate / weak / none / configured / derived).
Print CSS targets A3 landscape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from journeylens.analyses._time import format_duration
from journeylens.chromium import with_page
from journeylens.journeymap.model import ROW_LABELS, ROWS, JourneyMap, MapCell

EVIDENCE_COLOURS = {
    "strong": "#2e7d32", "moderate": "#f9a825", "weak": "#c62828", "none": "#9e9e9e",
    "configured": "#1565c0", "derived": "#6a1b9a",
}
EVIDENCE_TEXT = {
    "strong": "strong evidence (n ≥ 100)", "moderate": "moderate evidence (30 ≤ n < 100)",
    "weak": "weak evidence (n < 30)", "none": "no data", "configured": "from the map configuration",
    "derived": "suggested from the data",
}
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("journeylens.journeymap", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True, lstrip_blocks=True,
)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x:.1%}"


def _num(x: float | int | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) or (float(x).is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:,.2f}" if abs(x) < 1000 else f"{x:,.0f}"


def _bar(share: float | None) -> Markup:
    w = 0 if share is None else max(1, round(100 * share))
    return Markup(f'<span class="bar"><span style="width:{w}%"></span></span>')


def _items(items: Sequence[Markup | str]) -> Markup:
    return Markup("<ul>") + Markup("").join(Markup("<li>") + escape(i) + Markup("</li>") for i in items) + Markup("</ul>")


def cell_html(cell: MapCell) -> Markup:
    """The inner HTML of one cell (without the evidence dot)."""
    if cell.content is None or cell.content == []:
        return Markup('<p class="nodata">') + escape(cell.missing or "no data") + Markup("</p>")
    c: Any = cell.content
    r = cell.row
    if r == "behaviour":
        lines = [Markup(f"<b>{c['people']:,}</b> reached · <b>{c['active']:,}</b> active")]
        rows = [Markup(f'<tr><td>{escape(e["event"])}</td><td>{_bar(e["share"])}</td>'
                       f'<td class="r">{_pct(e["share"])}</td></tr>') for e in c["top_events"]]
        lines.append(Markup('<table class="mini">') + Markup("").join(rows) + Markup("</table>"))
        facts = [f"median time in stage {format_duration(c['median_seconds_in_stage'])}"
                 if c["median_seconds_in_stage"] is not None else None,
                 f"moved on {_pct(c['moved_on'])}" if c["moved_on"] is not None else None,
                 f"moved back {_pct(c['moved_back'])}" if c["moved_back"] else None]
        lines.append(Markup('<p class="facts">') + escape(" · ".join(f for f in facts if f)) + Markup("</p>"))
        return Markup("").join(lines)
    if r == "touchpoints":
        rows = []
        for t in c["touchpoints"]:
            marks = []
            if t["direct"] is not None:
                marks.append("direct" if t["direct"] else "indirect")
            if t["online"] is not None:
                marks.append("online" if t["online"] else "offline")
            tag = Markup(f' <span class="tag {"off" if t["online"] is False else ""}">') + escape(
                "/".join(marks)) + Markup("</span>") if marks else Markup("")
            rows.append(Markup("<tr><td>") + escape(t["touchpoint"]) + tag + Markup(
                f'</td><td>{_bar(t["share"])}</td><td class="r">{_pct(t["share"])}</td></tr>'))
        more = Markup(f'<p class="facts">+ {c["others"]} more</p>') if c["others"] else Markup("")
        mix = Markup('<p class="facts">') + escape(
            f"direct {_pct(c['direct_share'])} · online {_pct(c['online_share'])}") + Markup("</p>")
        return Markup('<table class="mini">') + Markup("").join(rows) + Markup("</table>") + more + mix
    if r == "kpis":
        rows = []
        for k in c:
            value = escape(k.get("display") or _num(k["value"]))
            if k["value"] is None:
                value = Markup('<span class="nodata" title="') + escape(k["missing"] or "") + Markup('">n/a</span>')
            rows.append(Markup("<tr><td>") + escape(k["label"]) + Markup('</td><td class="r">') + value
                        + Markup("</td></tr>"))
        return Markup('<table class="mini kpi">') + Markup("").join(rows) + Markup("</table>")
    if r == "emotion":
        ci = f" (95% CI {c['low']:.2f}–{c['high']:.2f})" if c.get("low") is not None else ""
        return escape(f"{c['face']}: {c['score']:.2f}{ci}, n = {c['n']:,}")
    if r == "goals":
        return _items(c)
    if r == "pain_points":
        out = []
        for p in c:
            if p["source"] == "data":
                out.append(Markup("<b>") + escape(p["title"]) + Markup("</b><br><small>") + escape(
                    f"{p['evidence']} · {p['affected']:,} affected · severity {p['severity']:.2f}") + Markup("</small>"))
            else:
                out.append(escape(p["title"]) + Markup(' <small class="cfg">(configured)</small>'))
        return _items(out)
    if r == "solutions":
        return _items([escape(s["text"]) + (Markup(' <small class="cfg">(configured)</small>')
                                            if s["source"] == "config" else Markup(""))
                       for s in c])
    if r == "owners":
        return _items([escape(o["owner"]) + (Markup(" <small>") + escape(
            f"{_pct(o['share'])} of touches · {', '.join(o['touchpoints'][:4])}") + Markup("</small>")
            if o["source"] == "catalog" else Markup(' <small class="cfg">(configured)</small>')) for o in c])
    return escape(str(c))


def cell_text(cell: MapCell) -> str:
    """One line of plain text for a cell (tables, CSV)."""
    c: Any = cell.content
    if c is None or c == []:
        return f"no data ({cell.missing})" if cell.missing else "no data"
    r = cell.row
    if r == "behaviour":
        return "; ".join(f"{e['event']} {_pct(e['share'])}" for e in c["top_events"])
    if r == "touchpoints":
        return "; ".join(f"{t['touchpoint']} {_pct(t['share'])}" for t in c["touchpoints"])
    if r == "kpis":
        return "; ".join(f"{k['label']} {k.get('display') or _num(k['value'])}" for k in c)
    if r == "emotion":
        return f"{c['face']} {c['score']:.2f} (n={c['n']})"
    if r == "goals":
        return "; ".join(c)
    if r == "pain_points":
        return "; ".join(p["title"] for p in c)
    if r == "solutions":
        return "; ".join(s["text"] for s in c)
    if r == "owners":
        return "; ".join(o["owner"] for o in c)
    return str(c)


# ------------------------------------------------------------------ emotion curve
def _face_svg(x: float, y: float, score: float, r: float = 15) -> str:
    """A face whose mouth curves up with the score (0 = frown, 1 = big smile)."""
    hue = 0 + 120 * max(0.0, min(1.0, score))  # red → green
    fill = f"hsl({hue:.0f},70%,55%)"
    curve = (score - 0.5) * 2 * r * 0.55  # positive = smile
    mouth_y = y + r * 0.35
    return (
        f'<g class="facedraw"><circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="#333" stroke-width="1.2"/>'
        f'<circle cx="{x - r * 0.35:.1f}" cy="{y - r * 0.25:.1f}" r="{r * 0.1:.1f}" fill="#222"/>'
        f'<circle cx="{x + r * 0.35:.1f}" cy="{y - r * 0.25:.1f}" r="{r * 0.1:.1f}" fill="#222"/>'
        f'<path d="M {x - r * 0.45:.1f} {mouth_y:.1f} Q {x:.1f} {mouth_y + curve:.1f} {x + r * 0.45:.1f} '
        f'{mouth_y:.1f}" stroke="#222" stroke-width="1.8" fill="none"/></g>'
    )


EmotionSeries = tuple[list[tuple[float, dict[str, Any]]], str]
"""Points (x in percent of the row's width, emotion cell content) and a line colour."""


def _series(m: JourneyMap, slot: int = 0, slots: int = 1) -> list[tuple[float, dict[str, Any]]]:
    n = len(m.stages) * slots
    pts = []
    for i, s in enumerate(m.stages):
        c = m.cell("emotion", s.key).content
        if c is not None:
            pts.append(((i * slots + slot + 0.5) * 100 / n, c))
    return pts


def emotion_svg(series: list[EmotionSeries], height: int = 150) -> Markup:
    """The emotion curve(s) across the stages: a stretched SVG polyline per series (constant
    stroke width) under HTML-positioned faces and labels, so faces stay round at any width."""
    top, bottom = 24, height - 30

    def y_of(score: float) -> float:
        return bottom - score * (bottom - top)

    mid = y_of(0.5)
    parts = [f'<div class="emotion" style="height:{height}px">',
             f'<svg viewBox="0 0 100 {height}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg" '
             f'role="img" aria-label="emotion curve"><line x1="0" x2="100" y1="{mid:.1f}" y2="{mid:.1f}" '
             'stroke="#bbb" stroke-dasharray="4 4" vector-effect="non-scaling-stroke"/>']
    for pts, colour in series:
        if len(pts) > 1:
            d = " ".join(("M" if k == 0 else "L") + f" {x:.2f} {y_of(c['score']):.1f}" for k, (x, c) in enumerate(pts))
            parts.append(f'<path d="{d}" stroke="{colour}" stroke-width="3" fill="none" '
                         'vector-effect="non-scaling-stroke"/>')
        for x, c in pts:
            if c.get("low") is not None and c.get("high") is not None:
                parts.append(f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{y_of(c["high"]):.1f}" y2="{y_of(c["low"]):.1f}" '
                             f'stroke="{colour}" stroke-width="2" opacity="0.45" vector-effect="non-scaling-stroke"/>')
    parts.append("</svg>")
    if not any(pts for pts, _ in series):
        parts.append('<p class="nodata" style="position:absolute;top:45%;width:100%;text-align:center">'
                     "no survey answers — no emotion curve</p>")
    for pts, _ in series:
        for x, c in pts:
            y = y_of(c["score"])
            parts.append(f'<div class="face" style="left:{x:.2f}%;top:{y - 17:.1f}px" title="{escape(c["face"])}">'
                         f'<svg width="34" height="34" viewBox="0 0 34 34" xmlns="http://www.w3.org/2000/svg">'
                         f'{_face_svg(17, 17, c["score"])}</svg></div>')
            parts.append(f'<div class="facelabel" style="left:{x:.2f}%;top:{height - 22}px">'
                         f'{c["score"]:.2f} · n={c["n"]:,}</div>')
    parts.append("</div>")
    return Markup("".join(parts))


def _cell_view(cell: MapCell, diff: str | None = None) -> dict[str, Any]:
    return {"html": cell_html(cell), "evidence": cell.evidence, "n": cell.n, "source": cell.source, "diff": diff}


def render_html(m: JourneyMap) -> str:
    """The map as one self-contained HTML page."""
    heads = [{"key": s.key, "label": s.label, "span": 1, "shares": [s.share],
              "reach": f"{s.people:,} {m.unit}s · {_pct(s.share)} of all"} for s in m.stages]
    rows = [{"key": r, "label": ROW_LABELS[r], "cells": [_cell_view(m.cell(r, s.key)) for s in m.stages]}
            for r in ROWS]
    return _ENV.get_template("map.html.j2").render(
        m=m, heads=heads, subheads=None, rows=rows, ncols=len(m.stages), emotion=emotion_svg([(_series(m), "#e6550d")]),
        colours=EVIDENCE_COLOURS, evidence_text=EVIDENCE_TEXT, zoom=m.zoom, pct=_pct, compare=None)


def render_comparison_html(c: Any) -> str:
    """Two maps side by side: two sub-columns per stage, differing cell pairs highlighted."""
    a, b = c.a, c.b
    heads = [{"key": sa.key, "label": sa.label, "span": 2, "shares": [sa.share, sb.share],
              "reach": f"{sa.people:,} vs {sb.people:,} {a.unit}s · {_pct(sa.share)} vs {_pct(sb.share)}"}
             for sa, sb in zip(a.stages, b.stages, strict=True)]
    subheads = [label for _ in a.stages for label in (a.scope_label, b.scope_label)]
    rows = []
    for r in ROWS:
        cells = []
        for s in a.stages:
            diff = c.differs(r, s.key)
            cells += [_cell_view(a.cell(r, s.key), diff), _cell_view(b.cell(r, s.key), diff)]
        rows.append({"key": r, "label": ROW_LABELS[r], "cells": cells})
    emotion = emotion_svg([(_series(a, 0, 2), "#e6550d"), (_series(b, 1, 2), "#3b82c4")])
    return _ENV.get_template("map.html.j2").render(
        m=a, heads=heads, subheads=subheads, rows=rows, ncols=2 * len(a.stages), emotion=emotion,
        colours=EVIDENCE_COLOURS, evidence_text=EVIDENCE_TEXT, zoom=None, pct=_pct, compare=c)


# ------------------------------------------------------------------ Chromium
def render_png(html: str, path: Path, *, width: int = 1800) -> Path:
    """Screenshot of the whole page at ``width`` CSS pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with_page(html, lambda page: page.screenshot(path=str(path), full_page=True), width, what="the map")
    return path


def render_pdf(html: str, path: Path) -> Path:
    """A3 landscape PDF with backgrounds (evidence colours) printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with_page(html, lambda page: page.pdf(path=str(path), format="A3", landscape=True, print_background=True,
                                           margin={"top": "8mm", "bottom": "8mm", "left": "8mm", "right": "8mm"}),
               1600, what="the map")
    return path
