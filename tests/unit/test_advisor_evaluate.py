"""advisor.evaluate: held-out by time, no look-ahead, every strategy side by side."""

from __future__ import annotations

import numpy as np
import pytest

from advisor.evaluate import (STRATEGIES, AdvisorConfig, baseline_files, evaluate, fit_model, format_table,
                              learned_rankings, n_train_runs)
from advisor.features import build_images
from advisor.synth import SynthSpec, generate
from advisor.traces import validate


@pytest.fixture(scope="module")
def corpus():
    return validate(*generate(SynthSpec.small()))


@pytest.fixture(scope="module")
def report(corpus):
    return evaluate(corpus, AdvisorConfig())


def test_report_shape(report):
    assert set(report["strategies"]) == set(STRATEGIES)
    assert set(report["variants"]) == {"learned_dirs"}
    assert "helps" in report["directory_collapse"]
    for e in report["strategies"].values():
        for key in ("median_startup_vs_oracle", "median_bytes_vs_oracle", "median_recall_bytes", "median_precision_bytes"):
            assert key in e
    assert {"new_version", "new_service"} <= set(report["transfer"])
    assert report["params"]["params"]["chunk_bytes"] == 1 << 20
    assert report["data"]["synthetic"] is True
    assert "goals" in report and "new_version_recall>=0.90" in report["goals"]
    assert "learned" in format_table(report)


def test_oracle_and_none_are_what_they_claim(report):
    o, n, a = report["strategies"]["oracle"], report["strategies"]["none"], report["strategies"]["all"]
    assert o["median_startup_vs_oracle"] == 1.0 and o["median_recall_bytes"] == 1.0 and o["median_precision_bytes"] == 1.0
    assert n["median_bytes_vs_oracle"] == 0.0 and n["median_recall_bytes"] == 0.0
    assert a["median_recall_bytes"] == 1.0
    # Without prefetch every needed byte is fetched on demand: slower than the oracle.
    assert n["median_startup_vs_oracle"] > 1.5


def test_learned_beats_no_prefetch_and_whole_image(report):
    s = report["strategies"]
    assert s["learned"]["median_startup_vs_oracle"] < s["none"]["median_startup_vs_oracle"]
    assert s["learned"]["median_startup_vs_oracle"] < s["all"]["median_startup_vs_oracle"]
    assert s["learned"]["median_recall_bytes"] > 0.9


def test_incomplete_runs_are_reported_and_never_tested(corpus, report):
    inc = set(corpus.runs.loc[~corpus.runs["complete"], "run_id"])
    assert set(report["data"]["incomplete_runs"]["run_ids"]) == inc


def test_lists_for_a_test_run_do_not_look_ahead(corpus):
    """Changing what later runs read must not change the list built for an earlier test run."""
    cfg = AdvisorConfig()
    images = build_images(corpus)
    digest, img = next((d, i) for d, i in images.items() if any(s.n >= 6 for s in i.services.values()))
    name, svc = next((n, s) for n, s in img.services.items() if s.n >= 6)
    cutoff = {(d, s): n_train_runs(v, cfg) for d, i in images.items() for s, v in i.services.items()}
    k = cutoff[(digest, name)]
    before = learned_rankings(fit_model(images, cutoff), img, svc, np.array([k]), cfg)[k]

    images2 = build_images(corpus)
    svc2 = images2[digest].services[name]
    svc2.need[k:] = ~svc2.need[k:]  # scramble run k and everything after it
    svc2.t_ms[k:] = np.where(svc2.need[k:], 1.0, np.nan)
    after = learned_rankings(fit_model(images2, cutoff), images2[digest], svc2, np.array([k]), cfg)[k]
    assert before["path"].tolist() == after["path"].tolist()
    assert np.allclose(before["p"], after["p"])
    # The baselines built from history ignore run k too; the oracle does not.
    for base in ("last_run", "union", "frequent"):
        assert baseline_files(base, svc, k, cfg).tolist() == baseline_files(base, svc2, k, cfg).tolist()
    assert baseline_files("oracle", svc, k, cfg).tolist() != baseline_files("oracle", svc2, k, cfg).tolist()


def test_frequent_baseline_threshold(corpus):
    cfg = AdvisorConfig()
    img = next(iter(build_images(corpus).values()))
    svc = next(iter(img.services.values()))
    k = svc.n - 1
    files = baseline_files("frequent", svc, k, cfg)
    share = svc.need[:k].mean(axis=0)
    assert set(files.tolist()) == set(np.flatnonzero(share >= 0.5).tolist())
