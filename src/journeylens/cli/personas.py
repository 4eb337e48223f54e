"""``journeylens personas``: discovered (clustering) or rule-based personas with their stage funnels.

Registered on the main app with :func:`register`; the command runs
:func:`journeylens.analyses.personas.personas` on the workspace's touches, people
and accounts and renders the result (``--format table|json|csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses.personas import DEFAULT_K_RANGE, PersonaResult, personas
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
    """Add the ``personas`` command to ``app``."""
    app.command("personas")(personas_command)


def personas_command(
    rules: Annotated[Path | None, typer.Option(
        "--rules", help="YAML file of rule-based personas (first matching rule wins, else 'other'); "
                        "without it personas are discovered by clustering traits and behaviour.")] = None,
    k: Annotated[int | None, typer.Option(
        "--k", help=f"Number of discovered personas (default: chosen by the highest silhouette over "
                    f"k={DEFAULT_K_RANGE[0]}..{DEFAULT_K_RANGE[1]}).")] = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the clustering.")] = 0,
    save: Annotated[bool, typer.Option(
        "--save", help="Save each persona as a cohort named persona:<key> (replacing earlier saved personas), "
                       "usable as a scope or breakdown in other commands.")] = False,
    model: ModelOpt = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Personas: who your customers are, what distinguishes them, their share and stage funnel."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    ws = _open()
    m = ws.model(model)
    extra = {} if rules is not None else {"seed": seed}
    result = personas(ws.touches(m), ws.people(), ws.accounts(), model=m, rules=rules, unit=unit, k=k, **extra)
    write_figure(result, figure)
    if fmt is Format.table:
        for table in persona_tables(result):
            out.print(table)
    else:
        emit(result, fmt)
    if save:
        saved = ws.save_personas(result)
        err.print(f"saved {len(saved)} personas as cohorts: " + ", ".join(f"persona:{k} ({n:,})" for k, n in saved.items())
                  + " — use them with --persona / --breakdown persona", markup=False)
    ws.close()


def persona_tables(result: PersonaResult) -> list[Table]:
    """Overview (share, size, stage reach) and one table of distinguishing features per persona."""
    how = (f"discovered, k={result.k} ({result.criterion})" if result.method == "discovered"
           else f"rules {result.rules_path or ''}".strip())
    t = Table(title=f"Personas — {result.total:,} {result.unit}s, {how}", title_justify="left", header_style="bold")
    stages = [s.stage for s in result.personas[0].stage_funnel.stages] if (
        result.personas and result.personas[0].stage_funnel) else []
    for col in ["persona", "share", "size", "traits", *stages]:
        t.add_column(col[:5] if col in stages else col, justify="left" if col == "persona" else "right")
    for p in result.personas:
        reach = []
        if p.stage_funnel is not None:
            first = p.stage_funnel.stages[0].people or 1
            reach = [f"{s.people / first:.0%}" for s in p.stage_funnel.stages]
        t.add_row(Text(p.label), f"{p.share:.1%}", fmt_cell(p.size), fmt_cell(p.with_traits), *reach)
    tables = [t]
    for p in result.personas:
        d = Table(title=f"{p.label} ({p.key})", title_justify="left", header_style="bold")
        for col, justify in [("feature", "left"), ("persona", "right"), ("everyone", "right"), ("lift", "right")]:
            d.add_column(col, justify=justify)  # type: ignore[arg-type]
        for f in p.top_features:
            share = f.kind in ("onehot", "multihot", "share")
            fmt = (lambda v: f"{v:.0%}") if share else (lambda v: f"{v:.3g}")
            d.add_row(Text(f.label), fmt(f.persona_mean), fmt(f.overall_mean),
                      "–" if f.lift is None else f"×{f.lift:.2f}")
        if not p.top_features and p.description:
            d.add_row(Text(p.description), "", "", "")
        tables.append(d)
    return tables
