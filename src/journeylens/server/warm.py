"""Cache warming: precompute the dashboard's default queries after the data changes.

A :class:`Warmer` is one daemon thread beside the :class:`~journeylens.server.api.QueryService`.
Every ``poll`` seconds it reads the data version of each warmed workspace (the same one
aggregate query the API keys its cache by); when a version differs from the one it last warmed,
it waits until the version has been still for ``settle`` seconds (so a stream of collector
commits is coalesced into one warm-up, but at most ``max_delay`` seconds), and no sooner than
``min_interval`` seconds after the previous warm-up started, then computes every query of
:data:`PAGE_QUERIES` through :meth:`QueryService.compute` — the same cache keys the pages use,
so the next page view is a cache hit (``X-Cache: hit``).

* At most one warm-up runs at a time (one thread); :meth:`notify` only wakes it early.
* It never blocks the collector: it reads through the service's pooled read connections
  (DuckDB MVCC; the writer commits on its own connection), exactly like a page request.
* A warm-up stops early when the data changes under it (the rest would be stale) and starts
  again after the next ``settle`` period.
* Switched on by ``create_server(..., warm=True)`` (``journeylens serve``; ``--no-warm`` off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from journeylens.server.api import ANALYSES, QueryService
from journeylens.server.web import default_page_queries

log = logging.getLogger("journeylens.warm")

PAGE_QUERIES: tuple[tuple[str, str, Mapping[str, Any]], ...] = default_page_queries()
"""``(page, analysis, parameters)`` of every dashboard page opened without parameters, read from
the pages' own query builders (``server/web.py``: :func:`~journeylens.server.web.default_page_queries`),
so the warmed cache keys are the pages' keys (checked by ``tests/server/test_warm.py``)."""


@dataclass(frozen=True)
class WarmSettings:
    """When the warmer runs (seconds)."""

    poll: float = 2.0
    """How often the data versions are read."""
    settle: float = 1.0
    """A changed version must stay unchanged this long before a warm-up starts (coalescing)."""
    max_delay: float = 30.0
    """... but a warm-up starts at most this long after the first change even if writes continue."""
    min_interval: float = 10.0
    """At least this long between the starts of two warm-ups (throttle)."""


@dataclass(frozen=True)
class WarmRun:
    """One finished warm-up."""

    workspace: str
    version: str
    computed: int
    cached: int
    failed: int
    seconds: float
    complete: bool


class Warmer:
    """The background warm-up thread of one :class:`QueryService` (see the module docstring)."""

    def __init__(self, service: QueryService, workspaces: Callable[[], Sequence[str]],
                 settings: WarmSettings | None = None,
                 queries: Sequence[tuple[str, str, Mapping[str, Any]]] = PAGE_QUERIES) -> None:
        self.service = service
        self.workspaces = workspaces
        self.settings = settings or WarmSettings()
        self.queries = tuple(q for q in queries if q[1] in ANALYSES)
        self.runs: list[WarmRun] = []
        self.running = False
        self._warmed: dict[str, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_start = -float("inf")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Warmer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="journeylens-warm", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the analysis being computed (if any) finishes."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def notify(self) -> None:
        """The data may have changed: read the versions now instead of after ``poll`` seconds."""
        self._wake.set()

    # ------------------------------------------------------------------ the loop
    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (or until notified); False when stopping."""
        self._wake.wait(max(seconds, 0.0))
        self._wake.clear()
        return not self._stop.is_set()

    def _versions(self) -> dict[str, str]:
        out = {}
        for ws in self.workspaces():
            try:
                out[ws] = self.service.version(ws)
            except Exception:  # a failing read is retried at the next poll
                log.exception("warm-up: data version of %s failed", ws)
        return out

    def _loop(self) -> None:
        s = self.settings
        changed_since: dict[str, float] = {}
        seen: dict[str, str] = {}
        stable_since: dict[str, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for ws, version in self._versions().items():
                if version == self._warmed.get(ws):
                    changed_since.pop(ws, None)
                    continue
                changed_since.setdefault(ws, now)
                if seen.get(ws) != version:
                    seen[ws], stable_since[ws] = version, now
            due = [ws for ws, first in changed_since.items()
                   if now - stable_since[ws] >= s.settle or now - first >= s.max_delay]
            wait = s.poll
            if due and now - self._last_start < s.min_interval:
                wait = min(wait, s.min_interval - (now - self._last_start))
                due = []
            for ws in due:
                if self._stop.is_set():
                    return
                self._last_start = time.monotonic()
                run = self.warm(ws, seen[ws])
                if run.complete:
                    self._warmed[ws] = run.version
                    changed_since.pop(ws, None)
            if changed_since and not due:
                wait = min(wait, s.settle)
            if not self._sleep(wait):
                return

    def warm(self, workspace: str, version: str | None = None) -> WarmRun:
        """Compute every query of :data:`PAGE_QUERIES` for ``workspace`` now (on this thread).

        Stops early (``complete=False``) when the data version moves away from ``version``."""
        started = time.perf_counter()
        computed = cached = failed = 0
        complete = True
        self.running = True
        try:
            for _page, name, params in self.queries:
                if self._stop.is_set():
                    complete = False
                    break
                try:
                    done = self.service.compute(workspace, ANALYSES[name], dict(params))
                except Exception as exc:  # an analysis that fails on this data fails on the page too
                    failed += 1
                    log.info("warm-up: %s failed: %s", name, exc)
                    continue
                if version is None:
                    version = done.version
                if done.version != version:
                    complete = False
                    break
                cached += done.cached
                computed += not done.cached
        finally:
            self.running = False
        run = WarmRun(workspace, version or "", computed, cached, failed, time.perf_counter() - started, complete)
        self.runs.append(run)
        log.info("warm-up of %s (version %s): %d computed, %d cached, %d failed in %.1f s%s", workspace,
                 run.version, computed, cached, failed, run.seconds, "" if complete else " (data changed)")
        return run
