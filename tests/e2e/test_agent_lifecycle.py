"""The agent's own lifecycle on a real containerd: launched by NRI with its config, and restarted mid-run."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agent.store import TraceStore
from tests.e2e.agent_harness import REPO, RunningAgent, container_cfg, pod_cfg, wait_for

pytestmark = pytest.mark.e2e

PLUGIN = "50-prefetch-advisor"


def _pids_with_arg(arg: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmdline:
            found.append(int(entry))
    return found


def test_agent_launched_by_containerd_takes_its_config_through_nri_configure(fresh_testbed, tmp_path):
    tb = fresh_testbed
    state, log_path, file_cfg = tmp_path / "state", tmp_path / "launched.log", tmp_path / "agent.toml"
    # The file sets only where things are; the readiness marker and the trace knobs come only in the
    # NRI drop-in, which containerd reads and sends as Configure's config.
    file_cfg.write_text(f'[agent]\nstate_dir = "{state}"\ncri_socket = "{tb.cri_socket}"\nnode = "launched-node"\n'
                        f'[inject]\nsnapshotter_socket = "{tmp_path / "no-snapshotter.sock"}"\n')
    (tb.dir / "nri-conf.d" / f"{PLUGIN}.conf").write_text(
        '[trace]\nquiescence_s = 0.3\nmin_run_s = 0\n[readiness."default/launched/app"]\nmarker = "/tmp/ready"\n')
    launcher = tb.dir / "nri-plugins" / PLUGIN
    # containerd gives a launched plugin no PATH and no stdout: absolute paths, our own log file.
    launcher.write_text(f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m agent run --config {file_cfg} "
                        f"--log-level DEBUG >> {log_path} 2>&1\n")
    launcher.chmod(0o755)
    log = lambda: log_path.read_text(errors="replace") if log_path.exists() else ""  # noqa: E731
    agents: list[int] = []
    try:
        tb.stop_containerd()
        tb.start_containerd()  # launches every plugin in plugin_path, then Configure with its drop-in
        # containerd 1.7 configures a plugin it launched but never sends it Synchronize (it starts
        # plugins before it restores any container); events follow all the same.
        wait_for(lambda: "event=config_applied source=nri" in log(), 20, "the launched agent to be configured")
        agents = _pids_with_arg(str(file_cfg))
        assert len(agents) == 1, agents
        assert "event=agent_start state_dir=%s nri_socket=launched_by_runtime" % state in log()
        assert "event=nri_registered name=prefetch-advisor idx=50" in log()

        pod = tb.run_pod(pod_cfg("launched", labels={"app": "launched"}))
        ctr = tb.create_container(pod, container_cfg("app", ["/bin/sh", "-c", "cat /data/a.txt; echo > /tmp/ready; sleep 30"]))
        tb.start(ctr)
        wait_for(lambda: "trace_run_started" in log(), 10, "the run to start")
        time.sleep(0.5)
        tb.stop(ctr)
        wait_for(lambda: len(TraceStore(state).read_runs()), 20, "the run to be written")
        run = TraceStore(state).read_runs().iloc[0]
        assert run.ready_source == "marker"  # the per-service readiness that only NRI's config named
        assert run.node == "launched-node" and bool(run.complete)

        # containerd goes away: the inherited connection cannot be redialled, so this agent exits
        # (writing its runs) and the next containerd launches a fresh one.
        tb.stop_containerd()
        wait_for(lambda: all(not Path(f"/proc/{pid}").exists() or
                             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                             for pid in agents), 20, "the launched agent to exit with its runtime")
        assert "event=agent_stopped" in log()
        tb.start_containerd()
        wait_for(lambda: log().count("event=config_applied source=nri") >= 2, 20, "the relaunched agent")
        agents = _pids_with_arg(str(file_cfg))
        assert len(agents) == 1, agents
        assert "Traceback" not in log()
    finally:
        launcher.unlink(missing_ok=True)  # no relaunch by a later containerd start of this testbed
        for pid in agents + _pids_with_arg(str(file_cfg)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_agent_killed_mid_run_flags_the_lost_run_and_late_attaches_the_running_container(testbed, tmp_path):
    state = tmp_path / "state"
    config = "[trace]\nquiescence_s = 0.3\nmin_run_s = 0\n"
    first = RunningAgent(testbed, state, config).start()
    pod = testbed.run_pod(pod_cfg("survives", labels={"app": "survives"}))
    ctr = testbed.create_container(pod, container_cfg("app", ["/bin/sh", "-c", "cat /data/a.txt; exec sleep 60"]))
    testbed.start(ctr)
    wait_for(lambda: "trace_run_started" in first.log_text(), 10, "the first run to start")
    time.sleep(0.3)  # let the in-flight journal entry be written
    first.proc.send_signal(signal.SIGKILL)  # no chance to finish the run: only its journal entry is left
    first.proc.wait(10)
    first._log.close()

    with RunningAgent(testbed, state, config) as second:
        second.wait_registered(count=2)  # both agents log to one file
        runs = second.wait_runs(lambda r: len(r) == 1, 20, "the lost run to be recovered")
        lost = runs.iloc[0]
        assert lost.end_reason == "agent_restart" and bool(lost.flag_agent_restart) and not bool(lost.complete)
        assert lost.container_id == ctr
        # Synchronize reported the container still running: it is traced again, flagged late.
        wait_for(lambda: second.log_text().count("late_attach=True") >= 1, 10, "the late attach")
        testbed.exec(ctr, "cat", "/data/b.txt")
        testbed.stop(ctr)
        runs = second.wait_runs(lambda r: len(r) == 2, 20, "the late-attached run")
        late = runs[runs.run_id != lost.run_id].iloc[0]
        assert late.container_id == ctr and late.service == "default/survives/app"
        assert bool(late.flag_late_attach) and not bool(late.complete)
        paths = second.accesses().query("run_id == @late.run_id").path.tolist()
        assert "/data/b.txt" in paths
        assert "/data/a.txt" not in paths  # read before this agent attached: never claimed
        assert second.proc.poll() is None and "Traceback" not in second.log_text()
