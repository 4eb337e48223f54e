"""Stitching through the store on every backend: events before and after a link resolve to one person."""

from __future__ import annotations

from collections.abc import Callable

from journeylens.identity import rebuild_identities, resolve_persons
from journeylens.store import Store
from tests.helpers import events_table

ROWS = [
    {"anonymous_id": "anon1", "event": "visit"},                                         # m00000 before the link
    {"type": "identify", "event": "identify", "anonymous_id": "anon1", "user_id": "u1"},  # anon1 -> u1
    {"user_id": "u1", "event": "purchase"},                                               # after the link
    {"anonymous_id": "anon2", "event": "visit"},                                          # 2nd device of u1
    {"type": "identify", "event": "identify", "anonymous_id": "anon2", "user_id": "u1"},
    {"type": "alias", "event": "alias", "previous_id": "u1", "user_id": "u1-new"},        # chain anon -> u1 -> u1-new
    {"anonymous_id": "loner", "event": "visit"},                                          # never identified
    {"type": "identify", "event": "identify", "anonymous_id": "anon1", "user_id": "u7"},  # conflict: ignored
    {"user_id": "u7", "anonymous_id": "anon1", "event": "visit"},                         # explicit user wins
    {"type": "group", "event": "group", "user_id": "u1", "account_id": "acme"},
]


def test_persons_and_accounts_resolve(make_store: Callable[[], Store]) -> None:
    s = make_store()
    s.append("events", events_table(ROWS))
    graph = rebuild_identities(s, "default")
    assert len(graph.conflicts) == 1 and graph.conflicts[0].link.parent == "u7"
    e = s.table("events")
    ids = s.table("identities")
    resolved = resolve_persons(e.filter(e.type == "track"), ids.filter(ids.workspace == "default"))
    got = {r["message_id"]: (r["person_id"], r["account_id"])
           for r in s.to_pyarrow(resolved.select("message_id", "person_id", "account_id")).to_pylist()}
    assert got == {
        "m00000": ("u1-new", "acme"),
        "m00002": ("u1-new", "acme"),
        "m00003": ("u1-new", "acme"),
        "m00006": ("loner", None),
        "m00008": ("u7", None),
    }


def test_rebuild_is_repeatable(make_store: Callable[[], Store]) -> None:
    s = make_store()
    s.append("events", events_table(ROWS))
    rebuild_identities(s, "default")
    first = sorted(s.to_pyarrow(s.table("identities")).to_pylist(), key=lambda r: r["id"])
    rebuild_identities(s, "default")
    assert sorted(s.to_pyarrow(s.table("identities")).to_pylist(), key=lambda r: r["id"]) == first
