"""Fixtures for the importer tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.ingest.ingest_helpers import Writer


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """write(name, text) -> path in tmp_path; ``.gz`` names are gzip-compressed."""

    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        data = text.encode("utf-8") if isinstance(text, str) else text
        if name.endswith(".gz"):
            data = gzip.compress(data)
        path.write_bytes(data)
        return path

    return _write
