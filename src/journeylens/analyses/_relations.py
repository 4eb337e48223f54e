"""Small relational helpers shared by the analyses."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import ibis.expr.types as ir


def nullable(t: ir.Table) -> ir.Table:
    """``t`` with every column nullable (the same types otherwise).

    Source tables declare required columns NOT NULL, joins and unions make them nullable; set
    operations need equal schemas, so parts that come from different sides are cast first.
    """
    if all(typ.nullable for typ in t.schema().values()):
        return t
    return t.select(**{c: t[c].cast(t[c].type().copy(nullable=True)) for c in t.columns})


def union_all(parts: Sequence[ir.Table]) -> ir.Table:
    """UNION ALL of ``parts`` (same column names and types, any nullability)."""
    if not parts:
        raise ValueError("union_all needs at least one table")
    return reduce(lambda a, b: a.union(b), [nullable(p) for p in parts])
