"""Tables for the analysis notebooks: what services read at startup, and what each list would save.

Every function takes a validated `Corpus` (or a `HeldOut` built from one) and returns a pandas
DataFrame; nothing here plots. The held-out part composes the same pieces as `advisor.evaluate`
(one model fitted on the training runs, each strategy's list for each test run, the lazy-loading
simulator), so `evaluate.summarise(strategy_runs(held_out(c, cfg), cfg))` equals
`evaluate(c, cfg)["strategies"]` (a unit test checks it). It adds what the report leaves out:
per-run rows, parameter sweeps that reuse one fitted model, and feature importances.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from advisor.evaluate import (STRATEGIES, VARIANTS, AdvisorConfig, ImageCatalog, fit_model, image_catalog,
                              learned_rankings, n_train_runs, run_metrics, strategy_list)
from advisor.features import FEATURES, ImageFiles, build_images, labels, origin_features
from advisor.model import StartupModel
from advisor.simulate import SimParams
from advisor.traces import Corpus

log = logging.getLogger(__name__)

# Harter et al., "Slacker: Fast Distribution with Lazy Docker Containers" (FAST '16): pulling
# accounts for 76 % of container start time, but only 6.4 % of the pulled data is read.
SLACKER_READ_FRACTION = 0.064

DATA_ENV = "PREFETCH_ADVISOR_DATA"
FIGURES_ENV = "PREFETCH_ADVISOR_FIGURES"


# ---------------------------------------------------------------------------------------------
# Locating the corpus and saving figures (notebook plumbing, kept here so it is tested)


def repo_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above `start` (default: cwd) holding pyproject.toml."""
    start = Path.cwd() if start is None else Path(start)
    for base in (start, *start.parents):
        if (base / "pyproject.toml").is_file():
            return base
    return None


def corpus_path(env: str = DATA_ENV, default: str = "data", start: Path | None = None) -> Path:
    """The corpus directory named by $PREFETCH_ADVISOR_DATA (default `data`).

    A relative path is taken from the repository root, so a notebook finds `data/` whether its
    kernel runs in notebooks/ or in the root. There is no fallback: a missing directory is
    reported by `load_corpus`, never replaced by other data.
    """
    p = Path(os.environ.get(env) or default).expanduser()
    if p.is_absolute():
        return p
    root = repo_root(start)
    return (root if root is not None else Path.cwd() if start is None else Path(start)) / p


def corpus_label(corpus: Corpus) -> str:
    """A tag for plot titles that makes a synthetic corpus impossible to mistake for recorded data."""
    return "SYNTHETIC corpus" if corpus.synthetic else "recorded corpus"


def save_figure(fig, name: str, corpus: Corpus, env: str = FIGURES_ENV, dpi: int = 80) -> Path | None:
    """Write `fig` as <$PREFETCH_ADVISOR_FIGURES>/<name>.png; None when unset or the data is synthetic.

    Figures under docs/ illustrate the recorded corpus only, so a synthetic corpus never writes one.
    """
    target = os.environ.get(env)
    if not target:
        return None
    if corpus.synthetic:
        log.warning("figure_not_saved name=%s reason=synthetic_corpus", name)
        return None
    d = Path(target)
    if not d.is_absolute():
        d = (repo_root() or Path.cwd()) / d
    d.mkdir(parents=True, exist_ok=True)
    out = d / f"{name}.png"
    fig.savefig(out, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return out


# ---------------------------------------------------------------------------------------------
# Traces


def image_labels(corpus: Corpus) -> pd.Series:
    """A readable name per image digest: its normalised ref (or ref) and a short digest."""
    r = corpus.runs
    ref = r["image_ref_normalized"].where(r["image_ref_normalized"].fillna("") != "", r.get("image_ref"))
    first = pd.DataFrame({"image_digest": r["image_digest"], "ref": ref}).dropna().drop_duplicates("image_digest")
    names = first.set_index("image_digest")["ref"].astype(str)
    # A digest is "sha256:" + hex; 12 hex digits tell versions of one ref apart.
    short = pd.Series({d: d.split(":")[-1][:12] for d in r["image_digest"].unique()})
    return pd.Series({d: f"{names.get(d, '?')} ({short[d]})" for d in short.index}, name="image")


def run_table(corpus: Corpus) -> pd.DataFrame:
    """One row per run: ready time, files and bytes read before ready and in all, the image's size."""
    runs = corpus.runs
    acc = corpus.accesses
    before = acc.loc[acc["before_ready"]].groupby("run_id").agg(
        files_before_ready=("path", "size"), bytes_before_ready=("size", "sum"))
    every = acc.groupby("run_id").agg(files_read=("path", "size"), bytes_read=("size", "sum"))
    img = corpus.files.groupby("image_digest").agg(image_files=("path", "size"), image_bytes=("size", "sum"))
    out = runs[["run_id", "service", "image_digest", "started_at", "complete", "ready_ns"]].copy()
    out = out.join(before, on="run_id").join(every, on="run_id").join(img, on="image_digest")
    for c in ("files_before_ready", "bytes_before_ready", "files_read", "bytes_read"):
        out[c] = out[c].fillna(0).astype(np.int64)
    out["ready_s"] = out["ready_ns"].astype("float64") / 1e9
    out["frac_image_bytes_before_ready"] = out["bytes_before_ready"] / out["image_bytes"]
    out["frac_image_files_before_ready"] = out["files_before_ready"] / out["image_files"]
    return out.drop(columns=["ready_ns"])


def access_timeline(corpus: Corpus, complete_only: bool = True) -> pd.DataFrame:
    """Each run's reads before ready in first-access order, with running totals.

    Columns: run_id, service, image_digest, path, t_s, size, cum_files, cum_bytes, frac_files,
    frac_bytes (of what the run read before ready), ready_s.
    """
    runs = corpus.runs
    if complete_only:
        runs = runs.loc[runs["complete"]]
    acc = corpus.accesses.loc[corpus.accesses["before_ready"], ["run_id", "path", "seq", "first_ns", "size"]]
    acc = acc.merge(runs[["run_id", "service", "image_digest", "ready_ns"]], on="run_id", how="inner")
    acc = acc.sort_values(["service", "run_id", "first_ns", "seq"], kind="stable").reset_index(drop=True)
    g = acc.groupby("run_id", sort=False)
    acc["t_s"] = acc["first_ns"] / 1e9
    acc["cum_files"] = g.cumcount() + 1
    acc["cum_bytes"] = g["size"].cumsum()
    acc["frac_files"] = acc["cum_files"] / g["path"].transform("size")
    total = g["size"].transform("sum")
    acc["frac_bytes"] = np.where(total > 0, acc["cum_bytes"] / total.where(total > 0, 1), 1.0)
    acc["ready_s"] = acc["ready_ns"].astype("float64") / 1e9
    return acc[["run_id", "service", "image_digest", "path", "t_s", "size", "cum_files", "cum_bytes",
                "frac_files", "frac_bytes", "ready_s"]]


def needed_bytes_by_time(timeline: pd.DataFrame, grid_s: np.ndarray) -> pd.DataFrame:
    """Per service, the share of the bytes its runs needed before ready that were first read by t.

    Pooled over the service's runs (each byte counts once per run). Columns: service, t_s, frac_bytes.
    """
    grid_s = np.asarray(grid_s, dtype=float)
    rows = []
    for service, g in timeline.groupby("service", sort=True):
        t = g["t_s"].to_numpy()
        order = np.argsort(t, kind="stable")
        cum = np.cumsum(g["size"].to_numpy()[order], dtype=float)
        total = cum[-1] if len(cum) else 0.0
        reached = np.searchsorted(t[order], grid_s, side="right")
        got = np.where(reached > 0, cum[np.maximum(reached - 1, 0)], 0.0)
        frac = got / total if total > 0 else np.ones_like(grid_s)
        rows.append(pd.DataFrame({"service": service, "t_s": grid_s, "frac_bytes": frac}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["service", "t_s", "frac_bytes"])


def _run_file_matrix(acc: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(run ids, paths, runs x files bool matrix) of the given access rows."""
    r_codes, run_ids = pd.factorize(acc["run_id"])
    f_codes, paths = pd.factorize(acc["path"])
    m = np.zeros((len(run_ids), len(paths)), bool)
    m[r_codes, f_codes] = True
    return np.asarray(run_ids), np.asarray(paths), m


def jaccard_matrix(m: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard similarity of the rows of a boolean matrix (1.0 for two empty rows)."""
    x = m.astype(np.float64)
    inter = x @ x.T
    n = x.sum(axis=1)
    union = n[:, None] + n[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def run_variability(corpus: Corpus) -> pd.DataFrame:
    """Per (service, image): how much complete runs differ in what and how much they read before ready.

    Jaccard similarity of the runs' file sets: mean over all pairs, minimum, and mean between
    consecutive runs; `core_share` is the share of the union read by every run. Spreads are
    coefficients of variation (std / mean).
    """
    runs = corpus.runs.loc[corpus.runs["complete"]]
    acc = corpus.accesses.loc[corpus.accesses["before_ready"], ["run_id", "path", "size"]]
    rt = run_table(corpus).set_index("run_id")
    rows = []
    for (service, digest), r in runs.groupby(["service", "image_digest"], sort=True):
        a = acc.loc[acc["run_id"].isin(r["run_id"])]
        order = r.sort_values("started_at", kind="stable")["run_id"].to_numpy()
        if len(a):
            ids, _, m = _run_file_matrix(a)
            pos = pd.Index(ids).get_indexer(order)
            present = pos >= 0
            full = np.zeros((len(order), m.shape[1]), bool)
            full[present] = m[pos[present]]
        else:
            full = np.zeros((len(order), 0), bool)
        j = jaccard_matrix(full)
        iu = np.triu_indices(len(order), 1)
        union = full.any(axis=0).sum()
        t = rt.loc[order]

        def cv(s: pd.Series) -> float:
            mu = float(s.mean())
            return float(s.std(ddof=0) / mu) if mu > 0 else float("nan")

        rows.append({
            "service": service, "image_digest": digest, "complete_runs": len(order),
            "median_ready_s": float(t["ready_s"].median()), "cv_ready_s": cv(t["ready_s"]),
            "median_files": float(t["files_before_ready"].median()), "cv_files": cv(t["files_before_ready"]),
            "median_bytes": float(t["bytes_before_ready"].median()), "cv_bytes": cv(t["bytes_before_ready"]),
            "mean_jaccard": float(j[iu].mean()) if len(iu[0]) else float("nan"),
            "min_jaccard": float(j[iu].min()) if len(iu[0]) else float("nan"),
            "consecutive_jaccard": float(np.mean([j[i, i + 1] for i in range(len(order) - 1)])) if len(order) > 1 else float("nan"),
            "union_files": int(union),
            "core_share": float(full.all(axis=0).sum() / union) if union else float("nan"),
        })
    return pd.DataFrame(rows)


def typical_files(corpus: Corpus, min_fraction: float = 0.5) -> pd.DataFrame:
    """Per (service, image): the files read before ready in at least `min_fraction` of its complete runs."""
    runs = corpus.runs.loc[corpus.runs["complete"], ["run_id", "service", "image_digest"]]
    acc = corpus.accesses.loc[corpus.accesses["before_ready"], ["run_id", "path"]].merge(runs, on="run_id")
    n = runs.groupby(["service", "image_digest"])["run_id"].size().rename("n")
    cnt = acc.groupby(["service", "image_digest", "path"]).size().rename("count").reset_index().join(n, on=["service", "image_digest"])
    keep = cnt["count"] >= min_fraction * cnt["n"]
    return cnt.loc[keep, ["service", "image_digest", "path"]].reset_index(drop=True)


def service_overlap(corpus: Corpus, min_fraction: float = 0.5) -> dict[str, pd.DataFrame]:
    """Per image digest with two or more services: the services' Jaccard matrix of typical files."""
    typ = typical_files(corpus, min_fraction)
    out: dict[str, pd.DataFrame] = {}
    for digest, g in typ.groupby("image_digest", sort=True):
        services = sorted(g["service"].unique())
        if len(services) < 2:
            continue
        s_codes = pd.Index(services).get_indexer(g["service"])
        f_codes, _ = pd.factorize(g["path"])
        m = np.zeros((len(services), int(f_codes.max()) + 1), bool)
        m[s_codes, f_codes] = True
        out[digest] = pd.DataFrame(jaccard_matrix(m), index=services, columns=services)
    return out


def image_read_fraction(corpus: Corpus) -> pd.DataFrame:
    """Per image: how much of it runs read at all, by bytes and files.

    `median_run_*`: one complete run before ready (the median run of the image); `union_*_before_ready`:
    every file any run of any service read before ready; `union_*_any`: also reads after ready.
    Bytes count whole files as the trace records them, an upper bound on the bytes actually read.
    """
    files = corpus.files.drop_duplicates(["image_digest", "path"])
    inv = files.groupby("image_digest").agg(image_files=("path", "size"), image_bytes=("size", "sum"))
    rt = run_table(corpus)
    acc = corpus.accesses.merge(corpus.runs[["run_id", "image_digest"]], on="run_id")
    sizes = files.set_index(["image_digest", "path"])["size"]
    rows = []
    labels_ = image_labels(corpus)
    for digest, row in inv.iterrows():
        a = acc.loc[acc["image_digest"] == digest]
        runs_c = rt.loc[(rt["image_digest"] == digest) & rt["complete"]]

        def union(sel: pd.DataFrame) -> tuple[int, float]:
            p = sel["path"].drop_duplicates()
            key = pd.MultiIndex.from_arrays([np.full(len(p), digest, dtype=object), p.to_numpy()])
            b = sizes.reindex(key)
            # A read file missing from the inventory (cannot happen in a checked corpus) counts its traced size.
            fallback = sel.drop_duplicates("path").set_index("path")["size"].reindex(p.to_numpy()).to_numpy()
            return len(p), float(np.where(b.isna(), fallback, b.to_numpy()).sum())

        fb, bb = union(a.loc[a["before_ready"]])
        fa, ba = union(a)
        ib, inf_ = float(row["image_bytes"]), float(row["image_files"])
        rows.append({
            "image_digest": digest, "image": labels_.get(digest, digest),
            "services": int(corpus.runs.loc[corpus.runs["image_digest"] == digest, "service"].nunique()),
            "complete_runs": int(len(runs_c)),
            "image_files": int(inf_), "image_bytes": int(ib),
            "median_run_frac_bytes": float(runs_c["bytes_before_ready"].median() / ib) if ib and len(runs_c) else float("nan"),
            "median_run_frac_files": float(runs_c["files_before_ready"].median() / inf_) if inf_ and len(runs_c) else float("nan"),
            "union_frac_bytes_before_ready": bb / ib if ib else float("nan"),
            "union_frac_files_before_ready": fb / inf_ if inf_ else float("nan"),
            "union_frac_bytes_any": ba / ib if ib else float("nan"),
            "union_frac_files_any": fa / inf_ if inf_ else float("nan"),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Held-out evaluation, per run


# Config fields that decide the split and the model; the rest (simulation params, budget,
# min_prob) only change ranking and simulation, so one HeldOut serves a whole sweep over them.
_SPLIT_FIELDS = ("incomplete_weight", "test_fraction", "min_train_runs")


@dataclass(frozen=True)
class HeldOut:
    """The corpus split by time, with one model fitted on the training runs only."""

    corpus: Corpus
    cfg: AdvisorConfig
    images: dict[str, ImageFiles]
    cutoff: dict[tuple[str, str], int]
    model: StartupModel

    def test_runs(self, max_per_service: int | None = None) -> dict[tuple[str, str], np.ndarray]:
        """(digest, service) -> run indices k of its complete test runs (optionally only the last few)."""
        out = {}
        for d, img in self.images.items():
            for s, svc in img.services.items():
                ks = np.array([k for k in range(self.cutoff[(d, s)], svc.n) if svc.complete[k]], dtype=np.int64)
                if max_per_service is not None:
                    ks = ks[len(ks) - min(len(ks), max_per_service):]
                if len(ks):
                    out[(d, s)] = ks
        return out


def held_out(corpus: Corpus, cfg: AdvisorConfig = AdvisorConfig()) -> HeldOut:
    images = build_images(corpus, cfg.incomplete_weight)
    cutoff = {(d, s): n_train_runs(svc, cfg) for d, img in images.items() for s, svc in img.services.items()}
    return HeldOut(corpus, cfg, images, cutoff, fit_model(images, cutoff))


def _check_split(h: HeldOut, cfg: AdvisorConfig) -> None:
    diff = [f for f in _SPLIT_FIELDS if getattr(cfg, f) != getattr(h.cfg, f)]
    if diff:
        raise ValueError(f"config changes the split or the model ({', '.join(diff)}); build a new held_out() for it")


def strategy_runs(h: HeldOut, cfg: AdvisorConfig | None = None, strategies: Sequence[str] = STRATEGIES + VARIANTS,
                  max_runs_per_service: int | None = None, progress: Callable | None = None) -> pd.DataFrame:
    """One row per (test run, strategy) with run_metrics' columns, plus the ratios to the oracle.

    Each list comes from evaluate.strategy_list, the function the evaluation report uses. The oracle is always simulated (the ratios need it) but only reported when asked for.
    """
    cfg = h.cfg if cfg is None else cfg
    _check_split(h, cfg)
    unknown = [s for s in strategies if s not in STRATEGIES + VARIANTS]
    if unknown:
        raise ValueError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES + VARIANTS)}")
    names = list(dict.fromkeys([*strategies, "oracle"]))
    files = h.corpus.files
    catalogs: dict[str, ImageCatalog] = {}
    groups = h.test_runs(max_runs_per_service)
    it = progress(list(groups.items()), desc="simulate", unit="service") if progress else groups.items()
    rows = []
    for (digest, service), ks in it:
        img = h.images[digest]
        svc = img.services[service]
        learned = learned_rankings(h.model, img, svc, ks, cfg) if any(n.startswith("learned") for n in names) else {}
        cat = catalogs.get(digest) or catalogs.setdefault(digest, image_catalog(img, files))
        for k in ks.tolist():
            for name in names:
                ids, sizes = strategy_list(name, img, svc, k, cfg, cat, learned.get(k))
                m = run_metrics(svc, img, k, ids, sizes, cfg)
                rows.append({"service": service, "image_digest": digest, "run_id": svc.run_ids[k], "k": k,
                             "strategy": name, **m})
    per_run = pd.DataFrame(rows)
    if per_run.empty:
        raise ValueError("no complete test runs to simulate")
    oracle = per_run.loc[per_run["strategy"] == "oracle", ["run_id", "time_to_ready_s", "list_bytes"]]
    per_run = per_run.merge(oracle.rename(columns={"time_to_ready_s": "oracle_s", "list_bytes": "oracle_bytes"}), on="run_id")
    per_run["startup_vs_oracle"] = per_run["time_to_ready_s"] / per_run["oracle_s"]
    per_run["bytes_vs_oracle"] = per_run["list_bytes"] / per_run["oracle_bytes"].where(per_run["oracle_bytes"] > 0)
    return per_run.loc[per_run["strategy"].isin(strategies)].reset_index(drop=True)


_SIM_FIELDS = {f.name for f in fields(SimParams)}
_CFG_FIELDS = {"budget_bytes", "min_prob"}


def config_at(cfg: AdvisorConfig, point: Mapping[str, float]) -> AdvisorConfig:
    """`cfg` with some SimParams fields (rtt_s, bandwidth_Bps, ...) and/or budget_bytes, min_prob replaced."""
    bad = set(point) - _SIM_FIELDS - _CFG_FIELDS
    if bad:
        raise ValueError(f"cannot sweep {sorted(bad)}; sweepable: {sorted(_SIM_FIELDS | _CFG_FIELDS)}")
    params = replace(cfg.params, **{k: v for k, v in point.items() if k in _SIM_FIELDS})
    return replace(cfg, params=params, **{k: v for k, v in point.items() if k in _CFG_FIELDS})


def sweep(h: HeldOut, points: Iterable[Mapping[str, float]], strategies: Sequence[str] = STRATEGIES,
          max_runs_per_service: int | None = None, progress: Callable | None = None) -> pd.DataFrame:
    """strategy_runs at each point (a dict of swept fields, applied to h.cfg); the fields become columns.

    The model is fitted once: simulation parameters and the budget change only how predictions are
    ranked and cut, not what the model learned.
    """
    points = list(points)
    it = progress(points, desc="sweep", unit="point") if progress else points
    parts = []
    for point in it:
        df = strategy_runs(h, config_at(h.cfg, point), strategies, max_runs_per_service)
        parts.append(df.assign(**{k: v for k, v in point.items()}))
    return pd.concat(parts, ignore_index=True)


def service_medians(per_run: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Median per (…by, strategy, service, image), the first step of the report's median of medians."""
    keys = [*by, "strategy", "service", "image_digest"]
    num = per_run.drop(columns=[c for c in ("k",) if c in per_run.columns]).select_dtypes("number").columns
    return per_run.groupby(keys, sort=True)[[c for c in num if c not in keys]].median().reset_index()


# ---------------------------------------------------------------------------------------------
# What the model relies on


def held_out_examples(h: HeldOut) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, need, log1p first-access ms) of every candidate file at every complete test run."""
    xs, ys, ts = [], [], []
    for (digest, service), ks in h.test_runs().items():
        img = h.images[digest]
        svc = img.services[service]
        of = origin_features(img, svc, ks)
        need, t = labels(svc, of)
        xs.append(of.X)
        ys.append(need)
        ts.append(t)
    if not xs:
        raise ValueError("no complete test runs")
    return np.vstack(xs), np.concatenate(ys), np.concatenate(ts)


def feature_importance(h: HeldOut, target: str = "need", n_repeats: int = 5, max_rows: int = 30_000,
                       seed: int = 0) -> pd.DataFrame:
    """Permutation importance of each feature on the held-out test examples.

    target "need": drop in average precision of P(read before ready); target "time": drop in R² of
    the log first-access time, on files that were read. Columns: feature, importance, std, and the
    unpermuted score in `baseline_score`.
    """
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import average_precision_score, r2_score
    from threadpoolctl import threadpool_limits

    X, need, t = held_out_examples(h)
    if target == "need":
        est, y, scoring = h.model.classifier, need.astype(bool), "average_precision"
        if est is None or need.all() or not need.any():
            raise ValueError("the classifier is constant or the test labels are one class: nothing to permute")
    elif target == "time":
        keep = need.astype(bool) & np.isfinite(t)
        X, y, est, scoring = X[keep], t[keep], h.model.regressor, "r2"
        if est is None or len(y) < 2:
            raise ValueError("no time regressor or too few read files to score it")
    else:
        raise ValueError(f"target must be 'need' or 'time', not {target!r}")
    rng = np.random.default_rng(seed)
    if len(X) > max_rows:
        sel = np.sort(rng.choice(len(X), max_rows, replace=False))
        X, y = X[sel], y[sel]
    with threadpool_limits(1):
        base = (average_precision_score(y, est.predict_proba(X)[:, 1]) if target == "need"
                else r2_score(y, est.predict(X)))
        r = permutation_importance(est, X, y, scoring=scoring, n_repeats=n_repeats, random_state=seed, n_jobs=1)
    out = pd.DataFrame({"feature": list(FEATURES), "importance": r.importances_mean, "std": r.importances_std})
    out["baseline_score"] = base
    return out.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


__all__ = [
    "SLACKER_READ_FRACTION", "DATA_ENV", "FIGURES_ENV", "HeldOut", "access_timeline", "config_at", "corpus_label",
    "corpus_path", "feature_importance", "held_out", "image_labels", "image_read_fraction", "jaccard_matrix",
    "needed_bytes_by_time", "repo_root", "run_table", "run_variability", "save_figure", "service_medians",
    "service_overlap", "strategy_runs", "sweep", "held_out_examples", "typical_files",
]
