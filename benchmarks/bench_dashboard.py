"""Benchmark: dashboard page loads on a ~1M-event shop demo, cold (computed) and warm (cached).

Generates (or reuses) the demo under ``--data`` (default benchmarks/data), imports it into a
DuckDB file once, starts ``create_server`` in uvicorn on a thread, logs in with a read key and
times full HTML page responses (server side: every analysis of the page plus rendering;
the browser's Plotly drawing is not included). Target (issue #8): a page load < 2 s.

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

import journeylens
from journeylens.demo import generate

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=55_000, help="Demo people (55,000 ≈ 1M events).")
    ap.add_argument("--data", type=Path, default=Path(__file__).parent / "data", help="Cache folder for the demo.")
    ap.add_argument("--pages", nargs="*", default=list(PAGES))
    args = ap.parse_args()
    db, events = demo_db(args.people, args.data)
    keys = make_keys(db)
    srv = LiveServer(db).start()
    rows = []
    try:
        c = httpx.Client(base_url=srv.url, timeout=600)
        form = c.get("/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None
        c.post("/login", data={"key": keys["read"], "csrf": token.group(1), "next": "/"})
        for path in args.pages:
            t0 = time.perf_counter()
            cold = c.get(path)
            t1 = time.perf_counter()
            warm = c.get(path)
            t2 = time.perf_counter()
            rows.append((path, max(cold.status_code, warm.status_code), t1 - t0, t2 - t1))
    finally:
        srv.stop()
    t = Table(title=f"Dashboard page loads, {events:,} events ({args.people:,} people)", title_justify="left")
    for col in ("page", "status", "cold s", "warm (cached) s", "< 2 s warm"):
        t.add_column(col, justify="left" if col == "page" else "right")
    for path, status, cold_s, warm_s in rows:
        t.add_row(path, str(status), f"{cold_s:.2f}", f"{warm_s:.3f}", "yes" if warm_s < 2 else "NO")
    Console().print(t)


if __name__ == "__main__":
    main()
