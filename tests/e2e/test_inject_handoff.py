"""The agent hands prefetch lists to a (fake) nydus-snapshotter at RunPodSandbox, on a real
containerd driven by real crictl, and never lets the hand-off fail or delay a pod.

The snapshotter's system socket is testbed/fake_snapshotter.py, which follows the upstream contract
(PUT /api/v1/prefetch, JSON array of {image, prefetch}, 200, last writer wins, one use, entries lost
on restart) and records every request with its wall-clock time.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from advisor.lists import ListStore, PrefetchList
from testbed.fake_snapshotter import PREFETCH_PATH, FakeSnapshotter, RecordedRequest
from testbed.images import BUSYBOX_IMAGE, PAUSE_IMAGE
from tests.e2e.agent_harness import RunningAgent, container_cfg, pod_cfg, wait_for

pytestmark = pytest.mark.e2e

A_LIST = ["/data/a.txt", "/opt/app/run.sh"]
B_LIST = ["/bin/busybox"]


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture
def sock_dir(tmp_path: Path):
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp paths can be longer.
    d = Path("/tmp") / f"pa-e2e-{abs(hash(str(tmp_path))) % 10**8}"
    d.mkdir(exist_ok=True)
    yield d
    for p in d.iterdir():
        p.unlink(missing_ok=True)
    d.rmdir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_agent(testbed, tmp_path: Path, sock: Path, metrics_port: int = 0) -> RunningAgent:
    extra = f"metrics_port = {metrics_port}\n" if metrics_port else ""
    return RunningAgent(testbed, tmp_path / "state", snapshotter_socket=sock, agent_config=extra)  # started by `with`


def metric(port: int, name: str, labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def write_pod_yaml(path: Path, name: str, annotations: dict[str, str]) -> Path:
    """The seed's workflow: a pod yaml with the annotation, run with `crictl runp`."""
    doc = pod_cfg(name, labels={"app": name}, annotations=annotations)
    path.write_text(yaml.safe_dump(doc))
    return path


def created_at_ns(testbed, ctr_id: str) -> int:
    status = testbed.container_status(ctr_id)["status"]
    created = status["createdAt"]
    if isinstance(created, (int, float)) or str(created).isdigit():
        return int(created)
    # RFC 3339 with nanoseconds, e.g. 2026-12-03T19:30:01.123456789Z
    head, _, frac = created.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return int(base) * 10**9 + int((frac + "000000000")[:9])


def body(put: RecordedRequest) -> list[dict[str, str]]:
    return json.loads(put.body)


def assert_valid_list_file(path: str, agent: RunningAgent, expected: list[str]) -> None:
    p = Path(path)
    assert p.parent == agent.state_dir / "lists"  # the agent's own list dir, nothing else
    plist = PrefetchList.read(p)
    assert plist.valid
    assert list(plist.entries) == expected
    assert p.read_text(encoding="utf-8") == "".join(e + "\n" for e in expected)


# ---------------------------------------------------------------------------------- tests


def test_upstream_annotation_put_before_any_container_is_created(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"
    with FakeSnapshotter(sock) as fake, make_agent(testbed, tmp_path, sock) as agent:
        # A list file in the allow-listed directory (the agent's own list dir), named by upstream's key.
        src = agent.state_dir / "lists" / "hand-made.list"
        src.write_text("\n".join(A_LIST) + "\n")
        annotation = json.dumps([{"image": "testbed/busybox:1", "prefetch": str(src)}])
        pod_yaml = write_pod_yaml(tmp_path / "pod.yaml", "handoff", {"containerd.io/nydus-prefetch": annotation})
        pod_id = testbed.run_pod(pod_yaml)
        runp_returned_ns = time.time_ns()
        ctr = testbed.create_container(pod_id, container_cfg("app", ["/opt/app/run.sh"], image=BUSYBOX_IMAGE))
        testbed.start(ctr)
        assert testbed.wait_exit(ctr) == 0  # the pod works

        puts = fake.prefetch_puts()
        assert len(puts) == 1, [(p.body, p.epoch) for p in puts] + [agent.log_text()[-4000:]]
        (put,) = puts
        assert (put.method, put.path, put.status) == ("PUT", PREFETCH_PATH, 200)
        (entry,) = body(put)
        assert set(entry) == {"image", "prefetch"}
        assert entry["image"] == "docker.io/testbed/busybox:1"  # normalised, as the CRI image-ref label
        # We PUT our own validated copy, never the annotation's file itself.
        assert entry["prefetch"] != str(src)
        assert_valid_list_file(entry["prefetch"], agent, A_LIST)
        assert put.wall_ns < runp_returned_ns
        assert put.wall_ns < created_at_ns(testbed, ctr)
        assert "source=upstream" in agent.log_text()


def test_pods_a_and_b_get_their_own_lists(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"
    with FakeSnapshotter(sock) as fake, make_agent(testbed, tmp_path, sock) as agent:
        pod_a = testbed.run_pod(write_pod_yaml(tmp_path / "a.yaml", "poda", {
            "prefetch-advisor.io/images": BUSYBOX_IMAGE, "prefetch-advisor.io/list": json.dumps(A_LIST)}))
        pod_b = testbed.run_pod(write_pod_yaml(tmp_path / "b.yaml", "podb", {
            "prefetch-advisor.io/images": PAUSE_IMAGE, "prefetch-advisor.io/list": "\n".join(B_LIST)}))
        ctr_a = testbed.create_container(pod_a, container_cfg("app", ["/opt/app/run.sh"], image=BUSYBOX_IMAGE))
        testbed.start(ctr_a)
        assert testbed.wait_exit(ctr_a) == 0

        put_a, put_b = fake.prefetch_puts()
        assert [e["image"] for e in body(put_a)] == [BUSYBOX_IMAGE]
        assert [e["image"] for e in body(put_b)] == [PAUSE_IMAGE]
        assert_valid_list_file(body(put_a)[0]["prefetch"], agent, A_LIST)
        assert_valid_list_file(body(put_b)[0]["prefetch"], agent, B_LIST)
        assert put_b.wall_ns < created_at_ns(testbed, ctr_a)
        # What the snapshotter would hand nydusd for A's image, after B's PUT: still A's list.
        path_a = fake.consume(BUSYBOX_IMAGE)
        assert path_a == body(put_a)[0]["prefetch"]
        assert Path(path_a).read_text() == "".join(e + "\n" for e in A_LIST)
        assert fake.consume(BUSYBOX_IMAGE) is None  # one use
        assert fake.entries == {PAUSE_IMAGE: body(put_b)[0]["prefetch"]}


def test_learned_list_from_the_store_is_put_for_the_next_pod(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"
    with FakeSnapshotter(sock) as fake, make_agent(testbed, tmp_path, sock) as agent:
        # First pod of the workload: no list yet; the agent learns which image it runs.
        pod1 = testbed.run_pod(pod_cfg("learnme-0", labels={"app": "learnme"}))
        ctr = testbed.create_container(pod1, container_cfg("app", ["/opt/app/run.sh"], image=BUSYBOX_IMAGE))
        testbed.start(ctr)
        assert testbed.wait_exit(ctr) == 0
        runs = agent.wait_runs(lambda r: len(r) == 1 and r.image_digest.notna().all(), 30, "the first run")
        service, digest = runs.service.iloc[0], runs.image_digest.iloc[0]
        assert service == "default/learnme/app"
        assert fake.prefetch_puts() == []

        # The advisor stores a list while the agent runs: picked up without a restart.
        ListStore(agent.state_dir / "advisor").put(service, digest, PrefetchList(A_LIST), {"entries": []})
        testbed.run_pod(pod_cfg("learnme-1", labels={"app": "learnme"}))
        (put,) = fake.wait_for_puts(1, timeout_s=5)
        (entry,) = body(put)
        assert entry["image"] == BUSYBOX_IMAGE
        assert_valid_list_file(entry["prefetch"], agent, A_LIST)
        assert "source=learned" in agent.log_text()


def test_socket_absent_pod_runs_and_failure_is_logged_and_counted(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"  # never created
    port = free_port()
    with make_agent(testbed, tmp_path, sock, metrics_port=port) as agent:
        pod = testbed.run_pod(write_pod_yaml(tmp_path / "p.yaml", "nosock", {
            "prefetch-advisor.io/images": BUSYBOX_IMAGE, "prefetch-advisor.io/list": json.dumps(A_LIST)}))
        ctr = testbed.create_container(pod, container_cfg("app", ["/opt/app/run.sh"], image=BUSYBOX_IMAGE))
        testbed.start(ctr)
        assert testbed.wait_exit(ctr) == 0
        wait_for(lambda: "event=snapshotter_put_failed" in agent.log_text(), 5, "the failure log line")
        line = next(ln for ln in agent.log_text().splitlines() if "event=snapshotter_put_failed" in ln)
        assert "reason=absent" in line and BUSYBOX_IMAGE in line
        assert metric(port, "prefetch_agent_snapshotter_put_failures_total", 'reason="absent"') >= 1
        assert metric(port, "prefetch_agent_snapshotter_puts_total", 'outcome="failed"') >= 1


def _time_pod_start(testbed, tmp_path: Path, name: str) -> float:
    t0 = time.monotonic()
    pod = testbed.run_pod(write_pod_yaml(tmp_path / f"{name}.yaml", name, {
        "prefetch-advisor.io/images": BUSYBOX_IMAGE, "prefetch-advisor.io/list": json.dumps(A_LIST)}))
    ctr = testbed.create_container(pod, container_cfg("app", ["/bin/sleep", "30"], image=BUSYBOX_IMAGE))
    testbed.start(ctr)
    took = time.monotonic() - t0
    assert testbed.container_status(ctr)["status"]["state"] == "CONTAINER_RUNNING"
    return took


def test_socket_hangs_pod_still_starts_in_normal_time(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"
    fake = FakeSnapshotter(sock).start()
    try:
        with make_agent(testbed, tmp_path, sock) as agent:
            normal = min(_time_pod_start(testbed, tmp_path, f"normal{i}") for i in range(2))
            fake.restart(mode="hang")
            hung = _time_pod_start(testbed, tmp_path, "hung")
            # The agent waits 200 ms for the PUT, then fails open; containerd's NRI budget is 2 s.
            assert hung < normal + 0.6, (hung, normal)
            assert fake.requests[-1].status is None  # the PUT reached the hanging socket
            wait_for(lambda: "event=snapshotter_put_pending" in agent.log_text(), 5, "the pending log line")
            assert "event=inject_over_budget" not in agent.log_text()
    finally:
        fake.stop()


def test_snapshotter_restart_between_pods_list_is_sent_again(testbed, tmp_path, sock_dir):
    sock = sock_dir / "system.sock"
    annotations = {"prefetch-advisor.io/images": BUSYBOX_IMAGE, "prefetch-advisor.io/list": json.dumps(A_LIST)}
    with FakeSnapshotter(sock) as fake, make_agent(testbed, tmp_path, sock) as agent:
        testbed.run_pod(write_pod_yaml(tmp_path / "r1.yaml", "restart1", annotations))
        (first,) = fake.wait_for_puts(1)
        fake.restart()  # every entry lost, new socket file
        assert fake.entries == {}
        # The agent notices the new socket and sends what it sent recently again ...
        wait_for(lambda: fake.entries.get(BUSYBOX_IMAGE), 5, "the entry to be sent again after the restart")
        # ... and a later pod that needs the list gets it sent again too.
        testbed.run_pod(write_pod_yaml(tmp_path / "r2.yaml", "restart2", annotations))
        puts = fake.wait_for_puts(3)
        assert [p.epoch for p in puts] == [0, 1, 1]
        assert all(body(p) == body(first) for p in puts)
        assert_valid_list_file(body(first)[0]["prefetch"], agent, A_LIST)
        assert "event=snapshotter_restarted" in agent.log_text()
