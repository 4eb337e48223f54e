"""The collector as a real process: the official Segment client, kill -9 durability."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from pathlib import Path

import httpx

from journeylens.store.duckdb import DuckDBStore
from tests.server.conftest import ServerProcess, make_db


def test_official_segment_client_delivers_10000_events_intact(tmp_path: Path) -> None:
    from segment.analytics.client import Client

    db = tmp_path / "seg.duckdb"
    keys = make_db(db)
    t0 = time.monotonic()
    srv = ServerProcess(db).start()  # `journeylens serve`
    print(f"started in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    errors: list[str] = []
    client = Client(write_key=keys["wa"], host=srv.url, max_queue_size=20_000, upload_size=500,
                    on_error=lambda e, batch: errors.append(str(e)), max_retries=3)
    expected: dict[str, tuple[str, str, int]] = {}
    for i in range(10_000):
        mid = f"seg-{i:05d}"
        user = f"user-{i % 977}"
        event = ("visit", "product_view", "add_to_cart", "purchase")[i % 4]
        client.track(user_id=user, event=event, properties={"i": i, "touchpoint": "shop", "revenue": i % 50},
                     context={"campaign": {"source": "google", "medium": "cpc", "name": f"c{i % 7}"}},
                     message_id=mid)
        expected[mid] = (user, event, i)
    print(f"queued in {time.monotonic() - t0:.1f} s")
    client.flush()
    client.shutdown()
    print(f"delivered in {time.monotonic() - t0:.1f} s")
    assert srv.stop() == 0
    assert errors == []
    store = DuckDBStore(db)
    try:
        rows = store.query("SELECT message_id, user_id, event, properties, revenue, utm_campaign, channel, type, "
                           "workspace FROM events")
    finally:
        store.close()
    assert len(rows) == 10_000
    got = {r[0]: r for r in rows}
    assert set(got) == set(expected)
    for mid, (user, event, i) in expected.items():
        r = got[mid]
        props = json.loads(r[3])
        assert (r[1], r[2], props["i"], r[4], r[5], r[6], r[7], r[8]) == (
            user, event, i, float(i % 50), f"c{i % 7}", "paid_search", "track", "A")


def test_kill_9_never_loses_or_duplicates_an_acknowledged_event(tmp_path: Path) -> None:
    """Two senders retry unacknowledged batches with the same ids while the server is killed twice
    (benchmarks/crash_collector.py does it 20+ times)."""
    db = tmp_path / "crash.duckdb"
    keys = make_db(db)
    srv = ServerProcess(db, light=True).start()
    acked: set[str] = set()
    stop = threading.Event()
    attempts = [0]

    def sender() -> None:
        rnd = random.Random(1)
        while not stop.is_set():
            batch = [{"type": "track", "event": "crash", "userId": f"u{rnd.randrange(50)}",
                      "messageId": str(uuid.uuid4())} for _ in range(rnd.choice([1, 50, 200]))]
            while not stop.is_set():  # retry the same batch until acknowledged
                attempts[0] += 1
                try:
                    r = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=5)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    body = r.json()
                    assert body["accepted"] + body["duplicates"] == len(batch)
                    acked.update(m["messageId"] for m in batch)
                    break
                assert r.status_code == 503, r.text
                time.sleep(0.05)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    rnd = random.Random(2)
    for _ in range(2):
        time.sleep(rnd.uniform(0.5, 2.0))
        srv.kill9()
        srv.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert srv.stop() == 0
    store = DuckDBStore(db)  # reopens after every crash (WAL replay)
    try:
        ids = [r[0] for r in store.query("SELECT message_id FROM events WHERE event = 'crash'")]
    finally:
        store.close()
    assert len(acked) > 200
    assert len(ids) == len(set(ids))  # nothing stored twice
    assert acked <= set(ids)  # every acknowledged id is stored
