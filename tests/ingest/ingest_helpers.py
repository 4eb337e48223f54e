"""Helpers for the importer tests: run an import and collect every chunk."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from journeylens import schema
from journeylens.ingest import SourceInfo, open_source

RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

Writer = Callable[[str, "str | bytes"], Path]
"""The ``write`` fixture: write(name, text) -> path (``.gz`` names are compressed)."""


@dataclass
class Result:
    accepted: pa.Table
    quarantined: pa.Table
    info: SourceInfo
    rows: int
    chunks: int

    def column(self, name: str) -> list[Any]:
        return list(self.accepted.column(name).to_pylist())

    def rejects(self) -> list[tuple[int | None, str | None, str]]:
        q = self.quarantined
        return list(zip(q.column("line").to_pylist(), q.column("field").to_pylist(),
                        q.column("reason").to_pylist(), strict=True))


def collect(path: str | Path, target: str = "events", **kwargs: Any) -> Result:
    """Import ``path`` into ``target``; check every chunk's schemas and row counts."""
    kwargs.setdefault("workspace", "w")
    kwargs.setdefault("received_at", RECEIVED)
    src = open_source(path, target, **kwargs)
    acc, bad, rows, chunks = [], [], 0, 0
    for chunk in src:
        assert chunk.accepted.schema.equals(schema.IMPORTABLE[target].arrow_schema())
        assert chunk.quarantined.schema.equals(schema.QUARANTINE.arrow_schema())
        assert chunk.rows == chunk.accepted.num_rows + chunk.quarantined.num_rows
        acc.append(chunk.accepted)
        bad.append(chunk.quarantined)
        rows += chunk.rows
        chunks += 1
    accepted = pa.concat_tables(acc) if acc else schema.IMPORTABLE[target].arrow_schema().empty_table()
    quarantined = pa.concat_tables(bad) if bad else schema.QUARANTINE.arrow_schema().empty_table()
    return Result(accepted, quarantined, src.info, rows, chunks)


def jsonl(*records: object) -> str:
    """JSON lines text; str records are written verbatim (for broken lines)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
