"""The shipped corpus in data/ is consistent (see data/README.md, 'Checks')."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import check

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def corpus() -> check.Corpus:
    return check.load(DATA)


def test_schemas_match_the_agent() -> None:
    assert check.check_schemas(DATA) == []


def test_corpus_fits_the_size_budget() -> None:
    assert check.check_size(DATA) == []


def test_every_traced_image_path_is_in_the_image_inventory(corpus: check.Corpus) -> None:
    assert check.check_image_paths(corpus) == []


def test_runtime_created_files_are_flagged(corpus: check.Corpus) -> None:
    assert check.check_runtime_files(corpus) == []


def test_times_are_monotonic_within_each_run(corpus: check.Corpus) -> None:
    assert check.check_times(corpus) == []


def test_at_least_three_images_built_from_debian_packages(corpus: check.Corpus) -> None:
    repos = corpus.runs.image_ref.str.rpartition(":")[0]
    assert repos.nunique() >= 3
    # Each ref is one image: one digest per ref, and every digest has its inventory.
    assert (corpus.runs.groupby("image_ref").image_digest.nunique() == 1).all()
    assert set(corpus.runs.image_digest) <= set(corpus.inventory.image_digest)


def test_every_service_has_twenty_complete_runs(corpus: check.Corpus) -> None:
    assert corpus.runs.service.nunique() >= 6
    assert check.check_complete_runs(corpus, 20) == []


def test_incomplete_runs_are_present_and_flagged(corpus: check.Corpus) -> None:
    assert (~corpus.runs.complete).sum() > 0
    assert corpus.runs.flag_early_exit.sum() > 0
    assert check.check_incomplete_flags(corpus) == []


def test_one_image_exists_in_two_versions_with_moved_files(corpus: check.Corpus) -> None:
    runs = corpus.runs
    refs = runs.groupby("image_ref").image_digest.first()
    py = {ref: d for ref, d in refs.items() if "/python:" in ref}
    assert len(py) == 2, f"expected two python image versions, got {sorted(py)}"
    inv = corpus.inventory
    paths = {ref: set(inv[inv.image_digest == d].path) for ref, d in py.items()}
    a, b = paths.values()
    assert len(a - b) > 1000 and len(b - a) > 1000  # files really moved, not a retag
    # and both versions were traced, by the same services
    services = runs.groupby("image_ref").service.apply(set)
    assert services[list(py)[0]] & services[list(py)[1]]


def test_services_sharing_an_image_read_different_files(corpus: check.Corpus) -> None:
    acc = corpus.accesses.merge(corpus.runs[corpus.runs.complete][["run_id", "service", "image_digest"]],
                                on="run_id")
    acc = acc[acc.from_image]
    per = acc.groupby(["image_digest", "service"]).path.apply(set)
    shared = per.groupby(level=0).size()
    digest = shared.idxmax()
    sets = per[digest]
    assert len(sets) >= 3
    for s1 in sets.index:
        for s2 in sets.index:
            if s1 < s2:
                assert sets[s1] != sets[s2], f"{s1} and {s2} read identical files"
