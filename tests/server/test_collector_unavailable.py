"""The documented 503 paths (queue full, storage failing) and the body read timeout."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from journeylens.ingest.live import Limits
from journeylens.server.app import CollectorSettings
from journeylens.server.writer import Call
from journeylens.store.duckdb import DuckDBStore
from tests.server.conftest import ThreadServer, make_db


def _batch(n: int) -> list[dict[str, Any]]:
    return [{"type": "track", "event": "visit", "userId": "u1", "messageId": str(uuid.uuid4())} for _ in range(n)]


def _stored(srv: ThreadServer, ids: list[str]) -> int:
    rows = srv.query(f"SELECT count(*) FROM events WHERE message_id IN ({', '.join('?' * len(ids))})", ids)
    return int(rows[0][0])


def test_queue_full_answers_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    db = tmp_path / "q.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db, CollectorSettings(queue_events=5)).start()
    try:
        release = threading.Event()
        writer = srv.app.state.collector.writer
        writer.submit(Call(lambda s: release.wait(20), lambda r: None))  # the writer is busy
        batch = _batch(10)
        r = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["code"] == "queue_full"
        release.set()
        assert _stored(srv, [m["messageId"] for m in batch]) == 0  # never a 200, never stored
        r2 = httpx.post(srv.url + "/v1/batch", json={"batch": batch[:4]}, auth=(keys["wa"], ""), timeout=30)
        assert r2.status_code == 200 and r2.json()["accepted"] == 4
    finally:
        srv.stop()


def test_storage_failure_answers_503_and_a_retry_stores_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    try:
        original = DuckDBStore.write_atomic

        def failing(self: DuckDBStore, *a: Any, **k: Any) -> Any:
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(DuckDBStore, "write_atomic", failing)
        batch = _batch(20)
        r = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["code"] == "storage_unavailable" and "disk full" in r.json()["message"]
        metrics = httpx.get(srv.url + "/metrics", timeout=10).text
        assert "journeylens_commit_failures_total 1" in metrics
        monkeypatch.setattr(DuckDBStore, "write_atomic", original)
        assert _stored(srv, [m["messageId"] for m in batch]) == 0
        r2 = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=30)
        assert r2.status_code == 200 and r2.json()["accepted"] == 20
        r3 = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=30)
        assert r3.json()["duplicates"] == 20
        assert _stored(srv, [m["messageId"] for m in batch]) == 20
    finally:
        srv.stop()


def test_body_read_timeout_is_a_400_not_a_hang(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db, CollectorSettings(limits=Limits(body_timeout=0.5))).start()
    try:
        import base64

        auth = base64.b64encode(f"{keys['wa']}:".encode()).decode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Authorization: Basic {auth}\r\nContent-Length: 1000\r\n\r\n".encode()
                      + b'{"event": "visit", ')  # and then nothing more
            started = time.monotonic()
            answer = s.recv(4096).decode()
            waited = time.monotonic() - started
            while not answer.rstrip().endswith("}"):
                more = s.recv(4096).decode()
                if not more:
                    break
                answer += more
        assert answer.startswith("HTTP/1.1 400"), answer
        assert '"code":"body_timeout"' in answer.replace(" ", "")
        assert 0.3 < waited < 5
        # the partial body was quarantined (valid key in the header)
        rows = srv.query("SELECT reason, raw FROM quarantine WHERE workspace = 'A'")
        assert any(r[0].startswith("body_timeout") and r[1].startswith('{"event": "visit"') for r in rows)
    finally:
        srv.stop()
