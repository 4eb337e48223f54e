"""Benchmark: Markov removal effects (order 1-3) and Shapley values on 100k and 1M journeys.

Journeys are synthetic (numpy, seeded): 12 channels with skewed popularity, 1-12 touches
(mean about 3), conversion drawn from a logistic model of the distinct channels touched.
journeylens starts from the flat touch arrays (journey id, channel per touch as a dictionary-
encoded Categorical) — what the extraction returns — timed once from the aggregated path table (the reference's input) and once including the
aggregation of identical paths; the reference,
``ChannelAttribution.markov_model`` (simulation), gets the already aggregated path table, its
native input (aggregation not timed). Every operation runs ``--repeat`` times (default 3) and the
fastest run is reported (the 1e6-simulation reference runs once). Reference runs: its defaults (1e5 simulations, 10 folds),
and 1e6 simulations in one fold with no step limit (the setting our oracle test uses).
The "max |Δ RE|" column is the largest absolute difference of a removal effect to ours.

    python benchmarks/bench_attribution.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.common import Measurement, best_of, report
from journeylens.analyses.attribution import Journeys, PathCounts, markov_fit, shapley_values

CHANNELS = ("direct", "display", "email", "influencer", "organic_search", "paid_search", "paid_social", "print",
            "referral", "social", "tv_radio", "partner")
EFFECTS = np.array([0.7, 0.0, 1.5, 1.0, 1.15, 1.3, 0.2, 0.85, 1.8, 0.4, 0.55, 0.9])


def synthetic_journeys(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(journey id per touch, channel code per touch, converted per touch), grouped by journey."""
    rng = np.random.default_rng(seed)
    length = np.minimum(rng.geometric(0.35, n), 12)
    journey = np.repeat(np.arange(n), length)
    popularity = rng.dirichlet(np.full(len(CHANNELS), 1.5))
    code = rng.choice(len(CHANNELS), size=len(journey), p=popularity)
    seen = np.zeros((n, len(CHANNELS)), bool)
    seen[journey, code] = True
    logit = -3.0 + seen.astype(float) @ EFFECTS
    converted = rng.random(n) < 1 / (1 + np.exp(-logit))
    return journey, code, converted[journey]


def reference_frame(pc: PathCounts) -> pd.DataFrame:
    return pd.DataFrame({"path": [" > ".join(pc.values[c] for c in p) for p in pc.paths],
                         "conv": pc.conversions, "null": pc.nulls})


def run_reference(df: pd.DataFrame, order: int, **kwargs: object) -> pd.Series:
    import ChannelAttribution

    with contextlib.redirect_stdout(io.StringIO()):
        res = ChannelAttribution.markov_model(df, "path", "conv", var_null="null", order=order, out_more=True,
                                              verbose=False, flg_pro=False, **kwargs)
    re: pd.Series = res["removal_effects"].set_index("channel_name")["removal_effect"]
    return re


def bench_size(n: int, orders: list[int], repeat: int, rows: list[Measurement], notes: list[str]) -> None:
    """Measure ours and the reference on ``n`` synthetic journeys; append rows and notes."""
    journey, code, converted = synthetic_journeys(n)
    # the extraction hands the level values over dictionary-encoded (journey_arrays): a Categorical
    names = pd.Categorical.from_codes(code, categories=list(CHANNELS))
    r = repeat

    def aggregate() -> PathCounts:
        return Journeys.from_arrays(journey, names, converted, collapse_repeats=True).paths()

    def fit_raw(order: int) -> object:
        return markov_fit(aggregate(), order)

    m, pc = best_of(r, f"journeylens aggregate paths ({n:,})", n, aggregate)
    rows.append(m)
    df = reference_frame(pc)
    notes.append(f"{n:,} journeys: {len(pc.paths):,} distinct paths, {int(pc.conversions.sum()):,} conversions")
    for order in orders:
        ref_default = f"channelattribution markov order {order} defaults ({n:,})"
        m, fit = best_of(r, f"journeylens markov order {order} (exact, same path table) ({n:,})", n,
                         partial(markov_fit, pc, order), reference=ref_default)
        rows.append(m)
        m, _ = best_of(r, f"journeylens markov order {order} (exact, from raw journeys) ({n:,})", n,
                       partial(fit_raw, order), reference=ref_default)
        rows.append(m)
        ours = pd.Series(fit.removal_effects, index=list(pc.values))
        r1, re1 = best_of(r, ref_default, n, partial(run_reference, df, order))
        rows.append(r1)
        ref_precise = f"channelattribution markov order {order} 1e6 sims ({n:,})"
        r2, re2 = best_of(1, ref_precise, n,
                          partial(run_reference, df, order, nsim_start=1e6, nfold=1, max_step=10_000))
        rows.append(r2)
        d1 = float((re1.reindex(ours.index) - ours).abs().max())
        d2 = float((re2.reindex(ours.index) - ours).abs().max())
        notes.append(f"  order {order}: {fit.states:,} states; max |Δ removal effect| vs reference "
                     f"defaults {d1:.4f}, 1e6 sims {d2:.4f}")
    m, _ = best_of(r, f"journeylens shapley exact, 12 channels ({n:,})", n, lambda: shapley_values(pc),
                   reference=f"channelattribution markov order 1 defaults ({n:,})")
    rows.append(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=3, help="runs per operation; the fastest is reported")
    args = ap.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):
        import ChannelAttribution  # noqa: F401  (prints a banner on import)
    rows: list[Measurement] = []
    notes: list[str] = []
    for n in args.sizes:
        bench_size(n, args.orders, args.repeat, rows, notes)
    report(rows, "Attribution benchmark — synthetic journeys (12 channels)", unit="journeys")
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
