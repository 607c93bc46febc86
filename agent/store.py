"""Node-local durable storage of traced runs, their accesses, image inventories and in-flight runs.

Layout under the state directory (documented in docs/trace-schema.md):

    traces/accesses/<run_id>.parquet   one file per run, written first
    traces/runs/<run_id>.parquet       one row per run, written last: its presence commits the run
    traces/inventory/<digest>.parquet  one file per image digest
    inflight/<run_id>.json             runs being recorded; left behind only by an agent that died

Every file is written to a temporary name in the same directory, fsynced and renamed, so a reader
never sees half a file, and a crash leaves at most an orphan accesses file that readers ignore.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (cast() needs it: loaded at start, not during the first run's write)
import pyarrow.parquet as pq

from agent.trace import schema

if TYPE_CHECKING:  # pandas costs the agent ~40 MiB of RSS; only readers of the store need it
    import pandas as pd

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _file_name(key: str) -> str:
    """Map a run id or digest ("sha256:ab..") to a file name that cannot escape its directory."""
    name = _SAFE_NAME.sub("_", key)
    if not name or name in {".", ".."}:
        raise ValueError(f"unusable store key {key!r}")
    return name


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through `write(fileobj)` into a temp file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_table(path: Path, table: pa.Table, compression: str = "zstd") -> None:
    atomic_write(path, lambda f: pq.write_table(table, f, compression=compression))


def _to_table(rows: pa.Table | list[dict[str, Any]], table_schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows.select(table_schema.names).cast(table_schema)
    return pa.Table.from_pylist(rows, schema=table_schema)


class TraceStore:
    """Durable, append-only store of runs on one node. Safe for one writer process."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "traces" / "runs"
        self.accesses_dir = self.root / "traces" / "accesses"
        self.inventory_dir = self.root / "traces" / "inventory"
        self.inflight_dir = self.root / "inflight"
        for d in (self.runs_dir, self.accesses_dir, self.inventory_dir, self.inflight_dir):
            d.mkdir(parents=True, exist_ok=True)

    # runs -------------------------------------------------------------------------------------
    def write_run(self, run: dict[str, Any], accesses: pa.Table | list[dict[str, Any]]) -> None:
        """Commit one finished run. Accesses go first so a visible run always has its accesses."""
        row = {name: run.get(name) for name in schema.RUNS.names}
        row["schema_version"] = schema.SCHEMA_VERSION
        run_table = pa.Table.from_pylist([row], schema=schema.RUNS)
        access_table = _to_table(accesses, schema.ACCESSES)
        name = _file_name(run["run_id"]) + ".parquet"
        _write_table(self.accesses_dir / name, access_table)
        # One row: zstd would save nothing and costs 1.3 ms more per run across its ~30 columns.
        _write_table(self.runs_dir / name, run_table, compression="none")
        self.end_inflight(run["run_id"])

    def run_ids(self) -> list[str]:
        return sorted(p.stem for p in self.runs_dir.glob("*.parquet"))

    def read_runs(self) -> "pd.DataFrame":
        return _read_dir(self.runs_dir, schema.RUNS)

    def read_accesses(self) -> "pd.DataFrame":
        # Only accesses of committed runs: an orphan file from a crash mid-commit is ignored.
        committed = {p.name for p in self.runs_dir.glob("*.parquet")}
        files = [p for p in sorted(self.accesses_dir.glob("*.parquet")) if p.name in committed]
        return _read_files(files, schema.ACCESSES)

    # in-flight journal --------------------------------------------------------------------------
    def begin_inflight(self, run: dict[str, Any]) -> None:
        path = self.inflight_dir / (_file_name(run["run_id"]) + ".json")
        payload = json.dumps(run, default=str).encode()
        atomic_write(path, lambda f: f.write(payload))

    def end_inflight(self, run_id: str) -> None:
        try:
            (self.inflight_dir / (_file_name(run_id) + ".json")).unlink()
        except FileNotFoundError:
            pass

    def recover_inflight(self) -> list[dict[str, Any]]:
        """Runs a previous agent process began but never finished; the caller records them."""
        found = []
        for path in sorted(self.inflight_dir.glob("*.json")):
            try:
                found.append(json.loads(path.read_bytes()))
            except (OSError, ValueError) as exc:
                log.warning("event=inflight_unreadable path=%s error=%s", path, exc)
                path.unlink(missing_ok=True)
        return found

    # inventories --------------------------------------------------------------------------------
    def has_inventory(self, image_digest: str) -> bool:
        return (self.inventory_dir / (_file_name(image_digest) + ".parquet")).exists()

    def write_inventory(self, image_digest: str, table: pa.Table | list[dict[str, Any]]) -> None:
        _write_table(
            self.inventory_dir / (_file_name(image_digest) + ".parquet"),
            _to_table(table, schema.INVENTORY),
        )

    def read_inventory(self) -> "pd.DataFrame":
        return _read_dir(self.inventory_dir, schema.INVENTORY)


    def recent_images(self) -> list[tuple[str, str, str | None]]:
        """(service, normalised image ref, digest) of every stored run, oldest first, without pandas."""
        files = sorted(self.runs_dir.glob("*.parquet"))
        if not files:
            return []
        columns = ["started_at", "service", "image_ref_normalized", "image_digest"]
        table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        # As int64: without pandas, pyarrow cannot turn a nanosecond timestamp into a Python object.
        started = table.column("started_at").cast(pa.int64()).to_pylist()
        rows = sorted(zip(started, *(table.column(c).to_pylist() for c in columns[1:])), key=lambda r: r[0])
        return [(service, ref, digest) for _, service, ref, digest in rows if ref]


def _read_dir(directory: Path, table_schema: pa.Schema) -> "pd.DataFrame":
    return _read_files(sorted(directory.glob("*.parquet")), table_schema)


def _read_files(files: list[Path], table_schema: pa.Schema) -> "pd.DataFrame":
    if not files:
        return table_schema.empty_table().to_pandas()
    tables = [pq.read_table(f, schema=table_schema) for f in files]
    return pa.concat_tables(tables).to_pandas()
