"""API keys: creation, hashing, lookup, revocation.

A key is ``jl<kind letter>_`` + 32 random URL-safe characters (192 bits). Only
its SHA-256 is stored (``keys`` table); a random key of that entropy needs no
salt or slow hash. Lookup hashes the presented key, finds the record by hash
and compares the hashes with :func:`hmac.compare_digest` (constant time).
The collector keeps a :class:`KeyRing` in memory; revoking through the
running server updates it at once.

Write keys arrive as HTTP Basic user (empty password, with or without the
colon) or as ``writeKey`` in the body; both present and different is 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from journeylens import schema
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store.duckdb import DuckDBStore

KINDS = ("write", "read", "admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A stored key (never the key itself)."""

    key_id: str
    workspace: str
    kind: str
    key_hash: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "workspace": self.workspace, "kind": self.kind, "label": self.label,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


class KeyRing:
    """Active keys by hash (in memory)."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self._by_hash = {r.key_hash: r for r in records if r.revoked_at is None}

    def lookup(self, key: str | None) -> KeyRecord | None:
        """The active record of ``key``; None when unknown or revoked."""
        if not key:
            return None
        h = hash_key(key)
        rec = self._by_hash.get(h)
        if rec is None or not hmac.compare_digest(h, rec.key_hash):
            return None
        return rec

    def add(self, rec: KeyRecord) -> None:
        if rec.revoked_at is None:
            self._by_hash[rec.key_hash] = rec

    def revoke(self, key_id: str) -> None:
        for h, rec in list(self._by_hash.items()):
            if rec.key_id == key_id:
                del self._by_hash[h]


def basic_user(header: str | None) -> str | None:
    """The user part of an HTTP Basic ``Authorization`` header (password ignored), or a
    ``Bearer`` token; None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user = decoded.split(":", 1)[0]
    return user or None


# ---------------------------------------------------------------------------- store access
def _rows(store: DuckDBStore) -> list[KeyRecord]:
    cols = schema.KEYS.names
    rows = store.query(f"SELECT {', '.join(cols)} FROM keys ORDER BY created_at")
    return [KeyRecord(**dict(zip(cols, r, strict=True))) for r in rows]


def load_keys(store: DuckDBStore) -> KeyRing:
    return KeyRing(_rows(store))


def list_keys(store: DuckDBStore, workspace: str | None = None) -> list[KeyRecord]:
    return [r for r in _rows(store) if workspace is None or r.workspace == workspace]


def create_key(store: DuckDBStore, workspace: str, kind: str, label: str | None = None) -> tuple[KeyRecord, str]:
    """Create a key; returns the record and the key (shown once, never stored)."""
    if kind not in KINDS:
        raise UnknownNameError("key kind", kind, KINDS)
    if not workspace.strip():
        raise InvalidParameterError("a key needs a workspace")
    key = f"jl{kind[0]}_{secrets.token_urlsafe(24)}"
    rec = KeyRecord(key_id=secrets.token_hex(6), workspace=workspace, kind=kind, key_hash=hash_key(key),
                    label=label, created_at=datetime.now(UTC))
    store.append_parts([("keys", _table([rec]), ("key_id",))])
    return rec, key


def revoke_key(store: DuckDBStore, key_id: str) -> KeyRecord:
    """Mark key ``key_id`` revoked (atomically); raises UnknownNameError."""
    found = [r for r in _rows(store) if r.key_id == key_id]
    if not found:
        raise UnknownNameError("key", key_id, [r.key_id for r in _rows(store)])
    old = found[0]
    new = KeyRecord(**{**old.__dict__, "revoked_at": old.revoked_at or datetime.now(UTC)})
    store.write_atomic([("keys", _table([new]), ())], [("keys", "key_id = ?", [key_id])])
    return new


def _table(recs: list[KeyRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.__dict__ for r in recs], schema=schema.KEYS.arrow_schema())
