"""What was rejected, and why: the quarantine, summarised and listed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

COLUMNS = ("target", "source", "line", "field", "reason", "raw", "received_at")


@dataclass(frozen=True)
class QuarantineReport:
    total: int
    reasons: tuple[tuple[str, int], ...]
    """(reason, rows) most frequent first."""
    rows: tuple[dict[str, Any], ...]
    """The newest rows (up to the requested limit), oldest line first per source."""

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "reasons": dict(self.reasons), "rows": list(self.rows)}

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows), columns=list(COLUMNS))


def quarantine_report(quarantine: ir.Table, *, limit: int = 50, target: str | None = None) -> QuarantineReport:
    """Summarise ``quarantine`` (already restricted to a workspace), optionally for one target table."""
    q = quarantine if target is None else quarantine.filter(quarantine.target == target)
    total = int(q.count().execute())
    reasons = q.group_by("reason").aggregate(n=q.count()).order_by([ibis.desc("n"), "reason"])
    rows = q.select(*COLUMNS).order_by([ibis.desc("received_at"), "source", "line"]).limit(limit)
    return QuarantineReport(
        total=total,
        reasons=tuple((r["reason"], int(r["n"])) for r in reasons.to_pyarrow().to_pylist()),
        rows=tuple(rows.to_pyarrow().to_pylist()),
    )
