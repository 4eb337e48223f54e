"""Measuring helpers shared by the benchmark scripts.

Peak memory is the peak resident set size of this process during the
operation, sampled every 10 ms from /proc (so it includes DuckDB's and
Arrow's native allocations, which tracemalloc would miss).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class Measurement:
    operation: str
    size: int
    seconds: float = 0.0
    peak_rss: int = 0
    reference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure(operation: str, size: int, reference: str | None = None) -> Iterator[Measurement]:
    m = Measurement(operation, size, reference=reference)
    peak = [rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        m.peak_rss = max(peak[0], rss_bytes())


def best_of(repeat: int, operation: str, size: int, fn: Callable[[], Any],
            reference: str | None = None) -> tuple[Measurement, Any]:
    """Run ``fn`` ``repeat`` times; the fastest run's measurement (peak memory: the largest of all
    runs) and the last result. The first run of a code path pays one-time costs (imports, page
    faults, library warm-up) that a best-of-N leaves out for ours and the reference alike.
    ``extra`` holds every run's wall seconds (``runs``) and the smallest CPU seconds of the
    process, all threads (``cpu_best``) — the steadier figure on a shared box."""
    runs: list[Measurement] = []
    out: Any = None
    for _ in range(max(1, repeat)):
        cpu = time.process_time()
        with measure(operation, size, reference=reference) as m:
            out = fn()
        m.extra["cpu"] = time.process_time() - cpu
        runs.append(m)
    fastest = min(runs, key=lambda r: r.seconds)
    fastest.peak_rss = max(r.peak_rss for r in runs)
    fastest.extra["runs"] = [round(r.seconds, 3) for r in runs]
    fastest.extra["cpu_best"] = min(r.extra["cpu"] for r in runs)
    return fastest, out


def report(rows: list[Measurement], title: str, unit: str = "rows") -> None:
    by_name = {m.operation: m for m in rows}
    t = Table(title=title, title_justify="left")
    for col in ("operation", "size", "seconds", f"{unit}/s", "peak RSS", "ratio to reference"):
        t.add_column(col, justify="left" if col == "operation" else "right")
    for m in rows:
        ref = by_name.get(m.reference) if m.reference else None
        ratio = f"{m.seconds / ref.seconds:.2f}x {ref.operation}" if ref and ref.seconds else "reference"
        t.add_row(m.operation, f"{m.size:,}", f"{m.seconds:.2f}", f"{m.size / m.seconds:,.0f}" if m.seconds else "-",
                  f"{m.peak_rss / 2**30:.2f} GiB", ratio)
    Console().print(t)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
