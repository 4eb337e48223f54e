"""The incremental touches refresh (docs/import-speed.md): after every identity rebuild the cache
equals a full rebuild — row for row, every column — whether the refresh updated it in place or
fell back to rebuilding it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from journeylens import schema
from journeylens.identity import IdentityGraph, Link, build_graph, rebuild_identities
from journeylens.identity.stitch import cached_touches, changed_ids, refresh_touches
from journeylens.store import Store, open_store
from journeylens.store.duckdb import DuckDBStore
from tests.helpers import events_table


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = open_store(str(tmp_path / "inc.duckdb"))
    assert isinstance(s, DuckDBStore)
    yield s
    s.close()


class Spy:
    """Records what the real incremental update returned (True = updated in place)."""

    def __init__(self, store: DuckDBStore) -> None:
        self.calls: list[bool] = []
        real = store.replace_workspace_rows_incremental

        def wrapped(*args: Any, **kwargs: Any) -> bool:
            done = real(*args, **kwargs)
            self.calls.append(done)
            return done

        store.replace_workspace_rows_incremental = wrapped  # type: ignore[method-assign]


def cache_rows(s: Store, workspace: str = "default") -> list[tuple[Any, ...]]:
    t = cached_touches(s, workspace)
    assert t is not None, "the cache must be fresh after a rebuild"
    rows = s.to_pyarrow(t.select(*schema.TOUCHES.names)).to_pylist()
    return sorted(tuple(r.values()) for r in rows)


def full_rows(s: Store, workspace: str = "default") -> list[tuple[Any, ...]]:
    """The cache as a from-scratch rebuild makes it (the reference)."""
    refresh_touches(s, workspace)
    return cache_rows(s, workspace)


def python_graph(s: Store) -> IdentityGraph:
    """build_graph over Link objects made in Python from the raw events (the original path)."""
    rows = s.to_pyarrow(s.table("events")).to_pylist()
    links = [Link(r["type"], r["previous_id"] if r["type"] == "alias" else r["anonymous_id"], r["user_id"],
                  r["ts"], r["message_id"]) for r in rows if r["type"] in ("identify", "alias")]
    links = [lk for lk in links if lk.child is not None and lk.parent is not None and lk.child != lk.parent]
    groups = [(r["user_id"] or r["anonymous_id"], r["account_id"], r["ts"]) for r in rows
              if r["type"] == "group" and r["account_id"] is not None and (r["user_id"] or r["anonymous_id"])]
    return build_graph(links, groups)


def random_batch(rng: random.Random, start: int, n: int) -> list[dict[str, Any]]:
    anons = [f"a{i}" for i in range(12)]
    users = [f"u{i}" for i in range(6)]
    rows: list[dict[str, Any]] = []
    for i in range(start, start + n):
        kind = rng.random()
        base: dict[str, Any] = {"message_id": f"m{i:05d}", "minute": rng.randrange(0, 500)}
        if kind < 0.55:
            who = rng.choice([{"anonymous_id": rng.choice(anons)}, {"user_id": rng.choice(users)},
                              {"anonymous_id": rng.choice(anons), "user_id": rng.choice(users)}])
            acct = {"account_id": "own-acct"} if rng.random() < 0.1 else {}
            rows.append({**base, **who, **acct, "event": rng.choice(["visit", "view", "purchase"])})
        elif kind < 0.8:
            rows.append({**base, "type": "identify", "event": "identify", "anonymous_id": rng.choice(anons),
                         "user_id": rng.choice(users)})
        elif kind < 0.9:
            rows.append({**base, "type": "alias", "event": "alias", "previous_id": rng.choice(users + anons),
                         "user_id": rng.choice(users)})
        else:
            rows.append({**base, "type": "group", "event": "group", "user_id": rng.choice(users),
                         "account_id": rng.choice(["acme", "globex", "initech"])})
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_incremental_refresh_equals_full_rebuild(duck: DuckDBStore, seed: int) -> None:
    rng = random.Random(seed)
    spy = Spy(duck)
    done = 0
    for step in range(8):
        n = rng.randrange(1, 15)
        duck.append("events", events_table(random_batch(rng, done, n)))
        done += n
        if step == 5:  # a deletion (as GDPR forget does) leaves stale cache rows: must fall back
            duck.delete_where([("events", "workspace = ? AND message_id = ?", ["default", "m00000"])])
        graph = rebuild_identities(duck, "default")
        reference = python_graph(duck)
        assert graph.mapping() == reference.mapping() and graph.accounts == reference.accounts
        assert graph.conflicts == reference.conflicts
        got = cache_rows(duck)
        assert got == full_rows(duck), f"seed {seed} step {step}"
    assert True in spy.calls, "the incremental path was never taken"


def test_unchanged_identities_append_only_new_touches(duck: DuckDBStore) -> None:
    duck.append("events", events_table([
        {"anonymous_id": "a1", "message_id": "v1"},
        {"type": "identify", "event": "identify", "anonymous_id": "a1", "user_id": "u1", "message_id": "i1"},
    ]))
    rebuild_identities(duck, "default")
    spy = Spy(duck)
    duck.append("events", events_table([{"anonymous_id": "a1", "message_id": "v2", "minute": 9},
                                        {"anonymous_id": "a9", "message_id": "v3", "minute": 9}]))
    rebuild_identities(duck, "default")
    assert spy.calls == [True]
    assert {r[0]: r[-1] for r in cache_rows(duck)} == {"v1": "u1", "v2": "u1", "v3": "a9"}
    assert cache_rows(duck) == full_rows(duck)


def test_new_link_of_an_old_anonymous_id_moves_its_old_touches(duck: DuckDBStore) -> None:
    duck.append("events", events_table([{"anonymous_id": "a1", "message_id": "v1"},
                                        {"user_id": "u1", "message_id": "v2"}]))
    rebuild_identities(duck, "default")
    spy = Spy(duck)
    duck.append("events", events_table([
        {"type": "identify", "event": "identify", "anonymous_id": "a1", "user_id": "u1", "message_id": "i1"},
        {"type": "group", "event": "group", "user_id": "u1", "account_id": "acme", "message_id": "g1"},
    ]))
    rebuild_identities(duck, "default")
    assert spy.calls == [True]
    rows = {r[0]: (r[-1], r[schema.TOUCHES.names.index("account_id")]) for r in cache_rows(duck)}
    assert rows == {"v1": ("u1", "acme"), "v2": ("u1", "acme")}
    assert cache_rows(duck) == full_rows(duck)


def test_identities_written_behind_the_cache_force_a_full_rebuild(duck: DuckDBStore) -> None:
    duck.append("events", events_table([{"anonymous_id": "a1", "message_id": "v1"}]))
    rebuild_identities(duck, "default")
    # some other path rewrote identities without refreshing the cache: the fingerprint differs
    duck.replace_workspace_rows("identities", "default", pa.Table.from_pylist(
        [{"workspace": "default", "id": "a1", "person_id": "zz", "account_id": None}],
        schema=schema.IDENTITIES.arrow_schema()))
    spy = Spy(duck)
    rebuild_identities(duck, "default")
    assert spy.calls == []
    assert cache_rows(duck) == full_rows(duck)


def test_changed_ids() -> None:
    def t(rows: list[tuple[str, str, str | None]]) -> pa.Table:
        return pa.table({"id": [r[0] for r in rows], "person_id": [r[1] for r in rows],
                         "account_id": pa.array([r[2] for r in rows], pa.string())})
    old = t([("a", "u", None), ("b", "u", "x"), ("c", "c", None), ("d", "u", None)])
    new = t([("a", "u", None), ("b", "u", "y"), ("c", "v", None), ("e", "e", None)])
    assert sorted(changed_ids(old, new).to_pylist()) == ["b", "c", "d", "e"]
    assert changed_ids(old, old).to_pylist() == []


def test_second_import_of_the_demo_updates_the_cache_in_place(demo_shop: Any, tmp_path: Path) -> None:
    """The demo's events imported in two halves (split by time, so the second half holds new
    identify calls for anonymous ids seen in the first): the cache equals a full rebuild."""
    import journeylens

    events = pq.read_table(demo_shop.files["events"]).sort_by("ts")
    half = events.num_rows // 2
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    pq.write_table(events.slice(0, half), first)
    pq.write_table(events.slice(half), second)
    ws = journeylens.open(tmp_path / "halves.duckdb")
    try:
        assert isinstance(ws.store, DuckDBStore)
        ws.import_events(first)
        spy = Spy(ws.store)
        report = ws.import_events(second)
        assert report.accepted == events.num_rows - half
        assert spy.calls == [True]
        got = cache_rows(ws.store, ws.name)
        assert len(got) == int(ws.store.scalar(ws.events().filter(
            ws.events().type.isin(list(schema.TOUCH_TYPES))).count()))
        assert got == full_rows(ws.store, ws.name)
    finally:
        ws.close()
