"""Fixtures of the demo generator tests: one small generated data set per scenario."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from journeylens.demo import generate
from tests.demo.demo_checks import B2B_PEOPLE, SHOP_PEOPLE, Run, load


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("shop")
    yield load(generate(scenario="shop", people=SHOP_PEOPLE, seed=42, out_dir=out,
                         start=date(2026, 1, 1), days=180))


@pytest.fixture(scope="session")
def b2b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("b2b")
    yield load(generate(scenario="b2b", people=B2B_PEOPLE, seed=7, out_dir=out,
                         start=date(2026, 1, 1), days=180))


@pytest.fixture(params=["shop", "b2b"])
def run(request: pytest.FixtureRequest) -> Run:
    fixture: Run = request.getfixturevalue(request.param)
    return fixture


