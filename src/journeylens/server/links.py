"""Redirect / QR links for offline touchpoints (flyers, posters, print ads, fairs).

``create_link`` stores a short code for a touchpoint and a target URL.
``GET /r/{code}`` on the collector records one ``track`` event
``link_visit`` (touchpoint and channel of the link, its UTM fields as
``context.campaign``, ``properties.link_code``; the visitor's anonymous id
from the ``jl_aid`` cookie or a new UUID, set as cookie) and answers 302 to
:func:`target_url` (the URL with the link's UTM fields appended, existing
query parameters kept). :func:`render_qr` draws the link as PNG or SVG.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from journeylens import schema
from journeylens.errors import InvalidParameterError
from journeylens.store.duckdb import DuckDBStore

UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
LINK_EVENT = "link_visit"


@dataclass(frozen=True)
class Link:
    code: str
    workspace: str
    touchpoint: str
    channel: str
    url: str
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    created_at: datetime | None = None

    def utm(self) -> dict[str, str]:
        return {k: v for k in UTM if (v := getattr(self, k))}

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        return d


def target_url(link: Link) -> str:
    """The link's URL with its UTM fields added (parameters already in the URL win)."""
    parts = urlsplit(link.url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, v) for k, v in link.utm().items() if k not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameterError(f"'{url}' is not an http(s) URL", hint="e.g. https://example.com/spring")


def create_link(store: DuckDBStore, workspace: str, touchpoint: str, url: str, *, channel: str = "qr",
                code: str | None = None, **utm: str | None) -> Link:
    """Store a new link; ``code`` defaults to 8 random URL-safe characters."""
    _check_url(url)
    if not touchpoint.strip():
        raise InvalidParameterError("a link needs a touchpoint")
    unknown = set(utm) - set(UTM)
    if unknown:
        raise InvalidParameterError(f"unknown link fields: {', '.join(sorted(unknown))}")
    code = code or secrets.token_urlsafe(6)
    if not code.replace("-", "").replace("_", "").isalnum():
        raise InvalidParameterError(f"link code '{code}' may only hold letters, digits, - and _")
    link = Link(code=code, workspace=workspace, touchpoint=touchpoint.strip(), channel=channel.strip() or "qr",
                url=url, created_at=datetime.now(UTC), **{k: v for k, v in utm.items() if v})
    dupes = store.append_parts([("links", pa.Table.from_pylist([link.__dict__], schema=schema.LINKS.arrow_schema()),
                                 ("code",))])[0]
    if dupes:
        raise InvalidParameterError(f"link code '{code}' exists already")
    return link


def list_links(store: DuckDBStore, workspace: str | None = None) -> list[Link]:
    cols = schema.LINKS.names
    rows = store.query(f"SELECT {', '.join(cols)} FROM links ORDER BY created_at")
    links = [Link(**dict(zip(cols, r, strict=True))) for r in rows]
    return [lk for lk in links if workspace is None or lk.workspace == workspace]


def link_message(link: Link, anonymous_id: str, referrer: str | None) -> dict[str, Any]:
    """The Segment track message recorded for one visit of ``link``."""
    campaign = {"source": link.utm_source, "medium": link.utm_medium, "name": link.utm_campaign,
                "content": link.utm_content, "term": link.utm_term}
    context: dict[str, Any] = {"campaign": {k: v for k, v in campaign.items() if v}}
    if referrer:
        context["page"] = {"referrer": referrer}
    return {"type": "track", "event": LINK_EVENT, "anonymousId": anonymous_id,
            "properties": {"touchpoint": link.touchpoint, "channel": link.channel, "link_code": link.code,
                           "url": link.url},
            "context": context}


def render_qr(url: str, out: Path, *, scale: int = 8) -> Path:
    """Write the QR code of ``url`` to ``out`` (.png or .svg, chosen by the suffix)."""
    import segno

    if out.suffix.lower() not in (".png", ".svg"):
        raise InvalidParameterError(f"cannot write a QR code as '{out.suffix}'", hint="name the file .png or .svg")
    segno.make(url, error="m").save(str(out), scale=scale, border=4)
    return out
