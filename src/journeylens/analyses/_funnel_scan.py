"""The plain ordered funnel as one linear scan per unit, for in-process engines (DuckDB).

Same recurrence as :class:`journeylens.analyses.funnel._Ordered` — a step-``k`` touch
succeeds when the latest start among the unit's successful step-``k-1`` touches at or
before it is within the window — but evaluated the way ClickHouse ``windowFunnel`` does:
the engine gathers each unit's step touches into one list of ``micros * 64 + step`` (a
hash aggregate instead of one sort of every step touch per step); numpy sorts each slice
of lists by ``(time, step)`` and walks them. "Latest at or before" is a lookup by row
position: positions are ordered by time inside a unit and a unit's rows are contiguous,
so a latest row before the unit's first row means "none".

The lists are walked in slices of whole units on a few threads, so the scan's memory is
bounded by a slice, not by the number of touches. The result is the ``unit_steps`` table
the rest of the funnel reads (Arrow; an in-memory table on the same engine).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journeylens.analyses._relations import union_all
from journeylens.store.functions import unix_micros

STEP_BITS = 6
"""Packed value = ``micros << STEP_BITS | step``; steps are 1..32 (``MAX_STEPS``)."""
_STEP_MASK = (1 << STEP_BITS) - 1
IN_PROCESS_BACKENDS = frozenset({"duckdb"})
"""Engines that run in this process: fetching each unit's step times is cheap there. Spark
keeps the distributed window passes."""
_UNIT = "unit"
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def runs_in_process(t: ir.Table) -> bool:
    """Whether ``t`` lives on an engine in :data:`IN_PROCESS_BACKENDS`."""
    try:
        return t._find_backend().name in IN_PROCESS_BACKENDS
    except Exception:  # an unbound table (ibis.table) has no backend
        return False


def step_lists(base: ir.Table, steps: Sequence[ir.BooleanValue], *, disjoint: bool = False) -> ir.Table:
    """``unit, l``: each unit's step touches packed as ``micros << STEP_BITS | step`` (a touch
    matching several steps once per step), in no particular order (:func:`sorted_values`
    sorts them: faster in numpy per slice than the engine's ``list_sort``).

    ``disjoint`` promises that no touch matches two steps (e.g. steps naming different
    events): then one scan with a ``CASE`` replaces one filtered scan per step.
    """
    micros = unix_micros(base.ts) * (1 << STEP_BITS)
    if disjoint:
        u = base.select(_UNIT, v=ibis.cases(*((p, micros + k) for k, p in enumerate(steps, start=1))))
        u = u.filter(u.v.notnull())
    else:
        u = union_all([base.filter(p).select(_UNIT, v=micros + k) for k, p in enumerate(steps, start=1)])
    return u.group_by(_UNIT).aggregate(l=u.v.collect())


def sorted_values(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, values)`` of ``lists`` with every list sorted ascending (by time, then step).

    One ``np.sort`` of ``unit << b | (value - min)`` sorts all lists at once when the list
    index and the value range fit in 63 bits together (:func:`slice_units` sizes the slices
    so that they do); otherwise a two-key ``lexsort``.
    """
    offsets = lists.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    vals = lists.flatten().to_numpy()
    if len(vals) == 0:
        return offsets, vals
    unit_of = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    lo = int(vals.min())
    bits = (int(vals.max()) - lo).bit_length()
    if (len(offsets) - 2).bit_length() + bits <= 63:  # the largest list index and the span
        key = (unit_of << bits) | (vals - lo)
        key.sort()
        return offsets, (key & ((1 << bits) - 1)) + lo
    return offsets, vals[np.lexsort((vals, unit_of))]


def slice_units(lists: pa.ChunkedArray) -> int:
    """Units per slice: :data:`SLICE_UNITS`, fewer when the packed values span more than the
    bits the list index leaves for :func:`sorted_values`' single sort (data over ~1 year)."""
    span = pc.min_max(pc.list_flatten(lists)).as_py()
    if span["min"] is None:
        return SLICE_UNITS
    bits = (span["max"] - span["min"]).bit_length()
    return max(1, min(SLICE_UNITS, 1 << max(0, 63 - bits)))


def scan(lists: pa.ListArray, n_steps: int, window_us: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray | None, np.ndarray]]:
    """Walk one batch of unit lists (sorted here). Returns per step ``k`` (1-based, in order, up to
    the last step anyone reached): ``(unit index, reached, start, prev, completions)`` of each
    unit's first completion (micros; ``prev`` is None for step 1).

    Pass ``k`` looks up, for every step-``k`` row, the latest successful step-``k-1`` row
    before it (a prefix count over the batch); that row's start is the latest start the
    unit has reached step ``k-1`` with, because starts never decrease along a unit's
    successful rows. The row succeeds when that start lies in the same unit and within
    ``window_us`` of it.
    """
    offsets, vals = sorted_values(lists)
    ts = vals >> STEP_BITS
    step = (vals & _STEP_MASK).astype(np.int8)
    size = len(vals)
    unit_of = np.repeat(np.arange(len(offsets) - 1, dtype=np.int32), np.diff(offsets))

    out: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]] = []
    rows = np.flatnonzero(step == 1)  # the successful rows of the current step, ascending
    starts = rows  # row of each one's attempt start
    latest = rows  # the step-k-1 success each one follows (step 1: itself)
    units = unit_of[rows]
    for k in range(1, n_steps + 1):
        if k > 1:
            cand = np.flatnonzero(step == k)
            mark = np.zeros(size, dtype=np.int32)
            mark[rows] = 1
            j = np.cumsum(mark, dtype=np.int32)[cand] - 1  # index into rows of the latest success before
            ok = j >= 0
            cand, j = cand[ok], j[ok]
            s = starts[j]
            cand_units = unit_of[cand]
            ok = (s >= offsets[cand_units]) & (ts[cand] - ts[s] <= window_us)
            latest = rows[j[ok]]
            rows, starts, units = cand[ok], s[ok], cand_units[ok]
        if len(rows) == 0:
            break
        firsts = np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1])))
        completions = np.diff(np.append(firsts, len(rows)))
        out.append((units[firsts], ts[rows[firsts]], ts[starts[firsts]],
                    None if k == 1 else ts[latest[firsts]], completions))
    return out


def unit_steps(base: ir.Table, steps: Sequence[ir.BooleanValue], window_seconds: int, *,
               disjoint: bool = False) -> pa.Table:
    """``unit, step, reached, start, prev, completions`` (the contract of
    ``_Variant.unit_steps``) of the plain ordered funnel, computed by :func:`scan`, as Arrow
    (times as UTC microsecond timestamps).

    The engine's result (one list per unit) is fetched whole — its parallel export
    is faster than streaming — and walked in slices of up to :data:`SLICE_UNITS` whole units on a
    few threads (numpy and Arrow release the GIL). Small slices keep the scan's arrays in
    the CPU cache and below the allocator's ``mmap`` threshold: twice as fast as walking
    a million units at once, with no fresh pages to fault in.
    """
    lists = step_lists(base, steps, disjoint=disjoint).to_pyarrow()
    workers = max(1, min(4, os.cpu_count() or 1))
    per_slice = slice_units(lists.column("l"))
    slices = [lists.slice(i, per_slice) for i in range(0, lists.num_rows, per_slice)]
    window_us = window_seconds * 1_000_000
    by_step: list[list[_Completions]] = [[] for _ in steps]
    with ThreadPoolExecutor(workers) as pool:
        for found in pool.map(lambda t: _walk(t, len(steps), window_us), slices):
            for k, rows in enumerate(found):
                by_step[k].append(rows)
    # step-major: the rows of step 1, then of step 2, ... (the summary slices them by step)
    parts = [rows for step_rows in by_step for rows in step_rows]
    if not parts:
        return _EMPTY.empty_table()
    prev = np.concatenate([r.prev for r in parts])
    return pa.table({
        _UNIT: pa.chunked_array([c for r in parts for c in r.units.chunks], pa.string()),
        "step": np.concatenate([np.full(len(r.reached), r.step, dtype=np.int64) for r in parts]),
        "reached": pa.array(np.concatenate([r.reached for r in parts]), _TIMESTAMP),
        "start": pa.array(np.concatenate([r.start for r in parts]), _TIMESTAMP),
        "prev": pa.array(prev, _TIMESTAMP, mask=prev == _NO_TIME),
        "completions": np.concatenate([r.completions for r in parts]),
    }, schema=_EMPTY)


SLICE_UNITS = 8192
"""Units per slice of the scan (about 100k step touches on the shop demo)."""
_NO_TIME = np.iinfo(np.int64).min
_EMPTY = pa.schema([(_UNIT, pa.string()), ("step", pa.int64()), ("reached", _TIMESTAMP), ("start", _TIMESTAMP),
                    ("prev", _TIMESTAMP), ("completions", pa.int64())])


@dataclass(frozen=True)
class _Completions:
    """The first completion of step ``step`` of each unit of one slice that completed it."""

    step: int
    units: pa.ChunkedArray
    reached: np.ndarray
    start: np.ndarray
    prev: np.ndarray
    """``_NO_TIME`` for step 1."""
    completions: np.ndarray


def _walk(lists: pa.Table, n_steps: int, window_us: int) -> list[_Completions]:
    """:func:`scan` of one slice of ``unit, l`` rows, per step reached in it."""
    names = lists.column(_UNIT)
    return [_Completions(k, names.take(idx), reached, start,
                         np.full(len(idx), _NO_TIME) if prev is None else prev, completions)
            for k, (idx, reached, start, prev, completions)
            in enumerate(scan(lists.column("l").combine_chunks(), n_steps, window_us), start=1)]


def as_table(scanned: pa.Table, ts_type: dt.DataType) -> ir.Table:
    """:func:`unit_steps`' result as an in-memory table of the engine, times cast to ``ts_type``."""
    t = ibis.memtable(scanned)
    return t.select(_UNIT, "step", reached=t.reached.cast(ts_type), start=t.start.cast(ts_type),
                    prev=t.prev.cast(ts_type), completions="completions")


def summary_records(scanned: pa.Table, edges: Sequence[int]) -> list[dict[str, Any]]:
    """The whole-population rows of ``funnel._summary`` (``kind`` stats and hist, ``group``
    NULL) computed from :func:`unit_steps`' result, with the same definitions: per step the
    units that reached it, their completions, and seconds from the counted attempt's start
    (``median``/``p90`` interpolated as ``quantile_cont``, ``mean``) and from its previous
    step (``median_prev``) for steps after the first; histogram bin ``i`` holds
    ``edges[i] <= seconds < edges[i+1]`` (the last bin everything from its lower edge)."""
    step = scanned.column("step").to_numpy()  # step-major (see unit_steps)
    micros = {c: scanned.column(c).cast(pa.int64()).to_numpy(zero_copy_only=False) for c in ("reached", "start")}
    prev = scanned.column("prev").cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    completions = scanned.column("completions").to_numpy()
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    none: dict[str, Any] = {"bin": None, "period": None, "totals": None, "median": None, "p90": None,
                            "mean": None, "median_prev": None, "rank": None, "group": None}
    records: list[dict[str, Any]] = []
    bounds = np.searchsorted(step, np.arange(1, int(step.max(initial=0)) + 2)).tolist()
    for k, (lo, hi) in enumerate(itertools.pairwise(bounds), start=1):
        row = {**none, "kind": "stats", "step": k, "persons": hi - lo, "totals": int(completions[lo:hi].sum())}
        if k > 1:
            reached = micros["reached"][lo:hi]
            seconds = (reached - micros["start"][lo:hi]) / 1e6
            from_prev = (reached - prev[lo:hi]) / 1e6
            median, p90 = np.quantile(seconds, [0.5, 0.9]).tolist()
            row |= {"median": median, "p90": p90, "mean": float(seconds.mean()),
                    "median_prev": float(np.quantile(from_prev, 0.5))}
            bins = np.searchsorted(inner, seconds, side="right")
            counts = np.bincount(bins, minlength=len(inner) + 1)
            records += [{**none, "kind": "hist", "step": k, "bin": i, "persons": int(c)}
                        for i, c in enumerate(counts.tolist()) if c]
        records.append(row)
    return records
