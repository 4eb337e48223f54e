"""Loading and validating journey models: the built-ins, user files and every error case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from journeylens.errors import ModelError, UnknownNameError
from journeylens.journey import DEFAULT_MODEL, Condition, JourneyModel, builtin_models, load_model
from journeylens.journey.model import MODELS_DIR

WriteModel = Callable[[str], JourneyModel]

# Stages of each built-in model, copied from DOMAIN.md.
DOMAIN_STAGES = {
    "five_a": ("awareness", "acquisition", "adoption", "assimilation", "advocacy"),
    "aida": ("awareness", "interest", "desire", "action"),
    "momentum": ("exposure", "engagement", "conversion", "retention"),
    "cx": ("awareness", "consideration", "purchase", "use", "advocacy"),
    "three_phase": ("pre_purchase", "purchase", "post_purchase"),
    "five_phase": ("awareness", "consideration", "decision", "retention", "advocacy"),
    "customer_value_journey": (
        "awareness", "engagement", "subscription", "conversion",
        "excitement", "ascension", "advocate", "promoter",
    ),
    "lifecycle": (
        "awareness", "consideration", "purchase", "adoption", "retention", "expansion", "advocacy",
    ),
    "b2b": ("awareness", "consideration", "decision", "onboarding", "advocacy"),
}  # fmt: skip


def test_every_builtin_model_loads_with_the_domain_stages() -> None:
    models = builtin_models()
    assert set(models) == set(DOMAIN_STAGES)
    assert next(iter(models)) == DEFAULT_MODEL == "five_phase"
    for key, model in models.items():
        assert model.key == key
        assert model.stage_keys == DOMAIN_STAGES[key]
        assert model.name and model.description
        assert all(s.label and s.description for s in model.stages)
        assert model.rules
        assert model.path == MODELS_DIR / f"{key}.yaml"
    assert [k for k, m in models.items() if m.default] == ["five_phase"]


def test_model_files_are_exactly_the_builtins() -> None:
    assert {p.stem for p in MODELS_DIR.glob("*.yaml")} == set(DOMAIN_STAGES)


def test_load_model_by_key_and_by_path() -> None:
    aida = load_model("aida")
    assert aida is builtin_models()["aida"]
    assert load_model(MODELS_DIR / "aida.yaml") == aida
    assert load_model(str(MODELS_DIR / "aida.yaml")) == aida


def test_unknown_builtin_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_model("five_phases")
    assert info.value.hint == "did you mean 'five_phase'?"
    assert "b2b" in info.value.message


def test_index_and_stage_lookup() -> None:
    model = load_model("five_phase")
    assert model.index("awareness") == 0
    assert model.index("advocacy") == 4
    assert model.stage("decision").label == "Decision"
    with pytest.raises(UnknownNameError, match="retension"):
        model.index("retension")


def test_a_user_model_and_its_parsed_conditions(write_model: WriteModel) -> None:
    model = write_model(
        """
key: my_model
name: My model
description: Two stages.
stages:
  - {key: browse, label: Browsing}
  - key: buy
rules:
  - stage: buy
    description: big baskets
    when: {event: purchase, properties: {cart.total: {gte: 100, lt: 1000}, coupon: {exists: false}}}
  - stage: browse
    any:
      - {event: "visit*"}
      - {channel: [display, paid_social], revenue: 0}
"""
    )
    assert model.key == "my_model" and model.name == "My model" and not model.default
    assert model.stages[1].label == "Buy"  # derived from the key
    buy, browse = model.rules
    assert buy.stage == "buy" and buy.description == "big baskets" and buy.line == 9
    assert buy.blocks == (
        (
            Condition("event", "eq", "purchase"),
            Condition("cart.total", "gte", 100, on_property=True),
            Condition("cart.total", "lt", 1000, on_property=True),
            Condition("coupon", "exists", False, on_property=True),
        ),
    )
    assert browse.blocks == (
        (Condition("event", "glob", "visit*"),),
        (Condition("channel", "in", ("display", "paid_social")), Condition("revenue", "eq", 0)),
    )
    assert model.columns == ("channel", "event", "properties", "revenue", "type")


def test_name_defaults_to_key(write_model: WriteModel) -> None:
    model = write_model("key: tiny\nstages: [{key: s}]\nrules: [{stage: s, when: {event: x}}]\n")
    assert model.name == "tiny" and model.description == ""


# -- validation errors: file, 1-based line and key are named ------------------------------------

BASE = [
    "key: mine",  # 1
    "name: Mine",  # 2
    "stages:",  # 3
    "  - {key: awareness}",  # 4
    "  - {key: decision}",  # 5
    "rules:",  # 6
    "  - stage: awareness",  # 7
    "    when: {event: visit}",  # 8
    "  - stage: decision",  # 9
    "    when: {event: purchase, properties: {order_number: {gte: 1}}}",  # 10
]


def variant(**lines: str | None) -> str:
    """BASE with line ``l<n>`` replaced (None deletes it)."""
    out = []
    for n, text in enumerate(BASE, start=1):
        new = lines.get(f"l{n}", text)
        if new is not None:
            out.append(new)
    return "\n".join(out) + "\n"


ERRORS: list[tuple[str, str, int, str | None, str]] = [
    # (id, file text, line, key named, message fragment)
    ("yaml syntax", variant(l8="    when: event: visit"), 8, None, "invalid YAML"),
    ("missing stages", variant(l3=None, l4=None, l5=None), 1, "stages", "missing required key 'stages'"),
    ("missing key", variant(l1=None), 1, "key", "missing required key 'key'"),
    ("unknown top-level key", variant(l2="nmae: Mine"), 2, "nmae", "did you mean 'name'"),
    ("stages not a list", variant(l3="stages: awareness", l4=None, l5=None), 3, "stages", "expected a list"),
    ("duplicate stage key", variant(l5="  - {key: awareness}"), 5, "stages[1].key", "duplicate stage key 'awareness'"),
    ("bad stage key", variant(l5="  - {key: Big Decision}"), 5, "stages[1].key", "not a valid key"),
    ("stage label not text", variant(l4="  - {key: awareness, label: 5}"), 4, "stages[0].label", "expected text"),
    ("unknown stage", variant(l9="  - stage: decison"), 9, "rules[1].stage", "did you mean 'decision'"),
    ("unknown condition key", variant(l8="    when: {evnt: visit}"), 8, "rules[0].when.evnt", "did you mean 'event'"),
    ("unknown operator", variant(l10="    when: {properties: {order_number: {gtee: 1}}}"), 10,
     "rules[1].when.properties.order_number.gtee", "did you mean 'gte'"),
    ("comparison needs a number", variant(l10="    when: {properties: {order_number: {gte: two}}}"), 10,
     "rules[1].when.properties.order_number.gte", "expected a number"),
    ("text column given a number", variant(l8="    when: {event: 42}"), 8, "rules[0].when.event", "put the value in quotes"),
    ("numeric column given text", variant(l8="    when: {revenue: lots}"), 8, "rules[0].when.revenue", "expected a number"),
    ("glob on a numeric column", variant(l8="    when: {revenue: {glob: '1*'}}"), 8, "rules[0].when.revenue.glob", "glob"),
    ("exists needs true/false", variant(l8="    when: {url: {exists: maybe}}"), 8, "rules[0].when.url.exists", "expected true or false"),
    ("null value", variant(l8="    when: {event: null}"), 8, "rules[0].when.event", "exists: false"),
    ("mixed list", variant(l8="    when: {properties: {n: {in: [1, a]}}}"), 8, "rules[0].when.properties.n.in", "one kind"),
    ("empty when", variant(l8="    when: {}"), 8, "rules[0].when", "at least one condition"),
    ("when and any", variant(l8="    when: {event: visit}\n    any: [{event: page}]"), 7, "rules[0]", "exactly one of"),
    ("neither when nor any", variant(l8=None), 7, "rules[0]", "exactly one of"),
    ("duplicate condition key", variant(l8="    when: {event: visit, event: page}"), 8, "rules[0].when.event", "duplicate key"),
    ("rules not a list", variant(l6="rules: {stage: awareness}", l7=None, l8=None, l9=None, l10=None), 6, "rules", "expected a list"),
    ("empty rules", variant(l6="rules: []", l7=None, l8=None, l9=None, l10=None), 6, "rules", "empty"),
    ("default not a bool", variant(l2="default: sometimes"), 2, "default", "expected true or false"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_invalid_model_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str | None, fragment: str
) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert info.value.line == line and info.value.path == str(path)
    if key is not None:
        assert f"field '{key}'" in message and info.value.field == key
    assert fragment in message


def test_the_valid_base_loads(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(variant(), encoding="utf-8")
    assert load_model(path).stage_keys == ("awareness", "decision")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="file not found"):
        load_model(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"{empty}:1: the file is empty"):
        load_model(empty)


def test_a_model_file_must_hold_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"{path}:1: expected a mapping"):
        load_model(path)
