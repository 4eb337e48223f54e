"""Identity: stitching anonymous ids, user ids and accounts into persons."""

from journeylens.identity.graph import Conflict, IdentityGraph, Link, build_graph
from journeylens.identity.stitch import rebuild_identities, resolve_ids, resolve_persons

__all__ = ["Conflict", "IdentityGraph", "Link", "build_graph", "rebuild_identities", "resolve_ids", "resolve_persons"]
