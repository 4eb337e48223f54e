"""Reading journey YAML files (models, touchpoint catalogs) with line numbers.

Files are parsed with :func:`yaml.compose`, so every value keeps the position
it came from. :class:`YNode` walks that node tree and turns every problem
into an :class:`~journeylens.errors.ModelError` naming the file, the 1-based
line and the dotted key path (``rules[2].when.event``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from journeylens.errors import ModelError, suggest

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (about ten times faster); marks are the same."""

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
"""Keys of models and stages: lower-case snake_case (they end up in data and URLs)."""


def read_yaml(path: Path) -> YNode:
    """Parse ``path`` into the root node; any read or syntax problem is a ModelError."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError("file not found", path=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the file: {exc}", path=where) from None
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "syntax error"
        raise ModelError(f"invalid YAML: {problem}", path=where, line=line) from None
    except yaml.YAMLError as exc:
        raise ModelError(f"invalid YAML: {exc}", path=where) from None
    if node is None:
        raise ModelError("the file is empty", path=where, line=1)
    return YNode(node, "", where)


def describe(node: yaml.Node) -> str:
    """What a node holds, for messages: "a mapping", "a list", "text", "a number" ..."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = _construct(node)
    if value is None:
        return "nothing (null)"
    return {bool: "true/false", int: "a number", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )


def _construct(node: yaml.Node) -> object:
    return yaml.SafeLoader("").construct_object(node, deep=True)


@dataclass(frozen=True)
class YNode:
    """One node of a parsed file, with the dotted path that leads to it."""

    node: yaml.Node
    field: str
    path: str

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def error(self, message: str, *, hint: str | None = None) -> ModelError:
        return ModelError(
            message, path=self.path, line=self.line, field=self.field or None, hint=hint
        )

    def child(self, node: yaml.Node, name: str) -> YNode:
        return YNode(node, f"{self.field}.{name}" if self.field else name, self.path)

    # -- structure --------------------------------------------------------------------------

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    def items(self) -> list[tuple[str, YNode]]:
        """The (key, value) pairs of a mapping; keys must be text and unique."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {describe(self.node)}")
        seen: set[str] = set()
        pairs: list[tuple[str, YNode]] = []
        for key_node, value_node in self.node.value:
            key = _construct(key_node)
            if not isinstance(key, str):
                raise YNode(key_node, self.field, self.path).error(
                    f"keys must be text, got {describe(key_node)}"
                )
            if key in seen:
                raise self.child(key_node, key).error(f"duplicate key '{key}'")
            seen.add(key)
            pairs.append((key, self.child(value_node, key)))
        return pairs

    def fields(self, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, YNode]:
        """A mapping with a fixed set of keys: unknown keys and missing required keys are errors."""
        required = tuple(required)
        allowed = (*required, *optional)
        found = dict(self.items())
        for key, value in found.items():
            if key not in allowed:
                close = suggest(key, allowed)
                raise YNode(self._key_node(key), value.field, self.path).error(
                    f"unknown key '{key}'; allowed: {', '.join(allowed)}",
                    hint=f"did you mean '{close}'?" if close else None,
                )
        for key in required:
            if key not in found:
                raise YNode(
                    self.node, f"{self.field}.{key}" if self.field else key, self.path
                ).error(f"missing required key '{key}'")
        return found

    def _key_node(self, key: str) -> yaml.Node:
        for key_node, _ in self.node.value:
            if _construct(key_node) == key:
                return key_node
        return self.node

    def sequence(self, *, non_empty: bool = False) -> list[YNode]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {describe(self.node)}")
        if non_empty and not self.node.value:
            raise self.error("the list is empty")
        return [YNode(n, f"{self.field}[{i}]", self.path) for i, n in enumerate(self.node.value)]

    # -- scalars ----------------------------------------------------------------------------

    def value(self) -> object:
        """The plain Python value (scalars, lists of scalars)."""
        return _construct(self.node)

    def text(self, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        if isinstance(value, str) and not value.strip():
            raise self.error("expected text, got an empty value")
        if not isinstance(value, str):
            raise self.error(
                f"expected text, got {describe(self.node)}",
                hint="put the value in quotes" if isinstance(value, bool | int | float) else None,
            )
        if pattern is not None and not pattern.match(value):
            raise self.error(
                f"'{value}' is not a valid key",
                hint="use lower-case letters, digits and underscores, starting with a letter",
            )
        return value

    def boolean(self) -> bool:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {describe(self.node)}")
        return value
