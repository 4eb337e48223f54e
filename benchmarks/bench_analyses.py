"""Benchmark: the journey analyses of issue 3 against references in the same process.

On demo shop data of about ``--events`` events (generated once and cached in ``--data``),
imported into a DuckDB file:

* 4-step ordered funnel, 7-day window (visit → product_view → add_to_cart → purchase), through
  ``ws.funnel`` (the workspace's touches: cache freshness check, identity, stage projection), and the same on a materialised
  touches table; reference: ClickHouse ``windowFunnel`` (chdb) over the resolved touches as Parquet.
  The levels per person must be equal (checked, printed).
* transition matrix and top paths; reference (floor): DuckDB full sort of the resolved touches by
  (person, ts) written to a temp table.
* weekly retention; reference: DuckDB ``count(distinct person)`` scan of the touches.

Targets (issue 3): funnel ≤ 1.5x chdb windowFunnel; transitions and paths ≤ 3x the sort floor.

Every operation, references included, runs ``--repeat`` times (default 3) and reports its best
run, so one-off costs (chdb's first-query warm-up, cold file pages) count against nobody.

    python benchmarks/bench_analyses.py --events 1000000
    python benchmarks/bench_analyses.py --events 10000000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ibis

import journeylens
from benchmarks.bench_import import demo_events
from benchmarks.common import Measurement, best_of, report
from journeylens.analyses.funnel import FunnelQuery, funnel
from journeylens.analyses.paths import PathsQuery, paths
from journeylens.analyses.retention import RetentionQuery, retention
from journeylens.analyses.transitions import TransitionsQuery, transitions

STEPS = ["visit", "product_view", "add_to_cart", "purchase"]
WINDOW = 7 * 86_400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="approximate number of events")
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data"), help="where demo data is cached")
    ap.add_argument("--repeat", type=int, default=3, help="runs per operation; the best one is reported")
    args = ap.parse_args()
    repeat = max(1, args.repeat)
    path, n, _ = demo_events(args.events, args.data)
    tmp = Path(tempfile.mkdtemp(prefix="jl-bench-analyses-"))
    rows: list[Measurement] = []
    try:
        ws = journeylens.open(tmp / "bench.duckdb")
        ws.import_events(path)
        # write the import out now: a checkpoint left to the background slows whatever runs first
        ws.store.checkpoint()
        con = ws.store.con
        touches = ws.touches()
        parquet = tmp / "touches.parquet"
        # resolved touches, the input every reference reads
        _create(con, "touches_resolved", touches.select("person_id", "ts", "event", "message_id"))
        con.raw_sql(f"COPY touches_resolved TO '{parquet}' (FORMAT parquet)")
        ws.store.checkpoint()
        size = int(touches.count().execute())

        import chdb

        conds = ", ".join(f"e = '{s}'" for s in STEPS)
        sql = (f"SELECT p, windowFunnel({WINDOW})(toUInt64(toUnixTimestamp64Micro(t) / 1000000), {conds}) AS level "
               f"FROM (SELECT person_id AS p, ts AS t, event AS e FROM file('{parquet}', Parquet)) GROUP BY p")
        ref, ch = best_of(repeat, "chdb windowFunnel (resolved touches parquet)", size,
                       lambda: chdb.query(sql, "DataFrame"))
        rows.append(ref)
        ch_levels = {str(p): int(v) for p, v in zip(ch["p"], ch["level"], strict=True) if int(v) > 0}

        q = FunnelQuery(steps=STEPS, window="7d")
        m, res = best_of(repeat, "journeylens funnel (from store, incl. identity)", size,
                      lambda: ws.funnel(query=q), reference=ref.operation)
        rows.append(m)
        materialised = _create(con, "touches_mat", touches)
        m2, mat = best_of(repeat, "journeylens funnel (materialised touches)", size,
                       lambda: funnel(materialised, q), reference=ref.operation)
        rows.append(m2)
        agree = res.levels() == ch_levels and mat.levels() == ch_levels

        floor, _ = best_of(repeat, "duckdb full sort by (person, ts) (floor)", size, lambda: con.raw_sql(
            "CREATE OR REPLACE TEMP TABLE sorted AS SELECT * FROM touches_resolved ORDER BY person_id, ts"))
        rows.append(floor)
        m3, _ = best_of(repeat, "journeylens transitions (event level)", size,
                     lambda: transitions(touches, TransitionsQuery()), reference=floor.operation)
        rows.append(m3)
        m4, _ = best_of(repeat, "journeylens top paths (depth 5)", size,
                     lambda: paths(touches, PathsQuery()), reference=floor.operation)
        rows.append(m4)

        scan, _ = best_of(repeat, "duckdb count(distinct person) scan", size,
                       lambda: con.raw_sql("SELECT count(DISTINCT person_id) FROM touches_resolved").fetchall())
        rows.append(scan)
        m5, _ = best_of(repeat, "journeylens weekly retention", size,
                     lambda: retention(touches, RetentionQuery(period="week")), reference=scan.operation)
        rows.append(m5)
        ws.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, f"Journey analyses on {n:,} events ({size:,} touches), best of {repeat}", unit="touches")
    # CPU seconds of the whole process (all threads; chdb runs in this process too) are the
    # steadier comparison on a shared box, where wall times depend on the other load
    by_name = {m.operation: m for m in rows}
    for m in rows:
        against = by_name.get(m.reference) if m.reference else None
        ratio = f", cpu ratio {m.extra['cpu_best'] / against.extra['cpu_best']:.2f}x" if against else ""
        print(f"  {m.operation}: wall runs {m.extra.get('runs')}, best cpu {m.extra['cpu_best']:.3f} s{ratio}")
    print(f"load: {Path('/proc/loadavg').read_text().strip()}")
    print(f"funnel levels equal to chdb windowFunnel for every person: {agree} "
          f"({len(ch_levels):,} persons with level >= 1)")


def _create(con: Any, name: str, expr: Any) -> Any:
    """CREATE TABLE name AS expr (through SQL: ibis' create_table from an expression trips on sqlglot 30)."""
    con.raw_sql(f"CREATE OR REPLACE TABLE {name} AS {ibis.to_sql(expr, dialect='duckdb')}")
    return con.table(name)


if __name__ == "__main__":
    main()
