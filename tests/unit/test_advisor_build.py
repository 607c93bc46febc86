"""advisor.build: one valid nydusd list per (service, image), stored with a scored report."""

from __future__ import annotations

import pytest

from advisor.build import build_lists, store_lists
from advisor.lists import ListStore, PrefetchList
from advisor.synth import SynthSpec, generate
from advisor.traces import validate


@pytest.fixture(scope="module")
def corpus():
    return validate(*generate(SynthSpec.small()))


def test_every_service_image_gets_a_valid_list(corpus, tmp_path):
    built = build_lists(corpus)
    groups = set(map(tuple, corpus.runs[["service", "image_digest"]].drop_duplicates().to_numpy()))
    assert {(b.service, b.image_digest) for b in built} == groups
    store = ListStore(tmp_path)
    store_lists(built, store)
    for b in built:
        stored = store.latest(b.service, b.image_digest)
        assert stored is not None
        plist = PrefetchList.read(stored.list_path)
        assert plist.valid and len(plist) == len(b.plist) > 0
        inv = set(corpus.inventory.loc[corpus.inventory["image_digest"] == b.image_digest, "path"])
        assert set(plist) <= inv
        rep = stored.report()
        assert [e["path"] for e in rep["entries"]] == list(plist)
        assert rep["synthetic_data"] is True
        incomplete = corpus.runs.loc[(corpus.runs["service"] == b.service) & (corpus.runs["image_digest"] == b.image_digest) & ~corpus.runs["complete"], "run_id"]
        assert sorted(rep["incomplete_runs_downweighted"]["run_ids"]) == sorted(incomplete)


def test_list_is_in_expected_need_order_and_covers_the_core(corpus):
    built = build_lists(corpus)
    b = next(x for x in built if x.service == "img1-svc0")
    keys = [e["order_key_ms"] for e in b.report["entries"]]
    assert keys == sorted(keys) and len(keys) == len(b.plist)
    # The key is the expected need time pushed back by expected waste, which is nil for near-certain files.
    sure = [e["expected_first_ms"] for e in b.report["entries"] if e["p_need"] >= 0.99]
    assert len(sure) > 10
    assert all(c >= a - 0.05 for a, c in zip(sure, sure[1:]))
    # Files every run read before ready are all in the list.
    runs = corpus.runs.loc[(corpus.runs["service"] == "img1-svc0") & corpus.runs["complete"], "run_id"]
    acc = corpus.accesses.loc[corpus.accesses["run_id"].isin(runs) & corpus.accesses["before_ready"]]
    always = acc.groupby("path")["run_id"].nunique()
    always = set(always[always == len(runs)].index)
    assert always and always <= set(b.plist)


def test_directory_entries_only_where_held_out_startups_are_shorter():
    import pandas as pd

    from advisor.evaluate import directory_choice

    rows = []
    # a: directories shorten 2 of 3 runs; b: they lengthen 2 of 3; c: no difference; d: they
    # helped early on but lengthen 3 of its 4 latest runs, which are what counts.
    for svc, ratios in (("a", (0.9, 0.95, 1.1)), ("b", (1.2, 1.05, 0.9)), ("c", (1.0, 1.0, 1.0)),
                        ("d", (0.5, 0.5, 0.5, 1.1, 1.1, 1.1, 0.9))):
        for i, r in enumerate(ratios):
            for name, ttr in (("learned", 2.0), ("learned_dirs", 2.0 * r)):
                rows.append({"service": svc, "image_digest": "sha256:x", "run_id": f"{svc}{i}", "k": 10 + i,
                             "strategy": name, "time_to_ready_s": ttr})
    choice = directory_choice(pd.DataFrame(rows), last_runs=4)
    assert {s: c["use"] for (s, _), c in choice.items()} == {"a": True, "b": False, "c": False, "d": False}
    assert choice[("d", "sha256:x")]["held_out_runs"] == 4
    assert directory_choice(pd.DataFrame(rows), last_runs=10)[("d", "sha256:x")]["use"] is True
    assert choice[("a", "sha256:x")]["median_ttr_dirs_vs_files"] == 0.95
    assert choice[("a", "sha256:x")]["held_out_runs"] == 3
    assert directory_choice(pd.DataFrame()) == {}


def test_report_entries_are_exactly_the_list_lines():
    import pandas as pd

    from advisor.build import _list_with_report
    from advisor.lists import ImageInventory

    inv = ImageInventory.from_frame(pd.DataFrame({
        "image_digest": "sha256:x",
        "path": ["/usr", "/usr/lib", "/lib", "/usr/lib/a.so", "/usr/lib/empty", "/usr/lib/bad\nname"],
        "size": [0, 0, 0, 10, 0, 5],
        "type": ["d", "d", "l", "f", "f", "f"],
        "link_target": [None, None, "usr/lib", None, None, None],
    }))
    entries = [{"path": p, "score_s": 1.0} for p in ("/lib/a.so", "/usr/lib/a.so", "/usr/lib/empty", "/usr/lib/bad\nname", "/nope")]
    plist, kept = _list_with_report(entries, inv)
    # The symlinked directory is resolved, the duplicate it makes is dropped, the rest is skipped and counted.
    assert list(plist) == ["/usr/lib/a.so"] and [e["path"] for e in kept] == ["/usr/lib/a.so"]
    assert sum(plist.skipped.values()) == 3
