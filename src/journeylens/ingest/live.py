"""Live Segment messages (the collector's per-message checks), shared by the collector and
``journeylens quarantine replay``.

:func:`prepare` checks and completes the messages of one decoded Tracking API body:

* the message type implied by the endpoint (``/v1/track`` → ``track``);
* per-message checks that quarantine one message and keep the rest:
  nested deeper than :data:`MAX_DEPTH`, not an object, larger than ``max_event_bytes``,
  lone surrogates, missing ``userId``/``anonymousId``, ``track`` without ``event``,
  ``alias`` without ``previousId``/``userId``, ``group`` without ``groupId``;
* server fields: ``messageId`` (``new_id()``, a UUID4 by default, when missing),
  ``receivedAt`` (the server clock; a client value is ignored) and ``timestamp``
  corrected for client clock skew: ``timestamp = receivedAt - (sentAt - originalTimestamp)``
  where ``originalTimestamp`` is the message's ``originalTimestamp`` or else its
  ``timestamp``; without either, ``timestamp = receivedAt``;
* privacy: IP addresses anonymised, no-consent messages dropped (counted).

:func:`validate_messages` then maps prepared messages with the Segment import mapping
(:func:`~journeylens.ingest.readers.build_segment`) and validates them with the import
:class:`~journeylens.ingest.validate.Validator` (source ``http``).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import ipaddress
import json
import marshal
import math
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from journeylens import schema
from journeylens.ingest import segment
from journeylens.ingest.convert import TS_TYPE, Duck
from journeylens.ingest.readers import ParsedLines, RawChunk, build_segment, cap, row_json
from journeylens.ingest.validate import Validator

try:  # optional speed-up (pip install orjson); every result is the stdlib's or checked against it
    _orjson: Any = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


@dataclass(frozen=True)
class IpMask:
    """How many leading bits of an IP address are kept."""

    v4_prefix: int = 24
    v6_prefix: int = 48


def anonymize_ip(value: Any, mask: IpMask) -> str | None:
    """The network address of ``value`` under ``mask``; None when it is no IP address."""
    if not isinstance(value, str):
        return None
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    prefix = mask.v4_prefix if ip.version == 4 else mask.v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def anonymize_message(msg: dict[str, Any], mask: IpMask) -> None:
    """Anonymise ``context.ip``, ``properties.ip`` and ``traits.ip`` in place."""
    for part in ("context", "properties", "traits"):
        obj = msg.get(part)
        if isinstance(obj, dict) and "ip" in obj:
            masked = anonymize_ip(obj["ip"], mask)
            if masked is None:
                del obj["ip"]
            else:
                obj["ip"] = masked


_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def mask_ips_in_text(text: str, mask: IpMask) -> str:
    """Every IPv4 address in free text replaced by its network address."""
    def sub(m: re.Match[str]) -> str:
        return anonymize_ip(m.group(0), mask) or m.group(0)
    return _IPV4.sub(sub, text)


def no_consent(msg: dict[str, Any]) -> bool:
    """True when the message says the person did not consent to analytics (see module doc)."""
    ctx = msg.get("context")
    if not isinstance(ctx, dict):
        return False
    if ctx.get("optOut") is True:
        return True
    consent = ctx.get("consent")
    if consent is False:
        return True
    if isinstance(consent, dict):
        if consent.get("analytics") is False:
            return True
        prefs = consent.get("categoryPreferences")
        if isinstance(prefs, dict) and prefs.get("analytics") is False:
            return True
    return False


def suppression_hash(workspace: str, ident: str) -> str:
    """SHA-256 hex of ``workspace`` NUL ``ident`` (the suppressions table key)."""
    return hashlib.sha256(f"{workspace}\0{ident}".encode("utf-8", errors="surrogatepass")).hexdigest()



ENDPOINT_TYPES: dict[str, str] = {
    "track": "track", "identify": "identify", "page": "page", "screen": "screen", "group": "group",
    "alias": "alias", "batch": "batch", "t": "track", "i": "identify", "p": "page", "s": "screen",
    "g": "group", "a": "alias", "b": "batch", "import": "batch",
}
"""Path segment after ``/v1/`` → message type (``batch`` for batch bodies)."""

MAX_DEPTH = 64
"""Messages nested deeper than this are quarantined (the mapping and JSON writers recurse)."""
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
TOO_LARGE = "event larger than {} bytes"
LONE_SURROGATE = "invalid unicode (lone surrogate)"
NOT_OBJECT = "not a JSON object"
NO_IDENTITY = "missing user_id and anonymous_id"


@dataclass(frozen=True)
class Limits:
    """Request limits of the collector (all configurable)."""

    max_event_bytes: int = 32 * 1024
    """One message serialised as compact JSON (UTF-8)."""
    max_request_bytes: int = 500 * 1024
    """A request body, before and after decompression."""
    body_timeout: float = 10.0
    """Seconds allowed for reading a request body."""


class BadRequest(Exception):
    """A request that cannot be used at all: answered 400 ``{"code", "message"}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Prepared:
    """The messages of one request, checked and completed, before validation."""

    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(index in the request, message) to store."""
    quarantined: list[tuple[int, str | None, str, str]] = field(default_factory=list)
    """(index, field, reason, raw JSON capped) rejected before validation."""
    no_consent: int = 0
    """Messages dropped because they carry no consent (only counted)."""
    suppressed: int = 0
    """Messages dropped because their person was forgotten (set by the app)."""
    write_key: str | None = None
    """``writeKey`` from the body (batch level or the single message)."""
    write_key_conflict: bool = False
    """Messages of one request named different write keys."""


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 text as an aware UTC datetime (naive = UTC); None when it is not one."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def corrected_timestamp(msg: dict[str, Any], received: datetime, received_iso: str | None = None) -> Any:
    """``receivedAt - (sentAt - originalTimestamp)`` (Segment's clock-skew rule).

    Returns the message's own time value unchanged when it cannot be parsed
    (the validator then quarantines it) or when there is no ``sentAt``.
    """
    original = msg.get("originalTimestamp")
    if original is None or original == "":
        original = msg.get("timestamp")
    if original is None or original == "":
        return received_iso or iso(received)
    t = parse_time(original)
    sent = parse_time(msg.get("sentAt"))
    if t is None or sent is None:
        return original
    try:
        return iso(received - (sent - t))
    except OverflowError:
        return original


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _check(msg: dict[str, Any], kind: str) -> tuple[str | None, str] | None:
    """The first Segment-spec problem of a message: (field, reason), or None."""
    if not _present(msg.get("userId")) and not _present(msg.get("anonymousId")):
        return "anonymous_id", NO_IDENTITY
    if kind == "track" and not _present(msg.get("event")):
        return "event", "track needs event"
    if kind == "alias" and not _present(msg.get("previousId")):
        return "previous_id", "alias needs previous_id"
    if kind == "alias" and not _present(msg.get("userId")):
        return "user_id", "alias needs user_id"
    if kind == "group" and not _present(msg.get("groupId")):
        return "account_id", "group needs account_id"
    return None


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects deeper than ``limit`` (the root container is at
    depth 0; a container at depth ``limit`` exceeds). Recursion stops at ``limit``, so any input
    is safe."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if limit <= 0:
        return True
    for c in children:  # noqa: SIM110 - a loop is faster than any() over a generator
        if isinstance(c, dict | list) and depth_exceeds(c, limit - 1):
            return True
    return False


def too_deep(value: Any, limit: int) -> bool:
    """:func:`depth_exceeds`, answered False at once when orjson's text of ``value`` holds at most ``limit``
    ``{``/``[`` bytes (each list/object writes one, so there are at most that many containers and no chain
    of ``limit + 1``): the usual message costs one C call instead of a Python walk."""
    if _orjson is not None:
        try:
            out = _orjson.dumps(value)
        except TypeError:  # nested beyond orjson's limit, huge integers, lone surrogates: walk
            pass
        else:
            if out.count(b"{") + out.count(b"[") <= limit:
                return False
    return depth_exceeds(value, limit)


def _size(msg: Any, limit: int) -> tuple[int, bool]:
    """(UTF-8 size of the compact JSON as ``json.dumps(ensure_ascii=False)`` writes it, has lone
    surrogates).

    With orjson the size is measured from its output when that is at most ``0.4 x limit``: orjson
    writes strings exactly like the stdlib and differs only in floats (``1e-7`` for ``1e-07``,
    ``null`` for ``Infinity``/``NaN``), at most 2.25 times longer per value, so such a message
    is under ``limit`` either way. Larger messages, lone surrogates and integers beyond 64 bits
    are measured by the stdlib.
    """
    if _orjson is not None:
        try:
            n = len(_orjson.dumps(msg))
        except TypeError:  # lone surrogates, huge integers: the stdlib decides
            pass
        else:
            if n * 5 <= limit * 2:
                return n, False
    text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    try:
        return len(text.encode("utf-8")), False
    except UnicodeEncodeError:
        return len(text.encode("utf-8", errors="surrogatepass")), True


def _raw(msg: Any) -> str:
    return cap(json.dumps(msg, ensure_ascii=True, separators=(",", ":"), default=str)
               if not isinstance(msg, dict) else row_json(_scrub(msg)))


def _scrub(value: Any) -> Any:
    """Replace lone surrogates so the value can be written as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode("utf-8") if _has_surrogate(value) else value
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def prepare(payload: Any, endpoint: str, received: datetime, limits: Limits,
            ip_mask: IpMask | None, new_id: Callable[[int], str] | None = None) -> Prepared:
    """Check and complete the messages of one decoded request body.

    ``endpoint`` is a key of :data:`ENDPOINT_TYPES`. Raises :class:`BadRequest`
    when the body is not an object, or a batch body has no ``batch`` list.
    ``new_id(index)`` gives the ``messageId`` of a message without one (default: a UUID4).
    """
    kind = ENDPOINT_TYPES[endpoint]
    if not isinstance(payload, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    out = Prepared()
    keys: set[str] = set()
    top_key = payload.get("writeKey")
    if isinstance(top_key, str) and top_key:
        keys.add(top_key)
    if kind != "batch" and too_deep(payload, MAX_DEPTH + 2):
        raise BadRequest("too_deep", f"the body is nested deeper than {MAX_DEPTH} levels")
    if kind == "batch":
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise BadRequest("invalid_body", "a batch body needs a 'batch' list of messages")
        items: Iterable[Any] = segment.expand(payload)
    else:
        items = [payload]
    received_iso = iso(received)
    for index, msg in enumerate(items):
        if too_deep(msg, MAX_DEPTH):
            out.quarantined.append((index, None, TOO_DEEP, f"<message nested deeper than {MAX_DEPTH} levels>"))
            continue
        if not isinstance(msg, dict):
            out.quarantined.append((index, None, NOT_OBJECT, _raw(msg)))
            continue
        wk = msg.pop("writeKey", None)
        if isinstance(wk, str) and wk:
            keys.add(wk)
        if kind != "batch":
            msg["type"] = kind
        mtype_raw = msg.get("type")
        mtype = mtype_raw.strip().lower() if isinstance(mtype_raw, str) else ("track" if mtype_raw is None else "")
        if ip_mask is not None:
            anonymize_message(msg, ip_mask)
        size, surrogate = _size(msg, limits.max_event_bytes)
        if surrogate:
            out.quarantined.append((index, None, LONE_SURROGATE, _raw(msg)))
            continue
        if size > limits.max_event_bytes:
            out.quarantined.append((index, None, TOO_LARGE.format(limits.max_event_bytes), _raw(msg)))
            continue
        if mtype in schema.MESSAGE_TYPES:
            problem = _check(msg, mtype)
            if problem is not None:
                out.quarantined.append((index, problem[0], problem[1], _raw(msg)))
                continue
        if no_consent(msg):
            out.no_consent += 1
            continue
        mid = msg.get("messageId")
        mid_text = (segment.text(mid) or "").strip() if not isinstance(mid, dict | list) else ""
        msg["messageId"] = mid_text or (new_id(index) if new_id is not None else str(uuid.uuid4()))
        msg["timestamp"] = corrected_timestamp(msg, received, received_iso)
        msg.pop("originalTimestamp", None)
        msg["receivedAt"] = received_iso
        out.messages.append((index, msg))
    if len(keys) > 1:
        out.write_key_conflict = True
    out.write_key = next(iter(keys)) if len(keys) == 1 else None
    return out


def message_ids_of(msg: dict[str, Any]) -> list[str]:
    """The person ids a message names (userId, anonymousId, previousId) as text."""
    ids = []
    for k in ("userId", "anonymousId", "previousId"):
        v = msg.get(k)
        if _present(v) and not isinstance(v, dict | list):
            ids.append((segment.text(v) or "").strip())
    return ids


# ---------------------------------------------------------------- the live mapping, columnar
_ROW_COLUMNS = ("message_id", "ts", "received_at", "type", "event", "anonymous_id", "user_id", "account_id",
                "previous_id", "touchpoint", "channel", "utm_source", "utm_medium", "utm_campaign", "utm_content",
                "utm_term", "url", "referrer", "revenue", "currency", "properties", "traits")
"""The columns of :func:`journeylens.ingest.segment.to_row`, in its order."""
_NO_CONTEXT: dict[str, Any] = {}
_ISO_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)")
"""ISO texts with a zone that :meth:`datetime.fromisoformat` and DuckDB's ``TIMESTAMPTZ`` cast read alike:
anything else (naive texts, which DuckDB reads in the connection's time zone; any text Python refuses)
leaves the column to the validator's DuckDB parser."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EXACT = 2**53


def _text(v: Any) -> str | None:
    """:func:`journeylens.ingest.segment.text` (``json.dumps`` prints ints and finite floats with their
    ``__repr__``)."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return int.__repr__(v)
    if t is float and math.isfinite(v):
        return float.__repr__(v)
    return segment.dumps(v)


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _timestamps(values: Sequence[str | None]) -> pa.Array | None:
    """``values`` as ``timestamp[us, UTC]`` when every present one is an :data:`_ISO_TS` text Python
    parses; None otherwise."""
    cache: dict[str, int] = {}
    out: list[int | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        us = cache.get(v)
        if us is None:
            if not _ISO_TS.fullmatch(v):
                return None
            try:
                us = (datetime.fromisoformat(v) - _EPOCH) // _US
            except (ValueError, OverflowError):
                return None
            cache[v] = us
        out.append(us)
    return pa.array(out, pa.int64()).cast(TS_TYPE)


_US = timedelta(microseconds=1)


def _numbers(values: Sequence[Any]) -> pa.Array | None:
    """``values`` as float64 when every present one is a finite non-zero float or an int below 2^53 (their
    text parses to exactly that double); None otherwise."""
    for v in values:
        t = type(v)
        if v is None or (t is float and math.isfinite(v) and v != 0.0) or (t is int and -_MAX_EXACT < v < _MAX_EXACT):
            continue
        return None
    return pa.array(values, pa.float64())


def live_chunk(messages: list[dict[str, Any]]) -> tuple[RawChunk, frozenset[str]] | None:
    """The :class:`~journeylens.ingest.readers.RawChunk` that ``build_segment`` gives for ``messages``
    (each its own record, raw = the message), built column by column, or None when it does not apply
    (a message that is no object or holds a ``batch`` list: ``build_segment`` expands those).

    Values are those of :func:`journeylens.ingest.segment.to_row`; ``ts``/``received_at`` come as UTC
    timestamps when :func:`_timestamps` reads them all, ``revenue`` as float64 when :func:`_numbers`
    does (the validator converts typed columns without DuckDB, to the same values). Second: the JSON
    columns whose every value was serialised here from an object without ``NaN``/``Infinity`` (valid
    JSON objects: the validator need not check them)."""
    n = len(messages)
    rows: list[tuple[Any, ...]] = []
    props_ok = traits_ok = True
    dumps = segment.dumps
    for msg in messages:
        if type(msg) is not dict or type(msg.get("batch")) is list:
            return None
        g = msg.get
        kind_raw = g("type")
        kind = kind_raw.strip().lower() if type(kind_raw) is str else None
        props = g("properties")
        context = g("context")
        if type(context) is not dict:
            context = _NO_CONTEXT
        campaign = context.get("campaign")
        if type(campaign) is not dict:
            campaign = _NO_CONTEXT
        page = context.get("page")
        if type(page) is not dict:
            page = _NO_CONTEXT
        if kind in ("page", "screen"):
            event = _first(g("name"), kind)
        elif kind in ("identify", "group", "alias"):
            event = kind
        else:
            event = g("event")
        if kind == "identify":
            traits = _first(g("traits"), context.get("traits"))
        elif kind == "group":
            traits = g("traits")
        else:
            traits = None
        if traits is None:
            traits_text = None
        elif type(traits) is dict:
            traits_text = dumps(traits)
            if traits_ok and ("NaN" in traits_text or "Infinity" in traits_text):
                traits_ok = False
        else:
            traits_ok = False
            traits_text = _text(traits)
        if type(props) is dict:
            p = props.get
            touch, channel, url, referrer, currency = (p("touchpoint"), p("channel"), p("url"), p("referrer"),
                                                       p("currency"))
            revenue = _first(p("revenue"), p("total"))
            props_text: str | None = dumps(props)
            if props_ok and ("NaN" in props_text or "Infinity" in props_text):  # type: ignore[operator]
                props_ok = False
        else:
            touch = channel = url = referrer = currency = revenue = None
            if props is not None:
                props_ok = False
            props_text = _text(props)
        rows.append((
            _text(g("messageId")),
            _text(_first(g("timestamp"), g("originalTimestamp"), g("sentAt"))),
            _text(g("receivedAt")),
            _text(kind_raw),
            _text(event),
            _text(g("anonymousId")),
            _text(g("userId")),
            _text(g("groupId") if kind == "group" else context.get("groupId")),
            _text(g("previousId")),
            _text(touch),
            _text(channel),
            _text(campaign.get("source")),
            _text(campaign.get("medium")),
            _text(campaign.get("name")),
            _text(campaign.get("content")),
            _text(campaign.get("term")),
            _text(_first(page.get("url"), url)),
            _text(_first(page.get("referrer"), referrer)),
            revenue,
            _text(currency),
            props_text,
            traits_text,
        ))
    values = list(zip(*rows, strict=True)) if rows else [() for _ in _ROW_COLUMNS]
    columns: dict[str, pa.Array] = {}
    for name, col in zip(_ROW_COLUMNS, values, strict=True):
        if name == "ts" or name == "received_at":
            typed = _timestamps(col)
            columns[name] = typed if typed is not None else pa.array(col, pa.string())
        elif name == "revenue":
            typed = _numbers(col)
            columns[name] = typed if typed is not None else pa.array([_text(v) for v in col], pa.string())
        else:
            columns[name] = pa.array(col, pa.string())

    def raw(indices: Sequence[int]) -> list[str]:
        return [cap(row_json(messages[int(i)])) for i in indices]

    chunk = RawChunk(n=n, columns=columns, folded=None, lines=np.arange(n, dtype=np.int64), bytes_done=0, raw=raw)
    return chunk, frozenset(k for k, ok in (("properties", props_ok), ("traits", traits_ok)) if ok)


@dataclass
class Checked:
    """Prepared messages of one workspace after mapping and validation."""

    accepted: pa.Table
    """Canonical ``events`` rows of the messages that passed, in input order."""
    accepted_items: list[int]
    """For each accepted row, the position of its message in the input list."""
    rejected: list[tuple[int, str | None, str, str | None]]
    """(position, field, reason, raw JSON) of the messages the validator quarantined."""


def validate_messages(messages: list[dict[str, Any]], workspace: str, now: datetime, duck: Duck,
                      received_at: datetime | None = None) -> Checked:
    """Map prepared messages exactly as a Segment JSON-lines import does and validate them
    (source ``http``); every message ends accepted or rejected with the first failing check.

    The mapping is :func:`live_chunk` (the rows of
    :func:`~journeylens.ingest.readers.build_segment`, some columns already typed) when it
    applies, else ``build_segment`` itself."""
    fast = live_chunk(messages)
    if fast is not None:
        chunk, known_objects = fast
    else:
        records: list[Any] = [(g, msg, msg) for g, msg in enumerate(messages)]
        chunk = build_segment(ParsedLines(records, [], 0, []))  # raw: the message (not line bytes)
        known_objects = frozenset()
    validator = Validator("events", workspace=workspace, source="http", tz="UTC",
                          received_at=received_at or now, now=now, duck=duck, known_objects=known_objects)
    checked = validator.validate(chunk)
    bad = checked.quarantined
    lines = [int(g) for g in bad.column("line").to_pylist()]
    rejected = list(zip(lines, bad.column("field").to_pylist(), bad.column("reason").to_pylist(),
                        bad.column("raw").to_pylist(), strict=True))
    bad_set = set(lines)
    return Checked(checked.accepted, [g for g in range(len(messages)) if g not in bad_set], rejected)


def key_hashes(accepted: pa.Table, duck: Duck) -> Any:
    """DuckDB's ``hash(workspace, message_id)`` of each row of ``accepted`` (numpy ``uint64``), equal
    to :meth:`journeylens.store.duckdb.DuckDBStore.key_hashes` of the same keys (DuckDB's hash is
    deterministic, the same in every process using the same DuckDB)."""
    if accepted.num_rows == 0:
        return np.empty(0, dtype=np.uint64)
    (h,) = duck.select({"w": accepted.column("workspace"), "m": accepted.column("message_id")}, ["hash(c0, c1)"])
    return np.asarray(h.to_numpy(zero_copy_only=False), dtype=np.uint64)


# ---------------------------------------------------------------- validation in a worker process
_FRAME = struct.Struct("!I")


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """``n`` bytes from the pipe ``fd``; EOFError at its end, TimeoutError after ``deadline``."""
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the validation worker did not answer in time")
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the pipe was closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_FRAME.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_frame(fd: int, deadline: float | None = None) -> bytes:
    (n,) = _FRAME.unpack(_read_exact(fd, _FRAME.size, deadline))
    return _read_exact(fd, n, deadline)


def validation_worker_main() -> None:
    """The loop of a validation worker process (``ValidationWorker``): read
    ``marshal((workspace, now_us, messages))`` frames from stdin, answer
    ``pickle(("ok", accepted, accepted_items, rejected, key_hashes))`` or ``pickle(("error", text))`` on
    stdout; exits quietly when stdin ends or stdout is closed (the server stopped or died)."""
    try:
        _validation_loop()
    except BrokenPipeError:
        return


def _validation_loop() -> None:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    duck = Duck("UTC")
    duck.con.execute("SET threads = 1")
    # as the server (CollectorSettings.tune_gc): the ~100,000 objects of the imports are never walked again,
    # and collections run less often (a group allocates ~10 objects per message, none in cycles)
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    _write_frame(stdout, pickle.dumps(("ready",)))
    while True:
        try:
            frame = _read_frame(stdin)
        except EOFError:
            return
        try:
            workspace, now_us, messages = marshal.loads(frame)
            now = datetime.fromtimestamp(now_us / 1e6, UTC)
            c = validate_messages(messages, workspace, now, duck)
            answer = pickle.dumps(("ok", c.accepted, c.accepted_items, c.rejected, key_hashes(c.accepted, duck)),
                                  protocol=5)
        except Exception as exc:  # reported to the server, which fails the group
            answer = pickle.dumps(("error", f"{type(exc).__name__}: {str(exc)[:300]}"), protocol=5)
        _write_frame(stdout, answer)


class ValidationWorker:
    """:func:`validate_messages` in a child process (``python -c ...validation_worker_main()``),
    so mapping and validation run beside the server's threads instead of sharing its GIL.

    Messages travel as ``marshal`` (every value JSON parsing can give, including lone
    surrogates, huge integers and non-finite floats, arrives unchanged); results as pickle.
    The child starts in the background; :attr:`ready` turns true when it has imported
    everything. One request at a time (the caller serialises). The child exits when the
    server's end of its stdin closes, so a killed server leaves no worker behind.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", "from journeylens.ingest.live import validation_worker_main as m; m()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the child answered its ready frame (checked without blocking)."""
        if self._ready:
            return True
        proc = self.proc
        if proc is None or proc.poll() is not None or proc.stdout is None:
            return False
        if select.select([proc.stdout.fileno()], [], [], 0)[0]:
            try:
                self._ready = pickle.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + self.timeout)) == ("ready",)
            except (EOFError, TimeoutError):
                self.close()
        return self._ready

    def validate(self, messages: list[dict[str, Any]], workspace: str, now: datetime) -> tuple[Checked, Any]:
        """As :func:`validate_messages`, with the :func:`key_hashes` of the accepted rows; raises
        :class:`WorkerLost` when the child is gone or hangs (it is then stopped),
        :class:`RuntimeError` for an error inside the validation."""
        self.send(messages, workspace, now)
        return self.receive()

    def send(self, messages: list[dict[str, Any]], workspace: str, now: datetime) -> None:
        """The first half of :meth:`validate`: hand the messages over (answer with :meth:`receive`)."""
        proc = self.proc
        if proc is None or proc.stdin is None or not self._ready:
            raise WorkerLost("the validation worker is not running")
        now_us = int(now.timestamp() * 1_000_000)
        try:
            _write_frame(proc.stdin.fileno(), marshal.dumps((workspace, now_us, messages)))
        except OSError as exc:
            self.close()
            raise WorkerLost(f"the validation worker failed: {exc}") from exc

    def receive(self) -> tuple[Checked, Any]:
        """The second half of :meth:`validate`: the answer to the last :meth:`send`."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            raise WorkerLost("the validation worker is not running")
        try:
            answer = pickle.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + self.timeout))
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError) as exc:
            self.close()
            raise WorkerLost(f"the validation worker failed: {exc}") from exc
        if answer[0] != "ok":
            raise RuntimeError(f"validation failed in the worker: {answer[1]}")
        return Checked(answer[1], answer[2], answer[3]), answer[4]

    def close(self) -> None:
        proc, self.proc, self._ready = self.proc, None, False
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class WorkerLost(Exception):
    """The validation worker process is gone or did not answer."""
