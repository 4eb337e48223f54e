"""``journeylens experiment``: A/B readout — conversion per variant, tests, SRM, CUPED.

Registered on the main app with :func:`register`; the command builds an
:class:`~journeylens.analyses.experiments.ExperimentQuery`, runs it on the workspace's
touches (and people, for ``trait:`` variants) and renders the result.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses.experiments import (
    ExperimentQuery,
    ExperimentResult,
    parse_split,
)
from journeylens.cli.render import (
    FigureOpt,
    Format,
    FormatOpt,
    ModelOpt,
    emit,
    err,
    fmt_cell,
    out,
    write_figure,
)


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` command to ``app``."""
    app.command("experiment")(experiment_command)


def experiment_command(
    variant: Annotated[str, typer.Option("--variant", help="Where the variant comes from: properties.KEY (first "
                                         "touch carrying it = exposure), a touch column, or trait:KEY.",
                                         show_default=False)],
    goal: Annotated[str, typer.Option("--goal", help="Conversion: an event name or a step filter such as "
                                      "stage=decision or event=purchase&properties.total>=50.",
                                      show_default=False)],
    window: Annotated[str | None, typer.Option("--window", help="Longest time from exposure to conversion "
                                               "(30m, 12h, 7d, 4w); default: any time after.")] = None,
    control: Annotated[str | None, typer.Option("--control", help="Control variant (default: control/A/baseline, "
                                                "else the first by name).")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Expected split for the SRM check, e.g. A=50,B=50 "
                                              "(default: equal).")] = None,
    cuped: Annotated[str | None, typer.Option("--cuped-covariate", help="CUPED covariate: pre (goal touches before "
                                              "exposure), pre:STEP, or trait:KEY (numeric).")] = None,
    pre_window: Annotated[str, typer.Option("--pre-window", help="How far before exposure pre/pre:STEP "
                                            "counts.")] = "30d",
    unit: Annotated[str, typer.Option("--unit", help="person or account.")] = "person",
    confidence: Annotated[float, typer.Option("--confidence", help="Level of intervals and tests.")] = 0.95,
    min_units: Annotated[int, typer.Option("--min-units", help="Units each variant needs for a verdict.")] = 100,
    min_conversions: Annotated[int, typer.Option("--min-conversions", help="Conversions and non-conversions "
                                                 "each variant needs.")] = 5,
    mde: Annotated[float, typer.Option("--mde", help="Relative lift the 'units needed' figure is for.")] = 0.1,
    breakdown: Annotated[str | None, typer.Option("--breakdown", "-b", help="Read out per value of: persona, cohort "
                                                  "or cohort:NAME (saved cohorts), a touch column or "
                                                  "properties.KEY (the unit's first touch).")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Only the units of a saved cohort: persona:KEY or "
                                                "cohort:NAME.")] = None,
    model: ModelOpt = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A/B readout: conversion to GOAL per variant with intervals, lift, p-values and a sample-ratio check."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    query = ExperimentQuery(variant=variant, goal=goal, window=window, control=control, unit=unit,
                            confidence=confidence, expected_split=parse_split(split), cuped_covariate=cuped,
                            pre_window=pre_window, min_units=min_units, min_conversions=min_conversions, mde=mde,
                            breakdown=breakdown)
    with _open() as ws:
        result = ws.experiment(query, model=model, persons=segment)
    write_figure(result, figure)
    if fmt is Format.table:
        parts = [("" if segment is None else f" — only {segment}", result)]
        parts += [(f" — {breakdown} = {b.value}", b.result) for b in result.breakdown]
        for scope, r in parts:
            out.print(experiment_table(r, scope))
            style = "yellow" if not r.enough_data or (r.srm and r.srm.mismatch) else "bold"
            out.print(Text(r.verdict(), style=style))
    else:
        emit(result, fmt)
        if not result.enough_data:
            err.print(f"[yellow]{result.verdict()}")
    sys.stdout.flush()


def experiment_table(result: ExperimentResult, scope: str = "") -> Table:
    q = result.query
    title = f"Experiment {q.variant} → {q.goal.name}" + (f" within {q.window}" if q.window else "") + scope
    t = Table(title=title, title_justify="left", header_style="bold")
    cols = ["variant", "units", "conversions", "rate", "difference", "lift", "p-value"]
    if q.cuped_covariate:
        cols += ["CUPED difference", "CUPED p"]
    for c in cols:
        t.add_column(c, justify="left" if c == "variant" else "right")
    conf = f"{q.confidence:.0%}"
    for v in result.variants:
        cells: list[str | Text] = [Text(v.variant + (" (control)" if v.is_control else "")), fmt_cell(v.units), fmt_cell(v.conversions),
                 f"{v.rate:.2%} [{v.lower:.2%}–{v.upper:.2%}]"]
        if v.test:
            tt = v.test
            cells += [f"{tt.difference:+.2%} [{tt.lower:+.2%}–{tt.upper:+.2%}]",
                      "–" if tt.lift is None else (f"{tt.lift:+.1%}" + (
                          f" [{tt.lift_lower:+.1%}–{tt.lift_upper:+.1%}]" if tt.lift_lower is not None
                          and tt.lift_upper is not None else "")),
                      "–" if tt.p_value is None else f"{tt.p_value:.3g}"]
        else:
            cells += ["", "", ""]
        if q.cuped_covariate:
            cu = v.cuped
            cells += [f"{cu.difference:+.2%} [{cu.lower:+.2%}–{cu.upper:+.2%}]" if cu else "",
                      "" if cu is None or cu.p_value is None else f"{cu.p_value:.3g}"]
        t.add_row(*cells)
    notes = [f"{conf} intervals"]
    if result.srm is not None:
        notes.append(f"SRM p = {result.srm.p_value:.3g}" + (" — MISMATCH" if result.srm.mismatch else ""))
    if result.mixed_units:
        notes.append(f"{result.mixed_units} units in several variants left out")
    if result.units_needed is not None:
        notes.append(f"{result.units_needed:,} units per variant detect a {q.mde:.0%} relative lift")
    t.caption = "; ".join(notes)
    return t
