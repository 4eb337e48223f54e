"""Stage assignment: demo vocabulary placement, rule semantics, operators and globs.

Every test runs on DuckDB and (marked ``spark``) on PySpark; expected stages
come from the brief's vocabulary tables or are worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ibis
import pyarrow as pa
import pytest

from journeylens.errors import InvalidParameterError
from journeylens.journey import JourneyModel, assign_stages, load_model, unmatched_touches
from journeylens.journey.stages import glob_regex
from tests.helpers import events_table
from tests.journey.journey_vocabulary import B2B, SHOP, DemoTouch, run_stages, vocabulary_table

WriteModel = Callable[[str], JourneyModel]
Upload = Callable[[pa.Table], ibis.Table]


@pytest.mark.parametrize(("model_key", "vocabulary"), [("five_phase", SHOP), ("b2b", B2B)])
def test_demo_vocabulary_lands_in_the_expected_stage(
    con: Any, upload: Upload, model_key: str, vocabulary: tuple[DemoTouch, ...]
) -> None:
    model = load_model(model_key)
    table = upload(vocabulary_table(vocabulary))
    got = run_stages(con, table, model)
    wrong = [
        (t.label, t.touchpoint, t.expected, s)
        for t, s in zip(vocabulary, got, strict=True)
        if s != t.expected
    ]
    assert wrong == []
    unmatched = con.to_pyarrow(unmatched_touches(assign_stages(table, model)))
    assert unmatched.num_rows == 0


def test_stage_index_is_the_position_in_the_model(con: Any, upload: Upload) -> None:
    model = load_model("five_phase")
    table = upload(vocabulary_table(SHOP))
    result = con.to_pyarrow(assign_stages(table, model).order_by("message_id")).to_pylist()
    expected_index = {
        "awareness": 0,
        "consideration": 1,
        "decision": 2,
        "retention": 3,
        "advocacy": 4,
    }
    assert [r["stage_index"] for r in result] == [expected_index[t.expected] for t in SHOP]


def test_columns_are_kept_and_two_are_added(con: Any, upload: Upload) -> None:
    table = upload(vocabulary_table(SHOP))
    staged = assign_stages(table, load_model("five_phase"))
    assert staged.columns == (*table.columns, "stage", "stage_index")
    assert str(staged.schema()["stage"]).startswith("string")
    assert staged.schema()["stage_index"].is_integer()


def test_non_touches_get_no_stage_and_nothing_is_dropped(con: Any, upload: Upload) -> None:
    rows: list[dict[str, object]] = [
        {"type": "identify", "event": "identify", "user_id": "u1"},
        {"type": "group", "event": "group", "account_id": "a1"},
        {"type": "alias", "event": "alias", "previous_id": "x"},
        {"type": "page", "event": "visit"},
        {"type": "screen", "event": "login"},
        {"type": "track", "event": "mystery_event"},
        {"type": "track", "event": "mystery_event"},
        {"type": "track", "event": "review_written"},
    ]
    model = load_model("five_phase")
    assert run_stages(con, upload(events_table(rows)), model) == [
        None, None, None, "awareness", "retention", None, None, "advocacy",
    ]  # fmt: skip
    report = con.to_pyarrow(
        unmatched_touches(assign_stages(upload(events_table(rows)), model))
    ).to_pylist()
    assert report == [{"event": "mystery_event", "touches": 2}]


def test_unmatched_touches_can_be_broken_down(con: Any, upload: Upload) -> None:
    rows: list[dict[str, object]] = [
        {"event": "odd", "touchpoint": "website"},
        {"event": "odd", "touchpoint": "website"},
        {"event": "odd", "touchpoint": "store"},
        {"event": "visit", "touchpoint": "store"},
    ]
    staged = assign_stages(upload(events_table(rows)), load_model("five_phase"))
    report = con.to_pyarrow(unmatched_touches(staged, by=["event", "touchpoint"])).to_pylist()
    assert report == [
        {"event": "odd", "touchpoint": "website", "touches": 2},
        {"event": "odd", "touchpoint": "store", "touches": 1},
    ]


def test_aida_leaves_post_purchase_touches_unmatched(con: Any, upload: Upload) -> None:
    rows: list[dict[str, object]] = [
        {"event": "purchase", "properties": {"order_number": 1}},
        {"event": "purchase", "properties": {"order_number": 4}},
        {"event": "support_ticket", "touchpoint": "support", "channel": "support"},
        {"event": "review_written", "touchpoint": "review_portal", "channel": "review_site"},
    ]
    assert run_stages(con, upload(events_table(rows)), load_model("aida")) == [
        "action",
        "action",
        None,
        None,
    ]


def test_first_matching_rule_wins(con: Any, upload: Upload, write_model: WriteModel) -> None:
    head = "key: m\nstages: [{key: first}, {key: second}]\nrules:\n"
    a = "  - {stage: first, when: {event: [x, y]}}\n"
    b = "  - {stage: second, when: {event: x}}\n"
    table = upload(events_table([{"event": "x"}, {"event": "y"}]))
    assert run_stages(con, table, write_model(head + a + b)) == ["first", "first"]
    assert run_stages(con, table, write_model(head + b + a)) == ["second", "first"]


def test_a_repeat_purchase_outranks_the_decision_rule(con: Any, upload: Upload) -> None:
    rows: list[dict[str, object]] = [
        {"event": "purchase", "properties": {"order_number": 1}},
        {"event": "purchase", "properties": {"order_number": 2}},
        {"event": "purchase", "properties": {"order_number": "3"}},
        {"event": "purchase"},  # no order_number: a purchase, so decision
        {"event": "purchase", "properties": None},
    ]
    got = run_stages(con, upload(events_table(rows)), load_model("five_phase"))
    assert got == ["decision", "retention", "retention", "decision", "decision"]


def test_any_blocks_are_ored_and_conditions_in_a_block_anded(
    con: Any, upload: Upload, write_model: WriteModel
) -> None:
    model = write_model(
        """
key: m
stages: [{key: hit}]
rules:
  - stage: hit
    any:
      - {event: a}
      - {event: b, channel: email}
"""
    )
    rows: list[dict[str, object]] = [
        {"event": "a", "channel": "display"},
        {"event": "b", "channel": "email"},
        {"event": "b", "channel": "display"},
        {"event": "c", "channel": "email"},
    ]
    assert run_stages(con, upload(events_table(rows)), model) == ["hit", "hit", None, None]


def test_restaging_with_another_model_replaces_the_columns(con: Any, upload: Upload) -> None:
    table = upload(vocabulary_table(B2B))
    once = assign_stages(table, load_model("five_phase"))
    twice = assign_stages(once, load_model("b2b"))
    assert twice.columns == (*table.columns, "stage", "stage_index")
    got = con.to_pyarrow(twice.order_by("message_id")).column("stage").to_pylist()
    assert got == [t.expected for t in B2B]


def test_missing_rule_columns_are_reported() -> None:
    table = ibis.memtable(events_table([{"event": "visit"}])).select("message_id", "type", "event")
    with pytest.raises(InvalidParameterError, match="properties"):
        assign_stages(table, load_model("five_phase"))


def test_a_table_without_type_is_all_touches(con: Any, upload: Upload) -> None:
    table = upload(events_table([{"type": "identify", "event": "visit"}])).drop("type")
    assert run_stages(con, table, load_model("aida")) == ["awareness"]


# -- conditions ---------------------------------------------------------------------------------
# (when-block, [(row columns, matches?)]); each row is checked against a one-rule model.

CASES: list[tuple[str, str, list[tuple[dict[str, object], bool]]]] = [
    ("number eq", "{properties: {order_number: 2}}", [
        ({"properties": {"order_number": 2}}, True),
        ({"properties": {"order_number": "2"}}, True),
        ({"properties": {"order_number": 2.0}}, True),
        ({"properties": {"order_number": 3}}, False),
        ({"properties": {}}, False),
    ]),
    ("ne keeps absent", "{properties: {order_number: {ne: 2}}}", [
        ({"properties": {"order_number": 2}}, False),
        ({"properties": {"order_number": 3}}, True),
        ({"properties": {}}, True),
    ]),
    ("range gt+lte", "{properties: {n: {gt: 1, lte: 3}}}", [
        ({"properties": {"n": 1}}, False),
        ({"properties": {"n": 2}}, True),
        ({"properties": {"n": 3}}, True),
        ({"properties": {"n": 3.5}}, False),
        ({"properties": {"n": "abc"}}, False),
        ({"properties": {}}, False),
    ]),
    ("lt", "{properties: {n: {lt: 0}}}", [
        ({"properties": {"n": -1}}, True),
        ({"properties": {"n": 0}}, False),
    ]),
    ("gte", "{properties: {n: {gte: 5}}}", [
        ({"properties": {"n": 5}}, True),
        ({"properties": {"n": 4.99}}, False),
    ]),
    ("in numbers", "{properties: {n: {in: [1, 3]}}}", [
        ({"properties": {"n": 1}}, True),
        ({"properties": {"n": 2}}, False),
        ({"properties": {"n": 3}}, True),
    ]),
    ("in text", "{properties: {plan: {in: [pro, team]}}}", [
        ({"properties": {"plan": "pro"}}, True),
        ({"properties": {"plan": "free"}}, False),
        ({"properties": {}}, False),
    ]),
    ("list shorthand", "{properties: {plan: [pro, team]}}", [
        ({"properties": {"plan": "team"}}, True),
        ({"properties": {"plan": "free"}}, False),
    ]),
    ("text eq is case-sensitive", "{properties: {plan: pro}}", [
        ({"properties": {"plan": "pro"}}, True),
        ({"properties": {"plan": "Pro"}}, False),
    ]),
    ("text eq on a number property", "{properties: {sku: '123'}}", [
        ({"properties": {"sku": 123}}, True),
        ({"properties": {"sku": "123"}}, True),
    ]),
    ("bool true", "{properties: {gift: true}}", [
        ({"properties": {"gift": True}}, True),
        ({"properties": {"gift": False}}, False),
        ({"properties": {}}, False),
    ]),
    ("bool false", "{properties: {gift: false}}", [
        ({"properties": {"gift": False}}, True),
        ({"properties": {"gift": True}}, False),
    ]),
    ("exists", "{properties: {coupon: {exists: true}}}", [
        ({"properties": {"coupon": "X"}}, True),
        ({"properties": {"coupon": 0}}, True),
        ({"properties": {}}, False),
        ({"properties": {"coupon": None}}, False),
        ({"properties": ["not", "an", "object"]}, False),
    ]),
    ("not exists", "{properties: {coupon: {exists: false}}}", [
        ({"properties": {"coupon": "X"}}, False),
        ({"properties": {}}, True),
        ({"properties": None}, True),
    ]),
    ("dotted key", "{properties: {cart.total: {gt: 100}}}", [
        ({"properties": {"cart": {"total": 150}}}, True),
        ({"properties": {"cart": {"total": 50}}}, False),
        ({"properties": {"total": 150}}, False),
    ]),
    ("glob on a property", "{properties: {plan: 'pro*'}}", [
        ({"properties": {"plan": "pro"}}, True),
        ({"properties": {"plan": "professional"}}, True),
        ({"properties": {"plan": "apro"}}, False),
    ]),
    ("glob star", "{event: 'visit*'}", [
        ({"event": "visit"}, True),
        ({"event": "visit_shop"}, True),
        ({"event": "revisit"}, False),
        ({"event": "Visit"}, False),
    ]),
    ("glob question mark", "{event: 'step_?'}", [
        ({"event": "step_1"}, True),
        ({"event": "step_12"}, False),
        ({"event": "step_"}, False),
        ({"event": "stepX1"}, False),
    ]),
    ("glob keeps dots literal", "{url: 'https://shop.example/p/*'}", [
        ({"url": "https://shop.example/p/1"}, True),
        ({"url": "https://shopXexample/p/1"}, False),
        ({"url": "https://shop.example/q/1"}, False),
        ({}, False),
    ]),
    ("glob keeps % _ ( [ literal", "{event: '50%_off(a)[b]*'}", [
        ({"event": "50%_off(a)[b]"}, True),
        ({"event": "50%_off(a)[b] now"}, True),
        ({"event": "50x_off(a)[b]"}, False),
        ({"event": "50%Xoff(a)[b]"}, False),
        ({"event": "50%_offab"}, False),
    ]),
    ("glob spans lines, exact match does not", "{event: 'a*'}", [
        ({"event": "a\nb"}, True),
        ({"event": "b\na"}, False),
    ]),
    ("exact value is anchored", "{event: 'a?'}", [
        ({"event": "ab"}, True),
        ({"event": "ab\n"}, False),
    ]),
    ("list with globs", "{event: ['visit*', login]}", [
        ({"event": "visit_x"}, True),
        ({"event": "login"}, True),
        ({"event": "logins"}, False),
    ]),
    ("explicit eq is literal", "{event: {eq: 'visit*'}}", [
        ({"event": "visit*"}, True),
        ({"event": "visitor"}, False),
    ]),
    ("explicit glob list", "{touchpoint: {glob: ['*_ad', '*_qr']}}", [
        ({"touchpoint": "search_ad"}, True),
        ({"touchpoint": "flyer_qr"}, True),
        ({"touchpoint": "website"}, False),
    ]),
    ("columns are anded", "{event: visit, channel: [display, paid_social]}", [
        ({"event": "visit", "channel": "display"}, True),
        ({"event": "visit", "channel": "email"}, False),
        ({"event": "signup", "channel": "display"}, False),
    ]),
    ("numeric column", "{revenue: {gte: 100}}", [
        ({"revenue": 100.0}, True),
        ({"revenue": 99.5}, False),
        ({}, False),
    ]),
    ("numeric column eq", "{revenue: 0}", [
        ({"revenue": 0.0}, True),
        ({"revenue": 1.0}, False),
    ]),
    ("type column", "{type: page}", [
        ({"type": "page"}, True),
        ({"type": "track"}, False),
    ]),
    ("ne on a column keeps NULL", "{channel: {ne: email}}", [
        ({"channel": "email"}, False),
        ({"channel": "display"}, True),
        ({}, True),
    ]),
    ("utm and exists on a column", "{utm_campaign: {exists: true}, utm_source: [google, bing]}", [
        ({"utm_campaign": "spring", "utm_source": "google"}, True),
        ({"utm_source": "google"}, False),
        ({"utm_campaign": "spring", "utm_source": "meta"}, False),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "when", "rows"), CASES, ids=[c[0] for c in CASES])
def test_condition(
    con: Any,
    upload: Upload,
    write_model: WriteModel,
    name: str,
    when: str,
    rows: list[tuple[dict[str, object], bool]],
) -> None:
    model = write_model(
        f"key: m\nstages: [{{key: hit}}]\nrules:\n  - stage: hit\n    when: {when}\n"
    )
    got = run_stages(con, upload(events_table([r for r, _ in rows])), model)
    assert got == ["hit" if match else None for _, match in rows]


def test_glob_regex_escapes_punctuation_only() -> None:
    assert glob_regex(["visit*"]) == r"(?s)\A(?:visit.*)\z"
    assert glob_regex(["a.b?", "x_y"]) == r"(?s)\A(?:a\.b.|x_y)\z"
    assert glob_regex(["größe*"]) == r"(?s)\A(?:größe.*)\z"
