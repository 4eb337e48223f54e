"""docs/models.md agrees with the built-in models.

The placement tables in the docs are written by hand (they are the design);
this test fails when the rules and the tables disagree, and checks that the
tables of five_phase and b2b say what the brief's vocabulary tables say.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ibis
import pytest

from journeylens.journey import builtin_models
from tests.journey.journey_vocabulary import B2B, SHOP, VOCABULARIES, run_stages, vocabulary_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
COLUMNS = {"shop": 2, "b2b": 3}  # table column holding each scenario's events
_EVENT = re.compile(r"`(\w+)`(?: \((order 1|order ≥ 2)\))?")
_SECTION = re.compile(r"^### `(\w+)`", re.MULTILINE)

Placement = dict[str, dict[str, str | None]]  # scenario -> event label -> stage (None: unmatched)


def documented() -> dict[str, tuple[list[str], Placement]]:
    """Per model section: the stage keys in table order, and where each demo event lands."""
    text = DOC.read_text(encoding="utf-8")
    heads = list(_SECTION.finditer(text))
    out: dict[str, tuple[list[str], Placement]] = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        body = text[head.end() : nxt.start() if nxt else len(text)]
        stages: list[str] = []
        placement: Placement = {"shop": {}, "b2b": {}}
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 4 or cells[0] in ("#", "---"):
                continue
            stage = None if cells[1] == "unmatched" else cells[1].strip("`")
            if stage is not None:
                stages.append(stage)
            for scenario, col in COLUMNS.items():
                for name, order in _EVENT.findall(cells[col]):
                    label = f"{name} ({order})" if order else name
                    assert label not in placement[scenario], f"{head[1]}: {label} listed twice"
                    placement[scenario][label] = stage
        out[head[1]] = (stages, placement)
    return out


DOCUMENTED = documented()


def test_every_builtin_model_is_documented_with_its_stages() -> None:
    models = builtin_models()
    assert list(DOCUMENTED) == list(models)
    for key, model in models.items():
        assert DOCUMENTED[key][0] == list(model.stage_keys), key


@pytest.mark.parametrize("model_key", list(DOCUMENTED))
@pytest.mark.parametrize("scenario", list(VOCABULARIES))
def test_documented_placement_lists_every_demo_event(model_key: str, scenario: str) -> None:
    placement = DOCUMENTED[model_key][1][scenario]
    assert set(placement) == {t.label for t in VOCABULARIES[scenario]}


def test_documented_placement_of_the_reference_models_matches_the_brief() -> None:
    assert DOCUMENTED["five_phase"][1]["shop"] == {t.label: t.expected for t in SHOP}
    assert DOCUMENTED["b2b"][1]["b2b"] == {t.label: t.expected for t in B2B}
    # the reference models leave nothing unmatched in the other scenario either
    assert None not in DOCUMENTED["five_phase"][1]["b2b"].values()
    assert None not in DOCUMENTED["b2b"][1]["shop"].values()


@pytest.fixture(scope="module")
def duck() -> Any:
    from journeylens.store.functions import register_duckdb_functions

    con = ibis.duckdb.connect()
    register_duckdb_functions(con)
    return con


@pytest.mark.parametrize("model_key", list(DOCUMENTED))
@pytest.mark.parametrize("scenario", list(VOCABULARIES))
def test_rules_place_demo_events_as_documented(duck: Any, model_key: str, scenario: str) -> None:
    touches = VOCABULARIES[scenario]
    placement = DOCUMENTED[model_key][1][scenario]
    got = run_stages(duck, ibis.memtable(vocabulary_table(touches)), builtin_models()[model_key])
    wrong = [
        (t.label, t.touchpoint, placement[t.label], stage)
        for t, stage in zip(touches, got, strict=True)
        if stage != placement[t.label]
    ]
    assert wrong == []
