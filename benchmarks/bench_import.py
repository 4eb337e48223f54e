"""Benchmark: generate demo events, import Parquet -> DuckDB through journeylens.

Reference in the same process: DuckDB's own `CREATE TABLE AS SELECT * FROM
read_parquet(...)` of the same file (no validation, no dedupe, no touches
cache) — the floor. Target (issue #2): >= 1M rows/s and < 4 GiB peak RSS for
10M events. Besides wall time it reports the CPU seconds of the process (all
threads), which stay comparable when the shared machine is loaded, and the
load average.

``--incremental`` adds a daily-import case: the newest 10 % of the events (by
time) imported into a store that holds the other 90 %, which updates the
touches cache in place instead of rebuilding it (docs/import-speed.md).

    python benchmarks/bench_import.py --events 10000000 --data /tmp/benchdata
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
from rich.console import Console
from rich.table import Table

import journeylens
import journeylens.identity.stitch as stitch
import journeylens.workspace as workspace_module
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


@contextmanager
def timed(label: str, size: int, cpu: dict[str, float], reference: str | None = None) -> Iterator[Measurement]:
    """:func:`measure` plus the CPU seconds of the process (all threads) under ``cpu[label]``."""
    c0 = time.process_time()
    with measure(label, size, reference=reference) as m:
        yield m
    cpu[label] = time.process_time() - c0


class Phases:
    """Wall and CPU seconds of the import's phases, by wrapping the functions that run them:
    identities (``rebuild_identities`` minus the touches refresh it ends with) and the touches
    cache (``refresh_touches``); the rest of an import is reading, validating and appending."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def reset(self) -> None:
        self.seconds = {}

    def wrap(self, module: Any, name: str, label: str) -> None:
        inner = getattr(module, name)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                got = self.seconds.setdefault(label, [0.0, 0.0])
                got[0] += time.perf_counter() - w0
                got[1] += time.process_time() - c0

        setattr(module, name, timed_call)

    def rows(self, total_wall: float, total_cpu: float) -> list[tuple[str, float, float]]:
        ident = self.seconds.get("identities", [0.0, 0.0])
        touches = self.seconds.get("touches", [0.0, 0.0])
        return [
            ("read + validate + append events", total_wall - ident[0], total_cpu - ident[1]),
            ("identities", ident[0] - touches[0], ident[1] - touches[1]),
            ("touches cache", touches[0], touches[1]),
        ]


def split_by_time(path: Path, folder: Path, share: float = 0.9) -> tuple[Path, Path, int]:
    """The events of ``path`` split at the ``share`` quantile of ``ts``: (older, newer, newer rows)."""
    con = duckdb.connect()
    cut = f"(SELECT quantile_disc(epoch_us(ts), {share}) FROM read_parquet('{path}'))"
    old, new = folder / "older.parquet", folder / "newer.parquet"
    for target, op in ((old, "<"), (new, ">=")):
        con.execute(f"COPY (SELECT * FROM read_parquet('{path}') WHERE epoch_us(ts) {op} {cut}) "
                    f"TO '{target}' (FORMAT parquet)")
    n = con.execute(f"SELECT count(*) FROM read_parquet('{new}')").fetchone()[0]
    con.close()
    return old, new, int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="approximate number of events")
    ap.add_argument("--data", type=Path, default=Path("benchmarks/data"), help="where demo data is cached")
    ap.add_argument("--incremental", action="store_true",
                    help="also time importing the newest 10%% into a store holding the rest")
    args = ap.parse_args()
    path, n, gen = demo_events(args.events, args.data)
    rows: list[Measurement] = []
    cpu: dict[str, float] = {}
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="jl-bench-"))
    phases = Phases()
    phases.wrap(workspace_module, "rebuild_identities", "identities")
    phases.wrap(stitch, "refresh_touches", "touches")
    first_phases: list[tuple[str, float, float]] = []
    try:
        ws = journeylens.open(tmp / "ours.duckdb")
        label = "journeylens import events (parquet)"
        with timed(label, n, cpu, reference="duckdb CTAS read_parquet") as m:
            rep = ws.import_events(path)
        m.extra = rep.to_dict()
        rows.append(m)
        first_phases = phases.rows(m.seconds, cpu[label])
        with timed("journeylens re-import (all duplicates)", n, cpu, reference="duckdb CTAS read_parquet") as m2:
            rep2 = ws.import_events(path)
        m2.extra = rep2.to_dict()
        rows.append(m2)
        ws.close()
        (tmp / "ours.duckdb").unlink()
        con = duckdb.connect(str(tmp / "ref.duckdb"))
        with timed("duckdb CTAS read_parquet", n, cpu) as ref:
            con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{path}')")
        con.close()
        rows.append(ref)
        if args.incremental:
            old, new, n_new = split_by_time(path, tmp)
            ws = journeylens.open(tmp / "daily.duckdb")
            ws.import_events(old)
            with timed("journeylens import newest 10% (in-place touches)", n_new, cpu) as m3:
                rep3 = ws.import_events(new)
            m3.extra = rep3.to_dict()
            rows.append(m3)
            with timed("  same rows: full touches rebuild", n_new, cpu) as m4:
                ws.refresh_touches()
            rows.append(m4)
            ws.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gen_row = gen if gen.seconds > 1 else None
    report(([gen_row] if gen_row else []) + rows, f"Import benchmark — {n:,} events")
    t = Table(title="CPU seconds (all threads of this process)", title_justify="left")
    for col in ("operation", "CPU s", "rows per CPU s"):
        t.add_column(col, justify="left" if col == "operation" else "right")
    for r in rows:
        c = cpu.get(r.operation, 0.0)
        t.add_row(r.operation, f"{c:.2f}", f"{r.size / c:,.0f}" if c else "-")
    Console().print(t)
    ph = Table(title="First import by phase", title_justify="left")
    for col in ("phase", "wall s", "CPU s"):
        ph.add_column(col, justify="left" if col == "phase" else "right")
    for name, wall, cpu_s in first_phases:
        ph.add_row(name, f"{wall:.2f}", f"{cpu_s:.2f}")
    Console().print(ph)
    load_after = os.getloadavg()
    print(f"cores={os.cpu_count()} load average before={load_before[0]:.1f} after={load_after[0]:.1f}")
    print(f"accepted={rows[0].extra['accepted']:,} quarantined={rows[0].extra['quarantined']:,} "
          f"re-import duplicates={rows[1].extra['duplicates']:,}")


if __name__ == "__main__":
    main()
