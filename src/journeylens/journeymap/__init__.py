"""The data-driven Customer Journey Map: assembled from the analyses, rendered to HTML/PNG/PDF."""

from journeylens.journeymap.build import build_map, build_zoom
from journeylens.journeymap.config import MapConfig, StageNotes, example_config, load_map_config
from journeylens.journeymap.model import (
    ROWS,
    EmotionPoint,
    JourneyMap,
    KpiCell,
    MapCell,
    PainPointNote,
    StageColumn,
    StageZoom,
    evidence_level,
)

__all__ = [
    "ROWS", "EmotionPoint", "JourneyMap", "KpiCell", "MapCell", "MapConfig", "PainPointNote", "StageColumn",
    "StageNotes", "StageZoom", "build_map", "build_zoom", "evidence_level", "example_config", "load_map_config",
]
