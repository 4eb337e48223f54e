"""journeylens: self-hosted customer-journey analytics that draws the Customer Journey Map from data.

>>> import journeylens as jl
>>> ws = jl.open("journeylens.duckdb")          # doctest: +SKIP
>>> ws.stage_funnel(model="five_phase")          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journeylens.workspace import ImportReport, Workspace

__all__ = ["ImportReport", "Workspace", "__version__", "open"]
__version__ = "0.1.0"


def open(url: str | Path | None = None, *, workspace: str | None = None, read_only: bool = False) -> Workspace:
    """Open the store at ``url`` (DuckDB file by default) and return a :class:`Workspace`."""
    from journeylens.workspace import open as _open

    return _open(url, workspace=workspace, read_only=read_only)


def __getattr__(name: str) -> Any:
    if name in ("ImportReport", "Workspace"):
        from journeylens import workspace

        return getattr(workspace, name)
    raise AttributeError(name)
