"""Privacy (GDPR): IP anonymising, consent, suppression, forget, export and retention.

* IP addresses in ``context.ip``, ``properties.ip`` and ``traits.ip`` are
  replaced by their network address before anything is written: IPv4 keeps
  the first ``v4_prefix`` bits (default 24: ``203.0.113.77`` →
  ``203.0.113.0``), IPv6 the first ``v6_prefix`` bits (default 48). A value
  that is not an IP address is removed. Raw bodies kept in quarantine have
  every IPv4-looking text masked the same way.
* A message carries no consent when ``context.consent`` is ``false``, or
  ``context.consent.analytics`` / ``context.consent.categoryPreferences.analytics``
  is ``false``, or ``context.optOut`` is ``true``. Such messages are not
  stored, only counted.
* :func:`forget` removes a person everywhere (all ids of the person: the id
  given, its person id and every id the identity graph links to it) and adds
  a suppression (SHA-256 of workspace and id) for each id, so the collector
  drops their later events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from journeylens import schema
from journeylens.ingest.live import (  # noqa: F401 - re-exported
    IpMask,
    anonymize_ip,
    anonymize_message,
    mask_ips_in_text,
    no_consent,
    suppression_hash,
)
from journeylens.store.duckdb import DuckDBStore


def load_suppressions(store: DuckDBStore) -> set[str]:
    return {r[0] for r in store.query("SELECT id_hash FROM suppressions")}


# ---------------------------------------------------------------------------- forget / export
def person_ids(store: DuckDBStore, workspace: str, who: str) -> list[str]:
    """Every id of the person ``who`` belongs to: ``who``, its person id and all linked ids —
    from the identity graph of the committed events (the ``identities`` table may lag behind the
    newest identify/alias messages of the collector) and from the ``identities`` table."""
    from journeylens.identity.stitch import identity_graph

    mapping = identity_graph(store, workspace).mapping()
    root = mapping.get(who, who)
    linked = {root} | {i for i, person in mapping.items() if person == root}
    rows = store.query(
        "SELECT id, person_id FROM identities WHERE workspace = ? AND person_id IN "
        "(SELECT person_id FROM identities WHERE workspace = ? AND (id = ? OR person_id = ?))",
        [workspace, workspace, who, who])
    ids = {who} | linked
    for ident, person in rows:
        ids.add(ident)
        ids.add(person)
    return sorted(ids)


def _in(column: str, n: int) -> str:
    return f"{column} IN ({', '.join('?' * n)})"


def _person_filters(workspace: str, ids: Sequence[str]) -> list[tuple[str, str, list[Any]]]:
    n = len(ids)
    ws = "workspace = ? AND "
    raw_match = " OR ".join("contains(raw, ?)" for _ in ids)
    return [
        ("events", ws + f"({_in('user_id', n)} OR {_in('anonymous_id', n)} OR {_in('previous_id', n)})",
         [workspace, *ids, *ids, *ids]),
        ("people", ws + _in("user_id", n), [workspace, *ids]),
        ("surveys", ws + _in("person", n), [workspace, *ids]),
        ("identities", ws + f"({_in('id', n)} OR {_in('person_id', n)})", [workspace, *ids, *ids]),
        ("cohorts", ws + _in("person_id", n), [workspace, *ids]),
        ("quarantine", ws + f"raw IS NOT NULL AND ({raw_match})", [workspace, *ids]),
    ]


@dataclass(frozen=True)
class ForgetReport:
    """What :func:`forget` removed."""

    workspace: str
    ids: tuple[str, ...]
    deleted: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "ids": list(self.ids), "deleted": dict(self.deleted)}


def forget(store: DuckDBStore, workspace: str, who: str) -> ForgetReport:
    """Delete everything held about the person of ``who`` and suppress their ids.

    In one transaction: rows of events (user_id, anonymous_id or previous_id
    among the ids), people, surveys, identities, cohorts, and quarantine rows
    whose raw text contains one of the ids are deleted; one suppression per
    id is added. Then the workspace's identities are rebuilt.
    """
    from journeylens.identity import rebuild_identities

    ids = person_ids(store, workspace, who)
    now = datetime.now(UTC)
    sup = pa.table({
        "workspace": pa.array([workspace] * len(ids), pa.string()),
        "id_hash": pa.array([suppression_hash(workspace, i) for i in ids], pa.string()),
        "created_at": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
    })
    _, deleted = store.write_atomic([("suppressions", sup, ("workspace", "id_hash"))],
                                    _person_filters(workspace, ids))
    rebuild_identities(store, workspace)
    return ForgetReport(workspace, tuple(ids), deleted)


def export_person(store: DuckDBStore, workspace: str, who: str) -> dict[str, Any]:
    """Everything held about the person of ``who``: their ids and their rows of every table."""
    ids = person_ids(store, workspace, who)
    out: dict[str, Any] = {"workspace": workspace, "ids": ids, "tables": {}}
    for name, condition, params in _person_filters(workspace, ids):
        cols = ", ".join(f'"{c}"' for c in schema.TABLES[name].names)
        rows = store.query(f'SELECT {cols} FROM "{name}" WHERE {condition}', params)
        out["tables"][name] = [dict(zip(schema.TABLES[name].names, r, strict=True)) for r in rows]
    return out


def apply_retention(store: DuckDBStore, workspace: str, days: int,
                    now: datetime | None = None) -> dict[str, int]:
    """Delete events and surveys with ``ts`` and quarantine rows with ``received_at`` older
    than ``days`` days before ``now``; rebuild identities. Returns rows deleted per table."""
    from journeylens.identity import rebuild_identities

    if days < 1:
        raise ValueError("retention needs at least 1 day")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    deleted = store.delete_where([
        ("events", "workspace = ? AND ts < ?", [workspace, cutoff]),
        ("surveys", "workspace = ? AND ts < ?", [workspace, cutoff]),
        ("quarantine", "workspace = ? AND received_at < ?", [workspace, cutoff]),
    ])
    rebuild_identities(store, workspace)
    return deleted


def suppressed(ids: Iterable[str], workspace: str, hashes: set[str]) -> bool:
    """True when one of ``ids`` was forgotten in ``workspace``."""
    return bool(hashes) and any(suppression_hash(workspace, i) in hashes for i in ids)
