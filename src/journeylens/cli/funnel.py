"""``journeylens funnel STEP...``: persons (or accounts) through a sequence of steps.

Registered on the main app with :func:`register`; the command builds a
:class:`~journeylens.analyses.funnel.FunnelQuery` (the same request model the
Python and REST APIs use), runs it on the workspace's touches and renders the
result (``--format table|json|csv``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from journeylens.analyses._time import format_duration
from journeylens.analyses.funnel import (
    DEFAULT_WINDOW,
    STATUSES,
    FunnelQuery,
    FunnelResult,
    FunnelStep,
    Status,
    step_ref,
)
from journeylens.cli.render import FigureOpt, Format, FormatOpt, emit, fmt_cell, out, write_figure
from journeylens.errors import InvalidParameterError

_BAR = 24


def register(app: typer.Typer) -> None:
    """Add the ``funnel`` command to ``app``."""
    app.command("funnel")(funnel_command)


def funnel_command(
    steps: Annotated[list[str], typer.Argument(
        help="Steps in order: event names, or filters such as channel=email, stage=decision, "
             "event=purchase&properties.total>=50, touchpoint=shop|app.", show_default=False)],
    window: Annotated[str, typer.Option("--window", help="Conversion window from the first step to the last: "
                                        "30m, 12h, 7d, 4w or seconds.")] = DEFAULT_WINDOW,
    step_window: Annotated[str | None, typer.Option("--step-window", help="Longest gap between two consecutive "
                                                    "steps (ordered and strict funnels).")] = None,
    order: Annotated[str, typer.Option("--order", help="ordered (other touches may come between steps), strict "
                                       "(none may) or unordered (steps in any order).")] = "ordered",
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="EVENT:i:j — an attempt with EVENT after "
                                                      "step i and before step j stops at step i (repeatable).")] = None,
    breakdown: Annotated[str | None, typer.Option("--breakdown", help="Column (channel, touchpoint, utm_source, "
                                                  "...), properties.KEY, persona (saved personas), cohort (which "
                                                  "saved cohort) or cohort:NAME (member vs non_member).")] = None,
    breakdown_from: Annotated[str, typer.Option("--breakdown-from", help="Which touch gives the breakdown value: "
                                                "first_touch, last_touch or step:K.")] = "first_touch",
    breakdown_limit: Annotated[int, typer.Option("--breakdown-limit", help="Values shown separately; the rest are "
                                                 "(other).")] = 25,
    trend: Annotated[str | None, typer.Option("--trend", help="Conversion by entry period: day, week or "
                                              "month.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Journey model for stage=... steps "
                                              "(default: five_phase).")] = None,
    people: Annotated[str | None, typer.Option(
        "--people", help="List the units that dropped off at step K (dropped:K) or converted to it (converted:K) "
                         "instead of the funnel; K is the 1-based step or its name.")] = None,
    people_value: Annotated[str | None, typer.Option(
        "--people-value", help="With --people: only units with this breakdown value.")] = None,
    save_cohort: Annotated[str | None, typer.Option(
        "--save-cohort", help="With --people: save them as this named cohort (replacing its members), usable as "
                              "--breakdown cohort:NAME, --cohort NAME or --segment NAME elsewhere.")] = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Funnel: how many persons go through STEP... within the window, where they drop off, how long they take."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    query = FunnelQuery(
        steps=steps, window=window, step_window=step_window, order=order, unit=unit, exclusions=exclude or [],
        breakdown=breakdown, breakdown_attribution=breakdown_from, breakdown_limit=breakdown_limit,
        trend_period=trend,
    )
    if people is None and (save_cohort is not None or people_value is not None):
        raise InvalidParameterError("--save-cohort and --people-value need --people dropped:K or converted:K")
    ws = _open()
    if people is not None:
        status, step = _people_option(people)
        if save_cohort is not None:
            found = ws.save_funnel_cohort(save_cohort, query, step, status, breakdown_value=people_value, model=model)
        else:
            found = ws.funnel(query=query, model=model).people_at(step, status, breakdown=people_value)
        verb = "dropped off at" if found.status == "dropped" else "converted to"
        saved = f" — saved as cohort '{found.cohort}'" if found.cohort else ""
        emit(found, fmt, title=f"{len(found.people):,} {found.unit}s {verb} step {found.step} "
                               f"({found.step_name}){saved}")
        return
    result = ws.funnel(query=query, model=model)
    write_figure(result, figure)
    if fmt is Format.table:
        for table in funnel_tables(result):
            out.print(table)
    else:
        emit(result, fmt)


def _people_option(text: str) -> tuple[Status, int | str]:
    """``dropped:K`` / ``converted:K`` -> (status, step index or name)."""
    status, sep, step = text.partition(":")
    if not sep or not step or status not in STATUSES:
        raise InvalidParameterError(f"--people '{text}' is not STATUS:K",
                                    hint="write dropped:3 or converted:purchase (STATUS is dropped or converted)")
    return status, step_ref(step)  # type: ignore[return-value]


def funnel_tables(result: FunnelResult) -> list[Table]:
    """The rich tables of a funnel: overall, one per breakdown value, then the trend."""
    q = result.query
    head = f"Funnel ({q.order}, window {q.window}"
    head += f", step window {q.step_window})" if q.step_window is not None else ")"
    tables = [_steps_table(result.steps, f"{head} — {result.unit}s")]
    for b in result.breakdown:
        tables.append(_steps_table(b.steps, escape(f"{q.breakdown} = {b.value}")))
    if result.trend:
        t = Table(title=f"Conversion by entry {q.trend_period}", title_justify="left", header_style="bold")
        cols = ["period"] + (["breakdown"] if q.breakdown is not None else []) + ["entered", "converted", "conversion"]
        for c in cols:
            t.add_column(c, justify="left" if c in ("period", "breakdown") else "right")
        for r in result.trend:
            cells: list[str | Text] = [r.period.isoformat()]
            if q.breakdown is not None:
                cells.append(Text(r.breakdown or "all"))
            t.add_row(*cells, fmt_cell(r.entered), fmt_cell(r.converted), f"{r.conversion:.1%}")
        tables.append(t)
    return tables


def _steps_table(steps: tuple[FunnelStep, ...], title: str) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col, justify in [("#", "right"), ("step", "left"), ("persons", "right"), ("", "left"),
                         ("from start", "right"), ("from previous", "right"), ("dropped", "right"),
                         ("median time", "right"), ("p90 time", "right"), ("totals", "right")]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    top = max((s.persons for s in steps), default=0) or 1
    for s in steps:
        bar = "█" * max(1 if s.persons else 0, round(_BAR * s.persons / top))
        t.add_row(str(s.index), Text(s.step), fmt_cell(s.persons), f"[cyan]{bar}", f"{s.conversion_from_start:.1%}",
                  f"{s.conversion_from_previous:.1%}", fmt_cell(s.drop_offs),
                  format_duration(s.median_seconds_to_convert), format_duration(s.p90_seconds_to_convert),
                  fmt_cell(s.totals))
    return t
