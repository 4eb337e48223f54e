"""The ``journeylens`` command line (Typer + rich).

Every command only calls the Python API and renders its result; errors of the
project's exception tree become one line on stderr and the error's exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import journeylens
from journeylens import config, schema
from journeylens.cli.render import (
    FigureOpt,
    Format,
    FormatOpt,
    ModelOpt,
    emit,
    err,
    fmt_cell,
    frame_table,
    out,
    to_json,
    write_figure,
)
from journeylens.errors import (
    InvalidParameterError,
    JourneylensError,
    NothingAcceptedError,
    RejectedRowsError,
)

if TYPE_CHECKING:  # imported where used: the analyses (scipy, sklearn, pandas) load per command
    from journeylens.analyses.stages import StageFunnel
    from journeylens.workspace import ImportReport, Workspace

app = typer.Typer(
    name="journeylens",
    help="Customer-journey analytics: import touchpoints, stitch identities, and see where journeys stall.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
import_app = typer.Typer(help="Import a CSV, JSONL, Parquet or Segment JSON-lines file.", no_args_is_help=True)
app.add_typer(import_app, name="import")

_state: dict[str, Any] = {}
_PROGRAM = os.path.basename(sys.argv[0]) == "journeylens" or (
    os.path.basename(sys.argv[0]) == "__main__.py"
    and getattr(sys.modules.get("__main__"), "__package__", None) == "journeylens")
"""True when this process is the ``journeylens`` program (console script or ``python -m journeylens``)."""



@app.callback()
def _global(
    db: Annotated[str | None, typer.Option("--db", help=config.SETTINGS["db"].help, envvar="JOURNEYLENS_DB")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help=config.SETTINGS["workspace"].help,
                                                  envvar="JOURNEYLENS_WORKSPACE")] = None,
) -> None:
    _state["db"] = db
    _state["workspace"] = workspace


def _open() -> Workspace:
    return journeylens.open(_state.get("db"), workspace=_state.get("workspace"))


@contextmanager
def _progress(description: str, total: int | None, unit: str = "rows") -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn(unit), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            bar.update(task, completed=done, total=new_total if new_total is not None else total)

        yield update


# ------------------------------------------------------------------------ import
def _parse_map(items: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items or []:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise InvalidParameterError(f"--map expects SOURCE=TARGET, got '{item}'")
        mapping[source.strip()] = target.strip()
    return mapping


def _report_table(report: ImportReport) -> Table:
    t = Table(title=f"Imported {report.source} → {report.target} ({report.fmt})", title_justify="left")
    t.add_column("outcome")
    t.add_column("rows", justify="right")
    t.add_row("[green]accepted", fmt_cell(report.accepted))
    t.add_row("duplicates (already stored)", fmt_cell(report.duplicates))
    t.add_row("[red]quarantined" if report.quarantined else "quarantined", fmt_cell(report.quarantined))
    for reason, n in list(report.reasons.items())[:5]:
        t.add_row(f"  [dim]{reason}", fmt_cell(n))
    if report.folded:
        t.caption = "columns kept in properties/traits: " + ", ".join(report.folded)
    return t


def _run_import(target: str, file: Path, mapping: list[str] | None, input_format: str | None, tz: str | None,
                strict: bool, fmt: Format) -> None:
    ws = _open()
    with _progress(f"importing {file.name}", None, "") as update:
        report = ws.import_file(target, file, mapping=_parse_map(mapping), fmt=input_format, tz=tz,
                                progress=update)
    emit(report, fmt, table=_report_table(report))
    if report.accepted == 0 and report.duplicates == 0:
        raise NothingAcceptedError(f"{file}: no row was accepted ({report.quarantined} quarantined)",
                                   hint="see `top reasons` above")
    if strict and report.quarantined:
        raise RejectedRowsError(f"{file}: {report.quarantined} rows quarantined (--strict)")


def _import_command(target: str) -> None:
    spec = schema.IMPORTABLE[target]

    def command(
        file: Annotated[Path, typer.Argument(help="CSV/TSV, JSONL, Parquet or Segment JSON-lines file.")],
        map_: Annotated[list[str] | None, typer.Option("--map", help="Column mapping SOURCE=TARGET (repeatable).")] = None,
        input_format: Annotated[str | None, typer.Option("--input-format", help="csv|jsonl|parquet|segment (default: from the file).")] = None,
        tz: Annotated[str | None, typer.Option("--tz", help="Time zone of naive timestamps (default UTC).")] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any row is quarantined.")] = False,
        fmt: FormatOpt = Format.table,
    ) -> None:
        _run_import(target, file, map_, input_format, tz, strict, fmt)

    command.__doc__ = f"Import {target}: {spec.description}\n\nRequired columns: {', '.join(spec.required)}."
    import_app.command(target)(command)


for _target in schema.IMPORTABLE:
    _import_command(_target)


# ------------------------------------------------------------------------ models and stages
@app.command()
def models(fmt: FormatOpt = Format.table) -> None:
    """List the built-in journey models and their stages."""
    from journeylens.journey import builtin_models

    ms = list(builtin_models().values())

    class _Models:
        def to_dict(self) -> list[dict[str, Any]]:
            return [{"key": m.key, "name": m.name, "stages": list(m.stage_keys),
                     "default": m.key == config.setting("model")} for m in ms]

        def to_pandas(self) -> Any:
            import pandas as pd

            return pd.DataFrame([{**d, "stages": " → ".join(d["stages"])} for d in self.to_dict()])

    emit(_Models(), fmt, title="Journey models")


def _stage_table(result: StageFunnel, title: str) -> Table:
    """The stage funnel as a table (one block of rows per breakdown value when broken down);
    on terminals narrower than 110 columns the non-linearity columns (moved back, repeated)
    are left to --format json/csv."""
    from journeylens.analyses._time import format_duration

    wide = out.width >= 110
    t = Table(title=title, title_justify="left", header_style="bold")
    groups = [(b.value, b.stages) for b in result.breakdown] if result.breakdown_by else [(None, result.stages)]
    if result.breakdown_by:
        t.add_column(result.breakdown_by, no_wrap=True)
    t.add_column("stage", no_wrap=True)
    cols = ["people", "", "conv.", "stalled", "in stage"]
    cols += ["moved back", "repeated", "touches"] if wide else ["touches"]
    for col in cols:
        t.add_column(col, justify="left" if col == "" else "right", no_wrap=True)
    for value, rows in groups:
        top = max((r.people for r in rows), default=0) or 1
        for i, r in enumerate(rows):
            bar = "█" * max(1 if r.people else 0, round(8 * r.people / top))
            cells = [r.label, fmt_cell(r.people), f"[cyan]{bar}", fmt_cell(r.conversion_from_previous),
                     fmt_cell(r.furthest), format_duration(r.median_seconds_in_stage)]
            cells += [fmt_cell(r.moved_back), fmt_cell(r.repeated)] if wide else []
            lead = [Text(value if i == 0 else "")] if value is not None else []
            t.add_row(*lead, *cells, fmt_cell(r.touches), end_section=value is not None and i == len(rows) - 1)
    t.caption = f"unmatched touches: {result.unmatched_touches:,} · {result.unit}s with touches: {result.total_units:,}"
    return t


@app.command()
def stages(
    model: ModelOpt = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    breakdown: Annotated[str | None, typer.Option(
        "--breakdown", help="Split by a column (channel, utm_campaign, touchpoint, ...), properties.KEY, "
        "persona, cohort or cohort:NAME (saved cohorts).")] = None,
    breakdown_from: Annotated[str, typer.Option(
        "--breakdown-from", help="Which touch gives a column's value: first_touch, last_touch or stage:K "
        "(first touch in stage K, a key or 1-based index).")] = "first_touch",
    breakdown_limit: Annotated[int, typer.Option("--breakdown-limit", help="Values shown separately; the rest "
                                                 "are (other).")] = 25,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Per stage of a journey model: people who reached it (furthest stage), conversion, time in stage,
    moving back and repeats; optionally per breakdown value."""
    ws = _open()
    result = ws.stage_funnel(model, unit=unit, breakdown=breakdown, breakdown_from=breakdown_from,
                             breakdown_limit=breakdown_limit)
    title = f"Stages of {result.model}" + (f" by {breakdown}" if breakdown else "")
    write_figure(result, figure)
    if fmt is Format.json:
        d = result.to_dict()
        sys.stdout.write(to_json(d) + "\n")
    else:
        emit(result, fmt, table=_stage_table(result, title))


@app.command()
def journey(
    person: Annotated[str, typer.Argument(help="A person id, user id or anonymous id.")],
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Print one person's stitched timeline with stages and touchpoints."""
    result = _open().journey(person, model)
    title = f"Journey of {result.person_id}" + (f" (account {result.account_id})" if result.account_id else "")
    title += f" — ids: {', '.join(result.ids)}"
    df = result.to_pandas()
    if not df.empty:
        df["ts"] = df["ts"].dt.strftime("%Y-%m-%d %H:%M")
    emit(result, fmt, table=frame_table(df.drop(columns=["user_id", "anonymous_id"]), title))


@app.command(name="schema")
def schema_cmd() -> None:
    """Print the canonical tables and their columns (Markdown)."""
    out.print(schema.schema_markdown(), markup=False)


# ------------------------------------------------------------------------ demo
@app.command()
def demo(
    scenario: Annotated[str, typer.Option("--scenario", help="shop (B2C) or b2b (SaaS accounts).")] = "shop",
    people: Annotated[int, typer.Option("--people", "-n", min=10, help="Number of people to simulate.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 42,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the generated files and truth.json.")] = Path("journeylens-demo"),
    fmt: FormatOpt = Format.table,
) -> None:
    """Generate the demo data set (with planted ground truth), import it and show a summary."""
    from journeylens.demo import generate

    if scenario not in ("shop", "b2b"):
        raise InvalidParameterError(f"unknown scenario '{scenario}'; choose shop or b2b")
    with _progress(f"generating {scenario} demo", people, "people") as update:
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            update(done[0])

        res = generate(scenario=scenario, people=people, seed=seed, out_dir=out_dir, progress=tick)
    ws = _open()
    reports: list[ImportReport] = []
    for target in ("events", "people", "accounts", "costs", "surveys"):
        path = res.files.get(target)
        if path is None:
            continue
        with _progress(f"importing {path.name}", None, "") as update:
            reports.append(ws.import_file(target, path, progress=update))
    model = "b2b" if scenario == "b2b" else config.setting("model")
    funnel = ws.stage_funnel(model)
    ov = ws.overview(model)
    map_path = res.out_dir / "journey-map.html"
    with _progress("drawing the journey map", None, ""):
        ws.journey_map(model).to_html(map_path)
    if fmt is Format.json:
        sys.stdout.write(to_json({
            "scenario": scenario, "db": ws.store.url, "files": {k: str(v) for k, v in res.files.items()},
            "imports": [r.to_dict() for r in reports], "overview": ov.to_dict(), "stages": funnel.to_dict(),
            "journey_map": str(map_path),
            "dashboard": "journeylens keys create --kind admin && journeylens serve  # http://127.0.0.1:8080",
        }) + "\n")
        return
    if fmt is Format.csv:
        sys.stdout.write(funnel.to_pandas().to_csv(index=False))
        return
    head = (f"[bold]{ov.people:,}[/] people ({ov.identified_people:,} identified) · [bold]{ov.events:,}[/] events · "
            f"{ov.touches:,} touches\n{ov.first_ts:%Y-%m-%d} – {ov.last_ts:%Y-%m-%d} · store: {ws.store.url} · "
            f"data and truth.json: {res.out_dir}")
    out.print(Panel(head, title=f"journeylens demo — {scenario}", expand=False))
    imp = Table(title="Imports", title_justify="left")
    for c in ("file", "accepted", "duplicates", "quarantined"):
        imp.add_column(c, justify="left" if c == "file" else "right")
    for r in reports:
        imp.add_row(Path(r.source).name, fmt_cell(r.accepted), fmt_cell(r.duplicates), fmt_cell(r.quarantined))
    out.print(imp)
    out.print(_stage_table(funnel, f"Stage funnel — {funnel.model}"))
    ch = Table(title="Top channels", title_justify="left")
    for c in ("channel", "people", "touches", "share of touches"):
        ch.add_column(c, justify="left" if c == "channel" else "right")
    for row in ov.channels:
        ch.add_row(row.channel, fmt_cell(row.people), fmt_cell(row.touches), fmt_cell(row.share_of_touches))
    out.print(ch)
    out.print(f"[bold]Customer Journey Map:[/] {map_path.resolve()} (open it in a browser; "
              f"`journeylens map --out map.png` renders a PNG)")
    out.print("[bold]Dashboard:[/] `journeylens keys create --kind admin`, then `journeylens serve` and open "
              "http://127.0.0.1:8080 — log in with the key; the same server collects live events on /v1.")
    out.print("[dim]Next: `journeylens funnel visit product_view add_to_cart purchase --window 7d`, "
              "`journeylens paths`, `journeylens retention`, `journeylens stages --model aida`, "
              "`journeylens journey PERSON_ID`.[/]")


# ------------------------------------------------------------------------ analysis commands
COMMAND_MODULES: dict[str, str] = {
    "funnel": "funnel", "paths": "paths", "transitions": "paths", "lifecycle": "retention", "churn": "retention",
    "repurchase": "retention", "kpis": "kpis", "attribution": "attribution", "clv": "clv", "surveys": "surveys",
    "personas": "personas", "painpoints": "painpoints", "experiment": "experiment", "propensity": "propensity",
    "map": "map", "serve": "serve", "keys": "serve", "links": "serve", "forget": "serve",
    "export-person": "serve", "purge": "serve", "quarantine": "quarantine", "retention": "retention",
}
"""Command name -> the ``journeylens.cli`` module that registers it (a name missing here loads
every module)."""
_MODULE_ORDER = ("funnel", "paths", "retention", "kpis", "attribution", "clv", "surveys", "personas",
                 "painpoints", "experiment", "propensity", "map", "serve", "quarantine")
_VALUE_OPTIONS = ("--db", "--workspace", "-w")


def _invoked_command(argv: list[str]) -> str | None:
    """The sub-command named on a ``journeylens`` command line (after the global options), or None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg
    return None


def _register_commands(argv: list[str] | None = None) -> None:
    """Register the commands of the ``journeylens.cli`` modules on :data:`app`.

    Run as the ``journeylens`` program (``argv`` = ``sys.argv[1:]``), only the module of the named
    command is imported, so a command loads only the analyses it uses; ``--help``, an unknown or
    ambiguous name, and every other use (tests, ``import journeylens.cli.app``) register all.
    """
    import importlib

    command = _invoked_command(argv) if argv is not None else None
    module = COMMAND_MODULES.get(command) if command else None
    for name in (module,) if module else _MODULE_ORDER:
        importlib.import_module(f"journeylens.cli.{name}").register(app)


_register_commands(sys.argv[1:] if _PROGRAM else None)


# ------------------------------------------------------------------------ entry point
def main() -> None:
    """Console entry point: run the app, turning known errors into one line."""
    try:
        app()  # Typer handles usage errors and --help itself and exits via SystemExit
    except JourneylensError as exc:
        err.print(Text.assemble(("error", "bold red"), f" [{exc.code}]: {exc.message}"))
        if exc.hint:
            err.print(f"  hint: {exc.hint}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: one line, traceback only on request
        if os.environ.get("JOURNEYLENS_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(f"internal error: {type(exc).__name__}: {first}", markup=False)
        err.print("  set JOURNEYLENS_DEBUG=1 for the traceback and please report it", markup=False)
        sys.exit(70)
