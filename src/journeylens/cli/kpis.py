"""``journeylens kpis``: every KPI of DOMAIN.md per stage of a journey model.

Registered on the main app with :func:`register`. The command builds a
:class:`~journeylens.analyses.kpis.KpiQuery` (parameter errors come before the store is
opened), computes the KPIs from the workspace's touches, costs and surveys and renders the
result (``--format table|json|csv``). ``--list`` prints the KPI registry instead.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import typer
from rich.table import Table
from rich.text import Text

from journeylens import config
from journeylens.analyses.kpis import (
    DEFAULT_CHURN_AFTER,
    KPIS,
    KpiQuery,
    KpiResult,
    KpiValue,
    format_kpi,
    kpi_stages,
    kpis,
    registry_rows,
)
from journeylens.cli.render import (
    FigureOpt,
    Format,
    FormatOpt,
    ModelOpt,
    emit,
    out,
    to_json,
    write_figure,
)
from journeylens.errors import InvalidParameterError
from journeylens.journey import load_model
from journeylens.workspace import Workspace

COHORT_PREFIX = "cohort:"


def register(app: typer.Typer) -> None:
    """Add the ``kpis`` command to ``app``."""
    app.command("kpis")(kpis_command)


def kpis_command(
    model: ModelOpt = None,
    by: Annotated[str | None, typer.Option(
        "--by", "-b", help="Breakdown: channel, campaign, touchpoint, utm_source ..., properties.KEY, or "
                           "persona / cohort (saved personas or cohorts) or cohort:NAME. Cost KPIs split by channel and campaign only.")] = None,
    period: Annotated[str | None, typer.Option("--period", "-p", help="Also per day, week (Monday–Sunday) or "
                                               "month, UTC.")] = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    churn_after: Annotated[str, typer.Option("--churn-after", help="A customer is churned when the latest touch is "
                                             "more than this after their last touch.")] = DEFAULT_CHURN_AFTER,
    list_: Annotated[bool, typer.Option("--list", help="Print the KPI registry (formulas, stages) and "
                                        "exit.")] = False,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """KPIs per stage: reach, CPM, CTR, CPC, leads, conversion rate, ROAS, churn, NPS ... (see --list).

    Costs, impressions and clicks come from imported cost files; a KPI whose inputs are missing
    shows "–" (null in JSON) with the reason, never 0.
    """
    from journeylens.cli.app import _open  # the app imports this module to register the command

    if list_:
        _print_registry(model, fmt)
        return
    query = KpiQuery(unit=unit, by=by, period=period, churn_after=churn_after)
    with _open() as ws:
        result = run(ws, model, query)
    write_figure(result, figure)
    if fmt is Format.table:
        for table in kpi_tables(result):
            out.print(table)
    else:
        emit(result, fmt)


def run(ws: Workspace, model: str | None, query: KpiQuery) -> KpiResult:
    """The KPIs of ``ws`` for ``query`` (what ``ws.kpis`` does; a ``cohort:NAME`` breakdown becomes a segment)."""
    m = ws.model(model)
    segments: dict[str, ir.Table] = {}
    if query.by is not None and query.by.startswith(COHORT_PREFIX):
        name = query.by[len(COHORT_PREFIX):]
        if query.unit != "person":
            raise InvalidParameterError("cohorts hold persons; use --unit person with a cohort breakdown")
        members = ws.cohort(name)
        segments[query.by] = ibis.memtable(pd.DataFrame({"person_id": members, "value": name}, dtype="string"))
    if query.by in ("persona", "cohort"):  # saved personas (journeylens personas --save) or cohorts
        segments.update(ws.segments(query.by, unit=query.unit, model=m))
    costs = ws.costs()
    surveys = ws.surveys()
    return kpis(ws.touches(m), model=m, costs=costs, surveys=surveys, query=query, segments=segments)


def _print_registry(model: str | None, fmt: Format) -> None:
    m = load_model(model or config.setting("model"))
    home = {k.key: stage for stage, ks in kpi_stages(m).items() for k in ks}
    rows = [{**r, "stage": home[r["key"]]} for r in registry_rows()]
    if fmt is Format.json:
        sys.stdout.write(to_json({"model": m.key, "kpis": rows}) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(pd.DataFrame(rows).assign(inputs=lambda d: d.inputs.str.join(";")).to_csv(index=False))
    else:
        t = Table(title=f"KPIs (stages of {m.key})", title_justify="left", header_style="bold")
        for col in ("key", "KPI", "stage", "unit", "formula"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r["key"], r["label"], r["stage"], r["unit"], Text(r["formula"]))
        out.print(t)


def kpi_tables(result: KpiResult) -> list[Table]:
    """Rich tables: the overall KPIs per stage, then one table per stage with a row per group."""
    head = f"KPIs — model {result.model}, {result.query.unit}s"
    t = Table(title=head, title_justify="left", header_style="bold")
    for col, justify in (("stage", "left"), ("KPI", "left"), ("value", "right"), ("note", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    labels = {k.key: k.label for k in KPIS}
    for s in result.stages:
        for i, v in enumerate(s.kpis):
            t.add_row(s.label if i == 0 else "", labels[v.kpi], format_kpi(v), Text(v.missing or "", style="dim"))
        if not s.kpis:
            t.add_row(s.label, Text("(no KPIs of its own)", style="dim"), "", "")
        t.add_section()
    if result.as_of is not None:
        t.caption = f"churn: no touch for {result.query.churn_after} before {result.as_of:%Y-%m-%d %H:%M} UTC"
    tables = [t]
    q = result.query
    for s in result.stages:
        if not s.groups:
            continue
        g = Table(title=f"{s.label} by {' and '.join(x for x in (q.period, q.by) if x)}", title_justify="left",
                  header_style="bold")
        if q.period:
            g.add_column(q.period)
        if q.by:
            g.add_column(q.by)
        for v in s.kpis:
            g.add_column(labels[v.kpi], justify="right")
        for grp in s.groups:
            cells: list[Any] = []
            if q.period:
                cells.append(grp.period.isoformat() if grp.period else "")
            if q.by:
                cells.append(Text(grp.value or ""))
            cells += [_cell(v) for v in grp.kpis]
            g.add_row(*cells)
        tables.append(g)
    return tables


def _cell(v: KpiValue) -> str:
    return format_kpi(v)
