"""Durations and periods shared by the time-based analyses.

A *duration* is written ``<number><unit>`` with unit ``s`` (seconds), ``m``
(minutes), ``h`` (hours), ``d`` (days) or ``w`` (weeks) — ``30m``, ``12h``,
``7d``, ``4w``, ``1.5h`` — or as plain seconds (``90``, ``"90"``). It must come
to a whole, positive number of seconds.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from journeylens.errors import InvalidParameterError

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
"""Seconds per duration unit."""

PERIODS: dict[str, str] = {"day": "D", "week": "W", "month": "M"}
"""Trend periods and the Ibis ``truncate`` unit of each (weeks start on Monday, UTC)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_HINT = "write e.g. 30m, 12h, 7d, 4w or plain seconds"


def parse_duration(value: str | int | float, *, name: str = "duration") -> int:
    """Whole seconds of ``value`` (``"7d"`` -> 604800); raise :class:`InvalidParameterError` otherwise."""
    if isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be a duration, got {value!r}", hint=_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise InvalidParameterError(f"{name} '{value}' is not a duration", hint=_HINT)
        seconds = float(match.group(1)) * UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidParameterError(f"{name} must be positive, got {value!r}", hint=_HINT)
    if not seconds.is_integer():
        raise InvalidParameterError(f"{name} {value!r} is not a whole number of seconds", hint=_HINT)
    return int(seconds)


def format_duration(seconds: float | None) -> str:
    """A short human form of ``seconds``: ``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h``, ``3w 2d``."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.2f}s"
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        n, s = divmod(s, UNIT_SECONDS[unit])
        if n or parts:
            parts.append(f"{n}{unit}")
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0")) or "0s"


HISTOGRAM_EDGES: tuple[int, ...] = (
    0, 60, 5 * 60, 15 * 60, 3600, 6 * 3600, 86_400, 3 * 86_400, 7 * 86_400, 14 * 86_400,
    30 * 86_400, 90 * 86_400, 365 * 86_400,
)
"""Candidate bin edges for time-to-convert histograms: 1m, 5m, 15m, 1h, 6h, 1d, 3d, 1w, 2w, 30d, 90d, 1y."""


def histogram_edges(limit_seconds: int) -> tuple[int, ...]:
    """Bin edges from 0 up to ``limit_seconds``: the candidate edges below it, then the limit itself.

    Bin ``i`` holds values ``edges[i] <= x < edges[i+1]``; the last bin also holds ``x == limit``.
    """
    inner = tuple(e for e in HISTOGRAM_EDGES if e < limit_seconds)
    return (*inner, limit_seconds)


_PERIOD_TEXT = (
    (re.compile(r"^(\d{4})$"), "year"),
    (re.compile(r"^(\d{4})-[qQ]([1-4])$"), "quarter"),
    (re.compile(r"^(\d{4})-(\d{2})$"), "month"),
    (re.compile(r"^(\d{4})-[wW](\d{2})$"), "week"),
    (re.compile(r"^(\d{4}-\d{2}-\d{2})$"), "day"),
)


def parse_period(text: str) -> tuple[datetime, datetime]:
    """The half-open UTC interval ``[start, end)`` a period names: ``2026`` (year), ``2026-Q3``,
    ``2026-10`` (month), ``2026-W40`` (ISO week, Monday to Monday), ``2026-10-05`` (day) or
    ``2026-10-01..2026-10-31`` (both days included)."""
    value = text.strip()
    hint = "write 2026, 2026-Q3, 2026-10, 2026-W40, 2026-10-05 or 2026-10-01..2026-10-31"
    try:
        if ".." in value:
            a, b = (part.strip() for part in value.split("..", 1))
            start = datetime.fromisoformat(a).replace(tzinfo=UTC)
            end = datetime.fromisoformat(b).replace(tzinfo=UTC) + timedelta(days=1)
            if end <= start:
                raise InvalidParameterError(f"period '{text}' ends before it starts", hint=hint)
            return start, end
        for pattern, kind in _PERIOD_TEXT:
            m = pattern.match(value)
            if not m:
                continue
            if kind == "year":
                y = int(m.group(1))
                return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
            if kind == "quarter":
                y, q = int(m.group(1)), int(m.group(2))
                start = datetime(y, 3 * q - 2, 1, tzinfo=UTC)
                return start, datetime(y + (q == 4), 1 if q == 4 else 3 * q + 1, 1, tzinfo=UTC)
            if kind == "month":
                y, mo = int(m.group(1)), int(m.group(2))
                start = datetime(y, mo, 1, tzinfo=UTC)
                return start, datetime(y + (mo == 12), 1 if mo == 12 else mo + 1, 1, tzinfo=UTC)
            if kind == "week":
                start = datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1).replace(tzinfo=UTC)
                return start, start + timedelta(days=7)
            start = datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
    except ValueError:
        raise InvalidParameterError(f"period '{text}' is not a valid date or period", hint=hint) from None
    raise InvalidParameterError(f"period '{text}' is not a period", hint=hint)


def parse_instant(value: Any, *, name: str = "as_of") -> Any:
    """An ``as_of``-style input: a date, a datetime (naive = UTC) or ISO text (``2026-06-30``,
    ``2026-06-30T12:00:00Z``); other values pass through for the caller's validation."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParameterError(f"{name} '{value}' is not a date or time",
                                        hint="write e.g. 2026-06-30 or 2026-06-30T12:00:00Z") from None
    return value


def utc_instant(value: date | datetime | None) -> datetime | None:
    """An ``as_of`` value as an aware UTC datetime: a date means the end of that UTC day, a naive
    datetime is UTC; None stays None."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return datetime.combine(value, time.max, tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
