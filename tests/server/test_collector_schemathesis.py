"""schemathesis over the collector's OpenAPI schema: no 5xx except the documented 503 (with Retry-After)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from tests.server.conftest import ThreadServer, make_db


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "f.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    auth = "Basic " + base64.b64encode(f"{keys['aa']}:".encode()).decode()  # admin: may write too
    yield srv.url, auth
    srv.stop()


def test_no_server_errors(collector: tuple[str, str]) -> None:
    """Every operation of the collector's OpenAPI schema with generated bodies and parameters
    (10 derandomized examples each; schemathesis' coverage and stateful phases off to stay fast):
    no 5xx except 503 with Retry-After. Runs schemathesis programmatically (its pytest plugin
    breaks under pytest-xdist)."""
    url, auth = collector
    config = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False},
                                                      "stateful": {"enabled": False}}})
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    failures: list[str] = []
    checked = 0
    for found in schema.get_all_operations():
        op = found.ok()
        checked += 1

        @given(case=op.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(base_url=url, headers={"Authorization": auth}, timeout=30)
            if response.status_code == 503:
                assert "retry-after" in {k.lower() for k in response.headers}, response.text
            elif response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        run()
    assert checked >= 10
    assert not failures, "\n".join(failures)
