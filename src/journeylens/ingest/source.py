"""``open_source``: check a file, pick its reader and stream validated chunks."""

from __future__ import annotations

import itertools
import os
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from journeylens import schema
from journeylens.errors import InputFileError, InvalidParameterError, UnknownNameError, suggest
from journeylens.ingest import segment
from journeylens.ingest.convert import Duck
from journeylens.ingest.mapping import Mapper
from journeylens.ingest.readers import (
    CsvReader,
    JsonLinesReader,
    ParquetReader,
    ParsedLines,
    RawChunk,
    build_generic,
    build_segment,
    read_head,
    sniff_csv,
)
from journeylens.ingest.validate import ValidatedChunk, Validator

FORMATS = ("csv", "jsonl", "parquet", "segment")
_FORMAT_ALIASES = {"tsv": "csv", "json": "jsonl", "ndjson": "jsonl", "pq": "parquet",
                   "rudderstack": "segment"}
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_SNIFF_LINES = 20


@dataclass
class SourceInfo:
    """What :func:`open_source` found out about a file (``folded`` may grow while reading JSON lines)."""

    path: str
    fmt: str
    target: str
    total_rows: int | None
    """Rows in the file when known up front (Parquet), else None."""
    total_bytes: int
    column_map: dict[str, str] = field(default_factory=dict)
    """Source column → canonical column."""
    folded: list[str] = field(default_factory=list)
    """Source columns moved into ``properties`` (events) or ``traits`` (people, accounts)."""


class Source:
    """An opened file: ``info`` plus an iterator of :class:`ValidatedChunk`.

    Iterating again reads the file again from the start.
    """

    def __init__(self, info: SourceInfo, chunks: Iterator[RawChunk],
                 restart: Callable[[], Iterator[RawChunk]], validator: Validator,
                 mapper: Mapper | None) -> None:
        self.info = info
        self._first: Iterator[RawChunk] | None = chunks
        self._restart = restart
        self._validator = validator
        self._mapper = mapper

    def __iter__(self) -> Iterator[ValidatedChunk]:
        raw = self._first if self._first is not None else self._restart()
        self._first = None
        while True:
            chunk = _next_chunk(raw, self.info.path)
            if chunk is None:
                return
            validated = self._validator.validate(chunk)
            if self._mapper is not None:
                self.info.column_map = self._mapper.column_map
                self.info.folded = self._mapper.folded
            yield validated


def _next_chunk(chunks: Iterator[RawChunk], path: str) -> RawChunk | None:
    """The next raw chunk; read errors become one-line InputFileErrors."""
    try:
        return next(chunks)
    except StopIteration:
        return None
    except InputFileError:
        raise
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:
        raise InputFileError(f"cannot read the file: {_first_line(exc)}", path=path,
                             hint="is the file complete and in the format it claims?") from exc


def _peeked(chunks: Iterator[RawChunk], path: str) -> Iterator[RawChunk]:
    """Read the first chunk now (so unreadable files fail in open_source), then the rest."""
    first = _next_chunk(chunks, path)
    if first is None:
        return iter(())
    return itertools.chain([first], chunks)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _detect(path: str, fmt: str | None) -> tuple[str, bool, bool]:
    """(format, gzip?, tab-separated?) from --input-format or the file suffix/content."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    base = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes and not gz else "")
    tsv = base in (".tsv", ".tab")
    if fmt is not None:
        key = fmt.strip().lower()
        tsv = tsv or key == "tsv"
        key = _FORMAT_ALIASES.get(key, key)
        if key not in FORMATS:
            close = suggest(key, FORMATS)
            raise InputFileError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}", path=path,
                                 hint=f"did you mean '{close}'?" if close else None)
        if key == "parquet" and gz:
            raise InputFileError("gzip-compressed Parquet is not supported", path=path,
                                 hint="Parquet compresses internally; decompress the file")
        return key, gz, tsv
    if base in _SUFFIXES:
        found = _SUFFIXES[base]
        if found == "parquet" and gz:
            raise InputFileError("gzip-compressed Parquet is not supported", path=path,
                                 hint="Parquet compresses internally; decompress the file")
        return found, gz, tsv
    head = _safe_head(path, gz, 4096)
    if head.startswith(b"PAR1") and not gz:
        return "parquet", False, False
    if head.lstrip().startswith(b"{"):
        return "jsonl", gz, False
    raise InputFileError(
        f"cannot tell the format of the file from its name{' (' + base + ')' if base else ''}",
        path=path, hint="name it .csv, .tsv, .jsonl, .parquet (optionally .gz) or pass --input-format "
        + "|".join(FORMATS),
    )


def _safe_head(path: str, gz: bool, size: int) -> bytes:
    try:
        return read_head(path, gz, size)
    except (OSError, EOFError) as exc:
        raise InputFileError(f"cannot read the file: {_first_line(exc)}", path=path,
                             hint="is it really gzip-compressed?" if gz else None) from exc


def _check_file(path: str) -> int:
    p = Path(path)
    if not p.exists():
        raise InputFileError("no such file", path=path, hint="check the path")
    if p.is_dir():
        raise InputFileError("is a directory, not a file", path=path, hint="name a file inside it")
    if not os.access(p, os.R_OK):
        raise InputFileError("cannot read the file: permission denied", path=path)
    size = p.stat().st_size
    if size == 0:
        raise InputFileError("the file is empty", path=path)
    return size


def _timezone(tz: str | None) -> str:
    if tz is None or tz.strip() == "" or tz.strip().upper() in ("UTC", "Z"):
        return "UTC"
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        close = suggest(tz, zoneinfo.available_timezones())
        raise InvalidParameterError(f"unknown time zone '{tz}'",
                                    hint=f"did you mean '{close}'?" if close else "e.g. Europe/Berlin") from exc
    return tz


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def open_source(
    path: str | os.PathLike[str],
    target: str,
    *,
    workspace: str = "default",
    mapping: Mapping[str, str] | None = None,
    fmt: str | None = None,
    tz: str | None = None,
    chunk_rows: int = 200_000,
    received_at: datetime | None = None,
) -> Source:
    """Open ``path`` for import into table ``target`` (events|people|accounts|costs|surveys).

    Raises :class:`~journeylens.errors.InputFileError` before reading any
    rows when the file is missing, a directory, empty, of unknown or
    unreadable format, when a ``mapping`` names a column the file or the
    table lacks, when a required column without default is missing, and
    (costs, surveys) when the file has unknown columns. Iterating the
    returned :class:`Source` yields :class:`ValidatedChunk` objects.
    """
    if target not in schema.IMPORTABLE:
        raise UnknownNameError("table", target, schema.IMPORTABLE)
    if chunk_rows < 1:
        raise InvalidParameterError(f"chunk_rows must be at least 1, not {chunk_rows}")
    spath = os.fspath(path)
    size = _check_file(spath)
    fmt_key, gz, tsv = _detect(spath, fmt)
    zone = _timezone(tz)
    imported = _utc(received_at)
    now = max(datetime.now(UTC), imported)
    spec = schema.IMPORTABLE[target]
    mapper = Mapper(spec, spath, explicit={str(k).strip(): str(v).strip() for k, v in (mapping or {}).items()})
    try:
        duck = Duck(zone)
    except duckdb.Error as exc:
        raise InvalidParameterError(f"unknown time zone '{zone}'", hint="e.g. Europe/Berlin") from exc
    validator = Validator(target, workspace=workspace, source=spath, tz=zone, received_at=imported,
                          now=now, duck=duck)

    if fmt_key == "parquet":
        pr = ParquetReader(spath, mapper, duck, chunk_rows)
        _prepare(mapper, pr.names)
        info = SourceInfo(spath, "parquet", target, pr.total_rows, size, mapper.column_map, mapper.folded)
        return Source(info, _peeked(pr.chunks(), spath), pr.chunks, validator, mapper)

    if fmt_key == "csv":
        _reject_binary(spath, gz)
        layout = sniff_csv(spath, gz, tsv)
        _prepare(mapper, layout.names)
        cr = CsvReader(spath, gz, layout, mapper, duck, chunk_rows)
        info = SourceInfo(spath, "csv", target, None, size, mapper.column_map, mapper.folded)
        return Source(info, _peeked(cr.chunks(), spath), cr.chunks, validator, mapper)

    # JSON lines, generic or Segment
    _reject_binary(spath, gz)
    _reject_json_document(spath, gz)
    jr = JsonLinesReader(spath, gz, chunk_rows)
    parsed = jr.parsed()
    try:
        first = next(parsed, None)
    except (OSError, EOFError, ValueError) as exc:
        raise InputFileError(f"cannot read the file: {_first_line(exc)}", path=spath,
                             hint="is the file complete and in the format it claims?") from exc
    if fmt_key == "jsonl" and fmt is None and target == "events" and first is not None:
        sample = [rec for _, rec, _ in first.records[:_SNIFF_LINES]]
        if sample and sum(segment.looks_like_segment(r) for r in sample) * 2 >= len(sample):
            fmt_key = "segment"
    if fmt_key == "segment":
        if target != "events":
            raise InputFileError(f"Segment/RudderStack messages import into events, not {target}",
                                 path=spath, hint="pass --input-format jsonl to map the records yourself")
        if mapping:
            raise InputFileError("--map does not apply to Segment/RudderStack messages", path=spath,
                                 hint="pass --input-format jsonl to map the records yourself")
        info = SourceInfo(spath, "segment", target, None, size, dict(segment.COLUMN_MAP), [])

        def segment_chunks(head: ParsedLines | None, rest: Iterator[ParsedLines]) -> Iterator[RawChunk]:
            if head is not None:
                yield build_segment(head)
            for p in rest:
                yield build_segment(p)

        def restart_segment() -> Iterator[RawChunk]:
            return segment_chunks(None, jr.parsed())

        return Source(info, segment_chunks(first, parsed), restart_segment, validator, None)

    if first is not None and first.records:  # else: nothing parsed yet, every line gets quarantined
        _prepare(mapper, first.keys, where=f" (in its first {chunk_rows} records)")
    info = SourceInfo(spath, "jsonl", target, None, size, mapper.column_map, mapper.folded)

    def generic_chunks(head: ParsedLines | None, rest: Iterator[ParsedLines]) -> Iterator[RawChunk]:
        if head is not None:
            yield build_generic(head, mapper, duck)
        for p in rest:
            yield build_generic(p, mapper, duck)

    def restart_generic() -> Iterator[RawChunk]:
        return generic_chunks(None, jr.parsed())

    return Source(info, generic_chunks(first, parsed), restart_generic, validator, mapper)


def _prepare(mapper: Mapper, names: list[str], where: str = "") -> None:
    mapper.check_explicit(names, where)
    mapper.add(names)
    mapper.check_unknown()
    mapper.check_required()


def _reject_binary(path: str, gz: bool) -> None:
    head = _safe_head(path, gz, 8192)
    if not head.strip():
        raise InputFileError("the file has no data (only whitespace)", path=path)
    if b"\x00" in head:
        hint = "pass --input-format parquet" if head.startswith(b"PAR1") else None
        raise InputFileError("not a text file (it holds binary data)", path=path, hint=hint)


def _reject_json_document(path: str, gz: bool) -> None:
    """A JSON array or a pretty-printed document is not JSON lines: say so up front."""
    head = _safe_head(path, gz, 1 << 16)
    for line in head.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped:
            continue
        multi_line = stripped.startswith(b"[") or stripped == b"{"
        if multi_line:
            raise InputFileError(
                "not JSON lines: the file is one JSON document (an array or a multi-line object)",
                path=path, hint="write one JSON object per line (JSON lines / NDJSON)",
            )
        return
