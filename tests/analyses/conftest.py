"""Fixtures for the analysis tests: touch tables built through the real store on each backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ibis.expr.types as ir
import pytest

from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import events_table

Rows = list[dict[str, Any]]


@pytest.fixture
def touches_of(make_store: Callable[[], Store], backend: str) -> Callable[[Rows], ir.Table]:
    """Append ``rows`` (see :func:`tests.helpers.events_table`) to a fresh store of the
    parametrised backend and return the workspace's touches (persons resolved, stages of
    the default model assigned). On Spark the touches are a cached view, so that the
    queries of one test do not each redo the identity joins and stage rules."""

    def build(rows: Rows) -> ir.Table:
        store = make_store()
        store.append("events", events_table(rows))
        touches = Workspace(store).touches()
        return touches.cache() if backend == "spark" else touches

    return build
