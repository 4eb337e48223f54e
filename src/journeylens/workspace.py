"""The Python API façade: ``journeylens.open(...) -> Workspace``.

A :class:`Workspace` ties one store, one workspace name (tenant), the journey
models and the analyses together. It holds no analysis logic itself: it
builds the resolved touch table and hands it to the functions in
:mod:`journeylens.analyses`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa

from journeylens import config, schema
from journeylens.analyses._time import parse_period
from journeylens.analyses.funnel import (
    FunnelPeople,
    FunnelQuery,
    FunnelResult,
    Status,
    cohort_segments,
    funnel,
)
from journeylens.analyses.overview import Overview, overview
from journeylens.analyses.paths import (
    PathsQuery,
    PathsResult,
    Persons,
    Sankey,
    funnel_paths,
    paths,
    restrict_persons,
    sankey,
)
from journeylens.analyses.quarantine import QuarantineReport, quarantine_report
from journeylens.analyses.retention import (
    ChurnQuery,
    ChurnResult,
    LifecycleQuery,
    LifecycleResult,
    RepurchaseQuery,
    RepurchaseResult,
    RetentionQuery,
    RetentionResult,
    churn,
    lifecycle,
    repurchase,
    retention,
)
from journeylens.analyses.stages import StageFunnel, stage_funnel
from journeylens.analyses.timeline import PersonTimeline, person_timeline
from journeylens.analyses.transitions import TransitionMatrix, TransitionsQuery, transitions
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.identity import IdentityGraph, rebuild_identities, resolve_ids, resolve_persons
from journeylens.identity.stitch import cached_touches, refresh_touches
from journeylens.ingest import open_source
from journeylens.journey import (
    JourneyModel,
    TouchpointCatalog,
    assign_stages,
    builtin_models,
    load_catalog,
    load_model,
)
from journeylens.store import Store, open_store

if TYPE_CHECKING:  # the heavy analyses (scipy, scikit-learn, jinja2) load when first used
    from journeylens.analyses.attribution import (
        AttributionComparison,
        AttributionQuery,
        AttributionResult,
    )
    from journeylens.analyses.experiments import ExperimentQuery, ExperimentResult
    from journeylens.analyses.kpis import KpiResult
    from journeylens.analyses.painpoints import MomentsResult, PainPointsQuery, PainPointsResult
    from journeylens.analyses.personas import PersonaResult
    from journeylens.analyses.propensity import PropensityQuery, PropensityResult
    from journeylens.analyses.surveys import SurveyQuery, SurveyResult
    from journeylens.analyses.value import CLVResult, ValueQuery
    from journeylens.journeymap import JourneyMap, MapConfig
    from journeylens.journeymap.compare import MapComparison

ModelRef = str | Path | JourneyModel | None
"""A journey model: built-in key, YAML path, loaded model, or None for the default."""

Progress = Callable[[int, int | None], None]
"""Called with (units done, total units or None) while importing."""


@dataclass(frozen=True)
class ImportReport:
    """Outcome of importing one file."""

    source: str
    target: str
    fmt: str
    accepted: int
    quarantined: int
    duplicates: int
    reasons: Mapping[str, int] = field(default_factory=dict)
    folded: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.accepted + self.quarantined + self.duplicates

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "reasons": dict(self.reasons),
            "source": self.source,
            "target": self.target,
            "format": self.fmt,
            "folded_columns": list(self.folded),
            "seconds": round(self.seconds, 3),
        }

    def to_pandas(self) -> pd.DataFrame:
        rows = [{"outcome": k, "rows": getattr(self, k)} for k in ("accepted", "duplicates", "quarantined")]
        rows += [{"outcome": f"quarantined: {r}", "rows": n} for r, n in self.reasons.items()]
        return pd.DataFrame(rows)


class Workspace:
    """One workspace in one store. Create with :func:`journeylens.open`."""

    def __init__(self, store: Store, name: str = "default", *, catalog: TouchpointCatalog | None = None) -> None:
        self.store = store
        self.name = name
        self.catalog = catalog or load_catalog()
        self._identity_conflicts: list[Any] = []

    # ---------------------------------------------------------------- tables
    def table(self, name: str) -> ir.Table:
        """A canonical table restricted to this workspace."""
        t = self.store.table(name)
        return t.filter(t.workspace == ibis.literal(self.name)) if "workspace" in t.columns else t

    def events(self) -> ir.Table:
        return self.table("events")

    def touches(self, model: str | Path | JourneyModel | None = None) -> ir.Table:
        """Touches (track/page/screen events) with ``person_id``, ``account_id``,
        ``stage`` and ``stage_index`` of ``model`` (default model when None).

        Reads the derived ``touches`` cache while it is fresh, else resolves persons at
        query time; both give the same rows (docs/adr/0002-materialised-touches.md)."""
        t = cached_touches(self.store, self.name)
        if t is None:
            e = self.events()
            e = e.filter(e.type.isin(list(schema.TOUCH_TYPES)))
            t = resolve_persons(e, self.table("identities"))
        return assign_stages(t, self.model(model))

    def refresh_touches(self) -> int:
        """Rebuild the derived ``touches`` cache from events and identities (done by every
        identity rebuild; call it after writing events some other way)."""
        return refresh_touches(self.store, self.name)

    def surveys(self) -> ir.Table:
        """Survey answers with the respondent resolved: ``person_id`` and ``account_id`` added."""
        return resolve_ids(self.table("surveys"), "person", self.table("identities"))

    def people(self) -> ir.Table:
        """One row per person: ``person_id``, ``user_id``, ``account_id``, ``ts`` and ``traits``
        (JSON) of the newest ``people`` row among the person's user ids."""
        p = resolve_ids(self.table("people"), "user_id", self.table("identities"))
        newest = ibis.row_number().over(group_by=p.person_id, order_by=[p.ts.desc(), p.message_id.desc()])
        p = p.mutate(_n=newest)
        return p.filter(p._n == 0).select("person_id", "user_id", "account_id", "ts", "traits")

    def accounts(self) -> ir.Table:
        """One row per account: ``account_id``, ``ts`` and ``traits`` (JSON) of its newest row."""
        a = self.table("accounts")
        newest = ibis.row_number().over(group_by=a.account_id, order_by=[a.ts.desc(), a.message_id.desc()])
        a = a.mutate(_n=newest)
        return a.filter(a._n == 0).select("account_id", "ts", "traits")

    def costs(self) -> ir.Table:
        """Imported costs (spend, impressions, clicks, video views per day, channel, campaign)."""
        return self.table("costs")

    # ---------------------------------------------------------------- models
    def model(self, model: str | Path | JourneyModel | None = None) -> JourneyModel:
        if isinstance(model, JourneyModel):
            return model
        return load_model(model or config.setting("model"))

    def models(self) -> list[JourneyModel]:
        return list(builtin_models().values())

    # ---------------------------------------------------------------- import
    def import_file(
        self,
        target: str,
        path: str | Path,
        *,
        mapping: Mapping[str, str] | None = None,
        fmt: str | None = None,
        tz: str | None = None,
        chunk_rows: int | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import ``path`` into table ``target`` (events|people|accounts|costs|surveys).

        Rows are read and validated chunk by chunk; accepted rows are appended
        atomically at the end (rows whose ``message_id`` exists already count as
        duplicates); rejected rows go to ``quarantine`` with file, line, field
        and reason. Identities are rebuilt after events or people imports.
        """
        started = time.perf_counter()
        received = datetime.now().astimezone()
        source = open_source(
            path, target, workspace=self.name, mapping=dict(mapping or {}), fmt=fmt, tz=tz,
            chunk_rows=chunk_rows or config.setting("chunk_rows"), received_at=received,
        )
        reasons: Counter[str] = Counter()
        quarantined = 0
        total = source.info.total_rows if source.info.fmt == "parquet" else source.info.total_bytes
        with self.store.appender(target) as rows, self.store.appender(
            "quarantine", key=("workspace", "target", "source", "line", "field", "reason")
        ) as bad:
            for chunk in source:
                rows.write(chunk.accepted)
                if chunk.quarantined.num_rows:
                    bad.write(chunk.quarantined)
                    quarantined += chunk.quarantined.num_rows
                    reasons.update(chunk.quarantined.column("reason").to_pylist())
                if progress:
                    progress(chunk.bytes_done, total)
            result = rows.commit()
            bad.commit()
        if target in ("events", "people") and result.inserted:
            self.rebuild_identities()
        return ImportReport(
            source=str(path), target=target, fmt=source.info.fmt, accepted=result.inserted,
            quarantined=quarantined, duplicates=result.duplicates, reasons=dict(reasons.most_common()),
            folded=tuple(source.info.folded), seconds=time.perf_counter() - started,
        )

    def import_events(self, path: str | Path, **kwargs: Any) -> ImportReport:
        return self.import_file("events", path, **kwargs)

    def import_people(self, path: str | Path, **kwargs: Any) -> ImportReport:
        return self.import_file("people", path, **kwargs)

    def import_accounts(self, path: str | Path, **kwargs: Any) -> ImportReport:
        return self.import_file("accounts", path, **kwargs)

    def import_costs(self, path: str | Path, **kwargs: Any) -> ImportReport:
        return self.import_file("costs", path, **kwargs)

    def import_surveys(self, path: str | Path, **kwargs: Any) -> ImportReport:
        return self.import_file("surveys", path, **kwargs)

    def rebuild_identities(self) -> IdentityGraph:
        graph = rebuild_identities(self.store, self.name)
        self._identity_conflicts = graph.conflicts
        return graph

    # ---------------------------------------------------------------- analyses
    def stage_funnel(self, model: str | Path | JourneyModel | None = None, *, unit: str = "person",
                     breakdown: str | None = None, breakdown_from: str = "first_touch",
                     segments: Mapping[str, ir.Table] | None = None, breakdown_limit: int = 25) -> StageFunnel:
        """Persons (or accounts) reaching each stage of ``model``, optionally per breakdown value
        (a column, ``properties.KEY``, a segment, or saved cohorts: ``persona``, ``cohort``,
        ``cohort:NAME``); see :func:`analyses.stages.stage_funnel`."""
        m = self.model(model)
        t = self.touches(m)
        segs = {**cohort_segments(self.table("cohorts"), t, breakdown, unit), **(segments or {})}
        return stage_funnel(t, m, unit=unit, breakdown=breakdown, breakdown_from=breakdown_from, segments=segs,
                            breakdown_limit=breakdown_limit)

    stages = stage_funnel

    def overview(self, model: str | Path | JourneyModel | None = None, *, top: int = 8) -> Overview:
        m = self.model(model)
        return overview(self.touches(m), self.events(), top=top)

    def _cohort_segments(self, touches: ir.Table, unit: str, segments: Mapping[str, ir.Table] | None,
                         *names: str | None) -> dict[str, ir.Table]:
        """Segment tables for the breakdown/adjustment ``names`` that read saved cohorts
        (``persona``, ``cohort``, ``cohort:NAME``), overridden by explicit ``segments``."""
        out: dict[str, ir.Table] = {}
        for name in names:
            out |= cohort_segments(self.table("cohorts"), touches, name, unit)
        return {**out, **(segments or {})}

    def funnel(self, steps: list[Any] | None = None, query: FunnelQuery | None = None, *,
               model: ModelRef = None, segments: Mapping[str, ir.Table] | None = None,
               **params: Any) -> FunnelResult:
        """Funnel over ``steps`` (event names or filters); ``params`` are :class:`FunnelQuery`
        fields such as ``window="7d"``, ``order="strict"`` (docs/funnels.md). A ``breakdown`` of
        ``persona``, ``cohort`` or ``cohort:NAME`` reads the saved cohorts."""
        q = query if query is not None else FunnelQuery(steps=steps, **params)
        t = self.touches(model)
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown)
        return funnel(t, q, segments=segs)

    def paths(self, query: PathsQuery | None = None, *, model: ModelRef = None, persons: Persons | str = None,
              **params: Any) -> PathsResult:
        """Top paths and Sankey flows; ``params`` are :class:`PathsQuery` fields (docs/paths.md).
        ``persons`` is a list of ids, an Ibis table, or ``"cohort:NAME"`` / ``"persona:KEY"``
        (a saved cohort's members)."""
        return paths(self.touches(model), query if query is not None else PathsQuery(**params),
                     persons=self._persons(persons))

    def _persons(self, persons: Persons | str) -> Persons:
        """``cohort:NAME`` / ``persona:KEY`` -> the saved cohort's members; anything else unchanged."""
        if isinstance(persons, str):
            name = persons[len("cohort:"):] if persons.startswith("cohort:") else persons
            if not (persons.startswith("cohort:") or persons.startswith(self.PERSONA_COHORT_PREFIX)):
                raise InvalidParameterError(f"persons '{persons}' is not a saved cohort reference",
                                            hint="write cohort:NAME or persona:KEY, or pass a list of ids")
            return self.cohort(name)
        return persons

    def sankey(self, query: PathsQuery | None = None, *, model: ModelRef = None, persons: Persons | str = None,
               **params: Any) -> Sankey:
        """Sankey flows of all paths per step position (docs/paths.md); ``persons`` as for :meth:`paths`."""
        return sankey(self.touches(model), query if query is not None else PathsQuery(**params),
                      persons=self._persons(persons))

    def transitions(self, query: TransitionsQuery | None = None, *, model: ModelRef = None,
                    persons: Persons | str = None, **params: Any) -> TransitionMatrix:
        """Transition matrix; ``params`` are :class:`TransitionsQuery` fields (docs/paths.md);
        ``persons`` as for :meth:`paths` (ids, a table, ``persona:KEY`` or ``cohort:NAME``)."""
        return transitions(self.touches(model), query if query is not None else TransitionsQuery(**params),
                           persons=self._persons(persons))

    def funnel_paths(self, result: FunnelResult, step: int | str, position: str = "after",
                     query: PathsQuery | None = None, *, model: ModelRef = None) -> PathsResult:
        """Paths before / between / after a funnel step, or of those who dropped off there."""
        return funnel_paths(self.touches(model), result, step, position, query)

    def retention(self, query: RetentionQuery | None = None, *, model: ModelRef = None,
                  segments: Mapping[str, ir.Table] | None = None, **params: Any) -> RetentionResult:
        """Cohort retention; ``params`` are :class:`RetentionQuery` fields (docs/retention.md). A
        ``breakdown`` of ``persona``, ``cohort`` or ``cohort:NAME`` reads the saved cohorts."""
        q = query if query is not None else RetentionQuery(**params)
        t = self.touches(model)
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown)
        return retention(t, q, segments=segs)

    def lifecycle(self, query: LifecycleQuery | None = None, *, model: ModelRef = None,
                  segments: Mapping[str, ir.Table] | None = None, persons: Persons | str = None,
                  **params: Any) -> LifecycleResult:
        """New / returning / resurrecting / dormant units per period (docs/retention.md). A
        ``breakdown`` of ``persona``, ``cohort`` or ``cohort:NAME`` reads the saved cohorts;
        ``persons`` (ids, a table, ``persona:KEY`` or ``cohort:NAME``) keeps only their touches."""

        q = query if query is not None else LifecycleQuery(**params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown)
        return lifecycle(t, q, segments=segs)

    def churn(self, query: ChurnQuery | None = None, *, model: ModelRef = None,
              segments: Mapping[str, ir.Table] | None = None, persons: Persons | str = None,
              **params: Any) -> ChurnResult:
        """Churn per period: units inactive for ``inactive_for`` (docs/retention.md); breakdowns
        over saved cohorts and ``persons`` as for :meth:`lifecycle`."""

        q = query if query is not None else ChurnQuery(**params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown)
        return churn(t, q, segments=segs)

    def repurchase(self, query: RepurchaseQuery | None = None, *, model: ModelRef = None,
                   segments: Mapping[str, ir.Table] | None = None, persons: Persons | str = None,
                   **params: Any) -> RepurchaseResult:
        """Share of purchasers who purchase again (docs/retention.md); breakdowns and ``persons``
        as for :meth:`lifecycle`."""
        q = query if query is not None else RepurchaseQuery(**params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        return repurchase(t, q, segments=self._cohort_segments(t, q.unit, segments, q.breakdown))

    def clv(self, query: ValueQuery | None = None, *, model: ModelRef = None,
            segments: Mapping[str, ir.Table] | None = None, **params: Any) -> CLVResult:
        """RFM, BG/NBD + Gamma-Gamma customer value; ``params`` are :class:`ValueQuery` fields (docs/clv.md)."""
        from journeylens.analyses.value import ValueQuery, clv

        return clv(self.touches(model), query if query is not None else ValueQuery(**params), segments=segments)

    def kpis(self, model: ModelRef = None, *, segments: Mapping[str, ir.Table] | None = None,
             **params: Any) -> KpiResult:
        """Every KPI of the registry per stage, optionally per period and breakdown (docs/kpis.md);
        ``params`` are :class:`~journeylens.analyses.kpis.KpiQuery` fields (by, period, unit, churn_after)."""
        from journeylens.analyses.kpis import kpis

        m = self.model(model)
        return kpis(self.touches(m), model=m, costs=self.costs(), surveys=self.surveys(), segments=segments,
                    **params)

    def attribution(self, method: str = "markov", query: AttributionQuery | None = None, *,
                    model: ModelRef = None, segments: Mapping[str, ir.Table] | None = None,
                    persons: Persons | str = None, **params: Any) -> AttributionResult:
        """Credit for conversions per channel (or touchpoint, campaign) by one method, with costs
        joined to CPA and ROAS; ``params`` are :class:`AttributionQuery` fields (docs/attribution.md).
        A ``breakdown`` of ``persona``, ``cohort`` or ``cohort:NAME`` reads the saved cohorts;
        ``persons`` (ids, a table, ``persona:KEY`` or ``cohort:NAME``) keeps only their journeys."""
        from journeylens.analyses.attribution import AttributionQuery, attribution

        q = query if query is not None else AttributionQuery(method=method, **params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown, q.adjust)
        return attribution(t, q, costs=self.costs(), segments=segs)

    def compare_attribution(self, query: AttributionQuery | None = None, *, model: ModelRef = None,
                            methods: Sequence[str] | None = None, segments: Mapping[str, ir.Table] | None = None,
                            persons: Persons | str = None, **params: Any) -> AttributionComparison:
        """All attribution methods (default: every one) side by side on the same journeys
        (docs/attribution.md); breakdowns and ``persons`` as for :meth:`attribution`."""
        from journeylens.analyses.attribution import METHODS, AttributionQuery, compare_attribution

        q = query if query is not None else AttributionQuery(**params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown, q.adjust)
        return compare_attribution(t, q, methods=methods or METHODS, costs=self.costs(), segments=segs)

    def propensity(self, query: PropensityQuery | None = None, *, model: ModelRef = None,
                   segments: Mapping[str, ir.Table] | None = None, persons: Persons | str = None,
                   **params: Any) -> PropensityResult:
        """Per person: probability to reach a stage (or churn), drivers and the next best action,
        trained on a time split (docs/propensity.md). ``persona="persona"`` (or ``cohort``,
        ``cohort:NAME``) reads the saved cohorts for the per-persona cells and summary; ``persons``
        (ids, a table, ``persona:KEY`` or ``cohort:NAME``) keeps only those persons in the scored
        list (the model is still trained on everyone)."""
        from journeylens.analyses.propensity import PropensityQuery, propensity

        m = self.model(model)
        q = query if query is not None else PropensityQuery(**params)
        t = self.touches(m)
        segs = {**cohort_segments(self.table("cohorts"), t, q.persona, "person"), **(segments or {})}
        return propensity(t, q, model=m, segments=segs, persons=self._persons(persons))

    def survey_report(self, query: SurveyQuery | None = None, *, model: ModelRef = None,
                      segments: Mapping[str, ir.Table] | None = None, **params: Any) -> SurveyResult:
        """Voice of the customer: NPS, CSAT, CES, emotion per stage, comment themes (docs/surveys.md)."""
        from journeylens.analyses.surveys import SurveyQuery, surveys

        q = query if query is not None else SurveyQuery(**params)
        return surveys(self.surveys(), q, model=self.model(model), segments=segments)

    def experiment(self, query: ExperimentQuery | None = None, *, model: ModelRef = None,
                   segments: Mapping[str, ir.Table] | None = None, persons: Persons | str = None,
                   **params: Any) -> ExperimentResult:
        """A/B readout per variant with tests, intervals and the sample-ratio check (docs/experiments.md).
        A ``breakdown`` of ``persona``, ``cohort`` or ``cohort:NAME`` reads the saved cohorts (the
        readout per value); ``persons`` (ids, a table, ``persona:KEY`` or ``cohort:NAME``) keeps only
        their touches."""
        from journeylens.analyses.experiments import ExperimentQuery, experiment

        q = query if query is not None else ExperimentQuery(**params)
        t = restrict_persons(self.touches(model), "person_id", self._persons(persons))
        segs = self._cohort_segments(t, q.unit, segments, q.breakdown)
        return experiment(t, q, people=self.people() if q.unit == "person" else self.accounts(), segments=segs)

    def personas(self, rules: str | Path | None = None, *, k: int | None = None, unit: str = "person",
                 model: ModelRef = None, **params: Any) -> PersonaResult:
        """Discovered (clustering traits and behaviour) or rule-based personas (docs/personas.md)."""
        from journeylens.analyses.personas import personas

        m = self.model(model)
        return personas(self.touches(m), self.people(), self.accounts(), model=m, rules=rules, k=k, unit=unit,
                        **params)

    def save_personas(self, result: PersonaResult) -> dict[str, int]:
        """Save each persona of ``result`` as the cohort ``persona:<key>``, replacing all earlier
        saved personas; returns persona key -> members."""
        cohorts = self.table("cohorts")
        keep = self.store.to_pyarrow(cohorts.filter(~cohorts.name.startswith(self.PERSONA_COHORT_PREFIX)))
        self.store.replace_workspace_rows("cohorts", self.name, keep.cast(schema.COHORTS.arrow_schema()))
        return {p.key: self.save_cohort(self.PERSONA_COHORT_PREFIX + p.key, result.members(p.key),
                                        definition={"persona": p.key, "label": p.label, "method": result.method})
                for p in result.personas}

    def save_cohort(self, name: str, persons: Iterable[str], *, definition: Mapping[str, Any] | None = None) -> int:
        """Save ``persons`` as the named cohort ``name`` (replacing its members); returns the size.

        A cohort can then be used as a breakdown or filter (``ws.cohort(name)``).
        """
        if not name.strip():
            raise InvalidParameterError("a cohort needs a name")
        members = sorted(set(persons))
        cohorts = self.table("cohorts")
        keep = self.store.to_pyarrow(cohorts.filter(cohorts.name != ibis.literal(name)))
        now = datetime.now(UTC)
        new = pa.Table.from_pylist(
            [{"workspace": self.name, "name": name, "person_id": p, "created_at": now,
              "definition": json.dumps(dict(definition or {}), default=str)} for p in members],
            schema=schema.COHORTS.arrow_schema(),
        )
        self.store.replace_workspace_rows("cohorts", self.name, pa.concat_tables([keep.cast(new.schema), new]))
        return len(members)

    def save_funnel_cohort(self, name: str, query: FunnelQuery, step: int | str, status: Status = "dropped", *,
                           breakdown_value: str | None = None, model: ModelRef = None) -> FunnelPeople:
        """Save the units that dropped off at / converted to ``step`` of the funnel ``query``
        (:meth:`FunnelResult.people_at`) as the cohort ``name``; its definition records the funnel."""
        found = self.funnel(query=query, model=model).people_at(step, status, breakdown=breakdown_value)
        definition = {"funnel": query.model_dump(mode="json"), "step": found.step, "step_name": found.step_name,
                      "status": status, "breakdown_value": breakdown_value}
        self.save_cohort(name, found.people, definition=definition)
        return dataclasses.replace(found, cohort=name)

    def segments(self, *names: str | None, unit: str = "person", model: ModelRef = None) -> dict[str, ir.Table]:
        """Segment tables (unit id, ``value``) for breakdown names over saved cohorts — ``persona``,
        ``cohort``, ``cohort:NAME`` — to pass as ``segments=`` to any analysis; other names are
        skipped (they are columns the analysis reads itself)."""
        t = self.touches(model)
        out: dict[str, ir.Table] = {}
        for name in names:
            out.update(cohort_segments(self.table("cohorts"), t, name, unit))
        return out

    def cohort(self, name: str) -> list[str]:
        """Members (person ids) of the saved cohort ``name``."""
        cohorts = self.table("cohorts")
        names = self.store.to_pyarrow(cohorts.select("name").distinct()).column("name").to_pylist()
        if name not in names:
            raise UnknownNameError("cohort", name, names)
        rows = cohorts.filter(cohorts.name == ibis.literal(name)).person_id
        return sorted(self.store.to_pyarrow(rows).to_pylist())

    # ---------------------------------------------------------------- journey map
    MAP_COLUMNS = ("message_id", "ts", "type", "event", "user_id", "account_id", "person_id", "touchpoint", "channel",
                   "utm_source", "utm_medium", "utm_campaign", "revenue", "currency", "stage", "stage_index")
    """Touch columns a journey map without zoom reads (stage funnel, KPIs, pain points, moments)."""
    PERSONA_COHORT_PREFIX = "persona:"
    """Saved personas are cohorts named ``persona:<key>``."""

    def scope_table(self, touches: ir.Table, scope: Mapping[str, str]) -> ir.Table:
        """Restrict a table with ``ts`` and ``person_id`` (touches, survey answers) to a scope:
        ``period`` (see ``parse_period``), ``segment`` (a saved cohort) and/or ``persona``."""
        t = touches
        for key, value in scope.items():
            if key == "period":
                start, end = parse_period(value)
                t = t.filter((t.ts >= ibis.literal(start)) & (t.ts < ibis.literal(end)))
            elif key in ("segment", "persona"):
                name = value if key == "segment" else self.PERSONA_COHORT_PREFIX + value
                if key == "persona":
                    self._check_persona(value)
                members = ibis.memtable({"_member": self.cohort(name)}, schema={"_member": "string"})
                t = t.semi_join(members, t.person_id == members._member)
            else:
                raise InvalidParameterError(f"unknown map scope '{key}'; use period, segment or persona")
        return t

    def _check_persona(self, persona: str) -> None:
        cohorts = self.table("cohorts")
        names = self.store.to_pyarrow(cohorts.select("name").distinct()).column("name").to_pylist()
        known = sorted(n[len(self.PERSONA_COHORT_PREFIX):] for n in names if n.startswith(self.PERSONA_COHORT_PREFIX))
        if persona not in known:
            raise UnknownNameError("persona", persona, known)

    def journey_map(self, model: ModelRef = None, *, persona: str | None = None, segment: str | None = None,
                    period: str | None = None, unit: str = "person", config: str | Path | MapConfig | None = None,
                    zoom: str | None = None, title: str | None = None) -> JourneyMap:
        """The Customer Journey Map of ``model`` for everyone or one scope (docs/journey-map.md).

        ``config`` is a map configuration file (goals, known hurdles, ideas, owners); by
        default the example shipped for a built-in model is used when there is one.
        """
        from journeylens.analyses.kpis import REGISTRY, format_kpi, kpis
        from journeylens.analyses.painpoints import PainPointsQuery, pain_points
        from journeylens.analyses.surveys import SurveyQuery, surveys
        from journeylens.journeymap import (
            EmotionPoint,
            KpiCell,
            MapConfig,
            PainPointNote,
            build_map,
            example_config,
            load_map_config,
        )

        m = self.model(model)
        scope = {k: v for k, v in (("persona", persona), ("segment", segment), ("period", period)) if v}
        if isinstance(config, MapConfig):
            cfg: MapConfig | None = config
        elif config is not None:
            cfg = load_map_config(config)
        else:
            cfg = example_config(m.key)
        staged = self.scope_table(self.touches(m), scope)
        if zoom is None:  # only the columns the map's analyses read: the JSON and URL text stays behind
            staged = staged.select(*[c for c in staged.columns if c in self.MAP_COLUMNS])
        touches = self.store.materialize(staged)
        answers = self.store.materialize(self.scope_table(self.surveys(), scope))
        emotions = None
        if int(answers.count().execute()):
            emotions = {k: EmotionPoint(p.score, p.n, p.lower, p.upper)
                        for k, p in surveys(answers, SurveyQuery(), model=m).emotion_by_stage().items()
                        if p.score is not None}
        pains = pain_points(touches, m, PainPointsQuery(unit=unit), surveys=answers, people=self.people(),
                            accounts=self.accounts())
        per_stage: dict[str, int] = {}
        notes = []
        for p in pains.pain_points:  # ranked: keep the three most severe of each stage
            per_stage[p.stage] = per_stage.get(p.stage, 0) + 1
            if per_stage[p.stage] <= 3:
                notes.append(PainPointNote(
                    stage=p.stage, title=f"{p.subject} ({p.kind.replace('_', ' ')})",
                    evidence=p.evidence.split(" (")[0], severity=p.severity, affected=p.finding.affected,
                    suggestion=p.suggestion))
        k = kpis(touches, model=m, costs=self.costs(), surveys=answers, unit=unit)
        kpi_cells = {s.stage: [KpiCell(v.kpi, REGISTRY[v.kpi].label, v.value, REGISTRY[v.kpi].unit, v.missing,
                                       format_kpi(v)) for v in s.kpis] for s in k.stages}
        return build_map(touches, m, catalog=self.catalog, unit=unit, config=cfg, scope=scope, title=title,
                         zoom=zoom, emotions=emotions, pain_points=notes, kpis=kpi_cells,
                         moments=self._moments_by_stage(touches, unit))

    def _moments_by_stage(self, touches: ir.Table, unit: str, top: int = 3) -> dict[str, list[tuple[str, str]]]:
        """The strongest significant moments of truth (touchpoints raising conversion, p < 0.05),
        each placed in the stage where most of its touches are."""
        from journeylens.analyses.painpoints import moments_of_truth

        moments = [x for x in moments_of_truth(touches, by="touchpoint", unit=unit).moments
                   if x.lift > 1 and x.p_value < 0.05][:top]
        if not moments:
            return {}
        t = touches.filter(touches.touchpoint.isin([x.value for x in moments]) & touches.stage.notnull())
        counts = t.group_by(["touchpoint", "stage"]).aggregate(n=t.count()).to_pyarrow().to_pylist()
        home: dict[str, tuple[int, str]] = {}
        for r in counts:
            if r["n"] > home.get(r["touchpoint"], (0, ""))[0]:
                home[r["touchpoint"]] = (r["n"], r["stage"])
        out: dict[str, list[tuple[str, str]]] = {}
        for x in moments:
            if x.value in home:
                out.setdefault(home[x.value][1], []).append(
                    (x.value, f"moment of truth: conversion ×{x.lift:.2f} when present, p={x.p_value:.1g}"))
        return out

    def pain_points(self, query: PainPointsQuery | None = None, *, model: ModelRef = None,
                    segments: Mapping[str, ir.Table] | None = None, moments: bool = False,
                    **params: Any) -> PainPointsResult:
        """Ranked pain points with evidence, optionally with moments of truth (docs/painpoints.md)."""
        from journeylens.analyses.painpoints import PainPointsQuery, pain_points

        m = self.model(model)
        return pain_points(self.touches(m), m, query if query is not None else PainPointsQuery(**params),
                           surveys=self.surveys(), people=self.people(), accounts=self.accounts(),
                           segments=segments, moments=moments)

    def moments_of_truth(self, *, model: ModelRef = None, **params: Any) -> MomentsResult:
        """Touchpoints whose presence changes conversion or churn most (docs/painpoints.md)."""
        from journeylens.analyses.painpoints import moments_of_truth

        return moments_of_truth(self.touches(model), **params)

    def compare_journey_maps(self, other: Mapping[str, str], model: ModelRef = None, *, alpha: float = 0.05,
                             **scope: Any) -> MapComparison:
        """Map of ``scope`` (keyword arguments of :meth:`journey_map`) beside the same map with
        ``other`` replacing scope entries (e.g. ``{"persona": "researcher"}``); ``{"workspace": W}``
        draws the second map from workspace ``W`` of the same store (e.g. B2B vs B2C)."""
        from journeylens.journeymap.compare import compare_maps

        other = dict(other)
        a = self.journey_map(model, **scope)
        source = Workspace(self.store, other.pop("workspace"), catalog=self.catalog) if "workspace" in other else self
        b_scope = {**{k: v for k, v in scope.items() if k in ("persona", "segment", "period")}, **other}
        rest = {k: v for k, v in scope.items() if k not in ("persona", "segment", "period")}
        b = source.journey_map(model, **b_scope, **rest)
        if source is not self:
            b = replace(b, scope={"workspace": source.name, **b.scope})
            a = replace(a, scope={"workspace": self.name, **a.scope})
        return compare_maps(a, b, alpha=alpha)

    def journey(self, who: str, model: str | Path | JourneyModel | None = None) -> PersonTimeline:
        """The stitched timeline of the person that id ``who`` belongs to."""
        return person_timeline(self.touches(model), self.table("identities"), who)

    def quarantine(self, *, limit: int = 50, target: str | None = None, reason: str | None = None,
                   source: str | None = None) -> QuarantineReport:
        """Quarantined rows (newest first, each with its ``id``) and their reasons; ``reason`` and
        ``source`` filter by substring (see :func:`analyses.quarantine.filter_quarantine`)."""
        return quarantine_report(self.table("quarantine"), limit=limit, target=target, reason=reason, source=source)

    def replay_quarantine(self, *, target: str | None = None, reason: str | None = None,
                          source: str | None = None, fixes: Mapping[str, str] | None = None,
                          mapping: Mapping[str, str] | None = None, tz: str = "UTC") -> Any:
        """Re-validate quarantined rows through their original path and append those that now pass,
        removing exactly them from the quarantine in the same transaction; ``fixes`` maps row ids to
        corrected raw texts (``quarantine export`` → edit → ``replay --file``). Returns a
        :class:`journeylens.ingest.replay.ReplayReport` (semantics: docs/collector.md)."""
        from journeylens.analyses.quarantine import quarantine_rows
        from journeylens.ingest.live import IpMask, Limits
        from journeylens.ingest.replay import replay

        rows = quarantine_rows(self.table("quarantine"), target=target, reason=reason, source=source)
        rows = [{k: v for k, v in r.items() if k != "id"} for r in rows]
        sup = self.table("suppressions")
        hashes = set(self.store.to_pyarrow(sup.select("id_hash")).column("id_hash").to_pylist())
        v4, v6 = int(config.setting("collector_ip_prefix_v4")), int(config.setting("collector_ip_prefix_v6"))
        report = replay(self.store, self.name, rows, fixes=fixes, suppressions=hashes, mapping=mapping, tz=tz,
                        limits=Limits(max_event_bytes=int(config.setting("collector_max_event_bytes"))),
                        ip_mask=None if (v4 >= 32 and v6 >= 128) else IpMask(v4, v6))
        if report.appended.get("events") or report.appended.get("people"):
            self.rebuild_identities()
        return report

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open(url: str | Path | None = None, *, workspace: str | None = None, read_only: bool = False) -> Workspace:
    """Open (creating when missing) the store at ``url`` and return a :class:`Workspace`.

    ``url`` is a DuckDB file path (default ``journeylens.duckdb``; env
    ``JOURNEYLENS_DB``) or ``spark://local[2]?warehouse=DIR`` for the Spark store.
    """
    store = open_store(config.setting("db", url), read_only=read_only)
    return Workspace(store, config.setting("workspace", workspace))
