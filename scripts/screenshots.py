"""Screenshots of the main dashboard pages for the README (docs/screenshots/*.png).

Generates a small shop demo (3,000 people, seed 7) in a temporary folder, starts the server,
logs in with a read key in Chromium (/usr/bin/chromium) and saves one PNG per page.

    python scripts/screenshots.py [--out docs/screenshots] [--people 3000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.web.live import LiveServer, make_keys

import journeylens
from journeylens.demo import generate

PAGES = {
    "overview": "/",
    "funnel": "/funnel?steps=visit&steps=product_view&steps=add_to_cart&steps=purchase&window=7d&breakdown=channel",
    "paths": "/paths?level=stage&start_end_nodes=true",
    "stages": "/stages?period=month",
    "attribution": "/attribution",
    "retention": "/retention",
    "clv": "/clv",
    "surveys": "/surveys",
    "personas": "/personas",
    "experiment": "/experiment?variant=trait:device&goal=purchase",
    "map": "/map",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    ap.add_argument("--people", type=int, default=3000)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = generate(scenario="shop", people=args.people, seed=7, out_dir=Path(tmp) / "data")
        db = Path(tmp) / "demo.duckdb"
        with journeylens.open(db) as ws:
            for target in ("events", "people", "costs", "surveys"):
                ws.import_file(target, res.files[target])
            ws.save_personas(ws.personas())  # as `journeylens personas --save`: the pickers list them
        keys = make_keys(db)
        srv = LiveServer(db).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900}, base_url=srv.url)
                page.set_default_timeout(120_000)
                page.goto("/login")
                page.screenshot(path=str(args.out / "login.png"))
                page.get_by_test_id("login-key").fill(keys["read"])
                page.get_by_test_id("login-submit").click()
                page.wait_for_url(srv.url + "/")
                for name, path in PAGES.items():
                    page.goto(path)
                    page.wait_for_load_state("networkidle")
                    for chart in page.locator("div.chart").all():
                        chart.and_(page.locator("[data-rendered='1']")).wait_for()
                    page.screenshot(path=str(args.out / f"{name}.png"))
                    print(args.out / f"{name}.png")
                browser.close()
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
