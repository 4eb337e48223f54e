"""generate(): determinism, parameters, progress, catalog consistency."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import journeylens.demo.generator as gen_mod
from journeylens.demo import DemoResult, generate
from journeylens.demo import _vocab as V
from journeylens.errors import InvalidParameterError

CATALOG = Path(__file__).resolve().parents[2] / "src" / "journeylens" / "journey" / "catalog.yaml"


def table_hash(path: Path) -> str:
    """Hash of the table's content (not of the file's bytes or row groups)."""
    table = pq.read_table(path).combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _run(tmp: Path, name: str, scenario: str = "shop", people: int = 600, seed: int = 5,
         days: int = 60) -> DemoResult:
    return generate(scenario=scenario, people=people, seed=seed, out_dir=tmp / name,
                    start=date(2026, 3, 1), days=days)


@pytest.mark.parametrize("scenario", ["shop", "b2b"])
def test_deterministic(tmp_path: Path, scenario: str) -> None:
    a = _run(tmp_path, "a", scenario=scenario)
    b = _run(tmp_path, "b", scenario=scenario)
    assert table_hash(a.files["events"]) == table_hash(b.files["events"])
    assert table_hash(a.files["truth_persons"]) == table_hash(b.files["truth_persons"])
    for key in ("people", "costs", "surveys", "truth", *(["accounts"] if scenario == "b2b" else [])):
        assert a.files[key].read_bytes() == b.files[key].read_bytes(), key
    c = _run(tmp_path, "c", scenario=scenario, seed=6)
    assert table_hash(a.files["events"]) != table_hash(c.files["events"])


def test_output_does_not_depend_on_batching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen_mod, "BLOCK", 200)
    a = _run(tmp_path, "a")
    monkeypatch.setattr(gen_mod, "BATCH_BLOCKS", 1)
    b = _run(tmp_path, "b")
    assert table_hash(a.files["events"]) == table_hash(b.files["events"])
    assert a.files["truth"].read_bytes() == b.files["truth"].read_bytes()


def test_first_blocks_independent_of_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's people depend only on (scenario, seed, block): a larger run starts the same."""
    monkeypatch.setattr(gen_mod, "BLOCK", 200)
    small = pd.read_parquet(_run(tmp_path, "s", people=400).files["truth_persons"])
    large = pd.read_parquet(_run(tmp_path, "l", people=800).files["truth_persons"])
    cols = ["person_id", "persona", "furthest_stage", "converted", "n_purchases"]
    pd.testing.assert_frame_equal(small[cols], large[cols].iloc[:400])


def test_result_and_progress(tmp_path: Path) -> None:
    done: list[int] = []
    res = generate(scenario="b2b", people=1003, seed=1, out_dir=tmp_path / "x", start=date(2026, 1, 1),
                   days=90, progress=done.append)
    assert sum(done) == 1003
    assert res.out_dir == tmp_path / "x"
    assert res.events == res.truth["events"] > 0
    assert set(res.files) == {"events", "people", "accounts", "costs", "surveys", "truth", "truth_persons"}
    assert res.truth["days"] == 90 and res.truth["start"] == "2026-01-01"
    persons = pd.read_parquet(res.files["truth_persons"])
    assert len(persons) == 1003


@pytest.mark.parametrize(("scenario", "people", "seed", "days"), [
    ("retail", 10, 1, 10), ("shop", 0, 1, 10), ("shop", 10, -1, 10), ("shop", 10, 1, 0), ("b2b", 2, 1, 10),
])
def test_invalid_parameters(tmp_path: Path, scenario: str, people: int, seed: int, days: int) -> None:
    with pytest.raises(InvalidParameterError):
        _run(tmp_path, "bad", scenario=scenario, people=people, seed=seed, days=days)


def test_tiny_and_short_runs(tmp_path: Path) -> None:
    for scenario, people in (("shop", 1), ("b2b", 3)):
        res = _run(tmp_path, f"t-{scenario}", scenario=scenario, people=people, days=3)
        assert res.truth["people"] == people
        assert res.truth["identity"]["persons_after_stitching"] == people


def test_touchpoints_match_catalog() -> None:
    catalog = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["touchpoints"]
    for tp, ch in V.TOUCHPOINT_CHANNEL.items():
        assert tp in catalog, tp
        assert catalog[tp]["channel"] == ch, tp


def test_docs_cover_vocabulary_and_truth() -> None:
    """docs/demo.md names every event, persona and truth.json field the generator produces."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "demo.md").read_text(encoding="utf-8")
    from journeylens.demo import b2b, shop

    for name in set(V.EVENT_NAMES):
        assert f"`{name}`" in doc, name
    for p in (*shop.PERSONA_KEYS, *b2b.PERSONA_KEYS):
        assert f"`{p}`" in doc, p
    for key in ("scenario", "seed", "people", "start", "days", "events", "model", "stages", "personas",
                "channel_effects", "pain_point", "surveys", "costs", "identity", "counts", "accounts"):
        assert f"`{key}`" in doc or f"`{key}." in doc, key
