"""The single writer thread: group commit with acknowledgement after COMMIT.

The collector process owns the DuckDB file; only this thread touches it.
Requests submit :class:`Job` objects (messages of one request) or calls
(key/link/forget operations). The thread takes the first waiting job, then
keeps gathering for up to ``max_wait`` seconds (default 10 ms) or until
``max_events`` messages are gathered, and then, for the whole group:

1. drops messages whose ``(workspace, messageId)`` occurred earlier in the
   group (duplicates);
2. maps and validates the rest per workspace with the import path's
   :func:`~journeylens.ingest.readers.build_segment` and
   :class:`~journeylens.ingest.validate.Validator` (same rules as
   ``journeylens import events``);
3. in ONE DuckDB transaction inserts the events whose
   ``(workspace, message_id)`` is new and all quarantine rows;
4. only after COMMIT resolves each request's future with its counts.

A failing transaction fails every job of the group (the server answers 503,
clients retry with the same messageIds). Identity stitching: after a commit
that stored identify/alias/group messages the workspace is marked; its
``identities`` are rebuilt (as after an import) when the queue is idle, at
most every ``identity_every`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from journeylens import schema
from journeylens.ingest.convert import Duck
from journeylens.ingest.live import validate_messages
from journeylens.store.duckdb import DuckDBStore

EVENT_KEY = ("workspace", "message_id")
IDENTITY_TYPES = frozenset({"identify", "alias", "group"})


class QueueFull(Exception):
    """The writer queue holds ``max_queue`` messages already."""


class StorageFailed(Exception):
    """The transaction of a group failed (or the writer is not running)."""


@dataclass
class Outcome:
    """What happened to the messages of one request."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"success": True, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": [{"index": i, "reason": r} for i, r in sorted(self.quarantined)]}


@dataclass
class Job:
    """The checked messages of one request, waiting for the writer."""

    workspace: str
    source: str
    received_at: datetime
    messages: list[tuple[int, dict[str, Any]]]
    prequarantined: list[tuple[int, str | None, str, str]]
    done: Callable[[Outcome | BaseException], None]

    @property
    def size(self) -> int:
        return max(1, len(self.messages) + len(self.prequarantined))


@dataclass
class Call:
    """A function to run on the writer thread with the store."""

    fn: Callable[[DuckDBStore], Any]
    done: Callable[[Any], None]
    size: int = 1


class Stats:
    """Counters for /metrics (updated by the writer thread, read by requests)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.quarantined = 0
        self.commits = 0
        self.commit_failures = 0
        self.commit_seconds_sum = 0.0
        self.buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
        self.bucket_counts = [0] * len(self.buckets)

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds_sum += seconds
        for i, b in enumerate(self.buckets):
            if seconds <= b:
                self.bucket_counts[i] += 1


class Writer:
    """Owns the store on one thread; see the module docstring."""

    def __init__(self, db: str, *, max_wait: float = 0.010, max_events: int = 5000,
                 max_queue: int = 100_000, identity_every: float = 2.0,
                 on_open: Callable[[DuckDBStore], None] | None = None) -> None:
        self.db = db
        self.max_wait = max_wait
        self.max_events = max_events
        self.max_queue = max_queue
        self.identity_every = identity_every
        self.on_open = on_open
        self.stats = Stats()
        self._cv = threading.Condition()
        self._queue: deque[Job | Call] = deque()
        self._pending = 0
        self._stop = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="journeylens-writer", daemon=True)
        self._dirty: set[str] = set()
        self._last_identity = 0.0
        self.alive = False

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 60.0) -> None:
        """Start the thread and wait until the store is open (raises its error)."""
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise StorageFailed(f"the store {self.db} did not open within {timeout:.0f} s")

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    @property
    def depth(self) -> int:
        return self._pending

    # ------------------------------------------------------------------ submitting
    def submit(self, item: Job | Call) -> None:
        """Queue ``item``; raises :class:`QueueFull` or :class:`StorageFailed`."""
        with self._cv:
            if self._stop or not self.alive:
                raise StorageFailed("the writer is not running")
            if self._pending + item.size > self.max_queue and self._pending > 0:
                raise QueueFull(f"{self._pending} messages are waiting")
            self._queue.append(item)
            self._pending += item.size
            self._cv.notify()

    async def run(self, fn: Callable[[DuckDBStore], Any]) -> Any:
        """Run ``fn(store)`` on the writer thread and await its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        def done(r: Any) -> None:
            loop.call_soon_threadsafe(_resolve, fut, r)

        self.submit(Call(fn, done))
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    def run_sync(self, fn: Callable[[DuckDBStore], Any], timeout: float = 60.0) -> Any:
        """Run ``fn(store)`` on the writer thread from another thread."""
        box: list[Any] = []
        ev = threading.Event()

        def done(r: Any) -> None:
            box.append(r)
            ev.set()

        self.submit(Call(fn, done))
        if not ev.wait(timeout):
            raise StorageFailed("the writer did not answer in time")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            store = DuckDBStore(self.db)
            if self.on_open is not None:
                self.on_open(store)
            duck = Duck("UTC")
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self.alive = True
        self._ready.set()
        try:
            while True:
                group = self._gather()
                if group is None:
                    break
                if not group:
                    self._maybe_rebuild(store, idle=True)
                    continue
                calls = [g for g in group if isinstance(g, Call)]
                jobs = [g for g in group if isinstance(g, Job)]
                if jobs:
                    self._commit(store, duck, jobs)
                for c in calls:
                    try:
                        c.done(c.fn(store))
                    except BaseException as exc:
                        c.done(exc)
                with self._cv:
                    self._pending -= sum(g.size for g in group)
                    idle = not self._queue
                self._maybe_rebuild(store, idle=idle)
        finally:
            self.alive = False
            with self._cv:
                left = list(self._queue)
                self._queue.clear()
            for g in left:
                g.done(StorageFailed("the server is shutting down"))
            self._maybe_rebuild(store, idle=True, force=True)
            duck.close()
            store.close()

    def _gather(self) -> list[Job | Call] | None:
        """The next group (empty after an idle second); None when stopping."""
        with self._cv:
            if not self._queue:
                if self._stop:
                    return None
                self._cv.wait(timeout=1.0)
                if not self._queue:
                    return None if self._stop else []
            first = self._queue.popleft()
            group: list[Job | Call] = [first]
            if isinstance(first, Call):
                return group
            n = first.size
            deadline = time.monotonic() + self.max_wait
            while n < self.max_events:
                if self._queue:
                    if isinstance(self._queue[0], Call):
                        break
                    nxt = self._queue.popleft()
                    group.append(nxt)
                    n += nxt.size
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    break
                self._cv.wait(timeout=left)
            return group

    def _maybe_rebuild(self, store: DuckDBStore, *, idle: bool, force: bool = False) -> None:
        if not self._dirty:
            return
        now = time.monotonic()
        if not force and not (idle and now - self._last_identity >= self.identity_every):
            return
        from journeylens.identity import rebuild_identities

        for ws in sorted(self._dirty):
            try:
                rebuild_identities(store, ws)
            except Exception:  # retried after the next identity message
                return
        self._dirty.clear()
        self._last_identity = now

    def _commit(self, store: DuckDBStore, duck: Duck, jobs: list[Job]) -> None:
        started = time.perf_counter()
        outcomes = [Outcome() for _ in jobs]
        try:
            events, quarantine, owners, identity_ws = self._validate(duck, jobs, outcomes)
            dupes = store.append_parts([("events", events, EVENT_KEY), ("quarantine", quarantine, ())])[0]
        except BaseException as exc:
            self.stats.commit_failures += 1
            for job in jobs:
                job.done(StorageFailed(f"storage failed: {type(exc).__name__}: {str(exc)[:200]}"))
            return
        for key, j in owners.items():
            if key in dupes:
                outcomes[j].duplicates += 1
            else:
                outcomes[j].accepted += 1
        self._dirty |= identity_ws
        st = self.stats
        st.observe_commit(time.perf_counter() - started)
        for o in outcomes:
            st.accepted += o.accepted
            st.duplicates += o.duplicates
            st.quarantined += len(o.quarantined)
        for job, o in zip(jobs, outcomes, strict=True):
            job.done(o)

    def _validate(self, duck: Duck, jobs: list[Job], outcomes: list[Outcome],
                  ) -> tuple[pa.Table, pa.Table, dict[tuple[str, str], int], set[str]]:
        seen: set[tuple[str, str]] = set()
        by_ws: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for j, job in enumerate(jobs):
            for index, msg in job.messages:
                key = (job.workspace, msg["messageId"])
                if key in seen:
                    outcomes[j].duplicates += 1
                    continue
                seen.add(key)
                by_ws[job.workspace].append((j, index, msg))
        q_rows: list[dict[str, Any]] = []
        for j, job in enumerate(jobs):
            for index, fld, reason, raw in job.prequarantined:
                outcomes[j].quarantined.append((index, reason))
                q_rows.append(_qrow(job, index, fld, reason, raw))
        tables: list[pa.Table] = []
        owners: dict[tuple[str, str], int] = {}
        identity_ws: set[str] = set()
        now = datetime.now(UTC)
        for ws, items in by_ws.items():
            checked = validate_messages([msg for _, _, msg in items], ws, now, duck)
            for g, fld, reason, raw_text in checked.rejected:
                j, index, _ = items[g]
                outcomes[j].quarantined.append((index, reason))
                q_rows.append(_qrow(jobs[j], index, fld, reason, raw_text))
            acc = checked.accepted
            if acc.num_rows:
                good = checked.accepted_items
                keep: list[bool] = []
                for g, mid in zip(good, acc.column("message_id").to_pylist(), strict=True):
                    j = items[g][0]
                    if (ws, mid) in owners:  # equal after the validator's whitespace trimming
                        outcomes[j].duplicates += 1
                        keep.append(False)
                    else:
                        owners[(ws, mid)] = j
                        keep.append(True)
                if not all(keep):
                    acc = acc.filter(pa.array(keep))
                types = set(acc.column("type").to_pylist())
                if types & IDENTITY_TYPES:
                    identity_ws.add(ws)
                tables.append(acc)
        events = pa.concat_tables(tables) if tables else schema.EVENTS.arrow_schema().empty_table()
        quarantine = pa.Table.from_pylist(q_rows, schema=schema.QUARANTINE.arrow_schema())
        return events, quarantine, owners, identity_ws


def _qrow(job: Job, index: int, fld: str | None, reason: str, raw: str | None) -> dict[str, Any]:
    return {"workspace": job.workspace, "target": "events", "source": job.source, "line": index + 1 if index >= 0 else None,
            "field": fld, "reason": reason, "raw": raw, "received_at": job.received_at}


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
