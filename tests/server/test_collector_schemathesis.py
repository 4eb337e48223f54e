"""schemathesis over the collector's OpenAPI schema: no 5xx except the documented 503 (with Retry-After)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tests.server.conftest import ThreadServer, make_db

_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def collector_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "f.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    _state["auth"] = "Basic " + base64.b64encode(f"{keys['aa']}:".encode()).decode()  # admin: may write too
    _state["url"] = srv.url
    config = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False},
                                                      "stateful": {"enabled": False}}})
    yield schemathesis.openapi.from_url(srv.url + "/openapi.json", config=config)
    srv.stop()


schema = schemathesis.pytest.from_fixture("collector_schema")


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    response = case.call(base_url=_state["url"], headers={"Authorization": _state["auth"]}, timeout=30)
    if response.status_code == 503:
        assert "retry-after" in {k.lower() for k in response.headers}, response.text
    else:
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
