"""Backend-neutral scalar functions for Ibis expressions.

Ibis' own JSON operators fall back to Python UDFs on PySpark, so journeylens
reads JSON text through one builtin, ``get_json_object(json_text, '$.path')``:
Spark has it natively; on DuckDB the store registers a macro of that name
(:func:`register_duckdb_functions`). Analyses call :func:`json_get` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir


@ibis.udf.scalar.builtin
def get_json_object(json: str, path: str) -> str:  # type: ignore[empty-body]
    """Value at ``path`` of JSON text as a string; NULL when absent or not JSON."""


@ibis.udf.scalar.builtin
def unix_micros(ts: datetime) -> int:  # type: ignore[empty-body]
    """Microseconds since the Unix epoch (UTC); integer arithmetic on times is much
    cheaper than time-zone-aware timestamp arithmetic on DuckDB."""


def seconds_between(later: ir.Value, earlier: ir.Value) -> ir.FloatingValue:
    """``later - earlier`` in seconds (float, exact to the microsecond) by integer arithmetic;
    DuckDB's ``date_diff`` on ``TIMESTAMPTZ`` goes through ICU's calendar and costs more than
    the window sort it follows."""
    result: ir.FloatingValue = (unix_micros(later) - unix_micros(earlier)) / 1e6
    return result


DUCKDB_MACROS = (
    "CREATE OR REPLACE TEMP MACRO get_json_object(j, p) AS "
    "CASE WHEN json_valid(j) THEN json_extract_string(j, p) END",
    "CREATE OR REPLACE TEMP MACRO unix_micros(t) AS epoch_us(t)",
)


def register_duckdb_functions(con: Any) -> None:
    """Create the DuckDB macros that mirror the Spark builtins used here."""
    for sql in DUCKDB_MACROS:
        con.raw_sql(sql)


def json_get(column: ir.StringValue, key: str) -> ir.StringValue:
    """The property ``key`` of a JSON-object column, as a string (NULL if absent).

    ``key`` may be dotted (``"cart.total"``) to reach nested objects.
    """
    path = "$." + ".".join(f'"{part}"' if not part.isidentifier() else part for part in key.split("."))
    return get_json_object(column, path)


def json_get_number(column: ir.StringValue, key: str) -> ir.FloatingValue:
    """The property ``key`` cast to float64; NULL if absent or not numeric."""
    return json_get(column, key).try_cast("float64")
