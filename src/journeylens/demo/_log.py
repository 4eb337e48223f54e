"""The in-memory event log of one write batch and its conversion to Arrow.

The simulation appends one value per column and row to plain lists (the cheapest
thing Python can do per row). A person's session is only kept when it ends before
the end of the simulated window: :meth:`EventLog.mark` remembers the lengths and
:meth:`EventLog.rollback` cuts a rejected session off again.

Ids (anonymous ids, user ids, account ids) are strings in :attr:`EventLog.ids`;
rows hold their index (``-1`` = null). Rarely used columns (revenue, previous_id,
traits) are stored sparsely as ``(row, value)`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journeylens import schema
from journeylens.demo import _vocab as V

SurveyRow = tuple[float, int, int, float, str | None, int, int, int, int, int, int]
"""(t, person id index, kind, score, comment, touchpoint, stage, theme, language, polarity, pid)"""

Mark = tuple[int, int]


class EventLog:
    """Column lists of the rows of one batch (see module doc)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.ev: list[int] = []
        self.tp: list[int] = []
        self.ch: list[int] = []
        self.camp: list[int] = []
        self.anon: list[int] = []
        self.user: list[int] = []
        self.acct: list[int] = []
        self.url: list[int] = []
        self.props: list[str | None] = []
        self.pid: list[int] = []
        self.rev: list[tuple[int, float]] = []
        self.prev: list[tuple[int, int]] = []
        self.traits: list[tuple[int, str]] = []
        self.surveys: list[SurveyRow] = []
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.t)

    def new_id(self, value: str) -> int:
        self.ids.append(value)
        return len(self.ids) - 1

    def mark(self) -> Mark:
        return (len(self.t), len(self.surveys))

    def rollback(self, m: Mark) -> None:
        n = m[0]
        for col in (self.t, self.ev, self.tp, self.ch, self.camp, self.anon, self.user,
                    self.acct, self.url, self.props, self.pid):
            del col[n:]
        for sparse in (self.rev, self.prev, self.traits):
            while sparse and sparse[-1][0] >= n:
                sparse.pop()
        del self.surveys[m[1]:]


@dataclass(frozen=True)
class Columns:
    """Numpy view of a finished batch (shared by the Arrow writer and the truth tallies)."""

    t_us: np.ndarray  # int64 microseconds since the epoch
    ev: np.ndarray
    tp: np.ndarray
    ch: np.ndarray
    camp: np.ndarray
    anon: np.ndarray
    user: np.ndarray
    acct: np.ndarray
    url: np.ndarray
    pid: np.ndarray
    revenue: np.ndarray  # float64, nan where none

    @property
    def n(self) -> int:
        return len(self.t_us)


def finish(log: EventLog, start_us: int) -> Columns:
    n = len(log.t)
    t = np.asarray(log.t, dtype=np.float64)
    t_us = np.rint(t * 1e6).astype(np.int64) + start_us
    revenue = np.full(n, np.nan)
    if log.rev:
        ri, rv = zip(*log.rev, strict=True)
        revenue[np.asarray(ri, dtype=np.int64)] = np.asarray(rv, dtype=np.float64)

    def i32(xs: list[int]) -> np.ndarray:
        return np.asarray(xs, dtype=np.int32) if xs else np.zeros(0, dtype=np.int32)

    return Columns(t_us=t_us, ev=i32(log.ev), tp=i32(log.tp), ch=i32(log.ch), camp=i32(log.camp),
                   anon=i32(log.anon), user=i32(log.user), acct=i32(log.acct), url=i32(log.url),
                   pid=i32(log.pid), revenue=revenue)


@dataclass(frozen=True)
class TableContext:
    """Everything besides the log needed to render rows as the canonical events table."""

    message_prefix: str
    campaign_source: list[str]
    campaign_medium: list[str]
    campaign_name: list[str]
    urls: list[str]
    referrer_of_touchpoint: list[str | None]
    workspace: str = "default"


def _take(vocab: pa.Array, codes: np.ndarray) -> pa.Array:
    idx = pa.array(codes, mask=codes < 0, type=pa.int32())
    return vocab.take(idx)


def _strings(vals: Sequence[str | None]) -> pa.Array:
    """A string array from Python strings (inferring the type is much faster than passing it)."""
    return pa.array(vals).cast(pa.string())


def _sparse_strings(n: int, pairs: list[tuple[int, str]]) -> pa.Array:
    vals: list[str | None] = [None] * n
    for i, v in pairs:
        vals[i] = v
    return _strings(vals)


_EVENT_NAME_VOCAB = pa.array(V.EVENT_NAMES, type=pa.string())
_EVENT_TYPE_VOCAB = pa.array([V.TYPES[t] for t in V.EVENT_TYPES], type=pa.string())
_TP_VOCAB = pa.array(V.TOUCHPOINTS, type=pa.string())
_CH_VOCAB = pa.array(V.CHANNELS, type=pa.string())


def to_table(log: EventLog, cols: Columns, ctx: TableContext, first_message: int) -> pa.Table:
    """The batch as a table with exactly the columns of ``schema.EVENTS``."""
    n = cols.n
    ids = _strings(log.ids)
    seq = pa.array(np.arange(first_message, first_message + n, dtype=np.int64))
    message_id = pc.binary_join_element_wise(
        ctx.message_prefix, pc.utf8_lpad(pc.cast(seq, pa.string()), 10, "0"), "")
    # received_at: a deterministic pseudo-random delay of 0.05-3 s per message
    delay = (np.arange(first_message, first_message + n, dtype=np.int64) * 2_654_435_761) % 2_950_000
    ts_type = schema.EVENTS.column("ts").arrow_type
    ts = pa.array(cols.t_us, type=pa.int64()).cast(ts_type)
    received = pa.array(cols.t_us + 50_000 + delay, type=pa.int64()).cast(ts_type)
    camp = cols.camp
    is_visit = cols.ev == V.E_VISIT
    ref_codes = np.where(is_visit, cols.tp, -1)
    ref_vocab = pa.array(ctx.referrer_of_touchpoint, type=pa.string())
    prev_pairs = [(i, log.ids[j]) for i, j in log.prev]
    rev_mask = np.isnan(cols.revenue)
    data: dict[str, pa.Array] = {
        "message_id": message_id,
        "workspace": pa.array(np.full(n, ctx.workspace, dtype=object), type=pa.string()),
        "ts": ts,
        "received_at": received,
        "type": _take(_EVENT_TYPE_VOCAB, cols.ev),
        "event": _take(_EVENT_NAME_VOCAB, cols.ev),
        "anonymous_id": _take(ids, cols.anon),
        "user_id": _take(ids, cols.user),
        "account_id": _take(ids, cols.acct),
        "previous_id": _sparse_strings(n, prev_pairs),
        "touchpoint": _take(_TP_VOCAB, cols.tp),
        "channel": _take(_CH_VOCAB, cols.ch),
        "utm_source": _take(pa.array(ctx.campaign_source, type=pa.string()), camp),
        "utm_medium": _take(pa.array(ctx.campaign_medium, type=pa.string()), camp),
        "utm_campaign": _take(pa.array(ctx.campaign_name, type=pa.string()), camp),
        "utm_content": pa.nulls(n, type=pa.string()),
        "utm_term": pa.nulls(n, type=pa.string()),
        "url": _take(pa.array(ctx.urls, type=pa.string()), cols.url),
        "referrer": _take(ref_vocab, ref_codes),
        "revenue": pa.array(cols.revenue, mask=rev_mask, type=pa.float64()),
        "currency": pc.if_else(pa.array(~rev_mask), "EUR", pa.scalar(None, type=pa.string())),
        "properties": _strings(log.props),
        "traits": _sparse_strings(n, log.traits),
    }
    arrow_schema = schema.EVENTS.arrow_schema()
    return pa.Table.from_arrays([data[f.name].cast(f.type) for f in arrow_schema], schema=arrow_schema)
