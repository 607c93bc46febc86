"""The NRI plugin stub: owns the connection and the protocol; a :class:`Plugin` owns the logic.

Subclass :class:`Plugin`, override only the handlers you need (the event subscription is derived
from which ones you override), and run it with ``Stub(plugin, socket_path, name, idx).run()``.

Every handler call is bounded: it runs on a small pool of worker threads and the runtime gets its
answer after at most ``handler_budget_s``, whatever the handler does. Exceptions are logged and
answered OK; a handler that overruns keeps running in the background and is logged. The runtime
drops a plugin that takes longer than its request timeout (2 s in containerd), and a dropped
plugin silently sees nothing, so failing open is the only safe answer.

Handlers normally run one at a time in event order (containerd sends events one by one and we
wait for each). Only after a handler overruns its budget can two run at once, so handlers that
share state should still guard it.

The runtime waits for each answer, so two things keep its wait short. Work a handler starts but
need not finish first goes through :func:`after_answer`. With ``realtime=True`` the connection and
handler threads run SCHED_FIFO, so each hop between them takes microseconds, not a time slice.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from agent.nri import mux, ttrpc
from agent.nri.model import Container, Event, Pod, container_from_pb, pod_from_pb
from agent.nri.proto import nri_pb2

log = logging.getLogger(__name__)

PLUGIN_SERVICE = nri_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name
RUNTIME_SERVICE = nri_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name

DEFAULT_SOCKET_PATH = "/var/run/nri/nri.sock"
DEFAULT_HANDLER_BUDGET_S = 0.5
_IDX_RE = re.compile(r"[0-9]{2}")


class Plugin:
    """Base class for NRI plugins. Every handler is optional; the defaults do nothing.

    Handlers receive :mod:`agent.nri.model` objects, never protobuf messages, and return nothing:
    this stub never asks the runtime to adjust a container.
    """

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        """Called once per connection, before Synchronize; ``config`` is passed through verbatim."""

    def synchronize(self, pods: list[Pod], containers: list[Container]) -> None:
        """Everything the runtime already runs, once per connection (also after a reconnect)."""

    def shutdown(self) -> None:
        """The runtime announced it is going down (newer NRI only; containerd 1.7 just closes)."""

    def on_disconnect(self) -> None:
        """The runtime went away (EOF or error); not called after ``Stub.stop()``.

        The stub reconnects and a fresh Configure and Synchronize follow."""

    def run_pod_sandbox(self, pod: Pod) -> None: ...
    def stop_pod_sandbox(self, pod: Pod) -> None: ...
    def remove_pod_sandbox(self, pod: Pod) -> None: ...
    def create_container(self, pod: Pod, container: Container) -> None: ...
    def post_create_container(self, pod: Pod, container: Container) -> None: ...
    def start_container(self, pod: Pod, container: Container) -> None: ...
    def post_start_container(self, pod: Pod, container: Container) -> None: ...
    def update_container(self, pod: Pod, container: Container) -> None: ...
    def post_update_container(self, pod: Pod, container: Container) -> None: ...
    def stop_container(self, pod: Pod, container: Container) -> None: ...
    def remove_container(self, pod: Pod, container: Container) -> None: ...


EVENT_HANDLERS: dict[Event, str] = {
    Event.RUN_POD_SANDBOX: "run_pod_sandbox",
    Event.STOP_POD_SANDBOX: "stop_pod_sandbox",
    Event.REMOVE_POD_SANDBOX: "remove_pod_sandbox",
    Event.CREATE_CONTAINER: "create_container",
    Event.POST_CREATE_CONTAINER: "post_create_container",
    Event.START_CONTAINER: "start_container",
    Event.POST_START_CONTAINER: "post_start_container",
    Event.UPDATE_CONTAINER: "update_container",
    Event.POST_UPDATE_CONTAINER: "post_update_container",
    Event.STOP_CONTAINER: "stop_container",
    Event.REMOVE_CONTAINER: "remove_container",
}

_POD_EVENTS = frozenset({Event.RUN_POD_SANDBOX, Event.STOP_POD_SANDBOX, Event.REMOVE_POD_SANDBOX})


def event_mask(plugin: Plugin) -> int:
    """Subscription bits for the event handlers ``plugin``'s class overrides."""
    mask = 0
    cls = type(plugin)
    for event, name in EVENT_HANDLERS.items():
        if getattr(cls, name, None) is not getattr(Plugin, name):
            mask |= event.bit
    return mask


@dataclass(frozen=True, slots=True)
class _EventMethod:
    event: Event
    request: type[PbMessage]
    response: bytes  # the serialized (empty) response of the method's own type


def _event_method(event: Event, request: type[PbMessage], response: type[PbMessage]) -> _EventMethod:
    return _EventMethod(event, request, response().SerializeToString())


# Per-event methods. NRI 0.6 has only CreateContainer, UpdateContainer and StopContainer of
# these (the rest come as StateChange); newer NRI has all of them.
_EVENT_METHODS: dict[str, _EventMethod] = {
    "RunPodSandbox": _event_method(Event.RUN_POD_SANDBOX, nri_pb2.PodEventRequest, nri_pb2.RunPodSandboxResponse),
    "StopPodSandbox": _event_method(Event.STOP_POD_SANDBOX, nri_pb2.PodEventRequest, nri_pb2.StopPodSandboxResponse),
    "RemovePodSandbox": _event_method(
        Event.REMOVE_POD_SANDBOX, nri_pb2.PodEventRequest, nri_pb2.RemovePodSandboxResponse
    ),
    "CreateContainer": _event_method(
        Event.CREATE_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.CreateContainerResponse
    ),
    "PostCreateContainer": _event_method(
        Event.POST_CREATE_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.PostCreateContainerResponse
    ),
    "StartContainer": _event_method(
        Event.START_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.StartContainerResponse
    ),
    "PostStartContainer": _event_method(
        Event.POST_START_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.PostStartContainerResponse
    ),
    "UpdateContainer": _event_method(
        Event.UPDATE_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.UpdateContainerResponse
    ),
    "PostUpdateContainer": _event_method(
        Event.POST_UPDATE_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.PostUpdateContainerResponse
    ),
    "StopContainer": _event_method(Event.STOP_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.StopContainerResponse),
    "RemoveContainer": _event_method(
        Event.REMOVE_CONTAINER, nri_pb2.ContainerEventRequest, nri_pb2.RemoveContainerResponse
    ),
}
_EMPTY = nri_pb2.Empty().SerializeToString()

Observer = Callable[[str, float, str], None]
"""``observe(handler_name, seconds, outcome)``; outcome is ok, error, overrun or skipped."""


_current = threading.local()
FOLLOWUP_WAIT_S = 0.2
"""Longest a handler's follow-ups wait for the answer to go out (a PluginService used without a
Stub never says; then they run after this)."""


def after_answer(fn: Callable[[], Any]) -> None:
    """Run ``fn`` once the runtime has this handler's answer; run it now outside a handler.

    For work a handler starts but the runtime need not wait for: waking a reader thread, queueing a
    lookup. Done before the answer, such work competes with it for the GIL and the CPU and shows in
    the runtime's latency. ``fn`` runs on the handler's worker and must be quick; an exception is
    logged.
    """
    call = getattr(_current, "call", None)
    if call is None or call.answered.is_set():
        _run_followup(fn, "-", "")
    else:
        call.followups.append(fn)


def _run_followup(fn: Callable[[], Any], label: str, ids: str) -> None:
    try:
        fn()
    except Exception:
        log.exception("event=nri_followup_failed handler=%s %s", label, ids)


REALTIME_PRIORITY = 1
"""SCHED_FIFO priority of the connection and handler threads when ``realtime`` is on: the lowest
real-time level, above every normal task and below every other real-time one."""


_realtime_refusal_logged = False


def become_realtime() -> bool:
    """Make the calling thread SCHED_FIFO; threads and processes it creates start normal.

    A woken real-time thread runs at once instead of after the running task's time slice: on a
    busy node that slice put 2-5 ms on about 1 in 25 answers (see docs/decisions.md). False, logged
    once, where the node refuses it (no CAP_SYS_NICE, a cgroup without real-time budget).
    """
    global _realtime_refusal_logged
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY))
        return True
    except OSError as exc:
        if not _realtime_refusal_logged:
            _realtime_refusal_logged = True
            log.warning("event=nri_realtime_refused error=%s note=nri_threads_run_at_normal_priority", exc)
        return False


class _Call:
    __slots__ = ("fn", "args", "label", "ids", "done", "failed", "finished", "abandoned", "started", "answered",
                 "followups", "tid")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], label: str, ids: str) -> None:
        self.fn = fn
        self.args = args
        self.label = label
        self.ids = ids
        self.done = threading.Event()
        self.failed = False
        self.finished = False
        self.abandoned = False
        self.started = 0.0
        self.answered = threading.Event()
        self.followups: list[Callable[[], Any]] = []
        self.tid = 0  # the worker's native thread id, once it runs the call


class BoundedRunner:
    """Runs handler calls on a fixed set of daemon threads and waits for each at most a budget.

    A call that overruns keeps its worker until it returns. When every worker is held by an
    overrunning call, new calls are skipped (logged) rather than queued: a late handler would act
    on stale events, and queueing would let stalls pile up without bound.
    """

    def __init__(self, budget_s: float, workers: int = 4, observe: Observer | None = None,
                 realtime: bool = False) -> None:
        if budget_s <= 0:
            raise ValueError(f"handler budget must be positive, got {budget_s}")
        if workers < 1:
            raise ValueError(f"need at least one handler worker, got {workers}")
        self.budget_s = budget_s
        self._observe = observe
        self.realtime = realtime
        self._free = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self._unanswered: list[_Call] = []
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"nri-handler-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def call(self, label: str, fn: Callable[..., Any], args: tuple[Any, ...] = (), ids: str = "",
             budget_s: float | None = None) -> str:
        """Run ``fn(*args)``; return ok, error, overrun or skipped, within the budget."""
        budget = self.budget_s if budget_s is None else min(budget_s, self.budget_s)
        if not self._free.acquire(blocking=False):
            log.warning("event=nri_handler_skipped reason=all_workers_overrunning handler=%s %s",
                        label, ids)
            self._report(label, 0.0, "skipped")
            return "skipped"
        call = _Call(fn, args, label, ids)
        call.started = time.monotonic()
        self._queue.put(call)
        if call.done.wait(budget):
            outcome = "error" if call.failed else "ok"
        else:
            with self._lock:
                if call.finished:
                    outcome = "error" if call.failed else "ok"
                else:
                    call.abandoned = True
                    outcome = "overrun"
                    if self.realtime:
                        self._demote(call)
            if outcome == "overrun":
                log.warning("event=nri_handler_overrun answered=ok handler=%s %s budget_s=%.3f", label, ids, budget)
        self._report(label, time.monotonic() - call.started, outcome)
        if call.followups and outcome != "overrun":  # an overrun call's follow-ups never wait
            with self._lock:
                self._unanswered.append(call)
        return outcome

    def answered(self) -> None:
        """The answers to every call so far are sent: let their follow-ups run."""
        with self._lock:
            calls, self._unanswered = self._unanswered, []
        for call in calls:
            call.answered.set()

    def stop(self) -> None:
        """Let idle workers exit; busy ones exit after their call (they are daemons either way)."""
        for _ in self._threads:
            self._queue.put(None)

    def _report(self, label: str, seconds: float, outcome: str) -> None:
        if self._observe is not None:
            try:
                self._observe(label, seconds, outcome)
            except Exception:  # an observer must never break the answer path
                log.exception("event=nri_observer_failed handler=%s", label)

    def _demote(self, call: _Call) -> None:
        # An overrunning handler may be spinning: it goes on at normal priority, never starving the node.
        try:
            os.sched_setscheduler(call.tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:
            log.warning("event=nri_demote_failed handler=%s tid=%d error=%s", call.label, call.tid, exc)

    def _work(self) -> None:
        if self.realtime:
            become_realtime()
        tid = threading.get_native_id()
        while True:
            call = self._queue.get()
            if call is None:
                return
            call.tid = tid
            _current.call = call
            try:
                call.fn(*call.args)
            except BaseException:  # even SystemExit from a handler must not shrink the pool
                call.failed = True
                log.exception("event=nri_handler_failed answered=ok handler=%s %s", call.label, call.ids)
            finally:
                _current.call = None
                with self._lock:
                    call.finished = True
                    abandoned = call.abandoned
                call.done.set()
                self._free.release()
            if call.followups:
                # An overrun call was answered at its budget already.
                if not abandoned:
                    call.answered.wait(FOLLOWUP_WAIT_S)
                for fn in call.followups:
                    _run_followup(fn, call.label, call.ids)
            if abandoned and self.realtime:
                become_realtime()
            if abandoned:
                log.warning("event=nri_handler_late_finish handler=%s %s elapsed_s=%.3f failed=%s",
                            call.label, call.ids, time.monotonic() - call.started, call.failed)


def _ids(pod: Pod | None, container: Container | None) -> str:
    parts = []
    if pod is not None:
        parts.append(f"pod={pod.namespace}/{pod.name} pod_id={pod.id}")
    if container is not None:
        parts.append(f"container={container.name} container_id={container.id}")
    return " ".join(parts)


class PluginService:
    """Serves the ``Plugin`` ttrpc service for one plugin: decode, dispatch, encode. No sockets.

    ``handle`` always returns a status and payload; it never raises for anything the runtime sends.
    """

    def __init__(self, plugin: Plugin, runner: BoundedRunner) -> None:
        self.plugin = plugin
        self.runner = runner
        self.events = event_mask(plugin)
        self.synchronized = threading.Event()
        self.runtime: tuple[str, str] = ("", "")
        self._sync_pods: list[Any] = []
        self._sync_containers: list[Any] = []

    def reset(self) -> None:
        """Forget per-connection state; a new connection starts with Configure again."""
        self.synchronized.clear()
        self._sync_pods = []
        self._sync_containers = []

    def handle(self, request: ttrpc.Request) -> tuple[int, str, bytes]:
        method = request.method
        if request.service != PLUGIN_SERVICE:
            return self._unimplemented(request)
        budget = request.timeout_nano / 2e9 if request.timeout_nano > 0 else None
        if method == "StateChange":
            return self._state_change(request.payload, budget)
        spec = _EVENT_METHODS.get(method)
        if spec is not None:
            return self._event_method(spec, request.payload, budget)
        if method == "Configure":
            return self._configure(request.payload, budget)
        if method == "Synchronize":
            return self._synchronize(request.payload, budget)
        if method == "Shutdown":
            self.runner.call("shutdown", self.plugin.shutdown, budget_s=budget)
            return ttrpc.Code.OK, "", _EMPTY
        return self._unimplemented(request)

    @staticmethod
    def _unimplemented(request: ttrpc.Request) -> tuple[int, str, bytes]:
        log.info("event=nri_unimplemented service=%s method=%s",
                 request.service, request.method)
        return ttrpc.Code.UNIMPLEMENTED, f"{request.service}/{request.method} is not implemented", b""

    def _dispatch(self, event: Event, pod_pb: Any, container_pb: Any, has_container: bool,
                  budget: float | None) -> None:
        name = EVENT_HANDLERS.get(event)
        if name is None:
            log.info("event=nri_unknown_event answered=ok nri_event=%d", int(event))
            return
        pod = pod_from_pb(pod_pb)
        if event in _POD_EVENTS:
            args: tuple[Any, ...] = (pod,)
            container = None
        else:
            if not has_container:
                log.warning("event=nri_event_without_container answered=ok nri_event=%s %s",
                            event.name, _ids(pod, None))
                return
            container = container_from_pb(container_pb)
            args = (pod, container)
        ids = _ids(pod, container)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=nri_event nri_event=%s %s pid=%d", event.name, ids, container.pid if container else pod.pid)
        self.runner.call(name, getattr(self.plugin, name), args, ids, budget)

    def _state_change(self, payload: bytes, budget: float | None) -> tuple[int, str, bytes]:
        req = nri_pb2.StateChangeEvent()
        try:
            req.ParseFromString(payload)
            event = Event(req.event)
        except (DecodeError, ValueError) as exc:
            log.warning("event=nri_undecodable method=StateChange answered=ok error=%s", exc)
            return ttrpc.Code.OK, "", _EMPTY
        self._dispatch(event, req.pod, req.container, req.HasField("container"), budget)
        return ttrpc.Code.OK, "", _EMPTY

    def _event_method(self, spec: _EventMethod, payload: bytes, budget: float | None) -> tuple[int, str, bytes]:
        req = spec.request()
        try:
            req.ParseFromString(payload)
        except DecodeError as exc:
            log.warning("event=nri_undecodable answered=ok nri_event=%s error=%s", spec.event.name, exc)
            return ttrpc.Code.OK, "", spec.response
        has_container = spec.event not in _POD_EVENTS and req.HasField("container")
        container_pb = req.container if has_container else None
        self._dispatch(spec.event, req.pod, container_pb, has_container, budget)
        return ttrpc.Code.OK, "", spec.response

    def _configure(self, payload: bytes, budget: float | None) -> tuple[int, str, bytes]:
        req = nri_pb2.ConfigureRequest()
        answer = nri_pb2.ConfigureResponse(events=self.events).SerializeToString()
        try:
            req.ParseFromString(payload)
        except DecodeError as exc:
            log.warning("event=nri_undecodable method=Configure answered=ok error=%s", exc)
            return ttrpc.Code.OK, "", answer
        self.runtime = (req.runtime_name, req.runtime_version)
        log.info("event=nri_configure runtime=%s version=%s events=0x%x config_bytes=%d request_timeout_ms=%d",
                 req.runtime_name, req.runtime_version, self.events, len(req.config), req.request_timeout)
        self.runner.call("configure", self.plugin.configure,
                         (req.config, req.runtime_name, req.runtime_version), budget_s=budget)
        return ttrpc.Code.OK, "", answer

    def _synchronize(self, payload: bytes, budget: float | None) -> tuple[int, str, bytes]:
        req = nri_pb2.SynchronizeRequest()
        try:
            req.ParseFromString(payload)
        except DecodeError as exc:
            log.warning("event=nri_undecodable method=Synchronize answered=ok error=%s", exc)
            self.synchronized.set()
            return ttrpc.Code.OK, "", b""
        self._sync_pods.extend(req.pods)
        self._sync_containers.extend(req.containers)
        if req.more:
            # Newer NRI sends a large state in parts; echoing "more" asks for the next part.
            return ttrpc.Code.OK, "", nri_pb2.SynchronizeResponse(more=True).SerializeToString()
        pods = [pod_from_pb(p) for p in self._sync_pods]
        containers = [container_from_pb(c) for c in self._sync_containers]
        self._sync_pods, self._sync_containers = [], []
        log.info("event=nri_synchronize pods=%d containers=%d", len(pods), len(containers))
        self.runner.call("synchronize", self.plugin.synchronize, (pods, containers), budget_s=budget)
        self.synchronized.set()
        return ttrpc.Code.OK, "", nri_pb2.SynchronizeResponse().SerializeToString()


def validate_registration(name: str, idx: str) -> None:
    """Raise ValueError with a clear message unless the runtime would accept name and index."""
    if not isinstance(name, str) or not name or any(c.isspace() or c == "/" for c in name):
        raise ValueError(f"NRI plugin name must be a non-empty word without spaces or '/', got {name!r}")
    if not isinstance(idx, str) or not _IDX_RE.fullmatch(idx):
        raise ValueError(f"NRI plugin index must be exactly two digits like '05', got {idx!r}")


PLUGIN_NAME_ENV = "NRI_PLUGIN_NAME"
PLUGIN_IDX_ENV = "NRI_PLUGIN_IDX"
PLUGIN_SOCKET_ENV = "NRI_PLUGIN_SOCKET"


@dataclass(frozen=True, slots=True)
class Launch:
    """How the runtime launched us: our name, index and the inherited connection."""

    name: str
    idx: str
    sock: socket.socket


def launched_by_runtime(environ: dict[str, str] | None = None) -> Launch | None:
    """The pre-connected socket the runtime passed, or None when we were started by hand.

    containerd's NRI launches each ``<plugin_path>/<idx>-<name>`` executable with an environment of
    exactly these three variables, the socket being an inherited fd number (3), and sends the file
    ``<plugin_config_path>/<idx>-<name>.conf`` (or ``<name>.conf``) as Configure's config. That is
    the only way a runtime passes a plugin config: plugins that dial the socket get an empty one.
    """
    env = os.environ if environ is None else environ
    value = env.get(PLUGIN_SOCKET_ENV, "")
    if not value:
        return None
    try:
        fd = int(value)
    except ValueError:
        raise ValueError(f"{PLUGIN_SOCKET_ENV} must be an fd number, got {value!r}") from None
    name, idx = env.get(PLUGIN_NAME_ENV, ""), env.get(PLUGIN_IDX_ENV, "")
    validate_registration(name, idx)
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)  # probes and helpers must not hold the runtime's connection open
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ValueError(f"{PLUGIN_SOCKET_ENV}={fd} is not a unix stream socket")
    return Launch(name, idx, sock)


class RegistrationError(RuntimeError):
    """The runtime refused or did not answer RegisterPlugin."""


class Stub:
    """Connects a :class:`Plugin` to the runtime's NRI socket and keeps it connected.

    ``run()`` blocks: it connects, registers, serves, and on EOF or a missing socket retries with
    exponential backoff and jitter until ``stop()`` is called (from any thread).

    A plugin that the runtime launched itself (from NRI's plugin_path) is handed one end of a
    socketpair instead of a socket path: pass it as ``preconnected``. That connection cannot be
    re-dialled, so ``run()`` returns when it closes; the runtime launches the plugin again when it
    restarts. See :func:`launched_by_runtime`.
    """

    def __init__(
        self,
        plugin: Plugin,
        socket_path: str = DEFAULT_SOCKET_PATH,
        name: str = "prefetch-advisor",
        idx: str = "50",
        handler_budget_s: float = DEFAULT_HANDLER_BUDGET_S,
        *,
        workers: int = 4,
        registration_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        reconnect: bool = True,
        observe: Observer | None = None,
        preconnected: socket.socket | None = None,
        realtime: bool = False,
    ) -> None:
        validate_registration(name, idx)
        if handler_budget_s >= 2.0:
            log.warning("event=nri_budget_too_long budget_s=%.3f runtime_timeout_s=2",
                        handler_budget_s)
        self.plugin = plugin
        self.socket_path = socket_path
        self.name = name
        self.idx = idx
        self.registration_timeout_s = registration_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.reconnect = reconnect and preconnected is None
        self._preconnected = preconnected
        self.realtime = realtime
        self._runner = BoundedRunner(handler_budget_s, workers, observe, realtime)
        self._service = PluginService(plugin, self._runner)
        self._stop = threading.Event()
        self._sock_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._registered = threading.Event()
        self._ran = False
        self.sessions = 0
        """Connections that completed registration and Synchronize."""

    @property
    def events(self) -> int:
        return self._service.events

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the current connection has been registered and synchronized."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._registered.wait(timeout):
            return False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._service.synchronized.wait(remaining)

    def stop(self) -> None:
        self._stop.set()
        with self._sock_lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def run(self) -> None:
        """Serve until ``stop()``; a Stub runs once (its handler workers end with it)."""
        if self._ran:
            raise RuntimeError("Stub.run() can only be called once; make a new Stub")
        self._ran = True
        backoff = self.backoff_initial_s
        announced_unavailable = False
        # The thread serving the connection wakes first on each request: real-time too.
        restore = (os.sched_getscheduler(0), os.sched_getparam(0))
        if not (self.realtime and become_realtime()):
            restore = None
        try:
            while not self._stop.is_set():
                try:
                    sock = self._connect()
                except OSError as exc:
                    if not announced_unavailable:
                        log.warning("event=nri_socket_unavailable retrying=backoff socket=%s error=%s",
                                    self.socket_path, exc)
                        announced_unavailable = True
                    self._sleep(backoff)
                    backoff = min(self.backoff_max_s, backoff * 2)
                    continue
                announced_unavailable = False
                try:
                    self._serve(sock)
                except (OSError, mux.MuxProtocolError, ttrpc.TtrpcProtocolError, RegistrationError) as exc:
                    if not self._stop.is_set():
                        log.warning("event=nri_connection_failed socket=%s error=%s", self.socket_path, exc)
                except Exception:
                    # A bug of ours must cost a reconnect, never the agent.
                    log.exception("event=nri_connection_failed socket=%s error=unexpected", self.socket_path)
                finally:
                    registered = self._registered.is_set()
                    with self._sock_lock:
                        self._sock = None
                    sock.close()
                    self._registered.clear()
                    self._service.reset()
                if self._stop.is_set():
                    break
                log.info("event=nri_disconnected socket=%s registered=%s", self.socket_path, registered)
                if registered:
                    self._runner.call("on_disconnect", self.plugin.on_disconnect)
                    backoff = self.backoff_initial_s
                if not self.reconnect:
                    break
                self._sleep(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)
        finally:
            self._runner.stop()
            if restore is not None:
                os.sched_setscheduler(0, *restore)

    def _sleep(self, backoff: float) -> None:
        # Jitter (50-100 % of the delay) keeps many agents from reconnecting in lockstep.
        self._stop.wait(backoff * random.uniform(0.5, 1.0))

    def _connect(self) -> socket.socket:
        if self._preconnected is not None:
            sock, self._preconnected = self._preconnected, None
            where = "preconnected"
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            where = self.socket_path
        # A runtime that stops reading must not wedge us in sendall: fail the send, reconnect.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
        if where != "preconnected":
            try:
                sock.connect(self.socket_path)
            except OSError:
                sock.close()
                raise
        with self._sock_lock:
            if self._stop.is_set():
                sock.close()
                raise OSError("stub stopped")
            self._sock = sock
        log.info("event=nri_connected socket=%s", where)
        return sock

    def _send(self, sock: socket.socket, conn_id: int, message: bytes) -> None:
        data = mux.encode_frames(conn_id, message)
        with self._write_lock:
            sock.sendall(data)

    def _serve(self, sock: socket.socket) -> None:
        """Register and serve one connection until EOF or ``stop()``."""
        frames = mux.FrameDecoder()
        plugin_conn = ttrpc.MessageDecoder()
        runtime_conn = ttrpc.MessageDecoder()
        stream_ids = ttrpc.StreamIds()
        register_sid = next(stream_ids)
        register = nri_pb2.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.idx)
        self._send(sock, mux.RUNTIME_SERVICE_CONN, ttrpc.encode_request(register_sid, ttrpc.Request(
            RUNTIME_SERVICE, "RegisterPlugin", register.SerializeToString(),
            timeout_nano=int(self.registration_timeout_s * 1e9))))
        deadline = time.monotonic() + self.registration_timeout_s
        registered = False
        synced = False
        while not self._stop.is_set():
            if not registered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegistrationError(f"no answer to RegisterPlugin within {self.registration_timeout_s} s")
                sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            for conn_id, payload in frames.feed(data):
                if conn_id == mux.PLUGIN_SERVICE_CONN:
                    for msg in plugin_conn.feed(payload):
                        self._serve_message(sock, msg)
                elif conn_id == mux.RUNTIME_SERVICE_CONN:
                    for msg in runtime_conn.feed(payload):
                        if isinstance(msg, ttrpc.Message) and msg.type == ttrpc.TYPE_RESPONSE \
                                and msg.stream_id == register_sid and not registered:
                            resp = ttrpc.decode_response(msg.body)
                            if not resp.ok:
                                raise RegistrationError(
                                    f"runtime refused registration name={self.name} idx={self.idx}: "
                                    f"status {resp.code} {resp.message}")
                            registered = True
                            sock.settimeout(None)
                            self._registered.set()
                            log.info("event=nri_registered name=%s idx=%s events=0x%x", self.name, self.idx, self.events)
                        else:
                            log.debug("event=nri_unexpected_message conn=runtime msg=%r", msg)
                else:
                    log.debug("event=nri_unknown_conn conn=%d bytes=%d", conn_id, len(payload))
            if registered and not synced and self._service.synchronized.is_set():
                synced = True
                self.sessions += 1

    def _serve_message(self, sock: socket.socket, msg: ttrpc.Message | ttrpc.OversizedMessage) -> None:
        if isinstance(msg, ttrpc.OversizedMessage):
            log.warning("event=nri_oversized_request answered=resource_exhausted stream=%d bytes=%d",
                        msg.stream_id, msg.length)
            if msg.type == ttrpc.TYPE_REQUEST:
                self._send(sock, mux.PLUGIN_SERVICE_CONN, ttrpc.encode_response(
                    msg.stream_id, ttrpc.Code.RESOURCE_EXHAUSTED,
                    f"message of {msg.length} bytes exceeds the maximum of {ttrpc.MAX_MESSAGE_LEN}"))
            return
        if msg.type != ttrpc.TYPE_REQUEST:
            log.debug("event=nri_unexpected_message conn=plugin type=%d stream=%d", msg.type, msg.stream_id)
            return
        try:
            request = ttrpc.decode_request(msg.body)
        except ttrpc.TtrpcProtocolError as exc:
            log.warning("event=nri_undecodable_request answered=invalid_argument stream=%d error=%s", msg.stream_id, exc)
            self._send(sock, mux.PLUGIN_SERVICE_CONN,
                       ttrpc.encode_response(msg.stream_id, ttrpc.Code.INVALID_ARGUMENT, str(exc)))
            return
        code, text, payload = self._service.handle(request)
        try:
            self._send(sock, mux.PLUGIN_SERVICE_CONN, ttrpc.encode_response(msg.stream_id, code, text, payload))
        finally:
            self._runner.answered()
