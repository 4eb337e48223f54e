"""``journeylens quarantine list|export|replay``: inspect rejected rows, fix them, re-ingest them.

``journeylens quarantine`` without a sub-command lists (same options as ``list``).
Semantics of replay: :mod:`journeylens.ingest.replay` and docs/collector.md.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from journeylens.cli.render import Format, FormatOpt, emit, frame_table, out
from journeylens.errors import InputFileError, InvalidParameterError

quarantine_app = typer.Typer(
    help="Rejected rows: list them, export them for fixing, replay them (re-validate and append).",
    invoke_without_command=True, no_args_is_help=False)

TargetOpt = Annotated[str | None, typer.Option("--target", help="Only rows meant for this table (events, people, ...).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only rows whose reason contains this text.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="Only rows whose source (file path or "
                                               "'http /v1/...') contains this text.")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="How many rows to list.")]


def register(app: typer.Typer) -> None:
    """Add the ``quarantine`` command group to ``app``."""
    app.add_typer(quarantine_app, name="quarantine")


def _list(target: str | None, reason: str | None, source: str | None, limit: int, fmt: Format) -> None:
    from journeylens.cli.app import _open

    with _open() as ws:
        result = ws.quarantine(limit=limit, target=target, reason=reason, source=source)
    title = f"{result.total:,} quarantined rows" + (
        " — " + ", ".join(f"{r}: {n:,}" for r, n in result.reasons[:5]) if result.reasons else "")
    if fmt is Format.table:
        out.print(frame_table(result.to_pandas().drop(columns=["raw"]), title))
    else:
        emit(result, fmt)


@quarantine_app.callback()
def quarantine(
    ctx: typer.Context,
    target: TargetOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    limit: LimitOpt = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """List quarantined (rejected) rows with id, source, line, field and reason (no sub-command: list)."""
    if ctx.invoked_subcommand is None:
        _list(target, reason, source, limit, fmt)


@quarantine_app.command("list")
def list_command(
    target: TargetOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    limit: LimitOpt = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """List quarantined rows, newest first, with their ids and the counts per reason."""
    _list(target, reason, source, limit, fmt)


class _Written:
    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "rows": self.rows}

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([self.to_dict()])


@quarantine_app.command("export")
def export_command(
    out_file: Annotated[Path, typer.Option("--out", help="JSON-lines file to write.")],
    target: TargetOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Write the matching quarantined rows as JSON lines to fix by hand and `replay --file`.

    Each line: {"id", "target", "source", "line", "field", "reason", "raw"} plus "record" (the raw
    row parsed as JSON) when raw is JSON. Edit "record" (or "raw" when there is no record)."""
    from journeylens.analyses.quarantine import quarantine_rows
    from journeylens.cli.app import _open

    with _open() as ws:
        rows = quarantine_rows(ws.table("quarantine"), target=target, reason=reason, source=source)
    with out_file.open("w", encoding="utf-8") as f:
        for r in rows:
            item: dict[str, Any] = {k: r[k] for k in ("id", "target", "source", "line", "field", "reason", "raw")}
            if r["raw"] is not None:
                with contextlib.suppress(ValueError):
                    item["record"] = json.loads(r["raw"])
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    emit(_Written(out_file, len(rows)), fmt, title=f"{len(rows):,} quarantined rows written to {out_file}")


def read_fixes(path: Path) -> dict[str, str]:
    """``id`` → corrected raw text from an exported (and edited) JSON-lines file: ``record``
    (compact JSON) when present, else ``raw``."""
    if not path.exists():
        raise InputFileError("no such file", path=str(path), hint="write it with `journeylens quarantine export`")
    fixes: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InputFileError(f"invalid JSON: {exc}", path=str(path), line=number) from exc
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise InputFileError("each line needs an \"id\" (as written by quarantine export)", path=str(path),
                                 line=number)
        if "record" in item:
            fixes[item["id"]] = json.dumps(item["record"], ensure_ascii=False, separators=(",", ":"))
        elif isinstance(item.get("raw"), str):
            fixes[item["id"]] = item["raw"]
        else:
            raise InputFileError("a line needs \"record\" or \"raw\"", path=str(path), line=number)
    return fixes


@quarantine_app.command("replay")
def replay_command(
    target: TargetOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    file: Annotated[Path | None, typer.Option("--file", help="Fixed rows (JSON lines from `quarantine export`); "
                                              "only the rows it names are replayed.")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="Column mapping SOURCE=TARGET of the original "
                                                   "file import (repeatable).")] = None,
    tz: Annotated[str, typer.Option("--tz", help="Time zone of naive timestamps of file rows.")] = "UTC",
    fmt: FormatOpt = Format.table,
) -> None:
    """Re-validate quarantined rows through their original path (collector or file importer); append the
    ones that now pass (dedupe as usual) and remove exactly them from the quarantine, in one transaction.
    Rows still invalid stay, with their new reason."""
    from journeylens.cli.app import _open

    mapping: dict[str, str] = {}
    for m in map_ or []:
        if "=" not in m:
            raise InvalidParameterError(f"--map {m}: write SOURCE=TARGET")
        k, v = m.split("=", 1)
        mapping[k.strip()] = v.strip()
    fixes = read_fixes(file) if file is not None else None
    with _open() as ws:
        report = ws.replay_quarantine(target=target, reason=reason, source=source, fixes=fixes,
                                      mapping=mapping or None, tz=tz)
    title = (f"replayed {report.replayed:,} of {report.selected:,} rows; {report.still_invalid:,} still invalid"
             + (f"; {len(report.missing_ids)} ids not found" if report.missing_ids else ""))
    emit(report, fmt, title=title, table=frame_table(report.to_pandas(), title))
