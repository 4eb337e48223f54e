"""Segment HTTP Tracking API payloads → messages ready for the import validator.

The live path maps messages exactly like ``journeylens import events`` does
for Segment JSON lines: :func:`journeylens.ingest.segment.expand` merges batch
defaults into each message, :func:`journeylens.ingest.readers.build_segment`
maps them onto canonical columns and :class:`journeylens.ingest.validate.Validator`
parses and checks them (see :mod:`journeylens.server.writer`). This module adds
only what is specific to HTTP:

* decoding the body (gzip with a decompression-bomb guard, size limits,
  strict UTF-8 and JSON: ``NaN``/``Infinity`` and nesting deeper than the
  parser allows make the request unparseable);
* the message type implied by the endpoint (``/v1/track`` → ``track``);
* per-message checks that quarantine one message and keep the rest:
  not an object, larger than ``max_event_bytes``, lone surrogates, missing
  ``userId``/``anonymousId``, ``track`` without ``event``, ``alias`` without
  ``previousId``, ``group`` without ``groupId``;
* server fields: ``messageId`` (a UUID4 when missing), ``receivedAt`` (the
  server clock; a client value is ignored) and ``timestamp`` corrected for
  client clock skew: ``timestamp = receivedAt - (sentAt - originalTimestamp)``
  where ``originalTimestamp`` is the message's ``originalTimestamp`` or else
  its ``timestamp``; without either, ``timestamp = receivedAt``;
* privacy: IP addresses anonymised, no-consent messages dropped (counted).
"""

from __future__ import annotations

import importlib
import json
import zlib
from typing import Any

try:  # optional speed-up (pip install orjson); the stdlib parser decides every doubtful body
    _orjson: Any = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

from journeylens.ingest.live import (
    ENDPOINT_TYPES,
    LONE_SURROGATE,
    MAX_DEPTH,
    NO_IDENTITY,
    NOT_OBJECT,
    TOO_DEEP,
    TOO_LARGE,
    BadRequest,
    Limits,
    Prepared,
    corrected_timestamp,
    depth_exceeds,
    iso,
    message_ids_of,
    parse_time,
    prepare,
)

__all__ = ["ENDPOINT_TYPES", "LONE_SURROGATE", "MAX_DEPTH", "NOT_OBJECT", "NO_IDENTITY", "TOO_DEEP", "TOO_LARGE",
           "BadRequest", "Limits", "Prepared", "corrected_timestamp", "decode_body", "depth_exceeds", "gunzip",
           "iso", "message_ids_of", "parse_time", "prepare"]


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_strict_constant)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
"""orjson reads integers beyond 64 bits as floats: bodies with a run of 19 digits go to the stdlib
parser (found by mapping every digit to 0 and searching 19 zeros: ~1 µs per KB)."""


def decode_body(body: bytes, content_encoding: str | None, content_type: str | None,
                limits: Limits) -> Any:
    """The JSON value of a request body; raises :class:`BadRequest`.

    ``Content-Encoding: gzip`` (or a body starting with the gzip magic bytes)
    is decompressed at most to ``max_request_bytes``; a body that would
    decompress further is rejected (decompression-bomb guard). Accepted
    content types: ``application/json``, ``text/plain`` (analytics.js beacons),
    any ``+json`` type, or none. The value is what :data:`_DECODER` (the stdlib, strict:
    no ``NaN``/``Infinity``; the last of duplicate keys wins) gives; orjson is used first when
    installed, for bodies it accepts and that hold no run of 19 digits (where the two agree).
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype not in ("application/json", "text/plain") and not ctype.endswith("+json"):
        raise BadRequest("unsupported_content_type",
                         f"content type '{ctype[:60]}' is not supported; send application/json or text/plain")
    if len(body) > limits.max_request_bytes:
        raise BadRequest("request_too_large", f"request body larger than {limits.max_request_bytes} bytes")
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise BadRequest("unsupported_encoding", f"content encoding '{encoding[:40]}' is not supported; use gzip")
    if encoding in ("gzip", "x-gzip") or body[:2] == b"\x1f\x8b":
        body = gunzip(body, limits.max_request_bytes)
    if not body.strip():
        raise BadRequest("empty_body", "the request body is empty")
    if _orjson is not None and _LONG_DIGITS not in body.translate(_DIGITS_TO_ZERO):
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass  # the stdlib parser gives the answer and the message (BOM, lone surrogates, 1e400 ...)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest("invalid_utf8", f"the body is not UTF-8 text (byte {exc.start})") from exc
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from exc
    except ValueError as exc:  # NaN/Infinity, too many digits in an integer
        raise BadRequest("invalid_json", f"invalid JSON: {str(exc).splitlines()[0][:200]}") from exc
    except RecursionError as exc:
        raise BadRequest("invalid_json", "invalid JSON: nested too deeply") from exc


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress gzip ``body`` to at most ``limit`` bytes; raises :class:`BadRequest`."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest("invalid_gzip", f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or d.unconsumed_tail:
        raise BadRequest("request_too_large", f"request body larger than {limit} bytes after decompression")
    if not d.eof:
        raise BadRequest("invalid_gzip", "the gzip body is truncated")
    return out


