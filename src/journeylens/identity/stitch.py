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
import pyarrow.compute as pc

from journeylens import schema
from journeylens.identity.graph import Conflict, IdentityGraph, Link
from journeylens.store import Store


def _link_rows(store: Store, workspace: str) -> pa.Table:
    """The workspace's identify/alias links as columns, in application order ``(ts, message_id)``."""
    e = store.table("events")
    e = e.filter((e.workspace == workspace) & e.type.isin(["identify", "alias"]))
    child = ibis.cases((e.type == "alias", e.previous_id), else_=e.anonymous_id)
    q = e.select(kind=e.type, child=child, parent=e.user_id, ts=e.ts, message_id=e.message_id)
    q = q.filter(q.child.notnull() & q.parent.notnull() & (q.child != q.parent))
    return store.to_pyarrow(q.order_by(["ts", "message_id"]))


def _memberships(store: Store, workspace: str) -> list[tuple[str, str, datetime]]:
    e = store.table("events")
    g = e.filter((e.workspace == workspace) & (e.type == "group") & e.account_id.notnull())
    g = g.select(ident=ibis.coalesce(g.user_id, g.anonymous_id), account_id=g.account_id, ts=g.ts)
    p = store.table("people")
    p = p.filter((p.workspace == workspace) & p.account_id.notnull())
    p = p.select(ident=p.user_id, account_id=p.account_id, ts=p.ts)
    out: list[tuple[str, str, datetime]] = []
    for t in (store.to_pyarrow(g.filter(g.ident.notnull())), store.to_pyarrow(p)):
        cols = [t.column(c).to_pylist() for c in ("ident", "account_id", "ts")]
        out += list(zip(*cols, strict=True))
    return out


def _graph(store: Store, workspace: str) -> IdentityGraph:
    """The workspace's identity graph, as :func:`~journeylens.identity.graph.build_graph` builds it,
    with the links applied straight from columns (a Link object is made only for a conflict)."""
    links = _link_rows(store, workspace)
    child, parent = links.column("child").to_pylist(), links.column("parent").to_pylist()
    graph = IdentityGraph()
    add = graph.link
    for i, (c, p) in enumerate(zip(child, parent, strict=True)):
        reason = add(c, p)
        if reason is not None:
            row = links.slice(i, 1).to_pylist()[0]
            graph.conflicts.append(Conflict(Link(**row), reason))
    latest: dict[str, tuple[datetime, str]] = {}  # rule 4, on the final roots (as build_graph)
    for ident, account, ts in _memberships(store, workspace):
        person = graph.root(ident)
        if person not in latest or ts >= latest[person][0]:
            latest[person] = (ts, account)
    graph.accounts = {p: acc for p, (_, acc) in latest.items()}
    return graph


def identity_graph(store: Store, workspace: str) -> IdentityGraph:
    """The identity graph of ``workspace`` computed from its committed events and people, without
    writing anything (e.g. to find every id of a person before the ``identities`` table has been
    rebuilt for the newest links)."""
    return _graph(store, workspace)


def rebuild_identities(store: Store, workspace: str) -> IdentityGraph:
    """Recompute the identity graph of ``workspace`` from its events and people.

    Writes the ``identities`` table (every linked id -> person id, with the
    person's account), brings the ``touches`` cache up to date
    (:func:`refresh_touches`, incrementally where that is exact) and returns the
    graph, including conflicts.
    """
    graph = _graph(store, workspace)
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
    incremental = _supports_incremental(store)
    old_print = _identities_print(store, workspace) if incremental else None
    changed: pa.Array | None = None
    if incremental:
        old = store.to_pyarrow(_workspace_identities(store, workspace).select("id", "person_id", "account_id"))
        changed = changed_ids(old, table)
    if changed is None or len(changed):
        store.replace_workspace_rows("identities", workspace, table)
    if incremental and changed is not None and old_print == store.meta().get(TOUCHES_IDS_MARKER + workspace):
        refresh_touches(store, workspace, changed=changed)
    else:
        refresh_touches(store, workspace)
    return graph


def changed_ids(old: pa.Table, new: pa.Table) -> pa.Array:
    """Ids whose identities row (``id``, ``person_id``, ``account_id``) differs between ``old``
    and ``new``: added, removed, or mapped to another person or account (distinct, as text)."""
    cols = ["id", "person_id", "account_id"]
    o = old.select(cols).rename_columns(["id", "p_old", "a_old"])
    n = new.select(cols).rename_columns(["id", "p_new", "a_new"])
    j = o.join(n, keys="id", join_type="full outer")
    same_p = pc.fill_null(pc.equal(j["p_old"], j["p_new"]), False)
    same_a = pc.or_kleene(pc.fill_null(pc.equal(j["a_old"], j["a_new"]), False),
                          pc.and_(pc.is_null(j["a_old"]), pc.is_null(j["a_new"])))
    diff = pc.invert(pc.and_(same_p, same_a))
    return j.filter(diff).column("id").combine_chunks().cast(pa.string())


TOUCHES_MARKER = "touches_built_from_events:"
"""Meta key prefix (+ workspace): the workspace's event count when its touches cache was built."""
TOUCHES_IDS_MARKER = "touches_built_from_identities:"
"""Meta key prefix (+ workspace): fingerprint (:func:`_identities_print`) of the identities the
touches cache was resolved with; an incremental refresh requires it to match the table."""


def _event_count(store: Store, workspace: str) -> int:
    return store.workspace_rows("events", workspace)


def _workspace_identities(store: Store, workspace: str) -> ir.Table:
    ids = store.table("identities")
    return ids.filter(ids.workspace == ibis.literal(workspace))


def _identities_print(store: Store, workspace: str) -> str:
    """Row count and XOR of the row hashes of the workspace's identities (order-free)."""
    ids = _workspace_identities(store, workspace)
    row = ids.id.concat("\x1f", ids.person_id, "\x1f", ids.account_id.fill_null("\x1e"))
    got = store.to_pyarrow(ids.aggregate(n=ids.count(), h=row.hash().bit_xor())).to_pylist()[0]
    return f"{got['n']}:{got['h'] or 0}"


def _supports_incremental(store: Store) -> bool:
    return callable(getattr(store, "replace_workspace_rows_incremental", None))


def refresh_touches(store: Store, workspace: str, *, changed: pa.Array | None = None) -> int:
    """Bring the derived ``touches`` table of ``workspace`` up to date with its events and identities.

    The table holds :func:`resolve_persons` of the workspace's touch events (types
    track/page/screen), computed inside the backend. Every path that writes events or
    identities must end here (imports and the collector do, through
    :func:`rebuild_identities`); a write that does not only makes the cache stale, never
    wrong: :func:`cached_touches` then returns None. Returns the event count recorded.

    ``changed=None`` rebuilds the cache from scratch. ``changed`` = the ids whose identities
    row changed since the cache was resolved (:func:`changed_ids`; the caller guarantees the
    cache was resolved with the identities before that change) updates it in place on stores
    that support it (DuckDB): in one transaction, the cached touches whose ``user_id``,
    ``anonymous_id`` or ``person_id`` is a changed id are deleted and every touch event not in
    the cache (new, or just deleted) is resolved and inserted; the result is committed only when
    the cache then holds exactly as many rows as the workspace has touch events (else a deleted
    event left a row behind: full rebuild). Untouched rows resolve the same under old and new
    identities, because resolution reads only the identities rows of those three ids.
    """
    n = _event_count(store, workspace)  # counted first: rows added meanwhile make the cache stale
    e = store.table("events")
    e = e.filter((e.workspace == ibis.literal(workspace)) & e.type.isin(list(schema.TOUCH_TYPES)))
    ids = _workspace_identities(store, workspace)
    done = False
    if changed is not None and _supports_incremental(store) and store.meta().get(TOUCHES_MARKER + workspace):
        t = store.table("touches")
        cached = t.filter(t.workspace == ibis.literal(workspace))
        missing = e.anti_join(cached, e.message_id == cached.message_id)
        done = store.replace_workspace_rows_incremental(  # type: ignore[attr-defined]
            "touches", workspace, resolve_persons(missing, ids), expected=e.count(),
            stale_ids=changed, stale_columns=("user_id", "anonymous_id", "person_id"))
    if not done:
        resolved = resolve_persons(e, ids)
        write = getattr(store, "replace_workspace_rows_from", None)
        if write is not None:
            write("touches", workspace, resolved)
        else:
            store.replace_workspace_rows("touches", workspace, store.to_pyarrow(resolved))
    set_meta = getattr(store, "set_meta", None)
    if set_meta is not None:
        set_meta(TOUCHES_MARKER + workspace, str(n))
        if _supports_incremental(store):
            set_meta(TOUCHES_IDS_MARKER + workspace, _identities_print(store, workspace))
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
