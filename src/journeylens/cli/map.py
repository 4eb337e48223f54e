"""``journeylens map``: the Customer Journey Map of a model, for everyone or one scope, as a
terminal table, JSON, CSV, or a file (HTML, PNG, PDF); optionally beside a second scope."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from journeylens.cli.render import Format, FormatOpt, ModelOpt, emit, err, out
from journeylens.errors import InvalidParameterError
from journeylens.journeymap import JourneyMap
from journeylens.journeymap.compare import MapComparison
from journeylens.journeymap.render import cell_text

SUFFIXES = (".html", ".png", ".pdf")


def register(app: typer.Typer) -> None:
    """Add the ``map`` command to ``app``."""
    app.command("map")(map_command)


def map_command(
    model: ModelOpt = None,
    persona: Annotated[str | None, typer.Option("--persona", help="Only people of this saved persona.")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Only people of this saved cohort.")] = None,
    period: Annotated[str | None, typer.Option("--period", help="Only touches in this period: 2026, 2026-Q3, "
                                               "2026-10, 2026-W40, 2026-10-05 or 2026-10-01..2026-10-31.")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="Draw a second map beside it: persona:NAME, "
                                                "segment:COHORT or period:PERIOD replaces that part of the "
                                                "scope; workspace:NAME draws it from another workspace "
                                                "(e.g. B2B vs B2C).")] = None,
    unit: Annotated[str, typer.Option("--unit", help="person or account (B2B).")] = "person",
    config: Annotated[Path | None, typer.Option("--config", help="Map configuration YAML (goals, known hurdles, "
                                                "ideas, owners); default: the example for built-in models.")] = None,
    zoom: Annotated[str | None, typer.Option("--zoom", help="Add the detail of one stage (touchpoints, paths, "
                                             "entries).")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Title of the map.")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write the map to map.html, map.png "
                                                  "(headless Chromium) or map.pdf (A3 landscape).")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Customer Journey Map: behaviour, touchpoints, KPIs, emotions, goals, pain points, solutions and owners per stage."""
    from journeylens.cli.app import _open

    if out_file is not None and out_file.suffix.lower() not in SUFFIXES:
        raise InvalidParameterError(f"--out '{out_file}' must end in .html, .png or .pdf")
    with _open() as ws:
        kwargs: dict[str, Any] = {"persona": persona, "segment": segment, "period": period, "unit": unit,
                                  "config": config, "title": title}
        result: JourneyMap | MapComparison
        if compare:
            key, _, value = compare.partition(":")
            if key not in ("persona", "segment", "period", "workspace") or not value:
                raise InvalidParameterError(f"--compare '{compare}' must be persona:NAME, segment:COHORT, "
                                            "period:PERIOD or workspace:NAME")
            result = ws.compare_journey_maps({key: value}, model, **kwargs)
        else:
            result = ws.journey_map(model, zoom=zoom, **kwargs)
    if out_file is not None:
        suffix = out_file.suffix.lower()
        if suffix == ".html":
            out_file.parent.mkdir(parents=True, exist_ok=True)
            result.to_html(out_file)
        elif suffix == ".png":
            result.to_png(out_file)
        else:
            result.to_pdf(out_file)
        err.print(f"map written to {out_file}", markup=False)
    if fmt is Format.table:
        maps = [result.a, result.b] if isinstance(result, MapComparison) else [result]
        for m in maps:
            out.print(map_table(m))
        if isinstance(result, MapComparison):
            for d in result.differences:
                out.print(Text(f"≠ {d.stage} / {d.row}: {d.summary}"))
    else:
        emit(result if not isinstance(result, MapComparison) else _ComparisonView(result), fmt)


def map_table(m: JourneyMap) -> Table:
    """The map as a rich table: one column per stage, one line per row."""
    t = Table(title=f"{m.title} — {m.scope_label}", title_justify="left", header_style="bold", show_lines=True)
    t.add_column("")
    for s in m.stages:
        t.add_column(f"{s.label}\n{s.people:,} {m.unit}s")
    df = m.to_pandas()
    for _, row in df.iterrows():
        t.add_row(Text(str(row["row"]), style="bold"), *[Text(str(row[s.label])) for s in m.stages])
    return t


class _ComparisonView:
    """A comparison rendered as JSON (both maps and the differences) or CSV (the differences)."""

    def __init__(self, c: MapComparison) -> None:
        self.c = c

    def to_dict(self) -> dict[str, object]:
        return self.c.to_dict()

    def to_pandas(self):  # type: ignore[no-untyped-def]
        import pandas as pd

        rows = [{**d.to_dict(), "a": cell_text(self.c.a.cell(d.row, d.stage)),
                 "b": cell_text(self.c.b.cell(d.row, d.stage))} for d in self.c.differences]
        return pd.DataFrame(rows, columns=["row", "stage", "test", "p_value", "summary", "a", "b"])
