"""``journeylens surveys``: NPS, CSAT, CES, the emotion per stage and comment themes.

Registered on the main app with :func:`register`; the command builds a
:class:`~journeylens.analyses.surveys.SurveyQuery`, runs it on the workspace's survey
answers and renders the result (``--format table|json|csv``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses.surveys import Estimate, SurveyQuery, SurveyResult, surveys
from journeylens.cli.render import (
    FigureOpt,
    Format,
    FormatOpt,
    ModelOpt,
    emit,
    fmt_cell,
    out,
    write_figure,
)


class View(StrEnum):
    all = "all"
    scores = "scores"
    emotion = "emotion"
    themes = "themes"


def register(app: typer.Typer) -> None:
    """Add the ``surveys`` command to ``app``."""
    app.command("surveys")(surveys_command)


def surveys_command(
    by: Annotated[list[str] | None, typer.Option(
        "--by", help="Breakdown of the score table (repeatable, crossed): stage, touchpoint, kind, "
                     "day, week, month, persona (saved personas) or cohort / cohort:NAME.")] = None,
    view: Annotated[View, typer.Option("--view", help="What to show: scores, emotion (per stage), themes, or all "
                                       "(csv: all = scores).", case_sensitive=False)] = View.all,
    confidence: Annotated[float, typer.Option("--confidence", help="Level of every interval.")] = 0.95,
    examples: Annotated[int, typer.Option("--examples", help="Example quotes per theme and polarity.")] = 2,
    model: ModelOpt = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Voice of the customer: NPS, CSAT and CES with intervals, the emotion per stage (faces) and comment themes."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    query = SurveyQuery(by=tuple(by) if by else ("stage",), confidence=confidence, examples=examples)
    with _open() as ws:
        result = surveys(ws.surveys(), query, model=ws.model(model), segments=ws.segments(*query.by, model=model))
    write_figure(result, figure)
    if fmt is Format.json:
        emit(result, fmt)
        return
    if fmt is Format.csv:
        frame = {View.emotion: result.emotion_pandas, View.themes: result.themes_pandas}.get(view, result.to_pandas)()
        typer.echo(frame.to_csv(index=False), nl=False)
        return
    for table in survey_tables(result, view):
        out.print(table)


def _ci(e: Estimate, pct: bool = False, digits: int = 2) -> str:
    if e.value is None:
        return "–"
    if pct:
        text = f"{e.value:.0%}"
        return text + (f" [{e.lower:.0%}–{e.upper:.0%}]" if e.lower is not None and e.upper is not None else "")
    text = f"{e.value:.{digits}f}"
    if e.lower is not None and e.upper is not None:
        text += f" [{e.lower:.{digits}f}–{e.upper:.{digits}f}]"
    return text


def survey_tables(result: SurveyResult, view: View = View.all) -> list[Table]:
    """The rich tables: scores per group, emotion per stage, themes per stage."""
    tables: list[Table] = []
    conf = f"{result.query.confidence:.0%}"
    if view in (View.all, View.scores):
        t = Table(title=f"Survey scores by {', '.join(result.query.by) or 'all'} ({conf} intervals)",
                  title_justify="left", header_style="bold")
        for c in [*result.query.by, "answers", "NPS", "P/Pa/D", "CSAT", "CES", "emotion", ""]:
            t.add_column(c, justify="left" if c in result.query.by else "right")
        for r in [*result.rows, result.overall]:
            group = list(r.group) if r.group else ["all"] * max(len(result.query.by), 1)
            t.add_row(*[Text(g) for g in group[:len(result.query.by)]], fmt_cell(r.answers),
                      _ci(r.nps, digits=0) + f" (n={r.nps.n})" if r.nps.n else "–",
                      f"{r.nps.promoters}/{r.nps.passives}/{r.nps.detractors}" if r.nps.n else "–",
                      _ci(r.csat, pct=True) + f" (n={r.csat.n})" if r.csat.n else "–",
                      _ci(r.ces) + f" (n={r.ces.n})" if r.ces.n else "–", _ci(r.emotion),
                      _face(r.emotion.value))
        tables.append(t)
    if view in (View.all, View.emotion) and result.emotion:
        t = Table(title="Emotion per stage (scores normalized to 0–1)", title_justify="left", header_style="bold")
        for c in ["stage", "", "emotion", "answers", "mood", "comment sentiment", "comments"]:
            t.add_column(c, justify="left" if c in ("stage", "mood") else "right")
        for p in result.emotion:
            t.add_row(Text(p.label), p.face, f"{p.score:.2f} [{p.lower:.2f}–{p.upper:.2f}]"
                      if p.score is not None and p.lower is not None and p.upper is not None else fmt_cell(p.score),
                      fmt_cell(p.n), p.mood, "–" if p.sentiment is None else f"{p.sentiment:+.2f}", fmt_cell(p.comments))
        tables.append(t)
    if view in (View.all, View.themes) and result.themes:
        t = Table(title=f"Comment themes ({result.comments} comments)", title_justify="left", header_style="bold")
        for c in ["stage", "theme", "comments", "share", "+", "−", "sentiment", "example"]:
            t.add_column(c, justify="left" if c in ("stage", "theme", "example") else "right")
        for th in result.themes:
            quote = th.examples[0].text if th.examples else ""
            t.add_row(Text(th.stage), Text(th.theme), fmt_cell(th.comments), f"{th.share:.0%}", fmt_cell(th.positive),
                      fmt_cell(th.negative), f"{th.sentiment:+.2f}", Text(quote))
        tables.append(t)
    return tables


def _face(value: float | None) -> str:
    from journeylens.analyses.surveys import face

    return face(value)
