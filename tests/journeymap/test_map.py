"""The journey map: cells computed from data (checked against the demo's truth and hand-made
journeys on both backends), configuration, comparison, and rendering in real Chromium."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from journeylens.errors import InvalidParameterError, ModelError, UnknownNameError
from journeylens.journeymap import ROWS, EmotionPoint, JourneyMap, build_map, load_map_config
from journeylens.journeymap.compare import compare_maps, two_proportions
from journeylens.store import Store
from journeylens.workspace import Workspace
from tests.conftest import DemoData
from tests.helpers import events_table

# five_phase: visit=awareness, product_view=consideration, add_to_cart=decision
HAND = [
    {"user_id": "A", "event": "visit", "touchpoint": "search_ad", "minute": 0},
    {"user_id": "A", "event": "product_view", "touchpoint": "online_shop", "minute": 10},
    {"user_id": "A", "event": "add_to_cart", "touchpoint": "online_shop", "minute": 70},
    {"user_id": "B", "event": "visit", "touchpoint": "flyer_qr", "minute": 0},
    {"user_id": "B", "event": "visit", "touchpoint": "search_ad", "minute": 5},
    {"user_id": "B", "event": "product_view", "touchpoint": "online_shop", "minute": 30},
    {"user_id": "C", "event": "visit", "touchpoint": "flyer_qr", "minute": 1},
]


@pytest.fixture
def hand_map(make_store: Callable[[], Store]) -> JourneyMap:
    store = make_store()
    store.append("events", events_table(HAND))
    ws = Workspace(store)
    ws.rebuild_identities()
    return ws.journey_map("five_phase", zoom="awareness")  # the whole path: KPIs, surveys, pain points


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)], indirect=True)
def test_cells_of_hand_made_journeys(hand_map: JourneyMap) -> None:
    m = hand_map
    assert [s.people for s in m.stages] == [3, 2, 1, 0, 0]
    aw = m.cell("behaviour", "awareness").content
    assert aw["active"] == 3 and aw["top_events"] == [{"event": "visit", "touches": 4, "persons": 3, "share": 1.0}]
    assert aw["moved_on"] == pytest.approx(2 / 3, abs=1e-4)
    tp = m.cell("touchpoints", "awareness").content
    assert tp["mix"] == {"search_ad": 2, "flyer_qr": 2}
    assert tp["online_share"] == 0.5 and tp["direct_share"] == 1.0  # flyer_qr is offline, both are direct
    assert m.cell("touchpoints", "awareness").n == 4
    owners = m.cell("owners", "consideration").content
    assert owners == [{"owner": "ecommerce", "touchpoints": ["online_shop"], "share": 1.0, "source": "catalog"}]
    assert m.cell("behaviour", "retention").content is None
    assert m.cell("behaviour", "retention").missing == "no touches in this stage"
    assert m.cell("emotion", "awareness").missing == "no survey answers imported"
    kpis = {k["kpi"]: k for k in m.cell("kpis", "awareness").content}
    assert kpis["reach"]["value"] == 3 and kpis["spend"]["value"] is None and kpis["spend"]["missing"]
    assert m.zoom is not None
    assert {e["from"]: e["persons"] for e in m.zoom.entries_from} == {"start": 3}
    assert {t["touchpoint"]: t["touches"] for t in m.zoom.touchpoints} == {"search_ad": 2, "flyer_qr": 2}
    assert {p["path"]: p["persons"] for p in m.zoom.paths} == {"search_ad": 1, "flyer_qr → search_ad": 1, "flyer_qr": 1}


def test_demo_map_matches_truth(demo_shop: DemoData) -> None:
    truth = demo_shop.truth
    with demo_shop.open() as ws:
        m = ws.journey_map("five_phase")
        touches = ws.touches("five_phase").select("stage", "touchpoint", "person_id").to_pandas()
    assert [s.key for s in m.stages] == list(truth["stages"])
    for s in m.stages:
        assert s.people == truth["stages"][s.key]["people"]
        cell = m.cell("touchpoints", s.key)
        assert cell.n == truth["stages"][s.key]["touches"]
        expected = touches[touches.stage == s.key].touchpoint.value_counts().to_dict()
        assert cell.content["mix"] == expected
        assert cell.evidence == ("strong" if cell.n >= 100 else "moderate" if cell.n >= 30 else "weak")
    # every configured goal of the example file is on the map, and nothing is invented
    cfg = load_map_config(Path(__import__("journeylens").journeymap.config.EXAMPLES / "five_phase.yaml"))
    for key in truth["stages"]:
        assert m.cell("goals", key).content == (list(cfg.notes(key).goals) or None)
    d = m.to_dict()
    assert set(d["stages"][0]["rows"]) == set(ROWS)
    # the emotion curve is the planted survey mood per stage (normalised scores, all answers)
    for key, realized in truth["surveys"]["realized"].items():
        emo = m.cell("emotion", key).content
        assert emo["n"] == realized["count"]
        assert emo["score"] == pytest.approx(realized["mean_normalized"], abs=1e-3)
        assert emo["low"] < emo["score"] < emo["high"]
    scores = {k: m.cell("emotion", k).content["score"] for k in truth["stages"]}
    assert min(scores, key=scores.__getitem__) == "decision" and max(scores, key=scores.__getitem__) == "advocacy"


def test_config_errors_name_file_line_and_key(tmp_path: Path, demo_shop: DemoData) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("stages:\n  awareness:\n    goals: [a]\n  decison:\n    goals: [b]\n")
    with demo_shop.open() as ws, pytest.raises(ModelError) as e:
        ws.journey_map("five_phase", config=bad)
    assert "decison" in e.value.message and str(bad) in str(e.value) and ":4" in str(e.value)
    bad.write_text("stages:\n  awareness:\n    goal: [a]\n")
    with pytest.raises(ModelError) as e2:
        load_map_config(bad)
    assert "goal" in e2.value.message and "goals" in (e2.value.hint or "")


def test_scopes_and_comparison(demo_shop: DemoData, tmp_path: Path) -> None:
    persons = demo_shop.truth_persons()
    with __import__("journeylens").open(demo_shop.copy_db(tmp_path)) as ws:
        for persona in ("bargain_hunter", "loyal_regular"):
            ws.save_cohort(f"persona:{persona}", persons[persons.persona == persona].person_id)
        with pytest.raises(UnknownNameError):
            ws.journey_map(persona="bargain_huntr")
        c = ws.compare_journey_maps({"persona": "loyal_regular"}, persona="bargain_hunter")
        period = ws.journey_map(period="2026-03")
    assert c.a.scope == {"persona": "bargain_hunter"} and c.b.scope == {"persona": "loyal_regular"}
    realized = demo_shop.truth["personas"]
    assert c.a.total_units == realized["bargain_hunter"]["realized"]["humans"]
    # bargain hunters reach decision but rarely buy: planted; the decision behaviour must differ
    assert c.differs("behaviour", "retention") is not None
    assert c.differs("touchpoints", "awareness") is not None  # ads vs direct/newsletter (planted channel mixes)
    assert period.scope == {"period": "2026-03"} and 0 < period.total_units < c.a.total_units + c.b.total_units + 3000


def test_two_proportions_matches_scipy_chi2() -> None:
    from scipy.stats import chi2_contingency

    p = two_proportions(30, 100, 45, 100)
    assert p == pytest.approx(chi2_contingency([[30, 70], [45, 55]], correction=False).pvalue, rel=1e-9)
    assert two_proportions(1, 0, 1, 1) is None


def test_comparison_refuses_different_models(hand_map: JourneyMap) -> None:
    other = JourneyMap(**{**hand_map.__dict__, "model": "aida"})
    with pytest.raises(InvalidParameterError):
        compare_maps(hand_map, other)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, demo_shop: DemoData) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("maps")
    emotions = {"awareness": EmotionPoint(0.7, 50, 0.65, 0.75), "decision": EmotionPoint(0.35, 80, 0.3, 0.4)}
    with demo_shop.open() as ws:
        m = build_map(ws.touches(), ws.model(), catalog=ws.catalog, emotions=emotions, zoom="decision")
    html = m.to_html(folder / "map.html")
    png = m.to_png(folder / "map.png")
    return {"map": m, "html": html, "png": png}


def test_html_is_self_contained_and_names_every_stage(rendered: dict[str, Any]) -> None:
    html: str = rendered["html"]
    m: JourneyMap = rendered["map"]
    for s in m.stages:
        assert f">{s.label}</h2>" in html
    assert "<script" not in html and "src=\"http" not in html and "href=\"http" not in html
    assert "@page { size: A3 landscape" in html
    assert html.count('class="face"') == 2  # one face per stage with survey answers
    assert "no survey answers" not in html.split('class="emotion"')[1][:200]


def test_png_is_a_real_rendering(rendered: dict[str, Any]) -> None:
    from PIL import Image

    img = Image.open(rendered["png"]).convert("RGB")
    assert img.width == 1800 and img.height > 800
    colours = img.resize((300, 200)).getcolors(maxcolors=100_000) or []
    assert len(colours) > 200  # text, bars, faces — not a blank page
    gray = img.convert("L")
    dark = sum(gray.histogram()[:100])
    assert dark > 5_000  # there is text on it


def test_to_pandas_rows(rendered: dict[str, Any]) -> None:
    df: pd.DataFrame = rendered["map"].to_pandas()
    assert next(iter(df["row"])) == "Behaviour" and len(df) == len(ROWS)
    assert "visit" in df.loc[0, "Awareness"]


def test_compare_with_another_workspace(demo_shop: DemoData, demo_b2b: DemoData, tmp_path: Path) -> None:
    """B2C vs B2B: the b2b demo imported into workspace 'b2b' of the shop's store, both drawn
    with the three-phase model (before / during / after purchase)."""
    import journeylens

    db = demo_shop.copy_db(tmp_path)
    with journeylens.open(db, workspace="b2b") as b2b:
        for target in ("events", "people", "accounts", "surveys"):
            b2b.import_file(target, demo_b2b.files[target])
    with journeylens.open(db) as shop:
        c = shop.compare_journey_maps({"workspace": "b2b"}, "three_phase")
    assert c.a.scope == {"workspace": "default"} and c.b.scope == {"workspace": "b2b"}
    assert c.a.total_units == demo_shop.truth["identity"]["persons_after_stitching"]
    assert c.b.total_units == demo_b2b.truth["identity"]["persons_after_stitching"]
    assert c.differs("touchpoints", c.a.stages[0].key) is not None  # ads and shop vs fairs and sales team
