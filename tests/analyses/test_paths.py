"""Paths, Sankey flows and transition matrices on hand-checked journeys, the same on DuckDB
and Spark.

All journeys live in one store per backend, built once for this module (filling a Spark
store and starting its queries is slow, so paths and transitions share it); each test
reads the persons of its own case (person ids ``<case>.<n>``).
Times are minutes after T0. Every expected path and count is worked out by hand in the
comments from the definitions in docs/paths.md. Ties between equally frequent paths are
listed in node order (a path that is a prefix of another comes first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import pytest

from journeylens.analyses.funnel import FunnelQuery, funnel
from journeylens.analyses.paths import (
    CleaningRule,
    PathsQuery,
    PathsResult,
    funnel_paths,
    path_nodes,
    paths,
    sankey,
)
from journeylens.analyses.transitions import TransitionMatrix, TransitionsQuery, transitions
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import open_store
from journeylens.workspace import Workspace
from tests.conftest import BACKENDS, store_url
from tests.helpers import events_table

V, PV, ATC, PUR = "visit", "product_view", "add_to_cart", "purchase"
PS, PE = "path_start", "path_end"


def ev(person: str, event: str, minute: float, **kw: Any) -> dict[str, Any]:
    return {"user_id": person, "event": event, "minute": minute, **kw}


# case a: the shop funnel with repeats
A = [
    ev("a.1", V, 0), ev("a.1", PV, 1), ev("a.1", PV, 3), ev("a.1", ATC, 4), ev("a.1", PUR, 10),
    ev("a.2", V, 0), ev("a.2", PV, 2), ev("a.2", ATC, 5),
    ev("a.3", V, 0), ev("a.3", PV, 1),
    ev("a.4", V, 0), ev("a.4", PV, 2), ev("a.4", PV, 4), ev("a.4", ATC, 5), ev("a.4", PUR, 7),
    ev("a.5", V, 0),
]
# case b: anchors
B = [
    ev("b.1", V, 0, channel="email"), ev("b.1", PV, 1), ev("b.1", ATC, 2), ev("b.1", PV, 3), ev("b.1", ATC, 4),
    ev("b.1", PUR, 6),
    ev("b.2", PV, 0), ev("b.2", V, 1, channel="seo"), ev("b.2", ATC, 2),
    ev("b.3", V, 0, channel="email"), ev("b.3", PUR, 2),
    ev("b.4", ATC, 0), ev("b.4", V, 1, channel="seo"), ev("b.4", PV, 2), ev("b.4", ATC, 3), ev("b.4", PUR, 5),
    ev("b.5", V, 0), ev("b.5", V, 1, channel="seo"), ev("b.5", PV, 2),
]
# case c: urls for cleaning rules (c.3's first touch has no url)
SHOP = "https://shop.example.com"
C = [
    ev("c.1", "page", 0, url=f"{SHOP}/"), ev("c.1", "page", 1, url=f"{SHOP}/p/shoe-1"),
    ev("c.1", "page", 2, url=f"{SHOP}/p/shoe-2"), ev("c.1", "page", 3, url=f"{SHOP}/cart"),
    ev("c.2", "page", 0, url=f"{SHOP}/p/jacket"), ev("c.2", "page", 1, url=f"{SHOP}/lp/summer?utm=x"),
    ev("c.2", "page", 2, url=f"{SHOP}/cart"),
    ev("c.3", "page", 0), ev("c.3", "page", 1, url=f"{SHOP}/cart"),
]
# case e: stitching and accounts. e.u1 is anonymous first; e.u1 and e.u2 belong to account e.acme
E = [
    {"anonymous_id": "e.anon1", "event": V, "minute": 0},
    {"anonymous_id": "e.anon1", "user_id": "e.u1", "type": "identify", "event": "identify", "minute": 1},
    {"user_id": "e.u1", "account_id": "e.acme", "type": "group", "event": "group", "minute": 1},
    {"user_id": "e.u2", "account_id": "e.acme", "type": "group", "event": "group", "minute": 1},
    ev("e.u2", V, 1.5), ev("e.u1", PV, 2), ev("e.u2", PUR, 3),
]
# case d: transitions and their times
D = [
    ev("d.1", V, 0), ev("d.1", PV, 2), ev("d.1", PV, 3), ev("d.1", ATC, 7), ev("d.1", PUR, 8),
    ev("d.2", V, 0), ev("d.2", PV, 5), ev("d.2", V, 6), ev("d.2", PV, 10),
    ev("d.3", V, 0), ev("d.3", ATC, 1),
]
# case g: equal times are ordered by message_id (here: row order), not by name
G = [ev("g.1", V, 0), ev("g.1", PV, 0), ev("g.1", ATC, 0)]
# case h: touchpoints and stages (five_phase: visit awareness, product_view consideration,
# add_to_cart and a first purchase decision, a repeat purchase retention, 'weird' no stage)
H = [
    ev("h.1", V, 0, touchpoint="website"), ev("h.1", PV, 1, touchpoint="online_shop"),
    ev("h.1", ATC, 2, touchpoint="online_shop"), ev("h.1", PUR, 3, touchpoint="online_shop"),
    ev("h.1", "weird", 4), ev("h.1", PUR, 5, touchpoint="online_shop", properties={"order_number": 2}),
]


@pytest.fixture(scope="module", params=BACKENDS)
def touches(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ir.Table]:
    """All cases in one store of the backend, persons stitched, default model's stages."""
    backend = str(request.param)
    if backend == "spark":
        request.getfixturevalue("spark_session")  # tuned for tiny data in tests/conftest.py
    store = open_store(store_url(backend, tmp_path_factory.mktemp(f"paths-{backend}")))
    store.append("events", events_table(A + B + C + D + E + G + H))
    ws = Workspace(store)
    ws.rebuild_identities()
    touches = ws.touches()
    if backend == "spark":
        # a cached Spark view, so that each query does not redo the identity joins and stage rules
        touches = touches.cache()
    yield touches
    store.close()


def case(t: ir.Table, name: str) -> ir.Table:
    return t.filter(t.person_id.startswith(name + "."))


def top(result: PathsResult) -> list[tuple[tuple[str, ...], int]]:
    return [(p.nodes, p.persons) for p in result.paths]


def links(result: PathsResult) -> set[tuple[int, str, str, int]]:
    return {(lk.step, lk.source, lk.target, lk.persons) for lk in result.sankey.links}


def nodes(result: PathsResult) -> set[tuple[int, str, int]]:
    return {(n.step, n.name, n.persons) for n in result.sankey.nodes}


# ------------------------------------------------------------------------- basics
def test_top_paths_counts_shares_durations_and_sankey(touches: ir.Table) -> None:
    r = paths(case(touches, "a"), PathsQuery())
    # depth 5 keeps every path whole:
    #   a.1, a.4: V PV PV ATC PUR   a.2: V PV ATC   a.3: V PV   a.5: V
    assert top(r) == [((V, PV, PV, ATC, PUR), 2), ((V,), 1), ((V, PV), 1), ((V, PV, ATC), 1)]
    assert (r.persons, r.distinct_paths) == (5, 4)
    assert [p.share for p in r.paths] == [0.4, 0.2, 0.2, 0.2]
    # first to last touch: a.1 10 min, a.4 7 min -> median 8.5 min; a single touch lasts 0 s
    assert [p.median_seconds for p in r.paths] == [510.0, 0.0, 60.0, 300.0]
    assert r.paths[0].path == "visit → product_view → product_view → add_to_cart → purchase"
    # Sankey: units per node per step, links between consecutive steps
    assert nodes(r) == {(1, V, 5), (2, PV, 4), (3, PV, 2), (3, ATC, 1), (4, ATC, 2), (5, PUR, 2)}
    assert links(r) == {(1, V, PV, 4), (2, PV, PV, 2), (2, PV, ATC, 1), (3, PV, ATC, 2), (4, ATC, PUR, 2)}
    assert (r.sankey.links_total, r.sankey.aligned) == (5, "start")


def test_depth_collapse_and_max_links(touches: ir.Table) -> None:
    # depth 2 with collapsed repeats: a.1 V PV, a.2 V PV, a.3 V PV, a.4 V PV, a.5 V
    # durations run to the last touch of the last kept run: a.1 PV run ends at 3, a.2 at 2,
    # a.3 at 1, a.4 at 4 -> 180, 120, 60, 240 s -> median 150 s
    r = paths(case(touches, "a"), PathsQuery(depth=2, collapse_repeats=True, max_links=1))
    assert top(r) == [((V, PV), 4), ((V,), 1)]
    assert [p.median_seconds for p in r.paths] == [150.0, 0.0]
    assert links(r) == {(1, V, PV, 4)} and r.sankey.links_total == 1
    # depth 3 without collapsing: a.1, a.4 V PV PV; a.2 V PV ATC; a.3 V PV; a.5 V.
    # max_links=2 keeps V->PV (4) and, of the links with 2, the first by (step, source, target)
    r = paths(case(touches, "a"), PathsQuery(depth=3, top=2, max_links=2))
    assert top(r) == [((V, PV, PV), 2), ((V,), 1)]
    assert (r.persons, r.distinct_paths) == (5, 4)
    assert links(r) == {(1, V, PV, 4), (2, PV, PV, 2)} and r.sankey.links_total == 3


def test_start_and_end_nodes_respect_the_depth_cut(touches: ir.Table) -> None:
    # depth 3: a.1 and a.4 are cut after 3 nodes, so they get no path_end
    r = paths(case(touches, "a"), PathsQuery(depth=3, start_end_nodes=True))
    assert top(r) == [
        ((PS, V, PV, PV), 2),
        ((PS, V, PE), 1),
        ((PS, V, PV, ATC, PE), 1),
        ((PS, V, PV, PE), 1),
    ]
    assert nodes(r) == {(0, PS, 5), (1, V, 5), (2, PV, 4), (2, PE, 1), (3, PV, 2), (3, ATC, 1), (3, PE, 1),
                        (4, PE, 1)}
    assert links(r) == {(0, PS, V, 5), (1, V, PV, 4), (1, V, PE, 1), (2, PV, PV, 2), (2, PV, ATC, 1),
                        (2, PV, PE, 1), (3, ATC, PE, 1)}


def test_equal_times_keep_message_order(touches: ir.Table) -> None:
    # three touches at the same minute, in row (message_id) order V, PV, ATC
    r = paths(case(touches, "g"), PathsQuery())
    assert top(r) == [((V, PV, ATC), 1)]


# ------------------------------------------------------------------------- anchors
def test_from_anchor_starts_at_the_first_matching_touch(touches: ir.Table) -> None:
    # b.1 from ATC@2: ATC PV ATC PUR; b.2 from ATC@2: ATC; b.3 and b.5 have no ATC: no path;
    # b.4 from ATC@0: ATC V PV ATC PUR
    r = paths(case(touches, "b"), PathsQuery(**{"from": ATC}))
    assert top(r) == [((ATC,), 1), ((ATC, PV, ATC, PUR), 1), ((ATC, V, PV, ATC, PUR), 1)]
    assert r.persons == 3


def test_to_anchor_aligns_paths_on_their_end(touches: ir.Table) -> None:
    # up to the first purchase, last 3 nodes: b.1 V PV ATC PV ATC PUR -> PV ATC PUR (head cut);
    # b.2 and b.5 never purchase; b.3 V PUR; b.4 ATC V PV ATC PUR -> PV ATC PUR (head cut)
    r = paths(case(touches, "b"), PathsQuery(to=PUR, depth=3, start_end_nodes=True))
    assert top(r) == [((PV, ATC, PUR, PE), 2), ((PS, V, PUR, PE), 1)]
    # end-aligned steps: purchase is step 0, earlier nodes negative, path_end +1
    assert r.sankey.aligned == "end"
    assert nodes(r) == {(-2, PV, 2), (-2, PS, 1), (-1, ATC, 2), (-1, V, 1), (0, PUR, 3), (1, PE, 3)}
    assert links(r) == {(-2, PV, ATC, 2), (-2, PS, V, 1), (-1, ATC, PUR, 2), (-1, V, PUR, 1), (0, PUR, PE, 3)}


def test_from_and_to_anchor_between_two_touches(touches: ir.Table) -> None:
    # from the first visit to the first purchase after it (whole paths):
    # b.1 V PV ATC PV ATC PUR; b.2, b.5 no purchase; b.3 V PUR; b.4 (from V@1) V PV ATC PUR
    r = paths(case(touches, "b"), PathsQuery(**{"from": V, "to": PUR}, depth=None))
    assert top(r) == [((V, PV, ATC, PV, ATC, PUR), 1), ((V, PV, ATC, PUR), 1), ((V, PUR), 1)]
    # the "to" touch must come after the "from" touch: b.1 PV@1 -> PV@3; b.2, b.4, b.5 have no
    # second product view. Anchors are step filters: visits from email are b.1 and b.3.
    r = paths(case(touches, "b"), PathsQuery(**{"from": PV, "to": PV}))
    assert top(r) == [((PV, ATC, PV), 1)]
    r = paths(case(touches, "b"), PathsQuery(**{"from": "event=visit&channel=email"}, depth=2))
    assert top(r) == [((V, PV), 1), ((V, PUR), 1)]
    # collapsing starts afresh at the anchor: b.5's seo visit follows another visit but is kept
    # (b.2 from V@1: V ATC; b.4 from V@1: V PV ATC PUR; b.5 from V@1: V PV)
    r = paths(case(touches, "b"), PathsQuery(**{"from": "event=visit&channel=seo"}, collapse_repeats=True,
                                             start_end_nodes=True))
    assert top(r) == [((PS, V, ATC, PE), 1), ((PS, V, PV, ATC, PUR, PE), 1), ((PS, V, PV, PE), 1)]


# ------------------------------------------------------------------------- levels and cleaning
def test_cleaning_rules_collapse_and_missing_values(touches: ir.Table) -> None:
    # url level; rules: shoes first (first match wins), then products, then a regex for /lp/.
    # c.1: / shoes shoes cart -> collapsed / shoes cart; c.2: product landing cart;
    # c.3: (none) cart
    q = PathsQuery(level="url", collapse_repeats=True,
                   cleaning_rules=["*shoe*=shoes", "*/p/*=product", r"re:/lp/[a-z]+=landing"])
    r = paths(case(touches, "c"), q)
    assert top(r) == [
        (("(none)", f"{SHOP}/cart"), 1),
        ((f"{SHOP}/", "shoes", f"{SHOP}/cart"), 1),
        (("product", "landing", f"{SHOP}/cart"), 1),
    ]


def test_exclude_drops_nodes_after_cleaning(touches: ir.Table) -> None:
    # rules: products and landing pages; excluded: the home page, landing*, (none)
    # c.1: product product cart -> product cart; c.2: product cart; c.3: cart
    q = PathsQuery(level="url", collapse_repeats=True,
                   cleaning_rules=[CleaningRule(pattern="*/p/*", name="product"),
                                   CleaningRule(pattern="/lp/", name="landing", regex=True)],
                   exclude=[f"{SHOP}/", "land*", "(none)"])
    r = paths(case(touches, "c"), q)
    assert top(r) == [(("product", f"{SHOP}/cart"), 2), ((f"{SHOP}/cart",), 1)]


def test_touchpoint_and_stage_levels(touches: ir.Table) -> None:
    t = case(touches, "h")
    # touchpoints: website, online_shop x3, (none), online_shop
    r = paths(t, PathsQuery(level="touchpoint", collapse_repeats=True))
    assert top(r) == [(("website", "online_shop", "(none)", "online_shop"), 1)]
    # stages: awareness, consideration, decision x2, no stage, retention (repeat purchase)
    r = paths(t, PathsQuery(level="stage", depth=10))
    assert top(r) == [(("awareness", "consideration", "decision", "decision", "(none)", "retention"), 1)]


# ------------------------------------------------------------------------- units and restriction
def test_stitched_persons_and_accounts(touches: ir.Table) -> None:
    t = case(touches, "e")
    # e.u1's anonymous visit belongs to him after the identify: e.u1 V PV; e.u2 V PUR
    r = paths(t, PathsQuery())
    assert top(r) == [((V, PV), 1), ((V, PUR), 1)]
    # the account interleaves its people's touches: V(u1@0) V(u2@1.5) PV(u1@2) PUR(u2@3)
    r = paths(t, PathsQuery(unit="account"))
    assert top(r) == [((V, V, PV, PUR), 1)]


def test_restrict_to_persons_list_or_table(touches: ir.Table) -> None:
    t = case(touches, "a")
    # a list: a.2 V PV ATC, a.5 V (unknown ids are ignored)
    r = paths(t, PathsQuery(), persons=["a.2", "a.5", "nobody"])
    assert top(r) == [((V,), 1), ((V, PV, ATC), 1)]
    # an Ibis table: the buyers a.1 and a.4, both V PV PV ATC PUR
    buyers = t.filter(t.event == PUR).select("person_id")
    r = paths(t, PathsQuery(), persons=buyers)
    assert top(r) == [((V, PV, PV, ATC, PUR), 2)]
    assert paths(t, PathsQuery(), persons=[]).persons == 0


def test_paths_around_funnel_steps(touches: ir.Table) -> None:
    if touches.get_backend().name == "pyspark":
        # funnel_paths is paths() with anchors and a units table, both covered on Spark above;
        # on Spark the funnel's own queries take most of a minute, and funnels are tested there
        pytest.skip("funnel on Spark is covered by the funnel tests")
    t = case(touches, "a")
    # funnel V PV ATC PUR: levels a.1 4, a.2 3, a.3 2, a.4 4, a.5 1
    fr = funnel(t, FunnelQuery(steps=[V, PV, ATC, PUR], window="1h"))
    # dropped off at step 3 (ATC): a.3, from its first PV: PV
    r = funnel_paths(t, fr, 3, "dropped")
    assert top(r) == [((PV,), 1)]
    # between steps 2 and 3, of a.1, a.2, a.4: the counted attempt's step-2 touch is the latest
    # product_view before the add_to_cart (a.1 PV@3, a.4 PV@4), so all three go PV ATC
    r = funnel_paths(t, fr, ATC, "between", PathsQuery(start_end_nodes=True))
    assert top(r) == [((PS, PV, ATC, PE), 3)]


# ------------------------------------------------------------------------- transitions
def matrix_of(m: TransitionMatrix, group: str = "all") -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(t.source, t.target): (t.transitions, t.persons, t.probability_out, t.probability_in,
                                   t.median_seconds, t.p95_seconds) for t in m.group(group)}


def test_transition_counts_probabilities_and_times(touches: ir.Table) -> None:
    m = transitions(case(touches, "d"), TransitionsQuery())
    # d.1: V-PV 2m, PV-PV 1m, PV-ATC 4m, ATC-PUR 1m; d.2: V-PV 5m, PV-V 1m, V-PV 4m; d.3: V-ATC 1m
    # out of V: 3 x PV + 1 x ATC = 4; out of PV: PV, ATC, V = 3; into PV: 3 from V + 1 from PV = 4;
    # into ATC: from PV and from V = 2. V-PV times 120, 300, 240 s: median 240, p95 240 + 0.9 * 60
    expected = {
        (V, PV): (3, 2, 0.75, 0.75, 240.0, pytest.approx(294.0)),
        (ATC, PUR): (1, 1, 1.0, 1.0, 60.0, 60.0),
        (PV, ATC): (1, 1, pytest.approx(1 / 3), 0.5, 240.0, 240.0),
        (PV, PV): (1, 1, pytest.approx(1 / 3), 0.25, 60.0, 60.0),
        (PV, V): (1, 1, pytest.approx(1 / 3), 1.0, 60.0, 60.0),
        (V, ATC): (1, 1, 0.25, 0.5, 60.0, 60.0),
    }
    assert matrix_of(m) == expected
    # most frequent first, then by source and target
    assert [(t.source, t.target) for t in m.transitions] == list(expected)
    assert m.persons == 3
    assert m.matrix().loc[V].sum() == pytest.approx(1.0) and m.matrix("transitions").loc[V, PV] == 3


def test_collapsed_transitions_with_start_and_end_nodes(touches: ir.Table) -> None:
    m = transitions(case(touches, "d"), TransitionsQuery(collapse_repeats=True, start_end_nodes=True))
    # d.1: PS V PV(2-3m) ATC PUR PE; d.2: PS V PV V PV PE; d.3: PS V ATC PE
    # PV-ATC is timed from the last PV of the run (3m) to ATC (7m): 240 s; markers have no time
    got = {k: (v[0], v[2]) for k, v in matrix_of(m).items()}
    assert got == {
        (PS, V): (3, 1.0), (V, PV): (3, 0.75), (V, ATC): (1, 0.25),
        (PV, ATC): (1, pytest.approx(1 / 3)), (PV, V): (1, pytest.approx(1 / 3)), (PV, PE): (1, pytest.approx(1 / 3)),
        (ATC, PUR): (1, 0.5), (ATC, PE): (1, 0.5), (PUR, PE): (1, 1.0),
    }
    times = {k: v[4] for k, v in matrix_of(m).items()}
    assert times[(PV, ATC)] == 240.0 and times[(V, PV)] == 240.0 and times[(PS, V)] is None
    assert times[(PUR, PE)] is None
    assert m.nodes()[0] == PS and m.nodes()[-1] == PE


def test_converters_vs_non_converters(touches: ir.Table) -> None:
    m = transitions(case(touches, "d"), TransitionsQuery(converted=PUR))
    # converters: d.1 (V-PV, PV-PV, PV-ATC, ATC-PUR); non-converters: d.2 (V-PV twice, PV-V), d.3 (V-ATC)
    assert (m.converter_persons, m.non_converter_persons, m.persons) == (1, 2, 3)
    assert {k: v[:3] for k, v in matrix_of(m, "converters").items()} == {
        (V, PV): (1, 1, 1.0), (PV, PV): (1, 1, 0.5), (PV, ATC): (1, 1, 0.5), (ATC, PUR): (1, 1, 1.0)}
    non = matrix_of(m, "non_converters")
    assert {k: v[:3] for k, v in non.items()} == {
        (V, PV): (2, 1, pytest.approx(2 / 3)), (PV, V): (1, 1, 1.0), (V, ATC): (1, 1, pytest.approx(1 / 3))}
    assert non[(V, PV)][4:] == (270.0, pytest.approx(297.0))  # 300 and 240 s
    # difference of probability_out; ATC has no way out among non-converters: no difference
    diffs = [(d.source, d.target, d.difference) for d in m.differences]
    assert diffs == [
        (PV, V, -1.0), (PV, ATC, 0.5), (PV, PV, 0.5),
        (V, ATC, pytest.approx(-1 / 3)), (V, PV, pytest.approx(1 / 3)), (ATC, PUR, None),
    ]
    # a stage as conversion: d.1 and d.3 have decision touches (add_to_cart, purchase)
    m = transitions(case(touches, "d"), TransitionsQuery(converted="stage=decision"))
    assert (m.converter_persons, m.non_converter_persons) == (2, 1)


def test_transitions_with_anchor_depth_restriction_and_accounts(touches: ir.Table) -> None:
    # from the first product view, two nodes: d.1 PV PV (60 s), d.2 PV V (60 s); d.3 has none
    m = transitions(case(touches, "d"), TransitionsQuery(**{"from": PV}, depth=2))
    assert {k: v[:2] for k, v in matrix_of(m).items()} == {(PV, PV): (1, 1), (PV, V): (1, 1)}
    assert m.persons == 2
    m = transitions(case(touches, "d"), TransitionsQuery(), persons=["d.3"])
    assert [(t.source, t.target) for t in m.transitions] == [(V, ATC)] and m.persons == 1
    # the account e.acme: V(0) V(1.5m) PV(2m) PUR(3m)
    m = transitions(case(touches, "e"), TransitionsQuery(unit="account"))
    assert {k: (v[0], v[4]) for k, v in matrix_of(m).items()} == {
        (V, V): (1, 90.0), (V, PV): (1, 30.0), (PV, PUR): (1, 60.0)}


# ------------------------------------------------------------------------- query validation
def test_query_validation_errors() -> None:
    with pytest.raises(UnknownNameError) as e:
        PathsQuery(level="evnt")
    assert "did you mean 'event'" in str(e.value)
    with pytest.raises(UnknownNameError):
        PathsQuery(unit="company")
    for bad in ({"depth": 0}, {"depth": 101}, {"top": 0}, {"max_links": 0}, {"exclude": [""]},
                {"cleaning_rules": ["no-equals-sign"]}, {"cleaning_rules": ["re:([a=x"]},
                {"cleaning_rules": ["*=  "]}, {"from": ""}, {"colour": "red"}, {"depth": "deep"}):
        with pytest.raises(InvalidParameterError):
            PathsQuery(**bad)
    q = PathsQuery(from_=V, to="event=purchase&channel=email", cleaning_rules="re:/p/.*=product")
    assert q.to_dict()["from"] == V and q.to_dict()["cleaning_rules"] == ["re:/p/.*=product"]
    assert q.cleaning_rules[0].regex and PathsQuery(**{"from": V}).from_ == q.from_
    assert PathsQuery(**q.to_dict()) == q  # the JSON form round-trips (REST API)


def test_unknown_columns_and_bad_persons_tables(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.duckdb")
    store.append("events", events_table(A))
    t = Workspace(store).touches()
    with pytest.raises(UnknownNameError) as e:
        paths(t, PathsQuery(to="chanel=email"))
    assert "did you mean 'channel'" in str(e.value)
    with pytest.raises(UnknownNameError):
        paths(t.drop("url"), PathsQuery(level="url"))
    with pytest.raises(InvalidParameterError):
        paths(t, PathsQuery(), persons=t.select("event", "channel"))
    with pytest.raises(InvalidParameterError):
        paths(t, PathsQuery(), persons="a.1")
    with pytest.raises(InvalidParameterError):
        paths(t, "visit")  # type: ignore[arg-type]


def test_result_renderings(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.duckdb")
    store.append("events", events_table(A))
    t = Workspace(store).touches()
    r = paths(t, PathsQuery(start_end_nodes=True))
    d = r.to_dict()
    # a.1 and a.4 have 5 nodes: depth 5 does not cut them, so they end with path_end
    assert d["paths"][0] == {"path": " → ".join([PS, V, PV, PV, ATC, PUR, PE]),
                             "nodes": [PS, V, PV, PV, ATC, PUR, PE], "persons": 2, "share": 0.4,
                             "median_seconds": 510.0}
    assert d["query"]["start_end_nodes"] is True and d["sankey"]["aligned"] == "start"
    df = r.to_pandas()
    assert list(df.columns) == ["rank", "path", "steps", "persons", "share", "median_seconds"]
    assert df.persons.sum() == 5
    # who followed a path (a.1 and a.4 followed the top one)
    assert r.people(r.paths[0].nodes) == ["a.1", "a.4"] == r.people(r.paths[0].path)
    assert r.people([PS, V, PE]) == ["a.5"] and r.people([V]) == []
    fig = r.figure()
    assert fig.data[0].type == "sankey" and sum(fig.data[0].link.value) == sum(lk.persons for lk in r.sankey.links)
    assert sankey(t, PathsQuery(start_end_nodes=True)) == r.sankey
    # the node table is public for other analyses: one row per node, markers included
    n = path_nodes(t, PathsQuery(start_end_nodes=True, depth=None)).to_pyarrow()
    assert n.num_rows == 16 + 2 * 5


def test_transition_renderings_and_errors(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.duckdb")
    store.append("events", events_table(D))
    t = Workspace(store).touches()
    m = transitions(t, TransitionsQuery(converted=PUR, start_end_nodes=True))
    d = m.to_dict()
    assert set(d) == {"query", "unit", "persons", "transitions", "converters", "non_converters", "differences"}
    assert d["query"]["converted"] == PUR and d["converters"]["persons"] == 1
    df = m.to_pandas()
    assert list(df.columns[:3]) == ["group", "source", "target"] and set(df.group) == {"all", "converters",
                                                                                     "non_converters"}
    assert len(m.differences_pandas()) == len(m.differences)
    # with path_end, non-converter d.2 leaves PV for V once and ends once: 0 - 0.5
    assert m.matrix("difference").loc[PV, V] == -0.5
    fig = m.figure()
    assert fig.data[0].type == "heatmap"
    plain = transitions(t, TransitionsQuery())
    assert "group" not in plain.to_pandas().columns and "differences" not in plain.to_dict()
    assert plain.figure().data[0].type == "heatmap"
    with pytest.raises(InvalidParameterError):
        plain.group("converters")
    with pytest.raises(InvalidParameterError):
        plain.matrix("difference")
    with pytest.raises(UnknownNameError):
        plain.matrix("speed")
    with pytest.raises(UnknownNameError):
        plain.group("buyers")
    with pytest.raises(InvalidParameterError):
        TransitionsQuery(converted="")
    with pytest.raises(UnknownNameError):
        transitions(t, TransitionsQuery(converted="colour=red"))
    with pytest.raises(InvalidParameterError):
        transitions(t, PathsQuery())  # type: ignore[arg-type]
