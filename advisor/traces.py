"""Load and validate a trace corpus into pandas: the schema is checked once, here, at the edge.

A corpus is a directory holding three tables (runs, accesses, inventory), each either `NAME.parquet`
or a directory `NAME/` of Parquet files, directly in the given directory or in its `traces/`
subdirectory. Anything wrong raises TraceError with a one-line message; nothing past this module
needs to re-check types, nulls, paths or run counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agent.trace.schema import ACCESSES, INVENTORY, RUNS

log = logging.getLogger(__name__)

TABLES = ("runs", "accesses", "inventory")
_SCHEMAS = {"runs": RUNS, "accesses": ACCESSES, "inventory": INVENTORY}

# The columns the advisor reads. Others in the schema are carried along when present.
REQUIRED = {
    "runs": ("run_id", "service", "image_digest", "started_at", "ready_ns", "complete"),
    "accesses": ("run_id", "path", "first_ns", "size"),
    "inventory": ("image_digest", "path", "size", "type"),
}
# Optional columns and the value they take when a table lacks them.
DEFAULTS = {
    "runs": {"image_ref_normalized": None, "flag_overflow": False, "flag_early_exit": False,
             "flag_late_attach": False, "flag_agent_restart": False, "flag_runtime_restart": False,
             "window_ns": None, "agent_version": None},
    "accesses": {"seq": None, "kinds": "", "from_image": True, "opens": 1},
    "inventory": {"mode": 0, "link_target": None},
}


class TraceError(Exception):
    """The corpus cannot be used; str(error) is a one-line reason fit for a user."""


@dataclass(frozen=True)
class Corpus:
    runs: pd.DataFrame  # one row per usable run, sorted by (service, started_at)
    accesses: pd.DataFrame  # one row per file per run, image files only, with `before_ready`
    inventory: pd.DataFrame  # every entry of each image digest (symlinks too: lists resolve through them)
    notes: list[str] = field(default_factory=list)  # logged rejections (dropped rows and why)

    @property
    def files(self) -> pd.DataFrame:
        """Regular files of the inventory."""
        return self.inventory.loc[self.inventory["type"] == "f"]

    @property
    def synthetic(self) -> bool:
        return bool((self.runs.get("agent_version") == "synthetic").any())


def find_table(root: Path, name: str) -> Path:
    for base in (root / "traces", root):
        for cand in (base / f"{name}.parquet", base / name):
            if cand.exists():
                return cand
    raise TraceError(f"no {name} table under {root} (looked for {name}.parquet or {name}/ in {root}/traces and {root})")


def read_table(path: Path, name: str) -> pa.Table:
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise TraceError(f"{name}: directory {path} holds no .parquet files")
    parts = []
    for f in files:
        try:
            parts.append(pq.read_table(f))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise TraceError(f"{name}: cannot read {f}: corrupt or truncated Parquet ({_one_line(exc)})") from None
    try:
        return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    except pa.ArrowException as exc:
        raise TraceError(f"{name}: files under {path} have incompatible schemas ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def conform(table: pa.Table, name: str) -> pd.DataFrame:
    """Check required columns, cast to the schema's types, reject non-UTF-8 text; return pandas."""
    missing = [c for c in REQUIRED[name] if c not in table.column_names]
    if missing:
        raise TraceError(f"{name}: missing column(s) {', '.join(missing)}")
    schema = _SCHEMAS[name]
    cols = {}
    for col in schema.names:
        if col not in table.column_names:
            continue
        arr = table.column(col)
        want = schema.field(col).type
        try:
            if pa.types.is_string(want):
                if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)
                        or pa.types.is_large_binary(arr.type) or pa.types.is_dictionary(arr.type)):
                    raise TraceError(f"{name}.{col}: expected text, found {arr.type}")
                if pa.types.is_dictionary(arr.type):
                    arr = arr.cast(arr.type.value_type)
                if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
                    arr = arr.cast(pa.string())  # validates UTF-8
                arr.validate(full=True)  # Parquet readers do not check UTF-8 in string columns
            arr = arr.cast(want)
        except TraceError:
            raise
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            what = "non-UTF-8 text" if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower() else _one_line(exc)
            raise TraceError(f"{name}.{col}: {what}") from None
        cols[col] = arr
    df = pa.table(cols).to_pandas()
    for col, default in DEFAULTS[name].items():
        if col not in df.columns:
            df[col] = default
    for col in REQUIRED[name]:
        if col in ("ready_ns",):
            continue
        nulls = df[col].isna()
        if name == "accesses" and col == "size" and "from_image" in df.columns:
            # A file the run created and removed has no size left to read; such rows are runtime
            # files, which validate() drops anyway.
            nulls &= df["from_image"].fillna(True).astype(bool)
        nulls = int(nulls.sum())
        if nulls and not (name == "runs" and col == "image_digest"):
            raise TraceError(f"{name}.{col}: {nulls} null value(s)")
    return df


def _check_paths(df: pd.DataFrame, name: str, key: str) -> None:
    rel = ~df["path"].str.startswith("/")
    if rel.any():
        row = df.loc[rel].iloc[0]
        raise TraceError(f"{name}: relative path {row['path']!r} ({key} {row[key]}); paths must be absolute, as in the image")


def load_corpus(root: str | Path) -> Corpus:
    root = Path(root)
    if not root.is_dir():
        raise TraceError(f"{root} is not a directory (give the corpus directory, e.g. data/)" if root.exists()
                         else f"corpus directory {root} does not exist")
    frames = {name: conform(read_table(find_table(root, name), name), name) for name in TABLES}
    return validate(frames["runs"], frames["accesses"], frames["inventory"])


def validate(runs: pd.DataFrame, accesses: pd.DataFrame, inventory: pd.DataFrame) -> Corpus:
    """Semantic checks on conformed tables; returns the cleaned corpus or raises TraceError."""
    notes: list[str] = []
    if runs.empty:
        raise TraceError("runs: table is empty")
    if inventory.empty:
        raise TraceError("inventory: table is empty; the advisor needs each image's file list")
    dup = runs["run_id"].duplicated()
    if dup.any():
        raise TraceError(f"runs: duplicate run_id {runs.loc[dup, 'run_id'].iloc[0]!r}")
    _check_paths(accesses, "accesses", "run_id")
    _check_paths(inventory, "inventory", "image_digest")
    if (accesses["first_ns"] < 0).any():
        raise TraceError("accesses.first_ns: negative time")

    no_digest = runs["image_digest"].isna() | (runs["image_digest"] == "")
    if no_digest.any():
        notes.append(f"dropped {int(no_digest.sum())} run(s) without an image digest")
        runs = runs.loc[~no_digest]
    runs = runs.copy()
    # A run flagged complete without a ready time cannot label "before ready": treat it as incomplete.
    bad_ready = runs["complete"] & runs["ready_ns"].isna()
    if bad_ready.any():
        notes.append(f"{int(bad_ready.sum())} complete run(s) lack ready_ns; treated as incomplete")
        runs.loc[bad_ready, "complete"] = False

    counts = runs.groupby("service").agg(n=("run_id", "size"), complete=("complete", "sum"))
    single = counts.index[counts["n"] < 2]
    if len(single):
        raise TraceError(f"service {single[0]!r} has a single run; the advisor needs at least 2 runs per service")
    never = counts.index[counts["complete"] == 0]
    if len(never):
        raise TraceError(f"service {never[0]!r} has no complete run (all {int(counts.loc[never[0], 'n'])} incomplete)")

    inv_images = set(inventory["image_digest"].unique())
    missing_inv = sorted(set(runs["image_digest"]) - inv_images)
    if missing_inv:
        raise TraceError(f"inventory: image {missing_inv[0]} has an empty inventory")

    orphan = ~accesses["run_id"].isin(runs["run_id"])
    if orphan.any():
        notes.append(f"dropped {int(orphan.sum())} access row(s) of unknown or dropped runs")
        accesses = accesses.loc[~orphan]
    runtime = ~accesses["from_image"].astype(bool)
    if runtime.any():
        notes.append(f"ignored {int(runtime.sum())} access row(s) to runtime-created files (from_image=false)")
        accesses = accesses.loc[~runtime]

    runs = runs.sort_values(["service", "started_at", "run_id"], kind="stable").reset_index(drop=True)
    accesses = accesses.merge(runs[["run_id", "ready_ns", "complete"]], on="run_id", how="left", validate="many_to_one")
    # Incomplete runs without a ready time: everything they traced happened before they stopped.
    ready = accesses["ready_ns"].astype("float64").fillna(np.inf).to_numpy()
    accesses["before_ready"] = accesses["first_ns"].to_numpy() <= ready
    if accesses["seq"].isna().any():
        accesses["seq"] = accesses.groupby("run_id")["first_ns"].rank(method="first").astype("int32") - 1
    accesses = accesses.drop(columns=["ready_ns", "complete"]).reset_index(drop=True)
    inventory = inventory.reset_index(drop=True)
    for n in notes:
        log.info("corpus_note note=%r", n)
    return Corpus(runs=runs, accesses=accesses, inventory=inventory, notes=notes)


def summary(corpus: Corpus) -> dict:
    r = corpus.runs
    per_service = r.groupby("service")["complete"].sum()
    incomplete = r.loc[~r["complete"]]
    return {
        "images": int(r["image_digest"].nunique()),
        "services": int(r["service"].nunique()),
        "runs": int(len(r)),
        "complete_runs": int(r["complete"].sum()),
        "incomplete_runs": int(len(incomplete)),
        "min_complete_runs_per_service": int(per_service.min()),
        "access_rows": int(len(corpus.accesses)),
        "inventory_files": int(len(corpus.files)),
        "synthetic": corpus.synthetic,
        "per_service": {
            svc: {"images": int(g["image_digest"].nunique()), "runs": int(len(g)), "complete_runs": int(g["complete"].sum())}
            for svc, g in r.groupby("service")
        },
        "notes": list(corpus.notes),
    }
