"""The CLI as a user meets it: formats, one-line errors with exit codes, no tracebacks."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "journeylens", "--db", str(tmp_path / "t.duckdb"), *args],
                          capture_output=True, text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("error [")
    return r.stderr


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    p = tmp_path / "events.csv"
    p.write_text(
        "timestamp,userId,event_name,channel\n"
        "2026-01-01T10:00:00Z,u1,visit,email\n"
        "not-a-time,u2,visit,email\n"
        "2026-01-01T10:05:00Z,u1,product_view,\n"
    )
    return p


def test_import_json_contract_and_quarantine(tmp_path: Path, events_csv: Path) -> None:
    r = run(tmp_path, "import", "events", str(events_csv), "--format", "json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert (rep["accepted"], rep["quarantined"], rep["duplicates"]) == (2, 1, 0)
    assert sum(rep["reasons"].values()) == 1
    q = json.loads(run(tmp_path, "quarantine", "--format", "json").stdout)
    assert q["total"] == 1
    row = q["rows"][0]
    assert (row["line"], row["field"], row["source"]) == (3, "ts", str(events_csv))


def test_import_twice_adds_nothing(tmp_path: Path, events_csv: Path) -> None:
    run(tmp_path, "import", "events", str(events_csv))
    rep = json.loads(run(tmp_path, "import", "events", str(events_csv), "--format", "json").stdout)
    assert (rep["accepted"], rep["duplicates"]) == (0, 2)
    q = json.loads(run(tmp_path, "quarantine", "--format", "json").stdout)
    assert q["total"] == 1  # the rejected row is not quarantined twice


def test_strict_exits_non_zero_when_rows_are_rejected(tmp_path: Path, events_csv: Path) -> None:
    r = run(tmp_path, "import", "events", str(events_csv), "--strict")
    assert r.returncode == 5
    assert "quarantined (--strict)" in one_line_error(r)


def test_nothing_accepted_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,user_id,event\nyesterday,u1,visit\n")
    r = run(tmp_path, "import", "events", str(bad))
    assert r.returncode == 4
    assert "no row was accepted" in one_line_error(r)


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    r = run(tmp_path, "import", "events", str(tmp_path / "nope.csv"))
    assert r.returncode == 2
    assert "nope.csv" in one_line_error(r)


def test_map_to_unknown_column_names_it(tmp_path: Path, events_csv: Path) -> None:
    r = run(tmp_path, "import", "events", str(events_csv), "--map", "channel=chanel")
    assert "chanel" in one_line_error(r)


def test_bad_map_syntax(tmp_path: Path, events_csv: Path) -> None:
    r = run(tmp_path, "import", "events", str(events_csv), "--map", "channel")
    assert "SOURCE=TARGET" in one_line_error(r)


def test_unknown_model_suggests_closest(tmp_path: Path) -> None:
    r = run(tmp_path, "stages", "--model", "five_phases")
    assert "did you mean 'five_phase'" in one_line_error(r)


def test_invalid_model_file_names_file_line_and_key(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("key: mine\nname: Mine\nstages:\n  - key: a\nrules:\n  - stage: b\n    when: {event: x}\n")
    err = one_line_error(run(tmp_path, "stages", "--model", str(f)))
    assert "mine.yaml:6" in err and "stage" in err


def test_models_json_contract(tmp_path: Path) -> None:
    models = json.loads(run(tmp_path, "models", "--format", "json").stdout)
    keys = [m["key"] for m in models]
    assert len(keys) == 9 and keys[0] == "five_phase"
    five = models[0]
    assert five["stages"] == ["awareness", "consideration", "decision", "retention", "advocacy"]


def test_stages_every_format(tmp_path: Path, events_csv: Path) -> None:
    run(tmp_path, "import", "events", str(events_csv), "--map", "event_name=event")
    js = json.loads(run(tmp_path, "stages", "--format", "json").stdout)
    assert js["model"] == "five_phase"
    # visit -> awareness, product_view -> consideration (one person, u1)
    assert [(s["stage"], s["people"], s["touches"]) for s in js["stages"][:3]] == [
        ("awareness", 1, 1), ("consideration", 1, 1), ("decision", 0, 0)]
    assert js["unmatched_touches"] == 0
    rows = list(csv.DictReader(io.StringIO(run(tmp_path, "stages", "--format", "csv").stdout)))
    assert rows[0]["stage"] == "awareness" and rows[0]["people"] == "1"
    table = run(tmp_path, "stages")
    assert table.returncode == 0 and "Awareness" in table.stdout


def test_journey_of_unknown_person(tmp_path: Path) -> None:
    assert "unknown person 'ghost'" in one_line_error(run(tmp_path, "journey", "ghost"))


def test_usage_error_exits_2_without_traceback(tmp_path: Path) -> None:
    r = run(tmp_path, "stages", "--no-such-option")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "No such option" in r.stderr
