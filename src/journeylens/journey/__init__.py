"""Journey models (built-in YAML + loader/validator), touchpoint catalog and stage assignment."""

from __future__ import annotations

from journeylens.journey.catalog import Touchpoint, TouchpointCatalog, load_catalog
from journeylens.journey.model import (
    DEFAULT_MODEL,
    Condition,
    JourneyModel,
    Rule,
    Stage,
    builtin_models,
    load_model,
)
from journeylens.journey.stages import STAGE, STAGE_INDEX, assign_stages, unmatched_touches

__all__ = [
    "DEFAULT_MODEL",
    "STAGE",
    "STAGE_INDEX",
    "Condition",
    "JourneyModel",
    "Rule",
    "Stage",
    "Touchpoint",
    "TouchpointCatalog",
    "assign_stages",
    "builtin_models",
    "load_catalog",
    "load_model",
    "unmatched_touches",
]
