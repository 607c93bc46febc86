"""Held-out evaluation: every strategy's list for every later run of every service, side by side.

Hold-out by time: per (service, image), the last `test_fraction` of its runs are the test. The one
learned model is trained only on examples whose target run is in some service's training part, and
each test run's list (learned or baseline) is built from the runs before it alone.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from advisor.coldstart import map_paths
from advisor.features import ImageFiles, ServiceHistory, build_images, labels, origin_features
from advisor.model import StartupModel
from advisor.rank import DirStats, collapse_directories, directory_table, rank_files
from advisor.simulate import SimParams, simulate, startup_trace
from advisor.traces import Corpus

log = logging.getLogger(__name__)

STRATEGIES = ("none", "all", "first_run", "last_run", "union", "frequent", "learned", "oracle")
# Evaluated next to the required strategies to decide whether directory entries help (docs/decisions.md).
VARIANTS = ("learned_dirs",)
BASELINES = ("none", "all", "first_run", "last_run", "union", "frequent")


@dataclass(frozen=True)
class AdvisorConfig:
    params: SimParams = field(default_factory=SimParams)
    budget_bytes: float = float("inf")
    min_prob: float = 0.0
    incomplete_weight: float = 0.5
    test_fraction: float = 0.3
    min_train_runs: int = 2
    frequent_threshold: float = 0.5

    def as_dict(self) -> dict:
        d = asdict(self)
        d["params"] = self.params.as_dict()
        d["budget_bytes"] = None if not np.isfinite(self.budget_bytes) else self.budget_bytes
        return d


def n_train_runs(svc: ServiceHistory, cfg: AdvisorConfig) -> int:
    n_test = max(1, int(round(svc.n * cfg.test_fraction)))
    return max(cfg.min_train_runs, svc.n - n_test)


# Training origins across all services: the model is subsampled to 100k rows anyway, so past this
# many origins more of them only cost time. Small corpora use every origin.
ORIGIN_BUDGET = 1500


def training_set(images: dict[str, ImageFiles], cutoff: dict[tuple[str, str], int] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, need, log_t, weight) from origins whose target run is complete and before the cutoff."""
    xs, ys, ts, ws = [], [], [], []
    n_groups = sum(len(img.services) for img in images.values())
    per_service = max(8, ORIGIN_BUDGET // max(n_groups, 1))
    for digest, img in images.items():
        for name, svc in img.services.items():
            stop = svc.n if cutoff is None else cutoff[(digest, name)]
            origins = np.flatnonzero(svc.complete[:stop])
            if len(origins) > per_service:  # evenly spread over the history, latest always kept
                origins = origins[np.unique(np.linspace(len(origins) - 1, 0, per_service).round().astype(int))]
            if len(origins) == 0:
                continue
            of = origin_features(img, svc, origins)
            need, t = labels(svc, of)
            xs.append(of.X)
            ys.append(need)
            ts.append(t)
            # Each target run counts the same whatever its candidate count.
            per_origin = np.bincount(of.origin, minlength=svc.n)
            ws.append(1.0 / np.maximum(per_origin[of.origin], 1) * 100.0)
    if not xs:
        raise ValueError("no training examples")
    return np.vstack(xs), np.concatenate(ys), np.concatenate(ts), np.concatenate(ws)


def fit_model(images: dict[str, ImageFiles], cutoff: dict[tuple[str, str], int] | None = None,
              **model_kw) -> StartupModel:
    X, y, t, w = training_set(images, cutoff)
    return StartupModel(**model_kw).fit(X, y, t, w)


def learned_rankings(model: StartupModel, img: ImageFiles, svc: ServiceHistory | None, ks: np.ndarray,
                     cfg: AdvisorConfig, at_ns: int | None = None, exclude: str | None = None) -> dict[int, pd.DataFrame]:
    """Ranked candidates for each origin k (runs < k known), from one batched prediction.

    Columns from rank_files plus `file` (column in the image's read files).
    """
    ks = np.asarray(ks, dtype=np.int64)
    at = None if at_ns is None else np.full(len(ks), at_ns, dtype=np.int64)
    of = origin_features(img, svc, ks, at_ns=at, exclude=exclude)
    p, t_ms = model.predict(of.X)
    out = {}
    for k in ks.tolist():
        sel = of.origin == k
        f = of.file[sel]
        ranked = rank_files(img.paths[f], img.size[f], p[sel], t_ms[sel], cfg.params, cfg.budget_bytes, cfg.min_prob,
                            freq=of.freq[sel], hist_t_ms=of.hist_t_ms[sel])
        ranked["file"] = img.index.get_indexer(ranked["path"])
        out[k] = ranked
    return out


def learned_ranking(model: StartupModel, img: ImageFiles, svc: ServiceHistory | None, k: int, cfg: AdvisorConfig,
                    at_ns: int | None = None, exclude: str | None = None) -> pd.DataFrame:
    return learned_rankings(model, img, svc, np.array([k]), cfg, at_ns, exclude)[k]


def _ordered(mask: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(mask)
    return idx[np.argsort(np.nan_to_num(t[idx], nan=np.inf), kind="stable")]


def baseline_files(name: str, svc: ServiceHistory, k: int, cfg: AdvisorConfig) -> np.ndarray:
    """Column indices (into the image's read files) of a baseline's list for run k, in list order."""
    if name == "none":
        return np.zeros(0, np.int64)
    if name == "oracle":
        return _ordered(svc.need[k], svc.t_ms[k])
    if name == "first_run":  # upstream optimizer: the first trace, whole window, is final
        return _ordered(~np.isnan(svc.t_all[0]), svc.t_all[0])
    if name == "last_run":
        return _ordered(~np.isnan(svc.t_all[k - 1]), svc.t_all[k - 1])
    hist = svc.need[:k]
    cnt = hist.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_t = np.where(cnt > 0, np.where(hist, np.nan_to_num(svc.t_ms[:k]), 0.0).sum(axis=0) / cnt, np.nan)
    if name == "union":
        return _ordered(hist.any(axis=0), mean_t)
    if name == "frequent":
        return _ordered(hist.mean(axis=0) >= cfg.frequent_threshold, mean_t)
    raise ValueError(f"unknown strategy {name!r}")


@dataclass
class ImageCatalog:
    """Every regular file of an image with a simulation id: read files first (their column index)."""

    ids: np.ndarray
    sizes: np.ndarray
    files: pd.DataFrame  # path, size, id, dir — in path order

    def expand(self, entries: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Simulation ids and sizes of list entries, a directory standing for its files in path order."""
        ids, sizes = [], []
        for path, size, is_dir in zip(entries["path"], entries["size"], entries["is_dir"]):
            if is_dir:
                rows = self.dir_rows[path]
                ids.extend(self.files["id"].to_numpy()[rows].tolist())
                sizes.extend(self.files["size"].to_numpy()[rows].tolist())
            else:
                ids.append(self.path_id[path])
                sizes.append(size)
        return np.asarray(ids, np.int64), np.asarray(sizes, np.int64)

    @functools.cached_property
    def path_id(self) -> dict:
        return dict(zip(self.files["path"], self.files["id"]))

    @functools.cached_property
    def dir_rows(self) -> dict[str, np.ndarray]:
        """Row positions in `files` of each directory's files (path order)."""
        return {d: np.asarray(rows) for d, rows in self.files.groupby("dir", sort=False).indices.items()}

    @functools.cached_property
    def dirs(self) -> dict[str, DirStats]:
        return directory_table(self.files)


def image_catalog(img: ImageFiles, files: pd.DataFrame) -> ImageCatalog:
    inv = files.loc[files["image_digest"] == img.digest].sort_values("path")
    col = img.index.get_indexer(inv["path"])
    extra = col < 0
    col = col.copy()
    col[extra] = len(img.paths) + np.arange(int(extra.sum()))
    files_df = pd.DataFrame({"path": inv["path"].to_numpy(), "size": inv["size"].to_numpy(np.int64), "id": col})
    files_df["dir"] = files_df["path"].str.rpartition("/")[0]
    return ImageCatalog(col.astype(np.int64), inv["size"].to_numpy(np.int64), files_df)


def run_metrics(svc: ServiceHistory, img: ImageFiles, k: int, list_ids: np.ndarray, list_sizes: np.ndarray,
                cfg: AdvisorConfig) -> dict:
    need_idx = np.flatnonzero(svc.need[k])
    need_sizes = img.size[need_idx].astype(np.int64)
    tr = startup_trace((svc.t_ms[k, need_idx] * 1e6).astype(np.int64), need_sizes, need_idx, svc.ready_ns[k])
    res = simulate(tr, list_ids, list_sizes, cfg.params)
    hit = np.isin(list_ids, need_idx)
    need_bytes = float(need_sizes.sum())
    list_bytes = float(list_sizes.sum())
    hit_bytes = float(list_sizes[hit].sum())
    return {
        "time_to_ready_s": res.time_to_ready_s, "stall_s": res.stall_s, "compute_s": res.compute_s,
        "list_files": int(len(list_ids)), "list_bytes": list_bytes,
        "needed_files": int(len(need_idx)), "needed_bytes": need_bytes,
        "recall_files": float(hit.sum() / len(need_idx)) if len(need_idx) else 1.0,
        "recall_bytes": hit_bytes / need_bytes if need_bytes else 1.0,
        "precision_files": float(hit.mean()) if len(list_ids) else np.nan,
        "precision_bytes": hit_bytes / list_bytes if list_bytes else np.nan,
    }


def strategy_list(name: str, img: ImageFiles, svc: ServiceHistory, k: int, cfg: AdvisorConfig, catalog: ImageCatalog,
                  ranked: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(simulation ids, sizes) of strategy or variant `name`'s list for run k, in list order.

    `ranked` is learned_rankings()[k] (needed by the learned strategies only). One place for every
    strategy, so the notebooks' per-run analysis (advisor.analysis) simulates exactly these lists.
    """
    if name == "all":
        return catalog.ids, catalog.sizes
    if name in ("learned", "learned_dirs"):
        r = ranked.loc[ranked["include"]]
        if name == "learned_dirs":
            return catalog.expand(collapse_directories(r["path"].to_numpy(), r["size"].to_numpy(), catalog.dirs))
        return r["file"].to_numpy(np.int64), r["size"].to_numpy(np.int64)
    ids = baseline_files(name, svc, k, cfg)
    return ids, img.size[ids].astype(np.int64)


@dataclass
class HeldOut:
    """The held-out runs of a corpus, simulated: one row per (test run, strategy)."""

    images: dict[str, ImageFiles]
    cutoff: dict[tuple[str, str], int]
    model: StartupModel
    per_run: pd.DataFrame


def held_out(corpus: Corpus, cfg: AdvisorConfig, names: tuple[str, ...] = STRATEGIES + VARIANTS,
             progress=None, groups: set[tuple[str, str]] | None = None, last_runs: int | None = None) -> HeldOut:
    """Simulate strategies `names` on every held-out run, each list built from the runs before it.

    `groups` limits the simulated runs to those (image digest, service) pairs, `last_runs` to each
    one's latest held-out runs; the model is trained the same way regardless.
    `startup_vs_oracle` and `bytes_vs_oracle` are filled when "oracle" is among `names`.
    """
    images = build_images(corpus, cfg.incomplete_weight)
    cutoff = {(d, s): n_train_runs(svc, cfg) for d, img in images.items() for s, svc in img.services.items()}
    model = fit_model(images, cutoff)
    files = corpus.files
    rows = []
    tasks = []
    for d, img in images.items():
        for s, svc in img.services.items():
            if groups is not None and (d, s) not in groups:
                continue
            ks = [k for k in range(cutoff[(d, s)], svc.n) if svc.complete[k]]
            tasks.extend((d, s, k) for k in (ks[-last_runs:] if last_runs else ks))
    it = progress(tasks, desc="evaluate", unit="run") if progress else tasks
    catalogs: dict[str, ImageCatalog] = {}
    learned: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    for digest, service, _ in tasks:
        if (digest, service) not in learned:
            svc = images[digest].services[service]
            ks = np.array([k for d, s, k in tasks if d == digest and s == service])
            learned[(digest, service)] = learned_rankings(model, images[digest], svc, ks, cfg)
    for digest, service, k in it:
        img = images[digest]
        svc = img.services[service]
        for name in names:
            cat = catalogs.get(digest) or catalogs.setdefault(digest, image_catalog(img, files))
            ids, sizes = strategy_list(name, img, svc, k, cfg, cat, learned[(digest, service)][k])
            m = run_metrics(svc, img, k, ids, sizes, cfg)
            rows.append({"service": service, "image_digest": digest, "run_id": svc.run_ids[k], "k": k,
                         "strategy": name, **m})
    per_run = pd.DataFrame(rows)
    if "oracle" in names:
        oracle = per_run.loc[per_run["strategy"] == "oracle", ["run_id", "time_to_ready_s", "list_bytes"]]
        per_run = per_run.merge(oracle.rename(columns={"time_to_ready_s": "oracle_s", "list_bytes": "oracle_bytes"}), on="run_id")
        per_run["startup_vs_oracle"] = per_run["time_to_ready_s"] / per_run["oracle_s"]
        per_run["bytes_vs_oracle"] = per_run["list_bytes"] / per_run["oracle_bytes"].where(per_run["oracle_bytes"] > 0)
    return HeldOut(images, cutoff, model, per_run)


# The directory decision looks at each service's latest held-out runs only: enough to see which way
# it goes, and bounded at scale (bench/advisor_scale.py).
DIRECTORY_DECISION_RUNS = 4


def directory_choice(per_run: pd.DataFrame, last_runs: int = DIRECTORY_DECISION_RUNS) -> dict[tuple[str, str], dict]:
    """Per (service, image digest): do directory entries shorten its latest held-out startups?

    Directory entries are used only where the evaluation shows they help (docs/decisions.md): the
    median over the service's last `last_runs` held-out runs of time-to-ready with them over
    time-to-ready without them must be below 1. `per_run` needs "learned" and "learned_dirs".
    """
    if per_run.empty:
        return {}
    latest = per_run.groupby(["service", "image_digest"])["k"].rank(method="dense", ascending=False) <= last_runs
    per_run = per_run.loc[latest]
    ttr = per_run.pivot_table(index=["service", "image_digest", "run_id"], columns="strategy", values="time_to_ready_s")
    if not {"learned", "learned_dirs"} <= set(ttr.columns):
        return {}
    ratio = (ttr["learned_dirs"] / ttr["learned"]).groupby(level=["service", "image_digest"]).agg(["median", "size"])
    return {(svc, dig): {"use": bool(r["median"] < 1.0), "median_ttr_dirs_vs_files": _num(r["median"]),
                         "held_out_runs": int(r["size"])}
            for (svc, dig), r in ratio.iterrows()}


def evaluate(corpus: Corpus, cfg: AdvisorConfig = AdvisorConfig(), progress=None) -> dict:
    """All strategies on all held-out runs; returns the JSON-ready report."""
    h = held_out(corpus, cfg, STRATEGIES + VARIANTS, progress)
    per_run = h.per_run
    is_variant = per_run["strategy"].isin(VARIANTS)
    report = {
        "strategies": summarise(per_run.loc[~is_variant]),
        "variants": summarise(per_run.loc[is_variant]),
        "transfer": transfer(corpus, h.images, h.model, cfg),
        "params": cfg.as_dict(),
        "data": data_section(corpus, h.images, h.cutoff, per_run, h.model, cfg),
    }
    report["goals"] = goals(report)
    lt = report["strategies"]["learned"]["median_startup_vs_oracle"]
    ld = report["variants"]["learned_dirs"]["median_startup_vs_oracle"]
    choice = directory_choice(per_run)
    report["directory_collapse"] = {
        "learned": lt, "learned_dirs": ld, "helps": bool(ld is not None and lt is not None and ld < lt),
        "rule": "leaf directory, >= 95 % of its files and bytes listed, >= 4 files",
        "used_by_build_for": sorted(f"{s}@{d[:19]}" for (s, d), c in choice.items() if c["use"]),
        "services": len(choice),
    }
    return report


_METRICS = ("startup_vs_oracle", "bytes_vs_oracle", "recall_bytes", "precision_bytes", "recall_files",
            "precision_files", "time_to_ready_s", "stall_s", "list_bytes")


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def summarise(per_run: pd.DataFrame) -> dict:
    """Median per service, then the median over services (each service counts once)."""
    per_service = per_run.groupby(["strategy", "service", "image_digest"])[list(_METRICS)].median()
    out = {}
    present = set(per_run["strategy"])
    for name in [n for n in STRATEGIES + VARIANTS if n in present]:
        s = per_service.loc[name]
        entry = {f"median_{m}": _num(s[m].median()) for m in _METRICS}
        entry["runs"] = int((per_run["strategy"] == name).sum())
        entry["per_service"] = {
            f"{svc}@{dig[:19]}": {m: _num(v) for m, v in row.items() if m in ("startup_vs_oracle", "bytes_vs_oracle", "recall_bytes", "precision_bytes")}
            for (svc, dig), row in s.iterrows()
        }
        out[name] = entry
    return out


def _digest_order(corpus: Corpus) -> dict[str, list[str]]:
    first = corpus.runs.groupby(["service", "image_digest"])["started_at"].min().reset_index()
    return {s: g.sort_values("started_at")["image_digest"].tolist() for s, g in first.groupby("service")}


def transfer(corpus: Corpus, images: dict[str, ImageFiles], model: StartupModel, cfg: AdvisorConfig) -> dict:
    """Cold-start recall: new image version of a known service, and a new service on a known image."""
    files = corpus.files
    nv_rows = []
    first_start = corpus.runs.groupby(["service", "image_digest"])["started_at"].min()
    for service, digests in _digest_order(corpus).items():
        for old, new in zip(digests, digests[1:]):
            old_svc = images[old].services[service]
            new_img = images[new]
            new_svc = new_img.services[service]
            ranked = learned_ranking(model, images[old], old_svc, old_svc.n, cfg)
            ranked = ranked.loc[ranked["include"]]
            mapping = map_paths(ranked["path"], files.loc[files["image_digest"] == new, "path"])
            # What sibling services already read on the new image before this service's first run there.
            t0 = int(first_start[(service, new)].value)
            sib = learned_ranking(model, new_img, None, 0, cfg, at_ns=t0, exclude=service)
            sib_paths = sib.loc[sib["include"], "path"]
            mapped = mapping["new_path"].dropna()
            for how, paths in (("mapped_siblings", pd.concat([mapped, sib_paths]).drop_duplicates()),
                               ("mapped", mapped),
                               ("exact_only", mapping.loc[mapping["how"] == "exact", "new_path"])):
                cols = new_img.index.get_indexer(paths)
                listed = np.zeros(len(new_img.paths), bool)
                listed[cols[cols >= 0]] = True
                for k in np.flatnonzero(new_svc.complete):
                    need = new_svc.need[k]
                    nb = new_img.size[need].sum()
                    nv_rows.append({"service": service, "old": old, "new": new, "how": how, "run": k,
                                    "recall_files": (listed & need).sum() / max(need.sum(), 1),
                                    "recall_bytes": new_img.size[listed & need].sum() / nb if nb else 1.0,
                                    "list_bytes_vs_need": new_img.size[listed].sum() / nb if nb else np.nan})
            counts = mapping["how"].value_counts().to_dict()
            nv_rows.append({"service": service, "old": old, "new": new, "how": "_counts", **{f"n_{k}": v for k, v in counts.items()}})
    nv = pd.DataFrame(nv_rows)
    new_version: dict = {"pairs": 0, "source": "none: no service ran on two image digests"}
    if len(nv):
        def med(how: str, col: str):
            part = nv.loc[nv["how"] == how]
            return _num(part.groupby(["service", "new"])[col].median().median()) if len(part) else None

        c = nv.loc[nv["how"] == "_counts"]
        new_version = {
            "pairs": int(nv.loc[nv["how"] == "mapped", ["service", "new"]].drop_duplicates().shape[0]),
            "runs": int((nv["how"] == "mapped").sum()),
            "method": "old list mapped (exact, renamed, moved) + what siblings read on the new image before the first run",
            "median_recall_bytes": med("mapped_siblings", "recall_bytes"),
            "median_recall_files": med("mapped_siblings", "recall_files"),
            "median_list_bytes_vs_needed": med("mapped_siblings", "list_bytes_vs_need"),
            "mapped_only_median_recall_bytes": med("mapped", "recall_bytes"),
            "mapped_only_median_recall_files": med("mapped", "recall_files"),
            "exact_only_median_recall_bytes": med("exact_only", "recall_bytes"),
            **{f"entries_{h}": int(c.get(f"n_{h}", pd.Series(dtype=float)).fillna(0).sum())
               for h in ("exact", "renamed", "moved", "unmapped")},
        }
    ns_rows = []
    # A new service has no history anywhere, so its model is trained without any of its runs.
    unseen: dict[str, StartupModel | None] = {}
    for digest, img in images.items():
        if len(img.services) < 2:
            continue
        for service, svc in img.services.items():
            if service not in unseen:
                try:
                    unseen[service] = fit_model(images, {(d, s): 0 if s == service else o.n
                                                         for d, i in images.items() for s, o in i.services.items()})
                except ValueError:  # no other service has a complete run to learn from
                    unseen[service] = None
            if unseen[service] is None:
                continue
            ranked = learned_ranking(unseen[service], img, None, 0, cfg, at_ns=np.iinfo(np.int64).max, exclude=service)
            listed = np.zeros(len(img.paths), bool)
            listed[ranked.loc[ranked["include"], "file"].to_numpy()] = True
            sib_union = np.zeros(len(img.paths), bool)
            for other, o in img.services.items():
                if other != service:
                    sib_union |= o.need.any(axis=0)
            for k in np.flatnonzero(svc.complete):
                need = svc.need[k]
                nb = img.size[need].sum()
                ns_rows.append({"service": service, "digest": digest,
                                "recall_files": (listed & need).sum() / max(need.sum(), 1),
                                "recall_bytes": img.size[listed & need].sum() / nb if nb else 1.0,
                                "union_recall_bytes": img.size[sib_union & need].sum() / nb if nb else 1.0,
                                "list_bytes_vs_need": img.size[listed].sum() / nb if nb else np.nan})
    new_service: dict = {"services": 0, "source": "none: no image has two services"}
    if ns_rows:
        per = pd.DataFrame(ns_rows).groupby(["service", "digest"]).median()
        new_service = {
            "services": int(len(per)),
            "median_recall_bytes": _num(per["recall_bytes"].median()),
            "median_recall_files": _num(per["recall_files"].median()),
            "siblings_union_median_recall_bytes": _num(per["union_recall_bytes"].median()),
            "median_list_bytes_vs_needed": _num(per["list_bytes_vs_need"].median()),
        }
    return {"new_version": new_version, "new_service": new_service}


def data_section(corpus: Corpus, images: dict[str, ImageFiles], cutoff: dict, per_run: pd.DataFrame,
                 model: StartupModel, cfg: AdvisorConfig) -> dict:
    runs = corpus.runs
    inc = runs.loc[~runs["complete"]]
    flags = [c for c in runs.columns if c.startswith("flag_")]
    return {
        "synthetic": corpus.synthetic,
        "services": int(runs["service"].nunique()),
        "service_images": int(sum(len(i.services) for i in images.values())),
        "test_runs": int(per_run["run_id"].nunique()),
        "train_runs_per_service_image": {f"{s}@{d[:19]}": n for (d, s), n in cutoff.items()},
        "model_train_rows": model.n_train_rows,
        "incomplete_runs": {
            "policy": f"history weight {cfg.incomplete_weight} (their reads are real but truncated); never a training target or a test run",
            "run_ids": {r.run_id: [f[5:] for f in flags if bool(getattr(r, f))] for r in inc.itertuples()},
        },
        "notes": list(corpus.notes),
    }


def goals(report: dict) -> dict:
    s = report["strategies"]
    learned = s["learned"]
    lt = learned["median_startup_vs_oracle"]
    beaten = {b: (lt is not None and s[b]["median_startup_vs_oracle"] is not None and lt < s[b]["median_startup_vs_oracle"]) for b in BASELINES}
    nv = report["transfer"]["new_version"].get("median_recall_bytes")
    return {
        "startup_vs_oracle<=1.10": {"value": lt, "met": lt is not None and lt <= 1.10},
        "bytes_vs_oracle<=1.3": {"value": learned["median_bytes_vs_oracle"], "met": (learned["median_bytes_vs_oracle"] or np.inf) <= 1.3},
        "beats_every_baseline_on_startup": {"value": beaten, "met": all(beaten.values())},
        "new_version_recall>=0.90": {"value": nv, "met": nv is not None and nv >= 0.9},
    }


def format_table(report: dict) -> str:
    head = f"{'strategy':<12} {'startup/oracle':>14} {'bytes/oracle':>12} {'recall(B)':>9} {'prec(B)':>8} {'recall(f)':>9} {'ttr s':>7}"
    lines = ["medians per service, then over services; startup/oracle is paired run by run, `ttr s` is not, so it can",
             "put a strategy below the oracle (the run's own files in access order), see docs/simulation.md", "",
             head, "-" * len(head)]
    for name, e in {**report["strategies"], **report.get("variants", {})}.items():
        def f(v, w, fmt):
            return f"{'-':>{w}}" if v is None else f"{v:>{w}{fmt}}"
        lines.append(f"{name:<12} {f(e['median_startup_vs_oracle'], 14, '.3f')} {f(e['median_bytes_vs_oracle'], 12, '.3f')} "
                     f"{f(e['median_recall_bytes'], 9, '.3f')} {f(e['median_precision_bytes'], 8, '.3f')} "
                     f"{f(e['median_recall_files'], 9, '.3f')} {f(e['median_time_to_ready_s'], 7, '.3f')}")
    t = report["transfer"]
    nv, ns = t["new_version"], t["new_service"]
    lines.append("")
    lines.append(f"cold start, new image version: pairs={nv.get('pairs')} recall(B)={nv.get('median_recall_bytes')} "
                 f"recall(f)={nv.get('median_recall_files')}; mapped only recall(B)={nv.get('mapped_only_median_recall_bytes')}, "
                 f"exact paths only recall(B)={nv.get('exact_only_median_recall_bytes')}")
    lines.append(f"cold start, new service on known image: services={ns.get('services')} recall(B)={ns.get('median_recall_bytes')} "
                 f"recall(f)={ns.get('median_recall_files')} siblings' union recall(B)={ns.get('siblings_union_median_recall_bytes')}")
    dc = report.get("directory_collapse")
    if dc:
        lines.append(f"directory entries: startup/oracle {dc['learned_dirs']} with vs {dc['learned']} without "
                     f"(median over services); build uses them for {len(dc['used_by_build_for'])} of {dc['services']} "
                     f"service images, where they shorten that service's held-out startups")
    lines.append("")
    for g, v in report["goals"].items():
        lines.append(f"goal {g:<34} {'MET ' if v['met'] else 'MISSED'}  {v['value']}")
    d = report["data"]
    lines.append(f"\ndata: {'SYNTHETIC' if d['synthetic'] else 'recorded'}; services={d['services']} test runs={d['test_runs']} "
                 f"incomplete runs={len(d['incomplete_runs']['run_ids'])} ({report['params']['incomplete_weight']} history weight, never test)")
    return "\n".join(lines)
