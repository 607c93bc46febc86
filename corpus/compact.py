"""Compact the agent's node-local store into the shipped corpus files (zstd Parquet).

data/traces/runs.parquet       the agent's runs (RUNS schema), corpus pods only
data/traces/accesses.parquet   the agent's accesses (ACCESSES schema) of those runs
data/traces/inventory.parquet  image inventories (INVENTORY schema), from the OCI archives
data/traces/plans.parquet      the driver's side: knobs, intent, image, driver-observed outcome
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agent.store import TraceStore
from agent.trace.schema import ACCESSES, INVENTORY, RUNS
from corpus.services import NAMESPACE

log = logging.getLogger(__name__)

PLANS = pa.schema(
    [
        ("run_id", pa.string()),  # null when the agent recorded no run for the pod
        ("service", pa.string()),
        ("index", pa.int32()),
        ("image", pa.string()),
        ("image_ref", pa.string()),
        ("intent", pa.string()),
        ("pod", pa.string()),
        ("pod_uid", pa.string()),
        ("container_id", pa.string()),
        ("env", pa.string()),  # JSON object of the knobs this run got
        ("started_unix_ns", pa.int64()),
        ("ready_after_s", pa.float64()),  # as the driver saw it (marker polled from the host)
        ("exited", pa.bool_()),
        ("exit_code", pa.int32()),
        ("wall_s", pa.float64()),
        ("error", pa.string()),
    ]
)


def write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd", compression_level=19, use_dictionary=True,
                   row_group_size=256 * 1024)
    tmp.replace(path)


def _table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(df[[f.name for f in schema]], schema=schema, preserve_index=False)


def compact(state_dir: Path, outcomes: list[dict], inventories: list[pa.Table], out: Path) -> dict:
    """Write the corpus files under out/traces; returns counts for the log and the data card."""
    store = TraceStore(state_dir)
    runs = store.read_runs()
    accesses = store.read_accesses()
    plans = pd.DataFrame(outcomes)
    runs = runs[runs.namespace == NAMESPACE].copy()
    # The driver knows what the runtime said about the exit code; the agent records it as unknown.
    by_cid = plans.set_index("container_id")
    known = runs.container_id.isin(by_cid.index)
    codes = runs.loc[known, "container_id"].map(by_cid["exit_code"])
    fill = runs.loc[known, "exit_code"].isna() & codes.notna()
    runs.loc[fill[fill].index, "exit_code"] = codes[fill].astype("int32")
    runs = runs.sort_values(["started_at", "run_id"]).reset_index(drop=True)
    accesses = accesses[accesses.run_id.isin(runs.run_id)]
    accesses = accesses.sort_values(["run_id", "seq"]).reset_index(drop=True)
    run_of_cid = runs.groupby("container_id").run_id.first()
    plans["run_id"] = plans.container_id.map(run_of_cid)
    inv = pa.concat_tables(inventories) if inventories else INVENTORY.empty_table()
    traces = out / "traces"
    write_parquet(_table(runs, RUNS), traces / "runs.parquet")
    write_parquet(_table(accesses, ACCESSES), traces / "accesses.parquet")
    write_parquet(inv.cast(INVENTORY), traces / "inventory.parquet")
    write_parquet(_table(plans, PLANS), traces / "plans.parquet")
    cross = _cross_check_inventories(store, inv)
    sizes = {p.name: p.stat().st_size for p in sorted(traces.glob("*.parquet"))}
    summary = {
        "runs": len(runs), "complete_runs": int(runs.complete.sum()), "accesses": len(accesses),
        "inventory_rows": inv.num_rows, "plans": len(plans),
        "unrecorded_plans": int(plans.run_id.isna().sum()), "bytes": sizes,
        "inventory_agent_vs_archive": cross,
    }
    log.info("compacted %s", json.dumps(summary))
    return summary


def _cross_check_inventories(store: TraceStore, inv: pa.Table) -> dict:
    """Paths the agent's own inventory (overlay lower dirs) and the archive's disagree on, per digest."""
    agent = store.read_inventory()
    ours = inv.to_pandas()
    result = {}
    for digest, group in ours.groupby("image_digest"):
        theirs = agent[agent.image_digest == digest] if not agent.empty else agent
        if theirs.empty:
            result[digest] = "agent took no inventory"
            continue
        a, b = set(theirs.path), set(group.path)
        result[digest] = {"only_agent": len(a - b), "only_archive": len(b - a),
                          "examples": sorted(a ^ b)[:5]}
    return result


def write_inventories(inventories: list[pa.Table], out: Path) -> None:
    inv = pa.concat_tables(inventories) if inventories else INVENTORY.empty_table()
    write_parquet(inv.cast(INVENTORY), out / "traces" / "inventory.parquet")
