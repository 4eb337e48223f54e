"""Rebuilding the ``identities`` table, resolving touches to persons, and the touches cache.

Query-time resolution (:func:`resolve_persons`) defines who a touch belongs to. The
derived ``touches`` table is a cache of exactly that result (ADR 0002): it is rebuilt
from ``events`` and ``identities`` by :func:`refresh_touches`, which
:func:`rebuild_identities` calls last, and it is read (:func:`cached_touches`) only while
the workspace's event count still equals the count recorded when it was built.
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from journeylens import schema
from journeylens.identity.graph import IdentityGraph, Link, build_graph
from journeylens.store import Store


def _links(store: Store, workspace: str) -> list[Link]:
    e = store.table("events")
    e = e.filter((e.workspace == workspace) & e.type.isin(["identify", "alias"]))
    child = ibis.cases((e.type == "alias", e.previous_id), else_=e.anonymous_id)
    q = e.select(kind=e.type, child=child, parent=e.user_id, ts=e.ts, message_id=e.message_id)
    q = q.filter(q.child.notnull() & q.parent.notnull() & (q.child != q.parent))
    rows = store.to_pyarrow(q).to_pylist()
    return [Link(**r) for r in rows]


def _memberships(store: Store, workspace: str) -> list[tuple[str, str, datetime]]:
    e = store.table("events")
    g = e.filter((e.workspace == workspace) & (e.type == "group") & e.account_id.notnull())
    g = g.select(ident=ibis.coalesce(g.user_id, g.anonymous_id), account_id=g.account_id, ts=g.ts)
    p = store.table("people")
    p = p.filter((p.workspace == workspace) & p.account_id.notnull())
    p = p.select(ident=p.user_id, account_id=p.account_id, ts=p.ts)
    rows = store.to_pyarrow(g.filter(g.ident.notnull())).to_pylist() + store.to_pyarrow(p).to_pylist()
    return [(r["ident"], r["account_id"], r["ts"]) for r in rows]


def rebuild_identities(store: Store, workspace: str) -> IdentityGraph:
    """Recompute the identity graph of ``workspace`` from its events and people.

    Writes the ``identities`` table (every linked id -> person id, with the
    person's account) and returns the graph, including conflicts.
    """
    graph = build_graph(_links(store, workspace), _memberships(store, workspace))
    mapping = graph.mapping()
    ids = list(mapping)
    table = pa.table(
        {
            "workspace": pa.array([workspace] * len(ids), pa.string()),
            "id": pa.array(ids, pa.string()),
            "person_id": pa.array([mapping[i] for i in ids], pa.string()),
            "account_id": pa.array([graph.accounts.get(mapping[i]) for i in ids], pa.string()),
        }
    )
    store.replace_workspace_rows("identities", workspace, table)
    refresh_touches(store, workspace)
    return graph


TOUCHES_MARKER = "touches_built_from_events:"
"""Meta key prefix (+ workspace): the workspace's event count when its touches cache was built."""


def _event_count(store: Store, workspace: str) -> int:
    e = store.table("events")
    return int(store.scalar(e.filter(e.workspace == ibis.literal(workspace)).count()))


def refresh_touches(store: Store, workspace: str) -> int:
    """Rebuild the derived ``touches`` table of ``workspace`` from its events and identities.

    The table holds :func:`resolve_persons` of the workspace's touch events (types
    track/page/screen), computed inside the backend. Every path that writes events or
    identities must end here (imports and the collector do, through
    :func:`rebuild_identities`); a write that does not only makes the cache stale, never
    wrong: :func:`cached_touches` then returns None. Returns the event count recorded.
    """
    n = _event_count(store, workspace)  # counted first: rows added meanwhile make the cache stale
    e = store.table("events")
    e = e.filter((e.workspace == ibis.literal(workspace)) & e.type.isin(list(schema.TOUCH_TYPES)))
    ids = store.table("identities")
    resolved = resolve_persons(e, ids.filter(ids.workspace == ibis.literal(workspace)))
    write = getattr(store, "replace_workspace_rows_from", None)
    if write is not None:
        write("touches", workspace, resolved)
    else:
        store.replace_workspace_rows("touches", workspace, store.to_pyarrow(resolved))
    set_meta = getattr(store, "set_meta", None)
    if set_meta is not None:
        set_meta(TOUCHES_MARKER + workspace, str(n))
    return n


def cached_touches(store: Store, workspace: str) -> ir.Table | None:
    """The workspace's rows of the ``touches`` cache when it is fresh, else None.

    Fresh means: it was built when the workspace had as many events as it has now
    (events are only appended, and every deletion rebuilds identities and with them
    the cache). One ``count`` of the workspace's events per call.
    """
    built = store.meta().get(TOUCHES_MARKER + workspace)
    if built is None:
        return None
    try:
        t = store.table("touches")
    except Exception:  # a store created before the cache existed, opened read-only
        return None
    if int(built) != _event_count(store, workspace):
        return None
    return t.filter(t.workspace == ibis.literal(workspace))


def resolve_persons(events: ir.Table, identities: ir.Table) -> ir.Table:
    """Add ``person_id`` and resolved ``account_id`` to ``events``.

    ``person_id`` = the person of the event's ``user_id`` if it has one, else
    the person of its ``anonymous_id``; an id without links is its own person.
    ``account_id`` = the event's own ``account_id``, else its person's account.
    ``identities`` must already be restricted to the events' workspace.
    """
    ids = identities.select("id", "person_id")
    by_user = ids.rename(_u_id="id", _u_person="person_id")
    by_anon = ids.rename(_a_id="id", _a_person="person_id")
    acct = identities.filter(identities.id == identities.person_id).select(
        _p_id=identities.id, _p_account=identities.account_id
    )
    t = events.left_join(by_user, events.user_id == by_user._u_id)
    t = t.left_join(by_anon, t.anonymous_id == by_anon._a_id)
    t = t.mutate(person_id=ibis.coalesce(t._u_person, t.user_id, t._a_person, t.anonymous_id))
    t = t.left_join(acct, t.person_id == acct._p_id)
    t = t.mutate(account_id=ibis.coalesce(t.account_id, t._p_account))
    return t.drop("_u_id", "_u_person", "_a_id", "_a_person", "_p_id", "_p_account")


def resolve_ids(table: ir.Table, column: str, identities: ir.Table) -> ir.Table:
    """Add ``person_id`` and ``account_id`` to a table that names people by one id column
    (a user id or an anonymous id, e.g. ``surveys.person`` or ``people.user_id``).

    ``person_id`` = the person the id belongs to, else the id itself; ``account_id`` = the
    table's own ``account_id`` column when it has one and it is set, else the person's account.
    ``identities`` must already be restricted to the table's workspace.
    """
    ids = identities.select(_r_id=identities.id, _r_person=identities.person_id)
    acct = identities.filter(identities.id == identities.person_id).select(
        _r_pid=identities.id, _r_account=identities.account_id
    )
    t = table.left_join(ids, table[column] == ids._r_id)
    t = t.mutate(person_id=ibis.coalesce(t._r_person, t[column]))
    t = t.left_join(acct, t.person_id == acct._r_pid)
    own = t.account_id if "account_id" in table.columns else ibis.null("string")
    t = t.mutate(account_id=ibis.coalesce(own, t._r_account))
    return t.drop("_r_id", "_r_person", "_r_pid", "_r_account")
