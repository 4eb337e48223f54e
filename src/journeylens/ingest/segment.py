"""Segment / RudderStack messages (one JSON object per line) → canonical event rows.

Each message becomes one ``events`` row, every value as text (the validator
parses it like a CSV cell):

=================  ==========================================================
``message_id``     ``messageId``
``ts``             ``timestamp``, else ``originalTimestamp``, else ``sentAt``
``received_at``    ``receivedAt``
``user_id``        ``userId``
``anonymous_id``   ``anonymousId``
``type``           ``type`` (lower-cased; a message without one is a track call)
``event``          track: ``event``; page/screen: ``name`` or "page"/"screen";
                   identify/group/alias: the type name
``properties``     ``properties`` (as JSON text)
``traits``         identify: ``traits`` or ``context.traits``; group: ``traits``
``account_id``     group: ``groupId``; other calls: ``context.groupId``
``previous_id``    ``previousId``
``utm_*``          ``context.campaign.{source,medium,name,content,term}``
``url``            ``context.page.url``, else ``properties.url``
``referrer``       ``context.page.referrer``, else ``properties.referrer``
``revenue``        ``properties.revenue``, else ``properties.total``
``currency``       ``properties.currency``
``touchpoint``     ``properties.touchpoint``
``channel``        ``properties.channel`` (else derived from UTM/referrer)
=================  ==========================================================

A line ``{"batch": [...]}`` (the Segment HTTP batch body) yields one row per
message; the batch's own ``context``, ``sentAt`` and ``integrations`` are
defaults for its messages. Other message fields (``context`` beyond the
above, ``integrations``, ``_metadata`` ...) are not stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from journeylens import schema

COLUMN_MAP: dict[str, str] = {
    "messageId": "message_id", "timestamp": "ts", "receivedAt": "received_at", "type": "type",
    "event": "event", "anonymousId": "anonymous_id", "userId": "user_id", "groupId": "account_id",
    "previousId": "previous_id", "properties.touchpoint": "touchpoint", "properties.channel": "channel",
    "context.campaign.source": "utm_source", "context.campaign.medium": "utm_medium",
    "context.campaign.name": "utm_campaign", "context.campaign.content": "utm_content",
    "context.campaign.term": "utm_term", "context.page.url": "url", "context.page.referrer": "referrer",
    "properties.revenue": "revenue", "properties.currency": "currency", "properties": "properties",
    "traits": "traits",
}
"""Shown as ``SourceInfo.column_map`` for Segment files."""

_SIGNATURE_KEYS = frozenset({
    "messageId", "anonymousId", "userId", "originalTimestamp", "sentAt", "receivedAt", "context",
    "groupId", "previousId", "integrations",
})


def looks_like_segment(record: Any) -> bool:
    """A Segment/RudderStack message or batch body (camelCase message fields)."""
    if not isinstance(record, dict):
        return False
    if isinstance(record.get("batch"), list):
        return True
    kind = record.get("type")
    return isinstance(kind, str) and kind.lower() in schema.MESSAGE_TYPES and \
        bool(_SIGNATURE_KEYS.intersection(record))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def text(value: Any) -> str | None:
    """A JSON value as the text the validator parses (nested values as JSON)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return dumps(value)  # numbers as JSON prints them; lists and objects as JSON text


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def expand(record: dict[str, Any]) -> list[Any]:
    """The messages of one line: the batch's messages (with batch defaults) or the line itself."""
    batch = record.get("batch")
    if not isinstance(batch, list):
        return [record]
    defaults = {k: record[k] for k in ("context", "sentAt", "integrations") if k in record}
    out: list[Any] = []
    for msg in batch:
        if isinstance(msg, dict) and defaults:
            merged = dict(defaults)
            merged.update(msg)
            if isinstance(defaults.get("context"), dict) and isinstance(msg.get("context"), dict):
                merged["context"] = {**defaults["context"], **msg["context"]}
            msg = merged
        out.append(msg)
    return out


def to_row(msg: dict[str, Any]) -> dict[str, str | None]:
    """One message as canonical ``events`` values (text)."""
    kind_raw = msg.get("type")
    kind = kind_raw.strip().lower() if isinstance(kind_raw, str) else None
    props = msg.get("properties")
    context = msg.get("context")
    campaign = _get(context, "campaign")

    if kind in ("page", "screen"):
        event = _first(msg.get("name"), kind)
    elif kind in ("identify", "group", "alias"):
        event = kind
    else:
        event = msg.get("event")

    traits: Any = None
    if kind == "identify":
        traits = _first(msg.get("traits"), _get(context, "traits"))
    elif kind == "group":
        traits = msg.get("traits")

    account = msg.get("groupId") if kind == "group" else _get(context, "groupId")

    return {
        "message_id": text(msg.get("messageId")),
        "ts": text(_first(msg.get("timestamp"), msg.get("originalTimestamp"), msg.get("sentAt"))),
        "received_at": text(msg.get("receivedAt")),
        "type": text(kind_raw),
        "event": text(event),
        "anonymous_id": text(msg.get("anonymousId")),
        "user_id": text(msg.get("userId")),
        "account_id": text(account),
        "previous_id": text(msg.get("previousId")),
        "touchpoint": text(_get(props, "touchpoint")),
        "channel": text(_get(props, "channel")),
        "utm_source": text(_get(campaign, "source")),
        "utm_medium": text(_get(campaign, "medium")),
        "utm_campaign": text(_get(campaign, "name")),
        "utm_content": text(_get(campaign, "content")),
        "utm_term": text(_get(campaign, "term")),
        "url": text(_first(_get(context, "page", "url"), _get(props, "url"))),
        "referrer": text(_first(_get(context, "page", "referrer"), _get(props, "referrer"))),
        "revenue": text(_first(_get(props, "revenue"), _get(props, "total"))),
        "currency": text(_get(props, "currency")),
        "properties": text(props),
        "traits": text(traits),
    }
