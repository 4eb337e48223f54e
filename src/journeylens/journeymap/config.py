"""The journey map's configuration file: what data cannot know.

Customer goals, known hurdles, solution ideas and extra owners per stage are
written by people, not computed. A map configuration is a YAML file::

    title: Journey of our shop customers        # optional
    stages:
      awareness:
        goals: [Find inspiration, Trust the brand]
        pain_points: [Ads feel repetitive]       # known hurdles, shown beside detected ones
        solutions: [Refresh creatives every month]
        owners: [brand team]                     # added to the catalog's touchpoint owners

Every key is optional; stage keys must belong to the map's journey model
(checked when the map is built). Errors name the file, line and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from journeylens.journey._yaml import YNode, read_yaml

CONFIG_ROWS = ("goals", "pain_points", "solutions", "owners")
"""The map rows a configuration file may fill, per stage."""

EXAMPLES = Path(__file__).parent / "examples"


@dataclass(frozen=True)
class StageNotes:
    """Configured content of one stage (lists of short texts)."""

    goals: tuple[str, ...] = ()
    pain_points: tuple[str, ...] = ()
    solutions: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class MapConfig:
    """A parsed map configuration; ``stages`` maps stage keys to their notes."""

    title: str | None = None
    stages: Mapping[str, StageNotes] = field(default_factory=dict)
    path: Path | None = None
    lines: Mapping[str, int] = field(default_factory=dict)
    """Line of each stage key in the file, for errors raised later (unknown stage)."""

    def notes(self, stage: str) -> StageNotes:
        return self.stages.get(stage, StageNotes())


def load_map_config(path: str | Path) -> MapConfig:
    """Read a map configuration file; any problem is a ModelError naming file, line and key."""
    p = Path(path)
    root = read_yaml(p)
    top = root.fields((), ("title", "stages"))
    title = top["title"].text() if "title" in top else None
    stages: dict[str, StageNotes] = {}
    lines: dict[str, int] = {}
    if "stages" in top:
        stage_nodes = top["stages"]
        for key, node in stage_nodes.items():
            lines[key] = int(stage_nodes._key_node(key).start_mark.line) + 1
            found = node.fields((), CONFIG_ROWS)
            stages[key] = StageNotes(**{row: _texts(found[row]) for row in found})
    return MapConfig(title=title, stages=stages, path=p, lines=lines)


def example_config(model: str) -> MapConfig | None:
    """The example configuration shipped for a built-in model (``examples/<model>.yaml``), if any."""
    p = EXAMPLES / f"{model}.yaml"
    return load_map_config(p) if p.exists() else None


def _texts(node: YNode) -> tuple[str, ...]:
    if not node.is_sequence:
        return (node.text(),)
    return tuple(item.text() for item in node.sequence())
