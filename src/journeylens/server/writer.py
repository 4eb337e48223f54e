"""The writer: group commit with acknowledgement after COMMIT.

The collector process owns the DuckDB file; only the commit thread writes
events. Requests submit :class:`Job` objects (messages of one request) or
calls (key/link/forget operations). Threads form a pipeline:

* ``validate_workers`` *validate* threads (at least one), each with its own
  worker process (:class:`~journeylens.ingest.live.ValidationWorker`, started
  with the thread's first group). One thread at a time gathers: it takes the
  first waiting job and keeps gathering for up to ``max_wait`` seconds
  (default 10 ms), then for as long as the commit thread has not taken the
  previous group, up to ``max_events`` messages. Then it drops messages whose
  ``(workspace, messageId)`` occurred earlier in the group (duplicates) and has
  its worker map and validate the rest per workspace with the import path's
  :func:`~journeylens.ingest.readers.build_segment` and
  :class:`~journeylens.ingest.validate.Validator` (same rules as
  ``journeylens import events``), plus DuckDB's hash of each accepted key;
  meanwhile the next thread gathers the next group, so the workers run side by
  side on whole groups and group sizes follow the load. Without a ready
  worker the thread validates itself (same functions).
* the *commit* thread, holding the store (DuckDB on ``duckdb_threads`` threads: the app sets 1 when the
  process serves only the collector), inserts in ONE DuckDB transaction
  the events whose ``(workspace, message_id)`` is new and all quarantine rows,
  and only after COMMIT resolves each request's future with its counts.

Duplicate check: :class:`KeyIndex` holds DuckDB's 64-bit hash of every
``(workspace, message_id)`` in ``events`` (loaded at start, extended after
every commit). Rows whose hash is absent are new for certain and are
inserted without a lookup; only rows whose hash is present (a retry, or a
hash collision) are checked against the table inside the transaction. Calls
must therefore not insert into ``events`` (they may delete from it).

A failing transaction fails every job of the group (the server answers 503,
clients retry with the same messageIds). Identity stitching: after a commit
that stored identify/alias/group messages the workspace is marked; a third
kind of thread rebuilds its ``identities`` (and the touches cache, as after
an import) on its own connection, so acknowledgements never wait for it. It
starts a rebuild at most every ``identity_every`` seconds and at least
``4 x`` the last rebuild's duration after it ended (a rebuild takes at most
~20 % of the time under load). Calls wait for a running rebuild.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from journeylens import schema
from journeylens.ingest.convert import Duck
from journeylens.ingest.live import (
    Checked,
    ValidationWorker,
    WorkerLost,
    key_hashes,
    validate_messages,
)
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
        self.validate_seconds_sum = 0.0
        self.transaction_seconds_sum = 0.0
        self.buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
        self.bucket_counts = [0] * len(self.buckets)

    def observe_commit(self, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds_sum += seconds
        for i, b in enumerate(self.buckets):
            if seconds <= b:
                self.bucket_counts[i] += 1


class KeyIndex:
    """A superset of the 64-bit key hashes stored in ``events`` (see the module docstring).

    ``base`` is a sorted numpy array (8 bytes per stored event), ``recent`` a set of the
    hashes added since the last merge.
    """

    def __init__(self) -> None:
        self.base: npt.NDArray[np.uint64] = np.empty(0, dtype=np.uint64)
        self.recent: set[int] = set()

    def load(self, store: DuckDBStore) -> None:
        self.base = np.unique(np.asarray(store.key_hashes("events", EVENT_KEY), dtype=np.uint64))
        self.recent = set()

    def __len__(self) -> int:
        return len(self.base) + len(self.recent)

    def maybe_present(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """True where the hash is held (the key may be stored); False: surely not stored."""
        out = np.zeros(len(hashes), dtype=np.bool_)
        if len(self.base):
            pos = np.searchsorted(self.base, hashes)
            np.minimum(pos, len(self.base) - 1, out=pos)
            out |= self.base[pos] == hashes
        if self.recent:
            recent = self.recent
            out |= np.fromiter((h in recent for h in hashes.tolist()), dtype=np.bool_, count=len(hashes))
        return out

    def add(self, hashes: npt.NDArray[np.uint64]) -> None:
        self.recent.update(hashes.tolist())
        if len(self.recent) > max(200_000, len(self.base) // 4):
            merged = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
            self.base = np.union1d(self.base, merged)
            self.recent = set()


@dataclass
class _Group:
    """A validated group on its way from the validate thread to the commit thread."""

    jobs: list[Job]
    outcomes: list[Outcome]
    events: pa.Table
    hashes: npt.NDArray[np.uint64]
    """:func:`~journeylens.ingest.live.key_hashes` of ``events``, row by row."""
    quarantine: pa.Table
    owners: dict[tuple[str, str], int]
    identity_ws: set[str]
    size: int
    started: float


class Writer:
    """Owns the store; see the module docstring."""

    def __init__(self, db: str, *, max_wait: float = 0.010, max_events: int = 5000,
                 max_queue: int = 100_000, identity_every: float = 2.0, validate_workers: int = 2,
                 checkpoint_mb: int = 128, duckdb_threads: int = 0,
                 on_open: Callable[[DuckDBStore], None] | None = None) -> None:
        self.db = db
        self.duckdb_threads = duckdb_threads
        """DuckDB ``threads`` of the database instance (0: DuckDB's default, one per core). Group inserts
        are small: on one thread a commit costs about half the CPU (no worker threads to wake)."""
        self.validate_workers = validate_workers
        self.checkpoint_mb = checkpoint_mb
        self._gathering = threading.Lock()  # one validate thread gathers at a time
        self.workers: dict[str, ValidationWorker | None] = {}
        """The validation worker of each validate thread (by thread name)."""
        self.max_wait = max_wait
        self.max_events = max_events
        self.max_queue = max_queue
        self.identity_every = identity_every
        self.on_open = on_open
        self.stats = Stats()
        self.index = KeyIndex()
        self._cv = threading.Condition()
        self._queue: deque[Job | Call] = deque()
        self._pending = 0
        self._stop = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._handoff: queue.Queue[_Group | Call | None] = queue.Queue(maxsize=1)
        self._validators = [threading.Thread(target=self._validate_loop, name=f"journeylens-validate-{i}", daemon=True)
                            for i in range(max(1, validate_workers))]
        self._thread = threading.Thread(target=self._run, name="journeylens-writer", daemon=True)
        self._identity = threading.Thread(target=self._identity_loop, name="journeylens-identity", daemon=True)
        self._identity_cv = threading.Condition()
        self._identity_lock = threading.Lock()  # held by an identity rebuild and by calls
        self._dirty: set[str] = set()
        self._identity_stop = False
        self.alive = False

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 60.0) -> None:
        """Start the threads and wait until the store is open (raises its error)."""
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
        """Run ``fn(store)`` on the commit thread and await its result (``fn`` must not insert events)."""
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
        """Run ``fn(store)`` on the commit thread from another thread."""
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

    def _release(self, size: int) -> None:
        with self._cv:
            self._pending -= size

    # ------------------------------------------------------------------ commit thread
    def _run(self) -> None:
        try:
            store = DuckDBStore(self.db)
            if self.checkpoint_mb:
                # DuckDB checkpoints when the WAL reaches this size; at 16 MB (its default) a busy
                # collector rewrites the table's open row group every few seconds inside a COMMIT
                store.raw.execute(f"SET checkpoint_threshold = '{int(self.checkpoint_mb)}MB'")
            if self.duckdb_threads > 0:
                store.raw.execute(f"SET threads = {int(self.duckdb_threads)}")
            if self.on_open is not None:
                self.on_open(store)
            self.index.load(store)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self.alive = True
        for t in self._validators:
            t.start()
        self._identity.start()
        self._ready.set()
        try:
            running = len(self._validators)
            while running:
                item = self._handoff.get()
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, Call):
                    with self._identity_lock:
                        try:
                            result = item.fn(store)
                        except BaseException as exc:
                            result = exc
                    self._release(item.size)
                    item.done(result)
                else:
                    self._commit(store, item)
        finally:
            self.alive = False
            with self._cv:
                self._stop = True
                self._cv.notify_all()
            for t in self._validators:
                t.join(timeout=30)
            while True:  # a group handed over while stopping
                try:
                    left_item = self._handoff.get_nowait()
                except queue.Empty:
                    break
                if isinstance(left_item, _Group):
                    for job in left_item.jobs:
                        job.done(StorageFailed("the server is shutting down"))
                elif isinstance(left_item, Call):
                    left_item.done(StorageFailed("the server is shutting down"))
            with self._identity_cv:
                self._identity_stop = True
                self._identity_cv.notify_all()
            self._identity.join(timeout=120)
            with self._identity_lock:
                dirty, self._dirty = sorted(self._dirty), set()
            self._rebuild(store, dirty)
            store.close()

    def _commit(self, store: DuckDBStore, group: _Group) -> None:
        outcomes = group.outcomes
        try:
            events, hashes = group.events, group.hashes
            maybe = self.index.maybe_present(hashes)
            if maybe.any():
                parts = [("events", events.filter(pa.array(~maybe)), ()),
                         ("events", events.filter(pa.array(maybe)), EVENT_KEY)]
            else:
                parts = [("events", events, ())]
            began = time.perf_counter()
            found = store.append_parts([*parts, ("quarantine", group.quarantine, ())])
            self.stats.transaction_seconds_sum += time.perf_counter() - began
            dupes = found[1] if maybe.any() else set()
        except BaseException as exc:
            self.stats.commit_failures += 1
            self._release(group.size)
            for job in group.jobs:
                job.done(StorageFailed(f"storage failed: {type(exc).__name__}: {str(exc)[:200]}"))
            return
        self.index.add(hashes)
        for key, j in group.owners.items():
            if key in dupes:
                outcomes[j].duplicates += 1
            else:
                outcomes[j].accepted += 1
        if group.identity_ws:
            with self._identity_cv:
                self._dirty |= group.identity_ws
                self._identity_cv.notify_all()
        st = self.stats
        st.observe_commit(time.perf_counter() - group.started)
        for o in outcomes:
            st.accepted += o.accepted
            st.duplicates += o.duplicates
            st.quarantined += len(o.quarantined)
        self._release(group.size)
        for job, o in zip(group.jobs, outcomes, strict=True):
            job.done(o)

    # ------------------------------------------------------------------ validate thread
    def _check(self, duck: Duck, worker: ValidationWorker | None, messages: list[dict[str, Any]], workspace: str,
               now: datetime) -> tuple[Checked, npt.NDArray[np.uint64]]:
        """:func:`validate_messages` and the accepted rows' :func:`key_hashes`, in this thread's
        worker process when it runs, else on this thread."""
        if worker is not None and worker.ready:
            try:
                return worker.validate(messages, workspace, now)
            except WorkerLost:
                pass
        checked = validate_messages(messages, workspace, now, duck)
        return checked, key_hashes(checked.accepted, duck)

    def _validate_loop(self) -> None:
        """One validate thread (there is one per worker process): gather a group, validate it
        (in its worker), hand it to the commit thread. While one thread validates, the next
        gathers, so the workers run side by side on whole groups."""
        duck = Duck("UTC")
        # groups are small: running each query on this thread beats waking DuckDB's worker
        # threads on a busy box
        duck.con.execute("SET threads = 1")
        # the worker starts with the first group (until it is ready this thread validates), so
        # server start and restart are not slowed by it; a lost worker is replaced after 30 s
        worker: ValidationWorker | None = None
        started_worker = -1e9
        name = threading.current_thread().name
        try:
            while True:
                with self._gathering:
                    group = self._gather()
                if group is None:
                    break
                if not group:
                    continue
                if self.validate_workers and (worker is None or worker.proc is None) and \
                        time.monotonic() - started_worker > 30:
                    if worker is not None:
                        worker.close()
                    worker, started_worker = self._new_worker(), time.monotonic()
                    self.workers[name] = worker
                first = group[0]
                if isinstance(first, Call):
                    self._handoff.put(first)
                    continue
                jobs = [g for g in group if isinstance(g, Job)]
                started = time.perf_counter()
                outcomes = [Outcome() for _ in jobs]
                size = sum(j.size for j in jobs)
                try:
                    events, hashes, quarantine, owners, identity_ws = self._validate(duck, worker, jobs, outcomes)
                    self.stats.validate_seconds_sum += time.perf_counter() - started
                except BaseException as exc:
                    self.stats.commit_failures += 1
                    self._release(size)
                    for job in jobs:
                        job.done(StorageFailed(f"validation failed: {type(exc).__name__}: {str(exc)[:200]}"))
                    continue
                self._handoff.put(_Group(jobs, outcomes, events, hashes, quarantine, owners, identity_ws, size,
                                         started))
        finally:
            with self._cv:
                left = list(self._queue)
                self._queue.clear()
            for g in left:
                self._release(g.size)
                g.done(StorageFailed("the server is shutting down"))
            self._handoff.put(None)
            duck.close()
            if worker is not None:
                worker.close()

    def _new_worker(self) -> ValidationWorker | None:
        if not self.validate_workers:
            return None
        try:
            return ValidationWorker()
        except OSError:
            return None

    def _gather(self) -> list[Job | Call] | None:
        """The next group (empty after an idle second); None when stopping.

        A group is one call, or jobs gathered for ``max_wait`` seconds after the first and then
        for as long as the commit thread has not taken the previous group, up to ``max_events``
        messages."""
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
                    nxt = self._queue[0]
                    if n + nxt.size > self.max_events:
                        break
                    self._queue.popleft()
                    group.append(nxt)
                    n += nxt.size
                    continue
                left = deadline - time.monotonic()
                if self._stop:
                    break
                if left <= 0:
                    if not self._handoff.full():
                        break
                    left = 0.002  # the commit thread is still busy: keep gathering (adaptive group size)
                self._cv.wait(timeout=left)
            return group

    # ------------------------------------------------------------------ identity thread
    def _identity_loop(self) -> None:
        store: DuckDBStore | None = None
        next_at = 0.0
        try:
            while True:
                with self._identity_cv:
                    while not self._identity_stop and (not self._dirty or time.monotonic() < next_at):
                        wait = None if not self._dirty else max(0.0, next_at - time.monotonic())
                        self._identity_cv.wait(timeout=wait)
                    if self._identity_stop:
                        return
                with self._identity_lock:
                    with self._identity_cv:
                        dirty, self._dirty = sorted(self._dirty), set()
                    began = time.monotonic()
                    if store is None:
                        try:
                            store = DuckDBStore(self.db)  # the same database instance, own connection
                        except Exception:
                            store = None
                    failed = self._rebuild(store, dirty) if store is not None else dirty
                    took = time.monotonic() - began
                if failed:
                    with self._identity_cv:
                        self._dirty |= set(failed)
                next_at = time.monotonic() + max(self.identity_every, 4 * took)
        finally:
            if store is not None:
                store.close()

    @staticmethod
    def _rebuild(store: DuckDBStore, workspaces: list[str]) -> list[str]:
        """Rebuild the identities of ``workspaces``; the ones that failed (retried later)."""
        if not workspaces:
            return []
        from journeylens.identity import rebuild_identities

        failed = []
        for ws in workspaces:
            try:
                rebuild_identities(store, ws)
            except Exception:
                failed.append(ws)
        return failed

    def _validate(self, duck: Duck, worker: ValidationWorker | None, jobs: list[Job], outcomes: list[Outcome],
                  ) -> tuple[pa.Table, npt.NDArray[np.uint64], pa.Table, dict[tuple[str, str], int], set[str]]:
        """The group's new-in-group event rows with their key hashes, its quarantine rows, the job
        owning each event key, and the workspaces that received identity messages."""
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
        hash_parts: list[npt.NDArray[np.uint64]] = []
        owners: dict[tuple[str, str], int] = {}
        identity_ws: set[str] = set()
        now = datetime.now(UTC)
        for ws, items in by_ws.items():
            checked, hashes = self._check(duck, worker, [msg for _, _, msg in items], ws, now)
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
                    hashes = hashes[np.array(keep, dtype=np.bool_)]
                types = set(acc.column("type").to_pylist())
                if types & IDENTITY_TYPES:
                    identity_ws.add(ws)
                tables.append(acc)
                hash_parts.append(hashes)
        events = pa.concat_tables(tables) if tables else _schema("events").empty_table()
        all_hashes = np.concatenate(hash_parts) if hash_parts else np.empty(0, dtype=np.uint64)
        quarantine = pa.Table.from_pylist(q_rows, schema=_schema("quarantine"))
        return events, all_hashes, quarantine, owners, identity_ws


@functools.cache
def _schema(table: str) -> pa.Schema:
    """The Arrow schema of a canonical table, built once (not per group)."""
    return schema.TABLES[table].arrow_schema()


def _qrow(job: Job, index: int, fld: str | None, reason: str, raw: str | None) -> dict[str, Any]:
    return {"workspace": job.workspace, "target": "events", "source": job.source, "line": index + 1 if index >= 0 else None,
            "field": fld, "reason": reason, "raw": raw, "received_at": job.received_at}


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
