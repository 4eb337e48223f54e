"""Replaying quarantined file rows: fixed rows go through the importer's mapping and validation,
exactly those leave the quarantine, nothing is lost, a second replay changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import journeylens
from journeylens.ingest.replay import quarantine_id

HEADER = "timestamp,userId,event_name,revenue,channel,color\n"
GOOD = "2026-01-01T10:00:00Z,u1,visit,,email,red\n"
BAD_TS = "yesterday,u2,visit,,email,blue\n"
BAD_REVENUE = "2026-01-01T11:00:00Z,u3,purchase,12 EUR,,green\n"
NO_USER = "2026-01-01T12:00:00Z,,visit,,,\n"
WRONG_COLUMNS = "2026-01-01T13:00:00Z,u5,visit\n"


def _events(ws: Any) -> list[dict[str, Any]]:
    cols = ["message_id", "ts", "user_id", "event", "revenue", "channel", "properties", "received_at"]
    return ws.store.to_pyarrow(ws.events().select(*cols).order_by("message_id")).to_pylist()  # type: ignore[no-any-return]


def _quarantine(ws: Any) -> list[dict[str, Any]]:
    q = ws.table("quarantine")
    return ws.store.to_pyarrow(q.order_by("line")).to_pylist()  # type: ignore[no-any-return]


def test_csv_rows_fixed_and_replayed(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(HEADER + GOOD + BAD_TS + BAD_REVENUE + NO_USER + WRONG_COLUMNS)
    with journeylens.open(tmp_path / "a.duckdb") as ws:
        rep = ws.import_events(src)
        assert (rep.accepted, rep.quarantined) == (1, 4)
        before = _quarantine(ws)
        assert [(r["line"], r["reason"]) for r in before] == [
            (3, "cannot parse timestamp"), (4, "not numeric"), (5, "missing user_id and anonymous_id"),
            (6, "wrong number of columns")]

        # 1. replay without fixes: every row fails again with the same reason, nothing changes
        again = ws.replay_quarantine()
        assert (again.replayed, again.still_invalid, again.unchanged) == (0, 3, 1)
        assert _quarantine(ws) == before
        assert len(_events(ws)) == 1

        # 2. export, fix by hand, replay the file
        rows = {r["line"]: r for r in before}
        fixes = {
            quarantine_id(rows[3]): json.dumps({**json.loads(rows[3]["raw"]), "timestamp": "2026-01-01T10:30:00Z"}),
            quarantine_id(rows[4]): json.dumps({**json.loads(rows[4]["raw"]), "revenue": "12"}),
            # the wrong-column row: its raw is the line text; the fix is a proper record
            quarantine_id(rows[6]): json.dumps({"timestamp": "2026-01-01T13:00:00Z", "userId": "u5",
                                                "event_name": "visit", "revenue": "", "channel": "",
                                                "color": "black"}),
        }
        done = ws.replay_quarantine(fixes=fixes)
        assert (done.replayed, done.still_invalid, done.appended) == (3, 0, {"events": 3})
        left = _quarantine(ws)
        assert [(r["line"], r["reason"]) for r in left] == [(5, "missing user_id and anonymous_id")]
        stored = _events(ws)
        assert len(stored) + len(left) == 5  # nothing lost: every source row is stored or quarantined

        # 3. oracle: the same fixed rows imported as a file give the very same rows
        fixed = tmp_path / "events.csv"  # same path: the message_id hash does not depend on it anyway
        fixed_text = (HEADER + GOOD + "2026-01-01T10:30:00Z,u2,visit,,email,blue\n"
                      + "2026-01-01T11:00:00Z,u3,purchase,12,,green\n" + "2026-01-01T13:00:00Z,u5,visit,,,black\n")
        fixed.write_text(fixed_text)
    with journeylens.open(tmp_path / "oracle.duckdb") as oracle:
        oracle.import_events(fixed)
        want = _events(oracle)
    with journeylens.open(tmp_path / "a.duckdb") as ws:
        got = _events(ws)
        drop = ("received_at",)
        assert [{k: v for k, v in r.items() if k not in drop} for r in got] == \
               [{k: v for k, v in r.items() if k not in drop} for r in want]
        assert {r["user_id"]: r["revenue"] for r in got}["u3"] == 12.0
        assert json.loads({r["user_id"]: r["properties"] for r in got}["u5"]) == {"color": "black"}

        # 4. idempotent: replaying the same fixes again finds no such rows; a plain replay changes nothing
        twice = ws.replay_quarantine(fixes=fixes)
        assert (twice.replayed, twice.selected, len(twice.missing_ids)) == (0, 0, 3)
        plain = ws.replay_quarantine()
        assert (plain.replayed, plain.still_invalid) == (0, 1)
        assert _events(ws) == got and _quarantine(ws) == left
        # re-importing the original file adds nothing and does not quarantine the replayed rows again
        src.write_text(HEADER + GOOD + BAD_TS + BAD_REVENUE + NO_USER + WRONG_COLUMNS)
        rep2 = ws.import_events(src)
        assert rep2.accepted == 0


def test_fixed_row_that_still_fails_keeps_its_new_reason(tmp_path: Path) -> None:
    src = tmp_path / "people.jsonl"
    src.write_text(json.dumps({"user_id": "p1", "ts": "2026-01-01", "plan": "pro"}) + "\n"
                   + json.dumps({"user_id": "p2", "ts": "not a date"}) + "\n")
    with journeylens.open(tmp_path / "p.duckdb") as ws:
        rep = ws.import_people(src)
        assert (rep.accepted, rep.quarantined) == (1, 1)
        (row,) = _quarantine(ws)
        assert (row["target"], row["reason"]) == ("people", "cannot parse timestamp")
        # a fix that is still wrong: the row stays, with the new reason and the fixed raw
        bad_fix = {quarantine_id(row): json.dumps({"ts": "2026-01-02"})}
        r1 = ws.replay_quarantine(fixes=bad_fix)
        assert (r1.replayed, r1.still_invalid) == (0, 1)
        (row2,) = _quarantine(ws)
        assert (row2["field"], row2["reason"], json.loads(row2["raw"])) == (
            "user_id", "missing required value", {"ts": "2026-01-02"})
        # the right fix (by the row's new id) replays it through the JSON-lines mapping (plan -> traits)
        r2 = ws.replay_quarantine(fixes={quarantine_id(row2): json.dumps({"user_id": "p2", "ts": "2026-01-02",
                                                                          "plan": "free"})})
        assert (r2.replayed, r2.appended) == (1, {"people": 1})
        assert _quarantine(ws) == []
        p = ws.store.to_pyarrow(ws.table("people").filter(ws.table("people").user_id == "p2")).to_pylist()
        assert json.loads(p[0]["traits"]) == {"plan": "free"}
