"""The ``paths`` and ``transitions`` commands.

Registered on the main app by :func:`register`. The options mirror
:class:`~journeylens.analyses.paths.PathsQuery` and
:class:`~journeylens.analyses.transitions.TransitionsQuery`; the commands only build
the query, call the analysis and render its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from journeylens.analyses.funnel import FunnelQuery, funnel
from journeylens.analyses.paths import (
    FUNNEL_POSITIONS,
    LEVELS,
    PathsQuery,
    PathsResult,
    funnel_paths,
    paths,
)
from journeylens.analyses.transitions import (
    CONVERTERS,
    TransitionMatrix,
    TransitionsQuery,
    transitions,
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
from journeylens.errors import InputFileError, InvalidParameterError

TABLE_ROWS = 50
"""Transitions shown in the terminal table (all of them in JSON and CSV)."""

LevelOpt = Annotated[str, typer.Option("--level", "-l", help=f"Node of a path: {', '.join(LEVELS)}.")]
UnitOpt = Annotated[str, typer.Option("--unit", help="person or account (B2B).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start each path at the first touch matching this step filter (e.g. add_to_cart, channel=email).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="End each path at the first touch matching this step filter after the start.")]
CollapseOpt = Annotated[bool, typer.Option("--collapse", help="Merge consecutive repeats of a node into one.")]
CleanOpt = Annotated[list[str] | None, typer.Option("--clean", help="Cleaning rule PATTERN=NAME (glob) or re:PATTERN=NAME (repeatable; first match wins).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option("--exclude", help="Drop nodes matching this glob (after cleaning; repeatable).")]
NodesOpt = Annotated[bool, typer.Option("--start-end-nodes", help="Add path_start and path_end nodes.")]
PersonOpt = Annotated[list[str] | None, typer.Option("--person", help="Only this person (account with --unit account); repeatable.")]
PersonsFileOpt = Annotated[Path | None, typer.Option("--persons-file", help="Only the ids listed in this file, one per line.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Also write the figure to this self-contained HTML file.")]


def _persons(person: list[str] | None, persons_file: Path | None) -> list[str] | None:
    ids = list(person or [])
    if persons_file is not None:
        try:
            text = persons_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputFileError(f"cannot read the persons file: {exc.strerror}", path=str(persons_file)) from None
        ids += [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            raise InputFileError("the persons file lists no ids", path=str(persons_file))
    return ids or None


def _options(level: str, unit: str, from_: str | None, to: str | None, depth: int | None, collapse: bool,
             clean: list[str] | None, exclude: list[str] | None, start_end_nodes: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"level": level, "unit": unit, "from": from_, "to": to, "collapse_repeats": collapse,
                            "cleaning_rules": list(clean or []), "exclude": list(exclude or []),
                            "start_end_nodes": start_end_nodes}
    if depth is not None:
        opts["depth"] = depth
    return opts


def _write_html(fig: Any, path: Path) -> None:
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    err.print(f"figure written to {path}", markup=False)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _paths_table(result: PathsResult, title: str) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col, justify in [("#", "right"), ("path", "left"), (result.unit + "s", "right"), ("share", "right"),
                         ("median time", "right")]:
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for rank, path, persons, share, median in result.table_rows():
        t.add_row(str(rank), path, fmt_cell(persons), f"{share:.1%}", median)
    t.caption = f"{result.persons:,} {result.unit}s with a path · {result.distinct_paths:,} distinct paths"
    return t


def _transitions_table(result: TransitionMatrix, group: str, title: str) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("from", overflow="fold")
    t.add_column("to", overflow="fold")
    for col in ("count", result.unit + "s", "P(out)", "P(in)", "median", "p95"):
        t.add_column(col, justify="right", no_wrap=True)
    rows = result.table_rows(group)
    for source, target, n, persons, p_out, p_in, median, p95 in rows[:TABLE_ROWS]:
        t.add_row(source, target, fmt_cell(n), fmt_cell(persons), f"{p_out:.1%}", f"{p_in:.1%}", median, p95)
    more = f" · {len(rows) - TABLE_ROWS:,} more (--format csv lists all)" if len(rows) > TABLE_ROWS else ""
    t.caption = f"{result.persons:,} {result.unit}s with a path{more}"
    return t


def _differences_table(result: TransitionMatrix) -> Table:
    t = Table(title="Converters vs non-converters: probability of the next node", title_justify="left",
              header_style="bold")
    for col in ("from", "to", "converters", "non-converters", "difference"):
        if col in ("from", "to"):
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for d in result.differences[:TABLE_ROWS]:
        t.add_row(d.source, d.target, _pct(d.converters_probability_out), _pct(d.non_converters_probability_out),
                  "–" if d.difference is None else f"{d.difference:+.1%}")
    t.caption = (f"converters: {result.converter_persons:,} · non-converters: {result.non_converter_persons:,} "
                 f"{result.unit}s")
    return t


def register(app: typer.Typer) -> None:
    """Add the ``paths`` and ``transitions`` commands to ``app``."""
    from journeylens.cli.app import _open

    @app.command(name="paths")
    def paths_cmd(
        model: ModelOpt = None,
        level: LevelOpt = "event",
        unit: UnitOpt = "person",
        from_: FromOpt = None,
        to: ToOpt = None,
        depth: Annotated[int, typer.Option("--depth", "-d", help="Nodes per path (the last ones with only --to).")] = 5,
        collapse: CollapseOpt = False,
        clean: CleanOpt = None,
        exclude: ExcludeOpt = None,
        start_end_nodes: NodesOpt = False,
        top: Annotated[int, typer.Option("--top", "-n", help="How many paths to list.")] = 20,
        max_links: Annotated[int, typer.Option("--max-links", help="Heaviest links kept in the Sankey.")] = 100,
        person: PersonOpt = None,
        persons_file: PersonsFileOpt = None,
        cohort: Annotated[str | None, typer.Option("--cohort", help="Only members of this saved cohort "
                                                   "(persona:KEY for a persona).")] = None,
        funnel_step: Annotated[list[str] | None, typer.Option("--funnel", help="A funnel step (repeat, in order) for --before/--between/--after/--dropped-at.")] = None,
        window: Annotated[str, typer.Option("--window", help="Funnel window (with --funnel).")] = "14d",
        before: Annotated[int | None, typer.Option("--before", help="Paths up to funnel step K of those who reached it.")] = None,
        between: Annotated[int | None, typer.Option("--between", help="Paths from funnel step K-1 to step K.")] = None,
        after: Annotated[int | None, typer.Option("--after", help="Paths from funnel step K of those who reached it.")] = None,
        dropped_at: Annotated[int | None, typer.Option("--dropped-at", help="Paths after step K-1 of those who dropped off at step K.")] = None,
        fmt: FormatOpt = Format.table,
        html: HtmlOpt = None,
        figure: FigureOpt = None,
    ) -> None:
        """Top paths (event, touchpoint, stage, channel or url level) and their Sankey diagram."""
        data = _options(level, unit, from_, to, depth, collapse, clean, exclude, start_end_nodes)
        query = PathsQuery(**data, top=top, max_links=max_links)
        ids = _persons(person, persons_file)
        chosen = {k: v for k, v in zip(FUNNEL_POSITIONS, (before, between, after, dropped_at), strict=True)
                  if v is not None}
        ws = _open()
        touches = ws.touches(model)
        if cohort is not None:
            ids = [*(ids or []), *ws.cohort(cohort)]
        if chosen or funnel_step:
            if len(chosen) != 1 or not funnel_step:
                raise InvalidParameterError(
                    "funnel paths need --funnel steps and exactly one of --before, --between, --after, --dropped-at",
                    hint="e.g. --funnel visit --funnel add_to_cart --funnel purchase --dropped-at 3")
            if ids is not None:
                raise InvalidParameterError("--person/--persons-file cannot be combined with funnel paths")
            if from_ is not None or to is not None:
                raise InvalidParameterError("funnel paths set --from/--to themselves")
            ((position, k),) = chosen.items()
            fr = funnel(touches, FunnelQuery(steps=list(funnel_step), window=window, unit=unit))
            result = funnel_paths(touches, fr, k, position, query)
            title = f"Paths {position} funnel step {k} ({fr.query.step_names[k - 1]})"
        else:
            result = paths(touches, query, persons=ids)
            title = f"Top paths by {level}"
        if html is not None:
            _write_html(result.figure(), html)
        write_figure(result, figure)
        emit(result, fmt, table=_paths_table(result, title))

    @app.command(name="transitions")
    def transitions_cmd(
        model: ModelOpt = None,
        level: LevelOpt = "event",
        unit: UnitOpt = "person",
        from_: FromOpt = None,
        to: ToOpt = None,
        depth: Annotated[int | None, typer.Option("--depth", "-d", help="Only the first nodes of each path (default: whole paths).")] = None,
        collapse: CollapseOpt = False,
        clean: CleanOpt = None,
        exclude: ExcludeOpt = None,
        start_end_nodes: NodesOpt = False,
        converted: Annotated[str | None, typer.Option("--converted", help="Compare converters (a touch matching this step filter, e.g. purchase or stage=decision) with the rest.")] = None,
        person: PersonOpt = None,
        persons_file: PersonsFileOpt = None,
        cohort: Annotated[str | None, typer.Option("--cohort", help="Only members of this saved cohort "
                                                   "(persona:KEY for a persona).")] = None,
        fmt: FormatOpt = Format.table,
        html: HtmlOpt = None,
        figure: FigureOpt = None,
    ) -> None:
        """Transition matrix: counts, persons, probabilities out/in and times between nodes."""
        data = _options(level, unit, from_, to, depth, collapse, clean, exclude, start_end_nodes)
        data["converted"] = converted
        query = TransitionsQuery(**data)
        ws = _open()
        ids = _persons(person, persons_file)
        if cohort is not None:
            ids = [*(ids or []), *ws.cohort(cohort)]
        result = transitions(ws.touches(model), query, persons=ids)
        if html is not None:
            _write_html(result.figure(), html)
        write_figure(result, figure)
        if fmt is Format.table:
            out.print(_transitions_table(result, "all", f"Transitions by {level}"))
            if query.converted is not None:
                out.print(_transitions_table(result, CONVERTERS, f"Transitions of converters ({query.converted.name})"))
                out.print(_differences_table(result))
        else:
            emit(result, fmt)


__all__ = ["register"]
