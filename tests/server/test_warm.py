"""Cache warming (server/warm.py) with a real server on the shop demo: after start-up and after a
live event changes the data version, the dashboard's default queries become cache hits without any
request in between; the warmed keys are the pages' keys; commits are coalesced."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from journeylens.server.app import CollectorSettings
from journeylens.server.site import create_server
from journeylens.server.warm import PAGE_QUERIES, Warmer, WarmSettings
from tests.web.live import free_port, make_keys

FAST = WarmSettings(poll=0.2, settle=0.5, max_delay=10.0, min_interval=0.0)


class WarmServer:
    def __init__(self, db: Path, warm: WarmSettings | bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_server(str(db), CollectorSettings(public_url=self.url), warm=warm)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> WarmServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(120)

    @property
    def warmer(self) -> Warmer:
        w = self.app.state.warmer
        assert isinstance(w, Warmer)
        return w


def _wait(cond: Any, timeout: float = 600, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def warm_live(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WarmServer, dict[str, str]]]:
    db = demo_shop.copy_db(tmp_path_factory.mktemp("warm"))
    keys = make_keys(db)
    srv = WarmServer(db, FAST).start()
    yield srv, keys
    srv.stop()


def _api(srv: WarmServer, key: str, path: str) -> httpx.Response:
    return httpx.get(srv.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def _complete_runs(srv: WarmServer) -> list[Any]:
    return [r for r in srv.warmer.runs if r.complete and r.workspace == "default"]


def test_start_up_warms_every_default_page_with_the_pages_keys(warm_live: Any) -> None:
    srv, keys = warm_live
    _wait(lambda: _complete_runs(srv), what="the first warm-up")
    run = _complete_runs(srv)[0]
    assert run.failed == 0 and run.computed + run.cached == len(PAGE_QUERIES)
    # workspace 'other' has a read key too: it is warmed as well (no data: its answers may fail alike)
    _wait(lambda: any(r.workspace == "other" for r in srv.warmer.runs) and not srv.warmer.running,
          what="warm-up of workspace other")
    svc = srv.app.state.query
    misses = svc.misses
    c = httpx.Client(base_url=srv.url, timeout=300)
    form = c.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    c.post("/login", data={"key": keys["read"], "csrf": token.group(1), "next": "/"})
    for page in dict.fromkeys(p for p, _, _ in PAGE_QUERIES):
        r = c.get(page)
        assert r.status_code == 200, (page, r.text[:300])
        assert svc.misses == misses, f"page {page} computed a query the warm-up did not (different cache key)"


def test_live_event_makes_overview_a_cache_hit_without_a_request(warm_live: Any) -> None:
    srv, keys = warm_live
    _wait(lambda: _complete_runs(srv), what="the first warm-up")
    before = _api(srv, keys["read"], "/api/overview")
    assert before.headers["x-cache"] == "hit"
    n_runs = len(_complete_runs(srv))
    msg = {"type": "track", "event": "visit", "userId": "warm-visitor-1", "messageId": "warm-test-1",
           "timestamp": "2026-03-01T10:00:00Z", "properties": {}}
    w = httpx.post(srv.url + "/v1/track", json=msg, auth=(keys["write"], ""), timeout=30)
    assert w.status_code == 200 and w.json()["accepted"] == 1, w.text
    # no request to the API or the dashboard in between: only the warmer's own record is watched
    _wait(lambda: len(_complete_runs(srv)) > n_runs, what="the warm-up after the event")
    after = _api(srv, keys["read"], "/api/overview")
    assert after.headers["x-cache"] == "hit"
    assert after.headers["x-data-version"] != before.headers["x-data-version"]
    assert after.json()["events"] == before.json()["events"] + 1


def test_a_burst_of_commits_is_coalesced(warm_live: Any) -> None:
    srv, keys = warm_live
    _wait(lambda: _complete_runs(srv) and not srv.warmer.running, what="an idle warmer")
    n_runs = len(srv.warmer.runs)
    commits = 0
    with httpx.Client(auth=(keys["write"], "")) as c:
        for i in range(15):
            msg = {"type": "track", "event": "blog_read", "anonymousId": f"burst-{i}", "messageId": f"burst-{i}",
                   "timestamp": "2026-04-01T10:00:00Z"}
            commits += c.post(srv.url + "/v1/track", json=msg, timeout=30).status_code == 200
            time.sleep(0.05)
    assert commits == 15
    _wait(lambda: len(_complete_runs(srv)) > 0 and _api(srv, keys["read"], "/api/version").json()["version"]
          == _complete_runs(srv)[-1].version, what="the warm-up after the burst")
    # 15 commits (each a new data version) while settle = 0.5 s: far fewer warm-ups than commits
    assert len([r for r in srv.warmer.runs[n_runs:] if r.workspace == "default"]) <= 3


def test_warming_is_off_by_default(demo_shop: Any, tmp_path: Path) -> None:
    srv = WarmServer(demo_shop.copy_db(tmp_path), False)
    assert srv.app.state.warmer is None
