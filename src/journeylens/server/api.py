"""The query API: ``GET/POST /api/<analysis>`` over every analysis (docs/api.md).

Each analysis is one :class:`Analysis`: its request model (the same pydantic
model the Python API and the CLI use, e.g. :class:`~journeylens.analyses.funnel.FunnelQuery`),
the extra parameters it takes besides the model (``model``, ``unit`` ...) and a
function ``run(ws, query, extra) -> result``. A request

1. is authenticated: a ``read`` or ``admin`` key of one workspace (``Authorization:
   Bearer KEY``, HTTP Basic user, or the dashboard's session cookie); a ``write`` key
   gets 403; the key's workspace is the only one the request sees;
2. has its parameters merged (query string, then the JSON body of a POST on top),
   validated into the request model (400 ``invalid_parameter`` / 404 ``unknown_name``
   as ``{"code", "message"}``);
3. is answered from the cache when ``(workspace, analysis, parameters, data version)``
   was computed before (header ``X-Cache: hit``), else computed on a worker thread
   with a pooled read connection (``X-Cache: miss``);
4. has every top-level list of the result paginated (``page``, ``page_size``).

The *data version* of a workspace is one aggregate query: count and newest
``received_at`` of its events, row counts of people, accounts, costs, surveys,
quarantine, count and newest ``created_at`` of cohorts, and count plus an order-free
hash sum of the identity graph. Every commit of the collector, every import and every
identity rebuild changes it (see docs/api.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import queue
import threading
import time
import types
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import ibis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from journeylens.errors import InvalidParameterError, JourneylensError, UnknownNameError
from journeylens.journey import TouchpointCatalog, builtin_models, load_catalog
from journeylens.server import auth
from journeylens.store import Store, open_store
from journeylens.workspace import Workspace

if typing.TYPE_CHECKING:
    import ibis.expr.types as ir

    from journeylens.analyses.funnel import FunnelResult

log = logging.getLogger("journeylens.api")
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000
CACHE_ENTRIES = 256
POOL_SIZE = 2
COMMON = ("model", "page", "page_size")
"""Parameters every analysis takes besides its own (``model`` only where it applies)."""


# ============================================================================ errors
class ApiError(Exception):
    """An answer ``{"code", "message"}`` with an HTTP status (auth and parameter problems)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message}, status_code=self.status)


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON error answer of a journeylens error, a validation error or an :class:`ApiError`."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, JourneylensError):
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)
    if isinstance(exc, ValidationError):
        return JSONResponse({"code": "invalid_parameter", "message": _validation_message(exc)}, status_code=400)
    raise exc


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', '')}" if where else str(e.get("msg", "")))
    return "; ".join(parts)[:500]


# ============================================================================ parameters
@dataclass(frozen=True)
class Param:
    """One request parameter as published in the OpenAPI schema."""

    name: str
    kind: str = "string"
    """string | integer | number | boolean | array | object"""
    description: str = ""
    default: Any = None
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False

    def schema(self) -> dict[str, Any]:
        if self.kind == "array":
            s: dict[str, Any] = {"type": "array", "items": {"type": "string", "maxLength": 200}}
        elif self.kind == "object":
            s = {"type": "string", "description": "a JSON object", "maxLength": 500}
        else:
            s = {"type": self.kind}
            if self.kind == "string":
                s["maxLength"] = 200
        if self.enum:
            s["enum"] = list(self.enum)
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.default is not None and not isinstance(self.default, BaseModel | tuple | dict):
            s["default"] = self.default
        return s


def _kind(annotation: Any) -> str:
    """The parameter kind of a pydantic field annotation (``str | None`` -> string)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [_kind(a) for a in typing.get_args(annotation) if a is not type(None)]
        for k in ("array", "object"):
            if k in kinds:
                return k
        return kinds[0] if len(set(kinds)) == 1 else "string"
    if origin in (tuple, list) or annotation in (tuple, list):
        return "array"
    if origin is dict or annotation is dict:
        return "object"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    return "string"


def model_params(model: type[BaseModel], skip: tuple[str, ...] = ()) -> tuple[Param, ...]:
    """The parameters of a request model: each field under its alias, with its kind and default."""
    out = []
    for name, f in model.model_fields.items():
        key = f.alias or name
        if key in skip or name in skip:
            continue
        kind = _kind(f.annotation)
        default = None if f.is_required() else f.default
        if isinstance(default, str | int | float | bool) and kind in ("integer", "number") and isinstance(default, str):
            default = None
        out.append(Param(key, kind, (f.description or "").strip(), default,
                         minimum=0 if kind in ("integer", "number") else None, required=f.is_required()))
    return tuple(out)


def _coerce(param: Param, values: list[str]) -> Any:
    """A query-string value (or repeated values) as the parameter's kind (validation does the rest)."""
    if param.kind == "array":
        return values
    value = values[-1]
    if param.kind == "object":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidParameterError(f"'{param.name}' must be a JSON object") from exc
    if param.kind == "boolean":
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise InvalidParameterError(f"'{param.name}' must be true or false, got '{value[:40]}'")
    return value


def _check_param(param: Param, value: Any) -> None:
    """Enforce the published kind, bounds and choices of a parameter (400 / 404 otherwise)."""
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if param.kind in ("integer", "number") and not isinstance(v, bool):
            try:
                number = float(v) if param.kind == "number" else int(str(v))
            except (TypeError, ValueError) as exc:
                if param.kind == "integer" and isinstance(v, float) and v.is_integer():
                    number = int(v)
                else:
                    what = "an integer" if param.kind == "integer" else "a number"
                    raise InvalidParameterError(f"'{param.name}' must be {what}, got '{str(v)[:40]}'") from exc
            if not math.isfinite(number):
                raise InvalidParameterError(f"'{param.name}' must be finite")
            if param.minimum is not None and number < param.minimum:
                raise InvalidParameterError(f"'{param.name}' must be >= {param.minimum:g}, got {number:g}")
            if param.maximum is not None and number > param.maximum:
                raise InvalidParameterError(f"'{param.name}' must be <= {param.maximum:g}, got {number:g}")
        if param.enum and str(v) not in param.enum:
            raise UnknownNameError(param.name, str(v), param.enum)


# ============================================================================ analyses
Runner = Callable[[Workspace, Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class Analysis:
    """One queryable analysis: ``run(ws, query, extra)`` returns a result with ``to_dict()``."""

    name: str
    summary: str
    run: Runner
    query: type[BaseModel] | None = None
    extra: tuple[Param, ...] = ()
    uses_model: bool = True
    path_param: str | None = None
    fresh_connection: bool = False
    """Close the connection after the run (analyses that create temporary tables)."""
    skip: tuple[str, ...] = ()
    """Request-model fields not offered over HTTP."""

    @property
    def params(self) -> tuple[Param, ...]:
        own = model_params(self.query, self.skip) if self.query is not None else ()
        common = [Param("model", "string", "Journey model key (default: the configured model).",
                        enum=tuple(sorted(builtin_models())))] if self.uses_model else []
        common += [Param("page", "integer", "Page of every top-level list (1-based).", 1, minimum=1),
                   Param("page_size", "integer", "Items per page of every top-level list.", DEFAULT_PAGE_SIZE,
                         minimum=1, maximum=MAX_PAGE_SIZE)]
        return (*own, *self.extra, *common)


def _unit(default: str = "person") -> Param:
    return Param("unit", "string", "person or account.", default, enum=("person", "account"))


def _model(ws: Workspace, extra: Mapping[str, Any]) -> Any:
    return ws.model(extra.get("model"))


def check_event_steps(ws: Workspace, steps: Any) -> None:
    """Unknown event names among plain event steps (``purchase``) raise UnknownNameError (404),
    with the closest known event as hint; filters (``channel=email``) are not checked."""
    names = {c.values[0] for s in steps for c in s.conditions
             if len(s.conditions) == 1 and c.field == "event" and c.op == "eq" and len(c.values) == 1}
    if not names:
        return
    e = ws.events()
    known = set(e.select("event").distinct().to_pyarrow().column("event").to_pylist())
    for name in sorted(names):
        if name not in known:
            raise UnknownNameError("event", name, sorted(str(k) for k in known if k is not None))


# ---------------------------------------------------------------------------- segments
SEGMENT_FIELDS = ("breakdown", "by", "persona")
"""Request-model fields that may name a segment (``by`` of surveys is a tuple)."""


def is_segment_name(name: str | None) -> bool:
    """Whether a breakdown names saved cohorts: ``persona``, ``cohort`` or ``cohort:NAME``."""
    return bool(name) and (name in ("persona", "cohort") or str(name).startswith("cohort:"))


def breakdown_names(query: Any, extra: Mapping[str, Any] | None = None) -> list[str]:
    """The segment breakdowns a request names: the request model's ``breakdown`` / ``by`` /
    ``persona`` fields (whichever it has) and the extra ``breakdown`` parameter."""
    values: list[Any] = []
    if query is not None:
        values += [getattr(query, f, None) for f in SEGMENT_FIELDS]
    if extra:
        values.append(extra.get("breakdown"))
    names: list[str] = []
    for v in values:
        for name in (v if isinstance(v, list | tuple) else [v]):
            if isinstance(name, str) and is_segment_name(name) and name not in names:
                names.append(name)
    return names


def saved_cohorts(ws: Workspace) -> dict[str, int]:
    """Saved cohort name -> members (personas are ``persona:<key>``)."""
    c = ws.table("cohorts")
    rows = c.group_by("name").aggregate(members=c.person_id.nunique()).to_pyarrow().to_pylist()
    return {str(r["name"]): int(r["members"]) for r in sorted(rows, key=lambda r: str(r["name"]))}


def request_segments(ws: Workspace, query: Any, extra: Mapping[str, Any], *, unit: str | None = None,
                     model: Any = None) -> dict[str, ir_Table]:
    """``segments=`` for the analysis of a request: ``ws.segments(name)`` for every breakdown
    that names saved cohorts (see :func:`breakdown_names`); ``{}`` when none does.

    ``persona`` without saved personas, ``cohort`` without other saved cohorts and
    ``cohort:NAME`` of an unknown cohort raise :class:`UnknownNameError` (404)."""
    names = breakdown_names(query, extra)
    if not names:
        return {}
    saved = saved_cohorts(ws)
    prefix = Workspace.PERSONA_COHORT_PREFIX
    choices = ([*(["persona"] if any(n.startswith(prefix) for n in saved) else []),
                *(["cohort"] if any(not n.startswith(prefix) for n in saved) else []),
                *(f"cohort:{n}" for n in saved)])
    for name in names:
        if name not in choices:
            raise UnknownNameError("segment breakdown", name, choices)
    u = unit or str(getattr(query, "unit", None) or extra.get("unit") or "person")
    return ws.segments(*names, unit=u, model=model)


def _run_funnel(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.funnel import funnel

    check_event_steps(ws, q.steps)
    m = _model(ws, extra)
    return funnel(ws.touches(m), q, segments=request_segments(ws, q, extra, model=m))


def _funnel_at_step(ws: Workspace, q: Any, extra: dict[str, Any]) -> tuple[ir.Table, FunnelResult, int | str]:
    """The request's touches, its funnel and its ``step`` parameter (index or name, required)."""
    from journeylens.analyses.funnel import funnel, step_ref

    check_event_steps(ws, q.steps)
    m = _model(ws, extra)
    touches = ws.touches(m)
    result = funnel(touches, q, segments=request_segments(ws, q, extra, model=m))
    step = extra.get("step")
    if step is None:
        raise InvalidParameterError("'step' is needed: the 1-based step index or its name")
    return touches, result, step_ref(step)


def _run_funnel_people(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    _, result, key = _funnel_at_step(ws, q, extra)
    status = str(extra.get("status") or "dropped")
    found = result.people_at(key, status, breakdown=extra.get("breakdown_value"))  # type: ignore[arg-type]
    return _Plain(found.to_dict())


def _run_funnel_paths(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.paths import funnel_paths

    touches, result, key = _funnel_at_step(ws, q, extra)
    return funnel_paths(touches, result, key, str(extra.get("position") or "after"))


def _run_stages(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.stages import stage_funnel

    m = _model(ws, extra)
    kwargs: dict[str, Any] = {"unit": extra.get("unit") or "person"}
    if extra.get("breakdown"):
        kwargs["breakdown"] = extra["breakdown"]
        kwargs["segments"] = request_segments(ws, q, extra, unit=kwargs["unit"], model=m)
    return stage_funnel(ws.touches(m), m, **kwargs)


def _run_overview(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    return ws.overview(extra.get("model"), top=int(extra.get("top") or 8))


def _run_with_query(method: str) -> Runner:
    def run(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
        return getattr(ws, method)(q, model=extra.get("model"))
    return run


def _run_segmented(method: str) -> Runner:
    """``ws.<method>(query, model=..., segments=...)``; ``segments`` only when the breakdown
    names saved cohorts (methods whose query has no ``breakdown`` never get it)."""
    def run(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
        m = _model(ws, extra)
        segs = request_segments(ws, q, extra, model=m)
        return getattr(ws, method)(q, model=m, **({"segments": segs} if segs else {}))
    return run


def _run_kpis(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.kpis import kpis

    m = _model(ws, extra)
    return kpis(ws.touches(m), model=m, costs=ws.costs(), surveys=ws.surveys(), query=q,
                segments=request_segments(ws, q, extra, model=m))


def _run_attribution(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses import attribution as attr

    model = _model(ws, extra)
    kwargs: dict[str, Any] = {"costs": ws.costs()}
    segs = request_segments(ws, q, extra, model=model)
    if segs:  # only once AttributionQuery has a breakdown (a segment breakdown is refused before)
        kwargs["segments"] = segs
    methods = [m for m in extra.get("methods") or [] if m]
    if methods:
        return attr.compare_attribution(ws.touches(model), q, methods=methods, **kwargs)
    return attr.attribution(ws.touches(model), q, **kwargs)


def _run_clv(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    m = _model(ws, extra)
    return ws.clv(q, model=m, segments=request_segments(ws, q, extra, model=m) or None)


def _run_surveys(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    m = _model(ws, extra)
    return ws.survey_report(q, model=m, segments=request_segments(ws, q, extra, model=m) or None)


def _run_personas(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    k = extra.get("k")
    return ws.personas(k=int(k) if k not in (None, "") else None, unit=extra.get("unit") or "person",
                       model=extra.get("model"))


def _run_painpoints(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    b = extra.get("breakdown")
    if b is not None and not is_segment_name(str(b)):
        raise InvalidParameterError(f"painpoints compares saved segments; breakdown '{str(b)[:40]}' is none",
                                    hint="write persona, cohort or cohort:NAME (traits are compared anyway)")
    m = _model(ws, extra)
    return ws.pain_points(q, model=m, moments=bool(extra.get("moments")),
                          segments=request_segments(ws, q, extra, model=m) or None)


def _run_moments(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    kwargs = {k: extra[k] for k in ("by", "outcome", "unit", "inactive") if extra.get(k) not in (None, "")}
    if extra.get("min_exposed") not in (None, ""):
        kwargs["min_exposed"] = int(extra["min_exposed"])
    if extra.get("goals"):
        kwargs["goals"] = tuple(extra["goals"])
    return ws.moments_of_truth(model=extra.get("model"), **kwargs)


def _run_experiment(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.experiments import experiment

    m = _model(ws, extra)
    segs = request_segments(ws, q, extra, model=m)
    if not segs:
        return ws.experiment(q, model=m)
    # only once ExperimentQuery has a breakdown (a segment breakdown is refused before)
    kwargs: dict[str, Any] = {"people": ws.people() if q.unit == "person" else ws.accounts(), "segments": segs}
    return experiment(ws.touches(m), q, **kwargs)


def _run_propensity(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    from journeylens.analyses.propensity import propensity

    m = _model(ws, extra)
    return propensity(ws.touches(m), q, model=m, segments=request_segments(ws, q, extra, model=m) or None)


def _months(ws: Workspace) -> list[str]:
    """The months (``YYYY-MM``, UTC) from the first to the last event of the workspace."""
    e = ws.events()
    row = e.aggregate(lo=e.ts.min(), hi=e.ts.max()).to_pyarrow().to_pylist()[0]
    if row["lo"] is None or row["hi"] is None:
        return []
    y, m = row["lo"].year, row["lo"].month
    out: list[str] = []
    while (y, m) <= (row["hi"].year, row["hi"].month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _run_cohorts(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    prefix = Workspace.PERSONA_COHORT_PREFIX
    saved = saved_cohorts(ws)
    return _Plain({
        "months": _months(ws),
        "cohorts": [{"name": n, "members": k, "persona": n[len(prefix):] if n.startswith(prefix) else None}
                    for n, k in saved.items()],
        "personas": [{"key": n[len(prefix):], "members": k} for n, k in saved.items() if n.startswith(prefix)],
    })


MAP_SCOPE = ("persona", "segment", "period")


def _run_map(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    scope: dict[str, Any] = {k: str(extra[k]) for k in MAP_SCOPE if extra.get(k)}
    other = {k.removeprefix("compare_"): str(extra[k]) for k in ("compare_persona", "compare_segment",
                                                                   "compare_period") if extra.get(k)}
    kwargs: dict[str, Any] = {"unit": extra.get("unit") or "person"}
    if extra.get("zoom"):
        kwargs["zoom"] = str(extra["zoom"])
    if other:
        return ws.compare_journey_maps(other, extra.get("model"), **scope, **kwargs)
    return ws.journey_map(extra.get("model"), **scope, **kwargs)


def _run_journey(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    return ws.journey(str(extra["person"]), extra.get("model"))


def _run_quarantine(ws: Workspace, q: Any, extra: dict[str, Any]) -> Any:
    newest = extra.get("newest")
    return ws.quarantine(limit=int(newest) if newest not in (None, "") else 50, target=extra.get("target") or None)


class _Plain:
    """A plain dict result (``to_dict``/``to_pandas``) for the API's own small answers."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def figure(self) -> None:
        return None


def _analyses() -> dict[str, Analysis]:
    from journeylens.analyses.experiments import ExperimentQuery
    from journeylens.analyses.funnel import FunnelQuery
    from journeylens.analyses.kpis import KpiQuery
    from journeylens.analyses.painpoints import PainPointsQuery
    from journeylens.analyses.paths import PathsQuery
    from journeylens.analyses.retention import (
        ChurnQuery,
        LifecycleQuery,
        RepurchaseQuery,
        RetentionQuery,
    )
    from journeylens.analyses.surveys import SurveyQuery
    from journeylens.analyses.transitions import TransitionsQuery
    from journeylens.analyses.value import ValueQuery

    items = [
        Analysis("overview", "Headline numbers: people, events, touches, top channels.", _run_overview,
                 extra=(Param("top", "integer", "Channels listed.", 8, minimum=1, maximum=100),)),
        Analysis("funnel", "Funnel over steps within a window (docs/funnels.md).", _run_funnel, FunnelQuery),
        Analysis("funnel/people", "The units that converted to / dropped off at one funnel step.",
                 _run_funnel_people, FunnelQuery, extra=(
                     Param("step", "string", "1-based step index or step name.", required=True),
                     Param("status", "string", "dropped (reached the step before, not this one) or converted.",
                           "dropped", enum=("dropped", "converted")),
                     Param("breakdown_value", "string", "Only units with this breakdown value."))),
        Analysis("funnel/paths", "Paths before / between / after a funnel step, or of those who dropped off.",
                 _run_funnel_paths, FunnelQuery, extra=(
                     Param("step", "string", "1-based step index or step name.", required=True),
                     Param("position", "string", "before, between, after or dropped.", "after",
                           enum=("before", "between", "after", "dropped")))),
        Analysis("stages", "Units reaching each stage of a journey model.", _run_stages,
                 extra=(_unit(), Param("breakdown", "string", "Column, properties.KEY or segment to split by."))),
        Analysis("paths", "Top paths and Sankey flows (docs/paths.md).", _run_with_query("paths"), PathsQuery),
        Analysis("sankey", "Sankey flows of all paths per step position.", _run_with_query("sankey"), PathsQuery),
        Analysis("transitions", "Transition matrix between events or stages.", _run_with_query("transitions"),
                 TransitionsQuery),
        Analysis("retention", "Cohort retention (docs/retention.md).", _run_segmented("retention"), RetentionQuery),
        Analysis("lifecycle", "New / returning / resurrecting / dormant units per period.",
                 _run_segmented("lifecycle"), LifecycleQuery),
        Analysis("churn", "Churn per period.", _run_segmented("churn"), ChurnQuery),
        Analysis("repurchase", "Share of purchasers who purchase again.", _run_segmented("repurchase"),
                 RepurchaseQuery),
        Analysis("kpis", "Every KPI per stage, optionally per period and breakdown (docs/kpis.md).", _run_kpis,
                 KpiQuery),
        Analysis("clv", "RFM, BG/NBD + Gamma-Gamma customer value (docs/clv.md).", _run_clv, ValueQuery),
        Analysis("surveys", "NPS, CSAT, CES and emotion per stage, comment themes (docs/surveys.md).",
                 _run_surveys, SurveyQuery),
        Analysis("personas", "Discovered personas with share, traits and funnel (docs/personas.md).",
                 _run_personas, extra=(Param("k", "integer", "Number of personas (default: chosen by silhouette).",
                                             minimum=2, maximum=12), _unit())),
        Analysis("painpoints", "Ranked pain points with evidence (docs/painpoints.md).", _run_painpoints,
                 PainPointsQuery, extra=(Param("moments", "boolean", "Add moments of truth.", False),
                                         Param("breakdown", "string", "Saved segments compared besides the "
                                               "traits: persona, cohort or cohort:NAME."))),
        Analysis("moments", "Touchpoints whose presence changes conversion or churn most.", _run_moments,
                 extra=(Param("by", "string", "touchpoint, channel, ...", "channel"),
                        Param("outcome", "string", "conversion or churn.", "conversion",
                              enum=("conversion", "churn")),
                        _unit(), Param("inactive", "string", "Churn: inactive for (duration).", "30d"),
                        Param("min_exposed", "integer", "Fewest exposed units to report a value.", 20, minimum=1),
                        Param("goals", "array", "Goal events (default: the model's conversion)."))),
        Analysis("experiment", "A/B readout per variant (docs/experiments.md).", _run_experiment, ExperimentQuery),
        Analysis("map", "The Customer Journey Map (docs/journey-map.md); compare_* gives a second scope.",
                 _run_map, fresh_connection=True, extra=(
                     Param("persona", "string", "Saved persona key."), Param("segment", "string", "Saved cohort."),
                     Param("period", "string", "Period, e.g. 2026-03 or 2026-01-01..2026-02-01."),
                     Param("compare_persona", "string", "Compare with this persona."),
                     Param("compare_segment", "string", "Compare with this cohort."),
                     Param("compare_period", "string", "Compare with this period."),
                     Param("zoom", "string", "A stage to zoom into."), _unit())),
        Analysis("journey/{person}", "The stitched timeline of one person (any of their ids).", _run_journey,
                 path_param="person"),
        Analysis("cohorts", "Saved cohorts and personas (persona:<key>) with their members, and the months "
                 "of data (the choices of segment and scope pickers).", _run_cohorts,
                 uses_model=False),
        Analysis("quarantine", "Rejected rows: counts by reason and the newest rows.", _run_quarantine,
                 uses_model=False, extra=(Param("newest", "integer", "Newest rows listed.", 50, minimum=0,
                                                maximum=1000), Param("target", "string", "Only this table."))),
    ]
    with contextlib.suppress(ImportError):
        from journeylens.analyses.attribution import METHODS, AttributionQuery

        items.append(Analysis(
            "attribution", "Conversion credit per channel/campaign with cost and ROAS (docs/attribution.md).",
            _run_attribution, AttributionQuery, extra=(Param(
                "methods", "array", f"Compare these methods ({', '.join(METHODS)}) instead of one."),)))
    with contextlib.suppress(ImportError):
        from journeylens.analyses.propensity import PropensityQuery

        items.append(Analysis("propensity", "Probability to convert or churn and its drivers.", _run_propensity,
                              PropensityQuery))
    return {a.name: a for a in items}


ANALYSES: dict[str, Analysis] = _analyses()


# ============================================================================ results and cache
@dataclass(frozen=True)
class Computed:
    """A computed answer: the result's ``to_dict()`` (JSON-safe), its figure as Plotly JSON,
    extra renderings (``html`` of a map), the data version and the compute time."""

    data: Any
    figure: str | None
    version: str
    seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)
    cached: bool = False


def jsonable(value: Any) -> Any:
    """Dates as ISO strings, NaN/inf as None, tuples as lists, numpy scalars as numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str | int | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


class QueryService:
    """Pooled read connections, the data version, and the result cache of one DuckDB file.

    Connections are opened lazily with the same settings as the collector's writer
    (DuckDB shares one database instance per file inside a process, and refuses a
    second connection with other settings such as ``read_only``), so each sees every
    committed transaction. A connection is used by one thread at a time.
    """

    def __init__(self, db: str, *, pool_size: int = POOL_SIZE, cache_entries: int = CACHE_ENTRIES) -> None:
        self.db = db
        self.pool_size = pool_size
        self.cache_entries = cache_entries
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._open = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, ...], Computed] = OrderedDict()
        self._catalog: TouchpointCatalog | None = None
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def workspace(self, name: str, *, fresh: bool = False) -> Iterator[Workspace]:
        """A Workspace ``name`` on a pooled connection (a new one closed afterwards when ``fresh``)."""
        store = self._checkout()
        ok = False
        try:
            if self._catalog is None:
                self._catalog = load_catalog()
            yield Workspace(store, name, catalog=self._catalog)
            ok = True
        finally:
            if ok and not fresh:
                self._idle.put(store)
            else:
                with self._lock:
                    self._open -= 1
                store.close()

    def _checkout(self) -> Store:
        with self._lock:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                grow = self._open < self.pool_size
                if grow:
                    self._open += 1
        if grow:
            try:
                return open_store(self.db)
            except BaseException:
                with self._lock:
                    self._open -= 1
                raise
        return self._idle.get(timeout=300)

    def close(self) -> None:
        while True:
            try:
                store = self._idle.get_nowait()
            except queue.Empty:
                return
            store.close()

    # ------------------------------------------------------------------ data version
    @staticmethod
    def data_version(ws: Workspace) -> str:
        """One aggregate query over the workspace's tables (see the module docstring)."""
        parts: list[ir_Table] = []
        e = ws.table("events")
        parts.append(e.aggregate(events=e.count(), received=e.received_at.max().cast("string")))
        for name in ("people", "accounts", "costs", "surveys", "quarantine"):
            t = ws.table(name)
            parts.append(t.aggregate(**{f"n_{name}": t.count()}))
        c = ws.table("cohorts")
        parts.append(c.aggregate(cohorts=c.count(), cohorts_at=c.created_at.max().cast("string")))
        i = ws.table("identities")
        h = ibis.coalesce(i.id, "") + "\x1f" + ibis.coalesce(i.person_id, "") + "\x1f" + ibis.coalesce(i.account_id, "")
        parts.append(i.aggregate(identities=i.count(),
                                 id_hash=(h.hash() % 1_000_000_007).sum().cast("int64")))
        joined = parts[0]
        for p in parts[1:]:
            joined = joined.cross_join(p)
        row = joined.to_pyarrow().to_pylist()[0]
        text = json.dumps(row, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def version(self, workspace: str) -> str:
        with self.workspace(workspace) as ws:
            return self.data_version(ws)

    # ------------------------------------------------------------------ computing
    def compute(self, workspace: str, analysis: Analysis, params: Mapping[str, Any], *,
                version: str | None = None) -> Computed:
        """The cached or freshly computed answer of ``analysis`` for validated-later ``params``.

        ``params`` are the request's parameters without paging; they are validated here
        (raising journeylens or pydantic errors) before anything runs. ``version`` is the data
        version when the caller read it already (a dashboard page reads it once for all its
        analyses); None reads it here. The cache key holds the extra parameters with their
        published defaults filled in, so leaving out a default (``unit=person``) and passing it
        share one entry."""
        query, extra = self.parse(analysis, params)
        defaults = {p.name: p.default for p in analysis.extra if p.default is not None and not p.required}
        key_params = json.dumps({"q": query.model_dump(mode="json", by_alias=True) if query is not None else None,
                                 "x": jsonable({**defaults, **extra})}, sort_keys=True, default=str)
        with self.workspace(workspace, fresh=analysis.fresh_connection) as ws:
            if version is None:
                version = self.data_version(ws)
            key = (workspace, analysis.name, key_params, version)
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.hits += 1
                    return Computed(hit.data, hit.figure, hit.version, hit.seconds, hit.extras, cached=True)
            started = time.perf_counter()
            result = analysis.run(ws, query, extra)
            data = jsonable(result.to_dict())
            fig = _figure_json(result)
            extras: dict[str, Any] = {}
            if hasattr(result, "to_html") and analysis.name == "map":
                extras["html"] = result.to_html()
            if hasattr(result, "funnel") and analysis.name == "personas":
                pass
            seconds = time.perf_counter() - started
        done = Computed(data, fig, version, seconds, extras)
        with self._lock:
            self.misses += 1
            self._cache[key] = done
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return done

    @staticmethod
    def parse(analysis: Analysis, params: Mapping[str, Any]) -> tuple[BaseModel | None, dict[str, Any]]:
        """Split ``params`` into the request model (validated) and the analysis' extra parameters."""
        extra_names = {p.name for p in analysis.extra} | {"model"} | (
            {analysis.path_param} if analysis.path_param else set())
        published = {p.name: p for p in analysis.params}
        for name, value in params.items():
            if name in published and value not in (None, ""):
                _check_param(published[name], value)
        extra = {k: v for k, v in params.items() if k in extra_names and v not in (None, "")}
        rest = {k: v for k, v in params.items() if k not in extra_names}
        model = extra.get("model")
        if model is not None:
            if not analysis.uses_model:
                raise InvalidParameterError(f"'{analysis.name}' takes no journey model")
            known = builtin_models()
            if str(model) not in known:
                raise UnknownNameError("journey model", str(model), known)
        if analysis.query is None:
            if rest:
                raise InvalidParameterError(f"unknown parameter '{sorted(rest)[0]}' for '{analysis.name}'")
            return None, extra
        fields = {f.alias or n for n, f in analysis.query.model_fields.items()} | set(analysis.query.model_fields)
        unknown = sorted(set(rest) - fields)
        if unknown:
            raise InvalidParameterError(f"unknown parameter '{unknown[0]}' for '{analysis.name}'")
        return analysis.query(**rest), extra


ir_Table = Any
"""An Ibis table (kept loose: aggregates of different tables are cross-joined)."""


def _figure_json(result: Any) -> str | None:
    fig_fn = getattr(result, "figure", None)
    if fig_fn is None:
        return None
    try:
        fig = fig_fn()
    except Exception:  # a result without data to draw
        return None
    if fig is None:
        return None
    to_json = getattr(fig, "to_json", None)
    return str(to_json()) if to_json is not None else None


# ============================================================================ pagination
def paginate(data: Any, page: int, page_size: int) -> tuple[Any, dict[str, Any] | None]:
    """Slice every top-level list of ``data`` to page ``page`` (1-based) of ``page_size`` items;
    returns the sliced data and the page description (None when nothing is a list)."""
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidParameterError(f"page must be >= 1 and page_size 1..{MAX_PAGE_SIZE}")
    if isinstance(data, list):
        wrapped, info = paginate({"items": data}, page, page_size)
        return wrapped["items"], info
    if not isinstance(data, dict):
        return data, None
    totals = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    if not totals:
        return data, None
    start = (page - 1) * page_size
    out = {k: (v[start:start + page_size] if isinstance(v, list) else v) for k, v in data.items()}
    longest = max(totals.values())
    pages = max(1, math.ceil(longest / page_size))
    return out, {"page": page, "page_size": page_size, "pages": pages, "totals": totals,
                 "has_more": page < pages}


# ============================================================================ auth
def key_record(request: Request) -> auth.KeyRecord:
    """The read/admin key of the request: header (Bearer / Basic) or the dashboard's session.

    401 without a valid key, 403 for a write key."""
    ring: auth.KeyRing = request.app.state.collector.keys
    header = request.headers.get("authorization")
    rec: auth.KeyRecord | None = None
    if header:
        rec = ring.lookup(auth.basic_user(header))
        if rec is None:
            raise ApiError(401, "unauthorized", "unknown or revoked key")
    else:
        from journeylens.server.web import session_record

        rec = session_record(request)
        if rec is None:
            raise ApiError(401, "unauthorized", "a read key is needed (Authorization: Bearer KEY, or HTTP Basic user)")
    if rec.kind not in ("read", "admin"):
        raise ApiError(403, "forbidden", f"a {rec.kind} key cannot read analyses")
    return rec


def service_of(request: Request) -> QueryService:
    svc: QueryService = request.app.state.query
    return svc


# ============================================================================ router
async def _params(request: Request, analysis: Analysis) -> dict[str, Any]:
    by_name = {p.name: p for p in analysis.params}
    grouped: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        grouped.setdefault(k, []).append(v)
    params: dict[str, Any] = {}
    for k, values in grouped.items():
        p = by_name.get(k)
        params[k] = _coerce(p, values) if p is not None else values[-1]
    if request.method == "POST":
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidParameterError("the body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise InvalidParameterError("the body must be a JSON object of parameters")
            params.update(body)
    for name in ("page", "page_size"):
        if name in params:
            try:
                params[name] = int(params[name])
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(f"'{name}' must be an integer") from exc
    if analysis.path_param:
        params[analysis.path_param] = request.path_params[analysis.path_param]
    _refuse_nul(params)
    return params


def _refuse_nul(value: Any, name: str = "") -> None:
    """Text with NUL characters cannot become a SQL literal (DuckDB's parser stops at it): 400."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidParameterError(f"parameter '{name}' contains a NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_nul(v, str(k) if not name else f"{name}.{k}")
    elif isinstance(value, list | tuple):
        for v in value:
            _refuse_nul(v, name)


def _openapi(analysis: Analysis, method: str) -> dict[str, Any]:
    params = analysis.params
    listed = [{"name": p.name, "in": "query", "required": p.required and method == "GET",
               "description": p.description or p.name, "schema": p.schema()} for p in params]
    if analysis.path_param:
        listed.insert(0, {"name": analysis.path_param, "in": "path", "required": True,
                          "schema": {"type": "string", "minLength": 1, "maxLength": 200}})
    extra: dict[str, Any] = {"parameters": listed}
    if method == "POST":
        extra["parameters"] = listed[:1] if analysis.path_param else []
        props = {p.name: (p.schema() if p.kind != "object" else {"type": "object"}) for p in params}
        extra["requestBody"] = {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": props,
            "required": [p.name for p in params if p.required]}}}}
    extra["responses"] = {
        "200": {"description": "The result (to_dict of the analysis), top-level lists paginated; header X-Cache.",
                "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "Bad parameter: {code, message}."},
        "401": {"description": "No or unknown key."},
        "403": {"description": "A write key."},
        "404": {"description": "Unknown name (model, step, person ...): {code, message}."},
    }
    return extra


def router() -> APIRouter:
    """``GET``/``POST`` ``/api/<analysis>`` for every analysis of :data:`ANALYSES`, plus
    ``/api/analyses`` (the list) and ``/api/version`` (the data version)."""
    r = APIRouter(prefix="/api", tags=["query"])

    def handler(analysis: Analysis) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                rec = key_record(request)
                params = await _params(request, analysis)
                page = int(params.pop("page", 1))
                page_size = int(params.pop("page_size", DEFAULT_PAGE_SIZE))
                svc = service_of(request)
                done = await run_in_threadpool(svc.compute, rec.workspace, analysis, params)
                body, info = paginate(done.data, page, page_size)
            except (ApiError, JourneylensError, ValidationError) as exc:
                return error_response(exc)
            except Exception as exc:  # a bug: logged, answered as JSON
                log.exception("query %s failed", analysis.name)
                return JSONResponse({"code": "internal_error", "message": f"{type(exc).__name__}: {str(exc)[:300]}"},
                                    status_code=500)
            if info is not None and isinstance(body, dict):
                body = {**body, "page": info}
            headers = {"X-Cache": "hit" if done.cached else "miss", "X-Data-Version": done.version,
                       "X-Compute-Seconds": f"{done.seconds:.3f}", "Cache-Control": "private, no-cache"}
            if info is not None and info["has_more"]:
                nxt = request.url.include_query_params(page=page + 1, page_size=page_size)
                headers["Link"] = f'<{nxt}>; rel="next"'
            return JSONResponse(body, headers=headers)
        endpoint.__name__ = "query_" + analysis.name.replace("/", "_").replace("{", "").replace("}", "")
        return endpoint

    for a in ANALYSES.values():
        fn = handler(a)
        for method in ("GET", "POST"):
            r.add_api_route(f"/{a.name}", fn, methods=[method], summary=a.summary, response_model=None,
                            name=f"{fn.__name__}_{method.lower()}", operation_id=f"{fn.__name__}_{method.lower()}",
                            openapi_extra=_openapi(a, method))

    @r.get("/analyses", summary="The queryable analyses and their parameters", response_model=None)
    async def list_analyses(request: Request) -> Response:
        try:
            key_record(request)
        except ApiError as exc:
            return exc.response()
        return JSONResponse({"analyses": [
            {"name": a.name, "summary": a.summary, "path": f"/api/{a.name}",
             "parameters": [{"name": p.name, "type": p.kind, "description": p.description,
                             "default": jsonable(p.default) if not isinstance(p.default, BaseModel) else str(p.default),
                             "required": p.required} for p in a.params]}
            for a in ANALYSES.values()]})

    @r.get("/version", summary="The data version of the key's workspace (changes with every commit)",
           response_model=None)
    async def version(request: Request) -> Response:
        try:
            rec = key_record(request)
        except ApiError as exc:
            return exc.response()
        v = await run_in_threadpool(service_of(request).version, rec.workspace)
        return JSONResponse({"workspace": rec.workspace, "version": v})

    return r
