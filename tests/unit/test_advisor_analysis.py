"""advisor.analysis: the notebooks' tables, on a corpus small enough to check by hand, and the held-out
per-run rows against the evaluation report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advisor import analysis as an
from advisor.evaluate import STRATEGIES, VARIANTS, AdvisorConfig, evaluate, summarise
from advisor.features import FEATURES
from advisor.synth import SynthSpec, generate
from advisor.traces import validate

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
DIGEST = "sha256:" + "d" * 64
S = 1_000_000_000  # ns per second
SIZES = {"/bin/a": 100, "/lib/x.so": 200, "/lib/y.so": 300, "/etc/a.conf": 50, "/data/big": 10_000, "/usr/lib/b.py": 400}
IMAGE_BYTES = sum(SIZES.values())


def _corpus(agent_version: str = "test"):
    """A: a0 reads a, x (and a.conf after ready); a1 a, y; a2 incomplete; a3 a, x.  B: b0, b1 read b.py, a."""
    runs, acc = [], []

    def run(rid, svc, i, ready, complete, files):
        runs.append({"run_id": rid, "service": svc, "image_digest": DIGEST, "started_at": T0 + pd.Timedelta(hours=i),
                     "ready_ns": ready, "complete": complete, "agent_version": agent_version,
                     "image_ref_normalized": "docker.io/library/test:1"})
        for seq, (path, t) in enumerate(files):
            acc.append({"run_id": rid, "path": path, "seq": seq, "first_ns": int(t * S), "kinds": "open,read",
                        "size": SIZES[path], "from_image": True})

    run("a0", "A", 0, 1 * S, True, [("/bin/a", 0.1), ("/lib/x.so", 0.3), ("/etc/a.conf", 2.0)])
    run("b0", "B", 1, 1 * S, True, [("/usr/lib/b.py", 0.1), ("/bin/a", 0.2)])
    run("a1", "A", 2, 1 * S, True, [("/bin/a", 0.1), ("/lib/y.so", 0.5)])
    run("a2", "A", 3, None, False, [("/bin/a", 0.1)])
    run("b1", "B", 4, 1 * S, True, [("/usr/lib/b.py", 0.1), ("/bin/a", 0.2)])
    run("a3", "A", 5, 2 * S, True, [("/bin/a", 0.2), ("/lib/x.so", 0.4)])
    inv = pd.DataFrame({"image_digest": DIGEST, "path": list(SIZES), "size": list(SIZES.values()), "type": "f",
                        "mode": 0o644, "link_target": None})
    runs = pd.DataFrame(runs)
    runs["window_ns"] = None
    acc = pd.DataFrame(acc)
    acc["opens"] = 1
    return validate(runs, acc, inv)


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


def test_run_table_counts_reads_before_ready_and_in_all(corpus):
    rt = an.run_table(corpus).set_index("run_id")
    a0 = rt.loc["a0"]
    assert (a0["files_before_ready"], a0["bytes_before_ready"]) == (2, 300)
    assert (a0["files_read"], a0["bytes_read"]) == (3, 350)
    assert a0["image_bytes"] == IMAGE_BYTES and a0["image_files"] == 6
    assert a0["ready_s"] == 1.0
    assert a0["frac_image_bytes_before_ready"] == pytest.approx(300 / IMAGE_BYTES)
    assert np.isnan(rt.loc["a2", "ready_s"]) and not rt.loc["a2", "complete"]


def test_access_timeline_running_totals_complete_runs_before_ready(corpus):
    tl = an.access_timeline(corpus)
    assert "a2" not in set(tl["run_id"])
    assert "/etc/a.conf" not in set(tl["path"])  # read after ready
    a0 = tl.loc[tl["run_id"] == "a0"]
    assert a0["path"].tolist() == ["/bin/a", "/lib/x.so"]
    assert a0["cum_bytes"].tolist() == [100, 300]
    assert a0["frac_bytes"].tolist() == pytest.approx([1 / 3, 1.0])
    assert a0["frac_files"].tolist() == pytest.approx([0.5, 1.0])
    assert a0["t_s"].tolist() == pytest.approx([0.1, 0.3])
    assert len(an.access_timeline(corpus, complete_only=False).query("run_id == 'a2'")) == 1


def test_needed_bytes_by_time_pools_the_services_runs(corpus):
    cdf = an.needed_bytes_by_time(an.access_timeline(corpus), np.array([0.05, 0.1, 0.35, 1.0]))
    a = cdf.loc[cdf["service"] == "A", "frac_bytes"].tolist()
    # A's complete runs need 300 + 400 + 300 bytes: by 0.1 s two /bin/a (200), by 0.35 s also a3's
    # /bin/a and a0's x.so (500).
    assert a == pytest.approx([0.0, 0.2, 0.5, 1.0])
    b = cdf.loc[cdf["service"] == "B", "frac_bytes"].tolist()
    assert b == pytest.approx([0.0, 0.8, 1.0, 1.0])


def test_jaccard_matrix():
    m = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]], bool)
    j = an.jaccard_matrix(m)
    assert j[0, 1] == pytest.approx(1 / 3)
    assert j[0, 0] == 1.0 and j[0, 2] == 0.0
    assert j[2, 3] == 1.0  # two empty sets are the same set


def test_run_variability(corpus):
    v = an.run_variability(corpus).set_index("service")
    a = v.loc["A"]
    assert a["complete_runs"] == 3
    # {a,x}, {a,y}, {a,x}: pairs 1/3, 1, 1/3; consecutive pairs 1/3, 1/3; only /bin/a in every run.
    assert a["mean_jaccard"] == pytest.approx(5 / 9)
    assert a["min_jaccard"] == pytest.approx(1 / 3)
    assert a["consecutive_jaccard"] == pytest.approx(1 / 3)
    assert a["union_files"] == 3 and a["core_share"] == pytest.approx(1 / 3)
    assert a["median_files"] == 2 and a["cv_files"] == 0.0
    assert a["median_ready_s"] == 1.0
    assert v.loc["B", "mean_jaccard"] == 1.0


def test_typical_files_and_service_overlap(corpus):
    typ = an.typical_files(corpus, 0.5)
    assert set(typ.loc[typ["service"] == "A", "path"]) == {"/bin/a", "/lib/x.so"}  # y.so: 1 run in 3
    assert set(typ.loc[typ["service"] == "B", "path"]) == {"/bin/a", "/usr/lib/b.py"}
    ov = an.service_overlap(corpus, 0.5)
    assert list(ov) == [DIGEST]
    m = ov[DIGEST]
    assert m.loc["A", "B"] == pytest.approx(1 / 3) and m.loc["A", "A"] == 1.0
    assert set(an.typical_files(corpus, 1.0).query("service == 'A'")["path"]) == {"/bin/a"}


def test_image_read_fraction(corpus):
    f = an.image_read_fraction(corpus).set_index("image_digest").loc[DIGEST]
    assert f["image_bytes"] == IMAGE_BYTES and f["services"] == 2 and f["complete_runs"] == 5
    assert f["union_frac_bytes_before_ready"] == pytest.approx(1000 / IMAGE_BYTES)  # a, x, y, b.py
    assert f["union_frac_bytes_any"] == pytest.approx(1050 / IMAGE_BYTES)  # + a.conf after ready
    assert f["union_frac_files_before_ready"] == pytest.approx(4 / 6)
    # Complete runs read 300, 400, 300, 500, 500 bytes before ready.
    assert f["median_run_frac_bytes"] == pytest.approx(400 / IMAGE_BYTES)
    assert f["image"].startswith("docker.io/library/test:1 (dddddddddddd)")
    assert 0 < an.SLACKER_READ_FRACTION < 0.1


def test_corpus_path_env_default_and_repo_root(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    sub = tmp_path / "notebooks"
    sub.mkdir()
    monkeypatch.delenv(an.DATA_ENV, raising=False)
    assert an.corpus_path(start=sub) == tmp_path / "data"
    monkeypatch.setenv(an.DATA_ENV, "other/corpus")
    assert an.corpus_path(start=sub) == tmp_path / "other/corpus"
    monkeypatch.setenv(an.DATA_ENV, str(tmp_path / "abs"))
    assert an.corpus_path(start=sub) == tmp_path / "abs"


def test_save_figure_only_for_recorded_data_and_when_asked(corpus, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    monkeypatch.delenv(an.FIGURES_ENV, raising=False)
    assert an.save_figure(fig, "x", corpus) is None
    monkeypatch.setenv(an.FIGURES_ENV, str(tmp_path / "figs"))
    out = an.save_figure(fig, "x", corpus)
    assert out == tmp_path / "figs" / "x.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    synthetic = _corpus(agent_version="synthetic")
    assert synthetic.synthetic and an.corpus_label(synthetic) == "SYNTHETIC corpus"
    assert an.save_figure(fig, "y", synthetic) is None and not (tmp_path / "figs" / "y.png").exists()
    assert an.corpus_label(corpus) == "recorded corpus"
    plt.close(fig)


# --- held-out, on a synthetic corpus with enough runs to learn from


@pytest.fixture(scope="module")
def synth():
    return validate(*generate(SynthSpec.small()))


@pytest.fixture(scope="module")
def held(synth):
    return an.held_out(synth, AdvisorConfig())


@pytest.fixture(scope="module")
def per_run(held):
    return an.strategy_runs(held)


def test_strategy_runs_are_what_the_evaluation_report_summarises(synth, per_run):
    report = evaluate(synth, AdvisorConfig())
    variant = per_run["strategy"].isin(VARIANTS)
    assert summarise(per_run.loc[~variant]) == report["strategies"]
    assert summarise(per_run.loc[variant]) == report["variants"]


def test_strategy_runs_rows_and_ratios(held, per_run):
    tests = held.test_runs()
    n_test = sum(len(k) for k in tests.values())
    assert n_test > 0 and len(per_run) == n_test * len(STRATEGIES + VARIANTS)
    oracle = per_run.loc[per_run["strategy"] == "oracle"]
    assert (oracle["startup_vs_oracle"] == 1.0).all() and (oracle["recall_bytes"] == 1.0).all()
    none = per_run.loc[per_run["strategy"] == "none"]
    assert (none["list_bytes"] == 0).all() and (none["startup_vs_oracle"] > 1.0).all()
    for (d, s), ks in tests.items():
        svc = held.images[d].services[s]
        assert (ks >= held.cutoff[(d, s)]).all() and svc.complete[ks].all()


def test_strategy_subset_and_last_runs_only(held):
    df = an.strategy_runs(held, strategies=("none", "learned"), max_runs_per_service=1)
    assert set(df["strategy"]) == {"none", "learned"}
    assert df.groupby(["service", "image_digest", "strategy"]).size().max() == 1
    last = {(d, s): ks[-1] for (d, s), ks in held.test_runs().items()}
    assert all(k == last[(d, s)] for d, s, k in df[["image_digest", "service", "k"]].itertuples(index=False))
    with pytest.raises(ValueError, match="unknown strategy"):
        an.strategy_runs(held, strategies=("nope",))
    with pytest.raises(ValueError, match="split or the model"):
        an.strategy_runs(held, AdvisorConfig(test_fraction=0.5))


def test_sweep_reuses_the_model_and_moves_the_right_way(held):
    pts = [{"rtt_s": 0.001}, {"rtt_s": 0.1}]
    df = an.sweep(held, pts, strategies=("none", "learned", "oracle"), max_runs_per_service=2)
    med = an.service_medians(df, by=["rtt_s"])
    none = med.loc[med["strategy"] == "none"].pivot(index=["service", "image_digest"], columns="rtt_s", values="time_to_ready_s")
    # On-demand fetching pays one round trip per chunk: 100x the round trip is slower for every service.
    assert (none[0.1] > none[0.001]).all()
    budget = an.sweep(held, [{"budget_bytes": 0.0}], strategies=("none", "learned"))
    learned = budget.loc[budget["strategy"] == "learned"]
    assert (learned["list_bytes"] == 0).all()
    assert learned["time_to_ready_s"].to_numpy() == pytest.approx(
        budget.loc[budget["strategy"] == "none", "time_to_ready_s"].to_numpy())
    with pytest.raises(ValueError, match="cannot sweep"):
        an.config_at(held.cfg, {"test_fraction": 0.5})


def test_service_medians(per_run):
    med = an.service_medians(per_run)
    one = per_run.loc[(per_run["strategy"] == "learned")]
    svc, dig = one.iloc[0][["service", "image_digest"]]
    want = one.loc[(one["service"] == svc) & (one["image_digest"] == dig), "time_to_ready_s"].median()
    got = med.loc[(med["strategy"] == "learned") & (med["service"] == svc) & (med["image_digest"] == dig), "time_to_ready_s"]
    assert got.item() == pytest.approx(want)


def test_feature_importance(held):
    X, need, t = an.held_out_examples(held)
    assert X.shape == (len(need), len(FEATURES)) and len(t) == len(need) and 0 < need.mean() < 1
    fi = an.feature_importance(held, n_repeats=2)
    assert sorted(fi["feature"]) == sorted(FEATURES)
    assert fi["importance"].is_monotonic_decreasing
    # The model separates needed files far better than chance and relies on some history feature.
    assert fi["baseline_score"].iloc[0] > need.mean() + 0.2
    assert fi["importance"].iloc[0] > 0
    assert len(an.feature_importance(held, target="time", n_repeats=1)) == len(FEATURES)
    with pytest.raises(ValueError, match="target"):
        an.feature_importance(held, target="size")
