"""Named cohorts: save the people who dropped off at a funnel step, read them back, replace them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from journeylens.errors import UnknownNameError
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import events_table

ROWS = [
    {"user_id": "a", "event": "visit", "minute": 0}, {"user_id": "a", "event": "purchase", "minute": 5},
    {"user_id": "b", "event": "visit", "minute": 1},
    {"user_id": "c", "event": "visit", "minute": 2},
]


def test_save_funnel_dropoffs_as_cohort(make_store: Callable[[], Store]) -> None:
    ws = Workspace(make_store())
    ws.store.append("events", events_table(ROWS))
    ws.rebuild_identities()
    dropped = ws.funnel(["visit", "purchase"], window="1d").people("purchase", status="dropped")
    assert sorted(dropped) == ["b", "c"]  # visited, never purchased
    assert ws.save_cohort("no-purchase", dropped, definition={"funnel": ["visit", "purchase"]}) == 2
    ws.save_cohort("buyers", ["a"])
    assert ws.cohort("no-purchase") == ["b", "c"]
    ws.save_cohort("no-purchase", ["c"])  # saving again replaces the members
    assert ws.cohort("no-purchase") == ["c"] and ws.cohort("buyers") == ["a"]
    with pytest.raises(UnknownNameError, match="did you mean 'buyers'"):
        ws.cohort("buyer")
