"""The stub's Plugin service without sockets: dispatch of both event forms, answers, fail-open bounds."""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from agent.nri import Container, ContainerState, Event, Plugin, Pod
from agent.nri import stub as stubmod
from agent.nri import mux, ttrpc
from agent.nri.proto import nri_pb2

SERVICE = "nri.pkg.api.v1alpha1.Plugin"


def _pod_pb(**kw) -> nri_pb2.PodSandbox:
    pod = nri_pb2.PodSandbox(id="pod-1", name="web-7d9f", uid="u-1", namespace="shop", pid=41, **kw)
    pod.labels["app"] = "web"
    pod.annotations["a"] = "b"
    pod.linux.cgroup_parent = "/kubepods"
    pod.linux.namespaces.add(type="network", path="/proc/41/ns/net")
    return pod


def _ctr_pb(pid: int = 1234) -> nri_pb2.Container:
    ctr = nri_pb2.Container(id="ctr-1", pod_sandbox_id="pod-1", name="app", state=nri_pb2.CONTAINER_CREATED,
                            args=["/bin/sh", "-c", "true"], env=["A=1"], pid=pid)
    ctr.annotations["io.kubernetes.cri.image-name"] = "docker.io/testbed/busybox:1"
    ctr.mounts.add(destination="/data", type="bind", source="/srv", options=["rbind", "ro"])
    ctr.linux.cgroups_path = "/kubepods/ctr-1"
    return ctr


def _req(method: str, msg, timeout_nano: int = 2_000_000_000, service: str = SERVICE) -> ttrpc.Request:
    return ttrpc.Request(service, method, msg.SerializeToString(), timeout_nano)


class Recorder(Plugin):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        self.calls.append(("configure", config, runtime_name, runtime_version))

    def synchronize(self, pods: list[Pod], containers: list[Container]) -> None:
        self.calls.append(("synchronize", pods, containers))

    def run_pod_sandbox(self, pod: Pod) -> None:
        self.calls.append(("run_pod_sandbox", pod))

    def create_container(self, pod: Pod, container: Container) -> None:
        self.calls.append(("create_container", pod, container))

    def start_container(self, pod: Pod, container: Container) -> None:
        self.calls.append(("start_container", pod, container))

    def stop_container(self, pod: Pod, container: Container) -> None:
        self.calls.append(("stop_container", pod, container))


@pytest.fixture()
def runner():
    r = stubmod.BoundedRunner(0.3, workers=2)
    yield r
    r.stop()


def test_wire_service_names_are_upstreams() -> None:
    assert stubmod.PLUGIN_SERVICE == "nri.pkg.api.v1alpha1.Plugin"
    assert stubmod.RUNTIME_SERVICE == "nri.pkg.api.v1alpha1.Runtime"


def test_event_mask_comes_from_overridden_handlers() -> None:
    expected = (1 << 0) | (1 << 3) | (1 << 5) | (1 << 9)  # RUN_POD_SANDBOX, CREATE, START, STOP
    assert stubmod.event_mask(Recorder()) == expected
    assert Event.START_CONTAINER.bit == 1 << 5

    class OnlyRemove(Plugin):
        def remove_container(self, pod: Pod, container: Container) -> None: ...

    assert stubmod.event_mask(OnlyRemove()) == 1 << 10
    assert stubmod.event_mask(Plugin()) == 0


def test_configure_passes_config_verbatim_and_answers_mask(runner) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    toml = 'node = "n1"\n[trace]\nwindow_s = 60\n'
    code, msg, payload = svc.handle(_req("Configure", nri_pb2.ConfigureRequest(
        config=toml, runtime_name="containerd", runtime_version="1.7.24")))
    assert (code, msg) == (0, "")
    assert nri_pb2.ConfigureResponse.FromString(payload).events == stubmod.event_mask(plugin)
    assert plugin.calls == [("configure", toml, "containerd", "1.7.24")]


def test_state_change_start_container_gives_plain_model_objects(runner) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    ev = nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=_pod_pb(), container=_ctr_pb())
    assert svc.handle(_req("StateChange", ev)) == (0, "", b"")
    ((name, pod, ctr),) = plugin.calls
    assert name == "start_container"
    assert pod == Pod(id="pod-1", name="web-7d9f", uid="u-1", namespace="shop", labels={"app": "web"},
                      annotations={"a": "b"}, pid=41, cgroup_parent="/kubepods",
                      namespaces={"network": "/proc/41/ns/net"})
    assert ctr.pid == 1234 and ctr.state is ContainerState.CREATED
    assert ctr.args == ("/bin/sh", "-c", "true") and ctr.env == ("A=1",)
    assert ctr.annotations["io.kubernetes.cri.image-name"] == "docker.io/testbed/busybox:1"
    assert ctr.mounts[0].destination == "/data" and ctr.mounts[0].options == ("rbind", "ro")
    assert ctr.cgroups_path == "/kubepods/ctr-1"


def test_both_event_forms_reach_the_same_handler(runner) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    old = svc.handle(_req("StateChange", nri_pb2.StateChangeEvent(event=nri_pb2.RUN_POD_SANDBOX, pod=_pod_pb())))
    new = svc.handle(_req("RunPodSandbox", nri_pb2.PodEventRequest(pod=_pod_pb())))
    start_new = svc.handle(_req("StartContainer", nri_pb2.ContainerEventRequest(pod=_pod_pb(), container=_ctr_pb())))
    assert old == new == start_new == (0, "", b"")
    assert [c[0] for c in plugin.calls] == ["run_pod_sandbox", "run_pod_sandbox", "start_container"]
    assert plugin.calls[0][1] == plugin.calls[1][1]


@pytest.mark.parametrize("method, response", [
    ("CreateContainer", nri_pb2.CreateContainerResponse),
    ("StopContainer", nri_pb2.StopContainerResponse),
    ("UpdateContainer", nri_pb2.UpdateContainerResponse),
])
def test_dedicated_methods_answer_their_empty_response(runner, method, response) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    code, msg, payload = svc.handle(_req(method, nri_pb2.ContainerEventRequest(pod=_pod_pb(), container=_ctr_pb(0))))
    assert (code, msg) == (0, "")
    assert response.FromString(payload) == response()  # no adjustment, no update, no eviction
    handled = {"CreateContainer": "create_container", "StopContainer": "stop_container"}
    assert [c[0] for c in plugin.calls] == ([handled[method]] if method in handled else [])


@pytest.mark.parametrize("service, method", [
    (SERVICE, "ValidateContainerAdjustment"),
    (SERVICE, "UpdatePodSandbox"),
    (SERVICE, "NoSuchMethod"),
    ("nri.pkg.api.v1alpha1.Other", "Configure"),
])
def test_unknown_methods_answer_unimplemented(runner, service, method) -> None:
    svc = stubmod.PluginService(Recorder(), runner)
    code, msg, payload = svc.handle(ttrpc.Request(service, method, b""))
    assert code == ttrpc.Code.UNIMPLEMENTED == 12
    assert method in msg and payload == b""


def test_synchronize_collects_parts_and_delivers_once(runner) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    part1 = nri_pb2.SynchronizeRequest(pods=[_pod_pb()], more=True)
    part2 = nri_pb2.SynchronizeRequest(containers=[_ctr_pb(77)])
    code, _, payload = svc.handle(_req("Synchronize", part1))
    assert code == 0 and nri_pb2.SynchronizeResponse.FromString(payload).more is True
    assert plugin.calls == [] and not svc.synchronized.is_set()
    code, _, payload = svc.handle(_req("Synchronize", part2))
    assert code == 0 and nri_pb2.SynchronizeResponse.FromString(payload).more is False
    ((name, pods, ctrs),) = plugin.calls
    assert name == "synchronize" and [p.id for p in pods] == ["pod-1"] and [c.pid for c in ctrs] == [77]
    assert svc.synchronized.is_set()


def test_handler_exception_is_logged_with_ids_and_answered_ok(runner, caplog) -> None:
    class Broken(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            raise RuntimeError("boom")

    svc = stubmod.PluginService(Broken(), runner)
    with caplog.at_level(logging.WARNING, logger="agent.nri.stub"):
        result = svc.handle(_req("StateChange", nri_pb2.StateChangeEvent(
            event=nri_pb2.START_CONTAINER, pod=_pod_pb(), container=_ctr_pb())))
    assert result == (0, "", b"")
    (record,) = [r for r in caplog.records if "nri_handler_failed" in r.getMessage()]
    assert "pod_id=pod-1" in record.getMessage() and "container_id=ctr-1" in record.getMessage()
    assert record.exc_info and "boom" in str(record.exc_info[1])


def test_stalling_handler_gets_a_timely_answer_and_finishes_in_background(caplog) -> None:
    release = threading.Event()
    finished = threading.Event()
    outcomes: list[str] = []

    class Stalls(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            release.wait(3.0)  # a 3 s stall, cut short once the test has measured the answer
            finished.set()

    runner = stubmod.BoundedRunner(0.2, workers=2, observe=lambda name, s, outcome: outcomes.append(outcome))
    svc = stubmod.PluginService(Stalls(), runner)
    req = _req("StateChange", nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=_pod_pb(),
                                                      container=_ctr_pb()))
    with caplog.at_level(logging.WARNING, logger="agent.nri.stub"):
        t0 = time.monotonic()
        result = svc.handle(req)
        elapsed = time.monotonic() - t0
        assert result == (0, "", b"")
        assert 0.2 <= elapsed < 1.5  # the handler stalls 3 s
        assert not finished.is_set()
        release.set()
        assert finished.wait(2.0)
        deadline = time.monotonic() + 2.0
        while not any("nri_handler_late_finish" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert outcomes == ["overrun"]
    assert any("nri_handler_overrun" in r.getMessage() and "container_id=ctr-1" in r.getMessage()
               for r in caplog.records)
    runner.stop()


def test_runtime_timeout_shortens_the_budget() -> None:
    release = threading.Event()

    class Stalls(Plugin):
        def run_pod_sandbox(self, pod: Pod) -> None:
            release.wait(3.0)

    runner = stubmod.BoundedRunner(1.5, workers=1)
    svc = stubmod.PluginService(Stalls(), runner)
    t0 = time.monotonic()
    # A runtime that allows 0.2 s per call gets its answer within half of that.
    svc.handle(_req("RunPodSandbox", nri_pb2.PodEventRequest(pod=_pod_pb()), timeout_nano=200_000_000))
    assert time.monotonic() - t0 < 1.0  # not the 1.5 s configured budget, nor the 3 s stall
    release.set()
    runner.stop()


def test_when_all_workers_are_stalled_new_calls_are_skipped_not_queued(caplog) -> None:
    release = threading.Event()
    calls: list[str] = []

    class Stalls(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            calls.append(container.id)
            release.wait(3.0)

    outcomes: list[str] = []
    runner = stubmod.BoundedRunner(0.05, workers=2, observe=lambda n, s, o: outcomes.append(o))
    svc = stubmod.PluginService(Stalls(), runner)
    req = _req("StateChange", nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=_pod_pb(),
                                                      container=_ctr_pb()))
    with caplog.at_level(logging.WARNING, logger="agent.nri.stub"):
        for _ in range(3):
            t0 = time.monotonic()
            assert svc.handle(req) == (0, "", b"")
            assert time.monotonic() - t0 < 1.0
    assert outcomes == ["overrun", "overrun", "skipped"]
    assert len(calls) == 2
    assert any("nri_handler_skipped" in r.getMessage() for r in caplog.records)
    release.set()
    # Freed workers take new calls again.
    time.sleep(0.05)
    assert svc.handle(req) == (0, "", b"")
    runner.stop()


def test_undecodable_event_payload_fails_open(runner) -> None:
    svc = stubmod.PluginService(Recorder(), runner)
    code, _, payload = svc.handle(ttrpc.Request(SERVICE, "CreateContainer", b"\xff\xff\xff"))
    assert code == 0 and payload == b""
    code, _, payload = svc.handle(ttrpc.Request(SERVICE, "Configure", b"\xff\xff"))
    assert code == 0 and nri_pb2.ConfigureResponse.FromString(payload).events == svc.events


def test_container_event_without_container_is_answered_ok_without_calling(runner) -> None:
    plugin = Recorder()
    svc = stubmod.PluginService(plugin, runner)
    ev = nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=_pod_pb())
    assert svc.handle(_req("StateChange", ev)) == (0, "", b"")
    assert plugin.calls == []


@pytest.mark.parametrize("name, idx, match", [
    ("prefetch", "1", "exactly two digits"),
    ("prefetch", "100", "exactly two digits"),
    ("prefetch", "a1", "exactly two digits"),
    ("prefetch", 5, "exactly two digits"),
    ("", "05", "non-empty"),
    ("has space", "05", "without spaces"),
])
def test_registration_name_and_index_are_validated(name, idx, match) -> None:
    with pytest.raises(ValueError, match=match):
        stubmod.Stub(Recorder(), "/nonexistent", name=name, idx=idx)


def test_valid_registration_is_accepted() -> None:
    stubmod.validate_registration("prefetch-advisor", "05")


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="handler budget must be positive"):
        stubmod.BoundedRunner(0)


def test_stub_runs_once_and_stop_before_run_returns_at_once() -> None:
    stub = stubmod.Stub(Recorder(), "/nonexistent/nri.sock", name="once", idx="07")
    stub.stop()
    t0 = time.monotonic()
    stub.run()
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(RuntimeError, match="only be called once"):
        stub.run()


def test_missing_socket_is_retried_with_backoff_logged_once_and_stop_ends_run(tmp_path, caplog) -> None:
    stub = stubmod.Stub(Recorder(), str(tmp_path / "absent.sock"), name="absent", idx="07",
                        backoff_initial_s=0.01, backoff_max_s=0.04)
    attempts: list[float] = []
    connect = stub._connect

    def counting_connect():
        attempts.append(time.monotonic())
        return connect()

    stub._connect = counting_connect  # type: ignore[method-assign]
    thread = threading.Thread(target=stub.run)
    with caplog.at_level(logging.INFO, logger="agent.nri.stub"):
        thread.start()
        time.sleep(0.4)
        t0 = time.monotonic()
        stub.stop()
        thread.join(2)
    assert not thread.is_alive() and time.monotonic() - t0 < 1.0
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) >= 5
    assert min(gaps) >= 0.004, gaps  # never below half the first delay
    assert sorted(gaps)[len(gaps) // 2] <= 0.1, gaps  # capped at backoff_max_s (plus scheduling slack)
    assert max(gaps[3:]) >= 0.02  # grew from 0.01 toward the cap
    assert sum("nri_socket_unavailable" in r.getMessage() for r in caplog.records) == 1
    assert not stub.wait_ready(0)


def test_launched_by_runtime_reads_the_three_variables_containerd_sets() -> None:
    ours, theirs = socket.socketpair()
    try:
        env = {"NRI_PLUGIN_NAME": "prefetch-advisor", "NRI_PLUGIN_IDX": "50", "NRI_PLUGIN_SOCKET": str(ours.fileno())}
        launch = stubmod.launched_by_runtime(env)
        assert (launch.name, launch.idx, launch.sock.fileno()) == ("prefetch-advisor", "50", ours.fileno())
        assert not launch.sock.get_inheritable()
        launch.sock.detach()
        assert stubmod.launched_by_runtime({}) is None  # started by hand: dial nri_socket
        with pytest.raises(ValueError, match="fd number"):
            stubmod.launched_by_runtime({**env, "NRI_PLUGIN_SOCKET": "three"})
        with pytest.raises(ValueError, match="two digits"):
            stubmod.launched_by_runtime({**env, "NRI_PLUGIN_IDX": "5"})
    finally:
        ours.close()
        theirs.close()


def _read_message(sock: socket.socket, frames: mux.FrameDecoder, conns: dict[int, ttrpc.MessageDecoder]):
    while True:
        for conn_id, payload in frames.feed(sock.recv(65536)):
            for msg in conns[conn_id].feed(payload):
                return conn_id, msg


def test_preconnected_stub_registers_serves_configure_and_returns_at_eof(caplog) -> None:
    ours, runtime = socket.socketpair()
    plugin = Recorder()
    stub = stubmod.Stub(plugin, "/nonexistent/nri.sock", name="launched", idx="42", preconnected=ours)
    thread = threading.Thread(target=stub.run)
    thread.start()
    try:
        runtime.settimeout(5)
        frames = mux.FrameDecoder()
        conns = {mux.PLUGIN_SERVICE_CONN: ttrpc.MessageDecoder(), mux.RUNTIME_SERVICE_CONN: ttrpc.MessageDecoder()}
        conn_id, msg = _read_message(runtime, frames, conns)
        request = ttrpc.decode_request(msg.body)
        assert (conn_id, request.method) == (mux.RUNTIME_SERVICE_CONN, "RegisterPlugin")
        register = nri_pb2.RegisterPluginRequest.FromString(request.payload)
        assert (register.plugin_name, register.plugin_idx) == ("launched", "42")
        runtime.sendall(mux.encode_frames(mux.RUNTIME_SERVICE_CONN, ttrpc.encode_response(msg.stream_id)))
        configure = nri_pb2.ConfigureRequest(config='[trace]\nwindow_s = 5\n', runtime_name="containerd")
        runtime.sendall(mux.encode_frames(mux.PLUGIN_SERVICE_CONN, ttrpc.encode_request(1, _req("Configure", configure))))
        conn_id, msg = _read_message(runtime, frames, conns)
        assert conn_id == mux.PLUGIN_SERVICE_CONN and ttrpc.decode_response(msg.body).ok
        assert plugin.calls[0] == ("configure", '[trace]\nwindow_s = 5\n', "containerd", "")
    finally:
        with caplog.at_level(logging.INFO, logger="agent.nri.stub"):
            runtime.close()  # the runtime went away: an inherited socket cannot be dialled again
            thread.join(3)
    assert not thread.is_alive(), "run() kept going after the pre-connected socket closed"
    assert "nri_socket_unavailable" not in caplog.text


@contextmanager
def _serving(plugin: Plugin, **stub_kw):
    """A pre-connected stub registered with a fake runtime; yields `call(method, msg) -> response`."""
    ours, runtime = socket.socketpair()
    stub = stubmod.Stub(plugin, "/nonexistent/nri.sock", name="t", idx="42", preconnected=ours, **stub_kw)
    thread = threading.Thread(target=stub.run)
    thread.start()
    runtime.settimeout(5)
    frames = mux.FrameDecoder()
    conns = {mux.PLUGIN_SERVICE_CONN: ttrpc.MessageDecoder(), mux.RUNTIME_SERVICE_CONN: ttrpc.MessageDecoder()}
    _, msg = _read_message(runtime, frames, conns)
    runtime.sendall(mux.encode_frames(mux.RUNTIME_SERVICE_CONN, ttrpc.encode_response(msg.stream_id)))
    stream = iter(range(1, 1000, 2))

    class Call:
        def __call__(self, method: str, message, read_answer: bool = True) -> ttrpc.Response | None:
            runtime.sendall(mux.encode_frames(mux.PLUGIN_SERVICE_CONN,
                                              ttrpc.encode_request(next(stream), _req(method, message))))
            return self.answer() if read_answer else None

        def answer(self) -> ttrpc.Response:
            conn_id, answer = _read_message(runtime, frames, conns)
            assert conn_id == mux.PLUGIN_SERVICE_CONN
            return ttrpc.decode_response(answer.body)

    call = Call()

    try:
        yield call, runtime, thread
    finally:
        runtime.close()
        thread.join(3)
    assert not thread.is_alive()


def _start_request() -> nri_pb2.StateChangeEvent:
    return nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=_pod_pb(), container=_ctr_pb())


def test_after_answer_work_runs_once_the_runtime_has_the_answer() -> None:
    seen: list[bool] = []
    ran = threading.Event()

    class Defers(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            def later() -> None:
                # The answer's bytes are in the runtime's socket before this runs.
                seen.append(bool(select.select([runtime], [], [], 0)[0]))
                ran.set()
            stubmod.after_answer(later)
            time.sleep(0.05)  # were `later` run now, it would find nothing to read
            seen.append(ran.is_set())

    with _serving(Defers()) as (call, runtime, _):
        # The fake runtime reads the answer only after `later` has run.
        call("StateChange", _start_request(), read_answer=False)
        assert ran.wait(2)
        assert call.answer().ok
    assert seen == [False, True]


def test_after_answer_outside_a_handler_runs_at_once() -> None:
    ran: list[str] = []
    stubmod.after_answer(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_follow_ups_wait_for_the_answer_and_run_anyway_if_none_is_sent(monkeypatch) -> None:
    ran = threading.Event()

    class Defers(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            stubmod.after_answer(ran.set)

    runner = stubmod.BoundedRunner(0.5, workers=1)
    svc = stubmod.PluginService(Defers(), runner)
    monkeypatch.setattr(stubmod, "FOLLOWUP_WAIT_S", 30.0)
    assert svc.handle(_req("StateChange", _start_request())) == (0, "", b"")
    assert not ran.wait(0.2)
    runner.answered()
    assert ran.wait(2)
    # A PluginService used without a Stub never reports answers: follow-ups run after the wait.
    ran.clear()
    monkeypatch.setattr(stubmod, "FOLLOWUP_WAIT_S", 0.1)
    svc.handle(_req("StateChange", _start_request()))
    assert ran.wait(2)
    runner.stop()


def test_a_failing_follow_up_is_logged_and_the_worker_serves_on(caplog) -> None:
    class Defers(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            stubmod.after_answer(lambda: 1 / 0)

    runner = stubmod.BoundedRunner(0.5, workers=1)
    svc = stubmod.PluginService(Defers(), runner)
    with caplog.at_level(logging.WARNING, logger="agent.nri.stub"):
        for _ in range(2):
            assert svc.handle(_req("StateChange", _start_request())) == (0, "", b"")
            runner.answered()
        deadline = time.monotonic() + 2
        while sum("event=nri_followup_failed" in r.getMessage() for r in caplog.records) < 2:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.01)
    (record, _) = [r for r in caplog.records if "event=nri_followup_failed" in r.getMessage()]
    assert "handler=start_container" in record.getMessage() and "container_id=ctr-1" in record.getMessage()
    runner.stop()


def _policy(tid: int = 0) -> int:
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK


@pytest.mark.e2e  # needs root (CAP_SYS_NICE) for SCHED_FIFO
def test_realtime_stub_runs_connection_and_handlers_fifo_and_what_they_start_normal() -> None:
    seen: dict[str, int] = {}

    class Looks(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            seen["handler"] = _policy()
            child = threading.Thread(target=lambda: seen.setdefault("thread_it_starts", _policy()))
            child.start()
            child.join()
            seen["process_it_starts"] = int(subprocess.run(
                [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                capture_output=True, text=True, check=True).stdout)

    with _serving(Looks(), realtime=True) as (call, _, thread):
        assert call("StateChange", _start_request()).ok
        seen["connection"] = _policy(thread.native_id)
    assert seen == {"handler": os.SCHED_FIFO, "thread_it_starts": os.SCHED_OTHER,
                    "process_it_starts": os.SCHED_OTHER, "connection": os.SCHED_FIFO}
    # Without the option nothing changes.
    seen.clear()
    with _serving(Looks()) as (call, _, thread):
        assert call("StateChange", _start_request()).ok
        seen["connection"] = _policy(thread.native_id)
    assert seen["handler"] == seen["connection"] == os.SCHED_OTHER


@pytest.mark.e2e  # needs root (CAP_SYS_NICE) for SCHED_FIFO
def test_an_overrunning_realtime_handler_goes_on_at_normal_priority_then_gets_it_back() -> None:
    policies: list[int] = []
    release = threading.Event()

    class Stalls(Plugin):
        def start_container(self, pod: Pod, container: Container) -> None:
            policies.append(_policy())
            if len(policies) == 1:
                release.wait(5)  # overruns the 50 ms budget; the runner demotes this thread meanwhile
                policies.append(_policy())

    runner = stubmod.BoundedRunner(0.05, workers=1, realtime=True)
    svc = stubmod.PluginService(Stalls(), runner)
    assert svc.handle(_req("StateChange", _start_request())) == (0, "", b"")
    release.set()
    deadline = time.monotonic() + 5
    while len(policies) < 3:  # calls are skipped until the one worker is back in the pool
        assert time.monotonic() < deadline, policies
        assert svc.handle(_req("StateChange", _start_request())) == (0, "", b"")
        time.sleep(0.01)
    assert policies == [os.SCHED_FIFO, os.SCHED_OTHER, os.SCHED_FIFO]
    runner.stop()


def test_a_node_that_refuses_realtime_gets_one_log_line_and_normal_service(monkeypatch, caplog) -> None:
    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(stubmod.os, "sched_setscheduler", refuse)
    monkeypatch.setattr(stubmod, "_realtime_refusal_logged", False)
    plugin = Recorder()
    with caplog.at_level(logging.WARNING, logger="agent.nri.stub"):
        with _serving(plugin, realtime=True) as (call, _, _thread):
            assert call("StateChange", _start_request()).ok
    assert [c[0] for c in plugin.calls] == ["start_container"]
    refusals = [r.getMessage() for r in caplog.records if "event=nri_realtime_refused" in r.getMessage()]
    assert len(refusals) == 1 and "Operation not permitted" in refusals[0]
