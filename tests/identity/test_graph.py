"""Identity graph rules, on hand-made links (expected values worked out by hand)."""

from __future__ import annotations

from datetime import datetime, timedelta

from journeylens.identity import Link, build_graph

T0 = datetime(2026, 1, 1)


def link(child: str, parent: str, minute: int, kind: str = "identify") -> Link:
    return Link(kind, child, parent, T0 + timedelta(minutes=minute), f"m{minute:03d}")


def test_identify_links_anonymous_id_to_user() -> None:
    g = build_graph([link("anon1", "u1", 1)])
    assert g.mapping() == {"anon1": "u1", "u1": "u1"}


def test_chain_resolves_to_last_id_in_any_order() -> None:
    links = [link("b", "c", 5, "alias"), link("a", "b", 1), link("x", "a", 9)]
    g = build_graph(links)
    assert {i: g.root(i) for i in "abcx"} == {"a": "c", "b": "c", "c": "c", "x": "c"}
    assert g.conflicts == []


def test_conflicting_identify_keeps_first_user() -> None:
    g = build_graph([link("shared-pc", "u2", 7), link("shared-pc", "u1", 3)])
    assert g.root("shared-pc") == "u1"
    assert g.root("u2") == "u2"  # u1 and u2 are never merged through the shared device
    assert len(g.conflicts) == 1
    assert g.conflicts[0].link.parent == "u2"
    assert "already linked to u1" in g.conflicts[0].reason


def test_repeated_identical_link_is_not_a_conflict() -> None:
    g = build_graph([link("a", "u", 1), link("a", "u", 2)])
    assert g.conflicts == [] and g.root("a") == "u"


def test_relink_to_same_person_through_chain_is_not_a_conflict() -> None:
    # a -> u1, u1 -> u2 (alias), then a identified as u2: same person, fine.
    g = build_graph([link("a", "u1", 1), link("u1", "u2", 2, "alias"), link("a", "u2", 3)])
    assert g.conflicts == [] and g.root("a") == "u2"


def test_cycle_is_refused() -> None:
    g = build_graph([link("a", "b", 1, "alias"), link("b", "c", 2, "alias"), link("c", "a", 3, "alias")])
    assert {g.root(i) for i in "abc"} == {"c"}
    assert [c.reason for c in g.conflicts] == ["would form a cycle"]


def test_self_link_is_ignored() -> None:
    g = build_graph([link("u", "u", 1)])
    assert g.mapping() == {} and g.conflicts == []


def test_account_is_latest_group_of_the_person() -> None:
    g = build_graph(
        [link("anon", "u1", 1)],
        [("anon", "acc-old", T0), ("u1", "acc-new", T0 + timedelta(days=1)), ("u9", "acc-9", T0)],
    )
    assert g.accounts == {"u1": "acc-new", "u9": "acc-9"}
    assert g.mapping()["u9"] == "u9"
