"""Identity stitching: which ids belong to one person.

Links come from Segment messages:

* ``identify(anonymous_id=a, user_id=u)`` links ``a -> u``;
* ``alias(previous_id=p, user_id=u)`` links ``p -> u`` (``p`` may itself be a
  user id, so chains ``a -> b -> c`` arise);
* ``group(user_id=u, account_id=g)`` makes ``g`` the account of ``u``'s person.

Rules (applied in time order, ties broken by message id):

1. Every id has at most one parent. The earliest link of an id wins; a later
   link of the same id to a different parent is a *conflict*: it is recorded
   in :attr:`IdentityGraph.conflicts` and not applied (e.g. a shared computer
   identified as two different users keeps its anonymous touches with the
   first user; touches that carry the second user's ``user_id`` go to him).
2. A link that would close a cycle is a conflict and is not applied.
3. A person's id is the root of its chain: ``person_id(a) = c`` for ``a -> b -> c``.
   All touches of all ids of the chain, before and after the link, belong to it.
4. A person's account is the account of its latest group call (or of the
   newest people row naming an account).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Link:
    kind: str  # identify | alias
    child: str
    parent: str
    ts: datetime
    message_id: str


@dataclass(frozen=True)
class Conflict:
    link: Link
    reason: str
    """'already linked to X' or 'would form a cycle'."""


@dataclass
class IdentityGraph:
    parent: dict[str, str] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)
    """person_id -> account_id."""

    def root(self, node: str) -> str:
        """The person id of ``node`` (follows parents, compressing the path)."""
        path = []
        while node in self.parent:
            path.append(node)
            node = self.parent[node]
        for p in path[:-1]:
            self.parent[p] = node
        return node

    def add(self, link: Link) -> None:
        reason = self.link(link.child, link.parent)
        if reason is not None:
            self.conflicts.append(Conflict(link, reason))

    def link(self, child: str, parent: str) -> str | None:
        """Apply the link ``child -> parent`` (rules 1-2); the conflict reason when it is refused
        (not recorded: :meth:`add` records it), else None."""
        if child == parent:
            return None
        current = self.parent.get(child)
        if current is not None:
            if self.root(current) != self.root(parent):
                return f"already linked to {self.root(current)}"
            return None
        if self.root(parent) == child:  # child is a root here, so this closes a cycle
            return "would form a cycle"
        self.parent[child] = parent
        return None

    def mapping(self) -> dict[str, str]:
        """Every id that is part of a link (children and roots) -> its person id."""
        out: dict[str, str] = {}
        for child in list(self.parent):
            root = self.root(child)
            out[child] = root
            out[root] = root
        for person in self.accounts:
            out.setdefault(person, person)
        return out


def build_graph(
    links: Iterable[Link],
    memberships: Iterable[tuple[str, str, datetime]] = (),
) -> IdentityGraph:
    """Build the graph from links and ``(id, account_id, ts)`` memberships.

    ``links`` and ``memberships`` may come in any order; they are applied by
    ``(ts, message_id)`` and ``ts`` respectively.
    """
    graph = IdentityGraph()
    for link in sorted(links, key=lambda lk: (lk.ts, lk.message_id)):
        graph.add(link)
    latest: dict[str, tuple[datetime, str]] = {}
    for ident, account, ts in memberships:
        person = graph.root(ident)
        if person not in latest or ts >= latest[person][0]:
            latest[person] = (ts, account)
    graph.accounts = {p: acc for p, (_, acc) in latest.items()}
    return graph
