"""The touchpoint catalog: channel, direct/indirect, online/offline and owner of each touchpoint.

The built-in catalog (``journey/catalog.yaml``) is always loaded. A user file
in the same format extends it: a new key adds a touchpoint (``channel``,
``direct``, ``online`` and ``owner`` required), a known key overrides only
the fields it names::

    touchpoints:
      website:   {owner: growth}                       # override one field
      podcast:   {channel: audio, direct: true, online: true, owner: marketing}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from journeylens.journey._yaml import YNode, read_yaml

BUILTIN_CATALOG = Path(__file__).parent / "catalog.yaml"
_REQUIRED = ("channel", "direct", "online", "owner")
_FIELDS = (*_REQUIRED, "description")


@dataclass(frozen=True)
class Touchpoint:
    key: str
    channel: str
    direct: bool
    """The company controls it (shop, own channels, ads) as opposed to review portals, forums ..."""
    online: bool
    owner: str
    """Team responsible (the journey map's "responsibilities" row)."""
    description: str = ""


class TouchpointCatalog(Mapping[str, Touchpoint]):
    """Touchpoints by key, in file order (built-in entries first)."""

    def __init__(self, touchpoints: Mapping[str, Touchpoint], paths: tuple[Path, ...] = ()) -> None:
        self._touchpoints = dict(touchpoints)
        self.paths = paths
        """The files the catalog was read from, built-in first."""

    def __getitem__(self, key: str) -> Touchpoint:
        return self._touchpoints[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._touchpoints)

    def __len__(self) -> int:
        return len(self._touchpoints)

    def __repr__(self) -> str:
        return f"TouchpointCatalog({len(self)} touchpoints)"

    def to_pandas(self) -> pd.DataFrame:
        """One row per touchpoint; the key column is named ``touchpoint`` (as in events)."""
        names = [f.name for f in fields(Touchpoint)]
        rows = [[getattr(tp, n) for n in names] for tp in self.values()]
        return pd.DataFrame(rows, columns=["touchpoint", *names[1:]])


def load_catalog(path: str | Path | None = None) -> TouchpointCatalog:
    """The built-in catalog, extended and overridden by the user file at ``path`` if given."""
    entries = _parse(read_yaml(BUILTIN_CATALOG), {})
    paths = [BUILTIN_CATALOG]
    if path is not None:
        entries = _parse(read_yaml(Path(path)), entries)
        paths.append(Path(path))
    return TouchpointCatalog(entries, tuple(paths))


def _parse(root: YNode, base: dict[str, Touchpoint]) -> dict[str, Touchpoint]:
    """The entries of one catalog file applied on top of ``base``."""
    result = dict(base)
    for key, node in root.fields(required=("touchpoints",))["touchpoints"].items():
        old = result.get(key)
        required = _REQUIRED if old is None else ()
        f = node.fields(required=required, optional=[n for n in _FIELDS if n not in required])
        old = old or Touchpoint(key, channel="", direct=False, online=False, owner="")
        result[key] = Touchpoint(
            key=key,
            channel=f["channel"].text() if "channel" in f else old.channel,
            direct=f["direct"].boolean() if "direct" in f else old.direct,
            online=f["online"].boolean() if "online" in f else old.online,
            owner=f["owner"].text() if "owner" in f else old.owner,
            description=f["description"].text() if "description" in f else old.description,
        )
    return result
