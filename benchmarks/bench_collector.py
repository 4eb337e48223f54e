"""Load benchmark of the collector (loopback only).

Starts ``python -m journeylens.server`` on a fresh DuckDB file, runs N client
threads for D seconds (each sends batches of B events to /v1/batch; every
tenth request is a single /v1/track event), retries non-200 answers with the
same messageIds, then stops the server and compares the stored message ids
with the acknowledged ones (zero lost, zero duplicated). Reports events/s,
p50/p99 acknowledgement latency and the server's peak RSS.

Target (issue 7, this 2-core box): >= 10,000 events/s through /v1/batch with
p99 <= 250 ms.

    python benchmarks/bench_collector.py --clients 8 --seconds 60 --batch 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.conftest import ServerProcess, make_db


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="jl-bench-"))
    db = folder / "bench.duckdb"
    keys = make_db(db)
    srv = ServerProcess(db, light=True).start()
    assert srv.proc is not None
    acked: list[str] = []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + args.seconds
    peak = [0]

    def client(n: int) -> None:
        with httpx.Client(auth=(keys["wa"], ""), timeout=30) as c:
            i = 0
            while time.monotonic() < end:
                i += 1
                single = i % 10 == 0
                msgs = [{"type": "track", "event": "bench", "userId": f"u{n}-{i % 1000}",
                         "messageId": str(uuid.uuid4()), "properties": {"i": i, "revenue": 1.5}}
                        for _ in range(1 if single else args.batch)]
                while True:
                    t0 = time.perf_counter()
                    r = (c.post(srv.url + "/v1/track", json=msgs[0]) if single
                         else c.post(srv.url + "/v1/batch", json={"batch": msgs}))
                    dt = time.perf_counter() - t0
                    with lock:
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        with lock:
                            latencies.append(dt)
                            acked.extend(m["messageId"] for m in msgs)
                        break
                    time.sleep(0.05)

    def sampler() -> None:
        while time.monotonic() < end:
            peak[0] = max(peak[0], _rss_kib(srv.proc.pid))  # type: ignore[union-attr]
            time.sleep(0.2)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    metrics = httpx.get(srv.url + "/metrics").text
    srv.stop()
    from journeylens.store.duckdb import DuckDBStore

    store = DuckDBStore(db)
    ids = [r[0] for r in store.query("SELECT message_id FROM events")]
    store.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    report = {
        "clients": args.clients, "seconds": round(elapsed, 1), "batch": args.batch,
        "events_acknowledged": len(acked), "events_per_second": round(len(acked) / elapsed),
        "ack_latency_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1), "max": round(pct(1.0), 1)},
        "server_peak_rss_mib": round(peak[0] / 1024, 1), "statuses": statuses,
        "stored": len(ids), "lost": len(set(acked) - set(ids)), "duplicated": len(ids) - len(set(ids)),
        "commits": next((x.split()[-1] for x in metrics.splitlines()
                         if x.startswith("journeylens_commit_seconds_count")), None),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
