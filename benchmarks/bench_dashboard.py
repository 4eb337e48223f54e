"""Benchmark: dashboard page loads on a ~1M-event shop demo, cold (computed) and warm (cached).

Generates (or reuses) the demo under ``--data`` (default benchmarks/data), imports it into a
DuckDB file once, starts ``create_server`` in uvicorn on a thread, logs in with a read key and
times full HTML page responses (server side: every analysis of the page plus rendering;
the browser's Plotly drawing is not included). Target (issue #8): a page load < 2 s.

Columns: ``cold`` — first load on a server without cache warming (every analysis computed);
``reload`` — the same page again (cached); ``after warm-up`` — first load on a second server
started with cache warming (``create_server(warm=True)``, server/warm.py) once its first warm-up
finished (the warm-up's own duration is printed below the table). ``--no-cold`` skips the first
server, ``--no-warm`` the second.

    python benchmarks/bench_dashboard.py --people 55000
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from rich.console import Console
from rich.table import Table
from tests.web.live import LiveServer, make_keys
from uvicorn import Config, Server

import journeylens
from journeylens.demo import generate
from journeylens.server.app import CollectorSettings
from journeylens.server.site import create_server
from journeylens.server.warm import Warmer

PAGES = ("/", "/funnel", "/paths", "/stages", "/attribution", "/retention", "/clv", "/surveys", "/personas",
         "/painpoints", "/map", "/settings")


def demo_db(people: int, data: Path, seed: int = 7) -> tuple[Path, int]:
    folder = data / f"shop-{people}-{seed}"
    db = folder / "dashboard.duckdb"
    if not db.exists():
        if not (folder / "truth.json").exists():
            generate(scenario="shop", people=people, seed=seed, out_dir=folder)
        with journeylens.open(db) as ws:
            for target in ("events", "people", "costs", "surveys"):
                ws.import_file(target, folder / {"events": "events.parquet", "people": "people.csv",
                                                 "costs": "costs.csv", "surveys": "surveys.csv"}[target])
    with journeylens.open(db) as ws:
        events = int(ws.events().count().execute())
    return db, events


class WarmLiveServer(LiveServer):
    """:class:`LiveServer` with cache warming on."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.app = create_server(str(db), CollectorSettings(public_url=self.url), warm=True)
        self.server = Server(Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                    access_log=False))
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)


def login(srv: LiveServer, key: str) -> httpx.Client:
    c = httpx.Client(base_url=srv.url, timeout=600)
    form = c.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    c.post("/login", data={"key": key, "csrf": token.group(1), "next": "/"})
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=55_000, help="Demo people (55,000 ≈ 1M events).")
    ap.add_argument("--data", type=Path, default=Path(__file__).parent / "data", help="Cache folder for the demo.")
    ap.add_argument("--pages", nargs="*", default=list(PAGES))
    ap.add_argument("--no-cold", action="store_true", help="Skip the server without cache warming.")
    ap.add_argument("--no-warm", action="store_true", help="Skip the server with cache warming.")
    args = ap.parse_args()
    db, events = demo_db(args.people, args.data)
    keys = make_keys(db)
    cold: dict[str, tuple[int, float, float]] = {}
    if not args.no_cold:
        srv = LiveServer(db).start()
        try:
            c = login(srv, keys["read"])
            for path in args.pages:
                t0 = time.perf_counter()
                first = c.get(path)
                t1 = time.perf_counter()
                again = c.get(path)
                t2 = time.perf_counter()
                cold[path] = (max(first.status_code, again.status_code), t1 - t0, t2 - t1)
        finally:
            srv.stop()
    warmed: dict[str, tuple[int, float]] = {}
    warm_note = "warm-up not measured"
    if not args.no_warm:
        wsrv = WarmLiveServer(db).start()
        try:
            warmer = wsrv.app.state.warmer
            assert isinstance(warmer, Warmer)
            t0 = time.perf_counter()
            while not any(r.complete and r.workspace == "default" for r in warmer.runs):
                time.sleep(0.2)
            run = next(r for r in warmer.runs if r.complete and r.workspace == "default")
            warm_note = (f"warm-up: {run.computed} queries computed in {run.seconds:.1f} s "
                         f"(ready {time.perf_counter() - t0:.1f} s after start-up)")
            c = login(wsrv, keys["read"])
            for path in args.pages:
                t0 = time.perf_counter()
                r = c.get(path)
                warmed[path] = (r.status_code, time.perf_counter() - t0)
        finally:
            wsrv.stop()
    t = Table(title=f"Dashboard page loads, {events:,} events ({args.people:,} people)", title_justify="left")
    for col in ("page", "status", "cold s", "reload (cached) s", "after warm-up s", "< 2 s"):
        t.add_column(col, justify="left" if col == "page" else "right")
    for path in args.pages:
        status = max(cold.get(path, (0,))[0], warmed.get(path, (0,))[0])
        c_s = f"{cold[path][1]:.2f}" if path in cold else "–"
        r_s = f"{cold[path][2]:.3f}" if path in cold else "–"
        w_s = f"{warmed[path][1]:.3f}" if path in warmed else "–"
        first_view = warmed[path][1] if path in warmed else (cold[path][1] if path in cold else float("inf"))
        t.add_row(path, str(status), c_s, r_s, w_s, "yes" if first_view < 2 else "NO")
    console = Console()
    console.print(t)
    console.print(warm_note)


if __name__ == "__main__":
    main()
