"""Benchmark: generate demo events, import Parquet -> DuckDB through journeylens.

Reference in the same process: DuckDB's own `CREATE TABLE AS SELECT * FROM
read_parquet(...)` of the same file (no validation, no dedupe) — the floor.
Target (issue #2): >= 1M rows/s and < 4 GiB peak RSS for 10M events.

    python benchmarks/bench_import.py --events 10000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

import journeylens
from benchmarks.common import Measurement, measure, report
from journeylens.demo import generate

EVENTS_PER_PERSON_GUESS = 14


def demo_events(target_events: int, data_dir: Path, seed: int = 7) -> tuple[Path, int, Measurement]:
    """Generate (or reuse) a shop demo with about ``target_events`` events."""
    people = max(100, target_events // EVENTS_PER_PERSON_GUESS)
    folder = data_dir / f"shop-{people}-{seed}"
    truth = folder / "truth.json"
    with measure("generate demo (shop)", 0) as m:
        if not truth.exists():
            generate(scenario="shop", people=people, seed=seed, out_dir=folder)
    events = json.loads(truth.read_text())["events"]
    m.size = events
    return folder / "events.parquet", events, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="approximate number of events")
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data"), help="where demo data is cached")
    args = ap.parse_args()
    path, n, gen = demo_events(args.events, args.data)
    rows: list[Measurement] = []
    tmp = Path(tempfile.mkdtemp(prefix="jl-bench-"))
    try:
        ws = journeylens.open(tmp / "ours.duckdb")
        with measure("journeylens import events (parquet)", n, reference="duckdb CTAS read_parquet") as m:
            rep = ws.import_events(path)
        m.extra = rep.to_dict()
        rows.append(m)
        with measure("journeylens re-import (all duplicates)", n, reference="duckdb CTAS read_parquet") as m2:
            rep2 = ws.import_events(path)
        m2.extra = rep2.to_dict()
        rows.append(m2)
        ws.close()
        con = duckdb.connect(str(tmp / "ref.duckdb"))
        with measure("duckdb CTAS read_parquet", n) as ref:
            con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{path}')")
        con.close()
        rows.append(ref)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gen_row = gen if gen.seconds > 1 else None
    report(([gen_row] if gen_row else []) + rows, f"Import benchmark — {n:,} events")
    print(f"accepted={rows[0].extra['accepted']:,} quarantined={rows[0].extra['quarantined']:,} "
          f"re-import duplicates={rows[1].extra['duplicates']:,}")


if __name__ == "__main__":
    main()
