"""The in-process funnel scan's building blocks: sorting each unit's packed step touches and
sizing the slices so one ``np.sort`` does it (the funnel-level equality with the window
passes is in test_funnel_oracles.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from journeylens.analyses import _funnel_scan
from journeylens.analyses.funnel import FunnelQuery, funnel
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.analyses.test_funnel_oracles import window_passes
from tests.helpers import events_table


def _lists(rng: np.random.Generator, units: int, low: int, high: int) -> pa.ListArray:
    sizes = rng.integers(1, 12, units)
    values = rng.integers(low, high, int(sizes.sum()), dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _expected(lists: pa.ListArray) -> list[list[int]]:
    return [sorted(v) for v in lists.to_pylist()]


def test_sorted_values_sorts_every_list_by_one_sort_or_lexsort() -> None:
    rng = np.random.default_rng(7)
    narrow = _lists(rng, 500, 1_700_000_000_000_000 * 64, 1_700_100_000_000_000 * 64)  # fits: one sort
    wide = _lists(rng, 500, -(2**62), 2**62)  # 63 bits of span: no room for the list index -> lexsort
    for lists in (narrow, wide):
        offsets, values = _funnel_scan.sorted_values(lists)
        got = [values[a:b].tolist() for a, b in itertools.pairwise(offsets)]
        assert got == _expected(lists)


def test_slices_shrink_when_the_data_spans_decades() -> None:
    def lists(span_us: int) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array([[0, span_us * 64]], pa.list_(pa.int64()))])

    assert _funnel_scan.slice_units(lists(180 * 86_400 * 10**6)) == _funnel_scan.SLICE_UNITS  # half a year
    forty_years = _funnel_scan.slice_units(lists(40 * 365 * 86_400 * 10**6))
    bits = (40 * 365 * 86_400 * 10**6 * 64).bit_length()
    assert forty_years < _funnel_scan.SLICE_UNITS and (forty_years - 1).bit_length() + bits <= 63


def test_a_funnel_over_decades_equals_the_window_passes() -> None:
    """Touches from 1950 to 2010 (negative epoch times before 1970): the scan's single sort
    takes small slices, and every number equals the distributed engines' computation."""
    start = datetime(1950, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(3)
    rows = []
    for person in range(300):
        first = start + timedelta(days=int(rng.integers(0, 60 * 365)))
        for i in range(int(rng.integers(1, 8))):
            ts = first + timedelta(seconds=int(rng.integers(0, 40 * 86_400)))
            rows.append({"user_id": f"p{person}", "event": str(rng.choice(["visit", "view", "buy"])), "ts": ts,
                         "message_id": f"m{person}-{i}"})
    store = open_store(":memory:")
    store.append("events", events_table(rows))
    touches = Workspace(store).touches()
    q = FunnelQuery(steps=["visit", "view", "buy"], window="4w")
    scanned, passes = funnel(touches, q), window_passes(touches, q)
    assert scanned.levels() == passes.levels() and scanned.steps == passes.steps
    assert scanned.steps[1].persons > 0
