"""Load benchmark of the collector (loopback only).

Starts ``python -m journeylens.server`` on a fresh DuckDB file and runs N
clients for D seconds. Each client is its own process (so the load generator
does not share one GIL with itself) holding one HTTP/1.1 keep-alive
connection (``http.client``); it sends a request, waits for the answer, sends
the next. Request bodies are serialised before the clock starts: batches of B
events to ``/v1/batch``, every ``--single-every``-th request a single event to
``/v1/track``. Non-200 answers are retried with the same body (same
messageIds). Before the clock starts, ``--warmup`` seconds (default 5) of batches with ids
``warm-...`` (not counted) start the validation workers, which start with their thread's first
group. At the end the server is stopped and the stored message ids are compared with the
acknowledged ones (zero lost, zero duplicated).

Reported: events/s acknowledged, p50/p99/max acknowledgement latency, the
server's peak RSS, and the CPU seconds used by the server and by the load
generator (its share of the box: CPU seconds / (elapsed x cores)).

Target (issue 7, this 2-core box): >= 10,000 events/s through /v1/batch with
p99 <= 250 ms.

    python benchmarks/bench_collector.py --clients 8 --seconds 60 --batch 100
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.conftest import ServerProcess, make_db

_TICK = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per native thread id of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _cpu_seconds_path(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue
    return out


def _cpu_seconds_path(path: str) -> float:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def message(client: int, request: int, j: int) -> str:
    """One track message as JSON text; its messageId is ``c{client}-{request}-{j}``."""
    return (f'{{"type":"track","event":"bench","userId":"u{client}-{request % 1000}",'
            f'"messageId":"c{client}-{request}-{j}","properties":{{"i":{request},"revenue":1.5}},'
            f'"context":{{"page":{{"url":"https://shop.example/p/{j}"}}}}}}')


def request_size(request: int, batch: int, single_every: int) -> int:
    return 1 if single_every and request % single_every == single_every - 1 else batch


def body(client: int, request: int, batch: int, single_every: int, compress: bool) -> tuple[str, bytes]:
    n = request_size(request, batch, single_every)
    if n == 1 and batch != 1:
        path, text = "/v1/track", message(client, request, 0)
    else:
        path, text = "/v1/batch", '{"batch":[' + ",".join(message(client, request, j) for j in range(n)) + "]}"
    data = text.encode()
    return path, gzip.compress(data, 1) if compress else data


def client_main(n: int, port: int, key: str, args: Any, ready: Any, go: Any, end_at: Any, out: Any) -> None:
    """One client process: prebuilt bodies, one keep-alive connection, sequential requests."""
    prebuilt = [body(n, i, args.batch, args.single_every, args.gzip) for i in range(args.prebuild)]
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + b64encode(f"{key}:".encode()).decode()}
    if args.gzip:
        headers["Content-Encoding"] = "gzip"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ready.release()
    go.wait()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    latencies: list[float] = []
    acked = 0
    statuses: dict[int, int] = {}
    i = 0
    while time.time() < end_at.value:
        path, data = prebuilt[i] if i < len(prebuilt) else body(n, i, args.batch, args.single_every, args.gzip)
        while True:
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            dt = time.perf_counter() - t0
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(dt)
                break
            time.sleep(0.05)
        i += 1
        acked = i
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    conn.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.put({"client": n, "acked_requests": acked, "latencies": latencies, "statuses": statuses, "cpu": cpu})


def warm(port: int, key: str, seconds: float) -> None:
    """Send batches of 100 events (messageIds ``warm-...``) for ``seconds`` from two connections."""
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + b64encode(f"{key}:".encode()).decode()}
    end = time.monotonic() + seconds

    def one(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while time.monotonic() < end:
            data = ('{"batch":[' + ",".join(message(c, i, j).replace('"messageId":"', '"messageId":"warm-')
                                            for j in range(100)) + "]}").encode()
            conn.request("POST", "/v1/batch", data, headers)
            conn.getresponse().read()
            i += 1
        conn.close()

    threads = [threading.Thread(target=one, args=(c,)) for c in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)


def expected_ids(client: int, requests: int, batch: int, single_every: int) -> list[str]:
    return [f"c{client}-{i}-{j}" for i in range(requests) for j in range(request_size(i, batch, single_every))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--single-every", type=int, default=10, help="every N-th request is one /v1/track event (0: never)")
    p.add_argument("--gzip", action="store_true", help="send gzip-compressed bodies")
    p.add_argument("--prebuild", type=int, default=0,
                   help="requests serialised per client before the clock starts (default: enough for 25,000 events/s)")
    p.add_argument("--profile", default="", help="record the server with py-spy into this file (raw flame format)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds of batches (ids 'warm-...', not counted) before the clock starts, so the "
                        "validation workers, which start with their thread's first group, are running")
    p.add_argument("--profile-gil", action="store_true",
                   help="with --profile: sample only the thread holding the GIL (where Python CPU goes)")
    p.add_argument("--db", default="", help="DuckDB file (default: a fresh one in a temp folder)")
    args = p.parse_args()
    if not args.prebuild:
        per_request = (args.batch * (args.single_every - 1) + 1) / args.single_every if args.single_every else args.batch
        args.prebuild = int(25_000 * args.seconds / args.clients / per_request) + 10
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="jl-bench-")) / "bench.duckdb"
    keys = make_db(db)
    srv = ServerProcess(db, light=True).start()
    assert srv.proc is not None
    pid = srv.proc.pid

    ctx = mp.get_context("fork")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    end_at = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=client_main, args=(n, srv.port, keys["wa"], args, ready, go, end_at, out))
             for n in range(args.clients)]
    for pr in procs:
        pr.start()
    for _ in procs:  # every client has serialised its bodies
        ready.acquire()
    peak = [0]
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # a process ended meanwhile
                peak[0] = max(peak[0], _rss_kib(pid) + sum(_rss_kib(k) for k in _children(pid)))
            time.sleep(0.2)

    warm(srv.port, keys["wa"], args.warmup)
    kids = _children(pid)
    cpu0 = _cpu_seconds(pid)
    kids0 = sum(_cpu_seconds(k) for k in kids)
    threads0 = _thread_cpu(pid)
    started = time.monotonic()
    end_at.value = time.time() + args.seconds
    sampling = threading.Thread(target=sampler)
    sampling.start()
    spy = (subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", "50",
                             "--threads", "--format", "raw", "--output", args.profile, *(["--gil"] if args.profile_gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if args.profile else None)
    go.set()
    results = [out.get() for _ in procs]
    elapsed = time.monotonic() - started
    cpu1 = _cpu_seconds(pid)
    started_kids = [k for k in _children(pid) if k not in kids]  # workers started during the run
    kids1 = sum(_cpu_seconds(k) for k in kids + started_kids)
    threads1 = _thread_cpu(pid)
    stop.set()
    sampling.join()
    for pr in procs:
        pr.join()
    if spy is not None:
        spy.wait(60)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    srv.stop()
    from journeylens.store.duckdb import DuckDBStore

    store = DuckDBStore(db)
    ids = [r[0] for r in store.query("SELECT message_id FROM events WHERE message_id NOT LIKE 'warm-%'")]
    store.close()
    acked: set[str] = set()
    for r in results:
        acked.update(expected_ids(r["client"], r["acked_requests"], args.batch, args.single_every))
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    gen_cpu = sum(r["cpu"] for r in results)
    cores = os.cpu_count() or 1

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    stored = set(ids)
    report = {
        "clients": args.clients, "seconds": round(elapsed, 1), "batch": args.batch, "gzip": args.gzip,
        "events_acknowledged": len(acked), "events_per_second": round(len(acked) / elapsed),
        "requests_acknowledged": len(latencies),
        "ack_latency_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1), "max": round(pct(1.0), 1)},
        "server_peak_rss_mib": round(peak[0] / 1024, 1),  # with the validation worker
        "server_cpu_s": round(cpu1 - cpu0, 1), "server_children_cpu_s": round(kids1 - kids0, 1),
        "server_cpu_us_per_event": round((cpu1 - cpu0 + kids1 - kids0) / max(1, len(acked)) * 1e6),
        "server_threads_cpu_s": dict(sorted(((str(t), round(c - threads0.get(t, 0.0), 1)) for t, c in threads1.items()
                                             if c - threads0.get(t, 0.0) >= 0.1), key=lambda kv: -kv[1])), "generator_cpu_s": round(gen_cpu, 1),
        "server_cpu_share": round((cpu1 - cpu0 + kids1 - kids0) / (elapsed * cores), 3),
        "generator_cpu_share": round(gen_cpu / (elapsed * cores), 3),
        "load_average_1m": os.getloadavg()[0],
        "statuses": statuses, "stored": len(ids), "lost": len(acked - stored), "duplicated": len(ids) - len(stored),
        "stored_not_acknowledged": len(stored - acked),
        **{name: next((float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(f"journeylens_{name} ")), None)
           for name in ("commit_seconds_count", "commit_seconds_sum", "validate_seconds_total",
                        "transaction_seconds_total")},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
