"""Retention, lifecycle, churn and repurchase on hand-checked tiny cases, on DuckDB and on Spark.

Every expected number is worked out by hand in the comments next to the data. All cases live in
one store per backend (a Spark store costs seconds to fill): person ids carry the case name as a
prefix (``wk:a``) and each test analyses the touches of its case only.

Weeks of the ``wk`` case (Monday to Sunday, UTC):
W0 = 2026-02-23..03-01, W1 = 03-02..03-08, W2 = 03-09..03-15, W3 = 03-16..03-22, W4 = 03-23..03-29.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pytest

from journeylens.analyses.retention import (
    ChurnQuery,
    LifecycleQuery,
    RepurchaseQuery,
    RetentionCohort,
    RetentionQuery,
    RetentionResult,
    churn,
    index_of,
    lifecycle,
    period_index,
    period_start,
    repurchase,
    retention,
)
from journeylens.store import Store, open_store
from journeylens.workspace import Workspace
from tests.conftest import store_url
from tests.helpers import events_table


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# person -> touches (time, channel, account); every touch is a `visit`
WK: dict[str, list[tuple[str, str | None, str | None]]] = {
    # a: W0 (Sunday 23:59:59), W1 (Monday 00:00:00, one second later), W3
    "a": [("2026-03-01 23:59:59", "email", "acme"), ("2026-03-02 00:00:00", None, "acme"),
          ("2026-03-16 12:00:00", None, "acme")],
    # b: W0 twice, then W2 (Sunday 23:59)
    "b": [("2026-02-23 00:00:00", "email", "acme"), ("2026-02-25 00:00:00", "email", "acme"),
          ("2026-03-15 23:59:00", "email", "acme")],
    # c: W1, W2 (first touch without channel, the second one has 'seo')
    "c": [("2026-03-02 08:00:00", None, "bolt"), ("2026-03-09 00:00:00", "seo", "bolt")],
    # d: W1 only (Sunday 23:59:59); no account
    "d": [("2026-03-08 23:59:59", None, None)],
    # e: W2, W3 (exactly 7 days later), W4 (the latest touch: as_of = 2026-03-29 23:59:59)
    "e": [("2026-03-09 10:00:00", None, None), ("2026-03-16 10:00:00", None, None),
          ("2026-03-29 23:59:59", None, None)],
}

# N-day case: calendar days counted from each person's own first touch (UTC), weekly cohorts
DAY: dict[str, list[str]] = {
    # g: first touch Sunday 23:00 (cohort W0 = week of 02-23); 1.5 h later is already day 1; day 3
    "g": ["2026-03-01 23:00:00", "2026-03-02 00:30:00", "2026-03-04 22:00:00"],
    # h: first touch Monday 01:00 (cohort W0); day 0 again at 20:00; 46 h later is still day 1
    "h": ["2026-02-23 01:00:00", "2026-02-23 20:00:00", "2026-02-24 23:00:00"],
    # i: cohort W1; day 1 at 23:59:59; the touch after as_of (2026-03-04) is ignored
    "i": ["2026-03-02 00:00:00", "2026-03-03 23:59:59", "2026-03-05 00:00:01"],
}

# monthly case: (time, event, properties.total)
MO: dict[str, list[tuple[str, str, int | None]]] = {
    # m1: a visit before its first purchase; purchases on New Year's Eve 23:59:59 (cohort 2025-12),
    # one second later (month 1, across the year boundary) and on 03-31 23:59:59 (month 3)
    "m1": [("2025-12-01 10:00:00", "visit", None), ("2025-12-31 23:59:59", "purchase", 30),
           ("2026-01-01 00:00:00", "purchase", 30), ("2026-03-31 23:59:59", "purchase", 30)],
    # m2: purchases on the last second of January and of February (months 0 and 1)
    "m2": [("2026-01-31 23:59:59", "purchase", 30), ("2026-02-28 23:59:59", "purchase", 30)],
    # m3: a small purchase (total 5) that does not count as a start, then one of 40 exactly 21 days later
    "m3": [("2026-01-20 09:00:00", "purchase", 5), ("2026-02-10 09:00:00", "purchase", 40)],
    # m4: two purchases at the very same time (two messages)
    "m4": [("2026-02-01 00:00:00", "purchase", 30), ("2026-02-01 00:00:00", "purchase", 30)],
}

EDGES = ["2025-12-28 23:59:59.999999", "2025-12-29 00:00:00", "2026-01-04 23:59:59", "2026-01-05 00:00:00.000001",
         "2026-01-31 23:59:59.999999", "2026-02-01 00:00:00", "2024-02-29 12:00:00", "2025-12-31 23:59:59.999999",
         "2026-01-01 00:00:00", "1970-01-01 00:00:00", "1969-12-28 12:00:00"]


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(person: str, ts: str, **cols: Any) -> None:
        rows.append({"user_id": person, "ts": at(ts), "message_id": f"m{len(rows):04d}", **cols})

    for who, touches in WK.items():
        for ts, channel, account in touches:
            add(f"wk:{who}", ts, channel=channel, account_id=account)
    for who, times in DAY.items():
        for ts in times:
            add(f"day:{who}", ts)
    for who, items in MO.items():
        for ts, event, total in items:
            add(f"mo:{who}", ts, event=event, properties=None if total is None else {"total": total})
    for i, ts in enumerate(EDGES):
        add(f"edge:{i}", ts)
    return rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    """One filled store per backend, opened on first use."""
    opened: dict[str, Store] = {}
    yield opened
    for s in opened.values():
        s.close()


@pytest.fixture
def case(backend: str, stores: dict[str, Store], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``case(name)``: the touches (persons resolved) of one case on the parametrised backend."""
    if backend not in stores:
        store = open_store(store_url(backend, Path(tmp_path_factory.mktemp(f"retention-{backend}"))))
        store.append("events", events_table(_rows()))
        stores[backend] = store
        Workspace(store).rebuild_identities()
    ws = Workspace(stores[backend])

    def touches(name: str) -> ir.Table:
        t = ws.touches()
        return t.filter(t.person_id.startswith(f"{name}:"))

    return touches


def matrix(result: RetentionResult | Sequence[RetentionCohort], attr: str = "retained") -> dict[str, list[Any]]:
    """{cohort start: [attr of period 0, 1, ...]}"""
    cohorts = result.cohorts if isinstance(result, RetentionResult) else result
    return {c.cohort.isoformat(): [getattr(x, attr) for x in c.cells] for c in cohorts}


# ---------------------------------------------------------------- period edges
def test_period_index_is_the_same_on_every_backend(case: Any) -> None:
    t = case("edge")
    q = t.select("user_id", "ts", **{p: period_index(t.ts, p) for p in ("day", "week", "month")})
    got = {r["user_id"]: r for r in q.to_pyarrow().to_pylist()}
    for i, text in enumerate(EDGES):
        ts = at(text)
        r = got[f"edge:{i}"]
        assert (r["day"], r["week"], r["month"]) == tuple(index_of(ts, p) for p in ("day", "week", "month"))
        # and the period starts are the UTC day, its Monday, the first of its month
        d = ts.date()
        assert period_start(r["day"], "day") == d
        week = period_start(r["week"], "week")
        assert week.weekday() == 0 and 0 <= (d - week).days <= 6
        assert period_start(r["month"], "month") == d.replace(day=1)
    # spot checks by hand: Sunday 23:59:59.999999 is still in the week of Monday 12-22
    assert period_start(got["edge:0"]["week"], "week") == date(2025, 12, 22)
    assert period_start(got["edge:1"]["week"], "week") == date(2025, 12, 29)
    assert period_start(got["edge:2"]["week"], "week") == date(2025, 12, 29)  # Sunday 2026-01-04
    assert period_start(got["edge:7"]["month"], "month") == date(2025, 12, 1)
    assert period_start(got["edge:8"]["month"], "month") == date(2026, 1, 1)
    assert period_start(got["edge:10"]["week"], "week") == date(1969, 12, 22)  # before the epoch


# ---------------------------------------------------------------- retention
def test_weekly_bounded_retention_with_breakdown(case: Any) -> None:
    # cohorts: W0 {a, b}, W1 {c, d}, W2 {e}; as_of = 03-29 23:59:59 lies in W4.
    # a returns in k = 0, 1, 3; b in 0, 2; c in 0, 1; d in 0; e in 0, 1, 2.
    # eligible: period k of cohort Wc has begun when c + k <= 4 -> W2 cannot reach k = 3.
    r = retention(case("wk"), RetentionQuery(periods=4, breakdown="channel"))
    assert r.as_of == at("2026-03-29 23:59:59")
    assert [c.size for c in r.cohorts] == [2, 2, 1]
    assert matrix(r) == {"2026-02-23": [2, 1, 1, 1], "2026-03-02": [2, 1, 0, 0], "2026-03-09": [1, 1, 1, 0]}
    assert matrix(r, "eligible") == {"2026-02-23": [2, 2, 2, 2], "2026-03-02": [2, 2, 2, 2],
                                     "2026-03-09": [1, 1, 1, 0]}
    assert matrix(r, "rate")["2026-03-09"] == [1.0, 1.0, 1.0, None]
    # complete: c + k < 4 (the week of as_of is still running)
    assert matrix(r, "complete") == {"2026-02-23": [True] * 4, "2026-03-02": [True, True, True, False],
                                     "2026-03-09": [True, True, False, False]}
    # curve: retained (2+2+1, 1+1+1, 1+0+1, 1+0) over eligible (5, 5, 5, 2+2)
    assert [(p.retained, p.eligible) for p in r.curve] == [(5, 5), (3, 5), (2, 5), (1, 4)]
    assert r.curve[3].rate == pytest.approx(0.25)
    # breakdown on the first touch: a and b came by email; c's first touch had no channel ('seo' later)
    by = {b.value: b for b in r.breakdown}
    assert [b.value for b in r.breakdown] == ["(none)", "email"]  # by size: 3 persons, 2 persons
    assert (by["email"].size, by["(none)"].size) == (2, 3)
    assert matrix(by["email"].cohorts) == {"2026-02-23": [2, 1, 1, 1]}
    assert [(p.retained, p.eligible) for p in by["(none)"].curve] == [(3, 3), (2, 3), (1, 3), (0, 2)]


def test_weekly_unbounded_retention_and_other_label(case: Any) -> None:
    # unbounded: retained in k when the last return period L >= k.
    # W0: L(a)=3, L(b)=2 -> 2, 2, 2, 1; W1: L(c)=1, L(d)=0 -> 2, 1, 0, 0; W2: L(e)=2 -> 1, 1, 1, (not eligible)
    r = retention(case("wk"), RetentionQuery(periods=4, mode="unbounded", breakdown="channel",
                                             breakdown_limit=1, as_of="2026-03-29"))
    assert matrix(r) == {"2026-02-23": [2, 2, 2, 1], "2026-03-02": [2, 1, 0, 0], "2026-03-09": [1, 1, 1, 0]}
    assert [(p.retained, p.eligible) for p in r.curve] == [(5, 5), (4, 5), (3, 5), (1, 4)]
    # one value kept: (none) with 3 persons; email becomes (other)
    assert [(b.value, b.size) for b in r.breakdown] == [("(none)", 3), ("(other)", 2)]
    assert [(p.retained, p.eligible) for p in r.breakdown[1].curve] == [(2, 2), (2, 2), (2, 2), (1, 2)]


def test_n_day_retention_counts_calendar_days_from_the_own_first_touch(case: Any) -> None:
    # as_of 2026-03-04 (through its end). Offsets in UTC calendar days from each person's first touch:
    # g (first 03-01 23:00): 0, 1 (00:30 next day), 3; h (first 02-23 01:00): 0, 0, 1 (46 h later);
    # i (first 03-02): 0, 1; its touch on 03-05 is after as_of. Weekly cohorts: W0 {g, h}, W1 {i}.
    # eligible: day k has begun for a person when first day + k <= 03-04: i only up to k = 2.
    r = retention(case("day"), RetentionQuery(period="day", cohort_period="week", periods=4, as_of="2026-03-04"))
    assert r.as_of == datetime(2026, 3, 4, 23, 59, 59, 999999, tzinfo=UTC)
    assert matrix(r) == {"2026-02-23": [2, 2, 0, 1], "2026-03-02": [1, 1, 0, 0]}
    assert matrix(r, "eligible") == {"2026-02-23": [2, 2, 2, 2], "2026-03-02": [1, 1, 1, 0]}
    # complete when every member's day k ended before 03-04: g started 03-01 -> k < 3
    assert matrix(r, "complete")["2026-02-23"] == [True, True, True, False]
    assert [(p.retained, p.eligible) for p in r.curve] == [(3, 3), (3, 3), (0, 3), (1, 2)]


def test_monthly_retention_with_step_filters_across_the_year_boundary(case: Any) -> None:
    # start: purchases with total >= 10; return: any purchase at or after the start.
    # m1 starts 2025-12-31 23:59:59 (cohort 2025-12): months 0, 1 (2026-01-01 00:00), 3 (03-31 23:59:59)
    # m2 starts 2026-01-31 23:59:59: months 0, 1 (02-28 23:59:59)
    # m3's purchase of 5 (01-20) is no start; it starts 02-10 (cohort 2026-02); the earlier purchase is
    # before its start and does not count. m4 starts 02-01 00:00 (two purchases at the same time): month 0.
    # as_of = 2026-03-31 23:59:59 (month 2026-03).
    q = RetentionQuery(period="month", periods=4, start_event="event=purchase&properties.total>=10",
                       return_event="purchase", as_of="2026-03-31")
    r = retention(case("mo"), q)
    assert matrix(r) == {"2025-12-01": [1, 1, 0, 1], "2026-01-01": [1, 1, 0, 0], "2026-02-01": [2, 0, 0, 0]}
    assert matrix(r, "eligible") == {"2025-12-01": [1, 1, 1, 1], "2026-01-01": [1, 1, 1, 0],
                                     "2026-02-01": [2, 2, 0, 0]}
    assert [(p.retained, p.eligible) for p in r.curve] == [(4, 4), (2, 4), (0, 2), (1, 1)]


# ---------------------------------------------------------------- lifecycle
def test_lifecycle_per_week_for_persons(case: Any) -> None:
    # active weeks: a {0, 1, 3}, b {0, 2}, c {1, 2}, d {1}, e {2, 3, 4}
    # W0: new a, b.           W1: new c, d; returning a; dormant b.
    # W2: new e; returning c; resurrecting b; dormant a, d.
    # W3: returning e; resurrecting a; dormant b, c.     W4: returning e; dormant a.
    r = lifecycle(case("wk"), LifecycleQuery(period="week", as_of="2026-03-29"))
    got = [(row.period.isoformat(), row.new, row.returning, row.resurrecting, row.dormant) for row in r.rows]
    assert got == [
        ("2026-02-23", 2, 0, 0, 0),
        ("2026-03-02", 2, 1, 0, -1),
        ("2026-03-09", 1, 1, 1, -2),
        ("2026-03-16", 0, 1, 1, -2),
        ("2026-03-23", 0, 1, 0, -1),
    ]
    # active(p) - active(p-1) = new + resurrecting + dormant (dormant is negative)
    for before, now in zip(r.rows, r.rows[1:], strict=False):
        assert now.active - before.active == now.new + now.resurrecting + now.dormant


def test_lifecycle_per_week_for_accounts(case: Any) -> None:
    # acme = a and b: weeks {0, 1, 2, 3}; bolt = c: weeks {1, 2}; d and e have no account.
    # The data still end in W4 (e's touch), so acme is dormant there.
    r = lifecycle(case("wk"), LifecycleQuery(period="week", unit="account"))
    got = [(row.new, row.returning, row.resurrecting, row.dormant) for row in r.rows]
    assert got == [(1, 0, 0, 0), (1, 1, 0, 0), (0, 2, 0, 0), (0, 1, 0, -1), (0, 0, 0, -1)]


# ---------------------------------------------------------------- churn
def test_weekly_churn_after_seven_days(case: Any) -> None:
    # spells (touches at most 7 days apart) and the instant z + 7d after which the person is churned:
    # a: [03-01 23:59:59, 03-02 00:00] -> 03-09 00:00; [03-16 12:00] -> 03-23 12:00
    # b: [02-23, 02-25] -> 03-04 00:00;                [03-15 23:59] -> 03-22 23:59
    # c: [03-02 08:00, 03-09 00:00] -> 03-16 00:00;    d: [03-08 23:59:59] -> 03-15 23:59:59
    # e: [03-09 10:00, 03-16 10:00 (exactly 7 days: same spell)] -> 03-23 10:00; [03-29 23:59:59] -> 04-05
    # active at the start S of a week: a spell with first touch < S <= end.
    # W1 (S 03-02): a, b -> 2; churned in W1: b (03-04).
    # W2 (S 03-09 00:00): a (end exactly S), c, d -> 3; churned: a (03-09 00:00), d.
    # W3 (S 03-16): c (end exactly S), b's second spell, e -> 3; churned: c, b.
    # W4 (S 03-23): e (until 10:00), a's second spell -> 2; churned: e, a (both before as_of).
    r = churn(case("wk"), ChurnQuery(inactive_for="7d", period="week"))
    got = [(row.period.isoformat(), row.active_at_start, row.churned) for row in r.rows]
    assert got == [("2026-02-23", 0, 0), ("2026-03-02", 2, 1), ("2026-03-09", 3, 2), ("2026-03-16", 3, 2),
                   ("2026-03-23", 2, 2)]
    assert r.rows[2].churn_rate == pytest.approx(2 / 3)
    # at as_of (03-29 23:59:59) only e is active (its touch is at as_of)
    assert (r.active, r.churned) == (1, 4)
    assert r.people("churned") == ["wk:a", "wk:b", "wk:c", "wk:d"]


# ---------------------------------------------------------------- repurchase
def test_repurchase_with_window_period_and_property_breakdown(case: Any) -> None:
    # window 21 days: m1 buys again 1 s later (yes), m2 after 28 days (no), m3 after exactly 21 days
    # (yes: the window is inclusive), m4 twice at the same time (yes) -> 3 of 4.
    # first-purchase months: 2025-12 {m1: yes, 3 purchases}, 2026-01 {m2: no, m3: yes; 2 + 2 purchases},
    # 2026-02 {m4: yes, 2 purchases}.
    # breakdown properties.total of the first touch: m1 a visit -> (none); m2, m4 -> "30"; m3 -> "5".
    q = RepurchaseQuery(event="purchase", window="21d", period="month", breakdown="properties.total",
                        as_of="2026-03-31")
    r = repurchase(case("mo"), q)
    assert (r.purchasers, r.repurchasers, r.total.purchases) == (4, 3, 9)
    assert r.rate == pytest.approx(0.75)
    assert [(row.period.isoformat() if row.period else None, row.purchasers, row.repurchasers, row.purchases)
            for row in r.rows] == [("2025-12-01", 1, 1, 3), ("2026-01-01", 2, 1, 4), ("2026-02-01", 1, 1, 2)]
    assert [(b.value, b.total.purchasers, b.total.repurchasers) for b in r.breakdown] == [
        ("30", 2, 1), ("(none)", 1, 1), ("5", 1, 1)]


# ---------------------------------------------------------------- request models and names
@pytest.mark.parametrize(("make", "code", "hint"), [
    (lambda: RetentionQuery(unit="persn"), "unknown_name", "did you mean 'person'?"),
    (lambda: RetentionQuery(period="weak"), "unknown_name", "did you mean 'week'?"),
    (lambda: RetentionQuery(mode="unbound"), "unknown_name", "did you mean 'unbounded'?"),
    (lambda: RetentionQuery(cohort_period="months"), "unknown_name", "did you mean 'month'?"),
    (lambda: RetentionQuery(breakdown_touch="first"), "unknown_name", "did you mean 'first_touch'?"),
    (lambda: RetentionQuery(periods=0), "invalid_parameter", None),
    (lambda: RetentionQuery(periods=401), "invalid_parameter", None),
    (lambda: RetentionQuery(breakdown_limit=0), "invalid_parameter", None),
    (lambda: RetentionQuery(breakdown=" "), "invalid_parameter", None),
    (lambda: RetentionQuery(date_from="2026-03-02", date_to="2026-03-01"), "invalid_parameter", None),
    (lambda: RetentionQuery(date_from="yesterday"), "invalid_parameter", None),
    (lambda: RetentionQuery(as_of="soon"), "invalid_parameter", None),
    (lambda: RetentionQuery(start_event="properties.total>=lots"), "invalid_parameter", None),
    (lambda: RetentionQuery(colour="red"), "invalid_parameter", None),
    (lambda: ChurnQuery(inactive_for="30x"), "invalid_parameter", None),
    (lambda: ChurnQuery(inactive_for=0), "invalid_parameter", None),
    (lambda: ChurnQuery(period="quarter"), "unknown_name", None),
    (lambda: LifecycleQuery(unit="acount"), "unknown_name", "did you mean 'account'?"),
    (lambda: RepurchaseQuery(window="-1d"), "invalid_parameter", None),
    (lambda: RepurchaseQuery(event=""), "invalid_parameter", None),
])
def test_invalid_queries_raise_journeylens_errors(make: Any, code: str, hint: str | None) -> None:
    from journeylens.errors import JourneylensError

    with pytest.raises(JourneylensError) as info:
        make()
    assert info.value.code == code
    if hint is not None:
        assert info.value.hint == hint


def test_query_defaults_and_parsing() -> None:
    q = RetentionQuery()
    assert (q.period, q.cohort_grain, q.periods, q.mode, q.unit, q.start_event, q.return_event) == (
        "week", "week", 12, "bounded", "person", None, None)
    q = RetentionQuery(start_event="purchase", return_event={"filter": "channel=email|seo", "name": "mail"},
                       as_of="2026-03-01T12:00:00Z")
    assert q.start_event is not None and q.start_event.conditions[0].field == "event"
    assert q.return_event is not None and q.return_event.name == "mail"
    assert q.as_of_time == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert RetentionQuery(as_of=date(2026, 3, 1)).as_of_time == datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert ChurnQuery().period == "month" and ChurnQuery().inactive_seconds == 30 * 86_400
    assert RepurchaseQuery().event.name == "purchase" and RepurchaseQuery().period is None


def test_unknown_columns_suggest_the_closest_name() -> None:
    from journeylens.errors import InvalidParameterError, UnknownNameError

    store = open_store(":memory:")
    store.append("events", events_table([{"user_id": "u1"}]))
    t = Workspace(store).touches()
    with pytest.raises(UnknownNameError) as info:
        retention(t, RetentionQuery(breakdown="chanel"))
    assert info.value.hint == "did you mean 'channel'?"
    with pytest.raises(UnknownNameError) as info:
        lifecycle(t, LifecycleQuery(event="chanel=email"))
    assert info.value.hint == "did you mean 'channel'?"
    with pytest.raises(UnknownNameError):
        churn(t.drop("properties"), ChurnQuery(breakdown="properties.plan"))
    with pytest.raises(InvalidParameterError):
        retention(t, LifecycleQuery())  # type: ignore[arg-type]


def test_no_touches_gives_empty_results() -> None:
    store = open_store(":memory:")
    t = Workspace(store).touches()
    r = retention(t, RetentionQuery(periods=3))
    assert (r.as_of, r.cohorts, r.size) == (None, (), 0)
    assert [p.rate for p in r.curve] == [None, None, None]
    assert lifecycle(t, LifecycleQuery()).rows == ()
    assert (churn(t, ChurnQuery()).active, churn(t, ChurnQuery()).rows) == (0, ())
    assert repurchase(t, RepurchaseQuery()).rate is None
    # with as_of the periods are known, they are just empty
    life = lifecycle(t, LifecycleQuery(as_of="2026-03-04"))
    assert [(row.period, row.active) for row in life.rows] == [(date(2026, 3, 2), 0)]


def test_date_range_picks_whole_periods() -> None:
    # DuckDB only: the same code path as the cases above, with the periods filtered
    store = open_store(":memory:")
    store.append("events", events_table(_rows()))
    t = Workspace(store).touches()
    t = t.filter(t.person_id.startswith("wk:"))
    # 03-04 lies in W1, 03-10 in W2: the cohorts W1 {c, d} and W2 {e}
    r = retention(t, RetentionQuery(periods=2, date_from="2026-03-04", date_to="2026-03-10"))
    assert [(c.cohort.isoformat(), c.size) for c in r.cohorts] == [("2026-03-02", 2), ("2026-03-09", 1)]
    life = lifecycle(t, LifecycleQuery(date_from="2026-03-04", date_to="2026-03-10"))
    assert [(row.period.isoformat(), row.new, row.returning, row.resurrecting, row.dormant) for row in life.rows] == [
        ("2026-03-02", 2, 1, 0, -1), ("2026-03-09", 1, 1, 1, -2)]
    gone = churn(t, ChurnQuery(inactive_for="7d", period="week", date_from="2026-03-09"))
    assert [(row.active_at_start, row.churned) for row in gone.rows] == [(3, 2), (3, 2), (2, 2)]
    # the same persons, broken down: rows per value add up to the overall rows
    split = churn(t, ChurnQuery(inactive_for="7d", period="week", breakdown="channel"))
    assert [b.value for b in split.breakdown] == ["(none)", "email"]
    for k, row in enumerate(split.rows):
        assert row.active_at_start == sum(b.rows[k].active_at_start for b in split.breakdown)
        assert row.churned == sum(b.rows[k].churned for b in split.breakdown)
    assert (split.breakdown[1].active, split.breakdown[1].churned) == (0, 2)  # a and b: churned at as_of


def test_breakdown_on_the_start_touch() -> None:
    # start = touches with channel seo: only c (03-09 00:00, W2). Its first touch had no channel.
    store = open_store(":memory:")
    store.append("events", events_table(_rows()))
    t = Workspace(store).touches()
    t = t.filter(t.person_id.startswith("wk:"))
    q = {"start_event": "channel=seo", "breakdown": "channel", "periods": 2, "as_of": "2026-03-29"}
    on_start = retention(t, RetentionQuery(breakdown_touch="start", **q))
    on_first = retention(t, RetentionQuery(**q))
    assert [(c.cohort.isoformat(), c.size) for c in on_start.cohorts] == [("2026-03-09", 1)]
    assert [b.value for b in on_start.breakdown] == ["seo"]
    assert [b.value for b in on_first.breakdown] == ["(none)"]
