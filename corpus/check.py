"""Consistency checks over a recorded corpus directory; each returns a list of problems (empty = ok)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from agent.trace.schema import ACCESSES, INVENTORY, RUNS

MAX_BYTES = 30 * 1024 * 1024
FILES = {"runs": RUNS, "accesses": ACCESSES, "inventory": INVENTORY}
# Nothing in any corpus image lives under /tmp: every file there was made by the run.
RUNTIME_DIR = "/tmp/"


@dataclass
class Corpus:
    runs: pd.DataFrame
    accesses: pd.DataFrame
    inventory: pd.DataFrame
    plans: pd.DataFrame | None


def load(root: Path) -> Corpus:
    traces = root / "traces"
    frames = {name: pq.read_table(traces / f"{name}.parquet").to_pandas() for name in FILES}
    plans_path = traces / "plans.parquet"
    plans = pq.read_table(plans_path).to_pandas() if plans_path.exists() else None
    return Corpus(frames["runs"], frames["accesses"], frames["inventory"], plans)


def check_schemas(root: Path) -> list[str]:
    problems = []
    for name, schema in FILES.items():
        got = pq.read_schema(root / "traces" / f"{name}.parquet")
        want = [(f.name, f.type) for f in schema]
        have = [(f.name, f.type) for f in got]
        if have != want:
            problems.append(f"{name}.parquet schema differs from agent.trace.schema: {set(have) ^ set(want)}")
    return problems


def check_size(root: Path, limit: int = MAX_BYTES) -> list[str]:
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return [] if total <= limit else [f"{root} holds {total} bytes > {limit}"]


def check_image_paths(c: Corpus) -> list[str]:
    """Every access flagged from_image names a regular file in its run's image inventory."""
    acc = c.accesses.merge(c.runs[["run_id", "image_digest"]], on="run_id", how="left")
    if acc.image_digest.isna().any():
        return [f"{int(acc.image_digest.isna().sum())} accesses belong to runs without an image digest"]
    missing_inv = set(acc.image_digest) - set(c.inventory.image_digest)
    if missing_inv:
        return [f"no inventory for image digests {sorted(missing_inv)}"]
    files = c.inventory[c.inventory.type == "f"][["image_digest", "path"]].assign(in_inv=True)
    img = acc[acc.from_image].merge(files, on=["image_digest", "path"], how="left")
    bad = img[img.in_inv.isna()]
    return [f"{len(bad)} from_image accesses not in their image's inventory, e.g. "
            f"{bad[['image_digest', 'path']].head(5).values.tolist()}"] if len(bad) else []


def check_runtime_files(c: Corpus) -> list[str]:
    """Files the runs created (everything under /tmp, and anything outside the inventory) are not
    flagged from_image; and the corpus does contain such files, so the check can bite."""
    acc = c.accesses.merge(c.runs[["run_id", "image_digest"]], on="run_id")
    keys = set(zip(c.inventory.image_digest, c.inventory.path))
    in_image = [(d, p) in keys for d, p in zip(acc.image_digest, acc.path)]
    outside = acc[~pd.Series(in_image, index=acc.index)]
    problems = []
    if outside.from_image.any():
        problems.append(f"{int(outside.from_image.sum())} accesses outside the image inventory flagged from_image")
    tmp = acc[acc.path.str.startswith(RUNTIME_DIR)]
    if tmp.empty:
        problems.append("no runtime-created files under /tmp in the corpus: the check cannot bite")
    elif tmp.from_image.any():
        problems.append(f"{int(tmp.from_image.sum())} runtime-created files under /tmp flagged from_image")
    return problems


def check_times(c: Corpus) -> list[str]:
    """Within a run, first access times are >= 0 and non-decreasing in access order; ready and the
    end come after the start."""
    problems = []
    acc = c.accesses.sort_values(["run_id", "seq"])
    if (acc.first_ns < 0).any():
        problems.append(f"{int((acc.first_ns < 0).sum())} accesses before container start")
    step = acc.groupby("run_id").first_ns.diff()
    if (step < 0).any():
        bad = acc[step < 0].run_id.unique()
        problems.append(f"first_ns decreases with seq in {len(bad)} runs, e.g. {bad[:3].tolist()}")
    dup = acc.duplicated(["run_id", "seq"]).sum() + acc.duplicated(["run_id", "path"]).sum()
    if dup:
        problems.append(f"{int(dup)} duplicate (run, seq) or (run, path) rows")
    r = c.runs
    if (r.ended_at < r.started_at).any():
        problems.append("runs ending before they start")
    dur = (r.ended_at - r.started_at).dt.total_seconds() * 1e9
    late = r.ready_ns.notna() & ((r.ready_ns < 0) | (r.ready_ns > dur + 1e6))
    if late.any():
        problems.append(f"{int(late.sum())} runs with ready_ns outside [0, duration]")
    last = acc.groupby("run_id").first_ns.max()
    over = last.reindex(r.run_id).values > dur.values + 1e9
    if over.any():
        problems.append(f"{int(over.sum())} runs with accesses more than 1 s after their end")
    return problems


def check_complete_runs(c: Corpus, minimum: int) -> list[str]:
    counts = c.runs[c.runs.complete].groupby("service").size()
    services = sorted(set(c.runs.service))
    low = {s: int(counts.get(s, 0)) for s in services if counts.get(s, 0) < minimum}
    return [f"services with fewer than {minimum} complete runs: {low}"] if low else []


def check_incomplete_flags(c: Corpus) -> list[str]:
    """Complete runs carry no flag; runs the driver crashed on purpose are flagged early_exit."""
    problems = []
    flags = [f"flag_{f}" for f in ("overflow", "late_attach", "early_exit", "agent_restart", "runtime_restart")]
    flagged_complete = c.runs[c.runs.complete & c.runs[flags].any(axis=1)]
    if len(flagged_complete):
        problems.append(f"{len(flagged_complete)} complete runs carry an incomplete flag")
    if c.plans is not None:
        crashed = c.plans[c.plans.intent == "early_exit"].run_id.dropna()
        runs = c.runs.set_index("run_id")
        not_flagged = [r for r in crashed if r in runs.index and not runs.at[r, "flag_early_exit"]]
        if not_flagged:
            problems.append(f"{len(not_flagged)} deliberately crashed runs not flagged early_exit")
    return problems


def check_all(root: Path, min_complete: int = 20) -> list[str]:
    problems = check_schemas(root) + check_size(root)
    if problems:
        return problems
    c = load(root)
    return (check_image_paths(c) + check_runtime_files(c) + check_times(c)
            + check_complete_runs(c, min_complete) + check_incomplete_flags(c))
