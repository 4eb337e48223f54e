"""Generated reference docs stay in sync with the code that declares them."""

from __future__ import annotations

from pathlib import Path

from journeylens import config, schema

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_schema_doc_is_current() -> None:
    assert (DOCS / "schema.md").read_text() == schema.schema_markdown(), "run `make docs`"


def test_settings_doc_is_current() -> None:
    assert (DOCS / "settings.md").read_text() == config.settings_markdown(), "run `make docs`"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "settings.md").read_text()
    for s in config.SETTINGS.values():
        assert f"`{s.env}`" in text and s.help in text
