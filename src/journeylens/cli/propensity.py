"""``journeylens propensity``: per person, the probability to convert (or churn) in the next
period, its top drivers and the next best action; exportable as CSV for a CRM.

Registered on the main app with :func:`register`; the command builds a
:class:`~journeylens.analyses.propensity.PropensityQuery` (the request model the Python and REST
APIs share), runs :func:`~journeylens.analyses.propensity.propensity` on the workspace's touches
and renders the result (``--format table|json|csv``; ``--out FILE.csv`` writes every person).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from journeylens.analyses._time import format_duration
from journeylens.analyses.propensity import (
    DEFAULT_HORIZON,
    PropensityQuery,
    PropensityResult,
)
from journeylens.cli.render import Format, FormatOpt, ModelOpt, err, fmt_cell, out, to_json
from journeylens.errors import InvalidParameterError


def register(app: typer.Typer) -> None:
    """Add the ``propensity`` command to ``app``."""
    app.command("propensity")(propensity_command)


def propensity_command(
    target: Annotated[str, typer.Option(
        "--target", "-t", help="What to predict: stage=KEY (reach that stage of the model), churn (no touch in "
        "the next horizon), or an event filter such as purchase or event=purchase&properties.order_number=1.")
    ] = "stage=decision",
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="End of the data (YYYY-MM-DD = end of that UTC day, or an ISO time); default: the "
        "latest touch. Touches after it are ignored.")] = None,
    horizon: Annotated[str, typer.Option(
        "--horizon", help="The period to predict: 30d, 4w, ... The model trains at as_of - 2×horizon and is "
        "evaluated at as_of - horizon.")] = DEFAULT_HORIZON,
    top: Annotated[int, typer.Option("--top", "-n", help="Persons shown (highest probability first).")] = 20,
    out_file: Annotated[str | None, typer.Option(
        "--out", "-o", help="Write every scored person to this CSV file (for a CRM import).")] = None,
    action: Annotated[str, typer.Option(
        "--action", help="Next best actions are touchpoints or channels.")] = "touchpoint",
    min_n: Annotated[int, typer.Option(
        "--min-n", help="Fewest treated and untreated persons for an uplift to count.")] = 20,
    active_within: Annotated[str | None, typer.Option(
        "--active-within", help="churn: a person is active when touched within this before the cutoff "
        "(default: the horizon).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random_state of the gradient boosting.")] = 0,
    breakdown: Annotated[str | None, typer.Option(
        "--breakdown", "-b", help="persona, cohort or cohort:NAME (saved cohorts): a summary and the next best "
        "actions per value.")] = None,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Score and list only the persons of a saved cohort: persona:KEY or cohort:NAME (the "
        "model still learns from everyone).")] = None,
    model: ModelOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Propensity to convert or churn in the next period, top drivers and next best action per person."""
    from journeylens.cli.app import _open  # the app imports this module to register the command

    if top < 0:
        raise InvalidParameterError(f"--top must be at least 0, got {top}")
    query = PropensityQuery(target=target, as_of=as_of, horizon=horizon, action=action, min_n=min_n,
                            active_within=active_within, random_state=seed, persona=breakdown)
    if breakdown is not None and not (breakdown in ("persona", "cohort") or breakdown.startswith("cohort:")):
        raise InvalidParameterError(f"propensity cannot break down by '{breakdown}'",
                                    hint="persona, cohort or cohort:NAME (saved cohorts)")
    ws = _open()
    result = ws.propensity(query, model=model, persons=segment)
    if out_file:
        result.to_csv(out_file)
        err.print(f"wrote {len(result.persons):,} persons to {out_file}")
    if fmt is Format.json:
        sys.stdout.write(to_json(result.to_dict(limit=top)) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(result.to_pandas(limit=top).to_csv(index=False))
    else:
        for table in propensity_tables(result, top):
            out.print(table)


def propensity_tables(result: PropensityResult, top: int) -> list[Table]:
    """Rich tables: the evaluation, the top persons, the best uplift per stage."""
    q = result.query
    e = result.evaluation
    head = Table(title=f"Propensity — {q.target}, horizon {format_duration(q.horizon_seconds)}, as of "
                       f"{result.as_of:%Y-%m-%d %H:%M} UTC", title_justify="left", header_style="bold")
    head.add_column("measure")
    head.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("training cutoff", f"{e.train_cutoff:%Y-%m-%d %H:%M}"),
        ("training persons", fmt_cell(e.train_persons)),
        ("training positive rate", f"{e.train_positive_rate:.1%}"),
        ("holdout cutoff", f"{e.holdout_cutoff:%Y-%m-%d %H:%M}"),
        ("holdout persons", fmt_cell(e.holdout_persons)),
        ("holdout AUC", "–" if e.holdout_auc is None else f"{e.holdout_auc:.3f}"),
        ("holdout positive rate", f"{e.holdout_positive_rate:.1%}"),
        ("holdout mean predicted", f"{e.holdout_mean_predicted:.1%}"),
        ("holdout Brier score", f"{e.holdout_brier:.4f}"),
        ("persons scored", fmt_cell(len(result.persons))),
        ("top features", ", ".join(f for f, _ in result.importance[:5])),
    ]
    for k, v in rows:
        head.add_row(k, Text(v))
    tables = [head]
    people = Table(title=f"Top {min(top, len(result.persons))} persons", title_justify="left", header_style="bold")
    for col, justify in [("person", "left"), ("stage", "left"), (q.probability_column, "right"),
                         ("drivers", "left"), ("next best action", "left"), ("uplift", "right")]:
        people.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in result.top(top):
        uplift = "–" if s.uplift is None else (
            f"{s.uplift:+.1%} [{s.uplift_low:+.1%}, {s.uplift_high:+.1%}]")
        people.add_row(Text(s.person_id), Text(s.stage or "–"), f"{s.probability:.1%}",
                       Text("; ".join(str(d) for d in s.drivers)), Text(s.next_best_action or "–"), uplift)
    tables.append(people)
    best = Table(title=f"Best {q.action} per stage (uplift of the {'churn' if q.target_kind == 'churn' else 'target'} "
                       "rate, pooled over earlier periods)", title_justify="left", header_style="bold")
    for col in ("stage", "action", "treated", "treated rate", "untreated rate", "uplift", "interval"):
        best.add_column(col, justify="left" if col in ("stage", "action") else "right")
    seen: set[str] = set()
    for u in result.uplifts:
        if u.persona is not None or u.stage in seen:
            continue
        seen.add(u.stage)
        best.add_row(Text(u.stage), Text(u.action), fmt_cell(u.treated), f"{u.treated_rate:.1%}",
                     f"{u.untreated_rate:.1%}", f"{u.uplift:+.1%}", f"[{u.low:+.1%}, {u.high:+.1%}]")
    tables.append(best)
    if q.persona is not None:
        per = Table(title=f"By {q.persona}: scored persons and the holdout evaluation of the model",
                    title_justify="left", header_style="bold")
        for col in (q.persona, "persons", f"mean {q.probability_column}", "holdout persons", "holdout positive rate",
                    "holdout mean predicted", "holdout AUC", f"best {q.action}"):
            per.add_column(col, justify="left" if col in (q.persona,) or col.startswith("best") else "right")
        for b in result.by_persona:
            mine = [u for u in result.uplifts if u.persona == b.persona and u.uplift > 0]
            top_u = max(mine, key=lambda u: u.uplift, default=None)
            per.add_row(Text(b.persona), fmt_cell(b.persons), _pct(b.mean_probability), fmt_cell(b.holdout_persons),
                        _pct(b.holdout_positive_rate), _pct(b.holdout_mean_predicted),
                        "–" if b.holdout_auc is None else f"{b.holdout_auc:.3f}", Text("–" if top_u is None else f"{top_u.action} ({top_u.stage}, {top_u.uplift:+.1%})"))
        tables.append(per)
    return tables


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


__all__ = ["propensity_command", "propensity_tables", "register"]
