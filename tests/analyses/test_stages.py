"""Stage funnel over a journey model, hand-checked, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from journeylens.errors import InvalidParameterError
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import events_table

# five_phase: visit=awareness(0), product_view=consideration(1), add_to_cart=decision(2),
# newsletter_open=retention(3), review_written=advocacy(4)
ROWS = [
    # A: awareness m0 -> consideration m10 -> back to awareness m20 -> consideration m30 -> decision m90
    {"user_id": "A", "event": "visit", "minute": 0},
    {"user_id": "A", "event": "product_view", "minute": 10},
    {"user_id": "A", "event": "visit", "minute": 20},
    {"user_id": "A", "event": "product_view", "minute": 30},
    {"user_id": "A", "event": "add_to_cart", "minute": 90, "account_id": "acme"},
    # B: skips awareness and decision: consideration m0 -> retention m60
    {"user_id": "B", "event": "product_view", "minute": 0, "account_id": "acme"},
    {"user_id": "B", "event": "newsletter_open", "minute": 60},
    # C: awareness only; D: an event no rule matches
    {"user_id": "C", "event": "visit", "minute": 5},
    {"user_id": "D", "event": "mystery", "minute": 7},
]


@pytest.fixture
def ws(make_store: Callable[[], Store]) -> Workspace:
    store = make_store()
    store.append("events", events_table(ROWS))
    w = Workspace(store)
    w.rebuild_identities()
    return w


def test_reached_touches_and_dynamics(ws: Workspace) -> None:
    f = ws.stage_funnel("five_phase")
    got = [(r.stage, r.people, r.touches, r.furthest, r.median_seconds_in_stage, r.units_timed,
            r.moved_back, r.repeated) for r in f.stages]
    assert got == [
        # stage, reached, touches, furthest==, median s in stage, timed, moved back, repeated
        ("awareness", 3, 3, 1, 600.0, 1, 0, 1),          # A: m0->m10 = 600 s; C censored; A has 2 awareness runs
        ("consideration", 2, 3, 0, 4200.0, 2, 1, 1),     # A 4800 s, B 3600 s -> median 4200; A moved back
        ("decision", 2, 1, 1, None, 0, 0, 0),            # A stays (censored), B skipped it but went beyond
        ("retention", 1, 1, 1, None, 0, 0, 0),
        ("advocacy", 0, 0, 0, None, 0, 0, 0),
    ]
    assert f.unmatched_touches == 1 and f.total_units == 4
    assert f.stages[1].conversion_from_previous == pytest.approx(2 / 3)
    assert f.stages[3].conversion_from_start == pytest.approx(1 / 3)


def test_account_unit(ws: Workspace) -> None:
    # Only touches carrying acme count for it (no group call links A or B): A's add_to_cart
    # (decision) and B's product_view; B's newsletter_open has no account -> acme's furthest is decision.
    f = ws.stage_funnel("five_phase", unit="account")
    assert [r.people for r in f.stages] == [1, 1, 1, 0, 0]
    assert f.total_units == 1


def test_unknown_unit(ws: Workspace) -> None:
    with pytest.raises(InvalidParameterError, match="unknown unit"):
        ws.stage_funnel("five_phase", unit="household")


# ---------------------------------------------------------------- breakdowns (hand-checked)
def _people(f: object, value: str) -> list[int]:
    b = {x.value: x for x in f.breakdown}[value]  # type: ignore[attr-defined]
    return [r.people for r in b.stages]


def test_breakdown_by_column_first_last_and_stage(ws: Workspace) -> None:
    # event as the breakdown column: first touch A visit, B product_view, C visit, D mystery
    f = ws.stage_funnel("five_phase", breakdown="event")
    assert [b.value for b in f.breakdown] == ["visit", "mystery", "product_view"]  # 2 units first, then by value
    assert _people(f, "visit") == [2, 1, 1, 0, 0]          # A (decision) and C (awareness)
    assert _people(f, "product_view") == [1, 1, 1, 1, 0]   # B (retention)
    assert {b.value: b.total_units for b in f.breakdown} == {"visit": 2, "mystery": 1, "product_view": 1}
    assert {b.value: b.unmatched_touches for b in f.breakdown}["mystery"] == 1
    # last touch: A add_to_cart, B newsletter_open, C visit, D mystery
    last = ws.stage_funnel("five_phase", breakdown="event", breakdown_from="last_touch")
    assert _people(last, "add_to_cart") == [1, 1, 1, 0, 0]
    # first touch in stage consideration (stage:2 == stage:consideration): A and B product_view, others (none)
    st = ws.stage_funnel("five_phase", breakdown="event", breakdown_from="stage:consideration")
    assert st.to_dict()["breakdown"]["values"] == ws.stage_funnel(
        "five_phase", breakdown="event", breakdown_from="stage:2").to_dict()["breakdown"]["values"]
    assert _people(st, "product_view") == [2, 2, 2, 1, 0]
    assert _people(st, "(none)") == [1, 0, 0, 0, 0]        # C; D has no matched touch
    # the limit gathers the rest in (other)
    lim = ws.stage_funnel("five_phase", breakdown="event", breakdown_limit=1)
    assert [b.value for b in lim.breakdown] == ["visit", "(other)"]
    assert _people(lim, "(other)") == [1, 1, 1, 1, 0]


def test_breakdown_by_saved_cohorts(ws: Workspace) -> None:
    ws.save_cohort("persona:bargain", ["A", "C"])
    ws.save_cohort("persona:loyal", ["B"])
    ws.save_cohort("buyers", ["A"])
    f = ws.stage_funnel("five_phase", breakdown="persona")
    assert _people(f, "bargain") == [2, 1, 1, 0, 0] and _people(f, "loyal") == [1, 1, 1, 1, 0]
    m = ws.stage_funnel("five_phase", breakdown="cohort:buyers")
    assert _people(m, "member") == [1, 1, 1, 0, 0] and _people(m, "non_member") == [2, 1, 1, 1, 0]
    c = ws.stage_funnel("five_phase", breakdown="cohort")
    assert [b.value for b in c.breakdown] == ["(none)", "buyers"]
    fu = ws.funnel(["visit", "product_view"], breakdown="cohort:buyers")
    assert {b.value: b.steps[1].persons for b in fu.breakdown} == {"member": 1, "non_member": 0}
    r = ws.retention(breakdown="persona", period="day")
    assert {b.value for b in r.breakdown} == {"bargain", "loyal", "(none)"}


def test_bad_breakdown_source(ws: Workspace) -> None:
    from journeylens.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        ws.stage_funnel("five_phase", breakdown="event", breakdown_from="middle_touch")
    with pytest.raises(UnknownNameError):
        ws.stage_funnel("five_phase", breakdown="event", breakdown_from="stage:nirvana")
    with pytest.raises(UnknownNameError):
        ws.stage_funnel("five_phase", breakdown="colour")


# ---------------------------------------------------------------- CLI on the demo, against the planted truth
def test_cli_stages_by_persona_matches_planted_truth(demo_shop: object, tmp_path: object) -> None:
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    import journeylens
    from journeylens.cli.app import app

    db = demo_shop.copy_db(tmp_path)  # type: ignore[attr-defined]
    truth = demo_shop.truth_persons()  # type: ignore[attr-defined]
    with journeylens.open(db) as w:
        for persona, group in truth.groupby("persona"):
            w.save_cohort(f"persona:{persona}", group.person_id.tolist())
    runner = CliRunner()
    res = runner.invoke(app, ["--db", str(Path(str(db))), "stages", "--breakdown", "persona", "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    got = {v["value"]: {s["stage"]: s["furthest"] for s in v["stages"]} for v in d["breakdown"]["values"]}
    for persona, group in truth.groupby("persona"):
        expected = group.furthest_stage.value_counts().to_dict()
        assert {k: n for k, n in got[persona].items() if n} == expected, persona
    # a column breakdown partitions the units: the values add up to the overall counts
    res = runner.invoke(app, ["--db", str(db), "stages", "--breakdown", "channel", "--breakdown-from",
                              "last_touch", "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for i, stage in enumerate(d["stages"]):
        assert sum(v["stages"][i]["people"] for v in d["breakdown"]["values"]) == stage["people"]
    res = runner.invoke(app, ["--db", str(db), "stages", "--breakdown", "channel", "--format", "csv"])
    assert res.exit_code == 0 and res.stdout.startswith("breakdown,stage,people")
    res = runner.invoke(app, ["--db", str(db), "stages", "--breakdown", "persona"])
    assert res.exit_code == 0 and "researcher" in res.stdout
    res = runner.invoke(app, ["--db", str(db), "funnel", "visit", "purchase", "--breakdown", "persona",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    f = json.loads(res.stdout)
    by = {v["value"]: v["steps"][1]["persons"] for v in f["breakdown"]["values"]}
    buyers = truth[truth.converted].groupby("persona").size().to_dict()
    assert set(by) >= set(buyers)
    # a purchase within 14 days of a visit needs a planted buyer: never more than the buyers
    assert all(0 < by[p] <= buyers[p] for p in buyers)


def test_stage_funnels_per_group_equal_stage_funnel_of_the_members(ws: Workspace) -> None:
    """One grouped pass (personas use it) gives each group the funnel of its members' touches;
    a unit in two groups counts in both, units in no group are left out."""
    import ibis

    from journeylens.analyses.stages import stage_funnel, stage_funnels

    m = ws.model("five_phase")
    t = ws.touches(m)
    groups = ibis.memtable({"person_id": ["A", "B", "C", "A"], "value": ["g1", "g1", "g2", "g2"]})
    got = stage_funnels(t, m, groups)
    assert set(got) == {"g1", "g2"}
    for key, members in (("g1", ["A", "B"]), ("g2", ["A", "C"])):
        alone = stage_funnel(t.filter(t.person_id.isin(members)), m)
        assert got[key] == alone, key
    assert got["g1"].stages[1].moved_back == 1 and got["g2"].total_units == 2
