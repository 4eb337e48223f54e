"""What was rejected, and why: the quarantine, summarised, listed and exported.

Every row gets an ``id`` (:func:`journeylens.ingest.replay.quarantine_id`: a hash of all
its columns) so it can be exported, fixed by hand and replayed
(``journeylens quarantine export|replay``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from journeylens.ingest.replay import QUARANTINE_COLUMNS, quarantine_id

COLUMNS = ("id", "target", "source", "line", "field", "reason", "raw", "received_at")


@dataclass(frozen=True)
class QuarantineReport:
    total: int
    """Rows matching the filters."""
    reasons: tuple[tuple[str, int], ...]
    """(reason, rows) most frequent first."""
    rows: tuple[dict[str, Any], ...]
    """The newest rows (up to the requested limit), oldest line first per source."""

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "reasons": dict(self.reasons), "rows": list(self.rows)}

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows), columns=list(COLUMNS))


def filter_quarantine(quarantine: ir.Table, *, target: str | None = None, reason: str | None = None,
                      source: str | None = None) -> ir.Table:
    """Rows for table ``target`` (exact) whose reason and source contain ``reason`` / ``source``
    (case-sensitive substrings); None means no filter."""
    q = quarantine
    if target is not None:
        q = q.filter(q.target == target)
    if reason is not None:
        q = q.filter(q.reason.contains(reason))
    if source is not None:
        q = q.filter(q.source.contains(source))
    return q


def quarantine_rows(quarantine: ir.Table, **filters: str | None) -> list[dict[str, Any]]:
    """All matching rows with every quarantine column plus ``id``, oldest first."""
    q = filter_quarantine(quarantine, **filters)
    rows = q.select(*QUARANTINE_COLUMNS).order_by(["received_at", "source", "line"]).to_pyarrow().to_pylist()
    return [{"id": quarantine_id(r), **r} for r in rows]


def quarantine_report(quarantine: ir.Table, *, limit: int = 50, target: str | None = None,
                      reason: str | None = None, source: str | None = None) -> QuarantineReport:
    """Summarise ``quarantine`` (already restricted to a workspace), optionally filtered
    (see :func:`filter_quarantine`)."""
    q = filter_quarantine(quarantine, target=target, reason=reason, source=source)
    total = int(q.count().execute())
    reasons = q.group_by("reason").aggregate(n=q.count()).order_by([ibis.desc("n"), "reason"])
    rows = q.select(*QUARANTINE_COLUMNS).order_by([ibis.desc("received_at"), "source", "line"]).limit(limit)
    listed = [{"id": quarantine_id(r), **{c: r[c] for c in COLUMNS[1:]}} for r in rows.to_pyarrow().to_pylist()]
    return QuarantineReport(
        total=total,
        reasons=tuple((r["reason"], int(r["n"])) for r in reasons.to_pyarrow().to_pylist()),
        rows=tuple(listed),
    )
