"""Run finalisation: quiescence readiness, flags, completeness, and the rows written."""

import time

import pytest

from agent.trace import schema
from agent.trace.finalise import agent_restart_run, build_run, merged_files, quiescence_ready_ns
from agent.trace.model import Readiness, RunMeta, TraceConfig
from agent.trace.mounts import ContainerRoot
from agent.trace.recorder import KIND_EXEC, KIND_OPEN, KIND_READ, RunRecorder, kinds_string

MS = 1_000_000


def test_quiescence_takes_the_last_new_file_before_the_first_gap():
    assert quiescence_ready_ns([0, 10 * MS, 20 * MS, 900 * MS, 910 * MS], end_ns=5000 * MS, gap_ns=500 * MS) == 20 * MS
    # the gap may run to the end of the run
    assert quiescence_ready_ns([0, 10 * MS], end_ns=600 * MS, gap_ns=500 * MS) == 10 * MS
    # no gap before the end: never quiet, so not ready
    assert quiescence_ready_ns([0, 10 * MS], end_ns=400 * MS, gap_ns=500 * MS) is None
    assert quiescence_ready_ns([], end_ns=10**12, gap_ns=1) is None
    assert quiescence_ready_ns([30 * MS, 0, 10 * MS], end_ns=31 * MS, gap_ns=15 * MS) == 10 * MS  # unordered input


def test_kinds_string_is_sorted_and_comma_joined():
    assert kinds_string(KIND_READ | KIND_EXEC | KIND_OPEN) == "exec,open,read"
    assert kinds_string(KIND_OPEN) == "open"
    assert kinds_string(0) == ""


def _meta(readiness=None) -> RunMeta:
    return RunMeta(run_id="r", service="ns/w/c", namespace="ns", pod="p", pod_uid="u", container="c",
                   container_id="cid", image_ref="img", image_ref_normalized="docker.io/library/img:latest",
                   node="n", readiness=readiness)


def _rec(files, *, end_after_ms: int, reason: str, readiness=None, flags=()) -> RunRecorder:
    rec = RunRecorder(_meta(readiness), 1, -1, -1, start_ns=1000 * MS, started_at_ns=1_700_000_000 * 10**9,
                      window_ns=60 * 10**9, clock=time.monotonic_ns)
    rec.attach_root(ContainerRoot(dev="0:1", fstype="overlay", upperdir=None, host_mount_points=(b"/host/rootfs",)))
    rec.files = {}
    for raw, first_ms, kinds, opens, size, seq in files:
        rec.files[raw] = [first_ms * MS, seq, kinds, opens, size, True, raw]
    rec.end_ns = rec.start_ns + end_after_ms * MS
    rec.end_reason = reason
    rec.flags.update(flags)
    return rec


def _build(rec, gap_ms=500, min_run_ms=200):
    return build_run(rec, gap_ns=gap_ms * MS, min_run_ns=min_run_ms * MS, agent_version="9.9", wall_now_ns=0)


def test_build_run_rows_follow_the_schema():
    rec = _rec([(b"/bin/sh", 1, KIND_EXEC | KIND_OPEN, 1, 100, 0), (b"/etc/conf", 5, KIND_OPEN | KIND_READ, 3, 10, 1)],
               end_after_ms=3000, reason="window")
    run, acc = _build(rec)
    assert set(run) == set(schema.RUNS.names)
    assert acc.schema == schema.ACCESSES
    assert acc.column("path").to_pylist() == ["/bin/sh", "/etc/conf"]
    assert acc.column("kinds").to_pylist() == ["exec,open", "open,read"]
    assert acc.column("opens").to_pylist() == [1, 3]
    assert run["ready_ns"] == 5 * MS and run["ready_source"] == "quiescence"
    assert run["complete"] and not any(run[f"flag_{f}"] for f in schema.RUN_FLAGS)
    assert run["ended_at"] - run["started_at"] == 3000 * MS
    assert run["schema_version"] == schema.SCHEMA_VERSION and run["agent_version"] == "9.9"


def test_same_file_seen_from_host_and_container_is_one_row():
    rec = _rec([(b"/etc/conf", 5, KIND_OPEN, 1, 10, 1), (b"/host/rootfs/etc/conf", 2, KIND_READ, 2, 10, 0)],
               end_after_ms=3000, reason="stop")
    for r in rec.files.values():
        r[6] = rec.normalise(r[6])
    rows = merged_files(rec)
    assert len(rows) == 1
    assert rows[0][0] == 2 * MS and rows[0][2] == KIND_OPEN | KIND_READ and rows[0][3] == 3


@pytest.mark.parametrize(
    "end_ms, reason, flags, readiness, early, complete",
    [
        (3000, "exit", (), None, False, True),  # ready by quiescence, then exited: fine
        (100, "exit", (), None, True, False),  # exited before any quiet gap: early exit
        (3000, "exit", (), Readiness(marker="/ready"), True, False),  # marker never seen
        (3000, "stop", ("overflow",), None, False, False),
        (3000, "window", ("late_attach",), None, False, False),
        (3000, "agent_shutdown", (), None, False, False),
    ],
)
def test_flags_and_completeness(end_ms, reason, flags, readiness, early, complete):
    rec = _rec([(b"/bin/sh", 1, KIND_EXEC, 1, 100, 0)], end_after_ms=end_ms, reason=reason, readiness=readiness, flags=flags)
    run, _ = _build(rec)
    assert run["flag_early_exit"] is early
    assert run["complete"] is complete
    for f in flags:
        assert run[f"flag_{f}"]


def test_agent_restart_run_from_a_journal_entry():
    run, acc = agent_restart_run({"run_id": "x", "service": "s", "started_at": 5, "late_attach": True}, "1.0")
    assert set(run) == set(schema.RUNS.names)
    assert run["flag_agent_restart"] and run["flag_late_attach"] and not run["complete"]
    assert run["end_reason"] == "agent_restart" and acc.num_rows == 0


def test_trace_config_from_mapping_rejects_bad_input_with_one_line():
    assert TraceConfig.from_mapping({"window_s": 30, "quiescence_s": 1}).window_s == 30.0
    with pytest.raises(ValueError, match="unknown keys"):
        TraceConfig.from_mapping({"windows": 3})
    with pytest.raises(ValueError, match="window_s must be a number"):
        TraceConfig.from_mapping({"window_s": "60"})
    with pytest.raises(ValueError, match="must be > 0"):
        TraceConfig.from_mapping({"window_s": 0})


def test_readiness_validation():
    assert Readiness.from_mapping({"probe": ["wget", "-q", "http://127.0.0.1/"]}).probe == ("wget", "-q", "http://127.0.0.1/")
    with pytest.raises(ValueError):
        Readiness(marker="relative/path")
    with pytest.raises(ValueError):
        Readiness(marker="/a", probe=("true",))
    with pytest.raises(ValueError):
        Readiness.from_mapping({"probe": "wget -q"})


def test_marker_renamed_into_place_before_a_quick_exit_is_found_in_the_upper_dir(tmp_path):
    import os

    upper = tmp_path / "upper"
    (upper / "tmp").mkdir(parents=True)
    rec = _rec([(b"/bin/sh", 1, KIND_EXEC | KIND_OPEN, 1, 100, 0)], end_after_ms=40, reason="exit",
               readiness=Readiness(marker="/tmp/ready"))
    rec.attach_root(ContainerRoot(dev="0:1", fstype="overlay", upperdir=os.fsencode(upper), host_mount_points=()))
    run, _ = _build(rec)
    assert run["ready_ns"] is None and run["ready_source"] == "none"  # no marker: not ready
    marker = upper / "tmp" / "ready"
    marker.write_text("ok")
    written = rec.started_at_ns + 25 * MS
    os.utime(marker, ns=(written, written))
    run, _ = _build(rec, min_run_ms=0)
    assert (run["ready_ns"], run["ready_source"]) == (25 * MS, "marker")
    assert run["complete"] and not run["flag_early_exit"]
