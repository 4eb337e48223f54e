"""Funnels on hand-checked cases, the same on DuckDB and Spark.

Every expected number is derived by hand in the comment next to the data, from the
definitions in docs/funnels.md. Times are minutes after T0 (Sunday 2026-03-01 09:00 UTC)
unless a test says seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir
import pytest

from journeylens.analyses.funnel import FunnelQuery, FunnelResult, _plan, funnel
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import Store, open_store
from journeylens.workspace import Workspace
from tests.helpers import T0, events_table

Touches = Callable[[list[dict[str, Any]]], ir.Table]


def ev(person: str, event: str, minute: float, **kw: Any) -> dict[str, Any]:
    return {"user_id": person, "event": event, "minute": minute, **kw}


def at(person: str, event: str, seconds: float, **kw: Any) -> dict[str, Any]:
    return {"user_id": person, "event": event, "ts": T0 + timedelta(seconds=seconds), **kw}


def persons(result: FunnelResult) -> list[int]:
    return [s.persons for s in result.steps]


def levels(result: FunnelResult) -> dict[str, int]:
    return result.levels()


SHOP = ["visit", "product_view", "add_to_cart", "purchase"]


# ------------------------------------------------------------------------- ordered
def test_ordered_counts_conversion_and_time_to_convert(touches_of: Touches) -> None:
    t = touches_of([
        # p1: all four steps in order -> level 4; times to convert 10m, 20m, 30m
        ev("p1", "visit", 0), ev("p1", "product_view", 10), ev("p1", "add_to_cart", 20), ev("p1", "purchase", 30),
        # p2: add_to_cart before product_view does not count; product_view at 10 -> level 2 (10m)
        ev("p2", "visit", 0), ev("p2", "add_to_cart", 5), ev("p2", "product_view", 10),
        # p3: product_view before any visit -> level 1
        ev("p3", "product_view", 0), ev("p3", "visit", 5),
        # p4: another touch between steps is fine in an ordered funnel -> level 2 (2m)
        ev("p4", "visit", 0), ev("p4", "login", 1), ev("p4", "product_view", 2),
        # p5: no step at all -> not in the funnel
        ev("p5", "login", 0),
    ])
    r = funnel(t, FunnelQuery(steps=SHOP, window="1h"))
    assert persons(r) == [4, 3, 1, 1]
    assert [s.drop_offs for s in r.steps] == [0, 1, 2, 0]
    assert [s.conversion_from_start for s in r.steps] == [1.0, 0.75, 0.25, 0.25]
    assert [s.conversion_from_previous for s in r.steps] == pytest.approx([1.0, 0.75, 1 / 3, 1.0])
    # step 2 durations: p1 600 s, p2 600 s, p4 120 s -> median 600, mean 440, p90 600 (linear)
    s2 = r.steps[1]
    assert (s2.median_seconds_to_convert, s2.mean_seconds_to_convert, s2.p90_seconds_to_convert) == (600, 440, 600)
    assert r.steps[0].median_seconds_to_convert is None
    assert r.steps[3].median_seconds_to_convert == 1800 and r.steps[3].median_seconds_from_previous == 600
    assert levels(r) == {"p1": 4, "p2": 2, "p3": 1, "p4": 2}
    assert r.people(2, "dropped") == ["p3"]
    assert r.people("add_to_cart", "dropped") == ["p2", "p4"]
    assert r.people(1, "dropped") == []
    assert r.people(4) == ["p1"]


def test_window_bounds_are_inclusive_and_equal_times_are_in_order(touches_of: Touches) -> None:
    t = touches_of([
        at("p1", "visit", 0), at("p1", "purchase", 1800),       # exactly at the 30m window -> converts
        at("p2", "visit", 0), at("p2", "purchase", 1801),       # one second later -> does not
        at("p3", "visit", 60), at("p3", "purchase", 60),        # same time -> in order, converts (0 s)
        at("p4", "purchase", 60), at("p4", "visit", 60),        # same time, stored the other way -> converts
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="30m"))
    assert levels(r) == {"p1": 2, "p2": 1, "p3": 2, "p4": 2}
    # converters' durations 1800, 0, 0 -> median 0, mean 600
    assert (r.steps[1].median_seconds_to_convert, r.steps[1].mean_seconds_to_convert) == (0, 600)


def test_a_later_step_one_starts_a_new_attempt(touches_of: Touches) -> None:
    t = touches_of([
        # visit@0 cannot reach product_view@70 within 1h, visit@50 can: level 2, 20m to convert
        ev("p1", "visit", 0), ev("p1", "visit", 50), ev("p1", "product_view", 70),
        # the same touch fills two equal steps (windowFunnel semantics): visit -> visit reached with one visit
        ev("p2", "visit", 0),
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "product_view"], window="1h"))
    assert levels(r) == {"p1": 2, "p2": 1}
    assert r.steps[1].median_seconds_to_convert == 1200
    twice = funnel(t, FunnelQuery(steps=["visit", "visit"], window="1h"))
    assert persons(twice) == [2, 2]


def test_uniques_and_totals(touches_of: Touches) -> None:
    t = touches_of([
        # p1: two visits and two product views, each view completes step 2: totals 2/2, persons 1/1
        ev("p1", "visit", 0), ev("p1", "product_view", 1), ev("p1", "visit", 2), ev("p1", "product_view", 3),
        # p2: one visit, a product view out of the window -> totals 1/0
        ev("p2", "visit", 0), ev("p2", "product_view", 200),
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "product_view"], window="1h"))
    assert [(s.persons, s.totals) for s in r.steps] == [(2, 3), (1, 2)]


def test_per_step_limit(touches_of: Touches) -> None:
    t = touches_of([
        # gaps 20m then 30m > 25m: stops at product_view
        ev("p1", "visit", 0), ev("p1", "product_view", 20), ev("p1", "add_to_cart", 50),
        # a second visit@15 starts an attempt whose gaps are 20m and 15m: level 3
        ev("p2", "visit", 0), ev("p2", "visit", 15), ev("p2", "product_view", 35), ev("p2", "add_to_cart", 50),
        # visit -> product_view gap 26m > 25m: level 1
        ev("p3", "visit", 0), ev("p3", "product_view", 26),
    ])
    r = funnel(t, FunnelQuery(steps=SHOP[:3], window="1h", step_window="25m"))
    assert levels(r) == {"p1": 2, "p2": 3, "p3": 1}
    # p2 completes add_to_cart 35m after the visit@15, 15m after the product view
    assert (r.steps[2].median_seconds_to_convert, r.steps[2].median_seconds_from_previous) == (2100, 900)


def test_exclusions_stop_an_attempt_between_two_steps(touches_of: Touches) -> None:
    t = touches_of([
        # error between product_view and purchase -> level 2
        ev("p1", "visit", 0), ev("p1", "product_view", 1), ev("p1", "coupon_error", 2), ev("p1", "purchase", 3),
        # error after the purchase -> level 3
        ev("p2", "visit", 0), ev("p2", "product_view", 1), ev("p2", "purchase", 3), ev("p2", "coupon_error", 4),
        # error before step 2 is not between steps 2 and 3 -> level 3
        ev("p3", "visit", 0), ev("p3", "coupon_error", 1), ev("p3", "product_view", 2), ev("p3", "purchase", 3),
        # a later product_view starts a clean stretch 2..3 -> level 3
        ev("p4", "visit", 0), ev("p4", "product_view", 1), ev("p4", "coupon_error", 2),
        ev("p4", "product_view", 4), ev("p4", "purchase", 5),
        # error at the same time as product_view is not strictly after it -> level 3
        ev("p5", "visit", 0), ev("p5", "product_view", 1), ev("p5", "coupon_error", 1), ev("p5", "purchase", 2),
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "product_view", "purchase"], window="1h",
                              exclusions=["coupon_error:2:3"]))
    assert levels(r) == {"p1": 2, "p2": 3, "p3": 3, "p4": 3, "p5": 3}
    # between steps 1 and 3: p1, p3 and p4 stop after the visit's stretch; p3 reached step 2? the
    # error at 1 is before product_view@2 -> the attempt stops at step 1; p4: error@2 lies between
    # visit@0 and product_view@4 -> level 2 (product_view@1, before the error); p5 unaffected.
    # between steps 1 and 3 the error must not fall between the visit and the step reached:
    # p1 reaches product_view@1 before the error -> 2; p3's error precedes product_view -> 1;
    # p4 -> 2 (product_view@1); p5's error is after the visit and before the purchase -> 2.
    wide = funnel(t, FunnelQuery(steps=["visit", "product_view", "purchase"], window="1h",
                                 exclusions=["coupon_error:1:3"]))
    assert levels(wide) == {"p1": 2, "p2": 3, "p3": 1, "p4": 2, "p5": 2}


# ------------------------------------------------------------------------- strict and unordered
def test_strict_needs_consecutive_touches(touches_of: Touches) -> None:
    t = touches_of([
        ev("p1", "visit", 0), ev("p1", "product_view", 1), ev("p1", "add_to_cart", 2),      # level 3
        ev("p2", "visit", 0), ev("p2", "login", 1), ev("p2", "product_view", 2),            # level 1
        ev("p3", "visit", 0), ev("p3", "product_view", 1), ev("p3", "login", 2),
        ev("p3", "add_to_cart", 3),                                                        # level 2
        ev("p4", "visit", 0), ev("p4", "visit", 1), ev("p4", "product_view", 2),            # level 2 (1m)
        ev("p5", "visit", 0), ev("p5", "product_view", 61),                                 # out of window: 1
    ])
    r = funnel(t, FunnelQuery(steps=SHOP[:3], window="1h", order="strict"))
    assert levels(r) == {"p1": 3, "p2": 1, "p3": 2, "p4": 2, "p5": 1}
    # step 2 durations: p1 60, p3 60, p4 60 (from the second visit) -> median 60
    assert r.steps[1].median_seconds_to_convert == 60
    # totals: visits p1 1, p2 1, p3 1, p4 2, p5 1 = 6
    assert r.steps[0].totals == 6


def test_unordered_counts_distinct_steps_in_one_window(touches_of: Touches) -> None:
    t = touches_of([
        ev("p1", "add_to_cart", 0), ev("p1", "visit", 1), ev("p1", "product_view", 2),     # 3 steps in 2m
        ev("p2", "product_view", 0), ev("p2", "visit", 100),                               # apart: 1
        ev("p3", "add_to_cart", 0),                                                        # any step: 1
        ev("p4", "visit", 0), ev("p4", "visit", 5), ev("p4", "product_view", 70),          # visit@5..pv@70 > 1h: 1
        ev("p5", "visit", 0), ev("p5", "product_view", 30), ev("p5", "add_to_cart", 90),   # two windows of 2: 2
    ])
    r = funnel(t, FunnelQuery(steps=SHOP[:3], window="1h", order="unordered"))
    assert levels(r) == {"p1": 3, "p2": 1, "p3": 1, "p4": 1, "p5": 2}
    # 2 steps: p1 at 1m from add_to_cart@0; p5 first has 2 steps at 30m (from visit@0) -> 60, 1800
    assert r.steps[1].mean_seconds_to_convert == pytest.approx(930)
    assert r.steps[2].median_seconds_to_convert == 120


# ------------------------------------------------------------------------- steps as filters
def test_steps_can_be_filters_on_columns_stages_and_properties(touches_of: Touches) -> None:
    t = touches_of([
        ev("p1", "visit", 0, channel="email"), ev("p1", "purchase", 1, properties={"total": 80}),
        ev("p2", "visit", 0, channel="seo"), ev("p2", "purchase", 1, properties={"total": 20}),
        ev("p3", "visit", 0, channel="email"), ev("p3", "purchase", 1),
        ev("p4", "product_view", 0, channel="email"), ev("p4", "purchase", 1, properties={"total": "50"}),
    ])
    big = funnel(t, FunnelQuery(steps=["channel=email", "event=purchase&properties.total>=50"], window="1h"))
    # p1 (80) and p4 (the product view is an email touch too; "50" reads as 50) convert; p3 has no total
    assert levels(big) == {"p1": 2, "p3": 1, "p4": 2}
    # stage of the default model: product_view is consideration, purchase is decision
    stages = funnel(t, FunnelQuery(steps=["stage=consideration", "stage=decision"], window="1h"))
    assert levels(stages) == {"p4": 2}
    either = funnel(t, FunnelQuery(steps=["channel=seo|email", "event!=visit"], window="1h"))
    assert persons(either) == [4, 4]
    small = funnel(t, FunnelQuery(steps=["visit", "event=purchase&properties.total<50"], window="1h"))
    assert small.people(2) == ["p2"]


def test_the_funnel_reads_below_projections_it_does_not_need() -> None:
    """Workspace touches carry the stage rules (a CASE over every touch); a funnel whose steps
    do not read the stage skips that projection but keeps the workspace filter below it."""
    store = open_store(":memory:")
    store.append("events", events_table([ev("p1", "visit", 0), ev("p1", "purchase", 5), ev("p2", "visit", 0)]))
    store.append("events", events_table([ev("p9", "visit", 0), ev("p9", "purchase", 5)], workspace="other"))
    touches = Workspace(store).touches()
    plain = FunnelQuery(steps=["visit", "purchase"], window="1h")
    by_stage = FunnelQuery(steps=["visit", "stage=decision"], window="1h")
    assert "CASE" not in ibis.to_sql(_plan(touches, plain).base, dialect="duckdb")
    assert "CASE" in ibis.to_sql(_plan(touches, by_stage).base, dialect="duckdb")
    assert "CASE" in ibis.to_sql(_plan(touches, plain.model_copy(update={"breakdown": "stage"})).base,
                                 dialect="duckdb")
    # p9 belongs to the other workspace: not counted
    assert levels(funnel(touches, plain)) == {"p1": 2, "p2": 1}
    assert levels(funnel(touches, by_stage)) == {"p1": 2, "p2": 1}


# ------------------------------------------------------------------------- breakdowns
BREAKDOWN_ROWS = [
    # p1: first touch email, step-1 touch seo, purchase direct, a later touch paid
    ev("p1", "newsletter_open", 0, channel="email"), ev("p1", "visit", 10, channel="seo"),
    ev("p1", "purchase", 20, channel="direct"), ev("p1", "login", 30, channel="paid_search"),
    # p2: one visit from seo
    ev("p2", "visit", 0, channel="seo"),
    # p3: visit without channel, purchase from email
    ev("p3", "visit", 0), ev("p3", "purchase", 5, channel="email"),
]


@pytest.mark.parametrize(("attribution", "expected"), [
    # value -> persons per step
    ("first_touch", {"(none)": [1, 1], "email": [1, 1], "seo": [1, 0]}),
    # last touch up to the furthest step: p1 direct (purchase@20; login@30 is later), p2 seo, p3 email
    ("last_touch", {"direct": [1, 1], "email": [1, 1], "seo": [1, 0]}),
    ("step:1", {"seo": [2, 1], "(none)": [1, 1]}),
    # p2 never reached step 2
    ("step:2", {"(none)": [1, 0], "direct": [1, 1], "email": [1, 1]}),
])
def test_breakdown_attribution(touches_of: Touches, attribution: str, expected: dict[str, list[int]]) -> None:
    t = touches_of(BREAKDOWN_ROWS)
    r = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1d", breakdown="channel",
                              breakdown_attribution=attribution))
    got = {b.value: [s.persons for s in b.steps] for b in r.breakdown}
    assert got == expected
    # values are listed by entering units, then by value
    assert [b.value for b in r.breakdown] == sorted(expected, key=lambda v: (-expected[v][0], v))
    assert persons(r) == [3, 2]


def test_breakdown_by_property_with_a_limit(touches_of: Touches) -> None:
    t = touches_of([
        ev("p1", "visit", 0, properties={"plan": "pro"}), ev("p1", "purchase", 1),
        ev("p2", "visit", 0, properties={"plan": "pro"}),
        ev("p3", "visit", 0, properties={"plan": "free"}), ev("p3", "purchase", 1),
        ev("p4", "visit", 0, properties={"plan": "team"}),
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1d", breakdown="properties.plan",
                              breakdown_limit=1))
    # pro has 2 entrants; free and team (1 each) merge into (other)
    assert {b.value: [s.persons for s in b.steps] for b in r.breakdown} == {"pro": [2, 1], "(other)": [2, 1]}
    assert [b.value for b in r.breakdown] == ["pro", "(other)"]
    assert r.people(2, breakdown="(other)") == ["p3"]


def test_breakdown_by_segment_table(touches_of: Touches) -> None:
    t = touches_of([ev("p1", "visit", 0), ev("p1", "purchase", 1), ev("p2", "visit", 0), ev("p3", "visit", 0)])
    personas = ibis.memtable({"person_id": ["p1", "p2", "p1"], "value": ["saver", "saver", "gifter"]})
    r = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1d", breakdown="persona"),
               segments={"persona": personas})
    # p1 counts under both of its personas; p3 has none
    assert {b.value: [s.persons for s in b.steps] for b in r.breakdown} == {
        "saver": [2, 1], "(none)": [1, 0], "gifter": [1, 1]}
    assert persons(r) == [3, 1]


# ------------------------------------------------------------------------- unit and trend
def test_accounts_as_the_unit(touches_of: Touches) -> None:
    t = touches_of([
        # two people of account acme: one visits, the other buys -> acme reaches step 2
        ev("a1", "visit", 0, account_id="acme"), ev("a2", "purchase", 5, account_id="acme"),
        ev("b1", "visit", 0, account_id="bolt"),
        ev("n1", "visit", 0), ev("n1", "purchase", 1),   # no account: ignored for accounts
    ])
    by_account = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1h", unit="account"))
    assert levels(by_account) == {"acme": 2, "bolt": 1}
    assert by_account.to_dict()["unit"] == "account"
    assert list(by_account.people_table(2).columns) == ["account_id"]
    by_person = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1h"))
    assert levels(by_person) == {"a1": 1, "b1": 1, "n1": 2}


TREND_ROWS = [
    ev("p1", "visit", 0), ev("p1", "purchase", 10),                        # Sun 03-01, converts
    ev("p2", "visit", 24 * 60),                                           # Mon 03-02
    ev("p3", "visit", 48 * 60), ev("p3", "purchase", 48 * 60 + 5),          # Tue 03-03, converts
    # p4: visit Sun without purchase; the attempt that converts starts Wed 03-04
    ev("p4", "visit", 0), ev("p4", "visit", 72 * 60), ev("p4", "purchase", 72 * 60 + 1),
]


@pytest.mark.parametrize(("period", "expected"), [
    ("day", {date(2026, 3, 1): (1, 1), date(2026, 3, 2): (1, 0), date(2026, 3, 3): (1, 1), date(2026, 3, 4): (1, 1)}),
    ("week", {date(2026, 2, 23): (1, 1), date(2026, 3, 2): (3, 2)}),     # weeks start on Monday
    ("month", {date(2026, 3, 1): (4, 3)}),
])
def test_trend_by_entry_period(touches_of: Touches, period: str, expected: dict[date, tuple[int, int]]) -> None:
    r = funnel(touches_of(TREND_ROWS), FunnelQuery(steps=["visit", "purchase"], window="1h", trend_period=period))
    assert {row.period: (row.entered, row.converted) for row in r.trend} == expected
    assert all(row.breakdown is None for row in r.trend)


# ------------------------------------------------------------------------- result renderings
def test_histogram_bins_follow_the_window(touches_of: Touches) -> None:
    t = touches_of([
        at("p1", "visit", 0), at("p1", "purchase", 30),        # bin [0, 1m)
        at("p2", "visit", 0), at("p2", "purchase", 120),       # bin [1m, 5m)
        at("p3", "visit", 0), at("p3", "purchase", 600),       # bin [5m, 15m)
        at("p4", "visit", 0), at("p4", "purchase", 3600),      # last bin [15m, 1h], window edge included
        at("p5", "visit", 0), at("p5", "purchase", 3540),
    ])
    r = funnel(t, FunnelQuery(steps=["visit", "purchase"], window="1h"))
    bins = [(b.lower_seconds, b.upper_seconds, b.persons) for b in r.steps[1].histogram]
    assert bins == [(0, 60, 1), (60, 300, 1), (300, 900, 1), (900, 3600, 2)]
    assert r.steps[0].histogram == ()


def test_json_contract_table_and_figure(touches_of: Touches) -> None:
    t = touches_of([ev("p1", "visit", 0), ev("p1", "product_view", 1), ev("p2", "visit", 0)])
    r = funnel(t, FunnelQuery(steps=["visit", "product_view"], window="7d", breakdown="event"))
    d = r.to_dict()
    assert [s["step"] for s in d["steps"]] == ["visit", "product_view"]
    for s in d["steps"]:
        assert isinstance(s["persons"], int)
        assert isinstance(s["conversion_from_start"], float) and isinstance(s["conversion_from_previous"], float)
        assert s["median_seconds_to_convert"] is None or isinstance(s["median_seconds_to_convert"], float)
    second = {k: d["steps"][1][k] for k in ("persons", "conversion_from_start", "conversion_from_previous",
                                            "median_seconds_to_convert")}
    assert second == {"persons": 1, "conversion_from_start": 0.5, "conversion_from_previous": 0.5,
                      "median_seconds_to_convert": 60.0}
    assert d["breakdown"]["values"][0]["value"] == "visit"
    df = r.to_pandas()
    assert list(df["breakdown"]) == ["visit", "visit"] and list(df["persons"]) == [2, 1]
    fig = r.figure()
    assert [tr.name for tr in fig.data] == ["visit"] and list(fig.data[0].y) == [2, 1]


def test_no_touch_matches(touches_of: Touches) -> None:
    r = funnel(touches_of([ev("p1", "login", 0)]), FunnelQuery(steps=["visit", "purchase"], window="1d"))
    assert persons(r) == [0, 0]
    assert [s.conversion_from_start for s in r.steps] == [0.0, 0.0]
    assert r.people(1) == []


def test_unknown_fields_and_breakdowns_suggest_names(touches_of: Touches) -> None:
    t = touches_of([ev("p1", "visit", 0)])
    with pytest.raises(UnknownNameError, match="did you mean 'channel'"):
        funnel(t, FunnelQuery(steps=["visit", "chanel=email"]))
    with pytest.raises(UnknownNameError, match="did you mean 'channel'"):
        funnel(t, FunnelQuery(steps=["visit", "purchase"], breakdown="chanel"))
    with pytest.raises(InvalidParameterError, match="holds numbers"):
        funnel(t, FunnelQuery(steps=["visit", "revenue=lots"]))


# ------------------------------------------------------------------------- integer time path

@pytest.mark.parametrize(("order", "expected"), [
    ("ordered", {"p1": 2, "p2": 1, "p3": 1}),
    ("strict", {"p1": 2, "p2": 1, "p3": 1}),
    ("unordered", {"p1": 2, "p2": 2, "p3": 3}),
])
def test_windows_are_exact_to_the_microsecond(make_store: Callable[[], Store], order: str,
                                              expected: dict[str, int]) -> None:
    """Window tests run on integer microseconds: a touch 1 µs beyond the 30-minute window (or
    per-step limit) is out, one exactly on it is in. p1's purchase and p2's product view lie
    1 µs beyond; p3's coupon error is an exclusion between visit and product view (ordered)
    and breaks the consecutive run (strict)."""
    store = make_store()
    store.append("events", events_table([
        at("p1", "visit", 0), at("p1", "product_view", 1800), at("p1", "purchase", 1800.000001),
        at("p2", "visit", 0), at("p2", "product_view", 1800.000001), at("p2", "purchase", 1801),
        at("p3", "visit", 10), at("p3", "coupon_error", 11), at("p3", "product_view", 12.5),
        at("p3", "purchase", 13),
    ]))
    extra: dict[str, Any] = {"step_window": "1800s"} if order != "unordered" else {}
    if order == "ordered":
        extra["exclusions"] = ["coupon_error:1:2"]
    q = FunnelQuery(steps=["visit", "product_view", "purchase"], window="30m", order=order, **extra)
    assert funnel(Workspace(store).touches(), q).levels() == expected
