"""The funnel request model: parsing, validation rules and their errors (no backend needed)."""

from __future__ import annotations

from typing import Any

import pytest

from journeylens.analyses._time import format_duration, histogram_edges, parse_duration
from journeylens.analyses.funnel import Condition, Exclusion, FunnelQuery, Step
from journeylens.errors import InvalidParameterError, UnknownNameError


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("12h", 43_200), ("7d", 604_800), ("4w", 2_419_200), ("90", 90), ("90s", 90),
    (3600, 3600), ("1.5h", 5400), (" 2D ", 172_800),
])
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "d", "-5m", "0", "0.5", "1.5s", "7 days", True])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_duration(text, name="window")
    assert info.value.code == "invalid_parameter"
    assert "window" in info.value.message and info.value.hint


def test_format_duration_and_histogram_edges() -> None:
    assert [format_duration(s) for s in (None, 0, 45, 90, 3600, 3660, 90_000, 700_000)] == [
        "–", "0s", "45s", "1m 30s", "1h", "1h 1m", "1d 1h", "1w 1d"]
    assert histogram_edges(3600) == (0, 60, 300, 900, 3600)
    assert histogram_edges(7 * 86_400) == (0, 60, 300, 900, 3600, 21_600, 86_400, 259_200, 604_800)
    assert histogram_edges(30) == (0, 30)


def test_step_short_forms() -> None:
    assert Step.parse("purchase") == Step(name="purchase", conditions=(Condition(field="event", values=("purchase",)),))
    s = Step.parse("event=purchase&properties.total>=50")
    assert s.conditions == (Condition(field="event", values=("purchase",)),
                            Condition(field="properties.total", op="gte", values=("50",)))
    assert Step.parse("touchpoint = shop | app").conditions == (
        Condition(field="touchpoint", values=("shop", "app")),)
    assert Step.parse("channel!=email", name="not email").name == "not email"
    assert str(Step.parse("channel!=email").conditions[0]) == "channel!=email"


@pytest.mark.parametrize("text", ["", "  ", "channel=", "=email", "properties.total>lots", "a&"])
def test_bad_steps(text: str) -> None:
    with pytest.raises(InvalidParameterError):
        Step.parse(text)


def test_query_defaults() -> None:
    q = FunnelQuery(steps=["visit", "purchase"])
    assert (q.order, q.window_seconds, q.step_window_seconds, q.unit, q.unit_column) == (
        "ordered", 14 * 86_400, None, "person", "person_id")
    assert (q.breakdown, q.breakdown_attribution, q.attribution_step, q.trend_period) == (
        None, "first_touch", None, None)
    assert q.step_names == ("visit", "purchase")


def test_query_accepts_objects_and_mappings() -> None:
    q = FunnelQuery(steps=[{"name": "big", "filter": "event=purchase&revenue>100"}, Step.parse("visit")],
                    exclusions=[{"step": "refund", "from_step": 1, "to_step": 2}], window=3600)
    assert q.step_names == ("big", "visit")
    assert q.exclusions == (Exclusion(step=Step.parse("refund"), from_step=1, to_step=2),)
    assert FunnelQuery(steps=["a", "b"], exclusions=["x:1:2"]).exclusions[0].to_step == 2


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"steps": ["visit"]}, InvalidParameterError, "2 to 32 steps"),
    ({"steps": [f"s{i}" for i in range(33)]}, InvalidParameterError, "2 to 32 steps"),
    ({"order": "orderd"}, UnknownNameError, "did you mean 'ordered'"),
    ({"unit": "acount"}, UnknownNameError, "did you mean 'account'"),
    ({"window": "7x"}, InvalidParameterError, "window '7x' is not a duration"),
    ({"step_window": "2d", "window": "1d"}, InvalidParameterError, "longer than the window"),
    ({"step_window": "1h", "order": "unordered"}, InvalidParameterError, "needs ordered steps"),
    ({"exclusions": ["x:1:2"], "order": "strict"}, InvalidParameterError, "exclusions need order 'ordered'"),
    ({"exclusions": ["x:1:2"], "order": "unordered"}, InvalidParameterError, "exclusions need order 'ordered'"),
    ({"exclusions": ["x:2:2"]}, InvalidParameterError, "need 1 <= i < j <= 2"),
    ({"exclusions": ["x:0:2"]}, InvalidParameterError, "need 1 <= i < j <= 2"),
    ({"exclusions": ["x-1-2"]}, InvalidParameterError, "cannot read the exclusion"),
    ({"breakdown_attribution": "first"}, UnknownNameError, "did you mean 'first_touch'"),
    ({"breakdown_attribution": "step:3"}, InvalidParameterError, "step:3 is not a step"),
    ({"breakdown_attribution": "step:1", "order": "unordered"}, InvalidParameterError, "needs ordered steps"),
    ({"breakdown_limit": 0}, InvalidParameterError, "at least 1"),
    ({"trend_period": "weekly"}, UnknownNameError, "did you mean 'week'"),
    ({"colour": "red"}, InvalidParameterError, "colour: Extra inputs are not permitted"),
    ({"steps": 5}, InvalidParameterError, "invalid funnel query: steps"),
])
def test_validation_rules(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        FunnelQuery(**{"steps": ["visit", "purchase"], **kwargs})
    assert info.value.code in ("invalid_parameter", "unknown_name")  # type: ignore[attr-defined]


def test_query_is_frozen_and_round_trips_as_json() -> None:
    q = FunnelQuery(steps=["visit", "channel=email"], window="7d", breakdown="channel", trend_period="week")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        q.window = "1d"
    assert FunnelQuery(**q.model_dump()) == q
