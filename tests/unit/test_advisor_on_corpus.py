"""The advisor on the real corpus in data/: the goals the README reports, as measured by `make run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.build import build_lists
from advisor.evaluate import BASELINES, evaluate
from advisor.lists import ImageInventory, PrefetchList
from advisor.traces import load_corpus

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(DATA)


@pytest.fixture(scope="module")
def report(corpus):
    return evaluate(corpus)


def test_the_shipped_corpus_is_recorded_not_synthetic(report):
    assert report["data"]["synthetic"] is False and report["data"]["services"] >= 6


def test_learned_is_within_the_goals_against_the_oracle(report):
    learned = report["strategies"]["learned"]
    assert learned["median_startup_vs_oracle"] <= 1.10
    assert learned["median_bytes_vs_oracle"] <= 1.3
    assert learned["median_recall_bytes"] >= 0.99


def test_learned_is_strictly_faster_than_every_baseline(report):
    s = report["strategies"]
    learned = s["learned"]["median_startup_vs_oracle"]
    slower = {b: s[b]["median_startup_vs_oracle"] for b in BASELINES}
    assert all(learned < v for v in slower.values()), (learned, slower)
    assert report["goals"]["beats_every_baseline_on_startup"]["met"]


def test_new_image_version_cold_start_recalls_ninety_percent(report):
    nv = report["transfer"]["new_version"]
    assert nv["pairs"] >= 1
    assert nv["median_recall_bytes"] >= 0.90
    # The mapping is what carries it: exact paths alone miss most of a moved Python tree.
    assert nv["exact_only_median_recall_bytes"] < nv["mapped_only_median_recall_bytes"]


def test_built_lists_are_valid_for_their_image_and_report_their_directory_choice(corpus, report):
    built = build_lists(corpus)
    dirs_used = set()
    for b in built:
        inv = ImageInventory.from_frame(corpus.inventory.loc[corpus.inventory["image_digest"] == b.image_digest])
        again = PrefetchList(b.plist.render().splitlines(), inventory=inv)
        assert again.valid and again.entries == b.plist.entries and len(b.plist) > 0
        assert [e["path"] for e in b.report["entries"]] == list(b.plist)
        d = b.report["directory_entries"]
        if d["use"]:
            dirs_used.add(f"{b.service}@{b.image_digest[:19]}")
            assert d["median_ttr_dirs_vs_files"] < 1.0
        assert d["entries"] == sum(1 for p in b.plist if inv.get(p).type == "d")
    assert sorted(dirs_used) == report["directory_collapse"]["used_by_build_for"]
