"""Attribution against the demo's planted channel effects (issue 4): the raw credit, the credit per
exposed journey and the persona-adjusted (stratified, standardised) effect, for Markov and
Shapley; personas from the truth and discovered by ``ws.personas()``. Plus the fast path
aggregation against a plain-Python oracle."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import journeylens
from journeylens.analyses._attribution_paths import group_paths, path_keys
from journeylens.analyses.attribution import (
    AttributionQuery,
    Journeys,
    attribution,
    compare_attribution,
)
from journeylens.analyses.attribution_adjust import AdjustedAttributionResult, compare_adjusted
from journeylens.errors import InvalidParameterError, UnknownNameError

# The planted estimand is conditional on reaching decision: journeys of visits over the whole
# 180-day window, null journeys only of persons who put something in the cart.
BASE = {"lookback": "180d", "touches": "event=visit", "eligible": "add_to_cart"}


@pytest.fixture(scope="module")
def shop20k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """Shop demo, 20,000 people, seed 11, imported into DuckDB (~20 s)."""
    from journeylens.demo import generate

    folder = tmp_path_factory.mktemp("attribution_recovery")
    res = generate(scenario="shop", people=20_000, seed=11, out_dir=folder / "data")
    db = folder / "demo.duckdb"
    with journeylens.open(db) as ws:
        for target in ("events", "people", "costs"):
            ws.import_file(target, res.files[target])
    return db, res.truth, pd.read_parquet(res.files["truth_persons"])


def _rho(truth: dict[str, Any], scores: dict[str, float]) -> float:
    effects = truth["channel_effects"]["effects"]
    channels = sorted(effects)
    return float(spearmanr([effects[c] for c in channels], [scores[c] for c in channels])[0])


def _rhos(db: Path, truth: dict[str, Any]) -> dict[tuple[str, int, str], float]:
    """(method, order, variant) -> Spearman rho with the planted effects."""
    out: dict[tuple[str, int, str], float] = {}
    with journeylens.open(db) as ws:
        segments = ws.segments("persona")
        for order in (1, 3):
            methods = ["markov", "shapley"] if order == 1 else ["markov"]
            raw = compare_attribution(ws.touches(), AttributionQuery(**BASE, order=order), methods=methods)
            adj = compare_attribution(ws.touches(), AttributionQuery(**BASE, order=order, adjust="persona"),
                                      methods=methods, segments=segments)
            for m in methods:
                rows = raw.result(m).channels
                out[m, order, "raw"] = _rho(truth, {c.channel: c.conversions for c in rows})
                out[m, order, "per_exposure"] = _rho(truth, {c.channel: c.conversions / c.journeys for c in rows})
                res = adj.result(m)
                assert isinstance(res, AdjustedAttributionResult)
                out[m, order, "adjusted"] = _rho(truth, res.effect())
    return out


def test_rankings_recover_planted_effects_truth_personas(shop20k: tuple[Path, dict[str, Any], pd.DataFrame],
                                                         tmp_path: Path) -> None:
    """Reached (docs/attribution.md, "Recovering planted effects"): Markov order 3 per exposed
    journey 0.93, persona-adjusted 0.92; Shapley 0.54 raw, 0.55 per exposure, 0.64 adjusted;
    Markov order 1 raw -0.26, per exposure 0.47, adjusted 0.46."""
    db, truth, persons = shop20k
    copy = tmp_path / "truth.duckdb"
    shutil.copy(db, copy)
    with journeylens.open(copy) as ws:
        for persona in sorted(persons.persona.unique()):
            ws.save_cohort(f"persona:{persona}", persons[persons.persona == persona].person_id)
    r = _rhos(copy, truth)
    assert r["markov", 3, "adjusted"] >= 0.85
    assert r["markov", 3, "per_exposure"] >= 0.85
    assert r["shapley", 1, "adjusted"] >= 0.58
    assert r["shapley", 1, "adjusted"] > r["shapley", 1, "raw"]
    assert r["markov", 1, "per_exposure"] > r["markov", 1, "raw"]
    assert r["markov", 1, "raw"] < 0.2 and r["markov", 3, "raw"] < 0.2  # raw Markov credit follows volume


def test_rankings_recover_planted_effects_discovered_personas(
        shop20k: tuple[Path, dict[str, Any], pd.DataFrame], tmp_path: Path) -> None:
    """Discovered personas (clustering; they do not know the planted ones): Markov order 3
    adjusted 0.93, Shapley adjusted 0.58."""
    db, truth, _ = shop20k
    copy = tmp_path / "discovered.duckdb"
    shutil.copy(db, copy)
    with journeylens.open(copy) as ws:
        saved = ws.save_personas(ws.personas())
    assert len(saved) >= 2
    r = _rhos(copy, truth)
    assert r["markov", 3, "adjusted"] >= 0.85
    assert r["shapley", 1, "adjusted"] >= 0.5


def test_adjusted_pools_strata(shop20k: tuple[Path, dict[str, Any], pd.DataFrame], tmp_path: Path) -> None:
    """Pooling: credit sums over strata to the unadjusted totals; with a single stratum the effect
    is conversions per exposed journey of the plain result; effects are the journey-weighted
    mean of the strata's per-exposure credit."""
    db, _, persons = shop20k
    copy = tmp_path / "pool.duckdb"
    shutil.copy(db, copy)
    with journeylens.open(copy) as ws:
        ws.save_cohort("persona:everyone", persons.person_id)
        one = ws.segments("persona")
        q = AttributionQuery(**BASE, method="linear")
        plain = attribution(ws.touches(), q)
        single = attribution(ws.touches(), AttributionQuery(**BASE, method="linear", adjust="persona"),
                             segments=one)
        with pytest.raises(UnknownNameError, match="adjustment segment"):
            attribution(ws.touches(), AttributionQuery(**BASE, adjust="colour"), segments=one)
        with pytest.raises(InvalidParameterError, match="breakdown"):
            compare_adjusted(ws.touches(), AttributionQuery(**BASE, adjust="persona", breakdown="persona"),
                             segments=one)
    assert isinstance(single, AdjustedAttributionResult)
    assert (single.conversions, single.journeys) == (plain.conversions, plain.journeys)
    by = {c.channel: c for c in plain.channels}
    assert single.effect() == pytest.approx({k: c.conversions / c.journeys for k, c in by.items()})
    assert {c.channel: c.conversions for c in single.channels} == pytest.approx(plain.credit())
    d = single.to_dict()
    assert d["adjust"]["by"] == "persona" and all("effect" in c for c in d["channels"])
    assert "effect" in single.to_pandas().columns


def test_adjusted_effect_is_the_weighted_mean_of_strata(shop20k: tuple[Path, dict[str, Any], pd.DataFrame],
                                                        tmp_path: Path) -> None:
    db, _, persons = shop20k
    copy = tmp_path / "weights.duckdb"
    shutil.copy(db, copy)
    with journeylens.open(copy) as ws:
        for persona in sorted(persons.persona.unique()):
            ws.save_cohort(f"persona:{persona}", persons[persons.persona == persona].person_id)
        segs = ws.segments("persona")
        res = attribution(ws.touches(), AttributionQuery(**BASE, method="shapley", adjust="persona"), segments=segs)
        # independently: each persona's own plain attribution on its persons' touches
        t = ws.touches()
        per = {}
        for persona in sorted(persons.persona.unique()):
            ids = list(persons[persons.persona == persona].person_id)
            per[persona] = attribution(t.filter(t.person_id.isin(ids)), AttributionQuery(**BASE, method="shapley"))
    assert isinstance(res, AdjustedAttributionResult)
    assert sorted(s.value for s in res.strata) == sorted(per)
    assert res.conversions == sum(r.conversions for r in per.values())
    num: dict[str, float] = defaultdict(float)
    den: dict[str, float] = defaultdict(float)
    for r in per.values():
        for c in r.channels:
            if c.journeys:
                num[c.channel] += r.journeys * c.conversions / c.journeys
                den[c.channel] += r.journeys
    assert res.effect() == pytest.approx({k: num[k] / den[k] for k in num}, rel=1e-9)


# ------------------------------------------------------------------ fast path aggregation
def _oracle_paths(journey: np.ndarray, code: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    paths: dict[int, list[int]] = defaultdict(list)
    for j, c in zip(journey.tolist(), code.tolist(), strict=True):
        paths[j].append(c)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for j in sorted(paths):
        groups[tuple(paths[j])].append(j)
    return groups


@pytest.mark.parametrize(("n_values", "max_len"), [(3, 4), (12, 12), (40, 30)])  # the last: too wide for a key
def test_group_paths_equals_python_grouping(n_values: int, max_len: int) -> None:
    rng = np.random.default_rng(n_values)
    length = rng.integers(1, max_len + 1, 3000)
    journey = np.repeat(np.arange(len(length)), length)
    code = rng.integers(0, n_values, len(journey)).astype(np.int32)
    inverse, first, mat = group_paths(journey, code, n_values, len(length))
    want = _oracle_paths(journey, code)
    assert len(first) == len(want) == len(mat)
    got: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for j, g in enumerate(inverse.tolist()):
        row = mat[g]
        got[tuple(int(x) - 1 for x in row if x > 0)].append(j)
    assert got == want
    assert all(inverse[f] == g for g, f in enumerate(first))
    assert (path_keys(journey, code, n_values, len(length)) is None) == (max_len * np.log2(n_values + 1) >= 63)


def test_paths_counts_from_flat_arrays() -> None:
    rng = np.random.default_rng(5)
    length = rng.integers(1, 6, 2000)
    journey = np.repeat(np.arange(len(length)), length)
    names = np.array(["a", "b", "c", "d"], dtype=object)[rng.integers(0, 4, len(journey))]
    conv = rng.random(len(length)) < 0.3
    rev = np.round(rng.random(len(length)) * 100, 2)
    j = Journeys.from_arrays(journey, names, conv[journey], rev[journey], collapse_repeats=True)
    pc = j.paths()
    want: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for path, jj in _oracle_paths(j.journey, j.code).items():
        for k in jj:
            w = want[path]
            w[0] += float(j.converted[k])
            w[1] += float(not j.converted[k])
            w[2] += float(j.revenue[k]) if j.converted[k] else 0.0
    got = {p: [c, m, r] for p, c, m, r in zip(pc.paths, pc.conversions, pc.nulls, pc.revenue, strict=True)}
    assert got.keys() == want.keys()
    for p, w in want.items():
        assert got[p] == pytest.approx(w)
