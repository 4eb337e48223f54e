"""Small relational helpers shared by the analyses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

import ibis.expr.types as ir

from journeylens.errors import InvalidParameterError


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


def segment_values(segments: Mapping[str, ir.Table], name: str, unit_column: str, *, unit_as: str = "unit",
                   value_as: str = "value") -> ir.Table:
    """The distinct (unit, value) pairs of segment ``name`` as strings, columns renamed to
    ``unit_as`` and ``value_as``. A segment table has the unit column (``person_id`` or
    ``account_id``) and ``value``; anything else is a clear error."""
    seg = segments[name]
    if unit_column not in seg.columns or "value" not in seg.columns:
        raise InvalidParameterError(f"segment table '{name}' needs columns {unit_column} and value")
    return seg.select(**{unit_as: seg[unit_column].cast("string"), value_as: seg.value.cast("string")}).distinct()
