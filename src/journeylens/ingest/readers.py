"""File readers: bytes → chunks of source rows mapped onto canonical column names.

Each reader yields :class:`RawChunk` objects of at most ``chunk_rows`` source
rows (a Segment batch line may add a few more). Memory stays bounded by the
chunk size: CSV and Parquet are streamed by Arrow, JSON lines are read line
by line.

Line numbers (``RawChunk.lines``, reported in quarantine):

* CSV/TSV: data row index + 2 (the header is line 1). A quoted value that
  spans several physical lines counts as one row, so later rows report a
  smaller number than an editor would show. Blank rows are skipped but
  counted.
* JSON lines: the physical line number; every message of a Segment batch line
  carries that line's number.
* Parquet: the 1-based row number.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from journeylens.errors import InputFileError
from journeylens.ingest import segment
from journeylens.ingest.convert import Duck, Mask, decode_utf8, fold_columns
from journeylens.ingest.mapping import FOLD, IGNORE, MAP, UNKNOWN, Mapper

RAW_LIMIT = 10 * 1024
"""Quarantine ``raw`` text is capped at this many UTF-8 bytes."""


@dataclass
class Rejected:
    """A source row that never became a row (bad JSON line, wrong number of CSV fields)."""

    line: int | None
    field: str | None
    reason: str
    raw: str | None


@dataclass
class RawChunk:
    """Source rows of one chunk, with their values under canonical column names."""

    n: int
    columns: dict[str, pa.Array]
    folded: pa.Array | None
    lines: npt.NDArray[np.int64]
    bytes_done: int
    raw: Callable[[Sequence[int]], list[str]]
    row_errors: list[tuple[Mask, str | None, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def cap(text: str) -> str:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= RAW_LIMIT:
        return text
    return data[:RAW_LIMIT].decode("utf-8", errors="ignore")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def row_json(row: dict[str, Any]) -> str:
    return json.dumps(_jsonable(row), ensure_ascii=False, separators=(",", ":"))


def _table_raw(table: pa.Table) -> Callable[[Sequence[int]], list[str]]:
    def raw(indices: Sequence[int]) -> list[str]:
        if not len(indices):
            return []
        rows = table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()
        return [row_json(r) for r in rows]
    return raw


def map_table(table: pa.Table, mapper: Mapper, duck: Duck, lines: npt.NDArray[np.int64],
              bytes_done: int) -> RawChunk:
    """Rename the columns of a source table to canonical names; fold the unknown ones."""
    columns: dict[str, pa.Array] = {}
    fold: dict[str, pa.Array] = {}
    for i, name in enumerate(table.column_names):
        res = mapper.resolve(name)
        col = table.column(i)
        arr = col.chunk(0) if col.num_chunks == 1 else (
            col.combine_chunks() if col.num_chunks else pa.array([], col.type))
        if res.kind == MAP and res.target:
            columns[res.target] = arr
        elif res.kind == FOLD:
            fold[name] = arr
    folded = fold_columns(fold, duck) if fold else None
    return RawChunk(n=table.num_rows, columns=columns, folded=folded, lines=lines,
                    bytes_done=bytes_done, raw=_table_raw(table))


# ====================================================================== opening files
class _Counting(io.RawIOBase):
    """Wraps a binary file; remembers how many bytes were read (for progress)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        self.done += n or 0
        return n or 0

    def close(self) -> None:
        self.f.close()
        super().close()


def open_binary(path: str, gz: bool) -> tuple[io.BufferedIOBase, _Counting]:
    """The (decompressed) byte stream of ``path`` and the counter of file bytes read."""
    counting = _Counting(open(path, "rb", buffering=0))  # noqa: SIM115 - closed by the caller
    buffered = io.BufferedReader(counting, buffer_size=1 << 20)
    if gz:
        return gzip.GzipFile(fileobj=buffered, mode="rb"), counting
    return buffered, counting


def read_head(path: str, gz: bool, size: int = 1 << 16) -> bytes:
    stream, counting = open_binary(path, gz)
    try:
        return stream.read(size)
    finally:
        stream.close()
        counting.close()


# ====================================================================== CSV
@dataclass
class CsvLayout:
    delimiter: str
    names: list[str]


def sniff_csv(path: str, gz: bool, tsv: bool) -> CsvLayout:
    """Delimiter and (stripped) header names, read with Python's csv module."""
    head = read_head(path, gz, 1 << 20)
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise InputFileError("the file has no header line", path=path,
                             hint="the first line must name the columns")
    first = text.splitlines()[0] if text.splitlines() else ""
    if tsv:
        delimiter = "\t"
    elif "," in first:
        delimiter = ","
    elif ";" in first:
        delimiter = ";"
    elif "\t" in first:
        delimiter = "\t"
    else:
        delimiter = ","
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    names = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputFileError(f"duplicate column name '{dupes[0]}' in the header line", path=path,
                             line=1, field=dupes[0], hint="every column needs its own name")
    return CsvLayout(delimiter, names)


class CsvReader:
    """Streams a CSV/TSV file with Arrow, every column read as text."""

    def __init__(self, path: str, gz: bool, layout: CsvLayout, mapper: Mapper, duck: Duck,
                 chunk_rows: int) -> None:
        self.path, self.gz, self.layout = path, gz, layout
        self.mapper, self.duck, self.chunk_rows = mapper, duck, chunk_rows

    def chunks(self) -> Iterator[RawChunk]:
        names = self.layout.names
        bad_rows: list[tuple[int | None, str]] = []

        def on_invalid(row: Any) -> str:
            bad_rows.append((row.number, row.text))
            return "skip"

        stream, counting = open_binary(self.path, self.gz)
        try:
            reader = pv.open_csv(
                stream,
                read_options=pv.ReadOptions(use_threads=False, block_size=1 << 20, skip_rows=1,
                                            column_names=names),
                parse_options=pv.ParseOptions(delimiter=self.layout.delimiter, newlines_in_values=True,
                                              ignore_empty_lines=False, invalid_row_handler=on_invalid),
                convert_options=pv.ConvertOptions(column_types={n: pa.binary() for n in names},
                                                  strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
            )
            pending: list[pa.RecordBatch] = []
            pending_lines: list[npt.NDArray[np.int64]] = []
            rows = 0
            next_line = 2
            skipped: list[int] = []  # line numbers of rows Arrow skipped, not yet passed
            rejected: list[Rejected] = []
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    batch = None
                for number, text in bad_rows:
                    if number is not None:
                        skipped.append(number)
                    rejected.append(Rejected(number, None, "wrong number of columns", cap(json.dumps(text))))
                bad_rows.clear()
                skipped.sort()
                if batch is not None and batch.num_rows:
                    lines = next_line + np.arange(batch.num_rows, dtype=np.int64)
                    for s in skipped:
                        lines[lines >= s] += 1
                    next_line = int(lines[-1]) + 1
                    skipped = [s for s in skipped if s >= next_line]
                    pending.append(batch)
                    pending_lines.append(lines)
                    rows += batch.num_rows
                while rows >= self.chunk_rows or (batch is None and (rows or rejected)):
                    take = min(rows, self.chunk_rows)
                    table, lines_arr, pending, pending_lines = _split(pending, pending_lines, take, names)
                    rows -= take
                    if rows or batch is not None:  # rows Arrow skipped go with the chunk they fall in
                        last = int(lines_arr[-1])
                        now = [r for r in rejected if r.line is not None and r.line <= last]
                        rejected = [r for r in rejected if r.line is None or r.line > last]
                    else:
                        now, rejected = rejected, []
                    yield self._chunk(table, lines_arr, counting.done, now)
                    if batch is None and not rows:
                        break
                if batch is None:
                    return
        finally:
            stream.close()
            counting.close()

    def _chunk(self, table: pa.Table, lines: npt.NDArray[np.int64], done: int,
               rejected: list[Rejected]) -> RawChunk:
        arrays: list[pa.Array] = []
        errors: list[tuple[Mask, str | None, str]] = []
        blank: Mask | None = None
        for name in table.column_names:
            col = table.column(name)
            arr = col.chunk(0) if col.num_chunks == 1 else (
                col.combine_chunks() if col.num_chunks else pa.array([], pa.binary()))
            empty = np.asarray(pc.equal(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False),
                               dtype=np.bool_) if len(arr) else np.zeros(0, np.bool_)
            blank = empty if blank is None else blank & empty
            text, bad = decode_utf8(arr)
            if bad is not None:
                errors.append((bad, name, "invalid UTF-8"))
            arrays.append(text)
        decoded = pa.Table.from_arrays(arrays, names=table.column_names) if arrays else table
        if blank is not None and bool(blank.any()):
            keep = ~blank
            decoded = decoded.filter(pa.array(keep))
            lines = lines[keep]
            errors = [(m[keep], f, r) for m, f, r in errors]
        chunk = map_table(decoded, self.mapper, self.duck, lines, done)
        chunk.row_errors = errors
        chunk.rejected = rejected
        return chunk


def _split(batches: list[pa.RecordBatch], lines: list[npt.NDArray[np.int64]], take: int,
           names: list[str]) -> tuple[pa.Table, npt.NDArray[np.int64], list[pa.RecordBatch],
                                      list[npt.NDArray[np.int64]]]:
    """The first ``take`` rows of the pending batches, and what remains."""
    if batches:
        table = pa.Table.from_batches(batches)
    else:
        table = pa.table({n: pa.array([], pa.binary()) for n in names})
    all_lines = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    head, rest = table.slice(0, take), table.slice(take)
    rest_batches = rest.to_batches() if rest.num_rows else []  # zero-copy slices
    return head.combine_chunks(), all_lines[:take], rest_batches, [all_lines[take:]] if rest.num_rows else []


# ====================================================================== Parquet
class ParquetReader:
    """Streams row batches with ``ParquetFile.iter_batches`` (bounded memory)."""

    def __init__(self, path: str, mapper: Mapper, duck: Duck, chunk_rows: int) -> None:
        self.path, self.mapper, self.duck, self.chunk_rows = path, mapper, duck, chunk_rows
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputFileError(f"cannot read as Parquet: {_first_line(exc)}", path=path,
                                 hint="is it really a Parquet file? pass --input-format to choose another") from exc
        try:
            self.names: list[str] = list(pf.schema_arrow.names)
            self.total_rows: int = pf.metadata.num_rows
        finally:
            pf.close()

    def chunks(self) -> Iterator[RawChunk]:
        columns = [n for n in self.names if self.mapper.resolve(n).kind != IGNORE]
        done = 0
        pf = pq.ParquetFile(self.path)
        try:
            for batch in pf.iter_batches(batch_size=self.chunk_rows, columns=columns):
                table = pa.Table.from_batches([batch])
                lines = np.arange(done + 1, done + batch.num_rows + 1, dtype=np.int64)
                done += batch.num_rows
                yield map_table(table, self.mapper, self.duck, lines, done)
        finally:
            pf.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ====================================================================== JSON lines
def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_strict_constant)


@dataclass
class ParsedLines:
    """Records of one chunk of JSON lines, before mapping."""

    records: list[tuple[int, Any, bytes]]  # (line number, parsed value, line bytes)
    rejected: list[Rejected]
    bytes_done: int
    keys: list[str]


class JsonLinesReader:
    """Reads JSON lines in chunks; a bad line is quarantined, never fatal."""

    def __init__(self, path: str, gz: bool, chunk_rows: int) -> None:
        self.path, self.gz, self.chunk_rows = path, gz, chunk_rows

    def parsed(self) -> Iterator[ParsedLines]:
        stream, counting = open_binary(self.path, self.gz)
        try:
            numbered = enumerate(stream, start=1)
            while True:
                with _gc_paused():  # many small dicts: the cyclic GC would rescan them repeatedly
                    chunk = self._parse(numbered, counting)
                if chunk is None:
                    return
                yield chunk
        finally:
            stream.close()
            counting.close()

    def _parse(self, numbered: Iterator[tuple[int, bytes]], counting: _Counting) -> ParsedLines | None:
        records: list[tuple[int, Any, bytes]] = []
        rejected: list[Rejected] = []
        keys: dict[str, None] = {}
        for number, line in numbered:
            if not line.strip():
                continue
            try:
                value = _DECODER.decode(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else (
                    "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc))
                rejected.append(Rejected(number, None, f"invalid JSON: {msg}", cap(_line_text(line))))
                continue
            except RecursionError:
                rejected.append(Rejected(number, None, "invalid JSON: nested too deeply",
                                         cap(_line_text(line))))
                continue
            if not isinstance(value, dict):
                rejected.append(Rejected(number, None, "not a JSON object", cap(_line_text(line))))
                continue
            records.append((number, value, line))
            for k in value:
                keys[k] = None
            if len(records) >= self.chunk_rows:
                break
        if not records and not rejected:
            return None
        return ParsedLines(records, rejected, counting.done, list(keys))


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _line_text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def build_generic(parsed: ParsedLines, mapper: Mapper, duck: Duck) -> RawChunk:
    """Flat or nested JSON records → canonical text columns (+ folded JSON objects)."""
    mapper.add(parsed.keys)
    records = [r[1] for r in parsed.records]
    n = len(records)
    columns: dict[str, pa.Array] = {}
    fold_keys: list[str] = []
    errors: list[tuple[Mask, str | None, str]] = []
    for key in parsed.keys:
        res = mapper.resolve(key)
        if res.kind == IGNORE:
            continue
        values = [rec.get(key) for rec in records]
        if res.kind == MAP and res.target:
            columns[res.target] = pa.array(
                [v if v is None or type(v) is str else segment.text(v) for v in values], pa.string())
        elif res.kind == FOLD:
            fold_keys.append(key)
        elif res.kind == UNKNOWN:
            mask = np.array([v is not None for v in values], dtype=np.bool_)
            if bool(mask.any()):
                errors.append((mask, key, "unknown column"))
    folded: pa.Array | None = None
    if fold_keys:
        texts: list[str | None] = []
        for rec in records:
            obj = {k: v for k in fold_keys if (v := rec.get(k)) is not None}
            texts.append(segment.dumps(obj) if obj else None)
        folded = pa.array(texts, pa.string())
    return RawChunk(
        n=n,
        columns=columns,
        folded=folded,
        lines=np.array([r[0] for r in parsed.records], dtype=np.int64),
        bytes_done=parsed.bytes_done,
        raw=_records_raw([r[2] for r in parsed.records]),
        row_errors=errors,
        rejected=parsed.rejected,
    )


def _records_raw(lines: list[bytes] | list[Any]) -> Callable[[Sequence[int]], list[str]]:
    def raw(indices: Sequence[int]) -> list[str]:
        out = []
        for i in indices:
            item = lines[int(i)]
            out.append(cap(_line_text(item) if isinstance(item, bytes) else row_json(item)))
        return out
    return raw


def build_segment(parsed: ParsedLines) -> RawChunk:
    """Segment/RudderStack messages → canonical event text columns."""
    rows: list[dict[str, str | None]] = []
    lines: list[int] = []
    raws: list[Any] = []
    rejected = list(parsed.rejected)
    for number, rec, line in parsed.records:
        messages = segment.expand(rec)
        single = messages == [rec]
        for msg in messages:
            if not isinstance(msg, dict):
                rejected.append(Rejected(number, None, "not a JSON object", cap(row_json({"message": msg}))))
                continue
            rows.append(segment.to_row(msg))
            lines.append(number)
            raws.append(line if single else msg)
    n = len(rows)
    names = list(rows[0]) if rows else []
    columns = {name: pa.array([r[name] for r in rows], pa.string()) for name in names}
    rejected.sort(key=lambda r: r.line or 0)
    return RawChunk(n=n, columns=columns, folded=None, lines=np.array(lines, dtype=np.int64),
                    bytes_done=parsed.bytes_done, raw=_records_raw(raws), rejected=rejected)
