"""Paths and transitions on the shop demo, checked against pandas.

The oracle never touches journeylens: it reads the generated ``events.parquet``, takes the
touches (track/page/screen rows), gives each the person the generator planted
(``truth_persons.parquet``: every anonymous and user id of a human -> its ``person_id``) and
orders each person's touches by time, then message id.

DuckDB only: the same analyses give the same answers on Spark in test_paths.py (a Spark
store filled with this demo takes about a minute, too slow for every run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from journeylens.analyses.paths import PATH_END, PATH_START, PathsQuery, paths
from journeylens.analyses.transitions import TransitionsQuery, transitions
from journeylens.demo import generate
from journeylens.store import open_store
from journeylens.workspace import Workspace


@dataclass(frozen=True)
class Demo:
    ws: Workspace
    files: dict[str, Path]
    touches: pd.DataFrame
    """Oracle: person, ts, message_id, event of every touch, in journey order."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = tmp_path_factory.mktemp("shop")
    res = generate(scenario="shop", people=300, seed=3, out_dir=d / "data")
    store = open_store(d / "demo.duckdb")
    ws = Workspace(store)
    ws.import_file("events", res.files["events"])

    ev = pd.read_parquet(res.files["events"])
    ev = ev[ev["type"].isin(["track", "page", "screen"])].copy()
    persons = pd.read_parquet(res.files["truth_persons"])
    owner: dict[str, str] = {}
    for row in persons.itertuples():
        for i in [*row.anonymous_ids, *row.user_ids]:
            owner[str(i)] = str(row.person_id)
    ev["person"] = [owner[u] if isinstance(u, str) else owner[a] for u, a in zip(ev.user_id, ev.anonymous_id, strict=True)]
    ev = ev.sort_values(["person", "ts", "message_id"], kind="stable").reset_index(drop=True)
    yield Demo(ws, dict(res.files), ev[["person", "ts", "message_id", "event"]])
    store.close()


def _pairs(t: pd.DataFrame) -> pd.DataFrame:
    """Consecutive touches of each person: source, target, seconds between them."""
    nxt = t.groupby("person").shift(-1)
    pairs = pd.DataFrame({"person": t.person, "source": t.event, "target": nxt.event,
                          "seconds": (nxt.ts - t.ts).dt.total_seconds()})
    return pairs.dropna(subset=["target"])


def test_transitions_out_of_each_event_are_its_touches_minus_last_touches(demo: Demo) -> None:
    m = transitions(demo.ws.touches(), TransitionsQuery())
    out: Counter[str] = Counter()
    into: Counter[str] = Counter()
    for t in m.transitions:
        out[t.source] += t.transitions
        into[t.target] += t.transitions
    t = demo.touches
    touches = t.event.value_counts()
    last = t.groupby("person").event.last().value_counts()
    first = t.groupby("person").event.first().value_counts()
    for event, n in touches.items():
        assert out[event] == n - last.get(event, 0), event
        assert into[event] == n - first.get(event, 0), event
    assert m.persons == t.person.nunique()


def test_transition_matrix_equals_consecutive_pairs(demo: Demo) -> None:
    m = transitions(demo.ws.touches(), TransitionsQuery())
    pairs = _pairs(demo.touches)
    g = pairs.groupby(["source", "target"])
    oracle = pd.DataFrame({
        "transitions": g.size(), "persons": g.person.nunique(),
        "median": g.seconds.quantile(0.5), "p95": g.seconds.quantile(0.95),  # linear, as the SQL
    })
    oracle["out"] = oracle.transitions / oracle.groupby(level="source").transitions.transform("sum")
    oracle["in"] = oracle.transitions / oracle.groupby(level="target").transitions.transform("sum")
    got = {(t.source, t.target): t for t in m.transitions}
    assert set(got) == set(oracle.index)
    for key, row in oracle.iterrows():
        t = got[key]  # type: ignore[index]
        assert (t.transitions, t.persons) == (row.transitions, row.persons), key
        assert (t.probability_out, t.probability_in) == pytest.approx((row.out, row["in"])), key
        assert (t.median_seconds, t.p95_seconds) == pytest.approx((row["median"], row.p95)), key


def test_paths_hold_only_each_persons_own_touches(demo: Demo) -> None:
    r = paths(demo.ws.touches(), PathsQuery(depth=5, top=50))
    got = r.units.to_pyarrow().to_pandas().set_index("person_id").path.to_dict()  # type: ignore[union-attr]
    expected = demo.touches.groupby("person").event.apply(lambda s: " → ".join(s.head(5))).to_dict()
    assert got == expected
    counts = Counter(tuple(p.split(" → ")) for p in expected.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
    assert [(p.nodes, p.persons) for p in r.paths] == ranked
    assert (r.persons, r.distinct_paths) == (len(expected), len(counts))


def test_start_end_nodes_make_every_touch_leave_and_flows_conserve(demo: Demo) -> None:
    t = demo.touches
    m = transitions(demo.ws.touches(), TransitionsQuery(start_end_nodes=True))
    out: Counter[str] = Counter()
    for tr in m.transitions:
        out[tr.source] += tr.transitions
    assert dict(out) == {**t.event.value_counts().to_dict(), PATH_START: t.person.nunique()}

    # collapsed paths, Sankey: every node that the depth does not cut leaves by exactly one link
    r = paths(demo.ws.touches(), PathsQuery(collapse_repeats=True, start_end_nodes=True, depth=4,
                                            max_links=10_000))
    assert r.sankey.links_total == len(r.sankey.links)
    leaving: Counter[tuple[int, str]] = Counter()
    for lk in r.sankey.links:
        leaving[(lk.step, lk.source)] += lk.persons
    for n in r.sankey.nodes:
        if n.name != PATH_END and n.step < 4:
            assert leaving[(n.step, n.name)] == n.persons, n
    for path in r.units.to_pyarrow().column("path").to_pylist():  # type: ignore[union-attr]
        nodes = path.split(" → ")
        assert all(a != b for a, b in pairwise(nodes)), path


def test_converters_are_the_persons_who_purchased(demo: Demo) -> None:
    truth = pd.read_parquet(demo.files["truth_persons"])
    m = transitions(demo.ws.touches(), TransitionsQuery(converted="purchase"))
    assert (m.converter_persons, m.non_converter_persons) == (int(truth.converted.sum()),
                                                              int((~truth.converted).sum()))
    # non-converters never make a transition into purchase
    assert all(t.target != "purchase" for t in m.non_converters)
    assert any(d.difference is not None and d.difference > 0 for d in m.differences)
