"""``journeylens painpoints``: ranked pain points with evidence, and moments of truth.

Runs :func:`journeylens.analyses.painpoints.pain_points` on the workspace's touches,
surveys, people and accounts; ``--segment NAME=FILE`` adds a segment table (CSV or
Parquet with ``person_id`` — or ``account_id`` — and ``value``, e.g. personas);
``--moments`` adds the moments of truth.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import ibis
import ibis.expr.types as ir
import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from journeylens.analyses.painpoints import (
    COMPARISONS,
    KINDS,
    MOMENT_BY,
    PainPointsQuery,
    PainPointsResult,
    moments_of_truth,
    pain_points,
)
from journeylens.cli.render import (
    FigureOpt,
    Format,
    FormatOpt,
    ModelOpt,
    emit,
    fmt_cell,
    out,
    to_json,
    write_figure,
)
from journeylens.errors import InputFileError, InvalidParameterError


def register(app: typer.Typer) -> None:
    """Add the ``painpoints`` command to ``app``."""
    app.command("painpoints")(painpoints_command)


def _read_segment(spec: str) -> tuple[str, ir.Table]:
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InvalidParameterError(f"cannot read the segment '{spec}'", hint="write NAME=FILE, e.g. persona=personas.csv")
    p = Path(path.strip())
    if not p.exists():
        raise InputFileError("file not found", path=str(p))
    df = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p, dtype=str)
    return name.strip(), ibis.memtable(df.astype(str))


def painpoints_command(
    model: ModelOpt = None,
    top: Annotated[int, typer.Option("--top", "-n", help="Pain points shown (ranked by severity).")] = 10,
    segment: Annotated[list[str] | None, typer.Option(
        "--segment", help="NAME=FILE: a segment table (CSV/Parquet with person_id or account_id and value), "
                          "e.g. persona=personas.csv, or persona / cohort / cohort:NAME for the saved ones (repeatable).")] = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account.")] = "person",
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help=f"Detectors to run (repeatable): {', '.join(KINDS)} (default: all).")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help=f"Comparisons (repeatable): {', '.join(COMPARISONS)} (default: segment, period; "
                          "'other' compares with other events/stages and also ranks natural exits).")] = None,
    goal: Annotated[list[str] | None, typer.Option(
        "--goal", help="Conversion event names (touches with revenue always are) (repeatable).")] = None,
    session_gap: Annotated[str, typer.Option("--session-gap", help="Gap that ends a session.")] = "30m",
    quiet: Annotated[str, typer.Option("--quiet", help="Touches/entries this close to the data end are not "
                                       "counted for drop-out and conversion (censored).")] = "14d",
    no_traits: Annotated[bool, typer.Option("--no-traits", help="Do not use person/account traits as "
                                            "segments.")] = False,
    alpha: Annotated[float, typer.Option("--alpha", help="Family-wise significance level (Bonferroni).")] = 0.05,
    moments: Annotated[bool, typer.Option("--moments", help="Also rank moments of truth (conversion lift by "
                                          "--by, stratified by stage reached).")] = False,
    by: Annotated[str, typer.Option("--by", help=f"Moments of truth per {', '.join(MOMENT_BY)}.")] = "channel",
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Pain points: where journeys stall (abandonment, drop-out, low conversion, dwell time, loops, support,
    negative feedback), each with evidence and a severity ranking; --moments adds moments of truth."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    query = PainPointsQuery(
        unit=unit, top=top, kinds=tuple(kind) if kind else KINDS,
        comparisons=tuple(compare) if compare else ("segment", "period"), goals=tuple(goal or ()),
        session_gap=session_gap, quiet=quiet, traits=not no_traits, alpha=alpha,
    )
    ws = _open()
    m = ws.model(model)
    # NAME=FILE reads a segment file; a bare persona / cohort / cohort:NAME uses the saved ones
    segments = dict(_read_segment(s) for s in segment or [] if "=" in s)
    segments.update(ws.segments(*[s for s in segment or [] if "=" not in s], unit=unit, model=m))
    result = pain_points(ws.touches(m), m, query, surveys=ws.surveys(), people=ws.people(),
                         accounts=ws.accounts(), segments=segments)
    mot = moments_of_truth(ws.touches(m), by=by, goals=query.goals, unit=unit) if moments else None
    write_figure(result, figure)
    if fmt is Format.table:
        out.print(_table(result))
        if mot is not None:
            df = mot.to_pandas()[["rank", "value", "exposed", "exposed_rate", "unexposed_rate", "odds_ratio",
                                  "or_ci_low", "or_ci_high", "lift", "risk_difference", "p_value"]]
            t = Table(title=f"Moments of truth — conversion by {by} (stratified by stage reached)",
                      title_justify="left", header_style="bold")
            for c in df.columns:
                t.add_column(str(c), justify="left" if c == "value" else "right")
            for row in df.itertuples(index=False):
                t.add_row(*[f"{v:.2f}" if isinstance(v, float) and c in ("odds_ratio", "or_ci_low", "or_ci_high",
                                                                           "lift") else fmt_cell(v)
                            for c, v in zip(df.columns, row, strict=True)])
            out.print(t)
    elif fmt is Format.json and mot is not None:
        sys.stdout.write(to_json({**result.to_dict(), "moments": [x.to_dict() for x in mot.moments]}) + "\n")
    elif fmt is Format.csv and mot is not None:
        sys.stdout.write(mot.to_pandas().to_csv(index=False))
    else:
        emit(result, fmt)


def _table(result: PainPointsResult) -> Table:
    t = Table(title=f"Pain points — {result.model} ({result.query.unit}s; {result.tests:,} comparisons tested)",
              title_justify="left", header_style="bold")
    for c, j in [("#", "right"), ("kind", "left"), ("stage", "left"), ("subject", "left"), ("group", "left"),
                 ("rate", "right"), ("baseline", "right"), ("p", "right"), ("affected", "right"),
                 ("severity", "right"), ("evidence", "left")]:
        t.add_column(c, justify=j)  # type: ignore[arg-type]
    for p in result.pain_points:
        f = p.finding
        t.add_row(str(p.rank), p.kind, p.stage, escape(p.subject), escape(f.group or f.comparison),
                  f"{f.rate:.1%}", f"{f.baseline:.1%}", f"{f.p_value:.1e}", fmt_cell(f.affected),
                  f"{p.severity:,.0f}", escape(p.evidence))
    return t
