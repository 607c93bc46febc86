"""From per-file predictions to an ordered, budgeted prefetch list.

Probability: the model's, floored by the file's own observed read frequency for this service. The
model pools all services and shrinks rarely read files towards zero; the floor keeps a file the
service itself read in a fifth of its runs at a fifth, while the model can still raise files it has
reason to expect (siblings, directory, recency).

Inclusion: a file is worth prefetching when the stall it is expected to save (its on-demand fetch:
a round trip per chunk plus its bytes, weighted by the chance it is needed) outweighs the link time it
is expected to waste (its bytes and its share of round trips, weighted by the chance it is not
needed): that waste is taken from the files needed sooner.

Order: two tiers. Files more likely needed than not come first, then the uncertain ones; within a
tier, by expected need time (the service's own mean first-access time when it has one, else the
model's estimate), pushed back by the link time the file would waste. So uncertain files never delay
likely ones, and a big, unlikely file cannot sit in front of small, certain ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from advisor.simulate import SimParams

LIKELY = 0.5  # tier boundary: more likely needed than not
_TIER_GAP_MS = 1e9


def rank_files(paths: np.ndarray, size: np.ndarray, p: np.ndarray, t_ms: np.ndarray, params: SimParams = SimParams(),
               budget_bytes: float = np.inf, min_prob: float = 0.0, freq: np.ndarray | None = None,
               hist_t_ms: np.ndarray | None = None) -> pd.DataFrame:
    """One row per candidate with benefit, cost, net score and `include`; included rows first, in list order.

    p: model probability; t_ms: model first-access estimate; freq / hist_t_ms (optional): the
    service's own observed frequency and mean first-access time (NaN when never read).
    """
    size = np.asarray(size, dtype=float)
    p_model = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    p = p_model if freq is None else np.maximum(p_model, np.clip(np.asarray(freq, dtype=float), 0.0, 1.0))
    t_ms = np.asarray(t_ms, dtype=float)
    need_ms = t_ms if hist_t_ms is None else np.where(np.isnan(hist_t_ms), t_ms, hist_t_ms)
    ondemand_s = params.fetch_time_s(size)
    wire_s = size / params.bandwidth_Bps + params.rtt_s * np.maximum(1, np.ceil(size / params.chunk_bytes)) / params.prefetch_concurrency
    benefit = p * ondemand_s
    cost = (1.0 - p) * wire_s
    net = benefit - cost
    df = pd.DataFrame({"path": paths, "size": size.astype(np.int64), "p": p, "p_model": p_model, "t_ms": need_ms,
                       "benefit_s": benefit, "cost_s": cost, "net_s": net})
    eligible = (net > 0) & (p >= min_prob)
    # Budget: keep the best value per byte first, then order what was kept by need time.
    density = np.where(eligible, net / np.maximum(size, 1.0), -np.inf)
    by_value = np.argsort(-density, kind="stable")
    cum = np.cumsum(size[by_value])
    within = np.zeros(len(df), bool)
    within[by_value] = cum <= budget_bytes
    df["include"] = eligible & within
    df["order_key_ms"] = np.where(p >= LIKELY, 0.0, _TIER_GAP_MS) + need_ms + (1.0 - p) * wire_s * 1e3
    df = df.sort_values(["include", "order_key_ms", "p"], ascending=[False, True, False], kind="stable")
    return df.reset_index(drop=True)

class DirStats(NamedTuple):
    n: int  # regular files directly in the directory
    bytes: int
    leaf: bool  # no subdirectory holds files


def directory_table(inventory: pd.DataFrame) -> dict[str, DirStats]:
    """Per directory of an image's regular files (path, size). Computed once per image: every list
    of that image is collapsed against it."""
    inv = pd.DataFrame({"path": inventory["path"].to_numpy(dtype=object), "size": inventory["size"].to_numpy(np.int64)})
    inv["dir"] = inv["path"].str.rpartition("/")[0]
    per_dir = inv.groupby("dir").agg(n=("path", "size"), bytes=("size", "sum"))
    dirs = per_dir.index.to_numpy(dtype=object).astype(str)  # groupby sorts the keys
    nxt = np.searchsorted(dirs, np.char.add(dirs, "/"))
    nxt_dir = np.where(nxt < len(dirs), dirs[np.minimum(nxt, len(dirs) - 1)], "")
    leaf = ~np.char.startswith(nxt_dir.astype(str), np.char.add(dirs, "/"))
    return {d: DirStats(int(n), int(b), bool(lf)) for d, n, b, lf in zip(dirs, per_dir["n"], per_dir["bytes"], leaf)}


def collapse_directories(paths: np.ndarray, sizes: np.ndarray, dirs: dict[str, DirStats], min_share: float = 0.95,
                         min_files: int = 4) -> pd.DataFrame:
    """Replace the listed files of a leaf directory by the directory when nearly all of it is listed.

    `dirs`: directory_table() of the image. nydusd prefetches everything below a directory entry,
    so only leaf directories qualify, and both the file share and the byte share must reach
    `min_share`. The entry takes the place of its first listed member. Returns rows
    (path, size, is_dir) in list order; a directory's size is all of it.
    """
    parents = [str(p).rpartition("/")[0] for p in paths]
    n: dict[str, int] = {}
    got: dict[str, int] = {}
    for d, size in zip(parents, sizes):
        n[d] = n.get(d, 0) + 1
        got[d] = got.get(d, 0) + int(size)
    collapse = {d for d, k in n.items() if (st := dirs.get(d)) is not None and st.leaf and st.n >= min_files
                and k / st.n >= min_share and got[d] / max(st.bytes, 1) >= min_share}
    rows, emitted = [], set()
    for path, size, d in zip(paths, sizes, parents):
        if d not in collapse:
            rows.append((path, int(size), False))
        elif d not in emitted:
            emitted.add(d)
            rows.append((d, dirs[d].bytes, True))
    return pd.DataFrame(rows, columns=["path", "size", "is_dir"]).astype({"size": np.int64, "is_dir": bool})
