"""Vectorised column conversions used by the validator.

Every function takes one Arrow array (any source type) and returns the
canonical Arrow array plus, where parsing can fail, a numpy mask of the rows
whose value was present but could not be converted. Nothing here loops over
rows in Python, except :func:`decode_utf8` for the rare column that holds
invalid UTF-8.

Parsing that Arrow cannot do without failing on the first bad value
(timestamps in text, numbers in text, dates) is handed to an in-memory DuckDB
connection (:class:`Duck`), whose ``TRY_CAST`` turns bad values into NULL.
The connection's ``TimeZone`` is the import's time zone, so naive
timestamps are read in that zone while ``Z``/offset timestamps keep theirs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

Mask = npt.NDArray[np.bool_]

TS_TYPE = pa.timestamp("us", tz="UTC")

_counter = itertools.count()
_SCAN_ROWS = 122_880


class Duck:
    """A private in-memory DuckDB connection for per-column SQL over Arrow arrays."""

    def __init__(self, tz: str) -> None:
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET TimeZone = '{tz}'")

    def select(self, columns: dict[str, Any], exprs: Sequence[str]) -> list[pa.Array]:
        """Evaluate SQL ``exprs`` over a table of ``columns``; one array per expression.

        Columns are referenced as ``c0, c1, ...`` in the order given; the
        result keeps the row order.
        """
        arrays = list(columns.values())
        table = pa.table({f"c{i}": a for i, a in enumerate(arrays)})
        if table.num_rows > 2 * _SCAN_ROWS:  # several batches let DuckDB scan on all threads
            table = pa.Table.from_batches(table.to_batches(max_chunksize=_SCAN_ROWS), schema=table.schema)
        view = f"_jl_in_{next(_counter)}"
        self.con.register(view, table)
        try:
            sql = "SELECT " + ", ".join(f"{e} AS r{i}" for i, e in enumerate(exprs)) + f" FROM {view}"
            out = self.con.execute(sql).to_arrow_table()
        finally:
            self.con.unregister(view)
        return [_contiguous(out.column(i)) for i in range(len(exprs))]

    def close(self) -> None:
        self.con.close()


def sql_str(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _contiguous(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    return col


def to_numpy_mask(arr: Any) -> Mask:
    """A boolean Arrow array (nulls count as False) as a numpy mask."""
    arr = _contiguous(arr)
    if arr.null_count:
        arr = arr.fill_null(False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.bool_)


def valid_mask(arr: pa.Array) -> Mask:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    return to_numpy_mask(arr.is_valid())


# ---------------------------------------------------------------- strings
def is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _needs_cleaning(arr: pa.Array) -> bool:
    """True when some value may be empty or start/end with whitespace.

    Looks only at the first and last byte of each value, straight from the
    Arrow buffers, so a clean column costs a few milliseconds per million
    rows. Bytes of NULL slots and non-ASCII edges may give false positives,
    which only cost an unnecessary trim.
    """
    n = len(arr)
    if n == arr.null_count:
        return False
    large = pa.types.is_large_string(arr.type)
    width = 8 if large else 4
    bufs = arr.buffers()
    offsets: npt.NDArray[Any] = np.frombuffer(bufs[1], dtype=np.int64 if large else np.int32,
                                              count=n + 1, offset=arr.offset * width)
    starts, ends = offsets[:-1], offsets[1:]
    empty = ends == starts
    zero = int(np.count_nonzero(empty))
    if zero > arr.null_count:
        return True  # more empty slots than NULLs: some value is ""
    if zero and arr.null_count and bool((empty & valid_mask(arr)).any()):
        return True
    if bufs[2] is None or bufs[2].size == 0:
        return False
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    pos = offsets.astype(np.intp)
    first = data[pos[:-1]] if pos[-2] < len(data) else data.take(pos[:-1], mode="clip")
    last = data[pos[1:] - 1]  # -1 (an empty first value) wraps around: at worst a false positive
    # bytes 0x00-0x20 and 0x7F-0xFF wrap to >= 0x5E after subtracting 0x21
    edge = np.uint8(0x5E)
    return bool(((first - np.uint8(0x21)) >= edge).any() or ((last - np.uint8(0x21)) >= edge).any())


def clean_text(arr: pa.Array) -> pa.Array:
    """Strip Unicode whitespace; empty strings become NULL. Result type: string."""
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if not _needs_cleaning(arr):
        return arr.cast(pa.string()) if pa.types.is_large_string(arr.type) else arr
    trimmed = pc.utf8_trim_whitespace(arr)
    empty = pc.equal(pc.binary_length(trimmed), 0)
    out = pc.if_else(empty, pa.scalar(None, trimmed.type), trimmed)
    return _contiguous(out).cast(pa.string())


def decode_utf8(arr: pa.Array) -> tuple[pa.Array, Mask | None]:
    """Binary → string. Rows with invalid UTF-8 are decoded with U+FFFD and flagged."""
    try:
        return arr.cast(pa.string()), None
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    values: list[str | None] = []
    bad = np.zeros(len(arr), dtype=np.bool_)
    for i, b in enumerate(arr.to_pylist()):
        if b is None:
            values.append(None)
            continue
        try:
            values.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(b.decode("utf-8", errors="replace"))
            bad[i] = True
    return pa.array(values, pa.string()), bad


def to_text(arr: pa.Array, duck: Duck) -> pa.Array:
    """Any column → cleaned string column (numbers printed, nested values as JSON)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if is_text(t):
        return clean_text(arr)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_floating(t):
        vals = arr.cast(pa.float64())
        finite = pc.is_finite(vals)
        integral = pc.and_(finite, pc.equal(pc.floor(vals), vals))
        if bool(pc.all(integral, skip_nulls=True).as_py() or False) and len(arr) > arr.null_count:
            mx = pc.max(pc.abs(vals)).as_py()
            if mx is not None and mx < 2**53:
                return vals.cast(pa.int64()).cast(pa.string())  # 123.0 (pandas ids) → "123"
        return clean_text(vals.cast(pa.string()))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        text, _ = decode_utf8(arr.cast(pa.binary()))
        return clean_text(text)
    if pa.types.is_nested(t):
        (out,) = duck.select({"v": arr}, ["CAST(to_json(c0) AS VARCHAR)"])
        return out.cast(pa.string())
    try:
        return clean_text(arr.cast(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        (out,) = duck.select({"v": arr}, ["CAST(c0 AS VARCHAR)"])
        return clean_text(out)


# ---------------------------------------------------------------- numbers
def _present_but_null(src: pa.Array, out: pa.Array) -> Mask | None:
    """Rows where ``src`` had a value but ``out`` is NULL (a failed conversion)."""
    if out.null_count == src.null_count:
        return None
    mask = to_numpy_mask(pc.and_(src.is_valid(), out.is_null()))
    return mask if bool(mask.any()) else None


def _or(a: Mask | None, b: Mask | None) -> Mask | None:
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def to_float(arr: pa.Array, duck: Duck) -> tuple[pa.Array, Mask | None]:
    """Any column → float64. Text is parsed; NaN, ±inf and non-numbers are flagged."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return to_float(arr.dictionary_decode(), duck)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.float64()), None
    if pa.types.is_boolean(t) or not (pa.types.is_integer(t) or pa.types.is_floating(t)
                                      or pa.types.is_decimal(t) or is_text(t)):
        out = pa.nulls(len(arr), pa.float64())
        return out, _present_but_null(arr, out)
    if is_text(t):
        text = clean_text(arr)
        (vals,) = duck.select({"v": text}, ["TRY_CAST(c0 AS DOUBLE)"])
        vals = vals.cast(pa.float64())
        bad = _present_but_null(text, vals)
    else:
        vals = arr.cast(pa.float64())
        bad = None
    finite = pc.is_finite(vals)
    if not bool(pc.all(finite, skip_nulls=True).as_py() in (True, None)):
        nonfinite = to_numpy_mask(pc.invert(finite))
        bad = _or(bad, nonfinite)
        vals = pc.if_else(finite, vals, pa.scalar(None, pa.float64()))
    return _contiguous(vals), bad


def to_int(arr: pa.Array, duck: Duck) -> tuple[pa.Array, Mask | None, Mask | None]:
    """Any column → int64. Returns (values, not-numeric mask, not-an-integer mask)."""
    t = arr.type
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            too_big = pc.greater(arr, 2**63 - 1)
            if bool(pc.any(too_big).as_py()):
                big = to_numpy_mask(too_big)
                arr = pc.if_else(too_big, pa.scalar(None, t), arr)
                return _contiguous(arr).cast(pa.int64()), None, big
        return arr.cast(pa.int64()), None, None
    vals, bad = to_float(arr, duck)
    integral = pc.and_(pc.equal(pc.floor(vals), vals), pc.less(pc.abs(vals), 2.0**63))
    not_int: Mask | None = None
    if not bool(pc.all(integral, skip_nulls=True).as_py() in (True, None)):
        not_int = to_numpy_mask(pc.invert(integral))
        vals = pc.if_else(integral, vals, pa.scalar(None, pa.float64()))
    return _contiguous(vals).cast(pa.int64()), bad, not_int


# ---------------------------------------------------------------- timestamps
_TS_FALLBACK = (
    r"TRY_CAST(regexp_replace(replace(c0, ',', '.'), "
    r"'^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2})([Zz]|[+-]\d.*)?$', '\1:00\2') AS TIMESTAMPTZ)"
)
_TS_DMY = (
    "CAST(coalesce(try_strptime(c0, '%d.%m.%Y %H:%M:%S'), try_strptime(c0, '%d.%m.%Y %H:%M'), "
    "try_strptime(c0, '%d.%m.%Y')) AS TIMESTAMPTZ)"
)
TS_TEXT_SQL = [  # 'infinity' & co. parse in DuckDB but are no time: NULL
    f"CASE WHEN c0 ILIKE '%inf%' THEN NULL ELSE coalesce(TRY_CAST(c0 AS TIMESTAMPTZ), {_TS_FALLBACK}, "
    f"{_TS_DMY}) END",
    "TRY_CAST(c0 AS DOUBLE)",
]


def epoch_to_timestamp(arr: pa.Array) -> pa.Array:
    """Epoch numbers → UTC timestamps.

    Seconds; milliseconds when |x| > 1e11; microseconds when > 1e14;
    nanoseconds when > 1e17. Non-finite values become NULL.
    """
    if len(arr) == 0:
        return pa.array([], TS_TYPE)
    valid = valid_mask(arr)
    if pa.types.is_integer(arr.type) and not pa.types.is_uint64(arr.type):
        x = np.asarray(arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        ax = np.abs(x)  # no overflow below: every branch stays within ±1e17 or divides
        us = np.where(ax > 10**17, x // 1000,
                      np.where(ax > 10**14, x,
                               np.where(ax > 10**11, x * 1000, x * 1_000_000)))
        ok = valid & (ax >= 0)  # abs(int64 min) wraps negative
    else:
        xf = np.asarray(arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False),
                        dtype=np.float64)
        finite = np.isfinite(xf)
        xf = np.where(finite, xf, 0.0)
        ax = np.abs(xf)
        scale = np.where(ax > 1e17, 1e-3, np.where(ax > 1e14, 1.0, np.where(ax > 1e11, 1e3, 1e6)))
        scaled = np.round(xf * scale)
        ok = valid & finite & (np.abs(scaled) < 9.2e18)
        us = np.where(ok, scaled, 0.0).astype(np.int64)
    mask = None if bool(ok.all()) else ~ok
    return pa.array(np.where(ok, us, 0), type=pa.int64(), mask=mask).cast(TS_TYPE)


def to_timestamp(arr: pa.Array, duck: Duck, tz: str) -> tuple[pa.Array, Mask | None]:
    """Any column → timestamp[us, UTC]; returns (values, cannot-parse mask)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return to_timestamp(arr.dictionary_decode(), duck, tz)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), TS_TYPE), None
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return arr.cast(TS_TYPE, safe=False), None
        if tz == "UTC":
            return arr.cast(pa.timestamp("us"), safe=False).cast(TS_TYPE), None
        (out,) = duck.select({"v": arr}, ["CAST(c0 AS TIMESTAMPTZ)"])
        return out.cast(TS_TYPE), None
    if pa.types.is_date(t):
        naive = arr.cast(pa.timestamp("us"))
        return to_timestamp(naive, duck, tz)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out = epoch_to_timestamp(arr)
        return out, _present_but_null(arr, out)
    if is_text(t):
        text = clean_text(arr)
        if text.null_count == len(text):
            return pa.nulls(len(arr), TS_TYPE), None
        parsed, num = duck.select({"v": text}, TS_TEXT_SQL)
        parsed = parsed.cast(TS_TYPE)
        if num.null_count < len(num):
            epoch = epoch_to_timestamp(num.cast(pa.float64()))
            parsed = _contiguous(pc.coalesce(parsed, epoch))
        return parsed, _present_but_null(text, parsed)
    out = pa.nulls(len(arr), TS_TYPE)
    return out, _present_but_null(arr, out)


DATE_TEXT_SQL = (
    "CASE WHEN c0 ILIKE '%inf%' THEN NULL ELSE coalesce(TRY_CAST(c0 AS DATE), "
    "CAST(TRY_CAST(c0 AS TIMESTAMP) AS DATE), CAST(try_strptime(c0, '%d.%m.%Y') AS DATE)) END"
)


def to_date(arr: pa.Array, duck: Duck, tz: str) -> tuple[pa.Array, Mask | None]:
    """Any column → date32; timestamps with a zone give the date in ``tz``."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return to_date(arr.dictionary_decode(), duck, tz)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.date32()), None
    if pa.types.is_date(t):
        return arr.cast(pa.date32()), None
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return arr.cast(pa.date32()), None
        (out,) = duck.select({"v": arr}, ["CAST(c0 AS DATE)"])  # in the session time zone
        return out.cast(pa.date32()), None
    if is_text(t):
        text = clean_text(arr)
        (out,) = duck.select({"v": text}, [DATE_TEXT_SQL])
        out = out.cast(pa.date32())
        return out, _present_but_null(text, out)
    out = pa.nulls(len(arr), pa.date32())
    return out, _present_but_null(arr, out)


# ---------------------------------------------------------------- JSON objects
def json_object_check(text: pa.Array, duck: Duck) -> Mask | None:
    """Rows whose (cleaned) text is not a JSON object; None when all are fine."""
    if text.null_count == len(text):
        return None
    (ok,) = duck.select({"v": text}, ["json_valid(c0) AND starts_with(c0, '{')"])
    if ok.null_count == text.null_count and bool(pc.all(ok, skip_nulls=True).as_py() in (True, None)):
        return None
    bad = to_numpy_mask(pc.and_(text.is_valid(), pc.invert(ok.fill_null(False))))
    return bad if bool(bad.any()) else None


def merge_objects(base: pa.Array, over: pa.Array, duck: Duck) -> pa.Array:
    """Merge JSON-object text ``over`` onto ``base`` (keys of ``over`` win).

    Where ``over`` is not a JSON object it is kept as is (and is rejected
    later); where either side is NULL the other one is taken.
    """
    (out,) = duck.select(
        {"b": base, "o": over},
        ["CASE WHEN c1 IS NULL THEN c0 WHEN c0 IS NULL THEN c1 "
         "WHEN json_valid(c1) AND starts_with(c1, '{') "
         "THEN CAST(json_merge_patch(c0, c1) AS VARCHAR) ELSE c1 END"],
    )
    return out.cast(pa.string())


def fold_columns(columns: dict[str, pa.Array], duck: Duck) -> pa.Array:
    """One JSON object per row from ``columns`` (name → values); NULL values are left out.

    Text columns become JSON strings, numbers and booleans stay typed,
    nested values stay nested. A row without any value gives NULL.
    """
    args: list[str] = []
    inputs: dict[str, Any] = {}
    for i, (name, arr) in enumerate(columns.items()):
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = arr.dictionary_decode()
            t = arr.type
        if is_text(t):
            arr = clean_text(arr)
        elif pa.types.is_floating(t):
            arr = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, t))
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            arr, _ = decode_utf8(arr.cast(pa.binary()))
        elif pa.types.is_null(t):
            continue
        inputs[f"c{i}"] = arr
        args.append(f"{sql_str(name)}, c{len(inputs) - 1}")
    if not args:
        return pa.nulls(len(next(iter(columns.values()))) if columns else 0, pa.string())
    expr = ("NULLIF(CAST(json_merge_patch('{}', json_object(" + ", ".join(args)
            + ")) AS VARCHAR), '{}')")
    (out,) = duck.select(inputs, [expr])
    return out.cast(pa.string())


# ---------------------------------------------------------------- hashing
def hash_parts(parts: Sequence[pa.Array]) -> list[pa.Array]:
    """Hash inputs as text: timestamps as epoch µs, floats by their bits, dates as days."""
    out: list[pa.Array] = []
    for arr in parts:
        t = arr.type
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.int64())
        elif pa.types.is_date(t):
            arr = arr.cast(pa.int32())
        elif pa.types.is_floating(t):
            valid = valid_mask(arr)
            bits = np.asarray(arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False),
                              dtype=np.float64).view(np.int64)
            arr = pa.array(bits, pa.int64(), mask=~valid if not bool(valid.all()) else None)
        out.append(arr.cast(pa.string()))
    return out


def md5_ids(prefix: Sequence[str], parts: Sequence[pa.Array], duck: Duck) -> pa.Array:
    """md5 hex of the prefix strings and the parts joined by U+001F (NULL as U+001E)."""
    cols = {f"p{i}": a for i, a in enumerate(hash_parts(parts))}
    pieces = [sql_str(p) for p in prefix] + [f"coalesce(c{i}, chr(30))" for i in range(len(cols))]
    (out,) = duck.select(cols, ["md5(concat_ws(chr(31), " + ", ".join(pieces) + "))"])
    return out.cast(pa.string())
