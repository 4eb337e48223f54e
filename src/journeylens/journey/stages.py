"""Stage assignment: a journey model's rules as one Ibis CASE expression.

Everything compiles to plain SQL that DuckDB and Spark both run: ``IN``,
comparisons, ``get_json_object`` for properties (see
:mod:`journeylens.store.functions`) and anchored regular expressions for glob
patterns (RE2 on DuckDB and Java regex on Spark agree on the subset used).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import and_, or_

import ibis
import ibis.expr.types as ir

from journeylens import schema
from journeylens.errors import InvalidParameterError
from journeylens.journey.model import COMPARISONS, Condition, JourneyModel, Rule
from journeylens.store.functions import json_get, json_get_number

STAGE = "stage"
STAGE_INDEX = "stage_index"


def assign_stages(touches: ir.Table, model: JourneyModel) -> ir.Table:
    """``touches`` with ``stage`` (key, NULL when no rule matches) and ``stage_index`` added.

    ``stage_index`` is the stage's 0-based position in ``model.stages``. Rules
    are tried in order and the first match wins. Rows whose ``type`` is not a
    touch type (identify, group, alias) get NULL; a table without a ``type``
    column is taken to hold touches only. Existing ``stage``/``stage_index``
    columns are replaced, so a table can be re-staged with another model.
    """
    base = touches.drop(*[c for c in (STAGE, STAGE_INDEX) if c in touches.columns])
    missing = [c for c in model.columns if c != "type" and c not in base.columns]
    if missing:
        raise InvalidParameterError(
            f"model '{model.key}' reads column(s) {', '.join(missing)} that the touches table lacks",
            hint=f"the model's rules read: {', '.join(model.columns)}",
        )
    staged = base.mutate(**{STAGE_INDEX: stage_index_expr(base, model)})
    stage = staged[STAGE_INDEX].cases(
        *((i, key) for i, key in enumerate(model.stage_keys)), else_=ibis.null("string")
    )
    return staged.mutate(**{STAGE: stage}).select(*base.columns, STAGE, STAGE_INDEX)


def stage_index_expr(touches: ir.Table, model: JourneyModel) -> ir.IntegerValue:
    """The 0-based stage index of each row as one ``ibis.cases`` expression (NULL if unmatched)."""
    null = ibis.null("int64")
    branches: list[tuple[ir.BooleanValue, ir.IntegerValue]] = []
    if "type" in touches.columns:
        is_touch = touches["type"].isin(schema.TOUCH_TYPES).fill_null(False)
        branches.append((~is_touch, null))
    for rule in model.rules:
        branches.append(
            (rule_predicate(touches, rule), ibis.literal(model.index(rule.stage), "int64"))
        )
    return ibis.cases(*branches, else_=null)


def rule_predicate(touches: ir.Table, rule: Rule) -> ir.BooleanValue:
    """True where ``rule`` matches: any of its blocks, each with all its conditions."""
    blocks = [
        reduce(and_, [condition_predicate(touches, c) for c in block]) for block in rule.blocks
    ]
    return reduce(or_, blocks)


def condition_predicate(touches: ir.Table, cond: Condition) -> ir.BooleanValue:
    """The boolean expression of one condition (NULL-safe: absent values never match,
    except for ``ne`` and ``exists: false``)."""
    op, value = cond.op, cond.value
    x = _operand(touches, cond)
    if op == "exists":
        return x.notnull() if value else x.isnull()
    if isinstance(value, bool):  # JSON true/false read as text
        value = "true" if value else "false"
    if isinstance(value, tuple):
        value = tuple(("true" if v else "false") if isinstance(v, bool) else v for v in value)
    if op == "glob":
        patterns = value if isinstance(value, tuple) else (value,)
        return x.re_search(glob_regex([str(p) for p in patterns]))
    if op == "in":
        return x.isin(value)
    if op == "eq":
        return x == value
    if op == "ne":
        return (x != value) | x.isnull()
    if op == "gt":
        return x > value
    if op == "gte":
        return x >= value
    if op == "lt":
        return x < value
    if op == "lte":
        return x <= value
    raise AssertionError(f"unhandled operator {op}")  # the loader admits only the above


def _operand(touches: ir.Table, cond: Condition) -> ir.Value:
    if not cond.on_property:
        return touches[cond.field]
    props = touches[cond.column]
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    numeric = cond.op in COMPARISONS or all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    if numeric:
        return json_get_number(props, cond.field)
    return json_get(props, cond.field)


def glob_regex(patterns: Sequence[str]) -> str:
    """An anchored regular expression matching any of the glob ``patterns``.

    ``*`` is any run of characters, ``?`` one character, everything else is
    literal: ASCII punctuation is backslash-escaped, which RE2 (DuckDB) and
    Java (Spark) both read as the literal character.
    """
    parts = []
    for pattern in patterns:
        out = []
        for ch in pattern:
            if ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            elif ch.isascii() and not (ch.isalnum() or ch == "_"):
                out.append("\\" + ch)
            else:
                out.append(ch)
        parts.append("".join(out))
    return r"(?s)\A(?:" + "|".join(parts) + r")\z"


def unmatched_touches(staged: ir.Table, by: Sequence[str] = ("event",)) -> ir.Table:
    """Touches of a staged table that no rule matched, counted per ``by`` (most frequent first)."""
    rows = staged.filter(staged[STAGE].isnull())
    if "type" in staged.columns:
        rows = rows.filter(rows["type"].isin(schema.TOUCH_TYPES))
    return (
        rows.group_by(list(by)).aggregate(touches=rows.count()).order_by(ibis.desc("touches"), *by)
    )
