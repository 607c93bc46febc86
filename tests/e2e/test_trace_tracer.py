"""The tracer against real fanotify on a real overlay mount, with processes chrooted into it.

Each test builds an overlay (lower = a tiny image with a static busybox and known data files), forks
a process that chroots into the merged dir and blocks - the state of `runc init` at START_CONTAINER -
calls start_run on it, lets it run a known script, and checks what the real TraceStore received.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.store import TraceStore
from agent.trace import Readiness, RunMeta, TraceConfig, Tracer
from agent.trace import fanotify as fan
from agent.trace.finalise import build_run
from agent.trace.mounts import find_container_root
from agent.trace.recorder import RunRecorder

pytestmark = pytest.mark.e2e

DATA = {"a.txt": 100, "b.txt": 200, "c.bin": 300, "d.txt": 10, "own.txt": 50}


def _busybox() -> str:
    path = shutil.which("busybox")
    if path is None:
        pytest.fail("a static busybox is needed on the host (Debian package busybox or busybox-static)")
    return path


@pytest.fixture
def overlay(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("needs root (mount, fanotify)")
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower / "bin", lower / "data", lower / "tmp", upper, work, merged):
        d.mkdir(parents=True)
    shutil.copy(_busybox(), lower / "bin" / "busybox")
    shutil.copy(_busybox(), lower / "bin" / "true")  # a second, distinct executable
    for name, size in DATA.items():
        (lower / "data" / name).write_bytes(b"x" * (size - 1) + b"\n")
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield {"lower": lower, "upper": upper, "merged": merged}
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)


class Jailed:
    """A process chrooted into `root`, blocked until go(), then exec'ing busybox sh -c script."""

    def __init__(self, root: Path, script: str) -> None:
        r, self._w = os.pipe()
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child: only async-signal-safe-ish os calls until exec
            try:
                os.close(self._w)
                os.close(ready_r)
                os.chroot(root)
                os.chdir("/")
                os.write(ready_w, b"r")  # chrooted: /proc/<pid>/root is the overlay from now on
                os.read(r, 1)
                os.execv("/bin/busybox", ["sh", "-c", script])
            finally:
                os._exit(127)
        os.close(r)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"r", "child could not chroot"
        os.close(ready_r)
        self.status: int | None = None

    def go(self) -> None:
        os.write(self._w, b"x")
        os.close(self._w)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            time.sleep(0.01)
        raise AssertionError("jailed process did not exit")

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()


class Env:
    def __init__(self, tmp_path: Path, config: TraceConfig) -> None:
        self.store = TraceStore(tmp_path / "state")
        self.done: dict[str, threading.Event] = {}
        self.summaries = {}
        self.tracer = Tracer(self.store, config, on_finished=self._finished)

    def _finished(self, s) -> None:
        self.summaries[s.run_id] = s
        self.done.setdefault(s.run_id, threading.Event()).set()

    def wait_run(self, run_id: str, timeout: float = 20):
        ev = self.done.setdefault(run_id, threading.Event())
        assert ev.wait(timeout), f"run {run_id} was not written"
        runs = self.store.read_runs()
        run = runs[runs.run_id == run_id].iloc[0].to_dict()
        acc = self.store.read_accesses()
        acc = acc[acc.run_id == run_id].sort_values("seq")
        return run, acc


@pytest.fixture
def env(tmp_path: Path):
    envs: list[Env] = []

    def make(**cfg) -> Env:
        cfg.setdefault("digest_wait_s", 0)
        e = Env(tmp_path, TraceConfig(**cfg))
        envs.append(e)
        return e

    yield make
    for e in envs:
        e.tracer.close()


def meta(run_id: str, readiness: Readiness | None = None, window_s: float | None = None) -> RunMeta:
    return RunMeta(
        run_id=run_id, service="default/app/main", namespace="default", pod="app-1", pod_uid="uid-1",
        container="main", container_id=f"cid-{run_id}", image_ref="local/app:1",
        image_ref_normalized="local/app:1", node="node-1", readiness=readiness, window_s=window_s,
    )


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fd_baseline() -> int:
    # The tracer's own threads open and close fds (mountinfo, pidfds) at any moment, so one reading
    # can catch a transient one: the baseline is the lowest of a few.
    counts = []
    for _ in range(5):
        counts.append(_fd_count())
        time.sleep(0.02)
    return min(counts)


def _assert_fds_back_to(baseline: int, timeout: float = 5.0) -> None:
    # A leaked fd stays; a transient one goes within the timeout.
    deadline = time.monotonic() + timeout
    while _fd_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _fd_count() <= baseline, sorted(os.listdir("/proc/self/fd"), key=int)


def test_records_exactly_the_files_read_in_order(overlay, env):
    e = env()
    script = (
        "read x < /data/a.txt; read y < /data/b.txt; /bin/true; echo hi > /tmp/new.txt; "
        "read z < /tmp/new.txt; : < /data/c.bin; echo more >> /data/d.txt"
    )
    p = Jailed(overlay["merged"], script)
    assert e.tracer.start_run(meta("order"), p.pid)
    # The agent's own access to an image file must not appear.
    (overlay["merged"] / "data" / "own.txt").read_bytes()
    p.go()
    assert p.wait() == 0
    run, acc = e.wait_run("order")

    assert list(acc.path) == ["/bin/busybox", "/data/a.txt", "/data/b.txt", "/bin/true", "/tmp/new.txt", "/data/c.bin", "/data/d.txt"]
    by = acc.set_index("path")
    assert by.loc["/bin/busybox", "kinds"] == "exec,open,read"
    assert by.loc["/bin/true", "kinds"] == "exec,open,read"
    assert by.loc["/data/a.txt", "kinds"] == "open,read"
    assert by.loc["/data/c.bin", "kinds"] == "open"  # opened, never read
    for name in ("a.txt", "b.txt", "c.bin"):
        assert by.loc[f"/data/{name}", "size"] == DATA[name]
        assert by.loc[f"/data/{name}", "from_image"]
    assert by.loc["/bin/busybox", "size"] == os.path.getsize(_busybox())
    assert not by.loc["/tmp/new.txt", "from_image"]  # created by the container
    assert not by.loc["/data/d.txt", "from_image"]  # modified (copied up) by the container
    assert by.loc["/tmp/new.txt", "opens"] >= 1  # the kernel may merge the two opens while queued
    assert list(acc.seq) == list(range(7))
    assert acc.first_ns.is_monotonic_increasing and acc.first_ns.iloc[0] >= 0
    assert run["end_reason"] == "exit" and run["events"] >= 7
    assert run["container_id"] == "cid-order" and run["service"] == "default/app/main"
    assert run["window_ns"] == 60 * 10**9


def test_window_end_and_quiescence_readiness(overlay, env):
    e = env(quiescence_s=0.5)
    p = Jailed(overlay["merged"], "read x < /data/a.txt; read y < /data/b.txt; /bin/busybox sleep 30")
    assert e.tracer.start_run(meta("window", window_s=2.0), p.pid)
    p.go()
    try:
        run, acc = e.wait_run("window")
    finally:
        p.kill()
    assert run["end_reason"] == "window"
    assert 2.0e9 <= (run["ended_at"] - run["started_at"]).value < 4e9
    # Ready at the first access of the last new file before the quiet gap.
    assert run["ready_source"] == "quiescence"
    last_new = acc[acc.path != "/bin/busybox"].first_ns.max()
    assert run["ready_ns"] == acc.first_ns.max() == last_new
    assert run["complete"] and not run["flag_early_exit"]


def test_marker_readiness_seen_as_created_file(overlay, env):
    e = env()
    script = "read x < /data/a.txt; echo > /tmp/ready; /bin/busybox sleep 0.5; read y < /data/b.txt"
    p = Jailed(overlay["merged"], script)
    assert e.tracer.start_run(meta("marker", readiness=Readiness(marker="/tmp/ready")), p.pid)
    p.go()
    p.wait()
    run, acc = e.wait_run("marker")
    by = acc.set_index("path")
    assert run["ready_source"] == "marker"
    assert by.loc["/data/a.txt", "first_ns"] <= run["ready_ns"] < by.loc["/data/b.txt", "first_ns"]
    assert run["complete"]


def test_marker_readiness_by_polling(overlay, env):
    # mkdir opens nothing, so only the reader's poll of /proc/<pid>/root can see this marker.
    e = env(marker_poll_s=0.02)
    script = "read x < /data/a.txt; /bin/busybox sleep 0.3; /bin/busybox mkdir /tmp/ready; /bin/busybox sleep 0.5; read y < /data/b.txt"
    p = Jailed(overlay["merged"], script)
    assert e.tracer.start_run(meta("poll", readiness=Readiness(marker="/tmp/ready")), p.pid)
    p.go()
    p.wait()
    run, acc = e.wait_run("poll")
    by = acc.set_index("path")
    assert run["ready_source"] == "marker"
    assert 0.3e9 <= run["ready_ns"] < by.loc["/data/b.txt", "first_ns"]


def test_probe_readiness(overlay, env):
    e = env(probe_interval_s=0.05)
    flag = overlay["upper"] / "tmp" / "up"
    script = "read x < /data/a.txt; /bin/busybox sleep 0.5; echo > /tmp/up; /bin/busybox sleep 0.5"
    p = Jailed(overlay["merged"], script)
    probe = Readiness(probe=("test", "-e", str(flag)))
    assert e.tracer.start_run(meta("probe", readiness=probe), p.pid)
    p.go()
    p.wait()
    run, _ = e.wait_run("probe")
    assert run["ready_source"] == "probe"
    assert 0.5e9 <= run["ready_ns"] < (run["ended_at"] - run["started_at"]).value


def test_configured_marker_never_seen_is_not_ready(overlay, env):
    e = env()
    p = Jailed(overlay["merged"], "read x < /data/a.txt; /bin/busybox sleep 0.3")
    assert e.tracer.start_run(meta("nomarker", readiness=Readiness(marker="/tmp/never")), p.pid)
    p.go()
    p.wait()
    run, _ = e.wait_run("nomarker")
    assert run["ready_source"] == "none" and pd_isnull(run["ready_ns"])
    assert run["flag_early_exit"] and not run["complete"]


def pd_isnull(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_fast_exit_is_flagged_early_exit(overlay, env):
    e = env()
    p = Jailed(overlay["merged"], "exit 3")
    assert e.tracer.start_run(meta("fast"), p.pid)
    p.go()
    assert p.wait() == 3
    run, acc = e.wait_run("fast")
    assert run["end_reason"] == "exit"
    assert run["flag_early_exit"] and not run["complete"]
    assert list(acc.path) == ["/bin/busybox"]


def test_stop_run_ends_the_run(overlay, env):
    e = env()
    p = Jailed(overlay["merged"], "read x < /data/a.txt; /bin/busybox sleep 30")
    assert e.tracer.start_run(meta("stop"), p.pid)
    assert e.tracer.is_tracing("cid-stop") and e.tracer.active_runs() == 1
    p.go()
    time.sleep(0.5)
    e.tracer.stop_run("cid-stop")
    try:
        run, acc = e.wait_run("stop")
    finally:
        p.kill()
    assert run["end_reason"] == "stop"
    assert list(acc.path) == ["/bin/busybox", "/data/a.txt"]
    assert e.tracer.active_runs() == 0 and not e.tracer.is_tracing("cid-stop")


def test_late_attach_and_runtime_restart_make_a_run_incomplete(overlay, env):
    e = env()
    p = Jailed(overlay["merged"], "read x < /data/a.txt; /bin/busybox sleep 0.5; read y < /data/b.txt")
    assert e.tracer.start_run(meta("late"), p.pid, late_attach=True)
    p.go()
    time.sleep(0.2)
    e.tracer.runtime_disconnected()
    p.wait()
    run, acc = e.wait_run("late")
    assert run["flag_late_attach"] and run["flag_runtime_restart"] and not run["complete"]
    assert "/data/b.txt" in set(acc.path)  # it kept recording after the runtime went away


def test_digest_arriving_late_and_inventory(overlay, env):
    e = env(digest_wait_s=5, inventory_quiet_s=0.2)
    p = Jailed(overlay["merged"], "read x < /data/a.txt")
    assert e.tracer.start_run(meta("digest"), p.pid)
    # The layers come from the live process's mountinfo: a process gone before the reader's set-up
    # leaves the run without them (and its image without an inventory until another run).
    assert e.tracer.wait_attached("cid-digest", 5)
    p.go()
    p.wait()
    time.sleep(0.3)  # the run has ended; finalisation waits for the digest
    e.tracer.set_image_digest("cid-digest", "sha256:" + "ab" * 32)
    run, _ = e.wait_run("digest")
    assert run["image_digest"] == "sha256:" + "ab" * 32
    _time_to_inventory(e, "sha256:" + "ab" * 32, time.monotonic())
    inv = e.store.read_inventory()
    assert set(inv.path) == {"/bin", "/bin/busybox", "/bin/true", "/data", "/tmp", *(f"/data/{n}" for n in DATA)}
    assert inv.set_index("path").loc["/data/a.txt", "size"] == 100


def _time_to_inventory(e: Env, digest: str, since: float, timeout: float = 15) -> float:
    while not e.store.has_inventory(digest):
        assert time.monotonic() - since < timeout, "no inventory"
        time.sleep(0.05)
    return time.monotonic() - since


def test_inventory_waits_until_no_run_has_started_for_a_while(overlay, env):
    # Walking an image's layers competes with container starts: it waits for a quiet node.
    e = env(inventory_quiet_s=2.0)
    digest = "sha256:" + "cd" * 32
    first = Jailed(overlay["merged"], "read x < /data/a.txt")
    assert e.tracer.start_run(meta("quiet1"), first.pid)
    assert e.tracer.wait_attached("cid-quiet1", 5)
    e.tracer.set_image_digest("cid-quiet1", digest)
    first.go()
    time.sleep(1.0)
    second = Jailed(overlay["merged"], "read x < /data/b.txt")
    assert e.tracer.start_run(meta("quiet2"), second.pid)
    assert e.tracer.wait_attached("cid-quiet2", 5)
    began = time.monotonic()
    second.go()
    assert _time_to_inventory(e, digest, began) >= 1.9
    for p in (first, second):
        p.wait()


def test_inventory_is_taken_after_the_longest_delay_on_a_busy_node(overlay, env):
    e = env(inventory_quiet_s=600, inventory_max_delay_s=1.0)
    digest = "sha256:" + "ce" * 32
    p = Jailed(overlay["merged"], "read x < /data/a.txt")
    assert e.tracer.start_run(meta("busy"), p.pid)
    assert e.tracer.wait_attached("cid-busy", 5)
    began = time.monotonic()
    e.tracer.set_image_digest("cid-busy", digest)
    p.go()
    assert 0.5 <= _time_to_inventory(e, digest, began) < 10
    p.wait()


def test_a_waiting_inventory_does_not_hold_up_close(overlay, env, tmp_path):
    e = env(inventory_quiet_s=600)
    p = Jailed(overlay["merged"], "read x < /data/a.txt")
    assert e.tracer.start_run(meta("closing"), p.pid)
    assert e.tracer.wait_attached("cid-closing", 5)
    e.tracer.set_image_digest("cid-closing", "sha256:" + "cf" * 32)
    p.go()
    p.wait()
    e.wait_run("closing")
    began = time.monotonic()
    e.tracer.close()
    assert time.monotonic() - began < 5
    assert not e.store.has_inventory("sha256:" + "cf" * 32)  # not taken: the next run asks again


def test_agent_restart_recovers_inflight_runs(overlay, env, tmp_path):
    # A previous agent began this run and died: its journal entry is all that is left.
    TraceStore(tmp_path / "state").begin_inflight({
        "run_id": "dead", "service": "default/app/main", "namespace": "default", "pod": "app-1",
        "pod_uid": "uid-1", "container": "main", "container_id": "cid-dead", "image_ref": "local/app:1",
        "image_ref_normalized": "local/app:1", "image_digest": None, "node": "node-1",
        "started_at": time.time_ns(), "window_ns": 60 * 10**9, "late_attach": False,
    })
    e = env()
    deadline = time.monotonic() + 10
    while "dead" not in e.store.run_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    runs = e.store.read_runs().set_index("run_id")
    assert runs.loc["dead", "flag_agent_restart"] and not runs.loc["dead", "complete"]
    assert runs.loc["dead", "end_reason"] == "agent_restart"
    assert e.store.recover_inflight() == []


def test_close_finalises_runs_in_flight_and_leaks_no_fd(overlay, tmp_path):
    store = TraceStore(tmp_path / "state")
    before = _fd_baseline()
    tracer = Tracer(store, TraceConfig(digest_wait_s=5))
    p = Jailed(overlay["merged"], "read x < /data/a.txt; /bin/busybox sleep 30")
    try:
        assert tracer.start_run(meta("shutdown"), p.pid)
        p.go()
        time.sleep(0.3)
        tracer.close()
    finally:
        p.kill()
    runs = store.read_runs().set_index("run_id")
    assert runs.loc["shutdown", "end_reason"] == "agent_shutdown" and not runs.loc["shutdown", "complete"]
    assert store.recover_inflight() == []
    _assert_fds_back_to(before)


def test_start_run_on_a_dead_pid_fails_open(env):
    e = env()
    p = subprocess.Popen(["true"])
    p.wait()
    assert e.tracer.start_run(meta("dead-pid"), p.pid) is False
    assert e.tracer.active_runs() == 0


def test_queue_overflow_is_flagged(overlay):
    """A group with the kernel's bounded queue, flooded while nobody reads, reports FAN_Q_OVERFLOW."""
    limit = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())
    data = overlay["lower"] / "flood"
    data.mkdir()
    n = limit + 2000
    for i in range(n):
        (data / f"f{i}").touch()
    p = Jailed(overlay["merged"], "for f in /flood/*; do : < $f; done")
    group = fan.open_filesystem_group(f"/proc/{p.pid}/root", unlimited_queue=False)
    pidfd = os.pidfd_open(p.pid)
    rec = RunRecorder(meta("overflow"), p.pid, group, pidfd, start_ns=time.monotonic_ns(), started_at_ns=time.time_ns(),
                      window_ns=60 * 10**9, clock=time.monotonic_ns)
    rec.attach_root(find_container_root(p.pid))
    p.go()
    p.wait(120)
    rec.end_ns, rec.end_reason = time.monotonic_ns(), "exit"
    while rec.drain(2048 * fan.EVENT_LEN, 16, os.getpid(), []) or not rec.drained:
        pass
    os.close(group)
    os.close(pidfd)
    assert "overflow" in rec.flags
    # About a queue's worth (the kernel's count includes the overflow record) of the n+ opens.
    assert limit <= rec.events <= limit + 8 < n
    run, _ = build_run(rec, gap_ns=10**9, min_run_ns=0, agent_version="t", wall_now_ns=time.time_ns())
    assert run["flag_overflow"] and not run["complete"]


def test_a_process_in_the_host_root_is_not_traced(env):
    # Marking the node's own root filesystem would record every access on the node.
    e = env()
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert e.tracer.start_run(meta("hostroot"), p.pid)
        assert not e.tracer.wait_attached("cid-hostroot", 5)
        deadline = time.monotonic() + 5
        while e.tracer.is_tracing("cid-hostroot") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not e.tracer.is_tracing("cid-hostroot")
    finally:
        p.kill()
        p.wait()
    e.tracer.close()
    assert "hostroot" not in e.store.run_ids()


def test_bad_meta_fails_open_without_leaking_fds(overlay, env):
    e = env()
    before = _fd_baseline()
    p = Jailed(overlay["merged"], "exit 0")
    try:
        assert e.tracer.start_run(meta("bad").replace(window_s="soon"), p.pid) is False
    finally:
        p.go()
        p.wait()
    assert e.tracer.active_runs() == 0
    _assert_fds_back_to(before)


def test_fid_reporting_is_refused_on_an_overlay_so_the_tracer_uses_fd_mode(overlay):
    # Why each event costs an fd (docs/decisions.md): a FID-reporting group cannot mark an overlay
    # mounted as containerd mounts it (no nfs_export), while an fd-mode group can.
    import errno

    fid = fan.fanotify_init(fan.FAN_CLASS_NOTIF | fan.FAN_REPORT_FID, os.O_RDONLY)
    try:
        with pytest.raises(fan.FanotifyError) as refused:
            fan.fanotify_mark(fid, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, fan.TRACE_MASK, str(overlay["merged"]))
        assert refused.value.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.ENODEV)
    finally:
        os.close(fid)
    os.close(fan.open_filesystem_group(str(overlay["merged"])))


def test_deferred_set_up_waits_for_the_wake_and_loses_no_event(overlay, tmp_path, caplog):
    # The agent defers the reader's part of a new run until containerd has its answer; what the
    # container reads meanwhile waits in the group's queue.
    deferred: list = []
    store = TraceStore(tmp_path / "state")
    done = threading.Event()
    started = lambda: any("event=trace_run_started" in r.getMessage() for r in caplog.records)  # noqa: E731
    caplog.set_level(logging.INFO, logger="agent.trace.tracer")
    tracer = Tracer(store, TraceConfig(digest_wait_s=0), on_finished=lambda s: done.set(), defer=deferred.append)
    os.mkfifo(overlay["merged"] / "tmp" / "deferred.fifo")  # no writer: the script blocks on it
    p = Jailed(overlay["merged"], "read x < /data/a.txt; read y < /data/b.txt; read z < /tmp/deferred.fifo")
    try:
        assert tracer.start_run(meta("deferred"), p.pid)
        assert len(deferred) == 1
        p.go()
        time.sleep(0.3)  # the script has read both files by now
        assert not started() and not done.is_set()
        assert not tracer.wait_attached("cid-deferred", 0.1)
        deferred[0]()
        assert tracer.wait_attached("cid-deferred", 5)
        assert started()
        assert not tracer.wait_attached("cid-unknown", 0.1)
        tracer.stop_run("cid-deferred")
        assert done.wait(20)
    finally:
        p.kill()
        tracer.close()
    acc = store.read_accesses().sort_values("seq")
    assert list(acc.path)[:3] == ["/bin/busybox", "/data/a.txt", "/data/b.txt"]
