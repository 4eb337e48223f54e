"""Crash loop: kill -9 the collector at random moments while clients send.

Clients retry unacknowledged batches with the same messageIds. After
``--kills`` kills and restarts, the server is stopped and the DuckDB file
reopened: every acknowledged messageId must be stored exactly once.

    python benchmarks/crash_collector.py --kills 20 --clients 4
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.conftest import ServerProcess, make_db


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    db = Path(tempfile.mkdtemp(prefix="jl-crash-")) / "crash.duckdb"
    keys = make_db(db)
    srv = ServerProcess(db, light=True).start()
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"requests": 0, "connection_errors": 0, "503": 0, "200": 0, "other": 0}

    def client(n: int) -> None:
        rnd = random.Random(args.seed + n)
        while not stop.is_set():
            batch = [{"type": "track", "event": "crash", "userId": f"u{rnd.randrange(100)}",
                      "messageId": str(uuid.uuid4())} for _ in range(rnd.choice([1, 10, 100, 300]))]
            while not stop.is_set():
                try:
                    r = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(keys["wa"], ""), timeout=10)
                except httpx.HTTPError:
                    counts["connection_errors"] += 1
                    time.sleep(0.05)
                    continue
                counts["requests"] += 1
                key = str(r.status_code) if r.status_code in (200, 503) else "other"
                counts[key] += 1
                if r.status_code == 200:
                    with lock:
                        acked.update(m["messageId"] for m in batch)
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    rnd = random.Random(args.seed)
    reopen_ok = 0
    for k in range(args.kills):
        time.sleep(rnd.uniform(0.2, 3.0))
        srv.kill9()
        srv.start()  # reopening the file (WAL replay) is part of starting
        reopen_ok += 1
        print(f"kill {k + 1}/{args.kills}: acknowledged so far {len(acked)}", flush=True)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(60)
    srv.stop()
    from journeylens.store.duckdb import DuckDBStore

    store = DuckDBStore(db)
    ids = [r[0] for r in store.query("SELECT message_id FROM events")]
    store.close()
    print(json.dumps({"kills": args.kills, "restarts_ok": reopen_ok, "acknowledged": len(acked), "stored": len(ids),
                      "lost": len(acked - set(ids)), "duplicated": len(ids) - len(set(ids)),
                      "stored_not_acknowledged": len(set(ids) - acked), "requests": counts}, indent=2))


if __name__ == "__main__":
    main()
