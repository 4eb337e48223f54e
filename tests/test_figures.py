"""``--figure FILE`` on the CLI: charts drawn by plotly.js in Chromium (PNG/SVG/PDF) or as offline HTML."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from journeylens.chromium import chromium_path
from journeylens.errors import JourneylensError

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Chromium (make test installs it)")


def test_every_chart_format(demo_shop: Any, tmp_path: Path) -> None:
    from journeylens.cli.app import app

    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["--db", str(demo_shop.db), *args])

    png, svg, pdf, html = (tmp_path / f"funnel.{s}" for s in ("png", "svg", "pdf", "html"))
    for path in (png, svg, pdf, html):
        res = run("funnel", "visit", "add_to_cart", "purchase", "--figure", str(path), "--format", "json")
        assert res.exit_code == 0, res.output
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1000, 600)
    text = svg.read_text()
    assert text.startswith("<svg") and "visit" in text and "purchase" in text  # the step names are drawn
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().count(b"/Type /Page\n") <= 1
    page = html.read_text()
    assert "Plotly.newPlot" in page and "<script src=" not in page  # plotly.js inline: works offline
    res = run("stages", "--figure", str(tmp_path / "stages.gif"))
    assert isinstance(res.exception, JourneylensError) and "cannot write a chart as '.gif'" in str(res.exception)
