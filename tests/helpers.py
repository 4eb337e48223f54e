"""Tiny builders for hand-made test tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from journeylens import schema

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def events_table(rows: list[dict[str, Any]], workspace: str = "default") -> pa.Table:
    """Events with the canonical schema; ``minute`` gives ts = T0 + minutes; ids default to row number."""
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        minute = r.pop("minute", i)
        props = r.pop("properties", None)
        out.append({
            "message_id": r.pop("message_id", f"m{i:05d}"),
            "workspace": workspace,
            "ts": T0 + timedelta(minutes=minute),
            "type": r.pop("type", "track"),
            "event": r.pop("event", "visit"),
            "properties": json.dumps(props) if props is not None else None,
            **r,
        })
    return pa.Table.from_pylist(out, schema=schema.EVENTS.arrow_schema())
