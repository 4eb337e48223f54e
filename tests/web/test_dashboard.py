"""The dashboard in a real Chromium (Playwright, Debian's /usr/bin/chromium) against a live server on
the shop demo (planted personas saved as cohorts): log in, overview numbers equal the API's, a funnel
with a breakdown and its drop-off page, the Sankey, switching the journey model, the map with its PNG
download and persona picker, the experiment page, a person's timeline.
Screenshots go to $JOURNEYLENS_ARTIFACTS (or the test's tmp folder)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web.live import LiveServer, make_keys, save_planted_personas

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (make test installs it)")


@pytest.fixture(scope="module")
def live(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    db = demo_shop.copy_db(tmp_path_factory.mktemp("dashboard"))
    save_planted_personas(demo_shop, db)
    keys = make_keys(db)
    srv = LiveServer(db).start()
    yield srv, keys
    srv.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("JOURNEYLENS_ARTIFACTS") or tmp_path_factory.mktemp("artifacts")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(live: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    srv, keys = live
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True,
                                      base_url=srv.url)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.goto("/")  # not logged in: the login form
        assert "/login" in pg.url
        pg.get_by_test_id("login-key").fill(keys["read"])
        pg.get_by_test_id("login-submit").click()
        pg.wait_for_url(srv.url + "/")
        yield pg
        browser.close()


def api(live: Any, path: str, **params: Any) -> Any:
    srv, keys = live
    r = httpx.get(srv.url + path, params=params, headers={"Authorization": f"Bearer {keys['read']}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def number(page: Any, testid: str) -> int:
    return int(page.get_by_test_id(testid).inner_text().replace(",", ""))


def wait_chart(page: Any, testid: str) -> Any:
    chart = page.get_by_test_id(testid)
    page.wait_for_selector(f"[data-testid='{testid}'][data-rendered='1']")
    return chart


def test_login_rejects_a_write_key_and_a_bad_key(live: Any) -> None:
    from playwright.sync_api import sync_playwright

    srv, keys = live
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(base_url=srv.url)
        for key, message in ((keys["write"], "write key"), ("jlr_wrong", "unknown")):
            pg.goto("/login")
            pg.get_by_test_id("login-key").fill(key)
            pg.get_by_test_id("login-submit").click()
            assert message in pg.get_by_test_id("login-error").inner_text()
        browser.close()
    # a form POST without the CSRF token is refused
    assert httpx.post(srv.url + "/login", data={"key": keys["read"]}).status_code == 403


def test_overview_numbers_equal_the_api(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/")
    ov = api(live, "/api/overview")
    assert number(page, "people") == ov["people"]
    assert number(page, "events") == ov["events"]
    assert number(page, "touches") == ov["touches"]
    wait_chart(page, "stage-funnel")
    wait_chart(page, "trend")
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)


def test_funnel_with_breakdown_and_drop_off(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/funnel")
    for i, step in enumerate(["visit", "product_view", "add_to_cart", "purchase"], start=1):
        page.get_by_test_id(f"step-{i}").fill(step)
    page.get_by_test_id("field-window").fill("7d")
    page.get_by_test_id("field-breakdown").select_option("channel")
    page.get_by_test_id("apply").click()
    page.wait_for_load_state()
    wait_chart(page, "funnel-chart")
    expected = api(live, "/api/funnel", steps=["visit", "product_view", "add_to_cart", "purchase"], window="7d",
                   breakdown="channel", trend_period="week")
    assert number(page, "funnel-entered") == expected["steps"][0]["persons"]
    assert number(page, "funnel-converted") == expected["steps"][-1]["persons"]
    rows = page.get_by_test_id("funnel-breakdown").locator("tbody tr")
    assert rows.count() == len(expected["breakdown"]["values"])
    # one bar trace per breakdown value in the rendered chart
    traces = page.evaluate("document.querySelector(\"[data-testid='funnel-chart']\").data.length")
    assert traces == len(expected["breakdown"]["values"])
    page.screenshot(path=str(artifacts / "funnel.png"), full_page=True)
    # click the drop-off count of step 3: the people who reached step 2 but not step 3
    page.get_by_test_id("funnel-steps").locator("tbody tr").nth(2).locator("a").click()
    page.wait_for_url(re.compile(r".*/funnel/dropoff.*"))
    dropped = api(live, "/api/funnel/people", steps=["visit", "product_view", "add_to_cart", "purchase"],
                  window="7d", breakdown="channel", step="3", status="dropped")
    assert number(page, "dropoff-count") == dropped["count"] == expected["steps"][2]["drop_offs"]
    wait_chart(page, "dropoff-sankey")
    page.screenshot(path=str(artifacts / "funnel-dropoff.png"), full_page=True)


def test_sankey(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/paths?level=stage&start_end_nodes=true")
    wait_chart(page, "sankey")
    assert page.locator("[data-testid='sankey'] .sankey .sankey-node").count() > 3
    expected = api(live, "/api/paths", level="stage", start_end_nodes="true")
    assert number(page, "paths-persons") == expected["persons"]
    page.screenshot(path=str(artifacts / "paths.png"), full_page=True)


def test_switch_journey_model_on_stages(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/stages")
    assert page.get_by_test_id("stages-model").inner_text() == api(live, "/api/stages")["model"]
    page.get_by_test_id("field-model").select_option("aida")
    page.get_by_test_id("apply").click()
    page.wait_for_url(re.compile(r".*model=aida.*"))
    assert page.get_by_test_id("stages-model").inner_text() == "aida"
    expected = api(live, "/api/stages", model="aida")
    cells = page.get_by_test_id("stages-table").locator("tbody tr")
    assert cells.count() == len(expected["stages"])
    wait_chart(page, "stage-funnel")
    wait_chart(page, "kpis-chart")
    page.screenshot(path=str(artifacts / "stages.png"), full_page=True)


def test_map_page_and_png_download(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/map")
    frame = page.frame_locator("[data-testid='map-frame']")
    frame.locator("body").wait_for()
    assert "Awareness" in frame.locator("body").inner_text()
    assert number(page, "map-units") == api(live, "/api/map")["total_units"]
    page.screenshot(path=str(artifacts / "map.png"), full_page=True)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_test_id("map-download-png").click()
    target = artifacts / "journey-map-download.png"
    info.value.save_as(str(target))
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_map_persona_select_lists_saved_personas(page: Any, live: Any, demo_shop: Any, artifacts: Path) -> None:
    page.goto("/map")
    planted = sorted(demo_shop.truth["personas"])
    options = page.get_by_test_id("field-persona").locator("option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == ["", *planted]
    assert options.nth(0).inner_text() == "all"
    compare = page.get_by_test_id("field-compare_persona").locator("option")
    assert [compare.nth(i).get_attribute("value") for i in range(compare.count())] == ["", *planted]
    segment = page.get_by_test_id("field-segment").locator("option")
    assert [segment.nth(i).get_attribute("value") for i in range(segment.count())] == ["", "buyers"]
    months = page.get_by_test_id("choices-period").locator("option")
    assert months.count() >= 6 and months.nth(0).get_attribute("value") == demo_shop.truth["start"][:7]
    page.get_by_test_id("field-persona").select_option("loyal_regular")
    page.get_by_test_id("apply").click()
    page.wait_for_url(re.compile(r".*persona=loyal_regular.*"))
    frame = page.frame_locator("[data-testid='map-frame']")
    frame.locator("body").wait_for()
    assert "Awareness" in frame.locator("body").inner_text()
    expected = api(live, "/api/map", persona="loyal_regular")["total_units"]
    assert number(page, "map-units") == expected == demo_shop.truth["personas"]["loyal_regular"]["realized"]["humans"]
    assert page.get_by_test_id("field-persona").input_value() == "loyal_regular"
    page.screenshot(path=str(artifacts / "map-persona.png"), full_page=True)


def test_breakdown_pickers_offer_saved_personas(page: Any, live: Any, demo_shop: Any, artifacts: Path) -> None:
    for path, field in (("/funnel", "field-breakdown"), ("/stages", "field-by"), ("/retention", "field-breakdown")):
        page.goto(path)
        values = page.get_by_test_id(field).locator("option").evaluate_all("els => els.map(e => e.value)")
        assert "persona" in values and "cohort" in values, (path, values)
    page.goto("/stages?by=persona")
    expected = api(live, "/api/stages", breakdown="persona")
    rows = page.get_by_test_id("stages-breakdown").locator("tbody tr")
    assert rows.count() == len(expected["breakdown"]["values"]) == len(demo_shop.truth["personas"])
    wait_chart(page, "kpis-chart")
    page.screenshot(path=str(artifacts / "stages-persona.png"), full_page=True)
    page.goto("/retention?period=month&breakdown=persona")
    assert page.get_by_test_id("page-error").count() == 0, page.get_by_test_id("page-error").inner_text()
    expected_size = api(live, "/api/retention", period="month", breakdown="persona").get("size")
    assert page.get_by_test_id("retention-size").get_attribute("data-raw") == str(expected_size)
    wait_chart(page, "retention-heatmap")


def _cells(page: Any, testid: str) -> list[list[str]]:
    rows = page.get_by_test_id(testid).locator("tbody tr")
    return [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]


def test_experiment_page_equals_the_api(page: Any, live: Any, artifacts: Path) -> None:
    page.goto("/experiment")
    assert page.get_by_test_id("nav-experiment").count() == 1
    page.get_by_test_id("field-variant").fill("trait:device")
    page.get_by_test_id("field-goal").fill("purchase")
    page.get_by_test_id("apply").click()
    page.wait_for_url(re.compile(r".*variant=trait%3Adevice.*"))
    wait_chart(page, "experiment-chart")
    expected = api(live, "/api/experiment", variant="trait:device", goal="purchase")
    assert expected["status"] == "ok" and len(expected["variants"]) >= 2
    cells = _cells(page, "experiment-table")
    assert len(cells) == len(expected["variants"])
    for row, v in zip(cells, expected["variants"], strict=True):
        assert row[0].split(" (")[0] == v["variant"]
        assert int(row[1].replace(",", "")) == v["units"] and int(row[2].replace(",", "")) == v["conversions"]
        assert row[3] == f"{v['rate']:.2%}"
        assert row[4] == f"{v['lower']:.1%} – {v['upper']:.1%}"
        t = v["test"]
        assert row[7] == ("–" if t is None else f"{t['p_value']:.3g}")
        assert row[5] == ("–" if t is None else f"{t['lift']:+.1%}")
    assert number(page, "experiment-units") == sum(v["units"] for v in expected["variants"])
    srm = page.get_by_test_id("experiment-srm")
    assert srm.get_attribute("data-state") == ("mismatch" if expected["srm"]["mismatch"] else "ok")
    assert float(srm.get_attribute("data-p")) == pytest.approx(expected["srm"]["p_value"], rel=1e-9)
    assert page.get_by_test_id("experiment-verdict").inner_text() == expected["verdict"]
    assert page.get_by_test_id("experiment-not-enough").count() == 0
    # error bars: one bar per variant with its interval
    bars = page.evaluate("document.querySelector(\"[data-testid='experiment-chart']\").data[0].y.length")
    assert bars == len(expected["variants"])
    page.screenshot(path=str(artifacts / "experiment.png"), full_page=True)
    # many small variants (cities): the page says not enough data, with the API's reasons
    page.goto("/experiment?variant=trait:city&goal=purchase")
    small = api(live, "/api/experiment", variant="trait:city", goal="purchase")
    assert small["status"] == "not_enough_data"
    box = page.get_by_test_id("experiment-not-enough")
    assert box.count() == 1 and box.locator("li").count() == len(small["reasons"])
    assert page.get_by_test_id("experiment-status").inner_text() == "not enough data"
    page.screenshot(path=str(artifacts / "experiment-not-enough.png"), full_page=True)


def test_person_timeline(page: Any, live: Any, artifacts: Path) -> None:
    top = api(live, "/api/clv", top=3)["top"][0]["unit"]
    page.goto("/person")
    page.get_by_test_id("field-id").fill(top)
    page.get_by_test_id("apply").click()
    page.wait_for_url(re.compile(r".*/person/.+"))
    journey = api(live, f"/api/journey/{top}", page_size=5000)
    assert number(page, "person-touches") == len(journey["touches"])
    wait_chart(page, "person-timeline")
    page.screenshot(path=str(artifacts / "person.png"), full_page=True)


def test_other_pages_render(page: Any, artifacts: Path) -> None:
    for path in ("/attribution", "/retention", "/clv", "/surveys", "/personas", "/settings"):
        page.goto(path)
        assert page.locator("h1").inner_text()
        assert page.get_by_test_id("page-error").count() == 0, (path, page.get_by_test_id("page-error").inner_text())
        page.screenshot(path=str(artifacts / f"{path.strip('/')}.png"), full_page=True)


def test_logout_ends_the_session(page: Any, live: Any) -> None:
    page.goto("/settings")
    page.get_by_test_id("logout").click()
    page.wait_for_url(re.compile(r".*/login.*"))
    page.goto("/")
    assert "/login" in page.url
