"""The collector's fast paths give the same answers as the plain ones.

* the key-hash index (only keys whose hash is known are looked up in ``events``) stores every
  new key once and counts every retried key as a duplicate, also after a restart;
* validation in the worker process equals :func:`validate_messages` on the thread, and the
  worker exits when its server dies;
* orjson parsing/sizing agrees with the stdlib (the reference) on everything it accepts;
* an identity rebuild runs beside the commits and does not hold acknowledgements back;
* ``journeylens <command>`` imports only that command's module; the server imports no analyses.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeylens.ingest import live
from journeylens.ingest.convert import Duck
from journeylens.server.collect import _DECODER, Limits, decode_body, prepare
from journeylens.server.privacy import IpMask
from journeylens.server.writer import EVENT_KEY, Job, KeyIndex, Outcome, Writer
from journeylens.store.duckdb import DuckDBStore
from tests.server.conftest import ThreadServer, make_db

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def _msgs(prefix: str, n: int, kind: str = "track") -> list[dict[str, Any]]:
    return [{"type": kind, "event": "e", "userId": f"u{i % 7}", "messageId": f"{prefix}-{i}",
             "timestamp": "2024-05-01T10:00:00Z", "properties": {"revenue": i}} for i in range(n)]


def _send(w: Writer, workspace: str, msgs: list[dict[str, Any]]) -> Outcome:
    prepared = prepare({"batch": [dict(m) for m in msgs]}, "batch", NOW, LIMITS, IpMask())
    box: list[Any] = []
    ev = threading.Event()
    w.submit(Job(workspace, "test", NOW, prepared.messages, prepared.quarantined,
                 lambda r: (box.append(r), ev.set())))
    assert ev.wait(120)
    assert isinstance(box[0], Outcome), box[0]
    return box[0]


# ------------------------------------------------------------------ key index
def test_key_hashes_of_the_table_equal_those_of_its_rows(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "h.duckdb")
    duck = Duck("UTC")
    try:
        msgs = [m for _, m in prepare({"batch": _msgs("m", 3) + _msgs("ü-ß", 1)}, "batch", NOW, LIMITS,
                                      IpMask()).messages]
        rows = pa.concat_tables([live.validate_messages([dict(m) for m in msgs], ws, NOW, duck).accepted
                                 for ws in ("A", "B")])
        store.append_parts([("events", rows, ())])
        from_rows = store.key_hashes("events", EVENT_KEY, rows)
        stored = store.key_hashes("events", EVENT_KEY)
        assert sorted(from_rows.tolist()) == sorted(stored.tolist())
        assert len(set(from_rows.tolist())) == 8  # (A, m-0) and (B, m-0) differ
    finally:
        store.close()
        duck.close()


def test_key_index_is_a_superset_and_merges() -> None:
    idx = KeyIndex()
    rng = np.random.default_rng(7)
    known = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    idx.add(known[:600])
    idx.base = np.unique(known[:400])  # as if loaded; recent holds all 600
    probe = np.concatenate([known, rng.integers(0, 2**63, 1000, dtype=np.uint64)])
    hit = idx.maybe_present(probe)
    assert hit[:600].all() and not hit[600:1000].any()
    assert hit[1000:].sum() == 0  # random 63-bit values: no collision expected
    idx.add(rng.integers(0, 2**63, 250_000, dtype=np.uint64))  # forces a merge into base
    assert not idx.recent and len(idx.base) >= 250_000
    assert idx.maybe_present(known[:600]).all()


def test_writer_dedupes_new_retried_and_restarted_keys(tmp_path: Path) -> None:
    db = str(tmp_path / "d.duckdb")
    w = Writer(db, validate_workers=0)
    w.start()
    try:
        first = _send(w, "A", _msgs("m", 50))
        assert (first.accepted, first.duplicates) == (50, 0)
        again = _send(w, "A", _msgs("m", 50)[10:] + _msgs("n", 5))  # 40 retried + 5 new
        assert (again.accepted, again.duplicates) == (5, 40)
        other_ws = _send(w, "B", _msgs("m", 3))  # same ids, other workspace: new
        assert (other_ws.accepted, other_ws.duplicates) == (3, 0)
    finally:
        w.stop()
    w2 = Writer(db, validate_workers=0)  # the index is loaded from the file
    w2.start()
    try:
        assert len(w2.index) == 58
        retry = _send(w2, "A", _msgs("m", 50) + _msgs("p", 2))
        assert (retry.accepted, retry.duplicates) == (2, 50)
        rows = w2.run_sync(lambda s: s.query(
            "SELECT count(*), count(DISTINCT (workspace, message_id)) FROM events"))
    finally:
        w2.stop()
    assert rows == [(60, 60)]


# ------------------------------------------------------------------ validation worker
_TRICKY: list[dict[str, Any]] = [
    {"type": "track", "event": "big", "userId": "u1", "messageId": "t1", "timestamp": "2024-05-01T10:00:00Z",
     "properties": {"n": 123456789012345678901234567890, "x": float("inf"), "s": "ü\u2028"}},
    {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": "t2", "timestamp": "yesterday"},
    {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "t3", "traits": {"plan": "pro"},
     "timestamp": "2024-05-01T09:00:00+02:00"},
    {"type": "track", "event": "x", "userId": "u2", "messageId": "t4", "timestamp": "2024-05-01T10:00:00Z",
     "properties": {"revenue": "lots"}},
    {"type": "group", "userId": "u2", "groupId": "acme", "messageId": "t5", "timestamp": "2024-05-01T10:00:00Z"},
]


def test_worker_validates_exactly_like_the_thread() -> None:
    worker = live.ValidationWorker()
    duck = Duck("UTC")
    try:
        deadline = time.monotonic() + 60
        while not worker.ready:
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        msgs = [json.loads(json.dumps(m)) if i != 0 else dict(m) for i, m in enumerate(_TRICKY)]
        here = live.validate_messages([dict(m) for m in msgs], "W", NOW, duck)
        there, there_hashes = worker.validate([dict(m) for m in msgs], "W", NOW)
        here_hashes = live.key_hashes(here.accepted, duck)
    finally:
        worker.close()
        duck.close()
    store = DuckDBStore(":memory:")
    try:  # the worker's hashes are the store's hashes of the same keys (the index relies on it)
        assert there_hashes.tolist() == here_hashes.tolist() == \
            store.key_hashes("events", EVENT_KEY, here.accepted).tolist()
    finally:
        store.close()
    assert there.accepted.equals(here.accepted)
    assert there.accepted_items == here.accepted_items
    assert there.rejected == here.rejected
    assert sorted(g for g, *_ in here.rejected) == [1, 3]  # bad timestamp, not numeric


def test_worker_exits_when_its_server_is_killed(tmp_path: Path) -> None:
    script = ("from journeylens.ingest.live import ValidationWorker; import time, sys; "
              "w = ValidationWorker(); print(w.proc.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it became our zombie (it is re-parented to init normally)
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the validation worker outlived its killed server")


# ------------------------------------------------------------------ orjson vs stdlib
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_decode_equals_the_stdlib(value: Any) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert _same(decode_body(body, None, "application/json", LIMITS), _DECODER.decode(body.decode()))


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"n": 123456789012345678901}', '[1e400]',
                                  '\ufeff{"a": 1}', '"\\ud800"', '{"n": 9223372036854775808}', '-0.0'])
def test_decode_edge_cases_equal_the_stdlib(text: str) -> None:
    assert _same(decode_body(text.encode(), None, None, LIMITS), _DECODER.decode(text.lstrip("\ufeff")))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), _json_values | st.floats(), max_size=6), st.integers(10, 400))
def test_event_size_limit_decides_like_the_stdlib(msg: dict[str, Any], limit: int) -> None:
    exact = len(json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    size, _ = live._size(msg, limit)
    assert (size > limit) == (exact > limit)
    assert size == exact or size * 5 <= limit * 2


# ------------------------------------------------------------------ identity rebuild beside commits
def test_identity_rebuild_does_not_hold_back_acknowledgements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import journeylens.identity as identity

    real = identity.rebuild_identities
    running = threading.Event()

    def slow(store: Any, workspace: str) -> Any:
        running.set()
        time.sleep(3)
        return real(store, workspace)

    monkeypatch.setattr(identity, "rebuild_identities", slow)
    w = Writer(str(tmp_path / "i.duckdb"), validate_workers=0)
    w.start()
    try:
        _send(w, "A", [{"type": "identify", "anonymousId": "a9", "userId": "u9", "messageId": "i1"}])
        assert running.wait(30)
        t0 = time.monotonic()
        out = _send(w, "A", _msgs("during", 20))
        took = time.monotonic() - t0
        assert out.accepted == 20 and took < 2.5  # answered while the 3 s rebuild runs
        deadline = time.monotonic() + 30
        rows: list[Any] = []
        while time.monotonic() < deadline and not rows:
            rows = w.run_sync(lambda s: s.query("SELECT id FROM identities WHERE person_id = 'u9' AND id = 'a9'"))
            time.sleep(0.2)
    finally:
        w.stop()
    assert rows == [("a9",)]


# ------------------------------------------------------------------ end to end through the worker
def test_server_with_validation_worker_stores_each_event_once(tmp_path: Path) -> None:
    import httpx

    db = tmp_path / "e.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    try:
        deadline = time.monotonic() + 90
        writer = srv.app.state.collector.writer
        n = 0
        while not (len(writer.workers) == 2 and all(w is not None and w.ready for w in writer.workers.values())):
            assert time.monotonic() < deadline, "the validation workers did not start"
            n += 1  # workers start with their thread's first group
            httpx.post(srv.url + "/v1/track", json={"event": "warm", "userId": "w", "messageId": f"warm-{n}"},
                       auth=(keys["wa"], ""), timeout=60)
            time.sleep(0.05)
        batch = [*_msgs("e2e", 300), {"type": "track", "userId": "u"}]  # the last lacks event
        r = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=60)
        r2 = httpx.post(srv.url + "/v1/batch", json={"batch": batch[:300]}, auth=(keys["wa"], ""), timeout=60)
        n = srv.query("SELECT count(*), count(DISTINCT message_id) FROM events WHERE message_id LIKE 'e2e-%'")
    finally:
        srv.stop()
    assert r.status_code == 200 and r.json()["accepted"] == 300
    assert r.json()["quarantined"] == [{"index": 300, "reason": "track needs event"}]
    assert r2.json()["duplicates"] == 300 and r2.json()["accepted"] == 0
    assert n == [(300, 300)]


# ------------------------------------------------------------------ start-up imports
def _imported(args: list[str]) -> set[str]:
    """Every module a Python process imports (``python -v``: also those of ``importlib.import_module``,
    which ``-X importtime`` does not list)."""
    proc = subprocess.run([sys.executable, "-v", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split("'")[1] for line in proc.stderr.splitlines() if line.startswith("import '")}


def test_a_command_imports_only_its_own_module() -> None:
    mods = _imported(["-m", "journeylens", "keys", "--help"])
    assert "journeylens.cli.serve" in mods
    heavy = {"scipy", "sklearn", "pandas", "journeylens.analyses", "journeylens.workspace", "journeylens.cli.funnel"}
    assert not heavy & mods


def test_the_server_imports_no_analyses() -> None:
    mods = _imported(["-c", "import journeylens.server.app"])
    assert not {"scipy", "sklearn", "pandas", "journeylens.analyses", "journeylens.workspace"} & mods


def test_invoked_command_skips_global_options() -> None:
    from journeylens.cli.app import COMMAND_MODULES, _invoked_command

    assert _invoked_command(["--db", "x.duckdb", "-w", "A", "funnel", "a", "b"]) == "funnel"
    assert _invoked_command(["--db=x.duckdb", "keys", "list"]) == "keys"
    assert _invoked_command(["--help"]) is None
    assert COMMAND_MODULES["retention"] == "retention" and COMMAND_MODULES["purge"] == "serve"


# ------------------------------------------------------------------ depth check short cut
def _nest(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value, "{[{["]
    return value


@settings(max_examples=300, deadline=None)
@given(_json_values | st.integers(0, 80).map(_nest) | st.integers(0, 80).map(lambda d: _nest(d, "[[[{{{")),
       st.integers(0, 70))
def test_too_deep_decides_like_the_walk(value: Any, limit: int) -> None:
    assert live.too_deep(value, limit) == live.depth_exceeds(value, limit)


def test_too_deep_at_the_limits() -> None:
    for d in (63, 64, 65, 66, 300):
        v = _nest(d)
        assert live.too_deep(v, live.MAX_DEPTH) == live.depth_exceeds(v, live.MAX_DEPTH) == (d > live.MAX_DEPTH)


def test_collector_only_process_runs_duckdb_on_one_thread(tmp_path: Path) -> None:
    """Group inserts are small: the collector alone sets DuckDB to one thread; with the query API and the
    dashboard in the process (create_server) DuckDB keeps one thread per core; a setting wins over both."""
    from fastapi.testclient import TestClient

    from journeylens.server.app import CollectorSettings, create_app
    from journeylens.server.site import create_server

    def threads(app: Any) -> int:
        with TestClient(app):
            return int(app.state.collector.writer.run_sync(lambda s: s.query("SELECT current_setting('threads')"))[0][0])

    assert threads(create_app(str(tmp_path / "a.duckdb"), CollectorSettings(validate_workers=0))) == 1
    import duckdb

    default = int(duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
    assert threads(create_server(str(tmp_path / "b.duckdb"), CollectorSettings(validate_workers=0))) == default
    assert threads(create_app(str(tmp_path / "c.duckdb"), CollectorSettings(validate_workers=0, duckdb_threads=2))) == 2
