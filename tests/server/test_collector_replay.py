"""Quarantined collector messages, fixed and replayed through the collector's own checks and mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

import journeylens
from journeylens.cli.app import app
from tests.server.conftest import ThreadServer, make_db

BATCH = [
    {"type": "track", "event": "visit", "userId": "u1", "messageId": "m-ok", "timestamp": "2024-05-01T10:00:00Z"},
    {"type": "track", "event": "purchase", "userId": "u1", "messageId": "m-rev",
     "timestamp": "2024-05-01T10:05:00Z", "properties": {"revenue": "12 EUR"}},
    {"type": "track", "userId": "u2", "messageId": "m-noevent", "timestamp": "2024-05-01T11:00:00Z"},
    {"type": "track", "event": "visit", "userId": "u3", "timestamp": "last tuesday",
     "context": {"campaign": {"source": "newsletter", "medium": "email"}}},
]


def _events(ws: Any) -> dict[str, dict[str, Any]]:
    rows = ws.store.to_pyarrow(ws.events()).to_pylist()
    return {r["message_id"]: r for r in rows}


def test_live_quarantine_fixed_and_replayed(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    try:
        r = httpx.post(srv.url + "/v1/batch", json={"batch": BATCH, "sentAt": "2024-05-01T12:00:00Z"},
                       auth=(keys["wa"], ""), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1 and len(r.json()["quarantined"]) == 3
        bad = httpx.post(srv.url + "/v1/track", content=b'{"event": "visit", "userId": "u9"',  # truncated
                         headers={"content-type": "application/json"}, auth=(keys["wa"], ""), timeout=30)
        assert bad.status_code == 400
    finally:
        srv.stop()

    runner = CliRunner()
    cli = ["--db", str(db), "--workspace", "A"]
    listed = runner.invoke(app, [*cli, "quarantine", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["total"] == 4
    # without a sub-command `quarantine` still lists (and filters)
    only = json.loads(runner.invoke(app, [*cli, "quarantine", "--reason", "invalid_json", "--format", "json"]).stdout)
    assert only["total"] == 1 and only["rows"][0]["line"] is None

    # a plain replay: nothing passes, nothing changes
    plain = json.loads(runner.invoke(app, [*cli, "quarantine", "replay", "--format", "json"]).stdout)
    assert (plain["replayed"], plain["still_invalid"]) == (0, 4)

    out = tmp_path / "fix.jsonl"
    exp = runner.invoke(app, [*cli, "quarantine", "export", "--out", str(out), "--format", "json"])
    assert exp.exit_code == 0, exp.output
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(items) == 4
    fixed = []
    for it in items:
        rec = it.get("record")
        if it["line"] is None:  # the truncated body: the user writes the whole body again
            assert "record" not in it
            it["raw"] = '{"event": "visit", "userId": "u9", "messageId": "m-body"}'
        elif rec["messageId"] == "m-rev":
            rec["properties"]["revenue"] = 12
        elif rec["messageId"] == "m-noevent":
            rec["event"] = "visit"
        else:  # the unparseable timestamp (its messageId was assigned by the server)
            rec["timestamp"] = "2024-05-01T11:30:00Z"
            it["server_id"] = rec["messageId"]
        fixed.append(it)
    out.write_text("\n".join(json.dumps(it) for it in fixed) + "\n")
    server_id = next(it["server_id"] for it in fixed if "server_id" in it)

    res = runner.invoke(app, [*cli, "quarantine", "replay", "--file", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert (rep["replayed"], rep["still_invalid"], rep["appended"], rep["duplicates"]) == (4, 0, {"events": 4}, 0)

    with journeylens.open(db, workspace="A") as ws:
        ev = _events(ws)
        assert set(ev) == {"m-ok", "m-rev", "m-noevent", "m-body", server_id}
        assert ev["m-rev"]["revenue"] == 12.0
        assert ev["m-noevent"]["event"] == "visit"
        # the collector had corrected the clock skew; the replay keeps what the user wrote
        assert ev[server_id]["ts"].isoformat() == "2024-05-01T11:30:00+00:00"
        assert (ev[server_id]["utm_source"], ev[server_id]["channel"]) == ("newsletter", "email")
        assert ev["m-body"]["user_id"] == "u9" and ev["m-body"]["type"] == "track"
        assert ws.quarantine().total == 0
        # idempotent: the same file again names rows that are gone
        again = ws.replay_quarantine(fixes={it["id"]: json.dumps(it.get("record")) for it in fixed})
        assert (again.replayed, again.selected, len(again.missing_ids)) == (0, 0, 4)
        assert len(_events(ws)) == 5


def test_replayed_message_without_id_gets_a_stable_id(tmp_path: Path) -> None:
    """A message quarantined before it got a server id: its replay id derives from the row id,
    so two replays of the same row (e.g. after a crash before the commit) could not store it twice."""
    from datetime import UTC, datetime

    from journeylens.ingest.replay import plan_replay, quarantine_id

    row = {"workspace": "A", "target": "events", "source": "http /v1/track", "line": 1, "field": "event",
           "reason": "track needs event", "raw": json.dumps({"type": "track", "userId": "u1"}),
           "received_at": datetime(2024, 5, 1, 12, tzinfo=UTC)}
    fix = {quarantine_id(row): json.dumps({"type": "track", "userId": "u1", "event": "visit"})}
    a = plan_replay([row], fixes=fix)
    b = plan_replay([row], fixes=fix)
    ids_a = a.appends[0][1].column("message_id").to_pylist()
    assert ids_a == b.appends[0][1].column("message_id").to_pylist() and len(ids_a) == 1
    assert a.appends[0][1].column("ts").to_pylist()[0] == row["received_at"]  # no time: received
