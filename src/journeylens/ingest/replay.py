"""Replaying quarantined rows: re-validate them through the path they first took.

Each ``quarantine`` row keeps the row as received (``raw``). :func:`plan_replay`
re-validates a set of quarantine rows (optionally with fixed ``raw`` texts, keyed by
:func:`quarantine_id`) and says what to append and which quarantine rows to remove or
rewrite; the caller applies the plan in one transaction (``Workspace.replay_quarantine``).

Which path a row takes is decided by its ``source``:

* ``http …`` (the collector: ``http /v1/batch``, ``http /t.gif``, ``http /r/CODE`` …):
  ``raw`` is one Segment message as the collector prepared it (or, for a request body
  that could not be used at all, the body text; it may hold a ``{"batch": [...]}``).
  It goes through :func:`journeylens.ingest.live.prepare` (Segment's required fields,
  size, consent, ``messageId``, clock-skew rule with the row's ``received_at`` as the
  receive time; a message the collector had already completed — its ``receivedAt`` equals
  the row's ``received_at`` — keeps its corrected ``timestamp``), then
  :func:`journeylens.ingest.live.validate_messages`; dedupe on ``(workspace, message_id)``.
  A message without ``messageId`` gets a UUID derived from the quarantine row id, so a
  replay is idempotent. Messages of forgotten persons (suppressions) and messages
  without consent are not stored and their rows are removed (counted in ``not_stored``).
* anything else is a file import into ``target``: ``raw`` is the source row as a JSON
  object (CSV/Parquet: the row's columns; JSON lines: the line). JSON-lines sources
  (``.jsonl``, ``.ndjson``, ``.json``, optionally ``.gz``) go through the JSON-lines
  reader's mapping (Segment messages through the Segment mapping), other sources
  through the CSV/Parquet column mapping; both with the importer's
  :class:`~journeylens.ingest.validate.Validator` (time zone ``tz``, default UTC;
  ``received_at`` = the row's ``received_at``). Dedupe on the table's key
  (``message_id`` for events), as in ``journeylens import``.

A row passes when every row/message it holds passes; then all of them are appended and
the quarantine row is removed. A row that still fails stays, with the reason (and
field) of its first failing check and, if it was fixed, the fixed ``raw``. A row whose
``raw`` cannot be interpreted as its path needs (NULL, or no JSON object for a file row,
e.g. a CSV line with a wrong number of fields) is left unchanged until fixed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from journeylens import schema
from journeylens.errors import JourneylensError
from journeylens.ingest import segment
from journeylens.ingest.convert import Duck
from journeylens.ingest.live import (
    ENDPOINT_TYPES,
    BadRequest,
    IpMask,
    Limits,
    iso,
    message_ids_of,
    prepare,
    suppression_hash,
    validate_messages,
)
from journeylens.ingest.mapping import UNKNOWN, Mapper
from journeylens.ingest.readers import (
    ParsedLines,
    RawChunk,
    build_generic,
    build_segment,
    cap,
    map_table,
)
from journeylens.ingest.validate import Validator

QUARANTINE_COLUMNS = ("workspace", "target", "source", "line", "field", "reason", "raw", "received_at")
LIVE_KEY = ("workspace", "message_id")
"""Dedupe key of the collector path (the file path uses the table's key)."""
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_ID_NAMESPACE = uuid.UUID("6f1c2a52-8d7e-4b8e-9a57-2f3c1d0e4b61")


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_strict_constant)


def quarantine_id(row: Mapping[str, Any]) -> str:
    """A stable id of one quarantine row: the first 16 hex digits of the SHA-256 of its
    columns (workspace, target, source, line, field, reason, raw, received_at as ISO text)."""
    ts = row.get("received_at")
    values = [row.get(c) for c in QUARANTINE_COLUMNS[:-1]] + [
        ts.astimezone(UTC).isoformat() if isinstance(ts, datetime) else ts]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


@dataclass
class ReplayPlan:
    """What a replay does (applied in one transaction by the caller)."""

    appends: list[tuple[str, pa.Table, tuple[str, ...]]] = field(default_factory=list)
    """(table, rows, dedupe key) to append; rows whose key exists already are duplicates."""
    remove: list[dict[str, Any]] = field(default_factory=list)
    """Quarantine rows (all columns) to delete: replayed, not stored, or rewritten."""
    rewrite: list[dict[str, Any]] = field(default_factory=list)
    """Quarantine rows to insert instead: still invalid, with the new field/reason/raw."""
    replayed_ids: list[str] = field(default_factory=list)
    still_invalid_ids: list[str] = field(default_factory=list)
    """Ids (before the replay) of rows that still fail."""
    unchanged_ids: list[str] = field(default_factory=list)
    """Rows left as they were (raw not interpretable, or the same reason again)."""
    not_stored: int = 0
    """Messages dropped by privacy rules (no consent, forgotten person)."""
    reasons: dict[str, int] = field(default_factory=dict)
    """New reasons of the rows still invalid."""


def _id_maker(row_id: str) -> Callable[[int], str]:
    """messageIds for messages without one: UUID5 of the quarantine row id and the index."""
    def make(index: int) -> str:
        return str(uuid.uuid5(_ID_NAMESPACE, f"{row_id}/{index}"))
    return make


def _http_endpoint(source: str) -> str:
    path = source.split(" ", 1)[1] if " " in source else source
    if path.startswith("/v1/"):
        return path[len("/v1/"):].strip("/")
    return "track"  # /t.gif (type kept in the message), /r/CODE


def _parse_json(raw: str) -> tuple[Any, str | None]:
    try:
        return _DECODER.decode(raw), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    except (ValueError, RecursionError) as exc:
        return None, f"invalid JSON: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"


@dataclass
class _Row:
    row: dict[str, Any]
    id: str
    raw: str | None
    fixed: bool


def plan_replay(rows: Sequence[Mapping[str, Any]], *, fixes: Mapping[str, str] | None = None,
                suppressions: Iterable[str] = (), mapping: Mapping[str, str] | None = None,
                tz: str = "UTC", limits: Limits | None = None, ip_mask: IpMask | None = None,
                now: datetime | None = None) -> ReplayPlan:
    """Re-validate quarantine ``rows`` (dicts with the quarantine columns) — see the module doc.

    ``fixes`` maps a row id (:func:`quarantine_id`) to a corrected ``raw`` text; with
    ``fixes`` given, only the rows it names are replayed. ``suppressions`` are the
    workspace's suppression hashes; ``mapping`` is the ``--map`` of the original import
    (file rows); ``limits``/``ip_mask`` are the collector's (defaults as ``serve``).
    """
    now = now or datetime.now(UTC)
    plan = ReplayPlan()
    items: list[_Row] = []
    for r in rows:
        rid = quarantine_id(r)
        if fixes is not None:
            if rid not in fixes:
                continue
            items.append(_Row(dict(r), rid, fixes[rid], True))
        else:
            items.append(_Row(dict(r), rid, r.get("raw"), False))
    http = [it for it in items if str(it.row.get("source") or "").startswith("http ")]
    files = [it for it in items if not str(it.row.get("source") or "").startswith("http ")]
    duck = Duck(tz)
    try:
        if http:
            _plan_http(plan, http, set(suppressions), limits or Limits(), ip_mask, now, duck)
        groups: dict[tuple[str, str, Any], list[_Row]] = defaultdict(list)
        for it in files:
            groups[(str(it.row["target"]), str(it.row["source"]), it.row["received_at"])].append(it)
        for (target, source, received), group in groups.items():
            _plan_file(plan, target, source, received, group, dict(mapping or {}), tz, now, duck)
    finally:
        duck.close()
    return plan


# ---------------------------------------------------------------------------- outcomes
def _passed(plan: ReplayPlan, it: _Row) -> None:
    plan.remove.append(it.row)
    plan.replayed_ids.append(it.id)


def _failed(plan: ReplayPlan, it: _Row, fld: str | None, reason: str) -> None:
    new = {**it.row, "field": fld, "reason": reason, "raw": cap(it.raw) if it.raw is not None else None}
    if all(new[c] == it.row.get(c) for c in ("field", "reason", "raw")):
        plan.unchanged_ids.append(it.id)
    else:
        plan.remove.append(it.row)
        plan.rewrite.append(new)
    plan.still_invalid_ids.append(it.id)
    plan.reasons[reason] = plan.reasons.get(reason, 0) + 1


def _first_reasons(rejected: Iterable[tuple[int, str | None, str]]) -> dict[int, tuple[str | None, str]]:
    out: dict[int, tuple[str | None, str]] = {}
    for pos, fld, reason in rejected:
        out.setdefault(pos, (fld, reason))
    return out


def _dedupe(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep the first row per ``key`` (the append needs distinct keys within one part)."""
    if table.num_rows < 2:
        return table
    cols = [table.column(k).to_pylist() for k in key]
    seen: set[tuple[Any, ...]] = set()
    keep: list[bool] = []
    for k in zip(*cols, strict=True):
        keep.append(k not in seen)
        seen.add(k)
    return table if all(keep) else table.filter(pa.array(keep))


# ---------------------------------------------------------------------------- collector rows
def _plan_http(plan: ReplayPlan, items: list[_Row], suppressions: set[str], limits: Limits,
               ip_mask: IpMask | None, now: datetime, duck: Duck) -> None:
    messages: list[dict[str, Any]] = []
    owner: list[int] = []  # message -> item position
    failed: dict[int, tuple[str | None, str]] = {}
    live_items: list[int] = []
    for pos, it in enumerate(items):
        if it.raw is None:
            plan.unchanged_ids.append(it.id)
            continue
        payload, err = _parse_json(it.raw)
        if err is not None:
            failed[pos] = (None, err)
            continue
        received: datetime = it.row["received_at"]
        endpoint = _http_endpoint(str(it.row["source"]))
        kind = ENDPOINT_TYPES.get(endpoint, "track")
        if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
            body, ep = payload, "batch"
        elif kind == "batch":
            body, ep = {"batch": [payload]}, "batch"
        else:
            body, ep = payload, endpoint if endpoint in ENDPOINT_TYPES else "track"
        for msg in body.get("batch", []) if isinstance(body, dict) and ep == "batch" else [body]:
            if isinstance(msg, dict) and msg.get("receivedAt") == iso(received):
                msg.pop("sentAt", None)  # completed by the collector: its timestamp is corrected already
        try:
            prepared = prepare(body, ep, received, limits, ip_mask, new_id=_id_maker(it.id))
        except BadRequest as exc:
            failed[pos] = (None, f"{exc.code}: {exc.message}")
            continue
        if prepared.quarantined:
            _, fld, reason, _ = min(prepared.quarantined, key=lambda q: q[0])
            failed[pos] = (fld, reason)
            continue
        if prepared.write_key_conflict:
            failed[pos] = (None, "write_key_mismatch: several write keys in one request")
            continue
        plan.not_stored += prepared.no_consent
        ws = str(it.row["workspace"])
        for _, msg in prepared.messages:
            if suppressions and any(suppression_hash(ws, i) in suppressions for i in message_ids_of(msg)):
                plan.not_stored += 1
                continue
            messages.append(msg)
            owner.append(pos)
        live_items.append(pos)
    by_ws: dict[str, list[int]] = defaultdict(list)
    for m, pos in enumerate(owner):
        by_ws[str(items[pos].row["workspace"])].append(m)
    tables: list[pa.Table] = []
    for ws, idx in by_ws.items():
        checked = validate_messages([messages[m] for m in idx], ws, now, duck,
                                    received_at=min(items[owner[m]].row["received_at"] for m in idx))
        for pos, (fld, reason) in _first_reasons(
                (owner[idx[g]], fld, reason) for g, fld, reason, _ in checked.rejected).items():
            failed.setdefault(pos, (fld, reason))
        acc = checked.accepted
        # received_at of each message: its own receivedAt (the row's), as the collector stores it
        keep = [owner[idx[g]] not in failed for g in checked.accepted_items]
        tables.append(acc.filter(pa.array(keep, pa.bool_())) if not all(keep) else acc)
    for pos, it in enumerate(items):
        if pos in failed:
            _failed(plan, it, *failed[pos])
        elif pos in live_items:
            _passed(plan, it)
    if tables:
        events = pa.concat_tables(tables)
        if events.num_rows:
            plan.appends.append(("events", _dedupe(events, LIVE_KEY), LIVE_KEY))


# ---------------------------------------------------------------------------- file rows
def _is_json_source(source: str) -> bool:
    name = source.lower().removesuffix(".gz")
    return name.endswith(_JSON_SUFFIXES)


def _plan_file(plan: ReplayPlan, target: str, source: str, received: datetime, items: list[_Row],
               mapping: dict[str, str], tz: str, now: datetime, duck: Duck) -> None:
    spec = schema.IMPORTABLE.get(target)
    if spec is None:
        plan.unchanged_ids.extend(it.id for it in items)
        return
    records: list[tuple[int, Any, Any]] = []
    failed: dict[int, tuple[str | None, str]] = {}
    json_source = _is_json_source(source)
    for pos, it in enumerate(items):
        if it.raw is None:
            plan.unchanged_ids.append(it.id)
            continue
        value, err = _parse_json(it.raw)
        if err is not None or not isinstance(value, dict):
            if json_source or it.fixed:  # a JSON line that is still no object / invalid JSON
                failed[pos] = (None, err or "not a JSON object")
            else:  # e.g. a CSV line with a wrong number of fields: needs a fix first
                plan.unchanged_ids.append(it.id)
            continue
        records.append((pos, value, it.raw))
    chunk: RawChunk | None = None
    if records:
        try:
            mapper = Mapper(spec, source, explicit=mapping)
        except JourneylensError as exc:
            for pos, _, _ in records:
                failed[pos] = (None, exc.message)
            records = []
    if records:
        lines = np.array([p for p, _, _ in records], dtype=np.int64)
        segment_rows = target == "events" and json_source and all(
            segment.looks_like_segment(v) for _, v, _ in records)
        if segment_rows:
            chunk = build_segment(ParsedLines([(p, v, v) for p, v, _ in records], [], 0, []))
        elif json_source:
            keys = list(dict.fromkeys(k for _, v, _ in records for k in v))
            chunk = build_generic(ParsedLines([(p, v, v) for p, v, _ in records], [], 0, keys), mapper, duck)
        else:
            names = list(dict.fromkeys(k for _, v, _ in records for k in v))
            table = pa.table({n: pa.array([_cell(v.get(n)) for _, v, _ in records], pa.string()) for n in names})
            chunk = map_table(table, mapper, duck, lines, 0)
            for n in names:
                if mapper.resolve(n).kind == UNKNOWN:
                    mask = np.array([v.get(n) not in (None, "") for _, v, _ in records], dtype=np.bool_)
                    if bool(mask.any()):
                        chunk.row_errors.append((mask, n, "unknown column"))
    tables: list[pa.Table] = []
    if chunk is not None:
        validator = Validator(target, workspace=str(items[0].row["workspace"]), source=source, tz=tz,
                              received_at=received, now=max(now, received), duck=duck)
        checked = validator.validate(chunk)
        q = checked.quarantined
        for pos, (fld, reason) in _first_reasons(zip(
                [int(x) for x in q.column("line").to_pylist()], q.column("field").to_pylist(),
                q.column("reason").to_pylist(), strict=True)).items():
            failed.setdefault(pos, (fld, reason))
        # line (= row position) of each accepted row: per line, its rows minus its rejected rows
        total = Counter(int(x) for x in chunk.lines)
        rejected_here = Counter(int(x) for x in q.column("line").to_pylist()) - Counter(
            r.line for r in chunk.rejected if r.line is not None)
        good_lines = [p for p in dict.fromkeys(int(x) for x in chunk.lines)
                      for _ in range(total[p] - rejected_here[p])]
        keep = [p not in failed for p in good_lines]
        acc = checked.accepted
        tables.append(acc.filter(pa.array(keep, pa.bool_())) if not all(keep) else acc)
    for pos, _, _ in records:
        if pos in failed:
            continue
        _passed(plan, items[pos])
    for pos, it in enumerate(items):
        if pos in failed:
            _failed(plan, it, *failed[pos])
    if tables:
        rows = pa.concat_tables(tables)
        if rows.num_rows:
            key = tuple(spec.key)
            plan.appends.append((target, _dedupe(rows, key) if key else rows, key))


def _cell(value: Any) -> str | None:
    """A CSV/Parquet cell as the text the CSV reader would have given."""
    return None if value is None else segment.text(value)


# ---------------------------------------------------------------------------- applying
@dataclass(frozen=True)
class ReplayReport:
    """Outcome of ``journeylens quarantine replay``."""

    selected: int
    """Quarantine rows considered (after filters; with fixes: the rows the fixes name)."""
    replayed: int
    """Rows that passed and were removed from the quarantine."""
    appended: dict[str, int]
    """Rows inserted per table."""
    duplicates: int
    """Rows that passed but were stored already (same key): not inserted again."""
    still_invalid: int
    """Rows that still fail (they stay, with their new reason)."""
    unchanged: int
    """Rows left untouched (raw not replayable as is, e.g. a CSV line with a wrong number of fields)."""
    not_stored: int
    """Collector messages dropped by privacy rules (no consent, forgotten person)."""
    reasons: tuple[tuple[str, int], ...]
    """Reasons of the rows still invalid, most frequent first."""
    missing_ids: tuple[str, ...] = ()
    """Ids named by ``--file`` that are not (or no longer) in the quarantine."""

    def to_dict(self) -> dict[str, Any]:
        return {"selected": self.selected, "replayed": self.replayed, "appended": dict(self.appended),
                "duplicates": self.duplicates, "still_invalid": self.still_invalid, "unchanged": self.unchanged,
                "not_stored": self.not_stored, "reasons": dict(self.reasons), "missing_ids": list(self.missing_ids)}

    def to_pandas(self) -> Any:
        import pandas as pd

        rows = [{"outcome": k, "rows": v} for k, v in self.to_dict().items()
                if isinstance(v, int)]
        rows += [{"outcome": f"appended to {t}", "rows": n} for t, n in self.appended.items()]
        rows += [{"outcome": f"still invalid: {r}", "rows": n} for r, n in self.reasons]
        return pd.DataFrame(rows, columns=["outcome", "rows"])


_MATCH = ("target = ? AND source IS NOT DISTINCT FROM ? AND line IS NOT DISTINCT FROM ? AND "
          "field IS NOT DISTINCT FROM ? AND reason = ? AND raw IS NOT DISTINCT FROM ? AND received_at = ?")


def _deletions(workspace: str, rows: Sequence[Mapping[str, Any]], per: int = 100,
               ) -> list[tuple[str, str, list[Any]]]:
    out: list[tuple[str, str, list[Any]]] = []
    for i in range(0, len(rows), per):
        part = rows[i:i + per]
        cond = "workspace = ? AND (" + " OR ".join(f"({_MATCH})" for _ in part) + ")"
        params: list[Any] = [workspace]
        for r in part:
            params += [r["target"], r["source"], r["line"], r["field"], r["reason"], r["raw"], r["received_at"]]
        out.append(("quarantine", cond, params))
    return out


def apply_plan(store: Any, workspace: str, plan: ReplayPlan) -> tuple[dict[str, int], int]:
    """Append the plan's rows (dedupe on their keys), delete the removed quarantine rows and
    insert the rewritten ones; (rows inserted per table, duplicates).

    On a store with ``write_atomic`` (DuckDB) all of it is ONE transaction. Other stores
    append first and then rewrite the workspace's quarantine rows: a failure in between
    leaves rows in quarantine whose replay later counts them as duplicates (nothing lost)."""
    rewrite = pa.Table.from_pylist(plan.rewrite, schema=schema.QUARANTINE.arrow_schema())
    appended: dict[str, int] = {}
    duplicates = 0
    if hasattr(store, "write_atomic"):
        parts = [*plan.appends, ("quarantine", rewrite, ())]
        dupes, _ = store.write_atomic(parts, _deletions(workspace, plan.remove))
        for (name, rows, _), found in zip(plan.appends, dupes, strict=False):
            appended[name] = appended.get(name, 0) + rows.num_rows - len(found)
            duplicates += len(found)
        return appended, duplicates
    for name, rows, key in plan.appends:  # pragma: no cover - exercised on Spark only
        res = store.append(name, rows, key)
        appended[name] = appended.get(name, 0) + res.inserted
        duplicates += res.duplicates
    q = store.table("quarantine")
    current = store.to_pyarrow(q.filter(q.workspace == workspace)).to_pylist()
    gone = Counter(quarantine_id(r) for r in plan.remove)
    kept = []
    for r in current:
        rid = quarantine_id(r)
        if gone[rid] > 0:
            gone[rid] -= 1
            continue
        kept.append(r)
    table = pa.Table.from_pylist(kept + plan.rewrite, schema=schema.QUARANTINE.arrow_schema())
    store.replace_workspace_rows("quarantine", workspace, table)
    return appended, duplicates


def replay(store: Any, workspace: str, rows: Sequence[Mapping[str, Any]], *,
           fixes: Mapping[str, str] | None = None, suppressions: Iterable[str] = (),
           mapping: Mapping[str, str] | None = None, tz: str = "UTC", limits: Limits | None = None,
           ip_mask: IpMask | None = None) -> ReplayReport:
    """Plan (:func:`plan_replay`) and apply (:func:`apply_plan`) the replay of ``rows``
    (quarantine rows of ``workspace`` with every column)."""
    plan = plan_replay(rows, fixes=fixes, suppressions=suppressions, mapping=mapping, tz=tz, limits=limits,
                       ip_mask=ip_mask)
    appended, duplicates = apply_plan(store, workspace, plan) if (plan.appends or plan.remove) else ({}, 0)
    known = {quarantine_id(r) for r in rows}
    missing = tuple(sorted(set(fixes) - known)) if fixes is not None else ()
    selected = len(plan.replayed_ids) + len(plan.still_invalid_ids) + len(
        [i for i in plan.unchanged_ids if i not in set(plan.still_invalid_ids)])
    return ReplayReport(
        selected=selected, replayed=len(plan.replayed_ids), appended=appended, duplicates=duplicates,
        still_invalid=len(plan.still_invalid_ids),
        unchanged=len([i for i in plan.unchanged_ids if i not in set(plan.still_invalid_ids)]),
        not_stored=plan.not_stored,
        reasons=tuple(sorted(plan.reasons.items(), key=lambda kv: (-kv[1], kv[0]))), missing_ids=missing)
