"""Synthetic trace corpora, for development, unit tests and the scale benchmark.

Two sources, never to be confused with the real corpus in data/:
- `generate()`: a parametric model of services starting on Debian-like images (core files every run,
  optional module groups, rare reads, late reads after ready, a config drift, one image in two
  versions with renamed versioned paths);
- `scale_up()`: a real corpus resampled with jitter to a target row count (the benchmark's
  "synthetic scale-up of the real corpus").
Every synthetic run carries `agent_version="synthetic"` so it can never pass for a recorded one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agent.trace.schema import ACCESSES, INVENTORY, RUN_FLAGS, RUNS, SCHEMA_VERSION

log = logging.getLogger(__name__)

SYNTHETIC_AGENT_VERSION = "synthetic"
_T0 = pd.Timestamp("2026-01-05T08:00:00Z")


@dataclass(frozen=True)
class SynthSpec:
    images: int = 3
    services_per_image: int = 2
    runs_per_service: int = 24
    incomplete_per_service: int = 2
    files_per_image: int = 3000
    # Runs of the first service of image 0 that move to the image's second version (0 = no v2).
    new_version_runs: int = 6
    seed: int = 0

    @classmethod
    def small(cls, seed: int = 0) -> SynthSpec:
        """A corpus small enough for unit tests (about a second to generate and learn)."""
        return cls(images=2, services_per_image=2, runs_per_service=8, incomplete_per_service=1,
                   files_per_image=600, new_version_runs=3, seed=seed)


@dataclass
class _Image:
    digest: str
    ref: str
    paths: np.ndarray
    sizes: np.ndarray
    modes: np.ndarray


def _digest(rng: np.random.Generator) -> str:
    return "sha256:" + "".join(rng.choice(list("0123456789abcdef"), 64))


def _make_image(rng: np.random.Generator, idx: int, n_files: int, pyver: str = "3.11") -> _Image:
    tag = pyver.replace(".", "")
    paths: list[str] = []
    sizes: list[int] = []
    modes: list[int] = []

    def add(p: str, size: float, mode: int = 0o644) -> None:
        paths.append(p)
        sizes.append(max(1, int(size)))
        modes.append(mode)

    n_libs, n_bins, n_cfg = n_files // 10, n_files // 30, n_files // 60
    for i in range(n_libs):
        add(f"/usr/lib/x86_64-linux-gnu/libx{idx}_{i}.so.{1 + i % 3}.{i % 7}", rng.lognormal(11.5, 1.2))
    for i in range(n_bins):
        add(f"/usr/bin/tool{idx}_{i}", rng.lognormal(11, 1.0), 0o755)
    for i in range(n_cfg):
        add(f"/etc/app{idx}/conf{i}.conf", rng.lognormal(7, 1))
    n_pkgs = max(4, n_files // 120)
    for p in range(n_pkgs):
        for m in range(20):
            add(f"/usr/lib/python{pyver}/pkg{p}/mod{m}.py", rng.lognormal(9, 1))
            add(f"/usr/lib/python{pyver}/pkg{p}/__pycache__/mod{m}.cpython-{tag}.pyc", rng.lognormal(9.3, 1))
    for i in range(max(0, n_files - len(paths) - 3)):
        add(f"/usr/share/data{idx}/d{i // 50}/f{i}.dat", rng.lognormal(9, 2))
    for i in range(3):  # big, rarely needed files: the 300 MB trap
        add(f"/usr/share/big{idx}/blob{i}.bin", 300e6 / (i + 1))
    return _Image(
        _digest(rng), f"registry.local/synth/img{idx}:{pyver}", np.array(paths, dtype=object),
        np.array(sizes, dtype=np.int64), np.array(modes, dtype=np.int32),
    )


def _bump_version(rng: np.random.Generator, img: _Image) -> _Image:
    """Second version: python3.11 → 3.12 (dirs and .pyc tags), some libs' minor version bumped."""
    new = []
    for p in img.paths:
        q = p.replace("python3.11", "python3.12").replace("cpython-311", "cpython-312")
        if q.endswith(tuple(f".{k}" for k in range(7))) and ".so." in q and rng.random() < 0.3:
            head, minor = q.rsplit(".", 1)
            q = f"{head}.{int(minor) + 1}"
        new.append(q)
    sizes = (img.sizes * rng.uniform(0.95, 1.05, len(img.sizes))).astype(np.int64)
    return _Image(_digest(rng), img.ref.replace("3.11", "3.12"), np.array(new, dtype=object), sizes, img.modes)


@dataclass
class _Behaviour:
    core: np.ndarray  # file indices, in start-up order
    groups: list[tuple[np.ndarray, float, float]]  # (files, p before drift, p after drift)
    rare: np.ndarray
    late: np.ndarray
    drift_at: int
    gap_ms: float


def _behaviour(rng: np.random.Generator, img: _Image, shared_core: np.ndarray, n_runs: int) -> _Behaviour:
    n = len(img.paths)
    small = np.flatnonzero(img.sizes < 50e6)
    own = rng.choice(small, size=int(rng.integers(80, 220)), replace=False)
    core = np.unique(np.concatenate([shared_core, own]))
    rng.shuffle(core)
    # Executables first, then libraries: a crude loader order.
    core = core[np.argsort(~(img.modes[core] == 0o755), kind="stable")]
    groups = []
    for _ in range(int(rng.integers(3, 7))):
        files = rng.choice(small, size=int(rng.integers(5, 30)), replace=False)
        p0 = float(rng.uniform(0.15, 0.85))
        groups.append((files, p0, p0 if rng.random() < 0.7 else float(rng.choice([0.05, 0.95]))))
    big = np.flatnonzero(img.sizes >= 50e6)
    rare = np.concatenate([rng.choice(small, size=20, replace=False), big[:1]])
    late = rng.choice(np.arange(n), size=40, replace=False)
    return _Behaviour(core, groups, rare, late, int(rng.integers(n_runs // 3, 2 * n_runs // 3 + 1)), float(rng.uniform(1, 6)))


def _remap(beh: _Behaviour, mapping: np.ndarray) -> _Behaviour:
    return _Behaviour(mapping[beh.core], [(mapping[f], a, b) for f, a, b in beh.groups], mapping[beh.rare],
                      mapping[beh.late], beh.drift_at, beh.gap_ms)


def _run_rows(rng: np.random.Generator, img: _Image, beh: _Behaviour, k: int, complete: bool):
    parts = [beh.core]
    for files, p0, p1 in beh.groups:
        if rng.random() < (p0 if k < beh.drift_at else p1):
            parts.append(files)
    parts.append(beh.rare[rng.random(len(beh.rare)) < 0.05])
    files = np.concatenate(parts)
    _, first = np.unique(files, return_index=True)
    files = files[np.sort(first)]
    # Start-up order: the base order with local jitter (threads, lazily imported modules).
    order = np.argsort(np.arange(len(files)) + rng.normal(0, 3, len(files)))
    files = files[order]
    gaps = rng.exponential(beh.gap_ms * 1e6, len(files)) * rng.lognormal(0, 0.15)
    first_ns = np.cumsum(gaps).astype(np.int64) + int(5e6)
    ready_ns = int(first_ns[-1] + rng.exponential(20e6))
    late = beh.late[rng.random(len(beh.late)) < 0.9]
    late = late[~np.isin(late, files)]
    late_ns = ready_ns + np.cumsum(rng.exponential(10e6, len(late))).astype(np.int64)
    all_files = np.concatenate([files, late])
    all_ns = np.concatenate([first_ns, late_ns])
    if not complete:  # early exit: the trace stops part-way, before ready
        cut = int(rng.integers(1, max(2, len(files))))
        all_files, all_ns, ready_ns = all_files[:cut], all_ns[:cut], None
    execd = img.modes[all_files] == 0o755
    kinds = np.where(execd, "exec,open,read", "open,read")
    return all_files, all_ns, kinds, ready_ns


def generate(spec: SynthSpec = SynthSpec()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, accesses, inventory) DataFrames in the trace schema, from the parametric model."""
    rng = np.random.default_rng(spec.seed)
    runs: list[dict] = []
    acc: list[pd.DataFrame] = []
    images: list[_Image] = []
    for i in range(spec.images):
        img = _make_image(rng, i, spec.files_per_image)
        images.append(img)
        libs = np.flatnonzero(np.char.find(img.paths.astype(str), ".so.") >= 0)
        shared_core = rng.choice(libs, size=min(40, len(libs)), replace=False)
        v2 = _bump_version(rng, img) if (i == 0 and spec.new_version_runs > 0) else None
        if v2 is not None:
            images.append(v2)
        for s in range(spec.services_per_image):
            service = f"img{i}-svc{s}"
            beh = _behaviour(rng, img, shared_core, spec.runs_per_service)
            total = spec.runs_per_service + spec.incomplete_per_service
            incomplete = set(rng.choice(np.arange(2, total), size=spec.incomplete_per_service, replace=False).tolist())
            plan = [(img, beh)] * total
            if v2 is not None and s == 0:
                plan += [(v2, _remap(beh, np.arange(len(img.paths))))] * spec.new_version_runs
            for k, (im, bh) in enumerate(plan):
                complete = k not in incomplete
                files, ns, kinds, ready = _run_rows(rng, im, bh, k, complete)
                run_id = f"{service}-{k:04d}-{rng.integers(1 << 30):08x}"
                started = _T0 + pd.Timedelta(hours=6 * k + s, minutes=int(rng.integers(0, 60)))
                runs.append(_run_record(run_id, service, im, started, ready, complete))
                acc.append(pd.DataFrame({
                    "run_id": run_id, "path": im.paths[files], "seq": np.arange(len(files), dtype=np.int32),
                    "first_ns": ns, "kinds": kinds, "opens": np.ones(len(files), np.int32),
                    "size": im.sizes[files], "from_image": True,
                }))
    inv = pd.concat([
        pd.DataFrame({"image_digest": im.digest, "path": im.paths, "size": im.sizes, "type": "f",
                      "link_target": None, "mode": im.modes})
        for im in images
    ], ignore_index=True)
    return _conform(pd.DataFrame(runs), RUNS), _conform(pd.concat(acc, ignore_index=True), ACCESSES), _conform(inv, INVENTORY)


def _run_record(run_id: str, service: str, im: _Image, started: pd.Timestamp, ready: int | None, complete: bool) -> dict:
    rec = {
        "run_id": run_id, "service": service, "namespace": "default", "pod": service, "pod_uid": run_id,
        "container": service, "container_id": run_id, "image_ref": im.ref, "image_ref_normalized": im.ref,
        "image_digest": im.digest, "node": "synthetic", "started_at": started,
        "ended_at": started + pd.Timedelta(seconds=30), "end_reason": "stop" if complete else "exit",
        "exit_code": 0 if complete else 1, "ready_ns": ready, "ready_source": "marker" if complete else "none",
        "window_ns": int(30e9), "complete": complete, "events": 0,
        "agent_version": SYNTHETIC_AGENT_VERSION, "schema_version": SCHEMA_VERSION,
    }
    for f in RUN_FLAGS:
        rec[f"flag_{f}"] = (f == "early_exit") and not complete
    return rec


def _conform(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False).to_pandas()


def write_corpus(root: Path, runs: pd.DataFrame, accesses: pd.DataFrame, inventory: pd.DataFrame) -> Path:
    """Write the three tables as root/traces/{runs,accesses,inventory}.parquet; returns root."""
    base = Path(root) / "traces"
    base.mkdir(parents=True, exist_ok=True)
    for name, df, schema in (("runs", runs, RUNS), ("accesses", accesses, ACCESSES), ("inventory", inventory, INVENTORY)):
        pq.write_table(pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False), base / f"{name}.parquet")
    return Path(root)


def scale_up(runs: pd.DataFrame, accesses: pd.DataFrame, target_rows: int, seed: int = 0,
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resample a corpus's runs with jitter into replica services until accesses reach target_rows.

    Each replica service `svc~rN` gets its own bootstrap of the original service's runs, in a new time
    order, with each run's timeline stretched by a random factor and 2 % of its rows dropped. Images
    (and so the inventory) are shared with the originals.
    """
    rng = np.random.default_rng(seed)
    runs = runs.reset_index(drop=True)
    acc_by_run = {k: g for k, g in accesses.groupby("run_id", sort=False)}
    by_service = [(s, g) for s, g in runs.groupby("service", sort=True)]
    new_runs, new_acc = [], []
    rows = 0
    r = 0
    # Whole replica services only, so each keeps ≥ 2 runs and ≥ 1 complete run, as validation demands.
    while rows < target_rows:
        for service, g in by_service:
            if rows >= target_rows:
                break
            pick = g.iloc[rng.integers(0, len(g), len(g))].copy()
            if not pick["complete"].any():
                pick.iloc[0] = g.loc[g["complete"]].iloc[0]
            pick = pick.sort_values("started_at", kind="stable")
            for i, (_, row) in enumerate(pick.iterrows()):
                nid = f"{row['run_id']}~r{r}-{i}"
                a = acc_by_run.get(row["run_id"])
                if a is None:
                    a = accesses.iloc[0:0]
                stretch = rng.lognormal(0, 0.1)
                a = a[rng.random(len(a)) >= 0.02].copy()
                a["run_id"] = nid
                a["first_ns"] = (a["first_ns"].to_numpy() * stretch).astype(np.int64)
                rows += len(a)
                new_acc.append(a)
                rec = row.copy()
                rec["run_id"] = nid
                rec["service"] = f"{service}~r{r}"
                rec["started_at"] = rec["started_at"] + pd.Timedelta(seconds=i)
                if pd.notna(rec["ready_ns"]):
                    rec["ready_ns"] = int(rec["ready_ns"] * stretch)
                rec["agent_version"] = SYNTHETIC_AGENT_VERSION
                new_runs.append(rec)
        r += 1
    out_runs = pd.DataFrame(new_runs).reset_index(drop=True)
    return _conform(out_runs, RUNS), _conform(pd.concat(new_acc, ignore_index=True), ACCESSES)


def parametric_rows(target_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A parametric corpus of at least target_rows accesses: more images and services, same model,
    trimmed to whole services just past the target."""
    base = generate(SynthSpec(seed=seed))
    per_service = len(base[1]) / base[0]["service"].nunique()
    images = max(3, int(np.ceil(1.15 * target_rows / per_service / 3)))
    runs, acc, inv = generate(SynthSpec(images=images, services_per_image=3, seed=seed))
    per = acc.merge(runs[["run_id", "service"]], on="run_id").groupby("service", sort=True).size()
    cum = per.cumsum()
    keep = cum.index[: int(np.searchsorted(cum.to_numpy(), target_rows)) + 1]
    runs = runs.loc[runs["service"].isin(keep)].reset_index(drop=True)
    acc = acc.loc[acc["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    return runs, acc, inv.loc[inv["image_digest"].isin(runs["image_digest"])].reset_index(drop=True)
