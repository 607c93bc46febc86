"""The agent, run as a process, traces real pods on a real containerd through NRI and fanotify."""

from __future__ import annotations

import time

import pytest

from tests.e2e.agent_harness import RunningAgent, container_cfg, pod_cfg, wait_for

pytestmark = pytest.mark.e2e

READER_SERVICE = "default/tracedemo/reader"
TRACE_CONFIG = (
    "[trace]\nmin_run_s = 0\nquiescence_s = 0.5\ninventory_quiet_s = 0.5\n"
    f'[readiness."{READER_SERVICE}"]\nmarker = "/tmp/out.txt"\n'
)
# What /opt/app/run.sh of the testbed busybox image does (testbed/images.py): the kernel execs the
# script, then its interpreter (/bin/sh -> busybox), which reads a.txt and b.txt, runs /bin/ls
# (busybox again) and writes /tmp/out.txt.
READER_FILES = ["/opt/app/run.sh", "/bin/busybox", "/data/a.txt", "/data/b.txt"]
WRITER_COMMAND = ["/bin/sh", "-c",
                  "cat /opt/app/config.ini /data/c.bin > /dev/null; echo hi > /tmp/new.txt; echo wrote; exec /bin/sleep 30"]
WRITER_FILES = ["/bin/busybox", "/opt/app/config.ini", "/data/c.bin"]


@pytest.fixture
def agent(testbed, tmp_path):
    with RunningAgent(testbed, tmp_path / "state", TRACE_CONFIG) as running:
        yield running


def test_two_containers_of_one_image_are_traced_as_independent_runs(testbed, agent):
    pod_id = testbed.run_pod(pod_cfg("tracedemo", labels={"app": "tracedemo"}))
    reader = testbed.create_container(pod_id, container_cfg("reader", ["/opt/app/run.sh"]))
    writer = testbed.create_container(pod_id, container_cfg("writer", WRITER_COMMAND))
    testbed.start(reader)
    testbed.start(writer)
    assert testbed.wait_exit(reader) == 0
    wait_for(lambda: "wrote" in testbed.logs(writer), 10, "the writer to write its file")
    time.sleep(1.0)  # quiescence readiness needs quiescence_s (0.5 s) without a new file
    testbed.stop(writer)

    runs = agent.wait_runs(lambda r: len(r) == 2, 30, "two finished runs")
    accesses = agent.accesses()
    by_service = runs.set_index("service")
    assert set(by_service.index) == {READER_SERVICE, "default/tracedemo/writer"}
    assert runs.run_id.nunique() == 2
    assert set(runs.container_id) == {reader, writer}
    for service, expected, created in [
        (READER_SERVICE, READER_FILES, "/tmp/out.txt"),
        ("default/tracedemo/writer", WRITER_FILES, "/tmp/new.txt"),
    ]:
        run = by_service.loc[service]
        mine = accesses[accesses.run_id == run.run_id].sort_values("seq")
        image_files = mine[mine.from_image].path.tolist()
        assert image_files == expected, service
        assert mine.first_ns.is_monotonic_increasing
        assert mine[mine.path == created].from_image.tolist() == [False]
        assert "exec" in mine.iloc[0].kinds  # the entrypoint's first exec was seen
        assert run.image_ref_normalized == "docker.io/testbed/busybox:1"
        assert run.image_digest.startswith("sha256:")
        assert run.node == "testbed-node" and run.pod == "tracedemo"
        assert bool(run.complete)
    sizes = dict(zip(accesses.path, accesses["size"]))
    assert sizes["/data/c.bin"] == 65536 and sizes["/data/a.txt"] == 40
    assert by_service.loc[READER_SERVICE].ready_source == "marker"
    assert by_service.loc["default/tracedemo/writer"].ready_source == "quiescence"
    # The inventory of the image is taken once, off the handler path, when no start has come for a while.
    digest = runs.image_digest.iloc[0]
    wait_for(lambda: agent.store().has_inventory(digest), 15, "the image inventory")
    inventory = agent.store().read_inventory()
    assert set(inventory.image_digest) == {runs.image_digest.iloc[0]}
    assert {"/data/a.txt", "/opt/app/run.sh", "/bin/busybox"} <= set(inventory.path)


def test_containerd_restart_reregisters_and_marks_inflight_run_incomplete(fresh_testbed, tmp_path):
    tb = fresh_testbed
    with RunningAgent(tb, tmp_path / "state", TRACE_CONFIG) as agent:
        pod_id = tb.run_pod(pod_cfg("longrun", labels={"app": "longrun"}))
        ctr = tb.create_container(pod_id, container_cfg("app", ["/bin/sh", "-c", "cat /data/a.txt; exec sleep 60"]))
        tb.start(ctr)
        wait_for(lambda: "trace_run_started" in agent.log_text(), 10, "the run to start")

        tb.kill_containerd()
        wait_for(lambda: "event=nri_disconnected" in agent.log_text(), 10, "the agent to see EOF")
        tb.start_containerd()
        agent.wait_registered(timeout=30)
        assert agent.proc.poll() is None

        # The run in flight across the outage keeps recording (the tracer does not need containerd)
        # but can no longer be called complete: events may have been missed while disconnected.
        tb.stop(ctr)
        runs = agent.wait_runs(lambda r: len(r) == 1, 20, "the in-flight run to be written")
        assert not bool(runs.iloc[0].complete)
        assert bool(runs.iloc[0].flag_runtime_restart)
        assert not bool(runs.iloc[0].flag_late_attach)  # not re-attached as a second run at Synchronize

        pod2 = tb.run_pod(pod_cfg("after", labels={"app": "after"}))
        ctr2 = tb.create_container(pod2, container_cfg("app", ["/bin/sh", "-c", "cat /data/b.txt"]))
        tb.start(ctr2)
        assert tb.wait_exit(ctr2) == 0
        runs = agent.wait_runs(lambda r: (r.service == "default/after/app").any(), 20, "the next pod's run")
        after = runs[runs.service == "default/after/app"].iloc[0]
        acc = agent.accesses()
        assert "/data/b.txt" in acc[acc.run_id == after.run_id].path.tolist()
        assert not bool(after.flag_runtime_restart)
