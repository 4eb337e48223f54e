"""The query API over real HTTP (create_server in uvicorn on a thread) on the shop demo:
numbers equal the Python API's and the planted truth, error codes, pagination, cache,
keys and workspaces, reads while the collector writes, and schemathesis over /api."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

import journeylens
from journeylens.server.api import ANALYSES, jsonable
from tests.web.live import LiveServer, make_keys, save_planted_personas


@pytest.fixture(scope="module")
def live(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str], Path]]:
    db = demo_shop.copy_db(tmp_path_factory.mktemp("query_api"))
    save_planted_personas(demo_shop, db)
    keys = make_keys(db)
    srv = LiveServer(db).start()
    yield srv, keys, db
    srv.stop()


def _get(srv: LiveServer, key: str | None, path: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(srv.url + path, params=params, headers=headers, timeout=120)


def _body(r: httpx.Response) -> Any:
    """The answer without its page description."""
    body = r.json()
    body.pop("page", None)
    return body


def same(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal up to float summation order (DuckDB aggregates in parallel)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float | int):
        return bool(a == pytest.approx(b, rel=rel))
    return bool(a == b)


def test_stages_equal_truth_and_python_api(live: Any, demo_shop: Any) -> None:
    srv, keys, db = live
    r = _get(srv, keys["read"], "/api/stages")
    assert r.status_code == 200, r.text
    got = {s["stage"]: s["people"] for s in r.json()["stages"]}
    assert got == {k: v["people"] for k, v in demo_shop.truth["stages"].items()}
    with journeylens.open(db) as ws:  # a second connection in the server's process
        assert same(_body(r), jsonable(ws.stage_funnel().to_dict()))


def test_overview_and_funnel_equal_python_api_and_truth(live: Any, demo_shop: Any) -> None:
    srv, keys, db = live
    ov = _get(srv, keys["read"], "/api/overview").json()
    assert ov["people"] == demo_shop.truth["counts"]["humans"]
    assert ov["events"] == demo_shop.truth["counts"]["events"]
    params = {"steps": ["visit", "product_view", "add_to_cart", "purchase"], "window": "200d", "breakdown": "channel"}
    r = _get(srv, keys["read"], "/api/funnel", **params)
    assert r.status_code == 200, r.text
    body = _body(r)
    # every purchase happens in a web session that starts with a visit: all buyers complete the funnel
    assert body["steps"][-1]["persons"] == demo_shop.truth["counts"]["conversions"]
    with journeylens.open(db) as ws:
        expected = jsonable(ws.funnel(params["steps"], window="200d", breakdown="channel").to_dict())
    assert same(body, expected)
    posted = httpx.post(srv.url + "/api/funnel", json=params, headers={"Authorization": f"Bearer {keys['read']}"},
                        timeout=60)
    assert same(_body(posted), body)


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/api/funnel", {"steps": ["visit", "purchase"], "window": "soon"}, 400, "invalid_parameter"),
    ("/api/funnel", {"steps": ["visit", "purchse"]}, 404, "unknown_name"),
    ("/api/funnel", {"steps": ["visit"]}, 400, "invalid_parameter"),
    ("/api/funnel", {"steps": ["visit", "purchase"], "order": "sideways"}, 404, "unknown_name"),
    ("/api/funnel", {"steps": ["visit", "purchase"], "colour": "red"}, 400, "invalid_parameter"),
    ("/api/funnel/people", {"steps": ["visit", "purchase"], "step": "7"}, 400, "invalid_parameter"),
    ("/api/funnel/people", {"steps": ["visit", "purchase"], "step": "checkout"}, 404, "unknown_name"),
    ("/api/stages", {"model": "six_phase"}, 404, "unknown_name"),
    ("/api/kpis", {"model": "nope"}, 404, "unknown_name"),
    ("/api/retention", {"period": "fortnight"}, 404, "unknown_name"),
    ("/api/journey/nobody-at-all", {}, 404, "unknown_name"),
    ("/api/overview", {"page_size": "0"}, 400, "invalid_parameter"),
    ("/api/overview", {"page": "x"}, 400, "invalid_parameter"),
    ("/api/painpoints", {"breakdown": "channel"}, 400, "invalid_parameter"),
])
def test_bad_parameters_give_4xx_with_code(live: Any, path: str, params: dict[str, Any], status: int,
                                            code: str) -> None:
    srv, keys, _ = live
    r = _get(srv, keys["read"], path, **params)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"code", "message"} and body["message"]
    assert body["code"] == code


def test_invalid_json_body_is_400(live: Any) -> None:
    srv, keys, _ = live
    r = httpx.post(srv.url + "/api/funnel", content=b"{steps:", headers={"Authorization": f"Bearer {keys['read']}"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_parameter"


def test_pagination_pages_add_up_to_the_whole_list(live: Any) -> None:
    srv, keys, db = live
    params = {"steps": ["visit", "add_to_cart", "purchase"], "step": "3", "status": "dropped"}
    first = _get(srv, keys["read"], "/api/funnel/people", page_size=100, **params)
    assert first.status_code == 200, first.text
    info = first.json()["page"]
    total = first.json()["count"]
    assert info["totals"]["people"] == total and info["pages"] == -(-total // 100) and info["has_more"]
    assert 'rel="next"' in first.headers["link"]
    people: list[str] = []
    for page in range(1, info["pages"] + 1):
        people += _get(srv, keys["read"], "/api/funnel/people", page=page, page_size=100, **params).json()["people"]
    with journeylens.open(db) as ws:
        expected = ws.funnel(["visit", "add_to_cart", "purchase"]).people(3, "dropped")
    assert people == expected and len(people) == total > 100
    last = _get(srv, keys["read"], "/api/funnel/people", page=info["pages"], page_size=100, **params)
    assert last.json()["page"]["has_more"] is False and "link" not in last.headers


def test_cache_hit_until_the_data_changes(live: Any) -> None:
    srv, keys, _ = live
    params = {"steps": ["visit", "purchase"], "window": "3d", "trend_period": "month"}
    a = _get(srv, keys["read"], "/api/funnel", **params)
    b = _get(srv, keys["read"], "/api/funnel", **params)
    assert (a.headers["x-cache"], b.headers["x-cache"]) == ("miss", "hit")
    assert a.json() == b.json() and a.headers["x-data-version"] == b.headers["x-data-version"]
    visits = a.json()["steps"][0]["persons"]
    # a new person visits through the collector (write key): the data version moves, the answer is recomputed
    msg = {"type": "track", "event": "visit", "userId": "new-visitor-1", "messageId": "cache-test-1",
           "timestamp": "2026-03-01T10:00:00Z", "properties": {}}
    w = httpx.post(srv.url + "/v1/track", json=msg, auth=(keys["write"], ""), timeout=30)
    assert w.status_code == 200 and w.json()["accepted"] == 1, w.text
    c = _get(srv, keys["read"], "/api/funnel", **params)
    assert c.headers["x-cache"] == "miss" and c.headers["x-data-version"] != a.headers["x-data-version"]
    assert c.json()["steps"][0]["persons"] == visits + 1
    ov = _get(srv, keys["read"], "/api/overview").json()
    assert ov["events"] == _events_now(srv, keys)


def _events_now(srv: LiveServer, keys: dict[str, str]) -> int:
    rows = srv.app.state.collector.writer.run_sync(
        lambda s: s.query("SELECT count(*) FROM events WHERE workspace = 'default'"))
    return int(rows[0][0])


def test_reads_stay_answered_while_the_collector_writes(live: Any) -> None:
    srv, keys, _ = live
    import threading

    stop = threading.Event()
    sent: list[int] = []

    def writer() -> None:
        n = 0
        with httpx.Client(auth=(keys["write"], "")) as c:
            while not stop.is_set():
                batch = [{"type": "track", "event": "blog_read", "anonymousId": f"w-{n}-{i}",
                          "messageId": f"concurrent-{n}-{i}", "timestamp": "2026-04-01T10:00:00Z"} for i in range(20)]
                r = c.post(srv.url + "/v1/batch", json={"batch": batch}, timeout=30)
                assert r.status_code == 200
                sent.append(20)
                n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        versions = set()
        for _ in range(3):
            r = _get(srv, keys["read"], "/api/overview")
            assert r.status_code == 200
            versions.add(r.headers["x-data-version"])
    finally:
        stop.set()
        t.join(30)
    assert sum(sent) > 0
    assert _get(srv, keys["read"], "/api/overview").json()["events"] == _events_now(srv, keys)


def test_keys_and_workspaces(live: Any) -> None:
    srv, keys, _ = live
    assert _get(srv, None, "/api/overview").status_code == 401
    assert _get(srv, "jlr_not-a-key", "/api/overview").status_code == 401
    w = _get(srv, keys["write"], "/api/overview")
    assert w.status_code == 403 and w.json()["code"] == "forbidden"
    assert _get(srv, keys["admin"], "/api/overview").status_code == 200
    basic = httpx.get(srv.url + "/api/overview", auth=(keys["read"], ""), timeout=60)
    assert basic.status_code == 200 and basic.json()["people"] > 0
    other = _get(srv, keys["other_read"], "/api/overview")
    assert other.status_code == 200 and other.json()["people"] == 0 and other.json()["events"] == 0
    assert _get(srv, keys["other_read"], "/api/version").json()["workspace"] == "other"


def test_openapi_lists_every_analysis(live: Any) -> None:
    srv, _, _ = live
    spec = httpx.get(srv.url + "/openapi.json").json()
    for name in ANALYSES:
        op = spec["paths"][f"/api/{name}"]
        assert {"get", "post"} <= set(op)
    names = {p["name"] for p in spec["paths"]["/api/funnel"]["get"]["parameters"]}
    assert {"steps", "window", "order", "breakdown", "model", "page", "page_size"} <= names


def test_other_analyses_answer(live: Any, demo_shop: Any) -> None:
    srv, keys, db = live
    for path, params in [("/api/sankey", {"start_end_nodes": "true"}), ("/api/transitions", {"page_size": 5}),
                         ("/api/retention", {"period": "month"}), ("/api/kpis", {"period": "month"}),
                         ("/api/clv", {}), ("/api/surveys", {}), ("/api/quarantine", {})]:
        r = _get(srv, keys["read"], path, **params)
        assert r.status_code == 200, (path, r.text)
    with journeylens.open(db) as ws:
        person = ws.table("people").select("user_id").limit(1).to_pyarrow().column(0)[0].as_py()
        expected = jsonable(ws.journey(person).to_dict())
    r = _get(srv, keys["read"], f"/api/journey/{person}", page_size=5000)
    assert r.status_code == 200
    assert same(_body(r), expected)
    if "attribution" in ANALYSES:
        a = _get(srv, keys["read"], "/api/attribution", method="last_touch")
        assert a.status_code == 200, a.text
        assert a.json()["conversions"] == demo_shop.truth["counts"]["conversions"]


# ------------------------------------------------------------------ schemathesis
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    from journeylens.demo import generate

    folder = tmp_path_factory.mktemp("tiny_api")
    res = generate(scenario="shop", people=120, seed=3, out_dir=folder / "data")
    db = folder / "tiny.duckdb"
    with journeylens.open(db) as ws:
        for target in ("events", "people", "costs", "surveys"):
            ws.import_file(target, res.files[target])
    keys = make_keys(db)
    srv = LiveServer(db).start()
    yield srv, keys
    srv.stop()


def test_schemathesis_no_5xx(tiny: Any) -> None:
    """Every /api query operation (GET and POST) with schema-generated parameters: never a 5xx, and
    every 4xx is ``{"code", "message"}``. Three derandomized examples per operation on a tiny demo."""
    srv, keys = tiny
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    failures: list[str] = []
    checked = 0
    for found in schema.get_all_operations():
        op = found.ok()
        if not op.path.startswith("/api/") or op.path.startswith(("/api/keys", "/api/links", "/api/people")):
            continue
        checked += 1

        @given(case=op.as_strategy())
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def run(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {keys['read']}"}, timeout=120)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.query} {case.body}: {response.text[:300]}")
            elif response.status_code >= 400:
                body = json.loads(response.text)
                assert {"code", "message"} <= set(body), response.text

        run()
    assert checked >= 2 * len(ANALYSES)
    assert not failures, "\n".join(failures)


def test_cache_makes_reload_fast(live: Any) -> None:
    srv, keys, _ = live
    params = {"level": "stage", "depth": 6}
    t0 = time.perf_counter()
    first = _get(srv, keys["read"], "/api/paths", **params)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = _get(srv, keys["read"], "/api/paths", **params)
    warm = time.perf_counter() - t0
    assert second.headers["x-cache"] == "hit" and first.json() == second.json()
    assert float(second.headers["x-compute-seconds"]) == float(first.headers["x-compute-seconds"])
    assert warm < cold


def test_nul_characters_are_a_bad_parameter(live: Any) -> None:
    """Text with NUL cannot become a SQL literal: 400 with {"code", "message"}, not a 500 (found by
    schemathesis)."""
    srv, keys, _ = live
    r = _get(srv, keys["read"], "/api/moments", goals="purchase\x00x")
    assert r.status_code == 400 and "NUL" in r.json()["message"], r.text
    r = httpx.post(srv.url + "/api/funnel", json={"steps": ["visit", "pur\x00chase"]},
                   headers={"Authorization": f"Bearer {keys['read']}"}, timeout=60)
    assert r.status_code == 400, r.text


# ------------------------------------------------------------------ persona / cohort breakdowns
FUNNEL_STEPS = ["visit", "product_view", "add_to_cart", "purchase"]


def _persona_cases(ws: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """(path, parameters, the Python API's answer with ``segments=ws.segments(...)``) per endpoint."""
    seg = ws.segments("persona")
    seg_cohort = ws.segments("cohort:buyers")
    return [
        ("/api/funnel", {"steps": FUNNEL_STEPS, "window": "200d", "breakdown": "persona"},
         ws.funnel(FUNNEL_STEPS, window="200d", breakdown="persona", segments=seg)),
        ("/api/stages", {"breakdown": "persona"}, ws.stage_funnel(breakdown="persona", segments=seg)),
        ("/api/retention", {"period": "month", "breakdown": "persona"},
         ws.retention(period="month", breakdown="persona", segments=seg)),
        ("/api/kpis", {"by": "persona"}, ws.kpis(by="persona", segments=seg)),
        ("/api/surveys", {"by": ["stage", "persona"]}, ws.survey_report(by=("stage", "persona"), segments=seg)),
        ("/api/clv", {"breakdown": "persona"}, ws.clv(breakdown="persona", segments=seg)),
        ("/api/funnel", {"steps": ["visit", "purchase"], "breakdown": "cohort:buyers"},
         ws.funnel(["visit", "purchase"], breakdown="cohort:buyers", segments=seg_cohort)),
        *_optional_cases(ws, seg),
    ]


def _optional_cases(ws: Any, seg: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """Attribution and experiment answer per persona once their request models take a breakdown."""
    from journeylens.analyses.experiments import ExperimentQuery

    out: list[tuple[str, dict[str, Any], Any]] = []
    if "attribution" in ANALYSES:
        from journeylens.analyses.attribution import AttributionQuery

        if "breakdown" in AttributionQuery.model_fields:
            out.append(("/api/attribution", {"method": "last_touch", "breakdown": "persona"},
                        ws.attribution("last_touch", breakdown="persona", segments=seg)))
    if "breakdown" in ExperimentQuery.model_fields:
        out.append(("/api/experiment", {"variant": "trait:gender", "goal": "purchase", "breakdown": "persona"},
                    ws.experiment(variant="trait:gender", goal="purchase", breakdown="persona", segments=seg)))
    return out


def test_persona_breakdowns_equal_python_api_and_truth(live: Any, demo_shop: Any) -> None:
    srv, keys, db = live
    with journeylens.open(db) as ws:
        cases = [(path, params, jsonable(result.to_dict())) for path, params, result in _persona_cases(ws)]
    for path, params, expected in cases:
        r = _get(srv, keys["read"], path, page_size=5000, **params)
        assert r.status_code == 200, (path, r.text)
        # CLV fits BG/NBD by numerical optimisation: equal to its convergence tolerance
        assert same(_body(r), expected, 1e-6 if path == "/api/clv" else 1e-9), (path, params)
    # and per persona the planted truth: every buyer completes the funnel (purchases happen in
    # sessions that start with a visit), the stage funnel counts the furthest stages
    realized = {k: v["realized"] for k, v in demo_shop.truth["personas"].items()}
    funnel = _get(srv, keys["read"], "/api/funnel", steps=FUNNEL_STEPS, window="200d", breakdown="persona").json()
    by_value = {b["value"]: b["steps"] for b in funnel["breakdown"]["values"]}
    assert set(by_value) - {"(none)"} == set(realized)  # (none): visitors the collector tests added
    for key, r in realized.items():
        assert by_value[key][-1]["persons"] == r["converted"] > 0
        assert by_value[key][0]["persons"] <= r["humans"]  # some only watch videos or visit stores
    stages = _get(srv, keys["read"], "/api/stages", breakdown="persona").json()
    for b in [b for b in stages["breakdown"]["values"] if b["value"] in realized]:
        furthest = realized[b["value"]]["furthest_stage"]
        order = [s["stage"] for s in b["stages"]]
        for i, s in enumerate(b["stages"]):  # units at or beyond the stage
            assert s["people"] == sum(int(furthest.get(x, 0)) for x in order[i:]), (b["value"], s["stage"])


def test_persona_breakdown_of_painpoints_compares_personas(live: Any, demo_shop: Any) -> None:
    """The planted pain point (bargain hunters abandon after the shipping costs) shows up as a
    persona segment of the shipping-cost step when the persona breakdown is passed."""
    srv, keys, db = live
    params = {"breakdown": "persona", "traits": "false", "comparisons": "segment"}
    r = _get(srv, keys["read"], "/api/painpoints", page_size=5000, **params)
    assert r.status_code == 200, r.text
    with journeylens.open(db) as ws:
        expected = jsonable(ws.pain_points(traits=False, comparisons=("segment",),
                                           segments=ws.segments("persona")).to_dict())
    assert same(_body(r), expected)
    text = json.dumps(_body(r))
    assert "bargain_hunter" in text


@pytest.mark.parametrize(("path", "params"), [
    ("/api/funnel", {"steps": ["visit", "purchase"], "breakdown": "cohort:nobody"}),
    ("/api/stages", {"breakdown": "cohort:nobody"}),
    ("/api/retention", {"breakdown": "cohort:nobody"}),
    ("/api/kpis", {"by": "cohort:nobody"}),
    ("/api/surveys", {"by": ["stage", "cohort:nobody"]}),
    ("/api/clv", {"breakdown": "cohort:nobody"}),
    ("/api/painpoints", {"breakdown": "cohort:nobody"}),
    ("/api/map", {"persona": "bargain_huntr"}),
    ("/api/map", {"compare_persona": "nobody"}),
    ("/api/map", {"segment": "nobody"}),
])
def test_unknown_persona_or_cohort_is_404(live: Any, path: str, params: dict[str, Any]) -> None:
    srv, keys, _ = live
    r = _get(srv, keys["read"], path, **params)
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["code"] == "unknown_name" and body["message"], body


def test_cohorts_lists_saved_personas(live: Any, demo_shop: Any) -> None:
    srv, keys, _ = live
    body = _get(srv, keys["read"], "/api/cohorts").json()
    realized = demo_shop.truth["personas"]
    assert {p["key"]: p["members"] for p in body["personas"]} == {k: v["realized"]["humans"]
                                                                  for k, v in realized.items()}
    assert [c["name"] for c in body["cohorts"] if c["persona"] is None] == ["buyers"]
    start = demo_shop.truth["start"][:7]
    assert body["months"][0] == start and len(body["months"]) >= 6


def test_persona_breakdown_without_saved_personas_is_404(tiny: Any) -> None:
    srv, keys = tiny
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/api/funnel", {"steps": ["visit", "purchase"], "breakdown": "persona"}),
        ("/api/stages", {"breakdown": "persona"}), ("/api/kpis", {"by": "cohort"})]
    for path, params in cases:
        r = _get(srv, keys["read"], path, **params)
        assert r.status_code == 404 and r.json()["code"] == "unknown_name", (path, r.text)
    assert _get(srv, keys["read"], "/api/cohorts").json()["personas"] == []


def test_a_left_out_default_and_the_default_share_one_cache_entry(live: Any) -> None:
    """The overview page asks for the stage funnel without ``unit``, the stages page with
    ``unit=person``: one computation serves both (the key fills in published defaults)."""
    srv, keys, _ = live
    a = _get(srv, keys["read"], "/api/stages", model="aida")
    b = _get(srv, keys["read"], "/api/stages", model="aida", unit="person")
    c = _get(srv, keys["read"], "/api/stages", model="aida", unit="account")
    assert (a.headers["x-cache"], b.headers["x-cache"], c.headers["x-cache"]) == ("miss", "hit", "miss")
    assert a.json() == b.json() and c.json()["unit"] == "account"


def test_a_page_reads_the_data_version_once(live: Any) -> None:
    """A dashboard page with three analyses (overview: overview, stage funnel, lifecycle) reads the
    data version once, not once per analysis."""
    from journeylens.server.api import QueryService

    srv, keys, _ = live
    svc = srv.app.state.query
    assert isinstance(svc, QueryService)
    c = httpx.Client(base_url=srv.url, timeout=300)
    form = c.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    c.post("/login", data={"key": keys["read"], "csrf": token.group(1), "next": "/"})
    calls: list[str] = []
    original = QueryService.data_version

    def counting(ws: Any) -> str:
        calls.append(ws.name)
        return original(ws)

    svc.data_version = counting  # type: ignore[method-assign]
    try:
        r = c.get("/", params={"model": "b2b"})
    finally:
        del svc.data_version
    assert r.status_code == 200, r.text[:300]
    assert len(calls) == 1 and "stage-funnel" in r.text


def test_saving_funnel_dropoffs_as_a_cohort_over_http(demo_shop: Any, tmp_path: Path) -> None:
    """``POST /api/cohorts`` (admin key) saves the units that dropped off at a funnel step; the
    cohort is then a breakdown of every analysis: its members reach step 1 and never step 2.
    (Its own server: the module's server lists a fixed set of cohorts.)"""
    db = demo_shop.copy_db(tmp_path)
    keys = make_keys(db)
    srv = LiveServer(db).start()
    try:
        _save_funnel_cohort(srv, keys)
    finally:
        srv.stop()


def _save_funnel_cohort(srv: LiveServer, keys: dict[str, str]) -> None:
    funnel_spec = {"steps": ["product_view", "purchase"], "window": "7d"}
    body = {"name": "viewed-not-bought", "funnel": funnel_spec, "step": "purchase", "status": "dropped"}
    denied = httpx.post(srv.url + "/api/cohorts", json=body, headers={"Authorization": f"Bearer {keys['read']}"})
    assert denied.status_code == 403
    r = httpx.post(srv.url + "/api/cohorts", json=body, headers={"Authorization": f"Bearer {keys['admin']}"},
                   timeout=120)
    assert r.status_code == 201, r.text
    saved = r.json()
    listed = _get(srv, keys["read"], "/api/funnel/people", step="2", status="dropped", **funnel_spec).json()
    assert saved["cohort"] == "viewed-not-bought" and saved["count"] == listed["count"] > 0
    assert saved["people"][:len(listed["people"])] == listed["people"]  # the first page
    split = _get(srv, keys["read"], "/api/funnel", breakdown="cohort:viewed-not-bought", **funnel_spec).json()
    members = {b["value"]: b["steps"] for b in split["breakdown"]["values"]}["member"]
    assert [s["persons"] for s in members] == [saved["count"], 0]
    bad = httpx.post(srv.url + "/api/cohorts", json={"name": "x", "funnel": funnel_spec, "step": 2, "status": "lost"},
                     headers={"Authorization": f"Bearer {keys['admin']}"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
    ids = httpx.post(srv.url + "/api/cohorts", json={"name": "vip", "people": ["p-1", "p-2"]},
                     headers={"Authorization": f"Bearer {keys['admin']}"})
    assert ids.status_code == 201 and ids.json() == {"cohort": "vip", "count": 2}
