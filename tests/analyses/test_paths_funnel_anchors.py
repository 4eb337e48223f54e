"""Funnel paths anchor on the exact step touches of each unit's counted attempt (hand-checked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ibis.expr.types as ir
import pytest

from journeylens.analyses.funnel import FunnelQuery, attempt_times, funnel
from journeylens.analyses.paths import PathsQuery, funnel_paths
from journeylens.errors import InvalidParameterError

V, PV, ATC, PUR = "visit", "product_view", "add_to_cart", "purchase"


def ev(person: str, event: str, minute: float) -> dict[str, Any]:
    return {"user_id": person, "event": event, "minute": minute}


# window 1h. x: a first try at m0 stalls; the counted attempt starts at the visit at m120.
# y: a product_view before any visit (m0), then V m10, PV m20, V m100: level 2, the counted
#    attempt is V m10 -> PV m20 (the first completion of step 2).
# z: V m0, PV m5, PV m30, ATC m40: the attempt's step-2 touch is PV m30 (latest before ATC).
ROWS = [
    ev("x", V, 0), ev("x", PV, 1), ev("x", V, 120), ev("x", PV, 130), ev("x", ATC, 140), ev("x", PUR, 150),
    ev("y", PV, 0), ev("y", V, 10), ev("y", PV, 20), ev("y", V, 100),
    ev("z", V, 0), ev("z", PV, 5), ev("z", PV, 30), ev("z", ATC, 40),
]
Q = FunnelQuery(steps=[V, PV, ATC, PUR], window="1h")


def paths_of(r: Any) -> dict[str, str]:
    return {str(u["person_id"]): str(u["path"]) for u in r.units.to_pyarrow().to_pylist()}


def test_attempt_times_and_exact_anchors(touches_of: Callable[[list[dict[str, Any]]], ir.Table]) -> None:
    t = touches_of(ROWS)
    at = {r["unit"]: r for r in attempt_times(t, Q).to_pyarrow().to_pylist()}
    minute = {p: [None if at[p][f"t{i}"] is None else
                  (at[p][f"t{i}"] - at[p]["t1"]).total_seconds() / 60 for i in range(1, 5)] for p in at}
    assert {p: at[p]["level"] for p in at} == {"x": 4, "y": 2, "z": 3}
    assert minute["x"] == [0, 10, 20, 30]        # V m120, PV m130, ATC m140, PUR m150
    assert minute["y"] == [0, 10, None, None]    # V m10, PV m20
    assert minute["z"] == [0, 30, 40, None]      # V m0, PV m30, ATC m40

    fr = funnel(t, Q)
    assert fr.levels() == {"x": 4, "y": 2, "z": 3}
    after1 = paths_of(funnel_paths(t, fr, 1, "after", PathsQuery(depth=10)))
    assert after1 == {"x": "visit → product_view → add_to_cart → purchase",   # from V m120, not V m0
                      "y": "visit → product_view → visit",
                      "z": "visit → product_view → product_view → add_to_cart"}
    between = paths_of(funnel_paths(t, fr, 3, "between", PathsQuery(depth=10)))
    assert between == {"x": "product_view → add_to_cart", "z": "product_view → add_to_cart"}
    dropped = paths_of(funnel_paths(t, fr, 3, "dropped", PathsQuery(depth=10)))
    assert dropped == {"y": "product_view → visit"}                          # from PV m20, not PV m0
    before = paths_of(funnel_paths(t, fr, 2, "before", PathsQuery(depth=10)))
    assert before == {"x": "visit → product_view → visit → product_view",    # ends at PV m130
                      "y": "product_view → visit → product_view",
                      "z": "visit → product_view → product_view"}             # ends at PV m30


def test_unordered_has_no_anchor_touches(touches_of: Callable[[list[dict[str, Any]]], ir.Table],
                                         backend: str) -> None:
    if backend == "spark":
        pytest.skip("validation only")
    t = touches_of(ROWS)
    fr = funnel(t, FunnelQuery(steps=[V, PV], order="unordered"))
    with pytest.raises(InvalidParameterError, match="unordered"):
        funnel_paths(t, fr, 2, "after")
