"""Voice of the customer: formulas against closed forms, the comment lexicon against the demo's
templates, and per-stage scores, emotion, themes and polarity against the demo's planted truth."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest
from scipy import stats
from typer.testing import CliRunner

from journeylens import schema
from journeylens.analyses.surveys import (
    SurveyQuery,
    analyze_comment,
    ces,
    csat,
    face,
    nps,
    nps_from_counts,
    surveys,
)
from journeylens.demo._text import COMMENTS
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.helpers import T0


# ------------------------------------------------------------------ formulas
def test_nps_counts_and_trinomial_interval() -> None:
    scores = [10, 9, 9, 8, 7, 6, 3, 0, 10, 5]  # P=4, passives=2, D=4
    r = nps(scores)
    assert (r.promoters, r.passives, r.detractors, r.n) == (4, 2, 4, 10)
    assert r.value == pytest.approx(0.0)
    # independent: variance of the mean of +1/0/-1 codes (population form) / n
    codes = [1 if s >= 9 else -1 if s <= 6 else 0 for s in scores]
    mean = sum(codes) / len(codes)
    var = sum((c - mean) ** 2 for c in codes) / len(codes)
    half = 1.959963984540054 * 100 * math.sqrt(var / len(codes))
    assert r.lower == pytest.approx(-half) and r.upper == pytest.approx(half)
    assert nps_from_counts(0, 0, 0).value is None
    assert nps_from_counts(5, 0, 0).value == pytest.approx(100.0)
    assert nps_from_counts(5, 0, 0).upper == pytest.approx(100.0)


def test_csat_wilson_and_ces_t_interval() -> None:
    scores = [5, 4, 4, 3, 2, 5, 1, 4]
    r = csat(scores)
    assert (r.satisfied, r.n) == (5, 8) and r.value == pytest.approx(5 / 8)
    # Wilson from its textbook form: roots of (p - p̂)² n = z² p (1 - p)
    z, n, ph = 1.959963984540054, 8, 5 / 8
    a, b, c = n + z * z, -(2 * n * ph + z * z), n * ph * ph
    roots = sorted([(-b - math.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)])
    assert (r.lower, r.upper) == pytest.approx(roots)
    e = ces([7, 6, 5, 5, 3, 6])
    lo, hi = stats.t.interval(0.95, 5, loc=stats.tmean([7, 6, 5, 5, 3, 6]), scale=stats.sem([7, 6, 5, 5, 3, 6]))
    assert e.value == pytest.approx(32 / 6) and (e.lower, e.upper) == pytest.approx((lo, hi))
    assert face(0.2) == "😞" and face(0.9) == "😀" and face(None) == "·"


# ------------------------------------------------------------------ lexicon
def test_lexicon_reads_every_demo_template() -> None:
    """Every template of the demo generator (7 themes × 2 languages × 2 polarities × 3)."""
    wrong = []
    for theme, langs in COMMENTS.items():
        for lang, pols in langs.items():
            for pol, texts in pols.items():
                for text in texts:
                    a = analyze_comment(text)
                    if (a.theme, a.polarity, a.language) != (theme, pol, lang):
                        wrong.append((text, a))
    assert wrong == []


@pytest.mark.parametrize(("text", "theme", "polarity"), [
    ("Der Versand war nicht schnell.", "shipping_costs", "negative"),  # negator before
    ("Die Verpackung entspricht nicht der Beschreibung", "product_quality", "negative"),  # negator after (de)
    ("The checkout was not bad at all", "usability", "positive"),  # double negative
    ("Hotline nicht erreichbar", "customer_service", "negative"),  # a bare negator is a complaint
    ("Leider zu lange gewartet, aber die Lieferung war pünktlich und gut", "delivery_speed", "negative"),  # -1-2+1+1
    ("Lorem ipsum dolor", "other", "neutral"),
    ("Too expensive.", "price", "negative"),
    ("Fast shipping!", "delivery_speed", "positive"),  # the specific phrase beats "shipping"
])
def test_lexicon_negation_and_phrases(text: str, theme: str, polarity: str) -> None:
    a = analyze_comment(text)
    assert (a.theme, a.polarity) == (theme, polarity), a


# ------------------------------------------------------------------ demo truth
def _check_against_truth(result: Any, truth: dict[str, Any]) -> dict[str, float]:
    realized = truth["surveys"]["realized"]
    emotion = result.emotion_by_stage()
    assert set(emotion) == set(realized)
    theme_hits = theme_total = pol_hits = 0
    for stage, tr in realized.items():
        p = emotion[stage]
        assert p.n == tr["count"]
        assert p.score == pytest.approx(tr["mean_normalized"], abs=1e-4)
        assert p.lower is not None and p.upper is not None and p.lower < p.score < p.upper
        assert p.comments == tr["comments"]
        row = next(r for r in result.rows if r.group == (stage,))
        for kind, k in tr["kinds"].items():
            assert row.kinds[kind].n == k["count"]
            assert row.kinds[kind].value == pytest.approx(k["mean"], abs=1e-4)
        mine = {t.theme: t.comments for t in result.themes_of(stage)}
        theme_hits += sum(min(mine.get(th, 0), n) for th, n in tr["themes"].items())
        theme_total += tr["comments"]
        pos = sum(t.positive for t in result.themes_of(stage))
        neg = sum(t.negative for t in result.themes_of(stage))
        pol_hits += min(pos, tr["polarity"].get("positive", 0)) + min(neg, tr["polarity"].get("negative", 0))
    scores = {s: p.score for s, p in emotion.items()}
    assert min(scores, key=lambda s: scores[s] or 0) == "decision"
    assert max(scores, key=lambda s: scores[s] or 0) == "advocacy"
    assert result.overall.answers == truth["surveys"]["count"] and result.ignored == 0
    langs: dict[str, int] = {}
    for tr in realized.values():
        for lang, n in tr["languages"].items():
            langs[lang] = langs.get(lang, 0) + n
    lang_hits = sum(min(result.languages.get(k, 0), n) for k, n in langs.items())
    return {"themes": theme_hits / theme_total, "polarity": pol_hits / theme_total,
            "languages": lang_hits / theme_total}


@pytest.mark.parametrize("demo", ["demo_shop", "demo_b2b"])
def test_demo_matches_planted_truth(demo: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(demo)
    with data.open() as ws:
        result = surveys(ws.surveys(), SurveyQuery(by="stage"), model=ws.model(data.truth["model"]))
    agreement = _check_against_truth(result, data.truth)
    # per-stage theme and polarity counts agree with the planted ones (measured: 1.0 on both demos)
    assert agreement["themes"] >= 0.98
    assert agreement["polarity"] >= 0.97
    assert agreement["languages"] >= 0.95
    # emotion stages follow the model order and carry labels and faces
    assert [p.stage for p in result.emotion] == [s for s in ws.model(data.truth["model"]).stage_keys
                                                 if s in data.truth["surveys"]["realized"]]
    assert result.emotion_by_stage()["decision"].face in ("😞", "😕")
    # the examples are real comments of that theme
    for t in result.themes:
        assert all(analyze_comment(q.text).theme == t.theme for q in t.examples)
    # NPS counts add up; the planted decision stage has the most negative comments
    o = result.overall
    assert o.nps.promoters + o.nps.passives + o.nps.detractors == o.nps.n
    negative_share = {p.stage: p.sentiment for p in result.emotion}
    assert min(negative_share, key=lambda s: negative_share[s] or 0) == "decision"


def test_persona_segment_finds_the_bargain_hunters_at_decision(demo_shop: Any) -> None:
    persons = demo_shop.truth_persons()[["person_id", "persona"]].rename(columns={"persona": "value"})
    with demo_shop.open() as ws:
        seg = ibis.memtable(persons)
        result = surveys(ws.surveys(), SurveyQuery(by=["persona", "stage"]), model=ws.model(),
                         segments={"persona": seg})
    decision = {r.group[0]: r.emotion for r in result.rows if r.group[1] == "decision" and r.emotion.n >= 10}
    assert "bargain_hunter" in decision
    others = [e.value for k, e in decision.items() if k != "bargain_hunter"]
    # planted: bargain hunters 0.25 at decision, everyone else 0.40
    assert decision["bargain_hunter"].value is not None and all(
        decision["bargain_hunter"].value < (v or 0) for v in others)
    # persona x stage rows add up to the stage totals
    total = sum(r.answers for r in result.rows if r.group[1] == "decision")
    assert total == demo_shop.truth["surveys"]["realized"]["decision"]["count"]


def test_breakdowns_by_touchpoint_kind_and_period(demo_shop: Any) -> None:
    with demo_shop.open() as ws:
        answers = ws.surveys()
        result = surveys(answers, SurveyQuery(by=["touchpoint", "kind"]))
        month = surveys(answers, SurveyQuery(by="month"))
        direct = answers.group_by("touchpoint", "kind").aggregate(n=answers.count(), m=answers.score.mean())
        expected = {(r["touchpoint"], r["kind"]): (r["n"], r["m"]) for r in direct.to_pyarrow().to_pylist()}
    got = {r.group: (r.answers, r.kinds[r.group[1]].value) for r in result.rows}
    assert got.keys() == expected.keys()
    for k, (n, m) in expected.items():
        assert got[k][0] == n and got[k][1] == pytest.approx(m)
    assert sum(r.answers for r in month.rows) == demo_shop.truth["surveys"]["count"]
    assert all(len(r.group[0]) == 10 for r in month.rows)  # ISO dates
    with demo_shop.open() as ws, pytest.raises(UnknownNameError, match="did you mean 'touchpoint'"):
        surveys(ws.surveys(), SurveyQuery(by="touchpont"))
    with pytest.raises(InvalidParameterError):
        SurveyQuery(confidence=1.5)


# ------------------------------------------------------------------ both backends
def _answers(rows: list[tuple[str, int, str, float, str | None, str | None]]) -> pa.Table:
    out = [{"message_id": f"s{i}", "workspace": "default", "person": p, "ts": T0 + timedelta(days=d),
            "kind": k, "score": s, "comment": c, "touchpoint": "shop", "stage": st}
           for i, (p, d, k, s, c, st) in enumerate(rows)]
    return pa.Table.from_pylist(out, schema=schema.SURVEYS.arrow_schema())


def test_same_answers_on_every_backend(make_store: Callable[[], Store]) -> None:
    rows = [
        ("u1", 0, "nps", 10, "Great support, my problem was solved right away.", "advocacy"),
        ("u2", 0, "nps", 9, None, "advocacy"),
        ("u3", 1, "nps", 3, "Prices are too high compared to other shops.", "advocacy"),
        ("u4", 1, "csat", 5, "Die Qualität der Produkte ist hervorragend.", "decision"),
        ("u5", 8, "csat", 2, "Die Versandkosten sind viel zu hoch.", "decision"),
        ("u6", 8, "ces", 7, "", "decision"),
        ("u7", 9, "ces", 1, "Die Bedienung der Website ist umständlich.", None),
        ("u8", 9, "nps", 11, "out of scale", "decision"),  # ignored
        ("u9", 9, "xyz", 3, None, "decision"),  # ignored
    ]
    store = make_store()
    store.append("surveys", _answers(rows))
    result = surveys(Workspace(store).surveys(), SurveyQuery(by=["stage"]))
    assert result.ignored == 2 and result.overall.answers == 7
    by = {r.group: r for r in result.rows}
    adv = by[("advocacy",)]
    assert (adv.nps.promoters, adv.nps.passives, adv.nps.detractors) == (2, 0, 1)
    assert adv.nps.value == pytest.approx(100 / 3)
    assert adv.emotion.value == pytest.approx((1 + 0.9 + 0.3) / 3)
    dec = by[("decision",)]
    assert dec.csat.value == pytest.approx(0.5) and dec.ces.value == pytest.approx(7.0)
    assert dec.emotion.value == pytest.approx((1 + 0.25 + 1) / 3)
    assert by[("(none)",)].answers == 1
    assert [p.stage for p in result.emotion] == ["advocacy", "decision"]  # no model: by name
    themes = {(t.stage, t.theme): t for t in result.themes}
    assert themes[("decision", "shipping_costs")].negative == 1
    assert themes[("decision", "product_quality")].positive == 1
    assert themes[("all", "usability")].negative == 1
    assert result.comments == 5


# ------------------------------------------------------------------ CLI
def test_cli_json_csv_and_table(demo_shop: Any, tmp_path: Path) -> None:
    from journeylens.cli.app import app

    db = str(demo_shop.copy_db(tmp_path))
    runner = CliRunner()
    r = runner.invoke(app, ["--db", db, "surveys", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [p["stage"] for p in data["emotion"]] == list(demo_shop.truth["surveys"]["realized"])
    assert data["overall"]["answers"] == demo_shop.truth["surveys"]["count"]
    r = runner.invoke(app, ["--db", db, "surveys", "--view", "themes", "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("stage,theme,comments")
    r = runner.invoke(app, ["--db", db, "surveys", "--by", "touchpoint", "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("touchpoint,answers,nps")
    r = runner.invoke(app, ["--db", db, "surveys"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "Emotion per stage" in r.stdout and "😀" in r.stdout
    r = runner.invoke(app, ["--db", db, "surveys", "--by", "nope"])
    assert isinstance(r.exception, UnknownNameError) and "survey breakdown 'nope'" in str(r.exception)
    # through the console entry point: one line on stderr, the error's exit code, no traceback
    proc = subprocess.run([sys.executable, "-m", "journeylens", "--db", db, "surveys", "--by", "stag"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == UnknownNameError.exit_code
    assert "unknown survey breakdown 'stag'" in proc.stderr and "did you mean 'stage'" in proc.stderr
    assert "Traceback" not in proc.stderr
