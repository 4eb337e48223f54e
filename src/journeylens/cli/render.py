"""Rendering results for the terminal: ``--format table|json|csv``.

Results render themselves (``to_dict()``, ``to_pandas()``); this module only
chooses the output form. JSON and CSV go to stdout untouched by colour;
progress and messages go to stderr so pipes stay clean.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # pandas loads when a table is rendered, not at start-up
    import pandas as pd

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)]
"""The ``--format table|json|csv`` option every command shares."""
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Journey model key or YAML path (default: five_phase).")
]
"""The ``--model`` option every command shares."""
FigureOpt = Annotated[
    Path | None,
    typer.Option("--figure", help="Also write the chart: .html (interactive, works offline), .png, .svg or .pdf "
                 "(drawn by plotly.js in Chromium)."),
]
"""The ``--figure FILE`` option of every command whose result draws a chart."""


class Renderable(Protocol):
    def to_dict(self) -> Any: ...

    def to_pandas(self) -> pd.DataFrame: ...


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None so the JSON is valid for every parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(data: Any) -> str:
    return json.dumps(_clean(data), default=_default, ensure_ascii=False, indent=2)


def fmt_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if abs(value) <= 1 and value != 0 and not value.is_integer():
            return f"{value:.1%}"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def frame_table(df: pd.DataFrame, title: str | None = None) -> Table:
    from pandas.api.types import is_numeric_dtype

    table = Table(title=title, title_justify="left", header_style="bold")
    for col in df.columns:
        numeric = is_numeric_dtype(df[col])
        table.add_column(str(col), justify="right" if numeric else "left")
    for row in df.itertuples(index=False):
        table.add_row(*[fmt_cell(v.item() if hasattr(v, "item") else v) for v in row])
    return table


def write_figure(result: Any, path: Path | None) -> None:
    """Write ``result.figure()`` to ``path`` (by suffix; see :func:`journeylens.chromium.save_figure`)."""
    if path is None:
        return
    from journeylens.chromium import save_figure

    save_figure(result.figure(), path)
    err.print(f"chart written to {path}")


def emit(result: Renderable, fmt: Format, *, title: str | None = None, table: Any = None) -> None:
    """Print ``result`` in ``fmt``. ``table`` overrides the default rich rendering."""
    if fmt is Format.json:
        sys.stdout.write(to_json(result.to_dict()) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(result.to_pandas().to_csv(index=False))
    else:
        out.print(table if table is not None else frame_table(result.to_pandas(), title))
