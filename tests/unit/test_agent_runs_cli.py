"""`prefetch-agent runs <state_dir>`: one line per recorded run, flags spelled out."""

import json
from datetime import datetime, timezone

from agent.cli import show_runs
from agent.store import TraceStore
from agent.trace import schema


def _run(run_id: str, **flags: bool) -> dict:
    run = {name: None for name in schema.RUNS.names}
    run.update({f"flag_{f}": False for f in schema.RUN_FLAGS})
    run.update({f"flag_{f}": v for f, v in flags.items()})
    run.update(run_id=run_id, service="default/demo/main", image_ref_normalized="docker.io/testbed/busybox:1",
               started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), window_ns=1, end_reason="exit",
               ready_source="none", complete=not any(flags.values()))
    return run


def test_runs_lists_each_run_with_its_flags(tmp_path, capsys):
    store = TraceStore(tmp_path)
    store.write_run(_run("early", early_exit=True, late_attach=True),
                    [{"run_id": "early", "path": "/bin/sh", "seq": 0, "first_ns": 1, "kinds": "exec",
                      "opens": 1, "size": 1, "from_image": True}])
    store.write_run(_run("clean"), [])
    assert show_runs(tmp_path, as_json=True) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["early"]["flags"] == "late_attach,early_exit"  # in schema.RUN_FLAGS order
    assert rows["early"]["files"] == 1 and rows["early"]["complete"] is False
    assert rows["clean"]["flags"] == "-" and rows["clean"]["files"] == 0
    assert show_runs(tmp_path, as_json=False) == 0
    text = capsys.readouterr().out
    assert "flags" in text.splitlines()[0] and "early_exit" in text


def test_runs_without_traces_is_one_line_and_exit_1(tmp_path, capsys):
    assert show_runs(tmp_path / "nothing", as_json=False) == 1
    assert capsys.readouterr().err.strip() == f"prefetch-agent: no traces under {tmp_path / 'nothing'}"
