"""Features of (service, file) pairs at a point in a service's run history. Pure functions over arrays.

Per image, every file any run read gets a column; per service, its runs (in time order) are rows of
dense matrices (read before ready, read after ready, first-access time, rank, exec). An *origin* k is
"just before run k": features use runs 0..k-1 only, computed for all k at once with prefix sums, so
building training examples from every run of the history costs one pass over the matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advisor.traces import Corpus

KINDS = ("elf_lib", "executable", "bytecode", "config", "data")
_ELF_LIB = r"(?:\.so(?:\.\d+)*$)"
_BYTECODE = r"(?:\.(?:pyc|pyo|py|class|jar|rb|pm|pl|js|mjs|lua|beam|elc|wasm)$)"
_CONFIG = r"(?:^/etc/|\.(?:conf|cfg|cnf|ini|ya?ml|json|toml|xml|properties|rc)$)"
_BIN_DIR = r"(?:^/(?:usr/)?(?:local/)?s?bin/|^/usr/libexec/)"

FEATURES = (
    "n_runs", "n_hist", "freq", "freq_rw", "last_gap", "late_freq", "ever",
    "t_mean", "t_min", "t_std", "t_last", "rank_mean", "exec_seen", "mode_exec", "log_size",
    *(f"kind_{k}" for k in KINDS), "dir_frac", "sib_pop", "sib_freq", "n_sib",
)
RECENCY_DECAY = 0.7  # weight of a run one step older; half-life ≈ 2 runs


def file_kind(paths: pd.Series, mode: np.ndarray, execd: np.ndarray) -> np.ndarray:
    """Index into KINDS per path: ELF library, executable, bytecode/script, config, other data."""
    s = pd.Series(paths, dtype="str").reset_index(drop=True)
    kind = np.full(len(s), KINDS.index("data"), dtype=np.int8)
    kind[s.str.contains(_CONFIG, regex=True).to_numpy()] = KINDS.index("config")
    kind[s.str.contains(_BYTECODE, regex=True).to_numpy()] = KINDS.index("bytecode")
    is_exec = (np.asarray(mode) & 0o111).astype(bool) | np.asarray(execd, dtype=bool) | s.str.contains(_BIN_DIR, regex=True).to_numpy()
    kind[is_exec] = KINDS.index("executable")
    kind[s.str.contains(_ELF_LIB, regex=True).to_numpy()] = KINDS.index("elf_lib")
    return kind


@dataclass
class ServiceHistory:
    service: str
    image_digest: str
    run_ids: np.ndarray
    started: np.ndarray  # datetime64[ns] as int64
    complete: np.ndarray
    weight: np.ndarray  # history weight per run
    ready_ns: np.ndarray  # float, NaN when unknown
    need: np.ndarray  # (n, U) bool: read before ready
    late: np.ndarray  # (n, U) bool: read after ready only
    t_ms: np.ndarray  # (n, U) float32 first access in ms, NaN unless need
    t_all: np.ndarray  # (n, U) float32 first access in ms of any read (also after ready), else NaN
    rank: np.ndarray  # (n, U) float32 first-access rank / files needed, NaN unless need
    execd: np.ndarray  # (n, U) bool
    # Prefix sums siblings read (row k: runs < k).
    cum_need: np.ndarray = field(init=False)
    cum_w: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cum_w = _prefix(self.weight.astype(np.float32))
        self.cum_need = _prefix(self.need * self.weight[:, None].astype(np.float32))

    @property
    def n(self) -> int:
        return len(self.run_ids)


@dataclass
class ImageFiles:
    """Per image: every file any of its runs read, with static facts from the inventory."""

    digest: str
    paths: np.ndarray
    size: np.ndarray
    kind: np.ndarray
    mode_exec: np.ndarray
    dir_of: np.ndarray  # (U,) directory index
    dir_files: np.ndarray  # (D,) regular files in that directory (inventory)
    services: dict[str, ServiceHistory]
    index: pd.Index = field(init=False)

    def __post_init__(self) -> None:
        self.index = pd.Index(self.paths)
        self.dir_matrix = sp.csr_matrix(
            (np.ones(len(self.paths), np.float32), (np.arange(len(self.paths)), self.dir_of)),
            shape=(len(self.paths), len(self.dir_files)),
        )


def _prefix(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, *a.shape[1:]), dtype=np.float32)
    np.cumsum(a, axis=0, out=out[1:])
    return out


def _ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds since the epoch."""
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)


def _dirname(paths: pd.Series) -> pd.Series:
    return paths.str.rpartition("/")[0]


def build_images(corpus: Corpus, incomplete_weight: float = 0.5) -> dict[str, ImageFiles]:
    """Dense per-service matrices for every image. Incomplete runs enter history at incomplete_weight.

    Strings are turned into integer codes once; everything after that is numpy indexing.
    """
    runs = corpus.runs.reset_index(drop=True)
    acc = corpus.accesses
    run_row = pd.Index(runs["run_id"]).get_indexer(acc["run_id"])
    keep = run_row >= 0
    run_row = run_row[keep]
    path_code, all_paths = pd.factorize(acc["path"].to_numpy()[keep])
    first_ns = acc["first_ns"].to_numpy()[keep]
    size_acc = acc["size"].to_numpy()[keep]
    before = acc["before_ready"].to_numpy(dtype=bool)[keep]
    execd_row = acc["kinds"].fillna("").astype(str).str.contains("exec", regex=False).to_numpy()[keep]
    digest_code, digests = pd.factorize(runs["image_digest"])
    service_code, service_names = pd.factorize(runs["service"])
    started = _ns(runs["started_at"])
    complete_all = runs["complete"].to_numpy(dtype=bool)
    ready_all = runs["ready_ns"].astype("float64").to_numpy()
    run_ids_all = runs["run_id"].to_numpy()
    acc_digest = digest_code[run_row]
    inv = corpus.files
    inv_by_digest = {d: g for d, g in inv.groupby("image_digest", sort=False)}
    order = np.argsort(acc_digest, kind="stable")
    bounds = np.searchsorted(acc_digest[order], np.arange(len(digests) + 1))
    out: dict[str, ImageFiles] = {}
    for di, digest in enumerate(digests):
        sel = order[bounds[di]:bounds[di + 1]]
        if len(sel) == 0:
            continue
        uniq, col = np.unique(path_code[sel], return_inverse=True)
        paths = np.asarray(all_paths[uniq], dtype=object)
        u = len(paths)
        inv_i = inv_by_digest.get(digest, inv.iloc[0:0])
        inv_by_path = inv_i.drop_duplicates("path").set_index("path")
        size = inv_by_path["size"].reindex(paths).to_numpy(dtype="float64")
        acc_size = np.zeros(u)
        np.maximum.at(acc_size, col, size_acc[sel].astype("float64"))
        size = np.where(np.isnan(size), acc_size, size)
        mode = inv_by_path["mode"].reindex(paths).fillna(0).to_numpy(dtype=np.int64)
        exec_any = np.zeros(u, bool)
        exec_any[col[execd_row[sel]]] = True
        ps = pd.Series(paths, dtype="str")
        dirs = _dirname(ps)
        dir_codes, dir_names = pd.factorize(dirs)
        inv_dir_counts = _dirname(inv_i["path"]).value_counts()
        seen_counts = np.bincount(dir_codes, minlength=len(dir_names))
        dir_files = np.maximum(inv_dir_counts.reindex(dir_names).fillna(0).to_numpy(), seen_counts).astype(np.float32)
        services: dict[str, ServiceHistory] = {}
        img_runs = np.flatnonzero(digest_code == di)
        rr = run_row[sel]
        for sc in np.unique(service_code[img_runs]):
            srows = img_runs[service_code[img_runs] == sc]
            srows = srows[np.argsort(started[srows], kind="stable")]
            local = np.full(len(runs), -1, np.int64)
            local[srows] = np.arange(len(srows))
            mine = local[rr] >= 0
            rows, cols = local[rr[mine]], col[mine]
            b = before[sel][mine]
            n = len(srows)
            need = np.zeros((n, u), bool)
            need[rows[b], cols[b]] = True
            late = np.zeros((n, u), bool)
            late[rows[~b], cols[~b]] = True
            late &= ~need
            t_all = np.full((n, u), np.nan, np.float32)
            t_all[rows, cols] = first_ns[sel][mine] / 1e6
            t_ms = np.where(need, t_all, np.nan).astype(np.float32)
            # Rank of each needed file in its run's first-access order, as a fraction of the run's needs.
            rank = np.full((n, u), np.nan, np.float32)
            per_run = np.maximum(need.sum(axis=1), 1)
            key = np.where(need, t_ms, np.inf)
            pos = np.argsort(np.argsort(key, axis=1, kind="stable"), axis=1, kind="stable").astype(np.float32) + 1
            rank[need] = (pos / per_run[:, None])[need]
            execd = np.zeros((n, u), bool)
            ex = execd_row[sel][mine]
            execd[rows[ex], cols[ex]] = True
            complete = complete_all[srows]
            name = str(service_names[sc])
            services[name] = ServiceHistory(
                service=name, image_digest=digest, run_ids=run_ids_all[srows], started=started[srows],
                complete=complete, weight=np.where(complete, 1.0, incomplete_weight),
                ready_ns=ready_all[srows], need=need, late=late, t_ms=t_ms, t_all=t_all, rank=rank, execd=execd,
            )
        out[digest] = ImageFiles(
            digest=digest, paths=paths, size=size, kind=file_kind(ps, mode, exec_any),
            mode_exec=(mode & 0o111).astype(bool), dir_of=dir_codes, dir_files=dir_files, services=services,
        )
    return out


@dataclass
class OriginFeatures:
    X: np.ndarray  # (m, len(FEATURES)) float32
    origin: np.ndarray  # (m,) k: features use runs < k
    file: np.ndarray  # (m,) column in ImageFiles.paths
    freq: np.ndarray | None = None  # (m,) the service's own weighted read-before-ready frequency
    hist_t_ms: np.ndarray | None = None  # (m,) its weighted mean first-access ms in runs < k (NaN: never)


def origin_features(img: ImageFiles, svc: ServiceHistory | None, origins: np.ndarray,
                    at_ns: np.ndarray | None = None, siblings: bool = True, exclude: str | None = None) -> OriginFeatures:
    """Features of candidate files at each origin k of `svc` (None: a new service with no history;
    `exclude` then names it so its own runs are not counted as a sibling's).

    Candidates at k: files the service read in runs < k, or files sibling services read before the
    origin's time (`at_ns`, default: the start of run k, or +inf past the last run).
    """
    u = len(img.paths)
    origins = np.asarray(origins, dtype=np.int64)
    n = svc.n if svc is not None else 0
    if svc is None:
        z = np.zeros((1, u), np.float32)
        need = late = execd = np.zeros((0, u), bool)
        t_ms = rank = np.zeros((0, u), np.float32)
        w = np.zeros(0, np.float32)
    else:
        need, late, execd, t_ms, rank = svc.need, svc.late, svc.execd, svc.t_ms, svc.rank
        w = svc.weight.astype(np.float32)
    if at_ns is None:
        at_ns = np.array([svc.started[k] if (svc is not None and k < n) else np.iinfo(np.int64).max for k in origins])

    wcol = w[:, None]
    cw = _prefix(w)[origins]  # (K,)
    cnt = _prefix(need * wcol)[origins]
    late_cnt = _prefix(late * wcol)[origins]
    ever = _prefix(need | late)[origins] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(cw[:, None] > 0, cnt / cw[:, None], 0.0)
        late_freq = np.where(cw[:, None] > 0, late_cnt / cw[:, None], 0.0)
    # Recency-weighted frequency and runs since last read, for all k by one scan over runs.
    e_num = np.zeros((n + 1, u), np.float32)
    e_den = np.zeros(n + 1, np.float32)
    last_idx = np.full((n + 1, u), -1, np.int32)
    for k in range(1, n + 1):
        e_num[k] = RECENCY_DECAY * e_num[k - 1] + need[k - 1] * w[k - 1]
        e_den[k] = RECENCY_DECAY * e_den[k - 1] + w[k - 1]
        last_idx[k] = np.where(need[k - 1], k - 1, last_idx[k - 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        freq_rw = np.where(e_den[origins, None] > 0, e_num[origins] / e_den[origins, None], 0.0)
    li = last_idx[origins]
    last_gap = np.where(li >= 0, origins[:, None] - li, np.nan).astype(np.float32)
    lt = np.where(need, np.log1p(np.nan_to_num(t_ms, nan=0.0)), 0.0).astype(np.float32)
    s1 = _prefix(lt * wcol)[origins]
    s2 = _prefix(lt * lt * wcol)[origins]
    sr = _prefix(np.where(need, np.nan_to_num(rank, nan=0.0), 0.0) * wcol)[origins]
    s_lin = _prefix(np.where(need, np.nan_to_num(t_ms, nan=0.0), 0.0) * wcol)[origins]
    with np.errstate(invalid="ignore", divide="ignore"):
        hist_t_ms = np.where(cnt > 0, s_lin / cnt, np.nan)
        t_mean = np.where(cnt > 0, s1 / cnt, np.nan)
        t_std = np.sqrt(np.maximum(np.where(cnt > 0, s2 / cnt, np.nan) - t_mean**2, 0.0))
        rank_mean = np.where(cnt > 0, sr / cnt, np.nan)
    tmin_all = np.vstack([np.full((1, u), np.inf, np.float32), np.fmin.accumulate(np.where(need, lt, np.inf), axis=0)]) if n else np.full((1, u), np.inf, np.float32)
    t_min = tmin_all[origins]
    t_min = np.where(np.isfinite(t_min), t_min, np.nan)
    lt_pad = np.vstack([np.zeros((1, u), np.float32), lt]) if n else np.zeros((1, u), np.float32)
    t_last = np.where(li >= 0, np.take_along_axis(lt_pad, np.maximum(li, 0) + 1 if n else np.zeros_like(li), axis=0), np.nan)
    exec_seen = _prefix(execd)[origins] > 0
    dir_read = np.asarray(img.dir_matrix.T.dot(ever.T.astype(np.float32))).T  # (K, D)
    dir_frac = (dir_read / img.dir_files[None, :])[:, img.dir_of]

    sib_pop = np.zeros((len(origins), u), np.float32)
    sib_freq = np.zeros((len(origins), u), np.float32)
    n_sib = np.zeros(len(origins), np.float32)
    if siblings:
        for name, sib in img.services.items():
            if (svc is not None and name == svc.service) or name == exclude:
                continue
            j = np.searchsorted(sib.started, at_ns, side="left")  # sibling runs before the origin
            has = j > 0
            n_sib += has
            sib_pop += (sib.cum_need[j] > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                sib_freq += np.where(sib.cum_w[j][:, None] > 0, sib.cum_need[j] / sib.cum_w[j][:, None], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sib_pop = np.where(n_sib[:, None] > 0, sib_pop / n_sib[:, None], 0.0)
            sib_freq = np.where(n_sib[:, None] > 0, sib_freq / n_sib[:, None], 0.0)

    cand = ever | (sib_pop > 0)
    ko, fo = np.nonzero(cand)
    kind_onehot = np.eye(len(KINDS), dtype=np.float32)[img.kind[fo]]
    cols = [
        origins[ko].astype(np.float32), cw[ko], freq[ko, fo], freq_rw[ko, fo], last_gap[ko, fo], late_freq[ko, fo],
        ever[ko, fo], t_mean[ko, fo], t_min[ko, fo], t_std[ko, fo], t_last[ko, fo], rank_mean[ko, fo],
        exec_seen[ko, fo], img.mode_exec[fo], np.log2(np.maximum(img.size[fo], 1.0)),
    ]
    X = np.column_stack([*(np.asarray(c, np.float32) for c in cols), kind_onehot,
                         dir_frac[ko, fo], sib_pop[ko, fo], sib_freq[ko, fo], n_sib[ko]]).astype(np.float32)
    # A new service has no frequency of its own: its floor is how often its siblings read the file.
    own_freq = sib_freq if svc is None else freq
    return OriginFeatures(X=X, origin=origins[ko], file=fo, freq=np.asarray(own_freq[ko, fo], np.float64),
                          hist_t_ms=np.asarray(hist_t_ms[ko, fo], np.float64))


def labels(svc: ServiceHistory, of: OriginFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(read before ready in run k, log1p first-access ms or NaN) for rows whose origin k < n."""
    need = svc.need[of.origin, of.file]
    t = np.log1p(svc.t_ms[of.origin, of.file])
    return need, t
