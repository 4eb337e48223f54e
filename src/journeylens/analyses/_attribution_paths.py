"""Fast aggregation of identical paths from flat touch arrays (numpy only; no journeylens imports).

A journey's path ``x_1 .. x_L`` (value codes ``0..n-1``) is the integer ``Σ_t (x_t + 1) · b^(t-1)``
with ``b = n + 1``: every digit is ``1..n``, so the integer identifies the path (its length
included) exactly as long as ``L · log2(b) < 63``. The keys come from one ``np.add.reduceat`` over
the touches, the distinct keys from a hash table (``pandas.factorize``, O(journeys)), and only
the distinct paths are decoded back into a matrix. Wider paths fall back to sorting the padded
rows as byte strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def path_keys(journey: np.ndarray, code: np.ndarray, n_values: int, n_journeys: int) -> np.ndarray | None:
    """Exact int64 key per journey (see the module docstring), or None when paths are too wide."""
    length = np.bincount(journey, minlength=n_journeys)
    width = int(length.max(initial=0))
    base = n_values + 1
    if width * math.log2(base) >= 63:
        return None
    starts = np.zeros(n_journeys, np.int64)
    np.cumsum(length[:-1], out=starts[1:])
    pos = np.arange(len(journey), dtype=np.int64) - np.repeat(starts, length)
    powers = np.cumprod(np.concatenate(([1], np.full(max(width - 1, 0), base, np.int64)))).astype(np.int64)
    digits = (code.astype(np.int64) + 1) * powers[pos]
    return np.add.reduceat(digits, starts) if len(digits) else np.zeros(0, np.int64)


def group_paths(journey: np.ndarray, code: np.ndarray, n_values: int,
                n_journeys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical paths grouped: (distinct path per journey, first journey of each distinct path,
    padded matrix of the distinct paths as codes + 1, 0 padding), distinct paths in order of
    first appearance. ``journey`` is non-decreasing 0..n_journeys-1, every journey non-empty."""
    dtype = np.uint16 if n_values < 65_535 else np.uint32
    key = path_keys(journey, code, n_values, n_journeys)
    if key is None:
        return _group_rows(journey, code, n_values, n_journeys, dtype)
    inverse, uniq = pd.factorize(key)
    inverse = np.asarray(inverse, np.int64)
    running = np.maximum.accumulate(inverse)  # factorize numbers groups by first appearance
    new = np.ones(len(inverse), bool)
    new[1:] = running[1:] > running[:-1]
    first = np.flatnonzero(new)
    base = n_values + 1
    rest = np.asarray(uniq, np.int64).copy()
    width = int(np.bincount(journey, minlength=n_journeys).max(initial=0))
    mat: np.ndarray = np.zeros((len(rest), max(width, 1)), dtype)
    for t in range(width):
        mat[:, t] = rest % base
        rest //= base
    return inverse, first, mat


def _group_rows(journey: np.ndarray, code: np.ndarray, n_values: int, n_journeys: int,
                dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    length = np.bincount(journey, minlength=n_journeys)
    width = int(length.max(initial=0))
    starts = np.zeros(n_journeys, np.int64)
    np.cumsum(length[:-1], out=starts[1:])
    pos = np.arange(len(journey), dtype=np.int64) - np.repeat(starts, length)
    mat: np.ndarray = np.zeros((n_journeys, max(width, 1)), dtype)
    mat[journey, pos] = code.astype(dtype) + 1
    rows = np.ascontiguousarray(mat).view(np.dtype((np.void, mat.dtype.itemsize * mat.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return np.asarray(inverse, np.int64).ravel(), np.asarray(first, np.int64), mat[first]


def journey_arrays(data: pa.Table, direct: Sequence[str]) -> dict[str, Any]:
    """The columns of ``journey_rows`` (ordered by u, k, us, mid; one NULL-``v`` marker row per
    conversion) as flat arrays for ``Journeys.from_arrays``, without Python strings per row.

    Returns ``journey`` (journey number per touch row), ``values`` (a ``pandas.Categorical``),
    ``converted``, ``revenue``, ``seconds_before``, ``direct`` per touch row, and
    ``lonely_conversions`` / ``lonely_revenue``: conversions whose journey has no touch."""
    n = data.num_rows
    u = pc.dictionary_encode(data.column("u").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    k = data.column("k").to_numpy().astype(np.int64)
    v = data.column("v")
    marker = v.is_null().to_numpy(zero_copy_only=False)
    new = np.ones(n, bool)
    if n:
        new[1:] = (u[1:] != u[:-1]) | (k[1:] != k[:-1])
    group = np.cumsum(new) - 1
    touches_in = np.bincount(group, weights=~marker, minlength=int(group[-1]) + 1 if n else 0)
    converted = data.column("converted").to_numpy(zero_copy_only=False).astype(bool)
    rev = np.nan_to_num(data.column("rev").to_numpy(zero_copy_only=False).astype(float))
    lonely = marker & (touches_in[group] == 0) & converted
    keep = ~marker
    values = pc.dictionary_encode(pc.filter(v, pa.array(keep)).combine_chunks())
    cat = pd.Categorical.from_codes(values.indices.to_numpy(zero_copy_only=False).astype(np.int32),
                                    categories=pd.Index(values.dictionary.to_pylist(), dtype=object))
    ch = pc.filter(data.column("ch"), pa.array(keep))
    is_direct = pc.fill_null(pc.is_in(ch, value_set=pa.array(list(direct), pa.string())), False)
    return {"journey": group[keep], "values": cat, "converted": converted[keep], "revenue": rev[keep],
            "seconds_before": data.column("sec").to_numpy(zero_copy_only=False).astype(float)[keep],
            "direct": is_direct.to_numpy(zero_copy_only=False).astype(bool),
            "lonely_conversions": int(lonely.sum()), "lonely_revenue": float(rev[lonely].sum())}
