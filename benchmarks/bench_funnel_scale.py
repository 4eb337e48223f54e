"""Benchmark: the 4-step ordered funnel (7-day window) on 100M touches — peak memory under 8 GiB.

Issue 3 asks that "a 100M-event funnel completes with peak memory under 8 GiB". Generating and
importing 100M demo events takes hours on a 2-core box, so the touches are scaled up instead: a
shop demo of about ``--events`` events is generated and imported once (identity resolution
included), its resolved touches are written to Parquet, and ``--copies`` copies of them with
distinct person ids (``person_id || '~' || copy``) form the 100M-touch input — the same journeys
``copies`` times over, so every copy has the same funnel and the expected answer is known:
``copies`` times the single copy's step counts (checked, printed).

The funnel runs through :func:`journeylens.analyses.funnel.funnel` on a DuckDB view of the Parquet
files in a store opened with journeylens' defaults (``memory_limit`` 3GB, spilling to disk
beyond). Reference in the same process, run after it (so its memory does not count against ours):
ClickHouse ``windowFunnel`` (chdb) on the same files.

    python benchmarks/bench_funnel_scale.py --events 10000000 --copies 8
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ibis

import journeylens
from benchmarks.bench_import import demo_events
from benchmarks.common import Measurement, measure, report
from journeylens import config
from journeylens.analyses.funnel import FunnelQuery, funnel
from journeylens.store.duckdb import DuckDBStore

STEPS = ["visit", "product_view", "add_to_cart", "purchase"]
WINDOW = 7 * 86_400
COLUMNS = ("person_id", "ts", "event", "message_id")


def scaled_touches(events: int, copies: int, data: Path, out: Path) -> tuple[int, list[int]]:
    """Write ``copies`` Parquet copies of the resolved touches; (touches per copy, funnel of one copy)."""
    path, _, _ = demo_events(events, data)
    ws = journeylens.open(out / "base.duckdb")
    ws.import_events(path)
    touches = ws.touches().select(*COLUMNS)
    base = out / "base.parquet"
    ws.store.con.raw_sql(f"COPY ({ibis.to_sql(touches, dialect='duckdb')}) TO '{base}' (FORMAT parquet)")
    one = funnel(ws.store.con.read_parquet(str(base)), FunnelQuery(steps=STEPS, window="7d"))
    size = int(touches.count().execute())
    con = ws.store.raw
    for i in range(copies):
        con.execute(f"COPY (SELECT person_id || '~{i}' AS person_id, ts, event, message_id || '~{i}' AS message_id "
                    f"FROM read_parquet('{base}')) TO '{out / f'copy-{i}.parquet'}' (FORMAT parquet)")
    ws.close()
    return size, [s.persons for s in one.steps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="events of the demo that is copied")
    ap.add_argument("--copies", type=int, default=8, help="copies with distinct person ids")
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data"), help="where demo data is cached")
    ap.add_argument("--skip-chdb", action="store_true", help="do not run the chdb reference")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jl-bench-funnel-scale-"))
    rows: list[Measurement] = []
    try:
        got: list[int] = []
        per_copy, one = scaled_touches(args.events, args.copies, args.data, tmp)
        total = per_copy * args.copies
        files = str(tmp / "copy-*.parquet")
        limit = str(config.setting("memory_limit"))
        store = DuckDBStore(tmp / "scale.duckdb", memory_limit=limit)
        view = store.con.read_parquet(files)
        with measure(f"journeylens funnel (memory_limit {limit})", total,
                     reference="chdb windowFunnel" if not args.skip_chdb else None) as m:
            res = funnel(view, FunnelQuery(steps=STEPS, window="7d"))
        rows.append(m)
        got = [s.persons for s in res.steps]
        expected = [n * args.copies for n in one]
        store.close()
        if not args.skip_chdb:
            import chdb

            conds = ", ".join(f"e = '{s}'" for s in STEPS)
            sql = (f"SELECT level, count() AS n FROM (SELECT p, windowFunnel({WINDOW})("
                   f"toUInt64(toUnixTimestamp64Micro(t) / 1000000), {conds}) AS level FROM (SELECT person_id AS p, "
                   f"ts AS t, event AS e FROM file('{files}', Parquet)) GROUP BY p) GROUP BY level")
            with measure("chdb windowFunnel", total) as ref:
                levels = chdb.query(sql, "DataFrame")
            rows.append(ref)
            at = dict(zip(levels["level"].astype(int), levels["n"].astype(int), strict=True))
            reached = [sum(n for lv, n in at.items() if lv >= k) for k in range(1, len(STEPS) + 1)]
            print(f"persons per step from chdb windowFunnel: {reached}; equal to ours: {reached == got}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, f"Ordered 4-step funnel, 7-day window, on {total:,} touches ({args.copies} copies)", unit="touches")
    print(f"persons per step {got}; expected {args.copies} x one copy = {expected}: {got == expected}")
    print(f"peak RSS of the journeylens funnel: {m.peak_rss / 2**30:.2f} GiB (target < 8 GiB)")


if __name__ == "__main__":
    main()
