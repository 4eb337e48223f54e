"""Random seeded event sets against two outside oracles (DuckDB only; Spark equality is shown by
the fixed cases in test_funnel.py).

1. ``order=ordered`` against ClickHouse ``windowFunnel(window)`` run by chdb on the same data:
   every person's level must agree.
2. Every order, per-step limit and exclusions against the brute-force reference in
   ``funnel_oracle.py`` (enumerates all attempts): persons, totals and time-to-convert
   statistics per step.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeylens.analyses import _funnel_scan
from journeylens.analyses.funnel import Exclusion, FunnelQuery, FunnelResult, _Ordered, funnel
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.analyses import funnel_oracle as oracle
from tests.helpers import T0, events_table

chdb = pytest.importorskip("chdb")

# step text -> (python predicate over oracle.Ev, ClickHouse condition)
STEPS: dict[str, tuple[oracle.Pred, str]] = {
    "a": (lambda e: e.event == "a", "e = 'a'"),
    "b": (lambda e: e.event == "b", "e = 'b'"),
    "c": (lambda e: e.event == "c", "e = 'c'"),
    "d": (lambda e: e.event == "d", "e = 'd'"),
    "event=a&channel=email": (lambda e: e.event == "a" and e.channel == "email",
                              "(e = 'a' AND coalesce(ch, '') = 'email')"),
    "channel=seo": (lambda e: e.channel == "seo", "coalesce(ch, '') = 'seo'"),
    "event=b|c": (lambda e: e.event in ("b", "c"), "e IN ('b', 'c')"),
}

event_rows = st.tuples(
    st.integers(0, 30),                          # second: small range, many equal times
    st.sampled_from("abcde"),                    # 'e' never is a step: noise between steps
    st.sampled_from(["email", "seo", None]),
)
people = st.dictionaries(st.sampled_from([f"p{i}" for i in range(1, 9)]),
                         st.lists(event_rows, min_size=1, max_size=9), min_size=1, max_size=8)
steps = st.lists(st.sampled_from(sorted(STEPS)), min_size=2, max_size=4)


def _events(data: dict[str, list[tuple[int, str, str | None]]]) -> tuple[list[dict[str, Any]], list[oracle.Ev]]:
    rows: list[dict[str, Any]] = []
    evs: list[oracle.Ev] = []
    for person, items in sorted(data.items()):
        for second, event, channel in items:
            i = len(rows)
            rows.append({"user_id": person, "event": event, "channel": channel,
                         "ts": T0 + timedelta(seconds=second), "message_id": f"m{i:05d}"})
            evs.append(oracle.Ev(person, float(second), event, channel, f"m{i:05d}"))
    return rows, evs


def _compute(rows: list[dict[str, Any]], query: FunnelQuery) -> FunnelResult:
    store = open_store(":memory:")
    store.append("events", events_table(rows))
    return funnel(Workspace(store).touches(), query)


def _clickhouse_levels(evs: list[oracle.Ev], step_texts: list[str], window: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.parquet"
        pd.DataFrame({"p": [e.person for e in evs], "t": [int(e.ts) for e in evs],
                      "e": [e.event for e in evs], "ch": [e.channel for e in evs]}).to_parquet(path)
        conds = ", ".join(STEPS[s][1] for s in step_texts)
        sql = (f"SELECT p, windowFunnel({window})(toUInt64(t), {conds}) AS level "
               f"FROM file('{path}', Parquet) GROUP BY p")
        df = chdb.query(sql, "DataFrame")
    return {str(p): int(lv) for p, lv in zip(df["p"], df["level"], strict=True) if int(lv) > 0}


@settings(max_examples=35, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=people, step_texts=steps, window=st.integers(1, 20))
def test_ordered_equals_clickhouse_window_funnel(data: dict[str, Any], step_texts: list[str], window: int) -> None:
    rows, evs = _events(data)
    result = _compute(rows, FunnelQuery(steps=step_texts, window=window))
    assert result.levels() == _clickhouse_levels(evs, step_texts, window)


def test_clickhouse_oracle_sees_equal_times_and_multi_step_rows() -> None:
    """The oracle itself on a hand-checked case: a@0 b@5 c@5, window 5 -> level 3 (boundary
    inclusive, equal times in order); one 'a' for funnel a→a -> level 2 (a row fills both)."""
    evs = [oracle.Ev("p1", 0, "a", None, "m1"), oracle.Ev("p1", 5, "b", None, "m2"),
           oracle.Ev("p1", 5, "c", None, "m3"), oracle.Ev("p2", 0, "a", None, "m4")]
    assert _clickhouse_levels(evs, ["a", "b", "c"], 5) == {"p1": 3, "p2": 1}
    assert _clickhouse_levels(evs, ["a", "a"], 5) == {"p1": 2, "p2": 2}
    assert _clickhouse_levels(evs, ["a", "b", "c"], 4) == {"p1": 1, "p2": 1}


@st.composite
def oracle_cases(draw: st.DrawFn) -> dict[str, Any]:
    order = draw(st.sampled_from(["ordered", "strict", "unordered"]))
    step_texts = draw(steps)
    window = draw(st.integers(1, 20))
    step_window = None
    if order != "unordered" and draw(st.booleans()):
        step_window = draw(st.integers(1, window))
    exclusions: list[tuple[str, int, int]] = []
    if order == "ordered" and draw(st.booleans()):
        i = draw(st.integers(1, len(step_texts) - 1))
        j = draw(st.integers(i + 1, len(step_texts)))
        exclusions.append((draw(st.sampled_from(["e", "d", "channel=seo"])), i, j))
    return {"order": order, "steps": step_texts, "window": window, "step_window": step_window,
            "exclusions": exclusions, "people": draw(people)}


def _predicate(text: str) -> oracle.Pred:
    if text in STEPS:
        return STEPS[text][0]
    return lambda e: e.event == text


@settings(max_examples=35, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=oracle_cases())
def test_every_order_equals_brute_force_reference(case: dict[str, Any]) -> None:
    rows, evs = _events(case["people"])
    query = FunnelQuery(
        steps=case["steps"], order=case["order"], window=case["window"], step_window=case["step_window"],
        exclusions=[Exclusion.parse(f"{x}:{i}:{j}") for x, i, j in case["exclusions"]],
    )
    result = _compute(rows, query)
    preds = [_predicate(s) for s in case["steps"]]
    excl = [oracle.Excl(_predicate(x), i, j) for x, i, j in case["exclusions"]]
    per_person = []
    for person in sorted(case["people"]):
        mine = [e for e in evs if e.person == person]
        if case["order"] == "ordered":
            per_person.append(oracle.ordered(mine, preds, case["window"], case["step_window"], excl))
        elif case["order"] == "strict":
            per_person.append(oracle.strict(mine, preds, case["window"], case["step_window"]))
        else:
            per_person.append(oracle.unordered(mine, preds, case["window"]))
    expected = oracle.summarise(per_person, len(preds))
    for got, want in zip(result.steps, expected, strict=True):
        assert (got.persons, got.totals) == (want.persons, want.totals), got.step
        assert got.median_seconds_to_convert == pytest.approx(want.median), got.step
        assert got.p90_seconds_to_convert == pytest.approx(want.p90), got.step
        assert got.mean_seconds_to_convert == pytest.approx(want.mean), got.step
        assert got.median_seconds_from_previous == pytest.approx(want.median_prev), got.step
    levels = {p: r.level for p, r in zip(sorted(case["people"]), per_person, strict=True) if r.level}
    assert result.levels() == levels


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=people, step_texts=steps, window=st.integers(1, 20))
def test_plain_ordered_funnel_equals_the_general_pass(data: dict[str, Any], step_texts: list[str],
                                                      window: int) -> None:
    """A plain ordered funnel carries one row per attempt start between its passes; a per-step
    limit equal to the window changes no answer (``t_k - t_(k-1) <= t_k - t_1``) but takes the
    general pass that carries every successful touch: every number must agree, including
    totals and the time from the previous step."""
    rows, _ = _events(data)
    store = open_store(":memory:")
    store.append("events", events_table(rows))
    touches = Workspace(store).touches()
    query = FunnelQuery(steps=step_texts, window=window)
    general = funnel(touches, FunnelQuery(steps=step_texts, window=window, step_window=window))
    for plain in (funnel(touches, query), window_passes(touches, query)):
        _assert_same_funnel(plain, general)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=people, step_texts=steps, window=st.integers(1, 20), trend=st.sampled_from([None, "day"]))
def test_in_process_scan_equals_thewindow_passes(data: dict[str, Any], step_texts: list[str], window: int,
                                                   trend: str | None) -> None:
    """DuckDB computes a plain ordered funnel by walking each unit's sorted step touches in
    numpy; Spark by one window pass per step. Both on DuckDB must agree on every number, with
    a breakdown (summary over the scan's rows in the engine) and without (summary in numpy)."""
    rows, _ = _events(data)
    store = open_store(":memory:")
    store.append("events", events_table(rows))
    touches = Workspace(store).touches()
    for breakdown in (None, "channel"):
        query = FunnelQuery(steps=step_texts, window=window, breakdown=breakdown, trend_period=trend)
        passes = window_passes(touches, query)
        for scanned in (funnel(touches, query), _in_small_slices(touches, query)):
            _assert_same_funnel(scanned, passes)
            assert [(b.value, b.steps) for b in scanned.breakdown] == [(b.value, b.steps) for b in passes.breakdown]
            assert scanned.trend == passes.trend
            assert scanned.people(2, "dropped") == passes.people(2, "dropped")


def _in_small_slices(touches: Any, query: FunnelQuery) -> FunnelResult:
    """The scan with slices of two units, so slice edges fall between most units."""
    keep = _funnel_scan.SLICE_UNITS
    _funnel_scan.SLICE_UNITS = 2
    try:
        return funnel(touches, query)
    finally:
        _funnel_scan.SLICE_UNITS = keep


def window_passes(touches: Any, query: FunnelQuery) -> FunnelResult:
    """The funnel as the distributed engines compute it (no in-process scan)."""
    _Ordered.scan_in_process = False
    try:
        return funnel(touches, query)
    finally:
        _Ordered.scan_in_process = True


def _assert_same_funnel(plain: FunnelResult, general: FunnelResult) -> None:
    assert plain.levels() == general.levels()
    for got, want in zip(plain.steps, general.steps, strict=True):
        assert (got.persons, got.totals, got.drop_offs) == (want.persons, want.totals, want.drop_offs)
        assert got.median_seconds_to_convert == pytest.approx(want.median_seconds_to_convert)
        assert got.mean_seconds_to_convert == pytest.approx(want.mean_seconds_to_convert)
        assert got.p90_seconds_to_convert == pytest.approx(want.p90_seconds_to_convert)
        assert got.median_seconds_from_previous == pytest.approx(want.median_seconds_from_previous)
        assert got.histogram == want.histogram
