"""The testbed itself: real containerd + runc + crictl, pods from local images, clean teardown."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from testbed import images
from testbed.containerd import (K8S_NAMESPACE, Testbed, _all_pids, _cmdline, _mount_points_under,
                                _pid_alive)
from testbed.oci import ImageConfig, build_image_archive
from testbed.paths import REPO_DIR

pytestmark = pytest.mark.e2e

PODS_DIR = REPO_DIR / "testbed" / "pods"


def _state(tb: Testbed, ctr_id: str) -> str:
    return tb.container_status(ctr_id)["status"]["state"]


def _cgroup_dirs_named(name: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/{name}") if p.exists()]


def test_seed_workflow_runp_create_start_stop_rm(testbed: Testbed, tmp_path: Path) -> None:
    """The user's workflow with the example yaml files and plain crictl subcommands."""
    # The example files as users run them, except that the pod's log directory moves to this
    # test's own tmp dir: concurrent sessions on one machine must not share a log file.
    example = __import__("yaml").safe_load((PODS_DIR / "pod.yaml").read_text())
    assert example["linux"]["security_context"]["namespace_options"]["network"] == 2
    text = (PODS_DIR / "pod.yaml").read_text().replace(example["log_directory"],
                                                         str(tmp_path / "logs"))
    pod_yaml = tmp_path / "pod.yaml"
    pod_yaml.write_text(text)
    ctr_yaml = PODS_DIR / "container.yaml"
    pod_id = testbed.crictl("runp", str(pod_yaml)).stdout.strip()
    assert testbed.crictl("inspectp", "-o", "go-template", "--template",
                          "{{.status.state}}", pod_id).stdout.strip() == "SANDBOX_READY"
    ctr_id = testbed.crictl("create", pod_id, str(ctr_yaml), str(pod_yaml)).stdout.strip()
    assert _state(testbed, ctr_id) == "CONTAINER_CREATED"
    testbed.start(ctr_id)
    assert testbed.wait_exit(ctr_id, timeout=30) == 0
    # run.sh ends by echoing this; everything else it does goes to /dev/null or /tmp.
    assert testbed.logs(ctr_id) == "run.sh done\n"
    testbed.crictl("stop", ctr_id)
    testbed.crictl("rm", ctr_id)
    assert ctr_id not in testbed.containers()
    testbed.crictl("stopp", pod_id)
    testbed.crictl("rmp", pod_id)
    assert pod_id not in testbed.pods()


def test_container_output_and_exit_code(testbed: Testbed) -> None:
    pod_id, ctr_id = testbed.run_container(
        {"metadata": {"name": "exitcode"}},
        {"metadata": {"name": "c"}, "image": images.BUSYBOX_IMAGE,
         "command": ["/bin/sh", "-c", "cat /data/a.txt; echo to-stderr >&2; exit 7"]})
    assert testbed.wait_exit(ctr_id, timeout=30) == 7
    out = testbed.logs(ctr_id)
    assert out.startswith(images.BUSYBOX_DATA_FILES["/data/a.txt"].decode())
    assert "to-stderr" in out
    pod = testbed.crictl("inspectp", "-o", "json", pod_id).stdout
    assert '"network": "NODE"' in pod  # host network, no CNI
    assert testbed.nri_socket.is_socket(), "NRI must be enabled and listening"


def test_running_container_can_be_stopped_and_removed(testbed: Testbed) -> None:
    pod_id, ctr_id = testbed.run_container(
        {"metadata": {"name": "sleeper"}},
        {"metadata": {"name": "s"}, "image": images.BUSYBOX_IMAGE,
         "command": ["/bin/sleep", "3600"]})
    assert _state(testbed, ctr_id) == "CONTAINER_RUNNING"
    pid = testbed.container_pid(ctr_id)
    assert _pid_alive(pid)
    assert testbed.exec(ctr_id, "cat", "/data/b.txt").stdout == \
        images.BUSYBOX_DATA_FILES["/data/b.txt"].decode()
    testbed.stop(ctr_id, timeout=0)
    assert _state(testbed, ctr_id) == "CONTAINER_EXITED"
    assert not _pid_alive(pid)
    testbed.remove(ctr_id)
    testbed.remove_pod(pod_id)
    assert testbed.pods() == []


def test_local_image_keeps_links_and_ownership(testbed: Testbed, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(images.BUSYBOX_BIN, rootfs / "bin" / "busybox")
    for applet in ("sh", "stat", "readlink", "cat"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "srv").mkdir()
    (rootfs / "srv" / "owned").write_text("x")
    os.chown(rootfs / "srv" / "owned", 1234, 2345)
    (rootfs / "srv" / "one").write_text("same inode")
    os.link(rootfs / "srv" / "one", rootfs / "srv" / "two")
    (rootfs / "srv" / "sym").symlink_to("one")
    built = build_image_archive("docker.io/testbed/links:1", rootfs, tmp_path / "links.tar",
                                ImageConfig(cmd=["/bin/sh"]))
    testbed.import_image(built)
    listed = testbed.crictl("images", "--digests", "-o", "json").stdout
    assert "docker.io/testbed/links:1" in listed
    script = ("stat -c '%u:%g' /srv/owned; "
              "[ $(stat -c %i /srv/one) = $(stat -c %i /srv/two) ] && echo hardlink; "
              "readlink /srv/sym; cat /srv/sym")
    _, ctr_id = testbed.run_container(
        {"metadata": {"name": "links"}},
        {"metadata": {"name": "l"}, "image": "docker.io/testbed/links:1",
         "command": ["/bin/sh", "-c", script]})
    assert testbed.wait_exit(ctr_id) == 0
    assert testbed.logs(ctr_id) == "1234:2345\nhardlink\none\nsame inode"


def test_containerd_kill_and_restart_keeps_containers(fresh_testbed: Testbed) -> None:
    tb = fresh_testbed
    _, ctr_id = tb.run_container(
        {"metadata": {"name": "survivor"}},
        {"metadata": {"name": "s"}, "image": images.BUSYBOX_IMAGE,
         "command": ["/bin/sleep", "3600"]})
    pid = tb.container_pid(ctr_id)
    old_containerd = tb.containerd_pid
    tb.kill_containerd()
    assert tb.containerd_pid is None and old_containerd is not None
    assert not _pid_alive(old_containerd)
    assert _pid_alive(pid), "the container must outlive containerd (its shim keeps it)"
    tb.start_containerd()
    assert tb.containerd_pid not in (None, old_containerd)
    assert _state(tb, ctr_id) == "CONTAINER_RUNNING"
    assert tb.container_pid(ctr_id) == pid


def test_teardown_leaves_no_mounts_processes_or_cgroups() -> None:
    tb = Testbed().up()
    d = tb.dir
    sock = str(tb.cri_socket)
    _, ctr_id = tb.run_container(
        {"metadata": {"name": "teardown"}},
        {"metadata": {"name": "t"}, "image": images.BUSYBOX_IMAGE,
         "command": ["/bin/sleep", "3600"]})
    ctr_pid = tb.container_pid(ctr_id)
    containerd_pid = tb.containerd_pid
    cgroup_parent = tb.cgroup_parent.lstrip("/")
    assert _mount_points_under(d), "a running pod has its rootfs and shm mounted under the dir"
    assert _cgroup_dirs_named(cgroup_parent)
    # Leave something behind on purpose: kill containerd so down() must clean up by itself.
    tb.kill_containerd()
    tb.down()
    assert not d.exists()
    assert _mount_points_under(d) == []
    assert containerd_pid is not None and not _pid_alive(containerd_pid)
    assert not _pid_alive(ctr_pid)
    # Processes come and go while we look (other sessions run): _cmdline tolerates that.
    shims = [p for p in _all_pids() if sock in _cmdline(p)]
    assert shims == []
    assert _cgroup_dirs_named(cgroup_parent) == []
    assert _cgroup_dirs_named(f"{K8S_NAMESPACE}/{ctr_id}") == []
    tb.down()  # idempotent


def test_two_instances_are_isolated(fresh_testbed: Testbed, testbed_factory) -> None:
    other = testbed_factory()
    assert other.dir != fresh_testbed.dir
    pod_id = fresh_testbed.run_pod({"metadata": {"name": "only-here"}})
    assert pod_id in fresh_testbed.pods()
    assert other.pods() == []


def test_startup_is_fast_enough_for_a_session_fixture() -> None:
    # Not a benchmark: a guard that one instance comes up in seconds, not minutes.
    t0 = time.monotonic()
    with Testbed() as tb:
        assert tb.crictl("version").returncode == 0
    assert time.monotonic() - t0 < 30


def test_instance_of_a_dead_owner_is_reaped(tmp_path: Path) -> None:
    # A process brings a testbed up and dies without down(), like a killed test session.
    import subprocess
    import sys

    code = ("import os, sys; from testbed.containerd import Testbed; "
            "tb = Testbed(base_dir=sys.argv[1]).up(); print(tb.dir, tb.containerd_pid, "
            "flush=True); os._exit(0)")
    base = Path("/run/prefetch-testbed") / f"reap-{os.getpid()}"
    out = subprocess.run([sys.executable, "-c", code, str(base)], capture_output=True,
                         text=True, timeout=60, cwd=REPO_DIR, check=True).stdout.split()
    d, containerd_pid = Path(out[0]), int(out[1])
    try:
        assert d.is_dir() and _pid_alive(containerd_pid)
        from testbed.containerd import reap_stale_instances

        assert reap_stale_instances(base) == [d]
        assert not d.exists()
        assert not _pid_alive(containerd_pid)
        assert _mount_points_under(d) == []
    finally:
        if d.exists():
            Testbed.attach(d).down()
        base.rmdir()


def test_cli_up_status_down(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "TESTBED_STATE_FILE": str(tmp_path / "state.json")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                              text=True, timeout=120, cwd=REPO_DIR, env=env)

    up = cli("up")
    assert up.returncode == 0, up.stderr
    state = __import__("json").loads((tmp_path / "state.json").read_text())
    try:
        assert "crictl" in up.stdout and state["cri_socket"] in up.stdout
        assert _pid_alive(state["containerd_pid"])
        again = cli("up")  # idempotent: the same instance
        assert again.returncode == 0 and "already up" in again.stdout
        status = cli("status")
        assert status.returncode == 0 and "POD ID" in status.stdout
        env_out = cli("env").stdout
        assert f"CONTAINER_RUNTIME_ENDPOINT=unix://{state['cri_socket']}" in env_out
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not Path(state["dir"]).exists()
    assert not _pid_alive(state["containerd_pid"])
    assert cli("status").returncode == 1
