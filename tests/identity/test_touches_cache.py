"""The derived ``touches`` cache (ADR 0002): equal to query-time resolution, refreshed by every
identity rebuild, and never read while stale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ibis

from journeylens import schema
from journeylens.identity import rebuild_identities, resolve_persons
from journeylens.identity.stitch import cached_touches, refresh_touches
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import events_table
from tests.identity.test_stitch import ROWS


def _query_time(s: Store, workspace: str = "default") -> ibis.Table:
    e = s.table("events")
    e = e.filter((e.workspace == workspace) & e.type.isin(list(schema.TOUCH_TYPES)))
    ids = s.table("identities")
    return resolve_persons(e, ids.filter(ids.workspace == workspace))


def _rows(s: Store, t: ibis.Table) -> list[tuple[Any, ...]]:
    cols = ["message_id", "person_id", "account_id", "event", "ts"]
    return sorted(tuple(r[c] for c in cols) for r in s.to_pyarrow(t.select(*cols)).to_pylist())


def test_cache_equals_query_time_resolution_and_goes_stale(make_store: Callable[[], Store]) -> None:
    s = make_store()
    s.append("events", events_table(ROWS))
    rebuild_identities(s, "default")
    cached = cached_touches(s, "default")
    assert cached is not None
    assert _rows(s, cached) == _rows(s, _query_time(s))
    assert {r[0]: (r[1], r[2]) for r in _rows(s, cached)}["m00000"] == ("u1-new", "acme")

    # an append that bypasses the identity rebuild makes the cache stale: the workspace
    # falls back to query-time resolution and still sees the new touch
    more = events_table([{"anonymous_id": "anon1", "event": "late_visit", "message_id": "late1", "minute": 50}])
    s.append("events", more)
    assert cached_touches(s, "default") is None
    ws = Workspace(s)
    got = {r[0]: r[1] for r in _rows(s, ws.touches())}
    assert got["late1"] == "u1-new"
    assert ws.refresh_touches() == len(ROWS) + 1
    fresh = cached_touches(s, "default")
    assert fresh is not None and _rows(s, fresh) == _rows(s, _query_time(s))


def test_workspaces_are_kept_apart(make_store: Callable[[], Store]) -> None:
    s = make_store()
    s.append("events", events_table(ROWS))
    s.append("events", events_table([{"anonymous_id": "x", "event": "visit", "message_id": "other-1"}],
                                    workspace="other"))
    rebuild_identities(s, "default")
    rebuild_identities(s, "other")
    refresh_touches(s, "default")  # rebuilding one workspace keeps the other's rows
    other = cached_touches(s, "other")
    default = cached_touches(s, "default")
    assert other is not None and default is not None
    assert [r[0] for r in _rows(s, other)] == ["other-1"]
    assert len(_rows(s, default)) == 5


def test_demo_cache_matches_resolution(demo_shop: Any) -> None:
    with demo_shop.open() as ws:
        cached = cached_touches(ws.store, ws.name)
        assert cached is not None, "the import must leave a fresh cache"
        a = cached.group_by("person_id").aggregate(n=cached.count(), acc=cached.account_id.max())
        q = _query_time(ws.store, ws.name)
        b = q.group_by("person_id").aggregate(n=q.count(), acc=q.account_id.max())
        key = ["person_id", "n", "acc"]
        assert sorted(map(tuple, a.to_pandas()[key].fillna("").values.tolist())) == \
            sorted(map(tuple, b.to_pandas()[key].fillna("").values.tolist()))
