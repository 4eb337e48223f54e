"""Assembling a journey map from touches, analysis results and a map configuration.

What each row is computed from (``n`` is what the evidence level counts):

* **behaviour** — per stage: the units that *reached* it (furthest stage at or beyond, as in
  the stage funnel), the units *active* in it (with at least one touch the model places in
  the stage; ``n``), the top events by touches with the share of active units doing each,
  the median time in the stage, the share that moved on (reached the next stage) and the
  share that moved back (a touch in an earlier stage while this was their furthest).
* **touchpoints** — share of the stage's touches per touchpoint, with the catalog's channel
  and its direct/indirect and online/offline marks; ``n`` = touches.
* **kpis** — the stage's KPIs as given by the caller (the KPI registry's values); ``n`` =
  units that reached the stage.
* **emotion** — the caller's emotion score per stage (surveys), ``n`` = answers.
* **goals** — only from the configuration.
* **pain_points** — the caller's detected pain points of the stage plus configured ones.
* **solutions** — configured ideas plus one suggestion per detected pain point and per
  moment-of-truth touchpoint of the stage.
* **owners** — owners of the stage's touchpoints from the touchpoint catalog, weighted by
  touch share, plus configured owners.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from journeylens.analyses.paths import PathsQuery, paths
from journeylens.analyses.stages import UNITS, StageFunnel, stage_funnel
from journeylens.analyses.surveys import mood
from journeylens.errors import InvalidParameterError, ModelError, suggest
from journeylens.journey import JourneyModel, TouchpointCatalog
from journeylens.journeymap.config import MapConfig
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


def build_map(
    touches: ir.Table,
    model: JourneyModel,
    *,
    catalog: TouchpointCatalog,
    unit: str = "person",
    config: MapConfig | None = None,
    kpis: Mapping[str, Sequence[KpiCell]] | None = None,
    emotions: Mapping[str, EmotionPoint] | None = None,
    pain_points: Sequence[PainPointNote] | None = None,
    moments: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    scope: Mapping[str, str] | None = None,
    title: str | None = None,
    top: int = 5,
    zoom: str | None = None,
) -> JourneyMap:
    """Build the map of ``model`` over ``touches`` (already restricted to the map's scope).

    ``kpis``, ``emotions``, ``pain_points`` and ``moments`` (stage → [(touchpoint, why)])
    come from the other analyses; rows whose input is None say "no data". ``zoom`` adds
    the detail of one stage (:func:`build_zoom`).
    """
    if unit not in UNITS:
        raise InvalidParameterError(f"unknown unit '{unit}'; choose person or account")
    if top < 1:
        raise InvalidParameterError("top must be at least 1")
    config = config or MapConfig()
    _check_config(config, model)
    col = UNITS[unit]
    funnel = stage_funnel(touches, model, unit=unit)
    activity = _stage_activity(touches, col)

    columns = tuple(
        StageColumn(key=r.stage, label=r.label, description=model.stage(r.stage).description,
                    people=r.people, share=r.conversion_from_start)
        for r in funnel.stages
    )
    cells: dict[tuple[str, str], MapCell] = {}
    by_stage_pains: dict[str, list[PainPointNote]] = defaultdict(list)
    for p in pain_points or ():
        by_stage_pains[p.stage].append(p)
    for i, stage in enumerate(model.stages):
        key = stage.key
        notes = config.notes(key)
        act = activity.get(key, {})
        pains = sorted(by_stage_pains.get(key, []), key=lambda p: -p.severity)
        row_cells = {
            "behaviour": _behaviour(funnel, i, act, top),
            "touchpoints": _touchpoints(act, catalog, top),
            "kpis": _kpis(kpis, key, funnel.stages[i].people),
            "emotion": _emotion(emotions, key),
            "goals": _configured(list(notes.goals), "no goals configured (map configuration file)"),
            "pain_points": _pain_points(pains, notes.pain_points, pain_points is not None),
            "solutions": _solutions(pains, (moments or {}).get(key, ()), notes.solutions),
            "owners": _owners(act, catalog, notes.owners),
        }
        for row, cell in row_cells.items():
            cells[(row, key)] = replace(cell, row=row, stage=key)
    assert all((r, s.key) in cells for r in ROWS for s in model.stages)
    return JourneyMap(
        model=model.key, model_name=model.name,
        title=title or config.title or f"Customer journey map — {model.name}",
        unit=unit, scope=dict(scope or {}), stages=columns, cells=cells, total_units=funnel.total_units,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        zoom=build_zoom(touches, model, zoom, catalog=catalog, unit=unit) if zoom else None,
    )


def _check_config(config: MapConfig, model: JourneyModel) -> None:
    for key in config.stages:
        if key not in model.stage_keys:
            raise ModelError(
                f"stage '{key}' is not a stage of model '{model.key}' ({', '.join(model.stage_keys)})",
                path=str(config.path) if config.path else None, line=config.lines.get(key),
                field=f"stages.{key}", hint=f"did you mean '{close}'?" if (close := suggest(key, model.stage_keys)) else None,
            )


def _stage_activity(touches: ir.Table, col: str) -> dict[str, dict[str, Any]]:
    """Per stage: active units, touches, and per event / per touchpoint touches and units."""
    m = touches.filter(touches.stage.notnull() & touches[col].notnull())
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"events": [], "touchpoints": []})
    totals = m.group_by("stage").aggregate(touches=m.count(), units=m[col].nunique())
    for r in totals.to_pyarrow().to_pylist():
        out[r["stage"]].update(touches=int(r["touches"]), units=int(r["units"]))
    for name, column in (("events", m.event), ("touchpoints", m.touchpoint)):
        g = m.group_by([m.stage, column.name("key")]).aggregate(touches=m.count(), units=m[col].nunique())
        for r in g.order_by([ibis.desc("touches"), "key"]).to_pyarrow().to_pylist():
            out[r["stage"]][name].append({"key": r["key"], "touches": int(r["touches"]), "units": int(r["units"])})
    return dict(out)


def _share(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _behaviour(funnel: StageFunnel, i: int, act: Mapping[str, Any], top: int) -> MapCell:
    row = funnel.stages[i]
    active = int(act.get("units", 0))
    nxt = funnel.stages[i + 1].people if i + 1 < len(funnel.stages) else None
    content = {
        "people": row.people,
        "active": active,
        "top_events": [
            {"event": e["key"], "touches": e["touches"], "persons": e["units"], "share": _share(e["units"], active)}
            for e in act.get("events", [])[:top]
        ],
        "median_seconds_in_stage": row.median_seconds_in_stage,
        "moved_on": _share(nxt, row.people) if nxt is not None else None,
        "moved_back": _share(row.moved_back, row.people),
        "repeated": _share(row.repeated, row.people),
    }
    if not active:
        return MapCell("behaviour", row.stage, None, missing="no touches in this stage")
    return MapCell("behaviour", row.stage, content, n=active, evidence=evidence_level(active))


def _touchpoints(act: Mapping[str, Any], catalog: TouchpointCatalog, top: int) -> MapCell:
    total = int(act.get("touches", 0))
    rows = []
    direct = online = known = 0
    for tp in act.get("touchpoints", []):
        info = catalog.get(tp["key"]) if tp["key"] is not None else None
        if info is not None:
            known += tp["touches"]
            direct += tp["touches"] if info.direct else 0
            online += tp["touches"] if info.online else 0
        rows.append({
            "touchpoint": tp["key"] or "(none)", "share": _share(tp["touches"], total), "touches": tp["touches"],
            "persons": tp["units"], "channel": info.channel if info else None,
            "direct": info.direct if info else None, "online": info.online if info else None,
        })
    if not total:
        return MapCell("touchpoints", "", None, missing="no touches in this stage")
    content = {"touchpoints": rows[:top], "others": len(rows[top:]), "direct_share": _share(direct, known),
               "online_share": _share(online, known), "mix": {r["touchpoint"]: r["touches"] for r in rows}}
    return MapCell("touchpoints", "", content, n=total, evidence=evidence_level(total))


def _kpis(kpis: Mapping[str, Sequence[KpiCell]] | None, stage: str, people: int) -> MapCell:
    if kpis is None:
        return MapCell("kpis", stage, None, missing="KPIs not computed")
    cells = list(kpis.get(stage, ()))
    if not cells:
        return MapCell("kpis", stage, None, missing="no KPI belongs to this stage")
    content = [{"kpi": k.key, "label": k.label, "value": k.value, "unit": k.unit, "missing": k.missing,
                "display": k.display} for k in cells]
    return MapCell("kpis", stage, content, n=people, evidence=evidence_level(people))


def _emotion(emotions: Mapping[str, EmotionPoint] | None, stage: str) -> MapCell:
    if emotions is None:
        return MapCell("emotion", stage, None, missing="no survey answers imported")
    e = emotions.get(stage)
    if e is None or e.n == 0:
        return MapCell("emotion", stage, None, missing="no survey answers in this stage")
    content = {"score": round(e.score, 4), "n": e.n, "low": e.low, "high": e.high, "face": mood(e.score)}
    return MapCell("emotion", stage, content, n=e.n, evidence=evidence_level(e.n))


def _configured(items: list[str], missing: str) -> MapCell:
    if not items:
        return MapCell("goals", "", None, source="config", evidence="none", missing=missing)
    return MapCell("goals", "", items, n=len(items), source="config", evidence="configured")


def _pain_points(pains: Sequence[PainPointNote], configured: Sequence[str], detected_ran: bool) -> MapCell:
    items: list[dict[str, Any]] = [
        {"title": p.title, "evidence": p.evidence, "severity": round(p.severity, 4), "affected": p.affected,
         "source": "data"} for p in pains
    ]
    items += [{"title": t, "evidence": None, "severity": None, "affected": None, "source": "config"}
              for t in configured]
    if not items:
        why = "no pain point detected in this stage" if detected_ran else "pain points not analysed"
        return MapCell("pain_points", "", [], missing=why)
    affected = sum(p.affected for p in pains)
    source = "data+config" if pains and configured else ("data" if pains else "config")
    evidence = evidence_level(affected) if pains else "configured"
    return MapCell("pain_points", "", items, n=affected, evidence=evidence, source=source)


def _solutions(pains: Sequence[PainPointNote], moments: Sequence[tuple[str, str]],
               configured: Sequence[str]) -> MapCell:
    items: list[dict[str, Any]] = [{"text": t, "source": "config"} for t in configured]
    for p in pains:
        if p.suggestion:
            items.append({"text": p.suggestion, "source": "data", "for": p.title})
    for touchpoint, why in moments:
        items.append({"text": f"Strengthen {touchpoint} ({why})", "source": "data", "for": "moment of truth"})
    if not items:
        return MapCell("solutions", "", [], missing="no ideas configured and nothing to derive")
    derived = sum(1 for i in items if i["source"] == "data")
    source = "data+config" if derived and configured else ("data" if derived else "config")
    return MapCell("solutions", "", items, n=len(items), evidence="configured" if not derived else "derived",
                   source=source)


def _owners(act: Mapping[str, Any], catalog: TouchpointCatalog, configured: Sequence[str]) -> MapCell:
    total = int(act.get("touches", 0))
    owners: dict[str, dict[str, Any]] = {}
    for tp in act.get("touchpoints", []):
        info = catalog.get(tp["key"]) if tp["key"] is not None else None
        if info is None:
            continue
        o = owners.setdefault(info.owner, {"owner": info.owner, "touchpoints": [], "touches": 0})
        o["touchpoints"].append(tp["key"])
        o["touches"] += tp["touches"]
    items = sorted(owners.values(), key=lambda o: -o["touches"])
    for o in items:
        o["share"] = _share(o.pop("touches"), total)
        o["source"] = "catalog"
    items += [{"owner": name, "touchpoints": [], "share": None, "source": "config"} for name in configured]
    if not items:
        return MapCell("owners", "", [], missing="no touchpoints with a known owner")
    source = "data+config" if owners and configured else ("data" if owners else "config")
    return MapCell("owners", "", items, n=total, evidence=evidence_level(total) if owners else "configured",
                   source=source)


# ------------------------------------------------------------------ one stage zoomed in
def build_zoom(touches: ir.Table, model: JourneyModel, stage: str, *, catalog: TouchpointCatalog,
               unit: str = "person", top: int = 10) -> StageZoom:
    """Detail of ``stage``: every touchpoint and event with shares, the top touchpoint paths
    inside the stage (consecutive repeats collapsed), and where units came from when they
    first touched the stage (the stage of their previous touch, ``start`` when none)."""
    s = model.stage(stage)
    col = UNITS[unit]
    t = touches.filter(touches[col].notnull())
    act = _stage_activity(t.filter(t.stage == ibis.literal(stage)), col).get(stage, {})
    total, active = int(act.get("touches", 0)), int(act.get("units", 0))
    tps = tuple(
        {"touchpoint": r["key"] or "(none)", "touches": r["touches"], "persons": r["units"],
         "share": _share(r["touches"], total),
         **({"channel": c.channel, "direct": c.direct, "online": c.online, "owner": c.owner}
            if (c := catalog.get(r["key"]) if r["key"] else None) else {})}
        for r in act.get("touchpoints", [])
    )
    events = tuple({"event": r["key"], "touches": r["touches"], "persons": r["units"],
                    "share": _share(r["units"], active)} for r in act.get("events", [])[:top])
    inside = t.filter(t.stage == ibis.literal(stage))
    result = paths(inside, PathsQuery(level="touchpoint", unit=unit, top=top, collapse_repeats=True))
    path_rows = tuple(p.to_dict() for p in result.paths)

    w = ibis.window(group_by=t[col], order_by=[t.ts, t.message_id])
    prev = t.mutate(_prev=t.stage.lag().over(w), _n=ibis.row_number().over(
        ibis.window(group_by=[t[col], t.stage], order_by=[t.ts, t.message_id])))
    first = prev.filter((prev.stage == ibis.literal(stage)) & (prev._n == 0))
    first = first.mutate(_from=ibis.coalesce(first._prev, ibis.literal("start")))
    g = first.group_by("_from").aggregate(units=first.count()).order_by(ibis.desc("units"))
    entries = tuple({"from": r["_from"], "persons": int(r["units"]), "share": _share(int(r["units"]), active)}
                    for r in g.to_pyarrow().to_pylist())
    return StageZoom(stage=stage, label=s.label, touchpoints=tps, events=events, paths=path_rows,
                     entries_from=entries)
