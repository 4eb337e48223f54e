"""Headless Chromium (through Playwright) for the PNG/PDF/SVG renderings: journey maps and charts.

Debian's ``/usr/bin/chromium`` is used when present (``make test`` installs it), else
``JOURNEYLENS_CHROMIUM``, else Playwright's own download.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from journeylens.errors import JourneylensError

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """The Chromium binary to use: ``JOURNEYLENS_CHROMIUM``, else Debian's, else Playwright's own."""
    env = os.environ.get("JOURNEYLENS_CHROMIUM")
    if env:
        return env
    return next((p for p in CHROMIUM_PATHS if Path(p).exists()), None)


def with_page(html: str, action: Callable[[Any], Any], width: int, *, what: str = "the page") -> None:
    """Load ``html`` in a headless Chromium page ``width`` CSS pixels wide and call ``action(page)``."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a dependency of the dev extra only
        raise JourneylensError("rendering PNG/PDF/SVG needs the 'playwright' package (pip install playwright)") \
            from None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
                page.set_content(html, wait_until="load")
                action(page)
            finally:
                browser.close()
    except PlaywrightError as exc:
        first = str(exc).splitlines()[0]
        raise JourneylensError(f"Chromium could not render {what}: {first}",
                               hint="install chromium (apt-get install chromium) or set JOURNEYLENS_CHROMIUM") from None


FIGURE_SUFFIXES = (".html", ".htm", ".png", ".svg", ".pdf")


def save_figure(fig: Any, path: Path, *, width: int = 1000, height: int = 600) -> Path:
    """Write a Plotly figure by the suffix of ``path``: ``.html`` (plotly.js inline, works offline),
    ``.png``/``.svg`` (drawn by plotly.js in Chromium at ``width`` x ``height``) or ``.pdf``."""
    suffix = path.suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise JourneylensError(f"cannot write a chart as '{suffix or path.name}'",
                               hint="use .html, .png, .svg or .pdf")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        fig.write_html(str(path), include_plotlyjs=True)
        return path
    html = fig.to_html(include_plotlyjs=True, full_html=True, default_width=f"{width}px",
                       default_height=f"{height}px")

    def draw(page: Any) -> None:
        page.wait_for_selector(".plotly-graph-div .main-svg")
        if suffix == ".pdf":
            page.pdf(path=str(path), width=f"{width + 40}px", height=f"{height + 60}px", print_background=True,
                     page_ranges="1", margin={"top": "0", "bottom": "0", "left": "0", "right": "0"})
            return
        fmt = suffix.lstrip(".")
        url = page.evaluate(
            "([fmt, w, h]) => Plotly.toImage(document.querySelector('.plotly-graph-div'), "
            "{format: fmt, width: w, height: h})", [fmt, width, height])
        header, _, data = str(url).partition(",")
        path.write_bytes(base64.b64decode(data) if header.endswith(";base64") else unquote(data).encode())

    with_page(html, draw, width + 40, what="the chart")
    return path
