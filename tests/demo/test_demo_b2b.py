"""B2B specifics: accounts, buying committees, group calls, account-level truth."""

from __future__ import annotations

import pandas as pd

from tests.demo.demo_checks import B2B_STAGES, Run, person_of_rows, stage_of_rows, stitch


def test_accounts_have_3_to_8_people(b2b: Run) -> None:
    sizes = b2b.persons.groupby("account_id").size()
    assert sizes.between(3, 8).all()
    assert sizes.sum() == b2b.truth["people"]
    assert len(sizes) == b2b.truth["accounts"]["total"]
    assert {int(k): v for k, v in b2b.truth["accounts"]["committee_sizes"].items() if v} == \
        sizes.value_counts().to_dict()


def test_group_call_for_every_identified_person(b2b: Run) -> None:
    ev = b2b.events
    roots = stitch(ev)
    ident = person_of_rows(ev[ev["type"] == "identify"], roots)
    group = ev[ev["type"] == "group"]
    assert group["user_id"].notna().all() and group["account_id"].notna().all()
    assert group["traits"].notna().all()
    grouped = person_of_rows(group, roots)
    assert set(ident) == set(grouped)
    # the group call names the person's account
    acct = b2b.persons.set_index("person_id")["account_id"]
    assert (grouped.map(acct).to_numpy() == group["account_id"].to_numpy()).all()
    people = pd.read_csv(b2b.res.files["people"])
    assert (people["user_id"].map(acct) == people["account_id"]).all()
    assert people["role"].isin(["champion", "decision_maker", "user", "finance", "it"]).all()


def test_account_stages_and_conversion(b2b: Run) -> None:
    ev = b2b.events
    roots = stitch(ev)
    person = person_of_rows(ev, roots)
    idx = stage_of_rows(ev, "b2b").map({s: i for i, s in enumerate(B2B_STAGES)})
    furthest = idx.groupby(person).max()
    # accounts as the data shows them: through the group calls of their (identified) members
    group = ev[ev["type"] == "group"]
    known = pd.Series(group["account_id"].to_numpy(), index=person_of_rows(group, roots).to_numpy())
    known = known[~known.index.duplicated()]
    seen = furthest.reindex(known.index).groupby(known.to_numpy()).max()
    # all simulated accounts, with all their members
    every = furthest.groupby(b2b.persons.set_index("person_id")["account_id"]).max()
    prev = prev_all = None
    for i, s in enumerate(B2B_STAGES):
        n, n_all = int((seen >= i).sum()), int((every >= i).sum())
        assert b2b.truth["stages"][s]["accounts"] == n, s
        assert b2b.truth["stages"][s]["accounts_all"] == n_all, s
        if prev is not None and prev_all is not None:
            assert n <= prev and n_all <= prev_all
        prev, prev_all = n, n_all
    assert b2b.truth["stages"]["awareness"]["accounts_all"] == b2b.truth["accounts"]["total"]
    assert b2b.truth["stages"]["awareness"]["accounts"] == b2b.truth["accounts"]["known"]
    # account-level conversion: one member signs the contract
    acct = person.map(b2b.persons.set_index("person_id")["account_id"])
    signed = acct[ev["event"] == "contract_signed"]
    assert signed.is_unique
    conv = b2b.persons.groupby("account_id")["account_converted"].first()
    assert set(conv.index[conv]) == set(signed)
    assert b2b.truth["accounts"]["converted"] == len(signed) > 0


def test_long_journeys_and_repeated_awareness(b2b: Run) -> None:
    ev = b2b.events
    roots = stitch(ev)
    person = person_of_rows(ev, roots)
    visits = ev[ev["event"] == "visit"].assign(person=person)
    per_person = visits.groupby("person").size()
    assert per_person.mean() > 2.5, "several awareness sessions per person"
    span = ev.assign(person=person).groupby("person")["ts"].agg(lambda s: s.max() - s.min())
    assert span.median() > pd.Timedelta(days=14)
    conv = ev[ev["event"] == "contract_signed"]
    acct = person.map(b2b.persons.set_index("person_id")["account_id"])
    first = ev.assign(acct=acct).groupby("acct")["ts"].min()
    cycle = conv["ts"].to_numpy() - acct[conv.index].map(first).to_numpy()
    assert pd.Series(cycle).median() > pd.Timedelta(days=30), "weeks to months until the contract"
