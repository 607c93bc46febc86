"""advisor.traces: the corpus is loaded once and every kind of bad input is a one-line TraceError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advisor.synth import SynthSpec, generate, write_corpus
from advisor.traces import TraceError, load_corpus, summary


@pytest.fixture(scope="module")
def tables():
    return generate(SynthSpec.small())


def _write(tmp_path, runs, acc, inv):
    return write_corpus(tmp_path, runs, acc, inv)


def _error(root) -> str:
    with pytest.raises(TraceError) as ei:
        load_corpus(root)
    msg = str(ei.value)
    assert "\n" not in msg and msg
    return msg


def test_loads_a_valid_corpus_and_summarises_it(tmp_path, tables):
    runs, acc, inv = tables
    c = load_corpus(_write(tmp_path, runs, acc, inv))
    s = summary(c)
    assert s["services"] == runs["service"].nunique()
    assert s["runs"] == len(runs)
    assert s["complete_runs"] == int(runs["complete"].sum())
    assert s["images"] == runs["image_digest"].nunique()
    assert s["min_complete_runs_per_service"] == int(runs.groupby("service")["complete"].sum().min())
    assert s["synthetic"] is True
    # before_ready is derived from each run's ready time.
    merged = c.accesses.merge(c.runs[["run_id", "ready_ns"]], on="run_id")
    expect = merged["first_ns"] <= merged["ready_ns"].astype("float64").fillna(np.inf)
    assert (merged["before_ready"] == expect).all()


def test_accepts_a_directory_of_parquet_files_per_table(tmp_path, tables):
    runs, acc, inv = tables
    base = tmp_path / "traces"
    for name, df in (("runs", runs), ("accesses", acc), ("inventory", inv)):
        (base / name).mkdir(parents=True)
        half = len(df) // 2
        pq.write_table(pa.Table.from_pandas(df.iloc[:half], preserve_index=False), base / name / "part-0.parquet")
        pq.write_table(pa.Table.from_pandas(df.iloc[half:], preserve_index=False), base / name / "part-1.parquet")
    c = load_corpus(tmp_path)
    assert len(c.runs) == len(runs)
    assert len(c.accesses) == len(acc)


def test_truncated_parquet_is_a_one_line_error(tmp_path, tables):
    root = _write(tmp_path, *tables)
    f = root / "traces" / "accesses.parquet"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated Parquet" in _error(root)


def test_garbage_parquet_is_a_one_line_error(tmp_path, tables):
    root = _write(tmp_path, *tables)
    (root / "traces" / "runs.parquet").write_bytes(b"not parquet at all" * 10)
    assert "runs" in _error(root)


def test_missing_column(tmp_path, tables):
    runs, acc, inv = tables
    root = _write(tmp_path, runs, acc, inv)
    pq.write_table(pa.Table.from_pandas(acc.drop(columns=["first_ns"]), preserve_index=False), root / "traces" / "accesses.parquet")
    msg = _error(root)
    assert "missing column" in msg and "first_ns" in msg


def test_relative_path_in_trace(tmp_path, tables):
    runs, acc, inv = tables
    acc = acc.copy()
    acc.loc[5, "path"] = "usr/lib/relative.so"
    msg = _error(_write(tmp_path, runs, acc, inv))
    assert "relative path" in msg and "usr/lib/relative.so" in msg


def test_non_utf8_path_in_binary_column(tmp_path, tables):
    runs, acc, inv = tables
    root = _write(tmp_path, runs, acc, inv)
    t = pa.Table.from_pandas(acc, preserve_index=False)
    paths = [p.encode() for p in acc["path"]]
    paths[3] = b"/usr/lib/bad\xff.so"
    t = t.set_column(t.schema.get_field_index("path"), "path", pa.array(paths, pa.binary()))
    pq.write_table(t, root / "traces" / "accesses.parquet")
    assert "non-UTF-8" in _error(root)


def test_non_utf8_path_in_string_column(tmp_path, tables):
    """Parquet readers do not validate UTF-8 in string columns; the loader must."""
    runs, acc, inv = tables
    root = _write(tmp_path, runs, acc, inv)
    body = b"/ok/a/bad\xff/"
    arr = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 5, 11], np.int32).tobytes()), pa.py_buffer(body)])
    pq.write_table(pa.table({"image_digest": pa.array(["d", "d"]), "path": arr, "size": pa.array([1, 2], pa.int64()),
                             "type": pa.array(["f", "f"])}), root / "traces" / "inventory.parquet")
    assert "non-UTF-8" in _error(root)


def test_service_with_a_single_run(tmp_path, tables):
    runs, acc, inv = tables
    lone = runs.iloc[[0]].copy()
    lone["run_id"], lone["service"] = "lone-run", "lonely"
    msg = _error(_write(tmp_path, pd.concat([runs, lone], ignore_index=True), acc, inv))
    assert "'lonely'" in msg and "single run" in msg


def test_service_whose_runs_are_all_incomplete(tmp_path, tables):
    runs, acc, inv = tables
    runs = runs.copy()
    victim = runs["service"].iloc[0]
    runs.loc[runs["service"] == victim, "complete"] = False
    msg = _error(_write(tmp_path, runs, acc, inv))
    assert repr(victim) in msg and "no complete run" in msg


def test_empty_inventory(tmp_path, tables):
    runs, acc, inv = tables
    assert "empty" in _error(_write(tmp_path, runs, acc, inv.iloc[0:0]))


def test_image_without_inventory_rows(tmp_path, tables):
    runs, acc, inv = tables
    gone = runs["image_digest"].iloc[0]
    msg = _error(_write(tmp_path, runs, acc, inv.loc[inv["image_digest"] != gone]))
    assert gone in msg and "empty inventory" in msg


def test_missing_corpus_directory(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope")


def test_missing_table(tmp_path, tables):
    root = _write(tmp_path, *tables)
    (root / "traces" / "inventory.parquet").unlink()
    assert "no inventory table" in _error(root)


def test_runtime_created_files_and_orphans_are_dropped_with_a_note(tmp_path, tables):
    runs, acc, inv = tables
    acc = acc.copy()
    acc.loc[:9, "from_image"] = False
    orphan = acc.iloc[[20]].copy()
    orphan["run_id"] = "no-such-run"
    c = load_corpus(_write(tmp_path, runs, pd.concat([acc, orphan], ignore_index=True), inv))
    assert len(c.accesses) == len(acc) - 10
    assert any("runtime-created" in n for n in c.notes)
    assert any("unknown or dropped runs" in n for n in c.notes)
