import os
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from agent.store import TraceStore
from agent.trace import schema


def _run(run_id: str) -> dict:
    return {
        "run_id": run_id,
        "service": "default/web/app",
        "container": "app",
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "complete": True,
        "window_ns": 60_000_000_000,
        **{f"flag_{f}": False for f in schema.RUN_FLAGS},
    }


def _accesses(run_id: str) -> list[dict]:
    return [
        {"run_id": run_id, "path": "/bin/sh", "seq": 0, "first_ns": 10, "kinds": "exec,open",
         "opens": 1, "size": 100, "from_image": True},
        {"run_id": run_id, "path": "/tmp/x", "seq": 1, "first_ns": 20, "kinds": "open",
         "opens": 2, "size": 0, "from_image": False},
    ]


def test_write_and_read_back_runs_and_accesses(tmp_path):
    store = TraceStore(tmp_path)
    store.write_run(_run("r1"), _accesses("r1"))
    store.write_run(_run("r2"), _accesses("r2")[:1])
    runs = store.read_runs()
    acc = store.read_accesses()
    assert sorted(runs.run_id) == ["r1", "r2"]
    assert (runs.schema_version == schema.SCHEMA_VERSION).all()
    assert len(acc) == 3
    assert acc[acc.run_id == "r1"].sort_values("seq").path.tolist() == ["/bin/sh", "/tmp/x"]
    assert str(runs.started_at.dt.tz) == "UTC"


def test_survives_a_new_store_instance(tmp_path):
    TraceStore(tmp_path).write_run(_run("r1"), _accesses("r1"))
    assert TraceStore(tmp_path).run_ids() == ["r1"]


def test_orphan_accesses_without_committed_run_are_ignored(tmp_path):
    store = TraceStore(tmp_path)
    table = pa.Table.from_pylist(_accesses("ghost"), schema=schema.ACCESSES)
    import pyarrow.parquet as pq
    pq.write_table(table, store.accesses_dir / "ghost.parquet")
    store.write_run(_run("r1"), _accesses("r1"))
    assert set(store.read_accesses().run_id) == {"r1"}


def test_failed_write_leaves_no_file_and_no_temp(tmp_path):
    store = TraceStore(tmp_path)
    bad = _accesses("r1")
    bad[0]["opens"] = "not a number"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        store.write_run(_run("r1"), bad)
    assert store.run_ids() == []
    assert os.listdir(store.accesses_dir) == []


def test_inflight_journal_roundtrip(tmp_path):
    store = TraceStore(tmp_path)
    store.begin_inflight({"run_id": "r9", "service": "s"})
    assert [r["run_id"] for r in TraceStore(tmp_path).recover_inflight()] == ["r9"]
    store.write_run(_run("r9"), [])
    assert store.recover_inflight() == []


def test_store_keys_cannot_escape(tmp_path):
    store = TraceStore(tmp_path)
    store.write_inventory("sha256:../../etc", [])
    assert store.has_inventory("sha256:../../etc")
    assert not (tmp_path.parent / "etc.parquet").exists()
    assert len(list(store.inventory_dir.iterdir())) == 1


def test_recent_images_oldest_first_and_only_with_refs(tmp_path):
    store = TraceStore(tmp_path)
    late = {**_run("r2"), "started_at": datetime(2026, 1, 2, tzinfo=timezone.utc),
            "image_ref_normalized": "docker.io/x/b:1", "image_digest": "sha256:b"}
    early = {**_run("r1"), "image_ref_normalized": "docker.io/x/a:1", "image_digest": None}
    store.write_run(late, [])
    store.write_run(early, [])
    store.write_run({**_run("r3"), "image_ref_normalized": ""}, [])
    assert store.recent_images() == [
        ("default/web/app", "docker.io/x/a:1", None),
        ("default/web/app", "docker.io/x/b:1", "sha256:b"),
    ]
