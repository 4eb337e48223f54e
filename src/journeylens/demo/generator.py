"""``generate()``: run a scenario and write the data files and the planted truth.

People are simulated in blocks of :data:`BLOCK` (each block has its own seeded
generator, so the output depends only on scenario, people, seed, start and days)
and written in batches of :data:`BATCH_BLOCKS` blocks with a Parquet writer, so
memory stays bounded however many people are generated.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from journeylens import schema
from journeylens.demo import _text
from journeylens.demo import _vocab as V
from journeylens.demo._campaigns import Campaign
from journeylens.demo._log import EventLog, TableContext, finish, to_table
from journeylens.demo._random import block_generator
from journeylens.demo._sim import KINDS, Human
from journeylens.demo._truth import (
    COST_SCALE_PEOPLE,
    PersonFacts,
    Tally,
    TruthSpec,
    cost_rows,
    person_facts,
)
from journeylens.errors import InvalidParameterError

BLOCK = 1000
"""People per seeded block."""
BATCH_BLOCKS = 20
"""Blocks per written batch (20k people, a few hundred thousand rows)."""

SCENARIOS = ("shop", "b2b")
ACCOUNT_COLUMNS = ["account_id", "industry", "employees", "country", "plan"]
_CHANNEL_VOCAB = pa.array(V.CHANNELS, type=pa.string())

FILES = {
    "events": "events.parquet",
    "people": "people.csv",
    "accounts": "accounts.csv",
    "costs": "costs.csv",
    "surveys": "surveys.csv",
    "truth": "truth.json",
    "truth_persons": "truth_persons.parquet",
}


@dataclass(frozen=True)
class DemoResult:
    """What :func:`generate` wrote."""

    scenario: str
    out_dir: Path
    files: dict[str, Path]
    truth: dict[str, Any] = field(repr=False)
    events: int
    people: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


class Simulator(Protocol):
    """What the generator needs from a scenario simulator."""

    log: EventLog
    humans: list[Human]
    urls: list[str]
    min_block: int
    model: str

    def new_batch(self) -> None: ...
    def simulate_block(self, block: int, first_pid: int, first_gidx: int, n: int) -> None: ...
    def referrers(self) -> list[str | None]: ...
    def truth_spec(self) -> TruthSpec: ...
    def campaigns(self) -> tuple[Campaign, ...]: ...
    def people_columns(self) -> list[str]: ...
    def account_of(self) -> np.ndarray | None: ...
    def batch_extra(self, facts: PersonFacts) -> None: ...
    def account_rows(self) -> list[list[object]]: ...
    def truth_extra(self, tally: Tally) -> dict[str, Any]: ...
    def truth_extra_columns(self, facts: PersonFacts) -> dict[str, pa.Array]: ...
    def planted(self) -> dict[str, Any]: ...


def _simulator(scenario: str, seed: int, days: int) -> Simulator:
    if scenario == "shop":
        from journeylens.demo.shop import ShopSim

        return ShopSim(seed, days)
    from journeylens.demo.b2b import B2BSim

    return B2BSim(seed, days)


def _blocks(people: int, min_block: int) -> list[tuple[int, int, int]]:
    """(block number, first global person index, size) of every block."""
    sizes = [BLOCK] * (people // BLOCK)
    rem = people % BLOCK
    if rem:
        if rem < min_block and sizes:
            sizes[-1] += rem
        else:
            sizes.append(rem)
    out = []
    g = 0
    for b, n in enumerate(sizes):
        out.append((b, g, n))
        g += n
    return out


def _persons_schema(b2b: bool) -> pa.Schema:
    ts = schema.EVENTS.column("ts").arrow_type
    fields = [
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("persona", pa.string(), nullable=False),
        pa.field("furthest_stage", pa.string()),
        pa.field("converted", pa.bool_(), nullable=False),
        pa.field("first_purchase_ts", ts),
        pa.field("n_purchases", pa.int64(), nullable=False),
        pa.field("revenue", pa.float64(), nullable=False),
        pa.field("exposed_channels", pa.list_(pa.string())),
        pa.field("anonymous_ids", pa.list_(pa.string())),
        pa.field("user_ids", pa.list_(pa.string())),
    ]
    if b2b:
        fields += [pa.field("account_id", pa.string()), pa.field("account_converted", pa.bool_())]
    return pa.schema(fields)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _iso(t_us: np.ndarray) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(t_us.astype("datetime64[us]"), unit="us").tolist()]


def generate(
    scenario: str = "shop",
    people: int = 5000,
    seed: int = 42,
    out_dir: Path | str = Path("journeylens-demo"),
    start: date = date(2026, 1, 1),
    days: int = 180,
    progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Simulate ``people`` humans of ``scenario`` and write the demo files into ``out_dir``.

    ``progress`` is called with the number of people finished after each block.
    """
    if scenario not in SCENARIOS:
        raise InvalidParameterError(f"unknown demo scenario '{scenario}'; choose one of: shop, b2b")
    min_people = 3 if scenario == "b2b" else 1
    if not _is_int(people) or people < min_people:
        raise InvalidParameterError(f"people must be an integer >= {min_people}")
    if not _is_int(seed) or seed < 0:
        raise InvalidParameterError("seed must be a non-negative integer")
    if not _is_int(days) or days < 1:
        raise InvalidParameterError("days must be a positive integer")
    people, seed, days = int(people), int(seed), int(days)
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    b2b = scenario == "b2b"
    files = {k: out / v for k, v in FILES.items() if b2b or k != "accounts"}

    sim = _simulator(scenario, seed, days)
    spec = sim.truth_spec()
    campaigns = sim.campaigns()
    start_us = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) * 1_000_000
    ctx = TableContext(
        message_prefix=f"{scenario}-{seed}-",
        campaign_source=[c.utm_source for c in campaigns],
        campaign_medium=[c.utm_medium for c in campaigns],
        campaign_name=[c.key for c in campaigns],
        urls=sim.urls,
        referrer_of_touchpoint=sim.referrers(),
    )
    tally = Tally(spec=spec, days=days)
    blocks = _blocks(people, sim.min_block)
    persons_schema = _persons_schema(b2b)
    stage_names = list(spec.stages)

    with pq.ParquetWriter(files["events"], schema.EVENTS.arrow_schema(), compression="zstd") as ev_writer, \
            pq.ParquetWriter(files["truth_persons"], persons_schema, compression="zstd") as tp_writer, \
            open(files["people"], "w", newline="", encoding="utf-8") as people_f, \
            open(files["surveys"], "w", newline="", encoding="utf-8") as surveys_f, \
            open(files.get("accounts", os.devnull), "w", newline="", encoding="utf-8") as accounts_f:
        people_csv = csv.writer(people_f)
        people_csv.writerow(["user_id", *sim.people_columns()])
        surveys_csv = csv.writer(surveys_f)
        surveys_csv.writerow(["person", "ts", "kind", "score", "comment", "touchpoint", "stage"])
        accounts_csv = csv.writer(accounts_f)
        accounts_csv.writerow(ACCOUNT_COLUMNS)
        for i in range(0, len(blocks), BATCH_BLOCKS):
            sim.new_batch()
            pid = 0
            for b, gidx, n in blocks[i:i + BATCH_BLOCKS]:
                sim.simulate_block(b, pid, gidx, n)
                pid += n
                if progress is not None:
                    progress(n)
            log = sim.log
            cols = finish(log, start_us)
            ev_writer.write_table(to_table(log, cols, ctx, first_message=tally.rows))
            facts = person_facts(spec, log, cols, sim.humans, sim.account_of())
            tally.add(log, cols, sim.humans, facts, start_us)
            sim.batch_extra(facts)
            accounts_csv.writerows(sim.account_rows())
            tp_writer.write_table(_persons_table(sim, facts, spec, persons_schema, b2b))
            _write_people(people_csv, sim, facts, b2b)
            _write_surveys(surveys_csv, log, start_us, stage_names)
            del log, cols, facts

    gen = block_generator(seed, scenario, 0, stream=1)
    rows, costs_realized = cost_rows(campaigns, tally, start.toordinal(), gen, people)
    with open(files["costs"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["date", "channel", "campaign", "spend", "impressions", "clicks", "video_views", "currency"])
        for r in rows:
            w.writerow(["" if v is None else v for v in r])

    text = json.dumps(_truth(scenario, seed, people, start, days, sim, tally, costs_realized),
                      indent=2, ensure_ascii=False)
    files["truth"].write_text(text + "\n", encoding="utf-8")
    truth = json.loads(text)  # exactly what the file holds (tuples -> lists, keys -> strings)
    return DemoResult(scenario=scenario, out_dir=out, files=files, truth=truth, events=tally.rows,
                      people=people, seconds=time.perf_counter() - began)


def _persons_table(sim: Simulator, facts: PersonFacts, spec: TruthSpec, sch: pa.Schema,
                   b2b: bool) -> pa.Table:
    humans = sim.humans
    stages = spec.stages
    keys = spec.persona_keys
    big = np.iinfo(np.int64).max
    ids = pa.array(sim.log.ids, type=pa.large_string()).cast(pa.string())
    conv_ts = np.where(facts.first_conv_us == big, 0, facts.first_conv_us)
    data: dict[str, pa.Array] = {
        "person_id": facts.root,
        "persona": pa.array([keys[h.persona] for h in humans], type=pa.string()),
        "furthest_stage": pa.array([stages[f] if f >= 0 else None for f in facts.furthest.tolist()],
                                   type=pa.string()),
        "converted": pa.array(facts.converted, type=pa.bool_()),
        "first_purchase_ts": pa.array(conv_ts, type=pa.int64(), mask=~facts.converted).cast(
            sch.field("first_purchase_ts").type),
        "n_purchases": pa.array(facts.n_purchases.astype(np.int64), type=pa.int64()),
        "revenue": pa.array(np.round(facts.revenue, 2), type=pa.float64()),
        "exposed_channels": facts.exposed.to_arrow(_CHANNEL_VOCAB),
        "anonymous_ids": facts.anonymous_ids.to_arrow(ids),
        "user_ids": facts.user_ids.to_arrow(ids),
    }
    if b2b:
        data.update(sim.truth_extra_columns(facts))
    return pa.Table.from_arrays([data[f.name] for f in sch], schema=sch)


def _write_people(w: Any, sim: Simulator, facts: PersonFacts, b2b: bool) -> None:
    cols = sim.people_columns()
    if b2b:
        cols = cols[1:]  # account_id comes first and is written from the person's account
    root = facts.root.to_pylist()
    identified = facts.identified.tolist()
    for i, h in enumerate(sim.humans):
        if not identified[i] or h.traits is None:
            continue
        vals: list[object] = []
        if b2b:
            vals.append(sim.log.ids[h.account])
        for c in cols:
            v = h.traits.get(c)
            vals.append(";".join(str(x) for x in v) if isinstance(v, list) else v)
        w.writerow([root[i], *vals])


def _write_surveys(w: Any, log: EventLog, start_us: int, stages: list[str]) -> None:
    if not log.surveys:
        return
    t_us = np.rint(np.array([s[0] for s in log.surveys]) * 1e6).astype(np.int64) + start_us
    ts = _iso(t_us)
    ids = log.ids
    for row, t in zip(log.surveys, ts, strict=True):
        _t, person, kind, score, comment, tp, stage, *_ = row
        w.writerow([ids[person], t, KINDS[kind], int(score), comment or "",
                    V.TOUCHPOINTS[tp] if tp >= 0 else "", stages[stage]])


def _truth(scenario: str, seed: int, people: int, start: date, days: int, sim: Simulator,
           tally: Tally, costs_realized: dict[str, object]) -> dict[str, Any]:
    spec = sim.truth_spec()
    planted = sim.planted()
    stages = tally.stages_dict()
    extra = sim.truth_extra(tally)
    if "account_stages" in extra:  # b2b: rates are planted per account
        for s, d in extra.pop("account_stages").items():
            stages[s]["accounts"] = d["accounts"]
            stages[s]["accounts_all"] = d["accounts_all"]
            stages[s]["planted_rate"] = d["planted_rate"]
            stages[s]["realized_rate_accounts"] = d["realized_rate"]
    personas: dict[str, Any] = {}
    for k, p in planted["personas"].items():
        c = tally.persona[k]
        humans = c["humans"]
        personas[k] = {
            "share": p["share"],
            "description": p["description"],
            "planted": {kk: vv for kk, vv in p.items() if kk not in ("share", "description")},
            "realized": {
                "humans": humans,
                "share": round(humans / tally.humans, 6) if tally.humans else 0.0,
                "identified": c["identified"],
                "reached_decision": c["reached_decision"],
                "converted": c["converted"],
                "revenue_events": c["purchases"],
                "revenue": round(tally.persona_revenue[k], 2),
                "events_per_human": round(c["events"] / humans, 4) if humans else 0.0,
                "furthest_stage": {s: tally.persona_furthest[k][s] for s in spec.stages},
            },
        }
    effects: dict[str, float] = planted["channel_effects"]
    ranking = sorted(effects, key=lambda ch: -effects[ch])
    channel_realized = {}
    for ch in ranking:
        cc = tally.channel[ch]
        n = cc["exposed_at_decision"]
        channel_realized[ch] = {"exposed_at_decision": n, "converted": cc["converted"],
                                "conversion_rate": round(cc["converted"] / n, 6) if n else None}
    pain_cfg = planted["pain_point"]
    pain_realized = {}
    for k in spec.persona_keys:
        pc = tally.pain[k]
        pain_realized[k] = {"events": pc["events"], "abandoned": pc["abandoned"],
                            "rate": round(pc["abandoned"] / pc["events"], 6) if pc["events"] else None}
    identity = dict(tally.identity)
    identity.update(planted["identity"])
    identity["humans"] = tally.humans
    identity["persons_after_stitching"] = tally.humans_with_rows
    counts: dict[str, Any] = {
        "humans": tally.humans,
        "humans_with_events": tally.humans_with_rows,
        "events": tally.rows,
        "events_by_type": dict(sorted(tally.by_type.items())),
        "events_by_name": dict(sorted(tally.by_name.items())),
        "conversions": tally.counts["conversions"],
        "revenue_events": tally.counts["revenue_events"],
        "revenue": round(tally.revenue, 2),
        "support_tickets": tally.by_name.get("support_ticket", 0),
        "referrals_sent": tally.by_name.get("referral_sent", 0),
        "referred_humans": tally.counts["referred_humans"],
        "referred_humans_converted": tally.counts["referred_humans_converted"],
        "referral_visits": tally.counts["referral_visits"],
        "qr_scans": tally.by_name.get("qr_scan", 0),
        "tv_visits": tally.counts["tv_visits"],
        "store_visits": tally.by_name.get("store_visit", 0),
        "trade_fair_visits": tally.by_name.get("trade_fair_visit", 0),
        "offline_touches": tally.counts["offline_touches"],
        "anonymous_visits": tally.counts["anonymous_visits"],
        "anonymous_visits_later_identified": tally.counts["anonymous_visits_later_identified"],
        "surveys": tally.counts["surveys"],
    }
    counts.update(extra.pop("counts", {}))
    if "channel_realized" in extra:
        channel_realized = extra.pop("channel_realized")
    campaigns = sim.campaigns()
    planted_channels: dict[str, dict[str, float]] = {}
    for ch in dict.fromkeys(c.channel for c in campaigns if c.kind == "online"):
        cs = [c for c in campaigns if c.channel == ch and c.kind == "online"]
        wsum = sum(c.weight for c in cs)
        planted_channels[ch] = {"cpc": round(sum(c.cpc * c.weight for c in cs) / wsum, 4),
                                "ctr": round(sum(c.ctr * c.weight for c in cs) / wsum, 6)}
    truth: dict[str, Any] = {
        "scenario": scenario,
        "seed": seed,
        "people": people,
        "start": start.isoformat(),
        "days": days,
        "events": tally.rows,
        "model": sim.model,
        "stages": stages,
        "personas": personas,
        "channel_effects": {
            "model": planted["effect_model"],
            "effects": effects,
            "ranking": ranking,
            "base_logit": {k: p["base_logit"] for k, p in planted["personas"].items() if "base_logit" in p}
            or planted.get("base_logit", {}),
            "realized": channel_realized,
        },
        "pain_point": {**pain_cfg, "realized": pain_realized},
        "surveys": {
            "planted": planted["surveys"],
            "realized": tally.surveys_dict(),
            "count": tally.counts["surveys"],
            "themes": list(_text.THEMES),
        },
        "costs": {
            "currency": "EUR",
            "fixed_cost_scale": people / COST_SCALE_PEOPLE,
            "planted_campaigns": {c.key: c.to_dict() for c in campaigns},
            "planted_channels": planted_channels,
            "realized": costs_realized,
        },
        "identity": identity,
        "counts": counts,
    }
    truth.update(extra)
    return truth
