"""``journeylens attribution``: credit for conversions per channel, touchpoint or campaign.

Registered on the main app with :func:`register`; the command builds an
:class:`~journeylens.analyses.attribution.AttributionQuery` (the request model the Python
and REST APIs share), runs one method — or every method side by side with ``--compare`` —
on the workspace's touches and costs, and renders it (``--format table|json|csv``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses.attribution import (
    DEFAULT_HALF_LIFE,
    DEFAULT_LOOKBACK,
    METHODS,
    AttributionComparison,
    AttributionQuery,
    AttributionResult,
    BreakdownAttribution,
    method_label,
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


def register(app: typer.Typer) -> None:
    """Add the ``attribution`` command to ``app``."""
    app.command("attribution")(attribution_command)


def attribution_command(
    method: Annotated[str, typer.Option("--method", help=f"One of: {', '.join(METHODS)}.")] = "markov",
    compare: Annotated[bool, typer.Option("--compare", help="All methods side by side (attributed "
                                          "conversions per value and method).")] = False,
    conversion: Annotated[str, typer.Option("--conversion", help="The conversion: an event name or a filter "
                                            "such as stage=decision or event=purchase&properties.order_number=1."
                                            )] = "purchase",
    revenue: Annotated[str | None, typer.Option("--revenue", help="Numeric column or properties.KEY of the "
                                                "conversion touch with its value.")] = "revenue",
    no_revenue: Annotated[bool, typer.Option("--no-revenue", help="Attribute conversions only.")] = False,
    repeat: Annotated[bool, typer.Option("--repeat/--first", help="Every conversion of a unit (each with "
                                         "the touches since the previous one) or only its first.")] = False,
    lookback: Annotated[str, typer.Option("--lookback", help="Touches at most this long before the "
                                          "conversion count: 30m, 12h, 7d, 4w.")] = DEFAULT_LOOKBACK,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    level: Annotated[str, typer.Option("--level", help="channel, touchpoint, campaign, another touch "
                                       "column or properties.KEY.")] = "channel",
    touches: Annotated[str | None, typer.Option("--touches", help="Only touches matching this filter form "
                                                "journeys, e.g. event=visit.")] = None,
    eligible: Annotated[str | None, typer.Option("--eligible", help="Non-converting journeys only of units "
                                                 "with a touch matching this filter, e.g. add_to_cart.")] = None,
    order: Annotated[int, typer.Option("--order", help="Markov chain order, 1 to 4.")] = 1,
    half_life: Annotated[str, typer.Option("--half-life", help="Time decay half-life.")] = DEFAULT_HALF_LIFE,
    first_share: Annotated[float, typer.Option("--first-share", help="Position based: share of the first "
                                               "touch.")] = 0.4,
    last_share: Annotated[float, typer.Option("--last-share", help="Position based: share of the last "
                                              "touch.")] = 0.4,
    keep_repeats: Annotated[bool, typer.Option("--keep-repeats", help="Do not collapse consecutive touches "
                                               "with the same value.")] = False,
    samples: Annotated[int, typer.Option("--samples", help="Shapley: permutations sampled when there are "
                                         "more than 15 values.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Shapley sampling seed.")] = 0,
    breakdown: Annotated[str | None, typer.Option("--breakdown", "-b", help="Attribute per value of: persona, "
                                                  "cohort or cohort:NAME (saved cohorts), a touch column or "
                                                  "properties.KEY (the unit's first touch).")] = None,
    breakdown_limit: Annotated[int, typer.Option("--breakdown-limit", help="Breakdown values shown; the rest are "
                                                 "(other).")] = 25,
    segment: Annotated[str | None, typer.Option("--segment", help="Only the journeys of a saved cohort: "
                                                "persona:KEY or cohort:NAME.")] = None,
    adjust: Annotated[str | None, typer.Option("--adjust", help="Stratify by a segment (persona, cohort, "
                                               "cohort:NAME) and pool: adds 'effect', attributed conversions "
                                               "per exposed journey standardised over the strata.")] = None,
    figure: FigureOpt = None,
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Attribution: which channels get the credit for conversions (first/last touch, linear, time decay,
    position based, Markov removal effects, Shapley), with CPA and ROAS from imported costs."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    query = AttributionQuery(
        method=method, conversion=conversion, revenue=None if no_revenue else revenue, repeat=repeat,
        lookback=lookback, unit=unit, level=level, touches=touches, eligible=eligible, order=order,
        half_life=half_life, first_share=first_share, last_share=last_share, collapse_repeats=not keep_repeats,
        shapley_samples=samples, seed=seed, breakdown=breakdown, breakdown_limit=breakdown_limit, adjust=adjust,
    )
    ws = _open()
    result: AttributionResult | AttributionComparison
    if compare:
        result = ws.compare_attribution(query, model=model, persons=segment)
    else:
        result = ws.attribution(query=query, model=model, persons=segment)
    write_figure(result, figure)
    if fmt is Format.table:
        scope = f" — only {segment}" if segment else ""
        if isinstance(result, AttributionComparison):
            out.print(comparison_table(result, scope))
            for i in range(len(result.results[0].breakdown) if result.results else 0):
                out.print(comparison_table(result, f" — {breakdown} = {result.results[0].breakdown[i].value}", i))
        else:
            out.print(result_table(result, scope))
            for b in result.breakdown:
                out.print(result_table(result, f" — {breakdown} = {b.value}", b))
            if result.breakdown:
                out.print("spend, CPA and ROAS are not segment specific: shown for all units only")
    else:
        emit(result, fmt)


def result_table(result: AttributionResult, scope: str = "", part: BreakdownAttribution | None = None) -> Table:
    """Rich table of one method: credit, share, revenue, spend, CPA and ROAS per value (of all
    units, or of one breakdown value's units: ``part``)."""
    q = result.query
    conversions = result.conversions if part is None else part.conversions
    without = result.conversions_without_touches if part is None else part.conversions_without_touches
    title = (f"Attribution ({method_label(q, result.method)}) by {q.level}{scope} — {conversions:,} conversions "
             f"of {q.unit}s, lookback {q.lookback}")
    if without:
        title += f"; {without:,} without touches not credited"
    effects: Mapping[str, float] | None = getattr(result, "effects", None) if part is None else None
    score = None if effects is not None else {"markov": "removal effect", "shapley": "shapley value"}.get(
        result.method)
    if effects is not None:
        title += f"; effect = credit per exposed journey, standardised over {q.adjust}"
    t = Table(title=title, title_justify="left", header_style="bold")
    money = part is None
    cols = [q.level, "conversions", "share", "revenue", "journeys", *(["spend", "CPA", "ROAS"] if money else []),
            *([score] if score else []), *(["effect"] if effects is not None else [])]
    for col in cols:
        t.add_column(col, justify="left" if col == q.level else "right")
    for c in (result.channels if part is None else part.channels):
        cells: list[str | Text] = [Text(c.channel), f"{c.conversions:,.1f}", f"{c.share:.1%}", _money(c.revenue),
                                   fmt_cell(c.journeys)]
        if money:
            cells += [_money(c.spend), _money(c.cpa), "–" if c.roas is None else f"{c.roas:.2f}"]
        if score:
            cells.append("–" if c.score is None else f"{c.score:.4f}")
        if effects is not None:
            effect = effects.get(c.channel)
            cells.append("–" if effect is None else f"{effect:.4f}")
        t.add_row(*cells)
    return t


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def comparison_table(result: AttributionComparison, scope: str = "", part: int | None = None) -> Table:
    """Rich table: attributed conversions per value (rows) and method (columns), of all units or
    of the ``part``-th breakdown value's units."""
    if part is None:
        w = result.wide()
    else:
        cells = {r.method: r.breakdown[part].credit() for r in result.results}
        names = sorted({n for c in cells.values() for n in c})
        w = pd.DataFrame({"channel": names, **{m: [cells[m].get(n, 0.0) for n in names] for m in result.methods}})
        if len(w):
            w = w.sort_values(list(result.methods)[-1], ascending=False)
    t = Table(title=f"Attributed conversions by {result.query.level}{scope}: methods compared", title_justify="left",
              header_style="bold")
    t.add_column(result.query.level)
    for m in result.methods:
        t.add_column(m.replace("_", " "), justify="right")
    for row in w.itertuples(index=False):
        t.add_row(Text(str(row[0])), *[f"{v:,.1f}" for v in row[1:]])
    return t
