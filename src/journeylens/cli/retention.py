"""CLI commands of the retention family: ``retention``, ``lifecycle``, ``churn``, ``repurchase``.

Register them on the main app with :func:`register`. Each command builds the request model
(parameter errors come before the store is opened), runs the analysis on the workspace's
touches and renders the result (``--format table|json|csv``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses.retention import (
    ChurnQuery,
    ChurnResult,
    LifecycleQuery,
    LifecycleResult,
    RepurchaseQuery,
    RepurchaseResult,
    RetentionQuery,
    RetentionResult,
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
from journeylens.workspace import Workspace

UnitOpt = Annotated[str, typer.Option("--unit", help="person or account (B2B).")]
BreakdownOpt = Annotated[str | None, typer.Option("--breakdown", "-b",
                                                  help="Column or properties.KEY of the first touch to split by; "
                                                  "persona, cohort or cohort:NAME for saved cohorts.")]
LimitOpt = Annotated[int, typer.Option("--breakdown-limit", help="Breakdown values shown; the rest are (other).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="First period: the one holding this UTC date (YYYY-MM-DD).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last period: the one holding this UTC date (YYYY-MM-DD).")]
SegmentOpt = Annotated[str | None, typer.Option("--segment", help="Only the touches of a saved cohort's persons: "
                                                "persona:KEY or cohort:NAME.")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="End of the data: a date (through its end) or time, UTC "
                                             "(default: the latest touch).")]


def register(app: typer.Typer) -> None:
    """Add ``retention``, ``lifecycle``, ``churn`` and ``repurchase`` to ``app``."""
    app.command("retention")(retention_command)
    app.command("lifecycle")(lifecycle_command)
    app.command("churn")(churn_command)
    app.command("repurchase")(repurchase_command)


def _open() -> Workspace:
    from journeylens.cli.app import _open as open_workspace  # late: app.py imports this module

    return open_workspace()


def _common(unit: str, breakdown: str | None, limit: int, date_from: str | None, date_to: str | None,
            as_of: str | None) -> dict[str, Any]:
    return {"unit": unit, "breakdown": breakdown, "breakdown_limit": limit, "date_from": date_from,
            "date_to": date_to, "as_of": as_of}


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.1%}"


_SHADES = ((0.6, "bold white on dark_green"), (0.4, "white on green4"), (0.2, "black on green3"),
           (0.1, "black on pale_green3"), (0.0, "black on dark_sea_green1"))


def _shaded(rate: float | None, complete: bool) -> Text:
    """A percentage cell shaded by the rate; periods still running at ``as_of`` are italic."""
    if rate is None:
        return Text("")
    style = next(s for lower, s in _SHADES if rate >= lower)
    return Text(_pct(rate), style=style + ("" if complete else " italic"))


def _as_of_caption(as_of: Any) -> str:
    return "no touches" if as_of is None else f"as of {as_of:%Y-%m-%d %H:%M} UTC"


# ------------------------------------------------------------------------ retention
def retention_table(result: RetentionResult) -> Table:
    """The cohort × period matrix with percentage cells, and the averaged curve as the last row."""
    q = result.query
    title = f"Retention by {q.cohort_grain} cohort — {q.mode}, {q.unit}s"
    if q.start_event is not None or q.return_event is not None:
        title += (f" (start: {q.start_event.name if q.start_event else 'any touch'}, "
                  f"return: {q.return_event.name if q.return_event else 'any touch'})")
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("cohort")
    t.add_column(f"{q.unit}s", justify="right")
    for k in range(q.periods):
        t.add_column(f"{q.period} {k}", justify="right")
    for c in result.cohorts:
        t.add_row(c.cohort.isoformat(), fmt_cell(c.size), *[_shaded(x.rate, x.complete) for x in c.cells])
    t.add_section()
    t.add_row(Text("all (weighted)", style="bold"), fmt_cell(result.size), *[_pct(p.rate) for p in result.curve])
    t.caption = (f"{_as_of_caption(result.as_of)} · share of the cohort with a return touch "
                 f"{'in' if q.mode == 'bounded' else 'in or after'} period k · italic: period still running")
    return t


def _breakdown_curve_table(result: RetentionResult) -> Table:
    q = result.query
    t = Table(title=f"Average retention by {q.breakdown}", title_justify="left", header_style="bold")
    t.add_column(str(q.breakdown))
    t.add_column(f"{q.unit}s", justify="right")
    for k in range(q.periods):
        t.add_column(f"{q.period} {k}", justify="right")
    for b in result.breakdown:
        t.add_row(b.value, fmt_cell(b.size), *[_shaded(p.rate, True) for p in b.curve])
    return t


def retention_command(
    start: Annotated[str | None, typer.Option("--start", help="Start event or filter (default: any touch), "
                                              "e.g. purchase, channel=email, stage=decision.")] = None,
    return_: Annotated[str | None, typer.Option("--return", help="Return event or filter (default: any touch).")] = None,
    period: Annotated[str, typer.Option("--period", "-p", help="day (N-day), week or month.")] = "week",
    periods: Annotated[int, typer.Option("--periods", "-n", help="Return periods shown: 0 .. N-1.")] = 12,
    mode: Annotated[str, typer.Option("--mode", help="bounded (in period k) or unbounded (in k or later).")] = "bounded",
    cohort_period: Annotated[str | None, typer.Option("--cohort-period", help="Group cohorts by day, week or month "
                                                      "(default: --period).")] = None,
    breakdown_touch: Annotated[str, typer.Option("--breakdown-touch", help="first_touch or start: the touch the "
                                                 "breakdown value is read on.")] = "first_touch",
    unit: UnitOpt = "person",
    breakdown: BreakdownOpt = None,
    breakdown_limit: LimitOpt = 25,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    figure: FigureOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Cohorts by first (start) event and period, and the share that returns in each later period."""
    params = _common(unit, breakdown, breakdown_limit, date_from, date_to, as_of)
    params |= {"start_event": start, "return_event": return_}
    query = RetentionQuery(period=period, periods=periods, mode=mode, cohort_period=cohort_period,
                           breakdown_touch=breakdown_touch, **params)
    result = _open().retention(query, model=model)
    write_figure(result, figure)
    if fmt is Format.table:
        out.print(retention_table(result))
        if query.breakdown is not None:
            out.print(_breakdown_curve_table(result))
    else:
        emit(result, fmt)


# ------------------------------------------------------------------------ lifecycle
def lifecycle_table(result: LifecycleResult) -> Table:
    q = result.query
    t = Table(title=f"Lifecycle per {q.period} — {q.unit}s" + (f" ({q.event.name})" if q.event else ""),
              title_justify="left", header_style="bold")
    cols = ["period", "new", "returning", "resurrecting", "dormant", "active"]
    if q.breakdown is not None:
        cols.insert(0, q.breakdown)
    for c in cols:
        t.add_column(c, justify="left" if c in ("period", q.breakdown) else "right")
    groups = [(None, result.rows)] if q.breakdown is None else [(b.value, b.rows) for b in result.breakdown]
    for value, rows in groups:
        for r in rows:
            cells: list[str | Text] = [] if value is None else [value]
            cells += [r.period.isoformat(), fmt_cell(r.new), fmt_cell(r.returning), fmt_cell(r.resurrecting),
                      Text(fmt_cell(r.dormant), style="red" if r.dormant else ""), fmt_cell(r.active)]
            t.add_row(*cells)
    t.caption = f"{_as_of_caption(result.as_of)} · dormant: active in the previous period, not in this one"
    return t


def lifecycle_command(
    event: Annotated[str | None, typer.Option("--event", "-e", help="Event or filter that counts as activity "
                                              "(default: any touch).")] = None,
    period: Annotated[str, typer.Option("--period", "-p", help="day, week or month.")] = "week",
    unit: UnitOpt = "person",
    breakdown: BreakdownOpt = None,
    breakdown_limit: LimitOpt = 25,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    as_of: AsOfOpt = None,
    segment: SegmentOpt = None,
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Per period: new, returning, resurrecting and dormant people (or accounts)."""
    params = _common(unit, breakdown, breakdown_limit, date_from, date_to, as_of) | {"event": event}
    query = LifecycleQuery(period=period, **params)
    result = _open().lifecycle(query, model=model, persons=segment)
    emit(result, fmt, table=lifecycle_table(result))


# ------------------------------------------------------------------------ churn
def churn_table(result: ChurnResult) -> Table:
    q = result.query
    t = Table(title=f"Churn per {q.period} after {q.inactive_for} without activity — {q.unit}s",
              title_justify="left", header_style="bold")
    cols = ["period", "active at start", "churned", "churn rate"]
    if q.breakdown is not None:
        cols.insert(0, q.breakdown)
    for c in cols:
        t.add_column(c, justify="left" if c in ("period", q.breakdown) else "right")
    groups = [(None, result.rows)] if q.breakdown is None else [(b.value, b.rows) for b in result.breakdown]
    for value, rows in groups:
        for r in rows:
            cells = [] if value is None else [value]
            t.add_row(*cells, r.period.isoformat(), fmt_cell(r.active_at_start), fmt_cell(r.churned),
                      _pct(r.churn_rate))
    t.caption = (f"{_as_of_caption(result.as_of)}: {result.active:,} active, {result.churned:,} churned "
                 f"({_pct(result.churn_rate)})")
    return t


def churn_command(
    inactive_for: Annotated[str, typer.Option("--inactive-for", help="Churned after this long without activity "
                                              "(30d, 8w, 12h).")] = "30d",
    event: Annotated[str | None, typer.Option("--event", "-e", help="Event or filter that counts as activity "
                                              "(default: any touch).")] = None,
    period: Annotated[str, typer.Option("--period", "-p", help="day, week or month.")] = "month",
    unit: UnitOpt = "person",
    breakdown: BreakdownOpt = None,
    breakdown_limit: LimitOpt = 25,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    as_of: AsOfOpt = None,
    segment: SegmentOpt = None,
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Churn rate per period: of those active at the period start, the share who became inactive."""
    params = _common(unit, breakdown, breakdown_limit, date_from, date_to, as_of) | {"event": event}
    query = ChurnQuery(inactive_for=inactive_for, period=period, **params)
    result = _open().churn(query, model=model, persons=segment)
    emit(result, fmt, table=churn_table(result))


# ------------------------------------------------------------------------ repurchase
def repurchase_table(result: RepurchaseResult) -> Table:
    q = result.query
    window = "" if q.window is None else f" within {q.window}"
    t = Table(title=f"Repurchase rate ({q.event.name}{window}) — {q.unit}s", title_justify="left",
              header_style="bold")
    first = q.breakdown if q.breakdown is not None else "first purchase"
    for c in (first, "purchasers", "repurchasers", "rate", "purchases"):
        t.add_column(c, justify="left" if c == first else "right")

    def add(label: str, r: Any, style: str = "") -> None:
        t.add_row(Text(label, style=style), fmt_cell(r.purchasers), fmt_cell(r.repurchasers), _pct(r.rate),
                  fmt_cell(r.purchases))

    if q.breakdown is not None:
        for b in result.breakdown:
            add(b.value, b.total)
    else:
        for r in result.rows:
            add(str(r.period), r)
    if result.rows or q.breakdown is not None:
        t.add_section()
    add("all", result.total, "bold")
    t.caption = _as_of_caption(result.as_of)
    return t


def repurchase_command(
    event: Annotated[str, typer.Option("--event", "-e", help="Purchase event or filter.")] = "purchase",
    window: Annotated[str | None, typer.Option("--window", help="Count a second purchase only within this time "
                                               "of the first (e.g. 90d).")] = None,
    period: Annotated[str | None, typer.Option("--period", "-p", help="Split by the first purchase's day, week or "
                                               "month.")] = None,
    unit: UnitOpt = "person",
    breakdown: BreakdownOpt = None,
    breakdown_limit: LimitOpt = 25,
    date_from: FromOpt = None,
    date_to: ToOpt = None,
    as_of: AsOfOpt = None,
    segment: SegmentOpt = None,
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Share of purchasers who purchased at least twice."""
    params = _common(unit, breakdown, breakdown_limit, date_from, date_to, as_of) | {"event": event}
    query = RepurchaseQuery(window=window, period=period, **params)
    result = _open().repurchase(query, model=model, persons=segment)
    emit(result, fmt, table=repurchase_table(result))
