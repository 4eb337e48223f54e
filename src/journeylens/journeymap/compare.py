"""Two journey maps side by side (persona vs persona, period vs period, B2B vs B2C ...).

Both maps must use the same journey model. A cell pair is marked as *differing* when a
test says so at ``alpha`` (default 0.05):

* behaviour — share of units that reached the stage (reached / all units of the map):
  two-sided two-proportion z-test; also the share that moved on to the next stage;
* touchpoints — the touchpoint mix (touches per touchpoint, the top ones plus "other"):
  chi-square test of homogeneity (scipy ``chi2_contingency``);
* emotion — difference of the two scores with standard errors taken from their 95 %
  confidence intervals (z-test); cells without an interval are not tested;
* pain_points — a data-detected pain point present in one map and not in the other.

KPI, goal, solution and owner cells are shown side by side but not tested (KPI values
carry no sampling variance here; the others are configuration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from journeylens.errors import InvalidParameterError
from journeylens.journeymap.model import ROWS, JourneyMap


@dataclass(frozen=True)
class CellDifference:
    row: str
    stage: str
    test: str
    p_value: float | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "stage": self.stage, "test": self.test, "p_value": self.p_value,
                "summary": self.summary}


@dataclass(frozen=True)
class MapComparison:
    """Map ``a`` and map ``b`` with the cells that differ significantly."""

    a: JourneyMap
    b: JourneyMap
    alpha: float
    differences: tuple[CellDifference, ...] = field(default_factory=tuple)

    @property
    def other_label(self) -> str:
        return self.b.scope_label

    def differs(self, row: str, stage: str) -> str | None:
        """Summary of the difference of a cell pair, None when not significant."""
        return next((d.summary for d in self.differences if d.row == row and d.stage == stage), None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.a.model, "alpha": self.alpha, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "differences": [d.to_dict() for d in self.differences]}

    def to_html(self, path: str | Path | None = None) -> str:
        from journeylens.journeymap.render import render_comparison_html

        html = render_comparison_html(self)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def to_png(self, path: str | Path) -> Path:
        from journeylens.journeymap.render import render_png

        return render_png(self.to_html(), Path(path), width=2200)

    def to_pdf(self, path: str | Path) -> Path:
        from journeylens.journeymap.render import render_pdf

        return render_pdf(self.to_html(), Path(path))


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; None when a group is empty."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return float(2 * stats.norm.sf(abs(z)))


def compare_maps(a: JourneyMap, b: JourneyMap, *, alpha: float = 0.05) -> MapComparison:
    """Test every testable cell pair of ``a`` and ``b`` (see the module docstring)."""
    if a.model != b.model:
        raise InvalidParameterError(f"cannot compare maps of different models ({a.model} and {b.model})")
    if not 0 < alpha < 1:
        raise InvalidParameterError("alpha must be between 0 and 1")
    diffs: list[CellDifference] = []
    for sa, sb in zip(a.stages, b.stages, strict=True):
        key = sa.key
        p = two_proportions(sa.people, a.total_units, sb.people, b.total_units)
        if p is not None and p < alpha:
            diffs.append(CellDifference("behaviour", key, "two-proportion z", p,
                                        f"reached {sa.people / a.total_units:.1%} vs {sb.people / b.total_units:.1%}"
                                        f" (p={p:.2g})"))
        else:
            moved = _moved_on(a, b, key, alpha)
            if moved:
                diffs.append(moved)
        mix = _mix(a, b, key, alpha)
        if mix:
            diffs.append(mix)
        emo = _emotion(a, b, key, alpha)
        if emo:
            diffs.append(emo)
        pains = _pains(a, b, key)
        if pains:
            diffs.append(pains)
    assert all(d.row in ROWS for d in diffs)
    return MapComparison(a, b, alpha, tuple(diffs))


def _moved_on(a: JourneyMap, b: JourneyMap, key: str, alpha: float) -> CellDifference | None:
    ca, cb = a.cell("behaviour", key).content, b.cell("behaviour", key).content
    if not ca or not cb or ca["moved_on"] is None or cb["moved_on"] is None:
        return None
    xa, xb = round(ca["moved_on"] * ca["people"]), round(cb["moved_on"] * cb["people"])
    p = two_proportions(xa, ca["people"], xb, cb["people"])
    if p is None or p >= alpha:
        return None
    return CellDifference("behaviour", key, "two-proportion z", p,
                          f"moved on {ca['moved_on']:.1%} vs {cb['moved_on']:.1%} (p={p:.2g})")


def _mix(a: JourneyMap, b: JourneyMap, key: str, alpha: float) -> CellDifference | None:
    ca, cb = a.cell("touchpoints", key).content, b.cell("touchpoints", key).content
    if not ca or not cb:
        return None
    ta, tb = ca["mix"], cb["mix"]
    names = sorted(set(ta) | set(tb))
    na, nb = sum(ta.values()), sum(tb.values())
    table = [[ta.get(k, 0) for k in names], [tb.get(k, 0) for k in names]]
    if len(names) < 2:
        return None
    p = float(stats.chi2_contingency(table).pvalue)
    if p >= alpha:
        return None
    shifts = sorted(names, key=lambda k: -abs(ta.get(k, 0) / na - tb.get(k, 0) / nb))[:2]
    detail = ", ".join(f"{k} {ta.get(k, 0) / na:.0%} vs {tb.get(k, 0) / nb:.0%}" for k in shifts)
    return CellDifference("touchpoints", key, "chi-square", p, f"mix differs: {detail} (p={p:.2g})")


def _emotion(a: JourneyMap, b: JourneyMap, key: str, alpha: float) -> CellDifference | None:
    ca, cb = a.cell("emotion", key).content, b.cell("emotion", key).content
    if not ca or not cb or None in (ca.get("low"), ca.get("high"), cb.get("low"), cb.get("high")):
        return None
    se = math.hypot((ca["high"] - ca["low"]) / (2 * 1.96), (cb["high"] - cb["low"]) / (2 * 1.96))
    if se == 0:
        return None
    p = float(2 * stats.norm.sf(abs(ca["score"] - cb["score"]) / se))
    if p >= alpha:
        return None
    return CellDifference("emotion", key, "z (from 95% CIs)", p, f"emotion {ca['score']:.2f} vs {cb['score']:.2f} (p={p:.2g})")


def _pains(a: JourneyMap, b: JourneyMap, key: str) -> CellDifference | None:
    def titles(m: JourneyMap) -> set[str]:
        return {p["title"] for p in (m.cell("pain_points", key).content or []) if p["source"] == "data"}

    only_a, only_b = titles(a) - titles(b), titles(b) - titles(a)
    if not only_a and not only_b:
        return None
    parts = ([f"only in {a.scope_label}: {', '.join(sorted(only_a))}"] if only_a else []) + (
        [f"only in {b.scope_label}: {', '.join(sorted(only_b))}"] if only_b else [])
    return CellDifference("pain_points", key, "presence", None, "; ".join(parts))
