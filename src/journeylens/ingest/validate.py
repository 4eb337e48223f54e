"""Validation: mapped source rows → accepted canonical rows + quarantined rows.

Every source row ends either accepted or quarantined, never dropped. A
quarantined row names the field and reason of the *first* failing check, in
this order: problems the reader found (invalid UTF-8, unknown column), then
each column in table order (cannot parse → out of range/unknown value →
missing required value), then the rules across columns.

All columns
    Text is stripped of surrounding whitespace; an empty string is NULL.
    Numbers and booleans in text columns are printed (``123.0`` → ``"123"``
    for integral floats); nested values become JSON text.
Timestamps (``ts``, ``received_at``)
    Timestamp columns (naive ones in ``tz``), dates (midnight in ``tz``),
    epoch numbers (seconds; milliseconds when > 1e11, microseconds when
    > 1e14, nanoseconds when > 1e17) and text: ISO 8601 with ``T`` or a space,
    optional fractional seconds (``.`` or ``,``), ``Z``/``±hh:mm``/``±hhmm``
    offsets, a date alone, ``dd.mm.yyyy [hh:mm[:ss]]``, or epoch numbers as
    text. Naive values are read in ``tz`` (default UTC). Stored as UTC with
    microseconds. Failures: "cannot parse timestamp"; before 1990-01-01:
    "timestamp before 1990"; more than one day after the import (the later
    of now and ``received_at``): "timestamp in the future".
Numbers (``revenue``, ``score``, ``spend``; ``impressions``, ``clicks``, ``video_views``)
    Number columns or text (``1e3`` allowed, no thousands separators or
    decimal commas). NaN, ±inf and text that is no number: "not numeric";
    counts with a fraction: "not an integer".
JSON objects (``properties``, ``traits``)
    Valid JSON text whose top level is an object, else "not a JSON object".
    Unknown source columns folded into them are merged underneath (the
    column's own keys win).
Dates (costs ``date``)
    Date columns, timestamps (the date in ``tz``), ``yyyy-mm-dd`` (with an
    optional time), ``dd.mm.yyyy``. Failures: "cannot parse date", "date
    before 1990", "date in the future".
Missing required values
    "missing required value" (field = the column).
Found by the readers
    "invalid JSON: <parser message>" and "not a JSON object" (a JSON line
    that is no object; no field), "wrong number of columns" (CSV, no field),
    "invalid UTF-8" (CSV, field = the column), "unknown column" (costs and
    surveys JSON lines, field = the key).

A quarantined row carries the workspace, target table, the file path as
given, its line, field, reason, the row as JSON text (JSON lines: the line
as read; capped at 10 KiB) and the import time.

Per table:

events
    ``type`` defaults to "track", is lower-cased and must be one of
    :data:`schema.MESSAGE_TYPES` ("unknown message type"). identify, group
    and alias rows without ``event`` get ``event`` = the type; every other
    row needs ``event``. Touches (track/page/screen) need ``user_id`` or
    ``anonymous_id`` ("missing user_id and anonymous_id", field
    ``anonymous_id``); identify needs ``user_id``; alias needs
    ``previous_id`` and ``user_id``; group needs ``account_id`` ("<type>
    needs <column>"). ``received_at`` comes from the file if it has one,
    else it is the import time. ``channel`` is derived from UTM tags and
    referrer where it is NULL (see :mod:`journeylens.ingest.channels`).
people / accounts
    ``user_id`` / ``account_id`` required; ``ts`` defaults to the import
    time; ``traits`` defaults to ``{}``.
costs
    ``date``, ``channel`` and ``spend`` required.
surveys
    ``kind`` is lower-cased and must be one of :data:`schema.SURVEY_KINDS`
    ("unknown survey kind"); ``score`` must lie on the kind's scale
    (:data:`schema.SURVEY_SCALES`, "score outside the nps scale 0-10").

``message_id``, when the file has none (or the value is empty), is the md5
hex of the target table, the workspace and the row's identity columns after
normalisation (timestamps as UTC microseconds): events — every column except
``message_id``, ``workspace`` and ``received_at``; people — ``user_id``,
``account_id``, ``ts`` (as in the file), ``traits``; accounts —
``account_id``, ``ts``, ``traits``; costs — ``date``, ``channel``,
``campaign``; surveys — ``person``, ``ts``, ``kind``. Importing the same
file again gives the same ids, so the store skips the rows as duplicates.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journeylens import schema
from journeylens.ingest.channels import derive_channel
from journeylens.ingest.convert import (
    TS_TYPE,
    Duck,
    Mask,
    json_object_check,
    md5_ids,
    merge_objects,
    to_date,
    to_float,
    to_int,
    to_numpy_mask,
    to_text,
    to_timestamp,
)
from journeylens.ingest.mapping import FOLD_INTO
from journeylens.ingest.readers import RawChunk, cap

MIN_TS = datetime(1990, 1, 1, tzinfo=UTC)
IDENTITY_TYPES = ("identify", "group", "alias")

MISSING = "missing required value"
NOT_OBJECT = "not a JSON object"
NOT_NUMERIC = "not numeric"
NOT_INTEGER = "not an integer"
BAD_TS = "cannot parse timestamp"
BAD_DATE = "cannot parse date"
UNKNOWN_TYPE = "unknown message type"
UNKNOWN_KIND = "unknown survey kind"

_HASHED: dict[str, tuple[str, ...]] = {
    "events": tuple(c for c in schema.EVENTS.names if c not in ("message_id", "workspace", "received_at")),
    "people": ("user_id", "account_id", "ts", "traits"),
    "accounts": ("account_id", "ts", "traits"),
    "costs": ("date", "channel", "campaign"),
    "surveys": ("person", "ts", "kind"),
}
_TS_DEFAULTS_TO_IMPORT_TIME = frozenset({"people", "accounts"})


@dataclass
class ValidatedChunk:
    """One chunk of a source: rows that passed and rows that did not."""

    accepted: pa.Table
    """Rows in the exact Arrow schema of the target table."""
    quarantined: pa.Table
    """Rejected rows in the Arrow schema of ``quarantine``."""
    rows: int
    """Source rows consumed by this chunk (accepted + quarantined)."""
    bytes_done: int
    """Bytes of the file consumed so far (rows for Parquet), for progress bars."""


class _Errors:
    """First failing check per row, as a small integer code."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.code: np.ndarray | None = None
        self.kinds: list[tuple[str | None, str]] = []

    def flag(self, mask: Mask | pa.Array | None, field: str | None, reason: str) -> None:
        if mask is None:
            return
        if not isinstance(mask, np.ndarray):
            mask = to_numpy_mask(mask)
        if not bool(mask.any()):
            return
        if self.code is None:
            self.code = np.zeros(self.n, dtype=np.int32)
        kind = (field, reason)
        if kind not in self.kinds:
            self.kinds.append(kind)
        self.code[mask & (self.code == 0)] = self.kinds.index(kind) + 1

    def bad(self) -> Mask | None:
        return None if self.code is None else self.code != 0


@functools.cache
def _arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a canonical table (built once: ``TableSpec.arrow_schema`` goes through ibis
    types, ~1 ms, which the collector would pay per group)."""
    return schema.TABLES[table].arrow_schema()


def _nulls(n: int, t: pa.DataType) -> pa.Array:
    return pa.nulls(n, t)


def _repeat(value: object, n: int, t: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, t), n)


class Validator:
    """Validates raw chunks for one target table of one import."""

    def __init__(self, target: str, *, workspace: str, source: str, tz: str, received_at: datetime,
                 now: datetime, duck: Duck, known_objects: Collection[str] = ()) -> None:
        """``known_objects``: JSON columns whose every present value the caller serialised from an
        object itself (valid JSON object text): their "not a JSON object" check is skipped."""
        self.spec = schema.IMPORTABLE[target]
        self.target = target
        self.workspace = workspace
        self.source = source
        self.tz = tz
        self.received_at = received_at
        self.max_ts = now + timedelta(days=1)
        self.duck = duck
        self.known_objects = frozenset(known_objects)
        self.arrow_schema = _arrow_schema(target)
        self.quarantine_schema = _arrow_schema("quarantine")

    # ------------------------------------------------------------------ main
    def validate(self, chunk: RawChunk) -> ValidatedChunk:
        n = chunk.n
        errs = _Errors(n)
        for mask, fld, reason in chunk.row_errors:
            errs.flag(mask, fld, reason)
        out: dict[str, pa.Array] = {}
        hash_values: dict[str, pa.Array] = {}
        fold_target = FOLD_INTO.get(self.target)
        for col in self.spec.columns:
            name = col.name
            if name == "workspace":
                continue
            src = chunk.columns.get(name)
            if name == "received_at":
                value = self._received_at(src, n, errs)
            elif name == fold_target or name in ("properties", "traits"):
                value = self._json_object(name, src, chunk.folded if name == fold_target else None, n, errs)
            elif col.dtype == "string":
                value = to_text(src, self.duck) if src is not None else _nulls(n, pa.string())
            elif col.dtype.startswith("timestamp"):
                value = self._timestamp(name, src, n, errs)
                hash_values[name] = value
                if self.target in _TS_DEFAULTS_TO_IMPORT_TIME and name == "ts":
                    value = value.fill_null(pa.scalar(self.received_at, TS_TYPE))
            elif col.dtype == "float64":
                if src is None:
                    value = _nulls(n, pa.float64())
                else:
                    value, bad = to_float(src, self.duck)
                    errs.flag(bad, name, NOT_NUMERIC)
            elif col.dtype == "int64":
                if src is None:
                    value = _nulls(n, pa.int64())
                else:
                    value, bad, not_int = to_int(src, self.duck)
                    errs.flag(bad, name, NOT_NUMERIC)
                    errs.flag(not_int, name, NOT_INTEGER)
            elif col.dtype == "date":
                value = self._date(name, src, n, errs)
            else:  # pragma: no cover - schema has no other types
                raise TypeError(f"unsupported column type {col.dtype}")
            value = self._table_rules(name, value, out, errs)
            if col.required and name != "message_id" and value.null_count:
                errs.flag(value.is_null(), name, MISSING)
            out[name] = value

        if self.target == "events":
            out["channel"] = derive_channel(out["channel"], out["utm_source"], out["utm_medium"],
                                            out["referrer"], out["url"])
            self._event_rules(out, errs)
        out["message_id"] = self._message_ids(out, hash_values, n)
        out["workspace"] = _repeat(self.workspace, n, pa.string())
        return self._split(chunk, out, errs)

    # ------------------------------------------------------------------ columns
    def _json_object(self, name: str, src: pa.Array | None, folded: pa.Array | None, n: int,
                     errs: _Errors) -> pa.Array:
        text = to_text(src, self.duck) if src is not None else None
        if folded is not None:
            text = merge_objects(folded, text, self.duck) if text is not None else folded
        if text is None:
            text = _nulls(n, pa.string())
        if name not in self.known_objects or folded is not None:
            errs.flag(json_object_check(text, self.duck), name, NOT_OBJECT)
        if self.spec.column(name).required and text.null_count:
            text = text.fill_null("{}")
        return text

    def _timestamp(self, name: str, src: pa.Array | None, n: int, errs: _Errors) -> pa.Array:
        if src is None:
            return _nulls(n, TS_TYPE)
        value, bad = to_timestamp(src, self.duck, self.tz)
        errs.flag(bad, name, BAD_TS)
        self._range(value, name, "timestamp", errs)
        return value

    def _date(self, name: str, src: pa.Array | None, n: int, errs: _Errors) -> pa.Array:
        if src is None:
            return _nulls(n, pa.date32())
        value, bad = to_date(src, self.duck, self.tz)
        errs.flag(bad, name, BAD_DATE)
        self._range(value, name, "date", errs)
        return value

    def _range(self, value: pa.Array, name: str, what: str, errs: _Errors) -> None:
        if value.null_count == len(value):
            return
        if pa.types.is_date(value.type):
            lo = pa.scalar(MIN_TS.date(), pa.date32())
            hi = pa.scalar(self.max_ts.date(), pa.date32())
        else:
            lo = pa.scalar(MIN_TS, TS_TYPE)
            hi = pa.scalar(self.max_ts, TS_TYPE)
        mm = pc.min_max(value)
        if mm["min"].is_valid and pc.less(mm["min"], lo).as_py():
            errs.flag(pc.less(value, lo), name, f"{what} before 1990")
        if mm["max"].is_valid and pc.greater(mm["max"], hi).as_py():
            errs.flag(pc.greater(value, hi), name, f"{what} in the future")

    def _table_rules(self, name: str, value: pa.Array, out: dict[str, pa.Array],
                     errs: _Errors) -> pa.Array:
        if self.target == "events" and name == "type":
            value = value.fill_null("track")
            value = self._lower_known(value, schema.MESSAGE_TYPES, name, UNKNOWN_TYPE, errs)
        elif self.target == "events" and name == "event" and value.null_count:
            kind = out["type"]
            default = pc.if_else(pc.is_in(kind, pa.array(IDENTITY_TYPES)), kind, pa.scalar(None, pa.string()))
            value = pc.coalesce(value, default)
        elif self.target == "surveys" and name == "kind":
            value = self._lower_known(value, schema.SURVEY_KINDS, name, UNKNOWN_KIND, errs)
        elif self.target == "surveys" and name == "score":
            kind = out["kind"]
            for k, (lo, hi) in schema.SURVEY_SCALES.items():
                outside = pc.and_(pc.equal(kind, k), pc.or_(pc.less(value, lo), pc.greater(value, hi)))
                errs.flag(outside, name, f"score outside the {k} scale {lo:g}-{hi:g}")
        return value

    def _lower_known(self, value: pa.Array, allowed: tuple[str, ...], name: str, reason: str,
                     errs: _Errors) -> pa.Array:
        choices = pa.array(allowed)
        known = pc.is_in(value, choices)
        if bool(pc.all(known, skip_nulls=True).as_py() in (True, None)):
            return value
        value = pc.utf8_lower(value)
        known = pc.is_in(value, choices)
        errs.flag(pc.and_(value.is_valid(), pc.invert(known)), name, reason)
        return value

    def _event_rules(self, out: dict[str, pa.Array], errs: _Errors) -> None:
        kind = out["type"]
        user, anon = out["user_id"], out["anonymous_id"]
        if user.null_count and anon.null_count:
            touch = pc.is_in(kind, pa.array(schema.TOUCH_TYPES))
            errs.flag(pc.and_(touch, pc.and_(user.is_null(), anon.is_null())), "anonymous_id",
                      "missing user_id and anonymous_id")
        rules = (("identify", "user_id"), ("alias", "previous_id"), ("alias", "user_id"),
                 ("group", "account_id"))
        for message_type, column in rules:
            values = out[column]
            if values.null_count:
                errs.flag(pc.and_(pc.equal(kind, message_type), values.is_null()), column,
                          f"{message_type} needs {column}")

    def _received_at(self, src: pa.Array | None, n: int, errs: _Errors) -> pa.Array:
        if src is None:
            return _repeat(self.received_at, n, TS_TYPE)
        value, bad = to_timestamp(src, self.duck, self.tz)
        errs.flag(bad, "received_at", BAD_TS)
        return value.fill_null(pa.scalar(self.received_at, TS_TYPE))

    def _message_ids(self, out: dict[str, pa.Array], hash_values: dict[str, pa.Array], n: int) -> pa.Array:
        ids = out["message_id"]
        if ids.null_count == 0:
            return ids
        parts = [hash_values.get(c, out[c]) for c in _HASHED[self.target]]
        if ids.null_count == n:
            return md5_ids([self.target, self.workspace], parts, self.duck)
        missing = ids.is_null()
        idx = pa.array(np.nonzero(to_numpy_mask(missing))[0])
        hashed = md5_ids([self.target, self.workspace], [p.take(idx) for p in parts], self.duck)
        return pc.replace_with_mask(ids, missing, hashed)

    # ------------------------------------------------------------------ output
    def _split(self, chunk: RawChunk, out: dict[str, pa.Array], errs: _Errors) -> ValidatedChunk:
        arrays = [out[f.name].cast(f.type) if out[f.name].type != f.type else out[f.name]
                  for f in self.arrow_schema]
        accepted = pa.Table.from_arrays(arrays, schema=self.arrow_schema)
        bad = errs.bad()
        rejects: list[tuple[int | None, str | None, str, str | None]] = [
            (r.line, r.field, r.reason, r.raw) for r in chunk.rejected
        ]
        if bad is not None:
            accepted = accepted.filter(pa.array(~bad))
            assert errs.code is not None
            idx = np.nonzero(bad)[0]
            raws = chunk.raw(idx.tolist())
            for i, raw in zip(idx, raws, strict=True):
                fld, reason = errs.kinds[int(errs.code[i]) - 1]
                rejects.append((int(chunk.lines[i]), fld, reason, cap(raw)))
        quarantined = self._quarantine(rejects)
        return ValidatedChunk(accepted=accepted, quarantined=quarantined,
                              rows=chunk.n + len(chunk.rejected), bytes_done=chunk.bytes_done)

    def _quarantine(self, rejects: list[tuple[int | None, str | None, str, str | None]]) -> pa.Table:
        rejects.sort(key=lambda r: (r[0] is None, r[0] or 0))
        m = len(rejects)
        return pa.Table.from_arrays(
            [
                _repeat(self.workspace, m, pa.string()),
                _repeat(self.target, m, pa.string()),
                _repeat(self.source, m, pa.string()),
                pa.array([r[0] for r in rejects], pa.int64()),
                pa.array([r[1] for r in rejects], pa.string()),
                pa.array([r[2] for r in rejects], pa.string()),
                pa.array([r[3] for r in rejects], pa.string()),
                _repeat(self.received_at, m, TS_TYPE),
            ],
            schema=self.quarantine_schema,
        )

