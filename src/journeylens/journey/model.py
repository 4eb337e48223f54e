"""Journey models: stages and the rules that place touches in them.

A model is a YAML file (the built-in ones live in ``journey/models/``)::

    key: five_phase
    name: Five-phase model
    description: ...
    stages:
      - {key: awareness, label: Awareness, description: ...}
      - ...
    rules:                       # ordered; the first matching rule wins
      - stage: retention
        when: {event: purchase, properties: {order_number: {gte: 2}}}
      - stage: awareness
        any:                     # OR of when-blocks
          - {event: "visit*"}
          - {channel: [display, paid_social]}

Inside one ``when`` block all conditions must hold. A condition is an events
column (``event``, ``type``, ``touchpoint``, ``channel``, ``utm_*``, ``url``,
``referrer``, ``revenue`` ...) or ``properties`` (keys of the JSON properties,
dotted keys reach nested objects) with

* a value: equal to it (text containing ``*`` or ``?`` is a glob pattern);
* a list: any of its values (globs allowed);
* operators: ``{eq|ne|gt|gte|lt|lte|in|glob|exists: ...}``, several ANDed.

Touches no rule matches keep no stage; they are reported, never dropped.
See ``docs/models.md`` for the full rule language.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from journeylens import schema
from journeylens.errors import ModelError, UnknownNameError, suggest
from journeylens.journey._yaml import KEY_PATTERN, YNode, describe, read_yaml

DEFAULT_MODEL = "five_phase"
MODELS_DIR = Path(__file__).parent / "models"
BUILTIN_ORDER = (
    "five_phase",
    "five_a",
    "aida",
    "momentum",
    "cx",
    "three_phase",
    "customer_value_journey",
    "lifecycle",
    "b2b",
)
"""Built-in model keys: the default first, then as listed in DOMAIN.md."""

Scalar = str | int | float | bool
ConditionValue = Scalar | tuple[Scalar, ...]

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "glob", "exists")
COMPARISONS = ("gt", "gte", "lt", "lte")
GLOB_CHARS = ("*", "?")
PROPERTIES = "properties"

CONDITION_COLUMNS: dict[str, str] = {
    c.name: c.dtype
    for c in schema.EVENTS.columns
    if c.dtype in ("string", "float64") and c.name not in (PROPERTIES, "traits")
}
"""Events columns a rule may test, with their types (text or number)."""


def is_glob(value: str) -> bool:
    return any(ch in value for ch in GLOB_CHARS)


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    description: str = ""


@dataclass(frozen=True)
class Condition:
    """One test on a touch: ``field`` is an events column, or a property key if ``on_property``."""

    field: str
    op: str
    value: ConditionValue
    on_property: bool = False

    @property
    def column(self) -> str:
        """The events column the condition reads."""
        return PROPERTIES if self.on_property else self.field


@dataclass(frozen=True)
class Rule:
    """Touches matching any of ``blocks`` (each a tuple of ANDed conditions) land in ``stage``."""

    stage: str
    blocks: tuple[tuple[Condition, ...], ...]
    line: int | None = None
    description: str = ""


@dataclass(frozen=True)
class JourneyModel:
    key: str
    name: str
    description: str
    stages: tuple[Stage, ...]
    rules: tuple[Rule, ...]
    path: Path | None = None
    default: bool = False

    @property
    def stage_keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.stages)

    def index(self, stage: str) -> int:
        """0-based position of ``stage`` in the model's stage order."""
        try:
            return self.stage_keys.index(stage)
        except ValueError:
            raise UnknownNameError("stage", stage, self.stage_keys) from None

    def stage(self, key: str) -> Stage:
        return self.stages[self.index(key)]

    @property
    def columns(self) -> tuple[str, ...]:
        """Events columns the rules read (``type`` included: it tells touches apart)."""
        cols = {"type"} | {c.column for r in self.rules for b in r.blocks for c in b}
        return tuple(sorted(cols))


# -- loading -----------------------------------------------------------------------------------


def load_model(name_or_path: str | Path) -> JourneyModel:
    """A built-in model by key (``"aida"``) or a user model from a YAML file path."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_ORDER:
        return _builtin_tuple()[BUILTIN_ORDER.index(name_or_path)]
    text = str(name_or_path)
    if (
        isinstance(name_or_path, Path)
        or text.endswith((".yaml", ".yml"))
        or "/" in text
        or "\\" in text
        or Path(text).is_file()
    ):
        return _load_file(Path(name_or_path))
    raise UnknownNameError("model", text, BUILTIN_ORDER)


def builtin_models() -> dict[str, JourneyModel]:
    """All built-in models by key, the default (five_phase) first."""
    return {m.key: m for m in _builtin_tuple()}


@cache
def _builtin_tuple() -> tuple[JourneyModel, ...]:
    models = []
    for key in BUILTIN_ORDER:
        path = MODELS_DIR / f"{key}.yaml"
        model = _load_file(path)
        if model.key != key:
            raise ModelError(
                f"built-in model file declares key '{model.key}'", path=str(path), line=1
            )
        models.append(model)
    return tuple(models)


def _load_file(path: Path) -> JourneyModel:
    root = read_yaml(path)
    top = root.fields(
        required=("key", "stages", "rules"), optional=("name", "description", "default")
    )
    key = top["key"].text(pattern=KEY_PATTERN)
    stages = _parse_stages(top["stages"])
    keys = tuple(s.key for s in stages)
    rules = tuple(_parse_rule(node, keys) for node in top["rules"].sequence(non_empty=True))
    return JourneyModel(
        key=key,
        name=top["name"].text() if "name" in top else key,
        description=_optional_text(top.get("description")),
        stages=stages,
        rules=rules,
        path=path,
        default=top["default"].boolean() if "default" in top else False,
    )


def _optional_text(node: YNode | None) -> str:
    if node is None or node.value() is None:
        return ""
    return node.text().strip()


def _parse_stages(node: YNode) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    seen: set[str] = set()
    for item in node.sequence(non_empty=True):
        f = item.fields(required=("key",), optional=("label", "description"))
        key = f["key"].text(pattern=KEY_PATTERN)
        if key in seen:
            raise f["key"].error(f"duplicate stage key '{key}'")
        seen.add(key)
        label = f["label"].text() if "label" in f else key.replace("_", " ").capitalize()
        stages.append(Stage(key, label, _optional_text(f.get("description"))))
    return tuple(stages)


def _parse_rule(node: YNode, stages: tuple[str, ...]) -> Rule:
    f = node.fields(required=("stage",), optional=("when", "any", "description"))
    stage = f["stage"].text()
    if stage not in stages:
        close = suggest(stage, stages)
        raise f["stage"].error(
            f"unknown stage '{stage}'; the model's stages are: {', '.join(stages)}",
            hint=f"did you mean '{close}'?" if close else None,
        )
    if ("when" in f) == ("any" in f):
        raise node.error(
            "a rule needs exactly one of 'when' (all conditions) or 'any' (list of when-blocks)"
        )
    blocks: tuple[tuple[Condition, ...], ...]
    if "when" in f:
        blocks = (_parse_when(f["when"]),)
    else:
        blocks = tuple(_parse_when(b) for b in f["any"].sequence(non_empty=True))
    return Rule(stage, blocks, node.line, _optional_text(f.get("description")))


def _parse_when(node: YNode) -> tuple[Condition, ...]:
    items = node.items()
    if not items:
        raise node.error(
            'a when-block needs at least one condition (match everything with event: "*")'
        )
    conditions: list[Condition] = []
    allowed = (*CONDITION_COLUMNS, PROPERTIES)
    for key, value in items:
        if key == PROPERTIES:
            props = value.items()
            if not props:
                raise value.error("'properties' needs at least one property condition")
            for prop, prop_value in props:
                conditions += _parse_condition(prop, prop_value, "any", on_property=True)
        elif key in CONDITION_COLUMNS:
            kind = "text" if CONDITION_COLUMNS[key] == "string" else "number"
            conditions += _parse_condition(key, value, kind, on_property=False)
        else:
            close = suggest(key, allowed)
            raise value.error(
                f"unknown condition '{key}'; use an events column or properties ({', '.join(allowed)})",
                hint=f"did you mean '{close}'?" if close else None,
            )
    return tuple(conditions)


def _parse_condition(field: str, node: YNode, kind: str, *, on_property: bool) -> list[Condition]:
    """Conditions on one column or property: a value, a list, or a mapping of operators.

    ``kind`` is what the column holds: "text", "number", or "any" (JSON properties).
    """
    if node.is_mapping:
        ops = node.items()
        if not ops:
            raise node.error("empty operator mapping; use e.g. {eq: value}")
        return [_operator(field, op, value, kind, on_property) for op, value in ops]
    if node.is_sequence:
        values = _scalar_list(node, kind)
        globbed = any(isinstance(v, str) and is_glob(v) for v in values)
        return [Condition(field, "glob" if globbed else "in", values, on_property)]
    value = _scalar(node, kind)
    op = "glob" if isinstance(value, str) and is_glob(value) else "eq"
    return [Condition(field, op, value, on_property)]


def _operator(field: str, op: str, node: YNode, kind: str, on_property: bool) -> Condition:
    value: ConditionValue
    if op not in OPERATORS:
        close = suggest(op, OPERATORS)
        raise node.error(
            f"unknown operator '{op}'; use one of {', '.join(OPERATORS)}",
            hint=f"did you mean '{close}'?" if close else None,
        )
    if op == "exists":
        value = node.boolean()
    elif op in COMPARISONS:
        value = _scalar(node, "number")
    elif op == "in":
        value = _scalar_list(node, kind)
    elif op == "glob":
        if kind == "number":
            raise node.error(f"'{field}' holds numbers; glob patterns need text")
        value = _scalar_list(node, "text") if node.is_sequence else _scalar(node, "text")
    else:
        value = _scalar(node, kind)
    return Condition(field, op, value, on_property)


def _scalar(node: YNode, kind: str) -> Scalar:
    """One value of the given kind ("text", "number" or "any" scalar)."""
    if node.is_mapping or node.is_sequence:
        raise node.error(f"expected a single value, got {describe(node.node)}")
    value = node.value()
    if value is None:
        raise node.error(
            "expected a value, got nothing (null)", hint="to test absence use {exists: false}"
        )
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise node.error(f"expected a number, got {describe(node.node)}")
    if kind == "text" and not isinstance(value, str):
        raise node.error(
            f"expected text, got {describe(node.node)}", hint="put the value in quotes"
        )
    if not isinstance(value, str | int | float | bool):
        raise node.error(f"expected text, a number or true/false, got {describe(node.node)}")
    return value


def _scalar_list(node: YNode, kind: str) -> tuple[Scalar, ...]:
    values = tuple(_scalar(item, kind) for item in node.sequence(non_empty=True))
    if len({_family(v) for v in values}) > 1:
        raise node.error(
            "a list must hold values of one kind (all text, all numbers or all true/false)"
        )
    return values


def _family(value: Scalar) -> str:
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"
