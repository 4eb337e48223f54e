"""``journeylens clv``: customer lifetime value with BG/NBD and Gamma-Gamma.

Registered on the main app with :func:`register`. The command builds a
:class:`~journeylens.analyses.value.ValueQuery`, computes the RFM summary of the workspace's
purchases (or reads one from ``--rfm FILE.csv``), fits the models and renders the result
(``--format table|json|csv``; CSV is one row per person/account).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from journeylens.analyses.value import (
    DEFAULT_PURCHASE,
    CLVResult,
    ValueQuery,
    clv,
    fit_rfm,
    read_rfm_csv,
)
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

_TOP_COLUMNS = ("unit", "frequency", "recency", "T", "monetary_value", "revenue", "p_alive",
                "expected_purchases", "expected_spend", "clv")


def register(app: typer.Typer) -> None:
    """Add the ``clv`` command to ``app``."""
    app.command("clv")(clv_command)


def clv_command(
    rfm: Annotated[Path | None, typer.Option("--rfm", help="Fit on an RFM summary CSV (columns frequency, recency, "
                                             "T and optionally monetary_value and an id column) instead of the "
                                             "workspace.", exists=True, dir_okay=False, show_default=False)] = None,
    horizon: Annotated[int, typer.Option("--horizon", help="CLV horizon in months.")] = 12,
    discount: Annotated[float, typer.Option("--discount", help="Monthly discount rate (0.01 = 1 % per month).")] = 0.01,
    holdout: Annotated[str | None, typer.Option("--holdout", help="Fit on all but the last DURATION (90d, 12w) and "
                                                "compare the predicted purchases with the actual ones.",
                                                show_default=False)] = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    top: Annotated[int, typer.Option("--top", help="Units with the highest CLV to list.")] = 10,
    purchase: Annotated[str, typer.Option("--purchase", help="Which touches are purchases: an event name or a "
                                          "filter such as event=contract_signed|upsell.")] = DEFAULT_PURCHASE,
    time_unit: Annotated[str, typer.Option("--time-unit", help="Unit of recency and T: day, week or month (30 days); "
                                           "with --rfm, the unit of the file.")] = "day",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Observation end (YYYY-MM-DD); default: the day of "
                                              "the last touch.", show_default=False)] = None,
    periods_per_month: Annotated[float | None, typer.Option("--periods-per-month", help="Time units per CLV month "
                                                            "(default 30 / days per time unit).",
                                                            show_default=False)] = None,
    penalizer: Annotated[float, typer.Option("--penalizer", help="L2 penalty on the model parameters "
                                             "(0 = maximum likelihood).")] = 0.0,
    breakdown: Annotated[str | None, typer.Option("--breakdown", help="Mean CLV by a column of the first purchase "
                                                  "(channel, touchpoint, utm_campaign, properties.KEY).",
                                                  show_default=False)] = None,
    model: ModelOpt = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Customer lifetime value: RFM summary, BG/NBD purchases and dropout, Gamma-Gamma spend, discounted CLV."""
    query = ValueQuery(
        purchase=purchase, unit=unit, time_unit=time_unit, as_of=as_of, holdout=holdout, horizon=horizon,
        discount=discount, periods_per_month=periods_per_month, penalizer=penalizer, top=top, breakdown=breakdown,
    )
    if rfm is not None:
        result = fit_rfm(read_rfm_csv(str(rfm)), query)
    else:
        from journeylens.cli.app import _open  # the app imports this module to register the command

        with _open() as ws:
            result = clv(ws.touches(model), query, segments=ws.segments(breakdown, unit=unit, model=model))
    write_figure(result, figure)
    if fmt is Format.table:
        for table in clv_tables(result):
            out.print(table)
    else:
        emit(result, fmt)


def clv_tables(result: CLVResult) -> list[Table]:
    """Rich tables: the model summary, the holdout check, the breakdown and the top units."""
    u = result.unit
    summary = Table(title=f"Customer value — {result.model} ({u}s, {result.time_unit}s)", title_justify="left",
                    header_style="bold", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    rows: list[tuple[str, str]] = [(f"{u}s with a purchase", fmt_cell(result.people)),
                                   ("repeat customers", fmt_cell(result.repeat_customers))]
    if result.observation_end is not None:
        rows.append(("observation end", result.observation_end.isoformat()))
    if result.calibration_end is not None:
        rows.append(("calibration end (model as of)", result.calibration_end.isoformat()))
    rows += [(name, f"{value:.4g}") for name, value in result.params.items()]
    if result.mean_revenue is not None:
        rows.append((f"historical revenue per {u}", f"{result.mean_revenue:,.2f}"))
    rows += [("mean P(alive)", f"{result.mean_p_alive:.1%}"),
             (f"expected purchases, {result.horizon} months", f"{result.mean_expected_purchases:.3f}")]
    if result.mean_clv is not None:
        rows.append((f"mean CLV, {result.horizon} months, {result.discount:.2%}/month", f"{result.mean_clv:,.2f}"))
    rows += [("note", n) for n in result.notes]
    for name, value in rows:
        summary.add_row(name, value)
    tables = [summary]
    h = result.holdout
    if h is not None:
        t = Table(title=f"Holdout check — {h.duration:g} {result.time_unit}s after {h.calibration_end}",
                  title_justify="left", header_style="bold", show_header=False)
        t.add_column("", style="bold")
        t.add_column("", justify="right")
        t.add_row("actual purchases", fmt_cell(h.actual_purchases))
        t.add_row("predicted purchases", f"{h.predicted_purchases:,.1f}")
        t.add_row("relative error", "–" if h.relative_error is None else f"{h.relative_error:+.1%}")
        t.add_row(f"MAE per {u}", f"{h.mae:.3f}")
        t.add_row(f"MAE per {u}, naive x/T", f"{h.baseline_mae:.3f}")
        t.add_row("actual revenue", f"{h.actual_revenue:,.2f}")
        if h.predicted_revenue is not None:
            t.add_row("predicted revenue", f"{h.predicted_revenue:,.2f}")
        tables.append(t)
        tables.append(_table(
            "Holdout purchases per unit by calibration frequency", ("repeat purchases in calibration", "units",
                                                                    "actual mean", "predicted mean"),
            [(r.frequency, f"{r.units:,}", f"{r.actual:.3f}", f"{r.predicted:.3f}") for r in h.by_frequency]))
    if result.breakdown_rows:
        tables.append(_table(
            f"By {result.breakdown} (first purchase)",
            (result.breakdown or "", f"{u}s", "mean CLV", "mean revenue", "mean P(alive)", "expected purchases"),
            [(r.value, f"{r.units:,}", _money(r.mean_clv), _money(r.mean_revenue), f"{r.mean_p_alive:.1%}",
              f"{r.mean_expected_purchases:.3f}") for r in result.breakdown_rows]))
    if result.top:
        head = result.frame.head(result.top)
        cols = [c for c in _TOP_COLUMNS if c in head.columns]
        tables.append(_table(
            f"Top {len(head)} {u}s by {'CLV' if result.mean_clv is not None else 'expected purchases'}", cols,
            [tuple(_cell(c, row[c]) for c in cols) for row in head.to_dict("records")]))
    return tables


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def _cell(column: str, value: object) -> str:
    if column == "unit":
        return str(value)
    if not isinstance(value, int | float):
        return fmt_cell(value)
    if column == "p_alive":
        return f"{value:.1%}"
    if column == "frequency":
        return f"{value:,.0f}"
    return f"{value:,.2f}" if column in ("monetary_value", "revenue", "expected_spend", "clv") else f"{value:.3g}"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t
